/* ratelimit: see ratelimit.h. */
#include "ratelimit.h"

#include <curl/curl.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

void ratelimit_init(struct ratelimit_info *rl)
{
    memset(rl, 0, sizeof(*rl));
}

int ratelimit_present(const struct ratelimit_info *rl)
{
    return rl->has_limit || rl->has_remaining || rl->source[0] != '\0';
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static void trim(const char **s, size_t *n)
{
    while (*n && is_ows(**s))
        (*s)++, (*n)--;
    while (*n && (is_ows((*s)[*n - 1]) || (*s)[*n - 1] == '\r' || (*s)[*n - 1] == '\n'))
        (*n)--;
}

/* A decimal number filling [s, s+n) exactly, at most LONG_MAX. */
static int parse_long(const char *s, size_t n, long *out)
{
    if (n == 0)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        int d = s[i] - '0';
        if (v > (LONG_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int ratelimit_parse_value(const char *value, size_t n, long *count, long *window)
{
    const char *s = value;
    trim(&s, &n);
    const char *semi = memchr(s, ';', n);
    size_t head = semi ? (size_t)(semi - s) : n;
    const char *h = s;
    trim(&h, &head);
    long c;
    if (parse_long(h, head, &c) != 0)
        return -1;
    long w = 0;
    /* Parameters: "w=<seconds>" is the only one we use; others are skipped. */
    while (semi) {
        const char *p = semi + 1;
        size_t rest = n - (size_t)(p - s);
        semi = memchr(p, ';', rest);
        size_t plen = semi ? (size_t)(semi - p) : rest;
        trim(&p, &plen);
        if (plen >= 2 && (p[0] == 'w' || p[0] == 'W') && p[1] == '=') {
            long v;
            if (parse_long(p + 2, plen - 2, &v) == 0)
                w = v;
        }
    }
    *count = c;
    *window = w;
    return 0;
}

/* Which of the four count headers a name is; prefixed ones are weaker. */
enum rl_kind { RL_NONE, RL_LIMIT, RL_REMAINING, RL_SOURCE };

static enum rl_kind classify(const char *name, int *prefixed)
{
    *prefixed = 0;
    if (strncasecmp(name, "x-", 2) == 0 && strncasecmp(name + 2, "ratelimit-", 10) == 0) {
        *prefixed = 1;
        name += 2;
    }
    if (strcasecmp(name, "ratelimit-limit") == 0)
        return RL_LIMIT;
    if (strcasecmp(name, "ratelimit-remaining") == 0)
        return RL_REMAINING;
    if (!*prefixed && strcasecmp(name, "docker-ratelimit-source") == 0)
        return RL_SOURCE;
    return RL_NONE;
}

int ratelimit_header(struct ratelimit_info *rl, const char *name, const char *value, size_t n)
{
    int prefixed;
    enum rl_kind kind = classify(name, &prefixed);
    long c, w;
    switch (kind) {
    case RL_NONE:
        return 0;
    case RL_SOURCE: {
        const char *s = value;
        trim(&s, &n);
        if (n == 0)
            return 0;
        size_t k = 0;
        for (size_t i = 0; i < n && k < sizeof(rl->source) - 1; i++)
            rl->source[k++] = (s[i] > 0x20 && s[i] < 0x7f) ? s[i] : '?';
        rl->source[k] = '\0';
        return 1;
    }
    case RL_LIMIT:
        if (ratelimit_parse_value(value, n, &c, &w) != 0)
            return 0;
        if (prefixed && rl->has_limit == 2)
            return 1; /* the unprefixed header wins */
        rl->limit = c;
        rl->limit_window = w;
        rl->has_limit = prefixed ? 1 : 2;
        return 1;
    case RL_REMAINING:
        if (ratelimit_parse_value(value, n, &c, &w) != 0)
            return 0;
        if (prefixed && rl->has_remaining == 2)
            return 1;
        rl->remaining = c;
        rl->remaining_window = w;
        rl->has_remaining = prefixed ? 1 : 2;
        return 1;
    }
    return 0;
}

int ratelimit_retry_after(const char *value, size_t n, time_t now, long *seconds)
{
    const char *s = value;
    trim(&s, &n);
    if (n == 0 || n > 64)
        return -1;
    long v;
    if (parse_long(s, n, &v) == 0) {
        if (v >= RATELIMIT_EPOCH_MIN)
            v = v > (long)now ? v - (long)now : 0;
        *seconds = v;
        return 0;
    }
    if (s[0] >= '0' && s[0] <= '9')
        return -1; /* a number with junk, not a date */
    char date[65];
    memcpy(date, s, n);
    date[n] = '\0';
    /* curl_getdate knows the three HTTP-date forms (RFC 7231 7.1.1.1). */
    time_t t = curl_getdate(date, NULL);
    if (t == (time_t)-1)
        return -1;
    *seconds = t > now ? (long)(t - now) : 0;
    return 0;
}
