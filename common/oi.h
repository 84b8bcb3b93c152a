/* oi: the docker-library/official-images `library/<name>` file parser.
 *
 * Pure (no I/O): bytes in, a parsed repository out, read exactly as bashbrew
 * reads it (manifest/rfc2822.go with pault.ag/go/debian/control): comment
 * stripping, paragraphs, continuation lines, inheritance from the global
 * paragraph, validation, merging of entries with the same build artifacts,
 * SharedTags grouping and bashbrew architecture -> OCI platform mapping.
 * A broken file gives one error naming the repository, the line and what is
 * wrong (bashbrew rejects the whole file too). One deliberate difference: a
 * NUL byte is an error (bashbrew would carry it into values).
 *
 * The model the rest of hubsync uses:
 *   repository -> entries (one image index each: Tags, SharedTags,
 *                 architectures, build fields, build fingerprint)
 *              -> groups (what gets pushed: one index per group)
 *   groups: first one OI_GROUP_TAGS group per entry (its Tags, its
 *   platforms), in file order; then one OI_GROUP_SHARED group per distinct
 *   set of entries sharing SharedTags (its shared tags in file order, the
 *   sorted union of its entries' platforms), in order of first appearance.
 * Every string and array belongs to the repository; free it all with
 * oi_repo_free(). */
#ifndef HUBSYNC_OI_H
#define HUBSYNC_OI_H

#include <stddef.h>

#include "err.h"
#include "strv.h"

/* An architecture-specific field: key "<arch>-<Field>" (Field one of
 * GitRepo, GitFetch, GitCommit, Directory, File, Builder) and its value. */
struct oi_arch_field {
    char *key;
    char *value;
};

/* Hex SHA-256 of the canonical text of an entry's build artifacts (sorted
 * Architectures, GitRepo, GitFetch, GitCommit, cleaned Directory, File,
 * Builder, Constraints, non-empty arch-specific fields). Two entries with the
 * same fingerprint build the same images; a new GitCommit changes it. */
#define OI_FINGERPRINT_LEN 64

struct oi_entry {
    struct strv tags;        /* Tags in file order; tags.v[0] identifies the entry */
    struct strv shared_tags; /* SharedTags, de-duplicated, file order */
    struct strv arches;      /* bashbrew architectures, de-duplicated, sorted */
    struct strv platforms;   /* OCI platforms of arches ("linux/arm64/v8"), sorted */
    struct strv maintainers; /* global ones first, then the entry's */
    struct strv constraints; /* global ones first, then the entry's */
    char *git_repo;
    char *git_fetch;
    char *git_commit;
    char *directory; /* path-cleaned */
    char *file;
    char *builder;                     /* "" when not set */
    struct oi_arch_field *arch_fields; /* non-empty ones, sorted by key */
    size_t narch_fields;
    char fingerprint[OI_FINGERPRINT_LEN + 1];
    int line; /* first line of the entry's paragraph */
};

enum oi_group_kind { OI_GROUP_TAGS, OI_GROUP_SHARED };

struct oi_group {
    enum oi_group_kind kind;
    struct strv tags;      /* tags pushed for this index, file order */
    struct strv platforms; /* sorted, distinct */
    size_t *entries;          /* indexes into oi_repo.entries (one for a tags group) */
    size_t nentries;
};

struct oi_repo {
    char *name;
    struct oi_entry *entries;
    size_t nentries;
    struct oi_group *groups; /* tags groups (one per entry), then shared groups */
    size_t ngroups;
};

/* Parse the library file `data` (len bytes, need not be NUL-terminated) of
 * repository `name`. On success *out is a new repository (caller frees with
 * oi_repo_free); on error returns -1 with "library/<name> line N: ...". */
int oi_parse(const char *data, size_t len, const char *name, struct oi_repo **out, struct err *e);
void oi_repo_free(struct oi_repo *r);

/* OCI platform ("os/architecture[/variant]") of a bashbrew architecture, or
 * NULL if bashbrew does not support it. Static string. */
const char *oi_arch_platform(const char *arch);

/* The value of Field (e.g. "GitCommit") that arch builds from: the
 * "<arch>-<Field>" value when set and non-empty, else the plain field.
 * Borrowed from the entry; NULL for an unknown Field. */
const char *oi_entry_arch_value(const struct oi_entry *en, const char *arch, const char *field);

/* The group's stable key "<repo>:<first tag>" (the job key). Caller frees. */
char *oi_group_key(const struct oi_repo *r, const struct oi_group *g);

/* Index of the group whose tags contain `tag` and has the given kind, or -1. */
long oi_find_group(const struct oi_repo *r, enum oi_group_kind kind, const char *tag);

#endif
