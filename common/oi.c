/* oi: see oi.h. The comments name the bashbrew / go-debian behaviour each
 * piece reproduces. */
#include "oi.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "digest.h"
#include "xalloc.h"

/* ---- small helpers ---------------------------------------------------- */

/* Drop later duplicates, keeping the order (DeduplicateSharedTags). */
static void strv_uniq_keep_order(struct strv *s)
{
    size_t w = 0;
    for (size_t i = 0; i < s->n; i++) {
        int dup = 0;
        for (size_t j = 0; j < w && !dup; j++)
            dup = strcmp(s->v[j], s->v[i]) == 0;
        if (dup)
            free(s->v[i]);
        else
            s->v[w++] = s->v[i];
    }
    s->n = w;
}

/* Append the elements joined by sep. Past b's max the text is cut, which
 * only the bounded message buffers reach, and a cut message is fine. */
static void strv_join(struct buf *b, const struct strv *s, const char *sep)
{
    for (size_t i = 0; i < s->n; i++)
        if ((i && buf_puts(b, sep) < 0) || buf_puts(b, s->v[i]) < 0)
            return;
}

/* A string -> index map (open addressing, FNV-1a); keys are borrowed. */
struct smap {
    const char **keys;
    size_t *vals;
    size_t cap; /* power of two */
    size_t n;
};

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static size_t smap_slot(const struct smap *m, const char *key)
{
    size_t i = (size_t)fnv1a(key) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], key) != 0)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static const size_t *smap_get(const struct smap *m, const char *key)
{
    if (!m->cap)
        return NULL;
    size_t i = smap_slot(m, key);
    return m->keys[i] ? &m->vals[i] : NULL;
}

/* Insert key -> val unless key is present; never replaces. */
static void smap_add(struct smap *m, const char *key, size_t val)
{
    if (2 * (m->n + 1) > m->cap) {
        struct smap old = *m;
        m->cap = old.cap ? 2 * old.cap : 16;
        m->keys = xcalloc(m->cap, sizeof(char *));
        m->vals = xcalloc(m->cap, sizeof(size_t));
        m->n = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.keys[i])
                smap_add(m, old.keys[i], old.vals[i]);
        free(old.keys);
        free(old.vals);
    }
    size_t i = smap_slot(m, key);
    if (!m->keys[i]) {
        m->keys[i] = key;
        m->vals[i] = val;
        m->n++;
    }
}

static void smap_free(struct smap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

/* Length of the UTF-8 white-space rune (Go unicode.IsSpace) starting at p,
 * or 0. */
static size_t space_at(const unsigned char *p, size_t n)
{
    if (n >= 1 && (p[0] == ' ' || (p[0] >= '\t' && p[0] <= '\r')))
        return 1;
    if (n >= 2 && p[0] == 0xc2 && (p[1] == 0x85 || p[1] == 0xa0))
        return 2;
    if (n >= 3 && p[0] == 0xe1 && p[1] == 0x9a && p[2] == 0x80)
        return 3;
    if (n >= 3 && p[0] == 0xe2 && p[1] == 0x80 &&
        (p[2] <= 0x8a || p[2] == 0xa8 || p[2] == 0xa9 || p[2] == 0xaf))
        return 3;
    if (n >= 3 && p[0] == 0xe2 && p[1] == 0x81 && p[2] == 0x9f)
        return 3;
    if (n >= 3 && p[0] == 0xe3 && p[1] == 0x80 && p[2] == 0x80)
        return 3;
    return 0;
}

/* Length of the white-space rune ending at p + n, or 0. */
static size_t space_before(const unsigned char *p, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; k++)
        if (space_at(p + n - k, k) == k)
            return k;
    return 0;
}

static void trim_left(const char **s, size_t *n)
{
    size_t k;
    while ((k = space_at((const unsigned char *)*s, *n)) > 0) {
        *s += k;
        *n -= k;
    }
}

static void trim_right(const char *s, size_t *n)
{
    size_t k;
    while ((k = space_before((const unsigned char *)s, *n)) > 0)
        *n -= k;
}

/* ---- lexical layer: paragraphs of key/value pairs (go-debian control) --- */

struct kv {
    char *key;
    struct buf val;
    int line;
};

struct para {
    struct kv *kv; /* one per distinct key; a repeated key keeps the last value */
    size_t nkv;
    size_t nkeys; /* key lines seen: a paragraph ends only when this is > 0 */
    int line;     /* line of the first key line */
};

struct lexed {
    struct para *p;
    size_t n;
};

static void para_free(struct para *p)
{
    for (size_t j = 0; j < p->nkv; j++) {
        free(p->kv[j].key);
        buf_free(&p->kv[j].val);
    }
    free(p->kv);
    memset(p, 0, sizeof(*p));
}

static void lexed_free(struct lexed *lx)
{
    for (size_t i = 0; i < lx->n; i++)
        para_free(&lx->p[i]);
    free(lx->p);
    memset(lx, 0, sizeof(*lx));
}

static struct kv *para_find(const struct para *p, const char *key)
{
    for (size_t i = 0; i < p->nkv; i++)
        if (strcmp(p->kv[i].key, key) == 0)
            return &p->kv[i];
    return NULL;
}

