/*
 * test_mig_raw.c - the raw migration state machine against two scripted
 * QEMUs: the success path sets an explicit bandwidth and resumes a paused
 * target; every failure path resumes the source, and after the source has
 * completed the target must quit before the source may resume.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakeqmp.h"
#include "migrate/mig.h"

/* What a fake QEMU does, per test. */
struct qemu_model {
	const char *role;          /* "src" or "dst" */
	const char *final_status;  /* src: query-migrate after active */
	const char *dst_event;     /* dst: MIGRATION status to announce */
	bool dst_paused;           /* dst: runs only after cont */
	int polls_active;          /* src: query-migrate replies "active" this often */
	int pre_polls;             /* src: then "pre-switchover" this often ... */
	int pre_polls_after;       /* ... and this often after migrate-continue */
	const char *after_continue; /* src: status once those are used up (default final_status) */
	bool continued;
	/* observations */
	char log[1024];            /* commands seen, space separated */
	char caps[1024];           /* arguments of the last migrate-set-capabilities */
	char params[1024];         /* ... and of the first migrate-set-parameters */
	bool running;
	int cont_seq, quit_seq;   /* when cont / quit arrived, 0 = never */
	int stop_seq;
};

static void record(struct qemu_model *m, const char *cmd)
{
	size_t used = strlen(m->log);

	/* Full: keep what is there (no wrap-around of the size below). */
	if (used + strlen(cmd) + 2 > sizeof(m->log))
		return;
	strcat(m->log, cmd);
	strcat(m->log, " ");
}

static void reply(struct fakeqmp *f, long long id, const char *ret)
{
	fakeqmp_sendf(f, "{\"return\": %s, \"id\": %lld}\r\n", ret, id);
}

/* One clock for both peers, to check the order of quit and cont. */
static int seq;

static void serve(struct fakeqmp *f)
{
	struct qemu_model *m = f->opaque;
	int polls = 0;
	bool src = !strcmp(m->role, "src");

	m->running = src;
	fakeqmp_greet(f);
	for (;;) {
		long long id = fakeqmp_read_cmd(f);
		const char *c = f->last_cmd;

		if (id < 0)
			return; /* client closed */
		record(m, c);
		if (!strcmp(c, "migrate-set-capabilities"))
			snprintf(m->caps, sizeof(m->caps), "%s", f->last_args);
		if (!strcmp(c, "migrate-set-parameters") && !m->params[0])
			snprintf(m->params, sizeof(m->params), "%s", f->last_args);
		if (!strcmp(c, "query-status")) {
			fakeqmp_sendf(f, "{\"return\": {\"status\": \"%s\", \"running\": %s}, \"id\": %lld}\r\n",
				      m->running ? "running" : "paused", m->running ? "true" : "false", id);
		} else if (!strcmp(c, "migrate-incoming")) {
			reply(f, id, "{}");
			/* The stream "arrives": announce the outcome. */
			if (m->dst_event) {
				if (!strcmp(m->dst_event, "completed") && !m->dst_paused)
					m->running = true;
				fakeqmp_sendf(f, "{\"event\": \"MIGRATION\", \"data\": {\"status\": \"%s\"}, "
						 "\"timestamp\": {}}\r\n", m->dst_event);
			}
		} else if (!strcmp(c, "query-migrate")) {
			const char *st = polls++ < m->polls_active ? "active" : m->final_status;

			if (polls > m->polls_active && !m->continued && m->pre_polls) {
				st = "pre-switchover"; /* waits for migrate-continue */
				m->running = false;
			} else if (m->continued && m->pre_polls_after > 0) {
				m->pre_polls_after--;
				st = "pre-switchover";
			} else if (m->continued && m->after_continue) {
				st = m->after_continue;
			}

			if (!strcmp(st, "failed"))
				m->running = false; /* broke during completion: source paused */
			if (!strcmp(st, "failed"))
				fakeqmp_sendf(f, "{\"return\": {\"status\": \"failed\", \"error-desc\": "
						 "\"Unable to write to socket: Broken pipe\"}, \"id\": %lld}\r\n", id);
			else
				fakeqmp_sendf(f, "{\"return\": {\"status\": \"%s\", \"downtime\": 42, "
						 "\"total-time\": 900, \"setup-time\": 3, \"ram\": {\"total\": "
						 "1073733632, \"transferred\": 5000, \"remaining\": 100, \"mbps\": "
						 "800.5, \"dirty-sync-count\": 3, \"page-size\": 4096, "
						 "\"dirty-pages-rate\": 10}}, \"id\": %lld}\r\n", st, id);
			if (!strcmp(st, "completed"))
				m->running = false; /* postmigrate */
		} else if (!strcmp(c, "cont")) {
			m->running = true;
			m->cont_seq = __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST);
			reply(f, id, "{}");
		} else if (!strcmp(c, "migrate-continue")) {
			m->continued = true;
			reply(f, id, "{}");
		} else if (!strcmp(c, "stop")) {
			m->running = false;
			m->stop_seq = __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST);
			reply(f, id, "{}");
		} else if (!strcmp(c, "migrate_cancel")) {
			m->after_continue = NULL;
			m->pre_polls_after = 0;
			m->final_status = "cancelled";
			m->polls_active = 0;
			reply(f, id, "{}");
		} else if (!strcmp(c, "quit")) {
			m->quit_seq = __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST);
			reply(f, id, "{}");
			m->running = false;
			fakeqmp_close(f);
			return;
		} else {
			reply(f, id, "{}");
		}
	}
}

