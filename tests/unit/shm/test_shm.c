/*
 * The segment: header and layout, slot life cycle, fold-on-reap
 * arithmetic (counters never go down, gauges drop at once), replacement
 * aggregation, master-only header fields; plus hd_strbuf.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hd_metrics.h"
#include "hd_shm.h"
#include "hd_shm_layout.h"
#include "hd_strbuf.h"
#include "hd_time.h"

static hd_shm_t *shm;

static void
setup(void)
{
    ck_assert_int_eq(hd_shm_create(&shm), 0);
}

static void
teardown(void)
{
    hd_metrics_bind(NULL);
    hd_shm_destroy(shm);
    shm = NULL;
}

/* Find worker id in a snapshot (NULL if absent). */
static const hd_shm_worker_snap_t *
find(const hd_shm_snapshot_t *s, unsigned id)
{
    for (size_t k = 0; k < s->nworkers; k++)
        if (s->w[k].worker_id == id)
            return &s->w[k];
    return NULL;
}

static uint64_t
hist_count(const hd_shm_hist_snap_t *h)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < HD_HIST_BUCKETS; i++)
        n += h->bucket[i];
    return n;
}

/* Start a process for worker id: acquire, bind, RUNNING. */
static int
start(unsigned id, enum hd_slot_state st)
{
    int idx = hd_shm_slot_acquire(shm, id, 7);
    ck_assert_int_ge(idx, 0);
    hd_shm_slot_set_pid(shm, idx, 1000 + idx);
    hd_shm_slot_set_state(hd_shm_slot(shm, idx), st);
    hd_metrics_bind(hd_shm_slot(shm, idx));
    return idx;
}

START_TEST(test_header)
{
    const struct hd_shm *m = shm;
    ck_assert_uint_eq(m->hdr.magic, HD_SHM_MAGIC);
    ck_assert_uint_eq(m->hdr.version, HD_SHM_VERSION);
    ck_assert_uint_eq(m->hdr.slot_count, HD_SHM_SLOTS);
    ck_assert_uint_eq(m->hdr.slot_size, sizeof(struct hd_shm_slot));
    ck_assert_uint_eq(m->hdr.header_size, sizeof(hd_shm_hdr_t));
    ck_assert_uint_eq(m->hdr.total_size, sizeof(struct hd_shm));
    ck_assert_uint_eq((uintptr_t) m % 4096, 0);
    for (int i = 0; i < (int) HD_SHM_SLOTS; i++) {
        hd_shm_slot_t *s = hd_shm_slot(shm, i);
        ck_assert_ptr_nonnull(s);
        ck_assert_uint_eq((uintptr_t) s % 64, 0);
        ck_assert_uint_eq((uintptr_t) &s->m.hist[0] % 64, 0);
        ck_assert_int_eq(hd_shm_slot_state(s), HD_SLOT_FREE);
    }
    ck_assert_ptr_null(hd_shm_slot(shm, -1));
    ck_assert_ptr_null(hd_shm_slot(shm, HD_SHM_SLOTS));
    /* start time is "now" */
    double now = hd_wall_sec();
    ck_assert_double_le(hd_shm_start_time(shm), now);
    ck_assert_double_gt(hd_shm_start_time(shm), now - 60);
}
END_TEST

