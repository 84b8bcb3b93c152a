/* reg_http: see reg_http.h. */
#include "reg_http.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "buf.h"
#include "log.h"
#include "reg_parse.h"

#define WWW_AUTH_MAX (16 << 10)
#define HDR_VALUE_MAX 8192

/* ---- response headers ---- */

void reg_hdrs_init(struct reg_hdrs *h)
{
    memset(h, 0, sizeof(*h));
    h->content_length = -1;
    h->retry_after = -1;
    buf_init(&h->www_auth, WWW_AUTH_MAX);
    ratelimit_init(&h->rl);
}

void reg_hdrs_free(struct reg_hdrs *h)
{
    free(h->content_type);
    free(h->location);
    free(h->link);
    free(h->range);
    buf_free(&h->www_auth);
    reg_hdrs_init(h);
}

static int name_is(const char *name, size_t nl, const char *want)
{
    return strlen(want) == nl && strncasecmp(name, want, nl) == 0;
}

static void set_str(char **slot, const char *v, size_t vl)
{
    free(*slot);
    *slot = xstrndup(v, vl);
}

void reg_hdrs_line(struct reg_hdrs *h, const char *line, size_t n)
{
    if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        reg_hdrs_free(h); /* a new response: redirect or interim answer */
        return;
    }
    const char *colon = memchr(line, ':', n);
    if (!colon)
        return;
    size_t nl = (size_t)(colon - line);
    const char *v = colon + 1;
    size_t vl = n - nl - 1;
    while (vl && (*v == ' ' || *v == '\t'))
        v++, vl--;
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' ' ||
                  v[vl - 1] == '\t'))
        vl--;
    if (vl > HDR_VALUE_MAX)
        return; /* nothing we read is that long; ignore rather than truncate */
    char name[64];
    if (nl == 0 || nl >= sizeof(name))
        return;
    memcpy(name, line, nl);
    name[nl] = '\0';
    if (name_is(name, nl, "content-length")) {
        long long cl = 0;
        size_t i;
        for (i = 0; i < vl && v[i] >= '0' && v[i] <= '9' && cl < (1LL << 50); i++)
            cl = cl * 10 + (v[i] - '0');
        h->content_length = (i == vl && vl > 0) ? cl : -1;
    } else if (name_is(name, nl, "docker-content-digest")) {
        if (digest_parse(v, vl, "Docker-Content-Digest", h->digest, NULL) != 0) {
            h->digest[0] = '\0';
            h->bad_digest = 1;
        }
    } else if (name_is(name, nl, "content-type")) {
        set_str(&h->content_type, v, vl);
    } else if (name_is(name, nl, "location")) {
        set_str(&h->location, v, vl);
    } else if (name_is(name, nl, "link")) {
        set_str(&h->link, v, vl);
    } else if (name_is(name, nl, "range")) {
        set_str(&h->range, v, vl);
    } else if (name_is(name, nl, "www-authenticate")) {
        if (h->www_auth.len)
            buf_append(&h->www_auth, ", ", 2);
        buf_append(&h->www_auth, v, vl);
    } else if (name_is(name, nl, "retry-after")) {
        long s;
        if (ratelimit_retry_after(v, vl, time(NULL), &s) == 0)
            h->retry_after = s;
    } else {
        ratelimit_header(&h->rl, name, v, vl);
    }
}

/* ---- helpers ---- */

char *reg_http_url(const struct reg_registry *r, const char *repo, const char *kind,
                   const char *ref)
{
    if (ref)
        return xasprintf("%s/v2/%s/%s/%s", r->url, repo, kind, ref);
    return xasprintf("%s/v2/%s/%s", r->url, repo, kind);
}

char *reg_http_scope(const char *repo, const char *actions)
{
    return xasprintf("repository:%s:%s", repo, actions);
}

static double rand01(struct reg_client *c)
{
    /* xorshift64*: only jitter, no security role. */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return (double)((c->rng * 2685821657736338717ULL) >> 11) / (double)(1ULL << 53);
}

