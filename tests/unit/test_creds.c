/* Unit tests for common/creds: environment, docker config.json, credential
 * helpers (a fake docker-credential-* script on PATH). The Makefile links this
 * test with poll and posix_spawnp wrapped (ld --wrap): the seams below make
 * poll fail and let a helper exit before creds goes on. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <ev.h>

#include "creds.h"
#include "xalloc.h"

struct fixture {
    char dir[64];
    char *old_path;
};

static void write_file(const char *dir, const char *name, const char *text, int mode)
{
    char *p = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    chmod(p, (mode_t)mode);
    free(p);
}

static int setup(void **state)
{
    struct fixture *fx = xcalloc(1, sizeof(*fx));
    strcpy(fx->dir, "/tmp/hubsync-creds-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    setenv("DOCKER_CONFIG", fx->dir, 1);
    const char *path = getenv("PATH");
    fx->old_path = xstrdup(path ? path : "/usr/bin:/bin");
    char *np = xasprintf("%s:%s", fx->dir, fx->old_path);
    setenv("PATH", np, 1);
    free(np);
    /* A helper that knows one server, answers "not found" otherwise, and
     * records what it was asked. */
    write_file(fx->dir, "docker-credential-fake",
               "#!/bin/sh\n"
               "[ \"$1\" = get ] || exit 3\n"
               "read -r server\n"
               "echo \"$server\" >> \"$(dirname \"$0\")/asked\"\n"
               "case \"$server\" in\n"
               "  https://index.docker.io/v1/|helped.example) "
               "echo '{\"ServerURL\":\"x\",\"Username\":\"hub-user\",\"Secret\":\"hub-secret\"}' ;;\n"
               "  *) echo 'credentials not found in native keychain'; exit 1 ;;\n"
               "esac\n",
               0755);
    write_file(fx->dir, "docker-credential-broken", "#!/bin/sh\necho '{not json'\n", 0755);
    write_file(fx->dir, "docker-credential-crash", "#!/bin/sh\nexit 7\n", 0755);
    write_file(fx->dir, "docker-credential-huge", "#!/bin/sh\nhead -c 70000 /dev/zero\n", 0755);
    write_file(fx->dir, "docker-credential-slow", "#!/bin/sh\nexec sleep 30\n", 0755);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    char *cmd = xasprintf("rm -rf '%s'", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    setenv("PATH", fx->old_path, 1);
    free(fx->old_path);
    unsetenv("DOCKER_CONFIG");
    free(fx);
    return 0;
}

static void config(struct fixture *fx, const char *json)
{
    write_file(fx->dir, "config.json", json, 0600);
}

