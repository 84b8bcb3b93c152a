/* Unit tests for worker/engine: its names and what a registry's answer means for a job, and
 * engine_start driven on a real libev loop against an in-memory registry (engine_reg_ops)
 * and an in-memory fleet (engine_ops): the fewest-GETs algorithm, the order of the target's
 * writes, and what a failure, a spent budget, a stale present set or a lost lease leave. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <ev.h>

#include "digest.h"
#include "engine.h"
#include "log.h"
#include "manifest.h"
#include "ref.h"
#include "reg_blob.h"
#include "xalloc.h"

static void test_engine__status_names(void **state)
{
    (void)state;
    assert_string_equal(engine_status_name(ENGINE_DONE), "done");
    assert_string_equal(engine_status_name(ENGINE_RETRY), "retry");
    assert_string_equal(engine_status_name(ENGINE_DEFERRED), "deferred");
    assert_string_equal(engine_status_name(ENGINE_THROTTLED), "throttled");
    assert_string_equal(engine_status_name(ENGINE_FAILED), "failed");
    assert_string_equal(engine_status_name(ENGINE_CANCELLED), "cancelled");
    assert_string_equal(engine_status_name(ENGINE_UNAVAILABLE), "unavailable");
    assert_string_equal(engine_status_name((enum engine_status)99), "?");
}

static void test_engine__counters_by_name(void **state)
{
    (void)state;
    struct engine_counters c = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    for (int i = 0; i < ENGINE_NCOUNTERS; i++)
        assert_int_equal(engine_counter_get(&c, i), i + 1);
    assert_string_equal(engine_counter_names[0], "tags_total");
    assert_string_equal(engine_counter_names[4], "upstream_manifest_gets");
    assert_string_equal(engine_counter_names[ENGINE_NCOUNTERS - 1], "blobs_skipped");
    assert_int_equal(engine_counter_get(&c, ENGINE_NCOUNTERS), 0);
}

/* An outage waits, a fault of the job counts, a budget event pauses. */
static void test_engine__status_of_registry_answers(void **state)
{
    (void)state;
    static const struct {
        enum reg_class cls;
        long retry_after;
        enum engine_status want;
        long wait_ms;
    } cases[] = {
        {REG_OK, -1, ENGINE_DONE, 0},
        {REG_NETWORK, -1, ENGINE_UNAVAILABLE, 0},
        {REG_SERVER, -1, ENGINE_UNAVAILABLE, 0},
        {REG_TLS, -1, ENGINE_FAILED, 0},
        {REG_DIGEST_MISMATCH, -1, ENGINE_RETRY, 0},
        {REG_NOT_FOUND, -1, ENGINE_FAILED, 0},
        {REG_UNAUTHORIZED, -1, ENGINE_FAILED, 0},
        {REG_DENIED, -1, ENGINE_FAILED, 0},
        {REG_PROTOCOL, -1, ENGINE_FAILED, 0},
        {REG_TOO_LARGE, -1, ENGINE_FAILED, 0},
        {REG_INVALID, -1, ENGINE_FAILED, 0},
        {REG_RATE_LIMITED, 7, ENGINE_THROTTLED, 7000},
        {REG_RATE_LIMITED, -1, ENGINE_DEFERRED, 300000},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct reg_result res = {.cls = cases[i].cls, .retry_after = cases[i].retry_after};
        long wait_ms = -1;
        assert_int_equal(engine_status_of(&res, &wait_ms), cases[i].want);
        assert_int_equal(wait_ms, cases[i].wait_ms);
    }
}

/* ---- an in-memory registry pair and fleet -------------------------------------------- */

#define UP_URL "http://up.test"
#define DST_URL "http://dst.test"
#define REPO "library/busybox"
#define FK_MAX 64
#define FK_LOG 512

/* Something in a repository: a manifest by tag or digest (ref), or a blob (ref = digest). */
struct fk_ref {
    char repo[32];
    char ref[REF_TAG_MAX + 1]; /* a tag or a digest */
    char digest[DIGEST_STR_SIZE];
};

struct fk_refs {
    struct fk_ref v[FK_MAX];
    size_t n;
};

/* A manifest's bytes, by digest. */
struct fk_body {
    char digest[DIGEST_STR_SIZE];
    char type[64];
    char *body;
    size_t len;
};

struct fk_bodies {
    struct fk_body v[FK_MAX];
    size_t n;
};

enum fk_op { FK_HEAD_UP, FK_GET_UP, FK_PUT, FK_COPY, FK_REFERRERS };

/* Requests that fail: op on ref (a tag or digest) answers cls. */
struct fk_fault {
    enum fk_op op;
    char ref[DIGEST_STR_SIZE];
    enum reg_class cls;
};

/* A callback owed to the engine, run later from the loop, in the order owed. */
enum fk_kind { FK_REG, FK_FLAG, FK_BUDGET, FK_HOME, FK_READY, FK_BYTES };
struct fk_call {
    struct fk_call *next;
    enum fk_kind kind;
    void *arg;
    reg_done_fn done;
    struct reg_result res; /* FK_REG; FK_BYTES: body, body_len */
    char digest[DIGEST_STR_SIZE];
    char type[64];
    int upstream_get;
    engine_flag_fn flag;
    engine_budget_fn budget;
    engine_home_fn home;
    engine_ready_fn ready;
    engine_bytes_fn bytes;
    int yes;
    char repo[32]; /* FK_HOME: "" for none */
    char next_page[192]; /* FK_REG of a referrers page: the next one's URL */
};

struct fk {
    struct ev_loop *loop;
    ev_idle idle;
    struct fk_call *head, *tail;
    struct reg_client *client;
    struct engine *en;
    /* the registries */
    struct fk_bodies bodies; /* every manifest either registry has */
    struct fk_refs up_tags;  /* upstream tags (of REPO) */
    struct fk_refs dst;      /* the target's manifests, by tag and by digest */
    struct fk_refs blobs;    /* the target's blobs */
    struct fk_refs up_referrers; /* upstream referrers: ref = the referrer, digest = its subject */
    int no_referrers_api;    /* the upstream answers 404 to the referrers API */
    size_t referrers_page;   /* referrers per page of the API; 0: all on one */
    int find_referrers;      /* the jobs fk_run_job starts ask for referrers */
    struct fk_fault faults[4];
    size_t nfaults;
    int refused;             /* manifest PUTs refused for a missing reference */
    int tag_first;           /* tags PUT before their manifest was PUT by digest */
    int unkept;              /* upstream GETs whose bytes were not kept when answered */
    /* the fleet */
    int grants;              /* budget grants left; -1: unlimited */
    int deny_untold;         /* a denial says not how long (wait 0): a 429 at the probe HEAD */
    int granted, settled;
    int held;                /* still_held's answer */
    struct fk_refs present;
    struct fk_refs homes;    /* repo has blob digest */
    struct fk_refs locks;    /* ref = digest */
    struct fk_bodies kept;
    /* another worker (an assistant) holds the copy lock of `assisted` for this many more
     * lock attempts, then lets go, having copied it if assist_ok */
    char assisted[DIGEST_STR_SIZE];
    int assist_polls;
    int assist_ok;
    int present_at_done;     /* assistant's done: children listed present then */
    /* what the engine did, in order */
    char log[FK_LOG][160];
    size_t nlog;
    int finished;
    struct engine_outcome out;
};

/* The world the registry functions (which take no context, as reg.h's) answer from. */
static struct fk *fk_now;

static void fk_log(struct fk *fk, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fk_log(struct fk *fk, const char *fmt, ...)
{
    assert_true(fk->nlog < FK_LOG);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fk->log[fk->nlog++], sizeof(fk->log[0]), fmt, ap);
    va_end(ap);
}

/* Position of the first log line equal to line, -1 if none. */
static int fk_pos(const struct fk *fk, const char *line)
{
    for (size_t i = 0; i < fk->nlog; i++)
        if (strcmp(fk->log[i], line) == 0)
            return (int)i;
    return -1;
}

static int fk_count(const struct fk *fk, const char *prefix)
{
    int n = 0;
    for (size_t i = 0; i < fk->nlog; i++)
        n += strncmp(fk->log[i], prefix, strlen(prefix)) == 0;
    return n;
}

static int fk_count_of(const struct fk *fk, const char *what, const char *digest)
{
    char line[160];
    snprintf(line, sizeof(line), "%s %s", what, digest);
    return fk_count(fk, line);
}

static int fk_is_tag_put(const char *line)
{
    return strncmp(line, "PUT ", 4) == 0 && !strstr(line, " sha256:");
}

static int fk_tag_puts(const struct fk *fk)
{
    int n = 0;
    for (size_t i = 0; i < fk->nlog; i++)
        n += fk_is_tag_put(fk->log[i]);
    return n;
}

/* 1 if no manifest PUT by digest comes after a tag PUT. */
static int fk_tags_last(const struct fk *fk)
{
    int tag_seen = 0;
    for (size_t i = 0; i < fk->nlog; i++) {
        if (fk_is_tag_put(fk->log[i]))
            tag_seen = 1;
        else if (tag_seen && strncmp(fk->log[i], "PUT ", 4) == 0)
            return 0;
    }
    return 1;
}

