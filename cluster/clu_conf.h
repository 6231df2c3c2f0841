/*
 * clu_conf.h - the cluster's config files (Proxmox VE syntax): CIDRs,
 * datacenter.cfg, storage.cfg and guest configs.
 *
 * Contract shared by every parser here:
 *  - A parser takes the whole text (NUL-terminated; a NUL ends it) and a
 *    display name used only in messages; it does no I/O. clu_conf_load_*()
 *    read a file of at most CLU_CONF_FILE_MAX bytes with util_read_file and
 *    parse it, using the path as the display name.
 *  - Every error is one line naming the file, the line and the bad value:
 *      datacenter.cfg:3: invalid CIDR '10.1.2.0/33' in migration network: ...
 *      storage.cfg:7: unknown option 'pathh' for storage 'local'
 *    Quoted values show bytes outside printable ASCII (and ') as \xNN and
 *    are cut after CLU_CONF_QUOTE_MAX bytes with "...".
 *  - Unknown keys, unknown options, duplicate keys and out-of-range values
 *    are errors: a typo must not silently change behaviour.
 *  - Lines are at most CLU_CONF_LINE_MAX bytes; control characters other
 *    than tab are refused; one "\r" before "\n" is tolerated. Lines whose
 *    first non-blank character is '#' are comments (a guest config keeps
 *    them as its description), blank lines are ignored.
 *  - Outputs are written only on success; *errp is set exactly once on
 *    failure and never on success.
 *  - clu_*_format() writes only what differs from the defaults and returns
 *    text (caller frees) that parses back to an equal struct; it checks
 *    this itself and fails rather than return text that would not.
 */
#ifndef VMM_CLU_CONF_H
#define VMM_CLU_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"

#define CLU_CONF_FILE_MAX (1u << 20) /* bytes a loader reads */
#define CLU_CONF_LINE_MAX 4096       /* bytes in one line, without "\n" */
#define CLU_CONF_QUOTE_MAX 64        /* bytes of a bad value in a message */
#define CLU_CONF_PATH_MAX 1023       /* bytes in a path value */

/* ---- CIDR (clu_conf_net.c) -------------------------------------------
 * "10.1.2.0/24" or "fd00::/64": an address inet_pton() accepts, '/', and
 * a decimal prefix length without leading zeros (0..32 or 0..128). Host
 * bits are accepted and cleared: "10.1.2.7/24" is the network
 * 10.1.2.0/24, and formats as such. */

#define CLU_CIDR_STRLEN 50 /* longest formatted CIDR, with NUL */

struct clu_cidr {
	int family;          /* AF_INET or AF_INET6 */
	uint8_t addr[16];    /* network address, host bits zero; IPv4 in [0..3] */
	unsigned prefix;     /* 0..32 or 0..128 */
};

bool clu_cidr_parse(const char *s, struct clu_cidr *out, struct err **errp);
/* As clu_cidr_parse, for callers that word their own message: NULL on
 * success, else why s is not a CIDR ("prefix length above 32"). */
const char *clu_cidr_check(const char *s, struct clu_cidr *out);
/* True if addr (an address without prefix) is in c; false for an invalid
 * address or one of the other family (no IPv4-mapped IPv6 matching). */
bool clu_cidr_contains(const struct clu_cidr *c, const char *addr);
/* Writes "10.1.2.0/24" into buf (CLU_CIDR_STRLEN bytes suffice). */
const char *clu_cidr_format(const struct clu_cidr *c, char *buf, size_t len);
bool clu_cidr_equal(const struct clu_cidr *a, const struct clu_cidr *b);

/* ---- Names shared by the files (clu_conf_util.c) --------------------- */

#define CLU_STORAGE_ID_MAX 32 /* [a-z][a-z0-9_-]* */
#define CLU_NODE_NAME_MAX 63  /* [a-z0-9][a-z0-9-]* */

bool clu_storage_id_valid(const char *s);
bool clu_node_name_valid(const char *s);
/* NULL if s is an acceptable absolute path: '/' first, at most
 * CLU_CONF_PATH_MAX bytes of [A-Za-z0-9._+/-] (no spaces or shell
 * metacharacters), no "." or ".." component; else the reason. */
const char *clu_conf_path_check(const char *s);

