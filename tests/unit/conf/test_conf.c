/*
 * Unit tests for the config loader. The .c is included so the tests can
 * walk the key table itself (keys[], struct key): a key added later is
 * then covered by the reload and docs tests without editing them.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../../conf/hd_conf.c"

#ifndef HD_SOURCE_ROOT
#error "build with -DHD_SOURCE_ROOT=\"/path/to/herald\""
#endif
#ifndef HD_CONF_TEST_DIR
#error "build with -DHD_CONF_TEST_DIR=\"/path/to/tests/unit/conf\""
#endif

#define SECRET "test-hmac-secret-0123456789abcdef-xyz"
#define AUTH   "\"auth\": {\"hmac_secret\": \"" SECRET "\"}"

/* ---- helpers ----------------------------------------------------------- */

static int
load(const char *json, hd_conf_t **c, hd_conf_errors_t *e)
{
    memset(e, 0, sizeof(*e));
    return hd_conf_load_string("t.json", json, strlen(json), c, e);
}

/* Load json, which must be valid; returns the config. */
static hd_conf_t *
load_ok(const char *json)
{
    hd_conf_errors_t e;
    hd_conf_t       *c = NULL;
    int              rc = load(json, &c, &e);

    ck_assert_msg(rc == 0, "load failed for %s: %s", json,
                  e.n ? e.msg[0] : "(no message)");
    ck_assert_uint_eq(e.n, 0);
    ck_assert_ptr_nonnull(c);
    hd_conf_errors_free(&e);
    return c;
}

/* Load json, which must fail with exactly one error, equal to want. */
static void
expect_error(const char *json, const char *want)
{
    hd_conf_errors_t e;
    hd_conf_t       *c = (hd_conf_t *) 1;
    int              rc = load(json, &c, &e);

    ck_assert_msg(rc == -EINVAL, "load succeeded for %s", json);
    ck_assert_ptr_null(c);
    ck_assert_msg(e.n == 1, "%s: want 1 error, got %zu (first: %s)", json, e.n,
                  e.n ? e.msg[0] : "-");
    ck_assert_str_eq(e.msg[0], want);
    hd_conf_errors_free(&e);
}

static bool
any_contains(const hd_conf_errors_t *e, const char *needle)
{
    for (size_t i = 0; i < e->n; i++)
        if (strstr(e->msg[i], needle) != NULL)
            return true;
    return false;
}

static char *
read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long  n;

    ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = hd_malloc((size_t) n + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t) n, f), (size_t) n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* ---- defaults and every key -------------------------------------------- */

START_TEST(test_defaults)
{
    hd_conf_t *c = load_ok("{" AUTH "}");
    int        cpus = hd_conf_online_cpus();

    ck_assert_str_eq(c->path, "t.json");
    ck_assert(c->workers_auto);
    ck_assert_int_eq(
        c->workers,
        hd_conf_auto_workers(cpus, 100000, hd_conf_fd_limit(), HD_WORKERS_MAX));
    ck_assert_str_eq(c->listens[0].address, "0.0.0.0");
    ck_assert_int_eq(c->listens[0].port, 8080);
    ck_assert_int_eq(c->listens[0].backlog, 4096);
    ck_assert_str_eq(c->admin_address, "127.0.0.1");
    ck_assert_int_eq(c->admin_port, 9090);
    ck_assert_ptr_null(c->admin_token);
    ck_assert_str_eq(c->redis_url, "redis://127.0.0.1:6379");
    ck_assert_str_eq(c->redis_host, "127.0.0.1");
    ck_assert_int_eq(c->redis_port, 6379);
    ck_assert_ptr_null(c->redis_unix_path);
    ck_assert_ptr_null(c->redis_password);
    ck_assert_int_eq(c->redis_db, 0);
    ck_assert_str_eq(c->auth_hmac_secret, SECRET);
    ck_assert(!c->auth_allow_anonymous);
    ck_assert_ptr_null(c->api_key);
    ck_assert_int_eq(c->log_level, HD_LOG_INFO);
    ck_assert_int_eq(c->log_format, HD_LOG_FMT_AUTO);
    ck_assert_ptr_null(c->log_file);
    ck_assert_int_eq(c->shutdown_ms, 10000);
    ck_assert_int_eq(c->handshake_ms, 5000);
    /* safe by default: one address cannot take the node (#16 item 12) */
    ck_assert_int_eq(c->max_connections, 100000);
    ck_assert_int_eq(c->conns_per_ip, 1000);
    ck_assert_int_eq(c->conns_per_user, 0);
    hd_conf_free(c);
}
END_TEST

START_TEST(test_every_key)
{
    hd_conf_errors_t e = { 0 };
    hd_conf_t       *c = NULL;
    const char      *path = HD_CONF_TEST_DIR "/full.json";

    ck_assert_int_eq(hd_conf_load(path, &c, &e), 0);
    ck_assert_uint_eq(e.n, 0);
    ck_assert_str_eq(c->path, path);
    ck_assert(!c->workers_auto);
    ck_assert_int_eq(c->workers, 3);
    ck_assert_str_eq(c->listens[0].address, "::");
    ck_assert_int_eq(c->listens[0].port, 8443);
    ck_assert_int_eq(c->listens[0].backlog, 128);
    ck_assert_str_eq(c->admin_address, "::1");
    ck_assert_int_eq(c->admin_port, 0);
    ck_assert_str_eq(c->admin_token, "admin-token-0123456789");
    ck_assert_str_eq(c->upgrade_binary, "/usr/sbin/herald");
    ck_assert_str_eq(c->redis_url, "redis://redis.example:6380/2");
    ck_assert_str_eq(c->redis_host, "redis.example");
    ck_assert_int_eq(c->redis_port, 6380);
    ck_assert_str_eq(c->redis_password, "full-pass-xyz");
    ck_assert_int_eq(c->redis_db, 2);
    ck_assert_ptr_null(c->redis_unix_path);
    ck_assert_str_eq(c->auth_hmac_secret,
                     "full-hmac-secret-0123456789abcdef-0123");
    ck_assert(c->auth_allow_anonymous);
    ck_assert_str_eq(c->api_key, "full-api-key-0123456789");
    ck_assert_uint_eq(c->nauth_keys, 1);
    ck_assert_str_eq(c->auth_keys[0].kid, "ec1");
    ck_assert(strstr(c->auth_keys[0].pem, "BEGIN PUBLIC KEY") != NULL);
    ck_assert_uint_eq(c->auth_algs,
                      HD_JWT_ALG_BIT(HD_JWT_HS256)
                          | HD_JWT_ALG_BIT(HD_JWT_ES256));
    ck_assert_str_eq(c->auth_audience, "herald-test");
    ck_assert_str_eq(c->auth_issuer, "https://idp.example");
    ck_assert_int_eq(c->auth_leeway_s, 5);
    ck_assert_int_eq(c->auth_max_lifetime_s, 86400);
    ck_assert(c->auth_publish_claim);
    ck_assert_int_eq(c->auth_refresh_window_s, 30);
    ck_assert_ptr_null(c->auth_jwks_file);
    ck_assert_str_eq(c->auth_jwks_url,
                     "https://idp.example/.well-known/jwks.json");
    ck_assert_int_eq(c->auth_jwks_refresh_s, 600);
    ck_assert_int_eq(c->auth_jwks_min_refresh_s, 20);
    ck_assert_int_eq(c->auth_jwks_timeout_ms, 3000);
    ck_assert_int_eq(c->log_level, HD_LOG_DEBUG);
    ck_assert_int_eq(c->log_format, HD_LOG_FMT_JSON);
    ck_assert_str_eq(c->log_file, "/var/log/herald.log");
    ck_assert_int_eq(c->shutdown_ms, 100);
    ck_assert_int_eq(c->handshake_ms, 120000);
    ck_assert_int_eq(c->connect_ms, 3000);
    ck_assert_int_eq(c->redis_connect_timeout_ms, 1500);
    ck_assert_int_eq(c->redis_command_timeout_ms, 2500);
    ck_assert_int_eq(c->redis_reconnect_min_ms, 50);
    ck_assert_int_eq(c->redis_reconnect_max_ms, 8000);
    ck_assert_int_eq(c->redis_heartbeat_ms, 700);
    ck_assert_int_eq(c->channel_meta_ttl_s, 3600);
    ck_assert_int_eq(c->max_subscriptions, 16);
    ck_assert_int_eq(c->recovery_max, 500);
    ck_assert_int_eq(c->batch_max_bytes, 8192);
    ck_assert_int_eq(c->batch_max_messages, 32);
    ck_assert_int_eq(c->batch_flush_delay_ms, 5);
    ck_assert_int_eq(c->api_max_body_bytes, 4096);
    ck_assert_int_eq(c->api_body_timeout_ms, 2500);
    ck_assert_int_eq(c->api_auth_fail_limit, 3);
    ck_assert_int_eq(c->api_auth_fail_window_ms, 5000);
    ck_assert_int_eq(c->ping_interval_ms, 20000);
    ck_assert_int_eq(c->pong_timeout_ms, 5000);
    ck_assert_int_eq(c->max_connections, 50000);
    ck_assert_int_eq(c->conns_per_ip, 100);
    ck_assert_int_eq(c->conns_per_user, 10);
    ck_assert_int_eq(c->conns_per_tenant, 1000);
    ck_assert_int_eq(c->message_bytes, 32768);
    ck_assert_int_eq(c->outq_bytes, 524288);
    ck_assert_int_eq(c->cmd_rate, 50);
    ck_assert_int_eq(c->cmd_burst, 80);
    ck_assert_int_eq(c->rate_abuse_ms, 2000);
    ck_assert_int_eq(c->worker_memory_mb, 2048);
    ck_assert_int_eq(c->worker_queue_mb, 256);
    ck_assert_int_eq(c->idempotency_window_s, 600);
    ck_assert(c->api_expose_ips);
    ck_assert_int_eq(c->api_list_max, 50);
    ck_assert_str_eq(c->node_name, "full-node");
    ck_assert_int_eq(c->cluster_hb_ms, 1000);
    ck_assert_int_eq(c->cluster_node_ttl_ms, 5000);
    ck_assert_int_eq(c->cluster_timeout_ms, 700);
    ck_assert_int_eq(c->presence_info_bytes, 512);
    ck_assert_uint_eq(c->nallowed_origins, 2);
    ck_assert(!c->allow_missing_origin);
    ck_assert_uint_eq(c->ntrusted_proxies, 2);
    ck_assert(c->compression);
    ck_assert_int_eq(c->compression_window_bits, 11);
    ck_assert_int_eq(c->compression_mem_level, 5);
    ck_assert(hd_conf_origin_allowed(c, "https://app.example.com"));
    ck_assert(hd_conf_origin_allowed(c, "https://a.b.example.com"));
    ck_assert(hd_conf_origin_allowed(c, "HTTPS://APP.Example.com"));
    ck_assert(!hd_conf_origin_allowed(c, "https://example.com"));
    ck_assert(!hd_conf_origin_allowed(c, "http://app.example.com"));
    ck_assert(!hd_conf_origin_allowed(c, "https://evilexample.com"));
    ck_assert(!hd_conf_origin_allowed(c, "https://example.com.evil.net"));
    ck_assert(hd_conf_origin_allowed(c, "https://exact.test:8443"));
    ck_assert(!hd_conf_origin_allowed(c, "https://exact.test"));
    ck_assert_uint_eq(c->nnamespaces, 2);
    const hd_ns_t *chat = hd_conf_ns(c, "chat", 4);
    ck_assert_ptr_nonnull(chat);
    ck_assert(chat->publish && chat->anonymous);
    ck_assert_int_eq(chat->history_size, 100);
    ck_assert_int_eq(chat->history_ttl_s, 600);
    ck_assert(chat->presence && chat->join_leave);
    ck_assert(chat->subscribe_token && chat->subscribe_proxy);
    ck_assert_str_eq(c->proxy_connect_url,
                     "http://127.0.0.1:3000/herald/connect");
    ck_assert_uint_eq(c->nproxy_headers, 2);
    ck_assert_str_eq(c->proxy_headers[1], "x-session");
    const hd_ns_t *def = hd_conf_ns(c, "", 0);
    ck_assert_ptr_nonnull(def);
    ck_assert_str_eq(def->name, "default");
    ck_assert(!def->publish && !def->anonymous && def->history_size == 0);
    ck_assert(!def->presence && !def->join_leave && !def->subscribe_token);
    ck_assert_ptr_null(hd_conf_ns(c, "cha", 3));
    ck_assert_ptr_null(hd_conf_ns(c, "chatx", 5));
    hd_conf_free(c);
}
END_TEST

