/* herald-bench: log-linear latency histogram (see hb_hist.h). */
#include "hb_hist.h"

#include <string.h>

void
hb_hist_init(hb_hist_t *h)
{
    memset(h, 0, sizeof(*h));
    h->min_ns = UINT64_MAX;
}

/*
 * Index layout: values below 2*SUB map to themselves (exact). Above, a
 * value with its top bit at position e keeps its SUB_BITS+1 leading bits:
 * the leading 1 selects the octave, the next SUB_BITS bits the sub-bucket.
 * Octave e starts at index (e - SUB_BITS + 1) * SUB, which continues the
 * exact range without a hole.
 */
unsigned
hb_hist_index(uint64_t ns)
{
    if (ns > HB_HIST_MAX_NS)
        ns = HB_HIST_MAX_NS;
    if (ns < 2 * HB_HIST_SUB)
        return (unsigned) ns;
    unsigned e = 63u - (unsigned) __builtin_clzll(ns);
    unsigned shift = e - HB_HIST_SUB_BITS;
    unsigned sub = (unsigned) (ns >> shift) - HB_HIST_SUB;
    return (e - HB_HIST_SUB_BITS + 1) * HB_HIST_SUB + sub;
}

uint64_t
hb_hist_lowest(unsigned idx)
{
    if (idx < 2 * HB_HIST_SUB)
        return idx;
    unsigned e = idx / HB_HIST_SUB + HB_HIST_SUB_BITS - 1;
    unsigned sub = idx % HB_HIST_SUB;
    return (uint64_t) (HB_HIST_SUB + sub) << (e - HB_HIST_SUB_BITS);
}

uint64_t
hb_hist_highest(unsigned idx)
{
    if (idx < 2 * HB_HIST_SUB)
        return idx;
    unsigned e = idx / HB_HIST_SUB + HB_HIST_SUB_BITS - 1;
    return hb_hist_lowest(idx) + (UINT64_C(1) << (e - HB_HIST_SUB_BITS)) - 1;
}

void
hb_hist_add(hb_hist_t *h, uint64_t ns)
{
    h->b[hb_hist_index(ns)]++;
    h->count++;
    h->sum_ns += ns;
    if (ns < h->min_ns)
        h->min_ns = ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

void
hb_hist_merge(hb_hist_t *dst, const hb_hist_t *src)
{
    if (src->count == 0)
        return;
    for (unsigned i = 0; i < HB_HIST_BUCKETS; i++)
        dst->b[i] += src->b[i];
    dst->count += src->count;
    dst->sum_ns += src->sum_ns;
    if (src->min_ns < dst->min_ns)
        dst->min_ns = src->min_ns;
    if (src->max_ns > dst->max_ns)
        dst->max_ns = src->max_ns;
}

uint64_t
hb_hist_quantile(const hb_hist_t *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q <= 0)
        return h->min_ns;
    if (q >= 1)
        return h->max_ns;
    /* rank = ceil(q * count), at least 1 */
    double   r = q * (double) h->count;
    uint64_t rank = (uint64_t) r;
    if ((double) rank < r)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HB_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = hb_hist_highest(i);
            if (v > h->max_ns)
                v = h->max_ns;
            if (v < h->min_ns)
                v = h->min_ns;
            return v;
        }
    }
    return h->max_ns;
}

double
hb_hist_mean(const hb_hist_t *h)
{
    return h->count ? (double) h->sum_ns / (double) h->count : 0.0;
}
