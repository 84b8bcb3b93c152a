/* Unit tests for common/syncfile: a whole file read into registries and
 * entries (defaults, implied registries and targets, anchors), and a bad
 * file of each kind refused with its line and column. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "syncfile.h"
#include "xalloc.h"

#define D64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define DIG "sha256:" D64

static struct syncfile *parse(const char *text)
{
    struct err e = {""};
    struct syncfile *sf = syncfile_parse(text, strlen(text), "sync.yaml", &e);
    if (!sf)
        fail_msg("%s", e.msg);
    return sf;
}

static const char good[] =
    "# images beyond the official ones\n"
    "version: 1\n"
    "registries:\n"
    "  ghcr.io:\n"
    "    url: http://127.0.0.1:5001\n"
    "    credentials: [HUBSYNC_GHCR]\n"
    "  docker.io:\n"
    "    # its account: the programs' HUBSYNC_UPSTREAM credentials\n"
    "  quay.io:\n"
    "defaults:\n"
    "  platforms: [linux/amd64, linux/arm64]\n"
    "  platform_policy: sparse\n"
    "sync:\n"
    "  - source: ghcr.io/org/app\n"
    "    target: mirror/app\n"
    "    tags: &releases\n"
    "      semver: '>=1.2 <2'\n"
    "      exclude: ['*-rc*']\n"
    "      newest: 3\n"
    "  - source: bitnami/redis:7.2\n"
    "    referrers: false\n"
    "    platforms: []\n"
    "  - source: quay.io/prometheus/node-exporter\n"
    "    tags: *releases\n"
    "  - source: registry.k8s.io/pause@" DIG "\n"
    "  - source: localhost:5000/tools/x\n"
    "    tags: [a, b]\n"
    "    digests: " DIG "\n"
    "    platforms: [linux/s390x]\n"
    "    platform_policy: rewrite\n"
    "  - source: index.docker.io/library/alpine\n";

static void test_syncfile__good(void **state)
{
    (void)state;
    struct syncfile *sf = parse(good);
    assert_int_equal(sf->nregs, 5);
    const struct syncfile_registry *g = syncfile_registry(sf, "GHCR.io");
    assert_non_null(g);
    assert_string_equal(g->url, "http://127.0.0.1:5001");
    assert_int_equal(g->accounts.n, 1);
    assert_int_equal(g->line, 4);
    assert_int_equal(g->column, 3);
    const struct syncfile_registry *hub = syncfile_registry(sf, "registry-1.docker.io");
    assert_non_null(hub);
    assert_null(hub->url);
    assert_string_equal(syncfile_registry_url(hub, "http://up"), "http://up");
    assert_int_equal(hub->accounts.n, 0);
    assert_string_equal(syncfile_registry(sf, "quay.io")->url, "https://quay.io");
    const struct syncfile_registry *k8s = syncfile_registry(sf, "registry.k8s.io");
    assert_string_equal(k8s->url, "https://registry.k8s.io");
    assert_int_equal(k8s->line, 0);
    assert_string_equal(syncfile_registry(sf, "localhost:5000")->url, "https://localhost:5000");

    assert_int_equal(sf->nentries, 6);
    const struct syncfile_entry *e0 = &sf->entries[0];
    assert_int_equal(e0->line, 14);
    assert_int_equal(e0->column, 5);
    assert_ptr_equal(e0->registry, g);
    assert_string_equal(e0->repo, "org/app");
    assert_string_equal(e0->target, "mirror/app");
    assert_true(e0->all_tags);
    assert_true(e0->referrers);
    assert_int_equal(e0->policy, JOB_POLICY_SPARSE);
    assert_int_equal(e0->platforms.n, 2);
    const char *tags[] = {"1.1.9", "1.2.0", "1.3.0-rc1", "1.4.1", "1.5", "1.9.9", "2.0.0"};
    const char *out[7];
    size_t n = tagfilter_apply(e0->tags, tags, 7, out);
    assert_int_equal(n, 3);
    assert_string_equal(out[0], "1.4.1");
    assert_string_equal(out[2], "1.9.9");

    const struct syncfile_entry *e1 = &sf->entries[1];
    assert_ptr_equal(e1->registry, hub);
    assert_string_equal(e1->repo, "bitnami/redis");
    assert_string_equal(e1->target, "bitnami/redis");
    assert_false(e1->all_tags);
    assert_true(tagfilter_names_only(e1->tags));
    assert_false(e1->referrers);
    assert_int_equal(e1->platforms.n, 0);
    assert_int_equal(e1->policy, JOB_POLICY_ALL);
    char *name = syncfile_entry_name(e1);
    assert_string_equal(name, "bitnami/redis");
    free(name);

    /* the alias shares the first entry's filter */
    assert_string_equal(sf->entries[2].target, "quay.io/prometheus/node-exporter");
    assert_true(sf->entries[2].all_tags);
    n = tagfilter_apply(sf->entries[2].tags, tags, 7, out);
    assert_int_equal(n, 3);

    const struct syncfile_entry *e3 = &sf->entries[3];
    assert_null(e3->tags);
    assert_int_equal(e3->digests.n, 1);
    assert_string_equal(e3->digests.v[0], DIG);
    assert_string_equal(e3->target, "registry.k8s.io/pause");
    name = syncfile_entry_name(e3);
    assert_string_equal(name, "registry.k8s.io/pause");
    free(name);

    const struct syncfile_entry *e4 = &sf->entries[4];
    assert_string_equal(e4->target, "localhost-5000/tools/x");
    assert_int_equal(e4->digests.n, 1);
    assert_int_equal(e4->policy, JOB_POLICY_REWRITE);
    assert_string_equal(e4->platforms.v[0], "linux/s390x");

    const struct syncfile_entry *e5 = &sf->entries[5];
    assert_ptr_equal(e5->registry, hub);
    assert_string_equal(e5->target, "library/alpine");
    assert_true(e5->all_tags); /* no tags named: every tag */
    assert_true(tagfilter_match(e5->tags, "anything"));
    syncfile_free(sf);
}

