/* rq: see rq.h. Builders make argv vectors, parsers turn replies into
 * struct rq_res; rq_exec and rq_exec_async share both. */
#include "rq.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strv.h"
#include "text.h"
#include "xalloc.h"

/* How to read the reply of a command. */
enum kind {
    K_ENQUEUE,    /* {1|0, id} */
    K_TAKE,       /* {'job', id, key, job, n, dead} | {'none'|'busy', dead} | {'paused'} */
    K_READ,       /* XREADGROUP: nil | {{stream, {{id, {field, value...}}}}} */
    K_HELD,       /* 1 | 0 | -1 */
    K_INT,        /* integer */
    K_BUDGET,     /* {status, n} */
    K_FLAGS,      /* array of 0/1 */
    K_STRING,     /* nil | string */
    K_SETNX,      /* OK | nil */
    K_HASH,       /* field, value, ... */
    K_RUN_CREATE, /* 0 | start ms */
    K_CURSOR,     /* {cursor, n} */
    K_KEYSCAN,    /* {cursor, {key...}} */
    K_OK,         /* anything but an error */
    K_LIST,       /* strings */
    K_TIME,       /* {seconds, microseconds} */
    K_HELD_SUM,   /* XPENDING summary: {n, min, max, {{consumer, n}...}} */
    K_FIRST,      /* ZRANGE 0 0 WITHSCORES: {} | {member, score}: str, n */
    K_DEAD,       /* XREVRANGE: {{id, {field, value...}}...} */
    K_EVENTS,     /* XRANGE: {{id, {field, value...}}...} */
    K_OFFER,      /* 'none' | {id, field, value...} */
};

#define RQ_RUN_COUNTER_NAME(name) #name,
const char *const rq_run_counter_names[RQ_NRUN_COUNTERS] = {RQ_RUN_COUNTERS(RQ_RUN_COUNTER_NAME)};

struct rq_cmd {
    enum kind kind;
    int argc;
    int cap;
    char **argv;
    size_t *len;
    long long block_ms; /* a blocking command's own wait */
};

int rq_init(struct rq *q, const char *prefix, struct err *e)
{
    memset(q, 0, sizeof(*q));
    if (keys_init(&q->keys, prefix, e) < 0)
        return -1;
    q->run_prefix = keys_run(&q->keys, "");
    return 0;
}

int rq_init_bundle(struct rq *q, const char *prefix, struct err *e)
{
    memset(q, 0, sizeof(*q));
    if (keys_init_bundle(&q->keys, prefix, e) < 0)
        return -1;
    q->run_prefix = keys_run(&q->keys, "");
    return 0;
}

void rq_free(struct rq *q)
{
    keys_free(&q->keys);
    free(q->run_prefix);
    q->run_prefix = NULL;
}

int rq_lua_version(void)
{
    const char *v = strstr(rq_lua_source, "\nlocal VERSION = ");
    long long n = 0;
    if (!v)
        return 0;
    v += strlen("\nlocal VERSION = ");
    char *line = xstrndup(v, strcspn(v, "\n"));
    int ok = text_ll(line, &n) == 0 && n > 0 && n <= INT_MAX;
    free(line);
    return ok ? (int)n : 0;
}

#define RQ_NO_FUNCTION "ERR Function not found"

/* The answer to hubsync_version says Redis has no library, one from before
 * versions or an older one. */
static int library_outdated(const redisReply *r)
{
    if (r && r->type == REDIS_REPLY_INTEGER)
        return r->integer < rq_lua_version();
    return !r || r->type == REDIS_REPLY_ERROR;
}

void rq_setup(const struct rq *q, struct rconn_setup *out)
{
    memset(out, 0, sizeof(*out));
    /* Two programs of different versions may run side by side (a rolling
     * update): the newer library stays. Two that connect at the same moment
     * may both find it outdated; the later load wins. */
    const char *version[] = {"FCALL", "hubsync_version", "0"};
    rconn_setup_add(out, 3, version, NULL, RQ_NO_FUNCTION);
    const char *load[] = {"FUNCTION", "LOAD", "REPLACE", rq_lua_source};
    rconn_setup_add_if(out, library_outdated, 4, load, NULL, NULL);
    const char *group[] = {"XGROUP", "CREATE", q->keys.jobs, KEYS_GROUP, "0", "MKSTREAM"};
    rconn_setup_add(out, 6, group, NULL, "BUSYGROUP");
}

/* ---- results ------------------------------------------------------------ */

void rq_res_free(struct rq_res *r)
{
    free(r->id);
    free(r->key);
    free(r->json);
    free(r->str);
    strv_free_array(r->items, r->nitems);
    free(r->flags);
    memset(r, 0, sizeof(*r));
}

const char *rq_res_field(const struct rq_res *r, const char *name)
{
    for (size_t i = 0; i + 1 < r->nitems; i += 2)
        if (strcmp(r->items[i], name) == 0)
            return r->items[i + 1];
    return NULL;
}

long long rq_res_field_int(const struct rq_res *r, const char *name, long long def)
{
    long long n;
    return text_ll(rq_res_field(r, name), &n) == 0 ? n : def;
}

const char *rq_status_name(enum rq_status s)
{
    static const char *const names[] = {
        "?",     "done",    "added",   "duplicate", "job",     "empty",   "paused",
        "gone",  "stolen",  "granted", "unlimited", "denied",  "unknown", "value",
        "settled", "busy",
    };
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

/* ---- building commands -------------------------------------------------- */

void rq_cmd_free(struct rq_cmd *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->argc; i++)
        free(c->argv[i]);
    free(c->argv);
    free(c->len);
    free(c);
}

static struct rq_cmd *cmd_new(enum kind k)
{
    struct rq_cmd *c = xcalloc(1, sizeof(*c));
    c->kind = k;
    return c;
}

static void arg_own(struct rq_cmd *c, char *s)
{
    if (c->argc == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->argv = xrealloc(c->argv, (size_t)c->cap * sizeof(char *));
        c->len = xrealloc(c->len, (size_t)c->cap * sizeof(size_t));
    }
    c->len[c->argc] = strlen(s);
    c->argv[c->argc++] = s;
}

static void arg(struct rq_cmd *c, const char *s)
{
    arg_own(c, xstrdup(s));
}

static void arg_ll(struct rq_cmd *c, long long v)
{
    arg_own(c, xasprintf("%lld", v));
}

/* "FCALL fn nkeys": the keys and arguments follow. */
static struct rq_cmd *fcall_begin(enum kind k, const char *fn, int nkeys)
{
    struct rq_cmd *c = cmd_new(k);
    arg(c, "FCALL");
    arg(c, fn);
    arg_ll(c, nkeys);
    return c;
}

/* FCALL fn with nkeys key names (const char *) from the variable arguments. */
static struct rq_cmd *fcall(enum kind k, const char *fn, int nkeys, ...)
{
    struct rq_cmd *c = fcall_begin(k, fn, nkeys);
    va_list ap;
    va_start(ap, nkeys);
    for (int i = 0; i < nkeys; i++)
        arg(c, va_arg(ap, const char *));
    va_end(ap);
    return c;
}

static void arg_counters(struct rq_cmd *c, const struct rq_counter *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        arg(c, v[i].name);
        arg_ll(c, v[i].delta);
    }
}

static void arg_list(struct rq_cmd *c, const char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        arg(c, v[i]);
}