double reg_http_backoff(struct reg_client *c, int retry, long retry_after)
{
    double ms = (double)c->o.retry_base_ms;
    for (int i = 1; i < retry && ms < (double)c->o.retry_max_ms; i++)
        ms *= 2;
    if (ms > (double)c->o.retry_max_ms)
        ms = (double)c->o.retry_max_ms;
    /* "Equal jitter": half fixed, half random, so retries spread out but
     * never come back immediately. */
    ms = ms / 2 + rand01(c) * ms / 2;
    if (retry_after >= 0 && (double)retry_after * 1000.0 > ms)
        ms = (double)retry_after * 1000.0;
    if (ms > (double)c->o.retry_max_ms)
        ms = (double)c->o.retry_max_ms;
    return ms / 1000.0;
}

int reg_http_retryable(long status, CURLcode cc)
{
    switch (cc) {
    case CURLE_OK:
        break;
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
        return 1;
    default:
        return 0;
    }
    return status == 408 || (status >= 500 && status <= 599 && status != 501);
}

/* ---- verdicts ---- */

enum reg_class reg_http_curl_class(CURLcode cc)
{
    switch (cc) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        return REG_TLS;
    default:
        return REG_NETWORK;
    }
}

static void set_msg(struct reg_req *q, const char *detail)
{
    /* Bounded pieces: a long URL must not push the reason out of the line. */
    snprintf(q->msg, sizeof(q->msg), "%.150s at %.120s: %.230s", q->what, q->r->url, detail);
}

