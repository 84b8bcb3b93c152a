/* reg_blob: blob copies between registries, streamed in constant memory.
 *
 * A copy GETs the blob from the source (following redirects, e.g. Docker
 * Hub's CDN, without ever sending Authorization to another host) and
 * uploads it to the target through a fixed ring buffer, over HTTP/1.1, with
 * a running SHA-256: POST an upload session, then either one
 * `PUT <location>?digest=` with Content-Length = the descriptor size, or
 * (above the client's chunk threshold) PATCHes with Content-Range and a
 * closing PUT. The last byte is released to the target only once the whole
 * body has arrived and hashed to the digest, so a corrupted, truncated or
 * wrongly sized blob aborts the upload (CURL_READFUNC_ABORT) and nothing
 * unverified is committed. Memory per copy is the ring plus libcurl's
 * buffers, whatever the size.
 *
 * A copy may first try a cross-repository mount on the target (POST
 * ?mount=<digest>&from=<repo>): 201 means mounted, no bytes move; 202 opens
 * an ordinary upload session that the copy continues with. Retryable
 * failures (5xx, resets, truncation) restart the copy with backoff, bounded
 * by the client's retry count. Results: see reg.h (digest, length = bytes
 * streamed, mounted). */
#ifndef HUBSYNC_REG_BLOB_H
#define HUBSYNC_REG_BLOB_H

#include "reg.h"

struct reg_blob_spec {
    struct reg_registry *src; /* NULL: mount only (see reg_mount_blob) */
    const char *src_repo;
    struct reg_registry *dst;
    const char *dst_repo;
    const char *digest;     /* sha256:<hex> */
    long long size;         /* descriptor size in bytes */
    const char *mount_from; /* target repository to mount from, or NULL */
};

/* Copy spec->digest from src/src_repo to dst/dst_repo. The strings are
 * copied; the registries are borrowed and must outlive the copy. */
void reg_copy_blob(const struct reg_blob_spec *spec, reg_done_fn done, void *arg);

/* Mount digest from `from` into repo on the same registry. REG_OK with
 * mounted=1 on 201; REG_NOT_FOUND when the registry answered 202 instead
 * (the upload session it opened is cancelled with DELETE). */
void reg_mount_blob(struct reg_registry *dst, const char *repo, const char *digest,
                    const char *from, reg_done_fn done, void *arg);

/* Upload the blob digest (size bytes) from the file fd (read with pread from
 * offset 0; fd stays the caller's, open until the callback) into repo of
 * dst, first as a mount from mount_from (may be NULL) as reg_copy_blob
 * does. The file is hashed as it is read and the last byte is sent only if
 * the whole hashes to digest: a changed or short file aborts the upload
 * (REG_DIGEST_MISMATCH) and nothing is committed. */
void reg_upload_blob(struct reg_registry *dst, const char *repo, const char *digest,
                     long long size, int fd, const char *mount_from, reg_done_fn done, void *arg);

/* GET the blob digest (size bytes, as its descriptor says) of repo on src
 * into the file fd (written from its current offset, which must be 0 of an
 * empty file: a retry truncates it and starts again), hashed as it arrives.
 * REG_OK only when exactly size bytes hashing to digest were written; the
 * caller then makes the file visible (a rename), else discards it. */
void reg_fetch_blob(struct reg_registry *src, const char *repo, const char *digest,
                    long long size, int fd, reg_done_fn done, void *arg);

/* Upload len bytes (copied; at most REG_MANIFEST_MAX) as a blob of repo: POST
 * an upload session, then one PUT <location>?digest= with the bytes. Meant
 * for small blobs made here (the target's epoch marker); res->digest is the
 * digest of the bytes. An abandoned session is left to the registry's purge. */
void reg_put_blob(struct reg_registry *dst, const char *repo, const void *body, size_t len,
                  reg_done_fn done, void *arg);

#endif
