/*
 * Configuration loader. One static table (keys[] below) drives everything:
 * parsing, defaults, validation, freeing, secret registration and the
 * reload comparisons. To add a key, add one row; to add a kind of value,
 * add one struct ktype. Nothing else needs to know.
 *
 * A load is one pass over the JSON tree. Errors are collected, never
 * returned early, so an operator sees every mistake in a file at once.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "hd_alloc.h"
#include "hd_conf.h"
#include "hd_log.h"

/* A config file is a few hundred bytes; anything past this is a mistake. */
#define CONF_MAX_BYTES   (1024 * 1024)
/* Longest value echoed back in an error message. */
#define ECHO_MAX         40

/*
 * What a reload must do when a key changes. Every row must pick one (a row
 * left at RELOAD_UNSET fails the unit tests), so a new key cannot silently
 * escape hd_conf_worker_changed().
 */
enum reload {
    RELOAD_UNSET = 0,
    RELOAD_MASTER,      /* the master applies it in place */
    RELOAD_WORKER,      /* workers read it at start: replace workers */
    RELOAD_LISTEN,      /* listen sockets reopened and workers replaced */
};

#define F_SECRET    0x1u    /* never echoed; registered with the logger */

struct key;
struct load;

/*
 * A kind of value. apply() validates v and stores it into ld->c (freeing
 * whatever the field held), or reports errors and returns -1. differs()
 * compares the field(s) of two loaded configs. release() frees what apply()
 * allocated. secrets() registers secret values with the logger.
 */
struct ktype {
    int  (*apply)(struct load *ld, const struct key *k, json_t *v,
                  const char *dpath);
    bool (*differs)(const hd_conf_t *a, const hd_conf_t *b,
                    const struct key *k);
    void (*release)(hd_conf_t *c, const struct key *k);
    void (*secrets)(const hd_conf_t *c, const struct key *k);
};

/*
 * One row per leaf key. path is dotted ("listen.port"); every proper prefix
 * of a path is an object section. min/max bound integers, or the byte
 * length of strings. def is the default as JSON text, run through the same
 * apply() as a value from the file (so a bad default fails the tests);
 * NULL means "optional, no default" (the field stays NULL).
 */
struct key {
    const char          *path;
    const struct ktype  *type;
    long long            min, max;
    const char          *def;
    size_t               off;
    enum reload          reload;
    unsigned             flags;
    const char *const   *names;     /* enum values, index = stored int */
    const char        *(*check)(const char *s);  /* extra string check */
};

static const struct ktype T_INT, T_BOOL, T_STR, T_ENUM, T_WORKERS, T_REDIS,
                          T_NAMESPACES, T_ORIGINS;

static const char *check_ip(const char *s);
static char *display_path(const char *dparent, const char *key);

static const char *const log_levels[]  = { "error", "warn", "info", "debug",
                                           NULL };
static const char *const log_formats[] = { "auto", "json", "text", NULL };

/* the enum rows store the index into the names array */
_Static_assert(HD_LOG_ERROR == 0 && HD_LOG_WARN == 1 && HD_LOG_INFO == 2
               && HD_LOG_DEBUG == 3, "log_levels[] order");
_Static_assert(HD_LOG_FMT_AUTO == 0 && HD_LOG_FMT_JSON == 1
               && HD_LOG_FMT_TEXT == 2, "log_formats[] order");

/*
 * Row builders, one per type. Bounds: integers are min..max inclusive;
 * strings are min..max bytes long. def is JSON text or NULL.
 */
#define OFF(f)  offsetof(hd_conf_t, f)
#define K_INT(p, f, lo, hi, def, rl) \
    { p, &T_INT, lo, hi, def, OFF(f), rl, 0, NULL, NULL }
#define K_BOOL(p, f, def, rl) \
    { p, &T_BOOL, 0, 0, def, OFF(f), rl, 0, NULL, NULL }
#define K_STR(p, f, lo, hi, def, rl, flags, check) \
    { p, &T_STR, lo, hi, def, OFF(f), rl, flags, NULL, check }
#define K_ENUM(p, f, names, def, rl) \
    { p, &T_ENUM, 0, 0, def, OFF(f), rl, 0, names, NULL }
#define K_TYPE(p, type, f, lo, hi, def, rl) \
    { p, type, lo, hi, def, OFF(f), rl, 0, NULL, NULL }