struct pair {
	struct fakeqmp fs, fd;
	struct qemu_model ms, md;
	struct tp_qmp *src, *dst;
};

static void pair_start(struct pair *p)
{
	struct err *e = NULL;

	p->ms.role = "src";
	p->md.role = "dst";
	fakeqmp_start(&p->fs, serve, &p->ms);
	fakeqmp_start(&p->fd, serve, &p->md);
	p->src = tp_qmp_from_fd(p->fs.client_fd, 2000, &e);
	p->dst = tp_qmp_from_fd(p->fd.client_fd, 2000, &e);
	assert_non_null(p->src);
	assert_non_null(p->dst);
}

static void pair_finish(struct pair *p)
{
	tp_qmp_close(p->src);
	tp_qmp_close(p->dst);
	fakeqmp_finish(&p->fs);
	fakeqmp_finish(&p->fd);
}

static const struct mig_raw_opts OPTS = {
	.uri = "tcp:10.99.2.2:61000", .timeout_ms = 5000, .poll_ms = 10, .resume_target = true,
};

static void test_success_resumes_paused_target(void **state)
{
	struct pair p = { 0 };
	struct mig_raw_progress fin;
	struct err *e = NULL;

	(void)state;
	p.ms.final_status = "completed";
	p.ms.polls_active = 2;
	p.md.dst_event = "completed";
	p.md.dst_paused = true;
	pair_start(&p);
	assert_true(mig_raw_run(p.src, p.dst, &OPTS, NULL, NULL, &fin, &e));
	assert_null(e);
	assert_int_equal(fin.state, MIG_RAW_DONE);
	assert_int_equal(fin.downtime_ms, 42);
	assert_int_equal(fin.passes, 3);
	pair_finish(&p);
	/* Order matters: parameters before migrate; incoming before migrate. */
	assert_non_null(strstr(p.ms.log, "migrate-set-capabilities migrate-set-parameters migrate "));
	assert_non_null(strstr(p.md.log, "migrate-set-capabilities migrate-set-parameters migrate-incoming"));
	assert_non_null(strstr(p.md.log, "cont"));
	assert_true(p.md.running);
	assert_false(p.ms.running);
	assert_null(strstr(p.ms.log, "cont"));
}

