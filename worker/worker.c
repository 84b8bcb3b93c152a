/* worker: the take/copy/settle loop of hubsync-worker (see worker.h).
 *
 * One libev loop drives everything. The command connection takes jobs
 * (which also reclaims jobs whose worker died), settles them and carries the
 * fleet's shared state; a second connection only waits for new jobs
 * (XREADGROUP BLOCK), since a blocking read would hold up every command
 * queued behind it. A 1-second tick renews the leases of jobs in hand,
 * promotes due retries, keeps copy locks alive and writes the heartbeat. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "creds.h"
#include "log.h"
#include "metrics.h"
#include "ocifetch.h"
#include "ocilayout.h"
#include "retry.h"
#include "worker.h"
#include "xalloc.h"

#define WORKER_BLOCK_MS 2000
#define WORKER_BEAT_TTL_S 30
#define WORKER_BEAT_EVERY_S 10
#define WORKER_PROMOTE_MAX 100
/* A batch worker whose queue holds only other workers' jobs looks again this
 * often: it leaves within this of the run's last job. */
#define WORKER_IDLE_LOOK_S 0.05
/* A batch worker waiting for a run's first jobs blocks on the stream this long
 * between looks at whether the run is over, so its jobs reach it at once. */
#define WORKER_IDLE_BLOCK_MS 250
/* A worker with room and nothing to take that finds no assist offer looks again after
 * this long, so that idle workers do not spin on Redis. */
#define WORKER_ASSIST_LOOK_S 0.25

struct wjob {
    struct worker *w;
    struct wjob *next, *prev;
    char *id;
    char *key;
    struct job job;
    long long deliveries;
    struct engine_job *ej;
    int lost;         /* the lease is gone: never settle */
    int handing_back; /* shutdown: give it back instead */
    int gating;       /* asking the breakers of its registries before it starts */
    int fetching;     /* a bundle job: its objects are being written */
    int offered;      /* children of it were offered to idle workers */
    struct ocifetch_job bjob;
    ev_tstamp started;
};

/* Children of another worker's job this one copies (engine_assist). */
struct assist {
    struct worker *w;
    struct assist *next;
    struct job job; /* the job's registries, key and run; digests: the children */
    struct engine_job *ej;
    ev_tstamp started;
};

/* A registry as the breaker probes see it: no credentials (any answer will do). */
struct probe_reg {
    char *url;
    struct reg_registry *r;
};

struct worker {
    struct ev_loop *loop;
    struct worker_opts o;
    char id[HOST_NAME_MAX + 32];
    struct rq q;
    struct rconn_setup setup;
    struct rconn_async *cmd;
    struct rconn_async *block;
    struct reg_client *client;
    struct fleet *fleet;
    struct engine *engine;
    struct reg_registry *bundle_src; /* a bundle worker's --target, with its credentials */
    struct retry_policy retry;
    struct probe_reg *probes;
    size_t nprobes;
    struct wjob *jobs;
    int in_hand;
    struct assist *assists;
    int assist_children; /* children of the assists in hand */
    int idle;            /* the queue had nothing this worker may take */
    int assist_taking;   /* a take of an offer is on its way */
    int assist_window;   /* children in an offer, at most (the engine's) */
    ev_timer assist_look;
    int fetching;
    int idle_checking; /* exit_when_idle: a look at the queue is on its way */
    int saw_run;       /* exit_when_idle: a run was under way (a job of it taken, or seen) */
    int settling;      /* settle commands in flight */
    int stopping;
    int exit_code;
    int quitting;      /* the final goodbye is on its way */
    long long done, failed, retried;
    long long bytes;
    ev_tstamp started, idle_since, last_beat, last_renew;
    ev_tstamp spent_until; /* this worker's pull budget is spent: no new job till then */
    ev_signal sigterm, sigint;
    ev_timer tick;
    ev_timer stop_deadline;
    ev_timer pause;
    /* --metrics-listen: the server and what it shows, since the start */
    struct metrics_server *metrics;
    long long totals[ENGINE_NCOUNTERS];
    long long by_status[ENGINE_NSTATUS];
    struct metrics_hist durations;
};

static void fetch_more(struct worker *w);
static void maybe_quit(struct worker *w);
static void assist_more(struct worker *w);
static void ignore_answer(struct rq_res *res, const struct err *e, void *privdata);

/* ---- metrics ------------------------------------------------------------------------- */

/* Help of the engine counters as metrics. */
static const char *const counter_help[ENGINE_NCOUNTERS] = {
    [RQ_RUN_tags_total] = "tags in the jobs taken",
    [RQ_RUN_tags_unchanged] = "tags found right on the target already",
    [RQ_RUN_tags_written] = "tags written (tag PUTs) on the target",
    [RQ_RUN_manifests_pushed] = "manifests PUT by digest on the target (children and indexes)",
    [RQ_RUN_upstream_manifest_gets] = "manifest GETs from the upstream: pulls counted against "
                                      "the budget",
    [RQ_RUN_upstream_manifest_heads] = "manifest HEADs on the upstream (free)",
    [RQ_RUN_blobs_copied] = "blobs copied upstream to target",
    [RQ_RUN_blob_bytes_copied] = "bytes of the blobs copied",
    [RQ_RUN_blobs_mounted] = "blobs mounted from another repository of the target (no bytes "
                             "moved)",
    [RQ_RUN_blob_bytes_mounted] = "bytes of the blobs mounted",
    [RQ_RUN_blobs_skipped] = "blobs the target had already",
};

/* The exposition text of what this worker did, to the server. */
static void metrics_publish(struct worker *w)
{
    if (!w->metrics)
        return;
    struct buf b = BUF_INIT(METRICS_TEXT_MAX);
    char name[96];
    for (int i = 0; i < ENGINE_NCOUNTERS; i++) {
        /* tags_total is a counter already named so. */
        const char *n = engine_counter_names[i];
        size_t len = strlen(n);
        snprintf(name, sizeof(name), "hubsync_worker_%s%s", n,
                 len > 6 && strcmp(n + len - 6, "_total") == 0 ? "" : "_total");
        metrics_family(&b, name, "counter", counter_help[i]);
        metrics_sample(&b, name, NULL, NULL, (double)w->totals[i]);
    }
    metrics_family(&b, "hubsync_worker_jobs_total", "counter",
                   "jobs this worker ran, by how they ended");
    for (int s = 0; s < ENGINE_NSTATUS; s++)
        metrics_sample(&b, "hubsync_worker_jobs_total", "status",
                       engine_status_name((enum engine_status)s), (double)w->by_status[s]);
    metrics_family(&b, "hubsync_worker_jobs_in_hand", "gauge", "jobs held right now");
    metrics_sample(&b, "hubsync_worker_jobs_in_hand", NULL, NULL, w->in_hand);
    metrics_family(&b, "hubsync_worker_job_duration_seconds", "histogram",
                   "how long a job (a tag group's copy) took");
    metrics_hist_write(&b, "hubsync_worker_job_duration_seconds", &w->durations);
    metrics_server_publish(w->metrics, b.data ? b.data : "", b.len);
    buf_free(&b);
}

