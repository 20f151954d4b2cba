/*
 * Unit tests for common/hd_log.c: names, JSON and text shapes, escaping,
 * redaction, level filter, truncation, files and reopen. JSON output is
 * checked by parsing it with jansson (which rejects invalid UTF-8), not by
 * comparing strings, so the tests hold whatever the field order inside a
 * valid line.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hd_log.h"

static char tmpdir[64];
static char logpath[128];

static int
rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void) sb;
    (void) flag;
    (void) ftw;
    return remove(p);
}

static void
setup(void)
{
    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_JSON, NULL), 0);
    hd_log_clear_secrets();
    hd_log_set_role("master", -1);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/hd-log-test.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(logpath, sizeof(logpath), "%s/herald.log", tmpdir);
}

static void
teardown(void)
{
    hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_JSON, NULL);
    hd_log_clear_secrets();
    nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- helpers ---------------------------------------------------------- */

static char *
read_file(const char *path)
{
    int fd = open(path, O_RDONLY);
    ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char  *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = read(fd, buf + len, cap - len - 1);
        ck_assert(n >= 0);
        if (n == 0)
            break;
        len += (size_t) n;
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

static size_t
count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Line i (0-based) of s, without its newline; caller frees. */
static char *
line_at(const char *s, size_t i)
{
    while (i-- > 0) {
        s = strchr(s, '\n');
        ck_assert_ptr_nonnull(s);
        s++;
    }
    const char *e = strchr(s, '\n');
    ck_assert_ptr_nonnull(e);
    return strndup(s, (size_t) (e - s));
}

static json_t *
parse(const char *line)
{
    json_error_t e;
    json_t      *j = json_loads(line, JSON_REJECT_DUPLICATES, &e);
    ck_assert_msg(j != NULL, "invalid JSON (%s) in: %s", e.text, line);
    ck_assert(json_is_object(j));
    return j;
}

static const char *
jstr(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    ck_assert_msg(json_is_string(v), "no string '%s'", key);
    return json_string_value(v);
}

static bool
matches(const char *re, const char *s)
{
    regex_t r;
    ck_assert_int_eq(regcomp(&r, re, REG_EXTENDED | REG_NOSUB), 0);
    int rc = regexec(&r, s, 0, NULL, 0);
    regfree(&r);
    return rc == 0;
}

/* Format a JSON line (with a fresh buffer) and parse it. */
static json_t *
fmt_json(enum hd_log_level lvl, const char *msg, const char *const *kv)
{
    static char buf[HD_LOG_LINE_MAX];
    size_t n = hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_JSON, lvl, msg,
                                  kv);
    ck_assert_uint_eq(n, strlen(buf));
    ck_assert_msg(n > 0 && buf[n - 1] == '\n', "no newline: %s", buf);
    ck_assert_msg(strchr(buf, '\n') == buf + n - 1, "newline inside: %s", buf);
    return parse(buf);
}

static bool
valid_utf8(const char *s, size_t n)
{
    /* jansson validates UTF-8 when making a string */
    json_t *j = json_stringn(s, n);
    json_decref(j);
    return j != NULL;
}

#define TIME_RE \
    "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"

/* ---- names ------------------------------------------------------------ */

START_TEST(level_names)
{
    static const struct {
        const char       *s;
        enum hd_log_level l;
    } t[] = {
        { "error", HD_LOG_ERROR },
        { "warn", HD_LOG_WARN },
        { "info", HD_LOG_INFO },
        { "debug", HD_LOG_DEBUG },
    };
    for (size_t i = 0; i < 4; i++) {
        enum hd_log_level l = (enum hd_log_level) 99;
        ck_assert_int_eq(hd_log_level_parse(t[i].s, &l), 0);
        ck_assert_int_eq(l, t[i].l);
        ck_assert_str_eq(hd_log_level_name(l), t[i].s);
    }
    const char *bad[] = {
        "", "WARN", "warning", "Info", "info ", "verbose", "3"
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum hd_log_level l = HD_LOG_WARN;
        ck_assert_int_eq(hd_log_level_parse(bad[i], &l), -EINVAL);
        ck_assert_int_eq(l, HD_LOG_WARN); /* untouched on error */
    }
    enum hd_log_level l = HD_LOG_WARN;
    ck_assert_int_eq(hd_log_level_parse(NULL, &l), -EINVAL);
    ck_assert_str_eq(hd_log_level_name((enum hd_log_level) 7), "unknown");
}
END_TEST

START_TEST(format_names)
{
    enum hd_log_format f = (enum hd_log_format) 9;
    ck_assert_int_eq(hd_log_format_parse("auto", &f), 0);
    ck_assert_int_eq(f, HD_LOG_FMT_AUTO);
    ck_assert_int_eq(hd_log_format_parse("json", &f), 0);
    ck_assert_int_eq(f, HD_LOG_FMT_JSON);
    ck_assert_int_eq(hd_log_format_parse("text", &f), 0);
    ck_assert_int_eq(f, HD_LOG_FMT_TEXT);
    const char *bad[] = { "", "JSON", "plain", "texts", "jso" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        f = HD_LOG_FMT_TEXT;
        ck_assert_int_eq(hd_log_format_parse(bad[i], &f), -EINVAL);
        ck_assert_int_eq(f, HD_LOG_FMT_TEXT);
    }
    ck_assert_int_eq(hd_log_format_parse(NULL, &f), -EINVAL);
    ck_assert_int_eq(
        hd_log_configure((enum hd_log_level) 4, HD_LOG_FMT_JSON, NULL),
        -EINVAL);
    ck_assert_int_eq(
        hd_log_configure(HD_LOG_INFO, (enum hd_log_format) 3, NULL), -EINVAL);
}
END_TEST

/* ---- JSON shape ------------------------------------------------------- */

