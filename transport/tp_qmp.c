/*
 * tp_qmp.c - QMP client: greeting, capabilities, commands with ids,
 * queued events, fd passing. Contract in tp.h.
 *
 * The socket is non-blocking and every wait goes through poll() with a
 * deadline, so a QEMU that hangs or closes mid-command costs at most the
 * caller's timeout and yields a clear error instead of a hang.
 */
#include "tp.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct tp_qmp {
	int fd;
	struct tp_jsonl rd;
	uint64_t next_id;
	char *version;
	struct err *broken;        /* sticky: set once the stream is unusable */
	struct json_object **evq;  /* ring of queued events */
	size_t ev_head, ev_count, ev_cap;
	size_t ev_dropped;
};

/* ---- connection state ------------------------------------------------ */

/* Every call on a broken connection reports why it broke. */
static bool fail_broken(struct tp_qmp *q, struct err **errp)
{
	return err_set(errp, q->broken->code, "%s", q->broken->msg);
}

/* Marks the connection broken with e (taken) and reports it. */
static bool set_broken(struct tp_qmp *q, struct err *e, struct err **errp)
{
	if (!q->broken)
		q->broken = e;
	else
		err_free(e);
	return fail_broken(q, errp);
}

static int remaining_ms(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - util_now_ms();
	return left < 0 ? 0 : (int)(left > INT32_MAX ? INT32_MAX : left);
}

static int64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : util_now_ms() + timeout_ms;
}

/* ---- event queue ----------------------------------------------------- */

static void ev_push(struct tp_qmp *q, struct json_object *ev)
{
	if (q->ev_count == q->ev_cap) {
		if (q->ev_cap >= TP_QMP_MAX_EVENTS) {
			/* Full: the oldest event is the least likely to matter. */
			json_object_put(q->evq[q->ev_head]);
			q->ev_head = (q->ev_head + 1) % q->ev_cap;
			q->ev_count--;
			q->ev_dropped++;
		} else {
			size_t ncap = q->ev_cap ? q->ev_cap * 2 : 16;
			struct json_object **n = calloc(ncap, sizeof(*n));

			if (!n) {
				json_object_put(ev);
				q->ev_dropped++;
				return;
			}
			for (size_t i = 0; i < q->ev_count; i++)
				n[i] = q->evq[(q->ev_head + i) % q->ev_cap];
			free(q->evq);
			q->evq = n;
			q->ev_cap = ncap;
			q->ev_head = 0;
		}
	}
	q->evq[(q->ev_head + q->ev_count) % q->ev_cap] = ev;
	q->ev_count++;
}

/* Removes and returns the i-th queued event, keeping the others in order. */
static struct json_object *ev_take(struct tp_qmp *q, size_t i)
{
	struct json_object *ev = q->evq[(q->ev_head + i) % q->ev_cap];

	for (size_t j = i; j + 1 < q->ev_count; j++)
		q->evq[(q->ev_head + j) % q->ev_cap] =
			q->evq[(q->ev_head + j + 1) % q->ev_cap];
	q->ev_count--;
	return ev;
}

static const char *ev_name(struct json_object *ev)
{
	struct json_object *n;

	if (!json_object_object_get_ex(ev, "event", &n))
		return "";
	return json_object_get_string(n);
}

struct json_object *tp_qmp_pop_event(struct tp_qmp *q)
{
	if (!q->ev_count)
		return NULL;
	return ev_take(q, 0);
}

size_t tp_qmp_events_dropped(const struct tp_qmp *q)
{
	return q->ev_dropped;
}

/* ---- reading ----------------------------------------------------------- */

/* Waits up to the deadline for bytes and feeds them to the reader.
 * `waiting_for` names what we wait for, for the error text. */
static bool read_some(struct tp_qmp *q, int64_t deadline, const char *waiting_for,
		      struct err **errp)
{
	char buf[65536];
	struct pollfd pfd = { .fd = q->fd, .events = POLLIN };
	struct err *e = NULL;
	ssize_t n;
	int r;

