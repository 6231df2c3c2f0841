/*
 * clu_ccconf.h - corosync.conf as vmcluster reads, edits and writes it
 * (the pvecm chapter's model: nodelist with nodeid/votes/ringN_addr,
 * totem with cluster_name, config_version and links with knet priority).
 *
 * Syntax (what corosync's own parser, coroparse.c, reads):
 *     # comment                 only as the first non-blank of a line
 *     NAME {                    a section; sections nest
 *       key: value              value runs to the end of the line, trimmed
 *     }
 * One construct per line: "quorum { provider: x }" is an error, as it
 * silently misparses in corosync. Keys and section names are
 * [A-Za-z0-9_-]{1,64}; values are at most CLU_CC_VALUE_MAX printable ASCII
 * bytes without '{' or '}' (corosync would read those as sections); a line
 * is at most CLU_CC_LINE_MAX bytes (corosync reads 512-byte lines); one
 * "\r" before "\n" is tolerated; sections nest at most CLU_CC_DEPTH deep.
 *
 * Model: the keys vmcluster works with are typed fields (below); every
 * other key and section is kept as it was (struct clu_cc_section, in file
 * order) so that a file edited by hand loses nothing but its comments.
 * Checked when parsing, each error one line naming file, line and value
 *     corosync.conf:14: duplicate nodeid '2' (node 'due'; also node 'uno' at line 8)
 *  - a totem section with cluster_name; at most one totem, nodelist and
 *    quorum section; no key outside a section;
 *  - numbers decimal and in range; transport, crypto_cipher, crypto_hash
 *    from corosync's lists; no typed key twice in one section;
 *  - interfaces: linknumber 0..7 (0 if absent) unique, knet_link_priority
 *    0..255;
 *  - nodes: name, nodeid 1..2^32-1 and at least one ringN_addr (N 0..7);
 *    names, nodeids and addresses unique; every node has the same links
 *    (corosync refuses a nodelist where they differ).
 *
 * Output: clu_ccconf_format() writes the typed keys first, then the kept
 * ones, two spaces per level, and checks that the text parses back to an
 * equal model (fails rather than return text that would not).
 *
 * Outputs are written only on success; *errp is set exactly once on
 * failure, never on success. No function here does I/O but
 * clu_ccconf_load().
 */
#ifndef VMM_CLU_CCCONF_H
#define VMM_CLU_CCCONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"

#define CLU_CC_FILE_MAX (1u << 20)  /* bytes clu_ccconf_load() reads */
#define CLU_CC_LINE_MAX 510         /* bytes in one line, without "\n" */
#define CLU_CC_KEY_MAX 64           /* bytes in a key or section name */
#define CLU_CC_VALUE_MAX 255        /* bytes in a value */
#define CLU_CC_DEPTH 8              /* nesting of sections */
#define CLU_CC_LINKS 8              /* knet links 0..7 */
#define CLU_CC_NODES_MAX 1024
#define CLU_CC_ADDR_MAX 64          /* bytes in a ringN_addr, with NUL */
#define CLU_CC_NODE_NAME_MAX 63     /* node names, as vmmd: [a-z0-9][a-z0-9-]* */
#define CLU_CC_CLUSTER_NAME_MAX 15  /* as pvecm: [A-Za-z0-9][A-Za-z0-9-]* */

/* A key and its value; line is where it was read (0 if made). */
struct clu_cc_item {
	char *key;
	char *value;
	unsigned line;
};

/* A section kept as read: its keys and subsections in file order. The
 * root-level holder of kept sections has name NULL. */
struct clu_cc_section {
	char *name;
	unsigned line;
	struct clu_cc_item *items;
	size_t nitems;
	struct clu_cc_section *subs;
	size_t nsubs;
};

struct clu_cc_iface {
	unsigned linknumber;          /* 0..7 */
	int priority;                 /* knet_link_priority 0..255, -1 = not set */
	struct clu_cc_section extra;  /* other keys (knet_transport, mcastport ...) */
};

struct clu_cc_node {
	char name[CLU_CC_NODE_NAME_MAX + 1];
	uint32_t nodeid;              /* 1..2^32-1 */
	bool has_votes;
	uint32_t votes;               /* quorum_votes (corosync's default: 1) */
	char addr[CLU_CC_LINKS][CLU_CC_ADDR_MAX]; /* ringN_addr, "" = none */
	struct clu_cc_section extra;
	unsigned line;
};

