/*
 * Unit tests for worker/hd_publish.c, the publish path shared by the
 * WebSocket "publish" command and the HTTP API: what a client and what the
 * API may publish (and subscribe) to, with which code and message, the
 * Redis key, the data and idempotency-key checks, and "nothing sent" when
 * Redis is down (the worker's Redis connections are never started here).
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hd_test_conf.h"

#include "hd_codes.h"
#include "hd_jwt.h"
#include "hd_publish.h"
#include "hd_worker_int.h"

static hd_conf_t *conf;

static void
setup(void)
{
    static const char json[] =
        "{\"workers\": 1, \"auth\": {\"allow_anonymous\": true},"
        " \"namespaces\": {\"default\": {},"
        " \"chat\": {\"publish\": true},"
        " \"open\": {\"anonymous\": true, \"publish\": true}}}";

    conf = hd_test_conf(json);
    hd_w.conf = conf;
}

static void
teardown(void)
{
    hd_conf_free(conf);
    hd_w.conf = NULL;
}

static const hd_publisher_t client = { .server = false };
static const hd_publisher_t anonymous = { .server = false, .anonymous = true };
static const hd_publisher_t api = { .server = true, .tenant = "acme" };

static int
resolve(const hd_publisher_t *who, const char *name, bool publish,
        hd_pub_error_t *e)
{
    hd_pub_target_t t;

    memset(e, 0, sizeof(*e));
    return hd_pub_resolve(who, name, strlen(name), publish, &t, e);
}

START_TEST(names_and_namespaces)
{
    hd_pub_error_t  e;
    hd_pub_target_t t;

    ck_assert_int_eq(hd_pub_resolve(&client, "chat:room", 9, true, &t, &e), 0);
    ck_assert_str_eq(t.ns->name, "chat");
    ck_assert_uint_eq(t.name_len, 9);
    ck_assert_int_eq(resolve(&client, "lobby", false, &e), 0);

    /* a bad name: 400 for both, each front end's wording */
    ck_assert_int_eq(resolve(&client, "bad name", true, &e), -EINVAL);
    ck_assert_int_eq(e.why, HD_PUB_INVALID);
    ck_assert_int_eq(e.code, HD_ERR_BAD_REQUEST);
    ck_assert_str_eq(e.msg,
                     "invalid channel name: 1..255 bytes of [A-Za-z0-9_.:@-]");
    ck_assert_int_eq(resolve(&api, "bad name", true, &e), -EINVAL);
    ck_assert_str_eq(e.msg, "\"channel\" must be a valid channel name");

    /* an unknown namespace: 403 for a client, 400 for the API */
    ck_assert_int_eq(resolve(&client, "nope:x", false, &e), -EACCES);
    ck_assert_int_eq(e.why, HD_PUB_UNKNOWN_NS);
    ck_assert_int_eq(e.code, HD_ERR_FORBIDDEN);
    ck_assert_str_eq(e.msg, "unknown namespace \"nope\"");
    ck_assert_int_eq(resolve(&api, "nope:x", true, &e), -EINVAL);
    ck_assert_int_eq(e.code, HD_ERR_BAD_REQUEST);
    /* ":x" names the empty namespace, which no config can have */
    ck_assert_int_eq(resolve(&api, ":x", true, &e), -EINVAL);
    ck_assert_int_eq(e.why, HD_PUB_UNKNOWN_NS);
}
END_TEST

