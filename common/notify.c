/* notify.c - sd_notify's datagram protocol. See notify.h. */
#include "notify.h"
#include "cleanup.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

bool notify_send(const char *state, struct err **errp)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -1;
	size_t len;
	socklen_t salen;

	if (!path || !*path)
		return true;
	len = strlen(path);
	/* systemd also knows vsock addresses; we run on the host only. */
	if ((path[0] != '/' && path[0] != '@') || len < 2 || len >= sizeof(sa.sun_path))
		return err_set(errp, ERR_INVAL, "unusable NOTIFY_SOCKET '%s'", path);
	memcpy(sa.sun_path, path, len);
	if (path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract: the length says where it ends */
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
			    (path[0] == '/' ? 1 : 0));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return err_set_errno(errp, errno, "cannot notify systemd at '%s'", path);
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL | MSG_DONTWAIT,
		   (struct sockaddr *)&sa, salen) < 0)
		return err_set_errno(errp, errno, "cannot notify systemd at '%s'", path);
	return true;
}
