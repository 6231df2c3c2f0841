/*
 * repl_manifest.c - block hashes of what a replica holds, kept on the
 * source (contract in repl.h): one hash per REPL_BLOCK of the volume, the
 * first 16 bytes of the block's SHA-256 (the last block may be short and
 * is hashed as it is). A block never synced is a block of zeros, which is
 * what a fresh sparse replica holds: repl_manifest_new() stores the hash
 * of a zero block everywhere, so the first diff of a mostly empty disk
 * returns only its non-zero blocks.
 *
 * File format (integers little-endian), also the layout in memory:
 *     0   8  magic "VMMMANI1"
 *     8   4  format version (1)
 *    12   4  hash length (16)
 *    16   4  block size (REPL_BLOCK)
 *    20   4  reserved, 0
 *    24   8  volume size in bytes
 *    32   8  generation of the replica the hashes describe
 *    40   8  block count, ceil(size / block size)
 *    48      the hashes, 16 bytes each, block 0 first
 *   end  32  SHA-256 of everything before it
 * The encoding is canonical: one manifest has exactly one valid file.
 * Loading checks every field, the length and the checksum before it looks
 * at size and generation, so damage is always ERR_PROTO and a sound file
 * of another volume or generation is ERR_STATE.
 *
 * Memory: the file's image, 16 bytes per 64 KiB block (256 MiB for a
 * 1 TiB disk, 4 MiB for 16 GiB), plus a 4 MiB read buffer while a diff
 * or update runs. Saving fills in header and trailer of the image and
 * writes it in one piece: no second copy.
 *
 * Speed: hashing is the cost (SHA-256 with SHA-NI, about 1.2 GB/s of
 * diff per CPU second with the read a memcpy); blocks of zeros are
 * recognised with a memcmp and take the precomputed zero hash (7 GB/s
 * and more). Reading and hashing run one after the other in the calling
 * thread: a reader thread feeding the hasher measured no faster (the
 * memcpy is a tenth of the work, and on a busy host the second thread
 * only competes), and a pread from a file overlaps with the kernel's
 * readahead anyway. So the read callback runs in the caller's thread.
 *
 * A sync that sends a view's data anyway hands each chunk it read to
 * repl_manifest_absorb() (in its reader thread), which hashes the blocks
 * the chunk covers whole; the update afterwards rereads only the others
 * (blocks a dirty extent covers in part). The data is read once, not twice.
 *
 * Failures never leave a hash that claims more than the replica holds: a
 * diff that fails marks the blocks it had found changed as unknown (a
 * value no block hashes to in practice), an update marks its blocks
 * unknown before rehashing them; unknown blocks are reported by the next
 * diff.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* OpenSSL's types.h typedefs ERR_STATE, which is one of our error codes. */
#define ERR_STATE openssl_ERR_STATE
#include <openssl/err.h>
#include <openssl/evp.h>
#undef ERR_STATE

#include "../common/cleanup.h"
#include "../common/util.h"
#include "repl.h"

#define MANI_MAGIC "VMMMANI1"
#define MANI_VERSION 1u
#define MANI_HDR 48u
#define MANI_TRAILER 32u
#define HASH_LEN 16u
#define CHUNK (4u << 20)        /* bytes per read callback */
#define EXTENT_MAX (64u << 20)  /* longest extent diff returns */

_Static_assert(CHUNK % REPL_BLOCK == 0, "chunks hold whole blocks");
_Static_assert(EXTENT_MAX % REPL_BLOCK == 0, "extents hold whole blocks");

struct repl_manifest {
	uint64_t size;
	uint64_t nblocks;
	uint8_t *file;     /* the file's image: header, hashes, trailer; save
			    * fills in header and trailer (of a const manifest too) */
	size_t file_len;
	uint8_t *hashes;   /* file + MANI_HDR */
	uint8_t zero[HASH_LEN];      /* hash of a whole block of zeros */
	uint8_t zero_tail[HASH_LEN]; /* of a short last block of zeros */
	uint8_t *absorbed;           /* bit per block: hashed by absorb since the
				      * last update (NULL: none) */
};

/* ---- hashing -------------------------------------------------------------- */

struct hasher {
	EVP_MD *md;
	EVP_MD_CTX *ctx; /* reused for every block */
};

static bool ssl_err(struct err **errp, const char *what)
{
	char buf[256] = "unknown error";
	unsigned long e = ERR_get_error();

	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return err_set(errp, ERR_IO, "SHA-256 %s: %s", what, buf);
}

