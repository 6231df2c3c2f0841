/* migrate_recover.c - after a crashed worker: the store's owner of the
 * guest decides which side keeps it. The agent on the target already
 * acted when its session closed (resume if the guest became its node's,
 * stop otherwise); here the source side follows: resume the source QEMU
 * if the guest is still ours, stop it if it is not, and drop the record.
 * See migrate.h. */
#include "migrate.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../transport/tp_ssh.h"

#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Asks the target's agent to remove a dead agent's leftovers: 1 when the
 * guest runs there afterwards, 0 when not, -1 when the agent is out of
 * reach. */
static int target_cleanup(struct cli_ctl *x, const struct cli_mig_record *rec)
{
	int result = -1;
	struct cli_mig_peer peer;
	struct tp_ssh *ssh = NULL;
	struct mig_chan *ch = NULL;
	struct err *e = NULL;
	char cmd[512];
	struct json_object *req, *rep = NULL, *v;

	if (!cli_mig_peer_read(x, rec->target, &peer, &e))
		goto out;
	{
		struct mig_agent_addr a = {
			.node = rec->target,
			.addr = peer.addr,
			.host_key = peer.host_key,
			.ssh_key = cli_mig_ssh_key(),
			.ssh_port = cli_mig_ssh_port(),
			.remote_cmd = cli_mig_remote_cmd(cmd, sizeof(cmd)),
		};

		ch = mig_agent_connect(&a, &ssh, &e);
	}
	if (!ch)
		goto out;
	req = mig_chan_req("cleanup");
	json_object_object_add(req, "vmid", json_object_new_int64(rec->vmid));
	rep = mig_chan_call(ch, req, 30000, &e);
	if (rep && json_object_object_get_ex(rep, "action", &v))
		log_info("target %s: leftover QEMU of guest %" PRIu32 ": %s", rec->target,
			 rec->vmid, json_object_get_string(v));
	if (rep)
		result = json_object_object_get_ex(rep, "running", &v) && json_object_get_boolean(v);
	json_object_put(rep);
	json_object_put(mig_chan_call(ch, mig_chan_req("bye"), 5000, NULL));
out:
	if (e) {
		log_warn("cannot reach the agent on %s to clean up (%s); a paused target QEMU "
			 "may be left there", rec->target, e->msg);
		err_free(e);
	}
	mig_chan_close(ch);
	tp_ssh_close(ssh);
	cli_mig_peer_free(&peer);
	return result;
}

static bool source_side(uint32_t vmid, bool owner_here, bool was_running, struct err **errp)
{
	char dir[512];
	struct mig_qemu *q;
	_cleanup_json_ struct json_object *st = NULL;
	struct json_object *running, *status;

	if (!cli_ctl_running(vmid, NULL))
		return true;
	q = mig_qemu_attach(cli_ctl_run_dir(vmid, dir, sizeof(dir)), 5000, errp);
	if (!q)
		return false;
	if (!owner_here) {
		log_warn("guest %" PRIu32 " belongs to the target now: stopping its old QEMU here",
			 vmid);
		return mig_qemu_stop(q, 10000, errp);
	}
	tp_qmp_run(q->qmp, "migrate_cancel", NULL, 5000, NULL);
	/* The dead worker's mirrors (local disks) end here, not at the next
	 * migration: a mirror to a gone target must not hold the disks. */
	if (!mig_mirror_sweep(q->qmp, errp)) {
		mig_qemu_release(q);
		return false;
	}
	st = tp_qmp_call(q->qmp, "query-status", NULL, 5000, errp);
	if (!st) {
		mig_qemu_release(q);
		return false;
	}
	if (was_running && !(json_object_object_get_ex(st, "running", &running) &&
			     json_object_get_boolean(running))) {
		/* Give a cancelled migration a moment to leave its states. */
		for (int i = 0; i < 100; i++) {
			_cleanup_json_ struct json_object *qm =
				tp_qmp_call(q->qmp, "query-migrate", NULL, 5000, NULL);

			if (!qm || !json_object_object_get_ex(qm, "status", &status) ||
			    (strcmp(json_object_get_string(status), "cancelling") &&
			     strcmp(json_object_get_string(status), "active")))
				break;
			usleep(20000);
		}
		if (!tp_qmp_run(q->qmp, "cont", NULL, 5000, errp)) {
			mig_qemu_release(q);
			return false;
		}
		log_warn("guest %" PRIu32 " resumed on this node after a crashed migration", vmid);
	}
	mig_qemu_release(q);
	return true;
}

/* The dead worker's forwarding sockets in the guest's run directory
 * (secure mode: "<what>-<pid>.sock", see mig_job.c). */
static void remove_worker_sockets(uint32_t vmid, pid_t pid)
{
	char dir[512], pattern[600];
	glob_t g;

	snprintf(pattern, sizeof(pattern), "%s/*-%d.sock", cli_ctl_run_dir(vmid, dir, sizeof(dir)),
		 (int)pid);
	if (glob(pattern, 0, NULL, &g) != 0)
		return;
	for (size_t i = 0; i < g.gl_pathc; i++)
		unlink(g.gl_pathv[i]);
	globfree(&g);
}

/* The record of vmid's migration if its worker is dead (rec->vmid 0: no
 * record); an error if it is another node's or its worker lives. */
static bool record_of_dead_worker(struct cli_ctl *x, uint32_t vmid, struct cli_mig_record *rec,
				  struct err **errp)
{
	struct err *e = NULL;

