/* Fuzz target: oi_parse on arbitrary bytes. An error must name the file and
 * line; a parsed repository must keep the model's invariants (every entry
 * has valid tags, a known architecture for each platform, a 40/64 hex
 * commit and a fingerprint; one tags group per entry, group entries in
 * range, platforms sorted and distinct, each tag in one group per kind). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_sorted(const struct strv *s)
{
    for (size_t i = 1; i < s->n; i++)
        if (strcmp(s->v[i - 1], s->v[i]) >= 0)
            abort();
}

/* ^\w[\w.-]{0,127}$, checked independently of the parser */
static void check_tag(const char *t)
{
    size_t n = strlen(t);
    if (n < 1 || n > 128 || strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                      "0123456789_.-") != n ||
        t[0] == '.' || t[0] == '-')
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct oi_repo *r;
    struct err e;
    if (oi_parse((const char *)data, size, "fuzz", &r, &e) < 0) {
        if (strncmp(e.msg, "library/fuzz line ", 18) != 0)
            abort();
        return 0;
    }
    size_t tags_groups = 0;
    for (size_t i = 0; i < r->nentries; i++) {
        const struct oi_entry *en = &r->entries[i];
        if (en->tags.n < 1 || strlen(en->fingerprint) != OI_FINGERPRINT_LEN ||
            en->platforms.n != en->arches.n)
            abort();
        check_sorted(&en->arches);
        check_sorted(&en->platforms);
        for (size_t k = 0; k < en->arches.n; k++)
            if (!oi_arch_platform(en->arches.v[k]))
                abort();
        for (size_t k = 0; k < en->tags.n; k++)
            check_tag(en->tags.v[k]);
        for (size_t k = 0; k < en->shared_tags.n; k++)
            check_tag(en->shared_tags.v[k]);
        size_t cn = strlen(en->git_commit);
        if ((cn != 40 && cn != 64) || strspn(en->git_commit, "0123456789abcdef") != cn)
            abort();
    }
    for (size_t g = 0; g < r->ngroups; g++) {
        const struct oi_group *gr = &r->groups[g];
        if (gr->tags.n < 1 || gr->nentries < 1)
            abort();
        tags_groups += gr->kind == OI_GROUP_TAGS;
        for (size_t k = 0; k < gr->nentries; k++)
            if (gr->entries[k] >= r->nentries)
                abort();
        check_sorted(&gr->platforms);
        for (size_t t = 0; t < gr->tags.n; t++)
            if (oi_find_group(r, gr->kind, gr->tags.v[t]) != (long)g)
                abort();
        char *key = oi_group_key(r, gr);
        free(key);
    }
    if (tags_groups != r->nentries)
        abort();
    oi_repo_free(r);
    return 0;
}
