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
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <jansson.h>

#include "hd_alloc.h"
#include "hd_conf.h"
#include "hd_conf_int.h"
#include "hd_jwt.h"
#include "hd_log.h"

/* A config file is a few hundred bytes; anything past this is a mistake. */
#define CONF_MAX_BYTES (1024 * 1024)
/* Longest value echoed back in an error message. */
#define ECHO_MAX       40

static const struct ktype T_INT, T_BOOL, T_STR, T_ENUM, T_WORKERS;

#define check_ip hd_conf_check_ip
static const char *check_https(const char *s);
static const char *check_http(const char *s);
static const char *check_abs_path(const char *s);

static const char *const log_levels[] = { "error", "warn", "info", "debug",
                                          NULL };
static const char *const log_formats[] = { "auto", "json", "text", NULL };

/* the enum rows store the index into the names array */
_Static_assert(HD_LOG_ERROR == 0 && HD_LOG_WARN == 1 && HD_LOG_INFO == 2
                   && HD_LOG_DEBUG == 3,
               "log_levels[] order");
_Static_assert(HD_LOG_FMT_AUTO == 0 && HD_LOG_FMT_JSON == 1
                   && HD_LOG_FMT_TEXT == 2,
               "log_formats[] order");

/*
 * Row builders, one per type. Bounds: integers are min..max inclusive;
 * strings are min..max bytes long. def is JSON text or NULL.
 */
#define OFF(f) offsetof(hd_conf_t, f)
#define K_INT(p, f, lo, hi, def, rl)                      \
    {                                                     \
        p, &T_INT, lo, hi, def, OFF(f), rl, 0, NULL, NULL \
    }
#define K_BOOL(p, f, def, rl)                            \
    {                                                    \
        p, &T_BOOL, 0, 0, def, OFF(f), rl, 0, NULL, NULL \
    }
#define K_STR(p, f, lo, hi, def, rl, flags, check)             \
    {                                                          \
        p, &T_STR, lo, hi, def, OFF(f), rl, flags, NULL, check \
    }
#define K_ENUM(p, f, names, def, rl)                      \
    {                                                     \
        p, &T_ENUM, 0, 0, def, OFF(f), rl, 0, names, NULL \
    }
#define K_TYPE(p, type, f, lo, hi, def, rl)             \
    {                                                   \
        p, type, lo, hi, def, OFF(f), rl, 0, NULL, NULL \
    }

