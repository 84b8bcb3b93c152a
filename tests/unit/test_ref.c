/* Unit tests for common/ref: the grammar, Docker Hub normalisation, the
 * official-images check, error texts, hostile inputs and the round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ref.h"
#include "xalloc.h"

#define D64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define DIG "sha256:" D64

/* Parse s, check its canonical form, and that the form parses to the same ref. */
static void expect(const char *s, const char *canonical)
{
    struct ref r, again;
    struct err e = {""};
    if (ref_parse(&r, s, &e) < 0)
        fail_msg("%s: %s", s, e.msg);
    char *f = ref_format(&r);
    assert_string_equal(f, canonical);
    assert_int_equal(ref_parse(&again, f, &e), 0);
    assert_string_equal(again.domain, r.domain);
    assert_string_equal(again.path, r.path);
    assert_true((again.tag == NULL) == (r.tag == NULL));
    if (r.tag)
        assert_string_equal(again.tag, r.tag);
    assert_string_equal(again.digest, r.digest);
    free(f);
    ref_free(&again);
    ref_free(&r);
}

/* ref_parse(s) fails with exactly msg, leaving nothing to free. */
static void refuse(const char *s, const char *msg)
{
    struct ref r;
    struct err e = {""};
    assert_int_equal(ref_parse(&r, s, &e), -1);
    assert_string_equal(e.msg, msg);
    assert_null(r.domain);
    assert_null(r.path);
    assert_null(r.tag);
    assert_string_equal(r.digest, "");
}

static void official(const char *s, const char *name)
{
    char *n = NULL;
    struct err e = {""};
    if (ref_official_repo(s, &n, &e) < 0)
        fail_msg("%s: %s", s, e.msg);
    assert_string_equal(n, name);
    free(n);
}

static void not_official(const char *s, const char *msg)
{
    char *n = (char *)"untouched";
    struct err e = {""};
    assert_int_equal(ref_official_repo(s, &n, &e), -1);
    assert_null(n);
    assert_string_equal(e.msg, msg);
}

static void test_ref__docker_hub_normalisation(void **state)
{
    (void)state;
    expect("alpine", "docker.io/library/alpine");
    expect("library/alpine", "docker.io/library/alpine");
    expect("docker.io/alpine", "docker.io/library/alpine");
    expect("docker.io/library/alpine", "docker.io/library/alpine");
    expect("index.docker.io/library/alpine", "docker.io/library/alpine");
    expect("index.docker.io/alpine", "docker.io/library/alpine");
    expect("bitnami/redis", "docker.io/bitnami/redis");
    expect("a/b/c", "docker.io/a/b/c");
    /* One component on another registry stays as it is. */
    expect("localhost/alpine", "localhost/alpine");
    expect("registry-1.docker.io/alpine", "registry-1.docker.io/alpine");
}

static void test_ref__domains(void **state)
{
    (void)state;
    expect("ghcr.io/x/y", "ghcr.io/x/y");
    expect("localhost:5000/x", "localhost:5000/x");
    expect("127.0.0.1:5000/x/y:1", "127.0.0.1:5000/x/y:1");
    expect("[::1]:5000/x", "[::1]:5000/x");
    expect("[fe80::1]/x", "[fe80::1]/x");
    expect("my-registry.example.com/team/app", "my-registry.example.com/team/app");
    /* Without '.', ':' or localhost the first component is a path. */
    expect("localhostx/y", "docker.io/localhostx/y");
    refuse("-bad.io/x", "'-bad.io/x': invalid registry '-bad.io' (host[:port])");
    refuse("bad-.io/x", "'bad-.io/x': invalid registry 'bad-.io' (host[:port])");
    refuse("a..io/x", "'a..io/x': invalid registry 'a..io' (host[:port])");
    refuse("host:/x", "'host:/x': invalid registry 'host:' (host[:port])");
    refuse("host:50a/x", "'host:50a/x': invalid registry 'host:50a' (host[:port])");
    refuse("[::1/x", "'[::1/x': invalid registry '[::1' (host[:port])");
    refuse("[]:5000/x", "'[]:5000/x': invalid registry '[]:5000' (host[:port])");
    refuse("[::g]/x", "'[::g]/x': invalid registry '[::g]' (host[:port])");
    refuse("[::1]x/y", "'[::1]x/y': invalid registry '[::1]x' (host[:port])");
    refuse("Ghcr.io/x", "'Ghcr.io/x': uppercase letters are not allowed in a registry name "
                        "('G' at position 1)");
}