struct rq_cmd *rq_cmd_enqueue(const struct rq *q, const char *key, const char *json)
{
    const struct keys *k = &q->keys;
    struct rq_cmd *c =
        fcall(K_ENQUEUE, "hubsync_enqueue", 4, k->jobs, k->jobs_index, k->stats, k->jobs_delayed);
    arg(c, key);
    arg(c, json);
    return c;
}

struct rq_cmd *rq_cmd_take(const struct rq *q, const char *consumer, long long lease_ms,
                           int max_deliveries, long long live_ms)
{
    const struct keys *k = &q->keys;
    struct rq_cmd *c = fcall(K_TAKE, "hubsync_take", 8, k->jobs, k->jobs_dead, k->jobs_index,
                             k->stats, k->ctl_paused, k->run_current, k->jobs_handover,
                             k->workers);
    arg(c, KEYS_GROUP);
    arg(c, consumer);
    arg_ll(c, lease_ms);
    arg_ll(c, max_deliveries);
    arg_ll(c, RQ_DEAD_CAP);
    arg(c, q->run_prefix);
    arg_ll(c, live_ms);
    return c;
}

struct rq_cmd *rq_cmd_read_new(const struct rq *q, const char *consumer, long long block_ms)
{
    struct rq_cmd *c = cmd_new(K_READ);
    const char *argv[] = {"XREADGROUP", "GROUP", KEYS_GROUP, consumer, "COUNT", "1", "BLOCK"};
    arg_list(c, argv, sizeof(argv) / sizeof(argv[0]));
    arg_ll(c, block_ms);
    arg(c, "STREAMS");
    arg(c, q->keys.jobs);
    arg(c, ">");
    c->block_ms = block_ms;
    return c;
}

struct rq_cmd *rq_cmd_renew(const struct rq *q, const char *consumer, const char *id)
{
    struct rq_cmd *c = fcall(K_HELD, "hubsync_renew", 1, q->keys.jobs);
    arg(c, KEYS_GROUP);
    arg(c, consumer);
    arg(c, id);
    return c;
}

/* FCALL fn for settling a held job: the keys every settle needs, then the
 * function's own; group, consumer, id, job key, the run key prefix and the
 * run ("" when unknown: the function finds it from the payload). */
static struct rq_cmd *settle(const struct rq *q, const char *fn, const char *run_id, int nkeys,
                             const char *const *keys, const char *consumer, const char *id,
                             const char *key)
{
    const struct keys *k = &q->keys;
    const char *common[] = {k->jobs, k->jobs_index, k->stats, k->run_current, k->jobs_handover};
    struct rq_cmd *c = fcall_begin(K_HELD, fn, 5 + nkeys);
    arg_list(c, common, 5);
    arg_list(c, keys, (size_t)nkeys);
    arg(c, KEYS_GROUP);
    arg(c, consumer);
    arg(c, id);
    arg(c, key);
    arg(c, q->run_prefix);
    arg(c, run_id ? run_id : "");
    return c;
}

struct rq_cmd *rq_cmd_ack(const struct rq *q, const char *consumer, const char *id,
                          const char *key, const char *run_id, const struct rq_counter *counters,
                          size_t ncounters)
{
    struct rq_cmd *c = settle(q, "hubsync_ack", run_id, 0, NULL, consumer, id, key);
    arg_counters(c, counters, ncounters);
    return c;
}

struct rq_cmd *rq_cmd_retry(const struct rq *q, const char *consumer, const char *id,
                            const char *key, const char *json, long long delay_ms,
                            const char *why, const char *run_id,
                            const struct rq_counter *counters, size_t ncounters)
{
    const struct keys *k = &q->keys;
    const char *keys[] = {k->jobs_delayed, k->jobs_delayed_payload, k->jobs_delayed_count};
    struct rq_cmd *c = settle(q, "hubsync_retry", run_id, 3, keys, consumer, id, key);
    arg(c, json);
    arg_ll(c, delay_ms);
    arg(c, why);
    arg_counters(c, counters, ncounters);
    return c;
}

struct rq_cmd *rq_cmd_fail(const struct rq *q, const char *consumer, const char *id,
                           const char *key, const char *reason, const char *run_id,
                           const struct rq_counter *counters, size_t ncounters)
{
    const struct keys *k = &q->keys;
    const char *keys[] = {k->jobs_dead};
    struct rq_cmd *c = settle(q, "hubsync_fail", run_id, 1, keys, consumer, id, key);
    arg(c, reason);
    arg_ll(c, RQ_DEAD_CAP);
    arg_counters(c, counters, ncounters);
    return c;
}

struct rq_cmd *rq_cmd_idle(const struct rq *q)
{
    const struct keys *k = &q->keys;
    struct rq_cmd *c =
        fcall(K_HASH, "hubsync_idle", 3, k->jobs, k->jobs_delayed_count, k->run_current);
    arg(c, q->run_prefix);
    return c;
}

struct rq_cmd *rq_cmd_handback(const struct rq *q, const char *consumer, const char *id,
                               long long lease_ms)
{
    struct rq_cmd *c = fcall(K_HELD, "hubsync_handback", 2, q->keys.jobs, q->keys.stats);
    arg(c, KEYS_GROUP);
    arg(c, consumer);
    arg(c, id);
    arg_ll(c, lease_ms);
    return c;
}

struct rq_cmd *rq_cmd_promote(const struct rq *q, int max)
{
    const struct keys *k = &q->keys;
    struct rq_cmd *c = fcall(K_INT, "hubsync_promote", 6, k->jobs, k->jobs_index,
                             k->jobs_delayed, k->jobs_delayed_payload, k->stats,
                             k->jobs_delayed_count);
    arg_ll(c, max);
    arg(c, q->run_prefix);
    return c;
}

struct rq_cmd *rq_cmd_prune_consumers(const struct rq *q, long long min_idle_ms)
{
    struct rq_cmd *c = fcall(K_INT, "hubsync_prune_consumers", 1, q->keys.jobs);
    arg(c, KEYS_GROUP);
    arg_ll(c, min_idle_ms);
    return c;
}

struct rq_cmd *rq_cmd_repair_index(const struct rq *q, const char *cursor, int count)
{
    const struct keys *k = &q->keys;
    struct rq_cmd *c = fcall(K_CURSOR, "hubsync_repair_index", 5, k->jobs_index, k->jobs,
                             k->jobs_delayed, k->stats, k->jobs_handover);
    arg(c, cursor);
    arg_ll(c, count);
    return c;
}

struct rq_cmd *rq_cmd_budget_acquire(const struct rq *q, const char *worker_id,
                                     const char *source, int cost, int floor, long long ttl_ms,
                                     const char *resv)
{
    return rq_cmd_budget_acquire_any(q, worker_id, &source, 1, cost, floor, ttl_ms, resv);
}

struct rq_cmd *rq_cmd_budget_acquire_any(const struct rq *q, const char *worker_id,
                                         const char *const *sources, size_t n, int cost,
                                         int floor, long long ttl_ms, const char *resv)
{
    struct rq_cmd *c = fcall_begin(K_BUDGET, "hubsync_budget_acquire", (int)(2 * n + 2));
    arg_own(c, keys_budget(&q->keys, sources[0]));
    arg_own(c, keys_budget_inflight(&q->keys, sources[0]));
    arg(c, q->keys.stats);
    arg(c, q->keys.worker_budgets);
    for (size_t i = 1; i < n; i++) {
        arg_own(c, keys_budget(&q->keys, sources[i]));
        arg_own(c, keys_budget_inflight(&q->keys, sources[i]));
    }
    arg_ll(c, cost);
    arg_ll(c, floor);
    arg_ll(c, ttl_ms);
    arg(c, resv);
    arg(c, worker_id ? worker_id : "");
    return c;
}

