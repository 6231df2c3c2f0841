/*
 * tp_stream_recv.c - the receiving end of a volume stream.
 *
 * The calling thread reads each record, checks everything it can before
 * the payload is used (magic, version, sequence number, type, lengths,
 * offsets in order and inside the volume, crc, and at END the totals and
 * the run checksum) and hands DATA records to `threads` workers that
 * decompress and pwrite them, in any order since records never overlap.
 * ZERO records are punched in the calling thread (or ignored when the
 * target is a fresh sparse file), which also reports every range to
 * on_range before it hands it on. Reading stops right after END.
 */
#include "tp_stream_int.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

enum rent_state { RENT_FREE, RENT_READY, RENT_BUSY };

struct rent {
	enum rent_state state;
	struct rec_hdr h;
	uint64_t wire_off;  /* where the record starts in the stream */
	uint8_t *in;        /* payload */
	size_t in_cap;
};

struct receiver {
	struct tp_stream_opts o;
	int in_fd, out_fd;
	uint64_t size;
	bool full;          /* START said the records tile the volume */
	bool fresh;         /* target is a new sparse file: ZERO needs no work */

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct rent *ring;
	unsigned depth;
	uint64_t pub, claim, freed; /* DATA entries published / claimed / done */
	bool done, stop;
	struct err *err;

	/* calling thread only */
	uint64_t wire;      /* stream bytes consumed */
	uint64_t next_off;  /* records must start at or after this */
	uint32_t seq, run_crc;
	struct tp_stream_progress p;
};

