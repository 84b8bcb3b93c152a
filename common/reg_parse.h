/* reg_parse: pure parsers for registry answers (no I/O, no allocation
 * beyond the results they return).
 *
 * - Link headers (RFC 8288) for tag-list pagination: `<url>; rel="next"`,
 *   several links per header, rel lists, unquoted rel;
 * - distribution error bodies {"errors":[{"code","message","detail"}]};
 * - tag lists {"name":..,"tags":[..]};
 * - referrers answers (OCI 1.1: an image index of the descriptors of the
 *   manifests whose subject is a digest);
 * - Location/Link URL resolution against the request URL, and origin
 *   comparison (an Authorization header only goes to the same origin). */
#ifndef HUBSYNC_REG_PARSE_H
#define HUBSYNC_REG_PARSE_H

#include <stddef.h>

#include "err.h"

/* The target of the first link with relation "next" in a Link value (n
 * bytes). Returns 1 and *url (caller frees, not yet resolved), 0 if there
 * is no such link, -1 if the value is malformed. */
int reg_parse_link_next(const char *value, size_t n, char **url, struct err *e);

/* Summarise an error body as "CODE: message" (first error, printable ASCII,
 * at most outsz-1 bytes) into out. Returns 1 if the body was a distribution
 * error document, 0 otherwise (out = ""). *toomany is set when any error
 * has code TOOMANYREQUESTS (may be NULL). */
int reg_parse_errors(const char *body, size_t n, char *out, size_t outsz, int *toomany);

/* Parse a tags/list answer. Returns 0 and *tags (an array of *ntags owned
 * strings; free with reg_parse_free_tags), or -1 with a message. "tags":
 * null is an empty list. At most max tags are accepted (-1 past it, with
 * *too_many set). Every tag must match the tag grammar. */
int reg_parse_tags(const char *body, size_t n, size_t max, char ***tags, size_t *ntags,
                   int *too_many, struct err *e);
void reg_parse_free_tags(char **tags, size_t ntags);

/* Parse a referrers answer (an OCI image index). Returns 0 and *digests (an
 * array of *n owned sha256 digests in index order, free with
 * reg_parse_free_tags), or -1 with a message naming the bad field. "manifests"
 * must be an array of descriptors, each with a sha256 "digest"; at most max
 * are accepted (-1 past it, with *too_many set). */
int reg_parse_referrers(const char *body, size_t n, size_t max, char ***digests, size_t *ndigests,
                        int *too_many, struct err *e);

/* Resolve ref (absolute URL, "//host/path", "/path" or relative path)
 * against the absolute http(s) URL base. Returns 0 and *out (caller frees),
 * -1 if ref is unusable (not http(s), control characters, too long). */
int reg_parse_resolve_url(const char *base, const char *ref, char **out, struct err *e);

/* 1 if two absolute URLs have the same scheme, host and port (default
 * ports made explicit, host compared case-insensitively). */
int reg_parse_same_origin(const char *a, const char *b);

/* 1 if two registry base URLs name the same registry: the same origin and
 * the same path prefix, trailing "/" and "/v2" ignored (as reg_registry_new
 * drops them). */
int reg_parse_same_registry(const char *a, const char *b);

#endif
