/*
 * tp_stream.h - a disk volume (raw image file or block device) sent as
 * framed records over a byte stream: a socket, a pipe, or an SSH channel
 * bridged to one. Used for offline copies of local disks and, with an
 * explicit extent list, for incremental replication.
 *
 * Wire format (all integers little-endian; see tp_stream_int.h):
 *   START  volume size, bytes the run covers, full stream or extents only
 *   DATA   offset, raw length, payload = zstd frame or the raw bytes
 *   ZERO   offset, length: the range reads as zeros (holes, zero blocks)
 *   END    totals (records, bytes covered, data bytes) and a checksum
 *          over every record header of the run
 * Every record has a 40-byte header with a sequence number and a CRC-32C
 * over header and payload; the END checksum chains the records, so a
 * flipped, dropped, duplicated or reordered byte is detected. Records are
 * in increasing offset order and never overlap.
 *
 * Sender: walks a volume file with SEEK_DATA/SEEK_HOLE (holes are never
 * read) or reads a source through a callback (an NBD export), and turns
 * blocks of zeros inside the data (block_size granularity) into ZERO
 * records, so zeros never cost payload. Reading, compressing (one zstd
 * context per worker thread, each record an independent frame) and
 * writing overlap. A payload is stored raw when zstd does not shrink it.
 *
 * Receiver: verifies each record before using it and stops reading right
 * after END (bytes behind END stay in the stream for the caller). Any
 * damage fails with ERR_PROTO "stream corrupt at offset N: ..." (N = byte
 * offset in the stream of the bad record), an early end of stream with
 * ERR_CLOSED "stream corrupt at offset N: truncated ...", a volume size
 * that differs from the expected one with ERR_INVAL.
 *
 * Threads: each call runs its own threads and joins them before it
 * returns; the progress and on_range callbacks run in the calling thread,
 * a sender's read callback in its one reader thread. The calls
 * block; fds may be non-blocking (we poll). Writes to a socket use
 * MSG_NOSIGNAL, so a vanished peer is ERR_IO (EPIPE), not SIGPIPE.
 * Ownership: fds and extent arrays stay the caller's; nothing is closed.
 */
#ifndef VMM_TP_STREAM_H
#define VMM_TP_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"

#define TP_STREAM_VERSION 1
#define TP_STREAM_MAX_RECORD (4u << 20)  /* largest raw length of a DATA record */
#define TP_STREAM_DEFAULT_BLOCK (64u << 10)
#define TP_STREAM_DEFAULT_LEVEL 1

/* tp_stream_opts.flags */
#define TP_STREAM_NO_COMPRESS  (1u << 0) /* send payloads raw */
#define TP_STREAM_NO_ZERO_SKIP (1u << 1) /* send holes and zeros as data (a plain copy) */

struct tp_stream_progress {
	uint64_t total;      /* bytes of the volume this run covers (size, or sum of extents) */
	uint64_t covered;    /* of total, done: sent/applied data plus skipped zeros */
	uint64_t data_bytes; /* raw bytes carried as DATA records */
	uint64_t zero_bytes; /* bytes carried as ZERO records (holes and zero blocks) */
	uint64_t wire_bytes; /* bytes written to / read from the stream */
	uint64_t records;    /* records, START and END included */
};

/* Zero-initialised options (or a NULL pointer) mean the defaults. */
struct tp_stream_opts {
	int zstd_level;        /* 0: TP_STREAM_DEFAULT_LEVEL; negative levels are zstd's fast modes */
	uint64_t rate_limit;   /* sender: wire bytes/s, 0 = unlimited */
	unsigned block_size;   /* sender: zero detection granularity, a power of two in
				* [4 KiB, 1 MiB]; 0: TP_STREAM_DEFAULT_BLOCK */
	unsigned threads;      /* (de)compression workers; 0: one per CPU, at most 4 */
	unsigned flags;        /* TP_STREAM_* */
	/* Called in the calling thread at most every 100 ms and once at the
	 * end of a successful run. */
	void (*progress)(const struct tp_stream_progress *p, void *opaque);
	/* Receiver: called in the calling thread, in stream order, once for
	 * every DATA (zero false) or ZERO (zero true) record when it passed
	 * its checks, before it is applied. After a successful run exactly
	 * the reported ranges were applied; after a failure the target
	 * differs from before at most inside the reported ranges. */
	void (*on_range)(uint64_t off, uint64_t len, bool zero, void *opaque);
	void *opaque;          /* passed to progress and on_range */
};

/* A byte range of the volume. */
struct tp_extent {
	uint64_t offset;
	uint64_t length;
};

/* Sends the whole file or block device at path as a full stream. *final
 * (may be NULL) gets the totals on success. */
bool tp_stream_send_file(int out_fd, const char *path, const struct tp_stream_opts *o,
			 struct tp_stream_progress *final, struct err **errp);

/* Sends only the given extents of file_fd (a volume of `size` bytes):
 * sorted by offset, non-overlapping, non-empty, within size, else
 * ERR_INVAL before anything is written. Holes and zero blocks inside an
 * extent travel as ZERO records, so the receiver zeroes them. n == 0
 * sends an empty run (START + END). */
bool tp_stream_send_extents(int out_fd, int file_fd, uint64_t size, const struct tp_extent *ext,
			    size_t n, const struct tp_stream_opts *o,
			    struct tp_stream_progress *final, struct err **errp);

/* Reads len bytes at off of the source into buf: the whole range, a short
 * read is an error. The error it sets is the run's, as it is. The same
 * type as repl_read_fn. */
typedef bool (*tp_stream_read_fn)(void *opaque, void *buf, size_t len, uint64_t off,
				  struct err **errp);

/* tp_stream_send_extents with the data read through read_fn(ropaque, ...)
 * instead of from a file (the source may be an NBD export): every byte of
 * the extents is read, no SEEK_DATA; zero blocks still become ZERO
 * records. Threads: read_fn runs in one thread the call starts (never the
 * calling thread), one call at a time, in increasing offset order, with
 * len <= 1 MiB, and its last call returns before this function does; so
 * it need not be reentrant, but it must not rely on the calling thread's
 * thread-local state, and anything it shares with other threads of the
 * caller needs their locking. */
bool tp_stream_send_extents_fn(int out_fd, uint64_t size, const struct tp_extent *ext, size_t n,
			       tp_stream_read_fn read_fn, void *ropaque, const struct tp_stream_opts *o,
			       struct tp_stream_progress *final, struct err **errp);

/* Receives a full stream of a `size`-byte volume into path: writes
 * "path.part" (created sparse, mode 0600, replacing a stale one), applies
 * DATA records only, fsyncs, and renames it to path (replacing it) after
 * the END record verified; then fsyncs the directory. On any failure the
 * .part file is removed and path is untouched: a file at path is always
 * complete. Refuses an extents-only stream (ERR_PROTO). */
bool tp_stream_recv_file(int in_fd, const char *path, uint64_t size, const struct tp_stream_opts *o,
			 struct tp_stream_progress *final, struct err **errp);

/* Applies a full or extents stream in place to file_fd, whose size must
 * equal the stream's volume size: DATA is written, ZERO ranges are
 * punched (or written as zeros where punching is unsupported), the file
 * is fdatasync'ed once END verified. On failure file_fd holds a partial
 * update: the caller must apply to a copy or snapshot it can drop (for a
 * fresh file it can delete, prefer tp_stream_recv_file). */
bool tp_stream_recv_apply(int in_fd, int file_fd, const struct tp_stream_opts *o,
			  struct tp_stream_progress *final, struct err **errp);

#endif
