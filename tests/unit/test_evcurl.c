/* Unit tests for common/evcurl against a tiny HTTP/1.1 server running in a
 * thread on a loopback port: concurrency, pause/unpause, cancel, connection
 * reuse, freeing with a transfer in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "evcurl.h"
#include "xalloc.h"

#define BIG (1 << 20)

struct server {
    int lfd;
    int port;
    int accepted; /* connections, read by the test after transfers finish */
    pthread_mutex_t mu;
    pthread_t th;
};

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void *conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char req[4096];
    size_t have = 0;
    char *big = xmalloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        big[i] = (char)('a' + i % 26);
    for (;;) {
        ssize_t r = recv(fd, req + have, sizeof(req) - 1 - have, 0);
        if (r <= 0)
            break;
        have += (size_t)r;
        req[have] = '\0';
        char *end = strstr(req, "\r\n\r\n");
        if (!end)
            continue;
        if (strncmp(req, "GET /hang", 9) == 0) {
            /* never answer; wait for the client to go away */
            while (recv(fd, req, sizeof(req), 0) > 0)
                ;
            break;
        }
        if (strncmp(req, "GET /big", 8) == 0) {
            char h[128];
            int n = snprintf(h, sizeof(h), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", BIG);
            send_all(fd, h, (size_t)n);
            send_all(fd, big, BIG);
        } else {
            const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
            send_all(fd, ok, strlen(ok));
        }
        size_t used = (size_t)(end + 4 - req);
        memmove(req, req + used, have - used);
        have -= used;
    }
    free(big);
    close(fd);
    return NULL;
}

static void *accept_main(void *arg)
{
    struct server *s = arg;
    for (;;) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        pthread_mutex_lock(&s->mu);
        s->accepted++;
        pthread_mutex_unlock(&s->mu);
        pthread_t t;
        pthread_create(&t, NULL, conn_main, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
}

static int setup(void **state)
{
    struct server *s = xcalloc(1, sizeof(*s));
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 64), 0);
    socklen_t l = sizeof(a);
    getsockname(s->lfd, (struct sockaddr *)&a, &l);
    s->port = ntohs(a.sin_port);
    pthread_mutex_init(&s->mu, NULL);
    pthread_create(&s->th, NULL, accept_main, s);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    struct server *s = *state;
    shutdown(s->lfd, SHUT_RDWR);
    close(s->lfd);
    pthread_join(s->th, NULL);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return 0;
}

struct xf {
    struct evcurl *ec;
    CURL *easy;
    size_t bytes;
    int done;
    CURLcode result;
    int pauses;
    int pause_every;
    ev_timer unpause;
    char body[16];
    struct server *srv;
    int chain; /* transfers still to start one after the other */
};

static size_t on_write(char *p, size_t sz, size_t nm, void *arg)
{
    struct xf *x = arg;
    size_t n = sz * nm;
    if (x->pause_every && !ev_is_active(&x->unpause) && (x->pauses++ % x->pause_every) == 0) {
        /* Pause now; a timer unpauses from outside libcurl. */
        ev_timer_set(&x->unpause, 0.001, 0.);
        ev_timer_start(EV_DEFAULT, &x->unpause);
        return CURL_WRITEFUNC_PAUSE;
    }
    if (x->bytes + n < sizeof(x->body))
        memcpy(x->body + x->bytes, p, n);
    x->bytes += n;
    return n;
}

static void on_unpause(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct xf *x = w->data;
    evcurl_unpause(x->ec, x->easy);
}

static CURL *make(struct xf *x, struct server *s, const char *path)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", s->port, path);
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    x->easy = e;
    ev_timer_init(&x->unpause, on_unpause, 0., 0.);
    x->unpause.data = x;
    return e;
}

static void on_done(CURL *easy, CURLcode result, void *arg)
{
    struct xf *x = arg;
    x->done++;
    x->result = result;
    curl_easy_cleanup(easy);
    x->easy = NULL;
}

/* A fresh evcurl on the default loop and one transfer record for it. */
static struct evcurl *fresh(struct xf *x, const struct evcurl_opts *o)
{
    struct err e;
    struct evcurl *ec = evcurl_new(EV_DEFAULT, o, &e);
    assert_non_null(ec);
    memset(x, 0, sizeof(*x));
    x->ec = ec;
    return ec;
}

static void add(struct xf *x, struct server *s, const char *path, evcurl_done_fn done)
{
    struct err e;
    assert_int_equal(evcurl_add(x->ec, make(x, s, path), done, x, &e), 0);
}

