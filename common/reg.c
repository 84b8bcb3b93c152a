/* reg: see reg.h. Client and registry lifecycle, and the single-request
 * operations (ping, manifests, blob HEAD, tag listing); reg_http.c sends,
 * authenticates and retries; reg_blob.c streams blobs. */
#include "reg.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "reg_http.h"
#include "reg_parse.h"
#include "ref.h"

static const char *const class_names[] = {
    "ok",      "not_found", "unauthorized",    "denied",    "rate_limited", "server",
    "network", "digest_mismatch", "too_large", "protocol", "invalid",      "tls",
};

const char *reg_class_name(enum reg_class cls)
{
    if ((unsigned)cls < sizeof(class_names) / sizeof(class_names[0]))
        return class_names[cls];
    return "unknown";
}

char *reg_result_take_body(struct reg_result *res, size_t *len)
{
    char *b = res->body;
    if (len)
        *len = b ? res->body_len : 0;
    res->body = NULL;
    res->body_len = 0;
    return b;
}

/* ---- grammar ---- */

int reg_valid_ref(const char *ref)
{
    return ref_tag_valid(ref) || digest_valid(ref);
}

/* ---- client ---- */

void reg_client_opts_default(struct reg_client_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->user_agent = "hubsync/1";
    o->connect_timeout_ms = 10000;
    o->request_timeout_ms = 60000;
    o->low_speed_bytes = 1024;
    o->low_speed_secs = 60;
    o->max_retries = 3;
    o->retry_base_ms = 500;
    o->retry_max_ms = 30000;
    o->max_total_conns = 64;
    o->max_host_conns = 8;
    o->ring_bytes = 1 << 20;
    o->chunk_threshold = -1;
    o->chunk_bytes = 64LL << 20;
    o->max_tag_pages = 1000;
}

struct reg_client *reg_client_new(struct ev_loop *loop, const struct reg_client_opts *o,
                                  struct err *e)
{
    struct reg_client_opts d;
    if (!o) {
        reg_client_opts_default(&d);
        o = &d;
    }
    if (o->max_retries < 0 || o->retry_base_ms < 1 || o->retry_max_ms < o->retry_base_ms ||
        o->connect_timeout_ms < 1 || o->request_timeout_ms < 1 || o->low_speed_secs < 1 ||
        o->chunk_bytes < 1 || o->max_tag_pages < 1) {
        err_set(e, "registry client: invalid options (retries, timeouts, chunk size)");
        return NULL;
    }
    if (o->max_host_conns < 1 || o->max_host_conns > o->max_total_conns) {
        /* A total below the per-host cap would silently be the tighter one. */
        err_set(e, "registry client: max_host_conns %ld must be at least 1 and at most "
                "max_total_conns %ld", o->max_host_conns, o->max_total_conns);
        return NULL;
    }
    unsigned char addr[sizeof(struct in6_addr)];
    if (o->source_address && inet_pton(AF_INET, o->source_address, addr) != 1 &&
        inet_pton(AF_INET6, o->source_address, addr) != 1) {
        /* A host or interface name would make libcurl resolve it, blocking the loop. */
        err_set(e, "source address %.100s is not a numeric IPv4 or IPv6 address",
                o->source_address);
        return NULL;
    }
    struct evcurl_opts eo = {o->max_total_conns, o->max_host_conns};
    struct evcurl *ec = evcurl_new(loop, &eo, e);
    if (!ec)
        return NULL;
    struct reg_client *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->ec = ec;
    c->o = *o;
    c->user_agent = xstrdup(o->user_agent ? o->user_agent : "hubsync/1");
    c->ca_file = o->ca_file ? xstrdup(o->ca_file) : NULL;
    c->o.user_agent = c->user_agent;
    c->o.ca_file = c->ca_file;
    c->interface = o->source_address ? xasprintf("host!%s", o->source_address) : NULL;
    c->o.source_address = NULL; /* only c->interface is kept */
    if (c->o.ring_bytes < (64 << 10))
        c->o.ring_bytes = 64 << 10;
    struct auth_http_opts ao = {c->user_agent, c->ca_file, c->interface, o->connect_timeout_ms,
                                o->request_timeout_ms};
    c->auth = auth_cache_new(ec, &ao);
    c->rng = ((unsigned long long)time(NULL) << 20) ^ (unsigned long long)getpid() ^
             (unsigned long long)(size_t)c;
    if (!c->rng)
        c->rng = 88172645463325252ULL;
    return c;
}