/* ---- settling a job ------------------------------------------------------------------- */

static void wjob_free(struct wjob *j)
{
    struct worker *w = j->w;
    if (j->prev)
        j->prev->next = j->next;
    else
        w->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    w->in_hand--;
    free(j->id);
    free(j->key);
    job_free(&j->job);
    ocifetch_job_free(&j->bjob);
    free(j);
}

static void settled(struct rq_res *res, const struct err *e, void *privdata)
{
    struct worker *w = privdata;
    if (!res)
        log_warn("settle: %s (the job will come back after its lease)", e ? e->msg : "no answer");
    else if (res->status == RQ_GONE || res->status == RQ_STOLEN)
        log_warn("settle: job no longer ours (%s); another worker settles it",
                 rq_status_name(res->status));
    w->settling--;
    maybe_quit(w);
}

static void settle(struct worker *w, struct rq_cmd *cmd)
{
    struct err e;
    w->settling++;
    if (rq_exec_async(w->cmd, cmd, settled, w, &e) < 0) {
        w->settling--;
        log_warn("settle: %s (the job will come back after its lease)", e.msg);
    }
}

/* A job that did not finish: back to the delayed set (1), or to the dead
 * letters (0). */
static int settle_later(struct wjob *j, enum engine_status st, long wait_ms, const char *msg,
                         const struct rq_counter *c, size_t nc)
{
    struct worker *w = j->w;
    struct retry_decision d;
    struct err e;
    retry_decide(&w->retry, st, wait_ms, j->job.attempt, j->job.registry_wait_ms,
                 (unsigned)rand(), &d);
    if (d.dead) {
        char *reason = st == ENGINE_UNAVAILABLE || st == ENGINE_THROTTLED
                           ? xasprintf("%s after waiting %llds for registries: %s",
                                       engine_status_name(st), d.registry_wait_ms / 1000, msg)
                           : xasprintf("%s after %d attempts: %s", engine_status_name(st),
                                       d.attempt, msg);
        w->failed++;
        settle(w, rq_cmd_fail(&w->q, w->id, j->id, j->key, reason, j->job.run, c, nc));
        free(reason);
        return 0;
    }
    struct job next = j->job;
    next.reason = JOB_REASON_RETRY;
    next.attempt = d.attempt;
    next.registry_wait_ms = d.registry_wait_ms;
    char *json = job_encode(&next, &e);
    if (json)
        settle(w, rq_cmd_retry(&w->q, w->id, j->id, j->key, json, d.delay_ms, d.why, j->job.run,
                               c, nc));
    else
        log_error("job=%s: cannot re-encode for a retry: %s", j->key, e.msg);
    free(json);
    return 1;
}

/* ---- registry breakers (rq.lua): while a registry is down its jobs wait ---------- */

struct report {
    char *url;
    long long cooldown_ms;
};

static void reported(struct rq_res *res, const struct err *e, void *privdata)
{
    struct report *r = privdata;
    (void)e;
    if (res && res->status == RQ_VALUE && strcmp(res->str, "open") == 0)
        log_warn("registry %s: breaker open, jobs needing it wait %llds, then one probe asks "
                 "it again (HGETALL of its breaker key shows why)",
                 r->url, r->cooldown_ms / 1000);
    else if (res && res->status == RQ_VALUE && strcmp(res->str, "closed") == 0)
        log_info("registry %s answers again: breaker closed", r->url);
    free(r->url);
    free(r);
}

/* Tell the registry's breaker whether it answered (ok) or not (error says how). */
static void breaker_report(struct worker *w, const char *url, int ok, const char *error)
{
    struct report *r = xmalloc(sizeof(*r));
    struct err e;
    r->url = xstrdup(url);
    r->cooldown_ms = w->o.breaker_cooldown_ms;
    if (rq_exec_async(w->cmd,
                      rq_cmd_breaker_report(&w->q, url, ok, w->o.breaker_failures,
                                            w->o.breaker_cooldown_ms, error),
                      reported, r, &e) < 0) {
        free(r->url);
        free(r);
    }
}

/* What the job learnt of its registries. */
static void report_registries(struct wjob *j, const struct engine_outcome *out)
{
    const char *urls[] = {j->job.upstream, j->job.target};
    const int bits[] = {ENGINE_UPSTREAM, ENGINE_TARGET};
    if (!j->w->o.breaker_failures)
        return;
    for (int i = 0; i < 2; i++) {
        if (out->unavailable & bits[i])
            breaker_report(j->w, urls[i], 0, out->msg);
        else if (out->reached & bits[i])
            breaker_report(j->w, urls[i], 1, "");
    }
}

/* What a job's attempt adds to its run; tags_total is the coordinator's (it
 * counts the tags of jobs that never ran). */
static void job_counters(const struct engine_outcome *out, struct rq_counter c[])
{
    for (int i = 1; i < ENGINE_NCOUNTERS; i++) {
        c[i - 1].name = engine_counter_names[i];
        c[i - 1].delta = engine_counter_get(&out->n, i);
    }
}

/* What a job or an assist did: its run's counters (c), and this worker's totals. */
static void work_counters(struct worker *w, const struct engine_outcome *out,
                          struct rq_counter c[])
{
    job_counters(out, c);
    w->bytes += out->n.blob_bytes_copied;
    for (int i = 0; i < ENGINE_NCOUNTERS; i++)
        w->totals[i] += engine_counter_get(&out->n, i);
}

static void job_dropped(struct wjob *j);

/* A job the pull budget stopped, waiting for the fleet's answer: does another
 * worker's source still have pulls? */
struct spent {
    struct wjob *j;
    struct engine_outcome out;
};

static void spent_answer(int elsewhere, void *arg)
{
    struct spent *s = arg;
    struct wjob *j = s->j;
    struct worker *w = j->w;
    struct rq_counter c[ENGINE_NCOUNTERS - 1];
    job_counters(&s->out, c);
    if (elsewhere) {
        /* Hand it to a worker that can pull (straight back into the stream) and
         * take nothing new until this worker's own budget is back. */
        struct err e;
        char *json = job_encode(&j->job, &e);
        log_info("job=%s: this worker's pull budget is spent, another worker's is not: "
                 "leaving the job to it, taking no job for %lds", j->key, s->out.wait_ms / 1000);
        w->spent_until = ev_now(w->loop) + s->out.wait_ms / 1000.0;
        if (json)
            settle(w, rq_cmd_retry(&w->q, w->id, j->id, j->key, json, 0, "spent", j->job.run,
                                   c, ENGINE_NCOUNTERS - 1));
        free(json);
    } else {
        w->retried += settle_later(j, s->out.status, s->out.wait_ms, s->out.msg, c,
                                   ENGINE_NCOUNTERS - 1);
    }
    free(s);
    job_dropped(j);
}