	r = poll(&pfd, 1, remaining_ms(deadline));
	if (r < 0 && errno == EINTR)
		return true;
	if (r < 0) {
		err_set_errno(&e, errno, "poll on QMP socket");
		return set_broken(q, e, errp);
	}
	if (r == 0)
		return err_set(errp, ERR_TIMEOUT, "timed out waiting for %s from QEMU",
			       waiting_for);
	n = recv(q->fd, buf, sizeof(buf), 0);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	if (n < 0) {
		err_set_errno(&e, errno, "QMP connection failed while waiting for %s",
			      waiting_for);
		return set_broken(q, e, errp);
	}
	if (n == 0) {
		err_set(&e, ERR_CLOSED, "QEMU closed the QMP connection while waiting for %s",
			waiting_for);
		return set_broken(q, e, errp);
	}
	if (!tp_jsonl_feed(&q->rd, buf, (size_t)n, &e))
		return set_broken(q, e, errp);
	return true;
}

/* Next whole message, reading as needed. */
static struct json_object *next_msg(struct tp_qmp *q, int64_t deadline,
				    const char *waiting_for, struct err **errp)
{
	struct json_object *m;
	struct err *e = NULL;
	int r;

	if (q->broken) {
		fail_broken(q, errp);
		return NULL;
	}
	for (;;) {
		r = tp_jsonl_next(&q->rd, &m, &e);
		if (r < 0) {
			set_broken(q, e, errp);
			return NULL;
		}
		if (r > 0)
			return m;
		if (!read_some(q, deadline, waiting_for, errp))
			return NULL;
	}
}

bool tp_qmp_pump(struct tp_qmp *q, int timeout_ms, struct err **errp)
{
	int64_t deadline = deadline_of(timeout_ms);
	struct err *e = NULL;

	if (q->broken)
		return fail_broken(q, errp);
	for (;;) {
		struct json_object *m;
		int r = tp_jsonl_next(&q->rd, &m, &e);

		if (r < 0)
			return set_broken(q, e, errp);
		if (r > 0) {
			if (json_object_object_get_ex(m, "event", NULL))
				ev_push(q, m);
			else
				json_object_put(m); /* a stale reply to a timed-out call */
			continue;
		}
		if (!read_some(q, deadline, "events", &e)) {
			bool timed_out = e->code == ERR_TIMEOUT;

			if (timed_out)
				err_free(e);
			else
				err_propagate(errp, &e);
			return timed_out;
		}
		if (timeout_ms == 0)
			deadline = util_now_ms(); /* only what is ready now */
	}
}

/* ---- writing ----------------------------------------------------------- */

static bool send_all(struct tp_qmp *q, const char *data, size_t len, int fd_to_pass,
		     int64_t deadline, const char *cmd, struct err **errp)
{
	struct err *e = NULL;

	while (len) {
		struct pollfd pfd = { .fd = q->fd, .events = POLLOUT };
		struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
		union {
			char buf[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} cm;
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n;
		int r = poll(&pfd, 1, remaining_ms(deadline));

		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			return err_set(errp, ERR_TIMEOUT,
				       "timed out sending '%s' to QEMU", cmd);
		if (fd_to_pass >= 0) {
			struct cmsghdr *c;

			memset(&cm, 0, sizeof(cm));
			mh.msg_control = cm.buf;
			mh.msg_controllen = sizeof(cm.buf);
			c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &fd_to_pass, sizeof(int));
		}
		n = sendmsg(q->fd, &mh, MSG_NOSIGNAL);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			err_set_errno(&e, errno, "cannot send '%s' to QEMU", cmd);
			return set_broken(q, e, errp);
		}
		fd_to_pass = -1; /* the descriptor travels with the first byte */
		data += n;
		len -= (size_t)n;
	}
	return true;
}

/* ---- commands ---------------------------------------------------------- */

