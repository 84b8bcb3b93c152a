/* status: the `status` subcommand: what the fleet is doing, read from Redis.
 *
 * Queue depth (stream, taken, delayed by why, dead letters), jobs in flight
 * per worker with their heartbeats, the pull budget per source, the current
 * run with its progress, the last runs, the sync-file entries of the current
 * (or newest) run, the synced marker, the operator
 * pause switch and the coordinator lease. Only rq's reads are sent (no key is
 * scanned, no payload parsed: the functions keep the counts), on a connection
 * without the usual setup (loading functions and creating the consumer group
 * would be writes), so looking never changes anything. Times are Redis TIME,
 * like every time hubsync stores.
 *
 * The current run's lost jobs (not settled, no job of the run queued, held,
 * delayed or handed over: hubsync_run_check, a read) say it is stalled.
 *
 * Exit 0 when Redis answers; with --health also only when the current run
 * is not stalled and a coordinator holds the lease or the newest finished
 * run ended less than 2 x --interval ago (coord_status_health); 1
 * otherwise. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coord.h"
#include "rconn.h"
#include "rq.h"
#include "text.h"
#include "xalloc.h"

#define STATUS_DEAD_SHOWN 5
#define STATUS_RUNS_SHOWN 5

static const struct cfg_opt status_opts[] = {
    CFG_OPT_REDIS,
    CFG_OPT_REDIS_PREFIX,
    {COORD_ID_JSON, "json", NULL, CFG_BOOL, "false", 0, 0, "print JSON (shape above)", 0},
    {COORD_ID_HEALTH, "health", NULL, CFG_BOOL, "false", 0, 0,
     "exit 1 if the current run is stalled, or unless a coordinator holds the lease or the last "
     "run finished less than 2 x --interval ago",
     0},
    {COORD_ID_INTERVAL, "interval", "HUBSYNC_INTERVAL", CFG_INT, "21600", 60, 31536000,
     "the coordinators' --interval (seconds between runs), for --health", 0},
    CFG_OPT_LOG_LEVEL,
    CFG_OPT_LOG_FORMAT,
    CFG_OPT_HELP,
};
#define NSTATUS_OPTS ((int)(sizeof(status_opts) / sizeof(status_opts[0])))

static const char status_usage[] =
    "status [--redis URL] [--json] [--health]\n"
    "\n"
    "Shows the queue, the workers, the pull budget, the current and last runs (and the\n"
    "sync-file entries of the current or newest run), the synced marker, the pause switch\n"
    "and the coordinator lease, reading Redis only. Exit 0 when Redis answers, 1 when it\n"
    "does not; with --health also 1 when the current run is stalled (jobs of it that no job\n"
    "in the queue would settle), or unless a coordinator holds the lease (a daemon, or sync\n"
    "--once while it runs) or the newest finished run ended less than 2 x --interval ago\n"
    "(coordinators run from cron).\n"
    "\n"
    "--json prints one object (times in ms, Redis clock; absent values null):\n"
    "  {redis, prefix, now_ms, paused, synced_commit,\n"
    "   coordinator: {held, holder, expires_in_ms},\n"
    "   queue: {stream, waiting, in_flight, delayed, delayed_by_why: {budget, backoff, registry},\n"
    "           next_due_in_ms, dead, dead_newest: [{id, key, reason, deliveries, ts_ms}]},\n"
    "   workers: [{id, in_flight, alive, beat_age_ms, host, pid, started_ms, jobs: [key],\n"
    "              jobs_done, jobs_failed, jobs_retried, bytes, stopping}], workers_silent,\n"
    "   budget: [{source, limit, remaining, window_s, observed_age_ms, reserved,\n"
    "             paused_for_ms, http_429, unlimited}],\n"
    "   current_run: {<run record>, deferred, lost, elapsed_ms} | null (lost: jobs that\n"
    "                no job in the queue would settle, null if Redis cannot tell),\n"
    "   runs: [{id, state, commit, started_ms, finished_ms, duration_ms, jobs_total,\n"
    "           jobs_done, jobs_failed, tags_written, upstream_manifest_gets,\n"
    "           phases: {catalog, enqueue, first_job, work, end} (ms)}],\n"
    "   entries_run: the current run's id, else the newest run's, or null,\n"
    "   entries: [{source, target, jobs_total, jobs_done, jobs_failed,\n"
    "              upstream_manifest_gets, errors: [text]}] (that run's sync-file entries),\n"
    "   stats: {<lifetime counters>}, health: {ok, reason}}";

/* ---- pure helpers ------------------------------------------------------------------------------
 */

