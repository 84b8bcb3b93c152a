/* export: `hubsync-coordinator export DIR` writes what the target holds for a
 * selection, at the synced official-images commit, as a bundle (an OCI image
 * layout, see ocilayout.h) to carry into an air-gapped site.
 *
 * The catalog at the synced-commit marker gives the selected tags; each is
 * read from the target (manifests by tag, then their children by digest:
 * target GETs are no Docker Hub pulls) and walked down to its blobs. With a
 * base (--since, else the newest export recorded in Redis), the objects of
 * the state exported at the base are left out: an incremental bundle holds
 * only the new manifests and blobs, and an index.json of the full state.
 *
 * The files are written by ocifetch (every byte verified on the way, memory
 * constant whatever the blob size): by this process alone (the manifests as
 * they are walked, then the blobs), or with
 * --workers split into one job per tag group (the job keys sync uses) in the
 * bundle queue, for the bundle workers (hubsync-worker --bundle-dir) that
 * share DIR: the export is a run of that queue, its record counting the
 * jobs settled, and a worker killed mid-job leaves it to another after its
 * lease. Either way index.json and hubsync-bundle.json are written by this
 * process once every object is in place. A killed export is resumed by
 * running it again: files already written under their final name are hashed
 * again and kept, and hubsync-bundle.json, written last, marks a complete
 * bundle. The state exported is recorded in Redis (export:<commit>) for the
 * next incremental bundle. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "coord.h"
#include "log.h"
#include "manifest.h"
#include "ocifetch.h"
#include "ocilayout.h"
#include "reg.h"
#include "strv.h"
#include "xalloc.h"

#define EXPORT_REDIS_BATCH 1000
/* How often --workers looks at the export's record while its jobs run. */
#define EXPORT_POLL_MS 100
/* --workers: no job taken or settled this long: say so (no bundle worker?). */
#define EXPORT_QUIET_S 60

static const struct cfg_opt export_opts[] = {
    CFG_OPT_REDIS,
    CFG_OPT_REDIS_PREFIX,
    COORD_OPTS_CATALOG,
    CFG_OPT_TARGET,
    COORD_OPT_TARGET_PREFIX,
    COORD_OPTS_SELECTION,
    {COORD_ID_SINCE, "since", NULL, CFG_STR, NULL, 0, 0,
     "write only what is new since the export at this official-images commit (default: since "
     "the newest export recorded in Redis)",
     0},
    {COORD_ID_FULL, "full", NULL, CFG_BOOL, "false", 0, 0,
     "write every object, whatever was exported before", 0},
    {COORD_ID_WORKERS, "workers", "HUBSYNC_EXPORT_WORKERS", CFG_BOOL, "false", 0, 0,
     "leave the objects to bundle workers (hubsync-worker --bundle-dir DIR, sharing DIR): one "
     "job per tag group in the bundle queue; wait until every job is done (default: write "
     "them in this process)",
     0},
    {COORD_ID_WAIT_TIMEOUT, "wait-timeout", "HUBSYNC_EXPORT_WAIT_TIMEOUT", CFG_INT, "0", 0,
     604800,
     "with --workers: give up (exit 1, no index.json written) when no bundle worker has taken "
     "or settled a job for this many seconds (0: wait as long as it takes)",
     0},
    COORD_OPTS_BUNDLE,
};
#define NEXPORT_OPTS ((int)(sizeof(export_opts) / sizeof(export_opts[0])))

static const char export_usage[] =
    "export DIR --target URL [selection options] [--since COMMIT | --full] [--workers]\n"
    "\n"
    "Writes what the target holds for the selection, at the synced official-images commit\n"
    "(the synced-commit marker in Redis), into DIR as an OCI image layout that skopeo\n"
    "(oci:DIR:alpine:3.20), podman and regctl read, plus hubsync-bundle.json for import.\n"
    "Incremental unless --full: only the manifests and blobs that the state exported at the\n"
    "base commit (--since, else the newest export recorded in Redis) lacks; index.json always\n"
    "names every tag. DIR must not hold a complete bundle; an interrupted export into it is\n"
    "resumed. With --workers the bundle workers write the objects (one job per tag group;\n"
    "a worker killed mid-job leaves it to another) and this process waits for all of them\n"
    "before it writes index.json, enqueueing again jobs lost from Redis; it says on stderr\n"
    "when no bundle worker takes a job, and gives up after --wait-timeout. Exit 0, 1 when\n"
    "the bundle could not be written (nothing is marked complete), 2 on bad usage.";

