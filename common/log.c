/* log: see log.h. */
#include "log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "xalloc.h"

/* Set once by log_setup() before anything else runs. */
static struct {
    const char *role;
    enum log_level level;
    enum log_format format;
} log_cfg = {"hubsync", LOG_LVL_INFO, LOG_FMT_TEXT};

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void log_setup(const char *role, enum log_level level, enum log_format format)
{
    log_cfg.role = role;
    log_cfg.level = level;
    log_cfg.format = format;
}

int log_parse_level(const char *s, enum log_level *out)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_parse_format(const char *s, enum log_format *out)
{
    if (strcmp(s, "text") == 0)
        *out = LOG_FMT_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = LOG_FMT_JSON;
    else
        return -1;
    return 0;
}

int log_enabled(enum log_level level)
{
    return level >= log_cfg.level;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    struct timespec ts;
    struct tm tm;
    char when[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof(when) - n, ".%03ldZ", ts.tv_nsec / 1000000L);

    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);

    if (log_cfg.format == LOG_FMT_JSON) {
        /* JSON strings must be UTF-8: mask anything that is not plain ASCII. */
        for (char *c = msg; *c; c++)
            if ((unsigned char)*c >= 0x80 || (unsigned char)*c < 0x20)
                *c = '?';
        json_t *o = json_pack("{s:s, s:s, s:i, s:s, s:s}", "ts", when, "role", log_cfg.role,
                              "pid", (int)getpid(), "level", level_names[level], "msg", msg);
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (line)
            fprintf(stderr, "%s\n", line);
        free(line);
        json_decref(o);
    } else {
        fprintf(stderr, "%s %s[%d] %s %s\n", when, log_cfg.role, (int)getpid(),
                level_names[level], msg);
    }
    free(msg);
}
