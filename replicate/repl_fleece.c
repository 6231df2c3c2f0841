/*
 * repl_fleece.c - a running guest's disk as of one instant, and what the
 * guest wrote since the last sync: QEMU image fleecing with a dirty
 * bitmap, exported over NBD and read with libnbd. Contract in repl.h ("a
 * running guest's disks").
 *
 * What lives in the guest's QEMU, for job J and drive N (node diskN):
 *   bitmaps   vmm-repl-J-N-<n> on diskN, granularity REPL_DIRTY_GRAIN, persistent
 *             on qcow2: the one recording, plus the frozen one during a sync
 *   overlay   node vmmfN-J: RUN_DIR/fleece/N-J.qcow2 with backing diskN,
 *             filled by the backup job's copy-before-write filter
 *   job       vmmfN-J: blockdev-backup sync=none diskN -> vmmfN-J (a
 *             blockdev-create job vmmcN-J made the overlay)
 *   export    vmmfN-J: NBD, read-only, with the frozen bitmap
 *   server    RUN_DIR/fleece/nbd.sock (directory 0700, socket 0600), shared
 *             by the syncs of every disk of the QEMU; the sync that ends
 *             last stops it. One started by someone else (a disk migration
 *             into this QEMU) is never touched: begin refuses.
 * Names are exact (never a prefix), so a sweep only sees its own job/drive.
 *
 * Why the view cannot change: reads of the overlay that fall through to
 * diskN and the copy-before-write writes into it are serialised by QEMU
 * (block-copy writes with BDRV_REQ_SERIALISING when the target's backing
 * chain holds the source, commit f8d59dfb40bb, iotest 222), and a guest
 * write to a block waits for its copy.
 *
 * Why no write is missed: the next bitmap starts recording, the current
 * one stops and the copy-before-write filter goes in, in one transaction
 * (QEMU drains all I/O around it). A frozen bitmap is removed only by a
 * successful end; otherwise end, or the next begin after a crash, merges
 * it into the recording one. A bitmap QEMU marks inconsistent (qcow2 after
 * QEMU was killed) and a missing one (raw disk after a QEMU restart) mean
 * "unknown": the sync then reports complete = false.
 *
 * Limits of QEMU 7.2: the backup job's filter uses on-cbw-error
 * break-guest-write, so if the overlay's filesystem fills up during a
 * sync, guest writes fail; the overlay grows by what the guest overwrites
 * while the sync runs (at most the disk's size).
 */
#include "repl.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libnbd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define QMP_MS 10000
#define GONE_MS 15000           /* an export, a job to go away */
#define POLL_MS 10
#define MAX_BITMAPS 32          /* of one job and drive */
#define JOB_MAX 23              /* as in struct repl_replica_info.job */
#define BITMAP_PREFIX "vmm-repl-"
#define DIRTY_CTX "qemu:dirty-bitmap:"
#define STATUS_CHUNK (UINT32_MAX / REPL_BLOCK * REPL_BLOCK) /* NBD counts are 32-bit */
#define READ_CHUNK (32u << 20)  /* QEMU's NBD_MAX_BUFFER_SIZE */

/* Reads issued ahead along a plan of extents (repl_fleece_plan). */
#define RA_PIECE (1u << 20)      /* bytes per request */
#define RA_SLOTS 24              /* requests in flight or waiting to be taken */

struct ra_slot {
	uint64_t off;
	size_t len;
	int64_t cookie;
	uint8_t *buf;
};

struct readahead {
	struct tp_extent *ext;
	size_t n, xi;             /* the plan; the extent being issued */
	uint64_t pos;             /* next byte of it to issue */
	struct ra_slot slot[RA_SLOTS];
	unsigned head, count;     /* a ring, in plan order */
	bool failed;              /* an issue failed: the rest is read directly */
};

struct repl_fleece {
	struct tp_qmp *q;
	struct nbd_handle *nbd;
	pthread_mutex_t ra_lock;  /* ra and nbd while ra is set */
	struct readahead *ra;
	unsigned drive;
	char job[JOB_MAX + 1];
	char disk[16];            /* diskN */
	char name[32];            /* vmmfN-J: overlay node, backup job, export */
	char create_id[32];       /* vmmcN-J: the job that formats the overlay */
	char frozen[64];          /* the bitmap read this sync; "" if none */
	char next[64];            /* the one recording from begin on */
	char dir[99], sock[108], overlay[160]; /* sock fits sun_path */
	uint64_t size;
	uint64_t max_read;
	bool started;             /* the transaction ran: bitmaps switched */
	bool server_ours;         /* the NBD server on sock is ours */
	bool view_closed;         /* export, job, overlay node and server gone */
};

