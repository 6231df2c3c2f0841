/* guest_start.c - `vmguest start NAME`: launch a guest's QEMU on a node. */
#include "guest.h"
#include "../common/log.h"
#include "../common/util.h"

#include <stdio.h>
#include <string.h>

static const struct cli_opt opts[] = {
	{ "dir", CLI_VALUE, "DIR", "run directory (sockets, logs, pid file)", true },
	{ "node", CLI_VALUE, "NODE", "node (network namespace) to run in; default: this host" },
	{ "memory", CLI_VALUE, "SIZE", "guest RAM, e.g. 1048568K or 512M (bare number: MiB); default 512M" },
	{ "cpus", CLI_VALUE, "N", "virtual CPUs; default 1" },
	{ "cpu", CLI_VALUE, "MODEL", "CPU model; default qemu64 (TCG) or host (KVM)" },
	{ "kernel", CLI_VALUE, "FILE", "kernel to boot", true },
	{ "initrd", CLI_VALUE, "FILE", "initramfs" },
	{ "append", CLI_VALUE, "ARGS", "kernel command line" },
	{ "disk", CLI_LIST, "FILE", "disk image (raw or qcow2) as a virtio disk" },
	{ "accel", CLI_VALUE, "auto|kvm|tcg", "accelerator; default $VMM_ACCEL or auto (probes KVM)" },
	{ "paused", CLI_FLAG, NULL, "start with vCPUs stopped (QMP cont runs them)" },
	{ "incoming", CLI_FLAG, NULL, "wait for an incoming migration (migrate-incoming)" },
	{ NULL }
};

static int exec_start(const struct cli_args *a)
{
	struct mig_qemu_spec spec = {
		.name = a->pos[0],
		.dir = cli_get(a, "dir"),
		.netns = cli_get(a, "node"),
		.cpu_model = cli_get(a, "cpu"),
		.kernel = cli_get(a, "kernel"),
		.initrd = cli_get(a, "initrd"),
		.append = cli_get(a, "append"),
		.paused = cli_has(a, "paused"),
		.incoming = cli_has(a, "incoming"),
		.start_timeout_ms = 15000,
		.mem_bytes = 512ULL << 20,
		.cpus = 1,
	};
	const char *const *disks;
	struct err *e = NULL;
	struct mig_qemu *g;
	uint64_t v;

	if (cli_get(a, "memory")) {
		if (!util_parse_size(cli_get(a, "memory"), 1ULL << 20, 16ULL << 20, 1ULL << 40,
				     "memory size", &v, &e))
			return cli_report(a, e);
		if (v % 4096)
			return cli_fail(a, "invalid memory size '%s': must be a multiple of 4 KiB",
					cli_get(a, "memory"));
		spec.mem_bytes = v;
	}
	if (cli_get(a, "cpus")) {
		if (!util_parse_u64(cli_get(a, "cpus"), 1, 256, "cpus", &v, &e))
			return cli_report(a, e);
		spec.cpus = (unsigned)v;
	}
	disks = cli_list(a, "disk", &spec.ndisks);
	for (unsigned i = 0; i < spec.ndisks; i++)
		spec.disks[i] = disks[i];
	/* Validate before probing: bad input must fail fast and change nothing. */
	spec.accel = MIG_ACCEL_TCG;
	if (!mig_qemu_spec_check(&spec, &e))
		return cli_report(a, e);
	if (!cli_guest_accel(cli_get(a, "accel"), &spec.accel, &e))
		return cli_report(a, e);
	g = mig_qemu_start(&spec, &e);
	if (!g)
		return cli_report(a, e);
	printf("started guest %s on %s: pid %d, accel %s, QEMU %s, qmp %s/qmp.sock\n",
	       spec.name, spec.netns ? spec.netns : "this host", (int)g->pid,
	       mig_accel_name(spec.accel), tp_qmp_version(g->qmp), spec.dir);
	mig_qemu_release(g); /* QEMU runs on; `vmguest stop` ends it */
	return 0;
}

const struct cli_cmd cli_guest_start = {
	.name = "start",
	.posargs = "NAME",
	.summary = "start a guest's QEMU (on a node) and wait until QMP answers",
	.opts = opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_start,
};
