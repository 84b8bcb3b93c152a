/* Unit tests for common/strv. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "strv.h"
#include "xalloc.h"

static void test_strv__push_grows_and_free_empties(void **state)
{
    (void)state;
    struct strv s = STRV_INIT;
    char name[16];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof(name), "s%d", i);
        strv_push(&s, xstrdup(name));
    }
    assert_int_equal(s.n, 100);
    assert_string_equal(s.v[0], "s0");
    assert_string_equal(s.v[99], "s99");
    strv_free(&s);
    assert_null(s.v);
    assert_int_equal(s.n, 0);
    /* empty and reusable */
    strv_push(&s, xstrdup("again"));
    assert_int_equal(s.n, 1);
    strv_free(&s);
    strv_free(&s);
}

static void test_strv__copy_has_sort_uniq(void **state)
{
    (void)state;
    struct strv s = STRV_INIT, c;
    const char *in[] = {"b", "a", "c", "a", "b"};
    for (size_t i = 0; i < 5; i++)
        strv_push(&s, xstrdup(in[i]));
    strv_copy(&c, &s);
    assert_int_equal(c.n, 5);
    assert_ptr_not_equal(c.v[0], s.v[0]);
    assert_true(strv_has(&c, "c"));
    assert_false(strv_has(&c, "d"));
    assert_false(strv_has(&c, "")); /* no prefix matching */
    strv_sort_uniq(&c);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.v[0], "a");
    assert_string_equal(c.v[1], "b");
    assert_string_equal(c.v[2], "c");
    assert_int_equal(s.n, 5); /* the source is untouched */
    strv_free(&c);
    strv_free(&s);
}

static void test_strv__free_array(void **state)
{
    (void)state;
    char **v = xcalloc(3, sizeof(char *));
    v[0] = xstrdup("x");
    v[1] = xstrdup("y");
    strv_free_array(v, 2);    /* v[2] unused */
    strv_free_array(NULL, 5); /* nothing to free */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strv__push_grows_and_free_empties),
        cmocka_unit_test(test_strv__copy_has_sort_uniq),
        cmocka_unit_test(test_strv__free_array),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
