/*
 * clu_daemon.c - vmmd's core: the state machine, replication of store ops
 * in agreed order, this node's record, and the CLI requests. Contract in
 * clu.h; internals in clu_daemon.h.
 *
 * Stores stay equal because every member applies the same writes in the
 * same (CPG agreed) order, and after each membership change the sync
 * exchange of clu_sync.c makes them equal before writes are sent again.
 */
#include "clu_daemon.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/notify.h"
#include "../common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SYNC_STALL_MS 15000

static const char *const state_names[] = {
	[CLU_D_STANDALONE] = "standalone",
	[CLU_D_DISCONNECTED] = "disconnected",
	[CLU_D_SYNCING] = "syncing",
	[CLU_D_SYNCED] = "synced",
};
_Static_assert(ARRAY_SIZE(state_names) == CLU_D_STATE_MAX, "state_names");

const char *clu_dstate_name(enum clu_dstate s)
{
	return (unsigned)s < CLU_D_STATE_MAX ? state_names[s] : "?";
}

static void flush_queued_writes(struct clu_daemon *d);
static void fail_pending_writes(struct clu_daemon *d, const char *why);

/* Tells systemd (Type=notify) how we are; `extra` e.g. "READY=1\n". A
 * failure is logged once: systemd then kills us at its start timeout, and
 * the log says why. */
static void notify_state(const struct clu_daemon *d, const char *extra)
{
	static bool warned;
	struct err *e = NULL;
	char msg[128];

	snprintf(msg, sizeof(msg), "%sSTATUS=%s, store version %" PRIu64, extra,
		 clu_dstate_name(d->state), clu_store_version(d->store));
	if (!notify_send(msg, &e) && !warned) {
		log_warn("%s", e->msg);
		warned = true;
	}
	err_free(e);
}

