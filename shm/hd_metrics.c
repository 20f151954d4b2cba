/*
 * Worker-side metric writes and the histogram bucket math shared by the
 * writer (hd_hist_observe) and the readers (render, /stats, tests).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hd_metrics.h"
#include "hd_shm_layout.h"

hd_metrics_cells_t *hd_metrics_cur;

/*
 * Close codes with their own herald_disconnects_total{code} series. The
 * standard ones (RFC 6455 section 7.4.1, IANA registry) and the herald
 * ranges the protocol uses: 4000-4499 "reconnect is fine", 4500-4999 "do
 * not reconnect". Anything else counts as code="other". The size is fixed
 * (HD_DISC_KNOWN) because it is the layout of disc[] in the slot.
 */
static const uint16_t disc_codes[HD_DISC_KNOWN] = {
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011,
    1012, 1013, 1014, 1015, 4000, 4001, 4002, 4003, 4004, 4005, 4006,
    4007, 4500, 4501, 4502, 4503, 4504, 4505, 4506, 4507, 4508,
};

static const char *const api_methods[HD_API__COUNT] = {
    "publish",  "broadcast",   "disconnect",     "subscribe", "unsubscribe",
    "channels", "presence",    "presence_stats", "history",   "history_remove",
    "info",     "connections", "batch",
};
static const char *const api_results[HD_APIR__COUNT] = {
    "ok",    "partial", "bad_request", "unauthorized",
    "error", "timeout", "throttled",
};

const char *
hd_api_method_name(enum hd_api_method m)
{
    return (unsigned) m < HD_API__COUNT ? api_methods[m] : "unknown";
}

const char *
hd_api_result_name(enum hd_api_result r)
{
    return (unsigned) r < HD_APIR__COUNT ? api_results[r] : "unknown";
}

#define DISC_MAP_SIZE 5000
static uint8_t disc_map[DISC_MAP_SIZE]; /* code -> index (+1), 0 = other */

/* The exported Prometheus bounds, in ns and as printed. */
static const uint64_t le_ns[HD_HIST_LE_COUNT] = {
    10000,      25000,      50000,      100000,      250000,
    500000,     1000000,    2500000,    5000000,     10000000,
    25000000,   50000000,   100000000,  250000000,   500000000,
    1000000000, 2500000000, 5000000000, 10000000000,
};
static const char *const le_txt[HD_HIST_LE_COUNT] = {
    "1e-05",  "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001",
    "0.0025", "0.005",   "0.01",  "0.025",  "0.05",    "0.1",    "0.25",
    "0.5",    "1",       "2.5",   "5",      "10",
};

/*
 * Hot-path tables. raw is the plain log-linear index of x = ns - 1 (so
 * bucket upper bounds are inclusive in ns); a raw bucket containing an
 * exported bound is split at it: final = remap[raw] + (x > split_x[raw]).
 * split_x is UINT64_MAX for unsplit buckets, so the compare is always false.
 */
static uint16_t remap[HD_HIST_RAW];
static uint64_t split_x[HD_HIST_RAW];
static uint64_t upper_ns[HD_HIST_BUCKETS];
static unsigned le_bucket[HD_HIST_LE_COUNT];
static unsigned nbuckets;
static bool     tables_ready;

static inline unsigned
raw_index(uint64_t x)
{
    if (x < (UINT64_C(1) << HD_HIST_MIN_EXP))
        return 0;
    unsigned e = 63u - (unsigned) __builtin_clzll(x);
    if (e >= HD_HIST_MAX_EXP)
        return HD_HIST_RAW - 1;
    return 1 + (e - HD_HIST_MIN_EXP) * HD_HIST_SUB
        + (unsigned) ((x >> (e - HD_HIST_SUB_BITS)) & (HD_HIST_SUB - 1));
}

/* Inclusive upper bound in ns of raw bucket r (UINT64_MAX for overflow). */
static uint64_t
raw_upper_ns(unsigned r)
{
    if (r == 0)
        return UINT64_C(1) << HD_HIST_MIN_EXP;
    if (r >= HD_HIST_RAW - 1)
        return UINT64_MAX;
    unsigned e = HD_HIST_MIN_EXP + (r - 1) / HD_HIST_SUB;
    unsigned j = (r - 1) % HD_HIST_SUB;
    uint64_t step = UINT64_C(1) << (e - HD_HIST_SUB_BITS);
    return (UINT64_C(1) << e) + (j + 1) * step;
}

/*
 * Build the tables. Pure arithmetic, idempotent; runs as a constructor so
 * every process (master before fork, tests, benches) has them before the
 * first observation, and again from hd_shm_create() to be safe.
 */
