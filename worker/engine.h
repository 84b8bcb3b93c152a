/* engine: copies one job's tag group from upstream to the target at the
 * minimum cost in counted upstream GETs.
 *
 * For a job the engine HEADs every tag upstream (free on Docker Hub) and on
 * the target; tags whose digests already match are left alone. Each distinct
 * upstream digest still needed becomes a root: its manifest is taken from the
 * target when the target has it (free), else from the fleet when an earlier
 * attempt or a killed worker fetched it, else GET once from upstream (one
 * counted pull, reserved from the shared budget first; the fleet keeps the
 * bytes from their arrival until they are on the target). Children of an index
 * and blobs of an image are copied only when the target lacks them: a shared
 * "present" set and a target HEAD say so (the set is a hint: what the target
 * turns out to lack is forgotten and copied in the same job, and a manifest
 * PUT refused for a missing reference after children were taken from the
 * set has them asked about again), a lock keeps two workers from
 * copying the same thing at once, blobs are mounted from another target
 * repository when one has them, else streamed upstream -> target through a
 * SHA-256 check. Children are pushed before their index, and the tags last,
 * all from the same bytes, so the target never holds a tag whose index points
 * at something missing.
 *
 * The fleet's shared state (budget, present sets, locks, mount sources) is
 * reached through struct engine_ops, so the engine itself knows nothing of
 * Redis; its registry requests go through struct engine_reg_ops, so unit
 * tests drive it against in-memory registries. */
#ifndef HUBSYNC_ENGINE_H
#define HUBSYNC_ENGINE_H

#include <ev.h>

#include "err.h"
#include "job.h"
#include "reg.h"
#include "rq.h"
#include "syncfile.h"

struct engine_counters {
    long long tags_total;       /* tags in the job */
    long long tags_unchanged;   /* already right on the target */
    long long tags_written;     /* tag PUTs done */
    long long manifests_pushed; /* manifests PUT by digest (children and indexes) */
    long long upstream_manifest_gets;  /* counted pulls */
    long long upstream_manifest_heads; /* free */
    long long blobs_copied;
    long long blob_bytes_copied;
    long long blobs_mounted;
    long long blob_bytes_mounted; /* sizes of the blobs mounted (no byte moved) */
    long long blobs_skipped;    /* the target had them already */
};

/* Field names of struct engine_counters, in order, as used in reports and
 * in Redis run records: rq's one list (RQ_RUN_COUNTERS). */
extern const char *const *const engine_counter_names;
#define ENGINE_NCOUNTERS RQ_NRUN_COUNTERS
long long engine_counter_get(const struct engine_counters *c, int i);

enum engine_status {
    ENGINE_DONE,        /* every tag of the group is right on the target */
    ENGINE_RETRY,       /* went wrong, may go right next time (bytes that do not hash to
                         * their digest, a copy lock held too long): try again later */
    ENGINE_DEFERRED,    /* the pull budget is spent (or Docker Hub's 429): try again after
                         * wait_ms */
    ENGINE_THROTTLED,   /* told to slow down (a 429 with Retry-After, or any 429 of a registry
                         * other than Docker Hub): try again after wait_ms, or when it is 0
                         * after a backoff growing with the job's waits */
    ENGINE_FAILED,      /* refused for good by this attempt (missing tag, bad manifest, ...) */
    ENGINE_CANCELLED,   /* engine_cancel(), or the job's holder no longer holds it */
    ENGINE_UNAVAILABLE, /* a registry did not answer or answered 5xx (after the client's own
                         * retries): not the job's fault, try again once it is back */
};
#define ENGINE_NSTATUS (ENGINE_UNAVAILABLE + 1)

const char *engine_status_name(enum engine_status s);

/* What a registry answer means for the job: ENGINE_DONE for REG_OK, else the
 * status its failure class calls for, with *wait_ms (0 unless deferred or
 * throttled). */
enum engine_status engine_status_of(const struct reg_result *res, long *wait_ms);

/* The registries of a job, as bits. */
#define ENGINE_UPSTREAM 1
#define ENGINE_TARGET 2

struct engine_outcome {
    enum engine_status status;
    long wait_ms;   /* ENGINE_DEFERRED, ENGINE_THROTTLED: when to try again */
    char msg[512];  /* what went wrong, naming repository, tag or digest */
    int unavailable; /* ENGINE_UPSTREAM|ENGINE_TARGET: registries met not answering or
                      * answering 5xx (a blob copy's failure names neither) */
    int reached;     /* registries that answered the job's first requests */
    struct engine_counters n;
};

typedef void (*engine_flag_fn)(int yes, void *arg);
/* grant (may be NULL) goes back to budget_done once the GET has an answer;
 * via: the registry (an account) the granted GET goes with. Not granted: wait
 * wait_ms, or when it is 0 (a 429 that said not how long) back off. */
