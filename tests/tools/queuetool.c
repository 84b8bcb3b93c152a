/* queuetool: drive common/rq from the command line, for integration tests.
 *
 * Each command prints JSON lines (one per event) on stdout; exit status 0
 * on success, 1 when an operation failed, 2 on usage errors.
 *
 *   queuetool enqueue KEY JSON            {"status":"added|duplicate","id":..}
 *   queuetool run-enqueue RUN KEY JSON    the same as a job of RUN (created first)
 *   queuetool enqueue-jobs N RUN TARGET   N valid jobs "repoI:tag" of RUN
 *   queuetool take CONSUMER               {"status":..,"id":..,"key":..,"deliveries":n}
 *   queuetool run-create RUN COMMIT       {"status":..}
 *   queuetool run-get RUN / stats         {"field":"value",...}
 *   queuetool observe SOURCE LIMIT REMAINING WINDOW_S
 *   queuetool drain SOURCE                acquire 1 pull at a time until refused
 *   queuetool work CONSUMER               the asynchronous worker loop: take
 *       (reclaim, then a blocking read on a second connection), hold the job
 *       --sleep-ms while renewing its lease, ack it with the run's counters;
 *       SIGTERM hands a held job back; exits after --idle-exit-ms without
 *       jobs or --count jobs. Events: took, done, stale, lost, ackfail,
 *       handback, crash (--crash-on KEY: exit 3 at once, like a worker that
 *       dies on a poison job). */
#include <ev.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "job.h"
#include "log.h"
#include "rq.h"
#include "text.h"
#include "xalloc.h"

/* queuetool's consumers send no heartbeat: each counts itself alone when it
 * takes, so the fair share never holds one back. */
#define QT_LIVE_MS 30000

/* What the options are looked up by. */
enum {
    OPT_PREFIX = CFG_ID_OWN,
    OPT_LEASE_MS,
    OPT_MAX_DELIVERIES,
    OPT_BLOCK_MS,
    OPT_SLEEP_MS,
    OPT_COUNT,
    OPT_IDLE_EXIT_MS,
    OPT_CRASH_ON,
    OPT_FLOOR,
};

static const struct cfg_opt opts[] = {
    {CFG_ID_HELP, "help", NULL, CFG_BOOL, "false", 0, 0, "show this help", 0},
    {CFG_ID_REDIS, "redis", "HUBSYNC_REDIS", CFG_STR, "redis://127.0.0.1:6379", 0, 0, "Redis URL",
     1},
    {OPT_PREFIX, "prefix", NULL, CFG_STR, KEYS_PREFIX_DEFAULT, 0, 0, "key prefix", 0},
    {OPT_LEASE_MS, "lease-ms", NULL, CFG_INT, "60000", 1, 86400000, "job lease", 0},
    {OPT_MAX_DELIVERIES, "max-deliveries", NULL, CFG_INT, "5", 1, 1000, "dead-letter past this", 0},
    {OPT_BLOCK_MS, "block-ms", NULL, CFG_INT, "1000", 1, 60000, "blocking read wait", 0},
    {OPT_SLEEP_MS, "sleep-ms", NULL, CFG_INT, "100", 0, 3600000, "work: time a job takes", 0},
    {OPT_COUNT, "count", NULL, CFG_INT, "0", 0, 1000000, "work: stop after N jobs (0: no limit)",
     0},
    {OPT_IDLE_EXIT_MS, "idle-exit-ms", NULL, CFG_INT, "3000", 1, 3600000,
     "work: stop when idle this long", 0},
    {OPT_CRASH_ON, "crash-on", NULL, CFG_STR, NULL, 0, 0, "work: exit 3 on taking this job key", 0},
    {OPT_FLOOR, "floor", NULL, CFG_INT, "0", 0, 1000000, "drain: pulls kept in reserve", 0},
    {CFG_ID_LOG_LEVEL, "log-level", NULL, CFG_STR, "warn", 0, 0, "debug|info|warn|error", 0},
};
#define NOPTS ((int)(sizeof(opts) / sizeof(opts[0])))

static void emit(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(o);
}

static void emit_error(const char *what, const char *msg)
{
    emit(json_pack("{s:s,s:s}", "error", what, "msg", msg));
}

