/*
 * migrate_drain.c - `vmmigrate drain NODE` and `vmmigrate undrain NODE`:
 * node maintenance (Proxmox's `pvenode migrateall` and HA maintenance mode,
 * with placement of our own). docs/vmmigrate.md is the manual.
 *
 * drain: waits for migrations of NODE's guests still in flight (a drain
 * that died leaves its workers running), plans a target for every guest
 * (mig_place: free memory after placement, the replication target first;
 * each candidate node's agent reports its memory and storages), refuses
 * if any guest cannot leave (unless --force-leave), sets NODE's
 * maintenance flag, and runs the migrations, at most --max-workers at
 * once. What moved is kept in drain/<NODE>, so `undrain --return` knows
 * what to bring back. Runs on NODE: from elsewhere it is forwarded there
 * over SSH, since only NODE knows which of its guests run.
 *
 * Store: drain/<NODE> = {"node","pid","started_ms","with_local_disks",
 * "moved":{"VMID":"TARGET",...}}; nodes/<NODE> "maintenance": true|false.
 */
#include "migrate.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../transport/tp_ssh.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RETRIES 20
#define WAIT_INFLIGHT_MS 600000

static const struct cli_opt drain_opts[] = {
	{ "to", CLI_VALUE, "NODE,...", "only these nodes may take guests" },
	{ "max-workers", CLI_VALUE, "N", "migrations at once; default datacenter.cfg "
	  "max_workers (4)" },
	{ "with-local-disks", CLI_FLAG, NULL, "move guests with local disks too (copied or "
	  "mirrored)" },
	{ "force-leave", CLI_FLAG, NULL, "move what can move even if some guests cannot" },
	{ "dry-run", CLI_FLAG, NULL, "print the plan, change nothing" },
	{ "migration_type", CLI_VALUE, "secure|insecure", "passed to each migration" },
	{ "migration_network", CLI_VALUE, "CIDR", "passed to each migration" },
	{ "bwlimit", CLI_VALUE, "KiB/s", "passed to each migration" },
	{ "output", CLI_VALUE, "text|json", "output format; default text" },
	{ NULL }
};

static const struct cli_opt undrain_opts[] = {
	{ "return", CLI_FLAG, NULL, "bring back the guests the drain moved away" },
	{ "max-workers", CLI_VALUE, "N", "migrations at once; default datacenter.cfg "
	  "max_workers (4)" },
	{ "output", CLI_VALUE, "text|json", "output format; default text" },
	{ NULL }
};

