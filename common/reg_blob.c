/* reg_blob: see reg_blob.h.
 *
 * One copy runs these steps, each a reg_req (authentication and retries of
 * single requests come from reg_http):
 *   POST ?mount=&from=  (first attempt, when asked)  201 -> done
 *   POST uploads/                                   202 -> Location
 *   GET source blob  ||  PUT Location?digest=  (or PATCH..., then PUT)
 *   DELETE Location                                 (after a failure)
 * The GET and the upload run at the same time, joined by a ring buffer:
 * the GET's write callback fills it (pausing when full), the upload's read
 * callback drains it (pausing when empty), and each unpauses the other
 * through evcurl's deferred queue. The SHA-256 is finished in the write
 * callback that delivers byte number `size`, before that byte can reach
 * the read callback, so the upload never completes with unverified bytes:
 * on a mismatch, excess or truncation the read callback answers
 * CURL_READFUNC_ABORT.
 *
 * Connections are capped per host (max_host_conns), and a transfer waiting
 * for one is retried by libcurl 7.88 only when another transfer finishes.
 * So the upload starts once the GET's first bytes came: PUTs started with
 * their GETs held the target's connections paused while the GETs waited for
 * the source's, and with nothing else running nothing ever finished (a
 * sync at 2 connections per host). And a paused GET keeps its connection
 * while its PUT waits for one, so streams that took every connection of a
 * host would wait for each other (two copies within one registry at one
 * connection each): a stream starts only once its connections, one at each
 * end (two when both ends are one host:port), fit under max_host_conns
 * next to those of the streams running; the others wait in order. */
#include "reg_blob.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "reg_http.h"
#include "reg_parse.h"
#include "ref.h"

#define ERROR_BODY_MAX (64 << 10)

struct copy {
    struct reg_op base;
    struct reg_client *c;
    struct reg_registry *src, *dst;
    char *src_repo, *dst_repo, *digest, *mount_from;
    long long size;
    int mount_only;
    int src_fd;         /* reg_upload_blob: the file read instead of a source GET, else -1 */
    int attempt;        /* whole-copy attempts started */
    /* requests of the current attempt */
    struct reg_req *post, *dl, *up, *fin; /* fin: closing PUT or DELETE */
    char *location;     /* upload session URL */
    int dl_running, up_running, fin_running;
    int up_due;         /* the upload starts from up_timer (the GET's first bytes came) */
    int committed;
    long stream_need;   /* connections the stream holds or waits for; 0: none */
    int stream_waiting;
    struct reg_op *stream_next;
    /* the stream */
    char *ring;
    size_t cap, head, used;
    struct digest_ctx *sha;
    long long received, sent;
    long long req_start, req_end; /* byte range of the current upload request */
    int verified, dl_paused, up_paused;
    char computed[DIGEST_STR_SIZE];
    char range_hdr[80];
    /* the first failure of the attempt */
    int failed;
    enum reg_class fail_cls;
    long fail_status;
    long fail_retry_after; /* Retry-After of the failed answer, -1 if none */
    char fail_msg[REG_MSG_MAX];
    ev_timer retry, up_timer;
};

static void start_attempt(struct copy *cp);
static void maybe_finish(struct copy *cp);
static void start_upload(struct copy *cp);
static void stream_wake(struct reg_client *c);
static void start_stream(struct copy *cp);

static void copy_free(void *p)
{
    struct copy *cp = p;
    reg_http_free(cp->post);
    reg_http_free(cp->dl);
    reg_http_free(cp->up);
    reg_http_free(cp->fin);
    ev_timer_stop(cp->c->loop, &cp->retry);
    ev_timer_stop(cp->c->loop, &cp->up_timer);
    free(cp->src_repo);
    free(cp->dst_repo);
    free(cp->digest);
    free(cp->mount_from);
    free(cp->location);
    free(cp->ring);
    digest_free(cp->sha);
    free(cp);
}

/* Free a finished request, counting its attempts in the result. */
static void drop(struct copy *cp, struct reg_req **q)
{
    if (*q) {
        cp->base.res.attempts += (*q)->attempts;
        reg_http_free(*q);
        *q = NULL;
    }
}

static void fail(struct copy *cp, enum reg_class cls, long status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Record the attempt's first failure and make sure a paused upload wakes up
 * to abort. */
static void fail(struct copy *cp, enum reg_class cls, long status, const char *fmt, ...)
{
    if (cp->failed)
        return;
    cp->failed = 1;
    cp->fail_cls = cls;
    cp->fail_status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cp->fail_msg, sizeof(cp->fail_msg), fmt, ap);
    va_end(ap);
    if (cp->up_paused && cp->up && cp->up->easy) {
        cp->up_paused = 0;
        evcurl_unpause(cp->c->ec, cp->up->easy);
    }
}

