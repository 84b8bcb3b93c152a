/* import: `hubsync-coordinator import DIR` pushes a bundle (ocilayout.h) into
 * the registry of an air-gapped site and records the commit it brings the
 * site to.
 *
 * Nothing is written before the whole bundle checked out: oci-layout,
 * hubsync-bundle.json, index.json against the digest the bundle file gives
 * it, every file of blobs/ hashed again against its name and size, every
 * image manifest's blobs listed, and the site at the bundle's base commit
 * (an incremental bundle applies only there). Then, reading the site with
 * HEADs (free, nothing written): what each repository has already; an
 * object an incremental bundle leaves out must be on the site. Only then
 * the writes, each skipped when the site has it: blobs (a mount from another
 * repository of the site when one has it, else an upload streamed from the
 * file, hashed again on the way so a file changed since the check aborts
 * before its last byte), image manifests, indexes, and the tags last. An
 * interrupted import is resumed by running it again: what arrived is found
 * by the HEADs. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "coord.h"
#include "log.h"
#include "manifest.h"
#include "ocilayout.h"
#include "reg.h"
#include "reg_blob.h"
#include "xalloc.h"

static const struct cfg_opt import_opts[] = {
    CFG_OPT_REDIS,
    CFG_OPT_REDIS_PREFIX,
    CFG_OPT_TARGET,
    COORD_OPT_TARGET_PREFIX,
    COORD_OPTS_BUNDLE,
};
#define NIMPORT_OPTS ((int)(sizeof(import_opts) / sizeof(import_opts[0])))

static const char import_usage[] =
    "import DIR --target URL [--redis URL]\n"
    "\n"
    "Pushes the bundle in DIR (written by export) into the target: blobs (mounted from\n"
    "another repository of the target when one has them), manifests, then tags, each only\n"
    "when the target lacks it, and records in Redis (site:<target>) the official-images\n"
    "commit it brought the target to. The whole bundle is checked first (every file hashed\n"
    "again): a truncated or changed bundle is refused naming the file, with nothing written.\n"
    "An incremental bundle applies only to a target at its base commit. Exit 0, 1 when the\n"
    "bundle was refused or a write failed (run it again to resume), 2 on bad usage.";

struct importer {
    const struct cfg *c;
    struct coord_bundle_io io;
    struct coord_bundle_db db;
    const char *dir, *prefix;
    struct ocilayout_bundle b;
    struct ocilayout_ref *refs;
    size_t nrefs;
    int **present;     /* per object, per repository: on the site */
    char (*tag_at)[DIGEST_STR_SIZE]; /* per ref: the site's digest of the tag, "" none */
    long long uploaded, mounted, bytes, manifests, tags, kept;
};

/* One write (or chain of writes) in flight. */
struct icall {
    struct importer *im;
    size_t obj, k;  /* object, index of its repository */
    size_t ref;     /* tag writes: the ref */
    int fd;
    char *repo;     /* target repository written */
    char *body;     /* manifest bytes */
    size_t len;
};

static char *target_repo(const struct importer *im, const char *name)
{
    return xasprintf("%s%s", im->prefix, name);
}

/* ---- checking the bundle (nothing leaves this machine) ----------------------------------- */

static int read_in(const struct importer *im, const char *name, size_t max, char **body,
                   size_t *len, struct err *e)
{
    char *path = xasprintf("%s/%s", im->dir, name);
    int ret = ocilayout_read_file(path, max, body, len, e);
    free(path);
    return ret;
}

static int check_files(struct importer *im, struct err *e)
{
    char *body = NULL;
    size_t len;
    int ret = -1;
    char got[DIGEST_STR_SIZE];
    if (read_in(im, "oci-layout", OCILAYOUT_FILE_MAX, &body, &len, e) < 0 ||
        ocilayout_marker_check(body, len, e) < 0)
        goto out;
    free(body);
    if (read_in(im, OCILAYOUT_BUNDLE_FILE, OCILAYOUT_FILE_MAX, &body, &len, e) < 0 ||
        ocilayout_bundle_parse(body, len, &im->b, e) < 0)
        goto out;
    free(body);
    if (read_in(im, "index.json", OCILAYOUT_FILE_MAX, &body, &len, e) < 0)
        goto out;
    digest_of(body, len, got);
    if ((long long)len != im->b.index_size || strcmp(got, im->b.index_digest) != 0) {
        err_set(e, "%s/index.json: %zu bytes hashing to %s, %s says %lld bytes of %s", im->dir,
                len, got, OCILAYOUT_BUNDLE_FILE, im->b.index_size, im->b.index_digest);
        goto out;
    }
    if (ocilayout_index_parse(body, len, &im->refs, &im->nrefs, e) < 0)
        goto out;
    ret = 0;
out:
    free(body);
    return ret;
}

