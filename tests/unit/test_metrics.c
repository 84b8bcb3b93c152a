/* Unit tests for common/metrics: the exposition text (escaped label values,
 * cumulative histogram buckets) and a bad --metrics-listen address. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static void test_metrics__sample_escapes_label_values(void **state)
{
    (void)state;
    struct buf b = BUF_INIT(METRICS_TEXT_MAX);
    metrics_family(&b, "m", "gauge", "a gauge");
    metrics_sample(&b, "m", "source", "a\"b\\c\nd", 2.5);
    metrics_sample(&b, "m", NULL, NULL, 3);
    assert_string_equal(b.data, "# HELP m a gauge\n# TYPE m gauge\n"
                                "m{source=\"a\\\"b\\\\c\\nd\"} 2.5\nm 3\n");
    buf_free(&b);
}

static void test_metrics__histogram_buckets_are_cumulative(void **state)
{
    (void)state;
    struct metrics_hist h;
    memset(&h, 0, sizeof(h));
    metrics_hist_observe(&h, 0.01);
    metrics_hist_observe(&h, 0.3);
    metrics_hist_observe(&h, 1000); /* past the last bound: +Inf only */
    struct buf b = BUF_INIT(METRICS_TEXT_MAX);
    metrics_hist_write(&b, "d", &h);
    assert_non_null(strstr(b.data, "d_bucket{le=\"0.05\"} 1\n"));
    assert_non_null(strstr(b.data, "d_bucket{le=\"0.25\"} 1\n"));
    assert_non_null(strstr(b.data, "d_bucket{le=\"0.5\"} 2\n"));
    assert_non_null(strstr(b.data, "d_bucket{le=\"120\"} 2\n"));
    assert_non_null(strstr(b.data, "d_bucket{le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(b.data, "d_sum 1000.31\n"));
    assert_non_null(strstr(b.data, "d_count 3\n"));
    buf_free(&b);
}

static void test_metrics__bad_address_named(void **state)
{
    (void)state;
    struct metrics_server *s;
    struct err e;
    assert_int_equal(metrics_server_start(&s, "9100", &e), -1);
    assert_null(s);
    assert_non_null(strstr(e.msg, "--metrics-listen '9100': not HOST:PORT"));
    assert_int_equal(metrics_server_start(&s, "127.0.0.1:99999", &e), -1);
    assert_non_null(strstr(e.msg, "'127.0.0.1:99999'"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics__sample_escapes_label_values),
        cmocka_unit_test(test_metrics__histogram_buckets_are_cumulative),
        cmocka_unit_test(test_metrics__bad_address_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
