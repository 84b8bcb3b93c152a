/* reg_http: one registry HTTP exchange with authentication and retries.
 *
 * Internal to the reg modules (reg.c, reg_blob.c); callers use reg.h. A
 * struct reg_req is one logical request: it is sent with a token for its
 * scope when the registry is known to want one, re-sent once after a 401
 * (new challenge, fresh token), and re-sent with exponential backoff and
 * jitter after 408/5xx/connection failures while the retry budget lasts and
 * the owner's guard allows it. Each answer's headers are parsed
 * (digest, type, length, Location, Link, rate limits, Retry-After), rate
 * limits go to the client hook, and the final answer is classified into a
 * reg_class with a one-line message. Streaming requests install their own
 * body callbacks through the setup hook. */
#ifndef HUBSYNC_REG_HTTP_H
#define HUBSYNC_REG_HTTP_H

#include <curl/curl.h>
#include <ev.h>

#include "auth.h"
#include "buf.h"
#include "digest.h"
#include "evcurl.h"
#include "reg.h"
#include "xalloc.h"

/* Redirects followed per request (blob GETs take one, to a CDN); past it the
 * request fails as a redirect loop. */
#define REG_HTTP_MAX_REDIRS 5

struct reg_client {
    struct ev_loop *loop;
    struct evcurl *ec;
    struct auth_cache *auth;
    struct reg_client_opts o; /* strings below are owned copies */
    char *user_agent, *ca_file;
    char *interface; /* CURLOPT_INTERFACE ("host!<source_address>"), or NULL */
    struct reg_stats stats;
    int busy;        /* operations in flight */
    int registries;  /* registries alive */
    /* Blob streams (reg_blob.c) hold a connection at each end until both
     * ends are done; they may together hold at most max_host_conns, so a
     * stream's second end can always get its connection. */
    long stream_conns;             /* connections held by streams */
    struct reg_op *stream_wait;    /* copies waiting to stream, oldest first */
    struct reg_op *stream_wait_tail;
    unsigned long long rng; /* backoff jitter (xorshift) */
};

struct reg_registry {
    struct reg_client *c;
    char *url;     /* scheme://host[:port][/prefix], no trailing slash */
    struct creds cr;
    char *auth_key; /* its tokens' key in the cache: the URL, and the account's user */
    int plain;     /* http:// */
    int bearer;    /* the registry answered with a Bearer challenge */
    int basic;     /* the registry answered with a Basic challenge */
    int creds_refused; /* a 401 answered a request that carried cr */
    char *realm, *service; /* of the Bearer challenge */
};

/* Headers of the final answer (reset at every status line, so redirects
 * and 100 Continue leave only the last response's headers). */
struct reg_hdrs {
    long long content_length; /* -1 if absent */
    char digest[DIGEST_STR_SIZE]; /* "" if absent */
    int bad_digest;           /* Docker-Content-Digest present but not sha256:<hex> */
    char *content_type, *location, *link, *range;
    struct buf www_auth;      /* all WWW-Authenticate values joined with ", " */
    struct ratelimit_info rl;
    long retry_after;         /* -1 if absent */
};

void reg_hdrs_init(struct reg_hdrs *h);
void reg_hdrs_free(struct reg_hdrs *h);
/* Feed one raw header line (as CURLOPT_HEADERFUNCTION delivers it). */
void reg_hdrs_line(struct reg_hdrs *h, const char *line, size_t n);

struct reg_req;
typedef void (*reg_req_fn)(struct reg_req *q, void *arg);

