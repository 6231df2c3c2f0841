/*
 * ctl.h - the `vmctl` commands: guests as cluster objects (like Proxmox
 * `qm`). A guest's config lives in the replicated store under
 * guests/<vmid> with the node that owns it (layout in cluster/clu.h and
 * docs/vmctl.md); start/stop/shutdown/status act on the owning node only.
 *
 * Every command that changes a guest holds its locks for the whole
 * operation: first a local flock on $VMM_RUN_DIR/<vmid>.lock (two vmctl
 * on one node), then locks/guest/<vmid> in the store (two nodes).
 */
#ifndef VMM_CLI_CTL_H
#define VMM_CLI_CTL_H

#include "cli.h"
#include "../cluster/clu.h"
#include "../migrate/mig.h"

extern const struct cli_cmd cli_ctl_create;
extern const struct cli_cmd cli_ctl_config;
extern const struct cli_cmd cli_ctl_set;
extern const struct cli_cmd cli_ctl_unlock;
extern const struct cli_cmd cli_ctl_start;
extern const struct cli_cmd cli_ctl_stop;
extern const struct cli_cmd cli_ctl_shutdown;
extern const struct cli_cmd cli_ctl_status;
extern const struct cli_cmd cli_ctl_list;
extern const struct cli_cmd cli_ctl_destroy;
extern const struct cli_cmd cli_ctl_nextid;

#define CLI_CTL_LOCK_WAIT_MS 10000 /* how long a command waits for a guest's lock */

/* One command's session with the local vmmd. */
struct cli_ctl {
	struct clu_client *c;
	char node[CLU_NODE_NAME_MAX + 1]; /* this node */
	uint32_t vmid;                    /* locked guest, 0 = none */
	int lock_fd;                      /* local flock, -1 = none */
	bool cluster_locked;
};

/* Connects to vmmd ($VMM_SOCKET) and learns this node's name. */
bool cli_ctl_open(struct cli_ctl *x, struct err **errp);
/* A new connection to vmmd in place of x's (vmmd restarted, as systemd
 * does after a crash), retried for up to wait_ms; x's old one is kept if
 * none comes. Locks are the node's and the process's, not the
 * connection's: they stay held. */
bool cli_ctl_reconnect(struct cli_ctl *x, int wait_ms, struct err **errp);
/* Takes the local and the cluster lock of vmid, waiting up to
 * CLI_CTL_LOCK_WAIT_MS for each. */
bool cli_ctl_lock(struct cli_ctl *x, uint32_t vmid, struct err **errp);
/* This node's lock of vmid alone (a flock, held by every command that
 * changes the guest, and by a migration's worker while it lives); its fd
 * in *fd_out, the caller closes it. Waits up to CLI_CTL_LOCK_WAIT_MS. */
bool cli_ctl_local_lock(uint32_t vmid, int *fd_out, struct err **errp);
/* Renews the cluster lock (long waits, e.g. shutdown). */
bool cli_ctl_lock_renew(struct cli_ctl *x, struct err **errp);
/* Releases the locks held, if any (a failed release is logged: the lock
 * expires); the connection stays. */
void cli_ctl_release(struct cli_ctl *x);
/* cli_ctl_release, then disconnects. */
void cli_ctl_close(struct cli_ctl *x);

/* The VMID argument, or a message naming it. */
bool cli_ctl_vmid(const char *s, uint32_t *out, struct err **errp);
/* --output text|json; *json = true for json. */
bool cli_ctl_output(const struct cli_args *a, bool *json, struct err **errp);

/* Whether node's record in the store has the maintenance flag (set by
 * `vmmigrate drain`: no guest starts or lands there). */
bool cli_ctl_in_maintenance(struct cli_ctl *x, const char *node, bool *yes, struct err **errp);

/* Guards shared by the commands that change a guest. */
bool cli_ctl_check_owner(const struct cli_ctl *x, const struct clu_guest_rec *r,
			 struct err **errp);
bool cli_ctl_check_unlocked(const struct clu_guest_rec *r, struct err **errp);

/* $VMM_RUN_DIR (default /run/vmmigrate/guests) + "/<vmid>". */
const char *cli_ctl_run_dir(uint32_t vmid, char *buf, size_t len);
/* $VMM_DATA_DIR, else /var/lib/vmmigrate: the default storage's path. */
const char *cli_ctl_data_dir(void);

/* Whether the guest's QEMU runs on this node (from qemu.pid in its run
 * dir, checked against the process's command line); *pid if it does. */
bool cli_ctl_running(uint32_t vmid, pid_t *pid);

