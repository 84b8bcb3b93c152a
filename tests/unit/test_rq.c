/* Tests for common/rq and common/rconn against a real redis-server.
 *
 * The group setup starts Debian's redis-server on a free loopback port in a
 * temporary directory (no persistence); each test works under its own key
 * prefix. Tests that restart Redis start a server of their own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ev.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rq.h"
#include "xalloc.h"

/* ---- a redis-server of the test's own ----------------------------------- */

struct server {
    pid_t pid;
    int port;
    int aof;
    const char *password; /* requirepass, or NULL */
    char dir[64];
    char url[64];
};

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void server_start(struct server *s)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", s->port);
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        char log[128];
        snprintf(log, sizeof(log), "%s/redis.log", s->dir);
        if (!freopen(log, "a", stdout) || !freopen("/dev/null", "r", stdin))
            _exit(127);
        dup2(1, 2);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save",
               "", "--appendonly", s->aof ? "yes" : "no", "--appendfsync", "always", "--dir",
               s->dir, "--requirepass", s->password ? s->password : "", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 400; i++) {
        redisContext *c = redisConnect("127.0.0.1", s->port);
        if (c && !c->err) {
            /* With a password, the NOAUTH error answer shows it is up. */
            redisReply *r = redisCommand(c, "PING");
            int ok = r && (r->type == REDIS_REPLY_STATUS || s->password);
            freeReplyObject(r);
            redisFree(c);
            if (ok)
                return;
        } else if (c) {
            redisFree(c);
        }
        sleep_ms(25);
    }
    fail_msg("redis-server did not start on port %d", s->port);
}

static void server_new_auth(struct server *s, int aof, const char *password)
{
    memset(s, 0, sizeof(*s));
    s->aof = aof;
    s->password = password;
    strcpy(s->dir, "/tmp/hubsync-test-rq-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    s->port = free_port();
    snprintf(s->url, sizeof(s->url), "redis://127.0.0.1:%d", s->port);
    server_start(s);
}

static void server_new(struct server *s, int aof)
{
    server_new_auth(s, aof, NULL);
}

static void server_stop(struct server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
    }
    s->pid = 0;
}

static void server_destroy(struct server *s)
{
    server_stop(s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
    assert_int_equal(system(cmd), 0);
}

/* Restart s with its data gone (a Redis that came back empty). */
static void server_restart_empty(struct server *s)
{
    server_stop(s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'/appendonlydir", s->dir);
    assert_int_equal(system(cmd), 0);
    server_start(s);
}

/* A server of a test's own, with the default key prefix. */
struct own {
    struct server s;
    struct rq q;
    struct rconn_setup setup;
};

static void own_new(struct own *o, int aof)
{
    struct err e;
    server_new(&o->s, aof);
    assert_int_equal(rq_init(&o->q, NULL, &e), 0);
    rq_setup(&o->q, &o->setup);
}

static void own_free(struct own *o)
{
    rconn_setup_free(&o->setup);
    rq_free(&o->q);
    server_destroy(&o->s);
}

/* ---- per-test state ----------------------------------------------------- */

struct fixture {
    struct server srv;
    int serial;
    /* per test */
    struct rq q;
    struct rconn_setup setup;
    struct rconn rc;
};

static int group_setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));
    server_new(&f->srv, 0);
    *state = f;
    return 0;
}

static int group_teardown(void **state)
{
    struct fixture *f = *state;
    server_destroy(&f->srv);
    free(f);
    return 0;
}

/* A fresh key prefix per test, one rq and one synchronous connection. */
static int test_setup(void **state)
{
    struct fixture *f = *state;
    struct err e;
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "t%d:", ++f->serial);
    if (rq_init(&f->q, prefix, &e) < 0)
        fail_msg("%s", e.msg);
    rq_setup(&f->q, &f->setup);
    if (rconn_open(&f->rc, f->srv.url, NULL, &f->setup, &e) < 0)
        fail_msg("%s", e.msg);
    return 0;
}

static int test_teardown(void **state)
{
    struct fixture *f = *state;
    rconn_close(&f->rc);
    rconn_setup_free(&f->setup);
    rq_free(&f->q);
    return 0;
}

/* Run cmd, expect success; the answer is in res (caller frees). */
static void run(struct fixture *f, struct rq_cmd *cmd, struct rq_res *res)
{
    struct err e;
    if (rq_exec(&f->rc, cmd, res, &e) < 0)
        fail_msg("rq_exec: %s", e.msg);
}

/* Run cmd and return its status, freeing the answer. */
static enum rq_status status_of(struct fixture *f, struct rq_cmd *cmd)
{
    struct rq_res res;
    run(f, cmd, &res);
    enum rq_status s = res.status;
    rq_res_free(&res);
    return s;
}

/* A raw command's integer (or string, parsed) answer. */
static long long raw_int(struct fixture *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(f->rc.c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer
                  : r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10)
                                                  : -999;
    freeReplyObject(r);
    return v;
}

static char *raw_str(struct fixture *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(f->rc.c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    char *s = r->type == REDIS_REPLY_STRING ? xstrdup(r->str) : NULL;
    freeReplyObject(r);
    return s;
}

static long long stat_of(struct fixture *f, const char *name)
{
    struct rq_res res;
    run(f, rq_cmd_stats(&f->q), &res);
    long long v = rq_res_field_int(&res, name, 0);
    rq_res_free(&res);
    return v;
}

static long long run_field(struct fixture *f, const char *run_id, const char *name)
{
    struct rq_res res;
    run(f, rq_cmd_run_get(&f->q, run_id), &res);
    long long v = rq_res_field_int(&res, name, -1);
    rq_res_free(&res);
    return v;
}

#define JOB_JSON(key, run) "{\"v\":1,\"run\":\"" run "\",\"key\":\"" key "\"}"

/* Take a job as consumer, expecting key (and json unless NULL); returns its
 * entry id (caller frees). */
static char *take_as(struct fixture *f, const char *consumer, long long lease, int max,
                     const char *key, const char *json)
{
    struct rq_res res;
    run(f, rq_cmd_take(&f->q, consumer, lease, max, 30000), &res);
    assert_int_equal(res.status, RQ_JOB);
    assert_string_equal(res.key, key);
    if (json)
        assert_string_equal(res.json, json);
    char *id = res.id;
    res.id = NULL;
    rq_res_free(&res);
    return id;
}

static char *take_key(struct fixture *f, const char *consumer, const char *key)
{
    return take_as(f, consumer, 60000, 5, key, NULL);
}

/* Enqueue key and take it as consumer; returns the entry id (caller frees). */
static char *enqueue_and_take(struct fixture *f, const char *key, const char *json,
                              const char *consumer, long long lease, int max)
{
    struct rq_res res;
    run(f, rq_cmd_enqueue(&f->q, key, json), &res);
    assert_int_equal(res.status, RQ_ADDED);
    rq_res_free(&res);
    return take_as(f, consumer, lease, max, key, json);
}

/* run_enqueue key as run_id, expecting want; the answer's id (caller frees). */
static char *run_enqueue(struct fixture *f, const char *run_id, const char *key,
                         const char *json, enum rq_status want)
{
    struct rq_res res;
    run(f, rq_cmd_run_enqueue(&f->q, run_id, key, json), &res);
    assert_int_equal(res.status, want);
    char *id = res.id;
    res.id = NULL;
    rq_res_free(&res);
    return id;
}

/* A new job of run_id (existing), taken as consumer. */
static char *run_enqueue_and_take(struct fixture *f, const char *run_id, const char *key,
                                  const char *json, const char *consumer, long long lease,
                                  int max)
{
    free(run_enqueue(f, run_id, key, json, RQ_ADDED));
    return take_as(f, consumer, lease, max, key, json);
}

/* The lease of consumer's job id ran out: the entry is made idle for an hour (XCLAIM IDLE
 * JUSTID keeps its owner and delivery count), so a test need not sleep past a lease. */
static void lease_run_out(struct fixture *f, const char *consumer, const char *id)
{
    redisReply *r = redisCommand(f->rc.c, "XCLAIM %s %s %s 0 %s IDLE 3600000 JUSTID",
                                 f->q.keys.jobs, KEYS_GROUP, consumer, id);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 1);
    freeReplyObject(r);
}

/* ---- queue -------------------------------------------------------------- */

static void test_rq__enqueue_dedupe(void **state)
{
    struct fixture *f = *state;
    struct rq_res a, b;
    run(f, rq_cmd_enqueue(&f->q, "debian:bookworm", JOB_JSON("debian:bookworm", "r1")), &a);
    assert_int_equal(a.status, RQ_ADDED);
    run(f, rq_cmd_enqueue(&f->q, "debian:bookworm", JOB_JSON("debian:bookworm", "r2")), &b);
    assert_int_equal(b.status, RQ_DUPLICATE);
    assert_string_equal(a.id, b.id);
    assert_int_equal(raw_int(f, "XLEN %s", f->q.keys.jobs), 1);
    char *idx = raw_str(f, "HGET %s debian:bookworm", f->q.keys.jobs_index);
    assert_string_equal(idx, a.id);
    free(idx);
    assert_int_equal(stat_of(f, "enqueued"), 1);
    assert_int_equal(stat_of(f, "enqueue_dedup"), 1);
    rq_res_free(&a);
    rq_res_free(&b);
}

static void test_rq__take_renew_ack_owner_checks(void **state)
{
    struct fixture *f = *state;
    char *id = enqueue_and_take(f, "nginx:1", JOB_JSON("nginx:1", "r1"), "w1", 60000, 5);
    struct rq_res res;
    run(f, rq_cmd_take(&f->q, "w2", 60000, 5, 30000), &res);
    assert_int_equal(res.status, RQ_EMPTY); /* one job, already held */
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_renew(&f->q, "w1", id)), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_renew(&f->q, "w2", id)), RQ_STOLEN);
    /* A non-owner's ack changes nothing and is counted stale. */
    assert_int_equal(status_of(f, rq_cmd_ack(&f->q, "w2", id, "nginx:1", NULL, NULL, 0)),
                     RQ_STOLEN);
    assert_int_equal(stat_of(f, "ack_stale"), 1);
    assert_int_equal(raw_int(f, "XLEN %s", f->q.keys.jobs), 1);
    assert_int_equal(status_of(f, rq_cmd_ack(&f->q, "w1", id, "nginx:1", NULL, NULL, 0)),
                     RQ_DONE);
    /* Acked: deleted from the stream, no longer pending, key released. */
    assert_int_equal(raw_int(f, "XLEN %s", f->q.keys.jobs), 0);
    assert_int_equal(raw_int(f, "HEXISTS %s nginx:1", f->q.keys.jobs_index), 0);
    assert_int_equal(status_of(f, rq_cmd_renew(&f->q, "w1", id)), RQ_GONE);
    assert_int_equal(status_of(f, rq_cmd_ack(&f->q, "w1", id, "nginx:1", NULL, NULL, 0)),
                     RQ_GONE);
    assert_int_equal(stat_of(f, "ack_stale"), 2);
    assert_int_equal(stat_of(f, "done"), 1);
    /* The key can be enqueued again. */
    assert_int_equal(status_of(f, rq_cmd_enqueue(&f->q, "nginx:1", "{}")), RQ_ADDED);
    free(id);
}

static void test_rq__reclaim_after_lease_and_zombie_ack(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r1", "abc123", 10)), RQ_DONE);
    char *id =
        run_enqueue_and_take(f, "r1", "redis:7", JOB_JSON("redis:7", "r1"), "w1", 60000, 5);
    struct rq_res res;
    run(f, rq_cmd_take(&f->q, "w2", 60000, 5, 30000), &res);
    assert_int_equal(res.status, RQ_EMPTY); /* the lease has not run out */
    rq_res_free(&res);
    lease_run_out(f, "w1", id);
    run(f, rq_cmd_take(&f->q, "w2", 60000, 5, 30000), &res);
    assert_int_equal(res.status, RQ_JOB);
    assert_string_equal(res.id, id);
    assert_int_equal(res.n, 2); /* the redelivery counts */
    rq_res_free(&res);
    assert_int_equal(stat_of(f, "reclaimed"), 1);
    /* The first worker woke up: it lost the job. */
    assert_int_equal(status_of(f, rq_cmd_renew(&f->q, "w1", id)), RQ_STOLEN);
    struct rq_counter c[] = {{"blobs_copied", 3}, {"bytes_copied", 1000}};
    assert_int_equal(status_of(f, rq_cmd_ack(&f->q, "w1", id, "redis:7", "r1", c, 2)),
                     RQ_STOLEN);
    assert_int_equal(run_field(f, "r1", "jobs_done"), 0);
    assert_int_equal(run_field(f, "r1", "blobs_copied"), -1);
    assert_int_equal(run_field(f, "r1", "first_settled_ms"), -1); /* a lost ack settles none */
    assert_int_equal(status_of(f, rq_cmd_ack(&f->q, "w2", id, "redis:7", "r1", c, 2)), RQ_DONE);
    assert_int_equal(run_field(f, "r1", "jobs_done"), 1);
    /* When the run's first and latest jobs settled (its phases), on Redis's clock. */
    long long settled = run_field(f, "r1", "first_settled_ms");
    assert_true(settled > 0);
    assert_int_equal(run_field(f, "r1", "last_settled_ms"), settled);
    assert_int_equal(run_field(f, "r1", "blobs_copied"), 3);
    assert_int_equal(run_field(f, "r1", "bytes_copied"), 1000);
    assert_int_equal(stat_of(f, "ack_stale"), 1);
    free(id);
}

static void test_rq__dead_letter_after_max_deliveries(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r9", "c9", 10)), RQ_DONE);
    char *id =
        run_enqueue_and_take(f, "r9", "poison:1", JOB_JSON("poison:1", "r9"), "w1", 60000, 2);
    struct rq_res res;
    lease_run_out(f, "w1", id);
    run(f, rq_cmd_take(&f->q, "w2", 60000, 2, 30000), &res);
    assert_int_equal(res.status, RQ_JOB);
    assert_int_equal(res.n, 2);
    rq_res_free(&res);
    lease_run_out(f, "w2", id);
    /* Third delivery would pass max 2: dead-lettered, and nothing else to take. */
    run(f, rq_cmd_take(&f->q, "w3", 60000, 2, 30000), &res);
    assert_int_equal(res.status, RQ_EMPTY);
    assert_int_equal(res.nitems, 1);
    assert_string_equal(res.items[0], "poison:1");
    rq_res_free(&res);
    assert_int_equal(raw_int(f, "XLEN %s", f->q.keys.jobs), 0);
    assert_int_equal(raw_int(f, "XLEN %s", f->q.keys.jobs_dead), 1);
    assert_int_equal(raw_int(f, "HEXISTS %s poison:1", f->q.keys.jobs_index), 0);
    redisReply *r = redisCommand(f->rc.c, "XRANGE %s - +", f->q.keys.jobs_dead);
    assert_non_null(r);
    assert_int_equal(r->elements, 1);
    redisReply *fields = r->element[0]->element[1];
    int seen = 0;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const char *k = fields->element[i]->str, *v = fields->element[i + 1]->str;
        if (strcmp(k, "id") == 0 && strcmp(v, id) == 0)
            seen++;
        if (strcmp(k, "reason") == 0 && strcmp(v, "max deliveries") == 0)
            seen++;
        if (strcmp(k, "deliveries") == 0 && strcmp(v, "3") == 0)
            seen++;
        if (strcmp(k, "job") == 0 && strcmp(v, JOB_JSON("poison:1", "r9")) == 0)
            seen++;
    }
    assert_int_equal(seen, 4);
    freeReplyObject(r);
    assert_int_equal(stat_of(f, "dead"), 1);
    assert_int_equal(run_field(f, "r9", "jobs_dead"), 1);
    /* The late owner's ack is stale. */
    assert_int_equal(status_of(f, rq_cmd_ack(&f->q, "w2", id, "poison:1", "r9", NULL, 0)),
                     RQ_GONE);
    free(id);
}

static void test_rq__handback_keeps_delivery_count(void **state)
{
    struct fixture *f = *state;
    char *id = enqueue_and_take(f, "alpine:3", JOB_JSON("alpine:3", "r1"), "w1", 60000, 3);
    for (int round = 0; round < 4; round++) {
        const char *from = round % 2 ? "w2" : "w1", *to = round % 2 ? "w1" : "w2";
        assert_int_equal(status_of(f, rq_cmd_handback(&f->q, from, id, 60000)), RQ_DONE);
        struct rq_res res;
        /* Reclaimable at once with the same lease, count unchanged, never dead. */
        run(f, rq_cmd_take(&f->q, to, 60000, 3, 30000), &res);
        assert_int_equal(res.status, RQ_JOB);
        assert_string_equal(res.id, id);
        assert_int_equal(res.n, 1);
        rq_res_free(&res);
    }
    assert_int_equal(status_of(f, rq_cmd_handback(&f->q, "w2", id, 60000)), RQ_STOLEN);
    assert_int_equal(stat_of(f, "handback"), 4);
    assert_int_equal(stat_of(f, "dead"), 0);
    free(id);
}

