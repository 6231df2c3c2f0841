/*
 * clu_ccconf.c - corosync.conf: parse into the model of clu_ccconf.h, edit
 * the nodelist, format back. Two passes: the lines become a tree of
 * sections (syntax), then the tree becomes the model (meaning), so every
 * error of either kind names the line it comes from.
 */
#include "clu_ccconf.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small helpers ------------------------------------------------------ */

/* A value made safe for a one-line message: bytes outside printable ASCII
 * and ' become \xNN; cut after 64 bytes. */
struct quoted { char text[64 * 4 + 4]; };

static struct quoted quote(const char *s)
{
	struct quoted q;
	size_t o = 0;

	for (size_t i = 0; s[i]; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (i == 64) {
			memcpy(q.text + o, "...", 3);
			o += 3;
			break;
		}
		if (ch < 0x20 || ch > 0x7e || ch == '\'')
			o += (size_t)sprintf(q.text + o, "\\x%02x", ch);
		else
			q.text[o++] = (char)ch;
	}
	q.text[o] = '\0';
	return q;
}
#define Q(s) (quote(s).text)

static bool fail(struct err **errp, const char *file, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static bool fail(struct err **errp, const char *file, unsigned line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!file)
		return err_set(errp, ERR_INVAL, "%s", msg);
	if (line)
		return err_set(errp, ERR_INVAL, "%s:%u: %s", file, line, msg);
	return err_set(errp, ERR_INVAL, "%s: %s", file, msg);
}

static bool name_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '_' || ch == '-';
}

static bool name_valid(const char *s, size_t len)
{
	if (!len || len > CLU_CC_KEY_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!name_char(s[i]))
			return false;
	return true;
}

/* Characters allowed in a node name or address read from a file (a
 * superset of what vmcluster writes: hand-made files may use host names). */
static bool token_valid(const char *s, size_t max, const char *extra)
{
	size_t n = strlen(s);

	if (!n || n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!name_char(s[i]) && !strchr(extra, s[i]))
			return false;
	return true;
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s || strlen(s) > 20)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (v > max)
		return false;
	*out = v;
	return true;
}

static int lookup(const char *const *names, const char *s)
{
	for (int i = 0; names[i]; i++)
		if (!strcmp(names[i], s))
			return i;
	return -1;
}

/* ---- kept sections ---------------------------------------------------------- */

static void sec_free(struct clu_cc_section *s)
{
	for (size_t i = 0; i < s->nitems; i++) {
		free(s->items[i].key);
		free(s->items[i].value);
	}
	free(s->items);
	for (size_t i = 0; i < s->nsubs; i++)
		sec_free(&s->subs[i]);
	free(s->subs);
	free(s->name);
	memset(s, 0, sizeof(*s));
}

static bool sec_add_item(struct clu_cc_section *s, const char *key, const char *value,
			 unsigned line)
{
	struct clu_cc_item *n = realloc(s->items, (s->nitems + 1) * sizeof(*n));

	if (!n)
		return false;
	s->items = n;
	n[s->nitems] = (struct clu_cc_item){ strdup(key), strdup(value), line };
	if (!n[s->nitems].key || !n[s->nitems].value) {
		free(n[s->nitems].key);
		free(n[s->nitems].value);
		return false;
	}
	s->nitems++;
	return true;
}

/* A new empty subsection of s, or NULL (out of memory). */
static struct clu_cc_section *sec_add_sub(struct clu_cc_section *s, const char *name,
					  unsigned line)
{
	struct clu_cc_section *n = realloc(s->subs, (s->nsubs + 1) * sizeof(*n));
	char *copy = strdup(name);

	if (!n || !copy) {
		if (n)
			s->subs = n;
		free(copy);
		return NULL;
	}
	s->subs = n;
	memset(&n[s->nsubs], 0, sizeof(*n));
	n[s->nsubs].name = copy;
	n[s->nsubs].line = line;
	return &n[s->nsubs++];
}

static bool sec_copy_into(struct clu_cc_section *dst, const struct clu_cc_section *src)
{
	for (size_t i = 0; i < src->nitems; i++)
		if (!sec_add_item(dst, src->items[i].key, src->items[i].value, src->items[i].line))
			return false;
	for (size_t i = 0; i < src->nsubs; i++) {
		struct clu_cc_section *d = sec_add_sub(dst, src->subs[i].name, src->subs[i].line);

		if (!d || !sec_copy_into(d, &src->subs[i]))
			return false;
	}
	return true;
}

