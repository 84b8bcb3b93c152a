/* Unit tests for common/cfg. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cfg.h"
#include "xalloc.h"

/* What the options are looked up by. */
enum {
    OPT_CONCURRENCY = CFG_ID_OWN,
    OPT_JSON,
    OPT_PASSWORD,
    OPT_TOKEN_TTL,
};

static const struct cfg_opt opts[] = {
    {CFG_ID_REDIS, "redis", "HS_TEST_REDIS", CFG_STR, "redis://127.0.0.1:6379", 0, 0, "Redis URL",
     0},
    {OPT_CONCURRENCY, "concurrency", "HS_TEST_CONC", CFG_INT, "8", 1, 256, "jobs at once", 0},
    {OPT_JSON, "json", NULL, CFG_BOOL, "false", 0, 0, "JSON output", 0},
    {OPT_PASSWORD, "password", "HS_TEST_PW", CFG_STR, NULL, 0, 0, "a secret", 1},
};
#define NOPTS ((int)(sizeof(opts) / sizeof(opts[0])))

static void test_cfg__defaults(void **state)
{
    (void)state;
    struct cfg c;
    struct err e;
    unsetenv("HS_TEST_REDIS");
    unsetenv("HS_TEST_CONC");
    assert_int_equal(cfg_parse(&c, opts, NOPTS, 0, NULL, &e), 0);
    assert_string_equal(cfg_str(&c, CFG_ID_REDIS), "redis://127.0.0.1:6379");
    assert_int_equal(cfg_int(&c, OPT_CONCURRENCY), 8);
    assert_int_equal(cfg_bool(&c, OPT_JSON), 0);
    assert_null(cfg_str(&c, OPT_PASSWORD));
    assert_int_equal(cfg_is_set(&c, CFG_ID_REDIS), 0);
    cfg_free(&c);
}

static void test_cfg__env_then_flag(void **state)
{
    (void)state;
    struct cfg c;
    struct err e;
    setenv("HS_TEST_REDIS", "redis://env:1", 1);
    setenv("HS_TEST_CONC", "4", 1);
    char a0[] = "--concurrency=16", a1[] = "pos1", a2[] = "--json", a3[] = "--redis",
         a4[] = "redis://flag:2", a5[] = "pos2";
    char *argv[] = {a0, a1, a2, a3, a4, a5};
    assert_int_equal(cfg_parse(&c, opts, NOPTS, 6, argv, &e), 0);
    assert_string_equal(cfg_str(&c, CFG_ID_REDIS), "redis://flag:2");
    assert_int_equal(cfg_int(&c, OPT_CONCURRENCY), 16);
    assert_int_equal(cfg_bool(&c, OPT_JSON), 1);
    assert_int_equal(c.nargs, 2);
    assert_string_equal(c.args[0], "pos1");
    assert_string_equal(c.args[1], "pos2");
    cfg_free(&c);
    unsetenv("HS_TEST_REDIS");
    unsetenv("HS_TEST_CONC");
}

static void test_cfg__empty_env_is_unset(void **state)
{
    (void)state;
    struct cfg c;
    struct err e;
    setenv("HS_TEST_CONC", "", 1);
    assert_int_equal(cfg_parse(&c, opts, NOPTS, 0, NULL, &e), 0);
    assert_int_equal(cfg_int(&c, OPT_CONCURRENCY), 8);
    cfg_free(&c);
    unsetenv("HS_TEST_CONC");
}

static void test_cfg__errors_name_the_source(void **state)
{
    (void)state;
    struct cfg c;
    struct err e;
    char nope[] = "--nope", conc[] = "--concurrency", zero[] = "0", redis[] = "--redis",
         maybe[] = "--json=maybe";
    char *bad_flag[] = {nope};
    assert_int_equal(cfg_parse(&c, opts, NOPTS, 1, bad_flag, &e), -1);
    assert_non_null(strstr(e.msg, "--nope"));

    char *range[] = {conc, zero};
    assert_int_equal(cfg_parse(&c, opts, NOPTS, 2, range, &e), -1);
    assert_non_null(strstr(e.msg, "--concurrency"));
    assert_non_null(strstr(e.msg, "out of range"));

    char *missing[] = {redis};
    assert_int_equal(cfg_parse(&c, opts, NOPTS, 1, missing, &e), -1);
    assert_non_null(strstr(e.msg, "needs a value"));

    setenv("HS_TEST_CONC", "many", 1);
    assert_int_equal(cfg_parse(&c, opts, NOPTS, 0, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "HS_TEST_CONC"));
    unsetenv("HS_TEST_CONC");

    char *badbool[] = {maybe};
    assert_int_equal(cfg_parse(&c, opts, NOPTS, 1, badbool, &e), -1);
    assert_non_null(strstr(e.msg, "boolean"));
}

