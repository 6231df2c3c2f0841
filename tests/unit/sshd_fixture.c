/* sshd_fixture.c - see sshd_fixture.h. */
#include "sshd_fixture.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

extern char **environ;

/* ---- small helpers ---------------------------------------------------------- */

void fx_sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

uint64_t fx_fnv(uint64_t h, const void *p, size_t n)
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

void fx_pattern(uint64_t seed, uint64_t off, unsigned char *p, size_t n)
{
	while (n) {
		uint64_t w = mix(seed ^ (off >> 3));

		for (unsigned k = off & 7; k < 8 && n; k++, n--, off++)
			*p++ = (unsigned char)(w >> (k * 8));
	}
}

uint64_t fx_pattern_fnv(uint64_t seed, uint64_t len, uint64_t h)
{
	unsigned char b[64 << 10];

	for (uint64_t off = 0; off < len; off += sizeof(b)) {
		size_t n = len - off < sizeof(b) ? (size_t)(len - off) : sizeof(b);

		fx_pattern(seed, off, b, n);
		h = fx_fnv(h, b, n);
	}
	return h;
}

bool fx_send_all(int fd, const void *p, size_t n)
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

/* ---- sockets on loopback ------------------------------------------------------ */

int fx_listen_lo(int backlog, unsigned *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&a, l) || listen(fd, backlog) ||
	    getsockname(fd, (struct sockaddr *)&a, &l)) {
		close(fd);
		return -1;
	}
	*port = ntohs(a.sin_port);
	return fd;
}

unsigned fx_free_port(void)
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

int fx_connect_lo(unsigned port)
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

/* ---- the far end of forwards ------------------------------------------------------ */

struct far_conn {
	struct fx_far *f;
	int fd;
	unsigned idx;
};

static void *far_conn_run(void *arg)
{
	struct far_conn *fc = arg;
	struct fx_far *f = fc->f;
	unsigned char *b = malloc(FX_CHUNK);
	uint64_t n = 0, h = FX_FNV0;
	bool eof = false;

	for (size_t off = 0; b && f->mode == FX_FAR_GREET && off < f->reply_len; off += FX_CHUNK) {
		size_t k = f->reply_len - off < FX_CHUNK ? f->reply_len - off : FX_CHUNK;

		fx_pattern(f->reply_seed, off, b, k);
		if (!fx_send_all(fc->fd, b, k))
			break;
	}
	if (f->mode == FX_FAR_GREET)
		shutdown(fc->fd, SHUT_WR);
	for (;;) {
		ssize_t r = b ? recv(fc->fd, b, FX_CHUNK, 0) : -1;

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			eof = r == 0;
			if (r < 0)
				f->err = b ? errno : ENOMEM;
			break;
		}
		n += (uint64_t)r;
		if (f->mode == FX_FAR_ABORT && n >= f->reply_len)
			break;
		if (f->mode == FX_FAR_ECHO) {
			if (!fx_send_all(fc->fd, b, (size_t)r))
				break;
		} else {
			h = fx_fnv(h, b, (size_t)r);
		}
	}
	pthread_mutex_lock(&f->mu);
	f->bytes_in += n;
	f->fnv_in = h;
	f->eofs += eof;
	pthread_mutex_unlock(&f->mu);
	if (eof && f->mode == FX_FAR_SINK) {
		char hdr[64];
		int hl = snprintf(hdr, sizeof(hdr), "%llu %016llx\n", (unsigned long long)n,
				  (unsigned long long)h);
		bool ok = fx_send_all(fc->fd, hdr, (size_t)hl);

		for (size_t off = 0; ok && off < f->reply_len; off += FX_CHUNK) {
			size_t k = f->reply_len - off < FX_CHUNK ? f->reply_len - off : FX_CHUNK;

			fx_pattern(f->reply_seed, off, b, k);
			ok = fx_send_all(fc->fd, b, k);
		}
	}
	pthread_mutex_lock(&f->mu);
	if (f->mode == FX_FAR_ABORT) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(fc->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fc->fd);
		f->fds[fc->idx] = -1;
	} else {
		shutdown(fc->fd, SHUT_WR); /* fx_far_stop closes it */
	}
	f->ndone++;
	pthread_mutex_unlock(&f->mu);
	free(b);
	free(fc);
	return NULL;
}

