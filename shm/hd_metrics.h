/*
 * Metrics written by workers into their own shm slot. Call
 * hd_metrics_bind() once in the worker after fork; afterwards the
 * increment functions are a relaxed atomic add on the bound slot, cheap
 * enough for the hot path. Before binding (or in the master) they are
 * no-ops.
 *
 * Single writer: only the thread that called hd_metrics_bind() (the
 * worker's one event-loop thread) may call the increment functions. Because
 * nobody else writes the slot, an increment is a relaxed load plus a
 * relaxed store of the same 64-bit cell, not a locked read-modify-write:
 * readers still see whole values (aligned 64-bit atomics never tear) and
 * each cell only ever grows. This is what keeps an increment at ~1 ns (see
 * tests/bench/bench_metrics.c). Never call them from a signal handler or a
 * second thread.
 */
#ifndef HD_METRICS_H
#define HD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct hd_shm_slot;

enum hd_counter {
    HD_C_CONN_ACCEPTED = 0, /* herald_connections_accepted_total */
    HD_C_MSG_RECEIVED,      /* herald_messages_received_total */
    HD_C_MSG_PUBLISHED,     /* herald_messages_published_total */
    HD_C_MSG_DELIVERED,     /* herald_messages_delivered_total */
    HD_C_BYTES_RECEIVED,    /* herald_bytes_received_total */
    HD_C_BYTES_SENT,        /* herald_bytes_sent_total */
    HD_C_REDIS_RECONNECTS,  /* herald_redis_reconnects_total */
    HD_C_ERRORS,            /* herald_command_errors_total */
    HD_C__COUNT
};

/* herald_connections_rejected_total{reason} */
enum hd_reject_reason {
    HD_REJ_NODE_LIMIT = 0,
    HD_REJ_IP_LIMIT,
    HD_REJ_USER_LIMIT,
    HD_REJ_TENANT_LIMIT,
    HD_REJ_AUTH,
    HD_REJ_HANDSHAKE, /* bad upgrade, timeout, origin */
    HD_REJ_DRAINING,
    HD_REJ_OVERLOAD, /* the worker's overload guard (1013) */
    HD_REJ_PROXY,    /* no valid PROXY header on a proxy_protocol listener */
    HD_REJ__COUNT
};

/* herald_api_requests_total{method, result}: HTTP API calls */
enum hd_api_method {
    HD_API_PUBLISH = 0,
    HD_API_BROADCAST,
    HD_API_DISCONNECT,
    HD_API_SUBSCRIBE,
    HD_API_UNSUBSCRIBE,
    HD_API_CHANNELS,
    HD_API_PRESENCE,
    HD_API_PRESENCE_STATS,
    HD_API_HISTORY,
    HD_API_HISTORY_REMOVE,
    HD_API_INFO,
    HD_API_CONNECTIONS,
    HD_API_BATCH,
    HD_API__COUNT
};
enum hd_api_result {
    HD_APIR_OK = 0,       /* 2xx, every node answered */
    HD_APIR_PARTIAL,      /* 2xx, some node did not answer in time */
    HD_APIR_BAD_REQUEST,  /* 4xx other than 401 */
    HD_APIR_UNAUTHORIZED, /* 401: missing or wrong API key */
    HD_APIR_ERROR,        /* 5xx */
    HD_APIR_TIMEOUT,      /* closed: the body missed api.body_timeout_ms */
    HD_APIR_THROTTLED,    /* 429: too many wrong keys from the address */
    HD_APIR__COUNT
};
#define HD_API_CELLS (HD_API__COUNT * HD_APIR__COUNT)
/* herald_redis_errors_total{kind}: error replies from Redis, by kind */
enum hd_redis_err_kind {
    HD_RERR_OOM = 0,  /* OOM: maxmemory reached, writes refused */
    HD_RERR_READONLY, /* READONLY: a replica */
    HD_RERR_LOADING,  /* LOADING: loading its dataset */
    HD_RERR_BUSY,     /* BUSY: a script runs too long */
    HD_RERR_NOPERM,   /* NOPERM: ACL */
    HD_RERR_NOSCRIPT, /* NOSCRIPT even after sending the body */
    HD_RERR_OTHER,    /* any other error reply */
    HD_RERR__COUNT
};