static void job_done(const struct engine_outcome *out, void *arg)
{
    struct wjob *j = arg;
    struct worker *w = j->w;
    struct rq_counter c[ENGINE_NCOUNTERS - 1];
    struct err e;
    work_counters(w, out, c);
    double secs = ev_now(w->loop) - j->started;
    if ((unsigned)out->status < ENGINE_NSTATUS)
        w->by_status[out->status]++;
    metrics_hist_observe(&w->durations, secs);
    log_info("job=%s run=%s status=%s tags=%lld unchanged=%lld written=%lld gets=%lld "
             "heads=%lld manifests=%lld blobs=%lld bytes=%lld mounted=%lld skipped=%lld "
             "secs=%.2f%s%s",
             j->key, j->job.run, engine_status_name(out->status), out->n.tags_total,
             out->n.tags_unchanged, out->n.tags_written, out->n.upstream_manifest_gets,
             out->n.upstream_manifest_heads, out->n.manifests_pushed, out->n.blobs_copied,
             out->n.blob_bytes_copied, out->n.blobs_mounted, out->n.blobs_skipped, secs,
             out->msg[0] ? " error=" : "", out->msg);
    j->ej = NULL;
    report_registries(j, out);
    if (j->offered &&
        rq_exec_async(w->cmd, rq_cmd_assist_clear(&w->q, j->id, w->id), ignore_answer, NULL,
                      &e) < 0)
        log_debug("job=%s: offers left (harmless: children found present): %s", j->key, e.msg);
    if (j->lost) {
        /* Someone else holds the job now; its settlement is theirs. */
    } else if (out->status == ENGINE_DONE) {
        w->done++;
        settle(w, rq_cmd_ack(&w->q, w->id, j->id, j->key, j->job.run, c, ENGINE_NCOUNTERS - 1));
    } else if (out->status == ENGINE_CANCELLED || j->handing_back) {
        settle(w, rq_cmd_handback(&w->q, w->id, j->id, w->o.lease_ms));
    } else if (out->status == ENGINE_DEFERRED) {
        struct spent *s = xmalloc(sizeof(*s));
        *s = (struct spent){j, *out};
        fleet_budget_elsewhere(w->fleet, spent_answer, s);
        return;
    } else {
        w->retried += settle_later(j, out->status, out->wait_ms, out->msg, c,
                                   ENGINE_NCOUNTERS - 1);
    }
    wjob_free(j);
    metrics_publish(w);
    fetch_more(w);
    maybe_quit(w);
}

/* A job that leaves without the engine, or settled after it. */
static void job_dropped(struct wjob *j)
{
    struct worker *w = j->w;
    wjob_free(j);
    fetch_more(w);
    maybe_quit(w);
}

/* The breakers let the job go (or could not be asked: they only save work). */
static void run_job(struct wjob *j)
{
    struct worker *w = j->w;
    j->gating = 0;
    if (j->lost) {
        job_dropped(j);
    } else if (w->stopping) {
        settle(w, rq_cmd_handback(&w->q, w->id, j->id, w->o.lease_ms));
        job_dropped(j);
    } else {
        j->ej = engine_start(w->engine, &j->job, job_done, j);
    }
}

/* A registry the job needs is down: it waits wait_ms, spending no attempt. */
static void defer_job(struct wjob *j, long long wait_ms)
{
    j->gating = 0;
    if (j->lost || j->w->stopping) {
        run_job(j);
        return;
    }
    log_debug("job=%s: a registry it needs is down (breaker open), waiting %llds", j->key,
              wait_ms / 1000);
    settle_later(j, ENGINE_UNAVAILABLE, (long)wait_ms,
                 "a registry it needs is down (its breaker stayed open)", NULL, 0);
    job_dropped(j);
}

static struct reg_registry *probe_registry(struct worker *w, const char *url, struct err *e)
{
    for (size_t i = 0; i < w->nprobes; i++)
        if (strcmp(w->probes[i].url, url) == 0)
            return w->probes[i].r;
    struct reg_registry *r = reg_registry_new(w->client, url, NULL, e);
    if (!r)
        return NULL;
    w->probes = xrealloc(w->probes, (w->nprobes + 1) * sizeof(*w->probes));
    w->probes[w->nprobes++] = (struct probe_reg){xstrdup(url), r};
    return r;
}

struct probe {
    struct wjob *j;
    const char *url; /* the job's */
};

static void probe_done(struct reg_result *res, void *arg)
{
    struct probe *p = arg;
    struct wjob *j = p->j;
    const char *url = p->url;
    long wait_ms;
    free(p);
    int up = engine_status_of(res, &wait_ms) != ENGINE_UNAVAILABLE;
    breaker_report(j->w, url, up, res->msg);
    if (up)
        run_job(j);
    else
        defer_job(j, j->w->o.breaker_cooldown_ms);
}

/* The job's check was given the probe of url's breaker: GET /v2/ there. */
static void probe(struct wjob *j, const char *url)
{
    struct err e;
    struct reg_registry *r = probe_registry(j->w, url, &e);
    if (!r) {
        log_warn("registry %s: cannot probe: %s", url, e.msg);
        run_job(j);
        return;
    }
    log_info("registry %s: breaker half-open, probing", url);
    struct probe *p = xmalloc(sizeof(*p));
    *p = (struct probe){j, url};
    reg_ping(r, probe_done, p);
}

static void gate_answer(struct rq_res *res, const struct err *e, void *privdata)
{
    struct wjob *j = privdata;
    (void)e;
    if (res && res->status == RQ_DENIED)
        defer_job(j, res->n);
    else if (res && res->status == RQ_UNKNOWN && (res->n == 1 || res->n == 2) && !j->lost &&
             !j->w->stopping)
        probe(j, res->n == 1 ? j->job.upstream : j->job.target);
    else
        run_job(j);
}

/* Ask the breakers of the job's registries before it starts. */
static void gate(struct wjob *j)
{
    struct worker *w = j->w;
    const char *urls[] = {j->job.upstream, j->job.target};
    struct err e;
    if (w->o.breaker_failures) {
        /* The prober holds its job, renewed, for a lease at most. */
        j->gating = 1;
        if (rq_exec_async(w->cmd, rq_cmd_breaker_check(&w->q, urls, 2, w->o.lease_ms),
                          gate_answer, j, &e) == 0)
            return;
    }
    run_job(j);
}

/* ---- bundle jobs ------------------------------------------------------------------------ */

static void bundle_done(const struct ocifetch_stats *st, const char *error, void *arg)
{
    struct wjob *j = arg;
    struct worker *w = j->w;
    struct rq_counter c[] = {
        {"files_written", st->written}, {"files_reused", st->reused}, {"bytes_written", st->bytes}};
    size_t nc = sizeof(c) / sizeof(c[0]);
    j->fetching = 0;
    w->bytes += st->bytes;
    log_info("job=%s export=%s objects=%zu written=%lld reused=%lld bytes=%lld secs=%.2f%s%s",
             j->key, j->bjob.run, j->bjob.nitems, st->written, st->reused, st->bytes,
             ev_now(w->loop) - j->started, error ? " error=" : "", error ? error : "");
    if (j->lost) {
        /* Someone else holds the job now; its settlement is theirs. */
    } else if (!error) {
        w->done++;
        settle(w, rq_cmd_ack(&w->q, w->id, j->id, j->key, j->bjob.run, c, nc));
    } else {
        w->failed++;
        settle(w, rq_cmd_fail(&w->q, w->id, j->id, j->key, error, j->bjob.run, c, nc));
    }
    job_dropped(j);
}