START_TEST(json_all_keys)
{
    const char *kv[] = { "channel", "news", "user", "u1", NULL };
    char        buf[HD_LOG_LINE_MAX];

    hd_log_set_role("worker", 3);
    size_t n = hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_JSON,
                                  HD_LOG_INFO, "hello world", kv);
    ck_assert_uint_eq(n, strlen(buf));
    ck_assert_msg(strncmp(buf, "{\"time\":\"", 9) == 0, "%s", buf);
    ck_assert_msg(n >= 2 && strcmp(buf + n - 2, "}\n") == 0, "%s", buf);

    json_t *j = parse(buf);
    ck_assert_uint_eq(json_object_size(j), 8);
    const char *t = jstr(j, "time");
    ck_assert_msg(matches("^" TIME_RE "$", t), "time '%s'", t);
    /* and it is now, in UTC */
    struct tm tm = { 0 };
    ck_assert_ptr_nonnull(strptime(t, "%Y-%m-%dT%H:%M:%S", &tm));
    ck_assert_int_le(labs((long) (timegm(&tm) - time(NULL))), 5);
    ck_assert_str_eq(jstr(j, "level"), "info");
    ck_assert(json_is_integer(json_object_get(j, "pid")));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "pid")), getpid());
    ck_assert_str_eq(jstr(j, "role"), "worker");
    ck_assert(json_is_integer(json_object_get(j, "worker")));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "worker")), 3);
    ck_assert_str_eq(jstr(j, "msg"), "hello world");
    ck_assert_str_eq(jstr(j, "channel"), "news");
    ck_assert_str_eq(jstr(j, "user"), "u1");
    ck_assert_ptr_null(json_object_get(j, "truncated"));
    json_decref(j);

    /* documented order: time level pid role worker msg, then fields */
    const char *keys[] = {
        "\"time\"",   "\"level\"", "\"pid\"",     "\"role\"",
        "\"worker\"", "\"msg\"",   "\"channel\"", "\"user\""
    };
    const char *prev = buf;
    for (size_t i = 0; i < 8; i++) {
        const char *p = strstr(buf, keys[i]);
        ck_assert_msg(p != NULL && p >= prev, "%s out of order in %s", keys[i],
                      buf);
        prev = p;
    }

    static const char *const names[] = { "error", "warn", "info", "debug" };
    for (int l = HD_LOG_ERROR; l <= HD_LOG_DEBUG; l++) {
        j = fmt_json((enum hd_log_level) l, "x", NULL);
        ck_assert_str_eq(jstr(j, "level"), names[l]);
        json_decref(j);
    }
}
END_TEST

START_TEST(json_no_worker_without_slot)
{
    json_t *j = fmt_json(HD_LOG_WARN, "started", NULL);
    ck_assert_uint_eq(json_object_size(j), 5);
    ck_assert_ptr_null(json_object_get(j, "worker"));
    ck_assert_str_eq(jstr(j, "role"), "master");
    json_decref(j);

    hd_log_set_role("worker", -4);
    j = fmt_json(HD_LOG_WARN, "started", NULL);
    ck_assert_ptr_null(json_object_get(j, "worker"));
    ck_assert_str_eq(jstr(j, "role"), "worker");
    json_decref(j);

    hd_log_set_role("worker", 0);
    j = fmt_json(HD_LOG_WARN, "started", NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "worker")), 0);
    json_decref(j);

    /* a role that would break the line is tamed, and capped in length */
    hd_log_set_role("a\"b\\c\nd-role-with-a-very-long-name", 1);
    j = fmt_json(HD_LOG_WARN, "started", NULL);
    ck_assert_str_eq(jstr(j, "role"), "a_b_c_d-role-wi");
    json_decref(j);
}
END_TEST

START_TEST(json_escaping)
{
    const char *msg = "say \"hi\" \\ back\nline2\ttab\rcr\b\f\x01\x1f\x7f end";
    const char *kv[] = { "k\"ey", "v\"al\\ue\n", "ctl", "\x02\x03", NULL };
    char        buf[HD_LOG_LINE_MAX];

    size_t n = hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_JSON,
                                  HD_LOG_ERROR, msg, kv);
    /* no raw control byte anywhere but the final newline */
    for (size_t i = 0; i + 1 < n; i++)
        ck_assert_msg((unsigned char) buf[i] >= 0x20 && buf[i] != 0x7f,
                      "raw control 0x%02x at %zu: %s", buf[i], i, buf);
    ck_assert_ptr_nonnull(
        strstr(buf, "say \\\"hi\\\" \\\\ back\\nline2\\ttab\\rcr"));
    ck_assert_ptr_nonnull(strstr(buf, "\\u0001\\u001f\\u007f end"));
    ck_assert_ptr_nonnull(strstr(buf, "\"ctl\":\"\\u0002\\u0003\""));

    json_t *j = parse(buf);
    ck_assert_str_eq(jstr(j, "msg"), msg);
    ck_assert_str_eq(jstr(j, "k\"ey"), "v\"al\\ue\n");
    ck_assert_str_eq(jstr(j, "ctl"), "\x02\x03");
    json_decref(j);
}
END_TEST

START_TEST(json_utf8)
{
    static const struct {
        const char *in, *out;
    } t[] = {
        /* valid: kept byte for byte */
        { "h\xc3\xa9llo \xe2\x82\xac \xf0\x9d\x84\x9e",
          "h\xc3\xa9llo \xe2\x82\xac \xf0\x9d\x84\x9e" },
        /* a stray byte */
        { "a\xff"
          "b",
          "a\xef\xbf\xbd"
          "b" },
        /* overlong '/' */
        { "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd" },
        /* UTF-16 surrogate encoded in UTF-8 */
        { "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
        /* past U+10FFFF */
        { "\xf4\x90\x80\x80",
          "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
        /* a sequence cut at the end */
        { "x\xe2\x82", "x\xef\xbf\xbd\xef\xbf\xbd" },
        /* lone continuation, then valid */
        { "\x80\xc3\xa9", "\xef\xbf\xbd\xc3\xa9" },
        { "\xf8\x88\x80\x80\x80",
          "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
    };
    char buf[HD_LOG_LINE_MAX];

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        const char *kv[] = { "f", t[i].in, NULL };
        hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_JSON, HD_LOG_INFO,
                           t[i].in, kv);
        json_t *j = parse(buf);
        ck_assert_msg(strcmp(jstr(j, "msg"), t[i].out) == 0, "case %zu: %s", i,
                      buf);
        ck_assert_msg(strcmp(jstr(j, "f"), t[i].out) == 0, "case %zu: %s", i,
                      buf);
        json_decref(j);
    }
    /* valid multibyte text is not \u-escaped */
    hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_JSON, HD_LOG_INFO, t[0].in,
                       NULL);
    ck_assert_ptr_nonnull(strstr(buf, t[0].in));
    hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_JSON, HD_LOG_INFO,
                       "a\xff"
                       "b",
                       NULL);
    ck_assert_ptr_nonnull(strstr(buf, "a\\ufffdb"));
}
END_TEST

