/*
 * tp_ssh.h - SSH sessions (libssh2) for the remote control command and the
 * migration data streams.
 *
 * A session is one authenticated SSH connection plus one pump thread that
 * moves bytes between local file descriptors and the session's channels
 * with non-blocking libssh2 calls. libssh2 is not thread-safe per session,
 * so only the pump thread touches it after tp_ssh_open() returns; the
 * functions below hand requests to it and wait for the answer, so they may
 * be called from any thread. One channel moves a few hundred MB/s; callers
 * that need more open several sessions (tp_ssh_open_many) and spread a
 * stream over them.
 *
 * Security: the host key is pinned, never learnt (no trust on first use);
 * authentication is by public key only. Keys are never logged.
 *
 * Ownership:
 *  - tp_ssh_exec() returns an fd the caller owns and closes.
 *  - tp_ssh_forward() takes fd, also when it fails.
 *  - Strings returned by tp_ssh_failed() live as long as the session;
 *    tp_ssh_exec_stderr()'s until the next call of it on the same session.
 *  - tp_ssh_close() ends every channel: local fds it still holds are
 *    closed, their peers see EOF.
 *
 * Failure: when the connection breaks (peer gone, protocol or crypto
 * error), the pump records the first error for tp_ssh_failed(), closes
 * every bridged fd (TCP sockets with a reset, so a reader can tell an
 * abort from the end of a stream) and later requests fail with that error.
 */
#ifndef VMM_TP_SSH_H
#define VMM_TP_SSH_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/err.h"

struct tp_ssh_opts {
	const char *host;      /* IPv4/IPv6 literal of the sshd */
	unsigned port;         /* 0 = 22 */
	const char *user;      /* NULL = "root" */
	const char *key;       /* private key file (ed25519); public key = key + ".pub" */
	const char *host_key;  /* pinned host key "ssh-ed25519 AAAA..." (type + base64; a trailing comment is ignored). Required: no trust on first use. */
	int timeout_ms;        /* connect + handshake + auth; <= 0: 10000 */
};

struct tp_ssh;

/* Connects, verifies the host key against the pinned one (mismatch: error
 * "host key of HOST does not match the pinned key"), authenticates, starts
 * the session's pump thread. */
struct tp_ssh *tp_ssh_open(const struct tp_ssh_opts *o, struct err **errp);

/* Opens n sessions to the same host in parallel (threads); all or none.
 * out[0..n-1] is written only on success. */
bool tp_ssh_open_many(const struct tp_ssh_opts *o, unsigned n, struct tp_ssh **out,
		      struct err **errp);

/* Runs argv remotely; every word is single-quoted for the remote shell.
 * Returns a local fd (an AF_UNIX socketpair end, CLOEXEC, caller owns it)
 * that is the command's stdin+stdout: writes reach its stdin, its stdout
 * comes out, EOF when it exits (its exit status is then known);
 * shutdown(fd, SHUT_WR) sends EOF to its stdin. The remote stderr is kept
 * (last 4 KiB) for tp_ssh_exec_stderr(). Returns -1 on failure. */
int tp_ssh_exec(struct tp_ssh *s, const char *const argv[], struct err **errp);

/* Of the latest exec: its stderr ("" if none), its exit status once it
 * exited (128 + signal number if a signal killed it), else -1. */
const char *tp_ssh_exec_stderr(struct tp_ssh *s);
int tp_ssh_exec_status(struct tp_ssh *s);

/* Bridges fd (ownership taken, any stream socket) to a direct-tcpip
 * channel to host:port as seen from the remote sshd, both directions,
 * half-close propagated, until both sides end. Returns once the channel is
 * open (false: the server refused it, fd closed). */
bool tp_ssh_forward(struct tp_ssh *s, int fd, const char *host, unsigned port,
		    struct err **errp);

/* Waits until every channel of the session has ended (exec'd commands
 * exited, forwards closed on both sides). False on timeout (timeout_ms < 0:
 * wait forever) or if the connection failed meanwhile. */
bool tp_ssh_wait_idle(struct tp_ssh *s, int timeout_ms, struct err **errp);

/* Bytes moved local->remote and remote->local over all channels so far. */
void tp_ssh_stats(struct tp_ssh *s, uint64_t *out_bytes, uint64_t *in_bytes);

/* NULL while healthy; the pump thread's first error (e.g. "SSH connection
 * to HOST lost: ...") otherwise. */
const char *tp_ssh_failed(struct tp_ssh *s);

/* Closes every channel and the session, joins the thread, frees. NULL ok. */
void tp_ssh_close(struct tp_ssh *s);

/* Reads a .pub file into "type base64" (caller frees). */
char *tp_ssh_pubkey_read(const char *path, struct err **errp);

/* Quotes argv for a POSIX shell: words single-quoted, joined by spaces
 * (caller frees). Exposed for tests. */
char *tp_ssh_quote_argv(const char *const argv[], struct err **errp);

/* ---- forwarder (tp_ssh_fwd.c) ----------------------------------------------
 * Listens on the unix socket `path` (mode 0600, a stale socket replaced)
 * and forwards every connection made to it through the given sessions,
 * round robin, to host:port as seen from the server (tp_ssh_forward). The
 * sessions stay the caller's and must outlive the forwarder. Stop ends the
 * listening (channels already forwarded live on with their sessions) and
 * removes the socket file. */
#define TP_SSH_FWD_MAX 17
struct tp_ssh_fwd;
struct tp_ssh_fwd *tp_ssh_fwd_start(const char *path, struct tp_ssh *const *sessions,
				    unsigned n, const char *host, unsigned port,
				    struct err **errp);
void tp_ssh_fwd_stop(struct tp_ssh_fwd *f); /* NULL ok */

static inline void tp_ssh_closep(struct tp_ssh **s)
{
	if (*s)
		tp_ssh_close(*s);
}
#define _cleanup_ssh_ __attribute__((cleanup(tp_ssh_closep)))

#endif
