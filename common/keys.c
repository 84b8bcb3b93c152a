/* keys: see keys.h. */
#include "keys.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
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

/* prefix + name, then ":" and each of the n parts. The buffer limit is only
 * the allocator's: key parts come from validated jobs and headers. */
static char *build(const struct keys *k, const char *name, const struct part *parts, size_t n)
{
    struct buf b = BUF_INIT((size_t)-1 / 2);
    buf_puts(&b, k->prefix);
    buf_puts(&b, name);
    for (size_t i = 0; i < n; i++) {
        buf_puts(&b, ":");
        put_part(&b, parts[i]);
    }
    return buf_steal(&b);
}

static char *fixed(const struct keys *k, const char *name)
{
    return build(k, name, NULL, 0);
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
    k->jobs_delayed_count = fixed(k, "jobs:delayed:count");
    k->jobs_dead = fixed(k, "jobs:dead");
    k->jobs_handover = fixed(k, "jobs:handover");
    k->assist = fixed(k, "assist");
    k->runs = fixed(k, "runs");
    k->run_current = fixed(k, "runs:current");
    k->synced_commit = fixed(k, "synced-commit");
    k->budgets = fixed(k, "budgets");
    k->workers = fixed(k, "workers");
    k->coordinator = fixed(k, "coordinator");
    k->stats = fixed(k, "stats");
    k->ctl_paused = fixed(k, "ctl:paused");
    k->manifests = fixed(k, "manifests");
    k->exports = fixed(k, "exports");
    k->events = fixed(k, "events");
    k->events_delivered = fixed(k, "events:delivered");
    k->events_pending = fixed(k, "events:pending");
    k->behind = fixed(k, "behind");
    k->worker_budgets = fixed(k, "workers:budget");
    k->run_name = "run";
    return 0;
}

int keys_init_bundle(struct keys *k, const char *prefix, struct err *e)
{
    if (keys_init(k, prefix, e) < 0)
        return -1;
    struct {
        char **key;
        const char *name;
    } queue[] = {
        {&k->jobs, "bundle:jobs"},
        {&k->jobs_index, "bundle:jobs:index"},
        {&k->jobs_delayed, "bundle:jobs:delayed"},
        {&k->jobs_delayed_payload, "bundle:jobs:delayed:payload"},
        {&k->jobs_delayed_count, "bundle:jobs:delayed:count"},
        {&k->jobs_dead, "bundle:jobs:dead"},
        {&k->jobs_handover, "bundle:jobs:handover"},
        {&k->runs, "bundle:runs"},
        {&k->run_current, "bundle:current"},
        {&k->stats, "bundle:stats"},
    };
    for (size_t i = 0; i < sizeof(queue) / sizeof(queue[0]); i++) {
        free(*queue[i].key);
        *queue[i].key = fixed(k, queue[i].name);
    }
    k->run_name = "bundle:run";
    return 0;
}

void keys_free(struct keys *k)
{
    char **all[] = {&k->prefix, &k->jobs, &k->jobs_index, &k->jobs_delayed,
                    &k->jobs_delayed_payload, &k->jobs_delayed_count, &k->jobs_dead,
                    &k->jobs_handover, &k->assist, &k->runs, &k->run_current, &k->synced_commit,
                    &k->budgets, &k->workers, &k->coordinator, &k->stats, &k->ctl_paused,
                    &k->manifests, &k->exports, &k->events,
                    &k->events_delivered, &k->events_pending, &k->behind, &k->worker_budgets};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        free(*all[i]);
        *all[i] = NULL;
    }
}

/* The authority of a URL (after the scheme, before the path), its length and
 * where it starts, credentials skipped. */
static const char *url_authority(const char *url, size_t *len)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    size_t end = strcspn(p, "/?#");
    /* Credentials never go into a key name. */
    const char *at = memchr(p, '@', end);
    if (at) {
        end -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    *len = end;
    return p;
}

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

char *keys_host_port(const char *url)
{
    size_t n;
    const char *p = url_authority(url, &n);
    char *id = xstrndup(p, n);
    lower(id);
    return id;
}

