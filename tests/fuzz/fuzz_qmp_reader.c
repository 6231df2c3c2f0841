/*
 * fuzz_qmp_reader.c - libFuzzer target for the QMP stream reader.
 * The first byte picks a chunk size so that the fuzzer also explores how
 * messages are split across reads; the rest is the stream.
 */
#include <stddef.h>
#include <stdint.h>

#include "transport/tp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tp_jsonl r;
	size_t chunk, off = 1;

	if (size < 1)
		return 0;
	chunk = (size_t)data[0] + 1;
	tp_jsonl_init(&r, 1 << 16);
	while (off < size) {
		size_t n = size - off < chunk ? size - off : chunk;
		struct json_object *m;
		struct err *e = NULL;
		int rc;

		if (!tp_jsonl_feed(&r, data + off, n, &e)) {
			err_free(e);
			break;
		}
		off += n;
		while ((rc = tp_jsonl_next(&r, &m, &e)) > 0) {
			/* Touch the object as the client would. */
			json_object_object_get_ex(m, "event", NULL);
			json_object_put(m);
		}
		err_free(e);
		if (rc < 0)
			break;
	}
	tp_jsonl_free(&r);
	return 0;
}
