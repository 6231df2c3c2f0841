/*
 * migrate.h - `vmmigrate` (cli/vmmigrate.c, cli/migrate_*.c): moving guests
 * between nodes, like Proxmox's `qm migrate`.
 *
 * Store layout (also in docs/vmmigrate.md):
 *   migrations/<vmid>   the running migration of a guest, written by its
 *                       worker on the source node at every phase change:
 *                       {"vmid","source","target","pid","phase","online",
 *                        "type","was_running","started_ms","cancel",
 *                        "moved":[[conf index, source storage, source path]]}
 *                       Removed when the worker ends. One left behind with
 *                       a dead pid is a crashed worker's: the next vmmigrate
 *                       on the source node cleans up after it
 *                       (cli_migrate_recover) before anything else.
 *   `vmmigrate cancel` sets "cancel": the worker polls it and rolls back.
 */
#ifndef VMM_CLI_MIGRATE_H
#define VMM_CLI_MIGRATE_H

#include "ctl.h"
#include "progress.h"

#include <stdint.h>
#include <sys/types.h>

#define CLI_MIG_KEY_LEN 32

struct cli_mig_record {
	uint32_t vmid;
	char source[CLU_NODE_NAME_MAX + 1];
	char target[CLU_NODE_NAME_MAX + 1];
	pid_t pid;
	char phase[24];
	bool online, secure, was_running, cancel;
	int64_t started_ms;
	char cancel_by[CLU_NODE_NAME_MAX + 1];
	/* Local volumes this migration moves ("moved": [[conf, storage, path]]):
	 * a recovery removes the source copies once the target owns the guest,
	 * or puts the storage IDs back if it takes the guest back. */
	unsigned nmoved;
	struct cli_mig_moved {
		unsigned conf;                          /* index in conf.disks */
		char storage[CLU_STORAGE_ID_MAX + 1];   /* on the source */
		char path[1024];                        /* the source's file */
	} moved[MIG_MAX_DISKS];
};

const char *cli_mig_key(uint32_t vmid, char *buf, size_t len);
/* Reads migrations/<vmid>; ERR_NOTFOUND if there is none. */
bool cli_mig_record_read(struct clu_client *c, uint32_t vmid, struct cli_mig_record *r,
			 uint64_t *version, struct err **errp);
bool cli_mig_record_parse(const char *text, struct cli_mig_record *r, struct err **errp);
/* Creates it; ERR_CONFLICT if one exists. */
bool cli_mig_record_create(struct clu_client *c, const struct cli_mig_record *r,
			   struct err **errp);
/* Sets the phase, keeping what others wrote (cancel); *cancel gets it. */
bool cli_mig_record_phase(struct clu_client *c, uint32_t vmid, const char *phase,
			  bool *cancel, struct err **errp);
bool cli_mig_record_delete(struct clu_client *c, uint32_t vmid, struct err **errp);
/* Visits every migration record in the store (ones that do not parse are
 * skipped) until fn returns false; text is the record as stored. */
bool cli_mig_record_list(struct clu_client *c,
			 bool (*fn)(const struct cli_mig_record *r, const char *text, void *opaque),
			 void *opaque, struct err **errp);
/* Whether pid is a live vmmigrate process on this node. */
bool cli_mig_worker_alive(pid_t pid);

/* Cleans up after a dead worker of a migration of vmid from this node:
 * the store's owner decides which side keeps the guest; the other side's
 * QEMU is stopped, the source resumed if it is the owner. No record: a
 * no-op. A live worker: ERR_STATE naming it. */
bool cli_migrate_recover(struct cli_ctl *x, uint32_t vmid, struct err **errp);
/* vmmd's look, every few seconds: cli_migrate_recover for every record
 * of a migration from this node whose worker is dead, so a guest a worker
 * left paused runs again without waiting for the next vmmigrate. Failures
 * are logged; the next look retries. */
void cli_migrate_sweep(struct cli_ctl *x);

/* Where to reach a node and how to trust it, from the store and vmmd. */
struct cli_mig_peer {
	char name[CLU_NODE_NAME_MAX + 1];
	char addr[64];         /* cluster address (link 0) */
	char *host_key;        /* pinned "ssh-ed25519 AAAA..." */
	bool online, maintenance;
};
bool cli_mig_peer_read(struct cli_ctl *x, const char *node, struct cli_mig_peer *p,
		       struct err **errp);
void cli_mig_peer_free(struct cli_mig_peer *p);
/* SSH key and port, remote command: $VMM_SSH_KEY (default
 * /root/.ssh/id_ed25519), $VMM_SSH_PORT (22), $VMM_REMOTE_VMMIGRATE
 * (default: this program's own path). */
const char *cli_mig_ssh_key(void);
unsigned cli_mig_ssh_port(void);
const char *cli_mig_remote_cmd(char *buf, size_t len);

/* ---- several workers at once (migrate_pool.c) ----
 * One `vmmigrate VMID TARGET <args> --output json` per task, run on the
 * task's node (a child here, over SSH elsewhere), at most `max` at once;
 * their events shown as the pool's output says. Returns when all ended. */
struct cli_mig_task {
	uint32_t vmid;
	char node[CLU_NODE_NAME_MAX + 1];   /* where the worker runs: the owner */
	char target[CLU_NODE_NAME_MAX + 1];
	const char *args[16];               /* e.g. "--online" (not owned) */
	unsigned nargs;
	/* out */
	bool ok;                            /* the guest is on target now */
	int rc;                             /* the worker's exit status */
	char error[512];                    /* why not, one line */
};

struct cli_mig_pool {
	const char *title;                  /* "drain uno" */
	bool json;                          /* events as JSON lines */
	/* state, for the caller's summary */
	bool tty;
	unsigned n, ok, failed, running, drawn;
};

void cli_mig_pool_run(struct cli_ctl *x, struct cli_mig_pool *pl, struct cli_mig_task *t,
		      unsigned n, unsigned max);

/* ---- task logs (migrate_log.c) ----
 * The lines this worker logs from now on also go to a new task log of the
 * guest under $VMM_DATA_DIR/tasks/migrate/<vmid>/ (the newest 10 kept);
 * the caller ends it with log_task_close(error or NULL). */
bool cli_mig_tasklog_open(uint32_t vmid, struct err **errp);

/* `vmmigrate _agent`: the target's half (migrate_agent.c). */
int cli_migrate_agent(void);

extern const struct cli_cmd cli_migrate_run, cli_migrate_cancel, cli_migrate_status;
extern const struct cli_cmd cli_migrate_drain, cli_migrate_undrain, cli_migrate_log;

/* The command line as given (vmmigrate.c), for a drain forwarded to its node. */
extern int cli_migrate_argc;
extern char **cli_migrate_argv;

/* A request's fields, as the agents read them: the string at key (NULL if
 * absent or not a string); the integer at key (false if absent or not an
 * integer, *out unchanged). */
const char *cli_mig_jstr(struct json_object *o, const char *key);
bool cli_mig_jint(struct json_object *o, const char *key, int64_t *out);

#endif
