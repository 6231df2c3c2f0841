/*
 * test_ssh.c - the SSH transport against a real OpenSSH sshd that the
 * group fixture starts on 127.0.0.1 with keys made for the run: argv
 * reaches the remote command verbatim (no shell injection), exit status,
 * signals and stderr; host key pinning; public key authentication;
 * forwards (64 MiB with checksums, half close both ways, many at once over
 * several sessions, refusals); closing with live channels; connect and
 * handshake timeouts; a far end that resets mid-stream; and a connection
 * whose sshd is killed mid-transfer. Loopback only; the far ends of
 * forwards are listeners of this process.
 *
 * Debugging: TEST_FILTER=test_name runs matching tests, VMM_LOG=debug shows
 * the pump, TEST_SSH_KEEP=1 keeps the temp dir (sshd_config, sshd.log).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "transport/tp_ssh.h"

#define SSHD "/usr/sbin/sshd"
#define MIB (1u << 20)
#define CHUNK (256u << 10)
#define FNV0 0xcbf29ce484222325ull

extern char **environ;

/* The fixture: one sshd for the whole group. */
static struct {
	char dir[32];
	char host_key[64], other_key[64], client_key[64], stranger_key[64];
	char cfg[64], log[64];
	char *host_pub;   /* "ssh-ed25519 AAAA..." of host_key: the pinned key */
	char *host_line;  /* host_key.pub as ssh-keygen wrote it (with comment) */
	char *other_pub;  /* a host key the server does not have */
	char host_fp[64]; /* "SHA256:..." of host_key, as ssh-keygen -l prints it */
	unsigned port;
	pid_t pid;
} F = { .pid = -1 };

/* ---- small helpers ---------------------------------------------------------- */

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Bytes [off, off + n) of the pseudo-random stream `seed`. */
static void pattern(uint64_t seed, uint64_t off, unsigned char *p, size_t n)
{
	while (n) {
		uint64_t w = mix(seed ^ (off >> 3));

		for (unsigned k = off & 7; k < 8 && n; k++, n--, off++)
			*p++ = (unsigned char)(w >> (k * 8));
	}
}

static uint64_t pattern_fnv(uint64_t seed, uint64_t len, uint64_t h)
{
	unsigned char *b = malloc(CHUNK);

	assert_non_null(b);
	for (uint64_t off = 0; off < len; off += CHUNK) {
		size_t n = len - off < CHUNK ? (size_t)(len - off) : CHUNK;

		pattern(seed, off, b, n);
		h = fnv(h, b, n);
	}
	free(b);
	return h;
}

static bool send_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t r = send(fd, c, n, MSG_NOSIGNAL);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		c += r;
		n -= (size_t)r;
	}
	return true;
}

/* Reads fd to its EOF within timeout_ms; the bytes, NUL-terminated. */
static char *read_all(int fd, int timeout_ms, size_t *len)
{
	int64_t deadline = util_now_ms() + timeout_ms;
	size_t cap = 4096, n = 0;
	char *b = malloc(cap);

	assert_non_null(b);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = (int)(deadline - util_now_ms());
		ssize_t r;

		if (left <= 0 || poll(&p, 1, left) == 0)
			fail_msg("no EOF within %d ms (%zu bytes read)", timeout_ms, n);
		r = read(fd, b + n, cap - n - 1);
		if (r == 0)
			break;
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			fail_msg("read: %s", strerror(errno));
		}
		n += (size_t)r;
		if (cap - n < 2) {
			cap *= 2;
			b = realloc(b, cap);
			assert_non_null(b);
		}
	}
	b[n] = '\0';
	if (len)
		*len = n;
	return b;
}

/* What the next read of fd says within timeout_ms: bytes, 0 (EOF) or
 * -errno; fails the test if it says nothing. */
#define read_result(fd, ms) read_result_at(fd, ms, __LINE__)
static long read_result_at(int fd, int timeout_ms, int line)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char c[256];
	ssize_t r;

	if (poll(&p, 1, timeout_ms) != 1)
		fail_msg("line %d: fd %d stayed silent for %d ms", line, fd, timeout_ms);
	r = recv(fd, c, sizeof(c), MSG_DONTWAIT);
	return r < 0 ? -errno : r;
}

static void assert_err(struct err *e, enum err_code code, const char *part)
{
	if (!e)
		fail_msg("no error, expected one with \"%s\"", part);
	if (!strstr(e->msg, part))
		fail_msg("error \"%s\" lacks \"%s\"", e->msg, part);
	if (e->code != code)
		fail_msg("error \"%s\" has code %s, expected %s", e->msg, err_code_name(e->code),
			 err_code_name(code));
}

/* ---- sockets on loopback ------------------------------------------------------ */

static int listen_lo(int backlog, unsigned *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, l), 0);
	assert_int_equal(listen(fd, backlog), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

/* A port nobody listens on (bound and released at once). */
static unsigned free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	unsigned port = 0;

	if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, l) &&
	    !getsockname(fd, (struct sockaddr *)&a, &l))
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static int connect_lo(unsigned port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- the far end of forwards: a listener of this process ------------------------ */

enum far_mode {
	FAR_SINK, /* reads to EOF, then replies "LEN FNV\n" + reply_len bytes */
	FAR_ECHO, /* sends back what it reads, half-closes after the EOF */
	FAR_GREET, /* sends reply_len bytes and half-closes first, then reads */
	FAR_ABORT, /* reads reply_len bytes, then resets the connection */
};

#define FAR_MAX 16

struct far {
	enum far_mode mode;
	uint64_t reply_seed;
	size_t reply_len;
	int lfd;
	unsigned port;
	pthread_t acceptor;
	pthread_mutex_t mu;
	pthread_t conns[FAR_MAX];
	int fds[FAR_MAX];
	unsigned nconns;
	unsigned ndone;    /* connection threads finished */
	unsigned eofs;     /* connections whose EOF arrived */
	uint64_t bytes_in;
	uint64_t fnv_in;   /* of the last connection that ended */
	int err;           /* errno of the last connection that failed */
};

struct far_conn {
	struct far *f;
	int fd;
	unsigned idx;
};

static void *far_conn_run(void *arg)
{
	struct far_conn *fc = arg;
	struct far *f = fc->f;
	unsigned char *b = malloc(CHUNK);
	uint64_t n = 0, h = FNV0;
	bool eof = false;

	for (size_t off = 0; b && f->mode == FAR_GREET && off < f->reply_len; off += CHUNK) {
		size_t k = f->reply_len - off < CHUNK ? f->reply_len - off : CHUNK;

		pattern(f->reply_seed, off, b, k);
		if (!send_all(fc->fd, b, k))
			break;
	}
	if (f->mode == FAR_GREET)
		shutdown(fc->fd, SHUT_WR);
	for (;;) {
		ssize_t r = b ? recv(fc->fd, b, CHUNK, 0) : -1;

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			eof = r == 0;
			if (r < 0)
				f->err = errno;
			break;
		}
		n += (uint64_t)r;
		if (f->mode == FAR_ABORT && n >= f->reply_len)
			break;
		if (f->mode == FAR_ECHO) {
			if (!send_all(fc->fd, b, (size_t)r))
				break;
		} else {
			h = fnv(h, b, (size_t)r);
		}
	}
	pthread_mutex_lock(&f->mu);
	f->bytes_in += n;
	f->fnv_in = h;
	f->eofs += eof;
	pthread_mutex_unlock(&f->mu);
	if (eof && f->mode == FAR_SINK) {
		char hdr[64];
		int hl = snprintf(hdr, sizeof(hdr), "%llu %016llx\n", (unsigned long long)n,
				  (unsigned long long)h);
		bool ok = send_all(fc->fd, hdr, (size_t)hl);

		for (size_t off = 0; ok && off < f->reply_len; off += CHUNK) {
			size_t k = f->reply_len - off < CHUNK ? f->reply_len - off : CHUNK;

			pattern(f->reply_seed, off, b, k);
			ok = send_all(fc->fd, b, k);
		}
	}
	pthread_mutex_lock(&f->mu);
	if (f->mode == FAR_ABORT) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(fc->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fc->fd);
		f->fds[fc->idx] = -1;
	} else {
		shutdown(fc->fd, SHUT_WR); /* far_stop closes it */
	}
	f->ndone++;
	pthread_mutex_unlock(&f->mu);
	free(b);
	free(fc);
	return NULL;
}

