/*
 * tp_net.c - TCP and unix sockets for migration streams. Contract in
 * tp_net.h.
 *
 * The peer filter is a classic BPF socket filter. Offsets relative to
 * SKF_NET_OFF address the IP header of the packet whatever the socket's
 * own family, so one program shape serves IPv4, IPv6 and dual-stack
 * listeners: check the version nibble, then compare the source address
 * word by word (IPv4: bytes 12..15, IPv6: bytes 8..23). BPF word loads
 * are big-endian, hence ntohl() on the constants.
 */
#include "tp_net.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* A parsed numeric address; `text` is the literal as the caller wrote it
 * (for messages). */
struct net_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	int family;
	const char *text;
};

/* ---- addresses --------------------------------------------------------- */

static bool is_v4_mapped(const struct net_addr *a)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->ss;

	return a->family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr);
}

static bool is_v6_any(const struct net_addr *a)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->ss;

	return a->family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr);
}

/* Parses an IPv4 or IPv6 literal (IPv6 with an optional %scope, an
 * interface name or index). `what` names the value in the error. */
static bool parse_literal(const char *s, unsigned port, const char *what,
			  struct net_addr *out, struct err **errp)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)&out->ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->ss;
	char host[INET6_ADDRSTRLEN];
	const char *pct;
	size_t hlen;

	memset(out, 0, sizeof(*out));
	out->text = s ? s : "";
	if (!s || !*s)
		return err_set(errp, ERR_INVAL, "invalid %s '': empty", what);
	if (inet_pton(AF_INET, s, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		out->family = AF_INET;
		out->len = sizeof(*s4);
		return true;
	}
	pct = strchr(s, '%');
	hlen = pct ? (size_t)(pct - s) : strlen(s);
	if (hlen >= sizeof(host))
		goto bad;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
		goto bad;
	if (pct) {
		const char *scope = pct + 1;
		unsigned idx = 0;

		if (*scope && strspn(scope, "0123456789") == strlen(scope) &&
		    strlen(scope) < 10)
			idx = (unsigned)strtoul(scope, NULL, 10);
		else if (*scope)
			idx = if_nametoindex(scope);
		if (!idx)
			return err_set(errp, ERR_INVAL, "invalid %s '%s': unknown interface '%s'",
				       what, s, scope);
		s6->sin6_scope_id = idx;
	}
	s6->sin6_family = AF_INET6;
	s6->sin6_port = htons((uint16_t)port);
	out->family = AF_INET6;
	out->len = sizeof(*s6);
	return true;
bad:
	return err_set(errp, ERR_INVAL, "invalid %s '%s': not an IPv4 or IPv6 literal",
		       what, s);
}

/* "10.1.2.5:61000" or "[fd00::5]:61000", for messages. */
static const char *fmt_endpoint(const struct net_addr *a, unsigned port, char *buf,
				size_t len)
{
	snprintf(buf, len, a->family == AF_INET6 ? "[%s]:%u" : "%s:%u", a->text, port);
	return buf;
}

/* Numeric text of a socket address; IPv4-mapped IPv6 as plain IPv4. */
static bool fmt_sockaddr(const struct sockaddr_storage *ss, socklen_t len, char *buf,
			 size_t buflen)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
	int r;

	if (ss->ss_family == AF_UNIX)
		return snprintf(buf, buflen, "unix") < (int)buflen;
	if (ss->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		return inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], buf,
				 (socklen_t)buflen) != NULL;
	r = getnameinfo((const struct sockaddr *)ss, len, buf, (socklen_t)buflen, NULL, 0,
			NI_NUMERICHOST);
	return r == 0;
}

/* ---- peer filter ------------------------------------------------------- */

/* Longest program: version check (3) + 4 word compares (8) + 2 returns. */
#define FILTER_MAX 13

