/* digest: content digests as registries use them ("sha256:<64 lowercase hex>").
 *
 * Validation of digest strings from untrusted input, a streaming SHA-256 for
 * blobs copied in pieces (OpenSSL EVP), and the digest of a whole buffer.
 * Only sha256 is accepted: it is what Docker Hub and the OCI registries in
 * use publish, and an unknown algorithm cannot be verified. */
#ifndef HUBSYNC_DIGEST_H
#define HUBSYNC_DIGEST_H

#include <stddef.h>

#include "err.h"

#define DIGEST_HEX_LEN 64
/* "sha256:" + 64 hex + NUL */
#define DIGEST_STR_SIZE (7 + DIGEST_HEX_LEN + 1)

/* 1 if s is exactly "sha256:" followed by 64 lowercase hex digits. */
int digest_valid(const char *s);

/* Validate s (n bytes, need not be NUL-terminated) and copy it into out.
 * -1 with a message naming `what` (e.g. "Docker-Content-Digest") if invalid. */
int digest_parse(const char *s, size_t n, const char *what, char out[DIGEST_STR_SIZE],
                 struct err *e);

/* Streaming SHA-256. Created by digest_new() (aborts on OOM), freed with
 * digest_free() (NULL is a no-op). */
struct digest_ctx;

struct digest_ctx *digest_new(void);
void digest_update(struct digest_ctx *d, const void *data, size_t n);
/* Write "sha256:<hex>" into out. The context is finished: reset it with
 * digest_reset() before reuse. */
void digest_final(struct digest_ctx *d, char out[DIGEST_STR_SIZE]);
void digest_reset(struct digest_ctx *d);
void digest_free(struct digest_ctx *d);

/* "sha256:<hex>" of a whole buffer. */
void digest_of(const void *data, size_t n, char out[DIGEST_STR_SIZE]);

#endif