void coord_status_duration(long long ms, char *out, size_t n)
{
    long long s = ms < 0 ? 0 : ms / 1000;
    if (s < 60)
        snprintf(out, n, "%llds", s);
    else if (s < 3600)
        snprintf(out, n, "%lldm%02llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(out, n, "%lldh%02lldm", s / 3600, s % 3600 / 60);
    else
        snprintf(out, n, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
}

int coord_status_health(long long stalled, int lease_held, long long last_finished_ms,
                        long long now_ms, long long interval_s, char *why, size_t n)
{
    char age[32];
    if (stalled > 0) {
        snprintf(why, n,
                 "%lld jobs of the current run have no job queued (stalled; a coordinator "
                 "waiting for the run enqueues them again)",
                 stalled);
        return 0;
    }
    if (lease_held) {
        snprintf(why, n, "a coordinator holds the lease");
        return 1;
    }
    if (last_finished_ms <= 0) {
        snprintf(why, n, "no coordinator holds the lease and no run has finished");
        return 0;
    }
    long long limit_ms = 2 * interval_s * 1000;
    coord_status_duration(now_ms - last_finished_ms, age, sizeof(age));
    if (now_ms - last_finished_ms < limit_ms) {
        snprintf(why, n, "the last run finished %s ago", age);
        return 1;
    }
    snprintf(why, n,
             "no coordinator holds the lease and the last run finished %s ago (more "
             "than 2 x --interval)",
             age);
    return 0;
}

/* ---- Redis reads ------------------------------------------------------------------------------
 */

struct status_ctx {
    struct rconn rc;
    struct rq q;
    struct err e;
    int down; /* an I/O error: the answer is incomplete */
    long long now_ms;
};

/* Run read c (consumed) into res, which the caller frees. -1 when there is
 * no answer: Redis stopped answering (s->down set, s->e says why), or the
 * key holds something else (that part is left out). */
static int ask(struct status_ctx *s, struct rq_cmd *c, struct rq_res *res)
{
    struct err e;
    if (s->down) {
        rq_cmd_free(c);
        memset(res, 0, sizeof(*res));
        return -1;
    }
    if (rq_exec(&s->rc, c, res, &e) == 0)
        return 0;
    if (!s->rc.c) {
        s->down = 1;
        s->e = e;
    }
    return -1;
}

/* A number read (RQ_VALUE n); 0 without one. */
static long long ask_n(struct status_ctx *s, struct rq_cmd *c)
{
    struct rq_res res;
    long long n = ask(s, c, &res) == 0 && res.status == RQ_VALUE ? res.n : 0;
    rq_res_free(&res);
    return n;
}

/* A string read as JSON: the string or null. */
static json_t *ask_str(struct status_ctx *s, struct rq_cmd *c)
{
    struct rq_res res;
    json_t *v = ask(s, c, &res) == 0 && res.str ? json_string(res.str) : json_null();
    rq_res_free(&res);
    return v;
}

/* A hash read as a JSON object (numbers where numeric); empty without one. */
static json_t *ask_hash(struct status_ctx *s, struct rq_cmd *c)
{
    struct rq_res res;
    json_t *o = ask(s, c, &res) == 0 ? coord_json_fields(res.items, res.nitems) : json_object();
    rq_res_free(&res);
    return o;
}

static json_t *opt_int(long long v, int present)
{
    return present ? json_integer(v) : json_null();
}

/* ---- sections
 * ------------------------------------------------------------------------------------ */

static json_t *coordinator_json(struct status_ctx *s)
{
    struct rq_res res;
    int rc = ask(s, rq_cmd_lease_holder(s->q.keys.coordinator), &res);
    const char *holder = rc == 0 && res.status == RQ_VALUE ? res.str : NULL;
    json_t *o = json_object();
    json_object_set_new(o, "held", json_boolean(holder != NULL));
    /* The token is host:pid:random; the random part is the lease's, not the reader's. */
    char *who = holder ? xstrdup(holder) : NULL;
    char *cut = who ? strrchr(who, ':') : NULL;
    if (cut && cut != who)
        *cut = '\0';
    json_object_set_new(o, "holder", who ? json_string(who) : json_null());
    free(who);
    long long pttl = holder ? ask_n(s, rq_cmd_lease_ttl(s->q.keys.coordinator)) : -1;
    rq_res_free(&res);
    json_object_set_new(o, "expires_in_ms", opt_int(pttl, pttl >= 0));
    return o;
}

/* Delayed jobs by why, as the functions count them. */
static json_t *delayed_json(struct status_ctx *s)
{
    static const char *const whys[] = {"budget", "backoff", "registry"};
    json_t *counts = ask_hash(s, rq_cmd_delayed_counts(&s->q));
    json_t *o = json_object();
    for (size_t i = 0; i < sizeof(whys) / sizeof(whys[0]); i++)
        json_object_set_new(o, whys[i], json_integer(coord_json_int(counts, whys[i])));
    json_decref(counts);
    return o;
}

static json_t *dead_json(struct status_ctx *s)
{
    /* The payload is in redis-cli for whoever needs it. */
    static const char *const names[RQ_DEAD_FIELDS] = {"id", "key", "reason", "deliveries",
                                                      "ts_ms"};
    struct rq_res res;
    json_t *a = json_array();
    if (ask(s, rq_cmd_dead_newest(&s->q, STATUS_DEAD_SHOWN), &res) == 0) {
        for (size_t i = 0; i + RQ_DEAD_FIELDS <= res.nitems; i += RQ_DEAD_FIELDS) {
            json_t *o = json_object();
            for (size_t k = 0; k < RQ_DEAD_FIELDS; k++)
                json_object_set_new(o, names[k], coord_json_value(res.items[i + k]));
            json_array_append_new(a, o);
        }
    }
    rq_res_free(&res);
    return a;
}

static json_t *queue_json(struct status_ctx *s)
{
    json_t *o = json_object();
    long long stream = ask_n(s, rq_cmd_queue_len(&s->q));
    /* Acked entries are deleted, so the stream holds the waiting and the taken ones. */
    long long taken = ask_n(s, rq_cmd_queue_held(&s->q));
    json_object_set_new(o, "stream", json_integer(stream));
    json_object_set_new(o, "waiting", json_integer(stream - taken));
    json_object_set_new(o, "in_flight", json_integer(taken));
    json_object_set_new(o, "delayed", json_integer(ask_n(s, rq_cmd_delayed_len(&s->q))));
    json_object_set_new(o, "delayed_by_why", delayed_json(s));
    struct rq_res res;
    int rc = ask(s, rq_cmd_delayed_next(&s->q), &res);
    json_object_set_new(o, "next_due_in_ms",
                        opt_int(res.n - s->now_ms, rc == 0 && res.status == RQ_VALUE));
    rq_res_free(&res);
    json_object_set_new(o, "dead", json_integer(ask_n(s, rq_cmd_dead_len(&s->q))));
    json_object_set_new(o, "dead_newest", dead_json(s));
    return o;
}

static json_t *worker_find(json_t *workers, const char *id)
{
    size_t i;
    json_t *w;
    json_array_foreach(workers, i, w)
        if (strcmp(json_string_value(json_object_get(w, "id")), id) == 0)
            return w;
    return NULL;
}

static json_t *worker_add(json_t *workers, const char *id)
{
    json_t *w = worker_find(workers, id);
    if (!w) {
        w = json_pack("{s:s, s:i, s:b, s:n}", "id", id, "in_flight", 0, "alive", 0, "beat_age_ms");
        json_array_append_new(workers, w);
    }
    return w;
}

/* Live workers (heartbeat key present) and every consumer holding jobs. */
static json_t *workers_json(struct status_ctx *s, long long *silent)
{
    json_t *workers = json_array();
    struct rq_res res;
    *silent = 0;
    if (ask(s, rq_cmd_workers(&s->q), &res) == 0) {
        for (size_t i = 0; i + 1 < res.nitems; i += 2) {
            const char *id = res.items[i];
            struct rq_res hb;
            json_t *beat = NULL;
            if (ask(s, rq_cmd_worker_get(&s->q, id), &hb) == 0 && hb.str)
                beat = json_loads(hb.str, 0, NULL);
            rq_res_free(&hb);
            if (!json_is_object(beat)) {
                json_decref(beat);
                ++*silent;
                continue;
            }
            json_t *w = worker_add(workers, id);
            json_object_update_missing(w, beat);
            json_decref(beat);
            long long last = 0;
            text_ll(res.items[i + 1], &last);
            json_object_set_new(w, "alive", json_true());
            /* now_ms is read before the zset: a beat between the two is "just now". */
            json_object_set_new(w, "beat_age_ms",
                                json_integer(last > s->now_ms ? 0 : s->now_ms - last));
        }
    }
    rq_res_free(&res);
    if (ask(s, rq_cmd_queue_held(&s->q), &res) == 0) {
        for (size_t i = 0; i + 1 < res.nitems; i += 2) {
            json_t *w = worker_add(workers, res.items[i]);
            if (!json_is_true(json_object_get(w, "alive")))
                --*silent;
            long long n = 0;
            text_ll(res.items[i + 1], &n);
            json_object_set_new(w, "in_flight", json_integer(n));
        }
    }
    rq_res_free(&res);
    if (*silent < 0)
        *silent = 0;
    return workers;
}

/* A source's budget, or NULL when its record is gone (expired). */
static json_t *budget_source(struct status_ctx *s, const char *source)
{
    json_t *h = ask_hash(s, rq_cmd_budget_get(&s->q, source));
    if (!json_object_size(h)) {
        json_decref(h);
        return NULL;
    }
    json_t *o = json_pack("{s:s}", "source", source);
    static const char *const copy[] = {"limit", "remaining", "window_s"};
    for (size_t i = 0; i < sizeof(copy) / sizeof(copy[0]); i++) {
        json_t *v = json_object_get(h, copy[i]);
        json_object_set(o, copy[i], json_is_integer(v) ? v : json_null());
    }
    json_object_set_new(o, "http_429",
                        json_integer(coord_json_int(h, "http_429"))); /* a counter: 0 until one */
    json_object_set_new(o, "unlimited", json_boolean(coord_json_int(h, "unlimited") == 1));
    json_t *seen = json_object_get(h, "observed_ms");
    json_object_set_new(o, "observed_age_ms", opt_int(s->now_ms - coord_json_int(h, "observed_ms"),
                                                      json_is_integer(seen)));
    long long paused = coord_json_int(h, "paused_until_ms") - s->now_ms;
    json_object_set_new(o, "paused_for_ms", opt_int(paused, paused > 0));
    json_object_set_new(
        o, "reserved", json_integer(ask_n(s, rq_cmd_budget_reserved(&s->q, source, s->now_ms))));
    json_decref(h);
    return o;
}

static json_t *budget_json(struct status_ctx *s)
{
    json_t *a = json_array();
    struct rq_res res;
    if (ask(s, rq_cmd_budget_sources(&s->q), &res) == 0) {
        for (size_t i = 0; i < res.nitems; i++) {
            json_t *b = budget_source(s, res.items[i]);
            if (b)
                json_array_append_new(a, b);
        }
    }
    rq_res_free(&res);
    return a;
}

static json_t *run_json(struct status_ctx *s, const char *id)
{
    return ask_hash(s, rq_cmd_run_get(&s->q, id));
}

/* The last runs, newest first, with the fields an operator compares. */
static json_t *runs_json(struct status_ctx *s, long long *last_finished_ms)
{
    const char *const fields[] = {"state",         "commit",    "started_ms",
                                  "finished_ms",   "jobs_total", "jobs_done",
                                  "jobs_failed",   RQ_RUN_NAME(tags_written),
                                  RQ_RUN_NAME(upstream_manifest_gets)};
    json_t *a = json_array();
    struct rq_res res;
    *last_finished_ms = 0;
    if (ask(s, rq_cmd_runs_newest(&s->q, STATUS_RUNS_SHOWN), &res) < 0)
        res.nitems = 0;
    for (size_t i = 0; i < res.nitems; i++) {
        const char *id = res.items[i];
        json_t *rec = run_json(s, id);
        json_t *o = json_pack("{s:s}", "id", id);
        for (size_t k = 0; k < sizeof(fields) / sizeof(fields[0]); k++) {
            json_t *v = json_object_get(rec, fields[k]);
            json_object_set(o, fields[k], v ? v : json_null());
        }
        /* As sync's report: dead letters are failures too. */
        json_object_set_new(o, "jobs_failed",
                            json_integer(coord_json_int(rec, "jobs_failed") +
                                         coord_json_int(rec, "jobs_dead")));
        if (json_is_integer(json_object_get(rec, "finished_ms"))) {
            long long fin = coord_json_int(rec, "finished_ms");
            json_object_set_new(o, "duration_ms",
                                json_integer(fin - coord_json_int(rec, "started_ms")));
            if (fin > *last_finished_ms)
                *last_finished_ms = fin;
        } else {
            json_object_set_new(o, "duration_ms", json_null());
        }
        json_object_set_new(o, "phases", coord_run_phases(rec));
        json_decref(rec);
        json_array_append_new(a, o);
    }
    rq_res_free(&res);
    return a;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The sync-file entries of run id, by name: each one's target and counters
 * (rq_cmd_run_entries) and its errors from the run's catalog_errors. [] for a
 * run without a sync file. */
static json_t *entries_json(struct status_ctx *s, const char *id)
{
    const char *const counters[] = {"jobs_total", "jobs_done", "jobs_failed", "jobs_dead",
                                    RQ_RUN_NAME(upstream_manifest_gets)};
    json_t *h = ask_hash(s, rq_cmd_run_entries(&s->q, id)), *by = json_object(), *v;
    const char *field;
    json_object_foreach(h, field, v) {
        const char *name = strchr(field, ' ');
        if (!name || json_object_get(by, name + 1))
            continue;
        json_t *en = json_pack("{s:s}", "source", name + 1);
        char *k = xasprintf("target %s", name + 1);
        json_t *t = json_object_get(h, k);
        free(k);
        json_object_set(en, "target", json_is_string(t) ? t : json_null());
        for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
            k = xasprintf("%s %s", counters[i], name + 1);
            json_object_set_new(en, counters[i], json_integer(coord_json_int(h, k)));
            free(k);
        }
        /* As for the run: dead letters are failures too. */
        json_object_set_new(en, "jobs_failed",
                            json_integer(coord_json_int(en, "jobs_failed") +
                                         coord_json_int(en, "jobs_dead")));
        json_object_del(en, "jobs_dead");
        json_object_set_new(en, "errors", json_array());
        json_object_set_new(by, name + 1, en);
    }
    json_decref(h);
    json_t *rec = run_json(s, id);
    const char *text = json_string_value(json_object_get(rec, "catalog_errors"));
    json_t *errs = text ? json_loads(text, 0, NULL) : NULL;
    size_t i;
    json_array_foreach(errs, i, v) {
        const char *repo = json_string_value(json_object_get(v, "repository"));
        json_t *en = repo ? json_object_get(by, repo) : NULL;
        json_t *msg = json_object_get(v, "error");
        if (en && json_is_string(msg))
            json_array_append(json_object_get(en, "errors"), msg);
    }
    json_decref(errs);
    json_decref(rec);
    const char **names = xcalloc(json_object_size(by) + 1, sizeof(*names));
    size_t n = 0;
    json_object_foreach(by, field, v)
        names[n++] = field;
    qsort(names, n, sizeof(*names), cmp_name);
    json_t *a = json_array();
    for (i = 0; i < n; i++)
        json_array_append(a, json_object_get(by, names[i]));
    free(names);
    json_decref(by);
    return a;
}

/* The run's lost jobs (rq_cmd_run_check), or -1 when Redis cannot tell (a
 * library from before it; s->down when Redis did not answer). */
static long long lost_jobs(struct status_ctx *s, const char *run)
{
    char cursor[32] = "0";
    long long n = 0;
    do {
        struct rq_res res;
        if (ask(s, rq_cmd_run_check(&s->q, run, cursor, RQ_RUN_CHECK_COUNT), &res) < 0) {
            rq_res_free(&res);
            return -1;
        }
        n += (long long)res.nitems;
        snprintf(cursor, sizeof(cursor), "%s", res.str);
        rq_res_free(&res);
    } while (strcmp(cursor, "0") != 0);
    return n;
}

static json_t *current_json(struct status_ctx *s, const char *run, long long *lost)
{
    *lost = 0;
    if (!run)
        return json_null();
    json_t *rec = run_json(s, run);
    if (!json_object_size(rec)) {
        json_decref(rec);
        return json_null(); /* runs:current names a run without a record */
    }
    *lost = lost_jobs(s, run);
    json_object_set_new(rec, "id", json_string(run));
    json_object_set_new(rec, "deferred", json_integer(coord_json_int(rec, "jobs_deferred")));
    json_object_set_new(rec, "lost", *lost >= 0 ? json_integer(*lost) : json_null());
    json_object_set_new(rec, "elapsed_ms",
                        json_integer(s->now_ms - coord_json_int(rec, "started_ms")));
    return rec;
}

/* Everything, or NULL when Redis stopped answering (s->e says why). */
static json_t *gather(struct status_ctx *s, long long interval_s)
{
    struct rq_res t;
    if (ask(s, rq_cmd_time(), &t) < 0) {
        if (!s->down)
            err_set(&s->e, "redis %s: TIME gave no time", s->rc.url.where);
        rq_res_free(&t);
        return NULL;
    }
    s->now_ms = t.n;
    rq_res_free(&t);
    json_t *o = json_object();
    json_object_set_new(o, "redis", json_string(s->rc.url.where));
    json_object_set_new(o, "prefix", json_string(s->q.keys.prefix));
    json_object_set_new(o, "now_ms", json_integer(s->now_ms));
    json_object_set_new(o, "paused", json_boolean(ask_n(s, rq_cmd_paused(&s->q)) == 1));
    json_object_set_new(o, "synced_commit", ask_str(s, rq_cmd_synced_commit(&s->q)));
    json_t *coord = coordinator_json(s);
    json_object_set_new(o, "coordinator", coord);
    json_t *cur = ask_str(s, rq_cmd_run_current(&s->q));
    long long silent = 0, last_finished = 0, lost = 0;
    json_object_set_new(o, "queue", queue_json(s));
    json_object_set_new(o, "workers", workers_json(s, &silent));
    json_object_set_new(o, "workers_silent", json_integer(silent));
    json_object_set_new(o, "budget", budget_json(s));
    json_object_set_new(o, "current_run", current_json(s, json_string_value(cur), &lost));
    json_t *runs = runs_json(s, &last_finished);
    json_object_set_new(o, "runs", runs);
    /* Per sync-file entry: the current run's, else the newest run's. */
    const char *of = json_is_string(cur) ? json_string_value(cur)
                                         : json_string_value(json_object_get(
                                               json_array_get(runs, 0), "id"));
    json_object_set_new(o, "entries_run", of ? json_string(of) : json_null());
    json_object_set_new(o, "entries", of ? entries_json(s, of) : json_array());
    json_decref(cur);
    json_object_set_new(o, "stats", ask_hash(s, rq_cmd_stats(&s->q)));
    json_object_set_new(o, "behind_since_ms", ask_hash(s, rq_cmd_behind(&s->q)));
    char why[256];
    int ok = coord_status_health(lost, json_is_true(json_object_get(coord, "held")),
                                 last_finished, s->now_ms, interval_s, why,
                                 sizeof(why));
    json_object_set_new(o, "health", json_pack("{s:b, s:s}", "ok", ok, "reason", why));
    if (s->down) {
        json_decref(o);
        return NULL;
    }
    return o;
}

struct coord_status {
    struct status_ctx s;
};

struct coord_status *coord_status_open(const char *redis_url, const char *prefix, struct err *e)
{
    struct coord_status *st = xcalloc(1, sizeof(*st));
    struct rconn_opts ro = RCONN_OPTS_DEFAULT;
    if (rq_init(&st->s.q, prefix, e) < 0) {
        free(st);
        return NULL;
    }
    /* No setup list: reads only, as for status. */
    if (rconn_open(&st->s.rc, redis_url, &ro, NULL, e) < 0) {
        rq_free(&st->s.q);
        free(st);
        return NULL;
    }
    return st;
}

json_t *coord_status_read(struct coord_status *st, long long interval_s, struct err *e)
{
    st->s.down = 0;
    json_t *o = gather(&st->s, interval_s);
    if (!o)
        *e = st->s.e;
    return o;
}

void coord_status_close(struct coord_status *st)
{
    if (!st)
        return;
    rconn_close(&st->s.rc);
    rq_free(&st->s.q);
    free(st);
}

/* ---- readable output ---------------------------------------------------------------------------
 */

static const char *js(json_t *o, const char *k, const char *dflt)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : dflt;
}

static void when(long long ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d %H:%M:%SZ", &tm);
}

/* "3s ago" / "-" for a null or absent age. */
static void age_or_dash(json_t *o, const char *k, const char *suffix, char *out, size_t n)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v)) {
        snprintf(out, n, "-");
        return;
    }
    char d[32];
    coord_status_duration(json_integer_value(v), d, sizeof(d));
    snprintf(out, n, "%s%s", d, suffix);
}