START_TEST(json_reserved_keys_and_null)
{
    const char *kv[] = { "msg", "shadow", "level", "x", "ok", NULL };
    json_t     *j = fmt_json(HD_LOG_INFO, "real", kv);
    ck_assert_str_eq(jstr(j, "msg"), "real");
    ck_assert_str_eq(jstr(j, "level"), "info");
    ck_assert_str_eq(jstr(j, "_msg"), "shadow");
    ck_assert_str_eq(jstr(j, "_level"), "x");
    ck_assert_str_eq(jstr(j, "ok"), "(null)");
    json_decref(j);

    j = fmt_json(HD_LOG_INFO, NULL, NULL);
    ck_assert_str_eq(jstr(j, "msg"), "");
    json_decref(j);
}
END_TEST

/* ---- text shape ------------------------------------------------------- */

START_TEST(text_shape)
{
    const char *kv[] = { "key", "value", "key2", "value with spaces", NULL };
    char        buf[HD_LOG_LINE_MAX], re[256];

    hd_log_set_role("worker", 0);
    hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_TEXT, HD_LOG_INFO,
                       "message", kv);
    snprintf(re, sizeof(re),
             "^" TIME_RE " INFO  worker\\[0\\] %d: message "
             "key=value key2=\"value with spaces\"\n$",
             (int) getpid());
    ck_assert_msg(matches(re, buf), "'%s' !~ '%s'", buf, re);

    static const char *const lv[] = { "ERROR ", "WARN  ", "INFO  ", "DEBUG " };
    for (int l = 0; l < 4; l++) {
        hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_TEXT,
                           (enum hd_log_level) l, "m", NULL);
        ck_assert_msg(buf[23] == 'Z' && buf[24] == ' ', "%s", buf);
        ck_assert_msg(strncmp(buf + 25, lv[l], 6) == 0, "%s", buf);
        ck_assert_msg(strncmp(buf + 31, "worker[0] ", 10) == 0, "%s", buf);
    }

    hd_log_set_role("master", -1);
    hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_TEXT, HD_LOG_WARN, "up",
                       NULL);
    snprintf(re, sizeof(re), "^" TIME_RE " WARN  master %d: up\n$",
             (int) getpid());
    ck_assert_msg(matches(re, buf), "'%s' !~ '%s'", buf, re);
}
END_TEST

START_TEST(text_escaping)
{
    const char *kv[] = { "empty", "",     "q",    "a\"b",  "eq",
                         "a=b",   "nl",   "x\ny", "plain", "caf\xc3\xa9",
                         "bad",   "\xff", NULL };
    char        buf[HD_LOG_LINE_MAX];

    size_t n = hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_TEXT,
                                  HD_LOG_INFO,
                                  "two\nlines\tand \x01 \"q\" \xfe", kv);
    ck_assert_msg(strchr(buf, '\n') == buf + n - 1, "%s", buf);
    const char *want =
        ": two\\nlines\\tand \\x01 \"q\" \xef\xbf\xbd empty=\"\" "
        "q=\"a\\\"b\" eq=\"a=b\" nl=\"x\\ny\" plain=caf\xc3\xa9 "
        "bad=\xef\xbf\xbd\n";
    ck_assert_msg(n > strlen(want) && strcmp(buf + n - strlen(want), want) == 0,
                  "got '%s'", buf);
    ck_assert(valid_utf8(buf, n));
}
END_TEST

/* ---- redaction -------------------------------------------------------- */

START_TEST(redact_message)
{
    char buf[HD_LOG_LINE_MAX];

    hd_log_add_secret("hunter2");
    json_t *j = fmt_json(
        HD_LOG_INFO, "pw=hunter2, again hunter2hunter2 and xhunter2y", NULL);
    ck_assert_str_eq(
        jstr(j, "msg"),
        "pw=[redacted], again [redacted][redacted] and x[redacted]y");
    json_decref(j);

    hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_JSON, HD_LOG_INFO,
                       "hunter2", NULL);
    ck_assert_ptr_null(strstr(buf, "hunter2"));
    ck_assert_ptr_null(strstr(buf, "hunter"));
    hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_TEXT, HD_LOG_INFO,
                       "a hunter2 b", NULL);
    ck_assert_ptr_null(strstr(buf, "hunter"));
    ck_assert_ptr_nonnull(strstr(buf, ": a [redacted] b\n"));

    /* a near miss is left alone */
    j = fmt_json(HD_LOG_INFO, "hunter3 hunter", NULL);
    ck_assert_str_eq(jstr(j, "msg"), "hunter3 hunter");
    json_decref(j);
}
END_TEST

START_TEST(redact_fields)
{
    const char *kv[] = { "password", "hunter2",
                         "note",     "my hunter2 here hunter2",
                         "hunter2",  "as a key",
                         NULL };
    char        buf[HD_LOG_LINE_MAX];

    hd_log_add_secret("hunter2");
    hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_JSON, HD_LOG_INFO, "login",
                       kv);
    ck_assert_ptr_null(strstr(buf, "hunter2"));
    json_t *j = parse(buf);
    ck_assert_str_eq(jstr(j, "password"), "[redacted]");
    ck_assert_str_eq(jstr(j, "note"), "my [redacted] here [redacted]");
    ck_assert_str_eq(jstr(j, "[redacted]"), "as a key");
    json_decref(j);

    hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_TEXT, HD_LOG_INFO, "login",
                       kv);
    ck_assert_ptr_null(strstr(buf, "hunter2"));
    ck_assert_ptr_nonnull(strstr(
        buf, " password=[redacted] note=\"my [redacted] here [redacted]\""));
}
END_TEST

