/*
 * test_ssh.c - the SSH transport against a real OpenSSH sshd that the
 * group fixture starts on 127.0.0.1 with keys made for the run: argv
 * reaches the remote command verbatim (no shell injection), exit status,
 * signals and stderr; host key pinning; public key authentication;
 * forwards (64 MiB with checksums, half close both ways, many at once over
 * several sessions, refusals); closing with live channels; connect and
 * handshake timeouts; a far end that resets mid-stream; and a connection
 * whose sshd is killed mid-transfer. Loopback only; the far ends of
 * forwards are listeners of this process. The sshd, its keys and the
 * traffic helpers (fx_*) are in sshd_fixture.[ch]; this file holds the
 * tests and their assertions.
 *
 * Debugging: TEST_FILTER=test_name runs matching tests, VMM_LOG=debug shows
 * the pump, TEST_SSH_KEEP=1 keeps the temp dir (sshd_config, sshd.log).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/util.h"
#include "sshd_fixture.h"
#include "transport/tp_ssh.h"

#define MIB (1u << 20)

/* One sshd for the whole group (sshd_fixture.h). */
static struct fx_sshd F;

static int group_setup(void **state)
{
	(void)state;
	return fx_sshd_start(&F) ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	fx_sshd_stop(&F);
	return 0;
}

/* ---- assertions ----------------------------------------------------------------- */

/* Reads fd to its EOF within timeout_ms; the bytes, NUL-terminated. */
static char *read_all(int fd, int timeout_ms, size_t *len)
{
	int64_t deadline = util_now_ms() + timeout_ms;
	size_t cap = 4096, n = 0;
	char *b = malloc(cap);

	assert_non_null(b);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = (int)(deadline - util_now_ms());
		ssize_t r;

		if (left <= 0 || poll(&p, 1, left) == 0)
			fail_msg("no EOF within %d ms (%zu bytes read)", timeout_ms, n);
		r = read(fd, b + n, cap - n - 1);
		if (r == 0)
			break;
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			fail_msg("read: %s", strerror(errno));
		}
		n += (size_t)r;
		if (cap - n < 2) {
			cap *= 2;
			b = realloc(b, cap);
			assert_non_null(b);
		}
	}
	b[n] = '\0';
	if (len)
		*len = n;
	return b;
}

/* What the next read of fd says within timeout_ms: bytes, 0 (EOF) or
 * -errno; fails the test if it says nothing. */
#define read_result(fd, ms) read_result_at(fd, ms, __LINE__)
static long read_result_at(int fd, int timeout_ms, int line)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char c[256];
	ssize_t r;

	if (poll(&p, 1, timeout_ms) != 1)
		fail_msg("line %d: fd %d stayed silent for %d ms", line, fd, timeout_ms);
	r = recv(fd, c, sizeof(c), MSG_DONTWAIT);
	return r < 0 ? -errno : r;
}

static void assert_err(struct err *e, enum err_code code, const char *part)
{
	if (!e)
		fail_msg("no error, expected one with \"%s\"", part);
	if (!strstr(e->msg, part))
		fail_msg("error \"%s\" lacks \"%s\"", e->msg, part);
	if (e->code != code)
		fail_msg("error \"%s\" has code %s, expected %s", e->msg, err_code_name(e->code),
			 err_code_name(code));
}

/* The reply an FX_FAR_SINK owes x: "LEN FNV\n" and its pattern. */
static void assert_sink_reply(const struct fx_xfer *x, const struct fx_far *f)
{
	char hdr[64];
	int hl = snprintf(hdr, sizeof(hdr), "%llu %016llx\n", (unsigned long long)x->len,
			  (unsigned long long)x->out_fnv);

	if (x->err)
		fail_msg("transfer failed: %s", strerror(x->err));
	assert_true(x->in_eof);
	assert_int_equal(x->sent, x->len);
	assert_int_equal(x->got, (uint64_t)hl + f->reply_len);
	assert_memory_equal(x->head, hdr, (size_t)hl);
	assert_int_equal(x->in_fnv,
			 fx_pattern_fnv(f->reply_seed, f->reply_len, fx_fnv(FX_FNV0, hdr, (size_t)hl)));
}

static void assert_echoed(const struct fx_xfer *x)
{
	if (x->err)
		fail_msg("transfer failed: %s", strerror(x->err));
	assert_true(x->in_eof);
	assert_int_equal(x->sent, x->len);
	assert_int_equal(x->got, x->len);
	assert_int_equal(x->in_fnv, x->out_fnv);
}

