/* select: what a run covers. The selection flags, the catalog at the run's
 * commit with its diff from the synced one, and the list of tag groups that
 * become jobs; sync enqueues them, plan prices them. */
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"
#include "log.h"
#include "ref.h"
#include "xalloc.h"

int coord_repo_list(const char *flag, const char *list, struct strv *out, struct err *e)
{
    struct strv items = {NULL, 0};
    int rc = -1;
    coord_split_list(list, &items);
    for (size_t i = 0; i < items.n; i++) {
        char *name;
        if (ref_official_repo(items.v[i], &name, e) < 0) {
            err_prefix(e, "%s", flag);
            goto out;
        }
        strv_push(out, name);
    }
    rc = 0;
out:
    strv_free(&items);
    return rc;
}

/* A --skip REPO:TAGGLOB pattern with its repository part as an official-images
 * name (a part with glob characters is kept as written). Caller frees *out. */
static int skip_pattern(const char *pat, char **out, struct err *e)
{
    const char *colon = strchr(pat, ':');
    *out = NULL;
    if (!colon) {
        if (!strpbrk(pat, "*?["))
            return err_set(e, "--skip: '%.200s' is not REPO:TAGGLOB (e.g. 'python:*windows*')",
                           pat);
        *out = xstrdup(pat);
        return 0;
    }
    char *repo = xasprintf("%.*s", (int)(colon - pat), pat);
    char *name = NULL;
    int rc = -1;
    if (strpbrk(repo, "*?[")) {
        *out = xstrdup(pat);
    } else if (ref_official_repo(repo, &name, e) < 0) {
        err_prefix(e, "--skip");
        goto out;
    } else {
        *out = xasprintf("%s%s", name, colon);
    }
    rc = 0;
out:
    free(name);
    free(repo);
    return rc;
}

int coord_selection_init(struct coord_selection *sel, const struct cfg *c, struct err *e)
{
    memset(sel, 0, sizeof(*sel));
    if (coord_repo_list("--repos", cfg_str(c, COORD_ID_REPOS), &sel->repos, e) < 0 ||
        coord_repo_list("--exclude-repos", cfg_str(c, COORD_ID_EXCLUDE_REPOS), &sel->exclude, e) <
            0)
        return -1;
    coord_split_list(cfg_str(c, COORD_ID_TAGS), &sel->tags);
    coord_split_list(cfg_str(c, COORD_ID_SKIP), &sel->skip);
    for (size_t i = 0; i < sel->skip.n; i++) {
        char *pat;
        if (skip_pattern(sel->skip.v[i], &pat, e) < 0)
            return -1;
        free(sel->skip.v[i]);
        sel->skip.v[i] = pat;
    }
    coord_split_list(cfg_str(c, COORD_ID_PLATFORMS), &sel->platforms);
    const char *pol = cfg_str(c, COORD_ID_PLATFORM_POLICY);
    sel->policy = JOB_POLICY_ALL;
    if (sel->platforms.n && !pol)
        return err_set(e, "--platforms needs --platform-policy sparse|rewrite (the digest of a "
                          "rewritten index differs from Docker Hub's)");
    if (pol && !sel->platforms.n)
        return err_set(e, "--platform-policy needs --platforms");
    if (pol && (job_policy_parse(pol, &sel->policy) < 0 || sel->policy == JOB_POLICY_ALL))
        return err_set(e, "--platform-policy: '%s' is not sparse or rewrite", pol);
    for (size_t i = 0; i < sel->platforms.n; i++)
        if (!job_platform_valid(sel->platforms.v[i]))
            return err_set(e, "--platforms: '%s' is not os/arch[/variant]", sel->platforms.v[i]);
    return 0;
}

void coord_selection_free(struct coord_selection *sel)
{
    strv_free(&sel->repos);
    strv_free(&sel->exclude);
    strv_free(&sel->tags);
    strv_free(&sel->skip);
    strv_free(&sel->platforms);
}

int coord_repo_selected(const struct coord_selection *sel, const char *name)
{
    return (!sel->repos.n || strv_has(&sel->repos, name)) && !strv_has(&sel->exclude, name);
}

int coord_tag_selected(const struct coord_selection *sel, const char *repo, const char *tag)
{
    int ok = !sel->tags.n;
    for (size_t i = 0; !ok && i < sel->tags.n; i++)
        ok = fnmatch(sel->tags.v[i], tag, 0) == 0;
    char *rt = xasprintf("%s:%s", repo, tag);
    for (size_t i = 0; ok && i < sel->skip.n; i++)
        if (fnmatch(sel->skip.v[i], rt, 0) == 0)
            ok = 0;
    free(rt);
    return ok;
}

size_t coord_platforms_selected(const struct coord_selection *sel, const struct strv *have)
{
    if (!sel->platforms.n)
        return have->n;
    size_t n = 0;
    for (size_t i = 0; i < have->n; i++)
        for (size_t k = 0; k < sel->platforms.n; k++) {
            /* bashbrew's arm64 carries v8; a user may write either. */
            const char *a = have->v[i], *b = sel->platforms.v[k];
            size_t lb = strlen(b);
            if (strcmp(a, b) == 0 || (strncmp(a, b, lb) == 0 && strcmp(a + lb, "/v8") == 0)) {
                n++;
                break;
            }
        }
    return n;
}

/* ---- the catalog of a run ---------------------------------------------------------------- */

