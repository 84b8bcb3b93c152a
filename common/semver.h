/* semver: version tags and version ranges, for a sync file's `semver:` and
 * `newest:` tag filters.
 *
 * Tags are read leniently, as registries' tags are written: an optional
 * "v", one to three numbers ("3", "3.12", "3.12.1"; missing ones are 0) and
 * an optional "-prerelease" ("3.12.1-slim" has the prerelease "slim");
 * anything else ("3.15.0rc1", "latest", "1.2.3.4") is not a version.
 * Precedence is Semantic Versioning 2.0's (a prerelease sorts before its
 * release; its dot-separated identifiers compare numerically when numeric,
 * numbers before words).
 *
 * Ranges follow npm's node-semver grammar: comparators `<`, `<=`, `>`, `>=`,
 * `=` on partial versions, `~` and `^`, X-ranges (`1.2.x`, `1.*`, `*`, or a
 * bare partial version: `1.2` is >=1.2.0 <1.3.0), hyphen ranges
 * (`1.2 - 1.4`), comparators joined by spaces or commas (all must hold) and
 * alternatives by `||`. As there, a version with a prerelease matches only a
 * set of comparators of which one names a prerelease of the same
 * major.minor.patch: `>=3.12` does not take "3.13.0-slim". Nothing here does
 * I/O; errors are one line naming the range and the position. */
#ifndef HUBSYNC_SEMVER_H
#define HUBSYNC_SEMVER_H

#include "err.h"

#define SEMVER_PRE_MAX 128

struct semver {
    long long major, minor, patch;
    int parts;                 /* numbers written, 1..3 (ranges: 0 for "*") */
    char pre[SEMVER_PRE_MAX];  /* prerelease, "" for none */
};

/* 0 and *out if s is a version tag as above, else -1. */
int semver_parse(const char *s, struct semver *out);

/* <0, 0, >0 by precedence (parts written do not count: 3.12 == 3.12.0). */
int semver_cmp(const struct semver *a, const struct semver *b);

struct semver_range;

/* Parse a range; -1 with a message naming the range and what is wrong at
 * which character (1-based). Free with semver_range_free. */
int semver_range_parse(const char *s, struct semver_range **out, struct err *e);
void semver_range_free(struct semver_range *r);

/* 1 if v satisfies r. */
int semver_range_match(const struct semver_range *r, const struct semver *v);

#endif
