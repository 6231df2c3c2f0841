/* ctl_run.c - `vmctl start|stop|shutdown|status VMID`: a guest's QEMU on
 * its owning node, through the launcher (migrate/mig_qemu.c), with its run
 * files in $VMM_RUN_DIR/<vmid>. */
#include "ctl.h"
#include "guest.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STOP_TIMEOUT_MS 10000
#define RENEW_EVERY_MS 20000 /* well inside the lock's 60 s */
static const struct cli_opt no_opts[] = {
	{ NULL }
};

static const struct cli_opt shutdown_opts[] = {
	{ "timeout", CLI_VALUE, "S", "seconds to wait for the guest to power off, then stop "
	  "it; default 60" },
	{ NULL }
};

static const struct cli_opt status_opts[] = {
	{ "output", CLI_VALUE, "text|json", "output format; default text" },
	{ NULL }
};

/* Connects, locks and reads a guest this node owns and may act on. */
static bool begin(struct cli_ctl *x, const struct cli_args *a, struct clu_guest_rec *r,
		  struct err **errp)
{
	uint32_t vmid;

	return cli_ctl_vmid(a->pos[0], &vmid, errp) && cli_ctl_open(x, errp) &&
	       cli_ctl_lock(x, vmid, errp) && clu_guest_read(x->c, vmid, r, errp) &&
	       cli_ctl_check_owner(x, r, errp) && cli_ctl_check_unlocked(r, errp);
}

static int finish(const struct cli_args *a, struct cli_ctl *x, struct err *e)
{
	if (x->c)
		cli_ctl_close(x);
	return e ? cli_report(a, e) : 0;
}

/* ---- start ------------------------------------------------------------------ */

static int exec_start(const struct cli_args *a)
{
	_cleanup_free_ struct clu_guest_rec *r = calloc(1, sizeof(*r));
	struct cli_ctl_spec_files f = { .ndisks = 0 };
	struct cli_ctl x = { .lock_fd = -1 };
	struct mig_qemu_spec spec;
	struct err *e = NULL;
	struct mig_qemu *q;
	bool maint;
	pid_t pid;

	if (!r)
		return cli_report(a, NULL);
	if (!begin(&x, a, r, &e))
		return finish(a, &x, e);
	if (cli_ctl_running(r->vmid, &pid)) {
		err_set(&e, ERR_STATE, "guest %" PRIu32 " is already running (pid %d)", r->vmid,
			(int)pid);
		return finish(a, &x, e);
	}
	if (!cli_ctl_in_maintenance(&x, x.node, &maint, &e))
		return finish(a, &x, e);
	if (maint) {
		err_set(&e, ERR_STATE, "node %s is in maintenance: no guest starts here "
			"('vmmigrate undrain %s' ends it)", x.node, x.node);
		return finish(a, &x, e);
	}
	if (!cli_ctl_guest_spec(&x, r, &f, &spec, &e)) {
		cli_ctl_spec_files_free(&f);
		return finish(a, &x, e);
	}
	if (spec.mem_bytes != r->conf.memory << 20)
		log_info("guest %" PRIu32 ": TCG: RAM %lluK (8 KiB short of the configured size, "
			 "avoiding QEMU 7.2's TCG migration bug)", r->vmid,
			 (unsigned long long)(spec.mem_bytes >> 10));
	q = mig_qemu_start(&spec, &e);
	cli_ctl_spec_files_free(&f);
	if (!q)
		return finish(a, &x, e);
	printf("started guest %" PRIu32 " on %s: pid %d, accel %s, QEMU %s\n", r->vmid, x.node,
	       (int)q->pid, mig_accel_name(spec.accel), tp_qmp_version(q->qmp));
	mig_qemu_release(q); /* QEMU runs on; `vmctl stop` ends it */
	return finish(a, &x, NULL);
}

/* ---- stop, shutdown ------------------------------------------------------------ */

static struct mig_qemu *attach_running(const struct clu_guest_rec *r, struct err **errp)
{
	char dir[512];

	if (!cli_ctl_running(r->vmid, NULL)) {
		err_set(errp, ERR_STATE, "guest %" PRIu32 " is not running", r->vmid);
		return NULL;
	}
	return mig_qemu_attach(cli_ctl_run_dir(r->vmid, dir, sizeof(dir)), 5000, errp);
}

static int exec_stop(const struct cli_args *a)
{
	_cleanup_free_ struct clu_guest_rec *r = calloc(1, sizeof(*r));
	struct cli_ctl x = { .lock_fd = -1 };
	struct err *e = NULL;
	struct mig_qemu *q;
	int pid;

	if (!r)
		return cli_report(a, NULL);
	if (!begin(&x, a, r, &e) || !(q = attach_running(r, &e)))
		return finish(a, &x, e);
	pid = (int)q->pid;
	if (!mig_qemu_stop(q, STOP_TIMEOUT_MS, &e))
		return finish(a, &x, e);
	printf("stopped guest %" PRIu32 " (pid %d)\n", r->vmid, pid);
	return finish(a, &x, NULL);
}

