/*
 * mig_qemu.c - start, attach to and stop a guest's QEMU process.
 * Contract in mig.h.
 */
#include "mig.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NETNS_DIR "/var/run/netns"

/* ---- validation ------------------------------------------------------ */

static bool name_ok(const char *s)
{
	if (!s || !*s || strlen(s) > 64)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("_.-", *s))
			return false;
	return true;
}

static bool file_readable(const char *what, const char *path, struct err **errp)
{
	struct stat st;

	if (!path || !*path)
		return err_set(errp, ERR_INVAL, "missing %s", what);
	if (stat(path, &st) < 0)
		return err_set(errp, errno == ENOENT ? ERR_NOTFOUND : ERR_INVAL,
			       "cannot use %s '%s': %s", what, path, strerror(errno));
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return err_set(errp, ERR_INVAL, "%s '%s' is not a file", what, path);
	if (access(path, R_OK) < 0)
		return err_set(errp, ERR_INVAL, "cannot read %s '%s': %s", what, path,
			       strerror(errno));
	return true;
}

bool mig_qemu_spec_check(const struct mig_qemu_spec *s, struct err **errp)
{
	char path[256];
	struct stat st;

	if (!name_ok(s->name))
		return err_set(errp, ERR_INVAL,
			       "invalid guest name '%s': use 1-64 of A-Z a-z 0-9 _ . -",
			       s->name ? s->name : "");
	if (!s->dir || !*s->dir)
		return err_set(errp, ERR_INVAL, "missing run directory");
	/* sun_path holds 108 bytes; "/qmp.sock" must fit after the dir. */
	if (strlen(s->dir) > 90)
		return err_set(errp, ERR_INVAL, "run directory '%s' is too long (max 90 bytes)",
			       s->dir);
	if (s->netns) {
		if (!name_ok(s->netns))
			return err_set(errp, ERR_INVAL, "invalid node name '%s'", s->netns);
		snprintf(path, sizeof(path), NETNS_DIR "/%s", s->netns);
		if (stat(path, &st) < 0)
			return err_set(errp, ERR_NOTFOUND,
				       "unknown node '%s': no network namespace %s",
				       s->netns, path);
	}
	if (s->mem_bytes < (16ULL << 20) || s->mem_bytes > (1ULL << 40) ||
	    s->mem_bytes % 4096)
		return err_set(errp, ERR_INVAL,
			       "invalid memory size %llu bytes: must be a multiple of 4 KiB "
			       "between 16 MiB and 1 TiB", (unsigned long long)s->mem_bytes);
	if (s->cpus < 1 || s->cpus > 256)
		return err_set(errp, ERR_INVAL, "invalid cpus %u: must be 1 to 256", s->cpus);
	/* Without a kernel the firmware boots the first disk. */
	if (s->kernel && !file_readable("kernel", s->kernel, errp))
		return false;
	if (!s->kernel && (s->initrd || s->append))
		return err_set(errp, ERR_INVAL, "%s given without a kernel",
			       s->initrd ? "initrd" : "kernel command line");
	if (!s->kernel && !s->ndisks)
		return err_set(errp, ERR_INVAL, "nothing to boot: no kernel and no disk");
	if (s->initrd && !file_readable("initrd", s->initrd, errp))
		return false;
	if (s->ndisks > MIG_MAX_DISKS)
		return err_set(errp, ERR_INVAL, "too many disks: %u (max %d)", s->ndisks,
			       MIG_MAX_DISKS);
	for (unsigned i = 0; i < s->ndisks; i++)
		if (!file_readable("disk", s->disks[i], errp))
			return false;
	if (s->accel != MIG_ACCEL_KVM && s->accel != MIG_ACCEL_TCG)
		return err_set(errp, ERR_INVAL, "accelerator must be resolved before start");
	return true;
}

/* ---- argv -------------------------------------------------------------- */

struct argv {
	char *v[96];
	unsigned n;
	bool oom;
};

static void arg(struct argv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void arg(struct argv *a, const char *fmt, ...)
{
	va_list ap;
	char *s;

	if (a->n + 1 >= ARRAY_SIZE(a->v)) {
		a->oom = true;
		return;
	}
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0) {
		a->oom = true;
		s = NULL;
	}
	va_end(ap);
	if (s)
		a->v[a->n++] = s;
}

static void argv_free(struct argv *a)
{
	for (unsigned i = 0; i < a->n; i++)
		free(a->v[i]);
	a->n = 0;
}

/* cache=none (O_DIRECT) is what makes shared-storage migration safe, but
 * tmpfs and some others refuse O_DIRECT: fall back and say so. */
