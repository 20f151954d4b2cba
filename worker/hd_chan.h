/*
 * The worker's channel table: Redis channel key -> local subscribers.
 *
 * A channel exists while it has local members or a Redis (un)subscribe in
 * flight. The worker SUBSCRIBEs on the first local member and UNSUBSCRIBEs
 * after the last, batched once per loop turn. A member starts PENDING: its
 * subscribe reply waits until Redis has confirmed the SUBSCRIBE and the
 * channel's current offset and epoch were read; pushes that arrive in the
 * meantime are kept on the channel and replayed by offset when the member
 * goes ACTIVE, so nothing published after the reply's offset is missed and
 * nothing at or before it is sent twice.
 *
 * An ACTIVE member is given offsets one after the other: a push past a
 * hole (the subscriber connection was lost, or with redis.wait_replicas
 * publications went live out of order or one never went live) holds the
 * channel until a fill read from history delivers what is missing (or,
 * without history, tells it as a gap); an offset it already has is a
 * duplicate and dropped.
 *
 * The table knows nothing of the protocol: what members must be told
 * (a subscribe reply, an error, a gap, a push) goes out through the hooks
 * given to hd_chan_init(), the way hd_redis_hooks_t reports Redis events.
 * Its Redis side is hd_redis_subscribe() and hd_pubsub_meta/recover().
 */
#ifndef HD_CHAN_H
#define HD_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hd_conf.h"
#include "hd_envelope.h"
#include "hd_msg.h"

struct ev_loop;
struct hd_conn;

enum hd_rstate {
    HD_R_NONE = 0, /* not subscribed on Redis, nothing in flight */
    HD_R_SUBSCRIBING,
    HD_R_SUBSCRIBED,
    HD_R_UNSUBSCRIBING,
};

typedef struct hd_member {
    struct hd_conn *conn;
    uint32_t        sub_i; /* index in conn->subs */
} hd_member_t;

typedef struct hd_buffered {
    uint64_t  offset;
    hd_msg_t *msg;
    bool      other_epoch; /* came during a fill in another epoch than
                              the fill's: the numbering restarted */
} hd_buffered_t;

typedef struct hd_chan {
    struct hd_chan *hnext;
    struct hd_chan *fnext; /* flush list */
    uint64_t        hash;
    char           *key; /* Redis channel key, NUL-terminated */
    size_t          key_len;
    const char     *name; /* client-visible name, inside key */
    size_t          name_len;
    const hd_ns_t  *ns;    /* namespace options (worker's conf) */
    unsigned        shard; /* the Redis shard it lives on (hd_redis.h) */

    hd_member_t *members;
    uint32_t     nmembers, members_cap;
    uint32_t     npending; /* members waiting for their reply */

    enum hd_rstate rstate;
    bool           in_flush; /* on the flush list */
    bool           meta_inflight;
    bool           resync_inflight;

    hd_buffered_t *buf; /* pushes kept while npending > 0 or
                           while resyncing, in offset order */
    uint32_t       nbuf, buf_cap;
    uint64_t       buf_lost_upto; /* last offset dropped from a full buffer */

    uint64_t last_offset; /* highest offset seen from Redis */
    /* a fill is running: the subscriber connection was lost, or a live
     * push left a hole (redis.wait_replicas publishes out of order);
     * live pushes are held in the buffer, in offset order, until it is
     * filled from history or told as a gap */
    bool     resync;
    uint8_t  fill_rounds; /* reads of this fill so far (bounded) */
    uint64_t resync_from; /* the fill read's since */
    char     resync_epoch[HD_EPOCH_MAX + 1]; /* epoch when it started */
    char     epoch[HD_EPOCH_MAX + 1];
} hd_chan_t;

enum hd_sub_state {
    HD_SUB_PENDING = 0,
    HD_SUB_ACTIVE = 1
};

typedef struct hd_sub {
    /* 56 bytes, one per subscription of every connection: 8-byte fields,
     * then 4-byte, then 1-byte, so that nothing is padding (a 64-byte
     * record takes an 80-byte malloc chunk, 56 one of 64) */
    hd_chan_t *chan;
    uint64_t   min_offset;    /* deliver pushes with offset > min_offset;
                                  while recovering: the client's offset */
    int64_t    cmd_id;        /* the subscribe command awaiting its reply */
    char      *recover_epoch; /* the client's epoch (heap), while pending */
    int64_t    token_exp;     /* subscription token's exp; 0: none */
    uint32_t   idx;           /* index in chan->members */
    uint32_t   rec_seq;       /* the recovery read in flight (hooks.recover
                                 sets it; its reply must match it) */
    uint8_t    state;
    bool       recovering; /* subscribe with recover: its own reply */
    bool       recover_sent;
    bool       announced;    /* presence/join published (hooks.live) */
    bool       jl_off;       /* the client wants no join/leave pushes */
    bool       token_pushed; /* its refresh push went out */
} hd_sub_t;

