/*
 * clu_conf_storage.c - storage.cfg: Proxmox "section config", one section
 * per storage, a "TYPE: ID" header at column 0 and indented "key value"
 * lines up to a blank line or the next header. See clu_conf.h.
 */
#include "clu_conf.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const clu_storage_type_names[] = {
	[CLU_STORAGE_DIR] = "dir",
};
_Static_assert(ARRAY_SIZE(clu_storage_type_names) == CLU_STORAGE_TYPE_MAX,
	       "clu_storage_type_names");

const char *const clu_content_names[] = {
	[CLU_CONTENT_IMAGES] = "images",
	[CLU_CONTENT_ROOTDIR] = "rootdir",
	[CLU_CONTENT_ISO] = "iso",
	[CLU_CONTENT_BACKUP] = "backup",
};
_Static_assert(ARRAY_SIZE(clu_content_names) == CLU_CONTENT_MAX,
	       "clu_content_names");

enum opt { OPT_PATH, OPT_SHARED, OPT_NODES, OPT_CONTENT, OPT_DISABLE, OPT_MAX };
static const char *const opt_names[] = {
	[OPT_PATH] = "path",
	[OPT_SHARED] = "shared",
	[OPT_NODES] = "nodes",
	[OPT_CONTENT] = "content",
	[OPT_DISABLE] = "disable",
};
_Static_assert(ARRAY_SIZE(opt_names) == OPT_MAX, "opt_names");

/* Parser state: the storages so far and the open section, if any. */
struct parse {
	struct clu_conf_reader r;
	struct clu_storage_conf sc;
	size_t cap;
	size_t header_line[CLU_STORAGE_MAX]; /* per storage, for messages */
	struct clu_storage *cur;             /* open section or NULL */
	unsigned seen;                       /* 1u << enum opt in cur */
};

void clu_storage_conf_free(struct clu_storage_conf *sc)
{
	if (!sc)
		return;
	free(sc->items);
	sc->items = NULL;
	sc->n = 0;
}

const struct clu_storage *clu_storage_find(const struct clu_storage_conf *sc,
					   const char *id)
{
	for (size_t i = 0; i < sc->n; i++)
		if (!strcmp(sc->items[i].id, id))
			return &sc->items[i];
	return NULL;
}

/* Ends the open section: checks what must be there. */
static bool close_section(struct parse *p, struct err **errp)
{
	if (!p->cur)
		return true;
	if (!(p->seen & (1u << OPT_PATH)))
		return clu_conf_fail_at(&p->r, p->header_line[p->sc.n - 1], errp,
					"storage '%s' has no path", p->cur->id);
	p->cur = NULL;
	return true;
}

static bool header(struct parse *p, char *line, struct err **errp)
{
	char *colon = strchr(line, ':'), *type, *id;
	const struct clu_storage *dup;
	struct clu_storage *s;
	int t;

	if (!colon || colon == line || strcspn(line, " \t") < (size_t)(colon - line))
		return clu_conf_fail(&p->r, errp, "expected 'TYPE: ID', got '%s'",
				     CLU_Q(line));
	*colon = '\0';
	type = line;
	id = clu_conf_trim(colon + 1);
	if (!*id || strpbrk(id, " \t"))
		return clu_conf_fail(&p->r, errp, "expected 'TYPE: ID', got '%s: %s'",
				     CLU_Q(type), CLU_Q(id));
	t = clu_conf_lookup(clu_storage_type_names, CLU_STORAGE_TYPE_MAX, type);
	if (t < 0)
		return clu_conf_fail(&p->r, errp, "unsupported storage type '%s' "
				     "for storage '%s'", CLU_Q(type), CLU_Q(id));
	if (!clu_storage_id_valid(id))
		return clu_conf_fail(&p->r, errp, "invalid storage ID '%s' (expected "
				     "[a-z][a-z0-9_-]*, at most %d characters)",
				     CLU_Q(id), CLU_STORAGE_ID_MAX);
	dup = clu_storage_find(&p->sc, id);
	if (dup)
		return clu_conf_fail(&p->r, errp, "duplicate storage '%s' (first on line %zu)",
				     id, p->header_line[dup - p->sc.items]);
	if (p->sc.n == CLU_STORAGE_MAX)
		return clu_conf_fail(&p->r, errp, "too many storages (at most %d)",
				     CLU_STORAGE_MAX);
	if (p->sc.n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 8;
		struct clu_storage *items = reallocarray(p->sc.items, cap, sizeof(*items));

		if (!items)
			return err_set(errp, ERR_IO, "out of memory reading %s", p->r.file);
		p->sc.items = items;
		p->cap = cap;
	}
	s = &p->sc.items[p->sc.n];
	memset(s, 0, sizeof(*s));
	s->type = (enum clu_storage_type)t;
	strcpy(s->id, id);
	p->header_line[p->sc.n++] = p->r.line;
	p->cur = s;
	p->seen = 0;
	return true;
}

