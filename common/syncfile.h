/* syncfile: the sync file, YAML: images beyond the official ones, from any registry,
 * which of their tags and digests, where they land on the target. The
 * coordinator reads it to plan runs; workers read the same file to know
 * which registries they may copy from and with which credentials (a job
 * never chooses where credentials go). docs/sync-file.md is the format:
 *
 *   version: 1
 *   registries:                 # optional
 *     ghcr.io:
 *       url: https://ghcr.io    # default https://<name>
 *       credentials: [HUBSYNC_GHCR]   # accounts: <PREFIX>_USERNAME + _PASSWORD(_FILE)
 *     docker.io:
 *       credentials: [HUB_A, HUB_B]   # pooled: each pull from the one with most left
 *   defaults: {referrers: true, platforms: [linux/amd64], platform_policy: sparse}
 *   sync:
 *     - source: ghcr.io/org/app       # [registry/]repository[:tag][@digest]
 *       target: mirror/app            # default: the source's path, under its registry's
 *                                     # name unless that is docker.io
 *       tags: [v1, latest]            # or {names, glob, regex, semver, exclude,
 *                                     #  exclude_regex, exclude_semver, newest, order}
 *       digests: [sha256:...]
 *       platforms: [...]; platform_policy: ...; referrers: false
 *
 * docker.io is Docker Hub: the programs' --upstream, never a url here. The
 * whole file is checked before anything uses it; every error is one line
 * "<path>:<line>:<column>: <where>: <what>". Unknown keys are errors. */
#ifndef HUBSYNC_SYNCFILE_H
#define HUBSYNC_SYNCFILE_H

#include <stddef.h>

#include "err.h"
#include "job.h"
#include "strv.h"
#include "tagfilter.h"

#define SYNCFILE_MAX_BYTES (1L << 20)
#define SYNCFILE_MAX_ENTRIES 10000
#define SYNCFILE_MAX_ACCOUNTS 1 /* an account per registry ... */
#define SYNCFILE_MAX_HUB_ACCOUNTS 16 /* ... but docker.io's, pooled: a pull budget each */
#define SYNCFILE_HUB "docker.io"

/* A registry entries copy from. */
struct syncfile_registry {
    char *name;               /* "docker.io", "ghcr.io", "localhost:5000" */
    char *url;                /* NULL for docker.io (the --upstream); else http(s) URL */
    struct strv accounts;  /* the environment prefix of its account (at most one);
                               * none: docker's config.json and credential helpers.
                               * docker.io: its pooled accounts, each its own pull
                               * budget (source: the prefix); none: HUBSYNC_UPSTREAM */
    int line, column;         /* where it was declared (0: only named by a source) */
};

/* One entry of `sync`. */
struct syncfile_entry {
    int line, column;
    char *source;              /* as written */
    const struct syncfile_registry *registry; /* borrowed from the file */
    char *repo;                /* the source repository ("bitnami/redis", "org/app") */
    char *target;              /* the target repository */
    struct tagfilter *tags;    /* NULL: no tag (digests only) */
    int all_tags;              /* tags is a filter over a listing (not names only) */
    struct strv digests;    /* pinned digests */
    struct strv platforms;
    enum job_policy policy;
    int referrers;             /* copy signatures, attestations and other referrers along */
};

struct syncfile {
    char *path;
    struct syncfile_registry *regs; /* declared ones, then the others entries name */
    size_t nregs;
    struct syncfile_entry *entries;
    size_t nentries;
};

/* Read and check the file at path. NULL with "<path>: ..." or
 * "<path>:<line>:<column>: ..." in e. Free with syncfile_free. */
struct syncfile *syncfile_load(const char *path, struct err *e);
/* The same from len bytes of text; path names it in messages. */
struct syncfile *syncfile_parse(const char *text, size_t len, const char *path, struct err *e);
void syncfile_free(struct syncfile *s);

/* The registry named name (case-insensitive; Hub aliases are docker.io), or NULL. */
const struct syncfile_registry *syncfile_registry(const struct syncfile *s, const char *name);

/* The URL jobs name for r: its url, or upstream for docker.io. Borrowed. */
const char *syncfile_registry_url(const struct syncfile_registry *r, const char *upstream);

/* A short form of the entry's source for reports: "ghcr.io/org/app",
 * "bitnami/redis" (docker.io left out). Caller frees. */
char *syncfile_entry_name(const struct syncfile_entry *en);

#endif
