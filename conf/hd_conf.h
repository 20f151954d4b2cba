/*
 * Configuration: the schema (one table row per key), the JSON loader and
 * the resolved settings that the master and workers read.
 *
 * Ownership: hd_conf_load() returns a heap object owned by the caller and
 * freed with hd_conf_free(). A worker gets the master's copy through fork()
 * and never frees it. Strings inside are owned by the hd_conf_t.
 */
#ifndef HD_CONF_H
#define HD_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HD_CONF_DEFAULT_PATH "conf/herald.json"
#define HD_WORKERS_MAX       256

/* Defaults of limits.max_connections and limits.connections_per_ip (JSON
 * text for the key table; docs/configuration.md quotes them). */
#define HD_CONF_DEFAULT_MAX_CONNECTIONS "100000"
#define HD_CONF_DEFAULT_CONNS_PER_IP    "1000"
/* What a push adds around a publication's data: {"push":{"channel":...,
 * "pub":{"offset":N,"epoch":"E","data":...}}} with the longest channel
 * name (255) and epoch (32) is under 400 bytes; the rest is headroom. */
#define HD_CONF_PUSH_ENVELOPE           1024

/* Per-namespace options: namespaces.<name> in the file. Channels without a
 * ':' belong to the namespace named "default". */
typedef struct hd_ns {
    char *name;
    bool  publish;         /* clients may publish (default false) */
    bool  anonymous;       /* anonymous clients may subscribe */
    bool  subscribe_token; /* subscribing needs a subscription token */
    bool  subscribe_proxy; /* subscribing asks proxy.subscribe_url */
    int   history_size;    /* publications kept; 0 = no history */
    int   history_ttl_s;   /* seconds history is kept after the last
                                   publish; 0 = no history */
    bool  presence;        /* who is subscribed is kept in Redis */
    bool  join_leave;      /* join/leave pushes to subscribers */
} hd_ns_t;

/* A network of security.trusted_proxies (IPv4 in addr[0..3]). */
typedef struct hd_cidr {
    uint8_t addr[16];
    uint8_t bits;
    bool    v4;
} hd_cidr_t;

/* One listening address: listen (one object) or listen[i] in the file. */
#define HD_LISTEN_MAX 16
typedef struct hd_listen {
    char *address;        /* IP literal, default "0.0.0.0" */
    int   port;           /* default 8080 */
    int   backlog;        /* default 4096, 1..65535 */
    bool  ipv6_only;      /* IPV6_V6ONLY; false: "::" takes IPv4 too */
    bool  proxy_protocol; /* every connection starts with a PROXY header */
} hd_listen_t;

/* One auth.public_keys entry. */
typedef struct hd_conf_pubkey {
    char *kid;  /* NULL: none */
    char *pem;  /* the PEM text (read from file when file is set) */
    char *file; /* pem_file, or NULL */
} hd_conf_pubkey_t;

/*
 * One Redis server (or Sentinel-managed primary) herald talks to: a shard.
 * Without redis.shards there is exactly one, from redis.url or
 * redis.sentinel. Strings are owned by the hd_conf_t.
 */
typedef struct hd_redis_target {
    char *name; /* stable identity: logs, /health, the shard hash */
    char *host; /* fixed tcp address; NULL for unix or Sentinel */
    int   port;
    char *unix_path;
    char *user;     /* ACL user; NULL = the default user */
    char *password; /* NULL = no AUTH */
    int   db;
    /* Sentinel: master_name != NULL; the primary's address is asked for */
    char  *master_name;
    char **sentinel_host;
    int   *sentinel_port;
    size_t nsentinels;
    char  *sentinel_user;
    char  *sentinel_password;
} hd_redis_target_t;

#define HD_REDIS_SHARDS_MAX 64

