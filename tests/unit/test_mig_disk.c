/*
 * test_mig_disk.c - the source's disk mirrors (mig_disk.c) against a
 * scripted QEMU that keeps block jobs, named nodes and passed fds the way
 * QEMU 7.2 does: getfd hands over the NBD connection, blockdev-add takes it
 * by name, blockdev-mirror starts a job that stays until dismissed, a
 * cancelled job concludes only after a while (job-dismiss refuses until
 * then), a node a job still uses cannot be deleted. Checked: the commands
 * and their arguments, the sweep of leftovers (ours only), the undo after a
 * failure, poll figures, complete without force, detach and the end
 * after them (nothing cut), and abort (connections cut, jobs force-cancelled,
 * dismissed, nodes deleted).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "fakeqmp.h"
#include "migrate/mig.h"

#define MAXJOBS 12
#define MAXNODES 12
#define MAXFDS 12
#define MAXLOG 200
#define MIB (1ull << 20)

/* ---- the fake QEMU ----------------------------------------------------------- */

struct job {
	char id[32], target[32];
	bool present;
	bool ready;
	bool concluded;
	bool cancelling;
	int settle;         /* looks (queries, dismisses) until a cancelled job concludes */
	uint64_t offset, len;
	const char *error;  /* shown once set (a failed job) */
};

struct named_fd {
	char name[32];
	int fd;             /* -1: slot free */
};

struct node {
	char name[32];
	int fd;             /* the NBD connection it holds, -1 if none */
};

struct qemu {
	pthread_mutex_t mu;
	/* what it has */
	const char *drives[4];        /* the guest's disks */
	struct job jobs[MAXJOBS];
	struct node nodes[MAXNODES];  /* name "" = free slot */
	struct named_fd fds[MAXFDS];
	/* script */
	int settle;                   /* a cancel concludes after this many looks */
	const char *refuse_cmd;       /* refuse the refuse_nth call of this command */
	int refuse_nth;
	const char *refuse_desc;
	const char *hangup_cmd;       /* close the monitor on this command */
	/* what it saw */
	struct {
		char cmd[64];    /* as fakeqmp keeps them */
		char args[1024];
	} log[MAXLOG];
	int nlog;
	ino_t got_ino[MAXFDS];        /* sockets received with getfd, in order */
	int ngot;
};

static void reply(struct fakeqmp *f, long long id, const char *ret)
{
	fakeqmp_sendf(f, "{\"return\": %s, \"id\": %lld}\r\n", ret, id);
}