static const struct key keys[] = {
    K_TYPE("workers", &T_WORKERS, workers, 1, HD_WORKERS_MAX, "\"auto\"",
           RELOAD_MASTER),

    /* one listener object, or an array of 1..HD_LISTEN_MAX of them */
    K_TYPE("listen", &hd_conf_type_listen, listens, 1, HD_LISTEN_MAX, "{}",
           RELOAD_LISTEN),

    K_STR("admin.address", admin_address, 1, 64, "\"127.0.0.1\"", RELOAD_MASTER,
          0, check_ip),
    K_INT("admin.port", admin_port, 0, 65535, "9090", RELOAD_MASTER),
    K_STR("admin.token", admin_token, 16, 1024, NULL, RELOAD_MASTER, F_SECRET,
          NULL),
    K_STR("admin.token_file", admin_token_file, 1, PATH_MAX - 1, NULL,
          RELOAD_MASTER, 0, NULL),

    K_TYPE("redis.url", &hd_conf_type_redis, redis_url, 1, 4096,
           "\"redis://127.0.0.1:6379\"", RELOAD_WORKER),
    K_INT("redis.connect_timeout_ms", redis_connect_timeout_ms, 10, 60000,
          "2000", RELOAD_WORKER),
    K_INT("redis.command_timeout_ms", redis_command_timeout_ms, 10, 60000,
          "2000", RELOAD_WORKER),
    K_INT("redis.reconnect_min_ms", redis_reconnect_min_ms, 1, 60000, "100",
          RELOAD_WORKER),
    K_INT("redis.reconnect_max_ms", redis_reconnect_max_ms, 1, 600000, "5000",
          RELOAD_WORKER),
    K_INT("redis.heartbeat_ms", redis_heartbeat_ms, 50, 60000, "500",
          RELOAD_WORKER),
    K_TYPE("redis.sentinel", &hd_conf_type_redis_sentinel, redis_sentinel, 0, 0,
           NULL, RELOAD_WORKER),
    K_TYPE("redis.shards", &hd_conf_type_redis_shards, redis_shard_list, 0, 0,
           NULL, RELOAD_WORKER),
    K_INT("redis.wait_replicas", redis_wait_replicas, 0, 16, "0",
          RELOAD_WORKER),
    K_INT("redis.wait_timeout_ms", redis_wait_timeout_ms, 1, 60000, "500",
          RELOAD_WORKER),
    K_INT("redis.meta_ttl_s", channel_meta_ttl_s, 60, 31536000, "86400",
          RELOAD_WORKER),
    K_STR("redis.password_file", redis_password_file, 1, PATH_MAX - 1, NULL,
          RELOAD_WORKER, 0, NULL),

    K_STR("auth.hmac_secret", auth_hmac_secret, 32, 4096, NULL, RELOAD_WORKER,
          F_SECRET, NULL),
    K_STR("auth.hmac_secret_file", auth_hmac_secret_file, 1, PATH_MAX - 1, NULL,
          RELOAD_WORKER, 0, NULL),
    K_BOOL("auth.allow_anonymous", auth_allow_anonymous, "false",
           RELOAD_WORKER),
    K_TYPE("auth.public_keys", &hd_conf_type_pubkeys, auth_keys, 0, 64, NULL,
           RELOAD_WORKER),
    K_TYPE("auth.algorithms", &hd_conf_type_algs, auth_algs, 0, 0,
           "[\"HS256\", \"HS384\", \"HS512\", \"RS256\", \"RS384\", "
           "\"RS512\", \"PS256\", \"PS384\", \"PS512\", \"ES256\", "
           "\"ES384\", \"EdDSA\"]",
           RELOAD_WORKER),
    K_STR("auth.audience", auth_audience, 1, 1024, NULL, RELOAD_WORKER, 0,
          NULL),
    K_STR("auth.issuer", auth_issuer, 1, 1024, NULL, RELOAD_WORKER, 0, NULL),
    K_INT("auth.leeway_s", auth_leeway_s, 0, 600, "0", RELOAD_WORKER),
    K_INT("auth.max_lifetime_s", auth_max_lifetime_s, 0, 31536000, "0",
          RELOAD_WORKER),
    K_BOOL("auth.require_publish_claim", auth_publish_claim, "false",
           RELOAD_WORKER),
    K_INT("auth.refresh_window_s", auth_refresh_window_s, 1, 86400, "60",
          RELOAD_WORKER),
    K_STR("auth.jwks_file", auth_jwks_file, 1, PATH_MAX - 1, NULL,
          RELOAD_MASTER, 0, NULL),
    K_STR("auth.jwks_url", auth_jwks_url, 9, 4096, NULL, RELOAD_MASTER, 0,
          check_https),
    K_STR("auth.jwks_ca_file", auth_jwks_ca_file, 1, PATH_MAX - 1, NULL,
          RELOAD_MASTER, 0, NULL),
    K_INT("auth.jwks_refresh_s", auth_jwks_refresh_s, 10, 86400, "300",
          RELOAD_MASTER),
    K_INT("auth.jwks_min_refresh_s", auth_jwks_min_refresh_s, 1, 3600, "10",
          RELOAD_MASTER),
    K_INT("auth.jwks_timeout_ms", auth_jwks_timeout_ms, 100, 60000, "5000",
          RELOAD_MASTER),

    K_STR("proxy.connect_url", proxy_connect_url, 8, 4096, NULL, RELOAD_WORKER,
          0, check_http),
    K_STR("proxy.subscribe_url", proxy_subscribe_url, 8, 4096, NULL,
          RELOAD_WORKER, 0, check_http),
    K_INT("proxy.timeout_ms", proxy_timeout_ms, 50, 60000, "3000",
          RELOAD_WORKER),
    K_INT("proxy.max_requests", proxy_max_requests, 1, 10000, "64",
          RELOAD_WORKER),
    K_INT("proxy.max_requests_per_connection", proxy_max_requests_conn, 1,
          10000, "16", RELOAD_WORKER),
    K_TYPE("proxy.headers", &hd_conf_type_headers, proxy_headers, 0, 32,
           "[\"cookie\", \"authorization\"]", RELOAD_WORKER),

    K_STR("api.key", api_key, 16, 1024, NULL, RELOAD_WORKER, F_SECRET, NULL),
    K_BOOL("api.expose_client_ips", api_expose_ips, "false", RELOAD_WORKER),
    K_INT("api.list_max", api_list_max, 1, 100000, "1000", RELOAD_WORKER),

    K_STR("cluster.node_name", node_name, 1, 64, NULL, RELOAD_WORKER, 0, NULL),
    K_INT("cluster.heartbeat_ms", cluster_hb_ms, 100, 60000, "2000",
          RELOAD_WORKER),
    K_INT("cluster.node_ttl_ms", cluster_node_ttl_ms, 300, 600000, "10000",
          RELOAD_WORKER),
    K_INT("cluster.call_timeout_ms", cluster_timeout_ms, 50, 60000, "2000",
          RELOAD_WORKER),
    K_INT("limits.presence_info_bytes", presence_info_bytes, 0, 65536, "1024",
          RELOAD_WORKER),
    K_STR("api.key_file", api_key_file, 1, PATH_MAX - 1, NULL, RELOAD_WORKER, 0,
          NULL),

    K_ENUM("log.level", log_level, log_levels, "\"info\"", RELOAD_MASTER),
    K_ENUM("log.format", log_format, log_formats, "\"auto\"", RELOAD_MASTER),
    K_STR("log.file", log_file, 1, PATH_MAX - 1, NULL, RELOAD_MASTER, 0, NULL),
    K_BOOL("log.client_addresses", log_client_addresses, "true", RELOAD_WORKER),

    K_INT("timeouts.shutdown_ms", shutdown_ms, 100, 600000, "10000",
          RELOAD_WORKER),
    K_STR("upgrade.binary", upgrade_binary, 1, PATH_MAX - 1, NULL,
          RELOAD_MASTER, 0, check_abs_path),
    K_INT("upgrade.ready_timeout_ms", upgrade_ready_ms, 1000, 600000, "30000",
          RELOAD_MASTER),
    K_INT("upgrade.grace_ms", upgrade_grace_ms, 0, 60000, "1000",
          RELOAD_MASTER),
    K_INT("upgrade.drain_ms", upgrade_drain_ms, 0, 600000, "10000",
          RELOAD_MASTER),
    K_INT("timeouts.drain_health_ms", drain_health_ms, 0, 600000, "3000",
          RELOAD_MASTER),
    K_INT("timeouts.handshake_ms", handshake_ms, 100, 120000, "5000",
          RELOAD_WORKER),
    K_INT("timeouts.connect_ms", connect_ms, 100, 600000, "10000",
          RELOAD_WORKER),

    K_INT("limits.subscriptions_per_connection", max_subscriptions, 1, 65535,
          "128", RELOAD_WORKER),
    K_INT("limits.recovery_max_publications", recovery_max, 1, 100000, "1000",
          RELOAD_WORKER),
    K_INT("batch.max_bytes", batch_max_bytes, 1024, 16777216, "65536",
          RELOAD_WORKER),
    K_INT("batch.max_messages", batch_max_messages, 1, 65536, "256",
          RELOAD_WORKER),
    K_INT("batch.flush_delay_ms", batch_flush_delay_ms, 0, 1000, "0",
          RELOAD_WORKER),
    K_INT("api.max_body_bytes", api_max_body_bytes, 256, 16777216, "65536",
          RELOAD_WORKER),
    K_INT("api.body_timeout_ms", api_body_timeout_ms, 100, 600000, "10000",
          RELOAD_WORKER),
    /* wrong API keys per client address and worker before 429 (0: off) */
    K_INT("api.auth_fail_limit", api_auth_fail_limit, 0, 1000000, "10",
          RELOAD_WORKER),
    K_INT("api.auth_fail_window_ms", api_auth_fail_window_ms, 1000, 86400000,
          "60000", RELOAD_WORKER),
    K_INT("heartbeat.ping_interval_ms", ping_interval_ms, 1000, 3600000,
          "25000", RELOAD_WORKER),

    K_INT("heartbeat.pong_timeout_ms", pong_timeout_ms, 1000, 3600000, "10000",
          RELOAD_WORKER),

    /* non-zero by default: on a default install one address must not be
     * able to open unlimited connections (and Redis subscriptions) */
    K_INT("limits.max_connections", max_connections, 0, 16777215,
          HD_CONF_DEFAULT_MAX_CONNECTIONS, RELOAD_WORKER),
    K_INT("limits.connections_per_ip", conns_per_ip, 0, 16777215,
          HD_CONF_DEFAULT_CONNS_PER_IP, RELOAD_WORKER),
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
    K_INT("limits.commands_burst", cmd_burst, 1, 1000000, "200", RELOAD_WORKER),
    K_INT("limits.rate_abuse_ms", rate_abuse_ms, 100, 600000, "5000",
          RELOAD_WORKER),
    K_INT("limits.worker_memory_mb", worker_memory_mb, 0, 1048576, "0",
          RELOAD_WORKER),
    K_INT("limits.idempotency_window_s", idempotency_window_s, 1, 86400, "300",
          RELOAD_WORKER),
    K_INT("limits.worker_queue_mb", worker_queue_mb, 0, 1048576, "0",
          RELOAD_WORKER),

    K_TYPE("security.allowed_origins", &hd_conf_type_origins, allowed_origins,
           0, 256, "[]", RELOAD_WORKER),
    K_BOOL("security.allow_missing_origin", allow_missing_origin, "true",
           RELOAD_WORKER),
    /* peers whose X-Forwarded-For / X-Real-IP are believed */
    K_TYPE("security.trusted_proxies", &hd_conf_type_trusted, trusted_proxies,
           0, 256, "[]", RELOAD_WORKER),

    K_BOOL("compression.enabled", compression, "false", RELOAD_WORKER),
    K_INT("compression.window_bits", compression_window_bits, 9, 15, "10",
          RELOAD_WORKER),
    K_INT("compression.mem_level", compression_mem_level, 1, 9, "4",
          RELOAD_WORKER),

    K_TYPE("namespaces", &hd_conf_type_namespaces, namespaces, 0, 0,
           "{\"default\": {}}", RELOAD_WORKER),
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

enum {
    ST_MISSING = 0,
    ST_OK,
    ST_BAD
};

/* State of one load pass. */
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
void
hd_conf_err(struct load *ld, const char *dpath, const char *fmt, ...)
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
char *
hd_conf_echo(const char *s)
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

const char *
hd_conf_jtype(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "real";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

/* ---- integers and booleans --------------------------------------------- */

static int
apply_int(struct load *ld, const struct key *k, json_t *v, const char *dpath)
{
    json_int_t n;

    if (!json_is_integer(v)) {
        hd_conf_err(ld, dpath, "expected integer, got %s", hd_conf_jtype(v));
        return -EINVAL;
    }
    n = json_integer_value(v);
    if (n < k->min || n > k->max) {
        hd_conf_err(ld, dpath, "must be between %lld and %lld, got %lld",
                    k->min, k->max, (long long) n);
        return -EINVAL;
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
        hd_conf_err(ld, dpath, "expected boolean, got %s", hd_conf_jtype(v));
        return -EINVAL;
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
        hd_conf_err(ld, dpath, "expected string, got %s", hd_conf_jtype(v));
        return -EINVAL;
    }
    s = json_string_value(v);
    len = json_string_length(v);
    if ((long long) len < k->min) {
        if (k->min == 1)
            hd_conf_err(ld, dpath, "must not be empty");
        else
            hd_conf_err(ld, dpath, "must be at least %lld bytes long", k->min);
        return -EINVAL;
    }
    if ((long long) len > k->max) {
        hd_conf_err(ld, dpath, "must be at most %lld bytes long", k->max);
        return -EINVAL;
    }
    if (k->check != NULL && (why = k->check(s)) != NULL) {
        if (k->flags & F_SECRET) {
            hd_conf_err(ld, dpath, "%s", why);
        } else {
            char *q = hd_conf_echo(s);
            hd_conf_err(ld, dpath, "%s, got %s", why, q);
            free(q);
        }
        return -EINVAL;
    }
    release_str(ld->c, k);
    *f = hd_strdup(s);
    return 0;
}

bool
hd_conf_str_differs(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a != b;
    return strcmp(a, b) != 0;
}

static bool
differs_str(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    return hd_conf_str_differs(*CFIELD(a, k, char *), *CFIELD(b, k, char *));
}

static void
secrets_str(const hd_conf_t *c, const struct key *k)
{
    const char *s = *CFIELD(c, k, char *);

    if ((k->flags & F_SECRET) && s != NULL)
        hd_log_add_secret(s);
}

const char *
hd_conf_check_ip(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];

    if (inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1)
        return NULL;
    return "must be an IPv4 or IPv6 address literal";
}

/* JWKS come over TLS only; http:// only for a loopback test server is
 * still refused: the tests run their own CA. */
static const char *
check_https(const char *s)
{
    if (strncmp(s, "https://", 8) != 0 || s[8] == '\0')
        return "must be an https:// URL";
    return NULL;
}

/* A binary to execute: never looked up in PATH. */
static const char *
check_abs_path(const char *s)
{
    if (s[0] != '/')
        return "must be an absolute path";
    return NULL;
}

/* The application's backend: usually on the same host or network. */
static const char *
check_http(const char *s)
{
    if ((strncmp(s, "http://", 7) != 0 || s[7] == '\0')
        && (strncmp(s, "https://", 8) != 0 || s[8] == '\0'))
        return "must be an http:// or https:// URL";
    return NULL;
}

/* ---- enums ------------------------------------------------------------- */

static int
apply_enum(struct load *ld, const struct key *k, json_t *v, const char *dpath)
{
    char  *list, *q;
    size_t i;

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
        q = hd_conf_echo(json_string_value(v));
        hd_conf_err(ld, dpath, "must be one of %s; got %s", list, q);
        free(q);
    } else {
        hd_conf_err(ld, dpath, "expected string (one of %s), got %s", list,
                    hd_conf_jtype(v));
    }
    free(list);
    return -EINVAL;
}

