/*
 * mig_raw.c - QEMU's own RAM migration driven over QMP, as a state machine.
 *
 * This is the yardstick and the innermost step of every online migration:
 * the engine's phases (mig_job.c) wrap it with checks, locks, transports
 * and ownership changes. The target is reached through a small ops table
 * (struct mig_target): a local QMP connection here, the agent on the
 * target node for the engine. Contract in mig.h.
 *
 * Why the explicit max-bandwidth: QEMU 7.2 defaults to 128 MiB/s, which
 * doubles the time of an idle 1 GiB guest on this hardware.
 * Why the downtime ramp: a guest that dirties memory about as fast as the
 * link carries it never gets below a small limit; raising the limit a step
 * at a time when passes stop shrinking (as oVirt and Nova do) trades a
 * little downtime for convergence, and stops at a ceiling the user chose.
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

#define RAMP_FIRST_PASS 3  /* the first passes always shrink: judge after them */
#define RAMP_STEPS 4       /* from the initial limit to the ceiling */
#define QEMU_DOWNTIME_DEFAULT_MS 300

static const char *const state_names[] = {
	[MIG_RAW_SETUP] = "setup",
	[MIG_RAW_LISTEN] = "listen",
	[MIG_RAW_TRANSFER] = "transfer",
	[MIG_RAW_SWITCHOVER] = "switchover",
	[MIG_RAW_DONE] = "done",
	[MIG_RAW_FAILED] = "failed",
};
_Static_assert(ARRAY_SIZE(state_names) == MIG_RAW_STATE_MAX, "state_names");

const char *const mig_timeout_action_names[MIG_TIMEOUT_ACTION_MAX] = {
	[MIG_TIMEOUT_ABORT] = "abort",
	[MIG_TIMEOUT_PAUSE] = "pause",
	[MIG_TIMEOUT_POSTCOPY] = "postcopy",
};

const char *mig_raw_state_name(enum mig_raw_state s)
{
	return (unsigned)s < MIG_RAW_STATE_MAX ? state_names[s] : "?";
}

struct raw {
	struct tp_qmp *src;
	const struct mig_target *t;
	const struct mig_raw_opts *o;
	mig_raw_progress_fn cb;
	void *opaque;
	struct mig_raw_progress p;
	int64_t start_ms;
	bool src_was_running;
	bool continued;          /* migrate-continue sent: past pre-switchover */
	uint64_t ramp_pass;      /* pass at which the ramp last looked */
	uint64_t ramp_remaining; /* remaining bytes then */
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

struct cap {
	const char *name;
	bool on;
};

static struct json_object *caps(const struct cap *c, int n)
{
	struct json_object *arr = json_object_new_array();
	struct json_object *args = json_object_new_object();

	for (int i = 0; i < n; i++) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "capability", json_object_new_string(c[i].name));
		json_object_object_add(o, "state", json_object_new_boolean(c[i].on));
		json_object_array_add(arr, o);
	}
	json_object_object_add(args, "capabilities", arr);
	return args;
}

/* Capabilities: those the target must share, plus the source's own. Each
 * one we manage is set on or off explicitly: a QEMU that was the target of
 * an earlier migration keeps that migration's capabilities (multifd left on
 * makes it open extra connections the next target drops: "Broken pipe"). */
static bool set_caps(struct tp_qmp *q, const struct mig_tune *t, bool source,
		     bool pause_before_switchover, struct err **errp)
{
	const struct cap c[] = {
		{ "events", true },
		{ "multifd", t->multifd > 1 },
		{ "postcopy-ram", t->postcopy },
		{ "auto-converge", source && t->auto_converge },
		{ "xbzrle", source && t->xbzrle },
		{ "pause-before-switchover", source && pause_before_switchover },
	};

	return tp_qmp_run(q, "migrate-set-capabilities", caps(c, (int)ARRAY_SIZE(c)), 5000,
			  errp);
}

/* Parameters the target must share: multifd channels and compression. */
static struct json_object *shared_params(const struct mig_tune *t)
{
	struct json_object *params = json_object_new_object();

	if (t->multifd > 1) {
		json_object_object_add(params, "multifd-channels",
				       json_object_new_int((int)t->multifd));
		json_object_object_add(params, "multifd-compression",
				       json_object_new_string(t->multifd_zstd ? "zstd" : "none"));
	}
	return params;
}

