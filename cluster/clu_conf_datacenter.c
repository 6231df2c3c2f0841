/*
 * clu_conf_datacenter.c - datacenter.cfg: cluster-wide settings as
 * "key: value" lines, values being Proxmox property strings
 * ("secure,network=10.1.2.0/24"). See clu_conf.h for the keys.
 */
#include "clu_conf.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NEXT_ID_MIN 100
#define NEXT_ID_MAX 999999999
#define RATE_MAX 1000000
#define BWLIMIT_MAX (1u << 30)
#define DEFAULT_SCHEDULE "*/15"

const char *const clu_migration_type_names[] = {
	[CLU_MIGRATION_SECURE] = "secure",
	[CLU_MIGRATION_INSECURE] = "insecure",
};
_Static_assert(ARRAY_SIZE(clu_migration_type_names) == CLU_MIGRATION_TYPE_MAX,
	       "clu_migration_type_names");

void clu_datacenter_defaults(struct clu_datacenter *dc)
{
	memset(dc, 0, sizeof(*dc));
	dc->migration_type = CLU_MIGRATION_SECURE;
	dc->next_id_lower = 100;
	dc->next_id_upper = 1000000;
	dc->max_workers = 4;
	strcpy(dc->replication_schedule, DEFAULT_SCHEDULE);
}

/* Picks the option `key` of a property string from names[]; catches
 * unknown and repeated options. Returns the index or -1 (*errp set). */
static int option(const struct clu_conf_reader *r, const char *what,
		  const char *const *names, size_t n, const char *key,
		  unsigned *seen, struct err **errp)
{
	int i = clu_conf_lookup(names, n, key);

	if (i < 0) {
		clu_conf_fail(r, errp, "unknown option '%s' in %s", CLU_Q(key), what);
		return -1;
	}
	if (*seen & (1u << i)) {
		clu_conf_fail(r, errp, "duplicate option '%s' in %s", key, what);
		return -1;
	}
	*seen |= 1u << i;
	return i;
}

/* A number option: the message names the key and option ("next-id lower"). */
static bool number(const struct clu_conf_reader *r, const char *key,
		   const char *opt, const char *s, uint64_t min, uint64_t max,
		   uint32_t *out, struct err **errp)
{
	char what[64];
	struct err *sub = NULL;
	uint64_t v;

	snprintf(what, sizeof(what), "%s%s%s", key, opt ? " " : "", opt ? opt : "");
	if (!clu_conf_u64(s, min, max, what, &v, &sub))
		return clu_conf_fail_sub(r, errp, sub);
	*out = (uint32_t)v;
	return true;
}

static bool bare_piece(const struct clu_conf_reader *r, const char *what,
			  const char *piece, struct err **errp)
{
	return clu_conf_fail(r, errp, "invalid option '%s' in %s (expected KEY=VALUE)",
			     CLU_Q(piece), what);
}

static bool key_migration(const struct clu_conf_reader *r, char *v,
			  struct clu_datacenter *dc, struct err **errp)
{
	static const char *const names[] = { "type", "network" };
	unsigned seen = 0;
	char *k, *val;
	const char *why;

	for (bool first = true; clu_conf_next_opt(&v, &k, &val); first = false) {
		if (!k && !first)
			return bare_piece(r, "migration", val, errp);
		switch (option(r, "migration", names, ARRAY_SIZE(names),
			       k ? k : "type", &seen, errp)) {
		case 0: {
			int t = clu_conf_lookup(clu_migration_type_names,
						CLU_MIGRATION_TYPE_MAX, val);
			if (t < 0)
				return clu_conf_fail(r, errp, "invalid migration type '%s' "
						     "(expected secure or insecure)", CLU_Q(val));
			dc->migration_type = (enum clu_migration_type)t;
			break;
		}
		case 1:
			why = clu_cidr_check(val, &dc->migration_network);
			if (why)
				return clu_conf_fail(r, errp, "invalid CIDR '%s' in migration "
						     "network: %s", CLU_Q(val), why);
			dc->has_migration_network = true;
			break;
		default:
			return false;
		}
	}
	return true;
}

static bool key_next_id(const struct clu_conf_reader *r, char *v,
			struct clu_datacenter *dc, struct err **errp)
{
	static const char *const names[] = { "lower", "upper" };
	uint32_t *field[] = { &dc->next_id_lower, &dc->next_id_upper };
	unsigned seen = 0;
	char *k, *val;
	int i;

