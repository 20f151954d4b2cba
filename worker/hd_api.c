#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libwebsockets.h>
#include <openssl/crypto.h>

#include "hd_alloc.h"
#include "hd_api.h"
#include "hd_chname.h"
#include "hd_httpgate.h"
#include "hd_log.h"
#include "hd_metrics.h"
#include "hd_publish.h"
#include "hd_pubsub.h"
#include "hd_redis.h"
#include "hd_worker_int.h"
#include "hd_keyguard.h"
#include "hd_time.h"
#include "hd_realip.h"
#include "hd_wsguard.h"

#define BROADCAST_MAX 1000

enum api_route {
    R_NONE = 0,
    R_PUBLISH,
    R_BROADCAST,
    R_OTHER /* a handler from the routes table */
};

/* Every path the API serves: publish and broadcast here, the rest in
 * hd_capi.c. */
static const struct {
    const char        *path;
    enum hd_api_method method;
    hd_api_fn         *fn; /* NULL: publish/broadcast */
} routes[] = {
    { "/api/publish", HD_API_PUBLISH, NULL },
    { "/api/broadcast", HD_API_BROADCAST, NULL },
    { "/api/disconnect", HD_API_DISCONNECT, hd_capi_disconnect },
    { "/api/subscribe", HD_API_SUBSCRIBE, hd_capi_subscribe },
    { "/api/unsubscribe", HD_API_UNSUBSCRIBE, hd_capi_unsubscribe },
    { "/api/history", HD_API_HISTORY, hd_capi_history },
    { "/api/history_remove", HD_API_HISTORY_REMOVE, hd_capi_history_remove },
    { "/api/channels", HD_API_CHANNELS, hd_capi_channels },
    { "/api/presence", HD_API_PRESENCE, hd_capi_presence },
    { "/api/presence_stats", HD_API_PRESENCE_STATS, hd_capi_presence_stats },
    { "/api/info", HD_API_INFO, hd_capi_info },
    { "/api/connections", HD_API_CONNECTIONS, hd_capi_connections },
    { "/api/batch", HD_API_BATCH, hd_api_batch },
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* Per-request state; c->http points at it while a request is in progress. */
typedef struct hd_http {
    struct lws    *wsi;
    enum api_route route;
    char          *body;
    size_t         body_len, body_cap;
    bool           too_big;
    bool           body_done; /* BODY_COMPLETION seen */
    /* response */
    int    status;
    char  *resp;
    size_t resp_len;
    int    ri;        /* index in routes[], -1: none */
    int    retry_s;   /* > 0: a Retry-After header */
    bool   throttled; /* 429: too many wrong keys from the address */
    /* broadcast/publish in flight */
    struct pubreq *req;
    /* another method's answer pending */
    struct hd_api_call *call;
    /* the body's deadline, from the headers (api.body_timeout_ms) */
    ev_timer body_w;
} hd_http_t;

/* An asynchronous answer; outlives the request (http == NULL then). */
struct hd_api_call {
    hd_http_t *http;
};

/* One API call's publishes. Outlives the HTTP request if the client goes
 * away (http == NULL then) and frees itself when the last reply is in. */
typedef struct pubreq {
    hd_http_t *http;
    size_t     n, done;
    int        err;       /* first error */
    char      *err_text;  /* its Redis error reply, if it was one */
    bool       duplicate; /* an idempotency key repeated: not published */
    json_t    *offsets;   /* array, null where not published */
    bool       broadcast;
} pubreq_t;

static hd_http_t *
http_state(hd_conn_t *c, struct lws *wsi)
{
    if (c->http == NULL) {
        c->http = hd_calloc(1, sizeof(hd_http_t));
        c->http->wsi = wsi;
        c->http->ri = -1;
    }
    return c->http;
}

static void
body_wait_stop(hd_http_t *h)
{
    if (ev_is_active(&h->body_w))
        ev_timer_stop(hd_w.loop, &h->body_w);
}

/*
 * The body did not arrive whole within api.body_timeout_ms of the
 * request's headers (a client trickling it, as a slowloris does with
 * headers): close the connection, as nginx does on client_body_timeout.
 * Called from the loop, outside any lws callback for this wsi, so the
 * close can be synchronous; h is freed by it (CLOSED_HTTP).
 */
static void
body_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    hd_http_t  *h = w->data;
    struct lws *wsi = h->wsi;
    (void) loop;
    (void) revents;

    if (h->ri >= 0)
        hd_api_inc(routes[h->ri].method, HD_APIR_TIMEOUT);
    hd_log_info("HTTP API: closing a request whose body took longer than "
                "%d ms (%zu bytes in)",
                hd_w.conf->api_body_timeout_ms, h->body_len);
    lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, LWS_TO_KILL_SYNC);
}