static const char *cache_mode(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);

	if (fd >= 0) {
		close(fd);
		return "none";
	}
	log_warn("disk '%s' does not support O_DIRECT; using cache=writeback", path);
	return "writeback";
}

static void build_argv(const struct mig_qemu_spec *s, const char *qemu, struct argv *a)
{
	const char *cpu = s->cpu_model ? s->cpu_model :
			  s->accel == MIG_ACCEL_KVM ? "host" : "qemu64";

	arg(a, "%s", qemu);
	arg(a, "-name");
	arg(a, "%s,debug-threads=on", s->name);
	arg(a, "-no-user-config");
	arg(a, "-nodefaults");
	arg(a, "-display");
	arg(a, "none");
	arg(a, "-machine");
	arg(a, "pc");
	arg(a, "-accel");
	arg(a, "%s", s->accel == MIG_ACCEL_KVM ? "kvm" : "tcg");
	arg(a, "-cpu");
	arg(a, "%s", cpu);
	arg(a, "-smp");
	arg(a, "%u", s->cpus);
	arg(a, "-m");
	arg(a, "%lluK", (unsigned long long)(s->mem_bytes >> 10));
	if (s->kernel) {
		arg(a, "-kernel");
		arg(a, "%s", s->kernel);
	}
	if (s->initrd) {
		arg(a, "-initrd");
		arg(a, "%s", s->initrd);
	}
	if (s->append) {
		arg(a, "-append");
		arg(a, "%s", s->append);
	}
	arg(a, "-chardev");
	arg(a, "file,id=con0,path=%s/console.log", s->dir);
	arg(a, "-serial");
	arg(a, "chardev:con0");
	arg(a, "-chardev");
	arg(a, "socket,id=cmd0,path=%s/cmd.sock,server=on,wait=off", s->dir);
	arg(a, "-serial");
	arg(a, "chardev:cmd0");
	arg(a, "-qmp");
	arg(a, "unix:%s/qmp.sock,server=on,wait=off", s->dir);
	arg(a, "-pidfile");
	arg(a, "%s/qemu.pid", s->dir);
	for (unsigned i = 0; i < s->ndisks; i++) {
		arg(a, "-drive");
		/* node-name: what a target exports over NBD when disks move */
		arg(a, "if=none,id=drive%u,node-name=disk%u,file=%s,format=%s,cache=%s", i, i,
		    s->disks[i], util_volume_is_qcow2(s->disks[i]) ? "qcow2" : "raw", cache_mode(s->disks[i]));
		arg(a, "-device");
		arg(a, "virtio-blk-pci,drive=drive%u,id=vd%u%s", i, i,
		    !s->kernel && i == 0 ? ",bootindex=0" : "");
	}
	if (s->paused)
		arg(a, "-S");
	if (s->incoming) {
		arg(a, "-incoming");
		arg(a, "defer");
	}
	a->v[a->n] = NULL;
}

/* ---- process ----------------------------------------------------------- */

/* In the child: enter the node, wire stdio, exec. Reports errno on `rep`. */
static void child_exec(const struct mig_qemu_spec *s, struct argv *a, int rep)
{
	char path[256];
	int fd, e;

	setsid(); /* no terminal signals: the guest outlives the CLI that started it */
	if (s->netns) {
		snprintf(path, sizeof(path), NETNS_DIR "/%s", s->netns);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
			goto fail;
		close(fd);
	}
	snprintf(path, sizeof(path), "%s/qemu.log", s->dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		goto fail;
	dup2(fd, 1);
	dup2(fd, 2);
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
		dup2(fd, 0);
	execvp(a->v[0], a->v);
fail:
	e = errno;
	if (write(rep, &e, sizeof(e)) < 0)
		_exit(126);
	_exit(127);
}

char *mig_qemu_last_words(const char *dir)
{
	_cleanup_free_ char *path = NULL, *log = NULL;
	char *end, *start;

	if (asprintf(&path, "%s/qemu.log", dir) < 0)
		return NULL;
	log = util_read_file(path, 1 << 20, NULL);
	if (!log)
		return NULL;
	end = log + strlen(log);
	while (end > log && isspace((unsigned char)end[-1]))
		*--end = '\0';
	if (end == log)
		return NULL;
	start = strrchr(log, '\n');
	return strdup(start ? start + 1 : log);
}

static void remove_run_files(const char *dir)
{
	static const char *const names[] = { "qmp.sock", "cmd.sock", "qemu.pid" };
	char path[512];

	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		unlink(path);
	}
}

