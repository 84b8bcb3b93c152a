/* evcurl: see evcurl.h. The rules come from libcurl 7.88's multi_socket
 * documentation and the libev manual: one ev_io per socket (stop + set +
 * start on every change), one non-repeating ev_timer set to ms / 1000.0 and
 * never a libcurl call from inside the timer callback, completions drained
 * with curl_multi_info_read after each socket_action, unpauses and removals
 * deferred until libcurl is not on the stack. */
#include "evcurl.h"

#include <signal.h>
#include <stdlib.h>

#include "log.h"
#include "xalloc.h"

/* One transfer: found again through CURLINFO_PRIVATE. */
struct xfer {
    CURL *easy;
    evcurl_done_fn done;
    void *arg;
    struct xfer *prev, *next;   /* all running transfers */
    struct xfer *dnext;         /* deferred-work queue */
    int queued;                 /* on the deferred queue */
    int want_unpause, want_cancel;
};

/* One socket libcurl asked us to watch. */
struct sock {
    ev_io io;
    struct evcurl *ec;
};

struct evcurl {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;
    ev_prepare prepare;
    struct xfer *xfers;
    struct xfer *dhead, *dtail;
    int held; /* the loop is held alive for queued work */
    int active;
};

static void after_action(struct evcurl *ec);
static void hold(struct evcurl *ec, int on);

static void fatal_multi(const char *what, CURLMcode rc)
{
    /* After a failing socket_action the state of every transfer is
     * unknown (curl_multi_socket_action(3)); the process must restart and
     * let the queue hand its jobs to someone else. */
    log_error("libcurl %s failed: %s", what, curl_multi_strerror(rc));
    abort();
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct sock *s = (struct sock *)w;
    struct evcurl *ec = s->ec;
    int flags = 0;
    if (revents & EV_READ)
        flags |= CURL_CSELECT_IN;
    if (revents & EV_WRITE)
        flags |= CURL_CSELECT_OUT;
    if (revents & EV_ERROR)
        flags |= CURL_CSELECT_ERR;
    int running;
    CURLMcode rc = curl_multi_socket_action(ec->multi, w->fd, flags, &running);
    if (rc != CURLM_OK)
        fatal_multi("socket_action", rc);
    after_action(ec);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct evcurl *ec = w->data;
    int running;
    CURLMcode rc = curl_multi_socket_action(ec->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    if (rc != CURLM_OK)
        fatal_multi("socket_action(timeout)", rc);
    after_action(ec);
}

static int sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy; /* may be an internal handle: never used to find a transfer */
    struct evcurl *ec = userp;
    struct sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            ev_io_stop(ec->loop, &s->io);
            curl_multi_assign(ec->multi, fd, NULL);
            free(s);
        }
        return 0;
    }
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= EV_READ;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= EV_WRITE;
    if (!s) {
        s = xcalloc(1, sizeof(*s));
        s->ec = ec;
        ev_io_init(&s->io, on_io, fd, events);
        curl_multi_assign(ec->multi, fd, s);
    } else {
        /* libev assumes the fd is unchanged unless told: always re-set. */
        ev_io_stop(ec->loop, &s->io);
        ev_io_set(&s->io, fd, events);
    }
    ev_io_start(ec->loop, &s->io);
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct evcurl *ec = userp;
    ev_timer_stop(ec->loop, &ec->timer);
    if (timeout_ms >= 0) {
        /* 0 runs on the next loop iteration, which is what libcurl wants. */
        ev_timer_set(&ec->timer, (double)timeout_ms / 1000.0, 0.);
        ev_timer_start(ec->loop, &ec->timer);
    }
    return 0;
}

static void unqueue(struct evcurl *ec, struct xfer *x)
{
    if (!x->queued)
        return;
    struct xfer **pp = &ec->dhead, *prev = NULL;
    while (*pp && *pp != x) {
        prev = *pp;
        pp = &(*pp)->dnext;
    }
    if (*pp) {
        *pp = x->dnext;
        if (ec->dtail == x)
            ec->dtail = prev;
    }
    x->dnext = NULL;
    x->queued = 0;
    if (!ec->dhead)
        hold(ec, 0);
}

static void unlink_xfer(struct evcurl *ec, struct xfer *x)
{
    unqueue(ec, x);
    if (x->prev)
        x->prev->next = x->next;
    else
        ec->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    ec->active--;
}

/* Remove a finished (or cancelled) transfer and hand it back. */
static void finish(struct evcurl *ec, struct xfer *x, CURLcode result)
{
    CURLMcode rc = curl_multi_remove_handle(ec->multi, x->easy);
    if (rc != CURLM_OK)
        log_warn("libcurl remove_handle: %s", curl_multi_strerror(rc));
    unlink_xfer(ec, x);
    CURL *easy = x->easy;
    evcurl_done_fn done = x->done;
    void *arg = x->arg;
    free(x);
    done(easy, result, arg);
}

static void drain(struct evcurl *ec)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(ec->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        /* Copy before removal: the message does not survive it. */
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        struct xfer *x = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        if (x)
            finish(ec, x, result);
    }
}

/* Queued work must keep ev_run() iterating until the prepare watcher (not
 * counted as active otherwise) has flushed it: an unpause queued from a
 * timer may be the only thing left to do. */
static void hold(struct evcurl *ec, int on)
{
    if (on && !ec->held)
        ev_ref(ec->loop);
    else if (!on && ec->held)
        ev_unref(ec->loop);
    ec->held = on;
}

