/* Fuzz target: command-line flags (cfg_parse) on arbitrary argument lists:
 * the input split at NUL bytes is argv. Invariants: a parse either fails
 * with a message or yields values within the table's rules (integers in
 * bounds, booleans true/false, positional arguments taken from argv), and
 * the value of a secret option never shows in an error. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ARGS 64

/* What the options are looked up by. */
enum {
    OPT_CONCURRENCY = CFG_ID_OWN,
    OPT_LEASE_MS,
    OPT_EXIT_WHEN_IDLE,
    OPT_PASSWORD,
};

static const struct cfg_opt opts[] = {
    {CFG_ID_REDIS, "redis", "FUZZ_CFG_REDIS", CFG_STR, "redis://127.0.0.1:6379", 0, 0, "Redis URL",
     0},
    {OPT_CONCURRENCY, "concurrency", "FUZZ_CFG_CONCURRENCY", CFG_INT, "8", 1, 256, "jobs at once",
     0},
    {OPT_LEASE_MS, "lease-ms", NULL, CFG_INT, "30000", 1000, 3600000, "lease", 0},
    {OPT_EXIT_WHEN_IDLE, "exit-when-idle", NULL, CFG_BOOL, "false", 0, 0, "exit when idle", 0},
    {OPT_PASSWORD, "password", NULL, CFG_STR, NULL, 0, 0, "a secret", 1},
    {CFG_ID_HELP, "help", NULL, CFG_BOOL, "false", 0, 0, "show this help", 0},
};
#define NOPTS ((int)(sizeof(opts) / sizeof(opts[0])))

static void check_values(const struct cfg *c)
{
    long long n = cfg_int(c, OPT_CONCURRENCY), l = cfg_int(c, OPT_LEASE_MS);
    if (n < 1 || n > 256 || l < 1000 || l > 3600000)
        abort();
    int b = cfg_bool(c, OPT_EXIT_WHEN_IDLE);
    if (b != 0 && b != 1)
        abort();
    if (!cfg_str(c, CFG_ID_REDIS))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    char *argv[MAX_ARGS];
    int argc = 0;
    for (char *p = copy; p <= copy + size && argc < MAX_ARGS; p += strlen(p) + 1)
        argv[argc++] = p;
    struct cfg c;
    struct err e;
    if (cfg_parse(&c, opts, NOPTS, argc, argv, &e) == 0) {
        check_values(&c);
        for (int i = 0; i < c.nargs; i++)
            if (c.args[i] < copy || c.args[i] > copy + size)
                abort();
        cfg_free(&c);
    } else {
        if (!e.msg[0])
            abort();
        /* A value of --password holding the canary "QzQz" must never be
         * echoed, even in a complaint (other arguments may be: only when none
         * holds the canary does its showing mean the secret showed). */
        int secret = 0, other = 0;
        for (int i = 0; i < argc; i++) {
            int holds = strstr(argv[i], "QzQz") != NULL;
            if (holds && strncmp(argv[i], "--password=", 11) == 0)
                secret = 1;
            else if (holds && i > 0 && strcmp(argv[i - 1], "--password") == 0)
                secret = 1;
            else if (holds)
                other = 1;
        }
        if (secret && !other && strstr(e.msg, "QzQz"))
            abort();
    }
    free(copy);
    return 0;
}
