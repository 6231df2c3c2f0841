/* test_util.c - error rules (first error wins) and the parsers of user
 * input (numbers and sizes) with errors that name the bad value. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

static void test_first_error_wins(void **state)
{
	struct err *e = NULL, *other = NULL;

	(void)state;
	assert_false(err_set(&e, ERR_TIMEOUT, "target QEMU exited (status %d)", 1));
	err_set(&e, ERR_IO, "cleanup failed");
	assert_int_equal(e->code, ERR_TIMEOUT);
	assert_string_equal(e->msg, "target QEMU exited (status 1)");
	err_prefix(e, "migration aborted");
	assert_string_equal(e->msg, "migration aborted: target QEMU exited (status 1)");
	err_set(&other, ERR_IO, "late");
	err_propagate(&e, &other); /* e already set: other is dropped */
	assert_null(other);
	assert_string_equal(e->msg, "migration aborted: target QEMU exited (status 1)");
	err_free(e);
	err_set(NULL, ERR_IO, "discarded"); /* NULL errp is allowed */
	e = NULL;
	err_set_errno(&e, ENOENT, "open '%s'", "/x");
	assert_int_equal(e->errnum, ENOENT);
	assert_string_equal(e->msg, "open '/x': No such file or directory");
	err_free(e);
	e = NULL;
	err_set_qmp(&e, "GenericError", "boom", "QEMU refused '%s'", "migrate");
	assert_string_equal(e->qmp_class, "GenericError");
	assert_string_equal(e->msg, "QEMU refused 'migrate': boom");
	assert_string_equal(err_code_name(e->code), "qmp");
	err_free(e);
}

static void test_parse_u64(void **state)
{
	struct err *e = NULL;
	uint64_t v = 0;

	(void)state;
	assert_true(util_parse_u64("42", 1, 100, "cpus", &v, &e));
	assert_int_equal(v, 42);
	assert_false(util_parse_u64("0", 1, 100, "cpus", &v, &e));
	assert_string_equal(e->msg, "invalid cpus '0': must be between 1 and 100");
	err_free(e);
	e = NULL;
	static const char *const bad[] = { "", "-1", " 1", "1 ", "1x", "0x10",
					   "99999999999999999999999" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_false(util_parse_u64(bad[i], 0, UINT64_MAX, "n", &v, &e));
		assert_non_null(strstr(e->msg, bad[i]));
		err_free(e);
		e = NULL;
	}
	assert_int_equal(v, 42); /* outputs are written only on success */
}

static void test_parse_size(void **state)
{
	static const struct { const char *s; uint64_t unit, want; } ok[] = {
		{ "512", 1ULL << 20, 512ULL << 20 },
		{ "1048568K", 1, 1048568ULL << 10 },
		{ "1G", 1, 1ULL << 30 },
		{ "2GiB", 1, 2ULL << 30 },
		{ "3m", 1, 3ULL << 20 },
		{ "4096b", 1ULL << 20, 4096 },
		{ "1T", 1, 1ULL << 40 },
	};
	struct err *e = NULL;
	uint64_t v;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_true(util_parse_size(ok[i].s, ok[i].unit, 0, UINT64_MAX, "size", &v, &e));
		assert_int_equal(v, ok[i].want);
	}
	assert_false(util_parse_size("12x", 1, 0, UINT64_MAX, "memory size", &v, &e));
	assert_string_equal(e->msg, "invalid memory size '12x': unknown unit");
	err_free(e);
	e = NULL;
	assert_false(util_parse_size("1KiBs", 1, 0, UINT64_MAX, "memory size", &v, &e));
	err_free(e);
	e = NULL;
	assert_false(util_parse_size("8", 1ULL << 20, 16ULL << 20, 1ULL << 40, "memory size",
				     &v, &e));
	assert_string_equal(e->msg,
			    "invalid memory size '8': must be between 16.0 MiB and 1.00 TiB");
	err_free(e);
	e = NULL;
	assert_false(util_parse_size("99999999999T", 1, 0, UINT64_MAX, "size", &v, &e));
	assert_non_null(strstr(e->msg, "too large"));
	err_free(e);
}