static const char *jstr(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

/* ---- store: the maintenance flag and the drain record ---------------------------- */

/* Read-modify-write of a JSON object under key with retries on a lost
 * race; edit() changes it in place (it may be a new empty object). */
static bool update_json(struct clu_client *c, const char *key,
			void (*edit)(struct json_object *o, void *opaque), void *opaque,
			struct err **errp)
{
	for (int i = 0; i < RETRIES; i++) {
		uint64_t version = 0;
		struct err *e = NULL;
		_cleanup_free_ char *cur = clu_client_get(c, key, &version, &e);
		_cleanup_json_ struct json_object *o = NULL;
		struct clu_op op = { .key = key };

		if (!cur && e->code != ERR_NOTFOUND) {
			err_propagate(errp, &e);
			return false;
		}
		op.kind = cur ? CLU_OP_PUT : CLU_OP_CREATE;
		op.if_version = cur ? (int64_t)version : -1;
		err_free(e);
		e = NULL;
		o = cur ? json_tokener_parse(cur) : json_object_new_object();
		if (!o || !json_object_is_type(o, json_type_object))
			return err_set(errp, ERR_PROTO, "malformed %s in the store", key);
		edit(o, opaque);
		op.value = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
		if (clu_client_write(c, &op, NULL, &e))
			return true;
		if (e->code != ERR_CONFLICT) {
			err_propagate(errp, &e);
			return false;
		}
		err_free(e);
	}
	return err_set(errp, ERR_CONFLICT, "%s keeps changing", key);
}

static void set_maint(struct json_object *o, void *opaque)
{
	json_object_object_add(o, "maintenance", json_object_new_boolean(*(bool *)opaque));
}

static bool set_maintenance(struct cli_ctl *x, const char *node, bool on, struct err **errp)
{
	char key[CLU_KEY_MAX];

	snprintf(key, sizeof(key), "nodes/%s", node);
	return update_json(x->c, key, set_maint, &on, errp);
}

struct drain_rec_edit {
	bool start, with_local;
	uint32_t vmid;
	const char *target; /* NULL: forget vmid */
};

static void edit_drain(struct json_object *o, void *opaque)
{
	const struct drain_rec_edit *d = opaque;
	struct json_object *moved;
	char k[16];

	if (d->start) {
		json_object_object_add(o, "pid", json_object_new_int((int)getpid()));
		json_object_object_add(o, "with_local_disks", json_object_new_boolean(d->with_local));
		if (!json_object_object_get_ex(o, "started_ms", NULL))
			json_object_object_add(o, "started_ms", json_object_new_int64(
						       (int64_t)time(NULL) * 1000));
	}
	if (!json_object_object_get_ex(o, "moved", &moved)) {
		moved = json_object_new_object();
		json_object_object_add(o, "moved", moved);
	}
	if (!d->vmid)
		return;
	snprintf(k, sizeof(k), "%" PRIu32, d->vmid);
	if (d->target)
		json_object_object_add(moved, k, json_object_new_string(d->target));
	else
		json_object_object_del(moved, k);
}

static const char *drain_key(const char *node, char *buf, size_t len)
{
	snprintf(buf, len, "drain/%s", node);
	return buf;
}

/* ---- nodes and guests ------------------------------------------------------------- */

struct node_info {
	char name[CLU_NODE_NAME_MAX + 1];
	bool online, maintenance, named;
	struct mig_place_node place;
	char *storages[CLU_STORAGE_MAX];
	char why[160];           /* not usable: why */
};

struct plan {
	struct cli_ctl x;
	const struct cli_args *a;
	const char *node;
	bool json, with_local;
	struct node_info nodes[MIG_PLACE_MAX_NODES];
	unsigned nn;
	struct mig_place_guest g[MIG_PLACE_MAX_GUESTS];
	bool running[MIG_PLACE_MAX_GUESTS];
	char *gstor[MIG_PLACE_MAX_GUESTS][CLU_GUEST_DISKS];
	char prefer[MIG_PLACE_MAX_GUESTS][CLU_NODE_NAME_MAX + 1];
	unsigned ng;
	struct clu_repl_conf repl;
	struct cli_ctl_storages st;
	int lock_fd; /* DATA_DIR/drain-<NODE>.lock, held while the drain runs */
};

static bool read_nodes(struct plan *p, struct err **errp)
{
	struct json_object *req = json_object_new_object(), *list;
	_cleanup_json_ struct json_object *st = NULL;

	json_object_object_add(req, "cmd", json_object_new_string("status"));
	st = clu_client_call(p->x.c, req, 10000, errp);
	if (!st)
		return false;
	if (!json_object_object_get_ex(st, "nodelist", &list) ||
	    !json_object_is_type(list, json_type_array)) {
		/* Standalone: a cluster of this node alone. */
		snprintf(p->nodes[p->nn++].name, sizeof(p->nodes[0].name), "%s", p->x.node);
		return true;
	}
	for (size_t i = 0; i < json_object_array_length(list) && p->nn < MIG_PLACE_MAX_NODES; i++) {
		const char *name = jstr(json_object_array_get_idx(list, i), "name");

		if (name)
			snprintf(p->nodes[p->nn++].name, sizeof(p->nodes[0].name), "%s", name);
	}
	return true;
}

static struct node_info *find_node(struct plan *p, const char *name)
{
	for (unsigned i = 0; i < p->nn; i++)
		if (!strcmp(p->nodes[i].name, name))
			return &p->nodes[i];
	return NULL;
}

/* --to: every name must be a node of the cluster. */
static bool parse_to(struct plan *p, struct err **errp)
{
	const char *to = cli_get(p->a, "to");
	_cleanup_free_ char *copy = to ? strdup(to) : NULL;
	char *save = NULL, *tok;

	if (!to)
		return true;
	if (!copy)
		return err_set(errp, ERR_IO, "out of memory");
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct node_info *n = clu_node_name_valid(tok) ? find_node(p, tok) : NULL;

		if (!n)
			return err_set(errp, ERR_INVAL, "invalid --to '%s': no node '%s' in the "
				       "cluster", to, tok);
		n->named = true;
	}
	return true;
}

