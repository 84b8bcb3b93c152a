/* sync: the `sync` subcommand, hubsync's main job.
 *
 * One run: read official-images at the wanted commit, work out the groups
 * that changed since the last fully synced commit (the marker in Redis),
 * and enqueue one job per selected tag group: first the changed ones, then
 * every other one as a cheap check (a worker HEADs its tags, which is free,
 * and copies only what differs, so upstream rebuilds are found on every
 * run). The run is planned before it is created (a plan that cannot be
 * made leaves no run; a repository that makes no valid job is reported and
 * the others go on). The run's record in Redis counts what workers report,
 * once per job; the marker moves to the run's commit only when every job of
 * the run is done.
 *
 * Only one run is active at a time: a coordinator that starts while a run is
 * unfinished resumes it (only its jobs not settled yet are enqueued again),
 * and only one coordinator holds the lease, also while official-images is
 * fetched. While it waits it enqueues again the jobs of the run that nothing
 * would settle (lost) and keeps the queue's bookkeeping tidy. Without --once
 * the coordinator is a daemon that starts a run every --interval seconds
 * (with jitter) and stands by while another coordinator holds the lease. */
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "coord.h"
#include "job.h"
#include "log.h"
#include "rq.h"
#include "strv.h"
#include "xalloc.h"

#define SYNC_LEASE_MS 30000LL
/* --wait rides out a Redis outage this long, retrying with backoff up to the max. */
#define SYNC_REDIS_OUTAGE_S 600
#define SYNC_POLL_MAX_BACKOFF_S 16u
#define SYNC_POLL_MS 25
#define SYNC_WEBHOOK_FLUSH_S 30 /* --once: the longest wait for the webhook at the end */
#define SYNC_PLAIN_PROGRESS_S 5
#define SYNC_QUIET_S 600      /* no job settled this long: say so */

static const struct cfg_opt sync_opts[] = {
    CFG_OPT_REDIS,
    CFG_OPT_REDIS_PREFIX,
    COORD_OPTS_SOURCE,
    COORD_OPTS_REGISTRIES,
    COORD_OPTS_SELECTION,
    COORD_OPT_SYNC_FILE,
    {COORD_ID_ONCE, "once", "HUBSYNC_ONCE", CFG_BOOL, "false", 0, 0,
     "run one sync and exit (default: daemon)", 0},
    {COORD_ID_WAIT, "wait", "HUBSYNC_WAIT", CFG_BOOL, "false", 0, 0,
     "with --once: wait for the run to finish and print its report", 0},
    {COORD_ID_JSON, "json", NULL, CFG_BOOL, "false", 0, 0, "print the report as JSON", 0},
    {COORD_ID_INTERVAL, "interval", "HUBSYNC_INTERVAL", CFG_INT, "21600", 60, 31536000,
     "daemon: seconds between runs", 0},
    {COORD_ID_JITTER, "jitter", "HUBSYNC_JITTER", CFG_INT, "600", 0, 86400,
     "daemon: up to this many seconds added to each interval at random", 0},
    {COORD_ID_DEFERRED_INTERVAL, "deferred-interval", "HUBSYNC_DEFERRED_INTERVAL", CFG_INT, "1800",
     10, 86400, "daemon: seconds before the next run after one deferred by the pull budget", 0},
    {COORD_ID_KEEP_RUNS, "keep-runs", "HUBSYNC_KEEP_RUNS", CFG_INT, "100", 1, 1000000,
     "keep the records of this many newest runs in Redis (older ones go when a run starts)", 0},
    {COORD_ID_DELETE_REMOVED, "delete-removed", "HUBSYNC_DELETE_REMOVED", CFG_BOOL, "false", 0, 0,
     "after a complete run, delete from the target the tags that left the catalog (a manifest "
     "still tagged with a supported tag is kept; the target must allow deletes)",
     0},
    {COORD_ID_WEBHOOK, "webhook", "HUBSYNC_WEBHOOK", CFG_STR, NULL, 0, 0,
     "POST every event (tags written, moved, removed; runs' ends) to this URL as CloudEvents "
     "JSON, in order, retried with backoff (default: the events stream only)",
     0},
    CFG_OPT_METRICS_LISTEN,
    CFG_OPT_LOG_LEVEL,
    CFG_OPT_LOG_FORMAT,
    CFG_OPT_HELP,
};
#define NSYNC_OPTS ((int)(sizeof(sync_opts) / sizeof(sync_opts[0])))

/* The SIGTERM or SIGINT received: the daemon stops between runs or while waiting. */
static volatile sig_atomic_t sync_stop;

static void on_stop_signal(int sig)
{
    sync_stop = sig;
}

struct plan;

struct sync_ctx {
    struct cfg *c;
    struct rq q;
    struct rconn_setup setup;
    struct rconn rc;
    struct coord_selection sel;
    struct syncfile *sources; /* --sync-file, or NULL */
    char token[96];
    char run[JOB_RUN_MAX + 1];
    struct plan *plan;  /* the run's jobs, while it is started and waited for */
    time_t last_renew; /* of the lease, while the source is fetched */
    struct coord_observe obs;
    struct coord_webhook wh;
    double started, planned; /* this run's start and its plan made (monotonic s) */
    int stopped;       /* fetch_tick stopped a fetch or a read: signal, or the lease lost */
};

/* ---- Redis helpers -------------------------------------------------------------------------- */

static const char *str_or(const char *s, const char *dflt)
{
    return s ? s : dflt;
}

static int exec(struct sync_ctx *s, struct rq_cmd *c, struct rq_res *res, struct err *e)
{
    return rq_exec(&s->rc, c, res, e);
}

static int lease_take(struct sync_ctx *s, struct err *e)
{
    struct rq_res res;
    int rc = exec(s, rq_cmd_lease_acquire(s->q.keys.coordinator, s->token, SYNC_LEASE_MS), &res, e);
    int held = rc == 0 && res.status == RQ_DONE;
    rq_res_free(&res);
    if (rc < 0)
        return -1;
    return held;
}