/* text is refused with exactly msg. */
static void refuse(const char *text, const char *msg)
{
    struct err e = {""};
    struct syncfile *sf = syncfile_parse(text, strlen(text), "sync.yaml", &e);
    if (sf)
        fail_msg("accepted: %s", text);
    if (strcmp(e.msg, msg) != 0)
        fail_msg("got  %s\nwant %s", e.msg, msg);
}

#define V "version: 1\n"
#define ONE "sync:\n  - source: ghcr.io/org/app\n"

static void test_syncfile__bad_yaml(void **state)
{
    (void)state;
    refuse("", "sync.yaml: empty (write 'version: 1' and a 'sync' list)");
    refuse(V "sync: [\n", "sync.yaml:3:1: while parsing a flow node, did not find expected node "
                          "content");
    refuse(V "sync:\n  - source: a\n   target: b\n",
           "sync.yaml:4:4: while parsing a block collection, did not find expected '-' indicator");
    refuse(V ONE "---\n" V ONE,
           "sync.yaml:5:1: file: a second document (one sync file is one document)");
    refuse("- a\n", "sync.yaml:1:1: file: expected a mapping, found a list");
    refuse(V "sync:\n  - source: \"ghcr.io/o\\0x\"\n", "sync.yaml:3:13: sync[0].source: a NUL "
                                                     "character");
    refuse(V "sync:\n  - source: *nothing\n",
           "sync.yaml:3:13: found undefined alias");
}

static void test_syncfile__bad_structure(void **state)
{
    (void)state;
    refuse("sync: []\n", "sync.yaml:1:1: file: no version (write 'version: 1' first)");
    refuse("version: 2\n" ONE, "sync.yaml:1:10: version: '2' is not a version this hubsync "
                               "reads (1)");
    refuse(V "registries: {}\n", "sync.yaml:1:1: file: no sync (the list of images to copy)");
    refuse(V "sync: []\n", "sync.yaml:2:7: sync: no entries");
    refuse(V "sync: {a: b}\n", "sync.yaml:2:7: sync: expected a list, found a mapping");
    refuse(V "syncs: []\n", "sync.yaml:2:1: file: unknown key 'syncs' (known: version, "
                            "registries, defaults, sync)");
    refuse(V ONE "version: 1\n", "sync.yaml:4:1: file: 'version' appears twice");
    refuse(V "sync:\n  - target: x\n", "sync.yaml:3:5: sync[0]: no source (the image to copy: "
                                       "[registry/]repository)");
    refuse(V ONE "    tag: latest\n", "sync.yaml:4:5: sync[0]: unknown key 'tag' (known: "
                                       "source, target, tags, digests, platforms, "
                                       "platform_policy, referrers)");
    refuse(V "sync:\n  - source: {a: b}\n", "sync.yaml:3:13: sync[0].source: expected a "
                                            "string, found a mapping");
}

