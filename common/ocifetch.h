/* ocifetch: objects of a registry written into a bundle directory (an OCI
 * image layout, ocilayout.h), each verified before it takes its final name:
 * what `hubsync-coordinator export` does alone and what a bundle worker
 * (hubsync-worker --bundle-dir) does for one job of an export, one code.
 *
 * A manifest is read by GET /v2/<repo>/manifests/<digest> with the full
 * Accept list (the registry client checks the bytes hash to the digest); a
 * blob by GET /v2/<repo>/blobs/<digest>, streamed through SHA-256 into a
 * temporary file of this writer's own and renamed only when it hashes right,
 * so memory stays constant whatever its size. A file already there under
 * its final name and right (an interrupted export, another writer) is kept
 * without a request. Several writers may share one directory: see
 * ocilayout.h on temporary names.
 *
 * An export's job (one per tag group, the job key sync uses) lists the
 * objects to write as JSON in the job stream of the bundle queue (keys.h):
 *   {"run": "<export id>",
 *    "objects": [{"repo": "<target repository>", "digest": "sha256:..",
 *                 "size": N, "manifest": true|false}, ...]}
 * naming no registry: a bundle worker reads from its own --target, with its
 * own credentials. The payload is untrusted: the decoder checks every
 * field. */
#ifndef HUBSYNC_OCIFETCH_H
#define HUBSYNC_OCIFETCH_H

#include <ev.h>
#include <stddef.h>

#include "digest.h"
#include "err.h"
#include "reg.h"

/* Bound on the objects of one job payload. */
#define OCIFETCH_JOB_MAX_OBJECTS 100000

struct ocifetch_item {
    char *repo; /* repository of the registry to read it from */
    char digest[DIGEST_STR_SIZE];
    long long size;
    int manifest; /* 1: a manifest, 0: a blob */
};

struct ocifetch_job {
    char *run; /* the export's id (its record in the bundle queue) */
    struct ocifetch_item *items;
    size_t nitems;
};

/* JSON text of a job of export run writing items; caller frees. */
char *ocifetch_job_encode(const char *run, const struct ocifetch_item *items, size_t n);
/* -1 with a message naming what is wrong where. Free with ocifetch_job_free
 * (also after -1). */
int ocifetch_job_decode(const char *json, size_t len, struct ocifetch_job *out, struct err *e);
void ocifetch_job_free(struct ocifetch_job *j);

/* What a fetch did. */
struct ocifetch_stats {
    long long written; /* files written */
    long long reused;  /* files found right already */
    long long bytes;   /* bytes written */
};

/* A manifest the caller read (verified by the registry client) into dir,
 * unless its file is right already: counted in st. -1 with a message naming
 * the file. */
int ocifetch_put(const char *dir, const char *digest, long long size, const char *body,
                 size_t len, struct ocifetch_stats *st, struct err *e);

/* error: NULL when every item is in place, else one line naming the object. */
typedef void ocifetch_done_fn(const struct ocifetch_stats *st, const char *error, void *arg);

/* Write the n items (copied) from src into dir (its blobs/sha256 exists),
 * at most concurrency requests at once, on loop. done is called once, from
 * the loop, never before this returns; the first error stops new requests
 * and is reported once those in flight end. src is borrowed and must outlive
 * the fetch. */
void ocifetch_start(struct ev_loop *loop, struct reg_registry *src, const char *dir,
                    const struct ocifetch_item *items, size_t n, int concurrency,
                    ocifetch_done_fn *done, void *arg);

#endif
