/* Fuzz target: the URLs an operator writes in flags and environment: Redis
 * URLs (rconn_url_parse), registry URLs (job_url_valid, creds_host_key) and
 * relative references resolved against a registry (reg_parse_resolve_url).
 * Invariants: a parsed Redis URL has a host, a port in 1..65535 and a db in
 * 0..65535, and neither its "where" text nor an error ever shows the
 * password; an accepted registry URL is http(s) with no credentials and no
 * byte that could split a request; a host key is lowercase with no path;
 * a resolved URL is http(s) and printable. */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "creds.h"
#include "job.h"
#include "rconn.h"
#include "reg_parse.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Parse s; on success the parts must be in range. Returns what a user may
 * see (the "where" text or the error). Caller frees. */
static char *parse_redis(const char *s)
{
    struct rconn_url u;
    struct err e;
    if (rconn_url_parse(&u, s, &e) < 0)
        return strdup(e.msg);
    if (!u.host || !u.host[0] || u.port < 1 || u.port > 65535 || u.db < 0 || u.db > 65535 ||
        !u.where)
        abort();
    char *where = strdup(u.where);
    rconn_url_free(&u);
    return where;
}

/* s with its password (between the first ':' after the scheme and the last
 * '@') replaced by pw, or NULL when s has no password. Caller frees. */
static char *with_password(const char *s, const char *pw)
{
    if (strncmp(s, "redis://", 8) != 0)
        return NULL;
    const char *p = s + 8, *at = strrchr(p, '@');
    const char *colon = at ? memchr(p, ':', (size_t)(at - p)) : NULL;
    if (!colon)
        return NULL;
    size_t head = (size_t)(colon + 1 - s), pl = strlen(pw), tail = strlen(at);
    char *out = malloc(head + pl + tail + 1);
    if (!out)
        return NULL;
    memcpy(out, s, head);
    memcpy(out + head, pw, pl);
    memcpy(out + head + pl, at, tail + 1);
    return out;
}

/* A canary password, well-formed or with a bad percent escape, must never
 * show, whatever the rest of the URL (unless the rest holds it too). */
static void check_password_hidden(const char *s)
{
    static const char *const canaries[] = {"QzQzQzQ", "QzQz%zQzQ"};
    for (size_t i = 0; i < sizeof(canaries) / sizeof(canaries[0]); i++) {
        char *t = with_password(s, canaries[i]);
        if (!t)
            return;
        char *shown = parse_redis(t);
        if (shown && strstr(shown, "QzQz") && !strstr(strrchr(t, '@'), "QzQz"))
            abort();
        free(shown);
        free(t);
    }
}

static void fuzz_redis(const char *s)
{
    free(parse_redis(s));
    check_password_hidden(s);
}

static void fuzz_registry(const char *s)
{
    if (job_url_valid(s)) {
        fuzz_check_url(s);
        const char *auth = strstr(s, "://") + 3;
        const char *end = auth + strcspn(auth, "/");
        if (memchr(auth, '@', (size_t)(end - auth)))
            abort();
    }
    char *key = creds_host_key(s);
    if (key) {
        if (!key[0] || strchr(key, '/'))
            abort();
        for (const char *p = key; *p; p++)
            if (isupper((unsigned char)*p))
                abort();
        free(key);
    }
    char *abs;
    struct err e;
    if (reg_parse_resolve_url("https://reg.example:5000/v2/library/a/blobs/uploads/", s, &abs,
                              &e) == 0) {
        fuzz_check_url(abs);
        free(abs);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = strndup((const char *)data, size); /* the programs see C strings */
    if (!s)
        return 0;
    fuzz_redis(s);
    fuzz_registry(s);
    free(s);
    return 0;
}
