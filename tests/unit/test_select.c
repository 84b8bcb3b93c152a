/* Unit tests for coordinator/select: the selection flags (references as
 * repository names), the group list (order, changed vs checks, tag and
 * platform filters) and removed tags. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coord.h"
#include "xalloc.h"

static const struct cfg_opt opts[] = {
    COORD_OPTS_SELECTION,
};
#define NOPTS ((int)(sizeof(opts) / sizeof(opts[0])))

#define HEAD_A                                                                                     \
    "Maintainers: Jane Doe <jane@example.com> (@jane)\n"                                           \
    "GitRepo: https://github.com/example/a.git\n"                                                  \
    "\n"
#define C1 "0123456789abcdef0123456789abcdef01234567"
#define C2 "89abcdef0123456789abcdef0123456789abcdef"

/* Version 2 of repository a: a:1.0 (amd64, arm64v8), a:2.0-slim (amd64,
 * arm32v7) alone in the shared group a:2.0. */
static const char repo_a_new[] = HEAD_A "Tags: 1.0, 1, latest\n"
                                        "Architectures: amd64, arm64v8\n"
                                        "GitCommit: " C1 "\n"
                                        "\n"
                                        "Tags: 2.0-slim\n"
                                        "SharedTags: 2.0\n"
                                        "Architectures: amd64, arm32v7\n"
                                        "GitCommit: " C2 "\n";
/* Version 1: a:1.0 also had 0.9 and a:2.0-slim built from another commit. */
static const char repo_a_old[] = HEAD_A "Tags: 1.0, 1, latest, 0.9\n"
                                        "Architectures: amd64, arm64v8\n"
                                        "GitCommit: " C1 "\n"
                                        "\n"
                                        "Tags: 2.0-slim\n"
                                        "SharedTags: 2.0\n"
                                        "Architectures: amd64, arm32v7\n"
                                        "GitCommit: " C1 "\n";
static const char repo_b[] = HEAD_A "Tags: x\n"
                                    "Architectures: amd64\n"
                                    "GitCommit: " C1 "\n";

static struct oi_repo *parse(const char *text, const char *name)
{
    struct oi_repo *r = NULL;
    struct err e = {""};
    if (oi_parse(text, strlen(text), name, &r, &e) < 0)
        fail_msg("library/%s: %s", name, e.msg);
    return r;
}

/* A snapshot of a (new) and b, optionally diffed from the old a. */
struct fixture {
    struct oi_repo *repos[2];
    struct oi_repo *old_a;
    struct catalog_snapshot snap;
    struct coord_view v;
    struct coord_selection sel;
    struct cfg c;
    struct coord_group *g; /* coord_groups_list() of the above */
    size_t n;
};

/* cfg_parse on copies of string literals (argv is not const). */
static int parse_flags(struct cfg *c, int argc, const char *const *args, struct err *e)
{
    char *argv[16];
    assert_true(argc <= 16);
    for (int i = 0; i < argc; i++)
        argv[i] = xstrdup(args[i]);
    int rc = cfg_parse(c, opts, NOPTS, argc, argv, e);
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    return rc;
}

static void fixture_init(struct fixture *f, int with_diff, int argc, const char *const *argv)
{
    struct err e = {""};
    memset(f, 0, sizeof(*f));
    f->repos[0] = parse(repo_a_new, "a");
    f->repos[1] = parse(repo_b, "b");
    f->snap.repos = f->repos;
    f->snap.nrepos = 2;
    f->v.snap = &f->snap;
    f->v.first = !with_diff;
    if (with_diff) {
        f->old_a = parse(repo_a_old, "a");
        struct catalog_diff *d = xcalloc(1, sizeof(*d));
        d->repos = xcalloc(1, sizeof(*d->repos));
        d->nrepos = 1;
        d->repos[0].name = xstrdup("a");
        d->repos[0].change = CATALOG_CHANGED;
        catalog_diff_repo(f->old_a, f->repos[0], &d->repos[0]);
        f->v.diff = d;
    }
    assert_int_equal(parse_flags(&f->c, argc, argv, &e), 0);
    if (coord_selection_init(&f->sel, &f->c, &e) < 0)
        fail_msg("selection: %s", e.msg);
    coord_groups_list(&f->sel, &f->v, &f->g, &f->n);
}

static void fixture_free(struct fixture *f)
{
    coord_groups_free(f->g, f->n);
    catalog_diff_free(f->v.diff);
    oi_repo_free(f->repos[0]);
    oi_repo_free(f->repos[1]);
    oi_repo_free(f->old_a);
    coord_selection_free(&f->sel);
    cfg_free(&f->c);
}