/* 1 still ours, 0 lost, -1 Redis trouble. */
static int lease_renew(struct sync_ctx *s, struct err *e)
{
    struct rq_res res;
    int rc = exec(s, rq_cmd_lease_renew(s->q.keys.coordinator, s->token, SYNC_LEASE_MS), &res, e);
    int held = rc == 0 && res.status == RQ_DONE;
    rq_res_free(&res);
    return rc < 0 ? -1 : held;
}

static void lease_drop(struct sync_ctx *s)
{
    struct rq_res res;
    struct err e;
    exec(s, rq_cmd_lease_release(s->q.keys.coordinator, s->token), &res, &e);
    rq_res_free(&res);
}

/* The run record as a JSON object of its fields (numbers where numeric). */
static json_t *run_record(struct sync_ctx *s, const char *run, struct err *e)
{
    struct rq_res res;
    if (exec(s, rq_cmd_run_get(&s->q, run), &res, e) < 0) {
        rq_res_free(&res);
        return NULL;
    }
    json_t *o = coord_json_fields(res.items, res.nitems);
    rq_res_free(&res);
    return o;
}

/* Note field = value in the run's record. */
static int run_note(struct sync_ctx *s, const char *field, const char *value, struct err *e)
{
    struct rq_res res;
    int rc = exec(s, rq_cmd_run_note(&s->q, s->run, field, value), &res, e);
    rq_res_free(&res);
    return rc;
}

static int run_note_ll(struct sync_ctx *s, const char *field, long long v, struct err *e)
{
    char text[32];
    snprintf(text, sizeof(text), "%lld", v);
    return run_note(s, field, text, e);
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Note when the run's jobs start to be queued (Redis clock, as the settle
 * times the functions note): the start of its work (coord_run_phases). */
static int note_queue_start(struct sync_ctx *s, struct err *e)
{
    struct rq_res res;
    int rc = exec(s, rq_cmd_time(), &res, e);
    long long now = res.n;
    rq_res_free(&res);
    return rc < 0 ? -1 : run_note_ll(s, "enqueued_ms", now, e);
}

/* Note field = the JSON text of v. */
static int run_note_json(struct sync_ctx *s, const char *field, const json_t *v, struct err *e)
{
    char *text = coord_json_text(v, e);
    if (!text)
        return err_prefix(e, "run %s: %s", s->run, field);
    int rc = run_note(s, field, text, e);
    free(text);
    return rc;
}

/* catalog_fetch's and coord_sources_resolve's tick: the lease stays ours while
 * official-images is fetched and the sync file's registries are read. */
static int fetch_tick(void *arg)
{
    struct sync_ctx *s = arg;
    struct err e;
    time_t now = time(NULL);
    if (sync_stop) {
        s->stopped = 1;
        return -1;
    }
    if (now - s->last_renew < SYNC_LEASE_MS / 3000)
        return 0;
    s->last_renew = now;
    if (lease_renew(s, &e) == 0) {
        s->stopped = 1;
        return -1;
    }
    return 0; /* renewed, or Redis trouble: the next tick tries again */
}

/* ---- planning -------------------------------------------------------------------------------- */

struct planned {
    char *key;
    char *json;
    int changed;
    char *entry;        /* a sync-file entry's job: the entry's name, else NULL */
    const char *target; /* ... and where it lands (borrowed from the file) */
};

/* Enqueue a planned job in the run, counted in its sync-file entry too. */
static struct rq_cmd *enqueue_cmd(const struct sync_ctx *s, const struct planned *pj)
{
    return rq_cmd_run_enqueue_entry(&s->q, s->run, pj->key, pj->json, pj->entry, pj->target);
}

struct plan {
    struct planned *jobs;
    size_t n;
    size_t tags;
    json_t *removed; /* [{"repository":..,"tags":[..]}] */
    json_t *errors;  /* [{"repository":..,"error":..}]: repositories (partly) not synced */
    struct strv repos;   /* the repositories of the jobs */
    struct strv changed; /* ... and those whose groups changed since the run's from */
};

static void plan_free(struct plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->jobs[i].key);
        free(p->jobs[i].json);
        free(p->jobs[i].entry);
    }
    free(p->jobs);
    json_decref(p->removed);
    json_decref(p->errors);
    strv_free(&p->repos);
    strv_free(&p->changed);
    memset(p, 0, sizeof(*p));
}

/* The planned job of key, or NULL. */
static const struct planned *plan_find(const struct plan *p, const char *key)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->jobs[i].key, key) == 0)
            return &p->jobs[i];
    return NULL;
}

/* A repository left out of the run, or part of it: logged and listed once. */
static void plan_error(struct plan *p, const char *repo, const char *msg)
{
    for (size_t i = 0; i < json_array_size(p->errors); i++) {
        json_t *x = json_object_get(json_array_get(p->errors, i), "repository");
        if (strcmp(json_string_value(x), repo) == 0)
            return;
    }
    log_warn("catalog: library/%s: %s (its groups are not synced this run)", repo, msg);
    json_array_append_new(p->errors, json_pack("{s:s, s:s}", "repository", repo, "error", msg));
}

/* Turn the run's groups into jobs, in coord_groups_list() order. A group
 * that makes no valid job (a library file name that is no repository name)
 * is left out and its repository listed in p->errors: the others go on. */