static void
http_reset(hd_conn_t *c)
{
    hd_http_t *h = c->http;

    if (h == NULL)
        return;
    body_wait_stop(h);
    if (h->req != NULL)
        h->req->http = NULL;
    if (h->call != NULL)
        h->call->http = NULL;
    free(h->body);
    free(h->resp);
    free(h);
    c->http = NULL;
}

/* Queue a response; it is written on the next writable callback. Counts
 * it for the route's method by result. */
static int
respond(hd_http_t *h, int status, json_t *body)
{
    if (h->ri >= 0) {
        enum hd_api_result r = h->throttled ? HD_APIR_THROTTLED
            : status == 401                 ? HD_APIR_UNAUTHORIZED
            : status >= 500                 ? HD_APIR_ERROR
            : status >= 400                 ? HD_APIR_BAD_REQUEST
            : json_is_true(
                  json_object_get(json_object_get(body, "result"), "partial"))
            ? HD_APIR_PARTIAL
            : HD_APIR_OK;
        hd_api_inc(routes[h->ri].method, r);
    }
    free(h->resp);
    h->resp = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    h->status = status;
    if (h->resp == NULL) {
        /* json_pack or json_dumps failed (out of memory, or a string that
         * is not UTF-8): still answer, and never with an empty 200 */
        static const char fallback[] = "{\"error\":{\"code\":500,"
                                       "\"message\":\"internal error\"}}";
        hd_log_error("HTTP API: cannot encode a %d response", status);
        h->resp = hd_strdup(fallback);
        h->status = 500;
    }
    h->resp_len = strlen(h->resp);
    json_decref(body);
    /* lws 4.1 gives no writable callback to an HTTP connection whose rx
     * is flow-controlled off (hd_api_body_done()): on again first; a
     * pipelined request behind this one stays gated (hd_httpgate.c) */
    lws_rx_flow_control(h->wsi, 1);
    lws_callback_on_writable(h->wsi);
    return 0;
}

static int
respond_error(hd_http_t *h, int status, const char *msg)
{
    if (status >= 400)
        hd_ctr_inc(HD_C_ERRORS);
    return respond(
        h, status,
        json_pack("{s:{s:i, s:s}}", "error", "code", status, "message", msg));
}

static bool
authorized(struct lws *wsi)
{
    const char *key = hd_w.conf->api_key;
    char        hdr[1100];
    int         n;
    size_t      klen;

    n = lws_hdr_copy(wsi, hdr, sizeof(hdr), WSI_TOKEN_HTTP_AUTHORIZATION);
    if (n <= 7 || strncasecmp(hdr, "apikey ", 7) != 0)
        return false;
    klen = strlen(key);
    /* constant time over the key's length; the length itself is public */
    return (size_t) (n - 7) == klen && CRYPTO_memcmp(hdr + 7, key, klen) == 0;
}

/*
 * The API key, throttled per client address (hd_keyguard.h): an address
 * past api.auth_fail_limit wrong keys gets 429 with Retry-After and its
 * key is not compared; every wrong key is logged with the address (never
 * with what was sent). Returns true when the request may go on; else it
 * was answered.
 */
