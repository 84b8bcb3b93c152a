/* Unit tests for common/keys: every key name under one prefix, encoded parts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keys.h"

static void test_keys__default_prefix_layout(void **state)
{
    (void)state;
    struct keys k;
    struct err e;
    assert_int_equal(keys_init(&k, NULL, &e), 0);
    assert_string_equal(k.prefix, "hubsync:");
    assert_string_equal(k.jobs, "hubsync:jobs");
    assert_string_equal(k.jobs_index, "hubsync:jobs:index");
    assert_string_equal(k.jobs_delayed, "hubsync:jobs:delayed");
    assert_string_equal(k.jobs_delayed_payload, "hubsync:jobs:delayed:payload");
    assert_string_equal(k.jobs_delayed_count, "hubsync:jobs:delayed:count");
    assert_string_equal(k.jobs_dead, "hubsync:jobs:dead");
    assert_string_equal(k.runs, "hubsync:runs");
    assert_string_equal(k.run_current, "hubsync:runs:current");
    assert_string_equal(k.synced_commit, "hubsync:synced-commit");
    assert_string_equal(k.budgets, "hubsync:budgets");
    assert_string_equal(k.workers, "hubsync:workers");
    assert_string_equal(k.coordinator, "hubsync:coordinator");
    assert_string_equal(k.stats, "hubsync:stats");
    assert_string_equal(k.ctl_paused, "hubsync:ctl:paused");
    assert_string_equal(k.manifests, "hubsync:manifests");
    assert_string_equal(k.assist, "hubsync:assist");
    keys_free(&k);
    assert_null(k.jobs);
    keys_free(&k); /* twice is harmless */
}

/* The bundle queue's keys sit under "bundle:"; the rest are the usual ones. */
static void test_keys__bundle_queue_layout(void **state)
{
    (void)state;
    struct keys k;
    struct err e;
    assert_int_equal(keys_init_bundle(&k, "t:", &e), 0);
    assert_string_equal(k.jobs, "t:bundle:jobs");
    assert_string_equal(k.jobs_index, "t:bundle:jobs:index");
    assert_string_equal(k.jobs_delayed, "t:bundle:jobs:delayed");
    assert_string_equal(k.jobs_delayed_payload, "t:bundle:jobs:delayed:payload");
    assert_string_equal(k.jobs_delayed_count, "t:bundle:jobs:delayed:count");
    assert_string_equal(k.jobs_dead, "t:bundle:jobs:dead");
    assert_string_equal(k.jobs_handover, "t:bundle:jobs:handover");
    assert_string_equal(k.runs, "t:bundle:runs");
    assert_string_equal(k.run_current, "t:bundle:current");
    assert_string_equal(k.stats, "t:bundle:stats");
    char *run = keys_run(&k, "abc-1"), *settled = keys_run_settled(&k, "abc-1");
    assert_string_equal(run, "t:bundle:run:abc-1");
    assert_string_equal(settled, "t:bundle:run:abc-1:settled");
    assert_string_equal(k.workers, "t:workers");
    assert_string_equal(k.ctl_paused, "t:ctl:paused");
    assert_string_equal(k.synced_commit, "t:synced-commit");
    free(run);
    free(settled);
    keys_free(&k);
    assert_int_equal(keys_init_bundle(&k, "bad prefix", &e), -1);
}

static void test_keys__variable_keys(void **state)
{
    (void)state;
    struct keys k;
    struct err e;
    assert_int_equal(keys_init(&k, "t1:", &e), 0);
    char *s;
    s = keys_run(&k, "20261129T020000Z");
    assert_string_equal(s, "t1:run:20261129T020000Z");
    free(s);
    s = keys_run_keys(&k, "20261129T020000Z");
    assert_string_equal(s, "t1:run:20261129T020000Z:keys");
    free(s);
    s = keys_run_entries(&k, "20261129T020000Z");
    assert_string_equal(s, "t1:run:20261129T020000Z:entries");
    free(s);
    s = keys_run_entry_of(&k, "20261129T020000Z");
    assert_string_equal(s, "t1:run:20261129T020000Z:entry-of");
    free(s);
    s = keys_target(&k, "http://127.0.0.1:5000");
    assert_string_equal(s, "t1:target:http://127.0.0.1:5000");
    free(s);
    s = keys_present(&k, "http://127.0.0.1:5000", "0123456789ab", "library/debian");
    assert_string_equal(s, "t1:present:http://127.0.0.1:5000:0123456789ab:library/debian");
    free(s);
    s = keys_blobhome(&k, "https://Registry.Example:443/", "0123456789ab");
    assert_string_equal(s, "t1:blobhome:https://registry.example:443:0123456789ab");
    free(s);
    s = keys_breaker(&k, "https://Registry.Example:443/v2/");
    assert_string_equal(s, "t1:breaker:https://registry.example:443");
    free(s);
    s = keys_blob_lock(&k, "http://127.0.0.1:5000", "sha256:abcd");
    assert_string_equal(s, "t1:lock:blob:http://127.0.0.1:5000:sha256:abcd");
    free(s);
    s = keys_budget(&k, "192.0.2.1");
    assert_string_equal(s, "t1:budget:192.0.2.1");
    free(s);
    s = keys_budget_inflight(&k, "192.0.2.1");
    assert_string_equal(s, "t1:budget:192.0.2.1:inflight");
    free(s);
    s = keys_worker(&k, "host-1:3");
    assert_string_equal(s, "t1:worker:host-1:3");
    free(s);
    keys_free(&k);
}

