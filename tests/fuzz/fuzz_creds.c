/* Fuzz target: docker's config.json and a credential helper's answer
 * (creds_parse_config, creds_parse_helper_answer) on arbitrary bytes.
 * Invariants: the result is one of the documented codes; found credentials
 * have both parts; a helper to run has a name of [A-Za-z0-9._-] only (it
 * becomes part of a program name); an error has a message. */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "creds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_found(int rc, const struct creds *c, const struct err *e)
{
    if (rc == 1 && (!c->username || !c->password))
        abort();
    if (rc != 1 && (c->username || c->password))
        abort();
    if (rc == -1 && !e->msg[0])
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const hosts[] = {"registry.example:5000", "index.docker.io"};
    const char *s = (const char *)data;
    struct creds c;
    struct err e;
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        char *helper = NULL;
        e.msg[0] = '\0';
        int rc = creds_parse_config(s, size, "config.json", hosts[i], &c, &helper, &e);
        if (rc < -1 || rc > CREDS_HELPER || (rc == CREDS_HELPER) != (helper != NULL))
            abort();
        check_found(rc, &c, &e);
        for (const char *p = helper; p && *p; p++)
            if (!(isalnum((unsigned char)*p) || strchr("._-", *p)))
                abort();
        if (helper && !helper[0])
            abort();
        free(helper);
        creds_clear(&c);
    }
    e.msg[0] = '\0';
    int rc = creds_parse_helper_answer(s, size, "docker-credential-x", &c, &e);
    if (rc < -1 || rc > 1)
        abort();
    check_found(rc, &c, &e);
    creds_clear(&c);
    return 0;
}
