/* plan: the `plan` subcommand: what a sync would do and what it would cost
 * in counted Docker Hub pulls, without writing anything anywhere.
 *
 * The catalog and the selection are read exactly as sync reads them
 * (select.c). With --redis, the synced marker and the run in progress
 * (which sync would resume) come from plain reads on a connection without
 * the usual setup, so Redis is left as it was. Then, on a libev loop with a
 * bounded number of requests in flight: every selected tag is HEADed
 * upstream and on the target (HEADs are free), under the rewrite policy the
 * target's indexes are read (the target is ours: its GETs are no pulls),
 * and every distinct upstream digest still needed is HEADed on the target.
 * No upstream GET is ever sent, so the children of an index are unknown and
 * the cost of a digest the target lacks is a range (coord_plan_gets). */
#include <ev.h>
#include <limits.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"
#include "creds.h"
#include "digest.h"
#include "log.h"
#include "manifest.h"
#include "reg.h"
#include "rq.h"
#include "xalloc.h"

#define PLAN_PROBLEMS_SHOWN 20 /* readable output: the rest are in --json */

static const struct cfg_opt plan_opts[] = {
    {CFG_ID_REDIS, "redis", "HUBSYNC_REDIS", CFG_STR, NULL, 0, 0,
     "Redis URL to read the synced marker from, read only (default: none; every group then "
     "counts as changed)",
     0},
    CFG_OPT_REDIS_PREFIX,
    COORD_OPTS_SOURCE,
    COORD_OPTS_REGISTRIES,
    COORD_OPTS_SELECTION,
    COORD_OPT_SYNC_FILE,
    {COORD_ID_CONCURRENCY, "concurrency", "HUBSYNC_PLAN_CONCURRENCY", CFG_INT, "16", 1, 256,
     "HEAD requests in flight at once", 0},
    {COORD_ID_GROUPS, "groups", NULL, CFG_BOOL, "false", 0, 0,
     "readable output: a line per group too", 0},
    {COORD_ID_JSON, "json", NULL, CFG_BOOL, "false", 0, 0, "print JSON (shape above)", 0},
    CFG_OPT_LOG_LEVEL,
    CFG_OPT_LOG_FORMAT,
    CFG_OPT_HELP,
};
#define NPLAN_OPTS ((int)(sizeof(plan_opts) / sizeof(plan_opts[0])))

static const char plan_usage[] =
    "plan --target URL [--redis URL] [selection options] [--json]\n"
    "\n"
    "Shows what a sync would do and what it would cost in counted Docker Hub pulls, writing\n"
    "nothing (no Redis writes, no registry writes, no upstream manifest GETs: HEADs only).\n"
    "Per group: tags unchanged and to write, distinct upstream digests the target lacks, and\n"
    "the counted GETs they need: at least 1 each (the index), at most 1 + 2 x platforms (an\n"
    "image and an attestation manifest per platform; children the target has cost nothing),\n"
    "0 when the target has the digest already. Exit 0, or 1 when some HEAD failed or a library\n"
    "file is broken (the plan is then incomplete), 2 on bad usage or an unusable source.\n"
    "\n"
    "--json prints one object:\n"
    "  {commit, from, first_run, marker: \"redis\"|\"none\"|\"unreachable\", resumes_run,\n"
    "   upstream, target, platform_policy,\n"
    "   totals: {groups, groups_changed, tags, unchanged, to_write, missing_upstream, errors,\n"
    "            digests, digests_to_fetch, gets_min, gets_max},\n"
    "   repositories: [{name, groups, groups_changed, tags, unchanged, to_write,\n"
    "                   missing_upstream, errors, digests_to_fetch, gets_min, gets_max}],\n"
    "   groups: [{key, repository, changed, tags, unchanged, to_write, missing_upstream,\n"
    "             errors, digests, digests_to_fetch, gets_min, gets_max, write: [tag],\n"
    "             problems: [message]}],\n"
    "   budget: {reported, limit, remaining, window_s, source, verdict:\n"
    "            \"fits\"|\"may_exceed\"|\"exceeds\"|\"unlimited\"|\"unknown\"},\n"
    "   removed_tags: [{repository, tags}], catalog_errors: [{repository, error}],\n"
    "   sources: [{source, target, counted, groups, tags, unchanged, to_write,\n"
    "              digests_to_fetch, gets_min, gets_max, referrers_api_unpriced}]}\n"
    "  A digest shared by several groups counts once, in the first group needing it.\n"
    "  sources: each --sync-file entry (listed and HEADed as sync does); counted: its registry\n"
    "  is Docker Hub, whose GETs count in the budget. Its GETs include the referrers found\n"
    "  by their fallback tags (sha256-<hex>.sig, .att, .sbom, HEADed, and theirs in turn)\n"
    "  that the target lacks, and one referrers API listing (one page) per digest to copy;\n"
    "  gets_max adds a listing per such referrer too (sent when the source has the API).\n"
    "  referrers_api_unpriced: the referrers the API lists, their own listings and further\n"
    "  pages are not in either (unknown without a GET). gets_max is null for an index of all\n"
    "  platforms the target lacks (its children are unknown). Entries that cannot be read\n"
    "  are in catalog_errors.";