static json_t *res_json(const struct rq_res *r)
{
    json_t *o = json_pack("{s:s,s:I}", "status", rq_status_name(r->status), "n", r->n);
    if (r->id)
        json_object_set_new(o, "id", json_string(r->id));
    if (r->key)
        json_object_set_new(o, "key", json_string(r->key));
    if (r->json)
        json_object_set_new(o, "job", json_string(r->json));
    if (r->str)
        json_object_set_new(o, "str", json_string(r->str));
    json_t *items = json_array();
    for (size_t i = 0; i < r->nitems; i++)
        json_array_append_new(items, json_string(r->items[i]));
    json_object_set_new(o, "items", items);
    return o;
}

/* ---- synchronous commands ----------------------------------------------- */

struct sync_tool {
    struct rq q;
    struct rconn_setup setup;
    struct rconn rc;
    const struct cfg *cfg;
};

/* Run cmd and print the answer; 0 or 1 (failed). */
static int run_print(struct sync_tool *t, struct rq_cmd *cmd, const char *what)
{
    struct rq_res res;
    struct err e;
    int rc = rq_exec(&t->rc, cmd, &res, &e);
    if (rc < 0)
        emit_error(what, e.msg);
    else
        emit(res_json(&res));
    rq_res_free(&res);
    return rc < 0;
}

/* n valid jobs "repo<i>:tag" of run (which exists) for target, encoded by
 * job_encode. */
static int enqueue_jobs(struct sync_tool *t, long n, const char *run, const char *target)
{
    int failed = 0;
    for (long i = 0; i < n && !failed; i++) {
        struct err e;
        struct rq_res res;
        char key[64], repo[64];
        char tag[] = "tag";
        char *tags[] = {tag};
        snprintf(key, sizeof(key), "repo%ld:tag", i);
        snprintf(repo, sizeof(repo), "library/repo%ld", i);
        struct job j = {.version = JOB_VERSION, .run = (char *)run, .key = key,
                        .upstream = (char *)"https://registry-1.docker.io",
                        .source_repo = repo, .target = (char *)target, .target_repo = repo,
                        .tags = tags, .ntags = 1, .policy = JOB_POLICY_ALL,
                        .reason = JOB_REASON_CHANGED};
        char *json = job_encode(&j, &e);
        if (!json) {
            emit_error("encode", e.msg);
            failed = 1;
        } else if (rq_exec(&t->rc, rq_cmd_run_enqueue(&t->q, run, key, json), &res, &e) < 0) {
            emit_error("enqueue", e.msg);
            failed = 1;
        }
        rq_res_free(&res);
        free(json);
    }
    if (!failed)
        emit(json_pack("{s:s,s:I}", "status", "enqueued", "n", (json_int_t)n));
    return failed;
}

static int drain(struct sync_tool *t, const char *source)
{
    long granted = 0;
    for (long i = 0;; i++) {
        struct rq_res res;
        struct err e;
        char resv[64];
        snprintf(resv, sizeof(resv), "%d-%ld", (int)getpid(), i);
        if (rq_exec(&t->rc,
                    rq_cmd_budget_acquire(&t->q, NULL, source, 1, (int)cfg_int(t->cfg, OPT_FLOOR),
                                          60000, resv),
                    &res, &e) < 0) {
            emit_error("acquire", e.msg);
            rq_res_free(&res);
            return 1;
        }
        enum rq_status st = res.status;
        rq_res_free(&res);
        if (st != RQ_GRANTED)
            break;
        granted++;
    }
    emit(json_pack("{s:s,s:I}", "status", "drained", "granted", (json_int_t)granted));
    return 0;
}

/* args[from..from+n) as integers into out: 0, or -1 if one is not. */
static int numbers(char **args, int from, int n, long long *out)
{
    for (int i = 0; i < n; i++)
        if (text_ll(args[from + i], &out[i]) < 0)
            return -1;
    return 0;
}

