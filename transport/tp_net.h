/*
 * tp_net.h - sockets for migration streams: TCP listeners that admit one
 * peer only, connects with a deadline, and private unix listeners.
 *
 * Addresses are numeric literals only ("10.1.2.5", "fd00::5",
 * "fe80::1%eth0"); names are never resolved, so a stream goes exactly
 * where the migration network says. Errors name the bad value:
 *   invalid listen address 'node2': not an IPv4 or IPv6 literal
 *
 * Filtered listeners (why not a check after accept())
 *   The target binds the listening socket itself with port 0, so the
 *   kernel picks a free port and nobody can take it between choosing and
 *   binding (Proxmox bug #4501). The socket may then be handed to QEMU,
 *   which accepts on its own: the peer filter therefore lives on the
 *   socket. A classic BPF program (SO_ATTACH_FILTER) that reads the IP
 *   source address at SKF_NET_OFF is attached and locked (SO_LOCK_FILTER)
 *   before listen(); it drops every packet from any other address, so
 *   their SYNs are never answered: to them the port looks filtered, not
 *   closed. Connections accepted from the socket inherit the filter.
 *   A listener on "::" with an IPv4 peer is dual-stack and admits that
 *   IPv4 address ("::ffff:a.b.c.d" is taken as a.b.c.d).
 *
 * Descriptors are close-on-exec. Listening sockets are non-blocking
 * (tp_net_accept() polls); accepted and connected sockets are blocking.
 * Every wait takes a timeout in milliseconds (negative = forever) and
 * fails with ERR_TIMEOUT naming what it waited for.
 */
#ifndef VMM_TP_NET_H
#define VMM_TP_NET_H

#include <stdbool.h>
#include <stddef.h>

#include "../common/err.h"

#define TP_NET_BACKLOG 64
#define TP_NET_ADDRSTRLEN 64 /* a numeric address with scope, with NUL */

/* Listens on addr, port chosen by the kernel (*port), admitting only
 * `peer` (NULL = anyone). Returns the listening fd or -1. */
int tp_net_listen(const char *addr, const char *peer, unsigned *port,
		  struct err **errp);

/* Waits for one connection. Writes the peer's numeric address (IPv4 for
 * IPv4-mapped peers, "unix" for unix sockets) into peer when non-NULL.
 * Returns the connected fd or -1. */
int tp_net_accept(int lfd, int timeout_ms, char *peer, size_t peer_len,
		  struct err **errp);

/* Connects to addr:port (port 1..65535) within timeout_ms. */
int tp_net_connect(const char *addr, unsigned port, int timeout_ms,
		   struct err **errp);

/* Listens on a unix socket file with mode 0600 (set before bind, so the
 * file is never more open). A stale socket file (nobody listening) is
 * replaced; a live one ("in use") or any other kind of file is an error.
 * Liveness is probed by connecting: a live owner sees one connection that
 * closes at once. */
int tp_net_unix_listen(const char *path, struct err **errp);

/* Connects to a unix socket within timeout_ms. */
int tp_net_unix_connect(const char *path, int timeout_ms, struct err **errp);

#endif
