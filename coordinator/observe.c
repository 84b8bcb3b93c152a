/* observe: the coordinator's Prometheus metrics (--metrics-listen): what
 * status shows (queue, dead letters, workers, pull budget, runs), read from
 * Redis with a connection of its own at most once a second while sync runs
 * or waits, and published to the metrics server. Labels are sources (an IP
 * address or an account name), states and counter names: never a URL or a
 * credential. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "coord.h"
#include "log.h"
#include "metrics.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double num(json_t *o, const char *k)
{
    return json_number_value(json_object_get(o, k));
}

static void gauge(struct buf *b, const char *name, const char *help, double v)
{
    metrics_family(b, name, "gauge", help);
    metrics_sample(b, name, NULL, NULL, v);
}

/* One gauge family with a sample per key of o named in keys. */
static void gauge_by(struct buf *b, const char *name, const char *help, const char *label,
                     json_t *o, const char *const *keys, size_t n)
{
    metrics_family(b, name, "gauge", help);
    for (size_t i = 0; i < n; i++)
        metrics_sample(b, name, label, keys[i], num(o, keys[i]));
}

static void queue_metrics(struct buf *b, json_t *q)
{
    static const char *const states[] = {"waiting", "in_flight", "delayed"};
    static const char *const whys[] = {"budget", "backoff", "registry"};
    gauge_by(b, "hubsync_queue_jobs", "jobs in the queue: waiting, being copied, delayed",
             "state", q, states, 3);
    gauge_by(b, "hubsync_queue_delayed_jobs", "delayed jobs by why they wait", "why",
             json_object_get(q, "delayed_by_why"), whys, 3);
    gauge(b, "hubsync_dead_letters", "jobs in the dead-letter stream", num(q, "dead"));
}

static void budget_metrics(struct buf *b, json_t *sources)
{
    static const struct {
        const char *name, *key, *help;
        double scale;
    } rows[] = {
        {"hubsync_pull_budget_remaining", "remaining",
         "pulls left in the window, as Docker Hub last said", 1},
        {"hubsync_pull_budget_limit", "limit", "pulls granted per window", 1},
        {"hubsync_pull_budget_reserved", "reserved", "pulls reserved by jobs right now", 1},
        {"hubsync_pull_budget_reset_seconds", "paused_for_ms",
         "seconds until pulls are allowed again (after the budget ran out or a 429; 0: not "
         "paused)",
         1e-3},
    };
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        metrics_family(b, rows[r].name, "gauge", rows[r].help);
        size_t i;
        json_t *s;
        json_array_foreach(sources, i, s)
        {
            json_t *v = json_object_get(s, rows[r].key);
            if (json_is_number(v))
                metrics_sample(b, rows[r].name, "source",
                               json_string_value(json_object_get(s, "source")),
                               json_number_value(v) * rows[r].scale);
            else if (strcmp(rows[r].key, "paused_for_ms") == 0)
                metrics_sample(b, rows[r].name, "source",
                               json_string_value(json_object_get(s, "source")), 0);
        }
    }
}

static void run_metrics(struct buf *b, json_t *cur, json_t *runs)
{
    static const char *const states[] = {"jobs_total", "jobs_done", "jobs_failed", "deferred",
                                         "lost"};
    gauge(b, "hubsync_run_in_progress", "1 while a run is in progress", json_is_object(cur));
    gauge_by(b, "hubsync_run_jobs", "the run in progress: its jobs by state", "state",
             json_is_object(cur) ? cur : NULL, states, sizeof(states) / sizeof(states[0]));
    gauge(b, "hubsync_run_elapsed_seconds", "how long the run in progress has been going",
          json_is_object(cur) ? num(cur, "elapsed_ms") / 1e3 : 0);
    json_t *last = NULL;
    size_t i;
    json_t *r;
    json_array_foreach(runs, i, r)
    {
        if (json_is_integer(json_object_get(r, "duration_ms"))) {
            last = r;
            break;
        }
    }
    gauge(b, "hubsync_last_run_duration_seconds", "how long the newest finished run took",
          last ? num(last, "duration_ms") / 1e3 : 0);
    gauge(b, "hubsync_last_run_finished_timestamp_seconds",
          "when the newest finished run ended (Unix time)",
          last ? num(last, "finished_ms") / 1e3 : 0);
}

static void render(struct buf *b, json_t *o)
{
    queue_metrics(b, json_object_get(o, "queue"));
    json_t *ws = json_object_get(o, "workers");
    size_t i, alive = 0;
    json_t *w;
    json_array_foreach(ws, i, w)
        alive += json_is_true(json_object_get(w, "alive"));
    gauge(b, "hubsync_workers_alive", "workers with a live heartbeat", (double)alive);
    gauge(b, "hubsync_paused", "1 while the operator pause switch is on",
          json_is_true(json_object_get(o, "paused")));
    budget_metrics(b, json_object_get(o, "budget"));
    run_metrics(b, json_object_get(o, "current_run"), json_object_get(o, "runs"));
    metrics_family(b, "hubsync_repository_behind_seconds", "gauge",
                   "for each repository the target lacks upstream's newest of: how long since "
                   "the official-images commit that changed it (caught up: absent)");
    double now_ms = num(o, "now_ms");
    const char *repo;
    json_t *since;
    json_object_foreach(json_object_get(o, "behind_since_ms"), repo, since)
    {
        if (json_is_number(since))
            metrics_sample(b, "hubsync_repository_behind_seconds", "repository", repo,
                           (now_ms - json_number_value(since)) / 1e3);
    }
    json_t *stats = json_object_get(o, "stats");
    const char *k;
    json_t *v;
    metrics_family(b, "hubsync_lifetime_total", "counter",
                   "lifetime counters of the queue (enqueued, done, dead, ...), by name");
    json_object_foreach(stats, k, v)
    {
        if (json_is_number(v))
            metrics_sample(b, "hubsync_lifetime_total", "counter", k, json_number_value(v));
    }
}

int coord_observe_start(struct coord_observe *ob, const struct cfg *c, struct err *e)
{
    memset(ob, 0, sizeof(*ob));
    const char *addr = cfg_str(c, CFG_ID_METRICS_LISTEN);
    if (!addr)
        return 0;
    ob->interval_s = cfg_int(c, COORD_ID_INTERVAL);
    if (metrics_server_start(&ob->srv, addr, e) < 0)
        return -1;
    ob->st = coord_status_open(cfg_str(c, CFG_ID_REDIS), cfg_str(c, CFG_ID_REDIS_PREFIX), e);
    if (!ob->st) {
        coord_observe_stop(ob);
        return -1;
    }
    log_info("metrics: http://%s/metrics", addr);
    coord_observe_tick(ob);
    return 0;
}

void coord_observe_tick(struct coord_observe *ob)
{
    struct err e;
    if (!ob->srv || now_s() - ob->last < 1)
        return;
    ob->last = now_s();
    json_t *o = coord_status_read(ob->st, ob->interval_s, &e);
    if (!o) {
        log_warn("metrics: %s (the last values stay)", e.msg);
        return;
    }
    struct buf b = BUF_INIT(METRICS_TEXT_MAX);
    render(&b, o);
    json_decref(o);
    metrics_server_publish(ob->srv, b.data ? b.data : "", b.len);
    buf_free(&b);
}

void coord_observe_stop(struct coord_observe *ob)
{
    metrics_server_stop(ob->srv);
    coord_status_close(ob->st);
    memset(ob, 0, sizeof(*ob));
}
