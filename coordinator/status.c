/* status: the `status` subcommand: what the fleet is doing, read from Redis.
 *
 * Queue depth (stream, taken, delayed by why, dead letters), jobs in flight
 * per worker with their heartbeats, the pull budget per source, the current
 * run with its progress, the last runs, the synced marker, the operator
 * pause switch and the coordinator lease. Only read commands are sent, on a
 * connection without the usual setup (loading functions and creating the
 * consumer group would be writes), so looking never changes anything. Times
 * are Redis TIME, like every time hubsync stores.
 *
 * The current run's lost jobs (not settled, no job of the run queued, held,
 * delayed or handed over: hubsync_run_check, a read) say it is stalled.
 *
 * Exit 0 when Redis answers; with --health also only when the current run
 * is not stalled and a coordinator holds the lease or the newest finished
 * run ended less than 2 x --interval ago (coord_status_health); 1
 * otherwise. */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coord.h"
#include "keys.h"
#include "rconn.h"
#include "rq.h"
#include "xalloc.h"

#define STATUS_DEAD_SHOWN 5
#define STATUS_RUNS_SHOWN 5
#define STATUS_SCAN_MAX 10000 /* budget sources looked at */

static const struct cfg_opt status_opts[] = {
    CFG_OPT_REDIS,
    CFG_OPT_REDIS_PREFIX,
    {"json", NULL, CFG_BOOL, "false", 0, 0, "print JSON (shape above)", 0},
    {"health", NULL, CFG_BOOL, "false", 0, 0,
     "exit 1 if the current run is stalled, or unless a coordinator holds the lease or the last "
     "run finished less than 2 x --interval ago",
     0},
    {"interval", "HUBSYNC_INTERVAL", CFG_INT, "21600", 60, 31536000,
     "the coordinators' --interval (seconds between runs), for --health", 0},
    CFG_OPT_LOG_LEVEL,
    CFG_OPT_LOG_FORMAT,
    CFG_OPT_HELP,
};
#define NSTATUS_OPTS ((int)(sizeof(status_opts) / sizeof(status_opts[0])))

static const char status_usage[] =
    "status [--redis URL] [--json] [--health]\n"
    "\n"
    "Shows the queue, the workers, the pull budget, the current and last runs, the synced\n"
    "marker, the pause switch and the coordinator lease, reading Redis only. Exit 0 when\n"
    "Redis answers, 1 when it does not; with --health also 1 when the current run is stalled\n"
    "(jobs of it that no job in the queue would settle), or unless a coordinator holds the\n"
    "lease (a daemon, or sync --once while it runs) or the newest finished run ended less\n"
    "than 2 x --interval ago (coordinators run from cron).\n"
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
    "           jobs_done, jobs_failed, tags_written, upstream_manifest_gets}],\n"
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
    struct keys k;
    struct err e;
    int down; /* an I/O error: the answer is incomplete */
    long long now_ms;
};

/* A read command from NULL-terminated arguments. The reply (caller frees)
 * may be an error reply; NULL when Redis did not answer (s->down set). */
static redisReply *query(struct status_ctx *s, const char *arg0, ...)
{
    const char *argv[12];
    int argc = 0;
    va_list ap;
    va_start(ap, arg0);
    for (const char *a = arg0; a && argc < 12; a = va_arg(ap, const char *))
        argv[argc++] = a;
    va_end(ap);
    redisReply *r = NULL;
    if (s->down || rconn_command(&s->rc, argc, argv, NULL, 0, &r, &s->e) < 0) {
        s->down = 1;
        return NULL;
    }
    return r;
}

static int is_array(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ARRAY;
}

static const char *reply_str(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) ? r->str : NULL;
}

static long long reply_int(const redisReply *r)
{
    if (r && r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    const char *sv = reply_str(r);
    return sv ? atoll(sv) : 0;
}

/* A number, or a string when the text is not one. */
static json_t *scalar(const char *v)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    return !errno && *v && !*end ? json_integer(n) : json_string(v);
}

static long long query_int(struct status_ctx *s, const char *cmd, const char *key)
{
    redisReply *r = query(s, cmd, key, NULL);
    long long n = reply_int(r);
    freeReplyObject(r);
    return n;
}

static json_t *query_str(struct status_ctx *s, const char *cmd, const char *key)
{
    redisReply *r = query(s, cmd, key, NULL);
    json_t *v = reply_str(r) ? json_string(reply_str(r)) : json_null();
    freeReplyObject(r);
    return v;
}