static void num_or_dash(json_t *o, const char *k, char *out, size_t n)
{
    json_t *v = json_object_get(o, k);
    if (json_is_integer(v))
        snprintf(out, n, "%lld", (long long)json_integer_value(v));
    else
        snprintf(out, n, "-");
}

static void print_queue(json_t *q)
{
    json_t *why = json_object_get(q, "delayed_by_why");
    char due[48] = "";
    if (json_is_integer(json_object_get(q, "next_due_in_ms"))) {
        char d[32];
        coord_status_duration(coord_json_int(q, "next_due_in_ms"), d, sizeof(d));
        snprintf(due, sizeof(due), "; next due in %s", d);
    }
    printf("queue        %lld waiting, %lld in flight, %lld delayed (budget %lld, backoff "
           "%lld, registry down %lld%s), %lld dead\n",
           coord_json_int(q, "waiting"), coord_json_int(q, "in_flight"),
           coord_json_int(q, "delayed"), coord_json_int(why, "budget"),
           coord_json_int(why, "backoff"), coord_json_int(why, "registry"), due,
           coord_json_int(q, "dead"));
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(q, "dead_newest"), i, d) {
        char ts[32];
        when(coord_json_int(d, "ts_ms"), ts, sizeof(ts));
        printf("  dead  %s  %-32s %s (%lld deliveries)\n", ts, js(d, "key", "?"),
               js(d, "reason", "?"), coord_json_int(d, "deliveries"));
    }
}

