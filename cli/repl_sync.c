/*
 * repl_sync.c - one run of a replication job, on its source node (the
 * guest's owner): `vmrepl run --id ID`, started by the scheduler or by
 * hand. See repl.h and docs/vmrepl.md.
 *
 *   lock the guest (a migration of it waits; a migration in progress
 *   makes this run skip) -> state "syncing" -> control session to the
 *   target's `vmrepl _agent` (SSH, pinned host key) -> per local disk:
 *     the replica's generation there (after its crash recovery)
 *     the disk as of one instant: QEMU's fleecing view (running guest) or
 *       the file (stopped guest)
 *     which blocks: all (first sync, or the replica is not the one we
 *       last made), dirty since the last sync (bitmap), or differing from
 *       the last sync's hashes (stopped guest, or a raw disk whose bitmap
 *       went with a QEMU restart)
 *     a tp_stream to the agent (TCP to its migration address, or an SSH
 *       channel), which makes it the replica's next generation atomically
 *   -> the hashes saved -> state "ok" (or "error" with the retry count)
 *
 * Failure anywhere leaves the replica at its previous generation (the
 * target's replica code guarantees it) and keeps every dirty block for the
 * next run (repl_fleece_end(false) merges the bitmaps).
 */
#include "repl.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../migrate/mig_host.h"
#include "../transport/tp_net.h"
#include "../transport/tp_ssh.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CTL_TIMEOUT_MS 30000
#define RECV_TIMEOUT_MS 600000 /* the agent's verdict after the stream ended */
#define RENEW_EVERY_MS 20000
#define RECORD_WAIT_MS 30000  /* the outcome through a vmmd restart or a quorum gap */

struct disk {
	unsigned conf;            /* index in conf.disks (virtio<conf>) */
	unsigned drive;           /* the launcher's drive<N> */
	const struct clu_guest_disk *d;
	char *path;               /* the source file */
	uint64_t size;
	/* hashes left for later (a migration's last sync): the extents sent
	 * to make generation hashed_gen + 1 out of the manifest's hashed_gen */
	struct tp_extent *later;
	size_t nlater;
	uint64_t hashed_gen;
};

struct sync {
	struct cli_ctl *x;
	const struct clu_repl_job *job;
	struct clu_guest_rec g;
	struct repl_job_state st;
	struct disk disks[CLU_GUEST_DISKS];
	unsigned nd;
	FILE *logf;
	struct cli_mig_peer peer;
	struct tp_ssh *ctl_ssh, *data_ssh;
	struct mig_chan *ch;
	char target_addr[64], source_addr[64];
	bool secure;
	struct mig_qemu *q;       /* running guest: its QEMU, attached by us */
	struct tp_qmp *qmp;       /* running guest: QMP (q's, or a migration's) */
	char run_dir[512];
	int64_t instant;          /* the point in time of this sync */
	uint64_t bytes;
	int64_t renew_ms;         /* next renewal of the guest lock */
	uint64_t new_gen;         /* the replicas' generation after this run */
	bool hashes_later;        /* this pass: no block hashes (guest paused) */
	/* The agent's session, opened on a thread of its own (agent_start)
	 * while this one locks the guest and prepares the disks; until
	 * agent_join the thread alone touches peer, ctl_ssh, data_ssh, ch,
	 * secure and the addresses. */
	struct {
		bool started, joined;
		pthread_t th;
		char remote[512];
		char cidr[64];            /* datacenter.cfg's migration network, or "" */
		struct err *e;            /* preparing or opening it failed */
		int pid;                  /* the agent's, for the log */
	} ag;
};