static int sync_main(const struct cfg *c, char **args, int nargs)
{
    struct sync_tool t = {.cfg = c};
    long long num[3];
    struct err e;
    int failed = 1;
    const char *cmd = args[0];
    if (rq_init(&t.q, cfg_str(c, OPT_PREFIX), &e) < 0) {
        emit_error("init", e.msg);
        return 2;
    }
    rq_setup(&t.q, &t.setup);
    if (rconn_open(&t.rc, cfg_str(c, CFG_ID_REDIS), NULL, &t.setup, &e) < 0) {
        emit_error("connect", e.msg);
        goto out_setup;
    }
    if (strcmp(cmd, "enqueue") == 0 && nargs == 3)
        failed = run_print(&t, rq_cmd_enqueue(&t.q, args[1], args[2]), cmd);
    else if (strcmp(cmd, "run-enqueue") == 0 && nargs == 4)
        failed = run_print(&t, rq_cmd_run_enqueue(&t.q, args[1], args[2], args[3]), cmd);
    else if (strcmp(cmd, "enqueue-jobs") == 0 && nargs == 4 && numbers(args, 1, 1, num) == 0)
        failed = enqueue_jobs(&t, (long)num[0], args[2], args[3]);
    else if (strcmp(cmd, "take") == 0 && nargs == 2)
        failed = run_print(&t,
                           rq_cmd_take(&t.q, args[1], cfg_int(c, OPT_LEASE_MS),
                                       (int)cfg_int(c, OPT_MAX_DELIVERIES), QT_LIVE_MS),
                           cmd);
    else if (strcmp(cmd, "run-create") == 0 && nargs == 3)
        failed = run_print(&t, rq_cmd_run_create(&t.q, args[1], args[2], 100), cmd);
    else if (strcmp(cmd, "run-get") == 0 && nargs == 2)
        failed = run_print(&t, rq_cmd_run_get(&t.q, args[1]), cmd);
    else if (strcmp(cmd, "stats") == 0 && nargs == 1)
        failed = run_print(&t, rq_cmd_stats(&t.q), cmd);
    else if (strcmp(cmd, "observe") == 0 && nargs == 5 && numbers(args, 2, 3, num) == 0) {
        struct ratelimit_info rl;
        ratelimit_init(&rl);
        rl.has_limit = rl.has_remaining = 2;
        rl.limit = (long)num[0];
        rl.remaining = (long)num[1];
        rl.limit_window = rl.remaining_window = (long)num[2];
        failed = run_print(&t, rq_cmd_budget_observe(&t.q, args[1], &rl, NULL), cmd);
    } else if (strcmp(cmd, "drain") == 0 && nargs == 2)
        failed = drain(&t, args[1]);
    else {
        emit_error("usage", "unknown command, wrong argument count or a number that is none");
        failed = 2;
    }
    rconn_close(&t.rc);
out_setup:
    rconn_setup_free(&t.setup);
    rq_free(&t.q);
    return failed;
}

/* ---- the asynchronous worker loop --------------------------------------- */

struct worker {
    struct ev_loop *loop;
    const struct cfg *cfg;
    struct rq q;
    struct rconn_setup setup;
    struct rconn_async *cmd, *blk;
    const char *consumer;
    int in_flight;       /* rq requests awaiting an answer */
    int stopping;
    long jobs;
    char *id, *key, *run; /* the job in hand */
    ev_timer work, renew, idle, again;
    ev_signal term;
};

static void step(struct worker *w);

static void event(struct worker *w, const char *what, long long n)
{
    emit(json_pack("{s:s,s:s,s:s,s:s,s:I}", "event", what, "consumer", w->consumer, "key",
                   w->key ? w->key : "", "id", w->id ? w->id : "", "n", (json_int_t)n));
}

/* -1 when the connection is down (cb will not be called). */
static int submit(struct worker *w, struct rconn_async *ra, struct rq_cmd *cmd, rq_cb *cb)
{
    struct err e;
    if (rq_exec_async(ra, cmd, cb, w, &e) < 0)
        return -1;
    w->in_flight++;
    return 0;
}

/* Let go of the job in hand; from now on the idle clock runs (also while
 * Redis is down, so a worker never waits forever). */
static void drop_job(struct worker *w)
{
    ev_timer_stop(w->loop, &w->work);
    ev_timer_stop(w->loop, &w->renew);
    if (!ev_is_active(&w->idle) && !w->stopping)
        ev_timer_start(w->loop, &w->idle);
    free(w->id);
    free(w->key);
    free(w->run);
    w->id = w->key = w->run = NULL;
}

static void finish(struct worker *w)
{
    if (!w->id && w->in_flight == 0)
        ev_break(w->loop, EVBREAK_ALL);
}

static void handed_back(struct rq_res *res, const struct err *e, void *privdata);

