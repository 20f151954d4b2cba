/*
 * Unit tests for worker/hd_wsguard.c, the frame guard: it follows each
 * client socket's frame headers in what lws reads and flags a client that
 * sent an unmasked frame. Driven through its recv() wrapper over real
 * socketpairs, byte by byte and in odd splits, so header state carried
 * across reads is covered.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../../worker/hd_httpgate.c" /* guarded_recv reads through it */
#include "../../../worker/hd_wsguard.c"

static int sv[2];

static void
setup(void)
{
    /* the recv() hook needs libwebsockets.so loaded, which this test is
     * not: init still sets up the per-fd state it reports on failure */
    (void) hd_wsguard_init(1024);
    ck_assert_ptr_nonnull(G);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    hd_wsguard_open(sv[1]);
}

static void
teardown(void)
{
    close(sv[0]);
    close(sv[1]);
    hd_wsguard_shutdown();
}

/* What the client sends arrives at the server in reads of `chunk`
 * bytes (0: one read). */
static void
client_sends(const void *p, size_t n, size_t chunk, int flags)
{
    char   buf[70000];
    size_t got = 0;

    ck_assert_int_eq(write(sv[0], p, n), (ssize_t) n);
    while (got < n) {
        size_t  want = chunk == 0 || chunk > n - got ? n - got : chunk;
        ssize_t r = guarded_recv(sv[1], buf, want, flags);
        ck_assert_int_gt(r, 0);
        got += (size_t) r;
    }
}

static const char upgrade[] = "GET / HTTP/1.1\r\nHost: x\r\n"
                              "Upgrade: websocket\r\n\r\n";

/* a client frame header: FIN+text, length len, masked or not */
static size_t
frame(uint8_t *out, uint64_t len, bool masked)
{
    size_t n = 0;

    out[n++] = 0x81;
    if (len < 126) {
        out[n++] = (uint8_t) ((masked ? 0x80 : 0) | len);
    } else if (len < 65536) {
        out[n++] = (uint8_t) ((masked ? 0x80 : 0) | 126);
        out[n++] = (uint8_t) (len >> 8);
        out[n++] = (uint8_t) len;
    } else {
        out[n++] = (uint8_t) ((masked ? 0x80 : 0) | 127);
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t) (len >> (8 * i));
    }
    if (masked)
        for (int i = 0; i < 4; i++)
            out[n++] = (uint8_t) (0x11 * (i + 1));
    /* payload bytes that look like unmasked headers: must be skipped */
    memset(out + n, 0x01, (size_t) len);
    return n + (size_t) len;
}

START_TEST(masked_frames_pass_in_any_split)
{
    static uint8_t buf[70000];
    size_t         n = 0;

    n += frame(buf + n, 5, true);
    n += frame(buf + n, 300, true);   /* 16-bit length */
    n += frame(buf + n, 66000, true); /* 64-bit length */
    n += frame(buf + n, 0, true);
    for (size_t chunk = 0; chunk <= 7; chunk += 1) {
        if (chunk == 0)
            client_sends(upgrade, strlen(upgrade), 0, 0);
        else {
            hd_wsguard_open(sv[1]);
            client_sends(upgrade, strlen(upgrade), chunk, 0);
        }
        hd_wsguard_established(sv[1]);
        client_sends(buf, n, chunk == 0 ? 0 : chunk * 997, 0);
        ck_assert(!hd_wsguard_unmasked(sv[1]));
        /* and the guard is still in step: the next header is read as one */
        client_sends("\x81\x01", 2, 0, 0);
        ck_assert(hd_wsguard_unmasked(sv[1]));
    }
}
END_TEST

START_TEST(an_unmasked_frame_is_flagged_and_stays_flagged)
{
    uint8_t buf[512];
    size_t  n = 0;

    client_sends(upgrade, strlen(upgrade), 1, 0); /* byte by byte */
    n += frame(buf + n, 10, true);
    n += frame(buf + n, 10, false);
    /* frames that arrive with the upgrade, before lws finished it, are
     * followed; the verdict counts from the handshake on */
    client_sends(buf, n, 3, 0);
    ck_assert(!hd_wsguard_unmasked(sv[1]));
    hd_wsguard_established(sv[1]);
    ck_assert(hd_wsguard_unmasked(sv[1]));
    n = frame(buf, 10, true);
    client_sends(buf, n, 0, 0);
    ck_assert(hd_wsguard_unmasked(sv[1]));
}
END_TEST

START_TEST(peeks_and_other_sockets_are_not_followed)
{
    uint8_t buf[64];
    size_t  n;
    int     other[2];

    client_sends(upgrade, strlen(upgrade), 0, 0);
    hd_wsguard_established(sv[1]);
    n = frame(buf, 4, false);
    ck_assert_int_eq(write(sv[0], buf, n), (ssize_t) n);
    /* a peek is not consumed: the same bytes come again */
    ck_assert_int_eq(guarded_recv(sv[1], buf, sizeof(buf), MSG_PEEK),
                     (ssize_t) n);
    ck_assert(!hd_wsguard_unmasked(sv[1]));
    ck_assert_int_eq(guarded_recv(sv[1], buf, sizeof(buf), 0), (ssize_t) n);
    ck_assert(hd_wsguard_unmasked(sv[1]));

    /* a socket never opened with the guard (the master's, a Redis one) */
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, other), 0);
    ck_assert_int_eq(write(other[0], buf, n), (ssize_t) n);
    ck_assert_int_eq(guarded_recv(other[1], buf, sizeof(buf), 0), (ssize_t) n);
    ck_assert(!hd_wsguard_unmasked(other[1]));
    close(other[0]);
    close(other[1]);
}
END_TEST

