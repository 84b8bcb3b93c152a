/* retry: see retry.h. */
#include "retry.h"

#include "job.h"

/* d plus up to a quarter more. */
static long long jitter(long long d, unsigned rnd)
{
    return d + (d / 4 > 0 ? (long long)(rnd % (unsigned long long)(d / 4)) : 0);
}

long long retry_backoff_ms(long long base, long long max, int attempt, unsigned rnd)
{
    long long d = base;
    for (int i = 1; i < attempt && d < max; i++)
        d *= 2;
    return jitter(d < max ? d : max, rnd);
}

void retry_decide(const struct retry_policy *p, enum engine_status st, long wait_ms,
                  int attempt, long long registry_wait_ms, unsigned rnd,
                  struct retry_decision *out)
{
    *out = (struct retry_decision){0, "backoff", 0, attempt, registry_wait_ms};
    switch (st) {
    case ENGINE_DEFERRED:
        out->why = "budget";
        out->delay_ms = wait_ms > 1000 ? wait_ms : 1000;
        return;
    case ENGINE_THROTTLED:
        if (wait_ms > 0) {
            out->delay_ms = wait_ms > 1000 ? wait_ms : 1000;
            return;
        }
        /* A 429 that says not how long: waited out as a registry that does not
         * answer, without the breaker's word. */
        /* fall through */
    case ENGINE_UNAVAILABLE: {
        if (registry_wait_ms >= p->registry_wait_max_ms) {
            out->dead = 1;
            return;
        }
        /* The wait so far is the next delay: delays double as the outage lasts. */
        long long d = registry_wait_ms > p->backoff_ms ? registry_wait_ms : p->backoff_ms;
        out->why = "registry";
        out->delay_ms = wait_ms > 0 ? jitter(wait_ms, rnd)
                                    : jitter(d < p->backoff_max_ms ? d : p->backoff_max_ms, rnd);
        out->registry_wait_ms = registry_wait_ms + out->delay_ms;
        if (out->registry_wait_ms > JOB_MAX_WAIT_MS)
            out->registry_wait_ms = JOB_MAX_WAIT_MS;
        return;
    }
    default:
        out->attempt = attempt + 1;
        if (out->attempt >= p->max_attempts) {
            out->dead = 1;
            return;
        }
        out->delay_ms = retry_backoff_ms(p->backoff_ms, p->backoff_max_ms, out->attempt, rnd);
        return;
    }
}