static const struct key keys[] = {
    K_TYPE("workers", &T_WORKERS, workers, 1, HD_WORKERS_MAX, "\"auto\"",
           RELOAD_MASTER),

    K_STR("listen.address", listen_address, 1, 64, "\"0.0.0.0\"",
          RELOAD_LISTEN, 0, check_ip),
    K_INT("listen.port", listen_port, 1, 65535, "8080", RELOAD_LISTEN),
    K_INT("listen.backlog", listen_backlog, 1, 65535, "4096", RELOAD_LISTEN),

    K_STR("admin.address", admin_address, 1, 64, "\"127.0.0.1\"",
          RELOAD_MASTER, 0, check_ip),
    K_INT("admin.port", admin_port, 0, 65535, "9090", RELOAD_MASTER),
    K_STR("admin.token", admin_token, 16, 1024, NULL,
          RELOAD_MASTER, F_SECRET, NULL),

    K_TYPE("redis.url", &T_REDIS, redis_url, 1, 4096,
           "\"redis://127.0.0.1:6379\"", RELOAD_WORKER),
    K_INT("redis.connect_timeout_ms", redis_connect_timeout_ms, 10, 60000,
          "2000", RELOAD_WORKER),
    K_INT("redis.command_timeout_ms", redis_command_timeout_ms, 10, 60000,
          "2000", RELOAD_WORKER),
    K_INT("redis.reconnect_min_ms", redis_reconnect_min_ms, 1, 60000,
          "100", RELOAD_WORKER),
    K_INT("redis.reconnect_max_ms", redis_reconnect_max_ms, 1, 600000,
          "5000", RELOAD_WORKER),
    K_INT("redis.heartbeat_ms", redis_heartbeat_ms, 50, 60000, "500",
          RELOAD_WORKER),
    K_INT("redis.meta_ttl_s", channel_meta_ttl_s, 60, 31536000, "86400",
          RELOAD_WORKER),

    K_STR("auth.hmac_secret", auth_hmac_secret, 32, 4096, NULL,
          RELOAD_WORKER, F_SECRET, NULL),
    K_BOOL("auth.allow_anonymous", auth_allow_anonymous, "false",
           RELOAD_WORKER),

    K_STR("api.key", api_key, 16, 1024, NULL, RELOAD_WORKER, F_SECRET, NULL),

    K_ENUM("log.level", log_level, log_levels, "\"info\"", RELOAD_MASTER),
    K_ENUM("log.format", log_format, log_formats, "\"auto\"", RELOAD_MASTER),
    K_STR("log.file", log_file, 1, PATH_MAX - 1, NULL, RELOAD_MASTER, 0, NULL),

    K_INT("timeouts.shutdown_ms", shutdown_ms, 100, 600000, "10000",
          RELOAD_WORKER),
    K_INT("timeouts.handshake_ms", handshake_ms, 100, 120000, "5000",
          RELOAD_WORKER),
    K_INT("timeouts.connect_ms", connect_ms, 100, 600000, "10000",
          RELOAD_WORKER),

    K_INT("limits.subscriptions_per_connection", max_subscriptions, 1, 65535,
          "128", RELOAD_WORKER),
    K_INT("limits.recovery_max_publications", recovery_max, 1, 100000,
          "1000", RELOAD_WORKER),
    K_INT("batch.max_bytes", batch_max_bytes, 1024, 16777216, "65536",
          RELOAD_WORKER),
    K_INT("batch.max_messages", batch_max_messages, 1, 65536, "256",
          RELOAD_WORKER),
    K_INT("batch.flush_delay_ms", batch_flush_delay_ms, 0, 1000, "0",
          RELOAD_WORKER),
    K_INT("api.max_body_bytes", api_max_body_bytes, 256, 16777216, "65536",
          RELOAD_WORKER),
    K_INT("heartbeat.ping_interval_ms", ping_interval_ms, 1000, 3600000,
          "25000", RELOAD_WORKER),

    K_INT("heartbeat.pong_timeout_ms", pong_timeout_ms, 1000, 3600000,
          "10000", RELOAD_WORKER),

    K_INT("limits.max_connections", max_connections, 0, 16777215, "0",
          RELOAD_WORKER),
    K_INT("limits.connections_per_ip", conns_per_ip, 0, 16777215, "0",
          RELOAD_WORKER),
    K_INT("limits.connections_per_user", conns_per_user, 0, 16777215, "0",
          RELOAD_WORKER),
    K_INT("limits.connections_per_tenant", conns_per_tenant, 0, 16777215, "0",
          RELOAD_WORKER),
    K_INT("limits.message_bytes", message_bytes, 1024, 16777216, "65536",
          RELOAD_WORKER),
    K_INT("limits.outbound_queue_bytes", outq_bytes, 65536, 1073741824,
          "1048576", RELOAD_WORKER),
    K_INT("limits.commands_per_second", cmd_rate, 0, 1000000, "100",
          RELOAD_WORKER),
    K_INT("limits.commands_burst", cmd_burst, 1, 1000000, "200",
          RELOAD_WORKER),
    K_INT("limits.rate_abuse_ms", rate_abuse_ms, 100, 600000, "5000",
          RELOAD_WORKER),

    K_TYPE("security.allowed_origins", &T_ORIGINS, allowed_origins, 0, 256,
           "[]", RELOAD_WORKER),
    K_BOOL("security.allow_missing_origin", allow_missing_origin, "true",
           RELOAD_WORKER),

    K_BOOL("compression.enabled", compression, "false", RELOAD_WORKER),
    K_INT("compression.window_bits", compression_window_bits, 9, 15, "10",
          RELOAD_WORKER),
    K_INT("compression.mem_level", compression_mem_level, 1, 9, "4",
          RELOAD_WORKER),

    K_TYPE("namespaces", &T_NAMESPACES, namespaces, 0, 0,
           "{\"default\": {}}", RELOAD_WORKER),
};

#define NKEYS  (sizeof(keys) / sizeof(keys[0]))

enum { ST_MISSING = 0, ST_OK, ST_BAD };

/* State of one load pass. */
struct load {
    const char       *name;     /* file name for messages */
    hd_conf_t        *c;
    hd_conf_errors_t *errs;     /* may be NULL: count only */
    size_t            nerr;
    unsigned char     state[NKEYS];
};

#define FIELD(c, k, T)   ((T *) (void *) ((char *) (c) + (k)->off))
#define CFIELD(c, k, T)  ((const T *) (const void *) \
                          ((const char *) (c) + (k)->off))

/* ---- errors ------------------------------------------------------------ */

void
hd_conf_errors_free(hd_conf_errors_t *e)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->n; i++)
        free(e->msg[i]);
    free(e->msg);
    e->msg = NULL;
    e->n = e->cap = 0;
}

static void
errs_push(hd_conf_errors_t *e, char *msg)
{
    if (e == NULL) {
        free(msg);
        return;
    }
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 8;
        e->msg = hd_realloc(e->msg, e->cap * sizeof(*e->msg));
    }
    e->msg[e->n++] = msg;
}

static char *
vfmt(const char *fmt, va_list ap)
{
    va_list ap2;
    int     n;
    char   *s;

    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        n = 0;
    s = hd_malloc((size_t) n + 1);
    vsnprintf(s, (size_t) n + 1, fmt, ap);
    return s;
}

/* Report "NAME: DPATH: message". dpath is a display path ("$.listen.port"). */
static void
err(struct load *ld, const char *dpath, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
err(struct load *ld, const char *dpath, const char *fmt, ...)
{
    va_list ap;
    char   *msg;

    ld->nerr++;
    if (ld->errs == NULL)
        return;
    va_start(ap, fmt);
    msg = vfmt(fmt, ap);
    va_end(ap);
    errs_push(ld->errs, hd_asprintf("%s: %s: %s", ld->name, dpath, msg));
    free(msg);
}

/*
 * Quote a user-supplied string for an error message: escaped, truncated,
 * never raw control bytes. Never call this on a secret.
 */
static char *
echo(const char *s)
{
    size_t len = strlen(s), j = 0;
    char  *o = hd_malloc(ECHO_MAX * 4 + 8);

    o[j++] = '"';
    for (size_t i = 0; i < len && i < ECHO_MAX; i++) {
        unsigned char ch = (unsigned char) s[i];
        if (ch == '"' || ch == '\\') {
            o[j++] = '\\';
            o[j++] = (char) ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            j += (size_t) sprintf(o + j, "\\x%02x", ch);
        } else {
            o[j++] = (char) ch;
        }
    }
    o[j++] = '"';
    if (len > ECHO_MAX) {
        memcpy(o + j, "...", 3);
        j += 3;
    }
    o[j] = '\0';
    return o;
}

static const char *
jtype(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:  return "object";
    case JSON_ARRAY:   return "array";
    case JSON_STRING:  return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL:    return "real";
    case JSON_TRUE:
    case JSON_FALSE:   return "boolean";
    case JSON_NULL:    return "null";
    }
    return "unknown";
}