static void test_fmt_bytes(void **state)
{
	char b[32];

	(void)state;
	assert_string_equal(util_fmt_bytes(0, b, sizeof(b)), "0 B");
	assert_string_equal(util_fmt_bytes(1536, b, sizeof(b)), "1.50 KiB");
	assert_string_equal(util_fmt_bytes(1ULL << 30, b, sizeof(b)), "1.00 GiB");
	assert_string_equal(util_fmt_bytes(300ULL << 20, b, sizeof(b)), "300.0 MiB");
}

/* RFC 4648 test vectors both ways, every length of a binary buffer round
 * trip, and bad input refused with where it went wrong. */
static void test_base64(void **state)
{
	static const char *const vec[][2] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
	};
	static const char *const bad[] = { "Zg=", "Zg=a", "Z===", "Zm9v!A==", "=Zm9", "Zg==Zg==" };
	uint8_t bin[300], back[300];
	char enc[420], dec[16];
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
		assert_int_equal(util_base64_encode(vec[i][0], strlen(vec[i][0]), enc),
				 strlen(vec[i][1]));
		assert_string_equal(enc, vec[i][1]);
		assert_true(util_base64_decode(vec[i][1], dec, sizeof(dec), &n, NULL));
		assert_int_equal(n, strlen(vec[i][0]));
		assert_memory_equal(dec, vec[i][0], n);
	}
	for (size_t i = 0; i < sizeof(bin); i++)
		bin[i] = (uint8_t)(i * 37 + 11);
	for (size_t len = 0; len <= sizeof(bin); len++) {
		util_base64_encode(bin, len, enc);
		assert_true(util_base64_decode(enc, back, sizeof(back), &n, NULL));
		assert_int_equal(n, len);
		assert_memory_equal(back, bin, len);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct err *e = NULL;

		assert_false(util_base64_decode(bad[i], dec, sizeof(dec), &n, &e));
		assert_non_null(e);
		assert_int_equal(e->code, ERR_INVAL);
		err_free(e);
	}
	/* No room: refused, not overrun. */
	{
		struct err *e = NULL;

		assert_false(util_base64_decode("Zm9vYmFy", dec, 5, &n, &e));
		assert_non_null(strstr(e->msg, "longer than 5"));
		err_free(e);
	}
}

/* The fault matrices' knob lingers only at the point it names, and only
 * when set: production runs never sleep. */
static void test_test_delay(void **state)
{
	int64_t t0;

	(void)state;
	unsetenv("VMM_TEST_PHASE_DELAY");
	t0 = util_now_ms();
	util_test_delay("repl-open");
	assert_true(util_now_ms() - t0 < 40);
	setenv("VMM_TEST_PHASE_DELAY", "repl-open:60", 1);
	t0 = util_now_ms();
	util_test_delay("repl-ope");
	util_test_delay("repl-open2");
	util_test_delay("repl-stream");
	assert_true(util_now_ms() - t0 < 40);
	t0 = util_now_ms();
	util_test_delay("repl-open");
	assert_true(util_now_ms() - t0 >= 60);
	setenv("VMM_TEST_PHASE_DELAY", "repl-open", 1); /* no colon: nothing */
	t0 = util_now_ms();
	util_test_delay("repl-open");
	assert_true(util_now_ms() - t0 < 40);
	unsetenv("VMM_TEST_PHASE_DELAY");
}

/* A peer's word quoted in a message: cut, and nothing that steers a
 * terminal or splits a log line. */
static void test_printable(void **state)
{
	char b[8];

	(void)state;
	assert_string_equal(util_printable("hello", b, sizeof(b)), "hello");
	assert_string_equal(util_printable("a\nb\x1b[2Jc", b, sizeof(b)), "a?b?...");
	assert_string_equal(util_printable("abcdefg", b, sizeof(b)), "abcdefg");
	assert_string_equal(util_printable("abcdefgh", b, sizeof(b)), "abcd...");
	assert_string_equal(util_printable("\xc3\xa9", b, sizeof(b)), "??");
	assert_string_equal(util_printable(NULL, b, sizeof(b)), "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_error_wins),
		cmocka_unit_test(test_parse_u64),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_fmt_bytes),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_test_delay),
		cmocka_unit_test(test_printable),
	};
	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
