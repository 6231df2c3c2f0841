/*
 * test_guest_store.c - guest records in the store (cluster/clu_guest.c):
 * VMIDs, the owner line in front of a guest config, a record's round trip,
 * volume paths, and the store ops vmctl relies on (CREATE decides between
 * two creators; PUT with the version read refuses a stale update).
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

static void expect_err(struct err **e, enum err_code code, const char *needle)
{
	assert_non_null(*e);
	if (!strstr((*e)->msg, needle))
		fail_msg("message '%s' lacks '%s'", (*e)->msg, needle);
	assert_int_equal((*e)->code, code);
	err_free(*e);
	*e = NULL;
}

static void test_vmid(void **state)
{
	struct err *e = NULL;
	uint32_t v = 7;
	char key[CLU_GUEST_KEY_LEN];

	(void)state;
	assert_true(clu_vmid_parse("106", &v, &e));
	assert_int_equal(v, 106);
	assert_true(clu_vmid_parse("999999999", &v, &e));
	assert_int_equal(v, 999999999);
	assert_string_equal(clu_guest_key(106, key, sizeof(key)), "guests/106");
	v = 7;
	assert_false(clu_vmid_parse("99", &v, &e));
	expect_err(&e, ERR_INVAL, "invalid VMID '99': must be 100 to 999999999");
	assert_false(clu_vmid_parse("1000000000", &v, &e));
	expect_err(&e, ERR_INVAL, "'1000000000'");
	assert_false(clu_vmid_parse("0106", &v, &e));
	expect_err(&e, ERR_INVAL, "leading zero");
	assert_false(clu_vmid_parse("10x", &v, &e));
	expect_err(&e, ERR_INVAL, "invalid VMID '10x': not a number");
	assert_false(clu_vmid_parse("", &v, &e));
	expect_err(&e, ERR_INVAL, "not a number");
	assert_false(clu_vmid_parse("-106", &v, &e));
	expect_err(&e, ERR_INVAL, "'-106'");
	assert_int_equal(v, 7); /* outputs only on success */
}

static void test_owner_line(void **state)
{
	char owner[CLU_NODE_NAME_MAX + 1] = "unset";
	const char *conf = NULL;
	struct err *e = NULL;

	(void)state;
	assert_true(clu_guest_record_split("node: uno\nmemory: 1024\n", 106, owner,
					   sizeof(owner), &conf, &e));
	assert_string_equal(owner, "uno");
	assert_string_equal(conf, "memory: 1024\n");
	/* An owner line alone: an empty config. */
	assert_true(clu_guest_record_split("node: due", 106, owner, sizeof(owner), &conf, &e));
	assert_string_equal(owner, "due");
	assert_string_equal(conf, "");
	assert_true(clu_guest_record_split("node: tre\r\nname: a\r\n", 106, owner,
					   sizeof(owner), &conf, &e));
	assert_string_equal(owner, "tre");

	strcpy(owner, "unset");
	assert_false(clu_guest_record_split("memory: 1024\n", 106, owner, sizeof(owner), &conf, &e));
	expect_err(&e, ERR_PROTO, "guests/106: first line is not the owner line");
	assert_false(clu_guest_record_split("node: Uno!\n", 106, owner, sizeof(owner), &conf, &e));
	expect_err(&e, ERR_PROTO, "invalid owner node 'Uno!'");
	assert_false(clu_guest_record_split("node: \nmemory: 1\n", 106, owner, sizeof(owner),
					    &conf, &e));
	expect_err(&e, ERR_PROTO, "invalid owner node ''");
	assert_false(clu_guest_record_split(" node: uno\n", 106, owner, sizeof(owner), &conf, &e));
	expect_err(&e, ERR_PROTO, "owner line");
	assert_string_equal(owner, "unset");
}

static struct clu_guest_rec *sample(void)
{
	struct clu_guest_rec *r = calloc(1, sizeof(*r));
	struct clu_guest_disk *d;

	assert_non_null(r);
	r->vmid = 106;
	strcpy(r->node, "uno");
	clu_guest_conf_defaults(&r->conf);
	strcpy(r->conf.name, "web1");
	r->conf.memory = 1024;
	r->conf.cores = 2;
	strcpy(r->conf.kernel, "/var/lib/vmmigrate/vmlinux");
	strcpy(r->conf.append, "console=ttyS0 quiet");
	strcpy(r->conf.description, "first line\nsecond: line");
	d = &r->conf.disks[0];
	*d = (struct clu_guest_disk){ .present = true, .size = 32ULL << 30, .replicate = true };
	strcpy(d->storage, "local");
	strcpy(d->volume, "106/vm-106-disk-0.raw");
	d = &r->conf.disks[3];
	*d = (struct clu_guest_disk){ .present = true, .size = 1ULL << 20, .replicate = false };
	strcpy(d->storage, "shared");
	strcpy(d->volume, "106/vm-106-disk-1.raw");
	return r;
}

static void test_round_trip(void **state)
{
	struct clu_guest_rec *r = sample(), *back = calloc(1, sizeof(*back));
	struct err *e = NULL;
	char *text, *again;

	(void)state;
	text = clu_guest_record_format(r, &e);
	assert_non_null(text);
	assert_int_equal(strncmp(text, "node: uno\n", 10), 0);
	/* The owner line is ours, not the config's: the rest parses alone. */
	assert_null(strstr(text + 10, "node:"));
	back->version = 42;
	assert_true(clu_guest_record_parse(text, 106, back, &e));
	assert_string_equal(back->node, "uno");
	assert_int_equal(back->vmid, 106);
	assert_int_equal(back->version, 0);
	assert_true(clu_guest_conf_equal(&r->conf, &back->conf));
	again = clu_guest_record_format(back, &e);
	assert_string_equal(text, again);
	free(again);
	free(text);

	/* A new owner (end of a migration) changes the first line only. */
	strcpy(back->node, "due");
	text = clu_guest_record_format(back, &e);
	assert_int_equal(strncmp(text, "node: due\n", 10), 0);
	free(text);
	free(back);
	free(r);
}