/* Asks node n's agent for its free memory and storages. */
static void node_facts(struct plan *p, struct node_info *n)
{
	struct cli_mig_peer peer;
	struct tp_ssh *ssh = NULL;
	struct mig_chan *ch = NULL;
	_cleanup_json_ struct json_object *rep = NULL;
	struct json_object *v;
	char remote[512];
	struct err *e = NULL;

	if (!cli_mig_peer_read(&p->x, n->name, &peer, &e))
		goto fail;
	n->online = peer.online;
	n->maintenance = peer.maintenance;
	if (!peer.online || peer.maintenance) {
		snprintf(n->why, sizeof(n->why), "%s", peer.online ? "in maintenance" : "offline");
		cli_mig_peer_free(&peer);
		return;
	}
	{
		struct mig_agent_addr a = {
			.node = n->name, .addr = peer.addr, .host_key = peer.host_key,
			.ssh_key = cli_mig_ssh_key(), .ssh_port = cli_mig_ssh_port(),
			.remote_cmd = cli_mig_remote_cmd(remote, sizeof(remote)),
		};

		ch = mig_agent_connect(&a, &ssh, &e);
	}
	cli_mig_peer_free(&peer);
	if (!ch)
		goto fail;
	rep = mig_chan_call(ch, mig_chan_req("node-facts"), 30000, &e);
	mig_chan_close(ch);
	tp_ssh_close(ssh);
	if (!rep)
		goto fail;
	n->place.free = json_object_object_get_ex(rep, "mem_free", &v) ?
				(uint64_t)json_object_get_int64(v) : 0;
	n->place.guests = json_object_object_get_ex(rep, "running", &v) ?
				  (unsigned)json_object_get_int(v) : 0;
	if (json_object_object_get_ex(rep, "storages", &v) && json_object_is_type(v, json_type_array))
		for (size_t i = 0; i < json_object_array_length(v) && i < CLU_STORAGE_MAX; i++) {
			const char *id = json_object_get_string(json_object_array_get_idx(v, i));

			if (id) /* strdup(NULL) for a null in the list crashed the drain */
				n->storages[n->place.nstorages++] = strdup(id);
		}
	n->place.storages = (const char *const *)n->storages;
	n->place.usable = true;
	return;
fail:
	snprintf(n->why, sizeof(n->why), "unreachable: %s", e ? e->msg : "?");
	err_free(e);
}

static const char *repl_target(struct plan *p, uint32_t vmid)
{
	for (size_t i = 0; i < p->repl.n; i++)
		if (p->repl.items[i].vmid == vmid && !p->repl.items[i].disabled)
			return p->repl.items[i].target;
	return NULL;
}

static bool add_guest(uint32_t vmid, const struct clu_guest_rec *r, const struct err *bad,
		      void *opaque)
{
	struct plan *p = opaque;
	struct mig_place_guest *g;
	unsigned k = p->ng;
	bool local = false;

	(void)bad;
	if (!r || strcmp(r->node, p->node) || p->ng == MIG_PLACE_MAX_GUESTS)
		return true;
	g = &p->g[k];
	*g = (struct mig_place_guest){ .vmid = vmid, .to = -1 };
	p->running[k] = cli_ctl_running(vmid, NULL);
	g->mem = p->running[k] ? r->conf.memory << 20 : 0;
	for (int i = 0; i < CLU_GUEST_DISKS; i++) {
		const struct clu_guest_disk *d = &r->conf.disks[i];
		const struct clu_storage *s;

		if (!d->present)
			continue;
		s = clu_storage_find(&p->st.sc, d->storage);
		local = local || !s || !s->shared;
		p->gstor[k][g->nstorages++] = strdup(d->storage);
	}
	g->storages = (const char *const *)p->gstor[k];
	if (local && !p->with_local)
		g->why = MIG_PLACE_LOCAL_DISKS;
	if (repl_target(p, vmid)) {
		snprintf(p->prefer[k], sizeof(p->prefer[k]), "%s", repl_target(p, vmid));
		g->prefer = p->prefer[k];
	}
	p->ng++;
	return true;
}

