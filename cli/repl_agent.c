/*
 * repl_agent.c - `vmrepl _agent`: the target node's half of a replication
 * run, started by the worker over SSH with the control channel on its
 * stdin/stdout (JSON lines, migrate/mig_agent.c; logs on stderr).
 *
 * Requests:
 *   hello                         -> node
 *   address {cidr}                -> this node's one address in it
 *   replica-info {job,vmid,storage,volume}
 *                                 -> {gen,time,size,job} after recovering an
 *                                    interrupted update (gen 0: none)
 *   recv {job,vmid,storage,volume,size,gen,time,mode,bind,peer} -> port
 *   recv-wait                     -> receives the stream on that port and
 *                                    applies it: mode "create" starts the
 *                                    replica over (a previous replica of
 *                                    the same job is replaced; any other
 *                                    file there is refused), "update" makes
 *                                    generation gen out of gen - 1
 *   remove {job,vmid}             -> the job's replicas of the guest's disks
 *   release {job,vmid}            -> after a migration of the guest to this
 *                                    node: the job's replicas of its disks
 *                                    are its live disks now (side files go)
 *   manifest-put {job,drive,gen,size,total,offset,data}
 *                                 -> after such a migration this node is the
 *                                    job's source: the block hashes of the
 *                                    replica, in base64 pieces, kept once
 *                                    the last piece came and they verify
 *   bye
 * A guest owned by this node is never written: its disks are live here.
 */
#include "repl.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../migrate/mig_host.h"
#include "../transport/tp_net.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ACCEPT_MS 30000

struct agent {
	struct cli_ctl x;
	struct mig_chan *ch;
	int lfd;                 /* listener of the stream being received */
	char *path;              /* ... its replica */
	struct repl_replica_info next;
	bool create;
	struct repl_mani_rx mani; /* a manifest being received */
	struct repl_replica_pending pend; /* an update to settle after its reply */
};

/* The guest must not be this node's: a replica is never a live disk. */
static bool not_ours(struct agent *ag, struct json_object *req, uint32_t *vmid,
		     struct err **errp)
{
	_cleanup_free_ struct clu_guest_rec *g = calloc(1, sizeof(*g));
	int64_t v;

	if (!g)
		return err_set(errp, ERR_IO, "out of memory");
	if (!cli_mig_jint(req, "vmid", &v) || v < CLU_VMID_MIN || v > CLU_VMID_MAX)
		return err_set(errp, ERR_PROTO, "request without a valid vmid");
	*vmid = (uint32_t)v;
	/* Every request that touches a replica asks this first: a vmmd
	 * restarted meanwhile (as systemd does) is waited for, 10 s. */
	if (!clu_guest_read(ag->x.c, *vmid, g, NULL) &&
	    (!cli_ctl_reconnect(&ag->x, 10000, errp) || !clu_guest_read(ag->x.c, *vmid, g, errp)))
		return false;
	if (!strcmp(g->node, ag->x.node))
		return err_set(errp, ERR_STATE, "guest %" PRIu32 " is owned by %s, the target: "
			       "its disks there are live, not replicas", *vmid, ag->x.node);
	return true;
}

/* The replica's path: the volume on the storage of the same ID here. */
static char *replica_path(struct agent *ag, const char *sid, const char *vol, struct err **errp)
{
	struct cli_ctl_storages st;
	struct clu_guest_disk d = { .present = true };
	char *path = NULL;

	if (!sid || !vol) {
		err_set(errp, ERR_PROTO, "request without storage and volume");
		return NULL;
	}
	if (!cli_ctl_storages_read(&ag->x, &st, errp))
		return NULL;
	snprintf(d.storage, sizeof(d.storage), "%s", sid);
	snprintf(d.volume, sizeof(d.volume), "%s", vol);
	if (cli_ctl_storage_usable(&ag->x, &st, sid, errp))
		path = cli_ctl_disk_path(&st, &d, errp);
	cli_ctl_storages_free(&st);
	return path;
}

static struct json_object *do_address(struct json_object *req, struct err **errp)
{
	const char *cidr = cli_mig_jstr(req, "cidr");
	struct json_object *rep;
	char addr[64];

