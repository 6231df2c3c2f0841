/* fuzz_conf_repl.c - libFuzzer target for replication.cfg (see conf_roundtrip.h). */
#include "conf_roundtrip.h"

/* Jobs are zero-filled before parsing, so their bytes compare. */
static bool repl_equal(const struct clu_repl_conf *a, const struct clu_repl_conf *b)
{
	return a->n == b->n && (!a->n || !memcmp(a->items, b->items, a->n * sizeof(*a->items)));
}

CONF_FUZZER("replication.cfg", struct clu_repl_conf, clu_repl_parse, clu_repl_format, repl_equal,
	    clu_repl_conf_free)