void reg_http_fail(struct reg_req *q, enum reg_class cls, const char *fmt, ...)
{
    char detail[REG_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    q->cls = cls;
    set_msg(q, detail);
}

static int status_ok(const struct reg_req *q)
{
    for (int i = 0; i < 4 && q->ok_status[i]; i++)
        if (q->ok_status[i] == q->status)
            return 1;
    return 0;
}

void reg_http_classify(struct reg_req *q)
{
    if (q->cc != CURLE_OK) {
        if (q->resp_overflow) {
            reg_http_fail(q, REG_TOO_LARGE, "answer larger than %zu bytes", q->max_body);
            return;
        }
        if (q->cc == CURLE_TOO_MANY_REDIRECTS) {
            /* The answer will not change on a retry: a registry or CDN misconfigured. */
            reg_http_fail(q, REG_PROTOCOL, "more than %d redirects (a redirect loop)",
                          REG_HTTP_MAX_REDIRS);
            return;
        }
        reg_http_fail(q, reg_http_curl_class(q->cc), "%s", curl_easy_strerror(q->cc));
        return;
    }
    if (status_ok(q)) {
        q->cls = REG_OK;
        q->msg[0] = '\0';
        return;
    }
    char code[300];
    int toomany = 0;
    reg_parse_errors(q->resp.data, q->resp.len, code, sizeof(code), &toomany);
    enum reg_class cls;
    long s = q->status;
    if (s == 404)
        cls = REG_NOT_FOUND;
    else if (s == 401)
        cls = q->insufficient_scope ? REG_DENIED : REG_UNAUTHORIZED;
    else if (s == 403)
        cls = REG_DENIED;
    else if (s == 429)
        cls = REG_RATE_LIMITED;
    else if (s == 413)
        cls = REG_TOO_LARGE;
    else if (s == 408)
        cls = REG_NETWORK;
    else if (s >= 500 && s <= 599)
        cls = REG_SERVER;
    else
        cls = REG_PROTOCOL;
    if (cls == REG_RATE_LIMITED && q->h.retry_after >= 0)
        reg_http_fail(q, cls, "HTTP %ld%s%s (retry after %ld s)", s, code[0] ? " " : "", code,
                      q->h.retry_after);
    else
        reg_http_fail(q, cls, "HTTP %ld%s%s", s, code[0] ? " " : "", code);
}

/* ---- the exchange ---- */

static void authorize(struct reg_req *q);
static void complete(struct reg_req *q);

static size_t on_header(char *p, size_t sz, size_t nm, void *arg)
{
    struct reg_req *q = arg;
    reg_hdrs_line(&q->h, p, sz * nm);
    return sz * nm;
}

static size_t on_body(char *p, size_t sz, size_t nm, void *arg)
{
    struct reg_req *q = arg;
    size_t n = sz * nm;
    if (q->max_body == 0)
        return n;
    if (buf_append(&q->resp, p, n) != 0) {
        q->resp_overflow = 1;
        return 0;
    }
    return n;
}


static void on_done(CURL *easy, CURLcode cc, void *arg);

/* Free a header list, wiping the Authorization line libcurl copied. */
static void free_headers(struct curl_slist *hl)
{
    for (struct curl_slist *h = hl; h; h = h->next)
        if (strncasecmp(h->data, "Authorization:", 14) == 0)
            explicit_bzero(h->data, strlen(h->data));
    curl_slist_free_all(hl);
}

/* Append line to *hl. When libcurl cannot (out of memory) the list built so far
 * is freed, any Authorization line in it wiped, and -1 returned: a lost list
 * would leak and a shorter one send the request without its headers. */
static int add_header(struct curl_slist **hl, const char *line)
{
    struct curl_slist *longer = curl_slist_append(*hl, line);
    if (!longer) {
        free_headers(*hl);
        *hl = NULL;
        return -1;
    }
    *hl = longer;
    return 0;
}

/* The request's header list (owned: free_headers), or NULL when libcurl cannot
 * build it. A Bearer token goes only with a request to the registry's origin
 * (same). */
static struct curl_slist *request_headers(const struct reg_req *q, int same)
{
    struct curl_slist *hl = NULL;
    /* No 100-continue round trip: registries answer early errors anyway. */
    int rc = add_header(&hl, "Expect:");
    if (rc == 0 && q->accept) {
        char *a = xasprintf("Accept: %s", q->accept);
        rc = add_header(&hl, a);
        free(a);
    }
    if (rc == 0 && q->content_type) {
        char *ct = xasprintf("Content-Type: %s", q->content_type);
        rc = add_header(&hl, ct);
        free(ct);
    }
    if (rc == 0 && q->extra_header)
        rc = add_header(&hl, q->extra_header);
    if (rc == 0 && q->token && same) {
        char *ah = xasprintf("Authorization: Bearer %s", q->token);
        rc = add_header(&hl, ah);
        explicit_bzero(ah, strlen(ah));
        free(ah);
    }
    return rc == 0 ? hl : NULL;
}

static void send_now(struct reg_req *q)
{
    struct reg_client *c = q->r->c;
    struct reg_registry *r = q->r;
    CURL *easy = curl_easy_init();
    if (!easy) {
        reg_http_fail(q, REG_NETWORK, "libcurl cannot create a handle");
        complete(q);
        return;
    }
    reg_hdrs_free(&q->h);
    buf_free(&q->resp);
    buf_init(&q->resp, q->max_body ? q->max_body : 1);
    q->resp_overflow = 0;
    q->status = 0;
    q->cc = CURLE_OK;
    curl_easy_setopt(easy, CURLOPT_URL, q->url);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, c->user_agent);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    /* Never follow a redirect from https down to plain http. */
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, r->plain ? "http,https" : "https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, q->follow ? 1L : 0L);
    curl_easy_setopt(easy, CURLOPT_MAXREDIRS, (long)REG_HTTP_MAX_REDIRS);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, c->o.connect_timeout_ms);
    /* HTTP/1.1 for everything: a paused HTTP/2 stream keeps buffering up to its
     * window in curl 7.88 (32 MiB), and its HTTP/2 multiplexing has known stalls
     * (fixed in 8.x); over TLS to docker-registry it also gave sporadic 400s on
     * small requests. Connections are still reused (keep-alive). */
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    if (q->blob) {
        curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, c->o.low_speed_bytes);
        curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, c->o.low_speed_secs);
    } else {
        curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, c->o.request_timeout_ms);
    }
    if (c->ca_file)
        curl_easy_setopt(easy, CURLOPT_CAINFO, c->ca_file);
    if (c->interface)
        curl_easy_setopt(easy, CURLOPT_INTERFACE, c->interface);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, q);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, q);

    /* Credentials only for the registry's own origin: a Location or Link on
     * another host gets none (libcurl would drop them on redirects too). */
    int same = reg_parse_same_origin(q->url, r->url);
    struct curl_slist *hl = request_headers(q, same);
    if (!hl) {
        curl_easy_cleanup(easy);
        reg_http_fail(q, REG_NETWORK,
                      "libcurl cannot build the request's headers (out of memory)");
        complete(q);
        return;
    }
    q->sent_basic = 0;
    if (!q->token && same && r->basic && r->cr.username) { /* else a Bearer token is in hl */
        curl_easy_setopt(easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(easy, CURLOPT_USERNAME, r->cr.username);
        curl_easy_setopt(easy, CURLOPT_PASSWORD, r->cr.password);
        q->sent_basic = 1;
    }
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, hl);

    if (strcmp(q->method, "HEAD") == 0) {
        curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    } else if (strcmp(q->method, "GET") != 0) {
        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, q->method);
        if (!q->stream) {
            curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
            curl_easy_setopt(easy, CURLOPT_POSTFIELDS, q->has_body && q->body ? q->body : "");
        }
    }
    if (q->setup)
        q->setup(q, easy, q->arg);

    q->attempts++;
    c->stats.requests++;
    if (q->manifest_get) {
        c->stats.manifest_gets++;
        if (c->o.hooks.on_manifest_get)
            c->o.hooks.on_manifest_get(r, q->hook_repo, q->hook_ref, c->o.hooks.arg);
    }
    if (q->manifest_head)
        c->stats.manifest_heads++;
    struct err e;
    if (evcurl_add(c->ec, easy, on_done, q, &e) != 0) {
        free_headers(hl);
        curl_easy_cleanup(easy);
        reg_http_fail(q, REG_NETWORK, "%s", e.msg);
        complete(q);
        return;
    }
    q->easy = easy;
    q->hl = hl;
}