struct rq_cmd *rq_cmd_budget_observe(const struct rq *q, const char *source,
                                     const struct ratelimit_info *rl, const char *resv)
{
    char *budget = keys_budget(&q->keys, source);
    char *inflight = keys_budget_inflight(&q->keys, source);
    struct rq_cmd *c = fcall(K_INT, "hubsync_budget_observe", 3, budget, inflight, q->keys.budgets);
    free(budget);
    free(inflight);
    if (rl && rl->has_remaining) {
        arg(c, "limited");
        arg_ll(c, rl->has_limit ? rl->limit : 0);
        arg_ll(c, rl->remaining);
        arg_ll(c, rl->remaining_window ? rl->remaining_window : rl->limit_window);
    } else {
        /* Hub answers unlimited accounts with a source and no ratelimit-*. */
        arg(c, rl && rl->has_limit ? "none" : "unlimited");
        arg(c, "");
        arg(c, "");
        arg(c, "");
    }
    arg(c, resv ? resv : "");
    arg(c, source);
    return c;
}

struct rq_cmd *rq_cmd_budget_elsewhere(const struct rq *q, const char *worker_id,
                                       const char *source, int floor, long long live_ms)
{
    char *budget = keys_budget(&q->keys, source);
    struct rq_cmd *c = fcall(K_INT, "hubsync_budget_elsewhere", 3, q->keys.workers,
                             q->keys.worker_budgets, budget);
    free(budget);
    arg(c, worker_id);
    arg_ll(c, floor);
    arg_ll(c, live_ms);
    return c;
}

struct rq_cmd *rq_cmd_budget_pause(const struct rq *q, const char *source,
                                   long long duration_ms)
{
    char *budget = keys_budget(&q->keys, source);
    struct rq_cmd *c =
        fcall(K_INT, "hubsync_budget_pause", 3, budget, q->keys.stats, q->keys.budgets);
    free(budget);
    arg_ll(c, duration_ms);
    arg(c, source);
    return c;
}

struct rq_cmd *rq_cmd_breaker_check(const struct rq *q, const char *const *urls, size_t n,
                                    long long probe_ms)
{
    struct rq_cmd *c = fcall_begin(K_BUDGET, "hubsync_breaker_check", (int)n);
    for (size_t i = 0; i < n; i++)
        arg_own(c, keys_breaker(&q->keys, urls[i]));
    arg_ll(c, probe_ms);
    return c;
}

struct rq_cmd *rq_cmd_breaker_report(const struct rq *q, const char *url, int ok, int threshold,
                                     long long cooldown_ms, const char *error)
{
    char *breaker = keys_breaker(&q->keys, url);
    struct rq_cmd *c = fcall(K_STRING, "hubsync_breaker_report", 2, breaker, q->keys.stats);
    free(breaker);
    arg(c, ok ? "1" : "0");
    arg_ll(c, threshold);
    arg_ll(c, cooldown_ms);
    arg(c, url);
    arg(c, error ? error : "");
    return c;
}

/* FCALL fn on a repository's present set and the epoch's blobhome hash. */
static struct rq_cmd *present_call(const struct rq *q, const char *fn, const char *target,
                                   const char *epoch, const char *repo)
{
    char *present = keys_present(&q->keys, target, epoch, repo);
    char *home = keys_blobhome(&q->keys, target, epoch);
    struct rq_cmd *c = fcall(K_INT, fn, 2, present, home);
    free(present);
    free(home);
    return c;
}

struct rq_cmd *rq_cmd_present_check(const struct rq *q, const char *target, const char *epoch,
                                    const char *repo, const char *const *digests, size_t n)
{
    char *present = keys_present(&q->keys, target, epoch, repo);
    struct rq_cmd *c = fcall(K_FLAGS, "hubsync_present_check", 1, present);
    free(present);
    arg_ll(c, RQ_PRESENT_TTL_MS);
    arg_list(c, digests, n);
    return c;
}

struct rq_cmd *rq_cmd_present_mark(const struct rq *q, const char *target, const char *epoch,
                                   const char *repo, const char *const *digests, size_t n)
{
    struct rq_cmd *c = present_call(q, "hubsync_present_mark", target, epoch, repo);
    arg_ll(c, RQ_PRESENT_TTL_MS);
    arg(c, repo);
    arg_list(c, digests, n);
    return c;
}

struct rq_cmd *rq_cmd_present_forget(const struct rq *q, const char *target, const char *epoch,
                                     const char *repo, const char *const *digests, size_t n)
{
    struct rq_cmd *c = present_call(q, "hubsync_present_forget", target, epoch, repo);
    arg(c, repo);
    arg_list(c, digests, n);
    return c;
}

struct rq_cmd *rq_cmd_blobhome(const struct rq *q, const char *target, const char *epoch,
                               const char *digest)
{
    struct rq_cmd *c = cmd_new(K_STRING);
    arg(c, "HGET");
    arg_own(c, keys_blobhome(&q->keys, target, epoch));
    arg(c, digest);
    return c;
}

struct rq_cmd *rq_cmd_target_get(const struct rq *q, const char *target)
{
    struct rq_cmd *c = cmd_new(K_HASH);
    arg(c, "HGETALL");
    arg_own(c, keys_target(&q->keys, target));
    return c;
}

struct rq_cmd *rq_cmd_target_epoch(const struct rq *q, const char *target, const char *old,
                                   const char *marker, const char *repo)
{
    char *key = keys_target(&q->keys, target);
    struct rq_cmd *c = fcall(K_HASH, "hubsync_target_epoch", 1, key);
    free(key);
    arg(c, old ? old : "");
    arg(c, marker);
    arg(c, repo);
    arg_ll(c, RQ_PRESENT_TTL_MS);
    return c;
}

struct rq_cmd *rq_cmd_lease_acquire(const char *key, const char *token, long long ttl_ms)
{
    struct rq_cmd *c = cmd_new(K_SETNX);
    arg(c, "SET");
    arg(c, key);
    arg(c, token);
    arg(c, "NX");
    arg(c, "PX");
    arg_ll(c, ttl_ms);
    return c;
}

struct rq_cmd *rq_cmd_lease_renew(const char *key, const char *token, long long ttl_ms)
{
    struct rq_cmd *c = fcall(K_HELD, "hubsync_lease_renew", 1, key);
    arg(c, token);
    arg_ll(c, ttl_ms);
    return c;
}

struct rq_cmd *rq_cmd_lease_release(const char *key, const char *token)
{
    struct rq_cmd *c = fcall(K_HELD, "hubsync_lease_release", 1, key);
    arg(c, token);
    return c;
}

struct rq_cmd *rq_cmd_run_create(const struct rq *q, const char *run_id, const char *commit,
                                 int keep)
{
    char *run = keys_run(&q->keys, run_id);
    struct rq_cmd *c =
        fcall(K_RUN_CREATE, "hubsync_run_create", 3, run, q->keys.runs, q->keys.run_current);
    free(run);
    arg(c, run_id);
    arg(c, commit);
    arg(c, q->run_prefix);
    arg_ll(c, keep);
    return c;
}

struct rq_cmd *rq_cmd_run_enqueue(const struct rq *q, const char *run_id, const char *key,
                                  const char *json)
{
    return rq_cmd_run_enqueue_entry(q, run_id, key, json, NULL, NULL);
}

