/* coord: the coordinator's private header: its subcommands and the option
 * handling they share.
 *
 * Each subcommand is `int coord_<name>_main(int argc, char **argv)` with
 * argv[0] the subcommand name, returning an exit code below; main.c
 * dispatches to it from its table. */
#ifndef HUBSYNC_COORD_H
#define HUBSYNC_COORD_H

#include "cfg.h"
#include "oi.h"

/* Exit codes of every subcommand. */
enum {
    COORD_EXIT_OK = 0,
    COORD_EXIT_PARTIAL = 1, /* done, but some input was broken (reported) */
    COORD_EXIT_USAGE = 2,   /* bad usage or an unusable source: one line on stderr */
    COORD_EXIT_DEFERRED = 75, /* sync: the pull budget ran out; the next run goes on (EX_TEMPFAIL) */
};

/* Options several subcommands share. */
#define COORD_OPT_REDIS                                                                            \
    {"redis", "HUBSYNC_REDIS", CFG_STR, "redis://127.0.0.1:6379", 0, 0,                            \
     "Redis URL (redis://[:password@]host:port[/db])", 0}
#define COORD_OPT_REDIS_PREFIX                                                                     \
    {"redis-prefix", "HUBSYNC_REDIS_PREFIX", CFG_STR, "hubsync:", 0, 0,                            \
     "prefix of every Redis key", 0}
#define COORD_OPT_LOG_LEVEL                                                                        \
    {"log-level", "HUBSYNC_LOG_LEVEL", CFG_STR, "info", 0, 0, "debug, info, warn or error", 0}
#define COORD_OPT_LOG_FORMAT                                                                       \
    {"log-format", "HUBSYNC_LOG_FORMAT", CFG_STR, "text", 0, 0, "text or json", 0}
#define COORD_OPT_HELP {"help", NULL, CFG_BOOL, "false", 0, 0, "show this help", 0}

/* Apply --log-level and --log-format (both options must be in the table). */
int coord_setup_log(const struct cfg *c, struct err *e);

/* Parse a subcommand's flags (argv[0] is its name) against opts, which must
 * have a CFG_BOOL "help" option. Returns -1 when the caller should exit
 * with *exit_code: after --help (0, usage printed on stdout) or on a bad
 * flag or stray argument (2, one line on stderr). On 0 the caller frees c
 * with cfg_free(). `usage` is the one-line synopsis. */
int coord_parse_args(struct cfg *c, const struct cfg_opt *opts, int nopts, int argc, char **argv,
                     const char *usage, int *exit_code);

/* Append the items of a comma-separated list ("a, b,c"), trimmed, empty
 * items dropped. */
void coord_split_list(const char *s, struct oi_strv *out);

/* Print "hubsync-coordinator <cmd>: <msg>" on stderr. */
void coord_fail(const char *cmd, const char *msg);

int coord_catalog_main(int argc, char **argv);
int coord_diff_main(int argc, char **argv);
int coord_sync_main(int argc, char **argv);

#endif