static void plan_build(struct sync_ctx *s, const struct coord_view *v, struct plan *p)
{
    const struct cfg *c = s->c;
    const char *prefix = cfg_str(c, COORD_ID_TARGET_PREFIX);
    struct coord_group *groups = NULL;
    size_t ngroups = 0;
    coord_groups_list(&s->sel, v, &groups, &ngroups);
    p->jobs = xcalloc(ngroups ? ngroups : 1, sizeof(*p->jobs));
    for (size_t i = 0; i < ngroups; i++) {
        const struct coord_group *g = &groups[i];
        struct job j = {0};
        struct err e;
        j.version = JOB_VERSION;
        j.run = s->run;
        j.upstream = (char *)cfg_str(c, CFG_ID_UPSTREAM);
        j.target = (char *)cfg_str(c, CFG_ID_TARGET);
        j.source_repo = xasprintf("library/%s", g->repo->name);
        j.target_repo = xasprintf("%s%s", prefix, g->repo->name);
        j.tags = g->tags;
        j.ntags = g->ntags;
        j.platforms = s->sel.platforms.v;
        j.nplatforms = s->sel.platforms.n;
        j.policy = s->sel.policy;
        j.key = g->key;
        j.reason = g->changed ? JOB_REASON_CHANGED : JOB_REASON_CHECK;
        char *json = job_encode(&j, &e);
        free(j.source_repo);
        free(j.target_repo);
        if (!json) {
            err_prefix(&e, "job %s", g->key);
            plan_error(p, g->repo->name, e.msg);
            continue;
        }
        p->jobs[p->n++] = (struct planned){xstrdup(g->key), json, g->changed, NULL, NULL};
        p->tags += g->ntags;
        if (!strv_has(&p->repos, g->repo->name))
            strv_push(&p->repos, xstrdup(g->repo->name));
        if (g->changed && !strv_has(&p->changed, g->repo->name))
            strv_push(&p->changed, xstrdup(g->repo->name));
    }
    p->removed = coord_removed_tags(&s->sel, v);
    coord_groups_free(groups, ngroups);
}

/* The sync file's groups as jobs after the official ones: each is a check
 * (the worker copies only what differs from the target). */
static void plan_sources(struct sync_ctx *s, struct plan *p, const struct coord_sources *src)
{
    const struct cfg *c = s->c;
    json_array_extend(p->errors, src->errors);
    p->jobs = xrealloc(p->jobs, (p->n + src->n + 1) * sizeof(*p->jobs));
    for (size_t i = 0; i < src->n; i++) {
        const struct coord_source_group *g = &src->g[i];
        struct job j = {0};
        struct err e;
        j.version = JOB_VERSION;
        j.run = s->run;
        j.key = g->key;
        j.upstream = (char *)g->upstream;
        j.source_repo = g->entry->repo;
        j.target = (char *)cfg_str(c, CFG_ID_TARGET);
        j.target_repo = g->entry->target;
        j.tags = g->tags;
        j.ntags = g->ntags;
        char *pin = (char *)g->digest;
        j.digests = g->pinned ? &pin : NULL;
        j.ndigests = g->pinned;
        j.referrers = g->referrers;
        j.nreferrers = g->nreferrers;
        j.find_referrers = g->find_referrers;
        j.platforms = g->entry->platforms.v;
        j.nplatforms = g->entry->platforms.n;
        j.policy = g->entry->policy;
        j.reason = JOB_REASON_CHECK;
        char *json = job_encode(&j, &e);
        if (!json) {
            char *name = syncfile_entry_name(g->entry);
            log_warn("sync file: %s: job %s: %s (not synced this run)", name, g->key, e.msg);
            json_array_append_new(p->errors, json_pack("{s:s, s:s+}", "repository", name,
                                                       "error", "job: ", e.msg));
            free(name);
            continue;
        }
        p->jobs[p->n++] = (struct planned){xstrdup(g->key), json, 0,
                                           syncfile_entry_name(g->entry), g->entry->target};
        p->tags += g->ntags;
    }
}

/* Read the catalog of the run's commit and the changes since `from`, and the
 * sync file's sources. Nothing is written anywhere: a plan that cannot be made
 * leaves no run behind. -2 when stopped (a signal, the lease lost): another
 * coordinator may hold the run now. */
static int plan_run(struct sync_ctx *s, struct catalog *cat, const char *commit, const char *from,
                    struct plan *p, struct err *e)
{
    struct coord_view v;
    memset(p, 0, sizeof(*p));
    p->errors = json_array();
    int rc = coord_view_read(cat, &s->sel, commit, from, &v, e);
    if (rc == 0) {
        /* A broken library file keeps the run from completing: its groups are unknown. */
        for (size_t i = 0; i < v.snap->nerrors; i++)
            plan_error(p, v.snap->errors[i].repo, v.snap->errors[i].msg);
        plan_build(s, &v, p);
    }
    coord_view_free(&v);
    if (rc == 0 && s->sources) {
        struct coord_sources src;
        /* The lease stays ours however long the registries take. */
        rc = coord_sources_resolve(s->sources, cfg_str(s->c, CFG_ID_UPSTREAM), NULL, fetch_tick,
                                   s, &src, e);
        if (rc == 0)
            plan_sources(s, p, &src);
        coord_sources_free(&src);
    }
    return rc < 0 && s->stopped ? -2 : rc;
}

/* ---- one run ----------------------------------------------------------------------------------- */

static void new_run_id(char out[JOB_RUN_MAX + 1])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char when[32];
    strftime(when, sizeof(when), "%Y%m%dT%H%M%SZ", &tm);
    snprintf(out, JOB_RUN_MAX + 1, "%s-%04x", when, (unsigned)(rand() & 0xffff));
}

/* The repositories the run changes are behind upstream since the commit
 * changing them was made, unless they were already (an earlier run that did
 * not complete): metrics show how long. */