static void plan_free(struct plan *p)
{
	for (unsigned i = 0; i < p->nn; i++)
		for (unsigned k = 0; k < p->nodes[i].place.nstorages; k++)
			free(p->nodes[i].storages[k]);
	for (unsigned i = 0; i < p->ng; i++)
		for (unsigned k = 0; k < p->g[i].nstorages; k++)
			free(p->gstor[i][k]);
	clu_repl_conf_free(&p->repl);
	cli_ctl_storages_free(&p->st);
	if (p->x.c)
		cli_ctl_close(&p->x);
	if (p->lock_fd >= 0)
		close(p->lock_fd);
}

/* One drain of a node at a time. Drains run on the node itself, so a local
 * flock is race-free, and the kernel drops it when the drain dies. */
static bool lock_drain(struct plan *p, struct err **errp)
{
	char path[PATH_MAX], key[CLU_KEY_MAX];
	_cleanup_free_ char *rec = NULL;
	_cleanup_json_ struct json_object *o = NULL;
	struct json_object *pid = NULL;

	snprintf(path, sizeof(path), "%s/drain-%s.lock", cli_ctl_data_dir(), p->node);
	p->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (p->lock_fd < 0)
		return err_set(errp, ERR_IO, "%s: %s", path, strerror(errno));
	if (!flock(p->lock_fd, LOCK_EX | LOCK_NB))
		return true;
	if (errno != EWOULDBLOCK)
		return err_set(errp, ERR_IO, "%s: lock: %s", path, strerror(errno));
	rec = clu_client_get(p->x.c, drain_key(p->node, key, sizeof(key)), NULL, NULL);
	o = rec ? json_tokener_parse(rec) : NULL;
	if (o && json_object_object_get_ex(o, "pid", &pid))
		return err_set(errp, ERR_STATE, "a drain of %s is already running (pid %d)",
			       p->node, json_object_get_int(pid));
	return err_set(errp, ERR_STATE, "a drain of %s is already running", p->node);
}

/* ---- running the drain on its node, or forwarding it there ----------------------- */

/* `vmmigrate drain NODE ...` run on NODE over SSH, its output relayed. */
static int forward(struct plan *p, int argc_skip)
{
	struct cli_mig_peer peer;
	const char *argv[64];
	char remote[512], buf[4096];
	struct tp_ssh_opts o = { .user = "root", .timeout_ms = 10000 };
	struct tp_ssh *ssh = NULL;
	struct err *e = NULL;
	unsigned n = 0;
	int fd, rc;
	ssize_t k;

	(void)argc_skip;
	if (!cli_mig_peer_read(&p->x, p->node, &peer, &e))
		return cli_report(p->a, e);
	o.host = peer.addr;
	o.host_key = peer.host_key;
	o.key = cli_mig_ssh_key();
	o.port = cli_mig_ssh_port();
	if (!peer.online || !peer.host_key) {
		err_set(&e, ERR_STATE, "node %s is %s: run the drain there", p->node,
			peer.online ? "not registered" : "offline");
		cli_mig_peer_free(&peer);
		return cli_report(p->a, e);
	}
	argv[n++] = cli_mig_remote_cmd(remote, sizeof(remote));
	for (int i = 1; i < cli_migrate_argc && n < ARRAY_SIZE(argv) - 1; i++)
		argv[n++] = cli_migrate_argv[i];
	argv[n] = NULL;
	ssh = tp_ssh_open(&o, &e);
	cli_mig_peer_free(&peer);
	fd = ssh ? tp_ssh_exec(ssh, argv, &e) : -1;
	if (fd < 0) {
		tp_ssh_close(ssh);
		err_prefix(e, "cannot run the drain on %s", p->node);
		return cli_report(p->a, e);
	}
	shutdown(fd, SHUT_WR);
	while ((k = read(fd, buf, sizeof(buf))) > 0 || (k < 0 && errno == EINTR))
		if (k > 0 && fwrite(buf, 1, (size_t)k, stdout) != (size_t)k)
			break;
	fflush(stdout);
	close(fd);
	tp_ssh_wait_idle(ssh, 10000, NULL);
	rc = tp_ssh_exec_status(ssh);
	fputs(tp_ssh_exec_stderr(ssh), stderr);
	tp_ssh_close(ssh);
	return rc < 0 ? 1 : rc;
}

