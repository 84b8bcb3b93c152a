/* catalog_cmd: the `catalog` and `diff` subcommands: read the
 * official-images catalog at a commit, or what changed between two, and
 * print it as JSON or as a readable summary. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "coord.h"
#include "xalloc.h"

/* Options both subcommands take. */
#define OPT_SOURCE                                                                                 \
    {COORD_ID_OFFICIAL_IMAGES, "official-images", "HUBSYNC_OFFICIAL_IMAGES", CFG_STR, NULL, 0, 0,  \
     "official-images source: a local repository (bare or not) or a URL", 0}
#define OPT_WORKDIR                                                                                \
    {COORD_ID_WORKDIR, "workdir", "HUBSYNC_WORKDIR", CFG_STR, NULL, 0, 0,                          \
     "keep a clone of the source here (fetched on every run); default: read a local source "       \
     "in place, clone a URL into a temporary folder", 0}
#define OPT_JSON                                                                                   \
    {COORD_ID_JSON, "json", NULL, CFG_BOOL, "false", 0, 0, "print JSON instead of a summary", 0}
#define OPT_HELP {CFG_ID_HELP, "help", NULL, CFG_BOOL, "false", 0, 0, "show this help", 0}

static const struct cfg_opt catalog_opts[] = {
    OPT_SOURCE,
    {COORD_ID_REF, "ref", "HUBSYNC_REF", CFG_STR, NULL, 0, 0,
     "commit, branch, tag or short sha to read (default: the source's HEAD, else master)", 0},
    OPT_WORKDIR,
    {COORD_ID_REPOS, "repos", NULL, CFG_STR, NULL, 0, 0,
     "read only these repositories (comma-separated; alpine, library/alpine or "
     "docker.io/library/alpine)",
     0},
    OPT_JSON,
    OPT_HELP,
};

static const struct cfg_opt diff_opts[] = {
    OPT_SOURCE,
    {COORD_ID_FROM, "from", NULL, CFG_STR, NULL, 0, 0, "the older commit (any revision)", 0},
    {COORD_ID_TO, "to", NULL, CFG_STR, NULL, 0, 0, "the newer commit (default: the source's HEAD)",
     0},
    OPT_WORKDIR,
    OPT_JSON,
    OPT_HELP,
};

#define NOPTS(t) ((int)(sizeof(t) / sizeof((t)[0])))

/* A JSON string; bytes that are not valid UTF-8 (file names and error
 * snippets come from the repository) become '?'. */
static json_t *jstr(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;
    char *copy = xstrdup(s);
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

static json_t *jstrv(const struct strv *s)
{
    json_t *a = json_array();
    for (size_t i = 0; i < s->n; i++)
        json_array_append_new(a, jstr(s->v[i]));
    return a;
}

static json_t *jerrors(const struct catalog_error *errs, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:o, s:o}", "repository", jstr(errs[i].repo), "error",
                                           jstr(errs[i].msg)));
    return a;
}

static int print_json(json_t *root)
{
    int rc = json_dumpf(root, stdout, JSON_COMPACT) == 0 && fputc('\n', stdout) != EOF ? 0 : -1;
    json_decref(root);
    return rc;
}

static const char *kind_name(enum oi_group_kind k)
{
    return k == OI_GROUP_TAGS ? "tags" : "shared";
}

/* ---- catalog ------------------------------------------------------------ */

static json_t *catalog_json(const struct catalog_snapshot *s, const struct catalog_totals *t)
{
    json_t *repos = json_array();
    for (size_t i = 0; i < s->nrepos; i++) {
        const struct oi_repo *r = s->repos[i];
        json_t *groups = json_array();
        for (size_t g = 0; g < r->ngroups; g++) {
            const struct oi_group *gr = &r->groups[g];
            json_t *jg = json_pack("{s:s, s:o, s:o}", "kind", kind_name(gr->kind), "tags",
                                   jstrv(&gr->tags), "platforms", jstrv(&gr->platforms));
            if (gr->kind == OI_GROUP_SHARED) {
                json_t *entries = json_array();
                for (size_t k = 0; k < gr->nentries; k++)
                    json_array_append_new(entries, jstr(r->entries[gr->entries[k]].tags.v[0]));
                json_object_set_new(jg, "entries", entries);
            }
            json_array_append_new(groups, jg);
        }
        json_array_append_new(repos,
                              json_pack("{s:o, s:o}", "name", jstr(r->name), "groups", groups));
    }
    return json_pack("{s:s, s:o, s:o, s:{s:I, s:I, s:I, s:I}}", "commit", s->commit, "repositories",
                     repos, "errors", jerrors(s->errors, s->nerrors), "totals", "repositories",
                     (json_int_t)t->repositories, "groups", (json_int_t)t->groups, "tags",
                     (json_int_t)t->tags, "entry_platforms", (json_int_t)t->entry_platforms);
}

