/*
 * fuzz_conf_repl.c - libFuzzer target for the replication.cfg parser.
 * The input is the file's text (a NUL ends it, as it would the parser's
 * string). Failures must be one-line errors naming the file; successes
 * must format, and the text must read back equal and format identically.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/clu_conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_error(struct err *e)
{
	if (!e || strncmp(e->msg, "replication.cfg:", 16) || strchr(e->msg, '\n'))
		abort();
	err_free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct clu_repl_conf sc = { 0 }, back = { 0 };
	struct err *e = NULL;
	char *text = malloc(size + 1), *fmt, *fmt2;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (!clu_repl_parse(text, "replication.cfg", &sc, &e)) {
		check_error(e);
		free(text);
		return 0;
	}
	if (e)
		abort(); /* set on success */
	fmt = clu_repl_format(&sc, &e);
	if (!fmt)
		abort();
	if (!clu_repl_parse(fmt, "formatted", &back, &e) || back.n != sc.n ||
	    (sc.n && memcmp(back.items, sc.items, sc.n * sizeof(*sc.items))))
		abort();
	fmt2 = clu_repl_format(&back, &e);
	if (!fmt2 || strcmp(fmt, fmt2))
		abort();
	free(fmt2);
	free(fmt);
	free(text);
	clu_repl_conf_free(&sc);
	clu_repl_conf_free(&back);
	return 0;
}