/* ---- pure helpers ------------------------------------------------------------------------ */

void coord_plan_gets(int target_has, int is_index, int rewrite, size_t nplatforms, long long *min,
                     long long *max)
{
    /* Under rewrite the target holds a rewritten index, never the upstream one,
     * so the upstream index is always read. */
    if (target_has && !rewrite) {
        *min = *max = 0;
        return;
    }
    *min = 1;
    *max = 1 + (is_index ? 2 * (long long)nplatforms : 0);
}

const char *coord_plan_verdict(int answered, const struct ratelimit_info *rl, long long gets_min,
                               long long gets_max)
{
    if (gets_max == 0)
        return "fits";
    if (!answered)
        return "unknown";
    if (!rl || !ratelimit_present(rl))
        return "unlimited";
    if (!rl->has_remaining)
        return "unknown";
    if (gets_max <= rl->remaining)
        return "fits";
    return gets_min <= rl->remaining ? "may_exceed" : "exceeds";
}

/* ---- state --------------------------------------------------------------------------------- */

enum tag_state { TAG_OK, TAG_MISSING, TAG_ERROR };

struct pgroup;

struct ptag {
    struct pgroup *g;
    const char *tag; /* borrowed from the view */
    enum tag_state state;
    char up[DIGEST_STR_SIZE];  /* upstream digest, "" unknown */
    int up_index;              /* an index, or a type the HEAD did not tell */
    int dst_has;               /* the target has the tag */
    char dst[DIGEST_STR_SIZE]; /* its digest */
    char src[DIGEST_STR_SIZE]; /* rewrite: the upstream digest the target's index came from */
    int write;
};

struct pgroup {
    const struct coord_group *cg; /* borrowed */
    char *source_repo, *target_repo;
    struct ptag *tags;
    size_t ntags;
    long long unchanged, to_write, missing, errors, digests, fetch, gets_min, gets_max;
    json_t *problems; /* messages */
};

/* A distinct upstream digest some tag of a target repository must get. */
struct pdigest {
    struct pgroup *g; /* the first group needing it: it carries the cost */
    const char *digest;
    int is_index;
    int present; /* the target repository has it */
};

enum op_kind { OP_HEAD_UP, OP_HEAD_DST, OP_READ_DST, OP_HEAD_DIGEST };

struct plan_ctx;

struct op {
    struct plan_ctx *p;
    enum op_kind kind;
    struct ptag *t;
    struct pdigest *d;
};

struct plan_ctx {
    struct cfg *c;
    struct coord_selection sel;
    struct ev_loop *loop;
    struct reg_client *client;
    struct reg_registry *up, *dst;
    struct coord_group *cgroups;
    size_t ncgroups;
    struct pgroup *groups;
    size_t ngroups;
    struct pdigest *digests;
    size_t ndigests;
    struct op *ops;
    size_t nops, next;
    int inflight, max_inflight;
    int up_answered;   /* some upstream request got an HTTP answer */
    int digest_errors; /* target HEADs of digests that failed */
    int rl_seen;
    struct ratelimit_info rl; /* what upstream said, lowest remaining */
};

static void problem(struct pgroup *g, const char *msg)
{
    json_array_append_new(g->problems, json_string(msg));
}

/* ---- requests ------------------------------------------------------------------------------ */

static void on_ratelimit(struct reg_registry *r, const struct ratelimit_info *rl, long status,
                         void *arg)
{
    (void)status;
    struct plan_ctx *p = arg;
    if (r != p->up)
        return;
    if (rl->has_limit) {
        p->rl.has_limit = rl->has_limit;
        p->rl.limit = rl->limit;
        p->rl.limit_window = rl->limit_window;
    }
    /* Answers arrive in any order; the lowest count is the newest. */
    if (rl->has_remaining && (!p->rl.has_remaining || rl->remaining < p->rl.remaining)) {
        p->rl.has_remaining = rl->has_remaining;
        p->rl.remaining = rl->remaining;
        p->rl.remaining_window = rl->remaining_window;
    }
    if (rl->source[0])
        snprintf(p->rl.source, sizeof(p->rl.source), "%s", rl->source);
    p->rl_seen = 1;
}

static void tag_failed(struct ptag *t, const struct reg_result *res)
{
    t->state = TAG_ERROR;
    problem(t->g, res->msg);
}

static void copy_digest(char out[DIGEST_STR_SIZE], const char *digest)
{
    snprintf(out, DIGEST_STR_SIZE, "%s", digest ? digest : "");
}

static void pump(struct plan_ctx *p);