static void test_rq__retry_delayed_promote(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r2", "c2", 10)), RQ_DONE);
    char *id = enqueue_and_take(f, "golang:1", JOB_JSON("golang:1", "r2"), "w1", 60000, 3);
    const char *again = "{\"v\":1,\"run\":\"r2\",\"key\":\"golang:1\",\"attempt\":1}";
    assert_int_equal(status_of(f, rq_cmd_retry(&f->q, "w2", id, "golang:1", again, 60000,
                                               "backoff", "r2", NULL, 0)),
                     RQ_STOLEN);
    assert_int_equal(status_of(f, rq_cmd_retry(&f->q, "w1", id, "golang:1", again, 60000,
                                               "backoff", "r2", NULL, 0)),
                     RQ_DONE);
    assert_int_equal(raw_int(f, "XLEN %s", f->q.keys.jobs), 0);
    char *idx = raw_str(f, "HGET %s golang:1", f->q.keys.jobs_index);
    assert_string_equal(idx, "delayed");
    free(idx);
    char *payload = raw_str(f, "HGET %s golang:1", f->q.keys.jobs_delayed_payload);
    assert_non_null(strstr(payload, "\"why\":\"backoff\""));
    assert_non_null(strstr(payload, again));
    free(payload);
    /* Still pending while delayed: no second copy. */
    struct rq_res res;
    run(f, rq_cmd_enqueue(&f->q, "golang:1", "{}"), &res);
    assert_int_equal(res.status, RQ_DUPLICATE);
    assert_string_equal(res.id, "delayed");
    rq_res_free(&res);
    run(f, rq_cmd_promote(&f->q, 10), &res);
    assert_int_equal(res.n, 0); /* not due yet */
    rq_res_free(&res);
    /* Its time came (a due time in the past, without waiting for one). */
    assert_int_equal(raw_int(f, "ZADD %s XX 1 golang:1", f->q.keys.jobs_delayed), 0);
    run(f, rq_cmd_promote(&f->q, 10), &res);
    assert_int_equal(res.n, 1);
    rq_res_free(&res);
    assert_int_equal(raw_int(f, "ZCARD %s", f->q.keys.jobs_delayed), 0);
    run(f, rq_cmd_take(&f->q, "w1", 60000, 3, 30000), &res);
    assert_int_equal(res.status, RQ_JOB);
    assert_string_equal(res.json, again);
    assert_int_equal(res.n, 1);
    idx = raw_str(f, "HGET %s golang:1", f->q.keys.jobs_index);
    assert_string_equal(idx, res.id);
    free(idx);
    rq_res_free(&res);
    assert_int_equal(stat_of(f, "retried_backoff"), 1);
    assert_int_equal(stat_of(f, "promoted"), 1);
    assert_int_equal(run_field(f, "r2", "jobs_retried"), 1);
    free(id);
}

/* A retry because this worker's budget is spent goes straight back into the
 * stream, for any worker: one of another source takes it. */
static void test_rq__retry_spent_requeues(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r5", "c5", 10)), RQ_DONE);
    char *id = enqueue_and_take(f, "perl:5", JOB_JSON("perl:5", "r5"), "w1", 60000, 3);
    const char *again = "{\"v\":1,\"run\":\"r5\",\"key\":\"perl:5\",\"attempt\":0}";
    struct rq_counter c[] = {{"upstream_manifest_gets", 2}};
    assert_int_equal(status_of(f, rq_cmd_retry(&f->q, "w1", id, "perl:5", again, 0, "spent",
                                               "r5", c, 1)),
                     RQ_DONE);
    assert_int_equal(raw_int(f, "ZCARD %s", f->q.keys.jobs_delayed), 0);
    struct rq_res res;
    run(f, rq_cmd_take(&f->q, "w2", 60000, 3, 30000), &res);
    assert_int_equal(res.status, RQ_JOB);
    assert_string_equal(res.json, again);
    assert_int_equal(res.n, 1);
    char *idx = raw_str(f, "HGET %s perl:5", f->q.keys.jobs_index);
    assert_string_equal(idx, res.id);
    free(idx);
    rq_res_free(&res);
    assert_int_equal(stat_of(f, "requeued_spent"), 1);
    assert_int_equal(run_field(f, "r5", "upstream_manifest_gets"), 2);
    free(id);
}

/* A job waiting for a registry that is down is no retry of the run: it counts apart. */
static void test_rq__retry_waiting_for_a_registry(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r4", "c4", 10)), RQ_DONE);
    char *id = enqueue_and_take(f, "nginx:2", JOB_JSON("nginx:2", "r4"), "w1", 60000, 3);
    struct rq_res res;
    struct err e;
    assert_int_equal(rq_exec(&f->rc, rq_cmd_retry(&f->q, "w1", id, "nginx:2", "{}", 10,
                                                  "mood", "r4", NULL, 0),
                             &res, &e),
                     -1);
    rq_res_free(&res);
    assert_non_null(strstr(e.msg, "why must be backoff, budget, registry or spent"));
    assert_int_equal(status_of(f, rq_cmd_retry(&f->q, "w1", id, "nginx:2",
                                               JOB_JSON("nginx:2", "r4"), 60000, "registry",
                                               "r4", NULL, 0)),
                     RQ_DONE);
    char *payload = raw_str(f, "HGET %s nginx:2", f->q.keys.jobs_delayed_payload);
    assert_non_null(strstr(payload, "\"why\":\"registry\""));
    free(payload);
    assert_int_equal(run_field(f, "r4", "registry_waits"), 1);
    assert_int_equal(run_field(f, "r4", "jobs_retried"), 0);
    assert_int_equal(stat_of(f, "retried_registry"), 1);
    free(id);
}

static void test_rq__fail_dead_letters(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r3", "c3", 10)), RQ_DONE);
    char *id = run_enqueue_and_take(f, "r3", "bad:1", JOB_JSON("bad:1", "r3"), "w1", 60000, 3);
    struct rq_counter c[] = {{"manifests_missing", 1}};
    assert_int_equal(status_of(f, rq_cmd_fail(&f->q, "w1", id, "bad:1",
                                              "manifest unknown upstream", "r3", c, 1)),
                     RQ_DONE);
    assert_int_equal(raw_int(f, "XLEN %s", f->q.keys.jobs), 0);
    assert_int_equal(raw_int(f, "HEXISTS %s bad:1", f->q.keys.jobs_index), 0);
    redisReply *r = redisCommand(f->rc.c, "XREVRANGE %s + - COUNT 1", f->q.keys.jobs_dead);
    assert_non_null(r);
    assert_int_equal(r->elements, 1);
    redisReply *fl = r->element[0]->element[1];
    assert_string_equal(fl->element[7]->str, "manifest unknown upstream"); /* reason */
    assert_string_equal(fl->element[5]->str, JOB_JSON("bad:1", "r3"));       /* job */
    freeReplyObject(r);
    assert_int_equal(run_field(f, "r3", "jobs_failed"), 1);
    assert_int_equal(run_field(f, "r3", "manifests_missing"), 1);
    assert_int_equal(stat_of(f, "failed"), 1);
    free(id);
}

static void test_rq__bad_counter_changes_nothing(void **state)
{
    struct fixture *f = *state;
    char *id = enqueue_and_take(f, "x:1", JOB_JSON("x:1", "r1"), "w1", 60000, 3);
    struct rq_counter c[] = {{"Bad Name", 1}};
    struct rq_res res;
    struct err e;
    assert_int_equal(rq_exec(&f->rc, rq_cmd_ack(&f->q, "w1", id, "x:1", NULL, c, 1), &res, &e),
                     -1);
    rq_res_free(&res);
    assert_non_null(strstr(e.msg, "bad counter name"));
    assert_int_equal(raw_int(f, "XLEN %s", f->q.keys.jobs), 1); /* still there */
    assert_int_equal(status_of(f, rq_cmd_renew(&f->q, "w1", id)), RQ_DONE);
    free(id);
}

static void test_rq__operator_pause(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(status_of(f, rq_cmd_enqueue(&f->q, "p:1", "{}")), RQ_ADDED);
    redisReply *r = redisCommand(f->rc.c, "SET %s 1", f->q.keys.ctl_paused);
    freeReplyObject(r);
    assert_int_equal(status_of(f, rq_cmd_take(&f->q, "w1", 60000, 3, 30000)), RQ_PAUSED);
    r = redisCommand(f->rc.c, "DEL %s", f->q.keys.ctl_paused);
    freeReplyObject(r);
    assert_int_equal(status_of(f, rq_cmd_take(&f->q, "w1", 60000, 3, 30000)), RQ_JOB);
}

/* A worker holding its share of the queue (held and new jobs over the live
 * workers) is told busy, and the rest waits for the others; a consumer with
 * no heartbeat counts itself, and a lone worker takes everything. */
static void test_rq__take_fair_share(void **state)
{
    struct fixture *f = *state;
    char key[16];
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof(key), "fair:%d", i);
        assert_int_equal(status_of(f, rq_cmd_enqueue(&f->q, key, "{}")), RQ_ADDED);
    }
    assert_int_equal(status_of(f, rq_cmd_worker_beat(&f->q, "w1", "{}", 30)), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_worker_beat(&f->q, "w2", "{}", 30)), RQ_DONE);
    /* Two live workers, six jobs: three each. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(status_of(f, rq_cmd_take(&f->q, "w1", 60000, 3, 30000)), RQ_JOB);
    assert_int_equal(status_of(f, rq_cmd_take(&f->q, "w1", 60000, 3, 30000)), RQ_BUSY);
    /* A third, without a heartbeat, counts itself: ceil(6 / 3) = 2. */
    for (int i = 0; i < 2; i++)
        assert_int_equal(status_of(f, rq_cmd_take(&f->q, "w3", 60000, 3, 30000)), RQ_JOB);
    assert_int_equal(status_of(f, rq_cmd_take(&f->q, "w3", 60000, 3, 30000)), RQ_BUSY);
    assert_int_equal(status_of(f, rq_cmd_take(&f->q, "w2", 60000, 3, 30000)), RQ_JOB);
    assert_int_equal(status_of(f, rq_cmd_take(&f->q, "w2", 60000, 3, 30000)), RQ_EMPTY);
    /* w2 gone: w1 alone may hold all it likes. */
    assert_int_equal(status_of(f, rq_cmd_worker_gone(&f->q, "w2")), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_enqueue(&f->q, "fair:6", "{}")), RQ_ADDED);
    assert_int_equal(status_of(f, rq_cmd_take(&f->q, "w1", 60000, 3, 30000)), RQ_JOB);
}

/* ---- events and exports --------------------------------------------------- */

/* Events read back in order after an id, with their type and data; the
 * webhook's mark is kept. */
static void test_rq__events_after(void **state)
{
    struct fixture *f = *state;
    struct rq_res res;
    char first[64];
    run(f, rq_cmd_event_add(&f->q, "tag.written", "{\"tag\":\"a\"}"), &res);
    assert_int_equal(res.status, RQ_VALUE);
    snprintf(first, sizeof(first), "%s", res.str);
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_event_add(&f->q, "run.finished", "{}")), RQ_VALUE);
    run(f, rq_cmd_events_after(&f->q, "0", 10), &res);
    assert_int_equal(res.n, 2);
    assert_int_equal(res.nitems, 2 * RQ_EVENT_FIELDS);
    assert_string_equal(res.items[0], first);
    assert_string_equal(res.items[1], "tag.written");
    assert_string_equal(res.items[2], "{\"tag\":\"a\"}");
    assert_string_equal(res.items[4], "run.finished");
    rq_res_free(&res);
    run(f, rq_cmd_events_after(&f->q, first, 10), &res); /* after: exclusive */
    assert_int_equal(res.n, 1);
    assert_string_equal(res.items[1], "run.finished");
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_events_delivered(&f->q)), RQ_EMPTY);
    assert_int_equal(status_of(f, rq_cmd_events_delivered_set(&f->q, first)), RQ_DONE);
    run(f, rq_cmd_events_delivered(&f->q), &res);
    assert_string_equal(res.str, first);
    rq_res_free(&res);
}

/* A tag's event recorded ahead of its PUT: appended and dropped in one step
 * after it; a worker finding tags right appends the records whose digest they
 * have (a PUT that landed untold) and drops the stale ones. */
static void test_rq__event_records(void **state)
{
    struct fixture *f = *state;
    struct rq_res res;
    char *a = rq_event_field("http://127.0.0.1:5000", "library/x", "a");
    char *b = rq_event_field("http://127.0.0.1:5000", "library/x", "b");
    char *c = rq_event_field("http://127.0.0.1:5000", "library/x", "c");
    const char *fields[] = {a, b, c, "http://127.0.0.1:5000 library/x:none"};
    const char *digests[] = {"sha256:aa", "sha256:bb", "sha256:cc", "sha256:dd"};
    assert_string_equal(a, "http://127.0.0.1:5000 library/x:a");
    /* Nothing recorded: settling appends nothing. */
    run(f, rq_cmd_event_settle(&f->q, fields, digests, 4), &res);
    assert_int_equal(res.status, RQ_DONE);
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_event_intent(&f->q, a, "sha256:aa", "tag.written",
                                                       "{\"tag\":\"a\"}")), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_event_intent(&f->q, b, "sha256:b0", "tag.moved",
                                                       "{\"tag\":\"b\"}")), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_event_intent(&f->q, c, "sha256:cc", "tag.moved",
                                                       "{\"tag\":\"c\"}")), RQ_DONE);
    /* c's PUT answered: its event, its record gone. */
    assert_int_equal(status_of(f, rq_cmd_event_tag(&f->q, c, "tag.moved", "{\"tag\":\"c\"}")),
                     RQ_DONE);
    /* a landed untold; b is at another digest than its record's. */
    assert_int_equal(status_of(f, rq_cmd_event_settle(&f->q, fields, digests, 4)), RQ_DONE);
    run(f, rq_cmd_events_after(&f->q, "0", 10), &res);
    assert_int_equal(res.n, 2);
    assert_string_equal(res.items[1], "tag.moved");
    assert_string_equal(res.items[2], "{\"tag\":\"c\"}");
    assert_string_equal(res.items[4], "tag.written");
    assert_string_equal(res.items[5], "{\"tag\":\"a\"}");
    rq_res_free(&res);
    /* Every record named is gone: settling again appends nothing. */
    assert_int_equal(status_of(f, rq_cmd_event_settle(&f->q, fields, digests, 4)), RQ_DONE);
    run(f, rq_cmd_events_after(&f->q, "0", 10), &res);
    assert_int_equal(res.n, 2);
    rq_res_free(&res);
    free(a);
    free(b);
    free(c);
}

/* An offer of one's own job is left to the others; the oldest other one is taken
 * once, whole; a job's end drops its offers left; an assistant's counters count in
 * the run (its sync-file entry's gets too) while it runs. */