struct rq_cmd *rq_cmd_run_enqueue_entry(const struct rq *q, const char *run_id, const char *key,
                                        const char *json, const char *entry,
                                        const char *entry_target)
{
    const struct keys *k = &q->keys;
    char *run = keys_run(k, run_id), *runkeys = keys_run_keys(k, run_id);
    char *settled = keys_run_settled(k, run_id);
    char *entries = keys_run_entries(k, run_id), *entry_of = keys_run_entry_of(k, run_id);
    struct rq_cmd *c = fcall(K_ENQUEUE, "hubsync_run_enqueue", 12, k->jobs, k->jobs_index,
                             k->stats, run, runkeys, settled, k->jobs_delayed,
                             k->jobs_delayed_payload, k->jobs_handover, k->jobs_delayed_count,
                             entries, entry_of);
    free(run);
    free(runkeys);
    free(settled);
    free(entries);
    free(entry_of);
    arg(c, key);
    arg(c, json);
    arg(c, run_id);
    arg(c, KEYS_GROUP);
    arg(c, q->run_prefix);
    arg(c, entry ? entry : "");
    arg(c, entry_target ? entry_target : "");
    return c;
}

struct rq_cmd *rq_cmd_run_entries(const struct rq *q, const char *run_id)
{
    struct rq_cmd *c = cmd_new(K_HASH);
    arg(c, "HGETALL");
    arg_own(c, keys_run_entries(&q->keys, run_id));
    return c;
}

struct rq_cmd *rq_cmd_run_check(const struct rq *q, const char *run_id, const char *cursor,
                                int count)
{
    const struct keys *k = &q->keys;
    char *runkeys = keys_run_keys(k, run_id), *settled = keys_run_settled(k, run_id);
    struct rq_cmd *c = cmd_new(K_KEYSCAN);
    const char *keys[] = {runkeys, settled, k->jobs, k->jobs_index, k->jobs_delayed,
                          k->jobs_delayed_payload, k->jobs_handover};
    arg(c, "FCALL_RO"); /* a read: status may call it */
    arg(c, "hubsync_run_check");
    arg_ll(c, 7);
    arg_list(c, keys, 7);
    free(runkeys);
    free(settled);
    arg(c, run_id);
    arg(c, cursor);
    arg_ll(c, count);
    return c;
}

struct rq_cmd *rq_cmd_purge_delayed(const struct rq *q, const char *run_id)
{
    const struct keys *k = &q->keys;
    struct rq_cmd *c = fcall(K_INT, "hubsync_purge_delayed", 5, k->jobs_index, k->jobs_delayed,
                             k->jobs_delayed_payload, k->stats, k->jobs_delayed_count);
    arg(c, run_id ? run_id : "");
    return c;
}

struct rq_cmd *rq_cmd_run_current(const struct rq *q)
{
    struct rq_cmd *c = cmd_new(K_STRING);
    arg(c, "GET");
    arg(c, q->keys.run_current);
    return c;
}

struct rq_cmd *rq_cmd_run_get(const struct rq *q, const char *run_id)
{
    struct rq_cmd *c = cmd_new(K_HASH);
    arg(c, "HGETALL");
    arg_own(c, keys_run(&q->keys, run_id));
    return c;
}

struct rq_cmd *rq_cmd_run_finish(const struct rq *q, const char *run_id, const char *state,
                                 int advance)
{
    char *run = keys_run(&q->keys, run_id), *runkeys = keys_run_keys(&q->keys, run_id);
    char *settled = keys_run_settled(&q->keys, run_id);
    char *entry_of = keys_run_entry_of(&q->keys, run_id);
    struct rq_cmd *c = fcall(K_HELD, "hubsync_run_finish", 7, run, q->keys.run_current,
                             q->keys.synced_commit, runkeys, settled, q->keys.jobs_handover,
                             entry_of);
    free(run);
    free(runkeys);
    free(settled);
    free(entry_of);
    arg(c, run_id);
    arg(c, state);
    arg(c, advance ? "1" : "0");
    return c;
}

struct rq_cmd *rq_cmd_synced_commit(const struct rq *q)
{
    struct rq_cmd *c = cmd_new(K_STRING);
    arg(c, "GET");
    arg(c, q->keys.synced_commit);
    return c;
}

struct rq_cmd *rq_cmd_stats(const struct rq *q)
{
    struct rq_cmd *c = cmd_new(K_HASH);
    arg(c, "HGETALL");
    arg(c, q->keys.stats);
    return c;
}

struct rq_cmd *rq_cmd_run_note(const struct rq *q, const char *run_id, const char *field,
                               const char *value)
{
    struct rq_cmd *c = cmd_new(K_OK);
    arg(c, "HSET");
    arg_own(c, keys_run(&q->keys, run_id));
    arg(c, field);
    arg(c, value);
    return c;
}

struct rq_cmd *rq_cmd_run_entry_note(const struct rq *q, const char *run_id, const char *entry,
                                     const char *what, const char *value)
{
    struct rq_cmd *c = cmd_new(K_OK);
    arg(c, "HSET");
    arg_own(c, keys_run_entries(&q->keys, run_id));
    arg_own(c, xasprintf("%s %s", what, entry));
    arg(c, value);
    return c;
}

/* A read: the command name, then its arguments. */
static struct rq_cmd *read_cmd(enum kind k, const char *name, const char *key)
{
    struct rq_cmd *c = cmd_new(k);
    arg(c, name);
    if (key)
        arg(c, key);
    return c;
}

struct rq_cmd *rq_cmd_time(void)
{
    return read_cmd(K_TIME, "TIME", NULL);
}

struct rq_cmd *rq_cmd_paused(const struct rq *q)
{
    return read_cmd(K_INT, "EXISTS", q->keys.ctl_paused);
}

struct rq_cmd *rq_cmd_lease_holder(const char *key)
{
    return read_cmd(K_STRING, "GET", key);
}

struct rq_cmd *rq_cmd_lease_ttl(const char *key)
{
    return read_cmd(K_INT, "PTTL", key);
}

struct rq_cmd *rq_cmd_queue_len(const struct rq *q)
{
    return read_cmd(K_INT, "XLEN", q->keys.jobs);
}

struct rq_cmd *rq_cmd_queue_held(const struct rq *q)
{
    struct rq_cmd *c = read_cmd(K_HELD_SUM, "XPENDING", q->keys.jobs);
    arg(c, KEYS_GROUP);
    return c;
}

struct rq_cmd *rq_cmd_delayed_len(const struct rq *q)
{
    return read_cmd(K_INT, "ZCARD", q->keys.jobs_delayed);
}

struct rq_cmd *rq_cmd_delayed_next(const struct rq *q)
{
    struct rq_cmd *c = read_cmd(K_FIRST, "ZRANGE", q->keys.jobs_delayed);
    const char *rest[] = {"0", "0", "WITHSCORES"};
    arg_list(c, rest, 3);
    return c;
}

struct rq_cmd *rq_cmd_delayed_counts(const struct rq *q)
{
    return read_cmd(K_HASH, "HGETALL", q->keys.jobs_delayed_count);
}

struct rq_cmd *rq_cmd_dead_len(const struct rq *q)
{
    return read_cmd(K_INT, "XLEN", q->keys.jobs_dead);
}