typedef void (*engine_budget_fn)(int granted, long wait_ms, void *grant,
                                 struct reg_registry *via, void *arg);
/* One of Docker Hub's pooled accounts (the sync file's docker.io credentials):
 * a registry with its own credentials and tokens, and its budget's source. */
struct engine_account {
    struct reg_registry *r;
    const char *name; /* its environment prefix, never a secret */
};
typedef void (*engine_home_fn)(const char *repo, void *arg);
typedef void (*engine_ready_fn)(void *arg);
/* body (len bytes) and its media type, borrowed for the call; NULL: none. */
typedef void (*engine_bytes_fn)(const char *body, size_t len, const char *media_type,
                                void *arg);

/* The fleet's shared state. Every callback runs exactly once, later, from
 * the loop; when the shared state cannot be reached the answers must be the
 * safe ones: not present, no mount source, lock taken (locks only save work),
 * budget denied. `target` is the target registry URL. */
struct engine_ops {
    void *ctx;
    /* Reserve one counted manifest GET from up's share of the pull budget, or
     * (naccounts > 0) from the account with the most pulls left, the GET then
     * going with it (via). repo:ref is a free HEAD the ops may send first to
     * learn a budget. accounts are borrowed for the call. */
    void (*budget_acquire)(void *ctx, struct reg_registry *up,
                           const struct engine_account *accounts, size_t naccounts,
                           const char *repo, const char *ref, engine_budget_fn cb, void *arg);
    /* The granted GET has its answer (its rate-limit headers in res->rl): the
     * reservation is settled. Called once per grant. */
    void (*budget_done)(void *ctx, struct reg_registry *up, void *grant,
                        const struct reg_result *res);
    /* Bring what present and blob_home answer for dst up to date with the
     * storage dst has now (a target wiped or replaced behind the same URL
     * must not be answered from what the old one held). repo: a repository
     * of dst the job writes to, where the ops may write a marker blob. Called
     * once per job before anything is asked about the target. */
    void (*check_target)(void *ctx, struct reg_registry *dst, const char *repo,
                         engine_ready_fn cb, void *arg);
    /* Is digest known to be in repo of target? A hint: the engine forgets
     * what the target then turns out to lack. */
    void (*present)(void *ctx, const char *target, const char *repo, const char *digest,
                    engine_flag_fn cb, void *arg);
    /* digest (a blob if `blob`, else a manifest) is now in repo of target. */
    void (*mark_present)(void *ctx, const char *target, const char *repo, const char *digest,
                         int blob);
    /* repo of target lacks digest after all: no longer present there, nor
     * repo its mount source. */
    void (*forget)(void *ctx, const char *target, const char *repo, const char *digest);
    /* Another repository of target known to hold blob digest, or NULL. */
    void (*blob_home)(void *ctx, const char *target, const char *digest, engine_home_fn cb,
                      void *arg);
    /* Try once to take the copy lock of digest on target: 1 taken, 0 held
     * elsewhere. Held locks are the ops' to keep alive until unlock. */
    void (*lock)(void *ctx, const char *target, const char *digest, engine_flag_fn cb,
                 void *arg);
    void (*unlock)(void *ctx, const char *target, const char *digest);
    /* A manifest fetched upstream by an earlier attempt or by a worker that
     * was killed (the engine verifies its digest), so that the retry, or the
     * worker taking over the job, pays no pull again ... */
    void (*manifest_cached)(void *ctx, const char *digest, engine_bytes_fn cb, void *arg);
    /* ... keeping each one as soon as it arrives, before anything else is
     * done with it ... */
    void (*manifest_keep)(void *ctx, const char *digest, const char *media_type,
                          const char *body, size_t len);
    /* ... and no longer once it (or, under the rewrite policy, the index made
     * from it) is on the target. */
    void (*manifest_drop)(void *ctx, const char *digest);
    /* Is the job still ours? Asked before each root's tag writes, since another
     * worker may have taken the job over while it copied; no (or no answer)
     * cancels the job, and no tag is written. job_arg is the arg engine_start
     * got for the job. */
    void (*still_held)(void *ctx, void *job_arg, engine_flag_fn cb, void *arg);
    /* Told before a root's tags are written, ahead of still_held, which must
     * not answer before what this sent is recorded: tag of repo is to become
     * digest (was previous), so that a worker killed between the PUT and
     * tag_written leaves word of it. May be NULL. */
    void (*tag_intent)(void *ctx, void *job_arg, const char *repo, const char *tag,
                       const char *previous, const char *digest);
    /* Told after each tag written: tag of repo on the target is digest now,
     * and was previous ("" when the target lacked it). May be NULL. */
    void (*tag_written)(void *ctx, void *job_arg, const char *repo, const char *tag,
                        const char *previous, const char *digest);
    /* Told once per job of its tags found already right (tags[i] of repo is
     * digests[i]), when there are any: one a killed worker wrote without
     * telling is told now. May be NULL. */
    void (*tags_current)(void *ctx, void *job_arg, const char *repo, const char *const *tags,
                         const char *const *digests, size_t n);
    /* An index of the job has more than one window (assist_window) of children to
     * copy: told once per window but the last, which idle workers may copy
     * (engine_assist) while the job copies the others, from the last backwards.
     * May be NULL (none offered). */
    void (*offer_children)(void *ctx, void *job_arg, const char *const *digests, size_t n);
};

