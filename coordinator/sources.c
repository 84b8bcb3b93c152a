/* sources: the sync file's entries as tag groups, for sync to enqueue beside
 * the official images.
 *
 * On a libev loop with a bounded number of requests in flight: each entry
 * whose tags are a filter lists its repository (tags/list, paginated by
 * Link) and keeps the tags the filter takes; entries of plain names take
 * them as written. Every chosen tag is then HEADed at its source (free on
 * Docker Hub) and the tags of one entry sharing a digest become one group:
 * one job, one manifest fetched once. A listing or HEAD that fails leaves
 * its entry (or that tag) out of the run, listed with the reason. */
#include <ev.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"
#include "creds.h"
#include "log.h"
#include "reg.h"
#include "tagfilter.h"
#include "xalloc.h"

#define SOURCES_INFLIGHT 8
#define SOURCES_PAGE 1000
#define SOURCES_MAX_TAGS 100000

struct stag {
    struct sentry *se;
    char *tag;
    char digest[DIGEST_STR_SIZE]; /* "" until known, or when the HEAD failed */
    int is_index;                 /* its type is an index (or was not told) */
    char dst[DIGEST_STR_SIZE];    /* with a target: the tag's digest there, "" if none */
    int has_dst;                  /* a referrer's: the target has its digest */
};

struct sentry {
    struct sources_ctx *p;
    const struct syncfile_entry *en;
    struct reg_registry *r; /* borrowed from the context */
    struct stag *tags;
    size_t ntags;
    struct strv all; /* the repository's tags, when it was listed */
    int failed;
};

struct sources_ctx {
    struct ev_loop *loop;
    struct reg_client *client;
    const struct syncfile *sf;
    const char *upstream;
    struct reg_registry *dst;   /* the target, when it is looked at too */
    struct reg_registry **regs; /* one per registry of the file, made when first needed */
    struct sentry *ents;
    size_t nents;
    /* the requests of one round: an entry's listing, a tag's HEAD at its source or on
     * the target, or a group's digest HEAD on the target */
    struct sop {
        enum { SOP_LIST, SOP_HEAD, SOP_HEAD_DST, SOP_HAS_DST, SOP_PIN_TYPE, SOP_REF_HAS } kind;
        struct sentry *se;
        struct stag *t;
        struct coord_source_group *g;
    } *ops;
    size_t nops, next;
    int inflight;
    json_t *errors;
    int (*tick)(void *arg); /* asked every second; -1: stop */
    void *tick_arg;
    ev_timer ticker;
    int stopped;
};