static void test_keys__parts_are_encoded(void **state)
{
    (void)state;
    struct keys k;
    struct err e;
    assert_int_equal(keys_init(&k, NULL, &e), 0);
    char *s;
    /* ':' in a budget source would collide with the inflight key: encoded. */
    s = keys_budget(&k, "2001:db8::1");
    assert_string_equal(s, "hubsync:budget:2001%3Adb8%3A%3A1");
    free(s);
    /* Spaces, newlines, '%' and non-ASCII never appear raw. */
    s = keys_run(&k, "a b\n%\xc3\xa9");
    assert_string_equal(s, "hubsync:run:a%20b%0A%25%C3%A9");
    free(s);
    /* A run id can never reach the current-run key. */
    s = keys_run(&k, "current");
    assert_string_not_equal(s, k.run_current);
    free(s);
    keys_free(&k);
}

static void test_keys__target_id_drops_credentials(void **state)
{
    (void)state;
    char *t = keys_target_id("https://user:secret@Reg.Example:5000/v2/x?y");
    assert_string_equal(t, "https://reg.example:5000/v2/x");
    free(t);
    t = keys_target_id("");
    assert_string_equal(t, "");
    free(t);
    t = keys_host_port("https://user:secret@Reg.Example:5000/v2/x?y");
    assert_string_equal(t, "reg.example:5000");
    free(t);
    t = keys_host_port("127.0.0.1:5000");
    assert_string_equal(t, "127.0.0.1:5000");
    free(t);
}

/* One target is one identity however its URL is written; scheme, port and
 * path make different targets. */
static void test_keys__target_id_is_the_whole_identity(void **state)
{
    (void)state;
    static const struct {
        const char *url, *id;
    } cases[] = {
        {"https://Registry.Example", "https://registry.example:443"},
        {"https://registry.example:443/", "https://registry.example:443"},
        {"https://registry.example/v2/", "https://registry.example:443"},
        {"HTTP://registry.example", "http://registry.example:80"},
        {"http://registry.example:5000", "http://registry.example:5000"},
        {"https://registry.example/Mirror/", "https://registry.example:443/Mirror"},
        {"https://registry.example/mirror/v2", "https://registry.example:443/mirror"},
        {"http://[::1]:5000/", "http://[::1]:5000"},
        {"https://[::1]", "https://[::1]:443"},
        {"http://127.0.0.1:5000#x", "http://127.0.0.1:5000"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *t = keys_target_id(cases[i].url);
        assert_string_equal(t, cases[i].id);
        free(t);
    }
    /* IPv6 brackets are encoded in a key; the epoch and repository parts
     * never hold a ':', so the key still splits from the right. */
    struct keys k;
    struct err e;
    assert_int_equal(keys_init(&k, NULL, &e), 0);
    char *s = keys_present(&k, "http://[::1]:5000", "0123456789ab", "a:b");
    assert_string_equal(s, "hubsync:present:http://%5B::1%5D:5000:0123456789ab:a%3Ab");
    free(s);
    keys_free(&k);
}

static void test_keys__bad_prefix(void **state)
{
    (void)state;
    struct keys k;
    struct err e;
    assert_int_equal(keys_init(&k, "", &e), -1);
    assert_non_null(strstr(e.msg, "key prefix"));
    assert_int_equal(keys_init(&k, "has space:", &e), -1);
    assert_non_null(strstr(e.msg, "character 4"));
    char longp[KEYS_PREFIX_MAX + 2];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[sizeof(longp) - 1] = '\0';
    assert_int_equal(keys_init(&k, longp, &e), -1);
    assert_non_null(strstr(e.msg, "length"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys__default_prefix_layout),
        cmocka_unit_test(test_keys__bundle_queue_layout),
        cmocka_unit_test(test_keys__variable_keys),
        cmocka_unit_test(test_keys__parts_are_encoded),
        cmocka_unit_test(test_keys__target_id_drops_credentials),
        cmocka_unit_test(test_keys__target_id_is_the_whole_identity),
        cmocka_unit_test(test_keys__bad_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
