/* reg_parse: see reg_parse.h. */
#include "reg_parse.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "digest.h"
#include "reg.h"
#include "ref.h"
#include "xalloc.h"

#define URL_MAX 8192

static int is_ws(char c)
{
    return c == ' ' || c == '\t';
}

/* Does the rel value (a space-separated list) contain "next"? */
static int rel_has_next(const char *v, size_t n)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && is_ws(v[i]))
            i++;
        size_t st = i;
        while (i < n && !is_ws(v[i]))
            i++;
        if (i - st == 4 && strncasecmp(v + st, "next", 4) == 0)
            return 1;
    }
    return 0;
}

int reg_parse_link_next(const char *value, size_t n, char **url, struct err *e)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (is_ws(value[i]) || value[i] == ','))
            i++;
        if (i >= n)
            break;
        if (value[i] != '<')
            return err_set(e, "Link: expected '<' at offset %zu", i);
        size_t us = ++i;
        while (i < n && value[i] != '>')
            i++;
        if (i >= n)
            return err_set(e, "Link: unterminated '<' at offset %zu", us - 1);
        size_t ue = i++;
        int next = 0;
        /* Parameters until the next top-level comma. */
        for (;;) {
            while (i < n && is_ws(value[i]))
                i++;
            if (i >= n || value[i] == ',')
                break;
            if (value[i] != ';')
                return err_set(e, "Link: expected ';' or ',' at offset %zu", i);
            i++;
            while (i < n && is_ws(value[i]))
                i++;
            size_t ns = i;
            while (i < n && value[i] != '=' && value[i] != ';' && value[i] != ',' &&
                   !is_ws(value[i]))
                i++;
            size_t ne = i;
            while (i < n && is_ws(value[i]))
                i++;
            const char *v = NULL;
            size_t vl = 0;
            if (i < n && value[i] == '=') {
                i++;
                while (i < n && is_ws(value[i]))
                    i++;
                if (i < n && value[i] == '"') {
                    size_t vs = ++i;
                    while (i < n && value[i] != '"')
                        i += (value[i] == '\\' && i + 1 < n) ? 2 : 1;
                    if (i >= n)
                        return err_set(e, "Link: unterminated quoted string at offset %zu",
                                       vs - 1);
                    v = value + vs;
                    vl = i - vs;
                    i++;
                } else {
                    size_t vs = i;
                    while (i < n && value[i] != ';' && value[i] != ',' && !is_ws(value[i]))
                        i++;
                    v = value + vs;
                    vl = i - vs;
                }
            }
            if (ne - ns == 3 && strncasecmp(value + ns, "rel", 3) == 0 && v &&
                rel_has_next(v, vl))
                next = 1;
        }
        if (next) {
            if (ue == us)
                return err_set(e, "Link: empty target for rel=\"next\"");
            *url = xstrndup(value + us, ue - us);
            return 1;
        }
    }
    return 0;
}

/* Copy printable ASCII of s into out (bounded), the rest as '?'. */
static void printable(char *out, size_t outsz, size_t *k, const char *s)
{
    for (; s && *s && *k + 1 < outsz; s++)
        out[(*k)++] = ((unsigned char)*s >= 0x20 && (unsigned char)*s < 0x7f) ? *s : '?';
    out[*k] = '\0';
}

int reg_parse_errors(const char *body, size_t n, char *out, size_t outsz, int *toomany)
{
    if (toomany)
        *toomany = 0;
    if (outsz)
        out[0] = '\0';
    if (!body || n == 0)
        return 0;
    json_error_t je;
    json_t *root = json_loadb(body, n, 0, &je);
    json_t *errs = json_object_get(root, "errors");
    int rc = 0;
    if (!json_is_array(errs) || json_array_size(errs) == 0)
        goto out;
    size_t i;
    json_t *it;
    json_array_foreach(errs, i, it) {
        const char *code = json_string_value(json_object_get(it, "code"));
        if (code && toomany && strcmp(code, "TOOMANYREQUESTS") == 0)
            *toomany = 1;
    }
    json_t *first = json_array_get(errs, 0);
    const char *code = json_string_value(json_object_get(first, "code"));
    const char *msg = json_string_value(json_object_get(first, "message"));
    if (!code && !msg)
        goto out;
    if (outsz) {
        size_t k = 0;
        printable(out, outsz, &k, code ? code : "ERROR");
        if (msg && *msg) {
            printable(out, outsz, &k, ": ");
            printable(out, outsz, &k, msg);
        }
    }
    rc = 1;
out:
    if (root)
        json_decref(root);
    return rc;
}