char *keys_target_id(const char *target_url)
{
    const char *sep = strstr(target_url, "://");
    char *scheme = sep ? xstrndup(target_url, (size_t)(sep - target_url)) : xstrdup("");
    lower(scheme);
    size_t n;
    const char *auth = url_authority(target_url, &n);
    char *host = xstrndup(auth, n);
    lower(host);
    /* The port is explicit, so that https://r and https://r:443 are one target. */
    const char *bracket = strrchr(host, ']');
    int has_port = strchr(bracket ? bracket : host, ':') != NULL;
    const char *port = has_port || !*host ? ""
                       : strcmp(scheme, "https") == 0 ? ":443"
                       : strcmp(scheme, "http") == 0  ? ":80"
                                                      : "";
    /* The path as reg_registry_new keeps it: no query or fragment, no trailing
     * slashes, no trailing /v2. */
    const char *path = auth + n;
    size_t pl = strcspn(path, "?#");
    while (pl > 0 && path[pl - 1] == '/')
        pl--;
    if (pl >= 3 && strncmp(path + pl - 3, "/v2", 3) == 0)
        pl -= 3;
    char *id = xasprintf("%s%s%s%s%.*s", scheme, *scheme ? "://" : "", host, port, (int)pl, path);
    free(scheme);
    free(host);
    return id;
}

char *keys_run(const struct keys *k, const char *run_id)
{
    struct part id = {run_id, 0};
    return build(k, k->run_name, &id, 1);
}

/* A run's own keys: its record's name and a suffix (rq.lua builds them the
 * same way from the record's prefix). */
static char *run_sub(const struct keys *k, const char *run_id, const char *suffix)
{
    char *run = keys_run(k, run_id);
    char *s = xasprintf("%s:%s", run, suffix);
    free(run);
    return s;
}

char *keys_run_keys(const struct keys *k, const char *run_id)
{
    return run_sub(k, run_id, "keys");
}

char *keys_run_settled(const struct keys *k, const char *run_id)
{
    return run_sub(k, run_id, "settled");
}

char *keys_run_entries(const struct keys *k, const char *run_id)
{
    return run_sub(k, run_id, "entries");
}

char *keys_run_entry_of(const struct keys *k, const char *run_id)
{
    return run_sub(k, run_id, "entry-of");
}

static const struct part no_part = {NULL, 0};

/* name:<target id>[:p2[:p3]]: target-scoped keys (p.s NULL: no such part). */
static char *target_key(const struct keys *k, const char *name, const char *target_url,
                        struct part p2, struct part p3)
{
    char *t = keys_target_id(target_url);
    struct part parts[3] = {{t, 1}, p2, p3};
    char *key = build(k, name, parts, !p2.s ? 1 : !p3.s ? 2 : 3);
    free(t);
    return key;
}

char *keys_target(const struct keys *k, const char *target_url)
{
    return target_key(k, "target", target_url, no_part, no_part);
}

char *keys_present(const struct keys *k, const char *target_url, const char *epoch,
                   const char *repo)
{
    struct part ep = {epoch, 0}, rp = {repo, 0};
    return target_key(k, "present", target_url, ep, rp);
}

char *keys_blobhome(const struct keys *k, const char *target_url, const char *epoch)
{
    struct part ep = {epoch, 0};
    return target_key(k, "blobhome", target_url, ep, no_part);
}

char *keys_breaker(const struct keys *k, const char *registry_url)
{
    return target_key(k, "breaker", registry_url, no_part, no_part);
}

char *keys_blob_lock(const struct keys *k, const char *target_url, const char *digest)
{
    struct part dp = {digest, 1};
    return target_key(k, "lock:blob", target_url, dp, no_part);
}

char *keys_budget(const struct keys *k, const char *source)
{
    struct part sp = {source, 0};
    return build(k, "budget", &sp, 1);
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
    struct part dp = {digest, 1};
    return build(k, "manifest", &dp, 1);
}

char *keys_worker(const struct keys *k, const char *worker_id)
{
    struct part wp = {worker_id, 1};
    return build(k, "worker", &wp, 1);
}

char *keys_export(const struct keys *k, const char *commit)
{
    struct part cp = {commit, 0};
    return build(k, "export", &cp, 1);
}

char *keys_export_new(const struct keys *k, const char *commit)
{
    char *base = keys_export(k, commit);
    char *key = xasprintf("%s:new", base);
    free(base);
    return key;
}

char *keys_site(const struct keys *k, const char *target_url)
{
    return target_key(k, "site", target_url, no_part, no_part);
}
