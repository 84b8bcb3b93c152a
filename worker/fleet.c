/* fleet: the engine's shared state kept in Redis (see worker.h).
 *
 * Every answer the engine gets when Redis cannot be reached is the safe one:
 * not present, no mount source, lock taken (locks only save work), budget
 * denied.
 *
 * Present sets and mount sources belong to an epoch of the target's storage
 * (rq.h). The epoch is a small marker blob the workers write once into the
 * target, its digest recorded in Redis: while a HEAD finds it, the sets
 * describe this storage; when it answers 404 the storage is new (wiped,
 * recreated, another registry at the same address, a GC of unreferenced
 * blobs) and a new marker starts a new epoch, leaving the old sets to
 * expire. A worker HEADs the marker at most every FLEET_EPOCH_CHECK_S per
 * target; between checks a 404 for anything the sets list still corrects
 * them (the engine forgets it). Without a known epoch no hint is used. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digest.h"
#include "log.h"
#include "reg_blob.h"
#include "syncfile.h"
#include "worker.h"
#include "xalloc.h"

#define FLEET_RESV_TTL_MS 30000LL
/* A 429 pauses every worker's counted GETs this long (Hub sends no Retry-After). */
#define FLEET_429_PAUSE_MS 60000LL
/* Budget unknown even after a probe (Redis trouble): ask again this much later. */
#define FLEET_UNKNOWN_WAIT_MS 10000L
/* A worker with a heartbeat this recent (its TTL) is alive to take a job. */
#define FLEET_SOURCE_LIVE_MS 30000LL
/* A budget spent only by reservations not yet settled (RQ_BUSY) is asked again this
 * often, until FLEET_RESV_TTL_MS has passed (every reservation held then has expired). */
#define FLEET_BUSY_RETRY_S 0.25
/* How long a budget request waits for an unreachable Redis before the job is deferred. */
#define FLEET_REDIS_WAIT_S 600.0
/* Manifests fetched upstream are kept in Redis until they are on the target, at
 * most this long (a deferred job may wait for the next budget window) ... */
#define FLEET_KEEP_MS (3LL * 24 * 3600 * 1000)
/* ... and at most this many bytes of them fleet-wide, the oldest going first
 * (what a fleet has fetched and not yet pushed is a few MiB) ... */
#define FLEET_KEEP_MAX_BYTES (64LL << 20)
/* ... of bodies up to this size (an image manifest or index is a few KiB). */
#define FLEET_KEEP_BODY_MAX (1L << 20)
/* A marker found on a target is trusted this long before it is HEADed again;
 * a marker that could not be written is not tried again sooner. */
#define FLEET_EPOCH_CHECK_S 60.0

struct held_lock {
    char *key;
    char *token;
    struct held_lock *next;
};

struct source_of {
    struct reg_registry *r;
    char source[RATELIMIT_SOURCE_MAX];
    int named; /* a pooled account's: its name, never what Hub's headers call it */
};

struct epoch_wait {
    engine_ready_fn cb;
    void *arg;
    struct epoch_wait *next;
};

/* What this worker knows of one target's storage epoch. */
struct target_epoch {
    char *id;                         /* keys_target_id */
    char *url;                        /* the registry URL of its first check */
    char marker[DIGEST_STR_SIZE];     /* "": no epoch known, no hint used */
    char epoch[DIGEST_STR_SIZE];
    double found_at;                  /* ev_now() of the last HEAD that found it; 0 never */
    double failed_at;                 /* ev_now() of the last marker that could not be written */
    /* the check in flight (busy) */
    int busy;
    struct reg_registry *dst;
    char *repo;                       /* where a new marker goes */
    char seen[DIGEST_STR_SIZE], seen_epoch[DIGEST_STR_SIZE]; /* the record's marker */
    char *seen_repo;
    struct epoch_wait *waiting;
    struct target_epoch *next;
};

struct fleet {
    struct ev_loop *loop;
    struct rconn_async *ra;
    const struct rq *q;
    char *worker_id;
    int keep_pulls;
    long long lock_ttl_ms;
    unsigned long long seq;
    struct held_lock *locks;
    struct source_of *srcs;
    size_t nsrcs;
    char source[RATELIMIT_SOURCE_MAX]; /* of the latest pull request, or "" */
    struct target_epoch *targets;
};

