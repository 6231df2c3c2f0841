/*
 * fuzz_store_ops.c - libFuzzer target for store ops as they arrive from
 * the cluster: each input line is an op in its JSON form; both "nodes"
 * (two in-memory stores) apply every line, and must agree on every result
 * and end with equal checksums. Catches non-determinism and crashes on
 * hostile ops.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/clu.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void run(struct clu_store *a, struct clu_store *b, const char *line)
{
	struct json_object *o = json_tokener_parse(line);
	struct clu_op op;
	struct err *e = NULL, *ea = NULL, *eb = NULL;

	if (o && clu_op_from_json(o, &op, &e)) {
		bool ra = clu_store_apply(a, &op, &ea), rb = clu_store_apply(b, &op, &eb);
		if (ra != rb)
			abort();
	}
	err_free(e);
	err_free(ea);
	err_free(eb);
	json_object_put(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct clu_store *a = clu_store_open(":memory:", NULL);
	struct clu_store *b = clu_store_open(":memory:", NULL);
	char *text = malloc(size + 1), *line, *save = NULL;

	if (!a || !b || !text)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		run(a, b, line);
	if (clu_store_checksum(a) != clu_store_checksum(b))
		abort();
	free(text);
	clu_store_close(a);
	clu_store_close(b);
	return 0;
}
