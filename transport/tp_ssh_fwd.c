/*
 * tp_ssh_fwd.c - a local unix socket whose every connection is forwarded
 * through SSH (a direct-tcpip channel) to one host:port as the server sees
 * it. The secure migration's QEMU connects here: its main stream, each
 * multifd channel, each NBD client. Contract in tp_ssh.h.
 *
 * Connections go round robin over the sessions given, so parallel streams
 * (multifd) run on separate SSH connections, each with its own pump thread
 * and its own cipher state: one libssh2 channel is CPU-bound well below
 * the link.
 */
#include "tp_ssh.h"
#include "tp_net.h"
#include "../common/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_POLL_MS 200 /* a fallback: tp_ssh_fwd_stop wakes the thread at once */

struct tp_ssh_fwd {
	int lfd;
	char *path;
	char host[64];
	unsigned port;
	struct tp_ssh *s[TP_SSH_FWD_MAX];
	unsigned n, next;
	pthread_t th;
	volatile bool stop;
};

static void *fwd_main(void *arg)
{
	struct tp_ssh_fwd *f = arg;

	while (!f->stop) {
		struct err *e = NULL;
		int fd = tp_net_accept(f->lfd, ACCEPT_POLL_MS, NULL, 0, &e);

		if (fd < 0) {
			bool timeout = e->code == ERR_TIMEOUT;

			if (!timeout && !f->stop)
				log_warn("forwarder %s: %s", f->path, e->msg);
			err_free(e);
			if (!timeout)
				break;
			continue;
		}
		if (!tp_ssh_forward(f->s[f->next % f->n], fd, f->host, f->port, &e)) {
			log_warn("forwarder %s: %s", f->path, e->msg);
			err_free(e);
		}
		f->next++;
	}
	return NULL;
}

struct tp_ssh_fwd *tp_ssh_fwd_start(const char *path, struct tp_ssh *const *sessions,
				    unsigned n, const char *host, unsigned port,
				    struct err **errp)
{
	struct tp_ssh_fwd *f;

	if (n == 0 || n > TP_SSH_FWD_MAX || !host || strlen(host) >= sizeof(f->host) ||
	    port == 0 || port > 65535) {
		err_set(errp, ERR_INVAL, "invalid forward to '%s' port %u over %u sessions",
			host ? host : "", port, n);
		return NULL;
	}
	f = calloc(1, sizeof(*f));
	if (!f || !(f->path = strdup(path))) {
		free(f);
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	snprintf(f->host, sizeof(f->host), "%s", host);
	f->port = port;
	f->n = n;
	memcpy(f->s, sessions, n * sizeof(*sessions));
	f->lfd = tp_net_unix_listen(path, errp);
	if (f->lfd < 0)
		goto fail;
	if (pthread_create(&f->th, NULL, fwd_main, f) != 0) {
		err_set(errp, ERR_IO, "cannot start the forwarder thread");
		close(f->lfd);
		unlink(f->path);
		goto fail;
	}
	return f;
fail:
	free(f->path);
	free(f);
	return NULL;
}

void tp_ssh_fwd_stop(struct tp_ssh_fwd *f)
{
	if (!f)
		return;
	f->stop = true;
	/* Wakes the thread's poll() on the listener now (Linux: a shut-down
	 * listener polls as hung up). */
	shutdown(f->lfd, SHUT_RDWR);
	pthread_join(f->th, NULL);
	close(f->lfd);
	unlink(f->path);
	free(f->path);
	free(f);
}