static int has_repo(const struct ocilayout_object *o, const char *repo)
{
    for (size_t k = 0; k < o->nrepos; k++)
        if (strcmp(o->repos[k], repo) == 0)
            return 1;
    return 0;
}

/* An image manifest of the bundle lists only blobs the bundle knows. */
static int check_manifest(const struct importer *im, const struct ocilayout_object *o,
                          const char *path, struct err *e)
{
    char *body = NULL;
    size_t len;
    struct manifest m;
    if (ocilayout_read_file(path, REG_MANIFEST_MAX, &body, &len, e) < 0)
        return -1;
    int ret = manifest_parse(&m, body, len, o->media_type, e);
    free(body);
    if (ret < 0)
        return err_prefix(e, "%s", path);
    for (size_t k = 0; k < m.nitems && ret == 0 && !m.is_index; k++)
        if (!m.items[k].foreign && !ocilayout_bundle_find(&im->b, m.items[k].digest))
            ret = err_set(e, "%s references %s, which %s does not list", path,
                          m.items[k].digest, OCILAYOUT_BUNDLE_FILE);
    manifest_free(&m);
    return ret;
}

static int check_objects(struct importer *im, struct err *e)
{
    ocilayout_bundle_index(&im->b);
    for (size_t i = 1; i < im->b.nobjects; i++)
        if (strcmp(im->b.sorted[i - 1]->digest, im->b.sorted[i]->digest) == 0)
            return err_set(e, "%s lists %s twice", OCILAYOUT_BUNDLE_FILE, im->b.sorted[i]->digest);
    for (size_t i = 0; i < im->nrefs; i++) {
        const struct ocilayout_ref *r = &im->refs[i];
        const struct ocilayout_object *o = ocilayout_bundle_find(&im->b, r->digest);
        if (!o || o->level == OCILAYOUT_BLOB || o->size != r->size || !has_repo(o, r->repo))
            return err_set(e, "%s/index.json: %s:%s (%s) is not a manifest of %s in %s", im->dir,
                           r->repo, r->tag, r->digest, r->repo, OCILAYOUT_BUNDLE_FILE);
    }
    for (size_t i = 0; i < im->b.nobjects; i++) {
        const struct ocilayout_object *o = &im->b.objects[i];
        if (!o->in_bundle) {
            if (!im->b.base)
                return err_set(e, "%s: a full bundle without %s", OCILAYOUT_BUNDLE_FILE,
                               o->digest);
            continue;
        }
        char why[ERR_MSG_MAX];
        char *path = ocilayout_blob_path(im->dir, o->digest);
        int ok = ocilayout_file_matches(path, o->digest, o->size, why, sizeof(why));
        if (ok == 1 && o->level == OCILAYOUT_IMAGE && check_manifest(im, o, path, e) < 0)
            ok = -2;
        free(path);
        if (ok == -2)
            return -1;
        if (ok != 1)
            return err_set(e, "%s", why);
    }
    return 0;
}

/* An incremental bundle applies only to a site at its base commit. */
static int check_site(struct importer *im, struct err *e)
{
    struct rq_res res;
    if (rq_exec(&im->db.rc, rq_cmd_site_get(&im->db.q, cfg_str(im->c, CFG_ID_TARGET)), &res, e) < 0)
        return -1;
    const char *at = res.status == RQ_VALUE ? rq_res_field(&res, "commit") : NULL;
    int ret = 0;
    if (im->b.base && (!at || strcmp(at, im->b.base) != 0) &&
        !(at && strcmp(at, im->b.commit) == 0))
        ret = err_set(e,
                      "the bundle applies on a target at official-images %.12s, and %s is "
                      "%s%.12s: import the bundles up to %.12s first",
                      im->b.base, cfg_str(im->c, CFG_ID_TARGET),
                      at ? "at " : "at none (no import recorded)", at ? at : "", im->b.base);
    rq_res_free(&res);
    return ret;
}

/* ---- what the site has (HEADs only) ----------------------------------------------------- */

static void on_head(struct reg_result *res, void *arg)
{
    struct icall *call = arg;
    struct importer *im = call->im;
    im->io.inflight--;
    if (res->cls == REG_OK)
        im->present[call->obj][call->k] = 1;
    else if (res->cls != REG_NOT_FOUND)
        coord_bundle_fail(&im->io, "%s", res->msg);
    free(call);
}

