/* hubsync-coordinator: reads docker-library/official-images and turns what
 * changed into jobs. This file only dispatches subcommands. */
#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: hubsync-coordinator COMMAND [options]\n"
               "commands:\n"
               "  catalog   read the official-images catalog at a ref\n"
               "  diff      what changed between two commits\n"
               "run 'hubsync-coordinator COMMAND --help' for its options\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "hubsync-coordinator: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
