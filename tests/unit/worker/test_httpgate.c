/*
 * Unit tests for worker/hd_httpgate.c: lws' reads of a client socket end
 * at the current POST request's last body byte, the next request stays in
 * the socket until hd_httpgate_release(), and anything that is not a POST
 * passes untouched. Driven over real socketpairs, in odd read sizes, so
 * the header scanner's state across reads is covered.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../../worker/hd_httpgate.c"

static int sv[2];

static void
setup(void)
{
    ck_assert_int_eq(hd_httpgate_init(1024), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    hd_httpgate_open(sv[1]);
}

static void
teardown(void)
{
    close(sv[0]);
    close(sv[1]);
    hd_httpgate_shutdown();
}

static size_t
post(char *buf, size_t cap, const char *clen_hdr, const char *body)
{
    int n = snprintf(buf, cap,
                     "POST /api/publish HTTP/1.1\r\nHost: x\r\n%s: %zu\r\n"
                     "Authorization: apikey k\r\n\r\n%s",
                     clen_hdr, strlen(body), body);
    return (size_t) n;
}

/* Read through the gate in reads of at most chunk bytes until it says
 * EAGAIN (or the peer is done); returns the bytes read. */
static size_t
drain(char *out, size_t cap, size_t chunk)
{
    size_t got = 0;

    for (;;) {
        size_t  want = cap - got < chunk ? cap - got : chunk;
        ssize_t n = hd_httpgate_recv(sv[1], out + got, want, MSG_DONTWAIT);
        if (n <= 0)
            break;
        got += (size_t) n;
    }
    return got;
}

static void
pipelined_in_chunks(size_t chunk, const char *clen_hdr)
{
    char   a[512], b[512], both[1024], got[1024];
    size_t la = post(a, sizeof(a), clen_hdr, "{\"channel\":\"c\",\"data\":1}");
    size_t lb = post(b, sizeof(b), clen_hdr, "{\"channel\":\"c\",\"data\":22}");

    memcpy(both, a, la);
    memcpy(both + la, b, lb);
    ck_assert_int_eq(write(sv[0], both, la + lb), (ssize_t) (la + lb));
    /* the first request, whole, and not a byte more */
    ck_assert_uint_eq(drain(got, sizeof(got), chunk), la);
    ck_assert(memcmp(got, a, la) == 0);
    ck_assert(hd_httpgate_waiting(sv[1]));
    errno = 0;
    ck_assert_int_eq(hd_httpgate_recv(sv[1], got, sizeof(got), 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    /* answered: the second one */
    hd_httpgate_release(sv[1]);
    ck_assert(!hd_httpgate_waiting(sv[1]));
    ck_assert_uint_eq(drain(got, sizeof(got), chunk), lb);
    ck_assert(memcmp(got, b, lb) == 0);
    ck_assert(hd_httpgate_waiting(sv[1]));
}

START_TEST(test_pipelined_one_read)
{
    pipelined_in_chunks(4096, "Content-Length");
}
END_TEST

START_TEST(test_pipelined_byte_by_byte)
{
    pipelined_in_chunks(1, "Content-Length");
}
END_TEST

START_TEST(test_pipelined_odd_reads_header_case)
{
    pipelined_in_chunks(7, "content-LENGTH");
}
END_TEST

START_TEST(test_upgrade_passes_with_frames_behind)
{
    static const char req[] = "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
                              "\x81\x85xxxxhello";
    char              got[256];

    ck_assert_int_eq(write(sv[0], req, sizeof(req) - 1),
                     (ssize_t) sizeof(req) - 1);
    ck_assert_uint_eq(drain(got, sizeof(got), 4096), sizeof(req) - 1);
    ck_assert(!hd_httpgate_waiting(sv[1]));
}
END_TEST

START_TEST(test_answered_before_its_body)
{
    char   a[512], got[1024];
    size_t la = post(a, sizeof(a), "Content-Length", "0123456789");
    size_t head = la - 10;

    /* headers only: an early answer (401, 413...) releases the request
     * before its body came; the body is still its own, then a new start */
    ck_assert_int_eq(write(sv[0], a, head), (ssize_t) head);
    ck_assert_uint_eq(drain(got, sizeof(got), 4096), head);
    hd_httpgate_release(sv[1]);
    ck_assert_int_eq(write(sv[0], a + head, 10), 10);
    ck_assert_int_eq(write(sv[0], a, la), (ssize_t) la);
    ck_assert_uint_eq(drain(got, sizeof(got), 4096), 10 + la);
    ck_assert(hd_httpgate_waiting(sv[1]));
}
END_TEST

START_TEST(test_no_content_length_is_headers_only)
{
    static const char req[] = "POST /api/publish HTTP/1.1\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n5\r\nhello";
    char              got[256];
    size_t            head = strstr(req, "\r\n\r\n") + 4 - req;

    ck_assert_int_eq(write(sv[0], req, sizeof(req) - 1),
                     (ssize_t) sizeof(req) - 1);
    ck_assert_uint_eq(drain(got, sizeof(got), 4096), head);
    ck_assert(hd_httpgate_waiting(sv[1]));
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("httpgate");
    TCase *t = tcase_create("gate");

    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, test_pipelined_one_read);
    tcase_add_test(t, test_pipelined_byte_by_byte);
    tcase_add_test(t, test_pipelined_odd_reads_header_case);
    tcase_add_test(t, test_upgrade_passes_with_frames_behind);
    tcase_add_test(t, test_answered_before_its_body);
    tcase_add_test(t, test_no_content_length_is_headers_only);
    suite_add_tcase(s, t);
    return s;
}

int
main(void)
{
    SRunner *r = srunner_create(suite());
    int      failed;

    srunner_run_all(r, CK_NORMAL);
    failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