static void cancelled(struct reg_req *q)
{
    reg_http_fail(q, REG_NETWORK, "cancelled");
    complete(q);
}

static void on_token(const struct auth_outcome *out, void *arg)
{
    struct reg_req *q = arg;
    if (q->cancelled) {
        cancelled(q);
        return;
    }
    if (out->token) {
        creds_free_secret(&q->token);
        q->token = xstrdup(out->token);
        send_now(q);
        return;
    }
    /* The token endpoint failed: its status tells the story. */
    q->status = out->status;
    q->cc = out->curl;
    if (out->status == 401 && q->r->cr.username)
        q->r->creds_refused = 1;
    enum reg_class cls = REG_UNAUTHORIZED;
    if (out->curl != CURLE_OK)
        cls = reg_http_curl_class(out->curl);
    else if (out->status == 403)
        cls = REG_DENIED;
    else if (out->status == 429)
        cls = REG_RATE_LIMITED;
    else if (out->status >= 500)
        cls = REG_SERVER;
    else if (out->status == 200)
        cls = REG_PROTOCOL;
    if (reg_http_retryable(out->status, out->curl) &&
        q->attempts <= q->r->c->o.max_retries && (!q->may_retry || q->may_retry(q, q->arg))) {
        /* Count the failed token fetch as an attempt, then back off. */
        q->attempts++;
        q->r->c->stats.retries++;
        ev_timer_set(&q->timer, reg_http_backoff(q->r->c, q->attempts, -1), 0.);
        ev_timer_start(q->r->c->loop, &q->timer);
        return;
    }
    reg_http_fail(q, cls, "%s", out->msg);
    complete(q);
}

static void authorize(struct reg_req *q)
{
    struct reg_registry *r = q->r;
    struct reg_client *c = r->c;
    if (!r->bearer) {
        send_now(q);
        return;
    }
    const char *tok = auth_cache_lookup(c->auth, r->auth_key, q->scope);
    if (tok) {
        creds_free_secret(&q->token);
        q->token = xstrdup(tok);
        send_now(q);
        return;
    }
    struct auth_challenge ch = {AUTH_SCHEME_BEARER, r->realm, r->service, NULL, NULL};
    struct err e;
    if (auth_cache_fetch(c->auth, r->auth_key, &ch, q->scope, &r->cr, r->plain, on_token, q, &e) !=
        0) {
        reg_http_fail(q, REG_UNAUTHORIZED, "%s", e.msg);
        complete(q);
        return;
    }
    c->stats.token_fetches = auth_cache_fetches(c->auth);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct reg_req *q = w->data;
    if (q->cancelled)
        cancelled(q);
    else
        authorize(q);
}

/* Add the challenge's scope(s) to ours if missing (e.g. a registry asking
 * for more than we guessed). */
