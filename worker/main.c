/* hubsync-worker: takes jobs from Redis and copies images. This file only
 * reads the options; worker.c does the work. */
#include <stdio.h>
#include <stdlib.h>

#include "cfg.h"
#include "log.h"
#include "syncfile.h"
#include "worker.h"
#include "xalloc.h"

/* What the options are looked up by. */
enum {
    OPT_ID = CFG_ID_OWN,
    OPT_CONCURRENCY,
    OPT_BLOB_CONCURRENCY,
    OPT_CONNECTIONS_PER_HOST,
    OPT_KEEP_PULLS,
    OPT_LEASE_MS,
    OPT_MAX_DELIVERIES,
    OPT_MAX_ATTEMPTS,
    OPT_BACKOFF_MS,
    OPT_BACKOFF_MAX_MS,
    OPT_TRANSIENT_RETRY_MAX,
    OPT_BREAKER_FAILURES,
    OPT_BREAKER_COOLDOWN_MS,
    OPT_HTTP_RETRIES,
    OPT_SOURCE_ADDRESS,
    OPT_CA_FILE,
    OPT_CRED_HELPER_TTL,
    OPT_EXIT_WHEN_IDLE,
    OPT_IDLE_GRACE,
    OPT_STOP_GRACE,
    OPT_HEALTH,
    OPT_SYNC_FILE,
    OPT_BUNDLE_DIR,
};