void reg_client_free(struct reg_client *c)
{
    if (!c)
        return;
    if (c->busy || c->registries)
        log_error("registry client freed with %d operations and %d registries alive", c->busy,
                  c->registries);
    auth_cache_free(c->auth);
    evcurl_free(c->ec);
    free(c->user_agent);
    free(c->ca_file);
    free(c->interface);
    free(c);
}

const struct reg_stats *reg_client_stats(const struct reg_client *c)
{
    return &c->stats;
}

int reg_client_busy(const struct reg_client *c)
{
    return c->busy;
}

/* ---- registries ---- */

struct reg_registry *reg_registry_new(struct reg_client *c, const char *base_url,
                                      const struct creds *cr, struct err *e)
{
    int plain;
    size_t sl;
    if (strncasecmp(base_url, "https://", 8) == 0)
        plain = 0, sl = 8;
    else if (strncasecmp(base_url, "http://", 7) == 0)
        plain = 1, sl = 7;
    else {
        err_set(e, "registry URL \"%.200s\" must start with https:// or http://", base_url);
        return NULL;
    }
    size_t n = strlen(base_url);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)base_url[i] <= 0x20 || (unsigned char)base_url[i] >= 0x7f ||
            base_url[i] == '?' || base_url[i] == '#' || base_url[i] == '@') {
            err_set(e, "registry URL \"%.200s\": no spaces, query, fragment or user info allowed",
                    base_url);
            return NULL;
        }
    size_t hl = strcspn(base_url + sl, "/");
    if (hl == 0) {
        err_set(e, "registry URL \"%.200s\" has no host", base_url);
        return NULL;
    }
    char *url = xstrdup(base_url);
    size_t ul = strlen(url);
    while (ul > sl + hl && url[ul - 1] == '/')
        url[--ul] = '\0';
    if (ul >= sl + hl + 3 && strcmp(url + ul - 3, "/v2") == 0)
        url[ul -= 3] = '\0';
    struct reg_registry *r = xcalloc(1, sizeof(*r));
    r->c = c;
    r->url = url;
    r->plain = plain;
    reg_registry_set_creds(r, cr);
    c->registries++;
    return r;
}

void reg_registry_free(struct reg_registry *r)
{
    if (!r)
        return;
    r->c->registries--;
    creds_clear(&r->cr);
    free(r->auth_key);
    free(r->url);
    free(r->realm);
    free(r->service);
    free(r);
}

const char *reg_registry_url(const struct reg_registry *r)
{
    return r->url;
}

void reg_registry_set_creds(struct reg_registry *r, const struct creds *cr)
{
    creds_clear(&r->cr);
    creds_copy(&r->cr, cr);
    r->creds_refused = 0;
    /* Tokens are an account's: two accounts of one registry never share one. */
    free(r->auth_key);
    r->auth_key = r->cr.username ? xasprintf("%s %s", r->url, r->cr.username) : xstrdup(r->url);
}

int reg_registry_creds_refused(const struct reg_registry *r)
{
    return r->creds_refused;
}

/* ---- single-request operations ---- */

enum kind {
    K_PING,
    K_HEAD_MANIFEST,
    K_GET_MANIFEST,
    K_PUT_MANIFEST,
    K_DELETE_MANIFEST,
    K_HEAD_BLOB,
    K_TAGS,
    K_REFERRERS
};

struct op {
    struct reg_op base;
    enum kind kind;
    struct reg_registry *r;
    char *repo, *ref;
    char *body; /* PUT: our copy of the bytes */
    size_t body_len;
    char *media_type;
    struct reg_req *q;
    char digest[DIGEST_STR_SIZE];
    /* tag listing */
    char **tags;
    size_t ntags, max_tags;
    int page_size, pages;
    char *next; /* referrers: the next page's URL */
};

static void op_free(void *p)
{
    struct op *op = p;
    reg_http_free(op->q);
    free(op->repo);
    free(op->ref);
    free(op->body);
    free(op->base.res.body);
    free(op->media_type);
    reg_parse_free_tags(op->tags, op->ntags);
    free(op->next);
    free(op);
}

static struct op *op_new(struct reg_registry *r, enum kind kind, const char *repo,
                         const char *ref, reg_done_fn done, void *arg)
{
    struct op *op = xcalloc(1, sizeof(*op));
    reg_http_op_init(&op->base, r->c, done, arg);
    op->kind = kind;
    op->r = r;
    op->repo = repo ? xstrdup(repo) : NULL;
    op->ref = ref ? xstrdup(ref) : NULL;
    return op;
}

static void op_finish(struct op *op)
{
    reg_http_op_finish(&op->base);
    op_free(op);
}