static void fail(struct receiver *r, struct err **e)
{
	pthread_mutex_lock(&r->lock);
	err_propagate(&r->err, e);
	r->stop = true;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

/* "stream corrupt at offset N: ..." for the record starting at wire_off. */
__attribute__((format(printf, 4, 5)))
static bool corrupt(struct err **errp, enum err_code code, uint64_t wire_off, const char *fmt, ...)
{
	char *m = NULL;
	va_list ap;
	bool r;

	va_start(ap, fmt);
	if (vasprintf(&m, fmt, ap) < 0)
		m = NULL;
	va_end(ap);
	r = err_set(errp, code, "stream corrupt at offset %" PRIu64 ": %s", wire_off,
		    m ? m : "(out of memory)");
	free(m);
	return r;
}

/* ---- workers ------------------------------------------------------------ */

static bool pwrite_full(int fd, const uint8_t *p, size_t len, uint64_t off, struct err **errp)
{
	while (len) {
		ssize_t w = pwrite(fd, p, len, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return err_set_errno(errp, w < 0 ? errno : EIO,
					     "write target at offset %" PRIu64, off);
		p += w;
		len -= (size_t)w;
		off += (uint64_t)w;
	}
	return true;
}

static bool apply_data(struct receiver *r, ZSTD_DCtx *dc, uint8_t **out, const struct rent *e,
		       struct err **errp)
{
	const uint8_t *src = e->in;
	size_t len = (size_t)e->h.length;

	if (e->h.flags & REC_F_ZSTD) {
		size_t z;

		if (!*out && !(*out = malloc(TP_STREAM_MAX_RECORD)))
			return err_set(errp, ERR_IO, "volume stream: out of memory");
		z = ZSTD_decompressDCtx(dc, *out, len, e->in, e->h.payload_len);
		if (ZSTD_isError(z))
			return corrupt(errp, ERR_PROTO, e->wire_off, "record %" PRIu32 ": zstd: %s",
				       e->h.seq, ZSTD_getErrorName(z));
		if (z != len)
			return corrupt(errp, ERR_PROTO, e->wire_off,
				       "record %" PRIu32 ": %zu bytes decompressed, header says %zu",
				       e->h.seq, z, len);
		src = *out;
	}
	return pwrite_full(r->out_fd, src, len, e->h.offset, errp);
}

static void *worker_main(void *arg)
{
	struct receiver *r = arg;
	ZSTD_DCtx *dc = ZSTD_createDCtx();
	uint8_t *out = NULL;
	struct err *er = NULL;

	if (!dc) {
		err_set(&er, ERR_IO, "zstd: cannot create a decompression context");
		fail(r, &er);
		return NULL;
	}
	pthread_mutex_lock(&r->lock);
	for (;;) {
		struct rent *e;
		bool ok;

		while (!r->stop && !r->done && r->claim == r->pub)
			pthread_cond_wait(&r->cond, &r->lock);
		if (r->stop || r->claim == r->pub)
			break;
		e = &r->ring[r->claim++ % r->depth];
		e->state = RENT_BUSY;
		pthread_mutex_unlock(&r->lock);
		ok = apply_data(r, dc, &out, e, &er);
		if (!ok)
			fail(r, &er);
		pthread_mutex_lock(&r->lock);
		e->state = RENT_FREE;
		r->freed++;
		pthread_cond_broadcast(&r->cond);
	}
	pthread_mutex_unlock(&r->lock);
	free(out);
	ZSTD_freeDCtx(dc);
	return NULL;
}

/* ---- the calling thread ---------------------------------------------- */

/* Reads exactly len bytes of record `what` starting at wire_off. */
static bool read_exact(struct receiver *r, void *buf, size_t len, uint64_t wire_off,
		       const char *what, struct err **errp)
{
	ssize_t got = stream_read_full(r->in_fd, buf, len, errp);

	if (got < 0)
		return false;
	r->wire += (uint64_t)got;
	if ((size_t)got < len)
		return corrupt(errp, ERR_CLOSED, wire_off,
			       "truncated: end of stream inside %s (%zu of %zu bytes)", what,
			       (size_t)got, len);
	return true;
}

/* Reads and checks one record's header and payload (into e->in, grown as
 * needed); updates the run checksum. */
static bool read_record(struct receiver *r, struct rent *e, uint8_t *hb, struct err **errp)
{
	struct rec_hdr *h = &e->h;
	uint64_t at = r->wire;
	const char *why = NULL;
	uint32_t crc;

	e->wire_off = at;
	if (!read_exact(r, hb, REC_HDR_LEN, at, "a record header", errp))
		return false;
	if (!rec_decode(hb, h, &why))
		return corrupt(errp, ERR_PROTO, at, "record %" PRIu32 ": %s", r->seq, why);
	if (h->seq != r->seq)
		return corrupt(errp, ERR_PROTO, at, "record %" PRIu32 " expected, got %" PRIu32
			       " (records dropped, duplicated or reordered)", r->seq, h->seq);
	if (h->payload_len > TP_STREAM_MAX_RECORD)
		return corrupt(errp, ERR_PROTO, at, "record %" PRIu32 ": payload of %" PRIu32 " bytes",
			       h->seq, h->payload_len);
	if (h->payload_len > e->in_cap) {
		uint8_t *n = realloc(e->in, h->payload_len);
		if (!n)
			return err_set(errp, ERR_IO, "volume stream: out of memory");
		e->in = n;
		e->in_cap = h->payload_len;
	}
	if (!read_exact(r, e->in, h->payload_len, at, "a record payload", errp))
		return false;
	crc = rec_crc(h, e->in, h->payload_len);
	if (crc != h->crc)
		return corrupt(errp, ERR_PROTO, at, "record %" PRIu32 " (%s): checksum mismatch",
			       h->seq, rec_type_name(h->type));
	if (h->type != REC_END)
		r->run_crc = tp_crc32c(r->run_crc, hb, REC_HDR_LEN);
	r->seq++;
	return true;
}

/* Checks a DATA or ZERO record's place and sizes (crc already matched,
 * so a failure here is a broken sender or a forged stream). */
static bool check_range(struct receiver *r, const struct rent *e, struct err **errp)
{
	const struct rec_hdr *h = &e->h;

	if (h->type == REC_DATA) {
		bool z = h->flags & REC_F_ZSTD;
		if ((h->flags & ~REC_F_ZSTD) || !h->length || h->length > TP_STREAM_MAX_RECORD ||
		    (z ? h->payload_len >= h->length || !h->payload_len : h->payload_len != h->length))
			return corrupt(errp, ERR_PROTO, e->wire_off,
				       "record %" PRIu32 ": bad DATA lengths (raw %" PRIu64 ", payload %" PRIu32 ", flags %#x)",
				       h->seq, h->length, h->payload_len, h->flags);
	} else if (h->flags || h->payload_len || !h->length) {
		return corrupt(errp, ERR_PROTO, e->wire_off, "record %" PRIu32 ": bad ZERO record",
			       h->seq);
	}
	if (h->offset < r->next_off || (r->full && h->offset != r->next_off) ||
	    h->offset > r->size || h->length > r->size - h->offset)
		return corrupt(errp, ERR_PROTO, e->wire_off,
			       "record %" PRIu32 ": range [%" PRIu64 ", +%" PRIu64 ") out of order or beyond the volume (next offset %" PRIu64 ", size %" PRIu64 ")",
			       h->seq, h->offset, h->length, r->next_off, r->size);
	r->next_off = h->offset + h->length;
	return true;
}

static bool check_end(struct receiver *r, const struct rent *e, struct err **errp)
{
	const struct rec_hdr *h = &e->h;
	uint64_t zero;
	uint32_t run;

	if (h->flags || h->payload_len != END_LEN)
		return corrupt(errp, ERR_PROTO, e->wire_off, "bad END record");
	zero = get_le64(e->in);
	run = get_le32(e->in + 8);
	if (get_le32(e->in + 12))
		return corrupt(errp, ERR_PROTO, e->wire_off, "END: reserved field set");
	if (run != r->run_crc)
		return corrupt(errp, ERR_PROTO, e->wire_off,
			       "END: run checksum %08" PRIx32 ", records add up to %08" PRIx32, run,
			       r->run_crc);
	if (h->offset != r->p.covered || h->length != r->p.data_bytes || zero != r->p.zero_bytes)
		return corrupt(errp, ERR_PROTO, e->wire_off,
			       "END: totals (%" PRIu64 " covered, %" PRIu64 " data, %" PRIu64 " zero) differ from the records (%" PRIu64 ", %" PRIu64 ", %" PRIu64 ")",
			       h->offset, h->length, zero, r->p.covered, r->p.data_bytes, r->p.zero_bytes);
	if (r->p.covered != r->p.total)
		return corrupt(errp, ERR_PROTO, e->wire_off,
			       "END: records cover %" PRIu64 " of %" PRIu64 " bytes", r->p.covered, r->p.total);
	return true;
}

static bool zero_range(struct receiver *r, uint64_t off, uint64_t len, struct err **errp)
{
	static const uint8_t zeros[64 << 10];

	if (r->fresh)
		return true;
	if (fallocate(r->out_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
		return true;
	if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL)
		return err_set_errno(errp, errno, "punch target at offset %" PRIu64, off);
	while (len) {
		size_t n = len < sizeof(zeros) ? (size_t)len : sizeof(zeros);
		if (!pwrite_full(r->out_fd, zeros, n, off, errp))
			return false;
		off += n;
		len -= n;
	}
	return true;
}

/* Reads and checks START. */
static bool recv_start(struct receiver *r, uint64_t size, bool need_full, struct err **errp)
{
	struct rent e = { 0 };
	uint8_t hb[REC_HDR_LEN];
	bool ok;

	ok = read_record(r, &e, hb, errp);
	free(e.in);
	if (!ok)
		return false;
	if (e.h.type != REC_START)
		return corrupt(errp, ERR_PROTO, 0, "expected a START record, got %s",
			       rec_type_name(e.h.type));
	if (e.h.payload_len || (e.h.flags & ~REC_F_FULL))
		return corrupt(errp, ERR_PROTO, 0, "bad START record");
	if (e.h.length != size)
		return err_set(errp, ERR_INVAL,
			       "volume size mismatch: the stream carries %" PRIu64 " bytes, the target has %" PRIu64,
			       e.h.length, size);
	if (e.h.offset > e.h.length || ((e.h.flags & REC_F_FULL) && e.h.offset != e.h.length))
		return corrupt(errp, ERR_PROTO, 0, "START: the run covers %" PRIu64 " bytes of a %" PRIu64 "-byte volume",
			       e.h.offset, e.h.length);
	r->full = e.h.flags & REC_F_FULL;
	if (need_full && !r->full)
		return err_set(errp, ERR_PROTO,
			       "the stream carries only some extents; a new file needs a full stream");
	r->size = size;
	r->p.total = e.h.offset;
	r->p.records = 1;
	r->p.wire_bytes = r->wire;
	return true;
}

/* Publishes DATA entries to the workers until END; returns with all
 * published entries applied (or the run stopped). */
static bool recv_body(struct receiver *r, struct err **errp)
{
	struct stream_prog sp = { .o = &r->o };
	uint8_t hb[REC_HDR_LEN];
	struct err *er = NULL;
	bool ok = false;

	for (;;) {
		struct rent *e;

		pthread_mutex_lock(&r->lock);
		e = &r->ring[r->pub % r->depth];
		while (!r->stop && e->state != RENT_FREE)
			pthread_cond_wait(&r->cond, &r->lock);
		pthread_mutex_unlock(&r->lock);
		if (r->stop)
			break;
		if (!read_record(r, e, hb, &er))
			break;
		r->p.records++;
		r->p.wire_bytes = r->wire;
		if (e->h.type == REC_END) {
			ok = check_end(r, e, &er);
			break;
		}
		if ((e->h.type != REC_DATA && e->h.type != REC_ZERO) || !check_range(r, e, &er)) {
			if (!er)
				corrupt(&er, ERR_PROTO, e->wire_off, "record %" PRIu32 ": unexpected %s record",
					e->h.seq, rec_type_name(e->h.type));
			break;
		}
		r->p.covered += e->h.length;
		/* Before the range is touched: a failed run changed at most
		 * what was reported. */
		if (r->o.on_range)
			r->o.on_range(e->h.offset, e->h.length, e->h.type == REC_ZERO, r->o.opaque);
		if (e->h.type == REC_ZERO) {
			r->p.zero_bytes += e->h.length;
			if (!zero_range(r, e->h.offset, e->h.length, &er))
				break;
		} else {
			r->p.data_bytes += e->h.length;
			pthread_mutex_lock(&r->lock);
			e->state = RENT_READY;
			r->pub++;
			pthread_cond_broadcast(&r->cond);
			pthread_mutex_unlock(&r->lock);
		}
		stream_prog_tick(&sp, &r->p, false);
	}
	if (er)
		fail(r, &er);
	/* Let the workers finish what was published. */
	pthread_mutex_lock(&r->lock);
	while (!r->stop && r->freed < r->pub)
		pthread_cond_wait(&r->cond, &r->lock);
	ok = ok && !r->stop;
	pthread_mutex_unlock(&r->lock);
	if (ok) {
		stream_prog_tick(&sp, &r->p, true);
	} else {
		err_propagate(errp, &r->err);
	}
	return ok;
}

static bool recv_run(struct receiver *r, struct err **errp)
{
	pthread_t workers[64];
	unsigned started = 0;
	struct err *er = NULL;
	bool ok = false;

	r->depth = 2 * r->o.threads + 1;
	r->ring = calloc(r->depth, sizeof(*r->ring));
	if (!r->ring)
		return err_set(errp, ERR_IO, "volume stream: out of memory");
	for (; started < r->o.threads; started++)
		if (pthread_create(&workers[started], NULL, worker_main, r) != 0)
			break;
	if (started < r->o.threads)
		err_set(&er, ERR_IO, "volume stream: cannot start a thread");
	else
		ok = recv_body(r, &er);
	pthread_mutex_lock(&r->lock);
	r->done = true;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	for (unsigned i = 0; i < started; i++)
		pthread_join(workers[i], NULL);
	for (unsigned i = 0; i < r->depth; i++)
		free(r->ring[i].in);
	free(r->ring);
	if (!ok) {
		err_propagate(&er, &r->err); /* a worker may have failed first */
		err_propagate(errp, &er);
	}
	return ok;
}

static void receiver_init(struct receiver *r, int in_fd, const struct tp_stream_opts *o)
{
	memset(r, 0, sizeof(*r));
	r->o = *o;
	r->in_fd = in_fd;
	r->out_fd = -1;
	r->seq = 0;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
}

static void receiver_fini(struct receiver *r)
{
	err_free(r->err);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->lock);
}

bool tp_stream_recv_apply(int in_fd, int file_fd, const struct tp_stream_opts *o,
			  struct tp_stream_progress *final, struct err **errp)
{
	struct tp_stream_opts oo;
	struct receiver r;
	struct stat st;
	off_t size;
	bool ok;

	if (!stream_opts_resolve(o, &oo, errp))
		return false;
	if (fstat(file_fd, &st) < 0)
		return err_set_errno(errp, errno, "stat target");
	size = S_ISBLK(st.st_mode) ? lseek(file_fd, 0, SEEK_END) : st.st_size;
	if (size < 0)
		return err_set_errno(errp, errno, "size of target");
	receiver_init(&r, in_fd, &oo);
	r.out_fd = file_fd;
	ok = recv_start(&r, (uint64_t)size, false, errp) && recv_run(&r, errp);
	if (ok && fdatasync(file_fd) < 0)
		ok = err_set_errno(errp, errno, "fdatasync target");
	if (ok && final)
		*final = r.p;
	receiver_fini(&r);
	return ok;
}

static bool sync_dir_of(const char *path, struct err **errp)
{
	_cleanup_free_ char *copy = strdup(path);
	_cleanup_close_ int fd = -1;

	if (!copy)
		return err_set(errp, ERR_IO, "out of memory");
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		return err_set_errno(errp, errno, "fsync directory of '%s'", path);
	return true;
}

bool tp_stream_recv_file(int in_fd, const char *path, uint64_t size, const struct tp_stream_opts *o,
			 struct tp_stream_progress *final, struct err **errp)
{
	_cleanup_free_ char *part = NULL;
	_cleanup_close_ int fd = -1;
	struct tp_stream_opts oo;
	struct receiver r;
	struct err *e = NULL;
	bool ok = false;

	if (!stream_opts_resolve(o, &oo, errp))
		return false;
	if (asprintf(&part, "%s.part", path) < 0) {
		part = NULL;
		return err_set(errp, ERR_IO, "out of memory");
	}
	receiver_init(&r, in_fd, &oo);
	r.fresh = true;
	if (!recv_start(&r, size, true, &e))
		goto out;
	/* A stale .part goes first: opening it with O_TRUNC would keep its
	 * mode (the image could stay world-readable) and follow a symlink. */
	if (unlink(part) < 0 && errno != ENOENT) {
		err_set_errno(&e, errno, "remove stale '%s'", part);
		goto out;
	}
	fd = open(part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		err_set_errno(&e, errno, "create '%s'", part);
		goto out;
	}
	r.out_fd = fd;
	if (ftruncate(fd, (off_t)size) < 0) {
		err_set_errno(&e, errno, "size '%s' to %" PRIu64 " bytes", part, size);
		goto out;
	}
	if (!recv_run(&r, &e))
		goto out;
	if (fsync(fd) < 0) {
		err_set_errno(&e, errno, "fsync '%s'", part);
		goto out;
	}
	if (rename(part, path) < 0) {
		err_set_errno(&e, errno, "rename '%s' to '%s'", part, path);
		goto out;
	}
	ok = sync_dir_of(path, &e);
	if (ok && final)
		*final = r.p;
out:
	if (!ok && fd >= 0 && unlink(part) < 0 && errno != ENOENT)
		log_warn("cannot remove '%s': %m", part); /* the original error stays the one reported */
	receiver_fini(&r);
	if (!ok)
		err_propagate(errp, &e);
	return ok;
}