static void test_rq__assist_offers(void **state)
{
    struct fixture *f = *state;
    struct rq_res res;
    const char *kids1[] = {"sha256:a1", "sha256:a2"}, *kids2[] = {"sha256:b1"};
    struct rq_assist o = {.job_id = "1-1", .key = "x:1", .run = "ra", .worker = "w1",
                          .upstream = "https://up.example", .source_repo = "library/x",
                          .target = "http://127.0.0.1:5000", .target_repo = "library/x",
                          .children = kids1, .nchildren = 2};
    assert_int_equal(status_of(f, rq_cmd_assist_offer(&f->q, &o)), RQ_VALUE);
    o.children = kids2;
    o.nchildren = 1;
    assert_int_equal(status_of(f, rq_cmd_assist_offer(&f->q, &o)), RQ_VALUE);
    o.job_id = "2-1";
    o.key = "y:1";
    assert_int_equal(status_of(f, rq_cmd_assist_offer(&f->q, &o)), RQ_VALUE);
    /* The owner takes none of its own. */
    assert_int_equal(status_of(f, rq_cmd_assist_take(&f->q, "w1")), RQ_EMPTY);
    run(f, rq_cmd_assist_take(&f->q, "w2"), &res);
    assert_int_equal(res.status, RQ_VALUE);
    assert_non_null(res.id);
    assert_string_equal(rq_res_field(&res, "job"), "1-1");
    assert_string_equal(rq_res_field(&res, "children"), "sha256:a1 sha256:a2");
    assert_string_equal(rq_res_field(&res, "source_repo"), "library/x");
    assert_string_equal(rq_res_field(&res, "target"), "http://127.0.0.1:5000");
    assert_string_equal(rq_res_field(&res, "run"), "ra");
    rq_res_free(&res);
    /* Job 1-1 ends: its offer left goes (not for another holder's end), job 2-1's
     * stays, for one taker. */
    run(f, rq_cmd_assist_clear(&f->q, "1-1", "w9"), &res);
    assert_int_equal(res.n, 0);
    rq_res_free(&res);
    run(f, rq_cmd_assist_clear(&f->q, "1-1", "w1"), &res);
    assert_int_equal(res.n, 1);
    rq_res_free(&res);
    run(f, rq_cmd_assist_take(&f->q, "w3"), &res);
    assert_int_equal(res.status, RQ_VALUE);
    assert_string_equal(rq_res_field(&res, "job"), "2-1");
    assert_string_equal(rq_res_field(&res, "children"), "sha256:b1");
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_assist_take(&f->q, "w2")), RQ_EMPTY);
    /* Counters: added to the running run, none once it is over. */
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "ra", "ca", 10)), RQ_DONE);
    free(run_enqueue(f, "ra", "x:1", JOB_JSON("x:1", "ra"), RQ_ADDED));
    struct rq_counter c[] = {{"upstream_manifest_gets", 2}, {"blobs_copied", 3}};
    run(f, rq_cmd_assist_done(&f->q, "ra", "x:1", c, 2), &res);
    assert_int_equal(res.n, 1);
    rq_res_free(&res);
    run(f, rq_cmd_assist_done(&f->q, NULL, "x:1", c, 1), &res); /* the current run */
    assert_int_equal(res.n, 1);
    rq_res_free(&res);
    assert_int_equal(run_field(f, "ra", "upstream_manifest_gets"), 4);
    assert_int_equal(run_field(f, "ra", "blobs_copied"), 3);
    assert_int_equal(run_field(f, "ra", "jobs_done"), 0);
    struct rq_counter bad[] = {{"Bad Name", 1}};
    struct err e;
    assert_int_equal(rq_exec(&f->rc, rq_cmd_assist_done(&f->q, "ra", "x:1", bad, 1), &res, &e),
                     -1);
    rq_res_free(&res);
    assert_non_null(strstr(e.msg, "bad counter name"));
    assert_int_equal(status_of(f, rq_cmd_run_finish(&f->q, "ra", "done", 1)), RQ_DONE);
    run(f, rq_cmd_assist_done(&f->q, "ra", "x:1", c, 2), &res);
    assert_int_equal(res.n, 0);
    rq_res_free(&res);
    assert_int_equal(run_field(f, "ra", "upstream_manifest_gets"), 4);
}

/* An export's set counts only once recorded; the newest export is the last
 * recorded; a site records the commit an import brought it to. */
static void test_rq__exports_and_sites(void **state)
{
    struct fixture *f = *state;
    struct rq_res res;
    const char *d[] = {"sha256:aa", "sha256:bb"}, *probe[] = {"sha256:aa", "sha256:cc"};
    assert_int_equal(status_of(f, rq_cmd_export_last(&f->q)), RQ_EMPTY);
    assert_int_equal(status_of(f, rq_cmd_export_add(&f->q, "c1", 1, d, 2)), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_export_known(&f->q, "c1")), RQ_EMPTY);
    assert_int_equal(status_of(f, rq_cmd_export_record(&f->q, "c1")), RQ_DONE);
    run(f, rq_cmd_export_check(&f->q, "c1", probe, 2), &res);
    assert_int_equal(res.nflags, 2);
    assert_true(res.flags[0]);
    assert_false(res.flags[1]);
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_export_add(&f->q, "c2", 1, probe, 1)), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_export_record(&f->q, "c2")), RQ_DONE);
    run(f, rq_cmd_export_last(&f->q), &res);
    assert_string_equal(res.str, "c2");
    assert_true(res.n > 0);
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_site_get(&f->q, "http://far:5000")), RQ_EMPTY);
    assert_int_equal(status_of(f, rq_cmd_site_record(&f->q, "http://far:5000", "c2", "c1")),
                     RQ_DONE);
    run(f, rq_cmd_site_get(&f->q, "http://far:5000"), &res);
    assert_string_equal(rq_res_field(&res, "commit"), "c2");
    assert_string_equal(rq_res_field(&res, "base"), "c1");
    rq_res_free(&res);
}

/* A repository stays behind since it first was, until cleared. */
/* The bundle queue (an export's jobs for bundle workers) is a queue of its
 * own beside the job queue: its jobs are taken, reclaimed after a lease and
 * settled into the export's record (a run of the bundle queue) by the same
 * functions, and never reach a copy worker or a sync run. */
static void test_rq__bundle_queue_apart(void **state)
{
    struct fixture *f = *state;
    struct rq b;
    struct err e;
    struct rq_res res;
    assert_int_equal(rq_init_bundle(&b, f->q.keys.prefix, &e), 0);
    freeReplyObject(redisCommand(f->rc.c, "XGROUP CREATE %s %s 0 MKSTREAM", b.keys.jobs,
                                 KEYS_GROUP));
    const char *json = "{\"run\":\"abc-1\",\"objects\":[]}";
    assert_int_equal(status_of(f, rq_cmd_run_create(&b, "abc-1", "abc", 10)), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_run_enqueue(&b, "abc-1", "alpine:3.20", json)),
                     RQ_ADDED);
    assert_int_equal(status_of(f, rq_cmd_run_current(&f->q)), RQ_EMPTY);
    assert_int_equal(status_of(f, rq_cmd_take(&f->q, "w1", 60000, 5, 30000)), RQ_EMPTY);
    run(f, rq_cmd_take(&b, "w1", 60000, 5, 30000), &res);
    assert_int_equal(res.status, RQ_JOB);
    assert_string_equal(res.json, json);
    char *id = res.id;
    res.id = NULL;
    rq_res_free(&res);
    /* w1 was killed: its lease runs out and w2 takes the job over. */
    freeReplyObject(redisCommand(f->rc.c, "XCLAIM %s %s w1 0 %s IDLE 3600000 JUSTID",
                                 b.keys.jobs, KEYS_GROUP, id));
    run(f, rq_cmd_take(&b, "w2", 60000, 5, 30000), &res);
    assert_int_equal(res.status, RQ_JOB);
    assert_string_equal(res.id, id);
    assert_int_equal(res.n, 2);
    rq_res_free(&res);
    struct rq_counter c[] = {{"files_written", 3}, {"bytes_written", 900}};
    assert_int_equal(status_of(f, rq_cmd_ack(&b, "w1", id, "alpine:3.20", "abc-1", c, 2)),
                     RQ_STOLEN);
    assert_int_equal(status_of(f, rq_cmd_ack(&b, "w2", id, "alpine:3.20", "abc-1", c, 2)),
                     RQ_DONE);
    run(f, rq_cmd_run_get(&b, "abc-1"), &res);
    assert_int_equal(rq_res_field_int(&res, "jobs_total", -1), 1);
    assert_int_equal(rq_res_field_int(&res, "jobs_done", -1), 1);
    assert_int_equal(rq_res_field_int(&res, "files_written", -1), 3);
    assert_int_equal(rq_res_field_int(&res, "bytes_written", -1), 900);
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_run_get(&f->q, "abc-1")), RQ_EMPTY);
    assert_int_equal(stat_of(f, "done"), 0);
    assert_int_equal(status_of(f, rq_cmd_run_finish(&b, "abc-1", "done", 0)), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_synced_commit(&f->q)), RQ_EMPTY);
    assert_int_equal(raw_int(f, "EXISTS %s", b.keys.run_current), 0);
    free(id);
    rq_free(&b);
}

static void test_rq__behind_marked_once_until_cleared(void **state)
{
    struct fixture *f = *state;
    struct rq_res res;
    assert_int_equal(status_of(f, rq_cmd_behind(&f->q)), RQ_EMPTY);
    assert_int_equal(status_of(f, rq_cmd_behind_mark(&f->q, "alpine", 1000)), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_behind_mark(&f->q, "alpine", 2000)), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_behind_mark(&f->q, "debian", 3000)), RQ_DONE);
    run(f, rq_cmd_behind(&f->q), &res);
    assert_string_equal(rq_res_field(&res, "alpine"), "1000");
    assert_string_equal(rq_res_field(&res, "debian"), "3000");
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_behind_clear(&f->q, "alpine")), RQ_DONE);
    run(f, rq_cmd_behind(&f->q), &res);
    assert_null(rq_res_field(&res, "alpine"));
    assert_int_equal(res.nitems, 2);
    rq_res_free(&res);
}

/* ---- budget ------------------------------------------------------------- */

static void acquire(struct fixture *f, const char *source, int cost, int floor, long long ttl,
                    const char *resv, enum rq_status want, long long *n)
{
    struct rq_res res;
    run(f, rq_cmd_budget_acquire(&f->q, NULL, source, cost, floor, ttl, resv), &res);
    if (res.status != want)
        fail_msg("acquire %s: %s, want %s", resv, rq_status_name(res.status),
                 rq_status_name(want));
    if (n)
        *n = res.n;
    rq_res_free(&res);
}

/* What the ratelimit module makes of `ratelimit-limit: L;w=W` and
 * `ratelimit-remaining: R;w=W`. */
static struct ratelimit_info hub(long limit, long remaining, long window)
{
    struct ratelimit_info rl;
    ratelimit_init(&rl);
    rl.has_limit = rl.has_remaining = 2;
    rl.limit = limit;
    rl.remaining = remaining;
    rl.limit_window = rl.remaining_window = window;
    return rl;
}

/* acquire_any over the accounts HUB_A, HUB_B, HUB_C; the 1-based pick. */
static size_t acquire_any(struct fixture *f, size_t naccounts, const char *resv,
                          enum rq_status want, long long *n)
{
    static const char *const accounts[] = {"HUB_A", "HUB_B", "HUB_C"};
    struct rq_res res;
    run(f, rq_cmd_budget_acquire_any(&f->q, "w1", accounts, naccounts, 1, 0, 30000, resv),
        &res);
    if (res.status != want)
        fail_msg("acquire %s: %s, want %s", resv, rq_status_name(res.status),
                 rq_status_name(want));
    if (n)
        *n = res.n;
    size_t pick = res.pick;
    rq_res_free(&res);
    return pick;
}

/* An answer's headers observed; resv (NULL: none) the reservation it settles. */
static void observe_resv(struct fixture *f, const char *source, long limit, long remaining,
                         const char *resv)
{
    struct ratelimit_info rl = hub(limit, remaining, 21600);
    struct rq_res res;
    run(f, rq_cmd_budget_observe(&f->q, source, &rl, resv), &res);
    rq_res_free(&res);
}

static void observe(struct fixture *f, const char *source, long limit, long remaining)
{
    observe_resv(f, source, limit, remaining, NULL);
}

/* Hub counts a GET when it arrives: another answer observed before the GET's own
 * already counts it while its reservation is still held. The account's last pull is
 * then busy (ask again), not denied (which defers the job to Hub's next window), and
 * granted once the GET's answer settles its reservation. */
static void test_rq__budget_busy_until_settled(void **state)
{
    struct fixture *f = *state;
    long long n;
    observe(f, "HUB_A", 10, 2);
    observe(f, "HUB_B", 10, 0);
    assert_int_equal(acquire_any(f, 2, "g1", RQ_GRANTED, &n), 1);
    assert_int_equal(n, 1);
    /* A HEAD's answer (or another GET's) sent after g1 reached Hub. */
    observe(f, "HUB_A", 10, 1);
    assert_int_equal(acquire_any(f, 2, "g2", RQ_BUSY, &n), 0);
    assert_int_equal(n, 2160000);
    assert_int_equal(stat_of(f, "pulls_denied"), 0);
    observe_resv(f, "HUB_A", 10, 1, "g1");
    assert_int_equal(acquire_any(f, 2, "g2", RQ_GRANTED, &n), 1);
    assert_int_equal(n, 0);
    /* Every pull Hub has left reserved and counted: spent. */
    observe_resv(f, "HUB_A", 10, 0, "g2");
    assert_int_equal(acquire_any(f, 2, "g3", RQ_DENIED, NULL), 0);
}

/* Several accounts of one registry: an unknown one is probed first, then each
 * pull comes from the account with the most left, none goes past its own
 * budget, and only all of them spent is a wait (the shortest). */
static void test_rq__budget_acquire_any_most_left(void **state)
{
    struct fixture *f = *state;
    long long n;
    assert_int_equal(acquire_any(f, 2, "p0", RQ_UNKNOWN, NULL), 1);
    observe(f, "HUB_A", 10, 2);
    assert_int_equal(acquire_any(f, 2, "p1", RQ_UNKNOWN, NULL), 2);
    observe(f, "HUB_B", 10, 4);
    size_t picks[6];
    for (int i = 0; i < 6; i++) {
        char resv[8];
        snprintf(resv, sizeof(resv), "g%d", i);
        picks[i] = acquire_any(f, 2, resv, RQ_GRANTED, &n);
        assert_int_equal(n, (long long)(i < 2 ? 3 - i : (5 - i) / 2));
    }
    /* B has 4, A 2: B twice, then both drain in turn (ties go to the first). */
    static const size_t want[] = {2, 2, 1, 2, 1, 2};
    for (int i = 0; i < 6; i++)
        assert_int_equal(picks[i], want[i]);
    char *a = keys_budget_inflight(&f->q.keys, "HUB_A");
    char *b = keys_budget_inflight(&f->q.keys, "HUB_B");
    assert_int_equal(raw_int(f, "ZCARD %s", a), 2);
    assert_int_equal(raw_int(f, "ZCARD %s", b), 4);
    free(a);
    free(b);
    /* Every pull left reserved: busy until the GETs' answers settle them ... */
    assert_int_equal(acquire_any(f, 2, "g6", RQ_BUSY, &n), 0);
    assert_int_equal(n, 2160000);
    for (int i = 0; i < 6; i++) {
        char resv[8];
        snprintf(resv, sizeof(resv), "g%d", i);
        observe_resv(f, picks[i] == 1 ? "HUB_A" : "HUB_B", 10, 0, resv);
    }
    /* ... then every account spent: denied, with the shortest of their waits. */
    assert_int_equal(acquire_any(f, 2, "g6", RQ_DENIED, &n), 0);
    assert_int_equal(n, 2160000);
    /* The worker pulls from the budget it was last given or denied. */
    char *wb = raw_str(f, "HGET %s w1", f->q.keys.worker_budgets);
    char *ka = keys_budget(&f->q.keys, "HUB_A");
    assert_string_equal(wb, ka);
    free(wb);
    free(ka);
    /* A third account, unknown: probed before anything is denied. */
    assert_int_equal(acquire_any(f, 3, "g7", RQ_UNKNOWN, NULL), 3);
    observe(f, "HUB_C", 10, 1);
    assert_int_equal(acquire_any(f, 3, "g8", RQ_GRANTED, &n), 3);
    assert_int_equal(n, 0);
}

static void test_rq__budget_acquire_observe_floor(void **state)
{
    struct fixture *f = *state;
    long long n;
    acquire(f, "192.0.2.1", 1, 5, 30000, "g0", RQ_UNKNOWN, NULL);
    struct ratelimit_info rl = hub(100, 8, 21600);
    struct rq_res res;
    run(f, rq_cmd_budget_observe(&f->q, "192.0.2.1", &rl, NULL), &res);
    assert_int_equal(res.n, 8);
    rq_res_free(&res);
    acquire(f, "192.0.2.1", 1, 5, 30000, "g1", RQ_GRANTED, &n);
    assert_int_equal(n, 7);
    acquire(f, "192.0.2.1", 1, 5, 30000, "g2", RQ_GRANTED, &n);
    assert_int_equal(n, 6);
    acquire(f, "192.0.2.1", 1, 5, 30000, "g3", RQ_GRANTED, &n);
    assert_int_equal(n, 5);
    /* The floor stays in reserve; the wait, should the reservations leave no more once
     * settled, is Hub's refill time per pull. */
    acquire(f, "192.0.2.1", 1, 5, 30000, "g4", RQ_BUSY, &n);
    assert_int_equal(n, 216000);
    /* Hub counted g1: remaining 7, reservation released in the same step. */
    rl.remaining = 7;
    run(f, rq_cmd_budget_observe(&f->q, "192.0.2.1", &rl, "g1"), &res);
    rq_res_free(&res);
    char *inflight = keys_budget_inflight(&f->q.keys, "192.0.2.1");
    assert_int_equal(raw_int(f, "ZCARD %s", inflight), 2);
    /* A late answer carrying an older, higher count does not raise it. */
    rl.remaining = 8;
    run(f, rq_cmd_budget_observe(&f->q, "192.0.2.1", &rl, NULL), &res);
    assert_int_equal(res.n, 7);
    rq_res_free(&res);
    acquire(f, "192.0.2.1", 1, 5, 30000, "g5", RQ_BUSY, NULL);
    /* Nor does a HEAD's answer right after a GET's: it may predate that GET. */
    rl.remaining = 50;
    run(f, rq_cmd_budget_observe(&f->q, "192.0.2.1", &rl, NULL), &res);
    assert_int_equal(res.n, 7);
    rq_res_free(&res);
    /* Nor a GET's while GETs are being answered: answers come in any order. */
    run(f, rq_cmd_budget_observe(&f->q, "192.0.2.1", &rl, "g2"), &res);
    assert_int_equal(res.n, 7);
    rq_res_free(&res);
    /* Once no GET was answered for 3 s, a higher count is Hub's window moving on. */
    usleep(3200 * 1000);
    run(f, rq_cmd_budget_observe(&f->q, "192.0.2.1", &rl, NULL), &res);
    assert_int_equal(res.n, 50);
    rq_res_free(&res);
    /* A cost of 3 reserves 3. */
    acquire(f, "192.0.2.1", 3, 5, 30000, "g6", RQ_GRANTED, &n);
    assert_int_equal(n, 50 - 1 - 3);
    assert_int_equal(raw_int(f, "ZCARD %s", inflight), 4);
    run(f, rq_cmd_budget_observe(&f->q, "192.0.2.1", &rl, "g6"), &res);
    rq_res_free(&res);
    assert_int_equal(raw_int(f, "ZCARD %s", inflight), 1);
    free(inflight);
    assert_int_equal(stat_of(f, "pulls_granted"), 6);
    /* Only the floor, after every reservation settled, denies. */
    rl.remaining = 5;
    run(f, rq_cmd_budget_observe(&f->q, "192.0.2.1", &rl, "g3"), &res);
    rq_res_free(&res);
    acquire(f, "192.0.2.1", 1, 5, 30000, "g7", RQ_DENIED, &n);
    assert_int_equal(n, 216000);
    assert_int_equal(stat_of(f, "pulls_denied"), 1);
}

