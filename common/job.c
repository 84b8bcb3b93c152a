/* job: see job.h. */
#include "job.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"
#include "strv.h"
#include "text.h"
#include "xalloc.h"

#define PLATFORM_PART_MAX 32
#define SHOWN_MAX 48 /* bytes of a value quoted in a message */

static const char *const policy_names[] = {"all", "sparse", "rewrite"};
static const char *const reason_names[] = {"changed", "check", "retry"};

static int lower_or_digit(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static int alnum(char c)
{
    return lower_or_digit(c) || (c >= 'A' && c <= 'Z');
}

const char *job_policy_name(enum job_policy p)
{
    return (unsigned)p < 3 ? policy_names[p] : "?";
}

const char *job_reason_name(enum job_reason r)
{
    return (unsigned)r < 3 ? reason_names[r] : "?";
}

int job_policy_parse(const char *s, enum job_policy *out)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(s, policy_names[i]) == 0)
            return *out = (enum job_policy)i, 0;
    return -1;
}

int job_reason_parse(const char *s, enum job_reason *out)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(s, reason_names[i]) == 0)
            return *out = (enum job_reason)i, 0;
    return -1;
}

int job_platform_valid(const char *s)
{
    int parts = 0;
    const char *p = s;
    for (;;) {
        size_t len = strcspn(p, "/");
        if (len == 0 || len > PLATFORM_PART_MAX || !lower_or_digit(p[0]))
            return 0;
        for (size_t i = 1; i < len; i++)
            if (!(lower_or_digit(p[i]) || p[i] == '.' || p[i] == '_' || p[i] == '-'))
                return 0;
        parts++;
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    return parts == 2 || parts == 3;
}

static int url_path_char_ok(char c)
{
    return c > 0x20 && c < 0x7f && !strchr("?#\\@\"<>", c);
}

int job_url_valid(const char *s)
{
    if (strlen(s) > JOB_URL_MAX)
        return 0;
    const char *p;
    if (strncmp(s, "http://", 7) == 0)
        p = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        p = s + 8;
    else
        return 0;
    if (*p == '[') {
        const char *end = strchr(p, ']');
        if (!end || end == p + 1)
            return 0;
        for (const char *q = p + 1; q < end; q++)
            if (!(alnum(*q) || *q == ':' || *q == '.'))
                return 0;
        p = end + 1;
    } else {
        const char *h = p;
        while (alnum(*p) || *p == '.' || *p == '-')
            p++;
        if (p == h)
            return 0;
    }
    if (*p == ':') {
        long port = 0;
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9' && digits < 6; p++, digits++)
            port = port * 10 + (*p - '0');
        if (digits == 0 || port < 1 || port > 65535)
            return 0;
    }
    if (*p == '\0')
        return 1;
    if (*p != '/')
        return 0;
    for (; *p; p++)
        if (!url_path_char_ok(*p))
            return 0;
    return 1;
}

/* 1..max characters, each accepted by ok(). */
static int chars_valid(const char *s, size_t max, int (*ok)(char))
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!ok(s[i]))
            return 0;
    return 1;
}

static int run_char(char c)
{
    return alnum(c) || c == '.' || c == '_' || c == '-';
}

static int key_char(char c)
{
    return c > 0x20 && c < 0x7f;
}

static int run_valid(const char *s)
{
    return chars_valid(s, JOB_RUN_MAX, run_char);
}

static int key_valid(const char *s)
{
    return chars_valid(s, JOB_KEY_MAX, key_char);
}

/* Every item of list valid by ok() and distinct; names the first bad one. */
static int check_list(char *const *list, size_t n, const char *field, int (*ok)(const char *),
                      const char *what, struct err *e)
{
    char tmp[TEXT_SHOWN_SIZE(SHOWN_MAX)];
    for (size_t i = 0; i < n; i++) {
        if (!list[i] || !ok(list[i]))
            return err_set(e, "job field '%s'[%zu]: '%s' is not a valid %s", field, i,
                           list[i] ? text_shown(list[i], SHOWN_MAX, tmp) : "(null)", what);
        for (size_t k = 0; k < i; k++)
            if (strcmp(list[k], list[i]) == 0)
                return err_set(e, "job field '%s'[%zu]: '%s' appears twice", field, i,
                               text_shown(list[i], SHOWN_MAX, tmp));
    }
    return 0;
}

