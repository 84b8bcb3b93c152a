/* engine: see engine.h.
 *
 * A job runs in phases. HEADS: every tag HEADed upstream and on the target.
 * VERIFY (rewrite policy only): the target's rewritten indexes are read to
 * learn which upstream digest they were made from. ROOTS: one node per
 * upstream digest still needed; a node ensures one manifest or blob on the
 * target, recursively for an index's children and an image's blobs, and
 * roots then write their tags (once the job's holder says it still holds the
 * job). Every node and every stand-alone request holds the job (ej->pending);
 * the phase advances when the count drops to zero. */
#include "engine.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "creds.h"
#include "digest.h"
#include "log.h"
#include "manifest.h"
#include "reg_blob.h"
#include "reg_parse.h"
#include "strv.h"
#include "tagfilter.h"
#include "xalloc.h"

/* A 429 without Retry-After: wait this long before the job comes back. */
#define ENGINE_429_WAIT_MS 300000L

/* The names are the run record's (RQ_RUN_COUNTERS), each a field of struct
 * engine_counters: a name that is not one does not compile. */
const char *const *const engine_counter_names = rq_run_counter_names;

long long engine_counter_get(const struct engine_counters *c, int i)
{
#define ENGINE_COUNTER_VALUE(name) c->name,
    const long long v[ENGINE_NCOUNTERS] = {RQ_RUN_COUNTERS(ENGINE_COUNTER_VALUE)};
#undef ENGINE_COUNTER_VALUE
    return i >= 0 && i < ENGINE_NCOUNTERS ? v[i] : 0;
}

const char *engine_status_name(enum engine_status s)
{
    /* In the order of enum engine_status. */
    static const char *const names[] = {"done",   "retry",     "deferred",   "throttled",
                                        "failed", "cancelled", "unavailable"};
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

enum role { ROLE_UPSTREAM, ROLE_TARGET };

/* A registry as one role; its credentials come from the environment or
 * config.json once, or from a credential helper asked again when its answer
 * is older than helper_ttl_s or was refused. */
struct regent {
    struct engine *en;
    char *url;
    enum role role;
    struct reg_registry *r;
    char *helper;              /* docker-credential-<helper>, or NULL */
    double fresh_until;        /* ev_time() until which its answer is used */
    struct creds_ask *asking;  /* the helper is running */
    struct engine_job **waiting; /* jobs waiting for its answer */
    size_t nwaiting;
};

struct node;

struct engine {
    struct ev_loop *loop;
    struct reg_client *client;
    struct engine_ops ops;
    struct engine_reg_ops reg;
    struct engine_opts opts;  /* upstream and target point at the copies below */
    char *upstream, *target;
    struct regent **regs;
    size_t nregs;
    struct engine_account *accounts; /* Docker Hub's pooled accounts (names borrowed
                                      * from opts.sources) */
    size_t naccounts;
    int jobs;
    int blobs_active;
    struct node *blob_head, *blob_tail; /* nodes waiting for a blob copy slot */
};

enum phase { PH_CREDS, PH_HEADS, PH_VERIFY, PH_REFERRERS, PH_ROOTS };

struct tagst {
    char *tag;
    char up[DIGEST_STR_SIZE];  /* "" until known */
    char *up_type;
    char dst[DIGEST_STR_SIZE]; /* "" when the target lacks the tag */
    int write;                 /* the tag must be (re)written */
    int pinned;                /* a pinned digest (the "tag" is it): copied, never tagged */
    int referrer;              /* a referrer's tag: written before any other tag */
    int depth;                 /* 0: the job's own; a referrer: its subject's + 1 */
};

struct engine_job {
    struct engine *en;
    struct job job;
    struct reg_registry *up, *dst;
    engine_done_fn done;
    void *arg;
    struct engine_outcome out;
    enum phase phase;
    int pending;
    int stop_gets; /* an error: no new counted GET; what is paid for completes */
    int cancelled;
    struct tagst *tags;
    size_t ntags;
    int round;          /* PH_REFERRERS: the depth whose referrers are looked for */
    int no_referrers_api; /* the source answered 404: it has no referrers API */
    /* Roots go in waves, deepest referrers first: a wave starts once the one before
     * has its manifests and tags on the target; a referrer that failed stops them,
     * so nothing is written that refers to what is missing, nor any tag of the job. */
    int wave;           /* the depth of the roots running */
    int wave_open;      /* its roots not through root_held, and its tag PUTs in flight */
    int ref_failed;
    /* engine_assist: children of another worker's job, no tags; the present marks and
     * unlocks of those children wait for done (ej_finish). */
    int assist;
    struct strv later_marks, later_unlocks;
};

/* A child of an index not started yet: an index with children offered to other workers
 * starts its own from the last backwards, a few at a time. */
struct kid {
    char digest[DIGEST_STR_SIZE];
    long long size;
    char *media_type;
    int offered;
};

struct node {
    struct engine_job *ej;
    struct node *parent;
    struct node *next_wait; /* blob slot queue */
    int is_blob;
    int is_root;
    int need_bytes;  /* roots: the bytes are needed to write the tags */
    int rewrite;     /* root under the rewrite policy */
    int locked;
    int failed;
    int children_left;
    int verify;       /* ask the target, never the present set (a re-check) */
    int trusted;      /* settled on the present set's word alone */
    int trusted_kids; /* children that did */
    int rechecked;    /* the children were asked about again after a refused PUT */
    int offered;      /* a child offered to other workers: an assistant may hold its lock */
    int holder;       /* engine_assist: the children's parent, no manifest of its own */
    struct kid *kids; /* children not started yet, the last first (kids[nkids - 1]) */
    size_t nkids;
    int kids_active;  /* those started and not settled */
    int starting;     /* node_kids_next is starting some */
    char digest[DIGEST_STR_SIZE];
    char root_up[DIGEST_STR_SIZE]; /* roots: the upstream digest whose tags they write */
    long long size;
    char *media_type;
    char *body;
    size_t body_len;
    char *mount_from;
    void *grant;     /* budget reservation of the upstream GET in flight */
    char kept[DIGEST_STR_SIZE]; /* the fleet keeps body under this digest until it is
                                 * pushed: "" if it came from the target */
    ev_timer poll;
    double waited;
};

/* ---- jobs: errors, holds, completion ---------------------------------------- */

/* A job that met a registry outage and a fault of its own counts the fault. */
static int status_rank(enum engine_status s)
{
    switch (s) {
    case ENGINE_CANCELLED: return 6;
    case ENGINE_FAILED: return 5;
    case ENGINE_DEFERRED: return 4;
    case ENGINE_THROTTLED: return 3;
    case ENGINE_RETRY: return 2;
    case ENGINE_UNAVAILABLE: return 1;
    default: return 0;
    }
}

static void ej_error(struct engine_job *ej, enum engine_status st, long wait_ms, const char *fmt,
                     ...) __attribute__((format(printf, 4, 5)));

/* Record a problem; the worst one decides the outcome. Nothing new starts,
 * except for a tag missing upstream, which leaves the other tags going. */
static void ej_error(struct engine_job *ej, enum engine_status st, long wait_ms, const char *fmt,
                     ...)
{
    if ((st == ENGINE_DEFERRED || st == ENGINE_THROTTLED) && wait_ms > ej->out.wait_ms)
        ej->out.wait_ms = wait_ms;
    if (status_rank(st) <= status_rank(ej->out.status))
        return;
    ej->out.status = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ej->out.msg, sizeof(ej->out.msg), fmt, ap);
    va_end(ap);
}

enum engine_status engine_status_of(const struct reg_result *res, long *wait_ms)
{
    *wait_ms = 0;
    switch (res->cls) {
    case REG_OK:
        return ENGINE_DONE;
    case REG_RATE_LIMITED:
        /* Hub's pull limit answers 429 without Retry-After; its abuse limit (and
         * other registries) with one: that is a pause, not a spent budget. */
        if (res->retry_after > 0) {
            *wait_ms = res->retry_after * 1000L;
            return ENGINE_THROTTLED;
        }
        *wait_ms = ENGINE_429_WAIT_MS;
        return ENGINE_DEFERRED;
    case REG_NETWORK:
    case REG_SERVER:
        return ENGINE_UNAVAILABLE;
    case REG_DIGEST_MISMATCH:
        /* Maybe a passing corruption, but a proxy that changes bytes does it every
         * time: bounded by attempts like a refusal, not waited out like an outage. */
        return ENGINE_RETRY;
    default:
        return ENGINE_FAILED;
    }
}

/* Is the job's upstream Docker Hub (the worker's upstream), whose 429 without
 * Retry-After is its spent pull budget? */
