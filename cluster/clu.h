/*
 * clu.h - cluster/: membership, quorum and the replicated config store.
 *
 * The only header other folders include from cluster/ (parsers of config
 * files have their own, clu_conf.h).
 *
 * Store (clu_store.c)
 *   A durable key/value map in SQLite; keys are paths ("guests/106",
 *   "nodes/uno", "locks/guest/106"), values are text. Every change is a
 *   struct clu_op applied with clu_store_apply(), which is deterministic:
 *   the result depends only on the store and the op (a lock's expiry is
 *   judged by the op's own timestamp, never the local clock), so nodes
 *   applying the same ops in the same order hold identical stores. A
 *   successful op increments the store's version and stamps the key with
 *   it; a refused op (condition not met) changes nothing, on every node.
 *   Reads never need quorum.
 *
 * Replication (clu_daemon.c, in vmmd)
 *   Ops travel as corosync CPG messages in agreed order. On a membership
 *   change every member announces (version, checksum); the member with the
 *   highest version sends its whole store to the others, and writes are
 *   held until that is applied everywhere. A write is refused with
 *   "no quorum" unless the node is quorate (votequorum).
 *
 * Client (clu_client.c)
 *   CLIs talk to the local vmmd over a unix socket, one JSON object per
 *   line each way ({"id","cmd",...} -> {"id","ok",...}).
 */
#ifndef VMM_CLU_H
#define VMM_CLU_H

#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

#include "../common/err.h"

/* ---- ops ------------------------------------------------------------- */

enum clu_op_kind {
	CLU_OP_PUT,     /* set key (if_version: only if the key is at that version; 0 = must not exist) */
	CLU_OP_CREATE,  /* set key only if it does not exist */
	CLU_OP_DELETE,  /* remove key (if_version as for PUT; missing key: refused) */
	CLU_OP_LOCK,    /* take or renew key as a lock for owner until ts + ttl */
	CLU_OP_UNLOCK,  /* release a lock held by owner (absent: fine) */
	CLU_OP_MAX
};

#define CLU_KEY_MAX 256
#define CLU_VALUE_MAX (1u << 20)

struct clu_op {
	enum clu_op_kind kind;
	const char *key;
	const char *value;   /* PUT, CREATE */
	int64_t if_version;  /* PUT, DELETE: -1 = unconditional */
	const char *owner;   /* LOCK, UNLOCK: node name */
	int64_t ttl_ms;      /* LOCK */
	int64_t ts_ms;       /* proposer's wall clock (ms since epoch) */
};

const char *clu_op_name(enum clu_op_kind k);
bool clu_op_kind_parse(const char *s, enum clu_op_kind *out);
/* Keys: 1-256 bytes of [A-Za-z0-9_.:/-], no empty or ".." component. */
bool clu_key_check(const char *key, struct err **errp);

/* JSON form of an op (for CPG messages and the client protocol). The
 * returned op's strings point into `o`, which must outlive it. */
struct json_object *clu_op_to_json(const struct clu_op *op);
bool clu_op_from_json(struct json_object *o, struct clu_op *op, struct err **errp);

/* ---- store ------------------------------------------------------------ */

struct clu_store;

struct clu_store *clu_store_open(const char *path, struct err **errp);
void clu_store_close(struct clu_store *s);

uint64_t clu_store_version(const struct clu_store *s);

/* Value of key (caller frees) and its version; ERR_NOTFOUND if absent. */
char *clu_store_get(struct clu_store *s, const char *key, uint64_t *version,
		    struct err **errp);

typedef bool (*clu_store_visit_fn)(const char *key, const char *value, uint64_t version,
				   void *opaque);
/* Visits keys starting with prefix in key order; stops if fn returns false. */
bool clu_store_list(struct clu_store *s, const char *prefix, clu_store_visit_fn fn,
		    void *opaque, struct err **errp);

/* Applies op; false with ERR_STATE/ERR_NOTFOUND when its condition is not
 * met (nothing changed), ERR_IO when the disk failed. */
bool clu_store_apply(struct clu_store *s, const struct clu_op *op, struct err **errp);

/* FNV-1a over every (key, value, version) in key order plus the version:
 * equal stores have equal sums. */
uint64_t clu_store_checksum(struct clu_store *s);

/* Whole store as {"version":N,"entries":[[key,value,version],...]}, in
 * chunks of at most max_bytes of entries: fn is called per chunk with
 * last = true on the final one. */
typedef bool (*clu_store_chunk_fn)(struct json_object *chunk, bool last, void *opaque);
bool clu_store_dump(struct clu_store *s, size_t max_bytes, clu_store_chunk_fn fn,
		    void *opaque, struct err **errp);

/* Replaces the whole store with the given chunks' entries at `version`,
 * atomically (one transaction). */
bool clu_store_replace(struct clu_store *s, uint64_t version, struct json_object *const *chunks,
		       unsigned nchunks, struct err **errp);

/* Lock values are {"owner":..,"expires_ms":..}; parses one. */
bool clu_lock_parse(const char *value, char *owner, size_t owner_len, int64_t *expires_ms);

/* ---- client (CLIs) ------------------------------------------------------ */

struct clu_client;

/* $VMM_SOCKET, else /run/vmmigrate/vmmd.sock. */
const char *clu_default_socket(void);
/* Connects to vmmd; path NULL = clu_default_socket(). */
struct clu_client *clu_client_open(const char *path, struct err **errp);
void clu_client_close(struct clu_client *c);
/* Sends req (taken) and returns the reply (caller owns) if ok; a refusal
 * becomes *errp with vmmd's message and error code. */
struct json_object *clu_client_call(struct clu_client *c, struct json_object *req,
				    int timeout_ms, struct err **errp);
char *clu_client_get(struct clu_client *c, const char *key, uint64_t *version,
		     struct err **errp);
/* A store op through the cluster: returns once applied in agreed order. */
bool clu_client_write(struct clu_client *c, const struct clu_op *op, uint64_t *version,
		      struct err **errp);

static inline void clu_client_closep(struct clu_client **c)
{
	if (*c)
		clu_client_close(*c);
}

/* ---- daemon ----------------------------------------------------------- */

struct clu_daemon_opts {
	const char *data_dir;  /* config.db; corosync.conf here means "in a cluster" */
	const char *socket;    /* unix socket for the CLIs */
	const char *node;      /* node name; NULL: from corosync's nodelist or hostname */
	bool standalone;       /* force one-node mode */
	const char *corosync_conf; /* corosync's own file, kept in step with the
				    * store key cluster/corosync.conf; NULL =
				    * $VMM_COROSYNC_CONF or /etc/corosync/corosync.conf */
};

/* Runs vmmd until SIGTERM/SIGINT. */
bool clu_daemon_run(const struct clu_daemon_opts *o, struct err **errp);

#endif
