/*
 * cluster_addnode.c - `vmcluster addnode NAME --link0 ADDR ...`: the member
 * side of `add`, run over ssh by the joining node. Adds the node to the
 * cluster's corosync.conf in the store (config_version + 1, written only
 * if nobody changed it meanwhile; retried on a race), so every vmmd
 * installs it and reloads corosync. Prints for the joiner one JSON object:
 *   {"corosync_conf": TEXT, "authkey_b64": KEY, "nodeid": N, "config_version": V}
 */
#include "cluster.h"
#include "../common/cleanup.h"
#include "../common/util.h"
#include "../transport/tp.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static const struct cli_opt opts[] = {
	CLI_CC_LINK_OPTS,
	{ "nodeid", CLI_VALUE, "N", "the new node's id, 1-65535; default the lowest free one" },
	{ "votes", CLI_VALUE, "N", "the new node's quorum votes, 1-255; default 1" },
	CLI_CC_SOCKET_OPT,
	{ NULL }
};

/* A priority on add must agree with the cluster's: it is a property of the
 * link, set at create. */
static bool check_priorities(const struct clu_ccconf *cc, const struct cli_links *l,
			     struct err **errp)
{
	for (unsigned n = 0; n < CLU_CC_LINKS; n++) {
		const struct clu_cc_iface *ifc = clu_ccconf_iface(cc, n);
		int have = ifc ? ifc->priority : -1;

		if (l->priority[n] >= 0 && l->priority[n] != have)
			return err_set(errp, ERR_INVAL,
				       "invalid --link%u priority %d: the cluster's link %u has %s%d (set at create)",
				       n, l->priority[n], n, have < 0 ? "no priority, " : "priority ",
				       have < 0 ? 0 : have);
	}
	return true;
}

static bool emit(const char *text, uint32_t nodeid, uint64_t version, struct err **errp)
{
	_cleanup_free_ unsigned char *key = NULL;
	_cleanup_free_ char *b64 = NULL;
	_cleanup_json_ struct json_object *o = json_object_new_object();
	size_t len;

	if (!cli_cc_read_file(cli_cc_authkey_path(), 4096, &key, &len, errp))
		return false;
	if (!(b64 = cli_cc_base64(key, len)))
		return err_set(errp, ERR_IO, "out of memory");
	json_object_object_add(o, "corosync_conf", json_object_new_string(text));
	json_object_object_add(o, "authkey_b64", json_object_new_string(b64));
	json_object_object_add(o, "nodeid", json_object_new_int64(nodeid));
	json_object_object_add(o, "config_version", json_object_new_uint64(version));
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	return fflush(stdout) == 0 || err_set(errp, ERR_IO, "cannot write the answer");
}

struct add_edit {
	const struct clu_cc_node *node;
	const struct cli_links *links;
	uint32_t id;            /* the node id the new node got */
};

static bool add_edit(struct clu_ccconf *cc, void *opaque, struct err **errp)
{
	struct add_edit *ed = opaque;

	return check_priorities(cc, ed->links, errp) &&
	       clu_ccconf_add_node(cc, ed->node, &ed->id, errp);
}

static int exec_addnode(const struct cli_args *a)
{
	_cleanup_(clu_client_closep) struct clu_client *c = NULL;
	_cleanup_json_ struct json_object *st = NULL;
	struct clu_cc_node node = { .has_votes = true };
	struct cli_links links;
	uint64_t nodeid, votes;
	struct err *e = NULL;

	if (!clu_cc_node_name_valid(a->pos[0]))
		return cli_fail(a, "invalid node name '%s': 1 to %d characters of a-z, 0-9 and '-', not starting or ending with '-'",
				a->pos[0], CLU_CC_NODE_NAME_MAX);
	snprintf(node.name, sizeof(node.name), "%s", a->pos[0]);
	if (!cli_links_parse(a, &links, &e) ||
	    !cli_cc_number(a, "nodeid", 1, 65535, 0, &nodeid, &e) ||
	    !cli_cc_number(a, "votes", 1, 255, 1, &votes, &e))
		return cli_report(a, e);
	if (!links.mask)
		return cli_fail(a, "missing --link0 (the new node's address on link 0)");
	node.nodeid = (uint32_t)nodeid;
	node.votes = (uint32_t)votes;
	for (unsigned l = 0; l < CLU_CC_LINKS; l++)
		memcpy(node.addr[l], links.addr[l], sizeof(node.addr[l]));
	if (!(c = cli_cc_connect(a, &e)) || !(st = cli_cc_status(c, &e)) ||
	    !cli_cc_require_cluster(st, &e))
		return cli_report(a, e);
	if (!cli_cc_jbool(st, "quorate")) {
		err_set(&e, ERR_STATE, "this node has no quorum: the cluster cannot change now");
		return cli_report(a, e);
	}
	{
		struct add_edit ed = { .node = &node, .links = &links };
		_cleanup_free_ char *text = NULL;
		uint64_t version;

		if (!cli_cc_update_cluster_conf(c, add_edit, &ed, &text, &version, &e) ||
		    !emit(text, ed.id, version, &e))
			return cli_report(a, e);
	}
	return 0;
}

const struct cli_cmd cli_cluster_addnode = {
	.name = "addnode",
	.posargs = "NAME",
	.summary = "(internal, run by 'add' over ssh) add a node to the cluster's corosync.conf",
	.opts = opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_addnode,
};
