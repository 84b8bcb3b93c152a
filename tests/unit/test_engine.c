/* Unit tests for worker/engine's names, which reports, logs and dead letters use, and for
 * what a registry's answer means for a job. */
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
    assert_string_equal(engine_status_name(ENGINE_UNAVAILABLE), "unavailable");
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

/* An outage waits, a fault of the job counts, a budget event pauses. */
static void test_engine__status_of_registry_answers(void **state)
{
    (void)state;
    static const struct {
        enum reg_class cls;
        long retry_after;
        enum engine_status want;
        long wait_ms;
    } cases[] = {
        {REG_OK, -1, ENGINE_DONE, 0},
        {REG_NETWORK, -1, ENGINE_UNAVAILABLE, 0},
        {REG_SERVER, -1, ENGINE_UNAVAILABLE, 0},
        {REG_TLS, -1, ENGINE_FAILED, 0},
        {REG_DIGEST_MISMATCH, -1, ENGINE_RETRY, 0},
        {REG_NOT_FOUND, -1, ENGINE_FAILED, 0},
        {REG_UNAUTHORIZED, -1, ENGINE_FAILED, 0},
        {REG_DENIED, -1, ENGINE_FAILED, 0},
        {REG_PROTOCOL, -1, ENGINE_FAILED, 0},
        {REG_TOO_LARGE, -1, ENGINE_FAILED, 0},
        {REG_INVALID, -1, ENGINE_FAILED, 0},
        {REG_RATE_LIMITED, 7, ENGINE_THROTTLED, 7000},
        {REG_RATE_LIMITED, -1, ENGINE_DEFERRED, 300000},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct reg_result res = {.cls = cases[i].cls, .retry_after = cases[i].retry_after};
        long wait_ms = -1;
        assert_int_equal(engine_status_of(&res, &wait_ms), cases[i].want);
        assert_int_equal(wait_ms, cases[i].wait_ms);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine__status_names),
        cmocka_unit_test(test_engine__counters_by_name),
        cmocka_unit_test(test_engine__status_of_registry_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
