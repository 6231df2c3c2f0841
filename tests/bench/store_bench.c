/*
 * store_bench.c - measures the replicated store through a vmmd:
 *   store_bench write SOCKET N PREFIX [VALUE_BYTES]   sequential writes: p50/p99 latency, writes/s
 *   store_bench fill SOCKET N PREFIX                  N guest-config-sized (300 B) writes
 *   store_bench load DBFILE                           open a store copy and read every entry
 * Prints one line of key=value figures for the bench script.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/clu.h"
#include "common/util.h"

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static char *value_of(size_t n)
{
	char *v = malloc(n + 1);
	for (size_t i = 0; i < n; i++)
		v[i] = i % 64 == 63 ? '\n' : (char)('a' + i % 26);
	v[n] = '\0';
	return v;
}

static int do_write(const char *sock, long n, const char *prefix, size_t vbytes)
{
	struct err *e = NULL;
	struct clu_client *c = clu_client_open(sock, &e);
	int64_t *lat = calloc((size_t)n, sizeof(*lat)), t0;
	char key[128], *val = value_of(vbytes);

	if (!c) {
		fprintf(stderr, "store_bench: %s\n", e->msg);
		return 1;
	}
	t0 = now_us();
	for (long i = 0; i < n; i++) {
		struct clu_op op = { .kind = CLU_OP_PUT, .key = key, .value = val, .if_version = -1 };
		int64_t s = now_us();

		snprintf(key, sizeof(key), "%s/%ld", prefix, i);
		if (!clu_client_write(c, &op, NULL, &e)) {
			fprintf(stderr, "store_bench: write %ld: %s\n", i, e->msg);
			return 1;
		}
		lat[i] = now_us() - s;
	}
	double secs = (double)(now_us() - t0) / 1e6;
	qsort(lat, (size_t)n, sizeof(*lat), cmp64);
	printf("n=%ld p50_us=%" PRId64 " p99_us=%" PRId64 " writes_per_s=%.0f\n", n, lat[n / 2],
	       lat[(n * 99) / 100], (double)n / secs);
	clu_client_close(c);
	free(lat);
	free(val);
	return 0;
}

/* Fills the store with N guest-config-sized entries, one write at a time. */
static int do_fill(const char *sock, long n, const char *prefix)
{
	struct err *e = NULL;
	struct clu_client *c = clu_client_open(sock, &e);
	char key[128], val[512], pad[200];
	int64_t t0 = now_us();

	if (!c) {
		fprintf(stderr, "store_bench: %s\n", e->msg);
		return 1;
	}
	for (long i = 0; i < n; i++) {
		struct clu_op op = { .kind = CLU_OP_PUT, .key = key, .value = val, .if_version = -1 };

		/* A real guest record (vmmd validates it), about 300 bytes. */
		memset(pad, 'x', sizeof(pad) - 1);
		pad[sizeof(pad) - 1] = '\0';
		snprintf(key, sizeof(key), "%s/%ld", prefix, 100 + i);
		snprintf(val, sizeof(val),
			 "node: bench\n# %s\nname: vm%ld\nmemory: 1024\ncores: 2\n"
			 "virtio0: local:%ld/vm-%ld-disk-0.raw,size=32G\n",
			 pad + 120, 100 + i, 100 + i, 100 + i);
		if (!clu_client_write(c, &op, NULL, &e)) {
			fprintf(stderr, "store_bench: fill %ld: %s\n", i, e->msg);
			return 1;
		}
	}
	printf("n=%ld secs=%.3f\n", n, (double)(now_us() - t0) / 1e6);
	clu_client_close(c);
	return 0;
}

static bool count(const char *k, const char *v, uint64_t ver, void *opaque)
{
	(void)k;
	(void)ver;
	*(size_t *)opaque += strlen(v);
	return true;
}

static int do_load(const char *db)
{
	struct err *e = NULL;
	int64_t t0 = now_us();
	struct clu_store *s = clu_store_open(db, &e);
	size_t bytes = 0;

	if (!s || !clu_store_list(s, "", count, &bytes, &e)) {
		fprintf(stderr, "store_bench: %s\n", e->msg);
		return 1;
	}
	printf("load_ms=%.1f bytes=%zu version=%" PRIu64 "\n", (double)(now_us() - t0) / 1000.0,
	       bytes, clu_store_version(s));
	clu_store_close(s);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 5 && !strcmp(argv[1], "write"))
		return do_write(argv[2], atol(argv[3]), argv[4], argc > 5 ? (size_t)atol(argv[5]) : 64);
	if (argc == 5 && !strcmp(argv[1], "fill"))
		return do_fill(argv[2], atol(argv[3]), argv[4]);
	if (argc == 3 && !strcmp(argv[1], "load"))
		return do_load(argv[2]);
	fprintf(stderr, "usage: store_bench write SOCK N PREFIX [BYTES] | fill SOCK N PREFIX | load DB\n");
	return 2;
}
