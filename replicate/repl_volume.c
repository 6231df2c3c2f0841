/*
 * repl_volume.c - a volume as its guest sees it (contract in repl.h):
 * raw files are their bytes; qcow2 volumes are read and written through
 * a qemu-nbd child of ours, started with systemd socket activation on a
 * socket only we connect to (its directory is gone once we have). It
 * serves that one client and exits when it goes, and it is killed if we
 * die first (PDEATHSIG: SIGKILL, as qemu-nbd 7.2 loses a SIGTERM that
 * comes while it starts up), so a killed caller leaves no server behind;
 * the next open of the same image may still find the old one holding
 * QEMU's image lock for a moment, hence the retries.
 *
 * Why through QEMU and not our own qcow2 code: QEMU orders its metadata
 * writes (refcounts before L2 entries, flushes between) so that a crash
 * at any instant leaves a consistent image, at worst with leaked
 * clusters; a replica's re-apply after a crash relies on exactly that.
 */
#include "repl.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define QCOW2_MAGIC 0x514649fbu   /* "QFI\xfb" */
#define CHUNK (4u << 20)          /* per NBD request; QEMU allows 32 MiB */
#define OPEN_TRIES 20             /* x 100 ms: an old qemu-nbd letting go */

#define QDEPTH 8                  /* writes in flight (a round trip each otherwise) */

/* A write in flight: its own copy of the data, which libnbd reads until
 * the command completes. */
struct wslot {
	void *buf;
	int64_t cookie;           /* 0: free */
	uint64_t off;
};

struct repl_vol {
	struct nbd_handle *nbd;
	pid_t pid;                /* qemu-nbd */
	char path[4096];
	uint64_t size;
	bool writable;
	bool unsynced;            /* --cache=unsafe: the caller syncs the image */
	struct wslot w[QDEPTH];   /* a ring: head is the oldest in flight */
	unsigned head, n;
};

static uint64_t be64(const uint8_t *b)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

bool repl_vol_size(const char *path, int fd, bool qcow2, uint64_t *size, struct err **errp)
{
	uint8_t h[32];
	struct stat st;
	off_t have;
	ssize_t n;

	if (fstat(fd, &st) < 0)
		return err_set_errno(errp, errno, "cannot stat '%s'", path);
	if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode))
		return err_set(errp, ERR_STATE, "'%s' is not a regular file or block device", path);
	if (!qcow2) {
		have = S_ISBLK(st.st_mode) ? lseek(fd, 0, SEEK_END) : st.st_size;
		if (have < 0)
			return err_set_errno(errp, errno, "cannot size '%s'", path);
		*size = (uint64_t)have;
		return true;
	}
	/* Only the fields every qcow2 version has: magic, version, size. */
	n = pread(fd, h, sizeof(h), 0);
	if (n < 0)
		return err_set_errno(errp, errno, "cannot read '%s'", path);
	if (n < (ssize_t)sizeof(h) || be64(h) >> 32 != QCOW2_MAGIC ||
	    (be64(h) & 0xffffffffu) < 2 || (be64(h) & 0xffffffffu) > 3)
		return err_set(errp, ERR_STATE, "'%s' should be a qcow2 image (by its name) but is not one of version 2 or 3",
			       path);
	*size = be64(h + 24);
	return true;
}

