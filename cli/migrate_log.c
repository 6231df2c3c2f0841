/*
 * migrate_log.c - per-migration task logs and `vmmigrate log VMID`.
 *
 * The worker on the source node (migrate_run.c) keeps every line it logs
 * while a migration runs in its own file, like Proxmox's task logs:
 *   $VMM_DATA_DIR/tasks/migrate/<vmid>/<YYYYMMDD-HHMMSS>-<pid>.log
 * ending in "TASK OK" or "TASK ERROR: reason". The newest KEEP files of a
 * guest are kept. `vmmigrate log VMID` reads them back on that node: the
 * newest, or with --all every one kept, oldest first. See migrate.h.
 */
#include "migrate.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEEP 10
#define LOG_MAX (4u << 20) /* bytes of one task log that `log` prints */

static void task_dir(uint32_t vmid, char *buf, size_t len)
{
	snprintf(buf, len, "%s/tasks/migrate/%" PRIu32, cli_ctl_data_dir(), vmid);
}

static void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The task logs of a guest, oldest first (names sort by time); *n files. */
static char **list_logs(const char *dir, size_t *n)
{
	_cleanup_(closedirp) DIR *d = opendir(dir);
	char **v = NULL;
	struct dirent *de;
	size_t cap = 0;

	*n = 0;
	if (!d)
		return NULL;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		if (de->d_name[0] == '.' || l < 5 || strcmp(de->d_name + l - 4, ".log"))
			continue;
		if (*n == cap) {
			char **nv = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof(*v));

			if (!nv)
				break;
			v = nv;
		}
		if (!(v[*n] = strdup(de->d_name)))
			break;
		(*n)++;
	}
	if (*n)
		qsort(v, *n, sizeof(*v), by_name);
	return v;
}

static void free_list(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

bool cli_mig_tasklog_open(uint32_t vmid, struct err **errp)
{
	char dir[1024], path[1200], stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	char **old;
	size_t n;

	task_dir(vmid, dir, sizeof(dir));
	if (!util_mkdir_p(dir, 0700, errp))
		return false;
	localtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
	snprintf(path, sizeof(path), "%s/%s-%d.log", dir, stamp, (int)getpid());
	if (!log_task_open(path, errp))
		return false;
	/* Room for this one among the KEEP newest. */
	old = list_logs(dir, &n);
	for (size_t i = 0; i + KEEP < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, old[i]);
		unlink(path);
	}
	free_list(old, n);
	return true;
}

static int exec_log(const struct cli_args *a)
{
	char dir[1024], path[1200];
	struct err *e = NULL;
	uint32_t vmid;
	char **v;
	size_t n;
	int rc = 0;

	if (!cli_ctl_vmid(a->pos[0], &vmid, &e))
		return cli_report(a, e);
	task_dir(vmid, dir, sizeof(dir));
	v = list_logs(dir, &n);
	if (!n) {
		free_list(v, n);
		err_set(&e, ERR_NOTFOUND, "no migration of guest %" PRIu32 " was started on this "
			"node (no task log in '%s')", vmid, dir);
		return cli_report(a, e);
	}
	for (size_t i = cli_has(a, "all") ? 0 : n - 1; i < n; i++) {
		_cleanup_free_ char *text = NULL;

		snprintf(path, sizeof(path), "%s/%s", dir, v[i]);
		text = util_read_file(path, LOG_MAX, &e);
		if (!text) {
			rc = cli_report(a, TAKE_PTR(e));
			break;
		}
		if (cli_has(a, "all"))
			printf("==> %s <==\n", v[i]);
		fputs(text, stdout);
	}
	free_list(v, n);
	return rc;
}

static const struct cli_opt log_opts[] = {
	{ "all", CLI_FLAG, NULL, "every task log kept (the newest 10), oldest first" },
	{ NULL }
};

const struct cli_cmd cli_migrate_log = {
	.name = "log",
	.posargs = "VMID",
	.summary = "the task log of the guest's last migration started on this node",
	.opts = log_opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_log,
};