static struct fk_ref *fk_find(struct fk_refs *rs, const char *repo, const char *ref)
{
    for (size_t i = 0; i < rs->n; i++)
        if ((!repo || strcmp(rs->v[i].repo, repo) == 0) && strcmp(rs->v[i].ref, ref) == 0)
            return &rs->v[i];
    return NULL;
}

/* repo:ref names digest (replacing what it named). */
static void fk_set(struct fk_refs *rs, const char *repo, const char *ref, const char *digest)
{
    struct fk_ref *r = fk_find(rs, repo, ref);
    if (!r) {
        assert_true(rs->n < FK_MAX);
        r = &rs->v[rs->n++];
    }
    snprintf(r->repo, sizeof(r->repo), "%s", repo);
    snprintf(r->ref, sizeof(r->ref), "%s", ref);
    snprintf(r->digest, sizeof(r->digest), "%s", digest);
}

static void fk_unset(struct fk_refs *rs, const char *repo, const char *ref)
{
    struct fk_ref *r = fk_find(rs, repo, ref);
    if (r)
        *r = rs->v[--rs->n];
}

static struct fk_body *fk_body(struct fk_bodies *bs, const char *digest)
{
    for (size_t i = 0; i < bs->n; i++)
        if (strcmp(bs->v[i].digest, digest) == 0)
            return &bs->v[i];
    return NULL;
}

static void fk_body_set(struct fk_bodies *bs, const char *digest, const char *type,
                        const char *body, size_t len)
{
    struct fk_body *b = fk_body(bs, digest);
    if (!b) {
        assert_true(bs->n < FK_MAX);
        b = &bs->v[bs->n++];
    }
    free(b->body);
    snprintf(b->digest, sizeof(b->digest), "%s", digest);
    snprintf(b->type, sizeof(b->type), "%s", type);
    b->body = xstrndup(body, len);
    b->len = len;
}

static void fk_body_unset(struct fk_bodies *bs, const char *digest)
{
    struct fk_body *b = fk_body(bs, digest);
    if (b) {
        free(b->body);
        *b = bs->v[--bs->n];
        memset(&bs->v[bs->n], 0, sizeof(bs->v[bs->n])); /* its body is b's now */
    }
}

static void fk_bodies_free(struct fk_bodies *bs)
{
    for (size_t i = 0; i < bs->n; i++)
        free(bs->v[i].body);
    bs->n = 0;
}

static struct fk_call *fk_call_new(struct fk *fk, enum fk_kind kind, void *arg)
{
    struct fk_call *c = xcalloc(1, sizeof(*c));
    c->kind = kind;
    c->arg = arg;
    c->res.retry_after = -1;
    c->res.length = -1;
    if (fk->tail)
        fk->tail->next = c;
    else
        fk->head = c;
    fk->tail = c;
    ev_idle_start(fk->loop, &fk->idle);
    return c;
}

static void fk_fire(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    struct fk *fk = w->data;
    struct fk_call *c = fk->head;
    fk->head = c->next;
    if (!fk->head) {
        fk->tail = NULL;
        ev_idle_stop(loop, w);
    }
    switch (c->kind) {
    case FK_REG:
        c->done(&c->res, c->arg);
        if (c->upstream_get && c->res.cls == REG_OK && !fk_body(&fk->kept, c->digest))
            fk->unkept++;
        break;
    case FK_FLAG: c->flag(c->yes, c->arg); break;
    case FK_BUDGET:
        c->budget(c->yes, c->yes || fk->deny_untold ? 0 : 60000, c->yes ? fk : NULL, NULL,
                  c->arg);
        break;
    case FK_HOME: c->home(c->repo[0] ? c->repo : NULL, c->arg); break;
    case FK_READY: c->ready(c->arg); break;
    case FK_BYTES:
        c->bytes(c->res.body, c->res.body_len, c->res.body ? c->type : NULL, c->arg);
        break;
    }
    free(c->res.body);
    free(c->res.tags);
    free(c);
}

/* -- the registries (engine_reg_ops) -- */

static int fk_upstream(struct reg_registry *r)
{
    return strcmp(reg_registry_url(r), UP_URL) == 0;
}

static struct fk_call *fk_reg_call(reg_done_fn done, void *arg)
{
    struct fk_call *c = fk_call_new(fk_now, FK_REG, arg);
    c->done = done;
    return c;
}

/* 1 (c answered with the fault) if op on ref is to fail. */
static int fk_faulty(struct fk_call *c, enum fk_op op, const char *ref)
{
    for (size_t i = 0; i < fk_now->nfaults; i++) {
        const struct fk_fault *f = &fk_now->faults[i];
        if (f->op == op && strcmp(f->ref, ref) == 0) {
            c->res.cls = f->cls;
            c->res.status = f->cls == REG_NOT_FOUND ? 404 : f->cls == REG_SERVER ? 503 : 400;
            snprintf(c->res.msg, sizeof(c->res.msg), "fake: %s refused", ref);
            return 1;
        }
    }
    return 0;
}

static void fk_answer(struct fk_call *c, const struct fk_body *b)
{
    if (!b) {
        c->res.cls = REG_NOT_FOUND;
        c->res.status = 404;
        snprintf(c->res.msg, sizeof(c->res.msg), "fake: not found");
        return;
    }
    c->res.status = 200;
    snprintf(c->digest, sizeof(c->digest), "%s", b->digest);
    snprintf(c->type, sizeof(c->type), "%s", b->type);
    c->res.digest = c->digest;
    c->res.content_type = c->type;
    c->res.length = (long long)b->len;
}

/* What ref names in repo of r, or NULL. */
static struct fk_body *fk_lookup(struct reg_registry *r, const char *repo, const char *ref)
{
    struct fk *fk = fk_now;
    if (fk_upstream(r)) {
        struct fk_ref *t = fk_find(&fk->up_tags, repo, ref);
        return fk_body(&fk->bodies, t ? t->digest : ref);
    }
    struct fk_ref *m = fk_find(&fk->dst, repo, ref);
    return m ? fk_body(&fk->bodies, m->digest) : NULL;
}

static void fk_head_manifest(struct reg_registry *r, const char *repo, const char *ref,
                             reg_done_fn done, void *arg)
{
    struct fk_call *c = fk_reg_call(done, arg);
    if (!(fk_upstream(r) && fk_faulty(c, FK_HEAD_UP, ref)))
        fk_answer(c, fk_lookup(r, repo, ref));
}

static void fk_get_manifest(struct reg_registry *r, const char *repo, const char *ref,
                            reg_done_fn done, void *arg)
{
    struct fk_call *c = fk_reg_call(done, arg);
    if (fk_upstream(r)) {
        fk_log(fk_now, "GET %s", ref); /* counted, whatever the answer */
        if (fk_faulty(c, FK_GET_UP, ref))
            return;
        c->upstream_get = 1;
    }
    struct fk_body *b = fk_lookup(r, repo, ref);
    fk_answer(c, b);
    if (b) {
        c->res.body = xstrndup(b->body, b->len);
        c->res.body_len = b->len;
    }
}

/* A registry refuses a manifest that references what the repository lacks. */
static int fk_references_present(const char *repo, const char *body, size_t len,
                                 const char *type)
{
    struct manifest m;
    struct err e;
    assert_int_equal(manifest_parse(&m, body, len, type, &e), 0);
    int ok = 1;
    for (size_t i = 0; i < m.nitems; i++)
        if (!fk_find(m.is_index ? &fk_now->dst : &fk_now->blobs, repo, m.items[i].digest))
            ok = 0;
    manifest_free(&m);
    return ok;
}

static void fk_put_manifest(struct reg_registry *r, const char *repo, const char *ref,
                            const char *media_type, const void *body, size_t len,
                            reg_done_fn done, void *arg)
{
    struct fk *fk = fk_now;
    struct fk_call *c = fk_reg_call(done, arg);
    assert_false(fk_upstream(r));
    fk_log(fk, "PUT %s %s", repo, ref);
    if (fk_faulty(c, FK_PUT, ref))
        return;
    char d[DIGEST_STR_SIZE];
    digest_of(body, len, d);
    if (strncmp(ref, "sha256:", 7) == 0)
        assert_string_equal(ref, d); /* the exact bytes, by their digest */
    if (!fk_references_present(repo, body, len, media_type)) {
        fk->refused++;
        c->res.cls = REG_PROTOCOL;
        c->res.status = 400;
        snprintf(c->res.msg, sizeof(c->res.msg), "fake: MANIFEST_BLOB_UNKNOWN");
        return;
    }
    if (!fk_body(&fk->bodies, d))
        fk_body_set(&fk->bodies, d, media_type, body, len);
    if (!fk_find(&fk->dst, repo, d))
        fk->tag_first += strcmp(ref, d) != 0;
    fk_set(&fk->dst, repo, d, d);
    fk_set(&fk->dst, repo, ref, d);
    fk_answer(c, fk_body(&fk->bodies, d));
}