static void test_failure_resumes_source(void **state)
{
	struct pair p = { 0 };
	struct mig_raw_progress fin;
	struct err *e = NULL;

	(void)state;
	p.ms.final_status = "failed";
	p.ms.polls_active = 1;
	pair_start(&p);
	/* The source "paused" itself when the stream broke, as QEMU can. */
	assert_false(mig_raw_run(p.src, p.dst, &OPTS, NULL, NULL, &fin, &e));
	assert_non_null(e);
	assert_non_null(strstr(e->msg, "Broken pipe"));
	assert_int_equal(fin.state, MIG_RAW_FAILED);
	err_free(e);
	pair_finish(&p);
	assert_non_null(strstr(p.ms.log, "migrate_cancel"));
	assert_true(p.ms.cont_seq > 0); /* paused by the failure, resumed by rollback */
	assert_true(p.ms.running);
	assert_null(strstr(p.md.log, "cont"));
}

static void test_timeout_cancels_and_resumes(void **state)
{
	struct pair p = { 0 };
	struct mig_raw_opts o = OPTS;
	struct err *e = NULL;

	(void)state;
	p.ms.final_status = "active";
	p.ms.polls_active = 1000000;
	pair_start(&p);
	o.timeout_ms = 300;
	assert_false(mig_raw_run(p.src, p.dst, &o, NULL, NULL, NULL, &e));
	assert_int_equal(e->code, ERR_TIMEOUT);
	assert_non_null(strstr(e->msg, "did not complete within"));
	err_free(e);
	pair_finish(&p);
	assert_non_null(strstr(p.ms.log, "migrate_cancel"));
	assert_true(p.ms.running);
}

/* The source completed but the target failed to load: the target must be
 * told to quit (and be gone) before the source resumes. */
static void test_target_fails_after_source_completed(void **state)
{
	struct pair p = { 0 };
	struct err *e = NULL;
	const char *quit;

	(void)state;
	p.ms.final_status = "completed";
	p.md.dst_event = "failed";
	pair_start(&p);
	assert_false(mig_raw_run(p.src, p.dst, &OPTS, NULL, NULL, NULL, &e));
	assert_non_null(strstr(e->msg, "target failed to load"));
	err_free(e);
	pair_finish(&p);
	quit = strstr(p.md.log, "quit");
	assert_non_null(quit);
	assert_false(p.md.running);
	assert_true(p.ms.running);
	assert_true(p.md.quit_seq > 0 && p.ms.cont_seq > p.md.quit_seq); /* quit, then cont */
}

/* A QEMU that was the target of a multifd migration keeps the multifd
 * capability: migrating it on without multifd must switch it off (else it
 * opens extra connections the new target drops), and the downtime limit is
 * always set (an earlier ramp may have raised it). */
static void test_caps_set_explicitly(void **state)
{
	struct pair p = { 0 };
	struct mig_raw_opts o = OPTS;
	struct err *e = NULL;

	(void)state;
	p.ms.final_status = "completed";
	p.md.dst_event = "completed";
	pair_start(&p);
	o.tune.multifd = 1;
	o.tune.auto_converge = true;
	assert_true(mig_raw_run(p.src, p.dst, &o, NULL, NULL, NULL, &e));
	pair_finish(&p);
	assert_non_null(strstr(p.ms.caps, "{\"capability\":\"multifd\",\"state\":false}"));
	assert_non_null(strstr(p.md.caps, "{\"capability\":\"multifd\",\"state\":false}"));
	assert_non_null(strstr(p.ms.caps, "{\"capability\":\"auto-converge\",\"state\":true}"));
	/* The target never throttles or delta-decodes on its own. */
	assert_non_null(strstr(p.md.caps, "{\"capability\":\"auto-converge\",\"state\":false}"));
	assert_non_null(strstr(p.ms.params, "\"downtime-limit\":300"));
	assert_non_null(strstr(p.ms.params, "\"max-bandwidth\":9223372036854775807"));
}

