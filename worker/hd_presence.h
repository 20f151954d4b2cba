/*
 * Presence and join/leave (namespaces with "presence" or "join_leave").
 *
 * Redis, per channel C of tenant T: a hash {herald|T|C}:pres of client id
 * -> "<user length>:<user><entry JSON>", the entry being
 * {"client": ..., "user": ..., "info": ...}. An entry is added when a
 * member goes live and removed when it leaves (unsubscribe, disconnect),
 * at once. Entries are owned by the worker instance named in their client
 * id (hd_cluster.h): readers skip, and remove, the entries of instances
 * that are not live in the node registry, so a dead node's entries stop
 * being listed within cluster.node_ttl_ms + heartbeat_ms and are removed
 * from Redis at the next read or sweep. Workers refresh the hash's TTL of
 * their channels every node_ttl_ms and one of them sweeps it at most that
 * often.
 *
 * Join/leave: "J <client id> <entry>" / "L <client id> <entry>" published
 * on the channel's own pub/sub channel (hd_chan.c pushes them), outside the
 * offset numbering: they take no offset and are never replayed. A leave is
 * published only by whoever removed the entry (HDEL said 1), so exactly
 * once, including for the clients of a dead node (by the sweep).
 */
#ifndef HD_PRESENCE_H
#define HD_PRESENCE_H

#include <stddef.h>

#include <jansson.h>

#include "hd_chan.h"
#include "hd_conf.h"

struct hd_conn;

/* hd_chan hooks (via hd_proto.c). */
void hd_presence_live(struct hd_conn *c, hd_chan_t *ch, hd_sub_t *s);
void hd_presence_left(struct hd_conn *c, hd_chan_t *ch, hd_sub_t *s);

/*
 * Read the presence of key (a channel's pub/sub key) in namespace ns:
 * with limit 0 only the counts. cb gets err 0, the number of clients, of
 * distinct users, and (limit > 0) an array of at most limit entries
 * (borrowed, valid during the callback); or err HD_ERR_UNAVAILABLE.
 * Returns 0, or a negative errno when nothing was sent (-ENOTCONN: Redis
 * is down; cb does not run).
 */
typedef void hd_presence_cb(int err, long long clients, long long users,
                            json_t *entries, void *arg);
int hd_presence_read(const hd_ns_t *ns, const char *key, size_t key_len,
                     size_t limit, hd_presence_cb *cb, void *arg);

/* Add every live member's entry again (after this worker may have been
 * taken for dead: a sweep removed its entries and published leaves). */
void hd_presence_reannounce_all(void);

void hd_presence_init(void);
void hd_presence_shutdown(void);

#endif
