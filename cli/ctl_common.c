/* ctl_common.c - session, locks, paths and config edits shared by the vmctl
 * commands. See ctl.h. */
#include "ctl.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define RUN_DIR_DEFAULT "/run/vmmigrate/guests"
#define DATA_DIR_DEFAULT "/var/lib/vmmigrate"

/* ---- session and locks ------------------------------------------------------ */

bool cli_ctl_open(struct cli_ctl *x, struct err **errp)
{
	*x = (struct cli_ctl){ .lock_fd = -1 };
	x->c = clu_client_open(NULL, errp);
	if (!x->c)
		return false;
	if (!clu_client_node(x->c, x->node, sizeof(x->node), errp)) {
		clu_client_close(x->c);
		x->c = NULL;
		return false;
	}
	return true;
}

bool cli_ctl_reconnect(struct cli_ctl *x, int wait_ms, struct err **errp)
{
	int64_t end = util_now_ms() + wait_ms;
	struct err *e = NULL;

	for (;;) {
		struct clu_client *c = clu_client_open(NULL, &e);

		if (c) {
			clu_client_close(x->c);
			x->c = c;
			return true;
		}
		if (util_now_ms() >= end) {
			err_propagate(errp, &e);
			return false;
		}
		err_free(TAKE_PTR(e));
		usleep(200 * 1000);
	}
}

static const char *run_root(void)
{
	const char *r = getenv("VMM_RUN_DIR");

	return r && *r ? r : RUN_DIR_DEFAULT;
}

/* flock on $VMM_RUN_DIR/<vmid>.lock: the file stays (like Proxmox's
 * /var/lock/qemu-server/lock-<vmid>.conf); unlinking it would race. */
bool cli_ctl_local_lock(uint32_t vmid, int *fd_out, struct err **errp)
{
	_cleanup_free_ char *path = NULL;
	_cleanup_close_ int fd = -1;
	int64_t deadline = util_now_ms() + CLI_CTL_LOCK_WAIT_MS;

	if (!util_mkdir_p(run_root(), 0750, errp))
		return false;
	if (asprintf(&path, "%s/%" PRIu32 ".lock", run_root(), vmid) < 0)
		return err_set(errp, ERR_IO, "out of memory");
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return err_set_errno(errp, errno, "cannot open lock file '%s'", path);
	while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK && errno != EINTR)
			return err_set_errno(errp, errno, "cannot lock '%s'", path);
		if (util_now_ms() >= deadline)
			return err_set(errp, ERR_STATE, "guest %" PRIu32 " is busy: another "
				       "vmctl on this node holds %s", vmid, path);
		usleep(50 * 1000);
	}
	*fd_out = TAKE_FD(fd);
	return true;
}

bool cli_ctl_lock(struct cli_ctl *x, uint32_t vmid, struct err **errp)
{
	if (!cli_ctl_local_lock(vmid, &x->lock_fd, errp))
		return false;
	x->vmid = vmid;
	if (!clu_guest_lock(x->c, vmid, CLI_CTL_LOCK_WAIT_MS, errp))
		return false;
	x->cluster_locked = true;
	return true;
}

bool cli_ctl_lock_renew(struct cli_ctl *x, struct err **errp)
{
	return clu_guest_lock(x->c, x->vmid, 0, errp);
}

void cli_ctl_release(struct cli_ctl *x)
{
	struct err *e = NULL;

	if (x->cluster_locked && !clu_guest_unlock(x->c, x->vmid, &e)) {
		log_warn("could not release the lock of guest %" PRIu32 " (it expires within "
			 "%d s): %s", x->vmid, CLU_GUEST_LOCK_TTL_MS / 1000, e->msg);
		err_free(e);
	}
	x->cluster_locked = false;
	if (x->lock_fd >= 0)
		close(x->lock_fd); /* releases the flock */
	x->lock_fd = -1;
}

void cli_ctl_close(struct cli_ctl *x)
{
	cli_ctl_release(x);
	clu_client_close(x->c);
	x->c = NULL;
}

/* ---- arguments and guards ------------------------------------------------- */

bool cli_ctl_vmid(const char *s, uint32_t *out, struct err **errp)
{
	return clu_vmid_parse(s, out, errp);
}

bool cli_ctl_output(const struct cli_args *a, bool *json, struct err **errp)
{
	const char *fmt = cli_get(a, "output");

	if (fmt && strcmp(fmt, "text") && strcmp(fmt, "json"))
		return err_set(errp, ERR_INVAL, "invalid output format '%s': use text or json",
			       fmt);
	*json = fmt && !strcmp(fmt, "json");
	return true;
}

bool cli_ctl_check_owner(const struct cli_ctl *x, const struct clu_guest_rec *r,
			 struct err **errp)
{
	if (strcmp(r->node, x->node))
		return err_set(errp, ERR_INVAL, "guest %" PRIu32 " is owned by %s (this is %s)",
			       r->vmid, r->node, x->node);
	return true;
}

bool cli_ctl_check_unlocked(const struct clu_guest_rec *r, struct err **errp)
{
	if (r->conf.lock[0])
		return err_set(errp, ERR_STATE, "guest %" PRIu32 " is locked (%s); "
			       "'vmctl unlock %" PRIu32 "' clears it", r->vmid, r->conf.lock,
			       r->vmid);
	return true;
}

