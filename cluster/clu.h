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

/* Applies op; false when its condition is not met (nothing changed):
 * ERR_CONFLICT for a create of an existing key, a stale if_version, or a
 * lock held by another node; ERR_NOTFOUND for deleting a missing key;
 * ERR_IO when the disk failed. */
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

/* Checks the value of a key the cluster understands (datacenter.cfg,
 * storage.cfg, guests/<vmid>, nodes/<name>, cluster/corosync.conf) with
 * its parser, and replication.cfg (jobs); other keys pass. vmmd refuses a
 * write that fails this. */
bool clu_value_check(const char *key, const char *value, struct err **errp);

/* config_version in a corosync.conf text, 0 if none. */
uint64_t clu_cc_text_version(const char *text);

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

/* ==== guest records in the store (clu_guest.c) ===========================
 *
 * Store layout (also in docs/vmctl.md):
 *   guests/<vmid>        one owner line "node: <name>\n", then the guest's
 *                        config in the format of clu_conf.h (clu_guest_*).
 *                        Created with CLU_OP_CREATE (two nodes creating one
 *                        VMID at once: exactly one wins), changed with
 *                        CLU_OP_PUT if_version = the version read (no lost
 *                        updates), removed with CLU_OP_DELETE likewise.
 *   locks/guest/<vmid>   CLU_OP_LOCK, ttl 60 s, owner = the node (stamped
 *                        by vmmd), held around create/set/destroy/start/
 *                        stop/shutdown; released after.
 *   datacenter.cfg       text of datacenter.cfg; absent = its defaults
 *                        (next-id lower=100, upper=1000000, upper exclusive).
 *   storage.cfg          text of storage.cfg; a storage "dir: local" whose
 *                        path is the caller's default (vmctl: $VMM_DATA_DIR,
 *                        else /var/lib/vmmigrate) is implied unless the file
 *                        defines "local" itself: every node's own directory.
 * Volumes of dir storages are files <storage path>/images/<volume>; vmctl
 * names them "<vmid>/vm-<vmid>-disk-<n>.raw" (Proxmox's layout).
 * VMIDs are decimals without leading zeros in CLU_VMID_MIN..CLU_VMID_MAX.
 */
#include "clu_conf.h"

#define CLU_VMID_MIN 100u
#define CLU_VMID_MAX 999999999u
#define CLU_GUEST_KEY_LEN 24 /* "guests/999999999" with NUL fits */
#define CLU_GUEST_LOCK_TTL_MS 60000

struct clu_guest_rec {
	uint32_t vmid;
	char node[CLU_NODE_NAME_MAX + 1]; /* owner */
	uint64_t version;                 /* of guests/<vmid> when read; 0 = new */
	struct clu_guest_conf conf;
};

/* "106" -> 106; the error names the value: "invalid VMID '06': ...". */
bool clu_vmid_parse(const char *s, uint32_t *out, struct err **errp);
/* "guests/106" into buf (CLU_GUEST_KEY_LEN bytes). */
const char *clu_guest_key(uint32_t vmid, char *buf, size_t len);

/* Splits a record into its owner and config text (a pointer into record).
 * Outputs are written only on success. */
bool clu_guest_record_split(const char *record, uint32_t vmid, char *owner,
			    size_t owner_len, const char **conf, struct err **errp);
/* Parses a whole record (owner line + config) of guest vmid into *out
 * (version 0: the caller knows it). Errors name "guests/<vmid>". */
bool clu_guest_record_parse(const char *record, uint32_t vmid,
			    struct clu_guest_rec *out, struct err **errp);
/* The record's text (caller frees): owner line + clu_guest_format(). */
char *clu_guest_record_format(const struct clu_guest_rec *r, struct err **errp);

/* Path of a dir-storage volume: "<path>/images/<volume>" (caller frees). */
char *clu_volume_path(const struct clu_storage *st, const char *volume,
		      struct err **errp);

/* ---- through the local vmmd (CLIs) ---- */

/* This node's name, from vmmd's status. */
bool clu_client_node(struct clu_client *c, char *node, size_t len, struct err **errp);

/* Reads guests/<vmid>; ERR_NOTFOUND "guest 106 does not exist". */
bool clu_guest_read(struct clu_client *c, uint32_t vmid, struct clu_guest_rec *out,
		    struct err **errp);
/* Creates guests/<vmid> from r (r->version set on success); a VMID taken
 * meanwhile is ERR_INVAL "VMID 106 already exists". */
bool clu_guest_create(struct clu_client *c, struct clu_guest_rec *r, struct err **errp);
/* Replaces guests/<vmid> if it is still at r->version (updated on
 * success); else ERR_STATE naming the conflict. */
bool clu_guest_update(struct clu_client *c, struct clu_guest_rec *r, struct err **errp);
/* Removes guests/<vmid> if it is still at r->version. */
bool clu_guest_remove(struct clu_client *c, const struct clu_guest_rec *r,
		      struct err **errp);

/* Takes (or renews) locks/guest/<vmid> for this node, waiting up to wait_ms
 * while another node holds it; then ERR_STATE "guest 106 is locked by due
 * (for another 52 s)". */
bool clu_guest_lock(struct clu_client *c, uint32_t vmid, int wait_ms, struct err **errp);
bool clu_guest_unlock(struct clu_client *c, uint32_t vmid, struct err **errp);

/* Visits every guest record in VMID order. A record that does not parse is
 * passed with r = NULL and bad set (vmid still given); the visit goes on. */
typedef bool (*clu_guest_visit_fn)(uint32_t vmid, const struct clu_guest_rec *r,
				   const struct err *bad, void *opaque);
bool clu_guest_list(struct clu_client *c, clu_guest_visit_fn fn, void *opaque,
		    struct err **errp);

/* datacenter.cfg from the store, defaults if absent. */
bool clu_datacenter_read(struct clu_client *c, struct clu_datacenter *out,
			 struct err **errp);
/* storage.cfg from the store, plus "dir: local" at default_path unless it
 * defines "local" (*defaulted = true then; may be NULL). The caller frees *out
 * with clu_storage_conf_free(). */
bool clu_storage_read(struct clu_client *c, const char *default_path,
		      struct clu_storage_conf *out, bool *defaulted, struct err **errp);

#endif
