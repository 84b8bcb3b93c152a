/* Unit tests for common/tagfilter: every kind of include and exclude and
 * newest N, against the real tag lists of official repositories in the
 * shared official-images data (the tags a registry would list for them:
 * every group's tags, sorted), plus the errors of bad items. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "catalog.h"
#include "tagfilter.h"
#include "xalloc.h"

#define REPOS "alpine golang nginx node postgres python redis"

/* The tags of each repository of REPOS, sorted as tags/list answers. */
struct lists {
    struct strv names;
    struct strv *tags; /* per name */
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load(void **state)
{
    struct err e;
    const char *env = getenv("HUBSYNC_TEST_OFFICIAL_IMAGES");
    struct catalog *c = NULL;
    struct catalog_snapshot *snap = NULL;
    struct lists *l = xcalloc(1, sizeof(*l));
    char all[] = REPOS;
    for (char *tok = strtok(all, " "); tok; tok = strtok(NULL, " "))
        strv_push(&l->names, xstrdup(tok));
    if (!env || catalog_open(&c, env, NULL, NULL, &e) < 0 ||
        catalog_read(c, NULL, &l->names, &snap, &e) < 0) {
        print_error("official-images data (HUBSYNC_TEST_OFFICIAL_IMAGES=%s): %s\n",
                    env ? env : "unset: run tests/run.py", env ? e.msg : "");
        catalog_close(c);
        strv_free(&l->names);
        free(l);
        return -1;
    }
    l->tags = xcalloc(l->names.n, sizeof(*l->tags));
    for (size_t r = 0; r < snap->nrepos; r++) {
        size_t i = 0;
        while (strcmp(l->names.v[i], snap->repos[r]->name) != 0)
            i++;
        struct strv *t = &l->tags[i];
        for (size_t g = 0; g < snap->repos[r]->ngroups; g++) {
            const struct strv *gt = &snap->repos[r]->groups[g].tags;
            for (size_t k = 0; k < gt->n; k++) {
                int seen = 0;
                for (size_t j = 0; j < t->n && !seen; j++)
                    seen = strcmp(t->v[j], gt->v[k]) == 0;
                if (!seen)
                    strv_push(t, xstrdup(gt->v[k]));
            }
        }
        qsort(t->v, t->n, sizeof(char *), cmp_str);
    }
    catalog_snapshot_free(snap);
    catalog_close(c);
    *state = l;
    return 0;
}

static int unload(void **state)
{
    struct lists *l = *state;
    if (!l) /* load failed and said why */
        return 0;
    for (size_t i = 0; i < l->names.n; i++)
        strv_free(&l->tags[i]);
    free(l->tags);
    strv_free(&l->names);
    free(l);
    return 0;
}

static const struct strv *tags_of(void **state, const char *repo)
{
    struct lists *l = *state;
    if (!l) /* load failed and said why */
        return 0;
    for (size_t i = 0; i < l->names.n; i++)
        if (strcmp(l->names.v[i], repo) == 0)
            return &l->tags[i];
    fail_msg("no tags of %s", repo);
    return NULL;
}

/* One filter: kind:text items, then newest. */
struct item {
    enum tagfilter_kind kind;
    const char *text;
};

/* The tags of t the filter takes, joined by spaces. */
static char *apply_to(const struct strv *t, const struct item *items, int newest,
                      enum tagfilter_order order)
{
    struct tagfilter *f = tagfilter_new();
    struct err e = {""};
    for (; items && items->text; items++)
        if (tagfilter_add(f, items->kind, items->text, &e) < 0)
            fail_msg("%s: %s", items->text, e.msg);
    if (newest)
        tagfilter_newest(f, newest, order);
    const char **out = xcalloc(t->n, sizeof(*out));
    size_t n = tagfilter_apply(f, (const char *const *)t->v, t->n, out);
    char *joined = xstrdup("");
    for (size_t i = 0; i < n; i++) {
        char *j = xasprintf("%s%s%s", joined, i ? " " : "", out[i]);
        free(joined);
        joined = j;
    }
    free(out);
    tagfilter_free(f);
    return joined;
}

static char *apply(void **state, const char *repo, const struct item *items, int newest,
                   enum tagfilter_order order)
{
    return apply_to(tags_of(state, repo), items, newest, order);
}

static void expect(void **state, const char *repo, const struct item *items, int newest,
                   enum tagfilter_order order, const char *want)
{
    char *got = apply(state, repo, items, newest, order);
    if (strcmp(got, want) != 0)
        fail_msg("%s: got [%s], want [%s]", repo, got, want);
    free(got);
}

static void test_tagfilter__lists_are_real(void **state)
{
    /* The shared data at its HEAD: what the tables below are written against. */
    assert_int_equal(tags_of(state, "alpine")->n, 12);
    assert_int_equal(tags_of(state, "golang")->n, 84);
    assert_int_equal(tags_of(state, "nginx")->n, 112);
    assert_int_equal(tags_of(state, "node")->n, 155);
    assert_int_equal(tags_of(state, "postgres")->n, 72);
    assert_int_equal(tags_of(state, "python")->n, 150);
    assert_int_equal(tags_of(state, "redis")->n, 80);
}

static void test_tagfilter__names(void **state)
{
    const struct item it[] = {{TAGFILTER_NAME, "1.27.0"}, {TAGFILTER_NAME, "latest"},
                              {TAGFILTER_NAME, "nosuch"}, {0, NULL}};
    expect(state, "golang", it, 0, 0, "1.27.0 latest");
    struct tagfilter *f = tagfilter_new();
    struct err e;
    assert_int_equal(tagfilter_add(f, TAGFILTER_NAME, "a", &e), 0);
    assert_int_equal(tagfilter_add(f, TAGFILTER_NAME, "b", &e), 0);
    assert_true(tagfilter_names_only(f));
    const char *const *names;
    assert_int_equal(tagfilter_names(f, &names), 2);
    assert_string_equal(names[1], "b");
    tagfilter_newest(f, 1, TAGFILTER_BY_TAG);
    assert_false(tagfilter_names_only(f));
    tagfilter_free(f);
}

static void test_tagfilter__glob(void **state)
{
    const struct item it[] = {{TAGFILTER_GLOB, "1[67]*-alpine"}, {0, NULL}};
    expect(state, "postgres", it, 0, 0, "16-alpine 16.15-alpine 17-alpine 17.11-alpine");
}

static void test_tagfilter__regex(void **state)
{
    const struct item it[] = {{TAGFILTER_REGEX, "^[0-9]+\\.[0-9]+\\.[0-9]+$"}, {0, NULL}};
    expect(state, "redis", it, 0, 0,
           "6.2.24 7.2.16 7.4.11 8.10.1 8.2.9 8.4.6 8.6.6 8.8.2");
    /* unanchored: anywhere in the tag */
    const struct item sub[] = {{TAGFILTER_REGEX, "otel"}, {TAGFILTER_GLOB, "stable"}, {0, NULL}};
    char *got = apply(state, "nginx", sub, 0, 0);
    assert_non_null(strstr(got, "1.30-alpine3.24-otel "));
    assert_non_null(strstr(got, " mainline-trixie-otel "));
    assert_non_null(strstr(got, " stable "));
    assert_null(strstr(got, "perl"));
    free(got);
}

static void test_tagfilter__semver(void **state)
{
    /* plain versions only: 1.26-alpine is the prerelease "alpine" of 1.26.0 */
    const struct item it[] = {{TAGFILTER_SEMVER, "~1.26 || ^1.27.0"}, {0, NULL}};
    expect(state, "golang", it, 0, 0, "1.26 1.26.7 1.27 1.27.0");
    const struct item x[] = {{TAGFILTER_SEMVER, "1.30.x"}, {0, NULL}};
    expect(state, "nginx", x, 0, 0, "1.30 1.30.4");
    const struct item hyphen[] = {{TAGFILTER_SEMVER, "1.29 - 1.30"}, {0, NULL}};
    expect(state, "nginx", hyphen, 0, 0, "1.30 1.30.4");
    /* a date tag is a version too (20260805.0.0): exclude it by pattern */
    const struct item ge[] = {{TAGFILTER_SEMVER, ">=3.22"}, {0, NULL}};
    expect(state, "alpine", ge, 0, 0, "20260805 3.22 3.22.5 3.23 3.23.5 3.24 3.24.1");
    const struct item nodate[] = {{TAGFILTER_SEMVER, ">=3.22"},
                                  {TAGFILTER_EXCLUDE_REGEX, "^[0-9]{8}$"}, {0, NULL}};
    expect(state, "alpine", nodate, 0, 0, "3.22 3.22.5 3.23 3.23.5 3.24 3.24.1");
}

static void test_tagfilter__semver_prerelease_named(void **state)
{
    /* A range naming a prerelease of 1.30.4 takes that release's variants. */
    const struct item it[] = {{TAGFILTER_SEMVER, ">=1.30.4-a <1.30.5"}, {0, NULL}};
    char *got = apply(state, "nginx", it, 0, 0);
    const struct strv *all = tags_of(state, "nginx");
    char *want = xstrdup("");
    for (size_t i = 0; i < all->n; i++)
        if (strncmp(all->v[i], "1.30.4", 6) == 0) {
            char *j = xasprintf("%s%s%s", want, *want ? " " : "", all->v[i]);
            free(want);
            want = j;
        }
    assert_string_equal(got, want);
    assert_non_null(strstr(got, "1.30.4-trixie-perl"));
    free(got);
    free(want);
}

static void test_tagfilter__excludes(void **state)
{
    const struct item it[] = {{TAGFILTER_REGEX, "^[0-9.]+$"},
                              {TAGFILTER_EXCLUDE_SEMVER, "<8"}, {0, NULL}};
    expect(state, "redis", it, 0, 0, "8 8.10 8.10.1 8.2 8.2.9 8.4 8.4.6 8.6 8.6.6 8.8 8.8.2");
    /* no include: every tag, minus the excludes */
    const struct item ex[] = {{TAGFILTER_EXCLUDE_REGEX, "[a-z]"}, {0, NULL}};
    expect(state, "node", ex, 0, 0, "22 22.23 22.23.2 24 24.19 24.19.0 26 26.7 26.7.0");
    const struct item globs[] = {{TAGFILTER_GLOB, "3.1[34]*"},
                                 {TAGFILTER_EXCLUDE_GLOB, "*windows*"},
                                 {TAGFILTER_EXCLUDE_GLOB, "*-*"}, {0, NULL}};
    expect(state, "python", globs, 0, 0, "3.13 3.13.15 3.14 3.14.7");
}

static void test_tagfilter__newest(void **state)
{
    const struct item three[] = {{TAGFILTER_GLOB, "3.*"}, {0, NULL}};
    expect(state, "alpine", three, 2, TAGFILTER_BY_SEMVER, "3.24 3.24.1");
    const struct item rel[] = {{TAGFILTER_REGEX, "^[0-9]+\\.[0-9]+\\.[0-9]+$"}, {0, NULL}};
    /* in list order (lexical), the three highest */
    expect(state, "redis", rel, 3, TAGFILTER_BY_SEMVER, "8.10.1 8.6.6 8.8.2");
    expect(state, "redis", rel, 3, TAGFILTER_BY_TAG, "8.10.1 8.6.6 8.8.2");
    /* 3.15.0rc1 is no version: by semver it does not count, by tag order it is newest */
    const struct item py[] = {{TAGFILTER_REGEX, "^3\\.[0-9]+\\.[0-9]+(rc[0-9]+)?$"}, {0, NULL}};
    expect(state, "python", py, 2, TAGFILTER_BY_SEMVER, "3.13.15 3.14.7");
    expect(state, "python", py, 2, TAGFILTER_BY_TAG, "3.14.7 3.15.0rc1");
    /* numbers compare as numbers (26 > 24.19.0), equal versions: the longer first */
    const struct item node[] = {{TAGFILTER_EXCLUDE_REGEX, "[a-z]"}, {0, NULL}};
    expect(state, "node", node, 4, TAGFILTER_BY_TAG, "24.19.0 26 26.7 26.7.0");
    expect(state, "node", node, 2, TAGFILTER_BY_SEMVER, "26.7 26.7.0");
    /* newest alone: of every tag */
    expect(state, "alpine", NULL, 1, TAGFILTER_BY_SEMVER, "20260805");
    expect(state, "postgres", NULL, 1, TAGFILTER_BY_TAG, "trixie");
}

/* alpine's tags as a signed repository lists them: beside each of two digests'
 * signature, attestation and SBOM under cosign's fallback tags, and a tag that only looks
 * like one. No glob, regular expression, semver range, newest N or "every tag" takes a
 * fallback tag (it travels as a referrer of the digest it names); its exact name does. */
static void test_tagfilter__referrer_tags_left_to_their_digest(void **state)
{
    const struct strv *alpine = tags_of(state, "alpine");
    struct strv t = {0};
    for (size_t i = 0; i < alpine->n; i++)
        strv_push(&t, xstrdup(alpine->v[i]));
    const char *hex[] = {"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                         "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"};
    for (size_t i = 0; i < 2; i++) {
        strv_push(&t, xasprintf("sha256-%s.sig", hex[i]));
        strv_push(&t, xasprintf("sha256-%s.att", hex[i]));
        strv_push(&t, xasprintf("sha256-%s.sbom", hex[i]));
    }
    strv_push(&t, xstrdup("sha256-abc.sig"));
    qsort(t.v, t.n, sizeof(char *), cmp_str);
    char *sig = xasprintf("sha256-%s.sig", hex[1]);
    const struct item all[] = {{TAGFILTER_GLOB, "*"}, {0, NULL}};
    const struct item sha[] = {{TAGFILTER_REGEX, "^sha256-"}, {0, NULL}};
    const struct item ends[] = {{TAGFILTER_GLOB, "*.sig"}, {TAGFILTER_GLOB, "*.att"},
                                {TAGFILTER_REGEX, "sbom$"}, {0, NULL}};
    const struct item noedge[] = {{TAGFILTER_EXCLUDE_GLOB, "edge"}, {0, NULL}};
    const struct item named[] = {{TAGFILTER_NAME, sig}, {TAGFILTER_GLOB, "3.24*"}, {0, NULL}};
    char *every = NULL, *but_edge = NULL;
    for (size_t i = 0; i < t.n; i++) {
        if (strncmp(t.v[i], "sha256-", 7) == 0 && strlen(t.v[i]) > 7 + 64)
            continue;
        char *j = xasprintf("%s%s%s", every ? every : "", every ? " " : "", t.v[i]);
        free(every);
        every = j;
        if (strcmp(t.v[i], "edge") == 0)
            continue;
        j = xasprintf("%s%s%s", but_edge ? but_edge : "", but_edge ? " " : "", t.v[i]);
        free(but_edge);
        but_edge = j;
    }
    assert_true(strlen(every) > strlen(but_edge)); /* alpine has an edge tag */
    char *want_named = xasprintf("3.24 3.24.1 %s", sig);
    struct {
        const struct item *items;
        int newest;
        enum tagfilter_order order;
        const char *want;
    } cases[] = {
        {all, 0, 0, every},
        {noedge, 0, 0, but_edge},
        {sha, 0, 0, "sha256-abc.sig"},
        {ends, 0, 0, "sha256-abc.sig"},
        {NULL, 1, TAGFILTER_BY_TAG, "sha256-abc.sig"},
        {all, 2, TAGFILTER_BY_SEMVER, "20260805 3.24.1"},
        {named, 0, 0, want_named},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char *got = apply_to(&t, cases[k].items, cases[k].newest, cases[k].order);
        if (strcmp(got, cases[k].want) != 0)
            fail_msg("case %zu: got [%s], want [%s]", k, got, cases[k].want);
        free(got);
    }
    free(but_edge);
    free(want_named);
    free(every);
    free(sig);
    strv_free(&t);
}

static void test_tagfilter__referrer_tag(void **state)
{
    (void)state;
    assert_true(tagfilter_referrer_tag("sha256-" "0123456789abcdef0123456789abcdef"
                                       "0123456789abcdef0123456789abcdef.att"));
    assert_false(tagfilter_referrer_tag("sha256-" "0123456789ABCDEF0123456789abcdef"
                                        "0123456789abcdef0123456789abcdef.att"));
    assert_false(tagfilter_referrer_tag("sha256-" "0123456789abcdef0123456789abcdef"
                                        "0123456789abcdef0123456789abcdef.sig2"));
    assert_false(tagfilter_referrer_tag("sha256-" "0123456789abcdef0123456789abcdef"
                                        "0123456789abcdef0123456789abcde.sig"));
    assert_false(tagfilter_referrer_tag("sha256-abc.sig"));
    assert_false(tagfilter_referrer_tag("sha256"));
    /* The tags the worker and plan look for are the ones it recognises. */
    static const char *const want[TAGFILTER_REFERRER_KINDS] = {"sig", "att", "sbom"};
    for (size_t k = 0; k < TAGFILTER_REFERRER_KINDS; k++) {
        char tag[TAGFILTER_REFERRER_TAG_SIZE], expect[TAGFILTER_REFERRER_TAG_SIZE];
        tagfilter_referrer_tag_of("sha256:" "0123456789abcdef0123456789abcdef"
                                  "0123456789abcdef0123456789abcdef", k, tag);
        snprintf(expect, sizeof(expect), "sha256-%s.%s",
                 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", want[k]);
        assert_string_equal(tag, expect);
        assert_true(tagfilter_referrer_tag(tag));
    }
}

static void refuse(enum tagfilter_kind kind, const char *text, const char *msg)
{
    struct tagfilter *f = tagfilter_new();
    struct err e = {""};
    assert_int_equal(tagfilter_add(f, kind, text, &e), -1);
    assert_string_equal(e.msg, msg);
    assert_true(tagfilter_match(f, "anything")); /* nothing was added */
    tagfilter_free(f);
}

static void test_tagfilter__errors(void **state)
{
    (void)state;
    refuse(TAGFILTER_NAME, "a:b", "'a:b' is not a tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})");
    refuse(TAGFILTER_GLOB, "", "empty");
    refuse(TAGFILTER_REGEX, "^(1.2", "regular expression '^(1.2': Unmatched ( or \\(");
    refuse(TAGFILTER_EXCLUDE_REGEX, "[z-a]", "regular expression '[z-a]': Invalid range end");
    refuse(TAGFILTER_SEMVER, ">=x.1",
           "semver range '>=x.1': a number after a wildcard at character 5");
    char big[1100];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    refuse(TAGFILTER_GLOB, big, "1099 characters, more than 1024");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tagfilter__lists_are_real),
        cmocka_unit_test(test_tagfilter__names),
        cmocka_unit_test(test_tagfilter__glob),
        cmocka_unit_test(test_tagfilter__regex),
        cmocka_unit_test(test_tagfilter__semver),
        cmocka_unit_test(test_tagfilter__semver_prerelease_named),
        cmocka_unit_test(test_tagfilter__excludes),
        cmocka_unit_test(test_tagfilter__newest),
        cmocka_unit_test(test_tagfilter__referrer_tags_left_to_their_digest),
        cmocka_unit_test(test_tagfilter__referrer_tag),
        cmocka_unit_test(test_tagfilter__errors),
    };
    return cmocka_run_group_tests(tests, load, unload);
}