static void op_done(struct reg_result *res, void *arg)
{
    struct op *o = arg;
    struct plan_ctx *p = o->p;
    struct ptag *t = o->t;
    if (o->kind == OP_HEAD_UP && res->status > 0)
        p->up_answered = 1;
    switch (o->kind) {
    case OP_HEAD_UP:
        if (res->cls == REG_OK && res->digest && digest_valid(res->digest)) {
            copy_digest(t->up, res->digest);
            t->up_index = coord_is_index_type(res->content_type);
        } else if (res->cls == REG_OK) {
            t->state = TAG_ERROR;
            problem(t->g, "upstream HEAD of a tag sent no valid Docker-Content-Digest");
        } else if (res->cls == REG_NOT_FOUND) {
            if (t->state == TAG_OK)
                t->state = TAG_MISSING;
        } else {
            tag_failed(t, res);
        }
        break;
    case OP_HEAD_DST:
        if (res->cls == REG_OK) {
            t->dst_has = 1;
            copy_digest(t->dst, res->digest);
        } else if (res->cls != REG_NOT_FOUND) {
            tag_failed(t, res);
        }
        break;
    case OP_READ_DST:
        if (res->cls == REG_OK) {
            struct manifest m;
            struct err e;
            /* An unreadable index is rewritten, as the worker would. */
            if (manifest_parse(&m, res->body, res->body_len, res->content_type, &e) == 0) {
                copy_digest(t->src, m.source_digest);
                manifest_free(&m);
            }
        } else if (res->cls == REG_NOT_FOUND) {
            t->dst_has = 0;
        } else {
            tag_failed(t, res);
        }
        break;
    case OP_HEAD_DIGEST:
        o->d->present = res->cls == REG_OK;
        if (res->cls != REG_OK && res->cls != REG_NOT_FOUND) {
            p->digest_errors++;
            problem(o->d->g, res->msg); /* counted as missing: the range stays an upper bound */
        }
        break;
    }
    p->inflight--;
    pump(p);
}

static void op_start(struct op *o)
{
    struct plan_ctx *p = o->p;
    struct ptag *t = o->t;
    switch (o->kind) {
    case OP_HEAD_UP:
        reg_head_manifest(p->up, t->g->source_repo, t->tag, op_done, o);
        break;
    case OP_HEAD_DST:
        reg_head_manifest(p->dst, t->g->target_repo, t->tag, op_done, o);
        break;
    case OP_READ_DST:
        reg_get_manifest(p->dst, t->g->target_repo, t->tag, op_done, o);
        break;
    case OP_HEAD_DIGEST:
        reg_head_manifest(p->dst, o->d->g->target_repo, o->d->digest, op_done, o);
        break;
    }
}

static void pump(struct plan_ctx *p)
{
    while (p->inflight < p->max_inflight && p->next < p->nops) {
        p->inflight++;
        op_start(&p->ops[p->next++]);
    }
    if (p->inflight == 0 && p->next == p->nops)
        ev_break(p->loop, EVBREAK_ALL);
}

static void op_add(struct plan_ctx *p, enum op_kind kind, struct ptag *t, struct pdigest *d)
{
    p->ops = xrealloc(p->ops, (p->nops + 1) * sizeof(*p->ops));
    p->ops[p->nops++] = (struct op){p, kind, t, d};
}

/* Run the queued operations to completion. */
static void run_ops(struct plan_ctx *p)
{
    if (p->nops) {
        pump(p);
        ev_run(p->loop, 0);
    }
    free(p->ops);
    p->ops = NULL;
    p->nops = p->next = 0;
}

/* ---- the plan -------------------------------------------------------------------------------- */

static struct reg_registry *registry(struct plan_ctx *p, const char *url, const char *env_prefix,
                                     struct err *e)
{
    struct creds cr = {NULL, NULL};
    int found = creds_lookup(env_prefix, url, url, &cr, e);
    if (found < 0)
        return NULL;
    struct reg_registry *r = reg_registry_new(p->client, url, found ? &cr : NULL, e);
    creds_clear(&cr);
    return r;
}

static void groups_init(struct plan_ctx *p)
{
    const char *prefix = cfg_str(p->c, COORD_ID_TARGET_PREFIX);
    p->groups = xcalloc(p->ncgroups ? p->ncgroups : 1, sizeof(*p->groups));
    p->ngroups = p->ncgroups;
    for (size_t i = 0; i < p->ngroups; i++) {
        struct pgroup *g = &p->groups[i];
        g->cg = &p->cgroups[i];
        g->source_repo = xasprintf("library/%s", g->cg->repo->name);
        g->target_repo = xasprintf("%s%s", prefix, g->cg->repo->name);
        g->problems = json_array();
        g->ntags = g->cg->ntags;
        g->tags = xcalloc(g->ntags, sizeof(*g->tags));
        for (size_t k = 0; k < g->ntags; k++) {
            g->tags[k].g = g;
            g->tags[k].tag = g->cg->tags[k];
        }
    }
}

static struct pdigest *find_digest(struct plan_ctx *p, const char *target_repo, const char *d)
{
    for (size_t i = 0; i < p->ndigests; i++)
        if (strcmp(p->digests[i].digest, d) == 0 &&
            strcmp(p->digests[i].g->target_repo, target_repo) == 0)
            return &p->digests[i];
    return NULL;
}