static const struct cfg_opt opts[] = {
    CFG_OPT_REDIS,
    CFG_OPT_REDIS_PREFIX,
    CFG_OPT_UPSTREAM,
    CFG_OPT_TARGET,
    {OPT_SYNC_FILE, "sync-file", "HUBSYNC_SYNC_FILE", CFG_STR, NULL, 0, 0,
     "the coordinator's sync file: jobs may also copy from its registries, each with the "
     "credentials the file names for it",
     0},
    {OPT_ID, "id", "HUBSYNC_WORKER_ID", CFG_STR, NULL, 0, 0,
     "consumer name in the queue [default: <hostname>:<pid>]", 0},
    {OPT_CONCURRENCY, "concurrency", "HUBSYNC_CONCURRENCY", CFG_INT, "8", 1, 256,
     "jobs copied at once", 0},
    {OPT_BLOB_CONCURRENCY, "blob-concurrency", "HUBSYNC_BLOB_CONCURRENCY", CFG_INT, "8", 1, 256,
     "blob copies at once", 0},
    {OPT_CONNECTIONS_PER_HOST, "connections-per-host", "HUBSYNC_CONNECTIONS_PER_HOST", CFG_INT,
     "8", 1, 256,
     "connections kept open to each registry host; more let more requests overlap where "
     "latency bounds a run (a no-op sweep) at the cost of more load on the registries",
     0},
    {OPT_KEEP_PULLS, "keep-pulls", "HUBSYNC_KEEP_PULLS", CFG_INT, "0", 0, 1000000,
     "Docker Hub pulls to leave unused for people", 0},
    {OPT_LEASE_MS, "lease-ms", "HUBSYNC_LEASE_MS", CFG_INT, "60000", 1000, 86400000,
     "a job silent this long is taken over by another worker", 0},
    {OPT_MAX_DELIVERIES, "max-deliveries", "HUBSYNC_MAX_DELIVERIES", CFG_INT, "5", 1, 1000,
     "deliveries of one job (crashed workers included) before it is dead-lettered", 0},
    {OPT_MAX_ATTEMPTS, "max-attempts", "HUBSYNC_MAX_ATTEMPTS", CFG_INT, "5", 1, 1000,
     "failed attempts of one job before it is dead-lettered", 0},
    {OPT_BACKOFF_MS, "backoff-ms", "HUBSYNC_BACKOFF_MS", CFG_INT, "2000", 1, 86400000,
     "first retry delay of a failed job, doubled each attempt", 0},
    {OPT_BACKOFF_MAX_MS, "backoff-max-ms", "HUBSYNC_BACKOFF_MAX_MS", CFG_INT, "600000", 1, 86400000,
     "longest retry delay", 0},
    {OPT_TRANSIENT_RETRY_MAX, "transient-retry-max", "HUBSYNC_TRANSIENT_RETRY_MAX", CFG_INT,
     "21600", 1, 1209600,
     "seconds a job may wait for registries that do not answer or answer 5xx (such retries "
     "spend no attempt) before it is dead-lettered",
     0},
    {OPT_BREAKER_FAILURES, "breaker-failures", "HUBSYNC_BREAKER_FAILURES", CFG_INT, "5", 0, 1000,
     "failures in a row (no answer, 5xx) after which every worker leaves a registry alone for "
     "--breaker-cooldown-ms: jobs needing it wait; 0: never",
     0},
    {OPT_BREAKER_COOLDOWN_MS, "breaker-cooldown-ms", "HUBSYNC_BREAKER_COOLDOWN_MS", CFG_INT,
     "30000", 100, 3600000,
     "how long an open breaker keeps jobs away from its registry before one probe asks it "
     "again",
     0},
    {OPT_HTTP_RETRIES, "http-retries", "HUBSYNC_HTTP_RETRIES", CFG_INT, "3", 0, 100,
     "retries of one HTTP request (5xx, resets) before the job is retried", 0},
    {OPT_SOURCE_ADDRESS, "source-address", "HUBSYNC_SOURCE_ADDRESS", CFG_STR, NULL, 0, 0,
     "numeric IP address this worker's registry requests leave from (one of the machine's "
     "own; Docker Hub counts anonymous pulls per address, so workers on different addresses "
     "have budgets of their own) [default: the system's choice]",
     0},
    {OPT_CA_FILE, "ca-file", "HUBSYNC_CA_FILE", CFG_STR, NULL, 0, 0,
     "PEM file of CA certificates for HTTPS registries [default: system store]", 0},
    {OPT_CRED_HELPER_TTL, "cred-helper-ttl", "HUBSYNC_CRED_HELPER_TTL", CFG_INT, "300", 0, 86400,
     "seconds a credential helper's answer is used before it is asked again (at once after "
     "a 401)",
     0},
    {OPT_EXIT_WHEN_IDLE, "exit-when-idle", "HUBSYNC_EXIT_WHEN_IDLE", CFG_BOOL, "false", 0, 0,
     "drain the queue, then exit (batch runs, CI runners)", 0},
    {OPT_IDLE_GRACE, "idle-grace", "HUBSYNC_IDLE_GRACE", CFG_INT, "2", 0, 3600,
     "with --exit-when-idle: seconds the queue must stay empty while no run is under way (once "
     "a run has all its jobs queued, or has ended, a drained queue ends the worker at once)",
     0},
    {OPT_STOP_GRACE, "stop-grace", "HUBSYNC_STOP_GRACE", CFG_INT, "60", 0, 86400,
     "on SIGTERM: seconds to finish jobs in hand before handing them back", 0},
    {OPT_HEALTH, "health", NULL, CFG_BOOL, "false", 0, 0,
     "exit 0 if a worker of this host sent a heartbeat in the last 30 s, else 1 (container "
     "health checks), and do nothing else",
     0},
    {OPT_BUNDLE_DIR, "bundle-dir", "HUBSYNC_BUNDLE_DIR", CFG_STR, NULL, 0, 0,
     "be a bundle worker: take the jobs of `hubsync-coordinator export DIR --workers` (no copy "
     "jobs) and write their objects, read from --target, into this directory, the export's "
     "DIR as this machine mounts it",
     0},
    CFG_OPT_METRICS_LISTEN,
    CFG_OPT_LOG_LEVEL,
    CFG_OPT_LOG_FORMAT,
    CFG_OPT_HELP,
};
#define NOPTS ((int)(sizeof(opts) / sizeof(opts[0])))