/* ---- steps that fail the test when they fail -------------------------------- */

/* A far end of forwards (sshd_fixture.h). */
static struct fx_far *far_ok(enum fx_far_mode mode, uint64_t reply_seed, size_t reply_len)
{
	struct fx_far *f = fx_far_start(mode, reply_seed, reply_len);

	if (!f)
		fail_msg("cannot start a far end: %s", strerror(errno));
	return f;
}

static struct tp_ssh_opts opts(void)
{
	return (struct tp_ssh_opts){ .host = "127.0.0.1", .port = F.port, .key = F.client_key,
				     .host_key = F.host_pub, .timeout_ms = 5000 };
}

static struct tp_ssh *open_ok(void)
{
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;
	struct tp_ssh *s = tp_ssh_open(&o, &e);

	if (!s) {
		fx_sshd_print_log(&F);
		fail_msg("tp_ssh_open: %s", e->msg);
	}
	assert_null(tp_ssh_failed(s));
	return s;
}

static int exec_ok(struct tp_ssh *s, const char *const argv[])
{
	struct err *e = NULL;
	int fd = tp_ssh_exec(s, argv, &e);

	if (fd < 0)
		fail_msg("tp_ssh_exec %s: %s", argv[0], e->msg);
	return fd;
}

/* A socketpair end bridged to 127.0.0.1:port on the server's side. */
static int forward_ok(struct tp_ssh *s, unsigned port)
{
	struct err *e = NULL;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	if (!tp_ssh_forward(s, sv[1], "127.0.0.1", port, &e))
		fail_msg("tp_ssh_forward to port %u: %s", port, e->msg);
	return sv[0];
}

/* ---- quoting (pure) ---------------------------------------------------------------- */

static void test_quote_argv(void **state)
{
	static const struct {
		const char *argv[4];
		const char *quoted;
	} cases[] = {
		{ { "ls", NULL }, "'ls'" },
		{ { "printf", "%s\\n", "", NULL }, "'printf' '%s\\n' ''" },
		{ { "it's", NULL }, "'it'\\''s'" },
		{ { "''", "'", NULL }, "''\\'''\\''' ''\\'''" },
		{ { "$(id)", "`id`; rm -rf /", "a\nb", NULL }, "'$(id)' '`id`; rm -rf /' 'a\nb'" },
		{ { "\"$HOME\" \\ *", NULL }, "'\"$HOME\" \\ *'" },
	};
	struct err *e = NULL;
	char *q;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		q = tp_ssh_quote_argv(cases[i].argv, &e);
		assert_non_null(q);
		assert_string_equal(q, cases[i].quoted);
		free(q);
	}
	assert_null(e);
	assert_null(tp_ssh_quote_argv((const char *const[]){ NULL }, &e));
	assert_err(e, ERR_INVAL, "empty remote command");
	err_free(e);
	e = NULL;
	assert_null(tp_ssh_quote_argv(NULL, &e));
	assert_err(e, ERR_INVAL, "empty remote command");
	err_free(e);
}

/* ---- keys ---------------------------------------------------------------------------- */

static void test_pubkey_read(void **state)
{
	char path[96];
	struct err *e = NULL;
	char *k;

	(void)state;
	snprintf(path, sizeof(path), "%s.pub", F.host_key);
	k = tp_ssh_pubkey_read(path, &e);
	assert_non_null(k);
	assert_string_equal(k, F.host_pub); /* the comment is gone */
	free(k);

	assert_null(tp_ssh_pubkey_read(F.host_key, &e)); /* the private key */
	assert_err(e, ERR_INVAL, "invalid SSH public key file");
	err_free(e);
	e = NULL;
	snprintf(path, sizeof(path), "%s/nonexistent.pub", F.dir);
	assert_null(tp_ssh_pubkey_read(path, &e));
	assert_non_null(e);
	assert_non_null(strstr(e->msg, "nonexistent.pub"));
	err_free(e);
}