static int check_str(const char *v, const char *field, int (*ok)(const char *),
                     const char *what, struct err *e)
{
    char tmp[TEXT_SHOWN_SIZE(SHOWN_MAX)];
    if (!v)
        return err_set(e, "job field '%s': missing", field);
    if (!ok(v))
        return err_set(e, "job field '%s': '%s' is not a valid %s", field,
                       text_shown(v, SHOWN_MAX, tmp), what);
    return 0;
}

int job_validate(const struct job *j, struct err *e)
{
    if (j->version != JOB_VERSION)
        return err_set(e, "job field 'v': version %d is not supported (expected %d)",
                       j->version, JOB_VERSION);
    if (check_str(j->run, "run", run_valid, "run id ([A-Za-z0-9._-]{1,64})", e) < 0 ||
        check_str(j->key, "key", key_valid, "job key (1-255 printable characters)", e) < 0 ||
        check_str(j->upstream, "upstream", job_url_valid, "http(s) URL", e) < 0 ||
        check_str(j->source_repo, "source_repo", ref_repo_valid, "repository name", e) < 0 ||
        check_str(j->target, "target", job_url_valid, "http(s) URL", e) < 0 ||
        check_str(j->target_repo, "target_repo", ref_repo_valid, "repository name", e) < 0)
        return -1;
    if ((j->ntags == 0 && j->ndigests == 0) || j->ntags > JOB_MAX_TAGS)
        return err_set(e, "job field 'tags': %zu tags, expected 1..%d (0 with digests)",
                       j->ntags, JOB_MAX_TAGS);
    if (j->ndigests > JOB_MAX_TAGS || j->nreferrers > JOB_MAX_TAGS)
        return err_set(e, "job field '%s': %zu items, more than %d",
                       j->ndigests > JOB_MAX_TAGS ? "digests" : "referrers",
                       j->ndigests > JOB_MAX_TAGS ? j->ndigests : j->nreferrers, JOB_MAX_TAGS);
    if (check_list(j->tags, j->ntags, "tags", ref_tag_valid, "tag", e) < 0 ||
        check_list(j->digests, j->ndigests, "digests", digest_valid, "digest", e) < 0 ||
        check_list(j->referrers, j->nreferrers, "referrers", ref_tag_valid, "tag", e) < 0)
        return -1;
    if (j->ndigests && j->policy == JOB_POLICY_REWRITE)
        return err_set(e, "job field 'digests': a pinned digest cannot be rewritten (policy "
                          "'rewrite')");
    if (j->nplatforms > JOB_MAX_PLATFORMS)
        return err_set(e, "job field 'platforms': %zu platforms, more than %d", j->nplatforms,
                       JOB_MAX_PLATFORMS);
    if (check_list(j->platforms, j->nplatforms, "platforms", job_platform_valid,
                   "platform (os/arch[/variant])", e) < 0)
        return -1;
    if ((unsigned)j->policy > JOB_POLICY_REWRITE)
        return err_set(e, "job field 'platform_policy': unknown value %d", (int)j->policy);
    if (j->policy != JOB_POLICY_ALL && j->nplatforms == 0)
        return err_set(e, "job field 'platforms': policy '%s' needs at least one platform",
                       job_policy_name(j->policy));
    if ((unsigned)j->reason > JOB_REASON_RETRY)
        return err_set(e, "job field 'reason': unknown value %d", (int)j->reason);
    if (j->attempt < 0 || j->attempt > JOB_MAX_ATTEMPT)
        return err_set(e, "job field 'attempt': %d is not within 0..%d", j->attempt,
                       JOB_MAX_ATTEMPT);
    if (j->registry_wait_ms < 0 || j->registry_wait_ms > JOB_MAX_WAIT_MS)
        return err_set(e, "job field 'registry_wait_ms': %lld is not within 0..%lld",
                       j->registry_wait_ms, JOB_MAX_WAIT_MS);
    return 0;
}

