/*
 * cluster_delnode.c - `vmcluster delnode NAME`: remove a node that is gone
 * for good from the cluster (pvecm delnode). Refuses the local node and a
 * node corosync still sees: a removed node that comes back with its old
 * configuration disturbs the cluster. The new corosync.conf (config_version
 * + 1) goes to the store; every vmmd installs it and reloads corosync.
 */
#include "cluster.h"
#include "../common/cleanup.h"
#include "../transport/tp.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>


static const struct cli_opt opts[] = {
	CLI_CC_SOCKET_OPT,
	{ NULL }
};

/* The status nodelist entry of nodeid, or NULL. */
static struct json_object *status_node(struct json_object *st, uint32_t nodeid)
{
	struct json_object *list;

	if (!json_object_object_get_ex(st, "nodelist", &list))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(list); i++) {
		struct json_object *n = json_object_array_get_idx(list, i);

		if (cli_cc_jint(n, "nodeid", -1) == (int64_t)nodeid)
			return n;
	}
	return NULL;
}

static bool removable(struct json_object *st, const struct clu_ccconf *cc, const char *name,
		      struct err **errp)
{
	const struct clu_cc_node *n = clu_ccconf_find_node(cc, name);
	char names[256] = "";

	if (!n) {
		for (size_t i = 0; i < cc->nnodes; i++)
			snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
				 i ? ", " : "", cc->nodes[i].name);
		return err_set(errp, ERR_NOTFOUND, "unknown node '%s' (the cluster's nodes: %s)", name,
			       names);
	}
	if (cli_cc_jint(st, "nodeid", -1) == (int64_t)n->nodeid)
		return err_set(errp, ERR_INVAL,
			       "cannot remove node '%s': it is this node (run delnode on another member)",
			       name);
	if (cli_cc_jbool(status_node(st, n->nodeid), "online"))
		return err_set(errp, ERR_STATE,
			       "node '%s' (nodeid %" PRIu32 ") is online: corosync still sees it; power it off first",
			       name, n->nodeid);
	return true;
}

struct del_edit {
	struct json_object *st;  /* vmmd status: who is online */
	const char *name;
	uint32_t id;             /* the removed node's id */
};

static bool del_edit(struct clu_ccconf *cc, void *opaque, struct err **errp)
{
	struct del_edit *ed = opaque;

	if (!removable(ed->st, cc, ed->name, errp))
		return false;
	ed->id = clu_ccconf_find_node(cc, ed->name)->nodeid;
	return clu_ccconf_remove_node(cc, ed->name, errp);
}

static int exec_delnode(const struct cli_args *a)
{
	_cleanup_(clu_client_closep) struct clu_client *c = NULL;
	_cleanup_json_ struct json_object *st = NULL;
	const char *name = a->pos[0];
	struct err *e = NULL;

	if (strlen(name) > CLU_CC_NODE_NAME_MAX ||
	    strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != strlen(name))
		return cli_fail(a, "unknown node '%s': not a node name", name);
	if (!(c = cli_cc_connect(a, &e)) || !(st = cli_cc_status(c, &e)) ||
	    !cli_cc_require_cluster(st, &e))
		return cli_report(a, e);
	if (!cli_cc_jbool(st, "quorate")) {
		err_set(&e, ERR_STATE, "this node has no quorum: the cluster cannot change now");
		return cli_report(a, e);
	}
	{
		struct del_edit ed = { .st = st, .name = name };
		_cleanup_free_ char *text = NULL;
		uint64_t version;

		if (!cli_cc_update_cluster_conf(c, del_edit, &ed, &text, &version, &e))
			return cli_report(a, e);
		printf("removed node '%s' (nodeid %" PRIu32 "): config version %" PRIu64 "\n", name,
		       ed.id, version);
	}
	return 0;
}

const struct cli_cmd cli_cluster_delnode = {
	.name = "delnode",
	.posargs = "NAME",
	.summary = "remove a node that is powered off for good from the cluster",
	.opts = opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_delnode,
};
