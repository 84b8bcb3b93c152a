/* log: leveled log lines on stderr, text or JSON.
 *
 * One line per event: `2026-11-29T02:00:00.123Z worker[1234] INFO message`,
 * or with --log-format json `{"ts":...,"role":...,"pid":...,"level":...,"msg":...}`.
 * Messages use key=value fields. Secrets (tokens, passwords, Authorization
 * headers) must never be passed here. The settings are process-wide and set
 * once at start-up. */
#ifndef HUBSYNC_LOG_H
#define HUBSYNC_LOG_H

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };
enum log_format { LOG_FMT_TEXT = 0, LOG_FMT_JSON };

void log_setup(const char *role, enum log_level level, enum log_format format);
/* Parse "debug|info|warn|error" and "text|json"; -1 if unknown. */
int log_parse_level(const char *s, enum log_level *out);
int log_parse_format(const char *s, enum log_format *out);
int log_enabled(enum log_level level);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The level is tested before the arguments are evaluated. */
#define log_at(lvl, ...)                                                                 \
    do {                                                                                 \
        if (log_enabled(lvl))                                                            \
            log_write(lvl, __VA_ARGS__);                                                 \
    } while (0)
#define log_debug(...) log_at(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...)  log_at(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...)  log_at(LOG_LVL_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_LVL_ERROR, __VA_ARGS__)

#endif
