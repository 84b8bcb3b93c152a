/* Unit tests for common/catalog: group matching and change detection
 * (pure), then opening, resolving, reading and diffing the real
 * official-images test data (read in place, or cloned into a temporary
 * workdir). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "catalog.h"

#define HEAD "Maintainers: J (@j)\nGitRepo: https://example.com/r.git\n"
#define C1   "GitCommit: 0123456789abcdef0123456789abcdef01234567\n"
#define C2   "GitCommit: 89abcdef0123456789abcdef0123456789abcdef\n"

static struct oi_repo *parse(const char *text)
{
    struct oi_repo *r = NULL;
    struct err e = {""};
    if (oi_parse(text, strlen(text), "test", &r, &e) < 0)
        fail_msg("parse: %s", e.msg);
    return r;
}

/* Diff two texts (NULL = absent file). */
static struct catalog_repo_diff diff_texts(const char *old, const char *new_)
{
    struct oi_repo *o = old ? parse(old) : NULL, *n = new_ ? parse(new_) : NULL;
    struct catalog_repo_diff rd;
    memset(&rd, 0, sizeof(rd));
    catalog_diff_repo(o, n, &rd);
    oi_repo_free(o);
    oi_repo_free(n);
    return rd;
}

static void rd_free(struct catalog_repo_diff *rd)
{
    for (size_t i = 0; i < rd->ngroups; i++) {
        free(rd->groups[i].key);
        free(rd->groups[i].old_key);
        strv_free(&rd->groups[i].tags);
        strv_free(&rd->groups[i].platforms);
        strv_free(&rd->groups[i].removed_tags);
    }
    free(rd->groups);
}

static void assert_change(const struct catalog_repo_diff *rd, size_t i, enum catalog_change c,
                          const char *key, const char *removed)
{
    assert_true(i < rd->ngroups);
    const struct catalog_group_change *gc = &rd->groups[i];
    if (gc->change != c || strcmp(gc->key, key) != 0)
        fail_msg("change %zu is %s %s, want %s %s", i, catalog_change_name(gc->change), gc->key,
                 catalog_change_name(c), key);
    char joined[256] = "";
    for (size_t t = 0; t < gc->removed_tags.n; t++)
        snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined), "%s%s", t ? "," : "",
                 gc->removed_tags.v[t]);
    assert_string_equal(joined, removed);
}

static const char base[] = HEAD C1 "\n"
                                   "Tags: 1.0, 1, latest\nSharedTags: shared\n"
                                   "Architectures: amd64, arm64v8\n"
                                   "\n"
                                   "Tags: 2.0, 2\nDirectory: 2\n";

static void test_catalog__unchanged(void **state)
{
    (void)state;
    /* comments, maintainers and tag order are not changes */
    struct catalog_repo_diff rd =
        diff_texts(base, "# new comment\n" HEAD "Maintainers: K (@k)\n" C1 "\n"
                         "Tags: 1, 1.0, latest\nSharedTags: shared\n"
                         "Architectures: arm64v8, amd64\n"
                         "\nTags: 2.0, 2\nDirectory: ./2/\n");
    assert_int_equal(rd.ngroups, 0);
    rd_free(&rd);
}

static void test_catalog__file_added_removed(void **state)
{
    (void)state;
    struct catalog_repo_diff rd = diff_texts(NULL, base);
    assert_int_equal(rd.ngroups, 3);
    assert_change(&rd, 0, CATALOG_ADDED, "test:1.0", "");
    assert_change(&rd, 1, CATALOG_ADDED, "test:2.0", "");
    assert_change(&rd, 2, CATALOG_ADDED, "test:shared", "");
    assert_int_equal(rd.groups[2].kind, OI_GROUP_SHARED);
    assert_int_equal(rd.groups[0].platforms.n, 2);
    rd_free(&rd);

    rd = diff_texts(base, NULL);
    assert_int_equal(rd.ngroups, 3);
    assert_change(&rd, 0, CATALOG_REMOVED, "test:1.0", "1.0,1,latest");
    assert_change(&rd, 2, CATALOG_REMOVED, "test:shared", "shared");
    rd_free(&rd);
}