static void print_workers(json_t *ws, long long silent)
{
    printf("workers      %zu", json_array_size(ws));
    if (silent)
        printf(" (+%lld silent in the last day)", silent);
    putchar('\n');
    if (!json_array_size(ws))
        return;
    printf("  %-32s %9s %6s %6s %7s %10s %9s  %s\n", "WORKER", "IN FLIGHT", "DONE", "FAILED",
           "RETRIED", "BYTES", "BEAT", "JOBS");
    size_t i, k;
    json_t *w, *j;
    json_array_foreach(ws, i, w) {
        char bytes[32], beat[32];
        coord_human_bytes(coord_json_int(w, "bytes"), bytes, sizeof(bytes));
        age_or_dash(w, "beat_age_ms", " ago", beat, sizeof(beat));
        if (!json_is_true(json_object_get(w, "alive"))) {
            printf("  %-32s %9lld  no heartbeat: its jobs come back after the lease\n",
                   js(w, "id", "?"), coord_json_int(w, "in_flight"));
            continue;
        }
        printf("  %-32s %9lld %6lld %6lld %7lld %10s %9s ", js(w, "id", "?"),
               coord_json_int(w, "in_flight"), coord_json_int(w, "jobs_done"),
               coord_json_int(w, "jobs_failed"), coord_json_int(w, "jobs_retried"), bytes, beat);
        json_array_foreach(json_object_get(w, "jobs"), k, j)
            printf(" %s", json_string_value(j));
        printf("%s\n", json_is_true(json_object_get(w, "stopping")) ? " (stopping)" : "");
    }
}