/* ---- integers and booleans --------------------------------------------- */

static int
apply_int(struct load *ld, const struct key *k, json_t *v, const char *dpath)
{
    json_int_t n;

    if (!json_is_integer(v)) {
        err(ld, dpath, "expected integer, got %s", jtype(v));
        return -1;
    }
    n = json_integer_value(v);
    if (n < k->min || n > k->max) {
        err(ld, dpath, "must be between %lld and %lld, got %lld",
            k->min, k->max, (long long) n);
        return -1;
    }
    *FIELD(ld->c, k, int) = (int) n;
    return 0;
}

static bool
differs_int(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    return *CFIELD(a, k, int) != *CFIELD(b, k, int);
}

static int
apply_bool(struct load *ld, const struct key *k, json_t *v, const char *dpath)
{
    if (!json_is_boolean(v)) {
        err(ld, dpath, "expected boolean, got %s", jtype(v));
        return -1;
    }
    *FIELD(ld->c, k, bool) = json_is_true(v);
    return 0;
}

static bool
differs_bool(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    return *CFIELD(a, k, bool) != *CFIELD(b, k, bool);
}

/* ---- strings ----------------------------------------------------------- */

/* Secrets are wiped: best effort, jansson's copies are not. */
static void
release_str(hd_conf_t *c, const struct key *k)
{
    char **f = FIELD(c, k, char *);

    if ((k->flags & F_SECRET) && *f != NULL)
        explicit_bzero(*f, strlen(*f));
    hd_free(*f);
}

/*
 * Optional strings (def == NULL) accept null as "not set", so a templated
 * file can write "admin": {"token": null}.
 */
static int
apply_str(struct load *ld, const struct key *k, json_t *v, const char *dpath)
{
    char      **f = FIELD(ld->c, k, char *);
    const char *s, *why;
    size_t      len;

    if (json_is_null(v) && k->def == NULL) {
        release_str(ld->c, k);
        return 0;
    }
    if (!json_is_string(v)) {
        err(ld, dpath, "expected string, got %s", jtype(v));
        return -1;
    }
    s = json_string_value(v);
    len = json_string_length(v);
    if ((long long) len < k->min) {
        if (k->min == 1)
            err(ld, dpath, "must not be empty");
        else
            err(ld, dpath, "must be at least %lld bytes long", k->min);
        return -1;
    }
    if ((long long) len > k->max) {
        err(ld, dpath, "must be at most %lld bytes long", k->max);
        return -1;
    }
    if (k->check != NULL && (why = k->check(s)) != NULL) {
        if (k->flags & F_SECRET) {
            err(ld, dpath, "%s", why);
        } else {
            char *q = echo(s);
            err(ld, dpath, "%s, got %s", why, q);
            free(q);
        }
        return -1;
    }
    release_str(ld->c, k);
    *f = hd_strdup(s);
    return 0;
}

static bool
str_differs(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a != b;
    return strcmp(a, b) != 0;
}

static bool
differs_str(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    return str_differs(*CFIELD(a, k, char *), *CFIELD(b, k, char *));
}

static void
secrets_str(const hd_conf_t *c, const struct key *k)
{
    const char *s = *CFIELD(c, k, char *);

    if ((k->flags & F_SECRET) && s != NULL)
        hd_log_add_secret(s);
}

static const char *
check_ip(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];

    if (inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1)
        return NULL;
    return "must be an IPv4 or IPv6 address literal";
}

/* ---- enums ------------------------------------------------------------- */

static int
apply_enum(struct load *ld, const struct key *k, json_t *v, const char *dpath)
{
    char   *list, *q;
    size_t  i;

    if (json_is_string(v)) {
        for (i = 0; k->names[i] != NULL; i++) {
            if (strcmp(json_string_value(v), k->names[i]) == 0) {
                *FIELD(ld->c, k, int) = (int) i;
                return 0;
            }
        }
    }
    /* "one of \"error\", \"warn\", ..." */
    list = hd_strdup("");
    for (i = 0; k->names[i] != NULL; i++) {
        char *n = hd_asprintf("%s%s\"%s\"", list, i ? ", " : "", k->names[i]);
        free(list);
        list = n;
    }
    if (json_is_string(v)) {
        q = echo(json_string_value(v));
        err(ld, dpath, "must be one of %s; got %s", list, q);
        free(q);
    } else {
        err(ld, dpath, "expected string (one of %s), got %s", list, jtype(v));
    }
    free(list);
    return -1;
}

/* ---- workers: "auto" or a count ---------------------------------------- */

/* "auto": one worker per online CPU, clamped to 1..max. */
static int
auto_workers(int cpus, int max)
{
    if (cpus < 1)
        return 1;
    return cpus < max ? cpus : max;
}

static int
apply_workers(struct load *ld, const struct key *k, json_t *v,
              const char *dpath)
{
    if (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0) {
        ld->c->workers = auto_workers(hd_conf_online_cpus(), (int) k->max);
        ld->c->workers_auto = true;
        return 0;
    }
    if (json_is_integer(v)) {
        json_int_t w = json_integer_value(v);
        if (w < k->min || w > k->max) {
            err(ld, dpath, "must be \"auto\" or between %lld and %lld, "
                "got %lld", k->min, k->max, (long long) w);
            return -1;
        }
        ld->c->workers = (int) w;
        ld->c->workers_auto = false;
        return 0;
    }
    if (json_is_string(v)) {
        char *q = echo(json_string_value(v));
        err(ld, dpath, "must be \"auto\" or an integer between %lld and %lld, "
            "got %s", k->min, k->max, q);
        free(q);
    } else {
        err(ld, dpath, "expected \"auto\" or integer, got %s", jtype(v));
    }
    return -1;
}

