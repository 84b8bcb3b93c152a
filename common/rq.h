/* rq: hubsync's Redis side — the job queue, the shared pull budget, blob
 * dedupe, leases and run bookkeeping.
 *
 * Multi-key steps are functions of one Redis 7.0 Functions library
 * ("hubsync", source in common/rq.lua), loaded by the connection setup
 * (rq_setup) and again whenever Redis answers "Function not found", unless
 * Redis has it at the same or a newer version (an older program never
 * replaces a newer library); the consumer group is created the same way (and
 * after NOGROUP).
 * Every time is Redis TIME, never the caller's clock. Key names come from
 * keys.h.
 *
 * The queue is a stream with one consumer group: a job is delivered to one
 * consumer and stays in its pending list until settled (ack, retry, fail);
 * a job idle past the lease is reclaimed by the next take, and dead-lettered
 * once its delivery count passes the maximum. Delivery is at least once.
 *
 * Each operation is a command built by an rq_cmd_* function (which never
 * fails) and run by one of two access styles over the same builders and
 * reply parsers:
 *   rq_exec        synchronous, on a struct rconn (coordinator, tools);
 *   rq_exec_async  on a struct rconn_async on libev (worker); blocking reads
 *                  (rq_cmd_read_new) need a holder of their own.
 * Both consume the command. The answer is a struct rq_res whose status and
 * fields each builder documents. */
#ifndef HUBSYNC_RQ_H
#define HUBSYNC_RQ_H

#include <stddef.h>

#include "err.h"
#include "keys.h"
#include "ratelimit.h"
#include "rconn.h"

#define RQ_DEAD_CAP 10000 /* dead-letter stream length (approximate MAXLEN) */

struct rq {
    struct keys keys; /* owned */
    char *run_prefix; /* run key without the id, for dead letters found by take */
};

/* prefix NULL: KEYS_PREFIX_DEFAULT. */
int rq_init(struct rq *q, const char *prefix, struct err *e);
/* The bundle queue (keys_init_bundle): an export's jobs and its record. The
 * queue commands (take, renew, ack, fail, handback, idle, promote, ...) and
 * the run commands (run_create, run_enqueue, run_get, run_note, run_finish
 * without advance) work on it as on the job queue; an export is a run of
 * it. */
int rq_init_bundle(struct rq *q, const char *prefix, struct err *e);
void rq_free(struct rq *q);

/* The connection setup every holder runs: hubsync_version, FUNCTION LOAD
 * REPLACE of the library only when that says none or an older one, XGROUP
 * CREATE <jobs> workers 0 MKSTREAM (BUSYGROUP is fine).
 * Group id 0, not $: jobs enqueued before the group existed (after Redis came
 * back empty) must still be delivered. Owned by the caller: rconn_setup_free. */
void rq_setup(const struct rq *q, struct rconn_setup *out);

/* The library source, as loaded: common/rq.lua, made into C by the Makefile. */
extern const char rq_lua_source[];
/* Its VERSION (hubsync_version answers the one Redis has). */
int rq_lua_version(void);

enum rq_status {
    RQ_DONE = 1,  /* took effect */
    RQ_ADDED,     /* enqueue: new entry (id) */
    RQ_DUPLICATE, /* enqueue: key already pending (id: its entry or "delayed"); run exists */
    RQ_JOB,       /* take/read: a job (id, key, json, n = deliveries) */
    RQ_EMPTY,     /* take/read: nothing to do; get: no such value */
    RQ_PAUSED,    /* take: the operator pause switch is set */
    RQ_GONE,      /* not pending / not held / no such run */
    RQ_STOLEN,    /* held by another consumer or token */
    RQ_GRANTED,   /* budget: reserved; n = pulls left after it */
    RQ_UNLIMITED, /* budget: the source is not limited */
    RQ_DENIED,    /* budget: n = ms to wait, then probe with a HEAD */
    RQ_UNKNOWN,   /* budget: never seen (or stale): probe with a free HEAD first */
    RQ_VALUE,     /* a value in n, str, items or flags */
    RQ_SETTLED,   /* run enqueue: the key settled in the run already (id: done|failed|dead) */
    RQ_BUSY,      /* budget: spent only by unsettled reservations: ask again soon (n as
                   * RQ_DENIED's should it be spent then); take: the consumer holds
                   * its share of the queue */
};

