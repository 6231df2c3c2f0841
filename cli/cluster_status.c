/*
 * cluster_status.c - `vmcluster status` and `vmcluster nodes`, laid out as
 * pvecm's (corosync-quorumtool's) so that operators read them alike, from
 * the facts vmmd gathers from corosync (cmap, votequorum, quorum view).
 * `--output json` prints vmmd's status object (status) or the configured
 * nodes with their online flag (nodes).
 */
#include "cluster.h"
#include "../common/cleanup.h"
#include "../transport/tp.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const struct cli_opt opts[] = {
	{ "output", CLI_VALUE, "FORMAT", "text (default) or json" },
	CLI_CC_SOCKET_OPT,
	{ NULL }
};

/* vmmd's status, in a cluster and connected to corosync; *json from --output. */
static struct json_object *get_status(const struct cli_args *a, bool *json, int *rc)
{
	_cleanup_(clu_client_closep) struct clu_client *c = NULL;
	struct json_object *st = NULL;
	const char *out = cli_get(a, "output");
	struct err *e = NULL;

	*json = out && !strcmp(out, "json");
	if (out && !*json && strcmp(out, "text")) {
		*rc = cli_fail(a, "invalid --output '%s': expected text or json", out);
		return NULL;
	}
	if (!(c = cli_cc_connect(a, &e)) || !(st = cli_cc_status(c, &e)) ||
	    !cli_cc_require_cluster(st, &e))
		goto fail;
	if (!json_object_object_get_ex(st, "votequorum", NULL) ||
	    !json_object_object_get_ex(st, "nodelist", NULL)) {
		err_set(&e, ERR_STATE, "no cluster information: vmmd is not connected to corosync (state %s)",
			cli_cc_jstr(st, "state") ? cli_cc_jstr(st, "state") : "?");
		goto fail;
	}
	json_object_object_del(st, "id");
	json_object_object_del(st, "ok");
	return st;
fail:
	json_object_put(st);
	*rc = cli_report(a, e);
	return NULL;
}

static void heading(const char *title)
{
	printf("%s\n", title);
	for (size_t i = 0; i < strlen(title); i++)
		putchar('~');
	putchar('\n');
}

/* Node name, or its link 0 address when addr (pvecm status shows those). */
static const char *node_label(struct json_object *n, bool addr)
{
	struct json_object *links, *l0;

	if (addr && json_object_object_get_ex(n, "links", &links) &&
	    (l0 = json_object_array_get_idx(links, 0)) && cli_cc_jstr(l0, "addr"))
		return cli_cc_jstr(l0, "addr");
	return cli_cc_jstr(n, "name") ? cli_cc_jstr(n, "name") : "?";
}

/* Membership lines for the nodes corosync sees, by nodeid. */
static void membership(struct json_object *st, bool hex, bool addr)
{
	struct json_object *list = json_object_object_get(st, "nodelist");
	int64_t last = 0;

	printf("%10s %10s %s\n", "Nodeid", "Votes", "Name");
	for (;;) {
		struct json_object *next = NULL;
		int64_t id;

		for (size_t i = 0; i < json_object_array_length(list); i++) {
			struct json_object *n = json_object_array_get_idx(list, i);

			id = cli_cc_jint(n, "nodeid", 0);
			if (cli_cc_jbool(n, "online") && id > last &&
			    (!next || id < cli_cc_jint(next, "nodeid", 0)))
				next = n;
		}
		if (!next)
			break;
		last = cli_cc_jint(next, "nodeid", 0);
		if (hex)
			printf("0x%08" PRIx64 " %10" PRId64 " %s%s\n", last, cli_cc_jint(next, "votes", 1),
			       node_label(next, addr), cli_cc_jbool(next, "local") ? " (local)" : "");
		else
			printf("%10" PRId64 " %10" PRId64 " %s%s\n", last, cli_cc_jint(next, "votes", 1),
			       node_label(next, addr), cli_cc_jbool(next, "local") ? " (local)" : "");
	}
}

static int exec_status(const struct cli_args *a)
{
	_cleanup_json_ struct json_object *st = NULL;
	struct json_object *vq, *flags, *list;
	char date[64], flagtext[128] = "";
	unsigned online = 0;
	time_t now = time(NULL);
	bool json;
	int rc;

	if (!(st = get_status(a, &json, &rc)))
		return rc;
	if (json) {
		printf("%s\n", json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN));
		return 0;
	}
	vq = json_object_object_get(st, "votequorum");
	list = json_object_object_get(st, "nodelist");
	for (size_t i = 0; i < json_object_array_length(list); i++)
		online += cli_cc_jbool(json_object_array_get_idx(list, i), "online");
	if (json_object_object_get_ex(vq, "flags", &flags))
		for (size_t i = 0; i < json_object_array_length(flags); i++)
			snprintf(flagtext + strlen(flagtext), sizeof(flagtext) - strlen(flagtext), "%s%s",
				 i ? " " : "", json_object_get_string(json_object_array_get_idx(flags, i)));
	strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", localtime(&now));

	heading("Cluster information");
	printf("Name:             %s\n", cli_cc_jstr(st, "cluster_name") ? cli_cc_jstr(st, "cluster_name") : "");
	printf("Config Version:   %" PRId64 "\n", cli_cc_jint(st, "config_version", 0));
	printf("Transport:        %s\n", cli_cc_jstr(st, "transport") ? cli_cc_jstr(st, "transport") : "knet");
	printf("Secure auth:      %s\n\n", cli_cc_jbool(st, "secure_auth") ? "on" : "off");
	heading("Quorum information");
	printf("Date:             %s\n", date);
	printf("Quorum provider:  corosync_votequorum\n");
	printf("Nodes:            %u\n", online);
	printf("Node ID:          0x%08" PRIx64 "\n", cli_cc_jint(st, "nodeid", 0));
	printf("Quorate:          %s\n\n", cli_cc_jbool(st, "quorate") ? "Yes" : "No");
	heading("Votequorum information");
	printf("Expected votes:   %" PRId64 "\n", cli_cc_jint(vq, "expected_votes", 0));
	printf("Highest expected: %" PRId64 "\n", cli_cc_jint(vq, "highest_expected", 0));
	printf("Total votes:      %" PRId64 "\n", cli_cc_jint(vq, "total_votes", 0));
	printf("Quorum:           %" PRId64 "%s\n", cli_cc_jint(vq, "quorum", 0),
	       cli_cc_jbool(st, "quorate") ? "" : " Activity blocked");
	printf("Flags:            %s\n\n", flagtext);
	heading("Membership information");
	membership(st, true, true);
	return 0;
}

static int exec_nodes(const struct cli_args *a)
{
	_cleanup_json_ struct json_object *st = NULL;
	bool json;
	int rc;

	if (!(st = get_status(a, &json, &rc)))
		return rc;
	if (json) {
		printf("%s\n", json_object_to_json_string_ext(json_object_object_get(st, "nodelist"),
							      JSON_C_TO_STRING_PLAIN));
		return 0;
	}
	heading("Membership information");
	membership(st, false, false);
	return 0;
}

const struct cli_cmd cli_cluster_status = {
	.name = "status",
	.posargs = "",
	.summary = "cluster, quorum and membership information (as pvecm status)",
	.opts = opts,
	.exec = exec_status,
};

const struct cli_cmd cli_cluster_nodes = {
	.name = "nodes",
	.posargs = "",
	.summary = "the nodes corosync sees (as pvecm nodes); --output json: all configured nodes",
	.opts = opts,
	.exec = exec_nodes,
};
