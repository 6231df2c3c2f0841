/*
 * tp_ssh_pump.c - the pump thread of an SSH session: opens the channels
 * callers ask for and moves bytes between them and local fds, both ways,
 * with non-blocking libssh2 calls and one poll() over everything.
 *
 * A pass services every channel once: flush what came from the server to
 * the local fd, read more from the channel, read the local fd, write to the
 * channel until its window or the socket is full, propagate EOFs, end
 * finished channels. Passes repeat while any of them moved something; then
 * the thread sleeps in poll() on the local fds, the session socket (in the
 * directions libssh2 last blocked on) and an eventfd callers ring.
 *
 * Two libssh2 rules shape the code:
 *  - a call that returned EAGAIN while a packet was half sent must be
 *    repeated, with the same arguments, before any other call on the
 *    session (else LIBSSH2_ERROR_BAD_USE): may()/track() enforce that;
 *  - reading for one channel queues packets of the others, so before
 *    sleeping the pump asks libssh2 whether any channel already has data,
 *    an EOF or window space waiting.
 */
#include "tp_ssh_int.h"
#include "../common/log.h"
#include "../common/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PUMP_BUF (256u << 10)   /* per direction and channel */
#define CHAN_WINDOW (16u << 20) /* what the server may send ahead */
#define CHAN_PACKET 32768       /* largest data packet we accept */

enum op { OP_NONE, OP_OPEN, OP_START, OP_READ, OP_READ_ERR, OP_WRITE, OP_EOF,
	  OP_WAIT_CLOSED, OP_FREE };

struct tp_ssh_chan {
	struct tp_ssh_chan *next;
	LIBSSH2_CHANNEL *ch;
	int fd;                 /* local end, non-blocking; -1 once closed */
	bool exec;
	unsigned gen;           /* exec: which exec of the session */
	char *obuf;             /* local -> server */
	size_t ooff, olen;
	char *ibuf;             /* server -> local */
	size_t ioff, ilen;
	bool l_eof;             /* the local fd said EOF */
	bool eof_sent;          /* ... and the server was told */
	bool r_eof;             /* the server said EOF */
	bool shut;              /* ... and the local fd was told */
	bool done;              /* to be freed */
	char what[96];          /* for the log */
};

/* ---- libssh2 call discipline --------------------------------------------- */

static bool may(struct tp_ssh *s, const void *obj, int op)
{
	return s->held_op == OP_NONE || (s->held_obj == obj && s->held_op == op);
}

static long track(struct tp_ssh *s, const void *obj, int op, long rc)
{
	if (rc < 0 && rc != LIBSSH2_ERROR_EAGAIN)
		s->call_errno = errno; /* what the socket said, if it failed */
	if (rc == LIBSSH2_ERROR_EAGAIN &&
	    (libssh2_session_block_directions(s->ss) & LIBSSH2_SESSION_BLOCK_OUTBOUND)) {
		s->held_obj = obj;
		s->held_op = op;
	} else if (s->held_obj == obj && s->held_op == op) {
		s->held_op = OP_NONE;
	}
	return rc;
}

/* Errors that end one channel; any other ends the session. */
static bool chan_level(long rc)
{
	switch (rc) {
	case LIBSSH2_ERROR_CHANNEL_FAILURE:
	case LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED:
	case LIBSSH2_ERROR_CHANNEL_UNKNOWN:
	case LIBSSH2_ERROR_CHANNEL_WINDOW_EXCEEDED:
	case LIBSSH2_ERROR_CHANNEL_PACKET_EXCEEDED:
	case LIBSSH2_ERROR_CHANNEL_CLOSED:
	case LIBSSH2_ERROR_CHANNEL_EOF_SENT:
		return true;
	default:
		return false;
	}
}

/* ---- failure --------------------------------------------------------------- */

