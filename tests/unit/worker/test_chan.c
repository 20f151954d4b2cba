/*
 * Unit tests for worker/hd_chan.c, the channel table, alone: its Redis
 * side (SUBSCRIBE, the meta and recovery reads) is faked here and answered
 * by the tests, and what it reports (subscribe replies, errors, gaps,
 * pushes) comes out through its hooks into a log the tests read back in
 * order. Covers pending to active, the buffer of pushes that arrive while
 * a member is pending, its overflow, epoch restarts and the resync after
 * the subscriber connection to Redis was lost.
 */
#include <check.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../worker/hd_chan.c"

/* ---- fake Redis --------------------------------------------------------- */

#define MAX_OPS 8

typedef struct {
    bool        meta; /* else a recovery read */
    hd_pub_cb  *mcb;
    hd_hist_cb *hcb;
    void       *arg;
    uint64_t    since;
    char        epoch[HD_EPOCH_MAX + 1];
} fake_op_t;

static struct {
    char      log[1 << 20];
    bool      sub_up;
    int       subscribe_rc, meta_rc, recover_hook_rc;
    fake_op_t ops[MAX_OPS];
    int       nops;
} F;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
note(const char *fmt, ...)
{
    size_t  n = strlen(F.log);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(F.log + n, sizeof(F.log) - n, fmt, ap);
    va_end(ap);
}

bool
hd_redis_sub_up(void)
{
    return F.sub_up;
}

/* one shard: every channel on shard 0 */
bool
hd_redis_sub_up_key(const char *key, size_t key_len)
{
    (void) key;
    (void) key_len;
    return F.sub_up;
}

unsigned
hd_redis_shard_of(const char *key, size_t key_len)
{
    (void) key;
    (void) key_len;
    return 0;
}

int
hd_redis_subscribe(bool sub, int n, const char **chans, const size_t *lens)
{
    if (F.subscribe_rc < 0)
        return F.subscribe_rc;
    for (int i = 0; i < n; i++)
        note("%s %.*s;", sub ? "SUBSCRIBE" : "UNSUBSCRIBE", (int) lens[i],
             chans[i]);
    return 0;
}

int
hd_pubsub_meta(const hd_ns_t *ns, const char *key, size_t key_len,
               hd_pub_cb *cb, void *arg)
{
    (void) ns;
    if (F.meta_rc < 0)
        return F.meta_rc;
    ck_assert_int_lt(F.nops, MAX_OPS);
    F.ops[F.nops++] = (fake_op_t){ .meta = true, .mcb = cb, .arg = arg };
    note("META %.*s;", (int) key_len, key);
    return 0;
}

int
hd_pubsub_recover(const hd_ns_t *ns, const char *key, size_t key_len,
                  uint64_t since, const char *since_epoch, unsigned cap,
                  hd_hist_cb *cb, void *arg)
{
    (void) ns;
    (void) cap;
    ck_assert_int_lt(F.nops, MAX_OPS);
    F.ops[F.nops] = (fake_op_t){ .hcb = cb, .arg = arg, .since = since };
    snprintf(F.ops[F.nops].epoch, sizeof(F.ops[F.nops].epoch), "%s",
             since_epoch);
    F.nops++;
    note("RECOVER %.*s since %" PRIu64 " %s;", (int) key_len, key, since,
         since_epoch);
    return 0;
}

/* Answer the oldest outstanding Redis read. */
static fake_op_t
take_op(void)
{
    fake_op_t op;

    ck_assert_int_gt(F.nops, 0);
    op = F.ops[0];
    memmove(F.ops, F.ops + 1, (size_t) (F.nops - 1) * sizeof(F.ops[0]));
    F.nops--;
    return op;
}

static void
meta_reply(int err, uint64_t offset, const char *epoch)
{
    fake_op_t op = take_op();

    ck_assert(op.meta);
    op.mcb(err, offset, epoch, op.arg);
}

