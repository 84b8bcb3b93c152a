/* rconn: Redis connections from a redis:// URL, synchronous and on libev.
 *
 * A URL is redis://[[user]:password@]host[:port][/db] (default port 6379,
 * db 0; the password may be percent-encoded). The password is sent with AUTH
 * and never appears in logs or error messages: messages name the server as
 * "host:port/db".
 *
 * After every (re)connect a holder runs AUTH, SELECT and then a setup list
 * (struct rconn_setup, e.g. FUNCTION LOAD and XGROUP CREATE from rq), so a
 * Redis that restarted empty is usable again without the owner's help. The
 * steps run one after the other: a step may depend on the answer before it.
 *
 * struct rconn (synchronous, coordinator and tools) reconnects lazily on the
 * next command after an I/O error. struct rconn_async (worker) lives on a
 * libev loop: it reconnects with exponential backoff on an ev_timer, tells
 * its owner when it goes up or down, and gives every request a deadline
 * (hiredis 0.14 has none): a request unanswered past it drops the connection,
 * which answers every pending request with NULL. Blocking commands need a
 * holder of their own, since they hold up everything pipelined behind them. */
#ifndef HUBSYNC_RCONN_H
#define HUBSYNC_RCONN_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#include "err.h"

struct ev_loop;

struct rconn_url {
    char *host;
    int port;
    char *user;     /* NULL: AUTH with the password only */
    char *password; /* NULL: no AUTH */
    int db;
    char *where;    /* "host:port/db", for messages */
};

/* Parse url into u (owned, rconn_url_free). Errors never quote the password. */
int rconn_url_parse(struct rconn_url *u, const char *url, struct err *e);
void rconn_url_free(struct rconn_url *u);

/* Whether a step runs, from the answer to the step before it (NULL when that
 * one did not run). */
typedef int rconn_step_if(const redisReply *prev);

/* One setup command; an error reply starting with ok_error (e.g. "BUSYGROUP")
 * counts as success. */
struct rconn_step {
    int argc;
    char **argv;
    size_t *len;
    char *ok_error;         /* may be NULL */
    rconn_step_if *only_if; /* NULL: always runs */
};

/* Commands run in order after each connect; owned, rconn_setup_free. */
struct rconn_setup {
    struct rconn_step *steps;
    size_t n;
};

void rconn_setup_add(struct rconn_setup *s, int argc, const char *const *argv,
                     const size_t *len, const char *ok_error);
/* A step that runs only when only_if(answer to the step before) says so. */
void rconn_setup_add_if(struct rconn_setup *s, rconn_step_if *only_if, int argc,
                        const char *const *argv, const size_t *len, const char *ok_error);
void rconn_setup_free(struct rconn_setup *s);

struct rconn_opts {
    long connect_timeout_ms;
    long cmd_timeout_ms;  /* reply deadline of a non-blocking command */
    long backoff_min_ms;  /* async reconnect delay, doubled up to backoff_max_ms */
    long backoff_max_ms;
};

#define RCONN_OPTS_DEFAULT {2000, 10000, 100, 5000}

/* Synchronous holder. */
struct rconn {
    struct rconn_url url;
    struct rconn_opts opts;
    const struct rconn_setup *setup; /* borrowed, may be NULL */
    redisContext *c;                 /* NULL while disconnected */
};

/* Parse url and connect (AUTH, SELECT, setup). On -1 there is nothing to
 * close. setup is borrowed and must outlive rc. */
int rconn_open(struct rconn *rc, const char *url, const struct rconn_opts *opts,
               const struct rconn_setup *setup, struct err *e);
void rconn_close(struct rconn *rc);

/* Send one command, reconnecting first if needed. extra_ms lengthens the read
 * timeout (a blocking command's own wait). *out is the reply (possibly an
 * error reply); caller frees with freeReplyObject. On an I/O error -1 is
 * returned and the connection dropped; the next call reconnects. */
int rconn_command(struct rconn *rc, int argc, const char **argv, const size_t *len,
                  long long extra_ms, redisReply **out, struct err *e);

/* Run the setup list again on the open connection (after NOGROUP or a
 * missing function). */
int rconn_resetup(struct rconn *rc, struct err *e);

/* Asynchronous holder on a libev loop. */
struct rconn_async;

/* Told when the holder is up (setup done, commands accepted) or down. */
typedef void rconn_state_fn(struct rconn_async *ra, int up, void *arg);

/* A reply, valid during the call only. reply is NULL when the connection
 * failed, missed the deadline or was closed before answering; ra is NULL
 * when the holder itself was freed. privdata is the callback's to free. */
typedef void rconn_reply_fn(struct rconn_async *ra, redisReply *reply, void *privdata);

/* Create a holder and start connecting. on_state may be NULL. NULL with a
 * message if the URL is invalid. setup is borrowed and must outlive ra. */
struct rconn_async *rconn_async_new(struct ev_loop *loop, const char *url,
                                    const struct rconn_opts *opts,
                                    const struct rconn_setup *setup, rconn_state_fn *on_state,
                                    void *arg, struct err *e);

int rconn_async_is_up(const struct rconn_async *ra);
const char *rconn_async_where(const struct rconn_async *ra);

/* Queue a command. 0: fn will be called exactly once. -1 (fn never called,
 * privdata still the caller's): the holder is not up. extra_ms lengthens the
 * deadline for a blocking command. */
int rconn_async_command(struct rconn_async *ra, int argc, const char **argv, const size_t *len,
                        long long extra_ms, rconn_reply_fn *fn, void *privdata, struct err *e);

/* Told that a setup list run again ended (ra NULL: the holder was freed). */
typedef void rconn_done_fn(struct rconn_async *ra, void *arg);

/* Run the setup list again (after NOGROUP or a missing function); send what
 * needs it from done. 0: done is called exactly once, possibly before this
 * returns; a failed step is logged and the list goes on. -1: the holder is
 * not up; done is not called. */
int rconn_async_resetup(struct rconn_async *ra, rconn_done_fn *done, void *arg);

/* Close at once: pending requests are answered with NULL (and ra NULL).
 * Safe from inside any callback. NULL is a no-op. */
void rconn_async_free(struct rconn_async *ra);

#endif