static void test_catalog__git_commit_bump_is_change(void **state)
{
    (void)state;
    /* same tags, new GitCommit: upstream rebuilt it; the shared group that
     * holds the entry changes too */
    struct catalog_repo_diff rd = diff_texts(
        base, HEAD C1 "\n"
                      "Tags: 1.0, 1, latest\nSharedTags: shared\n"
                      "Architectures: amd64, arm64v8\n" C2 "\nTags: 2.0, 2\nDirectory: 2\n");
    assert_int_equal(rd.ngroups, 2);
    assert_change(&rd, 0, CATALOG_CHANGED, "test:1.0", "");
    assert_string_equal(rd.groups[0].old_key, "test:1.0");
    assert_change(&rd, 1, CATALOG_CHANGED, "test:shared", "");
    rd_free(&rd);

    /* an arch-specific commit counts as well */
    rd = diff_texts(base, HEAD C1 "\nTags: 1.0, 1, latest\nSharedTags: shared\n"
                                  "Architectures: amd64, arm64v8\n"
                                  "arm64v8-GitCommit: 89abcdef0123456789abcdef0123456789abcdef\n"
                                  "\nTags: 2.0, 2\nDirectory: 2\n");
    assert_int_equal(rd.ngroups, 2);
    rd_free(&rd);
}

static void test_catalog__tags_and_platforms(void **state)
{
    (void)state;
    /* 1.0 -> 1.1 keeps the group (tags "1" and "latest" in common): its
     * key moves, 1.0 disappeared; a new architecture changes 2.0 */
    struct catalog_repo_diff rd =
        diff_texts(base, HEAD C1 "\n"
                                 "Tags: 1.1, 1, latest\nSharedTags: shared\n"
                                 "Architectures: amd64, arm64v8\n"
                                 "\nTags: 2.0, 2\nDirectory: 2\n"
                                 "Architectures: amd64, s390x\n");
    assert_int_equal(rd.ngroups, 2);
    assert_change(&rd, 0, CATALOG_CHANGED, "test:1.1", "1.0");
    assert_string_equal(rd.groups[0].old_key, "test:1.0");
    assert_change(&rd, 1, CATALOG_CHANGED, "test:2.0", "");
    assert_int_equal(rd.groups[1].platforms.n, 2);
    assert_string_equal(rd.groups[1].platforms.v[1], "linux/s390x");
    rd_free(&rd);
}

static void test_catalog__moved_tag_not_removed(void **state)
{
    (void)state;
    /* "latest" moves from the 1.0 entry to 2.0: both groups change, and
     * nothing disappeared from the repository */
    struct catalog_repo_diff rd =
        diff_texts(base, HEAD C1 "\n"
                                 "Tags: 1.0, 1\nSharedTags: shared\n"
                                 "Architectures: amd64, arm64v8\n"
                                 "\nTags: 2.0, 2, latest\nDirectory: 2\n");
    assert_int_equal(rd.ngroups, 2);
    assert_change(&rd, 0, CATALOG_CHANGED, "test:1.0", "");
    assert_change(&rd, 1, CATALOG_CHANGED, "test:2.0", "");
    rd_free(&rd);
}

static void test_catalog__most_tags_in_common(void **state)
{
    (void)state;
    /* old {a,b,c} {d}; new {a,b,d} {c}: {a,b,d} is {a,b,c} (2 in common
     * beats 1), {c} is new, {d} is gone */
    struct catalog_repo_diff rd = diff_texts(HEAD C1 "\nTags: a, b, c\n\nTags: d\nDirectory: d\n",
                                             HEAD C1 "\nTags: a, b, d\n\nTags: c\nDirectory: d\n");
    assert_int_equal(rd.ngroups, 3);
    assert_change(&rd, 0, CATALOG_CHANGED, "test:a", "");
    assert_change(&rd, 1, CATALOG_ADDED, "test:c", "");
    assert_change(&rd, 2, CATALOG_REMOVED, "test:d", "");
    rd_free(&rd);
}

static void test_catalog__kinds_do_not_match(void **state)
{
    (void)state;
    /* "x" turns from a shared tag into a simple tag: different kinds are
     * different indexes */
    struct catalog_repo_diff rd =
        diff_texts(HEAD C1 "\nTags: a\nSharedTags: x\n", HEAD C1 "\nTags: a, x\n");
    assert_int_equal(rd.ngroups, 2);
    assert_change(&rd, 0, CATALOG_CHANGED, "test:a", "");
    assert_change(&rd, 1, CATALOG_REMOVED, "test:x", "");
    rd_free(&rd);
}

static void test_catalog__shared_group_entries_change(void **state)
{
    (void)state;
    const char *two = HEAD C1 "\nTags: a\nSharedTags: s\n"
                              "\nTags: w\nSharedTags: s\nArchitectures: windows-amd64\n";
    const char *three = HEAD C1 "\nTags: a\nSharedTags: s\n"
                                "\nTags: w\nSharedTags: s\nArchitectures: windows-amd64\n"
                                "\nTags: w2\nSharedTags: s\nArchitectures: windows-amd64\n"
                                "Directory: w2\n";
    struct catalog_repo_diff rd = diff_texts(two, three);
    /* a new Windows entry: its own group is added, the shared index gets
     * one more image (same platforms, new entry fingerprint) */
    assert_int_equal(rd.ngroups, 2);
    assert_change(&rd, 0, CATALOG_ADDED, "test:w2", "");
    assert_change(&rd, 1, CATALOG_CHANGED, "test:s", "");
    rd_free(&rd);
}

