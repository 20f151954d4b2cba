/*
 * The worker's Redis connections (hiredis async on the worker's libev
 * loop), per shard (conf: redis.shards; one shard without it): "cmd" for
 * commands (publish scripts, history reads) and "sub" for SUBSCRIBE, plus
 * for a Sentinel-managed shard a "sentinel" connection that asks for the
 * primary's address and follows +switch-master. Every connection reconnects
 * on its own with jittered exponential backoff, has a connect timeout, and
 * commands have a timeout: a command that gets no reply in time tears the
 * connection down (its callback and every other pending one run with reply
 * NULL), so nothing waits forever on a wedged server. Each subscriber is
 * checked end to end by a heartbeat: the worker publishes on a private
 * channel through "cmd" and expects it back on "sub"; when it does not come
 * back, "sub" is torn down and reconnected.
 *
 * A channel lives on one shard: hd_redis_shard_of() of its Redis key (the
 * tenant-qualified name), by rendezvous hashing over the shard names, so a
 * change of the shard list moves only the channels that must move.
 *
 * Ownership: a redisReply passed to a callback is valid only during the
 * callback (hiredis frees it afterwards).
 */
#ifndef HD_REDIS_H
#define HD_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "hd_conf.h"

/* reply == NULL means the command failed (connection down, timeout); err
 * then says why. A Redis error reply is passed as a REDIS_REPLY_ERROR. */
typedef void hd_redis_cb(redisReply *reply, const char *err, void *arg);

typedef struct hd_redis_hooks {
    /* a shard's sub connection became usable (after a (re)connect):
     * resubscribe its channels */
    void (*sub_up)(unsigned shard);
    /* a shard's sub connection was lost: its channels may miss messages */
    void (*sub_down)(unsigned shard);
    /* a message on a subscribed channel */
    void (*message)(const char *chan, size_t chan_len, const char *data,
                    size_t data_len);
    /* a SUBSCRIBE / UNSUBSCRIBE confirmation */
    void (*subscribed)(const char *chan, size_t chan_len, bool sub);
    /* a shard's cmd connection became usable */
    void (*cmd_up)(unsigned shard);
} hd_redis_hooks_t;

int  hd_redis_start(const hd_redis_hooks_t *hooks);
void hd_redis_stop(void);

unsigned hd_redis_nshards(void);
/* The shard of a channel's Redis key (hd_pubsub_key()). */
unsigned hd_redis_shard_of(const char *key, size_t key_len);
/* Rendezvous hashing over names (exposed for the unit tests and the
 * distribution check): the index of the winning name. */
unsigned hd_redis_hrw(const char *const *names, unsigned n, const char *key,
                      size_t key_len);

/* Every shard's cmd (sub) connection is up. */
bool hd_redis_cmd_up(void);
bool hd_redis_sub_up(void);
/* ... of the shard of key */
bool hd_redis_cmd_up_key(const char *key, size_t key_len);
bool hd_redis_sub_up_key(const char *key, size_t key_len);
bool hd_redis_shard_cmd_up(unsigned shard);
/* A Sentinel-managed shard's current replication id (INFO replication
 * master_replid, read on every connect), or "" for a fixed server. */
const char *hd_redis_shard_replid(unsigned shard);
/* Some shard's cmd connection is up. */
bool hd_redis_cmd_up_any(void);

/* Send a command on shard's "cmd". Returns 0 (cb will run exactly once),
 * or -ENOTCONN when the connection is down, -ENOBUFS when too many
 * commands are in flight, -EIO when hiredis refused it (cb does not run). */
int hd_redis_cmd(unsigned shard, hd_redis_cb *cb, void *arg, int argc,
                 const char **argv, const size_t *lens);

/* (Un)subscribe channels on "sub", one command per shard. 0, -ENOTCONN
 * when the shard of one of them is down (nothing is sent then), -EINVAL
 * (n < 1), -EIO when hiredis refused one. */
int hd_redis_subscribe(bool sub, int n, const char **chans, const size_t *lens);

#endif