static void set_failed(struct tp_ssh *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void set_failed(struct tp_ssh *s, const char *fmt, ...)
{
	va_list ap;
	char *m = NULL;

	va_start(ap, fmt);
	if (vasprintf(&m, fmt, ap) < 0)
		m = NULL;
	va_end(ap);
	pthread_mutex_lock(&s->mu);
	if (!s->failed)
		s->failed = m ? m : strdup("SSH connection lost");
	else
		free(m);
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	s->broken = true;
}

/* The connection broke: say why as plainly as the socket allows. */
static void conn_lost(struct tp_ssh *s, long rc)
{
	int soerr = 0;
	socklen_t l = sizeof(soerr);
	char c;
	ssize_t n;

	if ((rc == LIBSSH2_ERROR_SOCKET_RECV || rc == LIBSSH2_ERROR_SOCKET_SEND) &&
	    s->call_errno && s->call_errno != EAGAIN) {
		set_failed(s, "SSH connection to %s lost: %s", s->host, strerror(s->call_errno));
		return;
	}
	if (!getsockopt(s->sock, SOL_SOCKET, SO_ERROR, &soerr, &l) && soerr) {
		set_failed(s, "SSH connection to %s lost: %s", s->host, strerror(soerr));
		return;
	}
	n = recv(s->sock, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	/* rc 0: poll saw the server's FIN, maybe behind packets nobody read
	 * (an idle session leaves e.g. OpenSSH's hostkeys-00 request unread);
	 * libssh2's last error is then stale, from another call. */
	if (n == 0 || (n > 0 && rc == 0))
		set_failed(s, "SSH connection to %s lost: the server closed the connection",
			   s->host);
	else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
		set_failed(s, "SSH connection to %s lost: %s", s->host, strerror(errno));
	else
		set_failed(s, "SSH connection to %s lost: %s (libssh2 error %ld)", s->host,
			   tp_ssh_lasterr(s->ss), rc);
}

/* A reset rather than a FIN where possible: the reader must not take an
 * aborted stream for a complete one. */
static void close_abort(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* ---- channels ---------------------------------------------------------------- */

static struct tp_ssh_chan *chan_alloc(void)
{
	struct tp_ssh_chan *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->fd = -1;
	c->obuf = malloc(PUMP_BUF);
	c->ibuf = malloc(PUMP_BUF);
	if (!c->obuf || !c->ibuf) {
		free(c->obuf);
		free(c->ibuf);
		free(c);
		return NULL;
	}
	return c;
}

static void chan_destroy(struct tp_ssh_chan *c, bool abort_fd)
{
	if (c->fd >= 0) {
		if (abort_fd)
			close_abort(c->fd);
		else
			close(c->fd);
	}
	free(c->obuf);
	free(c->ibuf);
	free(c);
}

/* Ends a channel: the fd goes now, the libssh2 channel at the next reap. */
static void chan_end(struct tp_ssh_chan *c, bool aborted)
{
	if (c->fd >= 0) {
		if (aborted)
			close_abort(c->fd);
		else
			close(c->fd);
		c->fd = -1;
	}
	c->done = true;
	log_debug("ssh: %s %s", c->what, aborted ? "aborted" : "ended");
}

/* A failed channel call: ends the channel or, if the session broke, all. */
static bool chan_error(struct tp_ssh *s, struct tp_ssh_chan *c, long rc, const char *doing)
{
	if (chan_level(rc)) {
		log_debug("ssh: %s: %s: %s", c->what, doing, tp_ssh_lasterr(s->ss));
		chan_end(c, true);
		return true;
	}
	conn_lost(s, rc);
	return true;
}

static void keep_stderr(struct tp_ssh *s, struct tp_ssh_chan *c, const char *p, size_t n)
{
	pthread_mutex_lock(&s->mu);
	if (c->gen == s->exec_gen) {
		if (n >= TP_SSH_STDERR_KEEP) {
			p += n - TP_SSH_STDERR_KEEP;
			n = TP_SSH_STDERR_KEEP;
		}
		if (s->stderr_len + n > TP_SSH_STDERR_KEEP) {
			size_t drop = s->stderr_len + n - TP_SSH_STDERR_KEEP;

			memmove(s->stderr_buf, s->stderr_buf + drop, s->stderr_len - drop);
			s->stderr_len -= drop;
		}
		memcpy(s->stderr_buf + s->stderr_len, p, n);
		s->stderr_len += n;
	}
	pthread_mutex_unlock(&s->mu);
}

static int signal_number(const char *name)
{
	static const struct { const char *name; int num; } sigs[] = {
		{ "HUP", 1 }, { "INT", 2 }, { "QUIT", 3 }, { "ILL", 4 }, { "ABRT", 6 },
		{ "FPE", 8 }, { "KILL", 9 }, { "USR1", 10 }, { "SEGV", 11 },
		{ "USR2", 12 }, { "PIPE", 13 }, { "ALRM", 14 }, { "TERM", 15 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
		if (!strcmp(sigs[i].name, name))
			return sigs[i].num;
	return 127; /* unknown: still above any exit status */
}

static void record_exit(struct tp_ssh *s, struct tp_ssh_chan *c)
{
	int st = libssh2_channel_get_exit_status(c->ch);
	char *sig = NULL;
	size_t sl = 0;

	if (!libssh2_channel_get_exit_signal(c->ch, &sig, &sl, NULL, NULL, NULL, NULL) && sig) {
		st = 128 + signal_number(sig);
		libssh2_free(s->ss, sig);
	}
	pthread_mutex_lock(&s->mu);
	if (c->gen == s->exec_gen)
		s->exec_status = st;
	pthread_mutex_unlock(&s->mu);
	log_debug("ssh: %s: exit status %d", c->what, st);
}

/* server -> local: flush, then read more. */
static bool pump_in(struct tp_ssh *s, struct tp_ssh_chan *c)
{
	bool progress = false;
	ssize_t n;

	if (c->ilen) {
		n = send(c->fd, c->ibuf + c->ioff, c->ilen, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == ENOTSOCK)
			n = write(c->fd, c->ibuf + c->ioff, c->ilen);
		if (n > 0) {
			c->ioff += (size_t)n;
			c->ilen -= (size_t)n;
			progress = true;
		} else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			/* Nobody reads the local end any more. */
			log_debug("ssh: %s: local end: %s", c->what, strerror(errno));
			chan_end(c, true);
			return true;
		}
	}
	if (c->ilen || c->r_eof || !may(s, c, OP_READ))
		return progress;
	n = track(s, c, OP_READ, libssh2_channel_read(c->ch, c->ibuf, PUMP_BUF));
	if (n > 0) {
		c->ioff = 0;
		c->ilen = (size_t)n;
		__atomic_add_fetch(&s->in_bytes, (uint64_t)n, __ATOMIC_RELAXED);
		return true;
	}
	if (n < 0 && n != LIBSSH2_ERROR_EAGAIN)
		return chan_error(s, c, n, "read");
	if (libssh2_channel_eof(c->ch)) {
		c->r_eof = true;
		progress = true;
	}
	return progress;
}

/* local -> server: read the fd when the buffer is empty, write until the
 * window or the socket is full. */
static bool pump_out(struct tp_ssh *s, struct tp_ssh_chan *c)
{
	bool progress = false;
	ssize_t n;

	if (!c->olen && !c->l_eof) {
		n = read(c->fd, c->obuf, PUMP_BUF);
		if (n > 0) {
			c->ooff = 0;
			c->olen = (size_t)n;
			progress = true;
		} else if (n == 0) {
			c->l_eof = true;
			progress = true;
		} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			/* A reset is not an end of stream: abort the channel. */
			log_debug("ssh: %s: local end: %s", c->what, strerror(errno));
			chan_end(c, true);
			return true;
		}
	}
	while (c->olen && may(s, c, OP_WRITE)) {
		n = track(s, c, OP_WRITE,
			  libssh2_channel_write(c->ch, c->obuf + c->ooff, c->olen));
		if (n == 0 || n == LIBSSH2_ERROR_EAGAIN)
			break;
		if (n < 0)
			return chan_error(s, c, n, "write");
		c->ooff += (size_t)n;
		c->olen -= (size_t)n;
		__atomic_add_fetch(&s->out_bytes, (uint64_t)n, __ATOMIC_RELAXED);
		progress = true;
	}
	if (c->l_eof && !c->olen && !c->eof_sent && may(s, c, OP_EOF)) {
		long rc = track(s, c, OP_EOF, libssh2_channel_send_eof(c->ch));

		if (rc == 0) {
			c->eof_sent = true;
			progress = true;
		} else if (rc != LIBSSH2_ERROR_EAGAIN) {
			return chan_error(s, c, rc, "send EOF");
		}
	}
	return progress;
}

static bool step_chan(struct tp_ssh *s, struct tp_ssh_chan *c)
{
	bool progress = pump_in(s, c);
	long rc;

	if (c->done || s->broken)
		return true;
	if (c->exec && may(s, c, OP_READ_ERR)) {
		char eb[4096];

		rc = track(s, c, OP_READ_ERR, libssh2_channel_read_stderr(c->ch, eb, sizeof(eb)));
		if (rc > 0) {
			__atomic_add_fetch(&s->in_bytes, (uint64_t)rc, __ATOMIC_RELAXED);
			keep_stderr(s, c, eb, (size_t)rc);
			progress = true;
		} else if (rc < 0 && rc != LIBSSH2_ERROR_EAGAIN) {
			return chan_error(s, c, rc, "read stderr");
		}
	}
	/* A forward passes the server's EOF on as a half close; a command's
	 * fd ends only once it exited, so that its status is known by then. */
	if (!c->exec && c->r_eof && !c->ilen && !c->shut) {
		if (shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTSOCK)
			log_debug("ssh: %s: shutdown: %s", c->what, strerror(errno));
		c->shut = true;
		progress = true;
	}
	progress |= pump_out(s, c);
	if (c->done || s->broken)
		return true;
	if (c->exec && c->r_eof && !c->ilen && may(s, c, OP_WAIT_CLOSED)) {
		rc = track(s, c, OP_WAIT_CLOSED, libssh2_channel_wait_closed(c->ch));
		if (rc == 0) {
			record_exit(s, c);
			chan_end(c, false);
			return true;
		}
		if (rc != LIBSSH2_ERROR_EAGAIN)
			return chan_error(s, c, rc, "wait for exit");
	}
	if (!c->exec && c->shut && c->eof_sent) {
		chan_end(c, false);
		progress = true;
	}
	/* Data waits for window, but the server may have closed the channel
	 * (its far end went away): then none will come and the stream is cut. */
	if (!c->exec && c->r_eof && c->olen && !libssh2_channel_window_write(c->ch) &&
	    may(s, c, OP_WAIT_CLOSED)) {
		rc = track(s, c, OP_WAIT_CLOSED, libssh2_channel_wait_closed(c->ch));
		if (rc == 0) {
			log_debug("ssh: %s: closed by the server with data pending", c->what);
			chan_end(c, true);
			return true;
		}
		if (rc != LIBSSH2_ERROR_EAGAIN)
			return chan_error(s, c, rc, "wait for close");
	}
	return progress;
}

/* Frees the libssh2 side of ended channels. */
static bool reap(struct tp_ssh *s)
{
	struct tp_ssh_chan **pp = &s->chans, *c;
	bool progress = false;

	while ((c = *pp)) {
		if (!c->done) {
			pp = &c->next;
			continue;
		}
		if (c->ch) {
			long rc;

			if (!may(s, c, OP_FREE)) {
				pp = &c->next;
				continue;
			}
			rc = track(s, c, OP_FREE, libssh2_channel_free(c->ch));
			if (rc == LIBSSH2_ERROR_EAGAIN) {
				pp = &c->next;
				continue;
			}
			c->ch = NULL;
		}
		*pp = c->next;
		chan_destroy(c, false);
		pthread_mutex_lock(&s->mu);
		s->nchans--;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		progress = true;
	}
	return progress;
}

/* ---- opening channels -------------------------------------------------------- */

/* Answers the request being opened; its fd goes to c on success. */
static void answer(struct tp_ssh *s, struct err *e, struct tp_ssh_chan *c)
{
	struct tp_ssh_req *r = s->cur;

	if (e) {
		close(r->fd);
	} else {
		c->fd = r->fd;
		c->ch = s->cur_ch;
		c->next = s->chans;
		s->chans = c;
	}
	pthread_mutex_lock(&s->mu);
	if (e) {
		s->nchans--;
	} else if (c->exec) {
		c->gen = ++s->exec_gen;
		s->exec_status = -1;
		s->stderr_len = 0;
	}
	r->err = e;
	r->done = true; /* r belongs to the caller again from here */
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	s->cur = NULL;
	s->cur_ch = NULL;
}

static bool take_request(struct tp_ssh *s)
{
	struct tp_ssh_req *r;

	pthread_mutex_lock(&s->mu);
	r = s->cur || s->stop || s->broken ? NULL : s->reqs;
	if (r) {
		s->reqs = r->next;
		if (!s->reqs)
			s->reqs_tail = &s->reqs;
		s->nchans++;
		s->cur = r;
		s->cur_deadline = util_now_ms() + s->timeout_ms;
	}
	pthread_mutex_unlock(&s->mu);
	return r != NULL;
}

static size_t put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
	return 4;
}

static size_t put_str(unsigned char *p, const char *str)
{
	size_t n = strlen(str);

	put_u32(p, (uint32_t)n);
	memcpy(p + 4, str, n);
	return 4 + n;
}

/* direct-tcpip's open message (RFC 4254 7.2): target, then originator. */
static LIBSSH2_CHANNEL *open_direct(struct tp_ssh *s, const struct tp_ssh_req *r)
{
	size_t hl = strlen(r->fhost), n = 0;
	unsigned char *msg = malloc(hl + 32);
	LIBSSH2_CHANNEL *ch;

	if (!msg)
		return NULL;
	n += put_str(msg + n, r->fhost);
	n += put_u32(msg + n, r->fport);
	n += put_str(msg + n, "127.0.0.1");
	n += put_u32(msg + n, 0);
	ch = libssh2_channel_open_ex(s->ss, "direct-tcpip", sizeof("direct-tcpip") - 1,
				     CHAN_WINDOW, CHAN_PACKET, (const char *)msg, (unsigned)n);
	free(msg);
	return ch;
}

static void req_failed(struct tp_ssh *s, struct tp_ssh_chan *c, long rc, const char *what)
{
	struct err *e = NULL;

	if (!chan_level(rc)) {
		conn_lost(s, rc); /* the broken session answers the request */
		return;
	}
	err_set(&e, ERR_IO, "SSH server %s refused %s: %s", s->host, what,
		tp_ssh_lasterr(s->ss));
	if (s->cur_ch) {
		/* Opened but not started: free it with the ended channels. */
		c->ch = s->cur_ch;
		c->done = true;
		c->next = s->chans;
		s->chans = c;
		s->cur_ch = NULL;
		pthread_mutex_lock(&s->mu);
		s->nchans++; /* the reap decrements it */
		pthread_mutex_unlock(&s->mu);
	} else {
		chan_destroy(c, false);
	}
	answer(s, e, NULL);
}

static bool step_request(struct tp_ssh *s, struct tp_ssh_chan **next)
{
	struct tp_ssh_req *r = s->cur;
	struct tp_ssh_chan *c = *next;
	char what[160];
	long rc;

	if (!r)
		return false;
	if (r->kind == TP_SSH_REQ_EXEC)
		snprintf(what, sizeof(what), "to run a command");
	else
		snprintf(what, sizeof(what), "a channel to %s port %u", r->fhost, r->fport);
	if (!c) {
		c = chan_alloc();
		if (!c) {
			struct err *e = NULL;

			err_set(&e, ERR_IO, "out of memory for an SSH channel to %s", s->host);
			answer(s, e, NULL);
			return true;
		}
		c->exec = r->kind == TP_SSH_REQ_EXEC;
		if (c->exec)
			snprintf(c->what, sizeof(c->what), "%s: command", s->host);
		else
			snprintf(c->what, sizeof(c->what), "%s: forward to %s port %u", s->host,
				 r->fhost, r->fport);
		*next = c;
	}
	if (!s->cur_ch) {
		LIBSSH2_CHANNEL *ch;

		if (!may(s, r, OP_OPEN))
			return false;
		ch = c->exec ? libssh2_channel_open_ex(s->ss, "session", sizeof("session") - 1,
						       CHAN_WINDOW, CHAN_PACKET, NULL, 0)
			     : open_direct(s, r);
		rc = track(s, r, OP_OPEN, ch ? 0 : libssh2_session_last_errno(s->ss));
		if (rc && rc != LIBSSH2_ERROR_EAGAIN) {
			*next = NULL;
			req_failed(s, c, rc, what);
			return true;
		}
		if (rc)
			goto pending;
		s->cur_ch = ch;
		if (!c->exec) {
			*next = NULL;
			answer(s, NULL, c);
			log_debug("ssh: %s: open", c->what);
			return true;
		}
	}
	if (!may(s, r, OP_START))
		return false;
	rc = track(s, r, OP_START,
		   libssh2_channel_process_startup(s->cur_ch, "exec", sizeof("exec") - 1,
						   r->cmd, (unsigned)strlen(r->cmd)));
	if (rc && rc != LIBSSH2_ERROR_EAGAIN) {
		*next = NULL;
		req_failed(s, c, rc, what);
		return true;
	}
	if (rc)
		goto pending;
	*next = NULL;
	answer(s, NULL, c);
	log_debug("ssh: %s: started", c->what);
	return true;
pending:
	if (util_now_ms() > s->cur_deadline) {
		/* libssh2 cannot abandon a half-open channel: the session goes. */
		set_failed(s, "SSH server %s did not answer a request for %s within %d ms",
			   s->host, what, s->timeout_ms);
		return true;
	}
	return false;
}

/* ---- the loop ------------------------------------------------------------------ */

/* The session broke: every local end and every waiting caller learns it. */
static void fail_all(struct tp_ssh *s, struct tp_ssh_chan **next)
{
	struct tp_ssh_chan *c;
	struct tp_ssh_req *r;

	while ((c = s->chans)) {
		s->chans = c->next;
		chan_destroy(c, true); /* session_free frees the libssh2 side */
	}
	if (*next) {
		chan_destroy(*next, false);
		*next = NULL;
	}
	pthread_mutex_lock(&s->mu);
	if (s->cur) {
		r = s->cur;
		close(r->fd);
		err_set(&r->err, ERR_CLOSED, "%s", s->failed);
		r->done = true;
		s->cur = NULL;
		s->cur_ch = NULL; /* session_free frees it */
	}
	while ((r = s->reqs)) {
		s->reqs = r->next;
		close(r->fd);
		err_set(&r->err, ERR_CLOSED, "%s", s->failed);
		r->done = true;
	}
	s->reqs_tail = &s->reqs;
	s->nchans = 0;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	log_debug("ssh: %s", s->failed);
}

static void drain_wake(struct tp_ssh *s)
{
	uint64_t v;
	ssize_t r = read(s->wakefd, &v, sizeof(v));

	(void)r;
}

static void pump_wait(struct tp_ssh *s)
{
	size_t need = 2, n = 0;
	bool want_in = s->cur != NULL, held = s->held_op != OP_NONE;
	int timeout = -1, dirs, r;
	struct pollfd *sp;

	for (struct tp_ssh_chan *c = s->chans; c; c = c->next)
		need++;
	if (need > s->pfd_cap) {
		struct pollfd *p = realloc(s->pfd, need * 2 * sizeof(*p));

		if (!p) {
			usleep(1000);
			return;
		}
		s->pfd = p;
		s->pfd_cap = need * 2;
	}
	s->pfd[n++] = (struct pollfd){ .fd = s->wakefd, .events = POLLIN };
	for (struct tp_ssh_chan *c = s->chans; c; c = c->next) {
		short ev = 0;

		if (c->done) {
			if (c->ch && !held)
				timeout = 0; /* reap was held off */
			continue;
		}
		if (c->ilen) {
			ev |= POLLOUT;
		} else if (!c->r_eof) {
			want_in = true;
			if (!held && (libssh2_poll_channel_read(c->ch, 0) ||
				      libssh2_channel_eof(c->ch)))
				timeout = 0;
		}
		if (!c->olen && !c->l_eof)
			ev |= POLLIN;
		if (c->olen || (c->l_eof && !c->eof_sent)) {
			want_in = true;
			if (!held && c->olen && libssh2_channel_window_write(c->ch))
				timeout = 0;
			/* As below: the server's close may sit in another queue. */
			else if (!c->exec && c->r_eof && c->olen && timeout != 0)
				timeout = 5;
		}
		if (c->exec) {
			want_in = true;
			if (!held && libssh2_poll_channel_read(c->ch, 1))
				timeout = 0;
			/* The close may sit in another channel's queue. */
			if (c->r_eof && !c->ilen && timeout != 0)
				timeout = 5;
		}
		if (ev)
			s->pfd[n++] = (struct pollfd){ .fd = c->fd, .events = ev };
	}
	if (s->cur) {
		int64_t l = s->cur_deadline - util_now_ms() + 1;

		if (l < 0)
			l = 0;
		if (timeout < 0 || l < timeout)
			timeout = (int)l;
	}
	dirs = libssh2_session_block_directions(s->ss);
	sp = &s->pfd[n++];
	*sp = (struct pollfd){ .fd = s->sock };
	if (held) {
		sp->events = POLLOUT; /* only the held call may run: it needs to send */
	} else {
		if (want_in)
			sp->events |= POLLIN;
		if (dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND)
			sp->events |= POLLOUT;
	}
	if (!s->rdhup)
		sp->events |= POLLRDHUP;
	do
		r = poll(s->pfd, n, timeout);
	while (r < 0 && errno == EINTR);
	if (s->pfd[0].revents)
		drain_wake(s);
	if (sp->revents & (POLLRDHUP | POLLHUP | POLLERR)) {
		s->rdhup = true;
		/* Nothing reads the socket now: no call would notice. */
		if (!s->chans && !s->cur)
			conn_lost(s, 0);
		else if ((sp->revents & (POLLHUP | POLLERR)) && !(sp->events & POLLIN))
			conn_lost(s, 0);
	}
}

/* Stop requested: end what is left and say goodbye without blocking. */
static void teardown(struct tp_ssh *s, struct tp_ssh_chan *next)
{
	struct tp_ssh_chan *c;

	while ((c = s->chans)) {
		s->chans = c->next;
		chan_destroy(c, !c->done && !(c->eof_sent && c->r_eof));
	}
	if (next)
		chan_destroy(next, false);
	if (s->cur) {
		struct err *e = NULL;

		err_set(&e, ERR_CLOSED, "SSH session to %s closed", s->host);
		answer(s, e, NULL);
	}
	if (!s->broken && s->held_op == OP_NONE)
		libssh2_session_disconnect(s->ss, "closed by vmmigrate");
	shutdown(s->sock, SHUT_RDWR);
}

void *tp_ssh_pump(void *arg)
{
	struct tp_ssh *s = arg;
	struct tp_ssh_chan *next = NULL; /* for the request being opened */

	for (;;) {
		bool progress, stop;

		pthread_mutex_lock(&s->mu);
		stop = s->stop;
		pthread_mutex_unlock(&s->mu);
		if (stop)
			break;
		progress = !s->broken && take_request(s);
		if (!s->broken)
			progress |= step_request(s, &next);
		for (struct tp_ssh_chan *c = s->chans; c && !s->broken; c = c->next)
			if (!c->done)
				progress |= step_chan(s, c);
		if (!s->broken)
			progress |= reap(s);
		if (s->broken) {
			struct pollfd p = { .fd = s->wakefd, .events = POLLIN };

			if (!s->failed_all) {
				fail_all(s, &next);
				s->failed_all = true;
			}
			poll(&p, 1, -1);
			drain_wake(s);
			continue;
		}
		if (!progress)
			pump_wait(s);
	}
	teardown(s, next);
	return NULL;
}
