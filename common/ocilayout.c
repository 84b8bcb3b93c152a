/* ocilayout: see ocilayout.h. */
#include "ocilayout.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "ref.h"
#include "xalloc.h"

const char ocilayout_marker[] = "{\"imageLayoutVersion\":\"1.0.0\"}";

static const char *const LEVEL_NAMES[] = {"blob", "image", "index"};

/* ---- reading ---------------------------------------------------------------------------- */

static json_t *load(const char *body, size_t len, const char *what, struct err *e)
{
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        err_set(e, "%s: not JSON (line %d: %s)", what, je.line, je.text);
    else if (!json_is_object(root)) {
        err_set(e, "%s: not a JSON object", what);
        json_decref(root);
        root = NULL;
    }
    return root;
}

/* digest and size of a descriptor-like object. */
static int desc_fields(json_t *o, const char *where, char digest[DIGEST_STR_SIZE],
                       long long *size, struct err *e)
{
    json_t *d = json_object_get(o, "digest"), *s = json_object_get(o, "size");
    if (!json_is_string(d) ||
        digest_parse(json_string_value(d), json_string_length(d), "digest", digest, e) < 0)
        return err_set(e, "%s: no valid sha256 digest", where);
    if (!json_is_integer(s) || json_integer_value(s) < 0)
        return err_set(e, "%s: no valid size", where);
    *size = json_integer_value(s);
    return 0;
}

static char *opt_string(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    return json_is_string(v) ? xstrdup(json_string_value(v)) : NULL;
}

/* "<repo>:<tag>" split at the last ':' into a valid repository and tag. */
static int split_ref_name(const char *name, char **repo, char **tag)
{
    const char *colon = strrchr(name, ':');
    if (!colon || colon == name)
        return -1;
    *repo = xstrndup(name, (size_t)(colon - name));
    *tag = xstrdup(colon + 1);
    if (ref_repo_valid(*repo) && ref_tag_valid(*tag))
        return 0;
    free(*repo);
    free(*tag);
    *repo = *tag = NULL;
    return -1;
}

int ocilayout_index_parse(const char *body, size_t len, struct ocilayout_ref **refs,
                          size_t *nrefs, struct err *e)
{
    int ret = -1;
    *refs = NULL;
    *nrefs = 0;
    json_t *root = load(body, len, "index.json", e);
    if (!root)
        return -1;
    json_t *m = json_object_get(root, "manifests");
    if (json_integer_value(json_object_get(root, "schemaVersion")) != 2 || !json_is_array(m)) {
        err_set(e, "index.json: not an OCI index (schemaVersion 2 with manifests)");
        goto out;
    }
    if (json_array_size(m) > OCILAYOUT_MAX_ITEMS) {
        err_set(e, "index.json: more than %d manifests", OCILAYOUT_MAX_ITEMS);
        goto out;
    }
    *refs = xcalloc(json_array_size(m) + 1, sizeof(**refs));
    size_t i;
    json_t *d;
    json_array_foreach(m, i, d)
    {
        char where[64];
        snprintf(where, sizeof(where), "index.json: manifests[%zu]", i);
        struct ocilayout_ref *r = &(*refs)[i];
        *nrefs = i + 1;
        if (!json_is_object(d)) {
            err_set(e, "%s: not an object", where);
            goto out;
        }
        if (desc_fields(d, where, r->digest, &r->size, e) < 0)
            goto out;
        r->media_type = opt_string(d, "mediaType");
        json_t *name = json_object_get(json_object_get(d, "annotations"), OCILAYOUT_REF_NAME);
        if (!json_is_string(name) || split_ref_name(json_string_value(name), &r->repo, &r->tag)) {
            err_set(e, "%s: no %s annotation of the form repository:tag", where,
                    OCILAYOUT_REF_NAME);
            goto out;
        }
    }
    ret = 0;
out:
    json_decref(root);
    return ret;
}

