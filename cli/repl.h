/*
 * repl.h - `vmrepl` (cli/vmrepl.c, cli/repl_*.c): scheduled storage
 * replication of guests' local disks to another node, like Proxmox's pvesr.
 *
 * Store layout (also in docs/vmrepl.md):
 *   replication.cfg               the jobs, in pvesr's syntax (cluster/clu_conf.h)
 *   replication/state/<job id>    a job's state (replicate/repl.h)
 * On the job's source node (the guest's owner):
 *   $VMM_DATA_DIR/repl/<job>/log            the last run's log
 *   $VMM_DATA_DIR/repl/<job>/<drive>.manifest  block hashes of the replica
 * On the target: the replica beside its side files at the volume's path
 * on the storage of the same ID (replicate/repl.h).
 */
#ifndef VMM_CLI_REPL_H
#define VMM_CLI_REPL_H

#include "ctl.h"
#include "migrate.h"
#include "../replicate/repl.h"

extern const struct cli_cmd cli_repl_create, cli_repl_update, cli_repl_delete,
	cli_repl_enable, cli_repl_disable, cli_repl_list, cli_repl_status, cli_repl_run,
	cli_repl_schedule_now, cli_repl_log;

/* A job id "VMID-N" (VMID 100..999999999 without leading zeros, N 0..9999). */
bool cli_repl_id(const char *s, uint32_t *vmid, struct err **errp);

/* replication.cfg from the store (empty if absent) and its version (0). */
bool cli_repl_read(struct cli_ctl *x, struct clu_repl_conf *rc, uint64_t *version,
		   struct err **errp);
/* replication.cfg edited under a conditional write, retried when another
 * writer came in between; edit returns false (with *errp) to give up. */
bool cli_repl_edit(struct cli_ctl *x, bool (*edit)(struct clu_repl_conf *rc, void *o,
						  struct err **errp),
		   void *opaque, struct err **errp);
/* The job with this id, or NULL. */
struct clu_repl_job *cli_repl_find(struct clu_repl_conf *rc, const char *id);

/* Runs one job's sync now, in this process (repl_sync.c): the guest must
 * be owned here. Returns false with the error also recorded in the job's
 * state (fail_count, next retry). *skipped: not run (guest busy with a
 * migration, job disabled) - with the reason in *errp, nothing recorded. */
bool cli_repl_sync(struct cli_ctl *x, const struct clu_repl_job *job, bool *skipped,
		   struct err **errp);

/* DATA_DIR/repl/<job>/drive<N>.manifest: the block hashes of a replica. */
void cli_repl_manifest_path(const char *job, unsigned drive, char *buf, size_t len);

/* ---- a migration to the replica's node (repl_sync.c) ----------------------
 * Only the delta moves: before the transfer a sync brings the replicas
 * up to date (the guest keeps running), at the switchover - guest paused,
 * RAM sent - a last sync sends what it wrote since, and the target's QEMU,
 * which opened the replicas as its disks, runs on them. Then the job turns
 * around: the old source's disks become its replicas (same generation),
 * the block hashes go to the new source, the job targets the old source.
 *
 * find: the job replicating guest g to target with a replica there (a
 * sync succeeded); *job_id its id, replicated[i] for each disk it covers
 * (conf.disks index). False with *errp unset: there is none.
 * open: the sync session, inside the caller's guest lock; qmp: the running
 * guest's QMP connection (the migration's), NULL for a stopped guest.
 * sync: one pass over the disks, recorded in the job's state; paused (the
 * switchover's): the block hashes wait for flip, outside the downtime.
 * flip: after the migration succeeded (the target owns the guest). */
struct cli_repl_mig;
bool cli_repl_mig_find(struct cli_ctl *x, const struct clu_guest_rec *g, const char *target,
		       char *job_id, size_t len, bool replicated[CLU_GUEST_DISKS],
		       struct err **errp);
struct cli_repl_mig *cli_repl_mig_open(struct cli_ctl *x, const struct clu_guest_rec *g,
				       const char *job_id, struct tp_qmp *qmp, struct err **errp);
bool cli_repl_mig_sync(struct cli_repl_mig *m, bool paused, struct err **errp);
bool cli_repl_mig_flip(struct cli_repl_mig *m, struct err **errp);
void cli_repl_mig_close(struct cli_repl_mig *m);

/* `vmrepl _agent`: the target's half of a sync (repl_agent.c). */
int cli_repl_agent(void);

/* The scheduler (repl_sched.c): one look at every job whose guest this
 * node owns; due ones (and ones asked with schedule-now) are started as
 * `vmrepl run --id ID` children, at most max at once and one per guest.
 * Children are reaped by the next look. Used by vmmd's scheduler thread
 * and by `vmrepl run` without --id (then waiting for each). */
struct cli_repl_sched;
struct cli_repl_sched *cli_repl_sched_new(unsigned max);
void cli_repl_sched_tick(struct cli_repl_sched *s, struct cli_ctl *x, bool wait);
void cli_repl_sched_free(struct cli_repl_sched *s);

#endif