START_TEST(test_acquire)
{
    ck_assert_int_eq(hd_shm_slot_acquire(shm, HD_SHM_WORKER_IDS, 1), -EINVAL);
    int a = hd_shm_slot_acquire(shm, 4, 9);
    int b = hd_shm_slot_acquire(shm, 4, 10);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(b, 0);
    ck_assert_int_ne(a, b);
    hd_shm_slot_t *sa = hd_shm_slot(shm, a);
    ck_assert_int_eq(hd_shm_slot_state(sa), HD_SLOT_STARTING);
    ck_assert_uint_eq(hd_shm_slot_worker_id(sa), 4);
    ck_assert_uint_eq(hd_shm_slot_generation(sa), 9);
    ck_assert_int_eq(hd_shm_slot_pid(sa), 0);
    hd_shm_slot_set_pid(shm, a, 4242);
    ck_assert_int_eq(hd_shm_slot_pid(sa), 4242);
    hd_shm_slot_set_state(sa, HD_SLOT_RUNNING);
    ck_assert_int_eq(hd_shm_slot_state(sa), HD_SLOT_RUNNING);

    /* fill every slot, then one more fails; a retire frees one */
    int n = 2;
    while (hd_shm_slot_acquire(shm, (unsigned) n % 256, 1) >= 0)
        n++;
    ck_assert_int_eq(n, (int) HD_SHM_SLOTS);
    ck_assert_int_eq(hd_shm_slot_acquire(shm, 0, 1), -ENOSPC);
    hd_shm_slot_retire(shm, b, 0);
    ck_assert_int_eq(hd_shm_slot_state(hd_shm_slot(shm, b)), HD_SLOT_FREE);
    ck_assert_int_eq(hd_shm_slot_acquire(shm, 0, 1), b);
}
END_TEST

