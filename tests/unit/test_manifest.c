/* test_manifest.c - block hashes of a replica on the source
 * (replicate/repl_manifest.c) over in-memory images. Each diff is checked
 * against a model replica: its extents must be exactly the blocks where
 * the model differs from the image (sorted, merged, at most 64 MiB each),
 * and applying them must make the model equal the image. The saved file
 * is checked field by field against the documented format, with the
 * hashes recomputed here; every region of it is damaged in turn, raw and
 * with a recomputed checksum, and the file is cut at each boundary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ERR_STATE openssl_ERR_STATE /* OpenSSL's typedef vs our error code */
#include <openssl/evp.h>
#undef ERR_STATE

#include "common/util.h"
#include "replicate/repl.h"

#define B ((uint64_t)REPL_BLOCK)
#define MiB (1024ull * 1024)
#define HDR 48u
#define TRAILER 32u
#define NEVER UINT64_MAX

static char dir[] = "/tmp/test_manifest.XXXXXX";

/* A disk, its manifest and a model of the replica the manifest describes. */
struct img {
	uint8_t *data;
	uint8_t *rep;
	struct repl_manifest *m;
	uint64_t size;
	uint64_t fail_at; /* a read covering this offset fails */
	bool silent;      /* ... without setting an error */
	unsigned calls;
	uint64_t bytes;
};

static bool img_read(void *opaque, void *buf, size_t len, uint64_t off, struct err **errp)
{
	struct img *im = opaque;

	assert_true(len > 0 && off <= im->size && len <= im->size - off);
	im->calls++;
	im->bytes += len;
	if (im->fail_at >= off && im->fail_at - off < len) {
		if (!im->silent)
			err_set(errp, ERR_IO, "disk gone at %llu", (unsigned long long)im->fail_at);
		return false;
	}
	memcpy(buf, im->data + off, len);
	return true;
}

static struct img img_new(uint64_t size)
{
	struct img im = { .data = calloc(1, size + 1), .rep = calloc(1, size + 1),
			  .m = repl_manifest_new(size, NULL), .size = size, .fail_at = NEVER };

	assert_true(im.data && im.rep && im.m);
	return im;
}

static void img_free(struct img *im)
{
	repl_manifest_free(im->m);
	free(im->rep);
	free(im->data);
}

static void img_reset(struct img *im)
{
	im->calls = 0;
	im->bytes = 0;
	im->fail_at = NEVER;
	im->silent = false;
}

static uint64_t blen(uint64_t size, uint64_t b)
{
	return size - b * B < B ? size - b * B : B;
}

static uint64_t nblocks(uint64_t size)
{
	return (size + B - 1) / B;
}

/* Diffs im against the model replica rep and checks the extents are
 * exactly the differing blocks; then brings rep up to date. Returns the
 * number of extents. */
static size_t check_diff(struct img *im)
{
	uint8_t *rep = im->rep;
	struct tp_extent *ext = NULL;
	struct err *e = NULL;
	size_t n = 99, k = 0;

	img_reset(im);
	assert_true(repl_manifest_diff(im->m, img_read, im, &ext, &n, &e));
	assert_null(e);
	assert_int_equal(im->bytes, im->size);
	for (uint64_t b = 0; b < nblocks(im->size); b++) {
		uint64_t off = b * B, len = blen(im->size, b);
		bool changed = memcmp(rep + off, im->data + off, len) != 0;

		while (k < n && ext[k].offset + ext[k].length <= off)
			k++;
		bool in = k < n && ext[k].offset <= off;
		if (changed != in)
			fail_msg("block %llu: changed %d, reported %d", (unsigned long long)b, changed, in);
	}
	for (size_t i = 0; i < n; i++) {
		assert_true(ext[i].length > 0 && ext[i].length <= 64 * MiB);
		assert_int_equal(ext[i].offset % B, 0);
		assert_true(ext[i].offset + ext[i].length <= im->size);
		assert_true(ext[i].length % B == 0 || ext[i].offset + ext[i].length == im->size);
		if (i)
			/* Sorted; touching only where the first is full. */
			assert_true(ext[i - 1].offset + ext[i - 1].length < ext[i].offset ||
				    (ext[i - 1].offset + ext[i - 1].length == ext[i].offset &&
				     ext[i - 1].length == 64 * MiB));
		memcpy(rep + ext[i].offset, im->data + ext[i].offset, ext[i].length);
	}
	assert_memory_equal(rep, im->data, im->size + 1);
	free(ext);
	return n;
}