/* ---- plumbing ---------------------------------------------------------------------- */

typedef void fleet_answer_fn(struct fleet *f, struct rq_res *res, void *arg);

struct call {
    struct fleet *f;
    fleet_answer_fn *fn;
    void *arg;
    ev_timer later; /* used when Redis is down, to answer from the loop */
};

static void call_reply(struct rq_res *res, const struct err *e, void *privdata)
{
    struct call *c = privdata;
    if (!res)
        log_debug("redis: %s", e ? e->msg : "no answer");
    if (c->fn)
        c->fn(c->f, res, c->arg);
    free(c);
}

static void call_later(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct call *c = w->data;
    if (c->fn)
        c->fn(c->f, NULL, c->arg);
    free(c);
}

static struct call *call_new(struct fleet *f, fleet_answer_fn *fn, void *arg)
{
    struct call *c = xcalloc(1, sizeof(*c));
    c->f = f;
    c->fn = fn;
    c->arg = arg;
    return c;
}

/* fn gets NULL from the loop: the answer when Redis is not asked. */
static void fleet_no_answer(struct fleet *f, fleet_answer_fn *fn, void *arg)
{
    struct call *c = call_new(f, fn, arg);
    ev_timer_init(&c->later, call_later, 0., 0.);
    c->later.data = c;
    ev_timer_start(f->loop, &c->later);
}

/* Run cmd; fn gets the answer, or NULL if Redis could not be asked. */
static void fleet_exec(struct fleet *f, struct rq_cmd *cmd, fleet_answer_fn *fn, void *arg)
{
    struct call *c = call_new(f, fn, arg);
    struct err e;
    if (rq_exec_async(f->ra, cmd, call_reply, c, &e) == 0)
        return;
    free(c);
    fleet_no_answer(f, fn, arg);
}

static char *fleet_token(struct fleet *f)
{
    return xasprintf("%s#%llu", f->worker_id, ++f->seq);
}

/* ---- pull budget --------------------------------------------------------------------- */

/* The budget a registry's pulls count against: Docker Hub names it in
 * docker-ratelimit-source; until then, the registry's host. */
static const char *source_of(struct fleet *f, struct reg_registry *r, char *fallback,
                             size_t n)
{
    for (size_t i = 0; i < f->nsrcs; i++)
        if (f->srcs[i].r == r && f->srcs[i].source[0])
            return f->srcs[i].source;
    char *host = keys_host_port(reg_registry_url(r));
    snprintf(fallback, n, "%s", host ? host : "upstream");
    free(host);
    return fallback;
}

/* named: source is a pooled account's name, kept whatever the headers say. */
static void remember_source(struct fleet *f, struct reg_registry *r, const char *source,
                            int named)
{
    size_t i = 0;
    while (i < f->nsrcs && f->srcs[i].r != r)
        i++;
    if (i == f->nsrcs) {
        f->srcs = xrealloc(f->srcs, (f->nsrcs + 1) * sizeof(*f->srcs));
        f->srcs[f->nsrcs++] = (struct source_of){.r = r};
    } else if (f->srcs[i].named) {
        return;
    }
    snprintf(f->srcs[i].source, sizeof(f->srcs[i].source), "%s", source);
    f->srcs[i].named = named;
}

void fleet_on_ratelimit(struct reg_registry *r, const struct ratelimit_info *rl, long status,
                        void *arg)
{
    struct fleet *f = arg;
    char fb[RATELIMIT_SOURCE_MAX];
    if (rl->source[0])
        remember_source(f, r, rl->source, 0);
    const char *src = source_of(f, r, fb, sizeof(fb));
    if (status == 429) {
        /* The pull limit's 429 carries the budget headers; an abuse-limit 429 comes
         * without them and only slows the request that got it (its Retry-After). */
        if (!rl->has_remaining)
            return;
        log_warn("budget source=%s: 429 from %s, pausing counted GETs for %llds", src,
                 reg_registry_url(r), FLEET_429_PAUSE_MS / 1000);
        fleet_exec(f, rq_cmd_budget_pause(f->q, src, FLEET_429_PAUSE_MS), NULL, NULL);
    } else {
        fleet_exec(f, rq_cmd_budget_observe(f->q, src, rl, NULL), NULL, NULL);
    }
}

