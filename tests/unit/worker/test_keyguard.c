/*
 * Unit tests for the wrong-API-key throttle (worker/hd_keyguard.c): the
 * limit per address and window, IPv6 by /64, and a table that stays
 * bounded and keeps working under a flood from many addresses.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <string.h>

#include "hd_keyguard.h"
#include "hd_worker_int.h"

static hd_conf_t conf;

static void
setup(void)
{
    memset(&conf, 0, sizeof(conf));
    conf.api_auth_fail_limit = 3;
    conf.api_auth_fail_window_ms = 10000;
    hd_w.conf = &conf;
    hd_keyguard_reset();
}

static struct sockaddr_storage
addr(const char *s)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, s, &((struct sockaddr_in *) &ss)->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, s, &((struct sockaddr_in6 *) &ss)->sin6_addr)
             == 1)
        ss.ss_family = AF_INET6;
    else
        ck_abort_msg("bad address %s", s);
    return ss;
}

#define SA(x) ((struct sockaddr *) &(x))

START_TEST(test_limit_and_window)
{
    struct sockaddr_storage a = addr("192.0.2.1"), b = addr("192.0.2.2");
    unsigned                retry = 0;

    ck_assert(hd_keyguard_allowed(SA(a), 1000, NULL));
    ck_assert(!hd_keyguard_failed(SA(a), 1000));
    ck_assert(!hd_keyguard_failed(SA(a), 2000));
    ck_assert(hd_keyguard_allowed(SA(a), 2000, NULL));
    ck_assert(hd_keyguard_failed(SA(a), 3000)); /* the third: reported once */
    ck_assert(!hd_keyguard_allowed(SA(a), 3000, &retry));
    ck_assert_uint_eq(retry, 8);                 /* the window began at 1000 */
    ck_assert(!hd_keyguard_failed(SA(a), 3500)); /* not reported again */
    ck_assert(!hd_keyguard_allowed(SA(a), 10999, &retry));
    ck_assert_uint_eq(retry, 1);
    ck_assert(hd_keyguard_allowed(SA(b), 3000, NULL));  /* others unaffected */
    ck_assert(hd_keyguard_allowed(SA(a), 11000, NULL)); /* window over */
    ck_assert(!hd_keyguard_failed(SA(a), 11000));       /* a fresh count */
    ck_assert(hd_keyguard_allowed(SA(a), 11000, NULL));
}
END_TEST

START_TEST(test_ipv6_by_64_and_mapped)
{
    struct sockaddr_storage a = addr("2001:db8:1:2::1"),
                            a2 = addr("2001:db8:1:2:ffff::9"),
                            other = addr("2001:db8:1:3::1"),
                            v4 = addr("198.51.100.7"),
                            m = addr("::ffff:198.51.100.7");

    for (int i = 0; i < 3; i++)
        (void) hd_keyguard_failed(SA(a), 1000);
    ck_assert(!hd_keyguard_allowed(SA(a2), 1000, NULL)); /* same /64 */
    ck_assert(hd_keyguard_allowed(SA(other), 1000, NULL));
    for (int i = 0; i < 3; i++)
        (void) hd_keyguard_failed(SA(m), 1000);
    ck_assert(!hd_keyguard_allowed(SA(v4), 1000, NULL)); /* one address */
}
END_TEST

START_TEST(test_off)
{
    struct sockaddr_storage a = addr("192.0.2.1");

    conf.api_auth_fail_limit = 0;
    for (int i = 0; i < 100; i++)
        ck_assert(!hd_keyguard_failed(SA(a), 1000));
    ck_assert(hd_keyguard_allowed(SA(a), 1000, NULL));
}
END_TEST

/* A flood from 100000 addresses: the table holds 4096, so the oldest are
 * forgotten, but an address throttled just now stays throttled, and the
 * memory is the static table (nothing allocated). */
START_TEST(test_bounded_under_flood)
{
    struct sockaddr_storage a = addr("203.0.113.1");

    for (uint32_t i = 0; i < 100000; i++) {
        struct sockaddr_in s;
        memset(&s, 0, sizeof(s));
        s.sin_family = AF_INET;
        s.sin_addr.s_addr = htonl(0x0a000000u + i);
        (void) hd_keyguard_failed((struct sockaddr *) &s, 1000 + i / 100);
    }
    for (int i = 0; i < 3; i++)
        (void) hd_keyguard_failed(SA(a), 2000);
    ck_assert(!hd_keyguard_allowed(SA(a), 2001, NULL));
    /* more flood after it: a fresher entry survives the stalest-first
     * reuse as long as older ones are around to take */
    for (uint32_t i = 0; i < 2000; i++) {
        struct sockaddr_in s;
        memset(&s, 0, sizeof(s));
        s.sin_family = AF_INET;
        s.sin_addr.s_addr = htonl(0x0b000000u + i);
        (void) hd_keyguard_failed((struct sockaddr *) &s, 2002);
    }
    ck_assert(!hd_keyguard_allowed(SA(a), 2003, NULL));
}
END_TEST

static Suite *
keyguard_suite(void)
{
    Suite *s = suite_create("keyguard");
    TCase *tc = tcase_create("throttle");

    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_limit_and_window);
    tcase_add_test(tc, test_ipv6_by_64_and_mapped);
    tcase_add_test(tc, test_off);
    tcase_add_test(tc, test_bounded_under_flood);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(keyguard_suite());
    int      failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