/* ---- against the real test data ---- */

/* tests/run.py finds the data (tests/harness: the one rule for where it comes from) and
 * passes it here. */
static char *data_path(void)
{
    const char *env = getenv("HUBSYNC_TEST_OFFICIAL_IMAGES");
    return strdup(env && *env ? env : "(HUBSYNC_TEST_OFFICIAL_IMAGES unset: run tests/run.py)");
}

static int open_data(void **state)
{
    struct err e;
    char *path = data_path();
    struct catalog *c = NULL;
    int rc = catalog_open(&c, path, NULL, NULL, &e);
    if (rc < 0)
        print_error("cannot open %s: %s\n", path, e.msg);
    free(path);
    *state = c;
    return rc;
}

static int close_data(void **state)
{
    catalog_close(*state);
    return 0;
}

static void test_catalog__resolve(void **state)
{
    struct catalog *c = *state;
    struct err e;
    char head[CATALOG_SHA_LEN + 1], sha[CATALOG_SHA_LEN + 1];
    assert_int_equal(catalog_resolve(c, NULL, head, &e), 0);
    assert_int_equal(strlen(head), CATALOG_SHA_LEN);
    assert_int_equal(catalog_resolve(c, "master", sha, &e), 0);
    assert_string_equal(sha, head);
    char shortsha[8];
    memcpy(shortsha, head, 7);
    shortsha[7] = '\0';
    assert_int_equal(catalog_resolve(c, shortsha, sha, &e), 0);
    assert_string_equal(sha, head);
    assert_int_equal(catalog_resolve(c, "HEAD~1", sha, &e), 0);
    assert_string_not_equal(sha, head);
    assert_int_equal(catalog_resolve(c, "no-such-branch", sha, &e), -1);
    assert_string_equal(e.msg, "unknown revision 'no-such-branch' in the official-images source");
}

static void test_catalog__read_head(void **state)
{
    struct catalog *c = *state;
    struct err e;
    struct catalog_snapshot *s = NULL;
    struct catalog_totals t;
    assert_int_equal(catalog_read(c, NULL, NULL, &s, &e), 0);
    catalog_count(s, &t);
    assert_int_equal(s->nerrors, 0);
    assert_int_equal(t.repositories, 144);
    assert_int_equal(t.entries, 2121);
    assert_int_equal(t.shared_groups, 126);
    assert_int_equal(t.groups, 2247);
    assert_int_equal(t.tags, 9849);
    assert_int_equal(t.entry_platforms, 7935);
    for (size_t i = 1; i < s->nrepos; i++)
        assert_true(strcmp(s->repos[i - 1]->name, s->repos[i]->name) < 0);
    catalog_snapshot_free(s);
}

static void test_catalog__read_only_some(void **state)
{
    struct catalog *c = *state;
    struct err e;
    struct catalog_snapshot *s = NULL;
    char hw[] = "hello-world", deb[] = "debian", none[] = "no-such-repo";
    char *names[] = {hw, deb, none};
    struct strv only = {names, 3};
    assert_int_equal(catalog_read(c, NULL, &only, &s, &e), 0);
    assert_int_equal(s->nrepos, 2);
    assert_string_equal(s->repos[0]->name, "debian");
    assert_string_equal(s->repos[1]->name, "hello-world");
    assert_int_equal(s->nerrors, 1);
    assert_string_equal(s->errors[0].repo, "no-such-repo");
    assert_non_null(strstr(s->errors[0].msg, "library/no-such-repo: no such file at commit"));
    catalog_snapshot_free(s);
}

static void test_catalog__missing(void **state)
{
    struct catalog *c = *state;
    struct err e;
    char head[CATALOG_SHA_LEN + 1], sha[CATALOG_SHA_LEN + 1];
    char hw[] = "hello-world", none[] = "no-such-repo", dir[] = "..", deb[] = "debian";
    char *names[] = {hw, none, dir, deb};
    struct strv want = {names, 4}, missing = {0};
    assert_int_equal(catalog_resolve(c, NULL, head, &e), 0);
    assert_int_equal(catalog_missing(c, NULL, &want, sha, &missing, &e), 0);
    assert_string_equal(sha, head);
    assert_int_equal(missing.n, 2);
    assert_string_equal(missing.v[0], "no-such-repo");
    assert_string_equal(missing.v[1], "..");
    strv_free(&missing);
    assert_int_equal(catalog_missing(c, "no-such-branch", &want, sha, &missing, &e), -1);
    assert_int_equal(missing.n, 0);
}

