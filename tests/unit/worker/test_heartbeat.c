/*
 * The heartbeat sweep (worker/hd_ws.c): pong deadlines on the loop's
 * lag-corrected clock, so that a stalled loop does not close its idle
 * connections as stale, and the empty outbound rings it gives back.
 * Connections here have no wsi and no socket (fd -1): the sweep reads
 * neither.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "hd_alloc.h"
#include "hd_codes.h"
#include "hd_conf.h"
#include "hd_conn.h"
#include "hd_jwt.h"
#include "hd_proto.h"
#include "hd_time.h"
#include "hd_worker_int.h"

static hd_conf_t conf;

static void
setup(void)
{
    memset(&conf, 0, sizeof(conf));
    conf.ping_interval_ms = 25000;
    conf.pong_timeout_ms = 10000;
    hd_w.conf = &conf;
    hd_w.conns = NULL;
}

static hd_conn_t *
add_conn(void)
{
    hd_conn_t *c = hd_calloc(1, sizeof(*c));

    c->fd = -1;
    c->last_rx_ms = hd_mono_ms(); /* heard from just now: no ping due */
    c->next = hd_w.conns;
    if (hd_w.conns != NULL)
        hd_w.conns->prev = c;
    hd_w.conns = c;
    return c;
}

static void
free_conns(void)
{
    while (hd_w.conns != NULL) {
        hd_conn_t *c = hd_w.conns;
        hd_w.conns = c->next;
        hd_free(c->q);
        hd_free(c->closing);
        hd_free(c);
    }
}

START_TEST(test_clock_subtracts_lag)
{
    /* sweeps on time: the clock is the monotonic time less what lag it
     * had (none yet from this base) */
    uint64_t base = hd_mono_ms() + 1000000;
    uint64_t h0 = hd_ws_heartbeat_clock(base);
    uint64_t lag0 = base - h0;

    ck_assert_uint_eq(hd_ws_heartbeat_clock(base + 1000), base + 1000 - lag0);
    ck_assert_uint_eq(hd_ws_heartbeat_clock(base + 2000), base + 2000 - lag0);
    /* a sweep 5 s late: 4 s of lag, which never counts */
    ck_assert_uint_eq(hd_ws_heartbeat_clock(base + 7000), base + 3000 - lag0);
    ck_assert_uint_eq(hd_ws_heartbeat_clock(base + 8000), base + 4000 - lag0);
    /* early or on time adds nothing */
    ck_assert_uint_eq(hd_ws_heartbeat_clock(base + 8500), base + 4500 - lag0);
}
END_TEST

START_TEST(test_stalled_loop_is_not_stale)
{
    hd_conn_t *c = add_conn();
    uint64_t   now = hd_mono_ms();
    /* the last sweep ran 21 s ago and sent c a ping; the loop has been
     * stalled since (its pong may wait unread in the socket) */
    uint64_t sent = hd_ws_heartbeat_clock(now - 21000);

    c->ping_sent_ms = sent;
    hd_ws_heartbeat_cb(NULL, NULL, 0);
    ck_assert_uint_eq(c->close_code, 0);
    free_conns();
}
END_TEST

START_TEST(test_unanswered_ping_is_stale)
{
    hd_conn_t *c = add_conn();
    hd_conn_t *ok = add_conn();
    uint64_t   h = hd_ws_heartbeat_clock(hd_mono_ms());

    /* sweeps ran on time since the ping went out 11 s ago */
    c->ping_sent_ms = h - 11000;
    ok->ping_sent_ms = h - 5000;
    hd_ws_heartbeat_cb(NULL, NULL, 0);
    ck_assert_uint_eq(c->close_code, HD_CLOSE_STALE);
    ck_assert_str_eq(c->closing->reason, "no pong");
    ck_assert_uint_eq(ok->close_code, 0);
    free_conns();
}
END_TEST

START_TEST(test_quiet_ping_due)
{
    hd_conn_t *c = add_conn();

    c->last_rx_ms = hd_mono_ms() - 26000;
    hd_ws_heartbeat_cb(NULL, NULL, 0);
    ck_assert(c->ping_due);
    ck_assert_uint_ne(c->ping_sent_ms, 0);
    ck_assert_uint_eq(c->close_code, 0);
    free_conns();
}
END_TEST

