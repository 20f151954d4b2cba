/*
 * Per-connection state of a WebSocket client (the lws per-session data).
 *
 * Inbound: fragments of one WebSocket message accumulate in rx until the
 * final fragment, bounded by limits.message_bytes (close 1009 past it).
 * Outbound: a ring of hd_msg_t references, bounded by bytes
 * (limits.outbound_queue_bytes): past it the
 * connection is closed with HD_CLOSE_SLOW_CONSUMER and the queue freed.
 * Queued messages are coalesced into text frames, newline-separated, up
 * to batch.max_bytes / batch.max_messages each, and written before the
 * loop next waits; only a socket that cannot take them waits for
 * writable (see hd_conn.c).
 */
#ifndef HD_CONN_H
#define HD_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "hd_chan.h"
#include "hd_msg.h"

struct lws;
struct hd_jwt_claims;
struct hd_op;
struct hd_http;

/* A closing connection's state: allocated when the close is decided
 * (hd_conn_close*()), or at the first look of a path that set close_code
 * directly; freed with the connection. */
typedef struct hd_closing {
    uint64_t ms;        /* when decided, or the socket last took bytes */
    size_t   q_bytes;   /* queued when the close was decided */
    int      outq;      /* unsent bytes at the last sweep */
    int      linger_fd; /* > 0: a dup kept for a lingering close */
    char     reason[];  /* NUL-terminated, at most 63 bytes */
} hd_closing_t;

/* A message being assembled from pieces (rare: long ones), freed once
 * handled. */
typedef struct hd_rxbuf {
    uint32_t len, cap; /* <= limits.message_bytes (16 MiB) */
    char     data[];
} hd_rxbuf_t;

typedef struct hd_conn {
    /* One per client for its whole life: a million of them must stay
     * small (docs/benchmarks.md, the per-connection breakdown). The first
     * 64 bytes are what the heartbeat sweep reads of every connection
     * every second (one cache line, no struct lws); then pointers and
     * 8-byte fields, then the 4-, 2- and 1-byte ones, so that nothing is
     * padding. What only a closing connection needs is on the heap. */
    struct lws     *wsi;
    struct hd_conn *next;         /* worker's list of live conns */
    uint64_t        last_rx_ms;   /* heartbeat */
    uint64_t        ping_sent_ms; /* 0: none outstanding (heartbeat clock) */
    /* outbound ring: allocated by the first enqueue, freed by the
     * heartbeat sweep once it is empty and nothing is scheduled */
    hd_msg_t **q;
    uint32_t   q_len;
    int        fd; /* the socket (lws_get_socket_fd(), at ESTABLISHED) */
    uint16_t   close_code; /* != 0: close requested */
    bool       rx_paused;  /* reading stopped: control frames over the rate */
    bool       has_sub_tokens; /* some subscription came with a token: the
                                  heartbeat sweep checks their expiry */
    uint8_t    wstate;         /* write scheduling, see hd_conn.c */
    bool       ping_due;
    uint16_t   peer_close_code; /* from the peer's close frame */
    /* flags the sweep does not read: bits, so that they fit in the
     * first line and the struct has no hole */
    bool connected : 1;
    bool anonymous : 1;
    bool refresh_pushed : 1;   /* the refresh push for this exp went out */
    bool proxy_connecting : 1; /* a connect waits for the backend */
    bool close_sent : 1;       /* the close frame is lws' now */
    bool close_forced : 1;     /* socket shut down under lws */
    bool close_soft : 1;       /* send what is queued first */
    bool established : 1;
    bool deflate : 1;  /* permessage-deflate negotiated */
    bool timer_on : 1; /* due_ms is set */
    /* connect deadline, then the token's refresh push and expiry: low
     * 32 bits of hd_mono_ms(); the sweep checks it (hd_proto.c) */
    uint32_t due_ms;

    struct hd_conn *prev;
    uint64_t        id;          /* worker-unique */
    uint64_t        accepted_ns; /* monotonic, at accept4() */

    /* inbound: a message that came in pieces, while it is assembled */
    struct hd_rxbuf *rx;

    size_t   q_bytes;
    uint32_t q_head, q_cap;

    /* subscriptions */
    hd_sub_t *subs;
    uint32_t  nsubs, subs_cap;

    /* identity, after "connect" */
    struct hd_jwt_claims *claims; /* NULL until connected */
    /* (proxy.headers of the upgrade stay parked by fd in hd_backend.c) */

    struct hd_op   *ops;  /* Redis commands awaiting replies */
    struct hd_http *http; /* an HTTP API request in progress */

    /* command rate limit: token bucket */
    float    tokens; /* <= limits.commands_burst (1e6): float is enough */
    uint32_t wdue;   /* delayed: low 32 bits of hd_mono_ms() to flush at */
    uint64_t tokens_ms;
    /* the current streak of refusals: low 32 bits of hd_mono_ms(),
     * compared modulo 2^32 (0: no streak) */
    uint32_t over_since_ms;
    uint32_t last_refusal_ms;

    /* what only a closing connection needs (heap, from the close
     * decision on; NULL before) */
    struct hd_closing *closing;
    struct hd_conn    *wnext, *wprev; /* on the ready or the delayed list */
    /* The client's address is not kept here: it is in the fd-indexed
     * table of hd_realip.c (20 bytes, binary) for as long as the socket
     * is open, and formatted only when something shows it. */
} hd_conn_t;
/* a million of them: 200 bytes is a 208-byte malloc chunk, 201 one of 224
 * (docs/benchmarks.md); the sweep's fields stay in the first 64 bytes */