struct rq_cmd *rq_cmd_dead_newest(const struct rq *q, int count)
{
    struct rq_cmd *c = read_cmd(K_DEAD, "XREVRANGE", q->keys.jobs_dead);
    const char *rest[] = {"+", "-", "COUNT"};
    arg_list(c, rest, 3);
    arg_ll(c, count);
    return c;
}

struct rq_cmd *rq_cmd_workers(const struct rq *q)
{
    struct rq_cmd *c = read_cmd(K_HASH, "ZRANGE", q->keys.workers);
    const char *rest[] = {"0", "-1", "WITHSCORES"};
    arg_list(c, rest, 3);
    return c;
}

struct rq_cmd *rq_cmd_worker_get(const struct rq *q, const char *worker_id)
{
    struct rq_cmd *c = read_cmd(K_STRING, "GET", NULL);
    arg_own(c, keys_worker(&q->keys, worker_id));
    return c;
}

struct rq_cmd *rq_cmd_budget_sources(const struct rq *q)
{
    struct rq_cmd *c = read_cmd(K_LIST, "ZRANGE", q->keys.budgets);
    arg(c, "0");
    arg(c, "-1");
    return c;
}

struct rq_cmd *rq_cmd_budget_get(const struct rq *q, const char *source)
{
    struct rq_cmd *c = read_cmd(K_HASH, "HGETALL", NULL);
    arg_own(c, keys_budget(&q->keys, source));
    return c;
}

struct rq_cmd *rq_cmd_budget_reserved(const struct rq *q, const char *source, long long now_ms)
{
    struct rq_cmd *c = read_cmd(K_INT, "ZCOUNT", NULL);
    arg_own(c, keys_budget_inflight(&q->keys, source));
    arg_own(c, xasprintf("(%lld", now_ms));
    arg(c, "+inf");
    return c;
}

struct rq_cmd *rq_cmd_runs_newest(const struct rq *q, int count)
{
    struct rq_cmd *c = read_cmd(K_LIST, "ZREVRANGE", q->keys.runs);
    arg(c, "0");
    arg_ll(c, count - 1);
    return c;
}

struct rq_cmd *rq_cmd_manifest_keep(const struct rq *q, const char *digest,
                                    const char *media_type, const char *body, long long ttl_ms,
                                    long long max_bytes)
{
    char *key = keys_manifest(&q->keys, digest);
    struct rq_cmd *c = fcall(K_OK, "hubsync_manifest_keep", 2, key, q->keys.manifests);
    free(key);
    arg(c, media_type);
    arg(c, body);
    arg_ll(c, ttl_ms);
    arg_ll(c, max_bytes);
    return c;
}

struct rq_cmd *rq_cmd_manifest_cached(const struct rq *q, const char *digest)
{
    struct rq_cmd *c = cmd_new(K_HASH);
    arg(c, "HGETALL");
    arg_own(c, keys_manifest(&q->keys, digest));
    return c;
}

struct rq_cmd *rq_cmd_manifest_drop(const struct rq *q, const char *digest)
{
    char *key = keys_manifest(&q->keys, digest);
    struct rq_cmd *c = fcall(K_OK, "hubsync_manifest_drop", 2, key, q->keys.manifests);
    free(key);
    return c;
}

struct rq_cmd *rq_cmd_export_last(const struct rq *q)
{
    struct rq_cmd *c = read_cmd(K_FIRST, "ZRANGE", q->keys.exports);
    const char *rest[] = {"0", "0", "REV", "WITHSCORES"};
    arg_list(c, rest, 4);
    return c;
}

struct rq_cmd *rq_cmd_export_known(const struct rq *q, const char *commit)
{
    struct rq_cmd *c = cmd_new(K_STRING);
    arg(c, "ZSCORE");
    arg(c, q->keys.exports);
    arg(c, commit);
    return c;
}

struct rq_cmd *rq_cmd_export_check(const struct rq *q, const char *commit,
                                   const char *const *digests, size_t n)
{
    struct rq_cmd *c = cmd_new(K_FLAGS);
    arg(c, "SMISMEMBER");
    arg_own(c, keys_export(&q->keys, commit));
    arg_list(c, digests, n);
    return c;
}

struct rq_cmd *rq_cmd_export_add(const struct rq *q, const char *commit, int first,
                                 const char *const *digests, size_t n)
{
    char *key = keys_export_new(&q->keys, commit);
    struct rq_cmd *c = fcall(K_OK, "hubsync_export_add", 1, key);
    free(key);
    arg(c, first ? "1" : "0");
    arg_list(c, digests, n);
    return c;
}

struct rq_cmd *rq_cmd_export_record(const struct rq *q, const char *commit)
{
    char *fresh = keys_export_new(&q->keys, commit), *set = keys_export(&q->keys, commit);
    char *prefix = keys_export(&q->keys, "");
    struct rq_cmd *c = fcall(K_OK, "hubsync_export_record", 3, fresh, set, q->keys.exports);
    free(fresh);
    free(set);
    arg(c, commit);
    arg(c, prefix);
    arg_ll(c, RQ_EXPORTS_KEEP);
    free(prefix);
    return c;
}

struct rq_cmd *rq_cmd_site_get(const struct rq *q, const char *target)
{
    struct rq_cmd *c = cmd_new(K_HASH);
    arg(c, "HGETALL");
    arg_own(c, keys_site(&q->keys, target));
    return c;
}

struct rq_cmd *rq_cmd_site_record(const struct rq *q, const char *target, const char *commit,
                                  const char *base)
{
    char *key = keys_site(&q->keys, target);
    struct rq_cmd *c = fcall(K_OK, "hubsync_site_record", 1, key);
    free(key);
    arg(c, commit);
    arg(c, base);
    return c;
}

struct rq_cmd *rq_cmd_behind_mark(const struct rq *q, const char *repo, long long since_ms)
{
    struct rq_cmd *c = read_cmd(K_OK, "HSETNX", q->keys.behind);
    arg(c, repo);
    arg_ll(c, since_ms);
    return c;
}

struct rq_cmd *rq_cmd_behind_clear(const struct rq *q, const char *repo)
{
    struct rq_cmd *c = read_cmd(K_OK, "HDEL", q->keys.behind);
    arg(c, repo);
    return c;
}

struct rq_cmd *rq_cmd_behind(const struct rq *q)
{
    return read_cmd(K_HASH, "HGETALL", q->keys.behind);
}

struct rq_cmd *rq_cmd_event_add(const struct rq *q, const char *type, const char *data)
{
    struct rq_cmd *c = read_cmd(K_STRING, "XADD", q->keys.events);
    const char *rest[] = {"MAXLEN", "~"};
    arg_list(c, rest, 2);
    arg_ll(c, RQ_EVENTS_KEEP);
    const char *fields[] = {"*", "type", type, "data", data};
    arg_list(c, fields, 5);
    return c;
}

struct rq_cmd *rq_cmd_assist_offer(const struct rq *q, const struct rq_assist *o)
{
    struct rq_cmd *c = read_cmd(K_STRING, "XADD", q->keys.assist);
    const char *rest[] = {"MAXLEN", "~"};
    arg_list(c, rest, 2);
    arg_ll(c, RQ_ASSIST_CAP);
    const char *fields[] = {"*",        "job",         o->job_id,      "key",
                            o->key,     "run",         o->run,         "worker",
                            o->worker,  "upstream",    o->upstream,    "source_repo",
                            o->source_repo, "target",  o->target,      "target_repo",
                            o->target_repo, "children"};
    arg_list(c, fields, sizeof(fields) / sizeof(fields[0]));
    size_t len = 1;
    for (size_t i = 0; i < o->nchildren; i++)
        len += strlen(o->children[i]) + 1;
    char *list = xcalloc(1, len);
    for (size_t i = 0; i < o->nchildren; i++) {
        if (i)
            strcat(list, " ");
        strcat(list, o->children[i]);
    }
    arg_own(c, list);
    return c;
}