/* An answer. Strings and arrays are owned; rq_res_free releases them. In a
 * callback the library frees it after the callback returns: steal a field
 * by setting it to NULL. */
struct rq_res {
    enum rq_status status;
    long long n;
    size_t pick;  /* budget acquire: the source chosen, 1-based (0: none) */
    char *id;     /* stream entry id */
    char *key;    /* job key */
    char *json;   /* job payload */
    char *str;    /* a string value */
    char **items; /* take: job keys dead-lettered on the way; get hash: field, value, ... */
    size_t nitems;
    int *flags;   /* present check: 1 present, 0 not, per digest */
    size_t nflags;
};

void rq_res_free(struct rq_res *r);
/* Value of a field in a hash answer (items); NULL if absent. */
const char *rq_res_field(const struct rq_res *r, const char *name);
/* Same, as an integer; def if absent or not a number. */
long long rq_res_field_int(const struct rq_res *r, const char *name, long long def);
const char *rq_status_name(enum rq_status s);

struct rq_cmd;
void rq_cmd_free(struct rq_cmd *c);

/* A run counter added by ack, retry and fail (name: [a-z0-9_]+). */
struct rq_counter {
    const char *name;
    long long delta;
};

/* The work counters of a run record, the one list of their names (the
 * engine counts them per job, workers add them to the run, sync reports
 * them): X(name) for each, in report order. tags_total is the
 * coordinator's (it counts the tags of jobs that never ran); workers add
 * the rest. */
#define RQ_RUN_COUNTERS(X)                                                                         \
    X(tags_total)                                                                                  \
    X(tags_unchanged)                                                                              \
    X(tags_written)                                                                                \
    X(manifests_pushed)                                                                            \
    X(upstream_manifest_gets)                                                                      \
    X(upstream_manifest_heads)                                                                     \
    X(blobs_copied)                                                                                \
    X(blob_bytes_copied)                                                                           \
    X(blobs_mounted)                                                                               \
    X(blob_bytes_mounted)                                                                          \
    X(blobs_skipped)
/* Their indexes in the list: RQ_RUN_tags_total, ... */
#define RQ_RUN_COUNTER_ID(name) RQ_RUN_##name,
enum rq_run_counter { RQ_RUN_COUNTERS(RQ_RUN_COUNTER_ID) RQ_NRUN_COUNTERS };
extern const char *const rq_run_counter_names[RQ_NRUN_COUNTERS];
/* A counter's name, checked when compiled: RQ_RUN_NAME(tags_written). */
#define RQ_RUN_NAME(name) rq_run_counter_names[RQ_RUN_##name]

/* --- queue --- */

/* Add a job unless its key is pending (queued, taken or delayed; a dedupe
 * entry whose job is gone does not count). RQ_ADDED id | RQ_DUPLICATE id. */
struct rq_cmd *rq_cmd_enqueue(const struct rq *q, const char *key, const char *json);

/* Take one job without blocking: first a job idle for lease_ms (its delivery
 * count goes up; past max_deliveries it is dead-lettered instead, and its
 * key listed in items), else a new one unless the consumer holds its share
 * of the queue's jobs over the live workers (a heartbeat in the last
 * live_ms). RQ_JOB | RQ_EMPTY | RQ_BUSY (its share: ask again soon, or once
 * one of its jobs ends) | RQ_PAUSED. */
struct rq_cmd *rq_cmd_take(const struct rq *q, const char *consumer, long long lease_ms,
                           int max_deliveries, long long live_ms);

/* Wait up to block_ms for a new job (XREADGROUP BLOCK). RQ_JOB (n = 1) |
 * RQ_EMPTY. It skips the pause switch and the reclaim: call rq_cmd_take
 * first. Async: on a holder of its own. */
struct rq_cmd *rq_cmd_read_new(const struct rq *q, const char *consumer, long long block_ms);

/* Extend the lease on a job held by consumer. RQ_DONE | RQ_GONE (no longer
 * pending: acked elsewhere or Redis lost it) | RQ_STOLEN (another consumer
 * holds it). On GONE or STOLEN the worker stops and must not ack. */
struct rq_cmd *rq_cmd_renew(const struct rq *q, const char *consumer, const char *id);

