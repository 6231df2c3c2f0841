/* test_net.c - migration sockets: the BPF peer filter really keeps other
 * sources from completing a handshake (IPv4, IPv6, dual-stack), anyone
 * may connect without a peer, errors name the bad value, unix listeners
 * are private and replace only stale files. Loopback traffic only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/util.h"
#include "transport/tp_net.h"

#define BLOCKED_MS 300 /* a filtered SYN is retried only after 1 s */

static void fill_addr(const char *ip, unsigned port, struct sockaddr_storage *ss,
		      socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
		*len = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
		*len = sizeof(*s4);
	}
}

/* Connects from src (bound) to dst:port; the fd, or -1 with errno. */
static int connect_from(const char *src, const char *dst, unsigned port, int timeout_ms)
{
	struct sockaddr_storage s, d;
	socklen_t slen, dlen;
	struct pollfd pfd;
	int fd, soerr = 0;
	socklen_t sl = sizeof(soerr);

	fill_addr(src, 0, &s, &slen);
	fill_addr(dst, port, &d, &dlen);
	fd = socket(d.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&s, slen), 0);
	if (connect(fd, (struct sockaddr *)&d, dlen) < 0 && errno != EINPROGRESS) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	pfd = (struct pollfd){ .fd = fd, .events = POLLOUT };
	if (poll(&pfd, 1, timeout_ms) == 0) {
		close(fd);
		errno = ETIMEDOUT;
		return -1;
	}
	assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl), 0);
	if (soerr) {
		close(fd);
		errno = soerr;
		return -1;
	}
	assert_int_equal(fcntl(fd, F_SETFL, 0), 0);
	return fd;
}

/* Bytes go both ways over a connected pair. */
static void check_flow(int a, int b)
{
	static char out[65536], in[65536];
	size_t got = 0;

	for (size_t i = 0; i < sizeof(out); i++)
		out[i] = (char)(i * 7 + 3);
	assert_true(util_write_all(a, out, sizeof(out), NULL));
	while (got < sizeof(in)) {
		ssize_t n = read(b, in + got, sizeof(in) - got);

		assert_true(n > 0);
		got += (size_t)n;
	}
	assert_memory_equal(in, out, sizeof(out));
	assert_int_equal(write(b, "ok", 2), 2);
	assert_int_equal(read(a, in, 2), 2);
	assert_memory_equal(in, "ok", 2);
}

static bool cloexec(int fd)
{
	return fcntl(fd, F_GETFD) & FD_CLOEXEC;
}

/* A source the filter refuses never completes a handshake: the connect
 * times out instead of being refused, and nothing reaches accept(). */
static void expect_blocked(int lfd, const char *src, const char *dst, unsigned port)
{
	struct err *e = NULL;
	int64_t t0 = util_now_ms();
	int fd = connect_from(src, dst, port, BLOCKED_MS);

	assert_int_equal(fd, -1);
	assert_int_equal(errno, ETIMEDOUT);
	assert_true(util_now_ms() - t0 >= BLOCKED_MS - 10);
	assert_int_equal(tp_net_accept(lfd, 0, NULL, 0, &e), -1);
	assert_int_equal(e->code, ERR_TIMEOUT);
	err_free(e);
}

static void expect_admitted(int lfd, const char *src, const char *dst, unsigned port)
{
	char peer[TP_NET_ADDRSTRLEN];
	struct err *e = NULL;
	int c = connect_from(src, dst, port, 2000);
	int s;

	assert_true(c >= 0);
	s = tp_net_accept(lfd, 2000, peer, sizeof(peer), &e);
	assert_null(e);
	assert_true(s >= 0);
	assert_true(cloexec(s));
	assert_string_equal(peer, src);
	check_flow(c, s);
	check_flow(s, c);
	close(c);
	close(s);
}