static void flush(struct evcurl *ec)
{
    /* Pop one at a time: an unpause may replay data into a write callback
     * that queues more work. */
    struct xfer *x;
    while ((x = ec->dhead)) {
        ec->dhead = x->dnext;
        if (!ec->dhead)
            ec->dtail = NULL;
        x->dnext = NULL;
        x->queued = 0;
        if (x->want_cancel) {
            x->want_cancel = x->want_unpause = 0;
            finish(ec, x, CURLE_ABORTED_BY_CALLBACK);
            continue;
        }
        if (x->want_unpause) {
            x->want_unpause = 0;
            CURLcode rc = curl_easy_pause(x->easy, CURLPAUSE_CONT);
            if (rc != CURLE_OK)
                log_warn("libcurl unpause: %s", curl_easy_strerror(rc));
        }
    }
    hold(ec, 0);
}

static void after_action(struct evcurl *ec)
{
    drain(ec);
    flush(ec);
    /* An unpause can complete a transfer on the spot. */
    drain(ec);
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    struct evcurl *ec = w->data;
    if (ec->dhead)
        after_action(ec);
}

static void enqueue(struct evcurl *ec, struct xfer *x)
{
    if (x->queued)
        return;
    x->queued = 1;
    x->dnext = NULL;
    if (ec->dtail)
        ec->dtail->dnext = x;
    else
        ec->dhead = x;
    ec->dtail = x;
    hold(ec, 1);
}

static struct xfer *xfer_of(CURL *easy)
{
    struct xfer *x = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
    return x;
}

void evcurl_unpause(struct evcurl *ec, CURL *easy)
{
    struct xfer *x = xfer_of(easy);
    if (x) {
        x->want_unpause = 1;
        enqueue(ec, x);
    }
}

void evcurl_cancel(struct evcurl *ec, CURL *easy)
{
    struct xfer *x = xfer_of(easy);
    if (x) {
        x->want_cancel = 1;
        enqueue(ec, x);
    }
}

int evcurl_active(const struct evcurl *ec)
{
    return ec->active;
}

struct evcurl *evcurl_new(struct ev_loop *loop, const struct evcurl_opts *opts, struct err *e)
{
    /* A peer closing a connection must not kill the process (ev(3), "The
     * special problem of SIGPIPE"). */
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        err_set(e, "cannot ignore SIGPIPE");
        return NULL;
    }
    /* Only the first init sets the allocator; later ones count references. */
    CURLcode gc = curl_global_init_mem(CURL_GLOBAL_DEFAULT, xmalloc, free, xrealloc, xstrdup,
                                       xcalloc);
    if (gc != CURLE_OK) {
        err_set(e, "libcurl init: %s", curl_easy_strerror(gc));
        return NULL;
    }
    struct evcurl *ec = xcalloc(1, sizeof(*ec));
    ec->loop = loop;
    ec->multi = curl_multi_init();
    if (!ec->multi) {
        free(ec);
        curl_global_cleanup();
        err_set(e, "libcurl: cannot create a multi handle");
        return NULL;
    }
    curl_multi_setopt(ec->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(ec->multi, CURLMOPT_SOCKETDATA, ec);
    curl_multi_setopt(ec->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(ec->multi, CURLMOPT_TIMERDATA, ec);
    curl_multi_setopt(ec->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    if (opts) {
        curl_multi_setopt(ec->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, opts->max_total_conns);
        curl_multi_setopt(ec->multi, CURLMOPT_MAX_HOST_CONNECTIONS, opts->max_host_conns);
    }
    ev_timer_init(&ec->timer, on_timer, 0., 0.);
    ec->timer.data = ec;
    ev_prepare_init(&ec->prepare, on_prepare);
    ec->prepare.data = ec;
    ev_prepare_start(loop, &ec->prepare);
    /* The prepare watcher alone must not keep ev_run() going. */
    ev_unref(loop);
    return ec;
}

int evcurl_add(struct evcurl *ec, CURL *easy, evcurl_done_fn done, void *arg, struct err *e)
{
    struct xfer *x = xcalloc(1, sizeof(*x));
    x->easy = easy;
    x->done = done;
    x->arg = arg;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, (char *)x);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    CURLMcode rc = curl_multi_add_handle(ec->multi, easy);
    if (rc != CURLM_OK) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, (char *)NULL);
        free(x);
        return err_set(e, "libcurl add_handle: %s", curl_multi_strerror(rc));
    }
    x->next = ec->xfers;
    if (ec->xfers)
        ec->xfers->prev = x;
    ec->xfers = x;
    ec->active++;
    return 0;
}

void evcurl_free(struct evcurl *ec)
{
    if (!ec)
        return;
    struct xfer *x;
    while ((x = ec->xfers)) {
        curl_multi_remove_handle(ec->multi, x->easy);
        curl_easy_setopt(x->easy, CURLOPT_PRIVATE, (char *)NULL);
        unlink_xfer(ec, x);
        free(x);
    }
    hold(ec, 0);
    /* May call sock_cb with CURL_POLL_REMOVE for cached connections. */
    curl_multi_cleanup(ec->multi);
    ev_timer_stop(ec->loop, &ec->timer);
    ev_ref(ec->loop);
    ev_prepare_stop(ec->loop, &ec->prepare);
    free(ec);
    curl_global_cleanup();
}
