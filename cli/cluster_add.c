/*
 * cluster_add.c - `vmcluster add EXISTING-NODE`: join this node to the
 * cluster EXISTING-NODE belongs to (pvecm add). Over ssh, with host keys
 * that must already be known (no trust on first use), the member runs
 * `vmcluster addnode` and answers with the new corosync.conf and the
 * authkey; this node installs both, tells vmmd to join with an empty store
 * (so the cluster's store wins the first sync), restarts corosync and waits
 * until it is quorate and has the cluster's store.
 *
 * ssh hands the remote command to a shell as one string: every argument
 * is single-quoted, and all of them were checked here first.
 */
#include "cluster.h"
#include "../common/cleanup.h"
#include "../common/util.h"
#include "../transport/tp.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct cli_opt opts[] = {
	CLI_CC_LINK_OPTS,
	{ "nodeid", CLI_VALUE, "N", "this node's id, 1-65535; default the lowest free one" },
	{ "votes", CLI_VALUE, "N", "this node's quorum votes, 1-255; default 1" },
	{ "name", CLI_VALUE, "NAME", "this node's name; default the hostname" },
	{ "timeout", CLI_VALUE, "S", "seconds to wait for quorum and the cluster's store; default 60" },
	CLI_CC_SOCKET_OPT,
	{ NULL }
};

/* An IP address or host name for ssh: no user@, no options, no spaces. */
static bool host_valid(const char *h)
{
	size_t n = strlen(h);

	return n && n <= 253 && h[0] != '-' &&
	       strspn(h, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.:-") == n;
}

/* A joining node takes the cluster's store: it must hold no guests. */
static bool no_guests(struct clu_client *c, struct err **errp)
{
	_cleanup_json_ struct json_object *r = NULL;
	struct json_object *req = json_object_new_object(), *entries;
	size_t n;

	json_object_object_add(req, "cmd", json_object_new_string("list"));
	json_object_object_add(req, "prefix", json_object_new_string("guests/"));
	if (!(r = clu_client_call(c, req, 10000, errp)))
		return false;
	if (json_object_object_get_ex(r, "entries", &entries) &&
	    (n = json_object_array_length(entries)) > 0) {
		struct json_object *k = json_object_object_get(json_object_array_get_idx(entries, 0), "key");

		return err_set(errp, ERR_STATE,
			       "this node holds %zu guest(s) (%s%s): a joining node takes the cluster's configuration; move or remove them first",
			       n, k ? json_object_get_string(k) : "?", n > 1 ? ", ..." : "");
	}
	return true;
}

/* Appends w, single-quoted, to the command line being built in f. */
static bool add_word(FILE *f, const char *w)
{
	_cleanup_free_ char *q = cli_cc_shell_quote(w);

	return q && fprintf(f, "%s%s", ftell(f) > 0 ? " " : "", q) > 0;
}

/* The remote command line: every word single-quoted. */
static char *remote_command(const char *name, const struct cli_links *l, uint64_t nodeid,
			    uint64_t votes)
{
	const char *prog = getenv("VMM_REMOTE_VMCLUSTER");
	char *cmd = NULL, w[CLU_CC_ADDR_MAX + 32];
	size_t len = 0;
	FILE *f = open_memstream(&cmd, &len);
	bool ok;

	if (!f)
		return NULL;
	ok = add_word(f, prog && *prog ? prog : "vmcluster") && add_word(f, "addnode") &&
	     add_word(f, name);
	for (unsigned k = 0; k < CLU_CC_LINKS && ok; k++) {
		if (!(l->mask & (1u << k)))
			continue;
		snprintf(w, sizeof(w), "--link%u", k);
		ok = add_word(f, w);
		if (l->priority[k] >= 0)
			snprintf(w, sizeof(w), "%s,priority=%d", l->addr[k], l->priority[k]);
		else
			snprintf(w, sizeof(w), "%s", l->addr[k]);
		ok = ok && add_word(f, w);
	}
	if (ok && nodeid) {
		snprintf(w, sizeof(w), "%" PRIu64, nodeid);
		ok = add_word(f, "--nodeid") && add_word(f, w);
	}
	snprintf(w, sizeof(w), "%" PRIu64, votes);
	ok = ok && add_word(f, "--votes") && add_word(f, w);
	if (fclose(f) != 0 || !ok) {
		free(cmd);
		return NULL;
	}
	return cmd;
}

/* Runs addnode on host; returns its JSON answer. */
static struct json_object *ask_member(const char *host, const char *cmd, const char *name,
				      struct err **errp)
{
	const char *ssh = getenv("VMM_SSH");
	char **argv = cli_cc_split(ssh && *ssh ? ssh : "ssh -o BatchMode=yes", 6);
	_cleanup_free_ char *out = NULL, *errtext = NULL;
	struct json_object *ans;
	char line[512];
	size_t n = 0;
	int status;
	bool ok;

	if (!argv) {
		err_set(errp, ERR_INVAL, "invalid VMM_SSH '%s'", ssh);
		return NULL;
	}
	while (argv[n])
		n++;
	/* Host keys must be known already: never trust a new one. Options
	 * given first win in ssh, so this goes right after "ssh". */
	if (!strcmp(strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0], "ssh")) {
		memmove(&argv[3], &argv[1], (n - 1) * sizeof(char *));
		argv[1] = "-o";
		argv[2] = "StrictHostKeyChecking=yes";
		n += 2;
	}
	argv[n++] = "--";
	argv[n++] = (char *)host;
	argv[n++] = (char *)cmd;
	argv[n] = NULL;
	ok = cli_cc_run(argv, 120000, &out, &errtext, &status, errp);
	cli_cc_argv_free(argv);
	if (!ok)
		return NULL;
	if (status == 255) {
		err_set(errp, ERR_IO, "cannot reach '%s' over ssh: %s", host,
			cli_cc_last_line(errtext, line, sizeof(line)));
		return NULL;
	}
	if (status) {
		err_set(errp, status == 2 ? ERR_INVAL : ERR_CHILD, "'%s' did not add node '%s': %s", host,
			name, cli_cc_last_line(*errtext ? errtext : out, line, sizeof(line)));
		return NULL;
	}
	ans = json_tokener_parse(out);
	if (!ans || !json_object_is_type(ans, json_type_object)) {
		json_object_put(ans);
		err_set(errp, ERR_PROTO, "'%s' answered addnode with something other than JSON: '%s'",
			host, cli_cc_last_line(out, line, sizeof(line)));
		return NULL;
	}
	return ans;
}