/* Diffs and expects exactly the listed extents. */
static void expect_diff(struct img *im, const struct tp_extent *want, size_t nwant)
{
	struct tp_extent *ext = NULL;
	size_t n = 99;

	img_reset(im);
	assert_true(repl_manifest_diff(im->m, img_read, im, &ext, &n, NULL));
	assert_int_equal(n, nwant);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(ext[i].offset, want[i].offset);
		assert_int_equal(ext[i].length, want[i].length);
	}
	free(ext);
}

/* Saves the manifest as gen and swaps it for the one loaded back. */
static void reload(struct img *im, const char *path, uint64_t gen)
{
	struct repl_manifest *back;
	struct err *e = NULL;

	assert_true(repl_manifest_save(im->m, path, gen, &e));
	back = repl_manifest_load(path, im->size, gen, &e);
	assert_non_null(back);
	assert_null(e);
	repl_manifest_free(im->m);
	im->m = back;
}

static void test_new_sparse(void **state)
{
	uint64_t size = 8 * MiB + 3 * B, last = nblocks(size) - 1;
	struct img im = img_new(size);
	const struct tp_extent want[] = {
		{ 3 * B, B }, { 17 * B, 2 * B }, { 63 * B, 2 * B } /* across a 4 MiB chunk */,
		{ last * B, B },
	};

	(void)state;
	expect_diff(&im, NULL, 0); /* all zeros: equal to a fresh replica */
	assert_int_equal(im.bytes, size);
	assert_true(im.calls <= size / MiB); /* read in chunks of 1 MiB or more */
	im.data[3 * B + 7] = 1;
	im.data[17 * B] = 2;
	im.data[19 * B - 1] = 3;
	im.data[63 * B + B / 2] = 4;
	im.data[64 * B] = 5;
	im.data[size - 1] = 6;
	expect_diff(&im, want, 4);
	expect_diff(&im, NULL, 0);

	repl_manifest_free(im.m);
	im.m = repl_manifest_new(size, NULL);
	assert_int_equal(check_diff(&im), 4);
	img_free(&im);
}

static void test_changed_blocks(void **state)
{
	uint64_t size = 6 * MiB;
	struct img im = img_new(size);
	const struct tp_extent k1[] = { { 40 * B, B } }, k2[] = { { 40 * B, 2 * B } },
			       k3[] = { { 40 * B, B }, { 42 * B, B } };

	(void)state;
	for (uint64_t i = 0; i < size; i++)
		im.data[i] = (uint8_t)(i * 2654435761u >> 13);
	check_diff(&im);
	expect_diff(&im, NULL, 0);
	im.data[40 * B + 1234] ^= 0x10;
	im.data[40 * B + 9] ^= 0x01;
	expect_diff(&im, k1, 1);
	im.data[40 * B + 5] ^= 0x80;
	im.data[41 * B + B - 1] ^= 0x80;
	expect_diff(&im, k2, 1);
	im.data[40 * B] ^= 0x02;
	im.data[42 * B] ^= 0x02;
	expect_diff(&im, k3, 2);
	im.data[40 * B] ^= 0x04; /* changed and changed back: nothing */
	im.data[40 * B] ^= 0x04;
	expect_diff(&im, NULL, 0);
	memset(im.data + 40 * B, 0, B); /* data turned to zeros is a change too */
	expect_diff(&im, k1, 1);
	im.data[40 * B] = 1;
	expect_diff(&im, k1, 1);
	img_free(&im);
}