/* Pinned keys that cannot be one are refused before any connection. */
static void test_pinned_key_malformed(void **state)
{
	const char *b64 = strchr(F.host_pub, ' ') + 1;
	char rsa[256];
	static const struct {
		const char *key;
		const char *msg;
	} cases[] = {
		{ "ssh-ed25519", "invalid pinned host key: expected \"TYPE BASE64\"" },
		{ "ssh-ed25519 @@@@", "invalid pinned host key: the key is not base64" },
		{ "ssh-ed25519 AAAA", "invalid pinned host key: the key is truncated" },
	};
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		o.host_key = cases[i].key;
		assert_null(tp_ssh_open(&o, &e));
		assert_err(e, ERR_INVAL, cases[i].msg);
		err_free(e);
		e = NULL;
	}
	/* An ed25519 key labelled as RSA. */
	snprintf(rsa, sizeof(rsa), "ssh-rsa %s", b64);
	o.host_key = rsa;
	assert_null(tp_ssh_open(&o, &e));
	assert_err(e, ERR_INVAL, "invalid pinned host key: the key is not of type 'ssh-rsa'");
	err_free(e);
}

static void test_host_key_mismatch(void **state)
{
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;
	struct tp_ssh *s;
	char want[160];

	(void)state;
	o.host_key = F.other_pub;
	assert_null(tp_ssh_open(&o, &e));
	snprintf(want, sizeof(want),
		 "host key of 127.0.0.1 does not match the pinned key (server offered %s)",
		 F.host_fp);
	assert_err(e, ERR_PROTO, "does not match the pinned key");
	assert_string_equal(e->msg, want);
	err_free(e);
	e = NULL;

	/* The right key, as the .pub file has it (comment, newline): accepted. */
	o.host_key = F.host_line;
	s = tp_ssh_open(&o, &e);
	if (!s)
		fail_msg("pinned key with a comment: %s", e->msg);
	tp_ssh_close(s);
}

static void test_host_key_missing(void **state)
{
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;

	(void)state;
	o.host_key = NULL;
	assert_null(tp_ssh_open(&o, &e));
	assert_err(e, ERR_INVAL, "no pinned host key for SSH server 127.0.0.1 "
				 "(trust on first use is not allowed)");
	err_free(e);
	e = NULL;
	o.host_key = "";
	assert_null(tp_ssh_open(&o, &e));
	assert_err(e, ERR_INVAL, "no pinned host key for SSH server 127.0.0.1");
	err_free(e);
}

static void test_client_key_refused(void **state)
{
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;
	char want[160], path[96];

	(void)state;
	o.key = F.stranger_key; /* valid, but not in authorized_keys */
	assert_null(tp_ssh_open(&o, &e));
	snprintf(want, sizeof(want),
		 "SSH authentication as root at 127.0.0.1 with key '%s' failed: ", F.stranger_key);
	assert_err(e, ERR_INVAL, want);
	err_free(e);
	e = NULL;

	/* A user the key does not belong to. */
	o.key = F.client_key;
	o.user = "nobody";
	assert_null(tp_ssh_open(&o, &e));
	assert_err(e, ERR_INVAL, "SSH authentication as nobody at 127.0.0.1");
	err_free(e);
	e = NULL;

	o.user = NULL;
	snprintf(path, sizeof(path), "%s/nonexistent_key", F.dir);
	o.key = path;
	assert_null(tp_ssh_open(&o, &e));
	snprintf(want, sizeof(want), "cannot read SSH key file '%s': ", path);
	assert_err(e, ERR_IO, want);
	assert_int_equal(e->errnum, ENOENT);
	err_free(e);
	e = NULL;

	o.key = NULL;
	assert_null(tp_ssh_open(&o, &e));
	assert_err(e, ERR_INVAL, "no SSH key file given for 127.0.0.1");
	err_free(e);
}

/* ---- connecting ------------------------------------------------------------------------ */

static void test_connect_refused(void **state)
{
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;
	char want[96];
	int64_t t0;

	(void)state;
	o.port = fx_free_port();
	t0 = util_now_ms();
	assert_null(tp_ssh_open(&o, &e));
	assert_true(util_now_ms() - t0 < 1000);
	snprintf(want, sizeof(want), "cannot connect to SSH server 127.0.0.1 port %u: ", o.port);
	assert_err(e, ERR_IO, want);
	assert_int_equal(e->errnum, ECONNREFUSED);
	err_free(e);
	e = NULL;

	o.host = "localhost"; /* names are not resolved */
	assert_null(tp_ssh_open(&o, &e));
	assert_err(e, ERR_INVAL, "invalid SSH host 'localhost': not an IPv4 or IPv6 address");
	err_free(e);
}

