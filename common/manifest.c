/* manifest: see manifest.h. */
#include "manifest.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "xalloc.h"

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define PLATFORM_MAX 128

static int is_index_type(const char *mt)
{
    return strcmp(mt, MT_OCI_INDEX) == 0 || strcmp(mt, MT_DOCKER_LIST) == 0;
}

static int is_image_type(const char *mt)
{
    return strcmp(mt, MT_OCI_MANIFEST) == 0 || strcmp(mt, MT_DOCKER_MANIFEST) == 0;
}

/* Content-Type may carry parameters ("...+json; charset=utf-8"). */
static char *bare_type(const char *ct)
{
    size_t n = strcspn(ct, "; \t");
    return xstrndup(ct, n);
}

static void desc_free(struct manifest_desc *d)
{
    free(d->media_type);
    free(d->platform);
    free(d->subject);
}

void manifest_free(struct manifest *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nitems; i++)
        desc_free(&m->items[i]);
    free(m->items);
    free(m->media_type);
    free(m->source_digest);
    memset(m, 0, sizeof(*m));
}

static int platform_part_ok(const char *s)
{
    if (!*s || strlen(s) > 32)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-' ||
              *s == '.'))
            return 0;
    return 1;
}

static int parse_platform(json_t *p, char **out, const char *where, struct err *e)
{
    const char *os = json_string_value(json_object_get(p, "os"));
    const char *arch = json_string_value(json_object_get(p, "architecture"));
    const char *variant = json_string_value(json_object_get(p, "variant"));
    if (!os || !arch || !platform_part_ok(os) || !platform_part_ok(arch) ||
        (variant && !platform_part_ok(variant)))
        return err_set(e, "%s: bad platform", where);
    *out = variant ? xasprintf("%s/%s/%s", os, arch, variant) : xasprintf("%s/%s", os, arch);
    return 0;
}

static int parse_desc(json_t *d, struct manifest_desc *out, int in_index, const char *where,
                      struct err *e)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(d))
        return err_set(e, "%s: not an object", where);
    const char *dg = json_string_value(json_object_get(d, "digest"));
    json_t *size = json_object_get(d, "size");
    const char *mt = json_string_value(json_object_get(d, "mediaType"));
    if (!dg || digest_parse(dg, strlen(dg), where, out->digest, e) < 0)
        return dg ? -1 : err_set(e, "%s: no digest", where);
    if (!json_is_integer(size) || json_integer_value(size) < 0)
        return err_set(e, "%s: bad size", where);
    out->size = json_integer_value(size);
    if (mt)
        out->media_type = xstrdup(mt);
    json_t *plat = json_object_get(d, "platform");
    if (in_index && plat && parse_platform(plat, &out->platform, where, e) < 0)
        return -1;
    json_t *ann = json_object_get(d, "annotations");
    const char *subject = json_string_value(json_object_get(ann, "vnd.docker.reference.digest"));
    if (subject && digest_valid(subject))
        out->subject = xstrdup(subject);
    json_t *urls = json_object_get(d, "urls");
    if (!in_index && mt && strstr(mt, "foreign") && json_is_array(urls) && json_array_size(urls))
        out->foreign = 1;
    return 0;
}

static int add_descs(struct manifest *m, json_t *arr, int in_index, const char *what,
                     struct err *e)
{
    size_t n = json_array_size(arr);
    if (m->nitems + n > MANIFEST_MAX_ITEMS)
        return err_set(e, "%s: more than %d entries", what, MANIFEST_MAX_ITEMS);
    m->items = xrealloc(m->items, (m->nitems + n) * sizeof(*m->items));
    for (size_t i = 0; i < n; i++) {
        char where[64];
        snprintf(where, sizeof(where), "%s[%zu]", what, i);
        if (parse_desc(json_array_get(arr, i), &m->items[m->nitems], in_index, where, e) < 0) {
            desc_free(&m->items[m->nitems]);
            return -1;
        }
        m->nitems++;
    }
    return 0;
}

