/* cfg: command-line flags and environment variables from one table.
 *
 * Each program describes its options once (id, name, environment variable,
 * type, default, bounds, help). Precedence: default < environment < flag.
 * Values are validated at parse time, so a bad value gives one clear error
 * naming the flag or variable. The same table prints --help, which
 * docs/configuration.md mirrors. Secret options are never echoed.
 *
 * A program looks its options up by id, never by name: the shared rows below
 * have the CFG_ID_* ids, a program's own options ids of an enum of its own
 * starting at CFG_ID_OWN, so an option misspelt in a lookup does not
 * compile. Ids are unique within a table. */
#ifndef HUBSYNC_CFG_H
#define HUBSYNC_CFG_H

#include <stdio.h>

#include "err.h"

enum cfg_type { CFG_STR, CFG_INT, CFG_BOOL };

struct cfg_opt {
    int id;            /* what the program looks it up by */
    const char *name;  /* flag without the leading "--" */
    const char *env;   /* environment variable, or NULL */
    enum cfg_type type;
    const char *def;   /* default as text, or NULL for none */
    long long min;     /* CFG_INT bounds (inclusive) */
    long long max;
    const char *help;
    int secret;        /* value never printed */
};

struct cfg {
    const struct cfg_opt *opts;
    int nopts;
    char **vals;       /* per option: current value (owned) or NULL */
    const char **from; /* per option: "default", "environment" or "flag" */
    char **args;       /* positional arguments (borrowed from argv) */
    int nargs;
};

/* Ids of the rows every program may share (CFG_OPT_* below). */
enum cfg_id {
    CFG_ID_REDIS = 1,
    CFG_ID_REDIS_PREFIX,
    CFG_ID_LOG_LEVEL,
    CFG_ID_LOG_FORMAT,
    CFG_ID_HELP,
    CFG_ID_UPSTREAM,
    CFG_ID_TARGET,
    CFG_ID_OWN, /* a program's own ids start here */
};

/* Parse argv[0..argc) (no program name) against opts. Fills out; on error
 * returns -1 with a message naming the flag or variable (or two rows sharing
 * an id: a programming error). */
int cfg_parse(struct cfg *out, const struct cfg_opt *opts, int nopts, int argc, char **argv,
              struct err *e);
void cfg_free(struct cfg *c);

/* Getters by id; the option must be in the table (a programming error aborts). */
const char *cfg_str(const struct cfg *c, int id); /* NULL if unset */
long long cfg_int(const struct cfg *c, int id);
int cfg_bool(const struct cfg *c, int id);
/* 1 if the option was given by flag or environment rather than defaulted. */
int cfg_is_set(const struct cfg *c, int id);

/* Print the options (flag, variable, default, help), one per line. */
void cfg_usage(FILE *f, const struct cfg_opt *opts, int nopts);

/* Options both programs take, one row each in their tables. */
#define CFG_OPT_REDIS                                                                              \
    {CFG_ID_REDIS, "redis", "HUBSYNC_REDIS", CFG_STR, "redis://127.0.0.1:6379", 0, 0,              \
     "Redis URL (redis://[:password@]host:port[/db])", 0}
#define CFG_OPT_REDIS_PREFIX                                                                       \
    {CFG_ID_REDIS_PREFIX, "redis-prefix", "HUBSYNC_REDIS_PREFIX", CFG_STR, "hubsync:", 0, 0,       \
     "prefix of every Redis key", 0}
#define CFG_OPT_LOG_LEVEL                                                                          \
    {CFG_ID_LOG_LEVEL, "log-level", "HUBSYNC_LOG_LEVEL", CFG_STR, "info", 0, 0,                    \
     "debug, info, warn or error", 0}
#define CFG_OPT_LOG_FORMAT                                                                         \
    {CFG_ID_LOG_FORMAT, "log-format", "HUBSYNC_LOG_FORMAT", CFG_STR, "text", 0, 0,                 \
     "text or json", 0}
#define CFG_OPT_HELP {CFG_ID_HELP, "help", NULL, CFG_BOOL, "false", 0, 0, "show this help", 0}
/* The two registries: the coordinator writes them into jobs, workers serve
 * jobs naming them and refuse others. */
#define CFG_OPT_UPSTREAM                                                                           \
    {CFG_ID_UPSTREAM, "upstream", "HUBSYNC_UPSTREAM", CFG_STR, "https://registry-1.docker.io",     \
     0, 0, "registry to copy from", 0}
#define CFG_OPT_TARGET                                                                             \
    {CFG_ID_TARGET, "target", "HUBSYNC_TARGET", CFG_STR, NULL, 0, 0,                               \
     "registry to copy to, e.g. http://registry:5000 (required)", 0}

/* --target is given and both --upstream and --target are http(s)://host[:port]
 * URLs (both rows must be in the table); -1 with a message naming the flags. */
int cfg_registries_check(const struct cfg *c, struct err *e);

/* Apply --log-level and --log-format (both must be in the table) for role
 * ("coordinator", "worker"); -1 with a message naming the flag. */
int cfg_setup_log(const struct cfg *c, const char *role, struct err *e);

#endif