/* A reload with only "workers" changed scales in place: compare both. */
static bool
differs_workers(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    (void) k;
    return a->workers != b->workers || a->workers_auto != b->workers_auto;
}

int
hd_conf_online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        return 1;
    if (n > INT_MAX)
        return INT_MAX;
    return (int) n;
}

/* ---- redis.url --------------------------------------------------------- */

struct redis_url {
    char       *host;           /* tcp only, without brackets */
    int         port;
    char       *unix_path;
    char       *password;       /* percent-decoded; NULL if none */
    int         db;
    const char *pw_raw;         /* password as written in the URL */
    size_t      pw_raw_len;
};

static void
redis_url_clear(struct redis_url *u)
{
    hd_free(u->host);
    hd_free(u->unix_path);
    if (u->password != NULL)
        explicit_bzero(u->password, strlen(u->password));
    hd_free(u->password);
}

/* Parse n bytes of decimal digits into 0..max. */
static int
parse_num(const char *s, size_t n, long max, long *out)
{
    long long v = 0;

    if (n == 0 || n > 10)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = (long) v;
    return 0;
}

static int
hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n) into a fresh string, or NULL if malformed/NUL. */
static char *
pct_decode(const char *s, size_t n)
{
    char   *d = hd_malloc(n + 1);
    size_t  j = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            d[j++] = s[i];
            continue;
        }
        if (i + 2 >= n)
            goto fail;
        int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
            goto fail;
        d[j++] = (char) (hi << 4 | lo);
        i += 2;
    }
    d[j] = '\0';
    return d;
fail:
    free(d);
    return NULL;
}

/* The db part of a path: "" or "/" is 0, "/N" is N. */
static const char *
parse_db(const char *s, size_t n, int *db)
{
    long v;

    if (n == 0) {
        *db = 0;
        return NULL;
    }
    if (parse_num(s, n, INT_MAX, &v) < 0)
        return "database must be an integer between 0 and 2147483647";
    *db = (int) v;
    return NULL;
}

/*
 * redis://[[user]:password@]host[:port][/db] and unix:///path[?db=N].
 * Following redis-cli, "redis://word@host" takes word as the password and
 * a user before ':' is accepted and ignored (herald authenticates the
 * default user). The password is percent-decoded.
 *
 * Returns NULL and fills u, or a static message saying what is wrong;
 * messages never quote any part of the URL, which may hold a password.
 */
static const char *
parse_redis_url(const char *url, struct redis_url *u)
{
    const char *s, *auth_end, *at, *hp, *colon, *p, *why;
    long        v;

    memset(u, 0, sizeof(*u));

    if (strncasecmp(url, "unix://", 7) == 0) {
        s = url + 7;
        size_t plen = strcspn(s, "?");
        if (s[0] != '/')
            return "unix:// needs an absolute socket path, "
                   "e.g. unix:///run/redis/redis.sock";
        if (plen < 2)
            return "unix socket path is empty";
        if (plen >= sizeof(((struct sockaddr_un *) 0)->sun_path))
            return "unix socket path is too long (at most 107 bytes)";
        u->db = 0;
        if (s[plen] == '?') {
            p = s + plen + 1;
            if (strncmp(p, "db=", 3) != 0)
                return "unknown query parameter (only ?db=N is supported)";
            /* parse_db() takes "" as 0, but "?db=" is a mistake */
            if (p[3] == '\0' || parse_db(p + 3, strlen(p + 3), &u->db))
                return "database must be an integer between 0 and "
                       "2147483647";
        }
        u->unix_path = hd_strndup(s, plen);
        u->port = 0;
        return NULL;
    }

    if (strncasecmp(url, "rediss://", 9) == 0)
        return "TLS (rediss://) is not supported";
    if (strncasecmp(url, "redis://", 8) != 0)
        return "must start with redis:// or unix://";

    s = url + 8;
    auth_end = s + strcspn(s, "/?#");
    if (*auth_end == '?' || *auth_end == '#')
        return "query strings and fragments are not supported "
               "(give the database as /N)";

    /* userinfo: the last '@' before the path, so an unescaped '@' in a
     * password still parses */
    at = NULL;
    for (p = s; p < auth_end; p++)
        if (*p == '@')
            at = p;
    if (at == NULL && strchr(auth_end, '@') != NULL)
        return "'@' after the host: percent-encode '/', '?' and '#' "
               "in the password";
    hp = s;
    if (at != NULL) {
        const char *pw = memchr(s, ':', (size_t) (at - s));
        pw = pw != NULL ? pw + 1 : s;
        if (at > pw) {
            u->password = pct_decode(pw, (size_t) (at - pw));
            if (u->password == NULL)
                return "bad percent-escape in the password";
            u->pw_raw = pw;
            u->pw_raw_len = (size_t) (at - pw);
        }
        hp = at + 1;
    }

    if (hp == auth_end) {
        why = "missing host";
        goto fail;
    }
    if (*hp == '[') {
        const char *rb = memchr(hp, ']', (size_t) (auth_end - hp));
        unsigned char a6[sizeof(struct in6_addr)];
        if (rb == NULL) {
            why = "unterminated '[' in the host";
            goto fail;
        }
        u->host = hd_strndup(hp + 1, (size_t) (rb - hp - 1));
        if (inet_pton(AF_INET6, u->host, a6) != 1) {
            why = "the host in brackets is not an IPv6 address";
            goto fail;
        }
        colon = rb + 1;
        if (colon != auth_end && *colon != ':') {
            why = "unexpected character after ']'";
            goto fail;
        }
    } else {
        colon = memchr(hp, ':', (size_t) (auth_end - hp));
        const char *hend = colon != NULL ? colon : auth_end;
        if (colon != NULL && memchr(colon + 1, ':',
                                    (size_t) (auth_end - colon - 1))) {
            why = "an IPv6 host must be in brackets, "
                  "e.g. redis://[::1]:6379";
            goto fail;
        }
        if (hend == hp) {
            why = "missing host";
            goto fail;
        }
        for (p = hp; p < hend; p++) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                  || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'
                  || *p == '_')) {
                why = "bad character in the host";
                goto fail;
            }
        }
        if (hend - hp > 253) {
            why = "host name is too long";
            goto fail;
        }
        u->host = hd_strndup(hp, (size_t) (hend - hp));
        if (colon == NULL)
            colon = auth_end;
    }

    u->port = 6379;
    if (colon != auth_end) {
        if (parse_num(colon + 1, (size_t) (auth_end - colon - 1), 65535, &v)
            < 0 || v == 0) {
            why = "port must be an integer between 1 and 65535";
            goto fail;
        }
        u->port = (int) v;
    }

    if (*auth_end == '/') {
        p = auth_end + 1;
        if (strpbrk(p, "?#") != NULL) {
            why = "query strings and fragments are not supported "
                  "(give the database as /N)";
            goto fail;
        }
        if ((why = parse_db(p, strlen(p), &u->db)) != NULL)
            goto fail;
    }
    return NULL;