int main(int argc, char **argv)
{
    struct cfg c;
    struct err e;
    struct syncfile *sources = NULL;
    xalloc_libraries();
    if (cfg_parse(&c, opts, NOPTS, argc - 1, argv + 1, &e) < 0) {
        fprintf(stderr, "hubsync-worker: %s\n", e.msg);
        return 2;
    }
    int rc = 2;
    if (cfg_bool(&c, CFG_ID_HELP)) {
        printf("usage: hubsync-worker [options]\n"
               "Takes copy jobs from the Redis queue and copies images upstream -> target.\n"
               "options:\n");
        cfg_usage(stdout, opts, NOPTS);
        printf("A job naming another upstream or target than --upstream and --target (give\n"
               "the workers the coordinator's), or than a registry of --sync-file, is\n"
               "dead-lettered without a request to it.\n"
               "credentials (never in flags, logs or Redis):\n"
               "  HUBSYNC_UPSTREAM_USERNAME with HUBSYNC_UPSTREAM_PASSWORD or "
               "HUBSYNC_UPSTREAM_PASSWORD_FILE\n"
               "    (sent to the --upstream registry only)\n"
               "  HUBSYNC_TARGET_USERNAME with HUBSYNC_TARGET_PASSWORD or "
               "HUBSYNC_TARGET_PASSWORD_FILE\n"
               "    (sent to the --target registry only)\n"
               "  <PREFIX>_USERNAME with <PREFIX>_PASSWORD or <PREFIX>_PASSWORD_FILE for a\n"
               "    --sync-file registry naming credentials [<PREFIX>] (sent to it only;\n"
               "    docker.io may name several: pooled, each counted GET from the one with\n"
               "    the most pulls left)\n"
               "  otherwise docker's config.json ($DOCKER_CONFIG or ~/.docker): auths, "
               "credHelpers, credsStore\n");
        rc = 0;
        goto out;
    }
    if (c.nargs > 0) {
        fprintf(stderr, "hubsync-worker: unexpected argument '%s' (see --help)\n", c.args[0]);
        goto out;
    }
    if (cfg_setup_log(&c, "worker", &e) < 0) {
        fprintf(stderr, "hubsync-worker: %s\n", e.msg);
        goto out;
    }
    if (cfg_bool(&c, OPT_HEALTH)) {
        rc = worker_health(cfg_str(&c, CFG_ID_REDIS), cfg_str(&c, CFG_ID_REDIS_PREFIX),
                           cfg_str(&c, OPT_ID));
        goto out;
    }
    if (cfg_registries_check(&c, &e) < 0) {
        fprintf(stderr, "hubsync-worker: %s; workers take the coordinator's\n", e.msg);
        goto out;
    }
    if (cfg_str(&c, OPT_SYNC_FILE) && !(sources = syncfile_load(cfg_str(&c, OPT_SYNC_FILE), &e))) {
        fprintf(stderr, "hubsync-worker: --sync-file: %s\n", e.msg);
        goto out;
    }
    struct worker_opts o = {
        .redis_url = cfg_str(&c, CFG_ID_REDIS),
        .redis_prefix = cfg_str(&c, CFG_ID_REDIS_PREFIX),
        .upstream = cfg_str(&c, CFG_ID_UPSTREAM),
        .target = cfg_str(&c, CFG_ID_TARGET),
        .id = cfg_str(&c, OPT_ID),
        .concurrency = (int)cfg_int(&c, OPT_CONCURRENCY),
        .blob_concurrency = (int)cfg_int(&c, OPT_BLOB_CONCURRENCY),
        .connections_per_host = (int)cfg_int(&c, OPT_CONNECTIONS_PER_HOST),
        .keep_pulls = (int)cfg_int(&c, OPT_KEEP_PULLS),
        .lease_ms = cfg_int(&c, OPT_LEASE_MS),
        .max_deliveries = (int)cfg_int(&c, OPT_MAX_DELIVERIES),
        .max_attempts = (int)cfg_int(&c, OPT_MAX_ATTEMPTS),
        .backoff_ms = cfg_int(&c, OPT_BACKOFF_MS),
        .backoff_max_ms = cfg_int(&c, OPT_BACKOFF_MAX_MS),
        .registry_wait_max_s = cfg_int(&c, OPT_TRANSIENT_RETRY_MAX),
        .breaker_failures = (int)cfg_int(&c, OPT_BREAKER_FAILURES),
        .breaker_cooldown_ms = cfg_int(&c, OPT_BREAKER_COOLDOWN_MS),
        .exit_when_idle = cfg_bool(&c, OPT_EXIT_WHEN_IDLE),
        .idle_grace_s = (double)cfg_int(&c, OPT_IDLE_GRACE),
        .stop_grace_s = (double)cfg_int(&c, OPT_STOP_GRACE),
        .ca_file = cfg_str(&c, OPT_CA_FILE),
        .source_address = cfg_str(&c, OPT_SOURCE_ADDRESS),
        .cred_helper_ttl_s = (double)cfg_int(&c, OPT_CRED_HELPER_TTL),
        .http_retries = (int)cfg_int(&c, OPT_HTTP_RETRIES),
        .metrics_listen = cfg_str(&c, CFG_ID_METRICS_LISTEN),
        .sources = sources,
        .bundle_dir = cfg_str(&c, OPT_BUNDLE_DIR),
    };
    rc = worker_run(&o);
out:
    syncfile_free(sources);
    cfg_free(&c);
    return rc;
}
