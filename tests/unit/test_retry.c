/* Unit tests for worker/retry: attempts, backoffs and waits for registries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ratelimit.h"
#include "retry.h"
#include "worker.h"

static const struct retry_policy POLICY = {
    .max_attempts = 3,
    .backoff_ms = 200,
    .backoff_max_ms = 1000,
    .registry_wait_max_ms = 60000,
};

static void test_retry__backoff_doubles_capped_with_jitter(void **state)
{
    (void)state;
    assert_int_equal(retry_backoff_ms(200, 1000, 1, 0), 200);
    assert_int_equal(retry_backoff_ms(200, 1000, 2, 0), 400);
    assert_int_equal(retry_backoff_ms(200, 1000, 3, 0), 800);
    assert_int_equal(retry_backoff_ms(200, 1000, 4, 0), 1000);
    assert_int_equal(retry_backoff_ms(200, 1000, 60, 0), 1000);
    /* Up to a quarter more, never less. */
    assert_int_equal(retry_backoff_ms(200, 1000, 1, 49), 249);
    assert_int_equal(retry_backoff_ms(200, 1000, 1, 50), 200);
    assert_int_equal(retry_backoff_ms(1000, 1000, 1, 250 + 7), 1007);
    assert_int_equal(retry_backoff_ms(3, 1000, 1, 12345), 3);
}

static void test_retry__faults_spend_attempts(void **state)
{
    (void)state;
    struct retry_decision d;
    retry_decide(&POLICY, ENGINE_RETRY, 0, 0, 0, 0, &d);
    assert_false(d.dead);
    assert_string_equal(d.why, "backoff");
    assert_int_equal(d.attempt, 1);
    assert_int_equal(d.delay_ms, 200);
    retry_decide(&POLICY, ENGINE_FAILED, 0, 1, 0, 0, &d);
    assert_false(d.dead);
    assert_int_equal(d.attempt, 2);
    assert_int_equal(d.delay_ms, 400);
    /* The third failed attempt of --max-attempts 3 is the last, a digest mismatch too. */
    retry_decide(&POLICY, ENGINE_RETRY, 0, 2, 5000, 0, &d);
    assert_true(d.dead);
    assert_int_equal(d.attempt, 3);
    assert_int_equal(d.registry_wait_ms, 5000);
}

static void test_retry__budget_and_throttle_wait_as_told(void **state)
{
    (void)state;
    struct retry_decision d;
    retry_decide(&POLICY, ENGINE_DEFERRED, 300000, 2, 0, 0, &d);
    assert_false(d.dead);
    assert_string_equal(d.why, "budget");
    assert_int_equal(d.delay_ms, 300000);
    assert_int_equal(d.attempt, 2);
    retry_decide(&POLICY, ENGINE_THROTTLED, 10, 2, 0, 0, &d);
    assert_false(d.dead);
    assert_string_equal(d.why, "backoff");
    assert_int_equal(d.delay_ms, 1000);
    assert_int_equal(d.attempt, 2);
}

/* A 429 without Retry-After from a registry with no pull budget (wait 0) backs off as an
 * outage does: growing with the job's waits, up to the cap, spending no attempt. */
static void test_retry__throttle_without_retry_after_grows(void **state)
{
    (void)state;
    struct retry_decision d;
    long long waited = 0, want[] = {200, 200, 400, 800, 1000, 1000};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        retry_decide(&POLICY, ENGINE_THROTTLED, 0, 1, waited, 0, &d);
        assert_false(d.dead);
        assert_int_equal(d.attempt, 1);
        assert_int_equal(d.delay_ms, want[i]);
        waited = d.registry_wait_ms;
    }
    retry_decide(&POLICY, ENGINE_THROTTLED, 0, 1, 60000, 0, &d);
    assert_true(d.dead);
}

/* The free HEAD the fleet sends before a counted GET, to learn a budget, answered 429: a
 * Retry-After is waited as told, Docker Hub's pull-limit 429 (its budget headers) pauses
 * 60 s, and a 429 that says not how long (another registry's) backs off as at a GET. */
static void test_retry__throttle_at_the_probe_head(void **state)
{
    (void)state;
    struct reg_result res;
    memset(&res, 0, sizeof(res));
    ratelimit_init(&res.rl);
    res.cls = REG_RATE_LIMITED;
    res.retry_after = 7;
    assert_int_equal(fleet_probe_wait_ms(&res), 7000);
    res.retry_after = 0;
    struct retry_decision d;
    long long waited = 0, want[] = {200, 200, 400, 800, 1000};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        retry_decide(&POLICY, ENGINE_THROTTLED, fleet_probe_wait_ms(&res), 1, waited, 0, &d);
        assert_false(d.dead);
        assert_int_equal(d.attempt, 1);
        assert_int_equal(d.delay_ms, want[i]);
        waited = d.registry_wait_ms;
    }
    res.rl.has_limit = res.rl.has_remaining = 1;
    assert_int_equal(fleet_probe_wait_ms(&res), 60000);
    res.cls = REG_SERVER;
    assert_int_equal(fleet_probe_wait_ms(&res), 10000);
}

/* An outage spends no attempt: delays double with the wait so far, up to the cap,
 * until the job has waited registry_wait_max_ms in all. */
static void test_retry__outage_waits_without_spending_attempts(void **state)
{
    (void)state;
    struct retry_decision d;
    long long waited = 0, want[] = {200, 200, 400, 800, 1000, 1000};
    int rounds = 0;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        retry_decide(&POLICY, ENGINE_UNAVAILABLE, 0, 2, waited, 0, &d);
        assert_false(d.dead);
        assert_string_equal(d.why, "registry");
        assert_int_equal(d.attempt, 2);
        assert_int_equal(d.delay_ms, want[i]);
        assert_int_equal(d.registry_wait_ms, waited + want[i]);
        waited = d.registry_wait_ms;
    }
    for (; !d.dead; rounds++) {
        retry_decide(&POLICY, ENGINE_UNAVAILABLE, 0, 2, waited, 0, &d);
        waited = d.registry_wait_ms;
    }
    /* 60 s of outage in 1 s steps, then the dead letter. */
    assert_int_equal(rounds, 58);
    assert_int_equal(waited, 60600);
    assert_int_equal(d.attempt, 2);
}

static void test_retry__open_breaker_sets_the_wait(void **state)
{
    (void)state;
    struct retry_decision d;
    retry_decide(&POLICY, ENGINE_UNAVAILABLE, 30000, 0, 1000, 0, &d);
    assert_false(d.dead);
    assert_string_equal(d.why, "registry");
    assert_int_equal(d.delay_ms, 30000);
    assert_int_equal(d.registry_wait_ms, 31000);
    retry_decide(&POLICY, ENGINE_UNAVAILABLE, 30000, 0, 1000, 7499, &d);
    assert_int_equal(d.delay_ms, 37499);
    retry_decide(&POLICY, ENGINE_UNAVAILABLE, 30000, 0, 60000, 0, &d);
    assert_true(d.dead);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry__backoff_doubles_capped_with_jitter),
        cmocka_unit_test(test_retry__faults_spend_attempts),
        cmocka_unit_test(test_retry__budget_and_throttle_wait_as_told),
        cmocka_unit_test(test_retry__throttle_without_retry_after_grows),
        cmocka_unit_test(test_retry__throttle_at_the_probe_head),
        cmocka_unit_test(test_retry__outage_waits_without_spending_attempts),
        cmocka_unit_test(test_retry__open_breaker_sets_the_wait),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
