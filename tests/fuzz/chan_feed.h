/*
 * chan_feed.h - for the control-channel targets: the fuzz input as the
 * agent's (or the worker's) end of a control channel, read by the real
 * reader (mig_chan_recv: the JSONL framer, then "an object or the channel
 * breaks"), one message at a time. A pipe, written whole and closed, so
 * the reader ends on EOF; inputs beyond the pipe's 64 KiB are skipped.
 */
#ifndef VMM_FUZZ_CHAN_FEED_H
#define VMM_FUZZ_CHAN_FEED_H

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "migrate/mig.h"

#define CHAN_FEED_MAX 65536

/* A channel whose peer sent data and hung up; NULL if size is too big. */
static inline struct mig_chan *chan_feed(const uint8_t *data, size_t size)
{
	struct mig_chan *c;
	int p[2];

	if (size > CHAN_FEED_MAX)
		return NULL;
	if (pipe2(p, O_CLOEXEC) < 0)
		abort();
	if (size && write(p[1], data, size) != (ssize_t)size)
		abort();
	close(p[1]);
	c = mig_chan_open(p[0], -1);
	if (!c)
		abort();
	return c;
}

/* The channel's end: EOF, or a framing or "not an object" error - never
 * a timeout, and always with an error. */
static inline void chan_end(struct mig_chan *c, struct err *e)
{
	if (!e || e->code == ERR_TIMEOUT || !e->msg[0])
		abort();
	err_free(e);
	mig_chan_close(c);
}

/* A reply as the worker reads it (mig_chan_call): ok, or an error with a
 * code (its message may be the agent's empty one). */
static inline void chan_reply(struct json_object *m)
{
	struct err *e = NULL;

	if (mig_chan_reply_check(m, &e) != !e)
		abort();
	if (e && (e->code <= ERR_OK || e->code >= ERR_CODE_MAX))
		abort();
	err_free(e);
}

#endif
