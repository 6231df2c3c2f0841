/*
 * test_stream.h - what the two tests of the volume stream share
 * (test_stream.c: round trips, options, limits; test_stream_damage.c:
 * damaged, forged and reordered streams, on_range, the callback sender):
 * test volumes, a sender thread, a pipe feeder, a record parser and
 * forger over the private layout of tp_stream_int.h, and the small volume
 * the damage tests start from. Included by those two files only, after
 * cmocka.h; the functions are static inline so a file that uses some of
 * them compiles the rest away (this is not a UNIT_HELPERS fixture: it
 * asserts).
 */
#ifndef VMM_TEST_STREAM_H
#define VMM_TEST_STREAM_H


#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "common/util.h"
#include "transport/tp_stream.h"
#include "transport/tp_stream_int.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)

/* ---- volumes --------------------------------------------------------- */

enum fill { F_RANDOM, F_TEXT, F_ZERO };

/* A range of a test volume; the rest is a hole. */
struct piece {
	uint64_t off, len;
	enum fill fill;
};

static inline void fill_buf(uint8_t *p, uint64_t off, size_t len, enum fill f)
{
	if (f == F_ZERO) {
		memset(p, 0, len);
	} else if (f == F_RANDOM) {
		uint64_t x = off * 0x9e3779b97f4a7c15ull + 0x1234567;
		for (size_t i = 0; i < len; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			p[i] = (uint8_t)(x >> 24);
		}
	} else {
		/* Compressible and never zero, a function of the volume offset. */
		for (size_t i = 0; i < len; i++) {
			uint64_t at = off + i;
			p[i] = (uint8_t)('a' + (at / 64 + at % 7) % 26);
		}
	}
}

