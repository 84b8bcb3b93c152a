/* creds: see creds.h. */
#include "creds.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ev.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "reg_parse.h"
#include "xalloc.h"

extern char **environ;

#define HUB_KEY "https://index.docker.io/v1/"
#define HUB_HOST "index.docker.io"
#define CONFIG_MAX (1L << 20)
#define HELPER_OUT_MAX (64L << 10)
#define HELPER_TIMEOUT_MS 15000
#define SECRET_MAX 4096

void creds_free_secret(char **s)
{
    if (!*s)
        return;
    explicit_bzero(*s, strlen(*s));
    free(*s);
    *s = NULL;
}

void creds_clear(struct creds *c)
{
    if (!c)
        return;
    creds_free_secret(&c->username);
    creds_free_secret(&c->password);
}

void creds_copy(struct creds *dst, const struct creds *src)
{
    dst->username = src && src->username ? xstrdup(src->username) : NULL;
    dst->password = src && src->password ? xstrdup(src->password) : NULL;
}

char *creds_host_key(const char *s)
{
    if (!s)
        return NULL;
    const char *p = strstr(s, "://");
    p = p ? p + 3 : s;
    /* user:pass@ never belongs in a key; skip it if someone wrote one. */
    const char *end = p + strcspn(p, "/?#");
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at)
        p = at + 1;
    size_t n = (size_t)(end - p);
    if (n == 0)
        return NULL;
    char *h = xstrndup(p, n);
    for (char *q = h; *q; q++)
        *q = (char)tolower((unsigned char)*q);
    static const char *const hub[] = {"docker.io", "index.docker.io", "registry-1.docker.io",
                                      "registry.hub.docker.com"};
    for (size_t i = 0; i < sizeof(hub) / sizeof(hub[0]); i++)
        if (strcmp(h, hub[i]) == 0) {
            free(h);
            return xstrdup(HUB_HOST);
        }
    return h;
}

/* Read a whole small file; 1 ok, 0 missing, -1 error. */
static int read_small_file(const char *path, long max, char **out, size_t *len, struct err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        return err_set(e, "%s: %s", path, strerror(errno));
    }
    int rc = -1;
    char *data = xmalloc((size_t)max + 1);
    size_t n = fread(data, 1, (size_t)max + 1, f);
    if (ferror(f)) {
        err_set(e, "%s: read error", path);
        goto out;
    }
    if ((long)n > max) {
        err_set(e, "%s: larger than %ld bytes", path, max);
        goto out;
    }
    data[n] = '\0';
    *out = data;
    *len = n;
    data = NULL;
    rc = 1;
out:
    if (data) {
        explicit_bzero(data, (size_t)max + 1);
        free(data);
    }
    fclose(f);
    return rc;
}

int creds_from_env(const char *prefix, struct creds *out, struct err *e)
{
    memset(out, 0, sizeof(*out));
    if (!prefix)
        return 0;
    char *nu = xasprintf("%s_USERNAME", prefix);
    char *np = xasprintf("%s_PASSWORD", prefix);
    char *nf = xasprintf("%s_PASSWORD_FILE", prefix);
    const char *u = getenv(nu), *p = getenv(np), *pf = getenv(nf);
    int rc = -1;
    if (u && !*u)
        u = NULL;
    if (p && !*p)
        p = NULL;
    if (pf && !*pf)
        pf = NULL;
    if (!u && !p && !pf) {
        rc = 0;
        goto out;
    }
    if (!u) {
        err_set(e, "%s is set but %s is not", p ? np : nf, nu);
        goto out;
    }
    if (!p && !pf) {
        err_set(e, "%s is set but neither %s nor %s is", nu, np, nf);
        goto out;
    }
    if (p && pf) {
        err_set(e, "set only one of %s and %s", np, nf);
        goto out;
    }
    char *secret = NULL;
    if (pf) {
        size_t len;
        int r = read_small_file(pf, SECRET_MAX, &secret, &len, e);
        if (r == 0)
            err_set(e, "%s: %s does not exist", nf, pf);
        if (r != 1)
            goto out;
        if (len && secret[len - 1] == '\n')
            secret[--len] = '\0';
        if (len && secret[len - 1] == '\r')
            secret[--len] = '\0';
        if (len == 0) {
            creds_free_secret(&secret);
            err_set(e, "%s: %s is empty", nf, pf);
            goto out;
        }
    } else {
        secret = xstrdup(p);
    }
    out->username = xstrdup(u);
    out->password = secret;
    rc = 1;
out:
    free(nu);
    free(np);
    free(nf);
    return rc;
}

