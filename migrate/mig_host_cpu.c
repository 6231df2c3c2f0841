/*
 * mig_host_cpu.c - can this host run a guest CPU model? Asked to libvirt's
 * embedded QEMU driver in a forked helper. Contract in mig_host.h.
 *
 *   caller --fork--> reaper (child subreaper) --fork--> worker
 *     ^                reaps the worker and the           virConnectOpen,
 *     |                QEMU probes libvirt                compare / domcaps,
 *     |                daemonizes, then _exit()s          verdict, _exit()
 *     +------------------ pipe: one verdict -------------------+
 *
 * Verdict: one status byte, then text (a reason, or a document).
 * Helpers never return into the caller's code and never run exit
 * handlers: the worker leaves libvirt's threads mid-flight on purpose,
 * and under ASan no leak report runs in them.
 */
#include "mig_host.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERDICT_MAX (4u << 20) /* domain capabilities are ~20 KiB */
#define REAP_MS 5000            /* after the verdict, for the helpers to go */
#define LIBVIRT_USER "libvirt-qemu"

/* Status byte of a verdict. */
#define V_OK 'Y'           /* text: "identical"/"superset", or the document */
#define V_INCOMPATIBLE 'N' /* text: libvirt's reason */
#define V_REJECTED 'R'     /* libvirt refused the model or XML */
#define V_FAILED 'F'       /* libvirt unusable: init, open, domcaps */

static const char qemu_conf[] =
	"# Written by vmmigrate for libvirt's embedded QEMU driver (CPU checks).\n"
	"user = \"root\"\n"
	"group = \"root\"\n"
	"dynamic_ownership = 0\n"
	"stdio_handler = \"file\"\n";

enum lv_job { LV_COMPARE, LV_DOMCAPS };

struct lv_req {
	enum lv_job job;
	const char *root;
	const char *virttype;  /* "kvm" or "qemu" */
	const char *cpu_xml;   /* LV_COMPARE */
};

/* ---- worker (runs in the grandchild) ------------------------------------ */

static void quiet_errors(void *opaque, virErrorPtr e)
{
	(void)opaque;
	(void)e; /* libvirt would print each error; the verdict carries it */
}

static const char *lv_msg(void)
{
	virErrorPtr e = virGetLastError();

	return e && e->message ? e->message : "unknown libvirt error";
}

static __attribute__((noreturn)) void verdict(int fd, char status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void verdict(int fd, char status, const char *fmt, ...)
{
	char *text = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&text, fmt, ap) < 0)
		text = NULL;
	va_end(ap);
	if (util_write_all(fd, &status, 1, NULL) && text)
		util_write_all(fd, text, strlen(text), NULL);
	_exit(0); /* at once: no atexit, no libvirt teardown */
}

static __attribute__((noreturn)) void worker_main(const struct lv_req *req, int fd)
{
	char path[PATH_MAX], uri[PATH_MAX + 32];
	virConnectPtr conn;
	int lock, log;

	/* One embedded driver per root at a time. */
	snprintf(path, sizeof(path), "%s/vmm.lock", req->root);
	lock = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock < 0 || flock(lock, LOCK_EX) < 0)
		verdict(fd, V_FAILED, "cannot lock %s: %s", path, strerror(errno));
	/* libvirt logs to stderr: keep the last call's lines for diagnosis. */
	snprintf(path, sizeof(path), "%s/helper.log", req->root);
	log = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (log >= 0) {
		dup2(log, STDERR_FILENO);
		close(log);
	}
	virSetErrorFunc(NULL, quiet_errors);
	snprintf(uri, sizeof(uri), "qemu:///embed?root=%s", req->root);
	if (virInitialize() < 0 || virEventRegisterDefaultImpl() < 0)
		verdict(fd, V_FAILED, "cannot initialise libvirt: %s", lv_msg());
	conn = virConnectOpen(uri);
	if (!conn)
		verdict(fd, V_FAILED, "cannot open %s: %s", uri, lv_msg());
	if (req->job == LV_DOMCAPS) {
		char *caps = virConnectGetDomainCapabilities(conn, NULL, NULL, NULL,
							     req->virttype, 0);

		if (!caps)
			verdict(fd, V_FAILED, "no domain capabilities for %s from libvirt: %s",
				req->virttype, lv_msg());
		verdict(fd, V_OK, "%s", caps);
	}
	switch (virConnectCompareHypervisorCPU(conn, NULL, NULL, NULL, req->virttype,
					       req->cpu_xml,
					       VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE)) {
	case VIR_CPU_COMPARE_IDENTICAL:
		verdict(fd, V_OK, "identical");
	case VIR_CPU_COMPARE_SUPERSET:
		verdict(fd, V_OK, "superset");
	case VIR_CPU_COMPARE_INCOMPATIBLE: /* not with FAIL_INCOMPATIBLE */
		verdict(fd, V_INCOMPATIBLE, "incompatible");
	default: {
		virErrorPtr e = virGetLastError();
		static const char noise[] = "the CPU is incompatible with host CPU: ";
		const char *m = lv_msg();

		if (e && e->code == VIR_ERR_CPU_INCOMPATIBLE) {
			if (!strncmp(m, noise, sizeof(noise) - 1))
				m += sizeof(noise) - 1;
			verdict(fd, V_INCOMPATIBLE, "%s", m);
		}
		verdict(fd, V_REJECTED, "%s", m);
	}
	}
}

