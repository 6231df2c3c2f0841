/*
 * tp_ssh.c - SSH sessions over libssh2: connect, pin the host key,
 * authenticate, and hand the session to a pump thread (tp_ssh_pump.c)
 * that bridges local fds to exec and direct-tcpip channels. Contract in
 * tp_ssh.h.
 *
 * Setup runs in the caller's thread with libssh2 in non-blocking mode and
 * every wait in poll() against one deadline, so a silent server costs at
 * most timeout_ms.
 */
#include "tp_ssh_int.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* Fast and still sound: AES-CTR runs on AES-NI, SHA-256 on the SHA
 * extensions; libssh2 1.10 has neither GCM nor chacha20-poly1305. */
#define SSH_CIPHERS "aes128-ctr,aes256-ctr,aes192-ctr"
#define SSH_MACS "hmac-sha2-256,hmac-sha2-512"

/* ---- keys -------------------------------------------------------------- */

static int b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decodes standard base64 (padding optional); NULL if malformed. */
static unsigned char *b64_decode(const char *s, size_t len, size_t *out_len)
{
	unsigned char *out = malloc(len / 4 * 3 + 3);
	uint32_t acc = 0;
	size_t n = 0, bits = 0, i;

	if (!out)
		return NULL;
	while (len && s[len - 1] == '=')
		len--;
	for (i = 0; i < len; i++) {
		int v = b64_val((unsigned char)s[i]);

		if (v < 0) {
			free(out);
			return NULL;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (unsigned char)(acc >> bits);
		}
	}
	if (bits >= 6) { /* a lone trailing character carries no byte */
		free(out);
		return NULL;
	}
	*out_len = n;
	return out;
}

/* Unpadded base64 as OpenSSH prints fingerprints. */
static void b64_encode(const unsigned char *in, size_t len, char *out, size_t cap)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint32_t acc = 0;
	size_t bits = 0, n = 0;

	for (size_t i = 0; i < len && n + 2 < cap; i++) {
		acc = acc << 8 | in[i];
		bits += 8;
		while (bits >= 6 && n + 1 < cap) {
			bits -= 6;
			out[n++] = tab[(acc >> bits) & 63];
		}
	}
	if (bits && n + 1 < cap)
		out[n++] = tab[(acc << (6 - bits)) & 63];
	out[n] = '\0';
}

/* Parses "type base64 [comment]" into its type and key blob, checking that
 * the blob names the same type. `what` names the source in errors. */
static bool pubkey_parse(const char *text, const char *what, char **type,
			 unsigned char **blob, size_t *blob_len, struct err **errp)
{
	const char *p = text, *t, *b;
	size_t tl, bl, len;
	_cleanup_free_ unsigned char *raw = NULL;
	uint32_t inner;

	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	t = p;
	while (*p && *p != ' ' && *p != '\t' && *p != '\n')
		p++;
	tl = (size_t)(p - t);
	while (*p == ' ' || *p == '\t')
		p++;
	b = p;
	while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
		p++;
	bl = (size_t)(p - b);
	if (!tl || !bl)
		return err_set(errp, ERR_INVAL, "invalid %s: expected \"TYPE BASE64\"", what);
	raw = b64_decode(b, bl, &len);
	if (!raw)
		return err_set(errp, ERR_INVAL, "invalid %s: the key is not base64", what);
	if (len < 4)
		return err_set(errp, ERR_INVAL, "invalid %s: the key is truncated", what);
	inner = (uint32_t)raw[0] << 24 | (uint32_t)raw[1] << 16 | (uint32_t)raw[2] << 8 | raw[3];
	if (inner != tl || len < 4 + tl || memcmp(raw + 4, t, tl))
		return err_set(errp, ERR_INVAL, "invalid %s: the key is not of type '%.*s'",
			       what, (int)tl, t);
	*type = strndup(t, tl);
	if (!*type)
		return err_set(errp, ERR_IO, "out of memory");
	*blob_len = len;
	*blob = TAKE_PTR(raw);
	return true;
}

char *tp_ssh_pubkey_read(const char *path, struct err **errp)
{
	_cleanup_free_ char *text = NULL, *type = NULL, *what = NULL;
	_cleanup_free_ unsigned char *blob = NULL;
	const char *b;
	char *out;
	size_t len;

	text = util_read_file(path, 64 << 10, errp);
	if (!text)
		return NULL;
	if (asprintf(&what, "SSH public key file '%s'", path) < 0) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	if (!pubkey_parse(text, what, &type, &blob, &len, errp))
		return NULL;
	/* Re-emit the base64 word as read (it decoded cleanly). */
	b = strstr(text, type) + strlen(type);
	b += strspn(b, " \t");
	if (asprintf(&out, "%s %.*s", type, (int)strcspn(b, " \t\r\n"), b) < 0) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	return out;
}

