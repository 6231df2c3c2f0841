/*
 * test_store.c - the replicated store's local copy: deterministic apply
 * (two stores fed the same ops are identical), conditional ops refused on
 * every node alike, locks judged by the op's clock, snapshots.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/clu.h"

static char dir[] = "/tmp/vmm-test-store-XXXXXX";

static struct clu_store *open_store(const char *name)
{
	char path[256];
	struct err *e = NULL;
	struct clu_store *s;

	snprintf(path, sizeof(path), "%s/%s.db", dir, name);
	s = clu_store_open(path, &e);
	if (!s)
		fail_msg("open: %s", e->msg);
	return s;
}

static bool apply(struct clu_store *s, struct clu_op op, struct err **e)
{
	if (!op.if_version)
		op.if_version = -1;
	return clu_store_apply(s, &op, e);
}

static void test_put_get_versions(void **state)
{
	struct clu_store *s = open_store("a");
	struct err *e = NULL;
	uint64_t v;
	char *val;

	(void)state;
	assert_int_equal(clu_store_version(s), 0);
	assert_true(apply(s, (struct clu_op){ .kind = CLU_OP_PUT, .key = "guests/106",
					       .value = "memory: 512\n" }, &e));
	assert_true(apply(s, (struct clu_op){ .kind = CLU_OP_PUT, .key = "nodes/uno",
					       .value = "{}" }, &e));
	assert_int_equal(clu_store_version(s), 2);
	val = clu_store_get(s, "guests/106", &v, &e);
	assert_string_equal(val, "memory: 512\n");
	assert_int_equal(v, 1);
	free(val);
	assert_null(clu_store_get(s, "guests/107", &v, &e));
	assert_int_equal(e->code, ERR_NOTFOUND);
	err_free(e);
	e = NULL;
	/* Conditional put: the wrong version is refused and changes nothing. */
	assert_false(apply(s, (struct clu_op){ .kind = CLU_OP_PUT, .key = "guests/106",
						.value = "x", .if_version = 7 }, &e));
	assert_int_equal(e->code, ERR_CONFLICT);
	assert_non_null(strstr(e->msg, "changed by someone else"));
	err_free(e);
	e = NULL;
	assert_int_equal(clu_store_version(s), 2);
	assert_true(apply(s, (struct clu_op){ .kind = CLU_OP_PUT, .key = "guests/106",
					       .value = "y", .if_version = 1 }, &e));
	assert_true(apply(s, (struct clu_op){ .kind = CLU_OP_DELETE, .key = "nodes/uno" }, &e));
	assert_false(apply(s, (struct clu_op){ .kind = CLU_OP_DELETE, .key = "nodes/uno" }, &e));
	assert_int_equal(e->code, ERR_NOTFOUND);
	err_free(e);
	clu_store_close(s);
	/* Durable: reopening sees the same state. */
	s = open_store("a");
	assert_int_equal(clu_store_version(s), 4);
	clu_store_close(s);
}

static void test_create_is_exclusive(void **state)
{
	struct clu_store *s = open_store("b");
	struct err *e = NULL;

	(void)state;
	assert_true(apply(s, (struct clu_op){ .kind = CLU_OP_CREATE, .key = "guests/106",
					       .value = "node: uno\n" }, &e));
	assert_false(apply(s, (struct clu_op){ .kind = CLU_OP_CREATE, .key = "guests/106",
						.value = "node: due\n" }, &e));
	assert_string_equal(e->msg, "'guests/106' already exists");
	assert_int_equal(e->code, ERR_CONFLICT);
	err_free(e);
	clu_store_close(s);
}

static void test_locks_use_op_clock(void **state)
{
	struct clu_store *s = open_store("c");
	struct err *e = NULL;
	char owner[64];
	int64_t exp;
	char *val;

	(void)state;
	assert_true(apply(s, (struct clu_op){ .kind = CLU_OP_LOCK, .key = "locks/guest/106",
					       .owner = "uno", .ttl_ms = 10000, .ts_ms = 1000 }, &e));
	/* Another node, before expiry (by the op's own clock): refused. */
	assert_false(apply(s, (struct clu_op){ .kind = CLU_OP_LOCK, .key = "locks/guest/106",
						.owner = "due", .ttl_ms = 10000, .ts_ms = 5000 }, &e));
	assert_non_null(strstr(e->msg, "locked by uno for another 6 s"));
	err_free(e);
	e = NULL;
	/* The holder renews. */
	assert_true(apply(s, (struct clu_op){ .kind = CLU_OP_LOCK, .key = "locks/guest/106",
					       .owner = "uno", .ttl_ms = 10000, .ts_ms = 6000 }, &e));
	/* A dead holder's lock expires: due takes it after 16000. */
	assert_false(apply(s, (struct clu_op){ .kind = CLU_OP_LOCK, .key = "locks/guest/106",
						.owner = "due", .ttl_ms = 10000, .ts_ms = 15999 }, &e));
	err_free(e);
	e = NULL;
	assert_true(apply(s, (struct clu_op){ .kind = CLU_OP_LOCK, .key = "locks/guest/106",
					       .owner = "due", .ttl_ms = 10000, .ts_ms = 16001 }, &e));
	val = clu_store_get(s, "locks/guest/106", NULL, &e);
	assert_true(clu_lock_parse(val, owner, sizeof(owner), &exp));
	assert_string_equal(owner, "due");
	assert_int_equal(exp, 26001);
	free(val);
	/* Only the holder unlocks; unlocking nothing is fine. */
	assert_false(apply(s, (struct clu_op){ .kind = CLU_OP_UNLOCK, .key = "locks/guest/106",
						.owner = "uno" }, &e));
	err_free(e);
	e = NULL;
	assert_true(apply(s, (struct clu_op){ .kind = CLU_OP_UNLOCK, .key = "locks/guest/106",
					       .owner = "due" }, &e));
	assert_true(apply(s, (struct clu_op){ .kind = CLU_OP_UNLOCK, .key = "locks/guest/106",
					       .owner = "due" }, &e));
	clu_store_close(s);
}