_Static_assert(sizeof(hd_conn_t) <= 200, "hd_conn_t outgrew its malloc chunk");
_Static_assert(offsetof(hd_conn_t, prev) == 64,
               "the heartbeat sweep's fields fill the first cache line");

/* Queue m (takes a new reference). Returns 0, or -ENOBUFS when the queue
 * would pass limits.outbound_queue_bytes: the caller closes the connection. */
int hd_conn_enqueue(hd_conn_t *c, hd_msg_t *m);
/*
 * Queue a large reply the client asked for (history, recovery): it may
 * take the queue past the byte cap, since one reply can be larger than
 * the cap on its own, but only while the queue is within the cap before
 * it. So a connection holds at most limits.outbound_queue_bytes plus one
 * reply. Returns 0, or -ENOBUFS when the queue is already over the cap:
 * the caller closes the connection as a slow consumer.
 */
int hd_conn_enqueue_force(hd_conn_t *c, hd_msg_t *m);
/* Queue a copy of a reply string (one reference). */
int hd_conn_reply(hd_conn_t *c, const char *s, size_t len);
/* Have what is queued written before the loop next waits (call after
 * enqueueing a reply, or to get a close or ping out). */
void hd_conn_want_write(hd_conn_t *c);
/* Like hd_conn_want_write() for a push: batch.flush_delay_ms above 0
 * holds the write that long after the first push queued. */
void hd_conn_want_push(hd_conn_t *c);
/* Take c off the write lists (before its memory goes). */
void hd_conn_unschedule(hd_conn_t *c);
/* Write scheduling watchers, started and stopped with the worker loop. */
void hd_conn_io_init(void);
void hd_conn_io_shutdown(void);
/* c's address as text ("192.0.2.7", "2001:db8::1"; "" when unknown) in
 * buf (INET6_ADDRSTRLEN is enough). Returns buf. */
const char *hd_conn_addr(const hd_conn_t *c, char *buf, size_t len);
/* c's address for a log line: its text, or "-" when log.client_addresses
 * is false (static storage, valid until the next call: one per line). */
const char *hd_conn_log_addr(const hd_conn_t *c);
/* Request a close with code and reason; happens on the next writable. */
void hd_conn_close(hd_conn_t *c, uint16_t code, const char *reason);
/* Like hd_conn_close(), but what is already queued (an error reply) is
 * sent before the close frame. */
void hd_conn_close_after_flush(hd_conn_t *c, uint16_t code, const char *reason);
/* A requested close whose frame the socket did not take within
 * HD_CLOSE_SEND_MS, with no progress meanwhile: drop the connection
 * without it (lws closes it on its next look at the socket). Called once
 * a second for every closing connection. */
#define HD_CLOSE_SEND_MS 2000
void hd_conn_close_check(hd_conn_t *c, uint64_t now_ms);
/* At LWS_CALLBACK_CLOSED: start the lingering close prepared when the
 * close frame was queued (see hd_conn.c). */
void hd_conn_linger(hd_conn_t *c);
/* Close what is still lingering (worker exit). */
void hd_conn_linger_shutdown(void);
/* Give back the outbound ring when it is empty and nothing is scheduled
 * (the heartbeat sweep, once a second): a quiet connection keeps no
 * queue; the next enqueue allocates it again. */
void hd_conn_trim(hd_conn_t *c);
/* Free everything the connection holds (at LWS_CALLBACK_CLOSED). */
void hd_conn_release(hd_conn_t *c);
/*
 * On writable: a due ping, a requested close, or what is queued. Returns 0, or -1 when lws must close
 * the connection (write error or a requested close): the lws callback's
 * return value, lws's convention rather than an -errno.
 */
int hd_conn_flush(hd_conn_t *c);

#endif