/* Sets one config key from a command-line value, validated by the guest
 * config parser: the error names the value ("invalid memory '0': ..."). */
bool cli_ctl_conf_set(struct clu_guest_conf *g, const char *key, const char *value,
		      struct err **errp);
/* Resets one key to its default; false if key is not settable. */
bool cli_ctl_conf_reset(struct clu_guest_conf *g, const char *key, struct err **errp);
/* Kernel, initrd and append agree, and the files are readable here. */
bool cli_ctl_check_boot(const struct clu_guest_conf *g, struct err **errp);
/* Whether a key needs the guest stopped (and so its owner node) to change. */
bool cli_ctl_conf_is_hardware(const char *key);

/* ---- node memory (ctl_mem.c) ---- */

#define CLI_NODE_MEM_RESERVE (1ULL << 30) /* kept for the host itself */

struct cli_node_mem {
	uint64_t total;     /* MemTotal */
	uint64_t available; /* MemAvailable */
	uint64_t committed; /* configured RAM of the guests running on this node */
	unsigned running;   /* how many guests that is */
	uint64_t free;      /* for one more guest: min(available, total - committed - reserve) */
};
/* This node's memory, counting every running guest owned here but
 * `except` (0 = none: the guest being placed). */
bool cli_ctl_node_mem(struct cli_ctl *x, uint32_t except, struct cli_node_mem *m,
		      struct err **errp);

/* ---- QEMU settings (ctl_spec.c) ---- */

/* Strings a spec points into; freed with cli_ctl_spec_files_free(). */
struct cli_ctl_spec_files {
	char dir[512];
	char name[32];
	char *disks[MIG_MAX_DISKS];
	unsigned ndisks;
};
void cli_ctl_spec_files_free(struct cli_ctl_spec_files *f);
/* The QEMU spec of guest r on this node: disks as this node's storages see
 * them, accelerator resolved, RAM 8 KiB short of a multiple of 256 KiB
 * under TCG (QEMU 7.2's TCG migration bug, DESIGN.md §6). */
bool cli_ctl_guest_spec(struct cli_ctl *x, const struct clu_guest_rec *r,
			struct cli_ctl_spec_files *f, struct mig_qemu_spec *spec,
			struct err **errp);

/* ---- volumes (ctl_disk.c) ---- */

/* A parsed --disk STORAGE:SIZE (bare SIZE in GiB). */
struct cli_ctl_disk_req {
	char storage[CLU_STORAGE_ID_MAX + 1];
	uint64_t size;
	bool qcow2;                    /* ,format=qcow2 (default raw) */
	const char *arg;
};

bool cli_ctl_disk_parse(const char *s, struct cli_ctl_disk_req *out, struct err **errp);

/* Storages as this node sees them (from the store; the default storage's
 * directory is created when missing). */
struct cli_ctl_storages {
	struct clu_storage_conf sc;
	bool defaulted;
};
bool cli_ctl_storages_read(struct cli_ctl *x, struct cli_ctl_storages *st, struct err **errp);
void cli_ctl_storages_free(struct cli_ctl_storages *st);
/* The storage, usable for disk images on this node, or a message. */
const struct clu_storage *cli_ctl_storage_usable(const struct cli_ctl *x,
						 const struct cli_ctl_storages *st,
						 const char *id, struct err **errp);

/* Files allocated by one command, removed again by cli_ctl_alloc_undo(). */
struct cli_ctl_alloc {
	char *paths[CLU_GUEST_DISKS];
	unsigned n;
	char *dirs[CLU_GUEST_DISKS]; /* <path>/images/<vmid> this command created */
	unsigned ndirs;
};

/* Allocates each request as a sparse raw file at the next free virtioN of
 * g and records it there. On failure, what was allocated is removed and g
 * is left half-changed: the caller drops it. */
bool cli_ctl_alloc_disks(const struct cli_ctl *x, const struct cli_ctl_storages *st,
			 uint32_t vmid, const struct cli_ctl_disk_req *reqs, unsigned n,
			 struct clu_guest_conf *g, struct cli_ctl_alloc *al, struct err **errp);
void cli_ctl_alloc_undo(struct cli_ctl_alloc *al);
/* Forgets the allocation (it belongs to the guest now). */
void cli_ctl_alloc_keep(struct cli_ctl_alloc *al);

/* File of a guest disk, or a message (unknown storage ...). */
char *cli_ctl_disk_path(const struct cli_ctl_storages *st, const struct clu_guest_disk *d,
			struct err **errp);

#endif