START_TEST(test_namespaces)
{
    hd_conf_t *c = load_ok("{" AUTH "}");
    /* by default only "default" exists, with everything off */
    ck_assert_uint_eq(c->nnamespaces, 1);
    ck_assert_ptr_nonnull(hd_conf_ns(c, "", 0));
    ck_assert_ptr_null(hd_conf_ns(c, "news", 4));
    hd_conf_free(c);

    c = load_ok("{" AUTH
                ", \"namespaces\": {\"b\": {}, \"a\": {\"publish\": true},"
                " \"c.d\": {}}}");
    ck_assert_uint_eq(c->nnamespaces, 3);
    ck_assert(hd_conf_ns(c, "a", 1)->publish);
    ck_assert_ptr_nonnull(hd_conf_ns(c, "c.d", 3));
    ck_assert_ptr_null(hd_conf_ns(c, "", 0)); /* no default given */
    hd_conf_free(c);

    expect_error("{" AUTH ", \"namespaces\": {\"a:b\": {}}}",
                 "t.json: $.namespaces[\"a:b\"]: a namespace name may only "
                 "hold [A-Za-z0-9_.@-], got \"a:b\"");
    expect_error("{" AUTH ", \"namespaces\": {\"a\": {\"pub\": true}}}",
                 "t.json: $.namespaces.a.pub: unknown key (expected publish, "
                 "anonymous, history_size, history_ttl_s, presence, "
                 "join_leave, subscribe_token or subscribe_proxy)");
    expect_error(
        "{" AUTH ", \"namespaces\": {\"a\": {\"publish\": 1}}}",
        "t.json: $.namespaces.a.publish: expected boolean, got integer");
    expect_error("{" AUTH ", \"namespaces\": {\"a\": {\"history_size\": -1}}}",
                 "t.json: $.namespaces.a.history_size: must be between 0 and "
                 "1000000, got -1");
    expect_error("{" AUTH ", \"namespaces\": {\"a\": {\"history_size\": 10}}}",
                 "t.json: $.namespaces.a: history_size and history_ttl_s must "
                 "both be set (history on) or both be 0 (history off)");
    expect_error(
        "{" AUTH ", \"security\": {\"allowed_origins\": [\"x\"]}}",
        "t.json: $.security.allowed_origins[0]: an origin must look "
        "like https://example.com or https://*.example.com, got \"x\"");
    expect_error(
        "{" AUTH ", \"security\": {\"allowed_origins\": "
        "[\"https://a.*.com\"]}}",
        "t.json: $.security.allowed_origins[0]: a wildcard is only "
        "allowed as \"*.\" at the start of the host, got \"https://a.*.com\"");
    expect_error("{" AUTH ", \"namespaces\": []}",
                 "t.json: $.namespaces: expected object, got array");
    expect_error("{" AUTH ", \"redis\": {\"reconnect_min_ms\": 900,"
                 " \"reconnect_max_ms\": 800}}",
                 "t.json: $.redis.reconnect_min_ms: must not be greater than "
                 "redis.reconnect_max_ms (800)");
}
END_TEST

/* full.json sets every key in the table, so it really tests them all;
 * the keys that exclude redis.url (redis.sentinel, redis.shards,
 * redis.password_file) are in full_alt.json, loaded by the tests below. */
START_TEST(test_full_json_sets_every_key)
{
    char   *text = read_all(HD_CONF_TEST_DIR "/full.json");
    char   *alt = read_all(HD_CONF_TEST_DIR "/full_alt.json");
    json_t *root = json_loads(text, 0, NULL);
    json_t *aroot = json_loads(alt, 0, NULL);

    ck_assert_ptr_nonnull(root);
    ck_assert_ptr_nonnull(aroot);
    for (size_t i = 0; i < NKEYS; i++) {
        char   *p = hd_strdup(keys[i].path), *save = NULL;
        json_t *v = root, *a = aroot;
        for (char *seg = strtok_r(p, ".", &save); seg != NULL;
             seg = strtok_r(NULL, ".", &save)) {
            v = v ? json_object_get(v, seg) : NULL;
            a = a ? json_object_get(a, seg) : NULL;
        }
        ck_assert_msg(v != NULL || a != NULL, "full.json does not set %s",
                      keys[i].path);
        free(p);
    }
    json_decref(root);
    json_decref(aroot);
    free(text);
    free(alt);
}
END_TEST

START_TEST(test_null_optional)
{
    hd_conf_t *c = load_ok(
        "{" AUTH ", \"admin\": {\"token\": null},"
        " \"log\": {\"file\": null}, \"api\": {\"key\": null}}");
    ck_assert_ptr_null(c->admin_token);
    ck_assert_ptr_null(c->log_file);
    ck_assert_ptr_null(c->api_key);
    hd_conf_free(c);

    /* null is "not set" only for keys without a default */
    expect_error("{" AUTH ", \"listen\": {\"port\": null}}",
                 "t.json: $.listen.port: expected integer, got null");
    expect_error("{" AUTH ", \"listen\": {\"address\": null}}",
                 "t.json: $.listen.address: expected string, got null");
    expect_error("{" AUTH ", \"log\": {\"file\": \"\"}}",
                 "t.json: $.log.file: must not be empty");
}
END_TEST

/* ---- syntax errors ----------------------------------------------------- */

START_TEST(test_syntax_error_file)
{
    hd_conf_errors_t e = { 0 };
    hd_conf_t       *c = NULL;
    const char      *path = HD_CONF_TEST_DIR "/syntax_error.json";
    char             want[4096];

    ck_assert_int_eq(hd_conf_load(path, &c, &e), -EINVAL);
    ck_assert_ptr_null(c);
    ck_assert_uint_eq(e.n, 1);
    snprintf(want, sizeof(want), "%s:4:5: string or '}' expected near '}'",
             path);
    ck_assert_str_eq(e.msg[0], want);
    hd_conf_errors_free(&e);
}
END_TEST

START_TEST(test_syntax_errors_inline)
{
    expect_error("{\n  \"a\": 1\n} x",
                 "t.json:3:3: end of file expected near 'x'");
    expect_error("{\"listen\": {\"port\": tru}}",
                 "t.json:1:23: invalid token near 'tru'");
    expect_error("", "t.json:1:0: '[' or '{' expected near end of file");
    expect_error("{\"listen\": {\"port\": 99999999999999999999}}",
                 "t.json:1:40: too big integer");
    /* a scalar at the top is a syntax error for jansson */
    expect_error("\"x\"", "t.json:1:3: '[' or '{' expected");
}
END_TEST

START_TEST(test_duplicate_key)
{
    hd_conf_errors_t e = { 0 };
    hd_conf_t       *c = NULL;
    const char      *path = HD_CONF_TEST_DIR "/duplicate.json";
    char             want[4096];

    ck_assert_int_eq(hd_conf_load(path, &c, &e), -EINVAL);
    ck_assert_uint_eq(e.n, 1);
    snprintf(want, sizeof(want),
             "%s:3:10: duplicate object key near "
             "'\"listen\"'",
             path);
    ck_assert_str_eq(e.msg[0], want);
    hd_conf_errors_free(&e);

    /* nested */
    expect_error("{\"listen\": {\"port\": 1, \"port\": 2}}",
                 "t.json:1:29: duplicate object key near '\"port\"'");
}
END_TEST

START_TEST(test_top_level_not_object)
{
    expect_error("[]", "t.json: $: top level must be an object, got array");
    expect_error("[{" AUTH "}]",
                 "t.json: $: top level must be an object, got array");
}
END_TEST

/* ---- semantic errors --------------------------------------------------- */

START_TEST(test_unknown_keys)
{
    expect_error("{" AUTH ", \"bogus\": 1}", "t.json: $.bogus: unknown key");
    expect_error("{" AUTH ", \"listen\": {\"bogus\": 1}}",
                 "t.json: $.listen.bogus: unknown key");
    expect_error("{" AUTH ", \"listen\": {\"prot\": 1}}",
                 "t.json: $.listen.prot: unknown key (did you mean \"port\"?)");
    expect_error("{" AUTH ", \"lisen\": {}}",
                 "t.json: $.lisen: unknown key (did you mean \"listen\"?)");
    /* a dotted name is not a path */
    expect_error("{" AUTH ", \"listen.port\": 1}",
                 "t.json: $[\"listen.port\"]: unknown key");
    /* a nested unknown object is reported once, not descended into */
    expect_error("{" AUTH ", \"extra\": {\"a\": 1, \"b\": 2}}",
                 "t.json: $.extra: unknown key");
    /* leaves are not sections */
    expect_error("{" AUTH ", \"workers\": {\"x\": 1}}",
                 "t.json: $.workers: expected \"auto\" or integer, got object");
    expect_error("{" AUTH ", \"x\\\"y\\n\": 1}",
                 "t.json: $[\"x\\\"y\\x0a\"]: unknown key");
}
END_TEST