/* The child subreaper: orphans (QEMU probes libvirt daemonized) come to
 * it and are reaped at once instead of by a slow init. */
static __attribute__((noreturn)) void reaper_main(const struct lv_req *req, int fd)
{
	pid_t self = getpid(), worker;
	int st;

	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		verdict(fd, V_FAILED, "PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
	worker = fork();
	if (worker < 0)
		verdict(fd, V_FAILED, "cannot fork the libvirt worker: %s", strerror(errno));
	if (worker == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != self)
			_exit(127);
		worker_main(req, fd);
	}
	close(fd);
	for (;;) {
		pid_t p = waitpid(-1, &st, 0);

		if (p == worker)
			break;
		if (p < 0 && errno != EINTR)
			_exit(127);
	}
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}

/* ---- caller side ------------------------------------------------------------- */

static bool root_prepare(const char *root, struct err **errp)
{
	char path[PATH_MAX], buf[4096];
	struct passwd pw, *res = NULL;

	if (!root || root[0] != '/' || strlen(root) > PATH_MAX - 64 ||
	    strspn(root, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			 "0123456789/._-") != strlen(root))
		return err_set(errp, ERR_INVAL,
			       "invalid libvirt root '%s': must be an absolute path of "
			       "[A-Za-z0-9/._-]", root ? root : "");
	/* libvirt's QEMU driver resolves its default user before it reads
	 * qemu.conf, and fails without it. */
	if (getpwnam_r(LIBVIRT_USER, &pw, buf, sizeof(buf), &res) != 0 || !res)
		return err_set(errp, ERR_NOTFOUND,
			       "libvirt's QEMU driver needs the system user '%s' "
			       "(libvirt-daemon-system creates it; or: useradd --system "
			       "--user-group %s)", LIBVIRT_USER, LIBVIRT_USER);
	snprintf(path, sizeof(path), "%s/etc", root);
	if (!util_mkdir_p(path, 0700, errp))
		return false;
	snprintf(path, sizeof(path), "%s/etc/qemu.conf", root);
	if (access(path, F_OK) == 0)
		return true; /* the operator's, or ours from an earlier call */
	return util_write_file(path, qemu_conf, 0644, errp);
}

static int remaining_ms(int64_t deadline)
{
	int64_t left = deadline - util_now_ms();

	return left < 0 ? 0 : (int)left;
}

/* Reaps the reaper, killing its group if it lingers; its wait status. */
static int reap(pid_t pid, int64_t deadline)
{
	int st = -1;

	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (!remaining_ms(deadline)) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
				;
			return st;
		}
		poll(NULL, 0, 5);
	}
	return st;
}

