/* Fuzz target: the sync-file parser on arbitrary bytes. Oracles: a file is
 * either read whole, and then every entry names a registry of the file, a
 * valid source and target repository and a URL to reach it, or refused with
 * one bounded line that names the file (and, past the YAML reader, the line
 * and column); nothing leaks either way (ASan). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"
#include "syncfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct err e;
    memset(&e, 0, sizeof(e));
    struct syncfile *sf = syncfile_parse((const char *)data, size, "f.yaml", &e);
    if (!sf) {
        if (strncmp(e.msg, "f.yaml", 6) != 0 || strchr(e.msg, '\n') ||
            strlen(e.msg) >= ERR_MSG_MAX)
            abort();
        return 0;
    }
    if (sf->nentries == 0)
        abort();
    for (size_t i = 0; i < sf->nentries; i++) {
        const struct syncfile_entry *en = &sf->entries[i];
        if (!en->registry || syncfile_registry(sf, en->registry->name) != en->registry ||
            !ref_repo_valid(en->repo) || !ref_repo_valid(en->target) ||
            !job_url_valid(syncfile_registry_url(en->registry, "https://registry-1.docker.io")) ||
            (!en->tags && !en->digests.n) || (en->policy != JOB_POLICY_ALL) != (en->platforms.n > 0))
            abort();
        if (en->tags)
            (void)tagfilter_match(en->tags, "1.2.3-alpine");
    }
    syncfile_free(sf);
    return 0;
}
