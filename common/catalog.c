/* catalog: see catalog.h. */
#include "catalog.h"

#include <errno.h>
#include <ftw.h>
#include <git2.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "xalloc.h"

struct catalog {
    git_repository *repo;
    char *tmpdir; /* temporary clone to remove on close, or NULL */
};

/* libgit2's last error message (never NULL). */
static const char *git_msg(void)
{
    const git_error *ge = git_error_last();
    return ge && ge->message ? ge->message : "unknown libgit2 error";
}

/* "scheme://..." or scp-like "user@host:path" (a colon before any slash). */
static int is_url(const char *s)
{
    const char *colon = strchr(s, ':'), *slash = strchr(s, '/');
    return strstr(s, "://") != NULL ||
           (colon && (!slash || colon < slash) && memchr(s, '@', (size_t)(colon - s)));
}

/* The URL as it may be shown: user information (a user, a password or a
 * token) in "scheme://userinfo@host" becomes "***". Caller frees. */
static char *shown_url(const char *url)
{
    const char *scheme = strstr(url, "://");
    if (!scheme)
        return xstrdup(url);
    const char *host = scheme + 3, *end = host + strcspn(host, "/");
    const char *at = memrchr(host, '@', (size_t)(end - host));
    if (!at)
        return xstrdup(url);
    return xasprintf("%.*s***%s", (int)(host - url), url, at);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Fetch the source's branches and tags into the bare clone `repo` (mirror
 * refspecs: the clone's refs are the source's) and point its HEAD at the
 * source's default branch. The remote is anonymous and ignores
 * url.*.insteadOf: the clone keeps no remote configuration, so a changed
 * URL needs nothing special, and libgit2 1.5's config regex matching,
 * which leaks, is never used. */
static int fetch_source(git_repository *repo, const char *url, const char *shown,
                        struct err *e)
{
    int rc = -1;
    git_remote *remote = NULL;
    git_buf head = {NULL, 0, 0};
    git_fetch_options fo;
    git_remote_create_options ro;
    char heads[] = "+refs/heads/*:refs/heads/*", tags[] = "+refs/tags/*:refs/tags/*";
    char *specs[] = {heads, tags};
    git_strarray refspecs = {specs, 2};

    if (git_remote_create_options_init(&ro, GIT_REMOTE_CREATE_OPTIONS_VERSION) < 0 ||
        git_fetch_options_init(&fo, GIT_FETCH_OPTIONS_VERSION) < 0) {
        err_set(e, "official-images source '%s': %s", shown, git_msg());
        goto out;
    }
    ro.repository = repo;
    ro.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
    if (git_remote_create_with_opts(&remote, url, &ro) < 0) {
        err_set(e, "official-images source '%s': %s", shown, git_msg());
        goto out;
    }
    fo.prune = GIT_FETCH_PRUNE;
    fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE; /* the refspec brings them */
    if (git_remote_fetch(remote, &refspecs, &fo, "hubsync: fetch official-images") < 0) {
        err_set(e, "official-images source '%s': fetch failed: %s", shown, git_msg());
        goto out;
    }
    if (git_remote_default_branch(&head, remote) == 0 &&
        git_repository_set_head(repo, head.ptr) < 0) {
        err_set(e, "official-images clone: cannot set HEAD to %s: %s", head.ptr, git_msg());
        goto out;
    }
    rc = 0;
out:
    git_buf_dispose(&head);
    git_remote_free(remote);
    return rc;
}

/* Open or create the bare clone in dir, then fetch. */
static int open_clone(git_repository **repo, const char *url, const char *dir, struct err *e)
{
    int rc = -1;
    char *shown = shown_url(url);
    if (git_repository_open_bare(repo, dir) < 0) {
        struct stat st;
        if (stat(dir, &st) == 0 && (!S_ISDIR(st.st_mode) || rmdir(dir) < 0)) {
            err_set(e, "workdir '%s' exists and is not an official-images clone", dir);
            goto out;
        }
        if (git_repository_init(repo, dir, 1) < 0) {
            err_set(e, "workdir '%s': cannot create a repository: %s", dir, git_msg());
            goto out;
        }
        log_info("official-images clone created workdir=%s source=%s", dir, shown);
    }
    rc = fetch_source(*repo, url, shown, e);
out:
    free(shown);
    return rc;
}