void clu_daemon_set_state(struct clu_daemon *d, enum clu_dstate s)
{
	if (d->state == s)
		return;
	log_info("state %s -> %s (store version %" PRIu64 ")", clu_dstate_name(d->state),
		 clu_dstate_name(s), clu_store_version(d->store));
	d->state = s;
	notify_state(d, "");
	if (s == CLU_D_SYNCED)
		flush_queued_writes(d);
	if (s == CLU_D_DISCONNECTED)
		fail_pending_writes(d, "no quorum: lost the connection to corosync");
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool is_me(struct clu_daemon *d, uint32_t nodeid, uint32_t pid)
{
	return nodeid == d->nodeid && pid == d->pid;
}

/* ---- pending requests ------------------------------------------------ */

static struct clu_pending *pending_new(struct clu_daemon *d, int client, int64_t id)
{
	for (int i = 0; i < CLU_MAX_PENDING; i++)
		if (!d->pending[i].used) {
			struct clu_pending *p = &d->pending[i];

			memset(p, 0, sizeof(*p));
			p->used = true;
			p->client = client;
			p->client_gen = client >= 0 ? d->client_gen[client] : 0;
			p->client_id = id;
			p->req = ++d->next_req;
			return p;
		}
	return NULL;
}

static void pending_free(struct clu_pending *p)
{
	json_object_put(p->op);
	free(p->prefix);
	memset(p, 0, sizeof(*p));
}

static bool pending_client_ok(struct clu_daemon *d, struct clu_pending *p)
{
	return p->client >= 0 && d->clients[p->client].fd >= 0 &&
	       d->client_gen[p->client] == p->client_gen;
}

static void pending_reply(struct clu_daemon *d, struct clu_pending *p, struct json_object *r,
			  const struct err *e)
{
	if (pending_client_ok(d, p)) {
		if (e)
			clu_server_error(d, p->client, p->client_id, e);
		else
			clu_server_reply(d, p->client, p->client_id, json_object_get(r));
	} else if (e && p->client < 0) {
		log_warn("internal write failed: %s", e->msg);
	}
	pending_free(p);
}

static void fail_pending_writes(struct clu_daemon *d, const char *why)
{
	struct err *e = NULL;

	err_set(&e, ERR_STATE, "%s", why);
	for (int i = 0; i < CLU_MAX_PENDING; i++)
		if (d->pending[i].used && !d->pending[i].watch)
			pending_reply(d, &d->pending[i], NULL, e);
	err_free(e);
}

static bool send_op(struct clu_daemon *d, struct clu_pending *p, struct err **errp)
{
	_cleanup_json_ struct json_object *m = json_object_new_object();

	json_object_object_add(m, "t", json_object_new_string("op"));
	json_object_object_add(m, "req", json_object_new_uint64(p->req));
	json_object_object_add(m, "op", json_object_get(p->op));
	if (!clu_cs_mcast(d, m, errp))
		return false;
	p->sent = true;
	return true;
}

static void flush_queued_writes(struct clu_daemon *d)
{
	for (int i = 0; i < CLU_MAX_PENDING; i++) {
		struct clu_pending *p = &d->pending[i];
		struct err *e = NULL;

		if (!p->used || p->watch || p->sent)
			continue;
		if (!d->quorate) {
			err_set(&e, ERR_STATE, "no quorum");
			pending_reply(d, p, NULL, e);
		} else if (!send_op(d, p, &e)) {
			pending_reply(d, p, NULL, e);
		}
		err_free(e);
	}
}

/* Answers watches whose prefix saw a change after their `since`. */
static void check_watches(struct clu_daemon *d, const char *key)
{
	for (int i = 0; i < CLU_MAX_PENDING; i++) {
		struct clu_pending *p = &d->pending[i];
		struct json_object *r;

		if (!p->used || !p->watch || strncmp(key, p->prefix, strlen(p->prefix)) ||
		    clu_store_version(d->store) <= p->since)
			continue;
		r = json_object_new_object();
		json_object_object_add(r, "changed", json_object_new_boolean(true));
		json_object_object_add(r, "key", json_object_new_string(key));
		json_object_object_add(r, "version", json_object_new_uint64(clu_store_version(d->store)));
		pending_reply(d, p, r, NULL);
		json_object_put(r);
	}
}

/* ---- applying ops ------------------------------------------------------ */

/* Applies an op everywhere alike; answers the client if the op is ours. */
void clu_daemon_apply_op(struct clu_daemon *d, struct json_object *opj, bool mine, uint64_t req)
{
	struct clu_op op;
	struct err *e = NULL;
	struct clu_pending *p = NULL;

	if (mine)
		for (int i = 0; i < CLU_MAX_PENDING; i++)
			if (d->pending[i].used && !d->pending[i].watch && d->pending[i].sent &&
			    d->pending[i].req == req)
				p = &d->pending[i];
	if (clu_op_from_json(opj, &op, &e) && clu_store_apply(d->store, &op, &e)) {
		check_watches(d, op.key);
		if (!strcmp(op.key, "cluster/corosync.conf"))
			clu_cc_follow(d);
	}
	if (e && e->code == ERR_IO)
		log_error("store write failed, this node's copy may now lag: %s", e->msg);
	if (p) {
		struct json_object *r = json_object_new_object();

		json_object_object_add(r, "version", json_object_new_uint64(clu_store_version(d->store)));
		pending_reply(d, p, r, e);
		json_object_put(r);
	}
	err_free(e);
}

/* ---- this node's record ------------------------------------------------- */

/* This node's SSH host key ("ssh-ed25519 AAAA..."), published in the store
 * so that migrations pin it instead of trusting it on first use:
 * $VMM_SSH_HOST_KEY (vmmd --ssh-host-key), else OpenSSH's ed25519 key. */
static char *ssh_host_key(void)
{
	const char *path = getenv("VMM_SSH_HOST_KEY");
	_cleanup_free_ char *txt = NULL;
	char type[64], blob[512];

	txt = util_read_file(path && *path ? path : "/etc/ssh/ssh_host_ed25519_key.pub", 4096,
			     NULL);
	char *out = NULL;

	if (!txt || sscanf(txt, "%63s %511s", type, blob) != 2 || strncmp(type, "ssh-", 4))
		return NULL;
	return asprintf(&out, "%s %s", type, blob) < 0 ? NULL : out;
}

/* Keeps nodes/<this node> = {"nodeid","links","maintenance","ssh_host_key"}
 * current; the maintenance flag belongs to drain and is carried over. */
void clu_daemon_register_node(struct clu_daemon *d)
{
	_cleanup_free_ char *key = NULL, *cur = NULL, *hk = NULL;
	_cleanup_json_ struct json_object *want = json_object_new_object(), *old = NULL;
	struct json_object *m = NULL, *links;
	struct clu_op op = { .kind = CLU_OP_PUT, .if_version = -1 };
	struct clu_pending *p;
	struct err *e = NULL;
	uint64_t version = 0;

	if (!d->node[0] || asprintf(&key, "nodes/%s", d->node) < 0)
		return;
	links = d->standalone ? json_object_new_array() : clu_cs_node_links(d);
	json_object_object_add(want, "nodeid", json_object_new_int64(d->nodeid));
	json_object_object_add(want, "links", links);
	if ((hk = ssh_host_key()))
		json_object_object_add(want, "ssh_host_key", json_object_new_string(hk));
	cur = clu_store_get(d->store, key, &version, NULL);
	old = cur ? json_tokener_parse(cur) : NULL;
	if (old && json_object_object_get_ex(old, "maintenance", &m))
		json_object_object_add(want, "maintenance", json_object_get(m));
	else
		json_object_object_add(want, "maintenance", json_object_new_boolean(false));
	if (old && json_object_equal(old, want))
		return;
	op.key = key;
	op.value = json_object_to_json_string_ext(want, JSON_C_TO_STRING_PLAIN);
	op.ts_ms = wall_ms();
	/* Only over the record just read: a drain's maintenance flag written
	 * meanwhile makes this a conflict (retried with the flag) instead of
	 * being overwritten. */
	op.if_version = cur ? (int64_t)version : 0;
	if (d->standalone) {
		if (!clu_store_apply(d->store, &op, &e))
			log_warn("cannot register node %s: %s", d->node, e->msg);
		err_free(e);
		return;
	}
	if (d->state != CLU_D_SYNCED || !d->quorate || !(p = pending_new(d, -1, 0)))
		return;
	p->op = clu_op_to_json(&op);
	p->deadline_ms = util_now_ms() + 10000;
	if (!send_op(d, p, &e)) {
		log_warn("cannot register node %s: %s", d->node, e->msg);
		err_free(e);
		pending_free(p);
	}
}

void clu_daemon_deliver(struct clu_daemon *d, uint32_t nodeid, uint32_t pid, const char *msg,
			size_t len)
{
	_cleanup_json_ struct json_object *m = NULL;
	struct json_tokener *tok = json_tokener_new();
	struct json_object *t, *op, *req;

	if (!tok)
		return;
	m = json_tokener_parse_ex(tok, msg, (int)len);
	json_tokener_free(tok);
	if (!m || !json_object_object_get_ex(m, "t", &t)) {
		log_warn("ignoring a malformed message from node %u", nodeid);
		return;
	}
	if (!strcmp(json_object_get_string(t), "op") && json_object_object_get_ex(m, "op", &op)) {
		bool mine = is_me(d, nodeid, pid);
		uint64_t id;

		json_object_object_get_ex(m, "req", &req);
		id = req ? (uint64_t)json_object_get_int64(req) : 0;
		if (!clu_sync_hold(d, op, mine, id))
			clu_daemon_apply_op(d, op, mine, id);
	} else {
		clu_sync_message(d, nodeid, pid, json_object_get_string(t), m);
	}
}

void clu_daemon_quorum(struct clu_daemon *d, bool quorate, const uint32_t *view, unsigned n)
{
	bool regained = quorate && !d->quorate;

	if (d->quorate != quorate)
		log_info("quorum %s", quorate ? "regained" : "lost: writes are refused");
	d->quorate = quorate;
	if (regained)
		clu_daemon_register_node(d);
	d->nview = n < CLU_MAX_MEMBERS ? n : CLU_MAX_MEMBERS;
	memcpy(d->view, view, d->nview * sizeof(*view));
}

/* ---- requests ------------------------------------------------------------ */

static const char *jstr(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string) ?
		       json_object_get_string(v) : NULL;
}