/* Settling a job (ack, retry, fail) counts in its run while that runs: run_id
 * (NULL: the one the payload names, else the current run if the key is one
 * of its jobs). The counters add up on every settle; the outcome (done,
 * failed, dead) counts once per job key of the run, the first one. A job
 * another run handed over for the key (rq_cmd_run_enqueue) is enqueued when
 * the key's job leaves the stream. */

/* Finish a job: remove it, release its dedupe entry, add the counters and
 * (once per key) jobs_done to the run. RQ_DONE | RQ_GONE | RQ_STOLEN; the
 * last two count ack_stale in stats and add nothing. */
struct rq_cmd *rq_cmd_ack(const struct rq *q, const char *consumer, const char *id,
                          const char *key, const char *run_id, const struct rq_counter *counters,
                          size_t ncounters);

/* Take a job off the stream and bring json back after delay_ms (why:
 * "backoff", "budget", or "registry": waiting for a registry that is down);
 * its key stays pending as "delayed" (unless a newer job for the key
 * supersedes it). Why "spent" puts json straight back into the stream,
 * delay_ms unused: this worker's pull budget is spent, another's is not. Adds
 * jobs_retried (registry_waits for "registry") and the counters to the run; a
 * job waiting for the budget counts in the run's jobs_deferred while it waits
 * (rq_cmd_delayed_counts counts every why). RQ_DONE | RQ_GONE | RQ_STOLEN. */
struct rq_cmd *rq_cmd_retry(const struct rq *q, const char *consumer, const char *id,
                            const char *key, const char *json, long long delay_ms,
                            const char *why, const char *run_id,
                            const struct rq_counter *counters, size_t ncounters);

/* Give up on a job: dead-letter stream (with reason), dedupe entry released,
 * the counters and (once per key) jobs_failed added to the run. A job
 * dead-lettered by take counts as jobs_dead the same way. RQ_DONE | RQ_GONE |
 * RQ_STOLEN. */
struct rq_cmd *rq_cmd_fail(const struct rq *q, const char *consumer, const char *id,
                           const char *key, const char *reason, const char *run_id,
                           const struct rq_counter *counters, size_t ncounters);

/* Hand a held job back (shutdown, 429): reclaimable at once by a take with
 * the same lease, delivery count not raised. RQ_DONE | RQ_GONE | RQ_STOLEN. */
struct rq_cmd *rq_cmd_handback(const struct rq *q, const char *consumer, const char *id,
                               long long lease_ms);

/* What a worker that leaves once the queue is drained looks at. RQ_VALUE
 * items "queued" (the stream's length, held jobs included), "waiting" (delayed
 * jobs waiting for anything but the pull budget) and "run" (the current run:
 * "none", "filling" while its jobs are enqueued, "enqueued"). A read. */
struct rq_cmd *rq_cmd_idle(const struct rq *q);

/* Move up to max due delayed jobs back to the stream. RQ_VALUE n = moved. */
struct rq_cmd *rq_cmd_promote(const struct rq *q, int max);

/* Housekeeping (coordinator): delete consumers with nothing pending idle
 * for min_idle_ms (ghosts of recreated containers). RQ_VALUE n = deleted. */
struct rq_cmd *rq_cmd_prune_consumers(const struct rq *q, long long min_idle_ms);

/* Housekeeping: check up to about count dedupe entries from cursor ("0" to
 * start) and release those whose job no longer exists (a job handed over
 * for the key is enqueued instead). RQ_VALUE n = released, str = next cursor
 * ("0" when the scan is complete). */
struct rq_cmd *rq_cmd_repair_index(const struct rq *q, const char *cursor, int count);

/* --- pull budget, per docker-ratelimit-source --- */

/* Reserve cost pulls, keeping floor in reserve. The reservation (id resv,
 * unique per call) expires after ttl_ms by itself, so a crashed worker never
 * leaks budget. worker_id (NULL: none) is the worker asking: it pulls from
 * source's budget from now on (rq_cmd_budget_elsewhere). RQ_GRANTED n |
 * RQ_UNLIMITED | RQ_DENIED n = wait ms | RQ_BUSY n (the pulls left are all
 * reserved: Hub may have counted them already, so not spent until they settle)
 * | RQ_UNKNOWN. */