/* A listener whose accept queue is full drops SYNs: the connect hangs like
 * one to a filtered address, and the timeout must end it. */
static void test_connect_timeout(void **state)
{
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;
	unsigned port;
	int lfd = fx_listen_lo(0, &port), filler = fx_connect_lo(port);
	char want[96];
	int64_t t0, dt;

	(void)state;
	assert_true(lfd >= 0);
	assert_true(filler >= 0);
	fx_sleep_ms(20); /* the filler lands in the accept queue */
	o.port = port;
	o.timeout_ms = 300;
	t0 = util_now_ms();
	assert_null(tp_ssh_open(&o, &e));
	dt = util_now_ms() - t0;
	snprintf(want, sizeof(want), "timed out connecting to SSH server 127.0.0.1 port %u", port);
	assert_err(e, ERR_TIMEOUT, want);
	if (dt < 290 || dt > 1000)
		fail_msg("gave up after %lld ms, timeout 300 ms", (long long)dt);
	err_free(e);
	close(filler);
	close(lfd);
}

/* A server that accepts and never speaks: the handshake times out. */
static void test_handshake_timeout(void **state)
{
	struct tp_ssh_opts o = opts();
	struct err *e = NULL;
	unsigned port;
	int lfd = fx_listen_lo(8, &port);
	int64_t t0, dt;

	(void)state;
	assert_true(lfd >= 0);
	o.port = port;
	o.timeout_ms = 300;
	t0 = util_now_ms();
	assert_null(tp_ssh_open(&o, &e));
	dt = util_now_ms() - t0;
	assert_err(e, ERR_TIMEOUT, "timed out during the SSH handshake with SSH server 127.0.0.1");
	if (dt < 290 || dt > 1000)
		fail_msg("gave up after %lld ms, timeout 300 ms", (long long)dt);
	err_free(e);
	close(lfd);
}

/* ---- exec ------------------------------------------------------------------------------ */

static void test_exec_verbatim(void **state)
{
	static const char *const argv[] = {
		"printf", "%s\\n", "two  words", "it's", "\"double\"", "$(echo INJECTED)",
		"a; echo INJECTED", "`echo INJECTED`", "line1\nline2", "$HOME", "*", "",
		"back\\slash\\n", "&& || | > /dev/null < /dev/null &", "-n", "'", NULL,
	};
	_cleanup_ssh_ struct tp_ssh *s = open_ok();
	char want[512] = "", *out;
	size_t len;
	int fd;

	(void)state;
	for (size_t i = 2; argv[i]; i++) {
		strcat(want, argv[i]);
		strcat(want, "\n");
	}
	fd = exec_ok(s, argv);
	out = read_all(fd, 5000, &len);
	close(fd);
	assert_int_equal(len, strlen(want));
	assert_string_equal(out, want);
	/* Nothing ran: no line is the output of an injected echo. */
	assert_null(strstr(out, "\nINJECTED\n"));
	assert_int_equal(tp_ssh_exec_status(s), 0);
	assert_string_equal(tp_ssh_exec_stderr(s), "");
	free(out);
}