	if (!cli_mig_record_read(x->c, vmid, rec, NULL, &e)) {
		if (e->code == ERR_NOTFOUND) {
			err_free(e);
			rec->vmid = 0;
			return true;
		}
		err_propagate(errp, &e);
		return false;
	}
	if (strcmp(rec->source, x->node))
		return err_set(errp, ERR_STATE, "guest %" PRIu32 " has an unfinished migration "
			       "from %s to %s (phase %s): run vmmigrate on %s to clean it up",
			       vmid, rec->source, rec->target, rec->phase, rec->source);
	if (rec->pid != getpid() && cli_mig_worker_alive(rec->pid))
		return err_set(errp, ERR_STATE, "guest %" PRIu32 " is being migrated to %s by "
			       "pid %d (phase %s)", vmid, rec->target, (int)rec->pid, rec->phase);
	return true;
}

bool cli_migrate_recover(struct cli_ctl *x, uint32_t vmid, struct err **errp)
{
	_cleanup_free_ struct clu_guest_rec *g = calloc(1, sizeof(*g));
	_cleanup_close_ int lock_fd = -1;
	struct cli_mig_record rec;
	struct err *e = NULL;
	bool owner_here;
	int there;

	if (!g)
		return err_set(errp, ERR_IO, "out of memory");
	if (!record_of_dead_worker(x, vmid, &rec, errp))
		return false;
	if (!rec.vmid)
		return true;
	/* One recovery at a time (vmmd's sweep and a vmmigrate may both
	 * find the record): under the local lock, which a live worker holds
	 * too, the record is read again. */
	if (x->lock_fd < 0 && !cli_ctl_local_lock(vmid, &lock_fd, errp))
		return false;
	if (!record_of_dead_worker(x, vmid, &rec, errp))
		return false;
	if (!rec.vmid)
		return true;
	if (!clu_guest_read(x->c, vmid, g, errp))
		return false;
	owner_here = !strcmp(g->node, x->node);
	log_warn("guest %" PRIu32 ": cleaning up after a crashed migration to %s (worker pid "
		 "%d died in phase %s; the store says the guest is %s's)", vmid, rec.target,
		 (int)rec.pid, rec.phase, g->node);
	/* Target first: its QEMU must be gone before ours may run again. */
	there = target_cleanup(x, &rec);
	if (!owner_here && there == 0 && cli_ctl_running(vmid, NULL)) {
		/* The owner moved but the target has no QEMU: the only copy of
		 * the guest is the paused source. Take it back. */
		log_warn("guest %" PRIu32 " belongs to %s, which does not run it: taking it back",
			 vmid, rec.target);
		snprintf(g->node, sizeof(g->node), "%s", x->node);
		for (unsigned i = 0; i < rec.nmoved; i++)
			snprintf(g->conf.disks[rec.moved[i].conf].storage,
				 sizeof(g->conf.disks[0].storage), "%s", rec.moved[i].storage);
		if (!clu_guest_update(x->c, g, errp))
			return false;
		owner_here = true;
		/* Asked again now that the guest is not its: the target removes
		 * the volumes it made for it. */
		target_cleanup(x, &rec);
	} else if (!owner_here && there < 0 && cli_ctl_running(vmid, NULL)) {
		return err_set(errp, ERR_STATE, "guest %" PRIu32 " belongs to %s, which cannot be "
			       "asked whether it runs it; leaving the paused QEMU here alone", vmid,
			       rec.target);
	}
	if (!source_side(vmid, owner_here, rec.was_running, errp))
		return false;
	/* The target owns the guest and its copies of the moved volumes: the
	 * source's go, as after a migration that ended well. */
	for (unsigned i = 0; !owner_here && i < rec.nmoved; i++) {
		if (unlink(rec.moved[i].path) == 0)
			log_warn("guest %" PRIu32 ": removed the source volume %s", vmid,
				 rec.moved[i].path);
		else if (errno != ENOENT)
			log_warn("guest %" PRIu32 ": cannot remove the source volume %s: %m", vmid,
				 rec.moved[i].path);
	}
	remove_worker_sockets(vmid, rec.pid);
	if (!cli_mig_record_delete(x->c, vmid, errp))
		return false;
	/* The dead worker's guest lock is this node's: with the local lock
	 * held, nobody else here holds it, so it goes now instead of when it
	 * expires (a caller that holds the local lock has the guest lock too). */
	if (lock_fd >= 0 && !clu_guest_unlock(x->c, vmid, &e)) {
		log_warn("guest %" PRIu32 ": cannot release the dead worker's lock (it expires "
			 "within %d s): %s", vmid, CLU_GUEST_LOCK_TTL_MS / 1000, e->msg);
		err_free(e);
	}
	return true;
}

/* ---- vmmd's sweep ---------------------------------------------------------- */

static bool sweep_one(const struct cli_mig_record *r, const char *text, void *opaque)
{
	struct cli_ctl *x = opaque;
	struct err *e = NULL;

	(void)text;
	if (strcmp(r->source, x->node) || cli_mig_worker_alive(r->pid))
		return true;
	if (!cli_migrate_recover(x, r->vmid, &e)) {
		log_warn("guest %" PRIu32 ": recovery after a crashed migration: %s", r->vmid,
			 e->msg);
		err_free(e);
	}
	return true;
}

void cli_migrate_sweep(struct cli_ctl *x)
{
	struct err *e = NULL;

	if (!cli_mig_record_list(x->c, sweep_one, x, &e))
		err_free(e);
}