struct rq_cmd *rq_cmd_budget_acquire(const struct rq *q, const char *worker_id,
                                     const char *source, int cost, int floor, long long ttl_ms,
                                     const char *resv);
/* The same over several accounts of one registry, each its own source (n >=
 * 1): an unknown one first (RQ_UNKNOWN, pick = its index + 1: probe it),
 * else a reservation from the one with the most pulls left (pick = its
 * index + 1); RQ_DENIED only when every one is spent, n = the shortest wait
 * (RQ_BUSY when some is spent only by its reservations). */
struct rq_cmd *rq_cmd_budget_acquire_any(const struct rq *q, const char *worker_id,
                                         const char *const *sources, size_t n, int cost,
                                         int floor, long long ttl_ms, const char *resv);

/* Apply what one response said (rl from ratelimit.h) and release
 * reservation resv (NULL: none, as for a HEAD probe). rl NULL, or with no
 * ratelimit header at all: the source is not limited. Headers without a
 * usable remaining count change nothing but the reservation.
 * RQ_VALUE n = remaining | -1 unlimited | -2 nothing applied. */
struct rq_cmd *rq_cmd_budget_observe(const struct rq *q, const char *source,
                                     const struct ratelimit_info *rl, const char *resv);

/* May a live worker other than worker_id (a heartbeat in the last live_ms)
 * pull from a budget other than source's now: it has not asked for a pull
 * yet, or its budget is unknown, unlimited or above floor? A worker whose own source is
 * spent hands its job over to such a worker rather than defer it. A read.
 * RQ_VALUE n = 1 yes | 0 no. */
struct rq_cmd *rq_cmd_budget_elsewhere(const struct rq *q, const char *worker_id,
                                       const char *source, int floor, long long live_ms);

/* After a 429: no pulls fleet-wide for duration_ms (longer pauses win),
 * remaining = 0, the 429 counted. RQ_VALUE n = pause in force (ms). */
struct rq_cmd *rq_cmd_budget_pause(const struct rq *q, const char *source,
                                   long long duration_ms);

/* --- circuit breakers, one per registry (upstream or target): see rq.lua --- */

/* May a job needing the registries at urls[0..n) start? RQ_GRANTED: no
 * breaker is open | RQ_DENIED n = ms until one of them may be asked again |
 * RQ_UNKNOWN n = i + 1: urls[i] is due for a probe, and the caller has it for
 * probe_ms: probe, report, then go ahead or wait. */
struct rq_cmd *rq_cmd_breaker_check(const struct rq *q, const char *const *urls, size_t n,
                                    long long probe_ms);
/* What the registry at url did: ok (it answered) closes its breaker; a
 * failure (no answer, 5xx; error: one line saying how, no secrets) counts,
 * and opens the breaker for cooldown_ms at threshold failures in a row, or at
 * once when it was probed. RQ_VALUE str = "open" or "closed" when this report
 * changed the state | RQ_EMPTY. */
struct rq_cmd *rq_cmd_breaker_report(const struct rq *q, const char *url, int ok, int threshold,
                                     long long cooldown_ms, const char *error);

/* --- blob and manifest dedupe, per target registry, epoch and repository ---
 *
 * A hint, never the truth: what a target held when it was last looked at.
 * The sets belong to one epoch of the target's storage (see keys.h: a marker
 * blob in the target, recorded in its target record); a target whose marker
 * is gone starts a new epoch and the old sets are left to expire. Sets, the
 * blobhome hash and the record live RQ_PRESENT_TTL_MS after their last use. */

#define RQ_PRESENT_TTL_MS (14LL * 24 * 3600 * 1000)

/* RQ_VALUE flags[i] = digests[i] known present. */
struct rq_cmd *rq_cmd_present_check(const struct rq *q, const char *target, const char *epoch,
                                    const char *repo, const char *const *digests, size_t n);
/* Mark present and remember repo as their mount source. RQ_VALUE n = new. */
struct rq_cmd *rq_cmd_present_mark(const struct rq *q, const char *target, const char *epoch,
                                   const char *repo, const char *const *digests, size_t n);
/* Forget (the target said repo lacks them), and repo as their mount source.
 * RQ_VALUE n = removed. */
struct rq_cmd *rq_cmd_present_forget(const struct rq *q, const char *target, const char *epoch,
                                     const char *repo, const char *const *digests, size_t n);
