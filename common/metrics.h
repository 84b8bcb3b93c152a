/* metrics: a Prometheus endpoint (--metrics-listen) and the text it serves.
 *
 * libmicrohttpd answers GET /metrics on a thread of its own with the last
 * exposition text the program published; the program builds that text on
 * its own thread (the worker's loop, the coordinator's poll) from its own
 * state, so the server's thread never reads the program's state, only the
 * published copy, under the server's lock. Label values are written by the
 * program from names it knows (repositories, sources, states), never from
 * URLs or credentials. */
#ifndef HUBSYNC_METRICS_H
#define HUBSYNC_METRICS_H

#include "buf.h"
#include "err.h"

/* Bound on one exposition text. */
#define METRICS_TEXT_MAX (4u << 20)

struct metrics_server;

/* Listen on addr, "HOST:PORT" (an IPv4 address or a name resolving to one;
 * ":PORT" or "0.0.0.0:PORT": every interface). Until the first publish
 * /metrics answers an empty text. -1 with a message naming addr. */
int metrics_server_start(struct metrics_server **out, const char *addr, struct err *e);
/* The port listened on (useful with port 0). */
int metrics_server_port(const struct metrics_server *s);
/* Serve text (copied) from now on. */
void metrics_server_publish(struct metrics_server *s, const char *text, size_t len);
/* Stop serving and free; NULL is a no-op. */
void metrics_server_stop(struct metrics_server *s);

/* ---- the exposition text ---- */

/* A metric family's HELP and TYPE lines: type "counter", "gauge" or
 * "histogram". */
void metrics_family(struct buf *b, const char *name, const char *type, const char *help);
/* One sample: name{label="value"} v, or name v when label is NULL. The value
 * is escaped as the format asks (\\, \", \n). */
void metrics_sample(struct buf *b, const char *name, const char *label, const char *value,
                    double v);

/* A histogram of durations in seconds with fixed bounds. */
#define METRICS_NBUCKETS 10
struct metrics_hist {
    long long counts[METRICS_NBUCKETS]; /* observations <= metrics_bounds[i] (not cumulative) */
    long long n;
    double sum;
};
extern const double metrics_bounds[METRICS_NBUCKETS];
void metrics_hist_observe(struct metrics_hist *h, double seconds);
/* The _bucket (cumulative, with +Inf), _sum and _count samples of name. */
void metrics_hist_write(struct buf *b, const char *name, const struct metrics_hist *h);

#endif
