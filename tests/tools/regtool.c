/* regtool: drive the registry client (common/reg*) from the command line.
 *
 * For integration tests: each command runs one operation (or --parallel N
 * identical ones at once) on a fresh client and prints one JSON object with
 * the result, client counters, hook counts and the peak RSS, so Python tests
 * can assert on them. Exit status 0 when every operation ended ok, 1 when
 * one did not, 2 on usage errors.
 *
 *   regtool ping URL
 *   regtool head URL/REPO:TAG | URL/REPO@DIGEST
 *   regtool get URL/REPO:REF [--out FILE]
 *   regtool put-manifest URL/REPO:REF MEDIA_TYPE FILE
 *   regtool head-blob URL/REPO DIGEST
 *   regtool copy-blob SRC_URL/REPO DST_URL/REPO DIGEST SIZE [--from REPO]
 *   regtool mount-blob URL/REPO DIGEST FROM_REPO
 *   regtool put-blob URL/REPO FILE
 *   regtool tags URL/REPO [--page-size N] [--max-tags N]
 *
 * --parallel N starts N identical operations at once (one client, so they
 * share connections and token fetches); --repeat N --interval-ms M runs the
 * batch N times with a pause between (tokens expiring in between).
 *
 * Credentials: --src-creds-env PREFIX / --dst-creds-env PREFIX (e.g.
 * HUBSYNC_UPSTREAM, HUBSYNC_TARGET) read via creds_lookup; the first (or
 * only) registry of a command is the "src" one. */
#include <ev.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "buf.h"
#include "cfg.h"
#include "creds.h"
#include "log.h"
#include "reg.h"
#include "reg_blob.h"
#include "text.h"
#include "xalloc.h"

/* What the options are looked up by. */
enum {
    OPT_CA_FILE = CFG_ID_OWN,
    OPT_RETRIES,
    OPT_RETRY_BASE_MS,
    OPT_RETRY_MAX_MS,
    OPT_TIMEOUT_MS,
    OPT_CONNECT_TIMEOUT_MS,
    OPT_LOW_SPEED_SECS,
    OPT_RING_BYTES,
    OPT_CHUNK_THRESHOLD,
    OPT_CHUNK_BYTES,
    OPT_SRC_CREDS_ENV,
    OPT_DST_CREDS_ENV,
    OPT_FROM,
    OPT_OUT,
    OPT_PAGE_SIZE,
    OPT_MAX_TAGS,
    OPT_PARALLEL,
    OPT_HOST_CONNS,
    OPT_REPEAT,
    OPT_INTERVAL_MS,
};