/* A granted reservation, settled by ops_budget_done. */
struct grant {
    char *resv;
    char source[RATELIMIT_SOURCE_MAX];
};

struct budget_req {
    struct fleet *f;
    struct reg_registry **regs; /* the accounts asked for, or up alone */
    size_t nregs;
    struct reg_registry *probing; /* the one a probe HEAD is learning */
    char *repo;
    char *ref;
    engine_budget_fn cb;
    void *arg;
    size_t probed; /* probes sent: one per account at most */
    char *resv; /* reservation id of the acquire in flight */
    ev_timer again; /* Redis unreachable or the budget busy: ask again later */
    double delay, waited;
    double busy_waited; /* s spent asking again while RQ_BUSY */
};

static void budget_ask(struct fleet *f, struct budget_req *b);

/* grant: the reservation (owned; handed to the engine) or NULL; via: the
 * registry (account) the GET goes with. */
static void budget_req_done(struct budget_req *b, int granted, long wait_ms,
                            struct grant *grant, struct reg_registry *via)
{
    engine_budget_fn cb = b->cb;
    void *arg = b->arg;
    free(b->regs);
    free(b->repo);
    free(b->ref);
    free(b->resv);
    free(b);
    cb(granted, wait_ms, grant, via, arg);
}

struct probe {
    struct fleet *f;
    struct budget_req *b;
};

static void probe_observed(struct fleet *f, struct rq_res *res, void *arg)
{
    (void)res;
    budget_ask(f, arg);
}

long fleet_probe_wait_ms(const struct reg_result *res)
{
    if (res->cls != REG_RATE_LIMITED)
        return FLEET_UNKNOWN_WAIT_MS;
    if (res->retry_after > 0)
        return res->retry_after * 1000L;
    /* Docker Hub's pull limit (its budget headers) pauses the fleet; another 429 that
     * says not how long is the engine's to back off from, as at a GET. */
    return res->rl.has_remaining ? (long)FLEET_429_PAUSE_MS : 0;
}

/* A free HEAD tells the budget (its headers reach fleet_on_ratelimit); no
 * header at all means the registry does not limit pulls. */
static void probe_done(struct reg_result *res, void *arg)
{
    struct probe *p = arg;
    struct fleet *f = p->f;
    struct budget_req *b = p->b;
    free(p);
    if (res->cls != REG_OK && res->cls != REG_NOT_FOUND) {
        budget_req_done(b, 0, fleet_probe_wait_ms(res), NULL, NULL);
        return;
    }
    char fb[RATELIMIT_SOURCE_MAX];
    const char *src = source_of(f, b->probing, fb, sizeof(fb));
    fleet_exec(f, rq_cmd_budget_observe(f->q, src, ratelimit_present(&res->rl) ? &res->rl : NULL,
                                        NULL),
               probe_observed, b);
}

static void budget_again(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct budget_req *b = w->data;
    budget_ask(b->f, b);
}

static void budget_ask_later(struct fleet *f, struct budget_req *b, double delay)
{
    ev_timer_init(&b->again, budget_again, delay, 0.);
    b->again.data = b;
    ev_timer_start(f->loop, &b->again);
}

