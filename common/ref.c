/* ref: see ref.h. Grammar: distribution/reference (reference.go, normalize.go). */
#include "ref.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"
#include "xalloc.h"

#define QUOTE_MAX 200 /* bytes of the input quoted in a message */
/* The longest input that can be valid: the name can only grow by normalisation. */
#define REF_INPUT_MAX (REF_NAME_MAX + 1 + REF_TAG_MAX + 1 + DIGEST_STR_SIZE - 1)
#define HUB "docker.io"
#define HUB_LEGACY "index.docker.io"
#define OFFICIAL "library/"

static int is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static int is_word(char c)
{
    return is_lower_alnum(c) || (c >= 'A' && c <= 'Z') || c == '_';
}

/* The bytes a reference may hold at all (position checks come later). */
static int ref_char(char c)
{
    return is_word(c) || strchr(".-:/@[]", c) != NULL;
}

/* Host label: [a-z0-9]([a-z0-9-]*[a-z0-9])? */
static int label_valid(const char *s, size_t n)
{
    if (!n || s[0] == '-' || s[n - 1] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_lower_alnum(s[i]) && s[i] != '-')
            return 0;
    return 1;
}

/* host[:port], host being dot-separated labels or a bracketed IPv6 address. */
static int domain_valid(const char *s, size_t n)
{
    size_t host = n;
    if (n && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close || close == s + 1)
            return 0;
        for (const char *p = s + 1; p < close; p++)
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || *p == ':'))
                return 0;
        host = (size_t)(close - s) + 1;
        if (host < n && s[host] != ':')
            return 0;
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon)
            host = (size_t)(colon - s);
        for (size_t i = 0, start = 0; i <= host; i++)
            if (i == host || s[i] == '.') {
                if (!label_valid(s + start, i - start))
                    return 0;
                start = i + 1;
            }
    }
    if (host < n) { /* ":port" */
        if (host + 1 == n)
            return 0;
        for (size_t i = host + 1; i < n; i++)
            if (s[i] < '0' || s[i] > '9')
                return 0;
    }
    return 1;
}

/* Path component: [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)* */
static int component_valid(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (!is_lower_alnum(s[i]))
            return 0;
        while (i < n && is_lower_alnum(s[i]))
            i++;
        if (i == n)
            return 1;
        size_t sep = i;
        while (i < n && !is_lower_alnum(s[i]))
            i++;
        size_t len = i - sep;
        int dashes = strspn(s + sep, "-") >= len;
        if (!(dashes || (len == 1 && s[sep] == '.') || (len <= 2 && strspn(s + sep, "_") >= len)))
            return 0;
    }
    return 0; /* empty, or ends in a separator */
}

static int tag_valid(const char *s, size_t n)
{
    if (!n || n > REF_TAG_MAX || !is_word(s[0]))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!is_word(s[i]) && s[i] != '.' && s[i] != '-')
            return 0;
    return 1;
}

int ref_repo_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > REF_NAME_MAX)
        return 0;
    for (size_t start = 0, i = 0; i <= n; i++)
        if (i == n || s[i] == '/') {
            if (!component_valid(s + start, i - start))
                return 0;
            start = i + 1;
        }
    return 1;
}

int ref_tag_valid(const char *s)
{
    return s && tag_valid(s, strlen(s));
}

/* The domain, if the first component of name (n bytes) is one: it holds a
 * '.' or a ':' or is "localhost" and a '/' follows. Its length, else 0. */
static size_t domain_len(const char *name, size_t n)
{
    const char *slash = memchr(name, '/', n);
    if (!slash)
        return 0;
    size_t d = (size_t)(slash - name);
    if (memchr(name, '.', d) || memchr(name, ':', d) || (d == 9 && !memcmp(name, "localhost", 9)))
        return d;
    return 0;
}

/* Check the path (n bytes at offset `at` of the input s, q quoted). */
static int path_check(const char *s, size_t at, size_t n, const char *q, struct err *e)
{
    const char *p = s + at;
    for (size_t i = 0; i < n; i++)
        if (p[i] >= 'A' && p[i] <= 'Z')
            return err_set(e, "'%s': uppercase letters are not allowed in a repository name "
                              "('%c' at position %zu)",
                           q, p[i], at + i + 1);
    for (size_t i = 0, start = 0; i <= n; i++) {
        if (i < n && p[i] != '/')
            continue;
        if (i == start)
            return err_set(e, "'%s': empty path component at position %zu", q, at + start + 1);
        if (!component_valid(p + start, i - start))
            return err_set(e, "'%s': invalid path component '%.*s' at position %zu (lowercase "
                              "letters and digits joined by '.', '_', '__' or '-')",
                           q, (int)(i - start > 64 ? 64 : i - start), p + start, at + start + 1);
        start = i + 1;
    }
    return 0;
}

void ref_free(struct ref *r)
{
    if (!r)
        return;
    free(r->domain);
    free(r->path);
    free(r->tag);
    memset(r, 0, sizeof(*r));
}