static void test_syncfile__bad_entries(void **state)
{
    (void)state;
    refuse(V "sync:\n  - source: ghcr.io/Org/app\n",
           "sync.yaml:3:13: sync[0].source: 'ghcr.io/Org/app': uppercase letters are not "
           "allowed in a repository name ('O' at position 9)");
    refuse(V "sync:\n  - source: ghcr.io/org/app:v1\n    tags: [v2]\n",
           "sync.yaml:4:11: sync[0].tags: the source names a tag already "
           "('ghcr.io/org/app:v1'): list it here instead");
    refuse(V ONE "    target: Mirror/App\n",
           "sync.yaml:4:13: sync[0].target: 'Mirror/App' is not a repository name (lowercase "
           "path components, no registry, no tag)");
    refuse(V ONE "    tags: [latest, 'a:b']\n",
           "sync.yaml:4:20: sync[0].tags: 'a:b' is not a tag "
           "([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})");
    refuse(V ONE "    tags:\n      regex: ['^v[0-9]+$', '(']\n",
           "sync.yaml:5:28: sync[0].tags.regex: regular expression '(': Unmatched ( or \\(");
    refuse(V ONE "    tags:\n      semver: '>=1.2 | <2'\n",
           "sync.yaml:5:15: sync[0].tags.semver: semver range '>=1.2 | <2': expected '||' at "
           "character 7");
    refuse(V ONE "    tags:\n      glob: ''\n", "sync.yaml:5:13: sync[0].tags.glob: empty");
    refuse(V ONE "    tags:\n      newest: 0\n",
           "sync.yaml:5:15: sync[0].tags.newest: '0' is not a number of tags (1..100000)");
    refuse(V ONE "    tags:\n      newest: three\n",
           "sync.yaml:5:15: sync[0].tags.newest: 'three' is not a number of tags (1..100000)");
    refuse(V ONE "    tags:\n      order: date\n      newest: 2\n",
           "sync.yaml:5:14: sync[0].tags.order: 'date' is not semver or tag");
    refuse(V ONE "    tags:\n      order: tag\n",
           "sync.yaml:5:14: sync[0].tags.order: order goes with newest");
    refuse(V ONE "    tags:\n      regexp: x\n",
           "sync.yaml:5:7: sync[0].tags: unknown key 'regexp' (known: names, glob, regex, "
           "semver, exclude, exclude_regex, exclude_semver, newest, order)");
    refuse(V ONE "    digests: [sha256:abc]\n",
           "sync.yaml:4:15: sync[0].digests: 'sha256:abc' is not a digest (sha256:<64 hex>)");
    refuse(V ONE "    referrers: yes\n",
           "sync.yaml:4:16: sync[0].referrers: 'yes' is not true or false");
}

static void test_syncfile__bad_platforms(void **state)
{
    (void)state;
    refuse(V ONE "    platforms: [linux]\n",
           "sync.yaml:4:17: sync[0].platforms: 'linux' is not os/arch[/variant]");
    refuse(V ONE "    platforms: [linux/amd64]\n",
           "sync.yaml:4:16: sync[0]: platforms needs platform_policy: sparse (the index kept, "
           "only these children copied) or rewrite (a new index of them: a new digest)");
    refuse(V ONE "    platform_policy: sparse\n",
           "sync.yaml:4:22: sync[0].platform_policy: platform_policy needs platforms");
    refuse(V "defaults:\n  platforms: [linux/amd64]\n  platform_policy: all\n" ONE,
           "sync.yaml:4:20: defaults.platform_policy: 'all' is not sparse or rewrite");
    refuse(V "defaults:\n  platforms: [linux/amd64, linux/amd64]\n" ONE,
           "sync.yaml:3:28: defaults.platforms: 'linux/amd64' appears twice");
}

/* Docker Hub with several accounts: pooled, each its own budget. */
static void test_syncfile__hub_accounts(void **state)
{
    (void)state;
    struct syncfile *sf = parse("version: 1\n"
                                "registries:\n"
                                "  registry-1.docker.io:\n"
                                "    credentials: [HUB_A, HUBSYNC_UPSTREAM, HUB_C]\n"
                                "sync:\n"
                                "  - source: bitnami/redis\n");
    const struct syncfile_registry *hub = syncfile_registry(sf, "docker.io");
    assert_non_null(hub);
    assert_null(hub->url);
    assert_int_equal(hub->accounts.n, 3);
    assert_string_equal(hub->accounts.v[0], "HUB_A");
    assert_string_equal(hub->accounts.v[1], "HUBSYNC_UPSTREAM");
    assert_string_equal(hub->accounts.v[2], "HUB_C");
    assert_ptr_equal(sf->entries[0].registry, hub);
    syncfile_free(sf);
}