static bool opt_nodes(struct parse *p, char *v, struct err **errp)
{
	struct clu_storage *s = p->cur;
	char *node;

	while ((node = strsep(&v, ","))) {
		if (!clu_node_name_valid(node))
			return clu_conf_fail(&p->r, errp, "invalid node name '%s' for "
					     "storage '%s'", CLU_Q(node), s->id);
		for (size_t i = 0; i < s->n_nodes; i++)
			if (!strcmp(s->nodes[i], node))
				return clu_conf_fail(&p->r, errp, "duplicate node '%s' for "
						     "storage '%s'", node, s->id);
		if (s->n_nodes == CLU_STORAGE_NODES_MAX)
			return clu_conf_fail(&p->r, errp, "too many nodes for storage "
					     "'%s' (at most %d)", s->id, CLU_STORAGE_NODES_MAX);
		strcpy(s->nodes[s->n_nodes++], node);
	}
	return true;
}

static bool opt_content(struct parse *p, char *v, struct err **errp)
{
	struct clu_storage *s = p->cur;
	char *name;
	int c;

	while ((name = strsep(&v, ","))) {
		c = clu_conf_lookup(clu_content_names, CLU_CONTENT_MAX, name);
		if (c < 0)
			return clu_conf_fail(&p->r, errp, "unknown content type '%s' for "
					     "storage '%s'", CLU_Q(name), s->id);
		if (s->content & (1u << c))
			return clu_conf_fail(&p->r, errp, "duplicate content type '%s' for "
					     "storage '%s'", name, s->id);
		s->content |= 1u << c;
	}
	return true;
}

static bool flag(struct parse *p, const char *key, const char *v, bool *out,
		 struct err **errp)
{
	if (strcmp(v, "0") && strcmp(v, "1"))
		return clu_conf_fail(&p->r, errp, "invalid value '%s' for option '%s' "
				     "of storage '%s' (expected 0 or 1)", CLU_Q(v),
				     key, p->cur->id);
	*out = v[0] == '1';
	return true;
}

static bool option(struct parse *p, char *line, struct err **errp)
{
	struct clu_storage *s = p->cur;
	char *key = clu_conf_trim(line), *v;
	const char *why;
	int o;

	if (!s)
		return clu_conf_fail(&p->r, errp, "option '%s' outside of a storage "
				     "section", CLU_Q(key));
	v = key + strcspn(key, " \t");
	if (*v)
		*v++ = '\0';
	v = clu_conf_trim(v);
	o = clu_conf_lookup(opt_names, OPT_MAX, key);
	if (o < 0)
		return clu_conf_fail(&p->r, errp, "unknown option '%s' for storage '%s'",
				     CLU_Q(key), s->id);
	if (p->seen & (1u << o))
		return clu_conf_fail(&p->r, errp, "duplicate option '%s' for storage '%s'",
				     key, s->id);
	p->seen |= 1u << o;
	if (!*v && o != OPT_DISABLE)
		return clu_conf_fail(&p->r, errp, "missing value for option '%s' of "
				     "storage '%s'", key, s->id);
	switch ((enum opt)o) {
	case OPT_PATH:
		why = clu_conf_path_check(v);
		if (why)
			return clu_conf_fail(&p->r, errp, "invalid path '%s' for storage "
					     "'%s': %s", CLU_Q(v), s->id, why);
		strcpy(s->path, v);
		return true;
	case OPT_SHARED:
		return flag(p, key, v, &s->shared, errp);
	case OPT_NODES:
		return opt_nodes(p, v, errp);
	case OPT_CONTENT:
		return opt_content(p, v, errp);
	case OPT_DISABLE:
		return flag(p, key, *v ? v : "1", &s->disabled, errp);
	case OPT_MAX:
		break;
	}
	return false;
}