/* The groups' keys in order, separated by spaces, "*" after a changed one. */
static void expect_order(const struct coord_group *g, size_t n, const char *want)
{
    char got[256] = "";
    for (size_t i = 0; i < n; i++)
        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s%s", i ? " " : "", g[i].key,
                 g[i].changed ? "*" : "");
    assert_string_equal(got, want);
}

static void test_select__first_run_order(void **state)
{
    (void)state;
    struct fixture f;
    fixture_init(&f, 0, 0, NULL);
    const struct coord_group *g = f.g;
    /* Round robin over repositories: the first group of each, then the next. */
    expect_order(g, f.n, "a:1.0* b:x* a:2.0-slim* a:2.0*");
    assert_int_equal(g[0].ntags, 3);
    assert_string_equal(g[0].tags[2], "latest");
    assert_int_equal(g[0].nplatforms, 2);
    assert_int_equal(g[3].nplatforms, 2);
    fixture_free(&f);
}

static void test_select__changed_first(void **state)
{
    (void)state;
    struct fixture f;
    fixture_init(&f, 1, 0, NULL);
    /* a:1.0 lost a tag, a:2.0-slim and the shared a:2.0 have a new commit. */
    expect_order(f.g, f.n, "a:1.0* a:2.0-slim* a:2.0* b:x");
    json_t *removed = coord_removed_tags(&f.sel, &f.v);
    char *text = json_dumps(removed, JSON_COMPACT);
    assert_string_equal(text, "[{\"repository\":\"a\",\"tags\":[\"0.9\"]}]");
    free(text);
    json_decref(removed);
    fixture_free(&f);
}

static void test_select__filters(void **state)
{
    (void)state;
    struct fixture f;
    const char *argv[] = {"--tags",      "1*,2*,x",           "--skip", "a:1", "--platforms",
                          "linux/arm64", "--platform-policy", "sparse"};
    fixture_init(&f, 0, 8, argv);
    assert_int_equal(f.sel.policy, JOB_POLICY_SPARSE);
    const struct coord_group *g = f.g;
    /* b:x, a:2.0-slim and a:2.0 have no arm64; "latest" fails --tags, "1" is skipped. */
    expect_order(g, f.n, "a:1.0*");
    assert_int_equal(g[0].ntags, 1);
    assert_string_equal(g[0].tags[0], "1.0");
    assert_int_equal(g[0].nplatforms, 1);
    fixture_free(&f);
}

static void test_select__repos(void **state)
{
    (void)state;
    struct fixture f;
    const char *argv[] = {"--repos", "a, b", "--exclude-repos", "a"};
    fixture_init(&f, 1, 4, argv);
    assert_true(coord_repo_selected(&f.sel, "b"));
    assert_false(coord_repo_selected(&f.sel, "a"));
    assert_false(coord_repo_selected(&f.sel, "c"));
    expect_order(f.g, f.n, "b:x");
    json_t *removed = coord_removed_tags(&f.sel, &f.v);
    assert_int_equal(json_array_size(removed), 0);
    json_decref(removed);
    fixture_free(&f);
}

static void test_select__platform_names(void **state)
{
    (void)state;
    struct fixture f;
    const char *argv[] = {"--platforms", "linux/arm64/v8,linux/amd64", "--platform-policy",
                          "rewrite"};
    fixture_init(&f, 0, 4, argv);
    struct strv hv = {NULL, 0};
    strv_push(&hv, xstrdup("linux/amd64"));
    strv_push(&hv, xstrdup("linux/arm/v7"));
    strv_push(&hv, xstrdup("linux/arm64/v8"));
    strv_push(&hv, xstrdup("windows/amd64"));
    assert_int_equal(coord_platforms_selected(&f.sel, &hv), 2);
    fixture_free(&f);
    const char *argv2[] = {"--platforms", "linux/arm64", "--platform-policy", "sparse"};
    fixture_init(&f, 0, 4, argv2);
    assert_int_equal(coord_platforms_selected(&f.sel, &hv), 1);
    fixture_free(&f);
    fixture_init(&f, 0, 0, NULL);
    assert_int_equal(coord_platforms_selected(&f.sel, &hv), 4);
    fixture_free(&f);
    strv_free(&hv);
}