static const struct cfg_opt opts[] = {
    {CFG_ID_HELP, "help", NULL, CFG_BOOL, "false", 0, 0, "show this help", 0},
    {OPT_CA_FILE, "ca-file", NULL, CFG_STR, NULL, 0, 0, "PEM CA bundle for TLS", 0},
    {OPT_RETRIES, "retries", NULL, CFG_INT, "3", 0, 100, "retries after the first attempt", 0},
    {OPT_RETRY_BASE_MS, "retry-base-ms", NULL, CFG_INT, "500", 1, 600000, "first backoff", 0},
    {OPT_RETRY_MAX_MS, "retry-max-ms", NULL, CFG_INT, "30000", 1, 3600000, "backoff cap", 0},
    {OPT_TIMEOUT_MS, "timeout-ms", NULL, CFG_INT, "60000", 1, 3600000,
     "total timeout of small requests", 0},
    {OPT_CONNECT_TIMEOUT_MS, "connect-timeout-ms", NULL, CFG_INT, "10000", 1, 600000,
     "connect timeout", 0},
    {OPT_LOW_SPEED_SECS, "low-speed-secs", NULL, CFG_INT, "60", 1, 3600, "blob stall timeout", 0},
    {OPT_RING_BYTES, "ring-bytes", NULL, CFG_INT, "1048576", 65536, 1073741824,
     "blob copy ring size", 0},
    {OPT_CHUNK_THRESHOLD, "chunk-threshold", NULL, CFG_INT, "-1", -1, 1LL << 50,
     "chunked upload above (-1 never)", 0},
    {OPT_HOST_CONNS, "host-conns", NULL, CFG_INT, "8", 1, 64,
     "connections per host (the total stays 64)", 0},
    {OPT_CHUNK_BYTES, "chunk-bytes", NULL, CFG_INT, "67108864", 1, 1LL << 40, "PATCH size", 0},
    {OPT_SRC_CREDS_ENV, "src-creds-env", NULL, CFG_STR, NULL, 0, 0,
     "env prefix for the first registry", 0},
    {OPT_DST_CREDS_ENV, "dst-creds-env", NULL, CFG_STR, NULL, 0, 0,
     "env prefix for the second registry", 0},
    {OPT_FROM, "from", NULL, CFG_STR, NULL, 0, 0, "copy-blob: mount from this target repo first",
     0},
    {OPT_OUT, "out", NULL, CFG_STR, NULL, 0, 0, "get: write the manifest bytes here", 0},
    {OPT_PAGE_SIZE, "page-size", NULL, CFG_INT, "0", 0, 100000, "tags: n= per page (0: none)", 0},
    {OPT_MAX_TAGS, "max-tags", NULL, CFG_INT, "100000", 1, 10000000, "tags: bound", 0},
    {OPT_PARALLEL, "parallel", NULL, CFG_INT, "1", 1, 1000, "run the operation N times at once", 0},
    {OPT_REPEAT, "repeat", NULL, CFG_INT, "1", 1, 1000,
     "run the whole batch N times, one after the other", 0},
    {OPT_INTERVAL_MS, "interval-ms", NULL, CFG_INT, "0", 0, 600000, "pause between repeats", 0},
    {CFG_ID_LOG_LEVEL, "log-level", NULL, CFG_STR, "warn", 0, 0, "debug|info|warn|error", 0},
};
#define NOPTS ((int)(sizeof(opts) / sizeof(opts[0])))

struct tool {
    struct ev_loop *loop;
    int pending;
    json_t *results;
    const char *out_path;
    unsigned long ratelimit_calls, manifest_get_calls;
    json_t *last_rl;
};

/* URL/REPO[:TAG|@DIGEST] -> registry URL, repo, ref (ref may be NULL). */
static int split_ref(const char *s, char **url, char **repo, char **ref, struct err *e)
{
    const char *p = strstr(s, "://");
    if (!p)
        return err_set(e, "\"%s\": expected scheme://host[:port]/repository", s);
    const char *slash = strchr(p + 3, '/');
    if (!slash || !slash[1])
        return err_set(e, "\"%s\": no repository after the host", s);
    *url = xstrndup(s, (size_t)(slash - s));
    const char *path = slash + 1;
    const char *at = strchr(path, '@');
    const char *last_slash = strrchr(path, '/');
    const char *colon = strrchr(path, ':');
    if (at) {
        *repo = xstrndup(path, (size_t)(at - path));
        *ref = xstrdup(at + 1);
    } else if (colon && (!last_slash || colon > last_slash)) {
        *repo = xstrndup(path, (size_t)(colon - path));
        *ref = xstrdup(colon + 1);
    } else {
        *repo = xstrdup(path);
        *ref = NULL;
    }
    return 0;
}

static json_t *rl_json(const struct ratelimit_info *rl)
{
    json_t *o = json_object();
    if (rl->has_limit) {
        json_object_set_new(o, "limit", json_integer(rl->limit));
        json_object_set_new(o, "limit_window", json_integer(rl->limit_window));
    }
    if (rl->has_remaining) {
        json_object_set_new(o, "remaining", json_integer(rl->remaining));
        json_object_set_new(o, "remaining_window", json_integer(rl->remaining_window));
    }
    if (rl->source[0])
        json_object_set_new(o, "source", json_string(rl->source));
    return o;
}

static void on_ratelimit(struct reg_registry *r, const struct ratelimit_info *rl, long status,
                         void *arg)
{
    (void)r;
    (void)status;
    struct tool *t = arg;
    t->ratelimit_calls++;
    if (t->last_rl)
        json_decref(t->last_rl);
    t->last_rl = rl_json(rl);
}

static void on_manifest_get(struct reg_registry *r, const char *repo, const char *ref, void *arg)
{
    (void)r;
    (void)repo;
    (void)ref;
    struct tool *t = arg;
    t->manifest_get_calls++;
}

