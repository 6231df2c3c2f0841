/*
 * guest.h - the `vmguest` commands: a node-local, low-level tool that
 * starts, inspects, migrates (raw QEMU) and stops one guest's QEMU through
 * our launcher and QMP client. The testbed, `make demo`, the benchmarks
 * and the integration tests drive guests with it; the cluster commands
 * build on the same library calls.
 */
#ifndef VMM_CLI_GUEST_H
#define VMM_CLI_GUEST_H

#include "cli.h"
#include "../migrate/mig.h"

extern const struct cli_cmd cli_guest_start;
extern const struct cli_cmd cli_guest_stop;
extern const struct cli_cmd cli_guest_status;
extern const struct cli_cmd cli_guest_qmp;
extern const struct cli_cmd cli_guest_migrate;
extern const struct cli_cmd cli_guest_verify;

/* --accel (or $VMM_ACCEL, default auto) resolved to KVM or TCG, probing
 * with the image in $VMM_PROBE_DIR (default VMM_PROBE_DIR_DEFAULT). */
bool cli_guest_accel(const char *opt, enum mig_accel *out, struct err **errp);

#endif