struct inflight {
	const char *node;
	uint32_t vmid; /* found: 0 none */
	pid_t pid;
};

static bool find_inflight(const struct cli_mig_record *r, const char *text, void *opaque)
{
	struct inflight *f = opaque;

	(void)text;
	if (strcmp(r->source, f->node) || !cli_mig_worker_alive(r->pid))
		return true;
	f->vmid = r->vmid;
	f->pid = r->pid;
	return false;
}

/* Migrations of this node's guests still running (a drain that died left
 * its workers going): wait until they are over. */
static bool wait_inflight(struct plan *p, struct err **errp)
{
	int64_t deadline = util_now_ms() + WAIT_INFLIGHT_MS;
	bool told = false;

	for (;;) {
		struct inflight f = { .node = p->node };
		uint32_t busy;
		pid_t pid;

		if (!cli_mig_record_list(p->x.c, find_inflight, &f, errp))
			return false;
		busy = f.vmid;
		pid = f.pid;
		if (!busy)
			return true;
		if (util_now_ms() >= deadline)
			return err_set(errp, ERR_TIMEOUT, "guest %" PRIu32 " is still being migrated "
				       "by pid %d", busy, (int)pid);
		if (!told && !p->json)
			printf("waiting for the migration of guest %" PRIu32 " (pid %d) of an earlier "
			       "drain\n", busy, (int)pid);
		told = true;
		fflush(stdout);
		sleep(1);
	}
}

static void print_plan(struct plan *p)
{
	char m[32];

	if (p->json) {
		for (unsigned i = 0; i < p->ng; i++) {
			const struct mig_place_guest *g = &p->g[i];

			printf("{\"event\":\"plan\",\"vmid\":%" PRIu32 ",\"running\":%s,\"memory\":%" PRIu64
			       ",\"target\":%s%s%s,\"reason\":\"%s\"}\n", g->vmid,
			       p->running[i] ? "true" : "false", g->mem, g->to >= 0 ? "\"" : "",
			       g->to >= 0 ? p->nodes[g->to].name : "null", g->to >= 0 ? "\"" : "",
			       mig_place_why_names[g->why]);
		}
		fflush(stdout);
		return;
	}
	printf("drain %s: %u guest(s)\n", p->node, p->ng);
	for (unsigned i = 0; i < p->nn; i++)
		if (strcmp(p->nodes[i].name, p->node) && !p->nodes[i].place.usable)
			printf("  node %s takes none: %s\n", p->nodes[i].name, p->nodes[i].why);
	for (unsigned i = 0; i < p->ng; i++) {
		const struct mig_place_guest *g = &p->g[i];

		if (g->to >= 0)
			printf("  %" PRIu32 " (%s%s) -> %s%s\n", g->vmid,
			       p->running[i] ? util_fmt_bytes(g->mem, m, sizeof(m)) : "stopped",
			       p->running[i] ? ", running" : "", p->nodes[g->to].name,
			       g->prefer && !strcmp(g->prefer, p->nodes[g->to].name) ?
				       " (its replication target)" : "");
		else
			printf("  %" PRIu32 " (%s) stays: %s\n", g->vmid,
			       p->running[i] ? util_fmt_bytes(g->mem, m, sizeof(m)) : "stopped",
			       mig_place_why_names[g->why]);
	}
	fflush(stdout);
}

