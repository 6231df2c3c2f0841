/* fuzz_conf_storage.c - libFuzzer target for storage.cfg (see conf_roundtrip.h). */
#include "conf_roundtrip.h"

CONF_FUZZER("storage.cfg", struct clu_storage_conf, clu_storage_parse, clu_storage_format,
	    clu_storage_conf_equal, clu_storage_conf_free)
