/* keys: every Redis key name hubsync uses, built in one place.
 *
 * All keys live under one prefix (KEYS_PREFIX_DEFAULT, "hubsync:"), which
 * tests and deployments sharing a Redis override. Operators read them with
 * redis-cli, so each name says what it holds and payloads are plain JSON.
 * Variable parts (run ids, target registries, repositories, digests, budget
 * sources, worker ids) are percent-encoded outside [A-Za-z0-9._/@+=-], so no
 * input can make a malformed or colliding key; ':' stays readable only where
 * it is the usual notation (target URL, digest algorithm, worker id), and the
 * parts after a target URL (epoch, repository) never hold one.
 *
 * Key                                   type    meaning
 * <p>jobs                               stream  one entry per job, fields `key` (job key, e.g.
 *                                               "debian:bookworm") and `job` (JSON); consumer
 *                                               group KEYS_GROUP; entries are XDEL'ed on ack,
 *                                               never MAXLEN-trimmed
 * <p>jobs:index                         hash    job key -> stream id, or "delayed": a job key
 *                                               already pending is not enqueued twice
 * <p>jobs:delayed                       zset    job key scored by due time (ms, Redis clock)
 * <p>jobs:delayed:payload               hash    job key -> {"why":"backoff|budget|registry",
 *                                               "due_ms":..,"job":{..}}
 * <p>jobs:delayed:count                 hash    why -> delayed jobs waiting for it, kept by
 *                                               the functions (gone when none waits)
 * <p>jobs:dead                          stream  dead letters: id, key, job, reason, deliveries,
 *                                               ts (ms); capped with MAXLEN ~
 * <p>assist                             stream  offers of a running job's children that idle
 *                                               workers may copy (rq_cmd_assist_offer):
 *                                               fields job (its jobs entry id), key, run,
 *                                               worker (the job's holder), upstream,
 *                                               source_repo, target, target_repo, children
 *                                               (digests, space-separated); an offer leaves
 *                                               as a worker takes it or the job ends; capped
 *                                               with MAXLEN ~
 * <p>jobs:handover                      hash    job key -> job (JSON) a newer run enqueued
 *                                               while a worker held its key's job of an
 *                                               ended run: enqueued once that one settles
 * <p>run:<id>                           hash    run record: id, state, commit, started_ms,
 *                                               finished_ms, jobs_total, jobs_done, jobs_failed,
 *                                               jobs_retried, jobs_dead, registry_waits,
 *                                               jobs_deferred (its jobs waiting for the pull
 *                                               budget; at its end: those that waited), the
 *                                               worker counters (RQ_RUN_COUNTERS), and what
 *                                               the coordinator notes (from, enqueued,
 *                                               tags_total, removed_tags, catalog_errors,
 *                                               error)
 * <p>run:<id>:keys                      set     job keys the run enqueued (each counted once
 *                                               in jobs_total, also when re-enqueued); gone
 *                                               when the run finishes
 * <p>run:<id>:settled                   hash    job key -> how it ended in the run (done,
 *                                               failed, dead): counted once, never enqueued
 *                                               again by the run; gone when it finishes
 * <p>run:<id>:entries                   hash    per sync-file entry of the run ("<what>
 *                                               <entry>" -> value): target, jobs_total,
 *                                               jobs_done, jobs_failed, jobs_dead,
 *                                               upstream_manifest_gets; kept with the record
 * <p>run:<id>:entry-of                  hash    job key -> its sync-file entry; gone when the
 *                                               run finishes
 * <p>runs                               zset    run id scored by start (ms); the newest
 *                                               --keep-runs are kept, with their records
 * <p>runs:current                       string  id of the run in progress
 * <p>synced-commit                      string  last official-images commit fully synced
 * <p>target:<target>                    hash    the target's storage epoch: marker (digest of
 *                                               a small blob the workers wrote into it), repo
 *                                               (where), epoch (the marker's first 12 hex
 *                                               digits), since_ms; a new epoch starts when
 *                                               the marker is gone (storage wiped, replaced,
 *                                               garbage-collected)
 * <p>present:<target>:<epoch>:<repo>    set     digests (blobs, manifests) known present in
 *                                               that repository of the target registry, a
 *                                               hint (a 404 forgets a digest)
 * <p>blobhome:<target>:<epoch>          hash    digest -> a target repository that has it
 *                                               (cross-repository mount source)
 * <p>lock:blob:<target>:<digest>        string  upload lock: holder token, PX expiry
 * <p>breaker:<target>                   hash    circuit breaker of a registry (upstream or
 *                                               target): state (closed, open, half_open),
 *                                               failures (in a row), until_ms, opened_ms,
 *                                               probes, registry, error, failed_ms
 * <p>manifest:<digest>                   hash    type, body: a manifest fetched upstream and
 *                                               not yet on the target, kept from the moment it
 *                                               arrives until it is pushed (or a few days), so a
 *                                               retry or the worker taking over a killed one's
 *                                               job pays no pull again
 * <p>manifests                          zset    the manifest:<digest> keys kept, each scored by
 *                                               the bytes kept up to it: a keep deletes those
 *                                               more than a byte cap back
 * <p>budget:<source>                    hash    pull budget per docker-ratelimit-source (or
 *                                               a pooled Docker Hub account's prefix):
 *                                               limit, window_s, remaining, observed_ms,
 *                                               paused_until_ms, http_429, unlimited
 * <p>budget:<source>:inflight           zset    budget reservations -> expiry (ms)
 * <p>budgets                            zset    source -> last heard from (ms), while its
 *                                               hash lives: the sources for readers
 * <p>workers                            zset    worker id -> last heartbeat (ms)
 * <p>worker:<id>                        string  heartbeat JSON (host, pid, started, jobs,
 *                                               bytes), EX 30
 * <p>workers:budget                     hash    worker id -> the budget:<source> key its
 *                                               latest pull request was counted against
 * <p>coordinator                        string  coordinator lease: holder token, PX expiry
 * <p>stats                              hash    lifetime counters (enqueued, done, dead, ...)
 * <p>ctl:paused                         string  operator switch: while it exists no job is
 *                                               taken
 * <p>behind                             hash    repository -> since when (ms) the target
 *                                               lacks upstream's newest: the time of the
 *                                               first official-images commit that changed it
 *                                               after the last complete run
 * <p>events                             stream  what happened, for operators and the webhook:
 *                                               fields type (tag.written, tag.moved,
 *                                               tag.removed, run.finished) and data (JSON);
 *                                               about the newest RQ_EVENTS_KEEP kept
 * <p>events:delivered                   string  the id of the last event the webhook took
 * <p>events:pending                     hash    "<target> <repo>:<tag>" -> "<digest> <type>
 *                                               <data>": the
 *                                               event a tag PUT in flight will make true,
 *                                               recorded before the PUT and dropped as the
 *                                               event is appended, so a worker killed in
 *                                               between leaves it to the one taking over
 * <p>exports                            zset    official-images commits exported as bundles,
 *                                               scored by the export's time (ms); the newest
 *                                               RQ_EXPORTS_KEEP are kept, with their sets
 * <p>export:<commit>                    set     digests (manifests, blobs) of the full state
 *                                               the export at that commit covered: what a
 *                                               site holds once it imported that bundle
 * <p>export:<commit>:new                set     an export's set while it is written (renamed
 *                                               into export:<commit> when it is complete)
 * <p>site:<target>                      hash    what bundles brought a registry to (import):
 *                                               commit, base, imported_ms
 * <p>bundle:...                                 the bundle queue (keys_init_bundle): the
 *                                               export jobs that bundle workers take, laid out
 *                                               as the job queue above under "bundle:":
 *                                               bundle:jobs (stream, group KEYS_GROUP, payload
 *                                               in ocifetch.h), bundle:jobs:index,
 *                                               bundle:jobs:dead, ...; bundle:run:<export id>
 *                                               (hash: the export's record, as a run's:
 *                                               state, commit, jobs_total, jobs_done,
 *                                               jobs_failed, jobs_dead, files_written,
 *                                               files_reused, bytes_written) with its :keys
 *                                               and :settled; bundle:runs (zset, the newest
 *                                               RQ_EXPORTS_KEEP), bundle:current (string: the
 *                                               export in progress), bundle:stats
 *
 * <target> is a registry's URL: scheme://host:port[/path], scheme and host
 * lowercased, the port explicit (keys_target_id). The target record, present
 * sets and blobhome expire RQ_PRESENT_TTL_MS after their last use, so those of
 * an old epoch or a gone target do not stay. */
