/*
 * clu_daemon_cc.c - how vmmd keeps the node's cluster configuration in
 * step with the cluster (pmxcfs does the same for /etc/pve/corosync.conf):
 *
 *  - The store key cluster/corosync.conf holds the cluster's corosync.conf.
 *    When it changes and its config_version is newer than the node's own
 *    file, vmmd installs it (atomic rename), copies it into the data dir,
 *    and asks corosync to reload (`corosync-cfgtool -R`).
 *  - A standalone node becomes a cluster node when `vmcluster create`
 *    puts corosync.conf into the data dir (checked once a second).
 *  - `vmcluster add` sends {"cmd":"join"}: the joining node's store must
 *    hold no guests; it is emptied so the cluster's copy wins the first sync.
 */
#include "clu_daemon.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CC_KEY "cluster/corosync.conf"

uint64_t clu_cc_text_version(const char *text)
{
	const char *p = text;

	/* The first config_version line; corosync.conf allows one (in totem). */
	while (p && (p = strstr(p, "config_version"))) {
		const char *q = p + strlen("config_version");

		while (*q == ' ' || *q == '\t')
			q++;
		if (*q == ':')
			return strtoull(q + 1, NULL, 10);
		p = q;
	}
	return 0;
}

static void run_reload(void)
{
	pid_t pid = fork();
	int st;

	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		if (null >= 0) {
			dup2(null, 1);
			dup2(null, 2);
		}
		execlp("corosync-cfgtool", "corosync-cfgtool", "-R", (char *)NULL);
		_exit(127);
	}
	if (pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && !WEXITSTATUS(st))
		log_info("corosync reloaded its configuration");
	else
		log_warn("corosync-cfgtool -R failed; corosync keeps its old configuration");
}

void clu_cc_follow(struct clu_daemon *d)
{
	_cleanup_free_ char *text = NULL, *mine = NULL;
	uint64_t want, have;
	struct err *e = NULL;

	text = clu_store_get(d->store, CC_KEY, NULL, NULL);
	if (!text)
		return;
	want = clu_cc_text_version(text);
	mine = util_read_file(d->cc_path, 1 << 20, NULL);
	have = mine ? clu_cc_text_version(mine) : 0;
	if (want <= have)
		return;
	log_info("cluster configuration version %" PRIu64 " replaces %" PRIu64 " in %s", want,
		 have, d->cc_path);
	if (!util_write_file(d->cc_path, text, 0644, &e) ||
	    !util_write_file(d->cc_local, text, 0644, &e)) {
		log_error("cannot install the cluster's corosync.conf: %s", e->msg);
		err_free(e);
		return;
	}
	if (d->connected)
		run_reload();
}

void clu_cc_check_mode(struct clu_daemon *d)
{
	struct stat st;

	if (!d->standalone || d->forced_standalone || util_now_ms() < d->next_mode_check)
		return;
	d->next_mode_check = util_now_ms() + 1000;
	if (stat(d->cc_local, &st) < 0)
		return;
	log_info("%s appeared: leaving standalone mode", d->cc_local);
	d->standalone = false;
	d->quorate = false;
	d->reconnect_at = 0;
	clu_daemon_set_state(d, CLU_D_DISCONNECTED);
}

static bool has_guest(const char *key, const char *value, uint64_t version, void *opaque)
{
	(void)value;
	(void)version;
	snprintf(opaque, 64, "%s", key);
	return false;
}

bool clu_cc_join(struct clu_daemon *d, struct err **errp)
{
	char guest[64] = "";
	struct stat st;

	if (d->forced_standalone)
		return err_set(errp, ERR_STATE, "vmmd runs with --standalone");
	if (stat(d->cc_local, &st) < 0)
		return err_set(errp, ERR_STATE, "cannot join: no %s yet", d->cc_local);
	if (!clu_store_list(d->store, "guests/", has_guest, guest, errp))
		return false;
	if (guest[0])
		return err_set(errp, ERR_STATE,
			       "cannot join: this node still has guests (%s); move or destroy them first",
			       guest);
	if (!clu_store_replace(d->store, 0, NULL, 0, errp))
		return false;
	log_info("joining the cluster with an empty store");
	if (d->connected)
		clu_cs_disconnect(d, "joining");
	d->standalone = false;
	d->quorate = false;
	d->reconnect_at = 0;
	clu_daemon_set_state(d, CLU_D_DISCONNECTED);
	return true;
}
