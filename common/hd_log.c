/*
 * Logging: one line per event, built in a stack buffer and written with a
 * single write(2), so the master and every worker can share one file or
 * pipe without their lines interleaving. Nothing on the logging path
 * allocates; only configure and add_secret do.
 *
 * Pipeline for one event: printf into a stack buffer, then for each string
 * (message, field keys, field values) replace secrets on the raw bytes,
 * then escape it into the line. Redacting before escaping means a secret
 * that contains a quote or a control byte is found as the caller wrote it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hd_alloc.h"
#include "hd_log.h"

#define KV_MAX     32
#define ROLE_MAX   16
#define CAP_MIN    32
#define REDACTED   "[redacted]"
#define OPEN_FLAGS (O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC)
#define OPEN_MODE  0640

/* Ends of a cut line. The reserve keeps room for them at all times. */
#define JSON_CUT     ",\"truncated\":true}\n"
#define TEXT_CUT     " [truncated]\n"
/* closing quote of a cut msg + the marker */
#define JSON_RESERVE (1 + sizeof(JSON_CUT) - 1)
#define TEXT_RESERVE (sizeof(TEXT_CUT) - 1)

struct secret {
    char  *s;
    size_t len;
};

static struct {
    enum hd_log_level  level;
    enum hd_log_format fmt;       /* as configured */
    enum hd_log_format effective; /* AUTO until resolved against fd */
    int                fd;
    char              *path; /* NULL: stderr, not ours to close */
    char               role[ROLE_MAX];
    int                slot;

    struct secret *secrets;
    size_t         nsecrets;
    size_t         secrets_cap;
    bool           first[256]; /* first bytes of secrets, fast skip */
} lg = {
    .level = HD_LOG_INFO,
    .fmt = HD_LOG_FMT_AUTO,
    .effective = HD_LOG_FMT_AUTO,
    .fd = STDERR_FILENO,
    .path = NULL,
    .role = "master",
    .slot = -1,
};

static const char *const level_names[] = { "error", "warn", "info", "debug" };
static const char *const level_text[] = { "ERROR", "WARN ", "INFO ", "DEBUG" };

int
hd_log_level_parse(const char *s, enum hd_log_level *out)
{
    if (s == NULL)
        return -EINVAL;
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum hd_log_level) i;
            return 0;
        }
    }
    return -EINVAL;
}

int
hd_log_format_parse(const char *s, enum hd_log_format *out)
{
    if (s == NULL)
        return -EINVAL;
    if (strcmp(s, "auto") == 0)
        *out = HD_LOG_FMT_AUTO;
    else if (strcmp(s, "json") == 0)
        *out = HD_LOG_FMT_JSON;
    else if (strcmp(s, "text") == 0)
        *out = HD_LOG_FMT_TEXT;
    else
        return -EINVAL;
    return 0;
}

const char *
hd_log_level_name(enum hd_log_level l)
{
    if ((unsigned) l > HD_LOG_DEBUG)
        return "unknown";
    return level_names[l];
}

int
hd_log_enabled(enum hd_log_level level)
{
    /* unsigned: a negative level is out of range and dropped */
    return (unsigned) level <= (unsigned) lg.level;
}

enum hd_log_format
hd_log_effective_format(void)
{
    if (lg.effective == HD_LOG_FMT_AUTO) {
        int saved = errno; /* isatty() sets ENOTTY */
        if (lg.fmt != HD_LOG_FMT_AUTO)
            lg.effective = lg.fmt;
        else
            lg.effective = isatty(lg.fd) ? HD_LOG_FMT_TEXT : HD_LOG_FMT_JSON;
        errno = saved;
    }
    return lg.effective;
}

int
hd_log_fd(void)
{
    return lg.fd;
}

/*
 * Make the freshly opened fd the log destination. When we already own a
 * file, dup3() it over the old number so the fd stays stable (O_CLOEXEC
 * because dup2() would drop close-on-exec). Takes fd either way.
 */