static void fail_from(struct copy *cp, const struct reg_req *q)
{
    if (!cp->failed)
        cp->fail_retry_after = q->h.retry_after;
    fail(cp, q->cls, q->status, "%s", q->msg);
}

/* ---- download side ---- */

static size_t dl_write(char *p, size_t sz, size_t nm, void *arg)
{
    struct copy *cp = arg;
    size_t n = sz * nm;
    long status = 0;
    curl_easy_getinfo(cp->dl->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        /* An error document: keep a bounded excerpt for the message. */
        buf_append(&cp->dl->resp, p, n < ERROR_BODY_MAX - cp->dl->resp.len
                                         ? n
                                         : ERROR_BODY_MAX - cp->dl->resp.len);
        return n;
    }
    if (cp->failed)
        return 0;
    if (cp->received == 0 && cp->dl->h.content_length >= 0 &&
        cp->dl->h.content_length != cp->size) {
        fail(cp, REG_DIGEST_MISMATCH, status, "GET blob %s@%s at %s: %lld bytes announced, the "
             "descriptor says %lld", cp->src_repo, cp->digest, cp->src->url,
             cp->dl->h.content_length, cp->size);
        return 0;
    }
    if (n > cp->cap - cp->used) {
        /* Never take part of a chunk: libcurl delivers it again on unpause. */
        cp->dl_paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    if ((long long)n > cp->size - cp->received) {
        fail(cp, REG_DIGEST_MISMATCH, status, "GET blob %s@%s at %s: more than the %lld bytes "
             "of the descriptor", cp->src_repo, cp->digest, cp->src->url, cp->size);
        return 0;
    }
    size_t tail = (cp->head + cp->used) % cp->cap;
    size_t first = n < cp->cap - tail ? n : cp->cap - tail;
    memcpy(cp->ring + tail, p, first);
    memcpy(cp->ring, p + first, n - first);
    cp->used += n;
    digest_update(cp->sha, p, n);
    cp->received += (long long)n;
    if (cp->received == cp->size) {
        digest_final(cp->sha, cp->computed);
        if (strcmp(cp->computed, cp->digest) != 0) {
            fail(cp, REG_DIGEST_MISMATCH, status, "GET blob %s@%s at %s: the %lld bytes hash "
                 "to %s", cp->src_repo, cp->digest, cp->src->url, cp->size, cp->computed);
            return 0;
        }
        cp->verified = 1;
    }
    if (cp->received == (long long)n && !cp->up_running) {
        /* First bytes: only now may the upload take a target connection (not
         * from this callback: libcurl must not be re-entered). */
        cp->up_due = 1;
        ev_timer_set(&cp->up_timer, 0., 0.);
        ev_timer_start(cp->c->loop, &cp->up_timer);
    }
    if (cp->up_paused && cp->up && cp->up->easy) {
        cp->up_paused = 0;
        evcurl_unpause(cp->c->ec, cp->up->easy);
    }
    return n;
}

static void on_up_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct copy *cp = w->data;
    cp->up_due = 0;
    if (!cp->failed)
        start_upload(cp);
    maybe_finish(cp);
}

static void dl_setup(struct reg_req *q, CURL *easy, void *arg)
{
    (void)q;
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, dl_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, arg);
}

/* A GET may be re-sent only while none of its body was used. */
static int dl_may_retry(struct reg_req *q, void *arg)
{
    (void)q;
    struct copy *cp = arg;
    return cp->received == 0 && !cp->failed;
}

static void on_dl(struct reg_req *q, void *arg)
{
    struct copy *cp = arg;
    cp->dl_running = 0;
    cp->dl_paused = 0;
    if (q->cls != REG_OK) {
        fail_from(cp, q);
    } else if (cp->received < cp->size) {
        fail(cp, REG_NETWORK, q->status, "GET blob %s@%s at %s: body ended after %lld of %lld "
             "bytes", cp->src_repo, cp->digest, cp->src->url, cp->received, cp->size);
    } else if (cp->size == 0) {
        digest_final(cp->sha, cp->computed);
        if (strcmp(cp->computed, cp->digest) != 0)
            fail(cp, REG_DIGEST_MISMATCH, q->status, "GET blob %s@%s at %s: empty body hashes "
                 "to %s", cp->src_repo, cp->digest, cp->src->url, cp->computed);
        else
            cp->verified = 1;
    }
    /* A paused upload was woken by fail() and aborts from its read
     * callback; one waiting to retry or for a token is cancelled. */
    if (cp->failed && cp->up_running)
        reg_http_cancel(cp->up);
    /* An empty blob is uploaded only once it is known to be right. */
    if (!cp->failed && cp->size == 0 && !cp->up_running && !cp->committed)
        start_upload(cp);
    maybe_finish(cp);
}

/* ---- upload side ---- */