/* A repository of target holding digest. RQ_VALUE str | RQ_EMPTY. */
struct rq_cmd *rq_cmd_blobhome(const struct rq *q, const char *target, const char *epoch,
                               const char *digest);
/* The target record: RQ_VALUE items "marker", "epoch", "repo", "since_ms" |
 * RQ_EMPTY (no epoch yet). */
struct rq_cmd *rq_cmd_target_get(const struct rq *q, const char *target);
/* marker (a blob digest in repo of target) becomes the target's epoch if the
 * record still names old (NULL or "": no record); otherwise the record stands
 * (another worker started the new epoch first). With old = marker it only
 * says the marker was found: the record lives on. RQ_VALUE items: the record
 * now. */
struct rq_cmd *rq_cmd_target_epoch(const struct rq *q, const char *target, const char *old,
                                   const char *marker, const char *repo);

/* --- manifests fetched upstream and not yet on the target --- */

/* Keep a manifest (text) for ttl_ms so a retry, or the worker taking over a
 * killed one's job, need not pull it again. The bytes kept stay under
 * max_bytes plus one body: each keep drops the oldest past that. RQ_DONE. */
struct rq_cmd *rq_cmd_manifest_keep(const struct rq *q, const char *digest,
                                    const char *media_type, const char *body, long long ttl_ms,
                                    long long max_bytes);
/* RQ_VALUE items "type", "body" | RQ_EMPTY. The caller verifies the digest. */
struct rq_cmd *rq_cmd_manifest_cached(const struct rq *q, const char *digest);
/* The manifest is on the target: no longer kept. RQ_DONE. */
struct rq_cmd *rq_cmd_manifest_drop(const struct rq *q, const char *digest);

/* --- leases (blob upload locks, the coordinator lease): any key from
 * keys.h, holder token, PX expiry --- */

/* RQ_DONE (acquired) | RQ_STOLEN (held by someone). */
struct rq_cmd *rq_cmd_lease_acquire(const char *key, const char *token, long long ttl_ms);
/* RQ_DONE | RQ_GONE (not held by token). */
struct rq_cmd *rq_cmd_lease_renew(const char *key, const char *token, long long ttl_ms);
struct rq_cmd *rq_cmd_lease_release(const char *key, const char *token);

/* --- assists: a running job's children copied by idle workers --- */

#define RQ_ASSIST_CAP 10000   /* offers kept, about (XADD MAXLEN ~) */
#define RQ_ASSIST_CHILDREN 16 /* children in one offer, at most */

/* One offer: a window of the children of an index job_id (the jobs stream's
 * entry id) is copying, each a digest in source_repo of upstream to copy into
 * target_repo of target, for the job's run (NULL: the current one). worker:
 * the job's holder, which takes no offer of its own. */
struct rq_assist {
    const char *job_id, *key, *run, *worker;
    const char *upstream, *source_repo, *target, *target_repo;
    const char *const *children;
    size_t nchildren;
};

/* Offer the children. RQ_VALUE str = the offer's id. */
struct rq_cmd *rq_cmd_assist_offer(const struct rq *q, const struct rq_assist *o);
/* Take the oldest offer of a job consumer does not hold (it leaves the
 * stream). RQ_VALUE id, items "job", "key", "run", "worker", "upstream",
 * "source_repo", "target", "target_repo", "children" (space-separated) |
 * RQ_EMPTY (none). */
struct rq_cmd *rq_cmd_assist_take(const struct rq *q, const char *consumer);
/* An assistant's counters, added to the run (run_id NULL: the current one) as
 * a job's are when it settles, in key's sync-file entry too. RQ_VALUE n = 1
 * counted | 0 (the run is over). */
struct rq_cmd *rq_cmd_assist_done(const struct rq *q, const char *run_id, const char *key,
                                  const struct rq_counter *counters, size_t ncounters);
/* The job job_id that worker held ended: the offers it made and no one took are
 * dropped. RQ_VALUE n = dropped. */
struct rq_cmd *rq_cmd_assist_clear(const struct rq *q, const char *job_id, const char *worker);

/* --- runs --- */

/* RQ_DONE n = start ms; sets the current run | RQ_DUPLICATE (run exists).
 * Only the newest keep (>= 1) runs keep their records. */
