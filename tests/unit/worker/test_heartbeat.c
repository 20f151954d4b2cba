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
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
