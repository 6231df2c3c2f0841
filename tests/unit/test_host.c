/* test_host.c - what a migration target reports about itself: its one
 * address in a CIDR, free memory, and libvirt's verdict on CPU models
 * (through the forked helper, repeated to show it never crashes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/util.h"
#include "migrate/mig_host.h"

#define LOOPS 20

static char root[64]; /* one libvirt root for the whole run: its cache is reused */

static void expect_msg(struct err **ep, enum err_code code, const char *msg)
{
	struct err *e = *ep;

	*ep = NULL;
	assert_non_null(e);
	assert_int_equal(e->code, code);
	assert_string_equal(e->msg, msg);
	err_free(e);
}

static void test_addr_in(void **state)
{
	char a[INET6_ADDRSTRLEN];
	struct err *e = NULL;

	(void)state;
	assert_true(mig_host_addr_in("127.0.0.0/8", a, sizeof(a), &e));
	assert_null(e);
	assert_string_equal(a, "127.0.0.1");
	/* Host bits are cleared: the network is what is searched. */
	assert_true(mig_host_addr_in("127.1.2.3/8", a, sizeof(a), &e));
	assert_string_equal(a, "127.0.0.1");
	/* Local (all of 127/8 is), yet the address of no interface. */
	assert_false(mig_host_addr_in("127.255.255.254/32", a, sizeof(a), &e));
	expect_msg(&e, ERR_NOTFOUND, "no address in 127.255.255.254/32");
	assert_false(mig_host_addr_in("10.1.2.0/33", a, sizeof(a), &e));
	expect_msg(&e, ERR_INVAL, "invalid CIDR '10.1.2.0/33': prefix length above 32");
	assert_false(mig_host_addr_in("tre", a, sizeof(a), &e));
	expect_msg(&e, ERR_INVAL, "invalid CIDR 'tre': missing '/PREFIX'");
	assert_false(mig_host_addr_in("127.0.0.0/8", a, 4, &e));
	expect_msg(&e, ERR_INVAL, "address 127.0.0.1 does not fit 4 bytes");
	if (mig_host_addr_in("::1/128", a, sizeof(a), &e))
		assert_string_equal(a, "::1");
	else
		err_free(TAKE_PTR(e)); /* no IPv6 loopback */
}

/* Every IPv4 address of an up interface is in 0.0.0.0/0: several unless
 * loopback is all this host has. */
static void test_addr_several(void **state)
{
	struct ifaddrs *ifs = NULL;
	char a[INET6_ADDRSTRLEN], want[512] = "several addresses in 0.0.0.0/0: ";
	struct err *e = NULL;
	unsigned n = 0;

	(void)state;
	assert_int_equal(getifaddrs(&ifs), 0);
	for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
		char s[INET_ADDRSTRLEN];

		if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET ||
		    !(i->ifa_flags & IFF_UP))
			continue;
		inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, s, sizeof(s));
		if (strstr(want, s))
			continue;
		if (n++)
			strcat(want, ", ");
		strcat(want, s);
	}
	freeifaddrs(ifs);
	if (n < 2) {
		print_message("  (one IPv4 address only: 'several' not checked)\n");
		return;
	}
	assert_false(mig_host_addr_in("0.0.0.0/0", a, sizeof(a), &e));
	expect_msg(&e, ERR_INVAL, want);
}

static void test_mem_available(void **state)
{
	struct err *e = NULL;
	uint64_t bytes = 0;

	(void)state;
	assert_true(mig_host_mem_available(&bytes, &e));
	assert_null(e);
	assert_true(bytes > (16u << 20));
}

/* MemTotal is the first line of /proc/meminfo: matched there too, and at
 * least as large as what is available. */
static void test_mem_total(void **state)
{
	struct err *e = NULL;
	uint64_t total = 0, avail = 0;

	(void)state;
	assert_true(mig_host_mem_total(&total, &e));
	assert_null(e);
	assert_true(mig_host_mem_available(&avail, &e));
	assert_true(total >= avail);
	assert_true(total > (64u << 20));
}

static int64_t timed_check(const char *model, bool want, struct err **ep)
{
	int64_t t0 = util_now_ms();
	bool ok = mig_host_cpu_check(model, MIG_ACCEL_TCG, NULL, root, ep);

	if (ok != want)
		print_message("  %s: %s\n", model, *ep ? (*ep)->msg : "runnable");
	assert_true(ok == want);
	return util_now_ms() - t0;
}