START_TEST(test_wrong_types)
{
    expect_error("{" AUTH ", \"listen\": {\"port\": \"80\"}}",
                 "t.json: $.listen.port: expected integer, got string");
    expect_error("{" AUTH ", \"listen\": {\"port\": 80.0}}",
                 "t.json: $.listen.port: expected integer, got real");
    expect_error("{" AUTH ", \"listen\": {\"address\": 1}}",
                 "t.json: $.listen.address: expected string, got integer");
    expect_error(
        "{\"auth\": {\"hmac_secret\": \"" SECRET "\","
        " \"allow_anonymous\": \"yes\"}}",
        "t.json: $.auth.allow_anonymous: expected boolean, got string");
    expect_error("{" AUTH ", \"redis\": {\"url\": []}}",
                 "t.json: $.redis.url: expected string, got array");
    expect_error("{" AUTH ", \"log\": {\"level\": 3}}",
                 "t.json: $.log.level: expected string (one of \"error\", "
                 "\"warn\", \"info\", \"debug\"), got integer");
    expect_error(
        "{" AUTH ", \"workers\": true}",
        "t.json: $.workers: expected \"auto\" or integer, got boolean");
    expect_error("{" AUTH ", \"listen\": 5}",
                 "t.json: $.listen: expected object or array of objects, "
                 "got integer");
    expect_error("{" AUTH ", \"timeouts\": null}",
                 "t.json: $.timeouts: expected object, got null");
}
END_TEST

/* A bad auth section is one error, not also "hmac_secret required". */
START_TEST(test_bad_section_one_error)
{
    expect_error("{\"auth\": []}",
                 "t.json: $.auth: expected object, got array");
    expect_error(
        "{\"auth\": {\"allow_anonymous\": 1}}",
        "t.json: $.auth.allow_anonymous: expected boolean, got integer");
}
END_TEST

START_TEST(test_ranges)
{
    static const struct {
        const char *json, *want;
    } bad[] = {
        { "\"listen\": {\"port\": 0}",
          "$.listen.port: must be between 1 and 65535, got 0" },
        { "\"listen\": {\"port\": 70000}",
          "$.listen.port: must be between 1 and 65535, got 70000" },
        { "\"listen\": {\"port\": -1}",
          "$.listen.port: must be between 1 and 65535, got -1" },
        { "\"listen\": {\"backlog\": 0}",
          "$.listen.backlog: must be between 1 and 65535, got 0" },
        { "\"listen\": {\"backlog\": 65536}",
          "$.listen.backlog: must be between 1 and 65535, got 65536" },
        { "\"admin\": {\"port\": -1}",
          "$.admin.port: must be between 0 and 65535, got -1" },
        { "\"admin\": {\"port\": 65536}",
          "$.admin.port: must be between 0 and 65535, got 65536" },
        { "\"timeouts\": {\"shutdown_ms\": 99}",
          "$.timeouts.shutdown_ms: must be between 100 and 600000, got 99" },
        { "\"timeouts\": {\"shutdown_ms\": 600001}",
          "$.timeouts.shutdown_ms: must be between 100 and 600000, got "
          "600001" },
        { "\"timeouts\": {\"handshake_ms\": 99}",
          "$.timeouts.handshake_ms: must be between 100 and 120000, got 99" },
        { "\"timeouts\": {\"handshake_ms\": 120001}",
          "$.timeouts.handshake_ms: must be between 100 and 120000, got "
          "120001" },
        { "\"workers\": 0",
          "$.workers: must be \"auto\" or between 1 and 256, got 0" },
        { "\"workers\": 257",
          "$.workers: must be \"auto\" or between 1 and 256, got 257" },
        { "\"workers\": 9223372036854775807",
          "$.workers: must be \"auto\" or between 1 and 256, "
          "got 9223372036854775807" },
    };
    char json[512], want[512];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(json, sizeof(json), "{" AUTH ", %s}", bad[i].json);
        snprintf(want, sizeof(want), "t.json: %s", bad[i].want);
        expect_error(json, want);
    }

    /* the bounds themselves are accepted */
    hd_conf_t *c = load_ok(
        "{" AUTH ", \"workers\": 256,"
        " \"listen\": {\"port\": 65535, \"backlog\": 1},"
        " \"admin\": {\"port\": 0},"
        " \"timeouts\": {\"shutdown_ms\": 600000, \"handshake_ms\": 100}}");
    ck_assert_int_eq(c->workers, 256);
    ck_assert_int_eq(c->listens[0].port, 65535);
    ck_assert_int_eq(c->listens[0].backlog, 1);
    ck_assert_int_eq(c->admin_port, 0);
    ck_assert_int_eq(c->shutdown_ms, 600000);
    ck_assert_int_eq(c->handshake_ms, 100);
    hd_conf_free(c);

    c = load_ok(
        "{" AUTH ", \"workers\": 1, \"listen\": {\"port\": 1,"
        " \"backlog\": 65535}, \"admin\": {\"port\": 65535},"
        " \"timeouts\": {\"shutdown_ms\": 100, \"handshake_ms\": 120000}}");
    ck_assert_int_eq(c->workers, 1);
    ck_assert_int_eq(c->listens[0].port, 1);
    ck_assert_int_eq(c->listens[0].backlog, 65535);
    ck_assert_int_eq(c->admin_port, 65535);
    ck_assert_int_eq(c->shutdown_ms, 100);
    ck_assert_int_eq(c->handshake_ms, 120000);
    hd_conf_free(c);
}
END_TEST

START_TEST(test_enums)
{
    static const char *const levels[] = { "error", "warn", "info", "debug" };
    static const char *const formats[] = { "auto", "json", "text" };
    char                     json[256];

    for (int i = 0; i < 4; i++) {
        snprintf(json, sizeof(json), "{" AUTH ", \"log\": {\"level\": \"%s\"}}",
                 levels[i]);
        hd_conf_t *c = load_ok(json);
        ck_assert_int_eq(c->log_level, i);
        hd_conf_free(c);
    }
    for (int i = 0; i < 3; i++) {
        snprintf(json, sizeof(json),
                 "{" AUTH ", \"log\": {\"format\": \"%s\"}}", formats[i]);
        hd_conf_t *c = load_ok(json);
        ck_assert_int_eq(c->log_format, i);
        hd_conf_free(c);
    }
    expect_error("{" AUTH ", \"log\": {\"level\": \"verbose\"}}",
                 "t.json: $.log.level: must be one of \"error\", \"warn\", "
                 "\"info\", \"debug\"; got \"verbose\"");
    expect_error("{" AUTH ", \"log\": {\"format\": \"JSON\"}}",
                 "t.json: $.log.format: must be one of \"auto\", \"json\", "
                 "\"text\"; got \"JSON\"");
    /* echoed values are escaped and truncated */
    expect_error("{" AUTH ", \"log\": {\"level\": \"a\\u0001"
                 "bcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ\"}}",
                 "t.json: $.log.level: must be one of \"error\", \"warn\", "
                 "\"info\", \"debug\"; got \"a\\x01bcdefghijklmnopqrstuvwxyz"
                 "0123456789ABC\"...");
}
END_TEST

/* Our enum tables agree with the logger's own parser. */
START_TEST(test_enum_names_match_log)
{
    for (int i = 0; log_levels[i] != NULL; i++) {
        enum hd_log_level l;
        ck_assert_int_eq(hd_log_level_parse(log_levels[i], &l), 0);
        ck_assert_int_eq((int) l, i);
    }
    for (int i = 0; log_formats[i] != NULL; i++) {
        enum hd_log_format f;
        ck_assert_int_eq(hd_log_format_parse(log_formats[i], &f), 0);
        ck_assert_int_eq((int) f, i);
    }
}
END_TEST

START_TEST(test_addresses)
{
    static const char *const good[] = {
        "0.0.0.0", "127.0.0.1", "10.1.2.3",     "::",
        "::1",     "fe80::1",   "2001:db8::42", "::ffff:192.0.2.1",
    };
    static const char *const bad[] = {
        "localhost",  "1.2.3",    "256.1.1.1",    "[::1]",
        "1.2.3.4:80", " 1.2.3.4", "fe80::1%eth0",
    };
    char json[256], want[256];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(json, sizeof(json),
                 "{" AUTH ", \"listen\": {\"address\": "
                 "\"%s\"}, \"admin\": {\"address\": \"%s\","
                 " \"token\": \"admin-token-0123456789\"}}",
                 good[i], good[i]);
        hd_conf_t *c = load_ok(json);
        ck_assert_str_eq(c->listens[0].address, good[i]);
        ck_assert_str_eq(c->admin_address, good[i]);
        hd_conf_free(c);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(json, sizeof(json),
                 "{" AUTH ", \"listen\": {\"address\": "
                 "\"%s\"}}",
                 bad[i]);
        snprintf(want, sizeof(want),
                 "t.json: $.listen.address: must be an "
                 "IPv4 or IPv6 address literal, got \"%s\"",
                 bad[i]);
        expect_error(json, want);
        snprintf(json, sizeof(json),
                 "{" AUTH ", \"admin\": {\"address\": "
                 "\"%s\"}}",
                 bad[i]);
        snprintf(want, sizeof(want),
                 "t.json: $.admin.address: must be an "
                 "IPv4 or IPv6 address literal, got \"%s\"",
                 bad[i]);
        expect_error(json, want);
    }
    expect_error("{" AUTH ", \"listen\": {\"address\": \"\"}}",
                 "t.json: $.listen.address: must not be empty");
}
END_TEST

/* ---- redis.url --------------------------------------------------------- */