/* Where the volume files live: "/tmp/test_stream.XXXXXX". */
static inline int tmp_file(char *path)
{
	int fd;

	strcpy(path, "/tmp/test_stream.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	return fd;
}

static inline void tmp_remove(const char *path)
{
	char part[80];

	snprintf(part, sizeof(part), "%s.part", path);
	unlink(path);
	unlink(part);
}

static inline void write_pieces(int fd, uint64_t size, const struct piece *p, size_t n)
{
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	for (size_t i = 0; i < n; i++) {
		uint8_t *b = malloc(p[i].len);
		assert_non_null(b);
		fill_buf(b, p[i].off, p[i].len, p[i].fill);
		assert_int_equal(pwrite(fd, b, p[i].len, (off_t)p[i].off), (ssize_t)p[i].len);
		free(b);
	}
}

/* Creates a temp volume; returns its fd, path in path. */
static inline int make_volume(char *path, uint64_t size, const struct piece *p, size_t n)
{
	int fd = tmp_file(path);

	write_pieces(fd, size, p, n);
	return fd;
}

static inline uint8_t *read_all_fd(int fd, size_t *len)
{
	struct stat st;
	uint8_t *b;

	assert_int_equal(fstat(fd, &st), 0);
	b = malloc((size_t)st.st_size + 1);
	assert_non_null(b);
	assert_int_equal(pread(fd, b, (size_t)st.st_size, 0), st.st_size);
	*len = (size_t)st.st_size;
	return b;
}

static inline void assert_fds_equal(int fa, int fb, const char *what)
{
	uint8_t *ba = malloc(MiB), *bb = malloc(MiB);
	struct stat sa, sb;

	assert_true(ba && bb);
	assert_int_equal(fstat(fa, &sa), 0);
	assert_int_equal(fstat(fb, &sb), 0);
	assert_int_equal(sa.st_size, sb.st_size);
	for (off_t off = 0; off < sa.st_size; off += (off_t)MiB) {
		ssize_t ra = pread(fa, ba, MiB, off), rb = pread(fb, bb, MiB, off);
		assert_true(ra > 0);
		assert_int_equal(ra, rb);
		if (memcmp(ba, bb, (size_t)ra))
			fail_msg("%s differ in [%jd, +%zd)", what, (intmax_t)off, ra);
	}
	free(ba);
	free(bb);
}

static inline void assert_files_equal(const char *a, const char *b)
{
	int fa = open(a, O_RDONLY | O_CLOEXEC), fb = open(b, O_RDONLY | O_CLOEXEC);

	assert_true(fa >= 0 && fb >= 0);
	assert_fds_equal(fa, fb, b);
	close(fa);
	close(fb);
}

static inline bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static inline bool part_exists(const char *path)
{
	char part[80];

	snprintf(part, sizeof(part), "%s.part", path);
	return exists(part);
}

static inline void expect_err(struct err *e, enum err_code code, const char *needle)
{
	assert_non_null(e);
	if (e->code != code || !strstr(e->msg, needle))
		fail_msg("expected %s error with '%s', got %s: '%s'", err_code_name(code), needle,
			 err_code_name(e->code), e->msg);
	err_free(e);
}

static inline void expect_corrupt(struct err *e, enum err_code code, size_t at, const char *needle)
{
	char want[64];

	snprintf(want, sizeof(want), "stream corrupt at offset %zu: ", at);
	assert_non_null(e);
	if (e->code != code || !strstr(e->msg, want) || !strstr(e->msg, needle))
		fail_msg("expected %s error with '%s...%s', got %s: '%s'", err_code_name(code), want,
			 needle, err_code_name(e->code), e->msg);
	err_free(e);
}

static inline void assert_prog_equal(const struct tp_stream_progress *a, const struct tp_stream_progress *b)
{
	assert_int_equal(a->total, b->total);
	assert_int_equal(a->covered, b->covered);
	assert_int_equal(a->data_bytes, b->data_bytes);
	assert_int_equal(a->zero_bytes, b->zero_bytes);
	assert_int_equal(a->wire_bytes, b->wire_bytes);
	assert_int_equal(a->records, b->records);
}

static inline int memfd(uint64_t size)
{
	int fd = memfd_create("test_stream", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	return fd;
}

/* ---- sender in a thread, feeder through a pipe ------------------------ */

struct send_job {
	int out_fd;
	const char *path;              /* send_file, or else: */
	int file_fd;
	uint64_t size;
	const struct tp_extent *ext;
	size_t n;
	const struct tp_stream_opts *o;
	bool ok;
	struct tp_stream_progress fin;
	struct err *e;
};

static inline void *send_main(void *arg)
{
	struct send_job *j = arg;

	if (j->path)
		j->ok = tp_stream_send_file(j->out_fd, j->path, j->o, &j->fin, &j->e);
	else
		j->ok = tp_stream_send_extents(j->out_fd, j->file_fd, j->size, j->ext, j->n, j->o,
					       &j->fin, &j->e);
	/* EOF right after END: the receiver must not need more. */
	shutdown(j->out_fd, SHUT_WR);
	return NULL;
}

/* Sends path through a socketpair into dst with tp_stream_recv_file. */
static inline void round_trip_file(const char *src, const char *dst, uint64_t size,
			    const struct tp_stream_opts *so, const struct tp_stream_opts *ro,
			    struct tp_stream_progress *sent, struct tp_stream_progress *got)
{
	int sv[2];
	pthread_t t;
	struct send_job j = { .path = src, .o = so };
	struct err *e = NULL;
	bool ok;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	j.out_fd = sv[0];
	assert_int_equal(pthread_create(&t, NULL, send_main, &j), 0);
	ok = tp_stream_recv_file(sv[1], dst, size, ro, got, &e);
	pthread_join(t, NULL);
	close(sv[0]);
	close(sv[1]);
	if (!j.ok)
		fail_msg("send: %s", j.e->msg);
	if (!ok)
		fail_msg("recv: %s", e->msg);
	*sent = j.fin;
}

/* Captures the sender's whole output (a memfd is a plain file to it). */
static inline uint8_t *capture_file(const char *src, const struct tp_stream_opts *o, size_t *len,
			     struct tp_stream_progress *fin)
{
	int fd = memfd(0);
	struct err *e = NULL;
	uint8_t *b;

	if (!tp_stream_send_file(fd, src, o, fin, &e))
		fail_msg("send: %s", e->msg);
	b = read_all_fd(fd, len);
	close(fd);
	return b;
}

static inline uint8_t *capture_extents(int file_fd, uint64_t size, const struct tp_extent *x, size_t n,
				const struct tp_stream_opts *o, size_t *len,
				struct tp_stream_progress *fin)
{
	int fd = memfd(0);
	struct err *e = NULL;
	uint8_t *b;

	if (!tp_stream_send_extents(fd, file_fd, size, x, n, o, fin, &e))
		fail_msg("send: %s", e->msg);
	b = read_all_fd(fd, len);
	close(fd);
	return b;
}

struct feed {
	int fd;
	const uint8_t *buf;
	size_t len;
};

static inline void feed_write(struct feed *f)
{
	size_t off = 0;

	while (off < f->len) {
		ssize_t w = write(f->fd, f->buf + off, f->len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	close(f->fd);
}

static inline void *feed_main(void *arg)
{
	sigset_t s;

	/* A receiver that stops early closes the pipe: EPIPE, no signal
	 * (a pending thread-directed SIGPIPE dies with the thread). */
	sigemptyset(&s);
	sigaddset(&s, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &s, NULL);
	feed_write(arg);
	return NULL;
}

/* Feeds buf through a pipe to tp_stream_recv_apply (target_fd) or, with
 * path, tp_stream_recv_file. */
static inline bool recv_buf(const uint8_t *buf, size_t len, int target_fd, const char *path,
		     uint64_t size, const struct tp_stream_opts *o,
		     struct tp_stream_progress *fin, struct err **errp)
{
	int p[2];
	pthread_t t;
	struct feed f = { .buf = buf, .len = len };
	bool ok;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	f.fd = p[1];
	if (len <= 16 * KiB) /* fits in the pipe: no thread needed */
		feed_write(&f);
	else
		assert_int_equal(pthread_create(&t, NULL, feed_main, &f), 0);
	if (path)
		ok = tp_stream_recv_file(p[0], path, size, o, fin, errp);
	else
		ok = tp_stream_recv_apply(p[0], target_fd, o, fin, errp);
	close(p[0]);
	if (len > 16 * KiB)
		pthread_join(t, NULL);
	return ok;
}

/* ---- records of a captured stream ------------------------------------ */

#define MAX_RECS 64

/* One record, parsed or to forge; forge() fills seq and crc and, unless
 * keep_end, END's totals and run checksum. */
struct frec {
	struct rec_hdr h;
	const uint8_t *payload;
	size_t at; /* parsed: where it starts in the stream */
	bool keep_end;
};

static inline size_t parse(const uint8_t *s, size_t len, struct frec *r)
{
	size_t n = 0, off = 0;

	while (off < len) {
		const char *why = NULL;

		assert_true(n < MAX_RECS);
		assert_true(off + REC_HDR_LEN <= len);
		memset(&r[n], 0, sizeof(r[n]));
		if (!rec_decode(s + off, &r[n].h, &why))
			fail_msg("record at %zu: %s", off, why);
		r[n].at = off;
		r[n].payload = s + off + REC_HDR_LEN;
		assert_int_equal(r[n].h.seq, n);
		off += REC_HDR_LEN + r[n].h.payload_len;
		n++;
	}
	assert_int_equal(off, len);
	return n;
}

static inline uint8_t *forge(const struct frec *r, size_t n, size_t *len)
{
	size_t cap = 0, off = 0;
	uint64_t covered = 0, data = 0, zero = 0;
	uint32_t run = 0;
	uint8_t *b;

	for (size_t i = 0; i < n; i++)
		cap += REC_HDR_LEN + r[i].h.payload_len + END_LEN;
	b = malloc(cap);
	assert_non_null(b);
	for (size_t i = 0; i < n; i++) {
		struct rec_hdr h = r[i].h;
		const uint8_t *pl = r[i].payload;
		uint8_t end[END_LEN] = { 0 };

		h.seq = (uint32_t)i;
		if (h.type == REC_END && !r[i].keep_end) {
			h.offset = covered;
			h.length = data;
			h.payload_len = END_LEN;
			put_le64(end, zero);
			put_le32(end + 8, run);
			pl = end;
		}
		rec_encode(&h, rec_crc(&h, pl, h.payload_len), b + off);
		if (h.type != REC_END)
			run = tp_crc32c(run, b + off, REC_HDR_LEN);
		memcpy(b + off + REC_HDR_LEN, pl, h.payload_len);
		off += REC_HDR_LEN + h.payload_len;
		if (h.type == REC_DATA || h.type == REC_ZERO)
			covered += h.length;
		if (h.type == REC_DATA)
			data += h.length;
		if (h.type == REC_ZERO)
			zero += h.length;
	}
	*len = off;
	return b;
}

/* Index of the first record of the given type and flags. */
static inline size_t find_rec(const struct frec *r, size_t n, unsigned type, unsigned flags)
{
	for (size_t i = 0; i < n; i++)
		if (r[i].h.type == type && r[i].h.flags == flags)
			return i;
	fail_msg("no record of type %u flags %#x", type, flags);
	return 0;
}

/* ---- a small volume every damage test starts from -------------------- */

/* 192 KiB + 1000: text (a zstd DATA record), a hole and a written zero
 * block (one ZERO record), random bytes at the unaligned end (raw DATA). */
#define SMALL_SIZE (192 * KiB + 1000)
static const struct piece small_pieces[] = {
	{ 0, 64 * KiB, F_TEXT },
	{ 128 * KiB, 64 * KiB, F_ZERO },
	{ 192 * KiB, 1000, F_RANDOM },
};

struct small {
	char path[64];
	uint8_t *s;
	size_t len;
	struct frec r[MAX_RECS];
	size_t n;
	int target;
	struct tp_stream_opts o;
};

static inline struct small *small_new(void)
{
	struct small *v = calloc(1, sizeof(*v));
	struct tp_stream_progress fin;

	assert_non_null(v);
	close(make_volume(v->path, SMALL_SIZE, small_pieces, 3));
	v->o.threads = 1;
	v->s = capture_file(v->path, &v->o, &v->len, &fin);
	v->n = parse(v->s, v->len, v->r);
	/* START, DATA (zstd), ZERO, DATA (raw), END. */
	assert_int_equal(v->n, 5);
	assert_int_equal(fin.records, 5);
	assert_int_equal(fin.wire_bytes, v->len);
	assert_int_equal(v->r[1].h.type, REC_DATA);
	assert_int_equal(v->r[1].h.flags, REC_F_ZSTD);
	assert_int_equal(v->r[2].h.type, REC_ZERO);
	assert_int_equal(v->r[2].h.offset, 64 * KiB);
	assert_int_equal(v->r[2].h.length, 128 * KiB);
	assert_int_equal(v->r[3].h.type, REC_DATA);
	assert_int_equal(v->r[3].h.flags, 0);
	assert_int_equal(v->r[3].h.payload_len, 1000);
	v->target = memfd(SMALL_SIZE);
	return v;
}

static inline void small_free(struct small *v)
{
	close(v->target);
	tmp_remove(v->path);
	free(v->s);
	free(v);
}

/* The small volume's stream with records r[0..n) re-forged must fail. */
static inline void expect_forged(struct small *v, const struct frec *r, size_t n, enum err_code code,
			  size_t at_rec, const char *needle)
{
	size_t len, at = 0;
	uint8_t *b = forge(r, n, &len);
	struct err *e = NULL;

	for (size_t i = 0; i < at_rec; i++)
		at += REC_HDR_LEN + (r[i].h.type == REC_END && !r[i].keep_end ? END_LEN : r[i].h.payload_len);
	assert_false(recv_buf(b, len, v->target, NULL, 0, &v->o, NULL, &e));
	expect_corrupt(e, code, at, needle);
	free(b);
}


/* A sparse volume with a zero block and a 4 KiB zero run inside data, an
 * unaligned tail; holes and zeros travel as ZERO records. */
#define RT_SIZE (32 * MiB + 12345)
static const struct piece rt_pieces[] = {
	{ 0, 768 * KiB, F_RANDOM },
	{ 256 * KiB, 128 * KiB, F_ZERO },  /* a whole zero block inside data */
	{ 600 * KiB, 4 * KiB, F_ZERO },    /* zeros smaller than a block */
	{ 4 * MiB, 1 * MiB, F_TEXT },
	{ 32 * MiB, 12345, F_TEXT },
};
#define RT_DATA (768 * KiB - 128 * KiB + 1 * MiB + 12345)

#endif
