/*
 * tp_ssh_int.h - what tp_ssh.c (setup, API) and tp_ssh_pump.c (the pump
 * thread) share. Not for use outside transport/.
 *
 * Locking: fields under "mu" are shared between the caller's threads and
 * the pump; fields under "pump" are touched only by the pump thread once it
 * runs (and by tp_ssh_close after joining it). The libssh2 session belongs
 * to the pump thread from tp_ssh_open's return to tp_ssh_close's join.
 */
#ifndef VMM_TP_SSH_INT_H
#define VMM_TP_SSH_INT_H

#include "tp_ssh.h"

#include <libssh2.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>

#define TP_SSH_STDERR_KEEP 4096

enum tp_ssh_req_kind { TP_SSH_REQ_EXEC, TP_SSH_REQ_FORWARD };

/* A channel to open, queued by a caller that waits for done. */
struct tp_ssh_req {
	enum tp_ssh_req_kind kind;
	const char *cmd;       /* exec: the quoted command line */
	const char *fhost;     /* forward: target as seen from the server */
	unsigned fport;
	int fd;                /* local end, passed to the channel on success,
				  closed by the pump on failure */
	struct err *err;       /* the answer: NULL = channel running */
	bool done;
	struct tp_ssh_req *next;
};

struct tp_ssh_chan;

struct tp_ssh {
	char *host;
	int sock;
	LIBSSH2_SESSION *ss;
	int wakefd;            /* eventfd: a caller has news for the pump */
	int timeout_ms;        /* also bounds opening a channel */
	pthread_t thread;
	bool thread_started;

	/* mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;     /* request answered, channel count changed */
	struct tp_ssh_req *reqs, **reqs_tail;
	bool stop;
	char *failed;          /* set once, kept until close */
	unsigned nchans;       /* channels running or being opened */
	unsigned exec_gen;     /* latest exec */
	int exec_status;
	char stderr_buf[TP_SSH_STDERR_KEEP];
	size_t stderr_len;
	char *stderr_copy;

	uint64_t out_bytes, in_bytes; /* atomics */

	/* pump */
	struct tp_ssh_chan *chans;
	struct tp_ssh_req *cur;        /* being opened */
	LIBSSH2_CHANNEL *cur_ch;
	int64_t cur_deadline;
	const void *held_obj;          /* the call that owns a half-sent packet */
	int held_op;
	bool broken;
	int call_errno;                /* errno after the last failed call */
	bool failed_all;               /* fail_all() ran */
	bool rdhup;                    /* the server's FIN was seen */
	struct pollfd *pfd;
	size_t pfd_cap;
};

void *tp_ssh_pump(void *arg);
const char *tp_ssh_lasterr(LIBSSH2_SESSION *ss);

#endif