const char *cli_ctl_run_dir(uint32_t vmid, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%" PRIu32, run_root(), vmid);
	return buf;
}

const char *cli_ctl_data_dir(void)
{
	const char *d = getenv("VMM_DATA_DIR");

	return d && *d ? d : DATA_DIR_DEFAULT;
}

bool cli_ctl_running(uint32_t vmid, pid_t *pid)
{
	char dir[512], file[600];
	_cleanup_free_ char *txt = NULL;
	uint64_t v;

	cli_ctl_run_dir(vmid, dir, sizeof(dir));
	snprintf(file, sizeof(file), "%s/qemu.pid", dir);
	txt = util_read_file(file, 32, NULL);
	if (!txt)
		return false;
	txt[strcspn(txt, "\n")] = '\0';
	if (!util_parse_u64(txt, 1, INT32_MAX, "pid", &v, NULL) ||
	    !util_pid_alive((pid_t)v) || !mig_qemu_pid_is_guest((pid_t)v, dir))
		return false;
	if (pid)
		*pid = (pid_t)v;
	return true;
}

/* ---- config edits ------------------------------------------------------------ */

#define FIELD(k, m, hw) { k, offsetof(struct clu_guest_conf, m), \
			  sizeof(((struct clu_guest_conf *)0)->m), hw }

static const struct field {
	const char *key;
	size_t off, size;
	bool hardware; /* changes what QEMU runs: needs the guest stopped */
} fields[] = {
	FIELD("name", name, false),
	FIELD("memory", memory, true),
	FIELD("cores", cores, true),
	FIELD("sockets", sockets, true),
	FIELD("cpu", cpu, true),
	FIELD("machine", machine, true),
	FIELD("kernel", kernel, false),
	FIELD("initrd", initrd, false),
	FIELD("append", append, false),
	FIELD("onboot", onboot, false),
	FIELD("description", description, false),
};

static const struct field *field_of(const char *key)
{
	for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
		if (!strcmp(fields[i].key, key))
			return &fields[i];
	return NULL;
}

bool cli_ctl_conf_is_hardware(const char *key)
{
	const struct field *f = field_of(key);

	return !f || f->hardware; /* disks and unknown keys: the safe side */
}

bool cli_ctl_conf_set(struct clu_guest_conf *g, const char *key, const char *value,
		      struct err **errp)
{
	static const char file[] = "--";
	_cleanup_free_ struct clu_guest_conf *tmp = malloc(sizeof(*tmp));
	_cleanup_free_ char *text = NULL;
	const struct field *f = field_of(key);
	struct err *e = NULL;

	if (!tmp)
		return err_set(errp, ERR_IO, "out of memory");
	if (!f || !strcmp(key, "description"))
		return err_set(errp, ERR_INVAL, "unknown config key '%s'", key);
	if (strpbrk(value, "\r\n") || !*value)
		return err_set(errp, ERR_INVAL, "invalid %s '%s': %s", key, CLU_Q(value),
			       *value ? "line breaks are not allowed" : "empty");
	/* The parser would only say the line is too long, not which value. */
	if (strlen(key) + 2 + strlen(value) > CLU_CONF_LINE_MAX)
		return err_set(errp, ERR_INVAL, "invalid %s '%s': longer than %d bytes", key,
			       CLU_Q(value), CLU_CONF_LINE_MAX - 2 - (int)strlen(key));
	/* One line through the config parser: its checks, its messages. */
	if (asprintf(&text, "%s: %s\n", key, value) < 0)
		return err_set(errp, ERR_IO, "out of memory");
	if (!clu_guest_parse(text, file, tmp, &e)) {
		const char *msg = e->msg;

		if (!strncmp(msg, "--:1: ", 6))
			msg += 6;
		err_set(errp, ERR_INVAL, "%s", msg);
		err_free(e);
		return false;
	}
	memcpy((char *)g + f->off, (char *)tmp + f->off, f->size);
	return true;
}

bool cli_ctl_conf_reset(struct clu_guest_conf *g, const char *key, struct err **errp)
{
	_cleanup_free_ struct clu_guest_conf *d = malloc(sizeof(*d));
	const struct field *f = field_of(key);

	if (!d)
		return err_set(errp, ERR_IO, "out of memory");
	if (!f)
		return err_set(errp, ERR_INVAL, "cannot delete '%s': not one of name, memory, "
			       "cores, sockets, cpu, machine, kernel, initrd, append, onboot, "
			       "description", key);
	clu_guest_conf_defaults(d);
	memcpy((char *)g + f->off, (char *)d + f->off, f->size);
	return true;
}

bool cli_ctl_in_maintenance(struct cli_ctl *x, const char *node, bool *yes, struct err **errp)
{
	char key[CLU_KEY_MAX];
	_cleanup_free_ char *v = NULL;
	_cleanup_json_ struct json_object *o = NULL;
	struct json_object *m;
	struct err *e = NULL;

	snprintf(key, sizeof(key), "nodes/%s", node);
	v = clu_client_get(x->c, key, NULL, &e);
	if (!v && e->code == ERR_NOTFOUND) {
		err_free(e);
		*yes = false;
		return true;
	}
	if (!v) {
		err_propagate(errp, &e);
		return false;
	}
	o = json_tokener_parse(v);
	*yes = o && json_object_object_get_ex(o, "maintenance", &m) && json_object_get_boolean(m);
	return true;
}