/* A recovery reply carrying envelopes for offsets from..to. */
static void
recover_reply(int status, uint64_t from, uint64_t to, uint64_t offset,
              const char *epoch)
{
    fake_op_t       op = take_op();
    char            bufs[16][96];
    const char     *env[16];
    size_t          lens[16], n = 0;
    hd_hist_reply_t r = { .offset = offset, .epoch = epoch, .status = status };

    ck_assert(!op.meta);
    for (uint64_t o = from; status == 1 && o <= to && from > 0; o++, n++) {
        lens[n] = (size_t) snprintf(bufs[n], sizeof(bufs[n]),
                                    "1 %" PRIu64 " %s 1000 {\"n\":%" PRIu64 "}",
                                    o, epoch, o);
        env[n] = bufs[n];
    }
    r.n = n;
    r.env = env;
    r.env_len = lens;
    op.hcb(0, &r, op.arg);
}

/* The recovery read failed (Redis went away, or a WAIT was unmet). */
static void
recover_fail(void)
{
    fake_op_t op = take_op();

    ck_assert(!op.meta);
    op.hcb(HD_ERR_UNAVAILABLE, NULL, op.arg);
}

/* ---- hooks: what members are told --------------------------------------- */

static void
h_subscribed(hd_conn_t *c, int64_t id, uint64_t offset, const char *epoch)
{
    note("S%" PRIu64 " id%" PRId64 " @%" PRIu64 " %s;", c->id, id, offset,
         epoch);
}

static void
h_failed(hd_conn_t *c, int64_t id, int code, const char *msg)
{
    (void) msg;
    note("F%" PRIu64 " id%" PRId64 " %d;", c->id, id, code);
}

static void
h_gap(hd_conn_t *c, const hd_chan_t *ch, uint64_t from, uint64_t to,
      const char *epoch)
{
    (void) ch;
    note("G%" PRIu64 " %" PRIu64 "-%" PRIu64 " %s;", c->id, from, to, epoch);
}

static void
h_deliver(hd_conn_t *c, hd_msg_t *m)
{
    const char *o = strstr(m->data, "\"offset\":");

    ck_assert_ptr_nonnull(o);
    note("P%" PRIu64 " @%llu;", c->id, strtoull(o + 9, NULL, 10));
}

static int
h_recover(hd_conn_t *c, uint32_t sub_i)
{
    note("R%" PRIu64 " since %" PRIu64 ";", c->id, c->subs[sub_i].min_offset);
    return F.recover_hook_rc;
}

static const hd_chan_hooks_t hooks = {
    .subscribed = h_subscribed,
    .failed = h_failed,
    .gap = h_gap,
    .recover = h_recover,
    .deliver = h_deliver,
};

/* ---- helpers ------------------------------------------------------------ */

static struct ev_loop *loop;
static hd_ns_t         ns_hist = { .name = "h", .history_size = 100 };
static hd_ns_t         ns_plain = { .name = "p" };
static hd_conn_t       conns[4];

static void
setup(void)
{
    memset(&F, 0, sizeof(F));
    F.sub_up = true;
    memset(conns, 0, sizeof(conns));
    for (unsigned i = 0; i < 4; i++)
        conns[i].id = i + 1;
    loop = ev_loop_new(0);
    hd_chan_init(loop, &hooks);
}

static void
teardown(void)
{
    for (unsigned i = 0; i < 4; i++)
        hd_chan_leave_all(&conns[i]);
    hd_chan_shutdown();
    ev_loop_destroy(loop);
}

/* One loop turn's batch of (un)subscribes. */
static void
turn(void)
{
    flush_cb(loop, &T.flush_w, 0);
}

static void
clear(void)
{
    F.log[0] = '\0';
}

static void
expect(const char *want)
{
    ck_assert_str_eq(F.log, want);
    clear();
}

#define KEY "herald||room"

static hd_chan_t *
chan(const hd_ns_t *ns)
{
    return hd_chan_get(KEY, strlen(KEY), 8, ns);
}

static void
pub(uint64_t offset, const char *epoch)
{
    char buf[128];
    int  n = snprintf(buf, sizeof(buf), "1 %" PRIu64 " %s 1000 {\"x\":1}",
                      offset, epoch);

    hd_chan_dispatch(KEY, strlen(KEY), buf, (size_t) n);
}

/* c joins (plain subscribe, command id) and the channel goes live at
 * offset in epoch E. */
static hd_chan_t *
live_member(hd_conn_t *c, const hd_ns_t *ns, uint64_t offset)
{
    hd_chan_t *ch = chan(ns);

    hd_chan_join(ch, c, 7, 0, NULL);
    turn();
    hd_chan_confirmed(KEY, strlen(KEY), true);
    meta_reply(0, offset, "E");
    clear();
    return ch;
}

