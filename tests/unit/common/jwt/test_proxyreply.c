/*
 * Unit tests for common/hd_proxyreply.c: the connect and subscribe
 * answers of the application's backend. An answer is ALLOW with the
 * claims a token would carry, DENY with a 4xx code and a printable
 * message, or GARBAGE (the client then gets 503, never a guess).
 */
#include <check.h>
#include <stdint.h>
#include <string.h>

#include "hd_proxyreply.h"

#define NOW INT64_C(1700000000)

static int
conn(const char *body, hd_jwt_claims_t *c, int *code, char *msg)
{
    return hd_proxy_parse_connect(body, strlen(body), NOW, c, code, msg,
                                  HD_PROXY_MSG_MAX + 1);
}

START_TEST(test_connect_allow)
{
    hd_jwt_claims_t c;
    int             code = 0;
    char            msg[HD_PROXY_MSG_MAX + 1];

    ck_assert_int_eq(conn("{\"result\":{\"user\":\"alice\",\"tenant\":\"acme\","
                          "\"channels\":[\"news:*\"],\"publish\":false,"
                          "\"info\":{\"n\":1},\"expires_at\":1700003600}}",
                          &c, &code, msg),
                     HD_PROXY_ALLOW);
    ck_assert_str_eq(c.sub, "alice");
    ck_assert_str_eq(c.tenant, "acme");
    ck_assert_uint_eq(c.nchannels, 1);
    ck_assert_int_eq(c.publish, HD_JWT_PUB_NO);
    ck_assert_int_eq(c.exp, 1700003600);
    ck_assert_str_eq(c.info, "{\"n\":1}");
    hd_jwt_claims_free(&c);

    /* no expires_at: the connection does not expire */
    ck_assert_int_eq(conn("{\"result\":{\"user\":\"u\"}}", &c, &code, msg),
                     HD_PROXY_ALLOW);
    ck_assert_int_eq(c.exp, INT64_MAX);
    ck_assert_ptr_null(c.tenant);
    hd_jwt_claims_free(&c);
}
END_TEST

START_TEST(test_connect_deny)
{
    hd_jwt_claims_t c;
    int             code = 0;
    char            msg[HD_PROXY_MSG_MAX + 1];

    ck_assert_int_eq(conn("{\"error\":{\"code\":401,\"message\":\"log in\"}}",
                          &c, &code, msg),
                     HD_PROXY_DENY);
    ck_assert_int_eq(code, 401);
    ck_assert_str_eq(msg, "log in");
    ck_assert_ptr_null(c.sub);
    /* a code outside 4xx becomes 403; control bytes are not passed on */
    ck_assert_int_eq(conn("{\"error\":{\"code\":500,\"message\":\"a\\nb\"}}",
                          &c, &code, msg),
                     HD_PROXY_DENY);
    ck_assert_int_eq(code, 403);
    ck_assert_str_eq(msg, "a?b");
    ck_assert_int_eq(conn("{\"error\":{}}", &c, &code, msg), HD_PROXY_DENY);
    ck_assert_int_eq(code, 403);
    ck_assert_str_eq(msg, "refused by the application");
}
END_TEST

START_TEST(test_connect_garbage)
{
    static const char *const bad[] = {
        "",
        "not json",
        "[]",
        "{}",
        "{\"result\":{}}",                                /* no user */
        "{\"result\":{\"user\":\"\"}}",                   /* empty user */
        "{\"result\":{\"user\":\"u\",\"admin\":true}}",   /* unknown field */
        "{\"result\":{\"user\":\"u\",\"expires_at\":1}}", /* expired */
        "{\"result\":{\"user\":\"u\",\"tenant\":\"a b\"}}",
        "{\"result\":{\"user\":\"u\",\"channels\":\"x\"}}",
        "{\"result\":{\"user\":\"u\"},\"error\":{\"code\":403}}",
        "{\"result\":[]}",
        "{\"error\":\"no\"}",
        "{\"result\":{\"user\":\"u\"},\"result\":{\"user\":\"v\"}}",
    };
    hd_jwt_claims_t c;
    int             code;
    char            msg[HD_PROXY_MSG_MAX + 1];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(conn(bad[i], &c, &code, msg) == HD_PROXY_GARBAGE, "%s",
                      bad[i]);
        ck_assert_ptr_null(c.sub);
    }
}
END_TEST

START_TEST(test_subscribe)
{
    int  code = 0;
    char msg[HD_PROXY_MSG_MAX + 1];

    ck_assert_int_eq(hd_proxy_parse_subscribe("{\"result\":{}}", 13, &code, msg,
                                              sizeof(msg)),
                     HD_PROXY_ALLOW);
    ck_assert_int_eq(hd_proxy_parse_subscribe("{\"error\":{\"code\":404}}", 22,
                                              &code, msg, sizeof(msg)),
                     HD_PROXY_DENY);
    ck_assert_int_eq(code, 404);
    ck_assert_int_eq(hd_proxy_parse_subscribe("{\"result\":{\"x\":1}}", 18,
                                              &code, msg, sizeof(msg)),
                     HD_PROXY_GARBAGE);
    ck_assert_int_eq(hd_proxy_parse_subscribe("ok", 2, &code, msg, sizeof(msg)),
                     HD_PROXY_GARBAGE);
}
END_TEST

int
main(void)
{
    Suite   *s = suite_create("proxyreply");
    TCase   *tc = tcase_create("parse");
    SRunner *sr;
    int      failed;

    tcase_add_test(tc, test_connect_allow);
    tcase_add_test(tc, test_connect_deny);
    tcase_add_test(tc, test_connect_garbage);
    tcase_add_test(tc, test_subscribe);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
