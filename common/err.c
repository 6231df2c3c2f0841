/* err.c - see err.h for the contract. */
#include "err.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const code_names[] = {
	[ERR_OK] = "ok",
	[ERR_INVAL] = "invalid",
	[ERR_NOTFOUND] = "not-found",
	[ERR_IO] = "io",
	[ERR_PROTO] = "protocol",
	[ERR_CLOSED] = "closed",
	[ERR_TIMEOUT] = "timeout",
	[ERR_QMP] = "qmp",
	[ERR_CHILD] = "child",
	[ERR_STATE] = "state",
	[ERR_CONFLICT] = "conflict",
};
_Static_assert(ARRAY_SIZE(code_names) == ERR_CODE_MAX, "code_names");

const char *err_code_name(enum err_code code)
{
	if ((unsigned)code >= ERR_CODE_MAX)
		return "unknown";
	return code_names[code];
}

/* Builds the error; a failed allocation still yields a usable error. */
static struct err *err_new(enum err_code code, int errnum, const char *cls,
			   const char *fmt, va_list ap)
{
	struct err *e = calloc(1, sizeof(*e));

	if (!e)
		abort(); /* nothing sensible can be reported without memory */
	e->code = code;
	e->errnum = errnum;
	if (vasprintf(&e->msg, fmt, ap) < 0)
		e->msg = NULL;
	if (!e->msg)
		e->msg = strdup("out of memory while reporting an error");
	if (cls)
		e->qmp_class = strdup(cls);
	return e;
}

bool err_set(struct err **errp, enum err_code code, const char *fmt, ...)
{
	va_list ap;

	if (!errp || *errp)
		return false;
	va_start(ap, fmt);
	*errp = err_new(code, 0, NULL, fmt, ap);
	va_end(ap);
	return false;
}

bool err_set_errno(struct err **errp, int errnum, const char *fmt, ...)
{
	va_list ap;
	char *m;

	if (!errp || *errp)
		return false;
	va_start(ap, fmt);
	*errp = err_new(ERR_IO, errnum, NULL, fmt, ap);
	va_end(ap);
	if (asprintf(&m, "%s: %s", (*errp)->msg, strerror(errnum)) >= 0) {
		free((*errp)->msg);
		(*errp)->msg = m;
	}
	return false;
}

bool err_set_qmp(struct err **errp, const char *cls, const char *desc,
		 const char *fmt, ...)
{
	va_list ap;
	char *m;

	if (!errp || *errp)
		return false;
	va_start(ap, fmt);
	*errp = err_new(ERR_QMP, 0, cls ? cls : "GenericError", fmt, ap);
	va_end(ap);
	if (asprintf(&m, "%s: %s", (*errp)->msg, desc ? desc : "(no description)") >= 0) {
		free((*errp)->msg);
		(*errp)->msg = m;
	}
	return false;
}

void err_prefix(struct err *e, const char *fmt, ...)
{
	va_list ap;
	char *p = NULL, *m;

	if (!e)
		return;
	va_start(ap, fmt);
	if (vasprintf(&p, fmt, ap) < 0)
		p = NULL;
	va_end(ap);
	if (p && asprintf(&m, "%s: %s", p, e->msg) >= 0) {
		free(e->msg);
		e->msg = m;
	}
	free(p);
}

void err_propagate(struct err **dst, struct err **src)
{
	if (!src || !*src)
		return;
	if (dst && !*dst)
		*dst = *src;
	else
		err_free(*src);
	*src = NULL;
}

void err_free(struct err *e)
{
	if (!e)
		return;
	free(e->msg);
	free(e->qmp_class);
	free(e);
}