/* ---- datacenter.cfg (clu_conf_datacenter.c) ---------------------------
 *   migration: [type=]secure|insecure[,network=CIDR]
 *   next-id: [lower=N][,upper=M]     100 <= lower < upper <= 999999999
 *   max_workers: N                   1..64
 *   replication: [schedule=S][,rate=MBPS]   rate 1..1000000 MB/s
 *   bwlimit: [migration=KiBps][,default=KiBps]   0..2^30, 0 = no limit
 * A schedule is kept uninterpreted: 1..CLU_SCHEDULE_MAX bytes of
 * [A-Za-z0-9*,./:-] and spaces, not starting or ending with a space. It
 * may hold commas: "schedule=mon,tue 02:00,rate=5" is read as the
 * schedule "mon,tue 02:00" (a piece without '=' continues the schedule). */

enum clu_migration_type {
	CLU_MIGRATION_SECURE,   /* over ssh */
	CLU_MIGRATION_INSECURE, /* plain TCP on the migration network */
	CLU_MIGRATION_TYPE_MAX
};
extern const char *const clu_migration_type_names[CLU_MIGRATION_TYPE_MAX];

#define CLU_SCHEDULE_MAX 128

struct clu_datacenter {
	enum clu_migration_type migration_type; /* secure */
	bool has_migration_network;             /* false */
	struct clu_cidr migration_network;
	uint32_t next_id_lower;                 /* 100 */
	uint32_t next_id_upper;                 /* 1000000 */
	unsigned max_workers;                   /* 4 */
	char replication_schedule[CLU_SCHEDULE_MAX + 1]; /* "*" "/15" */
	uint32_t replication_rate;              /* MB/s, 0 = no limit */
	uint32_t bwlimit_migration;             /* KiB/s, 0 = no limit */
	uint32_t bwlimit_default;               /* KiB/s, 0 = no limit */
};

void clu_datacenter_defaults(struct clu_datacenter *dc);
/* Keys not in text keep their defaults. */
bool clu_datacenter_parse(const char *text, const char *file,
			  struct clu_datacenter *out, struct err **errp);
bool clu_conf_load_datacenter(const char *path, struct clu_datacenter *out,
			      struct err **errp);
char *clu_datacenter_format(const struct clu_datacenter *dc, struct err **errp);
bool clu_datacenter_equal(const struct clu_datacenter *a,
			  const struct clu_datacenter *b);

/* ---- storage.cfg (clu_conf_storage.c) ---------------------------------
 *   dir: local                 header "TYPE: ID" at column 0
 *   	path /var/lib/vz        indented "key value" lines
 *   	content images,iso      images, rootdir, iso, backup
 *   	nodes n1,n2             at most CLU_STORAGE_NODES_MAX node names
 *   	shared 1                0|1
 *   	disable                 flag; "disable 0|1" is also read
 * A section ends at a blank line or the next header. Only type "dir" is
 * known; "path" is required; IDs are unique; at most CLU_STORAGE_MAX. */

enum clu_storage_type { CLU_STORAGE_DIR, CLU_STORAGE_TYPE_MAX };
extern const char *const clu_storage_type_names[CLU_STORAGE_TYPE_MAX];

enum clu_content {
	CLU_CONTENT_IMAGES,
	CLU_CONTENT_ROOTDIR,
	CLU_CONTENT_ISO,
	CLU_CONTENT_BACKUP,
	CLU_CONTENT_MAX
};
extern const char *const clu_content_names[CLU_CONTENT_MAX];

#define CLU_STORAGE_MAX 256
#define CLU_STORAGE_NODES_MAX 32

struct clu_storage {
	enum clu_storage_type type;
	char id[CLU_STORAGE_ID_MAX + 1];
	char path[CLU_CONF_PATH_MAX + 1];
	bool shared;
	bool disabled;
	unsigned content;  /* bits 1u << enum clu_content; 0 = not given */
	size_t n_nodes;    /* 0 = all nodes */
	char nodes[CLU_STORAGE_NODES_MAX][CLU_NODE_NAME_MAX + 1];
};

struct clu_storage_conf {
	size_t n;
	struct clu_storage *items; /* in file order */
};

/* On success *out is overwritten (what it held is not freed); the caller
 * frees it with clu_storage_conf_free(). */
bool clu_storage_parse(const char *text, const char *file,
		       struct clu_storage_conf *out, struct err **errp);
bool clu_conf_load_storage(const char *path, struct clu_storage_conf *out,
			   struct err **errp);
char *clu_storage_format(const struct clu_storage_conf *sc, struct err **errp);
bool clu_storage_conf_equal(const struct clu_storage_conf *a,
			    const struct clu_storage_conf *b);
/* The storage with that ID, or NULL. */
const struct clu_storage *clu_storage_find(const struct clu_storage_conf *sc,
					   const char *id);
/* Frees the items and empties sc; NULL is fine. */
void clu_storage_conf_free(struct clu_storage_conf *sc);