START_TEST(test_redis_good)
{
    static const struct {
        const char *url, *host;
        int         port;
        const char *unix_path, *pw;
        int         db;
    } good[] = {
        { "redis://127.0.0.1:6379", "127.0.0.1", 6379, NULL, NULL, 0 },
        { "redis://localhost", "localhost", 6379, NULL, NULL, 0 },
        { "redis://redis.example.com/", "redis.example.com", 6379, NULL, NULL,
          0 },
        { "redis://h:7000/5", "h", 7000, NULL, NULL, 5 },
        { "redis://[::1]:6379", "::1", 6379, NULL, NULL, 0 },
        { "redis://[::1]", "::1", 6379, NULL, NULL, 0 },
        { "redis://[2001:db8::1]:6380/15", "2001:db8::1", 6380, NULL, NULL,
          15 },
        { "redis://:s3cret@host:6379", "host", 6379, NULL, "s3cret", 0 },
        { "redis://:s3cret@host:6379/4", "host", 6379, NULL, "s3cret", 4 },
        { "redis://user:s3cret@host:6379/1", "host", 6379, NULL, "s3cret", 1 },
        { "redis://s3cret@host", "host", 6379, NULL, "s3cret", 0 },
        { "redis://:p%40ss%3Aw%2Fd@host", "host", 6379, NULL, "p@ss:w/d", 0 },
        { "redis://:p@ss@host", "host", 6379, NULL, "p@ss", 0 },
        { "redis://:@host", "host", 6379, NULL, NULL, 0 },
        { "redis://user:@host", "host", 6379, NULL, NULL, 0 },
        { "REDIS://Host_1:1", "Host_1", 1, NULL, NULL, 0 },
        { "redis://h:65535/2147483647", "h", 65535, NULL, NULL, 2147483647 },
        { "unix:///run/redis/redis.sock", NULL, 0, "/run/redis/redis.sock",
          NULL, 0 },
        { "unix:///tmp/r.sock?db=3", NULL, 0, "/tmp/r.sock", NULL, 3 },
    };
    char json[512];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(json, sizeof(json), "{" AUTH ", \"redis\": {\"url\": \"%s\"}}",
                 good[i].url);
        hd_conf_t *c = load_ok(json);
        ck_assert_str_eq(c->redis_url, good[i].url);
        ck_assert_pstr_eq(c->redis_host, good[i].host);
        ck_assert_int_eq(c->redis_port, good[i].port);
        ck_assert_pstr_eq(c->redis_unix_path, good[i].unix_path);
        ck_assert_pstr_eq(c->redis_password, good[i].pw);
        ck_assert_int_eq(c->redis_db, good[i].db);
        hd_conf_free(c);
    }
}
END_TEST

/* ---- redis: ACL users, password files, Sentinel, shards ---------------- */

static char *
tmp_secret(const char *content)
{
    char path[] = "/tmp/hd_conf_pw_XXXXXX";
    int  fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, content, strlen(content)),
                     (ssize_t) strlen(content));
    close(fd);
    return hd_strdup(path);
}

START_TEST(test_redis_targets)
{
    hd_conf_t *c;

    /* one target from redis.url, with the ACL user */
    c = load_ok("{" AUTH ", \"redis\": {\"url\": "
                "\"redis://herald:p%40ss@h:7000/3\"}}");
    ck_assert_uint_eq(c->nredis_targets, 1);
    ck_assert_str_eq(c->redis_targets[0].name, "h:7000/3");
    ck_assert_str_eq(c->redis_targets[0].user, "herald");
    ck_assert_str_eq(c->redis_targets[0].password, "p@ss");
    ck_assert_int_eq(c->redis_targets[0].db, 3);
    hd_conf_free(c);
    /* "default" and an empty user are the default user */
    c = load_ok("{" AUTH ", \"redis\": {\"url\": \"redis://default:pw@h\"}}");
    ck_assert_ptr_null(c->redis_targets[0].user);
    ck_assert_str_eq(c->redis_targets[0].password, "pw");
    hd_conf_free(c);
    /* the default URL */
    c = load_ok("{" AUTH "}");
    ck_assert_uint_eq(c->nredis_targets, 1);
    ck_assert_str_eq(c->redis_targets[0].name, "127.0.0.1:6379");
    ck_assert_ptr_null(c->redis_targets[0].password);
    hd_conf_free(c);

    /* redis.password_file (read by the secret-file rows): the ACL user
     * from the URL, the password from the file */
    char *f = tmp_secret("from-a-file\n");
    char *json = hd_asprintf("{" AUTH ", \"redis\": {\"url\": "
                             "\"redis://herald:@h\", \"password_file\": "
                             "\"%s\"}}",
                             f);
    c = load_ok(json);
    ck_assert_str_eq(c->redis_targets[0].user, "herald");
    ck_assert_str_eq(c->redis_targets[0].password, "from-a-file");
    hd_conf_free(c);
    free(json);
    /* it goes with redis.url only */
    json = hd_asprintf("{" AUTH ", \"redis\": {\"password_file\": \"%s\", "
                       "\"sentinel\": {\"master_name\": \"m\", "
                       "\"addresses\": [\"h\"]}}}",
                       f);
    expect_error(json,
                 "t.json: $.redis.password_file: goes with redis.url "
                 "only (redis.sentinel and redis.shards take their "
                 "own password_file)");
    free(json);
    unlink(f);
    free(f);
    /* a shard's password_file */
    f = tmp_secret("shard-pw\r\n");
    json = hd_asprintf("{" AUTH ", \"redis\": {\"shards\": [{\"url\": "
                       "\"redis://u:@h1\", \"password_file\": \"%s\"}, "
                       "{\"url\": \"redis://h2\"}]}}",
                       f);
    c = load_ok(json);
    ck_assert_str_eq(c->redis_targets[0].password, "shard-pw");
    ck_assert_ptr_null(c->redis_targets[1].password);
    hd_conf_free(c);
    free(json);
    unlink(f);
    free(f);

    /* Sentinel */
    c = load_ok("{" AUTH ", \"redis\": {\"sentinel\": {\"master_name\": "
                "\"mymaster\", \"addresses\": [\"127.0.0.1:26380\", "
                "\"[::1]\"], \"username\": \"u\", \"password\": \"p\", "
                "\"sentinel_password\": \"sp\", \"db\": 2}}}");
    ck_assert_uint_eq(c->nredis_targets, 1);
    hd_redis_target_t *t = &c->redis_targets[0];
    ck_assert_str_eq(t->name, "sentinel:mymaster");
    ck_assert_str_eq(t->master_name, "mymaster");
    ck_assert_uint_eq(t->nsentinels, 2);
    ck_assert_str_eq(t->sentinel_host[0], "127.0.0.1");
    ck_assert_int_eq(t->sentinel_port[0], 26380);
    ck_assert_str_eq(t->sentinel_host[1], "::1");
    ck_assert_int_eq(t->sentinel_port[1], 26379);
    ck_assert_str_eq(t->user, "u");
    ck_assert_str_eq(t->password, "p");
    ck_assert_str_eq(t->sentinel_password, "sp");
    ck_assert_ptr_null(t->sentinel_user);
    ck_assert_int_eq(t->db, 2);
    ck_assert_ptr_null(t->host);
    hd_conf_free(c);
    expect_error("{" AUTH ", \"redis\": {\"sentinel\": {\"addresses\": "
                 "[\"h\"]}}}",
                 "t.json: $.redis.sentinel: master_name is required");
    expect_error("{" AUTH ", \"redis\": {\"sentinel\": {\"master_name\": "
                 "\"m\", \"addresses\": []}}}",
                 "t.json: $.redis.sentinel.addresses: expected an array of 1 "
                 "to 16 \"host:port\"");
    expect_error("{" AUTH ", \"redis\": {\"sentinel\": {\"master_name\": "
                 "\"m\", \"addresses\": [\"h:0\"]}}}",
                 "t.json: $.redis.sentinel.addresses[0]: port must be an "
                 "integer between 1 and 65535");
    expect_error("{" AUTH ", \"redis\": {\"sentinel\": {\"master_name\": "
                 "\"m\", \"addresses\": [\"h\"], \"pasword\": \"x\"}}}",
                 "t.json: $.redis.sentinel.pasword: unknown key");

    /* shards */
    c = load_ok("{" AUTH ", \"redis\": {\"shards\": ["
                "{\"url\": \"redis://127.0.0.1:7001\"},"
                "{\"url\": \"redis://u:pw@127.0.0.1:7002/1\"},"
                "{\"sentinel\": {\"master_name\": \"s3\", \"addresses\": "
                "[\"127.0.0.1:26379\"]}}]}}");
    ck_assert_uint_eq(c->nredis_targets, 3);
    ck_assert_str_eq(c->redis_targets[0].name, "127.0.0.1:7001");
    ck_assert_str_eq(c->redis_targets[1].name, "127.0.0.1:7002/1");
    ck_assert_str_eq(c->redis_targets[1].user, "u");
    ck_assert_str_eq(c->redis_targets[2].name, "sentinel:s3");
    hd_conf_free(c);
    expect_error("{" AUTH ", \"redis\": {\"shards\": ["
                 "{\"url\": \"redis://127.0.0.1:7001\"},"
                 "{\"url\": \"redis://127.0.0.1:7001/\"}]}}",
                 "t.json: $.redis.shards[1]: the same server as shard 0");
    expect_error("{" AUTH ", \"redis\": {\"shards\": []}}",
                 "t.json: $.redis.shards: expected an array of 1 to 64 "
                 "shards");
    expect_error("{" AUTH ", \"redis\": {\"shards\": [{\"url\": "
                 "\"rediss://h\"}]}}",
                 "t.json: $.redis.shards[0].url: invalid Redis URL: TLS "
                 "(rediss://) is not supported by this hiredis: run a "
                 "stunnel client next to herald and point redis.url at it "
                 "(deploy/stunnel/, docs/operations.md \"Redis over TLS\")");
    expect_error("{" AUTH ", \"redis\": {\"url\": \"redis://h\", \"shards\": "
                 "[{\"url\": \"redis://h2\"}]}}",
                 "t.json: $.redis: give one of redis.url, redis.sentinel "
                 "and redis.shards");
    /* WAIT must give up before the command timeout tears the link down */
    expect_error("{" AUTH ", \"redis\": {\"wait_replicas\": 1, "
                 "\"wait_timeout_ms\": 2000, \"command_timeout_ms\": 2000}}",
                 "t.json: $.redis.wait_timeout_ms: must be less than "
                 "redis.command_timeout_ms (2000)");
    /* a reload that changes the shard list replaces the workers */
    hd_conf_t *a = load_ok("{" AUTH ", \"redis\": {\"shards\": [{\"url\": "
                           "\"redis://h1\"}]}}");
    hd_conf_t *b = load_ok("{" AUTH ", \"redis\": {\"shards\": [{\"url\": "
                           "\"redis://h1\"}, {\"url\": \"redis://h2\"}]}}");
    ck_assert(hd_conf_worker_changed(a, b));
    ck_assert(!hd_conf_worker_changed(a, a));
    hd_conf_free(a);
    hd_conf_free(b);
}
END_TEST

#define PW "hunter2-redis-pw"