/* reg_upload_blob's source: the file, hashed as it is read; the chunk that
 * holds the last byte is released only once the whole file hashed right. */
static size_t file_read(struct copy *cp, char *p, size_t want)
{
    if ((long long)want > cp->req_end - cp->sent)
        want = (size_t)(cp->req_end - cp->sent);
    if (want == 0)
        return 0;
    ssize_t n = pread(cp->src_fd, p, want, (off_t)cp->sent);
    if (n <= 0) {
        fail(cp, REG_DIGEST_MISMATCH, 0, "upload blob %s@%s from file: %s after %lld of %lld "
             "bytes", cp->dst_repo, cp->digest, n < 0 ? strerror(errno) : "ended", cp->sent,
             cp->size);
        return CURL_READFUNC_ABORT;
    }
    digest_update(cp->sha, p, (size_t)n);
    cp->sent += n;
    if (cp->sent == cp->size) {
        digest_final(cp->sha, cp->computed);
        if (strcmp(cp->computed, cp->digest) != 0) {
            fail(cp, REG_DIGEST_MISMATCH, 0, "upload blob %s@%s from file: the %lld bytes hash "
                 "to %s", cp->dst_repo, cp->digest, cp->size, cp->computed);
            return CURL_READFUNC_ABORT;
        }
        cp->verified = 1;
    }
    return (size_t)n;
}

static size_t up_read(char *p, size_t sz, size_t nm, void *arg)
{
    struct copy *cp = arg;
    if (cp->failed)
        return CURL_READFUNC_ABORT;
    size_t want = sz * nm;
    if (cp->src_fd >= 0)
        return file_read(cp, p, want);
    size_t avail = cp->used;
    if ((long long)avail > cp->req_end - cp->sent)
        avail = (size_t)(cp->req_end - cp->sent);
    if (avail > want)
        avail = want;
    if (avail == 0) {
        if (cp->sent >= cp->req_end)
            return 0; /* this request's range is complete */
        if (!cp->dl_running && !cp->dl_paused)
            return CURL_READFUNC_ABORT; /* the source stopped short: never fake an EOF */
        cp->up_paused = 1;
        return CURL_READFUNC_PAUSE;
    }
    size_t first = avail < cp->cap - cp->head ? avail : cp->cap - cp->head;
    memcpy(p, cp->ring + cp->head, first);
    memcpy(p + first, cp->ring, avail - first);
    cp->head = (cp->head + avail) % cp->cap;
    cp->used -= avail;
    cp->sent += (long long)avail;
    /* Wake the GET once a quarter of the ring is free, not for every
     * chunk, to avoid pause/unpause ping-pong. */
    if (cp->dl_paused && cp->cap - cp->used >= cp->cap / 4 && cp->dl && cp->dl->easy) {
        cp->dl_paused = 0;
        evcurl_unpause(cp->c->ec, cp->dl->easy);
    }
    return avail;
}

static void up_setup(struct reg_req *q, CURL *easy, void *arg)
{
    (void)q;
    struct copy *cp = arg;
    curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)(cp->req_end - cp->req_start));
    curl_easy_setopt(easy, CURLOPT_READFUNCTION, up_read);
    curl_easy_setopt(easy, CURLOPT_READDATA, cp);
    long ub = (long)(cp->cap / 4);
    curl_easy_setopt(easy, CURLOPT_UPLOAD_BUFFERSIZE, ub > 2L << 20 ? 2L << 20 : ub);
}

static int up_may_retry(struct reg_req *q, void *arg)
{
    (void)q;
    struct copy *cp = arg;
    return cp->sent == cp->req_start && !cp->failed;
}

static char *with_query(const char *url, const char *param)
{
    return xasprintf("%s%c%s", url, strchr(url, '?') ? '&' : '?', param);
}

static void on_up(struct reg_req *q, void *arg);
static void on_fin(struct reg_req *q, void *arg);

/* A request that writes blob digest into repo of dst (url taken over). */
static struct reg_req *push_req(struct reg_registry *dst, const char *repo, const char *digest,
                                const char *method, char *url, const char *what, reg_req_fn done,
                                void *arg)
{
    char *scope = reg_http_scope(repo, "pull,push");
    char *w = xasprintf("%s %s@%s", what, repo, digest);
    struct reg_req *q = reg_http_new(dst, method, url, scope, w, done, arg);
    free(scope);
    free(w);
    q->max_body = ERROR_BODY_MAX;
    return q;
}

static struct reg_req *dst_req(struct copy *cp, const char *method, char *url, const char *what,
                               reg_req_fn done)
{
    return push_req(cp->dst, cp->dst_repo, cp->digest, method, url, what, done, cp);
}

