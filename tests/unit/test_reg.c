/* Unit tests for common/reg and common/reg_http without a registry:
 * grammar, URL normalisation, header parsing, backoff, retry policy, and
 * operations that complete without (or with a refused) connection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cmocka.h>

#include <curl/curl.h>

#include "reg.h"
#include "reg_blob.h"
#include "reg_http.h"

static void test_reg__grammar(void **state)
{
    (void)state;
    /* Repository names and tags: test_ref (ref_repo_valid, ref_tag_valid). */
    assert_true(reg_valid_ref("latest"));
    assert_true(reg_valid_ref("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    assert_false(reg_valid_ref("sha256:e3b0"));
    assert_string_equal(reg_class_name(REG_RATE_LIMITED), "rate_limited");
    assert_string_equal(reg_class_name(REG_DIGEST_MISMATCH), "digest_mismatch");
    assert_string_equal(reg_class_name(REG_TLS), "tls");
    assert_string_equal(reg_class_name((enum reg_class)99), "unknown");
}

static void test_reg__registry_urls(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct err e;
    struct reg_client *c = reg_client_new(loop, NULL, &e);
    assert_non_null(c);
    struct { const char *in, *want; } ok[] = {
        {"https://registry-1.docker.io", "https://registry-1.docker.io"},
        {"http://127.0.0.1:5000/", "http://127.0.0.1:5000"},
        {"http://127.0.0.1:5000/v2/", "http://127.0.0.1:5000"},
        {"https://mirror.example/dockerhub//", "https://mirror.example/dockerhub"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct reg_registry *r = reg_registry_new(c, ok[i].in, NULL, &e);
        assert_non_null(r);
        assert_string_equal(reg_registry_url(r), ok[i].want);
        reg_registry_free(r);
    }
    const char *bad[] = {"registry-1.docker.io", "ftp://x", "https://", "https:///x",
                         "https://u:p@host", "https://h/?q", "https://h/a b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_null(reg_registry_new(c, bad[i], NULL, &e));
    /* the refused URL with credentials is not echoed with them */
    assert_null(reg_registry_new(c, "https://user:hunter2@h", NULL, &e));
    assert_non_null(strstr(e.msg, "user info"));
    reg_client_free(c);
    ev_loop_destroy(loop);
}

static void feed(struct reg_hdrs *h, const char *line)
{
    reg_hdrs_line(h, line, strlen(line));
}

static void test_reg__headers(void **state)
{
    (void)state;
    struct reg_hdrs h;
    reg_hdrs_init(&h);
    feed(&h, "HTTP/1.1 307 Temporary Redirect\r\n");
    feed(&h, "Location: https://cdn/x\r\n");
    feed(&h, "RateLimit-Limit: 100;w=21600\r\n");
    /* a new status line forgets the redirect's headers */
    feed(&h, "HTTP/1.1 200 OK\r\n");
    assert_null(h.location);
    assert_int_equal(h.rl.has_limit, 0);
    feed(&h, "Content-Length: 1234\r\n");
    feed(&h, "docker-content-digest:  sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 \r\n");
    feed(&h, "Content-Type: application/vnd.oci.image.index.v1+json\r\n");
    feed(&h, "WWW-Authenticate: Bearer realm=\"a\"\r\n");
    feed(&h, "www-authenticate: Basic realm=\"b\"\r\n");
    feed(&h, "ratelimit-remaining: 7;w=21600\r\n");
    feed(&h, "Retry-After: 30\r\n");
    feed(&h, "Link: <x>; rel=\"next\"\r\n");
    feed(&h, "no colon here\r\n");
    assert_int_equal(h.content_length, 1234);
    assert_string_equal(h.digest, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_int_equal(h.bad_digest, 0);
    assert_string_equal(h.content_type, "application/vnd.oci.image.index.v1+json");
    assert_string_equal(h.www_auth.data, "Bearer realm=\"a\", Basic realm=\"b\"");
    assert_int_equal(h.rl.remaining, 7);
    assert_int_equal(h.retry_after, 30);
    assert_string_equal(h.link, "<x>; rel=\"next\"");
    feed(&h, "Docker-Content-Digest: md5:abc\r\n");
    assert_int_equal(h.bad_digest, 1);
    assert_string_equal(h.digest, "");
    feed(&h, "Content-Length: 12x\r\n");
    assert_int_equal(h.content_length, -1);
    reg_hdrs_free(&h);
}

static void test_reg__backoff_and_retry_policy(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct reg_client_opts o;
    reg_client_opts_default(&o);
    o.retry_base_ms = 100;
    o.retry_max_ms = 1000;
    struct err e;
    struct reg_client *c = reg_client_new(loop, &o, &e);
    assert_non_null(c);
    for (int i = 0; i < 200; i++) {
        double d1 = reg_http_backoff(c, 1, -1);
        assert_true(d1 >= 0.05 && d1 <= 0.1);
        double d3 = reg_http_backoff(c, 3, -1);
        assert_true(d3 >= 0.2 && d3 <= 0.4);
        double d9 = reg_http_backoff(c, 9, -1);
        assert_true(d9 >= 0.5 && d9 <= 1.0);
        /* Retry-After is honoured, up to the cap */
        assert_true(reg_http_backoff(c, 1, 0) <= 0.1);
        assert_true(reg_http_backoff(c, 1, 60) == 1.0);
    }
    /* two draws differ: there is jitter */
    int differ = 0;
    double first = reg_http_backoff(c, 5, -1);
    for (int i = 0; i < 20; i++)
        differ |= reg_http_backoff(c, 5, -1) != first;
    assert_true(differ);
    assert_true(reg_http_retryable(503, CURLE_OK));
    assert_true(reg_http_retryable(500, CURLE_OK));
    assert_true(reg_http_retryable(408, CURLE_OK));
    assert_true(reg_http_retryable(0, CURLE_RECV_ERROR));
    assert_true(reg_http_retryable(0, CURLE_COULDNT_CONNECT));
    assert_true(reg_http_retryable(0, CURLE_PARTIAL_FILE));
    assert_false(reg_http_retryable(501, CURLE_OK));
    assert_false(reg_http_retryable(429, CURLE_OK));
    assert_false(reg_http_retryable(404, CURLE_OK));
    assert_false(reg_http_retryable(200, CURLE_OK));
    assert_false(reg_http_retryable(0, CURLE_COULDNT_RESOLVE_HOST));
    /* A refused certificate is a setting to fix; other transfer errors may pass. */
    assert_int_equal(reg_http_curl_class(CURLE_PEER_FAILED_VERIFICATION), REG_TLS);
    assert_int_equal(reg_http_curl_class(CURLE_SSL_CACERT_BADFILE), REG_TLS);
    assert_int_equal(reg_http_curl_class(CURLE_COULDNT_CONNECT), REG_NETWORK);
    assert_int_equal(reg_http_curl_class(CURLE_COULDNT_RESOLVE_HOST), REG_NETWORK);
    assert_int_equal(reg_http_curl_class(CURLE_SSL_CONNECT_ERROR), REG_NETWORK);
    assert_false(reg_http_retryable(0, CURLE_PEER_FAILED_VERIFICATION));
    reg_client_free(c);
    ev_loop_destroy(loop);
}

struct seen {
    int calls;
    enum reg_class cls;
    int attempts;
    char msg[REG_MSG_MAX];
};

static void record(struct reg_result *res, void *arg)
{
    struct seen *s = arg;
    s->calls++;
    s->cls = res->cls;
    s->attempts = res->attempts;
    memcpy(s->msg, res->msg, sizeof(s->msg));
}

static void test_reg__invalid_arguments_complete_later(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct err e;
    struct reg_client *c = reg_client_new(loop, NULL, &e);
    struct reg_registry *r = reg_registry_new(c, "http://127.0.0.1:1", NULL, &e);
    struct seen s[7];
    memset(s, 0, sizeof(s));
    reg_head_manifest(r, "Bad/Repo", "latest", record, &s[0]);
    reg_get_manifest(r, "library/a", "not a tag", record, &s[1]);
    reg_head_blob(r, "library/a", "latest", record, &s[2]);
    reg_put_manifest(r, "library/a",
                     "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                     "application/vnd.oci.image.index.v1+json", "{}", 2, record, &s[3]);
    reg_put_manifest(r, "library/a", "v1", "bad\r\ntype", "{}", 2, record, &s[4]);
    struct reg_blob_spec sp = {r, "library/a", r, "library/b", "sha256:zz", 10, NULL};
    reg_copy_blob(&sp, record, &s[5]);
    reg_list_tags(r, "", 10, 100, record, &s[6]);
    /* never synchronously */
    for (int i = 0; i < 7; i++)
        assert_int_equal(s[i].calls, 0);
    assert_int_equal(reg_client_busy(c), 7);
    ev_run(loop, 0);
    for (int i = 0; i < 7; i++)
        assert_int_equal(s[i].calls, 1);
    assert_int_equal(s[0].cls, REG_INVALID);
    assert_non_null(strstr(s[0].msg, "Bad/Repo"));
    assert_int_equal(s[1].cls, REG_INVALID);
    assert_int_equal(s[2].cls, REG_INVALID);
    /* the bytes do not hash to the digest they are pushed under */
    assert_int_equal(s[3].cls, REG_DIGEST_MISMATCH);
    assert_int_equal(s[4].cls, REG_INVALID);
    assert_int_equal(s[5].cls, REG_INVALID);
    assert_int_equal(s[6].cls, REG_INVALID);
    assert_int_equal(reg_client_stats(c)->requests, 0);
    assert_int_equal(reg_client_busy(c), 0);
    reg_registry_free(r);
    reg_client_free(c);
    ev_loop_destroy(loop);
}

/* A port with nothing listening: bind, read the port, close. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t l = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

/* A client on a loop of its own, retrying quickly, and a registry where nothing listens. */
struct dead_end {
    struct ev_loop *loop;
    struct reg_client *c;
    struct reg_registry *r;
    char url[64];
};

static void dead_end_open(struct dead_end *d, int max_retries)
{
    struct reg_client_opts o;
    struct err e;
    reg_client_opts_default(&o);
    o.max_retries = max_retries;
    o.retry_base_ms = 10;
    o.retry_max_ms = 20;
    d->loop = ev_loop_new(EVFLAG_AUTO);
    d->c = reg_client_new(d->loop, &o, &e);
    assert_non_null(d->c);
    snprintf(d->url, sizeof(d->url), "http://127.0.0.1:%d", dead_port());
    d->r = reg_registry_new(d->c, d->url, NULL, &e);
    assert_non_null(d->r);
}

static void dead_end_close(struct dead_end *d)
{
    reg_registry_free(d->r);
    reg_client_free(d->c);
    ev_loop_destroy(d->loop);
}

static void test_reg__refused_connection_retried_and_bounded(void **state)
{
    (void)state;
    struct dead_end d;
    dead_end_open(&d, 2);
    struct seen s = {0};
    reg_head_manifest(d.r, "library/a", "latest", record, &s);
    ev_run(d.loop, 0);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.cls, REG_NETWORK);
    assert_int_equal(s.attempts, 3);
    assert_non_null(strstr(s.msg, "HEAD manifest library/a:latest"));
    assert_non_null(strstr(s.msg, d.url));
    assert_int_equal(reg_client_stats(d.c)->retries, 2);
    assert_int_equal(reg_client_stats(d.c)->manifest_heads, 3);
    dead_end_close(&d);
}

/* libcurl allocates through these (main installs them before any client
 * exists, so the clients' own init leaves them): libc's, except that copying
 * a line starting with fail_dup_prefix fails as it would out of memory. */
static const char *fail_dup_prefix;

static void *t_malloc(size_t n)
{
    return malloc(n);
}

static void t_free(void *p)
{
    free(p);
}

static void *t_realloc(void *p, size_t n)
{
    return realloc(p, n);
}

static char *t_strdup(const char *s)
{
    if (fail_dup_prefix && strncmp(s, fail_dup_prefix, strlen(fail_dup_prefix)) == 0)
        return NULL;
    return strdup(s);
}

static void *t_calloc(size_t n, size_t size)
{
    return calloc(n, size);
}

/* libcurl cannot build a request's header list: the request fails saying so and
 * sends nothing (it went out without its Accept line before), and the lines
 * appended so far are freed (they leaked: LSan in the ASan build). */
static void test_reg__headers_libcurl_cannot_build(void **state)
{
    (void)state;
    struct dead_end d;
    dead_end_open(&d, 0);
    struct seen s = {0};
    fail_dup_prefix = "Accept:";
    reg_head_manifest(d.r, "library/a", "latest", record, &s);
    ev_run(d.loop, 0);
    fail_dup_prefix = NULL;
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.cls, REG_NETWORK);
    assert_non_null(strstr(s.msg, "cannot build the request's headers"));
    assert_int_equal(reg_client_stats(d.c)->requests, 0);
    dead_end_close(&d);
}

/* A listener that notes where each connection comes from and closes it. */
struct peer_watch {
    ev_io io;
    int fd;
    int accepted;
    char from[INET_ADDRSTRLEN];
};

static void peer_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct peer_watch *p = w->data;
    struct sockaddr_in a;
    socklen_t l = sizeof(a);
    int fd = accept(p->fd, (struct sockaddr *)&a, &l);
    if (fd < 0)
        return;
    p->accepted++;
    inet_ntop(AF_INET, &a.sin_addr, p->from, sizeof(p->from));
    close(fd);
}

static void test_reg__connection_caps(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct reg_client_opts o;
    struct err e;
    reg_client_opts_default(&o);
    /* libcurl would hold every host to a smaller total without a word. */
    o.max_host_conns = 65;
    assert_null(reg_client_new(loop, &o, &e));
    assert_non_null(strstr(e.msg, "max_host_conns 65"));
    assert_non_null(strstr(e.msg, "max_total_conns 64"));
    o.max_host_conns = 0;
    assert_null(reg_client_new(loop, &o, &e));
    assert_non_null(strstr(e.msg, "max_host_conns 0"));
    o.max_host_conns = 64;
    struct reg_client *c = reg_client_new(loop, &o, &e);
    assert_non_null(c);
    reg_client_free(c);
    ev_loop_destroy(loop);
}

static void test_reg__source_address(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct reg_client_opts o;
    struct err e;
    reg_client_opts_default(&o);
    /* Names would be resolved by libcurl, blocking the loop: numeric addresses only. */
    const char *bad[] = {"localhost", "eth0", "127.0.0", "127.0.0.1:80", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o.source_address = bad[i];
        assert_null(reg_client_new(loop, &o, &e));
        assert_non_null(strstr(e.msg, "not a numeric IPv4 or IPv6 address"));
    }
    struct peer_watch p = {.fd = socket(AF_INET, SOCK_STREAM, 0)};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(p.fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(p.fd, 8), 0);
    socklen_t l = sizeof(a);
    getsockname(p.fd, (struct sockaddr *)&a, &l);
    ev_io_init(&p.io, peer_accept, p.fd, EV_READ);
    p.io.data = &p;
    ev_io_start(loop, &p.io);
    o.source_address = "127.0.0.3"; /* any 127/8 address is this machine's own */
    o.max_retries = 0;
    struct reg_client *c = reg_client_new(loop, &o, &e);
    assert_non_null(c);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(a.sin_port));
    struct reg_registry *r = reg_registry_new(c, url, NULL, &e);
    struct seen s = {0};
    reg_head_manifest(r, "library/a", "latest", record, &s);
    while (!s.calls)
        ev_run(loop, EVRUN_ONCE);
    assert_int_equal(p.accepted, 1);
    assert_string_equal(p.from, "127.0.0.3");
    assert_int_equal(s.cls, REG_NETWORK); /* closed without an answer */
    ev_io_stop(loop, &p.io);
    close(p.fd);
    reg_registry_free(r);
    reg_client_free(c);
    ev_loop_destroy(loop);
}

int main(void)
{
    if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, t_malloc, t_free, t_realloc, t_strdup,
                             t_calloc) != CURLE_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reg__grammar),
        cmocka_unit_test(test_reg__registry_urls),
        cmocka_unit_test(test_reg__headers),
        cmocka_unit_test(test_reg__backoff_and_retry_policy),
        cmocka_unit_test(test_reg__invalid_arguments_complete_later),
        cmocka_unit_test(test_reg__refused_connection_retried_and_bounded),
        cmocka_unit_test(test_reg__headers_libcurl_cannot_build),
        cmocka_unit_test(test_reg__connection_caps),
        cmocka_unit_test(test_reg__source_address),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
