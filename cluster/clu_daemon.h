/*
 * clu_daemon.h - internals of vmmd shared by clu_daemon.c (state machine,
 * replication), clu_corosync.c (corosync connections) and clu_server.c
 * (the CLIs' unix socket). Not for other folders: they use clu.h.
 *
 * Daemon states (one setter, every transition logged):
 *   standalone    no cluster configured: one node, always quorate
 *   disconnected  corosync unreachable: reads only; reconnects every second
 *   syncing       membership changed: members exchange (version, checksum),
 *                 the newest sends its store to the others; writes wait
 *                 (the round's protocol is in clu_sync.c)
 *   synced        writes are multicast and applied in agreed order
 */
#ifndef VMM_CLU_DAEMON_H
#define VMM_CLU_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#include <corosync/cmap.h>
#include <corosync/cpg.h>
#include <corosync/quorum.h>
#include <corosync/votequorum.h>

#include "clu.h"
#include "../transport/tp.h"

enum clu_dstate { CLU_D_STANDALONE, CLU_D_DISCONNECTED, CLU_D_SYNCING, CLU_D_SYNCED,
		  CLU_D_STATE_MAX };

#define CLU_MAX_MEMBERS 64
#define CLU_MAX_CLIENTS 128
#define CLU_MAX_PENDING 1024
#define CLU_MAX_SNAP_CHUNKS 4096
#define CLU_SNAP_CHUNK_BYTES (128u << 10)
#define CLU_MAX_HELD 4096

struct clu_member {
	uint32_t nodeid, pid;
	bool have_state;
	uint64_t version, sum;
};

/* A write delivered while this member waits for the leader's snapshot. */
struct clu_held {
	struct json_object *op; /* owned */
	bool mine;
	uint64_t req;
};

struct clu_client {
	int fd;                 /* -1: free slot */
	struct tp_jsonl rd;
	char *out;              /* replies not yet written */
	size_t out_len, out_cap;
	bool closing;           /* drop after the output drained */
};

/* A client request waiting for something: its write to come round in
 * agreed order (sent), the cluster to finish syncing (!sent), or a watched
 * key to change (watch). */
struct clu_pending {
	bool used, sent, watch;
	int client;             /* slot index */
	uint64_t client_gen;    /* guards against a reused slot */
	int64_t client_id;      /* the client's request id */
	uint64_t req;           /* our id, carried in the CPG message */
	struct json_object *op; /* the op (owned) */
	char *prefix;           /* watch prefix (owned) */
	uint64_t since;         /* watch: store version seen by the client */
	int64_t deadline_ms;
};

struct clu_daemon {
	struct clu_store *store;
	enum clu_dstate state;
	char node[64];
	bool standalone;
	bool forced_standalone;  /* --standalone: never switch to cluster mode */
	char *data_dir;
	char *cc_local;          /* DATA_DIR/corosync.conf: "in a cluster" marker */
	char *cc_path;           /* corosync's corosync.conf */
	int lock_fd;             /* DATA_DIR/vmmd.lock, flocked: one vmmd per directory */
	int64_t next_mode_check;

	/* corosync */
	cpg_handle_t cpg;
	quorum_handle_t quorum;
	votequorum_handle_t vq;
	bool connected;
	int cpg_fd, quorum_fd, vq_fd;
	uint32_t nodeid, pid;
	bool quorate;
	uint32_t view[CLU_MAX_MEMBERS]; /* corosync's membership (quorum view) */
	unsigned nview;
	/* What status reads cmap with: opened on first use and kept until
	 * corosync is lost (a libqb IPC connection costs ~5 ms to set up,
	 * and every CLI call asks for status). */
	cmap_handle_t cmap;
	bool cmap_open;
	int64_t reconnect_at;
	int64_t register_at;     /* next check of this node's record */
	int64_t sync_round_ms;   /* when the current sync round began */

	/* membership and sync (clu_sync.c) */
	struct clu_member members[CLU_MAX_MEMBERS];
	unsigned nmembers;
	char round[64];         /* "nodeid.pid.n" of the round's start; "" none */
	uint64_t starts_sent;   /* rounds this process started */
	bool decided;           /* every member announced; leader chosen */
	struct json_object *snap[CLU_MAX_SNAP_CHUNKS];
	unsigned nsnap;
	bool want_snapshot;     /* our store differs from the leader's */
	uint32_t leader, leader_pid; /* the sync leader this round */
	struct clu_held held[CLU_MAX_HELD];
	unsigned nheld;
	uint64_t syncs;         /* completed sync rounds, for status */

