/* syncfile: see syncfile.h. Read with libyaml's document loader (one
 * document; anchors and aliases resolve to shared nodes, which the walk below
 * reaches through a fixed shape, so no input makes it loop or explode). */
#include "syncfile.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "digest.h"
#include "ref.h"
#include "xalloc.h"

#define ACCOUNT_MAX 64  /* an environment prefix */
#define WHERE_MAX 96
#define SHOWN_MAX 120
#define NEWEST_MAX 100000

struct parse {
    const char *path;
    yaml_document_t *doc;
    struct err *e;
    struct syncfile *sf;
    struct strv default_platforms;
    enum job_policy default_policy;
    int default_referrers;
};

static int fail(struct parse *p, const yaml_node_t *n, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "<path>:<line>:<column>: <where>: <what>" at the node n. */
static int fail(struct parse *p, const yaml_node_t *n, const char *where, const char *fmt, ...)
{
    char what[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return err_set(p->e, "%s:%lu:%lu: %s: %s", p->path, (unsigned long)n->start_mark.line + 1,
                   (unsigned long)n->start_mark.column + 1, where, what);
}

/* s for a message: bounded, unprintable bytes as '?'. */
static const char *shown(const char *s, char out[SHOWN_MAX + 4])
{
    size_t i = 0;
    for (; s[i] && i < SHOWN_MAX; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (s[i])
        memcpy(out + i, "...", 3), i += 3;
    out[i] = '\0';
    return out;
}

/* "<where>.<key>" into out (n bytes), cut if it must be. */
static void sub(char *out, size_t n, const char *where, const char *key)
{
    if (snprintf(out, n, "%s.%s", where, key) >= (int)n)
        memcpy(out + n - 4, "...", 4);
}

static yaml_node_t *node_at(struct parse *p, int i)
{
    return yaml_document_get_node(p->doc, i);
}

static const char *kind_name(const yaml_node_t *n)
{
    return n->type == YAML_MAPPING_NODE    ? "a mapping"
           : n->type == YAML_SEQUENCE_NODE ? "a list"
                                           : "a string";
}

/* The text of a scalar node, or NULL after an error. */
static const char *text(struct parse *p, const yaml_node_t *n, const char *where)
{
    if (n->type != YAML_SCALAR_NODE) {
        fail(p, n, where, "expected a string, found %s", kind_name(n));
        return NULL;
    }
    const char *s = (const char *)n->data.scalar.value;
    if (strlen(s) != n->data.scalar.length) {
        fail(p, n, where, "a NUL character");
        return NULL;
    }
    return s;
}

static int expect(struct parse *p, const yaml_node_t *n, yaml_node_type_t type, const char *where)
{
    if (n->type == type)
        return 0;
    return fail(p, n, where, "expected %s, found %s",
                type == YAML_MAPPING_NODE    ? "a mapping"
                : type == YAML_SEQUENCE_NODE ? "a list"
                                             : "a string",
                kind_name(n));
}

/* Check a mapping's keys: strings, each in allowed (NULL-terminated; NULL:
 * any), none twice. */
static int check_keys(struct parse *p, const yaml_node_t *map, const char *where,
                      const char *const *allowed)
{
    if (expect(p, map, YAML_MAPPING_NODE, where) < 0)
        return -1;
    for (yaml_node_pair_t *a = map->data.mapping.pairs.start; a < map->data.mapping.pairs.top;
         a++) {
        yaml_node_t *k = node_at(p, a->key);
        const char *name = text(p, k, where);
        char tmp[SHOWN_MAX + 4];
        if (!name)
            return -1;
        int known = !allowed;
        for (size_t i = 0; allowed && allowed[i] && !known; i++)
            known = strcmp(allowed[i], name) == 0;
        if (!known) {
            char list[256] = "";
            for (size_t i = 0; allowed[i]; i++)
                snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "",
                         allowed[i]);
            return fail(p, k, where, "unknown key '%s' (known: %s)", shown(name, tmp), list);
        }
        for (yaml_node_pair_t *b = map->data.mapping.pairs.start; b < a; b++) {
            yaml_node_t *k2 = node_at(p, b->key);
            if (k2->type == YAML_SCALAR_NODE &&
                strcmp((const char *)k2->data.scalar.value, name) == 0)
                return fail(p, k, where, "'%s' appears twice", shown(name, tmp));
        }
    }
    return 0;
}

/* The value of key in a checked mapping, or NULL. */
static yaml_node_t *get(struct parse *p, const yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *a = map->data.mapping.pairs.start; a < map->data.mapping.pairs.top;
         a++)
        if (strcmp((const char *)node_at(p, a->key)->data.scalar.value, key) == 0)
            return node_at(p, a->value);
    return NULL;
}

/* A string, or a list of strings: each item's node into *out (caller frees). */
static int strings(struct parse *p, yaml_node_t *n, const char *where, yaml_node_t ***out,
                   size_t *count)
{
    *out = NULL;
    *count = 0;
    if (n->type == YAML_SCALAR_NODE) {
        *out = xmalloc(sizeof(**out));
        (*out)[(*count)++] = n;
        return text(p, n, where) ? 0 : -1;
    }
    if (expect(p, n, YAML_SEQUENCE_NODE, where) < 0)
        return -1;
    size_t len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    *out = xcalloc(len ? len : 1, sizeof(**out));
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        yaml_node_t *item = node_at(p, *it);
        if (!text(p, item, where)) {
            free(*out);
            *out = NULL;
            return -1;
        }
        (*out)[(*count)++] = item;
    }
    return 0;
}

