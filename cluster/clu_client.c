/*
 * clu_client.c - the CLIs' side of vmmd's unix socket: one request, one
 * reply, matched by id, with a deadline. See clu.h.
 */
#include "clu.h"
#include "../common/cleanup.h"
#include "../common/util.h"
#include "../transport/tp.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct clu_client {
	int fd;
	struct tp_jsonl rd;
	int64_t next_id;
	char path[108];
};

const char *clu_default_socket(void)
{
	const char *s = getenv("VMM_SOCKET");

	return s && *s ? s : "/run/vmmigrate/vmmd.sock";
}

struct clu_client *clu_client_open(const char *path, struct err **errp)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct clu_client *c;

	if (!path)
		path = clu_default_socket();
	if (strlen(path) >= sizeof(sa.sun_path)) {
		err_set(errp, ERR_INVAL, "socket path too long: '%s'", path);
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	strcpy(sa.sun_path, path);
	strcpy(c->path, path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err_set(errp, ERR_IO, "cannot reach vmmd at '%s': %s (is vmmd running on this node?)",
			path, strerror(errno));
		if (c->fd >= 0)
			close(c->fd);
		free(c);
		return NULL;
	}
	tp_jsonl_init(&c->rd, 256u << 20);
	return c;
}

void clu_client_close(struct clu_client *c)
{
	if (!c)
		return;
	close(c->fd);
	tp_jsonl_free(&c->rd);
	free(c);
}

static enum err_code code_of(const char *name)
{
	for (int i = 0; i < ERR_CODE_MAX; i++)
		if (name && !strcmp(name, err_code_name((enum err_code)i)))
			return (enum err_code)i;
	return ERR_IO;
}

struct json_object *clu_client_call(struct clu_client *c, struct json_object *req,
				    int timeout_ms, struct err **errp)
{
	int64_t id = ++c->next_id, deadline = util_now_ms() + timeout_ms;
	const char *text;
	size_t len;
	_cleanup_free_ char *line = NULL;

	json_object_object_add(req, "id", json_object_new_int64(id));
	text = json_object_to_json_string_length(req, JSON_C_TO_STRING_PLAIN, &len);
	line = malloc(len + 2);
	if (!line) {
		json_object_put(req);
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	memcpy(line, text, len);
	line[len] = '\n';
	json_object_put(req);
	if (!util_write_all(c->fd, line, len + 1, errp))
		return NULL;
	for (;;) {
		struct json_object *m, *v;
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		char buf[65536];
		ssize_t n;
		int r = tp_jsonl_next(&c->rd, &m, errp);

		if (r < 0)
			return NULL;
		if (r > 0) {
			if (!json_object_object_get_ex(m, "id", &v) || json_object_get_int64(v) != id) {
				json_object_put(m);
				continue;
			}
			if (json_object_object_get_ex(m, "ok", &v) && json_object_get_boolean(v))
				return m;
			{
				struct json_object *code = NULL, *msg = NULL;

				json_object_object_get_ex(m, "code", &code);
				json_object_object_get_ex(m, "error", &msg);
				err_set(errp, code_of(code ? json_object_get_string(code) : NULL), "%s",
					msg ? json_object_get_string(msg) : "vmmd refused the request");
			}
			json_object_put(m);
			return NULL;
		}
		if (poll(&p, 1, (int)(deadline > util_now_ms() ? deadline - util_now_ms() : 0)) <= 0) {
			err_set(errp, ERR_TIMEOUT, "vmmd at '%s' did not answer within %d s", c->path,
				timeout_ms / 1000);
			return NULL;
		}
		n = read(c->fd, buf, sizeof(buf));
		if (n <= 0) {
			err_set(errp, ERR_CLOSED, "vmmd at '%s' closed the connection", c->path);
			return NULL;
		}
		if (!tp_jsonl_feed(&c->rd, buf, (size_t)n, errp))
			return NULL;
	}
}

char *clu_client_get(struct clu_client *c, const char *key, uint64_t *version,
		     struct err **errp)
{
	struct json_object *req = json_object_new_object(), *r, *v;
	char *out = NULL;

	json_object_object_add(req, "cmd", json_object_new_string("get"));
	json_object_object_add(req, "key", json_object_new_string(key));
	r = clu_client_call(c, req, 10000, errp);
	if (!r)
		return NULL;
	if (json_object_object_get_ex(r, "value", &v))
		out = strdup(json_object_get_string(v));
	if (version && json_object_object_get_ex(r, "version", &v))
		*version = (uint64_t)json_object_get_int64(v);
	json_object_put(r);
	if (!out)
		err_set(errp, ERR_IO, "out of memory");
	return out;
}

bool clu_client_write(struct clu_client *c, const struct clu_op *op, uint64_t *version,
		      struct err **errp)
{
	struct json_object *req = json_object_new_object(), *r, *v;

	json_object_object_add(req, "cmd", json_object_new_string("write"));
	json_object_object_add(req, "op", clu_op_to_json(op));
	r = clu_client_call(c, req, 15000, errp);
	if (!r)
		return false;
	if (version && json_object_object_get_ex(r, "version", &v))
		*version = (uint64_t)json_object_get_int64(v);
	json_object_put(r);
	return true;
}