static int64_t jint(struct json_object *o, const char *k, int64_t def)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_int) ?
		       json_object_get_int64(v) : def;
}

static bool list_one(const char *key, const char *value, uint64_t version, void *opaque)
{
	struct json_object *e = json_object_new_object();

	json_object_object_add(e, "key", json_object_new_string(key));
	json_object_object_add(e, "value", json_object_new_string(value));
	json_object_object_add(e, "version", json_object_new_uint64(version));
	json_object_array_add(opaque, e);
	return true;
}

static struct json_object *status(struct clu_daemon *d)
{
	struct json_object *st = json_object_new_object(), *mem = json_object_new_array();
	char sum[32];

	snprintf(sum, sizeof(sum), "%016" PRIx64, clu_store_checksum(d->store));
	json_object_object_add(st, "state", json_object_new_string(clu_dstate_name(d->state)));
	json_object_object_add(st, "node", json_object_new_string(d->node));
	json_object_object_add(st, "nodeid", json_object_new_int64(d->nodeid));
	json_object_object_add(st, "quorate", json_object_new_boolean(d->quorate));
	json_object_object_add(st, "version", json_object_new_uint64(clu_store_version(d->store)));
	json_object_object_add(st, "checksum", json_object_new_string(sum));
	json_object_object_add(st, "syncs", json_object_new_uint64(d->syncs));
	for (unsigned i = 0; i < d->nmembers; i++) {
		struct json_object *m = json_object_new_object();
		json_object_object_add(m, "nodeid", json_object_new_int64(d->members[i].nodeid));
		json_object_object_add(m, "pid", json_object_new_int64(d->members[i].pid));
		json_object_array_add(mem, m);
	}
	json_object_object_add(st, "members", mem);
	clu_cs_status(d, st);
	return st;
}

