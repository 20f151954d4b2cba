/*
 * Unit tests for worker/hd_conn.c, the outbound queue and its writer:
 * the byte cap, batching queued messages into frames, the per-turn write
 * budget and its round robin, and what waits for lws' writable callback.
 * libwebsockets is not linked: the few lws calls hd_conn.c makes are
 * fakes over fake sockets that record every frame written.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../worker/hd_conn.c"

hd_worker_t hd_w;

/* ---- fake sockets ------------------------------------------------------- */

#define NCONN 600

typedef struct fake_sock {
    int      frames;
    size_t   bytes;
    char     last[4096];
    int      partial_after; /* > 0: the socket stops taking whole frames
                               after this many */
    bool     fail;          /* lws_write fails */
    int      writable_asks;
    int      close_len;
    int      killed;
    unsigned close_status;
} fake_sock_t;

static fake_sock_t socks[NCONN];
static hd_conn_t   conns[NCONN];

static fake_sock_t *
sock_of(struct lws *wsi)
{
    return (fake_sock_t *) (void *) wsi;
}

lws_sockfd_type
lws_get_socket_fd(struct lws *wsi)
{
    (void) wsi;
    return -1;
}

int
lws_write(struct lws *wsi, unsigned char *buf, size_t len,
          enum lws_write_protocol protocol)
{
    fake_sock_t *s = sock_of(wsi);
    size_t       n = len < sizeof(s->last) - 1 ? len : sizeof(s->last) - 1;

    ck_assert_int_eq(protocol, LWS_WRITE_TEXT);
    if (s->fail)
        return -1;
    memcpy(s->last, buf, n);
    s->last[n] = '\0';
    s->frames++;
    s->bytes += len;
    return (int) len;
}

int
lws_partial_buffered(struct lws *wsi)
{
    fake_sock_t *s = sock_of(wsi);

    return s->partial_after > 0 && s->frames >= s->partial_after;
}

int
lws_callback_on_writable(struct lws *wsi)
{
    sock_of(wsi)->writable_asks++;
    return 1;
}

int
lws_get_close_length(struct lws *wsi)
{
    return sock_of(wsi)->close_len;
}

void
lws_set_timeout(struct lws *wsi, enum pending_timeout reason, int secs)
{
    (void) reason;
    (void) secs;
    sock_of(wsi)->killed++;
}

void
lws_close_reason(struct lws *wsi, enum lws_close_status status,
                 unsigned char *buf, size_t len)
{
    (void) buf;
    (void) len;
    sock_of(wsi)->close_status = (unsigned) status;
}

/* the client address table (hd_realip.c): test_realip.c tests it */
const char *
hd_realip_str(int fd, char *buf, size_t len)
{
    (void) fd;
    (void) len;
    buf[0] = '\0';
    return buf;
}

/* the frame guard: which fds were made quiet (hd_wsguard.c) */
static bool quiet[NCONN];

void
hd_wsguard_quiet(int fd, bool on)
{
    ck_assert_int_ge(fd, 0);
    ck_assert_int_lt(fd, NCONN);
    quiet[fd] = on;
}

/* ---- helpers ------------------------------------------------------------ */

static hd_conf_t conf;

static void
setup(void)
{
    memset(&conf, 0, sizeof(conf));
    conf.outq_bytes = 1 << 20;
    conf.batch_max_bytes = 1000;
    conf.batch_max_messages = 256;
    memset(&hd_w, 0, sizeof(hd_w));
    hd_w.conf = &conf;
    hd_w.loop = ev_loop_new(0);
    hd_w.wbuf = malloc(LWS_PRE + (1 << 16));
    memset(socks, 0, sizeof(socks));
    memset(conns, 0, sizeof(conns));
    for (unsigned i = 0; i < NCONN; i++) {
        conns[i].wsi = (struct lws *) (void *) &socks[i];
        conns[i].established = true;
        conns[i].id = i;
        conns[i].fd = (int) i;
    }
    memset(quiet, 0, sizeof(quiet));
    hd_conn_io_init();
}

static void
teardown(void)
{
    hd_conn_io_shutdown();
    for (unsigned i = 0; i < NCONN; i++)
        hd_conn_release(&conns[i]);
    ev_loop_destroy(hd_w.loop);
    free(hd_w.wbuf);
}

static void
push(hd_conn_t *c, const char *text)
{
    hd_msg_t *m = hd_msg_new(text, strlen(text));

    ck_assert_int_eq(hd_conn_enqueue(c, m), 0);
    hd_msg_unref(m);
    hd_conn_want_push(c);
}

/* The writer's turn, just before the loop would wait. */
static void
turn(void)
{
    write_cb(hd_w.loop, &write_w, 0);
}

/* ---- the byte cap ------------------------------------------------------- */