/* Strict base64 (standard alphabet, padding optional). -1 on bad input. */
static int b64_decode(const char *in, char **out, size_t *outlen)
{
    size_t n = strlen(in);
    while (n && in[n - 1] == '=')
        n--;
    char *buf = xmalloc(n * 3 / 4 + 4);
    size_t k = 0;
    unsigned int acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)in[i], v;
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '+')
            v = 62;
        else if (c == '/')
            v = 63;
        else {
            explicit_bzero(buf, n * 3 / 4 + 4);
            free(buf);
            return -1;
        }
        acc = (acc << 6) | (unsigned int)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[k++] = (char)((acc >> bits) & 0xff);
        }
    }
    buf[k] = '\0';
    *out = buf;
    *outlen = k;
    return 0;
}

static const char *config_dir_path(char **owned)
{
    const char *dc = getenv("DOCKER_CONFIG");
    if (dc && *dc) {
        *owned = xasprintf("%s/config.json", dc);
        return *owned;
    }
    const char *home = getenv("HOME");
    if (!home || !*home)
        return NULL;
    *owned = xasprintf("%s/.docker/config.json", home);
    return *owned;
}

/* The member of obj whose key names the same host as `host`. */
static json_t *find_by_host(json_t *obj, const char *host)
{
    if (!json_is_object(obj))
        return NULL;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        char *hk = creds_host_key(k);
        int same = hk && strcmp(hk, host) == 0;
        free(hk);
        if (same)
            return v;
    }
    return NULL;
}

/* Zero every string in a parsed config or helper answer before it is freed. */
static void wipe_json(json_t *j)
{
    const char *k;
    json_t *v;
    size_t i;
    if (json_is_string(j))
        explicit_bzero((char *)json_string_value(j), json_string_length(j));
    else if (json_is_object(j))
        json_object_foreach(j, k, v) wipe_json(v);
    else if (json_is_array(j))
        json_array_foreach(j, i, v) wipe_json(v);
}

/* Run docker-credential-<helper> get; 1 found, 0 not found, -1 error. */
int creds_parse_helper_answer(const char *data, size_t len, const char *prog, struct creds *out,
                              struct err *e)
{
    int rc = -1;
    json_error_t je;
    memset(out, 0, sizeof(*out));
    json_t *root = json_loadb(data, len, 0, &je);
    const char *user = root ? json_string_value(json_object_get(root, "Username")) : NULL;
    const char *secret = root ? json_string_value(json_object_get(root, "Secret")) : NULL;
    if (!user || !secret) {
        err_set(e, "credential helper %s: answer is not {\"Username\",\"Secret\"} JSON", prog);
        goto out;
    }
    if (!*secret) {
        rc = 0;
        goto out;
    }
    out->username = xstrdup(user);
    out->password = xstrdup(secret);
    rc = 1;
out:
    if (root) {
        wipe_json(root);
        json_decref(root);
    }
    return rc;
}

