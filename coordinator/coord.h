/* coord: the coordinator's private header: its subcommands, the option
 * handling they share, what a run covers (select.c: used by sync to enqueue
 * and by plan to price) and the pure helpers of plan and status.
 *
 * Each subcommand is `int coord_<name>_main(int argc, char **argv)` with
 * argv[0] the subcommand name, returning an exit code below; main.c
 * dispatches to it from its table. */
#ifndef HUBSYNC_COORD_H
#define HUBSYNC_COORD_H

#include <jansson.h>
#include <time.h>

#include "catalog.h"
#include "cfg.h"
#include "digest.h"
#include "job.h"
#include "oi.h"
#include "rq.h"
#include "syncfile.h"

/* Exit codes of every subcommand. */
enum {
    COORD_EXIT_OK = 0,
    COORD_EXIT_PARTIAL = 1, /* done, but some input was broken (reported) */
    COORD_EXIT_USAGE = 2,   /* bad usage or an unusable source: one line on stderr */
    COORD_EXIT_DEFERRED = 75, /* sync: the pull budget ran out; the next run goes on (EX_TEMPFAIL) */
};

/* Ids of the coordinator's own options, one enum for every subcommand's table
 * (a subcommand's table holds some of them; cfg.h has the shared ones). */
enum coord_opt {
    COORD_ID_OFFICIAL_IMAGES = CFG_ID_OWN,
    COORD_ID_WORKDIR,
    COORD_ID_REF,
    COORD_ID_FETCH_TIMEOUT,
    COORD_ID_TARGET_PREFIX,
    COORD_ID_REPOS,
    COORD_ID_EXCLUDE_REPOS,
    COORD_ID_TAGS,
    COORD_ID_SKIP,
    COORD_ID_PLATFORMS,
    COORD_ID_PLATFORM_POLICY,
    COORD_ID_ONCE,
    COORD_ID_WAIT,
    COORD_ID_JSON,
    COORD_ID_INTERVAL,
    COORD_ID_JITTER,
    COORD_ID_DEFERRED_INTERVAL,
    COORD_ID_KEEP_RUNS,
    COORD_ID_DELETE_REMOVED,
    COORD_ID_HEALTH,
    COORD_ID_CONCURRENCY,
    COORD_ID_GROUPS,
    COORD_ID_FROM,
    COORD_ID_TO,
    COORD_ID_SINCE,
    COORD_ID_FULL,
    COORD_ID_WEBHOOK,
    COORD_ID_SYNC_FILE,
    COORD_ID_WORKERS,
    COORD_ID_WAIT_TIMEOUT,
};

/* Options of the commands that read the catalog and look at registries
 * (sync, plan): where the catalog comes from (export: at the synced commit,
 * without --ref) ... */
#define COORD_OPTS_CATALOG                                                                         \
    {COORD_ID_OFFICIAL_IMAGES, "official-images", "HUBSYNC_OFFICIAL_IMAGES", CFG_STR,              \
     "https://github.com/docker-library/official-images.git", 0, 0,                                \
     "official-images source: a URL or a local repository", 0},                                    \
    {COORD_ID_WORKDIR, "workdir", "HUBSYNC_WORKDIR", CFG_STR, NULL, 0, 0,                          \
     "keep a clone of the source here, fetched on every run (default: read a local source in "     \
     "place, clone a URL into a temporary folder)",                                                \
     0},                                                                                           \
    {COORD_ID_FETCH_TIMEOUT, "fetch-timeout", "HUBSYNC_FETCH_TIMEOUT", CFG_INT, "600", 5, 86400,   \
     "seconds a clone or fetch of the official-images source may take", 0}
#define COORD_OPTS_SOURCE                                                                          \
    COORD_OPTS_CATALOG,                                                                            \
    {COORD_ID_REF, "ref", "HUBSYNC_REF", CFG_STR, NULL, 0, 0,                                      \
     "official-images revision to sync (default: the source's HEAD, else master)", 0}