fail:
    redis_url_clear(u);
    return why;
}

static void
release_redis(hd_conf_t *c, const struct key *k)
{
    struct redis_url u = {
        .host = c->redis_host, .unix_path = c->redis_unix_path,
        .password = c->redis_password,
    };

    (void) k;
    redis_url_clear(&u);
    c->redis_host = c->redis_unix_path = c->redis_password = NULL;
    hd_free(c->redis_url);
}

static int
apply_redis(struct load *ld, const struct key *k, json_t *v, const char *dpath)
{
    struct redis_url u;
    const char      *why;
    hd_conf_t       *c = ld->c;

    if (!json_is_string(v)) {
        err(ld, dpath, "expected string, got %s", jtype(v));
        return -1;
    }
    if ((long long) json_string_length(v) > k->max) {
        err(ld, dpath, "must be at most %lld bytes long", k->max);
        return -1;
    }
    if ((why = parse_redis_url(json_string_value(v), &u)) != NULL) {
        err(ld, dpath, "invalid Redis URL: %s", why);
        return -1;
    }
    release_redis(c, k);
    c->redis_url = hd_strdup(json_string_value(v));
    c->redis_host = u.host;
    c->redis_port = u.port;
    c->redis_unix_path = u.unix_path;
    c->redis_password = u.password;
    c->redis_db = u.db;
    return 0;
}

/* Compare what a worker connects with, not the spelling of the URL. */
static bool
differs_redis(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    (void) k;
    return str_differs(a->redis_host, b->redis_host)
        || a->redis_port != b->redis_port
        || str_differs(a->redis_unix_path, b->redis_unix_path)
        || str_differs(a->redis_password, b->redis_password)
        || a->redis_db != b->redis_db;
}

/* Both the decoded password and its spelling in the URL are secrets. */
static void
secrets_redis(const hd_conf_t *c, const struct key *k)
{
    struct redis_url u;

    (void) k;
    if (c->redis_password != NULL)
        hd_log_add_secret(c->redis_password);
    if (c->redis_url == NULL || parse_redis_url(c->redis_url, &u) != NULL)
        return;
    if (u.pw_raw != NULL) {
        char *raw = hd_strndup(u.pw_raw, u.pw_raw_len);
        hd_log_add_secret(raw);
        explicit_bzero(raw, u.pw_raw_len);
        free(raw);
    }
    redis_url_clear(&u);
}

/* ---- namespaces ---------------------------------------------------------- */

#define NS_NAME_MAX 64

static const char *
check_ns_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > NS_NAME_MAX)
        return "a namespace name must be 1..64 bytes";
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')
              || (*s >= '0' && *s <= '9') || strchr("_.@-", *s) != NULL))
            return "a namespace name may only hold [A-Za-z0-9_.@-]";
    return NULL;
}

static void
free_ns_array(hd_ns_t *ns, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ns[i].name);
    free(ns);
}

static void
release_namespaces(hd_conf_t *c, const struct key *k)
{
    (void) k;
    free_ns_array(c->namespaces, c->nnamespaces);
    c->namespaces = NULL;
    c->nnamespaces = 0;
}

static int
ns_cmp(const void *a, const void *b)
{
    return strcmp(((const hd_ns_t *) a)->name, ((const hd_ns_t *) b)->name);
}

/* One namespace's options object; every bad field is reported. */
static int
apply_one_ns(struct load *ld, hd_ns_t *ns, json_t *opts, const char *dpath)
{
    static const struct { const char *name; bool is_bool; long long max; } F[] = {
        { "publish", true, 0 },
        { "anonymous", true, 0 },
        { "history_size", false, 1000000 },
        { "history_ttl_s", false, 31536000 },
    };
    const char *fname;
    json_t     *v;
    int         rc = 0;

    if (!json_is_object(opts)) {
        err(ld, dpath, "expected object, got %s", jtype(opts));
        return -1;
    }
    json_object_foreach(opts, fname, v) {
        char  *fp = display_path(dpath, fname);
        size_t i;

        for (i = 0; i < sizeof(F) / sizeof(F[0]); i++)
            if (strcmp(F[i].name, fname) == 0)
                break;
        if (i == sizeof(F) / sizeof(F[0])) {
            err(ld, fp, "unknown key (expected publish, anonymous, "
                "history_size or history_ttl_s)");
            rc = -1;
        } else if (F[i].is_bool) {
            if (!json_is_boolean(v)) {
                err(ld, fp, "expected boolean, got %s", jtype(v));
                rc = -1;
            } else if (i == 0) {
                ns->publish = json_is_true(v);
            } else {
                ns->anonymous = json_is_true(v);
            }
        } else {
            if (!json_is_integer(v)) {
                err(ld, fp, "expected integer, got %s", jtype(v));
                rc = -1;
            } else if (json_integer_value(v) < 0
                       || json_integer_value(v) > F[i].max) {
                err(ld, fp, "must be between 0 and %lld, got %lld", F[i].max,
                    (long long) json_integer_value(v));
                rc = -1;
            } else if (i == 2) {
                ns->history_size = (int) json_integer_value(v);
            } else {
                ns->history_ttl_s = (int) json_integer_value(v);
            }
        }
        free(fp);
    }
    if (rc == 0 && (ns->history_size > 0) != (ns->history_ttl_s > 0)) {
        err(ld, dpath, "history_size and history_ttl_s must both be set "
            "(history on) or both be 0 (history off)");
        rc = -1;
    }
    return rc;
}