static int exec_shutdown(const struct cli_args *a)
{
	_cleanup_free_ struct clu_guest_rec *r = calloc(1, sizeof(*r));
	struct cli_ctl x = { .lock_fd = -1 };
	struct err *e = NULL;
	struct mig_qemu *q;
	int64_t start, deadline;
	int timeout_ms;
	bool gone = false;

	if (!r)
		return cli_report(a, NULL);
	if (!cli_seconds(a, "timeout", 60, &timeout_ms, &e))
		return cli_report(a, e);
	if (!begin(&x, a, r, &e) || !(q = attach_running(r, &e)))
		return finish(a, &x, e);
	/* ACPI power button: the guest's OS decides how to shut down. */
	if (!tp_qmp_run(q->qmp, "system_powerdown", NULL, 5000, &e)) {
		mig_qemu_release(q);
		return finish(a, &x, e);
	}
	start = util_now_ms();
	deadline = start + timeout_ms;
	while (!gone && util_now_ms() < deadline) {
		int64_t left = deadline - util_now_ms();

		gone = mig_qemu_wait_exit(q, (int)(left < RENEW_EVERY_MS ? left : RENEW_EVERY_MS));
		if (!gone && !cli_ctl_lock_renew(&x, &e)) {
			mig_qemu_release(q);
			return finish(a, &x, e);
		}
	}
	/* Either way the stop reaps what is left and removes the run files. */
	if (!mig_qemu_stop(q, STOP_TIMEOUT_MS, &e))
		return finish(a, &x, e);
	if (gone)
		printf("guest %" PRIu32 " powered off after %.1f s\n", r->vmid,
		       (double)(util_now_ms() - start) / 1000);
	else
		printf("guest %" PRIu32 " did not power off within %d s: stopped it\n", r->vmid,
		       timeout_ms / 1000);
	return finish(a, &x, NULL);
}

/* ---- status ------------------------------------------------------------------- */

static int exec_status(const struct cli_args *a)
{
	_cleanup_free_ struct clu_guest_rec *r = calloc(1, sizeof(*r));
	_cleanup_json_ struct json_object *o = json_object_new_object();
	struct cli_ctl x = { .lock_fd = -1 };
	struct err *e = NULL;
	const char *status = "unknown";
	uint32_t vmid;
	pid_t pid = 0;
	bool json;

	if (!r)
		return cli_report(a, NULL);
	if (!cli_ctl_vmid(a->pos[0], &vmid, &e) || !cli_ctl_output(a, &json, &e))
		return cli_report(a, e);
	if (!cli_ctl_open(&x, &e) || !clu_guest_read(x.c, vmid, r, &e))
		return finish(a, &x, e);
	json_object_object_add(o, "vmid", json_object_new_int64(vmid));
	if (r->conf.name[0])
		json_object_object_add(o, "name", json_object_new_string(r->conf.name));
	json_object_object_add(o, "node", json_object_new_string(r->node));
	/* Only the owner's vmctl sees the guest's QEMU. */
	if (!strcmp(r->node, x.node))
		status = cli_ctl_running(vmid, &pid) ? "running" : "stopped";
	json_object_object_add(o, "status", json_object_new_string(status));
	if (pid) {
		char dir[512];
		struct mig_qemu *q;
		struct json_object *st, *v;

		json_object_object_add(o, "pid", json_object_new_int(pid));
		q = mig_qemu_attach(cli_ctl_run_dir(vmid, dir, sizeof(dir)), 2000, &e);
		st = q ? tp_qmp_call(q->qmp, "query-status", NULL, 2000, &e) : NULL;
		if (st && json_object_object_get_ex(st, "status", &v))
			json_object_object_add(o, "qmpstatus", json_object_get(v));
		if (e) {
			log_warn("guest %" PRIu32 ": QEMU pid %d does not answer: %s", vmid,
				 (int)pid, e->msg);
			err_free(TAKE_PTR(e));
		}
		json_object_put(st);
		mig_qemu_release(q);
	}
	if (r->conf.lock[0])
		json_object_object_add(o, "lock", json_object_new_string(r->conf.lock));
	if (json) {
		printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	} else {
		printf("status: %s\n", status);
		json_object_object_foreach(o, key, val)
			if (strcmp(key, "status") && strcmp(key, "vmid"))
				printf("%s: %s\n", key, json_object_get_string(val));
	}
	return finish(a, &x, NULL);
}

const struct cli_cmd cli_ctl_start = {
	.name = "start",
	.posargs = "VMID",
	.summary = "start a guest's QEMU on this node (its owner)",
	.opts = no_opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_start,
};

const struct cli_cmd cli_ctl_stop = {
	.name = "stop",
	.posargs = "VMID",
	.summary = "stop a guest's QEMU at once (no guest shutdown)",
	.opts = no_opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_stop,
};

const struct cli_cmd cli_ctl_shutdown = {
	.name = "shutdown",
	.posargs = "VMID",
	.summary = "press the guest's ACPI power button; stop it after the timeout",
	.opts = shutdown_opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_shutdown,
};

const struct cli_cmd cli_ctl_status = {
	.name = "status",
	.posargs = "VMID",
	.summary = "running or stopped, pid and owner node",
	.opts = status_opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_status,
};
