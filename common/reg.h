/* reg: asynchronous container registry client (Docker Registry HTTP API v2 / OCI).
 *
 * One struct reg_client per process: it owns the libcurl multi handle on the
 * caller's libev loop, the token cache, and the options (timeouts, retry
 * policy, TLS, user agent, hooks). One struct reg_registry per registry base
 * URL (plus its credentials).
 *
 * Every operation takes a completion callback and reports a struct
 * reg_result. The callback runs exactly once, later, from the loop (never
 * inside the call that started the operation), also for invalid arguments.
 * The client is policy-free: it authenticates (401 -> token for the scope ->
 * one retry), retries 408/5xx/connection failures with exponential backoff
 * and jitter on ev_timers, and verifies digests; what to do about a missing
 * manifest or an exhausted pull budget is the caller's business. A 429 is
 * never retried: it completes with REG_RATE_LIMITED and Retry-After.
 *
 * TLS verification is always on; plain HTTP is used only for http:// URLs.
 * Tokens, passwords and Authorization headers never appear in results, logs
 * or hook arguments. Credentials go only to the registry's origin and to the
 * realm its own challenge names: a 401 from another origin (where a redirect
 * led, e.g. a CDN) completes as REG_UNAUTHORIZED, its challenge unanswered.
 *
 * Blob copies (streaming, cross-repository mounts) are in reg_blob.h. */
#ifndef HUBSYNC_REG_H
#define HUBSYNC_REG_H

#include <ev.h>
#include <stddef.h>

#include "creds.h"
#include "err.h"
#include "ratelimit.h"

/* Manifest bodies larger than this are refused (REG_TOO_LARGE). */
#define REG_MANIFEST_MAX (4L << 20)
#define REG_MSG_MAX 512

/* The accepted manifest media types, in the order sent in Accept. */
#define REG_MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define REG_MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define REG_MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define REG_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"

enum reg_class {
    REG_OK = 0,
    REG_NOT_FOUND,       /* 404: no such manifest, blob or repository */
    REG_UNAUTHORIZED,    /* 401 after authenticating (bad or missing credentials) */
    REG_DENIED,          /* 403, or a token without the requested access */
    REG_RATE_LIMITED,    /* 429 (TOOMANYREQUESTS): a budget event, not retried */
    REG_SERVER,          /* 5xx after the retries */
    REG_NETWORK,         /* connect or TLS handshake failure, reset, timeout, truncated body */
    REG_DIGEST_MISMATCH, /* bytes do not hash to the expected digest */
    REG_TOO_LARGE,       /* a body or listing past its bound, 413 */
    REG_PROTOCOL,        /* an answer that breaks the protocol, other 4xx */
    REG_INVALID,         /* bad arguments (repository name, reference, digest, URL) */
    REG_TLS,             /* the registry's certificate refused (untrusted, expired, wrong
                          * name): a setting to fix, where REG_NETWORK may pass by itself */
};

/* "ok", "not_found", ... */
const char *reg_class_name(enum reg_class cls);

/* Reported to an operation's callback; everything borrowed until the
 * callback returns (copy what you keep; the body can be taken). */
struct reg_result {
    enum reg_class cls;
    long status;              /* final HTTP status; 0 if no answer */
    char msg[REG_MSG_MAX];    /* one line naming method, registry, repo, ref; "" when ok */
    const char *digest;       /* Docker-Content-Digest, or computed from a GET body / copy */
    const char *content_type; /* Content-Type of the final answer, NULL if absent */
    long long length;         /* Content-Length, body length or bytes copied; -1 unknown */
    char *body;               /* manifest GET: the exact bytes (NUL-terminated), else NULL */
    size_t body_len;
    struct ratelimit_info rl; /* rate-limit headers of the final answer */
    long retry_after;         /* seconds from Retry-After, -1 if absent */
    int attempts;             /* HTTP requests sent for the operation */
    int mounted;              /* blob copy: 1 if the target mounted it (201) */
    char **tags;              /* tag listing: ntags tags in server order */
    size_t ntags;
    const char *next;         /* referrers listing: the next page's URL, NULL on the last */
};
typedef void (*reg_done_fn)(struct reg_result *res, void *arg);

/* Take the GET body out of the result: caller frees; *len set. NULL if none. */
char *reg_result_take_body(struct reg_result *res, size_t *len);

struct reg_client;
struct reg_registry;

struct reg_hooks {
    /* Rate-limit headers (or a 429) on any answer from r. */
    void (*on_ratelimit)(struct reg_registry *r, const struct ratelimit_info *rl, long status,
                         void *arg);
    /* A manifest GET is about to be sent to r (each attempt: Docker Hub
     * counts GETs of /v2/<repo>/manifests/<ref>). */
    void (*on_manifest_get)(struct reg_registry *r, const char *repo, const char *ref,
                            void *arg);
    void *arg;
};

struct reg_client_opts {
    const char *user_agent;      /* default "hubsync/1" */
    const char *ca_file;         /* PEM bundle; NULL: system store */
    long connect_timeout_ms;     /* default 10000 */
    long request_timeout_ms;     /* total, for everything but blob bodies; default 60000 */
    long low_speed_bytes;        /* blob transfers fail below this rate ... default 1024 */
    long low_speed_secs;         /* ... held this many seconds; default 60 */
    int max_retries;             /* retries after the first attempt; default 3 */
    long retry_base_ms;          /* first backoff (doubled each retry, jittered); default 500 */
    long retry_max_ms;           /* backoff cap; default 30000 */
    long max_total_conns;        /* default 64; at least max_host_conns */
    long max_host_conns;         /* per host:port; default 8, at least 1 */
    size_t ring_bytes;           /* blob copy buffer per copy; default 1 MiB, min 64 KiB */
    long long chunk_threshold;   /* blobs larger use chunked PATCH uploads; default -1: never */
    long long chunk_bytes;       /* PATCH size; default 64 MiB */
    int max_tag_pages;           /* tag listing bound on pages; default 1000 */
    const char *source_address;  /* numeric IPv4 or IPv6 address every request (token
                                  * fetches too) is sent from, as a second machine would;
                                  * NULL: the system's choice */
    struct reg_hooks hooks;
};

