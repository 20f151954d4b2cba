/*
 * Numbers a client sees: WebSocket close codes and command error codes.
 * docs/protocol.md is the reference for client authors; keep it in step.
 * Close codes 4000-4499 mean "reconnecting is fine", 4500-4999 mean "do
 * not reconnect (with the same credentials)".
 */
#ifndef HD_CODES_H
#define HD_CODES_H

/* RFC 6455 close codes herald sends */
#define HD_CLOSE_NORMAL     1000
#define HD_CLOSE_GOING_AWAY 1001 /* shutdown */
#define HD_CLOSE_PROTOCOL   1002
#define HD_CLOSE_BAD_DATA   1007 /* invalid UTF-8 */
#define HD_CLOSE_POLICY     1008
#define HD_CLOSE_TOO_BIG    1009
#define HD_CLOSE_RESTART    1012 /* reload / scale-down / replace */
#define HD_CLOSE_TRY_LATER  1013 /* overload guard (hd_overload.c) */
#define HD_CLOSE_ABNORMAL   1006 /* never sent; counted when a peer vanishes */

/* herald close codes: reconnect is fine */
#define HD_CLOSE_SLOW_CONSUMER   4000 /* outbound queue over its byte cap */
#define HD_CLOSE_STALE           4001 /* no pong within heartbeat timeout */
#define HD_CLOSE_CONNECT_TIMEOUT 4002 /* no connect command in time */
#define HD_CLOSE_TOKEN_EXPIRED   4003 /* reconnect with a fresh token */
#define HD_CLOSE_RATE_LIMITED    4004 /* sustained command flood; back off */
/* herald close codes: do not reconnect */
#define HD_CLOSE_INVALID_TOKEN   4500
#define HD_CLOSE_CONN_LIMIT      4502 /* per-user / per-tenant limit */
#define HD_CLOSE_DISCONNECTED    4504 /* POST /api/disconnect (default code) */

/* command error codes (in {"error": {"code": N}}) */
#define HD_ERR_BAD_REQUEST    400 /* malformed JSON or command shape */
#define HD_ERR_UNAUTHORIZED   401 /* connect first / bad token */
#define HD_ERR_FORBIDDEN      403 /* not permitted */
#define HD_ERR_UNKNOWN_METHOD 404
#define HD_ERR_CONFLICT       409 /* already connected / subscribed */
#define HD_ERR_GONE           410 /* history epoch changed */
#define HD_ERR_TOO_LARGE \
    413                        /* HTTP API only: a WebSocket message
                                        over the limit is closed with 1009 */
#define HD_ERR_LIMIT       429 /* rate or subscription limit */
#define HD_ERR_INTERNAL    500
#define HD_ERR_UNAVAILABLE 503 /* Redis unavailable, draining */

#endif
