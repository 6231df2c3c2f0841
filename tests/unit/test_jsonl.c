/* test_jsonl.c - the newline-framed JSON reader: every split point,
 * merged messages, blanks, CRLF, bad input, size limit, sticky failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/tp.h"

static const char STREAM[] =
	"{\"QMP\": {\"version\": {}}}\r\n"
	"\r\n"
	"{\"event\": \"STOP\", \"data\": {\"s\": \"a\\nb\"}}\r\n"
	"{\"return\": [1, 2, {\"x\": null}], \"id\": 7}\n";

/* Feeds STREAM cut at every position: always exactly three messages. */
static void test_every_split(void **state)
{
	size_t len = strlen(STREAM);

	(void)state;
	for (size_t cut = 0; cut <= len; cut++) {
		struct tp_jsonl r;
		struct json_object *m;
		struct err *e = NULL;
		int count = 0, rc;

		tp_jsonl_init(&r, 0);
		assert_true(tp_jsonl_feed(&r, STREAM, cut, &e));
		while ((rc = tp_jsonl_next(&r, &m, &e)) > 0) {
			count++;
			json_object_put(m);
		}
		assert_int_equal(rc, 0);
		assert_true(tp_jsonl_feed(&r, STREAM + cut, len - cut, &e));
		while ((rc = tp_jsonl_next(&r, &m, &e)) > 0) {
			count++;
			json_object_put(m);
		}
		assert_int_equal(rc, 0);
		assert_null(e);
		assert_int_equal(count, 3);
		assert_int_equal(tp_jsonl_pending(&r), 0);
		tp_jsonl_free(&r);
	}
}

static void expect_bad(const char *input, const char *needle)
{
	struct tp_jsonl r;
	struct json_object *m = NULL;
	struct err *e = NULL;
	int rc;

	tp_jsonl_init(&r, 0);
	assert_true(tp_jsonl_feed(&r, input, strlen(input), &e));
	/* Good messages before the bad one still come out. */
	while ((rc = tp_jsonl_next(&r, &m, &e)) > 0)
		json_object_put(m);
	assert_int_equal(rc, -1);
	m = NULL;
	assert_null(m);
	assert_non_null(e);
	assert_int_equal(e->code, ERR_PROTO);
	if (!strstr(e->msg, needle))
		fail_msg("'%s' not in '%s'", needle, e->msg);
	err_free(e);
	e = NULL;
	/* Broken for good: no resynchronising on garbage. */
	assert_int_equal(tp_jsonl_next(&r, &m, &e), -1);
	err_free(e);
	e = NULL;
	assert_false(tp_jsonl_feed(&r, "{}\n", 3, &e));
	err_free(e);
	tp_jsonl_free(&r);
}

static void test_bad_input(void **state)
{
	(void)state;
	expect_bad("{\"a\": }\n", "malformed QMP message at byte 0");
	expect_bad("[1, 2]\n", "not a JSON object");
	expect_bad("{} {}\n", "'{} {}'");
	expect_bad("{\"a\": \"b\n", "incomplete JSON");
	expect_bad("\"str\"\n", "not a JSON object");
	expect_bad("{\"a\": 1}\n\x01\x02\n", "\\x01\\x02");
	expect_bad("{\"ok\": 1}\n{\"x\": nul}\n", "at byte 10");
}

static void test_size_limit(void **state)
{
	struct tp_jsonl r;
	struct json_object *m;
	struct err *e = NULL;
	char buf[200];

	(void)state;
	memset(buf, ' ', sizeof(buf));
	tp_jsonl_init(&r, 100);
	/* Without a newline yet, the limit still stops an endless message. */
	assert_true(tp_jsonl_feed(&r, buf, sizeof(buf), &e));
	assert_int_equal(tp_jsonl_next(&r, &m, &e), -1);
	assert_non_null(strstr(e->msg, "size limit"));
	err_free(e);
	tp_jsonl_free(&r);
}

static void test_many_small_feeds_compact(void **state)
{
	struct tp_jsonl r;
	struct json_object *m;
	struct err *e = NULL;
	const char *msg = "{\"event\": \"MIGRATION_PASS\", \"data\": {\"pass\": 1}}\r\n";
	int count = 0;

	(void)state;
	tp_jsonl_init(&r, 0);
	for (int i = 0; i < 10000; i++) {
		assert_true(tp_jsonl_feed(&r, msg, strlen(msg), &e));
		while (tp_jsonl_next(&r, &m, &e) > 0) {
			count++;
			json_object_put(m);
		}
	}
	assert_int_equal(count, 10000);
	/* Consumed bytes are dropped: the buffer does not grow with the stream. */
	assert_true(r.cap <= 4096);
	tp_jsonl_free(&r);
}

/* Asked before anything was fed (an agent's first read): nothing yet, and
 * no NULL + 0 (clang's UBSan, fuzz_mig_agent on an empty input). */
static void test_next_before_feed(void **state)
{
	struct tp_jsonl r;
	struct json_object *m;
	struct err *e = NULL;

	(void)state;
	tp_jsonl_init(&r, 0);
	assert_int_equal(tp_jsonl_next(&r, &m, &e), 0);
	assert_null(m);
	assert_true(tp_jsonl_feed(&r, "", 0, &e));
	assert_int_equal(tp_jsonl_next(&r, &m, &e), 0);
	assert_null(e);
	tp_jsonl_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_split),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_size_limit),
		cmocka_unit_test(test_many_small_feeds_compact),
		cmocka_unit_test(test_next_before_feed),
	};
	return cmocka_run_group_tests_name("jsonl", tests, NULL, NULL);
}
