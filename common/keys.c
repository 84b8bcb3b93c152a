/* keys: see keys.h. */
#include "keys.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

static int prefix_char_ok(int c)
{
    return isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-';
}

/* A variable key part and whether ':' stays readable in it. */
struct part {
    const char *s;
    int keep_colon;
};

/* Characters kept as they are inside a variable key part; everything else,
 * '%' included, is written %XX so distinct inputs give distinct keys. ':'
 * separates parts, so it is encoded too except where it is the usual
 * notation (host:port, sha256:hex). */
static int part_char_ok(int c, int keep_colon)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("._/@+=-", c) != NULL) || (c == ':' && keep_colon);
}

static void put_part(struct buf *b, struct part part)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)part.s; *p; p++) {
        char enc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
        if (part_char_ok(*p, part.keep_colon))
            buf_append(b, p, 1);
        else
            buf_append(b, enc, 3);
    }
}

/* prefix + name, then ":" and each part (s NULL: no part). The buffer limit
 * is only the allocator's: key parts come from validated jobs and headers. */
static char *build(const struct keys *k, const char *name, struct part p1, struct part p2)
{
    struct buf b = BUF_INIT((size_t)-1 / 2);
    buf_puts(&b, k->prefix);
    buf_puts(&b, name);
    if (p1.s) {
        buf_puts(&b, ":");
        put_part(&b, p1);
    }
    if (p2.s) {
        buf_puts(&b, ":");
        put_part(&b, p2);
    }
    return buf_steal(&b);
}

static char *fixed(const struct keys *k, const char *name)
{
    struct part none = {NULL, 0};
    return build(k, name, none, none);
}

int keys_init(struct keys *k, const char *prefix, struct err *e)
{
    memset(k, 0, sizeof(*k));
    if (!prefix)
        prefix = KEYS_PREFIX_DEFAULT;
    size_t n = strlen(prefix);
    if (n == 0 || n > KEYS_PREFIX_MAX)
        return err_set(e, "key prefix: length %zu is not within 1..%d", n, KEYS_PREFIX_MAX);
    for (size_t i = 0; i < n; i++)
        if (!prefix_char_ok((unsigned char)prefix[i]))
            return err_set(e, "key prefix '%s': character %zu is not one of [A-Za-z0-9._:-]",
                           prefix, i + 1);
    k->prefix = xstrdup(prefix);
    k->jobs = fixed(k, "jobs");
    k->jobs_index = fixed(k, "jobs:index");
    k->jobs_delayed = fixed(k, "jobs:delayed");
    k->jobs_delayed_payload = fixed(k, "jobs:delayed:payload");
    k->jobs_dead = fixed(k, "jobs:dead");
    k->runs = fixed(k, "runs");
    k->run_current = fixed(k, "runs:current");
    k->synced_commit = fixed(k, "synced-commit");
    k->workers = fixed(k, "workers");
    k->coordinator = fixed(k, "coordinator");
    k->stats = fixed(k, "stats");
    k->ctl_paused = fixed(k, "ctl:paused");
    return 0;
}

void keys_free(struct keys *k)
{
    char **all[] = {&k->prefix, &k->jobs, &k->jobs_index, &k->jobs_delayed,
                    &k->jobs_delayed_payload, &k->jobs_dead, &k->runs, &k->run_current,
                    &k->synced_commit, &k->workers, &k->coordinator, &k->stats,
                    &k->ctl_paused};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        free(*all[i]);
        *all[i] = NULL;
    }
}

char *keys_target_id(const char *target_url)
{
    const char *p = strstr(target_url, "://");
    p = p ? p + 3 : target_url;
    size_t end = strcspn(p, "/?#");
    /* Credentials never go into a key name. */
    const char *at = memchr(p, '@', end);
    if (at) {
        end -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    char *id = xstrndup(p, end);
    for (char *c = id; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    return id;
}

char *keys_run(const struct keys *k, const char *run_id)
{
    struct part id = {run_id, 0}, none = {NULL, 0};
    return build(k, "run", id, none);
}

char *keys_run_keys(const struct keys *k, const char *run_id)
{
    char *run = keys_run(k, run_id);
    char *s = xasprintf("%s:keys", run);
    free(run);
    return s;
}

/* name:<target id>[:part]: target-scoped keys. */
static char *target_key(const struct keys *k, const char *name, const char *target_url,
                        struct part p2)
{
    char *t = keys_target_id(target_url);
    struct part tp = {t, 1};
    char *key = build(k, name, tp, p2);
    free(t);
    return key;
}

char *keys_present(const struct keys *k, const char *target_url, const char *repo)
{
    struct part rp = {repo, 0};
    return target_key(k, "present", target_url, rp);
}

char *keys_blobhome(const struct keys *k, const char *target_url)
{
    struct part none = {NULL, 0};
    return target_key(k, "blobhome", target_url, none);
}

char *keys_breaker(const struct keys *k, const char *registry_url)
{
    struct part none = {NULL, 0};
    return target_key(k, "breaker", registry_url, none);
}

char *keys_blob_lock(const struct keys *k, const char *target_url, const char *digest)
{
    struct part dp = {digest, 1};
    return target_key(k, "lock:blob", target_url, dp);
}

char *keys_budget(const struct keys *k, const char *source)
{
    struct part sp = {source, 0}, none = {NULL, 0};
    return build(k, "budget", sp, none);
}

char *keys_budget_inflight(const struct keys *k, const char *source)
{
    char *base = keys_budget(k, source);
    char *key = xasprintf("%s:inflight", base);
    free(base);
    return key;
}

char *keys_manifest(const struct keys *k, const char *digest)
{
    struct part dp = {digest, 1}, none = {NULL, 0};
    return build(k, "manifest", dp, none);
}

char *keys_worker(const struct keys *k, const char *worker_id)
{
    struct part wp = {worker_id, 1}, none = {NULL, 0};
    return build(k, "worker", wp, none);
}