static void print_budget(json_t *bs)
{
    if (!json_array_size(bs)) {
        printf("pull budget  nothing observed yet\n");
        return;
    }
    printf("pull budget\n  %-24s %6s %6s %8s %8s %10s %10s %5s\n", "SOURCE", "LIMIT", "LEFT",
           "RESERVED", "WINDOW", "SEEN", "PAUSED", "429s");
    size_t i;
    json_t *b;
    json_array_foreach(bs, i, b) {
        char lim[24], left[24], win[24], seen[32], paused[32];
        num_or_dash(b, "limit", lim, sizeof(lim));
        num_or_dash(b, "remaining", left, sizeof(left));
        age_or_dash(b, "observed_age_ms", " ago", seen, sizeof(seen));
        age_or_dash(b, "paused_for_ms", "", paused, sizeof(paused));
        if (json_is_integer(json_object_get(b, "window_s")))
            coord_status_duration(coord_json_int(b, "window_s") * 1000, win, sizeof(win));
        else
            snprintf(win, sizeof(win), "-");
        if (json_is_true(json_object_get(b, "unlimited")))
            snprintf(left, sizeof(left), "unlimited");
        printf("  %-24s %6s %6s %8lld %8s %10s %10s %5lld\n", js(b, "source", "?"), lim, left,
               coord_json_int(b, "reserved"), win, seen, paused, coord_json_int(b, "http_429"));
    }
}