static void fk_head_blob(struct reg_registry *r, const char *repo, const char *digest,
                         reg_done_fn done, void *arg)
{
    struct fk_call *c = fk_reg_call(done, arg);
    assert_false(fk_upstream(r));
    if (fk_find(&fk_now->blobs, repo, digest)) {
        c->res.status = 200;
        c->res.length = 1;
    } else {
        c->res.cls = REG_NOT_FOUND;
        c->res.status = 404;
    }
}

static void fk_copy_blob(const struct reg_blob_spec *spec, reg_done_fn done, void *arg)
{
    struct fk *fk = fk_now;
    struct fk_call *c = fk_reg_call(done, arg);
    fk_log(fk, "COPY %s %s", spec->digest, spec->mount_from ? spec->mount_from : "-");
    if (fk_faulty(c, FK_COPY, spec->digest))
        return;
    c->res.status = 201;
    c->res.mounted = spec->mount_from && fk_find(&fk->blobs, spec->mount_from, spec->digest);
    c->res.length = c->res.mounted ? 0 : spec->size;
    fk_set(&fk->blobs, spec->dst_repo, spec->digest, spec->digest);
}

/* A page of the referrers of subject upstream (res->tags borrow the digests), or a 404
 * without the API. */
static void fk_list_referrers(struct reg_registry *r, const char *repo, const char *subject,
                              const char *page, size_t max, reg_done_fn done, void *arg)
{
    struct fk *fk = fk_now;
    struct fk_call *c = fk_reg_call(done, arg);
    assert_true(fk_upstream(r));
    fk_log(fk, "REFERRERS %s", subject); /* counted, whatever the answer */
    size_t first = page ? strtoul(strrchr(page, '=') + 1, NULL, 10) : 0, n = 0;
    if (fk_faulty(c, FK_REFERRERS, subject))
        return;
    if (fk->no_referrers_api) {
        c->res.cls = REG_NOT_FOUND;
        c->res.status = 404;
        return;
    }
    c->res.status = 200;
    c->res.tags = xcalloc(FK_MAX, sizeof(char *));
    for (size_t i = 0; i < fk->up_referrers.n; i++) {
        struct fk_ref *f = &fk->up_referrers.v[i];
        if (strcmp(f->repo, repo) != 0 || strcmp(f->digest, subject) != 0 || n++ < first)
            continue;
        if (fk->referrers_page && c->res.ntags == fk->referrers_page) {
            snprintf(c->next_page, sizeof(c->next_page), UP_URL "/v2/%s/referrers/%s?page=%zu",
                     repo, subject, first + c->res.ntags);
            c->res.next = c->next_page;
            break;
        }
        c->res.tags[c->res.ntags++] = f->ref;
    }
    assert_true(c->res.ntags <= max);
}

/* -- the fleet (engine_ops) -- */

static struct fk_call *fk_flag_call(struct fk *fk, engine_flag_fn cb, void *arg, int yes)
{
    struct fk_call *c = fk_call_new(fk, FK_FLAG, arg);
    c->flag = cb;
    c->yes = yes;
    return c;
}

static void fk_budget_acquire(void *ctx, struct reg_registry *up,
                              const struct engine_account *accounts, size_t naccounts,
                              const char *repo, const char *ref, engine_budget_fn cb, void *arg)
{
    struct fk *fk = ctx;
    (void)up;
    (void)accounts;
    assert_int_equal(naccounts, 0);
    (void)repo;
    assert_true(reg_valid_ref(ref)); /* a ref of the job the ops may HEAD */
    struct fk_call *c = fk_call_new(fk, FK_BUDGET, arg);
    c->budget = cb;
    c->yes = fk->grants != 0;
    if (c->yes) {
        fk->granted++;
        if (fk->grants > 0)
            fk->grants--;
    }
}

static void fk_budget_done(void *ctx, struct reg_registry *up, void *grant,
                           const struct reg_result *res)
{
    struct fk *fk = ctx;
    (void)up;
    (void)res;
    assert_ptr_equal(grant, fk);
    fk->settled++;
}

static void fk_check_target(void *ctx, struct reg_registry *dst, const char *repo,
                            engine_ready_fn cb, void *arg)
{
    (void)dst;
    (void)repo;
    struct fk_call *c = fk_call_new(ctx, FK_READY, arg);
    c->ready = cb;
}

static void fk_present(void *ctx, const char *target, const char *repo, const char *digest,
                       engine_flag_fn cb, void *arg)
{
    struct fk *fk = ctx;
    assert_string_equal(target, DST_URL);
    fk_flag_call(fk, cb, arg, fk_find(&fk->present, repo, digest) != NULL);
}

static void fk_mark_present(void *ctx, const char *target, const char *repo,
                            const char *digest, int blob)
{
    struct fk *fk = ctx;
    (void)target;
    (void)blob;
    fk_set(&fk->present, repo, digest, digest);
}

static void fk_forget(void *ctx, const char *target, const char *repo, const char *digest)
{
    struct fk *fk = ctx;
    (void)target;
    fk_log(fk, "FORGET %s %s", repo, digest);
    fk_unset(&fk->present, repo, digest);
    fk_unset(&fk->homes, repo, digest);
}

static void fk_blob_home(void *ctx, const char *target, const char *digest, engine_home_fn cb,
                         void *arg)
{
    struct fk *fk = ctx;
    (void)target;
    struct fk_call *c = fk_call_new(fk, FK_HOME, arg);
    c->home = cb;
    for (size_t i = 0; i < fk->homes.n && !c->repo[0]; i++)
        if (strcmp(fk->homes.v[i].digest, digest) == 0)
            snprintf(c->repo, sizeof(c->repo), "%s", fk->homes.v[i].repo);
}

static void fk_lock(void *ctx, const char *target, const char *digest, engine_flag_fn cb,
                    void *arg)
{
    struct fk *fk = ctx;
    (void)target;
    if (fk->assist_polls > 0 && strcmp(digest, fk->assisted) == 0 && --fk->assist_polls == 0) {
        fk_unset(&fk->locks, "", digest);
        if (fk->assist_ok) {
            fk_set(&fk->dst, REPO, digest, digest);
            fk_set(&fk->present, REPO, digest, digest);
        }
    }
    int free_now = !fk_find(&fk->locks, NULL, digest);
    if (free_now)
        fk_set(&fk->locks, "", digest, digest);
    fk_flag_call(fk, cb, arg, free_now);
}

static void fk_unlock(void *ctx, const char *target, const char *digest)
{
    struct fk *fk = ctx;
    (void)target;
    assert_non_null(fk_find(&fk->locks, NULL, digest));
    fk_unset(&fk->locks, "", digest);
}

static void fk_manifest_cached(void *ctx, const char *digest, engine_bytes_fn cb, void *arg)
{
    struct fk *fk = ctx;
    struct fk_call *c = fk_call_new(fk, FK_BYTES, arg);
    c->bytes = cb;
    const struct fk_body *b = fk_body(&fk->kept, digest);
    if (b) {
        c->res.body = xstrndup(b->body, b->len);
        c->res.body_len = b->len;
        snprintf(c->type, sizeof(c->type), "%s", b->type);
    }
}

static void fk_manifest_keep(void *ctx, const char *digest, const char *media_type,
                             const char *body, size_t len)
{
    struct fk *fk = ctx;
    fk_log(fk, "KEEP %s", digest);
    fk_body_set(&fk->kept, digest, media_type, body, len);
}

static void fk_manifest_drop(void *ctx, const char *digest)
{
    struct fk *fk = ctx;
    fk_log(fk, "DROP %s", digest);
    assert_non_null(fk_body(&fk->kept, digest));
    fk_body_unset(&fk->kept, digest);
}

static void fk_still_held(void *ctx, void *job_arg, engine_flag_fn cb, void *arg)
{
    struct fk *fk = ctx;
    assert_ptr_equal(job_arg, fk);
    fk_log(fk, "HELD?");
    fk_flag_call(fk, cb, arg, fk->held);
}

static void fk_tag_intent(void *ctx, void *job_arg, const char *repo, const char *tag,
                          const char *previous, const char *digest)
{
    struct fk *fk = ctx;
    assert_ptr_equal(job_arg, fk);
    fk_log(fk, "INTENT %s:%s %s %s", repo, tag, digest, previous[0] ? previous : "-");
}

static void fk_tag_written(void *ctx, void *job_arg, const char *repo, const char *tag,
                           const char *previous, const char *digest)
{
    struct fk *fk = ctx;
    assert_ptr_equal(job_arg, fk);
    fk_log(fk, "TOLD %s:%s %s %s", repo, tag, digest, previous[0] ? previous : "-");
}

static void fk_tags_current(void *ctx, void *job_arg, const char *repo, const char *const *tags,
                            const char *const *digests, size_t n)
{
    struct fk *fk = ctx;
    assert_ptr_equal(job_arg, fk);
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++)
        fk_log(fk, "CURRENT %s:%s %s", repo, tags[i], digests[i]);
}