/* ---- workers: "auto" or a count ---------------------------------------- */

/* "auto" before limits.max_connections is known: one worker per online
 * CPU, clamped to 1..max (cross_checks() adds the descriptors' share). */
static int
auto_workers(int cpus, int max)
{
    if (cpus < 1)
        return 1;
    return cpus < max ? cpus : max;
}

int
hd_conf_auto_workers(int cpus, long max_connections, long fd_limit, int max)
{
    long n = auto_workers(cpus, max);

    if (max_connections > 0 && fd_limit > 0) {
        /* a limit below the reserve still holds a few clients each */
        long per = fd_limit > 2 * HD_WORKER_FD_RESERVE
            ? fd_limit - HD_WORKER_FD_RESERVE
            : fd_limit / 2 + 1;
        long need = (max_connections + per - 1) / per;

        if (need > n)
            n = need;
    }
    return n < max ? (int) n : max;
}

long
hd_conf_fd_limit(void)
{
    struct rlimit rl;
    long          n = 0;
    FILE         *f;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY)
        return rl.rlim_max < (rlim_t) LONG_MAX ? (long) rl.rlim_max : LONG_MAX;
    /* unlimited: the kernel still caps a process at fs.nr_open */
    f = fopen("/proc/sys/fs/nr_open", "re");
    if (f != NULL) {
        if (fscanf(f, "%ld", &n) != 1)
            n = 0;
        fclose(f);
    }
    return n > 0 ? n : 1048576;
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
            hd_conf_err(ld, dpath,
                        "must be \"auto\" or between %lld and %lld, "
                        "got %lld",
                        k->min, k->max, (long long) w);
            return -EINVAL;
        }
        ld->c->workers = (int) w;
        ld->c->workers_auto = false;
        return 0;
    }
    if (json_is_string(v)) {
        char *q = hd_conf_echo(json_string_value(v));
        hd_conf_err(ld, dpath,
                    "must be \"auto\" or an integer between %lld and %lld, "
                    "got %s",
                    k->min, k->max, q);
        free(q);
    } else {
        hd_conf_err(ld, dpath, "expected \"auto\" or integer, got %s",
                    hd_conf_jtype(v));
    }
    return -EINVAL;
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