START_TEST(client_permissions)
{
    hd_pub_error_t  e;
    hd_jwt_claims_t claims = { 0 };
    char           *allow[] = { "chat:a*", "lobby", NULL };
    hd_publisher_t  token = { .claims = &claims };

    /* anonymous clients: only where the namespace allows them */
    ck_assert_int_eq(resolve(&anonymous, "lobby", false, &e), -EACCES);
    ck_assert_int_eq(e.why, HD_PUB_ANONYMOUS);
    ck_assert_int_eq(e.code, HD_ERR_FORBIDDEN);
    ck_assert_int_eq(resolve(&anonymous, "open:x", true, &e), 0);

    /* client publishing: only where the namespace allows it; subscribing
     * to the same channel is fine */
    ck_assert_int_eq(resolve(&client, "lobby", true, &e), -EACCES);
    ck_assert_int_eq(e.why, HD_PUB_NO_PUBLISH);
    ck_assert_str_eq(e.msg,
                     "namespace \"default\" does not allow client publishing");
    ck_assert_int_eq(resolve(&client, "lobby", false, &e), 0);

    /* the token's allow-list, prefixes with '*' */
    claims.channels = allow;
    claims.nchannels = 2;
    ck_assert_int_eq(resolve(&token, "chat:abc", true, &e), 0);
    ck_assert_int_eq(resolve(&token, "lobby", false, &e), 0);
    ck_assert_int_eq(resolve(&token, "chat:zzz", true, &e), -EACCES);
    ck_assert_int_eq(e.why, HD_PUB_NOT_ALLOWED);
    ck_assert_int_eq(e.code, HD_ERR_FORBIDDEN);

    /* the API (a backend with the API key) is none of these */
    ck_assert_int_eq(resolve(&api, "lobby", true, &e), 0);
    ck_assert_int_eq(resolve(&api, "chat:zzz", true, &e), 0);
}
END_TEST

START_TEST(keys_carry_the_tenant)
{
    hd_pub_error_t  e;
    hd_pub_target_t t;
    char            key[HD_KEY_MAX];
    size_t          off, n;
    hd_publisher_t  none = { .server = true };

    ck_assert_int_eq(hd_pub_resolve(&api, "chat:x", 6, true, &t, &e), 0);
    n = hd_pub_key(&api, &t, key, &off);
    ck_assert_uint_gt(n, 0);
    ck_assert_int_eq(strncmp(key, "herald|acme|chat:x", n), 0);
    ck_assert_uint_eq(n, strlen("herald|acme|chat:x"));
    ck_assert_int_eq(strncmp(key + off, "chat:x", 6), 0);
    n = hd_pub_key(&none, &t, key, &off);
    ck_assert_int_eq(strncmp(key, "herald||chat:x", n), 0);
}
END_TEST

START_TEST(data_and_idempotency_keys)
{
    hd_pub_error_t e;
    const char    *idem;
    json_t        *data = json_pack("{s:i, s:[s]}", "a", 1, "b", "x");
    json_t        *v;
    char          *text;

    text = hd_pub_encode(data, &e);
    ck_assert_str_eq(text, "{\"a\":1,\"b\":[\"x\"]}");
    free(text);
    json_decref(data);
    ck_assert_ptr_null(hd_pub_encode(NULL, &e));
    ck_assert_int_eq(e.why, HD_PUB_NO_DATA);
    ck_assert_int_eq(e.code, HD_ERR_BAD_REQUEST);

    ck_assert_int_eq(hd_pub_idem_key(NULL, &idem, &e), 0);
    ck_assert_ptr_null(idem);
    v = json_string("order-42/retry+1");
    ck_assert_int_eq(hd_pub_idem_key(v, &idem, &e), 0);
    ck_assert_str_eq(idem, "order-42/retry+1");
    json_decref(v);
    v = json_string("has space");
    ck_assert_int_eq(hd_pub_idem_key(v, &idem, &e), -EINVAL);
    ck_assert_int_eq(e.code, HD_ERR_BAD_REQUEST);
    json_decref(v);
    v = json_integer(7);
    ck_assert_int_eq(hd_pub_idem_key(v, &idem, &e), -EINVAL);
    json_decref(v);
}
END_TEST

static void
never(int err, uint64_t offset, const char *epoch, void *arg)
{
    (void) err;
    (void) offset;
    (void) epoch;
    (void) arg;
    ck_abort_msg("the callback ran although nothing was sent");
}

/* history's "limit" and "since": one reading for the client command and
 * the HTTP API */
