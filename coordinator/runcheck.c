/* runcheck: what a coordinator does for a run of a queue while it waits for
 * it, on either queue (sync's job queue, export's bundle queue): the run's
 * lost jobs enqueued again, and the queue's dedupe index and consumers kept
 * tidy. */
#include <stdio.h>
#include <string.h>

#include "coord.h"
#include "log.h"

#define RUNCHECK_LOST_S 5           /* a look for lost jobs */
#define RUNCHECK_TIDY_S 60          /* dedupe index and consumer housekeeping */
#define RUNCHECK_CONSUMER_IDLE_MS 3600000LL /* consumers with nothing pending pruned after */

void coord_run_check_init(struct coord_run_check *rc, time_t now)
{
    memset(rc, 0, sizeof(*rc));
    rc->last_lost = now; /* the first look for lost jobs after RUNCHECK_LOST_S */
    snprintf(rc->cursor, sizeof(rc->cursor), "0");
}

/* Jobs of the run that nothing would ever settle (no job of the run queued,
 * held, delayed or handed over: one deleted by hand, lost with part of an
 * AOF, or a leftover of another run that had the key) are enqueued again
 * with requeue's command. As coord_run_check_tick. */
static int requeue_lost(struct rconn *rc, const struct rq *q, const char *what, const char *run,
                        coord_requeue_fn requeue, void *arg, struct err *e)
{
    char cursor[32] = "0", first[128] = "";
    long long again = 0, missing = 0;
    do {
        struct rq_res res;
        if (rq_exec(rc, rq_cmd_run_check(q, run, cursor, RQ_RUN_CHECK_COUNT), &res, e) < 0) {
            rq_res_free(&res);
            return -2;
        }
        snprintf(cursor, sizeof(cursor), "%s", res.str);
        for (size_t i = 0; i < res.nitems; i++) {
            struct rq_cmd *cmd = requeue(arg, res.items[i]);
            struct rq_res r2;
            if (!cmd) {
                if (!missing++)
                    snprintf(first, sizeof(first), "%s", res.items[i]);
                continue;
            }
            int ret = rq_exec(rc, cmd, &r2, e);
            rq_res_free(&r2);
            if (ret < 0) {
                rq_res_free(&res);
                return -2;
            }
            again++;
        }
        rq_res_free(&res);
    } while (strcmp(cursor, "0") != 0);
    if (again)
        log_warn("%s %s: %lld jobs had no job queued for the %s (lost); enqueued them again",
                 what, run, again, what);
    if (missing)
        return err_set(e, "%lld jobs of the %s have no job queued and are not in this "
                          "coordinator's plan (e.g. %s): was the selection changed?",
                       missing, what, first);
    return 0;
}

/* Dedupe entries whose job is gone (a chunk of the index each time) and
 * consumers of workers long gone. Failures are only logged. */
static void tidy(struct rconn *rc, const struct rq *q, struct coord_run_check *chk)
{
    struct rq_res res;
    struct err e;
    if (rq_exec(rc, rq_cmd_repair_index(q, chk->cursor, 1000), &res, &e) == 0) {
        if (res.n)
            log_warn("released %lld dedupe entries of %s whose job was gone", res.n, q->keys.jobs);
        snprintf(chk->cursor, sizeof(chk->cursor), "%s", res.str);
    } else {
        log_warn("dedupe index housekeeping of %s: %s", q->keys.jobs, e.msg);
    }
    rq_res_free(&res);
    if (rq_exec(rc, rq_cmd_prune_consumers(q, RUNCHECK_CONSUMER_IDLE_MS), &res, &e) == 0) {
        if (res.n)
            log_info("pruned %lld consumers of %s idle with nothing pending", res.n, q->keys.jobs);
    } else {
        log_warn("consumer housekeeping of %s: %s", q->keys.jobs, e.msg);
    }
    rq_res_free(&res);
}

int coord_run_check_tick(struct coord_run_check *chk, struct rconn *rc, const struct rq *q,
                         const char *what, const char *run, coord_requeue_fn requeue, void *arg,
                         time_t now, struct err *e)
{
    if (now - chk->last_tidy >= RUNCHECK_TIDY_S) {
        chk->last_tidy = now;
        tidy(rc, q, chk);
    }
    if (now - chk->last_lost < RUNCHECK_LOST_S)
        return 0;
    chk->last_lost = now;
    return requeue_lost(rc, q, what, run, requeue, arg, e);
}