struct rq_cmd *rq_cmd_run_create(const struct rq *q, const char *run_id, const char *commit,
                                 int keep);
/* Enqueue a job of the run, counting the key once in its jobs_total (a
 * resumed run enqueues its jobs again). A key settled in the run is not
 * enqueued again: RQ_SETTLED. A key pending for this run: RQ_DUPLICATE id.
 * A job of another run (one that ended) pending for the key is replaced by
 * this one (RQ_ADDED) or, while a worker holds it, followed by it
 * (RQ_DUPLICATE: handed over, enqueued when that job settles). Else
 * RQ_ADDED id. */
struct rq_cmd *rq_cmd_run_enqueue(const struct rq *q, const char *run_id, const char *key,
                                  const char *json);
/* The same for a job of a sync-file entry (entry: its name, syncfile_entry_name;
 * entry_target: where it lands), also counted in the entry's own jobs_total, and its
 * ends in the entry's jobs_done, jobs_failed, jobs_dead and upstream_manifest_gets
 * (rq_cmd_run_entries). */
struct rq_cmd *rq_cmd_run_enqueue_entry(const struct rq *q, const char *run_id, const char *key,
                                        const char *json, const char *entry,
                                        const char *entry_target);
/* The run's sync-file entries as items ("<what> <entry>", value, ...): what is target,
 * jobs_total, jobs_done, jobs_failed, jobs_dead or upstream_manifest_gets. A read.
 * RQ_VALUE | RQ_EMPTY. */
struct rq_cmd *rq_cmd_run_entries(const struct rq *q, const char *run_id);
/* The run's lost jobs among about count of its keys from cursor ("0" to
 * start): not settled, and no job of the run queued, held, delayed or handed
 * over for them, so nothing would ever settle them. A read (FCALL_RO).
 * RQ_VALUE items = the keys, str = next cursor ("0": scan complete). */
struct rq_cmd *rq_cmd_run_check(const struct rq *q, const char *run_id, const char *cursor,
                                int count);
/* A count for it that keeps each call short (about 5 ms of Redis). */
#define RQ_RUN_CHECK_COUNT 250
/* Take the jobs of run_id (NULL: of every run) off the delayed set, where
 * they wait for the pull budget or a backoff; the run's jobs_deferred stays
 * as it was (how many waited when it ended). RQ_VALUE n = removed. */
struct rq_cmd *rq_cmd_purge_delayed(const struct rq *q, const char *run_id);
/* Set field of the run record to value (what the coordinator notes: from,
 * enqueued, tags_total, removed_tags, catalog_errors, error). RQ_DONE. */
struct rq_cmd *rq_cmd_run_note(const struct rq *q, const char *run_id, const char *field,
                               const char *value);
/* Set what of the run's sync-file entry entry (rq_cmd_run_entries) to value: the
 * coordinator notes each entry's target before the run's jobs go out, so that an entry
 * with no job (its registry failed) is listed too. RQ_DONE. */
struct rq_cmd *rq_cmd_run_entry_note(const struct rq *q, const char *run_id, const char *entry,
                                     const char *what, const char *value);
/* Id of the run in progress. RQ_VALUE str | RQ_EMPTY. */
struct rq_cmd *rq_cmd_run_current(const struct rq *q);
/* The run record as items (field, value, ...). RQ_VALUE | RQ_EMPTY. */
struct rq_cmd *rq_cmd_run_get(const struct rq *q, const char *run_id);
/* state: done|deferred|failed|aborted. advance: with done, the synced-commit
 * marker moves to the run's commit. Drops the run's key and settled sets and
 * the jobs it handed over. RQ_DONE | RQ_GONE. */
struct rq_cmd *rq_cmd_run_finish(const struct rq *q, const char *run_id, const char *state,
                                 int advance);
/* RQ_VALUE str | RQ_EMPTY. */
struct rq_cmd *rq_cmd_synced_commit(const struct rq *q);
/* Lifetime counters as items. RQ_VALUE | RQ_EMPTY. */
struct rq_cmd *rq_cmd_stats(const struct rq *q);

/* --- air-gapped bundles (coordinator export and import) --- */

#define RQ_EXPORTS_KEEP 10 /* export records kept (the newest) */

