/*
 * migrate_pool.c - runs several `vmmigrate VMID TARGET ...` workers at
 * once, each on the node that owns its guest: a child process here, or a
 * command over SSH (pinned host key) on another node. Their JSON events
 * are followed and shown: one line per running worker on a terminal,
 * timestamped lines otherwise, JSON events with --output json. Used by
 * `vmmigrate drain` and `undrain --return`. Contract in migrate.h.
 *
 * Workers are not tied to us: if this process dies, they finish their
 * migrations; a rerun sees their records and waits for them.
 */
#include "migrate.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../transport/tp_ssh.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 65536
#define MAX_ARGS 40

struct worker {
	struct cli_mig_task *t;
	int fd;                 /* its stdout (JSON lines) */
	int err_fd;             /* local: its stderr */
	pid_t pid;              /* local child */
	struct tp_ssh *ssh;     /* remote */
	char buf[LINE_MAX_BYTES];
	size_t len;
	char errbuf[1024];
	size_t errlen;
	bool done_event;
	bool finished;          /* finish() ran */
	char error[512];        /* from its failed event */
	char line[160];         /* what it shows now */
};

static const char *jstr(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

static uint64_t ju64(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) ? (uint64_t)json_object_get_int64(v) : 0;
}

/* argv of the worker: vmmigrate VMID TARGET <t->args...> --output json */
static void build_argv(const struct cli_mig_task *t, const char *prog, const char **argv,
		       char *vmid, size_t vlen)
{
	unsigned n = 0;

	snprintf(vmid, vlen, "%" PRIu32, t->vmid);
	argv[n++] = prog;
	argv[n++] = vmid;
	argv[n++] = t->target;
	for (unsigned i = 0; i < t->nargs && n < MAX_ARGS - 3; i++)
		argv[n++] = t->args[i];
	argv[n++] = "--output";
	argv[n++] = "json";
	argv[n] = NULL;
}