static bool sec_equal(const struct clu_cc_section *a, const struct clu_cc_section *b)
{
	if (a->nitems != b->nitems || a->nsubs != b->nsubs ||
	    strcmp(a->name ? a->name : "", b->name ? b->name : ""))
		return false;
	for (size_t i = 0; i < a->nitems; i++)
		if (strcmp(a->items[i].key, b->items[i].key) ||
		    strcmp(a->items[i].value, b->items[i].value))
			return false;
	for (size_t i = 0; i < a->nsubs; i++)
		if (!sec_equal(&a->subs[i], &b->subs[i]))
			return false;
	return true;
}

/* ---- pass 1: lines to a tree ------------------------------------------------ */

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		*--e = '\0';
	return s;
}

static bool read_tree(const char *text, const char *file, struct clu_cc_section *root,
		      struct err **errp)
{
	struct clu_cc_section *stack[CLU_CC_DEPTH + 1] = { root };
	unsigned depth = 0, line = 0;
	const char *p = text;
	char buf[CLU_CC_LINE_MAX + 2];

	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		char *s, *colon;

		line++;
		if (len && p[len - 1] == '\r')
			len--;
		if (len > CLU_CC_LINE_MAX)
			return fail(errp, file, line, "line longer than %d bytes", CLU_CC_LINE_MAX);
		memcpy(buf, p, len);
		buf[len] = '\0';
		p = nl ? nl + 1 : p + strlen(p);
		for (size_t i = 0; i < len; i++)
			if (((unsigned char)buf[i] < 0x20 && buf[i] != '\t') || buf[i] == 0x7f)
				return fail(errp, file, line, "control character \\x%02x",
					    (unsigned char)buf[i]);
		s = trim(buf);
		if (!*s || *s == '#')
			continue;
		if (!strcmp(s, "}")) {
			if (!depth)
				return fail(errp, file, line, "'}' without a section to close");
			depth--;
			continue;
		}
		if (s[strlen(s) - 1] == '{' && !strchr(s, ':')) {
			char *name;

			s[strlen(s) - 1] = '\0';
			name = trim(s);
			if (!name_valid(name, strlen(name)))
				return fail(errp, file, line, "invalid section name '%s'", Q(name));
			if (depth == CLU_CC_DEPTH)
				return fail(errp, file, line, "sections nested deeper than %d",
					    CLU_CC_DEPTH);
			stack[depth + 1] = sec_add_sub(stack[depth], name, line);
			if (!stack[depth + 1])
				return err_set(errp, ERR_IO, "out of memory");
			depth++;
			continue;
		}
		if (strchr(s, '{') || strchr(s, '}'))
			return fail(errp, file, line,
				    "'%s': '{' must end a line and '}' stand alone (one section or key per line)",
				    Q(s));
		colon = strchr(s, ':');
		if (!colon)
			return fail(errp, file, line, "expected 'key: value', 'name {' or '}', got '%s'",
				    Q(s));
		*colon = '\0';
		{
			char *key = trim(s), *value = trim(colon + 1);

			if (!name_valid(key, strlen(key)))
				return fail(errp, file, line, "invalid key '%s'", Q(key));
			if (!depth)
				return fail(errp, file, line, "key '%s' outside any section", key);
			if (strlen(value) > CLU_CC_VALUE_MAX)
				return fail(errp, file, line, "value of '%s' longer than %d bytes", key,
					    CLU_CC_VALUE_MAX);
			for (const char *v = value; *v; v++)
				if ((unsigned char)*v > 0x7e || *v == '\t')
					return fail(errp, file, line,
						    "value of '%s' holds a byte that is not printable ASCII: '%s'",
						    key, Q(value));
			if (!sec_add_item(stack[depth], key, value, line))
				return err_set(errp, ERR_IO, "out of memory");
		}
	}
	if (depth)
		return fail(errp, file, stack[depth]->line, "section '%s' is not closed",
			    stack[depth]->name);
	return true;
}

/* ---- pass 2: the tree to the model ------------------------------------------ */

struct ctx {
	const char *file;
	struct err **errp;
};

static const char *const transports[] = { "knet", "udp", "udpu", NULL };
static const char *const ciphers[] = { "none", "aes256", "aes192", "aes128", NULL };
static const char *const hashes[] = { "none", "md5", "sha1", "sha256", "sha384", "sha512", NULL };

/* Typed keys of a section are marked in *seen; a second one is an error. */
static bool once(struct ctx *x, const struct clu_cc_item *it, unsigned bit, unsigned *seen)
{
	if (*seen & (1u << bit))
		return fail(x->errp, x->file, it->line, "duplicate key '%s'", it->key);
	*seen |= 1u << bit;
	return true;
}

static bool number(struct ctx *x, const struct clu_cc_item *it, uint64_t min, uint64_t max,
		   uint64_t *out)
{
	if (!parse_u64(it->value, max, out) || *out < min)
		return fail(x->errp, x->file, it->line, "invalid %s '%s': must be %" PRIu64 " to %" PRIu64,
			    it->key, Q(it->value), min, max);
	return true;
}