static void on_done(struct reg_result *res, void *arg)
{
    struct tool *t = arg;
    json_t *o = json_object();
    json_object_set_new(o, "class", json_string(reg_class_name(res->cls)));
    json_object_set_new(o, "status", json_integer(res->status));
    json_object_set_new(o, "msg", json_string(res->msg));
    json_object_set_new(o, "digest", res->digest ? json_string(res->digest) : json_null());
    json_object_set_new(o, "content_type",
                        res->content_type ? json_string(res->content_type) : json_null());
    json_object_set_new(o, "length", json_integer(res->length));
    json_object_set_new(o, "attempts", json_integer(res->attempts));
    json_object_set_new(o, "retry_after", json_integer(res->retry_after));
    json_object_set_new(o, "mounted", json_boolean(res->mounted));
    json_object_set_new(o, "ratelimit", rl_json(&res->rl));
    if (res->tags) {
        json_t *a = json_array();
        for (size_t i = 0; i < res->ntags; i++)
            json_array_append_new(a, json_string(res->tags[i]));
        json_object_set_new(o, "tags", a);
    }
    if (res->body && t->out_path) {
        FILE *f = fopen(t->out_path, "wb");
        if (!f || fwrite(res->body, 1, res->body_len, f) != res->body_len)
            json_object_set_new(o, "out_error", json_string("cannot write --out file"));
        if (f)
            fclose(f);
    }
    json_array_append_new(t->results, o);
    if (--t->pending == 0)
        ev_break(t->loop, EVBREAK_ALL);
}

static int load_creds(const char *prefix, const char *url, struct creds *cr, struct err *e)
{
    memset(cr, 0, sizeof(*cr));
    if (!prefix)
        return 0;
    return creds_lookup(prefix, url, url, cr, e) < 0 ? -1 : 0;
}

static char *read_file(const char *path, size_t *len, struct err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_set(e, "%s: cannot open", path);
        return NULL;
    }
    struct buf b = BUF_INIT(REG_MANIFEST_MAX + 1);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        if (buf_append(&b, chunk, n) != 0)
            break;
    fclose(f);
    *len = b.len;
    return buf_steal(&b);
}

/* What a command works on, parsed once. */
struct ops {
    const char *cmd;
    struct reg_registry *r1, *r2;
    const char *repo1, *ref1, *repo2;
    const char *body;
    size_t body_len;
    long long blob_size; /* copy-blob */
};

static int start_op(struct tool *t, const struct cfg *cfg, const struct ops *o)
{
    const char *cmd = o->cmd;
    const char *ref = o->ref1 ? o->ref1 : "latest";
    if (strcmp(cmd, "ping") == 0) {
        reg_ping(o->r1, on_done, t);
    } else if (strcmp(cmd, "head") == 0) {
        reg_head_manifest(o->r1, o->repo1, ref, on_done, t);
    } else if (strcmp(cmd, "get") == 0) {
        reg_get_manifest(o->r1, o->repo1, ref, on_done, t);
    } else if (strcmp(cmd, "put-manifest") == 0) {
        reg_put_manifest(o->r1, o->repo1, ref, cfg->args[2], o->body, o->body_len, on_done, t);
    } else if (strcmp(cmd, "head-blob") == 0) {
        reg_head_blob(o->r1, o->repo1, cfg->args[2], on_done, t);
    } else if (strcmp(cmd, "copy-blob") == 0) {
        struct reg_blob_spec sp = {o->r1, o->repo1, o->r2, o->repo2, cfg->args[3],
                                   o->blob_size, cfg_str(cfg, OPT_FROM)};
        reg_copy_blob(&sp, on_done, t);
    } else if (strcmp(cmd, "mount-blob") == 0) {
        reg_mount_blob(o->r1, o->repo1, cfg->args[2], cfg->args[3], on_done, t);
    } else if (strcmp(cmd, "put-blob") == 0) {
        reg_put_blob(o->r1, o->repo1, o->body, o->body_len, on_done, t);
    } else if (strcmp(cmd, "tags") == 0) {
        reg_list_tags(o->r1, o->repo1, (int)cfg_int(cfg, OPT_PAGE_SIZE),
                      (size_t)cfg_int(cfg, OPT_MAX_TAGS), on_done, t);
    } else {
        t->pending--;
        return -1;
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: regtool [flags] ping|head|get|put-manifest|head-blob|copy-blob|"
                    "mount-blob|put-blob|tags ARGS...\n");
    cfg_usage(stderr, opts, NOPTS);
}

