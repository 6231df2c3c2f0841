/*
 * vmrepl.c - scheduled storage replication of guests' local disks to
 * another node (like Proxmox's pvesr):
 *   vmrepl create|update|delete|enable|disable|list|status|run|schedule-now|log
 * and `vmrepl _agent`, the target's half of a run, which a run starts over
 * SSH. docs/vmrepl.md is the manual.
 */
#include "repl.h"
#include "../common/log.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static const struct cli_cmd *const cmds[] = {
	&cli_repl_create, &cli_repl_update, &cli_repl_delete, &cli_repl_enable,
	&cli_repl_disable, &cli_repl_list, &cli_repl_status, &cli_repl_run,
	&cli_repl_schedule_now, &cli_repl_log, NULL,
};

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	log_init("vmrepl"); /* the hidden commands' lines too are vmrepl's */
	if (argc == 2 && !strcmp(argv[1], "_agent"))
		return cli_repl_agent();
	/* `vmrepl _replica PATH`: a replica's generation after its crash
	 * recovery (for tests and for looking at a target by hand). */
	if (argc == 3 && !strcmp(argv[1], "_replica")) {
		struct repl_replica_info info;
		struct err *e = NULL;

		if (!repl_replica_recover(argv[2], &info, &e)) {
			fprintf(stderr, "vmrepl: %s\n", e->msg);
			err_free(e);
			return 1;
		}
		printf("gen=%" PRIu64 " job=%s time=%" PRId64 " size=%" PRIu64 "\n", info.gen,
		       info.job, info.time, info.size);
		return 0;
	}
	return cli_main("vmrepl", "replicate guests' local disks to another node on a schedule",
			cmds, argc, argv);
}
