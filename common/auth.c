/* auth: see auth.h. */
#include "auth.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "log.h"
#include "xalloc.h"

#define TOKEN_ANSWER_MAX (256L << 10)
#define DEFAULT_EXPIRES 60
#define PARAM_MAX 4096

/* ---- WWW-Authenticate ---- */

static int is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t';
}

struct lexer {
    const char *s;
    size_t n, i;
};

static void skip_ws(struct lexer *lx)
{
    while (lx->i < lx->n && is_ws(lx->s[lx->i]))
        lx->i++;
}

static void skip_ws_commas(struct lexer *lx)
{
    while (lx->i < lx->n && (is_ws(lx->s[lx->i]) || lx->s[lx->i] == ','))
        lx->i++;
}

static size_t read_token(struct lexer *lx)
{
    size_t st = lx->i;
    while (lx->i < lx->n && is_tchar(lx->s[lx->i]))
        lx->i++;
    return lx->i - st;
}

/* A quoted-string (at the opening quote) or a token, unescaped into *out. */
static int read_value(struct lexer *lx, char **out, struct err *e)
{
    struct buf b = BUF_INIT(PARAM_MAX);
    if (lx->i < lx->n && lx->s[lx->i] == '"') {
        size_t start = lx->i++;
        for (;;) {
            if (lx->i >= lx->n) {
                buf_free(&b);
                return err_set(e, "WWW-Authenticate: unterminated quoted string at offset %zu",
                               start);
            }
            char c = lx->s[lx->i++];
            if (c == '"')
                break;
            if (c == '\\' && lx->i < lx->n)
                c = lx->s[lx->i++];
            if ((unsigned char)c < 0x20 && c != '\t') {
                buf_free(&b);
                return err_set(e, "WWW-Authenticate: control character in quoted string");
            }
            if (buf_append(&b, &c, 1) != 0) {
                buf_free(&b);
                return err_set(e, "WWW-Authenticate: parameter longer than %d bytes", PARAM_MAX);
            }
        }
    } else {
        /* Unquoted: up to the next comma or blank (lenient: servers have
         * been seen sending unquoted URLs). */
        size_t st = lx->i;
        while (lx->i < lx->n && lx->s[lx->i] != ',' && !is_ws(lx->s[lx->i]) &&
               (unsigned char)lx->s[lx->i] >= 0x20)
            lx->i++;
        size_t k = lx->i - st;
        if (k == 0)
            return err_set(e, "WWW-Authenticate: missing value at offset %zu", st);
        if (buf_append(&b, lx->s + st, k) != 0) {
            buf_free(&b);
            return err_set(e, "WWW-Authenticate: parameter longer than %d bytes", PARAM_MAX);
        }
    }
    *out = buf_steal(&b);
    return 0;
}

static void set_param(struct auth_challenge *ch, const char *name, size_t nlen, char *val)
{
    char **slot = NULL;
    if (nlen == 5 && strncasecmp(name, "realm", 5) == 0)
        slot = &ch->realm;
    else if (nlen == 7 && strncasecmp(name, "service", 7) == 0)
        slot = &ch->service;
    else if (nlen == 5 && strncasecmp(name, "scope", 5) == 0)
        slot = &ch->scope;
    else if (nlen == 5 && strncasecmp(name, "error", 5) == 0)
        slot = &ch->error;
    if (!slot) {
        free(val);
        return;
    }
    free(*slot); /* a repeated parameter: the last one wins */
    *slot = val;
}

static void challenge_free(struct auth_challenge *ch)
{
    free(ch->realm);
    free(ch->service);
    free(ch->scope);
    free(ch->error);
    memset(ch, 0, sizeof(*ch));
}

void auth_challenges_free(struct auth_challenges *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n; i++)
        challenge_free(&c->v[i]);
    c->n = 0;
}