static int
apply_namespaces(struct load *ld, const struct key *k, json_t *v,
                 const char *dpath)
{
    const char *name, *why;
    json_t     *opts;
    hd_ns_t    *arr;
    size_t      n = 0;
    int         rc = 0;

    if (!json_is_object(v)) {
        err(ld, dpath, "expected object, got %s", jtype(v));
        return -1;
    }
    arr = hd_calloc(json_object_size(v) + 1, sizeof(*arr));
    json_object_foreach(v, name, opts) {
        char *np = display_path(dpath, name);
        if ((why = check_ns_name(name)) != NULL) {
            char *q = echo(name);
            err(ld, np, "%s, got %s", why, q);
            free(q);
            rc = -1;
        } else {
            arr[n].name = hd_strdup(name);
            if (apply_one_ns(ld, &arr[n], opts, np) < 0)
                rc = -1;
            n++;
        }
        free(np);
    }
    if (rc < 0) {
        free_ns_array(arr, n);
        return -1;
    }
    qsort(arr, n, sizeof(*arr), ns_cmp);
    release_namespaces(ld->c, k);
    ld->c->namespaces = arr;
    ld->c->nnamespaces = n;
    return 0;
}

static bool
differs_namespaces(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    (void) k;
    if (a->nnamespaces != b->nnamespaces)
        return true;
    for (size_t i = 0; i < a->nnamespaces; i++) {
        const hd_ns_t *x = &a->namespaces[i], *y = &b->namespaces[i];
        if (strcmp(x->name, y->name) != 0 || x->publish != y->publish
            || x->anonymous != y->anonymous
            || x->history_size != y->history_size
            || x->history_ttl_s != y->history_ttl_s)
            return true;
    }
    return false;
}

const hd_ns_t *
hd_conf_ns(const hd_conf_t *c, const char *ns, size_t len)
{
    size_t lo = 0, hi = c->nnamespaces;

    if (len == 0) {
        ns = "default";
        len = 7;
    }
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int    r = strncmp(c->namespaces[mid].name, ns, len);
        if (r == 0 && c->namespaces[mid].name[len] != '\0')
            r = 1;
        if (r == 0)
            return &c->namespaces[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- security.allowed_origins -------------------------------------------- */

/*
 * An origin pattern: scheme://host[:port], where host may start with "*."
 * (any subdomain, not the bare domain). Lower-case is applied on load.
 */
static const char *
check_origin(const char *s)
{
    const char *h = strstr(s, "://");

    if (h == NULL || h == s)
        return "an origin must look like https://example.com or "
               "https://*.example.com";
    for (const char *p = s; p < h; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
            return "bad scheme in origin";
    h += 3;
    if (*h == '\0')
        return "an origin needs a host";
    if (strchr(h, '/') != NULL)
        return "an origin has no path (https://example.com, not "
               "https://example.com/)";
    if (strchr(h, '*') != NULL && (strncmp(h, "*.", 2) != 0
                                   || strchr(h + 2, '*') != NULL))
        return "a wildcard is only allowed as \"*.\" at the start of the host";
    return NULL;
}

static void
release_origins(hd_conf_t *c, const struct key *k)
{
    (void) k;
    for (size_t i = 0; i < c->nallowed_origins; i++)
        free(c->allowed_origins[i]);
    free(c->allowed_origins);
    c->allowed_origins = NULL;
    c->nallowed_origins = 0;
}

static int
apply_origins(struct load *ld, const struct key *k, json_t *v, const char *dpath)
{
    size_t  i, n;
    char  **arr;
    int     rc = 0;

    if (!json_is_array(v)) {
        err(ld, dpath, "expected array of strings, got %s", jtype(v));
        return -1;
    }
    n = json_array_size(v);
    if ((long long) n > k->max) {
        err(ld, dpath, "at most %lld origins", k->max);
        return -1;
    }
    arr = hd_calloc(n + 1, sizeof(char *));
    for (i = 0; i < n; i++) {
        json_t     *e = json_array_get(v, i);
        char        ip[32];
        const char *why;
        snprintf(ip, sizeof(ip), "[%zu]", i);
        char *ep = hd_asprintf("%s%s", dpath, ip);
        if (!json_is_string(e)) {
            err(ld, ep, "expected string, got %s", jtype(e));
            rc = -1;
        } else if ((why = check_origin(json_string_value(e))) != NULL) {
            char *q = echo(json_string_value(e));
            err(ld, ep, "%s, got %s", why, q);
            free(q);
            rc = -1;
        } else {
            arr[i] = hd_strdup(json_string_value(e));
            for (char *p = arr[i]; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                    *p = (char) (*p - 'A' + 'a');
        }
        free(ep);
    }
    if (rc < 0) {
        for (i = 0; i < n; i++)
            free(arr[i]);
        free(arr);
        return -1;
    }
    release_origins(ld->c, k);
    ld->c->allowed_origins = arr;
    ld->c->nallowed_origins = n;
    return 0;
}

static bool
differs_origins(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    (void) k;
    if (a->nallowed_origins != b->nallowed_origins)
        return true;
    for (size_t i = 0; i < a->nallowed_origins; i++)
        if (strcmp(a->allowed_origins[i], b->allowed_origins[i]) != 0)
            return true;
    return false;
}

bool
hd_conf_origin_allowed(const hd_conf_t *c, const char *origin)
{
    char        lo[512];
    size_t      n = strlen(origin);
    const char *h;

    if (c->nallowed_origins == 0)
        return true;
    if (n >= sizeof(lo))
        return false;
    for (size_t i = 0; i <= n; i++)
        lo[i] = (origin[i] >= 'A' && origin[i] <= 'Z')
                ? (char) (origin[i] - 'A' + 'a') : origin[i];
    for (size_t i = 0; i < c->nallowed_origins; i++) {
        const char *pat = c->allowed_origins[i];
        const char *ps = strstr(pat, "://");
        if (strcmp(pat, lo) == 0)
            return true;
        if (ps == NULL || strncmp(ps + 3, "*.", 2) != 0)
            continue;
        /* same scheme, and the host ends in ".domain[:port]" with at least
         * one label before it */
        size_t sl = (size_t) (ps + 3 - pat);
        if (strncmp(pat, lo, sl) != 0)
            continue;
        h = lo + sl;
        const char *suffix = ps + 4;       /* ".example.com[:port]" */
        size_t      hl = strlen(h), sfl = strlen(suffix);
        if (hl > sfl && strcmp(h + hl - sfl, suffix) == 0
            && strchr(h, '/') == NULL)
            return true;
    }
    return false;
}

/* ---- the types --------------------------------------------------------- */

static void
release_none(hd_conf_t *c, const struct key *k)
{
    (void) c;
    (void) k;
}

static void
secrets_none(const hd_conf_t *c, const struct key *k)
{
    (void) c;
    (void) k;
}

static const struct ktype T_INT = {
    apply_int, differs_int, release_none, secrets_none };
static const struct ktype T_BOOL = {
    apply_bool, differs_bool, release_none, secrets_none };
static const struct ktype T_STR = {
    apply_str, differs_str, release_str, secrets_str };
static const struct ktype T_ENUM = {
    apply_enum, differs_int, release_none, secrets_none };
static const struct ktype T_WORKERS = {
    apply_workers, differs_workers, release_none, secrets_none };
static const struct ktype T_REDIS = {
    apply_redis, differs_redis, release_redis, secrets_redis };
static const struct ktype T_NAMESPACES = {
    apply_namespaces, differs_namespaces, release_namespaces, secrets_none };
static const struct ktype T_ORIGINS = {
    apply_origins, differs_origins, release_origins, secrets_none };

/* ---- the walk ---------------------------------------------------------- */

static int
key_index(const char *path)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].path, path) == 0)
            return (int) i;
    return -1;
}

