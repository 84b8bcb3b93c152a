/* ocifetch: see ocifetch.h. */
#include "ocifetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocilayout.h"
#include "reg_blob.h"
#include "xalloc.h"

/* ---- fetching ---------------------------------------------------------------------------- */

struct ocifetch {
    struct ev_loop *loop;
    struct reg_registry *src;
    char *dir;
    struct ocifetch_item *items;
    size_t n, next;
    int concurrency, inflight;
    int pumping; /* a request's answer may come before its call returns */
    struct ocifetch_stats st;
    char err[ERR_MSG_MAX];
    ev_timer kick;
    ocifetch_done_fn *done;
    void *arg;
};

struct call {
    struct ocifetch *f;
    const struct ocifetch_item *it;
    char *path;
    int fd;    /* blob: the temporary file */
    char *tmp; /* its name */
};

static void fail(struct ocifetch *f, const char *msg)
{
    if (!f->err[0])
        snprintf(f->err, sizeof(f->err), "%s", msg);
}

static void finish(struct ocifetch *f)
{
    f->done(&f->st, f->err[0] ? f->err : NULL, f->arg);
    for (size_t i = 0; i < f->n; i++)
        free(f->items[i].repo);
    free(f->items);
    free(f->dir);
    free(f);
}

static void pump(struct ocifetch *f);

static void call_end(struct call *call)
{
    struct ocifetch *f = call->f;
    f->inflight--;
    free(call->path);
    free(call->tmp);
    free(call);
    pump(f);
}

static void on_manifest(struct reg_result *res, void *arg)
{
    struct call *call = arg;
    struct ocifetch *f = call->f;
    struct err e;
    if (res->cls != REG_OK) {
        fail(f, res->msg);
    } else if (ocilayout_write_file(call->path, res->body, res->body_len, &e) < 0) {
        fail(f, e.msg);
    } else {
        f->st.written++;
        f->st.bytes += (long long)res->body_len;
    }
    call_end(call);
}

static void on_blob(struct reg_result *res, void *arg)
{
    struct call *call = arg;
    struct ocifetch *f = call->f;
    struct err e;
    int ok = res->cls == REG_OK;
    if (!ok)
        fail(f, res->msg);
    if (ocilayout_temp_finish(call->fd, call->tmp, call->path, ok, &e) == 0) {
        f->st.written++;
        f->st.bytes += call->it->size;
    } else if (ok) {
        fail(f, e.msg);
    }
    call_end(call);
}

/* One item: kept if its file is right, else a request (or f->err set). */
static void start_item(struct ocifetch *f, const struct ocifetch_item *it)
{
    char why[ERR_MSG_MAX];
    struct err e;
    char *path = ocilayout_blob_path(f->dir, it->digest);
    int have = ocilayout_file_matches(path, it->digest, it->size, why, sizeof(why));
    if (have != 0) {
        if (have == 1)
            f->st.reused++;
        else
            fail(f, why);
        free(path);
        return;
    }
    struct call *call = xcalloc(1, sizeof(*call));
    call->f = f;
    call->it = it;
    call->path = path;
    call->fd = -1;
    if (!it->manifest && (call->fd = ocilayout_temp_open(path, &call->tmp, &e)) < 0) {
        fail(f, e.msg);
        free(call->path);
        free(call);
        return;
    }
    f->inflight++;
    if (it->manifest)
        reg_get_manifest(f->src, it->repo, it->digest, on_manifest, call);
    else
        reg_fetch_blob(f->src, it->repo, it->digest, it->size, call->fd, on_blob, call);
}

static void pump(struct ocifetch *f)
{
    if (f->pumping)
        return;
    f->pumping = 1;
    while (!f->err[0] && f->next < f->n && f->inflight < f->concurrency)
        start_item(f, &f->items[f->next++]);
    f->pumping = 0;
    if (f->inflight == 0)
        finish(f);
}

static void kick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    pump(t->data);
}

void ocifetch_start(struct ev_loop *loop, struct reg_registry *src, const char *dir,
                    const struct ocifetch_item *items, size_t n, int concurrency,
                    ocifetch_done_fn *done, void *arg)
{
    struct ocifetch *f = xcalloc(1, sizeof(*f));
    f->loop = loop;
    f->src = src;
    f->dir = xstrdup(dir);
    f->items = xcalloc(n + 1, sizeof(*f->items));
    for (size_t i = 0; i < n; i++) {
        f->items[i] = items[i];
        f->items[i].repo = xstrdup(items[i].repo);
    }
    f->n = n;
    f->concurrency = concurrency < 1 ? 1 : concurrency;
    f->done = done;
    f->arg = arg;
    /* From the loop: the caller finishes its own setup before done runs. */
    ev_timer_init(&f->kick, kick, 0., 0.);
    f->kick.data = f;
    ev_timer_start(loop, &f->kick);
}