static void entry_error(struct sentry *se, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Logged and listed as {"repository": <source>, "error": ...}. */
static void entry_error(struct sentry *se, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *name = syncfile_entry_name(se->en);
    log_warn("sync file: %s: %s (not synced this run)", name, msg);
    json_array_append_new(se->p->errors,
                          json_pack("{s:s, s:s}", "repository", name, "error", msg));
    free(name);
}

static void pump(struct sources_ctx *p);

static void listed(struct reg_result *res, void *arg)
{
    struct sentry *se = arg;
    se->p->inflight--;
    if (res->cls != REG_OK) {
        se->failed = 1;
        entry_error(se, "listing tags: %s", res->msg);
    } else {
        for (size_t i = 0; i < res->ntags; i++)
            strv_push(&se->all, xstrdup(res->tags[i]));
    }
    if (res->cls == REG_OK && se->en->tags && !tagfilter_names_only(se->en->tags)) {
        const char **keep = xcalloc(res->ntags ? res->ntags : 1, sizeof(*keep));
        size_t n = tagfilter_apply(se->en->tags, (const char *const *)res->tags, res->ntags, keep);
        se->tags = xcalloc(n ? n : 1, sizeof(*se->tags));
        for (size_t i = 0; i < n; i++)
            se->tags[se->ntags++] = (struct stag){.se = se, .tag = xstrdup(keep[i])};
        free(keep);
    }
    pump(se->p);
}

static void headed(struct reg_result *res, void *arg)
{
    struct stag *t = arg;
    t->se->p->inflight--;
    if (res->cls == REG_OK && res->digest && digest_valid(res->digest)) {
        snprintf(t->digest, sizeof(t->digest), "%s", res->digest);
        t->is_index = coord_is_index_type(res->content_type);
    } else
        entry_error(t->se, "tag %s: %s", t->tag,
                    res->cls == REG_OK ? "the registry sent no digest" : res->msg);
    pump(t->se->p);
}

/* A HEAD on the target: the tag's digest there, or whether it has the group's digest. */
static void headed_dst(struct reg_result *res, void *arg)
{
    struct sop *o = arg;
    o->se->p->inflight--;
    if (res->cls == REG_OK && o->kind == SOP_REF_HAS)
        o->t->has_dst = 1;
    else if (res->cls == REG_OK && o->t)
        snprintf(o->t->dst, sizeof(o->t->dst), "%s", res->digest ? res->digest : "");
    else if (res->cls == REG_OK)
        o->g->target_has = 1;
    else if (res->cls != REG_NOT_FOUND)
        entry_error(o->se, "target: %s", res->msg);
    pump(o->se->p);
}

/* A pinned digest's type at its source. */
static void headed_pin(struct reg_result *res, void *arg)
{
    struct sop *o = arg;
    o->se->p->inflight--;
    if (res->cls == REG_OK)
        o->g->is_index = coord_is_index_type(res->content_type);
    else
        entry_error(o->se, "digest %s: %s", o->g->digest, res->msg);
    pump(o->se->p);
}

static void pump(struct sources_ctx *p)
{
    while (!p->stopped && p->inflight < SOURCES_INFLIGHT && p->next < p->nops) {
        struct sop *o = &p->ops[p->next++];
        const char *target = o->se->en->target;
        p->inflight++;
        switch (o->kind) {
        case SOP_LIST:
            reg_list_tags(o->se->r, o->se->en->repo, SOURCES_PAGE, SOURCES_MAX_TAGS, listed,
                          o->se);
            break;
        case SOP_HEAD:
            reg_head_manifest(o->se->r, o->se->en->repo, o->t->tag, headed, o->t);
            break;
        case SOP_HEAD_DST:
            reg_head_manifest(p->dst, target, o->t->tag, headed_dst, o);
            break;
        case SOP_HAS_DST:
            reg_head_manifest(p->dst, target, o->g->digest, headed_dst, o);
            break;
        case SOP_REF_HAS:
            reg_head_manifest(p->dst, target, o->t->digest, headed_dst, o);
            break;
        case SOP_PIN_TYPE:
            reg_head_manifest(o->se->r, o->se->en->repo, o->g->digest, headed_pin, o);
            break;
        }
    }
    if (p->inflight == 0 && (p->next == p->nops || p->stopped))
        ev_break(p->loop, EVBREAK_ALL);
}

/* The caller's tick (the coordinator keeps its lease with it): -1 sends no new request. */
static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct sources_ctx *p = w->data;
    (void)loop;
    (void)revents;
    if (p->tick(p->tick_arg) < 0) {
        p->stopped = 1;
        pump(p);
    }
}

/* Send the queued requests and wait for every answer. */
static void run_round(struct sources_ctx *p)
{
    pump(p);
    if (p->inflight) {
        if (p->tick)
            ev_timer_start(p->loop, &p->ticker);
        ev_run(p->loop, 0);
        ev_timer_stop(p->loop, &p->ticker);
    }
    p->nops = p->next = 0;
}

static void op_add(struct sources_ctx *p, int kind, struct sentry *se, struct stag *t,
                   struct coord_source_group *g)
{
    p->ops = xrealloc(p->ops, (p->nops + 1) * sizeof(*p->ops));
    p->ops[p->nops++] = (struct sop){kind, se, t, g};
}

/* The client of r: Docker Hub with the upstream's credentials; another
 * registry with its first account's, bound to its URL, else docker's config. */
static struct reg_registry *registry(struct sources_ctx *p, const struct syncfile_registry *r,
                                     struct err *e)
{
    size_t i = (size_t)(r - p->sf->regs);
    if (p->regs[i])
        return p->regs[i];
    const char *url = syncfile_registry_url(r, p->upstream);
    const char *prefix = r->url ? (r->accounts.n ? r->accounts.v[0] : NULL) : "HUBSYNC_UPSTREAM";
    struct creds cr = {NULL, NULL};
    int found = creds_lookup(prefix, url, url, &cr, e);
    if (found < 0)
        return NULL;
    p->regs[i] = reg_registry_new(p->client, url, found ? &cr : NULL, e);
    creds_clear(&cr);
    return p->regs[i];
}

