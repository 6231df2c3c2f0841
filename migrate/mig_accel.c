/*
 * mig_accel.c - choose KVM or TCG.
 *
 * Why a real probe: on nested-virtualisation hosts such as a PVM guest,
 * /dev/kvm opens and QEMU reports KVM enabled, yet a normal kernel hangs
 * or dies with "KVM internal error ... emulation failure". The only
 * reliable test is to boot a small guest under KVM and see it reach
 * userspace. The verdict is cached per host kernel release because the
 * probe costs up to its timeout.
 */
#include "mig.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const accel_names[] = {
	[MIG_ACCEL_AUTO] = "auto",
	[MIG_ACCEL_KVM] = "kvm",
	[MIG_ACCEL_TCG] = "tcg",
};
_Static_assert(ARRAY_SIZE(accel_names) == MIG_ACCEL_MAX, "accel_names");

const char *mig_accel_name(enum mig_accel a)
{
	return (unsigned)a < MIG_ACCEL_MAX ? accel_names[a] : "?";
}

bool mig_accel_parse(const char *s, enum mig_accel *out, struct err **errp)
{
	for (size_t i = 0; i < ARRAY_SIZE(accel_names); i++)
		if (s && !strcmp(s, accel_names[i])) {
			*out = (enum mig_accel)i;
			return true;
		}
	return err_set(errp, ERR_INVAL, "invalid accelerator '%s': use auto, kvm or tcg",
		       s ? s : "");
}

static bool kvm_openable(struct err **errp)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return err_set_errno(errp, errno, "cannot use KVM: /dev/kvm");
	close(fd);
	return true;
}

/* Logs the last line QEMU wrote, so a failed probe says why. */
static void log_probe_stderr(const char *path)
{
	_cleanup_free_ char *txt = util_read_file(path, 1 << 16, NULL);
	char *end, *start;

	if (!txt)
		return;
	end = txt + strlen(txt);
	while (end > txt && (end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	if (end == txt)
		return;
	start = strrchr(txt, '\n');
	log_info("KVM probe: %s", start ? start + 1 : txt);
}

/* Boots the probe guest under KVM; true if it reached userspace in time. */
static bool run_probe(const struct mig_probe *p)
{
	char tmpl[] = "/tmp/vmm-kvm-probe-XXXXXX";
	_cleanup_free_ char *serial = NULL, *chardev = NULL, *out = NULL, *errlog = NULL;
	int64_t deadline;
	bool ok = false;
	pid_t pid;
	int status;

	if (!mkdtemp(tmpl))
		return false;
	if (asprintf(&serial, "%s/serial.log", tmpl) < 0 ||
	    asprintf(&errlog, "%s/qemu.log", tmpl) < 0 ||
	    asprintf(&chardev, "file,id=s0,path=%s", serial) < 0)
		goto out;
	pid = fork();
	if (pid < 0)
		goto out;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		int log = open(errlog, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
		}
		if (log >= 0)
			dup2(log, 2);
		execlp(p->qemu, p->qemu, "-machine", "pc", "-accel", "kvm", "-cpu", "host",
		       "-nodefaults", "-display", "none", "-m", "256M", "-kernel",
		       p->kernel, "-initrd", p->initrd, "-append",
		       "console=ttyS0 panic=-1 quiet vmtest.mode=probe", "-chardev",
		       chardev, "-serial", "chardev:s0", "-no-reboot", (char *)NULL);
		_exit(127);
	}
	deadline = util_now_ms() + (p->timeout_ms > 0 ? p->timeout_ms : 5000);
	while (util_now_ms() < deadline) {
		free(out);
		out = util_read_file(serial, 1 << 20, NULL);
		if (out && strstr(out, "VMTEST READY mode=probe")) {
			ok = true;
			break;
		}
		if (waitpid(pid, &status, WNOHANG) == pid) {
			pid = -1;
			break;
		}
		usleep(50000);
	}
	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	if (!ok)
		log_probe_stderr(errlog);
out:
	if (serial)
		unlink(serial);
	if (errlog)
		unlink(errlog);
	rmdir(tmpl);
	return ok;
}

bool mig_accel_resolve(enum mig_accel want, const struct mig_probe *probe,
		       enum mig_accel *out, const char **why, struct err **errp)
{
	_cleanup_free_ char *cache = NULL, *verdict = NULL;
	struct utsname u;
	struct stat st;
	bool usable;

	switch (want) {
	case MIG_ACCEL_TCG:
		*out = MIG_ACCEL_TCG;
		*why = "TCG requested";
		return true;
	case MIG_ACCEL_KVM:
		if (!kvm_openable(errp))
			return false;
		*out = MIG_ACCEL_KVM;
		*why = "KVM requested";
		return true;
	case MIG_ACCEL_AUTO:
	case MIG_ACCEL_MAX:
		break;
	}
	if (!kvm_openable(NULL)) {
		*out = MIG_ACCEL_TCG;
		*why = "no usable /dev/kvm";
		return true;
	}
	if (!probe || !probe->kernel || !probe->initrd || stat(probe->kernel, &st) < 0 ||
	    stat(probe->initrd, &st) < 0) {
		/* Without a probe image trust /dev/kvm, as every other tool does. */
		*out = MIG_ACCEL_KVM;
		*why = "/dev/kvm present (no probe image to test it)";
		return true;
	}
	uname(&u);
	if (probe->cache_dir && util_mkdir_p(probe->cache_dir, 0755, NULL) &&
	    asprintf(&cache, "%s/kvm-probe-%s", probe->cache_dir, u.release) >= 0)
		verdict = util_read_file(cache, 64, NULL);
	if (verdict) {
		usable = !strncmp(verdict, "usable", 6);
	} else {
		log_info("probing whether KVM can boot a guest on this host ...");
		usable = run_probe(probe);
		if (cache)
			util_write_file(cache, usable ? "usable\n" : "unusable\n", 0644, NULL);
	}
	*out = usable ? MIG_ACCEL_KVM : MIG_ACCEL_TCG;
	*why = usable ? "KVM probe guest booted" :
			"/dev/kvm opens but the KVM probe guest did not boot (nested PVM?)";
	return true;
}