/* Two "nodes" apply the same op sequence, including refused ones. */
static void test_deterministic(void **state)
{
	struct clu_store *a = open_store("d1"), *b = open_store("d2");
	char key[64], val[64];

	(void)state;
	for (int i = 0; i < 500; i++) {
		struct clu_op op = { .if_version = -1, .ts_ms = i * 100 };
		struct err *ea = NULL, *eb = NULL;

		snprintf(key, sizeof(key), "k/%d", i % 37);
		snprintf(val, sizeof(val), "v%d", i);
		op.key = key;
		op.value = val;
		op.kind = (enum clu_op_kind)(i % 3 == 0 ? CLU_OP_CREATE : i % 7 == 0 ?
					     CLU_OP_DELETE : CLU_OP_PUT);
		if (i % 11 == 0) {
			op.kind = CLU_OP_LOCK;
			op.owner = i % 2 ? "uno" : "due";
			op.ttl_ms = 1000;
			op.key = "locks/x";
		}
		assert_int_equal(clu_store_apply(a, &op, &ea), clu_store_apply(b, &op, &eb));
		err_free(ea);
		err_free(eb);
	}
	assert_int_equal(clu_store_version(a), clu_store_version(b));
	assert_true(clu_store_checksum(a) == clu_store_checksum(b));
	/* ...and a single differing op makes the sums differ. */
	{
		struct err *e = NULL;
		assert_true(apply(a, (struct clu_op){ .kind = CLU_OP_PUT, .key = "k/extra",
						       .value = "1" }, &e));
	}
	assert_false(clu_store_checksum(a) == clu_store_checksum(b));
	clu_store_close(a);
	clu_store_close(b);
}

struct chunks {
	struct json_object *c[64];
	unsigned n;
};

static bool keep_chunk(struct json_object *chunk, bool last, void *opaque)
{
	struct chunks *cs = opaque;

	(void)last;
	cs->c[cs->n++] = chunk;
	return cs->n < 64;
}

static void test_snapshot_round_trip(void **state)
{
	struct clu_store *a = open_store("s1"), *b = open_store("s2");
	struct chunks cs = { .n = 0 };
	struct err *e = NULL;
	char key[64], val[200];
	uint64_t stale;

	(void)state;
	for (int i = 0; i < 300; i++) {
		snprintf(key, sizeof(key), "guests/%d", 100 + i);
		snprintf(val, sizeof(val), "name: vm%d\nmemory: 512\n%*s", i, 100, "");
		assert_true(apply(a, (struct clu_op){ .kind = CLU_OP_PUT, .key = key, .value = val }, &e));
	}
	assert_true(apply(b, (struct clu_op){ .kind = CLU_OP_PUT, .key = "stale", .value = "x" }, &e));
	assert_true(clu_store_dump(a, 8192, keep_chunk, &cs, &e));
	assert_true(cs.n > 3); /* really chunked */
	stale = clu_store_checksum(b); /* remembered by b: replace must drop it */
	assert_true(clu_store_replace(b, clu_store_version(a), cs.c, cs.n, &e));
	assert_true(clu_store_checksum(a) == clu_store_checksum(b));
	assert_false(clu_store_checksum(b) == stale);
	assert_null(clu_store_get(b, "stale", NULL, &e));
	err_free(e);
	for (unsigned i = 0; i < cs.n; i++)
		json_object_put(cs.c[i]);
	clu_store_close(a);
	clu_store_close(b);
}

static void test_keys_and_ops_checked(void **state)
{
	static const char *const bad[] = { "", "/abs", "a//b", "a/../b", "..", "a/", "sp ace",
					   "semi;colon", "$(x)" };
	struct json_object *o;
	struct clu_op op;
	struct err *e = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_false(clu_key_check(bad[i], &e));
		assert_int_equal(e->code, ERR_INVAL);
		err_free(e);
		e = NULL;
	}
	assert_true(clu_key_check("locks/guest/106", &e));
	o = json_tokener_parse("{\"op\":\"lock\",\"key\":\"locks/x\",\"owner\":\"uno\"}");
	assert_false(clu_op_from_json(o, &op, &e)); /* no ttl */
	err_free(e);
	e = NULL;
	json_object_put(o);
	o = json_tokener_parse("{\"op\":\"put\",\"key\":\"a/b\",\"value\":\"v\",\"ts_ms\":5}");
	assert_true(clu_op_from_json(o, &op, &e));
	assert_int_equal(op.kind, CLU_OP_PUT);
	assert_int_equal(op.if_version, -1);
	{
		struct json_object *back = clu_op_to_json(&op);
		assert_string_equal(json_object_get_string(json_object_object_get(back, "value")), "v");
		json_object_put(back);
	}
	json_object_put(o);
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[300];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_versions),
		cmocka_unit_test(test_create_is_exclusive),
		cmocka_unit_test(test_locks_use_op_clock),
		cmocka_unit_test(test_deterministic),
		cmocka_unit_test(test_snapshot_round_trip),
		cmocka_unit_test(test_keys_and_ops_checked),
	};
	return cmocka_run_group_tests_name("store", tests, setup, teardown);
}