/* A hash as a JSON object (numbers where numeric). */
static json_t *query_hash(struct status_ctx *s, const char *key)
{
    redisReply *r = query(s, "HGETALL", key, NULL);
    json_t *o = json_object();
    for (size_t i = 0; is_array(r) && i + 1 < r->elements; i += 2)
        if (reply_str(r->element[i]) && reply_str(r->element[i + 1]))
            json_object_set_new(o, r->element[i]->str, scalar(r->element[i + 1]->str));
    freeReplyObject(r);
    return o;
}

static long long ji(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static json_t *opt_int(long long v, int present)
{
    return present ? json_integer(v) : json_null();
}

/* ---- sections
 * ------------------------------------------------------------------------------------ */

static json_t *coordinator_json(struct status_ctx *s)
{
    redisReply *r = query(s, "GET", s->k.coordinator, NULL);
    const char *holder = reply_str(r);
    json_t *o = json_object();
    json_object_set_new(o, "held", json_boolean(holder != NULL));
    /* The token is host:pid:random; the random part is the lease's, not the reader's. */
    char *who = holder ? xstrdup(holder) : NULL;
    char *cut = who ? strrchr(who, ':') : NULL;
    if (cut && cut != who)
        *cut = '\0';
    json_object_set_new(o, "holder", who ? json_string(who) : json_null());
    free(who);
    freeReplyObject(r);
    long long pttl = holder ? query_int(s, "PTTL", s->k.coordinator) : -1;
    json_object_set_new(o, "expires_in_ms", opt_int(pttl, pttl >= 0));
    return o;
}

/* Delayed jobs by why, the next due time, and those of `run` waiting for the budget. */
static json_t *delayed_json(struct status_ctx *s, const char *run, long long *run_deferred)
{
    long long budget = 0, backoff = 0, registry = 0;
    *run_deferred = 0;
    redisReply *r = query(s, "HVALS", s->k.jobs_delayed_payload, NULL);
    for (size_t i = 0; is_array(r) && i < r->elements; i++) {
        json_t *p = reply_str(r->element[i]) ? json_loads(r->element[i]->str, 0, NULL) : NULL;
        const char *why = json_string_value(json_object_get(p, "why"));
        const char *jr = json_string_value(json_object_get(json_object_get(p, "job"), "run"));
        int is_budget = why && strcmp(why, "budget") == 0;
        budget += is_budget;
        backoff += why && strcmp(why, "backoff") == 0;
        registry += why && strcmp(why, "registry") == 0;
        if (is_budget && run && jr && strcmp(jr, run) == 0)
            ++*run_deferred;
        json_decref(p);
    }
    freeReplyObject(r);
    json_t *o = json_object();
    json_object_set_new(o, "budget", json_integer(budget));
    json_object_set_new(o, "backoff", json_integer(backoff));
    json_object_set_new(o, "registry", json_integer(registry));
    return o;
}

static json_t *dead_json(struct status_ctx *s)
{
    char count[16];
    snprintf(count, sizeof(count), "%d", STATUS_DEAD_SHOWN);
    redisReply *r = query(s, "XREVRANGE", s->k.jobs_dead, "+", "-", "COUNT", count, NULL);
    json_t *a = json_array();
    for (size_t i = 0; is_array(r) && i < r->elements; i++) {
        const redisReply *en = r->element[i];
        if (!is_array(en) || en->elements != 2 || !is_array(en->element[1]))
            continue;
        const redisReply *f = en->element[1];
        json_t *o = json_object();
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            const char *name = reply_str(f->element[k]), *v = reply_str(f->element[k + 1]);
            if (!name || !v || strcmp(name, "job") == 0)
                continue; /* the payload is in redis-cli for whoever needs it */
            json_object_set_new(o, strcmp(name, "ts") == 0 ? "ts_ms" : name, scalar(v));
        }
        json_array_append_new(a, o);
    }
    freeReplyObject(r);
    return a;
}