/* ---- quoting ----------------------------------------------------------- */

char *tp_ssh_quote_argv(const char *const argv[], struct err **errp)
{
	size_t cap = 1, n = 0;
	char *out;

	if (!argv || !argv[0]) {
		err_set(errp, ERR_INVAL, "empty remote command");
		return NULL;
	}
	for (size_t i = 0; argv[i]; i++)
		cap += 4 * strlen(argv[i]) + 3;
	out = malloc(cap);
	if (!out) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	/* Inside single quotes a POSIX shell takes every byte literally; a
	 * quote itself ends the quoting, is escaped, and quoting resumes. */
	for (size_t i = 0; argv[i]; i++) {
		if (i)
			out[n++] = ' ';
		out[n++] = '\'';
		for (const char *c = argv[i]; *c; c++) {
			if (*c == '\'') {
				memcpy(out + n, "'\\''", 4);
				n += 4;
			} else {
				out[n++] = *c;
			}
		}
		out[n++] = '\'';
	}
	out[n] = '\0';
	return out;
}

/* ---- connection setup -------------------------------------------------- */

static pthread_once_t ssh_once = PTHREAD_ONCE_INIT;
static int ssh_init_rc;

static void ssh_init_once(void)
{
	ssh_init_rc = libssh2_init(0);
}

const char *tp_ssh_lasterr(LIBSSH2_SESSION *ss)
{
	char *msg = NULL;

	libssh2_session_last_error(ss, &msg, NULL, 0);
	return msg && *msg ? msg : "unknown libssh2 error";
}

static int left_ms(int64_t deadline)
{
	int64_t l = deadline - util_now_ms();

	return l < 0 ? 0 : (int)l;
}

/* Waits until the socket is ready the way libssh2 last blocked. */
static bool wait_socket(struct tp_ssh *s, int64_t deadline, const char *what,
			struct err **errp)
{
	int dirs = libssh2_session_block_directions(s->ss);
	struct pollfd pfd = { .fd = s->sock };
	int r;

	if (dirs & LIBSSH2_SESSION_BLOCK_INBOUND)
		pfd.events |= POLLIN;
	if (dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND)
		pfd.events |= POLLOUT;
	if (!pfd.events)
		pfd.events = POLLIN;
	do
		r = poll(&pfd, 1, left_ms(deadline));
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return err_set_errno(errp, errno, "poll on SSH connection to %s", s->host);
	if (r == 0)
		return err_set(errp, ERR_TIMEOUT, "timed out during %s with SSH server %s",
			       what, s->host);
	return true;
}

static bool tcp_connect(struct tp_ssh *s, unsigned port, int64_t deadline,
			struct err **errp)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
	socklen_t sl;
	struct pollfd pfd;
	int one = 1, soerr = 0, r;
	socklen_t el = sizeof(soerr);

	if (inet_pton(AF_INET, s->host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)port);
		sl = sizeof(*v4);
	} else if (inet_pton(AF_INET6, s->host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
		sl = sizeof(*v6);
	} else {
		return err_set(errp, ERR_INVAL,
			       "invalid SSH host '%s': not an IPv4 or IPv6 address", s->host);
	}
	s->sock = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->sock < 0)
		return err_set_errno(errp, errno, "socket for SSH to %s", s->host);
	/* SSH packets are small and paced by the window: never hold them back. */
	setsockopt(s->sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(s->sock, (struct sockaddr *)&ss, sl) == 0)
		return true;
	if (errno != EINPROGRESS)
		return err_set_errno(errp, errno, "cannot connect to SSH server %s port %u",
				     s->host, port);
	pfd = (struct pollfd){ .fd = s->sock, .events = POLLOUT };
	do
		r = poll(&pfd, 1, left_ms(deadline));
	while (r < 0 && errno == EINTR);
	if (r == 0)
		return err_set(errp, ERR_TIMEOUT,
			       "timed out connecting to SSH server %s port %u", s->host, port);
	if (r < 0 || getsockopt(s->sock, SOL_SOCKET, SO_ERROR, &soerr, &el) < 0)
		return err_set_errno(errp, errno, "cannot connect to SSH server %s port %u",
				     s->host, port);
	if (soerr)
		return err_set_errno(errp, soerr, "cannot connect to SSH server %s port %u",
				     s->host, port);
	return true;
}