/* The fallback tags of digest's signatures, attestations and SBOMs (cosign's and
 * notation's scheme) the entry's listing has, when the entry takes referrers; the
 * worker asks the referrers API for the others (a counted GET, within its budget). */
static void group_referrers(const struct sentry *se, struct coord_source_group *g)
{
    if (!se->en->referrers)
        return;
    g->find_referrers = 1;
    for (size_t i = 0; i < TAGFILTER_REFERRER_KINDS; i++) {
        char tag[TAGFILTER_REFERRER_TAG_SIZE];
        tagfilter_referrer_tag_of(g->digest, i, tag);
        if (!strv_has(&se->all, tag))
            continue;
        g->referrers = xrealloc(g->referrers, (g->nreferrers + 1) * sizeof(*g->referrers));
        g->referrers[g->nreferrers++] = xstrdup(tag);
    }
}

static int cmp_stag(const void *a, const void *b)
{
    const struct stag *x = a, *y = b;
    return strcmp(x->digest, y->digest);
}

/* The entry's tags with a digest, grouped by it (at most JOB_MAX_TAGS a group), and
 * its pinned digests. */
static void entry_groups(struct sentry *se, struct coord_sources *out)
{
    /* Stable enough: tags of one digest keep the listing's order by index. */
    struct stag *sorted = xcalloc(se->ntags ? se->ntags : 1, sizeof(*sorted));
    size_t n = 0;
    for (size_t i = 0; i < se->ntags; i++)
        if (se->tags[i].digest[0])
            sorted[n++] = se->tags[i];
    qsort(sorted, n, sizeof(*sorted), cmp_stag);
    size_t first = out->n;
    for (size_t i = 0; i < n;) {
        size_t k = i;
        while (k < n && k - i < JOB_MAX_TAGS && strcmp(sorted[k].digest, sorted[i].digest) == 0)
            k++;
        struct coord_source_group g = {0};
        g.entry = se->en;
        g.upstream = syncfile_registry_url(se->en->registry, se->p->upstream);
        snprintf(g.digest, sizeof(g.digest), "%s", sorted[i].digest);
        /* A digest with more tags than a job takes goes out in several jobs. */
        g.key = i > 0 && strcmp(sorted[i - 1].digest, sorted[i].digest) == 0
                    ? xasprintf("%s@%.23s+%zu", se->en->target, g.digest, i)
                    : xasprintf("%s@%.23s", se->en->target, g.digest);
        g.is_index = sorted[i].is_index;
        /* The referrers go with the first job of the digest. */
        if (!(i > 0 && strcmp(sorted[i - 1].digest, sorted[i].digest) == 0))
            group_referrers(se, &g);
        g.tags = xcalloc(k - i, sizeof(*g.tags));
        for (size_t j = i; j < k; j++) {
            g.tags[g.ntags++] = xstrdup(sorted[j].tag);
            g.current += strcmp(sorted[j].dst, g.digest) == 0;
        }
        out->g = xrealloc(out->g, (out->n + 1) * sizeof(*out->g));
        out->g[out->n++] = g;
        i = k;
    }
    free(sorted);
    /* A pinned digest no chosen tag has is a job of its own, with no tag. */
    for (size_t i = 0; i < se->en->digests.n; i++) {
        const char *d = se->en->digests.v[i];
        int tagged = 0;
        for (size_t k = first; k < out->n && !tagged; k++)
            tagged = strcmp(out->g[k].digest, d) == 0;
        if (tagged)
            continue;
        struct coord_source_group g = {0};
        g.entry = se->en;
        g.upstream = syncfile_registry_url(se->en->registry, se->p->upstream);
        snprintf(g.digest, sizeof(g.digest), "%s", d);
        g.pinned = 1;
        g.is_index = 1; /* not asked: the dearer kind */
        group_referrers(se, &g);
        g.key = xasprintf("%s@%.23s", se->en->target, d);
        out->g = xrealloc(out->g, (out->n + 1) * sizeof(*out->g));
        out->g[out->n++] = g;
    }
}

