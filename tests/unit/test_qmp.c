/*
 * test_qmp.c - the QMP client against a scripted peer on a socketpair:
 * greeting, ids, events, split and merged reads, huge replies, closes,
 * malformed JSON, QMP errors, timeouts, fd passing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fakeqmp.h"
#include "common/util.h"
#include "transport/tp.h"

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

static struct tp_qmp *connect_fake(struct fakeqmp *f, fakeqmp_script s, void *opaque)
{
	struct err *e = NULL;
	struct tp_qmp *q;

	fakeqmp_start(f, s, opaque);
	q = tp_qmp_from_fd(f->client_fd, 5000, &e);
	if (!q)
		fail_msg("connect: %s", e->msg);
	return q;
}

/* ---- command with id, version from greeting ---- */

static void s_basic(struct fakeqmp *f)
{
	int64_t id;

	fakeqmp_greet(f);
	id = fakeqmp_read_cmd(f);
	if (strcmp(f->last_cmd, "query-status"))
		f->failed = true;
	fakeqmp_sendf(f, "{\"return\": {\"status\": \"running\", \"running\": true}, \"id\": %lld}\r\n",
		      (long long)id);
	/* A command whose return is JSON null still yields an object. */
	id = fakeqmp_read_cmd(f);
	fakeqmp_sendf(f, "{\"return\": null, \"id\": %lld}\r\n", (long long)id);
}

static void test_basic(void **state)
{
	struct fakeqmp f;
	struct tp_qmp *q = connect_fake(&f, s_basic, NULL);
	struct json_object *r, *v;
	struct err *e = NULL;

	(void)state;
	assert_string_equal(tp_qmp_version(q), "7.2.0");
	r = tp_qmp_call(q, "query-status", NULL, 2000, &e);
	assert_non_null(r);
	assert_null(e);
	assert_true(json_object_object_get_ex(r, "status", &v));
	assert_string_equal(json_object_get_string(v), "running");
	json_object_put(r);
	r = tp_qmp_call(q, "stop", NULL, 2000, &e);
	assert_non_null(r);
	assert_true(json_object_is_type(r, json_type_object));
	json_object_put(r);
	tp_qmp_close(q);
	fakeqmp_finish(&f);
	assert_false(f.failed);
}

/* ---- a reply split into single bytes across many reads ---- */

static void s_split(struct fakeqmp *f)
{
	char buf[256];
	int64_t id;

	fakeqmp_greet(f);
	id = fakeqmp_read_cmd(f);
	snprintf(buf, sizeof(buf), "{\"return\": {\"value\": \"split-%s\"}, \"id\": %lld}\r\n",
		 "reply", (long long)id);
	for (char *p = buf; *p; p++) {
		char one[2] = { *p, 0 };
		fakeqmp_send(f, one);
		if ((p - buf) % 16 == 0)
			sleep_ms(1);
	}
}

static void test_split_reads(void **state)
{
	struct fakeqmp f;
	struct tp_qmp *q = connect_fake(&f, s_split, NULL);
	struct json_object *r, *v;
	struct err *e = NULL;

	(void)state;
	r = tp_qmp_call(q, "x", NULL, 5000, &e);
	assert_non_null(r);
	assert_true(json_object_object_get_ex(r, "value", &v));
	assert_string_equal(json_object_get_string(v), "split-reply");
	json_object_put(r);
	tp_qmp_close(q);
	fakeqmp_finish(&f);
}

/* ---- events and a reply in one write; events come out in order ---- */

static void s_merged(struct fakeqmp *f)
{
	int64_t id;

	fakeqmp_greet(f);
	id = fakeqmp_read_cmd(f);
	fakeqmp_sendf(f,
		      "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}\r\n"
		      "{\"event\": \"MIGRATION\", \"data\": {\"status\": \"setup\"}, \"timestamp\": {}}\r\n"
		      "{\"return\": {}, \"id\": %lld}\r\n"
		      "{\"event\": \"MIGRATION\", \"data\": {\"status\": \"completed\"}, \"timestamp\": {}}\r\n",
		      (long long)id);
}

static const char *ev_status(struct json_object *ev)
{
	struct json_object *d, *s;

	if (!json_object_object_get_ex(ev, "data", &d) ||
	    !json_object_object_get_ex(d, "status", &s))
		return "";
	return json_object_get_string(s);
}

static void test_merged_messages(void **state)
{
	struct fakeqmp f;
	struct tp_qmp *q = connect_fake(&f, s_merged, NULL);
	struct json_object *ev, *n;
	struct err *e = NULL;

	(void)state;
	assert_true(tp_qmp_run(q, "migrate", NULL, 2000, &e));
	/* The first MIGRATION is taken; STOP stays queued ahead of the rest. */
	ev = tp_qmp_wait_event(q, "MIGRATION", 2000, &e);
	assert_non_null(ev);
	assert_string_equal(ev_status(ev), "setup");
	json_object_put(ev);
	ev = tp_qmp_wait_event(q, "MIGRATION", 2000, &e);
	assert_non_null(ev);
	assert_string_equal(ev_status(ev), "completed");
	json_object_put(ev);
	ev = tp_qmp_pop_event(q);
	assert_non_null(ev);
	assert_true(json_object_object_get_ex(ev, "event", &n));
	assert_string_equal(json_object_get_string(n), "STOP");
	json_object_put(ev);
	assert_null(tp_qmp_pop_event(q));
	tp_qmp_close(q);
	fakeqmp_finish(&f);
}

