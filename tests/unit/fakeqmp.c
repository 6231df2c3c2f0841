/* fakeqmp.c - see fakeqmp.h. */
#include "fakeqmp.h"

#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void *run(void *arg)
{
	struct fakeqmp *f = arg;

	f->script(f);
	return NULL;
}

void fakeqmp_start(struct fakeqmp *f, fakeqmp_script script, void *opaque)
{
	int sv[2];

	memset(f, 0, sizeof(*f));
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	f->client_fd = sv[0];
	f->fd = sv[1];
	f->received_fd = -1;
	f->script = script;
	f->opaque = opaque;
	if (pthread_create(&f->thread, NULL, run, f))
		abort();
}

void fakeqmp_finish(struct fakeqmp *f)
{
	pthread_join(f->thread, NULL);
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	if (f->received_fd >= 0)
		close(f->received_fd);
}

void fakeqmp_send(struct fakeqmp *f, const char *text)
{
	size_t len = strlen(text);

	while (len) {
		ssize_t n = send(f->fd, text, len, MSG_NOSIGNAL);
		if (n <= 0) {
			f->failed = true;
			return;
		}
		text += n;
		len -= (size_t)n;
	}
}

void fakeqmp_sendf(struct fakeqmp *f, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	fakeqmp_send(f, s);
	free(s);
}

/* Reads one line, collecting a passed descriptor if any. */
static char *read_line(struct fakeqmp *f)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);

	for (;;) {
		char c;
		struct iovec iov = { .iov_base = &c, .iov_len = 1 };
		union {
			char b[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} cm;
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };
		ssize_t n = recvmsg(f->fd, &mh, 0);
		struct cmsghdr *ch;

		if (n <= 0) {
			free(buf);
			return NULL;
		}
		for (ch = CMSG_FIRSTHDR(&mh); ch; ch = CMSG_NXTHDR(&mh, ch))
			if (ch->cmsg_type == SCM_RIGHTS)
				memcpy(&f->received_fd, CMSG_DATA(ch), sizeof(int));
		if (c == '\n') {
			buf[len] = '\0';
			return buf;
		}
		if (len + 2 >= cap)
			buf = realloc(buf, cap *= 2);
		buf[len++] = c;
	}
}

int64_t fakeqmp_read_cmd(struct fakeqmp *f)
{
	char *line = read_line(f);
	struct json_object *o, *v;
	int64_t id = -1;

	f->last_cmd[0] = '\0';
	f->last_args[0] = '\0';
	if (!line)
		return -1;
	o = json_tokener_parse(line);
	free(line);
	if (!o) {
		f->failed = true;
		return -1;
	}
	if (json_object_object_get_ex(o, "execute", &v))
		snprintf(f->last_cmd, sizeof(f->last_cmd), "%s", json_object_get_string(v));
	if (json_object_object_get_ex(o, "arguments", &v))
		snprintf(f->last_args, sizeof(f->last_args), "%s",
			 json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
	if (json_object_object_get_ex(o, "id", &v))
		id = json_object_get_int64(v);
	json_object_put(o);
	return id;
}

void fakeqmp_greet(struct fakeqmp *f)
{
	int64_t id;

	fakeqmp_send(f, "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, "
			"\"major\": 7}, \"package\": \"Debian 1:7.2\"}, \"capabilities\": "
			"[\"oob\"]}}\r\n");
	id = fakeqmp_read_cmd(f);
	if (strcmp(f->last_cmd, "qmp_capabilities"))
		f->failed = true;
	fakeqmp_sendf(f, "{\"return\": {}, \"id\": %lld}\r\n", (long long)id);
}

void fakeqmp_close(struct fakeqmp *f)
{
	close(f->fd);
	f->fd = -1;
}