static void on_tag_head(struct reg_result *res, void *arg)
{
    struct icall *call = arg;
    struct importer *im = call->im;
    im->io.inflight--;
    if (res->cls == REG_OK && res->digest)
        snprintf(im->tag_at[call->ref], DIGEST_STR_SIZE, "%s", res->digest);
    else if (res->cls != REG_OK && res->cls != REG_NOT_FOUND)
        coord_bundle_fail(&im->io, "%s", res->msg);
    free(call);
}

static struct icall *icall_new(struct importer *im, size_t obj, size_t k)
{
    struct icall *call = xcalloc(1, sizeof(*call));
    call->im = im;
    call->obj = obj;
    call->k = k;
    call->fd = -1;
    im->io.inflight++;
    return call;
}

static void icall_free(struct icall *call)
{
    if (call->fd >= 0)
        close(call->fd);
    free(call->repo);
    free(call->body);
    free(call);
}

static void read_site(struct importer *im)
{
    int conc = (int)cfg_int(im->c, COORD_ID_CONCURRENCY);
    im->present = xcalloc(im->b.nobjects + 1, sizeof(*im->present));
    im->tag_at = xcalloc(im->nrefs + 1, sizeof(*im->tag_at));
    for (size_t i = 0; i < im->b.nobjects && !im->io.err[0]; i++) {
        const struct ocilayout_object *o = &im->b.objects[i];
        im->present[i] = xcalloc(o->nrepos, sizeof(int));
        for (size_t k = 0; k < o->nrepos && !im->io.err[0]; k++) {
            char *repo = target_repo(im, o->repos[k]);
            coord_bundle_wait(&im->io, conc);
            if (o->level == OCILAYOUT_BLOB)
                reg_head_blob(im->io.dst, repo, o->digest, on_head, icall_new(im, i, k));
            else
                reg_head_manifest(im->io.dst, repo, o->digest, on_head, icall_new(im, i, k));
            free(repo);
        }
    }
    for (size_t i = 0; i < im->nrefs && !im->io.err[0]; i++) {
        char *repo = target_repo(im, im->refs[i].repo);
        coord_bundle_wait(&im->io, conc);
        struct icall *call = icall_new(im, 0, 0);
        call->ref = i;
        reg_head_manifest(im->io.dst, repo, im->refs[i].tag, on_tag_head, call);
        free(repo);
    }
    coord_bundle_wait(&im->io, 1);
}

/* A repository of the site holding object i, or -1. */
static long home_of(const struct importer *im, size_t i)
{
    for (size_t k = 0; k < im->b.objects[i].nrepos; k++)
        if (im->present[i][k])
            return (long)k;
    return -1;
}

/* What an incremental bundle leaves out must be on the site already. */
static int check_left_out(const struct importer *im, struct err *e)
{
    for (size_t i = 0; i < im->b.nobjects; i++) {
        const struct ocilayout_object *o = &im->b.objects[i];
        if (!o->in_bundle && home_of(im, i) < 0)
            return err_set(e, "%s (of %s) is neither in the bundle nor on %s: import the bundle "
                           "of %.12s first", o->digest, o->repos[0], cfg_str(im->c, CFG_ID_TARGET),
                           im->b.base ? im->b.base : "");
    }
    return 0;
}

/* ---- writes ----------------------------------------------------------------------------- */

static void next_blob(struct icall *call);

static void on_blob(struct reg_result *res, void *arg)
{
    struct icall *call = arg;
    struct importer *im = call->im;
    if (res->cls != REG_OK) {
        coord_bundle_fail(&im->io, "%s", res->msg);
        im->io.inflight--;
        icall_free(call);
        return;
    }
    im->present[call->obj][call->k] = 1;
    if (res->mounted) {
        im->mounted++;
    } else {
        im->uploaded++;
        im->bytes += res->length;
    }
    call->k++;
    next_blob(call);
}

/* The blob's next repository lacking it: a mount from one that has it, else
 * an upload from the file (a mount that the registry refuses falls back to
 * the upload too). One blob's repositories one after the other, so the
 * first upload is the others' mount source. */