static bool
key_check(hd_http_t *h, struct lws *wsi)
{
    struct sockaddr_storage ss;
    int                     fd = lws_get_socket_fd(wsi);
    bool                    have = hd_realip_get(fd, &ss);
    uint64_t                now = hd_mono_ms();
    unsigned                retry = 0;
    char                    a[64];

    if (have && !hd_keyguard_allowed((struct sockaddr *) &ss, now, &retry)) {
        h->throttled = true;
        h->retry_s = (int) retry;
        respond_error(h, 429,
                      "too many requests with a wrong API key from this "
                      "address; try again later");
        return false;
    }
    if (authorized(wsi))
        return true;
    hd_reject_inc(HD_REJ_AUTH);
    hd_realip_str(fd, a, sizeof(a));
    if (have && hd_keyguard_failed((struct sockaddr *) &ss, now))
        hd_log_warn("HTTP API: %d requests with a missing or wrong API key "
                    "from %s within %d ms: refusing its requests (429) for "
                    "the rest of that time",
                    hd_w.conf->api_auth_fail_limit, a,
                    hd_w.conf->api_auth_fail_window_ms);
    else
        hd_log_info("HTTP API: missing or wrong API key from %s",
                    a[0] ? a : "(unknown address)");
    respond_error(h, 401,
                  "missing or wrong API key (Authorization: apikey <key>)");
    return false;
}

int
hd_api_http(struct lws *wsi, hd_conn_t *c, const char *uri)
{
    hd_http_t *h;
    char       cl[32];

    if (c->http != NULL
        && (c->http->route != R_NONE || c->http->req != NULL
            || c->http->call != NULL || c->http->resp != NULL)) {
        /* a pipelined request while the previous one is unanswered: not
         * supported (one request at a time per connection, as browsers and
         * HTTP libraries do); close rather than mix up two requests */
        hd_log_debug("closing an HTTP connection that pipelined requests");
        return -1;
    }
    h = http_state(c, wsi);

    h->wsi = wsi;
    h->body_done = h->too_big = h->throttled = false; /* a new request */
    h->retry_s = 0;
    h->body_len = 0;
    h->ri = -1;
    for (size_t i = 0; i < NROUTES && hd_w.conf->api_key != NULL; i++)
        if (strcmp(uri, routes[i].path) == 0)
            h->ri = (int) i;
    if (h->ri < 0)
        return respond_error(h, 404,
                             hd_w.conf->api_key == NULL
                                 ? "the HTTP API is disabled (no api.key)"
                                 : "not found; the WebSocket endpoint needs an "
                                   "upgrade with subprotocol herald.v1");
    if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) <= 0)
        return respond_error(h, 405, "use POST");
    if (!key_check(h, wsi))
        return 0;        /* answered: 401 or 429 */
    if (hd_w.overloaded) /* before acting on anything (hd_overload.c) */
        return respond_error(h, 503,
                             "worker overloaded, try again later; "
                             "nothing was done");
    /* lws 4.1 does not finish chunked request bodies on this path: ask
     * for a length instead of leaving the client waiting */
    if (lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0)
        return respond_error(h, 411, "Content-Length required");
    if (strtoull(cl, NULL, 10)
        > (unsigned long long) hd_w.conf->api_max_body_bytes)
        return respond_error(h, HD_ERR_TOO_LARGE, "body too large");
    h->route = routes[h->ri].fn != NULL          ? R_OTHER
        : routes[h->ri].method == HD_API_PUBLISH ? R_PUBLISH
                                                 : R_BROADCAST;
    /* the body follows, and must do so in time */
    body_wait_stop(h);
    ev_timer_init(&h->body_w, body_timeout_cb,
                  hd_w.conf->api_body_timeout_ms / 1000.0, 0.0);
    h->body_w.data = h;
    ev_timer_start(hd_w.loop, &h->body_w);
    return 0;
}