static json_t *queue_json(struct status_ctx *s, const char *run, long long *run_deferred)
{
    json_t *o = json_object();
    long long stream = query_int(s, "XLEN", s->k.jobs);
    /* Acked entries are deleted, so the stream holds the waiting and the taken ones. */
    redisReply *r = query(s, "XPENDING", s->k.jobs, KEYS_GROUP, NULL);
    long long taken = is_array(r) && r->elements >= 1 ? reply_int(r->element[0]) : 0;
    freeReplyObject(r);
    json_object_set_new(o, "stream", json_integer(stream));
    json_object_set_new(o, "waiting", json_integer(stream - taken));
    json_object_set_new(o, "in_flight", json_integer(taken));
    json_object_set_new(o, "delayed", json_integer(query_int(s, "ZCARD", s->k.jobs_delayed)));
    json_object_set_new(o, "delayed_by_why", delayed_json(s, run, run_deferred));
    r = query(s, "ZRANGE", s->k.jobs_delayed, "0", "0", "WITHSCORES", NULL);
    json_object_set_new(
        o, "next_due_in_ms",
        is_array(r) && r->elements == 2
            ? json_integer(atoll(reply_str(r->element[1]) ? r->element[1]->str : "0") - s->now_ms)
            : json_null());
    freeReplyObject(r);
    json_object_set_new(o, "dead", json_integer(query_int(s, "XLEN", s->k.jobs_dead)));
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
    *silent = 0;
    redisReply *r = query(s, "ZRANGE", s->k.workers, "0", "-1", "WITHSCORES", NULL);
    for (size_t i = 0; is_array(r) && i + 1 < r->elements; i += 2) {
        const char *id = reply_str(r->element[i]);
        if (!id)
            continue;
        char *key = keys_worker(&s->k, id);
        redisReply *hb = query(s, "GET", key, NULL);
        free(key);
        json_t *beat = reply_str(hb) ? json_loads(hb->str, 0, NULL) : NULL;
        freeReplyObject(hb);
        if (!json_is_object(beat)) {
            json_decref(beat);
            ++*silent;
            continue;
        }
        json_t *w = worker_add(workers, id);
        json_object_update_missing(w, beat);
        json_decref(beat);
        json_object_set_new(w, "alive", json_true());
        json_object_set_new(
            w, "beat_age_ms",
            json_integer(s->now_ms -
                         atoll(reply_str(r->element[i + 1]) ? r->element[i + 1]->str : "0")));
    }
    freeReplyObject(r);
    r = query(s, "XPENDING", s->k.jobs, KEYS_GROUP, NULL);
    const redisReply *per = is_array(r) && r->elements == 4 ? r->element[3] : NULL;
    for (size_t i = 0; is_array(per) && i < per->elements; i++) {
        const redisReply *c = per->element[i];
        if (!is_array(c) || c->elements != 2 || !reply_str(c->element[0]))
            continue;
        json_t *w = worker_add(workers, c->element[0]->str);
        if (!json_is_true(json_object_get(w, "alive")))
            --*silent;
        json_object_set_new(w, "in_flight", json_integer(reply_int(c->element[1])));
    }
    freeReplyObject(r);
    if (*silent < 0)
        *silent = 0;
    return workers;
}

/* "%xx" sequences of a key part back to bytes. */
static char *pct_decode(const char *s)
{
    char *out = xmalloc(strlen(s) + 1), *o = out;
    while (*s) {
        unsigned v;
        if (s[0] == '%' && s[1] && s[2] && sscanf(s + 1, "%2x", &v) == 1) {
            *o++ = (char)v;
            s += 3;
        } else {
            *o++ = *s++;
        }
    }
    *o = '\0';
    return out;
}

static json_t *budget_source(struct status_ctx *s, const char *key, size_t skip)
{
    json_t *h = query_hash(s, key);
    char *source = pct_decode(key + skip);
    json_t *o = json_pack("{s:s}", "source", source);
    free(source);
    static const char *const copy[] = {"limit", "remaining", "window_s"};
    for (size_t i = 0; i < sizeof(copy) / sizeof(copy[0]); i++) {
        json_t *v = json_object_get(h, copy[i]);
        json_object_set(o, copy[i], json_is_integer(v) ? v : json_null());
    }
    json_object_set_new(o, "http_429",
                        json_integer(ji(h, "http_429"))); /* a counter: 0 until one */
    json_object_set_new(o, "unlimited", json_boolean(ji(h, "unlimited") == 1));
    json_t *seen = json_object_get(h, "observed_ms");
    json_object_set_new(o, "observed_age_ms",
                        opt_int(s->now_ms - ji(h, "observed_ms"), json_is_integer(seen)));
    long long paused = ji(h, "paused_until_ms") - s->now_ms;
    json_object_set_new(o, "paused_for_ms", opt_int(paused, paused > 0));
    char *inflight = xasprintf("%s:inflight", key), now[32];
    snprintf(now, sizeof(now), "(%lld", s->now_ms);
    redisReply *r = query(s, "ZCOUNT", inflight, now, "+inf", NULL);
    json_object_set_new(o, "reserved", json_integer(reply_int(r)));
    freeReplyObject(r);
    free(inflight);
    json_decref(h);
    return o;
}