static int helper_name_ok(const char *helper)
{
    if (!*helper)
        return 0;
    for (const char *p = helper; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.'))
            return 0;
    return 1;
}

/* The key docker itself hands helpers for a registry: Docker Hub's, else
 * host[:port]. NULL if the URL has no host. */
static char *helper_server(const char *registry_url)
{
    char *host = creds_host_key(registry_url);
    if (host && strcmp(host, HUB_HOST) == 0) {
        free(host);
        return xstrdup(HUB_KEY);
    }
    return host;
}

/* Start `prog get` with the server key of registry_url on its stdin; its
 * stdout is *out_fd (close-on-exec, non-blocking). 0 ok, -1 error.
 * The key is in the pipe before the helper starts: the parent never writes
 * to a helper that may have exited without reading (that write would raise
 * SIGPIPE, which nothing here ignores). */
static int helper_spawn(const char *prog, const char *registry_url, pid_t *pid, int *out_fd,
                        struct err *e)
{
    int in[2] = {-1, -1}, outp[2] = {-1, -1};
    int rc = -1;
    posix_spawn_file_actions_t fa;
    int fa_ok = 0;
    char *server = helper_server(registry_url);
    *pid = -1;
    if (!server) {
        err_set(e, "registry \"%.200s\" has no host name", registry_url);
        goto out;
    }
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(outp, O_CLOEXEC) != 0) {
        err_set(e, "%s: pipe: %s", prog, strerror(errno));
        goto out;
    }
    /* The URL is far below a pipe's buffer: this write never waits. */
    size_t sl = strlen(server);
    if (write(in[1], server, sl) != (ssize_t)sl) {
        err_set(e, "credential helper %s: cannot write the server URL", prog);
        goto out;
    }
    close(in[1]); /* the helper reads the key, then the end of its input */
    in[1] = -1;
    if (posix_spawn_file_actions_init(&fa) != 0) {
        err_set(e, "%s: cannot prepare spawn", prog);
        goto out;
    }
    fa_ok = 1;
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
    char *argv[] = {(char *)prog, (char *)"get", NULL};
    int sr = posix_spawnp(pid, prog, &fa, NULL, argv, environ);
    if (sr != 0) {
        *pid = -1;
        err_set(e, "credential helper %s: %s", prog, strerror(sr));
        goto out;
    }
    if (fcntl(outp[0], F_SETFL, fcntl(outp[0], F_GETFL) | O_NONBLOCK) != 0) {
        err_set(e, "credential helper %s: %s", prog, strerror(errno));
        goto out;
    }
    *out_fd = outp[0];
    outp[0] = -1;
    rc = 0;
out:
    if (rc != 0 && *pid > 0) {
        kill(*pid, SIGKILL);
        while (waitpid(*pid, NULL, 0) < 0 && errno == EINTR)
            ;
        *pid = -1;
    }
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (outp[i] >= 0)
            close(outp[i]);
    }
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    free(server);
    return rc;
}

/* What a helper that exited with status after writing b means. */
static int helper_verdict(int status, const struct buf *b, const char *prog, struct creds *out,
                          struct err *e)
{
    memset(out, 0, sizeof(*out));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        /* docker's helpers say "credentials not found" on stdout and exit 1. */
        if (b->data && strstr(b->data, "credentials not found"))
            return 0;
        return err_set(e, "credential helper %s failed (exit status %d)", prog,
                       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    return creds_parse_helper_answer(b->data ? b->data : "", b->len, prog, out, e);
}

/* Read what fd has now into b; 1 at end of file, 0 for more later, -1 error. */
static int helper_read(int fd, struct buf *b, const char *prog, struct err *e)
{
    for (;;) {
        char chunk[4096];
        ssize_t r = read(fd, chunk, sizeof(chunk));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (r < 0)
            return err_set(e, "credential helper %s: %s", prog, strerror(errno));
        if (r == 0)
            return 1;
        int over = buf_append(b, chunk, (size_t)r) != 0;
        explicit_bzero(chunk, sizeof(chunk));
        if (over)
            return err_set(e, "credential helper %s: answer larger than %ld bytes", prog,
                           HELPER_OUT_MAX);
    }
}

static void wipe_buf(struct buf *b)
{
    if (b->data)
        explicit_bzero(b->data, b->len);
    buf_free(b);
}

/* Run docker-credential-<helper> get for registry_url, blocking. */
static int run_helper(const char *helper, const char *registry_url, struct creds *out,
                      struct err *e)
{
    char *prog = xasprintf("docker-credential-%s", helper);
    pid_t pid = -1;
    int fd = -1, rc = -1, status = 0;
    struct buf b = BUF_INIT(HELPER_OUT_MAX);
    if (helper_spawn(prog, registry_url, &pid, &fd, e) != 0)
        goto out;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long waited = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (waited >= HELPER_TIMEOUT_MS) {
            err_set(e, "credential helper %s: no answer within %d s", prog,
                    HELPER_TIMEOUT_MS / 1000);
            goto out;
        }
        struct pollfd pfd = {fd, POLLIN, 0};
        int pr = poll(&pfd, 1, (int)(HELPER_TIMEOUT_MS - waited));
        if (pr < 0 && errno != EINTR) {
            err_set(e, "credential helper %s: poll: %s", prog, strerror(errno));
            goto out;
        }
        if (pr <= 0)
            continue; /* a signal, or the time is up (checked above) */
        int r = helper_read(fd, &b, prog, e);
        if (r < 0)
            goto out;
        if (r == 1)
            break;
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    pid = -1;
    rc = helper_verdict(status, &b, prog, out, e);
out:
    if (pid > 0) {
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    if (fd >= 0)
        close(fd);
    wipe_buf(&b);
    free(prog);
    return rc;
}

/* ---- asking a helper from a libev loop ---- */

struct creds_ask {
    struct ev_loop *loop;
    char *prog;
    pid_t pid;
    int fd;
    int eof, exited, status;
    struct buf b;
    ev_io io;
    ev_child child;
    ev_timer timer;  /* the timeout, or at once for a helper that could not start */
    struct err e;    /* the failure to report, when failed */
    int failed;
    creds_ask_fn cb;
    void *arg;
};

/* Report once and free a. */
static void ask_finish(struct creds_ask *a)
{
    struct creds cr = {NULL, NULL};
    int rc = -1;
    ev_io_stop(a->loop, &a->io);
    ev_child_stop(a->loop, &a->child);
    ev_timer_stop(a->loop, &a->timer);
    if (!a->failed)
        rc = helper_verdict(a->status, &a->b, a->prog, &cr, &a->e);
    a->cb(rc, &cr, &a->e, a->arg);
    creds_clear(&cr);
    creds_ask_cancel(a);
}

static void ask_fail(struct creds_ask *a)
{
    a->failed = 1;
    ask_finish(a);
}

static void ask_output(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct creds_ask *a = w->data;
    int r = helper_read(a->fd, &a->b, a->prog, &a->e);
    if (r < 0) {
        ask_fail(a);
        return;
    }
    if (r == 0)
        return;
    a->eof = 1;
    ev_io_stop(a->loop, &a->io);
    if (a->exited)
        ask_finish(a);
}

static void ask_exited(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)loop;
    (void)revents;
    struct creds_ask *a = w->data;
    a->exited = 1;
    a->status = w->rstatus;
    ev_child_stop(a->loop, &a->child);
    if (a->eof)
        ask_finish(a);
}

static void ask_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct creds_ask *a = w->data;
    if (!a->failed)
        err_set(&a->e, "credential helper %s: no answer within %d s", a->prog,
                HELPER_TIMEOUT_MS / 1000);
    ask_fail(a);
}

