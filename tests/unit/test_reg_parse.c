/* Unit tests for common/reg_parse: Link headers, error bodies, tag lists, URLs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "reg_parse.h"

static int link_next(const char *v, char **url)
{
    struct err e;
    *url = NULL;
    return reg_parse_link_next(v, strlen(v), url, &e);
}

static void test_reg_parse__link_next(void **state)
{
    (void)state;
    char *u;
    assert_int_equal(link_next("</v2/library/a/tags/list?n=2&last=b>; rel=\"next\"", &u), 1);
    assert_string_equal(u, "/v2/library/a/tags/list?n=2&last=b");
    free(u);
    /* several links, rel lists, unquoted rel, odd spacing and case */
    assert_int_equal(link_next("<https://x/prev>; rel=\"prev\", <https://x/n?a=1,2>;title=\"a;b,c\"; "
                               "REL=\"last NEXT\"", &u), 1);
    assert_string_equal(u, "https://x/n?a=1,2");
    free(u);
    assert_int_equal(link_next("<a>;rel=next", &u), 1);
    assert_string_equal(u, "a");
    free(u);
    assert_int_equal(link_next("<a>; rel=\"prev\"", &u), 0);
    assert_int_equal(link_next("", &u), 0);
    assert_int_equal(link_next("<a>", &u), 0);
    assert_int_equal(link_next("<a>; rel=\"nextpage\"", &u), 0);
    /* malformed */
    assert_int_equal(link_next("a; rel=next", &u), -1);
    assert_int_equal(link_next("<a; rel=next", &u), -1);
    assert_int_equal(link_next("<a> rel=next", &u), -1);
    assert_int_equal(link_next("<a>; rel=\"next", &u), -1);
    assert_int_equal(link_next("<>; rel=next", &u), -1);
}

static void test_reg_parse__errors(void **state)
{
    (void)state;
    char out[100];
    int tm;
    const char *b = "{\"errors\":[{\"code\":\"TOOMANYREQUESTS\",\"message\":\"You have reached "
                    "your pull rate limit.\"}]}";
    assert_int_equal(reg_parse_errors(b, strlen(b), out, sizeof(out), &tm), 1);
    assert_string_equal(out, "TOOMANYREQUESTS: You have reached your pull rate limit.");
    assert_int_equal(tm, 1);
    b = "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"bad\\nline\",\"detail\":{}},"
        "{\"code\":\"TOOMANYREQUESTS\"}]}";
    assert_int_equal(reg_parse_errors(b, strlen(b), out, sizeof(out), &tm), 1);
    assert_string_equal(out, "MANIFEST_UNKNOWN: bad?line");
    assert_int_equal(tm, 1);
    /* bounded output */
    char small[10];
    assert_int_equal(reg_parse_errors(b, strlen(b), small, sizeof(small), NULL), 1);
    assert_int_equal(strlen(small), 9);
    const char *bad[] = {"", "Too Many Requests (HAP429).", "{}", "{\"errors\":[]}",
                         "{\"errors\":[{\"x\":1}]}", "{\"errors\":{}}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(reg_parse_errors(bad[i], strlen(bad[i]), out, sizeof(out), &tm), 0);
        assert_string_equal(out, "");
        assert_int_equal(tm, 0);
    }
}

static void test_reg_parse__tags(void **state)
{
    (void)state;
    char **t;
    size_t n;
    int many;
    struct err e;
    const char *b = "{\"name\":\"library/a\",\"tags\":[\"1.0\",\"latest\",\"_x-y.z\"]}";
    assert_int_equal(reg_parse_tags(b, strlen(b), 10, &t, &n, &many, &e), 0);
    assert_int_equal(n, 3);
    assert_string_equal(t[0], "1.0");
    assert_string_equal(t[2], "_x-y.z");
    reg_parse_free_tags(t, n);
    b = "{\"name\":\"a\",\"tags\":null}";
    assert_int_equal(reg_parse_tags(b, strlen(b), 10, &t, &n, &many, &e), 0);
    assert_int_equal(n, 0);
    reg_parse_free_tags(t, n);
    b = "{\"name\":\"a\",\"tags\":[\"a\",\"b\",\"c\"]}";
    assert_int_equal(reg_parse_tags(b, strlen(b), 2, &t, &n, &many, &e), -1);
    assert_int_equal(many, 1);
    const char *bad[] = {"[]", "{\"tags\":\"a\"}", "{\"tags\":[1]}", "{\"tags\":[\"-a\"]}",
                         "{\"tags\":[\"a/b\"]}", "{\"tags\":[\"\"]}", "nope"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(reg_parse_tags(bad[i], strlen(bad[i]), 10, &t, &n, &many, &e), -1);
        assert_int_equal(many, 0);
    }
    /* an embedded NUL in a tag is refused */
    b = "{\"tags\":[\"a\\u0000b\"]}";
    assert_int_equal(reg_parse_tags(b, strlen(b), 10, &t, &n, &many, &e), -1);
}

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"

/* A referrers answer: the descriptors' digests in order; an empty page; each bad field
 * named. */