static int boolean(struct parse *p, yaml_node_t *n, const char *where, int *out)
{
    const char *s = text(p, n, where);
    if (!s)
        return -1;
    if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0) {
        *out = s[0] == 't';
        return 0;
    }
    char tmp[SHOWN_MAX + 4];
    return fail(p, n, where, "'%s' is not true or false", shown(s, tmp));
}

/* A string or a list of strings, each passing check (which may say why not in
 * why), none twice, at most max ("<n> <what>, more than <max>"), appended to out. */
typedef int list_check_fn(const char *s, const void *ctx, char *why, size_t n);

static int list_of(struct parse *p, yaml_node_t *n, const char *where, size_t max,
                   const char *what, list_check_fn *check, const void *ctx, struct strv *out)
{
    yaml_node_t **items;
    size_t count;
    int rc = -1;
    if (strings(p, n, where, &items, &count) < 0)
        return -1;
    if (count > max) {
        fail(p, n, where, "%zu %s, more than %zu", count, what, max);
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        const char *s = (const char *)items[i]->data.scalar.value;
        char why[ERR_MSG_MAX];
        if (check(s, ctx, why, sizeof(why)) < 0) {
            fail(p, items[i], where, "%s", why);
            goto out;
        }
        for (size_t k = 0; k < out->n; k++)
            if (strcmp(out->v[k], s) == 0) {
                fail(p, items[i], where, "'%s' appears twice", s);
                goto out;
            }
        strv_push(out, xstrdup(s));
    }
    rc = 0;
out:
    free(items);
    return rc;
}

/* ---- registries ----------------------------------------------------------------------- */

static char *lower(const char *s)
{
    char *l = xstrdup(s);
    for (char *q = l; *q; q++)
        *q = (char)tolower((unsigned char)*q);
    return l;
}

/* docker.io for every name of Docker Hub's registry, else the name lowercased. */
static char *canonical_name(const char *s)
{
    static const char *const hub[] = {"docker.io", "index.docker.io", "registry-1.docker.io",
                                      "registry.hub.docker.com"};
    char *l = lower(s);
    for (size_t i = 0; i < sizeof(hub) / sizeof(hub[0]); i++)
        if (strcmp(l, hub[i]) == 0) {
            free(l);
            return xstrdup(SYNCFILE_HUB);
        }
    return l;
}

/* host[:port] as image references name registries (a domain in ref.h's grammar). */
static int registry_name_valid(const char *name)
{
    struct ref r;
    struct err e;
    char *probe = xasprintf("%s/x", name);
    int parsed = ref_parse(&r, probe, &e) == 0, ok = 0;
    if (parsed) {
        char *a = canonical_name(r.domain), *b = canonical_name(name);
        ok = strcmp(a, b) == 0;
        free(a);
        free(b);
        ref_free(&r);
    }
    free(probe);
    return ok;
}

static struct syncfile_registry *reg_add(struct syncfile *sf, const char *name)
{
    sf->regs = xrealloc(sf->regs, (sf->nregs + 1) * sizeof(*sf->regs));
    struct syncfile_registry *r = &sf->regs[sf->nregs++];
    memset(r, 0, sizeof(*r));
    r->name = xstrdup(name);
    return r;
}