/* Which tags are written, and the distinct digests they need. */
static void decide(struct plan_ctx *p)
{
    int rewrite = p->sel.policy == JOB_POLICY_REWRITE;
    for (size_t i = 0; i < p->ngroups; i++) {
        struct pgroup *g = &p->groups[i];
        for (size_t k = 0; k < g->ntags; k++) {
            struct ptag *t = &g->tags[k];
            if (t->state == TAG_MISSING) {
                g->missing++;
                continue;
            }
            if (t->state == TAG_ERROR) {
                g->errors++;
                continue;
            }
            int current = rewrite ? t->dst_has && strcmp(t->src, t->up) == 0
                                  : t->dst_has && strcmp(t->dst, t->up) == 0;
            if (current) {
                g->unchanged++;
                continue;
            }
            t->write = 1;
            g->to_write++;
            int seen = 0;
            for (size_t j = 0; j < k; j++)
                if (g->tags[j].write && strcmp(g->tags[j].up, t->up) == 0)
                    seen = 1;
            if (seen)
                continue;
            g->digests++;
            if (find_digest(p, g->target_repo, t->up))
                continue;
            p->digests = xrealloc(p->digests, (p->ndigests + 1) * sizeof(*p->digests));
            p->digests[p->ndigests++] = (struct pdigest){g, t->up, t->up_index, 0};
        }
    }
}

static void price(struct plan_ctx *p)
{
    int rewrite = p->sel.policy == JOB_POLICY_REWRITE;
    for (size_t i = 0; i < p->ndigests; i++) {
        struct pdigest *d = &p->digests[i];
        long long lo, hi;
        coord_plan_gets(d->present, d->is_index, rewrite, d->g->cg->nplatforms, &lo, &hi);
        d->g->fetch += lo > 0;
        d->g->gets_min += lo;
        d->g->gets_max += hi;
    }
}

static void probe(struct plan_ctx *p)
{
    for (size_t i = 0; i < p->ngroups; i++)
        for (size_t k = 0; k < p->groups[i].ntags; k++) {
            op_add(p, OP_HEAD_UP, &p->groups[i].tags[k], NULL);
            op_add(p, OP_HEAD_DST, &p->groups[i].tags[k], NULL);
        }
    run_ops(p);
    if (p->sel.policy == JOB_POLICY_REWRITE) {
        /* A rewritten index names the upstream index it was made from. */
        for (size_t i = 0; i < p->ngroups; i++)
            for (size_t k = 0; k < p->groups[i].ntags; k++) {
                struct ptag *t = &p->groups[i].tags[k];
                if (t->state == TAG_OK && t->dst_has)
                    op_add(p, OP_READ_DST, t, NULL);
            }
        run_ops(p);
    }
    decide(p);
    if (p->sel.policy != JOB_POLICY_REWRITE) {
        for (size_t i = 0; i < p->ndigests; i++)
            op_add(p, OP_HEAD_DIGEST, NULL, &p->digests[i]);
        run_ops(p);
    }
    price(p);
}

/* ---- Redis: the marker, read only
 * ---------------------------------------------------------------- */

struct marker {
    const char *source; /* "redis", "none", "unreachable" */
    char from[CATALOG_SHA_LEN + 1];
    char resume[JOB_RUN_MAX + 1];     /* the run in progress, which sync would resume */
    char commit[CATALOG_SHA_LEN + 1]; /* its commit */
};

static int read_marker(const struct cfg *c, struct marker *m, struct err *e)
{
    struct rq q;
    struct rconn rc;
    struct rq_res res;
    struct rconn_opts ro = RCONN_OPTS_DEFAULT;
    int ret = -1;
    memset(&res, 0, sizeof(res));
    if (rq_init(&q, cfg_str(c, CFG_ID_REDIS_PREFIX), e) < 0)
        return -1;
    /* No setup: loading functions or creating the group would be writes. */
    if (rconn_open(&rc, cfg_str(c, CFG_ID_REDIS), &ro, NULL, e) < 0)
        goto out_q;
    if (rq_exec(&rc, rq_cmd_run_current(&q), &res, e) < 0)
        goto out;
    if (res.status == RQ_VALUE && res.str) {
        snprintf(m->resume, sizeof(m->resume), "%s", res.str);
        rq_res_free(&res);
        if (rq_exec(&rc, rq_cmd_run_get(&q, m->resume), &res, e) < 0)
            goto out;
        const char *commit = rq_res_field(&res, "commit"), *from = rq_res_field(&res, "from");
        snprintf(m->commit, sizeof(m->commit), "%s", commit ? commit : "");
        snprintf(m->from, sizeof(m->from), "%s", from ? from : "");
        if (!m->commit[0])
            m->resume[0] = '\0'; /* a run without a record: sync would start afresh */
    }
    rq_res_free(&res);
    if (!m->resume[0]) {
        if (rq_exec(&rc, rq_cmd_synced_commit(&q), &res, e) < 0)
            goto out;
        snprintf(m->from, sizeof(m->from), "%s", res.status == RQ_VALUE && res.str ? res.str : "");
    }
    m->source = "redis";
    ret = 0;
out:
    rq_res_free(&res);
    rconn_close(&rc);
out_q:
    rq_free(&q);
    return ret;
}

/* ---- report
 * -------------------------------------------------------------------------------------- */

