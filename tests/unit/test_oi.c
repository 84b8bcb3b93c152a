/* Unit tests for common/oi: every lexical rule, inheritance, validation
 * rule, merging, grouping and the architecture table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oi.h"

#define HEAD                                                                                       \
    "Maintainers: Jane Doe <jane@example.com> (@jane)\n"                                           \
    "GitRepo: https://github.com/example/repo.git\n"                                               \
    "GitCommit: 0123456789abcdef0123456789abcdef01234567\n"
#define C2 "89abcdef0123456789abcdef0123456789abcdef"

static struct oi_repo *parse_ok(const char *text)
{
    struct oi_repo *r = NULL;
    struct err e = {""};
    if (oi_parse(text, strlen(text), "test", &r, &e) < 0)
        fail_msg("unexpected error: %s", e.msg);
    assert_non_null(r);
    return r;
}

/* Parse must fail with a message containing each of the given parts. */
static void parse_err(const char *text, const char *part1, const char *part2)
{
    struct oi_repo *r = NULL;
    struct err e = {""};
    if (oi_parse(text, strlen(text), "test", &r, &e) == 0) {
        oi_repo_free(r);
        fail_msg("parsed, expected an error containing '%s'", part1);
    }
    assert_null(r);
    if (!strstr(e.msg, part1) || (part2 && !strstr(e.msg, part2)))
        fail_msg("error '%s' lacks '%s' / '%s'", e.msg, part1, part2 ? part2 : "");
    assert_non_null(strstr(e.msg, "library/test line "));
}

static void assert_strv(const struct strv *s, const char *const *want, size_t n)
{
    if (s->n != n) {
        for (size_t i = 0; i < s->n; i++)
            print_message("  got [%zu] '%s'\n", i, s->v[i]);
        fail_msg("have %zu elements, want %zu", s->n, n);
    }
    for (size_t i = 0; i < n; i++)
        assert_string_equal(s->v[i], want[i]);
}

#define ASSERT_STRV(s, ...)                                                                        \
    do {                                                                                           \
        const char *const want_[] = {__VA_ARGS__};                                                 \
        assert_strv((s), want_, sizeof(want_) / sizeof(want_[0]));                                 \
    } while (0)

/* ---- lexical rules ---- */

static void test_oi__comments(void **state)
{
    (void)state;
    struct oi_repo *r = parse_ok("# header comment\n" HEAD "\n"
                                 "Tags: a\n"
                                 "   # indented comment between fields\n"
                                 "\t# tab-indented comment\n"
                                 "Directory: dir#not-a-comment\n"
                                 "# last\n");
    assert_int_equal(r->nentries, 1);
    ASSERT_STRV(&r->entries[0].tags, "a");
    assert_string_equal(r->entries[0].directory, "dir#not-a-comment");
    oi_repo_free(r);
}

static void test_oi__comment_does_not_break_paragraph(void **state)
{
    (void)state;
    /* a comment line is removed before paragraphs are found: it neither
     * ends a paragraph nor a continuation */
    struct oi_repo *r = parse_ok(HEAD "\nTags: a,\n# note\n b\nArchitectures: i386\n");
    assert_int_equal(r->nentries, 1);
    ASSERT_STRV(&r->entries[0].tags, "a", "b");
    ASSERT_STRV(&r->entries[0].arches, "i386");
    oi_repo_free(r);
}

static void test_oi__paragraphs(void **state)
{
    (void)state;
    struct oi_repo *r = parse_ok("\n\n" HEAD "\n\n\nTags: a\n\nTags: b\nDirectory: b\n\n\n");
    assert_int_equal(r->nentries, 2);
    ASSERT_STRV(&r->entries[0].tags, "a");
    ASSERT_STRV(&r->entries[1].tags, "b");
    assert_int_equal(r->entries[0].line, 9);
    assert_int_equal(r->entries[1].line, 11);
    oi_repo_free(r);
}

static void test_oi__crlf(void **state)
{
    (void)state;
    const char *text = "Maintainers: Jane Doe <jane@example.com> (@jane)\r\n"
                       "GitRepo: https://example.com/r.git\r\n"
                       "GitCommit: 0123456789abcdef0123456789abcdef01234567\r\n"
                       "\r\n"
                       "Tags: a, b\r\n"
                       "Architectures: amd64,\r\n"
                       " arm64v8\r\n"
                       "\r\n"
                       "Tags: c\r\n"
                       "Directory: c\r\n";
    struct oi_repo *r = parse_ok(text);
    assert_int_equal(r->nentries, 2);
    ASSERT_STRV(&r->entries[0].tags, "a", "b");
    ASSERT_STRV(&r->entries[0].arches, "amd64", "arm64v8");
    assert_string_equal(r->entries[0].git_repo, "https://example.com/r.git");
    oi_repo_free(r);
}

