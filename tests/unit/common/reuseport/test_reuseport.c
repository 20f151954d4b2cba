/*
 * Unit tests for common/hd_reuseport.c against the running kernel: real
 * SO_REUSEPORT listeners on 127.0.0.1 (and ::1 when it exists), real
 * connects, and accept() on every member to see where each connection
 * landed. They also pin down the kernel behaviour the master's array
 * model relies on: members are numbered in listen() order, and closing a
 * member moves the last one into its place.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hd_net.h"
#include "hd_reuseport.h"

#define MAXS 6

static int
listener(const char *addr, int port)
{
    int fd = hd_net_listen(addr, port, 128, true, true, NULL);
    ck_assert_int_ge(fd, 0);
    return fd;
}

static int
port_of(int fd)
{
    struct sockaddr_storage ss;
    socklen_t               len = sizeof(ss);

    ck_assert_int_eq(getsockname(fd, (struct sockaddr *) &ss, &len), 0);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
    return ntohs(((struct sockaddr_in *) &ss)->sin_port);
}

/* Open n members of one group on a fresh port: fds[0..n-1], in listen()
 * order. Returns the port. */
static int
group(const char *addr, int *fds, int n)
{
    fds[0] = listener(addr, 0);
    int port = port_of(fds[0]);
    for (int i = 1; i < n; i++)
        fds[i] = listener(addr, port);
    return port;
}

/* Make `conns` connections to addr:port, then count how many each of the
 * n listeners has queued (accepting and closing them). */
static void
spray(const char *addr, int port, const int *fds, int n, int conns, int *count)
{
    int cl[256];

    ck_assert_int_le(conns, 256);
    for (int i = 0; i < conns; i++) {
        struct sockaddr_storage ss;
        socklen_t               len;

        memset(&ss, 0, sizeof(ss));
        if (strchr(addr, ':') != NULL) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *) &ss;
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons((uint16_t) port);
            inet_pton(AF_INET6, addr, &s6->sin6_addr);
            len = sizeof(*s6);
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *) &ss;
            s4->sin_family = AF_INET;
            s4->sin_port = htons((uint16_t) port);
            inet_pton(AF_INET, addr, &s4->sin_addr);
            len = sizeof(*s4);
        }
        cl[i] = socket(ss.ss_family, SOCK_STREAM, 0);
        ck_assert_int_ge(cl[i], 0);
        ck_assert_msg(connect(cl[i], (struct sockaddr *) &ss, len) == 0,
                      "connect: %s", strerror(errno));
    }
    /* connect() returns once the SYN-ACK is in; the server side queues
     * the connection when it has processed the final ACK, which a busy
     * box may leave to ksoftirqd for a while: accept until every one is
     * in (or 10 s) rather than counting what happened to be queued */
    int total = 0;
    for (int k = 0; k < n; k++)
        count[k] = 0;
    for (int round = 0; total < conns && round < 1000; round++) {
        for (int k = 0; k < n; k++) {
            int a;
            if (fds[k] < 0)
                continue;
            while ((a = accept(fds[k], NULL, NULL)) >= 0) { /* non-blocking */
                count[k]++;
                total++;
                close(a);
            }
        }
        if (total < conns) {
            struct timespec ts = { 0, 10 * 1000 * 1000 };
            nanosleep(&ts, NULL);
        }
    }
    for (int i = 0; i < conns; i++)
        close(cl[i]);
}

static void
close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

START_TEST(identity_steers_to_first_n)
{
    int      fds[4], count[4], port;
    uint16_t idx[2] = { 0, 1 };

    port = group("127.0.0.1", fds, 4);
    ck_assert_int_eq(hd_reuseport_steer(fds[3], idx, 2), 0);
    spray("127.0.0.1", port, fds, 4, 200, count);
    ck_assert_int_eq(count[2], 0);
    ck_assert_int_eq(count[3], 0);
    ck_assert_int_eq(count[0] + count[1], 200);
    /* the source port hash spreads consecutive connects evenly */
    ck_assert_int_ge(count[0], 60);
    ck_assert_int_ge(count[1], 60);
    close_all(fds, 4);
}
END_TEST

START_TEST(mapping_steers_to_listed_indices)
{
    int      fds[4], count[4], port;
    uint16_t idx[2] = { 3, 1 };

    port = group("127.0.0.1", fds, 4);
    ck_assert_int_eq(hd_reuseport_steer(fds[0], idx, 2), 0);
    spray("127.0.0.1", port, fds, 4, 100, count);
    ck_assert_int_eq(count[0], 0);
    ck_assert_int_eq(count[2], 0);
    ck_assert_int_eq(count[1] + count[3], 100);
    ck_assert_int_gt(count[1], 0);
    ck_assert_int_gt(count[3], 0);
    close_all(fds, 4);
}
END_TEST

START_TEST(reattach_replaces_program)
{
    int      fds[3], count[3], port;
    uint16_t a[1] = { 2 }, b[1] = { 0 };

    port = group("127.0.0.1", fds, 3);
    ck_assert_int_eq(hd_reuseport_steer(fds[1], a, 1), 0);
    spray("127.0.0.1", port, fds, 3, 20, count);
    ck_assert_int_eq(count[2], 20);
    ck_assert_int_eq(hd_reuseport_steer(fds[2], b, 1), 0);
    spray("127.0.0.1", port, fds, 3, 20, count);
    ck_assert_int_eq(count[0], 20);
    ck_assert_int_eq(hd_reuseport_unsteer(fds[0]), 0);
    close_all(fds, 3);
}
END_TEST