/* The newest commit exported. RQ_VALUE str (n: its time, ms) | RQ_EMPTY. */
struct rq_cmd *rq_cmd_export_last(const struct rq *q);
/* Whether an export at commit is recorded. RQ_VALUE (str: its time, ms) |
 * RQ_EMPTY. */
struct rq_cmd *rq_cmd_export_known(const struct rq *q, const char *commit);
/* RQ_VALUE flags[i] = digests[i] was in the state exported at commit. */
struct rq_cmd *rq_cmd_export_check(const struct rq *q, const char *commit,
                                   const char *const *digests, size_t n);
/* Add digests to the set an export at commit is writing (export:<commit>:new,
 * which lives a day unless recorded). first: start the set anew. RQ_DONE. */
struct rq_cmd *rq_cmd_export_add(const struct rq *q, const char *commit, int first,
                                 const char *const *digests, size_t n);
/* The export at commit is complete: its set becomes export:<commit>, the
 * commit the newest in exports; only the newest RQ_EXPORTS_KEEP stay. RQ_DONE. */
struct rq_cmd *rq_cmd_export_record(const struct rq *q, const char *commit);
/* What bundles brought target to: RQ_VALUE items "commit", "base",
 * "imported_ms" | RQ_EMPTY. */
struct rq_cmd *rq_cmd_site_get(const struct rq *q, const char *target);
/* An import brought target from base ("" for a full bundle) to commit. RQ_DONE. */
struct rq_cmd *rq_cmd_site_record(const struct rq *q, const char *target, const char *commit,
                                  const char *base);

/* --- how far behind upstream each repository is (the behind hash) --- */

/* repo is behind since since_ms, unless it is behind already. RQ_DONE. */
struct rq_cmd *rq_cmd_behind_mark(const struct rq *q, const char *repo, long long since_ms);
/* repo caught up (a complete run covered it). RQ_DONE. */
struct rq_cmd *rq_cmd_behind_clear(const struct rq *q, const char *repo);
/* The repositories behind: RQ_VALUE items repo, since_ms, ... | RQ_EMPTY. */
struct rq_cmd *rq_cmd_behind(const struct rq *q);

/* --- events (the events stream) --- */

#define RQ_EVENTS_KEEP 100000 /* entries kept, about (XADD MAXLEN ~) */
#define RQ_EVENT_FIELDS 3     /* an event read: stream id, type, data */

/* Append an event: type ("tag.written", ...) and data (JSON text). RQ_VALUE
 * str: its stream id. */
struct rq_cmd *rq_cmd_event_add(const struct rq *q, const char *type, const char *data);
/* A tag write's event, kept across a worker killed between the PUT and the
 * event (the events:pending hash). field: rq_event_field(). Before the PUT,
 * rq_cmd_event_intent records the event it will make true (RQ_DONE); after
 * it, rq_cmd_event_tag appends the event and drops the record in one step
 * (RQ_DONE). A worker finding tags already right sends rq_cmd_event_settle
 * with the digests they have: the records of PUTs that landed without their
 * event become events, the others are dropped. RQ_DONE. */
char *rq_event_field(const char *target, const char *repo, const char *tag);
struct rq_cmd *rq_cmd_event_intent(const struct rq *q, const char *field, const char *digest,
                                   const char *type, const char *data);
struct rq_cmd *rq_cmd_event_tag(const struct rq *q, const char *field, const char *type,
                                const char *data);
struct rq_cmd *rq_cmd_event_settle(const struct rq *q, const char *const *fields,
                                   const char *const *digests, size_t n);
/* Up to count events after the stream id after ("0": from the first), oldest
 * first. RQ_VALUE items: RQ_EVENT_FIELDS strings per event, n events. */
struct rq_cmd *rq_cmd_events_after(const struct rq *q, const char *after, int count);
/* The id of the last event the webhook took. RQ_VALUE str | RQ_EMPTY. */
struct rq_cmd *rq_cmd_events_delivered(const struct rq *q);
/* The webhook took the events up to id. RQ_DONE. */
struct rq_cmd *rq_cmd_events_delivered_set(const struct rq *q, const char *id);

/* --- workers --- */

/* Heartbeat: worker:<id> = json for ttl_s, last beat in the workers zset.
 * RQ_DONE. */