static void test_oi__whitespace_line_is_continuation(void **state)
{
    (void)state;
    /* "  \t" is not blank: it continues Tags, so b belongs to the same
     * paragraph (and Tags gets an empty line, trimmed away by the list
     * splitting) */
    struct oi_repo *r = parse_ok(HEAD "\nTags: a\n  \t\nSharedTags: s\n");
    assert_int_equal(r->nentries, 1);
    ASSERT_STRV(&r->entries[0].tags, "a");
    ASSERT_STRV(&r->entries[0].shared_tags, "s");
    oi_repo_free(r);

    /* a paragraph made only of continuation lines has no key, so the blank
     * line after it does not end it (go-debian): it runs into the next */
    r = parse_ok(HEAD "\n  orphan\n\nTags: x\n");
    assert_int_equal(r->nentries, 1);
    ASSERT_STRV(&r->entries[0].tags, "x");
    oi_repo_free(r);
}

static void test_oi__continuation(void **state)
{
    (void)state;
    struct oi_repo *r = parse_ok("Maintainers: Jane Doe <jane@example.com> (@jane),\n"
                                 "             John Roe (@john)   \n"
                                 "GitRepo: https://example.com/r.git\n"
                                 "GitCommit: 0123456789abcdef0123456789abcdef01234567\n"
                                 "\n"
                                 "Tags:\n"
                                 " a,\n"
                                 "\tb, \n"
                                 " .\n"
                                 " c\n"
                                 "GitRepo: first\n"
                                 "  second  \n"
                                 " .\n"
                                 " third\n");
    ASSERT_STRV(&r->entries[0].maintainers, "Jane Doe <jane@example.com> (@jane)",
                "John Roe (@john)");
    /* the empty line from " ." sits inside element 3, which is trimmed */
    ASSERT_STRV(&r->entries[0].tags, "a", "b", "c");
    /* first char dropped, trailing space trimmed, "." = empty, joined with \n */
    assert_string_equal(r->entries[0].git_repo, "first\n second\n\nthird\n");
    oi_repo_free(r);
}

static void test_oi__key_value_split(void **state)
{
    (void)state;
    /* split at the first ':', key and value trimmed (Unicode white space
     * too: U+00A0 after the value); an indented "Key: value" line is a
     * continuation of the previous key, not a key */
    struct oi_repo *r = parse_ok(HEAD "\nTags: a\nDirectory: d\n Tags: b\n");
    ASSERT_STRV(&r->entries[0].tags, "a");
    assert_string_equal(r->entries[0].directory, "d\nTags: b\n");
    oi_repo_free(r);

    r = parse_ok("Maintainers: J (@j)\n"
                 "GitRepo  :   https://example.com:8443/r.git \xc2\xa0\n"
                 "GitCommit:0123456789abcdef0123456789abcdef01234567\n"
                 "\n"
                 "Tags:a\n");
    assert_string_equal(r->entries[0].git_repo, "https://example.com:8443/r.git");
    assert_string_equal(r->entries[0].git_commit, "0123456789abcdef0123456789abcdef01234567");
    oi_repo_free(r);
}

static void test_oi__bad_line(void **state)
{
    (void)state;
    parse_err(HEAD "\nTags: a\nthis line has no colon\n", "line 6",
              "bad line 'this line has no colon'");
}

static void test_oi__keys_case_sensitive_unknown_ignored(void **state)
{
    (void)state;
    /* "tags" is not "Tags": ignored like any unknown key */
    parse_err(HEAD "\ntags: a\n", "missing Tags", NULL);
    struct oi_repo *r = parse_ok(HEAD "Foo: bar\n\nTags: a\nGitcommit: nonsense\nX-Whatever: 1\n");
    assert_string_equal(r->entries[0].git_commit, "0123456789abcdef0123456789abcdef01234567");
    assert_int_equal(r->entries[0].narch_fields, 0);
    oi_repo_free(r);
}

static void test_oi__undecodable_keys(void **state)
{
    (void)state;
    parse_err(HEAD "\nTags: a\nValues: x\n", "key 'Values' cannot be decoded", "line 6");
    parse_err(HEAD "ArchValues: x\n\nTags: a\n", "key 'ArchValues'", NULL);
}

static void test_oi__last_key_wins(void **state)
{
    (void)state;
    struct oi_repo *r = parse_ok(HEAD "\nTags: a\nTags: b, c\nDirectory: x\nDirectory: y\n");
    ASSERT_STRV(&r->entries[0].tags, "b", "c");
    assert_string_equal(r->entries[0].directory, "y");
    oi_repo_free(r);
}