static void start_upload(struct copy *cp)
{
    long long chunk = cp->c->o.chunk_bytes;
    int chunked = cp->c->o.chunk_threshold >= 0 && cp->size > cp->c->o.chunk_threshold;
    drop(cp, &cp->up);
    cp->req_start = cp->sent;
    if (chunked) {
        cp->req_end = cp->size - cp->sent > chunk ? cp->sent + chunk : cp->size;
        cp->up = dst_req(cp, "PATCH", xstrdup(cp->location), "PATCH blob upload", on_up);
        snprintf(cp->range_hdr, sizeof(cp->range_hdr), "Content-Range: %lld-%lld",
                 cp->req_start, cp->req_end - 1);
        cp->up->extra_header = cp->range_hdr;
        cp->up->ok_status[0] = 202;
    } else {
        cp->req_end = cp->size;
        char *d = xasprintf("digest=%s", cp->digest);
        cp->up = dst_req(cp, "PUT", with_query(cp->location, d), "PUT blob", on_up);
        free(d);
        cp->up->ok_status[0] = 201;
    }
    cp->up->content_type = "application/octet-stream";
    cp->up->stream = 1;
    cp->up->blob = 1;
    cp->up->setup = up_setup;
    cp->up->may_retry = up_may_retry;
    cp->up_running = 1;
    reg_http_start(cp->up);
}

/* Take the Location of a 201/202 as the session URL. */
static int take_location(struct copy *cp, struct reg_req *q)
{
    char *loc = NULL;
    struct err e;
    if (!q->h.location) {
        fail(cp, REG_PROTOCOL, q->status, "%s at %s: HTTP %ld without Location", q->what,
             cp->dst->url, q->status);
        return -1;
    }
    if (reg_parse_resolve_url(q->url, q->h.location, &loc, &e) != 0) {
        fail(cp, REG_PROTOCOL, q->status, "%s at %s: Location: %s", q->what, cp->dst->url,
             e.msg);
        return -1;
    }
    free(cp->location);
    cp->location = loc;
    return 0;
}

static void start_commit(struct copy *cp)
{
    char *d = xasprintf("digest=%s", cp->digest);
    drop(cp, &cp->fin);
    cp->fin = dst_req(cp, "PUT", with_query(cp->location, d), "PUT blob (close upload)", on_fin);
    free(d);
    cp->fin->has_body = 1;
    cp->fin->ok_status[0] = 201;
    cp->fin_running = 1;
    reg_http_start(cp->fin);
}

static void check_stored_digest(struct copy *cp, struct reg_req *q)
{
    if (q->h.digest[0] && strcmp(q->h.digest, cp->digest) != 0)
        fail(cp, REG_DIGEST_MISMATCH, q->status, "%s at %s: the registry stored %s", q->what,
             cp->dst->url, q->h.digest);
}

static void on_up(struct reg_req *q, void *arg)
{
    struct copy *cp = arg;
    cp->up_running = 0;
    cp->up_paused = 0;
    if (cp->failed) {
        /* Our own abort, or an answer after the attempt already failed. */
    } else if (q->cls != REG_OK) {
        fail_from(cp, q);
    } else if (q->ok_status[0] == 202) {
        if (cp->sent != cp->req_end) {
            fail(cp, REG_PROTOCOL, q->status, "%s at %s: chunk ended at %lld, expected %lld",
                 q->what, cp->dst->url, cp->sent, cp->req_end);
        } else if (take_location(cp, q) == 0) {
            if (cp->sent < cp->size)
                start_upload(cp);
            else
                start_commit(cp);
        }
    } else {
        check_stored_digest(cp, q);
        cp->committed = !cp->failed;
    }
    /* The target gave up: stop reading the source. */
    if (cp->failed && cp->dl_running && cp->dl)
        reg_http_cancel(cp->dl);
    maybe_finish(cp);
}

/* Closing PUT of a chunked upload, or the DELETE of a failed session. */
static void on_fin(struct reg_req *q, void *arg)
{
    struct copy *cp = arg;
    cp->fin_running = 0;
    if (strcmp(q->method, "DELETE") == 0) {
        free(cp->location);
        cp->location = NULL;
    } else if (q->cls != REG_OK) {
        fail_from(cp, q);
    } else {
        check_stored_digest(cp, q);
        cp->committed = !cp->failed;
    }
    maybe_finish(cp);
}

/* ---- attempts ---- */

