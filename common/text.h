/* text: two small rules every module shares.
 *
 * text_shown is how a value from outside (a job field, a reference, a header)
 * appears in a message: printable ASCII as it is, spaces included (messages
 * quote values), every other byte as '?', at most max bytes and then "...",
 * so no input can break a log line or drive a terminal.
 * text_ll reads a whole decimal integer (strtoll's leading blanks and sign
 * allowed, nothing after it, no overflow), where atoll would take "12abc" as
 * 12 and "x" as 0. */
#ifndef HUBSYNC_TEXT_H
#define HUBSYNC_TEXT_H

#include <stddef.h>

/* Bytes text_shown needs for at most max bytes of input. */
#define TEXT_SHOWN_SIZE(max) ((max) + 4)

/* s as shown in a message, written to out (TEXT_SHOWN_SIZE(max) bytes);
 * returns out. */
const char *text_shown(const char *s, size_t max, char *out);

/* 0 and *out set when s (may be NULL) is a whole integer in range, else -1
 * (*out untouched). */
int text_ll(const char *s, long long *out);

#endif