struct xobj {
    char digest[DIGEST_STR_SIZE];
    long long size;
    char *media_type;
    int level;            /* enum ocilayout_level */
    int in_base;          /* in the state exported at the base: not in the bundle */
    int walked;           /* manifest: read and its children listed */
    int queued;           /* manifest: a GET by digest is planned or in flight */
    int given;            /* a job of --workers writes it */
    char *home;           /* target repository to read it from */
    struct strv repos; /* official-images repositories that reach it */
    size_t *children;
    size_t nchildren;
};

struct exporter {
    const struct cfg *c;
    struct coord_selection sel;
    struct coord_bundle_io io;
    struct coord_bundle_db db;
    const char *dir, *prefix;
    char commit[CATALOG_SHA_LEN + 1];
    char base[CATALOG_SHA_LEN + 1]; /* "" for a full bundle */
    struct xobj *objs;
    size_t nobjs, cap;
    json_t *by_digest; /* digest -> index in objs */
    struct ocilayout_ref *refs;
    size_t nrefs;
    size_t *wants; /* manifests to GET by digest, in order */
    size_t nwants, wants_cap;
    struct ocifetch_stats st; /* files written, kept from an interrupted export */
};

struct xcall {
    struct exporter *x;
    size_t i; /* ref (root GET) or object */
};

/* ---- the state: objects by digest ---------------------------------------------------------- */

static int in_base(struct exporter *x, const char *digest)
{
    struct rq_res res;
    struct err e;
    int in = 0;
    if (!x->base[0])
        return 0;
    if (rq_exec(&x->db.rc, rq_cmd_export_check(&x->db.q, x->base, &digest, 1), &res, &e) < 0)
        coord_bundle_fail(&x->io, "%s", e.msg);
    else
        in = res.nflags == 1 && res.flags[0];
    rq_res_free(&res);
    return in;
}

static size_t obj_get(struct exporter *x, const char *digest, long long size,
                      const char *media_type, int level, const char *home)
{
    json_t *have = json_object_get(x->by_digest, digest);
    if (have)
        return (size_t)json_integer_value(have);
    if (x->nobjs == x->cap) {
        x->cap = x->cap ? 2 * x->cap : 256;
        x->objs = xrealloc(x->objs, x->cap * sizeof(*x->objs));
    }
    struct xobj *o = &x->objs[x->nobjs];
    memset(o, 0, sizeof(*o));
    snprintf(o->digest, sizeof(o->digest), "%s", digest);
    o->size = size;
    o->media_type = media_type ? xstrdup(media_type) : NULL;
    o->level = level;
    o->home = xstrdup(home);
    o->in_base = in_base(x, digest);
    json_object_set_new(x->by_digest, digest, json_integer((json_int_t)x->nobjs));
    return x->nobjs++;
}

/* repo reaches object i, and so everything i references. */
static void obj_reach(struct exporter *x, size_t i, const char *repo)
{
    struct xobj *o = &x->objs[i];
    for (size_t k = 0; k < o->repos.n; k++)
        if (strcmp(o->repos.v[k], repo) == 0)
            return;
    strv_push(&o->repos, xstrdup(repo));
    for (size_t k = 0; k < o->nchildren; k++)
        obj_reach(x, o->children[k], repo);
}

static void want(struct exporter *x, size_t i)
{
    if (x->objs[i].queued || x->objs[i].walked)
        return;
    x->objs[i].queued = 1;
    if (x->nwants == x->wants_cap) {
        x->wants_cap = x->wants_cap ? 2 * x->wants_cap : 64;
        x->wants = xrealloc(x->wants, x->wants_cap * sizeof(*x->wants));
    }
    x->wants[x->nwants++] = i;
}

static int is_index_type(const char *mt)
{
    return mt && (strcmp(mt, REG_MT_OCI_INDEX) == 0 || strcmp(mt, REG_MT_DOCKER_LIST) == 0);
}