/* ---- the types --------------------------------------------------------- */

static void
release_none(hd_conf_t *c, const struct key *k)
{
    (void) c;
    (void) k;
}

void
hd_conf_secrets_none(const hd_conf_t *c, const struct key *k)
{
    (void) c;
    (void) k;
}

static const struct ktype T_INT = { apply_int, differs_int, release_none,
                                    hd_conf_secrets_none };
static const struct ktype T_BOOL = { apply_bool, differs_bool, release_none,
                                     hd_conf_secrets_none };
static const struct ktype T_STR = { apply_str, differs_str, release_str,
                                    secrets_str };
static const struct ktype T_ENUM = { apply_enum, differs_int, release_none,
                                     hd_conf_secrets_none };
static const struct ktype T_WORKERS = { apply_workers, differs_workers,
                                        release_none, hd_conf_secrets_none };

/* ---- the walk ---------------------------------------------------------- */

static int
key_index(const char *path)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].path, path) == 0)
            return (int) i;
    return -1; /* "no such key": an index sentinel, not an error */
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
char *
hd_conf_display_path(const char *dparent, const char *key)
{
    char *q, *d;

    if (plain_key(key))
        return hd_asprintf("%s.%s", dparent, key);
    q = hd_conf_echo(key);
    d = hd_asprintf("%s[%s]", dparent, q);
    free(q);
    return d;
}