static int
install_fd(int fd)
{
    if (lg.path == NULL) {
        lg.fd = fd;
        return 0;
    }
    if (dup3(fd, lg.fd, O_CLOEXEC) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    close(fd);
    return 0;
}

int
hd_log_configure(enum hd_log_level level, enum hd_log_format fmt,
                 const char *file)
{
    if ((unsigned) level > HD_LOG_DEBUG || (unsigned) fmt > HD_LOG_FMT_TEXT)
        return -EINVAL;

    if (file != NULL && file[0] != '\0') {
        int fd = open(file, OPEN_FLAGS, OPEN_MODE);
        if (fd < 0)
            return -errno;
        int rc = install_fd(fd);
        if (rc < 0)
            return rc;
        char *p = hd_strdup(file);
        free(lg.path);
        lg.path = p;
    } else if (lg.path != NULL) {
        /* back to stderr */
        close(lg.fd);
        lg.fd = STDERR_FILENO;
        hd_free(lg.path);
    }

    lg.level = level;
    lg.fmt = fmt;
    lg.effective = HD_LOG_FMT_AUTO;
    return 0;
}

int
hd_log_reopen(void)
{
    if (lg.path == NULL)
        return 0;
    int fd = open(lg.path, OPEN_FLAGS, OPEN_MODE);
    if (fd < 0)
        return -errno;
    int rc = install_fd(fd);
    if (rc < 0)
        return rc;
    lg.effective = HD_LOG_FMT_AUTO;
    return 0;
}

/* The role goes into every line unescaped, so keep it to a safe alphabet
 * (anything else becomes '_'). */
void
hd_log_set_role(const char *role, int slot)
{
    snprintf(lg.role, sizeof(lg.role), "%s", role ? role : "");
    for (char *p = lg.role; *p != '\0'; p++) {
        if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789-_.",
                   *p)
            == NULL)
            *p = '_';
    }
    lg.slot = slot < 0 ? -1 : slot;
}

/* ---- secrets ---------------------------------------------------------- */

void
hd_log_add_secret(const char *secret)
{
    if (secret == NULL || secret[0] == '\0')
        return;
    size_t len = strlen(secret);
    for (size_t i = 0; i < lg.nsecrets; i++) {
        if (lg.secrets[i].len == len
            && memcmp(lg.secrets[i].s, secret, len) == 0)
            return;
    }
    if (lg.nsecrets == lg.secrets_cap) {
        size_t cap = lg.secrets_cap ? lg.secrets_cap * 2 : 8;
        lg.secrets = hd_realloc(lg.secrets, cap * sizeof(*lg.secrets));
        lg.secrets_cap = cap;
    }
    lg.secrets[lg.nsecrets].s = hd_strdup(secret);
    lg.secrets[lg.nsecrets].len = len;
    lg.nsecrets++;
    lg.first[(unsigned char) secret[0]] = true;
}

void
hd_log_clear_secrets(void)
{
    for (size_t i = 0; i < lg.nsecrets; i++) {
        /* the copies held secrets: do not leave them in freed memory */
        explicit_bzero(lg.secrets[i].s, lg.secrets[i].len);
        free(lg.secrets[i].s);
    }
    hd_free(lg.secrets);
    lg.nsecrets = 0;
    lg.secrets_cap = 0;
    memset(lg.first, 0, sizeof(lg.first));
}

/*
 * Copy src (n bytes) to dst (cap bytes, no NUL) with every secret replaced
 * by "[redacted]", the longest secret winning where several match. When
 * src_cut says src was cut short (printf overflow), a tail that is the
 * start of a secret is redacted too: a cut must never leak half a secret.
 * Sets *dst_cut when dst ran out of room. Returns the bytes written.
 */