static void test_oi__lists(void **state)
{
    (void)state;
    struct oi_repo *r = parse_ok(HEAD "\nTags:  a ,\tb,c  \nArchitectures: s390x , amd64,amd64,"
                                      " arm32v7\nConstraints: x , y\n");
    ASSERT_STRV(&r->entries[0].tags, "a", "b", "c");
    ASSERT_STRV(&r->entries[0].arches, "amd64", "arm32v7", "s390x"); /* dedup + sorted */
    ASSERT_STRV(&r->entries[0].constraints, "x", "y");
    oi_repo_free(r);
    /* a trailing comma is an empty element, which is not a valid tag */
    parse_err(HEAD "\nTags: a,\n", "invalid tag \"\"", NULL);
    parse_err(HEAD "\nTags: a\nArchitectures: amd64,\n", "invalid Architectures: \"\"", NULL);
}

static void test_oi__no_trailing_newline(void **state)
{
    (void)state;
    struct oi_repo *r = parse_ok(HEAD "\nTags: a\nDirectory: last");
    assert_string_equal(r->entries[0].directory, "last");
    oi_repo_free(r);
}

static void test_oi__nul_and_empty(void **state)
{
    (void)state;
    struct oi_repo *r = NULL;
    struct err e;
    const char text[] = "Maintainers: J (@j)\nGitRepo: a\0b\n";
    assert_int_equal(oi_parse(text, sizeof(text) - 1, "test", &r, &e), -1);
    assert_non_null(strstr(e.msg, "library/test line 2: NUL byte"));
    parse_err("", "no global paragraph", NULL);
    parse_err("# only a comment\n\n\n", "no global paragraph", NULL);
}

/* ---- global paragraph ---- */

static void test_oi__global_defaults(void **state)
{
    (void)state;
    struct oi_repo *r = parse_ok(HEAD "\nTags: a\n");
    const struct oi_entry *en = &r->entries[0];
    ASSERT_STRV(&en->arches, "amd64");
    ASSERT_STRV(&en->platforms, "linux/amd64");
    assert_string_equal(en->git_fetch, "refs/heads/master");
    assert_string_equal(en->directory, ".");
    assert_string_equal(en->file, "Dockerfile");
    assert_string_equal(en->builder, "");
    assert_int_equal(en->shared_tags.n, 0);
    oi_repo_free(r);
    /* a global paragraph alone is a valid, empty repository */
    r = parse_ok(HEAD);
    assert_int_equal(r->nentries, 0);
    assert_int_equal(r->ngroups, 0);
    oi_repo_free(r);
}

static void test_oi__global_errors(void **state)
{
    (void)state;
    parse_err("GitRepo: x\n\nTags: a\n", "line 1: missing Maintainers", NULL);
    parse_err(HEAD "Tags: a\n\nTags: b\n", "line 4: global Tags not permitted", NULL);
    parse_err(HEAD "Architectures: amd64, sparc\n\nTags: b\n",
              "invalid global Architectures: \"sparc\"", NULL);
    parse_err("Maintainers: nobody\n\nTags: b\n", "invalid Maintainers: \"nobody\"", NULL);
}

/* ---- inheritance ---- */

static void test_oi__inheritance(void **state)
{
    (void)state;
    struct oi_repo *r = parse_ok("Maintainers: Jane Doe <jane@example.com> (@jane)\n"
                                 "GitRepo: https://example.com/r.git\n"
                                 "GitFetch: refs/heads/main\n"
                                 "GitCommit: 0123456789abcdef0123456789abcdef01234567\n"
                                 "Architectures: amd64, arm64v8\n"
                                 "SharedTags: shared\n"
                                 "Constraints: g1\n"
                                 "Builder: buildkit\n"
                                 "\n"
                                 "Tags: inherit\n"
                                 "\n"
                                 "Tags: replace\n"
                                 "Maintainers: John Roe (@john)\n"
                                 "GitFetch: refs/tags/v1\n"
                                 "GitCommit: " C2 "\n"
                                 "Architectures: s390x\n"
                                 "SharedTags: other\n"
                                 "Constraints: e1\n"
                                 "Builder: classic\n"
                                 "File: Dockerfile.alt\n");
    assert_int_equal(r->nentries, 2);
    const struct oi_entry *a = &r->entries[0], *b = &r->entries[1];
    ASSERT_STRV(&a->arches, "amd64", "arm64v8");
    ASSERT_STRV(&a->shared_tags, "shared");
    ASSERT_STRV(&a->constraints, "g1");
    ASSERT_STRV(&a->maintainers, "Jane Doe <jane@example.com> (@jane)");
    assert_string_equal(a->git_fetch, "refs/heads/main");
    assert_string_equal(a->builder, "buildkit");
    /* scalars, SharedTags and Architectures replace; Maintainers and
     * Constraints append */
    ASSERT_STRV(&b->arches, "s390x");
    ASSERT_STRV(&b->shared_tags, "other");
    ASSERT_STRV(&b->constraints, "g1", "e1");
    ASSERT_STRV(&b->maintainers, "Jane Doe <jane@example.com> (@jane)", "John Roe (@john)");
    assert_string_equal(b->git_fetch, "refs/tags/v1");
    assert_string_equal(b->git_commit, C2);
    assert_string_equal(b->builder, "classic");
    assert_string_equal(b->file, "Dockerfile.alt");
    assert_string_equal(b->git_repo, "https://example.com/r.git");
    oi_repo_free(r);
}

