/* Unit tests for common/ocilayout: a bundle's records read back as written,
 * untrusted records refused naming the entry, files checked against their
 * digest and size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>

#include <cmocka.h>

#include "ocilayout.h"
#include "xalloc.h"

#define D_A "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
#define D_EMPTY "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define COMMIT "0123456789abcdef0123456789abcdef01234567"

static void test_ocilayout__bundle_round_trip(void **state)
{
    (void)state;
    char alpine[] = "alpine", hello[] = "hello-world", commit[] = COMMIT, base[] = "89abcde";
    char mt[] = "application/vnd.oci.image.manifest.v1+json";
    char *repos[] = {alpine, hello};
    struct ocilayout_object objs[] = {
        {D_A, 1, NULL, OCILAYOUT_BLOB, 1, repos, 2},
        {D_EMPTY, 0, mt, OCILAYOUT_IMAGE, 0, repos, 1},
    };
    struct ocilayout_bundle b = {.commit = commit, .base = base, .index_size = 5,
                                 .objects = objs, .nobjects = 2};
    snprintf(b.index_digest, sizeof(b.index_digest), "%s", D_A);
    size_t len;
    char *text = ocilayout_bundle_dump(&b, &len);
    struct ocilayout_bundle back;
    struct err e;
    assert_int_equal(ocilayout_bundle_parse(text, len, &back, &e), 0);
    assert_string_equal(back.commit, COMMIT);
    assert_string_equal(back.base, "89abcde");
    assert_int_equal(back.nobjects, 2);
    assert_int_equal(back.objects[0].level, OCILAYOUT_BLOB);
    assert_int_equal(back.objects[0].nrepos, 2);
    assert_true(back.objects[0].in_bundle);
    assert_false(back.objects[1].in_bundle);
    ocilayout_bundle_index(&back);
    const struct ocilayout_object *o = ocilayout_bundle_find(&back, D_EMPTY);
    assert_non_null(o);
    assert_string_equal(o->media_type, "application/vnd.oci.image.manifest.v1+json");
    assert_null(ocilayout_bundle_find(&back, "sha256:00"));
    ocilayout_bundle_free(&back);
    free(text);
}

/* Each bad record is refused with the entry it is about named. */
static void test_ocilayout__bundle_refused(void **state)
{
    (void)state;
    static const struct {
        const char *json, *says;
    } cases[] = {
        {"[]", "not a JSON object"},
        {"{\"hubsync_bundle\": 2}", "not a hubsync bundle"},
        {"{\"hubsync_bundle\": 1, \"commit\": \"main\", \"base\": null}", "commit and base"},
        {"{\"hubsync_bundle\": 1, \"commit\": \"" COMMIT "\", \"base\": null, \"index\": "
         "{\"digest\": \"sha256:zz\", \"size\": 1}}",
         "hubsync-bundle.json: index: no valid sha256 digest"},
        {"{\"hubsync_bundle\": 1, \"commit\": \"" COMMIT "\", \"base\": null, \"index\": "
         "{\"digest\": \"" D_A "\", \"size\": 1}, \"objects\": [{\"digest\": \"" D_A "\", "
         "\"size\": 1, \"level\": \"layer\"}]}",
         "objects[0] (" D_A "): level"},
        {"{\"hubsync_bundle\": 1, \"commit\": \"" COMMIT "\", \"base\": null, \"index\": "
         "{\"digest\": \"" D_A "\", \"size\": 1}, \"objects\": [{\"digest\": \"" D_A "\", "
         "\"size\": 1, \"level\": \"blob\", \"in_bundle\": true, \"repositories\": "
         "[\"../etc\"]}]}",
         "repositories[0] is not a repository name"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ocilayout_bundle b;
        struct err e;
        assert_int_equal(ocilayout_bundle_parse(cases[i].json, strlen(cases[i].json), &b, &e),
                         -1);
        if (!strstr(e.msg, cases[i].says))
            fail_msg("case %zu: '%s' does not say '%s'", i, e.msg, cases[i].says);
        ocilayout_bundle_free(&b);
    }
}

static void test_ocilayout__index_round_trip_and_refused(void **state)
{
    (void)state;
    char repo[] = "alpine", tag[] = "3.20", mt[] = "application/vnd.oci.image.index.v1+json";
    struct ocilayout_ref r = {repo, tag, D_A, 1, mt};
    size_t len, n;
    char *text = ocilayout_index_dump(&r, 1, COMMIT, NULL, &len);
    struct ocilayout_ref *refs;
    struct err e;
    assert_int_equal(ocilayout_index_parse(text, len, &refs, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_string_equal(refs[0].repo, "alpine");
    assert_string_equal(refs[0].tag, "3.20");
    assert_string_equal(refs[0].digest, D_A);
    ocilayout_refs_free(refs, n);
    free(text);

    const char *bad = "{\"schemaVersion\": 2, \"manifests\": [{\"digest\": \"" D_A
                      "\", \"size\": 1, \"annotations\": {\"" OCILAYOUT_REF_NAME
                      "\": \"alpine\"}}]}";
    assert_int_equal(ocilayout_index_parse(bad, strlen(bad), &refs, &n, &e), -1);
    assert_non_null(strstr(e.msg, "index.json: manifests[0]: no " OCILAYOUT_REF_NAME));
    ocilayout_refs_free(refs, n);
}

/* A new layout directory in dir (a mkdtemp template). */
static void layout_make(char *dir)
{
    struct err e;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(ocilayout_mkdirs(dir, &e), 0);
}

/* Remove it, with the one object file at path (it must be all it holds). */
static void layout_remove(const char *dir, const char *path)
{
    char *sub = xasprintf("%s/blobs/sha256", dir), *blobs = xasprintf("%s/blobs", dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(sub), 0);
    assert_int_equal(rmdir(blobs), 0);
    assert_int_equal(rmdir(dir), 0);
    free(sub);
    free(blobs);
}

/* A file matches only with its exact size and digest; the reason names it. */
static void test_ocilayout__file_matches(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_ocilayout.XXXXXX";
    layout_make(dir);
    struct err e;
    char *path = ocilayout_blob_path(dir, D_A);
    char why[ERR_MSG_MAX];
    assert_int_equal(ocilayout_file_matches(path, D_A, 1, why, sizeof(why)), 0);
    assert_non_null(strstr(why, "missing"));
    assert_non_null(strstr(why, path));
    assert_int_equal(ocilayout_write_file(path, "a", 1, &e), 0);
    assert_int_equal(ocilayout_file_matches(path, D_A, 1, why, sizeof(why)), 1);
    assert_int_equal(ocilayout_file_matches(path, D_A, 2, why, sizeof(why)), 0);
    assert_non_null(strstr(why, "1 bytes, 2 expected"));
    assert_int_equal(ocilayout_write_file(path, "b", 1, &e), 0); /* tampered */
    assert_int_equal(ocilayout_file_matches(path, D_A, 1, why, sizeof(why)), 0);
    assert_non_null(strstr(why, "hashes to sha256:"));
    layout_remove(dir, path);
    free(path);
}

static int count_parts(const char *sha)
{
    DIR *d = opendir(sha);
    struct dirent *de;
    int n = 0;
    assert_non_null(d);
    while ((de = readdir(d)))
        n += strstr(de->d_name, OCILAYOUT_PART_SUFFIX) != NULL;
    closedir(d);
    return n;
}

/* Two writers of one object (two workers sharing a bundle directory) each
 * get a temporary file of their own, named after the object and ending in
 * .part; both finish, interleaved, and leave one right file and no .part. */
static void test_ocilayout__temp_files_per_writer(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_ocilayout.XXXXXX";
    layout_make(dir);
    struct err e;
    char *path = ocilayout_blob_path(dir, D_A), *sha = xasprintf("%s/blobs/sha256", dir);
    char *t1, *t2;
    int f1 = ocilayout_temp_open(path, &t1, &e), f2 = ocilayout_temp_open(path, &t2, &e);
    assert_true(f1 >= 0 && f2 >= 0);
    assert_string_not_equal(t1, t2);
    assert_memory_equal(t1, path, strlen(path));
    assert_string_equal(t1 + strlen(t1) - strlen(OCILAYOUT_PART_SUFFIX), OCILAYOUT_PART_SUFFIX);
    struct stat st;
    assert_int_equal(stat(t1, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    assert_int_equal(count_parts(sha), 2);
    assert_int_equal(write(f1, "a", 1), 1);
    assert_int_equal(write(f2, "a", 1), 1);
    assert_int_equal(ocilayout_temp_finish(f2, t2, path, 1, &e), 0);
    assert_int_equal(ocilayout_temp_finish(f1, t1, path, 1, &e), 0);
    char why[ERR_MSG_MAX];
    assert_int_equal(ocilayout_file_matches(path, D_A, 1, why, sizeof(why)), 1);
    /* One that fails its check is dropped, the right file stays. */
    free(t2);
    int f3 = ocilayout_temp_open(path, &t2, &e);
    assert_true(f3 >= 0);
    assert_int_equal(write(f3, "b", 1), 1);
    assert_int_equal(ocilayout_temp_finish(f3, t2, path, 0, NULL), -1);
    assert_int_equal(ocilayout_file_matches(path, D_A, 1, why, sizeof(why)), 1);
    assert_int_equal(count_parts(sha), 0);
    free(t1);
    free(t2);
    layout_remove(dir, path);
    free(sha);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ocilayout__bundle_round_trip),
        cmocka_unit_test(test_ocilayout__bundle_refused),
        cmocka_unit_test(test_ocilayout__index_round_trip_and_refused),
        cmocka_unit_test(test_ocilayout__file_matches),
        cmocka_unit_test(test_ocilayout__temp_files_per_writer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