/* herald_proxy_requests_total{result}: the connect/subscribe proxy */
enum hd_proxy_result {
    HD_PXR_ALLOWED = 0, /* the backend said yes */
    HD_PXR_REFUSED,     /* the backend said no */
    HD_PXR_TIMEOUT,     /* no answer within proxy.timeout_ms */
    HD_PXR_ERROR,       /* unreachable, HTTP status not 200, too large */
    HD_PXR_INVALID,     /* an answer that is not one */
    HD_PXR_BUSY,        /* refused at once: proxy.max_requests in flight */
    HD_PXR__COUNT
};

enum hd_gauge {
    HD_G_CONNECTIONS = 0,   /* herald_connections */
    HD_G_REDIS_UP,          /* herald_redis_up */
    HD_G_REDIS_REFUSING,    /* herald_redis_refusing_writes */
    HD_G_SUBSCRIPTIONS,     /* herald_subscriptions */
    HD_G_CHANNELS,          /* herald_channels */
    HD_G_OVERLOADED,        /* herald_overloaded */
    HD_G_REDIS_SHARDS_DOWN, /* bit i: shard i down (/health; not a metric) */
    HD_G_QUEUED_BYTES,      /* herald_outbound_queued_bytes */
    HD_G_QUEUE_MAX_BYTES,   /* herald_outbound_queue_max_bytes (max, not sum) */
    HD_G__COUNT
};

enum hd_hist {
    HD_H_HANDSHAKE = 0, /* herald_handshake_duration_seconds */
    HD_H_DELIVERY,      /* herald_delivery_latency_seconds */
    HD_H_REDIS_CMD,     /* herald_redis_command_duration_seconds */
    HD_H__COUNT
};

/*
 * herald_disconnects_total{code}: a fixed table of HD_DISC_KNOWN close
 * codes (hd_metrics.c, hd_disc_codes[]) plus one cell for "other". Add a
 * code to that table when the protocol defines it (keep the count).
 */
#define HD_DISC_KNOWN  32
#define HD_DISC__COUNT (HD_DISC_KNOWN + 1) /* last cell: "other" */

/*
 * Histogram layout (HDR-style log-linear), values in nanoseconds.
 * Bucket boundaries are inclusive upper bounds ("le"), like Prometheus:
 *   - bucket 0 holds v <= 1024 ns;
 *   - each power of two (2^e, 2^(e+1)] for e = 10..33 is cut into 16
 *     equal sub-buckets (width <= 1/16 of the value: a percentile read
 *     from the midpoint of a bucket is within 3.2 %);
 *   - a sub-bucket that contains one of the exported Prometheus bounds
 *     (HD_HIST_LE_COUNT of them: 10 us .. 10 s) is split in two at that
 *     bound, so every exported "le" is an exact fine boundary;
 *   - the last used bucket holds v > 2^34 ns (17.18 s).
 * The boundary tables are built once per process (hd_hist_upper_ns()).
 */
#define HD_HIST_SUB_BITS 4
#define HD_HIST_SUB      (1u << HD_HIST_SUB_BITS)
#define HD_HIST_MIN_EXP  10
#define HD_HIST_MAX_EXP  34
#define HD_HIST_LE_COUNT 19 /* finite exported bounds */
#define HD_HIST_RAW      (2 + (HD_HIST_MAX_EXP - HD_HIST_MIN_EXP) * HD_HIST_SUB)
/* RAW buckets plus at most one split per exported bound, padded to 8. */
#define HD_HIST_BUCKETS  ((HD_HIST_RAW + HD_HIST_LE_COUNT + 7) & ~7)

typedef struct hd_hist_cells {
    _Atomic uint64_t bucket[HD_HIST_BUCKETS];
    _Atomic uint64_t sum_ns;
    _Atomic uint64_t max_ns;
    uint64_t         pad_[6]; /* keep each histogram 64-byte sized */
} hd_hist_cells_t;

/*
 * The metric cells of one process slot (embedded in hd_shm_slot, and the
 * same shape is used for the retired totals). Counters and histogram cells
 * only grow while the slot is live.
 */
typedef struct hd_metrics_cells {
    _Atomic uint64_t ctr[HD_C__COUNT];
    _Atomic uint64_t rej[HD_REJ__COUNT];
    _Atomic uint64_t rerr[HD_RERR__COUNT];
    _Atomic uint64_t pxr[HD_PXR__COUNT];
    _Atomic uint64_t disc[HD_DISC__COUNT];
    _Atomic uint64_t api[HD_API_CELLS]; /* [method * HD_APIR__COUNT + result] */
    _Atomic int64_t  gauge[HD_G__COUNT];
    _Atomic int64_t  conn_peak; /* high-water mark of HD_G_CONNECTIONS */
    _Alignas(64) hd_hist_cells_t hist[HD_H__COUNT];
} hd_metrics_cells_t;