static void begin_stream(struct copy *cp)
{
    if (cp->src_fd >= 0) {
        if (cp->size == 0) {
            digest_final(cp->sha, cp->computed);
            if (strcmp(cp->computed, cp->digest) != 0) {
                fail(cp, REG_DIGEST_MISMATCH, 0, "upload blob %s@%s from file: empty, which "
                     "hashes to %s", cp->dst_repo, cp->digest, cp->computed);
                return;
            }
        }
        start_upload(cp);
        return;
    }
    /* libcurl counts connections per host:port: one origin is one host. */
    cp->stream_need = reg_parse_same_origin(cp->src->url, cp->dst->url) ? 2 : 1;
    if (cp->stream_need > cp->c->o.max_host_conns) {
        fail(cp, REG_INVALID, 0, "copy blob %s@%s within %s: streaming it needs 2 connections "
             "to the host at once, and 1 connection per host is allowed", cp->src_repo,
             cp->digest, cp->dst->url);
        cp->stream_need = 0;
        return;
    }
    cp->stream_waiting = 1;
    cp->stream_next = NULL;
    if (cp->c->stream_wait_tail)
        ((struct copy *)cp->c->stream_wait_tail)->stream_next = &cp->base;
    else
        cp->c->stream_wait = &cp->base;
    cp->c->stream_wait_tail = &cp->base;
    stream_wake(cp->c);
}

/* Start the waiting streams, oldest first, while their connections fit. */
static void stream_wake(struct reg_client *c)
{
    while (c->stream_wait) {
        struct copy *cp = (struct copy *)c->stream_wait; /* base is its first member */
        if (c->stream_conns + cp->stream_need > c->o.max_host_conns)
            return;
        c->stream_wait = cp->stream_next;
        if (!c->stream_wait)
            c->stream_wait_tail = NULL;
        cp->stream_waiting = 0;
        c->stream_conns += cp->stream_need;
        start_stream(cp);
    }
}

/* The source GET of a copy; dl_write starts the upload with its first bytes. */
static void start_stream(struct copy *cp)
{
    char *url = reg_http_url(cp->src, cp->src_repo, "blobs", cp->digest);
    char *scope = reg_http_scope(cp->src_repo, "pull");
    char *what = xasprintf("GET blob %s@%s", cp->src_repo, cp->digest);
    drop(cp, &cp->dl);
    cp->dl = reg_http_new(cp->src, "GET", url, scope, what, on_dl, cp);
    free(scope);
    free(what);
    cp->dl->follow = 1;
    cp->dl->blob = 1;
    cp->dl->max_body = ERROR_BODY_MAX;
    cp->dl->setup = dl_setup;
    cp->dl->may_retry = dl_may_retry;
    cp->dl_running = 1;
    reg_http_start(cp->dl);
}

static void on_post(struct reg_req *q, void *arg)
{
    struct copy *cp = arg;
    if (q->cls != REG_OK) {
        fail_from(cp, q);
    } else if (q->status == 201) {
        /* Mounted: the registry already has the bytes under that digest. */
        check_stored_digest(cp, q);
        cp->committed = !cp->failed;
        cp->base.res.mounted = cp->committed;
    } else if (take_location(cp, q) == 0) {
        if (cp->mount_only)
            fail(cp, REG_NOT_FOUND, q->status, "%s at %s: not mounted (the registry opened an "
                 "upload instead)", q->what, cp->dst->url);
        else
            begin_stream(cp);
    }
    maybe_finish(cp);
}

static void start_attempt(struct copy *cp)
{
    cp->attempt++;
    cp->failed = 0;
    cp->fail_retry_after = -1;
    cp->committed = 0;
    cp->head = cp->used = 0;
    cp->received = cp->sent = 0;
    cp->verified = cp->dl_paused = cp->up_paused = 0;
    digest_reset(cp->sha);
    free(cp->location);
    cp->location = NULL;
    drop(cp, &cp->post);
    drop(cp, &cp->dl);
    drop(cp, &cp->up);
    drop(cp, &cp->fin);
    char *base = reg_http_url(cp->dst, cp->dst_repo, "blobs/uploads/", NULL);
    /* Mount only on the first attempt: a registry that answered 202 once
     * will not mount on a retry either. */
    if (cp->mount_from && cp->attempt == 1) {
        char *url = xasprintf("%s?mount=%s&from=%s", base, cp->digest, cp->mount_from);
        cp->post = dst_req(cp, "POST", url, "POST blob mount", on_post);
        char *scope = xasprintf("%s repository:%s:pull", cp->post->scope, cp->mount_from);
        free(cp->post->scope);
        cp->post->scope = scope;
        cp->post->ok_status[0] = 201;
        cp->post->ok_status[1] = 202;
    } else {
        cp->post = dst_req(cp, "POST", xstrdup(base), "POST blob upload", on_post);
        cp->post->ok_status[0] = 202;
    }
    free(base);
    cp->post->has_body = 1;
    reg_http_start(cp->post);
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    start_attempt(w->data);
}