struct clu_ccconf {
	/* totem */
	char cluster_name[CLU_CC_VALUE_MAX + 1];
	uint64_t config_version;      /* 0 if absent, as corosync */
	char transport[8];            /* knet, udp, udpu; "" = not set (knet) */
	uint32_t token;               /* ms, 0 = not set (corosync's default) */
	char crypto_cipher[8];        /* "" = not set */
	char crypto_hash[8];          /* "" = not set */
	struct clu_cc_iface ifaces[CLU_CC_LINKS];
	unsigned nifaces;
	struct clu_cc_section totem_extra;
	/* nodelist */
	struct clu_cc_node *nodes;
	size_t nnodes;
	/* quorum */
	bool has_quorum;
	char quorum_provider[CLU_CC_VALUE_MAX + 1]; /* "" = not set */
	struct clu_cc_section quorum_extra;
	/* logging and every other top-level section */
	struct clu_cc_section other;
};

/* Parses text (a NUL ends it); file names it in messages. */
struct clu_ccconf *clu_ccconf_parse(const char *text, const char *file, struct err **errp);
/* Reads and parses the file at path (at most CLU_CC_FILE_MAX bytes). */
struct clu_ccconf *clu_ccconf_load(const char *path, struct err **errp);
void clu_ccconf_free(struct clu_ccconf *c);
static inline void clu_ccconf_freep(struct clu_ccconf **c)
{
	if (*c)
		clu_ccconf_free(*c);
}

/* Text (caller frees) that parses back to an equal model. */
char *clu_ccconf_format(const struct clu_ccconf *c, struct err **errp);
/* Same typed values and the same kept keys and sections in the same order
 * (line numbers do not count). */
bool clu_ccconf_equal(const struct clu_ccconf *a, const struct clu_ccconf *b);

/* A new cluster's file: config_version 1, knet, aes256/sha256, votequorum,
 * the keys pvecm writes (version 2, ip_version ipv4-6, link_mode passive)
 * and Debian's logging; no nodes and no links yet (clu_ccconf_set_link,
 * clu_ccconf_add_node). token 0 leaves corosync's default. */
struct clu_ccconf *clu_ccconf_new(const char *cluster_name, uint32_t token, struct err **errp);

/* Adds totem.interface for link (0..7) with a priority (-1: none), or
 * changes the priority of an existing one. */
bool clu_ccconf_set_link(struct clu_ccconf *c, unsigned link, int priority, struct err **errp);
/* Bit N set when the nodes use ringN_addr (0 when there are no nodes). */
unsigned clu_ccconf_links(const struct clu_ccconf *c);
/* The interface of link N, or NULL. */
const struct clu_cc_iface *clu_ccconf_iface(const struct clu_ccconf *c, unsigned link);

/* Adds a node: name valid (clu_cc_node_name_valid) and unused; nodeid
 * unused, or 0 for the lowest free one; every address unused by other
 * nodes; its links those of the other nodes (any, for the first node, but
 * each must have a totem interface once there are some). *nodeid gets the
 * id it got. n's extra is ignored. */
bool clu_ccconf_add_node(struct clu_ccconf *c, const struct clu_cc_node *n, uint32_t *nodeid,
			 struct err **errp);
/* Removes the node named name (ERR_NOTFOUND if there is none). */
bool clu_ccconf_remove_node(struct clu_ccconf *c, const char *name, struct err **errp);
const struct clu_cc_node *clu_ccconf_find_node(const struct clu_ccconf *c, const char *name);
/* config_version + 1: call once per change, as the pvecm chapter asks. */
void clu_ccconf_bump(struct clu_ccconf *c);

/* Names and addresses vmcluster accepts from users. */
bool clu_cc_cluster_name_valid(const char *s);
bool clu_cc_node_name_valid(const char *s);
/* NULL if s is an IPv4 or IPv6 address literal (what vmcluster writes as
 * ringN_addr: no names, so no resolver surprises), else why not. */
const char *clu_cc_addr_check(const char *s);

#endif
