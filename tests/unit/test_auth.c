/* Unit tests for common/auth: WWW-Authenticate, token answers, token URLs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth.h"

static int parse(const char *v, struct auth_challenges *c)
{
    struct err e;
    return auth_parse_challenges(v, strlen(v), c, &e);
}

static void test_auth__docker_hub_challenge(void **state)
{
    (void)state;
    struct auth_challenges c;
    assert_int_equal(parse("Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
                           "scope=\"repository:library/redis:pull\"", &c), 1);
    assert_int_equal(c.v[0].scheme, AUTH_SCHEME_BEARER);
    assert_string_equal(c.v[0].realm, "https://auth.docker.io/token");
    assert_string_equal(c.v[0].service, "registry.docker.io");
    assert_string_equal(c.v[0].scope, "repository:library/redis:pull");
    assert_null(c.v[0].error);
    assert_ptr_equal(auth_pick(&c), &c.v[0]);
    auth_challenges_free(&c);
    /* /v2/ answers without a scope; case-insensitive names and spaces */
    assert_int_equal(parse("bearer  Realm = \"https://a/t\" , SERVICE=\"s\"", &c), 1);
    assert_string_equal(c.v[0].realm, "https://a/t");
    assert_string_equal(c.v[0].service, "s");
    assert_null(c.v[0].scope);
    auth_challenges_free(&c);
}

static void test_auth__quoted_strings(void **state)
{
    (void)state;
    struct auth_challenges c;
    /* commas and escaped quotes inside quotes, several scopes in one */
    assert_int_equal(parse("Bearer realm=\"https://h/t?a=1,b=2\",scope=\"repository:a:pull,push "
                           "repository:b:pull\",error=\"insufficient_scope\",x=\"say \\\"hi\\\"\"",
                           &c), 1);
    assert_string_equal(c.v[0].realm, "https://h/t?a=1,b=2");
    assert_string_equal(c.v[0].scope, "repository:a:pull,push repository:b:pull");
    assert_string_equal(c.v[0].error, "insufficient_scope");
    auth_challenges_free(&c);
    /* unquoted values, even URLs */
    assert_int_equal(parse("Bearer realm=https://h:5001/token,service=reg", &c), 1);
    assert_string_equal(c.v[0].realm, "https://h:5001/token");
    assert_string_equal(c.v[0].service, "reg");
    auth_challenges_free(&c);
}

static void test_auth__several_challenges(void **state)
{
    (void)state;
    struct auth_challenges c;
    assert_int_equal(parse("Basic realm=\"Registry Realm\", Bearer realm=\"https://t/\",service=\"s\","
                           " Negotiate abc==, Foo", &c), 4);
    assert_int_equal(c.v[0].scheme, AUTH_SCHEME_BASIC);
    assert_string_equal(c.v[0].realm, "Registry Realm");
    assert_int_equal(c.v[1].scheme, AUTH_SCHEME_BEARER);
    assert_int_equal(c.v[2].scheme, AUTH_SCHEME_OTHER);
    assert_int_equal(c.v[3].scheme, AUTH_SCHEME_OTHER);
    /* Bearer with a realm is preferred over Basic */
    assert_ptr_equal(auth_pick(&c), &c.v[1]);
    auth_challenges_free(&c);
    assert_int_equal(parse("Basic realm=\"r\"", &c), 1);
    assert_ptr_equal(auth_pick(&c), &c.v[0]);
    auth_challenges_free(&c);
    /* Bearer without realm cannot be answered */
    assert_int_equal(parse("Bearer service=\"s\"", &c), 1);
    assert_null(auth_pick(&c));
    auth_challenges_free(&c);
    assert_int_equal(parse("", &c), 0);
    assert_null(auth_pick(&c));
    auth_challenges_free(&c);
    /* more than the maximum: the extra ones are ignored */
    char many[1000] = "";
    for (int i = 0; i < AUTH_CHALLENGES_MAX + 3; i++)
        strcat(many, "Basic realm=\"x\", ");
    assert_int_equal(parse(many, &c), AUTH_CHALLENGES_MAX);
    auth_challenges_free(&c);
}

