/*
 * mig_job.c - one guest's migration from this node to another, as the
 * phase machine of DESIGN.md §4 (after Proxmox's QemuMigrate):
 *
 *   check -> prepare -> start-target -> transfer -> switchover -> cleanup
 *                                                       -> done
 *   (any failure before the owner moved)  -> rollback -> failed
 *
 * check        control session (SSH to the target's cluster address, the
 *              agent at its end) and the checks only the target can make:
 *              its address in the migration network, memory, CPU, storages
 * prepare      the phase record in the store (so a crash can be cleaned
 *              up), data sessions for secure mode
 * start-target the target QEMU, paused, listening (online); nothing offline
 * transfer     RAM through QEMU (online) or local volumes as zstd streams
 *              (offline)
 * switchover   the store's owner moves to the target - only after QEMU
 *              reported completion - then the target runs, then the
 *              source stops: one node runs the guest at every instant
 * cleanup      source QEMU gone, source copies of moved volumes removed
 *
 * Every transition goes through set_phase(), which logs it and persists it
 * through the caller's hooks. Contract in mig.h.
 */
#include "mig.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../transport/tp_net.h"
#include "../transport/tp_ssh.h"
#include "../transport/tp_stream.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#define CTL_TIMEOUT_MS 30000
#define FACTS_TIMEOUT_MS 60000 /* the CPU check may probe QEMU once */
#define MAX_DATA_SESSIONS TP_SSH_FWD_MAX
#define DISK_STALL_MS 15000    /* no mirror progress: the link is gone */
#define NBD_USER_TIMEOUT_MS 10000
#define MIRROR_FINISH_MS 60000 /* the last writes, guest paused */
#define DISK_CONVERGE_MS 60000 /* no new low of what is left to copy */

static const char *const phase_names[] = {
	[MIG_PHASE_CHECK] = "check",
	[MIG_PHASE_PREPARE] = "prepare",
	[MIG_PHASE_START_TARGET] = "start-target",
	[MIG_PHASE_TRANSFER] = "transfer",
	[MIG_PHASE_SWITCHOVER] = "switchover",
	[MIG_PHASE_CLEANUP] = "cleanup",
	[MIG_PHASE_DONE] = "done",
	[MIG_PHASE_ROLLBACK] = "rollback",
	[MIG_PHASE_FAILED] = "failed",
};
_Static_assert(ARRAY_SIZE(phase_names) == MIG_PHASE_MAX, "phase_names");

const char *mig_phase_name(enum mig_phase p)
{
	return (unsigned)p < MIG_PHASE_MAX ? phase_names[p] : "?";
}

bool mig_phase_parse(const char *s, enum mig_phase *out)
{
	for (int i = 0; i < MIG_PHASE_MAX; i++)
		if (!strcmp(s, phase_names[i])) {
			*out = (enum mig_phase)i;
			return true;
		}
	return false;
}

struct job {
	const struct mig_job *j;
	struct mig_job_progress p;
	struct tp_ssh *ctl_ssh;
	struct mig_chan *ch;
	struct tp_ssh *data[MAX_DATA_SESSIONS];
	unsigned ndata;
	char target_addr[64];   /* where data goes */
	bool target_started;
	bool owner_moved;
	int64_t start_ms;
	/* secure online: QEMU's connections into the data sessions */
	struct tp_ssh_fwd *fwd_ram;
	char ram_sock[600];
	unsigned port, nbd_port;  /* the target's listeners */
	/* local disks (online): mirrors to the target's NBD exports */
	struct mig_mirror *mirror;
	struct mig_disk disks[MIG_MAX_DISKS];
	char exports[MIG_MAX_DISKS][32], devices[MIG_MAX_DISKS][32];
};

/* The one place the phase changes. A failed persist is fatal only before
 * the owner moved (then rollback keeps the old state true). */
static bool set_phase(struct job *jb, enum mig_phase ph, struct err **errp)
{
	log_info("migration of guest %" PRIu32 " to %s: %s -> %s", jb->j->vmid, jb->j->target,
		 mig_phase_name(jb->p.phase), mig_phase_name(ph));
	jb->p.phase = ph;
	if (jb->j->hooks.progress)
		jb->j->hooks.progress(&jb->p, jb->j->hooks.opaque);
	if (jb->j->hooks.persist && !jb->j->hooks.persist(ph, jb->j->hooks.opaque, errp))
		return ph >= MIG_PHASE_SWITCHOVER && jb->owner_moved;
	util_test_delay(mig_phase_name(ph));
	return true;
}