static void test_ref__path_components(void **state)
{
    (void)state;
    expect("x/a.b_c__d-e---f/g0", "docker.io/x/a.b_c__d-e---f/g0");
    /* A first component with a '.' is a registry, whatever follows. */
    refuse("a.b_c/d", "'a.b_c/d': invalid registry 'a.b_c' (host[:port])");
    expect("hello-world", "docker.io/library/hello-world");
    expect("0", "docker.io/library/0");
    const char *bad[] = {"a..b", "a___b", "a_.b", "-a", "a-", ".a", "a.", "_a", "a__"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ref r;
        struct err e = {""};
        assert_int_equal(ref_parse(&r, bad[i], &e), -1);
        assert_non_null(strstr(e.msg, "invalid path component"));
    }
    refuse("a/-b", "'a/-b': invalid path component '-b' at position 3 (lowercase letters and "
                   "digits joined by '.', '_', '__' or '-')");
    refuse("library//alpine", "'library//alpine': empty path component at position 9");
    refuse("alpine/", "'alpine/': empty path component at position 8");
    refuse("/alpine", "'/alpine': empty path component at position 1");
    refuse("ghcr.io/", "'ghcr.io/': empty path component at position 9");
}

static void test_ref__uppercase(void **state)
{
    (void)state;
    refuse("Alpine", "'Alpine': uppercase letters are not allowed in a repository name "
                     "('A' at position 1)");
    refuse("library/alPine:3.20", "'library/alPine:3.20': uppercase letters are not allowed in "
                                  "a repository name ('P' at position 11)");
    refuse("Foo/bar", "'Foo/bar': uppercase letters are not allowed in a repository name "
                      "('F' at position 1)");
    /* Uppercase is fine in a tag. */
    expect("alpine:Latest_V1", "docker.io/library/alpine:Latest_V1");
}

static void test_ref__tags_and_digests(void **state)
{
    (void)state;
    expect("alpine:3.20", "docker.io/library/alpine:3.20");
    expect("alpine:_x", "docker.io/library/alpine:_x");
    expect("localhost:5000/x:y", "localhost:5000/x:y");
    expect("alpine@" DIG, "docker.io/library/alpine@" DIG);
    expect("ghcr.io/x/y:1.0@" DIG, "ghcr.io/x/y:1.0@" DIG);
    char tag[REF_TAG_MAX + 2];
    memset(tag, 'a', sizeof(tag) - 1);
    tag[REF_TAG_MAX] = '\0';
    char *ok = xasprintf("alpine:%s", tag);
    char *want = xasprintf("docker.io/library/%s", ok);
    expect(ok, want);
    free(want);
    free(ok);
    tag[REF_TAG_MAX] = 'a';
    tag[REF_TAG_MAX + 1] = '\0';
    char *longer = xasprintf("alpine:%s", tag);
    struct ref r;
    struct err e = {""};
    assert_int_equal(ref_parse(&r, longer, &e), -1);
    assert_non_null(strstr(e.msg, "invalid tag"));
    free(longer);
    refuse("alpine:", "'alpine:': invalid tag '' at position 8 (1 to 128 of A-Z a-z 0-9 _ . -, "
                      "not starting with . or -)");
    refuse("alpine:.x", "'alpine:.x': invalid tag '.x' at position 8 (1 to 128 of A-Z a-z 0-9 "
                        "_ . -, not starting with . or -)");
    refuse("alpine:a:b", "'alpine:a:b': invalid tag 'a:b' at position 8 (1 to 128 of A-Z a-z "
                         "0-9 _ . -, not starting with . or -)");
    refuse(":3.20", "':3.20': no repository name");
    refuse("@" DIG, "'@" DIG "': no repository name");
    refuse("alpine@sha256:abc", "'alpine@sha256:abc': invalid digest 'sha256:abc' at position 8 "
                                "(sha256: and 64 lowercase hex digits)");
    /* A second '@' belongs to the digest; the quoted digest is bounded. */
    refuse("alpine@" DIG "@" DIG, "'alpine@" DIG "@" DIG "': invalid digest '" DIG "@sha256:0' "
                                  "at position 8 (sha256: and 64 lowercase hex digits)");
    /* Digests are lowercase hex only. */
    char upper[128];
    snprintf(upper, sizeof(upper), "alpine@sha256:ABCDEF%s", &D64[6]); /* 64 hex digits */
    assert_int_equal(ref_parse(&r, upper, &e), -1);
    assert_non_null(strstr(e.msg, "invalid digest 'sha256:ABCDEF"));
}

/* The grammar the registry client and job payloads check names with. */
static void test_ref__repo_and_tag_grammar(void **state)
{
    (void)state;
    const char *good_repos[] = {"library/debian", "a", "a/b/c", "my-org/my_repo", "a__b", "a.b-c",
                                "x--y", "0/9"};
    for (size_t i = 0; i < sizeof(good_repos) / sizeof(good_repos[0]); i++)
        assert_true(ref_repo_valid(good_repos[i]));
    const char *bad_repos[] = {"", "Library/debian", "a//b", "/a", "a/", "a___b", "a-", "-a",
                               "a..b", "a b", "a:b", NULL};
    for (size_t i = 0; i < sizeof(bad_repos) / sizeof(bad_repos[0]); i++)
        assert_false(ref_repo_valid(bad_repos[i]));
    char longrepo[300];
    memset(longrepo, 'a', sizeof(longrepo) - 1);
    longrepo[sizeof(longrepo) - 1] = '\0';
    assert_false(ref_repo_valid(longrepo));
    assert_true(ref_tag_valid("latest"));
    assert_true(ref_tag_valid("_1.2-rc"));
    assert_false(ref_tag_valid(".hidden"));
    assert_false(ref_tag_valid("-x"));
    assert_false(ref_tag_valid("a:b"));
    assert_false(ref_tag_valid(""));
    assert_true(ref_repo_valid("library/debian"));
    assert_true(ref_repo_valid("a__b/c-d--e/f.g_h"));
    assert_false(ref_repo_valid("a___b"));
    assert_false(ref_repo_valid("a-"));
    assert_false(ref_repo_valid("/a"));
    assert_false(ref_repo_valid("a/"));
    assert_false(ref_repo_valid(""));
    assert_true(ref_tag_valid("_x"));
    assert_true(ref_tag_valid("1.2.3-alpine"));
    assert_false(ref_tag_valid("-x"));
    assert_false(ref_tag_valid(""));
    char tag[130];
    memset(tag, 'a', 128);
    tag[128] = '\0';
    assert_true(ref_tag_valid(tag));
    tag[128] = 'a';
    tag[129] = '\0';
    assert_false(ref_tag_valid(tag));
}