/* ---- pending to active -------------------------------------------------- */

START_TEST(pending_member_gets_its_reply_then_what_came_meanwhile)
{
    hd_chan_t *ch = chan(&ns_plain);

    ck_assert_int_eq(hd_chan_join(ch, &conns[0], 5, 0, NULL), 0);
    ck_assert_uint_eq(ch->npending, 1);
    expect(""); /* the SUBSCRIBE waits for the loop turn */
    turn();
    expect("SUBSCRIBE herald||room;");
    ck_assert_int_eq(ch->rstate, HD_R_SUBSCRIBING);
    hd_chan_confirmed(KEY, strlen(KEY), true);
    expect("META herald||room;");
    /* published while the meta read is in flight: kept for the member */
    pub(5, "E");
    pub(6, "E");
    expect("");
    /* the reply's offset is 5: 5 is in it, only 6 is new */
    meta_reply(0, 5, "E");
    expect("S1 id5 @5 E;P1 @6;");
    ck_assert_uint_eq(ch->npending, 0);
    ck_assert_uint_eq(ch->nbuf, 0);
    pub(7, "E");
    pub(7, "E"); /* a duplicate is never delivered twice */
    expect("P1 @7;");
}
END_TEST

START_TEST(joining_a_live_channel_shares_one_meta_read)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_plain, 3);

    hd_chan_join(ch, &conns[1], 8, 0, NULL);
    hd_chan_join(ch, &conns[2], 9, 0, NULL);
    expect("META herald||room;"); /* no second SUBSCRIBE, one read */
    pub(4, "E");
    expect("P1 @4;");
    meta_reply(0, 4, "E");
    expect("S2 id8 @4 E;S3 id9 @4 E;");
    pub(5, "E");
    expect("P1 @5;P2 @5;P3 @5;");
}
END_TEST

START_TEST(recovering_member_runs_its_own_read)
{
    hd_chan_t *ch = chan(&ns_hist);

    hd_chan_join(ch, &conns[0], 5, 3, "E");
    turn();
    hd_chan_confirmed(KEY, strlen(KEY), true);
    expect("SUBSCRIBE herald||room;R1 since 3;"); /* no shared meta read */
    pub(9, "E");
    pub(10, "E");
    /* the recovery reply (sent by the protocol) said offset 9 */
    hd_chan_activate(&conns[0], 0, 9, "E");
    expect("P1 @10;");
    ck_assert_int_eq(conns[0].subs[0].state, HD_SUB_ACTIVE);
}
END_TEST

START_TEST(recovery_without_redis_fails_the_member)
{
    hd_chan_t *ch = chan(&ns_hist);

    F.recover_hook_rc = -1;
    hd_chan_join(ch, &conns[0], 5, 3, "E");
    turn();
    hd_chan_confirmed(KEY, strlen(KEY), true);
    expect("SUBSCRIBE herald||room;R1 since 3;F1 id5 503;");
    ck_assert_uint_eq(conns[0].nsubs, 0);
}
END_TEST

START_TEST(subscribe_while_redis_is_down_fails_at_once)
{
    hd_chan_t *ch = chan(&ns_plain);

    F.sub_up = false;
    hd_chan_join(ch, &conns[0], 5, 0, NULL);
    turn();
    expect("F1 id5 503;");
    ck_assert_uint_eq(conns[0].nsubs, 0);
    ck_assert_uint_eq(hd_chan_count(), 1);
    turn(); /* freed on the next turn, never under a caller */
    expect("");
    ck_assert_uint_eq(hd_chan_count(), 0);
}
END_TEST

START_TEST(meta_read_failure_fails_pending_members)
{
    hd_chan_t *ch = chan(&ns_plain);

    hd_chan_join(ch, &conns[0], 5, 0, NULL);
    hd_chan_join(ch, &conns[1], 6, 0, NULL);
    turn();
    hd_chan_confirmed(KEY, strlen(KEY), true);
    clear();
    meta_reply(HD_ERR_UNAVAILABLE, 0, "");
    ck_assert(strstr(F.log, "F1 id5 503;") != NULL);
    ck_assert(strstr(F.log, "F2 id6 503;") != NULL);
    ck_assert_uint_eq(ch->nmembers, 0);
    clear();
    turn(); /* nobody left: UNSUBSCRIBE, then freed once confirmed */
    expect("UNSUBSCRIBE herald||room;");
    hd_chan_confirmed(KEY, strlen(KEY), false);
    turn();
    ck_assert_uint_eq(hd_chan_count(), 0);
}
END_TEST