static void print_current(json_t *r)
{
    if (!json_is_object(r)) {
        printf("current run  none\n");
        return;
    }
    long long total = coord_json_int(r, "jobs_total"), done = coord_json_int(r, "jobs_done");
    long long failed = coord_json_int(r, "jobs_failed") + coord_json_int(r, "jobs_dead"),
              deferred = coord_json_int(r, "deferred");
    char bytes[32], el[32], eta[48] = "";
    coord_human_bytes(coord_json_int(r, RQ_RUN_NAME(blob_bytes_copied)), bytes, sizeof(bytes));
    coord_status_duration(coord_json_int(r, "elapsed_ms"), el, sizeof(el));
    long long settled = done + failed + deferred;
    if (settled > 0 && settled < total) {
        char d[32];
        coord_status_duration(coord_json_int(r, "elapsed_ms") / settled * (total - settled), d,
                              sizeof(d));
        snprintf(eta, sizeof(eta), ", ETA %s", d);
    }
    printf("current run  %s at %.12s (%s): jobs %lld/%lld (failed %lld, deferred %lld), tags "
           "written %lld, pulls %lld, %s, running %s%s\n",
           js(r, "id", "?"), js(r, "commit", "?"), js(r, "state", "?"), done, total, failed,
           deferred, coord_json_int(r, RQ_RUN_NAME(tags_written)),
           coord_json_int(r, RQ_RUN_NAME(upstream_manifest_gets)), bytes, el, eta);
    if (coord_json_int(r, "lost") > 0)
        printf("  STALLED: %lld jobs of the run have no job queued; a coordinator waiting for "
               "the run (sync --wait, the daemon) enqueues them again\n",
               coord_json_int(r, "lost"));
    if (json_is_string(json_object_get(r, "error")))
        printf("  error: %s\n", js(r, "error", "?"));
}