static int mark_behind(struct sync_ctx *s, struct catalog *cat, const char *commit,
                       const struct plan *p, struct err *e)
{
    long long made_s;
    if (catalog_commit_time(cat, commit, &made_s, e) < 0)
        return -1;
    for (size_t i = 0; i < p->changed.n; i++) {
        struct rq_res res;
        int rc = exec(s, rq_cmd_behind_mark(&s->q, p->changed.v[i], made_s * 1000), &res, e);
        rq_res_free(&res);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* A complete run: every repository it covered holds upstream's newest. */
static void clear_behind(struct sync_ctx *s, const struct plan *p)
{
    for (size_t i = 0; i < p->repos.n; i++) {
        struct rq_res res;
        struct err e;
        if (exec(s, rq_cmd_behind_clear(&s->q, p->repos.v[i]), &res, &e) < 0)
            log_warn("run %s: %s", s->run, e.msg);
        rq_res_free(&res);
    }
}

static int enqueue_all(struct sync_ctx *s, const struct plan *p, struct err *e)
{
    long long added = 0, dup = 0, settled = 0;
    for (size_t i = 0; i < p->n; i++) {
        struct rq_res res;
        if (exec(s, enqueue_cmd(s, &p->jobs[i]), &res, e) < 0) {
            rq_res_free(&res);
            return err_prefix(e, "enqueue %s", p->jobs[i].key);
        }
        added += res.status == RQ_ADDED;
        dup += res.status == RQ_DUPLICATE;
        settled += res.status == RQ_SETTLED;
        rq_res_free(&res);
        if ((i & 63) == 0 && lease_renew(s, e) == 0)
            return err_set(e, "lost the coordinator lease while enqueueing");
    }
    log_info("run %s: %zu jobs (%lld enqueued, %lld already pending, %lld settled before)", s->run,
             p->n, added, dup, settled);
    return run_note(s, "enqueued", "1", e);
}

/* The lowest pull budget any limited source reports: remaining, limit (-1: none). */
static void budget_view(struct sync_ctx *s, long long *remaining, long long *limit)
{
    struct err e;
    struct rq_res src;
    *remaining = *limit = -1;
    if (exec(s, rq_cmd_budget_sources(&s->q), &src, &e) == 0) {
        for (size_t i = 0; i < src.nitems; i++) {
            struct rq_res b;
            if (exec(s, rq_cmd_budget_get(&s->q, src.items[i]), &b, &e) == 0 &&
                rq_res_field_int(&b, "unlimited", 0) != 1) {
                long long rem = rq_res_field_int(&b, "remaining", -1);
                if (rem >= 0 && (*remaining < 0 || rem < *remaining)) {
                    *remaining = rem;
                    *limit = rq_res_field_int(&b, "limit", -1);
                }
            }
            rq_res_free(&b);
        }
    }
    rq_res_free(&src);
}

static void progress(struct sync_ctx *s, json_t *rec, long long deferred, time_t started,
                     int tty)
{
    long long total = coord_json_int(rec, "jobs_total"), done = coord_json_int(rec, "jobs_done");
    long long failed = coord_json_int(rec, "jobs_failed") + coord_json_int(rec, "jobs_dead");
    long long rem, lim;
    budget_view(s, &rem, &lim);
    char bytes[32], budget[64], eta[32] = "";
    coord_human_bytes(coord_json_int(rec, RQ_RUN_NAME(blob_bytes_copied)), bytes, sizeof(bytes));
    if (rem >= 0)
        snprintf(budget, sizeof(budget), "%lld/%lld left", rem, lim);
    else
        snprintf(budget, sizeof(budget), "no limit seen");
    long long settled = done + failed + deferred;
    double el = difftime(time(NULL), started);
    if (settled > 0 && settled < total && el > 0)
        snprintf(eta, sizeof(eta), " ETA %.0fs", el / (double)settled * (double)(total - settled));
    fprintf(stderr,
            "%srun %s: jobs %lld/%lld (failed %lld, deferred %lld) tags written %lld | "
            "pulls %lld, %s | %s%s%s",
            tty ? "\r\033[K" : "", s->run, done, total, failed, deferred,
            coord_json_int(rec, RQ_RUN_NAME(tags_written)),
            coord_json_int(rec, RQ_RUN_NAME(upstream_manifest_gets)), budget, bytes, eta,
            tty ? "" : "\n");
    fflush(stderr);
}

enum run_end { RUN_COMPLETE, RUN_DEFERRED, RUN_FAILED };

/* What waiting for a run keeps from one look to the next. */
struct waiting {
    time_t started, last_plain, last_chores;
    time_t last_change, last_quiet; /* of the settled count; of the warning about it */
    long long settled;
    struct coord_run_check check; /* lost jobs, housekeeping */
};

/* The command enqueueing the planned job of key again (coord_run_check_tick). */
static struct rq_cmd *requeue_cmd(void *arg, const char *key)
{
    const struct sync_ctx *s = arg;
    const struct planned *pj = plan_find(s->plan, key);
    return pj ? enqueue_cmd(s, pj) : NULL;
}

/* The once-a-second part of a look: the lease, due delayed jobs, lost jobs,
 * housekeeping. As wait_round; 1 only for a run that cannot complete. */
static int chores(struct sync_ctx *s, struct waiting *w, time_t now, enum run_end *end,
                  struct err *e)
{
    int held = lease_renew(s, e);
    if (held == 0) {
        err_set(e, "lost the coordinator lease");
        return -1;
    }
    struct rq_res res;
    int rc = exec(s, rq_cmd_promote(&s->q, 100), &res, e);
    rq_res_free(&res);
    if (rc < 0)
        return -2;
    rc = coord_run_check_tick(&w->check, &s->rc, &s->q, "run", s->run, requeue_cmd, s, now, e);
    if (rc == -1) {
        struct err e2;
        log_error("run %s: %s", s->run, e->msg);
        if (run_note(s, "error", e->msg, &e2) < 0)
            log_warn("run %s: %s", s->run, e2.msg);
        *end = RUN_FAILED;
        return 1;
    }
    if (rc < 0)
        return rc;
    if (now - w->last_change >= SYNC_QUIET_S && now - w->last_quiet >= SYNC_QUIET_S) {
        w->last_quiet = now;
        log_warn("run %s: no job settled for %lds (no worker running? a registry down? "
                 "hubsync-coordinator status shows the queue and the workers)",
                 s->run, (long)(now - w->last_change));
    }
    return 0;
}

/* One look at the run: 1 settled (end and deferred set), 0 not yet, -1 stopped or
 * the lease lost, -2 Redis did not answer (worth another try). */
static int wait_round(struct sync_ctx *s, struct waiting *w, enum run_end *end,
                      long long *deferred_out, struct err *e)
{
    int tty = isatty(2);
    json_t *rec = run_record(s, s->run, e);
    if (!rec)
        return -2;
    long long total = coord_json_int(rec, "jobs_total"), done = coord_json_int(rec, "jobs_done");
    long long failed = coord_json_int(rec, "jobs_failed") + coord_json_int(rec, "jobs_dead");
    int enqueued = json_integer_value(json_object_get(rec, "enqueued")) == 1;
    long long deferred = coord_json_int(rec, "jobs_deferred");
    time_t now = time(NULL);
    int over = enqueued && done + failed + deferred >= total;
    /* A terminal's line is redrawn once a second and at the end, plain lines every few. */
    if (tty ? now != w->last_plain || over : now - w->last_plain >= SYNC_PLAIN_PROGRESS_S) {
        progress(s, rec, deferred, w->started, tty);
        w->last_plain = now;
    }
    int errors = json_object_get(rec, "catalog_errors") != NULL;
    json_decref(rec);
    if (done + failed + deferred != w->settled) {
        w->settled = done + failed + deferred;
        w->last_change = now;
    }
    *deferred_out = deferred;
    if (over) {
        if (tty)
            fputc('\n', stderr);
        /* Complete only when every job of the run is done. */
        *end = failed || errors ? RUN_FAILED : done == total ? RUN_COMPLETE : RUN_DEFERRED;
        return 1;
    }
    if (sync_stop) {
        err_set(e, "stopped by a signal while waiting; the run goes on and the next "
                   "coordinator resumes it");
        return -1;
    }
    /* The run record is read every SYNC_POLL_MS (a run ends as soon as its last job
     * does); the rest needs a look once a second. */
    if (now == w->last_chores)
        return 0;
    w->last_chores = now;
    return chores(s, w, now, end, e);
}

/* Wait until every job of the run is settled or waits for the pull budget. A Redis
 * restart or outage is waited out with backoff (the run lives in Redis, so nothing is
 * lost by waiting), up to SYNC_REDIS_OUTAGE_S. */
static int wait_run(struct sync_ctx *s, enum run_end *end, long long *deferred_out, struct err *e)
{
    struct waiting w = {0};
    time_t down_since = 0;
    unsigned delay = 1;
    w.started = w.last_change = time(NULL);
    coord_run_check_init(&w.check, w.started);
    for (;;) {
        int rc = wait_round(s, &w, end, deferred_out, e);
        if (rc == 1)
            return 0;
        if (rc == -1)
            return -1;
        if (rc == -2) {
            time_t now = time(NULL);
            if (!down_since)
                down_since = now;
            if (now - down_since >= SYNC_REDIS_OUTAGE_S || sync_stop)
                return -1;
            log_warn("run %s: %s; trying again in %us", s->run, e->msg, delay);
            sleep(delay);
            delay = delay * 2 > SYNC_POLL_MAX_BACKOFF_S ? SYNC_POLL_MAX_BACKOFF_S : delay * 2;
            continue;
        }
        down_since = 0;
        delay = 1;
        coord_observe_tick(&s->obs);
        coord_webhook_tick(&s->wh, &s->rc, &s->q);
        usleep(SYNC_POLL_MS * 1000);
    }
}

static json_t *report(struct sync_ctx *s, enum run_end end, long long deferred, struct err *e)
{
    static const char *const names[] = {"complete", "deferred", "failed"};
    json_t *rec = run_record(s, s->run, e);
    if (!rec)
        return NULL;
    json_t *o = json_pack("{s:s, s:O?, s:O?, s:s}", "run", s->run, "commit",
                          json_object_get(rec, "commit"), "from", json_object_get(rec, "from"),
                          "status", names[end]);
    json_object_set_new(o, "jobs_total", json_integer(coord_json_int(rec, "jobs_total")));
    json_object_set_new(o, "jobs_done", json_integer(coord_json_int(rec, "jobs_done")));
    json_object_set_new(
        o, "jobs_failed",
        json_integer(coord_json_int(rec, "jobs_failed") + coord_json_int(rec, "jobs_dead")));
    json_object_set_new(o, "jobs_deferred", json_integer(deferred));
    json_object_set_new(o, "jobs_retried", json_integer(coord_json_int(rec, "jobs_retried")));
    for (int i = 0; i < RQ_NRUN_COUNTERS; i++)
        json_object_set_new(o, rq_run_counter_names[i],
                            json_integer(coord_json_int(rec, rq_run_counter_names[i])));
    json_t *removed =
        json_loads(str_or(json_string_value(json_object_get(rec, "removed_tags")), "[]"), 0, NULL);
    json_object_set_new(o, "removed_tags", removed ? removed : json_array());
    json_t *cerr = json_loads(
        str_or(json_string_value(json_object_get(rec, "catalog_errors")), "[]"), 0, NULL);
    json_object_set_new(o, "catalog_errors", cerr ? cerr : json_array());
    json_object_set_new(o, "started_ms", json_integer(coord_json_int(rec, "started_ms")));
    json_object_set_new(o, "phases", coord_run_phases(rec));
    if (json_is_string(json_object_get(rec, "error")))
        json_object_set(o, "error", json_object_get(rec, "error"));
    json_decref(rec);
    return o;
}

static void print_report(json_t *o, int as_json)
{
    if (as_json) {
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        return;
    }
    char bytes[32];
    coord_human_bytes(coord_json_int(o, RQ_RUN_NAME(blob_bytes_copied)), bytes, sizeof(bytes));
    printf("run %s (%.12s): %s\n", json_string_value(json_object_get(o, "run")),
           str_or(json_string_value(json_object_get(o, "commit")), "?"),
           json_string_value(json_object_get(o, "status")));
    printf("  jobs      %lld total, %lld done, %lld failed, %lld deferred\n",
           coord_json_int(o, "jobs_total"), coord_json_int(o, "jobs_done"),
           coord_json_int(o, "jobs_failed"), coord_json_int(o, "jobs_deferred"));
    printf("  tags      %lld total, %lld unchanged, %lld written\n",
           coord_json_int(o, RQ_RUN_NAME(tags_total)),
           coord_json_int(o, RQ_RUN_NAME(tags_unchanged)),
           coord_json_int(o, RQ_RUN_NAME(tags_written)));
    printf("  upstream  %lld manifest GETs (counted pulls), %lld HEADs (free)\n",
           coord_json_int(o, RQ_RUN_NAME(upstream_manifest_gets)),
           coord_json_int(o, RQ_RUN_NAME(upstream_manifest_heads)));
    printf("  target    %lld manifests pushed, %lld blobs copied (%s), %lld mounted, %lld "
           "already there\n",
           coord_json_int(o, RQ_RUN_NAME(manifests_pushed)),
           coord_json_int(o, RQ_RUN_NAME(blobs_copied)), bytes,
           coord_json_int(o, RQ_RUN_NAME(blobs_mounted)),
           coord_json_int(o, RQ_RUN_NAME(blobs_skipped)));
    char phases[200];
    coord_phases_text(json_object_get(o, "phases"), phases, sizeof(phases));
    if (phases[0])
        printf("  phases    %s\n", phases);
    json_t *removed = json_object_get(o, "removed_tags");
    size_t i;
    json_t *r;
    json_array_foreach(removed, i, r)
    {
        printf("  removed from the catalog%s: %s:",
               json_object_get(o, "pruned") ? "" : " (kept on the target)",
               json_string_value(json_object_get(r, "repository")));
        size_t k;
        json_t *t;
        json_array_foreach(json_object_get(r, "tags"), k, t) printf(" %s", json_string_value(t));
        putchar('\n');
    }
    json_array_foreach(json_object_get(o, "pruned"), i, r)
    {
        size_t k;
        json_t *t;
        printf("  deleted from %s:", json_string_value(json_object_get(r, "repository")));
        json_array_foreach(json_object_get(r, "deleted"), k, t) printf(" %s", json_string_value(t));
        putchar('\n');
        json_array_foreach(json_object_get(r, "kept"), k, t)
            printf("  kept %s: its manifest is also tagged %s\n",
                   json_string_value(json_object_get(t, "tag")),
                   json_string_value(json_object_get(t, "kept_by")));
        if (json_object_get(r, "error"))
            printf("  delete error: %s\n", json_string_value(json_object_get(r, "error")));
    }
    json_t *cerr = json_object_get(o, "catalog_errors");
    json_array_foreach(cerr, i, r) printf("  catalog error: %s: %s\n",
                                          json_string_value(json_object_get(r, "repository")),
                                          json_string_value(json_object_get(r, "error")));
    if (json_object_get(o, "error"))
        printf("  error: %s\n", json_string_value(json_object_get(o, "error")));
}

/* Settle the run: record its end, move the marker if it is complete, and take
 * its jobs still waiting for the budget off the queue (the next run plans
 * them again). */
static int finish_run(struct sync_ctx *s, enum run_end end, struct err *e)
{
    struct rq_res res;
    static const char *const states[] = {"done", "deferred", "failed"};
    if (exec(s, rq_cmd_purge_delayed(&s->q, s->run), &res, e) < 0) {
        rq_res_free(&res);
        return -1;
    }
    rq_res_free(&res);
    int rc = exec(s, rq_cmd_run_finish(&s->q, s->run, states[end], end == RUN_COMPLETE), &res, e);
    rq_res_free(&res);
    return rc;
}

/* A resumed run whose plan cannot be made (its commit is gone, ...) would fail the
 * same way in every later run: it ends as failed, saying why. */
static void give_up_resumed(struct sync_ctx *s, const char *why)
{
    struct err e;
    log_error("run %s: %s; the run ends as failed and the next one starts afresh", s->run, why);
    if (run_note(s, "error", why, &e) < 0 || finish_run(s, RUN_FAILED, &e) < 0)
        log_warn("run %s: %s", s->run, e.msg);
}

/* The run's record before its jobs go out: what it covers and what it cannot. */
static int describe_run(struct sync_ctx *s, const struct plan *p, struct err *e)
{
    char tags[32];
    snprintf(tags, sizeof(tags), "%zu", p->tags);
    if (run_note(s, RQ_RUN_NAME(tags_total), tags, e) < 0 ||
        run_note_json(s, "removed_tags", p->removed, e) < 0)
        return -1;
    for (size_t i = 0; s->sources && i < s->sources->nentries; i++) {
        const struct syncfile_entry *en = &s->sources->entries[i];
        char *name = syncfile_entry_name(en);
        struct rq_res res;
        int rc = exec(s, rq_cmd_run_entry_note(&s->q, s->run, name, "target", en->target), &res,
                      e);
        rq_res_free(&res);
        free(name);
        if (rc < 0)
            return -1;
    }
    return json_array_size(p->errors) ? run_note_json(s, "catalog_errors", p->errors, e) : 0;
}

/* Resolve the commit to sync (or resume the unfinished run), plan the run into
 * s->plan, and only then create it and enqueue its jobs: a plan that cannot be
 * made creates no run. -2 when the selection names a repository
 * official-images lacks (a usage error, found before a new run is created). */
static int start_run(struct sync_ctx *s, struct catalog *cat, struct err *e)
{
    int rc = -1;
    char commit[CATALOG_SHA_LEN + 1], from[CATALOG_SHA_LEN + 1] = "";
    json_t *cur = NULL;
    struct rq_res res;
    memset(&res, 0, sizeof(res));

    if (exec(s, rq_cmd_run_current(&s->q), &res, e) < 0)
        goto out;
    int resumed = res.status == RQ_VALUE && res.str;
    if (resumed) {
        snprintf(s->run, sizeof(s->run), "%s", res.str);
        cur = run_record(s, s->run, e);
        if (!cur)
            goto out;
        snprintf(commit, sizeof(commit), "%s",
                 str_or(json_string_value(json_object_get(cur, "commit")), ""));
        snprintf(from, sizeof(from), "%s",
                 str_or(json_string_value(json_object_get(cur, "from")), ""));
        log_info("resuming run %s at %.12s", s->run, commit);
    } else {
        if (catalog_resolve(cat, cfg_str(s->c, COORD_ID_REF), commit, e) < 0)
            goto out;
        rq_res_free(&res);
        if (exec(s, rq_cmd_synced_commit(&s->q), &res, e) < 0)
            goto out;
        if (res.status == RQ_VALUE && res.str)
            snprintf(from, sizeof(from), "%s", res.str);
        new_run_id(s->run);
    }
    rq_res_free(&res);
    if (coord_repos_check(cat, commit, &s->sel.repos, &s->sel.exclude, e) < 0) {
        rc = -2;
        goto out;
    }
    if (lease_renew(s, e) == 0) {
        err_set(e, "lost the coordinator lease while fetching official-images");
        goto out;
    }
    int planned = plan_run(s, cat, commit, from, s->plan, e);
    if (planned < 0) {
        if (resumed && planned == -1)
            give_up_resumed(s, e->msg);
        goto out;
    }
    s->planned = mono_s();
    if (!resumed) {
        /* Leftovers of an earlier run waiting for the budget are planned again. */
        if (exec(s, rq_cmd_purge_delayed(&s->q, NULL), &res, e) < 0)
            goto out;
        rq_res_free(&res);
        if (exec(s,
                 rq_cmd_run_create(&s->q, s->run, commit, (int)cfg_int(s->c, COORD_ID_KEEP_RUNS)),
                 &res, e) < 0)
            goto out;
        if (res.status != RQ_DONE) {
            err_set(e, "run %s exists already", s->run);
            goto out;
        }
        if (run_note(s, "from", from, e) < 0)
            goto out;
        log_info("run %s: %.12s -> %.12s", s->run, from[0] ? from : "(first run)", commit);
    }
    if (mark_behind(s, cat, commit, s->plan, e) < 0 || describe_run(s, s->plan, e) < 0 ||
        note_queue_start(s, e) < 0 || enqueue_all(s, s->plan, e) < 0)
        goto out;
    double enqueued = mono_s();
    if (run_note_ll(s, "catalog_ms", (long long)((s->planned - s->started) * 1000), e) < 0 ||
        run_note_ll(s, "enqueue_ms", (long long)((enqueued - s->planned) * 1000), e) < 0)
        goto out;
    rc = 0;
out:
    rq_res_free(&res);
    json_decref(cur);
    return rc;
}

/* One run from start to report. Returns the exit code. */
static int one_run(struct sync_ctx *s, int wait, int as_json, enum run_end *end_out)
{
    struct err e;
    struct catalog *cat = NULL;
    struct plan plan = {0};
    int code = 1;
    s->plan = &plan;
    s->last_renew = time(NULL);
    s->started = mono_s();
    s->stopped = 0;
    if (coord_catalog_open(&cat, s->c, fetch_tick, s, &e) < 0) {
        coord_fail("sync", e.msg);
        code = COORD_EXIT_USAGE;
        goto out;
    }
    int started = start_run(s, cat, &e);
    if (started < 0) {
        coord_fail("sync", e.msg);
        if (started == -2)
            code = COORD_EXIT_USAGE;
        goto out;
    }
    if (!wait) {
        printf("run %s enqueued\n", s->run);
        code = 0;
        goto out;
    }
    enum run_end end = RUN_FAILED;
    long long deferred = 0;
    if (wait_run(s, &end, &deferred, &e) < 0) {
        coord_fail("sync", e.msg);
        if (sync_stop)
            code = 128 + sync_stop; /* as a shell reports a command a signal ended */
        goto out;
    }
    if (finish_run(s, end, &e) < 0) {
        coord_fail("sync", e.msg);
        goto out;
    }
    if (end == RUN_COMPLETE)
        clear_behind(s, s->plan);
    json_t *o = report(s, end, deferred, &e);
    if (!o) {
        coord_fail("sync", e.msg);
        goto out;
    }
    json_t *removed = json_object_get(o, "removed_tags");
    if (cfg_bool(s->c, COORD_ID_DELETE_REMOVED) && end == RUN_COMPLETE &&
        json_array_size(removed)) {
        json_t *pruned = coord_prune(&s->rc, &s->q, cfg_str(s->c, CFG_ID_TARGET),
                                     cfg_str(s->c, COORD_ID_TARGET_PREFIX), removed, &e);
        if (!pruned)
            log_error("delete removed tags: %s", e.msg);
        else
            json_object_set_new(o, "pruned", pruned);
    }
    coord_events_run_end(&s->rc, &s->q, o);
    coord_webhook_tick(&s->wh, &s->rc, &s->q);
    print_report(o, as_json);
    json_decref(o);
    if (end_out)
        *end_out = end;
    code = end == RUN_COMPLETE ? 0 : end == RUN_DEFERRED ? COORD_EXIT_DEFERRED : 1;
out:
    catalog_close(cat);
    plan_free(&plan);
    s->plan = NULL;
    return code;
}

/* Sleep up to secs, waking early on a signal; the metrics stay fresh, and
 * the lease holder (only: one sender keeps the order) delivers events. */
static void nap(struct sync_ctx *s, long secs, int holder)
{
    for (long i = 0; i < secs && !sync_stop; i++) {
        coord_observe_tick(&s->obs);
        if (holder)
            coord_webhook_tick(&s->wh, &s->rc, &s->q);
        sleep(1);
    }
}

/* One run and out: the webhook gets the run's events first, for up to
 * SYNC_WEBHOOK_FLUSH_S and while the lease stays ours (they stay in the
 * stream for the next coordinator). */
static void webhook_flush(struct sync_ctx *s)
{
    struct err e;
    time_t end = time(NULL) + SYNC_WEBHOOK_FLUSH_S;
    while (!sync_stop && time(NULL) < end && coord_webhook_pending(&s->wh, &s->rc, &s->q) &&
           lease_renew(s, &e) == 1) {
        coord_webhook_tick(&s->wh, &s->rc, &s->q);
        usleep(SYNC_POLL_MS * 1000);
    }
}

static int daemon_loop(struct sync_ctx *s)
{
    struct err e;
    long interval = (long)cfg_int(s->c, COORD_ID_INTERVAL),
         jitter = (long)cfg_int(s->c, COORD_ID_JITTER);
    log_info("daemon: a run every %lds (+ up to %lds jitter)", interval, jitter);
    while (!sync_stop) {
        int held = lease_take(s, &e);
        if (held <= 0) {
            if (held < 0)
                log_warn("redis: %s", e.msg);
            else
                log_info("standing by: another coordinator holds the lease");
            nap(s, SYNC_LEASE_MS / 1000, 0);
            continue;
        }
        enum run_end end = RUN_FAILED;
        int code = one_run(s, 1, cfg_bool(s->c, COORD_ID_JSON), &end);
        if (sync_stop)
            break;
        long next = code == COORD_EXIT_DEFERRED ? (long)cfg_int(s->c, COORD_ID_DEFERRED_INTERVAL)
                                                : interval + (jitter ? rand() % (jitter + 1) : 0);
        log_info("next run in %lds", next);
        /* Keep the lease while sleeping so a standby does not start a run. */
        for (long t = 0; t < next && !sync_stop; t += SYNC_LEASE_MS / 3000) {
            if (lease_renew(s, &e) == 0)
                break;
            nap(s, SYNC_LEASE_MS / 3000, 1);
        }
    }
    lease_drop(s);
    return 0;
}

int coord_sync_main(int argc, char **argv)
{
    struct cfg c;
    struct sync_ctx s;
    struct err e;
    int code;
    memset(&s, 0, sizeof(s));
    if (coord_parse_args(&c, sync_opts, NSYNC_OPTS, argc, argv,
                         "sync --target URL [--once [--wait]] [options]", &code) < 0)
        return code;
    s.c = &c;
    code = COORD_EXIT_USAGE;
    if (cfg_setup_log(&c, "coordinator", &e) < 0 || coord_selection_init(&s.sel, &c, &e) < 0) {
        coord_fail("sync", e.msg);
        goto out;
    }
    if (cfg_registries_check(&c, &e) < 0 || coord_sync_file_load(&c, &s.sources, &e) < 0) {
        coord_fail("sync", e.msg);
        goto out;
    }
    if (cfg_bool(&c, COORD_ID_WAIT) && !cfg_bool(&c, COORD_ID_ONCE)) {
        coord_fail("sync", "--wait goes with --once (the daemon always waits)");
        goto out;
    }
    srand((unsigned)(time(NULL) ^ getpid()));
    char host[HOST_NAME_MAX + 1] = "";
    gethostname(host, sizeof(host) - 1);
    snprintf(s.token, sizeof(s.token), "%.60s:%d:%x", host, (int)getpid(), (unsigned)rand());
    if (rq_init(&s.q, cfg_str(&c, CFG_ID_REDIS_PREFIX), &e) < 0) {
        coord_fail("sync", e.msg);
        goto out;
    }
    rq_setup(&s.q, &s.setup);
    struct rconn_opts ro = RCONN_OPTS_DEFAULT;
    if (rconn_open(&s.rc, cfg_str(&c, CFG_ID_REDIS), &ro, &s.setup, &e) < 0) {
        coord_fail("sync", e.msg);
        goto out_q;
    }
    if (coord_observe_start(&s.obs, &c, &e) < 0 || coord_webhook_init(&s.wh, &c, &e) < 0) {
        coord_fail("sync", e.msg);
        coord_observe_stop(&s.obs);
        goto out_rc;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (!cfg_bool(&c, COORD_ID_ONCE)) {
        code = daemon_loop(&s);
    } else {
        /* A coordinator that died keeps the lease until it expires: wait that long
         * so a restart after a crash resumes the run by itself. */
        int held = lease_take(&s, &e);
        for (long waited = 0; held == 0 && !sync_stop && waited < SYNC_LEASE_MS / 1000 + 2;
             waited++) {
            if (waited == 0)
                log_info("another coordinator holds the lease; waiting up to %llds for it",
                         SYNC_LEASE_MS / 1000 + 2);
            sleep(1);
            held = lease_take(&s, &e);
        }
        if (held <= 0) {
            coord_fail("sync", held < 0 ? e.msg
                                        : "another coordinator holds the lease (a daemon?); try "
                                          "later or stop it");
            code = 1;
        } else {
            code = one_run(&s, cfg_bool(&c, COORD_ID_WAIT), cfg_bool(&c, COORD_ID_JSON), NULL);
            webhook_flush(&s);
            lease_drop(&s);
        }
    }
    coord_observe_stop(&s.obs);
    coord_webhook_free(&s.wh);
out_rc:
    rconn_close(&s.rc);
out_q:
    rconn_setup_free(&s.setup);
    rq_free(&s.q);
out:
    syncfile_free(s.sources);
    coord_selection_free(&s.sel);
    cfg_free(&c);
    return code;
}