/* Builds the program admitting only packets whose IP source is peer. */
static unsigned build_filter(const struct net_addr *peer, struct sock_filter *prog)
{
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)&peer->ss;
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&peer->ss;
	uint32_t words[4];
	unsigned nwords, version, src_off, n = 0;

	if (peer->family == AF_INET) {
		memcpy(words, &s4->sin_addr, 4);
		nwords = 1, version = 4, src_off = 12;
	} else if (is_v4_mapped(peer)) {
		memcpy(words, &s6->sin6_addr.s6_addr[12], 4);
		nwords = 1, version = 4, src_off = 12;
	} else {
		memcpy(words, &s6->sin6_addr, 16);
		nwords = 4, version = 6, src_off = 8;
	}
	/* Every failed test jumps to the final "drop"; jt/jf are relative to
	 * the next instruction, so the distance shrinks as we go. */
	unsigned total = 3 + 2 * nwords + 2;
	prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_B | BPF_ABS, (uint32_t)SKF_NET_OFF);
	prog[n++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 4);
	prog[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, version, 0,
					       (uint8_t)(total - 1 - n - 1));
	n++;
	for (unsigned i = 0; i < nwords; i++) {
		prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
							 (uint32_t)(SKF_NET_OFF + (int)(src_off + 4 * i)));
		prog[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
						       ntohl(words[i]), 0,
						       (uint8_t)(total - 1 - n - 1));
		n++;
	}
	prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0xffffffffu); /* whole packet */
	prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0);           /* drop */
	return n;
}

static bool attach_filter(int fd, const struct net_addr *peer, struct err **errp)
{
	struct sock_filter prog[FILTER_MAX];
	struct sock_fprog fprog = { .filter = prog };
	int one = 1;

	fprog.len = (unsigned short)build_filter(peer, prog);
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof(fprog)) < 0)
		return err_set_errno(errp, errno, "cannot attach the peer filter for '%s'",
				     peer->text);
	/* Whoever gets the fd later (QEMU) cannot remove or replace it. */
	if (setsockopt(fd, SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof(one)) < 0)
		return err_set_errno(errp, errno, "cannot lock the peer filter for '%s'",
				     peer->text);
	return true;
}

/* ---- TCP ----------------------------------------------------------------- */

static bool listen_fd(const char *addr, const char *peer, unsigned *port,
		  int *out, struct err **errp)
{
	struct net_addr la, pa;
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	_cleanup_close_ int fd = -1;
	char ep[TP_NET_ADDRSTRLEN + 16];
	bool peer_v4;

	if (!parse_literal(addr, 0, "listen address", &la, errp))
		return false;
	if (peer && !parse_literal(peer, 0, "peer address", &pa, errp))
		return false;
	fmt_endpoint(&la, 0, ep, sizeof(ep));
	if (peer) {
		peer_v4 = pa.family == AF_INET || is_v4_mapped(&pa);
		if (la.family == AF_INET && !peer_v4)
			return err_set(errp, ERR_INVAL,
				       "peer address '%s' is IPv6 but listen address '%s' is IPv4",
				       peer, addr);
		if (la.family == AF_INET6 && peer_v4 && !is_v6_any(&la) && !is_v4_mapped(&la))
			return err_set(errp, ERR_INVAL,
				       "peer address '%s' is IPv4 but listen address '%s' is IPv6",
				       peer, addr);
	}
	fd = socket(la.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return err_set_errno(errp, errno, "cannot listen on %s: socket", ep);
	if (la.family == AF_INET6 && is_v6_any(&la)) {
		int off = 0; /* dual-stack whatever net.ipv6.bindv6only says */

		if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) < 0)
			return err_set_errno(errp, errno, "cannot listen on %s: IPV6_V6ONLY",
					     ep);
	}
	if (peer && !attach_filter(fd, &pa, errp))
		return false;
	if (bind(fd, (struct sockaddr *)&la.ss, la.len) < 0)
		return err_set_errno(errp, errno, "cannot listen on %s: bind", ep);
	if (listen(fd, TP_NET_BACKLOG) < 0)
		return err_set_errno(errp, errno, "cannot listen on %s", ep);
	if (getsockname(fd, (struct sockaddr *)&bound, &blen) < 0)
		return err_set_errno(errp, errno, "cannot listen on %s: getsockname", ep);
	*port = ntohs(bound.ss_family == AF_INET ?
			      ((struct sockaddr_in *)&bound)->sin_port :
			      ((struct sockaddr_in6 *)&bound)->sin6_port);
	*out = TAKE_FD(fd);
	return true;
}