static void test_oi__arch_specific_fields(void **state)
{
    (void)state;
    struct oi_repo *r = parse_ok(HEAD "Architectures: amd64, arm64v8, s390x\n"
                                      "arm64v8-GitCommit: " C2 "\n"
                                      "s390x-Directory: s390x/\n"
                                      "\n"
                                      "Tags: a\n"
                                      "\n"
                                      "Tags: b\n"
                                      "s390x-Directory: ./other//dir\n"
                                      "amd64-GitFetch: refs/tags/x\n"
                                      "\n"
                                      "Tags: c\n"
                                      "arm64v8-GitCommit:\n"
                                      "ppc64le-Builder: classic\n");
    assert_int_equal(r->nentries, 3);
    const struct oi_entry *a = &r->entries[0], *b = &r->entries[1], *c = &r->entries[2];
    assert_int_equal(a->narch_fields, 2);
    assert_string_equal(a->arch_fields[0].key, "arm64v8-GitCommit");
    assert_string_equal(a->arch_fields[1].key, "s390x-Directory");
    assert_string_equal(a->arch_fields[1].value, "s390x"); /* path-cleaned */
    assert_string_equal(oi_entry_arch_value(a, "arm64v8", "GitCommit"), C2);
    assert_string_equal(oi_entry_arch_value(a, "amd64", "GitCommit"),
                        "0123456789abcdef0123456789abcdef01234567");
    assert_string_equal(oi_entry_arch_value(a, "s390x", "Directory"), "s390x");
    assert_string_equal(oi_entry_arch_value(a, "amd64", "Directory"), ".");
    assert_null(oi_entry_arch_value(a, "amd64", "Nope"));
    /* overridden key by key: inherits arm64v8-GitCommit, replaces the
     * s390x directory, adds amd64-GitFetch */
    assert_string_equal(oi_entry_arch_value(b, "arm64v8", "GitCommit"), C2);
    assert_string_equal(oi_entry_arch_value(b, "s390x", "Directory"), "other/dir");
    assert_string_equal(oi_entry_arch_value(b, "amd64", "GitFetch"), "refs/tags/x");
    assert_string_equal(oi_entry_arch_value(b, "arm64v8", "GitFetch"), "refs/heads/master");
    /* an empty value cancels the inherited one; the prefix is not checked
     * against the architecture list */
    assert_string_equal(oi_entry_arch_value(c, "arm64v8", "GitCommit"),
                        "0123456789abcdef0123456789abcdef01234567");
    assert_string_equal(oi_entry_arch_value(c, "ppc64le", "Builder"), "classic");
    assert_string_equal(oi_entry_arch_value(c, "amd64", "Builder"), "");
    oi_repo_free(r);
}

static void test_oi__shared_tags_dedup(void **state)
{
    (void)state;
    struct oi_repo *r = parse_ok(HEAD "\nTags: a\nSharedTags: z, y, z, x, y\n");
    ASSERT_STRV(&r->entries[0].shared_tags, "z", "y", "x");
    oi_repo_free(r);
}

/* ---- validation ---- */

static void test_oi__missing_fields(void **state)
{
    (void)state;
    parse_err(HEAD "\nDirectory: x\n", "line 5: missing Tags", NULL);
    parse_err("Maintainers: J (@j)\nGitCommit: " C2 "\n\nTags: a\n", "Tags \"a\": missing GitRepo",
              NULL);
    parse_err("Maintainers: J (@j)\nGitRepo: r\n\nTags: a, b\n", "Tags \"a, b\": missing GitCommit",
              "line 4");
    parse_err(HEAD "\nTags: a\nGitFetch:\n", "missing GitFetch", "line 6");
}

