/* test_conf_net.c - CIDRs: IPv4 and IPv6, prefix limits, host bits
 * cleared, membership, formatting round trip, hostile text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>
#include <sys/socket.h>

#include "cluster/clu_conf.h"

static void expect_bad(const char *s, const char *msg)
{
	struct clu_cidr c = { .family = 99 };
	struct err *e = NULL;

	assert_false(clu_cidr_parse(s, &c, &e));
	assert_non_null(e);
	assert_int_equal(e->code, ERR_INVAL);
	assert_string_equal(e->msg, msg);
	assert_int_equal(c.family, 99); /* untouched on failure */
	assert_null(strchr(e->msg, '\n'));
	err_free(e);
}

static void test_parse_good(void **state)
{
	static const struct { const char *in, *out; int family; unsigned prefix; } ok[] = {
		{ "10.1.2.0/24", "10.1.2.0/24", AF_INET, 24 },
		{ "10.1.2.7/24", "10.1.2.0/24", AF_INET, 24 },   /* host bits cleared */
		{ "192.168.1.255/23", "192.168.0.0/23", AF_INET, 23 },
		{ "0.0.0.0/0", "0.0.0.0/0", AF_INET, 0 },
		{ "255.255.255.255/0", "0.0.0.0/0", AF_INET, 0 },
		{ "10.0.0.1/32", "10.0.0.1/32", AF_INET, 32 },
		{ "172.16.5.4/12", "172.16.0.0/12", AF_INET, 12 },
		{ "fd00::/64", "fd00::/64", AF_INET6, 64 },
		{ "FD00:0:0:0:1::7/64", "fd00::/64", AF_INET6, 64 },
		{ "2001:db8::1/128", "2001:db8::1/128", AF_INET6, 128 },
		{ "2001:db8:ffff::/33", "2001:db8:8000::/33", AF_INET6, 33 },
		{ "::/0", "::/0", AF_INET6, 0 },
		{ "::ffff:10.1.2.3/120", "::ffff:10.1.2.0/120", AF_INET6, 120 },
	};
	char buf[CLU_CIDR_STRLEN];

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct clu_cidr c, back;
		struct err *e = NULL;

		assert_true(clu_cidr_parse(ok[i].in, &c, &e));
		assert_null(e);
		assert_int_equal(c.family, ok[i].family);
		assert_int_equal(c.prefix, ok[i].prefix);
		assert_string_equal(clu_cidr_format(&c, buf, sizeof(buf)), ok[i].out);
		/* round trip */
		assert_true(clu_cidr_parse(buf, &back, &e));
		assert_true(clu_cidr_equal(&c, &back));
	}
}

static void test_parse_bad(void **state)
{
	(void)state;
	expect_bad("10.1.2.0/33", "invalid CIDR '10.1.2.0/33': prefix length above 32");
	expect_bad("fd00::/129", "invalid CIDR 'fd00::/129': prefix length above 128");
	expect_bad("10.1.2.0", "invalid CIDR '10.1.2.0': missing '/PREFIX'");
	expect_bad("10.1.2.0/", "invalid CIDR '10.1.2.0/': invalid prefix length");
	expect_bad("10.1.2.0/024", "invalid CIDR '10.1.2.0/024': invalid prefix length");
	expect_bad("10.1.2.0/-1", "invalid CIDR '10.1.2.0/-1': invalid prefix length");
	expect_bad("10.1.2.0/+8", "invalid CIDR '10.1.2.0/+8': invalid prefix length");
	expect_bad("10.1.2.0/ 8", "invalid CIDR '10.1.2.0/ 8': invalid prefix length");
	expect_bad("10.1.2.0/24/8", "invalid CIDR '10.1.2.0/24/8': invalid prefix length");
	expect_bad("10.1.2.0/99999999999999999999",
		   "invalid CIDR '10.1.2.0/99999999999999999999': invalid prefix length");
	expect_bad("10.1.2/24", "invalid CIDR '10.1.2/24': invalid IPv4 address");
	expect_bad("10.1.2.256/24", "invalid CIDR '10.1.2.256/24': invalid IPv4 address");
	expect_bad("010.1.2.0/24", "invalid CIDR '010.1.2.0/24': invalid IPv4 address");
	expect_bad(" 10.1.2.0/24", "invalid CIDR ' 10.1.2.0/24': invalid IPv4 address");
	expect_bad("/24", "invalid CIDR '/24': invalid IPv4 address");
	expect_bad("", "invalid CIDR '': missing '/PREFIX'");
	expect_bad("fe80::1%eth0/64", "invalid CIDR 'fe80::1%eth0/64': invalid IPv6 address");
	expect_bad("fd00:::/64", "invalid CIDR 'fd00:::/64': invalid IPv6 address");
	expect_bad("10.0.0.0/8;rm -rf /", "invalid CIDR '10.0.0.0/8;rm -rf /': invalid prefix length");
	expect_bad("$(reboot)/8", "invalid CIDR '$(reboot)/8': invalid IPv4 address");
	/* Bad bytes are shown escaped, long values cut. */
	expect_bad("10.0.0.0/8\x01\xff'", "invalid CIDR '10.0.0.0/8\\x01\\xff\\x27': "
		   "invalid prefix length");
}

