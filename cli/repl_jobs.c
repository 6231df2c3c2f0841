/*
 * repl_jobs.c - the `vmrepl` commands that manage jobs: create, update,
 * delete, enable, disable, list, status, schedule-now, log. Jobs live in
 * replication.cfg (pvesr's syntax), their state in replication/state/<id>.
 * docs/vmrepl.md is the manual.
 */
#include "repl.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../transport/tp_ssh.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RETRIES 20

static const struct cli_opt create_opts[] = {
	{ "schedule", CLI_VALUE, "SPEC", "when it runs (pvesr calendar event); default "
	  "datacenter.cfg, else */15" },
	{ "rate", CLI_VALUE, "MB/s", "bandwidth limit; default none" },
	{ "comment", CLI_VALUE, "TEXT", "free text" },
	{ "disable", CLI_FLAG, NULL, "create it disabled" },
	{ NULL }
};

static const struct cli_opt update_opts[] = {
	{ "schedule", CLI_VALUE, "SPEC", "when it runs (pvesr calendar event)" },
	{ "rate", CLI_VALUE, "MB/s", "bandwidth limit; 0 = none" },
	{ "comment", CLI_VALUE, "TEXT", "free text" },
	{ NULL }
};

static const struct cli_opt delete_opts[] = {
	{ "keep", CLI_FLAG, NULL, "keep the replica on the target" },
	{ NULL }
};

static const struct cli_opt out_opts[] = {
	{ "output", CLI_VALUE, "text|json", "output format; default text" },
	{ NULL }
};

static const struct cli_opt status_opts[] = {
	{ "guest", CLI_VALUE, "VMID", "only this guest's jobs" },
	{ "output", CLI_VALUE, "text|json", "output format; default text" },
	{ NULL }
};

static const struct cli_opt no_opts[] = {
	{ NULL }
};

/* ---- shared ---------------------------------------------------------------------- */

bool cli_repl_id(const char *s, uint32_t *vmid, struct err **errp)
{
	const char *dash = strchr(s, '-');
	char num[16];
	uint64_t n;

	if (!dash || dash == s || (size_t)(dash - s) >= sizeof(num) || strchr(dash + 1, '-'))
		return err_set(errp, ERR_INVAL, "invalid job id '%s': want VMID-N, e.g. 106-0", s);
	snprintf(num, sizeof(num), "%.*s", (int)(dash - s), s);
	if (!clu_vmid_parse(num, vmid, NULL) || !dash[1] || (dash[1] == '0' && dash[2]) ||
	    !util_parse_u64(dash + 1, 0, 9999, "job number", &n, NULL))
		return err_set(errp, ERR_INVAL, "invalid job id '%s': want VMID-N, e.g. 106-0", s);
	return true;
}

bool cli_repl_read(struct cli_ctl *x, struct clu_repl_conf *rc, uint64_t *version,
		   struct err **errp)
{
	struct err *e = NULL;
	_cleanup_free_ char *text = clu_client_get(x->c, "replication.cfg", version, &e);

	*rc = (struct clu_repl_conf){ .n = 0 };
	if (!text && e->code == ERR_NOTFOUND) {
		err_free(e);
		if (version)
			*version = 0;
		rc->items = calloc(CLU_REPL_MAX, sizeof(*rc->items));
		return rc->items ? true : err_set(errp, ERR_IO, "out of memory");
	}
	if (!text) {
		err_propagate(errp, &e);
		return false;
	}
	if (!clu_repl_parse(text, "replication.cfg", rc, errp))
		return false;
	if (!rc->items && !(rc->items = calloc(CLU_REPL_MAX, sizeof(*rc->items))))
		return err_set(errp, ERR_IO, "out of memory");
	return true;
}

struct clu_repl_job *cli_repl_find(struct clu_repl_conf *rc, const char *id)
{
	for (size_t i = 0; i < rc->n; i++)
		if (!strcmp(rc->items[i].id, id))
			return &rc->items[i];
	return NULL;
}