static void budget_answer(struct fleet *f, struct rq_res *res, void *arg)
{
    struct budget_req *b = arg;
    if (!res) {
        /* Redis is down or restarting: the budget is unknown, not spent. Wait for
         * Redis (the job's own lease is in Redis too) rather than defer the job. */
        if (b->waited >= FLEET_REDIS_WAIT_S) {
            budget_req_done(b, 0, FLEET_UNKNOWN_WAIT_MS, NULL, NULL);
            return;
        }
        b->delay = b->delay ? (b->delay * 2 > 8 ? 8 : b->delay * 2) : 0.25;
        b->waited += b->delay;
        budget_ask_later(f, b, b->delay);
        return;
    }
    /* The account the answer chose (a single registry: always it). */
    struct reg_registry *via =
        res->pick >= 1 && res->pick <= b->nregs ? b->regs[res->pick - 1] : NULL;
    if (!via && res->status != RQ_DENIED && res->status != RQ_BUSY) {
        budget_req_done(b, 0, FLEET_UNKNOWN_WAIT_MS, NULL, NULL);
        return;
    }
    if (via) {
        char fb[RATELIMIT_SOURCE_MAX];
        snprintf(f->source, sizeof(f->source), "%s", source_of(f, via, fb, sizeof(fb)));
    }
    switch (res->status) {
    case RQ_GRANTED: {
        struct grant *g = xmalloc(sizeof(*g));
        g->resv = b->resv;
        b->resv = NULL;
        snprintf(g->source, sizeof(g->source), "%s", f->source);
        budget_req_done(b, 1, 0, g, via);
        return;
    }
    case RQ_UNLIMITED:
        budget_req_done(b, 1, 0, NULL, via);
        return;
    case RQ_BUSY:
        /* The GETs reserved may be counted in the remaining already: not spent until
         * they settle, which takes one GET's time. */
        if (b->busy_waited * 1000 < FLEET_RESV_TTL_MS) {
            b->busy_waited += FLEET_BUSY_RETRY_S;
            budget_ask_later(f, b, FLEET_BUSY_RETRY_S);
            return;
        }
        budget_req_done(b, 0, (long)res->n, NULL, NULL);
        return;
    case RQ_DENIED:
        budget_req_done(b, 0, (long)res->n, NULL, NULL);
        return;
    case RQ_UNKNOWN:
        if (b->probed < b->nregs) {
            struct probe *p = xmalloc(sizeof(*p));
            p->f = f;
            p->b = b;
            b->probed++;
            b->probing = via;
            reg_head_manifest(via, b->repo, b->ref, probe_done, p);
            return;
        }
        budget_req_done(b, 0, FLEET_UNKNOWN_WAIT_MS, NULL, NULL);
        return;
    default:
        budget_req_done(b, 0, FLEET_UNKNOWN_WAIT_MS, NULL, NULL);
        return;
    }
}

static void budget_ask(struct fleet *f, struct budget_req *b)
{
    const char *srcs[SYNCFILE_MAX_HUB_ACCOUNTS];
    char fb[SYNCFILE_MAX_HUB_ACCOUNTS][RATELIMIT_SOURCE_MAX];
    for (size_t i = 0; i < b->nregs; i++)
        srcs[i] = source_of(f, b->regs[i], fb[i], sizeof(fb[i]));
    snprintf(f->source, sizeof(f->source), "%s", srcs[0]);
    free(b->resv);
    b->resv = fleet_token(f);
    fleet_exec(f,
               rq_cmd_budget_acquire_any(f->q, f->worker_id, srcs, b->nregs, 1, f->keep_pulls,
                                         FLEET_RESV_TTL_MS, b->resv),
               budget_answer, b);
}

/* Settle a reservation with the answer's headers, or just release it. */
static void ops_budget_done(void *ctx, struct reg_registry *up, void *grant,
                            const struct reg_result *res)
{
    struct fleet *f = ctx;
    struct grant *g = grant;
    (void)up;
    if (!g)
        return;
    struct ratelimit_info release_only;
    ratelimit_init(&release_only);
    release_only.has_limit = 1; /* headers without a count: release, change nothing */
    const struct ratelimit_info *rl =
        res && res->rl.has_remaining ? &res->rl : &release_only;
    fleet_exec(f, rq_cmd_budget_observe(f->q, g->source, rl, g->resv), NULL, NULL);
    free(g->resv);
    free(g);
}

static void ops_budget_acquire(void *ctx, struct reg_registry *up,
                               const struct engine_account *accounts, size_t naccounts,
                               const char *repo, const char *ref, engine_budget_fn cb, void *arg)
{
    struct fleet *f = ctx;
    struct budget_req *b = xcalloc(1, sizeof(*b));
    b->f = f;
    if (naccounts > SYNCFILE_MAX_HUB_ACCOUNTS)
        naccounts = SYNCFILE_MAX_HUB_ACCOUNTS;
    b->nregs = naccounts ? naccounts : 1;
    b->regs = xcalloc(b->nregs, sizeof(*b->regs));
    b->regs[0] = up;
    for (size_t i = 0; i < naccounts; i++) {
        /* Each account's budget is kept under its name, whatever Hub calls it. */
        remember_source(f, accounts[i].r, accounts[i].name, 1);
        b->regs[i] = accounts[i].r;
    }
    b->repo = xstrdup(repo);
    b->ref = xstrdup(ref);
    b->cb = cb;
    b->arg = arg;
    budget_ask(ctx, b);
}