/* ---- the local target ---------------------------------------------------- */

bool mig_target_local_listen(struct tp_qmp *q, const struct mig_tune *t, const char *uri,
			     struct err **errp)
{
	struct json_object *args;

	if (!uri || !*uri)
		return err_set(errp, ERR_INVAL, "missing incoming migration URI");
	if (!set_caps(q, t, false, false, errp) ||
	    !tp_qmp_run(q, "migrate-set-parameters", shared_params(t), 5000, errp))
		return false;
	args = json_object_new_object();
	json_object_object_add(args, "uri", json_object_new_string(uri));
	return tp_qmp_run(q, "migrate-incoming", args, 5000, errp);
}

bool mig_target_local_wait_loaded(struct tp_qmp *q, int timeout_ms, struct err **errp)
{
	_cleanup_json_ struct json_object *ev = NULL;

	/* The target sets its run state before announcing completion. */
	for (;;) {
		struct json_object *data, *status;

		json_object_put(ev);
		ev = tp_qmp_wait_event(q, "MIGRATION", timeout_ms, errp);
		if (!ev) {
			err_prefix(errp ? *errp : NULL, "target did not finish loading");
			return false;
		}
		if (!json_object_object_get_ex(ev, "data", &data) ||
		    !json_object_object_get_ex(data, "status", &status))
			continue;
		if (!strcmp(json_object_get_string(status), "completed"))
			return true;
		if (!strcmp(json_object_get_string(status), "failed"))
			return err_set(errp, ERR_QMP, "target failed to load the migration stream");
	}
}

bool mig_target_local_resume(struct tp_qmp *q, struct err **errp)
{
	_cleanup_json_ struct json_object *st = tp_qmp_call(q, "query-status", NULL, 5000, errp);
	struct json_object *running;

	if (!st)
		return false;
	if (json_object_object_get_ex(st, "running", &running) && json_object_get_boolean(running))
		return true;
	return tp_qmp_run(q, "cont", NULL, 5000, errp);
}

bool mig_target_local_check(struct tp_qmp *q, struct err **errp)
{
	_cleanup_json_ struct json_object *st = tp_qmp_call(q, "query-status", NULL, 5000, errp);

	if (!st)
		err_prefix(errp ? *errp : NULL, "target QEMU");
	return st != NULL;
}

bool mig_target_local_quit(struct tp_qmp *q)
{
	struct err *e = NULL;
	int64_t deadline = util_now_ms() + 5000;
	bool gone = false;

	if (!tp_qmp_run(q, "quit", NULL, 5000, &e) && e->code != ERR_CLOSED) {
		err_free(e);
		return false;
	}
	err_free(e);
	while (!gone && util_now_ms() < deadline) {
		e = NULL;
		if (!tp_qmp_pump(q, 100, &e))
			gone = e->code == ERR_CLOSED;
		err_free(e);
	}
	return gone;
}

static bool local_listen(void *impl, const struct mig_tune *t, struct err **errp)
{
	struct mig_target_local *l = impl;

	return mig_target_local_listen(l->qmp, t, l->uri, errp);
}

static bool local_wait(void *impl, int timeout_ms, struct err **errp)
{
	return mig_target_local_wait_loaded(((struct mig_target_local *)impl)->qmp, timeout_ms,
					    errp);
}

static bool local_resume(void *impl, struct err **errp)
{
	return mig_target_local_resume(((struct mig_target_local *)impl)->qmp, errp);
}

static bool local_check(void *impl, struct err **errp)
{
	return mig_target_local_check(((struct mig_target_local *)impl)->qmp, errp);
}

static bool local_quit(void *impl)
{
	return mig_target_local_quit(((struct mig_target_local *)impl)->qmp);
}

static const struct mig_target_ops local_ops = {
	.listen = local_listen,
	.wait_loaded = local_wait,
	.resume = local_resume,
	.check = local_check,
	.quit = local_quit,
	.postcopy_run = local_resume,
};

void mig_target_local_init(struct mig_target *t, struct mig_target_local *l,
			   struct tp_qmp *qmp, const char *uri)
{
	*l = (struct mig_target_local){ .qmp = qmp, .uri = uri };
	*t = (struct mig_target){ .ops = &local_ops, .impl = l };
}