	if (!cidr || !mig_host_addr_in(cidr, addr, sizeof(addr), errp))
		return cidr ? NULL : (err_set(errp, ERR_PROTO, "address needs cidr"), NULL);
	rep = mig_chan_ok();
	json_object_object_add(rep, "address", json_object_new_string(addr));
	return rep;
}

static struct json_object *do_info(struct agent *ag, struct json_object *req, struct err **errp)
{
	_cleanup_free_ char *path = NULL;
	struct repl_replica_info info;
	struct json_object *rep;
	const char *job = cli_mig_jstr(req, "job");
	uint32_t vmid;

	if (!not_ours(ag, req, &vmid, errp) ||
	    !(path = replica_path(ag, cli_mig_jstr(req, "storage"), cli_mig_jstr(req, "volume"), errp)) ||
	    !repl_replica_recover(path, &info, errp))
		return NULL;
	rep = mig_chan_ok();
	/* Another job's replica (or none) is generation 0 to this job. */
	json_object_object_add(rep, "gen", json_object_new_uint64(
				       job && !strcmp(info.job, job) ? info.gen : 0));
	json_object_object_add(rep, "time", json_object_new_int64(info.time));
	json_object_object_add(rep, "size", json_object_new_uint64(info.size));
	json_object_object_add(rep, "job", json_object_new_string(info.job));
	return rep;
}

static struct json_object *do_recv(struct agent *ag, struct json_object *req, struct err **errp)
{
	const char *job = cli_mig_jstr(req, "job"), *mode = cli_mig_jstr(req, "mode");
	const char *bind = cli_mig_jstr(req, "bind"), *peer = cli_mig_jstr(req, "peer");
	_cleanup_free_ char *path = NULL, *dir = NULL;
	struct repl_replica_info cur;
	struct json_object *rep;
	int64_t size = 0, gen = 0, t = 0;
	unsigned port = 0;
	uint32_t vmid;

	if (ag->path) {
		err_set(errp, ERR_STATE, "a stream is already expected");
		return NULL;
	}
	if (!job || !mode || !bind || !cli_mig_jint(req, "size", &size) || size <= 0 ||
	    !cli_mig_jint(req, "gen", &gen) || gen <= 0 || !cli_mig_jint(req, "time", &t) ||
	    (strcmp(mode, "create") && strcmp(mode, "update"))) {
		err_set(errp, ERR_PROTO, "recv needs job, size, gen, time, mode and bind");
		return NULL;
	}
	if (!not_ours(ag, req, &vmid, errp) ||
	    !(path = replica_path(ag, cli_mig_jstr(req, "storage"), cli_mig_jstr(req, "volume"), errp)) ||
	    !repl_replica_recover(path, &cur, errp))
		return NULL;
	if (!strcmp(mode, "create")) {
		struct stat sb;

		/* Starting over: only a replica of this job may be replaced. */
		if (cur.gen && strcmp(cur.job, job)) {
			err_set(errp, ERR_CONFLICT, "%s holds a replica of job %s, not %s", path,
				cur.job, job);
			return NULL;
		}
		if (!cur.gen && stat(path, &sb) == 0) {
			err_set(errp, ERR_CONFLICT, "%s exists on %s and is not a replica", path,
				ag->x.node);
			return NULL;
		}
		if (cur.gen && !repl_replica_remove(path, errp))
			return NULL;
		dir = strdup(path);
		if (!dir || !util_mkdir_p(dirname(dir), 0750, errp))
			return dir ? NULL : (err_set(errp, ERR_IO, "out of memory"), NULL);
	} else if (strcmp(cur.job, job) || cur.gen + 1 != (uint64_t)gen) {
		err_set(errp, ERR_STATE, "replica %s is at generation %" PRIu64 " of job '%s', not "
			"%" PRId64 " of %s", path, cur.gen, cur.job, gen - 1, job);
		return NULL;
	}
	ag->lfd = tp_net_listen(bind, peer, &port, errp);
	if (ag->lfd < 0)
		return NULL;
	ag->next = (struct repl_replica_info){ .gen = (uint64_t)gen, .time = t,
					       .size = (uint64_t)size };
	snprintf(ag->next.job, sizeof(ag->next.job), "%s", job);
	ag->create = !strcmp(mode, "create");
	ag->path = TAKE_PTR(path);
	rep = mig_chan_ok();
	json_object_object_add(rep, "port", json_object_new_int((int)port));
	return rep;
}

