/*
 * cluster.h - shared by vmcluster's files: cli/vmcluster.c (the table and
 * main) and one cli/cluster_*.c per command, with cluster_common.c for
 * what several commands need (paths, link options, vmmd status and waits,
 * running the corosync restart command and ssh, files, base64).
 *
 * Settings, all from the environment (as vmmd reads them):
 *   VMM_COROSYNC_CONF     corosync's file, default /etc/corosync/corosync.conf
 *   VMM_COROSYNC_AUTHKEY  its key, default /etc/corosync/authkey
 *   VMM_COROSYNC_RESTART  command that (re)starts corosync, split on spaces
 *                         and run without a shell; default
 *                         "systemctl restart corosync"
 *   VMM_DATA_DIR          vmmd's data dir, default /var/lib/vmmigrate
 *   VMM_SOCKET            vmmd's socket (clu_default_socket)
 *   VMM_SSH               ssh command for add, default "ssh -o BatchMode=yes"
 *   VMM_REMOTE_VMCLUSTER  vmcluster on the existing node, default "vmcluster"
 */
#ifndef VMM_CLI_CLUSTER_H
#define VMM_CLI_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "cli.h"
#include "../cluster/clu.h"
#include "../cluster/clu_ccconf.h"

extern const struct cli_cmd cli_cluster_create, cli_cluster_add, cli_cluster_addnode,
	cli_cluster_delnode, cli_cluster_status, cli_cluster_nodes, cli_cluster_expected;

#define CLI_CC_KEY "cluster/corosync.conf" /* the cluster's corosync.conf in the store */

/* Option table rows every command that talks to vmmd has, and the link
 * options of create/add/addnode (cli_links_parse reads all eight). */
#define CLI_CC_SOCKET_OPT \
	{ "socket", CLI_VALUE, "PATH", "vmmd socket; default $VMM_SOCKET or /run/vmmigrate/vmmd.sock" }