static void test_creds__environment(void **state)
{
    struct fixture *fx = *state;
    struct creds c;
    struct err e;
    unsetenv("HS_T_USERNAME");
    unsetenv("HS_T_PASSWORD");
    unsetenv("HS_T_PASSWORD_FILE");
    assert_int_equal(creds_from_env("HS_T", &c, &e), 0);
    assert_null(c.username);
    setenv("HS_T_USERNAME", "alice", 1);
    assert_int_equal(creds_from_env("HS_T", &c, &e), -1);
    assert_non_null(strstr(e.msg, "HS_T_PASSWORD"));
    setenv("HS_T_PASSWORD", "pw1", 1);
    assert_int_equal(creds_from_env("HS_T", &c, &e), 1);
    assert_string_equal(c.username, "alice");
    assert_string_equal(c.password, "pw1");
    creds_clear(&c);
    assert_null(c.password);
    /* password from a file, one trailing newline dropped */
    write_file(fx->dir, "pwfile", "from-file\n", 0600);
    char *pf = xasprintf("%s/pwfile", fx->dir);
    setenv("HS_T_PASSWORD_FILE", pf, 1);
    assert_int_equal(creds_from_env("HS_T", &c, &e), -1); /* both set */
    assert_null(strstr(e.msg, "pw1"));
    unsetenv("HS_T_PASSWORD");
    assert_int_equal(creds_from_env("HS_T", &c, &e), 1);
    assert_string_equal(c.password, "from-file");
    creds_clear(&c);
    setenv("HS_T_PASSWORD_FILE", "/nonexistent/hubsync", 1);
    assert_int_equal(creds_from_env("HS_T", &c, &e), -1);
    unsetenv("HS_T_USERNAME");
    setenv("HS_T_PASSWORD_FILE", pf, 1);
    assert_int_equal(creds_from_env("HS_T", &c, &e), -1); /* password without user */
    unsetenv("HS_T_PASSWORD_FILE");
    free(pf);
    /* environment comes first in creds_lookup, for its own registry only */
    setenv("HS_T_USERNAME", "env-user", 1);
    setenv("HS_T_PASSWORD", "env-pw", 1);
    config(fx, "{\"auths\":{\"reg.example\":{\"auth\":\"Y2ZnOmNmZw==\"}}}");
    const char *own = "https://reg.example";
    assert_int_equal(creds_lookup("HS_T", own, "https://reg.example", &c, &e), 1);
    assert_string_equal(c.username, "env-user");
    creds_clear(&c);
    assert_int_equal(creds_lookup("HS_T", own, "https://REG.example:443/v2/", &c, &e), 1);
    assert_string_equal(c.username, "env-user");
    creds_clear(&c);
    assert_int_equal(creds_lookup(NULL, own, "https://reg.example", &c, &e), 1);
    assert_string_equal(c.username, "cfg");
    creds_clear(&c);
    assert_int_equal(creds_lookup("HS_T", NULL, "https://reg.example", &c, &e), 1);
    assert_string_equal(c.username, "cfg");
    creds_clear(&c);
    /* another scheme, port or host: docker's config for that host, never the environment */
    assert_int_equal(creds_lookup("HS_T", own, "http://reg.example", &c, &e), 1);
    assert_string_equal(c.username, "cfg");
    creds_clear(&c);
    assert_int_equal(creds_lookup("HS_T", own, "https://reg.example:5000", &c, &e), 0);
    assert_null(c.username);
    assert_int_equal(creds_lookup("HS_T", own, "https://evil.example", &c, &e), 0);
    assert_null(c.username);
    assert_int_equal(creds_lookup("HS_T", own, "https://reg.example.evil.example", &c, &e), 0);
    assert_null(c.username);
    unsetenv("HS_T_USERNAME");
    unsetenv("HS_T_PASSWORD");
}

