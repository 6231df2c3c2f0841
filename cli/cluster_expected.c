/*
 * cluster_expected.c - `vmcluster expected N`: tell votequorum how many
 * votes to expect (pvecm expected), e.g. `expected 1` to make the last
 * node of a broken cluster quorate again. Lasts until corosync
 * recalculates it (a node joins, the configuration reloads).
 */
#include "cluster.h"
#include "../common/cleanup.h"
#include "../common/util.h"
#include "../transport/tp.h"

#include <inttypes.h>
#include <stdio.h>

static const struct cli_opt opts[] = {
	CLI_CC_SOCKET_OPT,
	{ NULL }
};

static int exec_expected(const struct cli_args *a)
{
	_cleanup_(clu_client_closep) struct clu_client *c = NULL;
	_cleanup_json_ struct json_object *st = NULL;
	struct json_object *vq, *req;
	struct err *e = NULL;
	int64_t total;
	uint64_t n;

	/* Syntax first, so that "expected x" fails alike on any node. */
	if (!util_parse_u64(a->pos[0], 0, UINT32_MAX, "expected votes", &n, &e))
		return cli_report(a, e);
	if (!(c = cli_cc_connect(a, &e)) || !(st = cli_cc_status(c, &e)) ||
	    !cli_cc_require_cluster(st, &e))
		return cli_report(a, e);
	if (!json_object_object_get_ex(st, "votequorum", &vq)) {
		err_set(&e, ERR_STATE, "no quorum information: vmmd is not connected to corosync (state %s)",
			cli_cc_jstr(st, "state") ? cli_cc_jstr(st, "state") : "?");
		return cli_report(a, e);
	}
	total = cli_cc_jint(vq, "total_votes", 0);
	if (n < 1 || (int64_t)n > total)
		return cli_fail(a, "invalid expected votes '%s': must be between 1 and %" PRId64
				" (the votes of the nodes online)", a->pos[0], total);
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("expected"));
	json_object_object_add(req, "votes", json_object_new_int64((int64_t)n));
	json_object_put(clu_client_call(c, req, 10000, &e));
	if (e)
		return cli_report(a, e);
	printf("expected votes set to %" PRIu64 "\n", n);
	return 0;
}

const struct cli_cmd cli_cluster_expected = {
	.name = "expected",
	.posargs = "VOTES",
	.summary = "set the expected votes (1 to the votes online), e.g. 1 to recover a lone node",
	.opts = opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_expected,
};