START_TEST(test_redis_bad)
{
    static const struct {
        const char *url, *why;
    } bad[] = {
        { "", "must start with redis:// or unix://" },
        { "http://host", "must start with redis:// or unix://" },
        { "rediss://:" PW "@host",
          "TLS (rediss://) is not supported by this hiredis: run a stunnel "
          "client next to herald and point redis.url at it (deploy/stunnel/, "
          "docs/operations.md \"Redis over TLS\")" },
        { "redis://", "missing host" },
        { "redis://:" PW "@", "missing host" },
        { "redis://:" PW "@:6379", "missing host" },
        { "redis://:" PW "@host:",
          "port must be an integer between 1 and 65535" },
        { "redis://:" PW "@host:0",
          "port must be an integer between 1 and 65535" },
        { "redis://:" PW "@host:65536",
          "port must be an integer between 1 and 65535" },
        { "redis://:" PW "@host:6x",
          "port must be an integer between 1 and 65535" },
        { "redis://:" PW "@host:99999999999",
          "port must be an integer between 1 and 65535" },
        { "redis://:" PW "@host/x",
          "database must be an integer between 0 and 2147483647" },
        { "redis://:" PW "@host/1/2",
          "database must be an integer between 0 and 2147483647" },
        { "redis://:" PW "@host/2147483648",
          "database must be an integer between 0 and 2147483647" },
        { "redis://:" PW "@host/-1",
          "database must be an integer between 0 and 2147483647" },
        { "redis://:" PW "@host?db=1",
          "query strings and fragments are not "
          "supported (give the database as /N)" },
        { "redis://:" PW "@host/0?x",
          "query strings and fragments are not "
          "supported (give the database as /N)" },
        { "redis://:" PW "@::1:6379",
          "an IPv6 host must be in brackets, e.g. redis://[::1]:6379" },
        { "redis://:" PW "@[::1", "unterminated '[' in the host" },
        { "redis://:" PW "@[1.2.3.4]:6379",
          "the host in brackets is not an IPv6 address" },
        { "redis://:" PW "@[::1]x", "unexpected character after ']'" },
        { "redis://:" PW "@ho st", "bad character in the host" },
        { "redis://:" PW "@host%20", "bad character in the host" },
        { "redis://:" PW "%zz@host", "bad percent-escape in the password" },
        { "redis://:" PW "%4@host", "bad percent-escape in the password" },
        { "redis://:" PW "%00@host", "bad percent-escape in the password" },
        { "redis://:pass/" PW "@host",
          "'@' after the host: percent-encode "
          "'/', '?' and '#' in the password" },
        { "unix://run/redis.sock",
          "unix:// needs an absolute socket path, "
          "e.g. unix:///run/redis/redis.sock" },
        { "unix:///", "unix socket path is empty" },
        { "unix:///tmp/r.sock?password=" PW,
          "unknown query parameter (only ?db=N is supported)" },
        { "unix:///tmp/r.sock?db=",
          "database must be an integer between 0 and 2147483647" },
        { "unix:///tmp/r.sock?db=x",
          "database must be an integer between 0 and 2147483647" },
        { "unix:///"
          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
          "unix socket path is too long (at most 107 bytes)" },
    };
    char json[512], want[512];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        hd_conf_errors_t e;
        hd_conf_t       *c = NULL;

        snprintf(json, sizeof(json), "{" AUTH ", \"redis\": {\"url\": \"%s\"}}",
                 bad[i].url);
        snprintf(want, sizeof(want),
                 "t.json: $.redis.url: invalid Redis URL: %s", bad[i].why);
        ck_assert_int_eq(load(json, &c, &e), -EINVAL);
        ck_assert_msg(e.n == 1, "%s: %zu errors", bad[i].url, e.n);
        ck_assert_str_eq(e.msg[0], want);
        ck_assert(!any_contains(&e, PW));
        ck_assert(!any_contains(&e, "hunter2"));
        hd_conf_errors_free(&e);
    }

    /* 107 bytes of path is the limit that fits sun_path */
    char path[108];
    memset(path, 'a', sizeof(path) - 1);
    path[0] = '/';
    path[107] = '\0';
    snprintf(json, sizeof(json),
             "{" AUTH ", \"redis\": {\"url\": \"unix://%s\"}}", path);
    hd_conf_t *c = load_ok(json);
    ck_assert_str_eq(c->redis_unix_path, path);
    hd_conf_free(c);
}
END_TEST

/* ---- secrets ----------------------------------------------------------- */

START_TEST(test_secret_lengths)
{
    /* 31 and 32 bytes */
    expect_error(
        "{\"auth\": {\"hmac_secret\": \"0123456789abcdef0123456789abcde\"}}",
        "t.json: $.auth.hmac_secret: must be at least 32 bytes long");
    hd_conf_t *c = load_ok("{\"auth\": {\"hmac_secret\": "
                           "\"0123456789abcdef0123456789abcdef\"}}");
    hd_conf_free(c);

    expect_error("{" AUTH ", \"api\": {\"key\": \"0123456789abcde\"}}",
                 "t.json: $.api.key: must be at least 16 bytes long");
    c = load_ok("{" AUTH ", \"api\": {\"key\": \"0123456789abcdef\"}}");
    ck_assert_str_eq(c->api_key, "0123456789abcdef");
    hd_conf_free(c);

    expect_error("{" AUTH ", \"admin\": {\"token\": \"0123456789abcde\"}}",
                 "t.json: $.admin.token: must be at least 16 bytes long");
    c = load_ok("{" AUTH ", \"admin\": {\"token\": \"0123456789abcdef\"}}");
    ck_assert_str_eq(c->admin_token, "0123456789abcdef");
    hd_conf_free(c);

    expect_error("{" AUTH ", \"api\": {\"key\": \"\"}}",
                 "t.json: $.api.key: must be at least 16 bytes long");
}
END_TEST

#define MISSING_KEY                                                 \
    "t.json: $.auth.hmac_secret: a key is required (hmac_secret, "  \
    "hmac_secret_file, public_keys, jwks_file or jwks_url) unless " \
    "auth.allow_anonymous is true or proxy.connect_url is set"

START_TEST(test_missing_secret)
{
    expect_error("{}", MISSING_KEY);
    expect_error("{\"auth\": {\"allow_anonymous\": false}}", MISSING_KEY);
    expect_error("{\"auth\": {\"hmac_secret\": null}}", MISSING_KEY);

    hd_conf_t *c = load_ok("{\"auth\": {\"allow_anonymous\": true}}");
    ck_assert_ptr_null(c->auth_hmac_secret);
    ck_assert(c->auth_allow_anonymous);
    hd_conf_free(c);
}
END_TEST

/*
 * Every secret slot holds a value that is wrong in some way, in a file
 * full of other errors: no message may contain any of the values.
 */
START_TEST(test_no_secret_in_errors)
{
    static const char *const secrets[] = {
        "SHORT-hmac-aaaa",
        "SHORT-api-bbbb",
        "SHORT-adm-cccc",
        "REDISPW-dddd",
    };
    const char *json =
        "{\"auth\": {\"hmac_secret\": \"SHORT-hmac-aaaa\", "
        "\"allow_anonymous\": 1},"
        " \"api\": {\"key\": \"SHORT-api-bbbb\"},"
        " \"admin\": {\"token\": \"SHORT-adm-cccc\", \"port\": \"x\"},"
        " \"redis\": {\"url\": \"redis://:REDISPW-dddd@host:70000\"},"
        " \"listen\": {\"port\": 0}, \"zz\": 1}";
    hd_conf_errors_t e;
    hd_conf_t       *c = NULL;

    ck_assert_int_eq(load(json, &c, &e), -EINVAL);
    ck_assert_uint_eq(e.n, 8);
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        ck_assert_msg(!any_contains(&e, secrets[i]), "%s leaked", secrets[i]);
    hd_conf_errors_free(&e);

    /* a syntax error right inside a secret: jansson would quote it */
    static const char *const broken[] = {
        "{\"auth\": {\"hmac_secret\": \"SHORT-hmac-aaaa\x01\"}}",
        "{\"auth\": {\"hmac_secret\": \"SHORT-hmac-aaaa",
        "{\"auth\": {\"hmac_secret\": SHORT-hmac-aaaa}}",
        "{\"auth\": {\"hmac_secret\": \"SHORT-hmac-aaaa\\q\"}}",
        "{\"auth\": {\"hmac_secret\": \"SHORT-hmac-aaaa\xff\"}}",
    };
    for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
        ck_assert_int_eq(load(broken[i], &c, &e), -EINVAL);
        ck_assert_uint_eq(e.n, 1);
        ck_assert_msg(strncmp(e.msg[0], "t.json:1:", 9) == 0, "%s", e.msg[0]);
        ck_assert_msg(strstr(e.msg[0], "SHORT") == NULL, "leaked: %s",
                      e.msg[0]);
        hd_conf_errors_free(&e);
    }
}
END_TEST

START_TEST(test_register_secrets)
{
    hd_conf_errors_t e = { 0 };
    hd_conf_t       *c = NULL;
    char             line[1024];
    const char      *msg = "a full-hmac-secret-0123456789abcdef-0123 b "
                           "full-api-key-0123456789 c admin-token-0123456789 d "
                           "full-pass-xyz e";

    ck_assert_int_eq(hd_conf_load(HD_CONF_TEST_DIR "/full.json", &c, &e), 0);
    ck_assert_str_eq(c->redis_password, "full-pass-xyz"); /* CRLF cut */
    hd_log_clear_secrets();
    hd_conf_register_secrets(c);
    hd_log_format_line(line, sizeof(line), HD_LOG_FMT_TEXT, HD_LOG_INFO, msg,
                       NULL);
    ck_assert_msg(strstr(line, "hmac-secret") == NULL, "%s", line);
    ck_assert_msg(strstr(line, "api-key") == NULL, "%s", line);
    ck_assert_msg(strstr(line, "admin-token") == NULL, "%s", line);
    ck_assert_msg(strstr(line, "full-pass") == NULL, "%s", line);
    ck_assert_msg(strstr(line, "[redacted]") != NULL, "%s", line);
    hd_log_clear_secrets();
    hd_conf_free(c);

    /* the percent-encoded spelling of a Redis password is a secret too */
    c = load_ok("{" AUTH
                ", \"redis\": {\"url\": \"redis://:pw%2Fenc-9876@h\"}}");
    hd_conf_register_secrets(c);
    hd_log_format_line(line, sizeof(line), HD_LOG_FMT_TEXT, HD_LOG_INFO,
                       "x pw/enc-9876 y pw%2Fenc-9876 z", NULL);
    ck_assert_msg(strstr(line, "enc-9876") == NULL, "%s", line);
    hd_log_clear_secrets();
    hd_conf_free(c);
}
END_TEST

/* ---- one pass ---------------------------------------------------------- */

START_TEST(test_three_errors_one_pass)
{
    hd_conf_errors_t e = { 0 };
    hd_conf_t       *c = NULL;
    const char      *path = HD_CONF_TEST_DIR "/three_errors.json";
    char             want[4096];

    ck_assert_int_eq(hd_conf_load(path, &c, &e), -EINVAL);
    ck_assert_ptr_null(c);
    ck_assert_uint_eq(e.n, 3);
    snprintf(want, sizeof(want),
             "%s: $.listen.port: must be between 1 and 65535, got 0", path);
    ck_assert_str_eq(e.msg[0], want);
    snprintf(want, sizeof(want),
             "%s: $.listen.adress: unknown key (did you mean \"address\"?)",
             path);
    ck_assert_str_eq(e.msg[1], want);
    snprintf(want, sizeof(want),
             "%s: $.log.level: must be one of \"error\", "
             "\"warn\", \"info\", \"debug\"; got \"loud\"",
             path);
    ck_assert_str_eq(e.msg[2], want);
    hd_conf_errors_free(&e);
}
END_TEST