/* ... the two registries ... */
#define COORD_OPT_TARGET_PREFIX                                                                    \
    {COORD_ID_TARGET_PREFIX, "target-prefix", "HUBSYNC_TARGET_PREFIX", CFG_STR, "library/", 0, 0,  \
     "repository prefix on the target ('library/' serves docker.io mirror clients)", 0}
#define COORD_OPTS_REGISTRIES CFG_OPT_UPSTREAM, CFG_OPT_TARGET, COORD_OPT_TARGET_PREFIX
/* ... and which repositories, tags and platforms (read by coord_selection_init). */
#define COORD_OPTS_SELECTION                                                                       \
    {COORD_ID_REPOS, "repos", "HUBSYNC_REPOS", CFG_STR, NULL, 0, 0,                                \
     "only these repositories (comma-separated; default: all)", 0},                                \
    {COORD_ID_EXCLUDE_REPOS, "exclude-repos", "HUBSYNC_EXCLUDE_REPOS", CFG_STR, NULL, 0, 0,        \
     "never these repositories (comma-separated)", 0},                                             \
    {COORD_ID_TAGS, "tags", "HUBSYNC_TAGS", CFG_STR, NULL, 0, 0,                                   \
     "only tags matching one of these glob patterns (comma-separated)", 0},                        \
    {COORD_ID_SKIP, "skip", "HUBSYNC_SKIP", CFG_STR, NULL, 0, 0,                                   \
     "skip these repo:tag glob patterns (comma-separated, e.g. 'python:*windows*')", 0},           \
    {COORD_ID_PLATFORMS, "platforms", "HUBSYNC_PLATFORMS", CFG_STR, NULL, 0, 0,                    \
     "copy only these platforms (e.g. linux/amd64,linux/arm64); needs --platform-policy", 0},      \
    {COORD_ID_PLATFORM_POLICY, "platform-policy", "HUBSYNC_PLATFORM_POLICY", CFG_STR, NULL, 0, 0,  \
     "with --platforms: 'sparse' (index bytes kept, only chosen children copied; the target "      \
     "must accept it) or 'rewrite' (a new index of the chosen children: new digest)",              \
     0}

/* The sync file: images beyond the official ones (docs/sync-file.md). */
#define COORD_OPT_SYNC_FILE                                                                        \
    {COORD_ID_SYNC_FILE, "sync-file", "HUBSYNC_SYNC_FILE", CFG_STR, NULL, 0, 0,                    \
     "also sync the images this YAML file lists, from any registry (docs/sync-file.md); the "      \
     "workers need the same file",                                                                 \
     0}

/* Parse a subcommand's flags (argv[0] is its name) against opts, which must
 * have a CFG_BOOL "help" option. Returns -1 when the caller should exit
 * with *exit_code: after --help (0, usage printed on stdout) or on a bad
 * flag or stray argument (2, one line on stderr). On 0 the caller frees c
 * with cfg_free(). `usage` is the one-line synopsis. */
int coord_parse_args(struct cfg *c, const struct cfg_opt *opts, int nopts, int argc, char **argv,
                     const char *usage, int *exit_code);
/* The same for a subcommand that takes one positional argument (a
 * directory): a missing or second one is bad usage. */
int coord_parse_args_dir(struct cfg *c, const struct cfg_opt *opts, int nopts, int argc,
                         char **argv, const char *usage, int *exit_code);

/* Append the items of a comma-separated list ("a, b,c"), trimmed, empty
 * items dropped. */
void coord_split_list(const char *s, struct strv *out);

/* catalog_open() with the COORD_OPTS_SOURCE flags; tick as in struct
 * catalog_fetch (may be NULL). */
int coord_catalog_open(struct catalog **out, const struct cfg *c, int (*tick)(void *arg),
                       void *arg, struct err *e);

/* The file --sync-file names, read and checked whole, into *out (NULL
 * without the flag); -1 with "--sync-file: <path>:<line>:<column>: ..." */
