/*
 * mig_agent.c - the control channel between a migration's worker (on the
 * source node) and its agent (`vmmigrate _agent`, on the target node,
 * reached through SSH): one JSON object per line each way. The worker sends
 * {"cmd":...,...}; the agent answers each with {"ok":true,...} or
 * {"ok":false,"error":"one line","code":"invalid"}. Contract in mig.h.
 *
 * Why a long-lived agent rather than one SSH command per step: the agent
 * is the parent of the target QEMU, so when the worker dies (kill -9, a cut
 * link) the channel closes and the agent cleans up at once, deciding from
 * the cluster store whether the guest is its node's now (resume) or not
 * (stop) - no leftover QEMU waits for a human.
 */
#include "mig.h"
#include "../cluster/clu.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHAN_MAX_MSG (1u << 20)

struct mig_chan {
	int in_fd, out_fd;
	struct tp_jsonl rd;
	bool broken;
};

struct mig_chan *mig_chan_open(int in_fd, int out_fd)
{
	struct mig_chan *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->in_fd = in_fd;
	c->out_fd = out_fd;
	tp_jsonl_init(&c->rd, CHAN_MAX_MSG);
	return c;
}

void mig_chan_close(struct mig_chan *c)
{
	if (!c)
		return;
	if (c->in_fd >= 0)
		close(c->in_fd);
	if (c->out_fd >= 0 && c->out_fd != c->in_fd)
		close(c->out_fd);
	tp_jsonl_free(&c->rd);
	free(c);
}

int mig_chan_fd(const struct mig_chan *c)
{
	return c->in_fd;
}

bool mig_chan_send(struct mig_chan *c, struct json_object *msg, struct err **errp)
{
	const char *s = json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN |
							   JSON_C_TO_STRING_NOSLASHESCAPE);
	_cleanup_free_ char *line = NULL;
	int n = asprintf(&line, "%s\n", s);

	if (n < 0)
		return err_set(errp, ERR_IO, "out of memory");
	if (c->broken)
		return err_set(errp, ERR_CLOSED, "control channel is closed");
	if (!util_write_all(c->out_fd, line, (size_t)n, errp)) {
		c->broken = true;
		return false;
	}
	return true;
}

struct json_object *mig_chan_recv(struct mig_chan *c, int timeout_ms, struct err **errp)
{
	int64_t deadline = timeout_ms >= 0 ? util_now_ms() + timeout_ms : -1;

	for (;;) {
		struct json_object *o = NULL;
		char buf[65536];
		struct pollfd p = { .fd = c->in_fd, .events = POLLIN };
		int left, r;
		ssize_t n;

		r = tp_jsonl_next(&c->rd, &o, errp);
		if (r < 0) {
			c->broken = true;
			return NULL;
		}
		if (r > 0) {
			if (!json_object_is_type(o, json_type_object)) {
				json_object_put(o);
				c->broken = true;
				err_set(errp, ERR_PROTO, "control channel: message is not an object");
				return NULL;
			}
			return o;
		}
		if (c->broken) {
			err_set(errp, ERR_CLOSED, "control channel is closed");
			return NULL;
		}
		left = deadline < 0 ? -1 : (int)(deadline - util_now_ms());
		if (deadline >= 0 && left <= 0) {
			err_set(errp, ERR_TIMEOUT, "control channel: no answer within %d ms",
				timeout_ms);
			return NULL;
		}
		r = poll(&p, 1, left);
		if (r < 0 && errno != EINTR) {
			err_set_errno(errp, errno, "control channel: poll");
			return NULL;
		}
		if (r <= 0)
			continue;
		n = read(c->in_fd, buf, sizeof(buf));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			c->broken = true;
			err_set_errno(errp, errno, "control channel: read");
			return NULL;
		}
		if (n == 0) {
			c->broken = true;
			err_set(errp, ERR_CLOSED, "control channel closed by the peer");
			return NULL;
		}
		if (!tp_jsonl_feed(&c->rd, buf, (size_t)n, errp)) {
			c->broken = true;
			return NULL;
		}
	}
}

/* ---- replies ------------------------------------------------------------------ */

struct json_object *mig_chan_ok(void)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(true));
	return o;
}

struct json_object *mig_chan_fail(const struct err *e)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(false));
	json_object_object_add(o, "error", json_object_new_string(e ? e->msg : "unknown error"));
	json_object_object_add(o, "code", json_object_new_string(err_code_name(e ? e->code : ERR_IO)));
	return o;
}