static void print_runs(json_t *runs)
{
    if (!json_array_size(runs))
        return;
    printf("last runs\n  %-24s %-9s %-12s %-20s %9s %11s %8s %6s\n", "RUN", "STATE", "COMMIT",
           "STARTED", "DURATION", "JOBS", "WRITTEN", "GETS");
    size_t i;
    json_t *r;
    json_array_foreach(runs, i, r) {
        char started[32], dur[32], jobs[40];
        when(coord_json_int(r, "started_ms"), started, sizeof(started));
        age_or_dash(r, "duration_ms", "", dur, sizeof(dur));
        snprintf(jobs, sizeof(jobs), "%lld/%lld", coord_json_int(r, "jobs_done"),
                 coord_json_int(r, "jobs_total"));
        if (coord_json_int(r, "jobs_failed"))
            snprintf(jobs + strlen(jobs), sizeof(jobs) - strlen(jobs), " %lldF",
                     coord_json_int(r, "jobs_failed"));
        printf("  %-24s %-9s %-12.12s %-20s %9s %11s %8lld %6lld\n", js(r, "id", "?"),
               js(r, "state", "?"), js(r, "commit", "?"), started, dur, jobs,
               coord_json_int(r, RQ_RUN_NAME(tags_written)),
               coord_json_int(r, RQ_RUN_NAME(upstream_manifest_gets)));
    }
    char phases[200];
    coord_phases_text(json_object_get(json_array_get(runs, 0), "phases"), phases, sizeof(phases));
    if (phases[0])
        printf("  phases of the newest: %s\n", phases);
}

