/* test_conf_datacenter.c - datacenter.cfg: defaults, the golden sample
 * (LF and CRLF) and its formatted form, every kind of bad line with its
 * exact message, round trips, the loader, and hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/clu_conf.h"
#include "common/util.h"

#define DATA "tests/data/conf/"

static void test_defaults(void **state)
{
	struct clu_datacenter dc, d;
	struct err *e = NULL;
	char *text;

	(void)state;
	clu_datacenter_defaults(&d);
	assert_int_equal(d.migration_type, CLU_MIGRATION_SECURE);
	assert_false(d.has_migration_network);
	assert_int_equal(d.next_id_lower, 100);
	assert_int_equal(d.next_id_upper, 1000000);
	assert_int_equal(d.max_workers, 4);
	assert_string_equal(d.replication_schedule, "*/15");
	assert_int_equal(d.replication_rate, 0);
	assert_int_equal(d.bwlimit_migration, 0);
	assert_int_equal(d.bwlimit_default, 0);
	static const char *const empty[] = { "", "\n\n", "# only a comment\n", "  \t\n# x" };
	for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
		memset(&dc, 0xa5, sizeof(dc));
		assert_true(clu_datacenter_parse(empty[i], "datacenter.cfg", &dc, &e));
		assert_null(e);
		assert_true(clu_datacenter_equal(&dc, &d));
	}
	text = clu_datacenter_format(&d, &e);
	assert_non_null(text);
	assert_string_equal(text, ""); /* only what differs from the defaults */
	free(text);
	/* Explicit defaults read the same as none. */
	assert_true(clu_datacenter_parse("migration: secure\nnext-id: lower=100\n"
					 "max_workers: 4\nreplication: schedule=*/15\n"
					 "bwlimit: migration=0\n", "d", &dc, &e));
	assert_true(clu_datacenter_equal(&dc, &d));
}

static void test_golden(void **state)
{
	struct clu_datacenter dc, back;
	struct err *e = NULL;
	char *text, *want, net[CLU_CIDR_STRLEN];

	(void)state;
	assert_true(clu_conf_load_datacenter(DATA "datacenter.cfg", &dc, &e));
	assert_null(e);
	assert_int_equal(dc.migration_type, CLU_MIGRATION_INSECURE);
	assert_true(dc.has_migration_network);
	assert_string_equal(clu_cidr_format(&dc.migration_network, net, sizeof(net)),
			    "10.1.2.0/24");
	assert_true(clu_cidr_contains(&dc.migration_network, "10.1.2.200"));
	assert_int_equal(dc.next_id_lower, 1000);
	assert_int_equal(dc.next_id_upper, 2000000);
	assert_int_equal(dc.max_workers, 8);
	assert_string_equal(dc.replication_schedule, "mon,tue 02:00");
	assert_int_equal(dc.replication_rate, 50);
	assert_int_equal(dc.bwlimit_migration, 102400);
	assert_int_equal(dc.bwlimit_default, 51200);
	text = clu_datacenter_format(&dc, &e);
	assert_non_null(text);
	want = util_read_file(DATA "datacenter.cfg.formatted", 1 << 16, &e);
	assert_non_null(want);
	assert_string_equal(text, want);
	assert_true(clu_datacenter_parse(text, "x", &back, &e));
	assert_true(clu_datacenter_equal(&dc, &back));
	free(text);
	free(want);

	assert_true(clu_conf_load_datacenter(DATA "datacenter-crlf.cfg", &dc, &e));
	assert_int_equal(dc.migration_type, CLU_MIGRATION_SECURE);
	assert_string_equal(clu_cidr_format(&dc.migration_network, net, sizeof(net)),
			    "fd00:1::/64");
	assert_int_equal(dc.max_workers, 1);
}