/* True when some key lives under the dotted prefix (an object section). */
static bool
is_section(const char *prefix)
{
    size_t n = strlen(prefix);

    for (size_t i = 0; i < NKEYS; i++)
        if (strncmp(keys[i].path, prefix, n) == 0 && keys[i].path[n] == '.')
            return true;
    return false;
}

static void
mark_section(struct load *ld, const char *prefix, unsigned char st)
{
    size_t n = strlen(prefix);

    for (size_t i = 0; i < NKEYS; i++)
        if (strncmp(keys[i].path, prefix, n) == 0 && keys[i].path[n] == '.')
            ld->state[i] = st;
}

/* A key that is safe to print after a dot: [A-Za-z0-9_-]+. */
static bool
plain_key(const char *k)
{
    if (*k == '\0')
        return false;
    for (; *k; k++)
        if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z')
              || (*k >= '0' && *k <= '9') || *k == '_' || *k == '-'))
            return false;
    return true;
}

/* "$.listen" + "port" -> "$.listen.port"; odd keys as $.listen["a.b"]. */
static char *
display_path(const char *dparent, const char *key)
{
    char *q, *d;

    if (plain_key(key))
        return hd_asprintf("%s.%s", dparent, key);
    q = echo(key);
    d = hd_asprintf("%s[%s]", dparent, q);
    free(q);
    return d;
}

/* Edit distance, capped: a-b longer than 32 bytes are simply "far". */
static size_t
distance(const char *a, size_t la, const char *b, size_t lb)
{
    size_t row[33];

    if (la > 32 || lb > 32)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb];
}

/*
 * For "unknown key": the known name under mparent closest to name, when it
 * is within two edits ("adress" -> "address"). Returns a heap string or
 * NULL.
 */
static char *
suggest(const char *mparent, const char *name)
{
    size_t      plen = strlen(mparent), best = 3, nlen = strlen(name);
    const char *bs = NULL;
    size_t      bl = 0;

    for (size_t i = 0; i < NKEYS; i++) {
        const char *seg = keys[i].path;
        size_t      d, sl;

        if (plen > 0) {
            if (strncmp(seg, mparent, plen) != 0 || seg[plen] != '.')
                continue;
            seg += plen + 1;
        }
        sl = strcspn(seg, ".");
        d = distance(name, nlen, seg, sl);
        if (d < best) {
            best = d;
            bs = seg;
            bl = sl;
        }
    }
    return bs != NULL ? hd_strndup(bs, bl) : NULL;
}

/*
 * Walk one object. mparent is the dotted table path of this object ("" at
 * the top), dparent its display path. Only keys that the table knows are
 * descended into, so the recursion depth is bounded by the table.
 */
static void
walk(struct load *ld, json_t *obj, const char *mparent, const char *dparent)
{
    const char *name;
    json_t     *v;

    json_object_foreach(obj, name, v) {
        char *dpath = display_path(dparent, name);
        char *mpath = NULL;
        int   i = -1;

        /* a key with a dot could otherwise pose as a nested path */
        if (strchr(name, '.') == NULL) {
            mpath = *mparent ? hd_asprintf("%s.%s", mparent, name)
                             : hd_strdup(name);
            i = key_index(mpath);
        }
        if (i >= 0) {
            ld->state[i] = keys[i].type->apply(ld, &keys[i], v, dpath) == 0
                         ? ST_OK : ST_BAD;
        } else if (mpath != NULL && is_section(mpath)) {
            if (json_is_object(v)) {
                walk(ld, v, mpath, dpath);
            } else {
                err(ld, dpath, "expected object, got %s", jtype(v));
                mark_section(ld, mpath, ST_BAD);
            }
        } else {
            char *hint = suggest(mparent, name);
            if (hint != NULL)
                err(ld, dpath, "unknown key (did you mean \"%s\"?)", hint);
            else
                err(ld, dpath, "unknown key");
            free(hint);
        }
        free(mpath);
        free(dpath);
    }
}

/* Apply the default of every key the file did not set. */
static void
defaults(struct load *ld)
{
    for (size_t i = 0; i < NKEYS; i++) {
        json_error_t jerr;
        json_t      *v;
        char        *dpath;

        if (ld->state[i] != ST_MISSING || keys[i].def == NULL)
            continue;
        dpath = hd_asprintf("$.%s", keys[i].path);
        v = json_loads(keys[i].def, JSON_DECODE_ANY, &jerr);
        if (v == NULL)
            err(ld, dpath, "bad built-in default: %s", jerr.text);
        else if (keys[i].type->apply(ld, &keys[i], v, dpath) < 0)
            err(ld, dpath, "(the error above is in the built-in default)");
        json_decref(v);
        free(dpath);
    }
}