static void test_syncfile__bad_registries(void **state)
{
    (void)state;
    refuse(V "registries:\n  ghcr:\n" ONE,
           "sync.yaml:3:3: registries: 'ghcr' is not a registry (host or host:port, as image "
           "references name it)");
    refuse(V "registries:\n  docker.io: {}\n  index.docker.io: {}\n" ONE,
           "sync.yaml:4:3: registries: 'index.docker.io' appears twice");
    refuse(V "registries:\n  ghcr.io:\n    url: ftp://ghcr.io\n" ONE,
           "sync.yaml:4:10: registries.ghcr.io.url: 'ftp://ghcr.io' is not an "
           "http(s)://host[:port][/path] URL without credentials");
    refuse(V "registries:\n  ghcr.io:\n    url: https://u:p@ghcr.io\n" ONE,
           "sync.yaml:4:10: registries.ghcr.io.url: 'https://u:p@ghcr.io' is not an "
           "http(s)://host[:port][/path] URL without credentials");
    refuse(V "registries:\n  docker.io:\n    url: https://mirror.gcr.io\n" ONE,
           "sync.yaml:4:10: registries.docker.io.url: docker.io is the programs' --upstream "
           "(HUBSYNC_UPSTREAM): set it there");
    refuse(V "registries:\n  ghcr.io:\n    credentials: [ghcr_token]\n" ONE,
           "sync.yaml:4:19: registries.ghcr.io.credentials: 'ghcr_token' is not an environment "
           "prefix ([A-Z_][A-Z0-9_]*, up to 64 characters; the account is <PREFIX>_USERNAME "
           "with <PREFIX>_PASSWORD or <PREFIX>_PASSWORD_FILE)");
    refuse(V "registries:\n  ghcr.io:\n    credentials: HUBSYNC_TARGET\n" ONE,
           "sync.yaml:4:18: registries.ghcr.io.credentials: HUBSYNC_TARGET holds the "
           "credentials of --target only");
    refuse(V "registries:\n  ghcr.io:\n    credentials: [HUBSYNC_UPSTREAM]\n" ONE,
           "sync.yaml:4:19: registries.ghcr.io.credentials: HUBSYNC_UPSTREAM holds the "
           "credentials of --upstream (docker.io) only");
    refuse(V "registries:\n  ghcr.io:\n    credentials: [GH_A, GH_B]\n" ONE,
           "sync.yaml:4:18: registries.ghcr.io.credentials: 2 accounts (only docker.io pools "
           "several), more than 1");
    /* Docker Hub's pooled accounts: prefixes, each once, at most 16. */
    refuse(V "registries:\n  docker.io:\n    credentials: [HUB_A, hub_b]\n" ONE,
           "sync.yaml:4:26: registries.docker.io.credentials: 'hub_b' is not an environment "
           "prefix ([A-Z_][A-Z0-9_]*, up to 64 characters; the account is <PREFIX>_USERNAME "
           "with <PREFIX>_PASSWORD or <PREFIX>_PASSWORD_FILE)");
    refuse(V "registries:\n  docker.io:\n    credentials:\n      - HUB_A\n      - HUB_A\n" ONE,
           "sync.yaml:6:9: registries.docker.io.credentials: 'HUB_A' appears twice");
    refuse(V "registries:\n  docker.io:\n    credentials: [HUBSYNC_TARGET, HUB_A]\n" ONE,
           "sync.yaml:4:19: registries.docker.io.credentials: HUBSYNC_TARGET holds the "
           "credentials of --target only");
    refuse(V "registries:\n  docker.io:\n    credentials: [A0, A1, A2, A3, A4, A5, A6, A7, "
             "A8, A9, B0, B1, B2, B3, B4, B5, B6]\n" ONE,
           "sync.yaml:4:18: registries.docker.io.credentials: 17 accounts, more than 16");
    refuse(V "sync:\n  - source: localhost:0/x\n",
           "sync.yaml:3:13: sync[0].source: 'localhost:0/x' makes no registry URL "
           "(https://localhost:0)");
    refuse(V "registries:\n  ghcr.io:\n    token: x\n" ONE,
           "sync.yaml:4:5: registries.ghcr.io: unknown key 'token' (known: url, credentials)");
}

static void test_syncfile__load(void **state)
{
    (void)state;
    struct err e = {""};
    char path[] = "/tmp/test_syncfile_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, good, strlen(good)), (ssize_t)strlen(good));
    close(fd);
    struct syncfile *sf = syncfile_load(path, &e);
    assert_non_null(sf);
    assert_string_equal(sf->path, path);
    syncfile_free(sf);
    unlink(path);
    assert_null(syncfile_load(path, &e));
    char *want = xasprintf("%s: No such file or directory", path);
    assert_string_equal(e.msg, want);
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syncfile__good),
        cmocka_unit_test(test_syncfile__bad_yaml),
        cmocka_unit_test(test_syncfile__bad_structure),
        cmocka_unit_test(test_syncfile__bad_entries),
        cmocka_unit_test(test_syncfile__bad_platforms),
        cmocka_unit_test(test_syncfile__hub_accounts),
        cmocka_unit_test(test_syncfile__bad_registries),
        cmocka_unit_test(test_syncfile__load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
