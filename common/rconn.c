/* rconn: see rconn.h. */
#include "rconn.h"

#include <ev.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "log.h"
#include "xalloc.h"

/* ---- URL ---------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n) into a new string; NULL if an escape is malformed
 * or decodes to NUL. */
static char *pct_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
        int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || hi * 16 + lo == 0) {
            free(out);
            return NULL;
        }
        out[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    return out;
}

/* Digits only, value within lo..hi. */
static int parse_num(const char *s, size_t n, long lo, long hi, long *out)
{
    long v = 0;
    if (n == 0 || n > 9)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_userinfo(struct rconn_url *u, const char *p, size_t n, struct err *e)
{
    const char *colon = memchr(p, ':', n);
    if (!colon)
        return err_set(e, "redis URL: credentials must be written [user]:password@");
    if (colon > p) {
        u->user = pct_decode(p, (size_t)(colon - p));
        if (!u->user)
            return err_set(e, "redis URL: bad percent-encoding in the user name");
    }
    size_t plen = n - (size_t)(colon + 1 - p);
    if (plen > 0) {
        u->password = pct_decode(colon + 1, plen);
        if (!u->password)
            return err_set(e, "redis URL: bad percent-encoding in the password");
    }
    return 0;
}

static int parse_url(struct rconn_url *u, const char *url, struct err *e)
{
    if (strncmp(url, "rediss://", 9) == 0)
        return err_set(e, "redis URL: rediss:// (TLS) is not supported");
    if (strncmp(url, "redis://", 8) != 0)
        return err_set(e, "redis URL: must start with redis://");
    const char *p = url + 8;
    /* The last '@' ends the credentials: a password may hold '/' or '@'. */
    const char *at = strrchr(p, '@');
    if (at) {
        if (parse_userinfo(u, p, (size_t)(at - p), e) < 0)
            return -1;
        p = at + 1;
    }
    const char *host_end;
    if (*p == '[') {
        host_end = strchr(p, ']');
        if (!host_end)
            return err_set(e, "redis URL: unterminated [IPv6] host");
        u->host = xstrndup(p + 1, (size_t)(host_end - p - 1));
        host_end++;
    } else {
        host_end = p + strcspn(p, ":/");
        u->host = xstrndup(p, (size_t)(host_end - p));
    }
    if (u->host[0] == '\0')
        return err_set(e, "redis URL: no host");
    p = host_end;
    long v;
    if (*p == ':') {
        size_t n = strcspn(p + 1, "/");
        if (parse_num(p + 1, n, 1, 65535, &v) < 0)
            return err_set(e, "redis URL: port '%.*s' is not within 1..65535", (int)n, p + 1);
        u->port = (int)v;
        p += 1 + n;
    }
    if (*p == '/' && p[1] != '\0') {
        if (parse_num(p + 1, strlen(p + 1), 0, 65535, &v) < 0)
            return err_set(e, "redis URL: database '%s' is not a number within 0..65535", p + 1);
        u->db = (int)v;
    } else if (*p != '\0' && strcmp(p, "/") != 0) {
        return err_set(e, "redis URL: unexpected text after the host");
    }
    return 0;
}

int rconn_url_parse(struct rconn_url *u, const char *url, struct err *e)
{
    memset(u, 0, sizeof(*u));
    u->port = 6379;
    if (parse_url(u, url, e) < 0) {
        rconn_url_free(u);
        return -1;
    }
    u->where = xasprintf(strchr(u->host, ':') ? "[%s]:%d/%d" : "%s:%d/%d", u->host, u->port,
                         u->db);
    return 0;
}

void rconn_url_free(struct rconn_url *u)
{
    free(u->host);
    free(u->user);
    if (u->password)
        memset(u->password, 0, strlen(u->password));
    free(u->password);
    free(u->where);
    memset(u, 0, sizeof(*u));
}

/* ---- setup lists -------------------------------------------------------- */

void rconn_setup_add(struct rconn_setup *s, int argc, const char *const *argv,
                     const size_t *len, const char *ok_error)
{
    rconn_setup_add_if(s, NULL, argc, argv, len, ok_error);
}

void rconn_setup_add_if(struct rconn_setup *s, rconn_step_if *only_if, int argc,
                        const char *const *argv, const size_t *len, const char *ok_error)
{
    s->steps = xrealloc(s->steps, (s->n + 1) * sizeof(*s->steps));
    struct rconn_step *st = &s->steps[s->n++];
    st->only_if = only_if;
    st->argc = argc;
    st->argv = xcalloc((size_t)argc, sizeof(char *));
    st->len = xcalloc((size_t)argc, sizeof(size_t));
    for (int i = 0; i < argc; i++) {
        st->len[i] = len ? len[i] : strlen(argv[i]);
        st->argv[i] = xmalloc(st->len[i] + 1);
        memcpy(st->argv[i], argv[i], st->len[i]);
        st->argv[i][st->len[i]] = '\0';
    }
    st->ok_error = ok_error ? xstrdup(ok_error) : NULL;
}

void rconn_setup_free(struct rconn_setup *s)
{
    for (size_t i = 0; i < s->n; i++) {
        struct rconn_step *st = &s->steps[i];
        for (int k = 0; k < st->argc; k++) {
            memset(st->argv[k], 0, st->len[k]); /* AUTH steps hold the password */
            free(st->argv[k]);
        }
        free(st->argv);
        free(st->len);
        free(st->ok_error);
    }
    free(s->steps);
    s->steps = NULL;
    s->n = 0;
}

/* AUTH and SELECT as the URL asks, then the owner's setup list, then (for
 * the async holder, whose last answer marks it up) a PING. */
static void build_steps(struct rconn_setup *out, const struct rconn_url *u,
                        const struct rconn_setup *setup, int ping)
{
    memset(out, 0, sizeof(*out));
    if (u->password) {
        const char *argv[3] = {"AUTH", u->user, u->password};
        if (u->user)
            rconn_setup_add(out, 3, argv, NULL, NULL);
        else {
            argv[1] = u->password;
            rconn_setup_add(out, 2, argv, NULL, NULL);
        }
    }
    if (u->db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", u->db);
        const char *argv[2] = {"SELECT", db};
        rconn_setup_add(out, 2, argv, NULL, NULL);
    }
    for (size_t i = 0; setup && i < setup->n; i++)
        rconn_setup_add_if(out, setup->steps[i].only_if, setup->steps[i].argc,
                           (const char *const *)setup->steps[i].argv, setup->steps[i].len,
                           setup->steps[i].ok_error);
    if (ping) {
        const char *argv[1] = {"PING"};
        rconn_setup_add(out, 1, argv, NULL, NULL);
    }
}

static int step_error_ok(const struct rconn_step *st, const char *msg)
{
    return st->ok_error && strncmp(msg, st->ok_error, strlen(st->ok_error)) == 0;
}

/* ---- synchronous -------------------------------------------------------- */

static struct timeval tv_ms(long long ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

/* Run one step; only the command name ever reaches a message. */
static int run_step(struct rconn *rc, const struct rconn_step *st, redisReply **out,
                    struct err *e)
{
    *out = redisCommandArgv(rc->c, st->argc, (const char **)st->argv, st->len);
    if (!*out)
        return err_set(e, "redis %s: %s: %s", rc->url.where, st->argv[0], rc->c->errstr);
    if ((*out)->type == REDIS_REPLY_ERROR && !step_error_ok(st, (*out)->str))
        return err_set(e, "redis %s: %s failed: %s", rc->url.where, st->argv[0], (*out)->str);
    return 0;
}

/* Run the steps in order, each that its only_if allows. */
static int run_steps(struct rconn *rc, const struct rconn_setup *steps, struct err *e)
{
    int ret = 0;
    redisReply *prev = NULL;
    for (size_t i = 0; steps && i < steps->n && ret == 0; i++) {
        const struct rconn_step *st = &steps->steps[i];
        redisReply *r = NULL;
        if (!st->only_if || st->only_if(prev))
            ret = run_step(rc, st, &r, e);
        freeReplyObject(prev);
        prev = r;
    }
    freeReplyObject(prev);
    return ret;
}

static void sync_drop(struct rconn *rc)
{
    if (rc->c)
        redisFree(rc->c);
    rc->c = NULL;
}

static int sync_connect(struct rconn *rc, struct err *e)
{
    int ret = -1;
    struct rconn_setup steps;
    build_steps(&steps, &rc->url, rc->setup, 0);
    rc->c = redisConnectWithTimeout(rc->url.host, rc->url.port,
                                    tv_ms(rc->opts.connect_timeout_ms));
    if (!rc->c) {
        err_set(e, "redis %s: connect: out of memory", rc->url.where);
        goto out;
    }
    if (rc->c->err) {
        err_set(e, "redis %s: connect: %s", rc->url.where, rc->c->errstr);
        goto out;
    }
    if (redisSetTimeout(rc->c, tv_ms(rc->opts.cmd_timeout_ms)) != REDIS_OK ||
        redisEnableKeepAlive(rc->c) != REDIS_OK) {
        err_set(e, "redis %s: socket options: %s", rc->url.where, rc->c->errstr);
        goto out;
    }
    if (run_steps(rc, &steps, e) < 0)
        goto out;
    ret = 0;
out:
    if (ret < 0)
        sync_drop(rc);
    rconn_setup_free(&steps);
    return ret;
}

int rconn_open(struct rconn *rc, const char *url, const struct rconn_opts *opts,
               const struct rconn_setup *setup, struct err *e)
{
    static const struct rconn_opts defaults = RCONN_OPTS_DEFAULT;
    memset(rc, 0, sizeof(*rc));
    if (rconn_url_parse(&rc->url, url, e) < 0)
        return -1;
    rc->opts = opts ? *opts : defaults;
    rc->setup = setup;
    if (sync_connect(rc, e) < 0) {
        rconn_close(rc);
        return -1;
    }
    return 0;
}

void rconn_close(struct rconn *rc)
{
    sync_drop(rc);
    rconn_url_free(&rc->url);
}

int rconn_command(struct rconn *rc, int argc, const char **argv, const size_t *len,
                  long long extra_ms, redisReply **out, struct err *e)
{
    *out = NULL;
    if (!rc->c && sync_connect(rc, e) < 0)
        return -1;
    if (extra_ms > 0 &&
        redisSetTimeout(rc->c, tv_ms(rc->opts.cmd_timeout_ms + extra_ms)) != REDIS_OK)
        goto io_error;
    *out = redisCommandArgv(rc->c, argc, argv, len);
    if (!*out)
        goto io_error;
    if (extra_ms > 0 && redisSetTimeout(rc->c, tv_ms(rc->opts.cmd_timeout_ms)) != REDIS_OK)
        goto io_error;
    return 0;
io_error:
    /* A context that failed once cannot be reused (hiredis): reconnect next time. */
    err_set(e, "redis %s: %s: %s", rc->url.where, argv[0], rc->c->errstr);
    freeReplyObject(*out);
    *out = NULL;
    sync_drop(rc);
    return -1;
}

int rconn_resetup(struct rconn *rc, struct err *e)
{
    if (!rc->c)
        return sync_connect(rc, e);
    if (run_steps(rc, rc->setup, e) < 0) {
        if (rc->c->err)
            sync_drop(rc);
        return -1;
    }
    return 0;
}

/* ---- asynchronous ------------------------------------------------------- */

enum ra_state { RA_DOWN, RA_CONNECTING, RA_UP };

/* One request in flight, in send order (Redis answers in order). */
struct req {
    struct req *prev, *next;
    struct rconn_async *ra; /* NULL once the holder is freed */
    rconn_reply_fn *fn;
    void *privdata;
    ev_tstamp deadline;
};

struct rconn_async {
    struct ev_loop *loop;
    struct rconn_url url;
    struct rconn_opts opts;
    const struct rconn_setup *setup;   /* borrowed */
    struct rconn_setup connect_steps;  /* AUTH, SELECT, setup, PING */
    rconn_state_fn *on_state;
    void *arg;
    redisAsyncContext *ac;             /* NULL while down */
    enum ra_state state;
    int announced;                     /* owner was told "up" and not yet "down" */
    long backoff_ms;
    ev_timer retry;                    /* reconnect backoff */
    ev_timer deadline;                 /* oldest request's deadline */
    struct req *head, *tail;
};

static void connect_now(struct rconn_async *ra);

static void unlink_req(struct rconn_async *ra, struct req *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        ra->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        ra->tail = q->prev;
    q->prev = q->next = NULL;
}

static void arm_deadline(struct rconn_async *ra)
{
    ev_timer_stop(ra->loop, &ra->deadline);
    if (!ra->head || !ra->ac)
        return;
    ev_tstamp in = ra->head->deadline - ev_now(ra->loop);
    ev_timer_set(&ra->deadline, in > 0 ? in : 0., 0.);
    ev_timer_start(ra->loop, &ra->deadline);
}

static void schedule_retry(struct rconn_async *ra)
{
    ev_timer_stop(ra->loop, &ra->retry);
    ev_timer_set(&ra->retry, (ev_tstamp)ra->backoff_ms / 1000., 0.);
    ev_timer_start(ra->loop, &ra->retry);
    ra->backoff_ms = ra->backoff_ms * 2 > ra->opts.backoff_max_ms ? ra->opts.backoff_max_ms
                                                                  : ra->backoff_ms * 2;
}

/* The connection is gone (ac already detached): mark down, plan the
 * reconnect and tell the owner. The owner may free ra in on_state, so this
 * is the last thing a caller does with ra. */
static void went_down(struct rconn_async *ra)
{
    ra->state = RA_DOWN;
    ra->ac = NULL;
    schedule_retry(ra);
    if (ra->announced) {
        ra->announced = 0;
        if (ra->on_state)
            ra->on_state(ra, 0, ra->arg);
    }
}

/* Close the connection ourselves (deadline passed, setup failed). */
static void drop(struct rconn_async *ra, const char *why)
{
    redisAsyncContext *ac = ra->ac;
    log_warn("redis %s: %s; reconnecting", ra->url.where, why);
    ac->data = NULL;
    went_down(ra);
    redisAsyncFree(ac); /* answers pending requests with NULL */
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct req *q = privdata;
    struct rconn_async *ra = q->ra;
    if (ra) {
        unlink_req(ra, q);
        /* A NULL reply means this connection is dying: refuse new commands
         * until hiredis reports the disconnect. */
        if (!reply && ac == ra->ac)
            ra->state = RA_DOWN;
        arm_deadline(ra);
    }
    q->fn(ra, reply, q->privdata);
    free(q);
}

static int send_req(struct rconn_async *ra, int argc, const char **argv, const size_t *len,
                    long long timeout_ms, rconn_reply_fn *fn, void *privdata)
{
    struct req *q = xcalloc(1, sizeof(*q));
    q->ra = ra;
    q->fn = fn;
    q->privdata = privdata;
    q->deadline = ev_now(ra->loop) + (ev_tstamp)timeout_ms / 1000.;
    if (redisAsyncCommandArgv(ra->ac, on_reply, q, argc, argv, len) != REDIS_OK) {
        free(q);
        return -1;
    }
    q->prev = ra->tail;
    if (ra->tail)
        ra->tail->next = q;
    else
        ra->head = q;
    ra->tail = q;
    if (ra->head == q)
        arm_deadline(ra);
    return 0;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rconn_async *ra = ac->data;
    if (!ra || status == REDIS_OK)
        return;
    /* hiredis frees ac after this returns. */
    log_warn("redis %s: connect failed: %s", ra->url.where, ac->errstr);
    went_down(ra);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rconn_async *ra = ac->data;
    if (!ra)
        return;
    log_warn("redis %s: connection lost: %s", ra->url.where,
             status == REDIS_OK ? "closed" : ac->errstr);
    went_down(ra);
}

/* A setup list running on ra, one step after the other. */
struct stepper {
    const struct rconn_setup *steps;
    size_t next;
    int connect;         /* the connection's own setup: its end brings ra up */
    rconn_done_fn *done; /* a resetup's */
    void *arg;
};

static void went_up(struct rconn_async *ra)
{
    ra->state = RA_UP;
    ra->backoff_ms = ra->opts.backoff_min_ms;
    ra->announced = 1;
    log_info("redis %s: connected", ra->url.where);
    if (ra->on_state)
        ra->on_state(ra, 1, ra->arg);
}

/* The list ended (ok: every step ran or was skipped). */
static void stepper_end(struct rconn_async *ra, struct stepper *sp, int ok)
{
    int connect = sp->connect;
    rconn_done_fn *done = sp->done;
    void *arg = sp->arg;
    free(sp);
    if (!connect)
        done(ra, arg);
    else if (ok)
        went_up(ra);
}

static void stepper_reply(struct rconn_async *ra, redisReply *r, void *privdata);

/* Send the next step that may run, after the answer prev to the one before. */
static void stepper_send(struct rconn_async *ra, struct stepper *sp, const redisReply *prev)
{
    /* Commands queue until the socket connects, so the connect time counts
     * toward the connection's setup answers. */
    long long timeout = ra->opts.cmd_timeout_ms + (sp->connect ? ra->opts.connect_timeout_ms : 0);
    while (sp->next < sp->steps->n) {
        const struct rconn_step *st = &sp->steps->steps[sp->next++];
        if (st->only_if && !st->only_if(prev)) {
            prev = NULL;
            continue;
        }
        if (send_req(ra, st->argc, (const char **)st->argv, st->len, timeout, stepper_reply, sp) ==
            0)
            return;
        if (sp->connect) {
            free(sp);
            drop(ra, "cannot queue connection setup");
        } else {
            stepper_end(ra, sp, 0);
        }
        return;
    }
    stepper_end(ra, sp, 1);
}

static void stepper_reply(struct rconn_async *ra, redisReply *r, void *privdata)
{
    struct stepper *sp = privdata;
    /* Without ra the steps may be gone with it. */
    if (!ra || !r || (sp->connect && ra->state != RA_CONNECTING)) {
        if (sp->connect)
            free(sp); /* the connection went down, which says so */
        else
            stepper_end(ra, sp, 0);
        return;
    }
    const struct rconn_step *st = &sp->steps->steps[sp->next - 1];
    if (r->type == REDIS_REPLY_ERROR && !step_error_ok(st, r->str)) {
        log_warn("redis %s: %s failed: %s", ra->url.where, st->argv[0], r->str);
        if (sp->connect) {
            free(sp);
            drop(ra, "connection setup failed");
            return;
        }
    }
    stepper_send(ra, sp, r);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    connect_now(w->data);
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct rconn_async *ra = w->data;
    if (ra->ac && ra->head && ra->head->deadline <= ev_now(loop) + 0.001) {
        drop(ra, "no answer before the deadline");
        return;
    }
    arm_deadline(ra);
}

static void connect_now(struct rconn_async *ra)
{
    redisAsyncContext *ac = redisAsyncConnect(ra->url.host, ra->url.port);
    if (!ac || ac->err) {
        log_warn("redis %s: connect failed: %s", ra->url.where, ac ? ac->errstr : "no memory");
        if (ac)
            redisAsyncFree(ac);
        schedule_retry(ra);
        return;
    }
    ac->data = ra;
    redisLibevAttach(ra->loop, ac);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    ra->ac = ac;
    ra->state = RA_CONNECTING;
    struct stepper *sp = xcalloc(1, sizeof(*sp));
    sp->steps = &ra->connect_steps;
    sp->connect = 1;
    stepper_send(ra, sp, NULL);
}

struct rconn_async *rconn_async_new(struct ev_loop *loop, const char *url,
                                    const struct rconn_opts *opts,
                                    const struct rconn_setup *setup, rconn_state_fn *on_state,
                                    void *arg, struct err *e)
{
    static const struct rconn_opts defaults = RCONN_OPTS_DEFAULT;
    struct rconn_async *ra = xcalloc(1, sizeof(*ra));
    if (rconn_url_parse(&ra->url, url, e) < 0) {
        free(ra);
        return NULL;
    }
    ra->loop = loop;
    ra->opts = opts ? *opts : defaults;
    ra->setup = setup;
    ra->on_state = on_state;
    ra->arg = arg;
    ra->backoff_ms = ra->opts.backoff_min_ms;
    build_steps(&ra->connect_steps, &ra->url, setup, 1);
    ev_timer_init(&ra->retry, retry_cb, 0., 0.);
    ra->retry.data = ra;
    ev_timer_init(&ra->deadline, deadline_cb, 0., 0.);
    ra->deadline.data = ra;
    connect_now(ra);
    return ra;
}

int rconn_async_is_up(const struct rconn_async *ra)
{
    return ra && ra->state == RA_UP;
}

const char *rconn_async_where(const struct rconn_async *ra)
{
    return ra ? ra->url.where : "(closed)";
}

int rconn_async_command(struct rconn_async *ra, int argc, const char **argv, const size_t *len,
                        long long extra_ms, rconn_reply_fn *fn, void *privdata, struct err *e)
{
    if (!rconn_async_is_up(ra))
        return err_set(e, "redis %s: not connected", rconn_async_where(ra));
    if (send_req(ra, argc, argv, len, ra->opts.cmd_timeout_ms + extra_ms, fn, privdata) < 0)
        return err_set(e, "redis %s: cannot queue %s", ra->url.where, argv[0]);
    return 0;
}

int rconn_async_resetup(struct rconn_async *ra, rconn_done_fn *done, void *arg)
{
    static const struct rconn_setup none = {NULL, 0};
    if (!rconn_async_is_up(ra))
        return -1;
    struct stepper *sp = xcalloc(1, sizeof(*sp));
    sp->steps = ra->setup ? ra->setup : &none;
    sp->done = done;
    sp->arg = arg;
    stepper_send(ra, sp, NULL);
    return 0;
}

void rconn_async_free(struct rconn_async *ra)
{
    if (!ra)
        return;
    ev_timer_stop(ra->loop, &ra->retry);
    ev_timer_stop(ra->loop, &ra->deadline);
    for (struct req *q = ra->head; q; q = q->next)
        q->ra = NULL;
    redisAsyncContext *ac = ra->ac;
    rconn_setup_free(&ra->connect_steps);
    rconn_url_free(&ra->url);
    free(ra);
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac); /* answers pending requests with NULL (and ra NULL) */
    }
}