static struct mig_qemu *qemu_new(pid_t pid, bool child, const char *dir)
{
	struct mig_qemu *g = calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	g->pid = pid;
	g->child = child;
	g->exit_status = -1;
	g->dir = strdup(dir);
	if (!g->dir) {
		free(g);
		return NULL;
	}
	return g;
}

static bool reap_once(struct mig_qemu *g)
{
	int st;

	if (g->pid <= 0)
		return true;
	if (g->child) {
		pid_t r = waitpid(g->pid, &st, WNOHANG);
		if (r == g->pid || (r < 0 && errno == ECHILD)) {
			g->exit_status = r == g->pid ? st : -1;
			g->pid = 0;
			return true;
		}
		return false;
	}
	if (!util_pid_alive(g->pid)) {
		g->pid = 0;
		return true;
	}
	return false;
}

bool mig_qemu_wait_exit(struct mig_qemu *g, int timeout_ms)
{
	int64_t deadline = util_now_ms() + timeout_ms;

	for (;;) {
		if (reap_once(g))
			return true;
		if (util_now_ms() >= deadline)
			return false;
		usleep(5000);
	}
}

static void describe_exit(int st, char *buf, size_t len)
{
	if (st < 0)
		snprintf(buf, len, "exited");
	else if (WIFEXITED(st))
		snprintf(buf, len, "exited (status %d)", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "was killed by signal %d", WTERMSIG(st));
	else
		snprintf(buf, len, "stopped");
}

struct mig_qemu *mig_qemu_start(const struct mig_qemu_spec *spec, struct err **errp)
{
	const char *qemu = spec->qemu ? spec->qemu : getenv("VMM_QEMU");
	struct argv a = { .n = 0 };
	int rep[2] = { -1, -1 }, child_errno = 0;
	struct mig_qemu *g = NULL;
	int64_t deadline;
	char qmp_path[512];
	ssize_t n;
	pid_t pid;

	if (!qemu)
		qemu = "qemu-system-x86_64";
	if (!mig_qemu_spec_check(spec, errp))
		return NULL;
	if (!util_mkdir_p(spec->dir, 0750, errp))
		return NULL;
	remove_run_files(spec->dir);
	build_argv(spec, qemu, &a);
	if (a.oom) {
		argv_free(&a);
		err_set(errp, ERR_IO, "out of memory building the QEMU command line");
		return NULL;
	}
	if (pipe2(rep, O_CLOEXEC) < 0) {
		argv_free(&a);
		err_set_errno(errp, errno, "pipe");
		return NULL;
	}
	pid = fork();
	if (pid < 0) {
		err_set_errno(errp, errno, "fork");
		goto fail;
	}
	if (pid == 0) {
		close(rep[0]);
		child_exec(spec, &a, rep[1]);
	}
	close(rep[1]);
	rep[1] = -1;
	/* The pipe closes on a successful exec; otherwise it carries errno. */
	do
		n = read(rep[0], &child_errno, sizeof(child_errno));
	while (n < 0 && errno == EINTR);
	g = qemu_new(pid, true, spec->dir);
	if (!g) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		err_set(errp, ERR_IO, "out of memory");
		goto fail;
	}
	if (n == sizeof(child_errno)) {
		mig_qemu_wait_exit(g, 5000);
		err_set_errno(errp, child_errno, "cannot start '%s' for guest '%s'", qemu,
			      spec->name);
		goto fail;
	}
	log_info("guest %s: QEMU pid %d on %s, accel %s", spec->name, (int)pid,
		 spec->netns ? spec->netns : "this host", mig_accel_name(spec->accel));
	/* QEMU < 9.0 under TCG can miss dirty pages during migration when RAM
	 * is a multiple of 256 KiB (fixed by upstream commit 03bfc2188f). */
	if (spec->accel == MIG_ACCEL_TCG && spec->mem_bytes % (256 << 10) == 0)
		log_warn("guest %s: TCG with RAM a multiple of 256 KiB: QEMU before 9.0 may "
			 "lose guest writes when migrating it (use e.g. %lluK)", spec->name,
			 (unsigned long long)((spec->mem_bytes >> 10) - 8));
	snprintf(qmp_path, sizeof(qmp_path), "%s/qmp.sock", spec->dir);
	deadline = util_now_ms() + (spec->start_timeout_ms > 0 ? spec->start_timeout_ms : 10000);
	for (;;) {
		struct err *e = NULL;

		g->qmp = tp_qmp_connect(qmp_path, 100, &e);
		if (g->qmp) {
			close(rep[0]);
			argv_free(&a);
			return g;
		}
		if (reap_once(g)) {
			_cleanup_free_ char *last = mig_qemu_last_words(spec->dir);
			char how[64];

			describe_exit(g->exit_status, how, sizeof(how));
			err_free(e);
			err_set(errp, ERR_CHILD, "QEMU for guest '%s' %s: %s", spec->name, how,
				last ? last : "no message (see qemu.log)");
			goto fail;
		}
		if (util_now_ms() >= deadline) {
			err_prefix(e, "QEMU for guest '%s' did not answer QMP in time",
				   spec->name);
			err_propagate(errp, &e);
			break;
		}
		err_free(e);
	}
