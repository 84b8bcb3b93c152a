/* manifest: reading image manifests and indexes (OCI and Docker v2 schema 2).
 *
 * The worker walks what an upstream manifest references: an index (OCI image
 * index or Docker manifest list) names child manifests with their platforms,
 * attestation manifests included (platform unknown/unknown, annotated with
 * the digest of the image they describe); an image manifest names its config
 * and layer blobs. Parsing never changes bytes: what is pushed is always the
 * exact upstream body, except for a platform-filtered index built on purpose
 * by manifest_rewrite_index(). Everything from the network is validated
 * (digests, sizes, counts) and bounded. */
#ifndef HUBSYNC_MANIFEST_H
#define HUBSYNC_MANIFEST_H

#include <stddef.h>

#include "digest.h"
#include "err.h"

#define MANIFEST_MAX_ITEMS 4096 /* children of an index, blobs of an image */
/* Annotation the rewrite policy leaves in a rewritten index: the upstream
 * digest it was made from, so a later run knows the tag is current without
 * fetching upstream. */
#define MANIFEST_SOURCE_ANNOTATION "io.hubsync.source.digest"

struct manifest_desc {
    char *media_type;              /* may be NULL when the descriptor has none */
    char digest[DIGEST_STR_SIZE];
    long long size;
    char *platform;                /* index children: "os/arch[/variant]", else NULL */
    char *subject;                 /* attestations: digest of the image described, else NULL */
    int foreign;                   /* a non-distributable layer with urls: not copied */
};

struct manifest {
    char *media_type; /* from the body's mediaType, else the Content-Type */
    int is_index;     /* OCI index or Docker manifest list */
    struct manifest_desc *items; /* index: child manifests; image: config then layers */
    size_t nitems;
    char *source_digest; /* MANIFEST_SOURCE_ANNOTATION of an index, else NULL */
};

/* Parse len bytes. content_type (may be NULL) is used when the body has no
 * mediaType. Schema 1 and unknown media types are refused with a message.
 * On success the caller frees with manifest_free(). */
int manifest_parse(struct manifest *out, const char *body, size_t len, const char *content_type,
                   struct err *e);
void manifest_free(struct manifest *m);

/* 1 if a platform of an index ("linux/arm64/v8") is the one wanted
 * ("linux/arm64"): arm64 without variant means v8 and arm without variant v7,
 * as containerd and bashbrew normalise them. */
int manifest_platform_match(const char *have, const char *want);

/* 1 if an index child is kept by a platform filter (wanted[0..nwanted)):
 * images of a wanted platform, and attestations whose subject is one of those
 * images (m is the parsed index the child belongs to). */
int manifest_child_wanted(const struct manifest *m, size_t child, char *const *wanted,
                          size_t nwanted);

/* A new index holding only the wanted children of the index in body, with
 * MANIFEST_SOURCE_ANNOTATION set to source_digest. Caller frees; *out_len set.
 * NULL with a message if body is not an index or no child is wanted. */
char *manifest_rewrite_index(const char *body, size_t len, char *const *wanted, size_t nwanted,
                             const char *source_digest, size_t *out_len, struct err *e);

#endif
