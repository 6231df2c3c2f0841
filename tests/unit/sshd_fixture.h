/*
 * sshd_fixture.h - what tests of the SSH transport run against: a real
 * OpenSSH sshd on 127.0.0.1 with keys made for the run, and loopback
 * traffic around it (far ends of forwards, a near end that streams a
 * checksummed pattern).
 *
 * Contract:
 *  - Everything here is prefixed fx_. Nothing asserts or calls cmocka:
 *    failures are returned (false, -1, NULL), the sshd ones explained on
 *    stderr, and the test decides what they mean.
 *  - Linked into every unit test (UNIT_HELPERS): no main, no constructors,
 *    no state outside the structs below; only libc, pthreads and
 *    common/util.
 *  - Loopback only. Listeners and sockets are CLOEXEC.
 */
#ifndef VMM_TEST_SSHD_FIXTURE_H
#define VMM_TEST_SSHD_FIXTURE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FX_SSHD "/usr/sbin/sshd"
#define FX_CHUNK (256u << 10)          /* unit of the traffic helpers' reads and writes */
#define FX_FNV0 0xcbf29ce484222325ull  /* FNV-1a offset basis */

/* ---- sshd ---------------------------------------------------------------------
 * fx_sshd_start() makes a temp dir /tmp/test_ssh.XXXXXX with four ed25519
 * keys (the server's host key, another host key the server does not
 * have, the client's key, which authorized_keys lists, and a stranger's
 * key, which it does not), an sshd_config (pubkey only, TCP forwarding,
 * LogLevel VERBOSE to sshd.log) and starts sshd -D on a free port; true
 * once it greets. It runs in its own process group and gets SIGTERM when
 * this process dies. On failure it says why on stderr and leaves nothing
 * behind. fx_sshd_stop() stops that sshd (its pid only), removes the dir
 * unless TEST_SSH_KEEP is set, frees the strings; fine on a zeroed or
 * failed fixture, and twice. */

struct fx_sshd {
	char dir[32];
	char host_key[64], other_key[64], client_key[64], stranger_key[64];
	char cfg[64], log[64];
	char *host_pub;   /* "ssh-ed25519 AAAA..." of host_key: the key to pin */
	char *host_line;  /* host_key.pub as ssh-keygen wrote it (with comment) */
	char *other_pub;  /* a host key the server does not have */
	char host_fp[64]; /* "SHA256:..." of host_key, as ssh-keygen -l prints it */
	unsigned port;
	pid_t pid;        /* <= 0: not running */
};

bool fx_sshd_start(struct fx_sshd *s);
void fx_sshd_stop(struct fx_sshd *s);
/* sshd.log to stderr, for a failure's explanation. */
void fx_sshd_print_log(const struct fx_sshd *s);
/* SIGKILLs the sshd processes below the listener (the servers of its
 * connections), not the listener itself; stops them first so none forks
 * away. Commands they run are left to see their pipes close. Returns how
 * many it killed. */
size_t fx_sshd_kill_servers(const struct fx_sshd *s);

/* ---- loopback sockets ------------------------------------------------------------ */

/* A listener on 127.0.0.1, port chosen by the kernel; -1 on failure. */
int fx_listen_lo(int backlog, unsigned *port);
/* A port nobody listens on (bound and released at once); 0 on failure. */
unsigned fx_free_port(void);
/* A connection to 127.0.0.1:port, or -1. */
int fx_connect_lo(unsigned port);
/* All of p, or false (EPIPE and the like; no SIGPIPE). */
bool fx_send_all(int fd, const void *p, size_t n);
void fx_sleep_ms(int ms);

/* ---- data with known checksums ------------------------------------------------------ */

/* FNV-1a over p, continuing from h (start with FX_FNV0). */
uint64_t fx_fnv(uint64_t h, const void *p, size_t n);
/* Bytes [off, off + n) of the pseudo-random stream `seed`. */
void fx_pattern(uint64_t seed, uint64_t off, unsigned char *p, size_t n);
/* fx_fnv of the first len bytes of stream seed, continuing from h. */
uint64_t fx_pattern_fnv(uint64_t seed, uint64_t len, uint64_t h);

/* ---- the far end of forwards: a listener with a thread per connection ---------------- */

enum fx_far_mode {
	FX_FAR_SINK,  /* reads to EOF, then replies "LEN FNV\n" + reply_len pattern bytes */
	FX_FAR_ECHO,  /* sends back what it reads, half-closes after the EOF */
	FX_FAR_GREET, /* sends reply_len pattern bytes and half-closes first, then reads */
	FX_FAR_ABORT, /* reads reply_len bytes, then resets the connection */
	FX_FAR_MODE_MAX
};

#define FX_FAR_MAX 16 /* connections; more are closed at once */

struct fx_far {
	enum fx_far_mode mode;
	uint64_t reply_seed;
	size_t reply_len;
	int lfd;
	unsigned port;     /* where to connect */
	pthread_t acceptor;
	pthread_mutex_t mu;
	pthread_t conns[FX_FAR_MAX];
	int fds[FX_FAR_MAX];
	/* results, read after fx_far_stop() */
	unsigned nconns;
	unsigned ndone;    /* connection threads finished */
	unsigned eofs;     /* connections whose EOF arrived */
	uint64_t bytes_in;
	uint64_t fnv_in;   /* of the last connection that ended */
	int err;           /* errno of the last connection that failed */
};

/* On the heap, so that a test that fails leaves running threads, not a
 * dangling stack frame; NULL on failure. */
struct fx_far *fx_far_start(enum fx_far_mode mode, uint64_t reply_seed, size_t reply_len);
/* Stops accepting, gives the connections up to 3 s to end by themselves,
 * then shuts them down and joins every thread. The results stay readable;
 * the caller frees f. */
void fx_far_stop(struct fx_far *f);

/* ---- the near end: sends a pattern, half-closes, reads to EOF ----------------------- */

struct fx_xfer {
	int fd;             /* made non-blocking; the caller closes it */
	uint64_t seed, len; /* what to send before SHUT_WR */
	int timeout_ms;     /* 0: 20 s */
	/* results */
	uint64_t sent, out_fnv;
	uint64_t got, in_fnv;
	char head[64];      /* the first bytes received */
	bool in_eof;        /* the peer's EOF arrived */
	int err;            /* errno of the first failure, 0 if none */
	pthread_t t;        /* for fx_xfer_thread */
};

/* Sends and receives at once until both directions ended, an error, or
 * the timeout (err = ETIMEDOUT). An EOF does not stop the sending: the
 * peer may only have half-closed. */
void fx_xfer_run(struct fx_xfer *x);
/* fx_xfer_run as a pthread start routine. */
void *fx_xfer_thread(void *x);

#endif
