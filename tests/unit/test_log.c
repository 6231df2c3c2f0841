/* test_log.c - log lines to the journal (native protocol, structured
 * fields, fallback to stderr), to stderr, and to a task log; the
 * sd_notify datagrams vmmd sends (path and abstract sockets). The journal
 * is a datagram socket of ours ($VMM_JOURNAL_SOCKET). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/journal.h"
#include "common/log.h"
#include "common/notify.h"
#include "common/util.h"

struct fx {
	char dir[64];
	char sock[128];
	int fd;          /* our "journal" */
	int saved_err;   /* the real stderr */
	char errpath[128];
};

static int bind_dgram(const char *path, bool abstract)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	if (abstract) {
		/* "@name": a NUL first, the length without a trailing NUL. */
		memcpy(sa.sun_path + 1, path + 1, strlen(path) - 1);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	} else {
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	}
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
	return fd;
}

/* stderr goes to a file of ours, which JOURNAL_STREAM names (or not). */
static void stderr_to_file(struct fx *f, bool is_journal)
{
	struct stat st;
	char env[64];
	int fd = open(f->errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	fflush(stderr);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	close(fd);
	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	if (is_journal)
		setenv("JOURNAL_STREAM", env, 1);
	else
		unsetenv("JOURNAL_STREAM");
	log_init("vmtest");
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/vmm-test-log.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->sock, sizeof(f->sock), "%s/journal", f->dir);
	snprintf(f->errpath, sizeof(f->errpath), "%s/stderr", f->dir);
	f->fd = bind_dgram(f->sock, false);
	setenv("VMM_JOURNAL_SOCKET", f->sock, 1);
	f->saved_err = dup(STDERR_FILENO);
	unsetenv("VMM_LOG");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char path[256];

	fflush(stderr);
	dup2(f->saved_err, STDERR_FILENO);
	close(f->saved_err);
	unsetenv("JOURNAL_STREAM");
	log_init("vmtest");
	log_field_set("VMMIGRATE_VMID", NULL);
	log_field_set("VMMIGRATE_JOB", NULL);
	close(f->fd);
	unlink(f->sock);
	unlink(f->errpath);
	snprintf(path, sizeof(path), "%s/task.log", f->dir);
	unlink(path);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* One datagram, or NULL if none is waiting. */
static char *recv_entry(int fd, size_t *len)
{
	char *buf = calloc(1, 65536);
	ssize_t n;

	assert_non_null(buf);
	n = recv(fd, buf, 65535, MSG_DONTWAIT);
	if (n < 0) {
		assert_int_equal(errno, EAGAIN);
		free(buf);
		return NULL;
	}
	*len = (size_t)n;
	return buf;
}

/* The value of field key in an entry (both encodings), or NULL. */
static char *field(const char *e, size_t len, const char *key)
{
	size_t i = 0, kl = strlen(key);

	while (i < len) {
		const char *nl = memchr(e + i, '\n', len - i), *eq;
		size_t ll;

		assert_non_null(nl);
		ll = (size_t)(nl - (e + i));
		eq = memchr(e + i, '=', ll);
		if (eq) {
			if ((size_t)(eq - (e + i)) == kl && !memcmp(e + i, key, kl))
				return strndup(eq + 1, (size_t)(nl - eq - 1));
			i += ll + 1;
			continue;
		}
		/* KEY\n, 64-bit little-endian length, value, \n */
		uint64_t vl = 0;
		const char *p = nl + 1;

		for (unsigned b = 0; b < 8; b++)
			vl |= (uint64_t)(unsigned char)p[b] << (8 * b);
		assert_true((size_t)(p + 8 - e) + vl + 1 <= len);
		assert_int_equal(p[8 + vl], '\n');
		if (ll == kl && !memcmp(e + i, key, kl))
			return strndup(p + 8, vl);
		i = (size_t)(p + 8 - e) + vl + 1;
	}
	return NULL;
}

static void assert_field(const char *e, size_t len, const char *key, const char *want)
{
	_cleanup_free_ char *v = field(e, len, key);

	if (!want) {
		assert_null(v);
		return;
	}
	assert_non_null(v);
	assert_string_equal(v, want);
}

static void test_journal_fields(void **state)
{
	struct fx *f = *state;
	_cleanup_free_ char *e1 = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL;
	_cleanup_free_ char *err = NULL;
	size_t l1, l2, l3, l4;

	stderr_to_file(f, true);
	log_field_set("VMMIGRATE_VMID", "106");
	log_field_set("VMMIGRATE_JOB", "106-0");
	log_info("sync of %s started", "106-0");
	e1 = recv_entry(f->fd, &l1);
	assert_non_null(e1);
	assert_field(e1, l1, "PRIORITY", "6");
	assert_field(e1, l1, "SYSLOG_IDENTIFIER", "vmtest");
	assert_field(e1, l1, "MESSAGE", "sync of 106-0 started");
	assert_field(e1, l1, "VMMIGRATE_VMID", "106");
	assert_field(e1, l1, "VMMIGRATE_JOB", "106-0");

	/* Levels map to syslog priorities; a removed field is gone. */
	log_field_set("VMMIGRATE_JOB", NULL);
	log_warn("slow");
	e2 = recv_entry(f->fd, &l2);
	assert_non_null(e2);
	assert_field(e2, l2, "PRIORITY", "4");
	assert_field(e2, l2, "VMMIGRATE_JOB", NULL);
	assert_field(e2, l2, "VMMIGRATE_VMID", "106");
	log_error("failed");
	e3 = recv_entry(f->fd, &l3);
	assert_non_null(e3);
	assert_field(e3, l3, "PRIORITY", "3");

	/* A newline in the message: the binary form keeps it whole. */
	log_info("two\nlines");
	e4 = recv_entry(f->fd, &l4);
	assert_non_null(e4);
	assert_field(e4, l4, "MESSAGE", "two\nlines");
	assert_field(e4, l4, "PRIORITY", "6");

	/* Below the level: nothing at all. Nothing went to stderr. */
	log_debug("hidden");
	assert_null(recv_entry(f->fd, &l1));
	fflush(stderr);
	err = util_read_file(f->errpath, 4096, NULL);
	assert_non_null(err);
	assert_string_equal(err, "");
}

static void test_journal_fallback(void **state)
{
	struct fx *f = *state;
	_cleanup_free_ char *err = NULL;

	/* The journal's socket is gone: the line goes to stderr. */
	setenv("VMM_JOURNAL_SOCKET", "/nonexistent/journal", 1);
	stderr_to_file(f, true);
	log_info("still here %d", 7);
	fflush(stderr);
	setenv("VMM_JOURNAL_SOCKET", f->sock, 1);
	err = util_read_file(f->errpath, 4096, NULL);
	assert_non_null(err);
	assert_non_null(strstr(err, " vmtest info: still here 7\n"));
}

static void test_terminal_lines(void **state)
{
	struct fx *f = *state;
	_cleanup_free_ char *err = NULL;
	size_t len;
	int hh, mm, ss, ms, end = 0;

	/* JOURNAL_STREAM names another file (stderr was redirected): stderr. */
	stderr_to_file(f, false);
	setenv("JOURNAL_STREAM", "1:2", 1);
	log_init("vmtest");
	log_field_set("VMMIGRATE_VMID", "106");
	log_warn("disk %s", "full");
	fflush(stderr);
	assert_null(recv_entry(f->fd, &len));
	err = util_read_file(f->errpath, 4096, NULL);
	assert_non_null(err);
	assert_int_equal(sscanf(err, "%2d:%2d:%2d.%3d %n", &hh, &mm, &ss, &ms, &end), 4);
	assert_string_equal(err + end, "vmtest warn: disk full\n");
}

static void test_task_log(void **state)
{
	struct fx *f = *state;
	_cleanup_free_ char *text = NULL;
	char path[256];
	struct err *e = NULL;

	stderr_to_file(f, false);
	snprintf(path, sizeof(path), "%s/task.log", f->dir);
	assert_true(log_task_open(path, &e));
	log_info("phase %s", "transfer");
	log_task_close("target QEMU exited");
	log_info("after the task");
	text = util_read_file(path, 4096, NULL);
	assert_non_null(text);
	assert_non_null(strstr(text, " info: phase transfer\nTASK ERROR: target QEMU exited\n"));
	assert_null(strstr(text, "after the task"));
	assert_int_equal(text[4], '-'); /* YYYY-MM-DD */
	free(TAKE_PTR(text));

	assert_true(log_task_open(path, &e));
	log_task_close(NULL);
	text = util_read_file(path, 4096, NULL);
	assert_string_equal(text, "TASK OK\n");

	assert_false(log_task_open("/nonexistent/dir/log", &e));
	assert_non_null(strstr(e->msg, "cannot open task log '/nonexistent/dir/log'"));
	err_free(e);
}

static void test_journal_bad_key(void **state)
{
	struct fx *f = *state;
	struct journal_field bad[] = { { "lower", "x" } };
	struct err *e = NULL;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_false(journal_send(fd, f->sock, bad, 1, &e));
	assert_string_equal(e->msg, "invalid journal field name 'lower'");
	err_free(e);
	close(fd);
}

static void test_notify(void **state)
{
	struct fx *f = *state;
	char path[128], buf[256], abs[64];
	struct err *e = NULL;
	ssize_t n;
	int fd, afd;

	(void)state;
	unsetenv("NOTIFY_SOCKET");
	assert_true(notify_send("READY=1", &e)); /* not under systemd: no-op */

	snprintf(path, sizeof(path), "%s/notify", f->dir);
	fd = bind_dgram(path, false);
	setenv("NOTIFY_SOCKET", path, 1);
	assert_true(notify_send("READY=1\nSTATUS=standalone", &e));
	n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	assert_int_equal(n, strlen("READY=1\nSTATUS=standalone"));
	buf[n] = '\0';
	assert_string_equal(buf, "READY=1\nSTATUS=standalone");
	close(fd);
	unlink(path);

	snprintf(abs, sizeof(abs), "@vmm-test-notify-%d", (int)getpid());
	afd = bind_dgram(abs, true);
	setenv("NOTIFY_SOCKET", abs, 1);
	assert_true(notify_send("STOPPING=1", &e));
	n = recv(afd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	assert_int_equal(n, 10);
	buf[n] = '\0';
	assert_string_equal(buf, "STOPPING=1");
	close(afd);

	setenv("NOTIFY_SOCKET", "relative/path", 1);
	assert_false(notify_send("READY=1", &e));
	assert_string_equal(e->msg, "unusable NOTIFY_SOCKET 'relative/path'");
	err_free(e);
	e = NULL;
	setenv("NOTIFY_SOCKET", path, 1); /* nobody listens any more */
	assert_false(notify_send("READY=1", &e));
	assert_non_null(strstr(e->msg, "cannot notify systemd at"));
	err_free(e);
	unsetenv("NOTIFY_SOCKET");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_journal_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_fallback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_terminal_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_task_log, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_bad_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_notify, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
