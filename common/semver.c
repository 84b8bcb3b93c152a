/* semver: see semver.h. Range desugaring follows node-semver (classes/range.js):
 * every form becomes a set of plain comparators, "<X.Y.Z-0" being the bound
 * below every prerelease of X.Y.Z. */
#include "semver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

#define NUM_DIGITS_MAX 15 /* larger numbers are not versions (no overflow anywhere) */
#define SHOWN_MAX 100     /* of the range, in messages */

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int pre_char(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' ||
           c == '-' || c == '_';
}

/* Digits at *p into *n (at most NUM_DIGITS_MAX); the count read, 0 if none or too many. */
static int read_num(const char **p, long long *n)
{
    int k = 0;
    *n = 0;
    while (is_digit((*p)[k])) {
        if (k == NUM_DIGITS_MAX)
            return 0;
        *n = *n * 10 + ((*p)[k] - '0');
        k++;
    }
    *p += k;
    return k;
}

/* A prerelease: identifiers split by '.', none empty. */
static int pre_valid(const char *s, size_t n)
{
    if (n == 0 || n >= SEMVER_PRE_MAX || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!pre_char(s[i]) || (s[i] == '.' && s[i + 1] == '.'))
            return 0;
    return 1;
}

int semver_parse(const char *s, struct semver *out)
{
    const char *p = s;
    long long *num[3] = {&out->major, &out->minor, &out->patch};
    memset(out, 0, sizeof(*out));
    if (*p == 'v' || *p == 'V')
        p++;
    for (int i = 0; i < 3; i++) {
        if (i > 0) {
            if (*p != '.')
                break;
            p++;
        }
        if (!read_num(&p, num[i]))
            goto bad;
        out->parts = i + 1;
    }
    if (*p == '-') {
        size_t n = strlen(p + 1);
        if (!pre_valid(p + 1, n))
            goto bad;
        memcpy(out->pre, p + 1, n + 1);
        p += n + 1;
    }
    if (*p == '\0')
        return 0;
bad:
    memset(out, 0, sizeof(*out));
    return -1;
}

static int all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_digit(s[i]))
            return 0;
    return n > 0;
}

/* One prerelease identifier each (a, b of lengths na, nb). */
static int ident_cmp(const char *a, size_t na, const char *b, size_t nb)
{
    int da = all_digits(a, na), db = all_digits(b, nb);
    if (da && db) {
        while (na > 1 && *a == '0')
            a++, na--;
        while (nb > 1 && *b == '0')
            b++, nb--;
        if (na != nb)
            return na < nb ? -1 : 1;
        return memcmp(a, b, na);
    }
    if (da != db)
        return da ? -1 : 1;
    int c = memcmp(a, b, na < nb ? na : nb);
    return c ? c : (na < nb ? -1 : na > nb);
}

static int pre_cmp(const char *a, const char *b)
{
    if (!*a || !*b)
        return !*a && !*b ? 0 : (!*a ? 1 : -1); /* a release follows its prereleases */
    for (;;) {
        size_t na = strcspn(a, "."), nb = strcspn(b, ".");
        int c = ident_cmp(a, na, b, nb);
        if (c)
            return c < 0 ? -1 : 1;
        a += na, b += nb;
        if (!*a || !*b)
            return !*a && !*b ? 0 : (!*a ? -1 : 1);
        a++, b++;
    }
}

static int num_cmp(long long a, long long b)
{
    return a < b ? -1 : a > b;
}

int semver_cmp(const struct semver *a, const struct semver *b)
{
    int c = num_cmp(a->major, b->major);
    if (!c)
        c = num_cmp(a->minor, b->minor);
    if (!c)
        c = num_cmp(a->patch, b->patch);
    return c ? c : pre_cmp(a->pre, b->pre);
}

/* ---- ranges ---------------------------------------------------------------------------- */

enum op { OP_LT, OP_LE, OP_GT, OP_GE, OP_EQ, OP_ANY };

struct comp {
    enum op op;
    struct semver v;
};

struct cset {
    struct comp *c;
    size_t n;
};

struct semver_range {
    struct cset *sets;
    size_t n;
};

/* The parse of one range text. */
struct rparse {
    const char *s, *p;
    struct err *e;
};