static void test_auth__malformed(void **state)
{
    (void)state;
    struct auth_challenges c;
    struct err e;
    const char *v = "Bearer realm=\"https://unterminated";
    assert_int_equal(auth_parse_challenges(v, strlen(v), &c, &e), -1);
    assert_non_null(strstr(e.msg, "unterminated"));
    auth_challenges_free(&c);
    v = "Bearer realm=\"a\", \"stray\"";
    assert_int_equal(auth_parse_challenges(v, strlen(v), &c, &e), -1);
    auth_challenges_free(&c);
    v = "Bearer realm=\"a\x01\"";
    assert_int_equal(auth_parse_challenges(v, strlen(v), &c, &e), -1);
    auth_challenges_free(&c);
    /* NUL bytes inside the length are not a terminator we trust */
    assert_int_equal(auth_parse_challenges("Bearer realm=\"a\0b\"", 18, &c, &e), -1);
    auth_challenges_free(&c);
}

static void test_auth__token_answers(void **state)
{
    (void)state;
    char *tok;
    long exp;
    struct err e;
    const char *j = "{\"token\":\"abc.def\",\"access_token\":\"zzz\",\"expires_in\":300,"
                    "\"issued_at\":\"2022-11-01T06:11:20Z\"}";
    assert_int_equal(auth_parse_token(j, strlen(j), &tok, &exp, &e), 0);
    assert_string_equal(tok, "abc.def");
    assert_int_equal(exp, 300);
    free(tok);
    j = "{\"access_token\":\"only\"}";
    assert_int_equal(auth_parse_token(j, strlen(j), &tok, &exp, &e), 0);
    assert_string_equal(tok, "only");
    assert_int_equal(exp, 60);
    free(tok);
    j = "{\"token\":\"\",\"access_token\":\"second\",\"expires_in\":-5}";
    assert_int_equal(auth_parse_token(j, strlen(j), &tok, &exp, &e), 0);
    assert_string_equal(tok, "second");
    assert_int_equal(exp, 60);
    free(tok);
    const char *bad[] = {"", "[]", "{}", "{\"token\":5}", "{\"token\":\"a b\"}",
                         "{\"token\":\"secret\r\nX: y\"}", "not json"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(auth_parse_token(bad[i], strlen(bad[i]), &tok, &exp, &e), -1);
        assert_null(strstr(e.msg, "secret"));
    }
}

static void test_auth__token_url(void **state)
{
    (void)state;
    char *u;
    struct err e;
    assert_int_equal(auth_token_url("https://auth.docker.io/token", "registry.docker.io",
                                    "repository:library/a:pull repository:b/c:pull,push", &u, &e), 0);
    assert_string_equal(u, "https://auth.docker.io/token?service=registry.docker.io"
                           "&scope=repository:library/a:pull&scope=repository:b/c:pull,push");
    free(u);
    assert_int_equal(auth_token_url("http://h/t?x=1", "a b&c", "", &u, &e), 0);
    assert_string_equal(u, "http://h/t?x=1&service=a%20b%26c");
    free(u);
    assert_int_equal(auth_token_url("http://h/t", NULL, NULL, &u, &e), 0);
    assert_string_equal(u, "http://h/t");
    free(u);
    assert_int_equal(auth_token_url("ftp://h/t", "s", "", &u, &e), -1);
    assert_int_equal(auth_token_url("https://h/t\r\nX: y", "s", "", &u, &e), -1);
    assert_int_equal(auth_token_url(NULL, "s", "", &u, &e), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth__docker_hub_challenge),
        cmocka_unit_test(test_auth__quoted_strings),
        cmocka_unit_test(test_auth__several_challenges),
        cmocka_unit_test(test_auth__malformed),
        cmocka_unit_test(test_auth__token_answers),
        cmocka_unit_test(test_auth__token_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