struct flag_req {
    engine_flag_fn cb;
    void *arg;
};

static void elsewhere_answer(struct fleet *f, struct rq_res *res, void *arg)
{
    (void)f;
    struct flag_req r = *(struct flag_req *)arg;
    free(arg);
    r.cb(res && res->status == RQ_VALUE && res->n == 1, r.arg);
}

void fleet_budget_elsewhere(struct fleet *f, engine_flag_fn cb, void *arg)
{
    struct flag_req *r = xmalloc(sizeof(*r));
    r->cb = cb;
    r->arg = arg;
    if (f->source[0])
        fleet_exec(f,
                   rq_cmd_budget_elsewhere(f->q, f->worker_id, f->source, f->keep_pulls,
                                           FLEET_SOURCE_LIVE_MS),
                   elsewhere_answer, r);
    else
        fleet_no_answer(f, elsewhere_answer, r);
}

/* ---- the target's storage epoch ---------------------------------------------------- */

static struct target_epoch *target_find(struct fleet *f, const char *url, int create)
{
    char *id = keys_target_id(url);
    struct target_epoch *t = f->targets;
    while (t && strcmp(t->id, id) != 0)
        t = t->next;
    if (t || !create) {
        free(id);
        return t;
    }
    t = xcalloc(1, sizeof(*t));
    t->id = id;
    t->url = xstrdup(url);
    t->next = f->targets;
    f->targets = t;
    return t;
}

/* The epoch whose sets describe target now, or NULL: use no hint. */
static const char *epoch_of(struct fleet *f, const char *target)
{
    struct target_epoch *t = target_find(f, target, 0);
    return t && t->epoch[0] ? t->epoch : NULL;
}

/* Take the record's marker and epoch as the target's (both checked: they
 * become key names). */
static void epoch_adopt(struct target_epoch *t, const char *marker, const char *epoch)
{
    t->marker[0] = t->epoch[0] = '\0';
    if (!marker || !epoch || !digest_valid(marker) || strlen(epoch) != 12 ||
        strspn(epoch, "0123456789abcdef") != 12)
        return;
    snprintf(t->marker, sizeof(t->marker), "%s", marker);
    snprintf(t->epoch, sizeof(t->epoch), "%s", epoch);
}

/* The check is over: every job waiting for it goes on. */
static void epoch_done(struct target_epoch *t)
{
    struct epoch_wait *w = t->waiting;
    t->waiting = NULL;
    t->busy = 0;
    t->dst = NULL;
    free(t->repo);
    free(t->seen_repo);
    t->repo = t->seen_repo = NULL;
    while (w) {
        struct epoch_wait *next = w->next;
        w->cb(w->arg);
        free(w);
        w = next;
    }
}

struct epoch_call {
    struct fleet *f;
    struct target_epoch *t;
    char marker[DIGEST_STR_SIZE]; /* the marker written */
};

static void epoch_recorded(struct fleet *f, struct rq_res *res, void *arg)
{
    struct epoch_call *c = arg;
    struct target_epoch *t = c->t;
    if (res && res->status == RQ_VALUE) {
        epoch_adopt(t, rq_res_field(res, "marker"), rq_res_field(res, "epoch"));
        /* Another worker's new marker may have won: it is found at its next check. */
        t->found_at = strcmp(t->marker, c->marker) == 0 ? ev_now(f->loop) : 0;
        if (t->found_at > 0)
            log_info("target %s: new storage epoch %s (marker %s in %s)", t->id, t->epoch,
                     t->marker, rq_res_field(res, "repo"));
    } else {
        epoch_adopt(t, NULL, NULL);
    }
    free(c);
    epoch_done(t);
}