/* Validate repo (and ref, when given); fail the operation later if bad. */
static int op_check(struct op *op, const char *repo, const char *ref, int ref_is_digest)
{
    if (!ref_repo_valid(repo)) {
        reg_http_op_fail_later(&op->base, REG_INVALID, op_free, op,
                               "%s: \"%.200s\" is not a valid repository name", op->r->url,
                               repo ? repo : "");
        return -1;
    }
    if (ref && !(ref_is_digest ? digest_valid(ref) : reg_valid_ref(ref))) {
        reg_http_op_fail_later(&op->base, REG_INVALID, op_free, op,
                               "%s/%s: \"%.200s\" is not a valid %s", op->r->url, repo, ref,
                               ref_is_digest ? "digest" : "tag or digest");
        return -1;
    }
    return 0;
}

static void on_manifest(struct reg_req *q, void *arg);
static void on_simple(struct reg_req *q, void *arg);
static void on_tags(struct reg_req *q, void *arg);

static struct reg_req *op_req(struct op *op, const char *method, char *url, const char *actions,
                              const char *what_fmt, reg_req_fn done)
{
    char *scope = op->repo ? reg_http_scope(op->repo, actions) : NULL;
    char *what = xasprintf(what_fmt, op->repo ? op->repo : "", op->ref ? op->ref : "");
    struct reg_req *q = reg_http_new(op->r, method, url, scope, what, done, op);
    free(scope);
    free(what);
    op->q = q;
    return q;
}

void reg_ping(struct reg_registry *r, reg_done_fn done, void *arg)
{
    struct op *op = op_new(r, K_PING, NULL, NULL, done, arg);
    struct reg_req *q = op_req(op, "GET", xasprintf("%s/v2/", r->url), NULL, "GET /v2/%s%s",
                               on_simple);
    reg_http_start(q);
}

/* HEAD or GET of a manifest, with the full Accept list. */
static void fetch_manifest(struct reg_registry *r, enum kind kind, const char *repo,
                           const char *ref, reg_done_fn done, void *arg)
{
    struct op *op = op_new(r, kind, repo, ref, done, arg);
    if (op_check(op, repo, ref, 0) != 0)
        return;
    int get = kind == K_GET_MANIFEST;
    struct reg_req *q = op_req(op, get ? "GET" : "HEAD", reg_http_url(r, repo, "manifests", ref),
                               "pull", get ? "GET manifest %s:%s" : "HEAD manifest %s:%s",
                               on_manifest);
    q->accept = REG_MT_OCI_INDEX ", " REG_MT_DOCKER_LIST ", " REG_MT_OCI_MANIFEST
                ", " REG_MT_DOCKER_MANIFEST;
    q->follow = 1;
    q->manifest_head = !get;
    q->manifest_get = get;
    q->max_body = get ? REG_MANIFEST_MAX : 0;
    q->hook_repo = op->repo;
    q->hook_ref = op->ref;
    reg_http_start(q);
}

void reg_head_manifest(struct reg_registry *r, const char *repo, const char *ref,
                       reg_done_fn done, void *arg)
{
    fetch_manifest(r, K_HEAD_MANIFEST, repo, ref, done, arg);
}

void reg_get_manifest(struct reg_registry *r, const char *repo, const char *ref,
                      reg_done_fn done, void *arg)
{
    fetch_manifest(r, K_GET_MANIFEST, repo, ref, done, arg);
}