static int
hist(const char *params, unsigned *limit, int64_t *since, const char **epoch,
     hd_pub_error_t *e)
{
    static const hd_ns_t ns = { .name = "h", .history_size = 50 };
    json_t              *p = params ? json_loads(params, 0, NULL) : NULL;
    int                  rc;

    memset(e, 0, sizeof(*e));
    rc = hd_pub_history_args(p, &ns, limit, since, epoch, e);
    if (rc == 0 && *epoch != NULL) {
        static char keep[32];
        snprintf(keep, sizeof(keep), "%s", *epoch); /* p goes away */
        *epoch = keep;
    }
    json_decref(p);
    return rc;
}

START_TEST(history_arguments)
{
    static const char *bad_limit[] = { "{\"limit\": 0}", "{\"limit\": -3}",
                                       "{\"limit\": \"5\"}",
                                       "{\"limit\": 1.5}" };
    static const char *bad_since[] = {
        "{\"since\": 3}",
        "{\"since\": {\"offset\": 3}}",
        "{\"since\": {\"offset\": -1, \"epoch\": \"e1\"}}",
        "{\"since\": {\"offset\": 3, \"epoch\": \"not an epoch\"}}",
    };
    unsigned       limit;
    int64_t        since;
    const char    *epoch;
    hd_pub_error_t e;

    /* no params (a command without any): the defaults, capped */
    ck_assert_int_eq(hist(NULL, &limit, &since, &epoch, &e), 0);
    ck_assert_uint_eq(limit, 50);
    ck_assert_int_eq(since, -1);
    ck_assert_ptr_null(epoch);
    ck_assert_int_eq(hist("{\"limit\": 7}", &limit, &since, &epoch, &e), 0);
    ck_assert_uint_eq(limit, 7);
    ck_assert_int_eq(
        hist("{\"limit\": 1099511627776}", &limit, &since, &epoch, &e), 0);
    ck_assert_uint_eq(limit, 50);
    ck_assert_int_eq(
        hist("{\"since\": {\"offset\": 40, \"epoch\": \"8e46f1\"}}", &limit,
             &since, &epoch, &e),
        0);
    ck_assert_int_eq(since, 40);
    ck_assert_str_eq(epoch, "8e46f1");
    for (size_t i = 0; i < sizeof(bad_limit) / sizeof(bad_limit[0]); i++) {
        ck_assert_int_eq(hist(bad_limit[i], &limit, &since, &epoch, &e),
                         -EINVAL);
        ck_assert_int_eq(e.code, HD_ERR_BAD_REQUEST);
        ck_assert_str_eq(e.msg, "\"limit\" must be a positive integer");
    }
    for (size_t i = 0; i < sizeof(bad_since) / sizeof(bad_since[0]); i++) {
        ck_assert_int_eq(hist(bad_since[i], &limit, &since, &epoch, &e),
                         -EINVAL);
        ck_assert_int_eq(e.code, HD_ERR_BAD_REQUEST);
        ck_assert_ptr_nonnull(strstr(e.msg, "\"since\" must be"));
    }
}
END_TEST

START_TEST(nothing_is_sent_while_redis_is_down)
{
    hd_pub_error_t  e;
    hd_pub_target_t t;

    ck_assert_int_eq(hd_pub_resolve(&api, "chat:x", 6, true, &t, &e), 0);
    ck_assert_int_eq(hd_pub_publish(&api, &t, "1", 1, NULL, never, NULL),
                     -ENOTCONN);
}
END_TEST

static Suite *
pub_suite(void)
{
    Suite *s = suite_create("publish");
    TCase *tc = tcase_create("path");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, names_and_namespaces);
    tcase_add_test(tc, client_permissions);
    tcase_add_test(tc, keys_carry_the_tenant);
    tcase_add_test(tc, data_and_idempotency_keys);
    tcase_add_test(tc, nothing_is_sent_while_redis_is_down);
    tcase_add_test(tc, history_arguments);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(pub_suite());
    int      failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
