/*
 * notify.h - systemd's readiness protocol (sd_notify), without libsystemd.
 *
 * A service of Type=notify tells systemd how it is doing by sending
 * datagrams of newline-separated "VAR=value" assignments ("READY=1",
 * "STATUS=synced, quorate", "STOPPING=1") to the AF_UNIX socket named in
 * $NOTIFY_SOCKET: a path, or '@' for the abstract namespace.
 *
 * Contract: notify_send() is a no-op returning true when $NOTIFY_SOCKET is
 * unset or empty (not run by systemd); otherwise it sends `state` as one
 * datagram and returns false with *errp set (naming the socket) if the
 * address is unusable or the send fails. It never blocks and never raises
 * SIGPIPE; it is safe from any thread.
 */
#ifndef VMM_NOTIFY_H
#define VMM_NOTIFY_H

#include <stdbool.h>

#include "err.h"

bool notify_send(const char *state, struct err **errp);

#endif