static void test_creds__host_keys(void **state)
{
    (void)state;
    const char *cases[][2] = {
        {"https://index.docker.io/v1/", "index.docker.io"},
        {"docker.io", "index.docker.io"},
        {"https://registry-1.docker.io", "index.docker.io"},
        {"registry.hub.docker.com", "index.docker.io"},
        {"HTTP://Reg.Example:5000/some/path", "reg.example:5000"},
        {"reg.example:5000", "reg.example:5000"},
        {"https://user@reg.example/", "reg.example"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *k = creds_host_key(cases[i][0]);
        assert_string_equal(k, cases[i][1]);
        free(k);
    }
    assert_null(creds_host_key("https://"));
    assert_null(creds_host_key(NULL));
}

static void test_creds__config_auths(void **state)
{
    struct fixture *fx = *state;
    struct creds c;
    struct err e;
    /* "hub:hub-pw" and "local:pw:with:colons" */
    config(fx, "{\"auths\":{"
               "\"https://index.docker.io/v1/\":{\"auth\":\"aHViOmh1Yi1wdw==\"},"
               "\"127.0.0.1:5000\":{\"auth\":\"bG9jYWw6cHc6d2l0aDpjb2xvbnM\"},"
               "\"https://plain.example/v2/\":{\"username\":\"u2\",\"password\":\"p2\"},"
               "\"empty.example\":{}}}");
    assert_int_equal(creds_from_docker_config("https://registry-1.docker.io", &c, &e), 1);
    assert_string_equal(c.username, "hub");
    assert_string_equal(c.password, "hub-pw");
    creds_clear(&c);
    assert_int_equal(creds_from_docker_config("http://127.0.0.1:5000", &c, &e), 1);
    assert_string_equal(c.username, "local");
    assert_string_equal(c.password, "pw:with:colons");
    creds_clear(&c);
    assert_int_equal(creds_from_docker_config("https://plain.example", &c, &e), 1);
    assert_string_equal(c.username, "u2");
    creds_clear(&c);
    assert_int_equal(creds_from_docker_config("https://empty.example", &c, &e), 0);
    assert_int_equal(creds_from_docker_config("https://unknown.example", &c, &e), 0);
    assert_int_equal(creds_from_docker_config("http://127.0.0.1:5001", &c, &e), 0);
    /* broken entries are errors naming the file, without the secret */
    config(fx, "{\"auths\":{\"bad.example\":{\"auth\":\"!!!notbase64\"}}}");
    assert_int_equal(creds_from_docker_config("https://bad.example", &c, &e), -1);
    assert_non_null(strstr(e.msg, "config.json"));
    config(fx, "{\"auths\":{\"bad.example\":{\"auth\":\"bm9jb2xvbg==\"}}}");
    assert_int_equal(creds_from_docker_config("https://bad.example", &c, &e), -1);
    assert_null(strstr(e.msg, "nocolon"));
    config(fx, "{\"auths\":{\"x\":{\"password\":\"leaky-secret\" ");
    assert_int_equal(creds_from_docker_config("https://x", &c, &e), -1);
    assert_non_null(strstr(e.msg, "line"));
    assert_null(strstr(e.msg, "leaky"));
    config(fx, "[]");
    assert_int_equal(creds_from_docker_config("https://x", &c, &e), -1);
    /* no file at all: no credentials */
    char *p = xasprintf("%s/config.json", fx->dir);
    unlink(p);
    free(p);
    assert_int_equal(creds_from_docker_config("https://x", &c, &e), 0);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return xstrdup("");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return xstrdup(buf);
}

static void test_creds__helpers(void **state)
{
    struct fixture *fx = *state;
    struct creds c;
    struct err e;
    char *asked = xasprintf("%s/asked", fx->dir);
    unlink(asked);
    /* credHelpers per host wins over auths; Docker Hub is asked by its key */
    config(fx, "{\"auths\":{\"https://index.docker.io/v1/\":{\"auth\":\"aHViOmh1Yi1wdw==\"}},"
               "\"credHelpers\":{\"index.docker.io\":\"fake\",\"helped.example\":\"fake\","
               "\"broken.example\":\"broken\",\"crash.example\":\"crash\","
               "\"missing.example\":\"nosuchhelper\",\"evil.example\":\"../x\"}}");
    assert_int_equal(creds_from_docker_config("https://registry-1.docker.io", &c, &e), 1);
    assert_string_equal(c.username, "hub-user");
    assert_string_equal(c.password, "hub-secret");
    creds_clear(&c);
    assert_int_equal(creds_from_docker_config("helped.example", &c, &e), 1);
    creds_clear(&c);
    char *log = slurp(asked);
    assert_string_equal(log, "https://index.docker.io/v1/\nhelped.example\n");
    free(log);
    assert_int_equal(creds_from_docker_config("broken.example", &c, &e), -1);
    assert_non_null(strstr(e.msg, "docker-credential-broken"));
    assert_int_equal(creds_from_docker_config("crash.example", &c, &e), -1);
    assert_non_null(strstr(e.msg, "exit status 7"));
    assert_int_equal(creds_from_docker_config("missing.example", &c, &e), -1);
    assert_int_equal(creds_from_docker_config("evil.example", &c, &e), -1);
    assert_non_null(strstr(e.msg, "not valid"));
    /* credsStore is the default; its "not found" means no credentials */
    config(fx, "{\"credsStore\":\"fake\",\"auths\":{\"listed.example\":{}}}");
    assert_int_equal(creds_from_docker_config("helped.example", &c, &e), 1);
    assert_string_equal(c.password, "hub-secret");
    creds_clear(&c);
    assert_int_equal(creds_from_docker_config("listed.example", &c, &e), 0);
    assert_int_equal(creds_from_docker_config("other.example", &c, &e), 0);
    free(asked);
}

struct answer {
    int calls;
    int rc;
    char user[64];
    char msg[ERR_MSG_MAX];
};

static void on_answer(int rc, const struct creds *cr, const struct err *e, void *arg)
{
    struct answer *a = arg;
    a->calls++;
    a->rc = rc;
    snprintf(a->user, sizeof(a->user), "%s", rc == 1 ? cr->username : "");
    snprintf(a->msg, sizeof(a->msg), "%s", rc < 0 ? e->msg : "");
}

/* Ask helper for url from the default loop; the answer comes later, once. */
static struct answer ask(const char *helper, const char *url)
{
    struct ev_loop *loop = ev_default_loop(0);
    struct answer a = {0, 0, "", ""};
    ev_now_update(loop); /* the helper's timeout counts from now, not from the last run */
    creds_ask_start(loop, helper, url, on_answer, &a);
    assert_int_equal(a.calls, 0);
    ev_run(loop, 0);
    assert_int_equal(a.calls, 1);
    return a;
}

/* The helper as a child process of a libev loop, as the worker asks it. */
static void test_creds__ask_from_the_loop(void **state)
{
    struct fixture *fx = *state;
    struct creds c;
    struct err e;
    char *helper = NULL;
    config(fx, "{\"credHelpers\":{\"helped.example\":\"fake\"}}");
    assert_int_equal(creds_find("HS_T", "https://other.example", "https://helped.example", &c,
                                &helper, &e),
                     CREDS_HELPER);
    assert_string_equal(helper, "fake");
    assert_null(c.username);
    free(helper);
    struct answer a = ask("fake", "https://helped.example");
    assert_int_equal(a.rc, 1);
    assert_string_equal(a.user, "hub-user");
    a = ask("fake", "https://registry-1.docker.io/");
    assert_int_equal(a.rc, 1);
    assert_int_equal(ask("fake", "https://other.example").rc, 0);
    static const char *const failing[][2] = {
        {"crash", "exit status 7"},
        {"nosuchhelper", "docker-credential-nosuchhelper"},
        {"huge", "larger than"},
        {"broken", "not {\"Username\""},
    };
    for (size_t i = 0; i < sizeof(failing) / sizeof(failing[0]); i++) {
        a = ask(failing[i][0], "https://helped.example");
        assert_int_equal(a.rc, -1);
        assert_non_null(strstr(a.msg, failing[i][1]));
    }
    /* Cancelled: the helper is killed, the callback never runs, nothing is left to wait for. */
    struct answer none = {0, 0, "", ""};
    creds_ask_cancel(creds_ask_start(ev_default_loop(0), "slow", "https://helped.example",
                                     on_answer, &none));
    ev_run(ev_default_loop(0), 0);
    assert_int_equal(none.calls, 0);
    /* The blocking path has the same bound. */
    config(fx, "{\"credHelpers\":{\"huge.example\":\"huge\"}}");
    assert_int_equal(creds_from_docker_config("https://huge.example", &c, &e), -1);
    assert_non_null(strstr(e.msg, "larger than"));
}

/* The parsers alone: no file, no process. */
static void test_creds__parsers(void **state)
{
    (void)state;
    struct creds c;
    struct err e;
    char *helper = NULL;
    const char *cfg = "{\"credHelpers\":{\"h.example\":\"pass\",\"bad.example\":\"a b\","
                      "\"num.example\":3},\"auths\":{\"a.example\":{\"auth\":\"dTpwdw==\"}},"
                      "\"credsStore\":\"desktop\"}";
    assert_int_equal(creds_parse_config(cfg, strlen(cfg), "cfg", "h.example", &c, &helper, &e),
                     CREDS_HELPER);
    assert_string_equal(helper, "pass");
    assert_null(c.username);
    free(helper);
    assert_int_equal(creds_parse_config(cfg, strlen(cfg), "cfg", "a.example", &c, &helper, &e), 1);
    assert_null(helper);
    assert_string_equal(c.username, "u");
    assert_string_equal(c.password, "pw");
    creds_clear(&c);
    assert_int_equal(creds_parse_config(cfg, strlen(cfg), "cfg", "z.example", &c, &helper, &e),
                     CREDS_HELPER);
    assert_string_equal(helper, "desktop");
    free(helper);
    assert_int_equal(creds_parse_config(cfg, strlen(cfg), "cfg", "bad.example", &c, &helper, &e),
                     -1);
    assert_string_equal(e.msg, "cfg: credential helper name \"a b\" is not valid");
    assert_null(helper);
    assert_int_equal(creds_parse_config(cfg, strlen(cfg), "cfg", "num.example", &c, &helper, &e),
                     -1);
    assert_string_equal(e.msg, "cfg: credHelpers[\"num.example\"] is not a string");
    /* The position of a syntax error, never the text around it (secrets). */
    const char *broken = "{\"auths\":{\"a\":{\"auth\":\"c2VjcmV0\"}}";
    assert_int_equal(creds_parse_config(broken, strlen(broken), "cfg", "a", &c, &helper, &e), -1);
    assert_null(strstr(e.msg, "c2VjcmV0"));
    assert_non_null(strstr(e.msg, "cfg line 1 column"));

    const char *ans = "{\"ServerURL\":\"x\",\"Username\":\"bob\",\"Secret\":\"s3\"}";
    assert_int_equal(creds_parse_helper_answer(ans, strlen(ans), "h", &c, &e), 1);
    assert_string_equal(c.username, "bob");
    assert_string_equal(c.password, "s3");
    creds_clear(&c);
    const char *empty = "{\"Username\":\"\",\"Secret\":\"\"}";
    assert_int_equal(creds_parse_helper_answer(empty, strlen(empty), "h", &c, &e), 0);
    assert_int_equal(creds_parse_helper_answer("nope", 4, "h", &c, &e), -1);
    assert_string_equal(e.msg, "credential helper h: answer is not {\"Username\",\"Secret\"} JSON");
}

/* ---- link-time seams ---- */

int __real_poll(struct pollfd *fds, nfds_t n, int timeout);
int __wrap_poll(struct pollfd *fds, nfds_t n, int timeout);
int __real_posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                        const posix_spawnattr_t *attr, char *const argv[], char *const envp[]);
int __wrap_posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                        const posix_spawnattr_t *attr, char *const argv[], char *const envp[]);

