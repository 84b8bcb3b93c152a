/* fuzz_check: invariants several fuzz targets assert. */
#ifndef HUBSYNC_FUZZ_CHECK_H
#define HUBSYNC_FUZZ_CHECK_H

#include <stdlib.h>
#include <strings.h>

/* A URL the client may request: http(s), and no byte (space, control,
 * non-ASCII) that could split or smuggle a request line. */
static inline void fuzz_check_url(const char *u)
{
    if (strncasecmp(u, "http://", 7) != 0 && strncasecmp(u, "https://", 8) != 0)
        abort();
    for (const char *p = u; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            abort();
}

#endif
