/*
 * util.h - small helpers shared by every part: parsing of user-supplied
 * numbers and sizes (with errors that name the bad value), clocks, and
 * I/O loops that survive EINTR and short transfers.
 */
#ifndef VMM_UTIL_H
#define VMM_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t util_now_ms(void);

/* Parses a decimal unsigned integer in [min, max]; `what` names the value
 * in the error: "invalid cpus 'x': not a number". */
bool util_parse_u64(const char *s, uint64_t min, uint64_t max,
		    const char *what, uint64_t *out, struct err **errp);

/* Parses a size: digits with an optional suffix K, M, G, T (binary, powers
 * of 1024, case-insensitive, optional trailing "iB"/"B"); a bare number is
 * in `unit` bytes (e.g. 1 << 20 to read "512" as MiB). */
bool util_parse_size(const char *s, uint64_t unit, uint64_t min, uint64_t max,
		     const char *what, uint64_t *out, struct err **errp);

/* Base64 (RFC 4648 with padding). encode: out has room for
 * 4 * ((len + 2) / 3) + 1 bytes; returns the length written (NUL not
 * counted). decode: at most cap bytes to out, *len the count; a bad
 * character, length or padding is ERR_INVAL naming where. */
size_t util_base64_encode(const void *data, size_t len, char *out);
bool util_base64_decode(const char *in, void *out, size_t cap, size_t *len, struct err **errp);

/* Formats bytes with a binary unit ("1.5 GiB") into buf. */
const char *util_fmt_bytes(uint64_t bytes, char *buf, size_t len);

/* Writes all of buf, retrying on EINTR and short writes. */
bool util_write_all(int fd, const void *buf, size_t len, struct err **errp);

/* Reads a whole small file (at most max bytes) into a NUL-terminated
 * string owned by the caller. */
char *util_read_file(const char *path, size_t max, struct err **errp);

/* Writes a file atomically (temp file + fsync + rename) with exactly the
 * given mode, creating its directory if needed. */
bool util_write_file_bytes(const char *path, const void *data, size_t len, int mode,
			  struct err **errp);
/* The same without the fsync: a reader sees the old file or the new one,
 * but after a crash it may be the old one, or empty. Only for files that
 * are checked when read and can be rebuilt (a checksummed cache). */
bool util_write_cache_file(const char *path, const void *data, size_t len, int mode,
			   struct err **errp);
/* util_write_file_bytes for a string. */
bool util_write_file(const char *path, const char *data, int mode,
		     struct err **errp);

/* A volume's format comes from its name, never from its content (a
 * guest can write a qcow2 header into its raw disk and so choose a
 * backing file): true for a name ending in ".qcow2", else raw. */
bool util_volume_is_qcow2(const char *path);

/* True if the process exists and is not a zombie. */
bool util_pid_alive(pid_t pid);

/* Creates a directory and its parents (mode 0755 / given). */
bool util_mkdir_p(const char *path, int mode, struct err **errp);

/* s as a log or error message may quote a peer's word: at most len - 1
 * bytes ("..." when cut), control and non-ASCII bytes as '?'. Returns buf. */
const char *util_printable(const char *s, char *buf, size_t len);

/* Test knob of the fault matrices (tests/faults): VMM_TEST_PHASE_DELAY=
 * NAME:MS makes the caller linger MS ms (logged as a warning) at the point
 * NAME, so that a fault can land where a migration or a sync otherwise
 * spends milliseconds. Points: a migration's phases once recorded and
 * "owner-moved" (migrate/mig_job.c); "repl-open", "repl-stream" and
 * "repl-applied" (cli/repl_sync.c). Unset in production: no effect. */
void util_test_delay(const char *name);

#endif
