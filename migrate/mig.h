/*
 * mig.h - migrate/: QEMU processes and moving them between nodes.
 *
 * The only header other folders include from migrate/.
 *
 * Guest launcher (mig_qemu.c)
 *   mig_qemu_start() starts one QEMU for a guest as a direct child of the
 *   caller (never -daemonize: this machine's init reaps orphans late), in
 *   the network namespace of a node when spec->netns is set, with its run
 *   files in spec->dir:
 *     qmp.sock     QMP monitor          console.log  first serial port
 *     cmd.sock     second serial port   qemu.log     QEMU's stderr
 *     qemu.pid     QEMU's pid
 *   It returns once QMP answered, or fails with QEMU's own last words
 *   ("QEMU exited (status 1): ...could not open disk...") and leaves no
 *   process behind. The caller owns the returned struct mig_qemu and must
 *   mig_qemu_stop() it (or mig_qemu_release() to let it run on).
 *   mig_qemu_stop() asks QMP `quit`, then SIGTERM, then SIGKILL, and reaps.
 *
 * Accelerator (mig_accel.c)
 *   "auto" uses KVM only where a probe guest really boots under it (an
 *   openable /dev/kvm is not enough: a nested PVM opens and then fails).
 *   The verdict is cached per kernel release in the state dir.
 *   VMM_ACCEL=kvm|tcg|auto overrides the default "auto".
 *
 * Raw migration (mig_raw.c)
 *   Drives QEMU's own migration between two running QMP connections as an
 *   explicit state machine (mig_raw_state_name()); on any failure the
 *   source is left running and the target is left for the caller to stop.
 */
#ifndef VMM_MIG_H
#define VMM_MIG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "../common/err.h"
#include "../transport/tp.h"

/* ---- accelerator ----------------------------------------------------- */

enum mig_accel { MIG_ACCEL_AUTO, MIG_ACCEL_KVM, MIG_ACCEL_TCG, MIG_ACCEL_MAX };

const char *mig_accel_name(enum mig_accel a);
bool mig_accel_parse(const char *s, enum mig_accel *out, struct err **errp);

/* What the probe boots: a kernel + initramfs that print a line containing
 * "VMTEST READY mode=probe" on the first serial port and power off. */
struct mig_probe {
	const char *qemu;     /* QEMU binary */
	const char *kernel;
	const char *initrd;
	const char *cache_dir; /* where the verdict is kept; NULL = no cache */
	int timeout_ms;
};

/* Resolves AUTO to KVM or TCG; KVM asked explicitly needs /dev/kvm.
 * *why gets a static explanation for the log. */
bool mig_accel_resolve(enum mig_accel want, const struct mig_probe *probe,
		       enum mig_accel *out, const char **why, struct err **errp);

/* ---- launcher -------------------------------------------------------- */

#define MIG_MAX_DISKS 8

struct mig_qemu_spec {
	const char *name;     /* guest name, [A-Za-z0-9_.-]+ */
	const char *dir;      /* run dir, created if missing */
	const char *netns;    /* node namespace, NULL = the caller's */
	const char *qemu;     /* binary; NULL = $VMM_QEMU or qemu-system-x86_64 */
	uint64_t mem_bytes;   /* multiple of 4 KiB */
	unsigned cpus;
	const char *cpu_model; /* NULL: qemu64 under TCG, host under KVM */
	const char *kernel;   /* NULL: the firmware boots the first disk */
	const char *initrd;   /* may be NULL */
	const char *append;   /* may be NULL */
	const char *disks[MIG_MAX_DISKS]; /* raw or qcow2 image files */
	unsigned ndisks;
	enum mig_accel accel; /* already resolved: KVM or TCG */
	bool paused;          /* -S: vCPUs wait for `cont` */
	bool incoming;        /* -incoming defer: wait for migrate-incoming */
	int start_timeout_ms; /* until QMP answers */
};

struct mig_qemu {
	pid_t pid;
	bool child;           /* ours to waitpid() */
	char *dir;
	struct tp_qmp *qmp;
	int exit_status;      /* wait status once reaped, else -1 */
};

/* Validates spec; the error names the bad value. No side effects. */
bool mig_qemu_spec_check(const struct mig_qemu_spec *spec, struct err **errp);