START_TEST(queue_is_capped_in_bytes)
{
    hd_conn_t *c = &conns[0];
    char       text[41];
    hd_msg_t  *m;

    conf.outq_bytes = 100;
    memset(text, 'x', 40);
    text[40] = '\0';
    m = hd_msg_new(text, 40);
    ck_assert_int_eq(hd_conn_enqueue(c, m), 0);
    ck_assert_int_eq(hd_conn_enqueue(c, m), 0);
    ck_assert_int_eq(hd_conn_enqueue(c, m), -ENOBUFS);
    ck_assert_uint_eq(c->q_len, 2);
    ck_assert_uint_eq(c->q_bytes, 80);
    ck_assert_uint_eq(m->refs, 3); /* the queue holds its references */
    /* a reply the client asked for is not refused for the cap */
    hd_conn_enqueue_force(c, m);
    ck_assert_uint_eq(c->q_len, 3);
    ck_assert_uint_eq(c->q_bytes, 120);
    hd_msg_unref(m);
}
END_TEST

START_TEST(a_close_makes_the_socket_quiet)
{
    /* from the close decision on, lws answers no ping: its pong would
     * take the close frame's buffer (hd_wsguard.c) */
    ck_assert(!quiet[3] && !quiet[4]);
    hd_conn_close(&conns[3], HD_CLOSE_RATE_LIMITED, "rate limit exceeded");
    ck_assert(quiet[3]);
    hd_conn_close_after_flush(&conns[4], 1012, "restart");
    ck_assert(quiet[4]);
    ck_assert(!quiet[5]);
}
END_TEST

START_TEST(reply_over_the_cap_closes_as_slow_consumer)
{
    hd_conn_t *c = &conns[0];

    conf.outq_bytes = 10;
    ck_assert_int_eq(hd_conn_reply(c, "0123456789", 10), 0);
    ck_assert_int_eq(hd_conn_reply(c, "x", 1), -ENOBUFS);
    ck_assert_uint_eq(c->close_code, HD_CLOSE_SLOW_CONSUMER);
    /* the queue is freed at once; nothing more is queued */
    ck_assert_uint_eq(c->q_len, 0);
    ck_assert_uint_eq(c->q_bytes, 0);
    ck_assert_int_eq(hd_conn_reply(c, "y", 1), 0);
    ck_assert_uint_eq(c->q_len, 0);
    /* the close goes out from the writable callback */
    turn();
    ck_assert_int_eq(socks[0].frames, 0);
    ck_assert_int_ge(socks[0].writable_asks, 1);
    ck_assert_int_eq(hd_conn_flush(c), -1);
    ck_assert_uint_eq(socks[0].close_status, HD_CLOSE_SLOW_CONSUMER);
}
END_TEST

/* ---- frames ------------------------------------------------------------- */

START_TEST(queued_messages_are_batched_into_frames)
{
    hd_conn_t *c = &conns[0];

    conf.batch_max_messages = 3;
    for (int i = 1; i <= 7; i++) {
        char t[8];
        snprintf(t, sizeof(t), "m%d", i);
        push(c, t);
    }
    ck_assert_int_eq(socks[0].frames, 0); /* nothing before the turn */
    turn();
    ck_assert_int_eq(socks[0].frames, 3);
    ck_assert_str_eq(socks[0].last, "m7");
    ck_assert_uint_eq(socks[0].bytes, strlen("m1\nm2\nm3") * 2 + 2);
    ck_assert_uint_eq(c->q_len, 0);
    ck_assert_uint_eq(c->q_bytes, 0);
}
END_TEST

START_TEST(frames_respect_max_bytes_and_big_messages_go_alone)
{
    hd_conn_t *c = &conns[0];
    char       big[1500];

    conf.batch_max_bytes = 10;
    push(c, "aaaa");
    push(c, "bbbb"); /* "aaaa\nbbbb" is 9 bytes: one frame */
    push(c, "cc");   /* would make 12: next frame */
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    push(c, big); /* larger than a frame: alone, whole */
    push(c, "d");
    push(c, "e");
    push(c, "f"); /* "d\ne\nf" */
    turn();
    /* "aaaa\nbbbb", "cc", the big one, "d\ne": at most FRAMES_PER_CONN
     * frames a turn */
    ck_assert_int_eq(socks[0].frames, 4);
    ck_assert_str_eq(socks[0].last, "d\ne\nf");
    ck_assert_uint_eq(socks[0].bytes, 9 + 2 + sizeof(big) - 1 + 5);
    ck_assert_uint_eq(c->q_len, 0);
}
END_TEST

START_TEST(partial_write_waits_for_writable)
{
    hd_conn_t *c = &conns[0];

    conf.batch_max_messages = 1;
    socks[0].partial_after = 1;
    push(c, "a");
    push(c, "b");
    turn();
    ck_assert_int_eq(socks[0].frames, 1);
    ck_assert_uint_eq(c->q_len, 1);
    /* lws holds the rest of the frame and asks for writable itself: the
     * connection is not on the ready list any more */
    ck_assert_int_eq(c->wstate, HD_W_IDLE);
    turn();
    ck_assert_int_eq(socks[0].frames, 1);
    socks[0].partial_after = 0;
    ck_assert_int_eq(hd_conn_flush(c), 0);
    ck_assert_int_eq(socks[0].frames, 2);
    ck_assert_str_eq(socks[0].last, "b");
}
END_TEST