/* Counters survive retire + re-acquire of the same worker id; gauges go. */
START_TEST(test_fold_counters)
{
    hd_shm_note_start(shm, 2);
    int a = start(0, HD_SLOT_RUNNING);
    hd_ctr_add(HD_C_CONN_ACCEPTED, 5);
    hd_ctr_add(HD_C_BYTES_SENT, 100);
    hd_reject_inc(HD_REJ_AUTH);
    hd_reject_inc(HD_REJ_AUTH);
    hd_disconnect_inc(1000);
    hd_disconnect_inc(1000);
    hd_disconnect_inc(4999); /* not in the table: other */
    hd_gauge_add(HD_G_CONNECTIONS, 4);
    hd_gauge_add(HD_G_CONNECTIONS, -1);
    hd_gauge_set(HD_G_REDIS_UP, 1);
    hd_hist_observe(HD_H_HANDSHAKE, 300000);
    hd_hist_observe(HD_H_HANDSHAKE, 700000);

    hd_shm_snapshot_t s;
    hd_shm_snapshot_take(shm, &s);
    const hd_shm_worker_snap_t *w = find(&s, 0);
    ck_assert_ptr_nonnull(w);
    ck_assert_uint_eq(w->ctr[HD_C_CONN_ACCEPTED], 5);
    ck_assert_uint_eq(w->ctr[HD_C_BYTES_SENT], 100);
    ck_assert_uint_eq(w->rej[HD_REJ_AUTH], 2);
    ck_assert_uint_eq(w->disc[hd_disconnect_index(1000)], 2);
    ck_assert_uint_eq(w->disc[HD_DISC_KNOWN], 1);
    ck_assert_int_eq(w->gauge[HD_G_CONNECTIONS], 3);
    ck_assert_int_eq(w->gauge[HD_G_REDIS_UP], 1);
    ck_assert_int_eq(w->conn_peak, 4);
    ck_assert_uint_eq(hist_count(&w->hist[HD_H_HANDSHAKE]), 2);
    ck_assert_uint_eq(w->live, 1);
    ck_assert_uint_eq(s.nslots, 1);
    ck_assert_int_eq(s.slot[0].pid, 1000 + a);
    /* worker 1 is expected but never started: reported, all zero */
    ck_assert_ptr_nonnull(find(&s, 1));
    ck_assert_uint_eq(s.nworkers, 2);
    hd_shm_snapshot_free(&s);

    /* the process dies: gauges drop at once, counters stay */
    hd_metrics_bind(NULL);
    hd_shm_slot_set_state(hd_shm_slot(shm, a), HD_SLOT_DEAD);
    hd_shm_snapshot_take(shm, &s);
    w = find(&s, 0);
    ck_assert_uint_eq(w->ctr[HD_C_CONN_ACCEPTED], 5);
    ck_assert_int_eq(w->gauge[HD_G_CONNECTIONS], 0);
    ck_assert_int_eq(w->gauge[HD_G_REDIS_UP], 0);
    ck_assert_uint_eq(w->live, 0);
    ck_assert_uint_eq(s.nslots, 0);
    hd_shm_snapshot_free(&s);

    /* reaped and folded */
    hd_shm_slot_retire(shm, a, 1.25);
    ck_assert_int_eq(hd_shm_slot_state(hd_shm_slot(shm, a)), HD_SLOT_FREE);
    hd_shm_snapshot_take(shm, &s);
    w = find(&s, 0);
    ck_assert_uint_eq(w->ctr[HD_C_CONN_ACCEPTED], 5);
    ck_assert_uint_eq(w->ctr[HD_C_BYTES_SENT], 100);
    ck_assert_uint_eq(w->rej[HD_REJ_AUTH], 2);
    ck_assert_uint_eq(w->disc[hd_disconnect_index(1000)], 2);
    ck_assert_uint_eq(w->disc[HD_DISC_KNOWN], 1);
    ck_assert_uint_eq(hist_count(&w->hist[HD_H_HANDSHAKE]), 2);
    ck_assert_uint_eq(w->hist[HD_H_HANDSHAKE].sum_ns, 1000000);
    ck_assert_uint_eq(w->hist[HD_H_HANDSHAKE].max_ns, 700000);
    ck_assert_int_eq(w->gauge[HD_G_CONNECTIONS], 0);
    ck_assert_int_eq(w->conn_peak, 4);
    ck_assert_uint_eq(w->cpu_retired_ns, 1250000000);
    ck_assert_uint_eq(s.retired_cpu_ns, 1250000000);
    hd_shm_snapshot_free(&s);

    /* the slot's cells were cleared: a retire of FREE is a no-op */
    for (unsigned i = 0; i < HD_C__COUNT; i++)
        ck_assert_uint_eq(atomic_load(&hd_shm_slot(shm, a)->m.ctr[i]), 0);
    hd_shm_slot_retire(shm, a, 5.0);
    hd_shm_slot_retire(shm, -3, 5.0);

    /* respawn of worker 0: counts continue from the retired total */
    int b = start(0, HD_SLOT_RUNNING);
    hd_ctr_add(HD_C_CONN_ACCEPTED, 2);
    hd_gauge_add(HD_G_CONNECTIONS, 1);
    hd_hist_observe(HD_H_HANDSHAKE, 100);
    hd_shm_snapshot_take(shm, &s);
    w = find(&s, 0);
    ck_assert_uint_eq(w->ctr[HD_C_CONN_ACCEPTED], 7);
    ck_assert_uint_eq(w->rej[HD_REJ_AUTH], 2);
    ck_assert_int_eq(w->gauge[HD_G_CONNECTIONS], 1);
    ck_assert_int_eq(w->conn_peak, 4);
    ck_assert_uint_eq(hist_count(&w->hist[HD_H_HANDSHAKE]), 3);
    hd_shm_snapshot_free(&s);

    hd_metrics_bind(NULL);
    hd_shm_slot_retire(shm, b, 0.5);
    hd_shm_snapshot_take(shm, &s);
    w = find(&s, 0);
    ck_assert_uint_eq(w->ctr[HD_C_CONN_ACCEPTED], 7);
    ck_assert_uint_eq(w->cpu_retired_ns, 1750000000);
    ck_assert_uint_eq(hist_count(&w->hist[HD_H_HANDSHAKE]), 3);
    ck_assert_uint_eq(w->hist[HD_H_HANDSHAKE].sum_ns, 1000100);
    hd_shm_snapshot_free(&s);
}
END_TEST