static int ej_from_hub(const struct engine_job *ej)
{
    return reg_parse_same_registry(ej->job.upstream, ej->en->upstream);
}

/* Map a registry failure to what the queue should do with the job; registry
 * (ENGINE_UPSTREAM, ENGINE_TARGET, or 0 when it may be either) answered res. */
static void ej_reg_error(struct engine_job *ej, int registry, const struct reg_result *res)
{
    long wait_ms;
    enum engine_status st = engine_status_of(res, &wait_ms);
    /* Another registry's 429 spends no pull budget: it throttles that registry's
     * jobs alone, for its Retry-After or else a backoff growing with the job's
     * waits (wait_ms 0). */
    if (res->cls == REG_RATE_LIMITED && (registry == ENGINE_TARGET || !ej_from_hub(ej))) {
        st = ENGINE_THROTTLED;
        wait_ms = res->retry_after > 0 ? res->retry_after * 1000L : 0;
    }
    ej->stop_gets = 1;
    if (st == ENGINE_UNAVAILABLE)
        ej->out.unavailable |= registry;
    ej_error(ej, st, wait_ms, "%s", res->msg);
}

static void ej_advance(struct engine_job *ej);

static void ej_hold(struct engine_job *ej)
{
    ej->pending++;
}

/* Must be the last use of ej by the caller: it may finish and free the job. */
static void ej_release(struct engine_job *ej)
{
    if (--ej->pending == 0)
        ej_advance(ej);
}

static void ej_destroy(struct engine_job *ej)
{
    for (size_t i = 0; i < ej->ntags; i++) {
        free(ej->tags[i].tag);
        free(ej->tags[i].up_type);
    }
    free(ej->tags);
    job_free(&ej->job);
    strv_free(&ej->later_marks);
    strv_free(&ej->later_unlocks);
    free(ej);
}

static void ej_finish(struct engine_job *ej)
{
    struct engine_outcome out = ej->out;
    engine_done_fn done = ej->done;
    void *arg = ej->arg;
    struct engine *en = ej->en;
    /* An assistant's marks and unlocks go after what done sends (its counters): the job
     * waiting for those children sees the counters once it sees them present. */
    struct strv marks = ej->later_marks, unlocks = ej->later_unlocks;
    char *target = ej->assist ? xstrdup(ej->job.target) : NULL;
    char *repo = ej->assist ? xstrdup(ej->job.target_repo) : NULL;
    ej->later_marks = ej->later_unlocks = (struct strv)STRV_INIT;
    if (ej->cancelled) {
        out.status = ENGINE_CANCELLED;
        snprintf(out.msg, sizeof(out.msg), "cancelled");
    }
    en->jobs--;
    ej_destroy(ej);
    done(&out, arg);
    for (size_t i = 0; i < marks.n; i++)
        en->ops.mark_present(en->ops.ctx, target, repo, marks.v[i], 0);
    for (size_t i = 0; i < unlocks.n; i++)
        en->ops.unlock(en->ops.ctx, target, unlocks.v[i]);
    strv_free(&marks);
    strv_free(&unlocks);
    free(target);
    free(repo);
}

/* digest (a blob if `blob`) is in the job's target repository now; an assistant's
 * manifests are said so once done has run. */
static void ej_mark_present(struct engine_job *ej, const char *digest, int blob)
{
    if (ej->assist && !blob)
        strv_push(&ej->later_marks, xstrdup(digest));
    else
        ej->en->ops.mark_present(ej->en->ops.ctx, ej->job.target, ej->job.target_repo, digest,
                                 blob);
}

/* The copy lock of digest (a blob if `blob`) is released; an assistant's manifests' once
 * done has run. */
static void ej_unlock(struct engine_job *ej, const char *digest, int blob)
{
    if (ej->assist && !blob)
        strv_push(&ej->later_unlocks, xstrdup(digest));
    else
        ej->en->ops.unlock(ej->en->ops.ctx, ej->job.target, digest);
}

/* ---- registries ------------------------------------------------------------------ */

static const char *role_name(enum role role)
{
    return role == ROLE_UPSTREAM ? "upstream" : "target";
}

/* The sync file's registry at url (not docker.io: that is the upstream), or NULL. */
static const struct syncfile_registry *engine_source(const struct engine *en, const char *url)
{
    const struct syncfile *sf = en->opts.sources;
    for (size_t i = 0; sf && i < sf->nregs; i++)
        if (sf->regs[i].url && reg_parse_same_registry(url, sf->regs[i].url))
            return &sf->regs[i];
    return NULL;
}

static struct regent *engine_registry(struct engine *en, const char *url, enum role role,
                                      struct err *e)
{
    for (size_t i = 0; i < en->nregs; i++)
        if (en->regs[i]->role == role && strcmp(en->regs[i]->url, url) == 0)
            return en->regs[i];
    struct creds cr = {NULL, NULL};
    char *helper = NULL;
    const struct syncfile_registry *src =
        role == ROLE_UPSTREAM && !reg_parse_same_registry(url, en->upstream)
            ? engine_source(en, url)
            : NULL;
    /* A sync file's registry: its own account's environment, bound to its URL;
     * none: docker's config. */
    int found = !src ? creds_find(role == ROLE_UPSTREAM ? "HUBSYNC_UPSTREAM" : "HUBSYNC_TARGET",
                                  role == ROLE_UPSTREAM ? en->upstream : en->target, url, &cr,
                                  &helper, e)
                     : creds_find(src->accounts.n ? src->accounts.v[0] : NULL, src->url, url,
                                  &cr, &helper, e);
    if (found < 0)
        return NULL;
    struct reg_registry *r = reg_registry_new(en->client, url, found == 1 ? &cr : NULL, e);
    creds_clear(&cr);
    if (!r) {
        free(helper);
        return NULL;
    }
    struct regent *re = xcalloc(1, sizeof(*re));
    *re = (struct regent){.en = en, .url = xstrdup(url), .role = role, .r = r, .helper = helper};
    en->regs = xrealloc(en->regs, (en->nregs + 1) * sizeof(*en->regs));
    en->regs[en->nregs++] = re;
    return re;
}

static void regent_answer(int rc, const struct creds *cr, const struct err *e, void *arg)
{
    struct regent *re = arg;
    re->asking = NULL;
    if (rc >= 0) {
        reg_registry_set_creds(re->r, rc == 1 ? cr : NULL);
        re->fresh_until = ev_time() + re->en->opts.helper_ttl_s;
    }
    /* Detached first: a job finishing here may start the next one on re. */
    struct engine_job **waiting = re->waiting;
    size_t n = re->nwaiting;
    re->waiting = NULL;
    re->nwaiting = 0;
    for (size_t i = 0; i < n; i++) {
        if (rc < 0) {
            waiting[i]->stop_gets = 1;
            ej_error(waiting[i], ENGINE_FAILED, 0, "%s %s: %s", role_name(re->role), re->url,
                     e->msg);
        }
        ej_release(waiting[i]);
    }
    free(waiting);
}

/* Hold ej until re has credentials it may use: a helper's answer is asked
 * (from the loop, never blocking it) when there is none yet, it is older
 * than helper_ttl_s, or a 401 refused it. */
static void regent_ready(struct regent *re, struct engine_job *ej)
{
    if (!re->helper)
        return;
    if (!re->asking && ev_time() < re->fresh_until && !reg_registry_creds_refused(re->r))
        return;
    if (!re->asking)
        re->asking = creds_ask_start(re->en->loop, re->helper, re->url, regent_answer, re);
    re->waiting = xrealloc(re->waiting, (re->nwaiting + 1) * sizeof(*re->waiting));
    re->waiting[re->nwaiting++] = ej;
    ej_hold(ej);
}

/* ---- nodes: one manifest or blob ensured on the target ---------------------------- */

static void node_start(struct node *n);
static void node_lock(struct node *n);
static void node_children_done(struct node *n);
static void node_kids_next(struct node *p);
static void root_done(struct node *n);
static void blob_slot_next(struct engine *en);

static struct node *node_new(struct engine_job *ej, struct node *parent, int is_blob,
                             const char *digest, long long size, const char *media_type)
{
    struct node *n = xcalloc(1, sizeof(*n));
    n->ej = ej;
    n->parent = parent;
    n->is_blob = is_blob;
    snprintf(n->digest, sizeof(n->digest), "%s", digest);
    n->size = size;
    n->media_type = media_type ? xstrdup(media_type) : NULL;
    if (parent)
        parent->children_left++;
    ej_hold(ej);
    return n;
}