static struct kv *para_set(struct para *p, const char *key, size_t keylen, int line, size_t max)
{
    char *k = xstrndup(key, keylen);
    struct kv *kv = para_find(p, k);
    if (kv) {
        free(k);
        buf_reset(&kv->val);
    } else {
        p->kv = xrealloc(p->kv, (p->nkv + 1) * sizeof(*p->kv));
        kv = &p->kv[p->nkv++];
        kv->key = k;
        buf_init(&kv->val, max);
    }
    kv->line = line;
    return kv;
}

static int failf(struct err *e, const char *name, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int failf(struct err *e, const char *name, int line, const char *fmt, ...)
{
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return err_set(e, "library/%s line %d: %s", name, line, msg);
}

/* Split data into paragraphs. Comment lines (first non-blank rune '#') are
 * dropped first (bashbrew's stripper); an exactly empty line ends a
 * paragraph that has at least one key line; a line starting with space or
 * tab continues the last key; anything else must be "Key: Value". */
static int lex(const char *data, size_t len, const char *name, struct lexed *lx, struct err *e)
{
    int rc = -1;
    struct para cur = {NULL, 0, 0, 0};
    struct kv *last = NULL;    /* NULL: continuation lines go nowhere */
    size_t max = 2 * len + 16; /* a value can never grow past this */
    int line = 0;

    memset(lx, 0, sizeof(*lx));
    for (size_t pos = 0; pos < len;) {
        const char *s = data + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        line++;
        if (memchr(s, '\0', n)) {
            failf(e, name, line, "NUL byte in the file");
            goto out;
        }

        const char *t = s;
        size_t tn = n;
        trim_left(&t, &tn);
        if (tn > 0 && *t == '#')
            continue;

        if (n == 0 || (n == 1 && s[0] == '\r')) {
            if (cur.nkeys > 0) {
                lx->p = xrealloc(lx->p, (lx->n + 1) * sizeof(*lx->p));
                lx->p[lx->n++] = cur;
                memset(&cur, 0, sizeof(cur));
                last = NULL;
            }
            continue;
        }

        if (s[0] == ' ' || s[0] == '\t') {
            size_t cn = n - 1;
            trim_right(s + 1, &cn);
            if (cn == 1 && s[1] == '.')
                cn = 0;
            if (!last)
                continue; /* go-debian files it under key "", which nothing reads */
            if ((last->val.len > 0 && last->val.data[last->val.len - 1] != '\n' &&
                 buf_append(&last->val, "\n", 1) < 0) ||
                buf_append(&last->val, s + 1, cn) < 0 || buf_append(&last->val, "\n", 1) < 0) {
                failf(e, name, line, "value of '%s' is too long", last->key);
                goto out;
            }
            continue;
        }

        const char *colon = memchr(s, ':', n);
        if (!colon) {
            size_t shown = n;
            trim_right(s, &shown);
            failf(e, name, line, "bad line '%.*s': has no ':'", (int)(shown > 80 ? 80 : shown), s);
            goto out;
        }
        const char *k = s;
        size_t kn = (size_t)(colon - s);
        trim_left(&k, &kn);
        trim_right(k, &kn);
        const char *v = colon + 1;
        size_t vn = (size_t)(s + n - v);
        trim_left(&v, &vn);
        trim_right(v, &vn);
        if (cur.nkeys == 0)
            cur.line = line;
        cur.nkeys++;
        last = para_set(&cur, k, kn, line, max);
        if (buf_append(&last->val, v, vn) < 0) {
            failf(e, name, line, "value of '%s' is too long", last->key);
            goto out;
        }
    }
    if (cur.nkeys > 0) {
        lx->p = xrealloc(lx->p, (lx->n + 1) * sizeof(*lx->p));
        lx->p[lx->n++] = cur;
        memset(&cur, 0, sizeof(cur));
    }
    rc = 0;
out:
    if (rc < 0) {
        para_free(&cur);
        lexed_free(lx);
    }
    return rc;
}

/* ---- decoding a paragraph onto an entry (bashbrew decoderWrapper) ----- */

enum { F_GITREPO, F_GITFETCH, F_GITCOMMIT, F_DIRECTORY, F_FILE, F_BUILDER, NFIELDS };
static const char *const field_names[NFIELDS] = {"GitRepo",   "GitFetch", "GitCommit",
                                                 "Directory", "File",     "Builder"};

/* An entry while it is decoded and validated: the global paragraph, or a
 * deep copy of it overlaid with one entry paragraph. */
struct draft {
    struct strv maint, tags, shared, arches, constraints;
    char *f[NFIELDS];
    struct oi_arch_field *af; /* every "<arch>-<Field>" seen, empty values too */
    size_t naf;
};

static void draft_free(struct draft *d)
{
    strv_free(&d->maint);
    strv_free(&d->tags);
    strv_free(&d->shared);
    strv_free(&d->arches);
    strv_free(&d->constraints);
    for (int i = 0; i < NFIELDS; i++)
        free(d->f[i]);
    for (size_t i = 0; i < d->naf; i++) {
        free(d->af[i].key);
        free(d->af[i].value);
    }
    free(d->af);
    memset(d, 0, sizeof(*d));
}

static void draft_clone(struct draft *dst, const struct draft *src)
{
    memset(dst, 0, sizeof(*dst));
    strv_copy(&dst->maint, &src->maint);
    strv_copy(&dst->tags, &src->tags);
    strv_copy(&dst->shared, &src->shared);
    strv_copy(&dst->arches, &src->arches);
    strv_copy(&dst->constraints, &src->constraints);
    for (int i = 0; i < NFIELDS; i++)
        dst->f[i] = xstrdup(src->f[i]);
    dst->af = xcalloc(src->naf ? src->naf : 1, sizeof(*dst->af));
    for (size_t i = 0; i < src->naf; i++) {
        dst->af[i].key = xstrdup(src->af[i].key);
        dst->af[i].value = xstrdup(src->af[i].value);
    }
    dst->naf = src->naf;
}

static void draft_set_arch(struct draft *d, const char *key, const char *value)
{
    for (size_t i = 0; i < d->naf; i++)
        if (strcmp(d->af[i].key, key) == 0) {
            free(d->af[i].value);
            d->af[i].value = xstrdup(value);
            return;
        }
    d->af = xrealloc(d->af, (d->naf + 1) * sizeof(*d->af));
    d->af[d->naf].key = xstrdup(key);
    d->af[d->naf].value = xstrdup(value);
    d->naf++;
}

static int is_list_strip(char c)
{
    return c == '\n' || c == '\r' || c == '\t' || c == ' ';
}

/* go-debian list decoding: split on ',' and trim "\n\r\t " from each
 * element, appending to what is there (an empty value gives one ""). */
static void list_append(struct strv *s, const char *v)
{
    for (;;) {
        const char *comma = strchr(v, ',');
        size_t n = comma ? (size_t)(comma - v) : strlen(v);
        const char *p = v;
        while (n > 0 && is_list_strip(*p))
            p++, n--;
        while (n > 0 && is_list_strip(p[n - 1]))
            n--;
        strv_push(s, xstrndup(p, n));
        if (!comma)
            break;
        v = comma + 1;
    }
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static int arch_suffix(const char *key)
{
    static const char *const suffixes[NFIELDS] = {"-GitRepo",   "-GitFetch", "-GitCommit",
                                                  "-Directory", "-File",     "-Builder"};
    for (int i = 0; i < NFIELDS; i++)
        if (ends_with(key, suffixes[i]))
            return i;
    return -1;
}

static const char *para_value(const struct para *p, const char *key)
{
    const struct kv *kv = para_find(p, key);
    return kv ? (kv->val.data ? kv->val.data : "") : NULL;
}

static int para_line(const struct para *p, const char *key)
{
    const struct kv *kv = para_find(p, key);
    return kv ? kv->line : p->line;
}

static int decode(struct draft *d, const struct para *p, const char *name, struct err *e)
{
    /* These keys name Go struct members of a type the decoder cannot fill:
     * bashbrew fails on them. */
    static const char *const undecodable[] = {"Paragraph", "Values", "ArchValues"};
    for (size_t i = 0; i < sizeof(undecodable) / sizeof(undecodable[0]); i++)
        if (para_find(p, undecodable[i]))
            return failf(e, name, para_line(p, undecodable[i]),
                         "key '%s' cannot be decoded (bashbrew rejects it)", undecodable[i]);

    /* SharedTags and Architectures replace the inherited value (reset, then
     * restored when the paragraph does not set them); the other lists
     * append to it. */
    struct strv shared = d->shared, arches = d->arches;
    memset(&d->shared, 0, sizeof(d->shared));
    memset(&d->arches, 0, sizeof(d->arches));

    struct {
        const char *key;
        struct strv *list;
    } lists[] = {{"Maintainers", &d->maint},
                 {"Tags", &d->tags},
                 {"SharedTags", &d->shared},
                 {"Architectures", &d->arches},
                 {"Constraints", &d->constraints}};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        const char *v = para_value(p, lists[i].key);
        if (v)
            list_append(lists[i].list, v);
    }
    for (int i = 0; i < NFIELDS; i++) {
        const char *v = para_value(p, field_names[i]);
        if (v) {
            free(d->f[i]);
            d->f[i] = xstrdup(v);
        }
    }
    if (d->shared.n == 0)
        d->shared = shared;
    else
        strv_free(&shared);
    if (d->arches.n == 0)
        d->arches = arches;
    else
        strv_free(&arches);
    strv_sort_uniq(&d->arches);

    for (size_t i = 0; i < p->nkv; i++)
        if (arch_suffix(p->kv[i].key) >= 0)
            draft_set_arch(d, p->kv[i].key, p->kv[i].val.data ? p->kv[i].val.data : "");
    return 0;
}

/* ---- validation -------------------------------------------------------- */

static const struct {
    const char *arch;
    const char *platform;
} arch_table[] = {
    {"amd64", "linux/amd64"},           {"arm32v5", "linux/arm/v5"},
    {"arm32v6", "linux/arm/v6"},        {"arm32v7", "linux/arm/v7"},
    {"arm64v8", "linux/arm64/v8"},      {"i386", "linux/386"},
    {"mips64le", "linux/mips64le"},     {"ppc64le", "linux/ppc64le"},
    {"riscv64", "linux/riscv64"},       {"s390x", "linux/s390x"},
    {"windows-amd64", "windows/amd64"},
};

const char *oi_arch_platform(const char *arch)
{
    for (size_t i = 0; i < sizeof(arch_table) / sizeof(arch_table[0]); i++)
        if (strcmp(arch_table[i].arch, arch) == 0)
            return arch_table[i].platform;
    return NULL;
}

static int is_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* ^\w[\w.-]{0,127}$ (Go's \w is ASCII) */
static int tag_ok(const char *t)
{
    size_t n = strlen(t);
    if (n < 1 || n > 128 || !is_word(t[0]))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!is_word(t[i]) && t[i] != '.' && t[i] != '-')
            return 0;
    return 1;
}

/* ^refs/(heads|tags)/[^*?:]+$ */
static int fetch_ok(const char *f)
{
    const char *rest;
    if (strncmp(f, "refs/heads/", 11) == 0)
        rest = f + 11;
    else if (strncmp(f, "refs/tags/", 10) == 0)
        rest = f + 10;
    else
        return 0;
    return *rest != '\0' && strpbrk(rest, "*?:") == NULL;
}

/* ^([0-9a-f]{40}|[0-9a-f]{64})$ */
static int commit_ok(const char *c)
{
    size_t n = strlen(c);
    if (n != 40 && n != 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((c[i] >= '0' && c[i] <= '9') || (c[i] >= 'a' && c[i] <= 'f')))
            return 0;
    return 1;
}

/* Go regexp \s: [\t\n\f\r ] */
static int re_space(char c)
{
    return c == '\t' || c == '\n' || c == '\f' || c == '\r' || c == ' ';
}

static int re_special(char c)
{
    return re_space(c) || c == '<' || c == '>' || c == '(' || c == ')';
}

/* NAME = [^\s<>()][^<>()]* over s[0..n) */
static int maint_name_ok(const char *s, size_t n)
{
    if (n < 1 || re_special(s[0]))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (s[i] == '<' || s[i] == '>' || s[i] == '(' || s[i] == ')')
            return 0;
    return 1;
}

/* NAME \s+ over s[0..n): NAME may end in white space itself, so dropping
 * one white-space byte is enough. */
static int maint_name_space_ok(const char *s, size_t n)
{
    return n >= 2 && re_space(s[n - 1]) && maint_name_ok(s, n - 1);
}

/* ^(NAME)(?:\s+<(EMAIL)>)?\s+[(]@(HANDLE)[)]$ with EMAIL and HANDLE
 * [^\s<>()]+ (bashbrew MaintainersRegex). */
static int maintainer_ok(const char *m)
{
    size_t n = strlen(m);
    const char *open = strrchr(m, '(');
    if (n < 4 || m[n - 1] != ')' || !open || open[1] != '@')
        return 0;
    const char *h = open + 2, *hend = m + n - 1;
    if (h >= hend)
        return 0;
    for (const char *p = h; p < hend; p++)
        if (re_special(*p))
            return 0;
    size_t pn = (size_t)(open - m); /* NAME [\s+<EMAIL>] \s+ */
    if (maint_name_space_ok(m, pn))
        return 1;
    while (pn > 0 && re_space(m[pn - 1]))
        pn--;
    if (pn == (size_t)(open - m) || pn < 1 || m[pn - 1] != '>')
        return 0;
    const char *lt = memrchr(m, '<', pn);
    if (!lt || lt + 1 >= m + pn - 1)
        return 0;
    for (const char *p = lt + 1; p < m + pn - 1; p++)
        if (re_special(*p))
            return 0;
    return maint_name_space_ok(m, (size_t)(lt - m));
}

/* Join the invalid elements of a list for a message; caller frees. */
static char *invalid_list(const struct strv *s, int (*ok)(const char *))
{
    struct buf b = BUF_INIT(ERR_MSG_MAX);
    int any = 0;
    for (size_t i = 0; i < s->n; i++)
        if (!ok(s->v[i])) {
            /* a message: each element cut at 100 bytes, the list when full */
            if (buf_printf(&b, "%s%.100s", any ? "\", \"" : "", s->v[i]) < 0)
                break;
            any = 1;
        }
    if (!any) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}

static int arch_ok(const char *a)
{
    return oi_arch_platform(a) != NULL;
}

static char *tags_string(const struct strv *tags)
{
    struct buf b = BUF_INIT(ERR_MSG_MAX);
    strv_join(&b, tags, ", ");
    return buf_steal(&b);
}

/* path.Clean from Go's path package. Caller frees. */
static char *path_clean(const char *p)
{
    size_t n = strlen(p);
    if (n == 0)
        return xstrdup(".");
    int rooted = p[0] == '/';
    char *out = xmalloc(n + 2);
    size_t w = 0, r = 0, dotdot = 0;
    if (rooted) {
        out[w++] = '/';
        r = dotdot = 1;
    }
    while (r < n) {
        if (p[r] == '/') {
            r++;
        } else if (p[r] == '.' && (r + 1 == n || p[r + 1] == '/')) {
            r++;
        } else if (p[r] == '.' && p[r + 1] == '.' && (r + 2 == n || p[r + 2] == '/')) {
            r += 2;
            if (w > dotdot) {
                w--;
                while (w > dotdot && out[w] != '/')
                    w--;
            } else if (!rooted) {
                if (w > 0)
                    out[w++] = '/';
                out[w++] = '.';
                out[w++] = '.';
                dotdot = w;
            }
        } else {
            if ((rooted && w != 1) || (!rooted && w != 0))
                out[w++] = '/';
            for (; r < n && p[r] != '/'; r++)
                out[w++] = p[r];
        }
    }
    if (w == 0)
        out[w++] = '.';
    out[w] = '\0';
    return out;
}

/* ---- building the repository -------------------------------------------- */

static int cmp_arch_field(const void *a, const void *b)
{
    return strcmp(((const struct oi_arch_field *)a)->key, ((const struct oi_arch_field *)b)->key);
}

/* "<label>=<length>:<value>\n": length-prefixed, so no value can fake
 * another part. b is unbounded, so appends cannot fail. */
static void put_part(struct buf *b, const char *label, const char *v)
{
    char num[24];
    size_t n = strlen(v), k = sizeof(num);
    do
        num[--k] = (char)('0' + n % 10);
    while ((n /= 10) > 0);
    if (buf_puts(b, label) < 0 || buf_append(b, "=", 1) < 0 ||
        buf_append(b, num + k, sizeof(num) - k) < 0 || buf_append(b, ":", 1) < 0 ||
        buf_puts(b, v) < 0 || buf_append(b, "\n", 1) < 0)
        abort();
}

/* The canonical text of an entry's build artifacts (bashbrew
 * SameBuildArtifacts compares exactly these). Caller frees. */
static char *build_text(const struct oi_entry *en)
{
    struct buf b = BUF_INIT((size_t)-1);
    struct buf list = BUF_INIT((size_t)-1);
    strv_join(&list, &en->arches, ", ");
    put_part(&b, "Architectures", list.data ? list.data : "");
    put_part(&b, "GitRepo", en->git_repo);
    put_part(&b, "GitFetch", en->git_fetch);
    put_part(&b, "GitCommit", en->git_commit);
    put_part(&b, "Directory", en->directory);
    put_part(&b, "File", en->file);
    put_part(&b, "Builder", en->builder);
    buf_reset(&list);
    strv_join(&list, &en->constraints, ", ");
    put_part(&b, "Constraints", list.data ? list.data : "");
    for (size_t i = 0; i < en->narch_fields; i++)
        put_part(&b, en->arch_fields[i].key, en->arch_fields[i].value);
    buf_free(&list);
    return buf_steal(&b);
}

/* Move a validated draft into a new entry. */
static void entry_from_draft(struct oi_entry *en, struct draft *d, int line)
{
    memset(en, 0, sizeof(*en));
    en->tags = d->tags;
    en->shared_tags = d->shared;
    en->arches = d->arches;
    en->maintainers = d->maint;
    en->constraints = d->constraints;
    en->git_repo = d->f[F_GITREPO];
    en->git_fetch = d->f[F_GITFETCH];
    en->git_commit = d->f[F_GITCOMMIT];
    en->directory = d->f[F_DIRECTORY];
    en->file = d->f[F_FILE];
    en->builder = d->f[F_BUILDER];
    en->arch_fields = xcalloc(d->naf ? d->naf : 1, sizeof(*en->arch_fields));
    for (size_t i = 0; i < d->naf; i++) {
        if (d->af[i].value[0])
            en->arch_fields[en->narch_fields++] = d->af[i];
        else {
            free(d->af[i].key);
            free(d->af[i].value);
        }
    }
    free(d->af);
    qsort(en->arch_fields, en->narch_fields, sizeof(*en->arch_fields), cmp_arch_field);
    for (size_t i = 0; i < en->arches.n; i++)
        strv_push(&en->platforms, xstrdup(oi_arch_platform(en->arches.v[i])));
    strv_sort_uniq(&en->platforms);
    en->line = line;
    memset(d, 0, sizeof(*d));
}

static void entry_free(struct oi_entry *en)
{
    strv_free(&en->tags);
    strv_free(&en->shared_tags);
    strv_free(&en->arches);
    strv_free(&en->platforms);
    strv_free(&en->maintainers);
    strv_free(&en->constraints);
    free(en->git_repo);
    free(en->git_fetch);
    free(en->git_commit);
    free(en->directory);
    free(en->file);
    free(en->builder);
    for (size_t i = 0; i < en->narch_fields; i++) {
        free(en->arch_fields[i].key);
        free(en->arch_fields[i].value);
    }
    free(en->arch_fields);
}

/* Parser state across the entries of one file. */
struct builder {
    const char *name;
    const struct para *global;
    struct oi_repo *repo;
    char **prints; /* fingerprint of each entry (stable copies for by_print) */
    size_t nprints;
    struct smap by_print;  /* fingerprint -> entry */
    struct smap by_tag;    /* Tags member -> entry */
    struct smap by_shared; /* SharedTags member -> first entry listing it */
};

static void builder_free(struct builder *b)
{
    for (size_t i = 0; i < b->nprints; i++)
        free(b->prints[i]);
    free(b->prints);
    smap_free(&b->by_print);
    smap_free(&b->by_tag);
    smap_free(&b->by_shared);
}

static int check_global(const struct draft *g, const struct para *p, const char *name,
                        struct err *e)
{
    int rc = -1;
    char *bad = NULL;
    if (g->maint.n < 1) {
        failf(e, name, p->line, "missing Maintainers");
        goto out;
    }
    if ((bad = invalid_list(&g->maint, maintainer_ok))) {
        failf(e, name, para_line(p, "Maintainers"),
              "invalid Maintainers: \"%s\" (expected \"Full Name <contact-email-or-url> "
              "(@github-handle)\" or \"Full Name (@github-handle)\")",
              bad);
        goto out;
    }
    if (g->tags.n > 0) {
        failf(e, name, para_line(p, "Tags"), "global Tags not permitted");
        goto out;
    }
    if ((bad = invalid_list(&g->arches, arch_ok))) {
        failf(e, name, para_line(p, "Architectures"), "invalid global Architectures: \"%s\"", bad);
        goto out;
    }
    rc = 0;
out:
    free(bad);
    return rc;
}

/* The line that set key for the entry paragraph p: its own, else the
 * global paragraph's it inherited, else the entry's first line. */
static int entry_line(const struct builder *b, const struct para *p, const char *key)
{
    const struct kv *kv = para_find(p, key);
    if (!kv)
        kv = para_find(b->global, key);
    return kv ? kv->line : p->line;
}

/* Validate draft d (the entry paragraph p) against itself and the entries
 * already added. Cleans its directories and de-duplicates its SharedTags. */
static int check_entry(struct builder *b, struct draft *d, const struct para *p, struct err *e)
{
    int rc = -1;
    const char *name = b->name;
    char *tags = NULL, *bad = NULL;
    struct smap seen = {NULL, NULL, 0, 0};

    if (d->tags.n < 1) {
        failf(e, name, p->line, "missing Tags");
        goto out;
    }
    tags = tags_string(&d->tags);
    for (int i = F_GITREPO; i <= F_GITCOMMIT; i++)
        if (d->f[i][0] == '\0') {
            failf(e, name, entry_line(b, p, field_names[i]), "Tags \"%s\": missing %s", tags,
                  field_names[i]);
            goto out;
        }
    if (!fetch_ok(d->f[F_GITFETCH])) {
        failf(e, name, entry_line(b, p, "GitFetch"),
              "Tags \"%s\": invalid GitFetch \"%s\" (must be \"refs/heads/...\" or "
              "\"refs/tags/...\")",
              tags, d->f[F_GITFETCH]);
        goto out;
    }
    if (!commit_ok(d->f[F_GITCOMMIT])) {
        failf(e, name, entry_line(b, p, "GitCommit"),
              "Tags \"%s\": invalid GitCommit \"%s\" (must be a commit: 40 or 64 lowercase hex)",
              tags, d->f[F_GITCOMMIT]);
        goto out;
    }
    if ((bad = invalid_list(&d->maint, maintainer_ok))) {
        failf(e, name, entry_line(b, p, "Maintainers"),
              "Tags \"%s\": invalid Maintainers: \"%s\" (expected \"Full Name "
              "<contact-email-or-url> (@github-handle)\" or \"Full Name (@github-handle)\")",
              tags, bad);
        goto out;
    }

    strv_uniq_keep_order(&d->shared);
    char *clean = path_clean(d->f[F_DIRECTORY]);
    free(d->f[F_DIRECTORY]);
    d->f[F_DIRECTORY] = clean;
    for (size_t i = 0; i < d->naf; i++)
        if (ends_with(d->af[i].key, "-Directory") && d->af[i].value[0]) {
            clean = path_clean(d->af[i].value);
            free(d->af[i].value);
            d->af[i].value = clean;
        }

    if ((bad = invalid_list(&d->arches, arch_ok))) {
        failf(e, name, entry_line(b, p, "Architectures"),
              "Tags \"%s\": invalid Architectures: \"%s\"", tags, bad);
        goto out;
    }
    if ((bad = invalid_list(&d->tags, tag_ok))) {
        failf(e, name, entry_line(b, p, "Tags"), "Tags \"%s\": invalid tag \"%s\" (must match %s)",
              tags, bad, "^\\w[\\w.-]{0,127}$");
        goto out;
    }
    if ((bad = invalid_list(&d->shared, tag_ok))) {
        failf(e, name, entry_line(b, p, "SharedTags"),
              "Tags \"%s\": invalid shared tag \"%s\" (must match %s)", tags, bad,
              "^\\w[\\w.-]{0,127}$");
        goto out;
    }

    for (size_t i = 0; i < d->tags.n; i++) {
        const char *t = d->tags.v[i];
        const size_t *other = smap_get(&b->by_tag, t);
        if (!other)
            other = smap_get(&b->by_shared, t);
        if (smap_get(&b->by_tag, t)) {
            failf(e, name, entry_line(b, p, "Tags"),
                  "Tags \"%s\": duplicate tag \"%s\" (also in the entry of line %d)", tags, t,
                  b->repo->entries[*other].line);
            goto out;
        }
        if (other) {
            failf(e, name, entry_line(b, p, "Tags"),
                  "Tags \"%s\": tag \"%s\" is a SharedTags member of the entry of line %d", tags, t,
                  b->repo->entries[*other].line);
            goto out;
        }
        if (smap_get(&seen, t)) {
            failf(e, name, entry_line(b, p, "Tags"), "Tags \"%s\": duplicate tag \"%s\"", tags, t);
            goto out;
        }
        smap_add(&seen, t, 0);
    }
    for (size_t i = 0; i < d->shared.n; i++) {
        const char *t = d->shared.v[i];
        const size_t *other = smap_get(&b->by_tag, t);
        if (other) {
            failf(e, name, entry_line(b, p, "SharedTags"),
                  "Tags \"%s\": shared tag \"%s\" is a Tags member of the entry of line %d", tags,
                  t, b->repo->entries[*other].line);
            goto out;
        }
        if (smap_get(&seen, t)) {
            failf(e, name, entry_line(b, p, "SharedTags"),
                  "Tags \"%s\": duplicate tag \"%s\" (in Tags and SharedTags)", tags, t);
            goto out;
        }
    }
    rc = 0;
out:
    smap_free(&seen);
    free(tags);
    free(bad);
    return rc;
}

static void index_tags(struct builder *b, size_t idx)
{
    const struct oi_entry *en = &b->repo->entries[idx];
    for (size_t i = 0; i < en->tags.n; i++)
        smap_add(&b->by_tag, en->tags.v[i], idx);
    for (size_t i = 0; i < en->shared_tags.n; i++)
        smap_add(&b->by_shared, en->shared_tags.v[i], idx);
}

/* Add a validated draft: merged into an entry with the same build artifacts
 * (its Tags and SharedTags appended) or as a new entry. */
static void add_entry(struct builder *b, struct draft *d, int line)
{
    struct oi_repo *r = b->repo;
    r->entries = xrealloc(r->entries, (r->nentries + 1) * sizeof(*r->entries));
    struct oi_entry *en = &r->entries[r->nentries];
    entry_from_draft(en, d, line);
    char *text = build_text(en);
    char dg[DIGEST_STR_SIZE];
    digest_of(text, strlen(text), dg);
    free(text);
    snprintf(en->fingerprint, sizeof(en->fingerprint), "%s", dg + strlen("sha256:"));
    const size_t *same = smap_get(&b->by_print, en->fingerprint);
    if (same) {
        struct oi_entry *into = &r->entries[*same];
        for (size_t i = 0; i < en->tags.n; i++)
            strv_push(&into->tags, en->tags.v[i]);
        for (size_t i = 0; i < en->shared_tags.n; i++)
            strv_push(&into->shared_tags, en->shared_tags.v[i]);
        en->tags.n = en->shared_tags.n = 0;
        entry_free(en);
        strv_uniq_keep_order(&into->shared_tags);
        index_tags(b, *same);
        return;
    }
    b->prints = xrealloc(b->prints, (b->nprints + 1) * sizeof(char *));
    b->prints[b->nprints] = xstrdup(en->fingerprint);
    smap_add(&b->by_print, b->prints[b->nprints++], r->nentries);
    r->nentries++;
    index_tags(b, r->nentries - 1);
}

static struct oi_group *new_group(struct oi_repo *r, enum oi_group_kind kind)
{
    r->groups = xrealloc(r->groups, (r->ngroups + 1) * sizeof(*r->groups));
    struct oi_group *g = &r->groups[r->ngroups++];
    memset(g, 0, sizeof(*g));
    g->kind = kind;
    return g;
}

/* One tags group per entry; then SharedTags grouped by the exact set of
 * entries listing them (bashbrew GetSharedTagGroups). */
static void build_groups(struct oi_repo *r)
{
    for (size_t i = 0; i < r->nentries; i++) {
        struct oi_group *g = new_group(r, OI_GROUP_TAGS);
        strv_copy(&g->tags, &r->entries[i].tags);
        strv_copy(&g->platforms, &r->entries[i].platforms);
        g->entries = xmalloc(sizeof(size_t));
        g->entries[0] = i;
        g->nentries = 1;
    }

    /* every shared tag in file order, with the entries listing it */
    struct smap tag_idx = {NULL, NULL, 0, 0};
    const char **stags = NULL;
    struct buf *keys = NULL; /* per shared tag: its entries as "i,j,k," */
    size_t nstags = 0;
    for (size_t i = 0; i < r->nentries; i++)
        for (size_t j = 0; j < r->entries[i].shared_tags.n; j++) {
            const char *t = r->entries[i].shared_tags.v[j];
            const size_t *k = smap_get(&tag_idx, t);
            if (!k) {
                stags = xrealloc(stags, (nstags + 1) * sizeof(*stags));
                keys = xrealloc(keys, (nstags + 1) * sizeof(*keys));
                stags[nstags] = t;
                buf_init(&keys[nstags], (size_t)-1);
                smap_add(&tag_idx, t, nstags);
                k = smap_get(&tag_idx, t);
                nstags++;
            }
            if (buf_printf(&keys[*k], "%zu,", i) < 0)
                abort(); /* unbounded buffer */
        }

    struct smap by_key = {NULL, NULL, 0, 0};
    for (size_t k = 0; k < nstags; k++) {
        const size_t *gi = smap_get(&by_key, keys[k].data);
        struct oi_group *g;
        if (gi) {
            g = &r->groups[*gi];
        } else {
            smap_add(&by_key, keys[k].data, r->ngroups);
            g = new_group(r, OI_GROUP_SHARED);
            for (const char *p = keys[k].data; *p;) {
                char *end;
                size_t ei = strtoull(p, &end, 10);
                g->entries = xrealloc(g->entries, (g->nentries + 1) * sizeof(size_t));
                g->entries[g->nentries++] = ei;
                for (size_t j = 0; j < r->entries[ei].platforms.n; j++)
                    strv_push(&g->platforms, xstrdup(r->entries[ei].platforms.v[j]));
                p = end + 1;
            }
            strv_sort_uniq(&g->platforms);
        }
        strv_push(&g->tags, xstrdup(stags[k]));
    }
    smap_free(&by_key);
    for (size_t k = 0; k < nstags; k++)
        buf_free(&keys[k]);
    free(keys);
    free(stags);
    smap_free(&tag_idx);
}

int oi_parse(const char *data, size_t len, const char *name, struct oi_repo **out, struct err *e)
{
    int rc = -1;
    struct lexed lx = {NULL, 0};
    struct draft global, d;
    struct builder b;
    memset(&global, 0, sizeof(global));
    memset(&d, 0, sizeof(d));
    memset(&b, 0, sizeof(b));
    b.name = name;
    b.repo = xcalloc(1, sizeof(*b.repo));
    b.repo->name = xstrdup(name);
    *out = NULL;

    if (lex(data, len, name, &lx, e) < 0)
        goto out;
    if (lx.n == 0) {
        failf(e, name, 1, "no global paragraph (the file is empty or only comments)");
        goto out;
    }

    /* DefaultManifestEntry */
    strv_push(&global.arches, xstrdup("amd64"));
    for (int i = 0; i < NFIELDS; i++)
        global.f[i] = xstrdup(i == F_GITFETCH    ? "refs/heads/master"
                              : i == F_DIRECTORY ? "."
                              : i == F_FILE      ? "Dockerfile"
                                                 : "");
    if (decode(&global, &lx.p[0], name, e) < 0 || check_global(&global, &lx.p[0], name, e) < 0)
        goto out;

    b.global = &lx.p[0];
    for (size_t i = 1; i < lx.n; i++) {
        draft_clone(&d, &global);
        if (decode(&d, &lx.p[i], name, e) < 0 || check_entry(&b, &d, &lx.p[i], e) < 0)
            goto out;
        add_entry(&b, &d, lx.p[i].line);
    }
    build_groups(b.repo);
    *out = b.repo;
    b.repo = NULL;
    rc = 0;
out:
    builder_free(&b);
    oi_repo_free(b.repo);
    draft_free(&d);
    draft_free(&global);
    lexed_free(&lx);
    return rc;
}

void oi_repo_free(struct oi_repo *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nentries; i++)
        entry_free(&r->entries[i]);
    free(r->entries);
    for (size_t i = 0; i < r->ngroups; i++) {
        strv_free(&r->groups[i].tags);
        strv_free(&r->groups[i].platforms);
        free(r->groups[i].entries);
    }
    free(r->groups);
    free(r->name);
    free(r);
}