/* Edit distance, capped: a-b longer than 32 bytes are simply "far". */
size_t
hd_conf_distance(const char *a, size_t la, const char *b, size_t lb)
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
        d = hd_conf_distance(name, nlen, seg, sl);
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

    json_object_foreach(obj, name, v)
    {
        char *dpath = hd_conf_display_path(dparent, name);
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
                ? ST_OK
                : ST_BAD;
        } else if (mpath != NULL && is_section(mpath)) {
            if (json_is_object(v)) {
                walk(ld, v, mpath, dpath);
            } else {
                hd_conf_err(ld, dpath, "expected object, got %s",
                            hd_conf_jtype(v));
                mark_section(ld, mpath, ST_BAD);
            }
        } else {
            char *hint = suggest(mparent, name);
            if (hint != NULL)
                hd_conf_err(ld, dpath, "unknown key (did you mean \"%s\"?)",
                            hint);
            else
                hd_conf_err(ld, dpath, "unknown key");
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
            hd_conf_err(ld, dpath, "bad built-in default: %s", jerr.text);
        else if (keys[i].type->apply(ld, &keys[i], v, dpath) < 0)
            hd_conf_err(ld, dpath,
                        "(the error above is in the built-in default)");
        json_decref(v);
        free(dpath);
    }
}