/* A worker scaled away keeps its counters but loses its gauge series. */
START_TEST(test_scaled_away)
{
    hd_shm_note_start(shm, 4);
    int a = start(3, HD_SLOT_RUNNING);
    hd_ctr_add(HD_C_MSG_DELIVERED, 42);
    hd_gauge_set(HD_G_CONNECTIONS, 9);
    hd_metrics_bind(NULL);
    hd_shm_set_workers_expected(shm, 2);

    hd_shm_snapshot_t s;
    hd_shm_snapshot_take(shm, &s);
    const hd_shm_worker_snap_t *w = find(&s, 3);
    ck_assert(w->gauges); /* still live: still exported */
    ck_assert_int_eq(w->gauge[HD_G_CONNECTIONS], 9);
    hd_shm_snapshot_free(&s);

    hd_shm_slot_retire(shm, a, 0);
    hd_shm_snapshot_take(shm, &s);
    ck_assert_uint_eq(s.workers_expected, 2);
    w = find(&s, 3);
    ck_assert_ptr_nonnull(w);
    ck_assert(!w->gauges);
    ck_assert_uint_eq(w->ctr[HD_C_MSG_DELIVERED], 42);
    ck_assert_ptr_null(find(&s, 2)); /* never ran, not expected */
    ck_assert(find(&s, 0)->gauges);  /* expected, not running */
    hd_shm_snapshot_free(&s);
}
END_TEST

/* Old and new process of one worker id: sums, and the redis_up rule. */
START_TEST(test_replacement)
{
    hd_shm_note_start(shm, 1);
    int a = start(0, HD_SLOT_DRAINING);
    hd_ctr_add(HD_C_CONN_ACCEPTED, 10);
    hd_gauge_set(HD_G_CONNECTIONS, 6);
    hd_gauge_set(HD_G_REDIS_UP, 1);
    int b = start(0, HD_SLOT_STARTING);
    hd_ctr_add(HD_C_CONN_ACCEPTED, 3);
    hd_gauge_set(HD_G_CONNECTIONS, 2);
    hd_gauge_set(HD_G_REDIS_UP, 0); /* not connected yet */

    hd_shm_snapshot_t s;
    hd_shm_snapshot_take(shm, &s);
    const hd_shm_worker_snap_t *w = find(&s, 0);
    ck_assert_uint_eq(w->ctr[HD_C_CONN_ACCEPTED], 13);
    ck_assert_int_eq(w->gauge[HD_G_CONNECTIONS], 8);
    ck_assert_int_eq(w->gauge[HD_G_REDIS_UP], 1); /* STARTING ignored */
    ck_assert_int_eq(w->conn_peak, 6);            /* max of processes */
    ck_assert_uint_eq(w->live, 2);
    ck_assert_uint_eq(w->running, 0);
    ck_assert_uint_eq(s.slots_by_state[HD_SLOT_DRAINING], 1);
    ck_assert_uint_eq(s.slots_by_state[HD_SLOT_STARTING], 1);
    hd_shm_snapshot_free(&s);

    /* the new one runs without Redis: the worker is down */
    hd_shm_slot_set_state(hd_shm_slot(shm, b), HD_SLOT_RUNNING);
    hd_shm_snapshot_take(shm, &s);
    ck_assert_int_eq(find(&s, 0)->gauge[HD_G_REDIS_UP], 0);
    ck_assert_uint_eq(find(&s, 0)->running, 1);
    hd_shm_snapshot_free(&s);

    /* only STARTING processes: their min counts */
    hd_metrics_bind(NULL);
    hd_shm_slot_retire(shm, a, 0);
    hd_shm_slot_set_state(hd_shm_slot(shm, b), HD_SLOT_STARTING);
    hd_shm_snapshot_take(shm, &s);
    ck_assert_int_eq(find(&s, 0)->gauge[HD_G_REDIS_UP], 0);
    ck_assert_uint_eq(find(&s, 0)->ctr[HD_C_CONN_ACCEPTED], 13);
    hd_shm_snapshot_free(&s);
}
END_TEST