static void test_cpu_check(void **state)
{
	struct err *e = NULL;
	int64_t first, cached;

	(void)state;
	first = timed_check("qemu64", true, &e);
	cached = timed_check("qemu64", true, &e);
	print_message("  cpu check qemu64/tcg: first call %" PRId64 " ms, cached %" PRId64
		      " ms\n", first, cached);
	assert_null(e);
	assert_true(timed_check("host-model", true, &e) >= 0);
	timed_check("EPYC", false, &e);
	assert_int_equal(e->code, ERR_STATE);
	assert_non_null(strstr(e->msg, "CPU model 'EPYC' is not runnable here: "));
	assert_non_null(strstr(e->msg, "Host CPU does not provide required features: "));
	err_free(TAKE_PTR(e));
	timed_check("Bogus-9000", false, &e);
	expect_msg(&e, ERR_INVAL,
		   "cannot check CPU model 'Bogus-9000': internal error: Unknown CPU model Bogus-9000");
	timed_check("qemu64'/><x", false, &e);
	expect_msg(&e, ERR_INVAL, "invalid CPU model 'qemu64'/><x'");
	timed_check("host", false, &e);
	expect_msg(&e, ERR_INVAL, "CPU model 'host' (passthrough) needs KVM, not tcg");
	assert_false(mig_host_cpu_check("qemu64", MIG_ACCEL_AUTO, NULL, root, &e));
	expect_msg(&e, ERR_INVAL,
		   "cannot check CPU model 'qemu64' for accelerator 'auto': use kvm or tcg");
	assert_false(mig_host_cpu_check("qemu64", MIG_ACCEL_TCG, NULL, "rel/dir", &e));
	expect_msg(&e, ERR_INVAL, "invalid libvirt root 'rel/dir': must be an absolute path "
				  "of [A-Za-z0-9/._-]");
}

/* The source sends its host CPU; a target compares it. */
static void test_cpu_xml(void **state)
{
	struct err *e = NULL;
	char *xml;

	(void)state;
	xml = mig_host_cpu_xml(MIG_ACCEL_TCG, root, &e);
	assert_null(e);
	assert_non_null(xml);
	assert_non_null(strstr(xml, "<cpu mode='custom' match='exact'>"));
	assert_non_null(strstr(xml, "<model fallback='forbid'>"));
	assert_true(mig_host_cpu_check("host-model", MIG_ACCEL_TCG, xml, root, &e));
	assert_null(e);
	free(xml);
	xml = mig_host_cpu_from_domcaps("<cpu><mode name='host-model' supported='no'/></cpu>", &e);
	assert_null(xml);
	expect_msg(&e, ERR_NOTFOUND, "libvirt offers no host-model CPU here");
	xml = mig_host_cpu_from_domcaps(
		"<x><mode name='host-model' supported='yes'>\n  <model>EPYC</model>\n"
		"  <vendor>AMD</vendor>\n</mode></x>", &e);
	assert_string_equal(xml, "<cpu mode='custom' match='exact'>\n  <model>EPYC</model>\n"
				 "  <vendor>AMD</vendor>\n</cpu>\n");
	free(xml);
}

/* Short-lived embedded connections used to crash at exit 2-3% of the
 * time: every call must give the right verdict, never a dead helper. */
static void test_cpu_check_repeated(void **state)
{
	struct err *e = NULL;
	int64_t t0 = util_now_ms();

	(void)state;
	for (int i = 0; i < LOOPS; i++) {
		bool epyc = i % 2;

		timed_check(epyc ? "EPYC" : "qemu64", !epyc, &e);
		if (epyc) {
			assert_int_equal(e->code, ERR_STATE);
			err_free(TAKE_PTR(e));
		}
	}
	print_message("  %d cached checks: %" PRId64 " ms each\n", LOOPS,
		      (util_now_ms() - t0) / LOOPS);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	(void)state;
	snprintf(root, sizeof(root), "/tmp/vmm-test-host-XXXXXX");
	return mkdtemp(root) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	return nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr_in),
		cmocka_unit_test(test_addr_several),
		cmocka_unit_test(test_mem_available),
		cmocka_unit_test(test_mem_total),
		cmocka_unit_test(test_cpu_check),
		cmocka_unit_test(test_cpu_xml),
		cmocka_unit_test(test_cpu_check_repeated),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