static void test_rq__budget_reservations_expire(void **state)
{
    struct fixture *f = *state;
    struct ratelimit_info rl = hub(100, 3, 21600);
    struct rq_res res;
    run(f, rq_cmd_budget_observe(&f->q, "src-b", &rl, NULL), &res);
    rq_res_free(&res);
    acquire(f, "src-b", 1, 0, 1000, "a1", RQ_GRANTED, NULL);
    acquire(f, "src-b", 2, 0, 1000, "a2", RQ_GRANTED, NULL);
    acquire(f, "src-b", 1, 0, 1000, "a3", RQ_BUSY, NULL);
    /* A worker that crashed after acquiring never reports; its pulls return. */
    sleep_ms(1100);
    acquire(f, "src-b", 3, 0, 1000, "a4", RQ_GRANTED, NULL);
}

static long long elsewhere(struct fixture *f, const char *worker, const char *source, int floor)
{
    struct rq_res res;
    run(f, rq_cmd_budget_elsewhere(&f->q, worker, source, floor, 30000), &res);
    assert_int_equal(res.status, RQ_VALUE);
    long long n = res.n;
    rq_res_free(&res);
    return n;
}

static void beat(struct fixture *f, const char *worker)
{
    assert_int_equal(status_of(f, rq_cmd_worker_beat(&f->q, worker, "{}", 30)), RQ_DONE);
}

/* worker asks source's budget for a pull (and is answered want). */
static void ask_pull(struct fixture *f, const char *worker, const char *source,
                     enum rq_status want)
{
    struct rq_res res;
    run(f, rq_cmd_budget_acquire(&f->q, worker, source, 1, 0, 30000, "x"), &res);
    assert_int_equal(res.status, want);
    rq_res_free(&res);
}

/* A worker whose source is spent learns whether another live worker may still
 * pull from another source: one that has not asked for a pull yet, or whose
 * budget is unknown, unlimited or above the floor. */
static void test_rq__budget_elsewhere(void **state)
{
    struct fixture *f = *state;
    struct ratelimit_info spent = hub(100, 0, 21600), some = hub(100, 3, 21600);
    struct rq_res res;
    run(f, rq_cmd_budget_observe(&f->q, "127.0.0.3", &spent, NULL), &res);
    rq_res_free(&res);
    beat(f, "a");
    ask_pull(f, "a", "127.0.0.3", RQ_DENIED);
    assert_int_equal(elsewhere(f, "a", "127.0.0.3", 0), 0); /* alone */
    beat(f, "a2");
    ask_pull(f, "a2", "127.0.0.3", RQ_DENIED);
    assert_int_equal(elsewhere(f, "a", "127.0.0.3", 0), 0); /* the same source */
    /* A worker that has not asked for a pull yet may have budget. */
    beat(f, "b");
    assert_int_equal(elsewhere(f, "a", "127.0.0.3", 0), 1);
    ask_pull(f, "b", "127.0.0.4", RQ_UNKNOWN);
    assert_int_equal(elsewhere(f, "a", "127.0.0.3", 0), 1); /* its budget is not known yet */
    run(f, rq_cmd_budget_observe(&f->q, "127.0.0.4", &some, NULL), &res);
    rq_res_free(&res);
    assert_int_equal(elsewhere(f, "a", "127.0.0.3", 0), 1);
    assert_int_equal(elsewhere(f, "b", "127.0.0.4", 0), 0); /* 127.0.0.3 has none left */
    /* Reservations in flight and the floor count against the other source. */
    acquire(f, "127.0.0.4", 2, 0, 30000, "r1", RQ_GRANTED, NULL);
    assert_int_equal(elsewhere(f, "a", "127.0.0.3", 0), 1);
    assert_int_equal(elsewhere(f, "a", "127.0.0.3", 1), 0);
    /* A 429 pauses it. */
    run(f, rq_cmd_budget_pause(&f->q, "127.0.0.4", 60000), &res);
    rq_res_free(&res);
    assert_int_equal(elsewhere(f, "a", "127.0.0.3", 0), 0);
    /* A worker silent past its heartbeat is nobody to leave a job to. */
    beat(f, "c");
    assert_int_equal(elsewhere(f, "a", "127.0.0.3", 0), 1);
    raw_int(f, "ZADD %s 1 c", f->q.keys.workers);
    assert_int_equal(elsewhere(f, "a", "127.0.0.3", 0), 0);
    /* One that left says so. */
    assert_int_equal(status_of(f, rq_cmd_worker_gone(&f->q, "b")), RQ_DONE);
    assert_int_equal(raw_int(f, "HEXISTS %s b", f->q.keys.worker_budgets), 0);
}

static void test_rq__budget_pause_and_unlimited(void **state)
{
    struct fixture *f = *state;
    long long n;
    struct rq_res res;
    struct ratelimit_info rl = hub(100, 90, 21600);
    run(f, rq_cmd_budget_observe(&f->q, "src-p", &rl, NULL), &res);
    rq_res_free(&res);
    run(f, rq_cmd_budget_pause(&f->q, "src-p", 1000), &res);
    assert_int_equal(res.n, 1000);
    rq_res_free(&res);
    /* A shorter pause does not cut a longer one. */
    run(f, rq_cmd_budget_pause(&f->q, "src-p", 10), &res);
    assert_true(res.n > 500);
    rq_res_free(&res);
    acquire(f, "src-p", 1, 0, 30000, "p1", RQ_DENIED, &n);
    assert_true(n > 0 && n <= 1000);
    char *budget = keys_budget(&f->q.keys, "src-p");
    assert_int_equal(raw_int(f, "HGET %s remaining", budget), 0);
    assert_int_equal(raw_int(f, "HGET %s http_429", budget), 2);
    free(budget);
    assert_int_equal(stat_of(f, "http_429"), 2);
    sleep_ms(1100);
    /* Pause over, but remaining is 0 until a probe shows otherwise. */
    acquire(f, "src-p", 1, 0, 30000, "p2", RQ_DENIED, NULL);
    rl.remaining = 20;
    run(f, rq_cmd_budget_observe(&f->q, "src-p", &rl, NULL), &res);
    rq_res_free(&res);
    acquire(f, "src-p", 1, 0, 30000, "p3", RQ_GRANTED, &n);
    assert_int_equal(n, 19);
    /* A response with a source but no ratelimit headers: not limited. */
    struct ratelimit_info none;
    ratelimit_init(&none);
    strcpy(none.source, "a645ce4d");
    run(f, rq_cmd_budget_observe(&f->q, "src-u", &none, NULL), &res);
    assert_int_equal(res.n, -1);
    rq_res_free(&res);
    acquire(f, "src-u", 1, 5, 30000, "u1", RQ_UNLIMITED, NULL);
    /* A garbled remaining changes nothing but the reservation. */
    rl = hub(100, 0, 21600);
    rl.has_remaining = 0;
    run(f, rq_cmd_budget_observe(&f->q, "src-p", &rl, "p3"), &res);
    assert_int_equal(res.n, -2);
    rq_res_free(&res);
    acquire(f, "src-p", 1, 0, 30000, "p4", RQ_GRANTED, &n);
    assert_int_equal(n, 19);
}

/* ---- dedupe and leases -------------------------------------------------- */

/* Circuit breakers: failures in a row open one, jobs wait, a probe closes or reopens it.
 * A cool-down of 0 makes the probe due at once (no waiting in a unit test). */
static void test_rq__breaker_opens_probes_and_closes(void **state)
{
    struct fixture *f = *state;
    const char *urls[] = {"https://hub.example", "http://127.0.0.1:5000"};
    const char *target = urls[1];
    struct rq_res res;
    struct err e;
    char *key = keys_breaker(&f->q.keys, target);
    assert_int_equal(status_of(f, rq_cmd_breaker_check(&f->q, urls, 2, 60000)), RQ_GRANTED);
    /* An answer from a registry that never failed writes nothing. */
    assert_int_equal(status_of(f, rq_cmd_breaker_report(&f->q, target, 1, 3, 600000, "")),
                     RQ_EMPTY);
    assert_int_equal(raw_int(f, "EXISTS %s", key), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(status_of(f, rq_cmd_breaker_report(&f->q, target, 0, 3, 600000,
                                                             "connection refused")),
                         RQ_EMPTY);
    assert_int_equal(status_of(f, rq_cmd_breaker_check(&f->q, urls, 2, 60000)), RQ_GRANTED);
    run(f, rq_cmd_breaker_report(&f->q, target, 0, 3, 600000, "connection refused"), &res);
    assert_int_equal(res.status, RQ_VALUE);
    assert_string_equal(res.str, "open");
    rq_res_free(&res);
    char *v = raw_str(f, "HGET %s error", key);
    assert_string_equal(v, "connection refused");
    free(v);
    /* Open: every job needing the target waits out the cool-down. */
    run(f, rq_cmd_breaker_check(&f->q, urls, 2, 60000), &res);
    assert_int_equal(res.status, RQ_DENIED);
    assert_true(res.n > 590000 && res.n <= 600000);
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_breaker_check(&f->q, urls, 1, 60000)), RQ_GRANTED);
    /* A job in flight that reached it after all closes it. */
    run(f, rq_cmd_breaker_report(&f->q, target, 1, 3, 600000, ""), &res);
    assert_string_equal(res.str, "closed");
    rq_res_free(&res);
    assert_int_equal(raw_int(f, "HGET %s failures", key), 0);
    assert_int_equal(status_of(f, rq_cmd_breaker_check(&f->q, urls, 2, 60000)), RQ_GRANTED);
    /* Open with no cool-down: the next check is given the probe, the others wait for it. */
    run(f, rq_cmd_breaker_report(&f->q, target, 0, 1, 0, "HTTP 503"), &res);
    assert_string_equal(res.str, "open");
    rq_res_free(&res);
    run(f, rq_cmd_breaker_check(&f->q, urls, 2, 60000), &res);
    assert_int_equal(res.status, RQ_UNKNOWN);
    assert_int_equal(res.n, 2);
    rq_res_free(&res);
    v = raw_str(f, "HGET %s state", key);
    assert_string_equal(v, "half_open");
    free(v);
    run(f, rq_cmd_breaker_check(&f->q, urls, 2, 60000), &res);
    assert_int_equal(res.status, RQ_DENIED);
    assert_true(res.n > 0 && res.n <= 1000);
    rq_res_free(&res);
    /* A failed probe opens it again at once, below the threshold. */
    run(f, rq_cmd_breaker_report(&f->q, target, 0, 5, 0, "connection refused"), &res);
    assert_string_equal(res.str, "open");
    rq_res_free(&res);
    run(f, rq_cmd_breaker_check(&f->q, urls, 2, 60000), &res);
    assert_int_equal(res.status, RQ_UNKNOWN);
    rq_res_free(&res);
    run(f, rq_cmd_breaker_report(&f->q, target, 1, 5, 0, ""), &res);
    assert_string_equal(res.str, "closed");
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_breaker_check(&f->q, urls, 2, 60000)), RQ_GRANTED);
    assert_int_equal(raw_int(f, "HGET %s probes", key), 2);
    assert_int_equal(stat_of(f, "breaker_opened"), 3);
    assert_int_equal(stat_of(f, "breaker_closed"), 2);
    /* The other registry never had a breaker. */
    char *up = keys_breaker(&f->q.keys, urls[0]);
    assert_int_equal(raw_int(f, "EXISTS %s", up), 0);
    free(up);
    assert_int_equal(rq_exec(&f->rc, rq_cmd_breaker_report(&f->q, target, 0, 0, 0, ""), &res, &e),
                     -1);
    rq_res_free(&res);
    assert_non_null(strstr(e.msg, "threshold must be positive"));
    free(key);
}

static void test_rq__present_sets_and_blobhome(void **state)
{
    struct fixture *f = *state;
    const char *target = "http://127.0.0.1:5000", *ep = "0123456789ab";
    const char *d[] = {"sha256:aaa", "sha256:bbb", "sha256:ccc"};
    struct rq_res res;
    run(f, rq_cmd_present_check(&f->q, target, ep, "library/debian", d, 3), &res);
    assert_int_equal(res.nflags, 3);
    assert_int_equal(res.flags[0] + res.flags[1] + res.flags[2], 0);
    rq_res_free(&res);
    run(f, rq_cmd_present_mark(&f->q, target, ep, "library/debian", d, 2), &res);
    assert_int_equal(res.n, 2);
    rq_res_free(&res);
    run(f, rq_cmd_present_check(&f->q, target, ep, "library/debian", d, 3), &res);
    assert_int_equal(res.flags[0], 1);
    assert_int_equal(res.flags[1], 1);
    assert_int_equal(res.flags[2], 0);
    rq_res_free(&res);
    /* Per repository: another repository has not got them. */
    run(f, rq_cmd_present_check(&f->q, target, ep, "library/ubuntu", d, 1), &res);
    assert_int_equal(res.flags[0], 0);
    rq_res_free(&res);
    /* Per epoch: a new storage behind the same URL has nothing. */
    run(f, rq_cmd_present_check(&f->q, target, "ba9876543210", "library/debian", d, 1), &res);
    assert_int_equal(res.flags[0], 0);
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_blobhome(&f->q, target, "ba9876543210", "sha256:aaa")),
                     RQ_EMPTY);
    run(f, rq_cmd_blobhome(&f->q, target, ep, "sha256:aaa"), &res);
    assert_int_equal(res.status, RQ_VALUE);
    assert_string_equal(res.str, "library/debian");
    rq_res_free(&res);
    run(f, rq_cmd_present_forget(&f->q, target, ep, "library/debian", d, 1), &res);
    assert_int_equal(res.n, 1);
    rq_res_free(&res);
    run(f, rq_cmd_present_check(&f->q, target, ep, "library/debian", d, 2), &res);
    assert_int_equal(res.flags[0], 0);
    assert_int_equal(res.flags[1], 1);
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_blobhome(&f->q, target, ep, "sha256:aaa")), RQ_EMPTY);
    /* Forgetting in another repository leaves the mount source alone. */
    run(f, rq_cmd_present_forget(&f->q, target, ep, "library/ubuntu", d + 1, 1), &res);
    assert_int_equal(res.n, 0);
    rq_res_free(&res);
    run(f, rq_cmd_blobhome(&f->q, target, ep, "sha256:bbb"), &res);
    assert_string_equal(res.str, "library/debian");
    rq_res_free(&res);
}

