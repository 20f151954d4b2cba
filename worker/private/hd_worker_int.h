/* Worker-private state shared by the worker's files. Not for master/ or shm/. */
#ifndef HD_WORKER_INT_H
#define HD_WORKER_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <ev.h>

#include "hd_codes.h"
#include "hd_conf.h"
#include "hd_conn.h"
#include "hd_shm.h"

struct lws_context;
struct lws_vhost;

typedef struct hd_worker {
    unsigned          id;
    int               shm_idx;
    uint32_t          generation;
    const hd_conf_t  *conf;
    hd_shm_t         *shm;
    hd_shm_slot_t    *slot;
    struct hd_limits *limits; /* NULL: connection limits off */
    struct hd_lease  *lease;

    struct ev_loop     *loop;
    struct lws_context *lws;
    struct lws_vhost   *vhost;

    int       listen_fds[HD_LISTEN_MAX]; /* conf->listens[i] each */
    unsigned  nlisten;
    int       ctl_fd;
    ev_io     accept_w[HD_LISTEN_MAX]; /* data: the listener's index */
    ev_io     ctl_w;
    ev_signal sigterm_w, sigint_w, sigquit_w, sighup_w, sigusr1_w;
    ev_timer  drain_w;
    ev_timer  accept_retry_w; /* after EMFILE: back off */
    ev_timer  heartbeat_w;

    /* live connections, for drain and broadcast */
    hd_conn_t *conns;
    uint64_t   nconns;
    uint64_t   next_conn_id;

    /* accept time per fd, for the handshake histogram */
    uint64_t *accept_ns;
    int       accept_ns_cap;

    /* frame scratch buffer, LWS_PRE + batch.max_bytes */
    unsigned char *wbuf;

    bool     draining;
    uint16_t drain_code;
    uint64_t drain_start_ms, drain_window_ms;
    uint64_t drain_total; /* conns at drain start */
    bool     exiting;

    /* open HTTP (API) connections: a draining worker does not exit while
     * one is open, so every request it accepted gets its answer */
    uint64_t nhttp;

    /* overload guard (hd_overload.c) */
    size_t   queued_bytes; /* outbound queues of every connection */
    bool     overloaded;
    ev_timer overload_w;
} hd_worker_t;

extern hd_worker_t hd_w;

/*
 * hd_overload.c: the overload guard. Past limits.worker_memory_mb of
 * resident memory or limits.worker_queue_mb of queued outbound bytes the
 * worker refuses new connections (1013) and API requests (503) until it is
 * back under 90 % of the limit. Checked 4 times a second.
 */
void hd_overload_start(void);
void hd_overload_stop(void);

/* hd_ws.c: an HTTP connection is gone (or upgraded): hd_w.nhttp. Whether
 * to close a connection once its response is out (a draining worker). */
void hd_ws_http_gone(struct lws *wsi);
bool hd_ws_http_closing(struct lws *wsi);
void hd_ws_http_set_closing(struct lws *wsi);

/* hd_ws.c: the heartbeat sweep (a 1 s repeating timer) */
void hd_ws_heartbeat_cb(struct ev_loop *loop, ev_timer *w, int revents);
/* The sweep's period, and its clock: now_ms (monotonic) less the loop's
 * accumulated lag, the time by which sweeps came later than the period.
 * Pong deadlines run on it; call once per sweep (hd_ws.c). */
#define HD_HEARTBEAT_PERIOD_MS 1000
uint64_t hd_ws_heartbeat_clock(uint64_t now_ms);

/* hd_ws.c: the lws protocol table and callback */
extern const struct lws_protocols *const hd_ws_protocols;

/* A connection's fd is ready for lws: client is its real address (the
 * TCP peer, or what a PROXY header said). Admission limits, then
 * lws_adopt_socket_vhost(); on refusal the fd is closed. accepted_ns
 * (hd_mono_ns() at accept4()) starts timeouts.handshake_ms, so a PROXY
 * header and the handshake after it share one deadline. */
void hd_worker_adopt(int fd, const struct sockaddr *client,
                     uint64_t accepted_ns);

#endif