static void
tables_init(void)
{
    if (tables_ready)
        return;
    for (unsigned r = 0; r < HD_HIST_RAW; r++)
        split_x[r] = UINT64_MAX;
    for (unsigned j = 0; j < HD_HIST_LE_COUNT; j++) {
        unsigned r = raw_index(le_ns[j] - 1);
        if (raw_upper_ns(r) != le_ns[j])
            split_x[r] = le_ns[j] - 1;
    }
    unsigned n = 0;
    for (unsigned r = 0; r < HD_HIST_RAW; r++) {
        remap[r] = (uint16_t) n;
        if (split_x[r] != UINT64_MAX)
            upper_ns[n++] = split_x[r] + 1;
        upper_ns[n++] = raw_upper_ns(r);
    }
    nbuckets = n;
    for (unsigned j = 0; j < HD_HIST_LE_COUNT; j++)
        for (unsigned i = 0; i < n; i++)
            if (upper_ns[i] == le_ns[j])
                le_bucket[j] = i;

    for (unsigned i = 0; i < HD_DISC_KNOWN; i++)
        disc_map[disc_codes[i]] = (uint8_t) (i + 1);
    tables_ready = true;
}

__attribute__((constructor)) static void
tables_ctor(void)
{
    tables_init();
}

void
hd_metrics_tables_init(void)
{
    tables_init();
}

void
hd_metrics_bind(struct hd_shm_slot *slot)
{
    tables_init();
    hd_metrics_cur = slot != NULL ? &slot->m : NULL;
}

unsigned
hd_disconnect_index(unsigned close_code)
{
    if (close_code < DISC_MAP_SIZE && disc_map[close_code] != 0)
        return disc_map[close_code] - 1u;
    return HD_DISC_KNOWN;
}

unsigned
hd_disconnect_code(unsigned i)
{
    return i < HD_DISC_KNOWN ? disc_codes[i] : 0;
}

void
hd_disconnect_inc(unsigned close_code)
{
    hd_metrics_cells_t *m = hd_metrics_cur;
    if (m != NULL)
        hd_cell_add_(&m->disc[hd_disconnect_index(close_code)], 1);
}

unsigned
hd_hist_index(uint64_t ns)
{
    uint64_t x = ns - (ns != 0); /* inclusive upper bounds */
    unsigned r = raw_index(x);
    return remap[r] + (x > split_x[r]);
}

/*
 * Single writer, so the three cells are plain load+store. The bucket is
 * written before the sum: a reader may see _sum lag _count by the
 * observation in flight, never the reverse order of magnitudes.
 */
void
hd_hist_observe(enum hd_hist h, uint64_t ns)
{
    hd_metrics_cells_t *m = hd_metrics_cur;
    if (m == NULL)
        return;
    hd_hist_cells_t *hc = &m->hist[h];
    hd_cell_add_(&hc->bucket[hd_hist_index(ns)], 1);
    hd_cell_add_(&hc->sum_ns, ns);
    if (ns > atomic_load_explicit(&hc->max_ns, memory_order_relaxed))
        atomic_store_explicit(&hc->max_ns, ns, memory_order_relaxed);
}

unsigned
hd_hist_nbuckets(void)
{
    return nbuckets;
}

uint64_t
hd_hist_upper_ns(unsigned i)
{
    return i < nbuckets ? upper_ns[i] : UINT64_MAX;
}

uint64_t
hd_hist_le_ns(unsigned j)
{
    return j < HD_HIST_LE_COUNT ? le_ns[j] : UINT64_MAX;
}

unsigned
hd_hist_le_bucket(unsigned j)
{
    return j < HD_HIST_LE_COUNT ? le_bucket[j] : nbuckets - 1;
}

const char *
hd_hist_le_str(unsigned j)
{
    return j < HD_HIST_LE_COUNT ? le_txt[j] : "+Inf";
}

double
hd_hist_quantile_ns(const uint64_t *b, uint64_t max_ns, double q)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < nbuckets; i++)
        total += b[i];
    if (total == 0)
        return 0;
    if (q <= 0)
        q = 1e-12;
    if (q > 1)
        q = 1;
    /* rank of the wanted observation, 1-based */
    double   want = q * (double) total;
    uint64_t rank = (uint64_t) want;
    if ((double) rank < want)
        rank++;
    if (rank < 1)
        rank = 1;

    uint64_t cum = 0;
    unsigned i = 0;
    for (; i < nbuckets; i++) {
        if (cum + b[i] >= rank)
            break;
        cum += b[i];
    }
    if (i >= nbuckets)
        i = nbuckets - 1;
    double lo = i == 0 ? 0.0 : (double) upper_ns[i - 1];
    double hi = upper_ns[i] == UINT64_MAX
        ? (max_ns > upper_ns[i - 1] ? (double) max_ns : lo)
        : (double) upper_ns[i];
    double v = b[i] ? lo + (hi - lo) * (double) (rank - cum) / (double) b[i]
                    : hi;
    if (max_ns != 0 && v > (double) max_ns)
        v = (double) max_ns;
    return v;
}
