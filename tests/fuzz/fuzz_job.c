/* Fuzz target: job_decode on arbitrary bytes; a decoded job must re-encode
 * and decode to the same text (the encoding is canonical). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct job j, again;
    struct err e;
    if (job_decode(&j, (const char *)data, size, &e) < 0)
        return 0;
    char *text = job_encode(&j, &e);
    if (!text)
        abort(); /* every decoded job is valid, so it must encode */
    if (job_decode(&again, text, strlen(text), &e) < 0)
        abort();
    char *text2 = job_encode(&again, &e);
    if (!text2 || strcmp(text, text2) != 0)
        abort();
    free(text2);
    free(text);
    job_free(&again);
    job_free(&j);
    return 0;
}