/* Runs argv (no shell) and waits; its stderr is ours. */
static bool run(char *const argv[], struct err **errp)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return err_set_errno(errp, errno, "cannot start %s", argv[0]);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		if (null >= 0)
			dup2(null, STDIN_FILENO);
		execvp(argv[0], argv);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return err_set_errno(errp, errno, "waiting for %s", argv[0]);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return true;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		return err_set(errp, ERR_NOTFOUND, "cannot run %s (is qemu-utils installed?)", argv[0]);
	return err_set(errp, ERR_IO, "%s %s failed (%s %d)", argv[0], argv[1],
		       WIFEXITED(status) ? "exit status" : "signal",
		       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

bool repl_vol_create_qcow2(const char *path, uint64_t size, struct err **errp)
{
	char sz[32];
	char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", "--", (char *)path, sz, NULL };
	int fd;

	if (size % 512)
		return err_set(errp, ERR_INVAL, "a qcow2 image holds whole 512-byte sectors, not %" PRIu64 " bytes",
			       size);
	/* Made here first, exclusively: qemu-img would overwrite a file that
	 * appeared meanwhile (another guest's disk, a replica). */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return errno == EEXIST ? err_set(errp, ERR_CONFLICT, "'%s' exists", path) :
					 err_set_errno(errp, errno, "cannot create '%s'", path);
	close(fd);
	snprintf(sz, sizeof(sz), "%" PRIu64, size);
	if (!run(argv, errp)) {
		unlink(path);
		return false;
	}
	return true;
}

static bool vol_fail(const struct repl_vol *v, struct err **errp, const char *what, uint64_t off)
{
	return err_set(errp, ERR_IO, "cannot %s '%s' at offset %" PRIu64 ": %s", what, v->path, off,
		       nbd_get_error() ? nbd_get_error() : "unknown error");
}

/* Writes v in decimal to buf (async-signal-safe: used after fork). */
static void utoa(char *buf, unsigned long v)
{
	char tmp[24];
	int n = 0;

	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10));
	while (n)
		*buf++ = tmp[--n];
	*buf = 0;
}

extern char **environ;

/* qemu-nbd on a listening socket of ours (systemd socket activation: fd
 * 3, LISTEN_PID, LISTEN_FDS), dying with us (PDEATHSIG): a caller killed
 * before it connected would otherwise leave it waiting for a client
 * forever, holding the image's lock. libnbd's own socket activation
 * cannot set that. Returns the child, connected to v->nbd. */
