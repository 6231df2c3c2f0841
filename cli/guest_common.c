/* guest_common.c - helpers shared by the vmguest commands. See guest.h. */
#include "guest.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <stdio.h>
#include <stdlib.h>

#ifndef VMM_PROBE_DIR_DEFAULT
#define VMM_PROBE_DIR_DEFAULT "/usr/local/lib/vmmigrate/probe"
#endif

bool cli_guest_accel(const char *opt, enum mig_accel *out, struct err **errp)
{
	const char *want_s = opt ? opt : getenv("VMM_ACCEL");
	const char *dir = getenv("VMM_PROBE_DIR");
	_cleanup_free_ char *kernel = NULL, *initrd = NULL;
	enum mig_accel want = MIG_ACCEL_AUTO;
	struct mig_probe probe = {
		.qemu = getenv("VMM_QEMU") ? getenv("VMM_QEMU") : "qemu-system-x86_64",
		.cache_dir = "/run/vmmigrate",
		.timeout_ms = 5000,
	};
	const char *why = "";

	if (want_s && *want_s && !mig_accel_parse(want_s, &want, errp))
		return false;
	if (!dir)
		dir = VMM_PROBE_DIR_DEFAULT;
	if (asprintf(&kernel, "%s/vmlinux", dir) < 0 ||
	    asprintf(&initrd, "%s/initramfs.cpio.gz", dir) < 0)
		return err_set(errp, ERR_IO, "out of memory");
	probe.kernel = kernel;
	probe.initrd = initrd;
	if (!mig_accel_resolve(want, &probe, out, &why, errp))
		return false;
	log_info("accelerator: %s (%s)", mig_accel_name(*out), why);
	return true;
}
