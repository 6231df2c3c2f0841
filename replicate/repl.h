/*
 * repl.h - replicate/: scheduled storage replication of guests' disks to
 * another node (like Proxmox's pvesr, on plain raw/qcow2 files). The only
 * header other folders include from replicate/.
 *
 * How a sync moves one disk (DESIGN.md §5):
 *
 *   source node                                    target node
 *   the disk as of one instant ------------------> the replica, switched to
 *   (a file, or QEMU's fleecing export)            that instant atomically
 *        |  which blocks: all (first sync),
 *        |  dirty since the last sync (QEMU's dirty bitmap, running guest),
 *        |  or differing from the last sync's block hashes (repl_manifest)
 *        v
 *   tp_stream records (extents, zstd, zeros skipped, checksummed)
 *
 * Pieces:
 *   repl_schedule.h  when jobs run (pvesr calendar events)
 *   repl_volume.c    a volume as its guest sees it: raw bytes, or a qcow2
 *                    image through qemu-nbd (format from the name)
 *   repl_replica.c   the target's replica: receive an update durably,
 *                    apply it (io_uring; qemu-nbd for qcow2), recover
 *                    after a crash
 *   repl_manifest.c  block hashes of what the replica holds, on the source
 *   repl_fleece.c    a running guest's point-in-time view and dirty bitmap
 *                    through QMP (fleecing + NBD export), read with libnbd
 */
#ifndef VMM_REPL_H
#define VMM_REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "../common/err.h"
#include "../transport/tp.h"
#include "../transport/tp_stream.h"
#include "repl_schedule.h"

#define REPL_BLOCK (64u << 10)      /* granularity of block hashes */
/* Granularity of the dirty bitmaps and of the extents a bitmap sync
 * sends: a guest's scattered 4 KiB writes would cost 16 times their size
 * on the wire at 64 KiB (measured: 151 MB sent for ~16 MB written). */
#define REPL_DIRTY_GRAIN (4u << 10)

/* Reads len bytes at off of a disk into buf (the whole range: short
 * reads are errors). The sender's data source. */
typedef bool (*repl_read_fn)(void *opaque, void *buf, size_t len, uint64_t off,
			     struct err **errp);

/* ---- a volume as its guest sees it (repl_volume.c) ------------------------------
 * The format comes from the volume's name (util_volume_is_qcow2), never
 * from its content. A raw volume's bytes are what its guest
 * sees; a qcow2 volume is read and written through a qemu-nbd child of
 * ours (started with -f qcow2), which exits when we close it or die. */

/* The size the guest sees of the file open on fd (path: for messages):
 * raw, the file's or block device's size; qcow2 (the format its volume's
 * name says), the image's virtual size from its header, ERR_STATE if it
 * is no qcow2 image. */
bool repl_vol_size(const char *path, int fd, bool qcow2, uint64_t *size, struct err **errp);
/* A new empty qcow2 image of size bytes at path (mode 0600; qemu-img).
 * ERR_CONFLICT if path exists. */
bool repl_vol_create_qcow2(const char *path, uint64_t size, struct err **errp);

struct repl_vol;

/* Opens the qcow2 image at path (the caller knows it is one by the
 * volume's name; ERR_STATE if it is not), read-only unless writable;
 * fails if something else holds it for writing (QEMU's image lock: a
 * running guest, another writer), after retrying for two seconds. */
struct repl_vol *repl_vol_open(const char *path, bool writable, struct err **errp);
/* Writable, without a single flush: the data reaches the file (once
 * closed: qemu-nbd has exited) but is durable only after the caller's
 * fsync of the image. For writes a crash may lose because a commit
 * redoes them. */
struct repl_vol *repl_vol_open_unsynced(const char *path, struct err **errp);
uint64_t repl_vol_get_size(const struct repl_vol *v);
/* A repl_read_fn (opaque: the struct repl_vol); one thread at a time. */
bool repl_vol_read(void *vol, void *buf, size_t len, uint64_t off, struct err **errp);
/* Queues the write (up to 8 requests in flight, the data copied): a
 * failure may be reported by a later write, zero or the close, naming
 * the offset that failed. */
bool repl_vol_write(struct repl_vol *v, const void *buf, size_t len, uint64_t off,
		    struct err **errp);
/* The range reads as zeros afterwards (its clusters may be dropped). */
bool repl_vol_zero(struct repl_vol *v, uint64_t off, uint64_t len, struct err **errp);
/* Flushes what was written to stable storage (unless opened unsynced),
 * then closes; false (and *errp) if a queued write or the flush failed,
 * or, unsynced, if qemu-nbd did not close the image by itself. NULL is
 * fine. */
bool repl_vol_close(struct repl_vol *v, struct err **errp);

