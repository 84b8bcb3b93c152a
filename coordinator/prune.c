/* prune: `sync --delete-removed` takes tags that left the catalog off the target.
 *
 * Registries delete manifests, not tags: deleting a digest removes every tag
 * that points at it. So a removed tag's manifest is deleted only when every
 * tag the target holds for that digest left the catalog too; otherwise the
 * tag stays and the report says which supported tag keeps it. The target must
 * allow deletes (docker-registry: storage.delete.enabled). What is deleted
 * leaves the workers' present sets too, so that no later job takes it as
 * there. */
#include <ev.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"
#include "digest.h"
#include "log.h"
#include "reg.h"
#include "rq.h"
#include "xalloc.h"

#define PRUNE_MAX_TAGS 100000

struct ptag {
    char *tag;
    char digest[DIGEST_STR_SIZE]; /* "" if the HEAD found none */
};

struct prune {
    struct ev_loop *loop;
    struct reg_registry *dst;
    const char *repo;
    struct ptag *tags; /* every tag the target holds in repo */
    size_t ntags;
    int pending;
    char err[512];     /* first failure */
    json_t *deleted;   /* tags gone with their manifest */
    char **gone;       /* manifests deleted (or found gone) */
    size_t ngone;
};

struct pcall {
    struct prune *p;
    size_t i;          /* tag index (HEAD) */
    char *digest;      /* manifest (DELETE) */
};

static void fail_once(struct prune *p, const struct reg_result *res)
{
    if (!p->err[0])
        snprintf(p->err, sizeof(p->err), "%s", res->msg);
}

static void listed(struct reg_result *res, void *arg)
{
    struct prune *p = arg;
    p->pending--;
    if (res->cls == REG_NOT_FOUND)
        return; /* nothing of the repository on the target */
    if (res->cls != REG_OK) {
        fail_once(p, res);
        return;
    }
    p->tags = xcalloc(res->ntags, sizeof(*p->tags));
    for (size_t i = 0; i < res->ntags; i++)
        p->tags[p->ntags++].tag = xstrdup(res->tags[i]);
}

static void headed(struct reg_result *res, void *arg)
{
    struct pcall *c = arg;
    c->p->pending--;
    if (res->cls == REG_OK && res->digest && digest_valid(res->digest))
        snprintf(c->p->tags[c->i].digest, DIGEST_STR_SIZE, "%s", res->digest);
    else if (res->cls != REG_NOT_FOUND)
        fail_once(c->p, res);
    free(c);
}

static void deleted(struct reg_result *res, void *arg)
{
    struct pcall *c = arg;
    struct prune *p = c->p;
    p->pending--;
    if (res->cls == REG_OK || res->cls == REG_NOT_FOUND) {
        for (size_t i = 0; i < p->ntags; i++)
            if (strcmp(p->tags[i].digest, c->digest) == 0)
                json_array_append_new(p->deleted, json_string(p->tags[i].tag));
        p->gone = xrealloc(p->gone, (p->ngone + 1) * sizeof(*p->gone));
        p->gone[p->ngone++] = c->digest;
        c->digest = NULL;
    } else {
        fail_once(p, res);
    }
    free(c->digest);
    free(c);
}

static void drain(struct prune *p)
{
    while (p->pending > 0)
        ev_run(p->loop, EVRUN_ONCE);
}

static int removed_has(json_t *removed, const char *tag)
{
    size_t i;
    json_t *t;
    json_array_foreach(removed, i, t) if (strcmp(json_string_value(t), tag) == 0) return 1;
    return 0;
}

