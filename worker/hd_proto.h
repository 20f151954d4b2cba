/*
 * The client protocol on a WebSocket connection (hd_proto.c): JSON
 * commands in, replies and pushes out. docs/protocol.md is the reference.
 *
 * hd_ws.c feeds it whole inbound messages and connection events; the
 * channel table reports to it through hd_proto_chan_hooks (subscribe
 * replies, errors, gaps, recovery reads, pushes), so the table never calls
 * the protocol directly.
 */
#ifndef HD_PROTO_H
#define HD_PROTO_H

#include <stddef.h>

#include "hd_chan.h"
#include "hd_conn.h"

/* Handle one complete inbound WebSocket message (may hold several
 * newline-separated commands). */
void hd_proto_handle(hd_conn_t *c, const char *buf, size_t len);
/* After ESTABLISHED: start the connect deadline. */
void hd_proto_conn_open(hd_conn_t *c);
/* The heartbeat sweep, once a second for every connection not closing:
 * c's deadline (connect, token refresh push, token expiry) if it passed
 * by now_ms (hd_mono_ms()). */
void hd_proto_conn_due(hd_conn_t *c, uint64_t now_ms);
/* heartbeat: the n ping/pong frames c sent since the last sweep count
 * against its command rate (may pause reading it, or close it with 4004) */
void hd_proto_control_frames(hd_conn_t *c, uint32_t n);
/* At CLOSED: timers, pending Redis ops, subscriptions, claims. */
void hd_proto_conn_release(hd_conn_t *c);

/*
 * Server-side subscriptions (POST /api/subscribe, /api/unsubscribe). The
 * client is told with a push: {"push": {"channel": C, "subscribe":
 * {"offset", "epoch"}}} once live (or "unsubscribe" with a code when it
 * failed), {"push": {"channel": C, "unsubscribe": {}}} when the server
 * removes it. server_id: a negative id, unique in the worker. 0, or
 * when nothing was done -EEXIST (already subscribed), -ENOENT (not
 * subscribed), -EDQUOT (at the subscription limit) or -EAGAIN (Redis
 * down, or it refused the subscription's read at once: the client then
 * had the "unsubscribe" push).
 */
int hd_proto_server_subscribe(hd_conn_t *c, const char *key, size_t key_len,
                              size_t name_off, const hd_ns_t *ns,
                              int64_t server_id);
int hd_proto_server_unsubscribe(hd_conn_t *c, const char *key, size_t key_len);
/* Subscription tokens of c at wall time now (seconds): refresh pushes and
 * expiry (the heartbeat sweep calls it once a second when
 * c->has_sub_tokens). */
void hd_proto_sub_tokens(hd_conn_t *c, int64_t now);

/* What the channel table tells members, in protocol terms: give it to
 * hd_chan_init(). */
extern const hd_chan_hooks_t hd_proto_chan_hooks;

#endif