static int parse_object(json_t *o, size_t i, struct ocilayout_object *ob, struct err *e)
{
    char where[64];
    snprintf(where, sizeof(where), "%s: objects[%zu]", OCILAYOUT_BUNDLE_FILE, i);
    if (!json_is_object(o))
        return err_set(e, "%s: not an object", where);
    if (desc_fields(o, where, ob->digest, &ob->size, e) < 0)
        return -1;
    json_t *lv = json_object_get(o, "level"), *in = json_object_get(o, "in_bundle");
    json_t *repos = json_object_get(o, "repositories");
    ob->level = -1;
    for (int k = 0; k < 3 && json_is_string(lv); k++)
        if (strcmp(json_string_value(lv), LEVEL_NAMES[k]) == 0)
            ob->level = k;
    if (ob->level < 0)
        return err_set(e, "%s (%s): level is not blob, image or index", where, ob->digest);
    ob->media_type = opt_string(o, "mediaType");
    if (ob->level != OCILAYOUT_BLOB && !ob->media_type)
        return err_set(e, "%s (%s): a manifest without mediaType", where, ob->digest);
    if (!json_is_boolean(in))
        return err_set(e, "%s (%s): in_bundle is not true or false", where, ob->digest);
    ob->in_bundle = json_is_true(in);
    if (!json_is_array(repos) || json_array_size(repos) == 0 ||
        json_array_size(repos) > OCILAYOUT_MAX_ITEMS)
        return err_set(e, "%s (%s): no repositories", where, ob->digest);
    ob->repos = xcalloc(json_array_size(repos), sizeof(char *));
    size_t k;
    json_t *r;
    json_array_foreach(repos, k, r)
    {
        if (!json_is_string(r) || !ref_repo_valid(json_string_value(r)))
            return err_set(e, "%s (%s): repositories[%zu] is not a repository name", where,
                           ob->digest, k);
        ob->repos[ob->nrepos++] = xstrdup(json_string_value(r));
    }
    return 0;
}

static int commit_valid(const char *s)
{
    size_t n = strlen(s);
    return n >= 7 && n <= 64 && strspn(s, "0123456789abcdef") == n;
}

int ocilayout_bundle_parse(const char *body, size_t len, struct ocilayout_bundle *out,
                           struct err *e)
{
    int ret = -1;
    memset(out, 0, sizeof(*out));
    json_t *root = load(body, len, OCILAYOUT_BUNDLE_FILE, e);
    if (!root)
        return -1;
    json_t *fmt = json_object_get(root, "hubsync_bundle"), *base = json_object_get(root, "base");
    json_t *objs = json_object_get(root, "objects");
    if (!json_is_integer(fmt) || json_integer_value(fmt) != OCILAYOUT_FORMAT) {
        err_set(e, "%s: not a hubsync bundle of format %d", OCILAYOUT_BUNDLE_FILE,
                OCILAYOUT_FORMAT);
        goto out;
    }
    out->commit = opt_string(root, "commit");
    out->base = opt_string(root, "base");
    if (!out->commit || !commit_valid(out->commit) || (!json_is_null(base) && !out->base) ||
        (out->base && !commit_valid(out->base))) {
        err_set(e, "%s: commit and base must be official-images commits (base null for a full "
                "bundle)", OCILAYOUT_BUNDLE_FILE);
        goto out;
    }
    char where[64];
    snprintf(where, sizeof(where), "%s: index", OCILAYOUT_BUNDLE_FILE);
    json_t *ix = json_object_get(root, "index");
    if (!json_is_object(ix) ||
        desc_fields(ix, where, out->index_digest, &out->index_size, e) < 0) {
        if (!json_is_object(ix))
            err_set(e, "%s: not an object", where);
        goto out;
    }
    if (!json_is_array(objs) || json_array_size(objs) > OCILAYOUT_MAX_ITEMS) {
        err_set(e, "%s: objects is not an array of at most %d", OCILAYOUT_BUNDLE_FILE,
                OCILAYOUT_MAX_ITEMS);
        goto out;
    }
    out->objects = xcalloc(json_array_size(objs) + 1, sizeof(*out->objects));
    size_t i;
    json_t *o;
    json_array_foreach(objs, i, o)
    {
        out->nobjects = i + 1;
        if (parse_object(o, i, &out->objects[i], e) < 0)
            goto out;
    }
    ret = 0;
out:
    json_decref(root);
    return ret;
}

void ocilayout_refs_free(struct ocilayout_ref *refs, size_t n)
{
    for (size_t i = 0; refs && i < n; i++) {
        free(refs[i].repo);
        free(refs[i].tag);
        free(refs[i].media_type);
    }
    free(refs);
}

void ocilayout_bundle_free(struct ocilayout_bundle *b)
{
    for (size_t i = 0; i < b->nobjects; i++) {
        struct ocilayout_object *o = &b->objects[i];
        free(o->media_type);
        for (size_t k = 0; k < o->nrepos; k++)
            free(o->repos[k]);
        free(o->repos);
    }
    free(b->objects);
    free(b->commit);
    free(b->base);
    free(b->sorted);
    memset(b, 0, sizeof(*b));
}

static int by_digest(const void *a, const void *b)
{
    const struct ocilayout_object *const *x = a, *const *y = b;
    return strcmp((*x)->digest, (*y)->digest);
}