/* A referrer of out->g[group] plan follows: its fallback tag, depth as the worker's. */
struct rnode {
    size_t group;
    struct stag t;
    int depth;
};

static void rnode_add(struct rnode ***nodes, size_t *n, size_t group, struct sentry *se,
                      const char *tag, int depth)
{
    for (size_t i = 0; i < *n; i++)
        if ((*nodes)[i]->group == group && strcmp((*nodes)[i]->t.tag, tag) == 0)
            return; /* a cycle ends, as the worker's does */
    struct rnode *r = xcalloc(1, sizeof(*r));
    *r = (struct rnode){group, {.se = se, .tag = xstrdup(tag)}, depth};
    *nodes = xrealloc(*nodes, (*n + 1) * sizeof(**nodes));
    (*nodes)[(*n)++] = r;
}

/* Price each referrer of a fallback tag as sync would copy it: the job's own
 * (the coordinator's listing) HEADed at the source and on the target (free); one the
 * target lacks under its tag costs its manifest's GETs unless the target has the digest,
 * and its own fallback tags in the listing join, a depth further, as the worker HEADs
 * them (up to JOB_REFERRER_DEPTH; the worker also asks the referrers API about it, when
 * the source has one: ref_listings). */
static void plan_referrers(struct sources_ctx *p, struct coord_sources *out)
{
    struct rnode **nodes = NULL;
    size_t n = 0, from = 0;
    for (size_t i = 0; i < out->n; i++)
        for (size_t k = 0; k < out->g[i].nreferrers; k++)
            rnode_add(&nodes, &n, i, &p->ents[out->g[i].entry - p->sf->entries],
                      out->g[i].referrers[k], 1);
    while (from < n && !p->stopped) {
        size_t to = n;
        for (size_t i = from; i < to; i++) {
            op_add(p, SOP_HEAD, nodes[i]->t.se, &nodes[i]->t, NULL);
            op_add(p, SOP_HEAD_DST, nodes[i]->t.se, &nodes[i]->t, NULL);
        }
        run_round(p);
        for (size_t i = from; i < to; i++)
            if (nodes[i]->t.digest[0] && strcmp(nodes[i]->t.dst, nodes[i]->t.digest) != 0)
                op_add(p, SOP_REF_HAS, nodes[i]->t.se, &nodes[i]->t, NULL);
        run_round(p);
        for (size_t i = from; i < to; i++) {
            struct rnode *r = nodes[i];
            struct coord_source_group *g = &out->g[r->group];
            if (!r->t.digest[0] || strcmp(r->t.dst, r->t.digest) == 0)
                continue;
            long long mn, mx;
            size_t nplat = g->entry->platforms.n;
            coord_plan_gets(r->t.has_dst, r->t.is_index, 0, nplat, &mn, &mx);
            g->ref_gets_min += mn;
            g->ref_gets_max += mx;
            g->ref_unknown |= mn > 0 && r->t.is_index && nplat == 0;
            if (r->depth >= JOB_REFERRER_DEPTH)
                continue;
            g->ref_listings++;
            for (size_t k = 0; k < TAGFILTER_REFERRER_KINDS; k++) {
                char tag[TAGFILTER_REFERRER_TAG_SIZE];
                tagfilter_referrer_tag_of(r->t.digest, k, tag);
                if (strv_has(&r->t.se->all, tag))
                    rnode_add(&nodes, &n, r->group, r->t.se, tag, r->depth + 1);
            }
        }
        from = to;
    }
    for (size_t i = 0; i < n; i++) {
        free(nodes[i]->t.tag);
        free(nodes[i]);
    }
    free(nodes);
}

