/*
 * Answers of the application's backend to the connect and subscribe
 * proxy (worker/hd_proxy.c). Pure parsing, no I/O, so that it can be
 * fuzzed: the backend is trusted to decide, not to be well-formed.
 *
 *   connect:   {"result": {"user": "alice", "tenant": "acme",
 *                          "channels": ["news:*"], "publish": true,
 *                          "info": {...}, "expires_at": 1767225600}}
 *              {"error": {"code": 403, "message": "not logged in"}}
 *   subscribe: {"result": {}}
 *              {"error": {"code": 403, "message": "..."}}
 *
 * Ownership: claims filled here are the caller's (hd_jwt_claims_free()).
 */
#ifndef HD_PROXYREPLY_H
#define HD_PROXYREPLY_H

#include <stddef.h>
#include <stdint.h>

#include "hd_jwt.h"

enum hd_proxy_verdict {
    HD_PROXY_ALLOW = 0,
    HD_PROXY_DENY = 1,     /* the backend said no */
    HD_PROXY_GARBAGE = -1, /* not an answer: treat as unavailable */
};

#define HD_PROXY_MAX_BODY (64 * 1024)
#define HD_PROXY_MSG_MAX  200

/*
 * Parse a connect answer (len bytes). ALLOW fills *claims (sub = user;
 * exp = expires_at, or INT64_MAX when the backend gave none: the
 * connection then does not expire). DENY fills msg (at most
 * HD_PROXY_MSG_MAX bytes, printable ASCII) and *code (4xx, else 403).
 * GARBAGE: anything else, including a result whose claims are invalid.
 */
int hd_proxy_parse_connect(const char *body, size_t len, int64_t now,
                           hd_jwt_claims_t *claims, int *code, char *msg,
                           size_t msgcap);
/* Parse a subscribe answer: ALLOW, DENY (code, msg), or GARBAGE. */
int hd_proxy_parse_subscribe(const char *body, size_t len, int *code, char *msg,
                             size_t msgcap);

#endif
