/* catalog_walk: read the official-images catalog at every commit reachable
 * from a revision, in one process (the integration tests use it to prove
 * every commit of the test data reads without errors, quickly).
 *
 * usage: catalog_walk SRC [REV]
 * Prints one line per commit: "<sha> repos=R groups=G tags=T platforms=P
 * errors=E", then the errors, then "commits=N errors=E ms_per_commit=X".
 * Exit 0 when no commit had an error, 1 otherwise, 2 on usage or source
 * errors. */
#include <stdio.h>
#include <time.h>

#include "catalog.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    int code = 2;
    struct err e;
    struct catalog *c = NULL;
    struct strv commits = {NULL, 0};
    size_t nerrors = 0;

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: catalog_walk SRC [REV]\n");
        return 2;
    }
    if (catalog_open(&c, argv[1], NULL, NULL, &e) < 0 ||
        catalog_log(c, argc == 3 ? argv[2] : NULL, &commits, &e) < 0) {
        fprintf(stderr, "catalog_walk: %s\n", e.msg);
        goto out;
    }
    double t0 = now_ms();
    for (size_t i = 0; i < commits.n; i++) {
        struct catalog_snapshot *s;
        struct catalog_totals t;
        if (catalog_read(c, commits.v[i], NULL, &s, &e) < 0) {
            fprintf(stderr, "catalog_walk: %s\n", e.msg);
            goto out;
        }
        catalog_count(s, &t);
        printf("%s repos=%zu groups=%zu tags=%zu platforms=%zu errors=%zu\n", s->commit,
               t.repositories, t.groups, t.tags, t.entry_platforms, s->nerrors);
        for (size_t k = 0; k < s->nerrors; k++)
            printf("  %s\n", s->errors[k].msg);
        nerrors += s->nerrors;
        catalog_snapshot_free(s);
    }
    double ms = now_ms() - t0;
    printf("commits=%zu errors=%zu ms_per_commit=%.2f\n", commits.n, nerrors,
           commits.n ? ms / (double)commits.n : 0.0);
    code = nerrors ? 1 : 0;
out:
    strv_free(&commits);
    catalog_close(c);
    return code;
}