static void node_destroy(struct node *n)
{
    for (size_t i = 0; i < n->nkids; i++)
        free(n->kids[i].media_type);
    free(n->kids);
    free(n->media_type);
    free(n->body);
    free(n->mount_from);
    free(n);
}

/* The node is settled (ok or not): release its lock, tell its parent. */
static void node_finish(struct node *n, int ok)
{
    struct engine_job *ej = n->ej;
    log_debug("job=%s %s %s %s pending=%d", ej->job.key, n->is_blob ? "blob" : "manifest",
              n->digest, ok ? "ok" : "failed", ej->pending);
    if (n->locked)
        ej_unlock(ej, n->digest, n->is_blob);
    n->locked = 0;
    n->failed = !ok;
    if (n->is_root) {
        root_done(n);
    } else {
        struct node *p = n->parent;
        if (!ok)
            p->failed = 1;
        else if (n->trusted)
            p->trusted_kids++;
        node_destroy(n);
        if (p->kids_active)
            p->kids_active--;
        if (p->kids)
            node_kids_next(p);
        if (--p->children_left == 0)
            node_children_done(p);
    }
    ej_release(ej);
}

static const char *node_repo(const struct node *n)
{
    return n->ej->job.target_repo;
}

static void node_fetch_upstream(struct node *n);
static void node_copy_blob(struct node *n);

/* The target lacks it: copy it, under the lock if this node holds it already. */
static void node_copy(struct node *n)
{
    if (n->ej->cancelled)
        node_finish(n, 0);
    else if (!n->locked)
        node_lock(n);
    else if (n->is_blob)
        node_copy_blob(n);
    else
        node_fetch_upstream(n);
}

/* The present set listed what the target lacks (wiped, restored, garbage-
 * collected): it was a stale hint, forget it. */
static void node_forget(struct node *n)
{
    struct engine_job *ej = n->ej;
    log_debug("job=%s %s %s: listed present in %s, but the target lacks it", ej->job.key,
              n->is_blob ? "blob" : "manifest", n->digest, node_repo(n));
    ej->en->ops.forget(ej->en->ops.ctx, ej->job.target, node_repo(n), n->digest);
    n->trusted = 0;
}

static void node_got_target_body(struct reg_result *res, void *arg)
{
    struct node *n = arg;
    if (res->cls == REG_OK) {
        n->body = reg_result_take_body(res, &n->body_len);
        free(n->media_type);
        n->media_type = res->content_type ? xstrdup(res->content_type) : NULL;
        node_finish(n, 1);
    } else if (res->cls == REG_NOT_FOUND) {
        node_forget(n);
        node_copy(n);
    } else {
        ej_reg_error(n->ej, ENGINE_TARGET, res);
        node_finish(n, 0);
    }
}

/* The target has it. */
static void node_have(struct node *n)
{
    struct engine_job *ej = n->ej;
    if (n->is_blob) {
        ej->out.n.blobs_skipped++;
        node_finish(n, 1);
    } else if (n->need_bytes) {
        ej->en->reg.get_manifest(ej->dst, node_repo(n), n->digest, node_got_target_body, n);
    } else {
        node_finish(n, 1);
    }
}

static void node_target_head(struct reg_result *res, void *arg)
{
    struct node *n = arg;
    struct engine_job *ej = n->ej;
    if (res->cls == REG_OK) {
        ej_mark_present(ej, n->digest, n->is_blob);
        node_have(n);
    } else if (res->cls == REG_NOT_FOUND) {
        if (n->verify)
            node_forget(n); /* the set may list it: that is why it is asked again */
        node_copy(n);
    } else {
        ej_reg_error(ej, ENGINE_TARGET, res);
        node_finish(n, 0);
    }
}

/* Ask the target itself. */
static void node_head_target(struct node *n)
{
    struct engine_job *ej = n->ej;
    if (ej->cancelled)
        node_finish(n, 0);
    else if (n->is_blob)
        ej->en->reg.head_blob(ej->dst, node_repo(n), n->digest, node_target_head, n);
    else
        ej->en->reg.head_manifest(ej->dst, node_repo(n), n->digest, node_target_head, n);
}

static void node_present(int yes, void *arg)
{
    struct node *n = arg;
    if (yes) {
        n->trusted = 1;
        node_have(n);
    } else {
        node_head_target(n);
    }
}

static void node_start(struct node *n)
{
    struct engine_job *ej = n->ej;
    if (ej->cancelled) {
        node_finish(n, 0);
        return;
    }
    if (n->rewrite) {
        /* The target holds a rewritten index, never the upstream one. */
        node_lock(n);
        return;
    }
    if (n->verify) {
        node_head_target(n);
        return;
    }
    ej->en->ops.present(ej->en->ops.ctx, ej->job.target, node_repo(n), n->digest, node_present, n);
}

/* -- waiting for another worker's lock: poll the present set, then try again -- */

static void node_poll_present(int yes, void *arg)
{
    struct node *n = arg;
    if (yes && !n->rewrite && !n->verify) {
        n->trusted = 1;
        node_have(n);
    } else if (n->ej->cancelled) {
        node_finish(n, 0);
    } else {
        node_lock(n);
    }
}

static void node_poll_fire(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct node *n = w->data;
    struct engine_job *ej = n->ej;
    ej->en->ops.present(ej->en->ops.ctx, ej->job.target, node_repo(n), n->digest,
                        node_poll_present, n);
}

static void node_present_locked(int yes, void *arg)
{
    struct node *n = arg;
    if (yes) {
        n->trusted = 1;
        node_have(n); /* node_finish releases the lock */
    } else {
        node_copy(n);
    }
}

static void node_locked(int yes, void *arg)
{
    struct node *n = arg;
    struct engine_job *ej = n->ej;
    struct engine *en = ej->en;
    if (ej->cancelled) {
        if (yes)
            ej_unlock(ej, n->digest, n->is_blob);
        node_finish(n, 0);
        return;
    }
    if (!yes && n->parent && n->parent->holder) {
        /* An assistant leaves a child another worker copies to it. */
        log_debug("job=%s assist: %s locked elsewhere, left to its holder", ej->job.key,
                  n->digest);
        node_finish(n, 1);
        return;
    }
    if (!yes) {
        /* An offered child is likely an assistant's: its copy is looked for sooner. */
        double poll = n->offered ? en->opts.child_poll_s : en->opts.lock_poll_s;
        if (n->waited >= en->opts.lock_wait_max_s) {
            ej->stop_gets = 1;
            ej_error(ej, ENGINE_RETRY, 0, "%s@%s: still locked by another worker after %.0fs",
                     node_repo(n), n->digest, n->waited);
            node_finish(n, 0);
            return;
        }
        n->waited += poll;
        ev_timer_init(&n->poll, node_poll_fire, poll, 0.);
        n->poll.data = n;
        ev_timer_start(en->loop, &n->poll);
        return;
    }
    n->locked = 1;
    if (n->rewrite)
        node_fetch_upstream(n);
    else if (n->verify) /* the previous holder may have copied it: the target says */
        node_head_target(n);
    else /* the previous holder may have finished between our HEAD and the lock */
        en->ops.present(en->ops.ctx, ej->job.target, node_repo(n), n->digest, node_present_locked,
                        n);
}

static void node_lock(struct node *n)
{
    struct engine_job *ej = n->ej;
    ej->en->ops.lock(ej->en->ops.ctx, ej->job.target, n->digest, node_locked, n);
}

/* -- manifests: one counted GET upstream, children, then the PUT -- */

static void node_add_children(struct node *n, const struct manifest *m, int verify);

/* A PUT the target refused because it lacks something the manifest
 * references (MANIFEST_BLOB_UNKNOWN, BLOB_UNKNOWN, MANIFEST_UNKNOWN: a 400 or
 * 404 depending on the registry) after some children were taken from the
 * present set: the set was stale. Ask the target about every child, copy
 * what it lacks, PUT again; once. 1 if the re-check started. */
static int node_recheck(struct node *n, const struct reg_result *res)
{
    struct engine_job *ej = n->ej;
    struct manifest m;
    struct err e;
    if (n->rechecked || n->trusted_kids == 0 || ej->cancelled ||
        (res->cls != REG_PROTOCOL && res->cls != REG_NOT_FOUND) ||
        manifest_parse(&m, n->body, n->body_len, n->media_type, &e) < 0)
        return 0;
    log_info("job=%s manifest %s refused (%s) after %d children were taken as present: "
             "asking the target about each", ej->job.key, n->digest, res->msg, n->trusted_kids);
    n->rechecked = 1;
    n->trusted_kids = 0;
    node_add_children(n, &m, 1);
    manifest_free(&m);
    return 1;
}

