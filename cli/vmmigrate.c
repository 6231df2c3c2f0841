/*
 * vmmigrate.c - moving guests between nodes (like Proxmox's `qm migrate`):
 *   vmmigrate VMID TARGET [--online] ...   (= vmmigrate migrate VMID TARGET)
 *   vmmigrate status [VMID] | cancel VMID | log VMID
 * and `vmmigrate _agent`, the target's half, which the worker starts over
 * SSH (not for humans: its stdin/stdout are the control channel).
 * docs/vmmigrate.md is the manual.
 */
#include "migrate.h"

#include <ctype.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define SUMMARY "move guests between the cluster's nodes"

static const struct cli_cmd *const cmds[] = {
	&cli_migrate_run, &cli_migrate_status, &cli_migrate_cancel, &cli_migrate_drain,
	&cli_migrate_undrain, &cli_migrate_log, NULL,
};

int cli_migrate_argc;
char **cli_migrate_argv;

int main(int argc, char **argv)
{
	/* A peer that goes away mid-request is an error to report, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	cli_migrate_argc = argc;
	cli_migrate_argv = argv;
	if (argc == 2 && !strcmp(argv[1], "_agent"))
		return cli_migrate_agent();
	/* `vmmigrate 106 tre` is `vmmigrate migrate 106 tre`. */
	if (argc >= 2 && isdigit((unsigned char)argv[1][0])) {
		char **av = calloc((size_t)argc + 2, sizeof(*av));
		int rc;

		if (!av)
			return 1;
		av[0] = argv[0];
		av[1] = "migrate";
		memcpy(av + 2, argv + 1, (size_t)(argc - 1) * sizeof(*av));
		rc = cli_main("vmmigrate", SUMMARY, cmds, argc + 1, av);
		free(av);
		return rc;
	}
	return cli_main("vmmigrate", SUMMARY, cmds, argc, argv);
}