int coord_sync_file_load(const struct cfg *c, struct syncfile **out, struct err *e);

/* 1 when a manifest's Content-Type is no single image's (an index, or none
 * told: the dearer kind is assumed). */
int coord_is_index_type(const char *content_type);

/* Print "hubsync-coordinator <cmd>: <msg>" on stderr. */
void coord_fail(const char *cmd, const char *msg);

/* "1.2 MB" (powers of 1000) into out. */
void coord_human_bytes(long long bytes, char *out, size_t n);

/* ---- JSON of the reports (plan, status, sync) ---- */

/* The integer at key k of o; 0 when absent or not an integer. */
long long coord_json_int(const json_t *o, const char *k);
/* A value read from Redis: a JSON integer when the text is a whole one,
 * else a string. New reference. */
json_t *coord_json_value(const char *v);
/* field, value, ... (a hash as rq answers it) as an object of
 * coord_json_value's. New reference. */
json_t *coord_json_fields(char *const *items, size_t n);
/* v (an object or array) as compact JSON text, which the caller frees; NULL
 * with a message when jansson cannot write it. */
char *coord_json_text(const json_t *v, struct err *e);

/* The phases of a run from its record (rec, as coord_json_fields reads it), in
 * ms: catalog (the coordinator's start to its plan: official-images fetched
 * and read), enqueue (the run created and its jobs queued), first_job (from
 * queued to the first job settled: workers starting and taking), work (from
 * queued to the last job settled), end (from the last job settled to the run's
 * end: the coordinator noticing). A phase the record cannot tell (a run
 * without jobs, one not ended) is null. New reference. */
json_t *coord_run_phases(const json_t *rec);
/* "catalog 0.21 s, enqueue 0.03 s, ..." of coord_run_phases' object, the
 * phases it knows. */
void coord_phases_text(const json_t *phases, char *out, size_t n);

/* ---- what a run covers (select.c), shared by sync and plan ---- */

/* The parsed COORD_OPTS_SELECTION flags. */
struct coord_selection {
    struct strv repos, exclude, tags, skip, platforms;
    enum job_policy policy;
};

/* Read and check the flags (-1 with a message naming the flag). --repos and
 * --exclude-repos items may be any reference to docker.io/library/<name>
 * (alpine, library/alpine, docker.io/library/alpine) and become <name>;
 * so does the repository part of a --skip REPO:TAGGLOB without glob
 * characters. Free with coord_selection_free(), also after -1. */
int coord_selection_init(struct coord_selection *sel, const struct cfg *c, struct err *e);
void coord_selection_free(struct coord_selection *sel);
int coord_repo_selected(const struct coord_selection *sel, const char *name);
int coord_tag_selected(const struct coord_selection *sel, const char *repo, const char *tag);
/* Selected platforms among have (all of them without --platforms); arm64
 * and arm64/v8 are the same. */
size_t coord_platforms_selected(const struct coord_selection *sel, const struct strv *have);

/* Append each item of a comma-separated list of references to out as an
 * official-images name (ref_official_repo); -1 with a message starting with
 * flag. */
int coord_repo_list(const char *flag, const char *list, struct strv *out, struct err *e);

/* Every name of repos must have a library file at rev (NULL: the default):
 * -1 with "--repos: 'x' is not in official-images at <commit>" otherwise; an
 * unknown name of exclude (may be NULL) is only logged. */
int coord_repos_check(struct catalog *cat, const char *rev, const struct strv *repos,
                      const struct strv *exclude, struct err *e);

/* The catalog at a run's commit and what changed since the synced one. */
struct coord_view {
    struct catalog_snapshot *snap; /* owned; errors lists the unreadable files */
    struct catalog_diff *diff;     /* owned; NULL on a first run or the same commit */
    int first;                     /* no usable marker: every group counts as changed */
};

