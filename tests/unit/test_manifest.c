/* Unit tests for common/manifest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "manifest.h"

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define D4 "sha256:4444444444444444444444444444444444444444444444444444444444444444"

static const char index_json[] =
    "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
    "\"manifests\":["
    "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D1 "\","
    "\"size\":100,\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}},"
    "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D2 "\","
    "\"size\":50,\"annotations\":{\"vnd.docker.reference.digest\":\"" D1 "\","
    "\"vnd.docker.reference.type\":\"attestation-manifest\"},"
    "\"platform\":{\"architecture\":\"unknown\",\"os\":\"unknown\"}},"
    "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D3 "\","
    "\"size\":100,\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"}},"
    "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D4 "\","
    "\"size\":50,\"annotations\":{\"vnd.docker.reference.digest\":\"" D3 "\"},"
    "\"platform\":{\"architecture\":\"unknown\",\"os\":\"unknown\"}}]}";

static const char image_json[] =
    "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\","
    "\"config\":{\"mediaType\":\"application/vnd.docker.container.image.v1+json\",\"digest\":\"" D1
    "\",\"size\":7},"
    "\"layers\":[{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"digest\":\"" D2
    "\",\"size\":1234},"
    "{\"mediaType\":\"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip\",\"digest\":\"" D3
    "\",\"size\":99,\"urls\":[\"https://example.com/x\"]}]}";

static void test_manifest__index(void **state)
{
    (void)state;
    struct manifest m;
    struct err e;
    assert_int_equal(manifest_parse(&m, index_json, strlen(index_json), NULL, &e), 0);
    assert_true(m.is_index);
    assert_int_equal(m.nitems, 4);
    assert_string_equal(m.items[0].platform, "linux/amd64");
    assert_null(m.items[0].subject);
    assert_string_equal(m.items[1].platform, "unknown/unknown");
    assert_string_equal(m.items[1].subject, D1);
    assert_string_equal(m.items[2].platform, "linux/arm64/v8");
    assert_int_equal(m.items[2].size, 100);
    manifest_free(&m);
}

static void test_manifest__image_and_foreign(void **state)
{
    (void)state;
    struct manifest m;
    struct err e;
    assert_int_equal(manifest_parse(&m, image_json, strlen(image_json), NULL, &e), 0);
    assert_false(m.is_index);
    assert_int_equal(m.nitems, 3);
    assert_string_equal(m.items[0].digest, D1);
    assert_false(m.items[1].foreign);
    assert_true(m.items[2].foreign);
    manifest_free(&m);
}

static void test_manifest__media_type_from_header(void **state)
{
    (void)state;
    struct manifest m;
    struct err e;
    const char *body = "{\"schemaVersion\":2,\"config\":{\"digest\":\"" D1 "\",\"size\":1},"
                       "\"layers\":[]}";
    assert_int_equal(manifest_parse(&m, body, strlen(body),
                                    "application/vnd.docker.distribution.manifest.v2+json; x=y",
                                    &e),
                     0);
    assert_string_equal(m.media_type, "application/vnd.docker.distribution.manifest.v2+json");
    manifest_free(&m);
}

/* A Content-Type that disagrees with the bytes is a lie: refused, named. */
static void test_manifest__content_type_must_agree(void **state)
{
    (void)state;
    struct manifest m;
    struct err e;
    const char *with_mt = "{\"schemaVersion\":2,\"mediaType\":"
                          "\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"digest\":"
                          "\"" D1 "\",\"size\":1},\"layers\":[]}";
    const char *without = "{\"schemaVersion\":2,\"config\":{\"digest\":\"" D1 "\",\"size\":1},"
                          "\"layers\":[]}";
    /* Agreeing, with parameters and another letter case: accepted. */
    assert_int_equal(manifest_parse(&m, with_mt, strlen(with_mt),
                                    "Application/vnd.oci.image.manifest.v1+json; charset=utf-8",
                                    &e),
                     0);
    assert_string_equal(m.media_type, "application/vnd.oci.image.manifest.v1+json");
    manifest_free(&m);
    /* An empty header is no header: the body decides. */
    assert_int_equal(manifest_parse(&m, with_mt, strlen(with_mt), "", &e), 0);
    manifest_free(&m);
    assert_int_equal(manifest_parse(&m, with_mt, strlen(with_mt), "text/html; charset=utf-8", &e),
                     -1);
    assert_string_equal(e.msg, "Content-Type 'text/html' does not match the manifest's mediaType "
                               "'application/vnd.oci.image.manifest.v1+json'");
    assert_int_equal(manifest_parse(&m, with_mt, strlen(with_mt),
                                    "application/vnd.docker.distribution.manifest.v2+json", &e),
                     -1);
    assert_non_null(strstr(e.msg, "does not match"));
    assert_int_equal(manifest_parse(&m, without, strlen(without), "application/json", &e), -1);
    assert_string_equal(e.msg, "Content-Type 'application/json' is not a manifest media type");
}