/* The export in progress, asked before a bundle job starts: a job of another
 * export (one that was interrupted, or replaced) would write its objects into
 * this one's directory, so it is settled without a write. */
static void bundle_current(struct rq_res *res, const struct err *e, void *privdata)
{
    struct wjob *j = privdata;
    struct worker *w = j->w;
    j->gating = 0;
    if (j->lost) {
        /* Someone else holds the job now. */
    } else if (!res) {
        log_warn("job=%s: cannot ask which export is in progress (%s): handing it back", j->key,
                 e ? e->msg : "no answer");
        settle(w, rq_cmd_handback(&w->q, w->id, j->id, w->o.lease_ms));
    } else if (res->status != RQ_VALUE || strcmp(res->str, j->bjob.run) != 0) {
        log_warn("job=%s: of export %s, not of the one in progress (%s): dropped unwritten",
                 j->key, j->bjob.run, res->status == RQ_VALUE ? res->str : "none");
        settle(w, rq_cmd_ack(&w->q, w->id, j->id, j->key, j->bjob.run, NULL, 0));
    } else {
        j->fetching = 1;
        ocifetch_start(w->loop, w->bundle_src, w->o.bundle_dir, j->bjob.items, j->bjob.nitems,
                       w->o.blob_concurrency, bundle_done, j);
        return;
    }
    job_dropped(j);
}

/* A bundle worker's job: its objects into the bundle directory. */
static void start_bundle_job(struct wjob *j, const char *json)
{
    struct worker *w = j->w;
    struct err e;
    if (ocifetch_job_decode(json, strlen(json), &j->bjob, &e) < 0 ||
        ocilayout_mkdirs(w->o.bundle_dir, &e) < 0) {
        log_error("job=%s id=%s: %s", j->key, j->id, e.msg);
        settle(w, rq_cmd_fail(&w->q, w->id, j->id, j->key, e.msg, j->bjob.run, NULL, 0));
        wjob_free(j);
        return;
    }
    log_debug("job=%s id=%s deliveries=%lld taken", j->key, j->id, j->deliveries);
    w->saw_run = 1;
    /* Held (and renewed) while Redis answers. */
    j->gating = 1;
    if (rq_exec_async(w->cmd, rq_cmd_run_current(&w->q), bundle_current, j, &e) < 0) {
        log_warn("job=%s: %s: handing it back", j->key, e.msg);
        settle(w, rq_cmd_handback(&w->q, w->id, j->id, w->o.lease_ms));
        wjob_free(j);
    }
}

static void start_job(struct worker *w, struct rq_res *res)
{
    struct err e;
    struct wjob *j = xcalloc(1, sizeof(*j));
    j->w = w;
    j->id = res->id;
    j->key = res->key;
    res->id = res->key = NULL;
    j->deliveries = res->n;
    j->started = ev_now(w->loop);
    w->idle = 0;
    j->next = w->jobs;
    if (w->jobs)
        w->jobs->prev = j;
    w->jobs = j;
    w->in_hand++;
    if (w->o.bundle_dir) {
        start_bundle_job(j, res->json);
        return;
    }
    int valid = job_decode(&j->job, res->json, strlen(res->json), &e) == 0;
    /* Refused before the engine sees it: another registry gets no request at all. */
    if (!valid || engine_job_allowed(w->engine, &j->job, &e) < 0) {
        char *reason = xasprintf("%s: %s", valid ? "refused" : "invalid job payload", e.msg);
        log_error("job=%s id=%s: %s", j->key, j->id, reason);
        settle(w, rq_cmd_fail(&w->q, w->id, j->id, j->key, reason, valid ? j->job.run : NULL,
                              NULL, 0));
        free(reason);
        wjob_free(j);
        return;
    }
    log_debug("job=%s id=%s deliveries=%lld taken", j->key, j->id, j->deliveries);
    w->saw_run = 1;
    gate(j);
}

/* ---- taking jobs ------------------------------------------------------------------------ */

static void idle_check(struct worker *w);

static void pause_fire(struct ev_loop *loop, ev_timer *w_, int revents)
{
    (void)loop;
    (void)revents;
    fetch_more(w_->data);
}

static void retry_fetch_later(struct worker *w, double secs)
{
    ev_timer_stop(w->loop, &w->pause);
    ev_timer_set(&w->pause, secs, 0.);
    ev_timer_start(w->loop, &w->pause);
}

static void read_answer(struct rq_res *res, const struct err *e, void *privdata)
{
    struct worker *w = privdata;
    w->fetching = 0;
    if (w->quitting)
        return; /* the connection is being freed */
    if (!res) {
        log_debug("blocking read: %s", e ? e->msg : "no answer");
        retry_fetch_later(w, 0.5);
        return;
    }
    if (res->status == RQ_JOB) {
        w->idle_since = 0;
        start_job(w, res);
    }
    fetch_more(w);
}

static void take_answer(struct rq_res *res, const struct err *e, void *privdata)
{
    struct worker *w = privdata;
    w->fetching = 0;
    if (!res) {
        log_debug("take: %s", e ? e->msg : "no answer");
        retry_fetch_later(w, 0.5);
        return;
    }
    for (size_t i = 0; i < res->nitems; i++)
        log_warn("job=%s: dead-lettered after too many deliveries", res->items[i]);
    if (res->status == RQ_JOB) {
        w->idle_since = 0;
        start_job(w, res);
        fetch_more(w);
        return;
    }
    if (res->status == RQ_PAUSED) {
        retry_fetch_later(w, 1.0);
        return;
    }
    if (res->status == RQ_BUSY) {
        /* Its share of the queue is in hand: the rest is for the other workers
         * unless they leave it (one of its own jobs ending asks again too). */
        w->idle = 1;
        assist_more(w);
        retry_fetch_later(w, WORKER_IDLE_LOOK_S);
        return;
    }
    /* Nothing to take: children of the others' jobs meanwhile. */
    w->idle = 1;
    assist_more(w);
    /* Nothing new: wait for one on the blocking connection, unless idle means done. */
    if (w->o.exit_when_idle && w->in_hand == 0 && !w->stopping) {
        idle_check(w);
        return;
    }
    struct err e3;
    w->fetching = 1;
    if (rq_exec_async(w->block, rq_cmd_read_new(&w->q, w->id, WORKER_BLOCK_MS), read_answer, w,
                      &e3) < 0) {
        w->fetching = 0;
        retry_fetch_later(w, 0.5);
    }
}

/* exit_when_idle: the stream is empty (acked and retried jobs leave it; held
 * ones stay) and no delayed job waits for anything but the pull budget (jobs
 * deferred for it do not keep a batch worker alive). Once the current run
 * has all its jobs in the queue, or the run this worker saw has ended, that
 * is the end of the run's work: leave at once. Before any run (or while one
 * is being enqueued) the coordinator may be about to enqueue: leave only
 * after the queue stayed so for the idle grace. */
