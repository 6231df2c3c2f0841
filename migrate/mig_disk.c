/*
 * mig_disk.c - the source's half of moving local disks with a running
 * guest: one NBD client node per disk, connected to the export the target
 * QEMU serves, and a blockdev-mirror job from the guest's disk to it.
 * Contract in mig.h ("local disks").
 *
 * Why write-blocking by default: QEMU 7.2 fixes a mirror's copy mode when
 * the job starts (block-job-change came in 8.2). In write-blocking mode a
 * guest write completes only once it reached the target too, so the
 * target never falls behind after the first full pass and the switchover
 * has nothing left to copy; background mode lets a busy guest keep the
 * mirror busy and leaves the rest for the paused guest. (Measured in
 * docs/BENCHMARKS.md.)
 *
 * Why cancel and not complete: `block-job-cancel` on a ready mirror ends
 * it with the target a point-in-time copy and the guest still on its own
 * disk (no pivot), so a failure after it still leaves the source whole.
 * The caller does it while the guest is paused at pre-switchover.
 */
#include "mig.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define JOB_PREFIX "vmm-mirror-"
#define NODE_PREFIX "vmm-nbd-"
#define POLL_MS 50
/* 1 MiB chunks and 64 MiB in flight instead of QEMU's 64 KiB and 16 MiB:
 * a mostly empty 2 GiB disk went over in 7.6 s instead of 10.4 s here
 * (fewer write-zeroes round trips). In write-blocking mode small guest
 * writes still go over as they are, not as whole chunks. */
#define GRANULARITY (1u << 20)
#define BUF_SIZE (64u << 20)

struct mig_mirror {
	struct tp_qmp *q;
	unsigned n;
	int cut[MIG_MAX_DISKS];       /* shut down to cut each NBD connection */
	bool completed;               /* mig_mirror_complete() succeeded */
	bool aborted;                 /* mig_mirror_abort() ran */
	bool node_added[MIG_MAX_DISKS];
	bool job_started[MIG_MAX_DISKS];
	char device[MIG_MAX_DISKS][32];
};

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static uint64_t ju64(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? (uint64_t)json_object_get_int64(v) : 0;
}

static void job_id(unsigned i, char *buf, size_t len)
{
	snprintf(buf, len, JOB_PREFIX "%u", i);
}

static void node_name(unsigned i, char *buf, size_t len)
{
	snprintf(buf, len, NODE_PREFIX "%u", i);
}

static void fd_name(unsigned i, char *buf, size_t len)
{
	snprintf(buf, len, NODE_PREFIX "fd-%u", i);
}

/* The NBD client uses the connection we made: {"type":"fd","str":NAME}. */
static struct json_object *nbd_server_fd(const char *name)
{
	struct json_object *s = json_object_new_object();

	json_object_object_add(s, "type", json_object_new_string("fd"));
	json_object_object_add(s, "str", json_object_new_string(name));
	return s;
}

bool mig_mirror_sweep(struct tp_qmp *q, struct err **errp)
{
	_cleanup_json_ struct json_object *jobs = tp_qmp_call(q, "query-block-jobs", NULL, 5000,
							     errp);
	_cleanup_json_ struct json_object *nodes = NULL;
	struct json_object *args;
	bool found = false;

	if (!jobs)
		return false;
	for (size_t k = 0; k < json_object_array_length(jobs); k++) {
		const char *id = jstr(json_object_array_get_idx(jobs, k), "device");
		int64_t deadline = util_now_ms() + 10000;

		if (!id || strncmp(id, JOB_PREFIX, strlen(JOB_PREFIX)))
			continue;
		found = true;
		args = json_object_new_object();
		json_object_object_add(args, "device", json_object_new_string(id));
		json_object_object_add(args, "force", json_object_new_boolean(true));
		tp_qmp_run(q, "block-job-cancel", args, 5000, NULL);
		for (;;) {
			struct err *e = NULL;

			args = json_object_new_object();
			json_object_object_add(args, "id", json_object_new_string(id));
			if (tp_qmp_run(q, "job-dismiss", args, 5000, &e) || strstr(e->msg, "not found"))
				break;
			if (util_now_ms() >= deadline) {
				err_propagate(errp, &e);
				err_prefix(errp ? *errp : NULL, "leftover mirror job %s", id);
				return false;
			}
			err_free(e);
			usleep(POLL_MS * 1000);
		}
	}
	args = json_object_new_object();
	json_object_object_add(args, "flat", json_object_new_boolean(true));
	nodes = tp_qmp_call(q, "query-named-block-nodes", args, 5000, errp);
	if (!nodes)
		return false;
	for (size_t k = 0; k < json_object_array_length(nodes); k++) {
		const char *name = jstr(json_object_array_get_idx(nodes, k), "node-name");

		if (!name || strncmp(name, NODE_PREFIX, strlen(NODE_PREFIX)))
			continue;
		found = true;
		args = json_object_new_object();
		json_object_object_add(args, "node-name", json_object_new_string(name));
		if (!tp_qmp_run(q, "blockdev-del", args, 5000, errp)) {
			err_prefix(errp ? *errp : NULL, "leftover NBD node %s", name);
			return false;
		}
	}
	if (found)
		log_warn("removed the mirror jobs and NBD connections of an earlier migration");
	return true;
}