static void node_put_done(struct reg_result *res, void *arg)
{
    struct node *n = arg;
    struct engine_job *ej = n->ej;
    if (res->cls != REG_OK) {
        if (node_recheck(n, res))
            return;
        ej_reg_error(ej, ENGINE_TARGET, res);
        node_finish(n, 0);
        return;
    }
    ej->out.n.manifests_pushed++;
    if (n->kept[0])
        ej->en->ops.manifest_drop(ej->en->ops.ctx, n->kept);
    n->kept[0] = '\0';
    ej_mark_present(ej, n->digest, 0);
    node_finish(n, 1);
}

static void node_push(struct node *n)
{
    struct engine_job *ej = n->ej;
    if (ej->cancelled) {
        node_finish(n, 0);
        return;
    }
    if (n->rewrite) {
        struct err e;
        size_t len = 0;
        char *text = manifest_rewrite_index(n->body, n->body_len, ej->job.platforms,
                                            ej->job.nplatforms, n->digest, &len, &e);
        if (!text) {
            ej->stop_gets = 1;
            ej_error(ej, ENGINE_FAILED, 0, "%s@%s: %s", ej->job.source_repo, n->digest, e.msg);
            node_finish(n, 0);
            return;
        }
        /* The lock was taken on the upstream digest; the node is now the new index. */
        if (n->locked)
            ej->en->ops.unlock(ej->en->ops.ctx, ej->job.target, n->digest);
        n->locked = 0;
        free(n->body);
        n->body = text;
        n->body_len = len;
        n->rewrite = 0;
        digest_of(text, len, n->digest);
    }
    ej->en->reg.put_manifest(ej->dst, node_repo(n), n->digest, n->media_type, n->body,
                             n->body_len, node_put_done, n);
}

static void node_children_done(struct node *n)
{
    if (n->holder) {
        struct engine_job *ej = n->ej;
        node_destroy(n);
        ej_release(ej);
        return;
    }
    if (n->failed)
        node_finish(n, 0);
    else
        node_push(n);
}

/* Start n's children not started yet, from the last, while fewer than a blob slot's
 * worth of them run; the last one started, its hold on n goes. */
static size_t kids_cap(const struct engine *en)
{
    return (size_t)(en->opts.blob_concurrency > en->opts.assist_window
                        ? en->opts.blob_concurrency
                        : en->opts.assist_window);
}

static void node_kids_next(struct node *p)
{
    struct engine_job *ej = p->ej;
    size_t cap = kids_cap(ej->en);
    if (p->starting)
        return; /* a child settled as it started: the loop below goes on */
    p->starting = 1;
    while (p->nkids > 0 && (size_t)p->kids_active < cap) {
        struct kid *k = &p->kids[--p->nkids];
        struct node *c = node_new(ej, p, 0, k->digest, k->size, k->media_type);
        c->offered = k->offered;
        free(k->media_type);
        p->kids_active++;
        node_start(c);
    }
    p->starting = 0;
    if (p->nkids == 0) {
        free(p->kids);
        p->kids = NULL;
        if (--p->children_left == 0)
            node_children_done(p);
    }
}

/* A root index with more than one window of children to copy: every window but the last
 * is offered to idle workers, and the job starts its own from the last backwards, so
 * that with no assistant it does them all, waiting for none, and with one they meet in
 * the middle. 1 if so (the children are n's kids). */
static int node_offer_children(struct node *n, const struct manifest *m)
{
    struct engine_job *ej = n->ej;
    struct engine *en = ej->en;
    size_t w = (size_t)en->opts.assist_window, nk = 0;
    if (!n->is_root || !m->is_index || !en->ops.offer_children || w == 0)
        return 0;
    struct kid *kids = xcalloc(m->nitems ? m->nitems : 1, sizeof(*kids));
    for (size_t i = 0; i < m->nitems; i++) {
        if (ej->job.policy != JOB_POLICY_ALL &&
            !manifest_child_wanted(m, i, ej->job.platforms, ej->job.nplatforms))
            continue;
        snprintf(kids[nk].digest, sizeof(kids[nk].digest), "%s", m->items[i].digest);
        kids[nk].size = m->items[i].size;
        kids[nk].media_type = m->items[i].media_type ? xstrdup(m->items[i].media_type) : NULL;
        nk++;
    }
    if (nk <= w) {
        for (size_t i = 0; i < nk; i++)
            free(kids[i].media_type);
        free(kids);
        return 0;
    }
    const char **digests = xcalloc(w, sizeof(*digests));
    /* Not the last window, nor one the job starts at once (the last kids_cap children):
     * an assistant taking it would find its children taken. */
    size_t last = (nk - 1) / w * w, offered = 0;
    for (size_t first = 0; first < last && first + kids_cap(en) < nk; first += w) {
        for (size_t i = 0; i < w; i++) {
            digests[i] = kids[first + i].digest;
            kids[first + i].offered = 1;
        }
        en->ops.offer_children(en->ops.ctx, ej->arg, digests, w);
        offered += w;
    }
    free(digests);
    log_debug("job=%s index %s: %zu of its %zu children offered", ej->job.key, n->digest,
              offered, nk);
    n->kids = kids;
    n->nkids = nk;
    n->children_left++; /* held until the last one has started */
    node_kids_next(n);
    return 1;
}

static void node_add_children(struct node *n, const struct manifest *m, int verify)
{
    struct engine_job *ej = n->ej;
    int filter = ej->job.policy != JOB_POLICY_ALL;
    if (!verify && node_offer_children(n, m))
        return;
    /* Hold n while children start, so one finishing at once cannot settle it. */
    n->children_left++;
    for (size_t i = 0; i < m->nitems; i++) {
        const struct manifest_desc *d = &m->items[i];
        if (m->is_index && filter &&
            !manifest_child_wanted(m, i, ej->job.platforms, ej->job.nplatforms))
            continue;
        if (!m->is_index && d->foreign)
            continue; /* non-distributable: clients fetch it from its urls */
        struct node *c = node_new(ej, n, !m->is_index, d->digest, d->size, d->media_type);
        c->verify = verify;
        node_start(c);
    }
    if (--n->children_left == 0)
        node_children_done(n);
}

/* The manifest's bytes are in n->body (fetched upstream, now or by an earlier
 * attempt, and kept by the fleet until pushed): its children come next. */
static void node_have_upstream(struct node *n, const char *content_type)
{
    struct engine_job *ej = n->ej;
    snprintf(n->kept, sizeof(n->kept), "%s", n->digest);
    struct manifest m;
    struct err e;
    if (manifest_parse(&m, n->body, n->body_len, content_type, &e) < 0) {
        ej->stop_gets = 1;
        ej_error(ej, ENGINE_FAILED, 0, "manifest %s@%s from %s: %s", ej->job.source_repo,
                 n->digest, reg_registry_url(ej->up), e.msg);
        node_finish(n, 0);
        return;
    }
    free(n->media_type);
    n->media_type = xstrdup(m.media_type);
    if (n->rewrite && !m.is_index) {
        manifest_free(&m);
        ej->stop_gets = 1;
        ej_error(ej, ENGINE_FAILED, 0, "%s@%s: not an index, cannot select platforms",
                 ej->job.source_repo, n->digest);
        node_finish(n, 0);
        return;
    }
    node_add_children(n, &m, 0);
    manifest_free(&m);
}

static void node_got_upstream(struct reg_result *res, void *arg)
{
    struct node *n = arg;
    struct engine_job *ej = n->ej;
    ej->en->ops.budget_done(ej->en->ops.ctx, ej->up, n->grant, res);
    n->grant = NULL;
    if (res->cls != REG_OK) {
        ej_reg_error(ej, ENGINE_UPSTREAM, res);
        node_finish(n, 0);
        return;
    }
    n->body = reg_result_take_body(res, &n->body_len);
    /* Kept at once: a worker killed from now on leaves the bytes to the one that
     * takes its job over, so a kill costs only the GETs it had in flight. */
    ej->en->ops.manifest_keep(ej->en->ops.ctx, n->digest,
                              res->content_type ? res->content_type : "", n->body, n->body_len);
    node_have_upstream(n, res->content_type);
}

/* Reserve one counted GET for ej (ref: a free HEAD the ops may send first). Docker Hub's
 * counted GETs go with its pooled accounts, if any. */
static void ej_budget_acquire(struct engine_job *ej, const char *ref, engine_budget_fn cb,
                              void *arg)
{
    struct engine *en = ej->en;
    en->ops.budget_acquire(en->ops.ctx, ej->up, en->accounts, ej_from_hub(ej) ? en->naccounts : 0,
                           ej->job.source_repo, ref, cb, arg);
}