bool cli_repl_edit(struct cli_ctl *x, bool (*edit)(struct clu_repl_conf *rc, void *o,
						  struct err **errp),
		   void *opaque, struct err **errp)
{
	for (int i = 0; i < RETRIES; i++) {
		struct clu_repl_conf rc;
		uint64_t version = 0;
		_cleanup_free_ char *text = NULL;
		struct clu_op op = { .key = "replication.cfg" };
		struct err *e = NULL;
		bool ok;

		if (!cli_repl_read(x, &rc, &version, errp))
			return false;
		ok = edit(&rc, opaque, errp) && (text = clu_repl_format(&rc, errp));
		clu_repl_conf_free(&rc);
		if (!ok)
			return false;
		op.kind = version ? CLU_OP_PUT : CLU_OP_CREATE;
		op.if_version = version ? (int64_t)version : -1;
		op.value = text;
		if (clu_client_write(x->c, &op, NULL, &e))
			return true;
		if (e->code != ERR_CONFLICT) {
			err_propagate(errp, &e);
			return false;
		}
		err_free(e);
	}
	return err_set(errp, ERR_CONFLICT, "replication.cfg keeps changing");
}

static bool parse_schedule(const char *v, char *out, size_t len, struct err **errp)
{
	struct repl_schedule s;

	if (strlen(v) >= len || !repl_schedule_parse(v, &s, errp))
		return errp && *errp ? false :
					 err_set(errp, ERR_INVAL, "invalid schedule '%s': too long", v);
	snprintf(out, len, "%s", v);
	return true;
}

static bool parse_rate(const char *v, uint32_t *out, bool zero_ok, struct err **errp)
{
	uint64_t n;

	if (!util_parse_u64(v, zero_ok ? 0 : 1, 1000000, "rate (MB/s)", &n, errp))
		return false;
	*out = (uint32_t)n;
	return true;
}

static bool parse_comment(const char *v, char *out, size_t len, struct err **errp)
{
	if (strlen(v) >= len)
		return err_set(errp, ERR_INVAL, "invalid comment: longer than %zu bytes", len - 1);
	for (const char *p = v; *p; p++)
		if (iscntrl((unsigned char)*p))
			return err_set(errp, ERR_INVAL, "invalid comment '%s': control characters",
				       v);
	snprintf(out, len, "%s", v);
	return true;
}

static int done(const struct cli_args *a, struct cli_ctl *x, struct err *e)
{
	if (x->c)
		cli_ctl_close(x);
	return e ? cli_report(a, e) : 0;
}

/* ---- create ------------------------------------------------------------------------ */

struct create {
	struct clu_repl_job job;
};

static bool add_job(struct clu_repl_conf *rc, void *opaque, struct err **errp)
{
	struct create *c = opaque;

	if (cli_repl_find(rc, c->job.id))
		return err_set(errp, ERR_INVAL, "replication job %s already exists", c->job.id);
	for (size_t i = 0; i < rc->n; i++)
		if (rc->items[i].vmid == c->job.vmid && !strcmp(rc->items[i].target, c->job.target))
			return err_set(errp, ERR_INVAL, "guest %" PRIu32 " already replicates to "
				       "%s (job %s)", c->job.vmid, c->job.target, rc->items[i].id);
	if (rc->n == CLU_REPL_MAX)
		return err_set(errp, ERR_STATE, "already %d replication jobs", CLU_REPL_MAX);
	rc->items[rc->n++] = c->job;
	return true;
}

static bool init_state(struct repl_job_state *st, void *opaque)
{
	const struct clu_repl_job *j = opaque;

	*st = (struct repl_job_state){ .state = REPL_STATE_NEW, .created = time(NULL) };
	snprintf(st->target, sizeof(st->target), "%s", j->target);
	return true;
}