static void test_exec_status_stderr(void **state)
{
	_cleanup_ssh_ struct tp_ssh *s = open_ok();
	const char *const fail7[] = { "sh", "-c", "echo to-stdout; echo oops >&2; exit 7", NULL };
	const char *const killed[] = { "sh", "-c", "kill -TERM $$", NULL };
	const char *const missing[] = { "no-such-command-vmm", "x", NULL };
	const char *const cat[] = { "cat", NULL };
	/* 100 numbered lines of 100 bytes to stderr, then END: more than kept. */
	const char *const noisy[] = {
		"sh", "-c",
		"i=0; while [ $i -lt 100 ]; do printf '%099d\\n' $i >&2; i=$((i+1)); done; "
		"echo END >&2",
		NULL };
	char *out, *want;
	const char *err;
	size_t len = 0;
	int fd;

	(void)state;
	fd = exec_ok(s, fail7);
	out = read_all(fd, 5000, NULL);
	close(fd);
	assert_string_equal(out, "to-stdout\n");
	free(out);
	assert_int_equal(tp_ssh_exec_status(s), 7);
	assert_string_equal(tp_ssh_exec_stderr(s), "oops\n");

	fd = exec_ok(s, killed);
	out = read_all(fd, 5000, NULL);
	close(fd);
	free(out);
	assert_int_equal(tp_ssh_exec_status(s), 128 + SIGTERM);

	fd = exec_ok(s, missing);
	out = read_all(fd, 5000, NULL);
	close(fd);
	free(out);
	assert_int_equal(tp_ssh_exec_status(s), 127);
	assert_non_null(strstr(tp_ssh_exec_stderr(s), "no-such-command-vmm"));

	/* Only the last 4 KiB of stderr are kept: the tail, in order. */
	fd = exec_ok(s, noisy);
	out = read_all(fd, 5000, NULL);
	close(fd);
	free(out);
	assert_int_equal(tp_ssh_exec_status(s), 0);
	want = malloc(100 * 100 + 5);
	assert_non_null(want);
	for (int i = 0; i < 100; i++)
		len += (size_t)sprintf(want + len, "%099d\n", i);
	strcpy(want + len, "END\n");
	len += 4;
	err = tp_ssh_exec_stderr(s);
	assert_int_equal(strlen(err), 4096);
	assert_string_equal(err, want + len - 4096);
	free(want);

	/* A new command: no status while it runs, no stderr of the last one;
	 * stdin reaches it, and its EOF ends it. */
	fd = exec_ok(s, cat);
	assert_int_equal(tp_ssh_exec_status(s), -1);
	assert_string_equal(tp_ssh_exec_stderr(s), "");
	assert_true(fx_send_all(fd, "hello\n", 6));
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	out = read_all(fd, 5000, NULL);
	close(fd);
	assert_string_equal(out, "hello\n");
	free(out);
	assert_int_equal(tp_ssh_exec_status(s), 0);

	/* Both directions at once, through several window adjustments. */
	{
		struct fx_xfer x = { .fd = exec_ok(s, cat), .seed = 11, .len = 12 * MIB };

		fx_xfer_run(&x);
		close(x.fd);
		assert_echoed(&x);
		assert_int_equal(tp_ssh_exec_status(s), 0);
	}
	assert_true(tp_ssh_wait_idle(s, 5000, NULL));
	assert_null(tp_ssh_failed(s));
}

/* ---- forwards ---------------------------------------------------------------------------- */

static void test_forward_64m(void **state)
{
	_cleanup_ssh_ struct tp_ssh *s = open_ok();
	struct fx_far *f;
	struct fx_xfer x = { .seed = 64, .len = 64 * MIB };
	struct err *e = NULL;
	uint64_t out, in;

	(void)state;
	f = far_ok(FX_FAR_SINK, 99, 8 * MIB);
	x.fd = forward_ok(s, f->port);
	fx_xfer_run(&x);
	/* The sink answers only after the EOF: the reply proves the local
	 * half close reached it, and what it sent after still came back,
	 * followed by its own EOF. */
	assert_sink_reply(&x, f);
	close(x.fd);
	if (!tp_ssh_wait_idle(s, 5000, &e))
		fail_msg("wait_idle: %s", e->msg);
	fx_far_stop(f);
	assert_int_equal(f->nconns, 1);
	assert_int_equal(f->eofs, 1);
	assert_int_equal(f->bytes_in, 64 * MIB);
	free(f);
	tp_ssh_stats(s, &out, &in);
	assert_int_equal(out, 64 * MIB);
	assert_int_equal(in, x.got);
	assert_null(tp_ssh_failed(s));
}

/* The far side half-closes first: its EOF reaches the local end while the
 * channel stays open, and what the local end sends after still arrives. */
static void test_forward_far_half_close(void **state)
{
	_cleanup_ssh_ struct tp_ssh *s = open_ok();
	unsigned char *b = malloc(MIB);
	struct fx_far *f;
	struct err *e = NULL;
	char *greeting;
	size_t len;
	int fd;

	(void)state;
	assert_non_null(b);
	f = far_ok(FX_FAR_GREET, 3, 3 * MIB + 5);
	fd = forward_ok(s, f->port);
	greeting = read_all(fd, 5000, &len);
	assert_int_equal(len, 3 * MIB + 5);
	assert_int_equal(fx_fnv(FX_FNV0, greeting, len), fx_pattern_fnv(3, len, FX_FNV0));
	free(greeting);
	fx_pattern(4, 0, b, MIB);
	assert_true(fx_send_all(fd, b, MIB));
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	if (!tp_ssh_wait_idle(s, 5000, &e))
		fail_msg("wait_idle: %s", e->msg);
	assert_int_equal(read_result(fd, 1000), 0);
	close(fd);
	fx_far_stop(f);
	if (f->eofs != 1)
		fail_msg("far side: %u EOFs, %llu bytes, error %s", f->eofs,
			 (unsigned long long)f->bytes_in, strerror(f->err));
	assert_int_equal(f->bytes_in, MIB);
	assert_int_equal(f->fnv_in, fx_fnv(FX_FNV0, b, MIB));
	free(f);
	free(b);
}

