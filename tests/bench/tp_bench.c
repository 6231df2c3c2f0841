/*
 * tp_bench.c - raw throughput of the migration transports, for
 * tests/bench/bench_transport.sh:
 *
 *   tp_bench sink ADDR PORT            discards whatever connects (forever)
 *   tp_bench tcp ADDR PORT MIB STREAMS
 *   tp_bench ssh ADDR HOSTKEY_PUB KEY FWD_PORT MIB STREAMS
 *
 * tcp sends MIB MiB split over STREAMS connections to ADDR:PORT; ssh opens
 * STREAMS sessions to ADDR's sshd (host key pinned) and sends the same
 * through one direct-tcpip channel each to the sink on the server's
 * 127.0.0.1:FWD_PORT - the path secure migrations take. Prints
 * "mib=N secs=S mb_per_s=R" (MB = 10^6 bytes).
 */
#include "common/util.h"
#include "transport/tp_net.h"
#include "transport/tp_ssh.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK (1u << 20)
#define MAX_STREAMS 16

static char buf[CHUNK];

struct writer {
	int fd;
	uint64_t bytes;
	bool ok;
	pthread_t th;
};

static void *write_all(void *arg)
{
	struct writer *w = arg;
	uint64_t left = w->bytes;

	while (left) {
		size_t n = left < CHUNK ? (size_t)left : CHUNK;
		ssize_t k = send(w->fd, buf, n, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return NULL;
		left -= (uint64_t)k;
	}
	/* Wait for the sink to close: all bytes arrived. */
	shutdown(w->fd, SHUT_WR);
	while (recv(w->fd, buf, 1, 0) > 0)
		;
	w->ok = true;
	return NULL;
}

static void *sink_one(void *arg)
{
	int fd = (int)(intptr_t)arg;
	static char rbuf[CHUNK];

	while (read(fd, rbuf, sizeof(rbuf)) > 0)
		;
	close(fd);
	return NULL;
}

static int sink(const char *addr, const char *port_s)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t sl;
	int one = 1, lfd;
	uint16_t port = (uint16_t)atoi(port_s);

	if (strchr(addr, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		inet_pton(AF_INET6, addr, &s6->sin6_addr);
		sl = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		inet_pton(AF_INET, addr, &s4->sin_addr);
		sl = sizeof(*s4);
	}
	lfd = socket(ss.ss_family, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&ss, sl) < 0 || listen(lfd, 64) < 0) {
		fprintf(stderr, "tp_bench: cannot listen on %s port %s: %s\n", addr, port_s,
			strerror(errno));
		return 1;
	}
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		pthread_t th;

		if (fd < 0)
			continue;
		if (pthread_create(&th, NULL, sink_one, (void *)(intptr_t)fd) == 0)
			pthread_detach(th);
		else
			close(fd);
	}
}

static int run_writers(struct writer *w, unsigned n, uint64_t mib, int64_t t0)
{
	double secs;

	for (unsigned i = 0; i < n; i++)
		pthread_create(&w[i].th, NULL, write_all, &w[i]);
	for (unsigned i = 0; i < n; i++) {
		pthread_join(w[i].th, NULL);
		if (!w[i].ok) {
			fprintf(stderr, "tp_bench: stream %u failed\n", i);
			return 1;
		}
	}
	secs = (double)(util_now_ms() - t0) / 1000.0;
	printf("mib=%llu secs=%.3f mb_per_s=%.0f\n", (unsigned long long)mib, secs,
	       (double)(mib << 20) / secs / 1e6);
	return 0;
}

static unsigned streams_arg(const char *s)
{
	int n = atoi(s);

	return n < 1 ? 1 : n > MAX_STREAMS ? MAX_STREAMS : (unsigned)n;
}

static int tcp(char **argv)
{
	uint64_t mib = strtoull(argv[2], NULL, 10);
	unsigned n = streams_arg(argv[3]);
	struct writer w[MAX_STREAMS] = { 0 };
	int64_t t0 = util_now_ms();

	for (unsigned i = 0; i < n; i++) {
		struct err *e = NULL;

		w[i].fd = tp_net_connect(argv[0], (unsigned)atoi(argv[1]), 5000, &e);
		if (w[i].fd < 0) {
			fprintf(stderr, "tp_bench: %s\n", e->msg);
			return 1;
		}
		w[i].bytes = (mib << 20) / n;
	}
	return run_writers(w, n, mib, t0);
}

static int ssh(char **argv)
{
	struct err *e = NULL;
	char *hk = tp_ssh_pubkey_read(argv[1], &e);
	uint64_t mib = strtoull(argv[4], NULL, 10);
	unsigned n = streams_arg(argv[5]);
	struct tp_ssh *s[MAX_STREAMS];
	struct writer w[MAX_STREAMS] = { 0 };
	struct tp_ssh_opts o = { .host = argv[0], .key = argv[2], .timeout_ms = 10000 };
	int64_t t0;
	int rc;

	if (!hk) {
		fprintf(stderr, "tp_bench: %s\n", e->msg);
		return 1;
	}
	o.host_key = hk;
	t0 = util_now_ms();
	if (!tp_ssh_open_many(&o, n, s, &e)) {
		fprintf(stderr, "tp_bench: %s\n", e->msg);
		return 1;
	}
	for (unsigned i = 0; i < n; i++) {
		int sp[2];

		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0 ||
		    !tp_ssh_forward(s[i], sp[1], "127.0.0.1", (unsigned)atoi(argv[3]), &e)) {
			fprintf(stderr, "tp_bench: %s\n", e ? e->msg : strerror(errno));
			return 1;
		}
		w[i].fd = sp[0];
		w[i].bytes = (mib << 20) / n;
	}
	rc = run_writers(w, n, mib, t0);
	for (unsigned i = 0; i < n; i++)
		tp_ssh_close(s[i]);
	free(hk);
	return rc;
}

int main(int argc, char **argv)
{
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 2654435761u >> 13);
	if (argc == 4 && !strcmp(argv[1], "sink"))
		return sink(argv[2], argv[3]);
	if (argc == 6 && !strcmp(argv[1], "tcp"))
		return tcp(argv + 2);
	if (argc == 8 && !strcmp(argv[1], "ssh"))
		return ssh(argv + 2);
	fprintf(stderr, "usage: tp_bench sink ADDR PORT | tcp ADDR PORT MIB STREAMS | "
		"ssh ADDR HOSTKEY_PUB KEY FWD_PORT MIB STREAMS\n");
	return 2;
}
