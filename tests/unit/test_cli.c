/* test_cli.c - the table-driven option parser: values, flags, lists,
 * required options, positionals, and one-line errors with exit 2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

static struct {
	int calls;
	const char *mem;
	bool paused;
	unsigned ndisks;
	const char *disk1;
	int npos;
} seen;

static const struct cli_opt opts[] = {
	{ "memory", CLI_VALUE, "SIZE", "RAM" },
	{ "paused", CLI_FLAG, NULL, "paused" },
	{ "disk", CLI_LIST, "FILE", "disk" },
	{ "dir", CLI_VALUE, "DIR", "dir", true },
	{ NULL }
};

static int exec_t(const struct cli_args *a)
{
	const char *const *d;

	seen.calls++;
	seen.mem = cli_get(a, "memory");
	seen.paused = cli_has(a, "paused");
	d = cli_list(a, "disk", &seen.ndisks);
	seen.disk1 = seen.ndisks > 1 ? d[1] : NULL;
	seen.npos = a->npos;
	return 0;
}

static const struct cli_cmd cmd_t = {
	.name = "start", .posargs = "NAME", .summary = "s", .opts = opts,
	.min_pos = 1, .max_pos = 1, .exec = exec_t,
};
static const struct cli_cmd *const cmds[] = { &cmd_t, NULL };

static int run(int argc, const char **argv)
{
	memset(&seen, 0, sizeof(seen));
	return cli_main("t", "test", cmds, argc, (char **)argv);
}

static void test_parse_ok(void **state)
{
	const char *argv[] = { "t", "start", "g1", "--memory=1G", "--paused", "--disk", "a.img",
			       "--disk", "b.img", "--dir", "/tmp/x" };

	(void)state;
	assert_int_equal(run(11, argv), 0);
	assert_int_equal(seen.calls, 1);
	assert_string_equal(seen.mem, "1G");
	assert_true(seen.paused);
	assert_int_equal(seen.ndisks, 2);
	assert_string_equal(seen.disk1, "b.img");
	assert_int_equal(seen.npos, 1);
}

static void test_parse_errors(void **state)
{
	const char *unknown[] = { "t", "start", "g", "--dir", "d", "--memroy", "1G" };
	const char *novalue[] = { "t", "start", "g", "--dir" };
	const char *flagval[] = { "t", "start", "g", "--dir", "d", "--paused=yes" };
	const char *missing[] = { "t", "start", "g" };
	const char *extra[] = { "t", "start", "g", "h", "--dir", "d" };
	const char *nopos[] = { "t", "start", "--dir", "d" };
	const char *nocmd[] = { "t", "frob" };
	const char *dashdash[] = { "t", "start", "--dir", "d", "--", "--weird-name" };

	(void)state;
	assert_int_equal(run(7, unknown), 2);
	assert_int_equal(run(4, novalue), 2);
	assert_int_equal(run(6, flagval), 2);
	assert_int_equal(run(3, missing), 2);
	assert_int_equal(run(6, extra), 2);
	assert_int_equal(run(4, nopos), 2);
	assert_int_equal(run(2, nocmd), 2);
	assert_int_equal(seen.calls, 0);
	assert_int_equal(run(6, dashdash), 0); /* after --, names are positional */
	assert_int_equal(seen.npos, 1);
}

static void test_help(void **state)
{
	const char *argv[] = { "t", "start", "--help" };

	(void)state;
	assert_int_equal(run(3, argv), 0);
	assert_int_equal(seen.calls, 0);
}

/* cli_parse: what cli_main does before running the command, and nothing
 * after; a.pos is the caller's only when the command would run. */
static void test_parse_only(void **state)
{
	const char *ok[] = { "t", "start", "g1", "--dir", "d", "--disk", "a", "--disk=b" };
	const char *help[] = { "t", "start", "--help" };
	const char *bad[] = { "t", "start", "g1", "--dir" };
	const char *none[] = { "t" };
	struct cli_args a;
	unsigned n;
	int status = -1;

	(void)state;
	memset(&seen, 0, sizeof(seen));
	assert_true(cli_parse("t", "test", cmds, 8, (char **)ok, &a, &status));
	assert_int_equal(seen.calls, 0);
	assert_ptr_equal(a.cmd, &cmd_t);
	assert_string_equal(cli_get(&a, "dir"), "d");
	assert_string_equal(cli_list(&a, "disk", &n)[1], "b");
	assert_int_equal(n, 2);
	assert_int_equal(a.npos, 1);
	free(a.pos);
	assert_false(cli_parse("t", "test", cmds, 3, (char **)help, &a, &status));
	assert_int_equal(status, 0);
	assert_false(cli_parse("t", "test", cmds, 4, (char **)bad, &a, &status));
	assert_int_equal(status, 2);
	assert_null(a.pos);
	assert_false(cli_parse("t", "test", cmds, 1, (char **)none, &a, &status));
	assert_int_equal(status, 2);
	assert_int_equal(seen.calls, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ok),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_help),
		cmocka_unit_test(test_parse_only),
	};
	return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}