int coord_sources_resolve(const struct syncfile *sf, const char *upstream, const char *target,
                          int (*tick)(void *arg), void *arg, struct coord_sources *out,
                          struct err *e)
{
    struct sources_ctx p;
    int rc = -1;
    memset(&p, 0, sizeof(p));
    memset(out, 0, sizeof(*out));
    out->errors = json_array();
    p.sf = sf;
    p.upstream = upstream;
    p.errors = out->errors;
    p.tick = tick;
    p.tick_arg = arg;
    ev_timer_init(&p.ticker, on_tick, 1., 1.);
    p.ticker.data = &p;
    p.regs = xcalloc(sf->nregs ? sf->nregs : 1, sizeof(*p.regs));
    p.ents = xcalloc(sf->nentries ? sf->nentries : 1, sizeof(*p.ents));
    p.nents = sf->nentries;
    p.loop = ev_loop_new(EVFLAG_AUTO);
    if (!p.loop) {
        err_set(e, "sync file: cannot create an event loop");
        goto out;
    }
    struct reg_client_opts ro;
    reg_client_opts_default(&ro);
    if (!(p.client = reg_client_new(p.loop, &ro, e)))
        goto out;
    if (target) {
        struct creds cr = {NULL, NULL};
        int found = creds_lookup("HUBSYNC_TARGET", target, target, &cr, e);
        p.dst = found < 0 ? NULL : reg_registry_new(p.client, target, found ? &cr : NULL, e);
        creds_clear(&cr);
        if (!p.dst)
            goto out;
    }
    for (size_t i = 0; i < p.nents; i++) {
        struct sentry *se = &p.ents[i];
        se->p = &p;
        se->en = &sf->entries[i];
        if (!(se->r = registry(&p, se->en->registry, e))) {
            err_prefix(e, "sync file: registry %s", se->en->registry->name);
            goto out;
        }
        /* Referrers are found by their tags (sha256-<hex>.sig, ...) in the listing. */
        int by_name = se->en->tags && tagfilter_names_only(se->en->tags);
        if (se->en->referrers || (se->en->tags && !by_name))
            op_add(&p, SOP_LIST, se, NULL, NULL);
        if (!by_name)
            continue;
        const char *const *names;
        size_t n = tagfilter_names(se->en->tags, &names);
        se->tags = xcalloc(n ? n : 1, sizeof(*se->tags));
        for (size_t k = 0; k < n; k++)
            se->tags[se->ntags++] = (struct stag){.se = se, .tag = xstrdup(names[k])};
    }
    run_round(&p); /* the listings */
    if (p.stopped)
        goto stopped;
    for (size_t i = 0; i < p.nents; i++)
        for (size_t k = 0; k < p.ents[i].ntags; k++) {
            op_add(&p, SOP_HEAD, &p.ents[i], &p.ents[i].tags[k], NULL);
            if (p.dst)
                op_add(&p, SOP_HEAD_DST, &p.ents[i], &p.ents[i].tags[k], NULL);
        }
    run_round(&p); /* the HEADs */
    if (p.stopped)
        goto stopped;
    for (size_t i = 0; i < p.nents; i++)
        if (!p.ents[i].failed)
            entry_groups(&p.ents[i], out);
    if (p.dst) {
        for (size_t i = 0; i < out->n; i++) {
            struct sentry *se = &p.ents[out->g[i].entry - sf->entries];
            op_add(&p, SOP_HAS_DST, se, NULL, &out->g[i]);
            if (out->g[i].pinned)
                op_add(&p, SOP_PIN_TYPE, se, NULL, &out->g[i]);
        }
        run_round(&p); /* does the target have each digest? what are the pinned ones? */
        plan_referrers(&p, out);
    }
stopped:
    if (p.stopped)
        err_set(e, "sync file: stopped while reading the sources");
    else
        rc = 0;
out:
    for (size_t i = 0; i < p.nents; i++) {
        for (size_t k = 0; k < p.ents[i].ntags; k++)
            free(p.ents[i].tags[k].tag);
        free(p.ents[i].tags);
        strv_free(&p.ents[i].all);
    }
    free(p.ents);
    for (size_t i = 0; i < sf->nregs; i++)
        reg_registry_free(p.regs[i]);
    reg_registry_free(p.dst);
    free(p.regs);
    free(p.ops);
    reg_client_free(p.client);
    if (p.loop)
        ev_loop_destroy(p.loop);
    if (rc < 0)
        coord_sources_free(out);
    return rc;
}

void coord_sources_free(struct coord_sources *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->g[i].key);
        strv_free_array(s->g[i].tags, s->g[i].ntags);
        strv_free_array(s->g[i].referrers, s->g[i].nreferrers);
    }
    free(s->g);
    json_decref(s->errors);
    memset(s, 0, sizeof(*s));
}