struct rq_cmd *rq_cmd_assist_take(const struct rq *q, const char *consumer)
{
    struct rq_cmd *c = fcall(K_OFFER, "hubsync_assist_take", 1, q->keys.assist);
    arg(c, consumer);
    return c;
}

struct rq_cmd *rq_cmd_assist_done(const struct rq *q, const char *run_id, const char *key,
                                  const struct rq_counter *counters, size_t ncounters)
{
    struct rq_cmd *c = fcall(K_INT, "hubsync_assist_done", 1, q->keys.run_current);
    arg(c, q->run_prefix);
    arg(c, run_id ? run_id : "");
    arg(c, key);
    arg_counters(c, counters, ncounters);
    return c;
}

struct rq_cmd *rq_cmd_assist_clear(const struct rq *q, const char *job_id, const char *worker)
{
    struct rq_cmd *c = fcall(K_INT, "hubsync_assist_clear", 1, q->keys.assist);
    arg(c, job_id);
    arg(c, worker);
    return c;
}

char *rq_event_field(const char *target, const char *repo, const char *tag)
{
    return xasprintf("%s %s:%s", target, repo, tag);
}

struct rq_cmd *rq_cmd_event_intent(const struct rq *q, const char *field, const char *digest,
                                   const char *type, const char *data)
{
    struct rq_cmd *c = read_cmd(K_OK, "HSET", q->keys.events_pending);
    arg(c, field);
    arg_own(c, xasprintf("%s %s %s", digest, type, data));
    return c;
}

struct rq_cmd *rq_cmd_event_tag(const struct rq *q, const char *field, const char *type,
                                const char *data)
{
    struct rq_cmd *c = fcall(K_OK, "hubsync_event_tag", 2, q->keys.events, q->keys.events_pending);
    arg_ll(c, RQ_EVENTS_KEEP);
    const char *rest[] = {field, type, data};
    arg_list(c, rest, 3);
    return c;
}

struct rq_cmd *rq_cmd_event_settle(const struct rq *q, const char *const *fields,
                                   const char *const *digests, size_t n)
{
    struct rq_cmd *c =
        fcall(K_OK, "hubsync_event_settle", 2, q->keys.events, q->keys.events_pending);
    arg_ll(c, RQ_EVENTS_KEEP);
    for (size_t i = 0; i < n; i++) {
        arg(c, fields[i]);
        arg(c, digests[i]);
    }
    return c;
}

struct rq_cmd *rq_cmd_events_after(const struct rq *q, const char *after, int count)
{
    struct rq_cmd *c = read_cmd(K_EVENTS, "XRANGE", q->keys.events);
    arg_own(c, xasprintf("(%s", after));
    const char *rest[] = {"+", "COUNT"};
    arg_list(c, rest, 2);
    arg_ll(c, count);
    return c;
}

struct rq_cmd *rq_cmd_events_delivered(const struct rq *q)
{
    return read_cmd(K_STRING, "GET", q->keys.events_delivered);
}

struct rq_cmd *rq_cmd_events_delivered_set(const struct rq *q, const char *id)
{
    struct rq_cmd *c = read_cmd(K_OK, "SET", q->keys.events_delivered);
    arg(c, id);
    return c;
}

struct rq_cmd *rq_cmd_worker_beat(const struct rq *q, const char *worker_id, const char *json,
                                  int ttl_s)
{
    char *worker = keys_worker(&q->keys, worker_id);
    struct rq_cmd *c = fcall(K_OK, "hubsync_worker_beat", 3, worker, q->keys.workers,
                             q->keys.worker_budgets);
    free(worker);
    arg(c, worker_id);
    arg(c, json);
    arg_ll(c, ttl_s);
    return c;
}

struct rq_cmd *rq_cmd_worker_gone(const struct rq *q, const char *worker_id)
{
    char *worker = keys_worker(&q->keys, worker_id);
    struct rq_cmd *c = fcall(K_OK, "hubsync_worker_gone", 3, worker, q->keys.workers,
                             q->keys.worker_budgets);
    free(worker);
    arg(c, worker_id);
    return c;
}

/* ---- parsing replies ---------------------------------------------------- */

static const char *cmd_name(const struct rq_cmd *c)
{
    return strncmp(c->argv[0], "FCALL", 5) == 0 ? c->argv[1] : c->argv[0];
}

static int bad_reply(const struct rq_cmd *c, struct err *e, const char *what)
{
    return err_set(e, "redis reply to %s: %s", cmd_name(c), what);
}

static int is_str(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static int is_int(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_INTEGER;
}

static int is_array(const redisReply *r, size_t min)
{
    return r && r->type == REDIS_REPLY_ARRAY && r->elements >= min;
}

static char *dup_str(const redisReply *r)
{
    return xstrndup(r->str, r->len);
}

/* Every element a string: copied into a new vector. */
static int str_array(const redisReply *r, char ***out, size_t *n)
{
    if (!is_array(r, 0))
        return -1;
    for (size_t i = 0; i < r->elements; i++)
        if (!is_str(r->element[i]))
            return -1;
    *out = xcalloc(r->elements ? r->elements : 1, sizeof(char *));
    for (size_t i = 0; i < r->elements; i++)
        (*out)[i] = dup_str(r->element[i]);
    *n = r->elements;
    return 0;
}

/* A stream entry {id, {field, value, ...}} as a job. */
static int parse_entry(const redisReply *r, struct rq_res *res)
{
    if (!is_array(r, 2) || !is_str(r->element[0]) || !is_array(r->element[1], 0))
        return -1;
    const redisReply *f = r->element[1];
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        if (!is_str(f->element[i]) || !is_str(f->element[i + 1]))
            return -1;
        char **slot = strcmp(f->element[i]->str, "key") == 0   ? &res->key
                      : strcmp(f->element[i]->str, "job") == 0 ? &res->json
                                                               : NULL;
        if (slot && !*slot)
            *slot = dup_str(f->element[i + 1]);
    }
    res->id = dup_str(r->element[0]);
    return res->key && res->json ? 0 : -1;
}

static int parse_take(const struct rq_cmd *c, const redisReply *r, struct rq_res *res,
                      struct err *e)
{
    if (!is_array(r, 1) || !is_str(r->element[0]))
        return bad_reply(c, e, "not a status array");
    const char *st = r->element[0]->str;
    if (strcmp(st, "paused") == 0) {
        res->status = RQ_PAUSED;
        return 0;
    }
    if ((strcmp(st, "none") == 0 || strcmp(st, "busy") == 0) && is_array(r, 2) &&
        str_array(r->element[1], &res->items, &res->nitems) == 0) {
        res->status = strcmp(st, "none") == 0 ? RQ_EMPTY : RQ_BUSY;
        return 0;
    }
    if (strcmp(st, "job") == 0 && is_array(r, 6) && is_str(r->element[1]) &&
        is_str(r->element[2]) && is_str(r->element[3]) && is_int(r->element[4]) &&
        str_array(r->element[5], &res->items, &res->nitems) == 0) {
        res->status = RQ_JOB;
        res->id = dup_str(r->element[1]);
        res->key = dup_str(r->element[2]);
        res->json = dup_str(r->element[3]);
        res->n = r->element[4]->integer;
        return 0;
    }
    return bad_reply(c, e, "unexpected shape");
}

