/* test_conf_repl.c - replication.cfg: jobs parse and round-trip; every bad
 * line is one error naming file, line and value; one job per guest per
 * target. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cluster/clu_conf.h"

static const char GOOD[] =
	"# jobs\n"
	"local: 106-0\n"
	"\ttarget tre\n"
	"\tschedule mon..fri 8..17,22:0/15\n"
	"\trate 10\n"
	"\tcomment nightly copy\n"
	"\n"
	"local: 106-1\n"
	"\ttarget due\n"
	"\tdisable\n"
	"local: 200-0\n"
	"  target uno\n";

static void test_good_and_round_trip(void **state)
{
	struct clu_repl_conf rc = { 0 }, back = { 0 };
	struct err *e = NULL;
	char *text;

	(void)state;
	assert_true(clu_repl_parse(GOOD, "replication.cfg", &rc, &e));
	assert_int_equal(rc.n, 3);
	assert_string_equal(rc.items[0].id, "106-0");
	assert_int_equal(rc.items[0].vmid, 106);
	assert_string_equal(rc.items[0].target, "tre");
	assert_string_equal(rc.items[0].schedule, "mon..fri 8..17,22:0/15");
	assert_int_equal(rc.items[0].rate, 10);
	assert_string_equal(rc.items[0].comment, "nightly copy");
	assert_true(rc.items[1].disabled);
	assert_string_equal(rc.items[2].schedule, "*/15"); /* default */
	text = clu_repl_format(&rc, &e);
	assert_non_null(text);
	assert_true(clu_repl_parse(text, "replication.cfg", &back, &e));
	assert_int_equal(back.n, rc.n);
	assert_memory_equal(back.items, rc.items, rc.n * sizeof(*rc.items));
	free(text);
	clu_repl_conf_free(&rc);
	clu_repl_conf_free(&back);
}

static void expect_bad(const char *text, const char *msg)
{
	struct clu_repl_conf rc = { 0 };
	struct err *e = NULL;

	assert_false(clu_repl_parse(text, "replication.cfg", &rc, &e));
	assert_null(rc.items);
	if (strcmp(e->msg, msg))
		fail_msg("got '%s', want '%s'", e->msg, msg);
	err_free(e);
}

static void test_bad(void **state)
{
	(void)state;
	expect_bad("local: 106\n\ttarget tre\n",
		   "replication.cfg:1: invalid job id '106': want VMID-N");
	expect_bad("local: 99-0\n\ttarget tre\n",
		   "replication.cfg:1: invalid job id '99-0': want VMID-N");
	expect_bad("zfs: 106-0\n\ttarget tre\n",
		   "replication.cfg:1: unknown replication job type 'zfs'");
	expect_bad("local: 106-0\n\tschedule */5\n",
		   "replication.cfg:1: replication job '106-0' has no target");
	expect_bad("local: 106-0\n\ttarget Tre;rm\n",
		   "replication.cfg:2: invalid target node 'Tre;rm' for job '106-0'");
	expect_bad("local: 106-0\n\ttarget tre\n\tschedule $(reboot)\n",
		   "replication.cfg:3: invalid schedule '$(reboot)' for job '106-0'");
	expect_bad("local: 106-0\n\ttarget tre\n\trate fast\n",
		   "replication.cfg:3: invalid rate 'fast': not a number");
	expect_bad("local: 106-0\n\ttarget tre\n\ttarget2 due\n",
		   "replication.cfg:3: unknown option 'target2' for job '106-0'");
	expect_bad("\ttarget tre\n", "replication.cfg:1: option 'target tre' outside a job");
	expect_bad("local: 106-0\n\ttarget tre\n\tcomment /15\n\tcomment x\n",
		   "replication.cfg:4: duplicate option 'comment' for job '106-0'");
	expect_bad("local: 106-0\n\ttarget tre\nlocal: 106-0\n\ttarget due\n",
		   "replication.cfg:3: duplicate replication job '106-0' (also on line 1)");
	expect_bad("local: 106-0\n\ttarget tre\nlocal: 106-1\n\ttarget tre\n",
		   "replication.cfg:3: replication job '106-1': guest 106 already replicates "
		   "to 'tre' (job '106-0')");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_and_round_trip),
		cmocka_unit_test(test_bad),
	};
	return cmocka_run_group_tests_name("conf_repl", tests, NULL, NULL);
}