/* ---- sessions ------------------------------------------------------------------- */

static void ssh_opts(const struct mig_job *j, const char *host, struct tp_ssh_opts *o)
{
	*o = (struct tp_ssh_opts){
		.host = host,
		.port = j->ssh_port,
		.user = "root",
		.key = j->ssh_key,
		.host_key = j->target_host_key,
		.timeout_ms = 10000,
	};
}

struct mig_chan *mig_agent_connect(const struct mig_agent_addr *a, struct tp_ssh **ssh,
				   struct err **errp)
{
	const char *argv[] = { a->remote_cmd, "_agent", NULL };
	struct tp_ssh_opts o = {
		.host = a->addr,
		.port = a->ssh_port,
		.user = "root",
		.key = a->ssh_key,
		.host_key = a->host_key,
		.timeout_ms = 10000,
	};
	_cleanup_json_ struct json_object *rep = NULL;
	struct mig_chan *ch;
	int fd;

	if (!a->host_key || !*a->host_key)
		return err_set(errp, ERR_STATE, "node %s has no SSH host key in the cluster "
			       "store to pin (is its vmmd running?)", a->node), NULL;
	*ssh = tp_ssh_open(&o, errp);
	if (!*ssh) {
		err_prefix(errp ? *errp : NULL, "control session to %s", a->node);
		return NULL;
	}
	fd = tp_ssh_exec(*ssh, argv, errp);
	ch = fd < 0 ? NULL : mig_chan_open(fd, fd);
	if (!ch) {
		if (fd >= 0) {
			close(fd);
			err_set(errp, ERR_IO, "out of memory");
		}
		goto fail;
	}
	rep = mig_chan_call(ch, mig_chan_req("hello"), CTL_TIMEOUT_MS, errp);
	if (!rep) {
		const char *why = tp_ssh_exec_stderr(*ssh);

		if (errp && *errp && why && *why) {
			char line[256];

			snprintf(line, sizeof(line), "%s", why);
			line[strcspn(line, "\n")] = '\0';
			err_prefix(*errp, "agent on %s did not start (%s)", a->node, line);
		}
		mig_chan_close(ch);
		goto fail;
	}
	return ch;
fail:
	tp_ssh_close(*ssh);
	*ssh = NULL;
	return NULL;
}

static bool open_control(struct job *jb, struct err **errp)
{
	const struct mig_job *j = jb->j;
	struct mig_agent_addr a = {
		.node = j->target,
		.addr = j->target_ctl_addr,
		.host_key = j->target_host_key,
		.ssh_key = j->ssh_key,
		.ssh_port = j->ssh_port,
		.remote_cmd = j->remote_cmd,
	};

	jb->ch = mig_agent_connect(&a, &jb->ctl_ssh, errp);
	return jb->ch != NULL;
}

static bool facts(struct job *jb, struct err **errp)
{
	const struct mig_job *j = jb->j;
	struct json_object *req = mig_chan_req("facts"), *st = json_object_new_array(), *v;
	_cleanup_json_ struct json_object *rep = NULL;

	json_object_object_add(req, "vmid", json_object_new_int64(j->vmid));
	if (j->cidr)
		json_object_object_add(req, "cidr", json_object_new_string(j->cidr));
	json_object_object_add(req, "cpu", json_object_new_string(j->cpu_model));
	json_object_object_add(req, "accel", json_object_new_string(mig_accel_name(j->accel)));
	json_object_object_add(req, "memory", json_object_new_uint64(j->mem_bytes));
	for (unsigned i = 0; i < j->nstorages; i++)
		json_object_array_add(st, json_object_new_string(j->storages[i]));
	json_object_object_add(req, "storages", st);
	rep = mig_chan_call(jb->ch, req, FACTS_TIMEOUT_MS, errp);
	if (!rep)
		return false;
	if (j->cidr) {
		if (!json_object_object_get_ex(rep, "address", &v) ||
		    !json_object_is_type(v, json_type_string))
			return err_set(errp, ERR_PROTO, "the agent on %s sent no address", j->target);
		snprintf(jb->target_addr, sizeof(jb->target_addr), "%s", json_object_get_string(v));
	} else {
		snprintf(jb->target_addr, sizeof(jb->target_addr), "%s", j->target_ctl_addr);
	}
	snprintf(jb->p.target_addr, sizeof(jb->p.target_addr), "%s", jb->target_addr);
	return true;
}

