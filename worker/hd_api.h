/*
 * The HTTP API on the public port, for backends: POST /api/publish and
 * POST /api/broadcast here, the cluster-wide methods (disconnect,
 * presence, channels, ...) in hd_capi.c. docs/api.md has the contract.
 * Requests are served by the worker that accepted the connection; a
 * request waiting for Redis survives its client going away (the reply is
 * then dropped).
 */
#ifndef HD_API_H
#define HD_API_H

#include <stddef.h>

#include <jansson.h>

struct lws;
struct hd_conn;

/* lws callbacks, from the protocol callback in hd_ws.c. Each returns what
 * the lws callback should return: 0, or -1 to close the connection (lws's
 * own convention, not an -errno). */
int hd_api_http(struct lws *wsi, struct hd_conn *c, const char *uri);
int hd_api_body(struct lws *wsi, struct hd_conn *c, const void *in, size_t len);
int hd_api_body_done(struct lws *wsi, struct hd_conn *c);
int hd_api_writeable(struct lws *wsi, struct hd_conn *c);
void hd_api_closed(struct hd_conn *c);

/*
 * A request being answered by a handler of the routes table. The handler
 * gets the parsed body (borrowed, an object) and the validated "tenant"
 * (NULL when absent), and must call hd_api_answer() or hd_api_fail()
 * exactly once, now or later; the answer is dropped if the client went
 * away meanwhile. Both free the handle.
 */
typedef struct hd_api_call hd_api_call_t;
typedef void hd_api_fn(hd_api_call_t *a, json_t *body, const char *tenant);
/* Takes the reference to body. */
void hd_api_answer(hd_api_call_t *a, int status, json_t *body);
void hd_api_fail(hd_api_call_t *a, int status, const char *msg);

/* hd_batch.c: POST /api/batch */
hd_api_fn hd_api_batch;

/* hd_capi.c */
hd_api_fn hd_capi_disconnect, hd_capi_subscribe, hd_capi_unsubscribe,
    hd_capi_channels, hd_capi_presence, hd_capi_presence_stats, hd_capi_history,
    hd_capi_history_remove, hd_capi_info, hd_capi_connections;

#endif
