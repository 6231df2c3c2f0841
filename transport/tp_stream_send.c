/*
 * tp_stream_send.c - the sending end of a volume stream.
 *
 * Three stages overlap, joined by a ring of `depth` record entries in
 * sequence order:
 *   reader   (one thread)   walks the ranges (with SEEK_DATA/SEEK_HOLE
 *                           when the source is a file), reads chunks of
 *                           data into pooled buffers (pread or the
 *                           caller's read callback, only from here),
 *                           cuts zero blocks out as ZERO records and
 *                           publishes DATA records that point into them;
 *   workers  (opts.threads) compress DATA records (one ZSTD_CCtx each, one
 *                           independent frame per record) and seal them
 *                           with their crc, in any order;
 *   writer   (the caller)   writes sealed records in sequence order,
 *                           keeps the run checksum, rate-limits, reports
 *                           progress, and finally writes END.
 * zstd's own multithreading (ZSTD_c_nbWorkers) would make one frame of
 * the whole run; independent frames keep each record verifiable and
 * decodable on its own. The first error of any stage stops them all.
 */
#include "tp_stream_int.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#define READ_CHUNK (1u << 20) /* bytes per read, and largest DATA record we send */

struct sbuf {
	uint8_t *data;
	unsigned refs;       /* the reader while filling + DATA entries cut from it */
	struct sbuf *next;   /* free list */
};

enum ent_state { ENT_FREE, ENT_QUEUED, ENT_BUSY, ENT_DONE };

struct ent {
	enum ent_state state;
	struct rec_hdr h;
	struct sbuf *buf;        /* DATA: holds raw */
	const uint8_t *raw;
	uint8_t *out;            /* compressed payload, READ_CHUNK bytes */
	const uint8_t *payload;  /* out or raw */
	uint8_t hdr[REC_HDR_LEN];
};

struct sender {
	struct tp_stream_opts o;
	int out_fd;
	int fd;                  /* a file source (SEEK_DATA), else -1 */
	tp_stream_read_fn read;  /* the reader's data source */
	void *ropaque;
	uint64_t size;
	const struct tp_extent *ext;
	size_t n_ext;
	bool full;

	pthread_mutex_t lock;
	pthread_cond_t cond;     /* every state change; broadcast */
	struct ent *ring;
	unsigned depth;
	uint64_t next_pub, next_comp, next_write; /* sequence numbers */
	bool reader_done, stop;
	struct err *err;         /* the first error of any stage */
	struct sbuf *bufs, *free_bufs;
	unsigned n_bufs;

	/* reader only */
	uint64_t zero_off, zero_len; /* pending ZERO run */
	bool seek_ok;

	/* writer only */
	struct tp_stream_progress p;
	uint32_t run_crc;
	int64_t start_ms;
};