struct mig_qemu *mig_qemu_start(const struct mig_qemu_spec *spec,
				struct err **errp);

/* Attaches to a QEMU started earlier (possibly by another process) from
 * its run dir: reads qemu.pid and connects QMP. */
struct mig_qemu *mig_qemu_attach(const char *dir, int timeout_ms,
				 struct err **errp);

/* Stops and reaps QEMU within timeout_ms (then SIGKILL); frees g. */
bool mig_qemu_stop(struct mig_qemu *g, int timeout_ms, struct err **errp);

/* Forgets g without stopping QEMU (closes QMP, frees g). */
void mig_qemu_release(struct mig_qemu *g);

/* Waits until the process is gone (reaping it if it is our child). */
bool mig_qemu_wait_exit(struct mig_qemu *g, int timeout_ms);

/* True if pid is the QEMU whose run dir is dir (guards kill() against
 * recycled pids). */
bool mig_qemu_pid_is_guest(pid_t pid, const char *dir);

/* The last non-empty line of qemu.log in dir, or NULL (caller frees). */
char *mig_qemu_last_words(const char *dir);

static inline void mig_qemu_releasep(struct mig_qemu **g)
{
	if (*g)
		mig_qemu_release(*g);
}

/* ---- raw migration ---------------------------------------------------- */

enum mig_raw_state {
	MIG_RAW_SETUP,      /* parameters and capabilities on both sides */
	MIG_RAW_LISTEN,     /* target listening (migrate-incoming) */
	MIG_RAW_TRANSFER,   /* RAM passes in flight */
	MIG_RAW_SWITCHOVER, /* source completed; target loading / resumed */
	MIG_RAW_DONE,
	MIG_RAW_FAILED,     /* source running again, target left to the caller */
	MIG_RAW_STATE_MAX
};

const char *mig_raw_state_name(enum mig_raw_state s);

/* QEMU's knobs. Capabilities and parameters that both sides must share
 * (multifd, its compression, postcopy) are applied to the target too. */
struct mig_tune {
	uint64_t max_bandwidth;   /* bytes/s; 0 = unlimited (QEMU's default is 128 MiB/s) */
	uint64_t downtime_ms;     /* initial limit; 0 = QEMU default (300 ms) */
	uint64_t downtime_max_ms; /* ceiling of the ramp; <= downtime_ms: no ramp */
	unsigned multifd;         /* channels; 0 or 1 = off */
	bool multifd_zstd;        /* zstd compression of multifd pages */
	bool auto_converge;       /* QEMU throttles vCPUs of a guest that outruns the link */
	unsigned throttle_initial;   /* auto-converge's first throttle, %; 0 = QEMU's 20 */
	unsigned throttle_increment; /* and its step per pass, %; 0 = QEMU's 10 */
	bool xbzrle;              /* delta-encode re-sent pages */
	bool postcopy;            /* postcopy-ram on both sides (timeout action postcopy) */
};

enum mig_timeout_action {
	MIG_TIMEOUT_ABORT,        /* roll back: the source runs on */
	MIG_TIMEOUT_PAUSE,        /* pause the source so the rest goes at once */
	MIG_TIMEOUT_POSTCOPY,     /* switch to postcopy (no rollback after that) */
	MIG_TIMEOUT_ACTION_MAX
};

extern const char *const mig_timeout_action_names[MIG_TIMEOUT_ACTION_MAX];

/* The target side, local (a QMP connection) or remote (the agent on the
 * target node, mig_agent.c). */
struct mig_target_ops {
	/* Applies the shared capabilities/parameters and listens. */
	bool (*listen)(void *impl, const struct mig_tune *t, struct err **errp);
	/* Until the target finished loading the stream (MIGRATION completed);
	 * in postcopy, until it runs. */
	bool (*wait_loaded)(void *impl, int timeout_ms, struct err **errp);
	/* Runs the guest on the target (`cont` unless already running). */
	bool (*resume)(void *impl, struct err **errp);
	/* The target QEMU still answers (asked at the switchover, before the
	 * owner moves: a target that died meanwhile means a rollback). */
	bool (*check)(void *impl, struct err **errp);
	/* Stops the target QEMU; true once it is gone. */
	bool (*quit)(void *impl);
	/* Switch to postcopy was made: the target must run now (may be NULL). */
	bool (*postcopy_run)(void *impl, struct err **errp);
};

