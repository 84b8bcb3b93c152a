/* ref: Docker image references as operators write them ("alpine",
 * "library/alpine:3.20", "docker.io/library/alpine@sha256:...",
 * "localhost:5000/x/y").
 *
 * Parsed by distribution/reference's grammar with Docker Hub's
 * normalisation (no domain and index.docker.io mean docker.io; a
 * one-component path on docker.io is library/<name>), so the coordinator can
 * tell an official-images repository from anything else and say why. Input
 * is untrusted: any bytes give a one-line error quoting it (bounded,
 * unprintable bytes shown as '?'). */
#ifndef HUBSYNC_REF_H
#define HUBSYNC_REF_H

#include "digest.h"
#include "err.h"

#define REF_NAME_MAX 255 /* domain + "/" + path, after normalisation */
#define REF_TAG_MAX 128

struct ref {
    char *domain;                  /* owned; "docker.io" for Docker Hub */
    char *path;                    /* owned; "library/alpine" */
    char *tag;                     /* owned; NULL when none */
    char digest[DIGEST_STR_SIZE];  /* "" when none */
};

/* The grammar the registry API takes, no domain: a repository name (path
 * components [a-z0-9]+((.|_|__|-+)[a-z0-9]+)* joined by '/', at most
 * REF_NAME_MAX bytes) and a tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}). NULL is
 * not valid. */
int ref_repo_valid(const char *s);
int ref_tag_valid(const char *s);

/* Parse and normalise s into *out (zeroed first). -1 with a message quoting
 * s and saying what is wrong and where; *out then holds nothing to free.
 * Free a parsed ref with ref_free(). */
int ref_parse(struct ref *out, const char *s, struct err *e);
void ref_free(struct ref *r);

/* The canonical string "domain/path[:tag][@digest]"; ref_parse() of it gives
 * the same ref. Caller frees. */
char *ref_format(const struct ref *r);

/* The official-images repository name ("alpine") of s, which must name
 * docker.io/library/<name> with no tag and no digest. Caller frees *name;
 * -1 with a message saying why not (NULL in *name). */
int ref_official_repo(const char *s, char **name, struct err *e);

#endif
