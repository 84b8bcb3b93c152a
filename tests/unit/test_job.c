/* Unit tests for common/job: encoding, strict decoding, field grammars. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "job.h"
#include "xalloc.h"

#define SAMPLE                                                                              \
    "{\"v\":1,\"run\":\"20261129T020000Z\",\"key\":\"debian:bookworm\","                   \
    "\"upstream\":\"https://registry-1.docker.io\",\"source_repo\":\"library/debian\","    \
    "\"target\":\"http://127.0.0.1:5000\",\"target_repo\":\"library/debian\","             \
    "\"tags\":[\"bookworm\",\"12\"],\"platforms\":[\"linux/amd64\",\"linux/arm/v7\"],"     \
    "\"platform_policy\":\"all\",\"reason\":\"changed\",\"attempt\":0}"

/* Decode SAMPLE with the text `member` replaced by repl (",\"name\":value"
 * with repl "" removes a member); returns job_decode's result, message in e. */
static int decode_with(const char *member, const char *repl, struct err *e)
{
    char *text = xstrdup(SAMPLE);
    char *at = strstr(text, member);
    assert_non_null(at);
    size_t mlen = strlen(member);
    char *joined = xasprintf("%.*s%s%s", (int)(at - text), text, repl, at + mlen);
    struct job j;
    int rc = job_decode(&j, joined, strlen(joined), e);
    if (rc == 0)
        job_free(&j);
    free(joined);
    free(text);
    return rc;
}

static void expect_error(const char *member, const char *repl, const char *needle)
{
    struct err e;
    assert_int_equal(decode_with(member, repl, &e), -1);
    if (!strstr(e.msg, needle))
        fail_msg("error '%s' does not mention '%s'", e.msg, needle);
}

static void test_job__roundtrip_is_stable(void **state)
{
    (void)state;
    struct job j;
    struct err e;
    assert_int_equal(job_decode(&j, SAMPLE, strlen(SAMPLE), &e), 0);
    assert_int_equal(j.version, 1);
    assert_string_equal(j.run, "20261129T020000Z");
    assert_string_equal(j.key, "debian:bookworm");
    assert_string_equal(j.upstream, "https://registry-1.docker.io");
    assert_string_equal(j.source_repo, "library/debian");
    assert_string_equal(j.target, "http://127.0.0.1:5000");
    assert_string_equal(j.target_repo, "library/debian");
    assert_int_equal(j.ntags, 2);
    assert_string_equal(j.tags[1], "12");
    assert_int_equal(j.nplatforms, 2);
    assert_string_equal(j.platforms[1], "linux/arm/v7");
    assert_int_equal(j.policy, JOB_POLICY_ALL);
    assert_int_equal(j.reason, JOB_REASON_CHANGED);
    assert_int_equal(j.attempt, 0);
    char *text = job_encode(&j, &e);
    assert_non_null(text);
    /* Compact, fixed key order: encoding the decoded sample gives it back. */
    assert_string_equal(text, SAMPLE);
    free(text);
    job_free(&j);
    job_free(&j);
}

static void test_job__decode_not_nul_terminated(void **state)
{
    (void)state;
    size_t n = strlen(SAMPLE);
    char *copy = xmalloc(n + 5);
    memcpy(copy, SAMPLE, n);
    memcpy(copy + n, "junk", 5);
    struct job j;
    struct err e;
    assert_int_equal(job_decode(&j, copy, n, &e), 0);
    job_free(&j);
    assert_int_equal(job_decode(&j, copy, n + 4, &e), -1);
    assert_non_null(strstr(e.msg, "invalid JSON"));
    free(copy);
}

static void test_job__optional_and_unknown_fields(void **state)
{
    (void)state;
    struct err e;
    /* attempt may be left out; unknown fields are ignored. */
    assert_int_equal(decode_with(",\"attempt\":0", "", &e), 0);
    assert_int_equal(decode_with("\"attempt\":0", "\"attempt\":3,\"future\":{\"x\":[1]}", &e),
                     0);
}