static int remaining_ms(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1; /* no deadline: poll() waits for ever */
	left = deadline - util_now_ms();
	return left < 0 ? 0 : (int)(left > INT32_MAX ? INT32_MAX : left);
}

static bool accept_fd(int lfd, int timeout_ms, char *peer, size_t peer_len,
		  int *out, struct err **errp)
{
	int64_t deadline = timeout_ms < 0 ? -1 : util_now_ms() + timeout_ms;

	for (;;) {
		struct pollfd pfd = { .fd = lfd, .events = POLLIN };
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		_cleanup_close_ int fd = -1;
		int r = poll(&pfd, 1, remaining_ms(deadline));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return err_set_errno(errp, errno, "cannot accept: poll");
		if (r == 0)
			return err_set(errp, ERR_TIMEOUT, "no connection within %d ms",
				       timeout_ms);
		/* A listener shut down by another thread (to stop this one)
		 * polls as hung up and accept() says EAGAIN for ever. */
		if (pfd.revents & (POLLHUP | POLLERR | POLLNVAL))
			return err_set(errp, ERR_CLOSED, "cannot accept: the listener was shut down");
		fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
		if (fd < 0) {
			/* Taken by another acceptor, or reset before we got it. */
			if ((errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) &&
			    remaining_ms(deadline) != 0)
				continue;
			if (errno == EAGAIN)
				return err_set(errp, ERR_TIMEOUT, "no connection within %d ms",
					       timeout_ms);
			return err_set_errno(errp, errno, "cannot accept");
		}
		if (peer && !fmt_sockaddr(&ss, len, peer, peer_len))
			return err_set(errp, ERR_INVAL,
				       "cannot accept: peer address does not fit %zu bytes",
				       peer_len);
		*out = TAKE_FD(fd);
		return true;
	}
}

static bool set_blocking(int fd, struct err **errp)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return err_set_errno(errp, errno, "fcntl O_NONBLOCK");
	return true;
}

/* Waits for a non-blocking connect() in progress; errno-style result. */
static int wait_connected(int fd, int64_t deadline)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		int r = poll(&pfd, 1, remaining_ms(deadline));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno;
		if (r == 0)
			return ETIMEDOUT;
		break;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		return errno;
	return soerr;
}

static bool connect_fd(const char *addr, unsigned port, int timeout_ms, int *out, struct err **errp)
{
	int64_t deadline = timeout_ms < 0 ? -1 : util_now_ms() + timeout_ms;
	struct net_addr a;
	_cleanup_close_ int fd = -1;
	char ep[TP_NET_ADDRSTRLEN + 16];
	int e = 0;

	if (!parse_literal(addr, port, "address", &a, errp))
		return false;
	fmt_endpoint(&a, port, ep, sizeof(ep));
	if (port < 1 || port > 65535)
		return err_set(errp, ERR_INVAL, "invalid port %u for %s: must be 1..65535",
			       port, a.text);
	fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return err_set_errno(errp, errno, "cannot connect to %s: socket", ep);
	if (connect(fd, (struct sockaddr *)&a.ss, a.len) < 0) {
		e = errno;
		if (e == EINPROGRESS || e == EINTR)
			e = wait_connected(fd, deadline);
	}
	if (e == ETIMEDOUT && timeout_ms >= 0)
		return err_set(errp, ERR_TIMEOUT, "timed out connecting to %s after %d ms",
			       ep, timeout_ms);
	if (e)
		return err_set_errno(errp, e, "cannot connect to %s", ep);
	if (!set_blocking(fd, errp))
		return false;
	*out = TAKE_FD(fd);
	return true;
}

/* ---- unix ------------------------------------------------------------------ */

static bool unix_addr(const char *path, struct sockaddr_un *sun, struct err **errp)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (!path || !*path)
		return err_set(errp, ERR_INVAL, "invalid unix socket path '': empty");
	if (strlen(path) >= sizeof(sun->sun_path))
		return err_set(errp, ERR_INVAL,
			       "invalid unix socket path '%s': longer than %zu bytes", path,
			       sizeof(sun->sun_path) - 1);
	memcpy(sun->sun_path, path, strlen(path));
	return true;
}

