/*
 * clu_conf_repl.c - replication.cfg, the cluster's replication jobs, in
 * Proxmox's pvesr syntax:
 *
 *   local: 106-0
 *   	target tre
 *   	schedule *\/15      (every 15 minutes)
 *   	rate 10
 *   	comment nightly copy
 *   	disable
 *
 * A "local: VMID-N" header at column 0, then indented "key value" lines up
 * to a blank line or the next header. One job per guest per target. The
 * schedule is kept as text here; its calendar grammar is checked by the
 * replication scheduler. Contract in clu_conf.h.
 */
#include "clu_conf.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parse {
	struct clu_conf_reader r;
	struct clu_repl_conf rc;
	size_t header_line[CLU_REPL_MAX];
	bool open;
	unsigned seen;          /* options of the open job, one bit each */
};

static const char *const options[] = { "target", "source", "schedule", "rate", "comment",
				       "disable" };

void clu_repl_conf_free(struct clu_repl_conf *rc)
{
	free(rc->items);
	rc->items = NULL;
	rc->n = 0;
}

static bool schedule_ok(const char *s)
{
	if (!*s || strlen(s) > CLU_REPL_SCHEDULE_MAX)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("*/:.,- ", *s))
			return false;
	return true;
}

static bool close_job(struct parse *p, struct err **errp)
{
	struct clu_repl_job *j;

	if (!p->open)
		return true;
	p->open = false;
	j = &p->rc.items[p->rc.n - 1];
	if (!j->target[0])
		return clu_conf_fail_at(&p->r, p->header_line[p->rc.n - 1], errp,
					"replication job '%s' has no target", j->id);
	for (size_t i = 0; i + 1 < p->rc.n; i++)
		if (p->rc.items[i].vmid == j->vmid && !strcmp(p->rc.items[i].target, j->target))
			return clu_conf_fail_at(&p->r, p->header_line[p->rc.n - 1], errp,
						"replication job '%s': guest %u already replicates "
						"to '%s' (job '%s')", j->id, j->vmid, j->target,
						p->rc.items[i].id);
	return true;
}

static bool header(struct parse *p, char *line, struct err **errp)
{
	char *type, *id, *dash;
	struct clu_repl_job *j;
	uint64_t vmid, n;

	if (!clu_conf_split_kv(&p->r, line, &type, &id, errp))
		return false;
	if (strcmp(type, "local"))
		return clu_conf_fail(&p->r, errp, "unknown replication job type '%s'", CLU_Q(type));
	dash = strchr(id, '-');
	if (!dash || dash == id || strchr(dash + 1, '-'))
		return clu_conf_fail(&p->r, errp, "invalid job id '%s': want VMID-N", CLU_Q(id));
	*dash = '\0';
	if (!clu_conf_u64(id, 100, 999999999, "VMID", &vmid, NULL) ||
	    !clu_conf_u64(dash + 1, 0, 9999, "job number", &n, NULL)) {
		*dash = '-';
		return clu_conf_fail(&p->r, errp, "invalid job id '%s': want VMID-N", CLU_Q(id));
	}
	*dash = '-';
	for (size_t i = 0; i < p->rc.n; i++)
		if (!strcmp(p->rc.items[i].id, id))
			return clu_conf_fail(&p->r, errp, "duplicate replication job '%s' (also on line %zu)",
					     id, p->header_line[i]);
	if (p->rc.n == CLU_REPL_MAX)
		return clu_conf_fail(&p->r, errp, "more than %d replication jobs", CLU_REPL_MAX);
	if (!p->rc.items) {
		p->rc.items = calloc(CLU_REPL_MAX, sizeof(*p->rc.items));
		if (!p->rc.items)
			return err_set(errp, ERR_IO, "out of memory");
	}
	j = &p->rc.items[p->rc.n];
	memset(j, 0, sizeof(*j));
	snprintf(j->id, sizeof(j->id), "%s", id);
	j->vmid = (uint32_t)vmid;
	j->n = (unsigned)n;
	snprintf(j->schedule, sizeof(j->schedule), "*/15");
	p->header_line[p->rc.n++] = p->r.line;
	p->open = true;
	p->seen = 0;
	return true;
}

