/* events: what the coordinator adds to the events stream (tags it removed,
 * each run's end; workers add the tags they write) and the webhook
 * (--webhook URL) that delivers the stream as CloudEvents, in the stream's
 * order, from the last event the receiver took (kept in Redis, so a
 * restarted coordinator goes on where the last one stopped). A receiver
 * that fails is asked again with backoff; the coordinator delivers between
 * its polls, so no copy ever waits for it. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coord.h"
#include "log.h"
#include "xalloc.h"

#define WEBHOOK_BATCH 100
#define WEBHOOK_TIMEOUT_S 10L
#define WEBHOOK_BACKOFF_MAX_S 60.

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void add(struct rconn *rc, const struct rq *q, const char *type, json_t *data)
{
    struct err e;
    struct rq_res res;
    char *text = json_dumps(data, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(data);
    if (!text) {
        log_warn("event %s not recorded: not JSON text", type);
        return;
    }
    if (rq_exec(rc, rq_cmd_event_add(q, type, text), &res, &e) < 0)
        log_warn("event %s not recorded: %s", type, e.msg);
    rq_res_free(&res);
    free(text);
}

void coord_events_run_end(struct rconn *rc, const struct rq *q, json_t *report)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(report, "pruned"), i, r)
    {
        size_t k;
        json_t *tag;
        json_array_foreach(json_object_get(r, "deleted"), k, tag)
        {
            add(rc, q, "tag.removed",
                json_pack("{s:O, s:O, s:O}", "run", json_object_get(report, "run"),
                          "repository", json_object_get(r, "repository"), "tag", tag));
        }
    }
    json_t *data = json_object();
    static const char *const fields[] = {"run",       "status",      "commit",
                                         "from",      "jobs_total",  "jobs_done",
                                         "jobs_failed", "jobs_deferred", "started_ms"};
    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
        json_t *v = json_object_get(report, fields[f]);
        if (v)
            json_object_set(data, fields[f], v);
    }
    add(rc, q, "run.finished", data);
}

/* ---- the webhook ---------------------------------------------------------------------- */

int coord_webhook_init(struct coord_webhook *wh, const struct cfg *c, struct err *e)
{
    memset(wh, 0, sizeof(*wh));
    const char *url = cfg_str(c, COORD_ID_WEBHOOK);
    if (!url)
        return 0;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return err_set(e, "--webhook must be an http(s):// URL");
    /* Only the first init sets the allocator; later ones count references. */
    CURLcode gc = curl_global_init_mem(CURL_GLOBAL_DEFAULT, xmalloc, free, xrealloc, xstrdup,
                                       xcalloc);
    if (gc != CURLE_OK)
        return err_set(e, "libcurl init: %s", curl_easy_strerror(gc));
    wh->url = url;
    wh->easy = curl_easy_init();
    if (!wh->easy) {
        curl_global_cleanup();
        wh->url = NULL;
        return err_set(e, "libcurl: cannot create a handle");
    }
    return 0;
}

static size_t discard(char *p, size_t sz, size_t nm, void *arg)
{
    (void)p;
    (void)arg;
    return sz * nm;
}

/* POST one event as a structured CloudEvent; 0 when the receiver took it. */
static int post(struct coord_webhook *wh, const char *id, const char *type, const char *data)
{
    json_t *d = json_loads(data, 0, NULL);
    char when[64] = "";
    long long ms = strtoll(id, NULL, 10); /* a stream id starts with the ms it was added */
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    size_t n = gmtime_r(&sec, &tm) ? strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm) : 0;
    snprintf(when + n, sizeof(when) - n, ".%03lldZ", ms % 1000);
    char *ce_type = xasprintf("io.hubsync.%s", type);
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "specversion", "1.0", "id", id,
                           "source", "hubsync", "type", ce_type, "time", when,
                           "datacontenttype", "application/json", "data",
                           d ? d : json_string(data));
    free(ce_type);
    char *body = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    if (!body) {
        log_warn("webhook: event %s is not JSON text; skipped", id);
        return 0;
    }
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/cloudevents+json");
    CURL *c = wh->easy;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, wh->url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, WEBHOOK_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    CURLcode rc = h ? curl_easy_perform(c) : CURLE_OUT_OF_MEMORY;
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    free(body);
    if (rc == CURLE_OK && status >= 200 && status <= 299)
        return 0;
    /* The URL may carry a token: the log names the event, not the URL. */
    if (rc != CURLE_OK)
        log_warn("webhook: event %s: %s", id, curl_easy_strerror(rc));
    else
        log_warn("webhook: event %s: HTTP %ld", id, status);
    return -1;
}

void coord_webhook_tick(struct coord_webhook *wh, struct rconn *rc, const struct rq *q)
{
    struct err e;
    struct rq_res res;
    if (!wh->url || now_s() < wh->next_try)
        return;
    if (!wh->after[0]) {
        if (rq_exec(rc, rq_cmd_events_delivered(q), &res, &e) < 0) {
            log_warn("webhook: %s", e.msg);
            rq_res_free(&res);
            return;
        }
        snprintf(wh->after, sizeof(wh->after), "%s", res.str ? res.str : "0");
        rq_res_free(&res);
    }
    if (rq_exec(rc, rq_cmd_events_after(q, wh->after, WEBHOOK_BATCH), &res, &e) < 0) {
        log_warn("webhook: %s", e.msg);
        rq_res_free(&res);
        return;
    }
    for (size_t i = 0; i + RQ_EVENT_FIELDS <= res.nitems; i += RQ_EVENT_FIELDS) {
        const char *id = res.items[i];
        if (post(wh, id, res.items[i + 1], res.items[i + 2]) < 0) {
            wh->backoff = wh->backoff ? wh->backoff * 2 : 1;
            if (wh->backoff > WEBHOOK_BACKOFF_MAX_S)
                wh->backoff = WEBHOOK_BACKOFF_MAX_S;
            wh->next_try = now_s() + wh->backoff;
            break;
        }
        wh->backoff = 0;
        snprintf(wh->after, sizeof(wh->after), "%s", id);
        struct rq_res set;
        if (rq_exec(rc, rq_cmd_events_delivered_set(q, id), &set, &e) < 0)
            log_warn("webhook: %s", e.msg);
        rq_res_free(&set);
    }
    rq_res_free(&res);
}

int coord_webhook_pending(const struct coord_webhook *wh, struct rconn *rc, const struct rq *q)
{
    struct err e;
    struct rq_res res;
    if (!wh->url)
        return 0;
    int n = rq_exec(rc, rq_cmd_events_after(q, wh->after[0] ? wh->after : "0", 1), &res, &e) == 0
                ? (int)res.n
                : 0;
    rq_res_free(&res);
    return n > 0;
}

void coord_webhook_free(struct coord_webhook *wh)
{
    if (wh->easy) {
        curl_easy_cleanup(wh->easy);
        curl_global_cleanup();
    }
    memset(wh, 0, sizeof(*wh));
}
