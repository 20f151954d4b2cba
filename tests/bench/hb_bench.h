/*
 * herald-bench: types shared by the parent (options, merge, report:
 * herald_bench.c) and the load processes it forks (hb_load.c).
 *
 * Everything that crosses the parent/child socketpair is plain data
 * without pointers (the children are forks of the same binary, so layouts
 * match); hb_counters_t is all uint64_t so that merging is a loop.
 */
#ifndef HB_BENCH_H
#define HB_BENCH_H

#include "hb_hist.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HB_MAX_STEPS 16
#define HB_MAX_SRC   256
#define HB_MAX_CODES 48

enum hb_spread {
    HB_SPREAD_RR = 0,
    HB_SPREAD_UNIFORM = 1
};
enum hb_via {
    HB_VIA_WS = 0,
    HB_VIA_HTTP = 1
};

typedef struct hb_opts {
    /* target */
    char               url[512];
    char               host[256]; /* Host header: host[:port] */
    char               path[256];
    struct sockaddr_in dst;              /* resolved IPv4 address of the url */
    char               metrics_url[512]; /* "" = do not scrape */
    char               secret[4096];
    char               api_key[1024];
    char               channel_prefix[96]; /* channels are <prefix><index> */
    char               json_path[1024];
    char               label[128]; /* free text copied into the JSON */

    /* shape */
    uint32_t connections; /* subscriber (or idle) connections */
    uint32_t channels;
    uint32_t subs_per_conn; /* 0: idle authenticated connections */
    int      spread;        /* enum hb_spread */
    uint32_t publishers;
    int      via;                 /* enum hb_via */
    uint32_t http_pipeline;       /* requests in flight per HTTP publisher */
    uint32_t payload;             /* bytes of the published data JSON */
    double   rates[HB_MAX_STEPS]; /* publishes per second, total, per step */
    uint32_t nsteps;
    double   duration;    /* measured seconds per step */
    double   warmup;      /* unmeasured seconds before each step */
    double   drain;       /* seconds to wait for the tail at the end */
    double   stop_p99_ms; /* stop publishing when a second's delivery
                                      p99 passes this (0: never) */

    /* processes and connecting */
    uint32_t       procs;     /* subscriber (and idle) processes */
    uint32_t       pub_procs; /* publisher-only processes; 0: the
                                      publishers share the procs above */
    struct in_addr src[HB_MAX_SRC];
    uint32_t       nsrc;
    double         ramp;            /* connections per second, 0 = no limit */
    uint32_t       inflight;        /* connects in progress per process */
    double         connect_timeout; /* whole connect phase, seconds */
    double         conn_timeout;    /* one connection, seconds */
    double         max_fail;        /* allowed failed connections, fraction */
    uint64_t       seed;
    int            quiet;
} hb_opts_t;

/* One (code, count) table: close codes, error reply codes, errnos. */
typedef struct hb_codes {
    uint32_t n;
    uint32_t code[HB_MAX_CODES];
    uint64_t count[HB_MAX_CODES];
    uint64_t other; /* codes that did not fit */
} hb_codes_t;

void hb_codes_add(hb_codes_t *t, uint32_t code, uint64_t n);
void hb_codes_merge(hb_codes_t *dst, const hb_codes_t *src);

/* Counters: uint64_t only (merged as an array). */
typedef struct hb_counters {
    uint64_t conn_attempts;     /* subscriber and publisher connects */
    uint64_t conn_ready;        /* reached READY (authed, subscribed) */
    uint64_t conn_fail_tcp;     /* connect() failed or reset before 101 */
    uint64_t conn_fail_ws;      /* not a valid 101 */
    uint64_t conn_fail_auth;    /* connect command got an error */
    uint64_t conn_fail_sub;     /* a subscribe got an error */
    uint64_t conn_fail_timeout; /* conn_timeout passed before READY */
    uint64_t conn_fail_closed;  /* server closed before READY */
    uint64_t conn_open;         /* gauge: READY and not closed since */
    uint64_t subs_live;         /* gauge: subscriptions with a result */
    uint64_t subs_lost;         /* live subscriptions whose conn closed */
    uint64_t closes;            /* READY connections closed by the peer */
    uint64_t pubs_sent;
    uint64_t pubs_acked;
    uint64_t pub_errors;   /* error replies / non-200 responses */
    uint64_t pubs_unacked; /* still without a reply at the end */
    uint64_t deliveries;   /* publication pushes received */
    uint64_t expected;     /* sum over live subs of final - base */
    uint64_t missing;      /* offsets never received (all causes) */
    uint64_t missing_gap;  /* ... of which the server announced */
    uint64_t missing_tail; /* ... of which after the last received */
    uint64_t duplicates;   /* offsets received again or backwards */
    uint64_t unexpected;   /* pushes for channels not subscribed */
    uint64_t behind;       /* subs short of the final offset at end */
    uint64_t proto_errors; /* frames or lines the bench rejected */
    uint64_t noid_errors;  /* error replies without an id */
    uint64_t bytes_rx, bytes_tx;
    uint64_t reads, writes;
    uint64_t frames_rx, lines_rx;
    uint64_t pings_rx;
    uint64_t cpu_ns;       /* client CPU, whole process lifetime */
    uint64_t pubs_unsent;  /* scheduled but never sent: the
                                      publisher's connection was gone */
    uint64_t pubs_backlog; /* scheduled, still waiting for room in
                                      an HTTP pipeline when publishing ended */
} hb_counters_t;