/* The host key algorithms that present a key of the pinned type. */
static const char *hostkey_methods(const char *type)
{
	if (!strcmp(type, "ssh-rsa"))
		return "rsa-sha2-512,rsa-sha2-256,ssh-rsa";
	return type;
}

static bool check_host_key(struct tp_ssh *s, const unsigned char *pinned, size_t plen,
			   struct err **errp)
{
	size_t len = 0;
	int type;
	const char *key = libssh2_session_hostkey(s->ss, &len, &type);
	const char *hash;
	char fp[64];

	if (key && len == plen && !memcmp(key, pinned, plen))
		return true;
	hash = libssh2_hostkey_hash(s->ss, LIBSSH2_HOSTKEY_HASH_SHA256);
	if (!hash)
		return err_set(errp, ERR_PROTO, "host key of %s does not match the pinned key",
			       s->host);
	b64_encode((const unsigned char *)hash, 32, fp, sizeof(fp));
	return err_set(errp, ERR_PROTO,
		       "host key of %s does not match the pinned key (server offered SHA256:%s)",
		       s->host, fp);
}

static bool readable(const char *path, const char *what, struct err **errp)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return err_set_errno(errp, errno, "cannot read %s '%s'", what, path);
	close(fd);
	return true;
}

/* Handshake, host key, authentication: everything before the pump. */
static bool ssh_setup(struct tp_ssh *s, const struct tp_ssh_opts *o, int64_t deadline,
		      struct err **errp)
{
	_cleanup_free_ char *type = NULL, *pub = NULL;
	_cleanup_free_ unsigned char *pinned = NULL;
	const char *user = o->user ? o->user : "root";
	unsigned port = o->port ? o->port : 22;
	size_t plen;
	int rc;

	if (!o->host_key || !*o->host_key)
		return err_set(errp, ERR_INVAL,
			       "no pinned host key for SSH server %s (trust on first use is not allowed)",
			       s->host);
	if (!pubkey_parse(o->host_key, "pinned host key", &type, &pinned, &plen, errp))
		return false;
	if (!o->key || !*o->key)
		return err_set(errp, ERR_INVAL, "no SSH key file given for %s", s->host);
	if (asprintf(&pub, "%s.pub", o->key) < 0)
		return err_set(errp, ERR_IO, "out of memory");
	if (!readable(o->key, "SSH key file", errp) ||
	    !readable(pub, "SSH public key file", errp))
		return false;
	if (port > 65535)
		return err_set(errp, ERR_INVAL, "invalid SSH port %u for %s", port, s->host);
	pthread_once(&ssh_once, ssh_init_once);
	if (ssh_init_rc)
		return err_set(errp, ERR_IO, "libssh2_init failed (%d)", ssh_init_rc);
	if (!tcp_connect(s, port, deadline, errp))
		return false;

	s->ss = libssh2_session_init();
	if (!s->ss)
		return err_set(errp, ERR_IO, "cannot create an SSH session for %s", s->host);
	libssh2_session_set_blocking(s->ss, 0);
	if (libssh2_session_method_pref(s->ss, LIBSSH2_METHOD_HOSTKEY, hostkey_methods(type)))
		return err_set(errp, ERR_INVAL, "unsupported host key type '%s' pinned for %s",
			       type, s->host);
	if (libssh2_session_method_pref(s->ss, LIBSSH2_METHOD_CRYPT_CS, SSH_CIPHERS) ||
	    libssh2_session_method_pref(s->ss, LIBSSH2_METHOD_CRYPT_SC, SSH_CIPHERS) ||
	    libssh2_session_method_pref(s->ss, LIBSSH2_METHOD_MAC_CS, SSH_MACS) ||
	    libssh2_session_method_pref(s->ss, LIBSSH2_METHOD_MAC_SC, SSH_MACS))
		return err_set(errp, ERR_IO, "libssh2 lacks %s / %s: %s", SSH_CIPHERS, SSH_MACS,
			       tp_ssh_lasterr(s->ss));

	while ((rc = libssh2_session_handshake(s->ss, s->sock)) == LIBSSH2_ERROR_EAGAIN)
		if (!wait_socket(s, deadline, "the SSH handshake", errp))
			return false;
	if (rc)
		return err_set(errp, ERR_PROTO, "SSH handshake with %s port %u failed: %s",
			       s->host, port, tp_ssh_lasterr(s->ss));
	if (!check_host_key(s, pinned, plen, errp))
		return false;

