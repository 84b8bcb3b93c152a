/* tagfilter: see tagfilter.h. */
#include "tagfilter.h"

#include <fnmatch.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"
#include "semver.h"
#include "xalloc.h"

#define PATTERN_MAX 1024

struct item {
    enum tagfilter_kind kind;
    char *text;
    regex_t re;                  /* regex kinds */
    struct semver_range *range;  /* semver kinds */
};

struct tagfilter {
    struct item **items; /* pointers: a regex_t must not move */
    size_t n;
    size_t nincludes;
    const char **names; /* the TAGFILTER_NAME texts, borrowed from items */
    size_t nnames;
    int newest;         /* 0: all */
    enum tagfilter_order order;
};

struct tagfilter *tagfilter_new(void)
{
    return xcalloc(1, sizeof(struct tagfilter));
}

void tagfilter_free(struct tagfilter *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++) {
        struct item *it = f->items[i];
        if (it->kind == TAGFILTER_REGEX || it->kind == TAGFILTER_EXCLUDE_REGEX)
            regfree(&it->re);
        semver_range_free(it->range);
        free(it->text);
        free(it);
    }
    free(f->items);
    free(f->names);
    free(f);
}

static int is_include(enum tagfilter_kind k)
{
    return k == TAGFILTER_NAME || k == TAGFILTER_GLOB || k == TAGFILTER_REGEX ||
           k == TAGFILTER_SEMVER;
}

int tagfilter_add(struct tagfilter *f, enum tagfilter_kind kind, const char *text,
                  struct err *e)
{
    struct item *it = xcalloc(1, sizeof(*it));
    size_t len = strlen(text);
    it->kind = kind;
    if (len == 0) {
        err_set(e, "empty");
        goto bad;
    }
    if (len > PATTERN_MAX) {
        err_set(e, "%zu characters, more than %d", len, PATTERN_MAX);
        goto bad;
    }
    switch (kind) {
    case TAGFILTER_NAME:
        if (!ref_tag_valid(text)) {
            err_set(e, "'%.200s' is not a tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})", text);
            goto bad;
        }
        break;
    case TAGFILTER_REGEX:
    case TAGFILTER_EXCLUDE_REGEX: {
        int rc = regcomp(&it->re, text, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char why[128];
            regerror(rc, &it->re, why, sizeof(why));
            err_set(e, "regular expression '%.200s': %s", text, why);
            goto bad;
        }
        break;
    }
    case TAGFILTER_SEMVER:
    case TAGFILTER_EXCLUDE_SEMVER:
        if (semver_range_parse(text, &it->range, e) < 0)
            goto bad;
        break;
    default:
        break;
    }
    it->text = xstrdup(text);
    f->items = xrealloc(f->items, (f->n + 1) * sizeof(*f->items));
    f->items[f->n++] = it;
    if (is_include(kind))
        f->nincludes++;
    if (kind == TAGFILTER_NAME) {
        f->names = xrealloc(f->names, (f->nnames + 1) * sizeof(*f->names));
        f->names[f->nnames++] = it->text;
    }
    return 0;
bad:
    free(it);
    return -1;
}

void tagfilter_newest(struct tagfilter *f, int n, enum tagfilter_order order)
{
    f->newest = n > 0 ? n : 0;
    f->order = order;
}

int tagfilter_names_only(const struct tagfilter *f)
{
    return f->nnames > 0 && f->nnames == f->n && !f->newest;
}

size_t tagfilter_names(const struct tagfilter *f, const char *const **names)
{
    *names = f->names;
    return f->nnames;
}

static int item_match(const struct item *it, const char *tag)
{
    struct semver v;
    switch (it->kind) {
    case TAGFILTER_NAME:
        return strcmp(it->text, tag) == 0;
    case TAGFILTER_GLOB:
    case TAGFILTER_EXCLUDE_GLOB:
        return fnmatch(it->text, tag, 0) == 0;
    case TAGFILTER_REGEX:
    case TAGFILTER_EXCLUDE_REGEX:
        return regexec(&it->re, tag, 0, NULL, 0) == 0;
    default:
        return semver_parse(tag, &v) == 0 && semver_range_match(it->range, &v);
    }
}

static const char *const referrer_kinds[TAGFILTER_REFERRER_KINDS] = {"sig", "att", "sbom"};

void tagfilter_referrer_tag_of(const char *digest, size_t k,
                               char tag[TAGFILTER_REFERRER_TAG_SIZE])
{
    snprintf(tag, TAGFILTER_REFERRER_TAG_SIZE, "sha256-%.64s.%s", digest + strlen("sha256:"),
             referrer_kinds[k]);
}

int tagfilter_referrer_tag(const char *tag)
{
    const char *hex = tag + strlen("sha256-");
    if (strncmp(tag, "sha256-", strlen("sha256-")) != 0 || strspn(hex, "0123456789abcdef") != 64)
        return 0;
    for (size_t i = 0; i < TAGFILTER_REFERRER_KINDS; i++)
        if (hex[64] == '.' && strcmp(hex + 65, referrer_kinds[i]) == 0)
            return 1;
    return 0;
}

int tagfilter_match(const struct tagfilter *f, const char *tag)
{
    /* A referrer's fallback tag travels with the digest it names: only its own
     * name takes it as a tag. */
    int referrer = tagfilter_referrer_tag(tag);
    int in = f->nincludes == 0 && !referrer;
    for (size_t i = 0; i < f->n; i++) {
        const struct item *it = f->items[i];
        if (is_include(it->kind)) {
            if (!in && (!referrer || it->kind == TAGFILTER_NAME) && item_match(it, tag))
                in = 1;
        } else if (item_match(it, tag)) {
            return 0;
        }
    }
    return in;
}

/* A candidate for newest N. */
struct ranked {
    const char *tag;
    size_t pos;
    struct semver v;
};

static int by_semver_desc(const void *pa, const void *pb)
{
    const struct ranked *a = pa, *b = pb;
    int c = semver_cmp(&b->v, &a->v);
    if (c)
        return c;
    /* Equal versions ("3.12", "3.12.0"): the one written longer first, then by name. */
    if (a->v.parts != b->v.parts)
        return b->v.parts - a->v.parts;
    return strcmp(a->tag, b->tag);
}

static int by_tag_desc(const void *pa, const void *pb)
{
    const struct ranked *a = pa, *b = pb;
    return strverscmp(b->tag, a->tag);
}

static int by_pos(const void *pa, const void *pb)
{
    const struct ranked *a = pa, *b = pb;
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

size_t tagfilter_apply(const struct tagfilter *f, const char *const *tags, size_t n,
                       const char **out)
{
    struct ranked *r = xcalloc(n ? n : 1, sizeof(*r));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!tagfilter_match(f, tags[i]))
            continue;
        r[k].tag = tags[i];
        r[k].pos = i;
        if (f->newest && f->order == TAGFILTER_BY_SEMVER && semver_parse(tags[i], &r[k].v) < 0)
            continue; /* no version: not ranked */
        k++;
    }
    if (f->newest && k > (size_t)f->newest) {
        qsort(r, k, sizeof(*r), f->order == TAGFILTER_BY_SEMVER ? by_semver_desc : by_tag_desc);
        k = (size_t)f->newest;
        qsort(r, k, sizeof(*r), by_pos);
    }
    for (size_t i = 0; i < k; i++)
        out[i] = r[i].tag;
    free(r);
    return k;
}