void reg_client_opts_default(struct reg_client_opts *o);

/* Counters since reg_client_new. */
struct reg_stats {
    unsigned long long requests;      /* HTTP requests sent (token fetches excluded) */
    unsigned long long manifest_gets; /* manifest GETs sent */
    unsigned long long manifest_heads;
    unsigned long long retries;       /* backoff retries scheduled */
    unsigned long long token_fetches;
    unsigned long long blob_bytes;    /* blob bytes streamed into targets */
};

/* The loop must outlive the client. Copies the options. */
struct reg_client *reg_client_new(struct ev_loop *loop, const struct reg_client_opts *o,
                                  struct err *e);
/* Every operation must have completed, and every registry been freed.
 * NULL is a no-op. */
void reg_client_free(struct reg_client *c);
const struct reg_stats *reg_client_stats(const struct reg_client *c);
/* Operations started and not yet completed. */
int reg_client_busy(const struct reg_client *c);

/* A registry at base_url ("https://registry-1.docker.io", "http://127.0.0.1:5000";
 * a trailing "/" or "/v2/" is dropped). cr may be NULL (anonymous); it is
 * copied. */
struct reg_registry *reg_registry_new(struct reg_client *c, const char *base_url,
                                      const struct creds *cr, struct err *e);
/* No operation on r may be in flight. NULL is a no-op. */
void reg_registry_free(struct reg_registry *r);
/* The normalised base URL (borrowed). */
const char *reg_registry_url(const struct reg_registry *r);
/* Replace r's credentials (cr NULL: anonymous), e.g. a credential helper's
 * newer answer; tokens already fetched are used until they expire. */
void reg_registry_set_creds(struct reg_registry *r, const struct creds *cr);
/* 1 once a 401 answered a request that carried r's credentials (the token
 * realm's, or the registry's for Basic), until reg_registry_set_creds. */
int reg_registry_creds_refused(const struct reg_registry *r);

/* GET /v2/: 200 (or 401 answered by authenticating) is REG_OK. */
void reg_ping(struct reg_registry *r, reg_done_fn done, void *arg);

/* ref is a tag or a digest. HEAD: digest, content_type and length from the
 * headers (digest NULL if the registry sent none). Free on Docker Hub. */
void reg_head_manifest(struct reg_registry *r, const char *repo, const char *ref,
                       reg_done_fn done, void *arg);

/* GET with the full Accept list; body bounded by REG_MANIFEST_MAX. By digest
 * the bytes must hash to it; by tag the computed digest must equal
 * Docker-Content-Digest when present (else REG_DIGEST_MISMATCH). res->digest
 * is the computed digest. Costs a pull on Docker Hub. */
void reg_get_manifest(struct reg_registry *r, const char *repo, const char *ref,
                      reg_done_fn done, void *arg);

/* PUT the exact bytes (copied) to a tag or digest, media_type as
 * Content-Type. 201 is REG_OK; res->digest is the digest the registry
 * returned, which must match the bytes. */
void reg_put_manifest(struct reg_registry *r, const char *repo, const char *ref,
                      const char *media_type, const void *body, size_t len, reg_done_fn done,
                      void *arg);

/* DELETE /v2/<repo>/manifests/<digest> (202): the manifest and every tag
 * that points at it leave the repository (registries cannot delete a tag
 * alone). REG_NOT_FOUND if absent; a registry with deletes disabled answers
 * 405 (REG_PROTOCOL). */
void reg_delete_manifest(struct reg_registry *r, const char *repo, const char *digest,
                         reg_done_fn done, void *arg);

/* HEAD /v2/<repo>/blobs/<digest>: REG_OK with length, or REG_NOT_FOUND. */
void reg_head_blob(struct reg_registry *r, const char *repo, const char *digest,
                   reg_done_fn done, void *arg);

/* All tags of repo: pages of page_size (n=), following Link rel="next" when
 * present, else last=. REG_TOO_LARGE past max_tags tags or the page bound. */
void reg_list_tags(struct reg_registry *r, const char *repo, int page_size, size_t max_tags,
                   reg_done_fn done, void *arg);

/* GET /v2/<repo>/referrers/<digest> (OCI 1.1), one page: the digests of the
 * manifests whose subject is digest, in res->tags (res->ntags), and in
 * res->next the URL of the next page (Link rel="next") to pass as page, NULL
 * on the last; page NULL: the first. One page per call because each is a
 * pull on Docker Hub, reserved by the caller. REG_TOO_LARGE past max of them.
 * REG_NOT_FOUND is a registry without the API (its referrers are found by
 * their fallback tags sha256-<hex>.sig, ...). Reported through
 * on_manifest_get and counted as a manifest GET. */
void reg_list_referrers(struct reg_registry *r, const char *repo, const char *digest,
                        const char *page, size_t max, reg_done_fn done, void *arg);

/* A tag (ref_tag_valid) or a sha256 digest. Repository names: ref_repo_valid. */
int reg_valid_ref(const char *ref);

#endif