static void merge_scope(struct reg_req *q, const char *scope)
{
    const char *p = scope;
    while (p && *p) {
        while (*p == ' ')
            p++;
        size_t k = strcspn(p, " ");
        if (k) {
            int have = 0;
            const char *s = q->scope;
            while (*s) {
                while (*s == ' ')
                    s++;
                size_t m = strcspn(s, " ");
                if (m == k && strncmp(s, p, k) == 0)
                    have = 1;
                s += m;
            }
            if (!have) {
                char *ns = xasprintf("%s %.*s", q->scope, (int)k, p);
                free(q->scope);
                q->scope = ns;
            }
        }
        p += k;
    }
}

/* A 401: learn the challenge and try once more. 1 if a retry is under way. */
static int answer_challenge(struct reg_req *q)
{
    struct reg_registry *r = q->r;
    if (q->auth_tries >= 1)
        return 0;
    struct auth_challenges chs;
    struct err e;
    if (auth_parse_challenges(q->h.www_auth.data ? q->h.www_auth.data : "", q->h.www_auth.len,
                              &chs, &e) < 0) {
        auth_challenges_free(&chs);
        return 0;
    }
    const struct auth_challenge *ch = auth_pick(&chs);
    int retry = 0;
    if (ch && ch->scheme == AUTH_SCHEME_BEARER) {
        if (ch->error && strcmp(ch->error, "insufficient_scope") == 0)
            q->insufficient_scope = 1;
        if (q->token)
            auth_cache_invalidate(r->c->auth, r->auth_key, q->scope, q->token);
        creds_free_secret(&q->token);
        r->bearer = 1;
        free(r->realm);
        free(r->service);
        r->realm = xstrdup(ch->realm);
        r->service = ch->service ? xstrdup(ch->service) : NULL;
        if (ch->scope)
            merge_scope(q, ch->scope);
        retry = 1;
    } else if (ch && ch->scheme == AUTH_SCHEME_BASIC && r->cr.username && !r->basic) {
        r->basic = 1;
        retry = 1;
    }
    auth_challenges_free(&chs);
    if (!retry)
        return 0;
    if (q->may_retry && !q->may_retry(q, q->arg))
        return 0;
    q->auth_tries++;
    authorize(q);
    return 1;
}

static void report_ratelimit(struct reg_req *q)
{
    struct reg_client *c = q->r->c;
    if (c->o.hooks.on_ratelimit && (ratelimit_present(&q->h.rl) || q->status == 429))
        c->o.hooks.on_ratelimit(q->r, &q->h.rl, q->status, c->o.hooks.arg);
}

static void on_done(CURL *easy, CURLcode cc, void *arg)
{
    struct reg_req *q = arg;
    struct reg_client *c = q->r->c;
    long status = 0;
    char *where = NULL;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(easy, CURLINFO_EFFECTIVE_URL, &where);
    /* Only the registry's own origin may ask for its credentials: a 401 from
     * where a redirect led (a CDN) names a realm of its own choosing. */
    int foreign = !where || !reg_parse_same_origin(where, q->r->url);
    curl_easy_cleanup(easy);
    free_headers(q->hl);
    q->easy = NULL;
    q->hl = NULL;
    q->status = status;
    q->cc = cc;
    report_ratelimit(q);
    if (q->cancelled) {
        cancelled(q);
        return;
    }
    if (cc == CURLE_OK && status == 401 && foreign) {
        reg_http_fail(q, REG_UNAUTHORIZED,
                      "HTTP 401 from another origin after a redirect (its challenge is not "
                      "answered)");
        complete(q);
        return;
    }
    if (cc == CURLE_OK && status == 401 && answer_challenge(q))
        return;
    if (cc == CURLE_OK && status == 401 && q->sent_basic)
        q->r->creds_refused = 1;
    /* 429 is a budget event for the caller, never retried here. */
    if (status != 429 && reg_http_retryable(status, cc) && q->attempts <= c->o.max_retries &&
        (!q->may_retry || q->may_retry(q, q->arg))) {
        c->stats.retries++;
        double d = reg_http_backoff(c, q->attempts, q->h.retry_after);
        log_debug("retry in %.2fs: %s at %s: status=%ld curl=%d", d, q->what, q->r->url, status,
                  (int)cc);
        ev_timer_set(&q->timer, d, 0.);
        ev_timer_start(c->loop, &q->timer);
        return;
    }
    reg_http_classify(q);
    complete(q);
}