static size_t
redact(const char *src, size_t n, bool src_cut, char *dst, size_t cap,
       bool *dst_cut)
{
    size_t out = 0;
    size_t i = 0;

    *dst_cut = false;
    while (i < n) {
        const char *rep = NULL;
        size_t      rep_len = 1, skip = 1;

        if (lg.first[(unsigned char) src[i]]) {
            size_t best = 0;
            bool   tail = false;
            for (size_t k = 0; k < lg.nsecrets; k++) {
                const struct secret *s = &lg.secrets[k];
                size_t               left = n - i;
                if (s->len <= left) {
                    if (s->len > best && memcmp(src + i, s->s, s->len) == 0)
                        best = s->len;
                } else if (src_cut && memcmp(src + i, s->s, left) == 0) {
                    tail = true;
                }
            }
            /* tail first: with "abc" and "abcdefgh" registered, a cut
             * "abcdef" may be the long one, so drop all of it */
            if (tail) {
                rep = REDACTED;
                rep_len = sizeof(REDACTED) - 1;
                skip = n - i;
            } else if (best > 0) {
                rep = REDACTED;
                rep_len = sizeof(REDACTED) - 1;
                skip = best;
            }
        }
        if (rep == NULL) {
            rep = src + i;
            rep_len = 1;
        }
        if (rep_len > cap - out) {
            *dst_cut = true;
            break;
        }
        memcpy(dst + out, rep, rep_len);
        out += rep_len;
        i += skip;
    }
    return out;
}

/*
 * The string to print for s: s itself when no secret is registered (no
 * copy at all), else its redacted copy in scratch.
 */
struct str {
    const char *p;
    size_t      n;
    bool        cut; /* p is not all of the original */
};

static struct str
clean(const char *s, size_t n, bool cut, char *scratch, size_t cap)
{
    struct str r = { s, n, cut };
    if (lg.nsecrets == 0)
        return r;
    bool dst_cut;
    r.n = redact(s, n, cut, scratch, cap, &dst_cut);
    r.p = scratch;
    r.cut = cut || dst_cut;
    return r;
}

/* ---- line building ---------------------------------------------------- */

/*
 * Output cursor. put() refuses what does not fit below lim and then
 * refuses everything after, so a line never has a hole in it; app()
 * writes into the reserve kept above lim for the line's ending.
 */
struct out {
    char  *p;
    size_t len;
    size_t lim;
    bool   full;
};

static bool
put(struct out *o, const void *s, size_t n)
{
    if (o->full || n > o->lim - o->len) {
        o->full = true;
        return false;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    return true;
}

static bool
puts0(struct out *o, const char *s)
{
    return put(o, s, strlen(s));
}

static void
app(struct out *o, const char *s)
{
    size_t n = strlen(s);
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if none:
 * overlongs, surrogates, code points past U+10FFFF and cut sequences are
 * all invalid (RFC 3629 table). */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t        len;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    }
    return len;
}

static const char hex[] = "0123456789abcdef";

/* Plain bytes that need no escaping in either format. */
static bool
plain(unsigned char c, bool quoted)
{
    if (c < 0x20 || c >= 0x7f)
        return false;
    return !(quoted && (c == '"' || c == '\\'));
}

/*
 * Escape s into o as the body of a JSON string. Every escape and every
 * UTF-8 sequence goes in whole or not at all, so a cut string is still
 * valid. Returns false when o filled up.
 */
static bool
json_str(struct out *o, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *) s;
    size_t               i = 0;

    while (i < n) {
        size_t j = i;
        while (j < n && plain(u[j], true))
            j++;
        if (j > i) {
            /* a run of plain ASCII may be cut anywhere */
            size_t room = o->full ? 0 : o->lim - o->len;
            if (j - i > room) {
                put(o, u + i, room);
                o->full = true;
                return false;
            }
            put(o, u + i, j - i);
            i = j;
            continue;
        }

        unsigned char c = u[i];
        char          esc[8];
        size_t        k = 1;
        bool          ok;

        switch (c) {
        case '"':
            ok = put(o, "\\\"", 2);
            break;
        case '\\':
            ok = put(o, "\\\\", 2);
            break;
        case '\n':
            ok = put(o, "\\n", 2);
            break;
        case '\r':
            ok = put(o, "\\r", 2);
            break;
        case '\t':
            ok = put(o, "\\t", 2);
            break;
        case '\b':
            ok = put(o, "\\b", 2);
            break;
        case '\f':
            ok = put(o, "\\f", 2);
            break;
        default:
            if (c < 0x80) {
                /* other controls and DEL */
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                ok = put(o, esc, 6);
            } else if ((k = utf8_len(u + i, n - i)) > 0) {
                ok = put(o, u + i, k);
            } else {
                k = 1;
                ok = put(o, "\\ufffd", 6);
            }
        }
        if (!ok)
            return false;
        i += k;
    }
    return true;
}