START_TEST(leave_and_come_back_while_unsubscribing)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_plain, 3);

    hd_chan_leave(&conns[0], 0);
    turn();
    expect("UNSUBSCRIBE herald||room;");
    hd_chan_join(ch, &conns[1], 9, 0, NULL);
    turn(); /* in flight: left for its confirmation */
    expect("");
    hd_chan_confirmed(KEY, strlen(KEY), false);
    turn();
    expect("SUBSCRIBE herald||room;");
    hd_chan_confirmed(KEY, strlen(KEY), true);
    meta_reply(0, 3, "E");
    expect("META herald||room;S2 id9 @3 E;");
}
END_TEST

/* ---- gaps and the buffer -------------------------------------------------- */

START_TEST(epoch_restart_tells_members_with_a_gap)
{
    live_member(&conns[0], &ns_plain, 3);
    pub(4, "E");
    expect("P1 @4;");
    /* Redis lost the channel: numbering starts over in epoch F */
    pub(3, "F");
    expect("G1 1-2 F;P1 @3;");
    pub(1, "G"); /* nothing of the new epoch was missed */
    expect("G1 1-0 G;P1 @1;");
}
END_TEST

START_TEST(buffer_overflow_becomes_a_gap_not_a_silent_loss)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_plain, 0);
    char       want[64];

    hd_chan_join(ch, &conns[1], 8, 0, NULL);
    clear();
    for (uint64_t o = 1; o <= BUFFER_MAX + 10; o++)
        pub(o, "E");
    ck_assert_uint_eq(ch->nbuf, BUFFER_MAX);
    ck_assert_uint_eq(ch->buf_lost_upto, 10);
    clear();
    /* the pending member's reply says 0: 1..10 are gone from the buffer */
    meta_reply(0, 0, "E");
    snprintf(want, sizeof(want), "S2 id8 @0 E;G2 1-10 E;P2 @11;");
    ck_assert_int_eq(strncmp(F.log, want, strlen(want)), 0);
    snprintf(want, sizeof(want), "P2 @%u;", BUFFER_MAX + 10);
    ck_assert_str_eq(F.log + strlen(F.log) - strlen(want), want);
    ck_assert_uint_eq(ch->nbuf, 0); /* dropped once nobody is pending */
}
END_TEST

START_TEST(malformed_envelope_is_dropped)
{
    live_member(&conns[0], &ns_plain, 0);
    hd_chan_dispatch(KEY, strlen(KEY), "garbage", 7);
    hd_chan_dispatch("herald||other", 13, "1 1 E 1 1", 9);
    expect("");
    pub(1, "E");
    expect("P1 @1;");
}
END_TEST

/* ---- resync after the subscriber connection was lost --------------------- */

START_TEST(resync_fills_the_hole_from_history_before_live_pushes)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_hist, 6);

    pub(7, "E");
    expect("P1 @7;");
    F.sub_up = false;
    hd_chan_redis_down(0);
    ck_assert(ch->resync);
    ck_assert_int_eq(ch->rstate, HD_R_NONE);
    turn();
    expect(""); /* down: nothing to send, the member stays */
    ck_assert_uint_eq(ch->nmembers, 1);

    F.sub_up = true;
    hd_chan_redis_up(0);
    turn();
    expect("SUBSCRIBE herald||room;");
    hd_chan_confirmed(KEY, strlen(KEY), true);
    expect("RECOVER herald||room since 7 E;");
    /* a live push before the hole is filled waits behind it */
    pub(10, "E");
    pub(11, "E");
    expect("");
    recover_reply(1, 8, 10, 10, "E");
    expect("P1 @8;P1 @9;P1 @10;P1 @11;");
    ck_assert(!ch->resync);
    pub(12, "E");
    expect("P1 @12;");
}
END_TEST

