/* catalog: the docker-library/official-images catalog, read through libgit2.
 *
 * Opens an official-images source (a local repository, bare or not, or a
 * URL), resolves any revision, parses every `library/<name>` blob of a
 * commit with oi_parse() (a broken file becomes one entry in the errors
 * list; the other files are still read) and diffs two commits per
 * repository: the groups added, removed and changed, which is what the
 * coordinator turns into jobs. Not thread-safe: one catalog per thread. */
#ifndef HUBSYNC_CATALOG_H
#define HUBSYNC_CATALOG_H

#include <stddef.h>

#include "err.h"
#include "oi.h"

#define CATALOG_SHA_LEN 40

struct catalog; /* an opened source */

/* How a clone or fetch runs: in a child process (libgit2 1.5 has no network
 * timeout), cut off after timeout_s (0: never) or when tick(arg), called
 * about once a second meanwhile (e.g. to renew a lease), returns -1. */
struct catalog_fetch {
    int timeout_s;
    int (*tick)(void *arg); /* may be NULL */
    void *arg;
};

/* Open `source`. Without a workdir a local path is read in place and a URL
 * (anything with "://") is cloned into a temporary folder that
 * catalog_close() removes. With a workdir, a bare clone of the source is
 * kept there: created on the first open, fetched on every later one (the
 * clone's HEAD follows the source's default branch). fetch may be NULL (no
 * timeout, no tick). A missing path, an unreachable URL or a fetch cut off
 * is one clear error. Caller closes with catalog_close(). */
int catalog_open(struct catalog **out, const char *source, const char *workdir,
                 const struct catalog_fetch *fetch, struct err *e);
void catalog_close(struct catalog *c);

/* Resolve a revision (branch, tag, full or short sha, "HEAD~3", ...; NULL
 * for the default: HEAD, else master) to a commit's full hex sha. */
int catalog_resolve(struct catalog *c, const char *rev, char sha[CATALOG_SHA_LEN + 1],
                    struct err *e);

/* The commits reachable from rev (NULL: the default), newest first, as full
 * hex shas appended to out (caller frees with strv_free). */
int catalog_log(struct catalog *c, const char *rev, struct strv *out, struct err *e);

/* A library file that could not be read; msg names repository and line. */
struct catalog_error {
    char *repo;
    char *msg;
};

struct catalog_snapshot {
    char commit[CATALOG_SHA_LEN + 1];
    struct oi_repo **repos; /* parsed repositories, sorted by name */
    size_t nrepos;
    struct catalog_error *errors; /* broken (or, with `only`, missing) files */
    size_t nerrors;
};

/* Read every library file at rev (NULL: the default). With `only` (NULL
 * or empty: all), read just those repositories; a name that has no file is
 * an error entry. -1 only when rev does not resolve or the commit has no
 * library/ folder. Caller frees with catalog_snapshot_free(). */
int catalog_read(struct catalog *c, const char *rev, const struct strv *only,
                 struct catalog_snapshot **out, struct err *e);
void catalog_snapshot_free(struct catalog_snapshot *s);

/* Append to missing (caller frees) the names that have no library file at
 * rev (NULL: the default), whose full sha goes to sha. Reads the tree only,
 * no file. -1 as catalog_read(). */
int catalog_missing(struct catalog *c, const char *rev, const struct strv *names,
                    char sha[CATALOG_SHA_LEN + 1], struct strv *missing, struct err *e);

struct catalog_totals {
    size_t repositories;
    size_t entries;
    size_t shared_groups;
    size_t groups;          /* entries + shared groups */
    size_t tags;            /* distinct tags (Tags and SharedTags), summed over repositories */
    size_t entry_platforms; /* sum over entries of their architectures */
};

void catalog_count(const struct catalog_snapshot *s, struct catalog_totals *t);

/* ---- diff ---- */

enum catalog_change { CATALOG_ADDED, CATALOG_REMOVED, CATALOG_CHANGED };

/* "added", "removed", "changed" */
const char *catalog_change_name(enum catalog_change c);

struct catalog_group_change {
    enum catalog_change change;
    enum oi_group_kind kind;
    char *key;                   /* oi_group_key() of the new group (old one if removed) */
    char *old_key;               /* changed only: the old group's key (may equal key) */
    struct strv tags;         /* the new group's tags (old ones if removed) */
    struct strv platforms;    /* likewise */
    struct strv removed_tags; /* old group's tags that no group of the repository has now */
};

struct catalog_repo_diff {
    char *name;
    enum catalog_change change;          /* file added, removed or changed */
    struct catalog_group_change *groups; /* new file order (added, changed), then removed */
    size_t ngroups;
};

struct catalog_diff {
    char from[CATALOG_SHA_LEN + 1];
    char to[CATALOG_SHA_LEN + 1];
    struct catalog_repo_diff *repos; /* repositories with group changes, by name */
    size_t nrepos;
    struct catalog_error *errors; /* files broken at `to`: their changes are unknown */
    size_t nerrors;
};

/* What changed in library/ from `from` to `to`. Groups are matched per kind
 * by the tags they share (the pair with most tags in common first); a
 * matched group is changed when its tags, its platforms or the build
 * fingerprint of one of its entries changed. A file broken at `from` counts
 * as absent there. Caller frees with catalog_diff_free(). */
int catalog_diff(struct catalog *c, const char *from, const char *to, struct catalog_diff **out,
                 struct err *e);
void catalog_diff_free(struct catalog_diff *d);

/* The group changes between two versions of one repository (old or new may
 * be NULL: added or removed file), appended to out->groups. Pure. */
void catalog_diff_repo(const struct oi_repo *old, const struct oi_repo *new_,
                       struct catalog_repo_diff *out);

#endif