/* No counted GET of what@digest was granted: Docker Hub's budget is spent (the job
 * waits for it); any other registry has no budget but its 429s (at the free HEAD
 * the ops sent first): only its jobs wait, as told or (wait_ms 0: a 429 that said
 * not how long, on Docker Hub too) backing off. */
static void ej_not_granted(struct engine_job *ej, long wait_ms, const char *what,
                           const char *digest)
{
    ej->stop_gets = 1;
    if (ej_from_hub(ej) && wait_ms > 0)
        ej_error(ej, ENGINE_DEFERRED, wait_ms, "pull budget spent before %s%s@%s", what,
                 ej->job.source_repo, digest);
    else
        ej_error(ej, ENGINE_THROTTLED, wait_ms, "%s throttles: no GET of %s%s@%s for now",
                 ej->job.upstream, what, ej->job.source_repo, digest);
}

static void node_budget(int granted, long wait_ms, void *grant, struct reg_registry *via,
                        void *arg)
{
    struct node *n = arg;
    struct engine_job *ej = n->ej;
    if (ej->stop_gets || ej->cancelled) {
        if (granted)
            ej->en->ops.budget_done(ej->en->ops.ctx, ej->up, grant, NULL);
        node_finish(n, 0);
        return;
    }
    if (!granted) {
        ej_not_granted(ej, wait_ms, "", n->digest);
        node_finish(n, 0);
        return;
    }
    n->grant = grant;
    ej->out.n.upstream_manifest_gets++;
    ej->en->reg.get_manifest(via ? via : ej->up, ej->job.source_repo, n->digest,
                             node_got_upstream, n);
}

static void node_cached(const char *body, size_t len, const char *media_type, void *arg)
{
    struct node *n = arg;
    struct engine_job *ej = n->ej;
    char dg[DIGEST_STR_SIZE];
    if (body) {
        digest_of(body, len, dg);
        if (strcmp(dg, n->digest) == 0) {
            n->body = xstrndup(body, len);
            n->body_len = len;
            node_have_upstream(n, media_type && *media_type ? media_type : NULL);
            return;
        }
    }
    /* An assistant has no tag: the digest is a ref the ops may HEAD as well. */
    ej_budget_acquire(ej, ej->ntags ? ej->tags[0].tag : n->digest, node_budget, n);
}

static void node_fetch_upstream(struct node *n)
{
    struct engine_job *ej = n->ej;
    if (ej->stop_gets || ej->cancelled) {
        node_finish(n, 0);
        return;
    }
    ej->en->ops.manifest_cached(ej->en->ops.ctx, n->digest, node_cached, n);
}

/* -- blobs: mount from another repository, else stream -- */

static void node_blob_copied(struct reg_result *res, void *arg)
{
    struct node *n = arg;
    struct engine_job *ej = n->ej;
    struct engine *en = ej->en;
    en->blobs_active--;
    if (res->cls == REG_OK) {
        if (res->mounted) {
            ej->out.n.blobs_mounted++;
            ej->out.n.blob_bytes_mounted += n->size > 0 ? n->size : 0;
        } else {
            ej->out.n.blobs_copied++;
            ej->out.n.blob_bytes_copied += res->length > 0 ? res->length : 0;
            /* The registry opened an upload instead of mounting: the mount source
             * lacks the blob (or cannot lend it); it is no source any more. */
            if (n->mount_from)
                en->ops.forget(en->ops.ctx, ej->job.target, n->mount_from, n->digest);
        }
        ej_mark_present(ej, n->digest, 1);
        node_finish(n, 1);
    } else {
        ej_reg_error(ej, 0, res);
        node_finish(n, 0);
    }
    blob_slot_next(en);
}

static void blob_slot_run(struct node *n)
{
    struct engine_job *ej = n->ej;
    if (ej->cancelled) {
        node_finish(n, 0);
        return;
    }
    ej->en->blobs_active++;
    struct reg_blob_spec spec = {
        .src = ej->up,
        .src_repo = ej->job.source_repo,
        .dst = ej->dst,
        .dst_repo = node_repo(n),
        .digest = n->digest,
        .size = n->size,
        .mount_from = n->mount_from,
    };
    log_debug("job=%s blob %s copy (mount from %s)", ej->job.key, n->digest,
              n->mount_from ? n->mount_from : "-");
    ej->en->reg.copy_blob(&spec, node_blob_copied, n);
}

static void blob_slot_next(struct engine *en)
{
    while (en->blob_head && en->blobs_active < en->opts.blob_concurrency) {
        struct node *n = en->blob_head;
        en->blob_head = n->next_wait;
        if (!en->blob_head)
            en->blob_tail = NULL;
        n->next_wait = NULL;
        blob_slot_run(n);
    }
}

static void node_blob_home(const char *repo, void *arg)
{
    struct node *n = arg;
    struct engine *en = n->ej->en;
    if (repo && strcmp(repo, node_repo(n)) != 0)
        n->mount_from = xstrdup(repo);
    if (en->blob_tail)
        en->blob_tail->next_wait = n;
    else
        en->blob_head = n;
    en->blob_tail = n;
    blob_slot_next(en);
}

static void node_copy_blob(struct node *n)
{
    struct engine_job *ej = n->ej;
    ej->en->ops.blob_home(ej->en->ops.ctx, ej->job.target, n->digest, node_blob_home, n);
}

/* ---- roots and tags ----------------------------------------------------------------- */

/* One tag PUT in flight: which tag. */
struct tag_put {
    struct engine_job *ej;
    size_t i;
};

static void tag_put_done(struct reg_result *res, void *arg)
{
    struct tag_put *tp = arg;
    struct engine_job *ej = tp->ej;
    const struct tagst *t = &ej->tags[tp->i];
    if (res->cls == REG_OK) {
        ej->out.n.tags_written++;
        if (ej->en->ops.tag_written)
            ej->en->ops.tag_written(ej->en->ops.ctx, ej->arg, ej->job.target_repo, t->tag,
                                    t->dst, res->digest ? res->digest : t->up);
    } else {
        ej_reg_error(ej, ENGINE_TARGET, res);
    }
    free(tp);
    ej_release(ej);
}

static void wave_next(struct engine_job *ej);

/* One of the wave's roots or tag PUTs is through. */
static void wave_leave(struct engine_job *ej)
{
    if (--ej->wave_open == 0)
        wave_next(ej);
}

static void root_held(int yes, void *arg);

/* A referrer tag's PUT: counted and announced as any tag's; the next wave starts once the
 * last one is in. */
static void ref_put_done(struct reg_result *res, void *arg)
{
    struct tag_put *tp = arg;
    struct engine_job *ej = tp->ej;
    if (res->cls != REG_OK)
        ej->ref_failed = 1;
    ej_hold(ej); /* tag_put_done releases the PUT's own hold */
    tag_put_done(res, tp);
    wave_leave(ej);
    ej_release(ej);
}

static void root_held(int yes, void *arg)
{
    struct node *n = arg;
    struct engine_job *ej = n->ej;
    if (!yes)
        engine_cancel(ej);
    for (size_t i = 0; i < ej->ntags && !ej->cancelled; i++) {
        struct tagst *t = &ej->tags[i];
        if (!t->write || t->pinned || strcmp(t->up, n->root_up) != 0)
            continue;
        struct tag_put *tp = xcalloc(1, sizeof(*tp));
        tp->ej = ej;
        tp->i = i;
        ej_hold(ej);
        ej->wave_open += ej->wave > 0;
        ej->en->reg.put_manifest(ej->dst, ej->job.target_repo, t->tag, n->media_type, n->body,
                                 n->body_len, ej->wave > 0 ? ref_put_done : tag_put_done, tp);
    }
    node_destroy(n);
    wave_leave(ej);
    ej_release(ej);
}

/* Tags are written only from a complete root, never after a cancel, and only
 * while the job is still ours (another worker may own it now). */
static void root_done(struct node *n)
{
    struct engine_job *ej = n->ej;
    if (n->failed || ej->cancelled) {
        node_destroy(n);
        ej->ref_failed |= ej->wave > 0;
        wave_leave(ej);
        return;
    }
    for (size_t i = 0; i < ej->ntags && ej->en->ops.tag_intent; i++) {
        const struct tagst *t = &ej->tags[i];
        if (t->write && !t->pinned && strcmp(t->up, n->root_up) == 0)
            ej->en->ops.tag_intent(ej->en->ops.ctx, ej->arg, ej->job.target_repo, t->tag, t->dst,
                                   n->digest);
    }
    ej_hold(ej);
    ej->en->ops.still_held(ej->en->ops.ctx, ej->arg, root_held, n);
}

