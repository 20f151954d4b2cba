/*
 * Redis side of pub/sub: the Lua scripts that assign offsets and publish,
 * and the key layout.
 *
 * Keys, for a client channel C of tenant T ("" without a tenant):
 *   Redis pub/sub channel   herald|T|C
 *   channel meta (hash)     {herald|T|C}:meta    fields o (offset), e (epoch)
 *   history (stream)        {herald|T|C}:hist    entry id <offset>-0, field d
 *                                                = the envelope
 * The braces are a Redis Cluster hash tag: a channel's keys share a slot.
 * '|' can occur in neither tenants nor channel names, so keys of
 * different tenants can never collide.
 */
#ifndef HD_PUBSUB_H
#define HD_PUBSUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hd_conf.h"

#define HD_KEY_MAX 384

/* err: 0, or HD_ERR_UNAVAILABLE / HD_ERR_INTERNAL. epoch valid only
 * during the callback. */
typedef void hd_pub_cb(int err, uint64_t offset, const char *epoch, void *arg);

/* Build the pub/sub key for (tenant, channel) into buf; returns its length
 * and sets *name_off to where the channel name starts. */
size_t hd_pubsub_key(const char *tenant, const char *chan, size_t chan_len,
                     char *buf, size_t cap, size_t *name_off);

/* Longest idempotency key (hd_publish.h checks it). */
#define HD_PUB_IDEM_MAX 128

/* Publish data (JSON text) on key. idem: an idempotency key (NULL: none):
 * a repeat within limits.idempotency_window_s gets the first
 * publication's offset and epoch and publishes nothing
 * (hd_pubsub_duplicate() tells, in the callback). Returns 0 (cb runs
 * once), or a negative errno when nothing was sent (cb does not run):
 * -ENOTCONN when Redis is unavailable, -ENAMETOOLONG for a key too long.
 * The same holds for hd_pubsub_meta(), hd_pubsub_recover() and
 * hd_pubsub_history(). */
int hd_pubsub_publish(const hd_ns_t *ns, const char *key, size_t key_len,
                      const char *data, size_t data_len, const char *idem,
                      hd_pub_cb *cb, void *arg);

/* Read (creating when absent) a channel's current offset and epoch. */
int hd_pubsub_meta(const hd_ns_t *ns, const char *key, size_t key_len,
                   hd_pub_cb *cb, void *arg);

/* A history read: the channel's current offset and epoch, a status, and
 * envelopes (hd_envelope.h), oldest first. Valid during the callback. */
typedef struct hd_hist_reply {
    uint64_t      offset;
    const char   *epoch;
    int           status; /* 1: ok; 0: cannot recover; -1: epoch mismatch */
    size_t        n;
    const char  **env;
    const size_t *env_len;
} hd_hist_reply_t;

/* r is NULL when err != 0. */
typedef void hd_hist_cb(int err, const hd_hist_reply_t *r, void *arg);

/*
 * Everything published after offset since in epoch since_epoch, if all of
 * it (at most cap publications) is still in history: status 1 and the
 * envelopes; otherwise status 0 and none (never a partial answer).
 */
int hd_pubsub_recover(const hd_ns_t *ns, const char *key, size_t key_len,
                      uint64_t since, const char *since_epoch, unsigned cap,
                      hd_hist_cb *cb, void *arg);
/* The latest limit publications (since < 0), or up to limit after since
 * (status -1 when since_epoch is not the current epoch). */
int hd_pubsub_history(const hd_ns_t *ns, const char *key, size_t key_len,
                      unsigned limit, int64_t since, const char *since_epoch,
                      hd_hist_cb *cb, void *arg);

/*
 * Inside a hd_pub_cb / hd_hist_cb called with err != 0: the error reply
 * Redis gave (e.g. "OOM command not allowed when used memory >
 * 'maxmemory'..."), so that replies and logs can name it; NULL when the
 * failure was no Redis error reply (connection lost, Redis down). Valid
 * only during the callback.
 */
const char *hd_pubsub_error(void);
/* Inside a publish callback with err == 0: true when the publish repeated
 * an idempotency key and nothing was published (the offset is the first
 * publication's). */
bool hd_pubsub_duplicate(void);

void hd_pubsub_init(void);

#endif
