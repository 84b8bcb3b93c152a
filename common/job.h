/* job: the payload of one copy job (one manifest / tag group), as JSON.
 *
 * The coordinator encodes a job into the queue; workers decode it. The text is
 * compact JSON with a fixed key order, readable in redis-cli:
 *   {"v":1,"run":"20261129T020000Z","key":"debian:bookworm",
 *    "upstream":"https://registry-1.docker.io","source_repo":"library/debian",
 *    "target":"http://127.0.0.1:5000","target_repo":"library/debian",
 *    "tags":["bookworm","12"],"platforms":["linux/amd64"],
 *    "platform_policy":"all","reason":"changed","attempt":0}
 * (a job that waited for a registry ends in ,"registry_wait_ms":<n>; a job of pinned
 * digests has "digests":["sha256:..."] after "tags", one carrying signatures and
 * attestations "referrers":["sha256-<hex>.sig", ...] after those, and
 * "find_referrers":true after that when the referrers API is to be asked).
 * Decoding is strict (each error names the field) and bounded; unknown
 * fields are ignored so newer coordinators can add some. */
#ifndef HUBSYNC_JOB_H
#define HUBSYNC_JOB_H

#include <stddef.h>

#include "err.h"

#define JOB_VERSION 1
#define JOB_MAX_BYTES 65536   /* whole payload */
#define JOB_MAX_TAGS 256
#define JOB_MAX_PLATFORMS 64
#define JOB_MAX_ATTEMPT 1000
#define JOB_MAX_WAIT_MS (366LL * 24 * 3600 * 1000)
/* Referrers of referrers are followed this deep (a signature of an attestation of an
 * image is 2): by the worker, and by plan pricing them. */
#define JOB_REFERRER_DEPTH 4
#define JOB_KEY_MAX 255
#define JOB_RUN_MAX 64
#define JOB_URL_MAX 2048

/* Which platforms of a multi-platform index are copied. */
enum job_policy {
    JOB_POLICY_ALL,     /* the whole index, digest-exact */
    JOB_POLICY_SPARSE,  /* only the listed platforms; the index is kept as is */
    JOB_POLICY_REWRITE, /* a new index holding only the listed platforms */
};

/* Why the job exists. */
enum job_reason {
    JOB_REASON_CHANGED, /* the catalog changed */
    JOB_REASON_CHECK,   /* periodic check for upstream rebuilds */
    JOB_REASON_RETRY,   /* re-enqueued after a failed attempt */
};

/* A decoded job; every string and array is owned and freed by job_free(). */
struct job {
    int version;
    char *run;         /* run id: [A-Za-z0-9._-]{1,64} */
    char *key;         /* job key, e.g. "debian:bookworm": printable, no spaces */
    char *upstream;    /* source registry base URL, http(s) */
    char *source_repo; /* repository name (OCI grammar), e.g. "library/debian" */
    char *target;      /* target registry base URL, http(s) */
    char *target_repo;
    char **tags;       /* ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$, 0..JOB_MAX_TAGS, distinct */
    size_t ntags;
    char **digests;    /* pinned digests copied by digest, no tag written: 0..JOB_MAX_TAGS,
                        * distinct; tags + digests >= 1; not under the rewrite policy
                        * (which makes a new digest) */
    size_t ndigests;
    char **referrers;  /* tags of referrers (cosign's sha256-<hex>.sig, .att, .sbom):
                        * copied and tagged before any tag of `tags` is written, which
                        * waits for them all; 0..JOB_MAX_TAGS, distinct */
    size_t nreferrers;
    int find_referrers; /* also copy, digest-exact and first, the manifests the source's
                         * referrers API (OCI 1.1) lists for each digest the job copies,
                         * and the referrers of each referrer in turn */
    char **platforms;  /* "os/arch[/variant]", 0..JOB_MAX_PLATFORMS, distinct */
    size_t nplatforms;
    enum job_policy policy; /* sparse and rewrite need at least one platform */
    enum job_reason reason;
    int attempt;       /* 0..JOB_MAX_ATTEMPT */
    long long registry_wait_ms; /* time spent waiting for registries that could not be
                                 * reached, 0..JOB_MAX_WAIT_MS; in the JSON ("registry_wait_ms",
                                 * after "attempt") only when not 0 */
};

/* Check every field; -1 with a message naming the first bad one. */
int job_validate(const struct job *j, struct err *e);

/* Validate and encode as compact JSON; caller frees the text. NULL with a
 * message if the job is invalid. */
char *job_encode(const struct job *j, struct err *e);

/* Decode len bytes (not necessarily NUL-terminated) into out, which the
 * caller releases with job_free() on success. On error out is left empty
 * and -1 is returned with a message naming the field. */
int job_decode(struct job *out, const char *data, size_t len, struct err *e);

/* Release the members; j itself is not freed. NULL-safe; safe twice. */
void job_free(struct job *j);

/* Names used in the JSON; parse returns -1 for an unknown name. */
const char *job_policy_name(enum job_policy p);
int job_policy_parse(const char *s, enum job_policy *out);
const char *job_reason_name(enum job_reason r);
int job_reason_parse(const char *s, enum job_reason *out);

/* Grammar checks also used by other modules; 1 if valid (repository names
 * and tags: ref_repo_valid, ref_tag_valid). */
int job_platform_valid(const char *s);
int job_url_valid(const char *s);      /* http(s)://host[:port][/path], no credentials */

#endif