int
hd_api_body(struct lws *wsi, hd_conn_t *c, const void *in, size_t len)
{
    hd_http_t *h = http_state(c, wsi);
    size_t     max = (size_t) hd_w.conf->api_max_body_bytes;

    if (h->route == R_NONE || h->too_big || len == 0)
        return 0;
    if (h->body_len + len > max) {
        h->too_big = true; /* keep reading, answer at completion */
        hd_free(h->body);
        h->body_len = h->body_cap = 0;
        return 0;
    }
    if (h->body_len + len > h->body_cap) {
        h->body_cap = h->body_len + len > 1024 ? (h->body_len + len) * 2 : 1024;
        if (h->body_cap > max)
            h->body_cap = max;
        h->body = hd_realloc(h->body, h->body_cap);
    }
    memcpy(h->body + h->body_len, in, len);
    h->body_len += len;
    return 0;
}

typedef struct pubarg {
    pubreq_t *req;
    size_t    i;
} pubarg_t;

static void
req_finish(pubreq_t *r)
{
    hd_http_t *h = r->http;

    if (h != NULL) {
        h->req = NULL;
        if (r->err != 0) {
            /* the status and the body's code agree: 503 when Redis was
             * unavailable, 500 when it refused otherwise */
            int  status = r->err == HD_ERR_UNAVAILABLE ? 503 : 500;
            char msg[300];
            snprintf(msg, sizeof(msg), "%s%.180s%s",
                     r->err_text ? "redis refused the publish: "
                                 : "redis unavailable",
                     r->err_text ? r->err_text : "",
                     r->broadcast ? "; see result for what was published"
                                  : "; not published");
            json_t *body = json_pack("{s:{s:i, s:s}}", "error", "code", status,
                                     "message", msg);
            if (r->broadcast && body != NULL)
                json_object_set_new(body, "result",
                                    json_pack("{s:O}", "offsets", r->offsets));
            hd_ctr_inc(HD_C_ERRORS);
            respond(h, status, body);
        } else if (r->broadcast) {
            respond(h, 200,
                    json_pack("{s:{s:O}}", "result", "offsets", r->offsets));
        } else if (r->duplicate) {
            respond(h, 200,
                    json_pack("{s:{s:O, s:b}}", "result", "offset",
                              json_array_get(r->offsets, 0), "duplicate", 1));
        } else {
            respond(h, 200,
                    json_pack("{s:{s:O}}", "result", "offset",
                              json_array_get(r->offsets, 0)));
        }
    }
    json_decref(r->offsets);
    free(r->err_text);
    free(r);
}

static void
one_done(int err, uint64_t offset, const char *epoch, void *arg)
{
    pubarg_t *a = arg;
    pubreq_t *r = a->req;
    (void) epoch;

    if (err != 0) {
        if (r->err == 0) {
            r->err = err;
            if (hd_pubsub_error() != NULL)
                r->err_text = hd_strdup(hd_pubsub_error());
        }
    } else {
        json_array_set_new(r->offsets, a->i, json_integer((json_int_t) offset));
        r->duplicate |= hd_pubsub_duplicate();
    }
    free(a);
    if (++r->done == r->n)
        req_finish(r);
}

/* One API call between its body and its publishes. */
typedef struct api_call {
    json_t          *root;  /* the body */
    const char      *idem;  /* "idempotency_key", borrowed from root */
    json_t          *chans; /* the channel names (a reference) */
    hd_publisher_t   who;
    hd_pub_target_t *targets;
    size_t           n;
    char            *text; /* the data, encoded once for every channel */
} api_call_t;

static int
api_fail(hd_pub_error_t *e, const char *msg)
{
    e->code = HD_ERR_BAD_REQUEST;
    snprintf(e->msg, sizeof(e->msg), "%s", msg);
    return -EINVAL;
}

/* The body: a JSON object with an optional "tenant" (the API publishes as
 * the server, for any tenant) and "data". */