static int exec_add(const struct cli_args *a)
{
	_cleanup_(clu_client_closep) struct clu_client *c = NULL;
	_cleanup_(clu_ccconf_freep) struct clu_ccconf *cc = NULL;
	_cleanup_json_ struct json_object *ans = NULL;
	_cleanup_free_ char *cmd = NULL, *marker = NULL;
	_cleanup_free_ unsigned char *key = NULL;
	const char *host = a->pos[0], *text, *b64;
	const struct clu_cc_node *me;
	char name[CLU_CC_NODE_NAME_MAX + 1], took[32];
	struct cli_links links;
	uint64_t nodeid, votes, timeout;
	int64_t t0 = util_now_ms();
	struct json_object *req;
	struct err *e = NULL;
	size_t keylen;

	if (!host_valid(host))
		return cli_fail(a, "invalid cluster node '%s': expected an IP address or host name", host);
	if (!cli_links_parse(a, &links, &e) ||
	    !cli_cc_number(a, "nodeid", 1, 65535, 0, &nodeid, &e) ||
	    !cli_cc_number(a, "votes", 1, 255, 1, &votes, &e) ||
	    !cli_cc_number(a, "timeout", 1, 3600, 60, &timeout, &e) ||
	    !cli_cc_node_name(a, name, sizeof(name), &e) || !cli_links_local(&links, &e))
		return cli_report(a, e);
	if (!(marker = cli_cc_data_conf_path()) || !(cmd = remote_command(name, &links, nodeid, votes)))
		return cli_report(a, NULL);
	if (!(c = cli_cc_connect(a, &e)) || !cli_cc_require_standalone(c, &e) || !no_guests(c, &e))
		return cli_report(a, e);

	if (!(ans = ask_member(host, cmd, name, &e)))
		return cli_report(a, e);
	text = cli_cc_jstr(ans, "corosync_conf");
	b64 = cli_cc_jstr(ans, "authkey_b64");
	if (!text || !b64) {
		err_set(&e, ERR_PROTO, "'%s' answered without corosync_conf or authkey_b64", host);
		goto joined_badly;
	}
	if (!(cc = clu_ccconf_parse(text, "corosync.conf from the cluster", &e)) ||
	    !cli_cc_unbase64(b64, &key, &keylen, &e))
		goto joined_badly;
	if (!(me = clu_ccconf_find_node(cc, name)) || keylen < 16 || keylen > 4096) {
		err_set(&e, ERR_PROTO, "'%s' answered with %s", host,
			me ? "an authkey of a bad size" : "a corosync.conf without this node");
		goto joined_badly;
	}
	/* Files first, then vmmd (empty store, cluster mode), then corosync:
	 * vmmd cannot meet the cluster before its store is emptied. */
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("join"));
	if (!cli_cc_write_file(cli_cc_authkey_path(), key, keylen, 0400, &e) ||
	    !cli_cc_write_file(cli_cc_conf_path(), text, strlen(text), 0644, &e) ||
	    !cli_cc_write_file(marker, text, strlen(text), 0644, &e)) {
		json_object_put(req);
		goto joined_badly;
	}
	json_object_put(clu_client_call(c, req, 10000, &e));
	if (e || !cli_cc_restart_corosync(&e) ||
	    !cli_cc_wait_ready(c, (int)timeout * 1000, cc->config_version, &e))
		goto joined_badly;
	printf("node %s joined cluster '%s' via %s: nodeid %" PRIu32 ", config version %" PRIu64
	       ", quorate and synced after %s\n", name, cc->cluster_name, host, me->nodeid,
	       cc->config_version, cli_cc_elapsed(t0, took, sizeof(took)));
	return 0;

joined_badly:
	/* The cluster lists this node now: say how to undo that, and do not
	 * exit 2 ("nothing changed") even if the cause was bad data. */
	if (e && (e->code == ERR_INVAL || e->code == ERR_NOTFOUND))
		e->code = ERR_PROTO;
	err_prefix(e, "'%s' added node '%s' but joining failed (undo with 'vmcluster delnode %s' on a member)",
		   host, name, name);
	return cli_report(a, e);
}

const struct cli_cmd cli_cluster_add = {
	.name = "add",
	.posargs = "EXISTING-NODE",
	.summary = "join this node to the cluster of EXISTING-NODE (IP or host name, over ssh)",
	.opts = opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_add,
};