/* The assumption the master's array model rests on. */
START_TEST(kernel_moves_last_into_closed_slot)
{
    int                  fds[4], count[4], port;
    uint16_t             one[1] = { 1 }, last[1] = { 2 };
    hd_reuseport_group_t g = { 0 };
    int                  tag[4];

    port = group("127.0.0.1", fds, 4);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(hd_reuseport_group_add(&g, &tag[i]), 0);
    /* close member 1: member 3 (the last) takes index 1 */
    close(fds[1]);
    fds[1] = -1;
    hd_reuseport_group_remove(&g, &tag[1]);
    ck_assert_int_eq(hd_reuseport_group_index(&g, &tag[3]), 1);
    ck_assert_int_eq(hd_reuseport_group_index(&g, &tag[2]), 2);
    ck_assert_int_eq(hd_reuseport_group_index(&g, &tag[1]), -1);

    ck_assert_int_eq(hd_reuseport_steer(fds[0], one, 1), 0);
    spray("127.0.0.1", port, fds, 4, 20, count);
    ck_assert_int_eq(count[3], 20);
    ck_assert_int_eq(hd_reuseport_steer(fds[0], last, 1), 0);
    spray("127.0.0.1", port, fds, 4, 20, count);
    ck_assert_int_eq(count[2], 20);

    /* a new member is appended after the survivors */
    fds[1] = listener("127.0.0.1", port);
    ck_assert_int_eq(hd_reuseport_group_add(&g, &tag[1]), 0);
    ck_assert_int_eq(hd_reuseport_group_index(&g, &tag[1]), 3);
    uint16_t nw[1] = { 3 };
    ck_assert_int_eq(hd_reuseport_steer(fds[0], nw, 1), 0);
    spray("127.0.0.1", port, fds, 4, 20, count);
    ck_assert_int_eq(count[1], 20);
    hd_reuseport_group_free(&g);
    close_all(fds, 4);
}
END_TEST

START_TEST(out_of_range_index_falls_back_to_hash)
{
    int      fds[2], count[2], port;
    uint16_t idx[1] = { 7 };

    port = group("127.0.0.1", fds, 2);
    ck_assert_int_eq(hd_reuseport_steer(fds[0], idx, 1), 0);
    spray("127.0.0.1", port, fds, 2, 40, count);
    ck_assert_int_eq(count[0] + count[1], 40); /* none refused */
    close_all(fds, 2);
}
END_TEST

START_TEST(ipv6_source_port)
{
    int      fds[3], count[3], port, probe;
    uint16_t idx[2] = { 2, 0 };

    probe = hd_net_listen("::1", 0, 1, true, true, NULL);
    if (probe < 0)
        return; /* no IPv6 loopback here */
    close(probe);
    port = group("::1", fds, 3);
    ck_assert_int_eq(hd_reuseport_steer(fds[0], idx, 2), 0);
    spray("::1", port, fds, 3, 100, count);
    ck_assert_int_eq(count[1], 0);
    ck_assert_int_eq(count[0] + count[2], 100);
    ck_assert_int_ge(count[0], 30);
    ck_assert_int_ge(count[2], 30);
    close_all(fds, 3);
}
END_TEST

START_TEST(bad_arguments)
{
    uint16_t idx[1] = { 0 };
    int      fd = listener("127.0.0.1", 0);

    ck_assert_int_eq(hd_reuseport_steer(fd, idx, 0), -EINVAL);
    ck_assert_int_eq(hd_reuseport_steer(fd, idx, HD_REUSEPORT_MAX + 1),
                     -EINVAL);
    ck_assert_int_lt(hd_reuseport_steer(-1, idx, 1), 0);
    close(fd);
}
END_TEST

START_TEST(model_add_remove)
{
    hd_reuseport_group_t g = { 0 };
    int                  t[20];

    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(hd_reuseport_group_add(&g, &t[i]), 0);
    hd_reuseport_group_remove(&g, &t[19]); /* last: nothing moves */
    ck_assert_int_eq(g.n, 19);
    ck_assert_int_eq(hd_reuseport_group_index(&g, &t[18]), 18);
    hd_reuseport_group_remove(&g, &t[0]);
    ck_assert_int_eq(hd_reuseport_group_index(&g, &t[18]), 0);
    hd_reuseport_group_remove(&g, &t[0]); /* unknown: ignored */
    ck_assert_int_eq(g.n, 18);
    hd_reuseport_group_free(&g);
    ck_assert_int_eq(g.n, 0);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("reuseport");
    TCase *t = tcase_create("core");

    tcase_set_timeout(t, 30);
    tcase_add_test(t, identity_steers_to_first_n);
    tcase_add_test(t, mapping_steers_to_listed_indices);
    tcase_add_test(t, reattach_replaces_program);
    tcase_add_test(t, kernel_moves_last_into_closed_slot);
    tcase_add_test(t, out_of_range_index_falls_back_to_hash);
    tcase_add_test(t, ipv6_source_port);
    tcase_add_test(t, bad_arguments);
    tcase_add_test(t, model_add_remove);
    suite_add_tcase(s, t);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(suite());
    int      failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