typedef struct hd_conf {
    char *path; /* file it was loaded from */

    int  workers;      /* resolved: >= 1 (auto -> online CPUs) */
    bool workers_auto; /* "auto" was given */

    hd_listen_t *listens; /* listen: 1..HD_LISTEN_MAX, file order */
    size_t       nlistens;

    char *admin_address; /* default "127.0.0.1" */
    int   admin_port;    /* default 9090; 0 disables the admin server */
    char *admin_token;   /* NULL = no auth */

    char *redis_url; /* default "redis://127.0.0.1:6379" */
    /* parsed from redis_url */
    char *redis_host; /* NULL for unix sockets */
    int   redis_port;
    char *redis_unix_path;               /* NULL for tcp */
    char *redis_password;                /* NULL if none */
    char *redis_user;                    /* NULL = default user */
    int   redis_db;                      /* default 0 */
    int   redis_connect_timeout_ms;      /* redis.connect_timeout_ms, 2000 */
    int   redis_command_timeout_ms;      /* redis.command_timeout_ms, 2000 */
    int   redis_reconnect_min_ms;        /* redis.reconnect_min_ms, 100 */
    int   redis_reconnect_max_ms;        /* redis.reconnect_max_ms, 5000 */
    int   redis_heartbeat_ms;            /* redis.heartbeat_ms, 500 */
    int   redis_wait_replicas;           /* redis.wait_replicas, 0 = no WAIT */
    int   redis_wait_timeout_ms;         /* redis.wait_timeout_ms, 500 */
    hd_redis_target_t *redis_sentinel;   /* redis.sentinel; NULL if none */
    hd_redis_target_t *redis_shard_list; /* redis.shards; NULL if none */
    size_t             nredis_shard_list;
    /* resolved after the load: the shards workers connect to (>= 1) */
    hd_redis_target_t *redis_targets;
    size_t             nredis_targets;

    char *auth_hmac_secret;      /* NULL = none; inline or from the file */
    char *auth_hmac_secret_file; /* auth.hmac_secret_file */
    bool  auth_allow_anonymous;  /* default false */
    hd_conf_pubkey_t *auth_keys; /* auth.public_keys */
    size_t            nauth_keys;
    unsigned          auth_algs;     /* auth.algorithms: HD_JWT_ALG_BIT mask */
    char             *auth_audience; /* auth.audience; NULL: aud not checked */
    char             *auth_issuer;   /* auth.issuer; NULL: iss not checked */
    int               auth_leeway_s; /* auth.leeway_s, 0 */
    int   auth_max_lifetime_s;       /* auth.max_lifetime_s, 0 = unlimited */
    bool  auth_publish_claim;        /* auth.require_publish_claim, false */
    int   auth_refresh_window_s;     /* auth.refresh_window_s, 60 */
    char *auth_jwks_file;            /* auth.jwks_file */
    char *auth_jwks_url;             /* auth.jwks_url (https://) */
    char *auth_jwks_ca_file;         /* auth.jwks_ca_file */
    int   auth_jwks_refresh_s;       /* auth.jwks_refresh_s, 300 */
    int   auth_jwks_min_refresh_s;   /* auth.jwks_min_refresh_s, 10 */
    int   auth_jwks_timeout_ms;      /* auth.jwks_timeout_ms, 5000 */

    char  *api_key;             /* NULL = HTTP API disabled */
    bool   api_expose_ips;      /* api.expose_client_ips, false */
    int    api_list_max;        /* api.list_max, 1000: rows per list reply */
    char  *node_name;           /* cluster.node_name; NULL = hostname */
    int    cluster_hb_ms;       /* cluster.heartbeat_ms, 2000 */
    int    cluster_node_ttl_ms; /* cluster.node_ttl_ms, 10000 */
    int    cluster_timeout_ms;  /* cluster.call_timeout_ms, 2000 */
    int    presence_info_bytes; /* limits.presence_info_bytes, 1024 */
    char  *proxy_connect_url;   /* proxy.connect_url; NULL: off */
    char  *proxy_subscribe_url; /* proxy.subscribe_url; NULL: off */
    int    proxy_timeout_ms;    /* proxy.timeout_ms, 3000 */
    int    proxy_max_requests;  /* proxy.max_requests per worker, 64 */
    int    proxy_max_requests_conn; /* ..._per_connection, 16 */
    char **proxy_headers;           /* proxy.headers: names, NULL-ended */
    size_t nproxy_headers;

    char *api_key_file;        /* api.key_file */
    char *admin_token_file;    /* admin.token_file */
    char *redis_password_file; /* redis.password_file */

    /* non-fatal findings of the load (a secret file readable by others),
     * for the master to log */
    char **warnings;
    size_t nwarnings, cap_warnings;

    int   log_level;            /* enum hd_log_level, default info */
    int   log_format;           /* enum hd_log_format, default auto */
    char *log_file;             /* NULL = stderr */
    bool  log_client_addresses; /* log.client_addresses, default true:
                                   client addresses in per-client lines */

    int shutdown_ms;     /* timeouts.shutdown_ms, default 10000 */
    int drain_health_ms; /* timeouts.drain_health_ms, default 3000: /health
                            fails this long before a graceful stop drains */
    int connect_ms;      /* timeouts.connect_ms, default 10000: time
                                   to send "connect" after the upgrade */
    int handshake_ms;    /* timeouts.handshake_ms, default 5000 */

    /* upgrade.*: the binary upgrade (SIGUSR2), master/hd_upgrade.c */
    char *upgrade_binary;   /* NULL: the path the master was started from */
    int   upgrade_ready_ms; /* new master's workers all READY within */
    int   upgrade_grace_ms; /* then it must stay up this long */
    int   upgrade_drain_ms; /* old workers close their clients over this */

    hd_ns_t *namespaces; /* namespaces.*; sorted by name */
    size_t   nnamespaces;

    int max_subscriptions;       /* limits.subscriptions_per_connection, 128 */
    int recovery_max;            /* limits.recovery_max_publications, 1000 */
    int batch_max_bytes;         /* batch.max_bytes, 65536 */
    int batch_max_messages;      /* batch.max_messages, 256 */
    int batch_flush_delay_ms;    /* batch.flush_delay_ms, 0 */
    int api_max_body_bytes;      /* api.max_body_bytes, 65536 */
    int api_auth_fail_limit;     /* api.auth_fail_limit, 10; 0 = off */
    int api_auth_fail_window_ms; /* api.auth_fail_window_ms, 60000 */
    int api_body_timeout_ms;     /* api.body_timeout_ms, 10000: the whole
                                 body within it of the headers */
    int ping_interval_ms;        /* heartbeat.ping_interval_ms, 25000 */
    int pong_timeout_ms;         /* heartbeat.pong_timeout_ms, 10000 */

    /* limits.*: 0 = unlimited */
    int max_connections; /* node-wide */
    int conns_per_ip;
    int conns_per_user;
    int conns_per_tenant;
    int message_bytes;        /* limits.message_bytes, 65536 */
    int outq_bytes;           /* limits.outbound_queue_bytes, 1 MiB */
    int cmd_rate;             /* limits.commands_per_second, 100 */
    int cmd_burst;            /* limits.commands_burst, 200 */
    int rate_abuse_ms;        /* limits.rate_abuse_ms, 5000 */
    int idempotency_window_s; /* limits.idempotency_window_s, 300 */
    int worker_memory_mb;     /* limits.worker_memory_mb: overload guard, 0 */
    int worker_queue_mb;      /* limits.worker_queue_mb: overload guard, 0 */

    hd_cidr_t *trusted_proxies;  /* security.trusted_proxies */
    size_t     ntrusted_proxies; /* 0: no forwarded header is believed */

    char **allowed_origins;      /* security.allowed_origins; NULL-ended */
    size_t nallowed_origins;     /* 0 = any origin */
    bool   allow_missing_origin; /* security.allow_missing_origin, true */

    bool compression;             /* compression.enabled, false */
    int  compression_window_bits; /* compression.window_bits, 10 */
    int  compression_mem_level;   /* compression.mem_level, 4 */
    int  channel_meta_ttl_s;      /* redis.meta_ttl_s, 86400: how long a
                                       channel's offset/epoch outlive its
                                       last publish or subscribe */
} hd_conf_t;