START_TEST(test_header_fields)
{
    hd_shm_note_start(shm, 3);
    ck_assert_uint_eq(hd_shm_workers_expected(shm), 3);
    hd_shm_note_restart(shm);
    hd_shm_note_restart(shm);
    hd_shm_note_reload(shm, false, 1);
    ck_assert_uint_eq(hd_shm_generation(shm), 0);
    uint64_t before = hd_wall_ns();
    hd_shm_note_reload(shm, true, 2);
    ck_assert_uint_eq(hd_shm_generation(shm), 2);
    hd_shm_set_start_time(shm, 1000.5);

    hd_shm_snapshot_t s;
    hd_shm_snapshot_take(shm, &s);
    ck_assert_uint_eq(s.restarts, 2);
    ck_assert_uint_eq(s.reloads_ok, 1);
    ck_assert_uint_eq(s.reloads_failed, 1);
    ck_assert_uint_ge(s.last_reload_ok_ns, before);
    ck_assert_uint_eq(s.generation, 2);
    ck_assert_uint_eq(s.start_ns, 1000500000000ull);
    ck_assert_uint_eq(s.workers_expected, 3);
    hd_shm_snapshot_free(&s);
}
END_TEST

/* The node peak: sampled sums, never lowered. */
START_TEST(test_node_peak)
{
    hd_shm_note_start(shm, 2);
    int a = start(0, HD_SLOT_RUNNING);
    hd_gauge_set(HD_G_CONNECTIONS, 5);
    start(1, HD_SLOT_RUNNING);
    hd_gauge_set(HD_G_CONNECTIONS, 7);
    ck_assert_int_eq(hd_shm_sample(shm), 12);
    hd_gauge_set(HD_G_CONNECTIONS, 1);
    ck_assert_int_eq(hd_shm_sample(shm), 6);
    hd_metrics_bind(NULL);
    hd_shm_slot_retire(shm, a, 0);

    hd_shm_snapshot_t s;
    hd_shm_snapshot_take(shm, &s);
    ck_assert_int_eq(s.node_conn_peak, 12);
    ck_assert_int_eq(find(&s, 1)->conn_peak, 7);
    ck_assert_int_eq(find(&s, 0)->conn_peak, 5);
    hd_shm_snapshot_free(&s);
}
END_TEST

START_TEST(test_unbound_noop)
{
    int a = hd_shm_slot_acquire(shm, 0, 1);
    hd_ctr_inc(HD_C_CONN_ACCEPTED);
    hd_gauge_add(HD_G_CONNECTIONS, 3);
    hd_reject_inc(HD_REJ_DRAINING);
    hd_disconnect_inc(1001);
    hd_hist_observe(HD_H_REDIS_CMD, 1000);
    hd_shm_snapshot_t s;
    hd_shm_snapshot_take(shm, &s);
    ck_assert_uint_eq(find(&s, 0)->ctr[HD_C_CONN_ACCEPTED], 0);
    ck_assert_int_eq(find(&s, 0)->gauge[HD_G_CONNECTIONS], 0);
    hd_shm_snapshot_free(&s);
    (void) a;
}
END_TEST

START_TEST(test_disconnect_table)
{
    static const unsigned known[] = {
        1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1011, 1012,
        1013, 4000, 4001, 4002, 4003, 4004, 4500, 4501, 4502, 4503,
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        unsigned idx = hd_disconnect_index(known[i]);
        ck_assert_uint_lt(idx, HD_DISC_KNOWN);
        ck_assert_uint_eq(hd_disconnect_code(idx), known[i]);
    }
    ck_assert_uint_eq(hd_disconnect_index(0), HD_DISC_KNOWN);
    ck_assert_uint_eq(hd_disconnect_index(999), HD_DISC_KNOWN);
    ck_assert_uint_eq(hd_disconnect_index(4999), HD_DISC_KNOWN);
    ck_assert_uint_eq(hd_disconnect_index(65535), HD_DISC_KNOWN);
    ck_assert_uint_eq(hd_disconnect_index(1u << 31), HD_DISC_KNOWN);
    /* codes in the table are distinct and map back to themselves */
    for (unsigned i = 0; i < HD_DISC_KNOWN; i++) {
        ck_assert_uint_eq(hd_disconnect_index(hd_disconnect_code(i)), i);
        for (unsigned j = 0; j < i; j++)
            ck_assert_uint_ne(hd_disconnect_code(i), hd_disconnect_code(j));
    }
}
END_TEST