static const char *const counter_names[] = {
    "unchanged",        "to_write", "missing_upstream", "errors",
    "digests_to_fetch", "gets_min", "gets_max",
};
#define NCOUNTERS ((int)(sizeof(counter_names) / sizeof(counter_names[0])))

static void group_counters(const struct pgroup *g, long long v[NCOUNTERS])
{
    const long long c[NCOUNTERS] = {g->unchanged, g->to_write, g->missing, g->errors,
                                    g->fetch,     g->gets_min, g->gets_max};
    memcpy(v, c, sizeof(c));
}

/* An object with the counters, tags and groups summed over groups [from, to). */
static json_t *sum_groups(const struct plan_ctx *p, size_t from, size_t to, const char *repo)
{
    long long sum[NCOUNTERS] = {0}, v[NCOUNTERS];
    long long ngroups = 0, changed = 0, tags = 0;
    for (size_t i = from; i < to; i++) {
        const struct pgroup *g = &p->groups[i];
        if (repo && strcmp(g->cg->repo->name, repo) != 0)
            continue;
        group_counters(g, v);
        for (int k = 0; k < NCOUNTERS; k++)
            sum[k] += v[k];
        ngroups++;
        changed += g->cg->changed;
        tags += (long long)g->ntags;
    }
    json_t *o = json_object();
    if (repo)
        json_object_set_new(o, "name", json_string(repo));
    json_object_set_new(o, "groups", json_integer(ngroups));
    json_object_set_new(o, "groups_changed", json_integer(changed));
    json_object_set_new(o, "tags", json_integer(tags));
    for (int k = 0; k < NCOUNTERS; k++)
        json_object_set_new(o, counter_names[k], json_integer(sum[k]));
    return o;
}

static json_t *group_json(const struct pgroup *g)
{
    long long v[NCOUNTERS];
    group_counters(g, v);
    json_t *o = json_pack("{s:s, s:s, s:b, s:I, s:I}", "key", g->cg->key, "repository",
                          g->cg->repo->name, "changed", g->cg->changed, "tags",
                          (json_int_t)g->ntags, "digests", (json_int_t)g->digests);
    for (int k = 0; k < NCOUNTERS; k++)
        json_object_set_new(o, counter_names[k], json_integer(v[k]));
    json_t *w = json_array();
    for (size_t k = 0; k < g->ntags; k++)
        if (g->tags[k].write)
            json_array_append_new(w, json_string(g->tags[k].tag));
    json_object_set_new(o, "write", w);
    json_object_set_new(o, "problems", json_incref(g->problems));
    return o;
}

static json_t *opt_str(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

static json_t *budget_json(const struct plan_ctx *p, long long lo, long long hi)
{
    const struct ratelimit_info *rl = &p->rl;
    json_t *o = json_object();
    json_object_set_new(o, "reported", json_boolean(p->rl_seen));
    json_object_set_new(o, "limit", rl->has_limit ? json_integer(rl->limit) : json_null());
    json_object_set_new(o, "remaining",
                        rl->has_remaining ? json_integer(rl->remaining) : json_null());
    long window = rl->has_limit ? rl->limit_window : rl->remaining_window;
    json_object_set_new(o, "window_s", window > 0 ? json_integer(window) : json_null());
    json_object_set_new(o, "source", opt_str(rl->source));
    json_object_set_new(
        o, "verdict",
        json_string(coord_plan_verdict(p->up_answered, p->rl_seen ? rl : NULL, lo, hi)));
    return o;
}

/* Each sync-file entry priced as a group is; the counted ones (Docker Hub) added to
 * *lo and *hi (an unknown maximum makes *hi unbounded). */
static json_t *sources_json(const struct syncfile *sf, const struct coord_sources *src,
                            long long *lo, long long *hi)
{
    json_t *a = json_array();
    for (size_t i = 0; i < sf->nentries; i++) {
        const struct syncfile_entry *en = &sf->entries[i];
        long long groups = 0, tags = 0, unchanged = 0, fetch = 0, gmin = 0, gmax = 0;
        int unknown = 0, takes_referrers = 0;
        for (size_t k = 0; k < src->n; k++) {
            const struct coord_source_group *g = &src->g[k];
            if (g->entry != en)
                continue;
            groups++;
            tags += (long long)g->ntags;
            unchanged += (long long)g->current;
            /* Referrers found by their fallback tags are copied even beside current
             * tags; the referrers API may list more of them, unknown without a GET. */
            gmin += g->ref_gets_min;
            gmax += g->ref_gets_max + (long long)g->ref_listings;
            unknown |= g->ref_unknown;
            takes_referrers |= g->ref_listings > 0;
            if (!g->pinned && g->current == g->ntags)
                continue;
            long long mn, mx;
            coord_plan_gets(g->target_has, g->is_index, en->policy == JOB_POLICY_REWRITE,
                            en->platforms.n, &mn, &mx);
            /* and the worker's GET of the referrers API for the digest (one page) */
            long long ask = g->find_referrers && !(g->pinned && g->target_has);
            takes_referrers |= ask > 0;
            fetch += mn > 0;
            gmin += mn + ask;
            gmax += mx + ask;
            unknown |= mn > 0 && g->is_index && en->platforms.n == 0;
        }
        int counted = strcmp(en->registry->name, SYNCFILE_HUB) == 0;
        if (counted) {
            *lo += gmin;
            *hi = unknown || *hi == LLONG_MAX ? LLONG_MAX : *hi + gmax;
        }
        char *name = syncfile_entry_name(en);
        json_array_append_new(
            a, json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:b}", "source", name,
                         "target", en->target, "counted", counted, "groups", (json_int_t)groups,
                         "tags", (json_int_t)tags, "unchanged", (json_int_t)unchanged,
                         "to_write", (json_int_t)(tags - unchanged), "digests_to_fetch",
                         (json_int_t)fetch, "gets_min", (json_int_t)gmin, "gets_max",
                         unknown ? json_null() : json_integer(gmax), "referrers_api_unpriced",
                         takes_referrers));
        free(name);
    }
    return a;
}