/* An environment prefix that is no one else's (ctx: the registry). */
static int account_check(const char *s, const void *ctx, char *why, size_t n)
{
    const struct syncfile_registry *r = ctx;
    char tmp[SHOWN_MAX + 4];
    size_t len = strlen(s);
    int ok = len > 0 && len <= ACCOUNT_MAX && !isdigit((unsigned char)s[0]);
    for (size_t i = 0; ok && i < len; i++)
        ok = isupper((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '_';
    if (!ok) {
        snprintf(why, n,
                 "'%s' is not an environment prefix ([A-Z_][A-Z0-9_]*, up to %d characters; "
                 "the account is <PREFIX>_USERNAME with <PREFIX>_PASSWORD or "
                 "<PREFIX>_PASSWORD_FILE)",
                 shown(s, tmp), ACCOUNT_MAX);
        return -1;
    }
    /* Those are bound to the programs' own registries. */
    if (strcmp(s, "HUBSYNC_TARGET") == 0 ||
        (strcmp(s, "HUBSYNC_UPSTREAM") == 0 && strcmp(r->name, SYNCFILE_HUB) != 0)) {
        snprintf(why, n, "%s holds the credentials of %s only", s,
                 s[8] == 'T' ? "--target" : "--upstream (docker.io)");
        return -1;
    }
    return 0;
}

static int parse_registries(struct parse *p, yaml_node_t *n)
{
    static const char *const keys[] = {"url", "credentials", NULL};
    char where[WHERE_MAX], tmp[SHOWN_MAX + 4];
    if (check_keys(p, n, "registries", NULL) < 0)
        return -1;
    for (yaml_node_pair_t *a = n->data.mapping.pairs.start; a < n->data.mapping.pairs.top; a++) {
        yaml_node_t *k = node_at(p, a->key), *v = node_at(p, a->value);
        const char *raw = (const char *)k->data.scalar.value;
        if (strlen(raw) > 255 || !registry_name_valid(raw))
            return fail(p, k, "registries", "'%s' is not a registry (host or host:port, as "
                                            "image references name it)",
                        shown(raw, tmp));
        char *name = canonical_name(raw);
        int dup = syncfile_registry(p->sf, name) != NULL;
        struct syncfile_registry *r = dup ? NULL : reg_add(p->sf, name);
        snprintf(where, sizeof(where), "registries.%s", name);
        free(name);
        if (dup)
            return fail(p, k, "registries", "'%s' appears twice", shown(raw, tmp));
        r->line = (int)k->start_mark.line + 1;
        r->column = (int)k->start_mark.column + 1;
        if (strcmp(r->name, SYNCFILE_HUB) != 0)
            r->url = xasprintf("https://%s", r->name);
        if (r->url && !job_url_valid(r->url))
            return fail(p, k, "registries", "'%s' makes no URL (%s)", shown(raw, tmp), r->url);
        if (v->type == YAML_SCALAR_NODE && v->data.scalar.length == 0)
            continue; /* "ghcr.io:" with nothing: the defaults */
        if (check_keys(p, v, where, keys) < 0)
            return -1;
        yaml_node_t *url = get(p, v, "url"), *cred = get(p, v, "credentials");
        if (url) {
            char w[WHERE_MAX + 8];
            sub(w, sizeof(w), where, "url");
            const char *u = text(p, url, w);
            if (!u)
                return -1;
            if (strcmp(r->name, SYNCFILE_HUB) == 0)
                return fail(p, url, w, "docker.io is the programs' --upstream "
                                       "(HUBSYNC_UPSTREAM): set it there");
            if (!job_url_valid(u))
                return fail(p, url, w, "'%s' is not an http(s)://host[:port][/path] URL "
                                       "without credentials",
                            shown(u, tmp));
            free(r->url);
            r->url = xstrdup(u);
        }
        if (cred) {
            char w[WHERE_MAX + 16];
            sub(w, sizeof(w), where, "credentials");
            /* Docker Hub's accounts are pooled (a pull budget each); another
             * registry throttles by its 429s alone, so one account is enough. */
            int hub = strcmp(r->name, SYNCFILE_HUB) == 0;
            if (list_of(p, cred, w, hub ? SYNCFILE_MAX_HUB_ACCOUNTS : SYNCFILE_MAX_ACCOUNTS,
                        hub ? "accounts" : "accounts (only docker.io pools several)",
                        account_check, r, &r->accounts) < 0)
                return -1;
        }
    }
    return 0;
}

/* ---- platforms (defaults and entries) --------------------------------------------------- */

static int platform_check(const char *s, const void *ctx, char *why, size_t n)
{
    char tmp[SHOWN_MAX + 4];
    (void)ctx;
    if (job_platform_valid(s))
        return 0;
    snprintf(why, n, "'%s' is not os/arch[/variant]", shown(s, tmp));
    return -1;
}

static int parse_policy(struct parse *p, yaml_node_t *n, const char *where, enum job_policy *out)
{
    const char *s = text(p, n, where);
    char tmp[SHOWN_MAX + 4];
    if (!s)
        return -1;
    if (job_policy_parse(s, out) < 0 || *out == JOB_POLICY_ALL)
        return fail(p, n, where, "'%s' is not sparse or rewrite", shown(s, tmp));
    return 0;
}

/* platforms and platform_policy of a mapping (defaults or an entry) over the inherited ones. */
static int parse_platform_keys(struct parse *p, yaml_node_t *map, const char *where,
                               struct strv *platforms, enum job_policy *policy)
{
    yaml_node_t *pl = get(p, map, "platforms"), *po = get(p, map, "platform_policy");
    char w[WHERE_MAX + 24];
    if (pl) {
        strv_free(platforms);
        sub(w, sizeof(w), where, "platforms");
        if (list_of(p, pl, w, JOB_MAX_PLATFORMS, "platforms", platform_check, NULL,
                    platforms) < 0)
            return -1;
    }
    if (po) {
        sub(w, sizeof(w), where, "platform_policy");
        if (parse_policy(p, po, w, policy) < 0)
            return -1;
        if (!platforms->n)
            return fail(p, po, w, "platform_policy needs platforms");
    }
    if (!platforms->n)
        *policy = JOB_POLICY_ALL; /* "platforms: []" takes every platform again */
    else if (*policy == JOB_POLICY_ALL)
        return fail(p, pl ? pl : map, where,
                    "platforms needs platform_policy: sparse (the index kept, only these "
                    "children copied) or rewrite (a new index of them: a new digest)");
    return 0;
}

static int parse_defaults(struct parse *p, yaml_node_t *n)
{
    static const char *const keys[] = {"platforms", "platform_policy", "referrers", NULL};
    if (check_keys(p, n, "defaults", keys) < 0 ||
        parse_platform_keys(p, n, "defaults", &p->default_platforms, &p->default_policy) < 0)
        return -1;
    yaml_node_t *r = get(p, n, "referrers");
    return r ? boolean(p, r, "defaults.referrers", &p->default_referrers) : 0;
}

/* ---- tags ------------------------------------------------------------------------------ */

static int add_items(struct parse *p, struct tagfilter *f, yaml_node_t *n, const char *where,
                     enum tagfilter_kind kind)
{
    yaml_node_t **items;
    size_t count;
    struct err e;
    int rc = -1;
    if (strings(p, n, where, &items, &count) < 0)
        return -1;
    for (size_t i = 0; i < count; i++)
        if (tagfilter_add(f, kind, (const char *)items[i]->data.scalar.value, &e) < 0) {
            fail(p, items[i], where, "%s", e.msg);
            goto out;
        }
    rc = 0;
out:
    free(items);
    return rc;
}

static int parse_tag_map(struct parse *p, struct tagfilter *f, yaml_node_t *n, const char *where)
{
    static const char *const keys[] = {"names",          "glob",    "regex",
                                       "semver",         "exclude", "exclude_regex",
                                       "exclude_semver", "newest",  "order",
                                       NULL};
    static const enum tagfilter_kind kinds[] = {
        TAGFILTER_NAME,           TAGFILTER_GLOB,         TAGFILTER_REGEX,
        TAGFILTER_SEMVER,         TAGFILTER_EXCLUDE_GLOB, TAGFILTER_EXCLUDE_REGEX,
        TAGFILTER_EXCLUDE_SEMVER,
    };
    char w[WHERE_MAX + 24], tmp[SHOWN_MAX + 4];
    if (check_keys(p, n, where, keys) < 0)
        return -1;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        yaml_node_t *v = get(p, n, keys[i]);
        sub(w, sizeof(w), where, keys[i]);
        if (v && add_items(p, f, v, w, kinds[i]) < 0)
            return -1;
    }
    yaml_node_t *newest = get(p, n, "newest"), *order = get(p, n, "order");
    enum tagfilter_order by = TAGFILTER_BY_SEMVER;
    if (order) {
        sub(w, sizeof(w), where, "order");
        const char *s = text(p, order, w);
        if (!s)
            return -1;
        if (strcmp(s, "semver") != 0 && strcmp(s, "tag") != 0)
            return fail(p, order, w, "'%s' is not semver or tag", shown(s, tmp));
        if (!newest)
            return fail(p, order, w, "order goes with newest");
        by = s[0] == 't' ? TAGFILTER_BY_TAG : TAGFILTER_BY_SEMVER;
    }
    if (newest) {
        sub(w, sizeof(w), where, "newest");
        const char *s = text(p, newest, w);
        char *end;
        if (!s)
            return -1;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (!*s || *end || errno || v < 1 || v > NEWEST_MAX)
            return fail(p, newest, w, "'%s' is not a number of tags (1..%d)", shown(s, tmp),
                        NEWEST_MAX);
        tagfilter_newest(f, (int)v, by);
    }
    return 0;
}

static int parse_tags(struct parse *p, struct syncfile_entry *en, yaml_node_t *n,
                      const char *where)
{
    en->tags = tagfilter_new();
    if (n->type == YAML_MAPPING_NODE)
        return parse_tag_map(p, en->tags, n, where);
    return add_items(p, en->tags, n, where, TAGFILTER_NAME);
}

/* ---- entries --------------------------------------------------------------------------- */

static int digest_check(const char *s, const void *ctx, char *why, size_t n)
{
    char tmp[SHOWN_MAX + 4];
    (void)ctx;
    if (digest_valid(s))
        return 0;
    snprintf(why, n, "'%s' is not a digest (sha256:<64 hex>)", shown(s, tmp));
    return -1;
}

/* The target of an entry that names none: the source path, under its
 * registry's name (':' as '-') unless that is docker.io. */
static char *default_target(const struct syncfile_entry *en)
{
    if (strcmp(en->registry->name, SYNCFILE_HUB) == 0)
        return xstrdup(en->repo);
    char *t = xasprintf("%s/%s", en->registry->name, en->repo);
    for (char *q = t; *q && *q != '/'; q++)
        if (*q == ':')
            *q = '-';
    return t;
}

static int parse_source(struct parse *p, struct syncfile_entry *en, yaml_node_t *n,
                        const char *where)
{
    struct ref r;
    struct err e;
    const char *s = text(p, n, where);
    if (!s)
        return -1;
    if (ref_parse(&r, s, &e) < 0)
        return fail(p, n, where, "%s", e.msg);
    en->source = xstrdup(s);
    en->repo = xstrdup(r.path);
    char *name = canonical_name(r.domain);
    const struct syncfile_registry *reg = syncfile_registry(p->sf, name);
    if (!reg) {
        struct syncfile_registry *added = reg_add(p->sf, name);
        if (strcmp(name, SYNCFILE_HUB) != 0)
            added->url = xasprintf("https://%s", name);
        reg = added;
    }
    free(name);
    if (reg->url && !job_url_valid(reg->url)) {
        char tmp[SHOWN_MAX + 4];
        ref_free(&r);
        return fail(p, n, where, "'%s' makes no registry URL (%s)", shown(s, tmp), reg->url);
    }
    /* Registries move when one is added: entries find theirs again at the end. */
    en->registry = reg;
    int rc = 0;
    if (r.tag) {
        en->tags = tagfilter_new();
        if (tagfilter_add(en->tags, TAGFILTER_NAME, r.tag, &e) < 0)
            rc = fail(p, n, where, "%s", e.msg);
    }
    if (r.digest[0])
        strv_push(&en->digests, xstrdup(r.digest));
    ref_free(&r);
    return rc;
}

static int parse_entry(struct parse *p, struct syncfile_entry *en, yaml_node_t *n, size_t i)
{
    static const char *const keys[] = {"source",    "target",    "tags",
                                       "digests",   "platforms", "platform_policy",
                                       "referrers", NULL};
    char where[WHERE_MAX], w[WHERE_MAX + 24], tmp[SHOWN_MAX + 4];
    snprintf(where, sizeof(where), "sync[%zu]", i);
    en->line = (int)n->start_mark.line + 1;
    en->column = (int)n->start_mark.column + 1;
    en->referrers = p->default_referrers;
    en->policy = p->default_policy;
    for (size_t k = 0; k < p->default_platforms.n; k++)
        strv_push(&en->platforms, xstrdup(p->default_platforms.v[k]));
    if (check_keys(p, n, where, keys) < 0)
        return -1;
    yaml_node_t *source = get(p, n, "source");
    if (!source)
        return fail(p, n, where, "no source (the image to copy: [registry/]repository)");
    sub(w, sizeof(w), where, "source");
    if (parse_source(p, en, source, w) < 0)
        return -1;
    yaml_node_t *tags = get(p, n, "tags"), *digests = get(p, n, "digests");
    if (tags) {
        sub(w, sizeof(w), where, "tags");
        if (en->tags)
            return fail(p, tags, w, "the source names a tag already ('%s'): list it here "
                                    "instead",
                        shown(en->source, tmp));
        if (parse_tags(p, en, tags, w) < 0)
            return -1;
    }
    if (digests) {
        sub(w, sizeof(w), where, "digests");
        if (list_of(p, digests, w, JOB_MAX_TAGS, "digests", digest_check, NULL, &en->digests) < 0)
            return -1;
    }
    if (!en->tags && !en->digests.n)
        en->tags = tagfilter_new(); /* no tags named: every tag */
    en->all_tags = en->tags && !tagfilter_names_only(en->tags);
    yaml_node_t *target = get(p, n, "target"), *referrers = get(p, n, "referrers");
    if (target) {
        sub(w, sizeof(w), where, "target");
        const char *t = text(p, target, w);
        if (!t)
            return -1;
        if (!ref_repo_valid(t))
            return fail(p, target, w, "'%s' is not a repository name (lowercase path "
                                      "components, no registry, no tag)",
                        shown(t, tmp));
        en->target = xstrdup(t);
    } else {
        en->target = default_target(en);
        if (!ref_repo_valid(en->target))
            return fail(p, source, where, "'%s' makes no repository name on the target: give "
                                          "target",
                        shown(en->target, tmp));
    }
    if (referrers) {
        sub(w, sizeof(w), where, "referrers");
        if (boolean(p, referrers, w, &en->referrers) < 0)
            return -1;
    }
    return parse_platform_keys(p, n, where, &en->platforms, &en->policy);
}

static int parse_sync(struct parse *p, yaml_node_t *n)
{
    if (expect(p, n, YAML_SEQUENCE_NODE, "sync") < 0)
        return -1;
    size_t len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (len == 0)
        return fail(p, n, "sync", "no entries");
    if (len > SYNCFILE_MAX_ENTRIES)
        return fail(p, n, "sync", "%zu entries, more than %d", len, SYNCFILE_MAX_ENTRIES);
    struct syncfile *sf = p->sf;
    sf->entries = xcalloc(len, sizeof(*sf->entries));
    /* The registries' array grows while sources are read: entries keep names
     * until the end, then point at their registry. */
    char **names = xcalloc(len, sizeof(*names));
    int rc = -1;
    for (size_t i = 0; i < len; i++) {
        struct syncfile_entry *en = &sf->entries[sf->nentries++];
        if (parse_entry(p, en, node_at(p, n->data.sequence.items.start[i]), i) < 0)
            goto out;
        names[i] = xstrdup(en->registry->name);
    }
    for (size_t i = 0; i < len; i++)
        sf->entries[i].registry = syncfile_registry(sf, names[i]);
    rc = 0;
out:
    for (size_t i = 0; i < len; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* ---- the file ---------------------------------------------------------------------------- */

static int parse_root(struct parse *p, yaml_node_t *root)
{
    static const char *const keys[] = {"version", "registries", "defaults", "sync", NULL};
    if (check_keys(p, root, "file", keys) < 0)
        return -1;
    yaml_node_t *v = get(p, root, "version");
    if (!v)
        return fail(p, root, "file", "no version (write 'version: 1' first)");
    const char *s = text(p, v, "version");
    char tmp[SHOWN_MAX + 4];
    if (!s)
        return -1;
    if (strcmp(s, "1") != 0)
        return fail(p, v, "version", "'%s' is not a version this hubsync reads (1)",
                    shown(s, tmp));
    yaml_node_t *regs = get(p, root, "registries"), *defs = get(p, root, "defaults");
    yaml_node_t *sync = get(p, root, "sync");
    if ((regs && parse_registries(p, regs) < 0) || (defs && parse_defaults(p, defs) < 0))
        return -1;
    if (!sync)
        return fail(p, root, "file", "no sync (the list of images to copy)");
    return parse_sync(p, sync);
}

struct syncfile *syncfile_parse(const char *data, size_t len, const char *path, struct err *e)
{
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    struct syncfile *sf = xcalloc(1, sizeof(*sf));
    struct parse p = {.path = path, .doc = &doc, .e = e, .sf = sf, .default_referrers = 1};
    int loaded = 0, ok = 0;
    sf->path = xstrdup(path);
    if (len > SYNCFILE_MAX_BYTES) {
        err_set(e, "%s: %zu bytes, more than %ld", path, len, SYNCFILE_MAX_BYTES);
        goto out_nop;
    }
    if (!yaml_parser_initialize(&parser)) {
        err_set(e, "%s: cannot start the YAML parser", path);
        goto out_nop;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    if (!yaml_parser_load(&parser, &doc)) {
        err_set(e, "%s:%lu:%lu: %s%s%s", path, (unsigned long)parser.problem_mark.line + 1,
                (unsigned long)parser.problem_mark.column + 1,
                parser.context ? parser.context : "", parser.context ? ", " : "",
                parser.problem ? parser.problem : "not YAML");
        goto out;
    }
    loaded = 1;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        err_set(e, "%s: empty (write 'version: 1' and a 'sync' list)", path);
        goto out;
    }
    if (!yaml_parser_load(&parser, &extra)) {
        err_set(e, "%s:%lu:%lu: %s", path, (unsigned long)parser.problem_mark.line + 1,
                (unsigned long)parser.problem_mark.column + 1,
                parser.problem ? parser.problem : "not YAML");
        goto out;
    }
    yaml_node_t *more = yaml_document_get_root_node(&extra);
    if (more) {
        fail(&p, more, "file", "a second document (one sync file is one document)");
        yaml_document_delete(&extra);
        goto out;
    }
    yaml_document_delete(&extra);
    ok = parse_root(&p, root) == 0;
out:
    if (loaded)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
out_nop:
    strv_free(&p.default_platforms);
    if (!ok) {
        syncfile_free(sf);
        return NULL;
    }
    return sf;
}

struct syncfile *syncfile_load(const char *path, struct err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_set(e, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *data = xmalloc(SYNCFILE_MAX_BYTES + 1);
    size_t n = fread(data, 1, SYNCFILE_MAX_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    struct syncfile *sf = NULL;
    if (bad)
        err_set(e, "%s: read error", path);
    else if (n > SYNCFILE_MAX_BYTES)
        err_set(e, "%s: more than %ld bytes", path, SYNCFILE_MAX_BYTES);
    else
        sf = syncfile_parse(data, n, path, e);
    free(data);
    return sf;
}

void syncfile_free(struct syncfile *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nentries; i++) {
        struct syncfile_entry *en = &s->entries[i];
        free(en->source);
        free(en->repo);
        free(en->target);
        tagfilter_free(en->tags);
        strv_free(&en->digests);
        strv_free(&en->platforms);
    }
    free(s->entries);
    for (size_t i = 0; i < s->nregs; i++) {
        free(s->regs[i].name);
        free(s->regs[i].url);
        strv_free(&s->regs[i].accounts);
    }
    free(s->regs);
    free(s->path);
    free(s);
}

const struct syncfile_registry *syncfile_registry(const struct syncfile *s, const char *name)
{
    char *c = canonical_name(name);
    const struct syncfile_registry *r = NULL;
    for (size_t i = 0; i < s->nregs && !r; i++)
        if (strcmp(s->regs[i].name, c) == 0)
            r = &s->regs[i];
    free(c);
    return r;
}

const char *syncfile_registry_url(const struct syncfile_registry *r, const char *upstream)
{
    return r->url ? r->url : upstream;
}

char *syncfile_entry_name(const struct syncfile_entry *en)
{
    if (strcmp(en->registry->name, SYNCFILE_HUB) == 0)
        return xstrdup(en->repo);
    return xasprintf("%s/%s", en->registry->name, en->repo);
}