START_TEST(write_failure_kills_the_connection)
{
    hd_conn_t *c = &conns[0];

    socks[0].fail = true;
    push(c, "a");
    turn();
    ck_assert_uint_eq(c->close_code, HD_CLOSE_ABNORMAL);
    ck_assert_int_eq(socks[0].killed, 1);
    ck_assert_uint_eq(c->q_len, 0);
}
END_TEST

START_TEST(deflate_ping_and_peer_close_go_through_writable)
{
    conns[0].deflate = true;
    conns[1].ping_due = true;
    socks[2].close_len = 2;
    for (int i = 0; i < 3; i++)
        push(&conns[i], "a");
    turn();
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(socks[i].frames, 0);
        ck_assert_int_eq(socks[i].writable_asks, 1);
    }
    /* deflate: one frame per callback, and another callback asked for
     * while more is queued */
    conf.batch_max_messages = 1;
    push(&conns[0], "b");
    ck_assert_int_eq(hd_conn_flush(&conns[0]), 0);
    ck_assert_int_eq(socks[0].frames, 1);
    ck_assert_str_eq(socks[0].last, "a");
    ck_assert_uint_eq(conns[0].q_len, 1);
    ck_assert_int_eq(socks[0].writable_asks, 2);
}
END_TEST

START_TEST(close_after_flush_sends_what_is_queued_first)
{
    hd_conn_t *c = &conns[0];

    push(c, "error reply");
    hd_conn_close_after_flush(c, HD_CLOSE_INVALID_TOKEN, "bad");
    ck_assert_int_eq(hd_conn_flush(c), 0);
    ck_assert_str_eq(socks[0].last, "error reply");
    ck_assert_int_eq(hd_conn_flush(c), -1);
    ck_assert_uint_eq(socks[0].close_status, HD_CLOSE_INVALID_TOKEN);
}
END_TEST

/* ---- the per-turn budget and its round robin ---------------------------- */

START_TEST(write_budget_is_shared_round_robin)
{
    unsigned per_turn = FRAMES_PER_TURN / FRAMES_PER_CONN; /* 512 */

    conf.batch_max_messages = 1; /* one frame per message */
    for (unsigned i = 0; i < NCONN; i++)
        for (int k = 0; k < 10; k++)
            push(&conns[i], "m");
    turn();
    for (unsigned i = 0; i < NCONN; i++)
        ck_assert_int_eq(socks[i].frames, i < per_turn ? FRAMES_PER_CONN : 0);
    /* work left: the loop must not block */
    ck_assert(ev_is_active(&more_w));

    /* next turn: those left out go first, then the others again */
    turn();
    unsigned rest = NCONN - per_turn; /* 88 */
    unsigned again = per_turn - rest; /* 424 */
    for (unsigned i = 0; i < NCONN; i++) {
        int want = i >= per_turn ? FRAMES_PER_CONN
            : i < again          ? 2 * FRAMES_PER_CONN
                                 : FRAMES_PER_CONN;
        ck_assert_msg(socks[i].frames == want, "conn %u: %d frames, not %d", i,
                      socks[i].frames, want);
    }
    /* until everything is out */
    for (int t = 0; t < 10; t++)
        turn();
    for (unsigned i = 0; i < NCONN; i++)
        ck_assert_int_eq(socks[i].frames, 10);
    ck_assert(!ev_is_active(&more_w));
}
END_TEST

START_TEST(flush_delay_holds_pushes_not_replies)
{
    conf.batch_flush_delay_ms = 50;
    push(&conns[0], "p");
    ck_assert_int_eq(conns[0].wstate, HD_W_DELAYED);
    turn();
    ck_assert_int_eq(socks[0].frames, 0);
    /* a reply takes the pushes along at once */
    ck_assert_int_eq(hd_conn_reply(&conns[0], "r", 1), 0);
    hd_conn_want_write(&conns[0]);
    turn();
    ck_assert_int_eq(socks[0].frames, 1);
    ck_assert_str_eq(socks[0].last, "p\nr");
}
END_TEST

static Suite *
conn_suite(void)
{
    Suite *s = suite_create("conn");
    TCase *tc = tcase_create("queue");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, queue_is_capped_in_bytes);
    tcase_add_test(tc, a_close_makes_the_socket_quiet);
    tcase_add_test(tc, reply_over_the_cap_closes_as_slow_consumer);
    tcase_add_test(tc, queued_messages_are_batched_into_frames);
    tcase_add_test(tc, frames_respect_max_bytes_and_big_messages_go_alone);
    tcase_add_test(tc, partial_write_waits_for_writable);
    tcase_add_test(tc, write_failure_kills_the_connection);
    tcase_add_test(tc, deflate_ping_and_peer_close_go_through_writable);
    tcase_add_test(tc, close_after_flush_sends_what_is_queued_first);
    tcase_add_test(tc, write_budget_is_shared_round_robin);
    tcase_add_test(tc, flush_delay_holds_pushes_not_replies);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(conn_suite());
    int      failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