/* Leftovers of an earlier, crashed migration of this guest on the target. */
static bool target_cleanup(struct job *jb, struct err **errp)
{
	struct json_object *req = mig_chan_req("cleanup"), *v;
	_cleanup_json_ struct json_object *rep = NULL;

	json_object_object_add(req, "vmid", json_object_new_int64(jb->j->vmid));
	rep = mig_chan_call(jb->ch, req, CTL_TIMEOUT_MS, errp);
	if (!rep)
		return false;
	if (json_object_object_get_ex(rep, "action", &v) && json_object_is_type(v, json_type_string) &&
	    strcmp(json_object_get_string(v), "none"))
		log_warn("target %s: %s a leftover QEMU of an earlier migration of guest %" PRIu32,
			 jb->j->target, json_object_get_string(v), jb->j->vmid);
	return true;
}

static bool open_data(struct job *jb, unsigned n, struct err **errp)
{
	struct tp_ssh_opts o;

	if (n > MAX_DATA_SESSIONS)
		n = MAX_DATA_SESSIONS;
	ssh_opts(jb->j, jb->target_addr, &o);
	if (!tp_ssh_open_many(&o, n, jb->data, errp)) {
		err_prefix(errp ? *errp : NULL, "data sessions to %s", jb->target_addr);
		return false;
	}
	jb->ndata = n;
	return true;
}

/* ---- secure online: QEMU's connections into SSH channels ----------------------- */

static bool start_forwarder(struct job *jb, struct tp_ssh_fwd **f, char *path, size_t len,
			    const char *what, unsigned port, struct err **errp)
{
	snprintf(path, len, "%s/%s-%d.sock", jb->j->src_run_dir, what, (int)getpid());
	*f = tp_ssh_fwd_start(path, jb->data, jb->ndata, "127.0.0.1", port, errp);
	return *f != NULL;
}

static void stop_forwarders(struct job *jb)
{
	tp_ssh_fwd_stop(jb->fwd_ram);
	jb->fwd_ram = NULL;
}

/* ---- online --------------------------------------------------------------------- */

/* Local disks to move with a running guest: where each goes on the target. */
static struct json_object *disks_json(const struct mig_job *j)
{
	struct json_object *arr = json_object_new_array();

	for (unsigned i = 0; i < j->nvolumes; i++) {
		const struct mig_job_volume *v = &j->volumes[i];
		struct json_object *d = json_object_new_object();

		json_object_object_add(d, "drive", json_object_new_int((int)v->drive));
		json_object_object_add(d, "storage", json_object_new_string(v->storage));
		json_object_object_add(d, "target_storage", json_object_new_string(
					       v->target_storage ? v->target_storage : v->storage));
		json_object_object_add(d, "volume", json_object_new_string(v->volume));
		json_object_object_add(d, "size", json_object_new_uint64(v->size));
		json_object_array_add(arr, d);
	}
	return arr;
}

