/* evcurl: one libcurl multi handle driven by one libev loop.
 *
 * Owns the CURLM, its socket watchers (one ev_io per socket), the single
 * non-repeating curl timer and an ev_prepare that flushes deferred work.
 * Transfers are plain CURL easy handles prepared by the caller; evcurl
 * reports each completion once through the callback given to evcurl_add().
 *
 * libcurl must not be re-entered from its own callbacks (write, read, header
 * functions): from there, only evcurl_unpause() and evcurl_cancel() may be
 * called. They are queued and applied after curl_multi_socket_action()
 * returns, and again in the ev_prepare before the loop blocks.
 * evcurl_add() may be called from anywhere else, completion callbacks
 * included. Connections are reused across transfers through the multi
 * handle's cache, with per-host and total connection caps. */
#ifndef HUBSYNC_EVCURL_H
#define HUBSYNC_EVCURL_H

#include <curl/curl.h>
#include <ev.h>

#include "err.h"

struct evcurl;

struct evcurl_opts {
    long max_total_conns; /* CURLMOPT_MAX_TOTAL_CONNECTIONS; 0 = unlimited */
    long max_host_conns;  /* CURLMOPT_MAX_HOST_CONNECTIONS; 0 = unlimited */
};

/* Completion of one transfer. The easy handle is already removed from the
 * multi handle and belongs to the callback again (clean it up or reuse it).
 * `result` is CURLE_ABORTED_BY_CALLBACK for a transfer ended by
 * evcurl_cancel(). */
typedef void (*evcurl_done_fn)(CURL *easy, CURLcode result, void *arg);

/* Ignores SIGPIPE for the process (libcurl writes to sockets that peers may
 * have closed). Returns NULL with a message on failure; free with
 * evcurl_free() while the loop still exists. */
struct evcurl *evcurl_new(struct ev_loop *loop, const struct evcurl_opts *opts, struct err *e);

/* Start a transfer. Sets CURLOPT_PRIVATE (reserved for evcurl) and
 * CURLOPT_NOSIGNAL on easy. On success `done` runs exactly once, later, from
 * the loop. Returns -1 (easy untouched, no callback) on failure. */
int evcurl_add(struct evcurl *ec, CURL *easy, evcurl_done_fn done, void *arg, struct err *e);

/* Queue CURLPAUSE_CONT for a transfer that paused itself from its write or
 * read callback. Safe from inside curl callbacks. */
void evcurl_unpause(struct evcurl *ec, CURL *easy);

/* Queue the removal of a running transfer; its callback then runs with
 * CURLE_ABORTED_BY_CALLBACK, unless it completes first. Safe from inside curl
 * callbacks. */
void evcurl_cancel(struct evcurl *ec, CURL *easy);

/* Number of transfers added and not yet completed. */
int evcurl_active(const struct evcurl *ec);

/* Cleans up the multi handle (which may still call the socket callback, so
 * the loop must be alive). Transfers still running are removed from the multi
 * handle without their callbacks: their owners must not be waiting on them.
 * NULL is a no-op. */
void evcurl_free(struct evcurl *ec);

#endif