struct mig_target {
	const struct mig_target_ops *ops;
	void *impl;
};

/* The local implementation, also used by the agent on a target node:
 * qmp stays owned by the caller; uri is what migrate-incoming listens on. */
struct mig_target_local {
	struct tp_qmp *qmp;
	const char *uri;
};
void mig_target_local_init(struct mig_target *t, struct mig_target_local *l,
			   struct tp_qmp *qmp, const char *uri);
bool mig_target_local_listen(struct tp_qmp *q, const struct mig_tune *t, const char *uri,
			     struct err **errp);
bool mig_target_local_wait_loaded(struct tp_qmp *q, int timeout_ms, struct err **errp);
bool mig_target_local_resume(struct tp_qmp *q, struct err **errp);
bool mig_target_local_check(struct tp_qmp *q, struct err **errp);
bool mig_target_local_quit(struct tp_qmp *q);

struct mig_raw_opts {
	const char *uri;          /* where the source sends, e.g. tcp:10.99.2.2:61000 */
	struct mig_tune tune;
	int timeout_ms;           /* whole transfer; <0 = none */
	enum mig_timeout_action timeout_action;
	int poll_ms;              /* progress interval */
	bool resume_target;       /* `cont` the target after completion */
	/* Polled during the transfer; true aborts with ERR_STATE "cancelled". */
	bool (*cancelled)(void *opaque, struct err **errp);
	/* Called once the switch to postcopy is decided, before it is made:
	 * false keeps the migration in precopy and aborts (e.g. the owner
	 * could not be moved). */
	bool (*before_postcopy)(void *opaque, struct err **errp);
	/* No RAM moved for this long: abort (a cut link blocks QEMU's socket
	 * for minutes otherwise); 0 = 10 s. */
	int stall_ms;
	/* When set, the source pauses before the switchover (QEMU's
	 * pause-before-switchover) and this runs with the guest stopped and
	 * all RAM sent; the migration continues once it returned true, and
	 * is cancelled (source resumed) if it fails. */
	bool (*pre_switchover)(void *opaque, struct err **errp);
};

struct mig_raw_progress {
	enum mig_raw_state state;
	const char *qemu_status;  /* query-migrate status */
	uint64_t total, transferred, remaining; /* RAM bytes */
	uint64_t dirty_rate;      /* pages/s * page size, bytes/s */
	uint64_t mbps_x100;       /* throughput in Mbit/s * 100 */
	uint64_t passes;          /* dirty-sync-count */
	uint64_t downtime_limit_ms; /* current limit (the ramp raises it) */
	uint64_t throttle_pct;    /* auto-converge's vCPU throttle */
	int64_t elapsed_ms;
	int64_t downtime_ms;      /* final, once completed; -1 before */
	int64_t setup_ms;
	bool paused_by_timeout;   /* timeout action pause was taken */
	bool postcopy;            /* switched to postcopy */
};

typedef void (*mig_raw_progress_fn)(const struct mig_raw_progress *p, void *opaque);

/* Migrates src to the target t. On success the source is in postmigrate
 * state (the caller stops it), the target loaded (and running if
 * resume_target) and *final holds the figures. On failure the migration
 * is cancelled, the target stopped if it may have run, and the source is
 * running again if it was (after a switch to postcopy there is no way
 * back: the error says so and the source stays paused). */
bool mig_raw_migrate(struct tp_qmp *src, const struct mig_target *t,
		     const struct mig_raw_opts *opts, mig_raw_progress_fn cb, void *opaque,
		     struct mig_raw_progress *final, struct err **errp);

/* mig_raw_migrate() to a local target QEMU (dst started with incoming). */
bool mig_raw_run(struct tp_qmp *src, struct tp_qmp *dst,
		 const struct mig_raw_opts *opts, mig_raw_progress_fn cb,
		 void *opaque, struct mig_raw_progress *final, struct err **errp);

/* Undoes a completed migration the caller could not commit: stops the
 * target first, then resumes the source if it was running. False (source
 * left paused) if the target would not go. */
bool mig_raw_undo(struct tp_qmp *src, const struct mig_target *t, bool src_was_running,
		  struct err **errp);

