/* strv: a growable list of owned strings, the one every module uses.
 *
 * Start from {NULL, 0} (or STRV_INIT); strv_free releases every element and
 * the array and leaves the list empty and reusable. A plain char ** with its
 * count (a job's tags, an rq answer's items) is released with
 * strv_free_array. */
#ifndef HUBSYNC_STRV_H
#define HUBSYNC_STRV_H

#include <stddef.h>

struct strv {
    char **v;
    size_t n;
};

#define STRV_INIT {NULL, 0}

/* Append an owned string. */
void strv_push(struct strv *s, char *owned);
void strv_free(struct strv *s);
/* Free n strings of v and v itself (NULL-safe). */
void strv_free_array(char **v, size_t n);
/* dst (its old contents not freed) becomes a copy of src. */
void strv_copy(struct strv *dst, const struct strv *src);
/* 1 if s holds an element equal to str. */
int strv_has(const struct strv *s, const char *str);
/* Sort in byte order (strcmp) and drop duplicates. */
void strv_sort_uniq(struct strv *s);

#endif
