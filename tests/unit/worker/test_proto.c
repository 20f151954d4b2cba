/*
 * Unit tests for worker/hd_proto.c, the message layer, against the real
 * channel table with the worker's Redis connections never started: every
 * Redis read is then refused at once (hd_pubsub_meta() returns
 * -ENOTCONN), which is how a join on a channel already live on Redis
 * fails before hd_chan_join() returns. The connection is a bare hd_conn_t
 * without a wsi: what it is sent stays in its queue, read back here.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hd_test_conf.h"

#include "../../../worker/hd_proto.c"

static hd_conf_t      *conf;
static struct ev_loop *loop;
static hd_conn_t       conn;
static const hd_ns_t   ns = { .name = "default" };

static void
setup(void)
{
    static const char json[] = "{\"workers\": 1, \"auth\": "
                               "{\"allow_anonymous\": true}}";

    conf = hd_test_conf(json);
    hd_w.conf = conf;
    loop = ev_loop_new(0);
    hd_w.loop = loop;
    hd_chan_init(loop, &hd_proto_chan_hooks);
    memset(&conn, 0, sizeof(conn));
    conn.id = 1;
}

static void
teardown(void)
{
    hd_chan_leave_all(&conn);
    hd_conn_release(&conn);
    hd_chan_shutdown();
    ev_loop_destroy(loop);
    hd_w.loop = NULL;
    hd_conf_free(conf);
    hd_w.conf = NULL;
}

#define KEY_A "herald||a" /* no tenant: the name starts at 8 */
#define KEY_B "herald||b"

/* Join key as the subscribe command does (after its checks). */
static void
join(int64_t id, const char *key, bool jl_off, int64_t token_exp)
{
    subscribe_join(&conn, id, key, strlen(key), 8, &ns, 0, NULL, jl_off,
                   token_exp);
}

/* Make the channel of key live on Redis, as if another member had it. */
static hd_chan_t *
live_channel(const char *key)
{
    hd_chan_t *ch = hd_chan_get(key, strlen(key), 8, &ns);

    ch->rstate = HD_R_SUBSCRIBED;
    return ch;
}

/* The only thing queued for the client. */
static const char *
only_reply(void)
{
    ck_assert_uint_eq(conn.q_len, 1);
    return conn.q[conn.q_head]->data;
}

/*
 * A subscribe whose join fails at once must leave the connection's other
 * subscriptions alone: the failed one's slot is gone, and the slot that
 * hd_chan_join() used to report (nsubs - 1) is another subscription's.
 */
START_TEST(failed_join_keeps_other_subscription)
{
    hd_chan_t *a = hd_chan_get(KEY_A, strlen(KEY_A), 8, &ns);

    join(1, KEY_A, false, 4102444800); /* pending, with a token */
    ck_assert_uint_eq(conn.nsubs, 1);
    ck_assert(conn.has_sub_tokens);

    live_channel(KEY_B);
    join(2, KEY_B, true, 0); /* no token, no join/leave pushes */

    ck_assert_uint_eq(conn.nsubs, 1);
    ck_assert_ptr_eq(conn.subs[0].chan, a);
    ck_assert_int_eq(conn.subs[0].token_exp, 4102444800); /* still expires */
    ck_assert(!conn.subs[0].jl_off);
    ck_assert_uint_eq(a->nmembers, 1);
    ck_assert_ptr_nonnull(strstr(only_reply(), "{\"id\":2,\"error\":"));
    ck_assert_ptr_nonnull(strstr(only_reply(), "\"code\":503"));
}
END_TEST

/* With no other subscription, nothing is written below the array either
 * (the ASan build would stop at subs[-1]), and no token is tracked. */
START_TEST(failed_join_alone)
{
    live_channel(KEY_B);
    join(3, KEY_B, true, 4102444800);

    ck_assert_uint_eq(conn.nsubs, 0);
    ck_assert(!conn.has_sub_tokens);
    ck_assert_ptr_nonnull(strstr(only_reply(), "{\"id\":3,\"error\":"));
}
END_TEST

/* The join that goes through keeps what the command asked for. */
START_TEST(join_sets_its_own_slot)
{
    join(4, KEY_A, true, 4102444800);

    ck_assert_uint_eq(conn.nsubs, 1);
    ck_assert(conn.subs[0].jl_off);
    ck_assert_int_eq(conn.subs[0].token_exp, 4102444800);
    ck_assert(conn.has_sub_tokens);
    ck_assert_uint_eq(conn.q_len, 0); /* the reply waits for Redis */
}
END_TEST

int
main(void)
{
    Suite   *s = suite_create("proto");
    TCase   *tc = tcase_create("join");
    SRunner *sr;
    int      failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, failed_join_keeps_other_subscription);
    tcase_add_test(tc, failed_join_alone);
    tcase_add_test(tc, join_sets_its_own_slot);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