static void test_filter_v4(void **state)
{
	struct err *e = NULL;
	unsigned port = 0;
	int lfd, fd, zero = 0;

	(void)state;
	lfd = tp_net_listen("127.0.0.1", "127.0.0.2", &port, &e);
	assert_null(e);
	assert_true(lfd >= 0 && port > 0);
	assert_true(cloexec(lfd));
	/* Whoever gets the fd (QEMU) cannot drop the filter. */
	assert_int_equal(setsockopt(lfd, SOL_SOCKET, SO_DETACH_FILTER, &zero, sizeof(zero)), -1);
	assert_int_equal(errno, EPERM);
	expect_blocked(lfd, "127.0.0.1", "127.0.0.1", port);
	/* Our own connect from the default source (127.0.0.1) is kept out too. */
	fd = tp_net_connect("127.0.0.1", port, BLOCKED_MS, &e);
	assert_int_equal(fd, -1);
	assert_int_equal(e->code, ERR_TIMEOUT);
	assert_non_null(strstr(e->msg, "127.0.0.1"));
	err_free(e);
	e = NULL;
	expect_admitted(lfd, "127.0.0.2", "127.0.0.1", port);
	expect_blocked(lfd, "127.0.0.3", "127.0.0.1", port);
	close(lfd);
}

static bool have_v6_loopback(void)
{
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&s6, sizeof(s6)) == 0;

	if (fd >= 0)
		close(fd);
	if (!ok)
		print_message("  (IPv6 loopback unavailable: IPv6 checks skipped)\n");
	return ok;
}

/* ::1 is the only IPv6 loopback address: admit it in one listener and
 * refuse it in another. */
static void test_filter_v6(void **state)
{
	struct err *e = NULL;
	unsigned port = 0;
	int lfd;

	(void)state;
	if (!have_v6_loopback())
		return;
	lfd = tp_net_listen("::1", "::2", &port, &e);
	assert_null(e);
	expect_blocked(lfd, "::1", "::1", port);
	close(lfd);
	lfd = tp_net_listen("::1", "::1", &port, &e);
	assert_null(e);
	expect_admitted(lfd, "::1", "::1", port);
	close(lfd);
}

/* "::" with an IPv4 peer: IPv4 packets carry an IPv4 header under the
 * IPv6 socket, and the filter reads them as such. */
static void test_filter_dual_stack(void **state)
{
	struct err *e = NULL;
	unsigned port = 0;
	int lfd;

	(void)state;
	if (!have_v6_loopback())
		return;
	lfd = tp_net_listen("::", "::ffff:127.0.0.2", &port, &e);
	assert_null(e);
	expect_blocked(lfd, "127.0.0.1", "127.0.0.1", port);
	expect_blocked(lfd, "::1", "::1", port);
	expect_admitted(lfd, "127.0.0.2", "127.0.0.1", port);
	close(lfd);
}

static void test_no_peer(void **state)
{
	char peer[TP_NET_ADDRSTRLEN];
	struct err *e = NULL;
	unsigned port = 0;
	int lfd, c, s;

	(void)state;
	lfd = tp_net_listen("127.0.0.1", NULL, &port, &e);
	assert_null(e);
	c = tp_net_connect("127.0.0.1", port, 2000, &e);
	assert_null(e);
	assert_true(cloexec(c));
	assert_int_equal(fcntl(c, F_GETFL) & O_NONBLOCK, 0);
	s = tp_net_accept(lfd, 2000, peer, sizeof(peer), &e);
	assert_null(e);
	assert_string_equal(peer, "127.0.0.1");
	check_flow(c, s);
	close(c);
	close(s);
	expect_admitted(lfd, "127.0.0.3", "127.0.0.1", port);
	close(lfd);
	/* A closed port is refused at once, not timed out. */
	c = tp_net_connect("127.0.0.1", port, 2000, &e);
	assert_int_equal(c, -1);
	assert_int_equal(e->code, ERR_IO);
	assert_non_null(strstr(e->msg, "Connection refused"));
	err_free(e);
}

/* ep is read after the call that fills it (argument order is unspecified). */
static void expect_err(int r, struct err **ep, enum err_code code, const char *msg)
{
	struct err *e = *ep;

	*ep = NULL;
	assert_int_equal(r, -1);
	assert_non_null(e);
	assert_int_equal(e->code, code);
	assert_string_equal(e->msg, msg);
	assert_null(strchr(e->msg, '\n'));
	err_free(e);
}

