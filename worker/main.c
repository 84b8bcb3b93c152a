/* hubsync-worker: takes jobs from Redis and copies images. */
#include <stdio.h>

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "hubsync-worker: not built yet\n");
    return 1;
}