#ifndef HUBSYNC_KEYS_H
#define HUBSYNC_KEYS_H

#include "err.h"

#define KEYS_PREFIX_DEFAULT "hubsync:"
#define KEYS_PREFIX_MAX 64
/* Consumer group of the jobs stream. */
#define KEYS_GROUP "workers"

/* Fixed key names for one prefix; all strings owned, freed by keys_free(). */
struct keys {
    char *prefix;
    char *jobs;
    char *jobs_index;
    char *jobs_delayed;
    char *jobs_delayed_payload;
    char *jobs_delayed_count;
    char *jobs_dead;
    char *jobs_handover;
    char *assist;
    char *runs;
    char *run_current;
    char *synced_commit;
    char *budgets;
    char *workers;
    char *coordinator;
    char *stats;
    char *ctl_paused;
    char *manifests;
    char *exports;
    char *events;
    char *events_delivered;
    char *events_pending;
    char *behind;
    char *worker_budgets;
    const char *run_name; /* static: "run", or "bundle:run" for the bundle queue */
};

/* Build the fixed names. prefix NULL means KEYS_PREFIX_DEFAULT; otherwise
 * 1..KEYS_PREFIX_MAX characters of [A-Za-z0-9._:-] (-1 with a message if not). */
int keys_init(struct keys *k, const char *prefix, struct err *e);
void keys_free(struct keys *k);
/* The same for the bundle queue: the job queue's and runs' keys (jobs,
 * jobs_*, runs, run_current, keys_run...) and stats under "bundle:", every
 * other key as keys_init names it. */