/* ---- local disks: mirrors to the target's NBD exports (mig_disk.c) ---------
 * The source's half of moving a running guest's local disks: per disk an
 * NBD client node (blockdev-add) to the export the target serves and a
 * blockdev-mirror job (sync full: zeros and holes go as write-zeroes, no
 * payload) from the guest's disk. Once every job is ready the RAM moves;
 * at pre-switchover (guest paused) mig_mirror_complete() ends the jobs
 * with the target a point-in-time copy, without pivoting the guest. */

struct mig_disk {
	const char *device;  /* the guest's drive on the source, "drive0" */
	const char *export;  /* the target's NBD export of its new disk */
};

struct mig_disk_progress {
	uint64_t done, total; /* bytes of the job (total grows with guest writes) */
	bool ready;           /* in sync with the source */
};

struct mig_mirror;

/* Removes mirror jobs and NBD nodes of ours an earlier (crashed) worker
 * left in the QEMU; the guest's disks stay as they are. */
bool mig_mirror_sweep(struct tp_qmp *q, struct err **errp);
/* Adds the NBD nodes and starts the jobs (speed: bytes/s, 0 = unlimited),
 * after a sweep; on failure whatever was started is undone. fds[i] is a
 * connected stream to the target's NBD server for disk i (TCP, or one end
 * of a socketpair bridged into SSH), handed to QEMU; cuts[i] is what
 * shutdown() cuts that connection with when the mirror is aborted (a dup
 * of the TCP socket, or the socketpair's other end: shutting down one's
 * own end of a unix socket does not wake a peer's poll, the other end's
 * does). Both arrays are taken, also on failure (entries set to -1). */
struct mig_mirror *mig_mirror_start(struct tp_qmp *q, const struct mig_disk *d, unsigned n,
				    int *fds, int *cuts, uint64_t speed, bool write_blocking,
				    struct err **errp);
/* One look at the jobs: p[0..n-1] filled, *all_ready when every job is in
 * sync; a failed or vanished job is an error naming the disk. */
bool mig_mirror_poll(struct mig_mirror *m, struct mig_disk_progress *p, bool *all_ready,
		     struct err **errp);
/* Ends every (ready) job so the target holds a point-in-time copy; call it
 * with the guest paused. */
bool mig_mirror_complete(struct mig_mirror *m, int timeout_ms, struct err **errp);
/* Unless completed: cuts the NBD connections and force-cancels the jobs,
 * without waiting (NULL ok). In secure mode the caller then closes the SSH
 * sessions that carry the connections: a writer in QEMU blocked on a full
 * socket wakes only once the peer end is gone everywhere. */
void mig_mirror_abort(struct mig_mirror *m);
/* After mig_mirror_complete(): dismisses the jobs and removes the NBD
 * nodes now, before QEMU inactivates the source's disks at the switchover
 * (a left-over NBD node there trips QEMU 7.2's bdrv_inactivate assertion
 * and kills the source). */
bool mig_mirror_detach(struct mig_mirror *m, struct err **errp);
/* mig_mirror_abort(), then waits for the jobs to end, dismisses them,
 * removes the NBD nodes, frees m (NULL ok). The guest's own disks are
 * never touched. */
void mig_mirror_end(struct mig_mirror *m);

/* ---- placement (mig_place.c) ----------------------------------------------
 * Where the guests of a node being drained go: each to an allowed node
 * (usable: online, not in maintenance, among those the operator named;
 * with every storage the guest needs) with room for its memory, largest
 * guest first, to the node with the most memory left after what was
 * placed there; a guest's replication target first if it has room. Pure:
 * no I/O, same input, same plan. */

#define MIG_PLACE_MAX_GUESTS 1024
#define MIG_PLACE_MAX_NODES 64
#define MIG_PLACE_OVERHEAD (64ULL << 20) /* QEMU's own memory beside a guest's */

enum mig_place_why {
	MIG_PLACE_OK,
	MIG_PLACE_NO_ROOM,      /* no allowed node has the memory */
	MIG_PLACE_NO_NODE,      /* no node is usable at all */
	MIG_PLACE_LOCAL_DISKS,  /* set by the caller: local disks, not allowed to move */
	MIG_PLACE_STORAGE,      /* no usable node has its storages */
	MIG_PLACE_WHY_MAX
};
extern const char *const mig_place_why_names[MIG_PLACE_WHY_MAX];