static bool choice(struct ctx *x, const struct clu_cc_item *it, const char *const *names,
		   char *out, size_t len)
{
	if (lookup(names, it->value) < 0) {
		char list[128] = "";

		for (int i = 0; names[i]; i++)
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
				 i ? ", " : "", names[i]);
		return fail(x->errp, x->file, it->line, "invalid %s '%s': expected one of %s",
			    it->key, Q(it->value), list);
	}
	snprintf(out, len, "%s", it->value);
	return true;
}

static bool oom(struct ctx *x)
{
	return err_set(x->errp, ERR_IO, "out of memory");
}

static bool read_iface(struct ctx *x, struct clu_ccconf *c, const struct clu_cc_section *s)
{
	struct clu_cc_iface ifc = { .priority = -1 };
	unsigned seen = 0;
	uint64_t v;

	for (size_t i = 0; i < s->nitems; i++) {
		const struct clu_cc_item *it = &s->items[i];

		if (!strcmp(it->key, "linknumber")) {
			if (!once(x, it, 0, &seen) || !number(x, it, 0, CLU_CC_LINKS - 1, &v))
				goto fail;
			ifc.linknumber = (unsigned)v;
		} else if (!strcmp(it->key, "knet_link_priority")) {
			if (!once(x, it, 1, &seen) || !number(x, it, 0, 255, &v))
				goto fail;
			ifc.priority = (int)v;
		} else if (!sec_add_item(&ifc.extra, it->key, it->value, it->line)) {
			goto nomem;
		}
	}
	for (size_t i = 0; i < s->nsubs; i++) {
		struct clu_cc_section *d = sec_add_sub(&ifc.extra, s->subs[i].name, s->subs[i].line);

		if (!d || !sec_copy_into(d, &s->subs[i]))
			goto nomem;
	}
	for (unsigned i = 0; i < c->nifaces; i++)
		if (c->ifaces[i].linknumber == ifc.linknumber) {
			fail(x->errp, x->file, s->line, "duplicate interface for link %u", ifc.linknumber);
			goto fail;
		}
	c->ifaces[c->nifaces++] = ifc;
	return true;
nomem:
	oom(x);
fail:
	sec_free(&ifc.extra);
	return false;
}

static bool read_totem(struct ctx *x, struct clu_ccconf *c, const struct clu_cc_section *s)
{
	unsigned seen = 0;
	uint64_t v;

	for (size_t i = 0; i < s->nitems; i++) {
		const struct clu_cc_item *it = &s->items[i];

		if (!strcmp(it->key, "cluster_name")) {
			if (!once(x, it, 0, &seen))
				return false;
			if (!*it->value)
				return fail(x->errp, x->file, it->line, "empty cluster_name");
			snprintf(c->cluster_name, sizeof(c->cluster_name), "%s", it->value);
		} else if (!strcmp(it->key, "config_version")) {
			if (!once(x, it, 1, &seen) || !number(x, it, 0, UINT64_MAX, &c->config_version))
				return false;
		} else if (!strcmp(it->key, "transport")) {
			if (!once(x, it, 2, &seen) ||
			    !choice(x, it, transports, c->transport, sizeof(c->transport)))
				return false;
		} else if (!strcmp(it->key, "token")) {
			if (!once(x, it, 3, &seen) || !number(x, it, 1, UINT32_MAX, &v))
				return false;
			c->token = (uint32_t)v;
		} else if (!strcmp(it->key, "crypto_cipher")) {
			if (!once(x, it, 4, &seen) ||
			    !choice(x, it, ciphers, c->crypto_cipher, sizeof(c->crypto_cipher)))
				return false;
		} else if (!strcmp(it->key, "crypto_hash")) {
			if (!once(x, it, 5, &seen) ||
			    !choice(x, it, hashes, c->crypto_hash, sizeof(c->crypto_hash)))
				return false;
		} else if (!sec_add_item(&c->totem_extra, it->key, it->value, it->line)) {
			return oom(x);
		}
	}
	for (size_t i = 0; i < s->nsubs; i++) {
		if (!strcmp(s->subs[i].name, "interface")) {
			if (!read_iface(x, c, &s->subs[i]))
				return false;
		} else {
			struct clu_cc_section *d = sec_add_sub(&c->totem_extra, s->subs[i].name,
							       s->subs[i].line);
			if (!d || !sec_copy_into(d, &s->subs[i]))
				return oom(x);
		}
	}
	if (!c->cluster_name[0])
		return fail(x->errp, x->file, s->line, "totem section without cluster_name");
	return true;
}

/* "ring3_addr" -> 3; -1 if key is no ringN_addr. */
static int ring_of(const char *key)
{
	if (strncmp(key, "ring", 4) || key[4] < '0' || key[4] > '7' || strcmp(key + 5, "_addr"))
		return -1;
	return key[4] - '0';
}