static void idle_answer(struct rq_res *res, const struct err *e, void *privdata)
{
    (void)e;
    struct worker *w = privdata;
    w->idle_checking = 0;
    if (w->quitting || w->stopping)
        return;
    if (!res || res->status != RQ_VALUE) {
        retry_fetch_later(w, 0.5);
        return;
    }
    ev_tstamp now = ev_now(w->loop);
    const char *run = rq_res_field(res, "run");
    int over = run && (strcmp(run, "enqueued") == 0 || (strcmp(run, "none") == 0 && w->saw_run));
    if (run && strcmp(run, "none") != 0)
        w->saw_run = 1; /* even if others hold all its jobs: its end is this worker's too */
    if (rq_res_field_int(res, "queued", 1) > 0 || rq_res_field_int(res, "waiting", 1) > 0 ||
        w->in_hand || w->assists) {
        /* Jobs exist but are held by others, or wait: they may come back. */
        w->idle_since = 0;
        retry_fetch_later(w, WORKER_IDLE_LOOK_S);
        return;
    }
    if (!w->idle_since)
        w->idle_since = now;
    if (over || now - w->idle_since >= w->o.idle_grace_s) {
        log_info("queue drained: exiting (--exit-when-idle)");
        w->stopping = 1;
        maybe_quit(w);
        return;
    }
    if (w->fetching)
        return; /* a blocking read is out already: its answer looks again */
    /* Wait on the stream, not a timer: Redis hands each waiting worker one of
     * the jobs the moment they are enqueued, so a run's first jobs neither wait
     * for a poll nor all go to whichever worker polled first. */
    double left_ms = (w->o.idle_grace_s - (now - w->idle_since)) * 1000.;
    long long block_ms = left_ms < WORKER_IDLE_BLOCK_MS ? (long long)left_ms + 1
                                                         : WORKER_IDLE_BLOCK_MS;
    struct err e2;
    w->fetching = 1;
    if (rq_exec_async(w->block, rq_cmd_read_new(&w->q, w->id, block_ms), read_answer, w,
                      &e2) < 0) {
        w->fetching = 0;
        retry_fetch_later(w, 0.25);
    }
}

/* On the command connection, so that it also runs while a blocking read waits. */
static void idle_check(struct worker *w)
{
    struct err e;
    if (w->idle_checking)
        return;
    w->idle_checking = 1;
    if (rq_exec_async(w->cmd, rq_cmd_idle(&w->q), idle_answer, w, &e) < 0) {
        w->idle_checking = 0;
        retry_fetch_later(w, 0.5);
    }
}

static void fetch_more(struct worker *w)
{
    if (w->o.exit_when_idle && w->in_hand == 0 && !w->stopping &&
        (w->fetching || ev_now(w->loop) < w->spent_until) && rconn_async_is_up(w->cmd)) {
        /* A blocking read may wait for up to WORKER_BLOCK_MS, and a worker whose pull
         * budget is spent takes nothing: neither keeps a drained queue's worker. */
        idle_check(w);
        return;
    }
    if (w->stopping || w->fetching || w->in_hand >= w->o.concurrency ||
        !rconn_async_is_up(w->cmd))
        return;
    if (ev_now(w->loop) < w->spent_until) {
        retry_fetch_later(w, w->spent_until - ev_now(w->loop));
        return;
    }
    struct err e;
    w->fetching = 1;
    if (rq_exec_async(w->cmd, rq_cmd_take(&w->q, w->id, w->o.lease_ms, w->o.max_deliveries,
                                          WORKER_BEAT_TTL_S * 1000LL),
                      take_answer, w, &e) < 0) {
        w->fetching = 0;
        retry_fetch_later(w, 0.5);
    }
}

/* ---- assists: children of other workers' jobs ------------------------------------------ */

/* engine_ops.offer_children: a window of the job's children, for idle workers. */
static void offer_children(void *ctx, void *job_arg, const char *const *digests, size_t n)
{
    struct wjob *j = job_arg;
    struct worker *w = j->w;
    struct err e;
    (void)ctx;
    struct rq_assist o = {
        .job_id = j->id, .key = j->key, .run = j->job.run, .worker = w->id,
        .upstream = j->job.upstream, .source_repo = j->job.source_repo,
        .target = j->job.target, .target_repo = j->job.target_repo,
        .children = digests, .nchildren = n,
    };
    j->offered = 1;
    if (rq_exec_async(w->cmd, rq_cmd_assist_offer(&w->q, &o), ignore_answer, NULL, &e) < 0)
        log_debug("job=%s: children not offered: %s", j->key, e.msg);
}

static void assist_free(struct assist *a)
{
    struct worker *w = a->w;
    struct assist **pp = &w->assists;
    while (*pp != a)
        pp = &(*pp)->next;
    *pp = a->next;
    w->assist_children -= (int)a->job.ndigests;
    job_free(&a->job);
    free(a);
}

/* The children are copied (or left): the counters go to the run before the engine
 * marks them present and lets go of their locks, on the same connection. */
static void assist_done(const struct engine_outcome *out, void *arg)
{
    struct assist *a = arg;
    struct worker *w = a->w;
    struct rq_counter c[ENGINE_NCOUNTERS - 1];
    struct err e;
    work_counters(w, out, c);
    if (rq_exec_async(w->cmd,
                      rq_cmd_assist_done(&w->q, a->job.run, a->job.key, c, ENGINE_NCOUNTERS - 1),
                      ignore_answer, NULL, &e) < 0)
        log_warn("assist job=%s: counters not added to run %s: %s", a->job.key, a->job.run,
                 e.msg);
    log_info("assist job=%s run=%s children=%zu status=%s gets=%lld heads=%lld manifests=%lld "
             "blobs=%lld bytes=%lld mounted=%lld skipped=%lld secs=%.2f%s%s",
             a->job.key, a->job.run, a->job.ndigests, engine_status_name(out->status),
             out->n.upstream_manifest_gets, out->n.upstream_manifest_heads,
             out->n.manifests_pushed, out->n.blobs_copied, out->n.blob_bytes_copied,
             out->n.blobs_mounted, out->n.blobs_skipped, ev_now(w->loop) - a->started,
             out->msg[0] ? " error=" : "", out->msg);
    assist_free(a);
    metrics_publish(w);
    assist_more(w);
    maybe_quit(w);
}

/* An offer taken: its children as an assist, unless its registries are not this
 * worker's (the job's holder copies them then). */