const char *oi_entry_arch_value(const struct oi_entry *en, const char *arch, const char *field)
{
    static const size_t offsets[NFIELDS] = {
        offsetof(struct oi_entry, git_repo),   offsetof(struct oi_entry, git_fetch),
        offsetof(struct oi_entry, git_commit), offsetof(struct oi_entry, directory),
        offsetof(struct oi_entry, file),       offsetof(struct oi_entry, builder)};
    for (int i = 0; i < NFIELDS; i++) {
        if (strcmp(field, field_names[i]) != 0)
            continue;
        char *key = xasprintf("%s-%s", arch, field);
        struct oi_arch_field probe = {key, NULL};
        const struct oi_arch_field *hit =
            bsearch(&probe, en->arch_fields, en->narch_fields, sizeof(probe), cmp_arch_field);
        free(key);
        if (hit)
            return hit->value;
        return *(char *const *)((const char *)en + offsets[i]);
    }
    return NULL;
}

char *oi_group_key(const struct oi_repo *r, const struct oi_group *g)
{
    return xasprintf("%s:%s", r->name, g->tags.n ? g->tags.v[0] : "");
}

long oi_find_group(const struct oi_repo *r, enum oi_group_kind kind, const char *tag)
{
    for (size_t i = 0; i < r->ngroups; i++) {
        if (r->groups[i].kind != kind)
            continue;
        for (size_t j = 0; j < r->groups[i].tags.n; j++)
            if (strcmp(r->groups[i].tags.v[j], tag) == 0)
                return (long)i;
    }
    return -1;
}