static void test_rq__present_sets_expire_unless_used(void **state)
{
    struct fixture *f = *state;
    const char *target = "http://127.0.0.1:5000", *ep = "0123456789ab";
    const char *d[] = {"sha256:aaa"};
    char *set = keys_present(&f->q.keys, target, ep, "library/debian");
    char *home = keys_blobhome(&f->q.keys, target, ep);
    assert_int_equal(status_of(f, rq_cmd_present_mark(&f->q, target, ep, "library/debian", d,
                                                      1)),
                     RQ_VALUE);
    assert_true(raw_int(f, "PTTL %s", set) > RQ_PRESENT_TTL_MS - 60000);
    assert_true(raw_int(f, "PTTL %s", home) > RQ_PRESENT_TTL_MS - 60000);
    /* A check is a use: the set's life starts again. */
    raw_int(f, "PEXPIRE %s 5000", set);
    assert_int_equal(status_of(f, rq_cmd_present_check(&f->q, target, ep, "library/debian", d,
                                                       1)),
                     RQ_VALUE);
    assert_true(raw_int(f, "PTTL %s", set) > RQ_PRESENT_TTL_MS - 60000);
    /* A check of a set that does not exist creates nothing. */
    assert_int_equal(status_of(f, rq_cmd_present_check(&f->q, target, ep, "library/none", d,
                                                       1)),
                     RQ_VALUE);
    char *none = keys_present(&f->q.keys, target, ep, "library/none");
    assert_int_equal(raw_int(f, "EXISTS %s", none), 0);
    free(none);
    free(set);
    free(home);
}

static void test_rq__target_epoch_first_marker_wins(void **state)
{
    struct fixture *f = *state;
    const char *target = "http://127.0.0.1:5000";
    const char *m1 = "sha256:1111111111111111aaaa", *m2 = "sha256:2222222222222222bbbb",
               *m3 = "sha256:3333333333333333cccc";
    struct rq_res res;
    assert_int_equal(status_of(f, rq_cmd_target_get(&f->q, target)), RQ_EMPTY);
    /* The first marker starts the first epoch. */
    run(f, rq_cmd_target_epoch(&f->q, target, NULL, m1, "library/debian"), &res);
    assert_int_equal(res.status, RQ_VALUE);
    assert_string_equal(rq_res_field(&res, "marker"), m1);
    assert_string_equal(rq_res_field(&res, "epoch"), "111111111111");
    assert_string_equal(rq_res_field(&res, "repo"), "library/debian");
    assert_true(rq_res_field_int(&res, "since_ms", 0) > 0);
    rq_res_free(&res);
    /* A second worker that saw no record either gets the first one's. */
    run(f, rq_cmd_target_epoch(&f->q, target, "", m2, "library/ubuntu"), &res);
    assert_string_equal(rq_res_field(&res, "marker"), m1);
    rq_res_free(&res);
    /* m1 gone: two workers replace it, the first wins. */
    run(f, rq_cmd_target_epoch(&f->q, target, m1, m2, "library/ubuntu"), &res);
    assert_string_equal(rq_res_field(&res, "epoch"), "222222222222");
    assert_string_equal(rq_res_field(&res, "repo"), "library/ubuntu");
    rq_res_free(&res);
    run(f, rq_cmd_target_epoch(&f->q, target, m1, m3, "library/debian"), &res);
    assert_string_equal(rq_res_field(&res, "marker"), m2);
    rq_res_free(&res);
    /* Found again: the record lives on, unchanged. */
    char *key = keys_target(&f->q.keys, target);
    raw_int(f, "PEXPIRE %s 5000", key);
    run(f, rq_cmd_target_epoch(&f->q, target, m2, m2, "library/debian"), &res);
    assert_string_equal(rq_res_field(&res, "repo"), "library/ubuntu");
    rq_res_free(&res);
    assert_true(raw_int(f, "PTTL %s", key) > RQ_PRESENT_TTL_MS - 60000);
    run(f, rq_cmd_target_get(&f->q, target), &res);
    assert_string_equal(rq_res_field(&res, "marker"), m2);
    rq_res_free(&res);
    /* Only a digest can be a marker. */
    struct err e;
    assert_int_equal(rq_exec(&f->rc, rq_cmd_target_epoch(&f->q, target, m2, "nope", "r"), &res,
                             &e),
                     -1);
    rq_res_free(&res);
    assert_non_null(strstr(e.msg, "marker is not a digest"));
    free(key);
}

/* Body of the manifest kept for digest, or NULL (caller frees). */
static char *manifest_kept(struct fixture *f, const char *digest)
{
    struct rq_res res;
    run(f, rq_cmd_manifest_cached(&f->q, digest), &res);
    char *body = NULL;
    if (res.status == RQ_VALUE) {
        assert_string_equal(rq_res_field(&res, "type"), "application/json");
        body = xstrdup(rq_res_field(&res, "body"));
    } else {
        assert_int_equal(res.status, RQ_EMPTY);
    }
    rq_res_free(&res);
    return body;
}

/* Kept manifests expire, go once dropped, and stay under the byte cap plus one body: a
 * keep lets the oldest go past it. */
static void test_rq__manifests_kept_under_a_byte_cap(void **state)
{
    struct fixture *f = *state;
    char body[101], digest[4][16];
    memset(body, 'x', 100);
    body[100] = '\0';
    for (int i = 0; i < 4; i++) {
        snprintf(digest[i], sizeof(digest[i]), "sha256:%d", i);
        assert_int_equal(status_of(f, rq_cmd_manifest_keep(&f->q, digest[i], "application/json",
                                                            body, 60000, 250)),
                         RQ_DONE);
    }
    /* 400 bytes kept so far: the first 100 are more than 250 back. */
    char *kept = manifest_kept(f, digest[0]);
    assert_null(kept);
    for (int i = 1; i < 4; i++) {
        kept = manifest_kept(f, digest[i]);
        assert_string_equal(kept, body);
        free(kept);
    }
    assert_int_equal(raw_int(f, "ZCARD %s", f->q.keys.manifests), 3);
    char *key = keys_manifest(&f->q.keys, digest[1]);
    long long pttl = raw_int(f, "PTTL %s", key);
    assert_true(pttl > 0 && pttl <= 60000);
    pttl = raw_int(f, "PTTL %s", f->q.keys.manifests);
    assert_true(pttl > 0 && pttl <= 60000);
    free(key);
    /* On the target now: no longer kept. */
    assert_int_equal(status_of(f, rq_cmd_manifest_drop(&f->q, digest[3])), RQ_DONE);
    assert_null(manifest_kept(f, digest[3]));
    assert_int_equal(raw_int(f, "ZCARD %s", f->q.keys.manifests), 2);
    assert_int_equal(status_of(f, rq_cmd_manifest_drop(&f->q, digest[3])), RQ_DONE);
    /* Dropping the newest shortens the log: the next keep still keeps the two before. */
    assert_int_equal(status_of(f, rq_cmd_manifest_keep(&f->q, digest[0], "application/json",
                                                        body, 60000, 250)),
                     RQ_DONE);
    for (int i = 0; i < 3; i++) {
        kept = manifest_kept(f, digest[i]);
        assert_non_null(kept);
        free(kept);
    }
    struct rq_res res;
    struct err e;
    assert_int_equal(rq_exec(&f->rc, rq_cmd_manifest_keep(&f->q, digest[0], "application/json",
                                                          body, 60000, 0),
                             &res, &e),
                     -1);
    rq_res_free(&res);
    assert_non_null(strstr(e.msg, "max_bytes must be positive"));
}

static void test_rq__leases_with_tokens(void **state)
{
    struct fixture *f = *state;
    char *lock = keys_blob_lock(&f->q.keys, "http://127.0.0.1:5000", "sha256:aaa");
    assert_int_equal(status_of(f, rq_cmd_lease_acquire(lock, "tokA", 60000)), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_lease_acquire(lock, "tokB", 60000)), RQ_STOLEN);
    assert_int_equal(status_of(f, rq_cmd_lease_renew(lock, "tokB", 60000)), RQ_GONE);
    assert_int_equal(status_of(f, rq_cmd_lease_release(lock, "tokB")), RQ_GONE);
    assert_int_equal(status_of(f, rq_cmd_lease_renew(lock, "tokA", 90000)), RQ_DONE);
    assert_true(raw_int(f, "PTTL %s", lock) > 60000);
    assert_int_equal(status_of(f, rq_cmd_lease_release(lock, "tokA")), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_lease_acquire(lock, "tokB", 60000)), RQ_DONE);
    long long pttl = raw_int(f, "PTTL %s", lock);
    assert_true(pttl > 0 && pttl <= 60000);
    /* Its time ran out (an expiry in the past, without waiting for one). */
    assert_int_equal(raw_int(f, "PEXPIREAT %s 1", lock), 1);
    assert_int_equal(status_of(f, rq_cmd_lease_acquire(lock, "tokC", 60000)), RQ_DONE);
    free(lock);
    assert_int_equal(status_of(f, rq_cmd_lease_acquire(f->q.keys.coordinator, "c1", 5000)),
                     RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_lease_acquire(f->q.keys.coordinator, "c2", 5000)),
                     RQ_STOLEN);
}

/* ---- runs and workers --------------------------------------------------- */

static void test_rq__run_bookkeeping(void **state)
{
    struct fixture *f = *state;
    struct rq_res res;
    assert_int_equal(status_of(f, rq_cmd_synced_commit(&f->q)), RQ_EMPTY);
    assert_int_equal(status_of(f, rq_cmd_run_get(&f->q, "r5")), RQ_EMPTY);
    run(f, rq_cmd_run_create(&f->q, "r5", "deadbeef", 10), &res);
    assert_int_equal(res.status, RQ_DONE);
    assert_true(res.n > 1700000000000LL);
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r5", "other", 10)), RQ_DUPLICATE);
    char *cur = raw_str(f, "GET %s", f->q.keys.run_current);
    assert_string_equal(cur, "r5");
    free(cur);
    for (int i = 0; i < 2; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k:%d", i);
        char *id = run_enqueue_and_take(f, "r5", key, JOB_JSON("k", "r5"), "w1", 60000, 3);
        assert_int_equal(status_of(f, rq_cmd_ack(&f->q, "w1", id, key, "r5", NULL, 0)),
                         RQ_DONE);
        free(id);
    }
    run(f, rq_cmd_run_get(&f->q, "r5"), &res);
    assert_string_equal(rq_res_field(&res, "state"), "running");
    assert_string_equal(rq_res_field(&res, "commit"), "deadbeef");
    assert_int_equal(rq_res_field_int(&res, "jobs_total", -1), 2);
    assert_int_equal(rq_res_field_int(&res, "jobs_done", -1), 2);
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_run_finish(&f->q, "r5", "done", 1)), RQ_DONE);
    run(f, rq_cmd_synced_commit(&f->q), &res);
    assert_string_equal(res.str, "deadbeef");
    rq_res_free(&res);
    assert_int_equal(raw_int(f, "EXISTS %s", f->q.keys.run_current), 0);
    assert_true(run_field(f, "r5", "finished_ms") > 0);
    /* A failed run never moves the marker. */
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r6", "cafe", 10)), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_run_finish(&f->q, "r6", "failed", 1)), RQ_DONE);
    run(f, rq_cmd_synced_commit(&f->q), &res);
    assert_string_equal(res.str, "deadbeef");
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_run_finish(&f->q, "nosuch", "done", 1)), RQ_GONE);
    assert_int_equal(raw_int(f, "ZCARD %s", f->q.keys.runs), 2);
}

static void test_rq__run_enqueue_counts_each_key_once(void **state)
{
    struct fixture *f = *state;
    struct rq_res res;
    struct err e;
    assert_int_equal(rq_exec(&f->rc, rq_cmd_run_enqueue(&f->q, "nosuch", "k:1", "{}"), &res, &e),
                     -1);
    rq_res_free(&res);
    assert_non_null(strstr(e.msg, "no such run"));
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r7", "abc", 10)), RQ_DONE);
    run(f, rq_cmd_run_current(&f->q), &res);
    assert_string_equal(res.str, "r7");
    rq_res_free(&res);
    free(run_enqueue(f, "r7", "k:1", JOB_JSON("k:1", "r7"), RQ_ADDED));
    free(run_enqueue(f, "r7", "k:2", JOB_JSON("k:2", "r7"), RQ_ADDED));
    /* A resumed run enqueues again: deduplicated, and not counted twice. */
    free(run_enqueue(f, "r7", "k:1", JOB_JSON("k:1", "r7"), RQ_DUPLICATE));
    assert_int_equal(run_field(f, "r7", "jobs_total"), 2);
    char *runkeys = keys_run_keys(&f->q.keys, "r7");
    assert_int_equal(raw_int(f, "SCARD %s", runkeys), 2);
    assert_int_equal(status_of(f, rq_cmd_run_finish(&f->q, "r7", "deferred", 1)), RQ_DONE);
    assert_int_equal(raw_int(f, "EXISTS %s", runkeys), 0);
    free(runkeys);
    assert_int_equal(status_of(f, rq_cmd_run_current(&f->q)), RQ_EMPTY);
    /* Deferred is not done: the marker stays. */
    assert_int_equal(status_of(f, rq_cmd_synced_commit(&f->q)), RQ_EMPTY);
}

/* A sync-file entry's jobs count in its own record as in the run's: jobs_total once per
 * key, the ends (a retry only spends GETs), the counted GETs; an entry noted without a
 * job is listed; an official job counts in no entry. The key -> entry map goes when the
 * run finishes; the entries stay with the record, and go with it. */
static void test_rq__run_entries(void **state)
{
    struct fixture *f = *state;
    struct rq_res res;
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r9", "abc", 10)), RQ_DONE);
    const char *keys[] = {"e:a", "e:b", "e:c", "e:official"};
    const char *entries[] = {"org/app", "org/app", "ghcr.io/x/y", NULL};
    char *ids[4];
    for (int i = 0; i < 4; i++) {
        run(f, rq_cmd_run_enqueue_entry(&f->q, "r9", keys[i], JOB_JSON("e", "r9"), entries[i],
                                        entries[i] ? "mirror/app" : NULL),
            &res);
        assert_int_equal(res.status, RQ_ADDED);
        rq_res_free(&res);
        ids[i] = take_as(f, "w1", 60000, 3, keys[i], JOB_JSON("e", "r9"));
    }
    /* enqueued again (a resumed run): counted once */
    run(f, rq_cmd_run_enqueue_entry(&f->q, "r9", "e:a", JOB_JSON("e", "r9"), "org/app",
                                    "mirror/app"),
        &res);
    rq_res_free(&res);
    struct rq_counter gets3[] = {{"upstream_manifest_gets", 3}},
                      gets2[] = {{"upstream_manifest_gets", 2}};
    assert_int_equal(status_of(f, rq_cmd_ack(&f->q, "w1", ids[0], "e:a", "r9", gets3, 1)),
                     RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_retry(&f->q, "w1", ids[1], "e:b", JOB_JSON("e", "r9"),
                                               60000, "backoff", "r9", gets2, 1)),
                     RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_fail(&f->q, "w1", ids[2], "e:c", "boom", "r9", gets2, 1)),
                     RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_ack(&f->q, "w1", ids[3], "e:official", "r9", gets3, 1)),
                     RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_run_entry_note(&f->q, "r9", "quay.io/gone", "target",
                                                        "gone")),
                     RQ_DONE);
    run(f, rq_cmd_run_entries(&f->q, "r9"), &res);
    assert_int_equal(res.nitems, 2 * 9);
    assert_string_equal(rq_res_field(&res, "target org/app"), "mirror/app");
    assert_int_equal(rq_res_field_int(&res, "jobs_total org/app", -1), 2);
    assert_int_equal(rq_res_field_int(&res, "jobs_done org/app", -1), 1);
    assert_int_equal(rq_res_field_int(&res, "upstream_manifest_gets org/app", -1), 5);
    assert_int_equal(rq_res_field_int(&res, "jobs_total ghcr.io/x/y", -1), 1);
    assert_int_equal(rq_res_field_int(&res, "jobs_failed ghcr.io/x/y", -1), 1);
    assert_int_equal(rq_res_field_int(&res, "upstream_manifest_gets ghcr.io/x/y", -1), 2);
    assert_string_equal(rq_res_field(&res, "target ghcr.io/x/y"), "mirror/app");
    assert_string_equal(rq_res_field(&res, "target quay.io/gone"), "gone");
    rq_res_free(&res);
    for (int i = 0; i < 4; i++)
        free(ids[i]);
    char *entry_of = keys_run_entry_of(&f->q.keys, "r9");
    assert_int_equal(raw_int(f, "HLEN %s", entry_of), 3);
    assert_int_equal(status_of(f, rq_cmd_run_finish(&f->q, "r9", "failed", 0)), RQ_DONE);
    assert_int_equal(raw_int(f, "EXISTS %s", entry_of), 0);
    free(entry_of);
    char *kept = keys_run_entries(&f->q.keys, "r9");
    assert_int_equal(raw_int(f, "EXISTS %s", kept), 1);
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r10", "abd", 1)), RQ_DONE);
    assert_int_equal(raw_int(f, "EXISTS %s", kept), 0);
    free(kept);
}

