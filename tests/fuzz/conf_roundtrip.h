/*
 * conf_roundtrip.h - the one libFuzzer harness behind every config-file
 * target. The input is the file's text (a NUL ends it, as it would the
 * parser's string). A failure must be a one-line error starting with the
 * file name; a success must format, read back equal, and format
 * identically again. Any breach abort()s, which libFuzzer reports.
 *
 *   CONF_FUZZER("storage.cfg", struct clu_storage_conf, clu_storage_parse,
 *               clu_storage_format, clu_storage_conf_equal, clu_storage_conf_free)
 *
 * FREE may be a function that does nothing, for structs that own no memory.
 */
#ifndef VMM_FUZZ_CONF_ROUNDTRIP_H
#define VMM_FUZZ_CONF_ROUNDTRIP_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/clu_conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CONF_FUZZER(FILE, TYPE, PARSE, FORMAT, EQUAL, FREE)                          \
	int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)                 \
	{                                                                            \
		static TYPE val, back; /* static: some are large */                  \
		struct err *e = NULL;                                                \
		char *text = malloc(size + 1), *fmt, *fmt2;                          \
                                                                                     \
		if (!text)                                                           \
			return 0;                                                    \
		memcpy(text, data, size);                                            \
		text[size] = '\0';                                                   \
		memset(&val, 0, sizeof(val));                                        \
		memset(&back, 0, sizeof(back));                                      \
		if (!PARSE(text, FILE, &val, &e)) {                                  \
			if (!e || strncmp(e->msg, FILE ":", strlen(FILE) + 1) ||     \
			    strchr(e->msg, '\n'))                                    \
				abort();                                             \
			err_free(e);                                                 \
			free(text);                                                  \
			return 0;                                                    \
		}                                                                    \
		if (e)                                                               \
			abort(); /* errp set on success */                           \
		fmt = FORMAT(&val, &e);                                              \
		if (!fmt || !PARSE(fmt, "formatted", &back, &e) || !EQUAL(&val, &back)) \
			abort();                                                     \
		fmt2 = FORMAT(&back, &e);                                            \
		if (!fmt2 || strcmp(fmt, fmt2))                                      \
			abort();                                                     \
		free(fmt2);                                                          \
		free(fmt);                                                           \
		free(text);                                                          \
		FREE(&val);                                                          \
		FREE(&back);                                                         \
		return 0;                                                            \
	}

#endif
