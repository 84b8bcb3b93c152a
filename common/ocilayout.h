/* ocilayout: air-gapped bundles, an OCI image layout with a record of what it holds.
 *
 * A bundle directory is an OCI image layout that skopeo (oci:DIR:REF),
 * podman and regctl read:
 *   oci-layout            {"imageLayoutVersion": "1.0.0"}
 *   index.json            one descriptor per tag of the full state, named by
 *                         the annotation org.opencontainers.image.ref.name
 *                         "<repository>:<tag>" (e.g. "alpine:3.20")
 *   blobs/sha256/<hex>    manifests and blobs, each file named by its digest
 * plus the record hubsync reads back on import:
 *   hubsync-bundle.json   {"hubsync_bundle": 1, "commit", "base" (null for a
 *                         full bundle), "index": {digest, size} of index.json,
 *                         "objects": [{digest, size, mediaType (manifests),
 *                         level, in_bundle, repositories}]}
 * "objects" is the whole state the bundle brings a site to (every manifest
 * and blob the tags reach), in push order: blobs (level 0), image manifests
 * (1), indexes (2); in_bundle says whether the file is in blobs/ (an
 * incremental bundle carries only what its base lacks) and repositories
 * which official-images repositories reference the object.
 *
 * Everything read is untrusted (a bundle crossed an air gap on some disk):
 * parsers check shapes, digests, sizes and names and say what is wrong
 * where; files are written under a temporary name and renamed, so a killed
 * export leaves no half-written file under a final name. Temporary names are
 * unique per writer (<final>.<host>.<pid>.<random>.part, created O_EXCL):
 * several writers, on one machine or sharing the directory over a network
 * file system, may write the same object at once, and the last rename of a
 * verified copy leaves one right file. */
#ifndef HUBSYNC_OCILAYOUT_H
#define HUBSYNC_OCILAYOUT_H

#include <stddef.h>

#include "digest.h"
#include "err.h"

#define OCILAYOUT_BUNDLE_FILE "hubsync-bundle.json"
#define OCILAYOUT_REF_NAME "org.opencontainers.image.ref.name"
#define OCILAYOUT_FORMAT 1
/* Bound on index.json, hubsync-bundle.json and oci-layout as read. */
#define OCILAYOUT_FILE_MAX (256L << 20)
/* Bound on the objects and references a bundle may list. */
#define OCILAYOUT_MAX_ITEMS 4000000

enum ocilayout_level { OCILAYOUT_BLOB = 0, OCILAYOUT_IMAGE = 1, OCILAYOUT_INDEX = 2 };

/* One tag of index.json. */
struct ocilayout_ref {
    char *repo; /* official-images name ("alpine") */
    char *tag;
    char digest[DIGEST_STR_SIZE];
    long long size;
    char *media_type;
};

struct ocilayout_object {
    char digest[DIGEST_STR_SIZE];
    long long size;
    char *media_type; /* manifests: their type; blobs: NULL */
    int level;        /* enum ocilayout_level */
    int in_bundle;
    char **repos;     /* official-images names, >= 1 */
    size_t nrepos;
};

struct ocilayout_bundle {
    char *commit; /* the official-images commit the bundle brings a site to */
    char *base;   /* the commit the site must be at; NULL: a full bundle */
    char index_digest[DIGEST_STR_SIZE];
    long long index_size;
    struct ocilayout_object *objects;
    size_t nobjects;
    const struct ocilayout_object **sorted; /* by digest, made by ocilayout_bundle_index */
};

/* index.json: -1 with a message naming the entry that is wrong. The caller
 * frees refs with ocilayout_refs_free (also after -1). */
int ocilayout_index_parse(const char *body, size_t len, struct ocilayout_ref **refs,
                          size_t *nrefs, struct err *e);
/* index.json for refs, with the commits as annotations (base may be NULL).
 * Caller frees; *len set. */
char *ocilayout_index_dump(const struct ocilayout_ref *refs, size_t nrefs, const char *commit,
                           const char *base, size_t *len);
void ocilayout_refs_free(struct ocilayout_ref *refs, size_t n);

/* hubsync-bundle.json. Free with ocilayout_bundle_free (also after -1). */
int ocilayout_bundle_parse(const char *body, size_t len, struct ocilayout_bundle *out,
                           struct err *e);
char *ocilayout_bundle_dump(const struct ocilayout_bundle *b, size_t *len);
void ocilayout_bundle_free(struct ocilayout_bundle *b);
/* The object of digest in b, or NULL (b's objects are looked up by a sorted
 * copy made on first use: call ocilayout_bundle_index once first). */
void ocilayout_bundle_index(struct ocilayout_bundle *b);
const struct ocilayout_object *ocilayout_bundle_find(const struct ocilayout_bundle *b,
                                                     const char *digest);

/* oci-layout: 0 when it declares imageLayoutVersion 1.0.0. */
int ocilayout_marker_check(const char *body, size_t len, struct err *e);
extern const char ocilayout_marker[];

/* "<dir>/blobs/sha256/<hex>" (digest valid). Caller frees. */
char *ocilayout_blob_path(const char *dir, const char *digest);
/* Create dir/blobs/sha256 (and dir) if missing. */
int ocilayout_mkdirs(const char *dir, struct err *e);

/* Hash the file at path in constant memory: its digest into out and its
 * size into *size. -1 with a message naming the path. */
int ocilayout_hash_file(const char *path, char out[DIGEST_STR_SIZE], long long *size,
                        struct err *e);
/* 1 when the file at path has exactly size bytes hashing to digest; 0 when it
 * is missing or differs (why says how, naming path: "missing", "N bytes, M
 * expected", "hashes to ..."); -1 when it cannot be read. */
int ocilayout_file_matches(const char *path, const char *digest, long long size, char *why,
                           size_t n);
/* Read a whole file of at most max bytes (NUL-terminated). Caller frees. */
int ocilayout_read_file(const char *path, size_t max, char **out, size_t *len, struct err *e);
/* Write data to path through a temporary file of this writer's own, fsync,
 * rename. */
int ocilayout_write_file(const char *path, const void *data, size_t len, struct err *e);

/* Suffix of every temporary file: a file of blobs/ ending so is no object. */
#define OCILAYOUT_PART_SUFFIX ".part"
/* Create a new empty temporary file for path, named uniquely for this writer
 * (see above), mode 0644: its fd, and its name in *tmp (caller frees). -1
 * with a message naming it. */
int ocilayout_temp_open(const char *path, char **tmp, struct err *e);
/* Finish a temporary file from ocilayout_temp_open: keep 1 fsyncs, closes
 * and renames it to path; keep 0 (or a failure on the way) closes and
 * removes it. fd is closed in every case. 0 when kept, -1 (e set naming the
 * file) when keep was 1 and failed, -1 without a message when keep was 0. */
int ocilayout_temp_finish(int fd, const char *tmp, const char *path, int keep, struct err *e);

#endif