START_TEST(redact_printf_args_to_file)
{
    const char *secret = "s3cr3t-T0ken";
    char       *s, *l;
    json_t     *j;

    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_JSON, logpath),
                     0);
    hd_log_add_secret(secret);
    hd_log_info("login user=%s pass=%s", "bob", secret);
    hd_log_kv(HD_LOG_WARN, "redis auth", "url",
              "redis://:s3cr3t-T0ken@host:6379", NULL);
    hd_log_write_raw(HD_LOG_ERROR, "hiredis", "AUTH s3cr3t-T0ken failed\n");
    hd_log(HD_LOG_ERROR, "%.6s%s", secret, secret + 6); /* built by printf */

    s = read_file(logpath);
    ck_assert_uint_eq(count_lines(s), 4);
    ck_assert_msg(strstr(s, "s3cr3t") == NULL, "leak: %s", s);
    ck_assert_msg(strstr(s, "T0ken") == NULL, "leak: %s", s);

    l = line_at(s, 0);
    j = parse(l);
    ck_assert_str_eq(jstr(j, "msg"), "login user=bob pass=[redacted]");
    json_decref(j);
    free(l);
    l = line_at(s, 1);
    j = parse(l);
    ck_assert_str_eq(jstr(j, "url"), "redis://:[redacted]@host:6379");
    json_decref(j);
    free(l);
    l = line_at(s, 2);
    j = parse(l);
    ck_assert_str_eq(jstr(j, "msg"), "AUTH [redacted] failed");
    ck_assert_str_eq(jstr(j, "component"), "hiredis");
    json_decref(j);
    free(l);
    l = line_at(s, 3);
    j = parse(l);
    ck_assert_str_eq(jstr(j, "msg"), "[redacted]");
    json_decref(j);
    free(l);
    free(s);
}
END_TEST

START_TEST(redact_edges)
{
    json_t *j;

    /* short secrets are redacted too */
    hd_log_add_secret("ab");
    j = fmt_json(HD_LOG_INFO, "cabbage ab", NULL);
    ck_assert_str_eq(jstr(j, "msg"), "c[redacted]bage [redacted]");
    json_decref(j);
    hd_log_clear_secrets();

    /* empty and NULL are ignored, not "match everywhere" */
    hd_log_add_secret("");
    hd_log_add_secret(NULL);
    j = fmt_json(HD_LOG_INFO, "nothing here", NULL);
    ck_assert_str_eq(jstr(j, "msg"), "nothing here");
    json_decref(j);

    /* the longest match wins, wherever they were registered */
    hd_log_add_secret("abc");
    hd_log_add_secret("abcdef");
    j = fmt_json(HD_LOG_INFO, "xabcdefy xabcy", NULL);
    ck_assert_str_eq(jstr(j, "msg"), "x[redacted]y x[redacted]y");
    json_decref(j);
    hd_log_clear_secrets();

    /* matched before escaping: a secret with a quote and a control byte */
    char buf[HD_LOG_LINE_MAX];
    hd_log_add_secret("p\"w\x01"
                      "d");
    hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_JSON, HD_LOG_INFO,
                       "[p\"w\x01"
                       "d]",
                       NULL);
    ck_assert_ptr_null(strstr(buf, "p\\\"w"));
    j = parse(buf);
    ck_assert_str_eq(jstr(j, "msg"), "[[redacted]]");
    json_decref(j);
    hd_log_clear_secrets();

    /* the secret is copied */
    char mut[] = "mutable-1";
    hd_log_add_secret(mut);
    hd_log_add_secret(mut); /* duplicate: harmless */
    memset(mut, 'z', sizeof(mut) - 1);
    j = fmt_json(HD_LOG_INFO, "is mutable-1", NULL);
    ck_assert_str_eq(jstr(j, "msg"), "is [redacted]");
    json_decref(j);

    /* clear drops them */
    hd_log_clear_secrets();
    j = fmt_json(HD_LOG_INFO, "is mutable-1", NULL);
    ck_assert_str_eq(jstr(j, "msg"), "is mutable-1");
    json_decref(j);

    /* many secrets, all honoured */
    char sec[40][16];
    for (int i = 0; i < 40; i++) {
        snprintf(sec[i], sizeof(sec[i]), "key%02d!", i);
        hd_log_add_secret(sec[i]);
    }
    for (int i = 0; i < 40; i++) {
        char msg[64];
        snprintf(msg, sizeof(msg), "<%.15s>", sec[i]);
        j = fmt_json(HD_LOG_INFO, msg, NULL);
        ck_assert_str_eq(jstr(j, "msg"), "<[redacted]>");
        json_decref(j);
    }
}
END_TEST

/*
 * A message longer than the printf buffer is cut; if the cut falls inside
 * a secret, the half before the cut must not leak. Long secrets shrink to
 * "[redacted]" first, so the cut point lands well inside the line.
 */