int main(int argc, char **argv)
{
    struct cfg cfg;
    struct err e;
    int rc = 2;
    struct reg_client *c = NULL;
    struct reg_registry *r1 = NULL, *r2 = NULL;
    struct creds c1 = {0}, c2 = {0};
    char *url1 = NULL, *repo1 = NULL, *ref1 = NULL, *url2 = NULL, *repo2 = NULL, *ref2 = NULL;
    char *body = NULL;
    size_t body_len = 0;
    struct tool t = {0};
    if (cfg_parse(&cfg, opts, NOPTS, argc - 1, argv + 1, &e) != 0) {
        fprintf(stderr, "regtool: %s\n", e.msg);
        return 2;
    }
    if (cfg_bool(&cfg, CFG_ID_HELP) || cfg.nargs < 2) {
        usage();
        cfg_free(&cfg);
        return 2;
    }
    enum log_level lvl;
    if (log_parse_level(cfg_str(&cfg, CFG_ID_LOG_LEVEL), &lvl) != 0)
        lvl = LOG_LVL_WARN;
    log_setup("regtool", lvl, LOG_FMT_TEXT);
    const char *cmd = cfg.args[0];
    t.loop = ev_loop_new(EVFLAG_AUTO);
    t.results = json_array();
    t.out_path = cfg_str(&cfg, OPT_OUT);

    struct reg_client_opts o;
    reg_client_opts_default(&o);
    o.ca_file = cfg_str(&cfg, OPT_CA_FILE);
    o.max_retries = (int)cfg_int(&cfg, OPT_RETRIES);
    o.retry_base_ms = cfg_int(&cfg, OPT_RETRY_BASE_MS);
    o.retry_max_ms = cfg_int(&cfg, OPT_RETRY_MAX_MS);
    o.request_timeout_ms = cfg_int(&cfg, OPT_TIMEOUT_MS);
    o.connect_timeout_ms = cfg_int(&cfg, OPT_CONNECT_TIMEOUT_MS);
    o.low_speed_secs = cfg_int(&cfg, OPT_LOW_SPEED_SECS);
    o.ring_bytes = (size_t)cfg_int(&cfg, OPT_RING_BYTES);
    o.chunk_threshold = cfg_int(&cfg, OPT_CHUNK_THRESHOLD);
    o.chunk_bytes = cfg_int(&cfg, OPT_CHUNK_BYTES);
    o.max_host_conns = cfg_int(&cfg, OPT_HOST_CONNS);
    o.hooks.on_ratelimit = on_ratelimit;
    o.hooks.on_manifest_get = on_manifest_get;
    o.hooks.arg = &t;
    c = reg_client_new(t.loop, &o, &e);
    if (!c) {
        fprintf(stderr, "regtool: %s\n", e.msg);
        goto out;
    }
    if (split_ref(cfg.args[1], &url1, &repo1, &ref1, &e) != 0 && strcmp(cmd, "ping") != 0) {
        fprintf(stderr, "regtool: %s\n", e.msg);
        goto out;
    }
    if (strcmp(cmd, "ping") == 0 && !url1)
        url1 = xstrdup(cfg.args[1]);
    if (load_creds(cfg_str(&cfg, OPT_SRC_CREDS_ENV), url1, &c1, &e) != 0) {
        fprintf(stderr, "regtool: %s\n", e.msg);
        goto out;
    }
    r1 = reg_registry_new(c, url1, &c1, &e);
    if (!r1) {
        fprintf(stderr, "regtool: %s\n", e.msg);
        goto out;
    }
    int par = (int)cfg_int(&cfg, OPT_PARALLEL);
    int need = strcmp(cmd, "put-manifest") == 0 ? 4
               : strcmp(cmd, "copy-blob") == 0  ? 5
               : strcmp(cmd, "mount-blob") == 0 ? 4
               : strcmp(cmd, "head-blob") == 0  ? 3
               : strcmp(cmd, "put-blob") == 0   ? 3
                                                : 2;
    if (cfg.nargs != need) {
        usage();
        goto out;
    }
    if (strcmp(cmd, "put-manifest") == 0 || strcmp(cmd, "put-blob") == 0) {
        body = read_file(cfg.args[cfg.nargs - 1], &body_len, &e);
        if (!body) {
            fprintf(stderr, "regtool: %s\n", e.msg);
            goto out;
        }
    }
    long long blob_size = 0;
    if (strcmp(cmd, "copy-blob") == 0) {
        if (text_ll(cfg.args[4], &blob_size) < 0 || blob_size < 0) {
            fprintf(stderr, "regtool: copy-blob: SIZE '%s' is not a byte count\n", cfg.args[4]);
            goto out;
        }
        if (split_ref(cfg.args[2], &url2, &repo2, &ref2, &e) != 0) {
            fprintf(stderr, "regtool: %s\n", e.msg);
            goto out;
        }
        if (load_creds(cfg_str(&cfg, OPT_DST_CREDS_ENV), url2, &c2, &e) != 0) {
            fprintf(stderr, "regtool: %s\n", e.msg);
            goto out;
        }
        r2 = reg_registry_new(c, url2, &c2, &e);
        if (!r2) {
            fprintf(stderr, "regtool: %s\n", e.msg);
            goto out;
        }
    }
    struct ops ops = {cmd, r1, r2, repo1, ref1, repo2, body, body_len, blob_size};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int repeat = (int)cfg_int(&cfg, OPT_REPEAT);
    for (int rep = 0; rep < repeat; rep++) {
        if (rep > 0)
            ev_sleep((double)cfg_int(&cfg, OPT_INTERVAL_MS) / 1000.0);
        for (int i = 0; i < par; i++) {
            t.pending++;
            if (start_op(&t, &cfg, &ops) != 0) {
                usage();
                goto out;
            }
        }
        ev_run(t.loop, 0);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);

    json_t *first = json_array_get(t.results, 0);
    json_t *outj = first ? json_deep_copy(first) : json_object();
    const struct reg_stats *st = reg_client_stats(c);
    json_t *sj = json_object();
    json_object_set_new(sj, "requests", json_integer((json_int_t)st->requests));
    json_object_set_new(sj, "manifest_gets", json_integer((json_int_t)st->manifest_gets));
    json_object_set_new(sj, "manifest_heads", json_integer((json_int_t)st->manifest_heads));
    json_object_set_new(sj, "retries", json_integer((json_int_t)st->retries));
    json_object_set_new(sj, "token_fetches", json_integer((json_int_t)st->token_fetches));
    json_object_set_new(sj, "blob_bytes", json_integer((json_int_t)st->blob_bytes));
    json_object_set_new(outj, "stats", sj);
    json_object_set_new(outj, "ratelimit_hook_calls", json_integer((json_int_t)t.ratelimit_calls));
    json_object_set_new(outj, "manifest_get_hook_calls",
                        json_integer((json_int_t)t.manifest_get_calls));
    json_object_set_new(outj, "last_ratelimit", t.last_rl ? json_incref(t.last_rl) : json_null());
    json_object_set_new(outj, "results", json_incref(t.results));
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    json_object_set_new(outj, "peak_rss_kb", json_integer(ru.ru_maxrss));
    json_object_set_new(outj, "seconds", json_real((double)(t1.tv_sec - t0.tv_sec) +
                                                   (double)(t1.tv_nsec - t0.tv_nsec) / 1e9));
    json_dumpf(outj, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(outj);
    rc = 0;
    size_t i;
    json_t *it;
    json_array_foreach(t.results, i, it) {
        if (strcmp(json_string_value(json_object_get(it, "class")), "ok") != 0)
            rc = 1;
    }
out:
    reg_registry_free(r1);
    reg_registry_free(r2);
    reg_client_free(c);
    creds_clear(&c1);
    creds_clear(&c2);
    free(url1);
    free(repo1);
    free(ref1);
    free(url2);
    free(repo2);
    free(ref2);
    free(body);
    if (t.last_rl)
        json_decref(t.last_rl);
    json_decref(t.results);
    ev_loop_destroy(t.loop);
    cfg_free(&cfg);
    return rc;
}