static void *far_accept(void *arg)
{
	struct far *f = arg;

	for (;;) {
		int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
		struct far_conn *fc;

		if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
			continue;
		if (fd < 0)
			break; /* far_stop shut the listener down */
		pthread_mutex_lock(&f->mu);
		fc = f->nconns < FAR_MAX ? malloc(sizeof(*fc)) : NULL;
		if (fc) {
			*fc = (struct far_conn){ .f = f, .fd = fd, .idx = f->nconns };
			f->fds[f->nconns] = fd;
			if (pthread_create(&f->conns[f->nconns], NULL, far_conn_run, fc)) {
				free(fc);
				fc = NULL;
			} else {
				f->nconns++;
			}
		}
		pthread_mutex_unlock(&f->mu);
		if (!fc)
			close(fd);
	}
	return NULL;
}

/* On the heap: a test that fails leaves its threads running, not a dangling
 * stack frame. far_stop() joins them; the caller frees. */
static struct far *far_start(enum far_mode mode, uint64_t reply_seed, size_t reply_len)
{
	struct far *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	*f = (struct far){ .mode = mode, .reply_seed = reply_seed, .reply_len = reply_len };
	pthread_mutex_init(&f->mu, NULL);
	f->lfd = listen_lo(16, &f->port);
	assert_int_equal(pthread_create(&f->acceptor, NULL, far_accept, f), 0);
	return f;
}

static void far_stop(struct far *f)
{
	shutdown(f->lfd, SHUT_RDWR); /* wakes accept() */
	pthread_join(f->acceptor, NULL);
	close(f->lfd);
	/* The channel may end on our side before sshd has written all to
	 * us: give the connections time to read to their EOF. */
	for (int64_t deadline = util_now_ms() + 3000; util_now_ms() < deadline; sleep_ms(2)) {
		pthread_mutex_lock(&f->mu);
		bool all = f->ndone == f->nconns;
		pthread_mutex_unlock(&f->mu);
		if (all)
			break;
	}
	for (unsigned i = 0; i < f->nconns; i++) {
		int fd;

		pthread_mutex_lock(&f->mu);
		fd = f->fds[i];
		if (fd >= 0)
			shutdown(fd, SHUT_RDWR); /* a test that failed may leave one open */
		pthread_mutex_unlock(&f->mu);
		pthread_join(f->conns[i], NULL);
		if (fd >= 0)
			close(fd);
	}
	pthread_mutex_destroy(&f->mu);
}

/* ---- the near end: sends a pattern, half-closes, reads to EOF ------------------- */

struct xfer {
	int fd;
	uint64_t seed, len; /* what to send before SHUT_WR */
	int timeout_ms;
	/* results */
	uint64_t sent, out_fnv;
	uint64_t got, in_fnv;
	char head[64];      /* the first bytes received */
	bool in_eof;        /* the peer's EOF arrived */
	int err;            /* errno of the first failure, 0 if none */
	pthread_t t;
};

