/*
 * Concurrency: NWRITERS forked processes hammer counters, gauges and
 * histograms in their own slots while a reader thread takes snapshots
 * (and renders) in a loop and the main thread plays master: it SIGKILLs a
 * writer, reaps it, retires (folds) its slot and respawns that worker id
 * in a fresh slot, again and again. The reader checks, between any two
 * consecutive snapshots, that no counter, histogram bucket, histogram sum
 * or retired CPU total ever goes down, and within one snapshot that the
 * histogram's sum and count agree within the documented tolerance:
 *
 *   Each writer observes a constant DUR ns into HD_H_DELIVERY and writes
 *   the bucket before the sum. A snapshot reads a slot's buckets before
 *   its sum, so sum >= (count - live - killed) * DUR: the observations
 *   counted but not summed are the one in flight per live writer, plus one
 *   per process SIGKILLed between the two writes (folded as it was). The
 *   sum may run ahead of the count by whatever a writer did while the
 *   reader walked the buckets.
 *
 * At the end every writer is dead and folded. The totals are consistent
 * up to what SIGKILL can tear: a process killed between the bucket and
 * the sum of one observation (or between two counters of one loop turn)
 * leaves the pair off by one, so sum <= count * DUR <= sum + procs * DUR
 * and likewise for bytes vs accepted, procs being the processes a worker
 * id ever had.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hd_render.h"
#include "hd_shm.h"

#define NWRITERS 4
#define DUR      5000u /* ns, every DELIVERY observation */
#define KILLS    40

static hd_shm_t    *shm;
static atomic_uint  killed[NWRITERS]; /* SIGKILLs sent, per worker id */
static atomic_bool  stop_reader;
static atomic_ulong reads, violations;
static char         first_violation[512];

static void
violation(const char *fmt, unsigned id, unsigned long long a,
          unsigned long long b)
{
    if (atomic_fetch_add(&violations, 1) == 0)
        snprintf(first_violation, sizeof(first_violation), fmt, id, a, b);
}

/* Writer body: runs until SIGKILLed. */
static void writer(int idx) __attribute__((noreturn));
static void
writer(int idx)
{
    hd_shm_slot_set_pid(shm, idx, getpid());
    hd_metrics_bind(hd_shm_slot(shm, idx));
    hd_shm_slot_set_state(hd_shm_slot(shm, idx), HD_SLOT_RUNNING);
    hd_gauge_set(HD_G_REDIS_UP, 1);
    for (uint64_t i = 0;; i++) {
        hd_ctr_inc(HD_C_CONN_ACCEPTED);
        hd_ctr_add(HD_C_BYTES_SENT, 7);
        hd_gauge_add(HD_G_CONNECTIONS, (i & 1) ? -1 : 1);
        hd_hist_observe(HD_H_DELIVERY, DUR);
        hd_hist_observe(HD_H_REDIS_CMD, 1000 + (i % 1000000) * 37);
        if ((i & 63) == 0) {
            hd_reject_inc((enum hd_reject_reason)(i % HD_REJ__COUNT));
            hd_disconnect_inc(i & 128 ? 1000 : 4321);
        }
    }
}

static pid_t
spawn(unsigned id, int *idx_out)
{
    int idx = hd_shm_slot_acquire(shm, id, 1);
    ck_assert_int_ge(idx, 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        writer(idx);
    hd_shm_slot_set_pid(shm, idx, pid);
    *idx_out = idx;
    return pid;
}

static void
kill_and_fold(pid_t pid, int idx)
{
    struct rusage ru;
    int           status;
    /* counted before the kill, so a reader that sees the fold sees it */
    atomic_fetch_add(&killed[hd_shm_slot_worker_id(hd_shm_slot(shm, idx))], 1);
    kill(pid, SIGKILL);
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR)
        ;
    hd_shm_slot_set_state(hd_shm_slot(shm, idx), HD_SLOT_DEAD);
    double cpu = (double) ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
        + (double) ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    hd_shm_slot_retire(shm, idx, cpu);
}

static uint64_t
total(const hd_shm_hist_snap_t *h)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < HD_HIST_BUCKETS; i++)
        n += h->bucket[i];
    return n;
}

static void
compare(const hd_shm_snapshot_t *a, const hd_shm_snapshot_t *b)
{
    if (b->retired_cpu_ns < a->retired_cpu_ns)
        violation("retired cpu went down (%u) %llu -> %llu", 0,
                  a->retired_cpu_ns, b->retired_cpu_ns);
    for (size_t k = 0; k < b->nworkers; k++) {
        const hd_shm_worker_snap_t *y = &b->w[k];
        const hd_shm_worker_snap_t *x = NULL;
        for (size_t j = 0; j < a->nworkers; j++)
            if (a->w[j].worker_id == y->worker_id)
                x = &a->w[j];
        /* consistency inside one snapshot */
        const hd_shm_hist_snap_t *d = &y->hist[HD_H_DELIVERY];
        uint64_t                  n = total(d);
        uint64_t                  slack = y->live
            + (y->worker_id < NWRITERS ? atomic_load(&killed[y->worker_id])
                                       : 0);
        if (d->sum_ns + slack * DUR < n * DUR)
            violation("worker %u: sum behind count: count %llu sum/DUR %llu",
                      y->worker_id, n, d->sum_ns / DUR);
        if (x == NULL)
            continue;
        for (unsigned i = 0; i < HD_C__COUNT; i++)
            if (y->ctr[i] < x->ctr[i])
                violation("worker %u: counter went down %llu -> %llu",
                          y->worker_id, x->ctr[i], y->ctr[i]);
        for (unsigned i = 0; i < HD_REJ__COUNT; i++)
            if (y->rej[i] < x->rej[i])
                violation("worker %u: reject went down %llu -> %llu",
                          y->worker_id, x->rej[i], y->rej[i]);
        for (unsigned i = 0; i < HD_DISC__COUNT; i++)
            if (y->disc[i] < x->disc[i])
                violation("worker %u: disconnects went down %llu -> %llu",
                          y->worker_id, x->disc[i], y->disc[i]);
        if (y->cpu_retired_ns < x->cpu_retired_ns)
            violation("worker %u: cpu went down %llu -> %llu", y->worker_id,
                      x->cpu_retired_ns, y->cpu_retired_ns);
        for (unsigned h = 0; h < HD_H__COUNT; h++) {
            for (unsigned i = 0; i < HD_HIST_BUCKETS; i++)
                if (y->hist[h].bucket[i] < x->hist[h].bucket[i])
                    violation("worker %u: bucket went down %llu -> %llu",
                              y->worker_id, x->hist[h].bucket[i],
                              y->hist[h].bucket[i]);
            if (y->hist[h].sum_ns < x->hist[h].sum_ns)
                violation("worker %u: hist sum went down %llu -> %llu",
                          y->worker_id, x->hist[h].sum_ns, y->hist[h].sum_ns);
        }
    }
}