static void test_catalog__log(void **state)
{
    struct catalog *c = *state;
    struct err e;
    struct strv commits = {NULL, 0};
    char head[CATALOG_SHA_LEN + 1];
    assert_int_equal(catalog_log(c, NULL, &commits, &e), 0);
    assert_int_equal(catalog_resolve(c, NULL, head, &e), 0);
    assert_int_equal(commits.n, 485);
    assert_string_equal(commits.v[0], head);
    strv_free(&commits);
    assert_int_equal(catalog_log(c, "nope", &commits, &e), -1);
}

static void test_catalog__diff_real_history(void **state)
{
    struct catalog *c = *state;
    struct err e;
    struct catalog_diff *d = NULL;
    /* HEAD~1..HEAD is the newest change; the same commit twice is empty */
    assert_int_equal(catalog_diff(c, "HEAD", "HEAD", &d, &e), 0);
    assert_int_equal(d->nrepos, 0);
    catalog_diff_free(d);

    assert_int_equal(catalog_diff(c, "HEAD~1", "HEAD", &d, &e), 0);
    assert_string_not_equal(d->from, d->to);
    assert_int_equal(d->nerrors, 0);
    assert_true(d->nrepos >= 1);
    catalog_diff_free(d);

    /* the whole history at once: every repository of HEAD that was not in
     * the first commit is "added" */
    struct strv commits = {NULL, 0};
    assert_int_equal(catalog_log(c, NULL, &commits, &e), 0);
    assert_int_equal(catalog_diff(c, commits.v[commits.n - 1], commits.v[0], &d, &e), 0);
    assert_true(d->nrepos > 100);
    for (size_t i = 0; i < d->nrepos; i++)
        assert_true(d->repos[i].ngroups > 0);
    catalog_diff_free(d);
    strv_free(&commits);

    assert_int_equal(catalog_diff(c, "nope", "HEAD", &d, &e), -1);
    assert_null(d);
}

static void test_catalog__open_errors(void **state)
{
    (void)state;
    struct err e;
    struct catalog *c = NULL;
    assert_int_equal(catalog_open(&c, "/nonexistent/official-images", NULL, NULL, &e), -1);
    assert_null(c);
    assert_string_equal(e.msg,
                        "official-images source '/nonexistent/official-images': No such file or "
                        "directory");
    char tmp[] = "/tmp/hubsync-test-catalog-XXXXXX";
    assert_non_null(mkdtemp(tmp));
    assert_int_equal(catalog_open(&c, tmp, NULL, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "is not a git repository"));
    assert_int_equal(rmdir(tmp), 0);
    assert_int_equal(catalog_open(&c, "", NULL, NULL, &e), -1);
}

static void test_catalog__workdir_clone(void **state)
{
    (void)state;
    struct err e;
    struct catalog *c = NULL;
    char *path = data_path();
    char tmp[] = "/tmp/hubsync-test-workdir-XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char dir[64];
    snprintf(dir, sizeof(dir), "%s/clone", tmp);
    /* first open clones, the second fetches into the same folder */
    for (int round = 0; round < 2; round++) {
        char sha[CATALOG_SHA_LEN + 1];
        struct catalog_snapshot *s = NULL;
        assert_int_equal(catalog_open(&c, path, dir, NULL, &e), 0);
        assert_int_equal(catalog_resolve(c, NULL, sha, &e), 0);
        assert_int_equal(catalog_read(c, "HEAD~3", NULL, &s, &e), 0);
        assert_true(s->nrepos > 140);
        assert_int_equal(s->nerrors, 0);
        catalog_snapshot_free(s);
        catalog_close(c);
    }
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    assert_int_equal(system(cmd), 0);
    free(path);
}

int main(void)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_catalog__unchanged),
        cmocka_unit_test(test_catalog__file_added_removed),
        cmocka_unit_test(test_catalog__git_commit_bump_is_change),
        cmocka_unit_test(test_catalog__tags_and_platforms),
        cmocka_unit_test(test_catalog__moved_tag_not_removed),
        cmocka_unit_test(test_catalog__most_tags_in_common),
        cmocka_unit_test(test_catalog__kinds_do_not_match),
        cmocka_unit_test(test_catalog__shared_group_entries_change),
        cmocka_unit_test(test_catalog__open_errors),
        cmocka_unit_test(test_catalog__workdir_clone),
    };
    const struct CMUnitTest data[] = {
        cmocka_unit_test(test_catalog__resolve),
        cmocka_unit_test(test_catalog__read_head),
        cmocka_unit_test(test_catalog__read_only_some),
        cmocka_unit_test(test_catalog__missing),
        cmocka_unit_test(test_catalog__log),
        cmocka_unit_test(test_catalog__diff_real_history),
    };
    int failed = cmocka_run_group_tests(pure, NULL, NULL);
    return failed + cmocka_run_group_tests(data, open_data, close_data);
}