/* True when origin (the request's Origin header) is on
 * security.allowed_origins (or the list is empty). */
bool hd_conf_origin_allowed(const hd_conf_t *c, const char *origin);

/* The options for namespace ns (len bytes; "" means "default"), or NULL
 * when the namespace is not configured. */
const hd_ns_t *hd_conf_ns(const hd_conf_t *c, const char *ns, size_t len);

/*
 * A growable list of error strings, "FILE: $.path: message" each. Start
 * from a zeroed struct; loads append to it; hd_conf_errors_free() frees
 * the strings and zeroes it again. The loaders accept errs == NULL (the
 * messages are then dropped).
 */
typedef struct hd_conf_errors {
    char **msg;
    size_t n;
    size_t cap;
} hd_conf_errors_t;

void hd_conf_errors_free(hd_conf_errors_t *e);

/*
 * Load and validate path. On success returns 0 and *out; on failure
 * returns -EINVAL (an invalid file) or the -errno of reading it, *out is
 * NULL, and errs holds every error found in one pass
 * (syntax errors as "FILE:LINE:COL: message"; semantic errors as
 * "FILE: $.path.to.key: message"). The file's secrets are not registered
 * with the logger here: call hd_conf_register_secrets() once it is
 * accepted.
 */
int hd_conf_load(const char *path, hd_conf_t **out, hd_conf_errors_t *errs);
/* Load from a string (tests, fuzzing); name is used in messages. 0 or
 * -EINVAL. */
