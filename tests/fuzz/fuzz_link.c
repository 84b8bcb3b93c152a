/* Fuzz target: registry answer parsers (reg_parse) on arbitrary bytes: Link
 * headers, error documents, tag lists, referrers answers, URL resolution and
 * origins. Invariants: a resolved URL is http(s) and free of bytes that could
 * split a request; error summaries stay bounded and printable; tags obey the
 * tag grammar; referrers are sha256 digests, no more than asked for. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "digest.h"
#include "reg.h"
#include "reg_parse.h"
#include "ref.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    struct err e;
    char *next = NULL;
    if (reg_parse_link_next(s, size, &next, &e) == 1) {
        char *abs;
        if (reg_parse_resolve_url("https://reg.example:5000/v2/a/tags/list?n=1", next, &abs,
                                  &e) == 0) {
            fuzz_check_url(abs);
            (void)reg_parse_same_origin(abs, "https://reg.example:5000");
            free(abs);
        }
        free(next);
    }
    char out[64];
    int tm;
    reg_parse_errors(s, size, out, sizeof(out), &tm);
    if (strlen(out) >= sizeof(out))
        abort();
    for (const char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            abort();
    char **tags;
    size_t n;
    int many;
    if (reg_parse_tags(s, size, 1000, &tags, &n, &many, &e) == 0) {
        for (size_t i = 0; i < n; i++)
            if (!ref_tag_valid(tags[i]))
                abort();
        reg_parse_free_tags(tags, n);
    }
    if (reg_parse_referrers(s, size, 16, &tags, &n, &many, &e) == 0) {
        if (n > 16)
            abort();
        for (size_t i = 0; i < n; i++)
            if (!digest_valid(tags[i]))
                abort();
        reg_parse_free_tags(tags, n);
    }
    return 0;
}