static struct json_object *call(struct tp_qmp *q, const char *cmd,
				struct json_object *args, int fd_to_pass,
				int timeout_ms, struct err **errp)
{
	_cleanup_json_ struct json_object *req = json_object_new_object();
	int64_t deadline = deadline_of(timeout_ms);
	uint64_t id = ++q->next_id;
	char what[160];
	const char *text;
	size_t len;

	if (q->broken) {
		json_object_put(args);
		fail_broken(q, errp);
		return NULL;
	}
	json_object_object_add(req, "execute", json_object_new_string(cmd));
	if (args)
		json_object_object_add(req, "arguments", args);
	json_object_object_add(req, "id", json_object_new_uint64(id));
	text = json_object_to_json_string_length(req, JSON_C_TO_STRING_PLAIN, &len);
	log_debug("qmp -> %s", text);
	{
		_cleanup_free_ char *line = malloc(len + 1);

		if (!line) {
			err_set(errp, ERR_IO, "out of memory");
			return NULL;
		}
		memcpy(line, text, len);
		line[len] = '\n';
		if (!send_all(q, line, len + 1, fd_to_pass, deadline, cmd, errp))
			return NULL;
	}
	snprintf(what, sizeof(what), "the reply to '%s'", cmd);
	for (;;) {
		_cleanup_json_ struct json_object *m = next_msg(q, deadline, what, errp);
		struct json_object *mid, *ret, *er, *cls, *desc;

		if (!m)
			return NULL;
		if (json_object_object_get_ex(m, "event", NULL)) {
			ev_push(q, TAKE_PTR(m));
			continue;
		}
		if (!json_object_object_get_ex(m, "id", &mid) ||
		    !json_object_is_type(mid, json_type_int) ||
		    json_object_get_uint64(mid) != id) {
			log_debug("qmp: dropping reply for another id: %s",
				  json_object_to_json_string(m));
			continue;
		}
		if (json_object_object_get_ex(m, "error", &er)) {
			json_object_object_get_ex(er, "class", &cls);
			json_object_object_get_ex(er, "desc", &desc);
			err_set_qmp(errp, cls ? json_object_get_string(cls) : NULL,
				    desc ? json_object_get_string(desc) : NULL,
				    "QEMU refused '%s'", cmd);
			return NULL;
		}
		if (!json_object_object_get_ex(m, "return", &ret)) {
			struct err *e = NULL;

			err_set(&e, ERR_PROTO, "QMP reply to '%s' has neither return nor error",
				cmd);
			set_broken(q, e, errp);
			return NULL;
		}
		return ret ? json_object_get(ret) : json_object_new_object();
	}
}

struct json_object *tp_qmp_call(struct tp_qmp *q, const char *cmd,
				struct json_object *args, int timeout_ms,
				struct err **errp)
{
	return call(q, cmd, args, -1, timeout_ms, errp);
}

bool tp_qmp_run(struct tp_qmp *q, const char *cmd, struct json_object *args,
		int timeout_ms, struct err **errp)
{
	struct json_object *r = call(q, cmd, args, -1, timeout_ms, errp);

	json_object_put(r);
	return r != NULL;
}

bool tp_qmp_send_fd(struct tp_qmp *q, int fd, const char *name,
		    int timeout_ms, struct err **errp)
{
	struct json_object *args = json_object_new_object();
	struct json_object *r;

	json_object_object_add(args, "fdname", json_object_new_string(name));
	r = call(q, "getfd", args, fd, timeout_ms, errp);
	json_object_put(r);
	return r != NULL;
}

struct json_object *tp_qmp_wait_event(struct tp_qmp *q, const char *name,
				      int timeout_ms, struct err **errp)
{
	int64_t deadline = deadline_of(timeout_ms);
	char what[160];

	for (size_t i = 0; i < q->ev_count; i++)
		if (!strcmp(ev_name(q->evq[(q->ev_head + i) % q->ev_cap]), name))
			return ev_take(q, i);
	snprintf(what, sizeof(what), "event %s", name);
	for (;;) {
		struct json_object *m = next_msg(q, deadline, what, errp);

		if (!m)
			return NULL;
		if (!json_object_object_get_ex(m, "event", NULL)) {
			json_object_put(m); /* stale reply to a timed-out call */
			continue;
		}
		if (!strcmp(ev_name(m), name))
			return m;
		ev_push(q, m);
	}
}