static void test_evcurl__concurrent_transfers(void **state)
{
    struct server *s = *state;
    struct ev_loop *loop = EV_DEFAULT;
    struct err e;
    struct evcurl_opts o = {16, 4};
    struct evcurl *ec = evcurl_new(loop, &o, &e);
    assert_non_null(ec);
    struct xf x[6];
    memset(x, 0, sizeof(x));
    for (int i = 0; i < 6; i++) {
        x[i].ec = ec;
        assert_int_equal(evcurl_add(ec, make(&x[i], s, "/small"), on_done, &x[i], &e), 0);
    }
    assert_int_equal(evcurl_active(ec), 6);
    ev_run(loop, 0);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(x[i].done, 1);
        assert_int_equal(x[i].result, CURLE_OK);
        assert_int_equal(x[i].bytes, 5);
        assert_memory_equal(x[i].body, "hello", 5);
    }
    assert_int_equal(evcurl_active(ec), 0);
    evcurl_free(ec);
    /* the per-host cap held: never more than 4 connections for 6 transfers */
    assert_true(s->accepted <= 4);
}

static void test_evcurl__pause_and_unpause(void **state)
{
    struct server *s = *state;
    struct xf x;
    struct evcurl *ec = fresh(&x, NULL);
    x.pause_every = 3;
    add(&x, s, "/big", on_done);
    ev_run(EV_DEFAULT, 0);
    assert_int_equal(x.done, 1);
    assert_int_equal(x.result, CURLE_OK);
    assert_int_equal(x.bytes, BIG);
    assert_true(x.pauses > 10);
    evcurl_free(ec);
}

static void on_cancel_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct xf *x = w->data;
    evcurl_cancel(x->ec, x->easy);
}

static void test_evcurl__cancel(void **state)
{
    struct server *s = *state;
    struct ev_loop *loop = EV_DEFAULT;
    struct xf x;
    struct evcurl *ec = fresh(&x, NULL);
    add(&x, s, "/hang", on_done);
    ev_timer t;
    ev_timer_init(&t, on_cancel_timer, 0.05, 0.);
    t.data = &x;
    ev_timer_start(loop, &t);
    ev_tstamp t0 = ev_time();
    ev_run(loop, 0);
    assert_int_equal(x.done, 1);
    assert_int_equal(x.result, CURLE_ABORTED_BY_CALLBACK);
    assert_true(ev_time() - t0 < 5.0);
    evcurl_free(ec);
}

static void chain_done(CURL *easy, CURLcode result, void *arg)
{
    struct xf *x = arg;
    on_done(easy, result, arg);
    if (--x->chain > 0) {
        /* Adding from a completion callback is allowed. */
        x->bytes = 0;
        struct err e;
        assert_int_equal(evcurl_add(x->ec, make(x, x->srv, "/small"), chain_done, x, &e), 0);
    }
}

static void test_evcurl__connection_reuse(void **state)
{
    struct server *s = *state;
    struct xf x;
    struct evcurl *ec = fresh(&x, NULL);
    x.srv = s;
    x.chain = 5;
    pthread_mutex_lock(&s->mu);
    int before = s->accepted;
    pthread_mutex_unlock(&s->mu);
    add(&x, s, "/small", chain_done);
    ev_run(EV_DEFAULT, 0);
    assert_int_equal(x.done, 5);
    assert_int_equal(x.result, CURLE_OK);
    pthread_mutex_lock(&s->mu);
    int used = s->accepted - before;
    pthread_mutex_unlock(&s->mu);
    assert_int_equal(used, 1);
    evcurl_free(ec);
}

static void test_evcurl__free_with_transfer_in_flight(void **state)
{
    struct server *s = *state;
    struct xf x;
    struct evcurl *ec = fresh(&x, NULL);
    add(&x, s, "/hang", on_done);
    CURL *easy = x.easy;
    ev_run(EV_DEFAULT, EVRUN_NOWAIT);
    ev_run(EV_DEFAULT, EVRUN_NOWAIT);
    evcurl_free(ec);
    /* no callback; the handle is ours again */
    assert_int_equal(x.done, 0);
    curl_easy_cleanup(easy);
    evcurl_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_evcurl__concurrent_transfers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evcurl__pause_and_unpause, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evcurl__cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evcurl__connection_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evcurl__free_with_transfer_in_flight, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