static json_t *budget_json(struct status_ctx *s)
{
    json_t *a = json_array();
    char *pattern = xasprintf("%sbudget:*", s->k.prefix);
    char *cursor = xstrdup("0");
    size_t skip = strlen(s->k.prefix) + strlen("budget:"), seen = 0;
    do {
        redisReply *r = query(s, "SCAN", cursor, "MATCH", pattern, "COUNT", "1000", NULL);
        free(cursor);
        cursor = NULL;
        if (!is_array(r) || r->elements != 2 || !reply_str(r->element[0])) {
            freeReplyObject(r);
            break;
        }
        cursor = xstrdup(r->element[0]->str);
        const redisReply *ks = r->element[1];
        for (size_t i = 0; is_array(ks) && i < ks->elements; i++, seen++) {
            const char *key = reply_str(ks->element[i]);
            size_t n = key ? strlen(key) : 0;
            /* Sources are percent-encoded, so only the reservations end in ":inflight". */
            if (!key || (n > 9 && strcmp(key + n - 9, ":inflight") == 0))
                continue;
            json_array_append_new(a, budget_source(s, key, skip));
        }
        freeReplyObject(r);
    } while (cursor && strcmp(cursor, "0") != 0 && seen < STATUS_SCAN_MAX);
    free(cursor);
    free(pattern);
    return a;
}

static json_t *run_json(struct status_ctx *s, const char *id)
{
    char *key = keys_run(&s->k, id);
    json_t *o = query_hash(s, key);
    free(key);
    return o;
}

/* The last runs, newest first, with the fields an operator compares. */
static json_t *runs_json(struct status_ctx *s, long long *last_finished_ms)
{
    static const char *const fields[] = {"state",       "commit",       "started_ms",
                                         "finished_ms", "jobs_total",   "jobs_done",
                                         "jobs_failed", "tags_written", "upstream_manifest_gets"};
    char last[16];
    snprintf(last, sizeof(last), "%d", STATUS_RUNS_SHOWN - 1);
    json_t *a = json_array();
    *last_finished_ms = 0;
    redisReply *r = query(s, "ZREVRANGE", s->k.runs, "0", last, NULL);
    for (size_t i = 0; is_array(r) && i < r->elements; i++) {
        const char *id = reply_str(r->element[i]);
        if (!id)
            continue;
        json_t *rec = run_json(s, id);
        json_t *o = json_pack("{s:s}", "id", id);
        for (size_t k = 0; k < sizeof(fields) / sizeof(fields[0]); k++) {
            json_t *v = json_object_get(rec, fields[k]);
            json_object_set(o, fields[k], v ? v : json_null());
        }
        /* As sync's report: dead letters are failures too. */
        json_object_set_new(o, "jobs_failed",
                            json_integer(ji(rec, "jobs_failed") + ji(rec, "jobs_dead")));
        if (json_is_integer(json_object_get(rec, "finished_ms"))) {
            long long fin = ji(rec, "finished_ms");
            json_object_set_new(o, "duration_ms", json_integer(fin - ji(rec, "started_ms")));
            if (fin > *last_finished_ms)
                *last_finished_ms = fin;
        } else {
            json_object_set_new(o, "duration_ms", json_null());
        }
        json_decref(rec);
        json_array_append_new(a, o);
    }
    freeReplyObject(r);
    return a;
}

/* The run's lost jobs (rq_cmd_run_check), or -1 when Redis cannot tell (a
 * library from before it; s->down when Redis did not answer). */
static long long lost_jobs(struct status_ctx *s, const char *run)
{
    struct rq q;
    struct err e;
    char cursor[32] = "0";
    long long n = 0;
    if (rq_init(&q, s->k.prefix, &e) < 0)
        return -1;
    do {
        struct rq_res res;
        if (rq_exec(&s->rc, rq_cmd_run_check(&q, run, cursor, RQ_RUN_CHECK_COUNT), &res, &e) < 0) {
            if (!s->rc.c && !s->down) {
                s->down = 1;
                s->e = e;
            }
            rq_res_free(&res);
            n = -1;
            break;
        }
        n += (long long)res.nitems;
        snprintf(cursor, sizeof(cursor), "%s", res.str);
        rq_res_free(&res);
    } while (strcmp(cursor, "0") != 0);
    rq_free(&q);
    return n;
}

