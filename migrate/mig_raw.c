/*
 * mig_raw.c - QEMU's own RAM migration driven over QMP, as a state machine.
 *
 * This is the yardstick and the innermost step of every online migration:
 * the engine's phases (issue "vmmigrate") wrap it with checks, locks,
 * transports and ownership changes. Contract in mig.h.
 *
 * Why the explicit max-bandwidth: QEMU 7.2 defaults to 128 MiB/s, which
 * doubles the time of an idle 1 GiB guest on this hardware.
 */
#include "mig.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const state_names[] = {
	[MIG_RAW_SETUP] = "setup",
	[MIG_RAW_LISTEN] = "listen",
	[MIG_RAW_TRANSFER] = "transfer",
	[MIG_RAW_SWITCHOVER] = "switchover",
	[MIG_RAW_DONE] = "done",
	[MIG_RAW_FAILED] = "failed",
};
_Static_assert(ARRAY_SIZE(state_names) == MIG_RAW_STATE_MAX, "state_names");

const char *mig_raw_state_name(enum mig_raw_state s)
{
	return (unsigned)s < MIG_RAW_STATE_MAX ? state_names[s] : "?";
}

struct raw {
	struct tp_qmp *src, *dst;
	const struct mig_raw_opts *o;
	mig_raw_progress_fn cb;
	void *opaque;
	struct mig_raw_progress p;
	int64_t start_ms;
	bool src_was_running;
	char status[32];
};

/* The one place the state changes: every transition is logged. */
static void set_state(struct raw *r, enum mig_raw_state s)
{
	log_debug("raw migration: %s -> %s", mig_raw_state_name(r->p.state),
		  mig_raw_state_name(s));
	r->p.state = s;
	if (r->cb)
		r->cb(&r->p, r->opaque);
}

static struct json_object *caps(const char *const *names, bool on)
{
	struct json_object *arr = json_object_new_array();
	struct json_object *args = json_object_new_object();

	for (; *names; names++) {
		struct json_object *c = json_object_new_object();
		json_object_object_add(c, "capability", json_object_new_string(*names));
		json_object_object_add(c, "state", json_object_new_boolean(on));
		json_object_array_add(arr, c);
	}
	json_object_object_add(args, "capabilities", arr);
	return args;
}

static bool set_caps(struct tp_qmp *q, bool multifd, struct err **errp)
{
	static const char *const with_multifd[] = { "events", "multifd", NULL };
	static const char *const plain[] = { "events", NULL };

	return tp_qmp_run(q, "migrate-set-capabilities",
			  caps(multifd ? with_multifd : plain, true), 5000, errp);
}

static bool setup(struct raw *r, struct err **errp)
{
	const struct mig_raw_opts *o = r->o;
	bool multifd = o->multifd > 1;
	_cleanup_json_ struct json_object *st = NULL;
	struct json_object *params, *running;

	st = tp_qmp_call(r->src, "query-status", NULL, 5000, errp);
	if (!st)
		return false;
	r->src_was_running = json_object_object_get_ex(st, "running", &running) &&
			     json_object_get_boolean(running);
	if (!set_caps(r->src, multifd, errp) || !set_caps(r->dst, multifd, errp))
		return false;
	params = json_object_new_object();
	/* QEMU takes max-bandwidth in bytes/s; 0 would mean "no transfer", so
	 * "unlimited" is spelled as a very large value. */
	json_object_object_add(params, "max-bandwidth",
			       json_object_new_uint64(o->max_bandwidth ? o->max_bandwidth :
						      (uint64_t)INT64_MAX));
	if (o->downtime_ms)
		json_object_object_add(params, "downtime-limit",
				       json_object_new_uint64(o->downtime_ms));
	if (multifd)
		json_object_object_add(params, "multifd-channels",
				       json_object_new_int((int)o->multifd));
	if (!tp_qmp_run(r->src, "migrate-set-parameters", params, 5000, errp))
		return false;
	if (multifd) {
		params = json_object_new_object();
		json_object_object_add(params, "multifd-channels",
				       json_object_new_int((int)o->multifd));
		if (!tp_qmp_run(r->dst, "migrate-set-parameters", params, 5000, errp))
			return false;
	}
	return true;
}

static uint64_t jget_u64(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return 0;
	return (uint64_t)json_object_get_int64(v);
}