static json_t *report(const struct plan_ctx *p, const struct coord_view *v, const char *commit,
                      const struct marker *m, const struct syncfile *sf,
                      const struct coord_sources *src)
{
    json_t *o = json_object();
    json_object_set_new(o, "commit", json_string(commit));
    json_object_set_new(o, "from", opt_str(m->from));
    json_object_set_new(o, "first_run", json_boolean(v->first));
    json_object_set_new(o, "marker", json_string(m->source));
    json_object_set_new(o, "resumes_run", opt_str(m->resume));
    json_object_set_new(o, "upstream", json_string(cfg_str(p->c, CFG_ID_UPSTREAM)));
    json_object_set_new(o, "target", json_string(cfg_str(p->c, CFG_ID_TARGET)));
    json_object_set_new(o, "platform_policy", json_string(job_policy_name(p->sel.policy)));
    json_t *totals = sum_groups(p, 0, p->ngroups, NULL);
    json_object_set_new(totals, "digests", json_integer((json_int_t)p->ndigests));
    json_t *repos = json_array(), *groups = json_array();
    for (size_t r = 0; r < v->snap->nrepos; r++) {
        const char *name = v->snap->repos[r]->name;
        json_t *ro = sum_groups(p, 0, p->ngroups, name);
        if (json_integer_value(json_object_get(ro, "groups")) > 0)
            json_array_append_new(repos, ro);
        else
            json_decref(ro);
    }
    for (size_t i = 0; i < p->ngroups; i++)
        json_array_append_new(groups, group_json(&p->groups[i]));
    json_object_set_new(o, "totals", totals);
    json_object_set_new(o, "repositories", repos);
    json_object_set_new(o, "groups", groups);
    long long lo = json_integer_value(json_object_get(totals, "gets_min")),
              hi = json_integer_value(json_object_get(totals, "gets_max"));
    if (sf)
        json_object_set_new(o, "sources", sources_json(sf, src, &lo, &hi));
    json_object_set_new(o, "budget", budget_json(p, lo, hi));
    json_object_set_new(o, "removed_tags", coord_removed_tags(&p->sel, v));
    json_t *errs = json_array();
    for (size_t i = 0; i < v->snap->nerrors; i++)
        json_array_append_new(errs, json_pack("{s:s, s:s}", "repository", v->snap->errors[i].repo,
                                              "error", v->snap->errors[i].msg));
    if (sf)
        json_array_extend(errs, src->errors);
    json_object_set_new(o, "catalog_errors", errs);
    return o;
}

static void print_row(const char *name, json_t *o)
{
    char gets[48];
    snprintf(gets, sizeof(gets), "%lld..%lld", coord_json_int(o, "gets_min"),
             coord_json_int(o, "gets_max"));
    printf("%-24s %6lld %7lld %6lld %9lld %8lld %7lld %7lld %12s\n", name,
           coord_json_int(o, "groups"), coord_json_int(o, "groups_changed"),
           coord_json_int(o, "tags"), coord_json_int(o, "unchanged"), coord_json_int(o, "to_write"),
           coord_json_int(o, "missing_upstream") + coord_json_int(o, "errors"),
           coord_json_int(o, "digests_to_fetch"), gets);
}