static void test_oi__git_fetch(void **state)
{
    (void)state;
    parse_err(HEAD "\nTags: a\nGitFetch: refs/pull/1/head\n",
              "invalid GitFetch \"refs/pull/1/head\"", "line 6");
    parse_err(HEAD "\nTags: a\nGitFetch: refs/heads/a*b\n", "invalid GitFetch", NULL);
    parse_err(HEAD "\nTags: a\nGitFetch: refs/tags/\n", "invalid GitFetch", NULL);
    parse_err(HEAD "\nTags: a\nGitFetch: main\n", "invalid GitFetch", NULL);
    struct oi_repo *r = parse_ok(HEAD "\nTags: a\nGitFetch: refs/tags/v1.2/x\n");
    assert_string_equal(r->entries[0].git_fetch, "refs/tags/v1.2/x");
    oi_repo_free(r);
}

static void test_oi__git_commit(void **state)
{
    (void)state;
    parse_err(HEAD "\nTags: a\nGitCommit: 0123456\n", "invalid GitCommit \"0123456\"", "line 6");
    /* an inherited bad value is reported where the global paragraph set it */
    parse_err("Maintainers: J (@j)\nGitRepo: r\nGitCommit: bad\n\nTags: a\n",
              "line 3: Tags \"a\": invalid GitCommit \"bad\"", NULL);
    parse_err(HEAD "\nTags: a\nGitCommit: 0123456789ABCDEF0123456789abcdef01234567\n",
              "invalid GitCommit", NULL);
    parse_err(HEAD "\nTags: a\nGitCommit: refs/heads/master\n", "invalid GitCommit", NULL);
    parse_err(HEAD "\nTags: a\nGitCommit: " C2 C2 "0123456789abcdef01234567\n" /* 104 */,
              "invalid GitCommit", NULL);
}

static void test_oi__git_commit_64(void **state)
{
    (void)state;
    const char *sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char text[512];
    snprintf(text, sizeof(text), HEAD "\nTags: a\nGitCommit: %s\n", sha256);
    struct oi_repo *r = parse_ok(text);
    assert_string_equal(r->entries[0].git_commit, sha256);
    oi_repo_free(r);
    snprintf(text, sizeof(text), HEAD "\nTags: a\nGitCommit: %s0\n", sha256);
    parse_err(text, "invalid GitCommit", NULL);
}

static void test_oi__tag_regex(void **state)
{
    (void)state;
    char text[1024], tag[200];
    memset(tag, 'x', 128);
    tag[128] = '\0';
    tag[0] = '_';
    snprintf(text, sizeof(text), HEAD "\nTags: %s, 1.2-rc_3\n", tag);
    struct oi_repo *r = parse_ok(text);
    assert_int_equal(strlen(r->entries[0].tags.v[0]), 128);
    oi_repo_free(r);
    tag[128] = 'x';
    tag[129] = '\0';
    snprintf(text, sizeof(text), HEAD "\nTags: %s\n", tag);
    parse_err(text, "invalid tag", NULL);
    parse_err(HEAD "\nTags: .hidden\n", "invalid tag \".hidden\"", NULL);
    /* longer than an error message can hold: still an error */
    char huge[2000];
    memset(huge, 'x', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    char *text2 = NULL;
    assert_true(asprintf(&text2, HEAD "\nTags: ok\nSharedTags: %s\n", huge) > 0);
    parse_err(text2, "invalid shared tag \"xxx", NULL);
    free(text2);
    parse_err(HEAD "\nTags: -x\n", "invalid tag", NULL);
    parse_err(HEAD "\nTags: a b\n", "invalid tag \"a b\"", NULL);
    parse_err(HEAD "\nTags: a:b\n", "invalid tag", NULL);
    parse_err(HEAD "\nTags: a\nSharedTags: ok, n\xc3\xa9\n", "invalid shared tag", "line 6");
}

static void test_oi__unknown_architecture(void **state)
{
    (void)state;
    parse_err(HEAD "\nTags: a\nArchitectures: amd64, arm64\n", "invalid Architectures: \"arm64\"",
              "line 6");
    parse_err(HEAD "\nTags: a\nArchitectures: AMD64\n", "invalid Architectures", NULL);
}

static void test_oi__duplicate_tags(void **state)
{
    (void)state;
    parse_err(HEAD "\nTags: a, b, a\n", "duplicate tag \"a\"", "line 5");
    parse_err(HEAD "\nTags: a\n\nTags: b, a\nDirectory: x\n",
              "duplicate tag \"a\" (also in the entry of line 5)", "line 7");
    /* the same tag in Tags and SharedTags of one entry */
    parse_err(HEAD "\nTags: a\nSharedTags: a\n", "duplicate tag \"a\" (in Tags and SharedTags)",
              NULL);
}

static void test_oi__tag_shared_conflict(void **state)
{
    (void)state;
    /* a Tags member of a later entry that is a SharedTags member before */
    parse_err(HEAD "\nTags: a\nSharedTags: s\n\nTags: s\nDirectory: x\n",
              "tag \"s\" is a SharedTags member of the entry of line 5", "line 8");
    /* a SharedTags member that is a Tags member of an earlier entry */
    parse_err(HEAD "\nTags: a\n\nTags: b\nSharedTags: a\nDirectory: x\n",
              "shared tag \"a\" is a Tags member of the entry of line 5", "line 8");
    /* a shared tag may (and is meant to) appear in several entries */
    struct oi_repo *r = parse_ok(HEAD "\nTags: a\nSharedTags: s\n\nTags: b\nSharedTags: s\n"
                                      "Directory: x\n");
    assert_int_equal(r->ngroups, 3);
    oi_repo_free(r);
}

static void test_oi__maintainers(void **state)
{
    (void)state;
    static const char *const good[] = {
        "Jane Doe <jane@example.com> (@jane)",
        "Jane (@j)",
        "Jane  Doe\t<https://example.com/contact>  (@jane-doe)",
        "Tomáš Virtus <tomas.virtus@canonical.com> (@woky)",
        "X (@@a)",
    };
    static const char *const bad[] = {
        "Jane Doe <jane@example.com>",        /* no handle */
        "Jane Doe jane@example.com (@jane)x", /* trailing garbage */
        "Jane Doe (jane)",                    /* handle without @ */
        "<x> (@j)",                           /* email without a name */
        "(@j)",                               /* no name */
        "Jane <a b> (@j)",                    /* space in email */
        "Jane <> (@j)",                       /* empty email */
        "Jane<x> (@j)",                       /* no space before email */
        "Jane (@)",                           /* empty handle */
        "Jane (@a b)",                        /* space in handle */
        "Ja(ne (@j)",                         /* parenthesis in name */
        "Jane <x>(@j)",                       /* no space before handle */
    };
    char text[512];
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(text, sizeof(text), "Maintainers: %s\nGitRepo: r\nGitCommit: " C2 "\n\nTags: a\n",
                 good[i]);
        oi_repo_free(parse_ok(text));
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "Maintainers: %s\nGitRepo: r\nGitCommit: " C2 "\n\nTags: a\n",
                 bad[i]);
        parse_err(text, "invalid Maintainers", "line 1");
    }
    /* an entry's own Maintainers are checked too */
    parse_err(HEAD "\nTags: a\nMaintainers: nobody\n",
              "Tags \"a\": invalid Maintainers: \"nobody\"", "line 6");
}