/* Rules that span keys; each runs only when its keys were valid. */
static void
cross_checks(struct load *ld)
{
    int secret = key_index("auth.hmac_secret");
    int anon = key_index("auth.allow_anonymous");

    if (secret < 0 || anon < 0)     /* renamed rows: the unit tests fail */
        return;
    if (ld->state[secret] != ST_BAD && ld->state[anon] != ST_BAD
        && ld->c->auth_hmac_secret == NULL && !ld->c->auth_allow_anonymous)
        err(ld, "$.auth.hmac_secret",
            "required unless auth.allow_anonymous is true");

    int rmin = key_index("redis.reconnect_min_ms");
    int rmax = key_index("redis.reconnect_max_ms");
    if (rmin >= 0 && rmax >= 0 && ld->state[rmin] != ST_BAD
        && ld->state[rmax] != ST_BAD
        && ld->c->redis_reconnect_min_ms > ld->c->redis_reconnect_max_ms)
        err(ld, "$.redis.reconnect_min_ms",
            "must not be greater than redis.reconnect_max_ms (%d)",
            ld->c->redis_reconnect_max_ms);
}

/* A token safe to quote: punctuation, a short number, or a misspelt literal. */
static bool
harmless_token(const char *t, size_t n)
{
    static const char *const literals[] = { "true", "false", "null" };
    bool                     number = n <= 8;

    if (n <= 1)
        return n == 0 || (t[0] > 0x20 && t[0] < 0x7f);
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789+-.eE", t[i]))
            number = false;
    if (number)
        return true;
    for (size_t i = 0; i < 3; i++)
        if (n <= strlen(literals[i]) && strncasecmp(t, literals[i], n) == 0)
            return true;
    return false;
}

/*
 * jansson's text ends in " near 'TOKEN'" where TOKEN is raw input, which
 * may be (part of) a secret: a string, or a bare word when the quotes were
 * forgotten. Keep only harmless tokens; line:col still points at the spot.
 * The one exception is a duplicate key: the token is the key's name, never
 * a value, and naming it is the useful part of the message.
 */
static char *
syntax_text(const json_error_t *jerr)
{
    const char *text = jerr->text;
    const char *near = strstr(text, " near '");
    const char *tok;
    size_t      tlen;

    if (near == NULL)
        return hd_strdup(text);
    tok = near + 7;
    tlen = strlen(tok);
    if (tlen >= 1 && tok[tlen - 1] == '\'') {
        tlen--;
        if (harmless_token(tok, tlen))
            return hd_strdup(text);
        if (json_error_code(jerr) == json_error_duplicate_key && tlen <= 66) {
            bool printable = true;
            for (size_t i = 0; i < tlen; i++)
                if ((unsigned char) tok[i] < 0x20
                    || (unsigned char) tok[i] >= 0x7f)
                    printable = false;
            if (printable)
                return hd_strdup(text);
        }
    }
    return hd_strndup(text, (size_t) (near - text));
}

int
hd_conf_load_string(const char *name, const char *json, size_t len,
                    hd_conf_t **out, hd_conf_errors_t *errs)
{
    struct load  ld;
    json_error_t jerr;
    json_t      *root = NULL;

    *out = NULL;
    memset(&ld, 0, sizeof(ld));
    ld.name = name != NULL ? name : "<string>";
    ld.errs = errs;
    ld.c = hd_calloc(1, sizeof(*ld.c));
    ld.c->path = hd_strdup(ld.name);

    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        char *t = syntax_text(&jerr);
        ld.nerr++;
        if (jerr.line >= 0)
            errs_push(errs, hd_asprintf("%s:%d:%d: %s", ld.name, jerr.line,
                                        jerr.column, t));
        else
            errs_push(errs, hd_asprintf("%s: %s", ld.name, t));
        free(t);
        goto fail;
    }
    if (!json_is_object(root)) {
        err(&ld, "$", "top level must be an object, got %s", jtype(root));
        goto fail;
    }

    walk(&ld, root, "", "$");
    defaults(&ld);
    cross_checks(&ld);
    if (ld.nerr > 0)
        goto fail;

    json_decref(root);
    *out = ld.c;
    return 0;

fail:
    json_decref(root);
    hd_conf_free(ld.c);
    return -1;
}

/* Read a whole file; returns 0 or -errno. */
static int
read_file(const char *path, char **buf, size_t *len)
{
    size_t  cap = 4096, n = 0;
    char   *b = NULL;
    int     fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    b = hd_malloc(cap);
    for (;;) {
        ssize_t r;
        if (n == cap) {
            if (cap >= CONF_MAX_BYTES) {
                rc = -EFBIG;
                goto fail;
            }
            cap *= 2;
            b = hd_realloc(b, cap);
        }
        r = read(fd, b + n, cap - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto fail;
        }
        if (r == 0)
            break;
        n += (size_t) r;
    }
    close(fd);
    *buf = b;
    *len = n;
    return 0;

fail:
    close(fd);
    free(b);
    return rc;
}

int
hd_conf_load(const char *path, hd_conf_t **out, hd_conf_errors_t *errs)
{
    char   *buf = NULL;
    size_t  len = 0;
    int     rc;

    *out = NULL;
    rc = read_file(path, &buf, &len);
    if (rc < 0) {
        errs_push(errs, hd_asprintf("%s: cannot read: %s", path,
                                    strerror(-rc)));
        return -1;
    }
    rc = hd_conf_load_string(path, buf, len, out, errs);
    explicit_bzero(buf, len);   /* it held the secrets */
    free(buf);
    return rc;
}

void
hd_conf_free(hd_conf_t *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < NKEYS; i++)
        keys[i].type->release(c, &keys[i]);
    free(c->path);
    free(c);
}

void
hd_conf_register_secrets(const hd_conf_t *c)
{
    for (size_t i = 0; i < NKEYS; i++)
        keys[i].type->secrets(c, &keys[i]);
}

/* Walks the table, so a new worker-read key is compared without edits here. */
bool
hd_conf_worker_changed(const hd_conf_t *a, const hd_conf_t *b)
{
    for (size_t i = 0; i < NKEYS; i++)
        if ((keys[i].reload == RELOAD_WORKER
             || keys[i].reload == RELOAD_LISTEN)
            && keys[i].type->differs(a, b, &keys[i]))
            return true;
    return false;
}

bool
hd_conf_listen_changed(const hd_conf_t *a, const hd_conf_t *b)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (keys[i].reload == RELOAD_LISTEN
            && keys[i].type->differs(a, b, &keys[i]))
            return true;
    return false;
}
