/* retry: what becomes of a job that did not finish, as pure functions of its
 * outcome and its history (worker.c applies the answer in Redis).
 *
 * A job that went wrong (refused, a bad manifest, bytes that do not hash to
 * their digest, a copy lock held too long) spends one of max_attempts and
 * comes back after a backoff that doubles from backoff_ms up to
 * backoff_max_ms. A registry that did not answer or answered 5xx is not the
 * job's fault: the job comes back after a backoff that grows the same way
 * (it doubles with the time the job has already waited for registries), or
 * when the registry's breaker says, and keeps its attempts; only its total
 * wait for registries is bounded, so an outage of minutes or hours never
 * dead-letters a run. A spent pull budget or a 429 waits as long as it says
 * and spends nothing; a 429 of another registry than Docker Hub that says
 * not how long (no Retry-After) is waited out as a registry that does not
 * answer. */
#ifndef HUBSYNC_RETRY_H
#define HUBSYNC_RETRY_H

#include "engine.h"

struct retry_policy {
    int max_attempts;
    long long backoff_ms;
    long long backoff_max_ms;
    long long registry_wait_max_ms; /* a job waits this long for registries at most */
};

struct retry_decision {
    int dead;                   /* give up: dead-letter the job */
    const char *why;            /* the delayed set's why: "backoff", "budget" or "registry" */
    long long delay_ms;
    int attempt;                /* the job's attempts spent, from now on */
    long long registry_wait_ms; /* its wait for registries, from now on */
};

/* base doubled for each earlier attempt (attempt is 1-based), at most max,
 * plus up to a quarter more from rnd (any random number): retries of a
 * burst spread out. */
long long retry_backoff_ms(long long base, long long max, int attempt, unsigned rnd);

/* What to do after an attempt ended in st (neither ENGINE_DONE nor
 * ENGINE_CANCELLED) with the outcome's wait_ms; for ENGINE_UNAVAILABLE a
 * wait_ms above 0 is how long the registry is known to stay away (its
 * breaker). attempt and registry_wait_ms are the job's so far. */
void retry_decide(const struct retry_policy *p, enum engine_status st, long wait_ms,
                  int attempt, long long registry_wait_ms, unsigned rnd,
                  struct retry_decision *out);

#endif