static void expect_selection_error(int argc, const char *const *argv, const char *part)
{
    struct cfg c;
    struct coord_selection sel;
    struct err e = {""};
    assert_int_equal(parse_flags(&c, argc, argv, &e), 0);
    assert_int_equal(coord_selection_init(&sel, &c, &e), -1);
    if (!strstr(e.msg, part))
        fail_msg("'%s' does not say '%s'", e.msg, part);
    coord_selection_free(&sel);
    cfg_free(&c);
}

static void test_select__bad_flags(void **state)
{
    (void)state;
    const char *a1[] = {"--platforms", "linux/amd64"};
    expect_selection_error(2, a1, "--platforms needs --platform-policy");
    const char *a2[] = {"--platform-policy", "sparse"};
    expect_selection_error(2, a2, "--platform-policy needs --platforms");
    const char *a3[] = {"--platforms", "linux/amd64", "--platform-policy", "all"};
    expect_selection_error(4, a3, "'all' is not sparse or rewrite");
    const char *a4[] = {"--platforms", "linux", "--platform-policy", "sparse"};
    expect_selection_error(4, a4, "'linux' is not os/arch");
}

static void expect_strv(const struct strv *v, const char *want)
{
    char got[256] = "";
    for (size_t i = 0; i < v->n; i++)
        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", i ? " " : "", v->v[i]);
    assert_string_equal(got, want);
}

static void test_select__references(void **state)
{
    (void)state;
    struct fixture f;
    const char *argv[] = {"--repos",
                          "library/a, docker.io/library/b,index.docker.io/library/c, d",
                          "--exclude-repos",
                          "docker.io/c",
                          "--skip",
                          "library/a:1,docker.io/library/b:*,*:latest,*windows*,[ab]:2*"};
    fixture_init(&f, 0, 6, argv);
    expect_strv(&f.sel.repos, "a b c d");
    expect_strv(&f.sel.exclude, "c");
    expect_strv(&f.sel.skip, "a:1 b:* *:latest *windows* [ab]:2*");
    /* The normalised names select like plain ones: b:x skipped by b:*, a:latest
     * by *:latest, a:1 by a:1, a:2.0-slim and a:2.0 by [ab]:2*. */
    assert_true(coord_repo_selected(&f.sel, "a"));
    assert_false(coord_repo_selected(&f.sel, "c"));
    expect_order(f.g, f.n, "a:1.0*");
    assert_int_equal(f.g[0].ntags, 1);
    assert_string_equal(f.g[0].tags[0], "1.0");
    fixture_free(&f);
}

static void test_select__refused_references(void **state)
{
    (void)state;
    const char *a1[] = {"--repos", "alpine, Alpine"};
    expect_selection_error(2, a1, "--repos: 'Alpine': uppercase letters are not allowed");
    const char *a2[] = {"--repos", "alpine:3.20"};
    expect_selection_error(2, a2, "--repos: 'alpine:3.20' names a tag: select tags with --tags");
    const char *a3[] = {"--repos", "ghcr.io/x/y"};
    expect_selection_error(2, a3, "--repos: 'ghcr.io/x/y' is on ghcr.io, not Docker Hub");
    const char *a4[] = {"--exclude-repos", "bitnami/redis"};
    expect_selection_error(2, a4, "--exclude-repos: 'bitnami/redis' is not an official image "
                                  "(library/*)");
    const char *a5[] = {"--exclude-repos", "a@sha256:0123456789abcdef0123456789abcdef0123456789"
                                           "abcdef0123456789abcdef"};
    expect_selection_error(2, a5, "names a digest, not a repository");
    const char *a6[] = {"--skip", "Python:*"};
    expect_selection_error(2, a6, "--skip: 'Python': uppercase letters are not allowed");
    const char *a7[] = {"--skip", "python"};
    expect_selection_error(2, a7, "--skip: 'python' is not REPO:TAGGLOB");
    const char *a8[] = {"--skip", "quay.io/x:*"};
    expect_selection_error(2, a8, "--skip: 'quay.io/x' is on quay.io, not Docker Hub");
    const char *a9[] = {"--repos", "al\x01pine"};
    expect_selection_error(2, a9, "--repos: 'al?pine': invalid byte 0x01 at position 3");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select__first_run_order),
        cmocka_unit_test(test_select__changed_first),
        cmocka_unit_test(test_select__filters),
        cmocka_unit_test(test_select__repos),
        cmocka_unit_test(test_select__platform_names),
        cmocka_unit_test(test_select__bad_flags),
        cmocka_unit_test(test_select__references),
        cmocka_unit_test(test_select__refused_references),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