/* Removes path if it is a socket nobody listens on. */
static bool remove_stale(const char *path, const struct sockaddr_un *sun,
			 struct err **errp)
{
	_cleanup_close_ int fd = -1;
	struct stat st;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return true;
		return err_set_errno(errp, errno, "cannot listen on '%s': stat", path);
	}
	if (!S_ISSOCK(st.st_mode))
		return err_set(errp, ERR_CONFLICT,
			       "cannot listen on '%s': exists and is not a socket", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return err_set_errno(errp, errno, "cannot listen on '%s': socket", path);
	if (connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0 || errno == EAGAIN)
		return err_set(errp, ERR_CONFLICT, "cannot listen on '%s': in use", path);
	if (errno != ECONNREFUSED && errno != ENOENT)
		return err_set_errno(errp, errno, "cannot listen on '%s': probing it", path);
	if (unlink(path) < 0 && errno != ENOENT)
		return err_set_errno(errp, errno, "cannot remove stale socket '%s'", path);
	return true;
}

static bool unix_listen_fd(const char *path, int *out, struct err **errp)
{
	struct sockaddr_un sun;
	_cleanup_close_ int fd = -1;

	if (!unix_addr(path, &sun, errp) || !remove_stale(path, &sun, errp))
		return false;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return err_set_errno(errp, errno, "cannot listen on '%s': socket", path);
	/* Linux creates the file with the socket inode's mode minus umask:
	 * set it first so the file is never open to others, then make the
	 * mode exact whatever the umask. */
	if (fchmod(fd, 0600) < 0)
		return err_set_errno(errp, errno, "cannot listen on '%s': fchmod", path);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
		return err_set_errno(errp, errno, "cannot listen on '%s': bind", path);
	if (chmod(path, 0600) < 0 || listen(fd, TP_NET_BACKLOG) < 0) {
		int e = errno;

		unlink(path);
		return err_set_errno(errp, e, "cannot listen on '%s'", path);
	}
	*out = TAKE_FD(fd);
	return true;
}

static bool unix_connect_fd(const char *path, int timeout_ms, int *out, struct err **errp)
{
	int64_t deadline = timeout_ms < 0 ? -1 : util_now_ms() + timeout_ms;
	struct sockaddr_un sun;
	_cleanup_close_ int fd = -1;

	if (!unix_addr(path, &sun, errp))
		return false;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return err_set_errno(errp, errno, "cannot connect to '%s': socket", path);
	/* A unix connect never is in progress: it succeeds, or fails with
	 * EAGAIN while the listener's backlog is full. */
	while (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return err_set_errno(errp, errno, "cannot connect to '%s'", path);
		if (!remaining_ms(deadline))
			return err_set(errp, ERR_TIMEOUT,
				       "timed out connecting to '%s' after %d ms", path,
				       timeout_ms);
		poll(NULL, 0, 10);
	}
	if (!set_blocking(fd, errp))
		return false;
	*out = TAKE_FD(fd);
	return true;
}

/* ---- public entry points: fd or -1 ------------------------------------- */

int tp_net_listen(const char *addr, const char *peer, unsigned *port,
		  struct err **errp)
{
	int fd = -1;

	return listen_fd(addr, peer, port, &fd, errp) ? fd : -1;
}

int tp_net_accept(int lfd, int timeout_ms, char *peer, size_t peer_len,
		  struct err **errp)
{
	int fd = -1;

	return accept_fd(lfd, timeout_ms, peer, peer_len, &fd, errp) ? fd : -1;
}

int tp_net_connect(const char *addr, unsigned port, int timeout_ms, struct err **errp)
{
	int fd = -1;

	return connect_fd(addr, port, timeout_ms, &fd, errp) ? fd : -1;
}

int tp_net_unix_listen(const char *path, struct err **errp)
{
	int fd = -1;

	return unix_listen_fd(path, &fd, errp) ? fd : -1;
}

int tp_net_unix_connect(const char *path, int timeout_ms, struct err **errp)
{
	int fd = -1;

	return unix_connect_fd(path, timeout_ms, &fd, errp) ? fd : -1;
}