START_TEST(resync_without_history_sends_one_gap)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_plain, 6);

    pub(7, "E");
    clear();
    hd_chan_redis_down(0);
    hd_chan_redis_up(0);
    turn();
    hd_chan_confirmed(KEY, strlen(KEY), true);
    expect("SUBSCRIBE herald||room;META herald||room;");
    pub(11, "E"); /* first live one: 8..10 were missed */
    pub(12, "E");
    meta_reply(0, 12, "E");
    expect("G1 8-10 E;P1 @11;P1 @12;");
    ck_assert(!ch->resync);
}
END_TEST

START_TEST(resync_into_a_new_epoch_marks_everything_missed)
{
    live_member(&conns[0], &ns_hist, 6);
    pub(7, "E");
    clear();
    hd_chan_redis_down(0);
    hd_chan_redis_up(0);
    turn();
    hd_chan_confirmed(KEY, strlen(KEY), true);
    clear();
    /* Redis restarted empty: the epoch moved on, history cannot help */
    recover_reply(0, 0, 0, 4, "N");
    expect("G1 1-4 N;");
    pub(5, "N");
    expect("P1 @5;");
}
END_TEST

START_TEST(pending_members_fail_when_redis_goes_down)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_plain, 0);

    hd_chan_join(ch, &conns[1], 8, 0, NULL);
    clear();
    /* its meta read is in flight: the reply decides */
    hd_chan_redis_down(0);
    expect("");
    meta_reply(HD_ERR_UNAVAILABLE, 0, "");
    expect("F2 id8 503;");
    ck_assert_uint_eq(ch->nmembers, 1);
}
END_TEST

START_TEST(cmd_up_restarts_what_waited_for_the_command_connection)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_plain, 0);

    F.meta_rc = -1; /* the command connection is down */
    hd_chan_join(ch, &conns[1], 8, 0, NULL);
    expect("F2 id8 503;"); /* no read possible: fails at once */
    F.meta_rc = 0;
    hd_chan_redis_down(0);
    hd_chan_redis_up(0);
    turn();
    F.meta_rc = -1;
    hd_chan_confirmed(KEY, strlen(KEY), true);
    clear();
    F.meta_rc = 0;
    hd_chan_cmd_up(0); /* the resync's meta read goes now */
    expect("META herald||room;");
}
END_TEST

/*
 * A join on a live channel whose read Redis refuses at once fails before
 * hd_chan_join() returns: it says so instead of an index, since its slot
 * is gone and nsubs - 1 is now another subscription of the connection.
 */
START_TEST(join_failing_at_once_returns_no_slot)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_plain, 0);
    hd_chan_t *other = hd_chan_get("herald||x", 9, 8, &ns_plain);

    ck_assert_int_eq(hd_chan_join(other, &conns[1], 3, 0, NULL), 0);
    F.meta_rc = -ENOBUFS; /* the command connection is full */
    ck_assert_int_eq(hd_chan_join(ch, &conns[1], 8, 0, NULL), -EAGAIN);
    expect("F2 id8 503;");
    ck_assert_uint_eq(conns[1].nsubs, 1);
    ck_assert_ptr_eq(conns[1].subs[0].chan, other);
    F.recover_hook_rc = -1; /* the same for a recovering member */
    ck_assert_int_eq(hd_chan_join(ch, &conns[2], 9, 0, "E"), -EAGAIN);
    expect("R3 since 0;F3 id9 503;");
    ck_assert_uint_eq(conns[2].nsubs, 0);
    F.meta_rc = 0;
    ck_assert_int_eq(hd_chan_join(ch, &conns[1], 10, 0, NULL), 1);
}
END_TEST

/* ---- live holes (redis.wait_replicas publishes after WAIT) --------------- */

START_TEST(out_of_order_live_pushes_are_delivered_in_order)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_hist, 3);

    /* 5's WAIT was met before 4's: 5 is held and a fill read goes */
    pub(5, "E");
    expect("RECOVER herald||room since 3 E;");
    ck_assert(ch->resync);
    pub(4, "E"); /* arrives while the read is in flight: held too */
    expect("");
    recover_reply(1, 4, 5, 5, "E");
    expect("P1 @4;P1 @5;");
    ck_assert(!ch->resync);
    ck_assert_uint_eq(ch->nbuf, 0);
    pub(4, "E"); /* late duplicates are dropped */
    pub(5, "E");
    expect("");
    pub(6, "E");
    expect("P1 @6;");
}
END_TEST