void ocilayout_bundle_index(struct ocilayout_bundle *b)
{
    free(b->sorted);
    b->sorted = xcalloc(b->nobjects + 1, sizeof(*b->sorted));
    for (size_t i = 0; i < b->nobjects; i++)
        b->sorted[i] = &b->objects[i];
    qsort(b->sorted, b->nobjects, sizeof(*b->sorted), by_digest);
}

const struct ocilayout_object *ocilayout_bundle_find(const struct ocilayout_bundle *b,
                                                     const char *digest)
{
    size_t lo = 0, hi = b->sorted ? b->nobjects : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(b->sorted[mid]->digest, digest);
        if (c == 0)
            return b->sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int ocilayout_marker_check(const char *body, size_t len, struct err *e)
{
    json_t *root = load(body, len, "oci-layout", e);
    if (!root)
        return -1;
    json_t *v = json_object_get(root, "imageLayoutVersion");
    int ok = json_is_string(v) && strcmp(json_string_value(v), "1.0.0") == 0;
    json_decref(root);
    return ok ? 0 : err_set(e, "oci-layout: imageLayoutVersion is not 1.0.0");
}

/* ---- writing ---------------------------------------------------------------------------- */

static char *dump(json_t *root, size_t *len)
{
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s)
        abort(); /* only out of memory */
    *len = strlen(s);
    return s;
}

char *ocilayout_index_dump(const struct ocilayout_ref *refs, size_t nrefs, const char *commit,
                           const char *base, size_t *len)
{
    json_t *m = json_array();
    for (size_t i = 0; i < nrefs; i++) {
        const struct ocilayout_ref *r = &refs[i];
        char *name = xasprintf("%s:%s", r->repo, r->tag);
        json_t *d = json_pack("{s:s, s:s, s:I, s:{s:s}}", "mediaType",
                              r->media_type ? r->media_type : "", "digest", r->digest, "size",
                              (json_int_t)r->size, "annotations", OCILAYOUT_REF_NAME, name);
        free(name);
        json_array_append_new(m, d);
    }
    json_t *ann = json_pack("{s:s}", "io.hubsync.bundle.commit", commit);
    if (base)
        json_object_set_new(ann, "io.hubsync.bundle.base", json_string(base));
    json_t *root = json_pack("{s:i, s:s, s:o, s:o}", "schemaVersion", 2, "mediaType",
                             "application/vnd.oci.image.index.v1+json", "manifests", m,
                             "annotations", ann);
    return dump(root, len);
}

char *ocilayout_bundle_dump(const struct ocilayout_bundle *b, size_t *len)
{
    json_t *objs = json_array();
    for (size_t i = 0; i < b->nobjects; i++) {
        const struct ocilayout_object *o = &b->objects[i];
        json_t *repos = json_array();
        for (size_t k = 0; k < o->nrepos; k++)
            json_array_append_new(repos, json_string(o->repos[k]));
        json_t *j = json_pack("{s:s, s:I, s:s, s:b, s:o}", "digest", o->digest, "size",
                              (json_int_t)o->size, "level", LEVEL_NAMES[o->level], "in_bundle",
                              o->in_bundle, "repositories", repos);
        if (o->media_type)
            json_object_set_new(j, "mediaType", json_string(o->media_type));
        json_array_append_new(objs, j);
    }
    json_t *root = json_pack("{s:i, s:s, s:o, s:{s:s, s:I}, s:o}", "hubsync_bundle",
                             OCILAYOUT_FORMAT, "commit", b->commit, "base",
                             b->base ? json_string(b->base) : json_null(), "index", "digest",
                             b->index_digest, "size", (json_int_t)b->index_size, "objects", objs);
    return dump(root, len);
}

/* ---- files ------------------------------------------------------------------------------ */

char *ocilayout_blob_path(const char *dir, const char *digest)
{
    return xasprintf("%s/blobs/sha256/%s", dir, digest + strlen("sha256:"));
}

static int mkdir_one(const char *path, struct err *e)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST)
        return 0;
    return err_set(e, "%s: %s", path, strerror(errno));
}

int ocilayout_mkdirs(const char *dir, struct err *e)
{
    char *blobs = xasprintf("%s/blobs", dir), *sha = xasprintf("%s/blobs/sha256", dir);
    int ret = mkdir_one(dir, e) < 0 || mkdir_one(blobs, e) < 0 || mkdir_one(sha, e) < 0 ? -1 : 0;
    free(blobs);
    free(sha);
    return ret;
}