/* A manifest read from the target: record it and list what it references. */
static void walk(struct exporter *x, size_t i, const char *body, size_t len, const char *ctype)
{
    struct manifest m;
    struct err e;
    struct xobj *o = &x->objs[i];
    if (manifest_parse(&m, body, len, ctype, &e) < 0) {
        coord_bundle_fail(&x->io, "%s@%s on the target: %s", o->home, o->digest, e.msg);
        return;
    }
    free(o->media_type);
    o->media_type = xstrdup(m.media_type);
    o->level = m.is_index ? OCILAYOUT_INDEX : OCILAYOUT_IMAGE;
    o->walked = 1;
    if (!o->in_base && !cfg_bool(x->c, COORD_ID_WORKERS)) {
        /* Alone: written as read, rather than read again with the blobs. */
        if (ocifetch_put(x->dir, o->digest, o->size, body, len, &x->st, &e) < 0)
            coord_bundle_fail(&x->io, "%s", e.msg);
    }
    o->children = xcalloc(m.nitems + 1, sizeof(size_t));
    int sparse = x->sel.policy == JOB_POLICY_SPARSE;
    for (size_t k = 0; k < m.nitems; k++) {
        const struct manifest_desc *d = &m.items[k];
        if (d->foreign || (m.is_index && sparse &&
                           !manifest_child_wanted(&m, k, x->sel.platforms.v, x->sel.platforms.n)))
            continue; /* never on the target */
        int level = !m.is_index ? OCILAYOUT_BLOB
                    : is_index_type(d->media_type) ? OCILAYOUT_INDEX
                                                   : OCILAYOUT_IMAGE;
        /* obj_get may move objs: o is looked up again below. */
        size_t c = obj_get(x, d->digest, d->size, m.is_index ? d->media_type : NULL, level,
                           x->objs[i].home);
        o = &x->objs[i];
        o->children[o->nchildren++] = c;
        if (level != OCILAYOUT_BLOB)
            want(x, c);
    }
    for (size_t r = 0; r < o->repos.n; r++)
        for (size_t k = 0; k < o->nchildren; k++)
            obj_reach(x, o->children[k], o->repos.v[r]);
    manifest_free(&m);
}

/* ---- reading the target ------------------------------------------------------------------ */

static char *target_repo(const struct exporter *x, const char *name)
{
    return xasprintf("%s%s", x->prefix, name);
}

static void on_root(struct reg_result *res, void *arg)
{
    struct xcall *call = arg;
    struct exporter *x = call->x;
    struct ocilayout_ref *r = &x->refs[call->i];
    x->io.inflight--;
    if (res->cls != REG_OK) {
        coord_bundle_fail(&x->io, "%s:%s: %s", r->repo, r->tag, res->msg);
    } else {
        char *home = target_repo(x, r->repo);
        snprintf(r->digest, sizeof(r->digest), "%s", res->digest);
        r->size = (long long)res->body_len;
        size_t i = obj_get(x, res->digest, r->size, res->content_type,
                           is_index_type(res->content_type) ? OCILAYOUT_INDEX : OCILAYOUT_IMAGE,
                           home);
        if (!x->objs[i].walked)
            walk(x, i, res->body, res->body_len, res->content_type);
        r->media_type = xstrdup(x->objs[i].media_type ? x->objs[i].media_type : "");
        obj_reach(x, i, r->repo);
        free(home);
    }
    free(call);
}

static void on_child(struct reg_result *res, void *arg)
{
    struct xcall *call = arg;
    struct exporter *x = call->x;
    x->io.inflight--;
    if (res->cls != REG_OK)
        coord_bundle_fail(&x->io, "%s", res->msg);
    else
        walk(x, call->i, res->body, res->body_len, res->content_type);
    free(call);
}

static struct xcall *xcall_new(struct exporter *x, size_t i)
{
    struct xcall *call = xcalloc(1, sizeof(*call));
    call->x = x;
    call->i = i;
    x->io.inflight++;
    return call;
}

/* Every selected tag, then every manifest they reach. */
static void read_manifests(struct exporter *x, const struct coord_group *g, size_t ng)
{
    int conc = (int)cfg_int(x->c, COORD_ID_CONCURRENCY);
    for (size_t k = 0; k < ng; k++)
        x->nrefs += g[k].ntags;
    x->refs = xcalloc(x->nrefs + 1, sizeof(*x->refs));
    size_t n = 0;
    for (size_t k = 0; k < ng && !x->io.err[0]; k++) {
        char *repo = target_repo(x, g[k].repo->name);
        for (size_t t = 0; t < g[k].ntags && !x->io.err[0]; t++, n++) {
            x->refs[n].repo = xstrdup(g[k].repo->name);
            x->refs[n].tag = xstrdup(g[k].tags[t]);
            coord_bundle_wait(&x->io, conc);
            reg_get_manifest(x->io.dst, repo, g[k].tags[t], on_root, xcall_new(x, n));
        }
        free(repo);
    }
    size_t next = 0;
    while (!x->io.err[0] && (next < x->nwants || x->io.inflight > 0)) {
        if (next < x->nwants && x->io.inflight < conc) {
            size_t i = x->wants[next++];
            reg_get_manifest(x->io.dst, x->objs[i].home, x->objs[i].digest, on_child,
                             xcall_new(x, i));
        } else {
            coord_bundle_wait(&x->io, x->io.inflight);
        }
    }
    coord_bundle_wait(&x->io, 1);
}