static int exec_drain(const struct cli_args *a)
{
	_cleanup_free_ struct plan *p = calloc(1, sizeof(*p));
	struct mig_place_node pn[MIG_PLACE_MAX_NODES];
	_cleanup_free_ struct cli_mig_task *t = NULL;
	struct cli_mig_pool pool = { .title = NULL };
	struct clu_datacenter dc;
	struct err *e = NULL;
	char key[CLU_KEY_MAX], title[80];
	unsigned nt = 0, left = 0, max;
	uint64_t v;
	int rc;

	if (!p)
		return cli_report(a, NULL);
	p->x.lock_fd = -1;
	p->lock_fd = -1;
	p->a = a;
	p->node = a->pos[0];
	if (!clu_node_name_valid(p->node))
		return cli_fail(a, "invalid node name '%s'", p->node);
	if (!cli_ctl_output(a, &p->json, &e))
		return cli_report(a, e);
	p->with_local = cli_has(a, "with-local-disks");
	if (!cli_ctl_open(&p->x, &e) || !read_nodes(p, &e) || !clu_datacenter_read(p->x.c, &dc, &e))
		goto fail;
	if (!find_node(p, p->node)) {
		err_set(&e, ERR_INVAL, "unknown node '%s' (not in the cluster's nodelist)", p->node);
		goto fail;
	}
	if (!parse_to(p, &e))
		goto fail;
	max = dc.max_workers ? dc.max_workers : 4;
	if (cli_get(a, "max-workers")) {
		if (!util_parse_u64(cli_get(a, "max-workers"), 1, 64, "max-workers", &v, &e))
			goto fail;
		max = (unsigned)v;
	}
	if (strcmp(p->node, p->x.node)) {
		rc = forward(p, 0);
		plan_free(p);
		return rc;
	}
	if (!lock_drain(p, &e) || !wait_inflight(p, &e))
		goto fail;
	{
		_cleanup_free_ char *rtxt = clu_client_get(p->x.c, "replication.cfg", NULL, NULL);

		if (rtxt && !clu_repl_parse(rtxt, "replication.cfg", &p->repl, &e))
			goto fail;
	}
	if (!cli_ctl_storages_read(&p->x, &p->st, &e) ||
	    !clu_guest_list(p->x.c, add_guest, p, &e))
		goto fail;
	for (unsigned i = 0; i < p->nn; i++) {
		struct node_info *n = &p->nodes[i];

		n->place.name = n->name;
		if (!strcmp(n->name, p->node))
			snprintf(n->why, sizeof(n->why), "it is being drained");
		else if (cli_get(a, "to") && !n->named)
			snprintf(n->why, sizeof(n->why), "not in --to");
		else if (p->ng)
			node_facts(p, n);
		pn[i] = n->place;
	}
	mig_place(p->g, p->ng, pn, p->nn);
	print_plan(p);
	for (unsigned i = 0; i < p->ng; i++)
		left += p->g[i].to < 0;
	if (left && !cli_has(a, "force-leave")) {
		err_set(&e, ERR_STATE, "%u guest(s) cannot leave %s (see the plan); nothing was "
			"moved (--force-leave moves the others)", left, p->node);
		goto fail;
	}
	if (cli_has(a, "dry-run")) {
		plan_free(p);
		return 0;
	}
	/* From here on nothing lands on the node. */
	{
		struct drain_rec_edit d = { .start = true, .with_local = p->with_local };

		if (!set_maintenance(&p->x, p->node, true, &e) ||
		    !update_json(p->x.c, drain_key(p->node, key, sizeof(key)), edit_drain, &d, &e))
			goto fail;
	}
	t = calloc(p->ng ? p->ng : 1, sizeof(*t));
	if (!t) {
		err_set(&e, ERR_IO, "out of memory");
		goto fail;
	}
	for (unsigned i = 0; i < p->ng; i++) {
		struct cli_mig_task *k;
		static const char *const pass[] = { "migration_type", "migration_network", "bwlimit" };

		if (p->g[i].to < 0)
			continue;
		k = &t[nt++];
		k->vmid = p->g[i].vmid;
		snprintf(k->node, sizeof(k->node), "%s", p->node);
		snprintf(k->target, sizeof(k->target), "%s", p->nodes[p->g[i].to].name);
		if (p->running[i])
			k->args[k->nargs++] = "--online";
		if (p->with_local)
			k->args[k->nargs++] = "--with-local-disks";
		for (size_t o = 0; o < ARRAY_SIZE(pass); o++)
			if (cli_get(a, pass[o])) {
				static char flags[3][32];

				snprintf(flags[o], sizeof(flags[o]), "--%s", pass[o]);
				k->args[k->nargs++] = flags[o];
				k->args[k->nargs++] = cli_get(a, pass[o]);
			}
	}
	snprintf(title, sizeof(title), "drain %s", p->node);
	pool.title = title;
	pool.json = p->json;
	cli_mig_pool_run(&p->x, &pool, t, nt, max);
	for (unsigned i = 0; i < nt; i++) {
		struct drain_rec_edit d = { .vmid = t[i].vmid, .target = t[i].target };

		if (t[i].ok && !update_json(p->x.c, key, edit_drain, &d, &e)) {
			log_warn("cannot record that guest %" PRIu32 " went to %s: %s", t[i].vmid,
				 t[i].target, e->msg);
			err_free(TAKE_PTR(e));
		}
	}
	if (p->json)
		printf("{\"event\":\"done\",\"node\":\"%s\",\"moved\":%u,\"failed\":%u,\"left\":%u}\n",
		       p->node, pool.ok, pool.failed, left);
	else
		printf("drain %s: %u guest(s) moved, %u failed, %u left; %s is in maintenance "
		       "(vmmigrate undrain %s ends it)\n", p->node, pool.ok, pool.failed, left, p->node,
		       p->node);
	for (unsigned i = 0; i < nt && !p->json; i++)
		if (!t[i].ok)
			printf("  %" PRIu32 " -> %s failed: %s\n", t[i].vmid, t[i].target, t[i].error);
	fflush(stdout);
	rc = pool.failed ? 1 : 0;
	if (pool.failed)
		fprintf(stderr, "vmmigrate: drain of %s incomplete: %u guest(s) failed to move\n",
			p->node, pool.failed);
	plan_free(p);
	return rc;
fail:
	plan_free(p);
	return cli_report(a, e);
}

