/*
 * The PROXY protocol parser: v1 and v2 headers as HAProxy sends them, what
 * the spec allows, and everything that must be refused; every strict
 * prefix of a valid header asks for more bytes, never a verdict.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "hd_proxy.h"

static const uint8_t SIG[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

/* parse s (n bytes); a valid header's every strict prefix must give 0 */
static int
parse_all(const uint8_t *s, size_t n, hd_proxy_info_t *pi)
{
    int r = hd_proxy_parse(s, n, pi);

    if (r > 0)
        for (size_t k = 0; k < (size_t) r; k++) {
            hd_proxy_info_t tmp;
            ck_assert_msg(hd_proxy_parse(s, k, &tmp) == 0,
                          "prefix of %zu of a %d-byte header: not 0", k, r);
        }
    return r;
}

static const char *
src_text(const hd_proxy_info_t *pi, char *buf, size_t len, unsigned *port)
{
    if (pi->src.ss_family == AF_INET) {
        const struct sockaddr_in *s = (const void *) &pi->src;
        *port = ntohs(s->sin_port);
        return inet_ntop(AF_INET, &s->sin_addr, buf, (socklen_t) len);
    }
    const struct sockaddr_in6 *s = (const void *) &pi->src;
    *port = ntohs(s->sin6_port);
    return inet_ntop(AF_INET6, &s->sin6_addr, buf, (socklen_t) len);
}

START_TEST(test_v1_good)
{
    static const struct {
        const char *in;
        const char *addr;
        unsigned    port;
    } T[] = {
        { "PROXY TCP4 192.0.2.7 10.0.0.1 56324 8080\r\n", "192.0.2.7", 56324 },
        { "PROXY TCP6 2001:db8::1 ::1 1 65535\r\n", "2001:db8::1", 1 },
        { "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
          "255.255.255.255", 65535 },
        { "PROXY TCP4 1.2.3.4 5.6.7.8 0 0\r\n", "1.2.3.4", 0 },
    };
    for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++) {
        hd_proxy_info_t pi;
        char            a[64];
        unsigned        port;
        size_t          n = strlen(T[i].in);
        uint8_t         buf[256];

        memcpy(buf, T[i].in, n);
        memcpy(buf + n, "GET / HTTP/1.1\r\n", 16); /* the client's bytes */
        ck_assert_int_eq(parse_all(buf, n + 16, &pi), (int) n);
        ck_assert_int_eq(pi.version, 1);
        ck_assert(!pi.local);
        ck_assert_str_eq(src_text(&pi, a, sizeof(a), &port), T[i].addr);
        ck_assert_uint_eq(port, T[i].port);
    }
    /* UNKNOWN: the connection's own address stands */
    hd_proxy_info_t pi;
    const char     *u = "PROXY UNKNOWN\r\n";
    ck_assert_int_eq(parse_all((const uint8_t *) u, strlen(u), &pi), 15);
    ck_assert(pi.local);
    u = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
    ck_assert_int_eq(parse_all((const uint8_t *) u, strlen(u), &pi),
                     (int) strlen(u));
    ck_assert(pi.local);
}
END_TEST

START_TEST(test_v1_bad)
{
    static const char *const T[] = {
        "GET / HTTP/1.1\r\n",                     /* not PROXY */
        "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",     /* case */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",       /* no CR */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",   /* stray CR */
        "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",    /* two spaces */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",    /* trailing space */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",       /* a field short */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",   /* one too many */
        "PROXY TCP4 ::1 ::1 1 2\r\n",             /* family mismatch */
        "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",     /* family mismatch */
        "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",       /* bad address */
        "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", /* port range */
        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",    /* leading zero */
        "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",    /* sign */
        "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",     /* protocol */
        "PROXY \r\n",                             /* empty */
        "PROXY TCP4 1.2.3.4\x01 5.6.7.8 1 2\r\n", /* control byte */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\x80\r\n", /* non-ASCII */
        "\r\nGET",                                /* not v2 either */
    };
    for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++) {
        hd_proxy_info_t pi;
        ck_assert_msg(hd_proxy_parse((const uint8_t *) T[i], strlen(T[i]), &pi)
                          == -EPROTO,
                      "accepted %s", T[i]);
    }
    /* 107 bytes without an end of line: never a v1 header */
    uint8_t long_[200];
    memcpy(long_, "PROXY UNKNOWN ", 14);
    memset(long_ + 14, 'x', sizeof(long_) - 14);
    hd_proxy_info_t pi;
    ck_assert_int_eq(hd_proxy_parse(long_, 106, &pi), 0);
    ck_assert_int_eq(hd_proxy_parse(long_, 107, &pi), -EPROTO);
    ck_assert_int_eq(hd_proxy_parse(long_, sizeof(long_), &pi), -EPROTO);
}
END_TEST

/* a v2 header: cmd (0 LOCAL, 1 PROXY), family byte, addresses, TLVs */
static size_t
v2(uint8_t *b, uint8_t cmd, uint8_t fam, const uint8_t *rest, size_t n)
{
    memcpy(b, SIG, 12);
    b[12] = (uint8_t) (0x20 | cmd);
    b[13] = fam;
    b[14] = (uint8_t) (n >> 8);
    b[15] = (uint8_t) n;
    memcpy(b + 16, rest, n);
    return 16 + n;
}

