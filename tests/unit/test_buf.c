/* Unit tests for common/buf. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"

static void test_buf__bounded(void **state)
{
    (void)state;
    struct buf b = BUF_INIT(8);
    assert_int_equal(buf_puts(&b, "abcd"), 0);
    assert_int_equal(buf_printf(&b, "%d", 1234), 0);
    assert_string_equal(b.data, "abcd1234");
    assert_int_equal(buf_append(&b, "x", 1), -1);
    assert_int_equal(buf_printf(&b, "%s", "y"), -1);
    assert_int_equal(b.len, 8);
    char *s = buf_steal(&b);
    assert_string_equal(s, "abcd1234");
    assert_null(b.data);
    free(s);
    buf_free(&b);
}

static void test_buf__grows_resets_and_steals_empty(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1 << 20);
    char *s = buf_steal(&b); /* never NULL */
    assert_string_equal(s, "");
    free(s);
    char chunk[1000];
    memset(chunk, 'z', sizeof(chunk));
    for (int i = 0; i < 100; i++)
        assert_int_equal(buf_append(&b, chunk, sizeof(chunk)), 0);
    assert_int_equal(b.len, 100000);
    assert_true(b.cap > b.len);
    assert_int_equal(b.data[b.len], '\0');
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(buf_append(&b, "ab\0c", 4), 0); /* bytes, not a string */
    assert_int_equal(b.len, 4);
    assert_int_equal(memcmp(b.data, "ab\0c", 5), 0);
    buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf__bounded),
        cmocka_unit_test(test_buf__grows_resets_and_steals_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