/*
 * Escape s for the text format: controls as \n, \t, \r or \xNN, invalid
 * UTF-8 as U+FFFD, and with quoted also '"' and '\'. Same all-or-nothing
 * rule per escape as json_str().
 */
static bool
text_str(struct out *o, const char *s, size_t n, bool quoted)
{
    const unsigned char *u = (const unsigned char *) s;
    size_t               i = 0;

    while (i < n) {
        unsigned char c = u[i];
        char          esc[8];
        size_t        k = 1;
        bool          ok;

        if (plain(c, quoted)) {
            ok = put(o, u + i, 1);
        } else if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char) c;
            ok = put(o, esc, 2);
        } else if (c == '\n') {
            ok = put(o, "\\n", 2);
        } else if (c == '\t') {
            ok = put(o, "\\t", 2);
        } else if (c == '\r') {
            ok = put(o, "\\r", 2);
        } else if (c < 0x80) {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[c >> 4];
            esc[3] = hex[c & 15];
            ok = put(o, esc, 4);
        } else if ((k = utf8_len(u + i, n - i)) > 0) {
            ok = put(o, u + i, k);
        } else {
            k = 1;
            ok = put(o, "\xef\xbf\xbd", 3);
        }
        if (!ok)
            return false;
        i += k;
    }
    return true;
}

/* A text value needs quotes when it is empty or has a blank, quote, '=',
 * backslash or control byte, so key=value pairs split back unambiguously. */
static bool
needs_quotes(const char *s, size_t n)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) s[i];
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f)
            return true;
    }
    return false;
}

static bool
reserved_key(const char *k, size_t n)
{
    static const char *const keys[] = {
        "time", "level", "pid", "role", "worker", "msg", "truncated",
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (strlen(keys[i]) == n && memcmp(keys[i], k, n) == 0)
            return true;
    }
    return false;
}

static void
timestamp(char *buf, size_t cap)
{
    struct timespec ts;
    struct tm       tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, cap - n, ".%03dZ", (int) (ts.tv_nsec / 1000000));
}

#define AGAIN ((size_t) -1)

/*
 * Build one line into buf (cap >= CAP_MIN). msg is msglen bytes; msg_cut
 * says it was already cut (printf overflow). Fields go in whole or not at
 * all; the message may be cut. Any loss ends the line with the truncated
 * marker. tight leaves room for the normal ending only, and gives up with
 * AGAIN at the first loss: format() then builds again with room for the
 * marker, so a line that fits is never cut for the marker's sake.
 * Returns the length; buf is NUL-terminated.
 */