void reg_parse_free_tags(char **tags, size_t ntags)
{
    for (size_t i = 0; tags && i < ntags; i++)
        free(tags[i]);
    free(tags);
}

/* One page of a listing: a JSON object whose array member holds strings (field NULL) or
 * objects with a string member field, each taken when valid. */
struct page_spec {
    const char *what;     /* the answer, in messages: "tag list", "referrers" */
    const char *member;   /* "tags", "manifests" */
    const char *field;    /* NULL: the items are the strings; else each item's member */
    const char *unit;     /* what max counts, in messages: "tags", "descriptors" */
    const char *bad_item; /* "is not a valid tag" */
    int (*valid)(const char *s);
    int optional;         /* a missing or null member is an empty page */
};

static int parse_page(const struct page_spec *ps, const char *body, size_t n, size_t max,
                      char ***out, size_t *nout, int *too_many, struct err *e)
{
    *out = NULL;
    *nout = 0;
    if (too_many)
        *too_many = 0;
    json_error_t je;
    json_t *root = json_loadb(body ? body : "", n, 0, &je);
    int rc = -1;
    if (!json_is_object(root)) {
        err_set(e, "%s is not a JSON object%s%.100s", ps->what, root ? "" : ": ",
                root ? "" : je.text);
        goto out;
    }
    json_t *arr = json_object_get(root, ps->member);
    if (ps->optional && (!arr || json_is_null(arr))) {
        *out = xcalloc(1, sizeof(char *));
        rc = 0;
        goto out;
    }
    if (!json_is_array(arr)) {
        err_set(e, "%s: \"%s\" is %snot an array", ps->what, ps->member,
                ps->optional ? "" : "missing or ");
        goto out;
    }
    size_t cnt = json_array_size(arr);
    if (cnt > max) {
        if (too_many)
            *too_many = 1;
        err_set(e, "%s: %zu %s in one page, more than the %zu allowed", ps->what, cnt, ps->unit,
                max);
        goto out;
    }
    char **v = xcalloc(cnt + 1, sizeof(char *));
    for (size_t i = 0; i < cnt; i++) {
        json_t *t = json_array_get(arr, i);
        if (ps->field)
            t = json_object_get(t, ps->field);
        if (!json_is_string(t) || strlen(json_string_value(t)) != json_string_length(t) ||
            !ps->valid(json_string_value(t))) {
            reg_parse_free_tags(v, i);
            err_set(e, "%s: %s[%zu] %s", ps->what, ps->member, i, ps->bad_item);
            goto out;
        }
        v[i] = xstrdup(json_string_value(t));
    }
    *out = v;
    *nout = cnt;
    rc = 0;
out:
    if (root)
        json_decref(root);
    return rc;
}

int reg_parse_tags(const char *body, size_t n, size_t max, char ***tags, size_t *ntags,
                   int *too_many, struct err *e)
{
    static const struct page_spec tag_list = {"tag list", "tags", NULL, "tags",
                                              "is not a valid tag", ref_tag_valid, 1};
    return parse_page(&tag_list, body, n, max, tags, ntags, too_many, e);
}

int reg_parse_referrers(const char *body, size_t n, size_t max, char ***digests, size_t *ndigests,
                        int *too_many, struct err *e)
{
    static const struct page_spec referrers = {"referrers", "manifests", "digest",
                                               "descriptors",
                                               "has no valid sha256 \"digest\"", digest_valid,
                                               0};
    return parse_page(&referrers, body, n, max, digests, ndigests, too_many, e);
}