static void test_reg_parse__referrers(void **state)
{
    (void)state;
    char **d;
    size_t n;
    int many;
    struct err e;
    const char *b =
        "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
        "\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
        "\"digest\":\"" D1 "\",\"size\":12,\"artifactType\":\"application/vnd.dev.cosign\","
        "\"annotations\":{\"a\":\"b\"}},{\"digest\":\"" D2 "\",\"size\":3}]}";
    assert_int_equal(reg_parse_referrers(b, strlen(b), 10, &d, &n, &many, &e), 0);
    assert_int_equal(n, 2);
    assert_string_equal(d[0], D1);
    assert_string_equal(d[1], D2);
    reg_parse_free_tags(d, n);
    b = "{\"schemaVersion\":2,\"manifests\":[]}";
    assert_int_equal(reg_parse_referrers(b, strlen(b), 10, &d, &n, &many, &e), 0);
    assert_int_equal(n, 0);
    reg_parse_free_tags(d, n);
    b = "{\"manifests\":[{\"digest\":\"" D1 "\"},{\"digest\":\"" D2 "\"}]}";
    assert_int_equal(reg_parse_referrers(b, strlen(b), 1, &d, &n, &many, &e), -1);
    assert_int_equal(many, 1);
    assert_non_null(strstr(e.msg, "2 descriptors"));
    static const struct {
        const char *body, *msg;
    } bad[] = {
        {"nope", "not a JSON object"},
        {"[]", "not a JSON object"},
        {"{}", "\"manifests\" is missing"},
        {"{\"manifests\":{}}", "not an array"},
        {"{\"manifests\":[1]}", "manifests[0] has no valid"},
        {"{\"manifests\":[{\"digest\":\"" D1 "\"},{\"size\":1}]}", "manifests[1]"},
        {"{\"manifests\":[{\"digest\":\"sha512:ab\"}]}", "manifests[0]"},
        {"{\"manifests\":[{\"digest\":\"" D1 "\\u0000\"}]}", "\\u0000 is not allowed"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(reg_parse_referrers(bad[i].body, strlen(bad[i].body), 10, &d, &n, &many,
                                             &e), -1);
        assert_int_equal(many, 0);
        assert_null(d);
        if (!strstr(e.msg, bad[i].msg))
            fail_msg("%s: %s", bad[i].body, e.msg);
    }
}

static void resolves(const char *base, const char *ref, const char *want)
{
    char *out = NULL;
    struct err e;
    assert_int_equal(reg_parse_resolve_url(base, ref, &out, &e), 0);
    assert_string_equal(out, want);
    free(out);
}

static void test_reg_parse__resolve(void **state)
{
    (void)state;
    const char *base = "https://reg.example:5000/v2/a/blobs/uploads/?x=1";
    resolves(base, "https://other/u?y=2", "https://other/u?y=2");
    resolves(base, "/v2/a/blobs/uploads/abc?_state=s", "https://reg.example:5000/v2/a/blobs/uploads/abc?_state=s");
    resolves(base, "//cdn.example/data", "https://cdn.example/data");
    resolves(base, "abc", "https://reg.example:5000/v2/a/blobs/uploads/abc");
    resolves("http://h", "x", "http://h/x");
    char *out;
    struct err e;
    assert_int_equal(reg_parse_resolve_url(base, "ftp://x/y", &out, &e), -1);
    assert_int_equal(reg_parse_resolve_url(base, "/a b", &out, &e), -1);
    assert_int_equal(reg_parse_resolve_url(base, "", &out, &e), -1);
    assert_int_equal(reg_parse_resolve_url("file:///x", "/a", &out, &e), -1);
}

static void test_reg_parse__same_origin(void **state)
{
    (void)state;
    assert_true(reg_parse_same_origin("https://Reg.Example/v2/", "https://reg.example:443/x"));
    assert_true(reg_parse_same_origin("http://127.0.0.1:5000/a", "http://127.0.0.1:5000"));
    assert_false(reg_parse_same_origin("http://127.0.0.1:5000/a", "http://127.0.0.1:5001/a"));
    assert_false(reg_parse_same_origin("http://h/a", "https://h/a"));
    assert_false(reg_parse_same_origin("https://h.evil/a", "https://h/a"));
    assert_true(reg_parse_same_origin("http://[::1]:80/a", "http://[::1]/b"));
    assert_false(reg_parse_same_origin("https://user@evil/x", "https://h/x"));
    assert_false(reg_parse_same_origin("nope", "nope"));
}

static void test_reg_parse__same_registry(void **state)
{
    (void)state;
    assert_true(reg_parse_same_registry("https://registry-1.docker.io",
                                        "https://Registry-1.docker.io:443/"));
    assert_true(reg_parse_same_registry("http://127.0.0.1:5000/v2/", "http://127.0.0.1:5000"));
    assert_true(reg_parse_same_registry("https://h/mirror/v2", "https://h/mirror/"));
    assert_false(reg_parse_same_registry("https://h/mirror", "https://h"));
    assert_false(reg_parse_same_registry("https://h/a", "https://h/b"));
    assert_false(reg_parse_same_registry("http://h", "https://h"));
    assert_false(reg_parse_same_registry("https://h:5000", "https://h"));
    assert_false(reg_parse_same_registry("https://h.evil", "https://h"));
    assert_false(reg_parse_same_registry("nope", "nope"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reg_parse__link_next),
        cmocka_unit_test(test_reg_parse__errors),
        cmocka_unit_test(test_reg_parse__tags),
        cmocka_unit_test(test_reg_parse__referrers),
        cmocka_unit_test(test_reg_parse__resolve),
        cmocka_unit_test(test_reg_parse__same_origin),
        cmocka_unit_test(test_reg_parse__same_registry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