/* ---- writing the objects ---------------------------------------------------------------- */

static void item_of(const struct xobj *o, struct ocifetch_item *it)
{
    it->repo = o->home; /* borrowed: ocifetch copies */
    snprintf(it->digest, sizeof(it->digest), "%s", o->digest);
    it->size = o->size;
    it->manifest = o->level != OCILAYOUT_BLOB;
}

static void fetched(const struct ocifetch_stats *st, const char *error, void *arg)
{
    struct exporter *x = arg;
    x->io.inflight--;
    x->st.written += st->written;
    x->st.reused += st->reused;
    x->st.bytes += st->bytes;
    if (error)
        coord_bundle_fail(&x->io, "%s", error);
}

/* The blobs of the bundle, by this process (walk wrote the manifests). */
static void write_blobs(struct exporter *x)
{
    struct ocifetch_item *items = xcalloc(x->nobjs + 1, sizeof(*items));
    size_t n = 0;
    for (size_t i = 0; i < x->nobjs; i++)
        if (!x->objs[i].in_base && x->objs[i].level == OCILAYOUT_BLOB)
            item_of(&x->objs[i], &items[n++]);
    x->io.inflight++;
    ocifetch_start(x->io.loop, x->io.dst, x->dir, items, n,
                   (int)cfg_int(x->c, COORD_ID_CONCURRENCY), fetched, x);
    coord_bundle_wait(&x->io, 1);
    free(items);
}

/* A job's objects: those of the bundle that object i reaches and no earlier
 * job has, appended by job_collect. */
struct job_items {
    struct ocifetch_item *v;
    size_t n, cap;
};

static void job_collect(struct exporter *x, size_t i, struct job_items *j)
{
    struct xobj *o = &x->objs[i];
    if (o->given)
        return;
    o->given = 1;
    if (!o->in_base) {
        if (j->n == j->cap) {
            j->cap = j->cap ? 2 * j->cap : 16;
            j->v = xrealloc(j->v, j->cap * sizeof(*j->v));
        }
        item_of(o, &j->v[j->n++]);
    }
    for (size_t k = 0; k < o->nchildren; k++)
        job_collect(x, o->children[k], j);
}

/* The export's id in the bundle queue: the commit and Redis's time. */
static int export_id(struct exporter *x, struct coord_bundle_db *bq, char *id, size_t n,
                     struct err *e)
{
    struct rq_res res;
    int ret = rq_exec(&bq->rc, rq_cmd_time(), &res, e);
    if (ret == 0)
        snprintf(id, n, "%.12s-%lld", x->commit, res.n);
    rq_res_free(&res);
    return ret;
}

/* One job per tag group (its tags are refs [first, first + ntags)), holding
 * the objects of the bundle its tags reach first. -1 when one cannot be
 * enqueued. */