static int valid_media_type(const char *mt)
{
    if (!mt || !*mt || strlen(mt) > 255)
        return 0;
    for (const char *p = mt; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            return 0;
    return 1;
}

void reg_put_manifest(struct reg_registry *r, const char *repo, const char *ref,
                      const char *media_type, const void *body, size_t len, reg_done_fn done,
                      void *arg)
{
    struct op *op = op_new(r, K_PUT_MANIFEST, repo, ref, done, arg);
    if (op_check(op, repo, ref, 0) != 0)
        return;
    if (!valid_media_type(media_type)) {
        reg_http_op_fail_later(&op->base, REG_INVALID, op_free, op,
                               "PUT manifest %s:%s at %s: media type missing or not printable",
                               repo, ref, r->url);
        return;
    }
    if (!body || len == 0 || len > (size_t)REG_MANIFEST_MAX) {
        reg_http_op_fail_later(&op->base, len ? REG_TOO_LARGE : REG_INVALID, op_free, op,
                               "PUT manifest %s:%s at %s: body is empty or larger than %ld bytes",
                               repo, ref, r->url, REG_MANIFEST_MAX);
        return;
    }
    digest_of(body, len, op->digest);
    if (digest_valid(ref) && strcmp(ref, op->digest) != 0) {
        reg_http_op_fail_later(&op->base, REG_DIGEST_MISMATCH, op_free, op,
                               "PUT manifest %s@%s at %s: the bytes hash to %s", repo, ref,
                               r->url, op->digest);
        return;
    }
    op->body = xmalloc(len);
    memcpy(op->body, body, len);
    op->body_len = len;
    op->media_type = xstrdup(media_type);
    struct reg_req *q = op_req(op, "PUT", reg_http_url(r, repo, "manifests", ref), "pull,push",
                               "PUT manifest %s:%s", on_manifest);
    q->content_type = op->media_type;
    q->body = op->body;
    q->body_len = len;
    q->has_body = 1;
    q->ok_status[0] = 201;
    q->max_body = 64 << 10;
    reg_http_start(q);
}

void reg_head_blob(struct reg_registry *r, const char *repo, const char *digest,
                   reg_done_fn done, void *arg)
{
    struct op *op = op_new(r, K_HEAD_BLOB, repo, digest, done, arg);
    if (op_check(op, repo, digest, 1) != 0)
        return;
    struct reg_req *q = op_req(op, "HEAD", reg_http_url(r, repo, "blobs", digest), "pull",
                               "HEAD blob %s@%s", on_simple);
    q->follow = 1;
    reg_http_start(q);
}

void reg_delete_manifest(struct reg_registry *r, const char *repo, const char *digest,
                         reg_done_fn done, void *arg)
{
    struct op *op = op_new(r, K_DELETE_MANIFEST, repo, digest, done, arg);
    if (op_check(op, repo, digest, 1) != 0)
        return;
    struct reg_req *q = op_req(op, "DELETE", reg_http_url(r, repo, "manifests", digest),
                               "pull,delete", "DELETE manifest %s@%s", on_simple);
    q->ok_status[0] = 202;
    q->ok_status[1] = 200;
    reg_http_start(q);
}

/* Ping, blob HEAD and manifest DELETE: the verdict is the answer. */
static void on_simple(struct reg_req *q, void *arg)
{
    struct op *op = arg;
    reg_http_op_result(&op->base, q);
    op_finish(op);
}

static void on_manifest(struct reg_req *q, void *arg)
{
    struct op *op = arg;
    struct reg_result *res = &op->base.res;
    const char *computed = NULL;
    if (q->cls == REG_OK && q->h.bad_digest) {
        reg_http_fail(q, REG_PROTOCOL, "Docker-Content-Digest is not a sha256 digest");
    } else if (q->cls == REG_OK && op->kind == K_GET_MANIFEST) {
        digest_of(q->resp.data ? q->resp.data : "", q->resp.len, op->digest);
        computed = op->digest;
        /* By digest the bytes must hash to it; by tag to what the registry
         * says they are. */
        const char *want = digest_valid(op->ref) ? op->ref : (q->h.digest[0] ? q->h.digest : NULL);
        if (want && strcmp(want, op->digest) != 0)
            reg_http_fail(q, REG_DIGEST_MISMATCH, "the %zu bytes received hash to %s, not %s",
                          q->resp.len, op->digest, want);
    } else if (q->cls == REG_OK && op->kind == K_PUT_MANIFEST) {
        computed = op->digest;
        if (q->h.digest[0] && strcmp(q->h.digest, op->digest) != 0)
            reg_http_fail(q, REG_DIGEST_MISMATCH, "the registry stored %s for bytes hashing to %s",
                          q->h.digest, op->digest);
    }
    reg_http_op_result(&op->base, q);
    if (computed)
        res->digest = computed;
    if (op->kind == K_GET_MANIFEST && computed)
        res->length = (long long)q->resp.len;
    if (op->kind == K_PUT_MANIFEST && computed)
        res->length = (long long)op->body_len;
    if (op->kind == K_GET_MANIFEST && res->cls == REG_OK) {
        res->body_len = q->resp.len;
        res->body = buf_steal(&q->resp);
    }
    op_finish(op);
}

/* ---- tag and referrer listings ---- */

static void tags_fail(struct op *op, struct reg_req *q, enum reg_class cls, const char *detail)
{
    reg_http_fail(q, cls, "%s", detail);
    reg_http_op_result(&op->base, q);
    op_finish(op);
}

static void on_tags(struct reg_req *q, void *arg)
{
    struct op *op = arg;
    if (q->cls != REG_OK) {
        reg_http_op_result(&op->base, q);
        op_finish(op);
        return;
    }
    op->pages++;
    char **page;
    size_t n;
    int too_many;
    struct err e;
    size_t room = op->max_tags - op->ntags;
    int bad = op->kind == K_REFERRERS
                  ? reg_parse_referrers(q->resp.data, q->resp.len, room, &page, &n, &too_many, &e)
                  : reg_parse_tags(q->resp.data, q->resp.len, room, &page, &n, &too_many, &e);
    if (bad != 0) {
        tags_fail(op, q, too_many ? REG_TOO_LARGE : REG_PROTOCOL, e.msg);
        return;
    }
    op->tags = xrealloc(op->tags, (op->ntags + n + 1) * sizeof(char *));
    memcpy(op->tags + op->ntags, page, n * sizeof(char *));
    op->ntags += n;
    op->tags[op->ntags] = NULL;
    free(page);
    /* Next page: Link first (the spec prefers it), else last= when the page
     * came back full. */
    char *next = NULL;
    if (q->h.link) {
        char *target = NULL;
        int lr = reg_parse_link_next(q->h.link, strlen(q->h.link), &target, &e);
        if (lr < 0) {
            tags_fail(op, q, REG_PROTOCOL, e.msg);
            return;
        }
        if (lr == 1) {
            int rr = reg_parse_resolve_url(q->url, target, &next, &e);
            free(target);
            if (rr != 0) {
                tags_fail(op, q, REG_PROTOCOL, e.msg);
                return;
            }
            if (!reg_parse_same_origin(next, op->r->url) || strcmp(next, q->url) == 0) {
                free(next);
                tags_fail(op, q, REG_PROTOCOL, "Link rel=\"next\" points elsewhere or loops");
                return;
            }
        }
    } else if (op->kind == K_TAGS && op->page_size > 0 && n == (size_t)op->page_size) {
        char *base = reg_http_url(op->r, op->repo, "tags/list", NULL);
        next = xasprintf("%s?n=%d&last=%s", base, op->page_size, op->tags[op->ntags - 1]);
        free(base);
    }
    /* A referrers page is a pull on Docker Hub: the caller reserves each one and
     * asks for the next itself. */
    if (!next || op->kind == K_REFERRERS) {
        reg_http_op_result(&op->base, q);
        op->base.res.tags = op->tags;
        op->base.res.ntags = op->ntags;
        op->base.res.next = op->next = next;
        op_finish(op);
        return;
    }
    if (op->pages >= op->r->c->o.max_tag_pages) {
        free(next);
        tags_fail(op, q, REG_TOO_LARGE, "more pages than the bound allows");
        return;
    }
    op->base.res.attempts += q->attempts;
    reg_http_reset(q);
    free(q->url);
    q->url = next;
    reg_http_start(q);
}

void reg_list_tags(struct reg_registry *r, const char *repo, int page_size, size_t max_tags,
                   reg_done_fn done, void *arg)
{
    struct op *op = op_new(r, K_TAGS, repo, NULL, done, arg);
    if (op_check(op, repo, NULL, 0) != 0)
        return;
    op->page_size = page_size > 0 ? page_size : 0;
    op->max_tags = max_tags;
    char *url = reg_http_url(r, repo, "tags/list", NULL);
    if (op->page_size) {
        char *u = xasprintf("%s?n=%d", url, op->page_size);
        free(url);
        url = u;
    }
    struct reg_req *q = op_req(op, "GET", url, "pull", "GET tags %s%s", on_tags);
    q->max_body = 4 << 20;
    reg_http_start(q);
}

void reg_list_referrers(struct reg_registry *r, const char *repo, const char *digest,
                        const char *page, size_t max, reg_done_fn done, void *arg)
{
    struct op *op = op_new(r, K_REFERRERS, repo, digest, done, arg);
    if (op_check(op, repo, digest, 1) != 0)
        return;
    if (page && !reg_parse_same_origin(page, r->url)) {
        reg_http_op_fail_later(&op->base, REG_INVALID, op_free, op,
                               "%s/%s: the referrers page \"%.200s\" is elsewhere", r->url, repo,
                               page);
        return;
    }
    op->max_tags = max;
    struct reg_req *q =
        op_req(op, "GET", page ? xstrdup(page) : reg_http_url(r, repo, "referrers", digest),
               "pull", "GET referrers %s@%s", on_tags);
    q->accept = REG_MT_OCI_INDEX;
    q->manifest_get = 1; /* a pull on Docker Hub, as a manifest GET */
    q->hook_repo = op->repo;
    q->hook_ref = op->ref;
    q->max_body = REG_MANIFEST_MAX;
    reg_http_start(q);
}
