/* digest: see digest.h. */
#include "digest.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

struct digest_ctx {
    EVP_MD_CTX *md;
};

static const char prefix[] = "sha256:";
#define PREFIX_LEN (sizeof(prefix) - 1)

static int valid_n(const char *s, size_t n)
{
    if (n != PREFIX_LEN + DIGEST_HEX_LEN || memcmp(s, prefix, PREFIX_LEN) != 0)
        return 0;
    for (size_t i = PREFIX_LEN; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return 1;
}

int digest_valid(const char *s)
{
    return s && valid_n(s, strnlen(s, DIGEST_STR_SIZE));
}

int digest_parse(const char *s, size_t n, const char *what, char out[DIGEST_STR_SIZE],
                 struct err *e)
{
    if (!s || !valid_n(s, n)) {
        /* Show a bounded, printable excerpt of the bad value. */
        char shown[40];
        size_t k = 0;
        for (size_t i = 0; s && i < n && k < sizeof(shown) - 4; i++)
            shown[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
        if (s && n > k)
            memcpy(shown + k, "...", 3), k += 3;
        shown[k] = '\0';
        return err_set(e, "%s: \"%s\" is not a sha256:<64 lowercase hex> digest", what, shown);
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

static void oom(void)
{
    fprintf(stderr, "hubsync: OpenSSL could not set up SHA-256\n");
    abort();
}

struct digest_ctx *digest_new(void)
{
    struct digest_ctx *d = xmalloc(sizeof(*d));
    d->md = EVP_MD_CTX_new();
    if (!d->md)
        oom();
    digest_reset(d);
    return d;
}

void digest_reset(struct digest_ctx *d)
{
    if (EVP_DigestInit_ex(d->md, EVP_sha256(), NULL) != 1)
        oom();
}

void digest_update(struct digest_ctx *d, const void *data, size_t n)
{
    if (n && EVP_DigestUpdate(d->md, data, n) != 1)
        oom();
}

void digest_final(struct digest_ctx *d, char out[DIGEST_STR_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(d->md, md, &len) != 1 || len * 2 != DIGEST_HEX_LEN)
        oom();
    memcpy(out, prefix, PREFIX_LEN);
    for (unsigned int i = 0; i < len; i++) {
        out[PREFIX_LEN + 2 * i] = hex[md[i] >> 4];
        out[PREFIX_LEN + 2 * i + 1] = hex[md[i] & 15];
    }
    out[PREFIX_LEN + DIGEST_HEX_LEN] = '\0';
}

void digest_free(struct digest_ctx *d)
{
    if (!d)
        return;
    EVP_MD_CTX_free(d->md);
    free(d);
}

void digest_of(const void *data, size_t n, char out[DIGEST_STR_SIZE])
{
    struct digest_ctx *d = digest_new();
    digest_update(d, data, n);
    digest_final(d, out);
    digest_free(d);
}
