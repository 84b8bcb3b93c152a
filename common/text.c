/* text: see text.h. */
#include "text.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *text_shown(const char *s, size_t max, char *out)
{
    size_t i = 0;
    for (; s[i] && i < max; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (s[i]) {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
    return out;
}

int text_ll(const char *s, long long *out)
{
    char *end;
    if (!s)
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}