int coord_repos_check(struct catalog *cat, const char *rev, const struct strv *repos,
                      const struct strv *exclude, struct err *e)
{
    int rc = -1;
    char sha[CATALOG_SHA_LEN + 1];
    struct strv gone = {0}, gone_ex = {0};
    if (!repos->n && (!exclude || !exclude->n))
        return 0;
    /* A tree lookup per name: a broken file is still there (its errors come
     * with the run), only a missing one is a wrong name. */
    if (catalog_missing(cat, rev, repos, sha, &gone, e) < 0 ||
        (exclude && catalog_missing(cat, sha, exclude, sha, &gone_ex, e) < 0))
        goto out;
    if (gone.n) {
        err_set(e, "--repos: '%s' is not in official-images at %.12s", gone.v[0], sha);
        goto out;
    }
    for (size_t i = 0; i < gone_ex.n; i++)
        log_warn("--exclude-repos: '%s' is not in official-images at %.12s", gone_ex.v[i], sha);
    rc = 0;
out:
    strv_free(&gone);
    strv_free(&gone_ex);
    return rc;
}

int coord_view_read(struct catalog *cat, const struct coord_selection *sel, const char *commit,
                    const char *from, struct coord_view *v, struct err *e)
{
    memset(v, 0, sizeof(*v));
    if (catalog_read(cat, commit, sel->repos.n ? &sel->repos : NULL, &v->snap, e) < 0)
        return -1;
    v->first = !from || !*from;
    if (!v->first && strcmp(from, commit) != 0 &&
        catalog_diff(cat, from, commit, &v->diff, e) < 0) {
        /* The marker's commit may be gone (history rewritten): check everything. */
        log_warn("diff %.12s..%.12s: %s; treating every group as changed", from, commit, e->msg);
        v->first = 1;
    }
    return 0;
}

void coord_view_free(struct coord_view *v)
{
    catalog_diff_free(v->diff);
    catalog_snapshot_free(v->snap);
    memset(v, 0, sizeof(*v));
}

static const struct catalog_repo_diff *diff_repo(const struct catalog_diff *d, const char *name)
{
    for (size_t i = 0; d && i < d->nrepos; i++)
        if (strcmp(d->repos[i].name, name) == 0)
            return &d->repos[i];
    return NULL;
}

static int group_changed(const struct coord_view *v, const char *repo, const char *key)
{
    if (v->first)
        return 1;
    const struct catalog_repo_diff *rd = diff_repo(v->diff, repo);
    for (size_t i = 0; rd && i < rd->ngroups; i++)
        if (rd->groups[i].change != CATALOG_REMOVED && strcmp(rd->groups[i].key, key) == 0)
            return 1;
    return 0;
}

/* ---- groups ---------------------------------------------------------------------------- */

void coord_groups_list(const struct coord_selection *sel, const struct coord_view *v,
                       struct coord_group **out, size_t *n)
{
    const struct catalog_snapshot *snap = v->snap;
    struct coord_group *changed = NULL, *checks = NULL;
    size_t nchanged = 0, nchecks = 0;
    /* Per repository, its groups in file order; dealt round-robin. */
    size_t maxg = 0;
    for (size_t r = 0; r < snap->nrepos; r++)
        if (snap->repos[r]->ngroups > maxg)
            maxg = snap->repos[r]->ngroups;
    for (size_t g = 0; g < maxg; g++) {
        for (size_t r = 0; r < snap->nrepos; r++) {
            const struct oi_repo *repo = snap->repos[r];
            if (g >= repo->ngroups || !coord_repo_selected(sel, repo->name))
                continue;
            const struct oi_group *gr = &repo->groups[g];
            size_t nplat = coord_platforms_selected(sel, &gr->platforms);
            if (!nplat)
                continue;
            struct coord_group cg = {.repo = repo,
                                     .group = gr,
                                     .tags = xcalloc(gr->tags.n, sizeof(char *)),
                                     .nplatforms = nplat};
            for (size_t t = 0; t < gr->tags.n; t++)
                if (coord_tag_selected(sel, repo->name, gr->tags.v[t]))
                    cg.tags[cg.ntags++] = gr->tags.v[t];
            if (!cg.ntags) {
                free(cg.tags);
                continue;
            }
            cg.key = oi_group_key(repo, gr);
            cg.changed = group_changed(v, repo->name, cg.key);
            struct coord_group **arr = cg.changed ? &changed : &checks;
            size_t *cnt = cg.changed ? &nchanged : &nchecks;
            *arr = xrealloc(*arr, (*cnt + 1) * sizeof(**arr));
            (*arr)[(*cnt)++] = cg;
        }
    }
    *n = nchanged + nchecks;
    *out = xcalloc(*n ? *n : 1, sizeof(**out));
    if (nchanged)
        memcpy(*out, changed, nchanged * sizeof(*changed));
    if (nchecks)
        memcpy(*out + nchanged, checks, nchecks * sizeof(*checks));
    free(changed);
    free(checks);
}

void coord_groups_free(struct coord_group *g, size_t n)
{
    for (size_t i = 0; g && i < n; i++) {
        free(g[i].key);
        free(g[i].tags);
    }
    free(g);
}

json_t *coord_removed_tags(const struct coord_selection *sel, const struct coord_view *v)
{
    json_t *removed = json_array();
    const struct catalog_diff *d = v->diff;
    for (size_t r = 0; d && r < d->nrepos; r++) {
        const struct catalog_repo_diff *rd = &d->repos[r];
        if (!coord_repo_selected(sel, rd->name))
            continue;
        json_t *tags = json_array();
        for (size_t g = 0; g < rd->ngroups; g++)
            for (size_t t = 0; t < rd->groups[g].removed_tags.n; t++)
                json_array_append_new(tags, json_string(rd->groups[g].removed_tags.v[t]));
        if (json_array_size(tags))
            json_array_append_new(removed,
                                  json_pack("{s:s, s:o}", "repository", rd->name, "tags", tags));
        else
            json_decref(tags);
    }
    return removed;
}