static bool start_target(struct job *jb, struct err **errp)
{
	const struct mig_job *j = jb->j;
	struct json_object *req = mig_chan_req("start"), *v, *ex;
	_cleanup_json_ struct json_object *rep = NULL;

	json_object_object_add(req, "vmid", json_object_new_int64(j->vmid));
	json_object_object_add(req, "mem_bytes", json_object_new_uint64(j->mem_bytes));
	json_object_object_add(req, "accel", json_object_new_string(mig_accel_name(j->accel)));
	/* Secure: only sshd on the target's loopback may connect; insecure:
	 * only our address in the migration network. */
	json_object_object_add(req, "bind", json_object_new_string(j->secure ? "127.0.0.1" :
								   jb->target_addr));
	json_object_object_add(req, "peer", json_object_new_string(j->secure ? "127.0.0.1" :
								   j->source_addr));
	if (j->nvolumes)
		json_object_object_add(req, "disks", disks_json(j));
	rep = mig_chan_call(jb->ch, req, CTL_TIMEOUT_MS, errp);
	if (!rep)
		return false;
	jb->target_started = true;
	if (!json_object_object_get_ex(rep, "port", &v) || json_object_get_int(v) <= 0)
		return err_set(errp, ERR_PROTO, "the agent on %s sent no port", j->target);
	jb->port = (unsigned)json_object_get_int(v);
	if (!j->nvolumes)
		return true;
	if (!json_object_object_get_ex(rep, "nbd_port", &v) || json_object_get_int(v) <= 0 ||
	    !json_object_object_get_ex(rep, "exports", &ex) ||
	    !json_object_is_type(ex, json_type_array) || json_object_array_length(ex) != j->nvolumes)
		return err_set(errp, ERR_PROTO, "the agent on %s sent no NBD exports", j->target);
	jb->nbd_port = (unsigned)json_object_get_int(v);
	for (unsigned i = 0; i < j->nvolumes; i++) {
		const char *name = json_object_get_string(json_object_array_get_idx(ex, i));

		if (!name)
			return err_set(errp, ERR_PROTO, "the agent on %s sent a null NBD export",
				       j->target);
		snprintf(jb->exports[i], sizeof(jb->exports[i]), "%s", name);
		snprintf(jb->devices[i], sizeof(jb->devices[i]), "drive%u", j->volumes[i].drive);
		jb->disks[i] = (struct mig_disk){ .device = jb->devices[i], .export = jb->exports[i] };
	}
	return true;
}

static void on_raw(const struct mig_raw_progress *rp, void *opaque)
{
	struct job *jb = opaque;

	jb->p.raw = *rp;
	if (jb->j->hooks.progress)
		jb->j->hooks.progress(&jb->p, jb->j->hooks.opaque);
}

static bool raw_cancelled(void *opaque, struct err **errp)
{
	struct job *jb = opaque;

	if (jb->ctl_ssh && tp_ssh_failed(jb->ctl_ssh))
		return !err_set(errp, ERR_CLOSED, "control session to %s lost: %s", jb->j->target,
				tp_ssh_failed(jb->ctl_ssh));
	return jb->j->hooks.check && !jb->j->hooks.check(jb->j->hooks.opaque, errp);
}

static bool move_owner(struct job *jb, struct err **errp)
{
	if (!jb->j->hooks.move_owner(jb->j->hooks.opaque, errp)) {
		err_prefix(errp ? *errp : NULL, "cannot move guest %" PRIu32 " to %s in the store",
			   jb->j->vmid, jb->j->target);
		return false;
	}
	jb->owner_moved = true;
	return true;
}

static bool before_postcopy(void *opaque, struct err **errp)
{
	return move_owner(opaque, errp);
}

/* ---- local disks (online) ----------------------------------------------------------- */

static void disk_totals(struct job *jb, const struct mig_disk_progress *dp)
{
	jb->p.vols_total = jb->p.vol_covered = 0;
	for (unsigned i = 0; i < jb->j->nvolumes; i++) {
		jb->p.disk[i] = dp[i];
		jb->p.vols_total += dp[i].total;
		jb->p.vol_covered += dp[i].done;
	}
}

/* A connection to the target's NBD server for disk i: TCP to its migration
 * address, or a socketpair whose other end an SSH channel carries to the
 * server on its loopback. A dead peer fails in-flight requests after
 * NBD_USER_TIMEOUT_MS (TCP_USER_TIMEOUT), not after TCP's minutes. */
static int nbd_connection(struct job *jb, unsigned i, int *cut, struct err **errp)
{
	unsigned timeout = NBD_USER_TIMEOUT_MS;
	int sp[2], fd;

	if (!jb->j->secure) {
		fd = tp_net_connect(jb->target_addr, jb->nbd_port, 10000, errp);
		if (fd < 0)
			return -1;
		setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout, sizeof(timeout));
		*cut = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (*cut < 0) {
			err_set_errno(errp, errno, "dup");
			close(fd);
			return -1;
		}
		return fd;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
		err_set_errno(errp, errno, "socketpair");
		return -1;
	}
	*cut = fcntl(sp[1], F_DUPFD_CLOEXEC, 0);
	if (*cut < 0) {
		err_set_errno(errp, errno, "dup");
		close(sp[0]);
		close(sp[1]);
		return -1;
	}
	if (!tp_ssh_forward(jb->data[i % jb->ndata], sp[1], "127.0.0.1", jb->nbd_port, errp)) {
		close(sp[0]);
		close(*cut);
		return -1;
	}
	return sp[0];
}