/* ---- guest config (clu_conf_guest.c, clu_conf_disk.c) -----------------
 *   #free text                 description lines, kept verbatim after '#'
 *   name: web1                 [A-Za-z0-9][A-Za-z0-9.-]*, at most 63
 *   memory: 2048               MiB, 16..4194304 (default 512)
 *   cores: 2                   1..256 (default 1)
 *   sockets: 1                 1..16 (default 1)
 *   cpu: host                  [A-Za-z0-9_.-]+, at most 63
 *   virtio0: local:vm-100-disk-0,size=32G,cache=none,replicate=0
 *   kernel: /boot/vmlinuz      absolute paths (clu_conf_path_check)
 *   initrd: /boot/initrd.img
 *   append: console=ttyS0      printable ASCII, at most CLU_GUEST_APPEND_MAX
 *   machine: q35               pc, q35, pc-i440fx-X.Y, pc-q35-X.Y[+pveN]
 *   onboot: 1                  0|1
 *   lock: migrate              [a-z][a-z-]*, at most 31
 * Disks virtio0..virtio15: STORAGE:VOLUME with STORAGE a storage ID and
 * VOLUME [A-Za-z0-9_.+/-]+, relative, not starting with '-', with no "."
 * or ".." component; options size=SIZE (K/M/G/T suffixes, bare = bytes),
 * cache=none|writeback|writethrough|directsync|unsafe, replicate=0|1
 * (default 1). Comment lines anywhere join the description in order; the
 * formatter writes them first. */

#define CLU_GUEST_DISKS 16
#define CLU_GUEST_DESC_MAX 8192
#define CLU_GUEST_NAME_MAX 63
#define CLU_GUEST_APPEND_MAX 2047
#define CLU_GUEST_WORD_MAX 63   /* cpu, machine */
#define CLU_GUEST_LOCK_MAX 31
#define CLU_VOLUME_MAX 255

enum clu_disk_cache {
	CLU_CACHE_DEFAULT, /* not given: the hypervisor's default */
	CLU_CACHE_NONE,
	CLU_CACHE_WRITEBACK,
	CLU_CACHE_WRITETHROUGH,
	CLU_CACHE_DIRECTSYNC,
	CLU_CACHE_UNSAFE,
	CLU_CACHE_MAX
};
extern const char *const clu_disk_cache_names[CLU_CACHE_MAX];

struct clu_guest_disk {
	bool present;
	char storage[CLU_STORAGE_ID_MAX + 1];
	char volume[CLU_VOLUME_MAX + 1];
	uint64_t size;              /* bytes; 0 = not given */
	enum clu_disk_cache cache;
	bool replicate;             /* true */
};

struct clu_guest_conf {
	char description[CLU_GUEST_DESC_MAX + 1]; /* lines joined by "\n" */
	char name[CLU_GUEST_NAME_MAX + 1];        /* "" = not given */
	uint64_t memory;                          /* MiB */
	unsigned cores;
	unsigned sockets;
	char cpu[CLU_GUEST_WORD_MAX + 1];         /* "" = not given */
	struct clu_guest_disk disks[CLU_GUEST_DISKS]; /* disks[i] is virtio<i> */
	char kernel[CLU_CONF_PATH_MAX + 1];       /* "" = not given */
	char initrd[CLU_CONF_PATH_MAX + 1];
	char append[CLU_GUEST_APPEND_MAX + 1];
	char machine[CLU_GUEST_WORD_MAX + 1];     /* "" = not given */
	bool onboot;
	char lock[CLU_GUEST_LOCK_MAX + 1];        /* "" = not locked */
};

void clu_guest_conf_defaults(struct clu_guest_conf *g);
bool clu_guest_parse(const char *text, const char *file,
		     struct clu_guest_conf *out, struct err **errp);
bool clu_conf_load_guest(const char *path, struct clu_guest_conf *out,
			 struct err **errp);
char *clu_guest_format(const struct clu_guest_conf *g, struct err **errp);
bool clu_guest_conf_equal(const struct clu_guest_conf *a,
			  const struct clu_guest_conf *b);

/* A disk option string without the "virtioN: " key; `where` names the
 * key in messages ("virtio0"). Errors carry no file/line prefix. */
bool clu_guest_disk_parse(const char *s, const char *where,
			  struct clu_guest_disk *out, struct err **errp);
/* Appends the disk's value ("local:vm-1-disk-0,size=32G") to buf. */
bool clu_guest_disk_format(const struct clu_guest_disk *d, char *buf,
			   size_t len);