int auth_parse_challenges(const char *value, size_t n, struct auth_challenges *out, struct err *e)
{
    memset(out, 0, sizeof(*out));
    struct lexer lx = {value, n, 0};
    struct auth_challenge *cur = NULL;
    struct auth_challenge spill; /* parameters of challenges past the maximum */
    memset(&spill, 0, sizeof(spill));
    for (;;) {
        skip_ws_commas(&lx);
        if (lx.i >= lx.n)
            break;
        size_t st = lx.i;
        size_t tl = read_token(&lx);
        if (tl == 0) {
            challenge_free(&spill);
            return err_set(e, "WWW-Authenticate: unexpected '%c' at offset %zu",
                           (value[st] >= 0x20 && value[st] < 0x7f) ? value[st] : '?', st);
        }
        skip_ws(&lx);
        int eq = lx.i < lx.n && lx.s[lx.i] == '=';
        int eqeq = eq && lx.i + 1 < lx.n && lx.s[lx.i + 1] == '=';
        if (cur && eq && !eqeq) {
            lx.i++;
            skip_ws(&lx);
            if (lx.i >= lx.n || lx.s[lx.i] == ',')
                continue; /* "abc=": a token68 with one pad character */
            char *val = NULL;
            if (read_value(&lx, &val, e) != 0) {
                challenge_free(&spill);
                return -1;
            }
            set_param(cur, value + st, tl, val);
            continue;
        }
        if (cur && eqeq) {
            while (lx.i < lx.n && lx.s[lx.i] == '=')
                lx.i++; /* token68 ("Negotiate abc=="): not used */
            continue;
        }
        /* Anything else starts a new challenge with this scheme. */
        if (out->n < AUTH_CHALLENGES_MAX) {
            cur = &out->v[out->n++];
        } else {
            challenge_free(&spill);
            cur = &spill;
        }
        if (tl == 5 && strncasecmp(value + st, "basic", 5) == 0)
            cur->scheme = AUTH_SCHEME_BASIC;
        else if (tl == 6 && strncasecmp(value + st, "bearer", 6) == 0)
            cur->scheme = AUTH_SCHEME_BEARER;
        else
            cur->scheme = AUTH_SCHEME_OTHER;
    }
    challenge_free(&spill);
    return out->n;
}

const struct auth_challenge *auth_pick(const struct auth_challenges *c)
{
    for (int i = 0; i < c->n; i++)
        if (c->v[i].scheme == AUTH_SCHEME_BEARER && c->v[i].realm && *c->v[i].realm)
            return &c->v[i];
    for (int i = 0; i < c->n; i++)
        if (c->v[i].scheme == AUTH_SCHEME_BASIC)
            return &c->v[i];
    return NULL;
}

/* ---- token answers ---- */

int auth_parse_token(const char *json, size_t n, char **token, long *expires_in, struct err *e)
{
    json_error_t je;
    json_t *root = json_loadb(json, n, 0, &je);
    int rc = -1;
    if (!json_is_object(root)) {
        /* Not je.text: jansson quotes the input there, which may be a secret. */
        err_set(e, "token answer is not a JSON object (line %d, column %d)", je.line,
                je.column);
        goto out;
    }
    json_t *t = json_object_get(root, "token");
    if (!json_is_string(t) || json_string_length(t) == 0)
        t = json_object_get(root, "access_token");
    if (!json_is_string(t) || json_string_length(t) == 0) {
        err_set(e, "token answer has no \"token\" or \"access_token\" string");
        goto out;
    }
    const char *tv = json_string_value(t);
    for (size_t i = 0; i < json_string_length(t); i++) {
        /* It goes into an HTTP header: refuse anything that could split it. */
        if ((unsigned char)tv[i] <= 0x20 || (unsigned char)tv[i] >= 0x7f) {
            err_set(e, "token answer: token holds a character not allowed in a header");
            goto out;
        }
    }
    long exp = DEFAULT_EXPIRES;
    json_t *x = json_object_get(root, "expires_in");
    if (json_is_integer(x) && json_integer_value(x) > 0)
        exp = json_integer_value(x) > 86400 * 365 ? 86400 * 365 : (long)json_integer_value(x);
    else if (json_is_real(x) && json_real_value(x) >= 1 && json_real_value(x) < 86400 * 365)
        exp = (long)json_real_value(x);
    *token = xstrdup(tv);
    *expires_in = exp;
    rc = 0;
out:
    if (root) {
        json_t *t1 = json_object_get(root, "token"), *t2 = json_object_get(root, "access_token");
        if (json_is_string(t1))
            explicit_bzero((char *)json_string_value(t1), json_string_length(t1));
        if (json_is_string(t2))
            explicit_bzero((char *)json_string_value(t2), json_string_length(t2));
        json_decref(root);
    }
    return rc;
}

static void url_escape(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || c == ':' || c == '/' || c == ',') {
            buf_append(b, s, 1);
        } else {
            char enc[3] = {'%', hex[c >> 4], hex[c & 15]};
            buf_append(b, enc, 3);
        }
    }
}