/* ---- source ------------------------------------------------------------------ */

static bool setup(struct raw *r, struct err **errp)
{
	const struct mig_tune *t = &r->o->tune;
	_cleanup_json_ struct json_object *st = NULL;
	struct json_object *params, *running;

	st = tp_qmp_call(r->src, "query-status", NULL, 5000, errp);
	if (!st)
		return false;
	r->src_was_running = json_object_object_get_ex(st, "running", &running) &&
			     json_object_get_boolean(running);
	if (!set_caps(r->src, t, true, r->o->pre_switchover != NULL, errp))
		return false;
	params = shared_params(t);
	/* QEMU takes max-bandwidth in bytes/s; 0 would mean "no transfer", so
	 * "unlimited" is spelled as a very large value. */
	json_object_object_add(params, "max-bandwidth",
			       json_object_new_uint64(t->max_bandwidth ? t->max_bandwidth :
						      (uint64_t)INT64_MAX));
	/* Always set: an earlier migration's ramp may have raised it. */
	r->p.downtime_limit_ms = t->downtime_ms ? t->downtime_ms : QEMU_DOWNTIME_DEFAULT_MS;
	json_object_object_add(params, "downtime-limit",
			       json_object_new_uint64(r->p.downtime_limit_ms));
	if (t->auto_converge && t->throttle_initial)
		json_object_object_add(params, "cpu-throttle-initial",
				       json_object_new_int((int)t->throttle_initial));
	if (t->auto_converge && t->throttle_increment)
		json_object_object_add(params, "cpu-throttle-increment",
				       json_object_new_int((int)t->throttle_increment));
	return tp_qmp_run(r->src, "migrate-set-parameters", params, 5000, errp);
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
	r->p.throttle_pct = jget_u64(qm, "cpu-throttle-percentage");
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

/* Raises the downtime limit one step when the last pass did not shrink
 * what is left by a tenth. */
static bool ramp(struct raw *r, struct err **errp)
{
	const struct mig_tune *t = &r->o->tune;
	uint64_t step, limit;
	struct json_object *params;

	if (t->downtime_max_ms <= r->p.downtime_limit_ms || r->p.passes < RAMP_FIRST_PASS ||
	    r->p.passes == r->ramp_pass)
		return true;
	if (r->ramp_pass && r->p.remaining < r->ramp_remaining / 10 * 9) {
		r->ramp_pass = r->p.passes;
		r->ramp_remaining = r->p.remaining;
		return true;
	}
	r->ramp_pass = r->p.passes;
	r->ramp_remaining = r->p.remaining;
	if (r->p.passes == RAMP_FIRST_PASS)
		return true; /* first look: nothing to compare with yet */
	step = (t->downtime_max_ms - (t->downtime_ms ? t->downtime_ms : QEMU_DOWNTIME_DEFAULT_MS)) /
	       RAMP_STEPS;
	limit = r->p.downtime_limit_ms + (step ? step : 1);
	if (limit > t->downtime_max_ms)
		limit = t->downtime_max_ms;
	params = json_object_new_object();
	json_object_object_add(params, "downtime-limit", json_object_new_uint64(limit));
	if (!tp_qmp_run(r->src, "migrate-set-parameters", params, 5000, errp))
		return false;
	log_info("migration not converging at pass %" PRIu64 " (%" PRIu64 " MiB left): "
		 "downtime limit %" PRIu64 " -> %" PRIu64 " ms", r->p.passes,
		 r->p.remaining >> 20, r->p.downtime_limit_ms, limit);
	r->p.downtime_limit_ms = limit;
	return true;
}

/* The completion timeout: abort, or make the rest go at once. */
static bool on_timeout(struct raw *r, struct err **errp)
{
	char rem[32], dr[32];

	util_fmt_bytes(r->p.remaining, rem, sizeof(rem));
	util_fmt_bytes(r->p.dirty_rate, dr, sizeof(dr));
	switch (r->o->timeout_action) {
	case MIG_TIMEOUT_PAUSE:
		log_warn("migration did not complete within %d s (%s left, guest dirtying %s/s): "
			 "pausing the guest to finish", r->o->timeout_ms / 1000, rem, dr);
		r->p.paused_by_timeout = true;
		return tp_qmp_run(r->src, "stop", NULL, 5000, errp);
	case MIG_TIMEOUT_POSTCOPY:
		log_warn("migration did not complete within %d s (%s left, guest dirtying %s/s): "
			 "switching to postcopy", r->o->timeout_ms / 1000, rem, dr);
		if (r->o->before_postcopy && !r->o->before_postcopy(r->opaque, errp))
			return false;
		if (!tp_qmp_run(r->src, "migrate-start-postcopy", NULL, 5000, errp))
			return false;
		r->p.postcopy = true;
		return true;
	default:
		return err_set(errp, ERR_TIMEOUT,
			       "migration did not complete within %d s (%s left, guest "
			       "dirtying %s/s)", r->o->timeout_ms / 1000, rem, dr);
	}
}

static bool transfer(struct raw *r, struct err **errp)
{
	struct json_object *args = json_object_new_object();
	int64_t deadline = r->o->timeout_ms >= 0 ? util_now_ms() + r->o->timeout_ms : -1;
	int poll_ms = r->o->poll_ms > 0 ? r->o->poll_ms : 200;
	int64_t next_cb = 0, moved_ms = util_now_ms();
	int stall_ms = r->o->stall_ms > 0 ? r->o->stall_ms : 10000;
	uint64_t last_transferred = 0;
	bool postcopy_resumed = false;

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
		/* Paused before the switchover (pause-before-switchover): the
		 * caller finishes what must be in place first (disk mirrors). */
		if (!strcmp(st, "pre-switchover") && !r->continued) {
			struct json_object *cont;

			if (!r->o->pre_switchover(r->opaque, errp))
				return false;
			cont = json_object_new_object();
			json_object_object_add(cont, "state", json_object_new_string("pre-switchover"));
			if (!tp_qmp_run(r->src, "migrate-continue", cont, 5000, errp))
				return false;
			/* QEMU may still say pre-switchover for a moment: the
			 * callback runs once (a second call found the mirrors
			 * ended and cancelled a migration already completing). */
			r->continued = true;
			continue;
		}
		/* In postcopy the target must run to pull the pages it lacks. */
		if (r->p.postcopy && !postcopy_resumed && !strcmp(st, "postcopy-active")) {
			if (r->t->ops->postcopy_run && !r->t->ops->postcopy_run(r->t->impl, errp))
				return false;
			postcopy_resumed = true;
		}
		if (!r->p.postcopy && r->o->cancelled && r->o->cancelled(r->opaque, errp))
			return false;
		if (r->p.transferred != last_transferred) {
			last_transferred = r->p.transferred;
			moved_ms = util_now_ms();
		} else if (util_now_ms() - moved_ms > stall_ms && !r->p.postcopy) {
			return err_set(errp, ERR_TIMEOUT, "migration stalled: no data moved for "
				       "%d s (is the migration link down?)", stall_ms / 1000);
		}
		if (!r->p.postcopy && !ramp(r, errp))
			return false;
		if (deadline >= 0 && util_now_ms() > deadline && !r->p.postcopy &&
		    !r->p.paused_by_timeout) {
			if (!on_timeout(r, errp))
				return false;
			deadline = -1;
		}
		if (r->cb && util_now_ms() >= next_cb) {
			r->cb(&r->p, r->opaque);
			next_cb = util_now_ms() + poll_ms;
		}
		/* Short sleeps: the switchover is noticed within a few ms. */
		usleep(10000);
	}
}

