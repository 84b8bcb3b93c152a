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

#include "log.h"
#include "worker.h"
#include "xalloc.h"

#define WORKER_BLOCK_MS 2000
#define WORKER_BEAT_TTL_S 30
#define WORKER_BEAT_EVERY_S 10
#define WORKER_PROMOTE_MAX 100

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
    ev_tstamp started;
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
    struct wjob *jobs;
    int in_hand;
    int fetching;
    int settling;      /* settle commands in flight */
    int stopping;
    int exit_code;
    int quitting;      /* the final goodbye is on its way */
    long long done, failed, retried;
    long long bytes;
    ev_tstamp started, idle_since, last_beat, last_renew;
    ev_signal sigterm, sigint;
    ev_timer tick;
    ev_timer stop_deadline;
    ev_timer pause;
};

static void fetch_more(struct worker *w);
static void maybe_quit(struct worker *w);

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

static long long backoff_ms(const struct worker *w, int attempt)
{
    long long d = w->o.backoff_ms;
    for (int i = 1; i < attempt && d < w->o.backoff_max_ms; i++)
        d *= 2;
    if (d > w->o.backoff_max_ms)
        d = w->o.backoff_max_ms;
    return d + (d / 4 ? rand() % (d / 4) : 0); /* jitter spreads retries of a burst */
}

static void job_done(const struct engine_outcome *out, void *arg)
{
    struct wjob *j = arg;
    struct worker *w = j->w;
    /* tags_total is the coordinator's (it counts the tags of jobs that never ran). */
    struct rq_counter c[ENGINE_NCOUNTERS - 1];
    for (int i = 1; i < ENGINE_NCOUNTERS; i++) {
        c[i - 1].name = engine_counter_names[i];
        c[i - 1].delta = engine_counter_get(&out->n, i);
    }
    w->bytes += out->n.blob_bytes_copied;
    double secs = ev_now(w->loop) - j->started;
    log_info("job=%s run=%s status=%s tags=%lld unchanged=%lld written=%lld gets=%lld "
             "heads=%lld manifests=%lld blobs=%lld bytes=%lld mounted=%lld skipped=%lld "
             "secs=%.2f%s%s",
             j->key, j->job.run, engine_status_name(out->status), out->n.tags_total,
             out->n.tags_unchanged, out->n.tags_written, out->n.upstream_manifest_gets,
             out->n.upstream_manifest_heads, out->n.manifests_pushed, out->n.blobs_copied,
             out->n.blob_bytes_copied, out->n.blobs_mounted, out->n.blobs_skipped, secs,
             out->msg[0] ? " error=" : "", out->msg);
    j->ej = NULL;
    if (j->lost) {
        /* Someone else holds the job now; its settlement is theirs. */
    } else if (out->status == ENGINE_DONE) {
        w->done++;
        settle(w, rq_cmd_ack(&w->q, w->id, j->id, j->key, j->job.run, c, ENGINE_NCOUNTERS - 1));
    } else if (out->status == ENGINE_CANCELLED || j->handing_back) {
        settle(w, rq_cmd_handback(&w->q, w->id, j->id, w->o.lease_ms));
    } else {
        struct job next = j->job;
        long long delay;
        const char *why;
        if (out->status == ENGINE_DEFERRED) {
            why = "budget";
            delay = out->wait_ms > 1000 ? out->wait_ms : 1000;
        } else if (out->status == ENGINE_THROTTLED) {
            why = "backoff"; /* not a failure: the attempt count stays */
            delay = out->wait_ms > 1000 ? out->wait_ms : 1000;
        } else {
            why = "backoff";
            next.attempt = j->job.attempt + 1;
            delay = backoff_ms(w, next.attempt);
        }
        if (out->status != ENGINE_DEFERRED && out->status != ENGINE_THROTTLED &&
            next.attempt >= w->o.max_attempts) {
            char *reason = xasprintf("%s after %d attempts: %s", engine_status_name(out->status),
                                     next.attempt, out->msg);
            w->failed++;
            settle(w, rq_cmd_fail(&w->q, w->id, j->id, j->key, reason, j->job.run, c,
                                  ENGINE_NCOUNTERS - 1));
            free(reason);
        } else {
            struct err e;
            next.reason = JOB_REASON_RETRY;
            char *json = job_encode(&next, &e);
            w->retried++;
            if (json)
                settle(w, rq_cmd_retry(&w->q, w->id, j->id, j->key, json, delay, why, j->job.run,
                                       c, ENGINE_NCOUNTERS - 1));
            else
                log_error("job=%s: cannot re-encode for a retry: %s", j->key, e.msg);
            free(json);
        }
    }
    wjob_free(j);
    fetch_more(w);
    maybe_quit(w);
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
    j->next = w->jobs;
    if (w->jobs)
        w->jobs->prev = j;
    w->jobs = j;
    w->in_hand++;
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
    j->ej = engine_start(w->engine, &j->job, job_done, j);
}