static void epoch_written(struct reg_result *res, void *arg)
{
    struct epoch_call *c = arg;
    struct fleet *f = c->f;
    struct target_epoch *t = c->t;
    if (res->cls != REG_OK) {
        log_warn("target %s: cannot write the epoch marker (%s); no present hints for it until "
                 "one is written", t->id, res->msg);
        t->failed_at = ev_now(f->loop);
        free(c);
        epoch_done(t);
        return;
    }
    snprintf(c->marker, sizeof(c->marker), "%s", res->digest);
    fleet_exec(f, rq_cmd_target_epoch(f->q, t->url, t->seen, c->marker, t->repo), epoch_recorded,
               c);
}

/* No usable marker: nothing the sets say can be trusted. Write a new one,
 * unique to this worker and moment, and offer it as the next epoch. */
static void epoch_make(struct fleet *f, struct target_epoch *t)
{
    epoch_adopt(t, NULL, NULL);
    if (t->failed_at > 0 && ev_now(f->loop) - t->failed_at < FLEET_EPOCH_CHECK_S) {
        epoch_done(t);
        return;
    }
    struct epoch_call *c = xcalloc(1, sizeof(*c));
    c->f = f;
    c->t = t;
    char *token = fleet_token(f);
    char *body = xasprintf("hubsync storage epoch marker\ntarget %s\nwritten by %s at %.6f\n",
                           t->id, token, ev_time());
    reg_put_blob(t->dst, t->repo, body, strlen(body), epoch_written, c);
    free(token);
    free(body);
}

static void epoch_headed(struct reg_result *res, void *arg)
{
    struct epoch_call *c = arg;
    struct fleet *f = c->f;
    struct target_epoch *t = c->t;
    free(c);
    if (res->cls == REG_NOT_FOUND) {
        log_info("target %s: epoch marker %s is gone (new or wiped storage)", t->id, t->seen);
        epoch_make(f, t);
        return;
    }
    epoch_adopt(t, t->seen, t->seen_epoch);
    if (res->cls == REG_OK) {
        t->found_at = ev_now(f->loop);
        fleet_exec(f, rq_cmd_target_epoch(f->q, t->url, t->seen, t->seen, t->seen_repo), NULL,
                   NULL);
    }
    /* Otherwise the target cannot be asked now; the job finds out for itself. */
    epoch_done(t);
}

static void epoch_got(struct fleet *f, struct rq_res *res, void *arg)
{
    struct target_epoch *t = arg;
    if (!res) {
        epoch_done(t); /* Redis down: what this worker knew stands */
        return;
    }
    const char *marker = res->status == RQ_VALUE ? rq_res_field(res, "marker") : NULL;
    const char *repo = res->status == RQ_VALUE ? rq_res_field(res, "repo") : NULL;
    const char *epoch = res->status == RQ_VALUE ? rq_res_field(res, "epoch") : NULL;
    t->seen[0] = t->seen_epoch[0] = '\0';
    if (!marker || !digest_valid(marker) || !repo || !epoch) {
        epoch_make(f, t);
        return;
    }
    snprintf(t->seen, sizeof(t->seen), "%s", marker);
    snprintf(t->seen_epoch, sizeof(t->seen_epoch), "%s", epoch);
    if (strcmp(marker, t->marker) == 0 && t->found_at > 0 &&
        ev_now(f->loop) - t->found_at < FLEET_EPOCH_CHECK_S) {
        epoch_done(t);
        return;
    }
    t->seen_repo = xstrdup(repo);
    struct epoch_call *c = xcalloc(1, sizeof(*c));
    c->f = f;
    c->t = t;
    reg_head_blob(t->dst, repo, marker, epoch_headed, c);
}

static void ops_check_target(void *ctx, struct reg_registry *dst, const char *repo,
                             engine_ready_fn cb, void *arg)
{
    struct fleet *f = ctx;
    struct target_epoch *t = target_find(f, reg_registry_url(dst), 1);
    struct epoch_wait *w = xmalloc(sizeof(*w));
    *w = (struct epoch_wait){cb, arg, t->waiting};
    t->waiting = w;
    if (t->busy)
        return; /* one check per target at a time; its answer serves every job */
    t->busy = 1;
    t->dst = dst;
    t->repo = xstrdup(repo);
    fleet_exec(f, rq_cmd_target_get(f->q, t->url), epoch_got, t);
}

