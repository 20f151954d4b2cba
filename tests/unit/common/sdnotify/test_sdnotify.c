/*
 * Unit tests for common/hd_sdnotify.c: each test binds its own unix
 * datagram socket (a path in a fresh temp dir, or an abstract name), points
 * NOTIFY_SOCKET at it and checks the exact bytes that arrive, as systemd's
 * manager would read them: one datagram per call, VAR=VALUE lines joined
 * by '\n', no trailing newline or NUL.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "hd_sdnotify.h"

static char tmpdir[64];
static char sockpath[128];
static int  rfd = -1;

static void
setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/hd-sdnotify-test.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(sockpath, sizeof(sockpath), "%s/notify", tmpdir);
    unsetenv("NOTIFY_SOCKET");
    rfd = -1;
}

static void
teardown(void)
{
    if (rfd >= 0)
        close(rfd);
    rfd = -1;
    unlink(sockpath);
    rmdir(tmpdir);
    unsetenv("NOTIFY_SOCKET");
}

/* ---- helpers ---------------------------------------------------------- */

static int
dgram_socket(void)
{
    struct timeval tv = { 2, 0 };
    int            fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    /* a missing datagram fails the test instead of hanging it */
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)),
                     0);
    return fd;
}

/* Bind a receiver at sockpath and point NOTIFY_SOCKET at it. */
static void
listen_path(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    rfd = dgram_socket();
    strcpy(sa.sun_path, sockpath);
    ck_assert_msg(bind(rfd, (struct sockaddr *) &sa, sizeof(sa)) == 0,
                  "bind %s: %s", sockpath, strerror(errno));
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", sockpath, 1), 0);
}

/* Bind a receiver on a fresh abstract name; NOTIFY_SOCKET gets "@name". */
static void
listen_abstract(char *env, size_t envlen)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int                n;

    n = snprintf(env, envlen, "@hd-sdnotify-test-%d-%ld", (int) getpid(),
                 (long) time(NULL));
    ck_assert_int_lt(n, (int) sizeof(sa.sun_path));
    rfd = dgram_socket();
    memcpy(sa.sun_path, env, (size_t) n);
    sa.sun_path[0] = '\0';
    ck_assert_msg(
        bind(rfd, (struct sockaddr *) &sa,
             (socklen_t) (offsetof(struct sockaddr_un, sun_path) + (size_t) n))
            == 0,
        "bind abstract: %s", strerror(errno));
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", env, 1), 0);
}

/* Receive one datagram into buf (NUL-terminated); returns its length. */
static size_t
recv_one(char *buf, size_t len)
{
    ssize_t n = recv(rfd, buf, len - 1, 0);

    ck_assert_msg(n >= 0, "recv: %s", strerror(errno));
    buf[n] = '\0';
    return (size_t) n;
}

static void
assert_nothing_queued(void)
{
    char    c;
    ssize_t n = recv(rfd, &c, 1, MSG_DONTWAIT);

    ck_assert_msg(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK),
                  "unexpected extra datagram (n=%zd)", n);
}

static uint64_t
mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

/* ---- tests ------------------------------------------------------------ */

START_TEST(unset_is_noop)
{
    ck_assert_int_eq(hd_sdnotify("READY=1"), 0);
    ck_assert_int_eq(hd_sdnotify_ready("running"), 0);
    ck_assert_int_eq(hd_sdnotify_reloading(), 0);
    ck_assert_int_eq(hd_sdnotify_stopping(), 0);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", "", 1), 0);
    ck_assert_int_eq(hd_sdnotify("READY=1"), 0);
}
END_TEST

START_TEST(path_socket_exact_bytes)
{
    char   buf[256];
    size_t n;

    listen_path();
    ck_assert_int_eq(hd_sdnotify("READY=1"), 1);
    n = recv_one(buf, sizeof(buf));
    ck_assert_uint_eq(n, 7);
    ck_assert_str_eq(buf, "READY=1");
    assert_nothing_queued();
}
END_TEST

START_TEST(abstract_socket)
{
    char env[108], buf[256];

    listen_abstract(env, sizeof(env));
    ck_assert_int_eq(hd_sdnotify_stopping(), 1);
    recv_one(buf, sizeof(buf));
    ck_assert_str_eq(buf, "STOPPING=1");
    assert_nothing_queued();
}
END_TEST

START_TEST(one_datagram_per_call)
{
    char buf[256];

    listen_path();
    ck_assert_int_eq(hd_sdnotify("STATUS=a"), 1);
    ck_assert_int_eq(hd_sdnotify("STATUS=b\nERRNO=0"), 1);
    recv_one(buf, sizeof(buf));
    ck_assert_str_eq(buf, "STATUS=a");
    recv_one(buf, sizeof(buf));
    ck_assert_str_eq(buf, "STATUS=b\nERRNO=0");
    assert_nothing_queued();
}
END_TEST