static void maybe_finish(struct copy *cp)
{
    if (cp->dl_running || cp->up_running || cp->up_due || cp->fin_running || cp->stream_waiting)
        return;
    struct reg_client *c = cp->c;
    if (cp->stream_need) {
        c->stream_conns -= cp->stream_need;
        cp->stream_need = 0;
        stream_wake(c);
    }
    if (cp->failed && cp->location) {
        /* Drop the half-written session before deciding anything else. */
        drop(cp, &cp->fin);
        cp->fin = dst_req(cp, "DELETE", xstrdup(cp->location), "DELETE blob upload", on_fin);
        cp->fin->ok_status[0] = 204;
        cp->fin->ok_status[1] = 202;
        cp->fin->ok_status[2] = 200;
        cp->fin->ok_status[3] = 404;
        cp->fin_running = 1;
        reg_http_start(cp->fin);
        return;
    }
    struct reg_result *res = &cp->base.res;
    if (cp->failed && (cp->fail_cls == REG_NETWORK || cp->fail_cls == REG_SERVER) &&
        cp->attempt <= c->o.max_retries) {
        c->stats.retries++;
        double d = reg_http_backoff(c, cp->attempt, -1);
        log_info("blob=%s copy attempt %d failed, retry in %.2fs: %s", cp->digest, cp->attempt,
                 d, cp->fail_msg);
        ev_timer_set(&cp->retry, d, 0.);
        ev_timer_start(c->loop, &cp->retry);
        return;
    }
    if (cp->dl)
        res->rl = cp->dl->h.rl;
    if (cp->failed) {
        res->cls = cp->fail_cls;
        res->status = cp->fail_status;
        res->retry_after = cp->fail_retry_after;
        snprintf(res->msg, sizeof(res->msg), "%s", cp->fail_msg);
        res->digest = cp->computed[0] ? cp->computed : NULL;
        res->length = cp->received;
    } else {
        res->cls = REG_OK;
        res->status = cp->fin && cp->fin->status ? cp->fin->status
                      : cp->up && cp->up->status  ? cp->up->status
                                                  : cp->post->status;
        res->digest = cp->digest;
        res->length = cp->sent;
        c->stats.blob_bytes += (unsigned long long)cp->sent;
    }
    /* The result keeps no pointer into the requests. */
    drop(cp, &cp->post);
    drop(cp, &cp->dl);
    drop(cp, &cp->up);
    drop(cp, &cp->fin);
    reg_http_op_finish(&cp->base);
    copy_free(cp);
}

/* ---- entry points ---- */

static struct copy *copy_new(struct reg_registry *dst, reg_done_fn done, void *arg)
{
    struct copy *cp = xcalloc(1, sizeof(*cp));
    cp->fail_retry_after = -1;
    cp->src_fd = -1;
    cp->c = dst->c;
    cp->dst = dst;
    reg_http_op_init(&cp->base, cp->c, done, arg);
    ev_timer_init(&cp->retry, on_retry, 0., 0.);
    cp->retry.data = cp;
    ev_timer_init(&cp->up_timer, on_up_timer, 0., 0.);
    cp->up_timer.data = cp;
    cp->sha = digest_new();
    return cp;
}

/* Check the strings of a copy; fail it later if one is bad. */
static int copy_check(struct copy *cp)
{
    const char *bad = NULL;
    if (cp->src_repo && !ref_repo_valid(cp->src_repo))
        bad = "source repository name";
    else if (!ref_repo_valid(cp->dst_repo))
        bad = "target repository name";
    else if (!digest_valid(cp->digest))
        bad = "digest";
    else if (cp->mount_from && !ref_repo_valid(cp->mount_from))
        bad = "mount source repository name";
    else if (cp->size < 0)
        bad = "size";
    if (!bad)
        return 0;
    reg_http_op_fail_later(&cp->base, REG_INVALID, copy_free, cp,
                           "copy blob %.80s to %s/%.100s: invalid %s", cp->digest, cp->dst->url,
                           cp->dst_repo, bad);
    return -1;
}

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

void reg_copy_blob(const struct reg_blob_spec *spec, reg_done_fn done, void *arg)
{
    struct copy *cp = copy_new(spec->dst, done, arg);
    cp->src = spec->src;
    cp->mount_only = spec->src == NULL;
    cp->src_repo = dup_or_null(spec->src_repo);
    cp->dst_repo = dup_or_null(spec->dst_repo);
    cp->digest = dup_or_null(spec->digest);
    cp->mount_from = dup_or_null(spec->mount_from);
    cp->size = spec->size;
    if ((cp->mount_only && !cp->mount_from) || (!cp->mount_only && !cp->src_repo)) {
        reg_http_op_fail_later(&cp->base, REG_INVALID, copy_free, cp,
                               "copy blob to %s: needs a source or a mount source", spec->dst->url);
        return;
    }
    if (copy_check(cp) != 0)
        return;
    if (!cp->mount_only) {
        cp->cap = cp->c->o.ring_bytes;
        cp->ring = xmalloc(cp->cap);
    }
    start_attempt(cp);
}