/* ---- QMP helpers ------------------------------------------------------------ */

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return o && json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static bool jbool(struct json_object *o, const char *key)
{
	struct json_object *v;

	return o && json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

static void jadd(struct json_object *o, const char *key, const char *val)
{
	json_object_object_add(o, key, json_object_new_string(val));
}

/* {"k1": "v1", ...}, string values, NULL-terminated pairs. */
static struct json_object *jargs(const char *k, const char *v, ...)
	__attribute__((sentinel));
static struct json_object *jargs(const char *k, const char *v, ...)
{
	struct json_object *o = json_object_new_object();
	va_list ap;

	va_start(ap, v);
	while (k) {
		jadd(o, k, v);
		k = va_arg(ap, const char *);
		if (k)
			v = va_arg(ap, const char *);
	}
	va_end(ap);
	return o;
}

/* {"type": type, "data": data} for a transaction. */
static void action(struct json_object *actions, const char *type, struct json_object *data)
{
	struct json_object *a = json_object_new_object();

	jadd(a, "type", type);
	json_object_object_add(a, "data", data);
	json_object_array_add(actions, a);
}

static bool transaction(struct tp_qmp *q, struct json_object *actions, struct err **errp)
{
	struct json_object *args = json_object_new_object();

	json_object_object_add(args, "actions", actions);
	return tp_qmp_run(q, "transaction", args, QMP_MS, errp);
}

static struct json_object *query_nodes(struct tp_qmp *q, struct err **errp)
{
	struct json_object *args = json_object_new_object();

	json_object_object_add(args, "flat", json_object_new_boolean(true));
	return tp_qmp_call(q, "query-named-block-nodes", args, QMP_MS, errp);
}

/* The entry named `name` of a QMP list (by `key`), or NULL. */
static struct json_object *find(struct json_object *list, const char *key, const char *name)
{
	for (size_t i = 0; list && i < json_object_array_length(list); i++) {
		struct json_object *e = json_object_array_get_idx(list, i);
		const char *s = jstr(e, key);

		if (s && !strcmp(s, name))
			return e;
	}
	return NULL;
}

/* ---- sweeping what a sync leaves in QEMU ---------------------------------------- */

/* Deletes export `name` and waits until it is gone. */
static bool sweep_export(struct tp_qmp *q, const char *name, struct err **errp)
{
	int64_t deadline = util_now_ms() + GONE_MS;
	bool asked = false;

	for (;;) {
		_cleanup_json_ struct json_object *l = tp_qmp_call(q, "query-block-exports", NULL,
								  QMP_MS, errp);

		if (!l)
			return false;
		if (!find(l, "id", name))
			return true;
		/* hard: a crashed reader may still hold a connection */
		if (!asked && !tp_qmp_run(q, "block-export-del",
					  jargs("id", name, "mode", "hard", NULL), QMP_MS, errp))
			return false;
		asked = true;
		if (util_now_ms() >= deadline)
			return err_set(errp, ERR_TIMEOUT, "export %s still there after %d ms", name,
				       GONE_MS);
		if (!tp_qmp_pump(q, POLL_MS, errp))
			return false;
	}
}

/* Waits until job `id` is gone, cancelling it first if `cancel`, and
 * dismissing it once concluded; *why (may be NULL) gets its error. */
static bool end_job(struct tp_qmp *q, const char *id, bool cancel, char **why,
		    struct err **errp)
{
	int64_t deadline = util_now_ms() + GONE_MS;

	for (;;) {
		_cleanup_json_ struct json_object *l = tp_qmp_call(q, "query-jobs", NULL, QMP_MS,
								  errp);
		struct json_object *j = find(l, "id", id);
		const char *st = jstr(j, "status");

		if (!l)
			return false;
		if (!st || !strcmp(st, "null"))
			return true;
		if (!strcmp(st, "concluded")) {
			if (why && jstr(j, "error") && !*why)
				*why = strdup(jstr(j, "error"));
			if (!tp_qmp_run(q, "job-dismiss", jargs("id", id, NULL), QMP_MS, errp))
				return false;
			continue;
		}
		if (cancel && strcmp(st, "aborting") && strcmp(st, "pending") &&
		    strcmp(st, "waiting")) {
			tp_qmp_run(q, "job-cancel", jargs("id", id, NULL), QMP_MS, NULL);
			cancel = false;
		}
		if (util_now_ms() >= deadline)
			return err_set(errp, ERR_TIMEOUT, "job %s did not end within %d ms", id,
				       GONE_MS);
		if (!tp_qmp_pump(q, POLL_MS, errp))
			return false;
	}
}

/* Only an overlay of ours: "<dir>/fleece/<drive>-<job>.qcow2". */
static void remove_overlay(const char *path, const char *base)
{
	const char *slash = path ? strrchr(path, '/') : NULL;

	if (slash && !strcmp(slash + 1, base) && unlink(path) < 0 && errno != ENOENT)
		log_warn("cannot remove the fleecing overlay '%s': %s", path, strerror(errno));
}

/* Removes export, jobs, overlay node and file of one job/drive (also those
 * a crashed sync left); the bitmaps stay. */
static bool sweep(struct tp_qmp *q, unsigned drive, const char *job, const char *overlay,
		  struct err **errp)
{
	_cleanup_json_ struct json_object *nodes = NULL;
	char name[32], create_id[32], base[48];
	struct json_object *node;
	_cleanup_free_ char *file = NULL;

	snprintf(name, sizeof(name), "vmmf%u-%s", drive, job);
	snprintf(create_id, sizeof(create_id), "vmmc%u-%s", drive, job);
	snprintf(base, sizeof(base), "%u-%s.qcow2", drive, job);
	if (!sweep_export(q, name, errp) || !end_job(q, name, true, NULL, errp) ||
	    !end_job(q, create_id, true, NULL, errp))
		return false;
	if (!(nodes = query_nodes(q, errp)))
		return false;
	node = find(nodes, "node-name", name);
	if (node) {
		file = jstr(node, "file") ? strdup(jstr(node, "file")) : NULL;
		if (!tp_qmp_run(q, "blockdev-del", jargs("node-name", name, NULL), QMP_MS, errp))
			return false;
		remove_overlay(file, base);
	}
	if (overlay)
		remove_overlay(overlay, base);
	return true;
}

/* ---- bitmaps ----------------------------------------------------------------------- */

struct bitmap {
	char name[64];
	unsigned long n;
	bool recording, inconsistent;
};

/* Ours among a node's bitmaps: "vmm-repl-J-N-<digits>"; returns how many
 * there are, filling at most max. */
static size_t our_bitmaps(struct json_object *node, const char *job, unsigned drive,
			  struct bitmap *b, size_t max)
{
	struct json_object *l;
	char prefix[64];
	size_t n = 0, plen;

	snprintf(prefix, sizeof(prefix), BITMAP_PREFIX "%s-%u-", job, drive);
	plen = strlen(prefix);
	if (!node || !json_object_object_get_ex(node, "dirty-bitmaps", &l))
		return 0;
	for (size_t i = 0; i < json_object_array_length(l); i++) {
		struct json_object *e = json_object_array_get_idx(l, i);
		const char *name = jstr(e, "name"), *d;

		if (!name || strncmp(name, prefix, plen) || strlen(name) >= sizeof(b->name))
			continue;
		for (d = name + plen; isdigit((unsigned char)*d); d++)
			;
		if (d == name + plen || *d || d - (name + plen) > 9)
			continue;
		if (n < max) {
			struct bitmap *x = &b[n];

			snprintf(x->name, sizeof(x->name), "%s", name);
			x->n = strtoul(name + plen, NULL, 10);
			x->recording = jbool(e, "recording");
			x->inconsistent = jbool(e, "inconsistent");
		}
		n++; /* counted beyond max too: the caller refuses */
	}
	return n;
}

static bool remove_bitmap(struct tp_qmp *q, const char *disk, const char *name,
			  struct err **errp)
{
	return tp_qmp_run(q, "block-dirty-bitmap-remove", jargs("node", disk, "name", name, NULL),
			  QMP_MS, errp);
}

/* Merges the bitmaps into target and removes them, atomically. */
static bool fold_into(struct repl_fleece *f, const char *target, const char *const *names,
		      size_t n, struct err **errp)
{
	struct json_object *actions = json_object_new_array(), *srcs = json_object_new_array();
	struct json_object *m = jargs("node", f->disk, "target", target, NULL);

	for (size_t i = 0; i < n; i++)
		json_object_array_add(srcs, json_object_new_string(names[i]));
	json_object_object_add(m, "bitmaps", srcs);
	action(actions, "block-dirty-bitmap-merge", m);
	for (size_t i = 0; i < n; i++)
		action(actions, "block-dirty-bitmap-remove",
		       jargs("node", f->disk, "name", names[i], NULL));
	return transaction(f->q, actions, errp);
}

/* Leaves at most one bitmap of ours: the recording one, into which every
 * other one was merged (a crashed sync's frozen bitmap), or none when what
 * was recorded is unknown. f->frozen gets it, f->next the name of the one
 * to start. */
static bool settle_bitmaps(struct repl_fleece *f, struct json_object *node, struct err **errp)
{
	struct bitmap b[MAX_BITMAPS];
	size_t n = our_bitmaps(node, f->job, f->drive, b, MAX_BITMAPS), nold = 0;
	const char *old[MAX_BITMAPS];
	unsigned long next = 0;
	int cur = -1;
	bool lost = false;

	if (n > MAX_BITMAPS)
		return err_set(errp, ERR_STATE, "%s has %zu bitmaps of job %s (at most %d)",
			       f->disk, n, f->job, MAX_BITMAPS);
	for (size_t i = 0; i < n; i++) {
		next = b[i].n + 1 > next ? b[i].n + 1 : next;
		lost = lost || b[i].inconsistent;
		if (b[i].recording && !b[i].inconsistent && (cur < 0 || b[i].n > b[cur].n))
			cur = (int)i;
	}
	snprintf(f->next, sizeof(f->next), BITMAP_PREFIX "%s-%u-%lu", f->job, f->drive, next);
	f->frozen[0] = '\0';
	if (lost || cur < 0) {
		/* Unknown writes: the sync reads every allocated block. */
		if (n)
			log_warn("drive%u: job %s: the dirty bitmap %s; the next sync reads the "
				 "whole disk", f->drive, f->job,
				 lost ? "is inconsistent (QEMU was killed?)" : "is not recording");
		for (size_t i = 0; i < n; i++)
			if (!remove_bitmap(f->q, f->disk, b[i].name, errp))
				return false;
		return true;
	}
	snprintf(f->frozen, sizeof(f->frozen), "%s", b[cur].name);
	for (size_t i = 0; i < n; i++)
		if ((int)i != cur)
			old[nold++] = b[i].name;
	if (!nold)
		return true;
	/* A crashed sync's bitmaps: their writes go to the next sync too. */
	log_warn("drive%u: job %s: merging %zu bitmap(s) of an interrupted sync into %s",
		 f->drive, f->job, nold, f->frozen);
	return fold_into(f, f->frozen, old, nold, errp);
}

/* After the view is gone: a frozen bitmap is dropped (its writes reached
 * the replica) or merged into the recording one (they did not). */
static bool release_frozen(struct repl_fleece *f, bool ok, struct err **errp)
{
	const char *frozen[1] = { f->frozen };

	if (!f->frozen[0])
		return true;
	return ok ? remove_bitmap(f->q, f->disk, f->frozen, errp) :
		    fold_into(f, f->next, frozen, 1, errp);
}

/* ---- the view --------------------------------------------------------------------- */

/* The overlay: an empty qcow2 of the disk's size, then the node with
 * diskN as its backing (its header names no backing file). */
static bool add_overlay(struct repl_fleece *f, struct err **errp)
{
	struct json_object *args, *opts, *file;
	_cleanup_free_ char *why = NULL;
	struct statvfs vfs;
	int fd;

	if ((mkdir(f->dir, 0700) < 0 && errno != EEXIST) || chmod(f->dir, 0700) < 0)
		return err_set_errno(errp, errno, "cannot create '%s'", f->dir);
	fd = open(f->overlay, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return err_set_errno(errp, errno, "cannot create '%s'", f->overlay);
	close(fd);
	if (statvfs(f->dir, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < f->size)
		log_warn("drive%u: '%s' has less free space than the disk's size: guest writes "
			 "fail if the fleecing overlay fills it during a sync", f->drive, f->dir);

	opts = json_object_new_object();
	jadd(opts, "driver", "qcow2");
	json_object_object_add(opts, "file", jargs("driver", "file", "filename", f->overlay, NULL));
	json_object_object_add(opts, "size", json_object_new_uint64(f->size));
	json_object_object_add(opts, "cluster-size", json_object_new_int(REPL_BLOCK));
	args = jargs("job-id", f->create_id, NULL);
	json_object_object_add(args, "options", opts);
	if (!tp_qmp_run(f->q, "blockdev-create", args, QMP_MS, errp) ||
	    !end_job(f->q, f->create_id, false, &why, errp))
		return false;
	if (why)
		return err_set(errp, ERR_QMP, "creating '%s': %s", f->overlay, why);

	file = jargs("driver", "file", "filename", f->overlay, NULL);
	args = jargs("driver", "qcow2", "node-name", f->name, "backing", f->disk, NULL);
	json_object_object_add(args, "file", file);
	return tp_qmp_run(f->q, "blockdev-add", args, QMP_MS, errp);
}

/* A server answering on our socket is ours (QEMU runs one at a time).
 * Asked in option mode and left with NBD_OPT_ABORT, which QEMU takes
 * quietly (a bare connect and close would log an error in qemu.log). */
static bool server_is_ours(const char *sock)
{
	struct nbd_handle *h = nbd_create();
	bool ours = h && nbd_set_opt_mode(h, true) == 0 && nbd_connect_unix(h, sock) == 0;

	if (ours)
		nbd_opt_abort(h);
	nbd_close(h);
	return ours;
}

static bool start_server(struct repl_fleece *f, struct err **errp)
{
	struct json_object *addr = json_object_new_object(), *args = json_object_new_object();
	struct err *e = NULL;

	jadd(addr, "type", "unix");
	json_object_object_add(addr, "data", jargs("path", f->sock, NULL));
	json_object_object_add(args, "addr", addr);
	if (tp_qmp_run(f->q, "nbd-server-start", args, QMP_MS, &e)) {
		f->server_ours = true;
		if (chmod(f->sock, 0600) < 0)
			log_warn("chmod '%s': %s", f->sock, strerror(errno));
		return true;
	}
	if (e->code == ERR_QMP && strstr(e->msg, "already running")) {
		err_free(e);
		if (!server_is_ours(f->sock))
			return err_set(errp, ERR_CONFLICT, "QEMU already runs an NBD server that is "
				       "not ours (a disk migration?); the fleecing export needs its own");
		f->server_ours = true; /* another disk's sync, or a crashed one's */
		return true;
	}
	err_propagate(errp, &e);
	return false;
}

/* Stops the server if it is ours and nobody exports through it any more. */
static bool stop_server(struct repl_fleece *f, struct err **errp)
{
	_cleanup_json_ struct json_object *l = NULL;

	if (!f->server_ours)
		return true;
	if (!(l = tp_qmp_call(f->q, "query-block-exports", NULL, QMP_MS, errp)))
		return false;
	if (json_object_array_length(l))
		return true;
	f->server_ours = false;
	return tp_qmp_run(f->q, "nbd-server-stop", NULL, QMP_MS, errp);
}

/* The instant: the next bitmap starts, the current one freezes, and the
 * copy-before-write filter goes in, all in one drained section. */
static bool switch_bitmaps(struct repl_fleece *f, bool persistent, struct err **errp)
{
	struct json_object *actions = json_object_new_array(), *add, *bk;

	add = jargs("node", f->disk, "name", f->next, NULL);
	json_object_object_add(add, "granularity", json_object_new_int(REPL_DIRTY_GRAIN));
	json_object_object_add(add, "persistent", json_object_new_boolean(persistent));
	action(actions, "block-dirty-bitmap-add", add);
	if (f->frozen[0])
		action(actions, "block-dirty-bitmap-disable",
		       jargs("node", f->disk, "name", f->frozen, NULL));
	bk = jargs("job-id", f->name, "device", f->disk, "target", f->name, "sync", "none", NULL);
	action(actions, "blockdev-backup", bk);
	return transaction(f->q, actions, errp);
}

static bool add_export(struct repl_fleece *f, struct err **errp)
{
	struct json_object *args = jargs("type", "nbd", "id", f->name, "node-name", f->name,
					 "name", f->name, NULL);

	json_object_object_add(args, "writable", json_object_new_boolean(false));
	if (f->frozen[0]) {
		struct json_object *bms = json_object_new_array();

		/* the bitmap lives on the overlay's backing node */
		json_object_array_add(bms, jargs("node", f->disk, "name", f->frozen, NULL));
		json_object_object_add(args, "bitmaps", bms);
	}
	return tp_qmp_run(f->q, "block-export-add", args, QMP_MS, errp);
}

static bool nbd_fail(struct err **errp, const char *what)
{
	return err_set(errp, ERR_IO, "%s of the fleecing export: %s", what,
		       nbd_get_error() ? nbd_get_error() : "unknown error");
}

static bool connect_nbd(struct repl_fleece *f, struct err **errp)
{
	char ctx[96];
	int64_t size, max;

	snprintf(ctx, sizeof(ctx), DIRTY_CTX "%s", f->frozen);
	if (!(f->nbd = nbd_create()))
		return nbd_fail(errp, "libnbd handle");
	if (nbd_set_export_name(f->nbd, f->name) < 0 ||
	    nbd_add_meta_context(f->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
	    (f->frozen[0] && nbd_add_meta_context(f->nbd, ctx) < 0))
		return nbd_fail(errp, "setting up the connection");
	if (nbd_connect_unix(f->nbd, f->sock) < 0)
		return nbd_fail(errp, "connecting");
	if (nbd_can_meta_context(f->nbd, f->frozen[0] ? ctx : LIBNBD_CONTEXT_BASE_ALLOCATION) != 1)
		return err_set(errp, ERR_PROTO, "the fleecing export lacks '%s'",
			       f->frozen[0] ? ctx : LIBNBD_CONTEXT_BASE_ALLOCATION);
	size = nbd_get_size(f->nbd);
	if (size < 0)
		return nbd_fail(errp, "size");
	if ((uint64_t)size != f->size)
		return err_set(errp, ERR_PROTO, "the fleecing export has %" PRId64
			       " bytes, the disk %" PRIu64, size, f->size);
	max = nbd_get_block_size(f->nbd, LIBNBD_SIZE_MAXIMUM);
	f->max_read = max > 0 && max < READ_CHUNK ? (uint64_t)max : READ_CHUNK;
	return true;
}

static void ra_free(struct repl_fleece *f);

/* Everything of the view goes; the bitmaps as `ok` says (repl.h). */
/* The view's half of the teardown: our reader, then QEMU's export,
 * fleecing job, overlay node and NBD server. */
static bool close_view(struct repl_fleece *f, struct err **errp)
{
	bool done = true;

	ra_free(f);
	if (f->nbd) {
		nbd_shutdown(f->nbd, 0);
		nbd_close(f->nbd);
		f->nbd = NULL;
	}
	if (f->view_closed)
		return true;
	done = sweep(f->q, f->drive, f->job, f->overlay, errp) && done;
	done = stop_server(f, errp) && done;
	f->view_closed = done;
	return done;
}

static bool teardown(struct repl_fleece *f, bool ok, struct err **errp)
{
	bool done;

	/* A failed step leaves the rest for the next begin's sweep; the
	 * frozen bitmap stays (busy) and gets merged then. */
	done = close_view(f, errp);
	if (f->started)
		done = release_frozen(f, ok, errp) && done;
	/* also if QEMU is gone; a live one keeps using the inode */
	if (unlink(f->overlay) < 0 && errno != ENOENT)
		log_warn("cannot remove '%s': %s", f->overlay, strerror(errno));
	return done;
}

static bool job_ok(const char *job)
{
	size_t len = job ? strlen(job) : 0;

	if (!len || len > JOB_MAX)
		return false;
	for (; *job; job++)
		if (!isalnum((unsigned char)*job) && !strchr("-_.", *job))
			return false;
	return true;
}

struct repl_fleece *repl_fleece_begin(struct tp_qmp *q, const char *run_dir, unsigned drive,
				      const char *job, struct err **errp)
{
	_cleanup_json_ struct json_object *nodes = NULL;
	struct json_object *node, *img, *vs, *fs;
	struct repl_fleece *f;
	const char *drv, *compat;
	bool persistent;

	if (!job_ok(job)) {
		err_set(errp, ERR_INVAL, "invalid replication job '%s' (1-%d of A-Z a-z 0-9 - _ .)",
			job ? job : "", JOB_MAX);
		return NULL;
	}
	if (drive > 99 || !run_dir || strlen(run_dir) > 90) {
		err_set(errp, ERR_INVAL, "invalid drive %u or run directory '%s'", drive,
			run_dir ? run_dir : "");
		return NULL;
	}
	if (!(f = calloc(1, sizeof(*f)))) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	f->q = q;
	pthread_mutex_init(&f->ra_lock, NULL);
	f->drive = drive;
	snprintf(f->job, sizeof(f->job), "%s", job);
	snprintf(f->disk, sizeof(f->disk), "disk%u", drive);
	snprintf(f->name, sizeof(f->name), "vmmf%u-%s", drive, job);
	snprintf(f->create_id, sizeof(f->create_id), "vmmc%u-%s", drive, job);
	snprintf(f->dir, sizeof(f->dir), "%s/fleece", run_dir);
	snprintf(f->sock, sizeof(f->sock), "%s/nbd.sock", f->dir);
	snprintf(f->overlay, sizeof(f->overlay), "%s/%u-%s.qcow2", f->dir, drive, job);

	/* Leftovers of a crashed sync first: their export holds a bitmap. */
	if (!sweep(q, drive, job, f->overlay, errp) || !(nodes = query_nodes(q, errp)))
		goto fail;
	node = find(nodes, "node-name", f->disk);
	if (!node) {
		err_set(errp, ERR_NOTFOUND, "QEMU has no node %s", f->disk);
		goto fail;
	}
	if (!json_object_object_get_ex(node, "image", &img) ||
	    !json_object_object_get_ex(img, "virtual-size", &vs)) {
		err_set(errp, ERR_PROTO, "no size for %s in query-named-block-nodes", f->disk);
		goto fail;
	}
	f->size = (uint64_t)json_object_get_int64(vs);
	/* qcow2 v3 holds bitmaps; raw and qcow2 v2 (compat 0.10) cannot */
	persistent = (drv = jstr(node, "drv")) && !strcmp(drv, "qcow2") &&
		     json_object_object_get_ex(img, "format-specific", &fs) &&
		     json_object_object_get_ex(fs, "data", &fs) &&
		     (compat = jstr(fs, "compat")) && strcmp(compat, "0.10");
	if (!settle_bitmaps(f, node, errp) || !add_overlay(f, errp) || !start_server(f, errp))
		goto fail;
	if (!switch_bitmaps(f, persistent, errp))
		goto fail;
	f->started = true;
	if (!add_export(f, errp) || !connect_nbd(f, errp))
		goto fail;
	log_info("drive%u: job %s: point-in-time view of %" PRIu64 " bytes, %s", drive, job,
		 f->size, f->frozen[0] ? "writes since the last sync known" :
					 "no record of earlier writes");
	return f;
fail:
	err_prefix(errp ? *errp : NULL, "drive%u: fleecing for job %s", drive, job);
	teardown(f, false, NULL);
	pthread_mutex_destroy(&f->ra_lock);
	free(f);
	return NULL;
}

/* ---- reading it ----------------------------------------------------------------------- */

struct walk {
	const char *ctx;
	bool want_set;            /* dirty bitmap: flag set; allocation: HOLE clear */
	uint64_t size;
	uint64_t covered;         /* bytes this reply described */
	bool got;
	struct tp_extent *ext;
	size_t n, cap;
	bool oom;
};

/* Appends [off, off+len) rounded out to REPL_DIRTY_GRAIN; sorted input. */
static void walk_add(struct walk *w, uint64_t off, uint64_t len)
{
	uint64_t start = off / REPL_DIRTY_GRAIN * REPL_DIRTY_GRAIN;
	uint64_t end = (off + len + REPL_DIRTY_GRAIN - 1) / REPL_DIRTY_GRAIN * REPL_DIRTY_GRAIN;

	if (end > w->size)
		end = w->size;
	if (w->n && start <= w->ext[w->n - 1].offset + w->ext[w->n - 1].length) {
		struct tp_extent *l = &w->ext[w->n - 1];

		if (end > l->offset + l->length)
			l->length = end - l->offset;
		return;
	}
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 64;
		struct tp_extent *e = realloc(w->ext, cap * sizeof(*e));

		if (!e) {
			w->oom = true;
			return;
		}
		w->ext = e;
		w->cap = cap;
	}
	w->ext[w->n++] = (struct tp_extent){ .offset = start, .length = end - start };
}

static int walk_cb(void *opaque, const char *ctx, uint64_t off, uint32_t *entries, size_t nr,
		   int *error)
{
	struct walk *w = opaque;

	(void)error;
	if (strcmp(ctx, w->ctx) || w->got)
		return 0;
	w->got = true;
	for (size_t i = 0; i + 1 < nr && off < w->size; i += 2) {
		uint64_t len = entries[i];
		bool set = entries[i + 1] & 1; /* DIRTY, or HOLE for base:allocation */

		if (len > w->size - off)
			len = w->size - off; /* the last extent may run past the request */
		if (len && set == w->want_set)
			walk_add(w, off, len);
		off += len;
		w->covered += len;
	}
	return 0;
}

bool repl_fleece_dirty(struct repl_fleece *f, struct tp_extent **ext, size_t *n,
		       bool *complete, struct err **errp)
{
	char ctx[96];
	struct walk w = { .ctx = ctx, .size = f->size };

	if (f->frozen[0])
		snprintf(ctx, sizeof(ctx), DIRTY_CTX "%s", f->frozen);
	else
		snprintf(ctx, sizeof(ctx), "%s", LIBNBD_CONTEXT_BASE_ALLOCATION);
	w.want_set = f->frozen[0] != '\0';
	for (uint64_t off = 0; off < f->size;) {
		uint64_t count = f->size - off < STATUS_CHUNK ? f->size - off : STATUS_CHUNK;
		nbd_extent_callback cb = { .callback = walk_cb, .user_data = &w };

		w.got = false;
		w.covered = 0;
		if (nbd_block_status(f->nbd, count, off, cb, 0) < 0) {
			nbd_fail(errp, "block status");
			goto fail;
		}
		if (w.oom) {
			err_set(errp, ERR_IO, "out of memory");
			goto fail;
		}
		if (!w.got || !w.covered) {
			err_set(errp, ERR_PROTO, "no '%s' status at offset %" PRIu64, ctx, off);
			goto fail;
		}
		off += w.covered;
	}
	*ext = w.ext;
	*n = w.n;
	*complete = f->frozen[0] != '\0';
	return true;
fail:
	err_prefix(errp ? *errp : NULL, "drive%u: dirty extents", f->drive);
	free(w.ext);
	return false;
}

/* ---- reading ahead ---------------------------------------------------------------------
 * A sync reads the dirty extents in order, one at a time: each an NBD round
 * trip through QEMU (and a disk read, the data written O_DIRECT). With the
 * plan known, up to RA_SLOTS requests are in flight instead, and reads that
 * follow the plan are served from them. */

/* Waits for slot s's request; false if it failed. */
static bool ra_wait(struct repl_fleece *f, struct ra_slot *s)
{
	int r;

	while ((r = nbd_aio_command_completed(f->nbd, (uint64_t)s->cookie)) == 0)
		if (nbd_poll(f->nbd, -1) < 0)
			return false;
	return r == 1;
}

static void ra_pop(struct repl_fleece *f)
{
	struct readahead *ra = f->ra;
	struct ra_slot *s = &ra->slot[ra->head];

	if (s->cookie > 0)
		ra_wait(f, s); /* its buffer must not go while QEMU's reply may land in it */
	free(s->buf);
	*s = (struct ra_slot){ 0 };
	ra->head = (ra->head + 1) % RA_SLOTS;
	ra->count--;
}

/* Issues requests along the plan until the slots are full. */
static void ra_fill(struct repl_fleece *f)
{
	struct readahead *ra = f->ra;

	while (!ra->failed && ra->count < RA_SLOTS && ra->xi < ra->n) {
		const struct tp_extent *x = &ra->ext[ra->xi];
		struct ra_slot *s = &ra->slot[(ra->head + ra->count) % RA_SLOTS];
		uint64_t end = x->offset + x->length;

		if (ra->pos < x->offset)
			ra->pos = x->offset;
		if (ra->pos >= end) {
			ra->xi++;
			continue;
		}
		s->off = ra->pos;
		s->len = end - ra->pos < RA_PIECE ? (size_t)(end - ra->pos) : RA_PIECE;
		s->buf = malloc(s->len);
		s->cookie = s->buf ? nbd_aio_pread(f->nbd, s->buf, s->len, s->off, NBD_NULL_COMPLETION, 0)
				   : -1;
		if (s->cookie <= 0) {
			free(s->buf);
			*s = (struct ra_slot){ 0 };
			ra->failed = true;
			return;
		}
		ra->pos += s->len;
		ra->count++;
	}
}

static void ra_free(struct repl_fleece *f)
{
	if (!f->ra)
		return;
	while (f->ra->count)
		ra_pop(f);
	free(f->ra->ext);
	free(f->ra);
	f->ra = NULL;
}

/* Serves what it can of [*off, *off + *len) from the read-ahead, in plan
 * order; what is left (off the plan) the caller reads directly. */
static bool ra_take(struct repl_fleece *f, uint8_t **buf, size_t *len, uint64_t *off,
		    struct err **errp)
{
	struct readahead *ra = f->ra;

	while (*len) {
		struct ra_slot *s;
		size_t n;

		ra_fill(f);
		while (ra->count && ra->slot[ra->head].off + ra->slot[ra->head].len <= *off)
			ra_pop(f); /* behind the reader: skipped */
		s = &ra->slot[ra->head];
		if (!ra->count || s->off > *off)
			return true;
		if (s->cookie > 0 && !ra_wait(f, s)) {
			s->cookie = 0;
			return err_set(errp, ERR_IO, "drive%u: reading %zu bytes at %" PRIu64
				       " of the fleecing export: %s", f->drive, s->len, s->off,
				       nbd_get_error() ? nbd_get_error() : "unknown error");
		}
		s->cookie = 0; /* done: its data is s->buf's */
		n = (size_t)(s->off + s->len - *off) < *len ? (size_t)(s->off + s->len - *off) : *len;
		memcpy(*buf, s->buf + (*off - s->off), n);
		*buf += n;
		*off += n;
		*len -= n;
	}
	return true;
}

bool repl_fleece_plan(struct repl_fleece *f, const struct tp_extent *ext, size_t n,
		      struct err **errp)
{
	struct readahead *ra = NULL;

	pthread_mutex_lock(&f->ra_lock);
	ra_free(f);
	if (n && (!(ra = calloc(1, sizeof(*ra))) || !(ra->ext = malloc(n * sizeof(*ext))))) {
		free(ra);
		pthread_mutex_unlock(&f->ra_lock);
		return err_set(errp, ERR_IO, "out of memory");
	}
	if (ra) {
		memcpy(ra->ext, ext, n * sizeof(*ext));
		ra->n = n;
		f->ra = ra;
	}
	pthread_mutex_unlock(&f->ra_lock);
	return true;
}

bool repl_fleece_read(void *fleece, void *buf, size_t len, uint64_t off, struct err **errp)
{
	struct repl_fleece *f = fleece;
	bool planned;

	if (off > f->size || len > f->size - off)
		return err_set(errp, ERR_INVAL, "drive%u: read of %zu bytes at %" PRIu64
			       " past the end (%" PRIu64 ")", f->drive, len, off, f->size);
	pthread_mutex_lock(&f->ra_lock);
	planned = f->ra != NULL;
	if (planned && !ra_take(f, (uint8_t **)&buf, &len, &off, errp)) {
		pthread_mutex_unlock(&f->ra_lock);
		return false;
	}
	if (!planned)
		pthread_mutex_unlock(&f->ra_lock);
	while (len) {
		size_t chunk = len < f->max_read ? len : f->max_read;

		if (nbd_pread(f->nbd, buf, chunk, off, 0) < 0)
			return err_set(errp, ERR_IO, "drive%u: reading %zu bytes at %" PRIu64
				       " of the fleecing export: %s", f->drive, chunk, off,
				       nbd_get_error() ? nbd_get_error() : "unknown error");
		buf = (char *)buf + chunk;
		off += chunk;
		len -= chunk;
	}
	if (planned)
		pthread_mutex_unlock(&f->ra_lock);
	return true;
}

uint64_t repl_fleece_size(const struct repl_fleece *f)
{
	return f->size;
}

void repl_fleece_close_view(struct repl_fleece *f)
{
	struct err *e = NULL;

	if (f && !close_view(f, &e)) {
		log_debug("drive%u: job %s: closing the view early: %s (retried at the end)",
			  f->drive, f->job, e->msg);
		err_free(e);
	}
}

void repl_fleece_end(struct repl_fleece *f, bool ok)
{
	struct err *e = NULL;

	if (!f)
		return;
	if (!teardown(f, ok, &e)) {
		log_warn("drive%u: job %s: ending the fleecing view: %s (the next sync cleans "
			 "up)", f->drive, f->job, e->msg);
		err_free(e);
	}
	pthread_mutex_destroy(&f->ra_lock);
	free(f);
}

bool repl_fleece_forget(struct tp_qmp *q, unsigned drive, const char *job, struct err **errp)
{
	_cleanup_json_ struct json_object *nodes = NULL;
	struct bitmap b[MAX_BITMAPS];
	char disk[16];
	size_t n;

	if (!job_ok(job))
		return err_set(errp, ERR_INVAL, "invalid replication job '%s'", job ? job : "");
	snprintf(disk, sizeof(disk), "disk%u", drive);
	if (!sweep(q, drive, job, NULL, errp) || !(nodes = query_nodes(q, errp)))
		return false;
	n = our_bitmaps(find(nodes, "node-name", disk), job, drive, b, MAX_BITMAPS);
	if (n > MAX_BITMAPS)
		n = MAX_BITMAPS; /* the rest on another call */
	for (size_t i = 0; i < n; i++)
		if (!remove_bitmap(q, disk, b[i].name, errp))
			return false;
	return true;
}