static void test_bad_literals(void **state)
{
	struct err *e = NULL;
	unsigned port = 0;

	(void)state;
	expect_err(tp_net_listen("node2", NULL, &port, &e), &e, ERR_INVAL,
		   "invalid listen address 'node2': not an IPv4 or IPv6 literal");
	expect_err(tp_net_listen("127.0.0.1", "10.1.2.300", &port, &e), &e, ERR_INVAL,
		   "invalid peer address '10.1.2.300': not an IPv4 or IPv6 literal");
	expect_err(tp_net_listen("127.0.0.1", "", &port, &e), &e, ERR_INVAL,
		   "invalid peer address '': empty");
	expect_err(tp_net_listen("127.0.0.1", "::1", &port, &e), &e, ERR_INVAL,
		   "peer address '::1' is IPv6 but listen address '127.0.0.1' is IPv4");
	expect_err(tp_net_listen("::1", "127.0.0.2", &port, &e), &e, ERR_INVAL,
		   "peer address '127.0.0.2' is IPv4 but listen address '::1' is IPv6");
	expect_err(tp_net_listen("fe80::1%nosuchif0", NULL, &port, &e), &e, ERR_INVAL,
		   "invalid listen address 'fe80::1%nosuchif0': unknown interface 'nosuchif0'");
	expect_err(tp_net_connect("localhost", 22, 100, &e), &e, ERR_INVAL,
		   "invalid address 'localhost': not an IPv4 or IPv6 literal");
	expect_err(tp_net_connect("127.0.0.1", 0, 100, &e), &e, ERR_INVAL,
		   "invalid port 0 for 127.0.0.1: must be 1..65535");
	expect_err(tp_net_connect("::1", 65536, 100, &e), &e, ERR_INVAL,
		   "invalid port 65536 for ::1: must be 1..65535");
	/* Not a local address: bind fails and says where. */
	assert_int_equal(tp_net_listen("192.0.2.1", NULL, &port, &e), -1);
	assert_string_equal(e->msg, "cannot listen on 192.0.2.1:0: bind: Cannot assign requested address");
	err_free(e);
}

static void test_unix(void **state)
{
	char dir[] = "/tmp/vmm-test-net-XXXXXX", path[128], peer[16], longp[200];
	struct err *e = NULL;
	struct stat st;
	int lfd, c, s, f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/mig.sock", dir);
	umask(0);
	lfd = tp_net_unix_listen(path, &e);
	umask(022);
	assert_null(e);
	assert_true(cloexec(lfd));
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	c = tp_net_unix_connect(path, 1000, &e);
	assert_null(e);
	s = tp_net_accept(lfd, 1000, peer, sizeof(peer), &e);
	assert_null(e);
	assert_string_equal(peer, "unix");
	check_flow(c, s);
	close(c);
	close(s);
	/* A live socket is not taken over (its owner sees the probe as a
	 * connection closed at once). */
	assert_int_equal(tp_net_unix_listen(path, &e), -1);
	assert_int_equal(e->code, ERR_CONFLICT);
	assert_non_null(strstr(e->msg, "': in use"));
	err_free(e);
	e = NULL;
	close(lfd); /* leaves a stale file behind */
	assert_int_equal(stat(path, &st), 0);
	lfd = tp_net_unix_listen(path, &e);
	assert_null(e);
	close(lfd);
	unlink(path);
	/* Anything but a socket is never removed. */
	f = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	assert_true(f >= 0);
	close(f);
	assert_int_equal(tp_net_unix_listen(path, &e), -1);
	assert_non_null(strstr(e->msg, "exists and is not a socket"));
	err_free(e);
	e = NULL;
	assert_int_equal(stat(path, &st), 0);
	unlink(path);
	memset(longp, 'a', sizeof(longp) - 1);
	longp[sizeof(longp) - 1] = '\0';
	assert_int_equal(tp_net_unix_listen(longp, &e), -1);
	assert_non_null(strstr(e->msg, "longer than 107 bytes"));
	err_free(e);
	e = NULL;
	assert_int_equal(tp_net_unix_connect(path, 100, &e), -1);
	assert_non_null(strstr(e->msg, "No such file or directory"));
	err_free(e);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_filter_v4),
		cmocka_unit_test(test_filter_v6),
		cmocka_unit_test(test_filter_dual_stack),
		cmocka_unit_test(test_no_peer),
		cmocka_unit_test(test_bad_literals),
		cmocka_unit_test(test_unix),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