/* Logged to stderr (the caller's log) and to the job's log file. */
static void say(struct sync *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(struct sync *s, const char *fmt, ...)
{
	char msg[1024], stamp[32];
	time_t now = time(NULL);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_info("%s: %s", s->job->id, msg);
	if (s->logf) {
		strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", localtime(&now));
		fprintf(s->logf, "%s %s: %s\n", stamp, s->job->id, msg);
		fflush(s->logf);
	}
}

static void open_log(struct sync *s)
{
	char dir[1024], path[1100];
	struct err *e = NULL;

	snprintf(dir, sizeof(dir), "%s/repl/%s", cli_ctl_data_dir(), s->job->id);
	if (!util_mkdir_p(dir, 0700, &e)) {
		log_warn("%s: no log file: %s", s->job->id, e->msg);
		err_free(e);
		return;
	}
	snprintf(path, sizeof(path), "%s/log", dir);
	s->logf = fopen(path, "we");
}

void cli_repl_manifest_path(const char *job, unsigned drive, char *buf, size_t len)
{
	snprintf(buf, len, "%s/repl/%s/drive%u.manifest", cli_ctl_data_dir(), job, drive);
}

static void manifest_path(const struct sync *s, unsigned drive, char *buf, size_t len)
{
	cli_repl_manifest_path(s->job->id, drive, buf, len);
}

/* ---- the guest's disks ------------------------------------------------------------- */

static bool local_disks(struct sync *s, struct err **errp)
{
	struct cli_ctl_storages st;
	unsigned drive = 0;
	bool ok = true;

	if (!cli_ctl_storages_read(s->x, &st, errp))
		return false;
	for (int i = 0; i < CLU_GUEST_DISKS && ok; i++) {
		const struct clu_guest_disk *d = &s->g.conf.disks[i];
		const struct clu_storage *so;
		struct disk *k;
		int fd;

		if (!d->present)
			continue;
		drive++;
		so = clu_storage_find(&st.sc, d->storage);
		/* Shared disks need no copy; replicate=0 opts a disk out. */
		if (!d->replicate || (so && so->shared))
			continue;
		k = &s->disks[s->nd];
		*k = (struct disk){ .conf = (unsigned)i, .drive = drive - 1, .d = d };
		k->path = cli_ctl_disk_path(&st, d, errp);
		if (!k->path) {
			ok = false;
			break;
		}
		/* The guest's size of it: a qcow2 image's virtual size. */
		fd = open(k->path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || !repl_vol_size(k->path, fd, util_volume_is_qcow2(k->path), &k->size, errp)) {
			if (fd < 0)
				err_set_errno(errp, errno, "disk %s:%s: '%s'", d->storage, d->volume,
					      k->path);
			if (fd >= 0)
				close(fd);
			free(k->path);
			ok = false;
			break;
		}
		close(fd);
		s->nd++;
	}
	cli_ctl_storages_free(&st);
	if (ok && !s->nd)
		return err_set(errp, ERR_STATE, "guest %" PRIu32 " has no local disk to replicate",
			       s->g.vmid);
	return ok;
}

/* ---- the target's agent -------------------------------------------------------------- */

/* The store's part, on the caller's thread (the store client is not
 * shared): who and where the target is, which way the data goes. */
static bool agent_prepare(struct sync *s, struct err **errp)
{
	struct clu_datacenter dc;
	char *slash;

	if (!cli_mig_peer_read(s->x, s->job->target, &s->peer, errp))
		return false;
	if (!s->peer.online)
		return err_set(errp, ERR_STATE, "target node %s is offline", s->job->target);
	cli_mig_remote_cmd(s->ag.remote, sizeof(s->ag.remote));
	slash = strrchr(s->ag.remote, '/');
	if (slash && (size_t)(slash - s->ag.remote) + sizeof("/vmrepl") <= sizeof(s->ag.remote))
		strcpy(slash + 1, "vmrepl");
	/* The data goes the way migrations go: datacenter.cfg's type and
	 * network (the target's one address in it), else the cluster link. */
	if (!clu_datacenter_read(s->x->c, &dc, errp))
		return false;
	s->secure = dc.migration_type != CLU_MIGRATION_INSECURE;
	snprintf(s->target_addr, sizeof(s->target_addr), "%s", s->peer.addr);
	if (dc.has_migration_network) {
		clu_cidr_format(&dc.migration_network, s->ag.cidr, sizeof(s->ag.cidr));
	} else {
		struct cli_mig_peer self;

		if (!cli_mig_peer_read(s->x, s->x->node, &self, errp))
			return false;
		snprintf(s->source_addr, sizeof(s->source_addr), "%s", self.addr);
		cli_mig_peer_free(&self);
	}
	return true;
}

/* The SSH part: the control session to the target's agent, the address
 * there, and the data's own session if it goes elsewhere. */
static bool agent_open(struct sync *s, struct err **errp)
{
	_cleanup_json_ struct json_object *rep = NULL, *hi = NULL;
	struct mig_agent_addr a = {
		.node = s->job->target, .addr = s->peer.addr, .host_key = s->peer.host_key,
		.ssh_key = cli_mig_ssh_key(), .ssh_port = cli_mig_ssh_port(), .remote_cmd = s->ag.remote,
	};
	struct json_object *v;

	s->ch = mig_agent_connect(&a, &s->ctl_ssh, errp);
	if (!s->ch || !(hi = mig_chan_call(s->ch, mig_chan_req("hello"), CTL_TIMEOUT_MS, errp)))
		return false;
	if (json_object_object_get_ex(hi, "pid", &v))
		s->ag.pid = json_object_get_int(v);
	if (s->ag.cidr[0]) {
		struct json_object *req = mig_chan_req("address");

		json_object_object_add(req, "cidr", json_object_new_string(s->ag.cidr));
		rep = mig_chan_call(s->ch, req, CTL_TIMEOUT_MS, errp);
		if (!rep || !mig_host_addr_in(s->ag.cidr, s->source_addr, sizeof(s->source_addr), errp))
			return false;
		if (json_object_object_get_ex(rep, "address", &v) &&
		    json_object_is_type(v, json_type_string))
			snprintf(s->target_addr, sizeof(s->target_addr), "%s", json_object_get_string(v));
	}
	/* The data goes over a session of its own to the migration address;
	 * when that is the control session's address, over the control
	 * session (one handshake less). */
	if (s->secure && strcmp(s->target_addr, s->peer.addr)) {
		struct tp_ssh_opts o = {
			.host = s->target_addr, .port = cli_mig_ssh_port(), .user = "root",
			.key = cli_mig_ssh_key(), .host_key = s->peer.host_key, .timeout_ms = 10000,
		};

		s->data_ssh = tp_ssh_open(&o, errp);
		if (!s->data_ssh)
			return false;
	}
	return true;
}

static void *agent_main(void *opaque)
{
	struct sync *s = opaque;

	agent_open(s, &s->ag.e);
	return NULL;
}

/* Starts opening the agent's session; its outcome comes with agent_join
 * (a failure to start is kept for it too). */
static void agent_start(struct sync *s)
{
	int r;

	if (s->ag.started)
		return;
	s->ag.started = true;
	if (!agent_prepare(s, &s->ag.e)) {
		s->ag.joined = true;
		return;
	}
	r = pthread_create(&s->ag.th, NULL, agent_main, s);
	if (r) {
		err_set_errno(&s->ag.e, r, "cannot start a thread");
		s->ag.joined = true;
	}
}

static bool agent_join(struct sync *s, struct err **errp)
{
	if (!s->ag.started)
		agent_start(s);
	if (!s->ag.joined) {
		pthread_join(s->ag.th, NULL);
		s->ag.joined = true;
		if (s->ag.pid)
			say(s, "target agent pid %d on %s", s->ag.pid, s->job->target);
	}
	if (!s->ag.e)
		return true;
	err_propagate(errp, &s->ag.e);
	return false;
}

/* The replica's generation on the target, after its own crash recovery. */
static bool replica_gen(struct sync *s, struct disk *k, uint64_t *gen, struct err **errp)
{
	struct json_object *req = mig_chan_req("replica-info"), *v;
	_cleanup_json_ struct json_object *rep = NULL;

	json_object_object_add(req, "job", json_object_new_string(s->job->id));
	json_object_object_add(req, "vmid", json_object_new_int64(s->g.vmid));
	json_object_object_add(req, "storage", json_object_new_string(k->d->storage));
	json_object_object_add(req, "volume", json_object_new_string(k->d->volume));
	rep = mig_chan_call(s->ch, req, CTL_TIMEOUT_MS, errp);
	if (!rep)
		return false;
	*gen = json_object_object_get_ex(rep, "gen", &v) ? (uint64_t)json_object_get_int64(v) : 0;
	if (*gen && json_object_object_get_ex(rep, "size", &v) &&
	    (uint64_t)json_object_get_int64(v) != k->size)
		*gen = 0; /* resized since: start over */
	return true;
}

static int data_stream(struct sync *s, unsigned port, struct err **errp)
{
	int sp[2];

	if (!s->secure)
		return tp_net_connect(s->target_addr, port, 10000, errp);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
		err_set_errno(errp, errno, "socketpair");
		return -1;
	}
	if (!tp_ssh_forward(s->data_ssh ? s->data_ssh : s->ctl_ssh, sp[1], "127.0.0.1", port, errp)) {
		close(sp[0]);
		return -1;
	}
	return sp[0];
}

