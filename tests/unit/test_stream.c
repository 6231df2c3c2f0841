/* test_stream.c - the volume stream (transport/tp_stream*.c) end to end:
 * real sender and receiver over socketpairs and pipes with temp files.
 * Round trips of sparse volumes with zero blocks inside data (figures
 * prove zeros travel as ZERO records), extents, the option flags, the
 * rate limit, and damage to captured streams: bytes flipped and streams
 * cut in every record header (payloads sampled), records duplicated,
 * reordered and dropped both raw and re-sealed with valid checksums,
 * forged totals and zstd payloads, a wrong volume size; the receiver's
 * on_range reports and the sender reading through a callback. The private
 * tp_stream_int.h gives the record layout to parse and forge streams. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

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

static void fill_buf(uint8_t *p, uint64_t off, size_t len, enum fill f)
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
static int tmp_file(char *path)
{
	int fd;

	strcpy(path, "/tmp/test_stream.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	return fd;
}

static void tmp_remove(const char *path)
{
	char part[80];

	snprintf(part, sizeof(part), "%s.part", path);
	unlink(path);
	unlink(part);
}

static void write_pieces(int fd, uint64_t size, const struct piece *p, size_t n)
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
static int make_volume(char *path, uint64_t size, const struct piece *p, size_t n)
{
	int fd = tmp_file(path);

	write_pieces(fd, size, p, n);
	return fd;
}

static uint8_t *read_all_fd(int fd, size_t *len)
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

static void assert_fds_equal(int fa, int fb, const char *what)
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

static void assert_files_equal(const char *a, const char *b)
{
	int fa = open(a, O_RDONLY | O_CLOEXEC), fb = open(b, O_RDONLY | O_CLOEXEC);

	assert_true(fa >= 0 && fb >= 0);
	assert_fds_equal(fa, fb, b);
	close(fa);
	close(fb);
}

static bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static bool part_exists(const char *path)
{
	char part[80];

	snprintf(part, sizeof(part), "%s.part", path);
	return exists(part);
}

static void expect_err(struct err *e, enum err_code code, const char *needle)
{
	assert_non_null(e);
	if (e->code != code || !strstr(e->msg, needle))
		fail_msg("expected %s error with '%s', got %s: '%s'", err_code_name(code), needle,
			 err_code_name(e->code), e->msg);
	err_free(e);
}

static void expect_corrupt(struct err *e, enum err_code code, size_t at, const char *needle)
{
	char want[64];

	snprintf(want, sizeof(want), "stream corrupt at offset %zu: ", at);
	assert_non_null(e);
	if (e->code != code || !strstr(e->msg, want) || !strstr(e->msg, needle))
		fail_msg("expected %s error with '%s...%s', got %s: '%s'", err_code_name(code), want,
			 needle, err_code_name(e->code), e->msg);
	err_free(e);
}

static void assert_prog_equal(const struct tp_stream_progress *a, const struct tp_stream_progress *b)
{
	assert_int_equal(a->total, b->total);
	assert_int_equal(a->covered, b->covered);
	assert_int_equal(a->data_bytes, b->data_bytes);
	assert_int_equal(a->zero_bytes, b->zero_bytes);
	assert_int_equal(a->wire_bytes, b->wire_bytes);
	assert_int_equal(a->records, b->records);
}

static int memfd(uint64_t size)
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

static void *send_main(void *arg)
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
static void round_trip_file(const char *src, const char *dst, uint64_t size,
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
static uint8_t *capture_file(const char *src, const struct tp_stream_opts *o, size_t *len,
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

static uint8_t *capture_extents(int file_fd, uint64_t size, const struct tp_extent *x, size_t n,
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

static void feed_write(struct feed *f)
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

static void *feed_main(void *arg)
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
static bool recv_buf(const uint8_t *buf, size_t len, int target_fd, const char *path,
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

static size_t parse(const uint8_t *s, size_t len, struct frec *r)
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

static uint8_t *forge(const struct frec *r, size_t n, size_t *len)
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
static size_t find_rec(const struct frec *r, size_t n, unsigned type, unsigned flags)
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

static struct small *small_new(void)
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

static void small_free(struct small *v)
{
	close(v->target);
	tmp_remove(v->path);
	free(v->s);
	free(v);
}

/* The small volume's stream with records r[0..n) re-forged must fail. */
static void expect_forged(struct small *v, const struct frec *r, size_t n, enum err_code code,
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

/* ---- tests ------------------------------------------------------------ */

static void test_crc32c(void **state)
{
	static const char check[] = "123456789";
	uint8_t buf[300];

	(void)state;
	assert_int_equal(tp_crc32c(0, check, 9), 0xe3069283);
	assert_int_equal(tp_crc32c_sw(0, check, 9), 0xe3069283);
	assert_int_equal(tp_crc32c(0, NULL, 0), 0);
	fill_buf(buf, 7, sizeof(buf), F_RANDOM);
	/* Hardware and table agree at every length and alignment, and chain. */
	for (size_t start = 0; start < 9; start++)
		for (size_t len = 0; len + start <= sizeof(buf); len += 13) {
			uint32_t c = tp_crc32c(0, buf + start, len);
			assert_int_equal(c, tp_crc32c_sw(0, buf + start, len));
			assert_int_equal(c, tp_crc32c(tp_crc32c(0, buf + start, len / 3),
						      buf + start + len / 3, len - len / 3));
		}
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

struct prog_log {
	unsigned calls;
	struct tp_stream_progress last;
	bool bad;
};

static void on_progress(const struct tp_stream_progress *p, void *opaque)
{
	struct prog_log *l = opaque;

	if (p->covered > p->total || p->covered < l->last.covered ||
	    p->data_bytes + p->zero_bytes != p->covered || p->wire_bytes < l->last.wire_bytes)
		l->bad = true;
	l->last = *p;
	l->calls++;
}

static void test_round_trip_sparse(void **state)
{
	char src[64], dst[64];
	struct prog_log sl = { 0 }, rl = { 0 };
	struct tp_stream_opts so = { .progress = on_progress, .opaque = &sl };
	struct tp_stream_opts ro = { .progress = on_progress, .opaque = &rl };
	struct tp_stream_progress sent, got;
	struct stat st, sst;

	(void)state;
	close(make_volume(src, RT_SIZE, rt_pieces, 5));
	close(tmp_file(dst));
	unlink(dst);
	round_trip_file(src, dst, RT_SIZE, &so, &ro, &sent, &got);
	assert_files_equal(src, dst);

	assert_int_equal(sent.total, RT_SIZE);
	assert_int_equal(sent.covered, RT_SIZE);
	assert_int_equal(sent.data_bytes, RT_DATA);
	assert_int_equal(sent.zero_bytes, RT_SIZE - RT_DATA);
	/* START, DATA, ZERO, DATA, ZERO (hole), DATA, ZERO (hole), DATA, END. */
	assert_int_equal(sent.records, 9);
	/* Random data does not shrink, the rest does, zeros cost nothing. */
	assert_true(sent.wire_bytes > 640 * KiB);
	assert_true(sent.wire_bytes < 640 * KiB + 64 * KiB);
	assert_true(sent.wire_bytes < RT_SIZE / 32);
	assert_prog_equal(&sent, &got);

	/* Progress: sane, and the last call carries the final figures. */
	assert_true(sl.calls >= 1 && rl.calls >= 1);
	assert_false(sl.bad);
	assert_false(rl.bad);
	assert_prog_equal(&sl.last, &sent);
	assert_prog_equal(&rl.last, &got);

	/* ZERO records were not written: the copy is as sparse as the source. */
	assert_int_equal(stat(src, &sst), 0);
	assert_int_equal(stat(dst, &st), 0);
	if ((uint64_t)st.st_blocks > (uint64_t)sst.st_blocks + 2048)
		fail_msg("copy allocates %jd blocks, the source %jd", (intmax_t)st.st_blocks,
			 (intmax_t)sst.st_blocks);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_false(part_exists(dst));
	tmp_remove(src);
	tmp_remove(dst);
}

/* Smaller zero blocks find the 4 KiB zero run; the stream is the same
 * byte for byte with any number of compression threads. */
static void test_block_size_and_threads(void **state)
{
	char src[64];
	struct tp_stream_opts o1 = { .threads = 1 }, o3 = { .threads = 3 };
	struct tp_stream_opts o4k = { .threads = 2, .block_size = 4096 };
	struct tp_stream_progress f1, f3, f4k;
	size_t l1, l3, l4k;
	uint8_t *s1, *s3, *s4k;

	(void)state;
	close(make_volume(src, RT_SIZE, rt_pieces, 5));
	s1 = capture_file(src, &o1, &l1, &f1);
	s3 = capture_file(src, &o3, &l3, &f3);
	s4k = capture_file(src, &o4k, &l4k, &f4k);
	assert_int_equal(l1, l3);
	assert_memory_equal(s1, s3, l1);
	assert_prog_equal(&f1, &f3);
	assert_int_equal(f1.data_bytes, RT_DATA);
	assert_int_equal(f4k.data_bytes, RT_DATA - 4 * KiB);
	assert_int_equal(f4k.zero_bytes, RT_SIZE - RT_DATA + 4 * KiB);
	assert_int_equal(f4k.records, f1.records + 2); /* the DATA record split around a ZERO */
	free(s1);
	free(s3);
	free(s4k);
	tmp_remove(src);
}

/* 4 KiB of data, 4 KiB of hole, ... : hundreds of records through a
 * ring of four entries (one worker) and through four workers. */
static void test_many_small_records(void **state)
{
	struct piece p[256];
	const uint64_t size = 2 * MiB;
	char src[64], dst[64];
	struct tp_stream_progress sent, got;

	(void)state;
	for (size_t i = 0; i < 256; i++)
		p[i] = (struct piece){ i * 8 * KiB, 4 * KiB, i % 3 ? F_TEXT : F_RANDOM };
	close(make_volume(src, size, p, 256));
	close(tmp_file(dst));
	for (unsigned threads = 1; threads <= 4; threads += 3) {
		struct tp_stream_opts so = { .threads = threads, .block_size = 4096 };
		struct tp_stream_opts ro = { .threads = 5 - threads };

		round_trip_file(src, dst, size, &so, &ro, &sent, &got);
		assert_files_equal(src, dst);
		assert_prog_equal(&sent, &got);
		assert_int_equal(got.records, 2 + 512);
		assert_int_equal(got.data_bytes, 1 * MiB);
		assert_int_equal(got.zero_bytes, 1 * MiB);
	}
	tmp_remove(src);
	tmp_remove(dst);
}

static void test_no_compress_no_zero_skip(void **state)
{
	static const struct piece pieces[] = {
		{ 0, 1 * MiB, F_TEXT },
		{ 1 * MiB, 256 * KiB, F_ZERO },
		{ 2 * MiB, 128 * KiB, F_TEXT },
	};
	const uint64_t size = 3 * MiB + 777, data = 1 * MiB + 128 * KiB;
	char src[64], dst[64];
	struct tp_stream_opts def = { 0 };
	struct tp_stream_opts raw = { .flags = TP_STREAM_NO_COMPRESS };
	struct tp_stream_opts copy = { .flags = TP_STREAM_NO_ZERO_SKIP };
	struct tp_stream_opts plain = { .flags = TP_STREAM_NO_COMPRESS | TP_STREAM_NO_ZERO_SKIP };
	struct tp_stream_progress sent, got, zd;

	(void)state;
	close(make_volume(src, size, pieces, 3));
	close(tmp_file(dst));

	round_trip_file(src, dst, size, &def, NULL, &zd, &got);
	assert_files_equal(src, dst);
	assert_int_equal(zd.data_bytes, data);
	assert_true(zd.wire_bytes < data / 4);

	/* Raw payloads: the wire carries exactly data + headers + END's. */
	round_trip_file(src, dst, size, &raw, NULL, &sent, &got);
	assert_files_equal(src, dst);
	assert_prog_equal(&sent, &got);
	assert_int_equal(sent.data_bytes, data);
	assert_int_equal(sent.zero_bytes, size - data);
	assert_int_equal(sent.records, zd.records);
	assert_int_equal(sent.wire_bytes, data + REC_HDR_LEN * sent.records + END_LEN);

	/* No zero skipping: every byte is DATA, in 1 MiB records. */
	round_trip_file(src, dst, size, &copy, NULL, &sent, &got);
	assert_files_equal(src, dst);
	assert_prog_equal(&sent, &got);
	assert_int_equal(sent.data_bytes, size);
	assert_int_equal(sent.zero_bytes, 0);
	assert_int_equal(sent.records, 2 + 4);
	assert_true(sent.wire_bytes < size / 4);

	round_trip_file(src, dst, size, &plain, NULL, &sent, &got);
	assert_files_equal(src, dst);
	assert_int_equal(sent.zero_bytes, 0);
	assert_int_equal(sent.wire_bytes, size + REC_HDR_LEN * sent.records + END_LEN);
	tmp_remove(src);
	tmp_remove(dst);
}

/* Only the extents change; holes and zeros inside them are zeroed. */
static void test_extents(void **state)
{
	static const struct piece src_pieces[] = {
		{ 0, 1 * MiB, F_TEXT },
		{ 1536 * KiB, 512 * KiB, F_RANDOM },
	};
	static const struct tp_extent x[] = {
		{ 64 * KiB, 128 * KiB },          /* text */
		{ 1 * MiB - 4 * KiB, 8 * KiB },   /* 4 KiB text, 4 KiB hole */
		{ 1 * MiB + 64 * KiB, 64 * KiB }, /* hole only */
		{ 1 * MiB + 128 * KiB, 4 * KiB }, /* adjoining hole: one ZERO record */
		{ 1536 * KiB + 100, 5000 },       /* random, unaligned */
	};
	const uint64_t size = 2 * MiB;
	char src[64], dst[64];
	struct tp_stream_opts o = { .threads = 2 };
	struct send_job j = { .size = size, .ext = x, .n = 5, .o = &o };
	struct tp_stream_progress got;
	struct err *e = NULL;
	uint8_t *want, *have;
	size_t len;
	pthread_t t;
	int sv[2], sfd, dfd;

	(void)state;
	sfd = make_volume(src, size, src_pieces, 2);
	dfd = tmp_file(dst);
	want = malloc(size);
	assert_non_null(want);
	memset(want, 0xaa, size);
	assert_int_equal(pwrite(dfd, want, size, 0), (ssize_t)size);
	/* The expected target: 0xaa outside the extents, the source inside. */
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(pread(sfd, want + x[i].offset, x[i].length, (off_t)x[i].offset),
				 (ssize_t)x[i].length);

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	j.out_fd = sv[0];
	j.file_fd = sfd;
	assert_int_equal(pthread_create(&t, NULL, send_main, &j), 0);
	assert_true(tp_stream_recv_apply(sv[1], dfd, &o, &got, &e));
	pthread_join(t, NULL);
	assert_true(j.ok);
	close(sv[0]);
	close(sv[1]);

	have = read_all_fd(dfd, &len);
	assert_int_equal(len, size);
	assert_memory_equal(have, want, size);
	assert_prog_equal(&j.fin, &got);
	assert_int_equal(got.total, 128 * KiB + 8 * KiB + 64 * KiB + 4 * KiB + 5000);
	assert_int_equal(got.covered, got.total);
	assert_int_equal(got.data_bytes, 128 * KiB + 4 * KiB + 5000);
	assert_int_equal(got.zero_bytes, 4 * KiB + 68 * KiB);
	/* START, DATA, DATA, ZERO, ZERO (two extents), DATA, END. */
	assert_int_equal(got.records, 7);
	free(have);
	free(want);
	close(sfd);
	close(dfd);
	tmp_remove(src);
	tmp_remove(dst);
}

static void test_extents_edge_cases(void **state)
{
	static const struct tp_extent overlap[] = { { 0, 8192 }, { 4096, 8192 } };
	static const struct tp_extent unsorted[] = { { 8192, 4096 }, { 0, 4096 } };
	static const struct tp_extent empty[] = { { 0, 4096 }, { 8192, 0 } };
	static const struct tp_extent beyond[] = { { 60000, 5537 } };
	static const struct tp_extent huge[] = { { 1, UINT64_MAX } };
	static const struct tp_extent one[] = { { 0, 4096 } };
	static const struct { const struct tp_extent *x; size_t n; } bad[] = {
		{ overlap, 2 }, { unsorted, 2 }, { empty, 2 }, { beyond, 1 }, { huge, 1 },
	};
	static const struct piece pieces[] = { { 0, 64 * KiB, F_TEXT } };
	const uint64_t size = 65536;
	char src[64], dst[64];
	struct tp_stream_progress fin;
	struct err *e = NULL;
	uint8_t *s, *have, *want;
	size_t len;
	int sfd, dfd;

	(void)state;
	sfd = make_volume(src, size, pieces, 1);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int out = memfd(0);
		struct stat st;

		assert_false(tp_stream_send_extents(out, sfd, size, bad[i].x, bad[i].n, NULL, NULL, &e));
		expect_err(e, ERR_INVAL, "invalid extent");
		e = NULL;
		assert_int_equal(fstat(out, &st), 0);
		assert_int_equal(st.st_size, 0); /* nothing written */
		close(out);
	}

	/* An empty run leaves the target alone. */
	dfd = tmp_file(dst);
	write_pieces(dfd, size, pieces, 1);
	want = read_all_fd(dfd, &len);
	s = capture_extents(sfd, size, NULL, 0, NULL, &len, &fin);
	assert_int_equal(len, 2 * REC_HDR_LEN + END_LEN);
	assert_int_equal(fin.records, 2);
	assert_int_equal(fin.total, 0);
	assert_true(recv_buf(s, len, dfd, NULL, 0, NULL, &fin, &e));
	assert_int_equal(fin.records, 2);
	have = read_all_fd(dfd, &len);
	assert_memory_equal(have, want, size);
	free(s);
	free(have);

	/* A new file needs a full stream; nothing is left behind. */
	unlink(dst);
	s = capture_extents(sfd, size, one, 1, NULL, &len, &fin);
	assert_false(recv_buf(s, len, -1, dst, size, NULL, NULL, &e));
	expect_err(e, ERR_PROTO, "only some extents");
	e = NULL;
	assert_false(exists(dst));
	assert_false(part_exists(dst));
	free(s);
	free(want);
	close(sfd);
	close(dfd);
	tmp_remove(src);
	tmp_remove(dst);
}

/* 2 MiB at 8 MiB/s: at least 0.25 s by the book, 0.2 s asserted. */
static void test_rate_limit(void **state)
{
	static const struct piece pieces[] = { { 0, 2 * MiB, F_RANDOM } };
	char src[64];
	struct prog_log l = { 0 };
	struct tp_stream_opts o = { .rate_limit = 8 * MiB, .flags = TP_STREAM_NO_COMPRESS,
				    .progress = on_progress, .opaque = &l };
	struct tp_stream_progress fin;
	int64_t t0, ms;
	size_t len;
	uint8_t *s;

	(void)state;
	close(make_volume(src, 2 * MiB, pieces, 1));
	t0 = util_now_ms();
	s = capture_file(src, &o, &len, &fin);
	ms = util_now_ms() - t0;
	assert_int_equal(fin.wire_bytes, 2 * MiB + 4 * REC_HDR_LEN + END_LEN);
	assert_int_equal(len, fin.wire_bytes);
	if (ms < 200 || ms > 3000)
		fail_msg("2 MiB at 8 MiB/s took %" PRId64 " ms", ms);
	/* Progress while it waits, at most every 100 ms, and at the end. */
	if (l.calls < 2 || l.calls > (unsigned)(ms / 100 + 2))
		fail_msg("%u progress calls in %" PRId64 " ms", l.calls, ms);
	assert_false(l.bad);
	assert_prog_equal(&l.last, &fin);
	free(s);
	tmp_remove(src);
}

/* Non-blocking fds on both sides (the sender fills the socket buffer). */
static void test_nonblocking(void **state)
{
	static const struct piece pieces[] = { { 0, 3 * MiB, F_RANDOM } };
	const uint64_t size = 3 * MiB;
	char src[64], dst[64];
	struct tp_stream_progress sent, got;
	struct send_job j = { .path = src };
	struct err *e = NULL;
	pthread_t t;
	int sv[2];

	(void)state;
	close(make_volume(src, size, pieces, 1));
	close(tmp_file(dst));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	j.out_fd = sv[0];
	assert_int_equal(pthread_create(&t, NULL, send_main, &j), 0);
	usleep(20 * 1000); /* let the sender hit EAGAIN */
	assert_true(tp_stream_recv_file(sv[1], dst, size, NULL, &got, &e));
	pthread_join(t, NULL);
	assert_true(j.ok);
	sent = j.fin;
	assert_prog_equal(&sent, &got);
	assert_int_equal(got.data_bytes, size);
	assert_files_equal(src, dst);
	close(sv[0]);
	close(sv[1]);
	tmp_remove(src);
	tmp_remove(dst);
}

/* A vanished peer is EPIPE, not SIGPIPE (default disposition here). */
static void test_peer_gone(void **state)
{
	struct small *v = small_new();
	struct err *e = NULL;
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	close(sv[1]);
	assert_false(tp_stream_send_file(sv[0], v->path, NULL, NULL, &e));
	assert_non_null(e);
	assert_int_equal(e->code, ERR_IO);
	assert_int_equal(e->errnum, EPIPE);
	assert_non_null(strstr(e->msg, v->path));
	err_free(e);
	e = NULL;
	close(sv[0]);

	assert_false(tp_stream_send_file(1, "/nonexistent/volume", NULL, NULL, &e));
	expect_err(e, ERR_IO, "/nonexistent/volume");
	small_free(v);
}

static void test_bad_options(void **state)
{
	static const unsigned bad_bs[] = { 1024, 3000, 96 * 1024, 2u << 20 };
	struct tp_stream_opts o = { 0 };
	struct err *e = NULL;
	int fd = memfd(0);

	(void)state;
	for (size_t i = 0; i < sizeof(bad_bs) / sizeof(bad_bs[0]); i++) {
		o.block_size = bad_bs[i];
		assert_false(tp_stream_send_extents(fd, fd, 0, NULL, 0, &o, NULL, &e));
		expect_err(e, ERR_INVAL, "invalid stream block size");
		e = NULL;
	}
	o.block_size = 0;
	o.threads = 65;
	assert_false(tp_stream_send_extents(fd, fd, 0, NULL, 0, &o, NULL, &e));
	expect_err(e, ERR_INVAL, "invalid stream threads 65");
	e = NULL;
	assert_false(tp_stream_recv_apply(fd, fd, &o, NULL, &e));
	expect_err(e, ERR_INVAL, "invalid stream threads 65");
	close(fd);
}

static void test_empty_volume(void **state)
{
	char src[64], dst[64];
	struct tp_stream_progress sent, got;

	(void)state;
	close(tmp_file(src));
	close(tmp_file(dst));
	round_trip_file(src, dst, 0, NULL, NULL, &sent, &got);
	assert_prog_equal(&sent, &got);
	assert_int_equal(got.records, 2);
	assert_int_equal(got.wire_bytes, 2 * REC_HDR_LEN + END_LEN);
	assert_files_equal(src, dst);
	tmp_remove(src);
	tmp_remove(dst);
}

/* The receiver stops right after END: what follows stays in the pipe. */
static void test_trailing_bytes_stay(void **state)
{
	struct small *v = small_new();
	struct tp_stream_progress got;
	struct err *e = NULL;
	uint8_t *b = malloc(v->len + 7), *vol;
	char tail[16] = { 0 };
	size_t len;
	int p[2];

	(void)state;
	assert_non_null(b);
	memcpy(b, v->s, v->len);
	memcpy(b + v->len, "TRAILER", 7);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(write(p[1], b, v->len + 7), (ssize_t)(v->len + 7));
	close(p[1]);
	assert_true(tp_stream_recv_apply(p[0], v->target, &v->o, &got, &e));
	assert_int_equal(got.wire_bytes, v->len);
	assert_int_equal(read(p[0], tail, sizeof(tail)), 7);
	assert_string_equal(tail, "TRAILER");
	close(p[0]);

	/* And the target holds the volume. */
	vol = read_all_fd(v->target, &len);
	assert_int_equal(len, SMALL_SIZE);
	for (size_t i = 0; i < 3; i++) {
		uint8_t *w = malloc(small_pieces[i].len);
		assert_non_null(w);
		fill_buf(w, small_pieces[i].off, small_pieces[i].len, small_pieces[i].fill);
		assert_memory_equal(vol + small_pieces[i].off, w, small_pieces[i].len);
		free(w);
	}
	free(vol);
	free(b);
	small_free(v);
}

/* Every header byte, every 7th payload byte and each payload's last. */
static bool sampled(const struct small *v, size_t k, size_t pos)
{
	size_t in = pos - v->r[k].at, next = k + 1 < v->n ? v->r[k + 1].at : v->len;

	return in < REC_HDR_LEN || (in - REC_HDR_LEN) % 7 == 0 || pos + 1 == next;
}

/* Every header byte flipped (payloads sampled): ERR_PROTO naming the damaged record's offset (or
 * ERR_CLOSED when a grown payload length runs past the end). */
static void test_flipped_bytes(void **state)
{
	static const uint8_t masks[] = { 0x01, 0x80, 0xff, 0x10 };
	struct small *v = small_new();
	uint8_t *b = malloc(v->len);
	size_t k = 0, tried = 0;

	(void)state;
	assert_non_null(b);
	for (size_t pos = 0; pos < v->len; pos++) {
		uint8_t m = masks[pos % sizeof(masks)];
		struct err *e = NULL;
		size_t rec_at;
		bool ok;

		while (k + 1 < v->n && v->r[k + 1].at <= pos)
			k++;
		if (!sampled(v, k, pos))
			continue;
		tried++;
		rec_at = v->r[k].at;
		memcpy(b, v->s, v->len);
		b[pos] ^= m;
		ok = recv_buf(b, v->len, v->target, NULL, 0, &v->o, NULL, &e);
		if (ok)
			fail_msg("flip %#x at %zu (record %zu) went unnoticed", m, pos, k);
		if (pos - rec_at >= 12 && pos - rec_at < 16) {
			uint32_t pl = get_le32(b + rec_at + 12);
			if (pl <= TP_STREAM_MAX_RECORD && rec_at + REC_HDR_LEN + pl > v->len) {
				expect_corrupt(e, ERR_CLOSED, rec_at, "truncated");
				continue;
			}
		}
		expect_corrupt(e, ERR_PROTO, rec_at, "");
	}
	assert_true(tried > 5 * REC_HDR_LEN + 200);
	free(b);
	small_free(v);
}

/* Truncated inside every header and sampled payloads: ERR_CLOSED naming
 * the cut record's offset. */
static void test_truncated(void **state)
{
	struct small *v = small_new();
	size_t k = 0;

	(void)state;
	for (size_t cut = 0; cut < v->len; cut++) {
		struct err *e = NULL;

		while (k + 1 < v->n && v->r[k + 1].at <= cut)
			k++;
		if (!sampled(v, k, cut))
			continue;
		assert_false(recv_buf(v->s, cut, v->target, NULL, 0, &v->o, NULL, &e));
		expect_corrupt(e, ERR_CLOSED, v->r[k].at, "truncated: end of stream inside a record");
	}
	small_free(v);
}

/* A stream larger than a pipe holds: applied whole, and damage deep in
 * it stops the receiver while the sender (feeder) still has bytes. */
static void test_large_stream_through_pipe(void **state)
{
	char src[64];
	struct tp_stream_opts o = { .threads = 2 };
	struct tp_stream_progress sent, got;
	struct frec r[MAX_RECS];
	struct err *e = NULL;
	size_t len, n, at;
	uint8_t *s;
	int sfd, t = memfd(RT_SIZE);

	(void)state;
	sfd = make_volume(src, RT_SIZE, rt_pieces, 5);
	s = capture_file(src, &o, &len, &sent);
	n = parse(s, len, r);
	assert_int_equal(n, 9);
	assert_true(len > 640 * KiB);
	/* Record 1: raw random data [0, 256 KiB). */
	assert_int_equal(r[1].h.type, REC_DATA);
	assert_int_equal(r[1].h.length, 256 * KiB);
	assert_int_equal(r[1].h.flags, 0);
	at = r[1].at;

	assert_true(recv_buf(s, len, t, NULL, 0, &o, &got, &e));
	assert_prog_equal(&sent, &got);
	assert_fds_equal(sfd, t, "volume and target");

	s[at + REC_HDR_LEN + 200 * KiB] ^= 0x40;
	assert_false(recv_buf(s, len, t, NULL, 0, &o, NULL, &e));
	expect_corrupt(e, ERR_PROTO, at, "record 1 (DATA): checksum mismatch");
	e = NULL;
	assert_false(recv_buf(s, at + 100 * KiB, t, NULL, 0, &o, NULL, &e));
	expect_corrupt(e, ERR_CLOSED, at, "truncated: end of stream inside a record payload (102360 of 262144 bytes)");
	free(s);
	close(sfd);
	close(t);
	tmp_remove(src);
}

/* A failed receive into a file leaves the old file and no .part. */
static void test_recv_file_failure_keeps_old(void **state)
{
	static const size_t cuts[] = { 0, 39, 200 };
	struct small *v = small_new();
	char dst[64];
	uint8_t *b = malloc(v->len);
	struct stat st;
	int fd;

	(void)state;
	assert_non_null(b);
	fd = tmp_file(dst);
	assert_int_equal(write(fd, "OLD", 3), 3);
	close(fd);
	for (size_t i = 0; i < 3; i++) {
		struct err *e = NULL;

		assert_false(recv_buf(v->s, v->len - cuts[i] - 1, -1, dst, SMALL_SIZE, NULL, NULL, &e));
		expect_err(e, ERR_CLOSED, "truncated");
		e = NULL;
		memcpy(b, v->s, v->len);
		b[v->r[3].at + REC_HDR_LEN + cuts[i]] ^= 1; /* the raw DATA payload */
		assert_false(recv_buf(b, v->len, -1, dst, SMALL_SIZE, NULL, NULL, &e));
		expect_corrupt(e, ERR_PROTO, v->r[3].at, "checksum mismatch");
		assert_int_equal(stat(dst, &st), 0);
		assert_int_equal(st.st_size, 3);
		assert_false(part_exists(dst));
	}

	/* A wrong expected size fails before anything is created. */
	unlink(dst);
	for (int d = -1; d <= 1; d += 2) {
		struct err *e = NULL;
		assert_false(recv_buf(v->s, v->len, -1, dst, SMALL_SIZE + (uint64_t)(int64_t)d, NULL,
				      NULL, &e));
		expect_err(e, ERR_INVAL, "volume size mismatch");
		assert_false(exists(dst));
		assert_false(part_exists(dst));
	}
	/* And a stale .part (world-readable, longer) is replaced. */
	{
		char part[80];
		struct err *e = NULL;
		static const struct piece big[] = { { 0, 300 * KiB, F_RANDOM } };

		snprintf(part, sizeof(part), "%s.part", dst);
		fd = open(part, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		assert_true(fd >= 0);
		write_pieces(fd, 300 * KiB, big, 1);
		assert_int_equal(fchmod(fd, 0644), 0);
		close(fd);
		assert_true(recv_buf(v->s, v->len, -1, dst, SMALL_SIZE, NULL, NULL, &e));
		assert_false(part_exists(dst));
		assert_files_equal(v->path, dst);
		assert_int_equal(stat(dst, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0600);

		/* Nor is one that is a symlink followed. */
		char victim[64];
		close(tmp_file(victim));
		assert_int_equal(truncate(victim, 12345), 0);
		assert_int_equal(symlink(victim, part), 0);
		assert_true(recv_buf(v->s, v->len, -1, dst, SMALL_SIZE, NULL, NULL, &e));
		assert_false(part_exists(dst));
		assert_files_equal(v->path, dst);
		assert_int_equal(stat(victim, &st), 0);
		assert_int_equal(st.st_size, 12345);
		tmp_remove(victim);
	}
	free(b);
	tmp_remove(dst);
	small_free(v);
}

static void test_wrong_size_apply(void **state)
{
	struct small *v = small_new();
	struct err *e = NULL;
	int t = memfd(SMALL_SIZE + 4096);

	(void)state;
	assert_false(recv_buf(v->s, v->len, t, NULL, 0, NULL, NULL, &e));
	expect_err(e, ERR_INVAL, "volume size mismatch: the stream carries 197608 bytes, the target has 201704");
	close(t);
	small_free(v);
}

/* Records duplicated, reordered or dropped as they are (seq numbers
 * break), and re-sealed with fresh seq, crc and END (ranges break). */
static void test_duplicated_reordered(void **state)
{
	struct small *v = small_new();
	struct frec r[MAX_RECS];
	struct err *e = NULL;
	uint8_t *b = malloc(2 * v->len);
	size_t n = v->n, len, a1 = v->r[1].at, a2 = v->r[2].at, a3 = v->r[3].at;
	size_t l1 = a2 - a1, l2 = a3 - a2;

	(void)state;
	assert_non_null(b);
	/* The forger reproduces the sender's stream byte for byte. */
	memcpy(r, v->r, sizeof(r));
	{
		uint8_t *f = forge(r, n, &len);
		assert_int_equal(len, v->len);
		assert_memory_equal(f, v->s, len);
		free(f);
	}

	/* Raw duplicate of record 1. */
	memcpy(b, v->s, a2);
	memcpy(b + a2, v->s + a1, v->len - a1);
	assert_false(recv_buf(b, v->len + l1, v->target, NULL, 0, &v->o, NULL, &e));
	expect_corrupt(e, ERR_PROTO, a2, "record 2 expected, got 1 (records dropped, duplicated or reordered)");
	e = NULL;
	/* Raw swap of records 1 and 2. */
	memcpy(b, v->s, a1);
	memcpy(b + a1, v->s + a2, l2);
	memcpy(b + a1 + l2, v->s + a1, l1);
	memcpy(b + a3, v->s + a3, v->len - a3);
	assert_false(recv_buf(b, v->len, v->target, NULL, 0, &v->o, NULL, &e));
	expect_corrupt(e, ERR_PROTO, a1, "record 1 expected, got 2");
	e = NULL;
	/* Raw drop of record 2. */
	memcpy(b, v->s, a2);
	memcpy(b + a2, v->s + a3, v->len - a3);
	assert_false(recv_buf(b, v->len - l2, v->target, NULL, 0, &v->o, NULL, &e));
	expect_corrupt(e, ERR_PROTO, a2, "record 2 expected, got 3");
	e = NULL;

	/* Re-sealed duplicate: the range goes backwards. */
	memcpy(r, v->r, 2 * sizeof(r[0]));
	memcpy(r + 2, v->r + 1, (n - 1) * sizeof(r[0]));
	expect_forged(v, r, n + 1, ERR_PROTO, 2, "out of order");
	/* Re-sealed swap. */
	memcpy(r, v->r, sizeof(r));
	r[1] = v->r[2];
	r[2] = v->r[1];
	expect_forged(v, r, n, ERR_PROTO, 1, "out of order");
	/* Re-sealed drop: a full stream must tile the volume. */
	memcpy(r, v->r, 2 * sizeof(r[0]));
	memcpy(r + 2, v->r + 3, (n - 3) * sizeof(r[0]));
	expect_forged(v, r, n - 1, ERR_PROTO, 2, "out of order");
	/* Dropped at the end: END's totals no longer cover the volume. */
	memcpy(r, v->r, 3 * sizeof(r[0]));
	r[3] = v->r[4];
	expect_forged(v, r, 4, ERR_PROTO, 3, "END: records cover 196608 of 197608 bytes");
	free(b);
	small_free(v);
}

/* Streams with valid checksums that still lie. */
static void test_forged_records(void **state)
{
	struct small *v = small_new();
	struct frec r[MAX_RECS];
	size_t n = v->n, zi;
	uint8_t garbage[4096], *text, zbuf[8192], *end;
	size_t zlen;

	(void)state;
	memset(garbage, 0x5a, sizeof(garbage));
	zi = find_rec(v->r, n, REC_DATA, REC_F_ZSTD);
	assert_int_equal(zi, 1);

	/* A zstd payload that is not zstd. */
	memcpy(r, v->r, sizeof(r));
	r[1].payload = garbage;
	expect_forged(v, r, n, ERR_PROTO, 1, "record 1: zstd: ");
	/* One that decompresses short of the header's length. */
	text = malloc(64 * KiB);
	assert_non_null(text);
	fill_buf(text, 0, 64 * KiB, F_TEXT);
	zlen = ZSTD_compress(zbuf, sizeof(zbuf), text, 32 * KiB, 1);
	assert_false(ZSTD_isError(zlen));
	r[1].payload = zbuf;
	r[1].h.payload_len = (uint32_t)zlen;
	expect_forged(v, r, n, ERR_PROTO, 1, "32768 bytes decompressed, header says 65536");
	/* One that decompresses beyond it. */
	zlen = ZSTD_compress(zbuf, sizeof(zbuf), text, 64 * KiB, 1);
	r[1].h.length = 32 * KiB;
	r[1].h.payload_len = (uint32_t)zlen;
	r[2].h.offset = 32 * KiB;
	r[2].h.length = 160 * KiB;
	expect_forged(v, r, n, ERR_PROTO, 1, "record 1: zstd: ");
	free(text);

	/* A raw payload whose length differs from the raw length. */
	memcpy(r, v->r, sizeof(r));
	r[3].h.payload_len = 999;
	expect_forged(v, r, n, ERR_PROTO, 3, "bad DATA lengths");
	/* A zstd payload as long as the data. */
	memcpy(r, v->r, sizeof(r));
	r[3].h.flags = REC_F_ZSTD;
	expect_forged(v, r, n, ERR_PROTO, 3, "bad DATA lengths");
	/* Unknown flags, empty ZERO, payload on ZERO. */
	memcpy(r, v->r, sizeof(r));
	r[2].h.flags = 0x8;
	expect_forged(v, r, n, ERR_PROTO, 2, "bad ZERO record");
	memcpy(r, v->r, sizeof(r));
	r[2].h.length = 0;
	expect_forged(v, r, n, ERR_PROTO, 2, "bad ZERO record");
	memcpy(r, v->r, sizeof(r));
	r[2].h.payload_len = 10;
	r[2].payload = garbage;
	expect_forged(v, r, n, ERR_PROTO, 2, "bad ZERO record");
	/* A record past the end of the volume. */
	memcpy(r, v->r, sizeof(r));
	r[3].h.length = 2000;
	r[3].h.payload_len = 2000;
	r[3].payload = garbage;
	expect_forged(v, r, n, ERR_PROTO, 3, "beyond the volume");
	/* Types that do not belong. */
	memcpy(r, v->r, sizeof(r));
	r[2].h.type = 9;
	expect_forged(v, r, n, ERR_PROTO, 2, "unexpected unknown record");
	memcpy(r, v->r, sizeof(r));
	r[2] = v->r[0];
	expect_forged(v, r, n, ERR_PROTO, 2, "unexpected START record");
	memcpy(r, v->r, sizeof(r));
	r[0] = v->r[2];
	expect_forged(v, r, n, ERR_PROTO, 0, "expected a START record, got ZERO");
	memcpy(r, v->r, sizeof(r));
	r[0].h.flags = 0; /* a full volume's records, but START claims extents */
	r[0].h.offset = SMALL_SIZE - 1;
	expect_forged(v, r, n, ERR_PROTO, 4, "END: records cover 197608 of 197607 bytes");
	memcpy(r, v->r, sizeof(r));
	r[0].h.offset = SMALL_SIZE + 1;
	r[0].h.flags = 0;
	expect_forged(v, r, n, ERR_PROTO, 0, "START: the run covers 197609 bytes");

	/* END: totals, run checksum, reserved field, shape. */
	end = malloc(END_LEN);
	assert_non_null(end);
	for (int c = 0; c < 7; c++) {
		static const char *const why[] = {
			NULL, "END: totals (197608 covered, 66537 data, 131072 zero)",
			"END: totals (197608 covered, 66536 data, 131073 zero)", "END: run checksum",
			"END: reserved field set", "bad END record", "bad END record",
		};
		memcpy(r, v->r, sizeof(r));
		memcpy(end, v->r[4].payload, END_LEN);
		r[4].keep_end = true;
		r[4].payload = end;
		switch (c) {
		case 0: { /* as sent: the same stream */
			size_t len;
			uint8_t *f = forge(r, n, &len);
			assert_int_equal(len, v->len);
			assert_memory_equal(f, v->s, len);
			free(f);
			continue;
		}
		case 1: r[4].h.length++; break;
		case 2: put_le64(end, get_le64(end) + 1); break;
		case 3: end[8] ^= 1; break;
		case 4: end[12] = 1; break;
		case 5: r[4].h.payload_len = 8; break;
		case 6: r[4].h.flags = 1; break;
		}
		expect_forged(v, r, n, ERR_PROTO, 4, why[c]);
	}
	free(end);
	small_free(v);
}

/* ---- on_range and the callback sender ---------------------------------- */

struct range_log {
	pthread_t caller;
	struct frec r[MAX_RECS]; /* h.type, h.offset, h.length of each call */
	size_t n;
	bool bad;                /* another thread, or too many calls */
};

static void on_range_log(uint64_t off, uint64_t len, bool zero, void *opaque)
{
	struct range_log *l = opaque;

	if (!pthread_equal(pthread_self(), l->caller) || l->n == MAX_RECS) {
		l->bad = true;
		return;
	}
	l->r[l->n].h.type = zero ? REC_ZERO : REC_DATA;
	l->r[l->n].h.offset = off;
	l->r[l->n].h.length = len;
	l->n++;
}

/* The log holds exactly the DATA/ZERO records r[1 .. 1 + n). */
static void assert_ranges_are(const struct range_log *l, const struct frec *r, size_t n)
{
	assert_false(l->bad);
	assert_int_equal(l->n, n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(l->r[i].h.type, r[1 + i].h.type);
		assert_int_equal(l->r[i].h.offset, r[1 + i].h.offset);
		assert_int_equal(l->r[i].h.length, r[1 + i].h.length);
	}
}

/* Every applied record is reported, in order, in the calling thread, by
 * recv_apply and recv_file; a run that fails reports only what it touched. */
static void test_on_range(void **state)
{
	char src[64], dst[64];
	struct tp_stream_opts so = { .threads = 2 };
	struct range_log l = { .caller = pthread_self() };
	struct tp_stream_opts ro = { .threads = 3, .on_range = on_range_log, .opaque = &l };
	struct tp_stream_progress sent, got;
	struct frec r[MAX_RECS];
	struct err *e = NULL;
	size_t len, n, bad, vlen;
	uint8_t *s, *vol;
	int t = memfd(RT_SIZE);

	(void)state;
	close(make_volume(src, RT_SIZE, rt_pieces, 5));
	s = capture_file(src, &so, &len, &sent);
	n = parse(s, len, r);
	assert_int_equal(n, 9);

	assert_true(recv_buf(s, len, t, NULL, 0, &ro, &got, &e));
	assert_ranges_are(&l, r, n - 2);
	l.n = 0;
	close(tmp_file(dst));
	assert_true(recv_buf(s, len, -1, dst, RT_SIZE, &ro, &got, &e));
	assert_ranges_are(&l, r, n - 2);
	assert_files_equal(src, dst);

	/* Damage in the last DATA record: the ranges before it are reported,
	 * and the target changed nowhere else. */
	bad = n - 2;
	assert_int_equal(r[bad].h.type, REC_DATA);
	s[r[bad].at + REC_HDR_LEN + 100] ^= 0x20;
	vol = malloc(RT_SIZE);
	assert_non_null(vol);
	memset(vol, 0xaa, RT_SIZE);
	assert_int_equal(pwrite(t, vol, RT_SIZE, 0), (ssize_t)RT_SIZE);
	free(vol);
	l.n = 0;
	assert_false(recv_buf(s, len, t, NULL, 0, &ro, NULL, &e));
	expect_corrupt(e, ERR_PROTO, r[bad].at, "checksum mismatch");
	assert_ranges_are(&l, r, bad - 1);
	vol = read_all_fd(t, &vlen);
	for (size_t i = 0, k = 0; i < vlen; i++) {
		while (k < l.n && l.r[k].h.offset + l.r[k].h.length <= i)
			k++;
		if ((k == l.n || i < l.r[k].h.offset) && vol[i] != 0xaa)
			fail_msg("byte %zu changed outside the reported ranges", i);
	}
	free(vol);
	free(s);
	close(t);
	tmp_remove(src);
	tmp_remove(dst);
}

/* A source in memory, read through the callback. */
struct mem_src {
	const uint8_t *img;
	pthread_t caller, reader;
	struct tp_extent calls[64];
	size_t n;
	uint64_t fail_at;        /* fail the call that reaches this offset; 0: never */
	bool bad;                /* two threads, the caller's, or out of order */
};

static bool mem_read(void *opaque, void *buf, size_t len, uint64_t off, struct err **errp)
{
	struct mem_src *m = opaque;

	if (pthread_equal(pthread_self(), m->caller) || len > 1 * MiB || m->n == 64 ||
	    (m->n && (!pthread_equal(pthread_self(), m->reader) ||
		      off < m->calls[m->n - 1].offset + m->calls[m->n - 1].length)))
		m->bad = true;
	m->reader = pthread_self();
	if (m->n < 64)
		m->calls[m->n++] = (struct tp_extent){ off, len };
	if (m->fail_at && off + len > m->fail_at)
		return err_set(errp, ERR_IO, "nbd_pread at %" PRIu64 ": server went away", off);
	memcpy(buf, m->img + off, len);
	return true;
}

/* The callback sender makes the same stream as the file sender on a fully
 * allocated file (zero blocks inside data still become ZERO records),
 * reads exactly the extents from one thread, and passes its errors on. */
static void test_send_extents_fn(void **state)
{
	static const struct piece pieces[] = {
		{ 0, 1 * MiB, F_TEXT },
		{ 256 * KiB, 128 * KiB, F_ZERO },
		{ 1536 * KiB, 600 * KiB, F_RANDOM },
		{ 3 * MiB, 333, F_TEXT },
	};
	static const struct tp_extent x[] = {
		{ 0, 1 * MiB + 4 * KiB }, { 1536 * KiB - 100, 600 * KiB }, { 3 * MiB, 333 },
	};
	static const struct tp_extent bad[] = { { 4096, 4096 }, { 0, 4096 } };
	const uint64_t size = 3 * MiB + 333;
	struct mem_src m = { .caller = pthread_self() };
	struct tp_stream_progress ffd, ffn;
	struct err *e = NULL;
	uint8_t *img, *sfd, *sfn, *want, *have;
	size_t lfd, lfn, len;
	char src[64];
	int fd, out, t;

	(void)state;
	img = calloc(1, size);
	assert_non_null(img);
	for (size_t i = 0; i < 4; i++)
		fill_buf(img + pieces[i].off, pieces[i].off, pieces[i].len, pieces[i].fill);
	fd = tmp_file(src);
	assert_int_equal(pwrite(fd, img, size, 0), (ssize_t)size); /* no holes */
	m.img = img;
	for (unsigned threads = 1; threads <= 3; threads += 2) {
		struct tp_stream_opts o = { .threads = threads };

		m.n = 0;
		sfd = capture_extents(fd, size, x, 3, &o, &lfd, &ffd);
		out = memfd(0);
		if (!tp_stream_send_extents_fn(out, size, x, 3, mem_read, &m, &o, &ffn, &e))
			fail_msg("send: %s", e->msg);
		sfn = read_all_fd(out, &lfn);
		close(out);
		assert_int_equal(lfn, lfd);
		assert_memory_equal(sfn, sfd, lfd);
		assert_prog_equal(&ffn, &ffd);
		assert_int_equal(ffn.zero_bytes, 128 * KiB + 4 * KiB + 100);
		/* The calls tile the extents, from one thread, in order. */
		assert_false(m.bad);
		for (size_t i = 0, k = 0; i < 3; i++) {
			uint64_t at = x[i].offset;
			while (at < x[i].offset + x[i].length) {
				assert_true(k < m.n);
				assert_int_equal(m.calls[k].offset, at);
				at += m.calls[k++].length;
			}
			assert_int_equal(at, x[i].offset + x[i].length);
			if (i == 2)
				assert_int_equal(k, m.n);
		}
		free(sfd);
		free(sfn);
	}

	/* Applied: the source inside the extents, the target's bytes outside. */
	t = memfd(size);
	want = malloc(size);
	assert_non_null(want);
	memset(want, 0xaa, size);
	assert_int_equal(pwrite(t, want, size, 0), (ssize_t)size);
	for (size_t i = 0; i < 3; i++)
		memcpy(want + x[i].offset, img + x[i].offset, x[i].length);
	sfn = NULL;
	out = memfd(0);
	assert_true(tp_stream_send_extents_fn(out, size, x, 3, mem_read, &m, NULL, &ffn, &e));
	sfn = read_all_fd(out, &lfn);
	close(out);
	assert_true(recv_buf(sfn, lfn, t, NULL, 0, NULL, NULL, &e));
	have = read_all_fd(t, &len);
	assert_int_equal(len, size);
	assert_memory_equal(have, want, size);
	free(have);
	free(sfn);

	/* The callback's error is the run's, unchanged; bad extents fail
	 * before any call. */
	m.n = 0;
	m.fail_at = 1536 * KiB;
	out = memfd(0);
	assert_false(tp_stream_send_extents_fn(out, size, x, 3, mem_read, &m, NULL, NULL, &e));
	assert_non_null(e);
	assert_int_equal(e->code, ERR_IO);
	assert_string_equal(e->msg, "nbd_pread at 1572764: server went away");
	err_free(e);
	e = NULL;
	m.n = 0;
	assert_false(tp_stream_send_extents_fn(out, size, bad, 2, mem_read, &m, NULL, NULL, &e));
	expect_err(e, ERR_INVAL, "invalid extent 1");
	assert_int_equal(m.n, 0);
	e = NULL;
	assert_false(tp_stream_send_extents_fn(out, size, x, 3, NULL, NULL, NULL, NULL, &e));
	expect_err(e, ERR_INVAL, "no read callback");
	close(out);
	free(want);
	free(img);
	close(fd);
	close(t);
	tmp_remove(src);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_round_trip_sparse),
		cmocka_unit_test(test_block_size_and_threads),
		cmocka_unit_test(test_many_small_records),
		cmocka_unit_test(test_no_compress_no_zero_skip),
		cmocka_unit_test(test_extents),
		cmocka_unit_test(test_extents_edge_cases),
		cmocka_unit_test(test_rate_limit),
		cmocka_unit_test(test_nonblocking),
		cmocka_unit_test(test_peer_gone),
		cmocka_unit_test(test_bad_options),
		cmocka_unit_test(test_empty_volume),
		cmocka_unit_test(test_trailing_bytes_stay),
		cmocka_unit_test(test_flipped_bytes),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_large_stream_through_pipe),
		cmocka_unit_test(test_recv_file_failure_keeps_old),
		cmocka_unit_test(test_wrong_size_apply),
		cmocka_unit_test(test_duplicated_reordered),
		cmocka_unit_test(test_forged_records),
		cmocka_unit_test(test_on_range),
		cmocka_unit_test(test_send_extents_fn),
	};
	return cmocka_run_group_tests_name("stream", tests, NULL, NULL);
}
