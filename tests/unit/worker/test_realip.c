/*
 * Unit tests for a connection's client address (worker/hd_realip.c and
 * hd_conn_addr()/hd_conn_log_addr() in worker/hd_conn.c). The address is
 * kept once, binary, in the fd-indexed table; a connection formats it
 * only when something shows it: IPv4, IPv6, an IPv4-mapped IPv6 peer of a
 * dual-stack listener, and an address a PROXY header or forwarded header
 * set later must all read back as the text the logs used to carry.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "hd_conn.h"
#include "hd_realip.h"
#include "hd_worker_int.h"

static hd_conf_t conf;

static void
setup(void)
{
    memset(&conf, 0, sizeof(conf));
    conf.log_client_addresses = true;
    hd_w.conf = &conf;
    ck_assert_int_eq(hd_realip_init(64), 0);
}

static void
teardown(void)
{
    hd_realip_shutdown();
}

static void
set4(int fd, const char *a, uint16_t port)
{
    struct sockaddr_in s = { .sin_family = AF_INET, .sin_port = htons(port) };

    ck_assert_int_eq(inet_pton(AF_INET, a, &s.sin_addr), 1);
    hd_realip_set(fd, (struct sockaddr *) &s);
}

static void
set6(int fd, const char *a, uint16_t port)
{
    struct sockaddr_in6 s = { .sin6_family = AF_INET6,
                              .sin6_port = htons(port) };

    ck_assert_int_eq(inet_pton(AF_INET6, a, &s.sin6_addr), 1);
    hd_realip_set(fd, (struct sockaddr *) &s);
}

static hd_conn_t
conn_on(int fd)
{
    hd_conn_t c;

    memset(&c, 0, sizeof(c));
    c.fd = fd;
    c.established = true;
    return c;
}

START_TEST(address_of_each_family_reads_back_as_text)
{
    char      buf[INET6_ADDRSTRLEN];
    hd_conn_t a = conn_on(5), b = conn_on(6), m = conn_on(7);

    set4(5, "192.0.2.7", 40000);
    set6(6, "2001:db8::1", 40001);
    set6(7, "::ffff:198.51.100.9", 40002); /* dual-stack "::" listener */
    ck_assert_str_eq(hd_conn_addr(&a, buf, sizeof(buf)), "192.0.2.7");
    ck_assert_str_eq(hd_conn_addr(&b, buf, sizeof(buf)), "2001:db8::1");
    ck_assert_str_eq(hd_conn_addr(&m, buf, sizeof(buf)), "198.51.100.9");
    /* the longest IPv6 text fits */
    set6(6, "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", 1);
    ck_assert_str_eq(hd_conn_log_addr(&b),
                     "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
}
END_TEST

START_TEST(address_follows_what_the_proxy_header_set)
{
    /* accept4() gave the proxy's address; the PROXY header (or a trusted
     * X-Forwarded-For) replaced it before the upgrade: the connection
     * shows the client's */
    hd_conn_t c = conn_on(9);

    set4(9, "127.0.0.1", 50000);
    ck_assert_str_eq(hd_conn_log_addr(&c), "127.0.0.1");
    set6(9, "2001:db8::44", 40000);
    ck_assert_str_eq(hd_conn_log_addr(&c), "2001:db8::44");
}
END_TEST

START_TEST(no_address_without_socket_or_with_logging_off)
{
    char      buf[INET6_ADDRSTRLEN] = "junk";
    hd_conn_t c = conn_on(3), unset = conn_on(4), early = conn_on(3);

    set4(3, "203.0.113.5", 1);
    early.established = false; /* no socket of its own yet */
    ck_assert_str_eq(hd_conn_addr(&early, buf, sizeof(buf)), "");
    ck_assert_str_eq(hd_conn_addr(&unset, buf, sizeof(buf)), "");
    c.fd = 64; /* past the table */
    ck_assert_str_eq(hd_conn_addr(&c, buf, sizeof(buf)), "");
    c.fd = 3;
    ck_assert_str_eq(hd_conn_log_addr(&c), "203.0.113.5");
    conf.log_client_addresses = false;
    ck_assert_str_eq(hd_conn_log_addr(&c), "-");
}
END_TEST

static Suite *
realip_suite(void)
{
    Suite *s = suite_create("realip");
    TCase *tc = tcase_create("addr");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, address_of_each_family_reads_back_as_text);
    tcase_add_test(tc, address_follows_what_the_proxy_header_set);
    tcase_add_test(tc, no_address_without_socket_or_with_logging_off);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(realip_suite());
    int      failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