static void test_update(void **state)
{
	uint64_t size = 5 * MiB + 777, last = nblocks(size) - 1;
	struct img im = img_new(size);
	const struct tp_extent sent[] = {
		{ 5 * B + 100, 10 }, { 6 * B, B }, { 6 * B + 10, 20 }, /* one read: blocks 5-6 */
	};
	const struct tp_extent rest[] = { { 20 * B, B }, { last * B, size - last * B } };
	const struct tp_extent outside[] = { { 0, B }, { size - 10, 11 } };
	const struct tp_extent unsorted[] = { { last * B + 1, 5 }, { 0, 0 }, { 20 * B + 3, B } };
	const struct tp_extent bad_read[] = { { 30 * B, 11 * B } }, all[] = { { 0, size } };
	struct err *e = NULL;

	(void)state;
	memset(im.data, 0x5a, size);
	assert_true(repl_manifest_update(im.m, img_read, &im, all, 1, NULL));
	expect_diff(&im, NULL, 0);
	im.data[5 * B + 105] = 1;
	im.data[6 * B + 17] = 2;
	im.data[20 * B] = 3;
	im.data[size - 1] = 4;

	img_reset(&im);
	assert_true(repl_manifest_update(im.m, img_read, &im, sent, 3, &e));
	assert_null(e);
	assert_int_equal(im.calls, 1);
	assert_int_equal(im.bytes, 2 * B);
	/* Out of the volume: refused before anything changes. */
	assert_false(repl_manifest_update(im.m, img_read, &im, outside, 2, &e));
	assert_int_equal(e->code, ERR_INVAL);
	err_free(e);
	e = NULL;
	expect_diff(&im, rest, 2); /* the diff also took in blocks 20 and last */

	im.data[20 * B + 70] = 5;
	im.data[size - 2] = 6;
	assert_true(repl_manifest_update(im.m, img_read, &im, unsorted, 3, NULL));
	expect_diff(&im, NULL, 0);
	assert_true(repl_manifest_update(im.m, img_read, &im, NULL, 0, NULL));

	/* A failed update leaves its blocks unknown: the next diff sends them. */
	img_reset(&im);
	im.fail_at = 35 * B;
	assert_false(repl_manifest_update(im.m, img_read, &im, bad_read, 1, &e));
	assert_int_equal(e->code, ERR_IO);
	err_free(e);
	expect_diff(&im, bad_read, 1);
	img_free(&im);
}

/* Data a sender read is hashed as it goes (absorb): the update after it
 * reads only the blocks the reads covered in part, and the hashes come
 * out as if it had read everything. */
static void test_absorb(void **state)
{
	uint64_t size = 3 * MiB + 1000, last = nblocks(size) - 1;
	struct img im = img_new(size);
	const struct tp_extent sent[] = {
		{ 2 * B, 3 * B },          /* read as [2B, 3B+5), [3B+5, 5B): blocks 2 and 4 whole */
		{ 10 * B + 8, 100 },        /* part of block 10 only */
		{ last * B, size - last * B }, /* the short last block, whole */
	};
	struct err *e = NULL;

	(void)state;
	memset(im.data, 0x33, size);
	assert_true(repl_manifest_update(im.m, img_read, &im, (struct tp_extent[]){ { 0, size } }, 1, NULL));
	expect_diff(&im, NULL, 0);
	for (uint64_t b = 0; b < nblocks(size); b++)
		im.data[b * B + 9] = (uint8_t)b;
	assert_true(repl_manifest_absorb(im.m, im.data + 2 * B, B + 5, 2 * B, &e));
	assert_true(repl_manifest_absorb(im.m, im.data + 3 * B + 5, 2 * B - 5, 3 * B + 5, &e));
	assert_true(repl_manifest_absorb(im.m, im.data + 10 * B + 8, 100, 10 * B + 8, &e));
	assert_true(repl_manifest_absorb(im.m, im.data + last * B, size - last * B, last * B, &e));
	assert_false(repl_manifest_absorb(im.m, im.data, 2, size - 1, &e));
	assert_int_equal(e->code, ERR_INVAL);
	err_free(e);
	e = NULL;
	img_reset(&im);
	assert_true(repl_manifest_update(im.m, img_read, &im, sent, 3, &e));
	/* Only blocks 3 (split between two reads) and 10 (in part) are read. */
	assert_int_equal(im.bytes, 2 * B);
	/* Every block the extents touch now has its new hash; the others
	 * still the old one, so the diff finds exactly them. */
	{
		const struct tp_extent rest[] = { { 0, 2 * B }, { 5 * B, 5 * B }, { 11 * B, (last - 11) * B } };

		expect_diff(&im, rest, 3);
	}
	/* The next update absorbs nothing: it reads what it covers. */
	img_reset(&im);
	assert_true(repl_manifest_update(im.m, img_read, &im, sent, 1, &e));
	assert_int_equal(im.bytes, 3 * B);
	img_free(&im);
}