static int scheme_len(const char *u)
{
    if (strncasecmp(u, "https://", 8) == 0)
        return 8;
    if (strncasecmp(u, "http://", 7) == 0)
        return 7;
    return 0;
}

int reg_parse_resolve_url(const char *base, const char *ref, char **out, struct err *e)
{
    size_t rl = strlen(ref);
    if (rl == 0 || rl > URL_MAX)
        return err_set(e, "URL reference is empty or longer than %d bytes", URL_MAX);
    for (size_t i = 0; i < rl; i++)
        if ((unsigned char)ref[i] <= 0x20 || (unsigned char)ref[i] >= 0x7f)
            return err_set(e, "URL reference holds a character not allowed in a URL");
    int bs = scheme_len(base);
    if (!bs)
        return err_set(e, "base URL is not http(s)");
    if (strstr(ref, "://")) {
        if (!scheme_len(ref))
            return err_set(e, "URL \"%.100s\" is not http(s)", ref);
        *out = xstrdup(ref);
        return 0;
    }
    if (ref[0] == '/' && ref[1] == '/') {
        *out = xasprintf("%.*s%s", bs - 2, base, ref); /* "https:" + "//host/..." */
        return 0;
    }
    const char *host_end = base + bs + strcspn(base + bs, "/?#");
    if (ref[0] == '/') {
        *out = xasprintf("%.*s%s", (int)(host_end - base), base, ref);
        return 0;
    }
    /* Relative path: replace the last segment of the base path. */
    const char *path_end = host_end + strcspn(host_end, "?#");
    const char *slash = path_end;
    while (slash > host_end && slash[-1] != '/')
        slash--;
    if (slash == host_end)
        *out = xasprintf("%.*s/%s", (int)(host_end - base), base, ref);
    else
        *out = xasprintf("%.*s%s", (int)(slash - base), base, ref);
    return 0;
}

/* scheme, host (lowercase) and port of an absolute URL into out. */
static int origin(const char *u, char *out, size_t outsz)
{
    int sl = scheme_len(u);
    if (!sl)
        return -1;
    const char *h = u + sl;
    size_t hl = strcspn(h, "/?#");
    const char *at = memchr(h, '@', hl);
    if (at) {
        hl -= (size_t)(at + 1 - h);
        h = at + 1;
    }
    int https = sl == 8;
    char host[512];
    if (hl == 0 || hl >= sizeof(host))
        return -1;
    for (size_t i = 0; i < hl; i++)
        host[i] = (h[i] >= 'A' && h[i] <= 'Z') ? (char)(h[i] + 32) : h[i];
    host[hl] = '\0';
    /* Make the default port explicit; IPv6 literals end in ']'. */
    char *colon = strrchr(host, ':');
    char *bracket = strrchr(host, ']');
    int has_port = colon && (!bracket || colon > bracket);
    snprintf(out, outsz, "%s://%s%s", https ? "https" : "http", host,
             has_port ? "" : (https ? ":443" : ":80"));
    return 0;
}

int reg_parse_same_origin(const char *a, const char *b)
{
    char oa[600], ob[600];
    if (origin(a, oa, sizeof(oa)) != 0 || origin(b, ob, sizeof(ob)) != 0)
        return 0;
    return strcmp(oa, ob) == 0;
}

/* The path prefix of a base URL, without trailing "/" and "/v2": *len bytes. */
static const char *base_path(const char *u, size_t *len)
{
    const char *p = u + scheme_len(u);
    p += strcspn(p, "/?#");
    size_t n = strcspn(p, "?#");
    for (;;) {
        while (n && p[n - 1] == '/')
            n--;
        if (n >= 3 && strncmp(p + n - 3, "/v2", 3) == 0)
            n -= 3;
        else
            break;
    }
    *len = n;
    return p;
}

int reg_parse_same_registry(const char *a, const char *b)
{
    if (!reg_parse_same_origin(a, b))
        return 0;
    size_t la, lb;
    const char *pa = base_path(a, &la), *pb = base_path(b, &lb);
    return la == lb && memcmp(pa, pb, la) == 0;
}