static void next_blob(struct icall *call)
{
    struct importer *im = call->im;
    const struct ocilayout_object *o = &im->b.objects[call->obj];
    while (call->k < o->nrepos && im->present[call->obj][call->k])
        call->k++;
    if (call->k == o->nrepos || im->io.err[0]) {
        im->io.inflight--;
        icall_free(call);
        return;
    }
    long home = home_of(im, call->obj);
    char *from = home >= 0 ? target_repo(im, o->repos[home]) : NULL;
    free(call->repo);
    call->repo = target_repo(im, o->repos[call->k]);
    if (o->in_bundle && call->fd < 0) {
        char *path = ocilayout_blob_path(im->dir, o->digest);
        call->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (call->fd < 0)
            coord_bundle_fail(&im->io, "%s: %s", path, strerror(errno));
        free(path);
    }
    if (o->in_bundle && call->fd >= 0)
        reg_upload_blob(im->io.dst, call->repo, o->digest, o->size, call->fd, from, on_blob,
                        call);
    else if (!o->in_bundle)
        reg_mount_blob(im->io.dst, call->repo, o->digest, from, on_blob, call);
    else
        next_blob(call); /* failed: ends the chain */
    free(from);
}

static void write_blobs(struct importer *im)
{
    int conc = (int)cfg_int(im->c, COORD_ID_CONCURRENCY);
    for (size_t i = 0; i < im->b.nobjects && !im->io.err[0]; i++) {
        if (im->b.objects[i].level != OCILAYOUT_BLOB)
            continue;
        coord_bundle_wait(&im->io, conc);
        next_blob(icall_new(im, i, 0));
    }
    coord_bundle_wait(&im->io, 1);
}

static void on_put(struct reg_result *res, void *arg)
{
    struct icall *call = arg;
    struct importer *im = call->im;
    im->io.inflight--;
    if (res->cls != REG_OK)
        coord_bundle_fail(&im->io, "%s", res->msg);
    else if (call->ref != (size_t)-1)
        im->tags++;
    else
        im->manifests++;
    icall_free(call);
}

static void put(struct icall *call)
{
    struct importer *im = call->im;
    const struct ocilayout_object *o = &im->b.objects[call->obj];
    const char *ref = call->ref != (size_t)-1 ? im->refs[call->ref].tag : o->digest;
    reg_put_manifest(im->io.dst, call->repo, ref, o->media_type, call->body, call->len, on_put,
                     call);
}

static void on_get(struct reg_result *res, void *arg)
{
    struct icall *call = arg;
    if (res->cls != REG_OK) {
        coord_bundle_fail(&call->im->io, "%s", res->msg);
        call->im->io.inflight--;
        icall_free(call);
        return;
    }
    call->body = reg_result_take_body(res, &call->len);
    put(call);
}

/* Write manifest obj into repo (under its digest, or as tag ref): its bytes
 * from the bundle, or from where the site has it. */
static void write_manifest(struct importer *im, size_t obj, const char *repo_name, size_t ref)
{
    const struct ocilayout_object *o = &im->b.objects[obj];
    struct err e;
    coord_bundle_wait(&im->io, (int)cfg_int(im->c, COORD_ID_CONCURRENCY));
    struct icall *call = icall_new(im, obj, 0);
    call->ref = ref;
    call->repo = target_repo(im, repo_name);
    if (o->in_bundle) {
        char *path = ocilayout_blob_path(im->dir, o->digest);
        int rc = ocilayout_read_file(path, REG_MANIFEST_MAX, &call->body, &call->len, &e);
        free(path);
        char got[DIGEST_STR_SIZE];
        if (rc == 0)
            digest_of(call->body, call->len, got);
        if (rc < 0 || strcmp(got, o->digest) != 0) {
            coord_bundle_fail(&im->io, "%s",
                              rc < 0 ? e.msg : "a manifest file changed since it was checked");
            im->io.inflight--;
            icall_free(call);
            return;
        }
        put(call);
        return;
    }
    char *from = target_repo(im, o->repos[home_of(im, obj)]);
    reg_get_manifest(im->io.dst, from, o->digest, on_get, call);
    free(from);
}

static void write_manifests(struct importer *im)
{
    for (int level = OCILAYOUT_IMAGE; level <= OCILAYOUT_INDEX && !im->io.err[0]; level++) {
        for (size_t i = 0; i < im->b.nobjects && !im->io.err[0]; i++) {
            const struct ocilayout_object *o = &im->b.objects[i];
            if (o->level != level)
                continue;
            for (size_t k = 0; k < o->nrepos && !im->io.err[0]; k++)
                if (!im->present[i][k])
                    write_manifest(im, i, o->repos[k], (size_t)-1);
                else
                    im->kept++;
        }
        /* Children are in before the indexes naming them. */
        coord_bundle_wait(&im->io, 1);
    }
}