/* The registry requests the engine sends, with the contracts of reg.h and
 * reg_blob.h (each callback exactly once, later, from the loop). The real
 * client's functions by default; unit tests drive the engine against an
 * in-memory registry through these. */
struct reg_blob_spec;
struct engine_reg_ops {
    void (*head_manifest)(struct reg_registry *r, const char *repo, const char *ref,
                          reg_done_fn done, void *arg);
    void (*get_manifest)(struct reg_registry *r, const char *repo, const char *ref,
                         reg_done_fn done, void *arg);
    void (*put_manifest)(struct reg_registry *r, const char *repo, const char *ref,
                         const char *media_type, const void *body, size_t len, reg_done_fn done,
                         void *arg);
    void (*head_blob)(struct reg_registry *r, const char *repo, const char *digest,
                      reg_done_fn done, void *arg);
    void (*copy_blob)(const struct reg_blob_spec *spec, reg_done_fn done, void *arg);
    void (*list_referrers)(struct reg_registry *r, const char *repo, const char *digest,
                           const char *page, size_t max, reg_done_fn done, void *arg);
};

struct engine_opts {
    int blob_concurrency;  /* blob copies at once per engine; default 8 */
    double lock_poll_s;    /* how often a busy lock is looked at again; default 0.25 */
    double lock_wait_max_s;/* give up (retry later) after waiting this long; default 1800 */
    double child_poll_s;   /* how often an offered child locked elsewhere (an assistant's)
                            * is looked at again; default 0.05 */
    int assist_window;     /* children per offer (ops.offer_children); default 4, 0: none
                            * offered */
    /* The registries served (copied; required): a job naming others is
     * refused before any request, and the HUBSYNC_UPSTREAM_* and
     * HUBSYNC_TARGET_* credentials go to these only. */
    const char *upstream;
    const char *target;
    /* A sync file (borrowed; may be NULL): jobs may also name its registries
     * as upstream, each with the credentials the file binds to it. */
    const struct syncfile *sources;
    /* A credential helper's answer is used this long, then asked again (or
     * at once after a 401 refused it); default 300. */
    double helper_ttl_s;
    /* NULL (the default): reg_head_manifest, reg_get_manifest, ... (copied). */
    const struct engine_reg_ops *reg;
};

void engine_opts_default(struct engine_opts *o);

struct engine;
struct engine_job;
typedef void (*engine_done_fn)(const struct engine_outcome *out, void *arg);

/* The loop and client are borrowed and must outlive the engine; ops and
 * opts (required: upstream and target) are copied. */
struct engine *engine_new(struct ev_loop *loop, struct reg_client *client,
                          const struct engine_ops *ops, const struct engine_opts *opts,
                          struct err *e);
/* No job may be running. NULL is a no-op. */
void engine_free(struct engine *en);
/* Jobs started and not yet done. */
int engine_busy(const struct engine *en);

/* 0 if j names the target en serves and its upstream or a registry of its
 * sync file (reg_parse_same_registry), else -1 with a message naming the
 * job's URL and the option to set. */
int engine_job_allowed(const struct engine *en, const struct job *j, struct err *e);

/* Start copying j (copied). done runs exactly once, later, from the loop.
 * The handle is valid until done runs. */
struct engine_job *engine_start(struct engine *en, const struct job *j, engine_done_fn done,
                                void *arg);
/* Copy j's digests, children of an index that another worker's job (j's key, run and
 * registries) copies, as that job would and without tags: each skipped when present,
 * or locked elsewhere (its job or another assistant copies it), else copied under its
 * lock with its blobs. done runs exactly once, later, from the loop; the present marks
 * and unlocks of those children are made after it returns, so that what done sends
 * (the counters) is seen first by the job waiting for them. */
struct engine_job *engine_assist(struct engine *en, const struct job *j, engine_done_fn done,
                                 void *arg);
/* Stop at the next step: no tag is written after this; done reports
 * ENGINE_CANCELLED once the operations in flight have completed. */
void engine_cancel(struct engine_job *ej);

#endif