static size_t
build(char *buf, size_t cap, bool json, enum hd_log_level level, const char *ts,
      const char *msg, size_t msglen, bool msg_cut, const char *const *kv,
      bool tight, char scratch[HD_LOG_LINE_MAX])
{
    char       head[160];
    bool       cut = msg_cut;
    struct out o;
    struct str s;

    o.p = buf;
    o.len = 0;
    if (tight)
        o.lim = cap - 1 - (json ? 2 : 1);
    else
        o.lim = cap - 1 - (json ? JSON_RESERVE : TEXT_RESERVE);
    o.full = false;

    if (json) {
        size_t nfields = 0, mark;

        /* header: time, level, pid, role, worker; role is ours, plain */
        int n = snprintf(head, sizeof(head),
                         "{\"time\":\"%s\",\"level\":\"%s\",\"pid\":%ld,"
                         "\"role\":\"%s\"",
                         ts, level_names[level], (long) getpid(), lg.role);
        if (n > 0 && (size_t) n < sizeof(head) && lg.slot >= 0)
            n += snprintf(head + n, sizeof(head) - (size_t) n, ",\"worker\":%d",
                          lg.slot);
        if (n < 0 || (size_t) n >= sizeof(head) || !put(&o, head, (size_t) n)) {
            o.len = 0;
            o.full = false;
            put(&o, "{", 1);
            o.full = true;
            cut = true;
        } else {
            nfields = 5;
        }

        /* message: may be cut, then closed with a quote from the reserve */
        mark = o.len;
        s = clean(msg, msglen, msg_cut, scratch, HD_LOG_LINE_MAX);
        cut |= s.cut;
        if (puts0(&o, ",\"msg\":\"")) {
            if (!json_str(&o, s.p, s.n))
                cut = true;
            if (!put(&o, "\"", 1)) {
                if (tight)
                    return AGAIN;
                app(&o, "\""); /* the reserve has room for it */
                cut = true;
            }
            nfields++;
        } else {
            o.len = mark;
            cut = true;
        }

        for (size_t i = 0; kv != NULL && kv[i] != NULL && !o.full; i += 2) {
            const char *val = kv[i + 1] ? kv[i + 1] : "(null)";
            mark = o.len;
            put(&o, ",\"", 2);
            s = clean(kv[i], strlen(kv[i]), false, scratch, HD_LOG_LINE_MAX);
            cut |= s.cut;
            if (reserved_key(s.p, s.n))
                put(&o, "_", 1);
            json_str(&o, s.p, s.n);
            put(&o, "\":\"", 3);
            s = clean(val, strlen(val), false, scratch, HD_LOG_LINE_MAX);
            cut |= s.cut;
            json_str(&o, s.p, s.n);
            put(&o, "\"", 1);
            if (o.full) {
                o.len = mark;
                cut = true;
                break;
            }
            nfields++;
            if (kv[i + 1] == NULL)
                break;
        }

        if (cut && tight)
            return AGAIN;
        if (cut)
            app(&o, nfields ? JSON_CUT : &JSON_CUT[1]); /* no comma after "{" */
        else
            app(&o, "}\n");
    } else {
        int n;
        if (lg.slot >= 0)
            n = snprintf(head, sizeof(head), "%s %s %s[%d] %ld: ", ts,
                         level_text[level], lg.role, lg.slot, (long) getpid());
        else
            n = snprintf(head, sizeof(head), "%s %s %s %ld: ", ts,
                         level_text[level], lg.role, (long) getpid());
        if (n < 0 || (size_t) n >= sizeof(head) || !put(&o, head, (size_t) n))
            cut = true;

        s = clean(msg, msglen, msg_cut, scratch, HD_LOG_LINE_MAX);
        cut |= s.cut;
        if (!text_str(&o, s.p, s.n, false))
            cut = true;

        for (size_t i = 0; kv != NULL && kv[i] != NULL && !o.full; i += 2) {
            const char *val = kv[i + 1] ? kv[i + 1] : "(null)";
            size_t      mark = o.len;
            put(&o, " ", 1);
            s = clean(kv[i], strlen(kv[i]), false, scratch, HD_LOG_LINE_MAX);
            cut |= s.cut;
            text_str(&o, s.p, s.n, false);
            put(&o, "=", 1);
            s = clean(val, strlen(val), false, scratch, HD_LOG_LINE_MAX);
            cut |= s.cut;
            if (needs_quotes(s.p, s.n)) {
                put(&o, "\"", 1);
                text_str(&o, s.p, s.n, true);
                put(&o, "\"", 1);
            } else {
                text_str(&o, s.p, s.n, false);
            }
            if (o.full) {
                o.len = mark;
                cut = true;
                break;
            }
            if (kv[i + 1] == NULL)
                break;
        }

        if (cut && tight)
            return AGAIN;
        app(&o, cut ? (o.len ? TEXT_CUT : &TEXT_CUT[1]) : "\n");
    }

    buf[o.len] = '\0';
    return o.len;
}