START_TEST(redact_cut_secret)
{
    char secret[101];
    for (int i = 0; i < 100; i++)
        secret[i] = "sekrit0123456789"[i % 16];
    secret[100] = '\0';

    size_t keep = HD_LOG_LINE_MAX - 1; /* what vsnprintf keeps */
    char  *msg = malloc(keep + 200);
    size_t len = 0;
    for (int i = 0; i < 70; i++, len += 100)
        memcpy(msg + len, secret, 100);
    while (len < keep - 20)
        msg[len++] = '.';
    memcpy(msg + len, secret, 100); /* only 20 bytes of it survive */
    len += 100;
    msg[len] = '\0';

    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_JSON, logpath),
                     0);
    hd_log_add_secret(secret);
    hd_log_info("%s", msg);

    char *s = read_file(logpath);
    ck_assert_uint_eq(count_lines(s), 1);
    ck_assert_msg(strstr(s, "sekrit") == NULL, "leak: ...%s",
                  s + strlen(s) - 80);
    json_t *j = parse(s);
    ck_assert(json_is_true(json_object_get(j, "truncated")));
    const char *m = jstr(j, "msg");
    ck_assert_uint_eq(strlen(m), 70 * 10 + (keep - 20 - 7000) + 10);
    ck_assert_str_eq(m + strlen(m) - 13, "...[redacted]");
    json_decref(j);
    free(s);
    free(msg);
}
END_TEST

/* ---- level filter ----------------------------------------------------- */

static int
side_effect(int *calls)
{
    return ++*calls;
}

START_TEST(level_filter)
{
    int calls = 0;

    ck_assert_int_eq(hd_log_configure(HD_LOG_WARN, HD_LOG_FMT_JSON, logpath),
                     0);
    ck_assert(hd_log_enabled(HD_LOG_ERROR));
    ck_assert(hd_log_enabled(HD_LOG_WARN));
    ck_assert(!hd_log_enabled(HD_LOG_INFO));
    ck_assert(!hd_log_enabled(HD_LOG_DEBUG));
    ck_assert(!hd_log_enabled((enum hd_log_level) - 1));
    ck_assert(!hd_log_enabled((enum hd_log_level) 4));

    hd_log_info("info-line");
    hd_log_warn("warn-line");
    hd_log_error("error-line");
    hd_log_debug("debug-line %d", side_effect(&calls));
    hd_log_kv(HD_LOG_INFO, "kv-info", "a", "b", NULL);
    hd_log_kv(HD_LOG_WARN, "kv-warn", "a", "b", NULL);
    hd_log_write_raw(HD_LOG_INFO, "lws", "raw-info");
    hd_log((enum hd_log_level) 5, "bogus-level");
    ck_assert_int_eq(calls, 0); /* args of a disabled debug not evaluated */

    char *s = read_file(logpath);
    ck_assert_uint_eq(count_lines(s), 3);
    ck_assert_ptr_nonnull(strstr(s, "warn-line"));
    ck_assert_ptr_nonnull(strstr(s, "error-line"));
    ck_assert_ptr_nonnull(strstr(s, "kv-warn"));
    ck_assert_ptr_null(strstr(s, "info"));
    ck_assert_ptr_null(strstr(s, "debug"));
    ck_assert_ptr_null(strstr(s, "bogus"));
    free(s);

    ck_assert_int_eq(hd_log_configure(HD_LOG_DEBUG, HD_LOG_FMT_JSON, logpath),
                     0);
    hd_log_debug("debug-line %d", side_effect(&calls));
    ck_assert_int_eq(calls, 1);
    s = read_file(logpath);
    ck_assert_uint_eq(count_lines(s), 4);
    ck_assert_ptr_nonnull(strstr(s, "debug-line 1"));
    free(s);

    ck_assert_int_eq(hd_log_configure(HD_LOG_ERROR, HD_LOG_FMT_JSON, logpath),
                     0);
    hd_log_warn("warn-2");
    s = read_file(logpath);
    ck_assert_uint_eq(count_lines(s), 4);
    free(s);
}
END_TEST

/* ---- truncation ------------------------------------------------------- */

/* A message of valid UTF-8 with every kind of escape: it decodes back to
 * itself, so whatever survives a cut must be a prefix of it. */
static char *
rich_message(size_t min_len)
{
    static const char piece[] =
        "ab\"c\\d\ne\x01 \xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e ";
    size_t plen = sizeof(piece) - 1;
    size_t n = (min_len / plen + 1) * plen;
    char  *m = malloc(n + 1);
    for (size_t i = 0; i < n; i += plen)
        memcpy(m + i, piece, plen);
    m[n] = '\0';
    return m;
}

START_TEST(truncation_long_message)
{
    char        buf[HD_LOG_LINE_MAX];
    char       *msg = rich_message(20000);
    const char *kv[] = { "after", "the message", NULL };

    hd_log_set_role("worker", 12);
    size_t n = hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_JSON,
                                  HD_LOG_INFO, msg, kv);
    ck_assert_uint_le(n, sizeof(buf) - 1);
    ck_assert_uint_ge(n, sizeof(buf) - 16); /* cut near the end, not early */
    ck_assert_uint_eq(strlen(buf), n);
    ck_assert_int_eq(buf[n - 1], '\n');
    json_t *j = parse(buf);
    ck_assert(json_is_true(json_object_get(j, "truncated")));
    const char *m = jstr(j, "msg");
    ck_assert_uint_gt(strlen(m), 4000);
    ck_assert(strncmp(m, msg, strlen(m)) == 0);
    ck_assert_ptr_null(json_object_get(j, "after"));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "worker")), 12);
    json_decref(j);

    n = hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_TEXT, HD_LOG_INFO, msg,
                           kv);
    ck_assert_uint_le(n, sizeof(buf) - 1);
    ck_assert_uint_ge(n, sizeof(buf) - 16);
    ck_assert_str_eq(buf + n - 13, " [truncated]\n");
    ck_assert(strchr(buf, '\n') == buf + n - 1);
    ck_assert(valid_utf8(buf, n));

    /* through hd_log, to a file: one line, one write */
    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_JSON, logpath),
                     0);
    hd_log_info("%s", msg);
    hd_log_info("next");
    char *s = read_file(logpath);
    ck_assert_uint_eq(count_lines(s), 2);
    char *l = line_at(s, 0);
    ck_assert_uint_le(strlen(l) + 1, HD_LOG_LINE_MAX);
    j = parse(l);
    ck_assert(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);
    free(l);
    free(s);
    free(msg);
}
END_TEST

/* Every cap from 0 up: the line fits, ends in one newline, is valid JSON,
 * and whatever it holds is true (fields whole, msg a prefix). */
