/*
 * guest_migrate.c - `vmguest migrate`: QEMU's own live migration between
 * two guests' QEMUs (the target started with --incoming), driven by our QMP
 * client with progress. The raw yardstick the engine is measured against.
 */
#include "guest.h"
#include "progress.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const struct cli_opt opts[] = {
	{ "from", CLI_VALUE, "DIR", "run directory of the running source guest", true },
	{ "to", CLI_VALUE, "DIR", "run directory of the target (started with --incoming)", true },
	{ "uri", CLI_VALUE, "URI", "where the target listens, e.g. tcp:10.99.2.2:61000", true },
	{ "max-bandwidth", CLI_VALUE, "SIZE", "bytes/s cap, e.g. 512M (bare number: MiB/s); default unlimited" },
	{ "downtime", CLI_VALUE, "MS", "downtime limit in ms; default QEMU's 300" },
	{ "multifd", CLI_VALUE, "N", "parallel channels (2-16); default off" },
	{ "timeout", CLI_VALUE, "S", "give up (and roll back) after S seconds; default 600" },
	{ "keep-source", CLI_FLAG, NULL, "leave the source QEMU in postmigrate instead of stopping it" },
	{ "output", CLI_VALUE, "text|json", "output format; default text" },
	{ NULL }
};

static void on_progress(const struct mig_raw_progress *p, void *opaque)
{
	cli_progress_ram(opaque, mig_raw_state_name(p->state), p);
}

static bool uri_ok(const char *uri)
{
	return !strncmp(uri, "tcp:", 4) || !strncmp(uri, "unix:", 5);
}

static bool source_running(struct tp_qmp *q)
{
	_cleanup_json_ struct json_object *st = tp_qmp_call(q, "query-status", NULL, 5000, NULL);
	struct json_object *r;

	return st && json_object_object_get_ex(st, "running", &r) && json_object_get_boolean(r);
}

static int exec_migrate(const struct cli_args *a)
{
	const char *fmt = cli_get(a, "output"), *bw = cli_get(a, "max-bandwidth");
	struct mig_raw_opts o = { .uri = cli_get(a, "uri"), .poll_ms = 200, .resume_target = true };
	struct mig_qemu *src = NULL, *dst = NULL;
	struct mig_raw_progress fin;
	struct cli_progress prog;
	struct err *e = NULL;
	uint64_t v;
	int rc = 1;

	if (fmt && strcmp(fmt, "text") && strcmp(fmt, "json"))
		return cli_fail(a, "invalid output format '%s': use text or json", fmt);
	if (!uri_ok(o.uri))
		return cli_fail(a, "invalid migration URI '%s': use tcp:HOST:PORT or unix:PATH",
				o.uri);
	if (bw && strcasecmp(bw, "unlimited")) {
		if (!util_parse_size(bw, 1ULL << 20, 1ULL << 20, 1ULL << 40, "max-bandwidth", &v, &e))
			return cli_report(a, e);
		o.tune.max_bandwidth = v;
	}
	if (cli_get(a, "downtime")) {
		if (!util_parse_u64(cli_get(a, "downtime"), 1, 600000, "downtime", &v, &e))
			return cli_report(a, e);
		o.tune.downtime_ms = v;
	}
	if (cli_get(a, "multifd")) {
		if (!util_parse_u64(cli_get(a, "multifd"), 1, 16, "multifd channels", &v, &e))
			return cli_report(a, e);
		o.tune.multifd = (unsigned)v;
	}
	if (!cli_seconds(a, "timeout", 600, &o.timeout_ms, &e))
		return cli_report(a, e);
	src = mig_qemu_attach(cli_get(a, "from"), 5000, &e);
	if (!src)
		return cli_report(a, e);
	dst = mig_qemu_attach(cli_get(a, "to"), 5000, &e);
	if (!dst) {
		mig_qemu_release(src);
		return cli_report(a, e);
	}
	cli_progress_init(&prog, fmt && !strcmp(fmt, "json") ? CLI_OUT_JSON : CLI_OUT_TEXT);
	if (!mig_raw_run(src->qmp, dst->qmp, &o, on_progress, &prog, &fin, &e)) {
		cli_progress_break(&prog);
		/* The source runs again (rollback); the half-filled target is useless. */
		if (source_running(src->qmp)) {
			mig_qemu_stop(TAKE_PTR(dst), 5000, NULL);
			err_prefix(e, "migration aborted, guest still runs on the source");
		} else {
			err_prefix(e, "migration aborted, source NOT running; both QEMUs left "
				   "for inspection");
		}
		if (prog.out == CLI_OUT_JSON) {
			_cleanup_json_ struct json_object *m = json_object_new_string(e->msg);
			printf("{\"event\":\"failed\",\"error\":%s}\n",
			       json_object_to_json_string(m));
		}
		rc = cli_report(a, TAKE_PTR(e));
		goto out;
	}
	cli_progress_break(&prog);
	if (!cli_has(a, "keep-source") && !mig_qemu_stop(TAKE_PTR(src), 10000, &e)) {
		rc = cli_report(a, TAKE_PTR(e));
		goto out;
	}
	if (prog.out == CLI_OUT_JSON) {
		printf("{\"event\":\"done\",\"total_ms\":%" PRId64 ",\"downtime_ms\":%" PRId64
		       ",\"setup_ms\":%" PRId64 ",\"transferred\":%" PRIu64 ",\"total\":%" PRIu64
		       ",\"passes\":%" PRIu64 ",\"mbps\":%.2f}\n",
		       fin.elapsed_ms, fin.downtime_ms, fin.setup_ms, fin.transferred, fin.total,
		       fin.passes, (double)fin.mbps_x100 / 100.0);
	} else {
		char t[32];
		printf("migrated in %.2f s: downtime %" PRId64 " ms, %s sent at %.0f Mbit/s, "
		       "%" PRIu64 " passes\n", (double)fin.elapsed_ms / 1000.0, fin.downtime_ms,
		       util_fmt_bytes(fin.transferred, t, sizeof(t)),
		       (double)fin.mbps_x100 / 100.0, fin.passes);
	}
	rc = 0;
out:
	mig_qemu_release(src);
	mig_qemu_release(dst);
	return rc;
}

const struct cli_cmd cli_guest_migrate = {
	.name = "migrate",
	.posargs = "",
	.summary = "live-migrate a guest's RAM to a target QEMU (raw QEMU migration)",
	.opts = opts,
	.exec = exec_migrate,
};
