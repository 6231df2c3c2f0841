/*
 * vmstore.c - low-level access to the replicated config store through the
 * local vmmd: read, write and lock keys, watch for changes, and compare
 * nodes' copies (status shows version and checksum). For operators
 * debugging a cluster and for tests; the other commands use the same calls.
 */
#include "cli.h"
#include "../cluster/clu.h"
#include "../common/cleanup.h"
#include "../common/util.h"
#include "../transport/tp.h"

#include <stdio.h>
#include <string.h>

static const struct cli_opt common_opts[] = {
	{ "socket", CLI_VALUE, "PATH", "vmmd socket; default $VMM_SOCKET or /run/vmmigrate/vmmd.sock" },
	{ NULL }
};

static const struct cli_opt put_opts[] = {
	{ "socket", CLI_VALUE, "PATH", "vmmd socket; default $VMM_SOCKET or /run/vmmigrate/vmmd.sock" },
	{ "if-version", CLI_VALUE, "N", "only if the key is at version N (0: only if absent)" },
	{ NULL }
};

static const struct cli_opt lock_opts[] = {
	{ "socket", CLI_VALUE, "PATH", "vmmd socket; default $VMM_SOCKET or /run/vmmigrate/vmmd.sock" },
	{ "ttl", CLI_VALUE, "S", "seconds the lock lasts unless renewed; default 60" },
	{ NULL }
};

static const struct cli_opt watch_opts[] = {
	{ "socket", CLI_VALUE, "PATH", "vmmd socket; default $VMM_SOCKET or /run/vmmigrate/vmmd.sock" },
	{ "since", CLI_VALUE, "VERSION", "report a change made after this store version; default now" },
	{ "timeout", CLI_VALUE, "S", "give up after S seconds (exit 1); default 30" },
	{ NULL }
};

static struct clu_client *connect_to(const struct cli_args *a, struct err **errp)
{
	return clu_client_open(cli_get(a, "socket"), errp);
}

static int exec_get(const struct cli_args *a)
{
	_cleanup_(clu_client_closep) struct clu_client *c = NULL;
	_cleanup_free_ char *v = NULL;
	struct err *e = NULL;

	if (!clu_key_check(a->pos[0], &e) || !(c = connect_to(a, &e)) ||
	    !(v = clu_client_get(c, a->pos[0], NULL, &e)))
		return cli_report(a, e);
	fputs(v, stdout);
	if (*v && v[strlen(v) - 1] != '\n')
		fputc('\n', stdout);
	return 0;
}

static int write_op(const struct cli_args *a, struct clu_op *op)
{
	_cleanup_(clu_client_closep) struct clu_client *c = NULL;
	struct err *e = NULL;
	uint64_t ver;

	if (!clu_key_check(op->key, &e) || !(c = connect_to(a, &e)) ||
	    !clu_client_write(c, op, &ver, &e))
		return cli_report(a, e);
	printf("%llu\n", (unsigned long long)ver);
	return 0;
}

static int exec_put(const struct cli_args *a)
{
	struct clu_op op = { .kind = CLU_OP_PUT, .key = a->pos[0], .value = a->pos[1],
			     .if_version = -1 };
	struct err *e = NULL;
	uint64_t v;

	if (cli_get(a, "if-version")) {
		if (!util_parse_u64(cli_get(a, "if-version"), 0, INT64_MAX, "--if-version", &v, &e))
			return cli_report(a, e);
		op.if_version = (int64_t)v;
	}
	return write_op(a, &op);
}

static int exec_create(const struct cli_args *a)
{
	struct clu_op op = { .kind = CLU_OP_CREATE, .key = a->pos[0], .value = a->pos[1],
			     .if_version = -1 };
	return write_op(a, &op);
}

static int exec_delete(const struct cli_args *a)
{
	struct clu_op op = { .kind = CLU_OP_DELETE, .key = a->pos[0], .if_version = -1 };
	return write_op(a, &op);
}

static int exec_lock(const struct cli_args *a)
{
	struct clu_op op = { .kind = CLU_OP_LOCK, .key = a->pos[0], .if_version = -1 };
	struct err *e = NULL;
	uint64_t ttl = 60;

	if (cli_get(a, "ttl") && !util_parse_u64(cli_get(a, "ttl"), 1, 86400, "--ttl", &ttl, &e))
		return cli_report(a, e);
	op.ttl_ms = (int64_t)ttl * 1000;
	return write_op(a, &op);
}

static int exec_unlock(const struct cli_args *a)
{
	struct clu_op op = { .kind = CLU_OP_UNLOCK, .key = a->pos[0], .if_version = -1 };
	return write_op(a, &op);
}

