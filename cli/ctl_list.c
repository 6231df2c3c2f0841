/* ctl_list.c - `vmctl list` (every guest of the cluster, from the store)
 * and `vmctl nextid` (the lowest free VMID of the datacenter's range). */
#include "ctl.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../transport/tp.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct cli_opt list_opts[] = {
	{ "output", CLI_VALUE, "text|json", "output format; default text" },
	{ NULL }
};

static const struct cli_opt nextid_opts[] = {
	{ NULL }
};

struct listing {
	const struct cli_ctl *x;
	struct json_object *rows;
};

static bool list_one(uint32_t vmid, const struct clu_guest_rec *r, const struct err *bad,
		     void *opaque)
{
	struct listing *l = opaque;
	struct json_object *o;
	const char *status = NULL;

	if (!r) {
		log_warn("guest %" PRIu32 " skipped: %s", vmid, bad->msg);
		return true;
	}
	/* A guest's QEMU is visible only on its own node. */
	if (!strcmp(r->node, l->x->node))
		status = cli_ctl_running(vmid, NULL) ? "running" : "stopped";
	o = json_object_new_object();
	json_object_object_add(o, "vmid", json_object_new_int64(vmid));
	json_object_object_add(o, "name", r->conf.name[0] ? json_object_new_string(r->conf.name) : NULL);
	json_object_object_add(o, "node", json_object_new_string(r->node));
	json_object_object_add(o, "status", status ? json_object_new_string(status) : NULL);
	json_object_object_add(o, "memory", json_object_new_uint64(r->conf.memory));
	json_object_array_add(l->rows, o);
	return true;
}

static const char *col(struct json_object *row, const char *key, char *buf, size_t len)
{
	struct json_object *v;
	const char *s;

	if (!json_object_object_get_ex(row, key, &v) || !v)
		return "-";
	if (!strcmp(key, "memory")) {
		snprintf(buf, len, "%sM", json_object_get_string(v));
		return buf;
	}
	s = json_object_get_string(v);
	return *s ? s : "-";
}

static void print_table(struct json_object *rows)
{
	static const char *const keys[] = { "vmid", "name", "node", "status", "memory" };
	static const char *const heads[] = { "VMID", "NAME", "NODE", "STATUS", "MEMORY" };
	int w[5];
	char buf[32];
	size_t n = json_object_array_length(rows);

	for (int k = 0; k < 5; k++)
		w[k] = (int)strlen(heads[k]);
	for (size_t i = 0; i < n; i++)
		for (int k = 0; k < 5; k++) {
			int len = (int)strlen(col(json_object_array_get_idx(rows, i), keys[k],
						  buf, sizeof(buf)));
			w[k] = len > w[k] ? len : w[k];
		}
	printf("%*s  %-*s  %-*s  %-*s  %*s\n", w[0], heads[0], w[1], heads[1], w[2], heads[2],
	       w[3], heads[3], w[4], heads[4]);
	for (size_t i = 0; i < n; i++) {
		struct json_object *row = json_object_array_get_idx(rows, i);
		char b[5][80];

		printf("%*s  %-*s  %-*s  %-*s  %*s\n",
		       w[0], col(row, keys[0], b[0], sizeof(b[0])),
		       w[1], col(row, keys[1], b[1], sizeof(b[1])),
		       w[2], col(row, keys[2], b[2], sizeof(b[2])),
		       w[3], col(row, keys[3], b[3], sizeof(b[3])),
		       w[4], col(row, keys[4], b[4], sizeof(b[4])));
	}
}

static int exec_list(const struct cli_args *a)
{
	_cleanup_json_ struct json_object *rows = json_object_new_array();
	struct cli_ctl x = { .lock_fd = -1 };
	struct listing l = { &x, rows };
	struct err *e = NULL;
	bool json;

	if (!cli_ctl_output(a, &json, &e))
		return cli_report(a, e);
	if (!cli_ctl_open(&x, &e))
		return cli_report(a, e);
	if (!clu_guest_list(x.c, list_one, &l, &e)) {
		cli_ctl_close(&x);
		return cli_report(a, e);
	}
	cli_ctl_close(&x);
	if (json)
		printf("%s\n", json_object_to_json_string_ext(rows, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	else
		print_table(rows);
	return 0;
}

/* ---- nextid ---------------------------------------------------------------------- */

struct next {
	uint32_t candidate, upper;
};

/* Guests come in VMID order: walk the candidate past the taken ones. */
static bool next_one(uint32_t vmid, const struct clu_guest_rec *r, const struct err *bad,
		     void *opaque)
{
	struct next *n = opaque;

	(void)r;
	(void)bad; /* a record that does not parse still holds its VMID */
	if (vmid == n->candidate)
		n->candidate++;
	return vmid <= n->candidate && n->candidate < n->upper;
}

static int exec_nextid(const struct cli_args *a)
{
	struct cli_ctl x = { .lock_fd = -1 };
	struct clu_datacenter dc;
	struct next n;
	struct err *e = NULL;

	if (!cli_ctl_open(&x, &e))
		return cli_report(a, e);
	if (!clu_datacenter_read(x.c, &dc, &e)) {
		cli_ctl_close(&x);
		return cli_report(a, e);
	}
	n = (struct next){ dc.next_id_lower, dc.next_id_upper };
	if (!clu_guest_list(x.c, next_one, &n, &e)) {
		cli_ctl_close(&x);
		return cli_report(a, e);
	}
	cli_ctl_close(&x);
	if (n.candidate >= n.upper) {
		fprintf(stderr, "%s: no free VMID in %" PRIu32 "..%" PRIu32 " (datacenter.cfg "
			"next-id)\n", a->prog, dc.next_id_lower, dc.next_id_upper - 1);
		return 1;
	}
	printf("%" PRIu32 "\n", n.candidate);
	return 0;
}

const struct cli_cmd cli_ctl_list = {
	.name = "list",
	.posargs = "",
	.summary = "list the cluster's guests (status only for this node's)",
	.opts = list_opts,
	.min_pos = 0,
	.max_pos = 0,
	.exec = exec_list,
};

const struct cli_cmd cli_ctl_nextid = {
	.name = "nextid",
	.posargs = "",
	.summary = "print the lowest free VMID of the datacenter.cfg next-id range",
	.opts = nextid_opts,
	.min_pos = 0,
	.max_pos = 0,
	.exec = exec_nextid,
};