int ref_parse(struct ref *out, const char *s, struct err *e)
{
    memset(out, 0, sizeof(*out));
    char q[TEXT_SHOWN_SIZE(QUOTE_MAX)];
    if (!s || !*s)
        return err_set(e, "reference is empty");
    text_shown(s, QUOTE_MAX, q);
    size_t len = strlen(s);
    if (len > REF_INPUT_MAX)
        return err_set(e, "'%s': too long (%zu bytes, at most %d)", q, len, REF_INPUT_MAX);
    for (size_t i = 0; i < len; i++) {
        if (ref_char(s[i]))
            continue;
        if (s[i] > 0x20 && s[i] < 0x7f)
            return err_set(e, "'%s': invalid character '%c' at position %zu", q, s[i], i + 1);
        return err_set(e, "'%s': invalid byte 0x%02x at position %zu", q, (unsigned char)s[i],
                       i + 1);
    }

    const char *at = strchr(s, '@');
    size_t name_end = at ? (size_t)(at - s) : len;
    if (at && !digest_valid(at + 1))
        return err_set(e, "'%s': invalid digest '%.80s' at position %zu (sha256: and 64 "
                          "lowercase hex digits)",
                       q, at + 1, name_end + 2);
    /* The tag follows the first ':' after the last '/' (a ':' before is a port). */
    const char *last_slash = memrchr(s, '/', name_end);
    size_t from = last_slash ? (size_t)(last_slash - s) + 1 : 0;
    const char *colon = memchr(s + from, ':', name_end - from);
    const char *tag = colon ? colon + 1 : NULL;
    size_t tn = colon ? name_end - (size_t)(tag - s) : 0;
    if (tag && !tag_valid(tag, tn))
        return err_set(e, "'%s': invalid tag '%.*s' at position %zu (1 to %d of A-Z a-z 0-9 _ . -, "
                          "not starting with . or -)",
                       q, (int)(tn > 64 ? 64 : tn), tag, (size_t)(tag - s) + 1, REF_TAG_MAX);
    if (colon)
        name_end = (size_t)(colon - s);
    if (!name_end)
        return err_set(e, "'%s': no repository name", q);
    size_t dn = domain_len(s, name_end);
    if (dn && !domain_valid(s, dn)) {
        for (size_t i = 0; i < dn; i++)
            if (s[i] >= 'A' && s[i] <= 'Z')
                return err_set(e, "'%s': uppercase letters are not allowed in a registry name "
                                  "('%c' at position %zu)",
                               q, s[i], i + 1);
        return err_set(e, "'%s': invalid registry '%.*s' (host[:port])", q,
                       (int)(dn > 64 ? 64 : dn), s);
    }
    size_t pstart = dn ? dn + 1 : 0;
    if (path_check(s, pstart, name_end - pstart, q, e) < 0)
        return -1;

    /* Docker Hub's normalisation: docker.io, and library/ for a one-component path. */
    const char *path = s + pstart;
    int plen = (int)(name_end - pstart);
    char *domain = dn && !(dn == strlen(HUB_LEGACY) && !memcmp(s, HUB_LEGACY, dn))
                       ? xasprintf("%.*s", (int)dn, s)
                       : xstrdup(HUB);
    int official = strcmp(domain, HUB) == 0 && !memchr(path, '/', (size_t)plen);
    char *norm = xasprintf("%s%.*s", official ? OFFICIAL : "", plen, path);
    size_t nlen = strlen(domain) + 1 + strlen(norm);
    if (nlen > REF_NAME_MAX) {
        err_set(e, "'%s': name too long (%zu characters as %s/%.20s..., at most %d)", q, nlen,
                domain, norm, REF_NAME_MAX);
        free(domain);
        free(norm);
        return -1;
    }
    out->domain = domain;
    out->path = norm;
    out->tag = tag ? xasprintf("%.*s", (int)tn, tag) : NULL;
    if (at)
        memcpy(out->digest, at + 1, DIGEST_STR_SIZE);
    return 0;
}

char *ref_format(const struct ref *r)
{
    return xasprintf("%s/%s%s%s%s%s", r->domain, r->path, r->tag ? ":" : "", r->tag ? r->tag : "",
                     r->digest[0] ? "@" : "", r->digest);
}

int ref_official_repo(const char *s, char **name, struct err *e)
{
    int rc = -1;
    struct ref r;
    char q[TEXT_SHOWN_SIZE(QUOTE_MAX)];
    *name = NULL;
    if (ref_parse(&r, s, e) < 0)
        return -1;
    text_shown(s, QUOTE_MAX, q);
    if (strcmp(r.domain, HUB) != 0)
        err_set(e, "'%s' is on %s, not Docker Hub", q, r.domain);
    else if (strncmp(r.path, OFFICIAL, strlen(OFFICIAL)) != 0 ||
             strchr(r.path + strlen(OFFICIAL), '/'))
        err_set(e, "'%s' is not an official image (library/*)", q);
    else if (r.tag)
        err_set(e, "'%s' names a tag: select tags with --tags", q);
    else if (r.digest[0])
        err_set(e, "'%s' names a digest, not a repository", q);
    else {
        *name = xstrdup(r.path + strlen(OFFICIAL));
        rc = 0;
    }
    ref_free(&r);
    return rc;
}