	while (clu_conf_next_opt(&v, &k, &val)) {
		if (!k)
			return bare_piece(r, "next-id", val, errp);
		i = option(r, "next-id", names, ARRAY_SIZE(names), k, &seen, errp);
		if (i < 0 || !number(r, "next-id", k, val, NEXT_ID_MIN, NEXT_ID_MAX,
				     field[i], errp))
			return false;
	}
	if (dc->next_id_lower >= dc->next_id_upper)
		return clu_conf_fail(r, errp, "invalid next-id: lower %" PRIu32
				     " is not below upper %" PRIu32,
				     dc->next_id_lower, dc->next_id_upper);
	return true;
}

static bool key_max_workers(const struct clu_conf_reader *r, char *v,
			    struct clu_datacenter *dc, struct err **errp)
{
	uint32_t n = 0;

	if (!number(r, "max_workers", NULL, v, 1, 64, &n, errp))
		return false;
	dc->max_workers = n;
	return true;
}

static const char *schedule_check(const char *s)
{
	size_t n = strlen(s);

	if (!n)
		return "empty";
	if (strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		      "0123456789*/:.,- ") != n)
		return "only letters, digits, spaces and */:.,- are allowed";
	if (s[0] == ' ' || s[n - 1] == ' ')
		return "starts or ends with a space";
	return NULL;
}

static bool key_replication(const struct clu_conf_reader *r, char *v,
			    struct clu_datacenter *dc, struct err **errp)
{
	static const char *const names[] = { "schedule", "rate" };
	char sched[CLU_SCHEDULE_MAX + 1] = "";
	unsigned seen = 0;
	int i, last = -1;
	char *k, *val;
	const char *why;

	while (clu_conf_next_opt(&v, &k, &val)) {
		if (!k) {
			/* The schedule's own commas: "schedule=mon,tue 02:00". */
			size_t n = strlen(sched);

			if (last != 0)
				return bare_piece(r, "replication", val, errp);
			if (n + 1 + strlen(val) > CLU_SCHEDULE_MAX)
				return clu_conf_fail(r, errp, "replication schedule too long "
						     "(more than %d bytes)", CLU_SCHEDULE_MAX);
			sched[n] = ',';
			strcpy(sched + n + 1, val);
			continue;
		}
		last = i = option(r, "replication", names, ARRAY_SIZE(names), k,
				  &seen, errp);
		if (i < 0)
			return false;
		if (i == 1 && !number(r, "replication", k, val, 1, RATE_MAX,
				      &dc->replication_rate, errp))
			return false;
		if (i == 0 && !clu_conf_copy(sched, sizeof(sched), val))
			return clu_conf_fail(r, errp, "replication schedule too long "
					     "(more than %d bytes)", CLU_SCHEDULE_MAX);
	}
	if (seen & 1) {
		why = schedule_check(sched);
		if (why)
			return clu_conf_fail(r, errp, "invalid replication schedule "
					     "'%s': %s", CLU_Q(sched), why);
		strcpy(dc->replication_schedule, sched);
	}
	return true;
}

static bool key_bwlimit(const struct clu_conf_reader *r, char *v,
			struct clu_datacenter *dc, struct err **errp)
{
	static const char *const names[] = { "migration", "default" };
	uint32_t *field[] = { &dc->bwlimit_migration, &dc->bwlimit_default };
	unsigned seen = 0;
	char *k, *val;
	int i;

	while (clu_conf_next_opt(&v, &k, &val)) {
		if (!k)
			return bare_piece(r, "bwlimit", val, errp);
		i = option(r, "bwlimit", names, ARRAY_SIZE(names), k, &seen, errp);
		if (i < 0 || !number(r, "bwlimit", k, val, 0, BWLIMIT_MAX, field[i], errp))
			return false;
	}
	return true;
}

static const struct {
	const char *name;
	bool (*parse)(const struct clu_conf_reader *r, char *value,
		      struct clu_datacenter *dc, struct err **errp);
} keys[] = {
	{ "migration", key_migration },
	{ "next-id", key_next_id },
	{ "max_workers", key_max_workers },
	{ "replication", key_replication },
	{ "bwlimit", key_bwlimit },
};

bool clu_datacenter_parse(const char *text, const char *file,
			  struct clu_datacenter *out, struct err **errp)
{
	struct clu_conf_reader r;
	struct clu_datacenter dc;
	size_t first_seen[ARRAY_SIZE(keys)] = { 0 };
	int rc;