bool mig_chan_reply_check(struct json_object *rep, struct err **errp)
{
	struct json_object *ok, *msg = NULL, *code = NULL;
	const char *name, *why;
	enum err_code ec = ERR_STATE;

	/* Only a real true: json-c reads the string "false" as true. */
	if (json_object_object_get_ex(rep, "ok", &ok) && json_object_is_type(ok, json_type_boolean) &&
	    json_object_get_boolean(ok))
		return true;
	/* A null or non-string code or error is the agent's bug, not a reason
	 * to crash: json_object_get_string(NULL) is NULL. */
	json_object_object_get_ex(rep, "code", &code);
	name = json_object_get_string(code);
	for (int i = 1; name && i < ERR_CODE_MAX; i++)
		if (!strcmp(name, err_code_name((enum err_code)i)))
			ec = (enum err_code)i;
	json_object_object_get_ex(rep, "error", &msg);
	why = json_object_get_string(msg);
	return err_set(errp, ec, "%s", why ? why : "the agent refused without a reason");
}

struct json_object *mig_chan_call(struct mig_chan *c, struct json_object *req, int timeout_ms,
				  struct err **errp)
{
	_cleanup_json_ struct json_object *owned = req;
	struct json_object *rep;
	const char *cmd = "?";
	struct json_object *v;

	if (json_object_object_get_ex(req, "cmd", &v))
		cmd = json_object_get_string(v);
	if (!mig_chan_send(c, req, errp))
		return NULL;
	rep = mig_chan_recv(c, timeout_ms, errp);
	if (!rep) {
		err_prefix(errp ? *errp : NULL, "agent (%s)", cmd);
		return NULL;
	}
	if (mig_chan_reply_check(rep, errp))
		return rep;
	json_object_put(rep);
	return NULL;
}

struct json_object *mig_chan_req(const char *cmd)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "cmd", json_object_new_string(cmd));
	return o;
}

/* ---- requests to the agent ------------------------------------------------------ */

/* start's new local disks: {drive, storage, target_storage, volume, size}. */
static bool check_disks(struct json_object *disks, struct err **errp)
{
	if (!json_object_is_type(disks, json_type_array))
		return err_set(errp, ERR_PROTO, "disks must be a list");
	if (json_object_array_length(disks) > MIG_MAX_DISKS)
		return err_set(errp, ERR_PROTO, "too many disks");
	for (size_t k = 0; k < json_object_array_length(disks); k++) {
		struct json_object *d = json_object_array_get_idx(disks, k);
		int64_t drive, size;

		if (!tp_json_str(d, "storage") || !tp_json_str(d, "target_storage") || !tp_json_str(d, "volume") ||
		    !tp_json_int(d, "drive", &drive) || !tp_json_int(d, "size", &size) || size <= 0)
			return err_set(errp, ERR_PROTO, "a disk needs drive, storage, "
				       "target_storage, volume and size");
	}
	return true;
}

bool mig_agent_req_check(struct json_object *req, struct err **errp)
{
	static const char *const cmds[] = {
		"hello", "facts", "node-facts", "cleanup", "start", "listen", "wait-loaded",
		"check", "resume", "quit", "recv-volume", "volume-wait", "keep-volumes", "bye",
	};
	const char *cmd = tp_json_str(req, "cmd");
	struct json_object *v = NULL;
	struct mig_tune tune;
	int64_t n = 0;
	size_t i;

	for (i = 0; cmd && i < ARRAY_SIZE(cmds) && strcmp(cmd, cmds[i]); i++)
		;
	if (!cmd || i == ARRAY_SIZE(cmds)) {
		char safe[40];

		return err_set(errp, ERR_PROTO, "unknown request '%s'",
			       util_printable(cmd ? cmd : "", safe, sizeof(safe)));
	}
	/* An hour at most: an int, and never "forever" (negative). */
	if (!strcmp(cmd, "wait-loaded") && json_object_object_get_ex(req, "timeout_ms", &v) &&
	    (!tp_json_int(req, "timeout_ms", &n) || n < 0 || n > 3600000))
		return err_set(errp, ERR_PROTO, "wait-loaded needs timeout_ms from 0 to 3600000");
	if ((!strcmp(cmd, "facts") || !strcmp(cmd, "cleanup") || !strcmp(cmd, "start") ||
	     !strcmp(cmd, "recv-volume")) &&
	    (!tp_json_int(req, "vmid", &n) || n < CLU_VMID_MIN || n > CLU_VMID_MAX))
		return err_set(errp, ERR_PROTO, "request without a valid vmid");
	if (!strcmp(cmd, "start")) {
		if (!tp_json_str(req, "bind") || !tp_json_int(req, "mem_bytes", &n) || n <= 0 || !tp_json_str(req, "accel"))
			return err_set(errp, ERR_PROTO, "start needs bind, mem_bytes and accel");
		/* "disks": null is no disks, as json-c reads it. */
		if (json_object_object_get_ex(req, "disks", &v) && v && !check_disks(v, errp))
			return false;
	}
	if (!strcmp(cmd, "listen")) {
		json_object_object_get_ex(req, "tune", &v);
		return mig_tune_from_json(v, &tune, errp);
	}
	if (!strcmp(cmd, "recv-volume") &&
	    (!tp_json_str(req, "storage") || !tp_json_str(req, "volume") || !tp_json_str(req, "bind") ||
	     !tp_json_int(req, "size", &n) || n <= 0))
		return err_set(errp, ERR_PROTO, "recv-volume needs storage, volume, size and bind");
	return true;
}

