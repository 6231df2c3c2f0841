/* guest_qmp.c - `vmguest qmp COMMAND [JSON]`: one QMP command, for scripts. */
#include "guest.h"
#include "../common/cleanup.h"

#include <stdio.h>

static const struct cli_opt opts[] = {
	{ "dir", CLI_VALUE, "DIR", "the guest's run directory", true },
	{ "timeout", CLI_VALUE, "S", "seconds to wait for the reply; default 30" },
	{ NULL }
};

static int exec_qmp(const struct cli_args *a)
{
	_cleanup_(mig_qemu_releasep) struct mig_qemu *g = NULL;
	_cleanup_json_ struct json_object *ret = NULL;
	struct json_object *args = NULL;
	struct err *e = NULL;
	int timeout_ms;

	if (!cli_seconds(a, "timeout", 30, &timeout_ms, &e))
		return cli_report(a, e);
	if (a->npos > 1) {
		enum json_tokener_error jerr;

		args = json_tokener_parse_verbose(a->pos[1], &jerr);
		if (!args || !json_object_is_type(args, json_type_object)) {
			json_object_put(args);
			err_set(&e, ERR_INVAL, "invalid JSON arguments '%s': %s", a->pos[1],
				args ? "not an object" : json_tokener_error_desc(jerr));
			return cli_report(a, e);
		}
	}
	g = mig_qemu_attach(cli_get(a, "dir"), 5000, &e);
	if (!g) {
		json_object_put(args);
		return cli_report(a, e);
	}
	ret = tp_qmp_call(g->qmp, a->pos[0], args, timeout_ms, &e);
	if (!ret)
		return cli_report(a, e);
	printf("%s\n", json_object_to_json_string_ext(ret, JSON_C_TO_STRING_PRETTY |
							     JSON_C_TO_STRING_SPACED));
	return 0;
}

const struct cli_cmd cli_guest_qmp = {
	.name = "qmp",
	.posargs = "COMMAND [JSON-ARGS]",
	.summary = "run one QMP command and print its return value as JSON",
	.opts = opts,
	.min_pos = 1,
	.max_pos = 2,
	.exec = exec_qmp,
};