static bool read_node(struct ctx *x, struct clu_cc_node *n, const struct clu_cc_section *s)
{
	unsigned seen = 0;
	uint64_t v;
	int ring;

	memset(n, 0, sizeof(*n));
	n->line = s->line;
	for (size_t i = 0; i < s->nitems; i++) {
		const struct clu_cc_item *it = &s->items[i];

		if (!strcmp(it->key, "name")) {
			if (!once(x, it, 0, &seen))
				return false;
			if (!token_valid(it->value, CLU_CC_NODE_NAME_MAX, "."))
				return fail(x->errp, x->file, it->line,
					    "invalid node name '%s': 1 to %d characters of A-Z, a-z, 0-9, '.', '_' and '-'",
					    Q(it->value), CLU_CC_NODE_NAME_MAX);
			snprintf(n->name, sizeof(n->name), "%s", it->value);
		} else if (!strcmp(it->key, "nodeid")) {
			if (!once(x, it, 1, &seen) || !number(x, it, 1, UINT32_MAX, &v))
				return false;
			n->nodeid = (uint32_t)v;
		} else if (!strcmp(it->key, "quorum_votes")) {
			if (!once(x, it, 2, &seen) || !number(x, it, 0, UINT32_MAX, &v))
				return false;
			n->has_votes = true;
			n->votes = (uint32_t)v;
		} else if ((ring = ring_of(it->key)) >= 0) {
			if (!once(x, it, 3 + (unsigned)ring, &seen))
				return false;
			if (!token_valid(it->value, CLU_CC_ADDR_MAX - 1, ".:%"))
				return fail(x->errp, x->file, it->line, "invalid %s '%s'", it->key,
					    Q(it->value));
			snprintf(n->addr[ring], sizeof(n->addr[ring]), "%s", it->value);
		} else if (!sec_add_item(&n->extra, it->key, it->value, it->line)) {
			return oom(x);
		}
	}
	for (size_t i = 0; i < s->nsubs; i++) {
		struct clu_cc_section *d = sec_add_sub(&n->extra, s->subs[i].name, s->subs[i].line);

		if (!d || !sec_copy_into(d, &s->subs[i]))
			return oom(x);
	}
	if (!n->name[0])
		return fail(x->errp, x->file, s->line, "node without a name");
	if (!(seen & 2))
		return fail(x->errp, x->file, s->line, "node '%s' without a nodeid", n->name);
	if (!(seen >> 3))
		return fail(x->errp, x->file, s->line, "node '%s' without a ring0_addr (or other ringN_addr)",
			    n->name);
	return true;
}

static unsigned node_links(const struct clu_cc_node *n)
{
	unsigned m = 0;

	for (unsigned l = 0; l < CLU_CC_LINKS; l++)
		if (n->addr[l][0])
			m |= 1u << l;
	return m;
}

static void fmt_links(unsigned mask, char *buf, size_t len)
{
	buf[0] = '\0';
	for (unsigned l = 0; l < CLU_CC_LINKS; l++)
		if (mask & (1u << l))
			snprintf(buf + strlen(buf), len - strlen(buf), "%s%u", buf[0] ? "," : "", l);
}

/* Two spellings of one address ("fd00::1", "fd00:0::1") count as one. */
static bool same_addr(const char *a, const char *b)
{
	unsigned char x[16], y[16];

	if (inet_pton(AF_INET, a, x) == 1 && inet_pton(AF_INET, b, y) == 1)
		return !memcmp(x, y, 4);
	if (inet_pton(AF_INET6, a, x) == 1 && inet_pton(AF_INET6, b, y) == 1)
		return !memcmp(x, y, 16);
	return !strcasecmp(a, b);
}

/* Why n cannot join the nodes of c (names, ids, addresses, links), or
 * true. file and line are for messages (file NULL: no prefix). */
static bool node_fits(const struct clu_ccconf *c, const struct clu_cc_node *n, const char *file,
		      unsigned line, struct err **errp)
{
	char want[32], have[32];

	for (size_t i = 0; i < c->nnodes; i++) {
		const struct clu_cc_node *o = &c->nodes[i];

		if (!strcmp(o->name, n->name))
			return fail(errp, file, line, "node name '%s' is already used (nodeid %" PRIu32 ")",
				    n->name, o->nodeid);
		if (o->nodeid == n->nodeid)
			return fail(errp, file, line, "nodeid %" PRIu32 " of node '%s' is already used by node '%s'",
				    n->nodeid, n->name, o->name);
		for (unsigned l = 0; l < CLU_CC_LINKS; l++)
			for (unsigned k = 0; k < CLU_CC_LINKS; k++)
				if (n->addr[l][0] && o->addr[k][0] && same_addr(n->addr[l], o->addr[k]))
					return fail(errp, file, line,
						    "address '%s' of node '%s' is already used by node '%s' (link %u)",
						    n->addr[l], n->name, o->name, k);
	}
	if (c->nnodes && node_links(n) != clu_ccconf_links(c)) {
		fmt_links(clu_ccconf_links(c), want, sizeof(want));
		fmt_links(node_links(n), have, sizeof(have));
		return fail(errp, file, line, "node '%s' has link(s) %s but the cluster uses link(s) %s",
			    n->name, have, want);
	}
	return true;
}