/* The far end resets the connection while the local end still sends:
 * the channel ends (the local end learns it), the session lives on. */
static void test_forward_far_abort(void **state)
{
	_cleanup_ssh_ struct tp_ssh *s = open_ok();
	struct fx_far *f = far_ok(FX_FAR_ABORT, 0, 1 * MIB);
	struct fx_xfer x = { .seed = 9, .len = 256 * MIB, .timeout_ms = 5000 };
	const char *const echo[] = { "echo", "ok", NULL };
	struct err *e = NULL;
	char *out;
	int fd;

	(void)state;
	x.fd = forward_ok(s, f->port);
	fx_xfer_run(&x);
	close(x.fd);
	if (x.err == ETIMEDOUT)
		fail_msg("the local end was not told in 5 s (%llu bytes sent)",
			 (unsigned long long)x.sent);
	/* Its EOF came first, then the cut: the sender gets an error. */
	assert_true(x.in_eof);
	if (x.err != EPIPE && x.err != ECONNRESET)
		fail_msg("sender saw %s, not a broken stream", strerror(x.err));
	assert_true(x.sent < x.len);
	if (!tp_ssh_wait_idle(s, 2000, &e))
		fail_msg("wait_idle: %s", e->msg);
	fx_far_stop(f);
	assert_int_equal(f->nconns, 1);
	assert_int_equal(f->eofs, 0);
	assert_true(f->bytes_in >= 1 * MIB);
	free(f);
	/* The session is fine. */
	assert_null(tp_ssh_failed(s));
	fd = exec_ok(s, echo);
	out = read_all(fd, 5000, NULL);
	close(fd);
	assert_string_equal(out, "ok\n");
	free(out);
	assert_null(tp_ssh_failed(s));
}

static void test_forward_refused(void **state)
{
	_cleanup_ssh_ struct tp_ssh *s = open_ok();
	const char *const echo[] = { "echo", "still", "fine", NULL };
	unsigned port = fx_free_port();
	struct err *e = NULL;
	char want[128], *out;
	int sv[2], fd;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_false(tp_ssh_forward(s, sv[1], "127.0.0.1", port, &e));
	snprintf(want, sizeof(want),
		 "SSH server 127.0.0.1 refused a channel to 127.0.0.1 port %u: ", port);
	assert_err(e, ERR_IO, want);
	err_free(e);
	e = NULL;
	assert_int_equal(read_result(sv[0], 2000), 0); /* the fd was taken and closed */
	close(sv[0]);

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_false(tp_ssh_forward(s, sv[1], "127.0.0.1", 0, &e));
	assert_err(e, ERR_INVAL, "invalid forward target '127.0.0.1' port 0 via 127.0.0.1");
	err_free(e);
	assert_int_equal(read_result(sv[0], 2000), 0);
	close(sv[0]);

	/* The session survives a refused channel. */
	assert_null(tp_ssh_failed(s));
	fd = exec_ok(s, echo);
	out = read_all(fd, 5000, NULL);
	close(fd);
	assert_string_equal(out, "still fine\n");
	free(out);
	assert_true(tp_ssh_wait_idle(s, 5000, NULL));
}

#define NSESS 3