struct creds_ask *creds_ask_start(struct ev_loop *loop, const char *helper,
                                  const char *registry_url, creds_ask_fn cb, void *arg)
{
    struct creds_ask *a = xcalloc(1, sizeof(*a));
    a->loop = loop;
    a->prog = xasprintf("docker-credential-%s", helper);
    a->pid = -1;
    a->fd = -1;
    a->cb = cb;
    a->arg = arg;
    buf_init(&a->b, HELPER_OUT_MAX);
    ev_init(&a->io, ask_output);
    ev_init(&a->child, ask_exited);
    ev_init(&a->timer, ask_timeout);
    a->io.data = a->child.data = a->timer.data = a;
    if (helper_spawn(a->prog, registry_url, &a->pid, &a->fd, &a->e) != 0) {
        a->failed = 1;
    } else {
        /* Watched before the loop runs again, so its exit cannot be missed. */
        ev_child_set(&a->child, a->pid, 0);
        ev_child_start(loop, &a->child);
        ev_io_set(&a->io, a->fd, EV_READ);
        ev_io_start(loop, &a->io);
    }
    ev_timer_set(&a->timer, a->failed ? 0. : HELPER_TIMEOUT_MS / 1000.0, 0.);
    ev_timer_start(loop, &a->timer);
    return a;
}

void creds_ask_cancel(struct creds_ask *a)
{
    if (!a)
        return;
    ev_io_stop(a->loop, &a->io);
    ev_child_stop(a->loop, &a->child);
    ev_timer_stop(a->loop, &a->timer);
    /* libev reaps every child of the default loop, this one too once killed. */
    if (a->pid > 0 && !a->exited)
        kill(a->pid, SIGKILL);
    if (a->fd >= 0)
        close(a->fd);
    wipe_buf(&a->b);
    free(a->prog);
    free(a);
}