static void assist_start(struct worker *w, const struct rq_res *res)
{
    struct err e;
    const char *children = rq_res_field(res, "children");
    struct assist *a = xcalloc(1, sizeof(*a));
    a->w = w;
    a->started = ev_now(w->loop);
    struct job *j = &a->job;
    j->version = JOB_VERSION;
    j->policy = JOB_POLICY_ALL;
    j->reason = JOB_REASON_CHANGED;
    const char *names[] = {"run", "key", "upstream", "source_repo", "target", "target_repo"};
    char **dst[] = {&j->run, &j->key, &j->upstream, &j->source_repo, &j->target,
                    &j->target_repo};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *v = rq_res_field(res, names[i]);
        *dst[i] = xstrdup(v ? v : "");
    }
    j->digests = xcalloc(RQ_ASSIST_CHILDREN, sizeof(*j->digests));
    for (const char *p = children ? children : ""; *p && j->ndigests < RQ_ASSIST_CHILDREN;) {
        size_t len = strcspn(p, " ");
        if (len)
            j->digests[j->ndigests++] = xstrndup(p, len);
        p += len + (p[len] == ' ');
    }
    a->next = w->assists;
    w->assists = a;
    w->assist_children += (int)j->ndigests;
    if (job_validate(j, &e) < 0 || engine_job_allowed(w->engine, j, &e) < 0) {
        log_warn("assist offer %s: %s", res->id, e.msg);
        assist_free(a);
        return;
    }
    log_debug("assist job=%s: %zu children taken (offer %s)", j->key, j->ndigests, res->id);
    a->ej = engine_assist(w->engine, j, assist_done, a);
}

static void assist_answer(struct rq_res *res, const struct err *e, void *privdata)
{
    struct worker *w = privdata;
    w->assist_taking = 0;
    if (w->quitting)
        return;
    if (res && res->status == RQ_VALUE) {
        assist_start(w, res);
        assist_more(w);
        return;
    }
    if (!res)
        log_debug("assist take: %s", e ? e->msg : "no answer");
    ev_timer_set(&w->assist_look, WORKER_ASSIST_LOOK_S, 0.);
    ev_timer_start(w->loop, &w->assist_look);
}

static void assist_look(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    assist_more(t->data);
}

/* A worker with room for a job and none to take copies offered children, a window at a
 * time, with at most half its blob slots' worth in hand. */
static void assist_more(struct worker *w)
{
    struct err e;
    int room = w->o.blob_concurrency / 2 > 1 ? w->o.blob_concurrency / 2 : 1;
    if (w->o.bundle_dir || !w->idle || w->stopping || w->assist_taking ||
        w->in_hand >= w->o.concurrency || ev_is_active(&w->assist_look) ||
        (w->assist_children > 0 && w->assist_children + w->assist_window > room) ||
        !rconn_async_is_up(w->cmd))
        return;
    w->assist_taking = 1;
    if (rq_exec_async(w->cmd, rq_cmd_assist_take(&w->q, w->id), assist_answer, w, &e) < 0)
        w->assist_taking = 0;
}

/* ---- the tick: leases, retries, locks, heartbeat ------------------------------------- */

struct renew {
    struct worker *w;
    char *id;
};

static void renew_done(struct rq_res *res, const struct err *e, void *privdata)
{
    struct renew *r = privdata;
    (void)e;
    if (res && (res->status == RQ_GONE || res->status == RQ_STOLEN)) {
        for (struct wjob *j = r->w->jobs; j; j = j->next) {
            if (strcmp(j->id, r->id) == 0 && (j->ej || j->gating || j->fetching) && !j->lost) {
                /* A bundle job's writes are harmless (each file verified and
                 * renamed whole): they finish, unsettled. */
                log_warn("job=%s: lease lost (%s), %s", j->key, rq_status_name(res->status),
                         j->fetching ? "its new holder settles it" : "stopping it");
                j->lost = 1;
                if (j->ej)
                    engine_cancel(j->ej);
            }
        }
    }
    free(r->id);
    free(r);
}

/* engine_ops.still_held: a renewal of the job's lease just before its tags, so
 * that a job another worker took over meanwhile writes none. */
struct held {
    struct wjob *j;
    engine_flag_fn cb;
    void *arg;
    ev_timer later; /* Redis cannot be asked: no, from the loop */
};

static void held_answer(struct rq_res *res, const struct err *e, void *privdata)
{
    struct held *h = privdata;
    struct wjob *j = h->j;
    engine_flag_fn cb = h->cb;
    void *arg = h->arg;
    free(h);
    if (!res) {
        log_warn("job=%s: cannot confirm its lease before the tags (%s): handing it back",
                 j->key, e ? e->msg : "no answer");
    } else if ((res->status == RQ_GONE || res->status == RQ_STOLEN) && !j->lost) {
        log_warn("job=%s: lease lost (%s) before its tags: writing none", j->key,
                 rq_status_name(res->status));
        j->lost = 1;
    }
    cb(res && res->status == RQ_DONE, arg);
}

static void held_later(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct err e;
    err_set(&e, "redis is not connected");
    held_answer(NULL, &e, t->data);
}

static void still_held(void *ctx, void *job_arg, engine_flag_fn cb, void *arg)
{
    struct wjob *j = job_arg;
    struct worker *w = j->w;
    struct held *h = xcalloc(1, sizeof(*h));
    struct err e;
    (void)ctx;
    *h = (struct held){.j = j, .cb = cb, .arg = arg};
    if (rq_exec_async(w->cmd, rq_cmd_renew(&w->q, w->id, j->id), held_answer, h, &e) == 0)
        return;
    ev_timer_init(&h->later, held_later, 0., 0.);
    h->later.data = h;
    ev_timer_start(w->loop, &h->later);
}

/* For commands whose answer changes nothing (heartbeat, promote). */
static void ignore_answer(struct rq_res *res, const struct err *e, void *privdata)
{
    (void)res;
    (void)privdata;
    if (!res)
        log_debug("redis: %s", e ? e->msg : "no answer");
}

/* An event lost is logged: the copy goes on whatever Redis answers. */
static void event_answer(struct rq_res *res, const struct err *e, void *privdata)
{
    (void)privdata;
    if (!res)
        log_warn("event not recorded: %s", e ? e->msg : "no answer");
}

/* A tag write's event, sent ahead of the PUT (recorded in events:pending, on the
 * connection that then asks still_held, so the record is in before any PUT) or
 * after it (appended to the events stream, the coordinator's webhook delivers
 * it from there, and the record dropped in the same step). */
static void tag_event(struct wjob *j, const char *repo, const char *tag, const char *previous,
                      const char *digest, int ahead)
{
    struct worker *w = j->w;
    struct err e;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "run", j->job.run ? j->job.run : "",
                          "repository", repo, "tag", tag, "digest", digest, "previous",
                          previous);
    char *data = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    if (!data) {
        log_warn("event not recorded: %s:%s is not JSON text", repo, tag);
        return;
    }
    const char *type = previous[0] ? "tag.moved" : "tag.written";
    char *field = rq_event_field(j->job.target, repo, tag);
    struct rq_cmd *c = ahead ? rq_cmd_event_intent(&w->q, field, digest, type, data)
                             : rq_cmd_event_tag(&w->q, field, type, data);
    if (rq_exec_async(w->cmd, c, event_answer, NULL, &e) < 0)
        log_warn("event not recorded: %s", e.msg);
    free(field);
    free(data);
}