	while ((rc = libssh2_userauth_publickey_fromfile_ex(s->ss, user, (unsigned)strlen(user),
							    pub, o->key, NULL)) ==
	       LIBSSH2_ERROR_EAGAIN)
		if (!wait_socket(s, deadline, "SSH authentication", errp))
			return false;
	if (rc)
		return err_set(errp, ERR_INVAL,
			       "SSH authentication as %s at %s with key '%s' failed: %s",
			       user, s->host, o->key, tp_ssh_lasterr(s->ss));
	log_debug("ssh: %s@%s port %u: %s, %s", user, s->host, port,
		  libssh2_session_methods(s->ss, LIBSSH2_METHOD_CRYPT_CS),
		  libssh2_session_methods(s->ss, LIBSSH2_METHOD_MAC_CS));
	return true;
}

struct tp_ssh *tp_ssh_open(const struct tp_ssh_opts *o, struct err **errp)
{
	int timeout = o->timeout_ms > 0 ? o->timeout_ms : 10000;
	int64_t deadline = util_now_ms() + timeout;
	struct tp_ssh *s;

	if (!o->host || !*o->host) {
		err_set(errp, ERR_INVAL, "no SSH host given");
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	s->sock = -1;
	s->wakefd = -1;
	s->exec_status = -1;
	s->reqs_tail = &s->reqs;
	s->timeout_ms = timeout;
	s->host = strdup(o->host);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	if (!s->host) {
		err_set(errp, ERR_IO, "out of memory");
		tp_ssh_close(s);
		return NULL;
	}
	if (!ssh_setup(s, o, deadline, errp)) {
		tp_ssh_close(s);
		return NULL;
	}
	s->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->wakefd < 0) {
		err_set_errno(errp, errno, "eventfd");
		tp_ssh_close(s);
		return NULL;
	}
	if (pthread_create(&s->thread, NULL, tp_ssh_pump, s)) {
		err_set(errp, ERR_IO, "cannot start the SSH pump thread for %s", s->host);
		tp_ssh_close(s);
		return NULL;
	}
	s->thread_started = true;
	return s;
}

struct open_job {
	const struct tp_ssh_opts *o;
	struct tp_ssh *s;
	struct err *err;
	pthread_t t;
	bool started;
};

static void *open_one(void *arg)
{
	struct open_job *j = arg;

	j->s = tp_ssh_open(j->o, &j->err);
	return NULL;
}

bool tp_ssh_open_many(const struct tp_ssh_opts *o, unsigned n, struct tp_ssh **out,
		      struct err **errp)
{
	_cleanup_free_ struct open_job *jobs = calloc(n ? n : 1, sizeof(*jobs));
	struct err *first = NULL;

	if (!jobs)
		return err_set(errp, ERR_IO, "out of memory");
	if (!n)
		return err_set(errp, ERR_INVAL, "no SSH sessions requested for %s",
			       o->host ? o->host : "?");
	for (unsigned i = 0; i < n; i++) {
		jobs[i].o = o;
		jobs[i].started = !pthread_create(&jobs[i].t, NULL, open_one, &jobs[i]);
		if (!jobs[i].started)
			open_one(&jobs[i]); /* no thread: open it here */
	}
	for (unsigned i = 0; i < n; i++) {
		if (jobs[i].started)
			pthread_join(jobs[i].t, NULL);
		err_propagate(&first, &jobs[i].err);
	}
	if (first) {
		for (unsigned i = 0; i < n; i++)
			tp_ssh_close(jobs[i].s);
		err_propagate(errp, &first);
		return false;
	}
	for (unsigned i = 0; i < n; i++)
		out[i] = jobs[i].s;
	return true;
}

/* ---- requests to the pump ------------------------------------------------ */

static void wake(struct tp_ssh *s)
{
	uint64_t one = 1;
	ssize_t r = write(s->wakefd, &one, sizeof(one));

	(void)r; /* a full counter already wakes the pump */
}

/* Queues r for the pump and waits for its answer. */
static bool submit(struct tp_ssh *s, struct tp_ssh_req *r, struct err **errp)
{
	pthread_mutex_lock(&s->mu);
	if (s->failed) {
		err_set(errp, ERR_CLOSED, "%s", s->failed);
		pthread_mutex_unlock(&s->mu);
		close(r->fd); /* the request owns it, as when the pump refuses it */
		return false;
	}
	*s->reqs_tail = r;
	s->reqs_tail = &r->next;
	wake(s);
	while (!r->done)
		pthread_cond_wait(&s->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
	if (r->err) {
		err_propagate(errp, &r->err);
		return false;
	}
	return true;
}

static bool set_nonblock(int fd, struct err **errp)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return err_set_errno(errp, errno, "fcntl on a local SSH stream");
	return true;
}