/* Mirrors every local disk to the target and waits until all are in sync:
 * the guest runs on meanwhile, its writes reaching both sides. */
static bool mirror_disks(struct job *jb, struct err **errp)
{
	const struct mig_job *j = jb->j;
	struct mig_disk_progress dp[MIG_MAX_DISKS] = { 0 };
	int64_t deadline = j->timeout_ms >= 0 ? util_now_ms() + j->timeout_ms : -1;
	int64_t moved_ms = util_now_ms(), next_cb = 0, better_ms = util_now_ms();
	uint64_t last = 0, least = UINT64_MAX;
	int fds[MIG_MAX_DISKS], cuts[MIG_MAX_DISKS];
	bool ready = false;

	for (unsigned i = 0; i < j->nvolumes; i++) {
		fds[i] = nbd_connection(jb, i, &cuts[i], errp);
		if (fds[i] < 0) {
			for (unsigned k = 0; k < i; k++) {
				close(fds[k]);
				close(cuts[k]);
			}
			return false;
		}
	}
	jb->p.ndisks = j->nvolumes;
	jb->p.mirroring = true;
	jb->mirror = mig_mirror_start(j->src_qmp, jb->disks, j->nvolumes, fds, cuts,
				      j->tune.max_bandwidth, !j->mirror_background, errp);
	if (!jb->mirror)
		return false;
	while (!ready) {
		if (!mig_mirror_poll(jb->mirror, dp, &ready, errp))
			return false;
		disk_totals(jb, dp);
		jb->p.elapsed_ms = util_now_ms() - jb->start_ms;
		if (jb->j->hooks.progress && (ready || util_now_ms() >= next_cb)) {
			jb->j->hooks.progress(&jb->p, jb->j->hooks.opaque);
			next_cb = util_now_ms() + 200;
		}
		if (ready)
			break;
		if (raw_cancelled(jb, errp))
			return false;
		if (jb->p.vol_covered != last) {
			last = jb->p.vol_covered;
			moved_ms = util_now_ms();
		} else if (util_now_ms() - moved_ms > DISK_STALL_MS) {
			return err_set(errp, ERR_TIMEOUT, "disk copy stalled: no data moved for %d s "
				       "(is the migration link down?)", DISK_STALL_MS / 1000);
		}
		/* Data moves but what is left does not shrink: the guest dirties
		 * its disks faster than the copy goes (background mode). */
		if (jb->p.vols_total - jb->p.vol_covered < least) {
			least = jb->p.vols_total - jb->p.vol_covered;
			better_ms = util_now_ms();
		} else if (util_now_ms() - better_ms > DISK_CONVERGE_MS) {
			char left[32];

			return err_set(errp, ERR_TIMEOUT, "the disks do not converge: %s still to copy "
				       "after %d s without progress (the guest writes faster than the "
				       "link copies%s)", util_fmt_bytes(least, left, sizeof(left)),
				       DISK_CONVERGE_MS / 1000, j->mirror_background ?
				       "; --mirror-mode write-blocking keeps the disks in step" : "");
		}
		if (deadline >= 0 && util_now_ms() > deadline)
			return err_set(errp, ERR_TIMEOUT, "the disks were not copied within %d s",
				       j->timeout_ms / 1000);
		usleep(50 * 1000);
	}
	jb->p.mirroring = false;
	log_info("guest %" PRIu32 ": %u disk(s) in sync with %s", j->vmid, j->nvolumes, j->target);
	return true;
}

/* At pre-switchover, the guest paused: the target gets the last writes,
 * through the mirrors and then the caller's hook. */
static bool finish_disks(void *opaque, struct err **errp)
{
	struct job *jb = opaque;
	const struct mig_job_hooks *h = &jb->j->hooks;

	if (jb->mirror && (!mig_mirror_complete(jb->mirror, MIRROR_FINISH_MS, errp) ||
			   !mig_mirror_detach(jb->mirror, errp)))
		return false;
	return !h->pre_switchover || h->pre_switchover(h->opaque, errp);
}