/* True when every key named (NULL-ended) was set validly or defaulted. */
static bool
keys_good(const struct load *ld, ...)
{
    va_list     ap;
    const char *p;
    bool        good = true;

    va_start(ap, ld);
    while ((p = va_arg(ap, const char *)) != NULL) {
        int i = key_index(p);
        if (i < 0 || ld->state[i] == ST_BAD)
            good = false;
    }
    va_end(ap);
    return good;
}

/*
 * One publication larger than the outbound queue closes every subscriber
 * of its channel as a slow consumer, however fast they read: the queue
 * must hold the largest push a client (limits.message_bytes) or the HTTP
 * API (api.max_body_bytes) can cause, plus its envelope.
 */
static void
check_outq(struct load *ld)
{
    long long need;
    int       big;

    if (!keys_good(ld, "limits.outbound_queue_bytes", "limits.message_bytes",
                   "api.max_body_bytes", NULL))
        return;
    big = ld->c->message_bytes > ld->c->api_max_body_bytes
        ? ld->c->message_bytes
        : ld->c->api_max_body_bytes;
    need = (long long) big + HD_CONF_PUSH_ENVELOPE;
    if (ld->c->outq_bytes < need)
        hd_conf_err(ld, "$.limits.outbound_queue_bytes",
                    "must be at least %lld (the largest publication: "
                    "limits.message_bytes %d, api.max_body_bytes %d, plus "
                    "%d bytes of envelope), got %d; a publication that "
                    "large would close every subscriber as a slow consumer",
                    need, ld->c->message_bytes, ld->c->api_max_body_bytes,
                    HD_CONF_PUSH_ENVELOPE, ld->c->outq_bytes);
}

/* The admin server answers /metrics, /stats and /health (and whatever
 * admin commands come later): off loopback it needs a token. */
static void
check_admin(struct load *ld)
{
    if (!keys_good(ld, "admin.address", "admin.port", "admin.token",
                   "admin.token_file", NULL))
        return;
    if (ld->c->admin_port == 0 || ld->c->admin_token != NULL
        || ld->c->admin_address == NULL
        || hd_conf_addr_is_loopback(ld->c->admin_address))
        return;
    char *q = hd_conf_echo(ld->c->admin_address);
    hd_conf_err(ld, "$.admin.token",
                "required (admin.token or admin.token_file) when "
                "admin.address (%s) is not a loopback address",
                q);
    free(q);
}