static void fk_offer_children(void *ctx, void *job_arg, const char *const *digests, size_t n)
{
    struct fk *fk = ctx;
    assert_ptr_equal(job_arg, fk);
    char line[160] = "OFFER";
    for (size_t i = 0; i < n; i++)
        snprintf(line + strlen(line), sizeof(line) - strlen(line), " %.12s", digests[i] + 7);
    fk_log(fk, "%s", line);
}

static const struct engine_reg_ops fk_reg_ops = {
    fk_head_manifest, fk_get_manifest, fk_put_manifest, fk_head_blob, fk_copy_blob,
    fk_list_referrers,
};

static struct fk *fk_new(void)
{
    struct fk *fk = xcalloc(1, sizeof(*fk));
    struct err e;
    fk->loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(fk->loop);
    ev_idle_init(&fk->idle, fk_fire);
    fk->idle.data = fk;
    struct reg_client_opts co;
    reg_client_opts_default(&co);
    fk->client = reg_client_new(fk->loop, &co, &e);
    assert_non_null(fk->client);
    fk->grants = -1;
    fk->held = 1;
    struct engine_ops ops = {
        .ctx = fk,
        .budget_acquire = fk_budget_acquire,
        .budget_done = fk_budget_done,
        .check_target = fk_check_target,
        .present = fk_present,
        .mark_present = fk_mark_present,
        .forget = fk_forget,
        .blob_home = fk_blob_home,
        .lock = fk_lock,
        .unlock = fk_unlock,
        .manifest_cached = fk_manifest_cached,
        .manifest_keep = fk_manifest_keep,
        .manifest_drop = fk_manifest_drop,
        .still_held = fk_still_held,
        .tag_intent = fk_tag_intent,
        .tag_written = fk_tag_written,
        .tags_current = fk_tags_current,
        .offer_children = fk_offer_children,
    };
    struct engine_opts o;
    engine_opts_default(&o);
    o.upstream = UP_URL;
    o.target = DST_URL;
    o.blob_concurrency = 2; /* blobs wait for a slot too */
    o.lock_poll_s = 0.001;
    o.reg = &fk_reg_ops;
    fk->en = engine_new(fk->loop, fk->client, &ops, &o, &e);
    assert_non_null(fk->en);
    fk_now = fk;
    return fk;
}

static void fk_free(struct fk *fk)
{
    assert_null(fk->head);
    engine_free(fk->en);
    reg_client_free(fk->client);
    ev_loop_destroy(fk->loop);
    fk_bodies_free(&fk->bodies);
    fk_bodies_free(&fk->kept);
    free(fk);
    fk_now = NULL;
}

static void fk_fault_add(struct fk *fk, enum fk_op op, const char *ref, enum reg_class cls)
{
    assert_true(fk->nfaults < sizeof(fk->faults) / sizeof(fk->faults[0]));
    struct fk_fault *f = &fk->faults[fk->nfaults++];
    f->op = op;
    snprintf(f->ref, sizeof(f->ref), "%s", ref);
    f->cls = cls;
}

static void fk_done(const struct engine_outcome *out, void *arg)
{
    struct fk *fk = arg;
    fk->out = *out;
    fk->finished = 1;
}

/* One job copying tags of REPO, run until the engine reports it. */
/* A job of tags, pinned digests and referrer tags. */
static void fk_run_job(struct fk *fk, const char *const *tags, size_t ntags,
                       const char *const *digests, size_t ndigests, const char *const *refs,
                       size_t nrefs)
{
    char run[] = "r1", key[] = "busybox:1", up[] = UP_URL, dst[] = DST_URL, repo[] = REPO;
    char *tagv[8], *digv[8], *refv[8];
    assert_true(ntags <= 8 && ndigests <= 8 && nrefs <= 8);
    for (size_t i = 0; i < ntags; i++)
        tagv[i] = (char *)tags[i];
    for (size_t i = 0; i < ndigests; i++)
        digv[i] = (char *)digests[i];
    for (size_t i = 0; i < nrefs; i++)
        refv[i] = (char *)refs[i];
    struct job j = {
        .version = JOB_VERSION, .run = run, .key = key, .upstream = up, .source_repo = repo,
        .target = dst, .target_repo = repo, .tags = tagv, .ntags = ntags, .digests = digv,
        .ndigests = ndigests, .referrers = refv, .nreferrers = nrefs,
        .find_referrers = fk->find_referrers, .policy = JOB_POLICY_ALL,
        .reason = JOB_REASON_CHANGED,
    };
    fk->finished = 0;
    fk->nlog = 0;
    engine_start(fk->en, &j, fk_done, fk);
    for (int i = 0; !fk->finished; i++) {
        if (i > 100000)
            fail_msg("the engine never reported the job");
        ev_run(fk->loop, EVRUN_ONCE);
    }
    assert_int_equal(engine_busy(fk->en), 0);
    assert_int_equal(fk->locks.n, 0);              /* every lock released */
    assert_int_equal(fk->settled, fk->granted);    /* every grant settled */
    assert_int_equal(fk->tag_first, 0);            /* a manifest before its tags */
}

static void fk_run(struct fk *fk, const char *const *tags, size_t ntags)
{
    fk_run_job(fk, tags, ntags, NULL, 0, NULL, 0);
}

static void fk_run_pinned(struct fk *fk, const char *const *tags, size_t ntags,
                          const char *const *digests, size_t ndigests)
{
    fk_run_job(fk, tags, ntags, digests, ndigests, NULL, 0);
}

/* -- content: an index of two images sharing a layer ------------------------------------ */

struct bb {
    char index[DIGEST_STR_SIZE], amd64[DIGEST_STR_SIZE], arm64[DIGEST_STR_SIZE];
    char cfg_amd64[DIGEST_STR_SIZE], cfg_arm64[DIGEST_STR_SIZE];
    char shared[DIGEST_STR_SIZE], only_amd64[DIGEST_STR_SIZE], only_arm64[DIGEST_STR_SIZE];
};

static const char *const bb_tags[] = {"1.36", "1", "latest"};
#define BB_NTAGS 3

static void fk_upstream_add(struct fk *fk, const char *type, const char *body,
                            char digest[DIGEST_STR_SIZE])
{
    digest_of(body, strlen(body), digest);
    fk_body_set(&fk->bodies, digest, type, body, strlen(body));
}

static void fk_image(struct fk *fk, const char *config, const char *l1, const char *l2,
                     char digest[DIGEST_STR_SIZE])
{
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"schemaVersion\":2,\"mediaType\":\"" REG_MT_OCI_MANIFEST "\","
             "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
             "\"digest\":\"%s\",\"size\":100},\"layers\":["
             "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","
             "\"digest\":\"%s\",\"size\":1000},"
             "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","
             "\"digest\":\"%s\",\"size\":2000}]}",
             config, l1, l2);
    fk_upstream_add(fk, REG_MT_OCI_MANIFEST, body, digest);
}

/* Upstream REPO: tags 1.36, 1 and latest name an index of an amd64 and an arm64 image,
 * which share a layer. */
static void bb_load(struct fk *fk, struct bb *b)
{
    digest_of("config amd64", 12, b->cfg_amd64);
    digest_of("config arm64", 12, b->cfg_arm64);
    digest_of("shared layer", 12, b->shared);
    digest_of("amd64 layer", 11, b->only_amd64);
    digest_of("arm64 layer", 11, b->only_arm64);
    fk_image(fk, b->cfg_amd64, b->shared, b->only_amd64, b->amd64);
    fk_image(fk, b->cfg_arm64, b->shared, b->only_arm64, b->arm64);
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"schemaVersion\":2,\"mediaType\":\"" REG_MT_OCI_INDEX "\",\"manifests\":["
             "{\"mediaType\":\"" REG_MT_OCI_MANIFEST "\",\"digest\":\"%s\",\"size\":%zu,"
             "\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}},"
             "{\"mediaType\":\"" REG_MT_OCI_MANIFEST "\",\"digest\":\"%s\",\"size\":%zu,"
             "\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"}}]}",
             b->amd64, fk_body(&fk->bodies, b->amd64)->len, b->arm64,
             fk_body(&fk->bodies, b->arm64)->len);
    fk_upstream_add(fk, REG_MT_OCI_INDEX, body, b->index);
    for (size_t i = 0; i < BB_NTAGS; i++)
        fk_set(&fk->up_tags, REPO, bb_tags[i], b->index);
}

static const char *bb_tag_of(struct fk *fk, const char *tag)
{
    struct fk_ref *r = fk_find(&fk->dst, REPO, tag);
    return r ? r->digest : "";
}

/* Position of the first log line "what a b" ("what a" if b is ""), -1 if none. */
static int fk_line(const struct fk *fk, const char *what, const char *a, const char *b)
{
    char line[160];
    snprintf(line, sizeof(line), "%s %s%s%s", what, a, *b ? " " : "", b);
    return fk_pos(fk, line);
}

/* ---- engine_start against the fakes ----------------------------------------------------- */

/* Each distinct digest is fetched once (also one that is a root and a child of another root
 * at once), each blob copied once (a layer two images share too), every manifest pushed
 * after what it references, and the tags last. */