static int parse_read(const struct rq_cmd *c, const redisReply *r, struct rq_res *res,
                      struct err *e)
{
    if (r->type == REDIS_REPLY_NIL) {
        res->status = RQ_EMPTY;
        return 0;
    }
    /* {{stream, {entry}}} */
    if (!is_array(r, 1) || !is_array(r->element[0], 2) ||
        !is_array(r->element[0]->element[1], 1))
        return bad_reply(c, e, "unexpected shape");
    if (parse_entry(r->element[0]->element[1]->element[0], res) < 0)
        return bad_reply(c, e, "stream entry without key and job fields");
    res->status = RQ_JOB;
    res->n = 1;
    return 0;
}

/* XPENDING's summary: {n, min id, max id, {{consumer, n as text}...} | nil}. */
static int parse_held(const struct rq_cmd *c, const redisReply *r, struct rq_res *res,
                      struct err *e)
{
    if (!is_array(r, 4) || !is_int(r->element[0]))
        return bad_reply(c, e, "unexpected shape");
    const redisReply *per = r->element[3];
    struct strv v = {NULL, 0};
    for (size_t i = 0; is_array(per, 0) && i < per->elements; i++) {
        const redisReply *p = per->element[i];
        if (!is_array(p, 2) || !is_str(p->element[0]) || !is_str(p->element[1])) {
            strv_free(&v);
            return bad_reply(c, e, "unexpected consumer entry");
        }
        strv_push(&v, dup_str(p->element[0]));
        strv_push(&v, dup_str(p->element[1]));
    }
    res->items = v.v;
    res->nitems = v.n;
    res->n = r->element[0]->integer;
    res->status = RQ_VALUE;
    return 0;
}

/* Dead letters {{entry id, {field, value...}}...}: RQ_DEAD_FIELDS per letter. */
/* Stream entries: per entry its id when with_id, then the wanted fields'
 * values ("" for a missing one). */
static int parse_entries(const struct rq_cmd *c, const redisReply *r, struct rq_res *res,
                         struct err *e, const char *const *wanted, size_t nwanted, int with_id)
{
    if (!is_array(r, 0))
        return bad_reply(c, e, "not an array");
    struct strv v = {NULL, 0};
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *en = r->element[i];
        if (!is_array(en, 2) || !is_array(en->element[1], 0)) {
            strv_free(&v);
            return bad_reply(c, e, "unexpected stream entry");
        }
        if (with_id && !is_str(en->element[0])) {
            strv_free(&v);
            return bad_reply(c, e, "unexpected stream entry id");
        }
        if (with_id)
            strv_push(&v, xstrdup(en->element[0]->str));
        const redisReply *f = en->element[1];
        for (size_t w = 0; w < nwanted; w++) {
            const char *val = "";
            for (size_t k = 0; k + 1 < f->elements; k += 2)
                if (is_str(f->element[k]) && is_str(f->element[k + 1]) &&
                    strcmp(f->element[k]->str, wanted[w]) == 0)
                    val = f->element[k + 1]->str;
            strv_push(&v, xstrdup(val));
        }
    }
    res->items = v.v;
    res->nitems = v.n;
    res->n = (long long)r->elements;
    res->status = RQ_VALUE;
    return 0;
}

static int parse_dead(const struct rq_cmd *c, const redisReply *r, struct rq_res *res,
                      struct err *e)
{
    static const char *const wanted[RQ_DEAD_FIELDS] = {"id", "key", "reason", "deliveries",
                                                       "ts"};
    return parse_entries(c, r, res, e, wanted, RQ_DEAD_FIELDS, 0);
}

static int parse_events(const struct rq_cmd *c, const redisReply *r, struct rq_res *res,
                        struct err *e)
{
    static const char *const wanted[RQ_EVENT_FIELDS - 1] = {"type", "data"};
    return parse_entries(c, r, res, e, wanted, RQ_EVENT_FIELDS - 1, 1);
}

static int parse_budget(const struct rq_cmd *c, const redisReply *r, struct rq_res *res,
                        struct err *e)
{
    static const struct {
        const char *name;
        enum rq_status status;
    } map[] = {{"granted", RQ_GRANTED},
               {"unlimited", RQ_UNLIMITED},
               {"denied", RQ_DENIED},
               {"busy", RQ_BUSY},
               {"unknown", RQ_UNKNOWN}};
    if (!is_array(r, 2) || !is_str(r->element[0]) || !is_int(r->element[1]))
        return bad_reply(c, e, "unexpected shape");
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (strcmp(r->element[0]->str, map[i].name) == 0) {
            res->status = map[i].status;
            res->n = r->element[1]->integer;
            /* The account chosen (1-based) of a budget acquire; else 0. */
            if (r->elements >= 3 && is_int(r->element[2]))
                res->pick = (size_t)r->element[2]->integer;
            return 0;
        }
    }
    return bad_reply(c, e, "unknown budget status");
}

static int parse_flags(const struct rq_cmd *c, const redisReply *r, struct rq_res *res,
                       struct err *e)
{
    if (!is_array(r, 0))
        return bad_reply(c, e, "not an array");
    res->flags = xcalloc(r->elements ? r->elements : 1, sizeof(int));
    for (size_t i = 0; i < r->elements; i++) {
        if (!is_int(r->element[i]))
            return bad_reply(c, e, "not an integer array");
        res->flags[i] = r->element[i]->integer != 0;
    }
    res->nflags = r->elements;
    res->status = RQ_VALUE;
    return 0;
}