static bool append_node(struct clu_ccconf *c, const struct clu_cc_node *n)
{
	struct clu_cc_node *nn = realloc(c->nodes, (c->nnodes + 1) * sizeof(*nn));

	if (!nn)
		return false;
	c->nodes = nn;
	nn[c->nnodes++] = *n;
	return true;
}

static bool read_nodelist(struct ctx *x, struct clu_ccconf *c, const struct clu_cc_section *s)
{
	if (s->nitems)
		return fail(x->errp, x->file, s->items[0].line, "unexpected key '%s' in nodelist",
			    s->items[0].key);
	for (size_t i = 0; i < s->nsubs; i++) {
		struct clu_cc_node n;

		if (strcmp(s->subs[i].name, "node"))
			return fail(x->errp, x->file, s->subs[i].line,
				    "unexpected section '%s' in nodelist (expected node)",
				    s->subs[i].name);
		if (c->nnodes == CLU_CC_NODES_MAX)
			return fail(x->errp, x->file, s->subs[i].line, "more than %d nodes",
				    CLU_CC_NODES_MAX);
		if (!read_node(x, &n, &s->subs[i]) ||
		    !node_fits(c, &n, x->file, n.line, x->errp)) {
			sec_free(&n.extra);
			return false;
		}
		if (!append_node(c, &n)) {
			sec_free(&n.extra);
			return oom(x);
		}
	}
	return true;
}

static bool read_quorum(struct ctx *x, struct clu_ccconf *c, const struct clu_cc_section *s)
{
	unsigned seen = 0;

	c->has_quorum = true;
	for (size_t i = 0; i < s->nitems; i++) {
		const struct clu_cc_item *it = &s->items[i];

		if (!strcmp(it->key, "provider")) {
			if (!once(x, it, 0, &seen))
				return false;
			snprintf(c->quorum_provider, sizeof(c->quorum_provider), "%s", it->value);
		} else if (!sec_add_item(&c->quorum_extra, it->key, it->value, it->line)) {
			return oom(x);
		}
	}
	for (size_t i = 0; i < s->nsubs; i++) {
		struct clu_cc_section *d = sec_add_sub(&c->quorum_extra, s->subs[i].name,
						       s->subs[i].line);
		if (!d || !sec_copy_into(d, &s->subs[i]))
			return oom(x);
	}
	return true;
}

static bool read_model(struct ctx *x, struct clu_ccconf *c, const struct clu_cc_section *root)
{
	unsigned seen = 0, line[3] = { 0 };
	static const char *const known[] = { "totem", "nodelist", "quorum", NULL };

	for (size_t i = 0; i < root->nsubs; i++) {
		const struct clu_cc_section *s = &root->subs[i];
		int k = lookup(known, s->name);
		bool ok;

		if (k < 0) {
			struct clu_cc_section *d = sec_add_sub(&c->other, s->name, s->line);

			if (!d || !sec_copy_into(d, s))
				return oom(x);
			continue;
		}
		if (seen & (1u << k))
			return fail(x->errp, x->file, s->line, "duplicate section '%s' (first at line %u)",
				    s->name, line[k]);
		seen |= 1u << k;
		line[k] = s->line;
		ok = k == 0 ? read_totem(x, c, s) : k == 1 ? read_nodelist(x, c, s) : read_quorum(x, c, s);
		if (!ok)
			return false;
	}
	if (!(seen & 1))
		return fail(x->errp, x->file, 0, "no totem section");
	return true;
}

struct clu_ccconf *clu_ccconf_parse(const char *text, const char *file, struct err **errp)
{
	struct clu_cc_section root = { 0 };
	struct clu_ccconf *c = calloc(1, sizeof(*c));
	struct ctx x = { file, errp };
	bool ok;

	if (!c) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	ok = read_tree(text, file, &root, errp) && read_model(&x, c, &root);
	sec_free(&root);
	if (!ok) {
		clu_ccconf_free(c);
		return NULL;
	}
	return c;
}

struct clu_ccconf *clu_ccconf_load(const char *path, struct err **errp)
{
	_cleanup_free_ char *text = util_read_file(path, CLU_CC_FILE_MAX, errp);

