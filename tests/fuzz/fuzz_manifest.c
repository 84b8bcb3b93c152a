/* libFuzzer target: manifest and index parsing, platform filters, rewrite. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct manifest m;
    struct err e;
    char p1[] = "linux/amd64", p2[] = "linux/arm64";
    char *want[] = {p1, p2};
    if (manifest_parse(&m, (const char *)data, size, "application/vnd.oci.image.index.v1+json",
                       &e) == 0) {
        for (size_t i = 0; i < m.nitems; i++)
            (void)manifest_child_wanted(&m, i, want, 2);
        manifest_free(&m);
    }
    size_t n;
    char *out = manifest_rewrite_index((const char *)data, size, want, 2,
                                       "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                                       &n, &e);
    free(out);
    return 0;
}
