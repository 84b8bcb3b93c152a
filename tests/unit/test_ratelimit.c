/* Unit tests for common/ratelimit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ratelimit.h"

static int hdr(struct ratelimit_info *rl, const char *name, const char *value)
{
    return ratelimit_header(rl, name, value, strlen(value));
}

static void test_ratelimit__values(void **state)
{
    (void)state;
    long c, w;
    assert_int_equal(ratelimit_parse_value("100;w=21600", 11, &c, &w), 0);
    assert_int_equal(c, 100);
    assert_int_equal(w, 21600);
    assert_int_equal(ratelimit_parse_value(" 76 ; w=3600 \r\n", 15, &c, &w), 0);
    assert_int_equal(c, 76);
    assert_int_equal(w, 3600);
    assert_int_equal(ratelimit_parse_value("180", 3, &c, &w), 0);
    assert_int_equal(c, 180);
    assert_int_equal(w, 0);
    /* other parameters are skipped, a broken w is ignored */
    assert_int_equal(ratelimit_parse_value("5;comment=\"x\";w=60", 18, &c, &w), 0);
    assert_int_equal(w, 60);
    assert_int_equal(ratelimit_parse_value("5;w=abc", 7, &c, &w), 0);
    assert_int_equal(c, 5);
    assert_int_equal(w, 0);
    assert_int_equal(ratelimit_parse_value("0;w=21600", 9, &c, &w), 0);
    assert_int_equal(c, 0);
}

static void test_ratelimit__garbage_is_absent(void **state)
{
    (void)state;
    long c = 7, w = 7;
    const char *bad[] = {"", ";w=21600", " ;w=21600", "abc", "-1;w=5", "1 2", "99999999999999999999",
                         "12x;w=1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ratelimit_parse_value(bad[i], strlen(bad[i]), &c, &w), -1);
    struct ratelimit_info rl;
    ratelimit_init(&rl);
    assert_int_equal(hdr(&rl, "RateLimit-Limit", ";w=21600"), 0);
    assert_int_equal(rl.has_limit, 0);
    assert_false(ratelimit_present(&rl));
}

static void test_ratelimit__headers(void **state)
{
    (void)state;
    struct ratelimit_info rl;
    ratelimit_init(&rl);
    assert_int_equal(hdr(&rl, "ratelimit-limit", "100;w=21600"), 1);
    assert_int_equal(hdr(&rl, "RateLimit-Remaining", "20;w=21600"), 1);
    assert_int_equal(hdr(&rl, "docker-ratelimit-source", " 192.0.2.1 "), 1);
    assert_int_equal(hdr(&rl, "content-type", "text/plain"), 0);
    assert_true(ratelimit_present(&rl));
    assert_int_equal(rl.limit, 100);
    assert_int_equal(rl.limit_window, 21600);
    assert_int_equal(rl.remaining, 20);
    assert_string_equal(rl.source, "192.0.2.1");
    /* x- variants are accepted but the unprefixed header wins */
    assert_int_equal(hdr(&rl, "x-ratelimit-remaining", "99;w=3600"), 1);
    assert_int_equal(rl.remaining, 20);
    assert_int_equal(rl.has_remaining, 2);

    ratelimit_init(&rl);
    assert_int_equal(hdr(&rl, "X-RateLimit-Limit", "100;w=3600"), 1);
    assert_int_equal(rl.has_limit, 1);
    assert_int_equal(rl.limit_window, 3600);
    assert_int_equal(hdr(&rl, "ratelimit-limit", "200;w=21600"), 1);
    assert_int_equal(rl.limit, 200);
    assert_int_equal(rl.has_limit, 2);
    /* x-docker-ratelimit-source is not a thing; source is bounded and printable */
    assert_int_equal(hdr(&rl, "x-docker-ratelimit-source", "a"), 0);
    char longv[400];
    memset(longv, 'a', sizeof(longv));
    longv[5] = '\n';
    assert_int_equal(ratelimit_header(&rl, "docker-ratelimit-source", longv, sizeof(longv)), 1);
    assert_int_equal(strlen(rl.source), RATELIMIT_SOURCE_MAX - 1);
    assert_int_equal(rl.source[5], '?');
}

static void test_ratelimit__retry_after(void **state)
{
    (void)state;
    long s = -5;
    time_t now = 1445412480; /* Wed, 21 Oct 2015 07:28:00 GMT */
    assert_int_equal(ratelimit_retry_after("120", 3, now, &s), 0);
    assert_int_equal(s, 120);
    assert_int_equal(ratelimit_retry_after(" 0 ", 3, now, &s), 0);
    assert_int_equal(s, 0);
    /* epoch timestamps (Docker Hub web API) */
    assert_int_equal(ratelimit_retry_after("1445412540", 10, now, &s), 0);
    assert_int_equal(s, 60);
    assert_int_equal(ratelimit_retry_after("1445412000", 10, now, &s), 0);
    assert_int_equal(s, 0);
    /* the three HTTP-date forms */
    const char *d1 = "Wed, 21 Oct 2015 07:30:00 GMT";
    assert_int_equal(ratelimit_retry_after(d1, strlen(d1), now, &s), 0);
    assert_int_equal(s, 120);
    const char *d2 = "Wednesday, 21-Oct-15 07:29:00 GMT";
    assert_int_equal(ratelimit_retry_after(d2, strlen(d2), now, &s), 0);
    assert_int_equal(s, 60);
    const char *d3 = "Wed Oct 21 07:28:30 2015";
    assert_int_equal(ratelimit_retry_after(d3, strlen(d3), now, &s), 0);
    assert_int_equal(s, 30);
    /* a date in the past is "now" */
    const char *d4 = "Sun, 06 Nov 1994 08:49:37 GMT";
    assert_int_equal(ratelimit_retry_after(d4, strlen(d4), now, &s), 0);
    assert_int_equal(s, 0);
    const char *bad[] = {"", "soon", "12s", "-5", "1.5", "Wed, 99 Foo 2015 07:30:00 GMT"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ratelimit_retry_after(bad[i], strlen(bad[i]), now, &s), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ratelimit__values),
        cmocka_unit_test(test_ratelimit__garbage_is_absent),
        cmocka_unit_test(test_ratelimit__headers),
        cmocka_unit_test(test_ratelimit__retry_after),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