	if (!text)
		return NULL;
	if (strlen(text) == CLU_CC_FILE_MAX) {
		err_set(errp, ERR_INVAL, "%s: larger than %u bytes", path, CLU_CC_FILE_MAX);
		return NULL;
	}
	return clu_ccconf_parse(text, path, errp);
}

void clu_ccconf_free(struct clu_ccconf *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < c->nifaces; i++)
		sec_free(&c->ifaces[i].extra);
	sec_free(&c->totem_extra);
	for (size_t i = 0; i < c->nnodes; i++)
		sec_free(&c->nodes[i].extra);
	free(c->nodes);
	sec_free(&c->quorum_extra);
	sec_free(&c->other);
	free(c);
}

/* ---- equality ------------------------------------------------------------------ */

static bool node_equal(const struct clu_cc_node *a, const struct clu_cc_node *b)
{
	if (strcmp(a->name, b->name) || a->nodeid != b->nodeid || a->has_votes != b->has_votes ||
	    (a->has_votes && a->votes != b->votes))
		return false;
	for (unsigned l = 0; l < CLU_CC_LINKS; l++)
		if (strcmp(a->addr[l], b->addr[l]))
			return false;
	return sec_equal(&a->extra, &b->extra);
}

bool clu_ccconf_equal(const struct clu_ccconf *a, const struct clu_ccconf *b)
{
	if (strcmp(a->cluster_name, b->cluster_name) || a->config_version != b->config_version ||
	    strcmp(a->transport, b->transport) || a->token != b->token ||
	    strcmp(a->crypto_cipher, b->crypto_cipher) || strcmp(a->crypto_hash, b->crypto_hash) ||
	    a->nifaces != b->nifaces || a->nnodes != b->nnodes || a->has_quorum != b->has_quorum ||
	    strcmp(a->quorum_provider, b->quorum_provider))
		return false;
	for (unsigned i = 0; i < a->nifaces; i++)
		if (a->ifaces[i].linknumber != b->ifaces[i].linknumber ||
		    a->ifaces[i].priority != b->ifaces[i].priority ||
		    !sec_equal(&a->ifaces[i].extra, &b->ifaces[i].extra))
			return false;
	for (size_t i = 0; i < a->nnodes; i++)
		if (!node_equal(&a->nodes[i], &b->nodes[i]))
			return false;
	return sec_equal(&a->totem_extra, &b->totem_extra) &&
	       sec_equal(&a->quorum_extra, &b->quorum_extra) && sec_equal(&a->other, &b->other);
}

/* ---- formatting ------------------------------------------------------------------ */

static void put(FILE *f, unsigned depth, const char *key, const char *value)
{
	fprintf(f, "%*s%s:%s%s\n", (int)depth * 2, "", key, *value ? " " : "", value);
}

static void put_u64(FILE *f, unsigned depth, const char *key, uint64_t v)
{
	fprintf(f, "%*s%s: %" PRIu64 "\n", (int)depth * 2, "", key, v);
}

static void put_body(FILE *f, unsigned depth, const struct clu_cc_section *s);

static void put_section(FILE *f, unsigned depth, const struct clu_cc_section *s)
{
	fprintf(f, "%*s%s {\n", (int)depth * 2, "", s->name);
	put_body(f, depth + 1, s);
	fprintf(f, "%*s}\n", (int)depth * 2, "");
}

static void put_body(FILE *f, unsigned depth, const struct clu_cc_section *s)
{
	for (size_t i = 0; i < s->nitems; i++)
		put(f, depth, s->items[i].key, s->items[i].value);
	for (size_t i = 0; i < s->nsubs; i++)
		put_section(f, depth, &s->subs[i]);
}