static void tag_intent(void *ctx, void *job_arg, const char *repo, const char *tag,
                       const char *previous, const char *digest)
{
    (void)ctx;
    tag_event(job_arg, repo, tag, previous, digest, 1);
}

static void tag_written(void *ctx, void *job_arg, const char *repo, const char *tag,
                        const char *previous, const char *digest)
{
    (void)ctx;
    tag_event(job_arg, repo, tag, previous, digest, 0);
}

/* Tags found right: the events of writes a killed worker left recorded. Sent
 * before the job's ack, on the same connection. */
static void tags_current(void *ctx, void *job_arg, const char *repo, const char *const *tags,
                         const char *const *digests, size_t n)
{
    struct wjob *j = job_arg;
    struct worker *w = j->w;
    struct err e;
    (void)ctx;
    char **fields = xcalloc(n, sizeof(*fields));
    for (size_t i = 0; i < n; i++)
        fields[i] = rq_event_field(j->job.target, repo, tags[i]);
    if (rq_exec_async(w->cmd,
                      rq_cmd_event_settle(&w->q, (const char *const *)fields, digests, n),
                      event_answer, NULL, &e) < 0)
        log_warn("events of tags found right not settled: %s", e.msg);
    for (size_t i = 0; i < n; i++)
        free(fields[i]);
    free(fields);
}

static void beat(struct worker *w)
{
    json_t *jobs = json_array();
    for (struct wjob *j = w->jobs; j; j = j->next)
        json_array_append_new(jobs, json_string(j->key));
    char host[HOST_NAME_MAX + 1] = "";
    gethostname(host, sizeof(host) - 1);
    json_t *o = json_pack("{s:s, s:s, s:i, s:I, s:o, s:I, s:I, s:I, s:I, s:b}", "id", w->id,
                          "host", host, "pid", (int)getpid(), "started_ms",
                          (json_int_t)(w->started * 1000), "jobs", jobs, "jobs_done",
                          (json_int_t)w->done, "jobs_failed", (json_int_t)w->failed,
                          "jobs_retried", (json_int_t)w->retried, "bytes", (json_int_t)w->bytes,
                          "stopping", w->stopping);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    struct err e;
    if (text && rq_exec_async(w->cmd,
                              rq_cmd_worker_beat(&w->q, w->id, text, WORKER_BEAT_TTL_S),
                              ignore_answer, NULL, &e) < 0)
        log_debug("heartbeat: %s", e.msg);
    free(text);
    json_decref(o);
}

static void tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = t->data;
    ev_tstamp now = ev_now(w->loop);
    if (!rconn_async_is_up(w->cmd))
        return;
    struct err e;
    if (now - w->last_renew >= w->o.lease_ms / 3000.0) {
        w->last_renew = now;
        for (struct wjob *j = w->jobs; j; j = j->next) {
            if ((!j->ej && !j->gating && !j->fetching) || j->lost)
                continue;
            struct renew *r = xmalloc(sizeof(*r));
            r->w = w;
            r->id = xstrdup(j->id);
            if (rq_exec_async(w->cmd, rq_cmd_renew(&w->q, w->id, j->id), renew_done, r, &e) < 0) {
                free(r->id);
                free(r);
            }
        }
        fleet_tick(w->fleet);
    }
    rq_exec_async(w->cmd, rq_cmd_promote(&w->q, WORKER_PROMOTE_MAX), ignore_answer, NULL, &e);
    if (now - w->last_beat >= WORKER_BEAT_EVERY_S) {
        w->last_beat = now;
        beat(w);
    }
    fetch_more(w);
}

/* ---- connections -------------------------------------------------------------------------- */

static void on_state(struct rconn_async *ra, int up, void *arg)
{
    struct worker *w = arg; /* rconn logs the connection's ups and downs */
    if (up && ra == w->cmd) {
        /* Beat at once: a health check or an operator may look before the first tick. */
        w->last_beat = ev_now(w->loop);
        beat(w);
        fetch_more(w);
    }
}

/* ---- stopping ------------------------------------------------------------------------------ */

static void goodbye_done(struct rq_res *res, const struct err *e, void *privdata)
{
    (void)res;
    (void)e;
    struct worker *w = privdata;
    ev_break(w->loop, EVBREAK_ALL);
}

static void maybe_quit(struct worker *w)
{
    if (!w->stopping || w->in_hand > 0 || w->assists || w->settling > 0 || w->quitting)
        return;
    w->quitting = 1;
    struct err e;
    if (rq_exec_async(w->cmd, rq_cmd_worker_gone(&w->q, w->id), goodbye_done, w, &e) < 0)
        ev_break(w->loop, EVBREAK_ALL);
}

static void stop_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = t->data;
    for (struct wjob *j = w->jobs; j; j = j->next) {
        if (j->ej && !j->handing_back) {
            log_warn("job=%s: not finished within the stop grace; handing it back", j->key);
            j->handing_back = 1;
            engine_cancel(j->ej);
        }
    }
    /* Their children are left to the jobs' holders. */
    for (struct assist *a = w->assists; a; a = a->next)
        if (a->ej)
            engine_cancel(a->ej);
}

static void on_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    (void)revents;
    struct worker *w = s->data;
    if (w->stopping) {
        stop_deadline(loop, &w->stop_deadline, 0);
        return;
    }
    log_info("signal %d: taking no new job, finishing %d in hand (grace %.0fs)", s->signum,
             w->in_hand, w->o.stop_grace_s);
    w->stopping = 1;
    ev_timer_set(&w->stop_deadline, w->o.stop_grace_s, 0.);
    ev_timer_start(loop, &w->stop_deadline);
    maybe_quit(w);
}

/* ---- run --------------------------------------------------------------------------------- */