static json_t *current_json(struct status_ctx *s, const char *run, long long deferred,
                            long long *lost)
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
    json_object_set_new(rec, "deferred", json_integer(deferred));
    json_object_set_new(rec, "lost", *lost >= 0 ? json_integer(*lost) : json_null());
    json_object_set_new(rec, "elapsed_ms", json_integer(s->now_ms - ji(rec, "started_ms")));
    return rec;
}

/* Everything, or NULL when Redis stopped answering (s->e says why). */
static json_t *gather(struct status_ctx *s, const struct cfg *c)
{
    redisReply *t = query(s, "TIME", NULL);
    if (!is_array(t) || t->elements != 2 || !reply_str(t->element[0]) ||
        !reply_str(t->element[1])) {
        if (!s->down)
            err_set(&s->e, "redis %s: TIME gave no time", s->rc.url.where);
        freeReplyObject(t);
        return NULL;
    }
    s->now_ms = atoll(t->element[0]->str) * 1000 + atoll(t->element[1]->str) / 1000;
    freeReplyObject(t);
    json_t *o = json_object();
    json_object_set_new(o, "redis", json_string(s->rc.url.where));
    json_object_set_new(o, "prefix", json_string(s->k.prefix));
    json_object_set_new(o, "now_ms", json_integer(s->now_ms));
    json_object_set_new(o, "paused", json_boolean(query_int(s, "EXISTS", s->k.ctl_paused) == 1));
    json_object_set_new(o, "synced_commit", query_str(s, "GET", s->k.synced_commit));
    json_t *coord = coordinator_json(s);
    json_object_set_new(o, "coordinator", coord);
    json_t *cur = query_str(s, "GET", s->k.run_current);
    long long deferred = 0, silent = 0, last_finished = 0, lost = 0;
    json_object_set_new(o, "queue", queue_json(s, json_string_value(cur), &deferred));
    json_object_set_new(o, "workers", workers_json(s, &silent));
    json_object_set_new(o, "workers_silent", json_integer(silent));
    json_object_set_new(o, "budget", budget_json(s));
    json_object_set_new(o, "current_run",
                        current_json(s, json_string_value(cur), deferred, &lost));
    json_decref(cur);
    json_object_set_new(o, "runs", runs_json(s, &last_finished));
    json_object_set_new(o, "stats", query_hash(s, s->k.stats));
    char why[256];
    int ok = coord_status_health(lost, json_is_true(json_object_get(coord, "held")),
                                 last_finished, s->now_ms, cfg_int(c, "interval"), why,
                                 sizeof(why));
    json_object_set_new(o, "health", json_pack("{s:b, s:s}", "ok", ok, "reason", why));
    if (s->down) {
        json_decref(o);
        return NULL;
    }
    return o;
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
        coord_status_duration(ji(q, "next_due_in_ms"), d, sizeof(d));
        snprintf(due, sizeof(due), "; next due in %s", d);
    }
    printf("queue        %lld waiting, %lld in flight, %lld delayed (budget %lld, backoff "
           "%lld, registry down %lld%s), %lld dead\n",
           ji(q, "waiting"), ji(q, "in_flight"), ji(q, "delayed"), ji(why, "budget"),
           ji(why, "backoff"), ji(why, "registry"), due, ji(q, "dead"));
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(q, "dead_newest"), i, d) {
        char ts[32];
        when(ji(d, "ts_ms"), ts, sizeof(ts));
        printf("  dead  %s  %-32s %s (%lld deliveries)\n", ts, js(d, "key", "?"),
               js(d, "reason", "?"), ji(d, "deliveries"));
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
        coord_human_bytes(ji(w, "bytes"), bytes, sizeof(bytes));
        age_or_dash(w, "beat_age_ms", " ago", beat, sizeof(beat));
        if (!json_is_true(json_object_get(w, "alive"))) {
            printf("  %-32s %9lld  no heartbeat: its jobs come back after the lease\n",
                   js(w, "id", "?"), ji(w, "in_flight"));
            continue;
        }
        printf("  %-32s %9lld %6lld %6lld %7lld %10s %9s ", js(w, "id", "?"), ji(w, "in_flight"),
               ji(w, "jobs_done"), ji(w, "jobs_failed"), ji(w, "jobs_retried"), bytes, beat);
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
            coord_status_duration(ji(b, "window_s") * 1000, win, sizeof(win));
        else
            snprintf(win, sizeof(win), "-");
        if (json_is_true(json_object_get(b, "unlimited")))
            snprintf(left, sizeof(left), "unlimited");
        printf("  %-24s %6s %6s %8lld %8s %10s %10s %5lld\n", js(b, "source", "?"), lim, left,
               ji(b, "reserved"), win, seen, paused, ji(b, "http_429"));
    }
}