struct mig_place_node {
	const char *name;
	bool usable;
	uint64_t free;              /* bytes a new guest may take (cli_node_mem.free) */
	unsigned guests;            /* running there already */
	const char *const *storages; /* storage IDs available there */
	unsigned nstorages;
};

struct mig_place_guest {
	uint32_t vmid;
	uint64_t mem;               /* bytes */
	const char *const *storages; /* storage IDs it needs on the target */
	unsigned nstorages;
	const char *prefer;         /* replication target, or NULL */
	/* out: node index, or -1 with why (the caller may preset why) */
	int to;
	enum mig_place_why why;
};

void mig_place(struct mig_place_guest *g, unsigned ng, const struct mig_place_node *nodes,
	       unsigned nn);

/* ---- control channel to the agent (mig_agent.c) ---------------------------
 * JSON lines over a stream: requests {"cmd":..}, replies {"ok":true,..} or
 * {"ok":false,"error":"..","code":"invalid"}. The worker calls; the agent
 * (cli/migrate_agent.c) answers. */

struct mig_chan;

/* Takes the fds (in_fd == out_fd for a socket). NULL only without memory. */
struct mig_chan *mig_chan_open(int in_fd, int out_fd);
void mig_chan_close(struct mig_chan *c);
int mig_chan_fd(const struct mig_chan *c);
bool mig_chan_send(struct mig_chan *c, struct json_object *msg, struct err **errp);
/* The next message (caller owns); ERR_CLOSED at EOF, ERR_TIMEOUT. */
struct json_object *mig_chan_recv(struct mig_chan *c, int timeout_ms, struct err **errp);
/* {"cmd":cmd} to fill in. */
struct json_object *mig_chan_req(const char *cmd);
/* Sends req (taken), returns the ok reply (caller owns) or sets *errp with
 * the agent's message and code. */
struct json_object *mig_chan_call(struct mig_chan *c, struct json_object *req, int timeout_ms,
				  struct err **errp);
/* A reply as mig_chan_call reads it: true for {"ok":true}, else false with
 * *errp the agent's message and code (ERR_STATE for an unknown code). */
bool mig_chan_reply_check(struct json_object *rep, struct err **errp);
struct json_object *mig_chan_ok(void);
struct json_object *mig_chan_fail(const struct err *e);
/* Whether req is a request the migration agent (cli/migrate_agent.c) knows,
 * with the fields its command needs, as the agent checks it before acting
 * on it; ERR_PROTO naming what is wrong. Pure: fuzzed (fuzz_mig_agent). */
bool mig_agent_req_check(struct json_object *req, struct err **errp);
/* The shared part of a tune, as the target needs it. */
struct json_object *mig_tune_to_json(const struct mig_tune *t);
bool mig_tune_from_json(struct json_object *o, struct mig_tune *t, struct err **errp);
/* A mig_target whose ops are requests to the agent on c. */
void mig_chan_target(struct mig_chan *c, struct mig_target *t);

static inline void mig_chan_closep(struct mig_chan **c)
{
	if (*c)
		mig_chan_close(*c);
}

/* ---- a guest's migration (mig_job.c) ---------------------------------------
 * The phase machine of DESIGN.md §4, run on the source node. The caller
 * (vmmigrate) makes the checks the store can answer, takes the guest lock,
 * and provides the store operations as hooks; the job talks to the agent
 * on the target over SSH and moves the data. On failure before the owner
 * moved, everything is rolled back: the source runs as before, the target
 * QEMU and any received volume are gone. */

enum mig_phase {
	MIG_PHASE_CHECK,
	MIG_PHASE_PREPARE,
	MIG_PHASE_START_TARGET,
	MIG_PHASE_TRANSFER,
	MIG_PHASE_SWITCHOVER,
	MIG_PHASE_CLEANUP,
	MIG_PHASE_DONE,
	MIG_PHASE_ROLLBACK,
	MIG_PHASE_FAILED,
	MIG_PHASE_MAX
};

const char *mig_phase_name(enum mig_phase p);
bool mig_phase_parse(const char *s, enum mig_phase *out);

