/* tagfilter: which tags of a repository a sync file's entry takes.
 *
 * A filter holds includes of four kinds (exact names, shell globs as
 * fnmatch(3), POSIX extended regular expressions as regcomp(3), matched
 * anywhere in the tag unless anchored, and semver ranges, semver.h), the
 * same kinds of excludes but names, and an optional "newest N". A tag is
 * taken when it matches an include (any tag when there are none) and no
 * exclude; then, with newest N, only the N highest of those in the chosen
 * order: by semver precedence (tags that are no versions do not count), or
 * by tag order (numbers within the tags compared as numbers, as `sort -V`:
 * 3.9 < 3.10). A referrer's fallback tag (sha256-<hex>.sig, ...) is taken
 * by its exact name only. Each item is checked as it is added, so a caller
 * can say where a bad one was written. */
#ifndef HUBSYNC_TAGFILTER_H
#define HUBSYNC_TAGFILTER_H

#include <stddef.h>

#include "err.h"

enum tagfilter_kind {
    TAGFILTER_NAME,           /* an exact tag */
    TAGFILTER_GLOB,           /* fnmatch(3) pattern */
    TAGFILTER_REGEX,          /* POSIX ERE */
    TAGFILTER_SEMVER,         /* semver range */
    TAGFILTER_EXCLUDE_GLOB,
    TAGFILTER_EXCLUDE_REGEX,
    TAGFILTER_EXCLUDE_SEMVER,
};

enum tagfilter_order {
    TAGFILTER_BY_SEMVER,
    TAGFILTER_BY_TAG,
};

struct tagfilter;

struct tagfilter *tagfilter_new(void);
void tagfilter_free(struct tagfilter *f);

/* Add one item; -1 with a message saying what is wrong with it (a name
 * that is no tag, a regular expression regcomp refuses, a bad range). */
int tagfilter_add(struct tagfilter *f, enum tagfilter_kind kind, const char *text,
                  struct err *e);
/* Keep only the n (>= 1) newest. */
void tagfilter_newest(struct tagfilter *f, int n, enum tagfilter_order order);

/* 1 when only exact names are included, with no exclude and no newest: the
 * tags are known without listing the repository. */
int tagfilter_names_only(const struct tagfilter *f);
/* The included names (borrowed), for tagfilter_names_only filters. */
size_t tagfilter_names(const struct tagfilter *f, const char *const **names);

/* Referrers' fallback tags (cosign's and notation's scheme): the signature,
 * attestation and SBOM of sha256:<hex> are tagged sha256-<hex>.sig, .att, .sbom. */
#define TAGFILTER_REFERRER_KINDS 3
#define TAGFILTER_REFERRER_TAG_SIZE (7 + 64 + 6)
/* The fallback tag of kind k (< TAGFILTER_REFERRER_KINDS) of digest
 * ("sha256:<64 hex>") into tag. */
void tagfilter_referrer_tag_of(const char *digest, size_t k,
                               char tag[TAGFILTER_REFERRER_TAG_SIZE]);
/* 1 if tag is a referrer's fallback tag, of any digest. */
int tagfilter_referrer_tag(const char *tag);

/* 1 if tag passes the includes and excludes (newest aside). A referrer's
 * fallback tag passes only an exact name: globs, regular expressions, semver
 * ranges and "all tags" leave it, since it travels as a referrer of the
 * digest it names. */
int tagfilter_match(const struct tagfilter *f, const char *tag);

/* The tags of tags[0..n) the filter takes, in their order in tags, into
 * out[] (borrowed pointers; out has room for n). Returns how many. */
size_t tagfilter_apply(const struct tagfilter *f, const char *const *tags, size_t n,
                       const char **out);

#endif
