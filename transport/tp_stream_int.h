/*
 * tp_stream_int.h - what the volume stream's sender and receiver share:
 * the record format, CRC-32C, option defaults, and wire I/O helpers.
 * Private to transport/tp_stream*.c.
 *
 * Record header, 40 bytes, little-endian:
 *    0 u32 magic "VMSR"       16 u64 offset
 *    4 u8  version            24 u64 length
 *    5 u8  type               32 u32 crc: CRC-32C of the header (crc = 0)
 *    6 u16 flags                         followed by the payload
 *    8 u32 seq (START = 0)    36 u32 reserved, 0
 *   12 u32 payload length
 *
 *   START  offset = bytes the run covers (= length when REC_F_FULL),
 *          length = volume size, flags REC_F_FULL or 0, no payload
 *   DATA   offset, length = raw bytes (<= TP_STREAM_MAX_RECORD), flags
 *          REC_F_ZSTD when the payload is a zstd frame, else payload = raw
 *   ZERO   offset, length, no payload
 *   END    offset = bytes covered, length = data bytes, payload = END_LEN:
 *          u64 zero bytes, u32 run checksum, u32 reserved
 * The run checksum is the CRC-32C over the 40 header bytes (crc filled in)
 * of every record from START to the one before END.
 */
#ifndef VMM_TP_STREAM_INT_H
#define VMM_TP_STREAM_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tp_stream.h"

#define REC_MAGIC 0x52534d56u /* "VMSR" */
#define REC_HDR_LEN 40
#define END_LEN 16

enum rec_type { REC_START = 1, REC_DATA, REC_ZERO, REC_END, REC_TYPE_MAX };

#define REC_F_ZSTD 0x1 /* DATA: payload is one zstd frame */
#define REC_F_FULL 0x1 /* START: the records tile the whole volume */

struct rec_hdr {
	uint8_t version;
	uint8_t type;
	uint16_t flags;
	uint32_t seq;
	uint32_t payload_len;
	uint64_t offset;
	uint64_t length;
	uint32_t crc;
};

const char *rec_type_name(unsigned type);

/* Writes h into out[REC_HDR_LEN] with the given crc field. */
void rec_encode(const struct rec_hdr *h, uint32_t crc, uint8_t *out);
/* Parses out of in[REC_HDR_LEN]; false (with why) on a bad magic, version
 * or reserved field. Does not check the crc. */
bool rec_decode(const uint8_t *in, struct rec_hdr *h, const char **why);
/* The record's crc: header with crc = 0, then the payload. */
uint32_t rec_crc(const struct rec_hdr *h, const void *payload, size_t len);

static inline void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* CRC-32C (Castagnoli), chained: crc32c(crc32c(0, a), b) == crc32c(0, a || b).
 * SSE4.2 instruction when the CPU has it, a table otherwise. */
uint32_t tp_crc32c(uint32_t crc, const void *buf, size_t len);
/* The table version, for tests. */
uint32_t tp_crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* Options with defaults filled in and checked. */
bool stream_opts_resolve(const struct tp_stream_opts *in, struct tp_stream_opts *out,
			 struct err **errp);

/* Writes iov fully (sendmsg with MSG_NOSIGNAL on sockets, writev else),
 * polling when the fd is non-blocking. */
struct iovec;
bool stream_writev(int fd, struct iovec *iov, int n, struct err **errp);
/* Reads exactly len bytes; returns the count read before EOF (< len) or
 * -1 with *errp set on an error. */
ssize_t stream_read_full(int fd, void *buf, size_t len, struct err **errp);

/* Throttled progress reporting (in the thread that calls the callback). */
struct stream_prog {
	const struct tp_stream_opts *o;
	int64_t last_ms;
};
void stream_prog_tick(struct stream_prog *sp, const struct tp_stream_progress *p, bool force);

#endif
