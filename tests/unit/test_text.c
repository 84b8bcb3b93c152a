/* Unit tests for common/text. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "text.h"

static void test_text__shown(void **state)
{
    (void)state;
    char out[TEXT_SHOWN_SIZE(8)];
    /* Spaces are shown (messages quote values); control and non-ASCII bytes are not. */
    assert_string_equal(text_shown("a b", 8, out), "a b");
    assert_string_equal(text_shown("a\tb\n\x1b[2J", 8, out), "a?b??[2J");
    assert_string_equal(text_shown("caf\xc3\xa9", 8, out), "caf??");
    assert_string_equal(text_shown("", 8, out), "");
    /* Cut at max bytes, and said so. */
    assert_string_equal(text_shown("12345678", 8, out), "12345678");
    assert_string_equal(text_shown("123456789", 8, out), "12345678...");
    assert_int_equal(strlen(out) + 1, TEXT_SHOWN_SIZE(8));
}

static void test_text__ll(void **state)
{
    (void)state;
    long long n = 7;
    assert_int_equal(text_ll("42", &n), 0);
    assert_int_equal(n, 42);
    assert_int_equal(text_ll("-1", &n), 0);
    assert_int_equal(n, -1);
    assert_int_equal(text_ll("9223372036854775807", &n), 0);
    assert_int_equal(n, LLONG_MAX);
    n = 7;
    /* Where atoll would give 12, 0 or a wrapped number, nothing is taken. */
    const char *bad[] = {"12abc", "x", "", "1.5", "9223372036854775808", "0x10", "5 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(text_ll(bad[i], &n), -1);
    assert_int_equal(text_ll(NULL, &n), -1);
    assert_int_equal(n, 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text__shown),
        cmocka_unit_test(test_text__ll),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