static void test_engine__each_digest_once_children_first_tags_last(void **state)
{
    (void)state;
    struct fk *fk = fk_new();
    struct bb b;
    bb_load(fk, &b);
    fk_set(&fk->up_tags, REPO, "amd64", b.amd64); /* a root that is also the index's child */
    const char *tags[] = {"1.36", "amd64", "1", "latest"};
    fk_run(fk, tags, 4);

    assert_int_equal(fk->out.status, ENGINE_DONE);
    const char *manifests[] = {b.index, b.amd64, b.arm64};
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(fk_count_of(fk, "GET", manifests[i]), 1);
    assert_int_equal(fk_count(fk, "GET "), 3);
    assert_int_equal(fk->out.n.upstream_manifest_gets, 3);
    assert_int_equal(fk->out.n.upstream_manifest_heads, 4);
    const char *blobs[] = {b.cfg_amd64, b.cfg_arm64, b.shared, b.only_amd64, b.only_arm64};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(fk_count_of(fk, "COPY", blobs[i]), 1);
    assert_int_equal(fk->out.n.blobs_copied, 5);
    assert_int_equal(fk->out.n.blob_bytes_copied, 2 * 100 + 1000 + 2 * 2000);
    assert_int_equal(fk->out.n.manifests_pushed, 3);

    /* Children before their index, blobs before their image: the fake refuses the others. */
    assert_int_equal(fk->refused, 0);
    int put_index = fk_line(fk, "PUT", REPO, b.index);
    assert_true(put_index > fk_line(fk, "PUT", REPO, b.amd64));
    assert_true(put_index > fk_line(fk, "PUT", REPO, b.arm64));
    assert_true(fk_line(fk, "PUT", REPO, b.arm64) > fk_line(fk, "COPY", b.only_arm64, "-"));
    assert_true(fk_line(fk, "PUT", REPO, b.arm64) > fk_line(fk, "COPY", b.shared, "-"));
    /* Each root's tags after every manifest of the root, each once, from the same bytes. */
    assert_int_equal(fk_tag_puts(fk), 4);
    assert_int_equal(fk->out.n.tags_written, 4);
    for (size_t i = 0; i < BB_NTAGS; i++)
        assert_true(fk_line(fk, "PUT", REPO, bb_tags[i]) > put_index);
    assert_true(fk_line(fk, "PUT", REPO, "amd64") > fk_line(fk, "PUT", REPO, b.amd64));
    for (size_t i = 0; i < BB_NTAGS; i++)
        assert_string_equal(bb_tag_of(fk, bb_tags[i]), b.index);
    assert_string_equal(bb_tag_of(fk, "amd64"), b.amd64);

    /* Run again: every tag is current; nothing is fetched or written. */
    fk_run(fk, tags, 4);
    assert_int_equal(fk->out.status, ENGINE_DONE);
    assert_int_equal(fk->out.n.tags_unchanged, 4);
    assert_int_equal(fk_count(fk, "GET "), 0);
    assert_int_equal(fk_count(fk, "PUT "), 0);
    assert_int_equal(fk_count(fk, "COPY "), 0);
    fk_free(fk);
}

/* A pinned digest is copied by its digest, once, and never tagged; beside a tag, each goes
 * its own way. */
static void test_engine__pinned_digest_copied_untagged(void **state)
{
    (void)state;
    struct fk *fk = fk_new();
    struct bb b;
    bb_load(fk, &b);
    const char *pins[] = {b.arm64};
    fk_run_pinned(fk, NULL, 0, pins, 1);
    assert_int_equal(fk->out.status, ENGINE_DONE);
    assert_int_equal(fk_count(fk, "GET "), 1);
    assert_int_equal(fk_count_of(fk, "GET", b.arm64), 1);
    assert_int_equal(fk->out.n.manifests_pushed, 1);
    assert_int_equal(fk_tag_puts(fk), 0);
    assert_int_equal(fk->out.n.tags_total, 0);
    assert_string_equal(bb_tag_of(fk, b.arm64), b.arm64);

    /* With a tag of the index: the index and amd64 are fetched, arm64 is there already. */
    const char *tags[] = {"latest"};
    fk_run_pinned(fk, tags, 1, pins, 1);
    assert_int_equal(fk->out.status, ENGINE_DONE);
    assert_int_equal(fk_count(fk, "GET "), 2);
    assert_int_equal(fk_tag_puts(fk), 1);
    assert_int_equal(fk->out.n.tags_written, 1);
    assert_string_equal(bb_tag_of(fk, "latest"), b.index);

    /* Again: nothing to do, and only the tag counts as unchanged. */
    fk_run_pinned(fk, tags, 1, pins, 1);
    assert_int_equal(fk_count(fk, "GET "), 0);
    assert_int_equal(fk_count(fk, "PUT "), 0);
    assert_int_equal(fk->out.n.tags_unchanged, 1);
    fk_free(fk);
}

/* Referrer tags (a cosign-style signature and attestation of the index) are written
 * before any other tag of the job; a referrer that cannot be copied leaves the others
 * unwritten. */
static void test_engine__referrers_tagged_first(void **state)
{
    (void)state;
    for (int fail = 0; fail <= 1; fail++) {
        struct fk *fk = fk_new();
        struct bb b;
        bb_load(fk, &b);
        char cfg[DIGEST_STR_SIZE], l1[DIGEST_STR_SIZE], l2[DIGEST_STR_SIZE];
        char sig[DIGEST_STR_SIZE], att[DIGEST_STR_SIZE], sig_tag[DIGEST_STR_SIZE + 8],
            att_tag[DIGEST_STR_SIZE + 8];
        digest_of("sig config", 10, cfg);
        digest_of("sig layer", 9, l1);
        digest_of("att layer", 9, l2);
        fk_image(fk, cfg, l1, l1, sig);
        fk_image(fk, cfg, l1, l2, att);
        snprintf(sig_tag, sizeof(sig_tag), "sha256-%.64s.sig", b.index + 7);
        snprintf(att_tag, sizeof(att_tag), "sha256-%.64s.att", b.index + 7);
        fk_set(&fk->up_tags, REPO, sig_tag, sig);
        fk_set(&fk->up_tags, REPO, att_tag, att);
        /* The target has the index already (untagged): its root is done long before the
         * referrers', which must be fetched and copied. */
        const char *index[] = {b.index};
        fk_run_pinned(fk, NULL, 0, index, 1);
        if (fail)
            fk_fault_add(fk, FK_GET_UP, att, REG_NOT_FOUND);
        const char *refs[] = {sig_tag, att_tag};
        fk_run_job(fk, bb_tags, BB_NTAGS, NULL, 0, refs, 2);
        if (fail) {
            assert_int_equal(fk->out.status, ENGINE_FAILED);
            for (size_t i = 0; i < BB_NTAGS; i++)
                assert_int_equal(fk_line(fk, "PUT", REPO, bb_tags[i]), -1);
        } else {
            assert_int_equal(fk->out.status, ENGINE_DONE);
            assert_int_equal(fk->out.n.tags_written, BB_NTAGS + 2);
            int last_ref = fk_line(fk, "PUT", REPO, sig_tag);
            if (fk_line(fk, "PUT", REPO, att_tag) > last_ref)
                last_ref = fk_line(fk, "PUT", REPO, att_tag);
            for (size_t i = 0; i < BB_NTAGS; i++)
                assert_true(fk_line(fk, "PUT", REPO, bb_tags[i]) > last_ref);
            assert_string_equal(bb_tag_of(fk, sig_tag), sig);
            assert_string_equal(bb_tag_of(fk, att_tag), att);
        }
        fk_free(fk);
    }
}

/* Referrers the API lists (a signature of the index, pushed by digest only) are copied
 * digest-exact, and before any tag of the job is written, at one counted GET of the API for
 * the digest of three tags and one for the signature's own; none when the tags are current. A registry without the API
 * (404) leaves the fallback tags, and the tags go on; a listing that fails writes no tag. */
static void test_engine__api_referrers_copied_first(void **state)
{
    (void)state;
    for (int mode = 0; mode < 3; mode++) { /* the API, a 404, a failing listing */
        struct fk *fk = fk_new();
        struct bb b;
        bb_load(fk, &b);
        char cfg[DIGEST_STR_SIZE], l1[DIGEST_STR_SIZE], sig[DIGEST_STR_SIZE];
        digest_of("sig config", 10, cfg);
        digest_of("sig layer", 9, l1);
        fk_image(fk, cfg, l1, l1, sig);
        fk_set(&fk->up_referrers, REPO, sig, b.index);
        fk->find_referrers = 1;
        fk->no_referrers_api = mode == 1;
        if (mode == 2)
            fk_fault_add(fk, FK_REFERRERS, b.index, REG_SERVER);
        fk_run(fk, bb_tags, BB_NTAGS);
        /* the index's, and the signature's own (it has none) */
        assert_int_equal(fk_count(fk, "REFERRERS "), mode == 0 ? 2 : 1);
        assert_int_equal(fk_count_of(fk, "REFERRERS", b.index), 1);
        if (mode == 2) {
            assert_int_equal(fk->out.status, ENGINE_UNAVAILABLE);
            assert_int_equal(fk_tag_puts(fk), 0);
            assert_int_equal(fk_count(fk, "GET "), 0);
            fk_free(fk);
            continue;
        }
        assert_int_equal(fk->out.status, ENGINE_DONE);
        assert_int_equal(fk->out.n.tags_written, BB_NTAGS);
        if (mode == 1) {
            assert_int_equal(fk->out.n.upstream_manifest_gets, 4);
            assert_null(fk_find(&fk->dst, REPO, sig));
            fk_free(fk);
            continue;
        }
        /* index, amd64, arm64, the signature, and the two listings */
        assert_int_equal(fk->out.n.upstream_manifest_gets, 6);
        assert_int_equal(fk_count_of(fk, "GET", sig), 1);
        assert_string_equal(bb_tag_of(fk, sig), sig);
        int put_sig = fk_line(fk, "PUT", REPO, sig);
        assert_true(put_sig >= 0);
        for (size_t i = 0; i < BB_NTAGS; i++)
            assert_true(fk_line(fk, "PUT", REPO, bb_tags[i]) > put_sig);
        fk_run(fk, bb_tags, BB_NTAGS);
        assert_int_equal(fk->out.status, ENGINE_DONE);
        assert_int_equal(fk_count(fk, "REFERRERS "), 0);
        assert_int_equal(fk_count(fk, "GET "), 0);
        fk_free(fk);
    }
}

