/* ctl_create.c - `vmctl create VMID`: a new guest owned by this node, its
 * disks allocated on this node's storages. All or nothing: on any failure
 * the volumes made are removed and the store holds no guest record. */
#include "ctl.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct cli_opt opts[] = {
	{ "name", CLI_VALUE, "NAME", "guest name ([A-Za-z0-9][A-Za-z0-9.-]*)" },
	{ "memory", CLI_VALUE, "MiB", "RAM in MiB (16-4194304)", true },
	{ "cores", CLI_VALUE, "N", "CPU cores per socket (1-256); default 1" },
	{ "sockets", CLI_VALUE, "N", "CPU sockets (1-16); default 1" },
	{ "cpu", CLI_VALUE, "MODEL", "CPU model; default qemu64 (TCG) or host (KVM)" },
	{ "disk", CLI_LIST, "STORAGE:SIZE[,format=qcow2]", "new disk, e.g. local:32G (bare SIZE: GiB; raw unless format=qcow2)" },
	{ "kernel", CLI_VALUE, "FILE", "kernel to boot (absolute path); default: boot the first disk" },
	{ "initrd", CLI_VALUE, "FILE", "initramfs (needs --kernel)" },
	{ "append", CLI_VALUE, "ARGS", "kernel command line (needs --kernel)" },
	{ "onboot", CLI_VALUE, "0|1", "start the guest when its node boots; default 0" },
	{ NULL }
};

/* Keys set from options of the same name, in this order. */
static const char *const keys[] = {
	"name", "memory", "cores", "sockets", "cpu", "kernel", "initrd", "append", "onboot",
};

/* A kernel or initrd named in a config must exist where the guest starts:
 * a typo is caught here rather than at the first start. */
static bool boot_file_ok(const char *what, const char *path, struct err **errp)
{
	if (!*path)
		return true;
	if (access(path, R_OK) < 0)
		return err_set(errp, ERR_INVAL, "cannot use %s '%s': %s", what, path,
			       strerror(errno));
	return true;
}

bool cli_ctl_check_boot(const struct clu_guest_conf *g, struct err **errp)
{
	if (!g->kernel[0] && (g->initrd[0] || g->append[0]))
		return err_set(errp, ERR_INVAL, "%s needs a kernel (--kernel)",
			       g->initrd[0] ? "initrd" : "append");
	return boot_file_ok("kernel", g->kernel, errp) &&
	       boot_file_ok("initrd", g->initrd, errp);
}

static int exec_create(const struct cli_args *a)
{
	_cleanup_free_ struct clu_guest_rec *r = calloc(1, sizeof(*r));
	struct cli_ctl_disk_req reqs[CLI_MAX_LIST];
	struct cli_ctl_storages st = { .defaulted = false };
	struct cli_ctl x = { .lock_fd = -1 };
	struct cli_ctl_alloc al = { .n = 0 };
	struct clu_datacenter dc;
	struct err *e = NULL;
	const char *const *disks;
	unsigned ndisks;
	uint32_t vmid;
	bool have_st = false;
	int rc = 1;

	if (!r)
		return cli_report(a, NULL);
	/* Everything the command line alone can tell, before touching anything. */
	if (!cli_ctl_vmid(a->pos[0], &vmid, &e))
		return cli_report(a, e);
	clu_guest_conf_defaults(&r->conf);
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		if (cli_get(a, keys[i]) && !cli_ctl_conf_set(&r->conf, keys[i], cli_get(a, keys[i]), &e))
			return cli_report(a, e);
	if (!cli_ctl_check_boot(&r->conf, &e))
		return cli_report(a, e);
	disks = cli_list(a, "disk", &ndisks);
	for (unsigned i = 0; i < ndisks; i++)
		if (!cli_ctl_disk_parse(disks[i], &reqs[i], &e))
			return cli_report(a, e);

	if (!cli_ctl_open(&x, &e) || !clu_datacenter_read(x.c, &dc, &e))
		goto out;
	if (vmid < dc.next_id_lower || vmid >= dc.next_id_upper) {
		err_set(&e, ERR_INVAL, "VMID %" PRIu32 " is outside the range %" PRIu32 "..%" PRIu32
			" (datacenter.cfg next-id)", vmid, dc.next_id_lower, dc.next_id_upper - 1);
		goto out;
	}
	if (!cli_ctl_storages_read(&x, &st, &e))
		goto out;
	have_st = true;
	for (unsigned i = 0; i < ndisks; i++)
		if (!cli_ctl_storage_usable(&x, &st, reqs[i].storage, &e))
			goto out;

	if (!cli_ctl_lock(&x, vmid, &e))
		goto out;
	/* Under the lock: whoever held it before may have created the guest. */
	if (clu_guest_read(x.c, vmid, r, &e)) {
		err_set(&e, ERR_INVAL, "VMID %" PRIu32 " already exists", vmid);
		goto out;
	}
	if (e->code != ERR_NOTFOUND)
		goto out;
	err_free(TAKE_PTR(e));
	/* clu_guest_read() did not touch r: it failed. */
	r->vmid = vmid;
	r->version = 0;
	snprintf(r->node, sizeof(r->node), "%s", x.node);
	if (!cli_ctl_alloc_disks(&x, &st, vmid, reqs, ndisks, &r->conf, &al, &e))
		goto out;
	/* CREATE, not PUT: a node that slipped past the lock still loses. */
	if (!clu_guest_create(x.c, r, &e)) {
		cli_ctl_alloc_undo(&al);
		goto out;
	}
	printf("created guest %" PRIu32 "%s%s%s on %s\n", vmid, r->conf.name[0] ? " (" : "",
	       r->conf.name, r->conf.name[0] ? ")" : "", x.node);
	for (unsigned i = 0; i < al.n; i++)
		printf("  %s\n", al.paths[i]);
	cli_ctl_alloc_keep(&al);
	rc = 0;
out:
	if (have_st)
		cli_ctl_storages_free(&st);
	if (x.c)
		cli_ctl_close(&x);
	return rc ? cli_report(a, e) : 0;
}

const struct cli_cmd cli_ctl_create = {
	.name = "create",
	.posargs = "VMID",
	.summary = "create a guest owned by this node, allocating its disks",
	.opts = opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_create,
};