/* Read the selected repositories at commit and diff them from `from` (NULL
 * or "": first run). A marker commit that is gone (rewritten history) is
 * logged and turns the run into a first one. Free with coord_view_free(),
 * also after -1. */
int coord_view_read(struct catalog *cat, const struct coord_selection *sel, const char *commit,
                    const char *from, struct coord_view *v, struct err *e);
void coord_view_free(struct coord_view *v);

/* One selected tag group: what becomes one job. */
struct coord_group {
    const struct oi_repo *repo;   /* borrowed from the view */
    const struct oi_group *group; /* borrowed */
    char *key;                    /* owned: oi_group_key() */
    char **tags;                  /* owned array of borrowed strings: the selected tags, >= 1 */
    size_t ntags;
    size_t nplatforms;            /* selected platforms of the group */
    int changed;                  /* else a check for upstream rebuilds */
};

/* The groups of the view with at least one selected tag and platform, in
 * enqueue order: changed ones first, then the checks, each with the
 * repositories interleaved (so one large repository does not hold up the
 * rest). Free with coord_groups_free(). */
void coord_groups_list(const struct coord_selection *sel, const struct coord_view *v,
                       struct coord_group **out, size_t *n);
void coord_groups_free(struct coord_group *g, size_t n);

/* Tags of selected repositories that no group has any more:
 * [{"repository": name, "tags": [..]}]. New reference. */
json_t *coord_removed_tags(const struct coord_selection *sel, const struct coord_view *v);

/* ---- the sync file's entries (sources.c) ---- */

/* The tags of one sync-file entry sharing one digest: one job. */
struct coord_source_group {
    const struct syncfile_entry *entry; /* borrowed from the file */
    const char *upstream;               /* borrowed: the source registry's URL */
    char digest[DIGEST_STR_SIZE];       /* the tags' digest at the source */
    char *key;                          /* owned: "<target>@sha256:<16 hex>" */
    char **tags;                        /* owned, >= 1 unless pinned */
    size_t ntags;
    int pinned;                         /* a pinned digest no chosen tag has: no tag */
    int is_index;                       /* an index, or a type the source did not tell */
    char **referrers;                   /* owned: fallback tags of its referrers found */
    size_t nreferrers;
    int find_referrers;                 /* its job asks the referrers API too */
    /* with a target (plan): */
    size_t current;                     /* tags the target has at digest already */
    int target_has;                     /* the target repository has digest */
    /* the referrers sync would find by their fallback tags (depth by depth, as the
     * worker does) and copy: their manifests' counted GETs, as coord_plan_gets
     * prices a digest (ref_unknown: an index of unknown children); ref_listings:
     * those the worker asks the referrers API about too, when the source has it */
    long long ref_gets_min, ref_gets_max;
    size_t ref_listings;
    int ref_unknown;
};

struct coord_sources {
    struct coord_source_group *g; /* in the file's order */
    size_t n;
    json_t *errors; /* [{"repository": source, "error": ..}]: entries (partly) left out */
};

/* List and HEAD the sources of sf's entries (upstream: Docker Hub's URL)
 * and group their chosen tags by digest; with a target URL (else NULL),
 * also HEAD each tag and group digest there. tick (may be NULL) is called
 * every second meanwhile, as catalog_fetch's: -1 stops (no new request; -1
 * once those in flight end). An entry whose registry does not answer is only
 * listed in out->errors; -1 (with out empty) only when stopped or when no
 * request can be made at all. Free with coord_sources_free(). */
int coord_sources_resolve(const struct syncfile *sf, const char *upstream, const char *target,
                          int (*tick)(void *arg), void *arg, struct coord_sources *out,
                          struct err *e);
void coord_sources_free(struct coord_sources *s);

int coord_catalog_main(int argc, char **argv);
int coord_diff_main(int argc, char **argv);
int coord_sync_main(int argc, char **argv);

