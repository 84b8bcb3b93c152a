/* auth: registry authentication (WWW-Authenticate challenges and bearer tokens).
 *
 * Parsing: RFC 7235 challenges as registries send them, e.g.
 *   Bearer realm="https://auth.docker.io/token",service="registry.docker.io",
 *          scope="repository:library/redis:pull"
 * with quoted strings (commas and escaped quotes inside), several challenges
 * in one header (or several headers joined with ", "), Basic, and schemes
 * we do not speak (kept as AUTH_SCHEME_OTHER).
 *
 * Tokens: the distribution token protocol. GET <realm>?service=..&scope=..
 * (one scope= per scope), anonymously or with HTTP Basic credentials; the
 * answer's "token" (or "access_token") with "expires_in" (60 s when absent).
 * The cache keeps one token per (registry key, scope set) and refreshes it
 * before it expires; concurrent requests for the same entry share one fetch.
 * Tokens and credentials never appear in logs or error messages. */
#ifndef HUBSYNC_AUTH_H
#define HUBSYNC_AUTH_H

#include <stddef.h>

#include "creds.h"
#include "err.h"
#include "evcurl.h"

enum auth_scheme { AUTH_SCHEME_OTHER = 0, AUTH_SCHEME_BASIC, AUTH_SCHEME_BEARER };

struct auth_challenge {
    enum auth_scheme scheme;
    char *realm;   /* owned, NULL if absent */
    char *service; /* owned, NULL if absent */
    char *scope;   /* owned, NULL if absent; may hold several space-separated scopes */
    char *error;   /* owned, NULL if absent (e.g. "insufficient_scope") */
};

#define AUTH_CHALLENGES_MAX 8

struct auth_challenges {
    struct auth_challenge v[AUTH_CHALLENGES_MAX];
    int n;
};

/* Parse a WWW-Authenticate value (n bytes). Fills out (free with
 * auth_challenges_free, also after an error) and returns the number of
 * challenges, or -1 with a message on malformed input. Challenges past
 * AUTH_CHALLENGES_MAX are ignored. */
int auth_parse_challenges(const char *value, size_t n, struct auth_challenges *out, struct err *e);
void auth_challenges_free(struct auth_challenges *c);

/* The challenge to answer: Bearer with a realm first, then Basic; NULL if
 * neither is present. Borrowed from c. */
const struct auth_challenge *auth_pick(const struct auth_challenges *c);

/* Parse a token endpoint answer. Returns 0 with *token (caller frees) and
 * *expires_in (seconds, 60 if absent or not positive), -1 with a message
 * that never contains the token. */
int auth_parse_token(const char *json, size_t n, char **token, long *expires_in, struct err *e);

/* The token request URL: realm plus service and one scope= per
 * space-separated scope, URL-encoded. -1 if the realm is not an http(s)
 * URL. Caller frees *out. */
int auth_token_url(const char *realm, const char *service, const char *scopes, char **out,
                   struct err *e);

/* ---- token cache ---- */

struct auth_cache;

struct auth_http_opts {
    const char *user_agent; /* copied */
    const char *ca_file;    /* copied; NULL: system store */
    const char *interface;  /* copied; CURLOPT_INTERFACE, NULL: none */
    long connect_timeout_ms;
    long timeout_ms;
};

/* Outcome of a token fetch: token is NULL on failure, then status is the
 * token endpoint's HTTP status (0 if none), curl the transport result and
 * msg a one-line reason naming the realm (never a secret). All borrowed for
 * the duration of the callback. */
struct auth_outcome {
    const char *token;
    long status;
    CURLcode curl;
    const char *msg;
};
typedef void (*auth_token_fn)(const struct auth_outcome *out, void *arg);

/* Borrows ec, which must outlive the cache. Token lifetimes are timed with
 * the wall clock (ev_time), not the loop's cached ev_now, which lags after
 * any blocking pause. */
struct auth_cache *auth_cache_new(struct evcurl *ec, const struct auth_http_opts *o);
/* No fetch may be in flight. NULL is a no-op. */
void auth_cache_free(struct auth_cache *c);

/* A token for (key, scope) that is still valid now, or NULL. Borrowed
 * until the next call into the cache. */
const char *auth_cache_lookup(struct auth_cache *c, const char *key, const char *scope);

/* Forget the cached token for (key, scope) if it is `token` (a registry
 * refused it); a newer token is kept. */
void auth_cache_invalidate(struct auth_cache *c, const char *key, const char *scope,
                           const char *token);

/* Fetch a token for (key, scope) answering challenge ch (Bearer with realm),
 * with credentials cr (may be NULL or empty: anonymous). Credentials go only
 * to an https realm, or to an http realm when allow_plain is set (the
 * registry itself is plain http). Joins a fetch already in flight for the
 * same entry. Returns 0 and later calls cb exactly once from the loop, or -1
 * now (no callback) if the challenge cannot be answered. */
int auth_cache_fetch(struct auth_cache *c, const char *key, const struct auth_challenge *ch,
                     const char *scope, const struct creds *cr, int allow_plain,
                     auth_token_fn cb, void *arg, struct err *e);

/* Token fetches sent so far (for stats and tests). */
unsigned long auth_cache_fetches(const struct auth_cache *c);

#endif