static json_t *str_array(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

char *job_encode(const struct job *j, struct err *e)
{
    char *out = NULL;
    json_t *o = NULL;
    if (job_validate(j, e) < 0)
        goto out;
    /* Insertion order is the output order (jansson 2.14 keeps it). */
    o = json_object();
    json_object_set_new(o, "v", json_integer(j->version));
    json_object_set_new(o, "run", json_string(j->run));
    json_object_set_new(o, "key", json_string(j->key));
    json_object_set_new(o, "upstream", json_string(j->upstream));
    json_object_set_new(o, "source_repo", json_string(j->source_repo));
    json_object_set_new(o, "target", json_string(j->target));
    json_object_set_new(o, "target_repo", json_string(j->target_repo));
    json_object_set_new(o, "tags", str_array(j->tags, j->ntags));
    if (j->ndigests)
        json_object_set_new(o, "digests", str_array(j->digests, j->ndigests));
    if (j->nreferrers)
        json_object_set_new(o, "referrers", str_array(j->referrers, j->nreferrers));
    if (j->find_referrers)
        json_object_set_new(o, "find_referrers", json_true());
    json_object_set_new(o, "platforms", str_array(j->platforms, j->nplatforms));
    json_object_set_new(o, "platform_policy", json_string(job_policy_name(j->policy)));
    json_object_set_new(o, "reason", json_string(job_reason_name(j->reason)));
    json_object_set_new(o, "attempt", json_integer(j->attempt));
    if (j->registry_wait_ms)
        json_object_set_new(o, "registry_wait_ms", json_integer(j->registry_wait_ms));
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) {
        err_set(e, "job '%s': JSON encoding failed", j->key);
        goto out;
    }
    out = xstrdup(text);
    free(text);
    if (strlen(out) > JOB_MAX_BYTES) {
        err_set(e, "job '%s': encoded payload is %zu bytes, more than %d", j->key, strlen(out),
                JOB_MAX_BYTES);
        free(out);
        out = NULL;
    }
out:
    json_decref(o);
    return out;
}

/* A required string member, copied. Its grammar is checked by job_validate. */
static int take_str(json_t *o, const char *name, char **out, struct err *e)
{
    json_t *v = json_object_get(o, name);
    if (!v)
        return err_set(e, "job field '%s': missing", name);
    if (!json_is_string(v))
        return err_set(e, "job field '%s': not a string", name);
    *out = xstrdup(json_string_value(v));
    return 0;
}

/* An optional boolean member: absent is 0. */
static int take_flag(json_t *o, const char *name, int *out, struct err *e)
{
    json_t *v = json_object_get(o, name);
    if (v && !json_is_boolean(v))
        return err_set(e, "job field '%s': not a boolean", name);
    *out = json_is_true(v);
    return 0;
}

static int take_list(json_t *o, const char *name, size_t max, char ***out, size_t *n,
                     struct err *e)
{
    json_t *a = json_object_get(o, name);
    if (!a)
        return err_set(e, "job field '%s': missing", name);
    if (!json_is_array(a))
        return err_set(e, "job field '%s': not an array", name);
    size_t len = json_array_size(a);
    if (len > max)
        return err_set(e, "job field '%s': %zu items, more than %zu", name, len, max);
    *out = xcalloc(len ? len : 1, sizeof(char *));
    for (size_t i = 0; i < len; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_string(v))
            return err_set(e, "job field '%s'[%zu]: not a string", name, i);
        (*out)[i] = xstrdup(json_string_value(v));
        *n = i + 1;
    }
    return 0;
}

static int take_ll(json_t *o, const char *name, int required, long long lo, long long hi,
                   long long *out, struct err *e)
{
    json_t *v = json_object_get(o, name);
    if (!v) {
        if (required)
            return err_set(e, "job field '%s': missing", name);
        return 0;
    }
    if (!json_is_integer(v))
        return err_set(e, "job field '%s': not an integer", name);
    long long n = json_integer_value(v);
    if (n < lo || n > hi)
        return err_set(e, "job field '%s': %lld is not within %lld..%lld", name, n, lo, hi);
    *out = n;
    return 0;
}

