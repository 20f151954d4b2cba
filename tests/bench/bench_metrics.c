/*
 * Hot-path cost of the worker metric calls (shm/hd_metrics.h): ns per
 * counter increment, gauge change, labeled counter and histogram
 * observation on a bound shm slot, with two baselines: the call while
 * unbound (the NULL check alone) and a locked atomic_fetch_add on the same
 * cell (what a multi-writer counter would cost). Median of RUNS runs.
 *
 *   bench_metrics [iterations-per-run]
 */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hd_metrics.h"
#include "hd_shm.h"

#define RUNS 9

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

static uint64_t         vals[4096]; /* log-uniform 1 us .. 10 s */
static _Atomic uint64_t shared_cell;

enum op {
    OP_UNBOUND,
    OP_CTR,
    OP_FETCH_ADD,
    OP_GAUGE,
    OP_REJECT,
    OP_DISC,
    OP_HIST_CONST,
    OP_HIST_VAR,
    OP__COUNT
};

static const char *const op_name[OP__COUNT] = {
    "hd_ctr_inc, unbound (no-op)",
    "hd_ctr_inc",
    "atomic_fetch_add relaxed (baseline)",
    "hd_gauge_add(HD_G_CONNECTIONS)",
    "hd_reject_inc",
    "hd_disconnect_inc",
    "hd_hist_observe, same value",
    "hd_hist_observe, varied values",
};

static double
run(enum op op, uint64_t n)
{
    uint64_t t0 = now_ns();
    switch (op) {
    case OP_UNBOUND:
    case OP_CTR:
        for (uint64_t i = 0; i < n; i++)
            hd_ctr_inc(HD_C_MSG_DELIVERED);
        break;
    case OP_FETCH_ADD:
        for (uint64_t i = 0; i < n; i++)
            atomic_fetch_add_explicit(&shared_cell, 1, memory_order_relaxed);
        break;
    case OP_GAUGE:
        for (uint64_t i = 0; i < n; i++)
            hd_gauge_add(HD_G_CONNECTIONS, (i & 1) ? -1 : 1);
        break;
    case OP_REJECT:
        for (uint64_t i = 0; i < n; i++)
            hd_reject_inc((enum hd_reject_reason)(i & 3));
        break;
    case OP_DISC:
        for (uint64_t i = 0; i < n; i++)
            hd_disconnect_inc((i & 1) ? 1000 : 4001);
        break;
    case OP_HIST_CONST:
        for (uint64_t i = 0; i < n; i++)
            hd_hist_observe(HD_H_DELIVERY, 250000);
        break;
    case OP_HIST_VAR:
        for (uint64_t i = 0; i < n; i++)
            hd_hist_observe(HD_H_DELIVERY, vals[i & 4095]);
        break;
    case OP__COUNT:
        break;
    }
    return (double) (now_ns() - t0) / (double) n;
}

int
main(int argc, char **argv)
{
    uint64_t  n = argc > 1 ? strtoull(argv[1], NULL, 10) : 20000000;
    hd_shm_t *shm;
    if (hd_shm_create(&shm) < 0) {
        fprintf(stderr, "hd_shm_create failed\n");
        return 1;
    }
    int      idx = hd_shm_slot_acquire(shm, 0, 1);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < 4096; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        double u = (double) ((x * 0x2545f4914f6cdd1dull) >> 11)
            / 9007199254740992.0;
        vals[i] = (uint64_t) (1000.0 * pow(1e7, u));
    }

    printf("herald metrics hot path: ns per call, median of %d runs of %llu\n",
           RUNS, (unsigned long long) n);
    printf("%-40s %8s %8s %8s\n", "operation", "median", "min", "max");
    for (int op = 0; op < OP__COUNT; op++) {
        double t[RUNS];
        hd_metrics_bind(op == OP_UNBOUND ? NULL : hd_shm_slot(shm, idx));
        run((enum op) op, n / 10); /* warm up */
        for (int r = 0; r < RUNS; r++)
            t[r] = run((enum op) op, n);
        qsort(t, RUNS, sizeof(double), cmp_d);
        printf("%-40s %8.2f %8.2f %8.2f\n", op_name[op], t[RUNS / 2], t[0],
               t[RUNS - 1]);
    }
    hd_metrics_bind(NULL);
    hd_shm_destroy(shm);
    return 0;
}