static int exec_list(const struct cli_args *a)
{
	_cleanup_(clu_client_closep) struct clu_client *c = NULL;
	_cleanup_json_ struct json_object *r = NULL;
	struct json_object *req = json_object_new_object(), *entries;
	struct err *e = NULL;

	json_object_object_add(req, "cmd", json_object_new_string("list"));
	json_object_object_add(req, "prefix", json_object_new_string(a->npos ? a->pos[0] : ""));
	if (!(c = connect_to(a, &e))) {
		json_object_put(req);
		return cli_report(a, e);
	}
	if (!(r = clu_client_call(c, req, 30000, &e)))
		return cli_report(a, e);
	json_object_object_get_ex(r, "entries", &entries);
	for (size_t i = 0; i < json_object_array_length(entries); i++) {
		struct json_object *en = json_object_array_get_idx(entries, i);
		printf("%s %s\n", json_object_get_string(json_object_object_get(en, "key")),
		       json_object_get_string(json_object_object_get(en, "version")));
	}
	return 0;
}

static int exec_watch(const struct cli_args *a)
{
	_cleanup_(clu_client_closep) struct clu_client *c = NULL;
	_cleanup_json_ struct json_object *r = NULL;
	struct json_object *req = json_object_new_object(), *v;
	struct err *e = NULL;
	uint64_t since;
	int timeout_ms;

	if (!cli_seconds(a, "timeout", 30, &timeout_ms, &e)) {
		json_object_put(req);
		return cli_report(a, e);
	}
	json_object_object_add(req, "cmd", json_object_new_string("watch"));
	json_object_object_add(req, "prefix", json_object_new_string(a->pos[0]));
	json_object_object_add(req, "timeout_ms", json_object_new_int(timeout_ms));
	if (cli_get(a, "since")) {
		if (!util_parse_u64(cli_get(a, "since"), 0, INT64_MAX, "--since", &since, &e)) {
			json_object_put(req);
			return cli_report(a, e);
		}
		json_object_object_add(req, "since", json_object_new_int64((int64_t)since));
	}
	if (!(c = connect_to(a, &e))) {
		json_object_put(req);
		return cli_report(a, e);
	}
	if (!(r = clu_client_call(c, req, timeout_ms + 5000, &e)))
		return cli_report(a, e);
	if (json_object_object_get_ex(r, "changed", &v) && json_object_get_boolean(v)) {
		printf("%s %s\n", json_object_get_string(json_object_object_get(r, "key")),
		       json_object_get_string(json_object_object_get(r, "version")));
		return 0;
	}
	fprintf(stderr, "%s: no change under '%s' within %d s\n", a->prog, a->pos[0],
		timeout_ms / 1000);
	return 1;
}

static int exec_status(const struct cli_args *a)
{
	_cleanup_(clu_client_closep) struct clu_client *c = NULL;
	_cleanup_json_ struct json_object *r = NULL;
	struct json_object *req = json_object_new_object();
	struct err *e = NULL;

	json_object_object_add(req, "cmd", json_object_new_string("status"));
	if (!(c = connect_to(a, &e))) {
		json_object_put(req);
		return cli_report(a, e);
	}
	if (!(r = clu_client_call(c, req, 10000, &e)))
		return cli_report(a, e);
	json_object_object_del(r, "id");
	json_object_object_del(r, "ok");
	printf("%s\n", json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
	return 0;
}

#define CMD(n, pos, sum, o, min, max, fn) \
	static const struct cli_cmd cmd_##fn = { n, pos, sum, o, min, max, exec_##fn }
CMD("get", "KEY", "print a key's value", common_opts, 1, 1, get);
CMD("put", "KEY VALUE", "set a key (cluster-wide, in agreed order)", put_opts, 2, 2, put);
CMD("create", "KEY VALUE", "set a key only if it does not exist yet", common_opts, 2, 2, create);
CMD("delete", "KEY", "remove a key", common_opts, 1, 1, delete);
CMD("lock", "KEY", "take or renew a lock owned by this node", lock_opts, 1, 1, lock);
CMD("unlock", "KEY", "release this node's lock", common_opts, 1, 1, unlock);
CMD("list", "[PREFIX]", "list keys and their versions", common_opts, 0, 1, list);
CMD("watch", "PREFIX", "wait until a key under PREFIX changes", watch_opts, 1, 1, watch);
CMD("status", "", "daemon state, quorum, store version and checksum (JSON)", common_opts, 0, 0, status);

static const struct cli_cmd *const cmds[] = {
	&cmd_get, &cmd_put, &cmd_create, &cmd_delete, &cmd_lock, &cmd_unlock, &cmd_list,
	&cmd_watch, &cmd_status, NULL,
};

int main(int argc, char **argv)
{
	return cli_main("vmstore", "read and write the replicated config store via the local vmmd",
			cmds, argc, argv);
}
