/*
 * fuzz_ccconf.c - libFuzzer target for the corosync.conf model: any input
 * either fails with one-line error or parses; what parses formats, and the
 * formatted text parses back to an equal model and formats identically.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/clu_ccconf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	struct err *e = NULL;
	struct clu_ccconf *c, *back;
	char *t1, *t2;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	c = clu_ccconf_parse(text, "fuzz.conf", &e);
	free(text);
	if (!c) {
		if (!e || strchr(e->msg, '\n'))
			abort(); /* a failure names itself in one line */
		err_free(e);
		return 0;
	}
	t1 = clu_ccconf_format(c, &e);
	if (!t1)
		abort(); /* whatever parses must format */
	back = clu_ccconf_parse(t1, "formatted.conf", &e);
	if (!back || !clu_ccconf_equal(c, back))
		abort();
	t2 = clu_ccconf_format(back, &e);
	if (!t2 || strcmp(t1, t2))
		abort();
	free(t1);
	free(t2);
	clu_ccconf_free(back);
	clu_ccconf_free(c);
	return 0;
}