void reg_upload_blob(struct reg_registry *dst, const char *repo, const char *digest,
                     long long size, int fd, const char *mount_from, reg_done_fn done, void *arg)
{
    struct copy *cp = copy_new(dst, done, arg);
    cp->src_fd = fd;
    cp->dst_repo = dup_or_null(repo);
    cp->digest = dup_or_null(digest);
    cp->mount_from = dup_or_null(mount_from);
    cp->size = size;
    if (copy_check(cp) != 0)
        return;
    if (fd < 0) {
        reg_http_op_fail_later(&cp->base, REG_INVALID, copy_free, cp,
                               "upload blob %s to %s: no file", cp->digest, dst->url);
        return;
    }
    start_attempt(cp);
}

void reg_mount_blob(struct reg_registry *dst, const char *repo, const char *digest,
                    const char *from, reg_done_fn done, void *arg)
{
    struct reg_blob_spec spec = {NULL, NULL, dst, repo, digest, 0, from};
    reg_copy_blob(&spec, done, arg);
}

/* ---- small blobs from memory ---- */

struct put {
    struct reg_op base;
    struct reg_registry *dst;
    char *repo;
    char *body;
    size_t len;
    char digest[DIGEST_STR_SIZE];
    struct reg_req *q;
};

static void put_free(void *p)
{
    struct put *pt = p;
    reg_http_free(pt->q);
    free(pt->repo);
    free(pt->body);
    free(pt);
}

static void put_finish(struct put *pt)
{
    reg_http_op_result(&pt->base, pt->q);
    if (pt->base.res.cls == REG_OK) {
        pt->base.res.digest = pt->digest;
        pt->base.res.length = (long long)pt->len;
    }
    reg_http_op_finish(&pt->base);
    put_free(pt);
}

static void on_put(struct reg_req *q, void *arg)
{
    struct put *pt = arg;
    if (q->cls == REG_OK && q->h.digest[0] && strcmp(q->h.digest, pt->digest) != 0)
        reg_http_fail(q, REG_DIGEST_MISMATCH, "the registry stored %s", q->h.digest);
    put_finish(pt);
}

static struct reg_req *put_req(struct put *pt, const char *method, char *url, const char *what,
                               reg_req_fn done)
{
    struct reg_req *q = push_req(pt->dst, pt->repo, pt->digest, method, url, what, done, pt);
    q->has_body = 1;
    return q;
}

static void on_put_post(struct reg_req *q, void *arg)
{
    struct put *pt = arg;
    char *loc = NULL;
    struct err e;
    if (q->cls == REG_OK && !q->h.location)
        reg_http_fail(q, REG_PROTOCOL, "HTTP %ld without Location", q->status);
    else if (q->cls == REG_OK && reg_parse_resolve_url(q->url, q->h.location, &loc, &e) != 0)
        reg_http_fail(q, REG_PROTOCOL, "Location: %s", e.msg);
    if (q->cls != REG_OK) {
        put_finish(pt);
        return;
    }
    char *d = xasprintf("digest=%s", pt->digest);
    struct reg_req *put = put_req(pt, "PUT", with_query(loc, d), "PUT blob", on_put);
    free(d);
    free(loc);
    put->content_type = "application/octet-stream";
    put->body = pt->body;
    put->body_len = pt->len;
    put->ok_status[0] = 201;
    reg_http_free(pt->q);
    pt->q = put;
    reg_http_start(put);
}

void reg_put_blob(struct reg_registry *dst, const char *repo, const void *body, size_t len,
                  reg_done_fn done, void *arg)
{
    struct put *pt = xcalloc(1, sizeof(*pt));
    reg_http_op_init(&pt->base, dst->c, done, arg);
    pt->dst = dst;
    pt->repo = dup_or_null(repo);
    if (!ref_repo_valid(repo) || !body || len > (size_t)REG_MANIFEST_MAX) {
        reg_http_op_fail_later(&pt->base, REG_INVALID, put_free, pt,
                               "PUT blob to %s/%.100s: invalid repository name or size",
                               dst->url, repo ? repo : "");
        return;
    }
    pt->body = xmalloc(len ? len : 1);
    memcpy(pt->body, body, len);
    pt->len = len;
    digest_of(body, len, pt->digest);
    pt->q = put_req(pt, "POST", reg_http_url(dst, repo, "blobs/uploads/", NULL),
                    "POST blob upload", on_put_post);
    pt->q->ok_status[0] = 202;
    reg_http_start(pt->q);
}

/* ---- blobs into files ---- */

struct fetch {
    struct reg_op base;
    struct reg_registry *src;
    char *repo, *digest;
    long long size, received;
    int fd;
    struct digest_ctx *sha;
    char computed[DIGEST_STR_SIZE];
    int failed;
    enum reg_class fail_cls;
    char fail_msg[REG_MSG_MAX];
    struct reg_req *q;
};

