/* metrics: see metrics.h. */
#include "metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"
#include "xalloc.h"

struct metrics_server {
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t lock; /* guards text and len: published here, read by the server */
    char *text;
    size_t len;
};

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)con_cls;
    struct metrics_server *s = cls;
    struct MHD_Response *r;
    unsigned int status = MHD_HTTP_OK;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    } else if (strcmp(url, "/metrics") != 0) {
        status = MHD_HTTP_NOT_FOUND;
        static char not_found[] = "only /metrics here\n";
        r = MHD_create_response_from_buffer(strlen(not_found), not_found,
                                            MHD_RESPMEM_PERSISTENT);
    } else {
        pthread_mutex_lock(&s->lock);
        r = MHD_create_response_from_buffer(s->len, s->text ? s->text : NULL,
                                            MHD_RESPMEM_MUST_COPY);
        pthread_mutex_unlock(&s->lock);
    }
    if (!r)
        return MHD_NO;
    if (status == MHD_HTTP_OK)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* "HOST:PORT" or ":PORT" into an IPv4 socket address. */
static int parse_addr(const char *addr, struct sockaddr_in *sa, struct err *e)
{
    const char *colon = strrchr(addr, ':');
    long long port;
    if (!colon || text_ll(colon + 1, &port) < 0 || port < 0 || port > 65535)
        return err_set(e, "--metrics-listen '%s': not HOST:PORT", addr);
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (colon == addr)
        return 0; /* every interface */
    char *host = xstrndup(addr, (size_t)(colon - addr));
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        err_set(e, "--metrics-listen '%s': %s", addr, gai_strerror(rc));
        free(host);
        return -1;
    }
    sa->sin_addr = ((struct sockaddr_in *)(void *)res->ai_addr)->sin_addr;
    freeaddrinfo(res);
    free(host);
    return 0;
}

int metrics_server_start(struct metrics_server **out, const char *addr, struct err *e)
{
    struct sockaddr_in sa;
    *out = NULL;
    if (parse_addr(addr, &sa, e) < 0)
        return -1;
    struct metrics_server *s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, ntohs(sa.sin_port), NULL, NULL,
                            answer, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT,
                            10u, MHD_OPTION_END);
    if (!s->d) {
        pthread_mutex_destroy(&s->lock);
        free(s);
        return err_set(e, "--metrics-listen '%s': cannot listen there (in use?)", addr);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : ntohs(sa.sin_port);
    *out = s;
    return 0;
}

int metrics_server_port(const struct metrics_server *s)
{
    return s->port;
}

void metrics_server_publish(struct metrics_server *s, const char *text, size_t len)
{
    char *copy = xmalloc(len + 1);
    memcpy(copy, text, len);
    copy[len] = '\0';
    pthread_mutex_lock(&s->lock);
    char *old = s->text;
    s->text = copy;
    s->len = len;
    pthread_mutex_unlock(&s->lock);
    free(old);
}

void metrics_server_stop(struct metrics_server *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->d);
    pthread_mutex_destroy(&s->lock);
    free(s->text);
    free(s);
}

/* ---- the exposition text ---- */

void metrics_family(struct buf *b, const char *name, const char *type, const char *help)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void number(struct buf *b, double v)
{
    if (v == (double)(long long)v)
        buf_printf(b, " %lld\n", (long long)v);
    else
        buf_printf(b, " %.6g\n", v);
}

void metrics_sample(struct buf *b, const char *name, const char *label, const char *value,
                    double v)
{
    buf_puts(b, name);
    if (label) {
        buf_printf(b, "{%s=\"", label);
        for (const char *p = value; *p; p++) {
            if (*p == '\\' || *p == '"')
                buf_printf(b, "\\%c", *p);
            else if (*p == '\n')
                buf_puts(b, "\\n");
            else
                buf_append(b, p, 1);
        }
        buf_puts(b, "\"}");
    }
    number(b, v);
}

const double metrics_bounds[METRICS_NBUCKETS] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120};

void metrics_hist_observe(struct metrics_hist *h, double seconds)
{
    for (int i = 0; i < METRICS_NBUCKETS; i++)
        if (seconds <= metrics_bounds[i]) {
            h->counts[i]++;
            break;
        }
    h->n++;
    h->sum += seconds;
}

void metrics_hist_write(struct buf *b, const char *name, const struct metrics_hist *h)
{
    long long cum = 0;
    char le[32];
    for (int i = 0; i < METRICS_NBUCKETS; i++) {
        cum += h->counts[i];
        snprintf(le, sizeof(le), "%g", metrics_bounds[i]);
        buf_printf(b, "%s_bucket{le=\"%s\"}", name, le);
        number(b, (double)cum);
    }
    buf_printf(b, "%s_bucket{le=\"+Inf\"}", name);
    number(b, (double)h->n);
    buf_printf(b, "%s_sum", name);
    number(b, h->sum);
    buf_printf(b, "%s_count", name);
    number(b, (double)h->n);
}
