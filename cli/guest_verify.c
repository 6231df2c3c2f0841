/*
 * guest_verify.c - `vmguest verify`: ask the test guest to check all of
 * its memory (and disk) patterns now, over its second serial port.
 *
 * The test guest answers "VMTEST VERIFY OK ..." or "VMTEST VERIFY FAIL ...";
 * the exit status is 0 only for OK, so scripts can trust it.
 */
#include "guest.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static const struct cli_opt opts[] = {
	{ "dir", CLI_VALUE, "DIR", "the guest's run directory", true },
	{ "timeout", CLI_VALUE, "S", "seconds to wait for the answer; default 60" },
	{ NULL }
};

/* Reads lines until one starts with `prefix`; copies it to out. */
static bool await_line(int fd, const char *prefix, int timeout_ms, char *out,
		       size_t outlen, struct err **errp)
{
	char buf[8192];
	size_t len = 0;
	int64_t deadline = util_now_ms() + timeout_ms;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - util_now_ms();
		char *nl;
		ssize_t n;

		if (left <= 0 || poll(&p, 1, (int)left) == 0)
			return err_set(errp, ERR_TIMEOUT,
				       "the guest did not answer '%s' within %d s", prefix,
				       timeout_ms / 1000);
		n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return err_set(errp, ERR_CLOSED, "guest command channel closed");
		len += (size_t)n;
		buf[len] = '\0';
		while ((nl = strchr(buf, '\n'))) {
			char *line = buf, *cr;

			*nl = '\0';
			if ((cr = strchr(line, '\r')))
				*cr = '\0';
			if (!strncmp(line, prefix, strlen(prefix))) {
				size_t ln = strlen(line) < outlen ? strlen(line) : outlen - 1;

				memcpy(out, line, ln);
				out[ln] = '\0';
				return true;
			}
			len -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, len + 1);
		}
		if (len == sizeof(buf) - 1)
			len = 0; /* an endless line is noise: drop it */
	}
}

static int exec_verify(const struct cli_args *a)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -1;
	struct err *e = NULL;
	char line[1024];
	int timeout_ms;

	if (!cli_seconds(a, "timeout", 60, &timeout_ms, &e))
		return cli_report(a, e);
	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/cmd.sock", cli_get(a, "dir")) >=
	    (int)sizeof(sa.sun_path))
		return cli_fail(a, "run directory '%s' is too long", cli_get(a, "dir"));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err_set_errno(&e, errno, "cannot reach the guest's command channel '%s'",
			      sa.sun_path);
		return cli_report(a, e);
	}
	if (!util_write_all(fd, "verify\n", 7, &e) ||
	    !await_line(fd, "VMTEST VERIFY", timeout_ms, line, sizeof(line), &e))
		return cli_report(a, e);
	printf("%s\n", line);
	return strncmp(line, "VMTEST VERIFY OK", 16) ? 1 : 0;
}

const struct cli_cmd cli_guest_verify = {
	.name = "verify",
	.posargs = "",
	.summary = "make the test guest verify all its memory/disk patterns now",
	.opts = opts,
	.exec = exec_verify,
};
