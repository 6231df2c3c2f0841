/* fuzz_conf_guest.c - libFuzzer target for guest configs (see conf_roundtrip.h). */
#include "conf_roundtrip.h"

static void no_free(struct clu_guest_conf *g)
{
	(void)g;
}

CONF_FUZZER("100.conf", struct clu_guest_conf, clu_guest_parse, clu_guest_format,
	    clu_guest_conf_equal, no_free)