/* ---- undrain ------------------------------------------------------------------------ */

static int exec_undrain(const struct cli_args *a)
{
	struct cli_ctl x = { .lock_fd = -1 };
	const char *node = a->pos[0];
	_cleanup_free_ char *rec = NULL;
	_cleanup_json_ struct json_object *o = NULL;
	_cleanup_free_ struct cli_mig_task *t = NULL;
	struct cli_mig_pool pool = { .title = NULL };
	struct json_object *moved = NULL, *wl = NULL;
	struct clu_datacenter dc;
	struct err *e = NULL;
	char key[CLU_KEY_MAX], title[80];
	unsigned nt = 0, max;
	bool json, found = false;
	uint64_t v;

	if (!clu_node_name_valid(node))
		return cli_fail(a, "invalid node name '%s'", node);
	if (!cli_ctl_output(a, &json, &e))
		return cli_report(a, e);
	if (!cli_ctl_open(&x, &e) || !clu_datacenter_read(x.c, &dc, &e))
		goto fail;
	{
		struct cli_mig_peer peer;

		if (!cli_mig_peer_read(&x, node, &peer, &e)) {
			err_free(e);
			e = NULL;
			err_set(&e, ERR_INVAL, "unknown node '%s' (not in the cluster's nodelist)", node);
			goto fail;
		}
		cli_mig_peer_free(&peer);
	}
	max = dc.max_workers ? dc.max_workers : 4;
	if (cli_get(a, "max-workers")) {
		if (!util_parse_u64(cli_get(a, "max-workers"), 1, 64, "max-workers", &v, &e))
			goto fail;
		max = (unsigned)v;
	}
	if (!set_maintenance(&x, node, false, &e))
		goto fail;
	rec = clu_client_get(x.c, drain_key(node, key, sizeof(key)), NULL, NULL);
	o = rec ? json_tokener_parse(rec) : NULL;
	if (o)
		json_object_object_get_ex(o, "moved", &moved);
	if (!cli_has(a, "return") || !moved || !json_object_object_length(moved)) {
		if (cli_has(a, "return") && !json)
			printf("undrain %s: no guests to bring back\n", node);
		else if (!json)
			printf("undrain %s: the node takes guests again\n", node);
		if (!cli_has(a, "return") || !moved) {
			struct clu_op op = { .kind = CLU_OP_DELETE, .key = key, .if_version = -1 };

			if (rec && cli_has(a, "return"))
				clu_client_write(x.c, &op, NULL, NULL);
		}
		cli_ctl_close(&x);
		return 0;
	}
	json_object_object_get_ex(o, "with_local_disks", &wl);
	t = calloc(json_object_object_length(moved), sizeof(*t));
	if (!t) {
		err_set(&e, ERR_IO, "out of memory");
		goto fail;
	}
	json_object_object_foreach(moved, k, val) {
		_cleanup_free_ struct clu_guest_rec *g = calloc(1, sizeof(*g));
		struct cli_mig_task *task = &t[nt];
		uint32_t vmid;
		struct err *ge = NULL;

		if (!g || !cli_ctl_vmid(k, &vmid, NULL))
			continue;
		if (!clu_guest_read(x.c, vmid, g, &ge)) {
			err_free(ge);
			continue; /* destroyed meanwhile */
		}
		/* Only guests still where the drain put them come back. */
		if (strcmp(g->node, json_object_get_string(val)))
			continue;
		found = true;
		task->vmid = vmid;
		snprintf(task->node, sizeof(task->node), "%s", g->node);
		snprintf(task->target, sizeof(task->target), "%s", node);
		task->args[task->nargs++] = "--online"; /* a stopped guest moves offline */
		if (wl && json_object_get_boolean(wl))
			task->args[task->nargs++] = "--with-local-disks";
		nt++;
	}
	if (!found && !json)
		printf("undrain %s: the guests the drain moved are elsewhere now; none to bring back\n",
		       node);
	snprintf(title, sizeof(title), "undrain %s", node);
	pool.title = title;
	pool.json = json;
	cli_mig_pool_run(&x, &pool, t, nt, max);
	for (unsigned i = 0; i < nt; i++) {
		struct drain_rec_edit d = { .vmid = t[i].vmid, .target = NULL };

		if (t[i].ok)
			update_json(x.c, key, edit_drain, &d, NULL);
	}
	if (!pool.failed) {
		struct clu_op op = { .kind = CLU_OP_DELETE, .key = key, .if_version = -1 };

		clu_client_write(x.c, &op, NULL, NULL);
	}
	if (json)
		printf("{\"event\":\"done\",\"node\":\"%s\",\"returned\":%u,\"failed\":%u}\n", node,
		       pool.ok, pool.failed);
	else
		printf("undrain %s: %u guest(s) back, %u failed\n", node, pool.ok, pool.failed);
	fflush(stdout);
	cli_ctl_close(&x);
	if (pool.failed) {
		fprintf(stderr, "vmmigrate: undrain of %s incomplete: %u guest(s) failed to return\n",
			node, pool.failed);
		return 1;
	}
	return 0;
fail:
	if (x.c)
		cli_ctl_close(&x);
	return cli_report(a, e);
}

const struct cli_cmd cli_migrate_drain = {
	.name = "drain",
	.posargs = "NODE",
	.summary = "empty a node for maintenance: move its guests, keep new ones away",
	.opts = drain_opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_drain,
};

const struct cli_cmd cli_migrate_undrain = {
	.name = "undrain",
	.posargs = "NODE",
	.summary = "end a node's maintenance; --return brings its guests back",
	.opts = undrain_opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_undrain,
};
