/* Unit tests for common/digest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "digest.h"

#define EMPTY "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define ABC "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

static void test_digest__known_vectors(void **state)
{
    (void)state;
    char out[DIGEST_STR_SIZE];
    digest_of("", 0, out);
    assert_string_equal(out, EMPTY);
    digest_of("abc", 3, out);
    assert_string_equal(out, ABC);
}

static void test_digest__streaming_equals_one_shot(void **state)
{
    (void)state;
    static char data[100000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)(i * 7 + 3);
    char whole[DIGEST_STR_SIZE], parts[DIGEST_STR_SIZE];
    digest_of(data, sizeof(data), whole);
    struct digest_ctx *d = digest_new();
    size_t off = 0, step = 1;
    while (off < sizeof(data)) {
        size_t n = step < sizeof(data) - off ? step : sizeof(data) - off;
        digest_update(d, data + off, n);
        off += n;
        step = step * 3 + 1;
    }
    digest_final(d, parts);
    assert_string_equal(whole, parts);
    /* reset makes the context reusable */
    digest_reset(d);
    digest_update(d, "abc", 3);
    digest_final(d, parts);
    assert_string_equal(parts, ABC);
    digest_free(d);
    digest_free(NULL);
}

static void test_digest__valid(void **state)
{
    (void)state;
    assert_true(digest_valid(EMPTY));
    assert_false(digest_valid(NULL));
    assert_false(digest_valid(""));
    assert_false(digest_valid("sha256:"));
    /* uppercase hex, wrong algorithm, short, long, junk */
    assert_false(digest_valid("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"));
    assert_false(digest_valid("sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    assert_false(digest_valid("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85"));
    assert_false(digest_valid(EMPTY "0"));
    assert_false(digest_valid("sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
}

static void test_digest__parse_reports_what(void **state)
{
    (void)state;
    char out[DIGEST_STR_SIZE];
    struct err e;
    /* not NUL-terminated input is fine */
    char buf[100];
    memcpy(buf, EMPTY "garbage", sizeof(EMPTY) - 1 + 7);
    assert_int_equal(digest_parse(buf, sizeof(EMPTY) - 1, "x", out, &e), 0);
    assert_string_equal(out, EMPTY);
    assert_int_equal(digest_parse("md5:abc\n", 8, "Docker-Content-Digest", out, &e), -1);
    assert_non_null(strstr(e.msg, "Docker-Content-Digest"));
    assert_non_null(strstr(e.msg, "md5:abc?"));
    assert_int_equal(digest_parse(NULL, 0, "d", out, NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest__known_vectors),
        cmocka_unit_test(test_digest__streaming_equals_one_shot),
        cmocka_unit_test(test_digest__valid),
        cmocka_unit_test(test_digest__parse_reports_what),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