/* The tags already right, told once so a write a killed worker left untold is told. */
static void tell_current(struct engine_job *ej)
{
    const char **tags = xcalloc(ej->ntags + 1, sizeof(*tags));
    const char **digests = xcalloc(ej->ntags + 1, sizeof(*digests));
    size_t n = 0;
    for (size_t i = 0; i < ej->ntags; i++) {
        const struct tagst *t = &ej->tags[i];
        if (t->up[0] && t->dst[0] && !t->write && !t->pinned) {
            tags[n] = t->tag;
            digests[n++] = t->dst;
        }
    }
    if (n)
        ej->en->ops.tags_current(ej->en->ops.ctx, ej->arg, ej->job.target_repo, tags, digests,
                                 n);
    free(tags);
    free(digests);
}

/* Does tag i start the root of its digest: the first tag to write it? */
static int root_owner(const struct engine_job *ej, size_t i)
{
    for (size_t k = 0; k < i; k++)
        if (ej->tags[k].write && strcmp(ej->tags[k].up, ej->tags[i].up) == 0)
            return 0;
    return 1;
}

/* The roots of the next wave that has any (deepest first): one per distinct upstream
 * digest some tag of that depth still needs. */
static void wave_next(struct engine_job *ej)
{
    ej_hold(ej);
    while (ej->wave > 0 && ej->wave_open == 0 && !ej->ref_failed && !ej->stop_gets) {
        ej->wave--;
        ej->wave_open++; /* while they start */
        for (size_t i = 0; i < ej->ntags; i++) {
            struct tagst *t = &ej->tags[i];
            if (!t->write || t->depth != ej->wave || !root_owner(ej, i))
                continue;
            struct node *n = node_new(ej, NULL, 0, t->up, -1, t->up_type);
            n->is_root = 1;
            n->need_bytes = 1;
            n->rewrite = ej->job.policy == JOB_POLICY_REWRITE;
            snprintf(n->root_up, sizeof(n->root_up), "%s", t->up);
            ej->wave_open++;
            node_start(n);
        }
        ej->wave_open--;
    }
    ej_release(ej);
}

/* Which tags need writing; then the roots, wave by wave. */
static void plan_roots(struct engine_job *ej)
{
    ej->phase = PH_ROOTS;
    ej_hold(ej);
    /* A referrer gone upstream leaves the other tags unwritten too. */
    for (size_t i = 0; i < ej->ntags; i++)
        ej->ref_failed |= ej->tags[i].referrer && !ej->tags[i].up[0];
    for (size_t i = 0; i < ej->ntags; i++) {
        struct tagst *t = &ej->tags[i];
        if (!t->up[0])
            continue;
        int current = ej->job.policy == JOB_POLICY_REWRITE ? strcmp(t->dst, "") != 0 && t->write == 0
                                                            : strcmp(t->dst, t->up) == 0;
        if (current) {
            ej->out.n.tags_unchanged += !t->pinned;
            continue;
        }
        t->write = 1;
    }
    if (ej->en->ops.tags_current)
        tell_current(ej);
    ej->wave = JOB_REFERRER_DEPTH + 1;
    wave_next(ej);
    ej_release(ej);
}

/* -- referrers API: the manifests whose subject is a digest the job copies -- */

/* Bound on the referrers of one digest (signatures, attestations, SBOMs: a few),
 * on the pages listing them, and on those of a job, its referrers' referrers
 * included. */
#define ENGINE_MAX_REFERRERS 64
#define ENGINE_MAX_REFERRER_PAGES 16
#define ENGINE_MAX_JOB_REFERRERS 256

/* The listing of one digest's referrers, a page at a time, each page reserved from
 * the budget before its GET. */
struct refq {
    struct engine_job *ej;
    char digest[DIGEST_STR_SIZE];
    int depth;   /* the digest's */
    char *tag;   /* a tag of the digest, for the budget's free HEAD */
    char *next;  /* the next page's URL; NULL: the first */
    int pages;   /* pages asked for */
    size_t found;
    void *grant;
};

static void refq_free(struct refq *r)
{
    free(r->tag);
    free(r->next);
    free(r);
}

static void referrers_budget(int granted, long wait_ms, void *grant, struct reg_registry *via,
                             void *arg);

/* A referrer of depth depth found for the job: tag (its digest for one the referrers API
 * listed: then it is copied by digest, never tagged), upstream digest and type. Each digest
 * joins the job once (so a cycle ends), up to ENGINE_MAX_JOB_REFERRERS. */
static void ej_add_referrer(struct engine_job *ej, const char *tag, const char *digest,
                            const char *type, int depth)
{
    size_t referrers = 0;
    for (size_t k = 0; k < ej->ntags; k++) {
        if (strcmp(ej->tags[k].up, digest) == 0 || strcmp(ej->tags[k].tag, tag) == 0)
            return;
        referrers += ej->tags[k].referrer;
    }
    if (referrers >= ENGINE_MAX_JOB_REFERRERS) {
        ej->stop_gets = 1;
        ej_error(ej, ENGINE_FAILED, 0, "%s: more than %d referrers", ej->job.source_repo,
                 ENGINE_MAX_JOB_REFERRERS);
        return;
    }
    ej->tags = xrealloc(ej->tags, (ej->ntags + 1) * sizeof(*ej->tags));
    struct tagst *t = &ej->tags[ej->ntags++];
    memset(t, 0, sizeof(*t));
    t->tag = xstrdup(tag);
    snprintf(t->up, sizeof(t->up), "%s", digest);
    t->up_type = type ? xstrdup(type) : NULL;
    t->pinned = strcmp(tag, digest) == 0;
    t->referrer = 1;
    t->depth = depth;
    ej->out.n.tags_total += !t->pinned;
}

/* Each referrer not in the job yet joins it as a referrer by digest: copied, digest-exact,
 * before any other tag is written. A registry without the API (404) has only the
 * fallback tags, which the job already names. */
static void referrers_listed(struct reg_result *res, void *arg)
{
    struct refq *r = arg;
    struct engine_job *ej = r->ej;
    ej->en->ops.budget_done(ej->en->ops.ctx, ej->up, r->grant, res);
    if (res->cls == REG_OK) {
        r->found += res->ntags;
        for (size_t i = 0; i < res->ntags; i++)
            ej_add_referrer(ej, res->tags[i], res->tags[i], NULL, r->depth + 1);
        if (res->next && r->pages >= ENGINE_MAX_REFERRER_PAGES) {
            ej->stop_gets = 1;
            ej_error(ej, ENGINE_FAILED, 0, "%s@%s: more than %d pages of referrers",
                     ej->job.source_repo, r->digest, ENGINE_MAX_REFERRER_PAGES);
        } else if (res->next) {
            free(r->next);
            r->next = xstrdup(res->next);
            ej_budget_acquire(ej, r->tag, referrers_budget, r);
            return;
        }
    } else if (res->cls == REG_NOT_FOUND) {
        ej->no_referrers_api = 1;
    } else {
        ej_reg_error(ej, ENGINE_UPSTREAM, res);
    }
    refq_free(r);
    ej_release(ej);
}

static void referrers_budget(int granted, long wait_ms, void *grant, struct reg_registry *via,
                             void *arg)
{
    struct refq *r = arg;
    struct engine_job *ej = r->ej;
    if (ej->stop_gets || ej->cancelled || !granted) {
        if (granted)
            ej->en->ops.budget_done(ej->en->ops.ctx, ej->up, grant, NULL);
        else if (!ej->stop_gets)
            ej_not_granted(ej, wait_ms, "the referrers of ", r->digest);
        refq_free(r);
        ej_release(ej);
        return;
    }
    r->grant = grant;
    r->pages++;
    ej->out.n.upstream_manifest_gets++;
    ej->en->reg.list_referrers(via ? via : ej->up, ej->job.source_repo, r->digest, r->next,
                               ENGINE_MAX_REFERRERS - r->found, referrers_listed, r);
}

/* A HEAD of a fallback tag (sha256-<hex>.sig, ...) of a referrer's digest: free. */
struct fallq {
    struct engine_job *ej;
    char *tag;
    int depth; /* the referrer it would be */
};

static void fallback_done(struct reg_result *res, void *arg)
{
    struct fallq *f = arg;
    struct engine_job *ej = f->ej;
    if (res->cls == REG_OK && res->digest && digest_valid(res->digest))
        ej_add_referrer(ej, f->tag, res->digest, res->content_type, f->depth);
    else if (res->cls != REG_NOT_FOUND && res->cls != REG_OK)
        ej_reg_error(ej, ENGINE_UPSTREAM, res);
    free(f->tag);
    free(f);
    ej_release(ej);
}