/* Referrers of referrers: a chain of six, each the subject of the next, from the index; a
 * fallback-tag signature of the first; the third listing the index as its referrer (a
 * cycle). Followed four deep, each digest once, copied digest-exact and deepest first, at
 * one counted GET for each digest copied and one listing for each digest but the deepest. */
static void test_engine__referrers_of_referrers(void **state)
{
    (void)state;
    struct fk *fk = fk_new();
    struct bb b;
    bb_load(fk, &b);
    char *ref[6]; /* each on the heap: gcc would take a 2-D array row for the whole array */
    char sig[DIGEST_STR_SIZE], sig_tag[DIGEST_STR_SIZE + 8];
    for (int i = 0; i < 6; i++) {
        char cfg[DIGEST_STR_SIZE], name[16];
        ref[i] = xcalloc(1, DIGEST_STR_SIZE);
        snprintf(name, sizeof(name), "ref config %d", i);
        digest_of(name, strlen(name), cfg);
        fk_image(fk, cfg, b.shared, b.shared, ref[i]);
        fk_set(&fk->up_referrers, REPO, ref[i], i ? ref[i - 1] : b.index);
    }
    fk_set(&fk->up_referrers, REPO, b.index, ref[2]);
    char sig_cfg[DIGEST_STR_SIZE];
    digest_of("fallback sig config", 19, sig_cfg);
    fk_image(fk, sig_cfg, b.shared, b.shared, sig);
    snprintf(sig_tag, sizeof(sig_tag), "sha256-%.64s.sig", ref[0] + 7);
    fk_set(&fk->up_tags, REPO, sig_tag, sig);
    fk->find_referrers = 1;
    fk_run(fk, bb_tags, BB_NTAGS);
    assert_int_equal(fk->out.status, ENGINE_DONE);
    /* depth 1 to 4 copied by digest, each after the one referring to it */
    for (int i = 0; i < 4; i++) {
        assert_non_null(fk_find(&fk->dst, REPO, ref[i]));
        assert_int_equal(fk_count_of(fk, "GET", ref[i]), 1);
        if (i)
            assert_true(fk_line(fk, "PUT", REPO, ref[i]) < fk_line(fk, "PUT", REPO, ref[i - 1]));
    }
    assert_null(fk_find(&fk->dst, REPO, ref[4]));
    assert_int_equal(fk_count_of(fk, "GET", ref[4]), 0);
    /* the fallback signature of ref 0 (depth 2): tagged, before ref 0 */
    assert_string_equal(bb_tag_of(fk, sig_tag), sig);
    assert_true(fk_line(fk, "PUT", REPO, sig_tag) < fk_line(fk, "PUT", REPO, ref[0]));
    for (size_t i = 0; i < BB_NTAGS; i++)
        assert_true(fk_line(fk, "PUT", REPO, bb_tags[i]) > fk_line(fk, "PUT", REPO, ref[0]));
    /* listings: the index, refs 0 to 2 and the signature; the index once */
    assert_int_equal(fk_count(fk, "REFERRERS "), 5);
    assert_int_equal(fk_count_of(fk, "GET", b.index), 1);
    /* index, amd64, arm64, refs 0 to 3, the signature; the five listings */
    assert_int_equal(fk->out.n.upstream_manifest_gets, 8 + 5);
    assert_int_equal(fk->granted, 8 + 5);
    for (int i = 0; i < 6; i++)
        free(ref[i]);
    fk_free(fk);
}

/* Referrers listed a page at a time: each page's counted GET is reserved before it is sent,
 * so the job's counted GETs never outnumber its reservations; a budget spent between two
 * pages stops the listing there and writes no tag. */
static void test_engine__referrers_pages_reserved_each(void **state)
{
    (void)state;
    for (int spent = 0; spent <= 1; spent++) {
        struct fk *fk = fk_new();
        struct bb b;
        bb_load(fk, &b);
        char sig[3][DIGEST_STR_SIZE];
        for (int i = 0; i < 3; i++) {
            char cfg[DIGEST_STR_SIZE], name[16];
            snprintf(name, sizeof(name), "sig config %d", i);
            digest_of(name, strlen(name), cfg);
            fk_image(fk, cfg, b.shared, b.shared, sig[i]);
            fk_set(&fk->up_referrers, REPO, sig[i], b.index);
        }
        fk->find_referrers = 1;
        fk->referrers_page = 1;
        fk->grants = spent ? 1 : -1;
        fk_run(fk, bb_tags, BB_NTAGS);
        int gets = fk_count(fk, "GET "), pages = fk_count(fk, "REFERRERS ");
        assert_int_equal(fk->granted, gets + pages);
        assert_int_equal(fk->settled, fk->granted);
        assert_int_equal(fk->out.n.upstream_manifest_gets, gets + pages);
        if (spent) {
            assert_int_equal(fk->out.status, ENGINE_DEFERRED);
            assert_int_equal(pages, 1);
            assert_int_equal(gets, 0);
            assert_int_equal(fk_tag_puts(fk), 0);
            fk_free(fk);
            continue;
        }
        assert_int_equal(fk->out.status, ENGINE_DONE);
        /* the index's referrers, and each signature's own (none, on one page) */
        assert_int_equal(pages, 3 + 3);
        /* index, amd64, arm64, the three signatures */
        assert_int_equal(gets, 6);
        for (int i = 0; i < 3; i++)
            assert_string_equal(bb_tag_of(fk, sig[i]), sig[i]);
        fk_free(fk);
    }
}

/* A child that cannot be copied (its blob, its manifest, its PUT) leaves its index off the
 * target, and no tag is written. */
static void test_engine__failed_child_writes_no_tag(void **state)
{
    (void)state;
    static const struct {
        enum fk_op op;
        int what; /* 0: arm64's own layer, 1: the arm64 manifest */
        enum reg_class cls;
        enum engine_status want;
    } cases[] = {
        {FK_COPY, 0, REG_DIGEST_MISMATCH, ENGINE_RETRY},
        {FK_GET_UP, 1, REG_NOT_FOUND, ENGINE_FAILED},
        {FK_PUT, 1, REG_DENIED, ENGINE_FAILED},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct fk *fk = fk_new();
        struct bb b;
        bb_load(fk, &b);
        fk_fault_add(fk, cases[k].op, cases[k].what ? b.arm64 : b.only_arm64, cases[k].cls);
        fk_run(fk, bb_tags, BB_NTAGS);
        assert_int_equal(fk->out.status, cases[k].want);
        assert_non_null(strstr(fk->out.msg, "fake: "));
        assert_int_equal(fk_tag_puts(fk), 0);
        assert_int_equal(fk->out.n.tags_written, 0);
        assert_int_equal(fk_line(fk, "PUT", REPO, b.index), -1);
        assert_null(fk_find(&fk->dst, REPO, b.index));
        assert_int_equal(fk_count_of(fk, "GET", b.index), 1);
        assert_true(fk_count_of(fk, "GET", b.arm64) <= 1);
        fk_free(fk);
    }
}

/* No budget: no GET, nothing written, the job waits for the budget. A budget spent after the
 * index: its children are not fetched, and still no tag. */
static void test_engine__budget_denied(void **state)
{
    (void)state;
    for (int grants = 0; grants <= 1; grants++) {
        struct fk *fk = fk_new();
        struct bb b;
        bb_load(fk, &b);
        fk->grants = grants;
        fk_run(fk, bb_tags, BB_NTAGS);
        assert_int_equal(fk->out.status, ENGINE_DEFERRED);
        assert_int_equal(fk->out.wait_ms, 60000);
        assert_non_null(strstr(fk->out.msg, "pull budget spent"));
        assert_int_equal(fk_count(fk, "GET "), grants);
        assert_int_equal(fk->out.n.upstream_manifest_gets, grants);
        assert_int_equal(fk_count(fk, "PUT "), 0);
        assert_int_equal(fk_count(fk, "COPY "), 0);
        fk_free(fk);
    }
}