static int enqueue_jobs(struct exporter *x, struct coord_bundle_db *bq, const char *id,
                        const struct coord_group *g, size_t ng, json_t *planned, struct err *e)
{
    size_t first = 0;
    for (size_t k = 0; k < ng; first += g[k].ntags, k++) {
        struct job_items j = {NULL, 0, 0};
        for (size_t r = first; r < first + g[k].ntags; r++) {
            json_t *i = json_object_get(x->by_digest, x->refs[r].digest);
            if (i)
                job_collect(x, (size_t)json_integer_value(i), &j);
        }
        if (j.n == 0)
            continue; /* all of it in the base, or in an earlier group's job */
        char *json = ocifetch_job_encode(id, j.v, j.n);
        free(j.v);
        json_object_set_new(planned, g[k].key, json_string(json));
        struct rq_res res;
        int rc = rq_exec(&bq->rc, rq_cmd_run_enqueue(&bq->q, id, g[k].key, json), &res, e);
        rq_res_free(&res);
        free(json);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* What enqueues the export's jobs lost from Redis again. */
struct requeue {
    struct coord_bundle_db *bq;
    const char *id;
    json_t *planned; /* key -> the job's JSON, of every job enqueued */
};

static struct rq_cmd *requeue_cmd(void *arg, const char *key)
{
    const struct requeue *r = arg;
    const char *json = json_string_value(json_object_get(r->planned, key));
    return json ? rq_cmd_run_enqueue(&r->bq->q, r->id, key, json) : NULL;
}

/* The export's jobs once they have all settled: RQ_VALUE record, or -1 (Redis;
 * a lost job not enqueued by this export; none taken or settled for
 * --wait-timeout). Lost jobs are enqueued again from planned (key -> JSON)
 * and the bundle queue kept tidy, as sync does on its queue. */
static int wait_jobs(const struct exporter *x, struct coord_bundle_db *bq, const char *id,
                     json_t *planned, struct rq_res *rec, struct err *e)
{
    long long timeout = cfg_int(x->c, COORD_ID_WAIT_TIMEOUT), seen = -1, held_seen = -1;
    time_t now = time(NULL), last_change = now, last_quiet = now, last_chores = 0;
    struct requeue rq = {bq, id, planned};
    struct coord_run_check chk;
    coord_run_check_init(&chk, now);
    for (;;) {
        if (rq_exec(&bq->rc, rq_cmd_run_get(&bq->q, id), rec, e) < 0)
            return -1;
        long long total = rq_res_field_int(rec, "jobs_total", 0);
        long long settled = rq_res_field_int(rec, "jobs_done", 0) +
                            rq_res_field_int(rec, "jobs_failed", 0) +
                            rq_res_field_int(rec, "jobs_dead", 0);
        if (settled >= total)
            return 0;
        rq_res_free(rec);
        now = time(NULL);
        if (settled != seen) {
            log_info("export %s: %lld of %lld jobs settled", id, settled, total);
            seen = settled;
            last_change = now;
        }
        /* The rest once a second: a job taken (the queue's held count moves),
         * lost jobs, housekeeping, how long nothing moved. */
        if (now != last_chores) {
            struct rq_res held;
            last_chores = now;
            int rc = rq_exec(&bq->rc, rq_cmd_queue_held(&bq->q), &held, e);
            if (rc == 0 && held.n != held_seen) {
                held_seen = held.n;
                last_change = now;
            }
            rq_res_free(&held);
            if (rc < 0 || coord_run_check_tick(&chk, &bq->rc, &bq->q, "export", id, requeue_cmd,
                                               &rq, now, e) < 0)
                return -1;
            long long quiet = (long long)(now - last_change);
            if (timeout > 0 && quiet >= timeout)
                return err_set(e, "no bundle worker has taken or settled a job for %llds "
                                  "(--wait-timeout); "
                                  "start hubsync-worker --bundle-dir %s (same --redis, --target) "
                                  "and export again",
                               quiet, x->dir);
            if (quiet >= EXPORT_QUIET_S && now - last_quiet >= EXPORT_QUIET_S) {
                last_quiet = now;
                log_warn("export %s: no bundle worker has taken or settled a job for %llds; "
                         "start hubsync-worker --bundle-dir %s (same --redis, --target); "
                         "hubsync-coordinator status shows the workers",
                         id, quiet, x->dir);
            }
        }
        usleep(EXPORT_POLL_MS * 1000);
    }
}

/* Every object in place: each job said it wrote or found it right; a
 * file's size says it was not lost since. */
static int check_objects(const struct exporter *x, struct err *e)
{
    for (size_t i = 0; i < x->nobjs; i++) {
        const struct xobj *o = &x->objs[i];
        struct stat st;
        if (o->in_base)
            continue;
        char *path = ocilayout_blob_path(x->dir, o->digest);
        int ok = stat(path, &st) == 0 && (long long)st.st_size == o->size;
        if (!ok)
            err_set(e, "%s: %s after every job was done", path,
                    access(path, F_OK) == 0 ? "of the wrong size" : "missing");
        free(path);
        if (!ok)
            return -1;
    }
    return 0;
}

/* --workers: the objects written by the bundle workers, one job per tag
 * group; this process only waits for them. */
static int queue_objects(struct exporter *x, const struct coord_group *g, size_t ng,
                         struct err *e)
{
    struct coord_bundle_db bq;
    struct rq_res res, rec;
    struct err finish_e;
    char id[CATALOG_SHA_LEN + 32];
    json_t *planned = json_object();
    long long njobs = 0;
    int ret = -1;
    memset(&res, 0, sizeof(res));
    memset(&rec, 0, sizeof(rec));
    if (coord_bundle_queue_open(&bq, x->c, e) < 0 || export_id(x, &bq, id, sizeof(id), e) < 0 ||
        rq_exec(&bq.rc, rq_cmd_run_create(&bq.q, id, x->commit, RQ_EXPORTS_KEEP), &res, e) < 0)
        goto out;
    rq_res_free(&res);
    if (enqueue_jobs(x, &bq, id, g, ng, planned, e) < 0 ||
        rq_exec(&bq.rc, rq_cmd_run_note(&bq.q, id, "enqueued", "1"), &res, e) < 0)
        goto finish;
    njobs = (long long)json_object_size(planned);
    log_info("export %s: %lld jobs queued for the bundle workers", id, njobs);
    if (wait_jobs(x, &bq, id, planned, &rec, e) < 0)
        goto finish;
    x->st.written = rq_res_field_int(&rec, "files_written", 0);
    x->st.reused = rq_res_field_int(&rec, "files_reused", 0);
    x->st.bytes = rq_res_field_int(&rec, "bytes_written", 0);
    long long failed = rq_res_field_int(&rec, "jobs_failed", 0) +
                       rq_res_field_int(&rec, "jobs_dead", 0);
    if (failed > 0)
        err_set(e, "%lld of %lld export jobs failed (their reasons: XREVRANGE %s + -)", failed,
                njobs, bq.q.keys.jobs_dead);
    else
        ret = check_objects(x, e);
finish:
    /* The record says how it ended (and the export in progress is no more:
     * workers settle its jobs left in the queue without a write); a failure
     * to note it leaves the export's own outcome (and message) as it is. */
    rq_res_free(&res);
    if (rq_exec(&bq.rc, rq_cmd_run_finish(&bq.q, id, ret == 0 ? "done" : "failed", 0), &res,
                ret == 0 ? e : &finish_e) < 0)
        ret = -1;
out:
    rq_res_free(&res);
    rq_res_free(&rec);
    json_decref(planned);
    coord_bundle_db_close(&bq);
    return ret;
}

/* ---- the bundle's files ------------------------------------------------------------------ */

static int in_bundle(const struct exporter *x, const char *digest)
{
    json_t *i = json_object_get(x->by_digest, digest);
    return i && !x->objs[json_integer_value(i)].in_base;
}

/* Files of blobs/sha256 that are not the bundle's: leftovers of an
 * interrupted export (temporary files, objects of another selection). */
static int drop_strays(const struct exporter *x, struct err *e)
{
    char *sha = xasprintf("%s/blobs/sha256", x->dir);
    DIR *d = opendir(sha);
    int ret = 0;
    if (!d) {
        ret = err_set(e, "%s: %s", sha, strerror(errno));
        goto out;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char *digest = xasprintf("sha256:%s", de->d_name);
        if (!in_bundle(x, digest)) {
            char *path = xasprintf("%s/%s", sha, de->d_name);
            if (unlink(path) != 0)
                ret = err_set(e, "%s: %s", path, strerror(errno));
            free(path);
        }
        free(digest);
    }
    closedir(d);
out:
    free(sha);
    return ret;
}

/* The objects in push order: blobs, image manifests, indexes. */
static void bundle_objects(const struct exporter *x, struct ocilayout_bundle *b)
{
    b->objects = xcalloc(x->nobjs + 1, sizeof(*b->objects));
    for (int level = OCILAYOUT_BLOB; level <= OCILAYOUT_INDEX; level++) {
        for (size_t i = 0; i < x->nobjs; i++) {
            const struct xobj *o = &x->objs[i];
            if (o->level != level)
                continue;
            struct ocilayout_object *bo = &b->objects[b->nobjects++];
            snprintf(bo->digest, sizeof(bo->digest), "%s", o->digest);
            bo->size = o->size;
            bo->media_type = o->media_type; /* borrowed: b's objects are not freed */
            bo->level = level;
            bo->in_bundle = !o->in_base;
            bo->repos = o->repos.v;
            bo->nrepos = o->repos.n;
        }
    }
}

static int write_bundle(struct exporter *x, struct err *e)
{
    int ret = -1;
    size_t ilen, blen;
    char *marker = xasprintf("%s/oci-layout", x->dir), *index = xasprintf("%s/index.json", x->dir);
    char *bpath = xasprintf("%s/%s", x->dir, OCILAYOUT_BUNDLE_FILE);
    char *ibody = ocilayout_index_dump(x->refs, x->nrefs, x->commit, x->base[0] ? x->base : NULL,
                                       &ilen);
    char *bbody = NULL;
    struct ocilayout_bundle b;
    memset(&b, 0, sizeof(b));
    b.commit = x->commit;
    b.base = x->base[0] ? x->base : NULL;
    digest_of(ibody, ilen, b.index_digest);
    b.index_size = (long long)ilen;
    bundle_objects(x, &b);
    bbody = ocilayout_bundle_dump(&b, &blen);
    if (drop_strays(x, e) < 0 ||
        ocilayout_write_file(marker, ocilayout_marker, strlen(ocilayout_marker), e) < 0 ||
        ocilayout_write_file(index, ibody, ilen, e) < 0 ||
        ocilayout_write_file(bpath, bbody, blen, e) < 0)
        goto out;
    ret = 0;
out:
    free(b.objects);
    free(marker);
    free(index);
    free(bpath);
    free(ibody);
    free(bbody);
    return ret;
}

/* The state exported at the commit, for the next incremental bundle. */
static int record(struct exporter *x, struct err *e)
{
    const char **batch = xcalloc(EXPORT_REDIS_BATCH, sizeof(char *));
    struct rq_res res;
    int ret = 0;
    for (size_t i = 0; i < x->nobjs && ret == 0; i += EXPORT_REDIS_BATCH) {
        size_t n = 0;
        for (size_t k = i; k < x->nobjs && n < EXPORT_REDIS_BATCH; k++)
            batch[n++] = x->objs[k].digest;
        ret = rq_exec(&x->db.rc, rq_cmd_export_add(&x->db.q, x->commit, i == 0, batch, n), &res,
                      e);
        rq_res_free(&res);
    }
    free(batch);
    if (ret == 0) {
        ret = rq_exec(&x->db.rc, rq_cmd_export_record(&x->db.q, x->commit), &res, e);
        rq_res_free(&res);
    }
    return ret;
}

/* ---- the command ------------------------------------------------------------------------- */

/* The synced commit, no run in progress, and the base. */
static int resolve_commits(struct exporter *x, struct catalog *cat, struct err *e)
{
    struct rq_res res;
    int ret = -1;
    if (rq_exec(&x->db.rc, rq_cmd_run_current(&x->db.q), &res, e) < 0)
        goto out;
    if (res.status == RQ_VALUE) {
        err_set(e, "run %s is in progress: export once it has finished (the target holds a mix "
                "of two commits meanwhile)", res.str);
        goto out;
    }
    rq_res_free(&res);
    if (rq_exec(&x->db.rc, rq_cmd_synced_commit(&x->db.q), &res, e) < 0)
        goto out;
    if (res.status != RQ_VALUE) {
        err_set(e, "nothing is synced yet (no synced-commit in Redis): run a sync first");
        goto out;
    }
    snprintf(x->commit, sizeof(x->commit), "%s", res.str);
    rq_res_free(&res);
    const char *since = cfg_str(x->c, COORD_ID_SINCE);
    if (cfg_bool(x->c, COORD_ID_FULL)) {
        ret = 0;
    } else if (since) {
        if (catalog_resolve(cat, since, x->base, e) < 0 ||
            rq_exec(&x->db.rc, rq_cmd_export_known(&x->db.q, x->base), &res, e) < 0)
            goto out;
        if (res.status != RQ_VALUE) {
            err_set(e, "--since: no export at %.12s is recorded in Redis (the newest %d are "
                    "kept): use --full", x->base, RQ_EXPORTS_KEEP);
            goto out;
        }
        ret = 0;
    } else {
        if (rq_exec(&x->db.rc, rq_cmd_export_last(&x->db.q), &res, e) < 0)
            goto out;
        if (res.status == RQ_VALUE)
            snprintf(x->base, sizeof(x->base), "%s", res.str);
        ret = 0;
    }
out:
    rq_res_free(&res);
    return ret;
}

static void report(const struct exporter *x, double seconds)
{
    long long manifests = 0, blobs = 0, bytes = 0;
    for (size_t i = 0; i < x->nobjs; i++) {
        if (x->objs[i].in_base)
            continue;
        if (x->objs[i].level == OCILAYOUT_BLOB)
            blobs++;
        else
            manifests++;
        bytes += x->objs[i].size;
    }
    if (cfg_bool(x->c, COORD_ID_JSON)) {
        json_t *o = json_pack("{s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
                              "dir", x->dir, "commit", x->commit, "base",
                              x->base[0] ? json_string(x->base) : json_null(), "tags",
                              (json_int_t)x->nrefs, "objects", (json_int_t)x->nobjs,
                              "manifests", (json_int_t)manifests, "blobs", (json_int_t)blobs,
                              "bytes", (json_int_t)bytes, "files_written",
                              (json_int_t)x->st.written, "files_reused",
                              (json_int_t)x->st.reused, "bytes_written",
                              (json_int_t)x->st.bytes, "seconds", seconds);
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(o);
        return;
    }
    char hb[32];
    coord_human_bytes(bytes, hb, sizeof(hb));
    printf("bundle %s: commit %.12s, %s%.12s\n", x->dir, x->commit,
           x->base[0] ? "incremental since " : "full", x->base);
    printf("  tags      %zu\n", x->nrefs);
    printf("  objects   %zu in the state, %lld in the bundle (%lld manifests, %lld blobs, %s)\n",
           x->nobjs, manifests + blobs, manifests, blobs, hb);
    printf("  files     %lld written, %lld kept from an interrupted export\n", x->st.written,
           x->st.reused);
    printf("  time      %.1f s\n", seconds);
}

static void exporter_free(struct exporter *x)
{
    coord_bundle_close(&x->io);
    coord_bundle_db_close(&x->db);
    coord_selection_free(&x->sel);
    for (size_t i = 0; i < x->nobjs; i++) {
        free(x->objs[i].media_type);
        free(x->objs[i].home);
        free(x->objs[i].children);
        strv_free(&x->objs[i].repos);
    }
    free(x->objs);
    free(x->wants);
    ocilayout_refs_free(x->refs, x->nrefs);
    json_decref(x->by_digest);
}

int coord_export_main(int argc, char **argv)
{
    struct cfg c;
    struct exporter x;
    struct err e;
    struct catalog *cat = NULL;
    struct coord_view v;
    struct coord_group *groups = NULL;
    size_t ngroups = 0;
    int code;
    memset(&x, 0, sizeof(x));
    memset(&v, 0, sizeof(v));
    if (coord_parse_args_dir(&c, export_opts, NEXPORT_OPTS, argc, argv, export_usage, &code) < 0)
        return code;
    double t0 = coord_bundle_now();
    x.c = &c;
    x.dir = c.args[0];
    x.prefix = cfg_str(&c, COORD_ID_TARGET_PREFIX);
    x.by_digest = json_object();
    code = COORD_EXIT_USAGE;
    char *done = xasprintf("%s/%s", x.dir, OCILAYOUT_BUNDLE_FILE);
    if (cfg_setup_log(&c, "coordinator", &e) < 0 || coord_selection_init(&x.sel, &c, &e) < 0)
        goto fail;
    if (!cfg_str(&c, CFG_ID_TARGET) || !job_url_valid(cfg_str(&c, CFG_ID_TARGET))) {
        err_set(&e, "--target must be an http(s)://host[:port] URL (required)");
        goto fail;
    }
    if (cfg_str(&c, COORD_ID_SINCE) && cfg_bool(&c, COORD_ID_FULL)) {
        err_set(&e, "--since and --full exclude each other");
        goto fail;
    }
    if (access(done, F_OK) == 0) {
        err_set(&e, "%s holds a complete bundle already: export into a new directory", x.dir);
        goto fail;
    }
    code = COORD_EXIT_PARTIAL;
    if (coord_bundle_db_open(&x.db, &c, &e) < 0 ||
        coord_catalog_open(&cat, &c, NULL, NULL, &e) < 0 ||
        resolve_commits(&x, cat, &e) < 0 ||
        coord_repos_check(cat, x.commit, &x.sel.repos, &x.sel.exclude, &e) < 0 ||
        coord_view_read(cat, &x.sel, x.commit, NULL, &v, &e) < 0 ||
        ocilayout_mkdirs(x.dir, &e) < 0 ||
        coord_bundle_open(&x.io, cfg_str(&c, CFG_ID_TARGET), &e) < 0)
        goto fail;
    coord_groups_list(&x.sel, &v, &groups, &ngroups);
    read_manifests(&x, groups, ngroups);
    if (!x.io.err[0] && !cfg_bool(&c, COORD_ID_WORKERS))
        write_blobs(&x);
    if (x.io.err[0]) {
        err_set(&e, "%s", x.io.err);
        goto fail;
    }
    if (cfg_bool(&c, COORD_ID_WORKERS) && queue_objects(&x, groups, ngroups, &e) < 0)
        goto fail;
    if (write_bundle(&x, &e) < 0 || record(&x, &e) < 0)
        goto fail;
    report(&x, coord_bundle_now() - t0);
    code = COORD_EXIT_OK;
    goto out;
fail:
    coord_fail("export", e.msg);
out:
    free(done);
    coord_groups_free(groups, ngroups);
    coord_view_free(&v);
    catalog_close(cat);
    exporter_free(&x);
    cfg_free(&c);
    return code;
}
