/* Unit tests for worker/engine's names, which reports, logs and dead letters use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine.h"

static void test_engine__status_names(void **state)
{
    (void)state;
    assert_string_equal(engine_status_name(ENGINE_DONE), "done");
    assert_string_equal(engine_status_name(ENGINE_RETRY), "retry");
    assert_string_equal(engine_status_name(ENGINE_DEFERRED), "deferred");
    assert_string_equal(engine_status_name(ENGINE_THROTTLED), "throttled");
    assert_string_equal(engine_status_name(ENGINE_FAILED), "failed");
    assert_string_equal(engine_status_name(ENGINE_CANCELLED), "cancelled");
    assert_string_equal(engine_status_name((enum engine_status)99), "?");
}

static void test_engine__counters_by_name(void **state)
{
    (void)state;
    struct engine_counters c = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    for (int i = 0; i < ENGINE_NCOUNTERS; i++)
        assert_int_equal(engine_counter_get(&c, i), i + 1);
    assert_string_equal(engine_counter_names[0], "tags_total");
    assert_string_equal(engine_counter_names[4], "upstream_manifest_gets");
    assert_string_equal(engine_counter_names[ENGINE_NCOUNTERS - 1], "blobs_skipped");
    assert_int_equal(engine_counter_get(&c, ENGINE_NCOUNTERS), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine__status_names),
        cmocka_unit_test(test_engine__counters_by_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
