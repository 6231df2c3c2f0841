/*
 * vmctl.c - guests of the cluster (like Proxmox `qm`): create, configure,
 * start, stop, list and destroy them. Configs live in the replicated store
 * through the local vmmd; a guest runs on the node that owns it. The
 * commands are in ctl_*.c; docs/vmctl.md is the manual.
 */
#include "ctl.h"

#include <signal.h>

static const struct cli_cmd *const cmds[] = {
	&cli_ctl_create, &cli_ctl_config, &cli_ctl_set, &cli_ctl_start, &cli_ctl_stop,
	&cli_ctl_shutdown, &cli_ctl_status, &cli_ctl_list, &cli_ctl_destroy, &cli_ctl_nextid,
	&cli_ctl_unlock, NULL,
};

int main(int argc, char **argv)
{
	/* A vmmd that goes away mid-request is an error to report, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	return cli_main("vmctl", "manage the cluster's guests (configs in the replicated store)",
			cmds, argc, argv);
}