/* ---- taking jobs ------------------------------------------------------------------------ */

static void idle_answer(struct rconn_async *ra, redisReply *reply, void *privdata);

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
    if (!res) {
        log_debug("blocking read: %s", e ? e->msg : "no answer");
        retry_fetch_later(w, 0.5);
        return;
    }
    if (res->status == RQ_JOB)
        start_job(w, res);
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
    /* Nothing new: wait for one on the blocking connection, unless idle means done. */
    if (w->o.exit_when_idle && w->in_hand == 0 && !w->stopping) {
        const char *argv[] = {"XLEN", w->q.keys.jobs};
        struct err e2;
        w->fetching = 1;
        if (rconn_async_command(w->cmd, 2, argv, NULL, 0, idle_answer, w, &e2) < 0) {
            w->fetching = 0;
            retry_fetch_later(w, 0.5);
        }
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

/* exit_when_idle: the stream is empty (acked and retried jobs leave it), and
 * no retry waits for a backoff; jobs deferred for the pull budget do not
 * keep a batch worker alive. */
static void idle_delayed_answer(struct rconn_async *ra, redisReply *reply, void *privdata)
{
    (void)ra;
    struct worker *w = privdata;
    int backoff = 0;
    w->fetching = 0;
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        retry_fetch_later(w, 0.5);
        return;
    }
    for (size_t i = 0; i < reply->elements; i++)
        if (reply->element[i]->type == REDIS_REPLY_STRING &&
            strstr(reply->element[i]->str, "\"why\":\"backoff\""))
            backoff = 1;
    ev_tstamp now = ev_now(w->loop);
    if (backoff || w->in_hand) {
        w->idle_since = 0;
        retry_fetch_later(w, 0.5);
        return;
    }
    if (!w->idle_since)
        w->idle_since = now;
    if (now - w->idle_since >= w->o.idle_grace_s) {
        log_info("queue drained: exiting (--exit-when-idle)");
        w->stopping = 1;
        maybe_quit(w);
        return;
    }
    retry_fetch_later(w, 0.25);
}

static void idle_answer(struct rconn_async *ra, redisReply *reply, void *privdata)
{
    (void)ra;
    struct worker *w = privdata;
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        w->fetching = 0;
        retry_fetch_later(w, 0.5);
        return;
    }
    if (reply->integer > 0) {
        w->fetching = 0;
        w->idle_since = 0;
        retry_fetch_later(w, 0.25); /* jobs exist but are held by others: they may come back */
        return;
    }
    const char *argv[] = {"HVALS", w->q.keys.jobs_delayed_payload};
    struct err e;
    if (rconn_async_command(w->cmd, 2, argv, NULL, 0, idle_delayed_answer, w, &e) < 0) {
        w->fetching = 0;
        retry_fetch_later(w, 0.5);
    }
}