static void test_open_many(void **state)
{
	struct tp_ssh *ss[NSESS], *sentinel = (struct tp_ssh *)&sentinel;
	struct tp_ssh_opts o = opts();
	struct fx_far *sink, *echo;
	struct fx_xfer x[2 * NSESS];
	struct err *e = NULL;

	(void)state;
	/* All or none: a wrong pinned key fails every one, out untouched. */
	for (int i = 0; i < NSESS; i++)
		ss[i] = sentinel;
	o.host_key = F.other_pub;
	assert_false(tp_ssh_open_many(&o, NSESS, ss, &e));
	assert_err(e, ERR_PROTO, "does not match the pinned key");
	err_free(e);
	e = NULL;
	for (int i = 0; i < NSESS; i++)
		assert_ptr_equal(ss[i], sentinel);
	o = opts();
	assert_false(tp_ssh_open_many(&o, 0, ss, &e));
	assert_err(e, ERR_INVAL, "no SSH sessions requested for 127.0.0.1");
	err_free(e);
	e = NULL;

	if (!tp_ssh_open_many(&o, NSESS, ss, &e))
		fail_msg("open_many: %s", e->msg);
	for (int i = 0; i < NSESS; i++) {
		assert_non_null(ss[i]);
		assert_ptr_not_equal(ss[i], sentinel);
		assert_null(tp_ssh_failed(ss[i]));
		for (int j = 0; j < i; j++)
			assert_ptr_not_equal(ss[i], ss[j]);
	}

	/* Two forwards per session, all moving at once: one into a sink, one
	 * through an echo (both directions busy on one channel). */
	sink = far_ok(FX_FAR_SINK, 7, 1 * MIB);
	echo = far_ok(FX_FAR_ECHO, 0, 0);
	for (int i = 0; i < 2 * NSESS; i++) {
		x[i] = (struct fx_xfer){ .seed = 100 + (uint64_t)i,
				      .len = 3 * MIB + (uint64_t)i * 4097 };
		x[i].fd = forward_ok(ss[i / 2], i % 2 ? echo->port : sink->port);
	}
	for (int i = 0; i < 2 * NSESS; i++)
		assert_int_equal(pthread_create(&x[i].t, NULL, fx_xfer_thread, &x[i]), 0);
	for (int i = 0; i < 2 * NSESS; i++) {
		pthread_join(x[i].t, NULL);
		close(x[i].fd);
	}
	for (int i = 0; i < 2 * NSESS; i++) {
		if (i % 2)
			assert_echoed(&x[i]);
		else
			assert_sink_reply(&x[i], sink);
	}
	for (int i = 0; i < NSESS; i++) {
		uint64_t out, in;

		if (!tp_ssh_wait_idle(ss[i], 5000, &e))
			fail_msg("wait_idle %d: %s", i, e->msg);
		tp_ssh_stats(ss[i], &out, &in);
		assert_int_equal(out, x[2 * i].len + x[2 * i + 1].len);
		assert_int_equal(in, x[2 * i].got + x[2 * i + 1].got);
		assert_null(tp_ssh_failed(ss[i]));
		tp_ssh_close(ss[i]);
	}
	fx_far_stop(sink);
	fx_far_stop(echo);
	assert_int_equal(sink->eofs, NSESS);
	assert_int_equal(echo->eofs, NSESS);
	free(sink);
	free(echo);
}

/* tp_ssh_close with a command running and a forward open: both local
 * ends see EOF, nothing is left behind. */
static void test_close_ends_channels(void **state)
{
	struct tp_ssh *s = open_ok();
	const char *const cat[] = { "cat", NULL };
	struct fx_far *f;
	int efd, ffd;

	(void)state;
	f = far_ok(FX_FAR_SINK, 1, 0);
	efd = exec_ok(s, cat);
	ffd = forward_ok(s, f->port);
	assert_true(fx_send_all(efd, "x", 1));
	assert_int_equal(read_result(efd, 5000), 1); /* cat is up */
	tp_ssh_close(s);
	assert_int_equal(read_result(efd, 2000), 0);
	assert_int_equal(read_result(ffd, 2000), 0);
	close(efd);
	close(ffd);
	fx_far_stop(f);
	free(f);
}

/* ---- connection loss ------------------------------------------------------------------------ */

