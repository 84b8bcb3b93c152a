/* coord: option handling and report helpers shared by the coordinator's subcommands. */
#include "coord.h"
#include "log.h"

#include <stdio.h>
#include <string.h>

#include "reg.h"
#include "text.h"
#include "xalloc.h"

void coord_fail(const char *cmd, const char *msg)
{
    fprintf(stderr, "hubsync-coordinator %s: %s\n", cmd, msg);
}

static int parse_args(struct cfg *c, const struct cfg_opt *opts, int nopts, int argc,
                      char **argv, const char *usage, int nargs, int *exit_code)
{
    struct err e;
    if (cfg_parse(c, opts, nopts, argc - 1, argv + 1, &e) < 0) {
        coord_fail(argv[0], e.msg);
        *exit_code = COORD_EXIT_USAGE;
        return -1;
    }
    if (cfg_bool(c, CFG_ID_HELP)) {
        printf("usage: hubsync-coordinator %s\noptions:\n", usage);
        cfg_usage(stdout, opts, nopts);
        *exit_code = COORD_EXIT_OK;
        cfg_free(c);
        return -1;
    }
    if (c->nargs != nargs) {
        char msg[256];
        if (c->nargs > nargs)
            snprintf(msg, sizeof(msg), "unexpected argument '%s' (see --help)",
                     c->args[nargs]);
        else
            snprintf(msg, sizeof(msg), "a directory is required (see --help)");
        coord_fail(argv[0], msg);
        *exit_code = COORD_EXIT_USAGE;
        cfg_free(c);
        return -1;
    }
    return 0;
}

int coord_parse_args(struct cfg *c, const struct cfg_opt *opts, int nopts, int argc, char **argv,
                     const char *usage, int *exit_code)
{
    return parse_args(c, opts, nopts, argc, argv, usage, 0, exit_code);
}

int coord_parse_args_dir(struct cfg *c, const struct cfg_opt *opts, int nopts, int argc,
                         char **argv, const char *usage, int *exit_code)
{
    return parse_args(c, opts, nopts, argc, argv, usage, 1, exit_code);
}

int coord_is_index_type(const char *ct)
{
    if (!ct)
        return 1;
    return strncmp(ct, REG_MT_OCI_MANIFEST, strlen(REG_MT_OCI_MANIFEST)) != 0 &&
           strncmp(ct, REG_MT_DOCKER_MANIFEST, strlen(REG_MT_DOCKER_MANIFEST)) != 0;
}

int coord_sync_file_load(const struct cfg *c, struct syncfile **out, struct err *e)
{
    const char *path = cfg_str(c, COORD_ID_SYNC_FILE);
    *out = NULL;
    if (!path)
        return 0;
    *out = syncfile_load(path, e);
    return *out ? 0 : err_prefix(e, "--sync-file");
}

int coord_catalog_open(struct catalog **out, const struct cfg *c, int (*tick)(void *arg),
                       void *arg, struct err *e)
{
    struct catalog_fetch f = {(int)cfg_int(c, COORD_ID_FETCH_TIMEOUT), tick, arg};
    return catalog_open(out, cfg_str(c, COORD_ID_OFFICIAL_IMAGES), cfg_str(c, COORD_ID_WORKDIR), &f,
                        e);
}

void coord_split_list(const char *s, struct strv *out)
{
    while (s && *s) {
        size_t n = strcspn(s, ",");
        const char *p = s;
        size_t len = n;
        while (len > 0 && (*p == ' ' || *p == '\t'))
            p++, len--;
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len > 0)
            strv_push(out, xstrndup(p, len));
        s += n + (s[n] == ',');
    }
}

void coord_human_bytes(long long bytes, char *out, size_t n)
{
    const char *u[] = {"B", "KB", "MB", "GB", "TB"};
    double v = (double)bytes;
    int i = 0;
    while (v >= 1000 && i < 4)
        v /= 1000, i++;
    snprintf(out, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

long long coord_json_int(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

json_t *coord_json_value(const char *v)
{
    long long n;
    return text_ll(v, &n) == 0 ? json_integer(n) : json_string(v);
}

json_t *coord_json_fields(char *const *items, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; i + 1 < n; i += 2)
        json_object_set_new(o, items[i], coord_json_value(items[i + 1]));
    return o;
}

char *coord_json_text(const json_t *v, struct err *e)
{
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    if (!text)
        err_set(e, "jansson cannot write it as JSON");
    return text;
}

/* b - a of two fields of rec, both positive integers; else null. */
static json_t *span(const json_t *rec, const char *a, const char *b)
{
    long long from = coord_json_int(rec, a), to = coord_json_int(rec, b);
    return from > 0 && to >= from ? json_integer(to - from) : json_null();
}

/* Field k of rec when a whole number of ms; else null. */
static json_t *ms_or_null(const json_t *rec, const char *k)
{
    json_t *v = json_object_get(rec, k);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? json_integer(json_integer_value(v))
                                                            : json_null();
}

static const char *const phase_names[] = {"catalog", "enqueue", "first_job", "work", "end"};

json_t *coord_run_phases(const json_t *rec)
{
    json_t *o = json_object();
    json_object_set_new(o, "catalog", ms_or_null(rec, "catalog_ms"));
    json_object_set_new(o, "enqueue", ms_or_null(rec, "enqueue_ms"));
    json_object_set_new(o, "first_job", span(rec, "enqueued_ms", "first_settled_ms"));
    json_object_set_new(o, "work", span(rec, "enqueued_ms", "last_settled_ms"));
    json_object_set_new(o, "end", span(rec, "last_settled_ms", "finished_ms"));
    return o;
}

void coord_phases_text(const json_t *phases, char *out, size_t n)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof(phase_names) / sizeof(phase_names[0]); i++) {
        json_t *v = json_object_get(phases, phase_names[i]);
        if (!json_is_integer(v) || len >= n)
            continue;
        int w = snprintf(out + len, n - len, "%s%s %.2f s", len ? ", " : "", phase_names[i],
                         (double)json_integer_value(v) / 1000.0);
        if (w > 0)
            len += (size_t)w;
    }
}
