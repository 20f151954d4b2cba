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
/* At CLOSED: timers, pending Redis ops, subscriptions, claims. */
void hd_proto_conn_release(hd_conn_t *c);

/* What the channel table tells members, in protocol terms: give it to
 * hd_chan_init(). */
extern const hd_chan_hooks_t hd_proto_chan_hooks;

#endif