#define CLI_CC_LINK_OPT(n) \
	{ "link" #n, CLI_VALUE, "ADDR[,priority=N]", "address of this node on knet link " #n }
#define CLI_CC_LINK_OPTS                                                              \
	CLI_CC_LINK_OPT(0), CLI_CC_LINK_OPT(1), CLI_CC_LINK_OPT(2), CLI_CC_LINK_OPT(3), \
	CLI_CC_LINK_OPT(4), CLI_CC_LINK_OPT(5), CLI_CC_LINK_OPT(6), CLI_CC_LINK_OPT(7)

/* ---- settings ------------------------------------------------------------ */

const char *cli_cc_conf_path(void);
const char *cli_cc_authkey_path(void);
const char *cli_cc_data_dir(void);
/* DATA_DIR/corosync.conf (caller frees): vmmd's "in a cluster" marker. */
char *cli_cc_data_conf_path(void);

/* ---- options ------------------------------------------------------------- */

struct cli_links {
	unsigned mask;                            /* bit N: --linkN given */
	char addr[CLU_CC_LINKS][CLU_CC_ADDR_MAX];
	int priority[CLU_CC_LINKS];               /* -1: not given */
};

/* --link0..--link7 as ADDR[,priority=N]: an IPv4/IPv6 literal, priority
 * 0..255; every address distinct. Errors name the option and value. */
bool cli_links_parse(const struct cli_args *a, struct cli_links *l, struct err **errp);
/* Every address is configured on this node (getifaddrs); a node with no
 * --linkN gets link 0 on its only address, if it has exactly one. */
bool cli_links_local(struct cli_links *l, struct err **errp);

/* --name, else the hostname; must be a valid node name. */
bool cli_cc_node_name(const struct cli_args *a, char *out, size_t len, struct err **errp);
/* Optional numeric option in [min, max]; def if absent. */
bool cli_cc_number(const struct cli_args *a, const char *name, uint64_t min, uint64_t max,
		   uint64_t def, uint64_t *out, struct err **errp);

/* ---- vmmd ------------------------------------------------------------------ */

struct clu_client *cli_cc_connect(const struct cli_args *a, struct err **errp);
/* vmmd's status object (caller puts it). */
struct json_object *cli_cc_status(struct clu_client *c, struct err **errp);
const char *cli_cc_jstr(struct json_object *o, const char *key);
int64_t cli_cc_jint(struct json_object *o, const char *key, int64_t def);
bool cli_cc_jbool(struct json_object *o, const char *key);
/* ERR_STATE unless vmmd is in a cluster (not standalone). */
bool cli_cc_require_cluster(struct json_object *st, struct err **errp);
/* ERR_STATE if this node is in a cluster already: corosync.conf or
 * DATA_DIR/corosync.conf exists, or vmmd is not standalone. */
bool cli_cc_require_standalone(struct clu_client *c, struct err **errp);
/* Until vmmd is synced and quorate and, when min_version > 0, the store's
 * cluster/corosync.conf has at least that config_version. */
bool cli_cc_wait_ready(struct clu_client *c, int timeout_ms, uint64_t min_version,
		       struct err **errp);
/* The cluster's corosync.conf from the store and its key version; if the
 * key is absent (a cluster made by hand), the local file with version 0,
 * so that a conditional write creates the key. */
struct clu_ccconf *cli_cc_read_cluster_conf(struct clu_client *c, int64_t *key_version,
					    struct err **errp);
/* Writes conf to the store key, only if the key is still at key_version. */
bool cli_cc_write_cluster_conf(struct clu_client *c, const char *text, int64_t key_version,
			       struct err **errp);

/* Changes the cluster's corosync.conf read-modify-write: edit() changes cc
 * (or refuses with *errp set), config_version is bumped, and the text is
 * stored only if nobody changed the key meanwhile; on that conflict the
 * whole round is retried from a fresh read (a few times). On success *text
 * (caller frees) and *version are what was written. */
typedef bool (*cli_cc_edit_fn)(struct clu_ccconf *cc, void *opaque, struct err **errp);
bool cli_cc_update_cluster_conf(struct clu_client *c, cli_cc_edit_fn edit, void *opaque,
				char **text, uint64_t *version, struct err **errp);

/* ---- processes ----------------------------------------------------------- */

/* Runs argv (no shell), collecting stdout and stderr (each at most 1 MiB);
 * kills it after timeout_ms. *status is its exit status (128 + signal if
 * killed). Fails only if it could not be run. */
bool cli_cc_run(char *const *argv, int timeout_ms, char **out, char **errtext, int *status,
		struct err **errp);
/* Splits a command line on spaces into a NULL-terminated argv with room
 * for `extra` more entries (caller frees the array and argv[0]'s buffer
 * through cli_cc_argv_free). */
char **cli_cc_split(const char *cmdline, size_t extra);
void cli_cc_argv_free(char **argv);
/* $VMM_COROSYNC_RESTART; the error carries its last line of output. */
bool cli_cc_restart_corosync(struct err **errp);
/* s in single quotes for a POSIX shell ('it'\''s'); caller frees. */
char *cli_cc_shell_quote(const char *s);
/* The last non-empty line of text, without a "vmcluster: " prefix, in buf. */
const char *cli_cc_last_line(const char *text, char *buf, size_t len);

/* ---- files and encoding ------------------------------------------------------ */

/* Atomic (temp file + fsync + rename) with mode; creates the directory. */
bool cli_cc_write_file(const char *path, const void *data, size_t len, int mode,
		       struct err **errp);
/* Whole small binary file (at most max bytes). */
bool cli_cc_read_file(const char *path, size_t max, unsigned char **data, size_t *len,
		      struct err **errp);
char *cli_cc_base64(const unsigned char *data, size_t len);
bool cli_cc_unbase64(const char *s, unsigned char **data, size_t *len, struct err **errp);

/* Seconds since t0_ms (util_now_ms) as "1.23 s" in buf. */
const char *cli_cc_elapsed(int64_t t0_ms, char *buf, size_t len);

#endif