/* Waits up to timeout_ms for the stream's connection on lfd, watching the
 * control channel (stdin) meanwhile: a source that died before it
 * connected hangs it up, and the replica is not held for the rest of the
 * wait. True (and *errp) if the source went or nothing came. */
static bool sender_gone_waiting(int lfd, int timeout_ms, struct err **errp)
{
	struct pollfd p[2] = { { .fd = lfd, .events = POLLIN },
			       { .fd = STDIN_FILENO, .events = POLLRDHUP } };
	int64_t end = util_now_ms() + timeout_ms;

	for (;;) {
		int left = (int)(end - util_now_ms()), r;

		if (left <= 0)
			return err_set(errp, ERR_TIMEOUT, "no stream came within %d s", timeout_ms / 1000);
		r = poll(p, 2, left);
		if (r < 0 && errno != EINTR)
			return err_set_errno(errp, errno, "waiting for the stream");
		if (r > 0 && (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
			return err_set(errp, ERR_IO, "the source went away before its stream came");
		if (r > 0 && (p[0].revents & POLLIN))
			return false;
	}
}

static struct json_object *do_recv_wait(struct agent *ag, struct err **errp)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *path = TAKE_PTR(ag->path);
	struct tp_stream_progress fin = { 0 };
	struct json_object *rep;
	char peer[64];
	bool ok;

	if (!path) {
		err_set(errp, ERR_STATE, "recv-wait before recv");
		return NULL;
	}
	if (sender_gone_waiting(ag->lfd, ACCEPT_MS, errp))
		fd = -1;
	else
		fd = tp_net_accept(ag->lfd, 0, peer, sizeof(peer), errp);
	close(ag->lfd);
	ag->lfd = -1;
	if (fd < 0)
		return NULL;
	/* An update's leftovers go after the reply (dispatch's caller). */
	ok = ag->create ? repl_replica_create(path, fd, &ag->next, &fin, errp) :
			  repl_replica_update_durable(path, fd, &ag->next, &ag->pend, &fin, errp);
	if (!ok)
		return NULL;
	log_info("replica %s: generation %" PRIu64 " of job %s (%" PRIu64 " bytes)", path,
		 ag->next.gen, ag->next.job, fin.wire_bytes);
	rep = mig_chan_ok();
	json_object_object_add(rep, "wire_bytes", json_object_new_uint64(fin.wire_bytes));
	json_object_object_add(rep, "data_bytes", json_object_new_uint64(fin.data_bytes));
	return rep;
}

/* What an update left for after its reply: the replica's fsync, its
 * generation recorded, the side files removed (a failure here is logged:
 * the next recovery of the replica finishes it). */
static void tidy(struct agent *ag)
{
	struct err *e = NULL;

	if (!repl_replica_settle(&ag->pend, &e)) {
		log_warn("replica %s: %s", ag->pend.path, e->msg);
		err_free(e);
	}
}

static struct json_object *do_remove(struct agent *ag, struct json_object *req,
				     struct err **errp)
{
	_cleanup_free_ struct clu_guest_rec *g = calloc(1, sizeof(*g));
	const char *job = cli_mig_jstr(req, "job");
	unsigned removed = 0;
	struct json_object *rep;
	uint32_t vmid;

	if (!g || !job || !not_ours(ag, req, &vmid, errp) || !clu_guest_read(ag->x.c, vmid, g, errp))
		return g && job ? NULL : (err_set(errp, ERR_PROTO, "remove needs job and vmid"), NULL);
	for (int i = 0; i < CLU_GUEST_DISKS; i++) {
		const struct clu_guest_disk *d = &g->conf.disks[i];
		_cleanup_free_ char *path = NULL;
		struct repl_replica_info info;
		struct err *e = NULL;

		if (!d->present || !(path = replica_path(ag, d->storage, d->volume, &e)) ||
		    !repl_replica_recover(path, &info, &e)) {
			err_free(e);
			continue;
		}
		if (info.gen && !strcmp(info.job, job) && repl_replica_remove(path, &e))
			removed++;
		err_free(e);
	}
	rep = mig_chan_ok();
	json_object_object_add(rep, "removed", json_object_new_int((int)removed));
	return rep;
}

/* The guest must be this node's now (it migrated here onto its replicas). */
static struct json_object *do_release(struct agent *ag, struct json_object *req,
				      struct err **errp)
{
	_cleanup_free_ struct clu_guest_rec *g = calloc(1, sizeof(*g));
	const char *job = cli_mig_jstr(req, "job");
	unsigned released = 0;
	struct json_object *rep;
	int64_t v;

	if (!g || !job || !cli_mig_jint(req, "vmid", &v) || v < CLU_VMID_MIN || v > CLU_VMID_MAX) {
		err_set(errp, g ? ERR_PROTO : ERR_IO, g ? "release needs job and vmid" :
			"out of memory");
		return NULL;
	}
	if (!clu_guest_read(ag->x.c, (uint32_t)v, g, errp))
		return NULL;
	if (strcmp(g->node, ag->x.node)) {
		err_set(errp, ERR_STATE, "guest %" PRId64 " is owned by %s, not by %s", v, g->node,
			ag->x.node);
		return NULL;
	}
	for (int i = 0; i < CLU_GUEST_DISKS; i++) {
		const struct clu_guest_disk *d = &g->conf.disks[i];
		_cleanup_free_ char *path = NULL;
		struct repl_replica_info info;
		struct err *e = NULL;

		if (!d->present)
			continue;
		if (!(path = replica_path(ag, d->storage, d->volume, &e)) ||
		    !repl_replica_recover(path, &info, &e) ||
		    (info.gen && !strcmp(info.job, job) && !repl_replica_release(path, &e))) {
			err_propagate(errp, &e);
			return NULL;
		}
		released += info.gen && !strcmp(info.job, job);
	}
	log_info("guest %" PRId64 ": %u replica(s) of job %s are its disks now", v, released, job);
	rep = mig_chan_ok();
	json_object_object_add(rep, "released", json_object_new_int((int)released));
	return rep;
}

static struct json_object *do_manifest_put(struct agent *ag, struct json_object *req,
					   struct err **errp)
{
	const char *job = cli_mig_jstr(req, "job"), *data = cli_mig_jstr(req, "data");
	int64_t drive = -1, gen = 0, size = 0, total = 0, off = -1;
	char path[1100], tmp[1200], dir[1100];
	uint32_t vmid;
	bool whole = false;

	/* repl_agent_req_check() made sure of the fields. */
	cli_mig_jint(req, "drive", &drive);
	cli_mig_jint(req, "gen", &gen);
	cli_mig_jint(req, "size", &size);
	cli_mig_jint(req, "total", &total);
	cli_mig_jint(req, "offset", &off);
	if (!cli_repl_id(job, &vmid, errp) ||
	    !repl_mani_rx_add(&ag->mani, (size_t)total, (size_t)off, data, &whole, errp))
		return NULL;
	if (!whole)
		return mig_chan_ok();
	/* Whole: kept only if it is a manifest of that size and generation. */
	cli_repl_manifest_path(job, (unsigned)drive, path, sizeof(path));
	snprintf(dir, sizeof(dir), "%s/repl/%s", cli_ctl_data_dir(), job);
	snprintf(tmp, sizeof(tmp), "%s.in", path);
	{
		struct repl_manifest *m = NULL;
		bool ok = util_mkdir_p(dir, 0700, errp) &&
			  util_write_file_bytes(tmp, ag->mani.buf, ag->mani.len, 0600, errp) &&
			  (m = repl_manifest_load(tmp, (uint64_t)size, (uint64_t)gen, errp));

		repl_manifest_free(m);
		repl_mani_rx_free(&ag->mani);
		if (ok && rename(tmp, path) < 0)
			ok = err_set_errno(errp, errno, "rename '%s'", tmp);
		if (!ok) {
			unlink(tmp);
			return NULL;
		}
	}
	log_info("job %s: block hashes of drive %" PRId64 " (generation %" PRId64 ") kept", job,
		 drive, gen);
	return mig_chan_ok();
}

static struct json_object *dispatch(struct agent *ag, const char *cmd, struct json_object *req,
				    bool *bye, struct err **errp)
{
	if (!strcmp(cmd, "hello")) {
		struct json_object *rep = mig_chan_ok();

		json_object_object_add(rep, "node", json_object_new_string(ag->x.node));
		json_object_object_add(rep, "pid", json_object_new_int((int)getpid()));
		return rep;
	}
	if (!strcmp(cmd, "address"))
		return do_address(req, errp);
	if (!strcmp(cmd, "replica-info"))
		return do_info(ag, req, errp);
	if (!strcmp(cmd, "recv"))
		return do_recv(ag, req, errp);
	if (!strcmp(cmd, "recv-wait"))
		return do_recv_wait(ag, errp);
	if (!strcmp(cmd, "remove"))
		return do_remove(ag, req, errp);
	if (!strcmp(cmd, "release"))
		return do_release(ag, req, errp);
	if (!strcmp(cmd, "manifest-put"))
		return do_manifest_put(ag, req, errp);
	if (!strcmp(cmd, "bye")) {
		*bye = true;
		return mig_chan_ok();
	}
	{
		char safe[40];

		err_set(errp, ERR_PROTO, "unknown request '%s'", util_printable(cmd, safe, sizeof(safe)));
	}
	return NULL;
}

int cli_repl_agent(void)
{
	struct agent ag = { .lfd = -1, .pend = { .dfd = -1 } };
	struct err *e = NULL;
	bool bye = false;

	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	ag.x.lock_fd = -1;
	ag.ch = mig_chan_open(STDIN_FILENO, STDOUT_FILENO);
	if (!ag.ch || !cli_ctl_open(&ag.x, &e)) {
		log_error("agent: %s", e ? e->msg : "out of memory");
		if (ag.ch && e) {
			_cleanup_json_ struct json_object *f = mig_chan_fail(e);

			mig_chan_send(ag.ch, f, NULL);
		}
		err_free(e);
		mig_chan_close(ag.ch);
		return 1;
	}
	/* From here on this node keeps the log (the worker's SSH session may
	 * be gone when something is worth reading). */
	{
		char dir[1024], path[1100];
		int fd;

		snprintf(dir, sizeof(dir), "%s/repl", cli_ctl_data_dir());
		snprintf(path, sizeof(path), "%s/agent.log", dir);
		if (util_mkdir_p(dir, 0700, NULL) &&
		    (fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) >= 0) {
			dup2(fd, STDERR_FILENO);
			close(fd);
		}
		log_info("agent pid %d: session from a replication worker", (int)getpid());
	}
	while (!bye) {
		_cleanup_json_ struct json_object *req = mig_chan_recv(ag.ch, -1, &e);
		_cleanup_json_ struct json_object *rep = NULL;
		const char *cmd;

		if (!req) {
			err_free(TAKE_PTR(e));
			break;
		}
		cmd = cli_mig_jstr(req, "cmd");
		/* An update answered before settles before anything else is
		 * done (the next disk, a release ...), and on bye only after
		 * the session: not at once after its reply, where its fsync would
		 * hold up the source's last store writes when both nodes share
		 * a disk. */
		if (!cmd || strcmp(cmd, "bye"))
			tidy(&ag);
		/* The whole request is checked before anything is done for it. */
		if (repl_agent_req_check(req, &e))
			rep = dispatch(&ag, cmd, req, &bye, &e);
		if (!rep) {
			log_warn("agent: %s: %s", cmd ? cmd : "?", e->msg);
			rep = mig_chan_fail(e);
			err_free(TAKE_PTR(e));
		}
		if (!mig_chan_send(ag.ch, rep, &e)) {
			err_free(TAKE_PTR(e));
			break;
		}
	}
	tidy(&ag);
	if (ag.lfd >= 0)
		close(ag.lfd);
	free(ag.path);
	repl_mani_rx_free(&ag.mani);
	cli_ctl_close(&ag.x);
	mig_chan_close(ag.ch);
	return 0;
}