struct rq_cmd *rq_cmd_worker_beat(const struct rq *q, const char *worker_id, const char *json,
                                  int ttl_s);
/* Clean exit. RQ_DONE. */
struct rq_cmd *rq_cmd_worker_gone(const struct rq *q, const char *worker_id);

/* --- reading: plain reads of the layout, needing no function (status
 * reads a Redis that may lack the library) --- */

/* Redis TIME. RQ_VALUE n = ms. */
struct rq_cmd *rq_cmd_time(void);
/* The operator pause switch. RQ_VALUE n = 1 set | 0. */
struct rq_cmd *rq_cmd_paused(const struct rq *q);
/* A lease's holder token. RQ_VALUE str | RQ_EMPTY (not held). */
struct rq_cmd *rq_cmd_lease_holder(const char *key);
/* ms until a lease expires. RQ_VALUE n (negative: not held, or no expiry). */
struct rq_cmd *rq_cmd_lease_ttl(const char *key);
/* Entries in the job stream: the waiting and the taken ones (settled ones
 * leave it). RQ_VALUE n. */
struct rq_cmd *rq_cmd_queue_len(const struct rq *q);
/* Jobs taken and not settled. RQ_VALUE n = all of them, items = consumer,
 * count, ... */
struct rq_cmd *rq_cmd_queue_held(const struct rq *q);
/* Jobs in the delayed set. RQ_VALUE n. */
struct rq_cmd *rq_cmd_delayed_len(const struct rq *q);
/* When the next delayed job is due. RQ_VALUE n = ms | RQ_EMPTY (none). */
struct rq_cmd *rq_cmd_delayed_next(const struct rq *q);
/* Delayed jobs per why (backoff, budget, registry), as the functions count
 * them. RQ_VALUE items = why, count, ... | RQ_EMPTY (none). */
struct rq_cmd *rq_cmd_delayed_counts(const struct rq *q);
/* Dead letters. RQ_VALUE n. */
struct rq_cmd *rq_cmd_dead_len(const struct rq *q);
/* The newest count dead letters, newest first. RQ_VALUE n = letters, items =
 * RQ_DEAD_FIELDS strings each: job id, key, reason, deliveries, ts (ms); ""
 * for a missing one. */
#define RQ_DEAD_FIELDS 5
struct rq_cmd *rq_cmd_dead_newest(const struct rq *q, int count);
/* Workers heard from in the last day, oldest beat first. RQ_VALUE items =
 * id, last beat (ms), ... | RQ_EMPTY. */
struct rq_cmd *rq_cmd_workers(const struct rq *q);
/* A worker's heartbeat JSON while it lives. RQ_VALUE str | RQ_EMPTY. */
struct rq_cmd *rq_cmd_worker_get(const struct rq *q, const char *worker_id);
/* Pull-budget sources heard from in the last week. RQ_VALUE items. */
struct rq_cmd *rq_cmd_budget_sources(const struct rq *q);
/* A source's budget (fields in keys.h). RQ_VALUE items | RQ_EMPTY. */
struct rq_cmd *rq_cmd_budget_get(const struct rq *q, const char *source);
/* A source's reservations that expire after now_ms. RQ_VALUE n. */
struct rq_cmd *rq_cmd_budget_reserved(const struct rq *q, const char *source, long long now_ms);
/* Ids of the newest count runs, newest first. RQ_VALUE items. */
struct rq_cmd *rq_cmd_runs_newest(const struct rq *q, int count);

/* --- running commands --- */

/* Run cmd (consumed) and parse the answer into res (released by the caller
 * with rq_res_free, also after -1). A missing function, group or stream is
 * repaired (setup again) and the command retried once. */
int rq_exec(struct rconn *rc, struct rq_cmd *cmd, struct rq_res *res, struct err *e);

/* res is NULL when e says why (connection lost, deadline, error reply). */
typedef void rq_cb(struct rq_res *res, const struct err *e, void *privdata);

/* Queue cmd (consumed) on ra. 0: cb is called exactly once and frees
 * privdata; cb NULL drops the answer (fire and forget). -1: ra is not up;
 * cb is not called. */
int rq_exec_async(struct rconn_async *ra, struct rq_cmd *cmd, rq_cb *cb, void *privdata,
                  struct err *e);

#endif