static int exec_create(const struct cli_args *a)
{
	struct cli_ctl x = { .lock_fd = -1 };
	struct create c = { .job = { .rate = 0 } };
	_cleanup_free_ struct clu_guest_rec *g = calloc(1, sizeof(*g));
	struct clu_datacenter dc;
	struct cli_mig_peer peer;
	struct err *e = NULL;
	const char *target = a->pos[1];

	if (!g)
		return cli_report(a, NULL);
	if (!cli_repl_id(a->pos[0], &c.job.vmid, &e))
		return cli_report(a, e);
	snprintf(c.job.id, sizeof(c.job.id), "%s", a->pos[0]);
	c.job.n = (unsigned)strtoul(strchr(a->pos[0], '-') + 1, NULL, 10);
	if (!clu_node_name_valid(target))
		return cli_fail(a, "invalid target node name '%s'", target);
	snprintf(c.job.target, sizeof(c.job.target), "%s", target);
	if ((cli_get(a, "rate") && !parse_rate(cli_get(a, "rate"), &c.job.rate, false, &e)) ||
	    (cli_get(a, "comment") && !parse_comment(cli_get(a, "comment"), c.job.comment,
						     sizeof(c.job.comment), &e)))
		return cli_report(a, e);
	c.job.disabled = cli_has(a, "disable");
	if (!cli_ctl_open(&x, &e) || !clu_datacenter_read(x.c, &dc, &e))
		return done(a, &x, e);
	if (!parse_schedule(cli_get(a, "schedule") ?: dc.replication_schedule, c.job.schedule,
			    sizeof(c.job.schedule), &e))
		return done(a, &x, e);
	if (!clu_guest_read(x.c, c.job.vmid, g, &e))
		return done(a, &x, e);
	if (!cli_mig_peer_read(&x, target, &peer, &e)) {
		err_free(e);
		e = NULL;
		err_set(&e, ERR_INVAL, "unknown target node '%s' (not in the cluster's nodelist)",
			target);
		return done(a, &x, e);
	}
	cli_mig_peer_free(&peer);
	if (!strcmp(g->node, target)) {
		err_set(&e, ERR_INVAL, "target node '%s' is where guest %" PRIu32 " runs", target,
			c.job.vmid);
		return done(a, &x, e);
	}
	if (!cli_repl_edit(&x, add_job, &c, &e) ||
	    !repl_state_update(x.c, c.job.id, init_state, &c.job, &e))
		return done(a, &x, e);
	printf("created replication job %s: guest %" PRIu32 " to %s, schedule '%s'%s\n", c.job.id,
	       c.job.vmid, target, c.job.schedule, c.job.disabled ? " (disabled)" : "");
	return done(a, &x, NULL);
}

/* ---- update, enable, disable -------------------------------------------------------- */

struct update {
	const char *id;
	const struct cli_args *a;
	int enable;                  /* -1 keep, 0 disable, 1 enable */
	struct clu_repl_job before;
};

static bool change_job(struct clu_repl_conf *rc, void *opaque, struct err **errp)
{
	struct update *u = opaque;
	struct clu_repl_job *j = cli_repl_find(rc, u->id);
	const char *v;

	if (!j)
		return err_set(errp, ERR_NOTFOUND, "no replication job %s", u->id);
	u->before = *j;
	if (u->enable >= 0)
		j->disabled = !u->enable;
	if ((v = cli_get(u->a, "schedule")) &&
	    !parse_schedule(v, j->schedule, sizeof(j->schedule), errp))
		return false;
	if ((v = cli_get(u->a, "rate")) && !parse_rate(v, &j->rate, true, errp))
		return false;
	if ((v = cli_get(u->a, "comment")) && !parse_comment(v, j->comment, sizeof(j->comment), errp))
		return false;
	return true;
}

static int run_update(const struct cli_args *a, int enable)
{
	struct cli_ctl x = { .lock_fd = -1 };
	struct update u = { .id = a->pos[0], .a = a, .enable = enable };
	struct err *e = NULL;
	uint32_t vmid;

	if (!cli_repl_id(u.id, &vmid, &e))
		return cli_report(a, e);
	if (enable < 0 && !cli_get(a, "schedule") && !cli_get(a, "rate") && !cli_get(a, "comment"))
		return cli_fail(a, "nothing to change: give --schedule, --rate or --comment");
	if (!cli_ctl_open(&x, &e) || !cli_repl_edit(&x, change_job, &u, &e))
		return done(a, &x, e);
	if (enable >= 0)
		printf("replication job %s %s\n", u.id, enable ? "enabled" : "disabled");
	else
		printf("replication job %s updated\n", u.id);
	return done(a, &x, NULL);
}

static int exec_update(const struct cli_args *a)
{
	return run_update(a, -1);
}

static int exec_enable(const struct cli_args *a)
{
	return run_update(a, 1);
}

static int exec_disable(const struct cli_args *a)
{
	return run_update(a, 0);
}

/* ---- delete ------------------------------------------------------------------------- */

static bool drop_job(struct clu_repl_conf *rc, void *opaque, struct err **errp)
{
	struct update *u = opaque;
	struct clu_repl_job *j = cli_repl_find(rc, u->id);

	if (!j)
		return err_set(errp, ERR_NOTFOUND, "no replication job %s", u->id);
	u->before = *j;
	memmove(j, j + 1, (size_t)(rc->items + rc->n - (j + 1)) * sizeof(*j));
	rc->n--;
	return true;
}