	clu_datacenter_defaults(&dc);
	clu_conf_reader_init(&r, text, file);
	while ((rc = clu_conf_reader_next(&r, errp)) > 0) {
		char *line = clu_conf_trim(r.buf), *key, *value;
		size_t i;

		if (!*line || *line == '#')
			continue;
		if (!clu_conf_split_kv(&r, line, &key, &value, errp))
			return false;
		for (i = 0; i < ARRAY_SIZE(keys) && strcmp(keys[i].name, key); i++)
			;
		if (i == ARRAY_SIZE(keys))
			return clu_conf_fail(&r, errp, "unknown key '%s'", CLU_Q(key));
		if (first_seen[i])
			return clu_conf_fail(&r, errp, "duplicate key '%s' (first on line %zu)",
					     key, first_seen[i]);
		first_seen[i] = r.line;
		if (!keys[i].parse(&r, value, &dc, errp))
			return false;
	}
	if (rc < 0)
		return false;
	*out = dc;
	return true;
}

bool clu_conf_load_datacenter(const char *path, struct clu_datacenter *out,
			      struct err **errp)
{
	_cleanup_free_ char *text = clu_conf_read(path, errp);

	return text && clu_datacenter_parse(text, path, out, errp);
}

bool clu_datacenter_equal(const struct clu_datacenter *a,
			  const struct clu_datacenter *b)
{
	return a->migration_type == b->migration_type &&
	       a->has_migration_network == b->has_migration_network &&
	       (!a->has_migration_network ||
		clu_cidr_equal(&a->migration_network, &b->migration_network)) &&
	       a->next_id_lower == b->next_id_lower &&
	       a->next_id_upper == b->next_id_upper &&
	       a->max_workers == b->max_workers &&
	       !strcmp(a->replication_schedule, b->replication_schedule) &&
	       a->replication_rate == b->replication_rate &&
	       a->bwlimit_migration == b->bwlimit_migration &&
	       a->bwlimit_default == b->bwlimit_default;
}

static void write_text(FILE *f, const struct clu_datacenter *dc)
{
	struct clu_datacenter d;
	char net[CLU_CIDR_STRLEN];
	const char *sep = "";

	clu_datacenter_defaults(&d);
	if (dc->migration_type != d.migration_type || dc->has_migration_network)
		fprintf(f, "migration: %s%s%s\n",
			(unsigned)dc->migration_type < CLU_MIGRATION_TYPE_MAX ?
				clu_migration_type_names[dc->migration_type] : "?",
			dc->has_migration_network ? ",network=" : "",
			dc->has_migration_network ?
				clu_cidr_format(&dc->migration_network, net, sizeof(net)) : "");
	if (dc->next_id_lower != d.next_id_lower || dc->next_id_upper != d.next_id_upper)
		fprintf(f, "next-id: lower=%" PRIu32 ",upper=%" PRIu32 "\n",
			dc->next_id_lower, dc->next_id_upper);
	if (dc->max_workers != d.max_workers)
		fprintf(f, "max_workers: %u\n", dc->max_workers);
	if (strcmp(dc->replication_schedule, d.replication_schedule) ||
	    dc->replication_rate) {
		fputs("replication: ", f);
		if (strcmp(dc->replication_schedule, d.replication_schedule)) {
			fprintf(f, "schedule=%.*s", CLU_SCHEDULE_MAX, dc->replication_schedule);
			sep = ",";
		}
		if (dc->replication_rate)
			fprintf(f, "%srate=%" PRIu32, sep, dc->replication_rate);
		fputc('\n', f);
	}
	if (dc->bwlimit_migration || dc->bwlimit_default) {
		sep = "";
		fputs("bwlimit: ", f);
		if (dc->bwlimit_migration) {
			fprintf(f, "migration=%" PRIu32, dc->bwlimit_migration);
			sep = ",";
		}
		if (dc->bwlimit_default)
			fprintf(f, "%sdefault=%" PRIu32, sep, dc->bwlimit_default);
		fputc('\n', f);
	}
}

char *clu_datacenter_format(const struct clu_datacenter *dc, struct err **errp)
{
	_cleanup_free_ char *text = NULL;
	struct clu_datacenter back;
	struct err *sub = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f) {
		err_set(errp, ERR_IO, "out of memory formatting datacenter.cfg");
		return NULL;
	}
	write_text(f, dc);
	if (fclose(f) != 0 || !text) {
		err_set(errp, ERR_IO, "out of memory formatting datacenter.cfg");
		return NULL;
	}
	/* Never hand out a file that would read back differently. */
	if (!clu_datacenter_parse(text, "(formatted datacenter.cfg)", &back, &sub)) {
		err_prefix(sub, "cannot format datacenter.cfg");
		err_propagate(errp, &sub);
		return NULL;
	}
	if (!clu_datacenter_equal(dc, &back)) {
		err_set(errp, ERR_INVAL, "cannot format datacenter.cfg: "
			"the values do not read back the same");
		return NULL;
	}
	return TAKE_PTR(text);
}