int keys_init_bundle(struct keys *k, const char *prefix, struct err *e);

/* Keys with a variable part; each returns a new string the caller frees. */
char *keys_run(const struct keys *k, const char *run_id);
char *keys_run_keys(const struct keys *k, const char *run_id);
char *keys_run_settled(const struct keys *k, const char *run_id);
char *keys_run_entries(const struct keys *k, const char *run_id);
char *keys_run_entry_of(const struct keys *k, const char *run_id);
char *keys_target(const struct keys *k, const char *target_url);
char *keys_present(const struct keys *k, const char *target_url, const char *epoch,
                   const char *repo);
char *keys_blobhome(const struct keys *k, const char *target_url, const char *epoch);
char *keys_breaker(const struct keys *k, const char *registry_url);
char *keys_blob_lock(const struct keys *k, const char *target_url, const char *digest);
char *keys_budget(const struct keys *k, const char *source);
char *keys_budget_inflight(const struct keys *k, const char *source);
char *keys_worker(const struct keys *k, const char *worker_id);
char *keys_manifest(const struct keys *k, const char *digest);
char *keys_export(const struct keys *k, const char *commit);
char *keys_export_new(const struct keys *k, const char *commit);
char *keys_site(const struct keys *k, const char *target_url);

/* A target registry's identity as used in key names: scheme://host:port[/path]
 * with scheme and host lowercased, the scheme's default port made explicit,
 * the path as reg_registry_new keeps it, no credentials, query or fragment.
 * Caller frees. */
char *keys_target_id(const char *target_url);
/* host[:port] of a URL, lowercased, nothing else. Caller frees. */
char *keys_host_port(const char *url);

#endif
