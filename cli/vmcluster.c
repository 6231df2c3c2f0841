/*
 * vmcluster.c - cluster membership, the pvecm equivalent: create a cluster,
 * add this node to one (over ssh to a member), remove a dead node, show
 * quorum and membership, set expected votes. It writes corosync.conf
 * (cluster/clu_ccconf.h) and keeps the cluster's copy in the replicated
 * store, from which every vmmd installs it and reloads corosync. One file
 * per command (cli/cluster_*.c); shared helpers in cli/cluster.h.
 */
#include "cluster.h"

static const struct cli_cmd *const cmds[] = {
	&cli_cluster_create, &cli_cluster_add, &cli_cluster_status, &cli_cluster_nodes,
	&cli_cluster_delnode, &cli_cluster_expected, &cli_cluster_addnode, NULL,
};

int main(int argc, char **argv)
{
	return cli_main("vmcluster", "create and manage the corosync cluster of vmmigrate nodes",
			cmds, argc, argv);
}