static void sha256(const void *p, size_t len, uint8_t out[32])
{
	assert_true(EVP_Digest(p, len, out, NULL, EVP_sha256(), NULL));
}

static uint64_t le(const uint8_t *p, int bytes)
{
	uint64_t v = 0;

	for (int i = bytes - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf;

	assert_int_equal(stat(path, &st), 0);
	*len = (size_t)st.st_size;
	buf = (uint8_t *)util_read_file(path, *len + 1, NULL); /* one spare byte for callers */
	assert_non_null(buf);
	return buf;
}

static void spill(const char *path, const void *buf, size_t len)
{
	assert_true(util_write_file_bytes(path, buf, len, 0600, NULL));
}

static void expect_load_err(const char *path, uint64_t size, uint64_t gen, enum err_code code)
{
	struct err *e = NULL;

	assert_null(repl_manifest_load(path, size, gen, &e));
	assert_non_null(e);
	if (e->code != code)
		fail_msg("got %s (%s), want %s", err_code_name(e->code), e->msg, err_code_name(code));
	assert_non_null(strstr(e->msg, path));
	err_free(e);
}

static void test_save_load(void **state)
{
	uint64_t size = 3 * MiB + 5000, n = nblocks(size);
	struct img im = img_new(size);
	uint8_t *f, d[32];
	char path[256];
	struct stat st;
	size_t len;

	(void)state;
	for (uint64_t b = 0; b < n; b += 3)
		memset(im.data + b * B, (int)(b + 1), blen(size, b));
	check_diff(&im);
	snprintf(path, sizeof(path), "%s/repl/100-0/drive0.manifest", dir);
	reload(&im, path, 7);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);

	/* The documented format, hashes recomputed here. */
	f = slurp(path, &len);
	assert_int_equal(len, HDR + n * 16 + TRAILER);
	assert_memory_equal(f, "VMMMANI1", 8);
	assert_int_equal(le(f + 8, 4), 1);
	assert_int_equal(le(f + 12, 4), 16);
	assert_int_equal(le(f + 16, 4), REPL_BLOCK);
	assert_int_equal(le(f + 20, 4), 0);
	assert_int_equal(le(f + 24, 8), size);
	assert_int_equal(le(f + 32, 8), 7);
	assert_int_equal(le(f + 40, 8), n);
	for (uint64_t b = 0; b < n; b++) {
		sha256(im.data + b * B, blen(size, b), d);
		assert_memory_equal(f + HDR + b * 16, d, 16);
	}
	sha256(f, len - TRAILER, d);
	assert_memory_equal(f + len - TRAILER, d, 32);
	free(f);

	expect_diff(&im, NULL, 0); /* the loaded one knows the data */
	im.data[B + 1] = 0xee;
	assert_int_equal(check_diff(&im), 1);
	/* Saved again under a new generation: the old one is gone. */
	reload(&im, path, 8);
	expect_load_err(path, size, 7, ERR_STATE);
	expect_diff(&im, NULL, 0);
	img_free(&im);
}

/* Writes buf with its trailer recomputed. */
static void spill_sealed(const char *path, uint8_t *buf, size_t len)
{
	sha256(buf, len - TRAILER, buf + len - TRAILER);
	spill(path, buf, len);
}