START_TEST(test_empty_ring_freed)
{
    hd_conn_t *idle = add_conn();
    hd_conn_t *busy = add_conn();

    idle->q = hd_calloc(8, sizeof(*idle->q));
    idle->q_cap = 8;
    idle->q_head = 3;
    /* a write is scheduled: its ring stays */
    busy->q = hd_calloc(8, sizeof(*busy->q));
    busy->q_cap = 8;
    busy->wstate = 1;
    hd_ws_heartbeat_cb(NULL, NULL, 0);
    ck_assert_ptr_null(idle->q);
    ck_assert_uint_eq(idle->q_cap, 0);
    ck_assert_uint_eq(idle->q_head, 0);
    ck_assert_ptr_nonnull(busy->q);
    ck_assert_uint_eq(busy->q_cap, 8);
    busy->wstate = 0;
    free_conns();
}
END_TEST

/* A connection's deadline (connect, token expiry) is checked by the
 * sweep: due or past fires, ahead waits, none does nothing. */
START_TEST(test_connect_deadline_on_the_sweep)
{
    hd_conn_t *late = add_conn(), *early = add_conn(), *none = add_conn();
    uint64_t   now = hd_mono_ms();

    conf.connect_ms = 500;
    late->timer_on = true;
    late->due_ms = (uint32_t) (now - 1);
    early->timer_on = true;
    early->due_ms = (uint32_t) (now + 5000);
    hd_ws_heartbeat_cb(NULL, NULL, 0);
    ck_assert_uint_eq(late->close_code, HD_CLOSE_CONNECT_TIMEOUT);
    ck_assert_str_eq(late->closing->reason, "no connect command in time");
    ck_assert(!late->timer_on);
    ck_assert_uint_eq(early->close_code, 0);
    ck_assert(early->timer_on);
    ck_assert_uint_eq(none->close_code, 0);
    free_conns();
}
END_TEST

/* The deadline is 32 bits of the monotonic clock, compared modulo 2^32. */
START_TEST(test_deadline_across_the_wrap)
{
    hd_conn_t *c = add_conn();

    c->timer_on = true;
    c->due_ms = 0x10; /* just after the wrap */
    hd_proto_conn_due(c, 0xfffffff0ull);
    ck_assert(c->timer_on);
    ck_assert_uint_eq(c->close_code, 0);
    hd_proto_conn_due(c, 0x100000010ull); /* the clock passed it */
    ck_assert(!c->timer_on);
    ck_assert_uint_eq(c->close_code, HD_CLOSE_CONNECT_TIMEOUT);
    free_conns();
}
END_TEST

/* After connect: an expired token closes 4003; a deadline further than
 * the 32-bit clock reaches is armed in steps, so an early check re-arms
 * and does nothing else. */
START_TEST(test_token_expiry_on_the_sweep)
{
    hd_conn_t       *gone = add_conn(), *far = add_conn();
    hd_jwt_claims_t *a = hd_calloc(1, sizeof(*a));
    hd_jwt_claims_t *b = hd_calloc(1, sizeof(*b));
    uint64_t         now = hd_mono_ms();
    int64_t          wall = (int64_t) hd_wall_sec();

    conf.auth_refresh_window_s = 60;
    gone->connected = far->connected = true;
    gone->claims = a;
    far->claims = b;
    a->exp = wall - 1;
    gone->refresh_pushed = true; /* the push went out before */
    b->exp = wall + 30 * 86400;  /* a month away */
    gone->timer_on = far->timer_on = true;
    gone->due_ms = far->due_ms = (uint32_t) (now - 1);
    hd_ws_heartbeat_cb(NULL, NULL, 0);
    ck_assert_uint_eq(gone->close_code, HD_CLOSE_TOKEN_EXPIRED);
    ck_assert_uint_eq(far->close_code, 0);
    ck_assert(!far->refresh_pushed);
    ck_assert(far->timer_on);
    /* re-armed about 2^30 ms (~12 days) ahead */
    ck_assert_uint_gt((uint32_t) (far->due_ms - (uint32_t) now), 1u << 29);
    gone->claims = far->claims = NULL;
    free(a);
    free(b);
    free_conns();
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("heartbeat");
    TCase *tc = tcase_create("sweep");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_clock_subtracts_lag);
    tcase_add_test(tc, test_stalled_loop_is_not_stale);
    tcase_add_test(tc, test_unanswered_ping_is_stale);
    tcase_add_test(tc, test_quiet_ping_due);
    tcase_add_test(tc, test_empty_ring_freed);
    tcase_add_test(tc, test_connect_deadline_on_the_sweep);
    tcase_add_test(tc, test_deadline_across_the_wrap);
    tcase_add_test(tc, test_token_expiry_on_the_sweep);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