static bool option(struct parse *p, char *line, struct err **errp)
{
	struct clu_repl_job *j = &p->rc.items[p->rc.n - 1];
	char *key = line, *value = line + strcspn(line, " \t");
	struct err *sub = NULL;
	uint64_t v;

	int k;

	if (*value)
		*value++ = '\0';
	value = clu_conf_trim(value);
	k = clu_conf_lookup(options, sizeof(options) / sizeof(options[0]), key);
	if (k < 0)
		return clu_conf_fail(&p->r, errp, "unknown option '%s' for job '%s'", CLU_Q(key),
				     j->id);
	/* A repeated option would silently override the first: refuse it. */
	if (p->seen & (1u << k))
		return clu_conf_fail(&p->r, errp, "duplicate option '%s' for job '%s'", key, j->id);
	p->seen |= 1u << k;
	if (!strcmp(key, "disable")) {
		bool b = true;
		if (*value && !clu_conf_bool(value, "disable", &b, &sub))
			return clu_conf_fail_sub(&p->r, errp, sub);
		j->disabled = b;
		return true;
	}
	if (!*value)
		return clu_conf_fail(&p->r, errp, "option '%s' of job '%s' needs a value", CLU_Q(key),
				     j->id);
	if (!strcmp(key, "target") || !strcmp(key, "source")) {
		char *dst = key[0] == 't' ? j->target : j->source;

		if (!clu_node_name_valid(value))
			return clu_conf_fail(&p->r, errp, "invalid %s node '%s' for job '%s'", key,
					     CLU_Q(value), j->id);
		snprintf(dst, CLU_NODE_NAME_MAX + 1, "%s", value);
	} else if (!strcmp(key, "schedule")) {
		if (!schedule_ok(value))
			return clu_conf_fail(&p->r, errp, "invalid schedule '%s' for job '%s'",
					     CLU_Q(value), j->id);
		snprintf(j->schedule, sizeof(j->schedule), "%s", value);
	} else if (!strcmp(key, "rate")) {
		if (!clu_conf_u64(value, 1, 1000000, "rate", &v, &sub))
			return clu_conf_fail_sub(&p->r, errp, sub);
		j->rate = (uint32_t)v;
	} else if (!strcmp(key, "comment")) {
		if (strlen(value) > CLU_REPL_COMMENT_MAX)
			return clu_conf_fail(&p->r, errp, "comment of job '%s' is longer than %d bytes",
					     j->id, CLU_REPL_COMMENT_MAX);
		snprintf(j->comment, sizeof(j->comment), "%s", value);
	} else {
		return clu_conf_fail(&p->r, errp, "unknown option '%s' for job '%s'", CLU_Q(key),
				     j->id);
	}
	return true;
}

bool clu_repl_parse(const char *text, const char *file, struct clu_repl_conf *out,
		    struct err **errp)
{
	_cleanup_free_ struct parse *p = calloc(1, sizeof(*p));
	int rc;

	if (!p)
		return err_set(errp, ERR_IO, "out of memory reading %s", file);
	clu_conf_reader_init(&p->r, text, file);
	while ((rc = clu_conf_reader_next(&p->r, errp)) > 0) {
		char *t = clu_conf_trim(p->r.buf);
		bool indented = p->r.buf[0] == ' ' || p->r.buf[0] == '\t';
		bool ok;

		if (!*t) {
			ok = close_job(p, errp);
		} else if (*t == '#') {
			ok = true;
		} else if (indented) {
			ok = p->open ? option(p, t, errp) :
				       clu_conf_fail(&p->r, errp, "option '%s' outside a job",
						     CLU_Q(t));
		} else {
			ok = close_job(p, errp) && header(p, t, errp);
		}
		if (!ok) {
			clu_repl_conf_free(&p->rc);
			return false;
		}
	}
	if (rc < 0 || !close_job(p, errp)) {
		clu_repl_conf_free(&p->rc);
		return false;
	}
	*out = p->rc;
	return true;
}

char *clu_repl_format(const struct clu_repl_conf *rc, struct err **errp)
{
	char *buf = NULL, *checked;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct clu_repl_conf back = { 0 };

	if (!f) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < rc->n; i++) {
		const struct clu_repl_job *j = &rc->items[i];

		fprintf(f, "%slocal: %s\n\ttarget %s\n", i ? "\n" : "", j->id, j->target);
		if (j->source[0])
			fprintf(f, "\tsource %s\n", j->source);
		if (strcmp(j->schedule, "*/15"))
			fprintf(f, "\tschedule %s\n", j->schedule);
		if (j->rate)
			fprintf(f, "\trate %u\n", j->rate);
		if (j->comment[0])
			fprintf(f, "\tcomment %s\n", j->comment);
		if (j->disabled)
			fprintf(f, "\tdisable\n");
	}
	fclose(f);
	/* Refuse to hand out text that would read back differently. */
	if (!clu_repl_parse(buf, "replication.cfg", &back, errp)) {
		free(buf);
		return NULL;
	}
	checked = back.n == rc->n &&
		  (!rc->n || !memcmp(back.items, rc->items, rc->n * sizeof(*rc->items))) ? buf : NULL;
	clu_repl_conf_free(&back);
	if (!checked) {
		free(buf);
		err_set(errp, ERR_INVAL, "replication jobs do not survive formatting");
	}
	return checked;
}