START_TEST(test_errors_accumulate)
{
    hd_conf_errors_t e = { 0 };
    hd_conf_t       *c = NULL;

    ck_assert_int_eq(hd_conf_load_string("a", "{\"x\":1}", 7, &c, &e), -EINVAL);
    ck_assert_int_eq(hd_conf_load_string("b", "[", 1, &c, &e), -EINVAL);
    ck_assert_uint_eq(e.n, 3); /* unknown key, missing secret, syntax */
    ck_assert_str_eq(e.msg[0], "a: $.x: unknown key");
    ck_assert(strncmp(e.msg[2], "b:1:", 4) == 0);
    hd_conf_errors_free(&e);
    ck_assert_uint_eq(e.n, 0);
    ck_assert_ptr_null(e.msg);
    hd_conf_errors_free(&e); /* twice is fine */

    /* no error list: still fails, nothing to free */
    ck_assert_int_eq(hd_conf_load_string("a", "{\"x\":1}", 7, &c, NULL),
                     -EINVAL);
    ck_assert_ptr_null(c);
    /* length is honoured: the text after len is not parsed */
    c = NULL;
    ck_assert_int_eq(hd_conf_load_string("a",
                                         "{\"auth\":{\"allow_anonymous\""
                                         ":true}}garbage",
                                         33, &c, &e),
                     0);
    ck_assert_ptr_nonnull(c);
    hd_conf_free(c);
}
END_TEST

/* ---- workers ----------------------------------------------------------- */

START_TEST(test_workers)
{
    hd_conf_t *c = load_ok("{" AUTH ", \"workers\": \"auto\"}");
    int        cpus = hd_conf_online_cpus();

    ck_assert_int_ge(cpus, 1);
    ck_assert(c->workers_auto);
    ck_assert_int_ge(c->workers, 1);
    ck_assert_int_le(c->workers, HD_WORKERS_MAX);
    ck_assert_int_eq(
        c->workers,
        hd_conf_auto_workers(cpus, 100000, hd_conf_fd_limit(), HD_WORKERS_MAX));
    hd_conf_free(c);

    /* without a connection cap, the CPUs alone */
    c = load_ok("{" AUTH ", \"limits\": {\"max_connections\": 0}}");
    ck_assert_int_eq(c->workers, cpus < HD_WORKERS_MAX ? cpus : HD_WORKERS_MAX);
    hd_conf_free(c);
    /* a cap beyond what one CPU-count of workers can hold takes more */
    c = load_ok("{" AUTH ", \"limits\": {\"max_connections\": 16777215}}");
    ck_assert_int_eq(c->workers,
                     hd_conf_auto_workers(cpus, 16777215, hd_conf_fd_limit(),
                                          HD_WORKERS_MAX));
    ck_assert_int_ge(c->workers, cpus < HD_WORKERS_MAX ? cpus : HD_WORKERS_MAX);
    hd_conf_free(c);

    /* descriptors: a share of fd_limit - HD_WORKER_FD_RESERVE each */
    ck_assert_int_eq(hd_conf_auto_workers(2, 0, 1024, HD_WORKERS_MAX), 2);
    ck_assert_int_eq(hd_conf_auto_workers(2, 1000, 1048576, HD_WORKERS_MAX), 2);
    ck_assert_int_eq(hd_conf_auto_workers(2, 1000000, 1048576, HD_WORKERS_MAX),
                     2);
    /* 1M over 65536 - 256 = 65280 each: 15.3 -> 16 */
    ck_assert_int_eq(hd_conf_auto_workers(2, 1000000, 65536, HD_WORKERS_MAX),
                     16);
    /* exactly full: 4 x 65280 */
    ck_assert_int_eq(hd_conf_auto_workers(2, 261120, 65536, HD_WORKERS_MAX), 4);
    ck_assert_int_eq(hd_conf_auto_workers(2, 261121, 65536, HD_WORKERS_MAX), 5);
    /* more CPUs than the descriptors need: the CPUs */
    ck_assert_int_eq(hd_conf_auto_workers(8, 100000, 65536, HD_WORKERS_MAX), 8);
    /* the usual soft limit: 100k over 1024 - 256 = 768 each is 131 */
    ck_assert_int_eq(hd_conf_auto_workers(2, 100000, 1024, HD_WORKERS_MAX),
                     131);
    /* clamped to max, and a limit under twice the reserve still counts */
    ck_assert_int_eq(hd_conf_auto_workers(2, 1000000, 1024, HD_WORKERS_MAX),
                     HD_WORKERS_MAX);
    ck_assert_int_eq(hd_conf_auto_workers(1, 1000, 400, HD_WORKERS_MAX), 5);
    ck_assert_int_eq(hd_conf_auto_workers(0, 0, 0, HD_WORKERS_MAX), 1);
    ck_assert_int_ge(hd_conf_fd_limit(), 1);

    /* the clamp, whatever this machine has */
    ck_assert_int_eq(auto_workers(0, HD_WORKERS_MAX), 1);
    ck_assert_int_eq(auto_workers(1, HD_WORKERS_MAX), 1);
    ck_assert_int_eq(auto_workers(8, HD_WORKERS_MAX), 8);
    ck_assert_int_eq(auto_workers(256, HD_WORKERS_MAX), 256);
    ck_assert_int_eq(auto_workers(300, HD_WORKERS_MAX), 256);

    c = load_ok("{" AUTH ", \"workers\": 4}");
    ck_assert(!c->workers_auto);
    ck_assert_int_eq(c->workers, 4);
    hd_conf_free(c);

    expect_error("{" AUTH ", \"workers\": \"Auto\"}",
                 "t.json: $.workers: must be \"auto\" or an integer between 1 "
                 "and 256, got \"Auto\"");
    expect_error("{" AUTH ", \"workers\": \"4\"}",
                 "t.json: $.workers: must be \"auto\" or an integer between 1 "
                 "and 256, got \"4\"");
    expect_error("{" AUTH ", \"workers\": 2.5}",
                 "t.json: $.workers: expected \"auto\" or integer, got real");
}
END_TEST

/* ---- files ------------------------------------------------------------- */

START_TEST(test_shipped_config)
{
    hd_conf_errors_t e = { 0 };
    hd_conf_t       *c = NULL;
    int              rc;

    /* its secrets are the development ones: refused outside --dev */
    hd_conf_dev_mode = false;
    rc = hd_conf_load(HD_SOURCE_ROOT "/" HD_CONF_DEFAULT_PATH, &c, &e);
    ck_assert_int_eq(rc, -EINVAL);
    ck_assert_uint_eq(e.n, 2);
    ck_assert_msg(strstr(e.msg[0],
                         "$.auth.hmac_secret: is the shipped "
                         "development secret")
                      != NULL,
                  "%s", e.msg[0]);
    ck_assert_msg(strstr(e.msg[1], "$.api.key: is the shipped") != NULL, "%s",
                  e.msg[1]);
    ck_assert(strstr(e.msg[0], "--dev") != NULL);
    ck_assert(strstr(e.msg[0], "change-me") == NULL); /* never echoed */
    hd_conf_errors_free(&e);

    hd_conf_dev_mode = true;
    rc = hd_conf_load(HD_SOURCE_ROOT "/" HD_CONF_DEFAULT_PATH, &c, &e);
    hd_conf_dev_mode = false;

    ck_assert_msg(rc == 0, "%s", e.n ? e.msg[0] : "");
    ck_assert(c->workers_auto);
    ck_assert_str_eq(c->listens[0].address, "0.0.0.0");
    ck_assert_int_eq(c->listens[0].port, 8080);
    ck_assert_str_eq(c->admin_address, "127.0.0.1");
    ck_assert_int_eq(c->admin_port, 9090);
    ck_assert_str_eq(c->redis_host, "127.0.0.1");
    ck_assert_int_eq(c->redis_port, 6379);
    ck_assert_ptr_nonnull(c->auth_hmac_secret);
    ck_assert(strncmp(c->auth_hmac_secret, "change-me-dev-secret-", 21) == 0);
    ck_assert(!c->auth_allow_anonymous);
    ck_assert_ptr_nonnull(c->api_key);
    ck_assert_int_eq(c->log_level, HD_LOG_INFO);
    ck_assert_int_eq(c->log_format, HD_LOG_FMT_AUTO);
    ck_assert_int_eq(c->shutdown_ms, 10000);
    ck_assert_int_eq(c->handshake_ms, 5000);
    hd_conf_free(c);
}
END_TEST

START_TEST(test_cannot_read)
{
    hd_conf_errors_t e = { 0 };
    hd_conf_t       *c = (hd_conf_t *) 1;

    ck_assert_int_eq(hd_conf_load("/nonexistent/herald.json", &c, &e), -ENOENT);
    ck_assert_ptr_null(c);
    ck_assert_uint_eq(e.n, 1);
    ck_assert_str_eq(e.msg[0],
                     "/nonexistent/herald.json: cannot read: "
                     "No such file or directory");
    hd_conf_errors_free(&e);

    ck_assert_int_eq(hd_conf_load(HD_CONF_TEST_DIR, &c, &e), -EISDIR);
    ck_assert_uint_eq(e.n, 1);
    ck_assert_str_eq(e.msg[0],
                     HD_CONF_TEST_DIR ": cannot read: Is a directory");
    hd_conf_errors_free(&e);
}
END_TEST

START_TEST(test_load_tmp_file)
{
    char             path[] = "/tmp/hd-conf-test-XXXXXX";
    int              fd = mkstemp(path);
    const char      *text = "{\"auth\": {\"allow_anonymous\": true},\n"
                            " \"listen\": {\"port\": 1234}}\n";
    hd_conf_errors_t e = { 0 };
    hd_conf_t       *c = NULL;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t) strlen(text));
    close(fd);
    ck_assert_int_eq(hd_conf_load(path, &c, &e), 0);
    ck_assert_str_eq(c->path, path);
    ck_assert_int_eq(c->listens[0].port, 1234);
    hd_conf_free(c);
    unlink(path);
}
END_TEST

/* ---- reload comparisons ------------------------------------------------ */

struct change {
    const char *json;
    bool        worker, listen;
};