static void hasher_fini(struct hasher *h)
{
	EVP_MD_CTX_free(h->ctx);
	EVP_MD_free(h->md);
	h->ctx = NULL;
	h->md = NULL;
}

static bool hasher_init(struct hasher *h, struct err **errp)
{
	h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
	h->ctx = EVP_MD_CTX_new();
	if (!h->md || !h->ctx) {
		hasher_fini(h);
		return ssl_err(errp, "setup");
	}
	return true;
}

static bool sha256(struct hasher *h, const void *buf, size_t len, uint8_t out[32],
		   struct err **errp)
{
	if (!EVP_DigestInit_ex(h->ctx, h->md, NULL) || !EVP_DigestUpdate(h->ctx, buf, len) ||
	    !EVP_DigestFinal_ex(h->ctx, out, NULL))
		return ssl_err(errp, "digest");
	return true;
}

static bool is_zero(const uint8_t *p, size_t len)
{
	size_t head = len < 16 ? len : 16;

	for (size_t i = 0; i < head; i++)
		if (p[i])
			return false;
	/* The first 16 bytes are zero and each byte equals the one 16 before it. */
	return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

/* The hash of one block of len bytes (REPL_BLOCK, or the short tail). */
static bool block_hash(const struct repl_manifest *m, struct hasher *h, const uint8_t *p,
		       size_t len, uint8_t out[HASH_LEN], struct err **errp)
{
	uint8_t d[32];

	if (is_zero(p, len)) {
		memcpy(out, len == REPL_BLOCK ? m->zero : m->zero_tail, HASH_LEN);
		return true;
	}
	if (!sha256(h, p, len, d, errp))
		return false;
	memcpy(out, d, HASH_LEN);
	return true;
}

/* ---- the in-memory manifest ------------------------------------------------- */

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t blocks_of(uint64_t size)
{
	return size / REPL_BLOCK + (size % REPL_BLOCK != 0);
}

/* Bytes of block b (REPL_BLOCK but for a short last block). */
static size_t block_len(const struct repl_manifest *m, uint64_t b)
{
	uint64_t left = m->size - b * REPL_BLOCK;

	return left < REPL_BLOCK ? (size_t)left : REPL_BLOCK;
}

/* An empty manifest for size bytes: buffer allocated, zero hashes computed. */
static struct repl_manifest *manifest_alloc(uint64_t size, struct hasher *h, struct err **errp)
{
	_cleanup_free_ uint8_t *zeros = NULL;
	struct repl_manifest *m;
	uint8_t d[32];
	uint64_t n = blocks_of(size);

	if (n > (SIZE_MAX - MANI_HDR - MANI_TRAILER) / HASH_LEN) {
		err_set(errp, ERR_INVAL, "volume of %llu bytes too large for a manifest",
			(unsigned long long)size);
		return NULL;
	}
	m = calloc(1, sizeof(*m));
	zeros = calloc(1, REPL_BLOCK);
	if (!m || !zeros)
		goto oom;
	m->size = size;
	m->nblocks = n;
	m->file_len = MANI_HDR + (size_t)n * HASH_LEN + MANI_TRAILER;
	m->file = malloc(m->file_len);
	if (!m->file)
		goto oom;
	m->hashes = m->file + MANI_HDR;
	if (!sha256(h, zeros, REPL_BLOCK, d, errp)) {
		repl_manifest_free(m);
		return NULL;
	}
	memcpy(m->zero, d, HASH_LEN);
	if (!sha256(h, zeros, size % REPL_BLOCK, d, errp)) {
		repl_manifest_free(m);
		return NULL;
	}
	memcpy(m->zero_tail, d, HASH_LEN);
	return m;
oom:
	repl_manifest_free(m);
	err_set(errp, ERR_IO, "out of memory for the manifest of a %llu-byte volume",
		(unsigned long long)size);
	return NULL;
}

void repl_manifest_free(struct repl_manifest *m)
{
	if (!m)
		return;
	free(m->absorbed);
	free(m->file);
	free(m);
}

static bool is_absorbed(const struct repl_manifest *m, uint64_t b)
{
	return m->absorbed && (m->absorbed[b / 8] >> (b % 8) & 1);
}

bool repl_manifest_absorb(struct repl_manifest *m, const void *buf, size_t len, uint64_t off,
			  struct err **errp)
{
	struct hasher h;
	uint64_t b = blocks_of(off);
	bool ok = true;

	if (off > m->size || len > m->size - off)
		return err_set(errp, ERR_INVAL, "data %llu+%zu is outside the %llu-byte volume",
			       (unsigned long long)off, len, (unsigned long long)m->size);
	if (b >= m->nblocks || b * REPL_BLOCK + block_len(m, b) > off + len)
		return true; /* no whole block in it */
	if (!m->absorbed && !(m->absorbed = calloc((size_t)(m->nblocks + 7) / 8, 1)))
		return err_set(errp, ERR_IO, "out of memory");
	if (!hasher_init(&h, errp))
		return false;
	for (; ok && b < m->nblocks && b * REPL_BLOCK + block_len(m, b) <= off + len; b++) {
		ok = block_hash(m, &h, (const uint8_t *)buf + (b * REPL_BLOCK - off), block_len(m, b),
				m->hashes + b * HASH_LEN, errp);
		if (ok)
			m->absorbed[b / 8] |= (uint8_t)(1u << (b % 8));
	}
	hasher_fini(&h);
	return ok;
}

DEFINE_CLEANUP_FUNC(struct repl_manifest, repl_manifest_free)

struct repl_manifest *repl_manifest_new(uint64_t size, struct err **errp)
{
	struct hasher h;
	struct repl_manifest *m;

	if (!hasher_init(&h, errp))
		return NULL;
	m = manifest_alloc(size, &h, errp);
	hasher_fini(&h);
	if (!m)
		return NULL;
	for (uint64_t b = 0; b < m->nblocks; b++)
		memcpy(m->hashes + b * HASH_LEN, block_len(m, b) == REPL_BLOCK ? m->zero : m->zero_tail,
		       HASH_LEN);
	return m;
}

/* ---- the file --------------------------------------------------------------- */

static bool __attribute__((format(printf, 3, 4)))
damaged(struct err **errp, const char *path, const char *fmt, ...)
{
	char what[128];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return err_set(errp, ERR_PROTO, "manifest '%s' is damaged: %s", path, what);
}

/* Reads exactly len bytes at off; a short file is damage. */
static bool read_at(int fd, const char *path, void *buf, size_t len, off_t off, struct err **errp)
{
	for (size_t got = 0; got < len;) {
		ssize_t r = pread(fd, (uint8_t *)buf + got, len - got, off + (off_t)got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return err_set_errno(errp, errno, "cannot read manifest '%s'", path);
		if (r == 0)
			return damaged(errp, path, "truncated at %llu bytes",
				       (unsigned long long)off + got);
		got += (size_t)r;
	}
	return true;
}

/* Checks the header against itself and the file's length. */
static bool check_header(const uint8_t *hdr, uint64_t file_len, const char *path,
			 struct err **errp)
{
	uint64_t size = get_le64(hdr + 24), count = get_le64(hdr + 40);

	if (memcmp(hdr, MANI_MAGIC, 8))
		return damaged(errp, path, "bad magic");
	if (get_le32(hdr + 8) != MANI_VERSION)
		return damaged(errp, path, "unknown version %u", get_le32(hdr + 8));
	if (get_le32(hdr + 12) != HASH_LEN)
		return damaged(errp, path, "hash length %u, not 16", get_le32(hdr + 12));
	if (get_le32(hdr + 16) != REPL_BLOCK)
		return damaged(errp, path, "block size %u, not %u", get_le32(hdr + 16), REPL_BLOCK);
	if (get_le32(hdr + 20))
		return damaged(errp, path, "reserved field is %u", get_le32(hdr + 20));
	if (count != blocks_of(size))
		return damaged(errp, path, "%llu blocks for its volume size", (unsigned long long)count);
	if (count > (file_len - MANI_HDR - MANI_TRAILER) / HASH_LEN ||
	    file_len != MANI_HDR + count * HASH_LEN + MANI_TRAILER)
		return damaged(errp, path, "length %llu does not fit its block count",
			       (unsigned long long)file_len);
	return true;
}

struct repl_manifest *repl_manifest_load(const char *path, uint64_t size, uint64_t gen,
					 struct err **errp)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_(repl_manifest_freep) struct repl_manifest *m = NULL;
	uint8_t hdr[MANI_HDR], d[32];
	struct hasher h;
	struct stat st;
	bool ok;

	if (fd < 0 && errno == ENOENT) {
		err_set(errp, ERR_NOTFOUND, "manifest '%s' not found", path);
		return NULL;
	}
	if (fd < 0 || fstat(fd, &st) < 0) {
		err_set_errno(errp, errno, "cannot open manifest '%s'", path);
		return NULL;
	}
	if (!S_ISREG(st.st_mode)) {
		err_set(errp, ERR_PROTO, "manifest '%s' is not a regular file", path);
		return NULL;
	}
	if ((uint64_t)st.st_size < MANI_HDR + MANI_TRAILER) {
		damaged(errp, path, "truncated at %llu bytes", (unsigned long long)st.st_size);
		return NULL;
	}
	if (!read_at(fd, path, hdr, sizeof(hdr), 0, errp) ||
	    !check_header(hdr, (uint64_t)st.st_size, path, errp) || !hasher_init(&h, errp))
		return NULL;
	/* The header is consistent with the length, so this allocates no more
	 * than the file holds. */
	m = manifest_alloc(get_le64(hdr + 24), &h, errp);
	ok = m && read_at(fd, path, m->file, m->file_len, 0, errp) &&
	     sha256(&h, m->file, m->file_len - MANI_TRAILER, d, errp);
	hasher_fini(&h);
	if (!ok)
		return NULL;
	if (memcmp(m->file, hdr, MANI_HDR)) {
		damaged(errp, path, "changed while read");
		return NULL;
	}
	if (memcmp(d, m->file + m->file_len - MANI_TRAILER, sizeof(d))) {
		damaged(errp, path, "checksum mismatch");
		return NULL;
	}
	if (m->size != size) {
		err_set(errp, ERR_STATE, "manifest '%s' is for a volume of %llu bytes, not %llu",
			path, (unsigned long long)m->size, (unsigned long long)size);
		return NULL;
	}
	if (get_le64(hdr + 32) != gen) {
		err_set(errp, ERR_STATE, "manifest '%s' is of replica generation %llu, not %llu",
			path, (unsigned long long)get_le64(hdr + 32), (unsigned long long)gen);
		return NULL;
	}
	return TAKE_PTR(m);
}

bool repl_manifest_save(const struct repl_manifest *m, const char *path, uint64_t gen,
			struct err **errp)
{
	uint8_t *f = m->file, d[32];
	struct hasher h;
	bool ok;

	memcpy(f, MANI_MAGIC, 8);
	put_le32(f + 8, MANI_VERSION);
	put_le32(f + 12, HASH_LEN);
	put_le32(f + 16, REPL_BLOCK);
	put_le32(f + 20, 0);
	put_le64(f + 24, m->size);
	put_le64(f + 32, gen);
	put_le64(f + 40, m->nblocks);
	if (!hasher_init(&h, errp))
		return false;
	ok = sha256(&h, f, m->file_len - MANI_TRAILER, d, errp);
	hasher_fini(&h);
	if (!ok)
		return false;
	memcpy(f + m->file_len - MANI_TRAILER, d, sizeof(d));
	/* Not fsynced (it waited behind the replica's own syncs): after a
	 * crash the checksum and the generation refuse a torn or older file,
	 * and the next sync rebuilds the hashes. */
	return util_write_cache_file(path, f, m->file_len, 0600, errp);
}

/* ---- diff and update -------------------------------------------------------- */

struct extents {
	struct tp_extent *v;
	size_t n, cap;
};

/* Appends [off, off + len), merged into the last extent if adjacent. */
static bool ext_add(struct extents *x, uint64_t off, uint64_t len, struct err **errp)
{
	struct tp_extent *last = x->n ? &x->v[x->n - 1] : NULL;

	if (last && last->offset + last->length == off && last->length + len <= EXTENT_MAX) {
		last->length += len;
		return true;
	}
	if (x->n == x->cap) {
		size_t cap = x->cap ? 2 * x->cap : 64;
		struct tp_extent *v = reallocarray(x->v, cap, sizeof(*v));

		if (!v)
			return err_set(errp, ERR_IO, "out of memory for changed extents");
		x->v = v;
		x->cap = cap;
	}
	x->v[x->n++] = (struct tp_extent){ off, len };
	return true;
}

/* Marks blocks [first, end) unknown: the next diff reports them. */
static void poison(struct repl_manifest *m, uint64_t first, uint64_t end)
{
	memset(m->hashes + first * HASH_LEN, 0, (size_t)(end - first) * HASH_LEN);
}

/* Reads len bytes at off through the callback; makes sure a failure has an error. */
static bool read_chunk(repl_read_fn read, void *opaque, void *buf, size_t len, uint64_t off,
		       struct err **errp)
{
	struct err *e = NULL;

	if (read(opaque, buf, len, off, &e))
		return true;
	if (!e)
		err_set(&e, ERR_IO, "reading %zu bytes at offset %llu failed", len,
			(unsigned long long)off);
	err_propagate(errp, &e);
	return false;
}

/* Reads and hashes blocks [first, end); stores changed hashes and, if x,
 * adds the changed blocks to x. */
static bool hash_range(struct repl_manifest *m, struct hasher *h, uint8_t *buf,
		       repl_read_fn read, void *opaque, uint64_t first, uint64_t end,
		       struct extents *x, struct err **errp)
{
	uint8_t hash[HASH_LEN];

	while (first < end) {
		uint64_t nb = end - first < CHUNK / REPL_BLOCK ? end - first : CHUNK / REPL_BLOCK;
		uint64_t off = first * REPL_BLOCK;
		size_t len = (size_t)((nb - 1) * REPL_BLOCK) + block_len(m, first + nb - 1);

		if (!read_chunk(read, opaque, buf, len, off, errp))
			return false;
		for (uint64_t i = 0; i < nb; i++) {
			size_t bl = block_len(m, first + i);
			uint8_t *stored = m->hashes + (first + i) * HASH_LEN;

			if (!block_hash(m, h, buf + i * REPL_BLOCK, bl, hash, errp))
				return false;
			if (!memcmp(stored, hash, HASH_LEN))
				continue;
			if (x && !ext_add(x, off + i * REPL_BLOCK, bl, errp))
				return false;
			memcpy(stored, hash, HASH_LEN);
		}
		first += nb;
	}
	return true;
}

static uint8_t *chunk_buf(struct err **errp)
{
	uint8_t *buf = aligned_alloc(4096, CHUNK);

	if (!buf)
		err_set(errp, ERR_IO, "out of memory for a %u-byte read buffer", CHUNK);
	return buf;
}

bool repl_manifest_diff(struct repl_manifest *m, repl_read_fn read, void *opaque,
			struct tp_extent **ext, size_t *n, struct err **errp)
{
	_cleanup_free_ uint8_t *buf = chunk_buf(errp);
	struct extents x = { 0 };
	struct hasher h;
	bool ok;

	if (!buf || !hasher_init(&h, errp))
		return false;
	ok = hash_range(m, &h, buf, read, opaque, 0, m->nblocks, &x, errp);
	hasher_fini(&h);
	if (!ok) {
		/* Those hashes changed for data the replica never got. */
		for (size_t i = 0; i < x.n; i++)
			poison(m, x.v[i].offset / REPL_BLOCK, blocks_of(x.v[i].offset + x.v[i].length));
		free(x.v);
		return false;
	}
	*ext = x.v;
	*n = x.n;
	return true;
}

bool repl_manifest_update(struct repl_manifest *m, repl_read_fn read, void *opaque,
			  const struct tp_extent *ext, size_t n, struct err **errp)
{
	_cleanup_free_ uint8_t *buf = NULL;
	struct hasher h;
	uint64_t first = 0, end = 0; /* blocks pending a rehash */
	bool ok = true;

	for (size_t i = 0; i < n; i++)
		if (ext[i].offset > m->size || ext[i].length > m->size - ext[i].offset)
			return err_set(errp, ERR_INVAL,
				       "extent %llu+%llu is outside the %llu-byte volume",
				       (unsigned long long)ext[i].offset,
				       (unsigned long long)ext[i].length,
				       (unsigned long long)m->size);
	buf = chunk_buf(errp);
	if (!buf || !hasher_init(&h, errp))
		return false;
	/* The replica holds this data already, whatever the hashes say
	 * (but for blocks absorb hashed from it). */
	for (size_t i = 0; i < n; i++)
		for (uint64_t b = ext[i].offset / REPL_BLOCK;
		     b < blocks_of(ext[i].offset + ext[i].length); b++)
			if (!is_absorbed(m, b))
				poison(m, b, b + 1);
	/* Extents expanded to whole blocks; neighbours (sorted input) in one pass. */
	for (size_t i = 0; i <= n && ok; i++) {
		uint64_t f = 0, e = 0;

		if (i < n && !ext[i].length)
			continue;
		if (i < n) {
			f = ext[i].offset / REPL_BLOCK;
			e = blocks_of(ext[i].offset + ext[i].length);
			if (f <= end && e >= first && first < end) {
				first = f < first ? f : first;
				end = e > end ? e : end;
				continue;
			}
		}
		/* the runs of [first, end) absorb has not hashed */
		for (uint64_t b = first, r; ok && b < end; b = r) {
			for (r = b; r < end && !is_absorbed(m, r); r++)
				;
			ok = r == b || hash_range(m, &h, buf, read, opaque, b, r, NULL, errp);
			while (r < end && is_absorbed(m, r))
				r++;
		}
		if (i < n) {
			first = f;
			end = e;
		}
	}
	hasher_fini(&h);
	free(TAKE_PTR(m->absorbed));
	return ok;
}