static int rp_fail(struct rparse *rp, const char *what)
{
    char shown[SHOWN_MAX + 4];
    size_t i = 0;
    for (; rp->s[i] && i < SHOWN_MAX; i++)
        shown[i] = rp->s[i] >= 0x20 && rp->s[i] < 0x7f ? rp->s[i] : '?';
    if (rp->s[i])
        memcpy(shown + i, "...", 3), i += 3;
    shown[i] = '\0';
    return err_set(rp->e, "semver range '%s': %s at character %d", shown, what,
                   (int)(rp->p - rp->s) + 1);
}

static void skip_space(struct rparse *rp)
{
    while (*rp->p == ' ' || *rp->p == '\t')
        rp->p++;
}

/* A partial version: n[0..nparts) numbers before the first wildcard or the end. */
struct partial {
    long long n[3];
    int nparts;
    char pre[SEMVER_PRE_MAX];
};

static int is_wild(char c)
{
    return c == 'x' || c == 'X' || c == '*';
}

static int read_partial(struct rparse *rp, struct partial *pt)
{
    memset(pt, 0, sizeof(*pt));
    if (*rp->p == 'v' || *rp->p == 'V')
        rp->p++;
    int wild = 0;
    for (int i = 0; i < 3; i++) {
        if (i > 0) {
            if (*rp->p != '.')
                break;
            rp->p++;
        }
        if (is_wild(*rp->p)) {
            wild = 1;
            rp->p++;
            continue;
        }
        long long v;
        if (wild && is_digit(*rp->p))
            return rp_fail(rp, "a number after a wildcard");
        if (!read_num(&rp->p, &v))
            return rp_fail(rp, "expected a number, 'x' or '*'");
        pt->n[i] = v;
        pt->nparts = i + 1;
    }
    if (*rp->p == '-') {
        const char *start = ++rp->p;
        while (pre_char(*rp->p))
            rp->p++;
        if (pt->nparts < 3 || !pre_valid(start, (size_t)(rp->p - start)))
            return rp_fail(rp, "a prerelease needs a whole version (1.2.3-beta)");
        memcpy(pt->pre, start, (size_t)(rp->p - start));
    }
    if (*rp->p == '+') /* build metadata: no part of precedence */
        while (pre_char(*++rp->p))
            ;
    if (*rp->p && !strchr(" \t,|", *rp->p))
        return rp_fail(rp, "unexpected character");
    return 0;
}

static void add(struct cset *cs, enum op op, long long a, long long b, long long c,
                const char *pre)
{
    struct comp *k;
    cs->c = xrealloc(cs->c, (cs->n + 1) * sizeof(*cs->c));
    k = &cs->c[cs->n++];
    memset(k, 0, sizeof(*k));
    k->op = op;
    k->v.major = a, k->v.minor = b, k->v.patch = c, k->v.parts = 3;
    snprintf(k->v.pre, sizeof(k->v.pre), "%s", pre);
}

/* >= the lowest version the partial names. */
static void add_floor(struct cset *cs, const struct partial *pt)
{
    if (pt->nparts == 0)
        add(cs, OP_ANY, 0, 0, 0, "");
    else
        add(cs, OP_GE, pt->n[0], pt->n[1], pt->n[2], pt->pre);
}

/* Below every version past what the partial names (<=, X-ranges, hyphen tops). */
static void add_ceiling(struct cset *cs, const struct partial *pt)
{
    switch (pt->nparts) {
    case 0: add(cs, OP_ANY, 0, 0, 0, ""); break;
    case 1: add(cs, OP_LT, pt->n[0] + 1, 0, 0, "0"); break;
    case 2: add(cs, OP_LT, pt->n[0], pt->n[1] + 1, 0, "0"); break;
    default: add(cs, OP_LE, pt->n[0], pt->n[1], pt->n[2], pt->pre); break;
    }
}

