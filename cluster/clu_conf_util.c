/*
 * clu_conf_util.c - what the config parsers share: a line reader that
 * bounds and vets each line, "FILE:LINE: " errors, safe quoting of bad
 * values, numbers, names and paths.
 */
#include "clu_conf.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void clu_conf_reader_init(struct clu_conf_reader *r, const char *text,
			  const char *file)
{
	r->file = file ? file : "(config)";
	r->next = text;
	r->line = 0;
	r->buf[0] = '\0';
}

int clu_conf_reader_next(struct clu_conf_reader *r, struct err **errp)
{
	const char *p = r->next, *nl;
	size_t n;

	if (!p || !*p)
		return 0;
	r->line++;
	nl = strchr(p, '\n');
	n = nl ? (size_t)(nl - p) : strlen(p);
	r->next = nl ? nl + 1 : NULL;
	if (n && p[n - 1] == '\r')
		n--;
	if (n > CLU_CONF_LINE_MAX) {
		clu_conf_fail(r, errp, "line too long (more than %d bytes)",
			      CLU_CONF_LINE_MAX);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			clu_conf_fail(r, errp, "control character \\x%02x in line", c);
			return -1;
		}
	}
	memcpy(r->buf, p, n);
	r->buf[n] = '\0';
	return 1;
}

static bool fail_va(const struct clu_conf_reader *r, size_t line,
		    struct err **errp, const char *fmt, va_list ap)
{
	_cleanup_free_ char *msg = NULL;

	if (!errp || *errp)
		return false;
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	return err_set(errp, ERR_INVAL, "%s:%zu: %s", r->file, line,
		       msg ? msg : "out of memory while reporting an error");
}

bool clu_conf_fail(const struct clu_conf_reader *r, struct err **errp,
		   const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fail_va(r, r->line, errp, fmt, ap);
	va_end(ap);
	return false;
}

bool clu_conf_fail_at(const struct clu_conf_reader *r, size_t line,
		      struct err **errp, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fail_va(r, line, errp, fmt, ap);
	va_end(ap);
	return false;
}

bool clu_conf_fail_sub(const struct clu_conf_reader *r, struct err **errp,
		       struct err *sub)
{
	err_prefix(sub, "%s:%zu", r->file, r->line);
	err_propagate(errp, &sub);
	return false;
}

struct clu_conf_quoted clu_conf_quote(const char *s)
{
	struct clu_conf_quoted q;
	size_t o = 0, i;

	for (i = 0; s[i] && i < CLU_CONF_QUOTE_MAX; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7f && c != '\'')
			q.text[o++] = (char)c;
		else
			o += (size_t)snprintf(q.text + o, sizeof(q.text) - o, "\\x%02x", c);
	}
	if (s[i]) {
		memcpy(q.text + o, "...", 3);
		o += 3;
	}
	q.text[o] = '\0';
	return q;
}

char *clu_conf_trim(char *s)
{
	size_t n;

	while (*s == ' ' || *s == '\t')
		s++;
	n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = '\0';
	return s;
}

bool clu_conf_split_kv(const struct clu_conf_reader *r, char *line,
		       char **key, char **value, struct err **errp)
{
	char *colon = strchr(line, ':');

	if (!colon || colon == line || strcspn(line, " \t") < (size_t)(colon - line))
		return clu_conf_fail(r, errp, "expected 'key: value', got '%s'",
				     CLU_Q(line));
	*colon = '\0';
	*key = line;
	*value = clu_conf_trim(colon + 1);
	if (!**value)
		return clu_conf_fail(r, errp, "missing value for '%s'", CLU_Q(*key));
	return true;
}

bool clu_conf_u64(const char *s, uint64_t min, uint64_t max, const char *what,
		  uint64_t *out, struct err **errp)
{
	size_t digits = strspn(s, "0123456789");
	uint64_t v;

	if (!digits || s[digits])
		return err_set(errp, ERR_INVAL, "invalid %s '%s': not a number",
			       what, CLU_Q(s));
	if (!util_parse_u64(s, min, max, what, &v, NULL))
		return err_set(errp, ERR_INVAL,
			       "invalid %s '%s': must be between %" PRIu64
			       " and %" PRIu64, what, CLU_Q(s), min, max);
	*out = v;
	return true;
}

bool clu_conf_bool(const char *s, const char *what, bool *out,
		   struct err **errp)
{
	if (strcmp(s, "0") && strcmp(s, "1"))
		return err_set(errp, ERR_INVAL, "invalid %s '%s': expected 0 or 1",
			       what, CLU_Q(s));
	*out = s[0] == '1';
	return true;
}

bool clu_conf_next_opt(char **cursor, char **key, char **value)
{
	char *piece = strsep(cursor, ","), *eq;

	if (!piece)
		return false;
	eq = strchr(piece, '=');
	if (eq) {
		*eq = '\0';
		*key = piece;
		*value = eq + 1;
	} else {
		*key = NULL;
		*value = piece;
	}
	return true;
}

int clu_conf_lookup(const char *const *names, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (names[i] && !strcmp(names[i], s))
			return (int)i;
	return -1;
}

bool clu_conf_copy(char *dst, size_t len, const char *s)
{
	size_t n = strlen(s);

	if (n >= len)
		return false;
	memcpy(dst, s, n + 1);
	return true;
}

static bool name_valid(const char *s, const char *first, const char *rest,
		       size_t max)
{
	size_t n = strlen(s);

	return n && n <= max && strchr(first, s[0]) &&
	       strspn(s, rest) == n;
}

#define LOWER "abcdefghijklmnopqrstuvwxyz"
#define DIGIT "0123456789"

bool clu_storage_id_valid(const char *s)
{
	return name_valid(s, LOWER, LOWER DIGIT "_-", CLU_STORAGE_ID_MAX);
}

bool clu_node_name_valid(const char *s)
{
	return name_valid(s, LOWER DIGIT, LOWER DIGIT "-", CLU_NODE_NAME_MAX);
}

const char *clu_conf_path_check(const char *s)
{
	static const char ok[] = LOWER DIGIT "ABCDEFGHIJKLMNOPQRSTUVWXYZ._+/-";
	size_t n = strlen(s);

	if (s[0] != '/')
		return "not an absolute path";
	if (n > CLU_CONF_PATH_MAX)
		return "path too long";
	if (strspn(s, ok) != n)
		return "only letters, digits and ._+/- are allowed";
	for (const char *c = s; c; c = strchr(c + 1, '/')) {
		size_t len = strcspn(c + 1, "/");

		if ((len == 1 && c[1] == '.') ||
		    (len == 2 && c[1] == '.' && c[2] == '.'))
			return "'.' and '..' components are not allowed";
	}
	return NULL;
}

char *clu_conf_read(const char *path, struct err **errp)
{
	_cleanup_free_ char *text = util_read_file(path, CLU_CONF_FILE_MAX + 1, errp);
	struct stat st;
	size_t n;

	if (!text)
		return NULL;
	n = strlen(text);
	if (n > CLU_CONF_FILE_MAX) {
		err_set(errp, ERR_INVAL, "%s: file too large (more than %u bytes)",
			path, CLU_CONF_FILE_MAX);
		return NULL;
	}
	/* util_read_file gives no length: a NUL byte would silently end the
	 * text, so compare with the size of the file. */
	if (stat(path, &st) < 0) {
		err_set_errno(errp, errno, "cannot stat '%s'", path);
		return NULL;
	}
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size != n) {
		err_set(errp, ERR_INVAL,
			"%s: file holds a NUL byte or changed while being read", path);
		return NULL;
	}
	return TAKE_PTR(text);
}