static void do_write(struct clu_daemon *d, int c, int64_t id, struct json_object *req)
{
	struct json_object *opj, *copy;
	struct clu_pending *p;
	struct clu_op op;
	struct err *e = NULL;
	int64_t timeout = jint(req, "timeout_ms", 10000);

	if (!json_object_object_get_ex(req, "op", &opj) || !json_object_is_type(opj, json_type_object)) {
		err_set(&e, ERR_INVAL, "write without an op");
		goto fail;
	}
	/* The daemon stamps time and owner: one clock per proposer. */
	copy = json_tokener_parse(json_object_to_json_string(opj));
	json_object_object_add(copy, "ts_ms", json_object_new_int64(wall_ms()));
	if (!jstr(copy, "owner"))
		json_object_object_add(copy, "owner", json_object_new_string(d->node));
	if (!clu_op_from_json(copy, &op, &e) ||
	    ((op.kind == CLU_OP_PUT || op.kind == CLU_OP_CREATE) &&
	     !clu_value_check(op.key, op.value, &e))) {
		json_object_put(copy);
		goto fail;
	}
	if (d->state == CLU_D_STANDALONE) {
		struct json_object *r = json_object_new_object();

		if (clu_store_apply(d->store, &op, &e))
			check_watches(d, op.key);
		json_object_put(copy);
		if (e) {
			json_object_put(r);
			goto fail;
		}
		json_object_object_add(r, "version", json_object_new_uint64(clu_store_version(d->store)));
		clu_server_reply(d, c, id, r);
		return;
	}
	if (d->state == CLU_D_DISCONNECTED || !d->quorate) {
		json_object_put(copy);
		err_set(&e, ERR_STATE, "no quorum");
		goto fail;
	}
	p = pending_new(d, c, id);
	if (!p) {
		json_object_put(copy);
		err_set(&e, ERR_STATE, "too many writes in flight; try again");
		goto fail;
	}
	p->op = copy;
	p->deadline_ms = util_now_ms() + (timeout > 0 ? timeout : 10000);
	if (d->state == CLU_D_SYNCED && !send_op(d, p, &e)) {
		pending_free(p);
		goto fail;
	}
	return; /* answered when it comes round in agreed order */
fail:
	clu_server_error(d, c, id, e);
	err_free(e);
}

