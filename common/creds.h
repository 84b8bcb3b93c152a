/* creds: registry credentials from the environment or docker's config.json.
 *
 * Lookup order for one registry (creds_lookup):
 *   1. environment, under a prefix the caller chooses per role:
 *      <PREFIX>_USERNAME plus <PREFIX>_PASSWORD or <PREFIX>_PASSWORD_FILE
 *      (a file holding the password, e.g. a compose secret; one trailing
 *      newline is dropped). hubsync uses HUBSYNC_UPSTREAM for the registry
 *      it copies from and HUBSYNC_TARGET for the one it writes to. A
 *      username without a password (or the reverse) is an error. These
 *      are bound to the registry the program is configured with for the
 *      role: a registry on another scheme, host or port never gets them.
 *   2. docker's config: $DOCKER_CONFIG/config.json, else
 *      $HOME/.docker/config.json. A missing file means no credentials.
 *      - credHelpers[<host>]: run `docker-credential-<helper> get` with the
 *        server URL on stdin, read {"Username","Secret"} from stdout;
 *      - auths[<key>]: base64 "auth" ("user:password") or "username" +
 *        "password"; keys may be a host, host:port or a URL with a path;
 *      - credsStore: the default helper when auths has no usable entry.
 *      Docker Hub (docker.io, index.docker.io, registry-1.docker.io,
 *      registry.hub.docker.com) is keyed as "https://index.docker.io/v1/".
 * Secrets are never logged and never appear in error messages; creds_clear()
 * wipes them before freeing. */
#ifndef HUBSYNC_CREDS_H
#define HUBSYNC_CREDS_H

#include <ev.h>
#include <stddef.h>

#include "err.h"

struct creds {
    char *username; /* owned; NULL when there are no credentials */
    char *password; /* owned secret */
};

/* Credentials for registry_url (e.g. "https://registry-1.docker.io"):
 * the environment under env_prefix when registry_url has the scheme, host
 * and port of env_registry (the registry configured for that role; either
 * NULL skips the environment), else docker's config. Returns 1 and fills out
 * (free with creds_clear), 0 when none are configured (out zeroed), -1 on a
 * broken configuration (unreadable or invalid config.json, failing helper,
 * half-set environment). */
int creds_lookup(const char *env_prefix, const char *env_registry, const char *registry_url,
                 struct creds *out, struct err *e);

/* creds_lookup without running a helper: when docker's config names a
 * credential helper for the registry, CREDS_HELPER with *helper (caller
 * frees) the name to give creds_ask_start; else as creds_lookup. */
int creds_find(const char *env_prefix, const char *env_registry, const char *registry_url,
               struct creds *out, char **helper, struct err *e);

/* Asking docker-credential-<helper> without blocking a libev loop: the
 * helper is a child process watched by the loop, with creds_lookup's bounds
 * (64 KiB answer, killed after 15 s). rc 1: cr holds the answer (borrowed
 * for the call); 0: the helper has none for the registry; -1: it failed, e
 * says why (never quoting a secret). */
struct creds_ask;
typedef void (*creds_ask_fn)(int rc, const struct creds *cr, const struct err *e, void *arg);
/* loop must be libev's default loop (child watchers). cb runs exactly once,
 * later, from the loop (also when the helper cannot start), unless
 * creds_ask_cancel comes first; a is gone after cb. */
struct creds_ask *creds_ask_start(struct ev_loop *loop, const char *helper,
                                  const char *registry_url, creds_ask_fn cb, void *arg);
/* Kill the helper and free a; cb never runs. NULL is a no-op. */
void creds_ask_cancel(struct creds_ask *a);

/* The two sources separately, same return convention. */
int creds_from_env(const char *env_prefix, struct creds *out, struct err *e);
int creds_from_docker_config(const char *registry_url, struct creds *out, struct err *e);

/* The parsers behind creds_from_docker_config, for tests and fuzzing.
 * creds_parse_config reads a config.json (path is for messages) for host (a
 * creds_host_key): 1 with out filled from auths, CREDS_HELPER with *helper
 * (caller frees) the name of the docker-credential-<helper> to run, 0 for
 * none, -1 on an invalid file. Errors never quote a secret. */
#define CREDS_HELPER 2
int creds_parse_config(const char *data, size_t len, const char *path, const char *host,
                       struct creds *out, char **helper, struct err *e);
/* A helper's `get` answer, {"Username","Secret"}: 1 found, 0 empty secret,
 * -1 not that JSON. prog names the helper in messages. */
int creds_parse_helper_answer(const char *data, size_t len, const char *prog, struct creds *out,
                              struct err *e);

/* Host[:port] a registry URL or config key refers to, lowercased, with the
 * Docker Hub aliases mapped to "index.docker.io". Caller frees. NULL if the
 * text has no host. */
char *creds_host_key(const char *url_or_key);

/* Deep copy (src may hold no credentials). */
void creds_copy(struct creds *dst, const struct creds *src);

/* Wipe a secret string, free it and set *s to NULL (NULL *s is a no-op). */
void creds_free_secret(char **s);

/* Wipe and free the strings; leaves c zeroed. NULL is a no-op. */
void creds_clear(struct creds *c);

#endif
