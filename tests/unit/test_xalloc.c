/* Unit tests for common/xalloc. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>

#include "xalloc.h"

static void test_xalloc__strings(void **state)
{
    (void)state;
    char *s = xstrndup("abcdef", 3);
    assert_string_equal(s, "abc");
    free(s);
    s = xstrndup("ab", 10);
    assert_string_equal(s, "ab");
    free(s);
    s = xasprintf("%s-%d", "run", 7);
    assert_string_equal(s, "run-7");
    free(s);
    void *p = xmalloc(0); /* never NULL, even for nothing */
    assert_non_null(p);
    free(p);
}

/* Out of memory in jansson is xmalloc's: it allocates through it. */
static void test_xalloc__jansson_allocates_through_xmalloc(void **state)
{
    (void)state;
    json_malloc_t m;
    json_free_t f;
    xalloc_libraries();
    json_get_alloc_funcs(&m, &f);
    assert_true(m == xmalloc);
    assert_true(f == free);
    json_t *o = json_pack("{s:s}", "a", "b");
    assert_string_equal(json_string_value(json_object_get(o, "a")), "b");
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xalloc__strings),
        cmocka_unit_test(test_xalloc__jansson_allocates_through_xmalloc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