static void write_tags(struct importer *im)
{
    for (size_t i = 0; i < im->nrefs && !im->io.err[0]; i++) {
        const struct ocilayout_ref *r = &im->refs[i];
        if (strcmp(im->tag_at[i], r->digest) == 0)
            continue;
        const struct ocilayout_object *o = ocilayout_bundle_find(&im->b, r->digest);
        /* Once in, the manifest is on the site in the tag's repository. */
        for (size_t k = 0; k < o->nrepos; k++)
            if (strcmp(o->repos[k], r->repo) == 0)
                im->present[o - im->b.objects][k] = 1;
        write_manifest(im, (size_t)(o - im->b.objects), r->repo, i);
    }
    coord_bundle_wait(&im->io, 1);
}

/* ---- the command ------------------------------------------------------------------------- */

static void report(const struct importer *im, double seconds)
{
    if (cfg_bool(im->c, COORD_ID_JSON)) {
        json_t *o = json_pack("{s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "dir",
                              im->dir, "commit", im->b.commit, "base",
                              im->b.base ? json_string(im->b.base) : json_null(), "tags_written",
                              (json_int_t)im->tags, "manifests_written",
                              (json_int_t)im->manifests, "blobs_uploaded",
                              (json_int_t)im->uploaded, "blobs_mounted", (json_int_t)im->mounted,
                              "bytes_uploaded", (json_int_t)im->bytes, "manifests_present",
                              (json_int_t)im->kept, "seconds", seconds);
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(o);
        return;
    }
    char hb[32];
    coord_human_bytes(im->bytes, hb, sizeof(hb));
    printf("imported %s into %s: now at official-images %.12s (%s%.12s)\n", im->dir,
           cfg_str(im->c, CFG_ID_TARGET), im->b.commit, im->b.base ? "from " : "full bundle",
           im->b.base ? im->b.base : "");
    printf("  tags      %lld written of %zu\n", im->tags, im->nrefs);
    printf("  manifests %lld written, %lld there already\n", im->manifests, im->kept);
    printf("  blobs     %lld uploaded (%s), %lld mounted\n", im->uploaded, hb, im->mounted);
    printf("  time      %.1f s\n", seconds);
}

static void importer_free(struct importer *im)
{
    coord_bundle_close(&im->io);
    coord_bundle_db_close(&im->db);
    for (size_t i = 0; im->present && i < im->b.nobjects; i++)
        free(im->present[i]);
    free(im->present);
    free(im->tag_at);
    ocilayout_refs_free(im->refs, im->nrefs);
    ocilayout_bundle_free(&im->b);
}

int coord_import_main(int argc, char **argv)
{
    struct cfg c;
    struct importer im;
    struct err e;
    struct rq_res res;
    int code;
    memset(&im, 0, sizeof(im));
    memset(&res, 0, sizeof(res));
    if (coord_parse_args_dir(&c, import_opts, NIMPORT_OPTS, argc, argv, import_usage, &code) < 0)
        return code;
    double t0 = coord_bundle_now();
    im.c = &c;
    im.dir = c.args[0];
    im.prefix = cfg_str(&c, COORD_ID_TARGET_PREFIX);
    code = COORD_EXIT_USAGE;
    if (cfg_setup_log(&c, "coordinator", &e) < 0)
        goto fail;
    if (!cfg_str(&c, CFG_ID_TARGET) || !job_url_valid(cfg_str(&c, CFG_ID_TARGET))) {
        err_set(&e, "--target must be an http(s)://host[:port] URL (required)");
        goto fail;
    }
    code = COORD_EXIT_PARTIAL;
    if (check_files(&im, &e) < 0 || check_objects(&im, &e) < 0) {
        err_prefix(&e, "bundle refused, nothing written");
        goto fail;
    }
    if (coord_bundle_db_open(&im.db, &c, &e) < 0 || check_site(&im, &e) < 0 ||
        coord_bundle_open(&im.io, cfg_str(&c, CFG_ID_TARGET), &e) < 0)
        goto fail;
    read_site(&im);
    if (!im.io.err[0] && check_left_out(&im, &e) < 0)
        goto fail;
    if (!im.io.err[0])
        write_blobs(&im);
    if (!im.io.err[0])
        write_manifests(&im);
    if (!im.io.err[0])
        write_tags(&im);
    if (im.io.err[0]) {
        err_set(&e, "%s", im.io.err);
        goto fail;
    }
    if (rq_exec(&im.db.rc,
                rq_cmd_site_record(&im.db.q, cfg_str(&c, CFG_ID_TARGET), im.b.commit,
                                   im.b.base ? im.b.base : ""),
                &res, &e) < 0)
        goto fail;
    report(&im, coord_bundle_now() - t0);
    code = COORD_EXIT_OK;
    goto out;
fail:
    coord_fail("import", e.msg);
out:
    rq_res_free(&res);
    importer_free(&im);
    cfg_free(&c);
    return code;
}