START_TEST(truncation_every_cap)
{
    char       *msg = rich_message(300);
    const char *kv[] = { "k1", "v1 value",
                         "k2", "\"quoted\"\n",
                         "k3", "\xe2\x82\xac\xe2\x82\xac",
                         NULL };
    size_t      bufcap = 1400;
    char       *buf = malloc(bufcap);
    char        full[HD_LOG_LINE_MAX];

    hd_log_set_role("worker", 7);
    size_t full_len = hd_log_format_line(full, sizeof(full), HD_LOG_FMT_JSON,
                                         HD_LOG_DEBUG, msg, kv);
    ck_assert_ptr_null(strstr(full, "truncated"));
    ck_assert_uint_lt(full_len, bufcap - 100);

    bool was_whole = false;
    for (size_t cap = 0; cap < bufcap; cap++) {
        memset(buf, 'Z', bufcap);
        size_t n = hd_log_format_line(buf, cap, HD_LOG_FMT_JSON, HD_LOG_DEBUG,
                                      msg, kv);
        if (cap == 0) {
            ck_assert_uint_eq(n, 0);
            ck_assert_int_eq(buf[0], 'Z');
            continue;
        }
        ck_assert_msg(n < cap, "cap %zu len %zu", cap, n);
        ck_assert_int_eq(buf[n], '\0');
        ck_assert_int_eq(buf[cap], 'Z'); /* nothing written past cap */
        if (cap == 1) {
            ck_assert_uint_eq(n, 0);
            continue;
        }
        if (cap < 32) {
            ck_assert_str_eq(buf, "\n");
            continue;
        }
        ck_assert_msg(buf[n - 1] == '\n' && strchr(buf, '\n') == buf + n - 1,
                      "cap %zu: %s", cap, buf);
        json_t *j = parse(buf);
        json_t *t = json_object_get(j, "truncated");
        bool    whole = t == NULL;
        ck_assert(whole || json_is_true(t));
        ck_assert_msg(whole == (cap > full_len), "cap %zu full %zu: %s", cap,
                      full_len, buf);
        ck_assert(!was_whole || whole);
        was_whole = whole;
        /* all of the header or none of it */
        size_t hdr = json_object_get(j, "time") != NULL;
        ck_assert_msg((json_object_get(j, "level") != NULL) == hdr
                          && (json_object_get(j, "pid") != NULL) == hdr
                          && (json_object_get(j, "worker") != NULL) == hdr,
                      "%s", buf);
        json_t *m = json_object_get(j, "msg");
        if (m != NULL) {
            const char *ms = json_string_value(m);
            ck_assert_msg(strncmp(ms, msg, strlen(ms)) == 0, "cap %zu: %s", cap,
                          buf);
            if (whole)
                ck_assert_str_eq(ms, msg);
        } else {
            ck_assert(!whole);
        }
        for (size_t i = 0; kv[i]; i += 2) {
            json_t *v = json_object_get(j, kv[i]);
            if (v != NULL)
                ck_assert_str_eq(json_string_value(v), kv[i + 1]);
            else
                ck_assert(!whole);
        }
        json_decref(j);
    }
    ck_assert(was_whole);

    /* text: same promises, checked on shape and UTF-8 */
    char   tfull[HD_LOG_LINE_MAX];
    size_t tfull_len = hd_log_format_line(tfull, sizeof(tfull), HD_LOG_FMT_TEXT,
                                          HD_LOG_DEBUG, msg, kv);
    for (size_t cap = 32; cap < bufcap; cap++) {
        memset(buf, 'Z', bufcap);
        size_t n = hd_log_format_line(buf, cap, HD_LOG_FMT_TEXT, HD_LOG_DEBUG,
                                      msg, kv);
        ck_assert(n < cap && buf[n] == '\0' && buf[cap] == 'Z');
        ck_assert_msg(buf[n - 1] == '\n' && strchr(buf, '\n') == buf + n - 1,
                      "cap %zu: %s", cap, buf);
        ck_assert_msg(valid_utf8(buf, n), "cap %zu: bad UTF-8", cap);
        if (cap > tfull_len) {
            ck_assert_uint_eq(n, tfull_len);
            ck_assert_str_eq(buf + 24, tfull + 24); /* past the clock */
        } else {
            ck_assert_msg(n >= 12 && strcmp(buf + n - 12, "[truncated]\n") == 0,
                          "cap %zu: %s", cap, buf);
        }
    }
    free(buf);
    free(msg);
}
END_TEST

/* ---- destinations ----------------------------------------------------- */

START_TEST(file_and_reopen)
{
    char        rotated[160];
    struct stat st;
    char       *s;

    snprintf(rotated, sizeof(rotated), "%s.1", logpath);
    umask(022);
    /* an existing file is appended to */
    int pre = open(logpath, O_WRONLY | O_CREAT, 0600);
    ck_assert(write(pre, "existing\n", 9) == 9);
    close(pre);

    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_JSON, logpath),
                     0);
    int fd = hd_log_fd();
    ck_assert_int_gt(fd, 2);
    ck_assert_int_eq(hd_log_effective_format(), HD_LOG_FMT_JSON);
    ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    ck_assert(fcntl(fd, F_GETFL) & O_APPEND);
    hd_log_info("line one");

    ck_assert_int_eq(rename(logpath, rotated), 0);
    hd_log_info("line two"); /* still the old, renamed file */
    ck_assert_int_eq(hd_log_reopen(), 0);
    ck_assert_int_eq(hd_log_fd(), fd); /* same number */
    ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    hd_log_info("line three");

    s = read_file(rotated);
    ck_assert_uint_eq(count_lines(s), 3);
    ck_assert(strncmp(s, "existing\n", 9) == 0);
    ck_assert_ptr_nonnull(strstr(s, "line one"));
    ck_assert_ptr_nonnull(strstr(s, "line two"));
    ck_assert_ptr_null(strstr(s, "line three"));
    free(s);

    s = read_file(logpath);
    ck_assert_uint_eq(count_lines(s), 1);
    json_t *j = parse(s);
    ck_assert_str_eq(jstr(j, "msg"), "line three");
    json_decref(j);
    free(s);

    ck_assert_int_eq(stat(logpath, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0640);

    /* a second file through configure also keeps the fd number */
    char other[160];
    snprintf(other, sizeof(other), "%s/other.log", tmpdir);
    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_TEXT, other), 0);
    ck_assert_int_eq(hd_log_fd(), fd);
    hd_log_warn("in other");
    s = read_file(other);
    ck_assert_uint_eq(count_lines(s), 1);
    ck_assert_ptr_nonnull(strstr(s, " WARN  master "));
    free(s);
}
END_TEST