static void test_connection_lost(void **state)
{
	_cleanup_ssh_ struct tp_ssh *s = open_ok();
	_cleanup_ssh_ struct tp_ssh *idle = open_ok();
	const char *const cat[] = { "cat", NULL };
	struct fx_far *f;
	/* On the heap: its thread may outlive a failed assertion. */
	_cleanup_free_ struct fx_xfer *x = calloc(1, sizeof(*x));
	struct err *e = NULL;
	const char *why;
	unsigned lport;
	int lfd, near, far_end, efd, sv[2];
	int64_t deadline;
	uint64_t out = 0;

	(void)state;
	assert_non_null(x);
	*x = (struct fx_xfer){ .seed = 5, .len = 1ull << 40 };
	f = far_ok(FX_FAR_SINK, 0, 0);
	/* A busy forward, an idle TCP-bridged forward and a running command. */
	x->fd = forward_ok(s, f->port);
	lfd = fx_listen_lo(1, &lport);
	assert_true(lfd >= 0);
	near = fx_connect_lo(lport);
	assert_true(near >= 0);
	far_end = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(far_end >= 0);
	close(lfd);
	if (!tp_ssh_forward(s, far_end, "127.0.0.1", f->port, &e))
		fail_msg("forward: %s", e->msg);
	efd = exec_ok(s, cat);
	assert_int_equal(pthread_create(&x->t, NULL, fx_xfer_thread, x), 0);

	deadline = util_now_ms() + 5000;
	while (out < 8 * MIB && util_now_ms() < deadline) {
		fx_sleep_ms(2);
		tp_ssh_stats(s, &out, NULL);
	}
	assert_true(out >= 8 * MIB);
	/* The server side of this connection dies; the listener lives on. */
	assert_true(fx_sshd_kill_servers(&F) >= 1);

	deadline = util_now_ms() + 5000;
	while (!(why = tp_ssh_failed(s)) && util_now_ms() < deadline)
		fx_sleep_ms(5);
	if (!why)
		fail_msg("the session did not notice that its server died");
	if (strncmp(why, "SSH connection to 127.0.0.1 lost: ", 34))
		fail_msg("unexpected failure text: %s", why);
	/* A session without channels has nothing to read, and notices too. */
	deadline = util_now_ms() + 2000;
	while (!tp_ssh_failed(idle) && util_now_ms() < deadline)
		fx_sleep_ms(5);
	why = tp_ssh_failed(idle);
	if (!why || (strcmp(why, "SSH connection to 127.0.0.1 lost: "
				 "the server closed the connection") &&
		     strcmp(why, "SSH connection to 127.0.0.1 lost: Connection reset by peer")))
		fail_msg("idle session: %s", why ? why : "(healthy)");
	why = tp_ssh_failed(s);

	/* Every bridged fd is gone: the busy one mid-stream, the command's
	 * with an EOF, the TCP one with a reset. */
	pthread_join(x->t, NULL);
	assert_true(x->sent < x->len);
	assert_int_equal(x->got, 0);
	assert_true(x->err == EPIPE || x->err == ECONNRESET || x->in_eof);
	close(x->fd);
	assert_int_equal(read_result(efd, 2000), 0);
	close(efd);
	assert_int_equal(read_result(near, 2000), -ECONNRESET);
	close(near);

	/* Later requests fail with the recorded reason. */
	assert_int_equal(tp_ssh_exec(s, cat, &e), -1);
	assert_err(e, ERR_CLOSED, why);
	err_free(e);
	e = NULL;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_false(tp_ssh_forward(s, sv[1], "127.0.0.1", f->port, &e));
	assert_err(e, ERR_CLOSED, why);
	err_free(e);
	e = NULL;
	assert_int_equal(read_result(sv[0], 2000), 0); /* taken, also on failure */
	close(sv[0]);
	assert_false(tp_ssh_wait_idle(s, 1000, &e));
	assert_err(e, ERR_CLOSED, why);
	err_free(e);
	assert_string_equal(tp_ssh_failed(s), why);
	fx_far_stop(f);
	free(f);

	/* The listener is unharmed: a new session works. */
	tp_ssh_close(open_ok());
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quote_argv),
		cmocka_unit_test(test_pubkey_read),
		cmocka_unit_test(test_pinned_key_malformed),
		cmocka_unit_test(test_host_key_mismatch),
		cmocka_unit_test(test_host_key_missing),
		cmocka_unit_test(test_client_key_refused),
		cmocka_unit_test(test_connect_refused),
		cmocka_unit_test(test_connect_timeout),
		cmocka_unit_test(test_handshake_timeout),
		cmocka_unit_test(test_exec_verbatim),
		cmocka_unit_test(test_exec_status_stderr),
		cmocka_unit_test(test_forward_64m),
		cmocka_unit_test(test_forward_far_half_close),
		cmocka_unit_test(test_forward_far_abort),
		cmocka_unit_test(test_forward_refused),
		cmocka_unit_test(test_open_many),
		cmocka_unit_test(test_close_ends_channels),
		cmocka_unit_test(test_connection_lost),
	};

	log_init("test_ssh"); /* VMM_LOG=debug shows the pump at work */
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("ssh", tests, group_setup, group_teardown);
}