int ocilayout_hash_file(const char *path, char out[DIGEST_STR_SIZE], long long *size,
                        struct err *e)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, "%s: %s", path, strerror(errno));
    struct digest_ctx *d = digest_new();
    char buf[64 << 10];
    long long total = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
        if (n < 0)
            continue;
        digest_update(d, buf, (size_t)n);
        total += n;
    }
    int ret = 0;
    if (n < 0)
        ret = err_set(e, "%s: %s", path, strerror(errno));
    digest_final(d, out);
    digest_free(d);
    close(fd);
    *size = total;
    return ret;
}

int ocilayout_file_matches(const char *path, const char *digest, long long size, char *why,
                           size_t n)
{
    struct stat st;
    struct err e;
    char got[DIGEST_STR_SIZE];
    long long have;
    if (stat(path, &st) != 0) {
        snprintf(why, n, "%s: %s", path, errno == ENOENT ? "missing" : strerror(errno));
        return errno == ENOENT ? 0 : -1;
    }
    if ((long long)st.st_size != size) {
        snprintf(why, n, "%s: %lld bytes, %lld expected", path, (long long)st.st_size, size);
        return 0;
    }
    if (ocilayout_hash_file(path, got, &have, &e) < 0) {
        snprintf(why, n, "%s", e.msg);
        return -1;
    }
    if (have != size || strcmp(got, digest) != 0) {
        snprintf(why, n, "%s: hashes to %s", path, got);
        return 0;
    }
    return 1;
}

int ocilayout_read_file(const char *path, size_t max, char **out, size_t *len, struct err *e)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rbe");
    if (!f)
        return err_set(e, "%s: %s", path, errno == ENOENT ? "missing" : strerror(errno));
    struct buf b;
    buf_init(&b, max);
    char chunk[64 << 10];
    size_t n;
    int ret = 0;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        if (buf_append(&b, chunk, n) < 0) {
            ret = err_set(e, "%s: larger than %zu bytes", path, max);
            break;
        }
    if (ret == 0 && ferror(f))
        ret = err_set(e, "%s: read error", path);
    fclose(f);
    if (ret < 0) {
        buf_free(&b);
        return -1;
    }
    *len = b.len;
    *out = buf_steal(&b);
    return 0;
}

int ocilayout_temp_open(const char *path, char **tmp, struct err *e)
{
    char host[HOST_NAME_MAX + 1] = "";
    gethostname(host, sizeof(host) - 1);
    /* A host name is a label of [A-Za-z0-9-] in practice; anything else
     * would only make the name odd, never collide: it is replaced. */
    for (char *p = host; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-')
            *p = '_';
    *tmp = xasprintf("%s.%s.%d.XXXXXX" OCILAYOUT_PART_SUFFIX, path, host[0] ? host : "host",
                     (int)getpid());
    int fd = mkostemps(*tmp, (int)strlen(OCILAYOUT_PART_SUFFIX), O_CLOEXEC);
    if (fd < 0) {
        err_set(e, "%s: %s", *tmp, strerror(errno));
        free(*tmp);
        *tmp = NULL;
        return -1;
    }
    if (fchmod(fd, 0644) != 0) {
        err_set(e, "%s: %s", *tmp, strerror(errno));
        ocilayout_temp_finish(fd, *tmp, path, 0, NULL);
        free(*tmp);
        *tmp = NULL;
        return -1;
    }
    return fd;
}

int ocilayout_temp_finish(int fd, const char *tmp, const char *path, int keep, struct err *e)
{
    if (keep && fsync(fd) != 0) {
        err_set(e, "%s: %s", tmp, strerror(errno));
        keep = -1;
    }
    if (close(fd) != 0 && keep == 1) {
        err_set(e, "%s: %s", tmp, strerror(errno));
        keep = -1;
    }
    if (keep == 1 && rename(tmp, path) != 0) {
        err_set(e, "%s: %s", path, strerror(errno));
        keep = -1;
    }
    if (keep != 1)
        unlink(tmp);
    return keep == 1 ? 0 : -1;
}

int ocilayout_write_file(const char *path, const void *data, size_t len, struct err *e)
{
    char *tmp;
    int fd = ocilayout_temp_open(path, &tmp, e);
    if (fd < 0)
        return -1;
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, (const char *)data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            err_set(e, "%s: %s", tmp, strerror(errno));
            ocilayout_temp_finish(fd, tmp, path, 0, NULL);
            free(tmp);
            return -1;
        }
        off += (size_t)w;
    }
    int ret = ocilayout_temp_finish(fd, tmp, path, 1, e);
    free(tmp);
    return ret;
}
