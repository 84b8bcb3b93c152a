/* Fuzz target: image references on arbitrary bytes (cut at the first NUL, as
 * a flag or environment value would be). Oracles: a parsed ref formats to a
 * string that parses to the identical ref; an official repository name is
 * itself an official reference naming the same repository; every error is
 * one bounded line. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"
#include "xalloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void one_line(const struct err *e)
{
    if (!e->msg[0] || strchr(e->msg, '\n') || strlen(e->msg) >= ERR_MSG_MAX)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = xmalloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    struct ref r, again;
    struct err e;
    if (ref_parse(&r, s, &e) == 0) {
        char *f = ref_format(&r);
        if (ref_parse(&again, f, &e) < 0 || !same(r.domain, again.domain) ||
            !same(r.path, again.path) || !same(r.tag, again.tag) ||
            strcmp(r.digest, again.digest) != 0)
            abort();
        ref_free(&again);
        free(f);
        ref_free(&r);
    } else {
        one_line(&e);
        if (r.domain || r.path || r.tag || r.digest[0])
            abort();
    }
    char *name = NULL;
    if (ref_official_repo(s, &name, &e) == 0) {
        char *back = NULL;
        if (ref_official_repo(name, &back, &e) < 0 || strcmp(back, name) != 0)
            abort();
        free(back);
        free(name);
    } else {
        one_line(&e);
        if (name)
            abort();
    }
    free(s);
    return 0;
}