/* ---- the replica on the target (repl_replica.c) -------------------------------
 * A replica is the volume file itself, at the same storage path as the
 * source's disk (so a migration to this node can run on it), in the
 * volume's format (a .qcow2 volume's replica is a qcow2 image holding the
 * guest's view of the disk, not a copy of the source's file), plus files
 * beside it, all mode 0600:
 *   PATH.repl         {"job","gen","time","size","source"}: the point in
 *                     time the replica holds (written atomically)
 *   PATH.repl-delta   an update's data: a sparse file of the volume's size
 *                     with the received records at their offsets
 *   PATH.repl-commit  {"gen","time","extents":[[off,len],...]}: the update
 *                     is durable and must be applied; written atomically
 *                     (tmp + fsync + rename + directory fsync) only after
 *                     the delta verified (END record) and was fsynced
 * Applying copies each extent from the delta to the replica (raw: io_uring,
 * batched, holes of the delta punched into the replica; qcow2: through
 * qemu-nbd, holes written as zeros, then a flush), fsyncs, writes
 * PATH.repl with the new generation, then removes the commit and the delta.
 * Every step is idempotent, so whatever instant a process is killed, the
 * replica as repl_replica_recover() leaves it is the previous point in time
 * (no commit yet: the delta is dropped) or the new one (commit present:
 * applied again), never a mix. Readers of a replica (a migration or an HA
 * start on it, a test) call repl_replica_recover() first. */

struct repl_replica_info {
	char job[24];
	uint64_t gen;         /* 0: no replica */
	int64_t time;         /* the point in time it holds, unix seconds */
	uint64_t size;
	char source[64];
};

/* Finishes or drops an interrupted update of the replica at path; fills
 * *info (gen 0 if there is no replica). An update or create of it that is
 * running (or settling) holds a lock on its delta or part: this waits for
 * it up to the lock wait (30 s; tests shorten it), then ERR_CONFLICT. */
void repl_replica_set_lock_wait(int ms);
bool repl_replica_recover(const char *path, struct repl_replica_info *info, struct err **errp);

/* The first sync: a full tp_stream into path.part, then path.repl, then
 * path.part renamed to path (recover finishes a create killed between the
 * two). A replica or file already at path: ERR_CONFLICT. */
bool repl_replica_create(const char *path, int in_fd, const struct repl_replica_info *info,
			 struct tp_stream_progress *final, struct err **errp);

/* An incremental sync: an extents tp_stream applied as described above,
 * from the generation the replica holds (info->gen must be its gen + 1;
 * else ERR_STATE and nothing changes). */
bool repl_replica_update(const char *path, int in_fd, const struct repl_replica_info *info,
			 struct tp_stream_progress *final, struct err **errp);

/* The same, returning as soon as the new generation is durable (its
 * commit) and the replica reads as it, so that a caller can report
 * success first: a raw replica's writes are not yet fsynced, PATH.repl
 * still names the previous generation, the commit and the delta are
 * there. Whatever happens next, recovery makes it the new generation
 * (the commit is applied again). *pend keeps the delta open and locked, so
 * a recovery meanwhile waits; repl_replica_settle() then fsyncs the
 * replica, records the generation and removes the side files (about 0.1 s
 * per 40 MB here, off the caller's critical path). Every pend that
 * succeeded goes to settle or drop. */
struct repl_replica_pending {
	int dfd;                        /* the delta, locked; -1: nothing pending */
	char path[4096];
	struct repl_replica_info next;
};
bool repl_replica_update_durable(const char *path, int in_fd, const struct repl_replica_info *info,
				 struct repl_replica_pending *pend, struct tp_stream_progress *final,
				 struct err **errp);
/* Finishes pend (nothing to do if none); on failure what is left is for
 * the next recovery. Either way pend is empty afterwards. */
bool repl_replica_settle(struct repl_replica_pending *pend, struct err **errp);
/* Lets go of pend unfinished: as if the process had been killed. */
void repl_replica_pending_drop(struct repl_replica_pending *pend);

/* Removes a replica and its side files. */
bool repl_replica_remove(const char *path, struct err **errp);

/* A migration to the replica's node turns the roles around:
 * adopt: the volume at path (the old source's disk, which stopped changing
 * at the switchover and holds what the new replica generation holds) is
 * made the replica info describes, by writing PATH.repl; no data moves.
 * It must have info->size bytes; ERR_CONFLICT if a replica is there.
 * release: the replica at path becomes a plain volume (a guest runs on it
 * now): an interrupted update is finished first, then the side files go,
 * PATH.repl first; the volume stays. */
bool repl_replica_adopt(const char *path, const struct repl_replica_info *info, struct err **errp);
bool repl_replica_release(const char *path, struct err **errp);