static int worker_init(struct worker *w, const struct worker_opts *o, struct err *e)
{
    w->o = *o;
    w->retry = (struct retry_policy){o->max_attempts, o->backoff_ms, o->backoff_max_ms,
                                     o->registry_wait_max_s * 1000};
    if (o->id && *o->id) {
        snprintf(w->id, sizeof(w->id), "%s", o->id);
    } else {
        char host[HOST_NAME_MAX + 1] = "";
        gethostname(host, sizeof(host) - 1);
        snprintf(w->id, sizeof(w->id), "%s:%d", host[0] ? host : "worker", (int)getpid());
    }
    if ((o->bundle_dir ? rq_init_bundle(&w->q, o->redis_prefix, e)
                       : rq_init(&w->q, o->redis_prefix, e)) < 0)
        return -1;
    rq_setup(&w->q, &w->setup);
    struct rconn_opts ro = RCONN_OPTS_DEFAULT;
    w->cmd = rconn_async_new(w->loop, o->redis_url, &ro, &w->setup, on_state, w, e);
    if (!w->cmd)
        return -1;
    w->block = rconn_async_new(w->loop, o->redis_url, &ro, &w->setup, on_state, w, e);
    if (!w->block)
        return -1;
    w->fleet = fleet_new(w->loop, w->cmd, &w->q, w->id, o->keep_pulls, o->lease_ms);
    struct reg_client_opts co;
    reg_client_opts_default(&co);
    co.ca_file = o->ca_file;
    co.source_address = o->source_address;
    co.max_retries = o->http_retries;
    co.max_host_conns = o->connections_per_host;
    /* The total cap is only a backstop: it must never be the tighter one. */
    if (co.max_total_conns < 2L * o->connections_per_host)
        co.max_total_conns = 2L * o->connections_per_host;
    co.hooks.on_ratelimit = fleet_on_ratelimit;
    co.hooks.arg = w->fleet;
    w->client = reg_client_new(w->loop, &co, e);
    if (!w->client)
        return -1;
    struct engine_ops ops;
    struct engine_opts eo;
    fleet_engine_ops(w->fleet, &ops);
    ops.still_held = still_held;
    ops.tag_intent = tag_intent;
    ops.tag_written = tag_written;
    ops.tags_current = tags_current;
    ops.offer_children = offer_children;
    engine_opts_default(&eo);
    w->assist_window = eo.assist_window;
    eo.blob_concurrency = o->blob_concurrency;
    eo.upstream = o->upstream;
    eo.target = o->target;
    eo.helper_ttl_s = o->cred_helper_ttl_s;
    eo.sources = o->sources;
    w->engine = engine_new(w->loop, w->client, &ops, &eo, e);
    if (!w->engine)
        return -1;
    if (o->bundle_dir) {
        struct creds cr = {NULL, NULL};
        int found = creds_lookup("HUBSYNC_TARGET", o->target, o->target, &cr, e);
        if (found >= 0)
            w->bundle_src = reg_registry_new(w->client, o->target, found ? &cr : NULL, e);
        creds_clear(&cr);
        if (!w->bundle_src)
            return -1;
    }
    if (o->metrics_listen && metrics_server_start(&w->metrics, o->metrics_listen, e) < 0)
        return -1;
    metrics_publish(w);
    return 0;
}

static void worker_fini(struct worker *w)
{
    metrics_server_stop(w->metrics);
    engine_free(w->engine);
    reg_registry_free(w->bundle_src);
    for (size_t i = 0; i < w->nprobes; i++) {
        reg_registry_free(w->probes[i].r);
        free(w->probes[i].url);
    }
    free(w->probes);
    reg_client_free(w->client);
    rconn_async_free(w->block);
    rconn_async_free(w->cmd);
    fleet_free(w->fleet);
    rconn_setup_free(&w->setup);
    rq_free(&w->q);
}

int worker_run(const struct worker_opts *o)
{
    struct worker w;
    struct err e;
    memset(&w, 0, sizeof(w));
    w.loop = ev_default_loop(EVFLAG_AUTO);
    w.started = ev_time();
    srand((unsigned)(time(NULL) ^ getpid()));
    if (worker_init(&w, o, &e) < 0) {
        fprintf(stderr, "hubsync-worker: %s\n", e.msg);
        worker_fini(&w);
        return 2;
    }
    log_info("worker %s: redis %s, concurrency %d, lease %llds%s%s%s", w.id,
             rconn_async_where(w.cmd), o->concurrency, o->lease_ms / 1000,
             o->exit_when_idle ? ", exit when idle" : "",
             o->bundle_dir ? ", bundle jobs into " : "", o->bundle_dir ? o->bundle_dir : "");
    ev_signal_init(&w.sigterm, on_signal, SIGTERM);
    ev_signal_init(&w.sigint, on_signal, SIGINT);
    w.sigterm.data = w.sigint.data = &w;
    ev_signal_start(w.loop, &w.sigterm);
    ev_signal_start(w.loop, &w.sigint);
    ev_timer_init(&w.tick, tick, 1., 1.);
    w.tick.data = &w;
    ev_timer_start(w.loop, &w.tick);
    ev_init(&w.stop_deadline, stop_deadline);
    w.stop_deadline.data = &w;
    ev_init(&w.pause, pause_fire);
    w.pause.data = &w;
    ev_init(&w.assist_look, assist_look);
    w.assist_look.data = &w;

    ev_run(w.loop, 0);

    ev_timer_stop(w.loop, &w.tick);
    ev_timer_stop(w.loop, &w.pause);
    ev_timer_stop(w.loop, &w.assist_look);
    ev_timer_stop(w.loop, &w.stop_deadline);
    ev_signal_stop(w.loop, &w.sigterm);
    ev_signal_stop(w.loop, &w.sigint);
    log_info("worker %s: stopped (done %lld, failed %lld, retried %lld)", w.id, w.done, w.failed,
             w.retried);
    worker_fini(&w);
    return w.exit_code;
}

/* 1 if the heartbeat of worker id lives, 0 if not, -1 with e set if Redis cannot tell. */
static int beat_lives(struct rconn *rc, const struct rq *q, const char *id, struct err *e)
{
    struct rq_res res;
    int ret = rq_exec(rc, rq_cmd_worker_get(q, id), &res, e);
    int live = ret == 0 && res.status == RQ_VALUE;
    rq_res_free(&res);
    return ret < 0 ? -1 : live;
}

/* Whether a worker of this host (id "<host>:...") has a live heartbeat:
 * the workers zset names them, no key is scanned. As beat_lives. */
static int host_lives(struct rconn *rc, const struct rq *q, const char *host, struct err *e)
{
    struct rq_res res;
    int live = 0;
    size_t n = strlen(host);
    if (rq_exec(rc, rq_cmd_workers(q), &res, e) < 0)
        live = -1;
    for (size_t i = 0; live == 0 && i + 1 < res.nitems; i += 2)
        if (strncmp(res.items[i], host, n) == 0 && res.items[i][n] == ':')
            live = beat_lives(rc, q, res.items[i], e);
    rq_res_free(&res);
    return live;
}

int worker_health(const char *redis_url, const char *prefix, const char *id)
{
    struct rq q;
    struct rconn rc;
    struct err e;
    struct rconn_opts ro = RCONN_OPTS_DEFAULT;
    char host[HOST_NAME_MAX + 1] = "";
    int code = 1;
    if (rq_init(&q, prefix, &e) < 0) {
        fprintf(stderr, "hubsync-worker: %s\n", e.msg);
        return 1;
    }
    gethostname(host, sizeof(host) - 1);
    if (rconn_open(&rc, redis_url, &ro, NULL, &e) < 0) {
        fprintf(stderr, "hubsync-worker: %s\n", e.msg);
        goto out;
    }
    /* Heartbeat keys expire after WORKER_BEAT_TTL_S: one that exists is live. */
    int live = id && *id ? beat_lives(&rc, &q, id, &e) : host_lives(&rc, &q, host, &e);
    if (live < 0)
        fprintf(stderr, "hubsync-worker: %s\n", e.msg);
    else if (live == 0)
        fprintf(stderr, "hubsync-worker: no live heartbeat (%s %s)\n",
                id && *id ? "worker" : "host", id && *id ? id : host);
    code = live == 1 ? 0 : 1;
    rconn_close(&rc);
out:
    rq_free(&q);
    return code;
}
