/* ratelimit: Docker Hub's pull-budget headers and Retry-After, as pure functions.
 *
 * Docker Hub sends `ratelimit-limit: 100;w=21600`, `ratelimit-remaining:
 * 76;w=21600` and `docker-ratelimit-source: <ip or account>` on manifest
 * responses; some deployments send `x-ratelimit-*` instead. The values are
 * best effort: an empty or garbled value (`;w=21600`) means "absent", never
 * zero. `w` is the window length in seconds, not the time to the reset. No
 * header at all means the pull is not limited. Header names are matched
 * case-insensitively. Nothing here allocates. */
#ifndef HUBSYNC_RATELIMIT_H
#define HUBSYNC_RATELIMIT_H

#include <stddef.h>
#include <time.h>

#define RATELIMIT_SOURCE_MAX 128

struct ratelimit_info {
    int has_limit;     /* 0 absent, 1 from x-ratelimit-limit, 2 from ratelimit-limit */
    long limit;        /* pulls per window */
    long limit_window; /* seconds; 0 if the value had no w= */
    int has_remaining; /* same for remaining/remaining_window */
    long remaining;
    long remaining_window;
    char source[RATELIMIT_SOURCE_MAX]; /* docker-ratelimit-source, "" if absent */
};

void ratelimit_init(struct ratelimit_info *rl);

/* 1 if any field was filled. */
int ratelimit_present(const struct ratelimit_info *rl);

/* Parse "<count>[;w=<seconds>][;other=params]". Returns 0 and fills count
 * (>= 0) and window (0 when there is no w=), or -1 if the value has no
 * usable count. */
int ratelimit_parse_value(const char *value, size_t n, long *count, long *window);

/* Feed one response header (name without the colon, value trimmed or not).
 * Recognised: ratelimit-limit, ratelimit-remaining, x-ratelimit-limit,
 * x-ratelimit-remaining, docker-ratelimit-source. Returns 1 if the header
 * was recognised and usable, 0 otherwise. The unprefixed form wins when a
 * response carries both. */
int ratelimit_header(struct ratelimit_info *rl, const char *name, const char *value, size_t n);

/* Parse a Retry-After value: delay-seconds ("120"), an HTTP-date ("Wed, 21
 * Oct 2015 07:28:00 GMT") or, as Docker Hub's web API sends, a Unix epoch
 * timestamp (a number >= RATELIMIT_EPOCH_MIN). Dates are turned into seconds
 * from `now`, never negative. Returns 0 and *seconds, or -1 if unusable. */
#define RATELIMIT_EPOCH_MIN 1000000000L
int ratelimit_retry_after(const char *value, size_t n, time_t now, long *seconds);

#endif