START_TEST(reopen_failure_keeps_old)
{
    char  sub[128], path[160], moved[128], movedpath[160];
    char *s;

    snprintf(sub, sizeof(sub), "%s/sub", tmpdir);
    snprintf(moved, sizeof(moved), "%s/sub2", tmpdir);
    snprintf(path, sizeof(path), "%s/h.log", sub);
    snprintf(movedpath, sizeof(movedpath), "%s/h.log", moved);
    ck_assert_int_eq(mkdir(sub, 0700), 0);

    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_JSON, path), 0);
    int fd = hd_log_fd();
    ck_assert_int_eq(rename(sub, moved), 0);
    ck_assert_int_eq(hd_log_reopen(), -ENOENT);
    ck_assert_int_eq(hd_log_fd(), fd);
    hd_log_info("still logging");

    /* a failed configure changes nothing: not level, format, nor file */
    ck_assert_int_eq(hd_log_configure(HD_LOG_DEBUG, HD_LOG_FMT_TEXT,
                                      "/nonexistent-hd-dir/x.log"),
                     -ENOENT);
    ck_assert(!hd_log_enabled(HD_LOG_DEBUG));
    ck_assert_int_eq(hd_log_effective_format(), HD_LOG_FMT_JSON);
    ck_assert_int_eq(hd_log_fd(), fd);
    hd_log_info("after failed configure");

    s = read_file(movedpath);
    ck_assert_uint_eq(count_lines(s), 2);
    ck_assert_ptr_nonnull(strstr(s, "still logging"));
    ck_assert_ptr_nonnull(strstr(s, "after failed configure"));
    free(s);
}
END_TEST

START_TEST(back_to_stderr)
{
    ck_assert_int_eq(hd_log_fd(), STDERR_FILENO);
    ck_assert_int_eq(hd_log_reopen(), 0); /* no-op on stderr */
    ck_assert_int_eq(hd_log_fd(), STDERR_FILENO);

    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_JSON, logpath),
                     0);
    int fd = hd_log_fd();
    ck_assert_int_ne(fd, STDERR_FILENO);
    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_JSON, ""), 0);
    ck_assert_int_eq(hd_log_fd(), STDERR_FILENO);
    errno = 0;
    ck_assert_int_eq(fcntl(fd, F_GETFD), -1); /* ours was closed */
    ck_assert_int_eq(errno, EBADF);
    ck_assert_int_ne(fcntl(STDERR_FILENO, F_GETFD), -1);
}
END_TEST

START_TEST(auto_format)
{
    char buf[HD_LOG_LINE_MAX];

    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_AUTO, logpath),
                     0);
    ck_assert_int_eq(hd_log_effective_format(), HD_LOG_FMT_JSON);
    hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_AUTO, HD_LOG_INFO, "a",
                       NULL);
    ck_assert_int_eq(buf[0], '{');
    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_TEXT, logpath),
                     0);
    ck_assert_int_eq(hd_log_effective_format(), HD_LOG_FMT_TEXT);
    hd_log_format_line(buf, sizeof(buf), HD_LOG_FMT_AUTO, HD_LOG_INFO, "a",
                       NULL);
    ck_assert(matches("^" TIME_RE " INFO  ", buf));

    /* a terminal gets text */
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0) {
        fprintf(stderr, "auto_format: no pty (%s), tty case not checked\n",
                strerror(errno));
        return;
    }
    ck_assert_int_eq(grantpt(m), 0);
    ck_assert_int_eq(unlockpt(m), 0);
    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_AUTO, ptsname(m)),
                     0);
    ck_assert_int_eq(hd_log_effective_format(), HD_LOG_FMT_TEXT);
    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_JSON, ptsname(m)),
                     0);
    ck_assert_int_eq(hd_log_effective_format(), HD_LOG_FMT_JSON);
    hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_JSON, NULL);
    close(m);
}
END_TEST

/* ---- entry points ----------------------------------------------------- */

START_TEST(write_raw_bridge)
{
    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_JSON, logpath),
                     0);
    hd_log_set_role("worker", 2);
    hd_log_write_raw(HD_LOG_WARN, "lws", "lws_create_context: failed  \r\n \n");
    hd_log_write_raw(HD_LOG_INFO, "lws", "\n");            /* empty: dropped */
    hd_log_write_raw(HD_LOG_DEBUG, "lws", "too chatty\n"); /* filtered */
    hd_log_write_raw(HD_LOG_ERROR, "hiredis", "  keeps leading blanks");

    char *s = read_file(logpath);
    ck_assert_uint_eq(count_lines(s), 2);
    char   *l = line_at(s, 0);
    json_t *j = parse(l);
    ck_assert_str_eq(jstr(j, "msg"), "lws_create_context: failed");
    ck_assert_str_eq(jstr(j, "component"), "lws");
    ck_assert_str_eq(jstr(j, "level"), "warn");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "worker")), 2);
    json_decref(j);
    free(l);
    l = line_at(s, 1);
    j = parse(l);
    ck_assert_str_eq(jstr(j, "msg"), "  keeps leading blanks");
    ck_assert_str_eq(jstr(j, "component"), "hiredis");
    ck_assert_str_eq(jstr(j, "level"), "error");
    json_decref(j);
    free(l);
    free(s);
}
END_TEST

