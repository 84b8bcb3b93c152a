/* Unit tests for common/rconn: redis:// URLs (no server needed) and setup lists. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rconn.h"

static void test_rconn__url_defaults(void **state)
{
    (void)state;
    struct rconn_url u;
    struct err e;
    assert_int_equal(rconn_url_parse(&u, "redis://localhost", &e), 0);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_null(u.user);
    assert_null(u.password);
    assert_string_equal(u.where, "localhost:6379/0");
    rconn_url_free(&u);
    assert_int_equal(rconn_url_parse(&u, "redis://127.0.0.1:7000/", &e), 0);
    assert_int_equal(u.port, 7000);
    rconn_url_free(&u);
}

static void test_rconn__url_credentials_and_db(void **state)
{
    (void)state;
    struct rconn_url u;
    struct err e;
    assert_int_equal(rconn_url_parse(&u, "redis://:s3cr%40t/x@redis:6380/2", &e), 0);
    assert_null(u.user);
    assert_string_equal(u.password, "s3cr@t/x");
    assert_string_equal(u.host, "redis");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 2);
    assert_string_equal(u.where, "redis:6380/2");
    rconn_url_free(&u);
    assert_int_equal(rconn_url_parse(&u, "redis://hub:pw@[::1]:6379/15", &e), 0);
    assert_string_equal(u.user, "hub");
    assert_string_equal(u.password, "pw");
    assert_string_equal(u.host, "::1");
    assert_string_equal(u.where, "[::1]:6379/15");
    rconn_url_free(&u);
}

static void test_rconn__url_errors_hide_password(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        const char *msg;
    } cases[] = {
        {"http://h", "must start with redis://"},
        {"rediss://h", "TLS"},
        {"redis://", "no host"},
        {"redis://h:0", "port '0'"},
        {"redis://h:99999", "port"},
        {"redis://h:12ab", "port"},
        {"redis://h/db", "database"},
        {"redis://h/99999", "database"},
        {"redis://[::1", "IPv6"},
        {"redis://topsecret@h", "[user]:password@"},
        {"redis://:top%zzsecret@h", "percent-encoding in the password"},
        {"redis://:top%00secret@h", "percent-encoding in the password"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rconn_url u;
        struct err e;
        assert_int_equal(rconn_url_parse(&u, cases[i].url, &e), -1);
        if (!strstr(e.msg, cases[i].msg))
            fail_msg("%s: '%s' does not mention '%s'", cases[i].url, e.msg, cases[i].msg);
        assert_null(strstr(e.msg, "secret"));
        assert_null(u.host);
    }
}

static void test_rconn__setup_list_copies(void **state)
{
    (void)state;
    struct rconn_setup s = {NULL, 0};
    char name[] = "XGROUP";
    const char *argv[] = {name, "CREATE", "k"};
    rconn_setup_add(&s, 3, argv, NULL, "BUSYGROUP");
    const char *bin[] = {"SET", "a\0b"};
    size_t len[] = {3, 3};
    rconn_setup_add(&s, 2, bin, len, NULL);
    name[0] = 'Y'; /* the list holds its own copy */
    assert_int_equal(s.n, 2);
    assert_string_equal(s.steps[0].argv[0], "XGROUP");
    assert_string_equal(s.steps[0].ok_error, "BUSYGROUP");
    assert_int_equal(s.steps[1].len[1], 3);
    assert_memory_equal(s.steps[1].argv[1], "a\0b", 3);
    assert_null(s.steps[1].ok_error);
    rconn_setup_free(&s);
    assert_int_equal(s.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rconn__url_defaults),
        cmocka_unit_test(test_rconn__url_credentials_and_db),
        cmocka_unit_test(test_rconn__url_errors_hide_password),
        cmocka_unit_test(test_rconn__setup_list_copies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