static void test_cfg__secret_never_echoed(void **state)
{
    (void)state;
    struct cfg c;
    struct err e;
    /* A secret option that fails validation must not show its value. */
    static const struct cfg_opt sopts[] = {
        {OPT_TOKEN_TTL, "token-ttl", "HS_TEST_TTL", CFG_INT, "1", 0, 10, "secret number", 1},
    };
    setenv("HS_TEST_TTL", "hunter2", 1);
    assert_int_equal(cfg_parse(&c, sopts, 1, 0, NULL, &e), -1);
    assert_null(strstr(e.msg, "hunter2"));
    unsetenv("HS_TEST_TTL");
    /* A flag missing its value does not take the next flag as one: that
     * flag (a password, found by fuzz_cfg) would be quoted as a bad value. */
    char conc[] = "--concurrency", pw[] = "--password=hunter2", dash[] = "--concurrency=--3";
    char *next_is_flag[] = {conc, pw};
    assert_int_equal(cfg_parse(&c, opts, NOPTS, 2, next_is_flag, &e), -1);
    assert_string_equal(e.msg, "flag --concurrency needs a value");
    char *attached[] = {dash};
    assert_int_equal(cfg_parse(&c, opts, NOPTS, 1, attached, &e), -1);
    assert_string_equal(e.msg, "--concurrency: '--3' is not an integer");
}

/* Rows sharing an id would make a lookup ambiguous: refused, naming both. */
static void test_cfg__ids_unique_within_a_table(void **state)
{
    (void)state;
    static const struct cfg_opt twice[] = {
        {OPT_JSON, "json", NULL, CFG_BOOL, "false", 0, 0, "JSON output", 0},
        {OPT_JSON, "yaml", NULL, CFG_BOOL, "false", 0, 0, "YAML output", 0},
    };
    struct cfg c;
    struct err e;
    assert_int_equal(cfg_parse(&c, twice, 2, 0, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "options --json and --yaml share id"));
}

/* The registries every program takes: --target required, both http(s) URLs. */
static void test_cfg__registries_check(void **state)
{
    (void)state;
    static const struct cfg_opt ropts[] = {CFG_OPT_UPSTREAM, CFG_OPT_TARGET};
    static const struct {
        const char *target, *upstream, *want;
    } cases[] = {
        {NULL, NULL, "--target is required (e.g. http://127.0.0.1:5000)"},
        {"http://127.0.0.1:5000", NULL, ""},
        {"http://127.0.0.1:5000", "https://hub.example:8443", ""},
        {"ftp://127.0.0.1", NULL, "--upstream and --target must be http(s)://host[:port] URLs"},
        {"http://127.0.0.1:5000", "registry-1.docker.io",
         "--upstream and --target must be http(s)://host[:port] URLs"},
    };
    unsetenv("HUBSYNC_UPSTREAM");
    unsetenv("HUBSYNC_TARGET");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cfg c;
        struct err e = {""};
        char t[128], u[128];
        char *argv[2];
        int argc = 0;
        if (cases[i].target) {
            snprintf(t, sizeof(t), "--target=%s", cases[i].target);
            argv[argc++] = t;
        }
        if (cases[i].upstream) {
            snprintf(u, sizeof(u), "--upstream=%s", cases[i].upstream);
            argv[argc++] = u;
        }
        assert_int_equal(cfg_parse(&c, ropts, 2, argc, argv, &e), 0);
        assert_int_equal(cfg_registries_check(&c, &e), cases[i].want[0] ? -1 : 0);
        if (cases[i].want[0])
            assert_string_equal(e.msg, cases[i].want);
        cfg_free(&c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cfg__defaults),
        cmocka_unit_test(test_cfg__env_then_flag),
        cmocka_unit_test(test_cfg__empty_env_is_unset),
        cmocka_unit_test(test_cfg__errors_name_the_source),
        cmocka_unit_test(test_cfg__secret_never_echoed),
        cmocka_unit_test(test_cfg__ids_unique_within_a_table),
        cmocka_unit_test(test_cfg__registries_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
