/* Unit tests for common/semver: lenient version tags, precedence, and ranges
 * against node-semver's own fixtures (test/fixtures/range-include.js and
 * range-exclude.js; the few forms not taken here are left out: "~>", the
 * empty range, loose versions). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "semver.h"

static struct semver ver(const char *s)
{
    struct semver v;
    if (semver_parse(s, &v) < 0)
        fail_msg("'%s' is not a version", s);
    return v;
}

static void test_semver__parse(void **state)
{
    (void)state;
    struct semver v = ver("v3.12.1-slim-trixie");
    assert_int_equal(v.major, 3);
    assert_int_equal(v.minor, 12);
    assert_int_equal(v.patch, 1);
    assert_int_equal(v.parts, 3);
    assert_string_equal(v.pre, "slim-trixie");
    v = ver("26");
    assert_int_equal(v.major, 26);
    assert_int_equal(v.parts, 1);
    v = ver("1.30-alpine3.24");
    assert_int_equal(v.minor, 30);
    assert_int_equal(v.parts, 2);
    assert_string_equal(v.pre, "alpine3.24");
    const char *bad[] = {"latest", "3.15.0rc1", "1.2.3.4", "", "v", "1.", ".1", "1.2-",
                         "1.2-a..b", "1.2-a.", "-1", "1234567890123456", "19beta3", "1.2.3+b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct semver b;
        if (semver_parse(bad[i], &b) == 0)
            fail_msg("'%s' parsed as a version", bad[i]);
    }
}

static void test_semver__precedence(void **state)
{
    (void)state;
    /* Semantic Versioning 2.0, section 11, in ascending order. */
    const char *order[] = {"1.0.0-alpha",      "1.0.0-alpha.1", "1.0.0-alpha.beta",
                           "1.0.0-beta",       "1.0.0-beta.2",  "1.0.0-beta.11",
                           "1.0.0-rc.1",       "1.0.0",         "1.0.1",
                           "1.2",              "1.10.0",        "2"};
    size_t n = sizeof(order) / sizeof(order[0]);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < n; k++) {
            struct semver a = ver(order[i]), b = ver(order[k]);
            int c = semver_cmp(&a, &b);
            if ((i < k && c >= 0) || (i == k && c != 0) || (i > k && c <= 0))
                fail_msg("%s vs %s: %d", order[i], order[k], c);
        }
    struct semver a = ver("3.12"), b = ver("3.12.0");
    assert_int_equal(semver_cmp(&a, &b), 0);
    a = ver("1.0.0-007"), b = ver("1.0.0-7");
    assert_int_equal(semver_cmp(&a, &b), 0);
}

static int matches(const char *range, const char *version)
{
    struct semver_range *r;
    struct err e = {""};
    if (semver_range_parse(range, &r, &e) < 0)
        fail_msg("'%s': %s", range, e.msg);
    struct semver v = ver(version);
    int m = semver_range_match(r, &v);
    semver_range_free(r);
    return m;
}