	/* clients */
	int listen_fd;
	struct clu_client clients[CLU_MAX_CLIENTS];
	uint64_t client_gen[CLU_MAX_CLIENTS];
	struct clu_pending pending[CLU_MAX_PENDING];
	uint64_t next_req;
	bool stop;
};

const char *clu_dstate_name(enum clu_dstate s);
void clu_daemon_set_state(struct clu_daemon *d, enum clu_dstate s);

/* clu_corosync.c */
bool clu_cs_connect(struct clu_daemon *d, struct err **errp);
void clu_cs_disconnect(struct clu_daemon *d, const char *why);
/* Dispatches whichever corosync fd is ready; false if the link broke. */
bool clu_cs_dispatch(struct clu_daemon *d, int fd);
bool clu_cs_mcast(struct clu_daemon *d, struct json_object *msg, struct err **errp);
/* Adds votequorum and cmap facts to a status object. */
void clu_cs_status(struct clu_daemon *d, struct json_object *st);
bool clu_cs_set_expected(struct clu_daemon *d, unsigned votes, struct err **errp);
/* This node's link addresses from corosync's nodelist (new array). */
struct json_object *clu_cs_node_links(struct clu_daemon *d);
/* Node name for our nodeid from corosync's nodelist, if any. */
bool clu_cs_node_name(struct clu_daemon *d, char *out, size_t len);

/* clu_daemon.c: called by clu_corosync.c */
void clu_daemon_deliver(struct clu_daemon *d, uint32_t nodeid, uint32_t pid,
			const char *msg, size_t len);
void clu_daemon_quorum(struct clu_daemon *d, bool quorate, const uint32_t *view, unsigned n);

/* clu_daemon.c: called by clu_server.c with one parsed request; answers
 * through clu_server_reply() now or later. */
void clu_daemon_request(struct clu_daemon *d, int client, struct json_object *req);

/* clu_daemon.c: for clu_sync.c */
/* Applies a delivered write to the store, answers our client if `mine`. */
void clu_daemon_apply_op(struct clu_daemon *d, struct json_object *op, bool mine, uint64_t req);
/* Writes nodes/<this node> if it is missing or out of date. */
void clu_daemon_register_node(struct clu_daemon *d);

/* clu_sync.c: the sync exchange */
/* A CPG membership change: a new round; the lowest member starts it. */
void clu_sync_confchg(struct clu_daemon *d, const struct cpg_address *members, size_t n);
/* A "start", "state" or "snap" message; false for any other type. */
bool clu_sync_message(struct clu_daemon *d, uint32_t nodeid, uint32_t pid, const char *type,
		      struct json_object *m);
/* True if the delivered write `op` is held until this member has taken
 * the leader's snapshot (its own store is about to be replaced). */
bool clu_sync_hold(struct clu_daemon *d, struct json_object *op, bool mine, uint64_t req);
/* Lost corosync: held writes are applied, the round forgotten. */
void clu_sync_abort(struct clu_daemon *d);

/* clu_daemon_cc.c: cluster configuration follows the store */
/* The store's cluster/corosync.conf changed: install it if newer. */
void clu_cc_follow(struct clu_daemon *d);
/* Standalone: switch to cluster mode if DATA_DIR/corosync.conf appeared. */
void clu_cc_check_mode(struct clu_daemon *d);
/* {"cmd":"join"}: empty the store and enter cluster mode. */
bool clu_cc_join(struct clu_daemon *d, struct err **errp);

/* clu_server.c */
bool clu_server_listen(struct clu_daemon *d, const char *path, struct err **errp);
void clu_server_accept(struct clu_daemon *d);
/* Reads from / writes to a client; false if it went away. */
bool clu_server_io(struct clu_daemon *d, int client, short revents);
/* Queues a reply (takes `reply`); adds "id" and "ok". */
void clu_server_reply(struct clu_daemon *d, int client, int64_t id, struct json_object *reply);
void clu_server_error(struct clu_daemon *d, int client, int64_t id, const struct err *e);
void clu_server_close_all(struct clu_daemon *d);

#endif