struct mig_job_progress {
	enum mig_phase phase;
	uint32_t vmid;
	bool online;
	char target_addr[64];
	struct mig_raw_progress raw;   /* online */
	uint64_t vols_total;           /* offline: bytes of all volumes */
	uint64_t vol_covered;          /* of them, done (zeros included) */
	uint64_t vol_wire;             /* bytes on the wire so far */
	unsigned vol_index;
	uint64_t vols_done, wire_done, data_done; /* finished volumes */
	bool mirroring;                /* online: local disks being mirrored (vols_total
					* and vol_covered then sum the disks below) */
	unsigned ndisks;
	struct mig_disk_progress disk[MIG_MAX_DISKS];
	int64_t elapsed_ms;
	char warning[256];             /* done, but a cleanup step failed */
	bool target_lost;              /* failed after the owner moved: the target
	                                * did not resume; the paused source is the
	                                * guest's only sure copy (the caller
	                                * recovers, see cli_migrate_recover) */
	enum mig_phase failed_in;      /* on failure: the phase it failed in (CHECK: a
					* refusal, nothing was changed or rolled back) */
};

struct mig_job_hooks {
	/* Persists the phase (store record migrations/<vmid>). */
	bool (*persist)(enum mig_phase ph, void *opaque, struct err **errp);
	/* Polled during transfer: false aborts (cancel asked, quorum lost). */
	bool (*check)(void *opaque, struct err **errp);
	/* Moves the guest's owner to the target in the store. */
	bool (*move_owner)(void *opaque, struct err **errp);
	void (*progress)(const struct mig_job_progress *p, void *opaque);
	/* Online, may be NULL: runs at the switchover with the guest paused
	 * and all RAM sent, after the mirrors finished (the caller's last
	 * writes to the target's disks: a replication delta); false cancels
	 * the migration, the source runs on. */
	bool (*pre_switchover)(void *opaque, struct err **errp);
	void *opaque;
};

struct mig_job_volume {
	const char *storage, *volume; /* as in the guest config */
	const char *target_storage;   /* where it goes on the target; NULL = storage */
	const char *path;             /* the source file */
	uint64_t size;
	unsigned drive;               /* online: the guest's drive<N> (virtio<N>) */
};

struct mig_job {
	uint32_t vmid;
	const char *target;           /* node name */
	const char *target_ctl_addr;  /* its cluster address: control session */
	const char *target_host_key;  /* pinned, from the store */
	const char *ssh_key;          /* our private key */
	unsigned ssh_port;            /* 0 = 22 */
	const char *remote_cmd;       /* vmmigrate on the target */
	const char *cidr;             /* migration network; NULL = cluster address */
	const char *source_addr;      /* ours in the CIDR (insecure peer filter) */
	bool secure;
	bool online;
	/* online */
	struct tp_qmp *src_qmp;
	const char *src_run_dir;
	bool src_was_running;
	uint64_t mem_bytes;
	enum mig_accel accel;
	const char *cpu_model;
	struct mig_tune tune;
	int timeout_ms;
	enum mig_timeout_action timeout_action;
	/* storages the target must have; local volumes to copy (offline) or
	 * to mirror with the running guest (online, --with-local-disks) */
	const char *const *storages;
	unsigned nstorages;
	const struct mig_job_volume *volumes;
	unsigned nvolumes;
	bool mirror_background;       /* mirrors in background copy mode (default:
				       * write-blocking, see mig_disk.c) */
	struct mig_job_hooks hooks;
};

/* A control session with the agent on a node: SSH with the pinned host key
 * to addr, `remote_cmd _agent`, hello. *ssh gets the session (the caller
 * closes the channel, then the session). */
struct tp_ssh;
struct mig_agent_addr {
	const char *node, *addr, *host_key, *ssh_key, *remote_cmd;
	unsigned ssh_port;
};
struct mig_chan *mig_agent_connect(const struct mig_agent_addr *a, struct tp_ssh **ssh,
				   struct err **errp);

/* True once the guest belongs to the target (final->warning may tell of a
 * failed cleanup step); false with *errp after a full rollback. */
bool mig_job_run(const struct mig_job *j, struct mig_job_progress *final, struct err **errp);

#endif