/* Asks the target's agent to remove the replicas of the job's disks. */
static bool remove_replicas(struct cli_ctl *x, const struct clu_repl_job *j, struct err **errp)
{
	struct cli_mig_peer peer;
	struct tp_ssh *ssh = NULL;
	struct mig_chan *ch;
	struct json_object *req;
	_cleanup_json_ struct json_object *rep = NULL;
	char remote[512];
	bool ok;

	if (!cli_mig_peer_read(x, j->target, &peer, errp))
		return false;
	{
		struct mig_agent_addr a = {
			.node = j->target, .addr = peer.addr, .host_key = peer.host_key,
			.ssh_key = cli_mig_ssh_key(), .ssh_port = cli_mig_ssh_port(),
			.remote_cmd = cli_mig_remote_cmd(remote, sizeof(remote)),
		};
		char *slash = strrchr(remote, '/');

		/* The target runs vmrepl beside vmmigrate. */
		if (slash && (size_t)(slash - remote) + sizeof("/vmrepl") <= sizeof(remote))
			strcpy(slash + 1, "vmrepl");
		ch = mig_agent_connect(&a, &ssh, errp);
	}
	cli_mig_peer_free(&peer);
	if (!ch)
		return false;
	req = mig_chan_req("remove");
	json_object_object_add(req, "job", json_object_new_string(j->id));
	json_object_object_add(req, "vmid", json_object_new_int64(j->vmid));
	rep = mig_chan_call(ch, req, 30000, errp);
	ok = rep != NULL;
	json_object_put(mig_chan_call(ch, mig_chan_req("bye"), 5000, NULL));
	mig_chan_close(ch);
	tp_ssh_close(ssh);
	return ok;
}

/* A job's directory holds plain files only (log, manifests). */
static void rm_flat_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			unlinkat(dirfd(d), de->d_name, 0);
	closedir(d);
	rmdir(dir);
}

static int exec_delete(const struct cli_args *a)
{
	struct cli_ctl x = { .lock_fd = -1 };
	struct update u = { .id = a->pos[0], .a = a, .enable = -1 };
	struct err *e = NULL;
	uint32_t vmid;
	char dir[1024];

	if (!cli_repl_id(u.id, &vmid, &e))
		return cli_report(a, e);
	if (!cli_ctl_open(&x, &e) || !cli_repl_edit(&x, drop_job, &u, &e) ||
	    !repl_state_delete(x.c, u.id, &e))
		return done(a, &x, e);
	/* The source's hashes go; bitmaps in a running QEMU are harmless and
	 * go with the next sync's sweep or the QEMU. */
	snprintf(dir, sizeof(dir), "%s/repl/%s", cli_ctl_data_dir(), u.id);
	rm_flat_dir(dir);
	if (!cli_has(a, "keep")) {
		if (!remove_replicas(&x, &u.before, &e)) {
			log_warn("job %s deleted, but its replica on %s stays: %s", u.id,
				 u.before.target, e->msg);
			err_free(TAKE_PTR(e));
		}
	}
	printf("deleted replication job %s%s\n", u.id, cli_has(a, "keep") ? " (replica kept)" : "");
	return done(a, &x, NULL);
}

/* ---- list, status ------------------------------------------------------------------ */

static const char *when(int64_t t, char *buf, size_t len)
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (t <= 0)
		return "-";
	localtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%d_%H:%M:%S", &tm);
	return buf;
}

static int exec_list(const struct cli_args *a)
{
	struct cli_ctl x = { .lock_fd = -1 };
	struct clu_repl_conf rc = { .n = 0 };
	_cleanup_json_ struct json_object *arr = json_object_new_array();
	struct err *e = NULL;
	bool json;

	if (!cli_ctl_output(a, &json, &e))
		return cli_report(a, e);
	if (!cli_ctl_open(&x, &e) || !cli_repl_read(&x, &rc, NULL, &e))
		return done(a, &x, e);
	if (!json)
		printf("%-10s %-12s %-28s %8s %-8s %s\n", "JobID", "Target", "Schedule", "Rate",
		       "Enabled", "Comment");
	for (size_t i = 0; i < rc.n; i++) {
		const struct clu_repl_job *j = &rc.items[i];
		char rate[16];

		if (json) {
			struct json_object *o = json_object_new_object();

			json_object_object_add(o, "id", json_object_new_string(j->id));
			json_object_object_add(o, "guest", json_object_new_int64(j->vmid));
			json_object_object_add(o, "target", json_object_new_string(j->target));
			json_object_object_add(o, "schedule", json_object_new_string(j->schedule));
			json_object_object_add(o, "rate", json_object_new_int64(j->rate));
			json_object_object_add(o, "enabled", json_object_new_boolean(!j->disabled));
			json_object_object_add(o, "comment", json_object_new_string(j->comment));
			json_object_array_add(arr, o);
			continue;
		}
		snprintf(rate, sizeof(rate), j->rate ? "%" PRIu32 : "-", j->rate);
		printf("%-10s %-12s %-28s %8s %-8s %s\n", j->id, j->target, j->schedule, rate,
		       j->disabled ? "no" : "yes", j->comment);
	}
	if (json)
		printf("%s\n", json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN));
	clu_repl_conf_free(&rc);
	return done(a, &x, NULL);
}

