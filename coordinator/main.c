/* hubsync-coordinator: reads docker-library/official-images and turns what
 * changed into jobs. This file only dispatches subcommands. */
#include <stdio.h>
#include <string.h>

#include "coord.h"
#include "log.h"
#include "xalloc.h"

static const struct {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} commands[] = {
    {"catalog", "read the official-images catalog at a ref", coord_catalog_main},
    {"diff", "what changed between two commits", coord_diff_main},
    {"sync", "enqueue a sync run (daemon, or --once) and follow it", coord_sync_main},
    {"plan", "what a sync would do and cost in pulls, writing nothing", coord_plan_main},
    {"status", "queue, workers, pull budget and runs, from Redis", coord_status_main},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *f)
{
    fprintf(f, "usage: hubsync-coordinator COMMAND [options]\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "run 'hubsync-coordinator COMMAND --help' for its options\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? COORD_EXIT_USAGE : COORD_EXIT_OK;
    }
    xalloc_libraries();
    log_setup("coordinator", LOG_LVL_WARN, LOG_FMT_TEXT);
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "hubsync-coordinator: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return COORD_EXIT_USAGE;
}
