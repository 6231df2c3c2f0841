/* test_mig_agent.c - the migration's control channel as each end reads
 * it: requests the agent checks before acting (mig_agent_req_check), the
 * replies the worker reads (mig_chan_reply_check), and messages through a
 * real channel (mig_chan_recv). Inputs fuzz_mig_agent found, or that
 * crashed a reader before, are kept here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migrate/mig.h"

/* The check's verdict on one JSON text: ERR_OK or the error's code, with
 * the message in msg. */
static int req_check(const char *text, char *msg, size_t len)
{
	struct json_object *o = json_tokener_parse(text);
	struct err *e = NULL;
	int code;

	assert_non_null(o);
	code = mig_agent_req_check(o, &e) ? ERR_OK : (int)e->code;
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
		"{\"cmd\":\"facts\",\"vmid\":106,\"cidr\":\"10.99.2.0/24\",\"cpu\":\"host\","
		"\"accel\":\"kvm\",\"memory\":268435456,\"storages\":[\"local\"]}",
		"{\"cmd\":\"node-facts\"}",
		"{\"cmd\":\"cleanup\",\"vmid\":106}",
		"{\"cmd\":\"start\",\"vmid\":106,\"mem_bytes\":268435456,\"accel\":\"tcg\","
		"\"bind\":\"127.0.0.1\",\"peer\":\"127.0.0.1\"}",
		"{\"cmd\":\"start\",\"vmid\":106,\"mem_bytes\":1,\"accel\":\"tcg\",\"bind\":\"::1\","
		"\"disks\":null}",
		"{\"cmd\":\"start\",\"vmid\":999999999,\"mem_bytes\":1,\"accel\":\"kvm\",\"bind\":\"b\","
		"\"disks\":[{\"drive\":0,\"storage\":\"local\",\"target_storage\":\"fast\","
		"\"volume\":\"vm-106-disk-0.raw\",\"size\":1073741824}]}",
		"{\"cmd\":\"listen\",\"tune\":{\"multifd\":4,\"multifd_zstd\":true}}",
		"{\"cmd\":\"wait-loaded\",\"timeout_ms\":60000}",
		"{\"cmd\":\"resume\"}", "{\"cmd\":\"check\"}", "{\"cmd\":\"quit\"}", "{\"cmd\":\"keep-volumes\"}",
		"{\"cmd\":\"recv-volume\",\"vmid\":106,\"storage\":\"local\",\"volume\":\"v.raw\","
		"\"size\":1,\"bind\":\"10.99.2.2\"}",
		"{\"cmd\":\"volume-wait\"}", "{\"cmd\":\"bye\"}",
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
		{ "{}", "unknown request ''" },
		{ "{\"cmd\":5}", "unknown request ''" },
		{ "{\"cmd\":\"frob\"}", "unknown request 'frob'" },
		{ "{\"cmd\":\"fr\\nob\\u001b[2J\"}", "unknown request 'fr?ob?[2J'" },
		{ "{\"cmd\":\"wait-loaded\",\"timeout_ms\":-1}", "wait-loaded needs timeout_ms from 0 to 3600000" },
		{ "{\"cmd\":\"wait-loaded\",\"timeout_ms\":4294967296}", "wait-loaded needs timeout_ms from 0 to 3600000" },
		{ "{\"cmd\":\"wait-loaded\",\"timeout_ms\":\"5\"}", "wait-loaded needs timeout_ms from 0 to 3600000" },
		{ "{\"cmd\":\"facts\"}", "request without a valid vmid" },
		{ "{\"cmd\":\"cleanup\",\"vmid\":99}", "request without a valid vmid" },
		{ "{\"cmd\":\"cleanup\",\"vmid\":\"106\"}", "request without a valid vmid" },
		{ "{\"cmd\":\"start\",\"vmid\":106,\"mem_bytes\":0,\"accel\":\"tcg\",\"bind\":\"b\"}",
		  "start needs bind, mem_bytes and accel" },
		/* json-c reads an object as a list only by accident (or asserts):
		 * new_disks() took any "disks" for a list. */
		{ "{\"cmd\":\"start\",\"vmid\":106,\"mem_bytes\":1,\"accel\":\"tcg\",\"bind\":\"b\","
		  "\"disks\":{\"drive\":0}}", "disks must be a list" },
		{ "{\"cmd\":\"start\",\"vmid\":106,\"mem_bytes\":1,\"accel\":\"tcg\",\"bind\":\"b\","
		  "\"disks\":[7]}", "a disk needs drive, storage, target_storage, volume and size" },
		{ "{\"cmd\":\"start\",\"vmid\":106,\"mem_bytes\":1,\"accel\":\"tcg\",\"bind\":\"b\","
		  "\"disks\":[{},{},{},{},{},{},{},{},{}]}", "too many disks" },
		{ "{\"cmd\":\"listen\"}", "missing migration settings" },
		{ "{\"cmd\":\"listen\",\"tune\":{\"multifd\":65}}", "invalid multifd channels 65" },
		{ "{\"cmd\":\"recv-volume\",\"vmid\":106,\"storage\":\"local\",\"volume\":\"v\","
		  "\"size\":-1,\"bind\":\"b\"}", "recv-volume needs storage, volume, size and bind" },
	};
	char msg[200];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int code = req_check(bad[i].text, msg, sizeof(msg));

		assert_true(code == ERR_PROTO || code == ERR_INVAL);
		assert_string_equal(msg, bad[i].msg);
	}
}