/* ---- a reply of several MiB ---- */

#define BIG (6u << 20)

static void s_big(struct fakeqmp *f)
{
	char *s = malloc(BIG + 128);
	int64_t id;
	size_t off;

	fakeqmp_greet(f);
	id = fakeqmp_read_cmd(f);
	off = (size_t)sprintf(s, "{\"return\": {\"blob\": \"");
	memset(s + off, 'a', BIG);
	off += BIG;
	sprintf(s + off, "\"}, \"id\": %lld}\r\n", (long long)id);
	fakeqmp_send(f, s);
	free(s);
}

static void test_big_reply(void **state)
{
	struct fakeqmp f;
	struct tp_qmp *q = connect_fake(&f, s_big, NULL);
	struct json_object *r, *v;
	struct err *e = NULL;

	(void)state;
	r = tp_qmp_call(q, "query-qmp-schema", NULL, 10000, &e);
	assert_non_null(r);
	assert_true(json_object_object_get_ex(r, "blob", &v));
	assert_int_equal(json_object_get_string_len(v), BIG);
	assert_int_equal(json_object_get_string(v)[BIG - 1], 'a');
	json_object_put(r);
	tp_qmp_close(q);
	fakeqmp_finish(&f);
}

/* ---- QEMU closes the socket in the middle of a command ---- */

static void s_close_mid(struct fakeqmp *f)
{
	fakeqmp_greet(f);
	fakeqmp_read_cmd(f);
	fakeqmp_send(f, "{\"return\": {\"status\": \"act"); /* half a reply */
	fakeqmp_close(f);
}

static void test_close_mid_command(void **state)
{
	struct fakeqmp f;
	struct tp_qmp *q = connect_fake(&f, s_close_mid, NULL);
	struct err *e = NULL;
	int64_t t0 = util_now_ms();

	(void)state;
	assert_null(tp_qmp_call(q, "query-migrate", NULL, 10000, &e));
	assert_non_null(e);
	assert_int_equal(e->code, ERR_CLOSED);
	assert_non_null(strstr(e->msg, "query-migrate"));
	assert_true(util_now_ms() - t0 < 5000); /* no hang until the timeout */
	err_free(e);
	e = NULL;
	/* The connection stays broken and says so at once. */
	assert_false(tp_qmp_run(q, "query-status", NULL, 10000, &e));
	assert_int_equal(e->code, ERR_CLOSED);
	err_free(e);
	tp_qmp_close(q);
	fakeqmp_finish(&f);
}

/* ---- malformed JSON ---- */

static void s_malformed(struct fakeqmp *f)
{
	fakeqmp_greet(f);
	fakeqmp_read_cmd(f);
	fakeqmp_send(f, "{\"return\": {\"a\": tru}, \"id\": 2}\r\n");
}

static void test_malformed(void **state)
{
	struct fakeqmp f;
	struct tp_qmp *q = connect_fake(&f, s_malformed, NULL);
	struct err *e = NULL;

	(void)state;
	assert_null(tp_qmp_call(q, "x", NULL, 5000, &e));
	assert_int_equal(e->code, ERR_PROTO);
	assert_non_null(strstr(e->msg, "malformed QMP message"));
	assert_non_null(strstr(e->msg, "tru}")); /* shows the offending bytes */
	err_free(e);
	tp_qmp_close(q);
	fakeqmp_finish(&f);
}

/* ---- QMP error reply: class and description kept ---- */

static void s_error(struct fakeqmp *f)
{
	int64_t id;

	fakeqmp_greet(f);
	id = fakeqmp_read_cmd(f);
	fakeqmp_sendf(f, "{\"id\": %lld, \"error\": {\"class\": \"DeviceNotFound\", "
			 "\"desc\": \"Device 'drive9' not found\"}}\r\n", (long long)id);
	id = fakeqmp_read_cmd(f);
	fakeqmp_sendf(f, "{\"return\": {}, \"id\": %lld}\r\n", (long long)id);
}

static void test_qmp_error(void **state)
{
	struct fakeqmp f;
	struct tp_qmp *q = connect_fake(&f, s_error, NULL);
	struct err *e = NULL;

	(void)state;
	assert_false(tp_qmp_run(q, "block-job-cancel", NULL, 2000, &e));
	assert_int_equal(e->code, ERR_QMP);
	assert_string_equal(e->qmp_class, "DeviceNotFound");
	assert_non_null(strstr(e->msg, "Device 'drive9' not found"));
	assert_non_null(strstr(e->msg, "block-job-cancel"));
	err_free(e);
	e = NULL;
	/* A QMP error does not break the connection. */
	assert_true(tp_qmp_run(q, "cont", NULL, 2000, &e));
	tp_qmp_close(q);
	fakeqmp_finish(&f);
}