static bool source_running(struct tp_qmp *q, struct err **errp, bool *running)
{
	_cleanup_json_ struct json_object *st = tp_qmp_call(q, "query-status", NULL, 5000, errp);
	struct json_object *v;

	if (!st)
		return false;
	*running = json_object_object_get_ex(st, "running", &v) && json_object_get_boolean(v);
	return true;
}

/* Cancels an unfinished migration and waits until QEMU says so. A source
 * cancelled past pre-switchover (device state being sent) has already
 * inactivated its disks, and QEMU 7.2 restarts the guest without taking
 * them back (its own failure path does, its cancel path does not): stop
 * it, and the resume that follows (`cont`) reactivates them. */
static void cancel(struct tp_qmp *src, bool disks_inactive)
{
	struct err *e = NULL;

	if (!tp_qmp_run(src, "migrate_cancel", NULL, 5000, &e))
		log_warn("rollback: migrate_cancel: %s", e->msg);
	err_free(e);
	e = NULL;
	for (int i = 0; i < 500; i++) {
		const char *s;
		_cleanup_json_ struct json_object *qm =
			tp_qmp_call(src, "query-migrate", NULL, 5000, &e);
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
	if (disks_inactive) {
		log_warn("rollback: the migration was cancelled while completing: pausing the "
			 "source so that resuming it takes its disks back");
		tp_qmp_run(src, "stop", NULL, 5000, NULL);
	}
}

static bool resume_source(struct tp_qmp *src, bool was_running, struct err **errp)
{
	bool running = false;

	if (!source_running(src, errp, &running))
		return false;
	if (was_running && !running && !tp_qmp_run(src, "cont", NULL, 5000, errp))
		return false;
	return true;
}

bool mig_raw_undo(struct tp_qmp *src, const struct mig_target *t, bool src_was_running,
		  struct err **errp)
{
	if (!t->ops->quit(t->impl))
		return err_set(errp, ERR_STATE, "the target QEMU does not stop; the source stays "
			       "paused so the guest cannot run twice");
	return resume_source(src, src_was_running, errp);
}

/* Rollback: the source must be running as before, whatever went wrong,
 * but never while the target might run the guest too. */
static void rollback(struct raw *r)
{
	struct err *e = NULL;

	if (r->p.postcopy) {
		log_error("rollback impossible after the switch to postcopy: the guest's state "
			  "is split between both nodes; the source stays paused");
		return;
	}
	if (!strcmp(r->status, "completed") || r->p.state >= MIG_RAW_SWITCHOVER) {
		if (!r->t->ops->quit(r->t->impl)) {
			log_error("rollback: the target still answers after quit; leaving the "
				  "source paused so the guest cannot run twice");
			return;
		}
	} else {
		cancel(r->src, r->continued || !strcmp(r->status, "device"));
	}
	if (!resume_source(r->src, r->src_was_running || r->p.paused_by_timeout, &e))
		log_error("rollback: could not resume the source: %s", e->msg);
	err_free(e);
}

bool mig_raw_migrate(struct tp_qmp *src, const struct mig_target *t,
		     const struct mig_raw_opts *opts, mig_raw_progress_fn cb, void *opaque,
		     struct mig_raw_progress *final, struct err **errp)
{
	struct raw r = { .src = src, .t = t, .o = opts, .cb = cb, .opaque = opaque };
	bool started = false;

	r.p.state = MIG_RAW_SETUP;
	r.p.downtime_ms = -1;
	r.p.qemu_status = "none";
	if (!opts->uri || !*opts->uri)
		return err_set(errp, ERR_INVAL, "missing migration URI");
	if (!setup(&r, errp))
		goto fail;
	set_state(&r, MIG_RAW_LISTEN);
	if (!t->ops->listen(t->impl, &opts->tune, errp))
		goto fail;
	set_state(&r, MIG_RAW_TRANSFER);
	started = true;
	if (!transfer(&r, errp))
		goto fail;
	set_state(&r, MIG_RAW_SWITCHOVER);
	if (!t->ops->wait_loaded(t->impl, 30000, errp))
		goto fail;
	/* A target started with -S waits for us; one without it runs already. */
	if (opts->resume_target && (r.src_was_running || r.p.paused_by_timeout) &&
	    !t->ops->resume(t->impl, errp))
		goto fail;
	set_state(&r, MIG_RAW_DONE);
	if (final)
		*final = r.p;
	return true;
fail:
	if (started)
		rollback(&r);
	else if (r.src_was_running)
		resume_source(src, true, NULL); /* a failed setup changed nothing to undo */
	set_state(&r, MIG_RAW_FAILED);
	if (final)
		*final = r.p;
	return false;
}

bool mig_raw_run(struct tp_qmp *src, struct tp_qmp *dst, const struct mig_raw_opts *opts,
		 mig_raw_progress_fn cb, void *opaque, struct mig_raw_progress *final,
		 struct err **errp)
{
	struct mig_target t;
	struct mig_target_local l;

	mig_target_local_init(&t, &l, dst, opts->uri);
	return mig_raw_migrate(src, &t, opts, cb, opaque, final, errp);
}