/* ---- setup ------------------------------------------------------------- */

static bool handshake(struct tp_qmp *q, int timeout_ms, struct err **errp)
{
	int64_t deadline = deadline_of(timeout_ms);
	_cleanup_json_ struct json_object *g =
		next_msg(q, deadline, "the QMP greeting", errp);
	struct json_object *qmp, *ver, *v;
	struct err *e = NULL;

	if (!g)
		return false;
	if (!json_object_object_get_ex(g, "QMP", &qmp) ||
	    !json_object_is_type(qmp, json_type_object)) {
		err_set(&e, ERR_PROTO, "peer is not a QMP server: first message was %.120s",
			json_object_to_json_string(g));
		return set_broken(q, e, errp);
	}
	if (json_object_object_get_ex(qmp, "version", &ver) &&
	    json_object_object_get_ex(ver, "qemu", &v)) {
		struct json_object *ma, *mi, *mc;
		if (json_object_object_get_ex(v, "major", &ma) &&
		    json_object_object_get_ex(v, "minor", &mi) &&
		    json_object_object_get_ex(v, "micro", &mc) &&
		    asprintf(&q->version, "%d.%d.%d", json_object_get_int(ma),
			     json_object_get_int(mi), json_object_get_int(mc)) < 0)
			q->version = NULL;
	}
	return tp_qmp_run(q, "qmp_capabilities", NULL, remaining_ms(deadline), errp);
}

struct tp_qmp *tp_qmp_from_fd(int fd, int timeout_ms, struct err **errp)
{
	struct tp_qmp *q = calloc(1, sizeof(*q));
	int fl;

	if (!q) {
		close(fd);
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	q->fd = fd;
	tp_jsonl_init(&q->rd, 0);
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		err_set_errno(errp, errno, "QMP socket");
		tp_qmp_close(q);
		return NULL;
	}
	if (!handshake(q, timeout_ms, errp)) {
		tp_qmp_close(q);
		return NULL;
	}
	return q;
}

struct tp_qmp *tp_qmp_connect(const char *path, int timeout_ms, struct err **errp)
{
	int64_t deadline = deadline_of(timeout_ms);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct tp_qmp *q;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		err_set(errp, ERR_INVAL, "QMP socket path too long: '%s'", path);
		return NULL;
	}
	strcpy(sa.sun_path, path);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int saved;

		if (fd < 0) {
			err_set_errno(errp, errno, "socket");
			return NULL;
		}
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			q = tp_qmp_from_fd(fd, remaining_ms(deadline), errp);
			if (q)
				log_debug("qmp: connected to %s (QEMU %s)", path,
					  q->version ? q->version : "?");
			return q;
		}
		saved = errno;
		close(fd);
		/* QEMU creates the socket a moment after it starts: retry. */
		if ((saved != ENOENT && saved != ECONNREFUSED) ||
		    (deadline >= 0 && util_now_ms() >= deadline)) {
			err_set_errno(errp, saved, "cannot connect to QMP socket '%s'", path);
			return NULL;
		}
		usleep(10000);
	}
}

void tp_qmp_close(struct tp_qmp *q)
{
	if (!q)
		return;
	if (q->fd >= 0)
		close(q->fd);
	tp_jsonl_free(&q->rd);
	while (q->ev_count)
		json_object_put(ev_take(q, 0));
	free(q->evq);
	free(q->version);
	err_free(q->broken);
	free(q);
}

const char *tp_qmp_version(const struct tp_qmp *q)
{
	return q->version ? q->version : "unknown";
}

int tp_qmp_fd(const struct tp_qmp *q)
{
	return q->fd;
}