bool
hd_conf_addr_is_loopback(const char *s)
{
    struct in_addr  a4;
    struct in6_addr a6;

    if (inet_pton(AF_INET, s, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, s, &a6) != 1)
        return false;
    if (IN6_IS_ADDR_LOOPBACK(&a6))
        return true;
    return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
}

/*
 * The "X_file" rows and the secret each fills. Resolved after the walk, so
 * that the secret's own checks (length, dev secret) see the file's value.
 */
static const struct {
    const char *file, *key;
} secret_files[] = {
    { "auth.hmac_secret_file", "auth.hmac_secret" },
    { "api.key_file", "api.key" },
    { "admin.token_file", "admin.token" },
};

static void
resolve_secrets(struct load *ld)
{
    for (size_t i = 0; i < sizeof(secret_files) / sizeof(secret_files[0]);
         i++) {
        int f = key_index(secret_files[i].file);
        int k = key_index(secret_files[i].key);
        if (f < 0 || k < 0 || ld->state[f] != ST_OK || ld->state[k] == ST_BAD)
            continue;
        hd_conf_secret_file(ld, &keys[k], &keys[f],
                            *FIELD(ld->c, &keys[k], char *) != NULL);
    }
    /* the Redis password lives in redis.url; its file overrides none */
    int rf = key_index("redis.password_file");
    if (rf >= 0 && ld->state[rf] == ST_OK) {
        static const struct key pw = { "redis.password",
                                       NULL,
                                       1,
                                       4096,
                                       NULL,
                                       offsetof(hd_conf_t, redis_password),
                                       RELOAD_WORKER,
                                       F_SECRET,
                                       NULL,
                                       NULL };
        hd_conf_secret_file(ld, &pw, &keys[rf], ld->c->redis_password != NULL);
    }
    for (size_t i = 0; i < NKEYS; i++)
        if (ld->state[i] != ST_BAD && keys[i].type == &T_STR)
            hd_conf_dev_secret_check(ld, &keys[i]);
}

/* Rules that span keys; each runs only when its keys were valid. */
static void
cross_checks(struct load *ld)
{
    int secret = key_index("auth.hmac_secret");
    int anon = key_index("auth.allow_anonymous");

    if (secret < 0 || anon < 0) /* renamed rows: the unit tests fail */
        return;
    resolve_secrets(ld);
    /* "auto" also counts descriptors: max_connections is read after
     * workers, so the CPU count set by apply_workers() is raised here */
    if (ld->c->workers_auto)
        ld->c->workers = hd_conf_auto_workers(
            hd_conf_online_cpus(), (long) ld->c->max_connections,
            hd_conf_fd_limit(), HD_WORKERS_MAX);
    if (ld->state[secret] != ST_BAD && ld->state[anon] != ST_BAD
        && ld->c->auth_hmac_secret == NULL && ld->c->nauth_keys == 0
        && ld->c->auth_jwks_file == NULL && ld->c->auth_jwks_url == NULL
        && ld->c->proxy_connect_url == NULL && !ld->c->auth_allow_anonymous)
        hd_conf_err(ld, "$.auth.hmac_secret",
                    "a key is required (hmac_secret, hmac_secret_file, "
                    "public_keys, jwks_file or jwks_url) unless "
                    "auth.allow_anonymous is true or proxy.connect_url is "
                    "set");
    /* the master reads these later, from whatever directory it runs in */
    char **rel[] = { &ld->c->auth_jwks_file, &ld->c->auth_jwks_ca_file };
    for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
        if (*rel[i] != NULL) {
            char *p = hd_conf_rel_path(ld, *rel[i]);
            free(*rel[i]);
            *rel[i] = p;
        }
    }
    if (ld->c->auth_jwks_file != NULL && ld->c->auth_jwks_url != NULL)
        hd_conf_err(ld, "$.auth.jwks_url",
                    "give either auth.jwks_file or auth.jwks_url, not both");
    if (ld->c->auth_jwks_ca_file != NULL && ld->c->auth_jwks_url == NULL)
        hd_conf_err(ld, "$.auth.jwks_ca_file", "needs auth.jwks_url");

    int rmin = key_index("redis.reconnect_min_ms");
    int rmax = key_index("redis.reconnect_max_ms");
    if (rmin >= 0 && rmax >= 0 && ld->state[rmin] != ST_BAD
        && ld->state[rmax] != ST_BAD
        && ld->c->redis_reconnect_min_ms > ld->c->redis_reconnect_max_ms)
        hd_conf_err(ld, "$.redis.reconnect_min_ms",
                    "must not be greater than redis.reconnect_max_ms (%d)",
                    ld->c->redis_reconnect_max_ms);

    check_outq(ld);
    check_admin(ld);

    /* a node must beat at least twice per ttl, or a live node blinks out
     * of the registry between two beats */
    int hb = key_index("cluster.heartbeat_ms");
    int nt = key_index("cluster.node_ttl_ms");
    if (hb >= 0 && nt >= 0 && ld->state[hb] != ST_BAD && ld->state[nt] != ST_BAD
        && ld->c->cluster_node_ttl_ms < 2 * ld->c->cluster_hb_ms)
        hd_conf_err(ld, "$.cluster.node_ttl_ms",
                    "must be at least twice cluster.heartbeat_ms (%d)",
                    ld->c->cluster_hb_ms);

    int url = key_index("redis.url");
    if (url >= 0)
        hd_conf_redis_resolve(ld, ld->state[url] == ST_OK,
                              ld->state[url] != ST_BAD);
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
    struct load   ld;
    unsigned char state[NKEYS];
    json_error_t  jerr;
    json_t       *root = NULL;

    *out = NULL;
    memset(&ld, 0, sizeof(ld));
    memset(state, 0, sizeof(state));
    ld.state = state;
    ld.name = name != NULL ? name : "<string>";
    ld.errs = errs;
    ld.c = hd_calloc(1, sizeof(*ld.c));
    ld.c->path = hd_strdup(ld.name);

    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        char *t = syntax_text(&jerr);
        ld.nerr++;
        if (jerr.line >= 0)
            errs_push(errs,
                      hd_asprintf("%s:%d:%d: %s", ld.name, jerr.line,
                                  jerr.column, t));
        else
            errs_push(errs, hd_asprintf("%s: %s", ld.name, t));
        free(t);
        goto fail;
    }
    if (!json_is_object(root)) {
        hd_conf_err(&ld, "$", "top level must be an object, got %s",
                    hd_conf_jtype(root));
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
    return -EINVAL;
}

