/* test_stream.c - the volume stream (transport/tp_stream*.c) end to end:
 * real sender and receiver over socketpairs and pipes with temp files.
 * Round trips of sparse volumes with zero blocks inside data (figures
 * prove zeros travel as ZERO records), extents, the option flags, the
 * rate limit, a peer that goes away, bad options, trailing bytes, and
 * bytes flipped or streams cut in every record header (payloads
 * sampled). test_stream_damage.c has the rest; test_stream.h the shared
 * helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "test_stream.h"

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
	};
	return cmocka_run_group_tests_name("stream", tests, NULL, NULL);
}
