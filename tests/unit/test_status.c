/* Unit tests for coordinator/status's helpers (durations, the --health rule) and the JSON
 * helpers the coordinator's reports share (coord.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coord.h"

static void dur(long long ms, const char *want)
{
    char out[32];
    coord_status_duration(ms, out, sizeof(out));
    assert_string_equal(out, want);
}

static void test_status__duration(void **state)
{
    (void)state;
    dur(-5000, "0s");
    dur(999, "0s");
    dur(42000, "42s");
    dur(60000, "1m00s");
    dur(187000, "3m07s");
    dur(3600000, "1h00m");
    dur(21600000, "6h00m");
    dur(7500000, "2h05m");
    dur(97200000, "1d03h");
}

static void test_status__health(void **state)
{
    (void)state;
    char why[256];
    const long long now = 1800000000000LL, interval = 21600;
    assert_true(coord_status_health(0, 1, 0, now, interval, why, sizeof(why)));
    assert_non_null(strstr(why, "holds the lease"));
    assert_false(coord_status_health(0, 0, 0, now, interval, why, sizeof(why)));
    assert_non_null(strstr(why, "no run has finished"));
    /* Finished 11h59m ago with a 6h interval: within 2 x interval. */
    assert_true(coord_status_health(0, 0, now - 43140000, now, interval, why, sizeof(why)));
    assert_non_null(strstr(why, "11h59m ago"));
    assert_false(coord_status_health(0, 0, now - 43200000, now, interval, why, sizeof(why)));
    assert_non_null(strstr(why, "more than 2 x --interval"));
    /* A lease beats an old run. */
    assert_true(coord_status_health(0, 1, now - 99 * 43200000LL, now, interval, why, sizeof(why)));
    /* A stalled run is not healthy, lease or not. */
    assert_false(coord_status_health(3, 1, now - 1000, now, interval, why, sizeof(why)));
    assert_non_null(strstr(why, "3 jobs of the current run have no job queued"));
}

/* A Redis hash as JSON: numbers where the text is a whole one, strings otherwise. */
static void test_status__json_of_redis_fields(void **state)
{
    (void)state;
    const char *items[] = {"jobs_total", "12", "commit", "0123abc", "error", "12 jobs lost",
                           "neg", "-3", "big", "99999999999999999999", "empty", ""};
    json_t *o = coord_json_fields((char *const *)items, sizeof(items) / sizeof(items[0]));
    assert_int_equal(coord_json_int(o, "jobs_total"), 12);
    assert_int_equal(coord_json_int(o, "neg"), -3);
    assert_string_equal(json_string_value(json_object_get(o, "commit")), "0123abc");
    assert_string_equal(json_string_value(json_object_get(o, "error")), "12 jobs lost");
    assert_string_equal(json_string_value(json_object_get(o, "big")), "99999999999999999999");
    assert_string_equal(json_string_value(json_object_get(o, "empty")), "");
    /* Not a number, or absent: 0. */
    assert_int_equal(coord_json_int(o, "commit"), 0);
    assert_int_equal(coord_json_int(o, "nosuch"), 0);
    assert_int_equal(coord_json_int(NULL, "jobs_total"), 0);
    json_decref(o);
}

static void *no_memory(size_t n)
{
    (void)n;
    return NULL;
}

/* JSON text for Redis, or an error: never NULL passed on as a value. */
static void test_status__json_text_or_error(void **state)
{
    (void)state;
    struct err e;
    json_t *o = json_pack("{s:[s]}", "repository", "alpine");
    char *t = coord_json_text(o, &e);
    assert_string_equal(t, "{\"repository\":[\"alpine\"]}");
    free(t);
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    json_set_alloc_funcs(no_memory, f);
    t = coord_json_text(o, &e);
    json_set_alloc_funcs(m, f);
    assert_null(t);
    assert_string_equal(e.msg, "jansson cannot write it as JSON");
    assert_null(coord_json_text(NULL, &e));
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status__duration),
        cmocka_unit_test(test_status__health),
        cmocka_unit_test(test_status__json_of_redis_fields),
        cmocka_unit_test(test_status__json_text_or_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