/* An auths entry: 1 found, 0 empty, -1 error. */
static int from_auth_entry(json_t *entry, const char *path, const char *key, struct creds *out,
                           struct err *e)
{
    if (!json_is_object(entry))
        return err_set(e, "%s: auths[\"%s\"] is not an object", path, key);
    const char *auth = json_string_value(json_object_get(entry, "auth"));
    if (auth && *auth) {
        char *dec;
        size_t n;
        if (b64_decode(auth, &dec, &n) != 0)
            return err_set(e, "%s: auths[\"%s\"].auth is not base64", path, key);
        char *colon = memchr(dec, ':', n);
        if (!colon || colon == dec) {
            explicit_bzero(dec, n);
            free(dec);
            return err_set(e, "%s: auths[\"%s\"].auth is not base64 of \"user:password\"", path,
                           key);
        }
        out->username = xstrndup(dec, (size_t)(colon - dec));
        out->password = xstrdup(colon + 1);
        explicit_bzero(dec, n);
        free(dec);
        return 1;
    }
    const char *u = json_string_value(json_object_get(entry, "username"));
    const char *p = json_string_value(json_object_get(entry, "password"));
    if (u && *u && p && *p) {
        out->username = xstrdup(u);
        out->password = xstrdup(p);
        return 1;
    }
    return 0;
}

int creds_parse_config(const char *data, size_t len, const char *path, const char *host,
                       struct creds *out, char **helper, struct err *e)
{
    int rc = -1;
    json_error_t je;
    memset(out, 0, sizeof(*out));
    *helper = NULL;
    json_t *root = json_loadb(data, len, 0, &je);
    if (!json_is_object(root)) {
        /* Position only: jansson's text quotes the input, which holds secrets. */
        err_set(e, "%s line %d column %d: not a valid JSON object", path, je.line, je.column);
        goto out;
    }
    json_t *h = find_by_host(json_object_get(root, "credHelpers"), host);
    const char *name = NULL;
    if (h) {
        name = json_string_value(h);
        if (!name) {
            err_set(e, "%s: credHelpers[\"%s\"] is not a string", path, host);
            goto out;
        }
    } else {
        json_t *a = find_by_host(json_object_get(root, "auths"), host);
        rc = a ? from_auth_entry(a, path, host, out, e) : 0;
        if (rc != 0)
            goto out;
        name = json_string_value(json_object_get(root, "credsStore"));
        if (!name || !*name)
            goto out;
    }
    if (!helper_name_ok(name)) {
        err_set(e, "%s: credential helper name \"%.100s\" is not valid", path, name);
        rc = -1;
        goto out;
    }
    *helper = xstrdup(name);
    rc = CREDS_HELPER;
out:
    if (root) {
        wipe_json(root);
        json_decref(root);
    }
    return rc;
}

/* docker's config for registry_url without running a helper: as
 * creds_parse_config, *helper set for CREDS_HELPER. */
static int from_docker_config(const char *registry_url, struct creds *out, char **helper,
                              struct err *e)
{
    memset(out, 0, sizeof(*out));
    *helper = NULL;
    char *owned = NULL, *data = NULL, *host = NULL;
    size_t len = 0;
    int rc = -1;
    const char *path = config_dir_path(&owned);
    if (!path) {
        rc = 0;
        goto out;
    }
    host = creds_host_key(registry_url);
    if (!host) {
        err_set(e, "registry \"%s\" has no host name", registry_url);
        goto out;
    }
    rc = read_small_file(path, CONFIG_MAX, &data, &len, e);
    if (rc <= 0)
        goto out;
    rc = creds_parse_config(data, len, path, host, out, helper, e);
out:
    if (data) {
        explicit_bzero(data, len);
        free(data);
    }
    free(host);
    free(owned);
    return rc;
}

int creds_from_docker_config(const char *registry_url, struct creds *out, struct err *e)
{
    return creds_lookup(NULL, NULL, registry_url, out, e);
}

int creds_find(const char *env_prefix, const char *env_registry, const char *registry_url,
               struct creds *out, char **helper, struct err *e)
{
    *helper = NULL;
    int bound = env_registry && reg_parse_same_origin(registry_url, env_registry);
    int rc = creds_from_env(bound ? env_prefix : NULL, out, e);
    if (rc != 0)
        return rc;
    return from_docker_config(registry_url, out, helper, e);
}

int creds_lookup(const char *env_prefix, const char *env_registry, const char *registry_url,
                 struct creds *out, struct err *e)
{
    char *helper = NULL;
    int rc = creds_find(env_prefix, env_registry, registry_url, out, &helper, e);
    if (rc == CREDS_HELPER)
        rc = run_helper(helper, registry_url, out, e);
    free(helper);
    return rc;
}
