/*
 * mig_host.h - facts about this host that a migration target reports to
 * the source: its address on the migration network, free memory, and
 * whether it can run the guest's CPU model.
 *
 * Addresses (mig_host_addr_in)
 *   The equivalent of `ip address show to CIDR up`: exactly one address of
 *   an up interface must lie in the CIDR; none or several is an error that
 *   names them. IPv6 link-local addresses are returned without their
 *   scope.
 *
 * CPU checks (mig_host_cpu_check, mig_host_cpu_xml)
 *   Asked to libvirt's daemon-less QEMU driver, qemu:///embed?root=ROOT.
 *   ROOT (absolute) is created if missing, with ROOT/etc/qemu.conf
 *   (user/group root, no dynamic ownership, stdio_handler "file") unless
 *   one exists. Keep ROOT across calls (one per node): libvirt caches the
 *   QEMU capabilities it probed in ROOT/cache, so only the first call
 *   after an install or upgrade of QEMU/libvirt pays for probing.
 *   Calls on one ROOT are serialised (ROOT/vmm.lock).
 *   libvirt's QEMU driver needs the system user `libvirt-qemu` even when
 *   qemu.conf says root (Debian's libvirt-daemon-system creates it).
 *
 *   libvirt runs in a forked helper, never in the caller: short-lived
 *   embedded connections crash now and then when torn down (reconnect
 *   threads racing exit), so the helper writes its verdict to a pipe and
 *   _exit()s at once, and the caller only reads the verdict and reaps.
 *   The helper is a child subreaper: libvirt probes QEMU with -daemonize,
 *   and this machine's init reaps orphans only every ~1.5 s, which libvirt
 *   would wait out twice per probe (first call ~3.9 s instead of ~0.7 s).
 *   libvirt's own log lines of the last call go to ROOT/helper.log.
 *   Do not call these from a process that already uses libvirt
 *   in other threads (fork copies its locks).
 *
 *   Models: a named model ("qemu64", "EPYC") is compared as a custom
 *   CPU with fallback forbidden; "host-model" as libvirt's host-model;
 *   "host" (passthrough, KVM only) compares cpu_xml, the source host's
 *   CPU from mig_host_cpu_xml(). cpu_xml, when given, is also what
 *   "host-model" compares (a host-model guest carries its source's CPU).
 *   Errors: incompatible is ERR_STATE, "CPU model 'EPYC' is not runnable
 *   here: <libvirt's reason>"; a model or XML libvirt rejects is
 *   ERR_INVAL; libvirt unusable is ERR_IO; no verdict in time is
 *   ERR_TIMEOUT; a helper that died without a verdict is ERR_CHILD.
 */
#ifndef VMM_MIG_HOST_H
#define VMM_MIG_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"
#include "mig.h"

#define MIG_HOST_LIBVIRT_TIMEOUT_MS 60000 /* first probe takes seconds */

bool mig_host_addr_in(const char *cidr, char *out, size_t len, struct err **errp);

/* MemAvailable and MemTotal from /proc/meminfo, in bytes. */
bool mig_host_mem_available(uint64_t *bytes, struct err **errp);
bool mig_host_mem_total(uint64_t *bytes, struct err **errp);

bool mig_host_cpu_check(const char *model, enum mig_accel accel, const char *cpu_xml,
			const char *root, struct err **errp);

/* This host's host-model CPU under accel as a guest CPU definition
 * (<cpu mode='custom' match='exact'>...</cpu>), for the source to send
 * along with a "host" guest. Caller frees. */
char *mig_host_cpu_xml(enum mig_accel accel, const char *root, struct err **errp);

/* The <cpu> definition in a domain capabilities document's supported
 * host-model mode, or NULL (exposed for tests). Caller frees. */
char *mig_host_cpu_from_domcaps(const char *domcaps, struct err **errp);

#endif