/* Read a whole file; returns 0 or -errno. */
static int
read_file(const char *path, char **buf, size_t *len)
{
    size_t cap = 4096, n = 0;
    char  *b = NULL;
    int    fd, rc;

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

/* A config file that holds secrets inline should be readable by herald
 * and its operators only. */
static void
warn_readable(const char *path, hd_conf_t *c)
{
    struct stat st;
    bool        inline_secret = false;

    for (size_t i = 0; i < sizeof(secret_files) / sizeof(secret_files[0]);
         i++) {
        int f = key_index(secret_files[i].file);
        int k = key_index(secret_files[i].key);
        if (f >= 0 && k >= 0 && *FIELD(c, &keys[k], char *) != NULL
            && *FIELD(c, &keys[f], char *) == NULL)
            inline_secret = true;
    }
    if (c->redis_password != NULL && c->redis_password_file == NULL)
        inline_secret = true;
    if (inline_secret && stat(path, &st) == 0 && (st.st_mode & S_IROTH))
        hd_conf_warn(c,
                     "%s holds secrets and is readable by other users "
                     "(chmod 640, or move the secrets to ..._file keys)",
                     path);
}

int
hd_conf_load(const char *path, hd_conf_t **out, hd_conf_errors_t *errs)
{
    char  *buf = NULL;
    size_t len = 0;
    int    rc;

    *out = NULL;
    rc = read_file(path, &buf, &len);
    if (rc < 0) {
        errs_push(errs,
                  hd_asprintf("%s: cannot read: %s", path, strerror(-rc)));
        return rc;
    }
    rc = hd_conf_load_string(path, buf, len, out, errs);
    explicit_bzero(buf, len); /* it held the secrets */
    free(buf);
    if (rc == 0)
        warn_readable(path, *out);
    return rc;
}

void
hd_conf_free(hd_conf_t *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < NKEYS; i++)
        keys[i].type->release(c, &keys[i]);
    for (size_t i = 0; i < c->nwarnings; i++)
        free(c->warnings[i]);
    free(c->warnings);
    hd_conf_redis_targets_free(c);
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
        if ((keys[i].reload == RELOAD_WORKER || keys[i].reload == RELOAD_LISTEN)
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