/* Stop working on the job in hand and give it back at once. */
static void hand_back(struct worker *w)
{
    ev_timer_stop(w->loop, &w->work);
    ev_timer_stop(w->loop, &w->renew);
    if (submit(w, w->cmd,
               rq_cmd_handback(&w->q, w->consumer, w->id, cfg_int(w->cfg, OPT_LEASE_MS)),
               handed_back) < 0)
        handed_back(NULL, NULL, w);
}

static void hold(struct worker *w, struct rq_res *res)
{
    struct job j;
    struct err e;
    w->id = res->id;
    w->key = res->key;
    res->id = res->key = NULL;
    if (job_decode(&j, res->json, strlen(res->json), &e) == 0) {
        w->run = xstrdup(j.run);
        job_free(&j);
    }
    const char *crash = cfg_str(w->cfg, OPT_CRASH_ON);
    if (crash && strcmp(crash, w->key) == 0) {
        event(w, "crash", res->n);
        _exit(3);
    }
    event(w, "took", res->n);
    ev_timer_stop(w->loop, &w->idle);
    ev_timer_set(&w->work, (ev_tstamp)cfg_int(w->cfg, OPT_SLEEP_MS) / 1000., 0.);
    ev_timer_start(w->loop, &w->work);
    ev_timer_start(w->loop, &w->renew);
    if (w->stopping) /* SIGTERM came while the take was under way */
        hand_back(w);
}

static void taken(struct rq_res *res, const struct err *e, void *privdata)
{
    struct worker *w = privdata;
    w->in_flight--;
    if (res && res->status == RQ_JOB) {
        hold(w, res);
    } else if (res && res->status == RQ_EMPTY && !w->stopping) {
        if (submit(w, w->blk, rq_cmd_read_new(&w->q, w->consumer, cfg_int(w->cfg, OPT_BLOCK_MS)),
                   taken) < 0)
            ev_timer_start(w->loop, &w->again);
    } else {
        if (e && !w->stopping)
            emit_error("take", e->msg);
        if (w->stopping)
            finish(w);
        else
            ev_timer_start(w->loop, &w->again);
    }
}

static void acked(struct rq_res *res, const struct err *e, void *privdata)
{
    struct worker *w = privdata;
    w->in_flight--;
    if (!res)
        event(w, "ackfail", 0);
    else
        event(w, res->status == RQ_DONE ? "done" : "stale", 0);
    (void)e;
    drop_job(w);
    w->jobs++;
    if (cfg_int(w->cfg, OPT_COUNT) && w->jobs >= cfg_int(w->cfg, OPT_COUNT))
        w->stopping = 1;
    step(w);
}

static void renewed(struct rq_res *res, const struct err *e, void *privdata)
{
    struct worker *w = privdata;
    (void)e;
    w->in_flight--;
    if (res && res->status != RQ_DONE && w->id) {
        event(w, "lost", 0);
        drop_job(w);
        step(w);
    } else if (w->stopping) {
        finish(w);
    }
}

/* Also called directly (res NULL) when the hand-back could not be sent. */
static void handed_back(struct rq_res *res, const struct err *e, void *privdata)
{
    struct worker *w = privdata;
    (void)e;
    if (res || e)
        w->in_flight--;
    event(w, res && res->status == RQ_DONE ? "handback" : "handback-failed", 0);
    drop_job(w);
    finish(w);
}

static void step(struct worker *w)
{
    if (w->stopping) {
        finish(w);
        return;
    }
    if (w->id || w->in_flight || !rconn_async_is_up(w->cmd) || !rconn_async_is_up(w->blk))
        return;
    if (submit(w, w->cmd,
               rq_cmd_take(&w->q, w->consumer, cfg_int(w->cfg, OPT_LEASE_MS),
                           (int)cfg_int(w->cfg, OPT_MAX_DELIVERIES), QT_LIVE_MS),
               taken) < 0)
        ev_timer_start(w->loop, &w->again);
}

static void work_done(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = t->data;
    struct rq_counter c[] = {{"work_units", 1}};
    ev_timer_stop(w->loop, &w->renew);
    if (submit(w, w->cmd, rq_cmd_ack(&w->q, w->consumer, w->id, w->key, w->run, c, 1), acked) <
        0) {
        /* Redis is down: the job stays pending and is reclaimed after its lease. */
        event(w, "ackfail", 0);
        drop_job(w);
        ev_timer_start(w->loop, &w->again);
    }
}