static void do_watch(struct clu_daemon *d, int c, int64_t id, struct json_object *req)
{
	const char *prefix = jstr(req, "prefix");
	struct clu_pending *p;
	struct err *e = NULL;

	if (!prefix) {
		err_set(&e, ERR_INVAL, "watch without a prefix");
	} else if (!(p = pending_new(d, c, id))) {
		err_set(&e, ERR_STATE, "too many watches");
	} else {
		p->watch = true;
		p->prefix = strdup(prefix);
		p->since = (uint64_t)jint(req, "since", (int64_t)clu_store_version(d->store));
		p->deadline_ms = util_now_ms() + jint(req, "timeout_ms", 30000);
		return;
	}
	clu_server_error(d, c, id, e);
	err_free(e);
}

void clu_daemon_request(struct clu_daemon *d, int c, struct json_object *req)
{
	const char *cmd = jstr(req, "cmd");
	int64_t id = jint(req, "id", 0);
	struct err *e = NULL;
	struct json_object *r;

	if (!cmd) {
		err_set(&e, ERR_INVAL, "request without a cmd");
	} else if (!strcmp(cmd, "status")) {
		clu_server_reply(d, c, id, status(d));
		return;
	} else if (!strcmp(cmd, "get")) {
		uint64_t ver = 0;
		const char *key = jstr(req, "key");
		char *val = key && clu_key_check(key, &e) ? clu_store_get(d->store, key, &ver, &e) : NULL;

		if (val) {
			r = json_object_new_object();
			json_object_object_add(r, "value", json_object_new_string(val));
			json_object_object_add(r, "version", json_object_new_uint64(ver));
			free(val);
			clu_server_reply(d, c, id, r);
			return;
		}
		if (!key)
			err_set(&e, ERR_INVAL, "get without a key");
	} else if (!strcmp(cmd, "list")) {
		struct json_object *arr = json_object_new_array();
		const char *prefix = jstr(req, "prefix");

		if (clu_store_list(d->store, prefix ? prefix : "", list_one, arr, &e)) {
			r = json_object_new_object();
			json_object_object_add(r, "entries", arr);
			json_object_object_add(r, "version",
					       json_object_new_uint64(clu_store_version(d->store)));
			clu_server_reply(d, c, id, r);
			return;
		}
		json_object_put(arr);
	} else if (!strcmp(cmd, "write")) {
		do_write(d, c, id, req);
		return;
	} else if (!strcmp(cmd, "watch")) {
		do_watch(d, c, id, req);
		return;
	} else if (!strcmp(cmd, "join")) {
		if (clu_cc_join(d, &e)) {
			clu_server_reply(d, c, id, json_object_new_object());
			return;
		}
	} else if (!strcmp(cmd, "expected")) {
		int64_t v = jint(req, "votes", 0);

		if (d->state == CLU_D_STANDALONE)
			err_set(&e, ERR_STATE, "this node is not in a cluster");
		else if (v < 1 || v > 1000)
			err_set(&e, ERR_INVAL, "invalid expected votes %lld", (long long)v);
		else if (clu_cs_set_expected(d, (unsigned)v, &e)) {
			clu_server_reply(d, c, id, json_object_new_object());
			return;
		}
	} else {
		err_set(&e, ERR_INVAL, "unknown request '%s'", cmd);
	}
	clu_server_error(d, c, id, e);
	err_free(e);
}

/* ---- main loop ------------------------------------------------------------ */

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
	got_signal = sig;
}