START_TEST(test_v2_good)
{
    uint8_t         b[2048], rest[1100];
    hd_proxy_info_t pi;
    char            a[64];
    unsigned        port;
    size_t          n;

    /* TCP over IPv4: 192.0.2.9:40000 -> 10.0.0.1:8080 */
    const uint8_t r4[12] = {
        192, 0, 2, 9, 10, 0, 0, 1, 0x9c, 0x40, 0x1f, 0x90
    };
    n = v2(b, 1, 0x11, r4, sizeof(r4));
    memcpy(b + n, "GET", 3);
    ck_assert_int_eq(parse_all(b, n + 3, &pi), (int) n);
    ck_assert_int_eq(pi.version, 2);
    ck_assert(!pi.local);
    ck_assert_str_eq(src_text(&pi, a, sizeof(a), &port), "192.0.2.9");
    ck_assert_uint_eq(port, 40000);

    /* TCP over IPv6, with TLVs after the addresses (HAProxy's
     * proxy-v2-options) */
    memset(rest, 0, sizeof(rest));
    rest[0] = 0x20;
    rest[1] = 0x01;
    rest[15] = 0x05; /* 2001::5 */
    rest[32] = 0x12;
    rest[33] = 0x34;
    rest[36] = 0x01; /* PP2_TYPE_ALPN */
    rest[37] = 0;
    rest[38] = 2;
    rest[39] = 'h';
    rest[40] = '2';
    n = v2(b, 1, 0x21, rest, 41);
    ck_assert_int_eq(parse_all(b, n, &pi), (int) n);
    ck_assert_str_eq(src_text(&pi, a, sizeof(a), &port), "2001::5");
    ck_assert_uint_eq(port, 0x1234);

    /* LOCAL (a health check from the proxy itself): addresses ignored */
    n = v2(b, 0, 0x00, rest, 0);
    ck_assert_int_eq(parse_all(b, n, &pi), 16);
    ck_assert(pi.local);
    n = v2(b, 0, 0x11, r4, sizeof(r4));
    ck_assert_int_eq(parse_all(b, n, &pi), 28);
    ck_assert(pi.local);
    /* PROXY over UNIX or UNSPEC: no IP; the peer's stands */
    n = v2(b, 1, 0x31, rest, 216);
    ck_assert_int_eq(parse_all(b, n, &pi), (int) n);
    ck_assert(pi.local);
    /* the largest accepted */
    n = v2(b, 1, 0x11, rest, HD_PROXY_MAX - 16);
    memcpy(b + 16, r4, sizeof(r4));
    ck_assert_int_eq(hd_proxy_parse(b, n, &pi), HD_PROXY_MAX);
}
END_TEST

START_TEST(test_v2_bad)
{
    uint8_t         b[4096], rest[2048] = { 0 };
    hd_proxy_info_t pi;
    size_t          n;

    n = v2(b, 1, 0x11, rest, 12);
    b[12] = 0x11; /* version 1 in the binary form */
    ck_assert_int_eq(hd_proxy_parse(b, n, &pi), -EPROTO);
    n = v2(b, 2, 0x11, rest, 12); /* unknown command */
    ck_assert_int_eq(hd_proxy_parse(b, n, &pi), -EPROTO);
    n = v2(b, 1, 0x41, rest, 12); /* unknown family */
    ck_assert_int_eq(hd_proxy_parse(b, n, &pi), -EPROTO);
    n = v2(b, 1, 0x13, rest, 12); /* unknown transport */
    ck_assert_int_eq(hd_proxy_parse(b, n, &pi), -EPROTO);
    n = v2(b, 1, 0x11, rest, 11); /* too short for IPv4 */
    ck_assert_int_eq(hd_proxy_parse(b, n, &pi), -EPROTO);
    n = v2(b, 1, 0x21, rest, 35); /* too short for IPv6 */
    ck_assert_int_eq(hd_proxy_parse(b, n, &pi), -EPROTO);
    /* longer than herald reads: refused as soon as the length is known */
    n = v2(b, 1, 0x11, rest, HD_PROXY_MAX - 15);
    ck_assert_int_eq(hd_proxy_parse(b, 16, &pi), -EPROTO);
    /* a broken signature */
    n = v2(b, 1, 0x11, rest, 12);
    b[7] = 'q';
    ck_assert_int_eq(hd_proxy_parse(b, n, &pi), -EPROTO);
    ck_assert_int_eq(hd_proxy_parse(b, 8, &pi), -EPROTO);
    ck_assert_int_eq(hd_proxy_parse(b, 7, &pi), 0);
    /* a TLS ClientHello or plain HTTP on a PROXY listener */
    const uint8_t tls[] = { 0x16, 0x03, 0x01, 0x02, 0x00 };
    ck_assert_int_eq(hd_proxy_parse(tls, sizeof(tls), &pi), -EPROTO);
    ck_assert_int_eq(hd_proxy_parse((const uint8_t *) "G", 1, &pi), -EPROTO);
    ck_assert_int_eq(hd_proxy_parse((const uint8_t *) "P", 1, &pi), 0);
    ck_assert_int_eq(hd_proxy_parse((const uint8_t *) "", 0, &pi), 0);
}
END_TEST

static Suite *
proxy_suite(void)
{
    Suite *s = suite_create("proxy");
    TCase *tc = tcase_create("parse");

    tcase_add_test(tc, test_v1_good);
    tcase_add_test(tc, test_v1_bad);
    tcase_add_test(tc, test_v2_good);
    tcase_add_test(tc, test_v2_bad);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(proxy_suite());
    int      failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