static void print_readable(json_t *o, int per_group)
{
    const char *from = json_string_value(json_object_get(o, "from"));
    const char *commit = json_string_value(json_object_get(o, "commit"));
    const char *resume = json_string_value(json_object_get(o, "resumes_run"));
    printf("plan for official-images %.12s", commit);
    if (resume)
        printf(" (sync would resume run %s)", resume);
    if (json_is_true(json_object_get(o, "first_run")))
        printf(": first run, every group counts as changed\n");
    else if (from && strcmp(from, commit) == 0)
        printf(": already synced, every group is a check for upstream rebuilds\n");
    else
        printf(": changes since %.12s, the other groups are checks\n", from ? from : "?");
    if (strcmp(json_string_value(json_object_get(o, "marker")), "unreachable") == 0)
        printf("  (Redis was unreachable: the synced marker is unknown)\n");
    printf("  %s -> %s, platforms: %s\n", json_string_value(json_object_get(o, "upstream")),
           json_string_value(json_object_get(o, "target")),
           json_string_value(json_object_get(o, "platform_policy")));
    printf("%-24s %6s %7s %6s %9s %8s %7s %7s %12s\n", "REPOSITORY", "GROUPS", "CHANGED", "TAGS",
           "UNCHANGED", "TO WRITE", "PROBLEMS", "FETCH", "COUNTED GETS");
    size_t i, k, shown = 0;
    json_t *r, *g;
    json_t *groups = json_object_get(o, "groups");
    json_array_foreach(json_object_get(o, "repositories"), i, r) {
        const char *name = json_string_value(json_object_get(r, "name"));
        print_row(name, r);
        json_array_foreach(groups, k, g) {
            if (strcmp(json_string_value(json_object_get(g, "repository")), name) != 0)
                continue;
            if (per_group)
                printf("  %-40s %s: tags %lld, unchanged %lld, write %lld, fetch %lld, GETs "
                       "%lld..%lld\n",
                       json_string_value(json_object_get(g, "key")),
                       json_is_true(json_object_get(g, "changed")) ? "changed" : "check",
                       coord_json_int(g, "tags"), coord_json_int(g, "unchanged"),
                       coord_json_int(g, "to_write"), coord_json_int(g, "digests_to_fetch"),
                       coord_json_int(g, "gets_min"), coord_json_int(g, "gets_max"));
            size_t n;
            json_t *msg;
            json_array_foreach(json_object_get(g, "problems"), n, msg) {
                if (shown++ < PLAN_PROBLEMS_SHOWN)
                    printf("  %s: %s\n", json_string_value(json_object_get(g, "key")),
                           json_string_value(msg));
            }
        }
    }
    if (shown > PLAN_PROBLEMS_SHOWN)
        printf("  ... and %zu more problems (all of them in --json)\n",
               shown - PLAN_PROBLEMS_SHOWN);
    json_t *t = json_object_get(o, "totals");
    print_row("total", t);
    if (coord_json_int(t, "missing_upstream"))
        printf("  %lld tags missing upstream (the worker fails them)\n",
               coord_json_int(t, "missing_upstream"));
    printf("counted GETs (Docker Hub pulls): at least %lld, at most %lld\n"
           "  each index the target lacks costs 1, plus up to 2 per platform for its image and\n"
           "  attestation manifests the target lacks; digests it has cost 0; HEADs are free\n",
           coord_json_int(t, "gets_min"), coord_json_int(t, "gets_max"));
    json_array_foreach(json_object_get(o, "sources"), i, r) {
        char gets[48];
        json_t *mx = json_object_get(r, "gets_max");
        if (json_is_integer(mx))
            snprintf(gets, sizeof(gets), "%lld..%lld", coord_json_int(r, "gets_min"),
                     json_integer_value(mx));
        else
            snprintf(gets, sizeof(gets), "%lld..? (an index of all platforms)",
                     coord_json_int(r, "gets_min"));
        printf("sync file: %s -> %s: tags %lld, unchanged %lld, write %lld, fetch %lld, GETs "
               "%s%s%s\n",
               json_string_value(json_object_get(r, "source")),
               json_string_value(json_object_get(r, "target")), coord_json_int(r, "tags"),
               coord_json_int(r, "unchanged"), coord_json_int(r, "to_write"),
               coord_json_int(r, "digests_to_fetch"), gets,
               json_is_true(json_object_get(r, "referrers_api_unpriced"))
                   ? " + the referrers the API lists (unknown until the run)"
                   : "",
               json_is_true(json_object_get(r, "counted")) ? " (counted)" : "");
    }
    json_t *b = json_object_get(o, "budget");
    const char *verdict = json_string_value(json_object_get(b, "verdict"));
    char window[32] = "?";
    if (json_is_integer(json_object_get(b, "window_s")))
        coord_status_duration(coord_json_int(b, "window_s") * 1000, window, sizeof(window));
    if (json_is_integer(json_object_get(b, "remaining")))
        printf("budget: %lld of %lld pulls left per %s window (source %s): %s\n",
               coord_json_int(b, "remaining"), coord_json_int(b, "limit"), window,
               json_is_string(json_object_get(b, "source"))
                   ? json_string_value(json_object_get(b, "source"))
                   : "?",
               strcmp(verdict, "fits") == 0         ? "the run fits"
               : strcmp(verdict, "may_exceed") == 0 ? "the run may run out and be deferred"
                                                    : "the run will run out and be deferred");
    else
        printf("budget: %s\n", strcmp(verdict, "unlimited") == 0 ? "upstream reports no pull limit"
                                                                 : "not reported by upstream");
    json_array_foreach(json_object_get(o, "removed_tags"), i, r) {
        printf("removed from the catalog (kept on the target): %s:",
               json_string_value(json_object_get(r, "repository")));
        json_array_foreach(json_object_get(r, "tags"), k, g)
            printf(" %s", json_string_value(g));
        putchar('\n');
    }
    json_array_foreach(json_object_get(o, "catalog_errors"), i, r)
        printf("catalog error: %s: %s\n", json_string_value(json_object_get(r, "repository")),
               json_string_value(json_object_get(r, "error")));
}