static void test_record_errors(void **state)
{
	struct clu_guest_rec *out = calloc(1, sizeof(*out)), *r = sample();
	struct err *e = NULL;

	(void)state;
	strcpy(out->node, "keep");
	assert_false(clu_guest_record_parse("node: uno\nmemory: 0\n", 107, out, &e));
	expect_err(&e, ERR_INVAL, "guests/107:1: invalid memory '0'");
	assert_false(clu_guest_record_parse("node: uno\nnode: due\n", 107, out, &e));
	expect_err(&e, ERR_INVAL, "guests/107:1: unknown key 'node'");
	assert_false(clu_guest_record_parse("memory: 512\n", 107, out, &e));
	expect_err(&e, ERR_PROTO, "owner line");
	assert_string_equal(out->node, "keep");

	strcpy(r->node, "not valid");
	assert_null(clu_guest_record_format(r, &e));
	expect_err(&e, ERR_INVAL, "invalid owner node 'not valid'");
	free(r);
	free(out);
}

static void test_volume_path(void **state)
{
	struct clu_storage st = { .type = CLU_STORAGE_DIR, .id = "local", .path = "/var/lib/vz" };
	struct err *e = NULL;
	char *p;

	(void)state;
	p = clu_volume_path(&st, "106/vm-106-disk-0.raw", &e);
	assert_string_equal(p, "/var/lib/vz/images/106/vm-106-disk-0.raw");
	free(p);
	strcpy(st.path, "/");
	p = clu_volume_path(&st, "106/vm-106-disk-0.raw", &e);
	assert_string_equal(p, "/images/106/vm-106-disk-0.raw");
	free(p);
}

/* The store ops behind vmctl create/set, on a local store. */
static void test_store_ops(void **state)
{
	char dir[] = "/tmp/vmm-test-guest-XXXXXX", path[64];
	struct clu_guest_rec *r = sample();
	struct clu_store *s;
	struct err *e = NULL;
	char *uno, *due, *got;
	uint64_t v1, v2;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/config.db", dir);
	s = clu_store_open(path, &e);
	assert_non_null(s);
	uno = clu_guest_record_format(r, &e);
	strcpy(r->node, "due");
	due = clu_guest_record_format(r, &e);

	/* Two creators of guests/106: the first in agreed order wins. */
	assert_true(clu_store_apply(s, &(struct clu_op){ .kind = CLU_OP_CREATE,
		.key = "guests/106", .value = uno, .if_version = -1 }, &e));
	v1 = clu_store_version(s);
	assert_false(clu_store_apply(s, &(struct clu_op){ .kind = CLU_OP_CREATE,
		.key = "guests/106", .value = due, .if_version = -1 }, &e));
	expect_err(&e, ERR_CONFLICT, "already exists");
	got = clu_store_get(s, "guests/106", &v2, &e);
	assert_string_equal(got, uno);
	assert_int_equal(v2, v1);
	free(got);

	/* Updates carry the version read: a stale one is refused. */
	assert_true(clu_store_apply(s, &(struct clu_op){ .kind = CLU_OP_PUT,
		.key = "guests/106", .value = due, .if_version = (int64_t)v1 }, &e));
	assert_false(clu_store_apply(s, &(struct clu_op){ .kind = CLU_OP_PUT,
		.key = "guests/106", .value = uno, .if_version = (int64_t)v1 }, &e));
	expect_err(&e, ERR_CONFLICT, "changed by someone else");
	assert_false(clu_store_apply(s, &(struct clu_op){ .kind = CLU_OP_DELETE,
		.key = "guests/106", .if_version = (int64_t)v1 }, &e));
	expect_err(&e, ERR_CONFLICT, "changed by someone else");

	/* The guest lock: another node is refused until it expires. */
	assert_true(clu_store_apply(s, &(struct clu_op){ .kind = CLU_OP_LOCK,
		.key = "locks/guest/106", .owner = "uno", .ttl_ms = CLU_GUEST_LOCK_TTL_MS,
		.ts_ms = 1000, .if_version = -1 }, &e));
	assert_false(clu_store_apply(s, &(struct clu_op){ .kind = CLU_OP_LOCK,
		.key = "locks/guest/106", .owner = "due", .ttl_ms = CLU_GUEST_LOCK_TTL_MS,
		.ts_ms = 2000, .if_version = -1 }, &e));
	expect_err(&e, ERR_CONFLICT, "is locked by uno");
	assert_true(clu_store_apply(s, &(struct clu_op){ .kind = CLU_OP_LOCK,
		.key = "locks/guest/106", .owner = "due", .ttl_ms = CLU_GUEST_LOCK_TTL_MS,
		.ts_ms = 1000 + CLU_GUEST_LOCK_TTL_MS, .if_version = -1 }, &e));

	clu_store_close(s);
	free(uno);
	free(due);
	free(r);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vmid),
		cmocka_unit_test(test_owner_line),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_record_errors),
		cmocka_unit_test(test_volume_path),
		cmocka_unit_test(test_store_ops),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