static bool online(struct job *jb, struct err **errp)
{
	const struct mig_job *j = jb->j;
	struct mig_raw_opts o = {
		.tune = j->tune,
		.timeout_ms = j->timeout_ms,
		.timeout_action = j->timeout_action,
		.poll_ms = 200,
		.resume_target = false, /* only after the owner moved */
		.cancelled = raw_cancelled,
		.before_postcopy = before_postcopy,
		.pre_switchover = j->nvolumes || j->hooks.pre_switchover ? finish_disks : NULL,
	};
	struct mig_target t;
	char uri[700];
	bool was_running = j->src_was_running;

	if (!set_phase(jb, MIG_PHASE_START_TARGET, errp) || !start_target(jb, errp))
		return false;
	if (j->secure) {
		if (!start_forwarder(jb, &jb->fwd_ram, jb->ram_sock, sizeof(jb->ram_sock), "mig",
				     jb->port, errp))
			return false;
		snprintf(uri, sizeof(uri), "unix:%s", jb->ram_sock);
	} else {
		snprintf(uri, sizeof(uri), strchr(jb->target_addr, ':') ? "tcp:[%s]:%u" : "tcp:%s:%u",
			 jb->target_addr, jb->port);
	}
	o.uri = uri;
	mig_chan_target(jb->ch, &t);
	if (!set_phase(jb, MIG_PHASE_TRANSFER, errp))
		return false;
	/* Disks first, then RAM (the mirrors keep the disks in step). */
	if (j->nvolumes && !mirror_disks(jb, errp))
		return false;
	if (!mig_raw_migrate(j->src_qmp, &t, &o, on_raw, jb, &jb->p.raw, errp))
		return false; /* after postcopy began, owner_moved is set already */
	mig_mirror_end(TAKE_PTR(jb->mirror));
	stop_forwarders(jb);
	if (!set_phase(jb, MIG_PHASE_SWITCHOVER, errp))
		goto undo;
	/* Both paused: the owner moves only to a target that still answers
	 * (one that died since it loaded the state means a rollback). */
	if (!jb->owner_moved && t.ops->check && !t.ops->check(t.impl, errp))
		goto undo;
	if (!jb->owner_moved && !move_owner(jb, errp))
		goto undo;
	util_test_delay("owner-moved");
	/* The owner is the target now: from here on the target must run. */
	if (!t.ops->resume(t.impl, errp)) {
		log_error("guest %" PRIu32 " belongs to %s but did not resume there: %s", j->vmid,
			  j->target, errp && *errp ? (*errp)->msg : "?");
		/* Not a success: the source keeps its paused copy for the
		 * caller's recovery, which asks the target what it runs. */
		jb->p.target_lost = true;
		return false;
	}
	return true;
undo:
	if (!mig_raw_undo(j->src_qmp, &t, was_running || jb->p.raw.paused_by_timeout, NULL))
		log_error("guest %" PRIu32 ": could not undo the completed migration", j->vmid);
	jb->target_started = false;
	return false;
}

/* ---- offline: volumes ---------------------------------------------------------------- */

struct vol_cb {
	struct job *jb;
	unsigned idx;
};

static void on_volume(const struct tp_stream_progress *sp, void *opaque)
{
	struct vol_cb *vc = opaque;
	struct job *jb = vc->jb;

	jb->p.vol_index = vc->idx;
	jb->p.vol_covered = jb->p.vols_done + sp->covered;
	jb->p.vol_wire = jb->p.wire_done + sp->wire_bytes;
	if (jb->j->hooks.progress)
		jb->j->hooks.progress(&jb->p, jb->j->hooks.opaque);
}

/* A stream to the agent's listener: TCP, or a channel of a data session. */
static int data_stream(struct job *jb, unsigned port, struct err **errp)
{
	int sp[2];

	if (!jb->j->secure)
		return tp_net_connect(jb->target_addr, port, 10000, errp);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
		err_set_errno(errp, errno, "socketpair");
		return -1;
	}
	if (!tp_ssh_forward(jb->data[0], sp[1], "127.0.0.1", port, errp)) {
		close(sp[0]);
		return -1;
	}
	return sp[0];
}