static void expire_pending(struct clu_daemon *d)
{
	int64_t now = util_now_ms();

	for (int i = 0; i < CLU_MAX_PENDING; i++) {
		struct clu_pending *p = &d->pending[i];
		struct err *e = NULL;

		if (!p->used || now < p->deadline_ms)
			continue;
		if (p->watch) {
			struct json_object *r = json_object_new_object();
			json_object_object_add(r, "changed", json_object_new_boolean(false));
			pending_reply(d, p, r, NULL);
			json_object_put(r);
			continue;
		}
		err_set(&e, ERR_TIMEOUT, p->sent ? "the cluster did not confirm the write in time" :
			"timed out waiting for the cluster to finish syncing");
		pending_reply(d, p, NULL, e);
		err_free(e);
	}
}

/* Two vmmds on one data directory would each apply every write to the
 * same store and answer on the same socket: the second refuses to start,
 * naming the first. The flock goes with the process, however it ends. */
static int single_instance(const char *dir, struct err **errp)
{
	_cleanup_free_ char *path = NULL, *other = NULL;
	_cleanup_close_ int fd = -1;
	char pid[32];
	int n;

	if (asprintf(&path, "%s/vmmd.lock", dir) < 0) {
		err_set(errp, ERR_IO, "out of memory");
		return -1;
	}
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		err_set_errno(errp, errno, "cannot open '%s'", path);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		other = util_read_file(path, 64, NULL);
		err_set(errp, ERR_STATE, "another vmmd (pid %s) runs with data directory '%s'",
			other && *other ? strtok(other, "\n") : "?", dir);
		return -1;
	}
	n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
		log_warn("cannot write our pid into '%s': %m", path);
	return TAKE_FD(fd);
}

