/* test_stream_damage.c - the volume stream against hostile and odd
 * input, and its callbacks: a stream larger than a pipe with damage deep
 * in it, a failed receive that keeps the old file, a wrong volume size,
 * records duplicated, reordered and dropped both raw and re-sealed with
 * valid checksums, forged totals and zstd payloads; the receiver's
 * on_range reports and the sender reading through a callback. Shared
 * helpers in test_stream.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "test_stream.h"

/* ---- tests ------------------------------------------------------------ */

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
		cmocka_unit_test(test_large_stream_through_pipe),
		cmocka_unit_test(test_recv_file_failure_keeps_old),
		cmocka_unit_test(test_wrong_size_apply),
		cmocka_unit_test(test_duplicated_reordered),
		cmocka_unit_test(test_forged_records),
		cmocka_unit_test(test_on_range),
		cmocka_unit_test(test_send_extents_fn),
	};
	return cmocka_run_group_tests_name("stream_damage", tests, NULL, NULL);
}
