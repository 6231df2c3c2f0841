/* fuzz_conf_datacenter.c - libFuzzer target for datacenter.cfg (see conf_roundtrip.h). */
#include "conf_roundtrip.h"

static void no_free(struct clu_datacenter *d)
{
	(void)d;
}

CONF_FUZZER("datacenter.cfg", struct clu_datacenter, clu_datacenter_parse, clu_datacenter_format,
	    clu_datacenter_equal, no_free)