static void test_job__registry_wait_round_trips(void **state)
{
    (void)state;
    struct job j, back;
    struct err e;
    assert_int_equal(job_decode(&j, SAMPLE, strlen(SAMPLE), &e), 0);
    assert_int_equal(j.registry_wait_ms, 0);
    /* Past 2^31 ms: a wait of weeks fits. */
    j.registry_wait_ms = 3000000000LL;
    char *text = job_encode(&j, &e);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"attempt\":0,\"registry_wait_ms\":3000000000}"));
    assert_int_equal(job_decode(&back, text, strlen(text), &e), 0);
    assert_int_equal(back.registry_wait_ms, 3000000000LL);
    free(text);
    job_free(&back);
    j.registry_wait_ms = -1;
    assert_null(job_encode(&j, &e));
    assert_non_null(strstr(e.msg, "'registry_wait_ms'"));
    job_free(&j);
    expect_error("\"attempt\":0", "\"attempt\":0,\"registry_wait_ms\":-5", "'registry_wait_ms'");
    expect_error("\"attempt\":0", "\"attempt\":0,\"registry_wait_ms\":\"1\"",
                 "'registry_wait_ms': not an integer");
}

#define PIN "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* Pinned digests: after the tags, only when there are some; with no tag at all too. */
static void test_job__digests_round_trip(void **state)
{
    (void)state;
    struct job j, back;
    struct err e;
    assert_int_equal(job_decode(&j, SAMPLE, strlen(SAMPLE), &e), 0);
    assert_int_equal(j.ndigests, 0);
    char *pins[] = {(char *)PIN};
    char **tags = j.tags;
    size_t ntags = j.ntags;
    j.digests = pins;
    j.ndigests = 1;
    j.tags = NULL;
    j.ntags = 0;
    char *text = job_encode(&j, &e);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"tags\":[],\"digests\":[\"" PIN "\"],\"platforms\""));
    assert_int_equal(job_decode(&back, text, strlen(text), &e), 0);
    assert_int_equal(back.ntags, 0);
    assert_int_equal(back.ndigests, 1);
    assert_string_equal(back.digests[0], PIN);
    free(text);
    job_free(&back);
    j.policy = JOB_POLICY_REWRITE;
    assert_null(job_encode(&j, &e));
    assert_non_null(strstr(e.msg, "'digests'"));
    j.digests = NULL;
    j.ndigests = 0;
    j.tags = tags;
    j.ntags = ntags;
    job_free(&j);
    expect_error("\"tags\":[\"bookworm\",\"12\"]", "\"tags\":[],\"digests\":[\"latest\"]",
                 "'digests'[0]: 'latest' is not a valid digest");
    expect_error("\"tags\":[\"bookworm\",\"12\"]", "\"tags\":[],\"digests\":[]",
                 "'tags': 0 tags");
}

/* Referrer tags: after the digests, only when there are some, each a tag. */
static void test_job__referrers_round_trip(void **state)
{
    (void)state;
    struct job j, back;
    struct err e;
    assert_int_equal(job_decode(&j, SAMPLE, strlen(SAMPLE), &e), 0);
    char *refs[] = {(char *)"sha256-0123.sig", (char *)"sha256-0123.att"};
    j.referrers = refs;
    j.nreferrers = 2;
    char *text = job_encode(&j, &e);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"tags\":[\"bookworm\",\"12\"],\"referrers\":"
                                 "[\"sha256-0123.sig\",\"sha256-0123.att\"],\"platforms\""));
    assert_int_equal(job_decode(&back, text, strlen(text), &e), 0);
    assert_int_equal(back.nreferrers, 2);
    assert_string_equal(back.referrers[1], "sha256-0123.att");
    free(text);
    job_free(&back);
    j.referrers = NULL;
    j.nreferrers = 0;
    job_free(&j);
    expect_error("\"tags\":[\"bookworm\",\"12\"]",
                 "\"tags\":[\"bookworm\"],\"referrers\":[\"a b\"]",
                 "'referrers'[0]: 'a b' is not a valid tag");
}