static void test_hostile_long(void **state)
{
	char s[10000];
	struct clu_cidr c;
	struct err *e = NULL;

	(void)state;
	memset(s, '1', sizeof(s) - 1);
	s[sizeof(s) - 1] = '\0';
	s[5000] = '/';
	assert_false(clu_cidr_parse(s, &c, &e));
	assert_non_null(strstr(e->msg, "address too long"));
	assert_non_null(strstr(e->msg, "...'"));
	assert_true(strlen(e->msg) < 200);
	err_free(e);
	e = NULL;
	memset(s, ':', 40);
	strcpy(s + 40, "/64");
	assert_false(clu_cidr_parse(s, &c, &e));
	err_free(e);
	assert_false(clu_cidr_contains(NULL, "10.0.0.1"));
}

static void test_contains(void **state)
{
	struct clu_cidr v4, v6, all;

	(void)state;
	assert_true(clu_cidr_parse("10.1.2.0/24", &v4, NULL));
	assert_true(clu_cidr_contains(&v4, "10.1.2.7"));
	assert_true(clu_cidr_contains(&v4, "10.1.2.0"));
	assert_true(clu_cidr_contains(&v4, "10.1.2.255"));
	assert_false(clu_cidr_contains(&v4, "10.1.3.0"));
	assert_false(clu_cidr_contains(&v4, "10.1.1.255"));
	assert_false(clu_cidr_contains(&v4, "10.1.2.7/32"));
	assert_false(clu_cidr_contains(&v4, "10.1.2"));
	assert_false(clu_cidr_contains(&v4, ""));
	assert_false(clu_cidr_contains(&v4, "::ffff:10.1.2.7")); /* no mapping */
	assert_false(clu_cidr_contains(&v4, NULL));
	assert_true(clu_cidr_parse("2001:db8:8000::/33", &v6, NULL));
	assert_true(clu_cidr_contains(&v6, "2001:db8:8000::1"));
	assert_true(clu_cidr_contains(&v6, "2001:db8:ffff:ffff::"));
	assert_false(clu_cidr_contains(&v6, "2001:db8:7fff::1"));
	assert_false(clu_cidr_contains(&v6, "10.1.2.7"));
	assert_true(clu_cidr_parse("0.0.0.0/0", &all, NULL));
	assert_true(clu_cidr_contains(&all, "255.255.255.255"));
	assert_true(clu_cidr_parse("10.0.0.5/32", &all, NULL));
	assert_true(clu_cidr_contains(&all, "10.0.0.5"));
	assert_false(clu_cidr_contains(&all, "10.0.0.4"));
}

static void test_check_reason(void **state)
{
	struct clu_cidr c = { .family = 7 };

	(void)state;
	assert_string_equal(clu_cidr_check("1.2.3.4/40", &c), "prefix length above 32");
	assert_int_equal(c.family, 7);
	assert_null(clu_cidr_check("1.2.3.4/31", &c));
	assert_int_equal(c.family, AF_INET);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_hostile_long),
		cmocka_unit_test(test_contains),
		cmocka_unit_test(test_check_reason),
	};
	return cmocka_run_group_tests_name("conf_net", tests, NULL, NULL);
}