/* ---- block hashes on the source (repl_manifest.c) -----------------------------
 * What the replica holds, as one hash (SHA-256, first 16 bytes) per
 * REPL_BLOCK of the volume, with the replica generation it describes. A
 * sync that cannot use a dirty bitmap (guest stopped, raw disk whose
 * in-memory bitmap went with a QEMU restart) reads the disk, hashes it and
 * sends only the blocks whose hash differs; a bitmap sync updates the
 * hashes of the blocks it sent. Kept per job and disk on the source
 * (DATA_DIR/repl/<job>/<drive>.manifest), written atomically but not
 * fsynced: a cache, checksummed and naming its generation, so after a crash
 * an older or torn file is refused and the next sync rebuilds it. */

struct repl_manifest;

struct repl_manifest *repl_manifest_new(uint64_t size, struct err **errp);
/* ERR_NOTFOUND if missing; ERR_STATE if it is for another size or gen
 * (then it is useless: the caller syncs in full). */
struct repl_manifest *repl_manifest_load(const char *path, uint64_t size, uint64_t gen,
					 struct err **errp);
bool repl_manifest_save(const struct repl_manifest *m, const char *path, uint64_t gen,
			struct err **errp);
void repl_manifest_free(struct repl_manifest *m);

/* ---- the replication agent's requests (repl_agent.c) ----------------------
 * What `vmrepl _agent` (cli/repl_agent.c) is asked over the control channel
 * (migrate/mig_agent.c), checked before anything is done for it. */

/* A manifest sent to the agent in pieces: 16 B per 64 KiB, volumes up to
 * 256 TiB. */
#define REPL_MANIFEST_WIRE_MAX (64u << 20)

/* Whether req is a request the agent knows, with the fields its command
 * needs; ERR_PROTO naming what is wrong. */
bool repl_agent_req_check(struct json_object *req, struct err **errp);

/* A manifest arriving in base64 pieces (manifest-put). */
struct repl_mani_rx {
	uint8_t *buf;
	size_t len, have;
};
/* Adds the piece at byte off of a manifest of total bytes: off 0 starts
 * over, any other must follow the last piece of the same total. *whole:
 * all total bytes are in buf. */
bool repl_mani_rx_add(struct repl_mani_rx *m, size_t total, size_t off, const char *b64,
		      bool *whole, struct err **errp);
void repl_mani_rx_free(struct repl_mani_rx *m);

/* Reads the whole volume through read, hashes it and returns the blocks
 * whose hash changed as sorted, merged extents (*ext caller-freed); the
 * manifest then holds the new hashes. A new manifest differs everywhere
 * (except in blocks of zeros, which a fresh replica holds too). */
bool repl_manifest_diff(struct repl_manifest *m, repl_read_fn read, void *opaque,
			struct tp_extent **ext, size_t *n, struct err **errp);
/* Hashes the blocks that [off, off + len) covers whole from buf (data of
 * the volume being sent): the next update skips them. For a sender's
 * reader thread; nothing else may use m meanwhile. */
bool repl_manifest_absorb(struct repl_manifest *m, const void *buf, size_t len, uint64_t off,
			  struct err **errp);
/* Rehashes just these extents (what a bitmap sync sent), but for blocks
 * absorbed since the last update. */
bool repl_manifest_update(struct repl_manifest *m, repl_read_fn read, void *opaque,
			  const struct tp_extent *ext, size_t n, struct err **errp);

/* ---- a running guest's disks (repl_fleece.c) ----------------------------------
 * For one disk of a running QEMU (its drive "driveN" / node "diskN"):
 * a dirty bitmap that records what the guest writes between syncs, and at
 * each sync a point-in-time view of the disk (image fleecing: a temporary
 * qcow2 overlay filled copy-before-write by a blockdev-backup sync=none
 * job) exported read-only over NBD on a private unix socket together with
 * the bitmap of the writes since the last sync, read here with libnbd.
 *
 *   repl_fleece_begin()  in one QMP transaction: a fresh bitmap starts
 *                        recording, the previous one freezes, fleecing
 *                        starts - all at the same instant
 *   repl_fleece_dirty()  the frozen bitmap's dirty extents (all allocated
 *                        extents if there was no bitmap: first sync, or it
 *                        was lost with a QEMU restart or QEMU was killed
 *                        - *complete false)
 *   repl_fleece_read()   data as of begin
 *   repl_fleece_end(ok)  tears the view down; ok: the frozen bitmap goes;
 *                        failed: it is merged into the new one, so the next
 *                        sync sends both (nothing is ever lost)
 * Bitmaps are named "vmm-repl-<job>-<drive>-<n>" and are persistent on
 * qcow2 v3 disks (they survive a clean QEMU restart there). */

struct repl_fleece;