static void refuse(struct fakeqmp *f, long long id, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void refuse(struct fakeqmp *f, long long id, const char *fmt, ...)
{
	struct json_object *o = json_object_new_object(), *e = json_object_new_object();
	va_list ap;
	char *desc;

	va_start(ap, fmt);
	if (vasprintf(&desc, fmt, ap) < 0)
		abort();
	va_end(ap);
	json_object_object_add(e, "class", json_object_new_string("GenericError"));
	json_object_object_add(e, "desc", json_object_new_string(desc));
	json_object_object_add(o, "error", e);
	json_object_object_add(o, "id", json_object_new_int64(id));
	fakeqmp_sendf(f, "%s\r\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	free(desc);
}

static const char *arg_str(struct json_object *a, const char *key)
{
	struct json_object *v;

	return a && json_object_object_get_ex(a, key, &v) ? json_object_get_string(v) : NULL;
}

static bool arg_bool(struct json_object *a, const char *key)
{
	struct json_object *v;

	return a && json_object_object_get_ex(a, key, &v) && json_object_get_boolean(v);
}

static struct job *job_find(struct qemu *q, const char *id)
{
	for (int i = 0; id && i < MAXJOBS; i++)
		if (q->jobs[i].present && !strcmp(q->jobs[i].id, id))
			return &q->jobs[i];
	return NULL;
}

static struct job *job_new(struct qemu *q, const char *id, const char *target)
{
	for (int i = 0; i < MAXJOBS; i++)
		if (!q->jobs[i].present) {
			struct job *j = &q->jobs[i];

			*j = (struct job){ .present = true, .len = 4 * MIB };
			snprintf(j->id, sizeof(j->id), "%s", id);
			snprintf(j->target, sizeof(j->target), "%s", target ? target : "");
			return j;
		}
	abort();
}

static struct node *node_find(struct qemu *q, const char *name)
{
	for (int i = 0; name && i < MAXNODES; i++)
		if (q->nodes[i].name[0] && !strcmp(q->nodes[i].name, name))
			return &q->nodes[i];
	return NULL;
}

static void node_new(struct qemu *q, const char *name, int fd)
{
	for (int i = 0; i < MAXNODES; i++)
		if (!q->nodes[i].name[0]) {
			snprintf(q->nodes[i].name, sizeof(q->nodes[i].name), "%s", name);
			q->nodes[i].fd = fd;
			return;
		}
	abort();
}

/* A look at a cancelled job brings it closer to its end. */
static void look(struct job *j)
{
	if (!j->cancelling || j->concluded)
		return;
	if (j->settle > 0)
		j->settle--;
	else
		j->concluded = true;
}

static const char *job_status(const struct job *j)
{
	return j->concluded ? "concluded" : j->ready ? "ready" : "running";
}

static void query_jobs(struct qemu *q, struct fakeqmp *f, long long id)
{
	struct json_object *list = json_object_new_array();

	for (int i = 0; i < MAXJOBS; i++) {
		struct job *j = &q->jobs[i];
		struct json_object *o;

		if (!j->present)
			continue;
		look(j);
		o = json_object_new_object();
		json_object_object_add(o, "device", json_object_new_string(j->id));
		json_object_object_add(o, "type", json_object_new_string("mirror"));
		json_object_object_add(o, "len", json_object_new_uint64(j->len));
		json_object_object_add(o, "offset", json_object_new_uint64(j->offset));
		json_object_object_add(o, "busy", json_object_new_boolean(!j->ready));
		json_object_object_add(o, "paused", json_object_new_boolean(false));
		json_object_object_add(o, "speed", json_object_new_int(0));
		json_object_object_add(o, "io-status", json_object_new_string("ok"));
		json_object_object_add(o, "ready", json_object_new_boolean(j->ready));
		json_object_object_add(o, "status", json_object_new_string(job_status(j)));
		json_object_object_add(o, "auto-finalize", json_object_new_boolean(true));
		json_object_object_add(o, "auto-dismiss", json_object_new_boolean(false));
		if (j->error)
			json_object_object_add(o, "error", json_object_new_string(j->error));
		json_object_array_add(list, o);
	}
	reply(f, id, json_object_to_json_string_ext(list, JSON_C_TO_STRING_PLAIN));
	json_object_put(list);
}

static void query_nodes(struct qemu *q, struct fakeqmp *f, long long id)
{
	struct json_object *list = json_object_new_array();

	for (int i = 0; i < MAXNODES; i++) {
		struct json_object *o;

		if (!q->nodes[i].name[0])
			continue;
		o = json_object_new_object();
		json_object_object_add(o, "node-name", json_object_new_string(q->nodes[i].name));
		json_object_object_add(o, "drv", json_object_new_string(
					       q->nodes[i].fd >= 0 ? "nbd" : "qcow2"));
		json_object_array_add(list, o);
	}
	reply(f, id, json_object_to_json_string_ext(list, JSON_C_TO_STRING_PLAIN));
	json_object_put(list);
}

static bool is_drive(const struct qemu *q, const char *name)
{
	for (int i = 0; name && i < 4 && q->drives[i]; i++)
		if (!strcmp(q->drives[i], name))
			return true;
	return false;
}

static void getfd(struct qemu *q, struct fakeqmp *f, long long id, struct json_object *a)
{
	const char *name = arg_str(a, "fdname");
	int fd = f->received_fd;
	struct stat st;

	f->received_fd = -1;
	if (fd < 0 || !name) {
		refuse(f, id, "No file descriptor supplied via SCM_RIGHTS");
		return;
	}
	if (q->ngot < MAXFDS && !fstat(fd, &st))
		q->got_ino[q->ngot++] = st.st_ino;
	for (int i = 0; i < MAXFDS; i++)
		if (q->fds[i].fd < 0) {
			snprintf(q->fds[i].name, sizeof(q->fds[i].name), "%s", name);
			q->fds[i].fd = fd;
			reply(f, id, "{}");
			return;
		}
	abort();
}

static void blockdev_add(struct qemu *q, struct fakeqmp *f, long long id, struct json_object *a)
{
	const char *name = arg_str(a, "node-name");
	struct json_object *server = NULL;
	const char *fdname;

	json_object_object_get_ex(a, "server", &server);
	fdname = arg_str(server, "str");
	if (!name || node_find(q, name)) {
		refuse(f, id, "Duplicate nodes with node-name='%s'", name ? name : "");
		return;
	}
	for (int i = 0; fdname && i < MAXFDS; i++)
		if (q->fds[i].fd >= 0 && !strcmp(q->fds[i].name, fdname)) {
			node_new(q, name, q->fds[i].fd); /* monitor_get_fd takes it */
			q->fds[i].fd = -1;
			reply(f, id, "{}");
			return;
		}
	refuse(f, id, "File descriptor named '%s' has not been found", fdname ? fdname : "");
}

static void blockdev_mirror(struct qemu *q, struct fakeqmp *f, long long id,
			    struct json_object *a)
{
	const char *job = arg_str(a, "job-id"), *dev = arg_str(a, "device");
	const char *target = arg_str(a, "target");

	if (!is_drive(q, dev))
		refuse(f, id, "Cannot find device='%s' nor node-name='%s'", dev, dev);
	else if (!node_find(q, target))
		refuse(f, id, "Cannot find device='%s' nor node-name='%s'", target, target);
	else if (!job || job_find(q, job))
		refuse(f, id, "Job ID '%s' already in use", job ? job : "");
	else {
		job_new(q, job, target);
		reply(f, id, "{}");
	}
}

static void block_job_cancel(struct qemu *q, struct fakeqmp *f, long long id,
			     struct json_object *a)
{
	struct job *j = job_find(q, arg_str(a, "device"));

	if (!j) {
		refuse(f, id, "Block job '%s' not found", arg_str(a, "device"));
		return;
	}
	if (j->concluded) {
		refuse(f, id, "Job '%s' in state 'concluded' cannot accept command verb 'cancel'",
		       j->id);
		return;
	}
	/* Without force on a ready mirror: it ends without pivot, no error. */
	if (!j->cancelling || arg_bool(a, "force"))
		j->settle = q->settle;
	j->cancelling = true;
	reply(f, id, "{}");
}

static void job_dismiss(struct qemu *q, struct fakeqmp *f, long long id, struct json_object *a)
{
	struct job *j = job_find(q, arg_str(a, "id"));

	if (!j) {
		refuse(f, id, "Job not found");
		return;
	}
	look(j);
	if (!j->concluded) {
		refuse(f, id, "Job '%s' in state '%s' cannot accept command verb 'dismiss'", j->id,
		       job_status(j));
		return;
	}
	j->present = false;
	reply(f, id, "{}");
}

static void blockdev_del(struct qemu *q, struct fakeqmp *f, long long id, struct json_object *a)
{
	const char *name = arg_str(a, "node-name");
	struct node *n = node_find(q, name);

	if (!n) {
		refuse(f, id, "Failed to find node with node-name='%s'", name ? name : "");
		return;
	}
	for (int i = 0; i < MAXJOBS; i++)
		if (q->jobs[i].present && !strcmp(q->jobs[i].target, n->name)) {
			refuse(f, id, "Node '%s' is busy: block device is in use by block job: "
				      "mirror", n->name);
			return;
		}
	if (n->fd >= 0)
		close(n->fd); /* the NBD client disconnects */
	n->fd = -1;
	n->name[0] = '\0';
	reply(f, id, "{}");
}

/* How many times cmd was seen so far (the current call included). */
static int seen(const struct qemu *q, const char *cmd)
{
	int k = 0;

	for (int i = 0; i < q->nlog; i++)
		k += !strcmp(q->log[i].cmd, cmd);
	return k;
}

static void serve(struct fakeqmp *f)
{
	struct qemu *q = f->opaque;

	fakeqmp_greet(f);
	for (;;) {
		long long id = fakeqmp_read_cmd(f);
		const char *c = f->last_cmd;
		struct json_object *a;

		if (id < 0)
			return; /* the client closed */
		pthread_mutex_lock(&q->mu);
		if (q->nlog < MAXLOG) {
			snprintf(q->log[q->nlog].cmd, sizeof(q->log[0].cmd), "%s", c);
			snprintf(q->log[q->nlog].args, sizeof(q->log[0].args), "%s", f->last_args);
			q->nlog++;
		}
		if (q->hangup_cmd && !strcmp(c, q->hangup_cmd)) {
			pthread_mutex_unlock(&q->mu);
			fakeqmp_close(f);
			return;
		}
		a = f->last_args[0] ? json_tokener_parse(f->last_args) : NULL;
		if (q->refuse_cmd && !strcmp(c, q->refuse_cmd) && seen(q, c) == q->refuse_nth) {
			if (f->received_fd >= 0)
				close(f->received_fd);
			f->received_fd = -1;
			refuse(f, id, "%s", q->refuse_desc);
		} else if (!strcmp(c, "getfd")) {
			getfd(q, f, id, a);
		} else if (!strcmp(c, "blockdev-add")) {
			blockdev_add(q, f, id, a);
		} else if (!strcmp(c, "blockdev-mirror")) {
			blockdev_mirror(q, f, id, a);
		} else if (!strcmp(c, "query-block-jobs")) {
			query_jobs(q, f, id);
		} else if (!strcmp(c, "block-job-cancel")) {
			block_job_cancel(q, f, id, a);
		} else if (!strcmp(c, "job-dismiss")) {
			job_dismiss(q, f, id, a);
		} else if (!strcmp(c, "query-named-block-nodes")) {
			query_nodes(q, f, id);
		} else if (!strcmp(c, "blockdev-del")) {
			blockdev_del(q, f, id, a);
		} else {
			f->failed = true;
			refuse(f, id, "The command %s has not been found", c);
		}
		json_object_put(a);
		pthread_mutex_unlock(&q->mu);
	}
}

/* ---- the rig: a QEMU, its monitor, and the connections of n disks ------------- */

static const char *const DEVICES[] = { "drive0", "drive1", "drive2", "drive3" };
static const char *const EXPORTS[] = { "vmm-101-disk-0", "vmm-101-disk-1", "vmm-101-disk-2",
				       "vmm-101-disk-3" };

struct rig {
	struct qemu q;
	struct fakeqmp f;
	struct tp_qmp *qmp;
	unsigned n;
	struct mig_disk d[4];
	int fds[4], cuts[4];    /* as handed to mig_mirror_start */
	int nbd_peer[4];        /* the target's side of fds[i] */
	ino_t nbd_ino[4];       /* fds[i]'s socket */
	int cut_keep[4];        /* cuts[i] is a dup of it: closing cuts[i] alone is no EOF */
	int cut_peer[4];        /* sees EOF once cuts[i] is shut down */
	struct mig_mirror *m;
};

/* On the heap: the fake's thread may outlive a failed assertion. */
static struct rig *rig_new(unsigned n)
{
	struct rig *r = calloc(1, sizeof(*r));
	struct err *e = NULL;

	assert_non_null(r);
	pthread_mutex_init(&r->q.mu, NULL);
	for (int i = 0; i < MAXFDS; i++)
		r->q.fds[i].fd = -1;
	for (int i = 0; i < MAXNODES; i++)
		r->q.nodes[i].fd = -1;
	for (unsigned i = 0; i < 4; i++) {
		int sv[2];
		struct stat st;

		r->q.drives[i] = DEVICES[i];
		node_new(&r->q, DEVICES[i], -1);
		r->d[i] = (struct mig_disk){ .device = DEVICES[i], .export = EXPORTS[i] };
		r->fds[i] = r->cuts[i] = r->nbd_peer[i] = r->cut_keep[i] = r->cut_peer[i] = -1;
		if (i >= n)
			continue;
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		r->fds[i] = sv[0];
		r->nbd_peer[i] = sv[1];
		assert_int_equal(fstat(sv[0], &st), 0);
		r->nbd_ino[i] = st.st_ino;
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		r->cut_keep[i] = sv[0];
		r->cut_peer[i] = sv[1];
		r->cuts[i] = dup(sv[0]);
		assert_true(r->cuts[i] >= 0);
	}
	r->n = n;
	r->q.settle = 1;
	fakeqmp_start(&r->f, serve, &r->q);
	r->qmp = tp_qmp_from_fd(r->f.client_fd, 2000, &e);
	assert_non_null(r->qmp);
	return r;
}

static void rig_free(struct rig *r)
{
	tp_qmp_close(r->qmp);
	fakeqmp_finish(&r->f);
	assert_false(r->f.failed);
	for (int i = 0; i < MAXFDS; i++)
		if (r->q.fds[i].fd >= 0)
			close(r->q.fds[i].fd);
	for (int i = 0; i < MAXNODES; i++)
		if (r->q.nodes[i].fd >= 0)
			close(r->q.nodes[i].fd);
	for (unsigned i = 0; i < 4; i++) {
		int *fd[] = { &r->fds[i], &r->cuts[i], &r->nbd_peer[i], &r->cut_keep[i],
			      &r->cut_peer[i] };

		for (size_t k = 0; k < ARRAY_SIZE(fd); k++)
			if (*fd[k] >= 0)
				close(*fd[k]);
	}
	pthread_mutex_destroy(&r->q.mu);
	free(r);
}

static struct mig_mirror *rig_start(struct rig *r, uint64_t speed, bool write_blocking,
				    struct err **errp)
{
	r->m = mig_mirror_start(r->qmp, r->d, r->n, r->fds, r->cuts, speed, write_blocking, errp);
	for (unsigned i = 0; i < r->n; i++) {
		assert_int_equal(r->fds[i], -1);  /* taken, whatever happened */
		assert_int_equal(r->cuts[i], -1);
	}
	return r->m;
}

static void rig_start_ok(struct rig *r)
{
	struct err *e = NULL;

	if (!rig_start(r, 0, true, &e))
		fail_msg("mig_mirror_start: %s", e->msg);
}

/* ---- what the QEMU saw -------------------------------------------------------- */

static void dump_log(const struct qemu *q)
{
	for (int i = 0; i < q->nlog; i++)
		print_error("  %2d %s %s\n", i, q->log[i].cmd, q->log[i].args);
}

/* The same JSON value; "" is no arguments at all. */
static bool same_args(const char *got, const char *want)
{
	struct json_object *g, *w;
	bool eq;

	if (!got[0] || !want[0])
		return !got[0] && !want[0];
	g = json_tokener_parse(got);
	w = json_tokener_parse(want);
	if (!w)
		fail_msg("bad JSON in the test: %s", want);
	eq = g && json_object_equal(g, w);
	json_object_put(g);
	json_object_put(w);
	return eq;
}

/* Entry k is cmd with args (NULL: any); returns k + 1. */
#define expect(q, k, cmd, args) expect_at(q, k, cmd, args, __LINE__)
static int expect_at(struct qemu *q, int k, const char *cmd, const char *args, int line)
{
	if (k >= q->nlog || strcmp(q->log[k].cmd, cmd) ||
	    (args && !same_args(q->log[k].args, args))) {
		dump_log(q);
		fail_msg("line %d: command %d should be %s %s", line, k, cmd, args ? args : "");
	}
	return k + 1;
}

/* Index of the first cmd with args (NULL: any) at or after from, or -1. */
static int find(const struct qemu *q, int from, const char *cmd, const char *args)
{
	for (int i = from; i < q->nlog; i++)
		if (!strcmp(q->log[i].cmd, cmd) && (!args || same_args(q->log[i].args, args)))
			return i;
	return -1;
}

static int count(const struct qemu *q, int from, const char *cmd, const char *args)
{
	int k = 0;

	for (int i = from; (i = find(q, i, cmd, args)) >= 0; i++)
		k++;
	return k;
}

static void assert_log_len(struct qemu *q, int n)
{
	if (q->nlog != n) {
		dump_log(q);
		fail_msg("%d commands seen, expected %d", q->nlog, n);
	}
}

/* Serialises the test's view of the fake with its thread. */
static int nlog(struct rig *r)
{
	int n;

	pthread_mutex_lock(&r->q.mu);
	n = r->q.nlog;
	pthread_mutex_unlock(&r->q.mu);
	return n;
}

static void assert_err(struct err *e, enum err_code code, const char *msg)
{
	if (!e)
		fail_msg("no error, expected \"%s\"", msg);
	if (strcmp(e->msg, msg))
		fail_msg("error \"%s\", expected \"%s\"", e->msg, msg);
	if (e->code != code)
		fail_msg("error \"%s\" has code %s, expected %s", e->msg, err_code_name(e->code),
			 err_code_name(code));
}

/* ---- the other ends of the connections ------------------------------------------ */

/* fd's peer closed or shut its end down: fd reads EOF. */
static void assert_eof(int fd, const char *what, unsigned i)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char c;

	if (poll(&p, 1, 1000) != 1 || recv(fd, &c, 1, MSG_DONTWAIT) != 0)
		fail_msg("%s %u: no EOF", what, i);
}

static void assert_no_eof(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	assert_int_equal(poll(&p, 1, 0), 0);
}

/* The cut socket still works both ways: nothing shut it down. */
static void assert_cut_intact(struct rig *r, unsigned i)
{
	struct pollfd p = { .fd = r->cut_peer[i], .events = POLLIN };
	char c = 0;

	if (poll(&p, 1, 0) != 0)
		fail_msg("cut %u: its peer saw EOF or data (revents %#x)", i, p.revents);
	assert_int_equal(send(r->cut_keep[i], "a", 1, MSG_NOSIGNAL), 1);
	assert_int_equal(recv(r->cut_peer[i], &c, 1, 0), 1);
	assert_int_equal(c, 'a');
	assert_int_equal(send(r->cut_peer[i], "b", 1, MSG_NOSIGNAL), 1);
	assert_int_equal(recv(r->cut_keep[i], &c, 1, 0), 1);
	assert_int_equal(c, 'b');
}

/* ---- start ------------------------------------------------------------------------- */

static const char *GETFD[] = {
	"{\"fdname\":\"vmm-nbd-fd-0\"}", "{\"fdname\":\"vmm-nbd-fd-1\"}",
	"{\"fdname\":\"vmm-nbd-fd-2\"}",
};
static const char *ADD[] = {
	"{\"driver\":\"nbd\",\"node-name\":\"vmm-nbd-0\",\"server\":{\"type\":\"fd\","
	"\"str\":\"vmm-nbd-fd-0\"},\"export\":\"vmm-101-disk-0\"}",
	"{\"driver\":\"nbd\",\"node-name\":\"vmm-nbd-1\",\"server\":{\"type\":\"fd\","
	"\"str\":\"vmm-nbd-fd-1\"},\"export\":\"vmm-101-disk-1\"}",
	"{\"driver\":\"nbd\",\"node-name\":\"vmm-nbd-2\",\"server\":{\"type\":\"fd\","
	"\"str\":\"vmm-nbd-fd-2\"},\"export\":\"vmm-101-disk-2\"}",
};
static const char *MIRROR_WB[] = {
	"{\"job-id\":\"vmm-mirror-0\",\"device\":\"drive0\",\"target\":\"vmm-nbd-0\","
	"\"sync\":\"full\",\"copy-mode\":\"write-blocking\",\"auto-dismiss\":false,"
	"\"granularity\":1048576,\"buf-size\":67108864}",
	"{\"job-id\":\"vmm-mirror-1\",\"device\":\"drive1\",\"target\":\"vmm-nbd-1\","
	"\"sync\":\"full\",\"copy-mode\":\"write-blocking\",\"auto-dismiss\":false,"
	"\"granularity\":1048576,\"buf-size\":67108864}",
	"{\"job-id\":\"vmm-mirror-2\",\"device\":\"drive2\",\"target\":\"vmm-nbd-2\","
	"\"sync\":\"full\",\"copy-mode\":\"write-blocking\",\"auto-dismiss\":false,"
	"\"granularity\":1048576,\"buf-size\":67108864}",
};
static const char *CANCEL_FORCE[] = {
	"{\"device\":\"vmm-mirror-0\",\"force\":true}", "{\"device\":\"vmm-mirror-1\",\"force\":true}",
};
static const char *DISMISS[] = {
	"{\"id\":\"vmm-mirror-0\"}", "{\"id\":\"vmm-mirror-1\"}",
};
static const char *DEL[] = {
	"{\"node-name\":\"vmm-nbd-0\"}", "{\"node-name\":\"vmm-nbd-1\"}",
	"{\"node-name\":\"vmm-nbd-2\"}",
};

static void test_start_commands(void **state)
{
	struct rig *r = rig_new(2);
	int k = 0;

	(void)state;
	rig_start_ok(r);
	pthread_mutex_lock(&r->q.mu);
	k = expect(&r->q, k, "query-block-jobs", "");
	k = expect(&r->q, k, "query-named-block-nodes", "{\"flat\":true}");
	for (unsigned i = 0; i < 2; i++) {
		k = expect(&r->q, k, "getfd", GETFD[i]);
		k = expect(&r->q, k, "blockdev-add", ADD[i]);
		k = expect(&r->q, k, "blockdev-mirror", MIRROR_WB[i]);
	}
	assert_log_len(&r->q, k);
	/* QEMU got the very sockets we handed over, in order. */
	assert_int_equal(r->q.ngot, 2);
	assert_int_equal(r->q.got_ino[0], r->nbd_ino[0]);
	assert_int_equal(r->q.got_ino[1], r->nbd_ino[1]);
	assert_non_null(node_find(&r->q, "vmm-nbd-1"));
	assert_non_null(job_find(&r->q, "vmm-mirror-1"));
	pthread_mutex_unlock(&r->q.mu);
	/* Nothing cut while it runs; our copy of each fd is closed: only
	 * QEMU's holds the connection open. */
	assert_cut_intact(r, 0);
	assert_cut_intact(r, 1);
	assert_no_eof(r->nbd_peer[0]);
	assert_no_eof(r->nbd_peer[1]);
	mig_mirror_end(r->m);
	assert_eof(r->nbd_peer[0], "NBD connection", 0);
	assert_eof(r->nbd_peer[1], "NBD connection", 1);
	rig_free(r);
}

static void test_start_background_speed(void **state)
{
	struct rig *r = rig_new(1);
	struct err *e = NULL;

	(void)state;
	assert_non_null(rig_start(r, 100 * MIB, false, &e));
	pthread_mutex_lock(&r->q.mu);
	/* QEMU's own chunk size in background mode (see mig_disk.c). */
	expect(&r->q, 4, "blockdev-mirror",
	       "{\"job-id\":\"vmm-mirror-0\",\"device\":\"drive0\",\"target\":\"vmm-nbd-0\","
	       "\"sync\":\"full\",\"copy-mode\":\"background\",\"auto-dismiss\":false,"
	       "\"speed\":104857600}");
	pthread_mutex_unlock(&r->q.mu);
	mig_mirror_end(r->m);
	rig_free(r);
}

static void test_start_bad_count(void **state)
{
	int fds[1] = { -1 }, cuts[1] = { -1 }, sv[2];
	struct err *e = NULL;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	fds[0] = sv[0];
	assert_null(mig_mirror_start(NULL, NULL, 0, fds, cuts, 0, true, &e));
	assert_err(e, ERR_INVAL, "cannot mirror 0 disks (1..8)");
	err_free(e);
	close(sv[0]);
	close(sv[1]);
	mig_mirror_abort(NULL);
	mig_mirror_end(NULL);
}

/* A crashed worker's jobs and nodes go before anything is added; other
 * jobs and nodes (a backup, the guest's own) stay. */
static void test_start_sweeps_leftovers(void **state)
{
	struct rig *r = rig_new(1);
	struct job *j;
	int k = 0;

	(void)state;
	pthread_mutex_lock(&r->q.mu);
	node_new(&r->q, "vmm-nbd-0", -1);
	node_new(&r->q, "vmm-nbd-3", -1);
	node_new(&r->q, "backup-target", -1);
	node_new(&r->q, "nbd-vmm-nbd-0", -1);
	job_new(&r->q, "vmm-mirror-0", "vmm-nbd-0")->ready = true;
	j = job_new(&r->q, "vmm-mirror-3", "vmm-nbd-3");
	j->concluded = j->cancelling = true;
	j->error = "Input/output error";
	job_new(&r->q, "backup-1", "backup-target");
	job_new(&r->q, "mirror-vmm-mirror-1", "backup-target");
	r->q.settle = 2;
	pthread_mutex_unlock(&r->q.mu);

	rig_start_ok(r);
	pthread_mutex_lock(&r->q.mu);
	k = expect(&r->q, k, "query-block-jobs", "");
	/* The running leftover: forced, dismissed once it concluded. */
	k = expect(&r->q, k, "block-job-cancel", CANCEL_FORCE[0]);
	for (int i = 0; i < 3; i++)
		k = expect(&r->q, k, "job-dismiss", DISMISS[0]);
	/* The concluded one refuses the cancel and goes with the dismiss. */
	k = expect(&r->q, k, "block-job-cancel", "{\"device\":\"vmm-mirror-3\",\"force\":true}");
	k = expect(&r->q, k, "job-dismiss", "{\"id\":\"vmm-mirror-3\"}");
	k = expect(&r->q, k, "query-named-block-nodes", "{\"flat\":true}");
	k = expect(&r->q, k, "blockdev-del", DEL[0]);
	k = expect(&r->q, k, "blockdev-del", "{\"node-name\":\"vmm-nbd-3\"}");
	/* Then the new ones, under the same names. */
	k = expect(&r->q, k, "getfd", GETFD[0]);
	k = expect(&r->q, k, "blockdev-add", ADD[0]);
	k = expect(&r->q, k, "blockdev-mirror", MIRROR_WB[0]);
	assert_log_len(&r->q, k);
	/* Others' are left alone. */
	assert_non_null(job_find(&r->q, "backup-1"));
	assert_non_null(job_find(&r->q, "mirror-vmm-mirror-1"));
	assert_non_null(node_find(&r->q, "backup-target"));
	assert_non_null(node_find(&r->q, "nbd-vmm-nbd-0"));
	assert_non_null(node_find(&r->q, "drive0"));
	pthread_mutex_unlock(&r->q.mu);
	mig_mirror_end(r->m);
	pthread_mutex_lock(&r->q.mu);
	assert_non_null(job_find(&r->q, "backup-1"));
	assert_non_null(node_find(&r->q, "backup-target"));
	pthread_mutex_unlock(&r->q.mu);
	rig_free(r);
}

/* A leftover that will not go is an error, and nothing is added. */
static void test_sweep_fails(void **state)
{
	struct rig *r = rig_new(1);
	struct err *e = NULL;

	(void)state;
	pthread_mutex_lock(&r->q.mu);
	node_new(&r->q, "vmm-nbd-5", -1);
	r->q.refuse_cmd = "blockdev-del";
	r->q.refuse_nth = 1;
	r->q.refuse_desc = "Node 'vmm-nbd-5' is busy: block device is in use by block job: backup";
	pthread_mutex_unlock(&r->q.mu);
	assert_null(rig_start(r, 0, true, &e));
	assert_err(e, ERR_QMP, "leftover NBD node vmm-nbd-5: QEMU refused 'blockdev-del': Node "
			       "'vmm-nbd-5' is busy: block device is in use by block job: backup");
	err_free(e);
	pthread_mutex_lock(&r->q.mu);
	assert_int_equal(find(&r->q, 0, "getfd", NULL), -1);
	assert_int_equal(find(&r->q, 0, "blockdev-add", NULL), -1);
	pthread_mutex_unlock(&r->q.mu);
	/* Nothing was handed to QEMU; the connection is closed. */
	assert_eof(r->nbd_peer[0], "NBD connection", 0);
	rig_free(r);
}

/* The 2nd of 3 mirrors is refused: the 1st job and both nodes go, the 3rd
 * disk's connection (never handed to QEMU) is closed too. */
static void test_start_fails_midway(void **state)
{
	struct rig *r = rig_new(3);
	struct err *e = NULL;
	int k;

	(void)state;
	r->q.settle = 2;
	r->q.refuse_cmd = "blockdev-mirror";
	r->q.refuse_nth = 2;
	r->q.refuse_desc = "Permission conflict on node 'drive1': permissions 'write' are both "
			   "required by node 'vmm-nbd-1' and unshared by another user";
	assert_null(rig_start(r, 0, true, &e));
	assert_err(e, ERR_QMP,
		   "disk drive1: mirror: QEMU refused 'blockdev-mirror': Permission conflict on "
		   "node 'drive1': permissions 'write' are both required by node 'vmm-nbd-1' "
		   "and unshared by another user");
	err_free(e);
	pthread_mutex_lock(&r->q.mu);
	k = 2;
	k = expect(&r->q, k, "getfd", GETFD[0]);
	k = expect(&r->q, k, "blockdev-add", ADD[0]);
	k = expect(&r->q, k, "blockdev-mirror", MIRROR_WB[0]);
	k = expect(&r->q, k, "getfd", GETFD[1]);
	k = expect(&r->q, k, "blockdev-add", ADD[1]);
	k = expect(&r->q, k, "blockdev-mirror", MIRROR_WB[1]);
	/* Undone: the job (forced, dismissed once it concluded), both nodes. */
	k = expect(&r->q, k, "block-job-cancel", CANCEL_FORCE[0]);
	for (int i = 0; i < 3; i++)
		k = expect(&r->q, k, "job-dismiss", DISMISS[0]);
	k = expect(&r->q, k, "blockdev-del", DEL[0]);
	k = expect(&r->q, k, "blockdev-del", DEL[1]);
	assert_log_len(&r->q, k);
	assert_null(job_find(&r->q, "vmm-mirror-0"));
	assert_null(node_find(&r->q, "vmm-nbd-0"));
	assert_null(node_find(&r->q, "vmm-nbd-1"));
	assert_int_equal(r->q.ngot, 2);
	pthread_mutex_unlock(&r->q.mu);
	for (unsigned i = 0; i < 3; i++) {
		assert_eof(r->nbd_peer[i], "NBD connection", i);
		assert_eof(r->cut_peer[i], "cut", i);
	}
	rig_free(r);
}

/* The first node cannot be added: nothing to cancel or delete, and the
 * second disk's connection is closed as well. */
static void test_start_add_refused(void **state)
{
	struct rig *r = rig_new(2);
	struct err *e = NULL;

	(void)state;
	r->q.refuse_cmd = "blockdev-add";
	r->q.refuse_nth = 1;
	r->q.refuse_desc = "Requested export not available";
	assert_null(rig_start(r, 0, true, &e));
	assert_err(e, ERR_QMP, "disk drive0: NBD connection to the target: QEMU refused "
			       "'blockdev-add': Requested export not available");
	err_free(e);
	pthread_mutex_lock(&r->q.mu);
	expect(&r->q, 2, "getfd", GETFD[0]);
	expect(&r->q, 3, "blockdev-add", ADD[0]);
	assert_log_len(&r->q, 4);
	pthread_mutex_unlock(&r->q.mu);
	assert_eof(r->nbd_peer[1], "NBD connection", 1);
	assert_eof(r->cut_peer[0], "cut", 0);
	assert_eof(r->cut_peer[1], "cut", 1);
	rig_free(r);
}

static void test_start_getfd_refused(void **state)
{
	struct rig *r = rig_new(2);
	struct err *e = NULL;
	int k;

	(void)state;
	r->q.refuse_cmd = "getfd";
	r->q.refuse_nth = 2;
	r->q.refuse_desc = "Too many open files";
	assert_null(rig_start(r, 0, true, &e));
	assert_err(e, ERR_QMP, "disk drive1: handing the NBD connection to QEMU: QEMU refused "
			       "'getfd': Too many open files");
	err_free(e);
	pthread_mutex_lock(&r->q.mu);
	k = expect(&r->q, 5, "getfd", GETFD[1]);
	k = expect(&r->q, k, "block-job-cancel", CANCEL_FORCE[0]);
	k = expect(&r->q, k, "job-dismiss", DISMISS[0]);
	k = expect(&r->q, k, "job-dismiss", DISMISS[0]);
	k = expect(&r->q, k, "blockdev-del", DEL[0]);
	assert_log_len(&r->q, k);
	pthread_mutex_unlock(&r->q.mu);
	assert_eof(r->nbd_peer[0], "NBD connection", 0);
	assert_eof(r->nbd_peer[1], "NBD connection", 1);
	rig_free(r);
}

/* ---- poll --------------------------------------------------------------------------- */

static void set_job(struct rig *r, const char *id, uint64_t offset, uint64_t len, bool ready)
{
	struct job *j;

	pthread_mutex_lock(&r->q.mu);
	j = job_find(&r->q, id);
	assert_non_null(j);
	j->offset = offset;
	j->len = len;
	j->ready = ready;
	pthread_mutex_unlock(&r->q.mu);
}

static void test_poll_progress(void **state)
{
	struct rig *r = rig_new(2);
	struct mig_disk_progress p[2];
	struct err *e = NULL;
	bool ready = true;
	struct job *j;

	(void)state;
	rig_start_ok(r);
	/* Others' jobs, failed or not, and one of ours beyond n are ignored. */
	pthread_mutex_lock(&r->q.mu);
	j = job_new(&r->q, "backup-1", "drive0");
	j->concluded = true;
	j->error = "No space left on device";
	job_new(&r->q, "vmm-mirror-5", "drive0")->error = "Input/output error";
	pthread_mutex_unlock(&r->q.mu);

	set_job(r, "vmm-mirror-0", 100 * MIB, 2048 * MIB, false);
	set_job(r, "vmm-mirror-1", 512 * MIB, 512 * MIB, true);
	assert_true(mig_mirror_poll(r->m, p, &ready, &e));
	assert_false(ready);
	assert_int_equal(p[0].done, 100 * MIB);
	assert_int_equal(p[0].total, 2048 * MIB);
	assert_false(p[0].ready);
	assert_int_equal(p[1].done, 512 * MIB);
	assert_int_equal(p[1].total, 512 * MIB);
	assert_true(p[1].ready);

	/* Each not ready in turn. */
	set_job(r, "vmm-mirror-0", 2048 * MIB, 2048 * MIB, true);
	set_job(r, "vmm-mirror-1", 512 * MIB, 513 * MIB, false);
	assert_true(mig_mirror_poll(r->m, p, &ready, &e));
	assert_false(ready);
	assert_true(p[0].ready);
	assert_false(p[1].ready);
	assert_int_equal(p[1].total, 513 * MIB);

	set_job(r, "vmm-mirror-1", 513 * MIB, 513 * MIB, true);
	assert_true(mig_mirror_poll(r->m, p, &ready, &e));
	assert_true(ready);
	assert_int_equal(p[0].done, 2048 * MIB);
	assert_int_equal(p[1].done, 513 * MIB);
	assert_null(e);
	pthread_mutex_lock(&r->q.mu);
	assert_int_equal(count(&r->q, 0, "query-block-jobs", ""), 4); /* the sweep's + 3 */
	assert_int_equal(count(&r->q, 0, "block-job-cancel", NULL), 0);
	pthread_mutex_unlock(&r->q.mu);
	mig_mirror_end(r->m);
	rig_free(r);
}

static void test_poll_job_failed(void **state)
{
	struct rig *r = rig_new(2);
	struct mig_disk_progress p[2];
	struct err *e = NULL;
	bool ready;
	struct job *j;
	int k;

	(void)state;
	rig_start_ok(r);
	pthread_mutex_lock(&r->q.mu);
	j = job_find(&r->q, "vmm-mirror-1");
	j->concluded = true;
	j->error = "Input/output error";
	pthread_mutex_unlock(&r->q.mu);
	assert_false(mig_mirror_poll(r->m, p, &ready, &e));
	assert_err(e, ERR_IO, "disk drive1: the mirror failed: Input/output error");
	err_free(e);
	e = NULL;

	/* Concluded without a word is a failure as well. */
	pthread_mutex_lock(&r->q.mu);
	j->error = NULL;
	pthread_mutex_unlock(&r->q.mu);
	assert_false(mig_mirror_poll(r->m, p, &ready, &e));
	assert_err(e, ERR_IO, "disk drive1: the mirror failed: concluded");
	err_free(e);

	k = nlog(r);
	mig_mirror_end(r->m);
	pthread_mutex_lock(&r->q.mu);
	/* The failed job is dismissed at once, the other once it concluded. */
	assert_int_equal(count(&r->q, k, "job-dismiss", DISMISS[1]), 1);
	assert_int_equal(count(&r->q, k, "job-dismiss", DISMISS[0]), 2);
	assert_null(job_find(&r->q, "vmm-mirror-0"));
	assert_null(job_find(&r->q, "vmm-mirror-1"));
	assert_null(node_find(&r->q, "vmm-nbd-0"));
	assert_null(node_find(&r->q, "vmm-nbd-1"));
	pthread_mutex_unlock(&r->q.mu);
	rig_free(r);
}

static void test_poll_job_gone(void **state)
{
	struct rig *r = rig_new(2);
	struct mig_disk_progress p[2];
	struct err *e = NULL;
	bool ready;
	int k;

	(void)state;
	rig_start_ok(r);
	pthread_mutex_lock(&r->q.mu);
	job_find(&r->q, "vmm-mirror-0")->present = false; /* someone dismissed it */
	pthread_mutex_unlock(&r->q.mu);
	assert_false(mig_mirror_poll(r->m, p, &ready, &e));
	assert_err(e, ERR_STATE, "disk drive0: the mirror job is gone");
	err_free(e);

	/* end() takes "Job not found" as done, not as a reason to wait. */
	k = nlog(r);
	mig_mirror_end(r->m);
	pthread_mutex_lock(&r->q.mu);
	assert_int_equal(count(&r->q, k, "job-dismiss", DISMISS[0]), 1);
	assert_int_equal(count(&r->q, k, "blockdev-del", NULL), 2);
	assert_null(node_find(&r->q, "vmm-nbd-0"));
	assert_null(node_find(&r->q, "vmm-nbd-1"));
	pthread_mutex_unlock(&r->q.mu);
	rig_free(r);
}

/* ---- complete ------------------------------------------------------------------------- */

static void test_complete_then_end(void **state)
{
	struct rig *r = rig_new(2);
	struct err *e = NULL;
	int k, q0;

	(void)state;
	rig_start_ok(r);
	set_job(r, "vmm-mirror-0", 8 * MIB, 8 * MIB, true);
	set_job(r, "vmm-mirror-1", 4 * MIB, 4 * MIB, true);
	pthread_mutex_lock(&r->q.mu);
	r->q.settle = 2; /* each job writes the rest during two looks */
	k = q0 = r->q.nlog;
	pthread_mutex_unlock(&r->q.mu);
	if (!mig_mirror_complete(r->m, 2000, &e))
		fail_msg("complete: %s", e->msg);
	pthread_mutex_lock(&r->q.mu);
	/* It may look at the jobs first (a failed one says why). */
	while (k < r->q.nlog && !strcmp(r->q.log[k].cmd, "query-block-jobs"))
		k++;
	/* Without force ("force": false would do as well). */
	for (int i = 0; i < 2; i++) {
		struct json_object *a;
		char want[32];

		k = expect(&r->q, k, "block-job-cancel", NULL);
		a = json_tokener_parse(r->q.log[k - 1].args);
		snprintf(want, sizeof(want), "vmm-mirror-%d", i);
		assert_string_equal(arg_str(a, "device"), want);
		assert_false(arg_bool(a, "force"));
		assert_int_equal(json_object_object_length(a), 1 + !!arg_str(a, "force"));
		json_object_put(a);
	}
	/* Waited for both to conclude: two looks running, the third concluded. */
	for (int i = 0; i < 3; i++)
		k = expect(&r->q, k, "query-block-jobs", "");
	assert_log_len(&r->q, k);
	assert_true(job_find(&r->q, "vmm-mirror-0")->concluded);
	assert_true(job_find(&r->q, "vmm-mirror-1")->concluded);
	pthread_mutex_unlock(&r->q.mu);

	/* end() only cleans up: no forced cancel, nothing cut. */
	mig_mirror_end(r->m);
	pthread_mutex_lock(&r->q.mu);
	k = expect(&r->q, k, "job-dismiss", DISMISS[0]);
	k = expect(&r->q, k, "job-dismiss", DISMISS[1]);
	k = expect(&r->q, k, "blockdev-del", DEL[0]);
	k = expect(&r->q, k, "blockdev-del", DEL[1]);
	assert_log_len(&r->q, k);
	assert_int_equal(count(&r->q, q0, "block-job-cancel", NULL), 2);
	pthread_mutex_unlock(&r->q.mu);
	assert_cut_intact(r, 0);
	assert_cut_intact(r, 1);
	/* Deleting the nodes closed the connections (QEMU's copies). */
	assert_eof(r->nbd_peer[0], "NBD connection", 0);
	assert_eof(r->nbd_peer[1], "NBD connection", 1);
	rig_free(r);
}

/* detach() after complete(): jobs and nodes go now (before the switchover
 * inactivates the disks); a second detach() and end() have nothing left. */
static void test_complete_detach(void **state)
{
	struct rig *r = rig_new(2);
	struct err *e = NULL;
	int k;

	(void)state;
	rig_start_ok(r);
	set_job(r, "vmm-mirror-0", 8 * MIB, 8 * MIB, true);
	set_job(r, "vmm-mirror-1", 4 * MIB, 4 * MIB, true);
	if (!mig_mirror_complete(r->m, 2000, &e))
		fail_msg("complete: %s", e->msg);
	k = nlog(r);
	if (!mig_mirror_detach(r->m, &e))
		fail_msg("detach: %s", e->msg);
	pthread_mutex_lock(&r->q.mu);
	k = expect(&r->q, k, "job-dismiss", DISMISS[0]);
	k = expect(&r->q, k, "job-dismiss", DISMISS[1]);
	k = expect(&r->q, k, "blockdev-del", DEL[0]);
	k = expect(&r->q, k, "blockdev-del", DEL[1]);
	assert_log_len(&r->q, k);
	assert_null(node_find(&r->q, "vmm-nbd-0"));
	assert_null(node_find(&r->q, "vmm-nbd-1"));
	pthread_mutex_unlock(&r->q.mu);
	assert_eof(r->nbd_peer[0], "NBD connection", 0);
	assert_eof(r->nbd_peer[1], "NBD connection", 1);
	assert_true(mig_mirror_detach(r->m, &e));
	mig_mirror_end(r->m);
	assert_int_equal(nlog(r), k);
	assert_cut_intact(r, 0);
	assert_cut_intact(r, 1);
	rig_free(r);
}

static void test_complete_job_fails(void **state)
{
	struct rig *r = rig_new(2);
	struct err *e = NULL;
	struct job *j;
	int k;

	(void)state;
	rig_start_ok(r);
	set_job(r, "vmm-mirror-0", 8 * MIB, 8 * MIB, true);
	set_job(r, "vmm-mirror-1", 4 * MIB, 4 * MIB, true);
	/* It failed since the last poll: the reason, not "cannot cancel". */
	pthread_mutex_lock(&r->q.mu);
	j = job_find(&r->q, "vmm-mirror-1");
	j->error = "Connection reset by peer";
	j->concluded = true;
	k = r->q.nlog;
	pthread_mutex_unlock(&r->q.mu);
	assert_false(mig_mirror_complete(r->m, 2000, &e));
	assert_err(e, ERR_IO, "disk drive1: the mirror failed: Connection reset by peer");
	err_free(e);
	/* Not completed: end() aborts. */
	mig_mirror_end(r->m);
	pthread_mutex_lock(&r->q.mu);
	assert_true(find(&r->q, k, "block-job-cancel", CANCEL_FORCE[0]) >= 0);
	assert_true(find(&r->q, k, "block-job-cancel", CANCEL_FORCE[1]) >= 0);
	pthread_mutex_unlock(&r->q.mu);
	assert_eof(r->cut_peer[0], "cut", 0);
	assert_eof(r->cut_peer[1], "cut", 1);
	rig_free(r);
}

/* Jobs that do not conclude in time: ERR_TIMEOUT, then end() aborts. */
static void test_complete_timeout(void **state)
{
	struct rig *r = rig_new(1);
	struct err *e = NULL;
	int64_t t0;
	int k;

	(void)state;
	rig_start_ok(r);
	set_job(r, "vmm-mirror-0", 8 * MIB, 8 * MIB, true);
	pthread_mutex_lock(&r->q.mu);
	r->q.settle = 1000000;
	pthread_mutex_unlock(&r->q.mu);
	t0 = util_now_ms();
	assert_false(mig_mirror_complete(r->m, 150, &e));
	assert_true(util_now_ms() - t0 >= 150 && util_now_ms() - t0 < 1000);
	assert_err(e, ERR_TIMEOUT, "the mirrors did not finish within 150 ms");
	err_free(e);
	pthread_mutex_lock(&r->q.mu);
	r->q.settle = 1;
	k = r->q.nlog;
	pthread_mutex_unlock(&r->q.mu);
	mig_mirror_end(r->m);
	pthread_mutex_lock(&r->q.mu);
	k = expect(&r->q, k, "block-job-cancel", CANCEL_FORCE[0]);
	k = expect(&r->q, k, "job-dismiss", DISMISS[0]);
	k = expect(&r->q, k, "job-dismiss", DISMISS[0]);
	k = expect(&r->q, k, "blockdev-del", DEL[0]);
	assert_log_len(&r->q, k);
	pthread_mutex_unlock(&r->q.mu);
	assert_eof(r->cut_peer[0], "cut", 0);
	rig_free(r);
}

/* ---- abort and end ----------------------------------------------------------------------- */

static void test_abort_then_end(void **state)
{
	struct rig *r = rig_new(2);
	int k;

	(void)state;
	rig_start_ok(r);
	pthread_mutex_lock(&r->q.mu);
	r->q.settle = 2;
	k = r->q.nlog;
	pthread_mutex_unlock(&r->q.mu);
	mig_mirror_abort(r->m);
	/* Cut first, force-cancelled, not waited for. */
	assert_eof(r->cut_peer[0], "cut", 0);
	assert_eof(r->cut_peer[1], "cut", 1);
	assert_int_equal(send(r->cut_keep[0], "x", 1, MSG_NOSIGNAL), -1);
	assert_int_equal(errno, EPIPE);
	pthread_mutex_lock(&r->q.mu);
	k = expect(&r->q, k, "block-job-cancel", CANCEL_FORCE[0]);
	k = expect(&r->q, k, "block-job-cancel", CANCEL_FORCE[1]);
	assert_log_len(&r->q, k);
	pthread_mutex_unlock(&r->q.mu);
	mig_mirror_abort(r->m); /* once is enough */
	assert_int_equal(nlog(r), k);

	mig_mirror_end(r->m);
	pthread_mutex_lock(&r->q.mu);
	/* Dismissed once each concluded (refused twice before), then the
	 * nodes, which QEMU refuses while a job holds them. */
	for (int i = 0; i < 2; i++)
		for (int n = 0; n < 3; n++)
			k = expect(&r->q, k, "job-dismiss", DISMISS[i]);
	k = expect(&r->q, k, "blockdev-del", DEL[0]);
	k = expect(&r->q, k, "blockdev-del", DEL[1]);
	assert_log_len(&r->q, k);
	for (int i = 0; i < MAXJOBS; i++)
		assert_false(r->q.jobs[i].present);
	assert_null(node_find(&r->q, "vmm-nbd-0"));
	assert_null(node_find(&r->q, "vmm-nbd-1"));
	assert_non_null(node_find(&r->q, "drive0")); /* the guest's disk is untouched */
	pthread_mutex_unlock(&r->q.mu);
	assert_eof(r->nbd_peer[0], "NBD connection", 0);
	assert_eof(r->nbd_peer[1], "NBD connection", 1);
	rig_free(r);
}

/* end() without complete() is an abort first. */
static void test_end_without_complete(void **state)
{
	struct rig *r = rig_new(2);
	int k;

	(void)state;
	rig_start_ok(r);
	set_job(r, "vmm-mirror-0", 8 * MIB, 8 * MIB, true); /* ready is no exception */
	k = nlog(r);
	mig_mirror_end(r->m);
	pthread_mutex_lock(&r->q.mu);
	k = expect(&r->q, k, "block-job-cancel", CANCEL_FORCE[0]);
	k = expect(&r->q, k, "block-job-cancel", CANCEL_FORCE[1]);
	for (int i = 0; i < 2; i++)
		for (int n = 0; n < 2; n++)
			k = expect(&r->q, k, "job-dismiss", DISMISS[i]);
	k = expect(&r->q, k, "blockdev-del", DEL[0]);
	k = expect(&r->q, k, "blockdev-del", DEL[1]);
	assert_log_len(&r->q, k);
	pthread_mutex_unlock(&r->q.mu);
	assert_eof(r->cut_peer[0], "cut", 0);
	assert_eof(r->cut_peer[1], "cut", 1);
	rig_free(r);
}

/* QEMU died: end() cuts the connections and returns at once instead of
 * retrying job-dismiss for 30 s. */
static void test_end_qemu_gone(void **state)
{
	struct rig *r = rig_new(2);
	int64_t t0;

	(void)state;
	rig_start_ok(r);
	pthread_mutex_lock(&r->q.mu);
	r->q.hangup_cmd = "block-job-cancel";
	pthread_mutex_unlock(&r->q.mu);
	t0 = util_now_ms();
	mig_mirror_end(r->m);
	if (util_now_ms() - t0 > 1000)
		fail_msg("end() took %lld ms with QEMU gone", (long long)(util_now_ms() - t0));
	assert_eof(r->cut_peer[0], "cut", 0);
	assert_eof(r->cut_peer[1], "cut", 1);
	rig_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_start_commands),
		cmocka_unit_test(test_start_background_speed),
		cmocka_unit_test(test_start_bad_count),
		cmocka_unit_test(test_start_sweeps_leftovers),
		cmocka_unit_test(test_sweep_fails),
		cmocka_unit_test(test_start_fails_midway),
		cmocka_unit_test(test_start_add_refused),
		cmocka_unit_test(test_start_getfd_refused),
		cmocka_unit_test(test_poll_progress),
		cmocka_unit_test(test_poll_job_failed),
		cmocka_unit_test(test_poll_job_gone),
		cmocka_unit_test(test_complete_then_end),
		cmocka_unit_test(test_complete_detach),
		cmocka_unit_test(test_complete_job_fails),
		cmocka_unit_test(test_complete_timeout),
		cmocka_unit_test(test_abort_then_end),
		cmocka_unit_test(test_end_without_complete),
		cmocka_unit_test(test_end_qemu_gone),
	};

	if (!getenv("VMM_LOG"))
		log_set_level(LOG_ERROR);
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("mig_disk", tests, NULL, NULL);
}
