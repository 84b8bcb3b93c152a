/* worker: hubsync-worker's private header.
 *
 * A worker process joins the Redis consumer group, takes jobs and runs many
 * of them at once on one libev loop: the registry client (libcurl multi)
 * and two hiredis async connections (commands, and blocking reads) share the
 * loop. Each job goes to the engine (engine.h); its outcome is settled in
 * Redis (ack, retry with backoff, deferral for the pull budget or for a
 * registry that is down, dead letter: retry.h). A registry that keeps
 * failing has its breaker opened in Redis for the whole fleet: jobs that need
 * it wait without starting until a probe finds it back. The fleet's shared
 * state for the engine (pull budget, present sets, copy locks, mount sources)
 * lives in Redis too (fleet.c).
 *
 * A worker given a bundle directory (--bundle-dir) is a bundle worker: it
 * takes the jobs of the bundle queue instead (an export's, see ocifetch.h)
 * and writes their objects, read from its --target, into that directory,
 * which the exporting coordinator and the other bundle workers share. Its
 * jobs are leased, renewed, reclaimed and settled as copy jobs are; one
 * that fails is dead-lettered at once (the export fails, naming it), one of
 * another export than the one in progress is settled without a write. */
#ifndef HUBSYNC_WORKER_H
#define HUBSYNC_WORKER_H

#include <ev.h>

#include "engine.h"
#include "err.h"
#include "rconn.h"
#include "reg.h"
#include "rq.h"

struct worker_opts {
    const char *redis_url;
    const char *redis_prefix;
    const char *upstream;     /* the registries jobs may name (engine_opts) */
    const char *target;
    const char *id;           /* consumer name; NULL: <hostname>:<pid> */
    int concurrency;          /* jobs at once */
    int blob_concurrency;     /* blob copies at once */
    int connections_per_host; /* reg_client_opts.max_host_conns */
    int keep_pulls;           /* pulls left for people: the budget floor */
    long long lease_ms;       /* a job idle this long is taken over */
    int max_deliveries;       /* deliveries (crashes included) before a dead letter */
    int max_attempts;         /* failed attempts before a dead letter */
    long long backoff_ms;     /* first retry delay, doubled per attempt */
    long long backoff_max_ms;
    long long registry_wait_max_s; /* a job waits this long for unreachable registries at most */
    int breaker_failures;          /* failures in a row that open a registry's breaker; 0: none */
    long long breaker_cooldown_ms; /* an open breaker keeps jobs away this long */
    int exit_when_idle;       /* drain the queue, then exit */
    double idle_grace_s;      /* ... after it stayed empty this long */
    double stop_grace_s;      /* on SIGTERM, time to finish before handing back */
    const char *ca_file;
    const char *source_address; /* reg_client_opts.source_address */
    double cred_helper_ttl_s; /* engine_opts.helper_ttl_s */
    int http_retries;
    const char *metrics_listen; /* HOST:PORT of the Prometheus endpoint; NULL: none */
    const struct syncfile *sources; /* engine_opts.sources (borrowed; may be NULL) */
    const char *bundle_dir;   /* a bundle worker's directory; NULL: a copy worker */
};

struct worker;

/* The fleet's shared state for the engine, kept in Redis (fleet.c). Blob upload
 * locks live lock_ttl_ms unless renewed by fleet_tick: the job lease, so a dead
 * worker's locks free up when its jobs are taken over. */
struct fleet;
struct fleet *fleet_new(struct ev_loop *loop, struct rconn_async *ra, const struct rq *q,
                        const char *worker_id, int keep_pulls, long long lock_ttl_ms);
void fleet_free(struct fleet *f);
/* The engine's view of it. */
void fleet_engine_ops(struct fleet *f, struct engine_ops *out);
/* Registry client hook: every response's rate-limit headers feed the shared
 * budget, and a 429 pauses the fleet. */
void fleet_on_ratelimit(struct reg_registry *r, const struct ratelimit_info *rl, long status,
                        void *arg);
/* How long a counted GET waits (not granted) after the free HEAD sent first to
 * learn a budget failed with res: a 429's Retry-After, Docker Hub's pause for its
 * pull-limit 429 (with budget headers), 0 for another 429 (the job backs off). */
long fleet_probe_wait_ms(const struct reg_result *res);
/* cb(1) when another live worker may still pull from another budget source
 * than this worker's latest pull request (spent): its jobs are better handed
 * to that worker than deferred. cb(0) otherwise, or when Redis cannot say. */
void fleet_budget_elsewhere(struct fleet *f, engine_flag_fn cb, void *arg);
/* Keep held copy locks alive; call every few seconds. */
void fleet_tick(struct fleet *f);

/* Health check: 0 if the worker named id (NULL: any worker of this host) has
 * a live heartbeat in Redis, else 1 with one line on stderr. */
int worker_health(const char *redis_url, const char *prefix, const char *id);

/* Run a worker until it is told to stop (SIGTERM/SIGINT) or, with
 * exit_when_idle, the queue is drained. Returns the exit code. */
int worker_run(const struct worker_opts *o);

#endif
