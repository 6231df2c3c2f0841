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
	MIG_RAW_SWITCHOVER, /* source completed; target resumed */
	MIG_RAW_DONE,
	MIG_RAW_FAILED,     /* source running again, target left to the caller */
	MIG_RAW_STATE_MAX
};

const char *mig_raw_state_name(enum mig_raw_state s);

struct mig_raw_opts {
	const char *uri;          /* where the target listens, e.g. tcp:10.99.2.2:61000 */
	uint64_t max_bandwidth;   /* bytes/s; 0 = unlimited (QEMU's default is 128 MiB/s) */
	uint64_t downtime_ms;     /* 0 = QEMU default (300 ms) */
	unsigned multifd;         /* channels; 0 or 1 = off */
	int timeout_ms;           /* whole transfer; <0 = none */
	int poll_ms;              /* progress interval */
	bool resume_target;       /* `cont` the target after completion */
};

struct mig_raw_progress {
	enum mig_raw_state state;
	const char *qemu_status;  /* query-migrate status */
	uint64_t total, transferred, remaining; /* RAM bytes */
	uint64_t dirty_rate;      /* pages/s * page size, bytes/s */
	uint64_t mbps_x100;       /* throughput in Mbit/s * 100 */
	uint64_t passes;          /* dirty-sync-count */
	int64_t elapsed_ms;
	int64_t downtime_ms;      /* final, once completed; -1 before */
	int64_t setup_ms;
};

typedef void (*mig_raw_progress_fn)(const struct mig_raw_progress *p, void *opaque);

/* Migrates src to dst (started with incoming = true). On success the
 * source is in postmigrate state (the caller stops it) and *final holds
 * the figures. On failure the migration is cancelled and the source is
 * running again. */
bool mig_raw_run(struct tp_qmp *src, struct tp_qmp *dst,
		 const struct mig_raw_opts *opts, mig_raw_progress_fn cb,
		 void *opaque, struct mig_raw_progress *final, struct err **errp);

#endif
