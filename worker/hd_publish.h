/*
 * The one publish path, shared by the WebSocket "publish" command
 * (hd_proto.c) and the HTTP API (hd_api.c). Each front end parses its own
 * input and writes its own reply; everything between is here, in this
 * order:
 *
 *   hd_pub_resolve()  the channel name is valid, its namespace exists, the
 *                     publisher may use it (anonymous clients, the token's
 *                     allow-list, client publishing);
 *   hd_pub_encode()   the data is present and encodes as JSON text;
 *   hd_pub_publish()  the Redis key is built from tenant and name and the
 *                     publication goes out; the callback gets the offset.
 *
 * hd_pub_resolve() and hd_pub_key() also serve subscribe and history,
 * which must agree with publish on what a name means.
 */
#ifndef HD_PUBLISH_H
#define HD_PUBLISH_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "hd_conf.h"
#include "hd_pubsub.h"

struct hd_jwt_claims;

/* Who acts. Borrowed: must outlive the call it is passed to. */
typedef struct hd_publisher {
    bool server;    /* the HTTP API (a backend holding the API key): any
                    namespace, no per-client checks */
    bool anonymous; /* a client without a token (or before connect): the
                       namespace must allow anonymous clients */
    const struct hd_jwt_claims *claims; /* the client's token; NULL: none */
    const char                 *tenant; /* keys live under it; NULL: none */
} hd_publisher_t;

/* A resolved channel. name points into the caller's input. */
typedef struct hd_pub_target {
    const hd_ns_t *ns;
    const char    *name;
    size_t         name_len;
} hd_pub_target_t;

/* Why a step refused; the front ends word some of these themselves. */
enum hd_pub_why {
    HD_PUB_OK = 0,
    HD_PUB_INVALID,     /* not a valid channel name */
    HD_PUB_UNKNOWN_NS,  /* no such namespace */
    HD_PUB_ANONYMOUS,   /* the namespace refuses anonymous clients */
    HD_PUB_NOT_ALLOWED, /* the token's allow-list */
    HD_PUB_NO_PUBLISH,  /* the namespace refuses client publishing */
    HD_PUB_NO_DATA,     /* "data" missing */
    HD_PUB_BAD_DATA,    /* "data" does not encode */
};

typedef struct hd_pub_error {
    enum hd_pub_why why;
    int             code; /* HD_ERR_*: also the HTTP status for the API */
    char            msg[256];
} hd_pub_error_t;

/*
 * Resolve channel name (len bytes, not NUL-terminated) for who; publish
 * adds the client-publishing permission. 0 and *t filled, or -EACCES (*e
 * a 403) or -EINVAL (*e a 400) and *e says why (clients get 403 for a
 * refused namespace, the API 400).
 */
int hd_pub_resolve(const hd_publisher_t *who, const char *name, size_t len,
                   bool publish, hd_pub_target_t *t, hd_pub_error_t *e);

/* The Redis key of t for who into buf (HD_KEY_MAX bytes); its length, 0
 * when it does not fit. *name_off: where the name starts in it. */
size_t hd_pub_key(const hd_publisher_t *who, const hd_pub_target_t *t,
                  char *buf, size_t *name_off);

/* data as compact JSON text (heap, free() it), or NULL and *e says why
 * (data NULL: missing). */
char *hd_pub_encode(const json_t *data, hd_pub_error_t *e);

/*
 * The optional idempotency key v (params.idempotency_key, the API body's
 * "idempotency_key"): 0 with *key NULL when v is NULL, 0 with *key the
 * string (borrowed from v), or -EINVAL and *e (400) when it is not 1..128
 * bytes of [A-Za-z0-9_.:@/+=-].
 */
int hd_pub_idem_key(const json_t *v, const char **key, hd_pub_error_t *e);

/*
 * History's "limit" and "since" in params (the client's history command,
 * the API's /api/history body; NULL: neither) for ns, a namespace that
 * keeps history: *limit is 100 by default and capped at ns->history_size;
 * *since -1 and *epoch NULL without "since" (else borrowed from params).
 * 0, or -EINVAL and *e (400).
 */
int hd_pub_history_args(const json_t *params, const hd_ns_t *ns,
                        unsigned *limit, int64_t *since, const char **epoch,
                        hd_pub_error_t *e);
/* Publish text on t. idem: an idempotency key or NULL. A repeat of idem on
 * the same channel (and tenant) within limits.idempotency_window_s, from
 * any worker or node, gets the first publication's offset and publishes
 * nothing (hd_pubsub_duplicate() in cb). 0: cb runs exactly once with the
 * offset or an HD_ERR_* code; a negative errno (-ENOTCONN: Redis is
 * unavailable): nothing sent, cb does not run. */
int hd_pub_publish(const hd_publisher_t *who, const hd_pub_target_t *t,
                   const char *text, size_t len, const char *idem,
                   hd_pub_cb *cb, void *arg);

#endif