/* Runs req in the helpers; *status and *text (caller frees) on success. */
static bool lv_call(const struct lv_req *req, char *status, char **text,
		    struct err **errp)
{
	int64_t t0 = util_now_ms(), deadline = t0 + MIG_HOST_LIBVIRT_TIMEOUT_MS;
	_cleanup_free_ char *buf = NULL;
	size_t len = 0, cap = 0;
	_cleanup_close_ int rfd = -1;
	int p[2], st;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return err_set_errno(errp, errno, "cannot start the libvirt helper: pipe");
	pid = fork();
	if (pid < 0) {
		int e = errno;

		close(p[0]);
		close(p[1]);
		return err_set_errno(errp, e, "cannot start the libvirt helper: fork");
	}
	if (pid == 0) {
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(p[0]);
		reaper_main(req, p[1]);
	}
	setpgid(pid, pid); /* either of us may win; kill(-pid) needs it */
	close(p[1]);
	rfd = p[0];
	for (;;) {
		struct pollfd pfd = { .fd = rfd, .events = POLLIN };
		ssize_t n;
		int r = poll(&pfd, 1, remaining_ms(deadline));

		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0) {
			reap(pid, 0);
			return err_set(errp, ERR_TIMEOUT,
				       "libvirt gave no answer within %d s (see %s/helper.log)",
				       MIG_HOST_LIBVIRT_TIMEOUT_MS / 1000, req->root);
		}
		if (len + 65536 > cap) {
			char *nb;

			if (cap >= VERDICT_MAX) {
				reap(pid, 0);
				return err_set(errp, ERR_PROTO, "libvirt helper answer above %u bytes",
					       VERDICT_MAX);
			}
			nb = realloc(buf, cap + 65536);
			if (!nb)
				abort();
			buf = nb;
			cap += 65536;
		}
		n = read(rfd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	st = reap(pid, util_now_ms() + REAP_MS);
	log_debug("libvirt helper (%s, %s): %" PRId64 " ms", req->job == LV_COMPARE ?
		  "compare" : "domcaps", req->virttype, util_now_ms() - t0);
	if (len == 0) {
		if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) > 128)
			return err_set(errp, ERR_CHILD,
				       "libvirt helper died (signal %d) without an answer; see %s/helper.log",
				       WEXITSTATUS(st) - 128, req->root);
		return err_set(errp, ERR_CHILD,
			       "libvirt helper gave no answer (status %d); see %s/helper.log",
			       st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1, req->root);
	}
	buf[len] = '\0';
	*status = buf[0];
	*text = strdup(buf + 1);
	if (!*text)
		abort();
	return true;
}

/* ---- verdict cache -------------------------------------------------------
 * A runnable verdict costs ~0.7 s of libvirt start-up per migration, and
 * its answer only changes with the host CPU, the kernel, QEMU or libvirt.
 * So "runnable" is kept in ROOT/cpu-ok/<virttype>-<hash of the CPU XML>
 * with a fingerprint of those four, for at most CACHE_TTL_S; a refusal is
 * never cached (it is asked again, and refusals are the rare path). */
#define CACHE_TTL_S (24 * 3600)

static uint64_t fnv1a(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
	return h;
}

static char *fingerprint(void)
{
	_cleanup_free_ char *cpuinfo = util_read_file("/proc/cpuinfo", 1u << 20, NULL);
	const char *qemu = getenv("VMM_QEMU");
	const char *flags = cpuinfo ? strstr(cpuinfo, "\nflags") : NULL;
	const char *model = cpuinfo ? strstr(cpuinfo, "model name") : NULL;
	struct utsname u;
	struct stat q = { 0 };
	char *out;

	if (uname(&u) < 0)
		return NULL;
	if (stat(qemu && *qemu ? qemu : "/usr/bin/qemu-system-x86_64", &q) < 0)
		return NULL;
	if (asprintf(&out, "kernel=%s qemu=%lld:%lld libvirt=%lu cpu=%016" PRIx64 ":%016" PRIx64
		     "\n", u.release, (long long)q.st_size, (long long)q.st_mtime,
		     (unsigned long)LIBVIR_VERSION_NUMBER,
		     model ? fnv1a(model, strcspn(model, "\n")) : 0,
		     flags ? fnv1a(flags, strcspn(flags + 1, "\n") + 1) : 0) < 0)
		return NULL;
	return out;
}

static void cache_path(const struct lv_req *req, char *buf, size_t len)
{
	snprintf(buf, len, "%s/cpu-ok/%s-%016" PRIx64, req->root, req->virttype,
		 fnv1a(req->cpu_xml, strlen(req->cpu_xml)));
}

static bool cache_hit(const struct lv_req *req, const char *fp)
{
	char path[PATH_MAX];
	_cleanup_free_ char *txt = NULL;
	struct stat st;

	cache_path(req, path, sizeof(path));
	if (!fp || stat(path, &st) < 0 || time(NULL) - st.st_mtime > CACHE_TTL_S)
		return false;
	txt = util_read_file(path, 4096, NULL);
	return txt && !strcmp(txt, fp);
}

static void cache_store(const struct lv_req *req, const char *fp)
{
	char path[PATH_MAX], dir[PATH_MAX];

	if (!fp)
		return;
	snprintf(dir, sizeof(dir), "%s/cpu-ok", req->root);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return;
	cache_path(req, path, sizeof(path));
	if (!util_write_file(path, fp, 0600, NULL))
		log_debug("cannot keep the CPU verdict in %s", path);
}