static int take_int(json_t *o, const char *name, int required, int lo, int hi, int *out,
                    struct err *e)
{
    long long n = *out;
    if (take_ll(o, name, required, lo, hi, &n, e) < 0)
        return -1;
    *out = (int)n;
    return 0;
}

static int take_enum(json_t *o, const char *name, int (*parse)(const char *, void *),
                     void *out, struct err *e)
{
    char tmp[TEXT_SHOWN_SIZE(SHOWN_MAX)];
    json_t *v = json_object_get(o, name);
    if (!v)
        return err_set(e, "job field '%s': missing", name);
    if (!json_is_string(v))
        return err_set(e, "job field '%s': not a string", name);
    if (parse(json_string_value(v), out) < 0)
        return err_set(e, "job field '%s': unknown value '%s'", name,
                       text_shown(json_string_value(v), SHOWN_MAX, tmp));
    return 0;
}

static int parse_policy(const char *s, void *out)
{
    return job_policy_parse(s, out);
}

static int parse_reason(const char *s, void *out)
{
    return job_reason_parse(s, out);
}

int job_decode(struct job *out, const char *data, size_t len, struct err *e)
{
    int rc = -1;
    json_t *o = NULL;
    json_error_t jerr;
    memset(out, 0, sizeof(*out));
    if (len > JOB_MAX_BYTES) {
        err_set(e, "job: payload is %zu bytes, more than %d", len, JOB_MAX_BYTES);
        goto out;
    }
    o = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o) {
        err_set(e, "job: invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                jerr.text);
        goto out;
    }
    if (!json_is_object(o)) {
        err_set(e, "job: payload is not a JSON object");
        goto out;
    }
    if (take_int(o, "v", 1, 0, 1000000, &out->version, e) < 0 ||
        take_str(o, "run", &out->run, e) < 0 || take_str(o, "key", &out->key, e) < 0 ||
        take_str(o, "upstream", &out->upstream, e) < 0 ||
        take_str(o, "source_repo", &out->source_repo, e) < 0 ||
        take_str(o, "target", &out->target, e) < 0 ||
        take_str(o, "target_repo", &out->target_repo, e) < 0 ||
        take_list(o, "tags", JOB_MAX_TAGS, &out->tags, &out->ntags, e) < 0 ||
        (json_object_get(o, "digests") &&
         take_list(o, "digests", JOB_MAX_TAGS, &out->digests, &out->ndigests, e) < 0) ||
        (json_object_get(o, "referrers") &&
         take_list(o, "referrers", JOB_MAX_TAGS, &out->referrers, &out->nreferrers, e) < 0) ||
        take_flag(o, "find_referrers", &out->find_referrers, e) < 0 ||
        take_list(o, "platforms", JOB_MAX_PLATFORMS, &out->platforms, &out->nplatforms, e) <
            0 ||
        take_enum(o, "platform_policy", parse_policy, &out->policy, e) < 0 ||
        take_enum(o, "reason", parse_reason, &out->reason, e) < 0 ||
        take_int(o, "attempt", 0, 0, JOB_MAX_ATTEMPT, &out->attempt, e) < 0 ||
        take_ll(o, "registry_wait_ms", 0, 0, JOB_MAX_WAIT_MS, &out->registry_wait_ms, e) < 0)
        goto out;
    if (job_validate(out, e) < 0)
        goto out;
    rc = 0;
out:
    json_decref(o);
    if (rc < 0)
        job_free(out);
    return rc;
}

void job_free(struct job *j)
{
    if (!j)
        return;
    free(j->run);
    free(j->key);
    free(j->upstream);
    free(j->source_repo);
    free(j->target);
    free(j->target_repo);
    strv_free_array(j->tags, j->ntags);
    strv_free_array(j->digests, j->ndigests);
    strv_free_array(j->referrers, j->nreferrers);
    strv_free_array(j->platforms, j->nplatforms);
    memset(j, 0, sizeof(*j));
}
