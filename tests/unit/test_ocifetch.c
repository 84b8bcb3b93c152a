/* Unit tests for common/ocifetch: an export job's payload reads back as
 * written, and an untrusted one is refused naming what is wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ocifetch.h"

#define D_A "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
#define D_B "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static void test_ocifetch__job_round_trip(void **state)
{
    (void)state;
    char lib[] = "library/alpine", mirror[] = "mirror/library/alpine";
    struct ocifetch_item items[] = {{lib, D_A, 527, 1}, {mirror, D_B, 0, 0}};
    char *json = ocifetch_job_encode("0123456789ab-1700000000000", items, 2);
    struct ocifetch_job j;
    struct err e;
    assert_int_equal(ocifetch_job_decode(json, strlen(json), &j, &e), 0);
    assert_string_equal(j.run, "0123456789ab-1700000000000");
    assert_int_equal(j.nitems, 2);
    assert_string_equal(j.items[0].repo, "library/alpine");
    assert_string_equal(j.items[0].digest, D_A);
    assert_int_equal(j.items[0].size, 527);
    assert_true(j.items[0].manifest);
    assert_string_equal(j.items[1].repo, "mirror/library/alpine");
    assert_false(j.items[1].manifest);
    ocifetch_job_free(&j);
    free(json);
}

/* Each bad payload is refused with what is wrong named. */
static void test_ocifetch__job_refused(void **state)
{
    (void)state;
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"[]", "not a JSON object"},
        {"{\"run\": \"r\"}", "run (a string) and objects (an array) are required"},
        {"{\"run\": 1, \"objects\": []}", "run (a string)"},
        {"{\"run\": \"r\", \"objects\": [{\"repo\": \"../etc\", \"digest\": \"" D_A
         "\", \"size\": 1, \"manifest\": false}]}",
         "objects[0]: no valid repo"},
        {"{\"run\": \"r\", \"objects\": [{\"repo\": \"a\", \"digest\": \"sha256:../x\", "
         "\"size\": 1, \"manifest\": false}]}",
         "objects[0]: no valid sha256 digest"},
        {"{\"run\": \"r\", \"objects\": [{\"repo\": \"a\", \"digest\": \"" D_A
         "\", \"size\": 1, \"manifest\": true}, {\"repo\": \"a\", \"digest\": \"" D_A
         "\", \"size\": -1, \"manifest\": false}]}",
         "objects[1]: no valid size"},
        {"{\"run\": \"r\", \"objects\": [{\"repo\": \"a\", \"digest\": \"" D_A
         "\", \"size\": 1, \"manifest\": 1}]}",
         "objects[0]: manifest is not true or false"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ocifetch_job j;
        struct err e;
        assert_int_equal(ocifetch_job_decode(cases[i].json, strlen(cases[i].json), &j, &e), -1);
        if (!strstr(e.msg, cases[i].want))
            fail_msg("case %zu: '%s' lacks '%s'", i, e.msg, cases[i].want);
        assert_non_null(strstr(e.msg, "bundle job: "));
        ocifetch_job_free(&j);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ocifetch__job_round_trip),
        cmocka_unit_test(test_ocifetch__job_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