START_TEST(http_bodies_are_not_frames)
{
    static const char post[] = "POST /api/publish HTTP/1.1\r\n"
                               "Content-Length: 4\r\n\r\n";
    uint8_t           buf[64];
    size_t            n;

    /* a keep-alive HTTP connection: a body of bytes that would read as an
     * unmasked frame header, then the next request */
    client_sends(post, strlen(post), 0, 0);
    client_sends("\x81\x02xy", 4, 0, 0);
    hd_wsguard_http_done(sv[1]);
    ck_assert(!hd_wsguard_unmasked(sv[1]));
    client_sends(upgrade, strlen(upgrade), 5, 0);
    hd_wsguard_established(sv[1]);
    n = frame(buf, 3, true);
    client_sends(buf, n, 0, 0);
    ck_assert(!hd_wsguard_unmasked(sv[1]));
    n = frame(buf, 3, false);
    client_sends(buf, n, 0, 0);
    ck_assert(hd_wsguard_unmasked(sv[1]));
}
END_TEST

/* What lws reads of the client's bytes, in reads of `chunk` bytes. */
static void
relay(const uint8_t *p, size_t n, size_t chunk, uint8_t *out)
{
    size_t got = 0;

    ck_assert_int_eq(write(sv[0], p, n), (ssize_t) n);
    while (got < n) {
        size_t  want = chunk == 0 || chunk > n - got ? n - got : chunk;
        ssize_t r = guarded_recv(sv[1], out + got, want, 0);
        ck_assert_int_gt(r, 0);
        got += (size_t) r;
    }
}

/* masked ping "pi", a text frame whose payload holds ping-like bytes, a
 * masked pong, a masked ping with FIN clear bits kept: what quiet turns
 * into pongs is the opcode of pings only, nothing else */
static size_t
control_mix(uint8_t *b)
{
    static const uint8_t mix[] = {
        0x89, 0x82, 1, 2, 3, 4, 'p' ^ 1, 'i' ^ 2, /* ping */
        0x81, 0x83, 0, 0, 0, 0, 0x89,    0x80,
        0x89,                   /* text "\x89\x80\x89" */
        0x8a, 0x80, 5, 6, 7, 8, /* pong, empty */
        0x89, 0x80, 9, 9, 9, 9, /* ping, empty */
    };
    memcpy(b, mix, sizeof(mix));
    return sizeof(mix);
}

START_TEST(quiet_turns_pings_into_pongs_and_nothing_else)
{
    uint8_t in[64], out[64];
    size_t  n = control_mix(in);

    client_sends(upgrade, strlen(upgrade), 0, 0);
    hd_wsguard_established(sv[1]);
    for (size_t chunk = 0; chunk <= 3; chunk++) {
        /* not quiet: every byte as sent */
        hd_wsguard_quiet(sv[1], false);
        relay(in, n, chunk, out);
        ck_assert_mem_eq(out, in, n);
        ck_assert_uint_eq(hd_wsguard_take_control(sv[1]), 3);

        /* quiet: the two pings' opcodes become pong, the rest unchanged */
        hd_wsguard_quiet(sv[1], true);
        relay(in, n, chunk, out);
        ck_assert_uint_eq(out[0], 0x8a);
        ck_assert_uint_eq(out[23], 0x8a);
        out[0] = out[23] = 0x89;
        ck_assert_mem_eq(out, in, n);
        /* still counted against the rate */
        ck_assert_uint_eq(hd_wsguard_take_control(sv[1]), 3);
        ck_assert(!hd_wsguard_unmasked(sv[1]));
    }
    /* out-of-range fds are ignored */
    hd_wsguard_quiet(-1, true);
    hd_wsguard_quiet(1 << 20, true);
}
END_TEST

START_TEST(out_of_range_fds_are_ignored)
{
    hd_wsguard_open(-1);
    hd_wsguard_open(5000);
    hd_wsguard_established(5000);
    hd_wsguard_http_done(-3);
    ck_assert(!hd_wsguard_unmasked(5000));
    ck_assert(!hd_wsguard_unmasked(-1));
}
END_TEST

static Suite *
guard_suite(void)
{
    Suite *s = suite_create("wsguard");
    TCase *tc = tcase_create("frames");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, masked_frames_pass_in_any_split);
    tcase_add_test(tc, an_unmasked_frame_is_flagged_and_stays_flagged);
    tcase_add_test(tc, peeks_and_other_sockets_are_not_followed);
    tcase_add_test(tc, http_bodies_are_not_frames);
    tcase_add_test(tc, quiet_turns_pings_into_pongs_and_nothing_else);
    tcase_add_test(tc, out_of_range_fds_are_ignored);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(guard_suite());
    int      failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