START_TEST(late_arrival_after_the_fill_is_dropped)
{
    live_member(&conns[0], &ns_hist, 3);
    pub(6, "E");
    expect("RECOVER herald||room since 3 E;");
    /* the fill brings 4 and 5 from history before they come live */
    recover_reply(1, 4, 6, 6, "E");
    expect("P1 @4;P1 @5;P1 @6;");
    pub(5, "E");
    pub(4, "E");
    expect("");
    pub(7, "E");
    expect("P1 @7;");
}
END_TEST

START_TEST(a_hole_is_filled_from_history_for_the_members_that_need_it)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_hist, 3);

    pub(4, "E");
    expect("P1 @4;");
    /* 5 was stored but its WAIT failed: never published. A new member's
     * subscribe reply (confirmed by its own WAIT) says 5. */
    hd_chan_join(ch, &conns[1], 8, 0, NULL);
    meta_reply(0, 5, "E");
    expect("META herald||room;S2 id8 @5 E;");
    /* 6 is next for member 2, one past a hole for member 1 */
    pub(6, "E");
    expect("P2 @6;RECOVER herald||room since 4 E;");
    recover_reply(1, 5, 6, 6, "E");
    expect("P1 @5;P1 @6;");
    pub(7, "E");
    expect("P1 @7;P2 @7;");
}
END_TEST

START_TEST(a_hole_without_history_is_a_gap)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_plain, 3);

    pub(6, "E");
    expect("META herald||room;");
    pub(4, "E"); /* came late, but before the read's answer */
    expect("");
    meta_reply(0, 6, "E");
    /* 5 (its WAIT failed, or still on its way) is told as missed */
    expect("P1 @4;G1 5-5 E;P1 @6;");
    ck_assert(!ch->resync);
    pub(5, "E"); /* already told as a gap: dropped */
    expect("");
    pub(7, "E");
    expect("P1 @7;");
}
END_TEST

START_TEST(a_hole_above_what_the_read_saw_takes_another_read)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_hist, 3);

    pub(6, "E");
    expect("RECOVER herald||room since 3 E;");
    /* the read ran before 5 and 6 were made */
    recover_reply(1, 4, 4, 4, "E");
    expect("P1 @4;RECOVER herald||room since 4 E;");
    ck_assert(ch->resync);
    pub(5, "E");
    expect("");
    recover_reply(1, 5, 6, 6, "E");
    expect("P1 @5;P1 @6;");
    ck_assert(!ch->resync);
}
END_TEST

START_TEST(a_refused_fill_read_is_retried_by_the_next_live_push)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_hist, 3);

    pub(5, "E");
    expect("RECOVER herald||room since 3 E;");
    recover_fail(); /* WAIT unmet: nothing delivered, still held */
    expect("");
    ck_assert(ch->resync);
    pub(6, "E");
    expect("RECOVER herald||room since 3 E;");
    recover_reply(1, 4, 6, 6, "E");
    expect("P1 @4;P1 @5;P1 @6;");
}
END_TEST

START_TEST(a_refused_fill_read_is_retried_within_a_second)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_hist, 3);

    pub(5, "E");
    expect("RECOVER herald||room since 3 E;");
    recover_fail(); /* WAIT unmet: held, and nothing more is published */
    expect("");
    ck_assert(ev_is_active(&T.retry_w));
    retry_cb(loop, &T.retry_w, 0); /* the timer fires */
    expect("RECOVER herald||room since 3 E;");
    recover_reply(1, 4, 5, 5, "E");
    expect("P1 @4;P1 @5;");
    ck_assert(!ch->resync);
    ck_assert_uint_eq(ch->nbuf, 0);
}
END_TEST

START_TEST(a_member_going_live_over_a_hole_starts_a_fill)
{
    hd_chan_t *ch = chan(&ns_hist);

    hd_chan_join(ch, &conns[0], 7, 0, NULL);
    turn();
    hd_chan_confirmed(KEY, strlen(KEY), true);
    expect("SUBSCRIBE herald||room;META herald||room;");
    pub(6, "E"); /* kept for the pending member */
    meta_reply(0, 4, "E");
    expect("S1 id7 @4 E;RECOVER herald||room since 4 E;");
    recover_reply(1, 5, 6, 6, "E");
    expect("P1 @5;P1 @6;");
    ck_assert_uint_eq(ch->nbuf, 0);
}
END_TEST