static void put_model(FILE *f, const struct clu_ccconf *c)
{
	fprintf(f, "totem {\n");
	put(f, 1, "cluster_name", c->cluster_name);
	put_u64(f, 1, "config_version", c->config_version);
	if (c->transport[0])
		put(f, 1, "transport", c->transport);
	if (c->token)
		put_u64(f, 1, "token", c->token);
	if (c->crypto_cipher[0])
		put(f, 1, "crypto_cipher", c->crypto_cipher);
	if (c->crypto_hash[0])
		put(f, 1, "crypto_hash", c->crypto_hash);
	for (size_t i = 0; i < c->totem_extra.nitems; i++)
		put(f, 1, c->totem_extra.items[i].key, c->totem_extra.items[i].value);
	for (unsigned i = 0; i < c->nifaces; i++) {
		fprintf(f, "  interface {\n");
		put_u64(f, 2, "linknumber", c->ifaces[i].linknumber);
		if (c->ifaces[i].priority >= 0)
			put_u64(f, 2, "knet_link_priority", (uint64_t)c->ifaces[i].priority);
		put_body(f, 2, &c->ifaces[i].extra);
		fprintf(f, "  }\n");
	}
	for (size_t i = 0; i < c->totem_extra.nsubs; i++)
		put_section(f, 1, &c->totem_extra.subs[i]);
	fprintf(f, "}\n");
	if (c->nnodes) {
		fprintf(f, "\nnodelist {\n");
		for (size_t i = 0; i < c->nnodes; i++) {
			const struct clu_cc_node *n = &c->nodes[i];

			fprintf(f, "%s  node {\n", i ? "\n" : "");
			put(f, 2, "name", n->name);
			put_u64(f, 2, "nodeid", n->nodeid);
			if (n->has_votes)
				put_u64(f, 2, "quorum_votes", n->votes);
			for (unsigned l = 0; l < CLU_CC_LINKS; l++)
				if (n->addr[l][0])
					fprintf(f, "    ring%u_addr: %s\n", l, n->addr[l]);
			put_body(f, 2, &n->extra);
			fprintf(f, "  }\n");
		}
		fprintf(f, "}\n");
	}
	if (c->has_quorum) {
		fprintf(f, "\nquorum {\n");
		if (c->quorum_provider[0])
			put(f, 1, "provider", c->quorum_provider);
		put_body(f, 1, &c->quorum_extra);
		fprintf(f, "}\n");
	}
	for (size_t i = 0; i < c->other.nsubs; i++) {
		fprintf(f, "\n");
		put_section(f, 0, &c->other.subs[i]);
	}
}

char *clu_ccconf_format(const struct clu_ccconf *c, struct err **errp)
{
	_cleanup_(clu_ccconf_freep) struct clu_ccconf *back = NULL;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	struct err *e = NULL;

	if (!f) {
		err_set_errno(errp, errno, "open_memstream");
		return NULL;
	}
	put_model(f, c);
	if (fclose(f) != 0 || !text) {
		free(text);
		err_set(errp, ERR_IO, "out of memory formatting corosync.conf");
		return NULL;
	}
	back = clu_ccconf_parse(text, "corosync.conf (formatted)", &e);
	if (!back || !clu_ccconf_equal(c, back)) {
		err_set(errp, ERR_INVAL, "cannot format this configuration faithfully%s%s",
			e ? ": " : "", e ? e->msg : "");
		err_free(e);
		free(text);
		return NULL;
	}
	return text;
}

/* ---- building and editing ------------------------------------------------------------ */

bool clu_cc_cluster_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > CLU_CC_CLUSTER_NAME_MAX || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(s[i] >= 'a' && s[i] <= 'z') && !(s[i] >= 'A' && s[i] <= 'Z') &&
		    !(s[i] >= '0' && s[i] <= '9') && s[i] != '-')
			return false;
	return true;
}

bool clu_cc_node_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > CLU_CC_NODE_NAME_MAX || s[0] == '-' || s[n - 1] == '-')
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

const char *clu_cc_addr_check(const char *s)
{
	unsigned char a[16];

	if (strlen(s) >= CLU_CC_ADDR_MAX)
		return "too long";
	if (inet_pton(AF_INET, s, a) == 1) {
		if (a[0] == 0 && !a[1] && !a[2] && !a[3])
			return "the unspecified address reaches no node";
		if (a[0] == 127)
			return "a loopback address cannot reach other nodes";
		if (a[0] >= 224)
			return "not a unicast address";
		return NULL;
	}
	if (inet_pton(AF_INET6, s, a) == 1) {
		static const unsigned char zero[16], one[16] = { [15] = 1 };

		if (!memcmp(a, zero, 16))
			return "the unspecified address reaches no node";
		if (!memcmp(a, one, 16))
			return "a loopback address cannot reach other nodes";
		if (a[0] == 0xff)
			return "not a unicast address";
		return NULL;
	}
	return "not an IPv4 or IPv6 address";
}

struct clu_ccconf *clu_ccconf_new(const char *cluster_name, uint32_t token, struct err **errp)
{
	struct clu_ccconf *c;
	struct clu_cc_section *log;