/* The referrers of t's digest: those the referrers API lists (one counted GET a page,
 * when the job asks for them), and for a referrer's digest those under its fallback
 * tags (free HEADs; the coordinator found the job's own in its listing). */
static void find_referrers_of(struct engine_job *ej, const struct tagst *t)
{
    if (ej->job.find_referrers && !ej->no_referrers_api) {
        struct refq *r = xcalloc(1, sizeof(*r));
        r->ej = ej;
        snprintf(r->digest, sizeof(r->digest), "%s", t->up);
        r->depth = t->depth;
        r->tag = xstrdup(t->tag);
        ej_hold(ej);
        ej_budget_acquire(ej, r->tag, referrers_budget, r);
    }
    for (size_t k = 0; t->depth > 0 && k < TAGFILTER_REFERRER_KINDS; k++) {
        char tag[TAGFILTER_REFERRER_TAG_SIZE];
        struct fallq *f = xcalloc(1, sizeof(*f));
        f->ej = ej;
        tagfilter_referrer_tag_of(t->up, k, tag);
        f->tag = xstrdup(tag);
        f->depth = t->depth + 1;
        ej_hold(ej);
        ej->out.n.upstream_manifest_heads++;
        ej->en->reg.head_manifest(ej->up, ej->job.source_repo, f->tag, fallback_done, f);
    }
}

/* A round: the referrers of each digest of depth ej->round the job copies that the target
 * lacks under the tag (a tag already current had its referrers copied when it was
 * written). */
static void find_referrers(struct engine_job *ej)
{
    ej->phase = PH_REFERRERS;
    ej_hold(ej);
    size_t n = ej->ntags; /* those found now wait for the next round */
    for (size_t i = 0; i < n && !ej->stop_gets; i++) {
        const struct tagst *t = &ej->tags[i];
        if (!t->up[0] || t->depth != ej->round || strcmp(t->dst, t->up) == 0)
            continue;
        int seen = 0;
        for (size_t k = 0; k < i && !seen; k++)
            seen = ej->tags[k].depth == t->depth && strcmp(ej->tags[k].up, t->up) == 0;
        if (!seen)
            find_referrers_of(ej, t);
    }
    ej_release(ej);
}

/* Is there a digest of depth ej->round whose referrers are to be looked for? The job's
 * own digests' only through the referrers API. */
static int referrers_to_find(const struct engine_job *ej)
{
    if (ej->round == 0 && !ej->job.find_referrers)
        return 0;
    for (size_t i = 0; i < ej->ntags; i++)
        if (ej->tags[i].up[0] && ej->tags[i].depth == ej->round &&
            strcmp(ej->tags[i].dst, ej->tags[i].up) != 0)
            return 1;
    return 0;
}

/* The referrers first, round by round, when the job asks for them; then the roots. */
static void plan_copy(struct engine_job *ej)
{
    ej->round = ej->phase == PH_REFERRERS ? ej->round + 1 : 0;
    while (ej->round < JOB_REFERRER_DEPTH && !referrers_to_find(ej))
        ej->round++;
    if (ej->round < JOB_REFERRER_DEPTH)
        find_referrers(ej);
    else
        plan_roots(ej);
}

/* -- rewrite policy: which upstream digest did the target's index come from? -- */

struct verify {
    struct engine_job *ej;
    struct tagst *t;
};

static void verify_done(struct reg_result *res, void *arg)
{
    struct verify *v = arg;
    struct engine_job *ej = v->ej;
    struct tagst *t = v->t;
    free(v);
    struct manifest m;
    struct err e;
    if (res->cls == REG_OK &&
        manifest_parse(&m, res->body, res->body_len, res->content_type, &e) == 0) {
        /* Unchanged when the target's index was made from today's upstream index. */
        if (!(m.source_digest && strcmp(m.source_digest, t->up) == 0))
            t->write = 1;
        manifest_free(&m);
    } else if (res->cls == REG_OK || res->cls == REG_NOT_FOUND) {
        t->write = 1;
    } else {
        ej_reg_error(ej, ENGINE_TARGET, res);
    }
    ej_release(ej);
}

static void verify_rewrites(struct engine_job *ej)
{
    ej->phase = PH_VERIFY;
    ej_hold(ej);
    for (size_t i = 0; i < ej->ntags; i++) {
        struct tagst *t = &ej->tags[i];
        if (!t->up[0])
            continue;
        if (!t->dst[0]) {
            t->write = 1;
            continue;
        }
        struct verify *v = xmalloc(sizeof(*v));
        v->ej = ej;
        v->t = t;
        ej_hold(ej);
        ej->en->reg.get_manifest(ej->dst, ej->job.target_repo, t->dst, verify_done, v);
    }
    ej_release(ej);
}

/* -- heads -- */

struct head {
    struct engine_job *ej;
    struct tagst *t;
    int upstream;
};

static void head_done(struct reg_result *res, void *arg)
{
    struct head *h = arg;
    struct engine_job *ej = h->ej;
    struct tagst *t = h->t;
    int upstream = h->upstream;
    long wait_ms;
    free(h);
    /* Every job starts with these HEADs: whether a registry answers them is the
     * job's news of it. */
    if (engine_status_of(res, &wait_ms) != ENGINE_UNAVAILABLE)
        ej->out.reached |= upstream ? ENGINE_UPSTREAM : ENGINE_TARGET;
    if (upstream) {
        if (res->cls == REG_OK && res->digest && digest_valid(res->digest)) {
            snprintf(t->up, sizeof(t->up), "%s", res->digest);
            t->up_type = res->content_type ? xstrdup(res->content_type) : NULL;
        } else if (res->cls == REG_OK) {
            ej_error(ej, ENGINE_FAILED, 0, "%s:%s: upstream answered HEAD without a digest",
                     ej->job.source_repo, t->tag);
        } else if (res->cls == REG_NOT_FOUND) {
            /* Not built yet, or gone: the other tags still go on. */
            ej_error(ej, ENGINE_FAILED, 0, "%s%s%s: %s not found upstream", ej->job.source_repo,
                     t->pinned ? "@" : ":", t->tag, t->pinned ? "digest" : "tag");
        } else {
            ej_reg_error(ej, ENGINE_UPSTREAM, res);
        }
    } else {
        if (res->cls == REG_OK && res->digest && digest_valid(res->digest))
            snprintf(t->dst, sizeof(t->dst), "%s", res->digest);
        else if (res->cls != REG_NOT_FOUND && res->cls != REG_OK)
            ej_reg_error(ej, ENGINE_TARGET, res);
    }
    ej_release(ej);
}

static void target_checked(void *arg)
{
    ej_release(arg);
}

/* The tags' HEADs, and meanwhile the check of what the shared state says
 * about the target. */
static void start_heads(struct engine_job *ej)
{
    ej->phase = PH_HEADS;
    ej_hold(ej);
    ej_hold(ej);
    ej->en->ops.check_target(ej->en->ops.ctx, ej->dst, ej->job.target_repo, target_checked, ej);
    for (size_t i = 0; i < ej->ntags; i++) {
        for (int up = 1; up >= 0; up--) {
            struct head *h = xmalloc(sizeof(*h));
            *h = (struct head){ej, &ej->tags[i], up};
            ej_hold(ej);
            if (up) {
                ej->out.n.upstream_manifest_heads++;
                ej->en->reg.head_manifest(ej->up, ej->job.source_repo, ej->tags[i].tag,
                                          head_done, h);
            } else {
                ej->en->reg.head_manifest(ej->dst, ej->job.target_repo, ej->tags[i].tag,
                                          head_done, h);
            }
        }
    }
    ej_release(ej);
}

/* engine_assist: the job's digests, children of another worker's index, each copied as
 * that job would (node_locked leaves one locked elsewhere to its holder). */
static void assist_children(struct engine_job *ej)
{
    ej->phase = PH_ROOTS;
    struct node *h = node_new(ej, NULL, 0, "", -1, NULL);
    h->holder = 1;
    h->children_left++;
    for (size_t i = 0; i < ej->job.ndigests; i++)
        node_start(node_new(ej, h, 0, ej->job.digests[i], -1, NULL));
    if (--h->children_left == 0)
        node_children_done(h);
}