static bool send_volume(struct job *jb, unsigned i, struct err **errp)
{
	const struct mig_job_volume *v = &jb->j->volumes[i];
	struct json_object *req = mig_chan_req("recv-volume"), *pv;
	_cleanup_json_ struct json_object *rep = NULL, *done = NULL;
	struct vol_cb vc = { .jb = jb, .idx = i };
	struct tp_stream_opts so = {
		.zstd_level = 1,
		.rate_limit = jb->j->tune.max_bandwidth,
		.progress = on_volume,
		.opaque = &vc,
	};
	struct tp_stream_progress fin;
	_cleanup_close_ int fd = -1;
	bool sent;

	json_object_object_add(req, "vmid", json_object_new_int64(jb->j->vmid));
	json_object_object_add(req, "storage", json_object_new_string(v->storage));
	if (v->target_storage)
		json_object_object_add(req, "target_storage",
				       json_object_new_string(v->target_storage));
	json_object_object_add(req, "volume", json_object_new_string(v->volume));
	json_object_object_add(req, "size", json_object_new_uint64(v->size));
	json_object_object_add(req, "bind", json_object_new_string(jb->j->secure ? "127.0.0.1" :
								   jb->target_addr));
	json_object_object_add(req, "peer", json_object_new_string(jb->j->secure ? "127.0.0.1" :
								   jb->j->source_addr));
	rep = mig_chan_call(jb->ch, req, CTL_TIMEOUT_MS, errp);
	if (!rep)
		return false;
	if (!json_object_object_get_ex(rep, "port", &pv))
		return err_set(errp, ERR_PROTO, "the agent on %s sent no port", jb->j->target);
	/* Ask for the result first: the agent accepts and receives while we send. */
	req = mig_chan_req("volume-wait");
	if (!mig_chan_send(jb->ch, req, errp)) {
		json_object_put(req);
		return false;
	}
	json_object_put(req);
	fd = data_stream(jb, (unsigned)json_object_get_int(pv), errp);
	if (fd < 0)
		return false;
	sent = tp_stream_send_file(fd, v->path, &so, &fin, errp);
	shutdown(fd, SHUT_WR);
	done = mig_chan_recv(jb->ch, sent ? 120000 : 10000, sent ? errp : NULL);
	if (!sent)
		return false;
	if (!done) {
		err_prefix(errp ? *errp : NULL, "volume %s:%s", v->storage, v->volume);
		return false;
	}
	if (!json_object_object_get_ex(done, "ok", &pv) || !json_object_get_boolean(pv)) {
		struct json_object *m;

		return err_set(errp, ERR_IO, "volume %s:%s: %s", v->storage, v->volume,
			       json_object_object_get_ex(done, "error", &m) ?
				       json_object_get_string(m) : "the target refused it");
	}
	jb->p.vols_done += v->size;
	jb->p.wire_done += fin.wire_bytes;
	jb->p.data_done += fin.data_bytes;
	return true;
}

static bool offline(struct job *jb, struct err **errp)
{
	const struct mig_job *j = jb->j;
	_cleanup_json_ struct json_object *rep = NULL;

	if (!set_phase(jb, MIG_PHASE_TRANSFER, errp))
		return false;
	for (unsigned i = 0; i < j->nvolumes; i++)
		if (!send_volume(jb, i, errp))
			return false;
	if (!set_phase(jb, MIG_PHASE_SWITCHOVER, errp))
		return false;
	if (j->nvolumes) {
		rep = mig_chan_call(jb->ch, mig_chan_req("keep-volumes"), CTL_TIMEOUT_MS, errp);
		if (!rep)
			return false;
	}
	return move_owner(jb, errp);
}

/* ---- rollback and cleanup ---------------------------------------------------------- */

static void close_data(struct job *jb)
{
	for (unsigned i = 0; i < jb->ndata; i++)
		tp_ssh_close(jb->data[i]);
	jb->ndata = 0;
}

