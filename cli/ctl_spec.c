/* ctl_spec.c - a guest's QEMU settings on this node, from its record in the
 * store: disks resolved as this node's storages see them, the accelerator
 * resolved, and RAM 8 KiB short of a multiple of 256 KiB under TCG. Used by
 * `vmctl start` and by the migration agent that starts the target QEMU, so
 * both build the same machine. See ctl.h. */
#include "ctl.h"
#include "guest.h"
#include "../common/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* QEMU 7.2's TCG migration loses writes when RAM is a multiple of 256 KiB
 * (fixed in 9.0, DESIGN.md §6): TCG guests get this much less than asked. */
#define TCG_RAM_SHORT (8ULL << 10)

void cli_ctl_spec_files_free(struct cli_ctl_spec_files *f)
{
	while (f->ndisks)
		free(f->disks[--f->ndisks]);
}

static bool disk_files(struct cli_ctl *x, const struct clu_guest_rec *r,
		       struct cli_ctl_spec_files *f, struct err **errp)
{
	struct cli_ctl_storages st;
	bool ok = true;

	if (!cli_ctl_storages_read(x, &st, errp))
		return false;
	for (int i = 0; i < CLU_GUEST_DISKS && ok; i++) {
		const struct clu_guest_disk *d = &r->conf.disks[i];
		char *path = NULL;

		if (!d->present)
			continue;
		if (f->ndisks == MIG_MAX_DISKS)
			ok = err_set(errp, ERR_INVAL, "guest %" PRIu32 " has more than %d disks",
				     r->vmid, MIG_MAX_DISKS);
		else if (cli_ctl_storage_usable(x, &st, d->storage, errp) &&
			 (path = cli_ctl_disk_path(&st, d, errp)))
			f->disks[f->ndisks++] = path;
		else
			ok = false;
	}
	cli_ctl_storages_free(&st);
	return ok;
}

bool cli_ctl_guest_spec(struct cli_ctl *x, const struct clu_guest_rec *r,
			struct cli_ctl_spec_files *f, struct mig_qemu_spec *spec,
			struct err **errp)
{
	const struct clu_guest_conf *g = &r->conf;

	if (!disk_files(x, r, f, errp))
		return false;
	if (g->machine[0] && strcmp(g->machine, "pc"))
		log_warn("guest %" PRIu32 ": machine '%s' is not supported by the launcher yet; "
			 "starting it as 'pc'", r->vmid, g->machine);
	snprintf(f->name, sizeof(f->name), "vm%" PRIu32, r->vmid);
	*spec = (struct mig_qemu_spec){
		.name = g->name[0] ? g->name : f->name,
		.dir = cli_ctl_run_dir(r->vmid, f->dir, sizeof(f->dir)),
		.mem_bytes = g->memory << 20,
		.cpus = g->cores * g->sockets,
		.cpu_model = g->cpu[0] ? g->cpu : NULL,
		.kernel = g->kernel[0] ? g->kernel : NULL,
		.initrd = g->initrd[0] ? g->initrd : NULL,
		.append = g->append[0] ? g->append : NULL,
		.ndisks = f->ndisks,
		.accel = MIG_ACCEL_TCG, /* resolved below; the check needs one */
		.start_timeout_ms = 15000,
	};
	for (unsigned i = 0; i < f->ndisks; i++)
		spec->disks[i] = f->disks[i];
	if (!mig_qemu_spec_check(spec, errp) || !cli_guest_accel(NULL, &spec->accel, errp))
		return false;
	if (spec->accel == MIG_ACCEL_TCG && spec->mem_bytes % (256 << 10) == 0)
		spec->mem_bytes -= TCG_RAM_SHORT;
	return true;
}