/* The bound slot's cells; NULL before hd_metrics_bind(). Read-only to users. */
extern hd_metrics_cells_t *hd_metrics_cur;

/* Bind this process's increments to slot (NULL unbinds). Worker, after fork. */
void hd_metrics_bind(struct hd_shm_slot *slot);

/* Single-writer add: see the header comment for why no locked RMW. */
static inline void
hd_cell_add_(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void
hd_ctr_add(enum hd_counter c, uint64_t n)
{
    hd_metrics_cells_t *m = hd_metrics_cur;
    if (m != NULL)
        hd_cell_add_(&m->ctr[c], n);
}
static inline void
hd_ctr_inc(enum hd_counter c)
{
    hd_ctr_add(c, 1);
}

static inline void
hd_reject_inc(enum hd_reject_reason r)
{
    hd_metrics_cells_t *m = hd_metrics_cur;
    if (m != NULL)
        hd_cell_add_(&m->rej[r], 1);
}

static inline void
hd_api_inc(enum hd_api_method m, enum hd_api_result r)
{
    hd_metrics_cells_t *c = hd_metrics_cur;
    if (c != NULL)
        hd_cell_add_(&c->api[m * HD_APIR__COUNT + r], 1);
}

/* Names in the exported labels (hd_render.c). */
const char *hd_api_method_name(enum hd_api_method m);
const char *hd_api_result_name(enum hd_api_result r);

static inline void
hd_redis_err_inc(enum hd_redis_err_kind k)
{
    hd_metrics_cells_t *m = hd_metrics_cur;
    if (m != NULL)
        hd_cell_add_(&m->rerr[k], 1);
}

static inline void
hd_proxy_result_inc(enum hd_proxy_result k)
{
    hd_metrics_cells_t *m = hd_metrics_cur;
    if (m != NULL)
        hd_cell_add_(&m->pxr[k], 1);
}

/* WebSocket close code sent or seen; unknown codes count as "other". */
void hd_disconnect_inc(unsigned close_code);

static inline void
hd_gauge_set(enum hd_gauge g, int64_t v)
{
    hd_metrics_cells_t *m = hd_metrics_cur;
    if (m == NULL)
        return;
    atomic_store_explicit(&m->gauge[g], v, memory_order_relaxed);
    if (g == HD_G_CONNECTIONS
        && v > atomic_load_explicit(&m->conn_peak, memory_order_relaxed))
        atomic_store_explicit(&m->conn_peak, v, memory_order_relaxed);
}

static inline void
hd_gauge_add(enum hd_gauge g, int64_t delta)
{
    hd_metrics_cells_t *m = hd_metrics_cur;
    if (m == NULL)
        return;
    hd_gauge_set(
        g, atomic_load_explicit(&m->gauge[g], memory_order_relaxed) + delta);
}

/* Observe a duration in nanoseconds. */
void hd_hist_observe(enum hd_hist h, uint64_t ns);

/* ---- histogram math (any process; pure functions of the tables) ---- */

/* Fine bucket index for a value in ns (what hd_hist_observe() uses). */
unsigned hd_hist_index(uint64_t ns);
/* Number of fine buckets in use (<= HD_HIST_BUCKETS). */
unsigned hd_hist_nbuckets(void);
/* Inclusive upper bound of fine bucket i in ns (UINT64_MAX for the last). */
uint64_t hd_hist_upper_ns(unsigned i);
/* Exported "le" bound j (0..HD_HIST_LE_COUNT-1) in ns and its fine index. */
uint64_t hd_hist_le_ns(unsigned j);
unsigned hd_hist_le_bucket(unsigned j);
/* The Prometheus text of le bound j, e.g. "0.00025". */
const char *hd_hist_le_str(unsigned j);

/*
 * Estimate the q-quantile (0 < q <= 1) in ns from fine bucket counts b[0..
 * hd_hist_nbuckets()-1]: finds the bucket holding rank ceil(q * total) and
 * interpolates linearly inside it, clamped to max_ns when max_ns != 0.
 * Returns 0 when total is 0.
 */
double hd_hist_quantile_ns(const uint64_t *b, uint64_t max_ns, double q);

/* Close-code table: index of code in disc[] (HD_DISC_KNOWN = other). */
unsigned hd_disconnect_index(unsigned close_code);
/* Code at index i < HD_DISC_KNOWN. */
unsigned hd_disconnect_code(unsigned i);

#endif
