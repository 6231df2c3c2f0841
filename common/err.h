/*
 * err.h - the one error type of vmmigrate.
 *
 * Contract (after QEMU's Error rules):
 *  - Functions that can fail take `struct err **errp` as their last
 *    parameter and return bool / pointer / negative to say they failed.
 *  - On failure they set *errp exactly once; on success they never touch it.
 *  - The first error wins: err_set() on an already-set *errp keeps the old
 *    one, so rollback code may call fallible functions with the caller's
 *    errp without overwriting the reason the operation failed.
 *  - errp may be NULL: the error is then discarded.
 *  - The caller owns a returned error and frees it with err_free().
 *
 * Foreign errors are converted at the edge and keep their text: QMP errors
 * carry QEMU's class in `qmp_class` and its description in `msg`.
 */
#ifndef VMM_ERR_H
#define VMM_ERR_H

#include <stdbool.h>

enum err_code {
	ERR_OK = 0,
	ERR_INVAL,     /* bad input from the user or a caller */
	ERR_NOTFOUND,  /* a named thing does not exist */
	ERR_IO,        /* a system call failed; errnum says why */
	ERR_PROTO,     /* the peer broke the protocol (malformed message) */
	ERR_CLOSED,    /* the peer closed the connection */
	ERR_TIMEOUT,   /* a deadline passed */
	ERR_QMP,       /* QEMU answered a command with an error */
	ERR_CHILD,     /* a child process failed */
	ERR_STATE,     /* the operation is not valid in the current state */
	ERR_CONFLICT,  /* lost a race: the key exists, or changed since it was read */
	ERR_CODE_MAX
};

struct err {
	enum err_code code;
	int errnum;      /* errno when code == ERR_IO, else 0 */
	char *qmp_class; /* QEMU's error class when code == ERR_QMP, else NULL */
	char *msg;       /* one line, no trailing newline, never NULL */
};

/* Sets *errp unless it is NULL or already set. Always returns false so that
 * `return err_set(errp, ...)` reads naturally in bool functions. */
bool err_set(struct err **errp, enum err_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* As err_set, with errnum = errno and ": strerror(errno)" appended. */
bool err_set_errno(struct err **errp, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A QMP error reply: class and description as QEMU sent them. */
bool err_set_qmp(struct err **errp, const char *cls, const char *desc,
		 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Puts a context prefix in front of an error's message: "prefix: msg". */
void err_prefix(struct err *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Moves *src into *dst if *dst is unset; else frees *src. *src becomes NULL. */
void err_propagate(struct err **dst, struct err **src);

const char *err_code_name(enum err_code code);

void err_free(struct err *e);

#endif