static int parse_simple(const struct rq_cmd *c, const redisReply *r, struct rq_res *res,
                        struct err *e)
{
    switch (c->kind) {
    case K_ENQUEUE:
        if (!is_array(r, 2) || !is_int(r->element[0]) || !is_str(r->element[1]))
            return bad_reply(c, e, "unexpected shape");
        res->status = r->element[0]->integer == 2   ? RQ_SETTLED
                      : r->element[0]->integer == 1 ? RQ_ADDED
                                                    : RQ_DUPLICATE;
        res->id = dup_str(r->element[1]);
        return 0;
    case K_LIST:
        if (str_array(r, &res->items, &res->nitems) < 0)
            return bad_reply(c, e, "not a string array");
        res->status = RQ_VALUE;
        return 0;
    case K_TIME: {
        long long sec, usec;
        if (!is_array(r, 2) || !is_str(r->element[0]) || !is_str(r->element[1]) ||
            text_ll(r->element[0]->str, &sec) < 0 || text_ll(r->element[1]->str, &usec) < 0)
            return bad_reply(c, e, "not a time");
        res->n = sec * 1000 + usec / 1000;
        res->status = RQ_VALUE;
        return 0;
    }
    case K_FIRST:
        if (!is_array(r, 0))
            return bad_reply(c, e, "not an array");
        if (r->elements == 0) {
            res->status = RQ_EMPTY;
            return 0;
        }
        if (r->elements != 2 || !is_str(r->element[0]) || !is_str(r->element[1]) ||
            text_ll(r->element[1]->str, &res->n) < 0)
            return bad_reply(c, e, "not a member and its score");
        res->status = RQ_VALUE;
        res->str = dup_str(r->element[0]);
        return 0;
    case K_KEYSCAN:
        if (!is_array(r, 2) || !is_str(r->element[0]) ||
            str_array(r->element[1], &res->items, &res->nitems) < 0)
            return bad_reply(c, e, "unexpected shape");
        res->status = RQ_VALUE;
        res->str = dup_str(r->element[0]);
        res->n = (long long)res->nitems;
        return 0;
    case K_CURSOR:
        if (!is_array(r, 2) || !is_str(r->element[0]) || !is_int(r->element[1]))
            return bad_reply(c, e, "unexpected shape");
        res->status = RQ_VALUE;
        res->str = dup_str(r->element[0]);
        res->n = r->element[1]->integer;
        return 0;
    case K_HELD:
        if (!is_int(r) || r->integer < -1 || r->integer > 1)
            return bad_reply(c, e, "not 1, 0 or -1");
        res->status = r->integer == 1 ? RQ_DONE : r->integer == 0 ? RQ_GONE : RQ_STOLEN;
        return 0;
    case K_INT:
    case K_RUN_CREATE:
        if (!is_int(r))
            return bad_reply(c, e, "not an integer");
        res->n = r->integer;
        res->status = c->kind == K_INT ? RQ_VALUE : r->integer ? RQ_DONE : RQ_DUPLICATE;
        return 0;
    case K_STRING:
        if (r->type == REDIS_REPLY_NIL) {
            res->status = RQ_EMPTY;
            return 0;
        }
        if (!is_str(r))
            return bad_reply(c, e, "not a string");
        res->str = dup_str(r);
        res->status = RQ_VALUE;
        return 0;
    case K_SETNX:
        if (r->type == REDIS_REPLY_NIL) {
            res->status = RQ_STOLEN;
            return 0;
        }
        if (!is_str(r) || strcmp(r->str, "OK") != 0)
            return bad_reply(c, e, "not OK");
        res->status = RQ_DONE;
        return 0;
    case K_HASH:
        if (str_array(r, &res->items, &res->nitems) < 0 || res->nitems % 2)
            return bad_reply(c, e, "not a field/value list");
        res->status = res->nitems ? RQ_VALUE : RQ_EMPTY;
        return 0;
    default:
        res->status = RQ_DONE;
        return 0;
    }
}

/* An assist offer: RQ_VALUE id, items (field, value, ...) | RQ_EMPTY. */
static int parse_offer(const struct rq_cmd *c, const redisReply *r, struct rq_res *res,
                       struct err *e)
{
    if (is_str(r) && strcmp(r->str, "none") == 0) {
        res->status = RQ_EMPTY;
        return 0;
    }
    if (!is_array(r, 1) || !is_str(r->element[0]) || r->elements % 2 != 1)
        return bad_reply(c, e, "not 'none' or an offer");
    res->id = dup_str(r->element[0]);
    res->nitems = r->elements - 1;
    res->items = xcalloc(r->elements, sizeof(char *));
    for (size_t i = 1; i < r->elements; i++) {
        if (!is_str(r->element[i]))
            return bad_reply(c, e, "an offer's field is not a string");
        res->items[i - 1] = dup_str(r->element[i]);
    }
    res->status = RQ_VALUE;
    return 0;
}

static int parse(const struct rq_cmd *c, const redisReply *r, struct rq_res *res,
                 struct err *e)
{
    if (r->type == REDIS_REPLY_ERROR)
        return err_set(e, "redis %s: %s", cmd_name(c), r->str);
    switch (c->kind) {
    case K_TAKE:
        return parse_take(c, r, res, e);
    case K_READ:
        return parse_read(c, r, res, e);
    case K_BUDGET:
        return parse_budget(c, r, res, e);
    case K_FLAGS:
        return parse_flags(c, r, res, e);
    case K_HELD_SUM:
        return parse_held(c, r, res, e);
    case K_DEAD:
        return parse_dead(c, r, res, e);
    case K_EVENTS:
        return parse_events(c, r, res, e);
    case K_OFFER:
        return parse_offer(c, r, res, e);
    default:
        return parse_simple(c, r, res, e);
    }
}

/* Errors that mean Redis lost the library, the group or the stream (a
 * restart without persistence, FLUSHALL): setup again and retry once. */
static int needs_setup(const redisReply *r)
{
    static const char *const prefixes[] = {"NOGROUP", RQ_NO_FUNCTION, "UNBLOCKED"};
    if (r->type != REDIS_REPLY_ERROR)
        return 0;
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(r->str, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

/* ---- running ------------------------------------------------------------ */

int rq_exec(struct rconn *rc, struct rq_cmd *cmd, struct rq_res *res, struct err *e)
{
    int ret = -1;
    redisReply *r = NULL;
    memset(res, 0, sizeof(*res));
    for (int attempt = 0;; attempt++) {
        if (rconn_command(rc, cmd->argc, (const char **)cmd->argv, cmd->len, cmd->block_ms, &r,
                          e) < 0)
            goto out;
        if (attempt > 0 || !needs_setup(r))
            break;
        freeReplyObject(r);
        r = NULL;
        if (rconn_resetup(rc, e) < 0)
            goto out;
    }
    ret = parse(cmd, r, res, e);
out:
    freeReplyObject(r);
    rq_cmd_free(cmd);
    return ret;
}

/* An asynchronous call in flight. */
struct call {
    struct rq_cmd *cmd;
    rq_cb *cb;
    void *privdata;
    int retried;
};

static void call_reply(struct rconn_async *ra, redisReply *r, void *privdata);

static int call_send(struct rconn_async *ra, struct call *c, struct err *e)
{
    return rconn_async_command(ra, c->cmd->argc, (const char **)c->cmd->argv, c->cmd->len,
                               c->cmd->block_ms, call_reply, c, e);
}

/* Answer the caller (res NULL: e says why) and forget the call. */
static void call_end(struct call *c, struct rq_res *res, const struct err *e)
{
    if (c->cb)
        c->cb(res, res ? NULL : e, c->privdata);
    rq_cmd_free(c->cmd);
    free(c);
}

/* The setup ran again after the call found something missing: once more. */
static void call_resetup_done(struct rconn_async *ra, void *privdata)
{
    struct call *c = privdata;
    struct err e;
    if (!ra)
        err_set(&e, "redis: closed before %s was sent again", cmd_name(c->cmd));
    else if (call_send(ra, c, &e) == 0)
        return; /* answered again later */
    call_end(c, NULL, &e);
}

static void call_reply(struct rconn_async *ra, redisReply *r, void *privdata)
{
    struct call *c = privdata;
    struct rq_res res;
    struct err e;
    int ok = 0;
    memset(&res, 0, sizeof(res));
    if (!r) {
        err_set(&e, "redis %s: no answer to %s (connection lost or too slow)",
                rconn_async_where(ra), cmd_name(c->cmd));
    } else if (needs_setup(r) && !c->retried && ra) {
        c->retried = 1;
        if (rconn_async_resetup(ra, call_resetup_done, c) == 0)
            return;
        err_set(&e, "redis %s: %s", rconn_async_where(ra), r->str);
    } else {
        ok = parse(c->cmd, r, &res, &e) == 0;
    }
    call_end(c, ok ? &res : NULL, &e);
    rq_res_free(&res);
}

int rq_exec_async(struct rconn_async *ra, struct rq_cmd *cmd, rq_cb *cb, void *privdata,
                  struct err *e)
{
    struct call *c = xcalloc(1, sizeof(*c));
    c->cmd = cmd;
    c->cb = cb;
    c->privdata = privdata;
    if (call_send(ra, c, e) < 0) {
        rq_cmd_free(cmd);
        free(c);
        return -1;
    }
    return 0;
}