/* ---- the remote target: mig_target_ops over the agent ------------------------- */

struct json_object *mig_tune_to_json(const struct mig_tune *t)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "multifd", json_object_new_int((int)t->multifd));
	json_object_object_add(o, "multifd_zstd", json_object_new_boolean(t->multifd_zstd));
	json_object_object_add(o, "postcopy", json_object_new_boolean(t->postcopy));
	return o;
}

bool mig_tune_from_json(struct json_object *o, struct mig_tune *t, struct err **errp)
{
	struct json_object *v;

	*t = (struct mig_tune){ .multifd = 0 };
	if (!o || !json_object_is_type(o, json_type_object))
		return err_set(errp, ERR_PROTO, "missing migration settings");
	if (json_object_object_get_ex(o, "multifd", &v)) {
		int n = json_object_get_int(v);

		if (n < 0 || n > 64)
			return err_set(errp, ERR_INVAL, "invalid multifd channels %d", n);
		t->multifd = (unsigned)n;
	}
	t->multifd_zstd = json_object_object_get_ex(o, "multifd_zstd", &v) &&
			  json_object_get_boolean(v);
	t->postcopy = json_object_object_get_ex(o, "postcopy", &v) && json_object_get_boolean(v);
	return true;
}

static bool remote_listen(void *impl, const struct mig_tune *t, struct err **errp)
{
	struct json_object *req = mig_chan_req("listen"), *rep;

	json_object_object_add(req, "tune", mig_tune_to_json(t));
	rep = mig_chan_call(impl, req, 15000, errp);
	json_object_put(rep);
	return rep != NULL;
}

static bool remote_wait(void *impl, int timeout_ms, struct err **errp)
{
	struct json_object *req = mig_chan_req("wait-loaded"), *rep;

	json_object_object_add(req, "timeout_ms", json_object_new_int(timeout_ms));
	rep = mig_chan_call(impl, req, timeout_ms + 5000, errp);
	json_object_put(rep);
	return rep != NULL;
}

static bool remote_resume(void *impl, struct err **errp)
{
	struct json_object *rep = mig_chan_call(impl, mig_chan_req("resume"), 15000, errp);

	json_object_put(rep);
	return rep != NULL;
}

static bool remote_quit(void *impl)
{
	struct err *e = NULL;
	struct json_object *rep = mig_chan_call(impl, mig_chan_req("quit"), 20000, &e);

	if (!rep) {
		log_warn("target: %s", e->msg);
		/* A closed channel means the agent is gone, and it takes its
		 * QEMU along unless the store gave it the guest. */
		bool gone = e->code == ERR_CLOSED;
		err_free(e);
		return gone;
	}
	json_object_put(rep);
	return true;
}

static bool remote_check(void *impl, struct err **errp)
{
	struct json_object *rep = mig_chan_call(impl, mig_chan_req("check"), 10000, errp);

	json_object_put(rep);
	return rep != NULL;
}

static const struct mig_target_ops remote_ops = {
	.listen = remote_listen,
	.wait_loaded = remote_wait,
	.resume = remote_resume,
	.check = remote_check,
	.quit = remote_quit,
	.postcopy_run = remote_resume,
};

void mig_chan_target(struct mig_chan *c, struct mig_target *t)
{
	*t = (struct mig_target){ .ops = &remote_ops, .impl = c };
}
