/*
 * Logging. One line per event, written with a single write(2) so lines from
 * the master and all workers sharing one file or pipe never interleave.
 *
 * Formats:
 *   json: {"time":"2026-11-26T06:18:26.123Z","level":"info","pid":1234,
 *          "role":"worker","worker":0,"msg":"...", <fields>}
 *   text: 2026-11-26T06:18:26.123Z INFO  worker[0] 1234: msg key=value ...
 *   auto: text when the output is a TTY, json otherwise.
 *
 * Secrets: every string registered with hd_log_add_secret() is replaced by
 * "[redacted]" wherever it appears in a formatted line, message or field.
 * The config loader registers auth.hmac_secret, api.key, admin.token and
 * the Redis password, so a secret cannot reach a log line even by mistake.
 *
 * Not async-signal-safe: never call from a signal handler.
 */
#ifndef HD_LOG_H
#define HD_LOG_H

#include <stdarg.h>
#include <stddef.h>

/* Longest line written, newline included; longer lines are cut cleanly. */
#define HD_LOG_LINE_MAX 8192

enum hd_log_level {
    HD_LOG_ERROR = 0,
    HD_LOG_WARN = 1,
    HD_LOG_INFO = 2,
    HD_LOG_DEBUG = 3,
};

enum hd_log_format {
    HD_LOG_FMT_AUTO = 0,
    HD_LOG_FMT_JSON = 1,
    HD_LOG_FMT_TEXT = 2,
};

/* Parse "error|warn|info|debug" / "auto|json|text". Return 0 or -EINVAL. */
int         hd_log_level_parse(const char *s, enum hd_log_level *out);
int         hd_log_format_parse(const char *s, enum hd_log_format *out);
const char *hd_log_level_name(enum hd_log_level l);

/*
 * (Re)configure. file == NULL or "" means stderr. Opens the file with
 * O_APPEND|O_CLOEXEC; on failure keeps the previous destination and returns
 * -errno. Safe to call again on reload. On failure nothing changes (level
 * and format included), so a bad reload leaves logging as it was; an out
 * of range level or format is -EINVAL. Before the first call: info, auto,
 * stderr, role "master" without slot.
 */
int hd_log_configure(enum hd_log_level level, enum hd_log_format fmt,
                     const char *file);
/*
 * Reopen the current file (SIGUSR1, logrotate). The new file takes over the
 * same fd number, so a worker forked before the reopen must reopen itself
 * (the master forwards SIGUSR1). No-op when logging to stderr. On failure
 * the old file stays in use and -errno is returned.
 */
int hd_log_reopen(void);
/* The fd lines are written to (2 for stderr); stable across reopens. */
int hd_log_fd(void);
/* Role is "master" or "worker"; slot < 0 means none. Copied, at most 15
 * bytes, any byte outside [A-Za-z0-9._-] turned into '_'. */
void hd_log_set_role(const char *role, int slot);
/* The format actually in effect (auto resolved). */
enum hd_log_format hd_log_effective_format(void);
int                hd_log_enabled(enum hd_log_level level);

/*
 * Secrets: copied; empty strings and duplicates ignored; no count limit
 * (registration allocates, the logging path does not). clear drops them
 * all. Matching is on raw bytes before escaping; where two secrets match
 * at one place the longer wins.
 */
void hd_log_add_secret(const char *secret);
void hd_log_clear_secrets(void);

/*
 * Log a message with optional structured fields. The variadic form takes
 * printf arguments for the message. hd_log_kv() takes a NULL-terminated
 * list of (const char *key, const char *value) pairs after the message
 * (not a format string); a NULL value is written as "(null)"; pairs past
 * the 32nd are dropped. All of them keep errno unchanged, so %m works and
 * "log then return -errno" is safe. A key that clashes with a built-in
 * one (time, level, pid, role, worker, msg, truncated) gets a "_" prefix in
 * JSON output.
 */
void hd_log(enum hd_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void hd_vlog(enum hd_log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
void hd_log_kv(enum hd_log_level level, const char *msg, ...)
    __attribute__((sentinel));

/*
 * Bridge for library log callbacks (libwebsockets, hiredis): logs line at
 * level with a field component=<component>, after stripping trailing
 * newlines and blanks. Lines that are empty after stripping are dropped.
 */
void hd_log_write_raw(enum hd_log_level level, const char *component,
                      const char *line);

/*
 * Format one line into buf (for tests and for the library log bridges).
 * Returns the line length (without NUL), truncated to cap-1 with the line
 * still ending in '\n'. kv is a NULL-terminated array of key, value (kv
 * may be NULL; a NULL value ends the list after being written as
 * "(null)"). fmt AUTO means the effective format. Secrets are redacted.
 * A cut line stays valid JSON and ends with "truncated":true (text: with
 * " [truncated]"). With cap < 32 the line is just "\n" (or "" if cap < 2).
 * Each string is redacted through a HD_LOG_LINE_MAX scratch buffer, so a
 * cap above HD_LOG_LINE_MAX does not lift the limit per string.
 */
size_t hd_log_format_line(char *buf, size_t cap, enum hd_log_format fmt,
                          enum hd_log_level level, const char *msg,
                          const char *const *kv);

#define hd_log_error(...) hd_log(HD_LOG_ERROR, __VA_ARGS__)
#define hd_log_warn(...)  hd_log(HD_LOG_WARN, __VA_ARGS__)
#define hd_log_info(...)  hd_log(HD_LOG_INFO, __VA_ARGS__)
#define hd_log_debug(...)                      \
    do {                                       \
        if (hd_log_enabled(HD_LOG_DEBUG))      \
            hd_log(HD_LOG_DEBUG, __VA_ARGS__); \
    } while (0)

#endif