#define HB_NCOUNTERS (sizeof(hb_counters_t) / sizeof(uint64_t))

typedef struct hb_step_stats {
    uint64_t  deliveries; /* received inside the window */
    uint64_t  pubs;       /* intended inside the window, sent */
    uint64_t  acks;       /* ... and acknowledged */
    uint64_t  cpu_ns;     /* client CPU inside the window */
    uint64_t  cpu_marks;  /* 2 when both window edges were seen */
    hb_hist_t lat;        /* delivery: receive - intended send */
    hb_hist_t ack;        /* publish reply - intended send */
    hb_hist_t lag;        /* actual send - intended send */
} hb_step_stats_t;

typedef struct hb_result {
    hb_counters_t   c;
    hb_codes_t      closes; /* close codes received (1006: no frame) */
    hb_codes_t      errors; /* error reply codes (and HTTP statuses) */
    hb_codes_t      errnos; /* connect/socket errnos */
    uint64_t        first_connect_ns; /* wall clock; UINT64_MAX if none */
    uint64_t        last_ready_ns;
    hb_hist_t       connect;   /* TCP connect start -> connect result */
    hb_hist_t       handshake; /* TCP connect start -> 101 */
    hb_hist_t       subscribe; /* first subscribe sent -> last result */
    uint32_t        nsteps;
    hb_step_stats_t steps[]; /* nsteps */
} hb_result_t;

typedef struct hb_progress {
    hb_counters_t c;
    hb_codes_t    closes;
    hb_hist_t     lat; /* deliveries since the last progress */
} hb_progress_t;

/* Parent <-> child messages: a header, then len bytes. */
enum hb_msg_type {
    HB_MSG_READY = 1, /* child: connect phase over; payload hb_counters_t */
    HB_MSG_PROGRESS,  /* child: hb_progress_t, once a second */
    HB_MSG_PUBDONE,   /* child: int64_t max acked offset per channel */
    HB_MSG_RESULT,    /* child: hb_result_t + steps */
    HB_MSG_START,     /* parent: uint64_t t0 (wall ns) */
    HB_MSG_FINAL,     /* parent: int64_t final offset per channel */
    HB_MSG_STOP,      /* parent: overloaded, stop publishing now */
};

typedef struct hb_msghdr {
    uint32_t type;
    uint32_t len;
} hb_msghdr_t;

/* Write a whole message on a blocking fd. 0 or -errno. */
int hb_msg_send(int fd, uint32_t type, const void *p, size_t len);

/* Run one load process: the child's main. Returns the exit status. */
int hb_load_run(const hb_opts_t *o, uint32_t idx, int ctl);

/* Self-test of the histogram, frame codec, handshake check and line
 * parser; prints failures, returns the number of failed checks. */
int hb_selftest(void);
/* "30s", "500ms", "2m", or a bare number: seconds, or milliseconds when
 * bare_ms (TEST_DURATION). Seconds, or -1 when s is not a duration. */
double hb_parse_duration(const char *s, bool bare_ms);

/* Raw loopback write() probe (kernel.sh): "herald-bench kernel ...". */
int hb_kernel_main(int argc, char **argv);

/* Helpers used by more than one file. */
uint64_t hb_wall_ns(void);
uint64_t hb_cpu_ns(void); /* this process: user + system */

#endif