static void ej_advance(struct engine_job *ej)
{
    switch (ej->phase) {
    case PH_CREDS:
        if (ej->stop_gets)
            ej_finish(ej);
        else
            start_heads(ej);
        return;
    case PH_HEADS:
        if (ej->stop_gets) {
            ej_finish(ej);
        } else if (ej->assist) {
            assist_children(ej);
        } else if (ej->job.policy == JOB_POLICY_REWRITE) {
            verify_rewrites(ej);
        } else {
            plan_copy(ej);
        }
        return;
    case PH_VERIFY:
    case PH_REFERRERS:
        if (ej->stop_gets)
            ej_finish(ej);
        else
            plan_copy(ej);
        return;
    case PH_ROOTS:
        ej_finish(ej);
        return;
    }
}

/* ---- public ------------------------------------------------------------------------- */

void engine_opts_default(struct engine_opts *o)
{
    o->blob_concurrency = 8;
    o->lock_poll_s = 0.25;
    o->lock_wait_max_s = 1800;
    o->child_poll_s = 0.05;
    o->assist_window = 4;
    o->upstream = o->target = NULL;
    o->sources = NULL;
    o->helper_ttl_s = 300;
    o->reg = NULL;
}

static const struct engine_reg_ops engine_reg_client = {
    reg_head_manifest, reg_get_manifest, reg_put_manifest, reg_head_blob, reg_copy_blob,
    reg_list_referrers,
};

/* A registry per pooled Docker Hub account, its credentials from its own
 * environment prefix (set: the file names it for this). */
static int engine_accounts(struct engine *en, struct err *e)
{
    const struct syncfile_registry *hub =
        en->opts.sources ? syncfile_registry(en->opts.sources, SYNCFILE_HUB) : NULL;
    if (!hub || !hub->accounts.n)
        return 0;
    en->accounts = xcalloc(hub->accounts.n, sizeof(*en->accounts));
    for (size_t i = 0; i < hub->accounts.n; i++) {
        const char *name = hub->accounts.v[i];
        struct creds cr = {NULL, NULL};
        int found = creds_from_env(name, &cr, e);
        if (found == 0)
            err_set(e, "docker.io account %s: %s_USERNAME is not set", name, name);
        struct reg_registry *r =
            found == 1 ? reg_registry_new(en->client, en->upstream, &cr, e) : NULL;
        creds_clear(&cr);
        if (!r)
            return -1;
        en->accounts[en->naccounts++] = (struct engine_account){.r = r, .name = name};
    }
    return 0;
}

struct engine *engine_new(struct ev_loop *loop, struct reg_client *client,
                          const struct engine_ops *ops, const struct engine_opts *opts,
                          struct err *e)
{
    if (!loop || !client || !ops || !ops->budget_acquire || !ops->budget_done ||
        !ops->check_target || !ops->present || !ops->mark_present || !ops->forget ||
        !ops->blob_home || !ops->lock || !ops->unlock || !ops->manifest_cached ||
        !ops->manifest_keep || !ops->manifest_drop || !ops->still_held || !opts ||
        !opts->upstream || !opts->target ||
        (opts->reg && (!opts->reg->head_manifest || !opts->reg->get_manifest ||
                       !opts->reg->put_manifest || !opts->reg->head_blob ||
                       !opts->reg->copy_blob || !opts->reg->list_referrers))) {
        err_set(e, "engine: incomplete arguments");
        return NULL;
    }
    struct engine *en = xcalloc(1, sizeof(*en));
    en->loop = loop;
    en->client = client;
    en->ops = *ops;
    en->reg = opts->reg ? *opts->reg : engine_reg_client;
    en->opts = *opts;
    en->opts.reg = &en->reg;
    en->opts.upstream = en->upstream = xstrdup(opts->upstream);
    en->opts.target = en->target = xstrdup(opts->target);
    if (en->opts.blob_concurrency < 1)
        en->opts.blob_concurrency = 1;
    if (engine_accounts(en, e) < 0) {
        engine_free(en);
        return NULL;
    }
    return en;
}

void engine_free(struct engine *en)
{
    if (!en)
        return;
    for (size_t i = 0; i < en->nregs; i++) {
        struct regent *re = en->regs[i];
        creds_ask_cancel(re->asking);
        reg_registry_free(re->r);
        free(re->url);
        free(re->helper);
        free(re->waiting);
        free(re);
    }
    free(en->regs);
    for (size_t i = 0; i < en->naccounts; i++)
        reg_registry_free(en->accounts[i].r);
    free(en->accounts);
    free(en->upstream);
    free(en->target);
    free(en);
}

int engine_busy(const struct engine *en)
{
    return en->jobs;
}

/* Completes a job that could not start, from the loop as promised. */
struct early {
    ev_timer t;
    struct engine_job *ej;
};

static void early_fire(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct early *x = w->data;
    struct engine_job *ej = x->ej;
    free(x);
    ej_finish(ej);
}

int engine_job_allowed(const struct engine *en, const struct job *j, struct err *e)
{
    if (!reg_parse_same_registry(j->upstream, en->upstream) && !engine_source(en, j->upstream))
        return err_set(e, "upstream %.200s is not this worker's (%.200s) and not in its sync "
                          "file: set --upstream (HUBSYNC_UPSTREAM) or --sync-file "
                          "(HUBSYNC_SYNC_FILE) to copy from it",
                       j->upstream, en->upstream);
    if (!reg_parse_same_registry(j->target, en->target))
        return err_set(e, "target %.200s is not this worker's (%.200s): set --target "
                          "(HUBSYNC_TARGET) to copy to it",
                       j->target, en->target);
    return 0;
}

static struct engine_job *ej_start(struct engine *en, const struct job *j, int assist,
                                   engine_done_fn done, void *arg)
{
    struct engine_job *ej = xcalloc(1, sizeof(*ej));
    struct err e;
    ej->en = en;
    ej->assist = assist;
    ej->done = done;
    ej->arg = arg;
    ej->out.status = ENGINE_DONE;
    en->jobs++;
    char *text = job_encode(j, &e);
    if (!text || job_decode(&ej->job, text, strlen(text), &e) < 0) {
        ej_error(ej, ENGINE_FAILED, 0, "invalid job: %s", e.msg);
        goto early;
    }
    if (engine_job_allowed(en, &ej->job, &e) < 0) {
        ej_error(ej, ENGINE_FAILED, 0, "%s", e.msg);
        goto early;
    }
    /* A pinned digest is HEADed and copied as a tag is, by its digest; referrer tags
     * as tags, written first. */
    size_t nt = ej->job.ntags, nd = ej->job.ndigests;
    ej->ntags = assist ? 0 : nt + nd + ej->job.nreferrers;
    ej->out.n.tags_total = assist ? 0 : (long long)(nt + ej->job.nreferrers);
    ej->tags = xcalloc(ej->ntags, sizeof(*ej->tags));
    for (size_t i = 0; i < ej->ntags; i++) {
        struct tagst *t = &ej->tags[i];
        t->pinned = i >= nt && i < nt + nd;
        t->referrer = i >= nt + nd;
        t->depth = t->referrer;
        t->tag = xstrdup(i < nt ? ej->job.tags[i]
                         : t->pinned ? ej->job.digests[i - nt]
                                     : ej->job.referrers[i - nt - nd]);
    }
    struct regent *up = engine_registry(en, ej->job.upstream, ROLE_UPSTREAM, &e);
    if (!up) {
        ej_error(ej, ENGINE_FAILED, 0, "upstream %s: %s", ej->job.upstream, e.msg);
        goto early;
    }
    struct regent *dst = engine_registry(en, ej->job.target, ROLE_TARGET, &e);
    if (!dst) {
        ej_error(ej, ENGINE_FAILED, 0, "target %s: %s", ej->job.target, e.msg);
        goto early;
    }
    free(text);
    ej->up = up->r;
    ej->dst = dst->r;
    ej->phase = PH_CREDS;
    ej_hold(ej);
    regent_ready(up, ej);
    regent_ready(dst, ej);
    ej_release(ej);
    return ej;
early:
    free(text);
    struct early *x = xmalloc(sizeof(*x));
    x->ej = ej;
    ev_timer_init(&x->t, early_fire, 0., 0.);
    x->t.data = x;
    ev_timer_start(en->loop, &x->t);
    return ej;
}

struct engine_job *engine_start(struct engine *en, const struct job *j, engine_done_fn done,
                                void *arg)
{
    return ej_start(en, j, 0, done, arg);
}

struct engine_job *engine_assist(struct engine *en, const struct job *j, engine_done_fn done,
                                 void *arg)
{
    return ej_start(en, j, 1, done, arg);
}

void engine_cancel(struct engine_job *ej)
{
    ej->cancelled = 1;
    ej->stop_gets = 1;
}