static void renew_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = t->data;
    /* Down: try again at the next tick; the lease has margin for that. */
    submit(w, w->cmd, rq_cmd_renew(&w->q, w->consumer, w->id), renewed);
}

static void idle_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = t->data;
    w->stopping = 1;
    /* Requests still in flight are answered when the holders are freed. */
    ev_break(w->loop, EVBREAK_ALL);
}

static void again_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    step(t->data);
}

static void on_term(struct ev_loop *loop, ev_signal *s, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = s->data;
    w->stopping = 1;
    if (w->id && ev_is_active(&w->work)) /* else its ack is already under way */
        hand_back(w);
    else
        finish(w);
}

static void on_state(struct rconn_async *ra, int up, void *arg)
{
    (void)ra;
    if (up)
        step(arg);
}

static int work_main(const struct cfg *c, const char *consumer)
{
    struct worker w = {.cfg = c, .consumer = consumer};
    struct err e;
    int rc = 1;
    if (rq_init(&w.q, cfg_str(c, OPT_PREFIX), &e) < 0) {
        emit_error("init", e.msg);
        return 2;
    }
    rq_setup(&w.q, &w.setup);
    w.loop = ev_default_loop(0);
    long lease = cfg_int(c, OPT_LEASE_MS);
    ev_timer_init(&w.work, work_done, 0., 0.);
    ev_timer_init(&w.renew, renew_tick, (ev_tstamp)lease / 3000., (ev_tstamp)lease / 3000.);
    ev_timer_init(&w.idle, idle_tick, (ev_tstamp)cfg_int(c, OPT_IDLE_EXIT_MS) / 1000., 0.);
    ev_timer_init(&w.again, again_tick, 0.2, 0.);
    ev_signal_init(&w.term, on_term, SIGTERM);
    w.work.data = w.renew.data = w.idle.data = w.again.data = w.term.data = &w;
    ev_signal_start(w.loop, &w.term);
    w.cmd = rconn_async_new(w.loop, cfg_str(c, CFG_ID_REDIS), NULL, &w.setup, on_state, &w, &e);
    if (w.cmd)
        w.blk = rconn_async_new(w.loop, cfg_str(c, CFG_ID_REDIS), NULL, &w.setup, on_state, &w, &e);
    if (!w.blk) {
        emit_error("connect", e.msg);
    } else {
        ev_timer_start(w.loop, &w.idle);
        ev_run(w.loop, 0);
        rc = 0;
    }
    /* Freeing answers what is still in flight; stopping makes every
     * callback wind down instead of sending more. */
    w.stopping = 1;
    rconn_async_free(w.blk);
    w.blk = NULL;
    rconn_async_free(w.cmd);
    w.cmd = NULL;
    drop_job(&w);
    ev_timer_stop(w.loop, &w.idle);
    ev_timer_stop(w.loop, &w.again);
    ev_signal_stop(w.loop, &w.term);
    emit(json_pack("{s:s,s:s,s:I}", "event", "exit", "consumer", consumer, "n",
                   (json_int_t)w.jobs));
    rconn_setup_free(&w.setup);
    rq_free(&w.q);
    return rc;
}

int main(int argc, char **argv)
{
    struct cfg c;
    struct err e;
    enum log_level level;
    signal(SIGPIPE, SIG_IGN);
    if (cfg_parse(&c, opts, NOPTS, argc - 1, argv + 1, &e) < 0) {
        fprintf(stderr, "queuetool: %s\n", e.msg);
        return 2;
    }
    if (cfg_bool(&c, CFG_ID_HELP) || c.nargs < 1) {
        int help = cfg_bool(&c, CFG_ID_HELP);
        cfg_usage(help ? stdout : stderr, opts, NOPTS);
        cfg_free(&c);
        return help ? 0 : 2;
    }
    if (log_parse_level(cfg_str(&c, CFG_ID_LOG_LEVEL), &level) == 0)
        log_setup("queuetool", level, LOG_FMT_TEXT);
    int rc = strcmp(c.args[0], "work") == 0 && c.nargs == 2 ? work_main(&c, c.args[1])
                                                              : sync_main(&c, c.args, c.nargs);
    cfg_free(&c);
    return rc;
}