static void fetch_free(void *p)
{
    struct fetch *f = p;
    reg_http_free(f->q);
    free(f->repo);
    free(f->digest);
    digest_free(f->sha);
    free(f);
}

static void fetch_fail(struct fetch *f, enum reg_class cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fetch_fail(struct fetch *f, enum reg_class cls, const char *fmt, ...)
{
    if (f->failed)
        return;
    f->failed = 1;
    f->fail_cls = cls;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->fail_msg, sizeof(f->fail_msg), fmt, ap);
    va_end(ap);
}

static size_t fetch_write(char *p, size_t sz, size_t nm, void *arg)
{
    struct fetch *f = arg;
    size_t n = sz * nm;
    long status = 0;
    curl_easy_getinfo(f->q->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        buf_append(&f->q->resp, p, n < ERROR_BODY_MAX - f->q->resp.len
                                        ? n
                                        : ERROR_BODY_MAX - f->q->resp.len);
        return n;
    }
    if (f->failed)
        return 0;
    if ((long long)n > f->size - f->received) {
        fetch_fail(f, REG_DIGEST_MISMATCH, "GET blob %s@%s at %s: more than the %lld bytes of "
                   "the descriptor", f->repo, f->digest, f->src->url, f->size);
        return 0;
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(f->fd, p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fetch_fail(f, REG_INVALID, "GET blob %s@%s at %s: writing the file: %s", f->repo,
                       f->digest, f->src->url, strerror(errno));
            return 0;
        }
        off += (size_t)w;
    }
    digest_update(f->sha, p, n);
    f->received += (long long)n;
    return n;
}

static void fetch_setup(struct reg_req *q, CURL *easy, void *arg)
{
    (void)q;
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, fetch_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, arg);
}

/* A retry starts the file again: nothing of a failed answer is kept. */
static int fetch_may_retry(struct reg_req *q, void *arg)
{
    (void)q;
    struct fetch *f = arg;
    if (f->failed || ftruncate(f->fd, 0) != 0 || lseek(f->fd, 0, SEEK_SET) != 0)
        return 0;
    f->received = 0;
    digest_reset(f->sha);
    return 1;
}

static void on_fetch(struct reg_req *q, void *arg)
{
    struct fetch *f = arg;
    if (q->cls != REG_OK) {
        if (!f->failed)
            fetch_fail(f, q->cls, "%s", q->msg);
    } else if (!f->failed && f->received != f->size) {
        fetch_fail(f, REG_NETWORK, "GET blob %s@%s at %s: body ended after %lld of %lld bytes",
                   f->repo, f->digest, f->src->url, f->received, f->size);
    } else if (!f->failed) {
        digest_final(f->sha, f->computed);
        if (strcmp(f->computed, f->digest) != 0)
            fetch_fail(f, REG_DIGEST_MISMATCH, "GET blob %s@%s at %s: the %lld bytes hash to %s",
                       f->repo, f->digest, f->src->url, f->size, f->computed);
    }
    reg_http_op_result(&f->base, q);
    struct reg_result *res = &f->base.res;
    if (f->failed) {
        res->cls = f->fail_cls;
        snprintf(res->msg, sizeof(res->msg), "%s", f->fail_msg);
    } else {
        res->cls = REG_OK;
        res->msg[0] = '\0';
        res->digest = f->digest;
    }
    res->length = f->received;
    reg_http_op_finish(&f->base);
    fetch_free(f);
}

void reg_fetch_blob(struct reg_registry *src, const char *repo, const char *digest,
                    long long size, int fd, reg_done_fn done, void *arg)
{
    struct fetch *f = xcalloc(1, sizeof(*f));
    reg_http_op_init(&f->base, src->c, done, arg);
    f->src = src;
    f->repo = dup_or_null(repo);
    f->digest = dup_or_null(digest);
    f->size = size;
    f->fd = fd;
    f->sha = digest_new();
    if (!ref_repo_valid(repo) || !digest_valid(digest) || size < 0 || fd < 0) {
        reg_http_op_fail_later(&f->base, REG_INVALID, fetch_free, f,
                               "GET blob %.80s from %s/%.100s: invalid repository, digest, size "
                               "or file", digest ? digest : "", src->url, repo ? repo : "");
        return;
    }
    char *url = reg_http_url(src, repo, "blobs", digest);
    char *scope = reg_http_scope(repo, "pull");
    char *what = xasprintf("GET blob %s@%s", repo, digest);
    f->q = reg_http_new(src, "GET", url, scope, what, on_fetch, f);
    free(scope);
    free(what);
    f->q->follow = 1;
    f->q->blob = 1;
    f->q->max_body = ERROR_BODY_MAX;
    f->q->setup = fetch_setup;
    f->q->may_retry = fetch_may_retry;
    reg_http_start(f->q);
}
