/* guest_status.c - `vmguest status`: run state of a guest's QEMU. */
#include "guest.h"
#include "../common/cleanup.h"

#include <stdio.h>
#include <string.h>

static const struct cli_opt opts[] = {
	{ "dir", CLI_VALUE, "DIR", "the guest's run directory", true },
	{ "output", CLI_VALUE, "text|json", "output format; default text" },
	{ NULL }
};

static int exec_status(const struct cli_args *a)
{
	const char *fmt = cli_get(a, "output");
	_cleanup_(mig_qemu_releasep) struct mig_qemu *g = NULL;
	_cleanup_json_ struct json_object *st = NULL;
	struct json_object *status;
	struct err *e = NULL;

	if (fmt && strcmp(fmt, "text") && strcmp(fmt, "json"))
		return cli_fail(a, "invalid output format '%s': use text or json", fmt);
	g = mig_qemu_attach(cli_get(a, "dir"), 5000, &e);
	if (!g)
		return cli_report(a, e);
	st = tp_qmp_call(g->qmp, "query-status", NULL, 5000, &e);
	if (!st)
		return cli_report(a, e);
	json_object_object_get_ex(st, "status", &status);
	if (fmt && !strcmp(fmt, "json")) {
		json_object_object_add(st, "pid", json_object_new_int(g->pid));
		json_object_object_add(st, "qemu", json_object_new_string(tp_qmp_version(g->qmp)));
		printf("%s\n", json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN));
	} else {
		printf("%s pid %d qemu %s\n", json_object_get_string(status), (int)g->pid,
		       tp_qmp_version(g->qmp));
	}
	return 0;
}

const struct cli_cmd cli_guest_status = {
	.name = "status",
	.posargs = "",
	.summary = "show a guest's run state (running, paused, inmigrate, postmigrate ...)",
	.opts = opts,
	.exec = exec_status,
};