/* Asking the referrers API: "find_referrers":true after the referrers, only when set. */
static void test_job__find_referrers_round_trip(void **state)
{
    (void)state;
    struct job j, back;
    struct err e;
    assert_int_equal(job_decode(&j, SAMPLE, strlen(SAMPLE), &e), 0);
    assert_int_equal(j.find_referrers, 0);
    char *text = job_encode(&j, &e);
    assert_null(strstr(text, "find_referrers"));
    free(text);
    j.find_referrers = 1;
    text = job_encode(&j, &e);
    assert_non_null(strstr(text, "\"tags\":[\"bookworm\",\"12\"],\"find_referrers\":true,"));
    assert_int_equal(job_decode(&back, text, strlen(text), &e), 0);
    assert_int_equal(back.find_referrers, 1);
    free(text);
    job_free(&back);
    job_free(&j);
    expect_error("\"tags\":[\"bookworm\",\"12\"]",
                 "\"tags\":[\"bookworm\"],\"find_referrers\":1",
                 "'find_referrers': not a boolean");
}

static void test_job__field_errors_name_the_field(void **state)
{
    (void)state;
    expect_error("\"v\":1", "\"v\":2", "'v': version 2");
    expect_error("\"v\":1", "\"v\":\"1\"", "'v': not an integer");
    expect_error(",\"run\":\"20261129T020000Z\"", "", "'run': missing");
    expect_error("\"run\":\"20261129T020000Z\"", "\"run\":\"a b\"", "'run'");
    expect_error("\"key\":\"debian:bookworm\"", "\"key\":\"\"", "'key'");
    expect_error("\"key\":\"debian:bookworm\"", "\"key\":7", "'key': not a string");
    expect_error("\"upstream\":\"https://registry-1.docker.io\"",
                 "\"upstream\":\"ftp://registry-1.docker.io\"", "'upstream'");
    expect_error("\"target\":\"http://127.0.0.1:5000\"",
                 "\"target\":\"http://user:pw@127.0.0.1:5000\"", "'target'");
    expect_error("\"target\":\"http://127.0.0.1:5000\"", "\"target\":\"http://127.0.0.1:0\"",
                 "'target'");
    expect_error("\"source_repo\":\"library/debian\"", "\"source_repo\":\"Library/Debian\"",
                 "'source_repo'");
    expect_error("\"target_repo\":\"library/debian\"", "\"target_repo\":\"library//debian\"",
                 "'target_repo'");
    expect_error("\"tags\":[\"bookworm\",\"12\"]", "\"tags\":[]", "'tags': 0 tags");
    expect_error("\"tags\":[\"bookworm\",\"12\"]", "\"tags\":[\"ok\",\".bad\"]", "'tags'[1]");
    expect_error("\"tags\":[\"bookworm\",\"12\"]", "\"tags\":[\"a\",\"a\"]", "appears twice");
    expect_error("\"tags\":[\"bookworm\",\"12\"]", "\"tags\":[\"a\",3]", "'tags'[1]: not a");
    expect_error("\"tags\":[\"bookworm\",\"12\"]", "\"tags\":\"bookworm\"", "not an array");
    expect_error("\"platforms\":[\"linux/amd64\",\"linux/arm/v7\"]", "\"platforms\":[\"linux\"]",
                 "'platforms'[0]");
    expect_error("\"platforms\":[\"linux/amd64\",\"linux/arm/v7\"]",
                 "\"platforms\":[\"linux/arm/v7/x\"]", "'platforms'[0]");
    expect_error("\"platform_policy\":\"all\"", "\"platform_policy\":\"some\"",
                 "'platform_policy': unknown value 'some'");
    expect_error("\"platforms\":[\"linux/amd64\",\"linux/arm/v7\"],\"platform_policy\":\"all\"",
                 "\"platforms\":[],\"platform_policy\":\"sparse\"", "needs at least one");
    expect_error("\"reason\":\"changed\"", "\"reason\":\"because\"", "'reason'");
    expect_error("\"attempt\":0", "\"attempt\":-1", "'attempt'");
    expect_error("\"attempt\":0", "\"attempt\":1001", "'attempt'");
    expect_error("\"run\":\"20261129T020000Z\"",
                 "\"run\":\"20261129T020000Z\",\"run\":\"x\"", "invalid JSON");
}

