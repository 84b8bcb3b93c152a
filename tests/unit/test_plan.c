/* Unit tests for coordinator/plan's arithmetic: the counted-GET range of
 * one upstream digest and the budget verdict. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "coord.h"
#include "ratelimit.h"

static void gets(int has, int index, int rewrite, size_t nplat, long long lo, long long hi)
{
    long long min = -1, max = -1;
    coord_plan_gets(has, index, rewrite, nplat, &min, &max);
    assert_int_equal(min, lo);
    assert_int_equal(max, hi);
}

static void test_plan__gets(void **state)
{
    (void)state;
    gets(1, 1, 0, 8, 0, 0);  /* the target has it: read from the target, free */
    gets(0, 1, 0, 8, 1, 17); /* index + image and attestation per platform */
    gets(0, 1, 0, 1, 1, 3);
    gets(0, 0, 0, 8, 1, 1); /* a single image manifest: no children */
    gets(1, 1, 1, 2, 1, 5); /* rewrite: the upstream index is always read */
    gets(0, 1, 1, 2, 1, 5);
}

static struct ratelimit_info rl_with(int has_remaining, long remaining)
{
    struct ratelimit_info rl;
    ratelimit_init(&rl);
    rl.has_limit = 2;
    rl.limit = 100;
    rl.limit_window = 21600;
    rl.has_remaining = has_remaining;
    rl.remaining = remaining;
    return rl;
}

static void test_plan__verdict(void **state)
{
    (void)state;
    struct ratelimit_info rl = rl_with(2, 50), none, no_rem = rl_with(0, 0);
    ratelimit_init(&none);
    assert_string_equal(coord_plan_verdict(1, &rl, 10, 50), "fits");
    assert_string_equal(coord_plan_verdict(1, &rl, 10, 51), "may_exceed");
    assert_string_equal(coord_plan_verdict(1, &rl, 50, 90), "may_exceed");
    assert_string_equal(coord_plan_verdict(1, &rl, 51, 90), "exceeds");
    assert_string_equal(coord_plan_verdict(1, NULL, 5, 9), "unlimited");
    assert_string_equal(coord_plan_verdict(1, &none, 5, 9), "unlimited");
    assert_string_equal(coord_plan_verdict(1, &no_rem, 5, 9), "unknown");
    assert_string_equal(coord_plan_verdict(0, NULL, 5, 9), "unknown");
    /* Nothing to fetch fits whatever upstream said. */
    assert_string_equal(coord_plan_verdict(0, NULL, 0, 0), "fits");
    struct ratelimit_info empty = rl_with(2, 0);
    assert_string_equal(coord_plan_verdict(1, &empty, 0, 0), "fits");
    assert_string_equal(coord_plan_verdict(1, &empty, 1, 3), "exceeds");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan__gets),
        cmocka_unit_test(test_plan__verdict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
