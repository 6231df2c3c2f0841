/*
 * tp_jsonl.c - newline-framed JSON objects from a byte stream.
 *
 * QEMU writes each monitor message as one JSON object followed by "\r\n",
 * and JSON strings cannot hold a raw newline, so a newline always ends a
 * message. Framing on it (instead of feeding json-c's tokener byte by
 * byte) keeps a parse error local to one message and lets us bound a
 * message's size before parsing it.
 */
#include "tp.h"
#include "../common/util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deep enough for any QMP reply (query-block nests backing chains). */
#define JSONL_MAX_DEPTH 256

void tp_jsonl_init(struct tp_jsonl *r, size_t max_msg)
{
	memset(r, 0, sizeof(*r));
	r->max = max_msg ? max_msg : TP_JSONL_DEFAULT_MAX;
}

void tp_jsonl_free(struct tp_jsonl *r)
{
	free(r->buf);
	memset(r, 0, sizeof(*r));
}

size_t tp_jsonl_pending(const struct tp_jsonl *r)
{
	return r->len - r->start;
}

/* Drops consumed bytes so the buffer does not grow with the stream. */
static void compact(struct tp_jsonl *r)
{
	if (!r->start)
		return;
	memmove(r->buf, r->buf + r->start, r->len - r->start);
	r->consumed += r->start;
	r->len -= r->start;
	r->scan -= r->start;
	r->start = 0;
}

bool tp_jsonl_feed(struct tp_jsonl *r, const void *data, size_t len,
		   struct err **errp)
{
	if (r->broken)
		return err_set(errp, ERR_PROTO, "QMP stream already failed");
	if (!len)
		return true;
	compact(r);
	if (r->len + len > r->cap) {
		size_t cap = r->cap ? r->cap : 4096;
		char *nb;

		while (cap < r->len + len)
			cap *= 2;
		nb = realloc(r->buf, cap);
		if (!nb)
			return err_set(errp, ERR_IO, "out of memory for a %zu-byte QMP message",
				       r->len + len);
		r->buf = nb;
		r->cap = cap;
	}
	memcpy(r->buf + r->len, data, len);
	r->len += len;
	return true;
}

/* A printable excerpt of bad input for the error message. */
static void excerpt(const char *p, size_t n, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 5 < outlen; i++) {
		unsigned char c = (unsigned char)p[i];
		if (isprint(c) && c != '\'')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
	}
	out[o] = '\0';
}

static bool is_blank(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isspace((unsigned char)p[i]))
			return false;
	return true;
}

static int fail(struct tp_jsonl *r, struct err **errp, const char *what,
		const char *p, size_t n, uint64_t at)
{
	char ex[200];

	excerpt(p, n < 48 ? n : 48, ex, sizeof(ex));
	r->broken = true;
	err_set(errp, ERR_PROTO, "malformed QMP message at byte %llu: %s: '%s%s'",
		(unsigned long long)at, what, ex, n > 48 ? "..." : "");
	return -1;
}

/* Parses exactly one JSON object spanning [p, p+n). */
static int parse_line(struct tp_jsonl *r, const char *p, size_t n,
		      struct json_object **out, struct err **errp)
{
	uint64_t at = r->consumed + (uint64_t)(p - r->buf);
	struct json_tokener *tok;
	struct json_object *obj;
	enum json_tokener_error jerr;
	size_t end;

	if (n > (size_t)INT32_MAX)
		return fail(r, errp, "message too large", p, n, at);
	tok = json_tokener_new_ex(JSONL_MAX_DEPTH);
	if (!tok)
		return fail(r, errp, "out of memory", p, n, at);
	/* Strict mode refuses what QEMU never sends (e.g. bare control bytes). */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	obj = json_tokener_parse_ex(tok, p, (int)n);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (jerr == json_tokener_continue) {
		json_object_put(obj);
		return fail(r, errp, "incomplete JSON before end of line", p, n, at);
	}
	if (jerr != json_tokener_success || !obj) {
		json_object_put(obj);
		return fail(r, errp, jerr != json_tokener_success ?
			    json_tokener_error_desc(jerr) : "null message", p, n, at);
	}
	if (!is_blank(p + end, n - end)) {
		json_object_put(obj);
		return fail(r, errp, "trailing bytes after JSON", p + end, n - end,
			    at + end);
	}
	if (!json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		return fail(r, errp, "not a JSON object", p, n, at);
	}
	*out = obj;
	return 1;
}

int tp_jsonl_next(struct tp_jsonl *r, struct json_object **out,
		  struct err **errp)
{
	*out = NULL;
	if (r->broken) {
		err_set(errp, ERR_PROTO, "QMP stream already failed");
		return -1;
	}
	/* Nothing fed yet: buf is NULL, and NULL + 0 is undefined. */
	if (!r->buf)
		return 0;
	for (;;) {
		char *nl = r->scan < r->len ?
				   memchr(r->buf + r->scan, '\n', r->len - r->scan) : NULL;
		char *line = r->buf + r->start;
		size_t n;

		if (!nl) {
			r->scan = r->len;
			if (r->len - r->start > r->max)
				return fail(r, errp, "message exceeds the size limit",
					    line, r->len - r->start,
					    r->consumed + r->start);
			return 0;
		}
		n = (size_t)(nl - line);
		r->start = r->scan = (size_t)(nl - r->buf) + 1;
		if (n > r->max)
			return fail(r, errp, "message exceeds the size limit", line, n,
				    r->consumed + (uint64_t)(line - r->buf));
		if (is_blank(line, n))
			continue;
		return parse_line(r, line, n, out, errp);
	}
}