START_TEST(test_strbuf)
{
    hd_strbuf_t b = HD_STRBUF_INIT;
    static const struct {
        uint64_t    ns;
        const char *s;
    } cases[] = {
        { 0, "0" },           { 1, "0.000000001" },
        { 10000, "0.00001" }, { 1500000000, "1.5" },
        { 1000000000, "1" },  { 1000000001, "1.000000001" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        hd_strbuf_reset(&b);
        hd_strbuf_ns_as_sec(&b, cases[i].ns);
        ck_assert_str_eq(b.p, cases[i].s);
    }
    hd_strbuf_reset(&b);
    hd_strbuf_ns_as_sec(&b, UINT64_MAX);
    ck_assert_str_eq(b.p, "18446744073.709551615");
    hd_strbuf_reset(&b);
    hd_strbuf_u64(&b, 0);
    hd_strbuf_putc(&b, ' ');
    hd_strbuf_u64(&b, UINT64_MAX);
    hd_strbuf_putc(&b, ' ');
    hd_strbuf_i64(&b, INT64_MIN);
    hd_strbuf_putc(&b, ' ');
    hd_strbuf_i64(&b, -5);
    ck_assert_str_eq(b.p, "0 18446744073709551615 -9223372036854775808 -5");
    /* growth across many appends keeps content and NUL */
    hd_strbuf_reset(&b);
    for (int i = 0; i < 10000; i++)
        hd_strbuf_printf(&b, "%04d,", i % 10000);
    ck_assert_uint_eq(b.len, 50000);
    ck_assert_uint_eq(strlen(b.p), 50000);
    ck_assert(memcmp(b.p + 49995, "9999,", 5) == 0);
    hd_strbuf_free(&b);
    ck_assert_ptr_null(b.p);
    ck_assert_uint_eq(b.len, 0);
}
END_TEST

/*
 * A fold sequence stuck odd (a stray write into the master's part of the
 * segment) must not hang the reader (the master's loop): bounded retries,
 * then the last consistent snapshot (issue 16 item 7). Before, the reader
 * spun forever and this test ran into its timeout.
 */
START_TEST(test_stuck_seqlock_serves_last_good)
{
    hd_shm_note_start(shm, 1);
    (void) start(0, HD_SLOT_RUNNING);
    hd_ctr_add(HD_C_CONN_ACCEPTED, 5);

    hd_shm_snapshot_t s;
    ck_assert_int_eq(hd_shm_snapshot_take(shm, &s), 0);
    ck_assert_uint_eq(find(&s, 0)->ctr[HD_C_CONN_ACCEPTED], 5);
    hd_shm_snapshot_free(&s);

    /* the stray write: fold_seq odd for good; the worker goes on */
    atomic_store(&shm->hdr.fold_seq, 41);
    hd_ctr_add(HD_C_CONN_ACCEPTED, 2);
    ck_assert_int_eq(hd_shm_snapshot_take(shm, &s), -EAGAIN);
    ck_assert_uint_eq(s.nworkers, 1);
    ck_assert_uint_eq(find(&s, 0)->ctr[HD_C_CONN_ACCEPTED], 5);
    hd_shm_snapshot_free(&s);
    ck_assert_int_eq(hd_shm_snapshot_take(shm, &s), -EAGAIN);
    hd_shm_snapshot_free(&s);

    /* repaired: fresh again */
    atomic_store(&shm->hdr.fold_seq, 42);
    ck_assert_int_eq(hd_shm_snapshot_take(shm, &s), 0);
    ck_assert_uint_eq(find(&s, 0)->ctr[HD_C_CONN_ACCEPTED], 7);
    hd_shm_snapshot_free(&s);
}
END_TEST

/* stuck from the start: nothing good to serve, but still bounded */
START_TEST(test_stuck_seqlock_no_snapshot_yet)
{
    hd_shm_note_start(shm, 1);
    (void) start(0, HD_SLOT_RUNNING);
    hd_ctr_add(HD_C_CONN_ACCEPTED, 3);
    atomic_store(&shm->hdr.fold_seq, 1);

    hd_shm_snapshot_t s;
    ck_assert_int_eq(hd_shm_snapshot_take(shm, &s), -EIO);
    ck_assert_uint_eq(find(&s, 0)->ctr[HD_C_CONN_ACCEPTED], 3);
    hd_shm_snapshot_free(&s);
}
END_TEST

#define SEGV_EXIT 71

static void
segv_exit(int sig)
{
    (void) sig;
    _exit(SEGV_EXIT);
}

/*
 * In a worker (after hd_shm_protect_master_part()) the master's part is
 * read-only: a write to the fold sequence kills the worker with SIGSEGV;
 * its own slot stays writable, and the master's view is untouched.
 */
START_TEST(test_master_part_read_only_in_workers)
{
    int idx = start(0, HD_SLOT_RUNNING);
    hd_metrics_bind(NULL);

    for (int which = 0; which < 3; which++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            /* our own handler, not the sanitizer's (which would abort):
             * the fault must be a SIGSEGV in any build */
            struct sigaction sa = { .sa_handler = segv_exit };
            sigemptyset(&sa.sa_mask);
            sigaction(SIGSEGV, &sa, NULL);
            if (hd_shm_protect_master_part(shm) < 0)
                _exit(3);
            hd_metrics_bind(hd_shm_slot(shm, idx));
            hd_ctr_add(HD_C_CONN_ACCEPTED, 9); /* own slot: fine */
            hd_shm_slot_set_state(hd_shm_slot(shm, idx), HD_SLOT_DRAINING);
            if (which == 1)
                atomic_store(&shm->hdr.fold_seq, 1); /* header */
            else if (which == 2)
                atomic_store(&shm->retired[0].cpu_ns, 1); /* totals */
            _exit(0);
        }
        int st = 0;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        if (which == 0) {
            ck_assert(WIFEXITED(st));
            ck_assert_int_eq(WEXITSTATUS(st), 0);
        } else {
            ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == SEGV_EXIT,
                          "write %d: status %#x, expected SIGSEGV", which, st);
        }
    }
    ck_assert_uint_eq(atomic_load(&shm->hdr.fold_seq) & 1, 0);
    ck_assert_uint_eq(atomic_load(&shm->retired[0].cpu_ns), 0);
    hd_shm_snapshot_t s;
    ck_assert_int_eq(hd_shm_snapshot_take(shm, &s), 0);
    ck_assert_uint_eq(find(&s, 0)->ctr[HD_C_CONN_ACCEPTED], 27);
    hd_shm_snapshot_free(&s);
    /* the master itself can still write it */
    hd_shm_note_restart(shm);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("shm");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_header);
    tcase_add_test(tc, test_acquire);
    tcase_add_test(tc, test_fold_counters);
    tcase_add_test(tc, test_scaled_away);
    tcase_add_test(tc, test_replacement);
    tcase_add_test(tc, test_header_fields);
    tcase_add_test(tc, test_node_peak);
    tcase_add_test(tc, test_unbound_noop);
    tcase_add_test(tc, test_disconnect_table);
    tcase_add_test(tc, test_strbuf);
    suite_add_tcase(s, tc);
    tc = tcase_create("robust");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_stuck_seqlock_serves_last_good);
    tcase_add_test(tc, test_stuck_seqlock_no_snapshot_yet);
    tcase_add_test(tc, test_master_part_read_only_in_workers);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