static const struct { const char *text, *msg; } bad[] = {
	{ "migration: secure,network=10.1.2.0/33",
	  "datacenter.cfg:1: invalid CIDR '10.1.2.0/33' in migration network: "
	  "prefix length above 32" },
	{ "# c\n\nmigration: insecure,network=10.1.2.0",
	  "datacenter.cfg:3: invalid CIDR '10.1.2.0' in migration network: missing '/PREFIX'" },
	{ "migration: network=",
	  "datacenter.cfg:1: invalid CIDR '' in migration network: missing '/PREFIX'" },
	{ "migration: fast",
	  "datacenter.cfg:1: invalid migration type 'fast' (expected secure or insecure)" },
	{ "migration: type=secure,type=insecure",
	  "datacenter.cfg:1: duplicate option 'type' in migration" },
	{ "migration: secure,netwrk=10.0.0.0/8",
	  "datacenter.cfg:1: unknown option 'netwrk' in migration" },
	{ "migration: network=10.0.0.0/8,secure",
	  "datacenter.cfg:1: invalid option 'secure' in migration (expected KEY=VALUE)" },
	{ "migration: secure,",
	  "datacenter.cfg:1: invalid option '' in migration (expected KEY=VALUE)" },
	{ "next-id: lower=50",
	  "datacenter.cfg:1: invalid next-id lower '50': must be between 100 and 999999999" },
	{ "next-id: upper=1000000000",
	  "datacenter.cfg:1: invalid next-id upper '1000000000': must be between 100 "
	  "and 999999999" },
	{ "next-id: lower=500,upper=200",
	  "datacenter.cfg:1: invalid next-id: lower 500 is not below upper 200" },
	{ "next-id: lower=2000000",
	  "datacenter.cfg:1: invalid next-id: lower 2000000 is not below upper 1000000" },
	{ "next-id: 100", "datacenter.cfg:1: invalid option '100' in next-id (expected KEY=VALUE)" },
	{ "next-id: lower=0x64", "datacenter.cfg:1: invalid next-id lower '0x64': not a number" },
	{ "next-id: min=1", "datacenter.cfg:1: unknown option 'min' in next-id" },
	{ "max_workers: 65", "datacenter.cfg:1: invalid max_workers '65': must be between 1 and 64" },
	{ "max_workers: 0", "datacenter.cfg:1: invalid max_workers '0': must be between 1 and 64" },
	{ "max_workers: four", "datacenter.cfg:1: invalid max_workers 'four': not a number" },
	{ "max_workers: -4", "datacenter.cfg:1: invalid max_workers '-4': not a number" },
	{ "max_workers: 4 # four", "datacenter.cfg:1: invalid max_workers '4 # four': not a number" },
	{ "max_workers: 99999999999999999999999",
	  "datacenter.cfg:1: invalid max_workers '99999999999999999999999': must be between 1 and 64" },
	{ "max_worker: 4", "datacenter.cfg:1: unknown key 'max_worker'" },
	{ "Migration: secure", "datacenter.cfg:1: unknown key 'Migration'" },
	{ "max_workers 4", "datacenter.cfg:1: expected 'key: value', got 'max_workers 4'" },
	{ "max workers: 4", "datacenter.cfg:1: expected 'key: value', got 'max workers: 4'" },
	{ ": 4", "datacenter.cfg:1: expected 'key: value', got ': 4'" },
	{ "max_workers:", "datacenter.cfg:1: missing value for 'max_workers'" },
	{ "max_workers:  \t", "datacenter.cfg:1: missing value for 'max_workers'" },
	{ "\nmax_workers: 4\nmax_workers: 5",
	  "datacenter.cfg:3: duplicate key 'max_workers' (first on line 2)" },
	{ "replication: schedule=*/15;reboot",
	  "datacenter.cfg:1: invalid replication schedule '*/15;reboot': only letters, "
	  "digits, spaces and */:.,- are allowed" },
	{ "replication: schedule=$(reboot)",
	  "datacenter.cfg:1: invalid replication schedule '$(reboot)': only letters, "
	  "digits, spaces and */:.,- are allowed" },
	{ "replication: schedule= */15",
	  "datacenter.cfg:1: invalid replication schedule ' */15': starts or ends with a space" },
	{ "replication: schedule=,rate=5",
	  "datacenter.cfg:1: invalid replication schedule '': empty" },
	{ "replication: rate=0",
	  "datacenter.cfg:1: invalid replication rate '0': must be between 1 and 1000000" },
	{ "replication: rate=5,mon",
	  "datacenter.cfg:1: invalid option 'mon' in replication (expected KEY=VALUE)" },
	{ "replication: */15", "datacenter.cfg:1: invalid option '*/15' in replication "
	  "(expected KEY=VALUE)" },
	{ "replication: schedule=" "0123456789012345678901234567890123456789"
	  "0123456789012345678901234567890123456789" "0123456789012345678901234567890123456789"
	  "0123456789",
	  "datacenter.cfg:1: replication schedule too long (more than 128 bytes)" },
	{ "bwlimit: migration=-1", "datacenter.cfg:1: invalid bwlimit migration '-1': not a number" },
	{ "bwlimit: default=1073741825",
	  "datacenter.cfg:1: invalid bwlimit default '1073741825': must be between 0 and 1073741824" },
	{ "bwlimit: restore=100", "datacenter.cfg:1: unknown option 'restore' in bwlimit" },
	{ "bwlimit: migration=1,migration=2",
	  "datacenter.cfg:1: duplicate option 'migration' in bwlimit" },
	{ "max_workers: 4\x01", "datacenter.cfg:1: control character \\x01 in line" },
	{ "max_workers: 4\rx", "datacenter.cfg:1: control character \\x0d in line" },
	{ "\xff\xfe: x", "datacenter.cfg:1: unknown key '\\xff\\xfe'" },
	{ "max_workers: 'x'", "datacenter.cfg:1: invalid max_workers '\\x27x\\x27': not a number" },
	{ "[section]", "datacenter.cfg:1: expected 'key: value', got '[section]'" },
};

