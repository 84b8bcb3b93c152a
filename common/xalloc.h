/* xalloc: allocation that never returns NULL.
 *
 * Out of memory is not recoverable for hubsync's processes (redis and hiredis
 * make the same choice): x* functions log and abort, so callers need no NULL
 * checks. jansson and libcurl allocate through them too, so out of memory
 * has this one policy in the libraries' code as well. */
#ifndef HUBSYNC_XALLOC_H
#define HUBSYNC_XALLOC_H

#include <stdarg.h>
#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* printf into a new string; caller frees. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* jansson allocates through xmalloc from now on: call first in main. (libcurl
 * does from its global init, curl_global_init_mem in evcurl_new.) */
void xalloc_libraries(void);

#endif