static bool parse_lines(struct parse *p, struct err **errp)
{
	int rc;

	while ((rc = clu_conf_reader_next(&p->r, errp)) > 0) {
		char *line = p->r.buf, *t = clu_conf_trim(line);

		if (!*t) {
			if (!close_section(p, errp))
				return false;
		} else if (*t == '#') {
			continue;
		} else if (line[0] == ' ' || line[0] == '\t') {
			if (!option(p, t, errp))
				return false;
		} else if (!close_section(p, errp) || !header(p, t, errp)) {
			return false;
		}
	}
	return rc == 0 && close_section(p, errp);
}

bool clu_storage_parse(const char *text, const char *file,
		       struct clu_storage_conf *out, struct err **errp)
{
	_cleanup_free_ struct parse *p = calloc(1, sizeof(*p));

	if (!p)
		return err_set(errp, ERR_IO, "out of memory reading %s", file);
	clu_conf_reader_init(&p->r, text, file);
	if (!parse_lines(p, errp)) {
		clu_storage_conf_free(&p->sc);
		return false;
	}
	*out = p->sc;
	return true;
}

bool clu_conf_load_storage(const char *path, struct clu_storage_conf *out,
			   struct err **errp)
{
	_cleanup_free_ char *text = clu_conf_read(path, errp);

	return text && clu_storage_parse(text, path, out, errp);
}

static bool storage_equal(const struct clu_storage *a, const struct clu_storage *b)
{
	if (a->type != b->type || strcmp(a->id, b->id) || strcmp(a->path, b->path) ||
	    a->shared != b->shared || a->disabled != b->disabled ||
	    a->content != b->content || a->n_nodes != b->n_nodes)
		return false;
	for (size_t i = 0; i < a->n_nodes && i < CLU_STORAGE_NODES_MAX; i++)
		if (strcmp(a->nodes[i], b->nodes[i]))
			return false;
	return true;
}

bool clu_storage_conf_equal(const struct clu_storage_conf *a,
			    const struct clu_storage_conf *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (!storage_equal(&a->items[i], &b->items[i]))
			return false;
	return true;
}

static void write_storage(FILE *f, const struct clu_storage *s)
{
	const char *sep = "";

	fprintf(f, "%s: %.*s\n", (unsigned)s->type < CLU_STORAGE_TYPE_MAX ?
		clu_storage_type_names[s->type] : "?", CLU_STORAGE_ID_MAX, s->id);
	fprintf(f, "\tpath %.*s\n", CLU_CONF_PATH_MAX, s->path);
	if (s->content) {
		fputs("\tcontent ", f);
		for (unsigned c = 0; c < CLU_CONTENT_MAX; c++) {
			if (s->content & (1u << c)) {
				fprintf(f, "%s%s", sep, clu_content_names[c]);
				sep = ",";
			}
		}
		fputc('\n', f);
	}
	if (s->n_nodes) {
		fputs("\tnodes ", f);
		for (size_t i = 0; i < s->n_nodes && i < CLU_STORAGE_NODES_MAX; i++)
			fprintf(f, "%s%.*s", i ? "," : "", CLU_NODE_NAME_MAX, s->nodes[i]);
		fputc('\n', f);
	}
	if (s->shared)
		fputs("\tshared 1\n", f);
	if (s->disabled)
		fputs("\tdisable\n", f);
}

char *clu_storage_format(const struct clu_storage_conf *sc, struct err **errp)
{
	_cleanup_free_ char *text = NULL;
	struct clu_storage_conf back = { 0 };
	struct err *sub = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	bool same;

	if (!f) {
		err_set(errp, ERR_IO, "out of memory formatting storage.cfg");
		return NULL;
	}
	for (size_t i = 0; i < sc->n; i++) {
		if (i)
			fputc('\n', f);
		write_storage(f, &sc->items[i]);
	}
	if (fclose(f) != 0 || !text) {
		err_set(errp, ERR_IO, "out of memory formatting storage.cfg");
		return NULL;
	}
	/* Never hand out a file that would read back differently. */
	if (!clu_storage_parse(text, "(formatted storage.cfg)", &back, &sub)) {
		err_prefix(sub, "cannot format storage.cfg");
		err_propagate(errp, &sub);
		return NULL;
	}
	same = clu_storage_conf_equal(sc, &back);
	clu_storage_conf_free(&back);
	if (!same) {
		err_set(errp, ERR_INVAL, "cannot format storage.cfg: "
			"the values do not read back the same");
		return NULL;
	}
	return TAKE_PTR(text);
}