static int exec_status(const struct cli_args *a)
{
	struct cli_ctl x = { .lock_fd = -1 };
	struct clu_repl_conf rc = { .n = 0 };
	_cleanup_json_ struct json_object *arr = json_object_new_array();
	struct err *e = NULL;
	uint32_t only = 0;
	bool json;
	time_t now = time(NULL);

	if (!cli_ctl_output(a, &json, &e) ||
	    (cli_get(a, "guest") && !cli_ctl_vmid(cli_get(a, "guest"), &only, &e)))
		return cli_report(a, e);
	if (!cli_ctl_open(&x, &e) || !cli_repl_read(&x, &rc, NULL, &e))
		return done(a, &x, e);
	if (!json)
		printf("%-10s %-7s %-12s %-19s %-19s %9s %9s %s\n", "JobID", "Enabled", "Target",
		       "LastSync", "NextSync", "Duration", "FailCount", "State");
	for (size_t i = 0; i < rc.n; i++) {
		const struct clu_repl_job *j = &rc.items[i];
		struct repl_job_state st;
		struct repl_schedule sch;
		time_t next = 0;
		char l[32], n[32], d[32], state[300];

		if (only && j->vmid != only)
			continue;
		if (!repl_state_read(x.c, j->id, &st, NULL, &e))
			break;
		if (!j->disabled && repl_schedule_parse(j->schedule, &sch, NULL))
			repl_next_run(&sch, &st, now, &next);
		snprintf(d, sizeof(d), st.duration_ms || st.state == REPL_STATE_OK ? "%.2fs" : "-",
			 (double)st.duration_ms / 1000.0);
		if (st.state == REPL_STATE_ERROR)
			snprintf(state, sizeof(state), "error: %s", st.error);
		else if (st.state == REPL_STATE_SYNCING)
			snprintf(state, sizeof(state), "syncing (pid %d on %s)", (int)st.pid, st.node);
		else
			snprintf(state, sizeof(state), "%s", repl_state_name(st.state));
		if (json) {
			struct json_object *o = json_object_new_object();

			json_object_object_add(o, "id", json_object_new_string(j->id));
			json_object_object_add(o, "guest", json_object_new_int64(j->vmid));
			json_object_object_add(o, "enabled", json_object_new_boolean(!j->disabled));
			json_object_object_add(o, "target", json_object_new_string(j->target));
			json_object_object_add(o, "last_sync", json_object_new_int64(st.last_sync));
			json_object_object_add(o, "next_sync", json_object_new_int64((int64_t)next));
			json_object_object_add(o, "duration_ms", json_object_new_int64(st.duration_ms));
			json_object_object_add(o, "fail_count", json_object_new_int((int)st.fail_count));
			json_object_object_add(o, "state", json_object_new_string(repl_state_name(st.state)));
			json_object_object_add(o, "error", json_object_new_string(st.error));
			json_object_object_add(o, "gen", json_object_new_uint64(st.gen));
			json_object_object_add(o, "bytes", json_object_new_uint64(st.bytes));
			json_object_array_add(arr, o);
			continue;
		}
		printf("%-10s %-7s %-12s %-19s %-19s %9s %9u %s\n", j->id, j->disabled ? "no" : "yes",
		       j->target, when(st.last_sync, l, sizeof(l)),
		       j->disabled ? "-" : when((int64_t)next, n, sizeof(n)), d, st.fail_count, state);
	}
	clu_repl_conf_free(&rc);
	if (e)
		return done(a, &x, e);
	if (json)
		printf("%s\n", json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN));
	return done(a, &x, NULL);
}

/* ---- schedule-now, log ------------------------------------------------------------ */

static bool set_run_now(struct repl_job_state *st, void *opaque)
{
	(void)opaque;
	st->run_now = true;
	return true;
}