START_TEST(a_hole_no_read_explains_ends_as_a_gap)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_hist, 3);

    pub(6, "E");
    clear();
    /* every read says 4 is the last: 5 never shows; bounded reads */
    recover_reply(1, 4, 4, 4, "E");
    for (int i = 1; i < FILL_ROUNDS_MAX - 1; i++)
        recover_reply(1, 0, 0, 4, "E");
    clear();
    recover_reply(1, 0, 0, 4, "E");
    expect("G1 5-5 E;P1 @6;");
    ck_assert(!ch->resync);
    ck_assert_int_eq(F.nops, 0);
}
END_TEST

START_TEST(a_numbering_restart_during_a_fill_drops_the_old_one)
{
    hd_chan_t *ch = live_member(&conns[0], &ns_hist, 3);

    pub(5, "E");
    expect("RECOVER herald||room since 3 E;");
    /* Redis lost the channel meanwhile: epoch N starts from 1; and a late
     * one of E */
    pub(1, "N");
    pub(2, "N");
    pub(4, "E");
    expect("");
    /* the read ran before the loss: 4 and 5 of E; N waits for a read
     * that sees it */
    recover_reply(1, 4, 5, 5, "E");
    expect("P1 @4;P1 @5;RECOVER herald||room since 5 E;");
    recover_reply(0, 0, 0, 2, "N");
    expect("G1 1-0 N;P1 @1;P1 @2;");
    ck_assert(!ch->resync);
    ck_assert_uint_eq(ch->nbuf, 0);
    pub(3, "N");
    expect("P1 @3;");
}
END_TEST

static Suite *
chan_suite(void)
{
    Suite *s = suite_create("chan");
    TCase *tc = tcase_create("table");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, pending_member_gets_its_reply_then_what_came_meanwhile);
    tcase_add_test(tc, joining_a_live_channel_shares_one_meta_read);
    tcase_add_test(tc, recovering_member_runs_its_own_read);
    tcase_add_test(tc, recovery_without_redis_fails_the_member);
    tcase_add_test(tc, subscribe_while_redis_is_down_fails_at_once);
    tcase_add_test(tc, meta_read_failure_fails_pending_members);
    tcase_add_test(tc, leave_and_come_back_while_unsubscribing);
    tcase_add_test(tc, epoch_restart_tells_members_with_a_gap);
    tcase_add_test(tc, buffer_overflow_becomes_a_gap_not_a_silent_loss);
    tcase_add_test(tc, malformed_envelope_is_dropped);
    tcase_add_test(tc, resync_fills_the_hole_from_history_before_live_pushes);
    tcase_add_test(tc, resync_without_history_sends_one_gap);
    tcase_add_test(tc, resync_into_a_new_epoch_marks_everything_missed);
    tcase_add_test(tc, pending_members_fail_when_redis_goes_down);
    tcase_add_test(tc, cmd_up_restarts_what_waited_for_the_command_connection);
    tcase_add_test(tc, join_failing_at_once_returns_no_slot);
    tcase_add_test(tc, out_of_order_live_pushes_are_delivered_in_order);
    tcase_add_test(tc, late_arrival_after_the_fill_is_dropped);
    tcase_add_test(tc,
                   a_hole_is_filled_from_history_for_the_members_that_need_it);
    tcase_add_test(tc, a_hole_without_history_is_a_gap);
    tcase_add_test(tc, a_hole_above_what_the_read_saw_takes_another_read);
    tcase_add_test(tc, a_refused_fill_read_is_retried_by_the_next_live_push);
    tcase_add_test(tc, a_refused_fill_read_is_retried_within_a_second);
    tcase_add_test(tc, a_member_going_live_over_a_hole_starts_a_fill);
    tcase_add_test(tc, a_hole_no_read_explains_ends_as_a_gap);
    tcase_add_test(tc, a_numbering_restart_during_a_fill_drops_the_old_one);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(chan_suite());
    int      failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