/* ---- present sets, mount sources ---------------------------------------------------- */

static void present_answer(struct fleet *f, struct rq_res *res, void *arg)
{
    (void)f;
    struct flag_req r = *(struct flag_req *)arg;
    free(arg);
    r.cb(res && res->status == RQ_VALUE && res->nflags == 1 && res->flags[0], r.arg);
}

static void ops_present(void *ctx, const char *target, const char *repo, const char *digest,
                        engine_flag_fn cb, void *arg)
{
    struct fleet *f = ctx;
    struct flag_req *r = xmalloc(sizeof(*r));
    r->cb = cb;
    r->arg = arg;
    const char *epoch = epoch_of(f, target);
    if (epoch)
        fleet_exec(f, rq_cmd_present_check(f->q, target, epoch, repo, &digest, 1),
                   present_answer, r);
    else
        fleet_no_answer(f, present_answer, r);
}

static void ops_mark_present(void *ctx, const char *target, const char *repo, const char *digest,
                             int blob)
{
    struct fleet *f = ctx;
    (void)blob; /* manifests are remembered too: a later job skips their HEAD */
    const char *epoch = epoch_of(f, target);
    if (epoch)
        fleet_exec(f, rq_cmd_present_mark(f->q, target, epoch, repo, &digest, 1), NULL, NULL);
}

static void ops_forget(void *ctx, const char *target, const char *repo, const char *digest)
{
    struct fleet *f = ctx;
    const char *epoch = epoch_of(f, target);
    if (epoch)
        fleet_exec(f, rq_cmd_present_forget(f->q, target, epoch, repo, &digest, 1), NULL, NULL);
}

struct home_req {
    engine_home_fn cb;
    void *arg;
};

static void home_answer(struct fleet *f, struct rq_res *res, void *arg)
{
    (void)f;
    struct home_req r = *(struct home_req *)arg;
    free(arg);
    r.cb(res && res->status == RQ_VALUE ? res->str : NULL, r.arg);
}

static void ops_blob_home(void *ctx, const char *target, const char *digest, engine_home_fn cb,
                          void *arg)
{
    struct fleet *f = ctx;
    struct home_req *r = xmalloc(sizeof(*r));
    r->cb = cb;
    r->arg = arg;
    const char *epoch = epoch_of(f, target);
    if (epoch)
        fleet_exec(f, rq_cmd_blobhome(f->q, target, epoch, digest), home_answer, r);
    else
        fleet_no_answer(f, home_answer, r);
}

/* ---- copy locks ------------------------------------------------------------------------- */

struct lock_req {
    char *key;
    char *token;
    engine_flag_fn cb;
    void *arg;
};

static void lock_answer(struct fleet *f, struct rq_res *res, void *arg)
{
    struct lock_req *r = arg;
    int taken = 1; /* Redis unreachable: go ahead, locks only save work */
    if (res && res->status == RQ_DONE) {
        struct held_lock *h = xmalloc(sizeof(*h));
        h->key = r->key;
        h->token = r->token;
        h->next = f->locks;
        f->locks = h;
        r->key = r->token = NULL;
    } else if (res && res->status == RQ_STOLEN) {
        taken = 0;
    }
    engine_flag_fn cb = r->cb;
    void *cbarg = r->arg;
    free(r->key);
    free(r->token);
    free(r);
    cb(taken, cbarg);
}

static void ops_lock(void *ctx, const char *target, const char *digest, engine_flag_fn cb,
                     void *arg)
{
    struct fleet *f = ctx;
    struct lock_req *r = xmalloc(sizeof(*r));
    r->key = keys_blob_lock(&f->q->keys, target, digest);
    r->token = fleet_token(f);
    r->cb = cb;
    r->arg = arg;
    fleet_exec(f, rq_cmd_lease_acquire(r->key, r->token, f->lock_ttl_ms), lock_answer, r);
}