static void test_rq__purge_delayed_by_run(void **state)
{
    struct fixture *f = *state;
    const char *runs[] = {"ra", "rb", "ra"};
    for (int i = 0; i < 3; i++) {
        char key[16], json[64];
        snprintf(key, sizeof(key), "d:%d", i);
        snprintf(json, sizeof(json), "{\"run\":\"%s\",\"key\":\"%s\"}", runs[i], key);
        char *id = enqueue_and_take(f, key, json, "w1", 60000, 3);
        assert_int_equal(status_of(f, rq_cmd_retry(&f->q, "w1", id, key, json, 600000, "budget",
                                                   NULL, NULL, 0)),
                         RQ_DONE);
        free(id);
    }
    struct rq_res res;
    run(f, rq_cmd_purge_delayed(&f->q, "ra"), &res);
    assert_int_equal(res.n, 2);
    rq_res_free(&res);
    assert_int_equal(raw_int(f, "ZCARD %s", f->q.keys.jobs_delayed), 1);
    assert_int_equal(raw_int(f, "HLEN %s", f->q.keys.jobs_delayed_payload), 1);
    /* Purged keys are free again; the other run's job is still delayed. */
    assert_int_equal(status_of(f, rq_cmd_enqueue(&f->q, "d:0", "{}")), RQ_ADDED);
    assert_int_equal(status_of(f, rq_cmd_enqueue(&f->q, "d:1", "{}")), RQ_DUPLICATE);
    run(f, rq_cmd_purge_delayed(&f->q, NULL), &res);
    assert_int_equal(res.n, 1);
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_enqueue(&f->q, "d:1", "{}")), RQ_ADDED);
    assert_int_equal(stat_of(f, "purged"), 3);
}

static void test_rq__worker_heartbeat(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(status_of(f, rq_cmd_worker_beat(&f->q, "host-a:1", "{\"pid\":42}", 30)),
                     RQ_DONE);
    char *w = keys_worker(&f->q.keys, "host-a:1");
    raw_int(f, "HSET %s host-a:1 b", f->q.keys.worker_budgets);
    char *v = raw_str(f, "GET %s", w);
    assert_string_equal(v, "{\"pid\":42}");
    free(v);
    long long ttl = raw_int(f, "TTL %s", w);
    assert_true(ttl > 0 && ttl <= 30);
    assert_true(raw_int(f, "ZSCORE %s host-a:1", f->q.keys.workers) > 1700000000000LL);
    assert_int_equal(status_of(f, rq_cmd_worker_gone(&f->q, "host-a:1")), RQ_DONE);
    assert_int_equal(raw_int(f, "EXISTS %s", w), 0);
    assert_int_equal(raw_int(f, "ZCARD %s", f->q.keys.workers), 0);
    assert_int_equal(raw_int(f, "HLEN %s", f->q.keys.worker_budgets), 0);
    free(w);
}

/* ---- run accounting ----------------------------------------------------- */

/* Take the next job (key, and json unless NULL) as w1 and ack it for run_id. */
static void take_and_ack(struct fixture *f, const char *key, const char *json,
                         const char *run_id)
{
    char *id = take_as(f, "w1", 60000, 5, key, json);
    assert_int_equal(status_of(f, rq_cmd_ack(&f->q, "w1", id, key, run_id, NULL, 0)), RQ_DONE);
    free(id);
}

static void test_rq__resumed_run_enqueues_only_unsettled_keys(void **state)
{
    struct fixture *f = *state;
    static const char *const keys[] = {"a:1", "b:1", "c:1", "d:1", "e:1"};
    static const char *const jobs[] = {JOB_JSON("a:1", "r1"), JOB_JSON("b:1", "r1"),
                                       JOB_JSON("c:1", "r1"), JOB_JSON("d:1", "r1"),
                                       JOB_JSON("e:1", "r1")};
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r1", "c1", 10)), RQ_DONE);
    for (int i = 0; i < 5; i++)
        free(run_enqueue(f, "r1", keys[i], jobs[i], RQ_ADDED));
    for (int i = 0; i < 4; i++)
        take_and_ack(f, keys[i], NULL, "r1");
    /* The coordinator died at 4/5 done; the resumed run enqueues every key again. */
    for (int i = 0; i < 5; i++)
        free(run_enqueue(f, "r1", keys[i], jobs[i], i < 4 ? RQ_SETTLED : RQ_DUPLICATE));
    assert_int_equal(raw_int(f, "XLEN %s", f->q.keys.jobs), 1);
    assert_int_equal(run_field(f, "r1", "jobs_total"), 5);
    assert_int_equal(run_field(f, "r1", "jobs_done"), 4);
    take_and_ack(f, "e:1", NULL, "r1");
    assert_int_equal(run_field(f, "r1", "jobs_done"), 5);
    assert_int_equal(raw_int(f, "XLEN %s", f->q.keys.jobs), 0);
}

static void test_rq__duplicate_delivery_settles_once(void **state)
{
    struct fixture *f = *state;
    const char *json = JOB_JSON("dup:1", "r1");
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r1", "c1", 10)), RQ_DONE);
    free(run_enqueue(f, "r1", "dup:1", json, RQ_ADDED));
    free(run_enqueue(f, "r1", "dup:1", json, RQ_DUPLICATE));
    /* The dedupe entry is lost (a partly restored AOF): the key gets a second entry. */
    raw_int(f, "HDEL %s dup:1", f->q.keys.jobs_index);
    free(run_enqueue(f, "r1", "dup:1", json, RQ_ADDED));
    assert_int_equal(raw_int(f, "XLEN %s", f->q.keys.jobs), 2);
    char *a = take_key(f, "w1", "dup:1"), *b = take_key(f, "w2", "dup:1");
    struct rq_counter c[] = {{"tags_written", 1}};
    assert_int_equal(status_of(f, rq_cmd_ack(&f->q, "w1", a, "dup:1", "r1", c, 1)), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_fail(&f->q, "w2", b, "dup:1", "boom", "r1", c, 1)),
                     RQ_DONE);
    /* One key, one outcome: the first; the work of both deliveries counts. */
    assert_int_equal(run_field(f, "r1", "jobs_total"), 1);
    assert_int_equal(run_field(f, "r1", "jobs_done"), 1);
    assert_int_equal(run_field(f, "r1", "jobs_failed"), 0);
    assert_int_equal(run_field(f, "r1", "tags_written"), 2);
    free(a);
    free(b);
}

static void test_rq__new_run_takes_over_old_runs_leftovers(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r1", "c1", 10)), RQ_DONE);
    free(run_enqueue(f, "r1", "held:1", JOB_JSON("held:1", "r1"), RQ_ADDED));
    free(run_enqueue(f, "r1", "wait:1", JOB_JSON("wait:1", "r1"), RQ_ADDED));
    char *held = take_key(f, "w1", "held:1");
    /* r1 ended with a job waiting and one held by a worker. */
    assert_int_equal(status_of(f, rq_cmd_run_finish(&f->q, "r1", "failed", 0)), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r2", "c2", 10)), RQ_DONE);
    /* The waiting one is replaced by r2's job; the held one is followed by it. */
    free(run_enqueue(f, "r2", "wait:1", JOB_JSON("wait:1", "r2"), RQ_ADDED));
    free(run_enqueue(f, "r2", "held:1", JOB_JSON("held:1", "r2"), RQ_DUPLICATE));
    assert_int_equal(run_field(f, "r2", "jobs_total"), 2);
    take_and_ack(f, "wait:1", JOB_JSON("wait:1", "r2"), "r2");
    /* The held job of r1 settles (in r1, which ended: its record stays as it was)... */
    assert_int_equal(status_of(f, rq_cmd_ack(&f->q, "w1", held, "held:1", "r1", NULL, 0)),
                     RQ_DONE);
    assert_int_equal(run_field(f, "r1", "jobs_done"), 0);
    /* ... and r2's job for the key comes next. */
    take_and_ack(f, "held:1", JOB_JSON("held:1", "r2"), "r2");
    assert_int_equal(run_field(f, "r2", "jobs_done"), 2);
    assert_int_equal(raw_int(f, "XLEN %s", f->q.keys.jobs), 0);
    free(held);
}

static void test_rq__invalid_payload_counts_in_its_run(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r1", "c1", 10)), RQ_DONE);
    /* A payload the worker cannot decode, but that names its run. */
    const char *named = "{\"v\":99,\"run\":\"r1\",\"key\":\"bad:1\"}";
    free(run_enqueue(f, "r1", "bad:1", named, RQ_ADDED));
    /* Not JSON at all: the current run holds the key. */
    free(run_enqueue(f, "r1", "bad:2", "{not json", RQ_ADDED));
    for (int i = 1; i <= 2; i++) {
        char key[16];
        snprintf(key, sizeof(key), "bad:%d", i);
        char *id = take_key(f, "w1", key);
        assert_int_equal(status_of(f, rq_cmd_fail(&f->q, "w1", id, key, "invalid job payload",
                                                  NULL, NULL, 0)),
                         RQ_DONE);
        free(id);
    }
    assert_int_equal(run_field(f, "r1", "jobs_failed"), 2);
    /* An entry without a job field, dead-lettered by take, counts too. */
    free(run_enqueue(f, "r1", "bad:3", "{}", RQ_ADDED));
    raw_int(f, "XTRIM %s MAXLEN 0", f->q.keys.jobs);
    raw_int(f, "XADD %s * key bad:3", f->q.keys.jobs);
    struct rq_res res;
    run(f, rq_cmd_take(&f->q, "w1", 60000, 5, 30000), &res);
    assert_int_equal(res.status, RQ_EMPTY);
    assert_int_equal(res.nitems, 1);
    rq_res_free(&res);
    assert_int_equal(run_field(f, "r1", "jobs_dead"), 1);
    assert_int_equal(raw_int(f, "XLEN %s", f->q.keys.jobs_dead), 3);
}

static void test_rq__run_check_finds_lost_jobs(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "r1", "c1", 10)), RQ_DONE);
    char *gone = run_enqueue(f, "r1", "gone:1", JOB_JSON("gone:1", "r1"), RQ_ADDED);
    free(run_enqueue(f, "r1", "held:1", JOB_JSON("held:1", "r1"), RQ_ADDED));
    free(run_enqueue(f, "r1", "done:1", JOB_JSON("done:1", "r1"), RQ_ADDED));
    free(run_enqueue(f, "r1", "late:1", JOB_JSON("late:1", "r1"), RQ_ADDED));
    free(run_enqueue(f, "r1", "wait:1", JOB_JSON("wait:1", "r1"), RQ_ADDED));
    /* gone:1's entry was deleted by hand; held:1 is held, done:1 settled, late:1
     * waits for the budget, wait:1 waits in the stream. */
    raw_int(f, "XDEL %s %s", f->q.keys.jobs, gone);
    free(gone);
    free(take_key(f, "w1", "held:1"));
    take_and_ack(f, "done:1", NULL, "r1");
    char *id = take_key(f, "w1", "late:1");
    assert_int_equal(status_of(f, rq_cmd_retry(&f->q, "w1", id, "late:1",
                                               JOB_JSON("late:1", "r1"), 600000, "budget", "r1",
                                               NULL, 0)),
                     RQ_DONE);
    free(id);
    struct rq_res res;
    run(f, rq_cmd_run_check(&f->q, "r1", "0", 100), &res);
    assert_string_equal(res.str, "0");
    assert_int_equal(res.nitems, 1);
    assert_string_equal(res.items[0], "gone:1");
    rq_res_free(&res);
    /* Enqueued again (its dead dedupe entry does not hold it up), it is not lost. */
    free(run_enqueue(f, "r1", "gone:1", JOB_JSON("gone:1", "r1"), RQ_ADDED));
    run(f, rq_cmd_run_check(&f->q, "r1", "0", 100), &res);
    assert_int_equal(res.nitems, 0);
    rq_res_free(&res);
}

static void test_rq__old_runs_are_dropped(void **state)
{
    struct fixture *f = *state;
    char id[8];
    for (int i = 1; i <= 4; i++) {
        snprintf(id, sizeof(id), "r%d", i);
        assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, id, "c", 2)), RQ_DONE);
        assert_int_equal(status_of(f, rq_cmd_run_finish(&f->q, id, "done", 0)), RQ_DONE);
        sleep_ms(2); /* runs are ordered by their start (ms) */
    }
    assert_int_equal(raw_int(f, "ZCARD %s", f->q.keys.runs), 2);
    assert_int_equal(status_of(f, rq_cmd_run_get(&f->q, "r1")), RQ_EMPTY);
    assert_int_equal(status_of(f, rq_cmd_run_get(&f->q, "r2")), RQ_EMPTY);
    assert_int_equal(status_of(f, rq_cmd_run_get(&f->q, "r3")), RQ_VALUE);
    assert_int_equal(status_of(f, rq_cmd_run_get(&f->q, "r4")), RQ_VALUE);
}

static void test_rq__budget_sources_expire(void **state)
{
    struct fixture *f = *state;
    struct ratelimit_info rl = {0};
    rl.has_limit = rl.has_remaining = 1;
    rl.limit = 100;
    rl.remaining = 90;
    rl.limit_window = 21600;
    assert_int_equal(status_of(f, rq_cmd_budget_observe(&f->q, "1.2.3.4", &rl, NULL)), RQ_VALUE);
    char *budget = keys_budget(&f->q.keys, "1.2.3.4");
    long long ttl = raw_int(f, "PTTL %s", budget);
    assert_true(ttl > 86400000LL && ttl <= 7 * 86400000LL);
    free(budget);
}

/* ---- the layout's readers and the counts the functions keep -------------- */

/* The delayed set's counts per why and a running run's jobs_deferred follow
 * jobs in and out (retry, promote, takeover, purge): no reader parses payloads. */
static void test_rq__delayed_counts_and_run_deferred(void **state)
{
    struct fixture *f = *state;
    struct rq_res res;
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "rd", "c", 10)), RQ_DONE);
    static const struct {
        const char *key, *why;
        long long delay_ms;
    } jobs[] = {{"b:0", "budget", 600000}, {"b:1", "budget", 0}, {"o:0", "backoff", 600000},
                {"g:0", "registry", 600000}};
    for (size_t i = 0; i < sizeof(jobs) / sizeof(jobs[0]); i++) {
        char json[96];
        snprintf(json, sizeof(json), "{\"v\":1,\"run\":\"rd\",\"key\":\"%s\"}", jobs[i].key);
        char *id = run_enqueue_and_take(f, "rd", jobs[i].key, json, "w1", 60000, 3);
        assert_int_equal(status_of(f, rq_cmd_retry(&f->q, "w1", id, jobs[i].key, json,
                                                   jobs[i].delay_ms, jobs[i].why, NULL, NULL, 0)),
                         RQ_DONE);
        free(id);
    }
    assert_int_equal(run_field(f, "rd", "jobs_deferred"), 2);
    run(f, rq_cmd_delayed_counts(&f->q), &res);
    assert_int_equal(rq_res_field_int(&res, "budget", -1), 2);
    assert_int_equal(rq_res_field_int(&res, "backoff", -1), 1);
    assert_int_equal(rq_res_field_int(&res, "registry", -1), 1);
    rq_res_free(&res);
    /* b:1 is due at once: back in the queue, no longer deferred. */
    run(f, rq_cmd_promote(&f->q, 10), &res);
    assert_int_equal(res.n, 1);
    rq_res_free(&res);
    assert_int_equal(run_field(f, "rd", "jobs_deferred"), 1);
    run(f, rq_cmd_delayed_counts(&f->q), &res);
    assert_int_equal(rq_res_field_int(&res, "budget", -1), 1);
    rq_res_free(&res);
    run(f, rq_cmd_delayed_len(&f->q), &res);
    assert_int_equal(res.n, 3);
    rq_res_free(&res);
    run(f, rq_cmd_delayed_next(&f->q), &res);
    assert_int_equal(res.status, RQ_VALUE);
    assert_true(res.n > 1700000000000LL);
    rq_res_free(&res);
    /* A newer run takes a deferred job over: it leaves the old run's count. */
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "rd2", "c", 10)), RQ_DONE);
    free(run_enqueue(f, "rd2", "b:0", "{\"v\":1,\"run\":\"rd2\",\"key\":\"b:0\"}", RQ_ADDED));
    assert_int_equal(run_field(f, "rd", "jobs_deferred"), 0);
    run(f, rq_cmd_delayed_counts(&f->q), &res);
    assert_int_equal(rq_res_field_int(&res, "budget", -1), 0);
    rq_res_free(&res);
    /* The rest is purged: the counts go with the last delayed job. */
    run(f, rq_cmd_purge_delayed(&f->q, NULL), &res);
    assert_int_equal(res.n, 2);
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_delayed_counts(&f->q)), RQ_EMPTY);
    assert_int_equal(status_of(f, rq_cmd_delayed_next(&f->q)), RQ_EMPTY);
}