START_TEST(kv_to_file)
{
    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_JSON, logpath),
                     0);
    hd_log_kv(HD_LOG_INFO, "subscribed", "channel", "news", "user",
              (char *) NULL, (char *) NULL);
    hd_log_kv(HD_LOG_INFO, "many", "a0", "0", "a1", "1", "a2", "2", "a3", "3",
              "a4", "4", "a5", "5", "a6", "6", "a7", "7", "a8", "8", "a9", "9",
              "b0", "0", "b1", "1", "b2", "2", "b3", "3", "b4", "4", "b5", "5",
              "b6", "6", "b7", "7", "b8", "8", "b9", "9", "c0", "0", "c1", "1",
              "c2", "2", "c3", "3", "c4", "4", "c5", "5", "c6", "6", "c7", "7",
              "c8", "8", "c9", "9", "d0", "0", "d1", "1", "d2", "2", "d3", "3",
              "d4", "4", "d5", "5", (char *) NULL);

    char *s = read_file(logpath);
    ck_assert_uint_eq(count_lines(s), 2);
    char   *l = line_at(s, 0);
    json_t *j = parse(l);
    ck_assert_str_eq(jstr(j, "msg"), "subscribed");
    ck_assert_str_eq(jstr(j, "channel"), "news");
    ck_assert_str_eq(jstr(j, "user"), "(null)");
    json_decref(j);
    free(l);
    l = line_at(s, 1);
    j = parse(l);
    /* time level pid role (no worker: master) + msg + the first 32 pairs */
    ck_assert_uint_eq(json_object_size(j), 5 + 32);
    ck_assert_str_eq(jstr(j, "d1"), "1");
    ck_assert_ptr_null(json_object_get(j, "d2"));
    json_decref(j);
    free(l);
    free(s);
}
END_TEST

START_TEST(errno_kept)
{
    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_AUTO, logpath),
                     0);
    errno = ENOENT;
    hd_log_error("open(x) failed: %m");
    ck_assert_int_eq(errno, ENOENT);

    /* every write to /dev/full fails with ENOSPC: errno must not show it */
    ck_assert_int_eq(
        hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_AUTO, "/dev/full"), 0);
    errno = ENOENT;
    hd_log_error("lost");
    ck_assert_int_eq(errno, ENOENT);
    errno = EAGAIN;
    hd_log_kv(HD_LOG_ERROR, "kv", "a", "b", NULL);
    ck_assert_int_eq(errno, EAGAIN);
    errno = EPIPE;
    hd_log_write_raw(HD_LOG_ERROR, "lws", "raw");
    ck_assert_int_eq(errno, EPIPE);
    errno = EINTR;
    hd_log_debug("dropped");
    ck_assert_int_eq(errno, EINTR);

    char   *s = read_file(logpath);
    char   *l = line_at(s, 0);
    json_t *j = parse(l);
    ck_assert_str_eq(jstr(j, "msg"),
                     "open(x) failed: No such file or directory");
    json_decref(j);
    free(l);
    free(s);
}
END_TEST

/*
 * Several processes append long lines to one file at once: every line
 * must come out whole, which holds only if each is one write(2).
 */
START_TEST(no_interleaving)
{
    enum {
        PROCS = 4,
        LINES = 200
    };
    char fill[3000];

    ck_assert_int_eq(hd_log_configure(HD_LOG_INFO, HD_LOG_FMT_JSON, logpath),
                     0);
    for (int p = 0; p < PROCS; p++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            hd_log_set_role("worker", p);
            memset(fill, 'a' + p, sizeof(fill) - 1);
            fill[sizeof(fill) - 1] = '\0';
            for (int i = 0; i < LINES; i++)
                hd_log_kv(HD_LOG_INFO, fill, "i", "x", NULL);
            _exit(0);
        }
    }
    for (int p = 0; p < PROCS; p++) {
        int st;
        ck_assert_int_gt(wait(&st), 0);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }

    char *s = read_file(logpath);
    ck_assert_uint_eq(count_lines(s), PROCS * LINES);
    int per[PROCS] = { 0 };
    for (size_t i = 0; i < PROCS * LINES; i++) {
        char   *l = line_at(s, i);
        json_t *j = parse(l);
        int     w = (int) json_integer_value(json_object_get(j, "worker"));
        ck_assert(w >= 0 && w < PROCS);
        const char *m = jstr(j, "msg");
        ck_assert_uint_eq(strlen(m), sizeof(fill) - 1);
        ck_assert(m[0] == 'a' + w && m[sizeof(fill) - 2] == 'a' + w);
        per[w]++;
        json_decref(j);
        free(l);
    }
    for (int p = 0; p < PROCS; p++)
        ck_assert_int_eq(per[p], LINES);
    free(s);
}
END_TEST

static Suite *
log_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, level_names);
    tcase_add_test(tc, format_names);
    tcase_add_test(tc, json_all_keys);
    tcase_add_test(tc, json_no_worker_without_slot);
    tcase_add_test(tc, json_escaping);
    tcase_add_test(tc, json_utf8);
    tcase_add_test(tc, json_reserved_keys_and_null);
    tcase_add_test(tc, text_shape);
    tcase_add_test(tc, text_escaping);
    tcase_add_test(tc, redact_message);
    tcase_add_test(tc, redact_fields);
    tcase_add_test(tc, redact_printf_args_to_file);
    tcase_add_test(tc, redact_edges);
    tcase_add_test(tc, redact_cut_secret);
    tcase_add_test(tc, level_filter);
    tcase_add_test(tc, truncation_long_message);
    tcase_add_test(tc, truncation_every_cap);
    tcase_add_test(tc, file_and_reopen);
    tcase_add_test(tc, reopen_failure_keeps_old);
    tcase_add_test(tc, back_to_stderr);
    tcase_add_test(tc, auto_format);
    tcase_add_test(tc, write_raw_bridge);
    tcase_add_test(tc, kv_to_file);
    tcase_add_test(tc, errno_kept);
    tcase_add_test(tc, no_interleaving);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(log_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
