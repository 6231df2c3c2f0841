/*
 * tp_stream.c - the volume stream's record format, its checksum, and the
 * wire I/O both ends share (see tp_stream_int.h for the layout).
 */
#include "tp_stream_int.h"
#include "../common/util.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static const char *const rec_type_names[] = {
	[0] = "unknown", [REC_START] = "START", [REC_DATA] = "DATA",
	[REC_ZERO] = "ZERO", [REC_END] = "END",
};
_Static_assert(ARRAY_SIZE(rec_type_names) == REC_TYPE_MAX, "rec_type_names");

const char *rec_type_name(unsigned type)
{
	return type < REC_TYPE_MAX ? rec_type_names[type] : rec_type_names[0];
}

void rec_encode(const struct rec_hdr *h, uint32_t crc, uint8_t *out)
{
	put_le32(out, REC_MAGIC);
	out[4] = h->version;
	out[5] = h->type;
	out[6] = (uint8_t)h->flags;
	out[7] = (uint8_t)(h->flags >> 8);
	put_le32(out + 8, h->seq);
	put_le32(out + 12, h->payload_len);
	put_le64(out + 16, h->offset);
	put_le64(out + 24, h->length);
	put_le32(out + 32, crc);
	put_le32(out + 36, 0);
}

bool rec_decode(const uint8_t *in, struct rec_hdr *h, const char **why)
{
	if (get_le32(in) != REC_MAGIC) {
		*why = "bad magic";
		return false;
	}
	h->version = in[4];
	h->type = in[5];
	h->flags = (uint16_t)(in[6] | in[7] << 8);
	h->seq = get_le32(in + 8);
	h->payload_len = get_le32(in + 12);
	h->offset = get_le64(in + 16);
	h->length = get_le64(in + 24);
	h->crc = get_le32(in + 32);
	if (h->version != TP_STREAM_VERSION) {
		*why = "unsupported version";
		return false;
	}
	if (get_le32(in + 36) != 0) {
		*why = "reserved field set";
		return false;
	}
	return true;
}

uint32_t rec_crc(const struct rec_hdr *h, const void *payload, size_t len)
{
	uint8_t b[REC_HDR_LEN];

	rec_encode(h, 0, b);
	return tp_crc32c(tp_crc32c(0, b, sizeof(b)), payload, len);
}

/* ---- CRC-32C ---------------------------------------------------------- */

#define CRC32C_POLY 0x82f63b78u /* reflected Castagnoli polynomial */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static bool crc_hw;

static void crc_init(void)
{
	for (unsigned i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ CRC32C_POLY : c >> 1;
		crc_table[0][i] = c;
	}
	/* Slicing by 8: table[k][i] is i's crc advanced by k more zero bytes. */
	for (unsigned i = 0; i < 256; i++)
		for (int k = 1; k < 8; k++)
			crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^ crc_table[0][crc_table[k - 1][i] & 0xff];
#if defined(__x86_64__)
	__builtin_cpu_init();
	crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

uint32_t tp_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	pthread_once(&crc_once, crc_init);
	crc = ~crc;
	while (len >= 8) {
		uint32_t lo = crc ^ get_le32(p), hi = get_le32(p + 4);
		crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		      crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
		      crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
		      crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
	return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t len)
{
	uint64_t c = ~crc;

	/* Three independent lanes would hide the instruction's latency; one
	 * lane already runs at several GB/s, well above any wire we feed. */
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return ~(uint32_t)c;
}
#endif

uint32_t tp_crc32c(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
	if (crc_hw)
		return crc32c_hw(crc, buf, len);
#endif
	return tp_crc32c_sw(crc, buf, len);
}

/* ---- options and I/O -------------------------------------------------- */

bool stream_opts_resolve(const struct tp_stream_opts *in, struct tp_stream_opts *out,
			 struct err **errp)
{
	static const struct tp_stream_opts none;

	*out = in ? *in : none;
	if (!out->zstd_level)
		out->zstd_level = TP_STREAM_DEFAULT_LEVEL;
	if (!out->block_size)
		out->block_size = TP_STREAM_DEFAULT_BLOCK;
	if (out->block_size < 4096 || out->block_size > (1u << 20) ||
	    (out->block_size & (out->block_size - 1)))
		return err_set(errp, ERR_INVAL,
			       "invalid stream block size %u: not a power of two in [4 KiB, 1 MiB]",
			       out->block_size);
	if (!out->threads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		out->threads = n < 1 ? 1 : n > 4 ? 4 : (unsigned)n;
	}
	if (out->threads > 64)
		return err_set(errp, ERR_INVAL, "invalid stream threads %u: at most 64", out->threads);
	return true;
}

static bool wait_fd(int fd, short ev, struct err **errp)
{
	struct pollfd p = { .fd = fd, .events = ev };

	while (poll(&p, 1, -1) < 0)
		if (errno != EINTR)
			return err_set_errno(errp, errno, "poll on stream");
	return true;
}

bool stream_writev(int fd, struct iovec *iov, int n, struct err **errp)
{
	bool sock = true;

	while (n > 0) {
		ssize_t w = -1;

		if (sock) {
			struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)n };
			w = sendmsg(fd, &m, MSG_NOSIGNAL);
			if (w < 0 && errno == ENOTSOCK) {
				sock = false;
				continue;
			}
		} else {
			w = writev(fd, iov, n);
		}
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (!wait_fd(fd, POLLOUT, errp))
					return false;
				continue;
			}
			return err_set_errno(errp, errno, "write to stream");
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return true;
}

ssize_t stream_read_full(int fd, void *buf, size_t len, struct err **errp)
{
	size_t got = 0;

	while (got < len) {
		ssize_t r = read(fd, (char *)buf + got, len - got);
		if (r == 0)
			break;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (!wait_fd(fd, POLLIN, errp))
					return -1;
				continue;
			}
			err_set_errno(errp, errno, "read from stream");
			return -1;
		}
		got += (size_t)r;
	}
	return (ssize_t)got;
}

void stream_prog_tick(struct stream_prog *sp, const struct tp_stream_progress *p, bool force)
{
	int64_t now;

	if (!sp->o->progress)
		return;
	now = util_now_ms();
	if (!force && now - sp->last_ms < 100)
		return;
	sp->last_ms = now;
	sp->o->progress(p, sp->o->opaque);
}