static void ops_unlock(void *ctx, const char *target, const char *digest)
{
    struct fleet *f = ctx;
    char *key = keys_blob_lock(&f->q->keys, target, digest);
    for (struct held_lock **pp = &f->locks; *pp; pp = &(*pp)->next) {
        struct held_lock *h = *pp;
        if (strcmp(h->key, key) == 0) {
            *pp = h->next;
            fleet_exec(f, rq_cmd_lease_release(h->key, h->token), NULL, NULL);
            free(h->key);
            free(h->token);
            free(h);
            break;
        }
    }
    free(key);
}

void fleet_tick(struct fleet *f)
{
    for (struct held_lock *h = f->locks; h; h = h->next)
        fleet_exec(f, rq_cmd_lease_renew(h->key, h->token, f->lock_ttl_ms), NULL, NULL);
}

/* ---- manifests kept until they are on the target ------------------------------------ */

struct bytes_req {
    engine_bytes_fn cb;
    void *arg;
};

static void cached_answer(struct fleet *f, struct rq_res *res, void *arg)
{
    (void)f;
    struct bytes_req r = *(struct bytes_req *)arg;
    free(arg);
    const char *body = res && res->status == RQ_VALUE ? rq_res_field(res, "body") : NULL;
    const char *type = res && res->status == RQ_VALUE ? rq_res_field(res, "type") : NULL;
    r.cb(body, body ? strlen(body) : 0, type, r.arg);
}

static void ops_manifest_cached(void *ctx, const char *digest, engine_bytes_fn cb, void *arg)
{
    struct fleet *f = ctx;
    struct bytes_req *r = xmalloc(sizeof(*r));
    r->cb = cb;
    r->arg = arg;
    fleet_exec(f, rq_cmd_manifest_cached(f->q, digest), cached_answer, r);
}

static void ops_manifest_keep(void *ctx, const char *digest, const char *media_type,
                              const char *body, size_t len)
{
    struct fleet *f = ctx;
    /* Manifests are JSON text; anything with a NUL byte is not worth keeping. */
    if (len > FLEET_KEEP_BODY_MAX || strlen(body) != len)
        return;
    fleet_exec(f, rq_cmd_manifest_keep(f->q, digest, media_type, body, FLEET_KEEP_MS,
                                       FLEET_KEEP_MAX_BYTES),
               NULL, NULL);
}

static void ops_manifest_drop(void *ctx, const char *digest)
{
    struct fleet *f = ctx;
    fleet_exec(f, rq_cmd_manifest_drop(f->q, digest), NULL, NULL);
}

/* ---- life cycle ----------------------------------------------------------------------- */

struct fleet *fleet_new(struct ev_loop *loop, struct rconn_async *ra, const struct rq *q,
                        const char *worker_id, int keep_pulls, long long lock_ttl_ms)
{
    struct fleet *f = xcalloc(1, sizeof(*f));
    f->loop = loop;
    f->ra = ra;
    f->q = q;
    f->worker_id = xstrdup(worker_id);
    f->keep_pulls = keep_pulls;
    f->lock_ttl_ms = lock_ttl_ms;
    return f;
}

void fleet_free(struct fleet *f)
{
    if (!f)
        return;
    while (f->locks) {
        struct held_lock *h = f->locks;
        f->locks = h->next;
        free(h->key);
        free(h->token);
        free(h);
    }
    while (f->targets) {
        struct target_epoch *t = f->targets;
        f->targets = t->next;
        free(t->id);
        free(t->url);
        free(t->repo);
        free(t->seen_repo);
        free(t);
    }
    free(f->srcs);
    free(f->worker_id);
    free(f);
}

void fleet_engine_ops(struct fleet *f, struct engine_ops *out)
{
    out->ctx = f;
    out->budget_acquire = ops_budget_acquire;
    out->budget_done = ops_budget_done;
    out->present = ops_present;
    out->mark_present = ops_mark_present;
    out->blob_home = ops_blob_home;
    out->check_target = ops_check_target;
    out->forget = ops_forget;
    out->lock = ops_lock;
    out->unlock = ops_unlock;
    out->manifest_cached = ops_manifest_cached;
    out->manifest_keep = ops_manifest_keep;
    out->manifest_drop = ops_manifest_drop;
}