START_TEST(test_changed_truth_table)
{
    static const struct change t[] = {
        { "\"workers\": 7", false, false },
        { "\"workers\": 1", false, false },
        { "\"listen\": {\"address\": \"127.0.0.1\"}", true, true },
        { "\"listen\": {\"port\": 8081}", true, true },
        { "\"listen\": {\"backlog\": 100}", true, true },
        { "\"admin\": {\"address\": \"::1\"}", false, false },
        { "\"admin\": {\"port\": 0}", false, false },
        { "\"admin\": {\"token\": \"0123456789abcdef\"}", false, false },
        { "\"redis\": {\"url\": \"redis://127.0.0.1:6380\"}", true, false },
        { "\"redis\": {\"url\": \"redis://127.0.0.1:6379/1\"}", true, false },
        { "\"redis\": {\"url\": \"redis://:pw@127.0.0.1:6379\"}", true, false },
        { "\"redis\": {\"url\": \"unix:///tmp/r.sock\"}", true, false },
        /* same target, other spelling: workers need not restart */
        { "\"redis\": {\"url\": \"redis://127.0.0.1\"}", false, false },
        { "\"auth\": {\"allow_anonymous\": true, \"hmac_secret\": \"" SECRET
          "\"}",
          true, false },
        { "\"auth\": {\"hmac_secret\": \"" SECRET "-other\"}", true, false },
        { "\"api\": {\"key\": \"0123456789abcdef\"}", true, false },
        { "\"log\": {\"level\": \"debug\"}", false, false },
        { "\"log\": {\"format\": \"json\"}", false, false },
        { "\"log\": {\"file\": \"/tmp/x.log\"}", false, false },
        { "\"timeouts\": {\"shutdown_ms\": 500}", true, false },
        { "\"timeouts\": {\"handshake_ms\": 500}", true, false },
    };
    hd_conf_t *base = load_ok("{" AUTH ", \"workers\": 2}");
    char       json[512];

    ck_assert(!hd_conf_worker_changed(base, base));
    ck_assert(!hd_conf_listen_changed(base, base));
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        /* base settings, unless the row sets them (no duplicate keys) */
        bool own_auth = strstr(t[i].json, "\"auth\"") != NULL;
        bool own_workers = strstr(t[i].json, "\"workers\"") != NULL;
        snprintf(json, sizeof(json), "{%s%s%s}", own_auth ? "" : AUTH ", ",
                 own_workers ? "" : "\"workers\": 2, ", t[i].json);
        hd_conf_t *b = load_ok(json);
        ck_assert_msg(hd_conf_worker_changed(base, b) == t[i].worker,
                      "worker_changed for %s", t[i].json);
        ck_assert_msg(hd_conf_worker_changed(b, base) == t[i].worker,
                      "worker_changed (reversed) for %s", t[i].json);
        ck_assert_msg(hd_conf_listen_changed(base, b) == t[i].listen,
                      "listen_changed for %s", t[i].json);
        ck_assert_msg(hd_conf_listen_changed(b, base) == t[i].listen,
                      "listen_changed (reversed) for %s", t[i].json);
        hd_conf_free(b);
    }
    hd_conf_free(base);
}
END_TEST

/*
 * Walk the table: change each key's field alone and check that the
 * comparisons see exactly what the row's reload class says. A new key with
 * a new type must teach mutate() about it, or this test fails.
 */
static void
mutate(hd_conf_t *c, const struct key *k)
{
    if (k->type == &T_INT || k->type == &T_ENUM) {
        *FIELD(c, k, int) += 1;
    } else if (k->type == &T_BOOL) {
        *FIELD(c, k, bool) = !*FIELD(c, k, bool);
    } else if (k->type == &T_STR) {
        char **f = FIELD(c, k, char *);
        char  *n = hd_asprintf("%s-changed", *f ? *f : "");
        free(*f);
        *f = n;
    } else if (k->type == &T_WORKERS) {
        c->workers += 1;
    } else if (k->type == &hd_conf_type_redis) {
        c->redis_port += 1;
    } else if (k->type == &hd_conf_type_redis_sentinel) {
        ck_assert_ptr_null(c->redis_sentinel);
        c->redis_sentinel = hd_calloc(1, sizeof(*c->redis_sentinel));
    } else if (k->type == &hd_conf_type_redis_shards) {
        c->redis_shard_list = hd_calloc(1, sizeof(*c->redis_shard_list));
        c->nredis_shard_list = 1;
    } else if (k->type == &hd_conf_type_origins) {
        c->allowed_origins = hd_realloc(
            c->allowed_origins, (c->nallowed_origins + 2) * sizeof(char *));
        c->allowed_origins[c->nallowed_origins++] = hd_strdup("https://x.test");
        c->allowed_origins[c->nallowed_origins] = NULL;
    } else if (k->type == &hd_conf_type_trusted) {
        c->trusted_proxies = hd_realloc(c->trusted_proxies,
                                        (c->ntrusted_proxies + 1)
                                            * sizeof(*c->trusted_proxies));
        memset(&c->trusted_proxies[c->ntrusted_proxies], 0,
               sizeof(*c->trusted_proxies));
        c->ntrusted_proxies++;
    } else if (k->type == &hd_conf_type_listen) {
        ck_assert_uint_gt(c->nlistens, 0);
        c->listens[0].port += 1;
    } else if (k->type == &hd_conf_type_namespaces) {
        ck_assert_uint_gt(c->nnamespaces, 0);
        c->namespaces[0].history_size += 1;
    } else if (k->type == &hd_conf_type_headers) {
        c->proxy_headers = hd_realloc(c->proxy_headers,
                                      (c->nproxy_headers + 2) * sizeof(char *));
        c->proxy_headers[c->nproxy_headers++] = hd_strdup("x-test");
        c->proxy_headers[c->nproxy_headers] = NULL;
    } else if (k->type == &hd_conf_type_algs) {
        c->auth_algs ^= 1u;
    } else if (k->type == &hd_conf_type_pubkeys) {
        c->auth_keys = hd_realloc(c->auth_keys,
                                  (c->nauth_keys + 1) * sizeof(*c->auth_keys));
        c->auth_keys[c->nauth_keys++] = (hd_conf_pubkey_t){
            .kid = hd_strdup("k"), .pem = hd_strdup("x"), .file = NULL
        };
    } else {
        ck_abort_msg("mutate() does not know the type of %s", k->path);
    }
}

START_TEST(test_changed_walks_table)
{
    const char *json = "{" AUTH
                       ", \"admin\": {\"token\": \"0123456789abcdef\"},"
                       " \"api\": {\"key\": \"0123456789abcdef\"}}";

    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        bool worker = k->reload == RELOAD_WORKER || k->reload == RELOAD_LISTEN;
        bool listen = k->reload == RELOAD_LISTEN;

        ck_assert_msg(k->reload != RELOAD_UNSET, "%s has no reload class",
                      k->path);
        hd_conf_t *a = load_ok(json), *b = load_ok(json);
        ck_assert(!hd_conf_worker_changed(a, b));
        mutate(b, k);
        ck_assert_msg(hd_conf_worker_changed(a, b) == worker, "%s", k->path);
        ck_assert_msg(hd_conf_listen_changed(a, b) == listen, "%s", k->path);
        hd_conf_free(a);
        hd_conf_free(b);
    }

    /* the classes the issue fixes */
    static const struct {
        const char *path;
        enum reload r;
    } want[] = {
        { "workers", RELOAD_MASTER },
        { "listen", RELOAD_LISTEN },
        { "admin.address", RELOAD_MASTER },
        { "admin.port", RELOAD_MASTER },
        { "admin.token", RELOAD_MASTER },
        { "redis.url", RELOAD_WORKER },
        { "auth.hmac_secret", RELOAD_WORKER },
        { "auth.allow_anonymous", RELOAD_WORKER },
        { "api.key", RELOAD_WORKER },
        { "log.level", RELOAD_MASTER },
        { "log.format", RELOAD_MASTER },
        { "log.file", RELOAD_MASTER },
        { "timeouts.shutdown_ms", RELOAD_WORKER },
        { "timeouts.handshake_ms", RELOAD_WORKER },
    };
    ck_assert_uint_ge(NKEYS, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        int idx = key_index(want[i].path);
        ck_assert_msg(idx >= 0, "%s missing from the table", want[i].path);
        ck_assert_msg(keys[idx].reload == want[i].r, "%s", want[i].path);
    }
}
END_TEST

/* docs/configuration.md names every key (as `path`). */
START_TEST(test_docs_cover_every_key)
{
    char *doc = read_all(HD_SOURCE_ROOT "/docs/configuration.md");

    for (size_t i = 0; i < NKEYS; i++) {
        char *needle = hd_asprintf("`%s`", keys[i].path);
        ck_assert_msg(strstr(doc, needle) != NULL,
                      "docs/configuration.md does not document %s",
                      keys[i].path);
        free(needle);
    }
    free(doc);
}
END_TEST

/* #16 item 13: the outbound queue holds the largest publication */
START_TEST(test_outq_holds_largest_publication)
{
    hd_conf_t *c;

    /* the defaults hold: 1 MiB >= 64 KiB + envelope */
    c = load_ok("{" AUTH "}");
    hd_conf_free(c);
    /* exactly enough */
    c = load_ok("{" AUTH ", \"limits\": {\"message_bytes\": 65536,"
                " \"outbound_queue_bytes\": 66560}}");
    hd_conf_free(c);
    expect_error("{" AUTH ", \"limits\": {\"outbound_queue_bytes\": 65536}}",
                 "t.json: $.limits.outbound_queue_bytes: must be at least "
                 "66560 (the largest publication: limits.message_bytes "
                 "65536, api.max_body_bytes 65536, plus 1024 bytes of "
                 "envelope), got 65536; a publication that large would "
                 "close every subscriber as a slow consumer");
    /* the HTTP API's body counts too */
    expect_error("{" AUTH ", \"limits\": {\"message_bytes\": 4096,"
                 " \"outbound_queue_bytes\": 100000},"
                 " \"api\": {\"max_body_bytes\": 200000}}",
                 "t.json: $.limits.outbound_queue_bytes: must be at least "
                 "201024 (the largest publication: limits.message_bytes "
                 "4096, api.max_body_bytes 200000, plus 1024 bytes of "
                 "envelope), got 100000; a publication that large would "
                 "close every subscriber as a slow consumer");
    /* a key that is itself bad gives one error, not two */
    expect_error("{" AUTH ", \"limits\": {\"message_bytes\": 1,"
                 " \"outbound_queue_bytes\": 65536}}",
                 "t.json: $.limits.message_bytes: must be between 1024 and "
                 "16777216, got 1");
}
END_TEST