/* ---- replication.cfg (clu_conf_repl.c) --------------------------------
 *   local: VMID-N            header, VMID 100..999999999, N 0..9999
 *   	target NODE          required
 *   	source NODE          optional (set when a migration flips the job)
 *   	schedule SPEC        default "*\/15"; [A-Za-z0-9*\/:., -], grammar checked later
 *   	rate MBPS            1..1000000, absent = unlimited
 *   	comment TEXT         up to 255 bytes
 *   	disable [0|1]
 * One job per guest per target; duplicate ids are errors. Structs are
 * zero-filled before parsing, so memcmp compares them. */

#define CLU_REPL_MAX 1024
#define CLU_REPL_SCHEDULE_MAX 128
#define CLU_REPL_COMMENT_MAX 255

struct clu_repl_job {
	char id[24];
	uint32_t vmid;
	unsigned n;
	char target[CLU_NODE_NAME_MAX + 1];
	char source[CLU_NODE_NAME_MAX + 1];
	char schedule[CLU_REPL_SCHEDULE_MAX + 1];
	uint32_t rate;        /* MB/s, 0 = unlimited */
	char comment[CLU_REPL_COMMENT_MAX + 1];
	bool disabled;
};

struct clu_repl_conf {
	size_t n;
	struct clu_repl_job *items; /* owned */
};

bool clu_repl_parse(const char *text, const char *file, struct clu_repl_conf *out,
		    struct err **errp);
char *clu_repl_format(const struct clu_repl_conf *rc, struct err **errp);
void clu_repl_conf_free(struct clu_repl_conf *rc);

/* ---- Helpers for the clu_conf_*.c parsers (clu_conf_util.c) ----------
 * Not for other folders. */

struct clu_conf_reader {
	const char *file;  /* display name */
	const char *next;  /* first unread byte; NULL at the end */
	size_t line;       /* number of the line in buf, from 1 */
	char buf[CLU_CONF_LINE_MAX + 1];
};

void clu_conf_reader_init(struct clu_conf_reader *r, const char *text,
			  const char *file);
/* 1: the next line (without "\n") is in r->buf; 0: end of text;
 * -1: a line too long or with a control character, *errp set. */
int clu_conf_reader_next(struct clu_conf_reader *r, struct err **errp);
/* err_set(ERR_INVAL) with "FILE:LINE: " in front; returns false. */
bool clu_conf_fail(const struct clu_conf_reader *r, struct err **errp,
		   const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* As clu_conf_fail, naming another line (where a section began). */
bool clu_conf_fail_at(const struct clu_conf_reader *r, size_t line,
		      struct err **errp, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* As clu_conf_fail, taking over the message of *sub (freed). */
bool clu_conf_fail_sub(const struct clu_conf_reader *r, struct err **errp,
		       struct err *sub);

/* A value made safe to quote in a message (see the contract above). The
 * buffer lives until the end of the full expression that made it:
 *   clu_conf_fail(r, errp, "unknown key '%s'", CLU_Q(key)); */
struct clu_conf_quoted { char text[CLU_CONF_QUOTE_MAX * 4 + 4]; };
struct clu_conf_quoted clu_conf_quote(const char *s);
#define CLU_Q(value) (clu_conf_quote(value).text)

/* Strips blanks (space, tab) at both ends, in place. */
char *clu_conf_trim(char *s);
/* Splits a trimmed "key: value" line in place; false with a message if
 * the line has no "key:" or no value. */
bool clu_conf_split_kv(const struct clu_conf_reader *r, char *line,
		       char **key, char **value, struct err **errp);
/* A decimal in [min, max], or a message "invalid WHAT 'S': ...". */
bool clu_conf_u64(const char *s, uint64_t min, uint64_t max, const char *what,
		  uint64_t *out, struct err **errp);
/* "0" or "1", or a message "invalid WHAT 'S': expected 0 or 1". */
bool clu_conf_bool(const char *s, const char *what, bool *out,
		   struct err **errp);
/* Cuts the next piece off a property string "k=v,k2=v2" in place: false
 * at the end; *key is NULL for a piece without '=' (*value is the piece). */
bool clu_conf_next_opt(char **cursor, char **key, char **value);
/* Index of s in names[0..n), or -1. */
int clu_conf_lookup(const char *const *names, size_t n, const char *s);
/* Copies s into dst[len] if it fits. */
bool clu_conf_copy(char *dst, size_t len, const char *s);
/* Reads a file for a loader: at most CLU_CONF_FILE_MAX bytes, no NUL. */
char *clu_conf_read(const char *path, struct err **errp);

#endif