static void print_current(json_t *r)
{
    if (!json_is_object(r)) {
        printf("current run  none\n");
        return;
    }
    long long total = ji(r, "jobs_total"), done = ji(r, "jobs_done");
    long long failed = ji(r, "jobs_failed") + ji(r, "jobs_dead"), deferred = ji(r, "deferred");
    char bytes[32], el[32], eta[48] = "";
    coord_human_bytes(ji(r, "blob_bytes_copied"), bytes, sizeof(bytes));
    coord_status_duration(ji(r, "elapsed_ms"), el, sizeof(el));
    long long settled = done + failed + deferred;
    if (settled > 0 && settled < total) {
        char d[32];
        coord_status_duration(ji(r, "elapsed_ms") / settled * (total - settled), d, sizeof(d));
        snprintf(eta, sizeof(eta), ", ETA %s", d);
    }
    printf("current run  %s at %.12s (%s): jobs %lld/%lld (failed %lld, deferred %lld), tags "
           "written %lld, pulls %lld, %s, running %s%s\n",
           js(r, "id", "?"), js(r, "commit", "?"), js(r, "state", "?"), done, total, failed,
           deferred, ji(r, "tags_written"), ji(r, "upstream_manifest_gets"), bytes, el, eta);
    if (ji(r, "lost") > 0)
        printf("  STALLED: %lld jobs of the run have no job queued; a coordinator waiting for "
               "the run (sync --wait, the daemon) enqueues them again\n",
               ji(r, "lost"));
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
        when(ji(r, "started_ms"), started, sizeof(started));
        age_or_dash(r, "duration_ms", "", dur, sizeof(dur));
        snprintf(jobs, sizeof(jobs), "%lld/%lld", ji(r, "jobs_done"), ji(r, "jobs_total"));
        if (ji(r, "jobs_failed"))
            snprintf(jobs + strlen(jobs), sizeof(jobs) - strlen(jobs), " %lldF",
                     ji(r, "jobs_failed"));
        printf("  %-24s %-9s %-12.12s %-20s %9s %11s %8lld %6lld\n", js(r, "id", "?"),
               js(r, "state", "?"), js(r, "commit", "?"), started, dur, jobs, ji(r, "tags_written"),
               ji(r, "upstream_manifest_gets"));
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
    print_workers(json_object_get(o, "workers"), ji(o, "workers_silent"));
    print_budget(json_object_get(o, "budget"));
    print_current(json_object_get(o, "current_run"));
    print_runs(json_object_get(o, "runs"));
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
        keys_init(&s.k, cfg_str(&c, "redis-prefix"), &s.e) < 0) {
        coord_fail("status", s.e.msg);
        goto out;
    }
    code = 1;
    struct rconn_opts ro = RCONN_OPTS_DEFAULT;
    /* No setup list: loading functions or creating the group would be writes. */
    if (rconn_open(&s.rc, cfg_str(&c, "redis"), &ro, NULL, &s.e) < 0) {
        coord_fail("status", s.e.msg);
        goto out_keys;
    }
    json_t *o = gather(&s, &c);
    if (!o) {
        coord_fail("status", s.e.msg);
        goto out_rc;
    }
    if (cfg_bool(&c, "json")) {
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    } else {
        print_status(o);
    }
    int healthy = json_is_true(json_object_get(json_object_get(o, "health"), "ok"));
    code = !cfg_bool(&c, "health") || healthy ? COORD_EXIT_OK : 1;
    json_decref(o);
out_rc:
    rconn_close(&s.rc);
out_keys:
    keys_free(&s.k);
out:
    cfg_free(&c);
    return code;
}