START_TEST(ready_with_status)
{
    char buf[1024], longer[700];

    listen_path();
    ck_assert_int_eq(hd_sdnotify_ready(NULL), 1);
    recv_one(buf, sizeof(buf));
    ck_assert_str_eq(buf, "READY=1");

    ck_assert_int_eq(hd_sdnotify_ready("running"), 1);
    recv_one(buf, sizeof(buf));
    ck_assert_str_eq(buf, "READY=1\nSTATUS=running");

    /* a newline in the status must not smuggle in another variable */
    ck_assert_int_eq(hd_sdnotify_ready("ok\nSTOPPING=1"), 1);
    recv_one(buf, sizeof(buf));
    ck_assert_str_eq(buf, "READY=1\nSTATUS=ok");

    /* an over-long status is truncated, READY=1 still first and intact */
    memset(longer, 'x', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    ck_assert_int_eq(hd_sdnotify_ready(longer), 1);
    recv_one(buf, sizeof(buf));
    ck_assert_int_eq(strncmp(buf, "READY=1\nSTATUS=xxx", 18), 0);
    ck_assert_uint_lt(strlen(buf), sizeof(longer));
    ck_assert_ptr_null(strchr(buf + 8, '\n'));
}
END_TEST

START_TEST(reloading_carries_monotonic_usec)
{
    char               buf[256], tail[8];
    unsigned long long us;
    uint64_t           before, after;

    listen_path();
    before = mono_us();
    ck_assert_int_eq(hd_sdnotify_reloading(), 1);
    after = mono_us();
    recv_one(buf, sizeof(buf));
    ck_assert_msg(strncmp(buf, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0,
                  "got %s", buf);
    /* digits only, nothing after them */
    ck_assert_msg(sscanf(buf + 27, "%llu%7s", &us, tail) == 1, "got %s", buf);
    ck_assert_uint_eq(strspn(buf + 27, "0123456789"), strlen(buf + 27));
    ck_assert_msg(us >= before && us <= after,
                  "MONOTONIC_USEC %llu outside [%" PRIu64 ", %" PRIu64 "]", us,
                  before, after);
}
END_TEST

START_TEST(bad_names_and_states)
{
    char longname[200];

    ck_assert_int_eq(setenv("NOTIFY_SOCKET", "relative/path", 1), 0);
    ck_assert_int_eq(hd_sdnotify("READY=1"), -EINVAL);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", "@", 1), 0);
    ck_assert_int_eq(hd_sdnotify("READY=1"), -EINVAL);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", "vsock:2:1234", 1), 0);
    ck_assert_int_eq(hd_sdnotify("READY=1"), -EAFNOSUPPORT);

    /* sun_path is 108 bytes: a 108-byte path leaves no room for its NUL */
    memset(longname, 'a', sizeof(longname));
    longname[0] = '/';
    longname[108] = '\0';
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", longname, 1), 0);
    ck_assert_int_eq(hd_sdnotify("READY=1"), -EINVAL);

    listen_path();
    ck_assert_int_eq(hd_sdnotify(NULL), -EINVAL);
    ck_assert_int_eq(hd_sdnotify(""), -EINVAL);
    assert_nothing_queued();
}
END_TEST

START_TEST(nobody_listening)
{
    char missing[160];

    /* no such file */
    snprintf(missing, sizeof(missing), "%s/missing", tmpdir);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", missing, 1), 0);
    ck_assert_int_eq(hd_sdnotify("READY=1"), -ENOENT);

    /* the socket file is left behind by a receiver that went away */
    listen_path();
    close(rfd);
    rfd = -1;
    ck_assert_int_eq(hd_sdnotify("READY=1"), -ECONNREFUSED);

    /* an abstract name nobody holds */
    ck_assert_int_eq(
        setenv("NOTIFY_SOCKET", "@hd-sdnotify-test-nobody-here", 1), 0);
    ck_assert_int_eq(hd_sdnotify("READY=1"), -ECONNREFUSED);
}
END_TEST

static Suite *
sdnotify_suite(void)
{
    Suite *s = suite_create("sdnotify");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, unset_is_noop);
    tcase_add_test(tc, path_socket_exact_bytes);
    tcase_add_test(tc, abstract_socket);
    tcase_add_test(tc, one_datagram_per_call);
    tcase_add_test(tc, ready_with_status);
    tcase_add_test(tc, reloading_carries_monotonic_usec);
    tcase_add_test(tc, bad_names_and_states);
    tcase_add_test(tc, nobody_listening);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(sdnotify_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
