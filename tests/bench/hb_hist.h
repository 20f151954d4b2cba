/*
 * herald-bench: a log-linear (HDR-style) latency histogram of nanosecond
 * values. Each power of two is split into HB_HIST_SUB linear sub-buckets,
 * so any recorded value is known to within 1/HB_HIST_SUB (1.6 %) of itself;
 * values below 2 * HB_HIST_SUB are exact. Values above HB_HIST_MAX_NS are
 * clamped into the last bucket (max_ns keeps the real maximum).
 *
 * The struct is plain data with no pointers: the bench ships it between
 * processes with write()/read() and merges with hb_hist_merge().
 */
#ifndef HB_HIST_H
#define HB_HIST_H

#include <stdint.h>

#define HB_HIST_SUB_BITS 6 /* 64 sub-buckets per octave */
#define HB_HIST_SUB      (1u << HB_HIST_SUB_BITS)
#define HB_HIST_TOP_BIT  41 /* 2^41 ns ~ 36 minutes */
#define HB_HIST_MAX_NS   ((UINT64_C(1) << HB_HIST_TOP_BIT) - 1)
#define HB_HIST_BUCKETS  ((HB_HIST_TOP_BIT - HB_HIST_SUB_BITS + 1) * HB_HIST_SUB)

typedef struct hb_hist {
    uint64_t count;
    uint64_t sum_ns; /* wraps after 584 years of total latency */
    uint64_t min_ns; /* UINT64_MAX when empty */
    uint64_t max_ns;
    uint64_t b[HB_HIST_BUCKETS];
} hb_hist_t;

void hb_hist_init(hb_hist_t *h);
void hb_hist_add(hb_hist_t *h, uint64_t ns);
void hb_hist_merge(hb_hist_t *dst, const hb_hist_t *src);
/* Value at quantile q (0..1): the highest value of the bucket holding the
 * rank ceil(q * count), capped at max_ns. 0 when empty. */
uint64_t hb_hist_quantile(const hb_hist_t *h, double q);
double   hb_hist_mean(const hb_hist_t *h);

/* Bucket arithmetic, exposed for the self-test. */
unsigned hb_hist_index(uint64_t ns);
uint64_t hb_hist_lowest(unsigned idx);
uint64_t hb_hist_highest(unsigned idx);

#endif