static void fetch_more(struct worker *w)
{
    if (w->stopping || w->fetching || w->in_hand >= w->o.concurrency ||
        !rconn_async_is_up(w->cmd))
        return;
    struct err e;
    w->fetching = 1;
    if (rq_exec_async(w->cmd, rq_cmd_take(&w->q, w->id, w->o.lease_ms, w->o.max_deliveries),
                      take_answer, w, &e) < 0) {
        w->fetching = 0;
        retry_fetch_later(w, 0.5);
    }
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
            if (strcmp(j->id, r->id) == 0 && j->ej && !j->lost) {
                log_warn("job=%s: lease lost (%s), stopping it", j->key,
                         rq_status_name(res->status));
                j->lost = 1;
                engine_cancel(j->ej);
            }
        }
    }
    free(r->id);
    free(r);
}

/* For commands whose answer changes nothing (heartbeat, promote). */
static void ignore_answer(struct rq_res *res, const struct err *e, void *privdata)
{
    (void)res;
    (void)privdata;
    if (!res)
        log_debug("redis: %s", e ? e->msg : "no answer");
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
    if (text && rq_exec_async(w->cmd, rq_cmd_worker_beat(&w->q, w->id, text, WORKER_BEAT_TTL_S),
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
            if (!j->ej || j->lost)
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
        w->last_beat = 0;
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
    if (!w->stopping || w->in_hand > 0 || w->settling > 0 || w->quitting)
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
    if (o->id && *o->id) {
        snprintf(w->id, sizeof(w->id), "%s", o->id);
    } else {
        char host[HOST_NAME_MAX + 1] = "";
        gethostname(host, sizeof(host) - 1);
        snprintf(w->id, sizeof(w->id), "%s:%d", host[0] ? host : "worker", (int)getpid());
    }
    if (rq_init(&w->q, o->redis_prefix, e) < 0)
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
    co.max_retries = o->http_retries;
    co.hooks.on_ratelimit = fleet_on_ratelimit;
    co.hooks.arg = w->fleet;
    w->client = reg_client_new(w->loop, &co, e);
    if (!w->client)
        return -1;
    struct engine_ops ops;
    struct engine_opts eo;
    fleet_engine_ops(w->fleet, &ops);
    engine_opts_default(&eo);
    eo.blob_concurrency = o->blob_concurrency;
    eo.upstream = o->upstream;
    eo.target = o->target;
    eo.helper_ttl_s = o->cred_helper_ttl_s;
    w->engine = engine_new(w->loop, w->client, &ops, &eo, e);
    return w->engine ? 0 : -1;
}

static void worker_fini(struct worker *w)
{
    engine_free(w->engine);
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
    log_info("worker %s: redis %s, concurrency %d, lease %llds%s", w.id,
             rconn_async_where(w.cmd), o->concurrency, o->lease_ms / 1000,
             o->exit_when_idle ? ", exit when idle" : "");
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

    ev_run(w.loop, 0);

    ev_timer_stop(w.loop, &w.tick);
    ev_timer_stop(w.loop, &w.pause);
    ev_timer_stop(w.loop, &w.stop_deadline);
    ev_signal_stop(w.loop, &w.sigterm);
    ev_signal_stop(w.loop, &w.sigint);
    log_info("worker %s: stopped (done %lld, failed %lld, retried %lld)", w.id, w.done, w.failed,
             w.retried);
    worker_fini(&w);
    return w.exit_code;
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
    /* Heartbeat keys expire after WORKER_BEAT_TTL_S: one that exists is live. */
    char *pattern = id && *id ? keys_worker(&q.keys, id) : NULL;
    if (!pattern) {
        char *base = keys_worker(&q.keys, host);
        pattern = xasprintf("%s:*", base);
        free(base);
    }
    if (rconn_open(&rc, redis_url, &ro, NULL, &e) < 0) {
        fprintf(stderr, "hubsync-worker: %s\n", e.msg);
        goto out;
    }
    const char *argv[] = {"KEYS", pattern};
    redisReply *r = NULL;
    if (rconn_command(&rc, 2, argv, NULL, 0, &r, &e) < 0) {
        fprintf(stderr, "hubsync-worker: %s\n", e.msg);
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        code = 0;
    } else {
        fprintf(stderr, "hubsync-worker: no live heartbeat (%s)\n", pattern);
    }
    if (r)
        freeReplyObject(r);
    rconn_close(&rc);
out:
    free(pattern);
    rq_free(&q);
    return code;
}