/* Denied after a 429 that said not how long (no Retry-After, no budget headers: no spent
 * budget's): the job is throttled, to back off as after such a 429 at a GET. */
static void test_engine__budget_denied_untold_is_throttled(void **state)
{
    (void)state;
    struct fk *fk = fk_new();
    struct bb b;
    bb_load(fk, &b);
    fk->grants = 0;
    fk->deny_untold = 1;
    fk_run(fk, bb_tags, BB_NTAGS);
    assert_int_equal(fk->out.status, ENGINE_THROTTLED);
    assert_int_equal(fk->out.wait_ms, 0);
    assert_int_equal(fk_count(fk, "GET "), 0);
    assert_int_equal(fk_count(fk, "PUT "), 0);
    fk_free(fk);
}

/* A blob another repository of the target holds is mounted from there; the others are
 * copied; a mount source that turns out to lack its blob is forgotten. */
static void test_engine__mount_preferred_over_copy(void **state)
{
    (void)state;
    struct fk *fk = fk_new();
    struct bb b;
    bb_load(fk, &b);
    fk_set(&fk->blobs, "library/other", b.shared, b.shared);
    fk_set(&fk->homes, "library/other", b.shared, b.shared);
    fk_set(&fk->homes, "library/gone", b.only_amd64, b.only_amd64);
    fk_run(fk, bb_tags, BB_NTAGS);
    assert_int_equal(fk->out.status, ENGINE_DONE);
    assert_true(fk_line(fk, "COPY", b.shared, "library/other") >= 0);
    assert_int_equal(fk_count_of(fk, "COPY", b.shared), 1);
    assert_true(fk_line(fk, "COPY", b.cfg_amd64, "-") >= 0);
    assert_true(fk_line(fk, "COPY", b.only_amd64, "library/gone") >= 0);
    assert_true(fk_line(fk, "FORGET", "library/gone", b.only_amd64) >= 0);
    assert_int_equal(fk->out.n.blobs_mounted, 1);
    assert_int_equal(fk->out.n.blob_bytes_mounted, 1000); /* its descriptor's size */
    assert_int_equal(fk->out.n.blobs_copied, 4);
    assert_int_equal(fk_tag_puts(fk), BB_NTAGS);
    assert_true(fk_tags_last(fk));
    fk_free(fk);
}

/* The present set lists what the target lacks (wiped behind the workers' back): the
 * index is forgotten and copied in the same attempt, and a layer taken from the set is
 * asked about again once the target refuses its image, then copied. */
static void test_engine__stale_present_forgotten_and_copied(void **state)
{
    (void)state;
    struct fk *fk = fk_new();
    struct bb b;
    bb_load(fk, &b);
    fk_set(&fk->present, REPO, b.index, b.index);
    fk_set(&fk->present, REPO, b.only_amd64, b.only_amd64);
    fk_run(fk, bb_tags, BB_NTAGS);
    assert_int_equal(fk->out.status, ENGINE_DONE);
    assert_true(fk_line(fk, "FORGET", REPO, b.index) >= 0);
    assert_true(fk_line(fk, "FORGET", REPO, b.only_amd64) >= 0);
    assert_int_equal(fk->refused, 1); /* the amd64 image, once */
    assert_int_equal(fk_count_of(fk, "COPY", b.only_amd64), 1);
    assert_int_equal(fk_count_of(fk, "GET", b.index), 1);
    assert_int_equal(fk_count(fk, "GET "), 3);
    assert_int_equal(fk_tag_puts(fk), BB_NTAGS);
    assert_true(fk_tags_last(fk));
    assert_string_equal(bb_tag_of(fk, "latest"), b.index);
    fk_free(fk);
}

/* Another worker took the job over while it copied: the manifests are there, no tag is. */
static void test_engine__not_held_writes_no_tag(void **state)
{
    (void)state;
    struct fk *fk = fk_new();
    struct bb b;
    bb_load(fk, &b);
    fk->held = 0;
    fk_run(fk, bb_tags, BB_NTAGS);
    assert_int_equal(fk->out.status, ENGINE_CANCELLED);
    assert_non_null(fk_find(&fk->dst, REPO, b.index));
    assert_int_equal(fk_tag_puts(fk), 0);
    assert_int_equal(fk->out.n.tags_written, 0);
    fk_free(fk);
}

/* Each tag's event is recorded before the lease is asked about and its PUT sent, and
 * told after the PUT; tags found right are told as such, once per job, so a write whose
 * worker died before telling it is told by the next. Not held: recorded, never told. */
static void test_engine__tag_events_recorded_ahead(void **state)
{
    (void)state;
    struct fk *fk = fk_new();
    struct bb b;
    bb_load(fk, &b);
    char line[160];
    fk_run(fk, bb_tags, BB_NTAGS);
    assert_int_equal(fk->out.status, ENGINE_DONE);
    int held = fk_pos(fk, "HELD?");
    assert_true(held >= 0);
    assert_int_equal(fk_count(fk, "HELD?"), 1);
    for (size_t i = 0; i < BB_NTAGS; i++) {
        snprintf(line, sizeof(line), "INTENT %s:%s %s -", REPO, bb_tags[i], b.index);
        int intent = fk_pos(fk, line);
        assert_true(intent >= 0 && intent < held);
        snprintf(line, sizeof(line), "TOLD %s:%s %s -", REPO, bb_tags[i], b.index);
        assert_true(fk_pos(fk, line) > fk_line(fk, "PUT", REPO, bb_tags[i]));
        assert_true(fk_line(fk, "PUT", REPO, bb_tags[i]) > held);
    }
    assert_int_equal(fk_count(fk, "INTENT "), BB_NTAGS);
    assert_int_equal(fk_count(fk, "TOLD "), BB_NTAGS);
    assert_int_equal(fk_count(fk, "CURRENT "), 0);

    /* Run again: every tag is right, each told once as such; nothing recorded ahead. */
    fk_run(fk, bb_tags, BB_NTAGS);
    assert_int_equal(fk->out.n.tags_unchanged, BB_NTAGS);
    assert_int_equal(fk_count(fk, "CURRENT "), BB_NTAGS);
    for (size_t i = 0; i < BB_NTAGS; i++) {
        snprintf(line, sizeof(line), "CURRENT %s:%s %s", REPO, bb_tags[i], b.index);
        assert_true(fk_pos(fk, line) >= 0);
    }
    assert_int_equal(fk_count(fk, "INTENT "), 0);
    assert_int_equal(fk_count(fk, "TOLD "), 0);
    fk_free(fk);

    fk = fk_new();
    bb_load(fk, &b);
    fk->held = 0;
    fk_run(fk, bb_tags, BB_NTAGS);
    assert_int_equal(fk->out.status, ENGINE_CANCELLED);
    assert_int_equal(fk_count(fk, "INTENT "), BB_NTAGS);
    assert_int_equal(fk_count(fk, "TOLD "), 0);
    fk_free(fk);
}

/* Every manifest fetched upstream is kept by the time its GET's answer has been taken (a
 * worker killed from then on costs no second GET), until it is on the target; what a
 * cut-short attempt fetched, the next one takes from the fleet instead of upstream. */
static void test_engine__fetched_manifests_kept_until_pushed(void **state)
{
    (void)state;
    struct fk *fk = fk_new();
    struct bb b;
    bb_load(fk, &b);
    fk_fault_add(fk, FK_COPY, b.only_arm64, REG_DIGEST_MISMATCH);
    fk_run(fk, bb_tags, BB_NTAGS);
    assert_int_equal(fk->out.status, ENGINE_RETRY);
    assert_int_equal(fk_count(fk, "GET "), 3);
    assert_int_equal(fk->unkept, 0);
    assert_true(fk_line(fk, "KEEP", b.index, "") < fk_line(fk, "GET", b.amd64, ""));
    /* The amd64 image reached the target: let go once it was there. The rest waits. */
    assert_true(fk_line(fk, "DROP", b.amd64, "") > fk_line(fk, "PUT", REPO, b.amd64));
    assert_int_equal(fk->kept.n, 2);
    assert_non_null(fk_body(&fk->kept, b.index));
    assert_non_null(fk_body(&fk->kept, b.arm64));

    fk->nfaults = 0;
    fk_run(fk, bb_tags, BB_NTAGS);
    assert_int_equal(fk->out.status, ENGINE_DONE);
    assert_int_equal(fk_count(fk, "GET "), 0);
    assert_int_equal(fk->out.n.upstream_manifest_gets, 0);
    assert_int_equal(fk_tag_puts(fk), BB_NTAGS);
    assert_int_equal(fk->kept.n, 0);
    fk_free(fk);
}