/* One repository: removed is the array of its tags that left the catalog. */
static json_t *prune_repo(struct prune *p, json_t *removed)
{
    p->pending = 1;
    reg_list_tags(p->dst, p->repo, 0, PRUNE_MAX_TAGS, listed, p);
    drain(p);
    for (size_t i = 0; !p->err[0] && i < p->ntags; i++) {
        struct pcall *c = xcalloc(1, sizeof(*c));
        c->p = p;
        c->i = i;
        p->pending++;
        reg_head_manifest(p->dst, p->repo, p->tags[i].tag, headed, c);
    }
    drain(p);
    json_t *kept = json_array();
    for (size_t i = 0; !p->err[0] && i < p->ntags; i++) {
        struct ptag *t = &p->tags[i];
        if (!removed_has(removed, t->tag) || !t->digest[0])
            continue;
        const char *keeper = NULL;
        int first = 1; /* the first removed tag of a digest issues the DELETE */
        for (size_t k = 0; k < p->ntags; k++) {
            if (strcmp(p->tags[k].digest, t->digest) != 0)
                continue;
            if (!removed_has(removed, p->tags[k].tag))
                keeper = p->tags[k].tag;
            else if (k < i)
                first = 0;
        }
        if (keeper) {
            json_array_append_new(kept, json_pack("{s:s, s:s}", "tag", t->tag, "kept_by", keeper));
        } else if (first) {
            struct pcall *c = xcalloc(1, sizeof(*c));
            c->p = p;
            c->digest = xstrdup(t->digest);
            p->pending++;
            reg_delete_manifest(p->dst, p->repo, t->digest, deleted, c);
        }
    }
    drain(p);
    return kept;
}

/* The target's epoch in Redis (see rq.h), into epoch; "" when it has none. */
static void prune_epoch(struct rconn *rc, const struct rq *q, const char *target_url,
                        char *epoch, size_t n)
{
    struct rq_res res;
    struct err e;
    epoch[0] = '\0';
    if (rq_exec(rc, rq_cmd_target_get(q, target_url), &res, &e) < 0)
        log_warn("delete removed tags: %s (the present sets keep what is deleted)", e.msg);
    else if (res.status == RQ_VALUE && rq_res_field(&res, "epoch"))
        snprintf(epoch, n, "%s", rq_res_field(&res, "epoch"));
    rq_res_free(&res);
}

static void prune_forget(struct rconn *rc, const struct rq *q, const char *target_url,
                         const char *epoch, const struct prune *p)
{
    struct rq_res res;
    struct err e;
    if (!epoch[0] || p->ngone == 0)
        return;
    if (rq_exec(rc, rq_cmd_present_forget(q, target_url, epoch, p->repo,
                                          (const char *const *)p->gone, p->ngone),
                &res, &e) < 0)
        log_warn("delete removed tags: %s: %s (the present set keeps what is deleted)", p->repo,
                 e.msg);
    rq_res_free(&res);
}

json_t *coord_prune(struct rconn *rc, const struct rq *q, const char *target_url,
                    const char *target_prefix, json_t *removed, struct err *e)
{
    json_t *out = NULL;
    struct reg_client *client = NULL;
    struct reg_registry *dst = NULL;
    struct creds cr = {NULL, NULL};
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct reg_client_opts o;
    reg_client_opts_default(&o);
    if (!loop || !(client = reg_client_new(loop, &o, e)))
        goto out;
    int found = creds_lookup("HUBSYNC_TARGET", target_url, target_url, &cr, e);
    if (found < 0 || !(dst = reg_registry_new(client, target_url, found ? &cr : NULL, e)))
        goto out;
    char epoch[DIGEST_STR_SIZE];
    prune_epoch(rc, q, target_url, epoch, sizeof(epoch));
    out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(removed, i, r)
    {
        char *repo = xasprintf("%s%s", target_prefix,
                               json_string_value(json_object_get(r, "repository")));
        struct prune p = {loop, dst, repo, NULL, 0, 0, "", json_array(), NULL, 0};
        json_t *kept = prune_repo(&p, json_object_get(r, "tags"));
        prune_forget(rc, q, target_url, epoch, &p);
        json_t *entry = json_pack("{s:s, s:o, s:o}", "repository", repo, "deleted", p.deleted,
                                  "kept", kept);
        if (p.err[0])
            json_object_set_new(entry, "error", json_string(p.err));
        json_array_append_new(out, entry);
        for (size_t k = 0; k < p.ntags; k++)
            free(p.tags[k].tag);
        free(p.tags);
        for (size_t k = 0; k < p.ngone; k++)
            free(p.gone[k]);
        free(p.gone);
        free(repo);
    }
out:
    reg_registry_free(dst);
    reg_client_free(client);
    creds_clear(&cr);
    if (loop)
        ev_loop_destroy(loop);
    return out;
}
