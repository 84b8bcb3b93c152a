/* strv: see strv.h. */
#include "strv.h"

#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

void strv_push(struct strv *s, char *owned)
{
    /* grow at powers of two: no separate capacity field needed */
    if ((s->n & (s->n - 1)) == 0)
        s->v = xrealloc(s->v, (s->n ? 2 * s->n : 1) * sizeof(char *));
    s->v[s->n++] = owned;
}

void strv_free_array(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

void strv_free(struct strv *s)
{
    strv_free_array(s->v, s->n);
    s->v = NULL;
    s->n = 0;
}

void strv_copy(struct strv *dst, const struct strv *src)
{
    memset(dst, 0, sizeof(*dst));
    for (size_t i = 0; i < src->n; i++)
        strv_push(dst, xstrdup(src->v[i]));
}

int strv_has(const struct strv *s, const char *str)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], str) == 0)
            return 1;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void strv_sort_uniq(struct strv *s)
{
    if (s->n < 2)
        return;
    qsort(s->v, s->n, sizeof(char *), cmp_str);
    size_t w = 1;
    for (size_t i = 1; i < s->n; i++) {
        if (strcmp(s->v[i], s->v[w - 1]) == 0)
            free(s->v[i]);
        else
            s->v[w++] = s->v[i];
    }
    s->n = w;
}