static void complete(struct reg_req *q)
{
    creds_free_secret(&q->token);
    q->done(q, q->arg);
}

struct reg_req *reg_http_new(struct reg_registry *r, const char *method, char *url,
                             const char *scope, const char *what, reg_req_fn done, void *arg)
{
    struct reg_req *q = xcalloc(1, sizeof(*q));
    q->r = r;
    q->method = method;
    q->url = url;
    q->scope = xstrdup(scope ? scope : "");
    q->what = xstrdup(what);
    q->done = done;
    q->arg = arg;
    q->ok_status[0] = 200;
    reg_hdrs_init(&q->h);
    buf_init(&q->resp, 1);
    ev_timer_init(&q->timer, on_timer, 0., 0.);
    q->timer.data = q;
    return q;
}

void reg_http_start(struct reg_req *q)
{
    authorize(q);
}

void reg_http_cancel(struct reg_req *q)
{
    if (q->cancelled)
        return;
    q->cancelled = 1;
    if (q->easy) {
        evcurl_cancel(q->r->c->ec, q->easy);
    } else if (ev_is_active(&q->timer)) {
        /* Waiting to retry: give up at the next loop iteration. */
        ev_timer_stop(q->r->c->loop, &q->timer);
        ev_timer_set(&q->timer, 0., 0.);
        ev_timer_start(q->r->c->loop, &q->timer);
    }
    /* Waiting for a token: on_token sees the flag. */
}

void reg_http_reset(struct reg_req *q)
{
    reg_hdrs_free(&q->h);
    buf_free(&q->resp);
    q->status = 0;
    q->cc = CURLE_OK;
    q->cls = REG_OK;
    q->msg[0] = '\0';
    q->attempts = 0;
    q->auth_tries = 0;
    q->insufficient_scope = 0;
    q->resp_overflow = 0;
    q->cancelled = 0;
}

void reg_http_free(struct reg_req *q)
{
    if (!q)
        return;
    ev_timer_stop(q->r->c->loop, &q->timer);
    creds_free_secret(&q->token);
    reg_hdrs_free(&q->h);
    buf_free(&q->resp);
    free(q->url);
    free(q->scope);
    free(q->what);
    free(q);
}

/* ---- operations ---- */

void reg_http_op_init(struct reg_op *op, struct reg_client *c, reg_done_fn done, void *arg)
{
    memset(op, 0, sizeof(*op));
    op->c = c;
    op->done = done;
    op->arg = arg;
    op->res.length = -1;
    op->res.retry_after = -1;
    ratelimit_init(&op->res.rl);
    c->busy++;
}

void reg_http_op_result(struct reg_op *op, const struct reg_req *q)
{
    struct reg_result *res = &op->res;
    res->cls = q->cls;
    res->status = q->status;
    snprintf(res->msg, sizeof(res->msg), "%s", q->msg);
    res->content_type = q->h.content_type;
    res->length = q->h.content_length;
    res->rl = q->h.rl;
    res->retry_after = q->h.retry_after;
    res->attempts += q->attempts;
    if (q->h.digest[0])
        res->digest = q->h.digest;
}

struct later {
    struct reg_op *op;
    void (*release)(void *);
    void *obj;
};

static void on_later(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct later *l = w->data;
    struct reg_op *op = l->op;
    void (*release)(void *) = l->release;
    void *obj = l->obj;
    free(l);
    reg_http_op_finish(op);
    release(obj);
}

void reg_http_op_fail_later(struct reg_op *op, enum reg_class cls, void (*release)(void *),
                            void *obj, const char *fmt, ...)
{
    op->res.cls = cls;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op->res.msg, sizeof(op->res.msg), fmt, ap);
    va_end(ap);
    struct later *l = xcalloc(1, sizeof(*l));
    l->op = op;
    l->release = release;
    l->obj = obj;
    ev_timer_init(&op->later, on_later, 0., 0.);
    op->later.data = l;
    ev_timer_start(op->c->loop, &op->later);
}

void reg_http_op_finish(struct reg_op *op)
{
    op->c->busy--;
    op->done(&op->res, op->arg);
}