static int
parse_body(hd_http_t *h, api_call_t *a, hd_pub_error_t *e)
{
    json_error_t jerr;
    json_t      *jt;

    a->root = json_loadb(h->body ? h->body : "", h->body_len,
                         JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(a->root)) {
        e->code = HD_ERR_BAD_REQUEST;
        snprintf(e->msg, sizeof(e->msg), "body must be a JSON object%s%s",
                 a->root ? "" : ": ", a->root ? "" : jerr.text);
        return -EINVAL;
    }
    a->who.server = true;
    jt = json_object_get(a->root, "tenant");
    if (jt != NULL) {
        if (!json_is_string(jt)
            || !hd_tenant_valid(json_string_value(jt), json_string_length(jt)))
            return api_fail(e, "\"tenant\" must match [A-Za-z0-9_.-]{1,64}");
        a->who.tenant = json_string_value(jt);
    }
    if (h->route == R_OTHER)
        return 0; /* the handler reads the rest */
    if (hd_pub_idem_key(json_object_get(a->root, "idempotency_key"), &a->idem,
                        e)
        < 0)
        return -EINVAL;
    a->text = hd_pub_encode(json_object_get(a->root, "data"), e);
    return a->text != NULL ? 0 : -EINVAL;
}

/* "channel" (publish) or "channels" (broadcast), every one resolved
 * before anything is published. */
static int
parse_targets(hd_http_t *h, api_call_t *a, hd_pub_error_t *e)
{
    bool        one = h->route == R_PUBLISH;
    const char *invalid = one ? "\"channel\" must be a valid channel name"
                              : "\"channels\" holds an invalid channel name";

    if (one) {
        a->chans = json_array();
        if (!json_is_string(json_object_get(a->root, "channel")))
            return api_fail(e, invalid);
        json_array_append(a->chans, json_object_get(a->root, "channel"));
    } else {
        a->chans = json_incref(json_object_get(a->root, "channels"));
        if (!json_is_array(a->chans) || json_array_size(a->chans) == 0
            || json_array_size(a->chans) > BROADCAST_MAX)
            return api_fail(e,
                            "\"channels\" must be an array of "
                            "1..1000 channel names");
    }
    a->n = json_array_size(a->chans);
    a->targets = hd_calloc(a->n, sizeof(*a->targets));
    for (size_t i = 0; i < a->n; i++) {
        json_t *jc = json_array_get(a->chans, i);
        if (!json_is_string(jc))
            return api_fail(e, invalid);
        if (hd_pub_resolve(&a->who, json_string_value(jc),
                           json_string_length(jc), true, &a->targets[i], e)
            < 0)
            return e->why == HD_PUB_INVALID ? api_fail(e, invalid) : -EACCES;
    }
    return 0;
}

/* Publish to every target; the response goes out when the last reply is
 * in (req_finish). */
static void
publish_all(hd_http_t *h, api_call_t *a)
{
    pubreq_t *r = hd_calloc(1, sizeof(*r));

    r->http = h;
    r->n = a->n;
    r->broadcast = h->route == R_BROADCAST;
    r->offsets = json_array();
    for (size_t i = 0; i < a->n; i++)
        json_array_append_new(r->offsets, json_null());
    h->req = r;
    for (size_t i = 0; i < a->n; i++) {
        pubarg_t *pa = hd_malloc(sizeof(*pa));
        pa->req = r;
        pa->i = i;
        if (hd_pub_publish(&a->who, &a->targets[i], a->text, strlen(a->text),
                           a->idem, one_done, pa)
            < 0)
            one_done(HD_ERR_UNAVAILABLE, 0, NULL, pa);
    }
}