static void test_load_refuses(void **state)
{
	uint64_t size = 5 * B + 1000, n = nblocks(size);
	struct img im = img_new(size);
	struct repl_manifest *ok;
	char path[256], bad[256];
	size_t len;
	uint8_t *good, *f;
	/* One byte in each field, each hash region and the trailer. */
	const size_t flips[] = { 0, 7, 8, 11, 12, 16, 18, 20, 23, 24, 26, 31, 32, 39, 40, 47,
				 HDR, HDR + 15, HDR + 16 * n - 1, HDR + 16 * n, HDR + 16 * n + 31 };
	/* Fields forged with a valid checksum: {offset, width, new value}. */
	const struct { size_t off, width; uint64_t v; } forged[] = {
		{ 8, 4, 2 }, { 12, 4, 32 }, { 16, 4, 4096 }, { 20, 4, 1 }, { 40, 8, n + 1 },
		{ 40, 8, n - 1 }, { 24, 8, size + B }, { 24, 8, size - B }, { 24, 8, 0 },
	};

	(void)state;
	memset(im.data, 0x33, size);
	check_diff(&im);
	snprintf(path, sizeof(path), "%s/ok.manifest", dir);
	snprintf(bad, sizeof(bad), "%s/bad.manifest", dir);
	reload(&im, path, 3);
	good = slurp(path, &len);
	f = malloc(len + 1);

	expect_load_err(path, size + 1, 3, ERR_STATE);
	expect_load_err(path, size - 1, 3, ERR_STATE);
	expect_load_err(path, size + B, 3, ERR_STATE);
	expect_load_err(path, size, 2, ERR_STATE);
	expect_load_err(path, size, 4, ERR_STATE);
	expect_load_err(bad, size, 3, ERR_NOTFOUND);

	for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++)
		for (int bit = 0; bit < 8; bit += 7) {
			memcpy(f, good, len);
			f[flips[i]] ^= (uint8_t)(1u << bit);
			spill(bad, f, len);
			expect_load_err(bad, size, 3, ERR_PROTO);
		}
	for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
		memcpy(f, good, len);
		for (size_t j = 0; j < forged[i].width; j++)
			f[forged[i].off + j] = (uint8_t)(forged[i].v >> (8 * j));
		spill_sealed(bad, f, len);
		expect_load_err(bad, size, 3, ERR_PROTO);
	}
	/* Cut anywhere, and one byte too many. */
	for (size_t cut = 0; cut < len; cut++) {
		spill(bad, good, cut);
		expect_load_err(bad, size, 3, ERR_PROTO);
	}
	memcpy(f, good, len);
	f[len] = 0;
	spill(bad, f, len + 1);
	expect_load_err(bad, size, 3, ERR_PROTO);
	/* A sound file of another generation is that, not damage. */
	memcpy(f, good, len);
	f[32] = 9;
	spill_sealed(bad, f, len);
	expect_load_err(bad, size, 3, ERR_STATE);
	ok = repl_manifest_load(bad, size, 9, NULL);
	assert_non_null(ok);
	repl_manifest_free(ok);
	expect_load_err(dir, size, 3, ERR_PROTO); /* a directory */
	free(f);
	free(good);
	img_free(&im);
}

/* Volumes whose size is not a multiple of REPL_BLOCK, and the empty one. */
static void test_tail(void **state)
{
	const uint64_t sizes[] = { 1, 100, B - 1, B, B + 1, 3 * B + 4095, 2 * MiB - 512, 4 * MiB + 1 };
	char path[256];
	struct img im;

	(void)state;
	snprintf(path, sizeof(path), "%s/tail.manifest", dir);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t size = sizes[i], last = nblocks(size) - 1;
		const struct tp_extent want[] = { { last * B, size - last * B } };

		im = img_new(size);
		expect_diff(&im, NULL, 0); /* the zero tail's hash is a short block's */
		im.data[size - 1] = 0x42;
		expect_diff(&im, want, 1);
		memcpy(im.rep, im.data, size);
		reload(&im, path, 1);
		im.data[0] ^= 0x42;
		assert_int_equal(check_diff(&im), 1);
		img_free(&im);
	}
	im = img_new(0);
	expect_diff(&im, NULL, 0);
	assert_int_equal(im.calls, 0);
	reload(&im, path, 0);
	expect_load_err(path, 1, 0, ERR_STATE);
	img_free(&im);
}