/* One query-migrate: updates progress, returns QEMU's status or NULL. */
static const char *poll_status(struct raw *r, struct err **errp)
{
	_cleanup_json_ struct json_object *qm =
		tp_qmp_call(r->src, "query-migrate", NULL, 5000, errp);
	struct json_object *status, *ram = NULL, *mbps, *desc;

	if (!qm)
		return NULL;
	if (!json_object_object_get_ex(qm, "status", &status)) {
		snprintf(r->status, sizeof(r->status), "none");
		return r->status;
	}
	snprintf(r->status, sizeof(r->status), "%s", json_object_get_string(status));
	r->p.qemu_status = r->status;
	json_object_object_get_ex(qm, "ram", &ram);
	r->p.total = jget_u64(ram, "total");
	r->p.transferred = jget_u64(ram, "transferred");
	r->p.remaining = jget_u64(ram, "remaining");
	r->p.passes = jget_u64(ram, "dirty-sync-count");
	r->p.dirty_rate = jget_u64(ram, "dirty-pages-rate") * (jget_u64(ram, "page-size") ?: 4096);
	if (ram && json_object_object_get_ex(ram, "mbps", &mbps))
		r->p.mbps_x100 = (uint64_t)(json_object_get_double(mbps) * 100);
	r->p.elapsed_ms = util_now_ms() - r->start_ms;
	if (!strcmp(r->status, "completed")) {
		r->p.downtime_ms = (int64_t)jget_u64(qm, "downtime");
		r->p.setup_ms = (int64_t)jget_u64(qm, "setup-time");
		r->p.elapsed_ms = (int64_t)jget_u64(qm, "total-time");
	}
	if (!strcmp(r->status, "failed")) {
		err_set(errp, ERR_QMP, "QEMU migration failed: %s",
			json_object_object_get_ex(qm, "error-desc", &desc) ?
				json_object_get_string(desc) : "no reason given");
		return NULL;
	}
	if (!strcmp(r->status, "cancelled")) {
		err_set(errp, ERR_STATE, "QEMU migration was cancelled");
		return NULL;
	}
	return r->status;
}

static bool transfer(struct raw *r, struct err **errp)
{
	struct json_object *args = json_object_new_object();
	int64_t deadline = r->o->timeout_ms >= 0 ? util_now_ms() + r->o->timeout_ms : -1;
	int poll_ms = r->o->poll_ms > 0 ? r->o->poll_ms : 200;
	int64_t next_cb = 0;

	json_object_object_add(args, "uri", json_object_new_string(r->o->uri));
	r->start_ms = util_now_ms();
	if (!tp_qmp_run(r->src, "migrate", args, 5000, errp))
		return false;
	for (;;) {
		const char *st = poll_status(r, errp);

		if (!st)
			return false;
		if (!strcmp(st, "completed")) {
			/* QEMU 7.2 sets "completed" before it computes total-time
			 * and downtime (fixed upstream by calling
			 * migration_calculate_complete() first): ask again briefly. */
			for (int i = 0; i < 100 && r->p.elapsed_ms == 0; i++) {
				usleep(5000);
				if (!poll_status(r, errp))
					return false;
			}
			return true;
		}
		if (deadline >= 0 && util_now_ms() > deadline) {
			char rem[32], dr[32];
			return err_set(errp, ERR_TIMEOUT,
				       "migration did not complete within %d s (%s left, "
				       "guest dirtying %s/s)", r->o->timeout_ms / 1000,
				       util_fmt_bytes(r->p.remaining, rem, sizeof(rem)),
				       util_fmt_bytes(r->p.dirty_rate, dr, sizeof(dr)));
		}
		if (r->cb && util_now_ms() >= next_cb) {
			r->cb(&r->p, r->opaque);
			next_cb = util_now_ms() + poll_ms;
		}
		/* Short sleeps: the switchover is noticed within a few ms. */
		usleep(10000);
	}
}

static bool switchover(struct raw *r, struct err **errp)
{
	_cleanup_json_ struct json_object *ev = NULL;

	/* The target sets its run state before announcing completion. */
	for (;;) {
		struct json_object *data, *status;

		json_object_put(ev);
		ev = tp_qmp_wait_event(r->dst, "MIGRATION", 30000, errp);
		if (!ev) {
			err_prefix(errp ? *errp : NULL, "target did not finish loading");
			return false;
		}
		if (!json_object_object_get_ex(ev, "data", &data) ||
		    !json_object_object_get_ex(data, "status", &status))
			continue;
		if (!strcmp(json_object_get_string(status), "completed"))
			break;
		if (!strcmp(json_object_get_string(status), "failed"))
			return err_set(errp, ERR_QMP, "target failed to load the migration stream");
	}
	/* A target started with -S waits for us; one without it runs already. */
	if (r->o->resume_target && r->src_was_running) {
		_cleanup_json_ struct json_object *st =
			tp_qmp_call(r->dst, "query-status", NULL, 5000, errp);
		struct json_object *running;

		if (!st)
			return false;
		if (!(json_object_object_get_ex(st, "running", &running) &&
		      json_object_get_boolean(running)) &&
		    !tp_qmp_run(r->dst, "cont", NULL, 5000, errp))
			return false;
	}
	return true;
}