/* Take tags that left the catalog off the target (prune.c). removed is the
 * run report's [{"repository": name, "tags": [...]}]; the answer (new
 * reference) lists per target repository the tags "deleted" and those
 * "kept" because a supported tag shares their manifest, and an "error" if
 * one occurred. The deleted manifests leave the present sets (rc, q). NULL
 * with a message if the target cannot be reached. */
struct rconn;
struct rq;
json_t *coord_prune(struct rconn *rc, const struct rq *q, const char *target_url,
                    const char *target_prefix, json_t *removed, struct err *e);
int coord_plan_main(int argc, char **argv);
int coord_status_main(int argc, char **argv);
int coord_export_main(int argc, char **argv);
int coord_import_main(int argc, char **argv);

/* ---- what export and import share (bundle.c) ---- */

/* The last options of both. */
#define COORD_OPTS_BUNDLE                                                                          \
    {COORD_ID_CONCURRENCY, "concurrency", "HUBSYNC_BUNDLE_CONCURRENCY", CFG_INT, "8", 1, 64,       \
     "registry requests in flight at once", 0},                                                    \
    {COORD_ID_JSON, "json", NULL, CFG_BOOL, "false", 0, 0, "print the report as JSON", 0},         \
    CFG_OPT_LOG_LEVEL, CFG_OPT_LOG_FORMAT, CFG_OPT_HELP

struct ev_loop;
struct reg_client;
struct reg_registry;

/* A registry client on a new loop, with the target's credentials
 * (HUBSYNC_TARGET_*, docker's config). Free with coord_bundle_close. */