/* ---- merging ---- */

static void test_oi__merge_same_artifacts(void **state)
{
    (void)state;
    struct oi_repo *r =
        parse_ok(HEAD "\nTags: 1.0, 1\nSharedTags: s1\nArchitectures: arm64v8, amd64\n"
                      "Directory: ./v1/\n"
                      "\nTags: 2.0\nDirectory: v2\n"
                      "\nTags: latest\nSharedTags: s1, s2\n"
                      "Architectures: amd64, arm64v8, amd64\nDirectory: v1\n");
    assert_int_equal(r->nentries, 2);
    ASSERT_STRV(&r->entries[0].tags, "1.0", "1", "latest");
    ASSERT_STRV(&r->entries[0].shared_tags, "s1", "s2");
    assert_string_equal(r->entries[0].directory, "v1");
    ASSERT_STRV(&r->entries[1].tags, "2.0");
    /* groups see the merged entry */
    assert_int_equal(r->ngroups, 3);
    ASSERT_STRV(&r->groups[0].tags, "1.0", "1", "latest");
    ASSERT_STRV(&r->groups[2].tags, "s1", "s2");
    oi_repo_free(r);
}

static void test_oi__no_merge_when_artifacts_differ(void **state)
{
    (void)state;
    static const char *const second[] = {
        "Architectures: amd64, i386\n", "GitRepo: other\n", "GitFetch: refs/heads/x\n",
        "GitCommit: " C2 "\n",          "Directory: d\n",   "File: F\n",
        "Builder: classic\n",           "Constraints: c\n", "amd64-GitCommit: " C2 "\n",
        "foo-Directory: x\n",
    };
    for (size_t i = 0; i < sizeof(second) / sizeof(second[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text), HEAD "\nTags: a\n\nTags: b\n%s", second[i]);
        struct oi_repo *r = parse_ok(text);
        if (r->nentries != 2)
            fail_msg("'%s' should keep two entries", second[i]);
        assert_string_not_equal(r->entries[0].fingerprint, r->entries[1].fingerprint);
        oi_repo_free(r);
    }
}