static void fail(struct sender *s, struct err **e)
{
	pthread_mutex_lock(&s->lock);
	err_propagate(&s->err, e);
	s->stop = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

/* ---- reader ------------------------------------------------------------ */

static struct sbuf *buf_get(struct sender *s)
{
	struct sbuf *b;

	pthread_mutex_lock(&s->lock);
	while (!s->free_bufs && !s->stop)
		pthread_cond_wait(&s->cond, &s->lock);
	b = s->stop ? NULL : s->free_bufs;
	if (b) {
		s->free_bufs = b->next;
		b->refs = 1;
	}
	pthread_mutex_unlock(&s->lock);
	return b;
}

/* Called with the lock held. */
static void buf_put_locked(struct sender *s, struct sbuf *b)
{
	if (--b->refs == 0) {
		b->next = s->free_bufs;
		s->free_bufs = b;
		pthread_cond_broadcast(&s->cond);
	}
}

/* Publishes the next record; DATA entries take a reference on buf. */
static bool publish(struct sender *s, enum rec_type type, uint64_t off, uint64_t len,
		    struct sbuf *buf, const uint8_t *raw)
{
	struct ent *e;

	pthread_mutex_lock(&s->lock);
	while (!s->stop && s->next_pub - s->next_write >= s->depth)
		pthread_cond_wait(&s->cond, &s->lock);
	if (s->stop) {
		pthread_mutex_unlock(&s->lock);
		return false;
	}
	if (s->next_pub >= UINT32_MAX) {
		pthread_mutex_unlock(&s->lock);
		struct err *er = NULL;
		err_set(&er, ERR_INVAL, "volume stream: too many records");
		fail(s, &er);
		return false;
	}
	e = &s->ring[s->next_pub % s->depth];
	e->h = (struct rec_hdr){ .version = TP_STREAM_VERSION, .type = (uint8_t)type,
				 .seq = (uint32_t)s->next_pub, .offset = off, .length = len };
	e->buf = NULL;
	if (type == REC_DATA) {
		e->buf = buf;
		buf->refs++;
		e->raw = raw;
		e->state = ENT_QUEUED;
	} else {
		rec_encode(&e->h, rec_crc(&e->h, NULL, 0), e->hdr);
		e->payload = NULL;
		e->state = ENT_DONE;
	}
	s->next_pub++;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return true;
}

static bool zero_flush(struct sender *s)
{
	bool ok = true;

	if (s->zero_len)
		ok = publish(s, REC_ZERO, s->zero_off, s->zero_len, NULL, NULL);
	s->zero_len = 0;
	return ok;
}

static bool zero_add(struct sender *s, uint64_t off, uint64_t len)
{
	if (s->zero_len && s->zero_off + s->zero_len != off && !zero_flush(s))
		return false;
	if (!s->zero_len)
		s->zero_off = off;
	s->zero_len += len;
	return true;
}

static bool is_zero(const uint8_t *p, size_t len)
{
	uint64_t acc = 0, w[8];

	for (; len >= sizeof(w); p += sizeof(w), len -= sizeof(w)) {
		memcpy(w, p, sizeof(w));
		acc = w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
		if (acc)
			return false;
	}
	while (len--)
		if (*p++)
			return false;
	return true;
}

/* The read callback of a file source. */
static bool read_fd(void *opaque, void *buf, size_t len, uint64_t off, struct err **errp)
{
	const struct sender *s = opaque;
	size_t got = 0;

	while (got < len) {
		ssize_t r = pread(s->fd, (uint8_t *)buf + got, len - got, (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return err_set_errno(errp, errno, "read volume at offset %" PRIu64, off + got);
		if (r == 0)
			return err_set(errp, ERR_IO,
				       "volume shrank while reading: end of file at offset %" PRIu64,
				       off + got);
		got += (size_t)r;
	}
	return true;
}

/* Reads source[off, end) (allocated data) chunk by chunk; blocks of zeros
 * become ZERO records, the rest DATA records pointing into the buffer. */
static bool read_data(struct sender *s, uint64_t off, uint64_t end)
{
	uint64_t bs = s->o.block_size;
	bool skip = !(s->o.flags & TP_STREAM_NO_ZERO_SKIP);

	while (off < end) {
		uint64_t lim = (off + READ_CHUNK) & ~(bs - 1);
		size_t n = (size_t)((lim < end ? lim : end) - off), pos = 0;
		struct sbuf *b = buf_get(s);
		struct err *er = NULL;
		bool ok;

		if (!b)
			return false;
		ok = s->read(s->ropaque, b->data, n, off, &er);
		if (!ok) {
			if (!er) /* a callback that forgot its error */
				err_set(&er, ERR_IO, "read volume at offset %" PRIu64 ": failed", off);
			fail(s, &er);
		}
		/* Walk blocks aligned on the file's block grid. */
		while (ok && pos < n) {
			size_t run = 0;
			bool zero = false;

			while (pos + run < n) {
				uint64_t at = off + pos + run;
				size_t blk = (size_t)(((at + bs) & ~(bs - 1)) - at);
				bool z;

				if (blk > n - pos - run)
					blk = n - pos - run;
				z = skip && is_zero(b->data + pos + run, blk);
				if (run && z != zero)
					break;
				zero = z;
				run += blk;
			}
			if (zero)
				ok = zero_add(s, off + pos, run);
			else
				ok = zero_flush(s) && publish(s, REC_DATA, off + pos, run, b, b->data + pos);
			pos += run;
		}
		pthread_mutex_lock(&s->lock);
		buf_put_locked(s, b);
		pthread_mutex_unlock(&s->lock);
		if (!ok)
			return false;
		off += n;
	}
	return true;
}

/* Splits [off, end) into holes and data with SEEK_DATA/SEEK_HOLE. */
static bool read_range(struct sender *s, uint64_t off, uint64_t end)
{
	while (off < end) {
		off_t d = (off_t)off, h = (off_t)end;

		if (s->seek_ok) {
			d = lseek(s->fd, (off_t)off, SEEK_DATA);
			if (d < 0 && errno == ENXIO) {
				d = (off_t)end;
			} else if (d < 0 && (errno == EINVAL || errno == EOPNOTSUPP)) {
				s->seek_ok = false; /* no hole support: everything is data */
				d = (off_t)off;
			} else if (d < 0) {
				struct err *er = NULL;
				err_set_errno(&er, errno, "SEEK_DATA on volume at %" PRIu64, off);
				fail(s, &er);
				return false;
			}
			if ((uint64_t)d > end)
				d = (off_t)end;
		}
		if ((uint64_t)d > off) {
			if (!zero_add(s, off, (uint64_t)d - off))
				return false;
			off = (uint64_t)d;
			continue;
		}
		if (s->seek_ok) {
			h = lseek(s->fd, (off_t)off, SEEK_HOLE);
			if (h < 0 || (uint64_t)h <= off || (uint64_t)h > end)
				h = (off_t)end; /* changed under us or no hole before end */
		}
		if (!read_data(s, off, (uint64_t)h))
			return false;
		off = (uint64_t)h;
	}
	return true;
}

static void *reader_main(void *arg)
{
	struct sender *s = arg;
	bool ok = true;

	s->seek_ok = s->fd >= 0 && !(s->o.flags & TP_STREAM_NO_ZERO_SKIP);
	if (s->fd >= 0)
		posix_fadvise(s->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	for (size_t i = 0; ok && i < s->n_ext; i++)
		ok = read_range(s, s->ext[i].offset, s->ext[i].offset + s->ext[i].length);
	if (ok)
		zero_flush(s);
	pthread_mutex_lock(&s->lock);
	s->reader_done = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ---- compression workers --------------------------------------------- */

static void seal_data(struct sender *s, ZSTD_CCtx *cc, struct ent *e)
{
	size_t len = (size_t)e->h.length, z = 0;

	e->payload = e->raw;
	e->h.flags = 0;
	if (cc && len > 1) {
		/* One byte less than raw: zstd fails when it would not shrink. */
		z = ZSTD_compressCCtx(cc, e->out, len - 1, e->raw, len, s->o.zstd_level);
		if (!ZSTD_isError(z)) {
			e->payload = e->out;
			e->h.flags = REC_F_ZSTD;
			len = z;
		}
	}
	e->h.payload_len = (uint32_t)len;
	rec_encode(&e->h, rec_crc(&e->h, e->payload, len), e->hdr);
}

static void *worker_main(void *arg)
{
	struct sender *s = arg;
	ZSTD_CCtx *cc = NULL;

	if (!(s->o.flags & TP_STREAM_NO_COMPRESS)) {
		cc = ZSTD_createCCtx();
		if (!cc) {
			struct err *er = NULL;
			err_set(&er, ERR_IO, "zstd: cannot create a compression context");
			fail(s, &er);
			return NULL;
		}
	}
	pthread_mutex_lock(&s->lock);
	for (;;) {
		struct ent *e = NULL;

		if (s->next_comp < s->next_write)
			s->next_comp = s->next_write;
		while (s->next_comp < s->next_pub) {
			e = &s->ring[s->next_comp++ % s->depth];
			if (e->state == ENT_QUEUED)
				break;
			e = NULL;
		}
		if (e) {
			e->state = ENT_BUSY;
			pthread_mutex_unlock(&s->lock);
			seal_data(s, cc, e);
			pthread_mutex_lock(&s->lock);
			e->state = ENT_DONE;
			pthread_cond_broadcast(&s->cond);
			continue;
		}
		if (s->stop || s->reader_done)
			break;
		pthread_cond_wait(&s->cond, &s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	ZSTD_freeCCtx(cc);
	return NULL;
}

/* ---- writer ------------------------------------------------------------ */

static bool write_rec(struct sender *s, const uint8_t *hdr, const void *payload, size_t len,
		      struct err **errp)
{
	struct iovec iov[2] = { { (void *)hdr, REC_HDR_LEN }, { (void *)payload, len } };

	if (!stream_writev(s->out_fd, iov, len ? 2 : 1, errp))
		return false;
	s->p.wire_bytes += REC_HDR_LEN + len;
	s->p.records++;
	if (s->o.rate_limit) {
		int64_t due = s->start_ms + (int64_t)(s->p.wire_bytes * 1000 / s->o.rate_limit);
		int64_t now = util_now_ms();
		if (due > now) {
			struct timespec ts = { (due - now) / 1000, (due - now) % 1000 * 1000000 };
			while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
				;
		}
	}
	return true;
}

static bool write_start(struct sender *s, struct err **errp)
{
	struct rec_hdr h = { .version = TP_STREAM_VERSION, .type = REC_START,
			     .flags = s->full ? REC_F_FULL : 0, .offset = s->p.total,
			     .length = s->size };
	uint8_t b[REC_HDR_LEN];

	rec_encode(&h, rec_crc(&h, NULL, 0), b);
	s->run_crc = tp_crc32c(0, b, sizeof(b));
	return write_rec(s, b, NULL, 0, errp);
}

static bool write_end(struct sender *s, struct err **errp)
{
	struct rec_hdr h = { .version = TP_STREAM_VERSION, .type = REC_END,
			     .seq = (uint32_t)s->next_write, .payload_len = END_LEN,
			     .offset = s->p.covered, .length = s->p.data_bytes };
	uint8_t b[REC_HDR_LEN], pl[END_LEN] = { 0 };

	put_le64(pl, s->p.zero_bytes);
	put_le32(pl + 8, s->run_crc);
	rec_encode(&h, rec_crc(&h, pl, sizeof(pl)), b);
	return write_rec(s, b, pl, sizeof(pl), errp);
}

/* Writes records in order until the reader is done and all are out. */
static bool writer_loop(struct sender *s, struct stream_prog *sp)
{
	struct err *er = NULL;

	for (;;) {
		struct ent *e;

		pthread_mutex_lock(&s->lock);
		for (;;) {
			e = &s->ring[s->next_write % s->depth];
			if (s->stop || (s->next_write < s->next_pub && e->state == ENT_DONE) ||
			    (s->reader_done && s->next_write == s->next_pub))
				break;
			pthread_cond_wait(&s->cond, &s->lock);
		}
		if (s->stop || s->next_write == s->next_pub) {
			pthread_mutex_unlock(&s->lock);
			return !s->stop;
		}
		pthread_mutex_unlock(&s->lock);

		if (!write_rec(s, e->hdr, e->payload, e->h.payload_len, &er)) {
			fail(s, &er);
			return false;
		}
		s->run_crc = tp_crc32c(s->run_crc, e->hdr, REC_HDR_LEN);
		s->p.covered += e->h.length;
		if (e->h.type == REC_DATA)
			s->p.data_bytes += e->h.length;
		else
			s->p.zero_bytes += e->h.length;
		stream_prog_tick(sp, &s->p, false);

		pthread_mutex_lock(&s->lock);
		if (e->buf)
			buf_put_locked(s, e->buf);
		e->buf = NULL;
		e->state = ENT_FREE;
		s->next_write++;
		pthread_cond_broadcast(&s->cond);
		pthread_mutex_unlock(&s->lock);
	}
}

static void sender_free(struct sender *s)
{
	for (unsigned i = 0; s->ring && i < s->depth; i++)
		free(s->ring[i].out);
	for (unsigned i = 0; s->bufs && i < s->n_bufs; i++)
		free(s->bufs[i].data);
	free(s->ring);
	free(s->bufs);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	err_free(s->err);
}

static bool send_run(struct sender *s, const struct tp_stream_opts *o,
		     struct tp_stream_progress *final, struct err **errp)
{
	struct stream_prog sp = { .o = &s->o };
	pthread_t reader, workers[64];
	unsigned started = 0;
	bool reader_started = false, ok = false;
	struct err *er = NULL;

	if (!stream_opts_resolve(o, &s->o, errp))
		return false;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->depth = 2 * s->o.threads + 2;
	s->n_bufs = s->depth + 1;
	s->ring = calloc(s->depth, sizeof(*s->ring));
	s->bufs = calloc(s->n_bufs, sizeof(*s->bufs));
	if (!s->ring || !s->bufs)
		goto nomem;
	for (unsigned i = 0; i < s->depth; i++)
		if (!(s->ring[i].out = malloc(READ_CHUNK)))
			goto nomem;
	for (unsigned i = 0; i < s->n_bufs; i++) {
		if (!(s->bufs[i].data = malloc(READ_CHUNK)))
			goto nomem;
		s->bufs[i].next = s->free_bufs;
		s->free_bufs = &s->bufs[i];
	}
	for (size_t i = 0; i < s->n_ext; i++)
		s->p.total += s->ext[i].length;
	s->next_pub = s->next_comp = s->next_write = 1;
	s->start_ms = util_now_ms();
	if (!write_start(s, &er))
		goto out;

	if (pthread_create(&reader, NULL, reader_main, s) != 0)
		goto nothread;
	reader_started = true;
	for (; started < s->o.threads; started++)
		if (pthread_create(&workers[started], NULL, worker_main, s) != 0)
			goto nothread;
	ok = writer_loop(s, &sp);
	goto out;

nothread:
	err_set(&er, ERR_IO, "volume stream: cannot start a thread");
	goto out;
nomem:
	err_set(&er, ERR_IO, "volume stream: out of memory");
out:
	if (er)
		fail(s, &er);
	if (reader_started)
		pthread_join(reader, NULL);
	pthread_mutex_lock(&s->lock);
	s->reader_done = true; /* lets workers leave if the reader never ran */
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < started; i++)
		pthread_join(workers[i], NULL);
	if (ok && !write_end(s, &er)) {
		fail(s, &er);
		ok = false;
	}
	if (ok) {
		stream_prog_tick(&sp, &s->p, true);
		if (final)
			*final = s->p;
	} else {
		err_propagate(errp, &s->err);
	}
	sender_free(s);
	return ok;
}

/* Checks s's extents, then runs. */
static bool send_extents(struct sender *s, const struct tp_stream_opts *o,
			 struct tp_stream_progress *final, struct err **errp)
{
	const struct tp_extent *ext = s->ext;
	uint64_t size = s->size;

	for (size_t i = 0; i < s->n_ext; i++) {
		const struct tp_extent *x = &ext[i];

		if (!x->length || x->offset > size || x->length > size - x->offset)
			return err_set(errp, ERR_INVAL,
				       "invalid extent %zu [%" PRIu64 ", +%" PRIu64 "): empty or beyond the volume's %" PRIu64 " bytes",
				       i, x->offset, x->length, size);
		if (i && x->offset < ext[i - 1].offset + ext[i - 1].length)
			return err_set(errp, ERR_INVAL,
				       "invalid extent %zu at %" PRIu64 ": overlaps or precedes extent %zu",
				       i, x->offset, i - 1);
	}
	return send_run(s, o, final, errp);
}

bool tp_stream_send_extents(int out_fd, int file_fd, uint64_t size, const struct tp_extent *ext,
			    size_t n, const struct tp_stream_opts *o,
			    struct tp_stream_progress *final, struct err **errp)
{
	struct sender s = { .out_fd = out_fd, .fd = file_fd, .size = size, .ext = ext, .n_ext = n };

	s.read = read_fd;
	s.ropaque = &s;
	return send_extents(&s, o, final, errp);
}

bool tp_stream_send_extents_fn(int out_fd, uint64_t size, const struct tp_extent *ext, size_t n,
			       tp_stream_read_fn read_fn, void *ropaque, const struct tp_stream_opts *o,
			       struct tp_stream_progress *final, struct err **errp)
{
	struct sender s = { .out_fd = out_fd, .fd = -1, .size = size, .ext = ext, .n_ext = n,
			    .read = read_fn, .ropaque = ropaque };

	if (!read_fn)
		return err_set(errp, ERR_INVAL, "volume stream: no read callback");
	return send_extents(&s, o, final, errp);
}

bool tp_stream_send_file(int out_fd, const char *path, const struct tp_stream_opts *o,
			 struct tp_stream_progress *final, struct err **errp)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct tp_extent all;
	struct sender s = { .out_fd = out_fd, .full = true };
	struct err *e = NULL;
	off_t end;

	if (fd < 0)
		return err_set_errno(errp, errno, "open volume '%s'", path);
	end = lseek(fd, 0, SEEK_END);
	if (end < 0)
		return err_set_errno(errp, errno, "size of volume '%s'", path);
	all = (struct tp_extent){ 0, (uint64_t)end };
	s.fd = fd;
	s.read = read_fd;
	s.ropaque = &s;
	s.size = (uint64_t)end;
	s.ext = &all;
	s.n_ext = end > 0;
	if (!send_run(&s, o, final, &e)) {
		err_prefix(e, "send '%s'", path);
		err_propagate(errp, &e);
		return false;
	}
	return true;
}