/* ---- main
 * ------------------------------------------------------------------------------------------ */

static void plan_free(struct plan_ctx *p)
{
    for (size_t i = 0; i < p->ngroups; i++) {
        free(p->groups[i].source_repo);
        free(p->groups[i].target_repo);
        free(p->groups[i].tags);
        json_decref(p->groups[i].problems);
    }
    free(p->groups);
    free(p->digests);
    coord_groups_free(p->cgroups, p->ncgroups);
    reg_registry_free(p->up);
    reg_registry_free(p->dst);
    reg_client_free(p->client);
    if (p->loop)
        ev_loop_destroy(p->loop);
    coord_selection_free(&p->sel);
}

/* Resolve the commit and the marker; read the catalog. */
static int load(struct plan_ctx *p, struct catalog *cat, struct marker *m, char *commit,
                struct coord_view *v, struct err *e)
{
    m->source = "none";
    if (cfg_str(p->c, CFG_ID_REDIS)) {
        struct err re;
        if (read_marker(p->c, m, &re) < 0) {
            m->source = "unreachable";
            m->from[0] = m->resume[0] = '\0';
            fprintf(stderr, "hubsync-coordinator plan: %s; planning as a first run\n", re.msg);
        }
    }
    if (m->resume[0])
        snprintf(commit, CATALOG_SHA_LEN + 1, "%s", m->commit);
    else if (catalog_resolve(cat, cfg_str(p->c, COORD_ID_REF), commit, e) < 0)
        return -1;
    if (coord_repos_check(cat, commit, &p->sel.repos, &p->sel.exclude, e) < 0)
        return -1;
    return coord_view_read(cat, &p->sel, commit, m->from, v, e);
}

int coord_plan_main(int argc, char **argv)
{
    struct cfg c;
    struct plan_ctx p;
    struct err e;
    struct catalog *cat = NULL;
    struct coord_view v;
    struct marker m;
    char commit[CATALOG_SHA_LEN + 1];
    int code;
    struct syncfile *sf = NULL;
    struct coord_sources src;
    memset(&p, 0, sizeof(p));
    memset(&v, 0, sizeof(v));
    memset(&m, 0, sizeof(m));
    memset(&src, 0, sizeof(src));
    if (coord_parse_args(&c, plan_opts, NPLAN_OPTS, argc, argv, plan_usage, &code) < 0)
        return code;
    p.c = &c;
    code = COORD_EXIT_USAGE;
    if (cfg_setup_log(&c, "coordinator", &e) < 0 || coord_selection_init(&p.sel, &c, &e) < 0) {
        coord_fail("plan", e.msg);
        goto out;
    }
    if (cfg_registries_check(&c, &e) < 0 || coord_sync_file_load(&c, &sf, &e) < 0) {
        coord_fail("plan", e.msg);
        goto out;
    }
    if (coord_catalog_open(&cat, &c, NULL, NULL, &e) < 0 ||
        load(&p, cat, &m, commit, &v, &e) < 0) {
        coord_fail("plan", e.msg);
        goto out;
    }
    code = 1;
    coord_groups_list(&p.sel, &v, &p.cgroups, &p.ncgroups);
    groups_init(&p);
    p.max_inflight = (int)cfg_int(&c, COORD_ID_CONCURRENCY);
    p.loop = ev_loop_new(EVFLAG_AUTO);
    struct reg_client_opts ro;
    reg_client_opts_default(&ro);
    ro.hooks.on_ratelimit = on_ratelimit;
    ro.hooks.arg = &p;
    if (!p.loop || !(p.client = reg_client_new(p.loop, &ro, &e)) ||
        !(p.up = registry(&p, cfg_str(&c, CFG_ID_UPSTREAM), "HUBSYNC_UPSTREAM", &e)) ||
        !(p.dst = registry(&p, cfg_str(&c, CFG_ID_TARGET), "HUBSYNC_TARGET", &e))) {
        coord_fail("plan", p.loop ? e.msg : "cannot create an event loop");
        goto out;
    }
    probe(&p);
    if (sf && coord_sources_resolve(sf, cfg_str(&c, CFG_ID_UPSTREAM), cfg_str(&c, CFG_ID_TARGET),
                                    NULL, NULL, &src, &e) < 0) {
        coord_fail("plan", e.msg);
        goto out;
    }
    json_t *o = report(&p, &v, commit, &m, sf, &src);
    if (cfg_bool(&c, COORD_ID_JSON)) {
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    } else {
        print_readable(o, cfg_bool(&c, COORD_ID_GROUPS));
    }
    json_t *t = json_object_get(o, "totals");
    code = coord_json_int(t, "errors") || p.digest_errors || v.snap->nerrors ||
                   json_array_size(src.errors)
               ? COORD_EXIT_PARTIAL
               : COORD_EXIT_OK;
    json_decref(o);
out:
    coord_sources_free(&src);
    syncfile_free(sf);
    plan_free(&p);
    coord_view_free(&v);
    catalog_close(cat);
    cfg_free(&c);
    return code;
}