int manifest_parse(struct manifest *out, const char *body, size_t len, const char *content_type,
                   struct err *e)
{
    int rc = -1;
    json_error_t jerr;
    char *ct = NULL;
    memset(out, 0, sizeof(*out));
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        err_set(e, "manifest is not JSON: %s (line %d)", jerr.text, jerr.line);
        goto out;
    }
    if (!json_is_object(root)) {
        err_set(e, "manifest is not a JSON object");
        goto out;
    }
    json_t *sv = json_object_get(root, "schemaVersion");
    if (json_is_integer(sv) && json_integer_value(sv) == 1) {
        err_set(e, "schema 1 manifests are not supported");
        goto out;
    }
    const char *mt = json_string_value(json_object_get(root, "mediaType"));
    ct = content_type && *content_type ? bare_type(content_type) : NULL;
    /* A registry (or a proxy before it) that labels the bytes as something
     * else is not trusted to have served the right bytes either. */
    if (mt && ct && strcasecmp(mt, ct) != 0) {
        err_set(e, "Content-Type '%.100s' does not match the manifest's mediaType '%.100s'", ct,
                mt);
        goto out;
    }
    if (!mt && ct && !is_index_type(ct) && !is_image_type(ct)) {
        err_set(e, "Content-Type '%.100s' is not a manifest media type", ct);
        goto out;
    }
    out->media_type = mt ? xstrdup(mt) : ct;
    if (!mt)
        ct = NULL; /* now out->media_type */
    if (!out->media_type && json_is_array(json_object_get(root, "manifests")))
        out->media_type = xstrdup(MT_OCI_INDEX); /* OCI allows an index without mediaType */
    if (!out->media_type && json_is_object(json_object_get(root, "config")))
        out->media_type = xstrdup(MT_OCI_MANIFEST);
    if (!out->media_type) {
        err_set(e, "manifest has no media type");
        goto out;
    }
    if (is_index_type(out->media_type)) {
        json_t *children = json_object_get(root, "manifests");
        if (!json_is_array(children)) {
            err_set(e, "index has no manifests array");
            goto out;
        }
        out->is_index = 1;
        if (add_descs(out, children, 1, "manifests", e) < 0)
            goto out;
        json_t *ann = json_object_get(root, "annotations");
        const char *src = json_string_value(json_object_get(ann, MANIFEST_SOURCE_ANNOTATION));
        if (src && digest_valid(src))
            out->source_digest = xstrdup(src);
    } else if (is_image_type(out->media_type)) {
        json_t *config = json_object_get(root, "config");
        json_t *layers = json_object_get(root, "layers");
        if (!json_is_object(config) || !json_is_array(layers)) {
            err_set(e, "image manifest needs a config object and a layers array");
            goto out;
        }
        json_t *one = json_array();
        json_array_append(one, config);
        int arc = add_descs(out, one, 0, "config", e);
        json_decref(one);
        if (arc < 0 || add_descs(out, layers, 0, "layers", e) < 0)
            goto out;
    } else {
        err_set(e, "unsupported manifest media type '%.100s'", out->media_type);
        goto out;
    }
    rc = 0;
out:
    free(ct);
    json_decref(root);
    if (rc < 0)
        manifest_free(out);
    return rc;
}

/* Split "os/arch[/variant]" with the defaults containerd and bashbrew apply. */
static void norm_platform(const char *p, char *os, char *arch, char *variant)
{
    os[0] = arch[0] = variant[0] = '\0';
    sscanf(p, "%31[^/]/%31[^/]/%31s", os, arch, variant);
    if (!variant[0] && strcmp(arch, "arm64") == 0)
        strcpy(variant, "v8");
    if (!variant[0] && strcmp(arch, "arm") == 0)
        strcpy(variant, "v7");
}

int manifest_platform_match(const char *have, const char *want)
{
    char ho[32], ha[32], hv[32], wo[32], wa[32], wv[32];
    if (!have || !want || strlen(have) >= PLATFORM_MAX || strlen(want) >= PLATFORM_MAX)
        return 0;
    norm_platform(have, ho, ha, hv);
    norm_platform(want, wo, wa, wv);
    return strcmp(ho, wo) == 0 && strcmp(ha, wa) == 0 && strcmp(hv, wv) == 0;
}

static int platform_wanted(const char *p, char *const *wanted, size_t nwanted)
{
    for (size_t i = 0; i < nwanted; i++)
        if (manifest_platform_match(p, wanted[i]))
            return 1;
    return 0;
}

int manifest_child_wanted(const struct manifest *m, size_t child, char *const *wanted,
                          size_t nwanted)
{
    const struct manifest_desc *d = &m->items[child];
    if (d->subject) {
        for (size_t i = 0; i < m->nitems; i++)
            if (!m->items[i].subject && strcmp(m->items[i].digest, d->subject) == 0)
                return platform_wanted(m->items[i].platform, wanted, nwanted);
        return 0;
    }
    return d->platform && platform_wanted(d->platform, wanted, nwanted);
}

char *manifest_rewrite_index(const char *body, size_t len, char *const *wanted, size_t nwanted,
                             const char *source_digest, size_t *out_len, struct err *e)
{
    char *text = NULL;
    json_t *root = NULL;
    struct manifest m;
    if (manifest_parse(&m, body, len, NULL, e) < 0)
        return NULL;
    if (!m.is_index) {
        err_set(e, "only an index can be rewritten for a platform subset");
        goto out;
    }
    root = json_loadb(body, len, 0, NULL);
    json_t *children = json_object_get(root, "manifests");
    json_t *kept = json_array();
    for (size_t i = 0; i < m.nitems; i++)
        if (manifest_child_wanted(&m, i, wanted, nwanted))
            json_array_append(kept, json_array_get(children, i));
    if (json_array_size(kept) == 0) {
        json_decref(kept);
        err_set(e, "no child of the index matches the selected platforms");
        goto out;
    }
    json_object_set_new(root, "manifests", kept);
    json_t *ann = json_object_get(root, "annotations");
    if (!json_is_object(ann)) {
        ann = json_object();
        json_object_set_new(root, "annotations", ann);
    }
    json_object_set_new(ann, MANIFEST_SOURCE_ANNOTATION, json_string(source_digest));
    text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text)
        *out_len = strlen(text);
out:
    json_decref(root);
    manifest_free(&m);
    return text;
}