/* #16 item 14: an admin server off loopback needs a token */
START_TEST(test_admin_token_off_loopback)
{
    static const char *const loop[] = { "127.0.0.1", "127.8.9.1", "::1",
                                        "::ffff:127.0.0.1" };
    static const char *const open_[] = { "0.0.0.0",     "::",
                                         "10.0.0.1",    "192.0.2.7",
                                         "2001:db8::1", "::ffff:10.0.0.1" };
    char                     json[256], want[256];
    hd_conf_t               *c;

    for (size_t i = 0; i < sizeof(loop) / sizeof(loop[0]); i++) {
        snprintf(json, sizeof(json),
                 "{" AUTH ", \"admin\": {\"address\": \"%s\"}}", loop[i]);
        c = load_ok(json);
        hd_conf_free(c);
    }
    for (size_t i = 0; i < sizeof(open_) / sizeof(open_[0]); i++) {
        snprintf(json, sizeof(json),
                 "{" AUTH ", \"admin\": {\"address\": \"%s\"}}", open_[i]);
        snprintf(want, sizeof(want),
                 "t.json: $.admin.token: required (admin.token or "
                 "admin.token_file) when admin.address (\"%s\") is not a "
                 "loopback address",
                 open_[i]);
        expect_error(json, want);
        /* with a token, or with the admin server off, it is fine */
        snprintf(json, sizeof(json),
                 "{" AUTH ", \"admin\": {\"address\": \"%s\","
                 " \"token\": \"admin-token-0123456789\"}}",
                 open_[i]);
        c = load_ok(json);
        hd_conf_free(c);
        snprintf(json, sizeof(json),
                 "{" AUTH ", \"admin\": {\"address\": \"%s\","
                 " \"port\": 0}}",
                 open_[i]);
        c = load_ok(json);
        hd_conf_free(c);
    }
    /* a token from a file counts */
    {
        char             path[] = "/tmp/hd-conf-admin-XXXXXX";
        int              fd = mkstemp(path);
        hd_conf_errors_t e = { 0 };
        char             doc[512];

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, "admin-token-from-a-file-0123", 28), 28);
        close(fd);
        snprintf(doc, sizeof(doc),
                 "{" AUTH ", \"admin\": {\"address\": \"0.0.0.0\","
                 " \"token_file\": \"%s\"}}",
                 path);
        c = NULL;
        ck_assert_int_eq(
            hd_conf_load_string("t.json", doc, strlen(doc), &c, &e), 0);
        ck_assert_ptr_nonnull(c->admin_token);
        hd_conf_free(c);
        hd_conf_errors_free(&e);
        unlink(path);
    }
}
END_TEST

/* #16 item 19: several listeners; the old one-object form still works */
START_TEST(test_listen_many)
{
    hd_conf_t *c, *d;

    c = load_ok("{" AUTH ", \"listen\": {\"address\": \"::\", \"port\": 81}}");
    ck_assert_uint_eq(c->nlistens, 1);
    ck_assert_str_eq(c->listens[0].address, "::");
    ck_assert_int_eq(c->listens[0].port, 81);
    ck_assert(!c->listens[0].ipv6_only); /* "::" is dual-stack by default */
    ck_assert(!c->listens[0].proxy_protocol);
    hd_conf_free(c);

    c = load_ok("{" AUTH ", \"listen\": ["
                "{\"address\": \"127.0.0.1\", \"port\": 8080},"
                "{\"address\": \"::1\", \"port\": 8080, \"backlog\": 7},"
                "{\"address\": \"::\", \"port\": 8081, \"ipv6_only\": true,"
                " \"proxy_protocol\": true}]}");
    ck_assert_uint_eq(c->nlistens, 3);
    ck_assert_str_eq(c->listens[0].address, "127.0.0.1");
    ck_assert_int_eq(c->listens[0].backlog, 4096);
    ck_assert_str_eq(c->listens[1].address, "::1");
    ck_assert_int_eq(c->listens[1].port, 8080);
    ck_assert_int_eq(c->listens[1].backlog, 7);
    ck_assert(c->listens[2].ipv6_only);
    ck_assert(c->listens[2].proxy_protocol);
    ck_assert_int_eq(c->listens[2].port, 8081);
    /* a listener more, or one flag changed: reopen */
    d = load_ok("{" AUTH ", \"listen\": ["
                "{\"address\": \"127.0.0.1\", \"port\": 8080},"
                "{\"address\": \"::1\", \"port\": 8080, \"backlog\": 7},"
                "{\"address\": \"::\", \"port\": 8081, \"ipv6_only\": true}]}");
    ck_assert(hd_conf_listen_changed(c, d));
    hd_conf_free(d);
    d = load_ok("{" AUTH ", \"listen\": {\"address\": \"127.0.0.1\"}}");
    ck_assert(hd_conf_listen_changed(c, d));
    hd_conf_free(d);
    hd_conf_free(c);

    expect_error("{" AUTH ", \"listen\": []}",
                 "t.json: $.listen: must hold 1 to 16 listeners, got 0");
    expect_error("{" AUTH ", \"listen\": [{\"port\": 1}, {\"port\": 1}]}",
                 "t.json: $.listen: listeners 0 and 1 both use 0.0.0.0 port 1");
    expect_error("{" AUTH ", \"listen\": [{\"port\": 1}, 7]}",
                 "t.json: $.listen[1]: expected object, got integer");
    expect_error("{" AUTH ", \"listen\": [{\"port\": 1},"
                 " {\"address\": \"x\"}]}",
                 "t.json: $.listen[1].address: must be an IPv4 or IPv6 "
                 "address literal, got \"x\"");
    expect_error("{" AUTH ", \"listen\": [{\"ipv6only\": true}]}",
                 "t.json: $.listen[0].ipv6only: unknown key (did you mean "
                 "\"ipv6_only\"?)");
    expect_error("{" AUTH ", \"listen\": {\"proxy_protocol\": 1}}",
                 "t.json: $.listen.proxy_protocol: expected boolean, got "
                 "integer");
}
END_TEST

static bool
trusted(const hd_conf_t *c, const char *addr)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, addr, &((struct sockaddr_in *) &ss)->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, addr,
                       &((struct sockaddr_in6 *) &ss)->sin6_addr)
             == 1)
        ss.ss_family = AF_INET6;
    else
        ck_abort_msg("bad test address %s", addr);
    return hd_conf_trusted_proxy(c, (struct sockaddr *) &ss);
}

/* #16 item 15: X-Forwarded-For / X-Real-IP only from these networks */
START_TEST(test_trusted_proxies)
{
    hd_conf_t *c = load_ok("{" AUTH "}");

    ck_assert_uint_eq(c->ntrusted_proxies, 0);
    ck_assert(!trusted(c, "127.0.0.1")); /* nobody by default */
    hd_conf_free(c);

    c = load_ok("{" AUTH ", \"security\": {\"trusted_proxies\": "
                "[\"10.0.0.0/8\", \"192.0.2.128/25\", \"127.0.0.1\","
                " \"fd00::/8\", \"::1\", \"0.0.0.0/0\"]}}");
    ck_assert_uint_eq(c->ntrusted_proxies, 6);
    hd_conf_free(c);
    c = load_ok("{" AUTH ", \"security\": {\"trusted_proxies\": "
                "[\"10.0.0.0/8\", \"192.0.2.128/25\", \"127.0.0.1\","
                " \"fd00::/8\", \"::1\"]}}");
    ck_assert(trusted(c, "10.1.2.3"));
    ck_assert(!trusted(c, "11.0.0.1"));
    ck_assert(trusted(c, "192.0.2.200"));
    ck_assert(!trusted(c, "192.0.2.127"));
    ck_assert(trusted(c, "127.0.0.1"));
    ck_assert(!trusted(c, "127.0.0.2"));
    ck_assert(trusted(c, "::ffff:10.9.9.9")); /* IPv4 on a dual-stack "::" */
    ck_assert(!trusted(c, "::ffff:11.9.9.9"));
    ck_assert(trusted(c, "fd12::1"));
    ck_assert(!trusted(c, "fe80::1"));
    ck_assert(trusted(c, "::1"));
    ck_assert(!trusted(c, "::2"));
    hd_conf_free(c);

    expect_error("{" AUTH ", \"security\": {\"trusted_proxies\": "
                 "[\"10.0.0.1/8\"]}}",
                 "t.json: $.security.trusted_proxies[0]: has address bits "
                 "set past the prefix length, got \"10.0.0.1/8\"");
    expect_error("{" AUTH ", \"security\": {\"trusted_proxies\": "
                 "[\"10.0.0.0/33\"]}}",
                 "t.json: $.security.trusted_proxies[0]: bad prefix length, "
                 "got \"10.0.0.0/33\"");
    expect_error("{" AUTH ", \"security\": {\"trusted_proxies\": "
                 "[\"proxy.local\"]}}",
                 "t.json: $.security.trusted_proxies[0]: must be an address "
                 "or a network (\"10.0.0.0/8\", \"fd00::/8\"), got "
                 "\"proxy.local\"");
    expect_error("{" AUTH ", \"security\": {\"trusted_proxies\": "
                 "\"10.0.0.0/8\"}}",
                 "t.json: $.security.trusted_proxies: expected array of "
                 "strings, got string");
}
END_TEST

static Suite *
conf_suite(void)
{
    Suite *s = suite_create("conf");
    TCase *tc = tcase_create("load");

    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_every_key);
    tcase_add_test(tc, test_full_json_sets_every_key);
    tcase_add_test(tc, test_namespaces);
    tcase_add_test(tc, test_null_optional);
    tcase_add_test(tc, test_syntax_error_file);
    tcase_add_test(tc, test_syntax_errors_inline);
    tcase_add_test(tc, test_duplicate_key);
    tcase_add_test(tc, test_top_level_not_object);
    tcase_add_test(tc, test_unknown_keys);
    tcase_add_test(tc, test_wrong_types);
    tcase_add_test(tc, test_bad_section_one_error);
    tcase_add_test(tc, test_ranges);
    tcase_add_test(tc, test_enums);
    tcase_add_test(tc, test_enum_names_match_log);
    tcase_add_test(tc, test_addresses);
    tcase_add_test(tc, test_redis_good);
    tcase_add_test(tc, test_redis_bad);
    tcase_add_test(tc, test_redis_targets);
    tcase_add_test(tc, test_secret_lengths);
    tcase_add_test(tc, test_missing_secret);
    tcase_add_test(tc, test_no_secret_in_errors);
    tcase_add_test(tc, test_register_secrets);
    tcase_add_test(tc, test_three_errors_one_pass);
    tcase_add_test(tc, test_errors_accumulate);
    tcase_add_test(tc, test_workers);
    tcase_add_test(tc, test_shipped_config);
    tcase_add_test(tc, test_cannot_read);
    tcase_add_test(tc, test_load_tmp_file);
    tcase_add_test(tc, test_changed_truth_table);
    tcase_add_test(tc, test_changed_walks_table);
    tcase_add_test(tc, test_docs_cover_every_key);
    tcase_add_test(tc, test_outq_holds_largest_publication);
    tcase_add_test(tc, test_listen_many);
    tcase_add_test(tc, test_trusted_proxies);
    tcase_add_test(tc, test_admin_token_off_loopback);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(conf_suite());
    int      failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
