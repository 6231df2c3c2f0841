/*
 * cluster_create.c - `vmcluster create NAME`: make this node the first of a
 * new cluster. Writes a fresh authkey and corosync.conf (config_version 1),
 * restarts corosync, hands corosync.conf to vmmd (which leaves standalone
 * mode on seeing it in its data dir), waits for quorum and stores the file
 * as the cluster's copy.
 */
#include "cluster.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define AUTHKEY_BYTES 256

static const struct cli_opt opts[] = {
	CLI_CC_LINK_OPTS,
	{ "nodeid", CLI_VALUE, "N", "this node's id, 1-65535; default 1" },
	{ "votes", CLI_VALUE, "N", "this node's quorum votes, 1-255; default 1" },
	{ "name", CLI_VALUE, "NAME", "this node's name; default the hostname" },
	{ "token", CLI_VALUE, "MS", "totem token timeout in ms, 100-600000; default corosync's" },
	{ "timeout", CLI_VALUE, "S", "seconds to wait for quorum; default 60" },
	CLI_CC_SOCKET_OPT,
	{ NULL }
};

static bool random_bytes(unsigned char *buf, size_t len, struct err **errp)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = getrandom(buf + got, len - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return err_set_errno(errp, errno, "getrandom");
		got += (size_t)n;
	}
	return true;
}

static int exec_create(const struct cli_args *a)
{
	_cleanup_(clu_client_closep) struct clu_client *c = NULL;
	_cleanup_(clu_ccconf_freep) struct clu_ccconf *cc = NULL;
	_cleanup_free_ char *text = NULL, *marker = NULL;
	struct clu_cc_node node = { .has_votes = true };
	unsigned char key[AUTHKEY_BYTES];
	struct cli_links links;
	uint64_t nodeid, votes, token, timeout;
	uint32_t id;
	int64_t t0 = util_now_ms();
	struct err *e = NULL;
	char took[32];

	if (!clu_cc_cluster_name_valid(a->pos[0]))
		return cli_fail(a, "invalid cluster name '%s': 1 to %d characters of A-Z, a-z, 0-9 and '-', not starting with '-'",
				a->pos[0], CLU_CC_CLUSTER_NAME_MAX);
	if (!cli_links_parse(a, &links, &e) ||
	    !cli_cc_number(a, "nodeid", 1, 65535, 1, &nodeid, &e) ||
	    !cli_cc_number(a, "votes", 1, 255, 1, &votes, &e) ||
	    !cli_cc_number(a, "token", 100, 600000, 0, &token, &e) ||
	    !cli_cc_number(a, "timeout", 1, 3600, 60, &timeout, &e) ||
	    !cli_cc_node_name(a, node.name, sizeof(node.name), &e) || !cli_links_local(&links, &e))
		return cli_report(a, e);
	node.nodeid = (uint32_t)nodeid;
	node.votes = (uint32_t)votes;
	if (!(cc = clu_ccconf_new(a->pos[0], (uint32_t)token, &e)))
		return cli_report(a, e);
	for (unsigned l = 0; l < CLU_CC_LINKS; l++)
		if (links.mask & (1u << l)) {
			memcpy(node.addr[l], links.addr[l], sizeof(node.addr[l]));
			if (!clu_ccconf_set_link(cc, l, links.priority[l], &e))
				return cli_report(a, e);
		}
	if (!clu_ccconf_add_node(cc, &node, &id, &e) || !(text = clu_ccconf_format(cc, &e)))
		return cli_report(a, e);
	if (!(marker = cli_cc_data_conf_path()))
		return cli_report(a, NULL);
	if (!(c = cli_cc_connect(a, &e)) || !cli_cc_require_standalone(c, &e))
		return cli_report(a, e);

	/* From here on the node changes; undo the files if corosync cannot start. */
	if (!random_bytes(key, sizeof(key), &e) ||
	    !cli_cc_write_file(cli_cc_authkey_path(), key, sizeof(key), 0400, &e) ||
	    !cli_cc_write_file(cli_cc_conf_path(), text, strlen(text), 0644, &e) ||
	    !cli_cc_restart_corosync(&e)) {
		unlink(cli_cc_conf_path());
		unlink(cli_cc_authkey_path());
		return cli_report(a, e);
	}
	if (!cli_cc_write_file(marker, text, strlen(text), 0644, &e) ||
	    !cli_cc_wait_ready(c, (int)timeout * 1000, 0, &e) ||
	    !cli_cc_write_cluster_conf(c, text, -1, &e)) {
		err_prefix(e, "cluster '%s' is configured but not ready", a->pos[0]);
		return cli_report(a, e);
	}
	printf("cluster '%s' created: node %s (nodeid %" PRIu32 "), config version %" PRIu64
	       ", quorate after %s\n", cc->cluster_name, node.name, id, cc->config_version,
	       cli_cc_elapsed(t0, took, sizeof(took)));
	return 0;
}

const struct cli_cmd cli_cluster_create = {
	.name = "create",
	.posargs = "CLUSTERNAME",
	.summary = "create a new cluster with this node as its first member",
	.opts = opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_create,
};