/* After the source completed, the target may already run the guest: it
 * must be gone before the source may resume, or the guest runs twice. */
static bool target_gone(struct raw *r)
{
	struct err *e = NULL;
	int64_t deadline = util_now_ms() + 5000;
	bool gone = false;

	if (!tp_qmp_run(r->dst, "quit", NULL, 5000, &e) && e->code != ERR_CLOSED) {
		err_free(e);
		return false;
	}
	err_free(e);
	while (!gone && util_now_ms() < deadline) {
		e = NULL;
		if (!tp_qmp_pump(r->dst, 100, &e))
			gone = e->code == ERR_CLOSED;
		err_free(e);
	}
	return gone;
}

/* Rollback: the source must be running as before, whatever went wrong,
 * but never while the target might run the guest too. */
static void rollback(struct raw *r)
{
	struct err *e = NULL;
	_cleanup_json_ struct json_object *st = NULL;
	struct json_object *running;

	if (!strcmp(r->status, "completed") && !target_gone(r)) {
		log_error("rollback: the target still answers after quit; leaving the "
			  "source paused so the guest cannot run twice");
		return;
	}

	if (!tp_qmp_run(r->src, "migrate_cancel", NULL, 5000, &e))
		log_warn("rollback: migrate_cancel: %s", e->msg);
	err_free(e);
	e = NULL;
	for (int i = 0; i < 500; i++) {
		const char *s;
		_cleanup_json_ struct json_object *qm =
			tp_qmp_call(r->src, "query-migrate", NULL, 5000, &e);
		struct json_object *status;

		if (!qm)
			break;
		s = json_object_object_get_ex(qm, "status", &status) ?
			    json_object_get_string(status) : "none";
		if (strcmp(s, "cancelling") && strcmp(s, "active") && strcmp(s, "setup") &&
		    strcmp(s, "device"))
			break;
		usleep(10000);
	}
	err_free(e);
	e = NULL;
	st = tp_qmp_call(r->src, "query-status", NULL, 5000, &e);
	if (st && r->src_was_running &&
	    !(json_object_object_get_ex(st, "running", &running) &&
	      json_object_get_boolean(running)) &&
	    !tp_qmp_run(r->src, "cont", NULL, 5000, &e))
		log_error("rollback: could not resume the source: %s", e->msg);
	err_free(e);
}

bool mig_raw_run(struct tp_qmp *src, struct tp_qmp *dst, const struct mig_raw_opts *opts,
		 mig_raw_progress_fn cb, void *opaque, struct mig_raw_progress *final,
		 struct err **errp)
{
	struct raw r = { .src = src, .dst = dst, .o = opts, .cb = cb, .opaque = opaque };
	struct json_object *args;
	bool started = false;

	r.p.state = MIG_RAW_SETUP;
	r.p.downtime_ms = -1;
	r.p.qemu_status = "none";
	if (!opts->uri || !*opts->uri)
		return err_set(errp, ERR_INVAL, "missing migration URI");
	if (!setup(&r, errp))
		goto fail;
	set_state(&r, MIG_RAW_LISTEN);
	args = json_object_new_object();
	json_object_object_add(args, "uri", json_object_new_string(opts->uri));
	if (!tp_qmp_run(dst, "migrate-incoming", args, 5000, errp))
		goto fail;
	set_state(&r, MIG_RAW_TRANSFER);
	started = true;
	if (!transfer(&r, errp))
		goto fail;
	set_state(&r, MIG_RAW_SWITCHOVER);
	if (!switchover(&r, errp))
		goto fail;
	set_state(&r, MIG_RAW_DONE);
	if (final)
		*final = r.p;
	return true;
fail:
	if (started)
		rollback(&r);
	set_state(&r, MIG_RAW_FAILED);
	if (final)
		*final = r.p;
	return false;
}