	if (!clu_cc_cluster_name_valid(cluster_name)) {
		err_set(errp, ERR_INVAL,
			"invalid cluster name '%s': 1 to %d characters of A-Z, a-z, 0-9 and '-', not starting with '-'",
			Q(cluster_name), CLU_CC_CLUSTER_NAME_MAX);
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	snprintf(c->cluster_name, sizeof(c->cluster_name), "%s", cluster_name);
	c->config_version = 1;
	strcpy(c->transport, "knet");
	c->token = token;
	strcpy(c->crypto_cipher, "aes256");
	strcpy(c->crypto_hash, "sha256");
	c->has_quorum = true;
	strcpy(c->quorum_provider, "corosync_votequorum");
	if (!sec_add_item(&c->totem_extra, "version", "2", 0) ||
	    !sec_add_item(&c->totem_extra, "ip_version", "ipv4-6", 0) ||
	    !sec_add_item(&c->totem_extra, "link_mode", "passive", 0) ||
	    !(log = sec_add_sub(&c->other, "logging", 0)) ||
	    !sec_add_item(log, "debug", "off", 0) || !sec_add_item(log, "to_syslog", "yes", 0) ||
	    !sec_add_item(log, "to_logfile", "yes", 0) ||
	    !sec_add_item(log, "logfile", "/var/log/corosync/corosync.log", 0) ||
	    !sec_add_item(log, "timestamp", "on", 0)) {
		clu_ccconf_free(c);
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	return c;
}

const struct clu_cc_iface *clu_ccconf_iface(const struct clu_ccconf *c, unsigned link)
{
	for (unsigned i = 0; i < c->nifaces; i++)
		if (c->ifaces[i].linknumber == link)
			return &c->ifaces[i];
	return NULL;
}

bool clu_ccconf_set_link(struct clu_ccconf *c, unsigned link, int priority, struct err **errp)
{
	struct clu_cc_iface *ifc = (struct clu_cc_iface *)clu_ccconf_iface(c, link);

	if (link >= CLU_CC_LINKS)
		return err_set(errp, ERR_INVAL, "invalid link %u: must be 0 to %d", link,
			       CLU_CC_LINKS - 1);
	if (priority < -1 || priority > 255)
		return err_set(errp, ERR_INVAL, "invalid priority %d for link %u: must be 0 to 255",
			       priority, link);
	if (!ifc) {
		ifc = &c->ifaces[c->nifaces++];
		memset(ifc, 0, sizeof(*ifc));
		ifc->linknumber = link;
	}
	ifc->priority = priority;
	return true;
}

unsigned clu_ccconf_links(const struct clu_ccconf *c)
{
	return c->nnodes ? node_links(&c->nodes[0]) : 0;
}

const struct clu_cc_node *clu_ccconf_find_node(const struct clu_ccconf *c, const char *name)
{
	for (size_t i = 0; i < c->nnodes; i++)
		if (!strcmp(c->nodes[i].name, name))
			return &c->nodes[i];
	return NULL;
}

bool clu_ccconf_add_node(struct clu_ccconf *c, const struct clu_cc_node *n, uint32_t *nodeid,
			 struct err **errp)
{
	struct clu_cc_node copy;
	const char *why;

	if (!clu_cc_node_name_valid(n->name))
		return err_set(errp, ERR_INVAL,
			       "invalid node name '%s': 1 to %d characters of a-z, 0-9 and '-', not starting or ending with '-'",
			       Q(n->name), CLU_CC_NODE_NAME_MAX);
	if (c->nnodes == CLU_CC_NODES_MAX)
		return err_set(errp, ERR_STATE, "the cluster has %d nodes already", CLU_CC_NODES_MAX);
	copy = *n;
	memset(&copy.extra, 0, sizeof(copy.extra));
	copy.line = 0;
	if (!node_links(&copy))
		return err_set(errp, ERR_INVAL, "node '%s' has no link address", copy.name);
	for (unsigned l = 0; l < CLU_CC_LINKS; l++)
		if (copy.addr[l][0] && (why = clu_cc_addr_check(copy.addr[l])))
			return err_set(errp, ERR_INVAL, "invalid link %u address '%s': %s", l,
				       Q(copy.addr[l]), why);
	if (!copy.nodeid) {
		for (uint32_t id = 1; !copy.nodeid; id++) {
			bool used = false;

			for (size_t i = 0; i < c->nnodes && !used; i++)
				used = c->nodes[i].nodeid == id;
			if (!used)
				copy.nodeid = id;
		}
	}
	if (!node_fits(c, &copy, NULL, 0, errp))
		return false;
	if (!append_node(c, &copy))
		return err_set(errp, ERR_IO, "out of memory");
	*nodeid = copy.nodeid;
	return true;
}

bool clu_ccconf_remove_node(struct clu_ccconf *c, const char *name, struct err **errp)
{
	for (size_t i = 0; i < c->nnodes; i++) {
		if (strcmp(c->nodes[i].name, name))
			continue;
		sec_free(&c->nodes[i].extra);
		memmove(&c->nodes[i], &c->nodes[i + 1], (c->nnodes - i - 1) * sizeof(c->nodes[0]));
		c->nnodes--;
		return true;
	}
	return err_set(errp, ERR_NOTFOUND, "unknown node '%s'", Q(name));
}

void clu_ccconf_bump(struct clu_ccconf *c)
{
	c->config_version++;
}