static void rollback(struct job *jb, const struct err *first)
{
	struct err *e = NULL;
	_cleanup_json_ struct json_object *rep = NULL;

	jb->p.phase = MIG_PHASE_ROLLBACK;
	log_warn("migration of guest %" PRIu32 " to %s failed (%s): rolling back", jb->j->vmid,
		 jb->j->target, first ? first->msg : "?");
	if (jb->j->hooks.progress)
		jb->j->hooks.progress(&jb->p, jb->j->hooks.opaque);
	/* Mirrors go first: the guest keeps writing to its own disks only.
	 * Their connections are cut, and the data sessions that carry them
	 * in secure mode closed, before waiting for the jobs to end. */
	mig_mirror_abort(jb->mirror);
	stop_forwarders(jb);
	close_data(jb);
	mig_mirror_end(TAKE_PTR(jb->mirror));
	/* The target QEMU goes; received volumes go with the session (the
	 * agent removes them unless the store gave it the guest). */
	if (jb->ch && jb->target_started) {
		rep = mig_chan_call(jb->ch, mig_chan_req("quit"), CTL_TIMEOUT_MS, &e);
		if (!rep) {
			log_warn("rollback: stopping the target QEMU: %s", e->msg);
			err_free(TAKE_PTR(e));
		}
	}
	/* The source: mig_raw already resumed it if it had to. */
}

static void close_sessions(struct job *jb)
{
	if (jb->ch) {
		struct json_object *rep = mig_chan_call(jb->ch, mig_chan_req("bye"), 5000, NULL);

		json_object_put(rep);
		mig_chan_close(jb->ch);
		jb->ch = NULL;
	}
	close_data(jb);
	tp_ssh_close(jb->ctl_ssh);
	jb->ctl_ssh = NULL;
}

/* ---- the job ------------------------------------------------------------------------- */

bool mig_job_run(const struct mig_job *j, struct mig_job_progress *final, struct err **errp)
{
	struct job jb = { .j = j };
	struct err *e = NULL;
	bool ok = false;

	jb.p.phase = MIG_PHASE_CHECK;
	jb.p.vmid = j->vmid;
	jb.p.online = j->online;
	jb.p.raw.downtime_ms = -1;
	for (unsigned i = 0; i < j->nvolumes; i++)
		jb.p.vols_total += j->volumes[i].size;
	jb.start_ms = util_now_ms();
	if (j->online && !j->src_qmp) {
		err_set(errp, ERR_INVAL, "online migration without the source's QMP");
		return false;
	}
	if (!open_control(&jb, &e) || !facts(&jb, &e))
		goto out;
	if (!set_phase(&jb, MIG_PHASE_PREPARE, &e) || !target_cleanup(&jb, &e))
		goto out;
	if (j->secure && (j->online || j->nvolumes) &&
	    !open_data(&jb, j->online ? 1 + (j->tune.multifd > 1 ? j->tune.multifd : 0) : 1, &e))
		goto out;
	if (!(j->online ? online(&jb, &e) : offline(&jb, &e)))
		goto out;
	if (!set_phase(&jb, MIG_PHASE_CLEANUP, &e))
		goto out;
	ok = true;
out:
	jb.p.failed_in = jb.p.phase;
	if (!ok && !jb.owner_moved && jb.p.phase == MIG_PHASE_CHECK) {
		/* A refusal: nothing started, nothing to roll back. */
		jb.p.phase = MIG_PHASE_FAILED;
	} else if (!ok && !jb.owner_moved) {
		rollback(&jb, e);
		jb.p.phase = MIG_PHASE_FAILED;
		if (j->hooks.persist)
			j->hooks.persist(MIG_PHASE_FAILED, j->hooks.opaque, NULL);
	}
	mig_mirror_end(TAKE_PTR(jb.mirror));
	close_sessions(&jb);
	stop_forwarders(&jb);
	jb.p.elapsed_ms = util_now_ms() - jb.start_ms;
	if (!ok && jb.p.target_lost) {
		jb.p.phase = MIG_PHASE_FAILED;
	} else if (ok || jb.owner_moved) {
		/* The guest is the target's: what is left here is cleanup, and
		 * its failures are warnings, not a failed migration. */
		jb.p.phase = MIG_PHASE_DONE;
		if (!ok) {
			log_error("guest %" PRIu32 " moved to %s, but: %s", j->vmid, j->target,
				  e ? e->msg : "?");
		}
	}
	if (j->hooks.progress)
		j->hooks.progress(&jb.p, j->hooks.opaque);
	if (final)
		*final = jb.p;
	if (jb.p.phase == MIG_PHASE_DONE) {
		if (!ok && e)
			snprintf(jb.p.warning, sizeof(jb.p.warning), "%s", e->msg);
		if (final)
			*final = jb.p;
		err_free(e);
		return true;
	}
	err_propagate(errp, &e);
	return false;
}
