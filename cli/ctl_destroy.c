/* ctl_destroy.c - `vmctl destroy VMID`: on the owning node, with the guest
 * stopped, delete its volumes and then its record. Retryable: a volume
 * already gone is fine, and the record goes last, so a failure leaves a
 * record that a second destroy finishes. */
#include "ctl.h"
#include "../common/cleanup.h"
#include "../common/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct cli_opt opts[] = {
	{ "purge", CLI_FLAG, NULL, "also remove the guest's run directory (console and QEMU logs)" },
	{ NULL }
};

/* Volumes vmctl made for this guest are "<vmid>/...": others (another
 * guest's, a shared base image) are not ours to delete. */
static bool owns_volume(uint32_t vmid, const char *volume)
{
	char prefix[16];

	snprintf(prefix, sizeof(prefix), "%" PRIu32 "/", vmid);
	return !strncmp(volume, prefix, strlen(prefix));
}

static bool delete_volumes(struct cli_ctl *x, const struct clu_guest_rec *r,
			   struct err **errp)
{
	struct cli_ctl_storages st;
	bool ok = true;

	if (!cli_ctl_storages_read(x, &st, errp))
		return false;
	for (int i = 0; i < CLU_GUEST_DISKS && ok; i++) {
		const struct clu_guest_disk *d = &r->conf.disks[i];
		const struct clu_storage *s;
		_cleanup_free_ char *path = NULL, *dir = NULL;
		struct err *e = NULL;

		if (!d->present)
			continue;
		if (!owns_volume(r->vmid, d->volume)) {
			printf("  kept %s:%s (not this guest's volume)\n", d->storage, d->volume);
			continue;
		}
		s = clu_storage_find(&st.sc, d->storage);
		if (!s) {
			log_warn("guest %" PRIu32 ": virtio%d is on storage '%s', which storage.cfg "
				 "no longer has: volume %s left in place", r->vmid, i, d->storage,
				 d->volume);
			continue;
		}
		path = clu_volume_path(s, d->volume, &e);
		if (!path) {
			ok = false;
			err_propagate(errp, &e);
		} else if (unlink(path) == 0) {
			printf("  removed %s\n", path);
		} else if (errno == ENOENT) {
			printf("  %s was already gone\n", path);
		} else {
			ok = err_set_errno(errp, errno, "cannot remove volume '%s'", path);
		}
		/* The per-guest directory, once empty. */
		if (ok && asprintf(&dir, "%s/images/%" PRIu32, s->path, r->vmid) > 0)
			rmdir(dir);
	}
	cli_ctl_storages_free(&st);
	return ok;
}

static void purge_run_dir(uint32_t vmid)
{
	static const char *const names[] = {
		"console.log", "qemu.log", "qmp.sock", "cmd.sock", "qemu.pid",
	};
	char dir[512], path[600];

	cli_ctl_run_dir(vmid, dir, sizeof(dir));
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		unlink(path);
	}
	if (rmdir(dir) == 0)
		printf("  removed %s\n", dir);
	else if (errno != ENOENT)
		log_warn("run directory %s not removed: %s", dir, strerror(errno));
}

static int exec_destroy(const struct cli_args *a)
{
	_cleanup_free_ struct clu_guest_rec *r = calloc(1, sizeof(*r));
	struct cli_ctl x = { .lock_fd = -1 };
	struct err *e = NULL;
	uint32_t vmid;
	pid_t pid;
	int rc = 1;

	if (!r)
		return cli_report(a, NULL);
	if (!cli_ctl_vmid(a->pos[0], &vmid, &e))
		return cli_report(a, e);
	if (!cli_ctl_open(&x, &e) || !cli_ctl_lock(&x, vmid, &e) ||
	    !clu_guest_read(x.c, vmid, r, &e) || !cli_ctl_check_owner(&x, r, &e) ||
	    !cli_ctl_check_unlocked(r, &e))
		goto out;
	if (cli_ctl_running(vmid, &pid)) {
		err_set(&e, ERR_STATE, "guest %" PRIu32 " is running (pid %d): stop it first",
			vmid, (int)pid);
		goto out;
	}
	printf("destroying guest %" PRIu32 " on %s\n", vmid, x.node);
	if (!delete_volumes(&x, r, &e) || !clu_guest_remove(x.c, r, &e))
		goto out;
	if (cli_has(a, "purge"))
		purge_run_dir(vmid);
	printf("destroyed guest %" PRIu32 "\n", vmid);
	rc = 0;
out:
	if (x.c)
		cli_ctl_close(&x);
	return rc ? cli_report(a, e) : 0;
}

const struct cli_cmd cli_ctl_destroy = {
	.name = "destroy",
	.posargs = "VMID",
	.summary = "delete a stopped guest: its volumes, then its config",
	.opts = opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_destroy,
};