static void test_oi__fingerprint(void **state)
{
    (void)state;
    struct oi_repo *a = parse_ok(HEAD "\nTags: a\nDirectory: x/./y\n");
    struct oi_repo *b = parse_ok(HEAD "Maintainers: Other One (@other)\n\nTags: b, c\n"
                                      "SharedTags: s\nDirectory: x/y/\n");
    struct oi_repo *c = parse_ok(HEAD "\nTags: a\nDirectory: x/y\nGitCommit: " C2 "\n");
    assert_int_equal(strlen(a->entries[0].fingerprint), OI_FINGERPRINT_LEN);
    /* tags and maintainers are not build artifacts; the cleaned directory is */
    assert_string_equal(a->entries[0].fingerprint, b->entries[0].fingerprint);
    assert_string_not_equal(a->entries[0].fingerprint, c->entries[0].fingerprint);
    oi_repo_free(a);
    oi_repo_free(b);
    oi_repo_free(c);
}

static void test_oi__directory_clean(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"", "."},        {".", "."},        {"a/../b/./c//", "b/c"}, {"/../x", "/x"},
        {"../a", "../a"}, {"a/../..", ".."}, {"//a//b/", "/a/b"},     {"a/b/../../..", ".."},
        {"./", "."},      {"/", "/"},        {"x/..", "."},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text), HEAD "\nTags: a\nDirectory: %s\n", cases[i][0]);
        struct oi_repo *r = parse_ok(text);
        if (strcmp(r->entries[0].directory, cases[i][1]) != 0)
            fail_msg("clean('%s') = '%s', want '%s'", cases[i][0], r->entries[0].directory,
                     cases[i][1]);
        oi_repo_free(r);
    }
}

/* ---- grouping ---- */

static const char hello_world[] = "Maintainers: Tianon Gravi <admwiggin@gmail.com> (@tianon),\n"
                                  "             Joseph Ferguson <yosifkit@gmail.com> (@yosifkit)\n"
                                  "GitRepo: https://github.com/docker-library/hello-world.git\n"
                                  "GitCommit: 3981a44a531e7c844d844e12cbbda232d10d5dfb\n"
                                  "\n"
                                  "Tags: linux\n"
                                  "SharedTags: latest\n"
                                  "Architectures: amd64, arm32v5, arm64v8, i386\n"
                                  "amd64-Directory: amd64\n"
                                  "arm64v8-Directory: arm64v8\n"
                                  "\n"
                                  "Tags: nanoserver-ltsc2025\n"
                                  "SharedTags: nanoserver, latest\n"
                                  "Architectures: windows-amd64\n"
                                  "windows-amd64-Directory: amd64/nanoserver-ltsc2025\n"
                                  "Constraints: nanoserver-ltsc2025\n"
                                  "\n"
                                  "Tags: nanoserver-ltsc2022\n"
                                  "SharedTags: nanoserver, latest\n"
                                  "Architectures: windows-amd64\n"
                                  "windows-amd64-Directory: amd64/nanoserver-ltsc2022\n"
                                  "Constraints: nanoserver-ltsc2022\n";

static void test_oi__shared_groups(void **state)
{
    (void)state;
    struct oi_repo *r = parse_ok(hello_world);
    assert_int_equal(r->nentries, 3);
    assert_int_equal(r->ngroups, 5);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(r->groups[i].kind, OI_GROUP_TAGS);
        assert_int_equal(r->groups[i].nentries, 1);
        assert_int_equal(r->groups[i].entries[0], i);
    }
    ASSERT_STRV(&r->groups[0].platforms, "linux/386", "linux/amd64", "linux/arm/v5",
                "linux/arm64/v8");
    const struct oi_group *latest = &r->groups[3], *nano = &r->groups[4];
    assert_int_equal(latest->kind, OI_GROUP_SHARED);
    ASSERT_STRV(&latest->tags, "latest");
    assert_int_equal(latest->nentries, 3);
    assert_int_equal(latest->entries[0], 0);
    assert_int_equal(latest->entries[1], 1);
    assert_int_equal(latest->entries[2], 2);
    ASSERT_STRV(&latest->platforms, "linux/386", "linux/amd64", "linux/arm/v5", "linux/arm64/v8",
                "windows/amd64");
    ASSERT_STRV(&nano->tags, "nanoserver");
    assert_int_equal(nano->nentries, 2);
    assert_int_equal(nano->entries[0], 1);
    assert_int_equal(nano->entries[1], 2);
    ASSERT_STRV(&nano->platforms, "windows/amd64");

    char *key = oi_group_key(r, latest);
    assert_string_equal(key, "test:latest");
    free(key);
    key = oi_group_key(r, &r->groups[1]);
    assert_string_equal(key, "test:nanoserver-ltsc2025");
    free(key);
    assert_int_equal(oi_find_group(r, OI_GROUP_SHARED, "nanoserver"), 4);
    assert_int_equal(oi_find_group(r, OI_GROUP_TAGS, "nanoserver"), -1);
    assert_int_equal(oi_find_group(r, OI_GROUP_TAGS, "nanoserver-ltsc2022"), 2);
    oi_repo_free(r);
}