static const char *virttype_of(enum mig_accel accel)
{
	return accel == MIG_ACCEL_KVM ? "kvm" : accel == MIG_ACCEL_TCG ? "qemu" : NULL;
}

static bool model_valid(const char *m)
{
	size_t n = m ? strlen(m) : 0;

	return n > 0 && n < 64 &&
	       strspn(m, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			 "0123456789._+-") == n;
}

bool mig_host_cpu_check(const char *model, enum mig_accel accel, const char *cpu_xml,
			const char *root, struct err **errp)
{
	struct lv_req req = { .job = LV_COMPARE, .root = root, .virttype = virttype_of(accel) };
	_cleanup_free_ char *xml = NULL, *text = NULL, *fp = NULL;
	char status;

	if (!model_valid(model))
		return err_set(errp, ERR_INVAL, "invalid CPU model '%s'", model ? model : "");
	if (!req.virttype)
		return err_set(errp, ERR_INVAL,
			       "cannot check CPU model '%s' for accelerator '%s': use kvm or tcg",
			       model, mig_accel_name(accel));
	if (!strcmp(model, "host")) {
		if (accel != MIG_ACCEL_KVM)
			return err_set(errp, ERR_INVAL,
				       "CPU model 'host' (passthrough) needs KVM, not %s",
				       mig_accel_name(accel));
		if (!cpu_xml || !*cpu_xml)
			return err_set(errp, ERR_INVAL,
				       "CPU model 'host' needs the source host's CPU XML");
		req.cpu_xml = cpu_xml;
	} else if (!strcmp(model, "host-model")) {
		req.cpu_xml = cpu_xml && *cpu_xml ? cpu_xml : "<cpu mode='host-model'/>";
	} else {
		if (asprintf(&xml, "<cpu mode='custom' match='exact'>"
				   "<model fallback='forbid'>%s</model></cpu>", model) < 0)
			abort();
		req.cpu_xml = xml;
	}
	fp = fingerprint();
	if (cache_hit(&req, fp)) {
		log_debug("CPU model '%s' under %s: runnable (cached verdict)", model, req.virttype);
		return true;
	}
	if (!root_prepare(root, errp) || !lv_call(&req, &status, &text, errp))
		return false;
	switch (status) {
	case V_OK:
		log_debug("CPU model '%s' under %s: %s", model, req.virttype, text);
		cache_store(&req, fp);
		return true;
	case V_INCOMPATIBLE:
		return err_set(errp, ERR_STATE, "CPU model '%s' is not runnable here: %s", model,
			       text);
	case V_REJECTED:
		return err_set(errp, ERR_INVAL, "cannot check CPU model '%s': %s", model, text);
	default:
		return err_set(errp, ERR_IO, "cannot check CPU model '%s': %s", model, text);
	}
}

char *mig_host_cpu_from_domcaps(const char *domcaps, struct err **errp)
{
	static const char yes[] = "<mode name='host-model' supported='yes'>";
	const char *start = domcaps ? strstr(domcaps, yes) : NULL, *end;
	char *out;

	if (!start) {
		err_set(errp, ERR_NOTFOUND, "libvirt offers no host-model CPU here");
		return NULL;
	}
	start += sizeof(yes) - 1;
	end = strstr(start, "</mode>");
	if (!end) {
		err_set(errp, ERR_PROTO, "unterminated host-model in domain capabilities");
		return NULL;
	}
	while (start < end && (*start == '\n' || *start == ' '))
		start++;
	while (end > start && (end[-1] == '\n' || end[-1] == ' '))
		end--;
	if (asprintf(&out, "<cpu mode='custom' match='exact'>\n  %.*s\n</cpu>\n",
		     (int)(end - start), start) < 0)
		abort();
	return out;
}

char *mig_host_cpu_xml(enum mig_accel accel, const char *root, struct err **errp)
{
	struct lv_req req = { .job = LV_DOMCAPS, .root = root, .virttype = virttype_of(accel) };
	_cleanup_free_ char *text = NULL;
	char status;

	if (!req.virttype) {
		err_set(errp, ERR_INVAL,
			"cannot describe the host CPU for accelerator '%s': use kvm or tcg",
			mig_accel_name(accel));
		return NULL;
	}
	if (!root_prepare(root, errp) || !lv_call(&req, &status, &text, errp))
		return NULL;
	if (status != V_OK) {
		err_set(errp, ERR_IO, "cannot describe the host CPU: %s", text);
		return NULL;
	}
	return mig_host_cpu_from_domcaps(text, errp);
}