static void test_replies(void **state)
{
	static const struct {
		const char *text;
		int code;
		const char *msg;
	} r[] = {
		{ "{\"ok\":true,\"port\":40123}", ERR_OK, NULL },
		{ "{\"ok\":false,\"error\":\"node due is in maintenance\",\"code\":\"state\"}",
		  ERR_STATE, "node due is in maintenance" },
		{ "{\"ok\":false,\"error\":\"x\",\"code\":\"protocol\"}", ERR_PROTO, "x" },
		{ "{\"ok\":false,\"code\":\"NO-SUCH\"}", ERR_STATE,
		  "the agent refused without a reason" },
		/* Crashed the worker: strcmp(NULL, ...) on a null code. */
		{ "{\"ok\":false,\"code\":null,\"error\":null}", ERR_STATE,
		  "the agent refused without a reason" },
		/* json-c takes any non-empty string for true: "false" was ok. */
		{ "{\"ok\":\"false\",\"code\":7,\"error\":[1]}", ERR_STATE, "[ 1 ]" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
		struct json_object *o = json_tokener_parse(r[i].text);
		struct err *e = NULL;

		assert_non_null(o);
		assert_int_equal(mig_chan_reply_check(o, &e), r[i].code == ERR_OK);
		if (r[i].code != ERR_OK) {
			assert_non_null(e);
			assert_int_equal(e->code, r[i].code);
			assert_string_equal(e->msg, r[i].msg);
		} else {
			assert_null(e);
		}
		err_free(e);
		json_object_put(o);
	}
}

static struct mig_chan *chan_with(const char *in)
{
	int p[2];

	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], in, strlen(in)), (ssize_t)strlen(in));
	close(p[1]);
	return mig_chan_open(p[0], -1);
}

/* Through a channel: messages one by one, blank lines and CRLF skipped;
 * a message that is not an object breaks it for good; EOF is ERR_CLOSED. */
static void test_channel(void **state)
{
	struct mig_chan *c = chan_with("{\"cmd\":\"hello\"}\r\n\n{\"cmd\":\"bye\"}\n[1]\n"
				       "{\"cmd\":\"quit\"}\n");
	struct json_object *m;
	struct err *e = NULL;

	(void)state;
	for (int i = 0; i < 2; i++) {
		m = mig_chan_recv(c, 1000, &e);
		assert_non_null(m);
		assert_true(mig_agent_req_check(m, &e));
		json_object_put(m);
	}
	for (int i = 0; i < 2; i++) {
		assert_null(mig_chan_recv(c, 1000, &e));
		assert_int_equal(e->code, ERR_PROTO);
		err_free(e);
		e = NULL;
	}
	mig_chan_close(c);
	c = chan_with("");
	assert_null(mig_chan_recv(c, 1000, &e));
	assert_int_equal(e->code, ERR_CLOSED);
	err_free(e);
	mig_chan_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_requests_ok),
		cmocka_unit_test(test_requests_refused),
		cmocka_unit_test(test_replies),
		cmocka_unit_test(test_channel),
	};
	return cmocka_run_group_tests_name("mig_agent", tests, NULL, NULL);
}