/* ---- one disk ------------------------------------------------------------------------ */

struct source {
	int fd;                   /* the file (raw: stopped guest, or paused) */
	struct repl_vol *vol;     /* stopped guest's qcow2 disk: its guest view */
	struct repl_fleece *f;    /* running guest: the fleecing view */
};

static bool read_source(void *opaque, void *buf, size_t len, uint64_t off, struct err **errp)
{
	struct source *src = opaque;
	size_t done = 0;

	if (src->fd < 0 && src->vol)
		return repl_vol_read(src->vol, buf, len, off, errp);
	if (src->fd < 0)
		return repl_fleece_read(src->f, buf, len, off, errp);
	while (done < len) {
		ssize_t n = pread(src->fd, (char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? err_set_errno(errp, errno, "read the disk") :
				       err_set(errp, ERR_IO, "the disk ended early at %" PRIu64,
					       off + done);
		done += (size_t)n;
	}
	return true;
}

/* repl_manifest_diff over the whole disk; through the fleecing view with
 * reads ahead (each chunk one NBD round trip otherwise: 4 GiB took 13 s). */
static bool diff_all(struct source *src, uint64_t size, struct repl_manifest *m,
		     struct tp_extent **ext, size_t *n, struct err **errp)
{
	const struct tp_extent all = { 0, size };
	bool ok;

	if (src->fd < 0 && src->f)
		repl_fleece_plan(src->f, &all, 1, NULL); /* without, if out of memory */
	ok = repl_manifest_diff(m, read_source, src, ext, n, errp);
	if (src->fd < 0 && src->f)
		repl_fleece_plan(src->f, NULL, 0, NULL);
	return ok;
}

/* read_source that also hashes what it read (repl_manifest_absorb). */
struct absorbing {
	struct source *src;
	struct repl_manifest *m;
};

static bool read_absorbing(void *opaque, void *buf, size_t len, uint64_t off, struct err **errp)
{
	struct absorbing *a = opaque;

	return read_source(a->src, buf, len, off, errp) &&
	       repl_manifest_absorb(a->m, buf, len, off, errp);
}

/* Which extents go, and the hashes to keep (*m). *full: the replica
 * starts over from this sync (its generation 1). *rehash: *m is brought up
 * to date after the send, over the extents sent (or the whole disk, if
 * *fresh: a new *m), while the target applies the update: those reads and
 * hashes stay out of the sync's critical path. */
static bool choose_extents(struct sync *s, struct disk *k, struct source *src, uint64_t base,
			   struct repl_manifest **m, struct tp_extent **ext, size_t *n, bool *full,
			   bool *rehash, bool *fresh, struct err **errp)
{
	char mpath[1100];
	bool complete = false;
	struct err *e = NULL;

	bool incremental = base != 0;

	*full = false;
	*rehash = *fresh = false;
	*n = 0;
	manifest_path(s, k->drive, mpath, sizeof(mpath));
	if (src->f && !repl_fleece_dirty(src->f, ext, n, &complete, errp))
		return false;
	if (incremental)
		*m = repl_manifest_load(mpath, k->size, base, &e);
	if (incremental && src->f && complete && s->hashes_later) {
		/* The guest waits: the hashes are brought up to date afterwards,
		 * from the file (repl_mig_hashes); until then the manifest names
		 * the previous generation, which no sync takes for this one. */
		say(s, "disk %s:%s: %zu dirty extent(s) since the last sync", k->d->storage,
		    k->d->volume, *n);
		err_free(TAKE_PTR(e));
		repl_manifest_free(TAKE_PTR(*m));
		return true;
	}
	if (incremental && src->f && complete) {
		/* The bitmap says what changed; the hashes follow it. */
		say(s, "disk %s:%s: %zu dirty extent(s) since the last sync", k->d->storage,
		    k->d->volume, *n);
		err_free(TAKE_PTR(e));
		*rehash = true;
		*fresh = !*m;
		return *m || (*m = repl_manifest_new(k->size, errp));
	}
	free(TAKE_PTR(*ext));
	*n = 0;
	if (incremental && *m) {
		say(s, "disk %s:%s: comparing block hashes with the last sync", k->d->storage,
		    k->d->volume);
		return diff_all(src, k->size, *m, ext, n, errp);
	}
	if (incremental) {
		say(s, "disk %s:%s: no hashes of the last sync (%s): sending it whole",
		    k->d->storage, k->d->volume, e ? e->msg : "?");
		err_free(TAKE_PTR(e));
	}
	/* Whole disk: holes and zeros travel as ZERO records. */
	*full = true;
	*m = repl_manifest_new(k->size, errp);
	*ext = calloc(1, sizeof(**ext));
	if (!*m || !*ext)
		return errp && *errp ? false : err_set(errp, ERR_IO, "out of memory");
	(*ext)[0] = (struct tp_extent){ .offset = 0, .length = k->size };
	*n = k->size ? 1 : 0;
	return true;
}

/* Long sends keep the guest's lock alive (it expires after a minute). */
static void on_progress(const struct tp_stream_progress *p, void *opaque)
{
	struct sync *s = opaque;
	struct err *e = NULL;

	(void)p;
	if (util_now_ms() < s->renew_ms)
		return;
	s->renew_ms = util_now_ms() + RENEW_EVERY_MS;
	if (!cli_ctl_lock_renew(s->x, &e)) {
		log_warn("%s: renewing the guest lock: %s", s->job->id, e->msg);
		err_free(e);
	}
}

static bool send_disk(struct sync *s, struct disk *k, struct err **errp)
{
	struct source src = { .fd = -1 };
	_cleanup_free_ struct tp_extent *ext = NULL;
	struct repl_manifest *m = NULL;
	struct json_object *req, *v;
	_cleanup_json_ struct json_object *rep = NULL, *res = NULL;
	struct tp_stream_opts so = { .rate_limit = (uint64_t)s->job->rate * 1000000,
				     .progress = on_progress, .opaque = s };
	struct tp_stream_progress fin = { 0 };
	char mpath[1100];
	uint64_t gen = 0;
	size_t n = 0;
	bool full, rehash, fresh, ok = false, sent;
	int fd = -1;

	if (s->qmp) {
		src.f = repl_fleece_begin(s->qmp, s->run_dir, k->drive, s->job->id, errp);
		if (!src.f)
			return false;
		/* A migration's last sync: the guest is paused and QEMU drained and
		 * flushed its disks (vm stop), so a raw file is the point in time;
		 * reads from it skip an NBD round trip per extent. The fleece
		 * still says which extents. */
		if (s->hashes_later && !util_volume_is_qcow2(k->path) &&
		    (src.fd = open(k->path, O_RDONLY | O_CLOEXEC)) < 0) {
			err_set_errno(errp, errno, "open '%s'", k->path);
			repl_fleece_end(src.f, false);
			return false;
		}
	} else if (util_volume_is_qcow2(k->path)) {
		src.vol = repl_vol_open(k->path, false, errp);
		if (!src.vol)
			return false;
	} else {
		src.fd = open(k->path, O_RDONLY | O_CLOEXEC);
		if (src.fd < 0) {
			err_set_errno(errp, errno, "open '%s'", k->path);
			return false;
		}
	}
	/* The agent's session has been opening meanwhile (the instant is
	 * taken: a failure from here keeps the dirty blocks for next time). */
	if (!agent_join(s, errp) || !replica_gen(s, k, &gen, errp))
		goto out;
	util_test_delay("repl-open");
	/* Incremental from the replica's generation: the one the state names,
	 * or a later one when runs were applied there but died before they
	 * recorded it (several in a row: kill -9 after each apply). The
	 * bitmap covers the writes since the last run that ended well, which
	 * the replica holds or passed: a superset; hashes must be of the
	 * replica's generation (the manifest names it). A new job's state
	 * (generation 0) takes only a first generation. */
	if (!choose_extents(s, k, &src,
			    gen && (gen == s->st.gen + 1 || (s->st.gen && gen >= s->st.gen)) ? gen : 0,
			    &m, &ext, &n, &full, &rehash, &fresh, errp))
		goto out;
	req = mig_chan_req("recv");
	json_object_object_add(req, "job", json_object_new_string(s->job->id));
	json_object_object_add(req, "vmid", json_object_new_int64(s->g.vmid));
	json_object_object_add(req, "storage", json_object_new_string(k->d->storage));
	json_object_object_add(req, "volume", json_object_new_string(k->d->volume));
	json_object_object_add(req, "size", json_object_new_uint64(k->size));
	json_object_object_add(req, "gen", json_object_new_uint64(full ? 1 : gen + 1));
	json_object_object_add(req, "time", json_object_new_int64(s->instant));
	json_object_object_add(req, "mode", json_object_new_string(full ? "create" : "update"));
	json_object_object_add(req, "bind", json_object_new_string(s->secure ? "127.0.0.1" :
								   s->target_addr));
	json_object_object_add(req, "peer", json_object_new_string(s->secure ? "127.0.0.1" :
								   s->source_addr));
	rep = mig_chan_call(s->ch, req, CTL_TIMEOUT_MS, errp);
	if (!rep || !json_object_object_get_ex(rep, "port", &v))
		goto out;
	req = mig_chan_req("recv-wait");
	if (!mig_chan_send(s->ch, req, errp)) {
		json_object_put(req);
		goto out;
	}
	json_object_put(req);
	fd = data_stream(s, (unsigned)json_object_get_int(v), errp);
	if (fd < 0)
		goto out;
	util_test_delay("repl-stream");
	/* Read ahead along the extents (without, if out of memory: slower). */
	if (src.fd < 0 && src.f)
		repl_fleece_plan(src.f, ext, n, NULL);
	if (src.fd < 0 && rehash && !fresh) {
		struct absorbing ab = { .src = &src, .m = m };

		sent = tp_stream_send_extents_fn(fd, k->size, ext, n, read_absorbing, &ab, &so, &fin,
						 errp);
	} else if (src.fd < 0) {
		sent = tp_stream_send_extents_fn(fd, k->size, ext, n, read_source, &src, &so, &fin,
						 errp);
	}
	else
		sent = tp_stream_send_extents(fd, src.fd, k->size, ext, n, &so, &fin, errp);
	shutdown(fd, SHUT_WR);
	if (src.fd < 0 && src.f)
		repl_fleece_plan(src.f, NULL, 0, NULL);
	/* While the target applies: the hashes of what went (reads of the
	 * same view; a new manifest hashes the whole disk). */
	if (sent && rehash) {
		struct tp_extent *all = NULL;
		size_t nall = 0;

		sent = fresh ? diff_all(&src, k->size, m, &all, &nall, errp) :
			       repl_manifest_update(m, read_source, &src, ext, n, errp);
		free(all);
	}
	/* The view is read for the last time unless a whole-disk send is
	 * hashed below: its teardown overlaps the target's apply. */
	if (src.f && !full)
		repl_fleece_close_view(src.f);
	res = mig_chan_recv(s->ch, sent ? RECV_TIMEOUT_MS : 10000, sent ? errp : NULL);
	if (!sent) {
		struct json_object *msg;

		/* A target that gave up first (its disk full) only reset the
		 * stream here: its answer names the cause. Any other failure
		 * here (the source's read) is the cause itself. */
		if (res && json_object_object_get_ex(res, "error", &msg) &&
		    json_object_is_type(msg, json_type_string) && errp && *errp &&
		    ((*errp)->errnum == EPIPE || (*errp)->errnum == ECONNRESET)) {
			err_free(TAKE_PTR(*errp));
			err_set(errp, ERR_IO, "disk %s:%s: on %s: %s", k->d->storage, k->d->volume,
				s->job->target, json_object_get_string(msg));
		}
		goto out;
	}
	if (!res) {
		err_prefix(errp ? *errp : NULL, "disk %s:%s", k->d->storage, k->d->volume);
		goto out;
	}
	if (!json_object_object_get_ex(res, "ok", &v) || !json_object_get_boolean(v)) {
		struct json_object *msg;

		err_set(errp, ERR_IO, "disk %s:%s: %s", k->d->storage, k->d->volume,
			json_object_object_get_ex(res, "error", &msg) ? json_object_get_string(msg) :
									  "the target refused it");
		goto out;
	}
	util_test_delay("repl-applied");
	/* The hashes of a whole-disk send are of what went: read it again
	 * (local reads, cheap next to the wire). */
	if (full) {
		struct tp_extent *all = NULL;
		size_t nall = 0;

		if (!repl_manifest_diff(m, read_source, &src, &all, &nall, errp)) {
			free(all);
			goto out;
		}
		free(all);
	}
	manifest_path(s, k->drive, mpath, sizeof(mpath));
	if (!m) {
		/* Hashes later: keep what went. */
		free(k->later);
		k->later = TAKE_PTR(ext);
		k->nlater = n;
		k->hashed_gen = gen;
	} else if (!repl_manifest_save(m, mpath, full ? 1 : gen + 1, errp)) {
		goto out;
	}
	if ((full ? 1 : gen + 1) > s->new_gen)
		s->new_gen = full ? 1 : gen + 1;
	s->bytes += fin.wire_bytes;
	say(s, "disk %s:%s: %s sync, %" PRIu64 " bytes of data, %" PRIu64 " on the wire, replica "
	    "generation %" PRIu64, k->d->storage, k->d->volume, full ? "full" : "incremental",
	    fin.data_bytes, fin.wire_bytes, full ? (uint64_t)1 : gen + 1);
	ok = true;
out:
	if (fd >= 0)
		close(fd);
	if (src.f)
		repl_fleece_end(src.f, ok);
	if (src.fd >= 0)
		close(src.fd);
	repl_vol_close(src.vol, NULL);
	repl_manifest_free(m);
	return ok;
}

/* ---- state ----------------------------------------------------------------------------- */

struct st_edit {
	struct sync *s;
	const struct err *e;
	int phase; /* 0 start, 1 success, 2 failure */
	int64_t duration_ms;
	uint64_t gen;
};

static bool edit_state(struct repl_job_state *st, void *opaque)
{
	struct st_edit *d = opaque;

	switch (d->phase) {
	case 0:
		st->state = REPL_STATE_SYNCING;
		st->pid = getpid();
		st->last_try = time(NULL);
		snprintf(st->node, sizeof(st->node), "%s", d->s->x->node);
		snprintf(st->target, sizeof(st->target), "%s", d->s->job->target);
		st->run_now = false;
		if (!st->created)
			st->created = st->last_try;
		break;
	case 1:
		st->state = REPL_STATE_OK;
		st->gen = d->gen;
		st->last_sync = d->s->instant;
		st->duration_ms = d->duration_ms;
		st->bytes = d->s->bytes;
		st->fail_count = 0;
		st->error[0] = '\0';
		st->pid = 0;
		break;
	default:
		st->state = REPL_STATE_ERROR;
		st->fail_count++;
		snprintf(st->error, sizeof(st->error), "%s", d->e ? d->e->msg : "?");
		st->pid = 0;
		break;
	}
	return true;
}

/* ---- the run ---------------------------------------------------------------------------- */

/* Records what the run did, through a vmmd that may have restarted (as
 * systemd restarts it) or a cluster that lost quorum for a moment: tried
 * for RECORD_WAIT_MS. An outcome left unrecorded would leave the state
 * `syncing` (vmmd's sweep then says the worker died) and the next run
 * would not know which generation the replica holds. */
static bool record(struct sync *s, struct st_edit *ed, struct err **errp)
{
	int64_t end = util_now_ms() + RECORD_WAIT_MS;
	struct err *e = NULL;
	bool said = false;

	while (!repl_state_update(s->x->c, s->job->id, edit_state, ed, &e)) {
		if (util_now_ms() >= end) {
			err_propagate(errp, &e);
			return false;
		}
		if (!said)
			log_warn("%s: recording the outcome: %s (retrying for %d s)", s->job->id,
				 e->msg, RECORD_WAIT_MS / 1000);
		said = true;
		err_free(TAKE_PTR(e));
		usleep(500 * 1000);
		cli_ctl_reconnect(s->x, 0, NULL);
	}
	if (said)
		log_info("%s: outcome recorded", s->job->id);
	return true;
}

static void sync_free(struct sync *s)
{
	if (s->ag.started && !s->ag.joined) {
		pthread_join(s->ag.th, NULL);
		s->ag.joined = true;
	}
	err_free(TAKE_PTR(s->ag.e));
	if (s->ch) {
		/* Not waited for: on bye the agent settles the last update (the
		 * replica's fsync, its side files removed: ~0.1 s per 40 MB),
		 * which nothing here needs; the replica reads as the new
		 * generation since its reply, and a recovery meanwhile waits on
		 * the delta's lock. */
		struct json_object *bye = mig_chan_req("bye");

		mig_chan_send(s->ch, bye, NULL);
		json_object_put(bye);
		mig_chan_close(s->ch);
	}
	tp_ssh_close(s->data_ssh);
	tp_ssh_close(s->ctl_ssh);
	cli_mig_peer_free(&s->peer);
	mig_qemu_release(s->q);
	for (unsigned i = 0; i < s->nd; i++) {
		free(s->disks[i].path);
		free(s->disks[i].later);
	}
	if (s->logf)
		fclose(s->logf);
}

/* One pass over every disk, the job's state telling of it. */
static bool sync_pass(struct sync *s, struct err **errp)
{
	struct st_edit ed;
	struct err *e = NULL;
	int64_t t0 = util_now_ms();
	bool ok = false;

	/* The generation the replicas hold moves with every pass. */
	if (!repl_state_read(s->x->c, s->job->id, &s->st, NULL, errp))
		return false;
	ed = (struct st_edit){ .s = s, .phase = 0 };
	if (!repl_state_update(s->x->c, s->job->id, edit_state, &ed, errp))
		return false;
	s->bytes = 0;
	s->new_gen = 0;
	s->instant = time(NULL);
	s->renew_ms = util_now_ms() + RENEW_EVERY_MS;
	for (unsigned i = 0; i < s->nd; i++)
		if (!send_disk(s, &s->disks[i], &e))
			goto out;
	ok = true;
out:
	if (ok) {
		ed = (struct st_edit){ .s = s, .phase = 1, .gen = s->new_gen,
				       .duration_ms = util_now_ms() - t0 };
		say(s, "done in %.2f s, %" PRIu64 " bytes on the wire",
		    (double)(util_now_ms() - t0) / 1000, s->bytes);
	} else {
		ed = (struct st_edit){ .s = s, .phase = 2, .e = e };
		say(s, "failed: %s", e ? e->msg : "?");
	}
	{
		struct err *se = NULL;

		if (!record(s, &ed, &se)) {
			/* Said rather than exit 0 with a state that says otherwise. */
			if (ok)
				err_set(&e, se->code, "generation %" PRIu64 " is on %s, but the job's "
					"state could not be recorded: %s", s->new_gen, s->job->target,
					se->msg);
			else
				log_warn("%s: cannot record the outcome: %s", s->job->id, se->msg);
			ok = false;
			err_free(se);
		}
	}
	if (!ok)
		err_propagate(errp, &e);
	return ok;
}

/* Disks, the target's agent and the guest's QEMU (qmp: the caller's
 * connection, else one of our own if the guest runs). The failure is
 * recorded in the job's state. The agent's session may still be opening
 * unless join: the first disk joins it once its view is taken. */
static bool sync_open(struct sync *s, struct tp_qmp *qmp, bool join, struct err **errp)
{
	struct st_edit ed = { .s = s, .phase = 0 };
	struct err *e = NULL;

	open_log(s);
	agent_start(s);
	if (!repl_state_update(s->x->c, s->job->id, edit_state, &ed, errp))
		return false;
	if (local_disks(s, &e)) {
		cli_ctl_run_dir(s->job->vmid, s->run_dir, sizeof(s->run_dir));
		if (qmp)
			s->qmp = qmp;
		else if (cli_ctl_running(s->job->vmid, NULL) &&
			 (s->q = mig_qemu_attach(s->run_dir, 5000, &e)))
			s->qmp = s->q->qmp;
	}
	if (join || e)
		agent_join(s, &e); /* the first error is kept */
	if (!e)
		return true;
	{
		struct err *se = NULL;

		ed = (struct st_edit){ .s = s, .phase = 2, .e = e };
		say(s, "failed: %s", e->msg);
		if (!record(s, &ed, &se))
			err_free(se);
	}
	err_propagate(errp, &e);
	return false;
}

static bool sync_job(struct cli_ctl *x, const struct clu_repl_job *job, bool *skipped,
		     struct err **errp)
{
	_cleanup_free_ struct sync *s = calloc(1, sizeof(*s));
	struct err *e = NULL;
	bool ok;

	*skipped = false;
	if (!s)
		return err_set(errp, ERR_IO, "out of memory");
	s->x = x;
	s->job = job;
	if (job->disabled) {
		*skipped = true;
		return err_set(errp, ERR_STATE, "job %s is disabled", job->id);
	}
	if (!clu_guest_read(x->c, job->vmid, &s->g, errp))
		return false;
	if (strcmp(s->g.node, x->node)) {
		*skipped = true;
		return err_set(errp, ERR_STATE, "guest %" PRIu32 " is owned by %s: job %s runs "
			       "there", job->vmid, s->g.node, job->id);
	}
	if (!strcmp(job->target, x->node))
		return err_set(errp, ERR_STATE, "job %s targets %s, where guest %" PRIu32 " runs",
			       job->id, job->target, job->vmid);
	/* The target's agent starts while the guest is locked and its disks
	 * prepared (a skipped run only wasted a session). */
	agent_start(s);
	/* A migration holds the guest's lock: this run gives way. */
	if (!cli_ctl_lock(x, job->vmid, &e)) {
		sync_free(s);
		*skipped = true;
		err_prefix(e, "job %s skipped", job->id);
		err_propagate(errp, &e);
		return false;
	}
	if (!repl_state_read(x->c, job->id, &s->st, NULL, errp)) {
		sync_free(s);
		return false;
	}
	ok = sync_open(s, NULL, false, errp);
	if (ok) {
		say(s, "guest %" PRIu32 " to %s, replica generation %" PRIu64, job->vmid,
		    job->target, s->st.gen);
		ok = sync_pass(s, errp);
	}
	/* The guest is free once its state is recorded; the session ends
	 * after (the agent settles the update meanwhile, and whoever needs
	 * the replica next waits for that). */
	cli_ctl_release(x);
	sync_free(s);
	return ok;
}

bool cli_repl_sync(struct cli_ctl *x, const struct clu_repl_job *job, bool *skipped,
		   struct err **errp)
{
	char vmid[16];
	bool ok;

	/* The journal's fields for this run's lines: journalctl VMMIGRATE_JOB=ID. */
	snprintf(vmid, sizeof(vmid), "%" PRIu32, job->vmid);
	log_field_set("VMMIGRATE_JOB", job->id);
	log_field_set("VMMIGRATE_VMID", vmid);
	ok = sync_job(x, job, skipped, errp);
	log_field_set("VMMIGRATE_JOB", NULL);
	log_field_set("VMMIGRATE_VMID", NULL);
	return ok;
}

/* ---- a migration to the replica's node ------------------------------------------------ */

struct cli_repl_mig {
	struct sync s;
	struct clu_repl_job job;
	char old_target[CLU_NODE_NAME_MAX + 1];
};

bool cli_repl_mig_find(struct cli_ctl *x, const struct clu_guest_rec *g, const char *target,
		       char *job_id, size_t len, bool replicated[CLU_GUEST_DISKS],
		       struct err **errp)
{
	struct clu_repl_conf rc;
	struct repl_job_state st;
	struct cli_ctl_storages sto;
	const struct clu_repl_job *job = NULL;
	bool any = false;

	if (!cli_repl_read(x, &rc, NULL, errp))
		return false;
	for (size_t i = 0; i < rc.n && !job; i++)
		if (rc.items[i].vmid == g->vmid && !strcmp(rc.items[i].target, target))
			job = &rc.items[i];
	if (job)
		snprintf(job_id, len, "%s", job->id);
	clu_repl_conf_free(&rc);
	if (!job || !repl_state_read(x->c, job_id, &st, NULL, errp) || !st.gen)
		return false;
	if (!cli_ctl_storages_read(x, &sto, errp))
		return false;
	for (int i = 0; i < CLU_GUEST_DISKS; i++) {
		const struct clu_guest_disk *d = &g->conf.disks[i];
		const struct clu_storage *so = d->present ? clu_storage_find(&sto.sc, d->storage) :
							    NULL;

		replicated[i] = so && !so->shared && d->replicate;
		any |= replicated[i];
	}
	cli_ctl_storages_free(&sto);
	return any;
}

struct cli_repl_mig *cli_repl_mig_open(struct cli_ctl *x, const struct clu_guest_rec *g,
				       const char *job_id, struct tp_qmp *qmp, struct err **errp)
{
	struct cli_repl_mig *m = calloc(1, sizeof(*m));
	struct clu_repl_conf rc;
	const struct clu_repl_job *job;

	if (!m) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	if (!cli_repl_read(x, &rc, NULL, errp)) {
		free(m);
		return NULL;
	}
	job = cli_repl_find(&rc, job_id);
	if (job)
		m->job = *job;
	clu_repl_conf_free(&rc);
	if (!job) {
		err_set(errp, ERR_STATE, "replication job %s is gone", job_id);
		free(m);
		return NULL;
	}
	snprintf(m->old_target, sizeof(m->old_target), "%s", m->job.target);
	m->s.x = x;
	m->s.job = &m->job;
	m->s.g = *g;
	if (!sync_open(&m->s, qmp, true, errp)) {
		cli_repl_mig_close(m);
		return NULL;
	}
	return m;
}

bool cli_repl_mig_sync(struct cli_repl_mig *m, bool paused, struct err **errp)
{
	bool ok;

	m->s.hashes_later = paused;
	ok = sync_pass(&m->s, errp);
	m->s.hashes_later = false;
	return ok;
}

static bool read_file(void *opaque, void *buf, size_t len, uint64_t off, struct err **errp)
{
	int fd = *(int *)opaque;
	size_t done = 0;

	while (done < len) {
		ssize_t r = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? err_set_errno(errp, errno, "read the disk") :
				       err_set(errp, ERR_IO, "the disk ended early");
		done += (size_t)r;
	}
	return true;
}

/* The hashes a paused sync left for later, from the old source's file
 * (its QEMU is gone: the file holds the new generation). */
static bool mig_hashes(struct sync *s, struct disk *k, struct err **errp)
{
	char mpath[1100];
	struct repl_manifest *m;
	_cleanup_close_ int fd = -1;
	bool ok;

	if (!k->later)
		return true;
	manifest_path(s, k->drive, mpath, sizeof(mpath));
	m = repl_manifest_load(mpath, k->size, k->hashed_gen, errp);
	if (!m)
		return false;
	if (util_volume_is_qcow2(k->path)) {
		struct repl_vol *v = repl_vol_open(k->path, false, errp);

		ok = v && repl_manifest_update(m, repl_vol_read, v, k->later, k->nlater, errp) &&
		     repl_manifest_save(m, mpath, k->hashed_gen + 1, errp);
		repl_vol_close(v, NULL);
		repl_manifest_free(m);
		return ok;
	}
	fd = open(k->path, O_RDONLY | O_CLOEXEC);
	ok = fd >= 0 ? repl_manifest_update(m, read_file, &fd, k->later, k->nlater, errp) &&
		       repl_manifest_save(m, mpath, k->hashed_gen + 1, errp) :
		       err_set_errno(errp, errno, "open '%s'", k->path);
	repl_manifest_free(m);
	return ok;
}

static bool flip_conf(struct clu_repl_conf *rc, void *opaque, struct err **errp)
{
	struct cli_repl_mig *m = opaque;
	struct clu_repl_job *j = cli_repl_find(rc, m->job.id);

	if (!j)
		return err_set(errp, ERR_STATE, "replication job %s is gone", m->job.id);
	snprintf(j->target, sizeof(j->target), "%s", m->s.x->node);
	snprintf(j->source, sizeof(j->source), "%s", m->old_target);
	return true;
}

static bool flip_state(struct repl_job_state *st, void *opaque)
{
	struct cli_repl_mig *m = opaque;

	snprintf(st->target, sizeof(st->target), "%s", m->s.x->node);
	snprintf(st->node, sizeof(st->node), "%s", m->old_target);
	return true;
}

/* The block hashes of one disk's replica go to the new source. */
static bool send_manifest(struct cli_repl_mig *m, const struct disk *k, struct err **errp)
{
	enum { PIECE = 3 * (128u << 10) }; /* 384 KiB: 512 KiB of base64 */
	char path[1100];
	_cleanup_free_ char *data = NULL, *b64 = NULL;
	size_t len = 0;

	manifest_path(&m->s, k->drive, path, sizeof(path));
	{
		_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
		struct stat sb;

		if (fd < 0 || fstat(fd, &sb) < 0)
			return err_set_errno(errp, errno, "open '%s'", path);
		len = (size_t)sb.st_size;
		data = malloc(len ? len : 1);
		if (!data)
			return err_set(errp, ERR_IO, "out of memory");
		if (pread(fd, data, len, 0) != (ssize_t)len)
			return err_set(errp, ERR_IO, "read '%s': short", path);
	}
	b64 = malloc(PIECE / 3 * 4 + 1);
	if (!b64)
		return err_set(errp, ERR_IO, "out of memory");
	for (size_t off = 0; off < len; off += PIECE) {
		size_t n = len - off < PIECE ? len - off : PIECE;
		struct json_object *req = mig_chan_req("manifest-put");
		_cleanup_json_ struct json_object *rep = NULL;

		util_base64_encode(data + off, n, b64);
		json_object_object_add(req, "job", json_object_new_string(m->job.id));
		json_object_object_add(req, "drive", json_object_new_int((int)k->drive));
		json_object_object_add(req, "gen", json_object_new_uint64(m->s.new_gen));
		json_object_object_add(req, "size", json_object_new_uint64(k->size));
		json_object_object_add(req, "total", json_object_new_uint64(len));
		json_object_object_add(req, "offset", json_object_new_uint64(off));
		json_object_object_add(req, "data", json_object_new_string(b64));
		rep = mig_chan_call(m->s.ch, req, CTL_TIMEOUT_MS, errp);
		if (!rep)
			return false;
	}
	return true;
}

bool cli_repl_mig_flip(struct cli_repl_mig *m, struct err **errp)
{
	struct sync *s = &m->s;
	_cleanup_json_ struct json_object *rep = NULL;
	struct json_object *req;

	if (!s->new_gen)
		return err_set(errp, ERR_STATE, "job %s: no sync in this migration", m->job.id);
	/* Here first: once the job points here, the disks must be replicas. */
	for (unsigned i = 0; i < s->nd; i++) {
		struct repl_replica_info info = { .gen = s->new_gen, .time = s->instant,
						  .size = s->disks[i].size };

		snprintf(info.job, sizeof(info.job), "%s", m->job.id);
		snprintf(info.source, sizeof(info.source), "%s", m->old_target);
		if (!repl_replica_adopt(s->disks[i].path, &info, errp))
			return false;
	}
	if (!cli_repl_edit(s->x, flip_conf, m, errp) ||
	    !repl_state_update(s->x->c, m->job.id, flip_state, m, errp))
		return false;
	req = mig_chan_req("release");
	json_object_object_add(req, "job", json_object_new_string(m->job.id));
	json_object_object_add(req, "vmid", json_object_new_int64(m->job.vmid));
	rep = mig_chan_call(s->ch, req, CTL_TIMEOUT_MS, errp);
	if (!rep)
		return false;
	for (unsigned i = 0; i < s->nd; i++) {
		char path[1100];
		struct err *he = NULL;

		manifest_path(s, s->disks[i].drive, path, sizeof(path));
		if (!mig_hashes(s, &s->disks[i], &he)) {
			/* The new source then hashes its disk once itself. */
			say(s, "disk %s:%s: no block hashes for %s: %s", s->disks[i].d->storage,
			    s->disks[i].d->volume, m->old_target, he->msg);
			err_free(he);
		} else if (!send_manifest(m, &s->disks[i], errp)) {
			return false;
		}
		unlink(path);
	}
	say(s, "job %s now replicates guest %" PRIu32 " from %s to %s (replica generation %"
	    PRIu64 ")", m->job.id, m->job.vmid, m->old_target, s->x->node, s->new_gen);
	return true;
}

void cli_repl_mig_close(struct cli_repl_mig *m)
{
	if (!m)
		return;
	sync_free(&m->s);
	free(m);
}