static void catalog_text(const struct catalog_snapshot *s, const struct catalog_totals *t)
{
    printf("official-images commit %s\n", s->commit);
    printf("%-28s %7s %8s %7s %6s %10s\n", "REPOSITORY", "GROUPS", "ENTRIES", "SHARED", "TAGS",
           "PLATFORMS");
    for (size_t i = 0; i < s->nrepos; i++) {
        struct catalog_snapshot one = *s;
        struct catalog_totals rt;
        one.repos = &s->repos[i];
        one.nrepos = 1;
        catalog_count(&one, &rt);
        printf("%-28s %7zu %8zu %7zu %6zu %10zu\n", s->repos[i]->name, rt.groups, rt.entries,
               rt.shared_groups, rt.tags, rt.entry_platforms);
    }
    printf("total: %zu repositories, %zu groups (%zu entries + %zu shared), %zu tags, "
           "%zu entry platforms\n",
           t->repositories, t->groups, t->entries, t->shared_groups, t->tags, t->entry_platforms);
    if (s->nerrors)
        printf("%zu broken library files:\n", s->nerrors);
    for (size_t i = 0; i < s->nerrors; i++)
        printf("  %s\n", s->errors[i].msg);
}

int coord_catalog_main(int argc, char **argv)
{
    int code;
    struct cfg c;
    struct err e;
    struct catalog *cat = NULL;
    struct catalog_snapshot *snap = NULL;
    struct strv only = {NULL, 0};

    if (coord_parse_args(&c, catalog_opts, NOPTS(catalog_opts), argc, argv,
                         "catalog --official-images SRC [--ref REV] [--workdir DIR] "
                         "[--repos a,b] [--json]",
                         &code) < 0)
        return code;
    code = COORD_EXIT_USAGE;
    if (!cfg_str(&c, COORD_ID_OFFICIAL_IMAGES)) {
        coord_fail(argv[0], "--official-images (or HUBSYNC_OFFICIAL_IMAGES) is required");
        goto out;
    }
    if (coord_repo_list("--repos", cfg_str(&c, COORD_ID_REPOS), &only, &e) < 0 ||
        catalog_open(&cat, cfg_str(&c, COORD_ID_OFFICIAL_IMAGES), cfg_str(&c, COORD_ID_WORKDIR),
                     NULL, &e) < 0 ||
        coord_repos_check(cat, cfg_str(&c, COORD_ID_REF), &only, NULL, &e) < 0 ||
        catalog_read(cat, cfg_str(&c, COORD_ID_REF), &only, &snap, &e) < 0) {
        coord_fail(argv[0], e.msg);
        goto out;
    }
    struct catalog_totals t;
    catalog_count(snap, &t);
    if (cfg_bool(&c, COORD_ID_JSON)) {
        if (print_json(catalog_json(snap, &t)) < 0) {
            coord_fail(argv[0], "cannot write the JSON output");
            goto out;
        }
    } else {
        catalog_text(snap, &t);
    }
    for (size_t i = 0; i < snap->nerrors; i++)
        coord_fail(argv[0], snap->errors[i].msg);
    code = snap->nerrors ? COORD_EXIT_PARTIAL : COORD_EXIT_OK;
out:
    catalog_snapshot_free(snap);
    catalog_close(cat);
    strv_free(&only);
    cfg_free(&c);
    return code;
}

/* ---- diff --------------------------------------------------------------- */

