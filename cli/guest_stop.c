/* guest_stop.c - `vmguest stop`: QMP quit, then signals; waits until gone. */
#include "guest.h"

#include <stdio.h>

static const struct cli_opt opts[] = {
	{ "dir", CLI_VALUE, "DIR", "the guest's run directory", true },
	{ "timeout", CLI_VALUE, "S", "seconds before SIGKILL; default 10" },
	{ NULL }
};

static int exec_stop(const struct cli_args *a)
{
	struct err *e = NULL;
	struct mig_qemu *g;
	int timeout_ms;
	int pid;

	if (!cli_seconds(a, "timeout", 10, &timeout_ms, &e))
		return cli_report(a, e);
	g = mig_qemu_attach(cli_get(a, "dir"), 5000, &e);
	if (!g)
		return cli_report(a, e);
	pid = (int)g->pid;
	if (!mig_qemu_stop(g, timeout_ms, &e))
		return cli_report(a, e);
	printf("stopped guest in %s (pid %d)\n", cli_get(a, "dir"), pid);
	return 0;
}

const struct cli_cmd cli_guest_stop = {
	.name = "stop",
	.posargs = "",
	.summary = "stop a guest's QEMU and wait until it is gone",
	.opts = opts,
	.exec = exec_stop,
};
