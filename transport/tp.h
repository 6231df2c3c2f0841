/*
 * tp.h - transport: how vmmigrate talks to QEMU and to other nodes.
 *
 * This header is the only one other folders include from transport/.
 *
 * QMP client (tp_qmp.c)
 *   A connection to one QEMU monitor socket. Not thread-safe: one thread
 *   drives a connection at a time. Every blocking call takes a timeout in
 *   milliseconds (negative = wait forever) and fails with ERR_TIMEOUT when it
 *   passes. A connection that saw a protocol error, a closed socket or an
 *   I/O error is broken: every later call fails fast with the same error.
 *   A timed-out call does not break the connection; its late reply is
 *   recognised by id and dropped.
 *   Asynchronous events read while waiting for a reply are queued (oldest
 *   dropped beyond TP_QMP_MAX_EVENTS) and handed out by tp_qmp_wait_event()
 *   and tp_qmp_pop_event().
 *   Ownership: returned json_objects belong to the caller (json_object_put);
 *   `args` passed to tp_qmp_call() is always consumed, also on failure.
 *
 * JSON-lines reader (tp_jsonl.c)
 *   Splits a byte stream into newline-terminated JSON objects, as QEMU's
 *   monitor writes them; copes with messages split across reads and several
 *   messages per read, bounds the size of one message, and rejects
 *   malformed JSON, non-object messages and trailing garbage with an error
 *   that shows the offending bytes. After an error the reader stays broken.
 */
#ifndef VMM_TP_H
#define VMM_TP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "../common/err.h"

/* ---- JSON-lines reader ---------------------------------------------- */

#define TP_JSONL_DEFAULT_MAX (64u << 20) /* one message, bytes */

struct tp_jsonl {
	char *buf;
	size_t len;    /* bytes held */
	size_t cap;
	size_t start;  /* first byte of the current message */
	size_t scan;   /* bytes before this are known to hold no newline */
	size_t max;    /* largest message accepted */
	uint64_t consumed; /* stream offset of buf[0], for error messages */
	bool broken;
};

void tp_jsonl_init(struct tp_jsonl *r, size_t max_msg);
void tp_jsonl_free(struct tp_jsonl *r);
/* Appends bytes read from the stream. */
bool tp_jsonl_feed(struct tp_jsonl *r, const void *data, size_t len,
		   struct err **errp);
/* 1: *out holds the next message (caller owns it); 0: more bytes needed;
 * -1: malformed input, *errp set, reader broken. */
int tp_jsonl_next(struct tp_jsonl *r, struct json_object **out,
		  struct err **errp);
/* Bytes held that do not yet form a whole message. */
size_t tp_jsonl_pending(const struct tp_jsonl *r);

/* ---- QMP client ----------------------------------------------------- */

#define TP_QMP_MAX_EVENTS 4096

struct tp_qmp;

/* Connects to a QMP unix socket, retrying while the socket does not exist
 * or refuses (QEMU may still be starting) until timeout_ms, then reads the
 * greeting and negotiates capabilities. */
struct tp_qmp *tp_qmp_connect(const char *path, int timeout_ms,
			      struct err **errp);

/* The same over an already connected stream socket; takes ownership of fd
 * (closed on failure too). */
struct tp_qmp *tp_qmp_from_fd(int fd, int timeout_ms, struct err **errp);

void tp_qmp_close(struct tp_qmp *q);

/* Runs one command. Returns the reply's "return" value (an empty object
 * when QEMU returned none); on a QMP error returns NULL with an ERR_QMP
 * error carrying QEMU's class and description. */
struct json_object *tp_qmp_call(struct tp_qmp *q, const char *cmd,
				struct json_object *args, int timeout_ms,
				struct err **errp);

/* tp_qmp_call that discards the return value. */
bool tp_qmp_run(struct tp_qmp *q, const char *cmd, struct json_object *args,
		int timeout_ms, struct err **errp);

/* Passes fd to QEMU under `name` (QMP getfd, SCM_RIGHTS); fd stays ours. */
bool tp_qmp_send_fd(struct tp_qmp *q, int fd, const char *name,
		    int timeout_ms, struct err **errp);

/* Waits for the event `name` (queued or arriving); returns the whole event
 * object ({"event","data","timestamp"}) and removes it from the queue.
 * Other events stay queued in order. */
struct json_object *tp_qmp_wait_event(struct tp_qmp *q, const char *name,
				      int timeout_ms, struct err **errp);

/* Reads whatever has arrived within timeout_ms (0 = only what is ready)
 * and queues events; false only if the connection broke. */
bool tp_qmp_pump(struct tp_qmp *q, int timeout_ms, struct err **errp);

/* Pops the oldest queued event, or NULL. */
struct json_object *tp_qmp_pop_event(struct tp_qmp *q);

size_t tp_qmp_events_dropped(const struct tp_qmp *q);

/* The greeting's version, e.g. "7.2.0" (owned by q). */
const char *tp_qmp_version(const struct tp_qmp *q);

/* The socket, for callers that poll several connections. */
int tp_qmp_fd(const struct tp_qmp *q);

static inline void tp_qmp_closep(struct tp_qmp **q)
{
	if (*q)
		tp_qmp_close(*q);
}
#define _cleanup_qmp_ __attribute__((cleanup(tp_qmp_closep)))

static inline void tp_jsonp(struct json_object **o)
{
	if (*o)
		json_object_put(*o);
}
#define _cleanup_json_ __attribute__((cleanup(tp_jsonp)))

/* Fields of a peer's JSON message, typed: the string at key (NULL if
 * missing or not a string), the integer at key (false if not an int). */
static inline const char *tp_json_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string) ?
		       json_object_get_string(v) : NULL;
}

static inline bool tp_json_int(struct json_object *o, const char *key, int64_t *out)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
		return false;
	*out = json_object_get_int64(v);
	return true;
}

#endif
