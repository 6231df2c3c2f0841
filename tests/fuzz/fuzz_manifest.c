/*
 * fuzz_manifest.c - libFuzzer target for the loader of replication
 * manifests (replicate/repl_manifest.c). The input is the file. When its
 * last byte is odd, the SHA-256 trailer is recomputed first, so mutated
 * headers and hashes get past the checksum to the checks behind it.
 * The file is loaded with the volume size and generation its header
 * names, then with another size and another generation:
 *  - loaded: the file saves back byte for byte (the format is canonical),
 *    a diff over a zero volume works, and the wrong size or generation
 *    is ERR_STATE;
 *  - refused: ERR_PROTO, one line naming the file, and the same for the
 *    wrong size and generation (damage is found before either is looked at).
 * Any breach abort()s, which libFuzzer reports.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ERR_STATE openssl_ERR_STATE /* OpenSSL's typedef vs our error code */
#include <openssl/evp.h>
#undef ERR_STATE

#include "replicate/repl.h"

#define HDR 48u
#define TRAILER 32u
#define MAX_DIFF (4u << 20) /* volumes diffed after a load, at most */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[] = "/dev/shm/fuzz_manifest.XXXXXX"; /* tmpfs: saves fsync */
static char in_path[64], out_path[64];

static void cleanup(void)
{
	unlink(in_path);
	unlink(out_path);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (!mkdtemp(dir)) {
		memcpy(dir, "/tmp/fuzz_manifest.XXXXXX", sizeof("/tmp/fuzz_manifest.XXXXXX"));
		if (!mkdtemp(dir))
			abort();
	}
	snprintf(in_path, sizeof(in_path), "%s/in.manifest", dir);
	snprintf(out_path, sizeof(out_path), "%s/out.manifest", dir);
	atexit(cleanup);
	return 0;
}

static void spill(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	if (!f || (len && fwrite(buf, 1, len, f) != len) || fclose(f))
		abort();
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static bool zero_read(void *opaque, void *buf, size_t len, uint64_t off, struct err **errp)
{
	(void)opaque;
	(void)off;
	(void)errp;
	memset(buf, 0, len);
	return true;
}

static void check_refusal(struct err *e, enum err_code want)
{
	if (!e || e->code != want || !strstr(e->msg, in_path) || strchr(e->msg, '\n'))
		abort();
	err_free(e);
}

/* The loaded manifest saves back to the same bytes and diffs. */
static void check_loaded(struct repl_manifest *m, const uint8_t *file, size_t len,
			 uint64_t vol, uint64_t gen)
{
	struct err *e = NULL;
	struct tp_extent *ext = NULL;
	size_t n = 0;
	uint8_t *back;
	FILE *f;

	if (!repl_manifest_save(m, out_path, gen, &e) || e)
		abort();
	back = malloc(len + 1);
	f = fopen(out_path, "rb");
	if (!back || !f || fread(back, 1, len + 1, f) != len || memcmp(back, file, len))
		abort();
	fclose(f);
	free(back);
	if (vol > MAX_DIFF)
		return;
	/* Zeros everywhere now; a second diff finds nothing. */
	if (!repl_manifest_diff(m, zero_read, NULL, &ext, &n, &e) || e)
		abort();
	for (size_t i = 0; i < n; i++)
		if (ext[i].offset + ext[i].length > vol || (i && ext[i].offset < ext[i - 1].offset))
			abort();
	free(ext);
	if (!repl_manifest_diff(m, zero_read, NULL, &ext, &n, &e) || e || n)
		abort();
	free(ext);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *file = malloc(size ? size : 1);
	uint64_t vol = 0, gen = 0;
	struct repl_manifest *m;
	struct err *e = NULL;

	if (!file)
		return 0;
	memcpy(file, data, size);
	if (size >= HDR + TRAILER && (file[size - 1] & 1) &&
	    !EVP_Digest(file, size - TRAILER, file + size - TRAILER, NULL, EVP_sha256(), NULL))
		abort();
	if (size >= HDR) {
		vol = le64(file + 24);
		gen = le64(file + 32);
	}
	spill(in_path, file, size);

	m = repl_manifest_load(in_path, vol, gen, &e);
	if (m) {
		if (e)
			abort(); /* errp set on success */
		check_loaded(m, file, size, vol, gen);
		repl_manifest_free(m);
		if (repl_manifest_load(in_path, vol + 1, gen, &e))
			abort();
		check_refusal(e, ERR_STATE);
		e = NULL;
		if (repl_manifest_load(in_path, vol, gen - 1, &e))
			abort();
		check_refusal(e, ERR_STATE);
	} else {
		check_refusal(e, ERR_PROTO);
		e = NULL;
		if (repl_manifest_load(in_path, vol + 1, gen, &e))
			abort();
		check_refusal(e, ERR_PROTO);
		e = NULL;
		if (repl_manifest_load(in_path, vol, gen ^ 1, NULL))
			abort();
	}
	free(file);
	return 0;
}