fail:
	if (rep[0] >= 0)
		close(rep[0]);
	if (rep[1] >= 0)
		close(rep[1]);
	argv_free(&a);
	if (g) {
		if (g->pid > 0) {
			kill(g->pid, SIGKILL);
			mig_qemu_wait_exit(g, 5000);
		}
		mig_qemu_release(g);
	}
	remove_run_files(spec->dir);
	return NULL;
}

/* Guards against signalling a recycled pid: QEMU's command line names its
 * own run dir ("<dir>/qmp.sock"); the trailing '/' keeps guest 100's dir
 * from matching guest 1000's QEMU. */
bool mig_qemu_pid_is_guest(pid_t pid, const char *dir)
{
	char path[64], buf[8192], want[600];
	_cleanup_close_ int fd = -1;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	snprintf(want, sizeof(want), "%s/", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return false;
	for (ssize_t i = 0; i < n; i++)
		if (!buf[i])
			buf[i] = ' ';
	buf[n] = '\0';
	return strstr(buf, want) != NULL;
}

struct mig_qemu *mig_qemu_attach(const char *dir, int timeout_ms, struct err **errp)
{
	_cleanup_free_ char *pidfile = NULL, *pidtxt = NULL, *sock = NULL;
	struct mig_qemu *g;
	uint64_t pid;

	if (asprintf(&pidfile, "%s/qemu.pid", dir) < 0 ||
	    asprintf(&sock, "%s/qmp.sock", dir) < 0) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	pidtxt = util_read_file(pidfile, 32, NULL);
	if (!pidtxt) {
		err_set(errp, ERR_NOTFOUND, "no guest running in '%s' (no qemu.pid)", dir);
		return NULL;
	}
	pidtxt[strcspn(pidtxt, "\n")] = '\0';
	if (!util_parse_u64(pidtxt, 1, INT32_MAX, "pid in qemu.pid", &pid, errp))
		return NULL;
	if (!util_pid_alive((pid_t)pid) || !mig_qemu_pid_is_guest((pid_t)pid, dir)) {
		err_set(errp, ERR_NOTFOUND, "no guest running in '%s' (pid %llu is gone)",
			dir, (unsigned long long)pid);
		return NULL;
	}
	g = qemu_new((pid_t)pid, false, dir);
	if (!g) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	g->qmp = tp_qmp_connect(sock, timeout_ms, errp);
	if (!g->qmp) {
		mig_qemu_release(g);
		return NULL;
	}
	return g;
}

bool mig_qemu_stop(struct mig_qemu *g, int timeout_ms, struct err **errp)
{
	int64_t start = util_now_ms();
	bool ok = true;

	if (g->qmp) {
		struct err *e = NULL;

		/* QEMU may close the socket before replying to quit: not an error. */
		if (!tp_qmp_run(g->qmp, "quit", NULL, timeout_ms / 2, &e) &&
		    e->code != ERR_CLOSED)
			log_debug("quit: %s", e->msg);
		err_free(e);
		tp_qmp_close(g->qmp);
		g->qmp = NULL;
	}
	if (!mig_qemu_wait_exit(g, timeout_ms / 2)) {
		if (g->child || mig_qemu_pid_is_guest(g->pid, g->dir))
			kill(g->pid, SIGTERM);
		if (!mig_qemu_wait_exit(g, 2000)) {
			if (g->child || mig_qemu_pid_is_guest(g->pid, g->dir))
				kill(g->pid, SIGKILL);
			if (!mig_qemu_wait_exit(g, 5000))
				ok = err_set(errp, ERR_CHILD,
					     "QEMU pid %d did not exit after SIGKILL", (int)g->pid);
		}
	}
	if (ok) {
		remove_run_files(g->dir);
		log_debug("QEMU in %s stopped after %lld ms", g->dir,
			  (long long)(util_now_ms() - start));
	}
	mig_qemu_release(g);
	return ok;
}

void mig_qemu_release(struct mig_qemu *g)
{
	if (!g)
		return;
	tp_qmp_close(g->qmp);
	free(g->dir);
	free(g);
}