static int exec_schedule_now(const struct cli_args *a)
{
	struct cli_ctl x = { .lock_fd = -1 };
	struct clu_repl_conf rc = { .n = 0 };
	struct err *e = NULL;
	uint32_t vmid;
	bool found;

	if (!cli_repl_id(a->pos[0], &vmid, &e))
		return cli_report(a, e);
	if (!cli_ctl_open(&x, &e) || !cli_repl_read(&x, &rc, NULL, &e))
		return done(a, &x, e);
	found = cli_repl_find(&rc, a->pos[0]) != NULL;
	clu_repl_conf_free(&rc);
	if (!found) {
		err_set(&e, ERR_NOTFOUND, "no replication job %s", a->pos[0]);
		return done(a, &x, e);
	}
	if (!repl_state_update(x.c, a->pos[0], set_run_now, NULL, &e))
		return done(a, &x, e);
	printf("replication job %s will run at the scheduler's next look (within 10 s)\n",
	       a->pos[0]);
	return done(a, &x, NULL);
}

static int exec_log(const struct cli_args *a)
{
	struct cli_ctl x = { .lock_fd = -1 };
	struct repl_job_state st;
	struct err *e = NULL;
	char path[1024];
	_cleanup_free_ char *text = NULL;
	uint32_t vmid;

	if (!cli_repl_id(a->pos[0], &vmid, &e))
		return cli_report(a, e);
	if (!cli_ctl_open(&x, &e) || !repl_state_read(x.c, a->pos[0], &st, NULL, &e))
		return done(a, &x, e);
	if (st.node[0] && strcmp(st.node, x.node)) {
		err_set(&e, ERR_STATE, "job %s ran on %s: its log is there ('vmrepl log %s' on %s)",
			a->pos[0], st.node, a->pos[0], st.node);
		return done(a, &x, e);
	}
	snprintf(path, sizeof(path), "%s/repl/%s/log", cli_ctl_data_dir(), a->pos[0]);
	text = util_read_file(path, 1 << 20, NULL);
	if (!text) {
		err_set(&e, ERR_NOTFOUND, "job %s has no log on %s yet", a->pos[0], x.node);
		return done(a, &x, e);
	}
	fputs(text, stdout);
	return done(a, &x, NULL);
}

/* ---- the table ---------------------------------------------------------------------- */

const struct cli_cmd cli_repl_create = {
	.name = "create", .posargs = "ID TARGET", .opts = create_opts, .min_pos = 2, .max_pos = 2,
	.summary = "create a job: guest VMID of ID (VMID-N) replicates to TARGET",
	.exec = exec_create,
};
const struct cli_cmd cli_repl_update = {
	.name = "update", .posargs = "ID", .opts = update_opts, .min_pos = 1, .max_pos = 1,
	.summary = "change a job's schedule, rate or comment", .exec = exec_update,
};
const struct cli_cmd cli_repl_delete = {
	.name = "delete", .posargs = "ID", .opts = delete_opts, .min_pos = 1, .max_pos = 1,
	.summary = "delete a job and (unless --keep) its replica", .exec = exec_delete,
};
const struct cli_cmd cli_repl_enable = {
	.name = "enable", .posargs = "ID", .opts = no_opts, .min_pos = 1, .max_pos = 1,
	.summary = "enable a job", .exec = exec_enable,
};
const struct cli_cmd cli_repl_disable = {
	.name = "disable", .posargs = "ID", .opts = no_opts, .min_pos = 1, .max_pos = 1,
	.summary = "disable a job", .exec = exec_disable,
};
const struct cli_cmd cli_repl_list = {
	.name = "list", .posargs = "", .opts = out_opts, .min_pos = 0, .max_pos = 0,
	.summary = "the jobs as configured", .exec = exec_list,
};
const struct cli_cmd cli_repl_status = {
	.name = "status", .posargs = "", .opts = status_opts, .min_pos = 0, .max_pos = 0,
	.summary = "the jobs' last and next sync, duration, failures, state", .exec = exec_status,
};
const struct cli_cmd cli_repl_schedule_now = {
	.name = "schedule-now", .posargs = "ID", .opts = no_opts, .min_pos = 1, .max_pos = 1,
	.summary = "run a job at the scheduler's next look", .exec = exec_schedule_now,
};
const struct cli_cmd cli_repl_log = {
	.name = "log", .posargs = "ID", .opts = no_opts, .min_pos = 1, .max_pos = 1,
	.summary = "the log of a job's last run (on its source node)", .exec = exec_log,
};