int  hd_conf_load_string(const char *name, const char *json, size_t len,
                         hd_conf_t **out, hd_conf_errors_t *errs);
void hd_conf_free(hd_conf_t *c);

/*
 * Development mode (herald --dev, which ./deploy/dev.sh run uses): only
 * then are the shipped development secrets accepted. Set before loading.
 */
extern bool hd_conf_dev_mode;
/* True for a shipped development secret (or anything "change-me..."). */
bool hd_conf_is_dev_secret(const char *s);

/* Register every secret in c with hd_log_add_secret(). */
void hd_conf_register_secrets(const hd_conf_t *c);

/*
 * True when a running worker cannot adopt b in place of a: the listen
 * address/port/backlog or any setting a worker reads at start changed
 * (everything but workers, admin.*, log.*). The master then replaces
 * workers slot by slot.
 */
bool hd_conf_worker_changed(const hd_conf_t *a, const hd_conf_t *b);
/* True when the listen sockets must be reopened (address, port, backlog). */
bool hd_conf_listen_changed(const hd_conf_t *a, const hd_conf_t *b);

/* True when sa (IPv4, IPv6 or IPv4-mapped IPv6) is in one of
 * security.trusted_proxies. */
struct sockaddr;
bool hd_conf_trusted_proxy(const hd_conf_t *c, const struct sockaddr *sa);

/* True when s is an IPv4 loopback (127.0.0.0/8), ::1 or an IPv4-mapped
 * 127.x address. */
bool hd_conf_addr_is_loopback(const char *s);

/* The number of online CPUs, >= 1 (used for "auto"). */
int hd_conf_online_cpus(void);

/* Descriptors a worker keeps for other things than clients (listen and
 * admin sockets, Redis links, the control pair, the log, epoll, the API's
 * outbound requests): "auto" leaves them out of a worker's share. */
#define HD_WORKER_FD_RESERVE 256
/* The descriptors a worker may hold: the RLIMIT_NOFILE hard limit, which
 * the master raises its soft limit to at start (hd_proc_raise_nofile());
 * /proc/sys/fs/nr_open when the hard limit is unlimited. */
long hd_conf_fd_limit(void);
/*
 * "workers": "auto": one worker per CPU, or more when max_connections (> 0)
 * would not fit in that many workers' descriptors (fd_limit each, less
 * HD_WORKER_FD_RESERVE): enough workers that each holds its share. Clamped
 * to 1..max.
 */
int hd_conf_auto_workers(int cpus, long max_connections, long fd_limit,
                         int max);

#endif