static void xfer_run(struct xfer *x)
{
	unsigned char *ob = malloc(CHUNK), *ib = malloc(CHUNK);
	int64_t deadline = util_now_ms() + (x->timeout_ms ? x->timeout_ms : 20000);
	uint64_t gen = 0;
	size_t ooff = 0, olen = 0;
	bool shut = false;

	x->out_fnv = x->in_fnv = FNV0;
	x->sent = x->got = 0;
	if (!ob || !ib || fcntl(x->fd, F_SETFL, fcntl(x->fd, F_GETFL) | O_NONBLOCK) < 0)
		x->err = ENOMEM;
	/* An EOF does not stop the sending: the peer may only have half-closed. */
	while (!(x->in_eof && shut) && !x->err) {
		struct pollfd p = { .fd = x->fd, .events = (x->in_eof ? 0 : POLLIN) |
							  (shut ? 0 : POLLOUT) };
		int left = (int)(deadline - util_now_ms());

		if (left <= 0) {
			x->err = ETIMEDOUT;
			break;
		}
		if (poll(&p, 1, left) < 0) {
			if (errno != EINTR)
				x->err = errno;
			continue;
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = recv(x->fd, ib, CHUNK, MSG_DONTWAIT);

			if (r > 0) {
				if (x->got < sizeof(x->head) - 1)
					memcpy(x->head + x->got, ib,
					       (size_t)r < sizeof(x->head) - 1 - x->got
						       ? (size_t)r
						       : sizeof(x->head) - 1 - x->got);
				x->in_fnv = fnv(x->in_fnv, ib, (size_t)r);
				x->got += (uint64_t)r;
			} else if (r == 0) {
				x->in_eof = true;
			} else if (errno != EAGAIN && errno != EINTR) {
				x->err = errno;
			}
		}
		while (!shut && !x->err && (p.revents & POLLOUT)) {
			ssize_t r;

			if (ooff == olen) {
				if (gen == x->len) {
					shutdown(x->fd, SHUT_WR);
					shut = true;
					break;
				}
				olen = x->len - gen < CHUNK ? (size_t)(x->len - gen) : CHUNK;
				ooff = 0;
				pattern(x->seed, gen, ob, olen);
				x->out_fnv = fnv(x->out_fnv, ob, olen);
				gen += olen;
			}
			r = send(x->fd, ob + ooff, olen - ooff, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (r < 0) {
				if (errno != EAGAIN && errno != EINTR)
					x->err = errno;
				break;
			}
			ooff += (size_t)r;
			x->sent += (uint64_t)r;
		}
	}
	free(ob);
	free(ib);
}

static void *xfer_thread(void *arg)
{
	xfer_run(arg);
	return NULL;
}

/* The reply a FAR_SINK owes x: "LEN FNV\n" and its pattern. */
static void assert_sink_reply(const struct xfer *x, const struct far *f)
{
	char hdr[64];
	int hl = snprintf(hdr, sizeof(hdr), "%llu %016llx\n", (unsigned long long)x->len,
			  (unsigned long long)x->out_fnv);

	if (x->err)
		fail_msg("transfer failed: %s", strerror(x->err));
	assert_true(x->in_eof);
	assert_int_equal(x->sent, x->len);
	assert_int_equal(x->got, (uint64_t)hl + f->reply_len);
	assert_memory_equal(x->head, hdr, (size_t)hl);
	assert_int_equal(x->in_fnv,
			 pattern_fnv(f->reply_seed, f->reply_len, fnv(FNV0, hdr, (size_t)hl)));
}

static void assert_echoed(const struct xfer *x)
{
	if (x->err)
		fail_msg("transfer failed: %s", strerror(x->err));
	assert_true(x->in_eof);
	assert_int_equal(x->sent, x->len);
	assert_int_equal(x->got, x->len);
	assert_int_equal(x->in_fnv, x->out_fnv);
}

/* ---- sshd --------------------------------------------------------------------- */

static int run(const char *const argv[])
{
	pid_t pid;
	int st;

	if (posix_spawnp(&pid, argv[0], NULL, NULL, (char *const *)argv, environ))
		return -1;
	if (waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool keygen(const char *path)
{
	const char *argv[] = { "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test_ssh",
			       "-f", path, NULL };

	return run(argv) == 0;
}

/* "TYPE BASE64" of a .pub file, parsed here rather than by the code under test. */
static char *pub_words(const char *key)
{
	char path[96], line[512], *type, *b64, *out = NULL;
	FILE *f;

	snprintf(path, sizeof(path), "%s.pub", key);
	f = fopen(path, "r");
	if (!f)
		return NULL;
	if (fgets(line, sizeof(line), f) && (type = strtok(line, " \n")) &&
	    (b64 = strtok(NULL, " \n")) && asprintf(&out, "%s %s", type, b64) < 0)
		out = NULL;
	fclose(f);
	return out;
}

static bool fingerprint(const char *key, char *out, size_t cap)
{
	char cmd[160], line[256], *fp;
	FILE *p;
	bool ok = false;

	snprintf(cmd, sizeof(cmd), "ssh-keygen -l -E sha256 -f %s.pub", key);
	p = popen(cmd, "r");
	if (!p)
		return false;
	if (fgets(line, sizeof(line), p) && strtok(line, " ") && (fp = strtok(NULL, " ")) &&
	    !strncmp(fp, "SHA256:", 7) && strlen(fp) < cap) {
		strcpy(out, fp);
		ok = true;
	}
	return pclose(p) == 0 && ok;
}

/* True once sshd on port greets with its banner. */
static bool sshd_greets(unsigned port)
{
	char b[64] = "";
	int fd = connect_lo(port);
	struct pollfd p = { .fd = fd, .events = POLLIN };
	bool ok = false;

	if (fd < 0)
		return false;
	if (poll(&p, 1, 1000) == 1 && recv(fd, b, sizeof(b) - 1, 0) > 0)
		ok = !strncmp(b, "SSH-2.0-", 8);
	close(fd);
	return ok;
}

static void print_log(void)
{
	char *text = util_read_file(F.log, 64 << 10, NULL);

	print_error("sshd log:\n%s\n", text ? text : "(none)");
	free(text);
}

static bool sshd_start(void)
{
	int64_t deadline;
	FILE *f;
	pid_t pid, parent;

	F.port = free_port();
	f = fopen(F.cfg, "w");
	if (!f || !F.port)
		return false;
	fprintf(f,
		"ListenAddress 127.0.0.1\n"
		"Port %u\n"
		"HostKey %s\n"
		"AuthorizedKeysFile %s/authorized_keys\n"
		"PermitRootLogin prohibit-password\n"
		"PubkeyAuthentication yes\n"
		"PasswordAuthentication no\n"
		"KbdInteractiveAuthentication no\n"
		"UsePAM no\n"
		"PidFile %s/sshd.pid\n"
		"StrictModes no\n"
		"AllowTcpForwarding yes\n"
		"LogLevel VERBOSE\n"
		/* bash reads ~/.bashrc when sshd runs it, unless it is not
		 * the top-level shell: root's rc files here are not part
		 * of the test (and may take shared locks). */
		"SetEnv SHLVL=1\n",
		F.port, F.host_key, F.dir, F.dir);
	if (fclose(f))
		return false;
	parent = getpid();
	pid = fork();
	if (pid < 0)
		return false;
	if (pid == 0) {
		int log = open(F.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);

		/* Its own process group: nothing it signals reaches us. It
		 * ends with us, also if we crash before the teardown. */
		setpgid(0, 0);
		if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
			_exit(125);
		if (log < 0 || nul < 0 || dup2(nul, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
			_exit(126);
		execl(SSHD, SSHD, "-D", "-e", "-f", F.cfg, (char *)NULL);
		_exit(127);
	}
	F.pid = pid;
	deadline = util_now_ms() + 5000;
	while (util_now_ms() < deadline) {
		int st;

		if (waitpid(pid, &st, WNOHANG) == pid) {
			F.pid = -1;
			print_error("sshd exited with status %d\n", st);
			print_log();
			return false;
		}
		if (sshd_greets(F.port))
			return true;
		sleep_ms(10);
	}
	print_log();
	return false;
}

/* Stops the sshd this fixture started: that pid only. */
static void sshd_stop(void)
{
	int64_t deadline = util_now_ms() + 3000;

	if (F.pid <= 0)
		return;
	kill(F.pid, SIGTERM);
	while (waitpid(F.pid, NULL, WNOHANG) == 0) {
		if (util_now_ms() > deadline) {
			kill(F.pid, SIGKILL);
			waitpid(F.pid, NULL, 0);
			break;
		}
		sleep_ms(5);
	}
	F.pid = -1;
}

static pid_t ppid_of(pid_t pid)
{
	char path[64], buf[512], *p;
	int fd, ppid = -1;
	ssize_t n;
	char st;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	p = strrchr(buf, ')'); /* the command name may hold anything */
	if (!p || sscanf(p + 1, " %c %d", &st, &ppid) != 2)
		return -1;
	return ppid;
}

/* SIGKILLs the sshd processes below root (not root itself): the servers of
 * its connections. It stops them first, scanning until no new one appears,
 * so that none forks away. The users' commands are left alone: they see
 * their pipes close and end by themselves (killing a shell amid its rc
 * files may leave their locks behind). Returns how many it killed. */
static size_t kill_sshd_children(pid_t root)
{
	pid_t tree[256], doomed[256];
	size_t nt = 0, nd = 0;
	bool grew;

	do {
		DIR *d = opendir("/proc");
		struct dirent *de;

		grew = false;
		assert_non_null(d);
		while ((de = readdir(d)) && nt < ARRAY_SIZE(tree)) {
			pid_t pid = (pid_t)atoi(de->d_name), pp;
			bool below = false, known = false;
			char exe[64], path[64];
			ssize_t n;

			if (pid <= 0)
				continue;
			pp = ppid_of(pid);
			for (size_t i = 0; i < nt; i++) {
				known |= tree[i] == pid;
				below |= tree[i] == pp;
			}
			if (known || (pp != root && !below))
				continue;
			tree[nt++] = pid;
			grew = true;
			snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
			n = readlink(path, exe, sizeof(exe) - 1);
			if (n > 0 && (size_t)n == strlen(SSHD) && !memcmp(exe, SSHD, (size_t)n)) {
				kill(pid, SIGSTOP);
				doomed[nd++] = pid;
			}
		}
		closedir(d);
	} while (grew);
	for (size_t i = 0; i < nd; i++)
		kill(doomed[i], SIGKILL);
	return nd;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	sshd_stop();
	if (F.dir[0] && !getenv("TEST_SSH_KEEP"))
		nftw(F.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(F.host_pub);
	free(F.host_line);
	free(F.other_pub);
	return 0;
}

static int group_setup(void **state)
{
	char *pub, path[96];
	struct err *e = NULL;

	(void)state;
	if (access(SSHD, X_OK)) {
		print_error("%s: %s\n", SSHD, strerror(errno));
		return -1;
	}
	/* sshd's privilege separation directory. */
	if (mkdir("/run/sshd", 0755) < 0 && errno != EEXIST) {
		print_error("mkdir /run/sshd: %s\n", strerror(errno));
		return -1;
	}
	strcpy(F.dir, "/tmp/test_ssh.XXXXXX");
	if (!mkdtemp(F.dir)) {
		F.dir[0] = '\0';
		return -1;
	}
	snprintf(F.host_key, sizeof(F.host_key), "%s/host_key", F.dir);
	snprintf(F.other_key, sizeof(F.other_key), "%s/other_host_key", F.dir);
	snprintf(F.client_key, sizeof(F.client_key), "%s/client_key", F.dir);
	snprintf(F.stranger_key, sizeof(F.stranger_key), "%s/stranger_key", F.dir);
	snprintf(F.cfg, sizeof(F.cfg), "%s/sshd_config", F.dir);
	snprintf(F.log, sizeof(F.log), "%s/sshd.log", F.dir);
	if (!keygen(F.host_key) || !keygen(F.other_key) || !keygen(F.client_key) ||
	    !keygen(F.stranger_key)) {
		print_error("ssh-keygen failed\n");
		goto fail;
	}
	F.host_pub = pub_words(F.host_key);
	F.other_pub = pub_words(F.other_key);
	pub = pub_words(F.client_key);
	snprintf(path, sizeof(path), "%s.pub", F.host_key);
	F.host_line = util_read_file(path, 4096, &e);
	if (!F.host_pub || !F.other_pub || !pub || !F.host_line ||
	    !fingerprint(F.host_key, F.host_fp, sizeof(F.host_fp))) {
		print_error("reading the generated keys failed\n");
		free(pub);
		err_free(e);
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/authorized_keys", F.dir);
	if (!util_write_file(path, pub, 0600, &e)) {
		print_error("%s\n", e->msg);
		err_free(e);
		free(pub);
		goto fail;
	}
	free(pub);
	if (!sshd_start())
		goto fail;
	return 0;
fail:
	group_teardown(state);
	return -1;
}

static struct tp_ssh_opts opts(void)
{
	return (struct tp_ssh_opts){ .host = "127.0.0.1", .port = F.port, .key = F.client_key,
				     .host_key = F.host_pub, .timeout_ms = 5000 };
}

static struct tp_ssh *open_ok(void)
{
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;
	struct tp_ssh *s = tp_ssh_open(&o, &e);

	if (!s) {
		print_log();
		fail_msg("tp_ssh_open: %s", e->msg);
	}
	assert_null(tp_ssh_failed(s));
	return s;
}

static int exec_ok(struct tp_ssh *s, const char *const argv[])
{
	struct err *e = NULL;
	int fd = tp_ssh_exec(s, argv, &e);

	if (fd < 0)
		fail_msg("tp_ssh_exec %s: %s", argv[0], e->msg);
	return fd;
}

/* A socketpair end bridged to 127.0.0.1:port on the server's side. */
static int forward_ok(struct tp_ssh *s, unsigned port)
{
	struct err *e = NULL;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	if (!tp_ssh_forward(s, sv[1], "127.0.0.1", port, &e))
		fail_msg("tp_ssh_forward to port %u: %s", port, e->msg);
	return sv[0];
}

/* ---- quoting (pure) ---------------------------------------------------------------- */

static void test_quote_argv(void **state)
{
	static const struct {
		const char *argv[4];
		const char *quoted;
	} cases[] = {
		{ { "ls", NULL }, "'ls'" },
		{ { "printf", "%s\\n", "", NULL }, "'printf' '%s\\n' ''" },
		{ { "it's", NULL }, "'it'\\''s'" },
		{ { "''", "'", NULL }, "''\\'''\\''' ''\\'''" },
		{ { "$(id)", "`id`; rm -rf /", "a\nb", NULL }, "'$(id)' '`id`; rm -rf /' 'a\nb'" },
		{ { "\"$HOME\" \\ *", NULL }, "'\"$HOME\" \\ *'" },
	};
	struct err *e = NULL;
	char *q;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		q = tp_ssh_quote_argv(cases[i].argv, &e);
		assert_non_null(q);
		assert_string_equal(q, cases[i].quoted);
		free(q);
	}
	assert_null(e);
	assert_null(tp_ssh_quote_argv((const char *const[]){ NULL }, &e));
	assert_err(e, ERR_INVAL, "empty remote command");
	err_free(e);
	e = NULL;
	assert_null(tp_ssh_quote_argv(NULL, &e));
	assert_err(e, ERR_INVAL, "empty remote command");
	err_free(e);
}

/* ---- keys ---------------------------------------------------------------------------- */

static void test_pubkey_read(void **state)
{
	char path[96];
	struct err *e = NULL;
	char *k;

	(void)state;
	snprintf(path, sizeof(path), "%s.pub", F.host_key);
	k = tp_ssh_pubkey_read(path, &e);
	assert_non_null(k);
	assert_string_equal(k, F.host_pub); /* the comment is gone */
	free(k);

	assert_null(tp_ssh_pubkey_read(F.host_key, &e)); /* the private key */
	assert_err(e, ERR_INVAL, "invalid SSH public key file");
	err_free(e);
	e = NULL;
	snprintf(path, sizeof(path), "%s/nonexistent.pub", F.dir);
	assert_null(tp_ssh_pubkey_read(path, &e));
	assert_non_null(e);
	assert_non_null(strstr(e->msg, "nonexistent.pub"));
	err_free(e);
}

/* Pinned keys that cannot be one are refused before any connection. */
static void test_pinned_key_malformed(void **state)
{
	const char *b64 = strchr(F.host_pub, ' ') + 1;
	char rsa[256];
	static const struct {
		const char *key;
		const char *msg;
	} cases[] = {
		{ "ssh-ed25519", "invalid pinned host key: expected \"TYPE BASE64\"" },
		{ "ssh-ed25519 @@@@", "invalid pinned host key: the key is not base64" },
		{ "ssh-ed25519 AAAA", "invalid pinned host key: the key is truncated" },
	};
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		o.host_key = cases[i].key;
		assert_null(tp_ssh_open(&o, &e));
		assert_err(e, ERR_INVAL, cases[i].msg);
		err_free(e);
		e = NULL;
	}
	/* An ed25519 key labelled as RSA. */
	snprintf(rsa, sizeof(rsa), "ssh-rsa %s", b64);
	o.host_key = rsa;
	assert_null(tp_ssh_open(&o, &e));
	assert_err(e, ERR_INVAL, "invalid pinned host key: the key is not of type 'ssh-rsa'");
	err_free(e);
}

static void test_host_key_mismatch(void **state)
{
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;
	struct tp_ssh *s;
	char want[160];

	(void)state;
	o.host_key = F.other_pub;
	assert_null(tp_ssh_open(&o, &e));
	snprintf(want, sizeof(want),
		 "host key of 127.0.0.1 does not match the pinned key (server offered %s)",
		 F.host_fp);
	assert_err(e, ERR_PROTO, "does not match the pinned key");
	assert_string_equal(e->msg, want);
	err_free(e);
	e = NULL;

	/* The right key, as the .pub file has it (comment, newline): accepted. */
	o.host_key = F.host_line;
	s = tp_ssh_open(&o, &e);
	if (!s)
		fail_msg("pinned key with a comment: %s", e->msg);
	tp_ssh_close(s);
}

static void test_host_key_missing(void **state)
{
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;

	(void)state;
	o.host_key = NULL;
	assert_null(tp_ssh_open(&o, &e));
	assert_err(e, ERR_INVAL, "no pinned host key for SSH server 127.0.0.1 "
				 "(trust on first use is not allowed)");
	err_free(e);
	e = NULL;
	o.host_key = "";
	assert_null(tp_ssh_open(&o, &e));
	assert_err(e, ERR_INVAL, "no pinned host key for SSH server 127.0.0.1");
	err_free(e);
}

static void test_client_key_refused(void **state)
{
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;
	char want[160], path[96];

	(void)state;
	o.key = F.stranger_key; /* valid, but not in authorized_keys */
	assert_null(tp_ssh_open(&o, &e));
	snprintf(want, sizeof(want),
		 "SSH authentication as root at 127.0.0.1 with key '%s' failed: ", F.stranger_key);
	assert_err(e, ERR_INVAL, want);
	err_free(e);
	e = NULL;

	/* A user the key does not belong to. */
	o.key = F.client_key;
	o.user = "nobody";
	assert_null(tp_ssh_open(&o, &e));
	assert_err(e, ERR_INVAL, "SSH authentication as nobody at 127.0.0.1");
	err_free(e);
	e = NULL;

	o.user = NULL;
	snprintf(path, sizeof(path), "%s/nonexistent_key", F.dir);
	o.key = path;
	assert_null(tp_ssh_open(&o, &e));
	snprintf(want, sizeof(want), "cannot read SSH key file '%s': ", path);
	assert_err(e, ERR_IO, want);
	assert_int_equal(e->errnum, ENOENT);
	err_free(e);
	e = NULL;

	o.key = NULL;
	assert_null(tp_ssh_open(&o, &e));
	assert_err(e, ERR_INVAL, "no SSH key file given for 127.0.0.1");
	err_free(e);
}

/* ---- connecting ------------------------------------------------------------------------ */

static void test_connect_refused(void **state)
{
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;
	char want[96];
	int64_t t0;

	(void)state;
	o.port = free_port();
	t0 = util_now_ms();
	assert_null(tp_ssh_open(&o, &e));
	assert_true(util_now_ms() - t0 < 1000);
	snprintf(want, sizeof(want), "cannot connect to SSH server 127.0.0.1 port %u: ", o.port);
	assert_err(e, ERR_IO, want);
	assert_int_equal(e->errnum, ECONNREFUSED);
	err_free(e);
	e = NULL;

	o.host = "localhost"; /* names are not resolved */
	assert_null(tp_ssh_open(&o, &e));
	assert_err(e, ERR_INVAL, "invalid SSH host 'localhost': not an IPv4 or IPv6 address");
	err_free(e);
}

/* A listener whose accept queue is full drops SYNs: the connect hangs like
 * one to a filtered address, and the timeout must end it. */
static void test_connect_timeout(void **state)
{
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;
	unsigned port;
	int lfd = listen_lo(0, &port), filler = connect_lo(port);
	char want[96];
	int64_t t0, dt;

	(void)state;
	assert_true(filler >= 0);
	sleep_ms(20); /* the filler lands in the accept queue */
	o.port = port;
	o.timeout_ms = 300;
	t0 = util_now_ms();
	assert_null(tp_ssh_open(&o, &e));
	dt = util_now_ms() - t0;
	snprintf(want, sizeof(want), "timed out connecting to SSH server 127.0.0.1 port %u", port);
	assert_err(e, ERR_TIMEOUT, want);
	if (dt < 290 || dt > 1000)
		fail_msg("gave up after %lld ms, timeout 300 ms", (long long)dt);
	err_free(e);
	close(filler);
	close(lfd);
}

/* A server that accepts and never speaks: the handshake times out. */
static void test_handshake_timeout(void **state)
{
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;
	unsigned port;
	int lfd = listen_lo(8, &port);
	int64_t t0, dt;

	(void)state;
	o.port = port;
	o.timeout_ms = 300;
	t0 = util_now_ms();
	assert_null(tp_ssh_open(&o, &e));
	dt = util_now_ms() - t0;
	assert_err(e, ERR_TIMEOUT, "timed out during the SSH handshake with SSH server 127.0.0.1");
	if (dt < 290 || dt > 1000)
		fail_msg("gave up after %lld ms, timeout 300 ms", (long long)dt);
	err_free(e);
	close(lfd);
}

/* ---- exec ------------------------------------------------------------------------------ */

static void test_exec_verbatim(void **state)
{
	static const char *const argv[] = {
		"printf", "%s\\n", "two  words", "it's", "\"double\"", "$(echo INJECTED)",
		"a; echo INJECTED", "`echo INJECTED`", "line1\nline2", "$HOME", "*", "",
		"back\\slash\\n", "&& || | > /dev/null < /dev/null &", "-n", "'", NULL,
	};
	_cleanup_ssh_ struct tp_ssh *s = open_ok();
	char want[512] = "", *out;
	size_t len;
	int fd;

	(void)state;
	for (size_t i = 2; argv[i]; i++) {
		strcat(want, argv[i]);
		strcat(want, "\n");
	}
	fd = exec_ok(s, argv);
	out = read_all(fd, 5000, &len);
	close(fd);
	assert_int_equal(len, strlen(want));
	assert_string_equal(out, want);
	/* Nothing ran: no line is the output of an injected echo. */
	assert_null(strstr(out, "\nINJECTED\n"));
	assert_int_equal(tp_ssh_exec_status(s), 0);
	assert_string_equal(tp_ssh_exec_stderr(s), "");
	free(out);
}

static void test_exec_status_stderr(void **state)
{
	_cleanup_ssh_ struct tp_ssh *s = open_ok();
	const char *const fail7[] = { "sh", "-c", "echo to-stdout; echo oops >&2; exit 7", NULL };
	const char *const killed[] = { "sh", "-c", "kill -TERM $$", NULL };
	const char *const missing[] = { "no-such-command-vmm", "x", NULL };
	const char *const cat[] = { "cat", NULL };
	/* 100 numbered lines of 100 bytes to stderr, then END: more than kept. */
	const char *const noisy[] = {
		"sh", "-c",
		"i=0; while [ $i -lt 100 ]; do printf '%099d\\n' $i >&2; i=$((i+1)); done; "
		"echo END >&2",
		NULL };
	char *out, *want;
	const char *err;
	size_t len = 0;
	int fd;

	(void)state;
	fd = exec_ok(s, fail7);
	out = read_all(fd, 5000, NULL);
	close(fd);
	assert_string_equal(out, "to-stdout\n");
	free(out);
	assert_int_equal(tp_ssh_exec_status(s), 7);
	assert_string_equal(tp_ssh_exec_stderr(s), "oops\n");

	fd = exec_ok(s, killed);
	out = read_all(fd, 5000, NULL);
	close(fd);
	free(out);
	assert_int_equal(tp_ssh_exec_status(s), 128 + SIGTERM);

	fd = exec_ok(s, missing);
	out = read_all(fd, 5000, NULL);
	close(fd);
	free(out);
	assert_int_equal(tp_ssh_exec_status(s), 127);
	assert_non_null(strstr(tp_ssh_exec_stderr(s), "no-such-command-vmm"));

	/* Only the last 4 KiB of stderr are kept: the tail, in order. */
	fd = exec_ok(s, noisy);
	out = read_all(fd, 5000, NULL);
	close(fd);
	free(out);
	assert_int_equal(tp_ssh_exec_status(s), 0);
	want = malloc(100 * 100 + 5);
	assert_non_null(want);
	for (int i = 0; i < 100; i++)
		len += (size_t)sprintf(want + len, "%099d\n", i);
	strcpy(want + len, "END\n");
	len += 4;
	err = tp_ssh_exec_stderr(s);
	assert_int_equal(strlen(err), 4096);
	assert_string_equal(err, want + len - 4096);
	free(want);

	/* A new command: no status while it runs, no stderr of the last one;
	 * stdin reaches it, and its EOF ends it. */
	fd = exec_ok(s, cat);
	assert_int_equal(tp_ssh_exec_status(s), -1);
	assert_string_equal(tp_ssh_exec_stderr(s), "");
	assert_true(send_all(fd, "hello\n", 6));
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	out = read_all(fd, 5000, NULL);
	close(fd);
	assert_string_equal(out, "hello\n");
	free(out);
	assert_int_equal(tp_ssh_exec_status(s), 0);

	/* Both directions at once, through several window adjustments. */
	{
		struct xfer x = { .fd = exec_ok(s, cat), .seed = 11, .len = 12 * MIB };

		xfer_run(&x);
		close(x.fd);
		assert_echoed(&x);
		assert_int_equal(tp_ssh_exec_status(s), 0);
	}
	assert_true(tp_ssh_wait_idle(s, 5000, NULL));
	assert_null(tp_ssh_failed(s));
}

/* ---- forwards ---------------------------------------------------------------------------- */

static void test_forward_64m(void **state)
{
	_cleanup_ssh_ struct tp_ssh *s = open_ok();
	struct far *f;
	struct xfer x = { .seed = 64, .len = 64 * MIB };
	struct err *e = NULL;
	uint64_t out, in;

	(void)state;
	f = far_start(FAR_SINK, 99, 8 * MIB);
	x.fd = forward_ok(s, f->port);
	xfer_run(&x);
	/* The sink answers only after the EOF: the reply proves the local
	 * half close reached it, and what it sent after still came back,
	 * followed by its own EOF. */
	assert_sink_reply(&x, f);
	close(x.fd);
	if (!tp_ssh_wait_idle(s, 5000, &e))
		fail_msg("wait_idle: %s", e->msg);
	far_stop(f);
	assert_int_equal(f->nconns, 1);
	assert_int_equal(f->eofs, 1);
	assert_int_equal(f->bytes_in, 64 * MIB);
	free(f);
	tp_ssh_stats(s, &out, &in);
	assert_int_equal(out, 64 * MIB);
	assert_int_equal(in, x.got);
	assert_null(tp_ssh_failed(s));
}

/* The far side half-closes first: its EOF reaches the local end while the
 * channel stays open, and what the local end sends after still arrives. */
static void test_forward_far_half_close(void **state)
{
	_cleanup_ssh_ struct tp_ssh *s = open_ok();
	unsigned char *b = malloc(MIB);
	struct far *f;
	struct err *e = NULL;
	char *greeting;
	size_t len;
	int fd;

	(void)state;
	assert_non_null(b);
	f = far_start(FAR_GREET, 3, 3 * MIB + 5);
	fd = forward_ok(s, f->port);
	greeting = read_all(fd, 5000, &len);
	assert_int_equal(len, 3 * MIB + 5);
	assert_int_equal(fnv(FNV0, greeting, len), pattern_fnv(3, len, FNV0));
	free(greeting);
	pattern(4, 0, b, MIB);
	assert_true(send_all(fd, b, MIB));
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	if (!tp_ssh_wait_idle(s, 5000, &e))
		fail_msg("wait_idle: %s", e->msg);
	assert_int_equal(read_result(fd, 1000), 0);
	close(fd);
	far_stop(f);
	if (f->eofs != 1)
		fail_msg("far side: %u EOFs, %llu bytes, error %s", f->eofs,
			 (unsigned long long)f->bytes_in, strerror(f->err));
	assert_int_equal(f->bytes_in, MIB);
	assert_int_equal(f->fnv_in, fnv(FNV0, b, MIB));
	free(f);
	free(b);
}

/* The far end resets the connection while the local end still sends:
 * the channel ends (the local end learns it), the session lives on. */
static void test_forward_far_abort(void **state)
{
	_cleanup_ssh_ struct tp_ssh *s = open_ok();
	struct far *f = far_start(FAR_ABORT, 0, 1 * MIB);
	struct xfer x = { .seed = 9, .len = 256 * MIB, .timeout_ms = 5000 };
	const char *const echo[] = { "echo", "ok", NULL };
	struct err *e = NULL;
	char *out;
	int fd;

	(void)state;
	x.fd = forward_ok(s, f->port);
	xfer_run(&x);
	close(x.fd);
	if (x.err == ETIMEDOUT)
		fail_msg("the local end was not told in 5 s (%llu bytes sent)",
			 (unsigned long long)x.sent);
	/* Its EOF came first, then the cut: the sender gets an error. */
	assert_true(x.in_eof);
	if (x.err != EPIPE && x.err != ECONNRESET)
		fail_msg("sender saw %s, not a broken stream", strerror(x.err));
	assert_true(x.sent < x.len);
	if (!tp_ssh_wait_idle(s, 2000, &e))
		fail_msg("wait_idle: %s", e->msg);
	far_stop(f);
	assert_int_equal(f->nconns, 1);
	assert_int_equal(f->eofs, 0);
	assert_true(f->bytes_in >= 1 * MIB);
	free(f);
	/* The session is fine. */
	assert_null(tp_ssh_failed(s));
	fd = exec_ok(s, echo);
	out = read_all(fd, 5000, NULL);
	close(fd);
	assert_string_equal(out, "ok\n");
	free(out);
	assert_null(tp_ssh_failed(s));
}

static void test_forward_refused(void **state)
{
	_cleanup_ssh_ struct tp_ssh *s = open_ok();
	const char *const echo[] = { "echo", "still", "fine", NULL };
	unsigned port = free_port();
	struct err *e = NULL;
	char want[128], *out;
	int sv[2], fd;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_false(tp_ssh_forward(s, sv[1], "127.0.0.1", port, &e));
	snprintf(want, sizeof(want),
		 "SSH server 127.0.0.1 refused a channel to 127.0.0.1 port %u: ", port);
	assert_err(e, ERR_IO, want);
	err_free(e);
	e = NULL;
	assert_int_equal(read_result(sv[0], 2000), 0); /* the fd was taken and closed */
	close(sv[0]);

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_false(tp_ssh_forward(s, sv[1], "127.0.0.1", 0, &e));
	assert_err(e, ERR_INVAL, "invalid forward target '127.0.0.1' port 0 via 127.0.0.1");
	err_free(e);
	assert_int_equal(read_result(sv[0], 2000), 0);
	close(sv[0]);

	/* The session survives a refused channel. */
	assert_null(tp_ssh_failed(s));
	fd = exec_ok(s, echo);
	out = read_all(fd, 5000, NULL);
	close(fd);
	assert_string_equal(out, "still fine\n");
	free(out);
	assert_true(tp_ssh_wait_idle(s, 5000, NULL));
}

#define NSESS 3

static void test_open_many(void **state)
{
	struct tp_ssh *ss[NSESS], *sentinel = (struct tp_ssh *)&sentinel;
	struct tp_ssh_opts o = opts();
	struct far *sink, *echo;
	struct xfer x[2 * NSESS];
	struct err *e = NULL;

	(void)state;
	/* All or none: a wrong pinned key fails every one, out untouched. */
	for (int i = 0; i < NSESS; i++)
		ss[i] = sentinel;
	o.host_key = F.other_pub;
	assert_false(tp_ssh_open_many(&o, NSESS, ss, &e));
	assert_err(e, ERR_PROTO, "does not match the pinned key");
	err_free(e);
	e = NULL;
	for (int i = 0; i < NSESS; i++)
		assert_ptr_equal(ss[i], sentinel);
	o = opts();
	assert_false(tp_ssh_open_many(&o, 0, ss, &e));
	assert_err(e, ERR_INVAL, "no SSH sessions requested for 127.0.0.1");
	err_free(e);
	e = NULL;

	if (!tp_ssh_open_many(&o, NSESS, ss, &e))
		fail_msg("open_many: %s", e->msg);
	for (int i = 0; i < NSESS; i++) {
		assert_non_null(ss[i]);
		assert_ptr_not_equal(ss[i], sentinel);
		assert_null(tp_ssh_failed(ss[i]));
		for (int j = 0; j < i; j++)
			assert_ptr_not_equal(ss[i], ss[j]);
	}

	/* Two forwards per session, all moving at once: one into a sink, one
	 * through an echo (both directions busy on one channel). */
	sink = far_start(FAR_SINK, 7, 1 * MIB);
	echo = far_start(FAR_ECHO, 0, 0);
	for (int i = 0; i < 2 * NSESS; i++) {
		x[i] = (struct xfer){ .seed = 100 + (uint64_t)i,
				      .len = 3 * MIB + (uint64_t)i * 4097 };
		x[i].fd = forward_ok(ss[i / 2], i % 2 ? echo->port : sink->port);
	}
	for (int i = 0; i < 2 * NSESS; i++)
		assert_int_equal(pthread_create(&x[i].t, NULL, xfer_thread, &x[i]), 0);
	for (int i = 0; i < 2 * NSESS; i++) {
		pthread_join(x[i].t, NULL);
		close(x[i].fd);
	}
	for (int i = 0; i < 2 * NSESS; i++) {
		if (i % 2)
			assert_echoed(&x[i]);
		else
			assert_sink_reply(&x[i], sink);
	}
	for (int i = 0; i < NSESS; i++) {
		uint64_t out, in;

		if (!tp_ssh_wait_idle(ss[i], 5000, &e))
			fail_msg("wait_idle %d: %s", i, e->msg);
		tp_ssh_stats(ss[i], &out, &in);
		assert_int_equal(out, x[2 * i].len + x[2 * i + 1].len);
		assert_int_equal(in, x[2 * i].got + x[2 * i + 1].got);
		assert_null(tp_ssh_failed(ss[i]));
		tp_ssh_close(ss[i]);
	}
	far_stop(sink);
	far_stop(echo);
	assert_int_equal(sink->eofs, NSESS);
	assert_int_equal(echo->eofs, NSESS);
	free(sink);
	free(echo);
}

/* tp_ssh_close with a command running and a forward open: both local
 * ends see EOF, nothing is left behind. */
static void test_close_ends_channels(void **state)
{
	struct tp_ssh *s = open_ok();
	const char *const cat[] = { "cat", NULL };
	struct far *f;
	int efd, ffd;

	(void)state;
	f = far_start(FAR_SINK, 1, 0);
	efd = exec_ok(s, cat);
	ffd = forward_ok(s, f->port);
	assert_true(send_all(efd, "x", 1));
	assert_int_equal(read_result(efd, 5000), 1); /* cat is up */
	tp_ssh_close(s);
	assert_int_equal(read_result(efd, 2000), 0);
	assert_int_equal(read_result(ffd, 2000), 0);
	close(efd);
	close(ffd);
	far_stop(f);
	free(f);
}

/* ---- connection loss ------------------------------------------------------------------------ */

static void test_connection_lost(void **state)
{
	_cleanup_ssh_ struct tp_ssh *s = open_ok();
	_cleanup_ssh_ struct tp_ssh *idle = open_ok();
	const char *const cat[] = { "cat", NULL };
	struct far *f;
	/* On the heap: its thread may outlive a failed assertion. */
	_cleanup_free_ struct xfer *x = calloc(1, sizeof(*x));
	struct err *e = NULL;
	const char *why;
	unsigned lport;
	int lfd, near, far_end, efd, sv[2];
	int64_t deadline;
	uint64_t out = 0;

	(void)state;
	assert_non_null(x);
	*x = (struct xfer){ .seed = 5, .len = 1ull << 40 };
	f = far_start(FAR_SINK, 0, 0);
	/* A busy forward, an idle TCP-bridged forward and a running command. */
	x->fd = forward_ok(s, f->port);
	lfd = listen_lo(1, &lport);
	near = connect_lo(lport);
	assert_true(near >= 0);
	far_end = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(far_end >= 0);
	close(lfd);
	if (!tp_ssh_forward(s, far_end, "127.0.0.1", f->port, &e))
		fail_msg("forward: %s", e->msg);
	efd = exec_ok(s, cat);
	assert_int_equal(pthread_create(&x->t, NULL, xfer_thread, x), 0);

	deadline = util_now_ms() + 5000;
	while (out < 8 * MIB && util_now_ms() < deadline) {
		sleep_ms(2);
		tp_ssh_stats(s, &out, NULL);
	}
	assert_true(out >= 8 * MIB);
	/* The server side of this connection dies; the listener lives on. */
	assert_true(kill_sshd_children(F.pid) >= 1);

	deadline = util_now_ms() + 5000;
	while (!(why = tp_ssh_failed(s)) && util_now_ms() < deadline)
		sleep_ms(5);
	if (!why)
		fail_msg("the session did not notice that its server died");
	if (strncmp(why, "SSH connection to 127.0.0.1 lost: ", 34))
		fail_msg("unexpected failure text: %s", why);
	/* A session without channels has nothing to read, and notices too. */
	deadline = util_now_ms() + 2000;
	while (!tp_ssh_failed(idle) && util_now_ms() < deadline)
		sleep_ms(5);
	why = tp_ssh_failed(idle);
	if (!why || (strcmp(why, "SSH connection to 127.0.0.1 lost: "
				 "the server closed the connection") &&
		     strcmp(why, "SSH connection to 127.0.0.1 lost: Connection reset by peer")))
		fail_msg("idle session: %s", why ? why : "(healthy)");
	why = tp_ssh_failed(s);

	/* Every bridged fd is gone: the busy one mid-stream, the command's
	 * with an EOF, the TCP one with a reset. */
	pthread_join(x->t, NULL);
	assert_true(x->sent < x->len);
	assert_int_equal(x->got, 0);
	assert_true(x->err == EPIPE || x->err == ECONNRESET || x->in_eof);
	close(x->fd);
	assert_int_equal(read_result(efd, 2000), 0);
	close(efd);
	assert_int_equal(read_result(near, 2000), -ECONNRESET);
	close(near);

	/* Later requests fail with the recorded reason. */
	assert_int_equal(tp_ssh_exec(s, cat, &e), -1);
	assert_err(e, ERR_CLOSED, why);
	err_free(e);
	e = NULL;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_false(tp_ssh_forward(s, sv[1], "127.0.0.1", f->port, &e));
	assert_err(e, ERR_CLOSED, why);
	err_free(e);
	e = NULL;
	assert_int_equal(read_result(sv[0], 2000), 0); /* taken, also on failure */
	close(sv[0]);
	assert_false(tp_ssh_wait_idle(s, 1000, &e));
	assert_err(e, ERR_CLOSED, why);
	err_free(e);
	assert_string_equal(tp_ssh_failed(s), why);
	far_stop(f);
	free(f);

	/* The listener is unharmed: a new session works. */
	tp_ssh_close(open_ok());
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quote_argv),
		cmocka_unit_test(test_pubkey_read),
		cmocka_unit_test(test_pinned_key_malformed),
		cmocka_unit_test(test_host_key_mismatch),
		cmocka_unit_test(test_host_key_missing),
		cmocka_unit_test(test_client_key_refused),
		cmocka_unit_test(test_connect_refused),
		cmocka_unit_test(test_connect_timeout),
		cmocka_unit_test(test_handshake_timeout),
		cmocka_unit_test(test_exec_verbatim),
		cmocka_unit_test(test_exec_status_stderr),
		cmocka_unit_test(test_forward_64m),
		cmocka_unit_test(test_forward_far_half_close),
		cmocka_unit_test(test_forward_far_abort),
		cmocka_unit_test(test_forward_refused),
		cmocka_unit_test(test_open_many),
		cmocka_unit_test(test_close_ends_channels),
		cmocka_unit_test(test_connection_lost),
	};

	log_init("test_ssh"); /* VMM_LOG=debug shows the pump at work */
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("ssh", tests, group_setup, group_teardown);
}
