/*
 * Cost of the connection-limit calls (shm/hd_limits.h) on the worker's
 * hot path: ns per acquire + release pair, uncontended (one process) and
 * contended (P processes on the same keys, each with its own lease, as
 * workers are). Median of RUNS runs.
 *
 *   bench_limits [iterations-per-run]
 *
 * Rows:
 *   count        hd_limits_count(): the hash and the two-bucket read alone
 *   node         hd_limits_acquire_node() + hd_limits_release_fd()
 *   ip           acquire(HD_LIM_IP, 5-byte address key) + release_fd
 *   connection   node + ip + user + tenant, then release_fd: the whole
 *                lifecycle of one connection
 *   contended P  "connection" in P processes at once, same keys (the
 *                worst case: every process on the same cache lines)
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hd_limits.h"

#define RUNS 7

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

enum op {
    OP_COUNT,
    OP_NODE,
    OP_IP,
    OP_CONN,
    OP__COUNT
};
static const char *const op_names[OP__COUNT] = {
    "count",
    "node",
    "ip",
    "connection",
};

static hd_limits_t        *L;
static const unsigned char ipkey[5] = { 4, 192, 0, 2, 7 };
static volatile uint32_t   sink;

/* One op, iteration i; fds rotate so the lease records spread a little. */
static int
run_op(enum op o, hd_lease_t *ls, uint64_t i)
{
    int fd = (int) (i & 1023), rc = 0;
    switch (o) {
    case OP_COUNT:
        sink += hd_limits_count(L, HD_LIM_IP, ipkey, sizeof(ipkey));
        return 0;
    case OP_NODE:
        rc = hd_limits_acquire_node(L, ls, fd, 1000000);
        break;
    case OP_IP:
        rc = hd_limits_acquire(L, ls, fd, HD_LIM_IP, ipkey, sizeof(ipkey),
                               1000);
        break;
    case OP_CONN:
        rc = hd_limits_acquire_node(L, ls, fd, 1000000);
        rc |= hd_limits_acquire(L, ls, fd, HD_LIM_IP, ipkey, sizeof(ipkey),
                                1000);
        rc |= hd_limits_acquire(L, ls, fd, HD_LIM_USER, "user-4711@example.com",
                                21, 100);
        rc |= hd_limits_acquire(L, ls, fd, HD_LIM_TENANT, "acme-corp", 9, 0);
        break;
    case OP__COUNT:
        break;
    }
    hd_limits_release_fd(L, ls, fd);
    return rc;
}

static double
measure(enum op o, hd_lease_t *ls, uint64_t iters)
{
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < iters; i++)
        if (run_op(o, ls, i) != 0) {
            fprintf(stderr, "%s: unexpected rejection\n", op_names[o]);
            exit(1);
        }
    return (double) (now_ns() - t0) / (double) iters;
}

/* P processes run "connection" at once; returns the median over the
 * processes of their ns per op. */
static double
contended(unsigned procs, uint64_t iters)
{
    _Atomic int *go = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    double      *res = (double *) (go + 16);
    pid_t        pid[64];
    atomic_store(go, 0);
    for (unsigned p = 0; p < procs; p++) {
        hd_lease_t *ls = hd_lease_create(1024);
        pid[p] = fork();
        if (pid[p] == 0) {
            while (!atomic_load(go))
                ;
            res[p] = measure(OP_CONN, ls, iters);
            _exit(0);
        }
        hd_lease_dontfork(ls);
        hd_lease_reclaim(NULL, ls); /* the parent's copy only */
    }
    atomic_store(go, 1);
    for (unsigned p = 0; p < procs; p++)
        waitpid(pid[p], NULL, 0);
    qsort(res, procs, sizeof(double), cmp_d);
    double med = res[procs / 2];
    munmap((void *) go, 4096);
    return med;
}

int
main(int argc, char **argv)
{
    uint64_t iters = argc > 1 ? strtoull(argv[1], NULL, 10) : 2000000;
    if (hd_limits_create(&L) < 0)
        return 1;
    hd_lease_t *ls = hd_lease_create(1024);
    double      r[RUNS];

    printf("%-14s %10s   (median of %d runs of %llu)\n", "op", "ns/op", RUNS,
           (unsigned long long) iters);
    for (unsigned o = 0; o < OP__COUNT; o++) {
        measure((enum op) o, ls, iters / 10); /* warm up */
        for (int k = 0; k < RUNS; k++)
            r[k] = measure((enum op) o, ls, iters);
        qsort(r, RUNS, sizeof(double), cmp_d);
        printf("%-14s %10.1f\n", op_names[o], r[RUNS / 2]);
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    for (unsigned p = 2; p <= 16 && p <= (unsigned) ncpu; p *= 2) {
        for (int k = 0; k < 3; k++)
            r[k] = contended(p, iters / 4);
        qsort(r, 3, sizeof(double), cmp_d);
        printf("contended %-4u %10.1f   (connection, per process)\n", p, r[1]);
    }
    hd_lease_reclaim(L, ls);
    if (hd_limits_node_count(L) != 0) {
        fprintf(stderr, "counts did not return to 0\n");
        return 1;
    }
    hd_limits_destroy(L);
    return 0;
}