static void close_fds(int *fd, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (fd[i] >= 0) {
			close(fd[i]);
			fd[i] = -1;
		}
}

struct mig_mirror *mig_mirror_start(struct tp_qmp *q, const struct mig_disk *d, unsigned n,
				    int *fds, int *cuts, uint64_t speed, bool write_blocking,
				    struct err **errp)
{
	struct mig_mirror *m;

	if (n == 0 || n > MIG_MAX_DISKS) {
		close_fds(fds, n > MIG_MAX_DISKS ? MIG_MAX_DISKS : n);
		close_fds(cuts, n > MIG_MAX_DISKS ? MIG_MAX_DISKS : n);
		err_set(errp, ERR_INVAL, "cannot mirror %u disks (1..%d)", n, MIG_MAX_DISKS);
		return NULL;
	}
	/* A worker that died mid-copy left its jobs and nodes behind. */
	if (!mig_mirror_sweep(q, errp) || !(m = calloc(1, sizeof(*m)))) {
		close_fds(fds, n);
		close_fds(cuts, n);
		if (errp && !*errp)
			err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	m->q = q;
	m->n = n;
	memcpy(m->cut, cuts, n * sizeof(*cuts));
	for (unsigned i = 0; i < n; i++)
		cuts[i] = -1; /* ours now */
	for (unsigned i = 0; i < n; i++) {
		struct json_object *args = json_object_new_object();
		char node[32], job[32], fdn[32];
		bool sent;

		snprintf(m->device[i], sizeof(m->device[i]), "%s", d[i].device);
		node_name(i, node, sizeof(node));
		fd_name(i, fdn, sizeof(fdn));
		/* QEMU gets the connection; we keep a way to cut it on
		 * failure (a dead link would hang the guest's writes in
		 * write-blocking mode until TCP gave up, many minutes). */
		sent = tp_qmp_send_fd(q, fds[i], fdn, 5000, errp);
		close(fds[i]);
		fds[i] = -1;
		if (!sent) {
			err_prefix(errp ? *errp : NULL, "disk %s: handing the NBD connection to QEMU",
				   d[i].device);
			json_object_put(args);
			goto fail;
		}
		json_object_object_add(args, "driver", json_object_new_string("nbd"));
		json_object_object_add(args, "node-name", json_object_new_string(node));
		json_object_object_add(args, "server", nbd_server_fd(fdn));
		json_object_object_add(args, "export", json_object_new_string(d[i].export));
		if (!tp_qmp_run(q, "blockdev-add", args, 10000, errp)) {
			err_prefix(errp ? *errp : NULL, "disk %s: NBD connection to the target",
				   d[i].device);
			goto fail;
		}
		m->node_added[i] = true;
		job_id(i, job, sizeof(job));
		args = json_object_new_object();
		json_object_object_add(args, "job-id", json_object_new_string(job));
		json_object_object_add(args, "device", json_object_new_string(d[i].device));
		json_object_object_add(args, "target", json_object_new_string(node));
		json_object_object_add(args, "sync", json_object_new_string("full"));
		json_object_object_add(args, "copy-mode", json_object_new_string(
					       write_blocking ? "write-blocking" : "background"));
		/* Kept after it ends, so its outcome can be read, then dismissed. */
		json_object_object_add(args, "auto-dismiss", json_object_new_boolean(false));
		if (speed)
			json_object_object_add(args, "speed", json_object_new_uint64(speed));
		if (write_blocking) {
			/* In background mode every small guest write would dirty
			 * (and recopy) a whole chunk: QEMU's 64 KiB stays there. */
			json_object_object_add(args, "granularity",
					       json_object_new_uint64(GRANULARITY));
			json_object_object_add(args, "buf-size", json_object_new_uint64(BUF_SIZE));
		}
		if (!tp_qmp_run(q, "blockdev-mirror", args, 10000, errp)) {
			err_prefix(errp ? *errp : NULL, "disk %s: mirror", d[i].device);
			goto fail;
		}
		m->job_started[i] = true;
		log_info("disk %s: mirroring to the target's export '%s'%s", d[i].device,
			 d[i].export, write_blocking ? " (guest writes synchronous)" : "");
	}
	return m;
fail:
	close_fds(fds, n); /* those of the disks not reached */
	mig_mirror_end(m);
	return NULL;
}

static bool jbool(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

/* Our jobs as QEMU lists them, by index; a job of ours missing is NULL. */
static bool list_jobs(struct mig_mirror *m, struct json_object **jobs_out,
		      struct json_object *by[MIG_MAX_DISKS], struct err **errp)
{
	struct json_object *jobs = tp_qmp_call(m->q, "query-block-jobs", NULL, 5000, errp);

	if (!jobs)
		return false;
	memset(by, 0, sizeof(*by) * MIG_MAX_DISKS);
	for (size_t k = 0; k < json_object_array_length(jobs); k++) {
		struct json_object *j = json_object_array_get_idx(jobs, k);
		const char *id = jstr(j, "device");
		unsigned i;

		if (id && !strncmp(id, JOB_PREFIX, strlen(JOB_PREFIX)) &&
		    sscanf(id + strlen(JOB_PREFIX), "%u", &i) == 1 && i < m->n)
			by[i] = j;
	}
	*jobs_out = jobs;
	return true;
}

bool mig_mirror_poll(struct mig_mirror *m, struct mig_disk_progress *p, bool *all_ready,
		     struct err **errp)
{
	_cleanup_json_ struct json_object *jobs = NULL;
	struct json_object *by[MIG_MAX_DISKS];

	if (!list_jobs(m, &jobs, by, errp))
		return false;
	*all_ready = true;
	for (unsigned i = 0; i < m->n; i++) {
		const char *st, *why;

		if (!by[i])
			return err_set(errp, ERR_STATE, "disk %s: the mirror job is gone",
				       m->device[i]);
		st = jstr(by[i], "status");
		why = jstr(by[i], "error");
		if (why || (st && (!strcmp(st, "concluded") || !strcmp(st, "aborting") ||
				   !strcmp(st, "null"))))
			return err_set(errp, ERR_IO, "disk %s: the mirror failed: %s", m->device[i],
				       why ? why : st);
		p[i].total = ju64(by[i], "len");
		p[i].done = ju64(by[i], "offset");
		p[i].ready = jbool(by[i], "ready");
		*all_ready = *all_ready && p[i].ready;
	}
	return true;
}

bool mig_mirror_complete(struct mig_mirror *m, int timeout_ms, struct err **errp)
{
	int64_t deadline = util_now_ms() + timeout_ms;
	struct mig_disk_progress p[MIG_MAX_DISKS];
	bool ready;

	/* A job that failed since the last look says why, not "cannot cancel". */
	if (!mig_mirror_poll(m, p, &ready, errp))
		return false;

	for (unsigned i = 0; i < m->n; i++) {
		struct json_object *args = json_object_new_object();
		char job[32];

		job_id(i, job, sizeof(job));
		json_object_object_add(args, "device", json_object_new_string(job));
		if (!tp_qmp_run(m->q, "block-job-cancel", args, 5000, errp)) {
			err_prefix(errp ? *errp : NULL, "disk %s: ending the mirror", m->device[i]);
			return false;
		}
	}
	/* Each job writes what is left, then concludes (no pivot). */
	for (;;) {
		_cleanup_json_ struct json_object *jobs = NULL;
		struct json_object *by[MIG_MAX_DISKS];
		bool all = true;

		if (!list_jobs(m, &jobs, by, errp))
			return false;
		for (unsigned i = 0; i < m->n; i++) {
			const char *st = by[i] ? jstr(by[i], "status") : NULL, *why;

			if (!st)
				return err_set(errp, ERR_STATE, "disk %s: the mirror job is gone",
					       m->device[i]);
			why = jstr(by[i], "error");
			if (why)
				return err_set(errp, ERR_IO, "disk %s: the mirror failed: %s",
					       m->device[i], why);
			all = all && !strcmp(st, "concluded");
		}
		if (all) {
			m->completed = true;
			return true;
		}
		if (util_now_ms() >= deadline)
			return err_set(errp, ERR_TIMEOUT, "the mirrors did not finish within %d ms",
				       timeout_ms);
		usleep(POLL_MS * 1000);
	}
}

void mig_mirror_abort(struct mig_mirror *m)
{
	if (!m || m->completed || m->aborted)
		return;
	m->aborted = true;
	/* Cut the connections first, so requests in flight fail now and the
	 * jobs (and guest writes waiting on them) can end. */
	for (unsigned i = 0; i < m->n; i++)
		if (m->cut[i] >= 0) {
			shutdown(m->cut[i], SHUT_RDWR);
			close(m->cut[i]);
			m->cut[i] = -1;
		}
	for (unsigned i = 0; i < m->n; i++) {
		struct json_object *args;
		char job[32];

		if (!m->job_started[i])
			continue;
		job_id(i, job, sizeof(job));
		/* force: a job not yet ready stops at once, the target copy
		 * being worthless anyway. */
		args = json_object_new_object();
		json_object_object_add(args, "device", json_object_new_string(job));
		json_object_object_add(args, "force", json_object_new_boolean(true));
		tp_qmp_run(m->q, "block-job-cancel", args, 5000, NULL);
	}
}

/* Dismisses the jobs (waiting for them to conclude) and removes the NBD
 * nodes; what is gone is marked so, so it can be called again. */
static bool detach(struct mig_mirror *m, int timeout_ms, struct err **errp)
{
	int64_t deadline = util_now_ms() + timeout_ms;
	bool ok = true;

	for (unsigned i = 0; i < m->n; i++) {
		char job[32];

		if (!m->job_started[i])
			continue;
		job_id(i, job, sizeof(job));
		/* Dismiss once it concluded (cancelling takes a moment). */
		for (;;) {
			struct json_object *args = json_object_new_object();
			struct err *e = NULL;

			json_object_object_add(args, "id", json_object_new_string(job));
			if (tp_qmp_run(m->q, "job-dismiss", args, 5000, &e) ||
			    strstr(e->msg, "not found")) {
				m->job_started[i] = false;
				err_free(e);
				break;
			}
			if (util_now_ms() >= deadline || e->code == ERR_CLOSED) {
				err_prefix(e, "disk %s: the mirror job did not end", m->device[i]);
				if (ok)
					err_propagate(errp, &e);
				ok = false;
				err_free(e);
				break;
			}
			err_free(e);
			usleep(POLL_MS * 1000);
		}
	}
	for (unsigned i = 0; i < m->n; i++) {
		struct json_object *args;
		char node[32];
		struct err *e = NULL;

		if (!m->node_added[i] || m->job_started[i])
			continue;
		node_name(i, node, sizeof(node));
		args = json_object_new_object();
		json_object_object_add(args, "node-name", json_object_new_string(node));
		if (tp_qmp_run(m->q, "blockdev-del", args, 5000, &e) || e->code == ERR_CLOSED) {
			m->node_added[i] = false;
		} else {
			err_prefix(e, "disk %s: removing the NBD node", m->device[i]);
			if (ok)
				err_propagate(errp, &e);
			ok = false;
		}
		err_free(e);
	}
	return ok;
}

bool mig_mirror_detach(struct mig_mirror *m, struct err **errp)
{
	return detach(m, 10000, errp);
}

void mig_mirror_end(struct mig_mirror *m)
{
	struct err *e = NULL;

	if (!m)
		return;
	mig_mirror_abort(m);
	if (!detach(m, 30000, &e)) {
		log_warn("%s", e->msg);
		err_free(e);
	}
	close_fds(m->cut, m->n);
	free(m);
}
