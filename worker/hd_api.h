/*
 * The HTTP publish API on the public port: POST /api/publish and
 * POST /api/broadcast, for backends. docs/protocol.md has the contract.
 * Requests are served by the worker that accepted the connection; a
 * request waiting for Redis survives its client going away (the reply is
 * then dropped).
 */
#ifndef HD_API_H
#define HD_API_H

#include <stddef.h>

struct lws;
struct hd_conn;

/* lws callbacks, from the protocol callback in hd_ws.c. Each returns what
 * the lws callback should return. */
int hd_api_http(struct lws *wsi, struct hd_conn *c, const char *uri);
int hd_api_body(struct lws *wsi, struct hd_conn *c, const void *in, size_t len);
int hd_api_body_done(struct lws *wsi, struct hd_conn *c);
int hd_api_writeable(struct lws *wsi, struct hd_conn *c);
void hd_api_closed(struct hd_conn *c);

#endif
