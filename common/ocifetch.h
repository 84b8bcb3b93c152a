/* ocifetch: objects of a registry written into a bundle directory (an OCI
 * image layout, ocilayout.h), each verified before it takes its final name:
 * the objects of a bundle as `hubsync-coordinator export` writes them.
 *
 * A manifest is read by GET /v2/<repo>/manifests/<digest> with the full
 * Accept list (the registry client checks the bytes hash to the digest); a
 * blob by GET /v2/<repo>/blobs/<digest>, streamed through SHA-256 into a
 * temporary file of this writer's own and renamed only when it hashes right,
 * so memory stays constant whatever its size. A file already there under
 * its final name and right (an interrupted export, another writer) is kept
 * without a request. Several writers may share one directory: see
 * ocilayout.h on temporary names. */
#ifndef HUBSYNC_OCIFETCH_H
#define HUBSYNC_OCIFETCH_H

#include <ev.h>
#include <stddef.h>

#include "digest.h"
#include "err.h"
#include "reg.h"

struct ocifetch_item {
    char *repo; /* repository of the registry to read it from */
    char digest[DIGEST_STR_SIZE];
    long long size;
    int manifest; /* 1: a manifest, 0: a blob */
};

/* What a fetch did. */
struct ocifetch_stats {
    long long written; /* files written */
    long long reused;  /* files found right already */
    long long bytes;   /* bytes written */
};

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