/* job: 1-23 of A-Z a-z 0-9 - _ . (ERR_INVAL); drive: 0-99.
 * run_dir: the guest's QEMU run dir (at most 90 bytes); the overlay and
 * the NBD socket go to run_dir/fleece/ (mode 0700), and the overlay's file
 * system must have room for what the guest overwrites during the sync.
 * Sweeps what a crashed sync of the same job and drive left behind.
 * ERR_CONFLICT if QEMU runs an NBD server of someone else's. */
struct repl_fleece *repl_fleece_begin(struct tp_qmp *q, const char *run_dir, unsigned drive,
				      const char *job, struct err **errp);
/* *complete: the extents are exactly what changed since the last sync
 * (a bitmap existed); false: they are every allocated extent. */
bool repl_fleece_dirty(struct repl_fleece *f, struct tp_extent **ext, size_t *n,
		       bool *complete, struct err **errp);
/* A repl_read_fn. Any thread may call it, also several at once (libnbd
 * serialises them on the one connection); begin, dirty, end and forget
 * use q and run on the thread that owns it, and end only once no read of
 * that view is in flight. */
bool repl_fleece_read(void *fleece, void *buf, size_t len, uint64_t off, struct err **errp);
uint64_t repl_fleece_size(const struct repl_fleece *f);
/* The extents the next reads will take, in order (a sync's send): up to
 * 24 MiB of them are read ahead, with requests in flight at once instead
 * of one round trip each. Reads off the plan are still served. n = 0
 * drops the plan (waiting for what is in flight). */
bool repl_fleece_plan(struct repl_fleece *f, const struct tp_extent *ext, size_t n,
		      struct err **errp);
/* The view's half of repl_fleece_end() ahead of time, once the last read
 * of it is done and while the bitmaps' fate is still open (a sync waiting
 * for the target's verdict): end then only settles the bitmaps. A failure
 * is left for end, which tries again. */
void repl_fleece_close_view(struct repl_fleece *f);
void repl_fleece_end(struct repl_fleece *f, bool ok);
/* Removes the bitmaps of a job from the QEMU (job deleted), and what a
 * crashed sync of it left there. */
bool repl_fleece_forget(struct tp_qmp *q, unsigned drive, const char *job, struct err **errp);

/* ---- a job's state (repl_job.c) -------------------------------------------------
 * In the cluster store as replication/state/<job id> (JSON), written by
 * the job's source node: the scheduler and the sync worker. */

enum repl_state {
	REPL_STATE_NEW,      /* never synced */
	REPL_STATE_OK,       /* the last sync succeeded */
	REPL_STATE_SYNCING,  /* a worker (pid, on node) runs it now */
	REPL_STATE_ERROR,    /* the last sync failed (error, fail_count) */
	REPL_STATE_MAX
};

struct repl_job_state {
	enum repl_state state;
	uint64_t gen;        /* the replica's generation after the last sync (0: none) */
	int64_t created;     /* when the job was created (unix s) */
	int64_t last_sync;   /* the point in time the replica holds */
	int64_t last_try;    /* when the last attempt started */
	int64_t duration_ms; /* of the last successful sync */
	unsigned fail_count; /* failures since the last success */
	uint64_t bytes;      /* sent by the last sync */
	pid_t pid;           /* the running worker (state syncing) */
	bool run_now;        /* `vmrepl schedule-now`: run at the next look */
	char error[256];
	char node[64];       /* where the worker runs / ran: the source */
	char target[64];
};

struct clu_client;

const char *repl_state_name(enum repl_state s);
const char *repl_state_key(const char *job, char *buf, size_t len);
bool repl_state_parse(const char *text, struct repl_job_state *st, struct err **errp);
char *repl_state_format(const struct repl_job_state *st); /* caller frees; NULL: no memory */
/* A job without state reads as state NEW, gen 0 (version 0). */
bool repl_state_read(struct clu_client *c, const char *job, struct repl_job_state *st,
		     uint64_t *version, struct err **errp);
/* Read, edit (return false: nothing to write), conditional write; retried
 * when another writer came in between. */
bool repl_state_update(struct clu_client *c, const char *job,
		       bool (*edit)(struct repl_job_state *st, void *opaque), void *opaque,
		       struct err **errp);
bool repl_state_delete(struct clu_client *c, const char *job, struct err **errp);

/* Seconds to wait after the fail_count-th failure in a row: 5, 10, 15
 * minutes, then 30 (as pvesr). */
int repl_retry_delay_s(unsigned fail_count);
/* When the job runs next: now if run_now; after a failure last_try plus
 * the retry delay; else the schedule's first event after the last attempt
 * (or after its creation; after now for a job without a state record yet).
 * False if the schedule has no next event. */
bool repl_next_run(const struct repl_schedule *s, const struct repl_job_state *st, time_t now,
		   time_t *next);

#endif
