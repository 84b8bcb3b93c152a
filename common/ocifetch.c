/* ocifetch: see ocifetch.h. */
#include "ocifetch.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocilayout.h"
#include "ref.h"
#include "reg_blob.h"
#include "xalloc.h"

/* ---- the job payload -------------------------------------------------------------------- */

char *ocifetch_job_encode(const char *run, const struct ocifetch_item *items, size_t n)
{
    json_t *objs = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct ocifetch_item *it = &items[i];
        json_array_append_new(objs, json_pack("{s:s, s:s, s:I, s:b}", "repo", it->repo,
                                              "digest", it->digest, "size",
                                              (json_int_t)it->size, "manifest", it->manifest));
    }
    json_t *o = json_pack("{s:s, s:o}", "run", run, "objects", objs);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

static int decode_item(json_t *o, size_t i, struct ocifetch_item *it, struct err *e)
{
    json_t *repo = json_object_get(o, "repo"), *d = json_object_get(o, "digest");
    json_t *size = json_object_get(o, "size"), *m = json_object_get(o, "manifest");
    if (!json_is_string(repo) || !ref_repo_valid(json_string_value(repo)))
        return err_set(e, "objects[%zu]: no valid repo", i);
    it->repo = xstrdup(json_string_value(repo));
    if (!json_is_string(d) ||
        digest_parse(json_string_value(d), json_string_length(d), "digest", it->digest, e) < 0)
        return err_set(e, "objects[%zu]: no valid sha256 digest", i);
    if (!json_is_integer(size) || json_integer_value(size) < 0)
        return err_set(e, "objects[%zu]: no valid size", i);
    if (!json_is_boolean(m))
        return err_set(e, "objects[%zu]: manifest is not true or false", i);
    it->size = json_integer_value(size);
    it->manifest = json_is_true(m);
    return 0;
}

int ocifetch_job_decode(const char *json, size_t len, struct ocifetch_job *out, struct err *e)
{
    json_error_t je;
    int ret = -1;
    memset(out, 0, sizeof(*out));
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    json_t *run = json_object_get(root, "run"), *objs = json_object_get(root, "objects");
    if (!root || !json_is_object(root)) {
        err_set(e, "bundle job: not a JSON object");
        goto out;
    }
    if (!json_is_string(run) || !json_is_array(objs)) {
        err_set(e, "bundle job: run (a string) and objects (an array) are required");
        goto out;
    }
    if (json_array_size(objs) > OCIFETCH_JOB_MAX_OBJECTS) {
        err_set(e, "bundle job: more than %d objects", OCIFETCH_JOB_MAX_OBJECTS);
        goto out;
    }
    out->run = xstrdup(json_string_value(run));
    out->items = xcalloc(json_array_size(objs) + 1, sizeof(*out->items));
    size_t i;
    json_t *o;
    json_array_foreach(objs, i, o)
    {
        out->nitems = i + 1;
        if (decode_item(o, i, &out->items[i], e) < 0) {
            char msg[ERR_MSG_MAX];
            snprintf(msg, sizeof(msg), "%s", e->msg);
            err_set(e, "bundle job: %s", msg);
            goto out;
        }
    }
    ret = 0;
out:
    json_decref(root);
    return ret;
}

void ocifetch_job_free(struct ocifetch_job *j)
{
    for (size_t i = 0; i < j->nitems; i++)
        free(j->items[i].repo);
    free(j->items);
    free(j->run);
    memset(j, 0, sizeof(*j));
}

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

int ocifetch_put(const char *dir, const char *digest, long long size, const char *body,
                 size_t len, struct ocifetch_stats *st, struct err *e)
{
    char why[ERR_MSG_MAX];
    char *path = ocilayout_blob_path(dir, digest);
    int ret = 0;
    if (ocilayout_file_matches(path, digest, size, why, sizeof(why)) == 1) {
        st->reused++;
    } else if ((ret = ocilayout_write_file(path, body, len, e)) == 0) {
        st->written++;
        st->bytes += (long long)len;
    }
    free(path);
    return ret;
}

static void on_manifest(struct reg_result *res, void *arg)
{
    struct call *call = arg;
    struct ocifetch *f = call->f;
    struct err e;
    if (res->cls != REG_OK)
        fail(f, res->msg);
    else if (ocifetch_put(f->dir, call->it->digest, call->it->size, res->body, res->body_len,
                          &f->st, &e) < 0)
        fail(f, e.msg);
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