/* The run that ends keeps how many of its jobs waited for the budget. */
static void test_rq__ended_run_keeps_its_deferred_count(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "re", "c", 10)), RQ_DONE);
    const char *json = "{\"v\":1,\"run\":\"re\",\"key\":\"k:0\"}";
    char *id = run_enqueue_and_take(f, "re", "k:0", json, "w1", 60000, 3);
    assert_int_equal(status_of(f, rq_cmd_retry(&f->q, "w1", id, "k:0", json, 600000, "budget",
                                               "re", NULL, 0)),
                     RQ_DONE);
    free(id);
    assert_int_equal(status_of(f, rq_cmd_purge_delayed(&f->q, "re")), RQ_VALUE);
    assert_int_equal(status_of(f, rq_cmd_run_finish(&f->q, "re", "deferred", 0)), RQ_DONE);
    assert_int_equal(run_field(f, "re", "jobs_deferred"), 1);
    assert_int_equal(raw_int(f, "ZCARD %s", f->q.keys.jobs_delayed), 0);
}

/* Sources are listed from a set the functions keep, never found by scanning keys. */
static void test_rq__budget_sources_listed(void **state)
{
    struct fixture *f = *state;
    struct rq_res res;
    struct ratelimit_info rl = hub(100, 40, 21600), none;
    ratelimit_init(&none);
    run(f, rq_cmd_budget_sources(&f->q), &res);
    assert_int_equal(res.nitems, 0);
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_budget_observe(&f->q, "192.0.2.7", &rl, NULL)),
                     RQ_VALUE);
    assert_int_equal(status_of(f, rq_cmd_budget_observe(&f->q, "src u", &none, NULL)), RQ_VALUE);
    assert_int_equal(status_of(f, rq_cmd_budget_pause(&f->q, "src-p", 1000)), RQ_VALUE);
    long long left = 0;
    acquire(f, "192.0.2.7", 1, 0, 60000, "r1", RQ_GRANTED, &left);
    assert_int_equal(left, 39);
    run(f, rq_cmd_budget_sources(&f->q), &res);
    assert_int_equal(res.nitems, 3);
    rq_res_free(&res);
    run(f, rq_cmd_budget_get(&f->q, "192.0.2.7"), &res);
    assert_int_equal(rq_res_field_int(&res, "remaining", -1), 40);
    assert_int_equal(rq_res_field_int(&res, "limit", -1), 100);
    rq_res_free(&res);
    run(f, rq_cmd_budget_get(&f->q, "src u"), &res); /* a name keys.c encodes */
    assert_int_equal(rq_res_field_int(&res, "unlimited", -1), 1);
    rq_res_free(&res);
    run(f, rq_cmd_time(), &res);
    long long now = res.n;
    rq_res_free(&res);
    run(f, rq_cmd_budget_reserved(&f->q, "192.0.2.7", now), &res);
    assert_int_equal(res.n, 1);
    rq_res_free(&res);
    run(f, rq_cmd_budget_reserved(&f->q, "192.0.2.7", now + 120000), &res);
    assert_int_equal(res.n, 0);
    rq_res_free(&res);
}

/* What status reads, each through its named call. */
static void test_rq__readers(void **state)
{
    struct fixture *f = *state;
    struct rq_res res;
    run(f, rq_cmd_time(), &res);
    assert_int_equal(res.status, RQ_VALUE);
    assert_true(res.n > 1700000000000LL);
    rq_res_free(&res);
    run(f, rq_cmd_paused(&f->q), &res);
    assert_int_equal(res.n, 0);
    rq_res_free(&res);
    freeReplyObject(redisCommand(f->rc.c, "SET %s 1", f->q.keys.ctl_paused));
    run(f, rq_cmd_paused(&f->q), &res);
    assert_int_equal(res.n, 1);
    rq_res_free(&res);
    /* A lease: its holder and what is left of it. */
    assert_int_equal(status_of(f, rq_cmd_lease_holder(f->q.keys.coordinator)), RQ_EMPTY);
    assert_int_equal(status_of(f, rq_cmd_lease_acquire(f->q.keys.coordinator, "h:1:x", 30000)),
                     RQ_DONE);
    run(f, rq_cmd_lease_holder(f->q.keys.coordinator), &res);
    assert_string_equal(res.str, "h:1:x");
    rq_res_free(&res);
    run(f, rq_cmd_lease_ttl(f->q.keys.coordinator), &res);
    assert_true(res.n > 0 && res.n <= 30000);
    rq_res_free(&res);
    /* The queue: two jobs, one held by w1. */
    assert_int_equal(status_of(f, rq_cmd_enqueue(&f->q, "q:0", "{}")), RQ_ADDED);
    assert_int_equal(status_of(f, rq_cmd_enqueue(&f->q, "q:1", "{}")), RQ_ADDED);
    freeReplyObject(redisCommand(f->rc.c, "DEL %s", f->q.keys.ctl_paused));
    char *id = take_key(f, "w1", "q:0");
    run(f, rq_cmd_queue_len(&f->q), &res);
    assert_int_equal(res.n, 2);
    rq_res_free(&res);
    run(f, rq_cmd_queue_held(&f->q), &res);
    assert_int_equal(res.n, 1);
    assert_int_equal(res.nitems, 2);
    assert_string_equal(res.items[0], "w1");
    assert_string_equal(res.items[1], "1");
    rq_res_free(&res);
    /* Dead letters, newest first, without their payloads. */
    assert_int_equal(status_of(f, rq_cmd_fail(&f->q, "w1", id, "q:0", "no such tag", NULL,
                                              NULL, 0)),
                     RQ_DONE);
    run(f, rq_cmd_dead_len(&f->q), &res);
    assert_int_equal(res.n, 1);
    rq_res_free(&res);
    run(f, rq_cmd_dead_newest(&f->q, 5), &res);
    assert_int_equal(res.n, 1);
    assert_int_equal(res.nitems, RQ_DEAD_FIELDS);
    assert_string_equal(res.items[0], id);
    assert_string_equal(res.items[1], "q:0");
    assert_string_equal(res.items[2], "no such tag");
    assert_string_equal(res.items[3], "1");
    assert_true(strtoll(res.items[4], NULL, 10) > 1700000000000LL);
    rq_res_free(&res);
    free(id);
    /* Workers and their heartbeats. */
    assert_int_equal(status_of(f, rq_cmd_workers(&f->q)), RQ_EMPTY);
    assert_int_equal(status_of(f, rq_cmd_worker_beat(&f->q, "h:7", "{\"pid\":7}", 30)), RQ_DONE);
    run(f, rq_cmd_workers(&f->q), &res);
    assert_int_equal(res.nitems, 2);
    assert_string_equal(res.items[0], "h:7");
    rq_res_free(&res);
    run(f, rq_cmd_worker_get(&f->q, "h:7"), &res);
    assert_string_equal(res.str, "{\"pid\":7}");
    rq_res_free(&res);
    assert_int_equal(status_of(f, rq_cmd_worker_get(&f->q, "h:8")), RQ_EMPTY);
    /* Runs, newest first, and what the coordinator notes in them. */
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "ra", "c", 10)), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_run_finish(&f->q, "ra", "done", 0)), RQ_DONE);
    sleep_ms(2); /* runs are ordered by their start (ms) */
    assert_int_equal(status_of(f, rq_cmd_run_create(&f->q, "rb", "c", 10)), RQ_DONE);
    assert_int_equal(status_of(f, rq_cmd_run_note(&f->q, "rb", "from", "abc")), RQ_DONE);
    run(f, rq_cmd_runs_newest(&f->q, 1), &res);
    assert_int_equal(res.nitems, 1);
    assert_string_equal(res.items[0], "rb");
    rq_res_free(&res);
    run(f, rq_cmd_run_get(&f->q, "rb"), &res);
    assert_string_equal(rq_res_field(&res, "from"), "abc");
    rq_res_free(&res);
}

/* During a rolling update an older program calls the newer library with the
 * keys and arguments it knew: still served, the new bookkeeping skipped. */
static void test_rq__older_callers_are_served(void **state)
{
    struct fixture *f = *state;
    const struct keys *k = &f->q.keys;
    char *budget = keys_budget(k, "old");
    char *inflight = keys_budget_inflight(k, "old");
    assert_int_equal(raw_int(f, "FCALL hubsync_budget_observe 2 %s %s limited 100 50 21600 x",
                             budget, inflight),
                     50);
    assert_int_equal(raw_int(f, "FCALL hubsync_budget_pause 2 %s %s 1000", budget, k->stats),
                     1000);
    const char *json = "{\"v\":1,\"run\":\"ro\",\"key\":\"o:1\"}";
    char *id = enqueue_and_take(f, "o:1", json, "w1", 60000, 3);
    assert_int_equal(raw_int(f, "FCALL hubsync_retry 7 %s %s %s %s %s %s %s workers w1 %s o:1 x "
                                "ro %s 0 budget",
                             k->jobs, k->jobs_index, k->stats, k->run_current, k->jobs_handover,
                             k->jobs_delayed, k->jobs_delayed_payload, id, json),
                     1);
    assert_int_equal(raw_int(f, "FCALL hubsync_promote 5 %s %s %s %s %s 10", k->jobs,
                             k->jobs_index, k->jobs_delayed, k->jobs_delayed_payload, k->stats),
                     1);
    assert_int_equal(raw_int(f, "FCALL hubsync_purge_delayed 4 %s %s %s %s %s", k->jobs_index,
                             k->jobs_delayed, k->jobs_delayed_payload, k->stats, ""),
                     0);
    free(id);
    free(budget);
    free(inflight);
}

/* ---- recovery ----------------------------------------------------------- */

static void test_rq__repairs_missing_function_and_group(void **state)
{
    struct fixture *f = *state;
    redisReply *r = redisCommand(f->rc.c, "FUNCTION FLUSH");
    freeReplyObject(r);
    /* Functions gone: the call loads the library again and succeeds. */
    assert_int_equal(status_of(f, rq_cmd_enqueue(&f->q, "a:1", "{}")), RQ_ADDED);
    r = redisCommand(f->rc.c, "DEL %s %s", f->q.keys.jobs, f->q.keys.jobs_index);
    freeReplyObject(r);
    assert_int_equal(status_of(f, rq_cmd_enqueue(&f->q, "a:2", "{}")), RQ_ADDED);
    /* The stream exists again but has no group: take recreates it (from 0,
     * so the job enqueued meanwhile is delivered). */
    struct rq_res res;
    run(f, rq_cmd_take(&f->q, "w1", 60000, 3, 30000), &res);
    assert_int_equal(res.status, RQ_JOB);
    assert_string_equal(res.key, "a:2");
    rq_res_free(&res);
    r = redisCommand(f->rc.c, "DEL %s", f->q.keys.jobs);
    freeReplyObject(r);
    run(f, rq_cmd_read_new(&f->q, "w1", 100), &res);
    assert_int_equal(res.status, RQ_EMPTY);
    rq_res_free(&res);
}

static void test_rq__prune_consumers_keeps_pending(void **state)
{
    struct fixture *f = *state;
    char *id1 = enqueue_and_take(f, "c:1", "{}", "ghost", 60000, 3);
    char *id2 = enqueue_and_take(f, "c:2", "{}", "busy", 60000, 3);
    assert_int_equal(status_of(f, rq_cmd_ack(&f->q, "ghost", id1, "c:1", NULL, NULL, 0)),
                     RQ_DONE);
    struct rq_res res;
    run(f, rq_cmd_prune_consumers(&f->q, 3600000), &res);
    assert_int_equal(res.n, 0); /* nobody idle for an hour */
    rq_res_free(&res);
    run(f, rq_cmd_prune_consumers(&f->q, 0), &res);
    assert_int_equal(res.n, 1);
    rq_res_free(&res);
    redisReply *r = redisCommand(f->rc.c, "XINFO CONSUMERS %s workers", f->q.keys.jobs);
    assert_int_equal(r->elements, 1);
    assert_string_equal(r->element[0]->element[1]->str, "busy");
    freeReplyObject(r);
    /* The job pending with "busy" was kept. */
    assert_int_equal(status_of(f, rq_cmd_renew(&f->q, "busy", id2)), RQ_DONE);
    free(id1);
    free(id2);
}

static void test_rq__repair_index_releases_leaks(void **state)
{
    struct fixture *f = *state;
    struct rq_res a;
    run(f, rq_cmd_enqueue(&f->q, "r:1", "{}"), &a);
    assert_int_equal(status_of(f, rq_cmd_enqueue(&f->q, "r:2", "{}")), RQ_ADDED);
    /* Leaks: an entry deleted by hand, a "delayed" key with no schedule, junk. */
    freeReplyObject(redisCommand(f->rc.c, "XDEL %s %s", f->q.keys.jobs, a.id));
    freeReplyObject(redisCommand(f->rc.c, "HSET %s ghost delayed junk x", f->q.keys.jobs_index));
    rq_res_free(&a);
    struct rq_res res;
    run(f, rq_cmd_repair_index(&f->q, "0", 100), &res);
    assert_int_equal(res.n, 3);
    assert_string_equal(res.str, "0"); /* scan complete */
    rq_res_free(&res);
    assert_int_equal(raw_int(f, "HLEN %s", f->q.keys.jobs_index), 1);
    assert_int_equal(stat_of(f, "index_repaired"), 3);
    assert_int_equal(status_of(f, rq_cmd_enqueue(&f->q, "r:1", "{}")), RQ_ADDED);
    assert_int_equal(status_of(f, rq_cmd_enqueue(&f->q, "r:2", "{}")), RQ_DUPLICATE);
}

static void test_rq__sync_reconnects_after_restart(void **state)
{
    (void)state;
    struct own o;
    struct rconn rc;
    struct rq_res res;
    struct err e;
    own_new(&o, 1);
    assert_int_equal(rconn_open(&rc, o.s.url, NULL, &o.setup, &e), 0);
    assert_int_equal(rq_exec(&rc, rq_cmd_enqueue(&o.q, "k:1", "{}"), &res, &e), 0);
    rq_res_free(&res);
    server_stop(&o.s);
    assert_int_equal(rq_exec(&rc, rq_cmd_enqueue(&o.q, "k:2", "{}"), &res, &e), -1);
    rq_res_free(&res);
    assert_non_null(strstr(e.msg, "redis 127.0.0.1:"));
    server_start(&o.s); /* AOF: the job survived */
    assert_int_equal(rq_exec(&rc, rq_cmd_enqueue(&o.q, "k:1", "{}"), &res, &e), 0);
    assert_int_equal(res.status, RQ_DUPLICATE);
    rq_res_free(&res);
    /* Back empty: the reconnect's setup loads the library and the group. */
    server_restart_empty(&o.s);
    rq_exec(&rc, rq_cmd_stats(&o.q), &res, &e); /* notices the dead socket */
    rq_res_free(&res);
    assert_int_equal(rq_exec(&rc, rq_cmd_enqueue(&o.q, "k:1", "{}"), &res, &e), 0);
    assert_int_equal(res.status, RQ_ADDED);
    rq_res_free(&res);
    assert_int_equal(rq_exec(&rc, rq_cmd_take(&o.q, "w", 1000, 3, 30000), &res, &e), 0);
    assert_int_equal(res.status, RQ_JOB);
    rq_res_free(&res);
    rconn_close(&rc);
    own_free(&o);
}

/* ---- asynchronous ------------------------------------------------------- */

struct actx {
    struct ev_loop *loop;
    struct rq *q;
    struct rconn_async *cmd, *blk;
    int ups, downs;
    int answers;
    int side_answers; /* answers to enqueue_later */
    enum rq_status last;
    char *id, *key;
    long long n;
    char err[ERR_MSG_MAX + 32];
    ev_timer timer;
};

static void on_state(struct rconn_async *ra, int up, void *arg)
{
    (void)ra;
    struct actx *a = arg;
    if (up)
        a->ups++;
    else
        a->downs++;
}

static void on_answer(struct rq_res *res, const struct err *e, void *privdata)
{
    struct actx *a = privdata;
    a->answers++;
    a->last = res ? res->status : 0;
    snprintf(a->err, sizeof(a->err), "%s", e ? e->msg : "");
    if (res && res->id) {
        free(a->id);
        a->id = res->id; /* stolen */
        res->id = NULL;
        free(a->key);
        a->key = res->key;
        res->key = NULL;
        a->n = res->n;
    }
}

static void count_up(struct rconn_async *ra, int up, void *arg)
{
    (void)ra;
    *(int *)arg += up;
}

static void wake(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ONE);
}

/* Run the loop until *counter reaches want or seconds pass. */
static void run_until(struct actx *a, const int *counter, int want, double seconds)
{
    ev_tstamp end = ev_time() + seconds;
    while (*counter < want && ev_time() < end) {
        ev_timer_set(&a->timer, 0.02, 0.);
        ev_timer_start(a->loop, &a->timer);
        ev_run(a->loop, EVRUN_ONCE);
        ev_timer_stop(a->loop, &a->timer);
    }
    if (*counter < want)
        fail_msg("timed out waiting (%d of %d) last error: %s", *counter, want, a->err);
}