static int pre_calls;

static bool count_pre(void *opaque, struct err **errp)
{
	(void)opaque;
	(void)errp;
	pre_calls++;
	return true;
}

/* With pause-before-switchover the callback runs once, even when QEMU
 * still reports pre-switchover after migrate-continue (calling it again
 * found the disk mirrors ended and cancelled a completing migration). */
static void test_pre_switchover_once(void **state)
{
	struct pair p = { 0 };
	struct mig_raw_opts o = OPTS;
	struct err *e = NULL;

	(void)state;
	p.ms.final_status = "completed";
	p.ms.polls_active = 1;
	p.ms.pre_polls = 1;
	p.ms.pre_polls_after = 3;
	p.md.dst_event = "completed";
	pair_start(&p);
	o.pre_switchover = count_pre;
	pre_calls = 0;
	assert_true(mig_raw_run(p.src, p.dst, &o, NULL, NULL, NULL, &e));
	pair_finish(&p);
	assert_int_equal(pre_calls, 1);
	assert_non_null(strstr(p.ms.caps, "{\"capability\":\"pause-before-switchover\",\"state\":true}"));
	assert_non_null(strstr(p.md.caps, "{\"capability\":\"pause-before-switchover\",\"state\":false}"));
	assert_non_null(strstr(p.ms.log, "migrate-continue"));
	assert_null(strstr(strstr(p.ms.log, "migrate-continue") + 1, "migrate-continue"));
	assert_null(strstr(p.ms.log, "migrate_cancel"));
}

static bool cancel_after(void *opaque, struct err **errp)
{
	(void)opaque;
	if (!pre_calls)
		return false;
	err_set(errp, ERR_STATE, "cancelled by test");
	return true;
}

/* Cancelled after migrate-continue (device state on its way, the source's
 * disks inactivated): the source is stopped, then resumed with cont, which
 * takes its disks back - QEMU 7.2's cancel path would restart it without. */
static void test_cancel_after_continue_reactivates(void **state)
{
	struct pair p = { 0 };
	struct mig_raw_opts o = OPTS;
	struct err *e = NULL;

	(void)state;
	p.ms.final_status = "active";
	p.ms.polls_active = 1;
	p.ms.pre_polls = 1;
	p.ms.after_continue = "device";
	pair_start(&p);
	o.pre_switchover = count_pre;
	o.cancelled = cancel_after;
	pre_calls = 0;
	assert_false(mig_raw_run(p.src, p.dst, &o, NULL, NULL, NULL, &e));
	assert_non_null(strstr(e->msg, "cancelled by test"));
	err_free(e);
	pair_finish(&p);
	assert_int_equal(pre_calls, 1);
	assert_non_null(strstr(p.ms.log, "migrate_cancel"));
	assert_true(p.ms.stop_seq > 0 && p.ms.cont_seq > p.ms.stop_seq);
	assert_true(p.ms.running);
}

static void test_missing_uri(void **state)
{
	struct mig_raw_opts o = OPTS;
	struct err *e = NULL;

	(void)state;
	o.uri = "";
	assert_false(mig_raw_run(NULL, NULL, &o, NULL, NULL, NULL, &e));
	assert_int_equal(e->code, ERR_INVAL);
	err_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_success_resumes_paused_target),
		cmocka_unit_test(test_failure_resumes_source),
		cmocka_unit_test(test_timeout_cancels_and_resumes),
		cmocka_unit_test(test_target_fails_after_source_completed),
		cmocka_unit_test(test_caps_set_explicitly),
		cmocka_unit_test(test_pre_switchover_once),
		cmocka_unit_test(test_cancel_after_continue_reactivates),
		cmocka_unit_test(test_missing_uri),
	};
	return cmocka_run_group_tests_name("mig_raw", tests, NULL, NULL);
}
