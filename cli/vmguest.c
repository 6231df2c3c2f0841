/* vmguest.c - entry point of `vmguest`; the commands live in guest_*.c. */
#include "guest.h"

static const struct cli_cmd *const cmds[] = {
	&cli_guest_start, &cli_guest_stop, &cli_guest_status, &cli_guest_qmp,
	&cli_guest_migrate, &cli_guest_verify, NULL,
};

int main(int argc, char **argv)
{
	return cli_main("vmguest", "start, migrate and stop a guest's QEMU on this host or a node",
			cmds, argc, argv);
}