static void submit(struct actx *a, struct rconn_async *ra, struct rq_cmd *cmd)
{
    struct err e;
    if (rq_exec_async(ra, cmd, on_answer, a, &e) < 0)
        fail_msg("rq_exec_async: %s", e.msg);
}

/* Submit on ra and wait for the answer; returns its status. */
static enum rq_status ask(struct actx *a, struct rconn_async *ra, struct rq_cmd *cmd)
{
    int want = a->answers + 1;
    submit(a, ra, cmd);
    run_until(a, &a->answers, want, 10);
    return a->last;
}

static void actx_open(struct actx *a, struct rq *q, const struct rconn_setup *setup,
                      const char *url, long cmd_timeout_ms)
{
    struct err e;
    struct rconn_opts o = RCONN_OPTS_DEFAULT;
    o.cmd_timeout_ms = cmd_timeout_ms;
    o.backoff_max_ms = 400;
    memset(a, 0, sizeof(*a));
    a->loop = ev_loop_new(EVFLAG_AUTO);
    a->q = q;
    ev_timer_init(&a->timer, wake, 0., 0.);
    a->cmd = rconn_async_new(a->loop, url, &o, setup, on_state, a, &e);
    a->blk = rconn_async_new(a->loop, url, &o, setup, on_state, a, &e);
    assert_non_null(a->cmd);
    assert_non_null(a->blk);
    run_until(a, &a->ups, 2, 10);
}

static void actx_close(struct actx *a)
{
    rconn_async_free(a->cmd);
    rconn_async_free(a->blk);
    ev_loop_destroy(a->loop);
    free(a->id);
    free(a->key);
}

static void on_side_answer(struct rq_res *res, const struct err *e, void *privdata)
{
    struct actx *a = privdata;
    if (!res || res->status != RQ_ADDED)
        snprintf(a->err, sizeof(a->err), "enqueue_later: %s", e ? e->msg : "not added");
    else
        a->side_answers++;
}

/* Enqueue from a timer while the blocking read waits. */
static void enqueue_later(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct actx *a = w->data;
    struct err e;
    if (rq_exec_async(a->cmd, rq_cmd_enqueue(a->q, "late:1", "{\"late\":1}"), on_side_answer, a,
                      &e) < 0)
        snprintf(a->err, sizeof(a->err), "enqueue_later: %s", e.msg);
}

static void test_rq__async_enqueue_take_ack(void **state)
{
    struct fixture *f = *state;
    struct actx a;
    actx_open(&a, &f->q, &f->setup, f->srv.url, 10000);
    struct err e;
    assert_int_equal(rq_exec_async(a.cmd, rq_cmd_enqueue(&f->q, "async:0", "{}"), NULL, NULL, &e),
                     0); /* fire and forget */
    assert_int_equal(ask(&a, a.cmd, rq_cmd_enqueue(&f->q, "async:1", "{\"a\":1}")), RQ_ADDED);
    assert_int_equal(ask(&a, a.cmd, rq_cmd_enqueue(&f->q, "async:0", "{}")), RQ_DUPLICATE);
    assert_int_equal(ask(&a, a.cmd, rq_cmd_take(&f->q, "aw", 60000, 3, 30000)), RQ_JOB);
    assert_string_equal(a.key, "async:0");
    char *id0 = xstrdup(a.id);
    assert_int_equal(ask(&a, a.cmd, rq_cmd_ack(&f->q, "aw", id0, "async:0", NULL, NULL, 0)),
                     RQ_DONE);
    free(id0);
    assert_int_equal(ask(&a, a.cmd, rq_cmd_take(&f->q, "aw", 60000, 3, 30000)), RQ_JOB);
    assert_string_equal(a.key, "async:1");
    char *id = xstrdup(a.id);
    assert_int_equal(ask(&a, a.cmd, rq_cmd_renew(&f->q, "aw", id)), RQ_DONE);
    assert_int_equal(ask(&a, a.cmd, rq_cmd_ack(&f->q, "aw", id, "async:1", NULL, NULL, 0)),
                     RQ_DONE);
    free(id);
    assert_int_equal(ask(&a, a.cmd, rq_cmd_take(&f->q, "aw", 60000, 3, 30000)), RQ_EMPTY);
    /* Blocking read on its own connection, woken by an enqueue on the other. */
    ev_timer later;
    ev_timer_init(&later, enqueue_later, 0.2, 0.);
    later.data = &a;
    ev_timer_start(a.loop, &later);
    assert_int_equal(ask(&a, a.blk, rq_cmd_read_new(&f->q, "aw", 3000)), RQ_JOB);
    run_until(&a, &a.side_answers, 1, 5);
    assert_string_equal(a.key, "late:1");
    assert_int_equal(a.n, 1);
    /* A blocking read that times out answers EMPTY. */
    assert_int_equal(ask(&a, a.blk, rq_cmd_read_new(&f->q, "aw", 100)), RQ_EMPTY);
    assert_int_equal(a.downs, 0);
    actx_close(&a);
}

static void test_rq__async_reconnects_after_restart(void **state)
{
    (void)state;
    struct own o;
    struct actx a;
    struct err e;
    own_new(&o, 1);
    actx_open(&a, &o.q, &o.setup, o.s.url, 2000);
    assert_int_equal(ask(&a, a.cmd, rq_cmd_enqueue(&o.q, "k:1", "{\"k\":1}")), RQ_ADDED);
    /* A blocking read is pending when Redis goes away: answered with an error. */
    submit(&a, a.blk, rq_cmd_read_new(&o.q, "w", 5000));
    server_stop(&o.s);
    run_until(&a, &a.downs, 2, 10);
    run_until(&a, &a.answers, 2, 10);
    assert_int_equal(a.last, 0);
    assert_non_null(strstr(a.err, "no answer"));
    assert_false(rconn_async_is_up(a.cmd));
    assert_int_equal(rq_exec_async(a.cmd, rq_cmd_stats(&o.q), on_answer, &a, &e), -1);
    assert_non_null(strstr(e.msg, "not connected"));
    /* Back with its AOF: both holders come up again, the job is still there. */
    server_start(&o.s);
    run_until(&a, &a.ups, 4, 10);
    assert_int_equal(ask(&a, a.cmd, rq_cmd_take(&o.q, "w", 60000, 3, 30000)), RQ_JOB);
    assert_string_equal(a.key, "k:1");
    /* Back empty: setup on reconnect recreates the library and the group. */
    server_restart_empty(&o.s);
    run_until(&a, &a.ups, 6, 10);
    assert_int_equal(ask(&a, a.cmd, rq_cmd_enqueue(&o.q, "k:2", "{}")), RQ_ADDED);
    assert_int_equal(ask(&a, a.blk, rq_cmd_read_new(&o.q, "w", 1000)), RQ_JOB);
    assert_string_equal(a.key, "k:2");
    /* Emptied while connected (FLUSHALL + FUNCTION FLUSH): repaired on error. */
    redisContext *c = redisConnect("127.0.0.1", o.s.port);
    assert_non_null(c);
    freeReplyObject(redisCommand(c, "FLUSHALL"));
    freeReplyObject(redisCommand(c, "FUNCTION FLUSH"));
    redisFree(c);
    assert_int_equal(ask(&a, a.cmd, rq_cmd_take(&o.q, "w", 60000, 3, 30000)), RQ_EMPTY);
    assert_int_equal(ask(&a, a.cmd, rq_cmd_enqueue(&o.q, "k:3", "{}")), RQ_ADDED);
    assert_int_equal(ask(&a, a.blk, rq_cmd_read_new(&o.q, "w", 1000)), RQ_JOB);
    assert_string_equal(a.key, "k:3");
    actx_close(&a);
    own_free(&o);
}

static void test_rq__async_deadline_drops_stuck_server(void **state)
{
    (void)state;
    struct own o;
    struct actx a;
    own_new(&o, 0);
    actx_open(&a, &o.q, &o.setup, o.s.url, 300);
    kill(o.s.pid, SIGSTOP); /* answers nothing, closes nothing */
    submit(&a, a.cmd, rq_cmd_stats(&o.q));
    run_until(&a, &a.answers, 1, 5);
    assert_int_equal(a.last, 0);
    assert_non_null(strstr(a.err, "no answer"));
    assert_true(a.downs >= 1);
    kill(o.s.pid, SIGCONT);
    run_until(&a, &a.ups, 3, 10);
    assert_int_equal(ask(&a, a.cmd, rq_cmd_enqueue(&o.q, "k:1", "{}")), RQ_ADDED);
    actx_close(&a);
    own_free(&o);
}

/* Freeing a holder with requests in flight answers them all, once. */
static void test_rq__async_free_answers_pending(void **state)
{
    struct fixture *f = *state;
    struct actx a;
    actx_open(&a, &f->q, &f->setup, f->srv.url, 10000);
    submit(&a, a.blk, rq_cmd_read_new(&f->q, "fw", 5000));
    submit(&a, a.cmd, rq_cmd_stats(&f->q));
    rconn_async_free(a.blk);
    a.blk = NULL;
    assert_int_equal(a.answers, 1);
    assert_non_null(strstr(a.err, "no answer"));
    run_until(&a, &a.answers, 2, 5);
    actx_close(&a);
}

static void test_rq__auth_and_select(void **state)
{
    (void)state;
    struct server s;
    struct rq q;
    struct rconn_setup setup;
    struct rconn rc;
    struct rq_res res;
    struct err e;
    char url[128];
    server_new_auth(&s, 0, "pa/ss@word");
    assert_int_equal(rq_init(&q, NULL, &e), 0);
    rq_setup(&q, &setup);
    snprintf(url, sizeof(url), "redis://:wrong-one@127.0.0.1:%d", s.port);
    assert_int_equal(rconn_open(&rc, url, NULL, &setup, &e), -1);
    assert_non_null(strstr(e.msg, "AUTH failed"));
    assert_null(strstr(e.msg, "wrong-one"));
    snprintf(url, sizeof(url), "redis://:pa%%2Fss@word@127.0.0.1:%d/3", s.port);
    assert_int_equal(rconn_open(&rc, url, NULL, &setup, &e), 0);
    assert_int_equal(rq_exec(&rc, rq_cmd_enqueue(&q, "k:1", "{}"), &res, &e), 0);
    assert_int_equal(res.status, RQ_ADDED);
    rq_res_free(&res);
    /* The job is in database 3. */
    redisReply *r = redisCommand(rc.c, "SELECT 0");
    freeReplyObject(r);
    r = redisCommand(rc.c, "EXISTS %s", q.keys.jobs);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    r = redisCommand(rc.c, "SELECT 3");
    freeReplyObject(r);
    r = redisCommand(rc.c, "XLEN %s", q.keys.jobs);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    rconn_close(&rc);
    /* The asynchronous holder authenticates too; with a wrong password it
     * keeps retrying and never comes up. */
    struct actx a;
    char bad[128];
    snprintf(bad, sizeof(bad), "redis://:wrong-one@127.0.0.1:%d", s.port);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    int ups = 0;
    struct rconn_async *ra = rconn_async_new(loop, bad, NULL, &setup, count_up, &ups, &e);
    ev_timer stop;
    ev_timer_init(&stop, wake, 0.5, 0.);
    ev_timer_start(loop, &stop);
    ev_run(loop, 0);
    assert_int_equal(ups, 0);
    assert_false(rconn_async_is_up(ra));
    rconn_async_free(ra);
    ev_loop_destroy(loop);
    actx_open(&a, &q, &setup, url, 10000);
    assert_int_equal(ask(&a, a.cmd, rq_cmd_take(&q, "w", 60000, 3, 30000)), RQ_JOB);
    assert_string_equal(a.key, "k:1");
    actx_close(&a);
    rconn_setup_free(&setup);
    rq_free(&q);
    server_destroy(&s);
}

/* rq.lua with its VERSION replaced by version (caller frees). */
static char *lua_with_version(int version)
{
    const char *v = strstr(rq_lua_source, "local VERSION = ");
    assert_non_null(v);
    const char *eol = strchr(v, '\n');
    return xasprintf("%.*slocal VERSION = %d%s", (int)(v - rq_lua_source), rq_lua_source,
                     version, eol);
}

/* Load the library text `loaded`, connect with the usual setup (sync, or
 * both async holders) and say which version Redis then has. */
static long long version_after_connect(struct own *o, const char *loaded, int async)
{
    struct rconn rc;
    struct actx a;
    struct err e;
    redisContext *c = redisConnect("127.0.0.1", o->s.port);
    assert_non_null(c);
    redisReply *r = redisCommand(c, "FUNCTION LOAD REPLACE %s", loaded);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    freeReplyObject(r);
    if (async) {
        actx_open(&a, &o->q, &o->setup, o->s.url, 2000);
        run_until(&a, &a.ups, 2, 10);
        actx_close(&a);
    } else {
        assert_int_equal(rconn_open(&rc, o->s.url, NULL, &o->setup, &e), 0);
        rconn_close(&rc);
    }
    r = redisCommand(c, "FCALL hubsync_version 0");
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    redisFree(c);
    return v;
}

static void test_rq__library_loads_only_over_an_older_one(void **state)
{
    (void)state;
    struct own o;
    own_new(&o, 0);
    int mine = rq_lua_version();
    assert_true(mine > 1);
    for (int async = 0; async < 2; async++) {
        /* A newer worker loaded its library: an older program's connection keeps it. */
        char *lib = lua_with_version(mine + 1);
        assert_int_equal(version_after_connect(&o, lib, async), mine + 1);
        free(lib);
        /* An older library is replaced. */
        lib = lua_with_version(mine - 1);
        assert_int_equal(version_after_connect(&o, lib, async), mine);
        free(lib);
    }
    own_free(&o);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, test_setup, test_teardown)
        T(test_rq__enqueue_dedupe),
        T(test_rq__take_renew_ack_owner_checks),
        T(test_rq__reclaim_after_lease_and_zombie_ack),
        T(test_rq__dead_letter_after_max_deliveries),
        T(test_rq__handback_keeps_delivery_count),
        T(test_rq__retry_delayed_promote),
        T(test_rq__retry_waiting_for_a_registry),
        T(test_rq__retry_spent_requeues),
        T(test_rq__fail_dead_letters),
        T(test_rq__bad_counter_changes_nothing),
        T(test_rq__operator_pause),
        T(test_rq__take_fair_share),
        T(test_rq__events_after),
        T(test_rq__event_records),
        T(test_rq__assist_offers),
        T(test_rq__exports_and_sites),
        T(test_rq__bundle_queue_apart),
        T(test_rq__behind_marked_once_until_cleared),
        T(test_rq__budget_acquire_observe_floor),
        T(test_rq__budget_acquire_any_most_left),
        T(test_rq__budget_busy_until_settled),
        T(test_rq__budget_reservations_expire),
        T(test_rq__budget_pause_and_unlimited),
        T(test_rq__budget_elsewhere),
        T(test_rq__breaker_opens_probes_and_closes),
        T(test_rq__present_sets_and_blobhome),
        T(test_rq__present_sets_expire_unless_used),
        T(test_rq__target_epoch_first_marker_wins),
        T(test_rq__leases_with_tokens),
        T(test_rq__manifests_kept_under_a_byte_cap),
        T(test_rq__run_bookkeeping),
        T(test_rq__run_enqueue_counts_each_key_once),
        T(test_rq__run_entries),
        T(test_rq__purge_delayed_by_run),
        T(test_rq__resumed_run_enqueues_only_unsettled_keys),
        T(test_rq__duplicate_delivery_settles_once),
        T(test_rq__new_run_takes_over_old_runs_leftovers),
        T(test_rq__invalid_payload_counts_in_its_run),
        T(test_rq__run_check_finds_lost_jobs),
        T(test_rq__old_runs_are_dropped),
        T(test_rq__budget_sources_expire),
        T(test_rq__delayed_counts_and_run_deferred),
        T(test_rq__ended_run_keeps_its_deferred_count),
        T(test_rq__budget_sources_listed),
        T(test_rq__readers),
        T(test_rq__older_callers_are_served),
        T(test_rq__worker_heartbeat),
        T(test_rq__repairs_missing_function_and_group),
        T(test_rq__prune_consumers_keeps_pending),
        T(test_rq__repair_index_releases_leaks),
        T(test_rq__sync_reconnects_after_restart),
        T(test_rq__auth_and_select),
        T(test_rq__async_enqueue_take_ack),
        T(test_rq__async_reconnects_after_restart),
        T(test_rq__async_deadline_drops_stuck_server),
        T(test_rq__async_free_answers_pending),
        T(test_rq__library_loads_only_over_an_older_one),
#undef T
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