static void test_read_error(void **state)
{
	uint64_t size = 9 * MiB;
	struct img im = img_new(size);
	struct tp_extent sentinel = { 1, 2 }, *ext = &sentinel;
	const struct tp_extent want[] = { { 2 * B, B }, { 100 * B, B } };
	size_t n = 42;
	struct err *e = NULL;

	(void)state;
	im.data[2 * B] = 1;   /* in the first chunk, found before the failure */
	im.data[100 * B] = 1; /* after it */
	im.fail_at = 90 * B;
	assert_false(repl_manifest_diff(im.m, img_read, &im, &ext, &n, &e));
	assert_non_null(e);
	assert_int_equal(e->code, ERR_IO);
	assert_string_equal(e->msg, "disk gone at 5898240"); /* the callback's own error */
	assert_ptr_equal(ext, &sentinel);
	assert_int_equal(n, 42);
	err_free(e);
	e = NULL;
	/* Block 2 was never sent: the next diff reports it again. */
	expect_diff(&im, want, 2);

	/* A callback that fails without saying why still fails the diff. */
	img_reset(&im);
	im.fail_at = 0;
	im.silent = true;
	assert_false(repl_manifest_diff(im.m, img_read, &im, &ext, &n, &e));
	assert_non_null(e);
	assert_int_equal(e->code, ERR_IO);
	assert_non_null(strstr(e->msg, "offset 0"));
	err_free(e);
	assert_false(repl_manifest_diff(im.m, img_read, &im, &ext, &n, NULL)); /* errp NULL */
	img_free(&im);
}

static void test_extent_cap(void **state)
{
	uint64_t size = 72 * MiB + 3;
	struct img im = img_new(size);
	const struct tp_extent want[] = { { 0, 64 * MiB }, { 64 * MiB, 8 * MiB + 3 } };

	(void)state;
	memset(im.data, 0xab, size);
	expect_diff(&im, want, 2);
	memset(im.rep, 0xab, size);
	memset(im.data + 10 * MiB, 0, 60 * MiB); /* a hole punched in the middle */
	assert_int_equal(check_diff(&im), 1);
	memset(im.data, 0xcd, size);
	assert_int_equal(check_diff(&im), 2);
	img_free(&im);
}

/* Random images and random changes against the model. */
static void test_random(void **state)
{
	uint64_t size = 13 * MiB + 12345, n = nblocks(size);
	struct img im = img_new(size);
	char path[256];

	(void)state;
	srandom(1234);
	snprintf(path, sizeof(path), "%s/random.manifest", dir);
	for (uint64_t b = 0; b < n; b++)
		if (random() % 3)
			for (uint64_t i = 0; i < blen(size, b); i += 64)
				im.data[b * B + i] = (uint8_t)random();
	for (int round = 0; round < 12; round++) {
		int changes = (int)(random() % 40);

		check_diff(&im);
		for (int c = 0; c < changes; c++) {
			uint64_t b = (uint64_t)random() % n, len = blen(size, b);

			if (random() % 4 == 0)
				memset(im.data + b * B, 0, len);
			else
				im.data[b * B + (uint64_t)random() % len] ^= (uint8_t)(1 + random() % 255);
		}
		if (round % 4 == 3)
			reload(&im, path, (uint64_t)round);
	}
	img_free(&im);
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[300];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_sparse),
		cmocka_unit_test(test_changed_blocks),
		cmocka_unit_test(test_update),
		cmocka_unit_test(test_absorb),
		cmocka_unit_test(test_save_load),
		cmocka_unit_test(test_load_refuses),
		cmocka_unit_test(test_tail),
		cmocka_unit_test(test_read_error),
		cmocka_unit_test(test_extent_cap),
		cmocka_unit_test(test_random),
	};

	return cmocka_run_group_tests_name("manifest", tests, setup, teardown);
}