static int poll_error; /* errno poll fails with; 0: the real poll */
static int poll_calls;
static int spawned_exit_first; /* posix_spawnp returns once the helper has exited */

int __wrap_poll(struct pollfd *fds, nfds_t n, int timeout)
{
    poll_calls++;
    if (poll_error) {
        errno = poll_error;
        return -1;
    }
    return __real_poll(fds, n, timeout);
}

int __wrap_posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                        const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    int rc = __real_posix_spawnp(pid, file, fa, attr, argv, envp);
    siginfo_t info;
    /* Exited, not reaped: the caller still waits for it as usual. */
    if (rc == 0 && spawned_exit_first)
        while (waitid(P_PID, (id_t)*pid, &info, WEXITED | WNOWAIT) < 0 && errno == EINTR)
            ;
    return rc;
}

/* poll failing for good (not EINTR) ends the blocking ask at once with the
 * reason; it was retried in a busy loop for the whole 15 s timeout. */
static void test_creds__poll_error_is_an_error(void **state)
{
    struct fixture *fx = *state;
    struct creds c;
    struct err e;
    config(fx, "{\"credHelpers\":{\"helped.example\":\"fake\"}}");
    poll_error = ENOMEM;
    poll_calls = 0;
    int rc = creds_from_docker_config("https://helped.example", &c, &e);
    poll_error = 0;
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, "credential helper docker-credential-fake: poll:"));
    assert_int_equal(poll_calls, 1);
}

