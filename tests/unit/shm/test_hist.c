/*
 * Histogram bucketing and percentile math (shm/hd_metrics.c).
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_metrics.h"
#include "hd_shm.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rnd(void) /* xorshift64*: deterministic, good enough */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static double
rnd01(void)
{
    return (double) (rnd() >> 11) / 9007199254740992.0; /* [0,1) */
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

/* The rank-ceil(qN) sample, the definition hd_hist_quantile_ns() targets. */
static double
exact_q(const uint64_t *sorted, size_t n, double q)
{
    size_t rank = (size_t) ceil(q * (double) n);
    if (rank < 1)
        rank = 1;
    return (double) sorted[rank - 1];
}

static uint64_t buckets[HD_HIST_BUCKETS];

/* Fill buckets from v[0..n), check p50/p95/p99 against the exact sample
 * quantiles, return the worst relative error seen. */
static double
check_quantiles(uint64_t *v, size_t n, const char *what)
{
    uint64_t max = 0;
    memset(buckets, 0, sizeof(buckets));
    for (size_t i = 0; i < n; i++) {
        buckets[hd_hist_index(v[i])]++;
        if (v[i] > max)
            max = v[i];
    }
    qsort(v, n, sizeof(*v), cmp_u64);
    static const double qs[] = { 0.5, 0.95, 0.99 };
    double              worst = 0;
    for (size_t k = 0; k < 3; k++) {
        double want = exact_q(v, n, qs[k]);
        double got = hd_hist_quantile_ns(buckets, max, qs[k]);
        double err = fabs(got - want) / want;
        if (err > worst)
            worst = err;
        if (err > 0.03)
            fprintf(stderr, "%s q=%.2f want %.0f got %.0f (%.2f%%)\n", what,
                    qs[k], want, got, err * 100);
    }
    ck_assert_double_eq(hd_hist_quantile_ns(buckets, max, 1.0), (double) max);
    return worst;
}

START_TEST(test_layout)
{
    unsigned nb = hd_hist_nbuckets();
    ck_assert_uint_eq(nb, HD_HIST_RAW + HD_HIST_LE_COUNT);
    ck_assert_uint_le(nb, HD_HIST_BUCKETS);
    ck_assert_uint_eq(hd_hist_upper_ns(nb - 1), UINT64_MAX);
    for (unsigned i = 1; i < nb; i++)
        ck_assert_uint_gt(hd_hist_upper_ns(i), hd_hist_upper_ns(i - 1));
}
END_TEST

/* Upper bounds are inclusive: v == upper(i) is in i, upper(i)+1 in i+1. */
START_TEST(test_bounds_inclusive)
{
    unsigned nb = hd_hist_nbuckets();
    ck_assert_uint_eq(hd_hist_index(0), 0);
    ck_assert_uint_eq(hd_hist_index(1), 0);
    ck_assert_uint_eq(hd_hist_index(1024), 0);
    ck_assert_uint_eq(hd_hist_index(1025), 1);
    ck_assert_uint_eq(hd_hist_index(UINT64_MAX), nb - 1);
    ck_assert_uint_eq(hd_hist_index(UINT64_C(1) << 34), nb - 2);
    ck_assert_uint_eq(hd_hist_index((UINT64_C(1) << 34) + 1), nb - 1);
    for (unsigned i = 0; i + 1 < nb; i++) {
        uint64_t up = hd_hist_upper_ns(i);
        ck_assert_uint_eq(hd_hist_index(up), i);
        ck_assert_uint_eq(hd_hist_index(up + 1), i + 1);
        if (i > 0)
            ck_assert_uint_eq(hd_hist_index(hd_hist_upper_ns(i - 1) + 1), i);
    }
}
END_TEST

/* Random values land in the bucket whose bounds contain them. */
START_TEST(test_index_random)
{
    for (int k = 0; k < 200000; k++) {
        uint64_t v = rnd() >> (rnd() % 64);
        unsigned i = hd_hist_index(v);
        ck_assert_uint_le(v, hd_hist_upper_ns(i));
        if (i > 0)
            ck_assert_uint_gt(v, hd_hist_upper_ns(i - 1));
    }
}
END_TEST

/* Every exported le bound is an exact fine boundary. */
START_TEST(test_le_exact)
{
    static const char *const txt[HD_HIST_LE_COUNT] = {
        "1e-05",  "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001",
        "0.0025", "0.005",   "0.01",  "0.025",  "0.05",    "0.1",    "0.25",
        "0.5",    "1",       "2.5",   "5",      "10",
    };
    for (unsigned j = 0; j < HD_HIST_LE_COUNT; j++) {
        uint64_t ns = hd_hist_le_ns(j);
        unsigned b = hd_hist_le_bucket(j);
        ck_assert_uint_eq(hd_hist_upper_ns(b), ns);
        ck_assert_uint_eq(hd_hist_index(ns), b);
        ck_assert_uint_eq(hd_hist_index(ns + 1), b + 1);
        ck_assert_str_eq(hd_hist_le_str(j), txt[j]);
        ck_assert_double_eq_tol(strtod(txt[j], NULL) * 1e9, (double) ns, 1e-3);
        if (j > 0)
            ck_assert_uint_gt(b, hd_hist_le_bucket(j - 1));
    }
    ck_assert_str_eq(hd_hist_le_str(HD_HIST_LE_COUNT), "+Inf");
}
END_TEST

/* Bucket width over the range that matters stays within 1/16 of value. */
START_TEST(test_resolution)
{
    unsigned nb = hd_hist_nbuckets();
    for (unsigned i = 1; i + 1 < nb; i++) {
        uint64_t lo = hd_hist_upper_ns(i - 1), hi = hd_hist_upper_ns(i);
        ck_assert_msg((double) (hi - lo) <= (double) lo / 16.0 + 1,
                      "bucket %u (%llu, %llu] too wide", i,
                      (unsigned long long) lo, (unsigned long long) hi);
    }
}
END_TEST

START_TEST(test_quantile_constant)
{
    /* a constant distribution sits in one bucket: the worst case */
    static uint64_t v[1000];
    for (double x = 10e3; x <= 10e9; x *= 1.07) {
        for (size_t i = 0; i < 1000; i++)
            v[i] = (uint64_t) x;
        double worst = check_quantiles(v, 1000, "constant");
        ck_assert_msg(worst <= 0.035, "constant %.0f: %.2f%%", x, worst * 100);
    }
}
END_TEST

START_TEST(test_quantile_uniform)
{
    static const double ranges[][2] = {
        { 10e3, 1e6 },  { 1e6, 100e6 }, { 0, 10e9 },
        { 50e3, 60e3 }, { 100e6, 5e9 },
    };
    size_t    n = 200000;
    uint64_t *v = malloc(n * sizeof(*v));
    for (size_t r = 0; r < sizeof(ranges) / sizeof(ranges[0]); r++) {
        for (size_t i = 0; i < n; i++)
            v[i] = (uint64_t) (ranges[r][0]
                               + rnd01() * (ranges[r][1] - ranges[r][0]));
        double worst = check_quantiles(v, n, "uniform");
        ck_assert_msg(worst <= 0.01, "uniform %zu: %.2f%%", r, worst * 100);
    }
    free(v);
}
END_TEST

START_TEST(test_quantile_exponential)
{
    static const double means[] = { 20e3, 1e6, 30e6, 1e9 };
    size_t              n = 200000;
    uint64_t           *v = malloc(n * sizeof(*v));
    for (size_t m = 0; m < sizeof(means) / sizeof(means[0]); m++) {
        for (size_t i = 0; i < n; i++)
            v[i] = (uint64_t) (-log(1.0 - rnd01()) * means[m]);
        double worst = check_quantiles(v, n, "exponential");
        ck_assert_msg(worst <= 0.01, "exp mean %.0f: %.2f%%", means[m],
                      worst * 100);
    }
    free(v);
}
END_TEST

/* Log-uniform over 10 us .. 10 s: every octave equally likely. */
START_TEST(test_quantile_loguniform)
{
    size_t    n = 200000;
    uint64_t *v = malloc(n * sizeof(*v));
    for (size_t i = 0; i < n; i++)
        v[i] = (uint64_t) exp(log(10e3) + rnd01() * (log(10e9) - log(10e3)));
    double worst = check_quantiles(v, n, "loguniform");
    ck_assert_msg(worst <= 0.01, "loguniform: %.2f%%", worst * 100);
    free(v);
}
END_TEST

START_TEST(test_quantile_edges)
{
    memset(buckets, 0, sizeof(buckets));
    ck_assert_double_eq(hd_hist_quantile_ns(buckets, 0, 0.5), 0);
    /* one observation in the overflow bucket: the max is the answer */
    buckets[hd_hist_index(30000000000ull)] = 1;
    ck_assert_double_eq(hd_hist_quantile_ns(buckets, 30000000000ull, 0.99),
                        30e9);
    /* q is clamped into (0, 1] */
    memset(buckets, 0, sizeof(buckets));
    buckets[hd_hist_index(5000)] = 10;
    ck_assert_double_le(hd_hist_quantile_ns(buckets, 5000, 7.0), 5000);
    ck_assert_double_gt(hd_hist_quantile_ns(buckets, 5000, -1.0), 4000);
}
END_TEST

/* The observe path: bucket, sum and max land in the bound slot. */
START_TEST(test_observe_slot)
{
    hd_shm_t *shm;
    ck_assert_int_eq(hd_shm_create(&shm), 0);
    int idx = hd_shm_slot_acquire(shm, 3, 1);
    ck_assert_int_ge(idx, 0);

    hd_hist_observe(HD_H_DELIVERY, 123); /* unbound: no-op */
    hd_metrics_bind(hd_shm_slot(shm, idx));
    hd_hist_observe(HD_H_DELIVERY, 10000);
    hd_hist_observe(HD_H_DELIVERY, 10001);
    hd_hist_observe(HD_H_DELIVERY, 2000000);
    hd_hist_observe(HD_H_REDIS_CMD, 7);
    hd_metrics_bind(NULL);
    hd_hist_observe(HD_H_DELIVERY, 99); /* unbound again */

    hd_shm_snapshot_t snap;
    hd_shm_snapshot_take(shm, &snap);
    ck_assert_uint_eq(snap.nworkers, 1);
    const hd_shm_hist_snap_t *h = &snap.w[0].hist[HD_H_DELIVERY];
    ck_assert_uint_eq(h->bucket[hd_hist_le_bucket(0)], 1); /* 10 us */
    ck_assert_uint_eq(h->bucket[hd_hist_le_bucket(0) + 1], 1);
    ck_assert_uint_eq(h->bucket[hd_hist_index(2000000)], 1);
    ck_assert_uint_eq(h->sum_ns, 10000 + 10001 + 2000000);
    ck_assert_uint_eq(h->max_ns, 2000000);
    ck_assert_uint_eq(snap.w[0].hist[HD_H_REDIS_CMD].bucket[0], 1);
    ck_assert_uint_eq(snap.w[0].hist[HD_H_HANDSHAKE].sum_ns, 0);
    hd_shm_snapshot_free(&snap);
    hd_shm_destroy(shm);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("hist");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_layout);
    tcase_add_test(tc, test_bounds_inclusive);
    tcase_add_test(tc, test_index_random);
    tcase_add_test(tc, test_le_exact);
    tcase_add_test(tc, test_resolution);
    tcase_add_test(tc, test_quantile_constant);
    tcase_add_test(tc, test_quantile_uniform);
    tcase_add_test(tc, test_quantile_exponential);
    tcase_add_test(tc, test_quantile_loguniform);
    tcase_add_test(tc, test_quantile_edges);
    tcase_add_test(tc, test_observe_slot);
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