/* A registry that does not answer, or answers 5xx, is an outage, named by the job. */
static void test_engine__unavailable_registry(void **state)
{
    (void)state;
    static const struct {
        enum fk_op op;
        int what; /* 0: a tag, 1: the arm64 manifest */
        int registry;
    } cases[] = {
        {FK_HEAD_UP, 0, ENGINE_UPSTREAM},
        {FK_GET_UP, 1, ENGINE_UPSTREAM},
        {FK_PUT, 1, ENGINE_TARGET},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        for (int cls = 0; cls < 2; cls++) {
            struct fk *fk = fk_new();
            struct bb b;
            bb_load(fk, &b);
            fk_fault_add(fk, cases[k].op, cases[k].what ? b.arm64 : "1",
                         cls ? REG_SERVER : REG_NETWORK);
            fk_run(fk, bb_tags, BB_NTAGS);
            assert_int_equal(fk->out.status, ENGINE_UNAVAILABLE);
            assert_int_equal(fk->out.unavailable, cases[k].registry);
            assert_int_equal(fk_tag_puts(fk), 0);
            fk_free(fk);
        }
    }
}

/* -- an index of six images, more than one window of children ------------------------- */

#define WIDE_N 6

struct wide {
    char index[DIGEST_STR_SIZE];
    char kids[WIDE_N][DIGEST_STR_SIZE];
};

static void wide_load(struct fk *fk, struct wide *w)
{
    char body[4096] = "{\"schemaVersion\":2,\"mediaType\":\"" REG_MT_OCI_INDEX "\",\"manifests\":[";
    for (int i = 0; i < WIDE_N; i++) {
        char text[32], cfg[DIGEST_STR_SIZE], l1[DIGEST_STR_SIZE], l2[DIGEST_STR_SIZE];
        snprintf(text, sizeof(text), "config %d", i);
        digest_of(text, strlen(text), cfg);
        snprintf(text, sizeof(text), "layer %d", i);
        digest_of(text, strlen(text), l1);
        snprintf(text, sizeof(text), "top %d", i);
        digest_of(text, strlen(text), l2);
        fk_image(fk, cfg, l1, l2, w->kids[i]);
        snprintf(body + strlen(body), sizeof(body) - strlen(body),
                 "%s{\"mediaType\":\"" REG_MT_OCI_MANIFEST "\",\"digest\":\"%s\",\"size\":%zu,"
                 "\"platform\":{\"architecture\":\"arch%d\",\"os\":\"linux\"}}",
                 i ? "," : "", w->kids[i], fk_body(&fk->bodies, w->kids[i])->len, i);
    }
    snprintf(body + strlen(body), sizeof(body) - strlen(body), "]}");
    fk_upstream_add(fk, REG_MT_OCI_INDEX, body, w->index);
    fk_set(&fk->up_tags, REPO, "wide", w->index);
}

/* The first window (4 children) is offered, the owner copies from the last child
 * backwards; a child an assistant held and copied is not copied again, one it let go
 * of uncopied the owner copies; the index after every child, the tag last. */
static void test_engine__children_offered_owner_from_the_end(void **state)
{
    (void)state;
    for (int ok = 0; ok < 2; ok++) {
        struct fk *fk = fk_new();
        struct wide w;
        wide_load(fk, &w);
        snprintf(fk->assisted, sizeof(fk->assisted), "%s", w.kids[1]);
        fk_set(&fk->locks, "", w.kids[1], w.kids[1]); /* an assistant has it */
        fk->assist_polls = 3;
        fk->assist_ok = ok;
        const char *tags[] = {"wide"};
        fk_run(fk, tags, 1);
        assert_int_equal(fk->out.status, ENGINE_DONE);
        char offer[160] = "OFFER";
        for (int i = 0; i < 4; i++)
            snprintf(offer + strlen(offer), sizeof(offer) - strlen(offer), " %.12s",
                     w.kids[i] + 7);
        assert_int_equal(fk_count(fk, "OFFER"), 1);
        assert_true(fk_pos(fk, offer) >= 0);
        assert_true(fk_line(fk, "GET", w.kids[5], "") < fk_line(fk, "GET", w.kids[0], ""));
        assert_int_equal(fk->assist_polls, 0); /* it waited for the assistant */
        assert_int_equal(fk_count_of(fk, "GET", w.kids[1]), !ok);
        assert_int_equal(fk_line(fk, "PUT", REPO, w.kids[1]) >= 0, !ok);
        assert_int_equal(fk->out.n.upstream_manifest_gets, WIDE_N + 1 - ok);
        assert_int_equal(fk->out.n.manifests_pushed, WIDE_N + 1 - ok);
        assert_int_equal(fk->refused, 0);
        int put_index = fk_line(fk, "PUT", REPO, w.index);
        for (int i = 0; i < WIDE_N; i++)
            assert_true(i == 1 || fk_line(fk, "PUT", REPO, w.kids[i]) < put_index);
        assert_true(fk_line(fk, "PUT", REPO, "wide") > put_index);
        assert_string_equal(bb_tag_of(fk, "wide"), w.index);
        fk_free(fk);
    }
}

static void fk_assist_done(const struct engine_outcome *out, void *arg)
{
    struct fk *fk = arg;
    fk->present_at_done = fk->present.n;
    fk_done(out, arg);
}

/* An assistant copies the children it took, skips one present and one locked elsewhere,
 * writes no tag, and lists its copies present (and unlocks them) only after its done. */
static void test_engine__assist_copies_children_marks_after_done(void **state)
{
    (void)state;
    struct fk *fk = fk_new();
    struct wide w;
    wide_load(fk, &w);
    fk_set(&fk->locks, "", w.kids[2], w.kids[2]); /* the owner copies it */
    fk_set(&fk->dst, REPO, w.kids[3], w.kids[3]);
    fk_set(&fk->present, REPO, w.kids[3], w.kids[3]);
    char run[] = "r1", key[] = "wide", up[] = UP_URL, dst[] = DST_URL, repo[] = REPO;
    char *kids[] = {w.kids[0], w.kids[1], w.kids[2], w.kids[3]};
    struct job j = {
        .version = JOB_VERSION, .run = run, .key = key, .upstream = up, .source_repo = repo,
        .target = dst, .target_repo = repo, .digests = kids, .ndigests = 4,
        .policy = JOB_POLICY_ALL, .reason = JOB_REASON_CHANGED,
    };
    engine_assist(fk->en, &j, fk_assist_done, fk);
    for (int i = 0; !fk->finished; i++) {
        if (i > 100000)
            fail_msg("the engine never reported the assist");
        ev_run(fk->loop, EVRUN_ONCE);
    }
    assert_int_equal(fk->out.status, ENGINE_DONE);
    assert_int_equal(fk_count(fk, "GET "), 2);
    assert_int_equal(fk_count_of(fk, "GET", w.kids[0]), 1);
    assert_int_equal(fk_count_of(fk, "GET", w.kids[1]), 1);
    assert_int_equal(fk->out.n.upstream_manifest_gets, 2);
    assert_int_equal(fk->out.n.manifests_pushed, 2);
    assert_int_equal(fk->out.n.blobs_copied, 6);
    assert_int_equal(fk->out.n.tags_total, 0);
    assert_int_equal(fk_tag_puts(fk), 0);
    assert_int_equal(fk->settled, fk->granted);
    /* At done: the blobs listed, kid 3 (present before), not the two copied yet ... */
    assert_int_equal(fk->present_at_done, 6 + 1);
    /* ... after it: those too, and only the owner's lock of kid 2 is left. */
    assert_non_null(fk_find(&fk->present, REPO, w.kids[0]));
    assert_non_null(fk_find(&fk->present, REPO, w.kids[1]));
    assert_int_equal(fk->locks.n, 1);
    assert_non_null(fk_find(&fk->locks, NULL, w.kids[2]));
    fk_unset(&fk->locks, "", w.kids[2]);
    fk_free(fk);
}

int main(void)
{
    /* No docker config.json of the machine's: the fake registries take no credentials. */
    setenv("DOCKER_CONFIG", "/nonexistent/hubsync-test-engine", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine__status_names),
        cmocka_unit_test(test_engine__counters_by_name),
        cmocka_unit_test(test_engine__status_of_registry_answers),
        cmocka_unit_test(test_engine__each_digest_once_children_first_tags_last),
        cmocka_unit_test(test_engine__pinned_digest_copied_untagged),
        cmocka_unit_test(test_engine__referrers_tagged_first),
        cmocka_unit_test(test_engine__api_referrers_copied_first),
        cmocka_unit_test(test_engine__referrers_pages_reserved_each),
        cmocka_unit_test(test_engine__referrers_of_referrers),
        cmocka_unit_test(test_engine__failed_child_writes_no_tag),
        cmocka_unit_test(test_engine__budget_denied),
        cmocka_unit_test(test_engine__budget_denied_untold_is_throttled),
        cmocka_unit_test(test_engine__mount_preferred_over_copy),
        cmocka_unit_test(test_engine__stale_present_forgotten_and_copied),
        cmocka_unit_test(test_engine__not_held_writes_no_tag),
        cmocka_unit_test(test_engine__tag_events_recorded_ahead),
        cmocka_unit_test(test_engine__unavailable_registry),
        cmocka_unit_test(test_engine__fetched_manifests_kept_until_pushed),
        cmocka_unit_test(test_engine__children_offered_owner_from_the_end),
        cmocka_unit_test(test_engine__assist_copies_children_marks_after_done),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