static json_t *diff_json(const struct catalog_diff *d, const size_t counts[3])
{
    json_t *repos = json_array();
    for (size_t i = 0; i < d->nrepos; i++) {
        const struct catalog_repo_diff *rd = &d->repos[i];
        json_t *groups = json_array();
        for (size_t g = 0; g < rd->ngroups; g++) {
            const struct catalog_group_change *gc = &rd->groups[g];
            json_t *jg = json_pack("{s:s, s:s, s:o}", "change", catalog_change_name(gc->change),
                                   "kind", kind_name(gc->kind), "key", jstr(gc->key));
            if (gc->old_key)
                json_object_set_new(jg, "old_key", jstr(gc->old_key));
            json_object_set_new(jg, "tags", jstrv(&gc->tags));
            json_object_set_new(jg, "platforms", jstrv(&gc->platforms));
            json_object_set_new(jg, "removed_tags", jstrv(&gc->removed_tags));
            json_array_append_new(groups, jg);
        }
        json_array_append_new(repos, json_pack("{s:o, s:s, s:o}", "name", jstr(rd->name), "change",
                                               catalog_change_name(rd->change), "groups", groups));
    }
    return json_pack(
        "{s:s, s:s, s:o, s:o, s:{s:I, s:I, s:I, s:I}}", "from", d->from, "to", d->to,
        "repositories", repos, "errors", jerrors(d->errors, d->nerrors), "totals", "repositories",
        (json_int_t)d->nrepos, "added", (json_int_t)counts[CATALOG_ADDED], "removed",
        (json_int_t)counts[CATALOG_REMOVED], "changed", (json_int_t)counts[CATALOG_CHANGED]);
}

static void print_list(const char *label, const struct strv *s)
{
    printf(" %s ", label);
    for (size_t i = 0; i < s->n; i++)
        printf("%s%s", i ? "," : "", s->v[i]);
}

static void diff_text(const struct catalog_diff *d, const size_t counts[3])
{
    printf("official-images %.12s..%.12s: %zu repositories, %zu groups added, %zu removed, "
           "%zu changed\n",
           d->from, d->to, d->nrepos, counts[CATALOG_ADDED], counts[CATALOG_REMOVED],
           counts[CATALOG_CHANGED]);
    for (size_t i = 0; i < d->nrepos; i++) {
        const struct catalog_repo_diff *rd = &d->repos[i];
        printf("%s (%s)\n", rd->name, catalog_change_name(rd->change));
        for (size_t g = 0; g < rd->ngroups; g++) {
            const struct catalog_group_change *gc = &rd->groups[g];
            printf("  %-7s %-6s %s:", catalog_change_name(gc->change), kind_name(gc->kind),
                   gc->key);
            print_list("tags", &gc->tags);
            print_list("platforms", &gc->platforms);
            if (gc->removed_tags.n)
                print_list("removed-tags", &gc->removed_tags);
            putchar('\n');
        }
    }
    if (d->nerrors)
        printf("%zu broken library files at %.12s:\n", d->nerrors, d->to);
    for (size_t i = 0; i < d->nerrors; i++)
        printf("  %s\n", d->errors[i].msg);
}

int coord_diff_main(int argc, char **argv)
{
    int code;
    struct cfg c;
    struct err e;
    struct catalog *cat = NULL;
    struct catalog_diff *d = NULL;

    if (coord_parse_args(&c, diff_opts, NOPTS(diff_opts), argc, argv,
                         "diff --official-images SRC --from A [--to B] [--workdir DIR] [--json]",
                         &code) < 0)
        return code;
    code = COORD_EXIT_USAGE;
    if (!cfg_str(&c, COORD_ID_OFFICIAL_IMAGES) || !cfg_str(&c, COORD_ID_FROM)) {
        coord_fail(argv[0], "--official-images (or HUBSYNC_OFFICIAL_IMAGES) and --from are "
                            "required");
        goto out;
    }
    if (catalog_open(&cat, cfg_str(&c, COORD_ID_OFFICIAL_IMAGES), cfg_str(&c, COORD_ID_WORKDIR),
                     NULL, &e) < 0 ||
        catalog_diff(cat, cfg_str(&c, COORD_ID_FROM), cfg_str(&c, COORD_ID_TO), &d, &e) < 0) {
        coord_fail(argv[0], e.msg);
        goto out;
    }
    size_t counts[3] = {0, 0, 0};
    for (size_t i = 0; i < d->nrepos; i++)
        for (size_t g = 0; g < d->repos[i].ngroups; g++)
            counts[d->repos[i].groups[g].change]++;
    if (cfg_bool(&c, COORD_ID_JSON)) {
        if (print_json(diff_json(d, counts)) < 0) {
            coord_fail(argv[0], "cannot write the JSON output");
            goto out;
        }
    } else {
        diff_text(d, counts);
    }
    for (size_t i = 0; i < d->nerrors; i++)
        coord_fail(argv[0], d->errors[i].msg);
    code = d->nerrors ? COORD_EXIT_PARTIAL : COORD_EXIT_OK;
out:
    catalog_diff_free(d);
    catalog_close(cat);
    cfg_free(&c);
    return code;
}