static void print_entries(json_t *o)
{
    json_t *es = json_object_get(o, "entries");
    if (!json_array_size(es))
        return;
    printf("sync file    entries of run %s\n  %-36s %-28s %11s %6s %6s\n",
           js(o, "entries_run", "?"), "SOURCE", "TARGET", "JOBS", "FAILED", "GETS");
    size_t i, k;
    json_t *en, *err;
    json_array_foreach(es, i, en) {
        char jobs[48];
        snprintf(jobs, sizeof(jobs), "%lld/%lld", coord_json_int(en, "jobs_done"),
                 coord_json_int(en, "jobs_total"));
        printf("  %-36s %-28s %11s %6lld %6lld\n", js(en, "source", "?"), js(en, "target", "-"),
               jobs, coord_json_int(en, "jobs_failed"),
               coord_json_int(en, RQ_RUN_NAME(upstream_manifest_gets)));
        json_array_foreach(json_object_get(en, "errors"), k, err)
            printf("    error: %s\n", json_string_value(err));
    }
}

static void print_status(json_t *o)
{
    json_t *coord = json_object_get(o, "coordinator");
    printf("hubsync status: redis %s, prefix %s\n", js(o, "redis", "?"), js(o, "prefix", "?"));
    if (json_is_true(json_object_get(coord, "held"))) {
        char exp[32];
        age_or_dash(coord, "expires_in_ms", "", exp, sizeof(exp));
        printf("coordinator  lease held by %s (expires in %s unless renewed)\n",
               js(coord, "holder", "?"), exp);
    } else {
        printf("coordinator  no coordinator holds the lease\n");
    }
    printf("jobs taken   %s\n", json_is_true(json_object_get(o, "paused"))
                                    ? "PAUSED by the operator switch (ctl:paused exists)"
                                    : "yes (no operator pause)");
    printf("synced       %s\n", js(o, "synced_commit", "never (no run has completed)"));
    print_queue(json_object_get(o, "queue"));
    print_workers(json_object_get(o, "workers"), coord_json_int(o, "workers_silent"));
    print_budget(json_object_get(o, "budget"));
    print_current(json_object_get(o, "current_run"));
    print_runs(json_object_get(o, "runs"));
    print_entries(o);
    json_t *h = json_object_get(o, "health");
    printf("health       %s: %s\n", json_is_true(json_object_get(h, "ok")) ? "ok" : "NOT OK",
           js(h, "reason", "?"));
}

int coord_status_main(int argc, char **argv)
{
    struct cfg c;
    struct status_ctx s;
    int code;
    memset(&s, 0, sizeof(s));
    if (coord_parse_args(&c, status_opts, NSTATUS_OPTS, argc, argv, status_usage, &code) < 0)
        return code;
    code = COORD_EXIT_USAGE;
    if (cfg_setup_log(&c, "coordinator", &s.e) < 0 ||
        rq_init(&s.q, cfg_str(&c, CFG_ID_REDIS_PREFIX), &s.e) < 0) {
        coord_fail("status", s.e.msg);
        goto out;
    }
    code = 1;
    struct rconn_opts ro = RCONN_OPTS_DEFAULT;
    /* No setup list: loading functions or creating the group would be writes. */
    if (rconn_open(&s.rc, cfg_str(&c, CFG_ID_REDIS), &ro, NULL, &s.e) < 0) {
        coord_fail("status", s.e.msg);
        goto out_q;
    }
    json_t *o = gather(&s, cfg_int(&c, COORD_ID_INTERVAL));
    if (!o) {
        coord_fail("status", s.e.msg);
        goto out_rc;
    }
    if (cfg_bool(&c, COORD_ID_JSON)) {
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    } else {
        print_status(o);
    }
    int healthy = json_is_true(json_object_get(json_object_get(o, "health"), "ok"));
    code = !cfg_bool(&c, COORD_ID_HEALTH) || healthy ? COORD_EXIT_OK : 1;
    json_decref(o);
out_rc:
    rconn_close(&s.rc);
out_q:
    rq_free(&s.q);
out:
    cfg_free(&c);
    return code;
}
