/* err: one-line error messages that travel up the stack.
 *
 * A function that can fail takes a `struct err *` (may be NULL) and returns -1
 * through err_set(), which formats the message naming what and where. Callers
 * propagate the -1 unchanged and never overwrite a lower layer's message
 * unless they add context with err_prefix(). */
#ifndef HUBSYNC_ERR_H
#define HUBSYNC_ERR_H

#define ERR_MSG_MAX 512

struct err {
    char msg[ERR_MSG_MAX];
};

/* Set the message; returns -1 so `return err_set(e, ...)` reads naturally. */
int err_set(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Put "<context>: " in front of the current message; returns -1. */
int err_prefix(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