static void test_job__bad_payloads(void **state)
{
    (void)state;
    struct job j;
    struct err e;
    assert_int_equal(job_decode(&j, "", 0, &e), -1);
    assert_non_null(strstr(e.msg, "invalid JSON"));
    assert_int_equal(job_decode(&j, "[1,2]", 5, &e), -1);
    assert_non_null(strstr(e.msg, "not a JSON object"));
    assert_int_equal(job_decode(&j, "{\"v\":1,\"run\":\"a\\u0000b\"}", 24, &e), -1);
    /* Too big is refused before parsing. */
    size_t big = JOB_MAX_BYTES + 1;
    char *p = xmalloc(big);
    memset(p, ' ', big);
    assert_int_equal(job_decode(&j, p, big, &e), -1);
    assert_non_null(strstr(e.msg, "more than 65536"));
    free(p);
    /* A job with too many tags is refused by count, not by memory. */
    struct buf b = BUF_INIT(1 << 20);
    buf_puts(&b, "{\"v\":1,\"tags\":[");
    for (int i = 0; i <= JOB_MAX_TAGS; i++)
        buf_printf(&b, "%s\"t%d\"", i ? "," : "", i);
    buf_puts(&b, "]}");
    assert_int_equal(job_decode(&j, b.data, b.len, &e), -1);
    buf_free(&b);
}

static void test_job__encode_validates(void **state)
{
    (void)state;
    struct job j;
    struct err e;
    assert_int_equal(job_decode(&j, SAMPLE, strlen(SAMPLE), &e), 0);
    for (size_t i = 0; i < j.nplatforms; i++)
        free(j.platforms[i]);
    j.nplatforms = 0;
    free(j.target);
    j.target = xstrdup("http://[::1]:5000/mirror");
    j.reason = JOB_REASON_CHECK;
    j.attempt = 2;
    char *text = job_encode(&j, &e);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"target\":\"http://[::1]:5000/mirror\""));
    assert_non_null(strstr(text, "\"platforms\":[]"));
    assert_non_null(strstr(text, "\"reason\":\"check\",\"attempt\":2}"));
    free(text);
    j.key[6] = ' ';
    assert_null(job_encode(&j, &e));
    assert_non_null(strstr(e.msg, "'key'"));
    j.key[6] = ':';
    j.policy = JOB_POLICY_REWRITE;
    assert_null(job_encode(&j, &e));
    assert_non_null(strstr(e.msg, "needs at least one platform"));
    job_free(&j);
}

static void test_job__grammars(void **state)
{
    (void)state;
    assert_true(job_platform_valid("linux/arm64/v8"));
    assert_true(job_platform_valid("windows/amd64"));
    assert_false(job_platform_valid("linux//amd64"));
    assert_false(job_platform_valid("Linux/amd64"));
    assert_true(job_url_valid("https://registry-1.docker.io"));
    assert_true(job_url_valid("http://127.0.0.1:5000/"));
    assert_false(job_url_valid("http://"));
    assert_false(job_url_valid("http://host:99999"));
    assert_false(job_url_valid("http://host/a b"));
    assert_false(job_url_valid("http://host?x=1"));
    assert_false(job_url_valid("https://u@host"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job__roundtrip_is_stable),
        cmocka_unit_test(test_job__decode_not_nul_terminated),
        cmocka_unit_test(test_job__optional_and_unknown_fields),
        cmocka_unit_test(test_job__registry_wait_round_trips),
        cmocka_unit_test(test_job__digests_round_trip),
        cmocka_unit_test(test_job__referrers_round_trip),
        cmocka_unit_test(test_job__find_referrers_round_trip),
        cmocka_unit_test(test_job__field_errors_name_the_field),
        cmocka_unit_test(test_job__bad_payloads),
        cmocka_unit_test(test_job__encode_validates),
        cmocka_unit_test(test_job__grammars),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
