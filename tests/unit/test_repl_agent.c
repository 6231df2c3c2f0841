/* test_repl_agent.c - requests a replication run's agent checks before
 * acting (repl_agent_req_check) and the manifest it puts together from
 * base64 pieces (repl_mani_rx_add). Inputs fuzz_repl_agent found are kept
 * here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replicate/repl.h"

static int req_check(const char *text, char *msg, size_t len)
{
	struct json_object *o = json_tokener_parse(text);
	struct err *e = NULL;
	int code;

	assert_non_null(o);
	code = repl_agent_req_check(o, &e) ? ERR_OK : (int)e->code;
	if (msg)
		snprintf(msg, len, "%s", e ? e->msg : "");
	err_free(e);
	json_object_put(o);
	return code;
}

static void test_requests_ok(void **state)
{
	static const char *const ok[] = {
		"{\"cmd\":\"hello\"}",
		"{\"cmd\":\"address\",\"cidr\":\"10.99.2.0/24\"}",
		"{\"cmd\":\"replica-info\",\"job\":\"106-0\",\"vmid\":106,\"storage\":\"local\","
		"\"volume\":\"vm-106-disk-0.raw\"}",
		"{\"cmd\":\"recv\",\"job\":\"106-0\",\"vmid\":106,\"storage\":\"local\","
		"\"volume\":\"vm-106-disk-0.raw\",\"size\":1073741824,\"gen\":1,\"time\":0,"
		"\"mode\":\"create\",\"bind\":\"10.99.2.2\",\"peer\":\"10.99.2.1\"}",
		"{\"cmd\":\"recv\",\"job\":\"106-0\",\"vmid\":106,\"storage\":\"local\","
		"\"volume\":\"v.qcow2\",\"size\":1,\"gen\":8,\"time\":-5,\"mode\":\"update\","
		"\"bind\":\"127.0.0.1\"}",
		"{\"cmd\":\"recv-wait\"}",
		"{\"cmd\":\"remove\",\"job\":\"106-0\",\"vmid\":106}",
		"{\"cmd\":\"release\",\"job\":\"106-0\",\"vmid\":106}",
		"{\"cmd\":\"manifest-put\",\"job\":\"106-0\",\"drive\":0,\"gen\":3,\"size\":1048576,"
		"\"total\":12,\"offset\":0,\"data\":\"AAECAwQF\"}",
		"{\"cmd\":\"bye\"}",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		assert_int_equal(req_check(ok[i], NULL, 0), ERR_OK);
}

static void test_requests_refused(void **state)
{
	static const struct {
		const char *text, *msg;
	} bad[] = {
		{ "{\"cmd\":null}", "unknown request ''" },
		{ "{\"cmd\":\"start\"}", "unknown request 'start'" },
		{ "{\"cmd\":\"address\"}", "address needs cidr" },
		{ "{\"cmd\":\"replica-info\",\"vmid\":106}", "request without storage and volume" },
		{ "{\"cmd\":\"replica-info\",\"storage\":\"s\",\"volume\":\"v\"}",
		  "request without a valid vmid" },
		{ "{\"cmd\":\"recv\",\"job\":\"106-0\",\"vmid\":106,\"size\":1,\"gen\":1,\"time\":0,"
		  "\"mode\":\"replace\",\"bind\":\"b\"}",
		  "recv needs job, size, gen, time, mode and bind" },
		{ "{\"cmd\":\"recv\",\"job\":\"106-0\",\"vmid\":106,\"size\":1,\"gen\":0,\"time\":0,"
		  "\"mode\":\"create\",\"bind\":\"b\"}",
		  "recv needs job, size, gen, time, mode and bind" },
		{ "{\"cmd\":\"remove\",\"vmid\":106}", "remove needs job and vmid" },
		{ "{\"cmd\":\"remove\",\"job\":\"../106-0\",\"vmid\":106}", "request with an invalid job ID (want VMID-N)" },
		{ "{\"cmd\":\"release\",\"job\":\"106-0-1\",\"vmid\":106}", "request with an invalid job ID (want VMID-N)" },
		{ "{\"cmd\":\"remove\",\"job\":\"10-0\",\"vmid\":106}", "request with an invalid job ID (want VMID-N)" },
		{ "{\"cmd\":\"remove\",\"job\":\"106-\",\"vmid\":106}", "request with an invalid job ID (want VMID-N)" },
		{ "{\"cmd\":\"remove\",\"job\":\"106-0\",\"vmid\":1000000000}",
		  "request without a valid vmid" },
		{ "{\"cmd\":\"release\",\"job\":\"106-0\"}", "release needs job and vmid" },
		{ "{\"cmd\":\"manifest-put\",\"job\":\"106-0\",\"drive\":100,\"gen\":3,\"size\":1,"
		  "\"total\":12,\"offset\":0,\"data\":\"\"}",
		  "manifest-put needs job, drive, gen, size, total, offset and base64 data" },
		{ "{\"cmd\":\"manifest-put\",\"job\":\"106-0\",\"drive\":0,\"gen\":3,\"size\":1,"
		  "\"total\":67108865,\"offset\":0,\"data\":\"\"}",
		  "manifest-put needs job, drive, gen, size, total, offset and base64 data" },
	};
	char msg[200];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(req_check(bad[i].text, msg, sizeof(msg)), ERR_PROTO);
		assert_string_equal(msg, bad[i].msg);
	}
}

static void test_manifest_pieces(void **state)
{
	static const uint8_t want[12] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 };
	struct repl_mani_rx m = { .buf = NULL };
	struct err *e = NULL;
	bool whole = true;

	(void)state;
	assert_true(repl_mani_rx_add(&m, 12, 0, "AAECAwQF", &whole, &e));
	assert_false(whole);
	/* Out of order, another total, longer than announced: refused. */
	assert_false(repl_mani_rx_add(&m, 12, 3, "BgcI", &whole, &e));
	assert_int_equal(e->code, ERR_PROTO);
	err_free(e);
	e = NULL;
	assert_false(repl_mani_rx_add(&m, 13, 6, "BgcI", &whole, &e));
	err_free(e);
	e = NULL;
	assert_false(repl_mani_rx_add(&m, 12, 6, "BgcICQoLDA==", &whole, &e));
	assert_int_equal(e->code, ERR_INVAL);
	err_free(e);
	e = NULL;
	assert_true(repl_mani_rx_add(&m, 12, 6, "BgcICQoL", &whole, &e));
	assert_true(whole);
	assert_memory_equal(m.buf, want, sizeof(want));
	repl_mani_rx_free(&m);
	/* A piece that does not start at 0 with nothing begun. */
	assert_false(repl_mani_rx_add(&m, 12, 6, "BgcICQoL", &whole, &e));
	err_free(e);
	e = NULL;
	/* Starting over drops the half-received one. */
	assert_true(repl_mani_rx_add(&m, 4, 0, "3q0=", &whole, &e));
	assert_true(repl_mani_rx_add(&m, 4, 0, "3q2+7w==", &whole, &e));
	assert_true(whole);
	repl_mani_rx_free(&m);
	assert_null(m.buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_requests_ok),
		cmocka_unit_test(test_requests_refused),
		cmocka_unit_test(test_manifest_pieces),
	};
	return cmocka_run_group_tests_name("repl_agent", tests, NULL, NULL);
}
