/* migrate_status.c - `vmmigrate status [VMID]` (running migrations, from
 * any node: the records are in the replicated store) and `vmmigrate cancel
 * VMID` (sets the record's cancel flag; the worker sees it within a
 * quarter second, rolls back and removes the record). See migrate.h. */
#include "migrate.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CANCEL_WAIT_MS 60000

static const struct cli_opt status_opts[] = {
	{ "output", CLI_VALUE, "text|json", "output format; default text" },
	{ NULL }
};

static const struct cli_opt cancel_opts[] = {
	{ "no-wait", CLI_FLAG, NULL, "return once the cancel is recorded" },
	{ NULL }
};

struct listing {
	const char *node;
	struct json_object *arr;
};

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct status_look {
	struct cli_ctl *x;
	uint32_t only;
	struct json_object *out;
};

static bool status_one(const struct cli_mig_record *r, const char *text, void *opaque)
{
	struct status_look *s = opaque;
	struct json_object *o;
	const char *state;

	if (s->only && r->vmid != s->only)
		return true;
	/* Only the source node can tell whether its worker lives. */
	state = strcmp(r->source, s->x->node) ? "running?" :
		cli_mig_worker_alive(r->pid) ? "running" : "crashed";
	if (r->cancel && strcmp(state, "crashed"))
		state = "cancelling";
	o = json_tokener_parse(text);
	if (!o)
		return true;
	json_object_object_add(o, "state", json_object_new_string(state));
	json_object_object_add(o, "elapsed_ms", json_object_new_int64(wall_ms() - r->started_ms));
	json_object_array_add(s->out, o);
	return true;
}

static int exec_status(const struct cli_args *a)
{
	struct cli_ctl x = { .lock_fd = -1 };
	_cleanup_json_ struct json_object *out = json_object_new_array();
	struct status_look s;
	struct err *e = NULL;
	uint32_t only = 0;
	bool json;

	if (!cli_ctl_output(a, &json, &e) || (a->npos && !cli_ctl_vmid(a->pos[0], &only, &e)))
		return cli_report(a, e);
	if (!cli_ctl_open(&x, &e))
		return cli_report(a, e);
	s.x = &x;
	s.only = only;
	s.out = out;
	if (!cli_mig_record_list(x.c, status_one, &s, &e)) {
		cli_ctl_close(&x);
		return cli_report(a, e);
	}
	if (json) {
		printf("%s\n", json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN));
	} else if (json_object_array_length(out) == 0) {
		printf(only ? "no migration of guest %" PRIu32 " is running\n" :
			      "no migration is running\n", only);
	} else {
		printf("%-8s %-10s %-10s %-12s %-8s %-9s %-10s %s\n", "VMID", "SOURCE", "TARGET",
		       "PHASE", "PID", "TYPE", "STATE", "ELAPSED");
		for (size_t i = 0; i < json_object_array_length(out); i++) {
			struct json_object *o = json_object_array_get_idx(out, i), *v;
			struct cli_mig_record r;
			int64_t el = 0;

			cli_mig_record_parse(json_object_to_json_string(o), &r, NULL);
			if (json_object_object_get_ex(o, "elapsed_ms", &v))
				el = json_object_get_int64(v);
			json_object_object_get_ex(o, "state", &v);
			printf("%-8" PRIu32 " %-10s %-10s %-12s %-8d %-9s %-10s %.1fs\n", r.vmid,
			       r.source, r.target, r.phase, (int)r.pid,
			       r.online ? (r.secure ? "online/ssh" : "online/tcp") :
					  (r.secure ? "offline/ssh" : "offline/tcp"),
			       json_object_get_string(v), (double)el / 1000.0);
		}
	}
	cli_ctl_close(&x);
	return 0;
}

static int exec_cancel(const struct cli_args *a)
{
	struct cli_ctl x = { .lock_fd = -1 };
	struct err *e = NULL;
	uint32_t vmid;
	int64_t deadline;

	if (!cli_ctl_vmid(a->pos[0], &vmid, &e) || !cli_ctl_open(&x, &e))
		return cli_report(a, e);
	for (int tries = 0;; tries++) {
		struct cli_mig_record r;
		uint64_t version;
		_cleanup_json_ struct json_object *o = NULL;
		char key[CLI_MIG_KEY_LEN];
		struct clu_op op = { .kind = CLU_OP_PUT };

		if (!cli_mig_record_read(x.c, vmid, &r, &version, &e)) {
			if (e->code == ERR_NOTFOUND) {
				err_free(e);
				e = NULL;
				err_set(&e, ERR_NOTFOUND, "no migration of guest %" PRIu32
					" is running", vmid);
			}
			cli_ctl_close(&x);
			return cli_report(a, e);
		}
		{
			_cleanup_free_ char *txt = clu_client_get(x.c, cli_mig_key(vmid, key,
								  sizeof(key)), NULL, &e);

			o = txt ? json_tokener_parse(txt) : NULL;
		}
		if (!o) {
			cli_ctl_close(&x);
			return cli_report(a, e ? e : (err_set(&e, ERR_PROTO, "malformed record"), e));
		}
		json_object_object_add(o, "cancel", json_object_new_boolean(true));
		json_object_object_add(o, "cancel_by", json_object_new_string(x.node));
		op.key = key;
		op.value = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
		op.if_version = (int64_t)version;
		if (clu_client_write(x.c, &op, NULL, &e))
			break;
		if (e->code != ERR_CONFLICT || tries > 20) {
			cli_ctl_close(&x);
			return cli_report(a, e);
		}
		err_free(TAKE_PTR(e)); /* the worker moved on a phase: again */
	}
	if (cli_has(a, "no-wait")) {
		printf("cancel of the migration of guest %" PRIu32 " requested\n", vmid);
		cli_ctl_close(&x);
		return 0;
	}
	deadline = util_now_ms() + CANCEL_WAIT_MS;
	for (;;) {
		struct cli_mig_record r;

		if (!cli_mig_record_read(x.c, vmid, &r, NULL, &e)) {
			if (e->code != ERR_NOTFOUND) {
				cli_ctl_close(&x);
				return cli_report(a, e);
			}
			err_free(TAKE_PTR(e));
			break;
		}
		if (util_now_ms() > deadline) {
			err_set(&e, ERR_TIMEOUT, "the migration of guest %" PRIu32 " did not stop "
				"within %d s (phase %s)", vmid, CANCEL_WAIT_MS / 1000, r.phase);
			cli_ctl_close(&x);
			return cli_report(a, e);
		}
		usleep(100000);
	}
	{
		_cleanup_free_ struct clu_guest_rec *g = calloc(1, sizeof(*g));

		if (g && clu_guest_read(x.c, vmid, g, NULL))
			printf("migration of guest %" PRIu32 " cancelled; the guest is on %s\n", vmid,
			       g->node);
	}
	cli_ctl_close(&x);
	return 0;
}

const struct cli_cmd cli_migrate_status = {
	.name = "status",
	.posargs = "[VMID]",
	.summary = "running migrations (from any node)",
	.opts = status_opts,
	.min_pos = 0,
	.max_pos = 1,
	.exec = exec_status,
};

const struct cli_cmd cli_migrate_cancel = {
	.name = "cancel",
	.posargs = "VMID",
	.summary = "cancel a guest's running migration (it rolls back)",
	.opts = cancel_opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_cancel,
};
