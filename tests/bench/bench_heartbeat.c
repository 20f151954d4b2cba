/*
 * The heartbeat sweep's cost per connection (issue 21): the real
 * hd_ws_heartbeat_cb() of worker/hd_ws.c over N idle connections, none
 * due for a ping, which is what the sweep does for almost every
 * connection almost every second (a connection is pinged once per
 * heartbeat.ping_interval_ms, 25 s by default).
 *
 *   bench_heartbeat [N ...]        (default 10000 100000 300000)
 *
 * Each connection record is allocated on its own, with PAD bytes
 * allocated after it, as lws' per-connection state (struct lws, its
 * WebSocket part and frame buffer: ~1.4 KB, docs/benchmarks.md) sits
 * between herald's records in a real worker's heap: the walk misses the
 * cache as it does there (the sweep reads no struct lws: the fd is in
 * herald's record). The fds are -1 here, so the fd-indexed guard table
 * (hd_wsguard) is not read: one more cache line per connection in a real
 * worker. Median of RUNS sweeps, in this thread's CPU time (a loaded box
 * steals wall time, not CPU time); ns per connection and the share of one
 * core a sweep a second takes at 1,000,000.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hd_conf.h"
#include "hd_conn.h"
#include "hd_time.h"
#include "hd_worker_int.h"

#define RUNS 15
#define PAD  1400

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

static double
one_size(long n)
{
    hd_conn_t **all = calloc((size_t) n, sizeof(*all));
    void      **pad = calloc((size_t) n, sizeof(*pad));
    uint64_t    t[RUNS];

    if (all == NULL || pad == NULL)
        abort();
    hd_w.conns = NULL;
    for (long i = 0; i < n; i++) {
        hd_conn_t *c = calloc(1, sizeof(*c));
        if (c == NULL)
            abort();
        pad[i] = malloc(PAD);
        memset(pad[i], 1, PAD);
        c->last_rx_ms = UINT64_MAX / 2; /* just heard from: no ping due */
        c->fd = -1;
        c->next = hd_w.conns;
        if (hd_w.conns != NULL)
            hd_w.conns->prev = c;
        hd_w.conns = c;
        all[i] = c;
    }
    for (int r = 0; r < RUNS; r++) {
        uint64_t t0 = now_ns();
        hd_ws_heartbeat_cb(NULL, NULL, 0);
        t[r] = now_ns() - t0;
    }
    qsort(t, RUNS, sizeof(t[0]), cmp_u64);
    for (long i = 0; i < n; i++) {
        free(all[i]);
        free(pad[i]);
    }
    free(all);
    free(pad);
    hd_w.conns = NULL;
    return (double) t[RUNS / 2] / (double) n;
}

int
main(int argc, char **argv)
{
    static hd_conf_t conf;
    long             def[] = { 10000, 100000, 300000 };
    int              nsz = argc > 1 ? argc - 1 : 3;

    conf.ping_interval_ms = 25000;
    conf.pong_timeout_ms = 10000;
    hd_w.conf = &conf;
    printf("%10s %14s %22s\n", "connections", "ns/connection",
           "1M: share of one core");
    for (int i = 0; i < nsz; i++) {
        long   n = argc > 1 ? strtol(argv[i + 1], NULL, 10) : def[i];
        double ns;

        if (n < 1)
            continue;
        ns = one_size(n);
        /* one sweep a second over 1,000,000: ns * 1e6 per 1e9 ns */
        printf("%10ld %14.1f %21.2f%%\n", n, ns, ns * 1e6 / 1e9 * 100.0);
    }
    return 0;
}
