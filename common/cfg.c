/* cfg: see cfg.h. */
#include "cfg.h"

#include <stdlib.h>
#include <string.h>

#include "job.h"
#include "log.h"
#include "text.h"
#include "xalloc.h"

static int find_opt(const struct cfg_opt *opts, int nopts, const char *name, size_t len)
{
    for (int i = 0; i < nopts; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
            return i;
    return -1;
}

static int opt_index(const struct cfg *c, int id)
{
    for (int i = 0; i < c->nopts; i++)
        if (c->opts[i].id == id)
            return i;
    fprintf(stderr, "hubsync: internal error: no option with id %d\n", id);
    abort();
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off", ""};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (strcasecmp(s, yes[i]) == 0)
            return *out = 1, 0;
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (strcasecmp(s, no[i]) == 0)
            return *out = 0, 0;
    return -1;
}

/* Validate a value for opt; `where` names its origin for the message. */
static int check_value(const struct cfg_opt *o, const char *v, const char *where, struct err *e)
{
    const char *shown = o->secret ? "(secret)" : v;
    if (o->type == CFG_BOOL) {
        int b;
        if (parse_bool(v, &b) < 0)
            return err_set(e, "%s: '%s' is not a boolean (true/false)", where, shown);
    } else if (o->type == CFG_INT) {
        long long n;
        if (text_ll(v, &n) < 0)
            return err_set(e, "%s: '%s' is not an integer", where, shown);
        if (n < o->min || n > o->max)
            return err_set(e, "%s: %lld is out of range [%lld, %lld]", where, n, o->min, o->max);
    }
    return 0;
}

static void set_val(struct cfg *c, int i, const char *v, const char *from)
{
    free(c->vals[i]);
    c->vals[i] = v ? xstrdup(v) : NULL;
    c->from[i] = from;
}

int cfg_parse(struct cfg *out, const struct cfg_opt *opts, int nopts, int argc, char **argv,
              struct err *e)
{
    int rc = -1;
    memset(out, 0, sizeof(*out));
    out->opts = opts;
    out->nopts = nopts;
    out->vals = xcalloc((size_t)nopts, sizeof(char *));
    out->from = xcalloc((size_t)nopts, sizeof(char *));
    out->args = xcalloc((size_t)argc + 1, sizeof(char *));

    for (int i = 0; i < nopts; i++)
        for (int j = 0; j < i; j++)
            if (opts[i].id == opts[j].id) {
                err_set(e, "internal error: options --%s and --%s share id %d", opts[j].name,
                        opts[i].name, opts[i].id);
                goto out;
            }

    for (int i = 0; i < nopts; i++) {
        set_val(out, i, opts[i].def, "default");
        const char *env = opts[i].env ? getenv(opts[i].env) : NULL;
        if (env && *env) { /* compose writes unset variables as empty */
            if (check_value(&opts[i], env, opts[i].env, e) < 0)
                goto out;
            set_val(out, i, env, "environment");
        }
    }

    for (int a = 0; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--") == 0) {
            while (++a < argc)
                out->args[out->nargs++] = argv[a];
            break;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            out->args[out->nargs++] = argv[a];
            continue;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int i = find_opt(opts, nopts, name, len);
        if (i < 0) {
            err_set(e, "unknown flag '--%.*s' (see --help)", (int)len, name);
            goto out;
        }
        const char *v;
        if (eq)
            v = eq + 1;
        else if (opts[i].type == CFG_BOOL)
            v = "true";
        else if (a + 1 < argc && strncmp(argv[a + 1], "--", 2) != 0)
            v = argv[++a];
        else {
            /* Taking the next flag as the value would echo it in a complaint,
             * a --password=... included; --name=--value still works. */
            err_set(e, "flag --%s needs a value", opts[i].name);
            goto out;
        }
        char where[128];
        snprintf(where, sizeof(where), "--%s", opts[i].name);
        if (check_value(&opts[i], v, where, e) < 0)
            goto out;
        set_val(out, i, v, "flag");
    }
    rc = 0;
out:
    if (rc < 0)
        cfg_free(out);
    return rc;
}

void cfg_free(struct cfg *c)
{
    if (c->vals)
        for (int i = 0; i < c->nopts; i++)
            free(c->vals[i]);
    free(c->vals);
    free(c->from);
    free(c->args);
    memset(c, 0, sizeof(*c));
}

const char *cfg_str(const struct cfg *c, int id)
{
    return c->vals[opt_index(c, id)];
}

long long cfg_int(const struct cfg *c, int id)
{
    const char *v = c->vals[opt_index(c, id)];
    long long n = 0;
    if (v)
        text_ll(v, &n);
    return n;
}

int cfg_bool(const struct cfg *c, int id)
{
    const char *v = c->vals[opt_index(c, id)];
    int b = 0;
    if (v)
        parse_bool(v, &b);
    return b;
}

int cfg_is_set(const struct cfg *c, int id)
{
    return strcmp(c->from[opt_index(c, id)], "default") != 0;
}

void cfg_usage(FILE *f, const struct cfg_opt *opts, int nopts)
{
    for (int i = 0; i < nopts; i++) {
        const struct cfg_opt *o = &opts[i];
        char flag[96];
        snprintf(flag, sizeof(flag), "--%s%s", o->name,
                 o->type == CFG_BOOL ? "" : (o->type == CFG_INT ? " N" : " VALUE"));
        fprintf(f, "  %-28s %s", flag, o->help);
        if (o->def && *o->def && o->type != CFG_BOOL)
            fprintf(f, " [default: %s]", o->secret ? "(secret)" : o->def);
        if (o->env)
            fprintf(f, " (env %s)", o->env);
        fputc('\n', f);
    }
}

int cfg_setup_log(const struct cfg *c, const char *role, struct err *e)
{
    enum log_level lvl;
    enum log_format fmt;
    if (log_parse_level(cfg_str(c, CFG_ID_LOG_LEVEL), &lvl) < 0)
        return err_set(e, "--log-level: '%s' is not debug, info, warn or error",
                       cfg_str(c, CFG_ID_LOG_LEVEL));
    if (log_parse_format(cfg_str(c, CFG_ID_LOG_FORMAT), &fmt) < 0)
        return err_set(e, "--log-format: '%s' is not text or json", cfg_str(c, CFG_ID_LOG_FORMAT));
    log_setup(role, lvl, fmt);
    return 0;
}

int cfg_registries_check(const struct cfg *c, struct err *e)
{
    const char *target = cfg_str(c, CFG_ID_TARGET), *upstream = cfg_str(c, CFG_ID_UPSTREAM);
    if (!target)
        return err_set(e, "--target is required (e.g. http://127.0.0.1:5000)");
    if (!job_url_valid(target) || !upstream || !job_url_valid(upstream))
        return err_set(e, "--upstream and --target must be http(s)://host[:port] URLs");
    return 0;
}