static void test_ref__lengths(void **state)
{
    (void)state;
    /* docker.io/ + library/ + 237 = 255: the longest official name. */
    char name[300];
    memset(name, 'a', 237);
    name[237] = '\0';
    char *want = xasprintf("docker.io/library/%s", name);
    expect(name, want);
    free(want);
    name[237] = 'a';
    name[238] = '\0';
    struct ref r;
    struct err e = {""};
    assert_int_equal(ref_parse(&r, name, &e), -1);
    assert_non_null(strstr(e.msg, "': name too long (256 characters as "
                                  "docker.io/library/aaaaaaaaaaaa..., at most 255)"));
    assert_true(strlen(e.msg) < ERR_MSG_MAX - 1);
    /* Far past any valid length: refused before parsing, input quoted bounded. */
    char *huge = xmalloc(100001);
    memset(huge, 'b', 100000);
    huge[100000] = '\0';
    assert_int_equal(ref_parse(&r, huge, &e), -1);
    assert_non_null(strstr(e.msg, "too long (100000 bytes, at most 456)"));
    assert_non_null(strstr(e.msg, "bbb...'"));
    free(huge);
}

static void test_ref__empty_and_binary(void **state)
{
    (void)state;
    refuse("", "reference is empty");
    refuse(NULL, "reference is empty");
    refuse("al pine", "'al pine': invalid byte 0x20 at position 3");
    refuse("alpine!", "'alpine!': invalid character '!' at position 7");
    refuse("al\x01pine", "'al?pine': invalid byte 0x01 at position 3");
    refuse("al\xffpine", "'al?pine': invalid byte 0xff at position 3");
    refuse("alpine\n", "'alpine?': invalid byte 0x0a at position 7");
    /* Every byte value at every position of a short reference: never a crash,
     * and every error names the input. */
    char s[] = "docker.io/library/alpine:3@";
    for (size_t pos = 0; pos + 1 < sizeof(s); pos++)
        for (int b = 1; b < 256; b++) {
            char t[sizeof(s)];
            memcpy(t, s, sizeof(s));
            t[pos] = (char)b;
            struct ref r;
            struct err e = {""};
            if (ref_parse(&r, t, &e) == 0) {
                char *f = ref_format(&r);
                struct ref again;
                assert_int_equal(ref_parse(&again, f, &e), 0);
                ref_free(&again);
                free(f);
                ref_free(&r);
            } else {
                assert_true(e.msg[0] == '\'');
            }
        }
}

static void test_ref__official_repo(void **state)
{
    (void)state;
    official("alpine", "alpine");
    official("library/alpine", "alpine");
    official("docker.io/library/alpine", "alpine");
    official("index.docker.io/library/alpine", "alpine");
    official("docker.io/hello-world", "hello-world");
    not_official("ghcr.io/x/y", "'ghcr.io/x/y' is on ghcr.io, not Docker Hub");
    not_official("localhost:5000/alpine", "'localhost:5000/alpine' is on localhost:5000, not "
                                          "Docker Hub");
    not_official("bitnami/redis", "'bitnami/redis' is not an official image (library/*)");
    not_official("library/a/b", "'library/a/b' is not an official image (library/*)");
    not_official("alpine:3.20", "'alpine:3.20' names a tag: select tags with --tags");
    not_official("alpine@" DIG, "'alpine@" DIG "' names a digest, not a repository");
    not_official("Alpine", "'Alpine': uppercase letters are not allowed in a repository name "
                           "('A' at position 1)");
    not_official("", "reference is empty");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref__docker_hub_normalisation),
        cmocka_unit_test(test_ref__domains),
        cmocka_unit_test(test_ref__path_components),
        cmocka_unit_test(test_ref__uppercase),
        cmocka_unit_test(test_ref__tags_and_digests),
        cmocka_unit_test(test_ref__repo_and_tag_grammar),
        cmocka_unit_test(test_ref__lengths),
        cmocka_unit_test(test_ref__empty_and_binary),
        cmocka_unit_test(test_ref__official_repo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