int tp_ssh_exec(struct tp_ssh *s, const char *const argv[], struct err **errp)
{
	struct tp_ssh_req r = { .kind = TP_SSH_REQ_EXEC, .fd = -1 };
	_cleanup_free_ char *cmd = tp_ssh_quote_argv(argv, errp);
	_cleanup_close_ int mine = -1;
	int sv[2];

	if (!cmd)
		return -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		err_set_errno(errp, errno, "socketpair for a command on %s", s->host);
		return -1;
	}
	mine = sv[0];
	r.fd = sv[1];
	r.cmd = cmd;
	if (!set_nonblock(r.fd, errp)) {
		close(r.fd);
		return -1;
	}
	if (!submit(s, &r, errp))
		return -1;
	log_debug("ssh: %s: running %s", s->host, cmd);
	return TAKE_FD(mine);
}

bool tp_ssh_forward(struct tp_ssh *s, int fd, const char *host, unsigned port,
		    struct err **errp)
{
	struct tp_ssh_req r = { .kind = TP_SSH_REQ_FORWARD, .fd = fd,
				.fhost = host, .fport = port };

	if (!host || !*host || !port || port > 65535) {
		close(fd);
		return err_set(errp, ERR_INVAL, "invalid forward target '%s' port %u via %s",
			       host ? host : "", port, s->host);
	}
	if (!set_nonblock(fd, errp)) {
		close(fd);
		return false;
	}
	return submit(s, &r, errp);
}

bool tp_ssh_wait_idle(struct tp_ssh *s, int timeout_ms, struct err **errp)
{
	int64_t deadline = timeout_ms < 0 ? -1 : util_now_ms() + timeout_ms;
	bool ok = true;

	pthread_mutex_lock(&s->mu);
	while (!s->failed && (s->nchans || s->reqs)) {
		struct timespec ts;

		if (deadline < 0) {
			pthread_cond_wait(&s->cv, &s->mu);
			continue;
		}
		if (util_now_ms() >= deadline) {
			ok = err_set(errp, ERR_TIMEOUT,
				     "timed out waiting for %u SSH channels to %s to end",
				     s->nchans, s->host);
			break;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&s->cv, &s->mu, &ts);
	}
	if (ok && s->failed)
		ok = err_set(errp, ERR_CLOSED, "%s", s->failed);
	pthread_mutex_unlock(&s->mu);
	return ok;
}

const char *tp_ssh_exec_stderr(struct tp_ssh *s)
{
	pthread_mutex_lock(&s->mu);
	free(s->stderr_copy);
	s->stderr_copy = strndup(s->stderr_buf, s->stderr_len);
	pthread_mutex_unlock(&s->mu);
	return s->stderr_copy ? s->stderr_copy : "";
}

int tp_ssh_exec_status(struct tp_ssh *s)
{
	int st;

	pthread_mutex_lock(&s->mu);
	st = s->exec_status;
	pthread_mutex_unlock(&s->mu);
	return st;
}

void tp_ssh_stats(struct tp_ssh *s, uint64_t *out_bytes, uint64_t *in_bytes)
{
	if (out_bytes)
		*out_bytes = __atomic_load_n(&s->out_bytes, __ATOMIC_RELAXED);
	if (in_bytes)
		*in_bytes = __atomic_load_n(&s->in_bytes, __ATOMIC_RELAXED);
}

const char *tp_ssh_failed(struct tp_ssh *s)
{
	const char *f;

	pthread_mutex_lock(&s->mu);
	f = s->failed;
	pthread_mutex_unlock(&s->mu);
	return f;
}

void tp_ssh_close(struct tp_ssh *s)
{
	if (!s)
		return;
	if (s->thread_started) {
		pthread_mutex_lock(&s->mu);
		s->stop = true;
		wake(s);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->thread, NULL);
	}
	if (s->sock >= 0)
		shutdown(s->sock, SHUT_RDWR);
	if (s->ss) {
		/* The socket is shut down: nothing here can block. */
		libssh2_session_set_blocking(s->ss, 1);
		libssh2_session_free(s->ss);
	}
	if (s->sock >= 0)
		close(s->sock);
	if (s->wakefd >= 0)
		close(s->wakefd);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s->failed);
	free(s->stderr_copy);
	free(s->pfd);
	free(s->host);
	free(s);
}