static bool start_local(struct worker *w, struct err **errp)
{
	char self[PATH_MAX], vmid[16];
	const char *argv[MAX_ARGS];
	int out[2], err[2];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		return err_set_errno(errp, errno, "cannot find this program");
	self[n] = '\0';
	build_argv(w->t, self, argv, vmid, sizeof(vmid));
	if (pipe2(out, O_CLOEXEC) < 0)
		return err_set_errno(errp, errno, "pipe");
	if (pipe2(err, O_CLOEXEC) < 0) {
		close(out[0]);
		close(out[1]);
		return err_set_errno(errp, errno, "pipe");
	}
	w->pid = fork();
	if (w->pid < 0) {
		close(out[0]);
		close(out[1]);
		close(err[0]);
		close(err[1]);
		return err_set_errno(errp, errno, "fork");
	}
	if (w->pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		dup2(err[1], STDERR_FILENO);
		/* Its own process group: a ^C to us does not abort it halfway. */
		setpgid(0, 0);
		execv(self, (char *const *)argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	w->fd = out[0];
	w->err_fd = err[0];
	return true;
}

static bool start_remote(struct cli_ctl *x, struct worker *w, struct err **errp)
{
	struct cli_mig_peer p;
	char remote[512], vmid[16];
	const char *argv[MAX_ARGS];
	struct tp_ssh_opts o = { .user = "root", .timeout_ms = 10000 };
	bool ok = false;

	if (!cli_mig_peer_read(x, w->t->node, &p, errp))
		return false;
	if (!p.host_key || !p.addr[0]) {
		err_set(errp, ERR_STATE, "node %s has no address or SSH host key in the store",
			w->t->node);
		goto out;
	}
	o.host = p.addr;
	o.host_key = p.host_key;
	o.key = cli_mig_ssh_key();
	o.port = cli_mig_ssh_port();
	w->ssh = tp_ssh_open(&o, errp);
	if (!w->ssh)
		goto out;
	build_argv(w->t, cli_mig_remote_cmd(remote, sizeof(remote)), argv, vmid, sizeof(vmid));
	w->fd = tp_ssh_exec(w->ssh, argv, errp);
	ok = w->fd >= 0;
	if (ok)
		shutdown(w->fd, SHUT_WR); /* it reads nothing from us */
out:
	if (!ok)
		err_prefix(errp ? *errp : NULL, "node %s", w->t->node);
	cli_mig_peer_free(&p);
	return ok;
}

/* One JSON line from a worker: keep the state it tells, pass it on. */
static void on_line(struct cli_mig_pool *pl, struct worker *w, const char *line)
{
	_cleanup_json_ struct json_object *o = json_tokener_parse(line);
	const char *ev = o ? jstr(o, "event") : NULL;

	if (!ev)
		return;
	if (pl->json) {
		printf("{\"event\":\"guest\",\"vmid\":%" PRIu32 ",\"source\":\"%s\",\"target\":\"%s\","
		       "\"data\":%s}\n", w->t->vmid, w->t->node, w->t->target,
		       json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		fflush(stdout);
	}
	if (!strcmp(ev, "done")) {
		w->done_event = true;
		snprintf(w->line, sizeof(w->line), "done in %.1f s", (double)ju64(o, "total_ms") / 1000);
	} else if (!strcmp(ev, "failed")) {
		snprintf(w->error, sizeof(w->error), "%s", jstr(o, "error") ?: "failed");
		snprintf(w->line, sizeof(w->line), "failed");
	} else if (!strcmp(ev, "phase")) {
		snprintf(w->line, sizeof(w->line), "%s", jstr(o, "phase") ?: "?");
	} else if (!strcmp(ev, "progress")) {
		uint64_t total = ju64(o, "total") ?: ju64(o, "disk_total");
		uint64_t done = ju64(o, "total") ? total - ju64(o, "remaining") : ju64(o, "disk_done");
		char a[32], b[32];

		snprintf(w->line, sizeof(w->line), "%-8s %3u%%  %s / %s",
			 ju64(o, "total") ? "ram" : "disks", total ? (unsigned)(done * 100 / total) : 0,
			 util_fmt_bytes(done, a, sizeof(a)), util_fmt_bytes(total, b, sizeof(b)));
	}
}

static void render(struct cli_mig_pool *pl, struct worker *w, unsigned nw, bool final)
{
	char stamp[16];
	time_t now = time(NULL);

	if (pl->json)
		return;
	if (!pl->tty) {
		/* Plain: a line when a worker starts and when it ends. */
		return;
	}
	if (pl->drawn)
		printf("\033[%uA", pl->drawn);
	pl->drawn = 0;
	/* Every worker started so far keeps its line (done ones too): the
	 * block only grows, so redrawing it never leaves stale lines. */
	for (unsigned i = 0; i < nw; i++) {
		printf("\r\033[K  %" PRIu32 " %s -> %s  %s\n", w[i].t->vmid, w[i].t->node,
		       w[i].t->target, w[i].line);
		pl->drawn++;
	}
	strftime(stamp, sizeof(stamp), "%H:%M:%S", localtime(&now));
	printf("\r\033[K%s %s: %u of %u done, %u failed, %u running\n", stamp, pl->title, pl->ok,
	       pl->n, pl->failed, pl->running);
	pl->drawn++;
	if (final)
		pl->drawn = 0;
	fflush(stdout);
}

static void plain(struct cli_mig_pool *pl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void plain(struct cli_mig_pool *pl, const char *fmt, ...)
{
	char stamp[16];
	time_t now = time(NULL);
	va_list ap;

	if (pl->json || pl->tty)
		return;
	strftime(stamp, sizeof(stamp), "%H:%M:%S", localtime(&now));
	printf("%s ", stamp);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static void drain_fd(struct cli_mig_pool *pl, struct worker *w)
{
	ssize_t n = read(w->fd, w->buf + w->len, sizeof(w->buf) - 1 - w->len);
	char *nl;

	if (n <= 0) {
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			return;
		close(w->fd);
		w->fd = -1;
		return;
	}
	w->len += (size_t)n;
	w->buf[w->len] = '\0';
	while ((nl = strchr(w->buf, '\n'))) {
		*nl = '\0';
		on_line(pl, w, w->buf);
		memmove(w->buf, nl + 1, w->len - (size_t)(nl + 1 - w->buf) + 1);
		w->len -= (size_t)(nl + 1 - w->buf);
	}
	if (w->len == sizeof(w->buf) - 1)
		w->len = 0; /* a line this long is nothing we know */
}

static void read_err(struct worker *w)
{
	ssize_t n;

	if (w->err_fd < 0)
		return;
	n = read(w->err_fd, w->errbuf + w->errlen, sizeof(w->errbuf) - 1 - w->errlen);
	if (n > 0) {
		w->errlen += (size_t)n;
		w->errbuf[w->errlen] = '\0';
		if (w->errlen > sizeof(w->errbuf) / 2) { /* keep the tail */
			memmove(w->errbuf, w->errbuf + w->errlen / 2, w->errlen - w->errlen / 2 + 1);
			w->errlen -= w->errlen / 2;
		}
	} else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
		close(w->err_fd);
		w->err_fd = -1;
	}
}

/* The worker's stdout ended: its outcome. */
static void finish(struct cli_mig_pool *pl, struct worker *w)
{
	int status = -1;

	if (w->pid > 0) {
		while (w->err_fd >= 0)
			read_err(w);
		while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
			;
		status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		w->pid = 0;
	} else if (w->ssh) {
		struct err *e = NULL;

		tp_ssh_wait_idle(w->ssh, 10000, &e);
		err_free(e);
		status = tp_ssh_exec_status(w->ssh);
		snprintf(w->errbuf, sizeof(w->errbuf), "%s", tp_ssh_exec_stderr(w->ssh));
		tp_ssh_close(w->ssh);
		w->ssh = NULL;
	}
	w->t->rc = status;
	if (status == 0 && w->done_event) {
		w->t->ok = true;
		pl->ok++;
		plain(pl, "guest %" PRIu32 ": now on %s (%s)", w->t->vmid, w->t->target, w->line);
	} else {
		const char *why = w->error[0] ? w->error : w->errbuf;
		char *last = strrchr(why, '\n');

		/* stderr's last non-empty line says why */
		while (last && !last[1] && last > why) {
			*last = '\0';
			last = strrchr(why, '\n');
		}
		snprintf(w->t->error, sizeof(w->t->error), "%.*s", (int)sizeof(w->t->error) - 1,
			 *why ? (last ? last + 1 : why) : "the worker ended without a word");
		pl->failed++;
		snprintf(w->line, sizeof(w->line), "failed");
		plain(pl, "guest %" PRIu32 ": not moved to %s: %s", w->t->vmid, w->t->target,
		      w->t->error);
	}
	pl->running--;
}

void cli_mig_pool_run(struct cli_ctl *x, struct cli_mig_pool *pl, struct cli_mig_task *t,
		      unsigned n, unsigned max)
{
	struct worker *w = calloc(n ? n : 1, sizeof(*w));
	unsigned next = 0;
	int64_t last_draw = 0;

	pl->n = n;
	pl->tty = !pl->json && isatty(STDOUT_FILENO);
	if (!w) {
		for (unsigned i = 0; i < n; i++)
			snprintf(t[i].error, sizeof(t[i].error), "out of memory");
		pl->failed = n;
		return;
	}
	for (unsigned i = 0; i < n; i++) {
		w[i] = (struct worker){ .t = &t[i], .fd = -1, .err_fd = -1 };
		snprintf(w[i].line, sizeof(w[i].line), "waiting");
	}
	if (max == 0)
		max = 1;
	while (next < n || pl->running) {
		struct pollfd pfd[2 * MIG_PLACE_MAX_GUESTS];
		struct worker *who[2 * MIG_PLACE_MAX_GUESTS];
		unsigned np = 0;

		while (next < n && pl->running < max) {
			struct worker *s = &w[next++];
			struct err *e = NULL;
			bool ok = strcmp(s->t->node, x->node) ? start_remote(x, s, &e) :
								 start_local(s, &e);

			if (!ok) {
				snprintf(s->t->error, sizeof(s->t->error), "%s", e->msg);
				err_free(e);
				pl->failed++;
				snprintf(s->line, sizeof(s->line), "failed to start");
				plain(pl, "guest %" PRIu32 ": not moved to %s: %s", s->t->vmid,
				      s->t->target, s->t->error);
				continue;
			}
			pl->running++;
			snprintf(s->line, sizeof(s->line), "starting");
			plain(pl, "guest %" PRIu32 ": %s -> %s", s->t->vmid, s->t->node, s->t->target);
		}
		for (unsigned i = 0; i < next && np + 2 <= ARRAY_SIZE(pfd); i++) {
			if (w[i].fd >= 0) {
				pfd[np] = (struct pollfd){ .fd = w[i].fd, .events = POLLIN };
				who[np++] = &w[i];
			}
			if (w[i].err_fd >= 0) {
				pfd[np] = (struct pollfd){ .fd = w[i].err_fd, .events = POLLIN };
				who[np++] = &w[i];
			}
		}
		if (np && poll(pfd, np, 250) > 0) {
			for (unsigned k = 0; k < np; k++) {
				struct worker *o = who[k];

				if (!pfd[k].revents || o->finished)
					continue;
				if (pfd[k].fd == o->err_fd)
					read_err(o);
				else if (pfd[k].fd == o->fd)
					drain_fd(pl, o);
				if (o->fd < 0) {
					o->finished = true;
					finish(pl, o);
				}
			}
		}
		if (util_now_ms() - last_draw >= 250) {
			render(pl, w, next, false);
			last_draw = util_now_ms();
		}
	}
	render(pl, w, n, true);
	free(w);
}