static void test_bad_lines(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct clu_datacenter dc;
		struct err *e = NULL;

		memset(&dc, 0x5a, sizeof(dc));
		if (clu_datacenter_parse(bad[i].text, "datacenter.cfg", &dc, &e))
			fail_msg("accepted: %s", bad[i].text);
		assert_non_null(e);
		assert_int_equal(e->code, ERR_INVAL);
		if (strcmp(e->msg, bad[i].msg))
			fail_msg("for '%s'\n got: %s\nwant: %s", bad[i].text, e->msg, bad[i].msg);
		assert_int_equal(dc.max_workers, 0x5a5a5a5a); /* untouched */
		err_free(e);
		/* errp may be NULL */
		assert_false(clu_datacenter_parse(bad[i].text, "datacenter.cfg", &dc, NULL));
	}
}

static void test_long_line(void **state)
{
	struct clu_datacenter dc;
	struct err *e = NULL;
	char *s = malloc(100000);

	(void)state;
	strcpy(s, "max_workers: 4\n");
	memset(s + 15, 'a', 100000 - 16);
	s[99999] = '\0';
	assert_false(clu_datacenter_parse(s, "datacenter.cfg", &dc, &e));
	assert_string_equal(e->msg, "datacenter.cfg:2: line too long (more than 4096 bytes)");
	err_free(e);
	e = NULL;
	/* exactly at the limit: read, then refused for what it is */
	s[15 + 4096] = '\0';
	assert_false(clu_datacenter_parse(s, "datacenter.cfg", &dc, &e));
	assert_non_null(strstr(e->msg, "datacenter.cfg:2: expected 'key: value', got 'aaaa"));
	assert_non_null(strstr(e->msg, "...'"));
	assert_true(strlen(e->msg) < 200);
	err_free(e);
	free(s);
}

static void check_round_trip(const struct clu_datacenter *dc)
{
	struct clu_datacenter back;
	struct err *e = NULL;
	char *text = clu_datacenter_format(dc, &e);

	if (!text)
		fail_msg("format failed: %s", e->msg);
	if (!clu_datacenter_parse(text, "rt", &back, &e))
		fail_msg("re-parse failed: %s\n%s", e->msg, text);
	assert_true(clu_datacenter_equal(dc, &back));
	free(text);
}

static void test_round_trip(void **state)
{
	static const char *const texts[] = {
		"migration: insecure",
		"migration: type=secure,network=fd00::/8",
		"migration: network=192.168.0.0/16",
		"next-id: upper=101",
		"next-id: lower=999999998,upper=999999999",
		"replication: schedule=*/5",
		"replication: rate=1000000",
		"replication: schedule=sat 03:30,,sun",
		"replication: schedule=a,",
		"bwlimit: default=1",
		"bwlimit: migration=1073741824",
		"max_workers: 64",
	};
	struct clu_datacenter dc;

	(void)state;
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		assert_true(clu_datacenter_parse(texts[i], "rt", &dc, NULL));
		check_round_trip(&dc);
	}
	clu_datacenter_defaults(&dc);
	check_round_trip(&dc);
	dc.migration_type = CLU_MIGRATION_INSECURE;
	dc.has_migration_network = true;
	assert_true(clu_cidr_parse("2001:db8::/32", &dc.migration_network, NULL));
	dc.next_id_lower = 5000;
	dc.max_workers = 2;
	strcpy(dc.replication_schedule, "mon..fri 22:00");
	dc.bwlimit_default = 10;
	check_round_trip(&dc);
}

