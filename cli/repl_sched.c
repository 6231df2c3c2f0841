/*
 * repl_sched.c - when replication jobs run: the scheduler that vmmd runs
 * in a thread (and `vmrepl run` without --id, in the foreground), and the
 * `vmrepl run` command. See repl.h.
 *
 * A look, every few seconds: for each enabled job whose guest this node
 * owns, its state says when it runs next (repl_next_run: the schedule,
 * or the retry delays after failures, or now after schedule-now). Due
 * jobs start as `vmrepl run --id ID` children, one per guest and at most
 * `max` at once; a worker that died mid-run is recorded as a failure, so
 * the retry delays apply to it too.
 */
#include "repl.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHILDREN 64

struct child {
	pid_t pid;
	uint32_t vmid;
	char job[24];
};

struct cli_repl_sched {
	unsigned max;
	struct child kids[MAX_CHILDREN];
	unsigned n;
};

struct cli_repl_sched *cli_repl_sched_new(unsigned max)
{
	struct cli_repl_sched *s = calloc(1, sizeof(*s));

	if (s)
		s->max = max ? (max < MAX_CHILDREN ? max : MAX_CHILDREN) : 2;
	return s;
}

void cli_repl_sched_free(struct cli_repl_sched *s)
{
	free(s);
}

/* Our vmrepl: $VMM_VMREPL, else beside this program. */
static bool vmrepl_path(char *buf, size_t len)
{
	const char *env = getenv("VMM_VMREPL");
	char self[PATH_MAX];
	ssize_t n;

	if (env && *env) {
		snprintf(buf, len, "%s", env);
		return true;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return false;
	self[n] = '\0';
	snprintf(buf, len, "%s/vmrepl", dirname(self));
	return true;
}

static void reap(struct cli_repl_sched *s)
{
	for (unsigned i = 0; i < s->n;) {
		int st;
		pid_t r = waitpid(s->kids[i].pid, &st, WNOHANG);

		if (r == 0 || (r < 0 && errno == EINTR)) {
			i++;
			continue;
		}
		if (r > 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
			log_warn("replication job %s: worker pid %d ended with status %d",
				 s->kids[i].job, (int)r, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
		s->kids[i] = s->kids[--s->n];
	}
}

static bool busy_guest(const struct cli_repl_sched *s, uint32_t vmid)
{
	for (unsigned i = 0; i < s->n; i++)
		if (s->kids[i].vmid == vmid)
			return true;
	return false;
}

static bool spawn(struct cli_repl_sched *s, const struct clu_repl_job *j)
{
	char prog[PATH_MAX];
	char *argv[] = { prog, "run", "--id", (char *)j->id, NULL };
	pid_t pid;

	if (!vmrepl_path(prog, sizeof(prog)))
		return false;
	pid = fork();
	if (pid < 0)
		return false;
	if (pid == 0) {
		setpgid(0, 0);
		execv(prog, argv);
		_exit(127);
	}
	s->kids[s->n++] = (struct child){ .pid = pid, .vmid = j->vmid };
	snprintf(s->kids[s->n - 1].job, sizeof(s->kids[0].job), "%s", j->id);
	log_info("replication job %s: started (pid %d)", j->id, (int)pid);
	return true;
}

/* A worker recorded as syncing that is gone died mid-run. Only that one:
 * a new run may have started since the look (then the state has its pid). */
static bool mark_died(struct repl_job_state *st, void *opaque)
{
	pid_t dead = *(pid_t *)opaque;

	if (st->state != REPL_STATE_SYNCING || st->pid != dead)
		return false;
	snprintf(st->error, sizeof(st->error), "the worker (pid %d) died during the run",
		 (int)st->pid);
	st->state = REPL_STATE_ERROR;
	st->fail_count++;
	st->pid = 0;
	return true;
}

void cli_repl_sched_tick(struct cli_repl_sched *s, struct cli_ctl *x, bool wait)
{
	struct clu_repl_conf rc;
	struct err *e = NULL;
	time_t now = time(NULL);

	reap(s);
	if (!cli_repl_read(x, &rc, NULL, &e)) {
		log_warn("replication scheduler: %s", e->msg);
		err_free(e);
		return;
	}
	for (size_t i = 0; i < rc.n; i++) {
		const struct clu_repl_job *j = &rc.items[i];
		_cleanup_free_ struct clu_guest_rec *g = calloc(1, sizeof(*g));
		struct repl_job_state st;
		struct repl_schedule sch;
		time_t next;

		if (!g || j->disabled || !clu_guest_read(x->c, j->vmid, g, NULL) ||
		    strcmp(g->node, x->node))
			continue;
		if (!repl_state_read(x->c, j->id, &st, NULL, &e)) {
			log_warn("replication job %s: %s", j->id, e->msg);
			err_free(TAKE_PTR(e));
			continue;
		}
		if (st.state == REPL_STATE_SYNCING) {
			if (!strcmp(st.node, x->node) && st.pid > 0 && kill(st.pid, 0) == 0)
				continue; /* running */
			if (!strcmp(st.node, x->node) || !st.node[0]) {
				pid_t dead = st.pid;

				repl_state_update(x->c, j->id, mark_died, &dead, NULL);
				repl_state_read(x->c, j->id, &st, NULL, NULL);
			}
		}
		if (!repl_schedule_parse(j->schedule, &sch, &e)) {
			log_warn("replication job %s: %s", j->id, e->msg);
			err_free(TAKE_PTR(e));
			continue;
		}
		if (!repl_next_run(&sch, &st, now, &next) || next > now)
			continue;
		if (busy_guest(s, j->vmid))
			continue;
		if (wait) {
			bool skipped;

			if (!cli_repl_sync(x, j, &skipped, &e)) {
				log_warn("replication job %s%s: %s", j->id, skipped ? " skipped" : "",
					 e->msg);
				err_free(TAKE_PTR(e));
			}
			continue;
		}
		if (s->n >= s->max)
			break;
		if (!spawn(s, j))
			log_warn("replication job %s: cannot start a worker", j->id);
	}
	clu_repl_conf_free(&rc);
}

/* ---- vmrepl run ---------------------------------------------------------------------- */

static const struct cli_opt run_opts[] = {
	{ "id", CLI_VALUE, "ID", "run this job now (else: every due job of this node)" },
	{ NULL }
};

static int exec_run(const struct cli_args *a)
{
	struct cli_ctl x = { .lock_fd = -1 };
	struct clu_repl_conf rc = { .n = 0 };
	struct err *e = NULL;
	const char *id = cli_get(a, "id");
	uint32_t vmid;
	bool skipped = false, ok;

	if (id && !cli_repl_id(id, &vmid, &e))
		return cli_report(a, e);
	if (!cli_ctl_open(&x, &e))
		return cli_report(a, e);
	if (!id) {
		struct cli_repl_sched *s = cli_repl_sched_new(1);

		if (s)
			cli_repl_sched_tick(s, &x, true);
		cli_repl_sched_free(s);
		cli_ctl_close(&x);
		return 0;
	}
	if (!cli_repl_read(&x, &rc, NULL, &e)) {
		cli_ctl_close(&x);
		return cli_report(a, e);
	}
	if (!cli_repl_find(&rc, id)) {
		err_set(&e, ERR_NOTFOUND, "no replication job %s", id);
		ok = false;
	} else {
		ok = cli_repl_sync(&x, cli_repl_find(&rc, id), &skipped, &e);
	}
	clu_repl_conf_free(&rc);
	cli_ctl_close(&x);
	if (!ok)
		return cli_report(a, e);
	printf("replication job %s: done\n", id);
	return 0;
}

const struct cli_cmd cli_repl_run = {
	.name = "run", .posargs = "", .opts = run_opts, .min_pos = 0, .max_pos = 0,
	.summary = "run a job now, or every due job of this node", .exec = exec_run,
};
