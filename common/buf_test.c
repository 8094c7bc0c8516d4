/*
 * buf_test.c: unit tests of buf.c: appends, formatting, the maximum (and that a
 * failed append leaves the buffer unchanged), reset and buf_take. Run by ctest.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"

static void
buf_test_append(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 0);
	assert_null(b.data);
	assert_int_equal(b.max, BUF_DEFAULT_MAX);
	assert_int_equal(buf_puts(&b, "hello"), 0);
	assert_int_equal(buf_putc(&b, ','), 0);
	assert_int_equal(buf_append(&b, " world", 6), 0);
	assert_int_equal(b.len, 12);
	assert_string_equal(b.data, "hello, world");
	assert_true(b.cap > b.len);
	buf_fini(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	buf_fini(&b); /* twice is fine */
}

static void
buf_test_binary(void **state)
{
	struct buf b;
	const char bin[] = {'a', '\0', 'b', '\0'};

	(void)state;
	buf_init(&b, 64);
	assert_int_equal(buf_append(&b, bin, sizeof(bin)), 0);
	assert_int_equal(b.len, 4);
	assert_memory_equal(b.data, bin, 4);
	assert_int_equal(b.data[4], '\0');
	/* Zero-length append still leaves a valid string. */
	buf_reset(&b);
	assert_int_equal(buf_append(&b, NULL, 0), 0);
	assert_string_equal(b.data, "");
	buf_fini(&b);
}

static void
buf_test_growth(void **state)
{
	struct buf b;
	char want[16];

	(void)state;
	buf_init(&b, 1 << 20);
	for (int i = 0; i < 10000; i++)
		assert_int_equal(buf_printf(&b, "%04d,", i % 10000), 0);
	assert_int_equal(b.len, 50000);
	assert_int_equal(strlen(b.data), 50000);
	assert_memory_equal(b.data, "0000,0001,0002,", 15);
	snprintf(want, sizeof(want), "%04d,", 9999);
	assert_memory_equal(b.data + 49995, want, 5);
	buf_fini(&b);
}

static void
buf_test_max(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 8);
	assert_int_equal(buf_puts(&b, "1234567"), 0);
	assert_int_equal(buf_puts(&b, "89"), ERR_TOOBIG);
	assert_int_equal(b.len, 7);
	assert_string_equal(b.data, "1234567");
	assert_int_equal(buf_putc(&b, '8'), 0);
	assert_string_equal(b.data, "12345678");
	assert_int_equal(buf_putc(&b, '9'), ERR_TOOBIG);
	assert_int_equal(buf_append(&b, "x", 1), ERR_TOOBIG);
	assert_int_equal(buf_printf(&b, "%d", 1), ERR_TOOBIG);
	assert_int_equal(b.len, 8);
	assert_string_equal(b.data, "12345678");
	/* Empty appends at the limit are fine. */
	assert_int_equal(buf_append(&b, "", 0), 0);
	assert_int_equal(buf_printf(&b, "%s", ""), 0);
	assert_int_equal(b.len, 8);
	/* Never holds more than max plus the NUL. */
	assert_true(b.cap <= 9);
	buf_fini(&b);

	/* A single append bigger than the limit, on an empty buffer. */
	buf_init(&b, 4);
	assert_int_equal(buf_puts(&b, "hello"), ERR_TOOBIG);
	assert_int_equal(b.len, 0);
	assert_int_equal(buf_printf(&b, "%s", "hello"), ERR_TOOBIG);
	assert_int_equal(b.len, 0);
	assert_int_equal(buf_printf(&b, "%s", "hell"), 0);
	assert_string_equal(b.data, "hell");
	buf_fini(&b);
}

static void
buf_test_printf_unchanged_on_fail(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 10);
	assert_int_equal(buf_printf(&b, "%s=%d", "ab", 12), 0);
	assert_string_equal(b.data, "ab=12");
	assert_int_equal(buf_printf(&b, "%s", "123456"), ERR_TOOBIG);
	assert_string_equal(b.data, "ab=12");
	assert_int_equal(b.len, 5);
	assert_int_equal(buf_printf(&b, "%s", "12345"), 0);
	assert_string_equal(b.data, "ab=1212345");
	buf_fini(&b);
}

static void
buf_test_reset(void **state)
{
	struct buf b;
	char *before;

	(void)state;
	buf_init(&b, 100);
	assert_int_equal(buf_puts(&b, "some text"), 0);
	before = b.data;
	buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_ptr_equal(b.data, before);
	assert_string_equal(b.data, "");
	assert_int_equal(buf_puts(&b, "new"), 0);
	assert_string_equal(b.data, "new");
	buf_fini(&b);
	/* reset of a never-used buffer */
	buf_init(&b, 100);
	buf_reset(&b);
	assert_null(b.data);
	buf_fini(&b);
}

static void
buf_test_take(void **state)
{
	struct buf b;
	char *s;

	(void)state;
	buf_init(&b, 100);
	s = buf_take(&b);
	assert_non_null(s);
	assert_string_equal(s, "");
	free(s);

	assert_int_equal(buf_puts(&b, "owned"), 0);
	s = buf_take(&b);
	assert_string_equal(s, "owned");
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
	/* The buffer can be used again, with the same maximum. */
	assert_int_equal(b.max, 100);
	assert_int_equal(buf_puts(&b, "again"), 0);
	assert_string_equal(b.data, "again");
	assert_string_equal(s, "owned");
	free(s);
	buf_fini(&b);
}

static void
buf_test_zeroed_struct(void **state)
{
	struct buf b = {0};

	(void)state;
	/* max 0 in a zeroed struct means the default maximum. */
	assert_int_equal(buf_puts(&b, "x"), 0);
	assert_string_equal(b.data, "x");
	buf_fini(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(buf_test_append),
	    cmocka_unit_test(buf_test_binary),
	    cmocka_unit_test(buf_test_growth),
	    cmocka_unit_test(buf_test_max),
	    cmocka_unit_test(buf_test_printf_unchanged_on_fail),
	    cmocka_unit_test(buf_test_reset),
	    cmocka_unit_test(buf_test_take),
	    cmocka_unit_test(buf_test_zeroed_struct),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