static void test_semver__range_include(void **state)
{
    (void)state;
    static const char *const t[][2] = {
        {"1.0.0 - 2.0.0", "1.2.3"}, {"^1.2.3+build", "1.2.3"}, {"^1.2.3+build", "1.3.0"},
        {"1.2.3-pre+asdf - 2.4.3-pre+asdf", "1.2.3"},
        {"1.2.3-pre+asdf - 2.4.3-pre+asdf", "1.2.3-pre.2"},
        {"1.2.3-pre+asdf - 2.4.3-pre+asdf", "2.4.3-alpha"}, {"1.2.3+asdf - 2.4.3+asdf", "1.2.3"},
        {"1.0.0", "1.0.0"}, {">=*", "0.2.4"}, {"*", "1.2.3"}, {">=1.0.0", "1.0.0"},
        {">=1.0.0", "1.0.1"}, {">=1.0.0", "1.1.0"}, {">1.0.0", "1.0.1"}, {">1.0.0", "1.1.0"},
        {"<=2.0.0", "2.0.0"}, {"<=2.0.0", "1.9999.9999"}, {"<=2.0.0", "0.2.9"},
        {"<2.0.0", "1.9999.9999"}, {"<2.0.0", "0.2.9"}, {">= 1.0.0", "1.0.0"},
        {">=  1.0.0", "1.0.1"}, {"> 1.0.0", "1.1.0"}, {"<=  2.0.0", "2.0.0"},
        {"<    2.0.0", "0.2.9"}, {">=0.1.97", "0.1.97"}, {"0.1.20 || 1.2.4", "1.2.4"},
        {">=0.2.3 || <0.0.1", "0.0.0"}, {">=0.2.3 || <0.0.1", "0.2.3"},
        {">=0.2.3 || <0.0.1", "0.2.4"}, {"2.x.x", "2.1.3"}, {"1.2.x", "1.2.3"},
        {"1.2.x || 2.x", "2.1.3"}, {"1.2.x || 2.x", "1.2.3"}, {"x", "1.2.3"},
        {"2.*.*", "2.1.3"}, {"1.2.*", "1.2.3"}, {"1.2.* || 2.*", "2.1.3"}, {"*", "1.2.3"},
        {"2", "2.1.2"}, {"2.3", "2.3.1"}, {"~0.0.1", "0.0.1"}, {"~0.0.1", "0.0.2"},
        {"~x", "0.0.9"}, {"~2", "2.0.9"}, {"~2.4", "2.4.0"}, {"~2.4", "2.4.5"},
        {"~1", "1.2.3"}, {"~1.0", "1.0.2"}, {"~ 1.0", "1.0.2"}, {"~ 1.0.3", "1.0.12"},
        {">=1", "1.0.0"}, {">= 1", "1.0.0"}, {"<1.2", "1.1.1"}, {"< 1.2", "1.1.1"},
        {"~v0.5.4-pre", "0.5.5"}, {"~v0.5.4-pre", "0.5.4"}, {"=0.7.x", "0.7.2"},
        {"<=0.7.x", "0.7.2"}, {">=0.7.x", "0.7.2"}, {"<=0.7.x", "0.6.2"},
        {"~1.2.1 >=1.2.3", "1.2.3"}, {"~1.2.1 =1.2.3", "1.2.3"}, {"~1.2.1 1.2.3", "1.2.3"},
        {"~1.2.1 >=1.2.3 1.2.3", "1.2.3"}, {"~1.2.1 1.2.3 >=1.2.3", "1.2.3"},
        {">=1.2.1 1.2.3", "1.2.3"}, {"1.2.3 >=1.2.1", "1.2.3"}, {">=1.2.3 >=1.2.1", "1.2.3"},
        {">=1.2.1 >=1.2.3", "1.2.3"}, {">=1.2", "1.2.8"}, {"^1.2.3", "1.8.1"},
        {"^0.1.2", "0.1.2"}, {"^0.1", "0.1.2"}, {"^0.0.1", "0.0.1"}, {"^1.2", "1.4.2"},
        {"^1.2 ^1", "1.4.2"}, {"^1.2.3-alpha", "1.2.3-pre"}, {"^1.2.0-alpha", "1.2.0-pre"},
        {"^0.0.1-alpha", "0.0.1-beta"}, {"^0.0.1-alpha", "0.0.1"},
        {"^0.1.1-alpha", "0.1.1-beta"}, {"^x", "1.2.3"}, {"x - 1.0.0", "0.9.7"},
        {"x - 1.x", "0.9.7"}, {"1.0.0 - x", "1.9.7"}, {"1.x - x", "1.9.7"}, {"<=7.x", "7.9.9"},
        /* what the sync file adds: commas between comparators, a "v" */
        {">=1.2, <2", "1.9.0"}, {"v1.2.x", "1.2.7"}, {"^0.0", "0.0.5"}, {"^0.x", "0.9.0"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (!matches(t[i][0], t[i][1]))
            fail_msg("'%s' should take %s", t[i][0], t[i][1]);
}

static void test_semver__range_exclude(void **state)
{
    (void)state;
    static const char *const t[][2] = {
        {"1.0.0 - 2.0.0", "2.2.3"}, {"1.2.3+asdf - 2.4.3+asdf", "1.2.3-pre.2"},
        {"1.2.3+asdf - 2.4.3+asdf", "2.4.3-alpha"}, {"^1.2.3+build", "2.0.0"},
        {"^1.2.3+build", "1.2.0"}, {"^1.2.3", "1.2.3-pre"}, {"^1.2", "1.2.0-pre"},
        {">1.2", "1.3.0-beta"}, {"<=1.2.3", "1.2.3-beta"}, {"^1.2.3", "1.2.3-beta"},
        {"=0.7.x", "0.7.0-asdf"}, {">=0.7.x", "0.7.0-asdf"}, {"<=0.7.x", "0.7.0-asdf"},
        {"1.0.0", "1.0.1"}, {">=1.0.0", "0.0.0"}, {">=1.0.0", "0.0.1"}, {">=1.0.0", "0.1.0"},
        {">1.0.0", "0.0.1"}, {">1.0.0", "0.1.0"}, {"<=2.0.0", "3.0.0"},
        {"<=2.0.0", "2.9999.9999"}, {"<=2.0.0", "2.2.9"}, {"<2.0.0", "2.9999.9999"},
        {"<2.0.0", "2.2.9"}, {">=0.1.97", "0.1.93"}, {"0.1.20 || 1.2.4", "1.2.3"},
        {">=0.2.3 || <0.0.1", "0.0.3"}, {">=0.2.3 || <0.0.1", "0.2.2"}, {"2.x.x", "1.1.3"},
        {"2.x.x", "3.1.3"}, {"1.2.x", "1.3.3"}, {"1.2.x || 2.x", "3.1.3"},
        {"1.2.x || 2.x", "1.1.3"}, {"2.*.*", "1.1.3"}, {"2.*.*", "3.1.3"}, {"1.2.*", "1.3.3"},
        {"2", "1.1.2"}, {"2.3", "2.4.1"}, {"~0.0.1", "0.1.0-alpha"}, {"~0.0.1", "0.1.0"},
        {"~2.4", "2.5.0"}, {"~2.4", "2.3.9"}, {"~1", "0.2.3"}, {"~1.0", "1.1.0"},
        {"<1", "1.0.0"}, {">=1.2", "1.1.1"}, {"~v0.5.4-beta", "0.5.4-alpha"},
        {"=0.7.x", "0.8.2"}, {">=0.7.x", "0.6.2"}, {"<0.7.x", "0.7.2"},
        {"<1.2.3", "1.2.3-beta"}, {"=1.2.3", "1.2.3-beta"}, {">1.2", "1.2.8"},
        {"^0.0.1", "0.0.2"}, {"^1.2.3", "2.0.0-alpha"}, {"^1.2.3", "1.2.2"},
        {"^1.2", "1.1.9"}, {"*", "v1.2.3-foo"}, {"^1.0.0", "2.0.0-rc1"}, {"1 - 2", "2.0.0-pre"},
        {"1 - 2", "1.0.0-pre"}, {"1.0 - 2", "1.0.0-pre"}, {"1.1.x", "1.0.0-a"},
        {"1.1.x", "1.1.0-a"}, {"1.1.x", "1.2.0-a"}, {"1.x", "1.0.0-a"}, {"1.x", "1.1.0-a"},
        {"1.x", "1.2.0-a"}, {">=1.0.0 <1.1.0", "1.1.0"}, {">=1.0.0 <1.1.0", "1.1.0-pre"},
        {">=1.0.0 <1.1.0-pre", "1.1.0-pre"}, {">*", "1.0.0"}, {"<*", "0.0.0"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (matches(t[i][0], t[i][1]))
            fail_msg("'%s' should not take %s", t[i][0], t[i][1]);
}

static void refuse(const char *range, const char *msg)
{
    struct semver_range *r = (void *)1;
    struct err e = {""};
    assert_int_equal(semver_range_parse(range, &r, &e), -1);
    assert_null(r);
    assert_string_equal(e.msg, msg);
}

static void test_semver__range_errors(void **state)
{
    (void)state;
    refuse("", "semver range '': an empty alternative at character 1");
    refuse(">=1.2 ||", "semver range '>=1.2 ||': an empty alternative at character 9");
    refuse(">=1.2 | <2", "semver range '>=1.2 | <2': expected '||' at character 7");
    refuse("latest", "semver range 'latest': expected a number, 'x' or '*' at character 1");
    refuse("1.x.3", "semver range '1.x.3': a number after a wildcard at character 5");
    refuse("1.2-beta", "semver range '1.2-beta': a prerelease needs a whole version (1.2.3-beta) "
                       "at character 9");
    refuse(">=1.2a", "semver range '>=1.2a': unexpected character at character 6");
    refuse("!=1.2.3", "semver range '!=1.2.3': expected a number, 'x' or '*' at character 1");
    refuse("1 -2", "semver range '1 -2': expected a number, 'x' or '*' at character 3");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_semver__parse),
        cmocka_unit_test(test_semver__precedence),
        cmocka_unit_test(test_semver__range_include),
        cmocka_unit_test(test_semver__range_exclude),
        cmocka_unit_test(test_semver__range_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
