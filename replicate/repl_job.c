/*
 * repl_job.c - a replication job's state in the cluster store and when it
 * runs next. Contract in repl.h ("job state").
 *
 * Why the state lives in the store (pvesr keeps it in a file on the source
 * node): `vmrepl status` answers from any node, and after a migration
 * flips a job its new source continues from the same generation.
 */
#include "repl.h"
#include "../cluster/clu.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_names[] = {
	[REPL_STATE_NEW] = "new",
	[REPL_STATE_OK] = "ok",
	[REPL_STATE_SYNCING] = "syncing",
	[REPL_STATE_ERROR] = "error",
};
_Static_assert(ARRAY_SIZE(state_names) == REPL_STATE_MAX, "state_names");

const char *repl_state_name(enum repl_state s)
{
	return (unsigned)s < REPL_STATE_MAX ? state_names[s] : "?";
}

const char *repl_state_key(const char *job, char *buf, size_t len)
{
	snprintf(buf, len, "replication/state/%s", job);
	return buf;
}

int repl_retry_delay_s(unsigned fail_count)
{
	/* pvesr: after a failure, 5, 10 and 15 minutes, then every 30 */
	static const int steps[] = { 300, 600, 900 };

	if (fail_count == 0)
		return 0;
	return fail_count <= ARRAY_SIZE(steps) ? steps[fail_count - 1] : 1800;
}

bool repl_next_run(const struct repl_schedule *s, const struct repl_job_state *st, time_t now,
		   time_t *next)
{
	if (st->run_now) {
		*next = now;
		return true;
	}
	if (st->fail_count) {
		*next = (time_t)st->last_try + repl_retry_delay_s(st->fail_count);
		return true;
	}
	/* Never synced: the first event after the job was created; a sync
	 * that ran: the first event after it started. A job whose state is
	 * not written yet (vmrepl create writes the job first): after now -
	 * not after 1970, which made a scheduler tick in between run a new
	 * yearly job at once. */
	return repl_schedule_next(s, st->last_try ? (time_t)st->last_try :
				     st->created ? (time_t)st->created : now,
				  false, next);
}

static int64_t jint(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : 0;
}

static const char *jstr(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

bool repl_state_parse(const char *text, struct repl_job_state *st, struct err **errp)
{
	_cleanup_json_ struct json_object *o = json_tokener_parse(text);
	struct json_object *v;
	const char *s;

	*st = (struct repl_job_state){ .state = REPL_STATE_NEW };
	if (!o || !json_object_is_type(o, json_type_object))
		return err_set(errp, ERR_PROTO, "malformed replication state");
	st->gen = (uint64_t)jint(o, "gen");
	st->created = jint(o, "created");
	st->last_sync = jint(o, "last_sync");
	st->last_try = jint(o, "last_try");
	st->duration_ms = jint(o, "duration_ms");
	st->fail_count = (unsigned)jint(o, "fail_count");
	st->bytes = (uint64_t)jint(o, "bytes");
	st->pid = (pid_t)jint(o, "pid");
	st->run_now = json_object_object_get_ex(o, "run_now", &v) && json_object_get_boolean(v);
	snprintf(st->error, sizeof(st->error), "%s", jstr(o, "error") ?: "");
	snprintf(st->node, sizeof(st->node), "%s", jstr(o, "node") ?: "");
	snprintf(st->target, sizeof(st->target), "%s", jstr(o, "target") ?: "");
	s = jstr(o, "state");
	for (int i = 0; s && i < REPL_STATE_MAX; i++)
		if (!strcmp(s, state_names[i]))
			st->state = (enum repl_state)i;
	return true;
}

char *repl_state_format(const struct repl_job_state *st)
{
	_cleanup_json_ struct json_object *o = json_object_new_object();

	json_object_object_add(o, "state", json_object_new_string(repl_state_name(st->state)));
	json_object_object_add(o, "gen", json_object_new_uint64(st->gen));
	json_object_object_add(o, "created", json_object_new_int64(st->created));
	json_object_object_add(o, "last_sync", json_object_new_int64(st->last_sync));
	json_object_object_add(o, "last_try", json_object_new_int64(st->last_try));
	json_object_object_add(o, "duration_ms", json_object_new_int64(st->duration_ms));
	json_object_object_add(o, "fail_count", json_object_new_int((int)st->fail_count));
	json_object_object_add(o, "bytes", json_object_new_uint64(st->bytes));
	json_object_object_add(o, "pid", json_object_new_int((int)st->pid));
	json_object_object_add(o, "run_now", json_object_new_boolean(st->run_now));
	json_object_object_add(o, "error", json_object_new_string(st->error));
	json_object_object_add(o, "node", json_object_new_string(st->node));
	json_object_object_add(o, "target", json_object_new_string(st->target));
	return strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
}

bool repl_state_read(struct clu_client *c, const char *job, struct repl_job_state *st,
		     uint64_t *version, struct err **errp)
{
	char key[CLU_KEY_MAX];
	struct err *e = NULL;
	_cleanup_free_ char *v = clu_client_get(c, repl_state_key(job, key, sizeof(key)), version,
						&e);

	if (!v && e->code == ERR_NOTFOUND) {
		err_free(e);
		*st = (struct repl_job_state){ .state = REPL_STATE_NEW };
		if (version)
			*version = 0;
		return true;
	}
	if (!v) {
		err_propagate(errp, &e);
		return false;
	}
	return repl_state_parse(v, st, errp);
}

bool repl_state_update(struct clu_client *c, const char *job,
		       bool (*edit)(struct repl_job_state *st, void *opaque), void *opaque,
		       struct err **errp)
{
	char key[CLU_KEY_MAX];

	repl_state_key(job, key, sizeof(key));
	for (int i = 0; i < 20; i++) {
		struct repl_job_state st;
		uint64_t version = 0;
		_cleanup_free_ char *text = NULL;
		struct clu_op op = { .key = key };
		struct err *e = NULL;

		if (!repl_state_read(c, job, &st, &version, errp))
			return false;
		if (!edit(&st, opaque))
			return true; /* nothing to change */
		text = repl_state_format(&st);
		if (!text)
			return err_set(errp, ERR_IO, "out of memory");
		op.kind = version ? CLU_OP_PUT : CLU_OP_CREATE;
		op.if_version = version ? (int64_t)version : -1;
		op.value = text;
		if (clu_client_write(c, &op, NULL, &e))
			return true;
		if (e->code != ERR_CONFLICT) {
			err_propagate(errp, &e);
			return false;
		}
		err_free(e);
	}
	return err_set(errp, ERR_CONFLICT, "replication state of %s keeps changing", job);
}

bool repl_state_delete(struct clu_client *c, const char *job, struct err **errp)
{
	char key[CLU_KEY_MAX];
	struct clu_op op = { .kind = CLU_OP_DELETE, .key = repl_state_key(job, key, sizeof(key)),
			     .if_version = -1 };
	struct err *e = NULL;

	if (clu_client_write(c, &op, NULL, &e) || e->code == ERR_NOTFOUND) {
		err_free(e);
		return true;
	}
	err_propagate(errp, &e);
	return false;
}
