/*
 * vmmd.c - the node daemon: keeps this node's copy of the replicated
 * config store, joins corosync when the node is in a cluster, and serves
 * the local CLIs on a unix socket, recovers after migration workers that
 * died on this node, and runs the replication scheduler of the guests it
 * owns. Runs in the foreground (systemd Type=notify:
 * READY=1 once it serves its socket; scripts/vmmd.service).
 */
#include "migrate.h"
#include "repl.h"
#include "../cluster/clu.h"
#include "../common/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct cli_opt opts[] = {
	{ "data-dir", CLI_VALUE, "DIR", "store and cluster files; default $VMM_DATA_DIR or /var/lib/vmmigrate" },
	{ "socket", CLI_VALUE, "PATH", "unix socket for the CLIs; default $VMM_SOCKET or /run/vmmigrate/vmmd.sock" },
	{ "node", CLI_VALUE, "NAME", "this node's name; default from corosync's nodelist, else the hostname" },
	{ "standalone", CLI_FLAG, NULL, "run as a one-node cluster even if a cluster is configured" },
	{ "corosync-conf", CLI_VALUE, "PATH", "corosync's config, kept in step with the cluster; default $VMM_COROSYNC_CONF or /etc/corosync/corosync.conf" },
	{ "ssh-host-key", CLI_VALUE, "PATH", "this node's SSH host public key, published for "
	  "pinning; default $VMM_SSH_HOST_KEY or /etc/ssh/ssh_host_ed25519_key.pub" },
	{ "no-replication", CLI_FLAG, NULL, "do not run the replication scheduler" },
	{ NULL }
};

#define SCHED_TICK_S 5
#define SCHED_WORKERS 2 /* replication runs at once on this node */

#define SWEEP_TICK_S 1

/* A thread for the node's own chores, talking to this daemon like any
 * client: every second, recovery after migration workers that died on this
 * node (cli/migrate_recover.c: a guest left paused must not wait for the
 * next vmmigrate); every 5 s, unless --no-replication, the replication
 * scheduler's look at the jobs of the guests this node owns
 * (cli/repl_sched.c). */
static void *chores_main(void *arg)
{
	struct cli_repl_sched *s = arg ? cli_repl_sched_new(SCHED_WORKERS) : NULL;
	unsigned ticks = 0;

	sleep(2); /* the daemon's socket first */
	for (;; ticks++) {
		struct cli_ctl x = { .lock_fd = -1 };
		struct err *e = NULL;

		if (cli_ctl_open(&x, &e)) {
			cli_migrate_sweep(&x);
			if (s && ticks % (SCHED_TICK_S / SWEEP_TICK_S) == 0)
				cli_repl_sched_tick(s, &x, false);
			cli_ctl_close(&x);
		} else {
			err_free(e);
		}
		sleep(SWEEP_TICK_S);
	}
	return NULL;
}

static int exec_run(const struct cli_args *a)
{
	const char *dd = cli_get(a, "data-dir") ? cli_get(a, "data-dir") : getenv("VMM_DATA_DIR");
	struct clu_daemon_opts o = {
		.data_dir = dd && *dd ? dd : "/var/lib/vmmigrate",
		.socket = cli_get(a, "socket") ? cli_get(a, "socket") : clu_default_socket(),
		.node = cli_get(a, "node"),
		.standalone = cli_has(a, "standalone"),
		.corosync_conf = cli_get(a, "corosync-conf"),
	};
	struct err *e = NULL;

	if (cli_get(a, "ssh-host-key"))
		setenv("VMM_SSH_HOST_KEY", cli_get(a, "ssh-host-key"), 1);

	if (o.node && (!*o.node || strlen(o.node) > 63 || strspn(o.node,
	    "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(o.node)))
		return cli_fail(a, "invalid node name '%s': use a-z, 0-9 and -", o.node);
	/* The replication scheduler talks to this daemon like any client. */
	setenv("VMM_SOCKET", o.socket, 1);
	setenv("VMM_DATA_DIR", o.data_dir, 1);
	{
		pthread_t th;
		/* any non-NULL argument: run the replication scheduler too */
		void *repl = cli_has(a, "no-replication") ? NULL : (void *)1;

		if (pthread_create(&th, NULL, chores_main, repl) == 0)
			pthread_detach(th);
		else
			log_warn("cannot start the chores thread (migration recovery, replication)");
	}
	if (!clu_daemon_run(&o, &e))
		return cli_report(a, e);
	return 0;
}

static const struct cli_cmd cmd_run = {
	.name = "run",
	.posargs = "",
	.summary = "run the node daemon in the foreground",
	.opts = opts,
	.exec = exec_run,
};

static const struct cli_cmd *const cmds[] = { &cmd_run, NULL };

int main(int argc, char **argv)
{
	return cli_main("vmmd", "vmmigrate node daemon: replicated config store on corosync", cmds,
			argc, argv);
}
