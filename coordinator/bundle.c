/* bundle: what the export and import subcommands share: the target registry
 * on a loop of their own, a bound on operations in flight, Redis. */
#include <ev.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "coord.h"
#include "creds.h"
#include "reg.h"

int coord_bundle_open(struct coord_bundle_io *io, const char *target_url, struct err *e)
{
    struct creds cr = {NULL, NULL};
    struct reg_client_opts o;
    memset(io, 0, sizeof(*io));
    reg_client_opts_default(&o);
    if (!(io->loop = ev_loop_new(EVFLAG_AUTO)))
        return err_set(e, "cannot create an event loop");
    if (!(io->client = reg_client_new(io->loop, &o, e)))
        return -1;
    int found = creds_lookup("HUBSYNC_TARGET", target_url, target_url, &cr, e);
    if (found >= 0)
        io->dst = reg_registry_new(io->client, target_url, found ? &cr : NULL, e);
    creds_clear(&cr);
    return io->dst ? 0 : -1;
}

void coord_bundle_close(struct coord_bundle_io *io)
{
    coord_bundle_wait(io, 1);
    reg_registry_free(io->dst);
    reg_client_free(io->client);
    if (io->loop)
        ev_loop_destroy(io->loop);
    memset(io, 0, sizeof(*io));
}

void coord_bundle_fail(struct coord_bundle_io *io, const char *fmt, ...)
{
    if (io->err[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(io->err, sizeof(io->err), fmt, ap);
    va_end(ap);
}

double coord_bundle_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void coord_bundle_wait(struct coord_bundle_io *io, int max)
{
    while (io->loop && io->inflight >= (max < 1 ? 1 : max))
        ev_run(io->loop, EVRUN_ONCE);
}

static int db_open(struct coord_bundle_db *db, const struct cfg *c, int bundle_queue,
                   struct err *e)
{
    struct rconn_opts ro = RCONN_OPTS_DEFAULT;
    memset(db, 0, sizeof(*db));
    const char *prefix = cfg_str(c, CFG_ID_REDIS_PREFIX);
    if ((bundle_queue ? rq_init_bundle(&db->q, prefix, e) : rq_init(&db->q, prefix, e)) < 0)
        return -1;
    rq_setup(&db->q, &db->setup);
    if (rconn_open(&db->rc, cfg_str(c, CFG_ID_REDIS), &ro, &db->setup, e) < 0)
        return -1;
    db->open = 1;
    return 0;
}

int coord_bundle_db_open(struct coord_bundle_db *db, const struct cfg *c, struct err *e)
{
    return db_open(db, c, 0, e);
}

int coord_bundle_queue_open(struct coord_bundle_db *db, const struct cfg *c, struct err *e)
{
    return db_open(db, c, 1, e);
}

void coord_bundle_db_close(struct coord_bundle_db *db)
{
    if (db->open)
        rconn_close(&db->rc);
    rconn_setup_free(&db->setup);
    rq_free(&db->q);
    memset(db, 0, sizeof(*db));
}