int auth_token_url(const char *realm, const char *service, const char *scopes, char **out,
                   struct err *e)
{
    if (!realm || (strncasecmp(realm, "https://", 8) != 0 && strncasecmp(realm, "http://", 7) != 0))
        return err_set(e, "token realm \"%.100s\" is not an http(s) URL", realm ? realm : "");
    for (const char *p = realm; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '#')
            return err_set(e, "token realm \"%.100s\" holds a character not allowed in a URL",
                           realm);
    struct buf b = BUF_INIT(64 << 10);
    buf_puts(&b, realm);
    char sep = strchr(realm, '?') ? '&' : '?';
    if (service && *service) {
        buf_printf(&b, "%cservice=", sep);
        url_escape(&b, service);
        sep = '&';
    }
    const char *p = scopes ? scopes : "";
    while (*p) {
        while (*p == ' ')
            p++;
        size_t k = strcspn(p, " ");
        if (k) {
            char *one = xstrndup(p, k);
            buf_printf(&b, "%cscope=", sep);
            url_escape(&b, one);
            free(one);
            sep = '&';
        }
        p += k;
    }
    if (!b.data || b.len >= b.max - 1) {
        buf_free(&b);
        return err_set(e, "token request URL too long");
    }
    *out = buf_steal(&b);
    return 0;
}

/* ---- cache ---- */

struct waiter {
    auth_token_fn cb;
    void *arg;
    struct waiter *next;
};

struct entry {
    char *key, *scope;
    char *token;        /* NULL until fetched */
    double valid_until; /* refresh point (before the real expiry) */
    int fetching;
    struct waiter *waiters;
    struct entry *next;
    /* the fetch in flight */
    struct auth_cache *cache;
    CURL *easy;
    struct curl_slist *headers;
    struct buf body;
    char *realm_shown; /* realm for messages */
};

struct auth_cache {
    struct evcurl *ec;
    char *user_agent, *ca_file;
    long connect_timeout_ms, timeout_ms;
    struct entry *entries;
    unsigned long fetches;
};

struct auth_cache *auth_cache_new(struct evcurl *ec, const struct auth_http_opts *o)
{
    struct auth_cache *c = xcalloc(1, sizeof(*c));
    c->ec = ec;
    c->user_agent = xstrdup(o && o->user_agent ? o->user_agent : "hubsync/1");
    c->ca_file = o && o->ca_file ? xstrdup(o->ca_file) : NULL;
    c->connect_timeout_ms = o && o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 10000;
    c->timeout_ms = o && o->timeout_ms > 0 ? o->timeout_ms : 60000;
    return c;
}


void auth_cache_free(struct auth_cache *c)
{
    if (!c)
        return;
    struct entry *en = c->entries;
    while (en) {
        struct entry *next = en->next;
        if (en->fetching)
            log_error("auth cache freed with a token fetch in flight (%s)", en->key);
        creds_free_secret(&en->token);
        free(en->key);
        free(en->scope);
        free(en->realm_shown);
        buf_free(&en->body);
        free(en);
        en = next;
    }
    free(c->user_agent);
    free(c->ca_file);
    free(c);
}

unsigned long auth_cache_fetches(const struct auth_cache *c)
{
    return c->fetches;
}

static struct entry *find(struct auth_cache *c, const char *key, const char *scope, int create)
{
    for (struct entry *en = c->entries; en; en = en->next)
        if (strcmp(en->key, key) == 0 && strcmp(en->scope, scope) == 0)
            return en;
    if (!create)
        return NULL;
    struct entry *en = xcalloc(1, sizeof(*en));
    en->key = xstrdup(key);
    en->scope = xstrdup(scope);
    en->cache = c;
    en->next = c->entries;
    c->entries = en;
    return en;
}

const char *auth_cache_lookup(struct auth_cache *c, const char *key, const char *scope)
{
    struct entry *en = find(c, key, scope, 0);
    if (!en || !en->token || ev_time() >= en->valid_until)
        return NULL;
    return en->token;
}

void auth_cache_invalidate(struct auth_cache *c, const char *key, const char *scope,
                           const char *token)
{
    struct entry *en = find(c, key, scope, 0);
    if (en && en->token && token && strcmp(en->token, token) == 0)
        creds_free_secret(&en->token);
}

static size_t on_body(char *p, size_t sz, size_t nm, void *arg)
{
    struct entry *en = arg;
    size_t n = sz * nm;
    if (buf_append(&en->body, p, n) != 0)
        return 0; /* too large: fail the transfer */
    return n;
}