/* ---- timeout; the late reply is dropped by id ---- */

static void s_late(struct fakeqmp *f)
{
	int64_t id1, id2;

	fakeqmp_greet(f);
	id1 = fakeqmp_read_cmd(f);
	id2 = fakeqmp_read_cmd(f); /* sent after the client gave up on id1 */
	fakeqmp_sendf(f, "{\"return\": {\"who\": \"first\"}, \"id\": %lld}\r\n", (long long)id1);
	fakeqmp_sendf(f, "{\"return\": {\"who\": \"second\"}, \"id\": %lld}\r\n", (long long)id2);
}

static void test_timeout_and_stale_reply(void **state)
{
	struct fakeqmp f;
	struct tp_qmp *q = connect_fake(&f, s_late, NULL);
	struct json_object *r, *v;
	struct err *e = NULL;
	int64_t t0 = util_now_ms();

	(void)state;
	assert_null(tp_qmp_call(q, "slow", NULL, 200, &e));
	assert_int_equal(e->code, ERR_TIMEOUT);
	assert_true(util_now_ms() - t0 >= 190);
	assert_true(util_now_ms() - t0 < 2000);
	err_free(e);
	e = NULL;
	r = tp_qmp_call(q, "fast", NULL, 2000, &e);
	assert_non_null(r);
	assert_true(json_object_object_get_ex(r, "who", &v));
	assert_string_equal(json_object_get_string(v), "second");
	json_object_put(r);
	tp_qmp_close(q);
	fakeqmp_finish(&f);
}

/* ---- waiting for an event that does not come ---- */

static void s_quiet(struct fakeqmp *f)
{
	fakeqmp_greet(f);
	fakeqmp_read_cmd(f); /* returns when the client closes */
}

static void test_event_timeout(void **state)
{
	struct fakeqmp f;
	struct tp_qmp *q = connect_fake(&f, s_quiet, NULL);
	struct err *e = NULL;

	(void)state;
	assert_null(tp_qmp_wait_event(q, "SHUTDOWN", 150, &e));
	assert_int_equal(e->code, ERR_TIMEOUT);
	assert_non_null(strstr(e->msg, "SHUTDOWN"));
	err_free(e);
	tp_qmp_close(q);
	fakeqmp_finish(&f);
}

/* ---- a peer that is not QMP ---- */

static void s_not_qmp(struct fakeqmp *f)
{
	fakeqmp_send(f, "{\"hello\": \"world\"}\n");
}

static void test_not_a_greeting(void **state)
{
	struct fakeqmp f;
	struct err *e = NULL;

	(void)state;
	fakeqmp_start(&f, s_not_qmp, NULL);
	assert_null(tp_qmp_from_fd(f.client_fd, 2000, &e));
	assert_int_equal(e->code, ERR_PROTO);
	assert_non_null(strstr(e->msg, "not a QMP server"));
	err_free(e);
	fakeqmp_finish(&f);
}

/* ---- getfd passes a descriptor ---- */

static void s_getfd(struct fakeqmp *f)
{
	int64_t id;

	fakeqmp_greet(f);
	id = fakeqmp_read_cmd(f);
	if (strcmp(f->last_cmd, "getfd") || f->received_fd < 0)
		f->failed = true;
	fakeqmp_sendf(f, "{\"return\": {}, \"id\": %lld}\r\n", (long long)id);
}

static void test_send_fd(void **state)
{
	struct fakeqmp f;
	struct tp_qmp *q = connect_fake(&f, s_getfd, NULL);
	struct err *e = NULL;
	int fd = open("/dev/null", O_RDONLY);

	(void)state;
	assert_true(tp_qmp_send_fd(q, fd, "migfd", 2000, &e));
	close(fd);
	tp_qmp_close(q);
	fakeqmp_finish(&f);
	assert_false(f.failed);
}

/* ---- connecting to a socket path that does not exist ---- */

static void test_connect_missing(void **state)
{
	struct err *e = NULL;
	int64_t t0 = util_now_ms();

	(void)state;
	assert_null(tp_qmp_connect("/nonexistent/qmp.sock", 200, &e));
	assert_int_equal(e->code, ERR_IO);
	assert_non_null(strstr(e->msg, "/nonexistent/qmp.sock"));
	assert_true(util_now_ms() - t0 < 2000);
	err_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic),
		cmocka_unit_test(test_split_reads),
		cmocka_unit_test(test_merged_messages),
		cmocka_unit_test(test_big_reply),
		cmocka_unit_test(test_close_mid_command),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_qmp_error),
		cmocka_unit_test(test_timeout_and_stale_reply),
		cmocka_unit_test(test_event_timeout),
		cmocka_unit_test(test_not_a_greeting),
		cmocka_unit_test(test_send_fd),
		cmocka_unit_test(test_connect_missing),
	};
	return cmocka_run_group_tests_name("qmp", tests, NULL, NULL);
}
