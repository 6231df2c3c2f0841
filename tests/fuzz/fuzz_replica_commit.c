/*
 * fuzz_replica_commit.c - libFuzzer target for what repl_replica_recover()
 * reads from disk (replicate/repl_replica.c): the input is the replica's
 * commit file (PATH.repl-commit) or, when it starts with 'R', the rest is
 * its PATH.repl (with a valid commit beside it). A 256 KiB replica at
 * generation 3 and a sparse delta live in a directory made once in tmpfs.
 * Whatever the bytes, recovery must either
 *  - fail with an error that names the file it could not use, leaving the
 *    replica's bytes, PATH.repl and the commit as they were (a malformed
 *    commit is never applied, nor silently dropped); or
 *  - succeed at generation 3 (nothing to apply: the replica unchanged) or
 *    4, with every byte of the replica the old one or the delta's, and no
 *    side file left behind.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "replicate/repl.h"

#define VOL (256u << 10)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char meta_ok[] =
	"{\"job\":\"100-0\",\"gen\":3,\"time\":1700000003,\"size\":262144,\"source\":\"node1\"}\n";
static const char commit_ok[] = "{\"gen\":4,\"time\":1700000004,\"extents\":[[0,100000],[131072,65536]]}\n";

static char dir[64], vol[96], meta[112], delta[112], commit[112];
static uint8_t old[VOL], delta_img[VOL], have[VOL];

static void put(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0 || (len && write(fd, buf, len) != (ssize_t)len))
		__builtin_trap();
	close(fd);
}

static bool same(const char *path, const void *buf, size_t len)
{
	static char b[512];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t r = fd < 0 ? -1 : read(fd, b, sizeof(b));

	if (fd >= 0)
		close(fd);
	return r == (ssize_t)len && !memcmp(b, buf, len);
}

static void read_vol(void)
{
	int fd = open(vol, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || pread(fd, have, VOL, 0) != VOL)
		__builtin_trap();
	close(fd);
}

/* The delta: data in [0, 64 KiB) and [96, 160 KiB), holes elsewhere. */
static void put_delta(void)
{
	int fd = open(delta, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0 || ftruncate(fd, VOL) < 0 || pwrite(fd, delta_img, 65536, 0) != 65536 ||
	    pwrite(fd, delta_img + 98304, 65536, 98304) != 65536)
		__builtin_trap();
	close(fd);
}

static void cleanup(void)
{
	unlink(vol);
	unlink(meta);
	unlink(delta);
	unlink(commit);
	rmdir(dir);
}

static void init(void)
{
	snprintf(dir, sizeof(dir), "%s/fuzz_replica_commit.XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (!mkdtemp(dir))
		__builtin_trap();
	snprintf(vol, sizeof(vol), "%s/vol", dir);
	snprintf(meta, sizeof(meta), "%s.repl", vol);
	snprintf(delta, sizeof(delta), "%s.repl-delta", vol);
	snprintf(commit, sizeof(commit), "%s.repl-commit", vol);
	for (size_t i = 0; i < VOL; i++) {
		old[i] = (uint8_t)(i * 7 + 1) | 1;
		delta_img[i] = (i < 65536 || (i >= 98304 && i < 163840)) ? (uint8_t)(i * 13 + 2) & 0xfe : 0;
	}
	put(vol, old, VOL);
	put_delta();
	atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bool repl_mode = size && data[0] == 'R';
	struct repl_replica_info info;
	struct err *e = NULL;
	struct stat st;

	if (!dir[0])
		init();
	if (repl_mode) {
		put(meta, data + 1, size - 1);
		put(commit, commit_ok, sizeof(commit_ok) - 1);
	} else {
		put(meta, meta_ok, sizeof(meta_ok) - 1);
		put(commit, data, size);
	}
	if (!repl_replica_recover(vol, &info, &e)) {
		/* Refused: named, and nothing touched. */
		if (!e || !strstr(e->msg, dir) || (e->code != ERR_PROTO && e->code != ERR_STATE))
			__builtin_trap();
		read_vol();
		if (memcmp(have, old, VOL) || access(commit, F_OK) < 0 ||
		    (!repl_mode && !same(meta, meta_ok, sizeof(meta_ok) - 1)))
			__builtin_trap();
		err_free(e);
		return 0;
	}
	if (access(commit, F_OK) == 0 || access(delta, F_OK) == 0 ||
	    (!repl_mode && info.gen != 3 && info.gen != 4) || info.size != VOL ||
	    stat(vol, &st) < 0 || st.st_size != VOL)
		__builtin_trap();
	read_vol();
	for (size_t i = 0; i < VOL; i++)
		if (have[i] != old[i] && (have[i] != delta_img[i] || (!repl_mode && info.gen == 3)))
			__builtin_trap();
	if (memcmp(have, old, VOL))
		put(vol, old, VOL);
	put_delta();
	return 0;
}