static void fetch_done(CURL *easy, CURLcode cc, void *arg)
{
    struct entry *en = arg;
    long status = 0;
    char msg[300] = "";
    char *token = NULL;
    long expires = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK) {
        snprintf(msg, sizeof(msg), "token request to %s failed: %s", en->realm_shown,
                 cc == CURLE_WRITE_ERROR ? "answer too large" : curl_easy_strerror(cc));
    } else if (status != 200) {
        snprintf(msg, sizeof(msg), "token request to %s: HTTP %ld%s", en->realm_shown, status,
                 status == 401 ? " (credentials refused)" : "");
    } else {
        struct err e;
        if (auth_parse_token(en->body.data ? en->body.data : "", en->body.len, &token, &expires,
                             &e) != 0)
            snprintf(msg, sizeof(msg), "token request to %s: %.200s", en->realm_shown, e.msg);
    }
    if (en->body.data)
        explicit_bzero(en->body.data, en->body.len);
    buf_free(&en->body);
    curl_slist_free_all(en->headers);
    en->headers = NULL;
    curl_easy_cleanup(easy);
    en->easy = NULL;
    en->fetching = 0;
    if (token) {
        creds_free_secret(&en->token);
        en->token = token;
        /* Refresh a tenth of the lifetime early (1..30 s), so a request never
         * leaves with a token about to lapse. */
        double margin = expires / 10.0;
        if (margin < 1)
            margin = 1;
        if (margin > 30)
            margin = 30;
        en->valid_until = ev_time() + expires - margin;
    }
    struct auth_outcome o = {token, status, cc, token ? "" : msg};
    struct waiter *w = en->waiters;
    en->waiters = NULL;
    while (w) {
        struct waiter *next = w->next;
        w->cb(&o, w->arg);
        free(w);
        w = next;
    }
}

int auth_cache_fetch(struct auth_cache *c, const char *key, const struct auth_challenge *ch,
                     const char *scope, const struct creds *cr, int allow_plain,
                     auth_token_fn cb, void *arg, struct err *e)
{
    if (!ch || ch->scheme != AUTH_SCHEME_BEARER)
        return err_set(e, "%s: not a Bearer challenge", key);
    char *url = NULL;
    if (auth_token_url(ch->realm, ch->service, scope, &url, e) != 0)
        return err_prefix(e, "%s", key);
    struct entry *en = find(c, key, scope, 1);
    struct waiter *w = xcalloc(1, sizeof(*w));
    w->cb = cb;
    w->arg = arg;
    w->next = en->waiters;
    en->waiters = w;
    if (en->fetching) {
        free(url);
        return 0;
    }
    int has_creds = cr && cr->username && cr->password;
    int https = strncasecmp(ch->realm, "https://", 8) == 0;
    if (has_creds && !https && !allow_plain) {
        en->waiters = w->next;
        free(w);
        free(url);
        return err_set(e, "%s: refusing to send credentials to plain-http token realm %.100s",
                       key, ch->realm);
    }
    CURL *easy = curl_easy_init();
    struct curl_slist *headers = easy ? curl_slist_append(NULL, "Accept: application/json") : NULL;
    if (!headers) {
        curl_easy_cleanup(easy);
        en->waiters = w->next;
        free(w);
        free(url);
        return err_set(e, "%s: libcurl cannot create a request (out of memory)", key);
    }
    free(en->realm_shown);
    en->realm_shown = xstrndup(ch->realm, 200);
    buf_init(&en->body, TOKEN_ANSWER_MAX);
    en->headers = headers;
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, en->headers);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, c->user_agent);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, en);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1); /* as reg_http.c */
    if (c->ca_file)
        curl_easy_setopt(easy, CURLOPT_CAINFO, c->ca_file);
    if (has_creds) {
        curl_easy_setopt(easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(easy, CURLOPT_USERNAME, cr->username);
        curl_easy_setopt(easy, CURLOPT_PASSWORD, cr->password);
    }
    free(url);
    if (evcurl_add(c->ec, easy, fetch_done, en, e) != 0) {
        curl_slist_free_all(en->headers);
        en->headers = NULL;
        buf_free(&en->body);
        curl_easy_cleanup(easy);
        en->waiters = w->next;
        free(w);
        return err_prefix(e, "%s", key);
    }
    en->easy = easy;
    en->fetching = 1;
    c->fetches++;
    return 0;
}