struct reg_req {
    struct reg_registry *r;
    /* request, set by the owner before reg_http_start */
    const char *method;       /* "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE" */
    char *url;                /* absolute, owned */
    char *scope;              /* "repository:<repo>:<actions>[ ...]", owned */
    char *what;               /* for messages, e.g. "GET manifest library/debian:12", owned */
    const char *accept;       /* Accept value or NULL */
    const char *content_type; /* request Content-Type or NULL */
    const char *extra_header; /* one more "Name: value" line or NULL (e.g. Content-Range) */
    const void *body;         /* small request body (borrowed), used unless stream is set */
    size_t body_len;
    int has_body;             /* send body/body_len (possibly empty) */
    int stream;               /* the setup hook installs the body callbacks */
    size_t max_body;          /* bound on the answer body kept in resp; 0 discards it */
    int follow;               /* follow redirects (GET/HEAD) */
    int blob;                 /* HTTP/1.1, low-speed limits instead of a total timeout */
    int manifest_get;         /* report through on_manifest_get, count in stats */
    int manifest_head;
    const char *hook_repo, *hook_ref; /* for on_manifest_get (borrowed) */
    int ok_status[4];         /* answers that count as success (0-terminated) */
    void (*setup)(struct reg_req *q, CURL *easy, void *arg);
    int (*may_retry)(struct reg_req *q, void *arg); /* NULL: always */
    reg_req_fn done;
    void *arg;
    /* the answer */
    long status;
    CURLcode cc;
    struct reg_hdrs h;
    struct buf resp;
    int resp_overflow;
    enum reg_class cls;
    char msg[REG_MSG_MAX];
    int attempts;
    /* state */
    CURL *easy;               /* while in flight */
    struct curl_slist *hl;
    char *token;              /* token sent with the current attempt (secret) */
    int auth_tries;
    int sent_basic;           /* the current attempt carries the registry's Basic credentials */
    int insufficient_scope;
    int cancelled;
    ev_timer timer;
};

/* A request on r; url is taken over (freed with the request). Completion
 * runs done(q, arg) exactly once, later; the owner then reads q->cls,
 * q->status, q->h, q->resp and frees q with reg_http_free. */
struct reg_req *reg_http_new(struct reg_registry *r, const char *method, char *url,
                             const char *scope, const char *what, reg_req_fn done, void *arg);
void reg_http_start(struct reg_req *q);
/* End a started request early: it completes (later, once) with
 * REG_NETWORK "cancelled" unless it finishes first. */
void reg_http_cancel(struct reg_req *q);
/* Forget the answer and state of a finished request so it can be started
 * again (new attempt count). */
void reg_http_reset(struct reg_req *q);
void reg_http_free(struct reg_req *q);

/* "<base>/v2/<repo>/<kind>/<ref>" (kind "manifests", "blobs", "tags/list"). */
char *reg_http_url(const struct reg_registry *r, const char *repo, const char *kind,
                   const char *ref);
/* "repository:<repo>:<actions>". */
char *reg_http_scope(const char *repo, const char *actions);
/* Backoff before retry number `retry` (1-based), jittered, honouring a
 * Retry-After (seconds, -1 none) up to the cap. */
double reg_http_backoff(struct reg_client *c, int retry, long retry_after);
/* Whether a failed answer is worth another attempt (408, 5xx but 501,
 * connection failures, resets, timeouts). */
int reg_http_retryable(long status, CURLcode cc);
/* The class of a transfer that got no answer (cc not CURLE_OK): REG_TLS when
 * the peer's certificate was refused, else REG_NETWORK. */
enum reg_class reg_http_curl_class(CURLcode cc);
/* Set q->cls and q->msg from the answer, as the final verdict. */
void reg_http_classify(struct reg_req *q);
/* Set a failure verdict with a message of our own. */
void reg_http_fail(struct reg_req *q, enum reg_class cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* What every operation carries: its callback and its result. */
struct reg_op {
    struct reg_client *c;
    reg_done_fn done;
    void *arg;
    struct reg_result res;
    ev_timer later; /* completes an operation refused before any request */
};

/* Count the operation as busy and prepare an empty result. */
void reg_http_op_init(struct reg_op *op, struct reg_client *c, reg_done_fn done, void *arg);
/* Copy verdict, status, message and answer headers of q into the result
 * (pointers borrow from q, which must outlive the callback). */
void reg_http_op_result(struct reg_op *op, const struct reg_req *q);
/* Fail the operation later (from the loop) with cls and a message; then
 * `release` frees the object embedding op. */
void reg_http_op_fail_later(struct reg_op *op, enum reg_class cls, void (*release)(void *),
                            void *obj, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Run the callback and uncount the operation. */
void reg_http_op_finish(struct reg_op *op);

#endif