static void desugar(struct cset *cs, const char *op, const struct partial *pt)
{
    long long M = pt->n[0], m = pt->n[1], p = pt->n[2];
    if (!strcmp(op, "") || !strcmp(op, "=")) {
        if (pt->nparts == 3)
            add(cs, OP_EQ, M, m, p, pt->pre);
        else
            add_floor(cs, pt), add_ceiling(cs, pt);
    } else if (!strcmp(op, ">=")) {
        add_floor(cs, pt);
    } else if (!strcmp(op, "<=")) {
        add_ceiling(cs, pt);
    } else if (!strcmp(op, ">")) {
        switch (pt->nparts) {
        case 0: add(cs, OP_LT, 0, 0, 0, "0"); break; /* nothing is above everything */
        case 1: add(cs, OP_GE, M + 1, 0, 0, ""); break;
        case 2: add(cs, OP_GE, M, m + 1, 0, ""); break;
        default: add(cs, OP_GT, M, m, p, pt->pre); break;
        }
    } else if (!strcmp(op, "<")) {
        if (pt->nparts == 3)
            add(cs, OP_LT, M, m, p, pt->pre);
        else
            add(cs, OP_LT, pt->nparts ? M : 0, pt->nparts == 2 ? m : 0, 0, "0");
    } else if (!strcmp(op, "~")) {
        add_floor(cs, pt);
        if (pt->nparts == 1)
            add(cs, OP_LT, M + 1, 0, 0, "0");
        else if (pt->nparts >= 2)
            add(cs, OP_LT, M, m + 1, 0, "0");
    } else { /* ^: the leftmost non-zero number stays */
        add_floor(cs, pt);
        if (pt->nparts == 1 || (pt->nparts >= 2 && M > 0))
            add(cs, OP_LT, M + 1, 0, 0, "0");
        else if (pt->nparts == 2 || m > 0)
            add(cs, OP_LT, 0, m + 1, 0, "0");
        else if (pt->nparts == 3)
            add(cs, OP_LT, 0, 0, p + 1, "0");
    }
}

static const char *read_op(struct rparse *rp)
{
    static const char *const ops[] = {">=", "<=", ">", "<", "=", "~", "^"};
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        size_t n = strlen(ops[i]);
        if (strncmp(rp->p, ops[i], n) == 0) {
            rp->p += n;
            return ops[i];
        }
    }
    return "";
}

/* One alternative: comparators up to "||" or the end. */
static int read_set(struct rparse *rp, struct cset *cs)
{
    for (;;) {
        while (*rp->p == ' ' || *rp->p == '\t' || *rp->p == ',')
            rp->p++;
        if (!*rp->p || *rp->p == '|')
            break;
        const char *op = read_op(rp);
        skip_space(rp);
        struct partial a, b;
        if (read_partial(rp, &a) < 0)
            return -1;
        const char *after = rp->p;
        skip_space(rp);
        if (!*op && rp->p > after && rp->p[0] == '-' && (rp->p[1] == ' ' || rp->p[1] == '\t')) {
            rp->p++;
            skip_space(rp);
            if (read_partial(rp, &b) < 0)
                return -1;
            add_floor(cs, &a);
            add_ceiling(cs, &b);
        } else {
            rp->p = after;
            desugar(cs, op, &a);
        }
    }
    if (cs->n == 0)
        return rp_fail(rp, "an empty alternative");
    return 0;
}

int semver_range_parse(const char *s, struct semver_range **out, struct err *e)
{
    struct rparse rp = {s, s, e};
    struct semver_range *r = xcalloc(1, sizeof(*r));
    *out = NULL;
    for (;;) {
        r->sets = xrealloc(r->sets, (r->n + 1) * sizeof(*r->sets));
        memset(&r->sets[r->n], 0, sizeof(r->sets[r->n]));
        if (read_set(&rp, &r->sets[r->n++]) < 0)
            goto bad;
        if (!*rp.p)
            break;
        if (strncmp(rp.p, "||", 2) != 0) {
            rp_fail(&rp, "expected '||'");
            goto bad;
        }
        rp.p += 2;
    }
    *out = r;
    return 0;
bad:
    semver_range_free(r);
    return -1;
}

void semver_range_free(struct semver_range *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->sets[i].c);
    free(r->sets);
    free(r);
}

static int comp_ok(const struct comp *k, const struct semver *v)
{
    int c = semver_cmp(v, &k->v);
    switch (k->op) {
    case OP_LT: return c < 0;
    case OP_LE: return c <= 0;
    case OP_GT: return c > 0;
    case OP_GE: return c >= 0;
    case OP_EQ: return c == 0;
    default: return 1;
    }
}

static int set_match(const struct cset *cs, const struct semver *v)
{
    for (size_t i = 0; i < cs->n; i++)
        if (!comp_ok(&cs->c[i], v))
            return 0;
    if (!v->pre[0])
        return 1;
    /* A prerelease only where the range names one of the same release. */
    for (size_t i = 0; i < cs->n; i++) {
        const struct semver *k = &cs->c[i].v;
        if (cs->c[i].op != OP_ANY && k->pre[0] && k->major == v->major && k->minor == v->minor &&
            k->patch == v->patch)
            return 1;
    }
    return 0;
}

int semver_range_match(const struct semver_range *r, const struct semver *v)
{
    for (size_t i = 0; i < r->n; i++)
        if (set_match(&r->sets[i], v))
            return 1;
    return 0;
}
