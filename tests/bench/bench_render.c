/*
 * Cost of a GET /metrics scrape in the master, by number of live worker
 * slots (2, 16, 64 by default): the shm snapshot, the /proc reads and the
 * Prometheus text rendering, timed separately; median of RUNS runs.
 * Every slot has every histogram populated, so the work is the worst
 * case for its size (rendering does not skip zero series anyway).
 *
 *   bench_render [N ...]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "hd_render.h"
#include "hd_shm.h"

#define RUNS 21

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static int
cmp_d(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

static double
median(double *t)
{
    qsort(t, RUNS, sizeof(double), cmp_d);
    return t[RUNS / 2];
}

static void
bench(unsigned nslots)
{
    hd_shm_t *shm;
    if (hd_shm_create(&shm) < 0)
        exit(1);
    hd_shm_note_start(shm, nslots);
    for (unsigned w = 0; w < nslots; w++) {
        int idx = hd_shm_slot_acquire(shm, w, 1);
        /* our own pid: /proc reads succeed and cost what a real one does */
        hd_shm_slot_set_pid(shm, idx, getpid());
        hd_shm_slot_set_state(hd_shm_slot(shm, idx), HD_SLOT_RUNNING);
        hd_metrics_bind(hd_shm_slot(shm, idx));
        for (unsigned c = 0; c < HD_C__COUNT; c++)
            hd_ctr_add((enum hd_counter) c, 1000 + w);
        hd_gauge_set(HD_G_CONNECTIONS, 10000);
        hd_gauge_set(HD_G_REDIS_UP, 1);
        for (unsigned i = 0; i < 20000; i++)
            for (unsigned h = 0; h < HD_H__COUNT; h++)
                hd_hist_observe((enum hd_hist) h, 1000 + (uint64_t) i * i * 37);
        for (unsigned d = 1000; d < 1016; d++)
            hd_disconnect_inc(d);
    }
    hd_metrics_bind(NULL);

    static hd_render_proc_t proc;
    double      t_snap[RUNS], t_proc[RUNS], t_render[RUNS], t_total[RUNS];
    size_t      bytes = 0, lines = 0;
    hd_strbuf_t b = HD_STRBUF_INIT;
    for (int r = 0; r < RUNS; r++) {
        hd_shm_snapshot_t s;
        hd_strbuf_reset(&b);
        uint64_t t0 = now_ns();
        hd_shm_snapshot_take(shm, &s);
        uint64_t t1 = now_ns();
        hd_procinfo_collect(&s, &proc);
        uint64_t t2 = now_ns();
        hd_render_metrics(&b, &s, &proc, "0.1.0");
        uint64_t t3 = now_ns();
        hd_shm_snapshot_free(&s);
        t_snap[r] = (double) (t1 - t0) / 1e3;
        t_proc[r] = (double) (t2 - t1) / 1e3;
        t_render[r] = (double) (t3 - t2) / 1e3;
        t_total[r] = (double) (t3 - t0) / 1e3;
        bytes = b.len;
    }
    for (size_t i = 0; i < b.len; i++)
        lines += b.p[i] == '\n';
    printf("%6u %10.1f %10.1f %10.1f %10.1f %10zu %8zu\n", nslots,
           median(t_snap), median(t_proc), median(t_render), median(t_total),
           bytes, lines);
    hd_strbuf_free(&b);
    hd_shm_destroy(shm);
}

int
main(int argc, char **argv)
{
    printf("GET /metrics render cost (us), median of %d runs\n", RUNS);
    printf("%6s %10s %10s %10s %10s %10s %8s\n", "slots", "snapshot", "/proc",
           "render", "total", "bytes", "lines");
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            bench((unsigned) atoi(argv[i]));
    } else {
        bench(2);
        bench(16);
        bench(64);
    }
    return 0;
}