/* The API front end of the publish path (hd_publish.h). */
int
hd_api_body_done(struct lws *wsi, hd_conn_t *c)
{
    hd_http_t     *h = http_state(c, wsi);
    api_call_t     a = { 0 };
    hd_pub_error_t e = { 0 };
    int            rc = 0;

    if (h->body_done) {
        /* lws 4.1 signals the completion again, in a loop, while more
         * requests sit pipelined behind this one: acting on it published
         * the body again each time. One request at a time: close. */
        hd_log_debug("closing an HTTP connection that pipelined requests");
        return -1;
    }
    h->body_done = true;
    body_wait_stop(h);
    /* the request is read whole and the next one waits in the kernel
     * (hd_httpgate.c): do not let lws poll the socket until the answer is
     * out, or it spins on a readable socket it must not read */
    if (h->resp == NULL && hd_httpgate_waiting(lws_get_socket_fd(wsi)))
        lws_rx_flow_control(wsi, 0);
    if (h->route == R_NONE)
        return 0;
    if (h->too_big)
        return respond_error(h, HD_ERR_TOO_LARGE, "body too large");
    if (parse_body(h, &a, &e) < 0)
        goto fail;
    if (h->route == R_OTHER) {
        hd_api_call_t *call = hd_calloc(1, sizeof(*call));
        call->http = h;
        h->call = call;
        routes[h->ri].fn(call, a.root, a.who.tenant);
        goto done;
    }
    if (parse_targets(h, &a, &e) < 0)
        goto fail;
    /* a shard that is down fails only its channels */
    if (!hd_redis_cmd_up_any()) {
        e.code = HD_ERR_UNAVAILABLE;
        snprintf(e.msg, sizeof(e.msg), "redis unavailable, not published");
        goto fail;
    }
    publish_all(h, &a);
    goto done;
fail:
    rc = respond_error(h, e.code, e.msg);
done:
    free(a.text);
    free(a.targets);
    json_decref(a.chans);
    json_decref(a.root);
    return rc;
}

void
hd_api_answer(hd_api_call_t *a, int status, json_t *body)
{
    hd_http_t *h = a->http;

    if (h != NULL) {
        h->call = NULL;
        if (status >= 400)
            hd_ctr_inc(HD_C_ERRORS);
        respond(h, status, body);
    } else {
        json_decref(body);
    }
    free(a);
}

void
hd_api_fail(hd_api_call_t *a, int status, const char *msg)
{
    hd_api_answer(
        a, status,
        json_pack("{s:{s:i, s:s}}", "error", "code", status, "message", msg));
}

int
hd_api_writeable(struct lws *wsi, hd_conn_t *c)
{
    hd_http_t    *h = c->http;
    unsigned char hbuf[LWS_PRE + 512], *start = hbuf + LWS_PRE, *p = start,
                                       *end = hbuf + sizeof(hbuf) - 1;
    unsigned char *body;
    int            rc;

    if (h == NULL || h->resp == NULL) {
        /* draining: the last response is out, the connection can go */
        if (hd_ws_http_closing(wsi) && !lws_partial_buffered(wsi))
            return -1;
        return 0;
    }
    if (lws_add_http_common_headers(wsi, (unsigned int) h->status,
                                    "application/json", h->resp_len, &p, end))
        return -1;
    /* A retiring worker answers every request it accepted, and says this
     * is the connection's last: the client's next request goes to a new
     * connection, which a serving worker accepts. Closing an idle
     * keep-alive connection instead races a request on its way. */
    if (hd_w.draining) {
        hd_ws_http_set_closing(wsi);
        if (lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
                                         (const unsigned char *) "close", 5, &p,
                                         end))
            return -1;
    }
    if (h->retry_s > 0) {
        char ra[16];
        int  n = snprintf(ra, sizeof(ra), "%d", h->retry_s);
        if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_RETRY_AFTER,
                                         (unsigned char *) ra, n, &p, end))
            return -1;
    }
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    body = hd_malloc(LWS_PRE + h->resp_len);
    memcpy(body + LWS_PRE, h->resp, h->resp_len);
    rc = lws_write(wsi, body + LWS_PRE, h->resp_len, LWS_WRITE_HTTP_FINAL);
    free(body);
    http_reset(c);
    if (rc < 0)
        return -1;
    if (hd_ws_http_closing(wsi)) {
        lws_callback_on_writable(wsi); /* close once it is all out */
        return 0;
    }
    if (lws_http_transaction_completed(wsi))
        return -1;
    hd_wsguard_http_done(lws_get_socket_fd(wsi));
    hd_httpgate_release(lws_get_socket_fd(wsi));
    lws_rx_flow_control(wsi, 1); /* the next pipelined request, if any */
    return 0;
}

void
hd_api_closed(hd_conn_t *c)
{
    http_reset(c);
}