struct coord_bundle_io {
    struct ev_loop *loop;
    struct reg_client *client;
    struct reg_registry *dst;
    int inflight; /* operations started and not answered */
    char err[ERR_MSG_MAX]; /* the first failure of an operation, "" while none */
};
int coord_bundle_open(struct coord_bundle_io *io, const char *target_url, struct err *e);
void coord_bundle_close(struct coord_bundle_io *io);
/* Keep the first failure in io->err. */
void coord_bundle_fail(struct coord_bundle_io *io, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Seconds on a monotonic clock. */
double coord_bundle_now(void);
/* Run the loop until fewer than max operations are in flight (max 1: none). */
void coord_bundle_wait(struct coord_bundle_io *io, int max);
/* A connection to Redis (--redis, --redis-prefix) with hubsync's functions
 * loaded. Free with coord_bundle_db_close, also after -1. */
struct coord_bundle_db {
    struct rq q;
    struct rconn rc;
    struct rconn_setup setup;
    int open;
};
int coord_bundle_db_open(struct coord_bundle_db *db, const struct cfg *c, struct err *e);
/* The same on the bundle queue (rq_init_bundle): export's jobs for workers. */
int coord_bundle_queue_open(struct coord_bundle_db *db, const struct cfg *c, struct err *e);
void coord_bundle_db_close(struct coord_bundle_db *db);

/* ---- waiting for a run of a queue (runcheck.c) ---- */

/* The command that enqueues the planned job of key in the run again (an
 * rq_cmd_run_enqueue...), or NULL when the key is not planned. */
typedef struct rq_cmd *(*coord_requeue_fn)(void *arg, const char *key);

/* What the checks keep from one call to the next. */
struct coord_run_check {
    time_t last_lost, last_tidy;
    char cursor[32]; /* of the dedupe index housekeeping */
};
void coord_run_check_init(struct coord_run_check *chk, time_t now);
/* Called about once a second while a coordinator waits for run on q: every
 * minute (the first call too) the dedupe index's entries whose job is gone
 * are released, a chunk at a time, and the consumers idle an hour with
 * nothing pending pruned (failures only logged); every 5 s the jobs of the
 * run that nothing would ever settle are enqueued again with the command
 * requeue gives (what: "run", "export": how the logs name the run). 0 | -1
 * a lost job that requeue does not know: the run cannot complete | -2
 * Redis did not answer (e says why). */
int coord_run_check_tick(struct coord_run_check *chk, struct rconn *rc, const struct rq *q,
                         const char *what, const char *run, coord_requeue_fn requeue, void *arg,
                         time_t now, struct err *e);

/* ---- status's helpers (status.c) ---- */

/* What status shows, read again and again (the coordinator's metrics): a
 * read-only connection of its own. */
struct coord_status;
struct coord_status *coord_status_open(const char *redis_url, const char *prefix, struct err *e);
/* status --json's object; NULL when Redis did not answer (e says why). */
json_t *coord_status_read(struct coord_status *st, long long interval_s, struct err *e);
void coord_status_close(struct coord_status *st);

/* ---- the coordinator's metrics (observe.c) ---- */

struct metrics_server;
struct coord_observe {
    struct metrics_server *srv; /* NULL: no --metrics-listen, every call does nothing */
    struct coord_status *st;
    long long interval_s;
    double last; /* monotonic seconds of the last read */
};
/* Serve --metrics-listen (c has it and --redis, --redis-prefix, --interval). */
int coord_observe_start(struct coord_observe *ob, const struct cfg *c, struct err *e);
/* Read and publish again, when a second passed since the last time. */
void coord_observe_tick(struct coord_observe *ob);
void coord_observe_stop(struct coord_observe *ob);

/* ---- events and the webhook (events.c) ---- */

/* The events of a run's end: a tag.removed per tag its report says pruned,
 * then run.finished. Not recorded (Redis down): logged, the run goes on. */
void coord_events_run_end(struct rconn *rc, const struct rq *q, json_t *report);

struct coord_webhook {
    const char *url; /* NULL: no --webhook, every call does nothing */
    void *easy;      /* CURL * */
    char after[64];  /* the last event delivered ("": not read from Redis yet) */
    double next_try; /* monotonic seconds: backoff after a failed delivery */
    double backoff;
};
/* --webhook from c (COORD_ID_WEBHOOK). */
int coord_webhook_init(struct coord_webhook *wh, const struct cfg *c, struct err *e);
/* Deliver the events not delivered yet, in order, until one fails (then
 * back off: 1 s, doubled up to a minute). Blocks for the POSTs only. */
void coord_webhook_tick(struct coord_webhook *wh, struct rconn *rc, const struct rq *q);
/* 1 while some event is not delivered. */
int coord_webhook_pending(const struct coord_webhook *wh, struct rconn *rc, const struct rq *q);
void coord_webhook_free(struct coord_webhook *wh);

/* "42s", "3m07s", "2h05m", "1d03h" (negative counts as 0) into out. */
void coord_status_duration(long long ms, char *out, size_t n);

/* The --health rule: 0 when the current run has lost jobs (stalled: jobs
 * that no job in the queue would settle); else 1 when a coordinator holds
 * the lease, or when the newest finished run (last_finished_ms, 0: none)
 * ended less than 2 x interval_s before now_ms; else 0. why gets one line
 * saying which. */
int coord_status_health(long long stalled, int lease_held, long long last_finished_ms,
                        long long now_ms, long long interval_s, char *why, size_t n);

/* ---- plan's arithmetic (plan.c) ---- */

struct ratelimit_info;

/* Counted upstream GETs to bring one upstream digest to the target, without
 * knowing its children: 0 when the target has it (except under rewrite,
 * where the target holds a rewritten index and the upstream one is always
 * read); else at least 1 (the manifest itself) and, for an index, at most 1
 * + 2 per platform (an image and an attestation manifest each). */
void coord_plan_gets(int target_has, int is_index, int rewrite, size_t nplatforms,
                     long long *min, long long *max);

/* Whether gets_min..gets_max pulls fit the budget upstream reported (rl:
 * the headers seen, NULL if none; answered: upstream answered at all):
 * "fits", "may_exceed", "exceeds", "unlimited" (answers without rate-limit
 * headers) or "unknown". Static string. */
const char *coord_plan_verdict(int answered, const struct ratelimit_info *rl, long long gets_min,
                               long long gets_max);

#endif