/* A helper that exits without reading its input, before the asker goes on:
 * no write to its closed pipe, so no SIGPIPE (left at its default here, as
 * in a program that does not ignore it), on either path. */
static void test_creds__helper_gone_before_its_input(void **state)
{
    struct fixture *fx = *state;
    struct creds c;
    struct err e;
    void (*old)(int) = signal(SIGPIPE, SIG_DFL);
    config(fx, "{\"credHelpers\":{\"crash.example\":\"crash\"}}");
    spawned_exit_first = 1;
    assert_int_equal(creds_from_docker_config("https://crash.example", &c, &e), -1);
    assert_non_null(strstr(e.msg, "exit status 7"));
    struct answer a = ask("crash", "https://crash.example");
    spawned_exit_first = 0;
    signal(SIGPIPE, old);
    assert_int_equal(a.rc, -1);
    assert_non_null(strstr(a.msg, "exit status 7"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_creds__environment, setup, teardown),
        cmocka_unit_test(test_creds__host_keys),
        cmocka_unit_test_setup_teardown(test_creds__config_auths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_creds__helpers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_creds__ask_from_the_loop, setup, teardown),
        cmocka_unit_test(test_creds__parsers),
        cmocka_unit_test_setup_teardown(test_creds__poll_error_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_creds__helper_gone_before_its_input, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