/*
 * What the table reports. Every hook is required. The channel table stays
 * consistent whatever a hook does to the connection, except that a hook
 * must not join or leave channels.
 */
typedef struct hd_chan_hooks {
    /* a plain (non-recovering) pending member is live: send its subscribe
     * reply (offset and epoch as of the subscription) */
    void (*subscribed)(struct hd_conn *c, int64_t cmd_id, uint64_t offset,
                       const char *epoch);
    /* a pending member's subscribe failed: send the error; the member is
     * removed right after the hook returns */
    void (*failed)(struct hd_conn *c, int64_t cmd_id, int code,
                   const char *msg);
    /* an active member missed offsets from..to (to may be below from: an
     * epoch restart with nothing of the new epoch missed) */
    void (*gap)(struct hd_conn *c, const hd_chan_t *ch, uint64_t from,
                uint64_t to, const char *epoch);
    /* start the recovery read of the recovering member sub_i; its reply
     * ends in hd_chan_activate() or hd_chan_leave(). A negative errno
     * when Redis is unavailable (nothing sent: the table fails the
     * member) */
    int (*recover)(struct hd_conn *c, uint32_t sub_i);
    /* a push for an active member (m is borrowed: take a reference to
     * keep it). The hook handles a full queue itself. */
    void (*deliver)(struct hd_conn *c, hd_msg_t *m);
    /* optional: a member is going ACTIVE (called just before its
     * subscribe reply, or for a recovering member just after it) / an
     * ACTIVE member is leaving (still in the table while the hook runs).
     * For presence and join/leave; neither may change the table. */
    void (*live)(struct hd_conn *c, hd_chan_t *ch, hd_sub_t *s);
    void (*left)(struct hd_conn *c, hd_chan_t *ch, hd_sub_t *s);
    /* optional: a join/leave push m for an active member that wants them;
     * client is the id of the client it is about (the hook skips the
     * member when that is itself) */
    void (*event)(struct hd_conn *c, hd_msg_t *m, const char *client,
                  size_t client_len);
} hd_chan_hooks_t;

/* Find or create the channel for key (tenant-qualified). name_off is where
 * the client-visible name starts inside key. */
hd_chan_t *hd_chan_get(const char *key, size_t key_len, size_t name_off,
                       const hd_ns_t *ns);
hd_chan_t *hd_chan_find(const char *key, size_t key_len);

/* Add conn as a PENDING member; returns the index into conn->subs. With
 * recover_epoch set, the member asks to recover what it missed after
 * since (the recover hook runs it once the channel is live). -EAGAIN
 * when the join failed before returning (the channel was live and Redis
 * refused its read at once): the failed hook has run and the member is
 * gone, so nothing of it may be touched. */
int hd_chan_join(hd_chan_t *ch, struct hd_conn *conn, int64_t cmd_id,
                 uint64_t since, const char *recover_epoch);
/* A recovering member got its reply (sent by the caller): make it ACTIVE at
 * offset and deliver what was buffered after it. */
void hd_chan_activate(struct hd_conn *conn, uint32_t sub_i, uint64_t offset,
                      const char *epoch);
/* Remove conn's subscription sub_i (swap-remove on both sides). */
void hd_chan_leave(struct hd_conn *conn, uint32_t sub_i);
/* Remove every subscription of conn (on close). */
void hd_chan_leave_all(struct hd_conn *conn);

/* Deliver an envelope that arrived from Redis on key. */
void hd_chan_dispatch(const char *key, size_t key_len, const char *payload,
                      size_t len);

/* Redis glue: a shard's subscriber connection came up / went down; its
 * command connection came up. Only that shard's channels are touched. */
void hd_chan_redis_up(unsigned shard);
void hd_chan_redis_down(unsigned shard);
void hd_chan_cmd_up(unsigned shard);
void hd_chan_confirmed(const char *key, size_t key_len, bool subscribed);

size_t hd_chan_count(void);
/* Call fn for every channel of the table (fn must not change it). */
void hd_chan_foreach(void (*fn)(const hd_chan_t *ch, void *arg), void *arg);
/* Start the table on loop (Redis state changes are batched once per loop
 * turn). hooks is copied. */
void hd_chan_init(struct ev_loop *loop, const hd_chan_hooks_t *hooks);
void hd_chan_shutdown(void);

#endif
