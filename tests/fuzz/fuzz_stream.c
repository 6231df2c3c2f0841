/*
 * fuzz_stream.c - libFuzzer target for the volume stream receiver
 * (transport/tp_stream_recv.c). The input is the stream, served from a
 * memfd. The target's size comes from the START record when it is at most
 * 1 MiB (else 256 KiB, which the receiver must refuse), so mutations
 * reach the records instead of stopping at a size mismatch.
 * The last byte (a valid stream's END leaves what follows it unread)
 * picks the mode: bit 0 set, tp_stream_recv_file into tmpfs, else
 * tp_stream_recv_apply into a memfd; bit 1 set, every record's crc and
 * END's run checksum are recomputed first, so that mutated records get
 * past the checksums to the checks behind them and to zstd.
 * Whatever the bytes, the receiver must fail cleanly or report figures
 * that add up; a failed recv_file must leave no file behind.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "transport/tp_stream.h"
#include "transport/tp_stream_int.h"

#define MAX_TARGET (1u << 20)
#define DEFAULT_TARGET (256u << 10)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int memfd_with(const void *buf, size_t len, uint64_t size)
{
	int fd = memfd_create("fuzz_stream", MFD_CLOEXEC);

	if (fd < 0)
		__builtin_trap();
	if (len && write(fd, buf, len) != (ssize_t)len)
		__builtin_trap();
	if (size && ftruncate(fd, (off_t)size) < 0)
		__builtin_trap();
	if (lseek(fd, 0, SEEK_SET) < 0)
		__builtin_trap();
	return fd;
}

/* Recomputes the crc of each complete record and END's run checksum. */
static void reseal(uint8_t *s, size_t len)
{
	uint32_t run = 0;

	for (size_t off = 0; off + REC_HDR_LEN <= len;) {
		uint8_t *h = s + off;
		uint32_t pl = get_le32(h + 12);

		if (pl > len - off - REC_HDR_LEN)
			break;
		if (h[5] == REC_END && pl >= 12)
			put_le32(h + REC_HDR_LEN + 8, run);
		put_le32(h + 32, 0);
		put_le32(h + 32, tp_crc32c(tp_crc32c(0, h, REC_HDR_LEN), h + REC_HDR_LEN, pl));
		if (h[5] != REC_END)
			run = tp_crc32c(run, h, REC_HDR_LEN);
		off += REC_HDR_LEN + pl;
	}
}

static void check_figures(const struct tp_stream_progress *p, size_t in_len, uint64_t size)
{
	if (p->covered != p->total || p->data_bytes + p->zero_bytes != p->covered ||
	    p->total > size || p->wire_bytes > in_len || p->records < 2)
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tp_stream_opts o = { .threads = 2 };
	struct tp_stream_progress fin;
	uint64_t vol = DEFAULT_TARGET;
	struct err *e = NULL;
	int in;

	if (size >= REC_HDR_LEN && get_le64(data + 24) <= MAX_TARGET) /* START's volume size */
		vol = get_le64(data + 24);
	if (size && (data[size - 1] & 2)) {
		uint8_t *copy = malloc(size);

		if (!copy)
			__builtin_trap();
		memcpy(copy, data, size);
		reseal(copy, size);
		in = memfd_with(copy, size, 0);
		free(copy);
	} else {
		in = memfd_with(data, size, 0);
	}
	if (size && (data[size - 1] & 1)) {
		static char path[64], part[80];
		struct stat st;

		if (!path[0]) {
			const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
			snprintf(path, sizeof(path), "%s/fuzz_stream.%d", dir, (int)getpid());
			snprintf(part, sizeof(part), "%s.part", path);
		}
		unlink(path);
		if (tp_stream_recv_file(in, path, vol, &o, &fin, &e)) {
			check_figures(&fin, size, vol);
			if (stat(path, &st) < 0 || (uint64_t)st.st_size != vol)
				__builtin_trap();
		} else if (access(path, F_OK) == 0 || access(part, F_OK) == 0) {
			__builtin_trap();
		}
		unlink(path);
	} else {
		int t = memfd_with(NULL, 0, vol);

		if (tp_stream_recv_apply(in, t, &o, &fin, &e))
			check_figures(&fin, size, vol);
		close(t);
	}
	if (e && (!e->msg || !e->msg[0]))
		__builtin_trap();
	err_free(e);
	close(in);
	return 0;
}