static void test_manifest__errors(void **state)
{
    (void)state;
    struct manifest m;
    struct err e;
    const char *cases[][2] = {
        {"not json", "not JSON"},
        {"[1]", "not a JSON object"},
        {"{\"schemaVersion\":1,\"name\":\"x\"}", "schema 1"},
        {"{\"mediaType\":\"text/plain\"}", "unsupported"},
        {"{\"mediaType\":\"application/vnd.oci.image.index.v1+json\"}", "manifests array"},
        {"{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"digest\":"
         "\"sha256:abc\",\"size\":1}]}",
         "manifests[0]"},
        {"{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"digest\":"
         "\"" D1 "\",\"size\":-1}]}",
         "bad size"},
        {"{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"digest\":"
         "\"" D1 "\",\"size\":1,\"platform\":{\"os\":\"Linux/../x\",\"architecture\":\"a\"}}]}",
         "bad platform"},
        {"{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"layers\":[]}",
         "config object"},
        {"{\"a\":1,\"a\":2}", "not JSON"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(manifest_parse(&m, cases[i][0], strlen(cases[i][0]), NULL, &e), -1);
        if (!strstr(e.msg, cases[i][1]))
            fail_msg("case %zu: '%s' lacks '%s'", i, e.msg, cases[i][1]);
    }
}

static void test_manifest__platform_match(void **state)
{
    (void)state;
    assert_true(manifest_platform_match("linux/arm64/v8", "linux/arm64"));
    assert_true(manifest_platform_match("linux/arm64", "linux/arm64/v8"));
    assert_true(manifest_platform_match("linux/arm/v7", "linux/arm"));
    assert_false(manifest_platform_match("linux/arm/v6", "linux/arm"));
    assert_false(manifest_platform_match("linux/amd64", "windows/amd64"));
    assert_false(manifest_platform_match(NULL, "linux/amd64"));
}

static void test_manifest__child_wanted_follows_attestations(void **state)
{
    (void)state;
    struct manifest m;
    struct err e;
    char p[] = "linux/arm64";
    char *want[] = {p};
    assert_int_equal(manifest_parse(&m, index_json, strlen(index_json), NULL, &e), 0);
    assert_false(manifest_child_wanted(&m, 0, want, 1));
    assert_false(manifest_child_wanted(&m, 1, want, 1));
    assert_true(manifest_child_wanted(&m, 2, want, 1));
    assert_true(manifest_child_wanted(&m, 3, want, 1));
    manifest_free(&m);
}

static void test_manifest__rewrite(void **state)
{
    (void)state;
    struct manifest m;
    struct err e;
    size_t n = 0;
    char p[] = "linux/amd64";
    char *want[] = {p};
    char *out = manifest_rewrite_index(index_json, strlen(index_json), want, 1, D4, &n, &e);
    assert_non_null(out);
    assert_int_equal(manifest_parse(&m, out, n, NULL, &e), 0);
    assert_int_equal(m.nitems, 2);
    assert_string_equal(m.items[0].digest, D1);
    assert_string_equal(m.items[1].digest, D2);
    assert_string_equal(m.source_digest, D4);
    manifest_free(&m);
    free(out);

    char q[] = "linux/s390x";
    char *none[] = {q};
    assert_null(manifest_rewrite_index(index_json, strlen(index_json), none, 1, D4, &n, &e));
    assert_non_null(strstr(e.msg, "no child"));
    assert_null(manifest_rewrite_index(image_json, strlen(image_json), none, 1, D4, &n, &e));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_manifest__index),
        cmocka_unit_test(test_manifest__image_and_foreign),
        cmocka_unit_test(test_manifest__media_type_from_header),
        cmocka_unit_test(test_manifest__content_type_must_agree),
        cmocka_unit_test(test_manifest__errors),
        cmocka_unit_test(test_manifest__platform_match),
        cmocka_unit_test(test_manifest__child_wanted_follows_attestations),
        cmocka_unit_test(test_manifest__rewrite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