/* open_clone in a child process, so that a transfer that hangs can be cut
 * off and the caller's tick runs meanwhile; the parent then opens the clone
 * the child left in dir. The child's only output is its error message. */
static int clone_in_child(git_repository **repo, const char *url, const char *dir,
                          const struct catalog_fetch *f, struct err *e)
{
    static const struct catalog_fetch none = {0, NULL, NULL};
    char msg[ERR_MSG_MAX] = "";
    size_t len = 0;
    int fds[2], status = 0, cut = 0;
    if (!f)
        f = &none;
    if (pipe(fds) < 0)
        return err_set(e, "official-images clone: pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return err_set(e, "official-images clone: fork: %s", strerror(errno));
    }
    if (pid == 0) {
        struct err ce = {""};
        git_repository *r = NULL;
        close(fds[0]);
        int rc = open_clone(&r, url, dir, &ce);
        if (rc < 0 && write(fds[1], ce.msg, strlen(ce.msg)) < 0)
            rc = -1;
        _exit(rc < 0 ? 1 : 0); /* nothing of the parent's is flushed or freed twice */
    }
    close(fds[1]);
    time_t start = time(NULL);
    for (;;) {
        struct pollfd p = {fds[0], POLLIN, 0};
        int n = poll(&p, 1, 1000);
        if (n > 0) {
            ssize_t got = read(fds[0], msg + len, sizeof(msg) - 1 - len);
            if (got <= 0)
                break; /* the child is gone (or said all it may) */
            len += (size_t)got;
            continue;
        }
        if (n < 0 && errno != EINTR)
            break;
        if (f->timeout_s > 0 && time(NULL) - start >= f->timeout_s)
            cut = 1;
        else if (f->tick && f->tick(f->arg) < 0)
            cut = 2;
        if (cut) {
            kill(pid, SIGKILL);
            break;
        }
    }
    close(fds[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    msg[len] = '\0';
    if (cut == 1)
        return err_set(e, "official-images clone: the fetch took longer than %d s; cut off",
                       f->timeout_s);
    if (cut == 2)
        return err_set(e, "official-images clone: fetch stopped");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return err_set(e, "%s", msg[0] ? msg : "official-images clone: the fetch process failed");
    if (git_repository_open_bare(repo, dir) < 0)
        return err_set(e, "workdir '%s': cannot open the clone: %s", dir, git_msg());
    return 0;
}

int catalog_open(struct catalog **out, const char *source, const char *workdir,
                 const struct catalog_fetch *fetch, struct err *e)
{
    int rc = -1;
    struct catalog *c = xcalloc(1, sizeof(*c));
    char *url = NULL;
    *out = NULL;

    if (git_libgit2_init() < 0) {
        err_set(e, "cannot initialise libgit2: %s", git_msg());
        free(c);
        return -1;
    }
    if (!source || !*source) {
        err_set(e, "no official-images source given");
        goto out;
    }
    if (!is_url(source)) {
        struct stat st;
        char *abs;
        if (stat(source, &st) < 0) {
            err_set(e, "official-images source '%s': %s", source, strerror(errno));
            goto out;
        }
        if (!workdir) {
            if (git_repository_open_ext(&c->repo, source, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) <
                0) {
                err_set(e, "official-images source '%s' is not a git repository: %s", source,
                        git_msg());
                goto out;
            }
            rc = 0;
            goto out;
        }
        abs = realpath(source, NULL);
        url = abs ? xstrdup(abs) : xstrdup(source);
        free(abs);
    } else {
        url = xstrdup(source);
    }
    if (!workdir) {
        char tmpl[] = "/tmp/hubsync-official-images-XXXXXX";
        if (!mkdtemp(tmpl)) {
            err_set(e, "cannot create a temporary folder for the clone: %s", strerror(errno));
            goto out;
        }
        c->tmpdir = xstrdup(tmpl);
        workdir = c->tmpdir;
    }
    if (clone_in_child(&c->repo, url, workdir, fetch, e) < 0)
        goto out;
    rc = 0;
out:
    free(url);
    if (rc < 0)
        catalog_close(c);
    else
        *out = c;
    return rc;
}

void catalog_close(struct catalog *c)
{
    if (!c)
        return;
    git_repository_free(c->repo);
    if (c->tmpdir && nftw(c->tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
        log_warn("cannot remove temporary clone dir=%s: %s", c->tmpdir, strerror(errno));
    free(c->tmpdir);
    free(c);
    git_libgit2_shutdown();
}

static int lookup_commit(struct catalog *c, const char *rev, git_commit **commit, struct err *e)
{
    git_object *obj = NULL;
    const char *spec = rev ? rev : "HEAD";
    int r = git_revparse_single(&obj, c->repo, spec);
    if (r < 0 && !rev)
        r = git_revparse_single(&obj, c->repo, spec = "master");
    if (r < 0)
        return err_set(e, "unknown revision '%s' in the official-images source",
                       rev ? rev : "HEAD");
    r = git_object_peel((git_object **)commit, obj, GIT_OBJECT_COMMIT);
    git_object_free(obj);
    if (r < 0)
        return err_set(e, "revision '%s' is not a commit", spec);
    return 0;
}

int catalog_resolve(struct catalog *c, const char *rev, char sha[CATALOG_SHA_LEN + 1],
                    struct err *e)
{
    git_commit *commit = NULL;
    if (lookup_commit(c, rev, &commit, e) < 0)
        return -1;
    git_oid_tostr(sha, CATALOG_SHA_LEN + 1, git_commit_id(commit));
    git_commit_free(commit);
    return 0;
}

int catalog_log(struct catalog *c, const char *rev, struct strv *out, struct err *e)
{
    int rc = -1;
    git_commit *commit = NULL;
    git_revwalk *walk = NULL;
    git_oid oid;
    if (lookup_commit(c, rev, &commit, e) < 0)
        goto out;
    if (git_revwalk_new(&walk, c->repo) < 0 ||
        git_revwalk_sorting(walk, GIT_SORT_TOPOLOGICAL | GIT_SORT_TIME) < 0 ||
        git_revwalk_push(walk, git_commit_id(commit)) < 0) {
        err_set(e, "cannot walk the official-images history: %s", git_msg());
        goto out;
    }
    while (git_revwalk_next(&oid, walk) == 0) {
        char sha[CATALOG_SHA_LEN + 1];
        strv_push(out, xstrdup(git_oid_tostr(sha, sizeof(sha), &oid)));
    }
    rc = 0;
out:
    git_revwalk_free(walk);
    git_commit_free(commit);
    return rc;
}

/* The library/ tree of a commit. */
static int library_tree(struct catalog *c, git_commit *commit, git_tree **lib, struct err *e)
{
    int rc = -1;
    git_tree *root = NULL;
    git_tree_entry *te = NULL;
    char sha[CATALOG_SHA_LEN + 1];
    git_oid_tostr(sha, sizeof(sha), git_commit_id(commit));
    if (git_commit_tree(&root, commit) < 0) {
        err_set(e, "commit %s: cannot read its tree: %s", sha, git_msg());
        goto out;
    }
    if (git_tree_entry_bypath(&te, root, "library") < 0 ||
        git_tree_entry_type(te) != GIT_OBJECT_TREE) {
        err_set(e, "commit %s has no library/ folder", sha);
        goto out;
    }
    if (git_tree_lookup(lib, c->repo, git_tree_entry_id(te)) < 0) {
        err_set(e, "commit %s: cannot read library/: %s", sha, git_msg());
        goto out;
    }
    rc = 0;
out:
    git_tree_entry_free(te);
    git_tree_free(root);
    return rc;
}

static void add_error(struct catalog_error **errs, size_t *n, const char *repo, const char *msg)
{
    *errs = xrealloc(*errs, (*n + 1) * sizeof(**errs));
    (*errs)[*n].repo = xstrdup(repo);
    (*errs)[*n].msg = xstrdup(msg);
    (*n)++;
}

static void free_errors(struct catalog_error *errs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(errs[i].repo);
        free(errs[i].msg);
    }
    free(errs);
}

/* Parse the blob `id` as library/<name>; NULL with *e set when broken. */
static struct oi_repo *parse_blob(struct catalog *c, const git_oid *id, const char *name,
                                  struct err *e)
{
    git_blob *blob = NULL;
    struct oi_repo *r = NULL;
    if (git_blob_lookup(&blob, c->repo, id) < 0) {
        err_set(e, "library/%s: cannot read the blob: %s", name, git_msg());
        return NULL;
    }
    if (oi_parse(git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob), name, &r, e) < 0)
        r = NULL;
    git_blob_free(blob);
    return r;
}

static int is_file_entry(const git_tree_entry *te)
{
    git_filemode_t m = git_tree_entry_filemode(te);
    return m == GIT_FILEMODE_BLOB || m == GIT_FILEMODE_BLOB_EXECUTABLE;
}

static int has_file(const git_tree *lib, const char *name)
{
    const git_tree_entry *te = git_tree_entry_byname(lib, name);
    return te && is_file_entry(te);
}

static int wanted(const struct strv *only, const char *name)
{
    if (!only || only->n == 0)
        return 1;
    for (size_t i = 0; i < only->n; i++)
        if (strcmp(only->v[i], name) == 0)
            return 1;
    return 0;
}

int catalog_read(struct catalog *c, const char *rev, const struct strv *only,
                 struct catalog_snapshot **out, struct err *e)
{
    int rc = -1;
    git_commit *commit = NULL;
    git_tree *lib = NULL;
    struct catalog_snapshot *s = xcalloc(1, sizeof(*s));
    *out = NULL;

    if (lookup_commit(c, rev, &commit, e) < 0 || library_tree(c, commit, &lib, e) < 0)
        goto out;
    git_oid_tostr(s->commit, sizeof(s->commit), git_commit_id(commit));

    size_t n = git_tree_entrycount(lib);
    s->repos = xcalloc(n ? n : 1, sizeof(*s->repos));
    for (size_t i = 0; i < n; i++) {
        const git_tree_entry *te = git_tree_entry_byindex(lib, i);
        const char *name = git_tree_entry_name(te);
        if (!is_file_entry(te) || !wanted(only, name))
            continue;
        struct err pe;
        struct oi_repo *r = parse_blob(c, git_tree_entry_id(te), name, &pe);
        if (r)
            s->repos[s->nrepos++] = r; /* tree entries come sorted by name */
        else
            add_error(&s->errors, &s->nerrors, name, pe.msg);
    }
    for (size_t i = 0; only && i < only->n; i++) {
        if (!has_file(lib, only->v[i])) {
            char msg[ERR_MSG_MAX];
            snprintf(msg, sizeof(msg), "library/%s: no such file at commit %s", only->v[i],
                     s->commit);
            add_error(&s->errors, &s->nerrors, only->v[i], msg);
        }
    }
    rc = 0;
out:
    git_tree_free(lib);
    git_commit_free(commit);
    if (rc < 0)
        catalog_snapshot_free(s);
    else
        *out = s;
    return rc;
}

int catalog_missing(struct catalog *c, const char *rev, const struct strv *names,
                    char sha[CATALOG_SHA_LEN + 1], struct strv *missing, struct err *e)
{
    int rc = -1;
    git_commit *commit = NULL;
    git_tree *lib = NULL;
    if (lookup_commit(c, rev, &commit, e) < 0 || library_tree(c, commit, &lib, e) < 0)
        goto out;
    git_oid_tostr(sha, CATALOG_SHA_LEN + 1, git_commit_id(commit));
    for (size_t i = 0; i < names->n; i++)
        if (!has_file(lib, names->v[i]))
            strv_push(missing, xstrdup(names->v[i]));
    rc = 0;
out:
    git_tree_free(lib);
    git_commit_free(commit);
    return rc;
}

void catalog_snapshot_free(struct catalog_snapshot *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nrepos; i++)
        oi_repo_free(s->repos[i]);
    free(s->repos);
    free_errors(s->errors, s->nerrors);
    free(s);
}

void catalog_count(const struct catalog_snapshot *s, struct catalog_totals *t)
{
    memset(t, 0, sizeof(*t));
    t->repositories = s->nrepos;
    for (size_t i = 0; i < s->nrepos; i++) {
        const struct oi_repo *r = s->repos[i];
        t->entries += r->nentries;
        t->groups += r->ngroups;
        t->shared_groups += r->ngroups - r->nentries;
        /* a tag belongs to one tags group and a shared tag to one shared
         * group, and oi rejects a tag that is both: group tags are distinct */
        for (size_t g = 0; g < r->ngroups; g++)
            t->tags += r->groups[g].tags.n;
        for (size_t k = 0; k < r->nentries; k++)
            t->entry_platforms += r->entries[k].arches.n;
    }
}

/* ---- diff ---------------------------------------------------------------- */

const char *catalog_change_name(enum catalog_change c)
{
    return c == CATALOG_ADDED ? "added" : c == CATALOG_REMOVED ? "removed" : "changed";
}

/* A (kind, tag) -> group index, for matching and lookups by bsearch. */
struct tag_ref {
    const char *tag;
    int kind;
    size_t group;
};

static int cmp_tag_ref(const void *a, const void *b)
{
    const struct tag_ref *x = a, *y = b;
    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    return strcmp(x->tag, y->tag);
}

static struct tag_ref *index_tags(const struct oi_repo *r, size_t *n)
{
    *n = 0;
    for (size_t g = 0; r && g < r->ngroups; g++)
        *n += r->groups[g].tags.n;
    struct tag_ref *refs = xcalloc(*n ? *n : 1, sizeof(*refs));
    size_t k = 0;
    for (size_t g = 0; r && g < r->ngroups; g++)
        for (size_t t = 0; t < r->groups[g].tags.n; t++)
            refs[k++] = (struct tag_ref){r->groups[g].tags.v[t], (int)r->groups[g].kind, g};
    qsort(refs, *n, sizeof(*refs), cmp_tag_ref);
    return refs;
}

static const struct tag_ref *find_tag(const struct tag_ref *refs, size_t n, int kind,
                                      const char *tag)
{
    struct tag_ref probe = {tag, kind, 0};
    return bsearch(&probe, refs, n, sizeof(probe), cmp_tag_ref);
}

struct pair {
    size_t common, old, new_;
};

static int cmp_pair(const void *a, const void *b)
{
    const struct pair *x = a, *y = b;
    if (x->common != y->common)
        return x->common > y->common ? -1 : 1;
    if (x->old != y->old)
        return x->old < y->old ? -1 : 1;
    return x->new_ < y->new_ ? -1 : x->new_ > y->new_;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* 1 when a and b hold the same strings with the same counts, in any order. */
static int same_multiset(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb)
        return 0;
    char **x = xcalloc(na ? na : 1, sizeof(char *)), **y = xcalloc(nb ? nb : 1, sizeof(char *));
    memcpy(x, a, na * sizeof(char *));
    memcpy(y, b, nb * sizeof(char *));
    qsort(x, na, sizeof(char *), cmp_strp);
    qsort(y, nb, sizeof(char *), cmp_strp);
    int same = 1;
    for (size_t i = 0; i < na && same; i++)
        same = strcmp(x[i], y[i]) == 0;
    free(x);
    free(y);
    return same;
}

/* The build fingerprints of a group's entries; caller frees the array. */
static char **fingerprints(const struct oi_repo *r, const struct oi_group *g)
{
    char **f = xcalloc(g->nentries ? g->nentries : 1, sizeof(char *));
    for (size_t i = 0; i < g->nentries; i++)
        f[i] = r->entries[g->entries[i]].fingerprint;
    return f;
}

static int group_changed(const struct oi_repo *o, const struct oi_group *og,
                         const struct oi_repo *n, const struct oi_group *ng)
{
    if (!same_multiset(og->tags.v, og->tags.n, ng->tags.v, ng->tags.n) ||
        !same_multiset(og->platforms.v, og->platforms.n, ng->platforms.v, ng->platforms.n))
        return 1;
    char **fo = fingerprints(o, og), **fn = fingerprints(n, ng);
    int changed = !same_multiset(fo, og->nentries, fn, ng->nentries);
    free(fo);
    free(fn);
    return changed;
}

static struct catalog_group_change *add_change(struct catalog_repo_diff *out,
                                               enum catalog_change change, const struct oi_repo *r,
                                               const struct oi_group *g)
{
    out->groups = xrealloc(out->groups, (out->ngroups + 1) * sizeof(*out->groups));
    struct catalog_group_change *gc = &out->groups[out->ngroups++];
    memset(gc, 0, sizeof(*gc));
    gc->change = change;
    gc->kind = g->kind;
    gc->key = oi_group_key(r, g);
    strv_copy(&gc->tags, &g->tags);
    strv_copy(&gc->platforms, &g->platforms);
    return gc;
}

/* Old group tags that no group of the new version has. */
static void removed_tags(struct catalog_group_change *gc, const struct oi_group *og,
                         const struct tag_ref *new_refs, size_t nnew)
{
    for (size_t t = 0; t < og->tags.n; t++)
        if (!find_tag(new_refs, nnew, OI_GROUP_TAGS, og->tags.v[t]) &&
            !find_tag(new_refs, nnew, OI_GROUP_SHARED, og->tags.v[t]))
            strv_push(&gc->removed_tags, xstrdup(og->tags.v[t]));
}

void catalog_diff_repo(const struct oi_repo *old, const struct oi_repo *new_,
                       struct catalog_repo_diff *out)
{
    size_t nold = old ? old->ngroups : 0, nnew = new_ ? new_->ngroups : 0;
    size_t nold_refs, nnew_refs, npairs = 0;
    struct tag_ref *old_refs = index_tags(old, &nold_refs);
    struct tag_ref *new_refs = index_tags(new_, &nnew_refs);
    struct pair *pairs = NULL;
    size_t *match_of_old = xcalloc(nold ? nold : 1, sizeof(size_t)); /* new index + 1 */
    size_t *match_of_new = xcalloc(nnew ? nnew : 1, sizeof(size_t)); /* old index + 1 */

    /* count the tags each new group shares with each old group of its kind */
    for (size_t j = 0; j < nnew; j++) {
        const struct oi_group *g = &new_->groups[j];
        size_t nhits = 0, *hits = xcalloc(g->tags.n ? g->tags.n : 1, sizeof(size_t));
        for (size_t t = 0; t < g->tags.n; t++) {
            const struct tag_ref *ref = find_tag(old_refs, nold_refs, (int)g->kind, g->tags.v[t]);
            if (ref)
                hits[nhits++] = ref->group;
        }
        qsort(hits, nhits, sizeof(size_t), cmp_size);
        for (size_t h = 0; h < nhits;) {
            size_t run = h;
            while (run < nhits && hits[run] == hits[h])
                run++;
            pairs = xrealloc(pairs, (npairs + 1) * sizeof(*pairs));
            pairs[npairs++] = (struct pair){run - h, hits[h], j};
            h = run;
        }
        free(hits);
    }
    /* the pairs with most tags in common are the same group */
    if (npairs > 0)
        qsort(pairs, npairs, sizeof(*pairs), cmp_pair);
    for (size_t p = 0; p < npairs; p++)
        if (!match_of_old[pairs[p].old] && !match_of_new[pairs[p].new_]) {
            match_of_old[pairs[p].old] = pairs[p].new_ + 1;
            match_of_new[pairs[p].new_] = pairs[p].old + 1;
        }

    for (size_t j = 0; j < nnew; j++) {
        const struct oi_group *ng = &new_->groups[j];
        if (!match_of_new[j]) {
            add_change(out, CATALOG_ADDED, new_, ng);
            continue;
        }
        const struct oi_group *og = &old->groups[match_of_new[j] - 1];
        if (!group_changed(old, og, new_, ng))
            continue;
        struct catalog_group_change *gc = add_change(out, CATALOG_CHANGED, new_, ng);
        gc->old_key = oi_group_key(old, og);
        removed_tags(gc, og, new_refs, nnew_refs);
    }
    for (size_t i = 0; i < nold; i++)
        if (!match_of_old[i]) {
            struct catalog_group_change *gc =
                add_change(out, CATALOG_REMOVED, old, &old->groups[i]);
            removed_tags(gc, &old->groups[i], new_refs, nnew_refs);
        }

    free(match_of_old);
    free(match_of_new);
    free(pairs);
    free(old_refs);
    free(new_refs);
}

static void repo_diff_free(struct catalog_repo_diff *rd)
{
    for (size_t i = 0; i < rd->ngroups; i++) {
        struct catalog_group_change *gc = &rd->groups[i];
        free(gc->key);
        free(gc->old_key);
        strv_free(&gc->tags);
        strv_free(&gc->platforms);
        strv_free(&gc->removed_tags);
    }
    free(rd->groups);
    free(rd->name);
}

/* One library file's side of a delta: *r is NULL when the side is absent
 * or not a file; -1 with *e set when the file is broken. */
static int delta_side(struct catalog *c, const git_diff_file *f, const char *name,
                      struct oi_repo **r, struct err *e)
{
    *r = NULL;
    if (!(f->flags & GIT_DIFF_FLAG_EXISTS) ||
        (f->mode != GIT_FILEMODE_BLOB && f->mode != GIT_FILEMODE_BLOB_EXECUTABLE))
        return 0;
    *r = parse_blob(c, &f->id, name, e);
    return *r ? 0 : -1;
}

int catalog_diff(struct catalog *c, const char *from, const char *to, struct catalog_diff **out,
                 struct err *e)
{
    int rc = -1;
    git_commit *cfrom = NULL, *cto = NULL;
    git_tree *tfrom = NULL, *tto = NULL;
    git_diff *diff = NULL;
    struct catalog_diff *d = xcalloc(1, sizeof(*d));
    *out = NULL;

    if (lookup_commit(c, from, &cfrom, e) < 0 || lookup_commit(c, to, &cto, e) < 0 ||
        library_tree(c, cfrom, &tfrom, e) < 0 || library_tree(c, cto, &tto, e) < 0)
        goto out;
    git_oid_tostr(d->from, sizeof(d->from), git_commit_id(cfrom));
    git_oid_tostr(d->to, sizeof(d->to), git_commit_id(cto));
    if (git_diff_tree_to_tree(&diff, c->repo, tfrom, tto, NULL) < 0) {
        err_set(e, "cannot diff %s..%s: %s", d->from, d->to, git_msg());
        goto out;
    }
    size_t n = git_diff_num_deltas(diff);
    d->repos = xcalloc(n ? n : 1, sizeof(*d->repos));
    for (size_t i = 0; i < n; i++) {
        const git_diff_delta *dl = git_diff_get_delta(diff, i);
        const char *name = dl->status == GIT_DELTA_DELETED ? dl->old_file.path : dl->new_file.path;
        if (strchr(name, '/'))
            continue; /* library/ holds files only; nothing reads deeper */
        struct oi_repo *newr, *oldr;
        struct err pe;
        if (delta_side(c, &dl->new_file, name, &newr, &pe) < 0) {
            add_error(&d->errors, &d->nerrors, name, pe.msg); /* what changed is unknown */
            continue;
        }
        if (delta_side(c, &dl->old_file, name, &oldr, &pe) < 0)
            log_debug("diff: old library/%s is broken, counted as absent: %s", name, pe.msg);
        struct catalog_repo_diff *rd = &d->repos[d->nrepos];
        memset(rd, 0, sizeof(*rd));
        rd->name = xstrdup(name);
        rd->change = !oldr ? CATALOG_ADDED : !newr ? CATALOG_REMOVED : CATALOG_CHANGED;
        catalog_diff_repo(oldr, newr, rd);
        if (rd->ngroups > 0)
            d->nrepos++;
        else
            repo_diff_free(rd);
        oi_repo_free(oldr);
        oi_repo_free(newr);
    }
    rc = 0;
out:
    git_diff_free(diff);
    git_tree_free(tfrom);
    git_tree_free(tto);
    git_commit_free(cfrom);
    git_commit_free(cto);
    if (rc < 0)
        catalog_diff_free(d);
    else
        *out = d;
    return rc;
}

void catalog_diff_free(struct catalog_diff *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->nrepos; i++)
        repo_diff_free(&d->repos[i]);
    free(d->repos);
    free_errors(d->errors, d->nerrors);
    free(d);
}