bool clu_daemon_run(const struct clu_daemon_opts *o, struct err **errp)
{
	struct clu_daemon *d = calloc(1, sizeof(*d));
	_cleanup_free_ char *dbpath = NULL, *ccpath = NULL;
	struct sigaction sa = { .sa_handler = on_signal };
	struct stat st;
	bool ok = false;

	if (!d)
		return err_set(errp, ERR_IO, "out of memory");
	/* The socket changes cluster state and the store holds the cluster's
	 * config: nothing vmmd creates is for other users, from the first byte
	 * (chmod after bind would leave a window). */
	umask(0077);
	d->listen_fd = d->cpg_fd = d->quorum_fd = d->vq_fd = d->lock_fd = -1;
	snprintf(d->node, sizeof(d->node), "%s", o->node ? o->node : "");
	if (!util_mkdir_p(o->data_dir, 0700, errp) ||
	    asprintf(&dbpath, "%s/config.db", o->data_dir) < 0 ||
	    asprintf(&ccpath, "%s/corosync.conf", o->data_dir) < 0)
		goto out;
	if ((d->lock_fd = single_instance(o->data_dir, errp)) < 0)
		goto out;
	d->data_dir = strdup(o->data_dir);
	d->cc_local = strdup(ccpath);
	d->cc_path = strdup(o->corosync_conf ? o->corosync_conf :
			    getenv("VMM_COROSYNC_CONF") ? getenv("VMM_COROSYNC_CONF") :
							  "/etc/corosync/corosync.conf");
	if (!d->data_dir || !d->cc_local || !d->cc_path) {
		err_set(errp, ERR_IO, "out of memory");
		goto out;
	}
	d->store = clu_store_open(dbpath, errp);
	if (!d->store)
		goto out;
	/* In a cluster exactly when our copy of corosync.conf exists. */
	d->forced_standalone = o->standalone;
	d->standalone = o->standalone || stat(ccpath, &st) < 0;
	if (!clu_server_listen(d, o->socket, errp))
		goto out;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (d->standalone) {
		d->quorate = true;
		if (!d->node[0])
			gethostname(d->node, sizeof(d->node));
		d->state = CLU_D_STANDALONE;
		log_info("standalone node %s (no %s): always quorate", d->node, ccpath);
		clu_daemon_register_node(d);
	} else {
		d->state = CLU_D_DISCONNECTED;
	}
	log_info("listening on %s, store version %" PRIu64, o->socket, clu_store_version(d->store));
	/* Ready once the CLIs can connect: units ordered after us may use it. */
	notify_state(d, "READY=1\n");
	while (!got_signal) {
		struct pollfd pfd[CLU_MAX_CLIENTS + 4];
		int idx[CLU_MAX_CLIENTS + 4], n = 0;

		clu_cc_check_mode(d);
		/* The node record is written when a sync ends or quorum returns; one
		 * lost on the way (a membership change, a conflict) is redone here. */
		if (!d->standalone && d->state == CLU_D_SYNCED && d->quorate &&
		    util_now_ms() >= d->register_at) {
			d->register_at = util_now_ms() + 2000;
			clu_daemon_register_node(d);
		}
		/* Liveness: a sync round that has not finished in 15 s (every member
		 * announces at once, the leader ships a few chunks) is stuck; leaving
		 * and rejoining the group starts a new round everywhere. */
		if (!d->standalone && d->connected && d->state == CLU_D_SYNCING &&
		    util_now_ms() - d->sync_round_ms > SYNC_STALL_MS) {
			log_warn("sync: no progress for %d s (leader node %u, %u member(s)); rejoining",
				 SYNC_STALL_MS / 1000, d->leader, d->nmembers);
			clu_cs_disconnect(d, "sync stalled");
		}
		if (!d->standalone && !d->connected && util_now_ms() >= d->reconnect_at) {
			struct err *e = NULL;

			if (!clu_cs_connect(d, &e)) {
				log_debug("corosync: %s", e->msg);
				err_free(e);
				d->reconnect_at = util_now_ms() + 1000;
			}
		}
		pfd[n] = (struct pollfd){ .fd = d->listen_fd, .events = POLLIN };
		idx[n++] = -1;
		if (d->connected) {
			pfd[n] = (struct pollfd){ .fd = d->cpg_fd, .events = POLLIN };
			idx[n++] = -2;
			pfd[n] = (struct pollfd){ .fd = d->quorum_fd, .events = POLLIN };
			idx[n++] = -2;
			pfd[n] = (struct pollfd){ .fd = d->vq_fd, .events = POLLIN };
			idx[n++] = -2;
		}
		for (int i = 0; i < CLU_MAX_CLIENTS; i++)
			if (d->clients[i].fd >= 0) {
				pfd[n] = (struct pollfd){ .fd = d->clients[i].fd, .events = POLLIN |
							  (d->clients[i].out_len ? POLLOUT : 0) };
				idx[n++] = i;
			}
		if (poll(pfd, (nfds_t)n, 100) < 0 && errno != EINTR) {
			err_set_errno(errp, errno, "poll");
			goto out;
		}
		for (int i = 0; i < n; i++) {
			if (!pfd[i].revents)
				continue;
			if (idx[i] == -1)
				clu_server_accept(d);
			else if (idx[i] == -2) {
				if (pfd[i].revents & (POLLHUP | POLLERR))
					clu_cs_disconnect(d, "connection closed");
				else if (!clu_cs_dispatch(d, pfd[i].fd))
					break; /* fds are gone; poll anew */
			} else {
				clu_server_io(d, idx[i], pfd[i].revents);
			}
		}
		expire_pending(d);
	}
	log_info("signal %d: stopping", (int)got_signal);
	notify_state(d, "STOPPING=1\n");
	ok = true;
out:
	if (d->connected)
		clu_cs_disconnect(d, "shutting down");
	clu_sync_abort(d); /* what a round holds (done already if we were connected) */
	for (int i = 0; i < CLU_MAX_PENDING; i++)
		if (d->pending[i].used)
			pending_free(&d->pending[i]);
	clu_server_close_all(d);
	if (ok)
		unlink(o->socket);
	clu_store_close(d->store);
	free(d->data_dir);
	free(d->cc_local);
	free(d->cc_path);
	if (d->lock_fd >= 0)
		close(d->lock_fd);
	free(d);
	return ok;
}