static void test_format_refuses_bad_values(void **state)
{
	struct clu_datacenter dc;
	struct err *e = NULL;

	(void)state;
	clu_datacenter_defaults(&dc);
	dc.max_workers = 0;
	assert_null(clu_datacenter_format(&dc, &e));
	assert_string_equal(e->msg, "cannot format datacenter.cfg: (formatted datacenter.cfg):1: "
			    "invalid max_workers '0': must be between 1 and 64");
	err_free(e);
	e = NULL;
	clu_datacenter_defaults(&dc);
	strcpy(dc.replication_schedule, "*/5\nmax_workers: 1");
	assert_null(clu_datacenter_format(&dc, &e));
	assert_non_null(e);
	err_free(e);
	e = NULL;
	clu_datacenter_defaults(&dc);
	dc.next_id_lower = dc.next_id_upper;
	assert_null(clu_datacenter_format(&dc, &e));
	err_free(e);
	e = NULL;
	clu_datacenter_defaults(&dc);
	dc.migration_type = CLU_MIGRATION_TYPE_MAX;
	assert_null(clu_datacenter_format(&dc, &e));
	err_free(e);
}

static void test_loader(void **state)
{
	char path[] = "/tmp/test_conf_dc.XXXXXX";
	struct clu_datacenter dc;
	struct err *e = NULL;
	int fd;

	(void)state;
	assert_false(clu_conf_load_datacenter("/nonexistent/datacenter.cfg", &dc, &e));
	assert_int_equal(e->code, ERR_IO);
	assert_string_equal(e->msg, "cannot open '/nonexistent/datacenter.cfg': "
			    "No such file or directory");
	err_free(e);
	e = NULL;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "max_workers: 3\n\0max_workers: 9\n", 32), 32);
	close(fd);
	assert_false(clu_conf_load_datacenter(path, &dc, &e));
	assert_non_null(strstr(e->msg, "holds a NUL byte"));
	err_free(e);
	e = NULL;
	assert_true(util_write_file(path, "max_workers: 2\nmax_workers: x\n", 0600, NULL));
	assert_false(clu_conf_load_datacenter(path, &dc, &e));
	assert_non_null(strstr(e->msg, ":2: duplicate key 'max_workers' (first on line 1)"));
	assert_int_equal(strncmp(e->msg, path, strlen(path)), 0);
	err_free(e);
	unlink(path);
}

/* Random printable-and-binary lines: never a crash, every error one line
 * naming the file, every success round-trips. */
static void test_hostile_random(void **state)
{
	static const char *const pieces[] = {
		"migration: ", "next-id: ", "max_workers: ", "replication: ",
		"bwlimit: ", "secure", "insecure", "network=", "10.1.2.0/24",
		"type=", "lower=", "upper=", "schedule=", "rate=", "migration=",
		"default=", ",", "=", "\n", "#", " ", "\t", "999999999999999999999",
		"1", "100", "64", "*/15", ":", "$(id)", ";|&`", "\xc3\xa9", "\r\n",
		"::", "/", "0",
	};
	unsigned seed = 12345;

	(void)state;
	for (int iter = 0; iter < 20000; iter++) {
		char text[512];
		size_t len = 0;
		struct clu_datacenter dc;
		struct err *e = NULL;

		for (int n = (int)((seed = seed * 1103515245 + 12345) >> 16) % 16; n >= 0; n--) {
			seed = seed * 1103515245 + 12345;
			if ((seed >> 16) % 8 == 0) {
				text[len++] = (char)(1 + (seed >> 20) % 255);
			} else {
				const char *p = pieces[(seed >> 16) % (sizeof(pieces) / sizeof(pieces[0]))];
				if (len + strlen(p) >= sizeof(text) - 1)
					break;
				memcpy(text + len, p, strlen(p));
				len += strlen(p);
			}
		}
		text[len] = '\0';
		if (clu_datacenter_parse(text, "fuzz.cfg", &dc, &e)) {
			assert_null(e);
			check_round_trip(&dc);
		} else {
			assert_non_null(e);
			assert_int_equal(strncmp(e->msg, "fuzz.cfg:", 9), 0);
			assert_null(strchr(e->msg, '\n'));
			err_free(e);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_golden),
		cmocka_unit_test(test_bad_lines),
		cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_format_refuses_bad_values),
		cmocka_unit_test(test_loader),
		cmocka_unit_test(test_hostile_random),
	};
	return cmocka_run_group_tests_name("conf_datacenter", tests, NULL, NULL);
}