static void test_oi__shared_groups_by_exact_set(void **state)
{
    (void)state;
    /* s1 and s3 are listed by exactly {a, b}: one group with both tags, in
     * file order; s2 only by b */
    struct oi_repo *r = parse_ok(HEAD "\nTags: a\nSharedTags: s1, s3\n"
                                      "\nTags: b\nSharedTags: s2, s3, s1\nDirectory: b\n");
    assert_int_equal(r->ngroups, 4);
    ASSERT_STRV(&r->groups[2].tags, "s1", "s3");
    assert_int_equal(r->groups[2].nentries, 2);
    ASSERT_STRV(&r->groups[3].tags, "s2");
    assert_int_equal(r->groups[3].nentries, 1);
    assert_int_equal(r->groups[3].entries[0], 1);
    oi_repo_free(r);
}

static void test_oi__arch_platforms(void **state)
{
    (void)state;
    static const char *const table[][2] = {
        {"amd64", "linux/amd64"},           {"arm32v5", "linux/arm/v5"},
        {"arm32v6", "linux/arm/v6"},        {"arm32v7", "linux/arm/v7"},
        {"arm64v8", "linux/arm64/v8"},      {"i386", "linux/386"},
        {"mips64le", "linux/mips64le"},     {"ppc64le", "linux/ppc64le"},
        {"riscv64", "linux/riscv64"},       {"s390x", "linux/s390x"},
        {"windows-amd64", "windows/amd64"},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        assert_string_equal(oi_arch_platform(table[i][0]), table[i][1]);
    assert_null(oi_arch_platform("arm64"));
    assert_null(oi_arch_platform("darwin-amd64"));
    assert_null(oi_arch_platform(""));
}

static void test_oi__error_names_repository(void **state)
{
    (void)state;
    struct oi_repo *r = NULL;
    struct err e;
    const char *text = HEAD "\nTags: a\nGitCommit: nope\n";
    assert_int_equal(oi_parse(text, strlen(text), "debian", &r, &e), -1);
    assert_non_null(strstr(e.msg, "library/debian line 6: Tags \"a\": invalid GitCommit \"nope\""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oi__comments),
        cmocka_unit_test(test_oi__comment_does_not_break_paragraph),
        cmocka_unit_test(test_oi__paragraphs),
        cmocka_unit_test(test_oi__crlf),
        cmocka_unit_test(test_oi__whitespace_line_is_continuation),
        cmocka_unit_test(test_oi__continuation),
        cmocka_unit_test(test_oi__key_value_split),
        cmocka_unit_test(test_oi__bad_line),
        cmocka_unit_test(test_oi__keys_case_sensitive_unknown_ignored),
        cmocka_unit_test(test_oi__undecodable_keys),
        cmocka_unit_test(test_oi__last_key_wins),
        cmocka_unit_test(test_oi__lists),
        cmocka_unit_test(test_oi__no_trailing_newline),
        cmocka_unit_test(test_oi__nul_and_empty),
        cmocka_unit_test(test_oi__global_defaults),
        cmocka_unit_test(test_oi__global_errors),
        cmocka_unit_test(test_oi__inheritance),
        cmocka_unit_test(test_oi__arch_specific_fields),
        cmocka_unit_test(test_oi__shared_tags_dedup),
        cmocka_unit_test(test_oi__missing_fields),
        cmocka_unit_test(test_oi__git_fetch),
        cmocka_unit_test(test_oi__git_commit),
        cmocka_unit_test(test_oi__git_commit_64),
        cmocka_unit_test(test_oi__tag_regex),
        cmocka_unit_test(test_oi__unknown_architecture),
        cmocka_unit_test(test_oi__duplicate_tags),
        cmocka_unit_test(test_oi__tag_shared_conflict),
        cmocka_unit_test(test_oi__maintainers),
        cmocka_unit_test(test_oi__merge_same_artifacts),
        cmocka_unit_test(test_oi__no_merge_when_artifacts_differ),
        cmocka_unit_test(test_oi__fingerprint),
        cmocka_unit_test(test_oi__directory_clean),
        cmocka_unit_test(test_oi__shared_groups),
        cmocka_unit_test(test_oi__shared_groups_by_exact_set),
        cmocka_unit_test(test_oi__arch_platforms),
        cmocka_unit_test(test_oi__error_names_repository),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
