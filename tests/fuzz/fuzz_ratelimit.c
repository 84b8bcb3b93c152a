/* Fuzz target: rate-limit header values and Retry-After on arbitrary bytes.
 * The first byte picks the header name; invariants: counts and windows are
 * never negative, the source stays bounded and printable, Retry-After is
 * never negative. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ratelimit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"ratelimit-limit", "RateLimit-Remaining",
                                        "x-ratelimit-limit", "X-RateLimit-Remaining",
                                        "docker-ratelimit-source", "other"};
    if (size == 0)
        return 0;
    const char *name = names[data[0] % (sizeof(names) / sizeof(names[0]))];
    const char *v = (const char *)data + 1;
    size_t n = size - 1;
    struct ratelimit_info rl;
    ratelimit_init(&rl);
    ratelimit_header(&rl, name, v, n);
    ratelimit_header(&rl, "x-ratelimit-remaining", v, n);
    if (rl.limit < 0 || rl.limit_window < 0 || rl.remaining < 0 || rl.remaining_window < 0)
        abort();
    if (strlen(rl.source) >= RATELIMIT_SOURCE_MAX)
        abort();
    for (const char *p = rl.source; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            abort();
    long c, w;
    if (ratelimit_parse_value(v, n, &c, &w) == 0 && (c < 0 || w < 0))
        abort();
    long s;
    if (ratelimit_retry_after(v, n, 1700000000, &s) == 0 && s < 0)
        abort();
    return 0;
}