static pid_t spawn(struct repl_vol *v, char *const argv[], struct err **errp)
{
	char dir[] = "/tmp/vmm-nbd.XXXXXX", sock[64], pidenv[40] = "LISTEN_PID=";
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_free_ char **envp = NULL;
	_cleanup_close_ int lfd = -1, cfd = -1;
	pid_t parent = getpid(), pid = -1;
	size_t ne = 0, k = 0;

	while (environ[ne])
		ne++;
	if (!(envp = calloc(ne + 3, sizeof(*envp)))) {
		err_set(errp, ERR_IO, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < ne; i++)
		if (strncmp(environ[i], "LISTEN_", 7))
			envp[k++] = environ[i];
	envp[k++] = "LISTEN_FDS=1";
	envp[k++] = pidenv;
	if (!mkdtemp(dir)) {
		err_set_errno(errp, errno, "cannot make a directory for qemu-nbd's socket");
		return -1;
	}
	snprintf(sock, sizeof(sock), "%s/nbd.sock", dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	/* Connected at once (the backlog holds it until qemu-nbd accepts), so
	 * the socket's name and directory go before anything can block: a
	 * caller killed from here on leaves nothing in /tmp. */
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || cfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(lfd, 1) < 0 || connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err_set_errno(errp, errno, "cannot connect to '%s'", sock);
		goto out;
	}
	unlink(sock);
	rmdir(dir);
	pid = fork();
	if (pid < 0) {
		err_set_errno(errp, errno, "cannot start qemu-nbd");
		goto out;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(126);
		if (null >= 0)
			dup2(null, STDIN_FILENO);
		if (lfd == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(lfd, 3) < 0)
			_exit(126);
		utoa(pidenv + strlen("LISTEN_PID="), (unsigned long)getpid());
		execvpe(argv[0], argv, envp);
		_exit(127);
	}
	close(TAKE_FD(lfd));
	if (nbd_connect_socket(v->nbd, cfd) < 0) {
		vol_fail(v, errp, "open (qemu-nbd)", 0);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -1;
	}
	TAKE_FD(cfd); /* libnbd's now */
	return pid;
out:
	unlink(sock);
	rmdir(dir);
	return pid;
}

/* qemu-nbd exits once we disconnect; one that does not is stopped. */
/* Waits for qemu-nbd to exit (3 s, then TERM, 5 s, then KILL); true if
 * it exited by itself with status 0 (it closed the image: wrote its
 * metadata out). */
static bool reap(pid_t pid)
{
	int st = 0;

	for (int i = 0; i < 500; i++) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return i <= 300 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
		if (r < 0 && errno != EINTR)
			return false;
		if (i == 300)
			kill(pid, SIGTERM);
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return false;
}

static struct repl_vol *vol_open(const char *path, bool writable, bool unsynced,
				 struct err **errp)
{
	/* unsafe: QEMU's flushes do nothing, so neither ours nor qemu-nbd's
	 * close waits for the disk; the caller fsyncs the image itself. */
	char *argv[9] = { "qemu-nbd", "-f", "qcow2",
			  unsynced ? "--cache=unsafe" : "--cache=writeback", "--discard=unmap" };
	_cleanup_close_ int fd = -1;
	struct repl_vol *v;
	unsigned a = 5;
	uint64_t hsize;
	int64_t size;

	if (!writable)
		argv[a++] = "--read-only";
	argv[a++] = "--";
	argv[a++] = (char *)path;
	argv[a] = NULL;
	if (strlen(path) >= sizeof(v->path)) {
		err_set(errp, ERR_INVAL, "invalid volume path '%.64s...': too long", path);
		return NULL;
	}
	/* Checked here first: one clear error instead of qemu-nbd's retried. */
	fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (fd < 0) {
		err_set_errno(errp, errno, "cannot open '%s'", path);
		return NULL;
	}
	if (!repl_vol_size(path, fd, true, &hsize, errp))
		return NULL;
	if (!(v = calloc(1, sizeof(*v)))) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	snprintf(v->path, sizeof(v->path), "%s", path);
	v->writable = writable;
	v->unsynced = unsynced;
	v->pid = -1;
	for (int tries = 0;; tries++) {
		struct err *e = NULL;

		if (!(v->nbd = nbd_create())) {
			vol_fail(v, errp, "open", 0);
			goto fail;
		}
		if ((v->pid = spawn(v, argv, &e)) > 0)
			break;
		/* Most likely the qemu-nbd of a killed predecessor, still closing
		 * the image (QEMU's image lock); anything else fails the same way
		 * each time and is reported after the last try. */
		nbd_close(v->nbd);
		v->nbd = NULL;
		if (tries + 1 == OPEN_TRIES) {
			err_propagate(errp, &e);
			goto fail;
		}
		err_free(e);
		usleep(100000);
	}
	size = nbd_get_size(v->nbd);
	if (size < 0) {
		vol_fail(v, errp, "size", 0);
		goto fail;
	}
	if (writable && nbd_is_read_only(v->nbd) != 0) {
		err_set(errp, ERR_IO, "qemu-nbd serves '%s' read-only", path);
		goto fail;
	}
	v->size = (uint64_t)size;
	return v;
fail:
	if (v->nbd)
		nbd_close(v->nbd);
	if (v->pid > 0)
		reap(v->pid);
	free(v);
	return NULL;
}

struct repl_vol *repl_vol_open(const char *path, bool writable, struct err **errp)
{
	return vol_open(path, writable, false, errp);
}

struct repl_vol *repl_vol_open_unsynced(const char *path, struct err **errp)
{
	return vol_open(path, true, true, errp);
}

uint64_t repl_vol_get_size(const struct repl_vol *v)
{
	return v->size;
}

/* Waits for the oldest write in flight; false (and *errp) if it failed. */
static bool retire(struct repl_vol *v, struct err **errp)
{
	struct wslot *w = &v->w[v->head];
	int r;

	while ((r = nbd_aio_command_completed(v->nbd, (uint64_t)w->cookie)) == 0)
		if (nbd_poll(v->nbd, -1) < 0) {
			r = -1;
			break;
		}
	w->cookie = 0;
	v->head = (v->head + 1) % QDEPTH;
	v->n--;
	return r < 0 ? vol_fail(v, errp, "write", w->off) : true;
}

/* Every write in flight done; the first failure is kept. */
static bool drain(struct repl_vol *v, struct err **errp)
{
	bool ok = true;

	while (v->n)
		ok = retire(v, ok ? errp : NULL) && ok;
	return ok;
}

bool repl_vol_read(void *vol, void *buf, size_t len, uint64_t off, struct err **errp)
{
	struct repl_vol *v = vol;

	if (!drain(v, errp))
		return false;
	if (off > v->size || len > v->size - off)
		return err_set(errp, ERR_IO, "read of '%s' past its end (%" PRIu64 " bytes at %" PRIu64 ")",
			       v->path, (uint64_t)len, off);
	for (size_t done = 0; done < len;) {
		size_t n = len - done < CHUNK ? len - done : CHUNK;

		if (nbd_pread(v->nbd, (char *)buf + done, n, off + done, 0) < 0)
			return vol_fail(v, errp, "read", off + done);
		done += n;
	}
	return true;
}

bool repl_vol_write(struct repl_vol *v, const void *buf, size_t len, uint64_t off,
		    struct err **errp)
{
	if (off > v->size || len > v->size - off)
		return err_set(errp, ERR_IO, "write to '%s' past its end (%" PRIu64 " bytes at %" PRIu64 ")",
			       v->path, (uint64_t)len, off);
	for (size_t done = 0; done < len;) {
		size_t n = len - done < CHUNK ? len - done : CHUNK;
		struct wslot *w;

		if (v->n == QDEPTH && !retire(v, errp))
			return false;
		w = &v->w[(v->head + v->n) % QDEPTH];
		if (!w->buf && !(w->buf = malloc(CHUNK)))
			return err_set(errp, ERR_IO, "out of memory writing '%s'", v->path);
		memcpy(w->buf, (const char *)buf + done, n);
		w->off = off + done;
		w->cookie = nbd_aio_pwrite(v->nbd, w->buf, n, off + done, NBD_NULL_COMPLETION, 0);
		if (w->cookie < 0) {
			w->cookie = 0;
			return vol_fail(v, errp, "write", off + done);
		}
		v->n++;
		done += n;
	}
	return true;
}

bool repl_vol_zero(struct repl_vol *v, uint64_t off, uint64_t len, struct err **errp)
{
	if (off > v->size || len > v->size - off)
		return err_set(errp, ERR_IO, "zeroing '%s' past its end (%" PRIu64 " bytes at %" PRIu64 ")",
			       v->path, len, off);
	if (!drain(v, errp))
		return false;
	/* No NO_HOLE flag: QEMU may drop the clusters, which then read as zeros. */
	for (uint64_t done = 0; done < len;) {
		uint64_t n = len - done < (1u << 30) ? len - done : (1u << 30);

		if (nbd_zero(v->nbd, n, off + done, 0) < 0)
			return vol_fail(v, errp, "zero", off + done);
		done += n;
	}
	return true;
}

bool repl_vol_close(struct repl_vol *v, struct err **errp)
{
	bool ok = true;

	if (!v)
		return true;
	/* The flush makes the writes durable (QEMU fdatasyncs the image);
	 * then the disconnect lets qemu-nbd close it and exit. */
	ok = drain(v, errp);
	if (ok && v->writable && !v->unsynced && nbd_flush(v->nbd, 0) < 0)
		ok = vol_fail(v, errp, "flush", 0);
	nbd_shutdown(v->nbd, 0);
	nbd_close(v->nbd);
	/* Unsynced, nothing was flushed: only an image qemu-nbd closed by
	 * itself holds what was written. */
	if (!reap(v->pid) && v->unsynced && ok)
		ok = err_set(errp, ERR_CHILD, "qemu-nbd serving '%s' did not close it cleanly",
			     v->path);
	for (unsigned i = 0; i < QDEPTH; i++)
		free(v->w[i].buf);
	free(v);
	return ok;
}
