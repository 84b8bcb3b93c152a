/* Fuzz target: WWW-Authenticate parsing, token answers and token URLs on
 * arbitrary bytes. Invariants: no crash, a bounded number of challenges,
 * every parsed string NUL-terminated and free of control characters other
 * than tab, and a token URL built from a parsed Bearer challenge never
 * holds a byte that could split an HTTP request line. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_str(const char *s)
{
    for (const char *p = s; s && *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t')
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct auth_challenges c;
    struct err e;
    int n = auth_parse_challenges((const char *)data, size, &c, &e);
    if (n > AUTH_CHALLENGES_MAX || (n >= 0 && n != c.n))
        abort();
    for (int i = 0; n > 0 && i < c.n; i++) {
        check_str(c.v[i].realm);
        check_str(c.v[i].service);
        check_str(c.v[i].scope);
        check_str(c.v[i].error);
    }
    const struct auth_challenge *ch = n > 0 ? auth_pick(&c) : NULL;
    if (ch && ch->scheme == AUTH_SCHEME_BEARER) {
        char *url;
        if (auth_token_url(ch->realm, ch->service, ch->scope, &url, &e) == 0) {
            for (const char *p = url; *p; p++)
                if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
                    abort();
            free(url);
        }
    }
    auth_challenges_free(&c);
    char *tok;
    long exp;
    if (auth_parse_token((const char *)data, size, &tok, &exp, &e) == 0) {
        if (exp < 1 || !*tok)
            abort();
        for (const char *p = tok; *p; p++)
            if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
                abort();
        free(tok);
    }
    return 0;
}