static size_t
format(char *buf, size_t cap, enum hd_log_format fmt, enum hd_log_level level,
       const char *msg, size_t msglen, bool msg_cut, const char *const *kv)
{
    char   scratch[HD_LOG_LINE_MAX];
    char   ts[40];
    bool   json = fmt != HD_LOG_FMT_TEXT;
    size_t n = AGAIN;

    if (cap < CAP_MIN) {
        if (cap == 0)
            return 0;
        if (cap == 1) {
            buf[0] = '\0';
            return 0;
        }
        memcpy(buf, "\n", 2);
        return 1;
    }
    if ((unsigned) level > HD_LOG_DEBUG)
        level = HD_LOG_ERROR;

    timestamp(ts, sizeof(ts));
    if (!msg_cut)
        n = build(buf, cap, json, level, ts, msg, msglen, msg_cut, kv, true,
                  scratch);
    if (n == AGAIN)
        n = build(buf, cap, json, level, ts, msg, msglen, msg_cut, kv, false,
                  scratch);
    return n;
}

size_t
hd_log_format_line(char *buf, size_t cap, enum hd_log_format fmt,
                   enum hd_log_level level, const char *msg,
                   const char *const *kv)
{
    if (fmt == HD_LOG_FMT_AUTO)
        fmt = hd_log_effective_format();
    if (msg == NULL)
        msg = "";
    return format(buf, cap, fmt, level, msg, strlen(msg), false, kv);
}

/*
 * Write the line with one write(2). A short write (a pipe past PIPE_BUF,
 * a full disk) is finished with more calls rather than losing the tail;
 * EAGAIN on a non-blocking stderr drops the rest, since logging must
 * never stall the event loop.
 */
static void
write_line(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(lg.fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t) w;
    }
}

static void
emit(enum hd_log_level level, const char *msg, size_t msglen, bool msg_cut,
     const char *const *kv)
{
    char   line[HD_LOG_LINE_MAX];
    size_t n = format(line, sizeof(line), hd_log_effective_format(), level, msg,
                      msglen, msg_cut, kv);
    write_line(line, n);
}

void
hd_vlog(enum hd_log_level level, const char *fmt, va_list ap)
{
    if (!hd_log_enabled(level))
        return;

    int    saved = errno;
    char   msg[HD_LOG_LINE_MAX];
    size_t len;
    bool   cut = false;

    /* errno is still the caller's here, so %m works */
    int n = vsnprintf(msg, sizeof(msg), fmt ? fmt : "(null)", ap);
    if (n < 0) {
        len = (size_t) snprintf(msg, sizeof(msg), "(bad log format: %s)",
                                fmt ? fmt : "");
        if (len >= sizeof(msg))
            len = sizeof(msg) - 1;
    } else if ((size_t) n >= sizeof(msg)) {
        len = sizeof(msg) - 1;
        cut = true;
    } else {
        len = (size_t) n;
    }
    emit(level, msg, len, cut, NULL);
    errno = saved;
}

void
hd_log(enum hd_log_level level, const char *fmt, ...)
{
    va_list ap;

    if (!hd_log_enabled(level))
        return;
    va_start(ap, fmt);
    hd_vlog(level, fmt, ap);
    va_end(ap);
}

void
hd_log_kv(enum hd_log_level level, const char *msg, ...)
{
    const char *kv[2 * KV_MAX + 1];
    size_t      n = 0;
    va_list     ap;

    if (!hd_log_enabled(level))
        return;

    int saved = errno;
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (k == NULL)
            break;
        const char *v = va_arg(ap, const char *);
        if (n < 2 * KV_MAX) {
            kv[n++] = k;
            kv[n++] = v ? v : "(null)";
        }
    }
    va_end(ap);
    kv[n] = NULL;

    if (msg == NULL)
        msg = "";
    emit(level, msg, strlen(msg), false, kv);
    errno = saved;
}

void
hd_log_write_raw(enum hd_log_level level, const char *component,
                 const char *line)
{
    if (!hd_log_enabled(level) || line == NULL)
        return;

    int    saved = errno;
    size_t n = strlen(line);
    /* libraries end lines with "\n" (lws) or not (hiredis): normalize */
    while (n > 0 && strchr(" \t\r\n\v\f", line[n - 1]) != NULL)
        n--;
    if (n > 0) {
        const char *kv[] = { "component", component ? component : "lib", NULL };
        emit(level, line, n, false, kv);
    }
    errno = saved;
}
