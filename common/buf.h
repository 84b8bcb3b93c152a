/* buf: a bounded growable byte buffer.
 *
 * Everything filled from the network goes through struct buf, whose hard
 * maximum turns an oversized answer into an error instead of a huge
 * allocation. Growth allocates with xalloc (no NULL to check). */
#ifndef HUBSYNC_BUF_H
#define HUBSYNC_BUF_H

#include <stddef.h>

/* A byte buffer, always NUL-terminated, that refuses to grow past max. */
struct buf {
    char *data;   /* NULL until the first append */
    size_t len;
    size_t cap;
    size_t max;   /* hard limit on len */
};

#define BUF_INIT(maxlen) {NULL, 0, 0, (maxlen)}

void buf_init(struct buf *b, size_t max);
/* Append n bytes; -1 (and nothing appended) if len would pass max. */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_reset(struct buf *b);
/* Hand the contents to the caller (who frees them) and reset b. Never NULL. */
char *buf_steal(struct buf *b);
void buf_free(struct buf *b);

#endif
