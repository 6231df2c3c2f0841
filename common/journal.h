/*
 * journal.h - systemd journal's native protocol, without libsystemd.
 *
 * An entry is one datagram to the journal's AF_UNIX socket holding its
 * fields: "KEY=value\n" for a value without newlines, else "KEY\n", the
 * value's length as 64-bit little endian, the value and "\n". Keys are
 * upper case letters, digits and '_', not starting with '_' (those are
 * the journal's own trusted fields).
 *
 * Contract:
 *  - journal_is_stderr() says whether stderr is the journal, as systemd
 *    sets it up for a service (StandardError=journal): $JOURNAL_STREAM is
 *    "DEV:INODE" of stderr. A redirected stderr (2>file) no longer matches.
 *  - journal_socket_path() is $VMM_JOURNAL_SOCKET if set (tests bind their
 *    own socket there), else /run/systemd/journal/socket.
 *  - journal_send() sends one entry over fd (an AF_UNIX datagram socket)
 *    to path; false with *errp set if a key is invalid or the send fails
 *    (the caller falls back to stderr). It never blocks.
 */
#ifndef VMM_JOURNAL_H
#define VMM_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

struct journal_field {
	const char *key;
	const char *value;
};

bool journal_is_stderr(void);
const char *journal_socket_path(void);
bool journal_send(int fd, const char *path, const struct journal_field *f, size_t n,
		  struct err **errp);

#endif
