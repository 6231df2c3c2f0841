/*
 * clu_server.c - vmmd's unix socket for the local CLIs: one JSON object
 * per line each way, read with the same bounded reader as QMP. Replies are
 * buffered and written when the socket can take them, so a slow or stuck
 * client never blocks the daemon.
 */
#include "clu_daemon.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CLIENT_MAX_MSG (2u << 20)

/* The socket's directory, root's only, if missing: systemd makes
 * /run/vmmigrate (RuntimeDirectory=), a vmmd started by hand must too. */
static bool mkdir_parent(const char *path, struct err **errp)
{
	_cleanup_free_ char *dir = strdup(path);
	char *slash;

	if (!dir)
		return err_set(errp, ERR_IO, "out of memory");
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return true;
	*slash = '\0';
	return util_mkdir_p(dir, 0700, errp);
}

bool clu_server_listen(struct clu_daemon *d, const char *path, struct err **errp)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return err_set(errp, ERR_INVAL, "socket path too long: '%s'", path);
	if (!mkdir_parent(path, errp))
		return false;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return err_set_errno(errp, errno, "socket");
	unlink(path);
	/* Root only: the socket changes cluster state. */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0600) < 0 ||
	    listen(fd, 64) < 0) {
		err_set_errno(errp, errno, "cannot listen on '%s'", path);
		close(fd);
		return false;
	}
	d->listen_fd = fd;
	for (int i = 0; i < CLU_MAX_CLIENTS; i++)
		d->clients[i].fd = -1;
	return true;
}

static void client_free(struct clu_daemon *d, int i)
{
	struct clu_client *c = &d->clients[i];

	if (c->fd < 0)
		return;
	close(c->fd);
	c->fd = -1;
	tp_jsonl_free(&c->rd);
	free(c->out);
	c->out = NULL;
	c->out_len = c->out_cap = 0;
	c->closing = false;
	d->client_gen[i]++;
	/* Its waiting watches die with it; its writes still complete. */
	for (int p = 0; p < CLU_MAX_PENDING; p++)
		if (d->pending[p].used && d->pending[p].client == i && d->pending[p].watch) {
			free(d->pending[p].prefix);
			json_object_put(d->pending[p].op);
			memset(&d->pending[p], 0, sizeof(d->pending[p]));
		}
}

void clu_server_accept(struct clu_daemon *d)
{
	for (;;) {
		int fd = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		int i;

		if (fd < 0)
			return;
		for (i = 0; i < CLU_MAX_CLIENTS && d->clients[i].fd >= 0; i++)
			;
		if (i == CLU_MAX_CLIENTS) {
			log_warn("too many clients; refusing one");
			close(fd);
			continue;
		}
		d->clients[i].fd = fd;
		tp_jsonl_init(&d->clients[i].rd, CLIENT_MAX_MSG);
	}
}

static bool flush(struct clu_daemon *d, int i)
{
	struct clu_client *c = &d->clients[i];

	while (c->out_len) {
		ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return true;
		if (n <= 0)
			return false;
		memmove(c->out, c->out + n, c->out_len - (size_t)n);
		c->out_len -= (size_t)n;
	}
	return !c->closing;
}

bool clu_server_io(struct clu_daemon *d, int i, short revents)
{
	struct clu_client *c = &d->clients[i];
	char buf[16384];

	if (revents & POLLOUT && !flush(d, i)) {
		client_free(d, i);
		return false;
	}
	if (!(revents & (POLLIN | POLLHUP | POLLERR)))
		return true;
	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
		struct json_object *req;
		struct err *e = NULL;
		int r;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return true;
		if (n <= 0) {
			client_free(d, i);
			return false;
		}
		if (!tp_jsonl_feed(&c->rd, buf, (size_t)n, &e))
			goto bad;
		while ((r = tp_jsonl_next(&c->rd, &req, &e)) > 0) {
			clu_daemon_request(d, i, req);
			json_object_put(req);
			if (c->fd < 0)
				return false;
		}
		if (r < 0)
			goto bad;
		continue;
bad:
		clu_server_error(d, i, -1, e);
		err_free(e);
		c->closing = true;
		flush(d, i);
		client_free(d, i);
		return false;
	}
}

void clu_server_reply(struct clu_daemon *d, int i, int64_t id, struct json_object *reply)
{
	struct clu_client *c = &d->clients[i];
	const char *text;
	size_t len;

	if (i < 0 || i >= CLU_MAX_CLIENTS || c->fd < 0) {
		json_object_put(reply);
		return;
	}
	json_object_object_add(reply, "id", json_object_new_int64(id));
	if (!json_object_object_get_ex(reply, "ok", NULL))
		json_object_object_add(reply, "ok", json_object_new_boolean(true));
	text = json_object_to_json_string_length(reply, JSON_C_TO_STRING_PLAIN, &len);
	if (c->out_len + len + 1 > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		char *nb;

		while (cap < c->out_len + len + 1)
			cap *= 2;
		nb = realloc(c->out, cap);
		if (!nb) {
			json_object_put(reply);
			c->closing = true;
			return;
		}
		c->out = nb;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, text, len);
	c->out[c->out_len + len] = '\n';
	c->out_len += len + 1;
	json_object_put(reply);
	flush(d, i);
}

void clu_server_error(struct clu_daemon *d, int i, int64_t id, const struct err *e)
{
	struct json_object *r = json_object_new_object();

	json_object_object_add(r, "ok", json_object_new_boolean(false));
	json_object_object_add(r, "error", json_object_new_string(e ? e->msg : "failed"));
	json_object_object_add(r, "code", json_object_new_string(err_code_name(e ? e->code : ERR_IO)));
	clu_server_reply(d, i, id, r);
}

void clu_server_close_all(struct clu_daemon *d)
{
	for (int i = 0; i < CLU_MAX_CLIENTS; i++)
		client_free(d, i);
	if (d->listen_fd >= 0)
		close(d->listen_fd);
	d->listen_fd = -1;
}