static void *far_accept(void *arg)
{
	struct fx_far *f = arg;

	for (;;) {
		int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
		struct far_conn *fc;

		if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
			continue;
		if (fd < 0)
			break; /* fx_far_stop shut the listener down */
		pthread_mutex_lock(&f->mu);
		fc = f->nconns < FX_FAR_MAX ? malloc(sizeof(*fc)) : NULL;
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

struct fx_far *fx_far_start(enum fx_far_mode mode, uint64_t reply_seed, size_t reply_len)
{
	struct fx_far *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	*f = (struct fx_far){ .mode = mode, .reply_seed = reply_seed, .reply_len = reply_len };
	pthread_mutex_init(&f->mu, NULL);
	f->lfd = fx_listen_lo(16, &f->port);
	if (f->lfd < 0 || pthread_create(&f->acceptor, NULL, far_accept, f)) {
		if (f->lfd >= 0)
			close(f->lfd);
		pthread_mutex_destroy(&f->mu);
		free(f);
		return NULL;
	}
	return f;
}

void fx_far_stop(struct fx_far *f)
{
	shutdown(f->lfd, SHUT_RDWR); /* wakes accept() */
	pthread_join(f->acceptor, NULL);
	close(f->lfd);
	/* The channel may end on our side before sshd has written all to
	 * us: give the connections time to read to their EOF. */
	for (int64_t deadline = util_now_ms() + 3000; util_now_ms() < deadline; fx_sleep_ms(2)) {
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

/* ---- the near end ------------------------------------------------------------------ */

void fx_xfer_run(struct fx_xfer *x)
{
	unsigned char *ob = malloc(FX_CHUNK), *ib = malloc(FX_CHUNK);
	int64_t deadline = util_now_ms() + (x->timeout_ms ? x->timeout_ms : 20000);
	uint64_t gen = 0;
	size_t ooff = 0, olen = 0;
	bool shut = false;

	x->out_fnv = x->in_fnv = FX_FNV0;
	x->sent = x->got = 0;
	if (!ob || !ib || fcntl(x->fd, F_SETFL, fcntl(x->fd, F_GETFL) | O_NONBLOCK) < 0)
		x->err = ENOMEM;
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
			ssize_t r = recv(x->fd, ib, FX_CHUNK, MSG_DONTWAIT);

			if (r > 0) {
				if (x->got < sizeof(x->head) - 1)
					memcpy(x->head + x->got, ib,
					       (size_t)r < sizeof(x->head) - 1 - x->got
						       ? (size_t)r
						       : sizeof(x->head) - 1 - x->got);
				x->in_fnv = fx_fnv(x->in_fnv, ib, (size_t)r);
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
				olen = x->len - gen < FX_CHUNK ? (size_t)(x->len - gen) : FX_CHUNK;
				ooff = 0;
				fx_pattern(x->seed, gen, ob, olen);
				x->out_fnv = fx_fnv(x->out_fnv, ob, olen);
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

void *fx_xfer_thread(void *x)
{
	fx_xfer_run(x);
	return NULL;
}

/* ---- sshd ---------------------------------------------------------------------------- */

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
	int fd = fx_connect_lo(port);
	struct pollfd p = { .fd = fd, .events = POLLIN };
	bool ok = false;

	if (fd < 0)
		return false;
	if (poll(&p, 1, 1000) == 1 && recv(fd, b, sizeof(b) - 1, 0) > 0)
		ok = !strncmp(b, "SSH-2.0-", 8);
	close(fd);
	return ok;
}

void fx_sshd_print_log(const struct fx_sshd *s)
{
	char *text = s->log[0] ? util_read_file(s->log, 64 << 10, NULL) : NULL;

	fprintf(stderr, "sshd log:\n%s\n", text ? text : "(none)");
	free(text);
}

static bool sshd_run(struct fx_sshd *s)
{
	int64_t deadline;
	FILE *f;
	pid_t pid, parent;

	s->port = fx_free_port();
	f = fopen(s->cfg, "w");
	if (!f || !s->port) {
		if (f)
			fclose(f);
		return false;
	}
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
		s->port, s->host_key, s->dir, s->dir);
	if (fclose(f))
		return false;
	parent = getpid();
	pid = fork();
	if (pid < 0)
		return false;
	if (pid == 0) {
		int log = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);

		/* Its own process group: nothing it signals reaches us. It
		 * ends with us, also if we crash before the teardown. */
		setpgid(0, 0);
		if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
			_exit(125);
		if (log < 0 || nul < 0 || dup2(nul, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
			_exit(126);
		execl(FX_SSHD, FX_SSHD, "-D", "-e", "-f", s->cfg, (char *)NULL);
		_exit(127);
	}
	s->pid = pid;
	deadline = util_now_ms() + 5000;
	while (util_now_ms() < deadline) {
		int st;

		if (waitpid(pid, &st, WNOHANG) == pid) {
			s->pid = -1;
			fprintf(stderr, "sshd exited with status %d\n", st);
			fx_sshd_print_log(s);
			return false;
		}
		if (sshd_greets(s->port))
			return true;
		fx_sleep_ms(10);
	}
	fprintf(stderr, "sshd did not greet on port %u within 5 s\n", s->port);
	fx_sshd_print_log(s);
	return false;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void fx_sshd_stop(struct fx_sshd *s)
{
	int64_t deadline = util_now_ms() + 3000;

	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		while (waitpid(s->pid, NULL, WNOHANG) == 0) {
			if (util_now_ms() > deadline) {
				kill(s->pid, SIGKILL);
				waitpid(s->pid, NULL, 0);
				break;
			}
			fx_sleep_ms(5);
		}
	}
	s->pid = -1;
	if (s->dir[0] && !getenv("TEST_SSH_KEEP"))
		nftw(s->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	s->dir[0] = '\0';
	free(s->host_pub);
	free(s->host_line);
	free(s->other_pub);
	s->host_pub = s->host_line = s->other_pub = NULL;
}

bool fx_sshd_start(struct fx_sshd *s)
{
	char *pub = NULL, path[96];
	struct err *e = NULL;

	memset(s, 0, sizeof(*s));
	s->pid = -1;
	if (access(FX_SSHD, X_OK)) {
		fprintf(stderr, "%s: %s\n", FX_SSHD, strerror(errno));
		return false;
	}
	/* sshd's privilege separation directory. */
	if (mkdir("/run/sshd", 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "mkdir /run/sshd: %s\n", strerror(errno));
		return false;
	}
	strcpy(s->dir, "/tmp/test_ssh.XXXXXX");
	if (!mkdtemp(s->dir)) {
		fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
		s->dir[0] = '\0';
		return false;
	}
	snprintf(s->host_key, sizeof(s->host_key), "%s/host_key", s->dir);
	snprintf(s->other_key, sizeof(s->other_key), "%s/other_host_key", s->dir);
	snprintf(s->client_key, sizeof(s->client_key), "%s/client_key", s->dir);
	snprintf(s->stranger_key, sizeof(s->stranger_key), "%s/stranger_key", s->dir);
	snprintf(s->cfg, sizeof(s->cfg), "%s/sshd_config", s->dir);
	snprintf(s->log, sizeof(s->log), "%s/sshd.log", s->dir);
	if (!keygen(s->host_key) || !keygen(s->other_key) || !keygen(s->client_key) ||
	    !keygen(s->stranger_key)) {
		fprintf(stderr, "ssh-keygen failed\n");
		goto fail;
	}
	s->host_pub = pub_words(s->host_key);
	s->other_pub = pub_words(s->other_key);
	pub = pub_words(s->client_key);
	snprintf(path, sizeof(path), "%s.pub", s->host_key);
	s->host_line = util_read_file(path, 4096, &e);
	if (!s->host_pub || !s->other_pub || !pub || !s->host_line ||
	    !fingerprint(s->host_key, s->host_fp, sizeof(s->host_fp))) {
		fprintf(stderr, "reading the generated keys failed%s%s\n", e ? ": " : "",
			e ? e->msg : "");
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/authorized_keys", s->dir);
	if (!util_write_file(path, pub, 0600, &e)) {
		fprintf(stderr, "%s\n", e->msg);
		goto fail;
	}
	free(pub);
	if (!sshd_run(s)) {
		fx_sshd_stop(s);
		return false;
	}
	return true;
fail:
	err_free(e);
	free(pub);
	fx_sshd_stop(s);
	return false;
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

size_t fx_sshd_kill_servers(const struct fx_sshd *s)
{
	pid_t tree[256], doomed[256], root = s->pid;
	size_t nt = 0, nd = 0;
	bool grew;

	if (root <= 0)
		return 0;
	do {
		DIR *d = opendir("/proc");
		struct dirent *de;

		grew = false;
		if (!d)
			break;
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
			if (n > 0 && (size_t)n == strlen(FX_SSHD) && !memcmp(exe, FX_SSHD, (size_t)n)) {
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