static void *
reader(void *arg)
{
    (void) arg;
    hd_shm_snapshot_t snap[2];
    hd_strbuf_t       b = HD_STRBUF_INIT;
    int               cur = 0;
    hd_shm_snapshot_take(shm, &snap[cur]);
    while (!atomic_load(&stop_reader)) {
        int nxt = cur ^ 1;
        hd_shm_snapshot_take(shm, &snap[nxt]);
        compare(&snap[cur], &snap[nxt]);
        /* render now and then too: it must not trip over a live segment */
        if ((atomic_load(&reads) & 15) == 0) {
            hd_strbuf_reset(&b);
            hd_render_metrics(&b, &snap[nxt], NULL, "t");
            if (b.len == 0 || b.p[b.len - 1] != '\n')
                violation("render %u: bad output %llu %llu", 0, b.len, 0);
        }
        hd_shm_snapshot_free(&snap[cur]);
        cur = nxt;
        atomic_fetch_add(&reads, 1);
    }
    hd_shm_snapshot_free(&snap[cur]);
    hd_strbuf_free(&b);
    return NULL;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

START_TEST(test_hammer_and_fold)
{
    pid_t     pid[NWRITERS];
    int       idx[NWRITERS];
    pthread_t th;

    ck_assert_int_eq(hd_shm_create(&shm), 0);
    hd_shm_note_start(shm, NWRITERS);
    for (unsigned w = 0; w < NWRITERS; w++)
        pid[w] = spawn(w, &idx[w]);
    ck_assert_int_eq(pthread_create(&th, NULL, reader, NULL), 0);

    /* crash and respawn, round robin, while everybody keeps going */
    for (int k = 0; k < KILLS; k++) {
        sleep_ms(15);
        unsigned w = (unsigned) k % NWRITERS;
        kill_and_fold(pid[w], idx[w]);
        pid[w] = spawn(w, &idx[w]);
    }
    sleep_ms(30);
    for (unsigned w = 0; w < NWRITERS; w++)
        kill_and_fold(pid[w], idx[w]);
    sleep_ms(10);
    atomic_store(&stop_reader, true);
    pthread_join(th, NULL);

    ck_assert_msg(atomic_load(&violations) == 0, "%lu violations, first: %s",
                  atomic_load(&violations), first_violation);
    ck_assert_uint_gt(atomic_load(&reads), 50);

    /* at rest: exact */
    hd_shm_snapshot_t s;
    hd_shm_snapshot_take(shm, &s);
    ck_assert_uint_eq(s.nworkers, NWRITERS);
    ck_assert_uint_eq(s.nslots, 0);
    uint64_t accepted = 0;
    for (size_t k = 0; k < s.nworkers; k++) {
        const hd_shm_worker_snap_t *w = &s.w[k];
        uint64_t                    n = total(&w->hist[HD_H_DELIVERY]);
        ck_assert_uint_gt(w->ctr[HD_C_CONN_ACCEPTED], 1000);
        /* a kill may land between the steps of one loop iteration, so
         * the per-iteration pairs may differ by one per process */
        uint64_t procs = KILLS / NWRITERS + 1;
        ck_assert_uint_le(w->ctr[HD_C_BYTES_SENT],
                          7 * w->ctr[HD_C_CONN_ACCEPTED]);
        ck_assert_uint_ge(w->ctr[HD_C_BYTES_SENT] + 7 * procs,
                          7 * w->ctr[HD_C_CONN_ACCEPTED]);
        ck_assert_uint_le(w->hist[HD_H_DELIVERY].sum_ns, n * DUR);
        ck_assert_uint_ge(w->hist[HD_H_DELIVERY].sum_ns + procs * DUR, n * DUR);
        ck_assert_int_eq(w->gauge[HD_G_CONNECTIONS], 0);
        ck_assert_uint_eq(w->live, 0);
        accepted += w->ctr[HD_C_CONN_ACCEPTED];
    }
    ck_assert_uint_gt(s.retired_cpu_ns, 0);
    fprintf(stderr,
            "concurrency: %lu snapshots, %llu increments folded "
            "over %d crashes\n",
            atomic_load(&reads), (unsigned long long) accepted, KILLS);
    hd_shm_snapshot_free(&s);
    hd_shm_destroy(shm);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("concurrency");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 100);
    tcase_add_test(tc, test_hammer_and_fold);
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
