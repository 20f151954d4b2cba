/*
 * The message layer: JSON commands, newline-separated within a frame.
 *   {"id": <uint>, "method": "<name>", "params": {...}}
 * Every command gets exactly one reply with its id:
 *   {"id": N, "result": {...}}  or  {"id": N, "error": {"code": C, "message": "..."}}
 * Input that has no usable id (malformed JSON, not an object, no id) gets
 * an error without an id. docs/protocol.md is the reference.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <libwebsockets.h>

#include "hd_admit.h"
#include "hd_alloc.h"
#include "hd_chname.h"
#include "hd_cluster.h"
#include "hd_cmd.h"
#include "hd_presence.h"
#include "hd_envelope.h"
#include "hd_strbuf.h"
#include "hd_auth.h"
#include "hd_backend.h"
#include "hd_proxyreply.h"
#include "hd_jwt.h"
#include "hd_log.h"
#include "hd_metrics.h"
#include "hd_proto.h"
#include "hd_publish.h"
#include "hd_pubsub.h"
#include "hd_redis.h"
#include "hd_time.h"
#include "hd_version.h"
#include "hd_worker_int.h"
#include "hd_wsguard.h"

typedef struct cmd {
    hd_conn_t *conn;
    json_int_t id;
    bool       has_id;
    json_t    *params; /* borrowed; may be NULL */
} cmd_t;

typedef void (*method_fn)(cmd_t *cmd);

/* A command waiting for Redis. The connection may close first: it then
 * clears op->conn and the reply is dropped when Redis answers. */
typedef struct hd_op {
    struct hd_op *prev, *next;
    hd_conn_t    *conn;
    int64_t       id;
    int64_t       since;   /* history: since.offset, or -1 */
    uint32_t      rec_seq; /* recover: the subscription's read */
} hd_op_t;

static void
send_json(hd_conn_t *c, json_t *root)
{
    char   stackbuf[2048];
    size_t n = json_dumpb(root, stackbuf, sizeof(stackbuf), JSON_COMPACT);

    if (n == 0)
        return;
    if (n <= sizeof(stackbuf)) {
        hd_conn_reply(c, stackbuf, n);
    } else {
        char *s = json_dumps(root, JSON_COMPACT);
        if (s != NULL) {
            hd_conn_reply(c, s, strlen(s));
            free(s);
        }
    }
}

static void
send_error(hd_conn_t *c, bool has_id, int64_t id, int code, const char *msg)
{
    json_t *root = json_object();

    hd_ctr_inc(HD_C_ERRORS);
    if (has_id)
        json_object_set_new(root, "id", json_integer(id));
    json_object_set_new(root, "error",
                        json_pack("{s:i, s:s}", "code", code, "message", msg));
    send_json(c, root);
    json_decref(root);
}

static void reply_error(cmd_t *cmd, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
reply_error(cmd_t *cmd, int code, const char *fmt, ...)
{
    char    msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    send_error(cmd->conn, cmd->has_id, cmd->id, code, msg);
}

/* Takes the reference to result. */
static void
send_result(hd_conn_t *c, int64_t id, json_t *result)
{
    json_t *root = json_pack("{s:I, s:o}", "id", (json_int_t) id, "result",
                             result);
    send_json(c, root);
    json_decref(root);
}

/* ---- what the channel table reports (hd_proto_chan_hooks) ------------------ */

/* The pending subscription a server id belongs to. */
static const hd_chan_t *
server_sub_chan(hd_conn_t *c, int64_t id)
{
    for (uint32_t i = 0; i < c->nsubs; i++)
        if (c->subs[i].state == HD_SUB_PENDING && c->subs[i].cmd_id == id)
            return c->subs[i].chan;
    return NULL;
}

static void
server_push(hd_conn_t *c, const hd_chan_t *ch, const char *what, json_t *o)
{
    json_t *root = json_pack("{s:{s:s%, s:o}}", "push", "channel", ch->name,
                             ch->name_len, what, o);
    send_json(c, root);
    json_decref(root);
    hd_conn_want_write(c);
}

static void
chan_failed(hd_conn_t *c, int64_t id, int code, const char *msg)
{
    const hd_chan_t *ch;

    if (id < 0) {
        if ((ch = server_sub_chan(c, id)) != NULL)
            server_push(c, ch, "unsubscribe",
                        json_pack("{s:i, s:s}", "code", code, "reason", msg));
        return;
    }
    send_error(c, true, id, code, msg);
    hd_conn_want_write(c);
}

static void
chan_subscribed(hd_conn_t *c, int64_t id, uint64_t offset, const char *epoch)
{
    const hd_chan_t *ch;

    if (id < 0) {
        if ((ch = server_sub_chan(c, id)) != NULL)
            server_push(c, ch, "subscribe",
                        json_pack("{s:I, s:s}", "offset", (json_int_t) offset,
                                  "epoch", epoch));
        return;
    }
    send_result(
        c, id,
        json_pack("{s:I, s:s}", "offset", (json_int_t) offset, "epoch", epoch));
    hd_conn_want_write(c);
}

static void
chan_gap(hd_conn_t *c, const hd_chan_t *ch, uint64_t from, uint64_t to,
         const char *epoch)
{
    char buf[512];
    int  n = snprintf(buf, sizeof(buf),
                      "{\"push\":{\"channel\":\"%.*s\",\"gap\":{\"from\":%llu,"
                       "\"to\":%llu,\"epoch\":\"%s\"}}}",
                      (int) ch->name_len, ch->name, (unsigned long long) from,
                      (unsigned long long) to, epoch);
    if (n > 0 && (size_t) n < sizeof(buf)) {
        hd_conn_reply(c, buf, (size_t) n);
        hd_conn_want_write(c);
    }
}

static void
chan_deliver(hd_conn_t *c, hd_msg_t *m)
{
    if (hd_conn_enqueue(c, m) < 0) {
        hd_conn_close(c, HD_CLOSE_SLOW_CONSUMER,
                      "slow consumer: outbound queue full");
        return;
    }
    hd_conn_want_push(c);
}

/* A join/leave push: not for the client it is about. */
static void
chan_event(hd_conn_t *c, hd_msg_t *m, const char *client, size_t client_len)
{
    char   cid[HD_CLIENT_ID_MAX];
    size_t n = hd_cluster_client_id(c, cid);

    if (n == client_len && memcmp(cid, client, n) == 0)
        return;
    chan_deliver(c, m);
}

static int chan_recover(hd_conn_t *c, uint32_t sub_i);

const hd_chan_hooks_t hd_proto_chan_hooks = {
    .subscribed = chan_subscribed,
    .failed = chan_failed,
    .gap = chan_gap,
    .recover = chan_recover,
    .deliver = chan_deliver,
    .live = hd_presence_live,
    .left = hd_presence_left,
    .event = chan_event,
};

/* ---- ops ------------------------------------------------------------------ */

static hd_op_t *
op_new(hd_conn_t *c, int64_t id)
{
    hd_op_t *op = hd_calloc(1, sizeof(*op));
    op->conn = c;
    op->id = id;
    op->next = c->ops;
    if (c->ops != NULL)
        c->ops->prev = op;
    c->ops = op;
    return op;
}

/* Detach and free; returns the connection (NULL if it closed meanwhile). */
static hd_conn_t *
op_done(hd_op_t *op)
{
    hd_conn_t *c = op->conn;

    if (c != NULL) {
        if (op->prev != NULL)
            op->prev->next = op->next;
        else
            c->ops = op->next;
        if (op->next != NULL)
            op->next->prev = op->prev;
    }
    free(op);
    return c;
}

static void
conn_closed(hd_conn_t *c)
{
    for (hd_op_t *op = c->ops; op != NULL; op = op->next)
        op->conn = NULL;
    c->ops = NULL;
}

/* ---- connection timers ------------------------------------------------------ */

/*
 * A connection's timer is no libev timer (48 bytes and a heap entry per
 * connection, a million of them): a deadline in hd_conn_t's first line
 * that the heartbeat sweep, which reads that line of every connection
 * once a second anyway, checks (hd_proto_conn_due()). So it fires up to
 * one sweep (1 s) late. The deadline is 32 bits of hd_mono_ms(),
 * compared modulo 2^32, so one is at most HD_TIMER_MAX_MS ahead; a later
 * one is re-armed when that passes.
 */
#define HD_TIMER_MAX_MS (1u << 30) /* ~12 days */

static void
timer_in(hd_conn_t *c, uint64_t in_ms)
{
    c->due_ms =
        (uint32_t) (hd_mono_ms()
                    + (in_ms < HD_TIMER_MAX_MS ? in_ms : HD_TIMER_MAX_MS));
    c->timer_on = true;
}

/*
 * After connect the timer runs on the token's clock: first at
 * exp - auth.refresh_window_s, to ask the client for a fresh token (the
 * refresh push), then at exp, to close with 4003 unless a refresh moved
 * exp meanwhile. Returns the seconds still to wait (0: due now).
 */
static double
token_wait(const hd_conn_t *c)
{
    double at = (double) c->claims->exp;

    if (!c->refresh_pushed)
        at -= (double) hd_w.conf->auth_refresh_window_s;
    at -= hd_wall_sec();
    return at > 0 ? at : 0;
}

static void
arm_token_timer(hd_conn_t *c)
{
    timer_in(c, (uint64_t) (token_wait(c) * 1000.0));
}

static void
conn_timer_fire(hd_conn_t *c)
{
    char buf[96];
    int  n;

    if (!c->connected) {
        hd_conn_close(c, HD_CLOSE_CONNECT_TIMEOUT,
                      "no connect command in time");
    } else if (c->claims == NULL) {
        return; /* a proxied connection without expiry */
    } else if (token_wait(c) > 0) {
        arm_token_timer(c); /* a far deadline, armed in steps */
    } else if (!c->refresh_pushed) {
        c->refresh_pushed = true;
        n = snprintf(buf, sizeof(buf),
                     "{\"push\":{\"refresh\":{\"expires_at\":%lld}}}",
                     (long long) c->claims->exp);
        hd_conn_reply(c, buf, (size_t) n);
        hd_conn_want_write(c);
        arm_token_timer(c);
    } else {
        hd_conn_close(c, HD_CLOSE_TOKEN_EXPIRED,
                      "token expired, reconnect with a new one");
    }
}

void
hd_proto_conn_due(hd_conn_t *c, uint64_t now_ms)
{
    if (!c->timer_on || (int32_t) ((uint32_t) now_ms - c->due_ms) < 0)
        return;
    c->timer_on = false;
    conn_timer_fire(c);
}

void
hd_proto_conn_open(hd_conn_t *c)
{
    if (!hd_w.conf->auth_allow_anonymous)
        timer_in(c, (uint64_t) hd_w.conf->connect_ms);
}

void
hd_proto_conn_release(hd_conn_t *c)
{
    c->timer_on = false;
    hd_backend_conn_gone(c);
    conn_closed(c);
    hd_chan_leave_all(c);
    hd_free(c->claims); /* one block (hd_jwt_claims_pack()) */
}

/* ---- permissions ------------------------------------------------------------ */

/* Anonymous use: allowed by the config and no connect was made. */
static bool
may_act(cmd_t *cmd)
{
    if (cmd->conn->connected || hd_w.conf->auth_allow_anonymous)
        return true;
    reply_error(cmd, HD_ERR_UNAUTHORIZED, "send \"connect\" first");
    return false;
}

static const char *
param_str(cmd_t *cmd, const char *name, size_t *len)
{
    json_t *v = cmd->params ? json_object_get(cmd->params, name) : NULL;

    if (!json_is_string(v))
        return NULL;
    *len = json_string_length(v);
    return json_string_value(v);
}

/* The connection as a publisher (hd_publish.h). */
static void
publisher_of(const hd_conn_t *c, hd_publisher_t *who)
{
    who->server = false;
    who->anonymous = !c->connected || c->anonymous;
    who->claims = c->claims;
    who->tenant = c->claims ? c->claims->tenant : NULL;
}

/*
 * Resolve params.channel for the connection (hd_pub_resolve(): validity,
 * namespace, anonymous clients, the token's allow-list and, with publish,
 * client publishing) and build its Redis key. On success fills key and
 * the target; otherwise replies and returns -EINVAL, -ENAMETOOLONG or
 * hd_pub_resolve()'s -EACCES.
 */
static int
resolve_channel(cmd_t *cmd, bool publish, hd_pub_target_t *t, char *key,
                size_t *key_len, size_t *name_off)
{
    hd_publisher_t who;
    hd_pub_error_t e;
    const char    *chan;
    size_t         chan_len;
    int            rc;

    chan = param_str(cmd, "channel", &chan_len);
    if (chan == NULL) {
        reply_error(cmd, HD_ERR_BAD_REQUEST, "\"channel\" must be a string");
        return -EINVAL;
    }
    publisher_of(cmd->conn, &who);
    rc = hd_pub_resolve(&who, chan, chan_len, publish, t, &e);
    if (rc < 0) {
        reply_error(cmd, e.code, "%s", e.msg);
        return rc;
    }
    *key_len = hd_pub_key(&who, t, key, name_off);
    if (*key_len == 0) {
        reply_error(cmd, HD_ERR_BAD_REQUEST, "channel name too long");
        return -ENAMETOOLONG;
    }
    return 0;
}

/* ---- methods ------------------------------------------------------------------ */

static void
m_ping(cmd_t *cmd)
{
    send_result(cmd->conn, cmd->id,
                json_pack("{s:i}", "worker", (int) hd_w.id));
}

/*
 * The end of a successful connect (token, anonymous, or the proxy's yes):
 * admission limits, the token clock, the result.
 */
static void
connect_finish(hd_conn_t *c, int64_t id)
{
    const hd_conf_t *conf = hd_w.conf;
    char             client[HD_CLIENT_ID_MAX];
    json_t          *result;
    bool             expires = c->claims != NULL && c->claims->exp != INT64_MAX;

    if (c->claims != NULL) {
        const char *what = NULL;
        if (hd_admit_connect(lws_get_socket_fd(c->wsi), c->claims->sub,
                             c->claims->tenant, &what)
            < 0) {
            send_error(c, true, id, HD_ERR_LIMIT, "limit reached");
            hd_log_debug("connect refused: limit reached: %s", what);
            hd_conn_close_after_flush(c, HD_CLOSE_CONN_LIMIT,
                                      "connection limit");
            hd_free(c->claims);
            return;
        }
    }
    c->connected = true;
    /* the connect deadline becomes the token's clock (a proxied
     * connection without expires_at has none) */
    c->timer_on = false;
    if (expires)
        arm_token_timer(c);
    hd_cluster_client_id(c, client);
    result = json_pack("{s:s, s:i, s:s, s:i}", "client", client, "worker",
                       (int) hd_w.id, "version", HD_VERSION, "ping_interval_ms",
                       conf->ping_interval_ms);
    if (expires) {
        json_object_set_new(result, "expires_at",
                            json_integer((json_int_t) c->claims->exp));
        json_object_set_new(result, "refresh", json_true());
    }
    send_result(c, id, result);
}

/* herald_proxy_requests_total: the transport counts timeouts, errors
 * and busy refusals; the verdicts are counted here. */
static void
proxy_count(int v, const char *body)
{
    if (v == HD_PROXY_ALLOW)
        hd_proxy_result_inc(HD_PXR_ALLOWED);
    else if (v == HD_PROXY_DENY)
        hd_proxy_result_inc(HD_PXR_REFUSED);
    else if (body != NULL)
        hd_proxy_result_inc(HD_PXR_INVALID);
}

/* The backend's answer to a proxied connect. */
static void
connect_proxy_cb(hd_conn_t *c, const char *body, size_t len, const char *why,
                 int64_t id, void *arg)
{
    hd_jwt_claims_t claims;
    char            msg[HD_PROXY_MSG_MAX + 1];
    int             code = 0, v;
    (void) arg;

    c->proxy_connecting = false;
    v = body == NULL
        ? HD_PROXY_GARBAGE
        : hd_proxy_parse_connect(body, len,
                                 (int64_t) (hd_wall_ns() / 1000000000ull),
                                 &claims, &code, msg, sizeof(msg));
    proxy_count(v, body);
    if (v == HD_PROXY_ALLOW) {
        c->claims = hd_jwt_claims_pack(&claims);
        connect_finish(c, id);
    } else if (v == HD_PROXY_DENY) {
        hd_reject_inc(HD_REJ_AUTH);
        send_error(c, true, id, code, msg);
        hd_conn_close_after_flush(c, HD_CLOSE_INVALID_TOKEN, "refused");
    } else {
        /* slow, down, 5xx, garbage: nothing the client did; retry later */
        if (body != NULL)
            hd_log_warn("connect proxy: the backend's answer is not valid");
        send_error(c, true, id, HD_ERR_UNAVAILABLE,
                   why != NULL ? "connect proxy unavailable, retry later"
                               : "connect proxy answer not valid, retry "
                                 "later");
        hd_conn_close_after_flush(c, HD_CLOSE_TRY_LATER, "proxy unavailable");
    }
    hd_conn_want_write(c);
}

/* Ask the backend (proxy.connect_url) whether c may connect. */
static void
connect_proxy(cmd_t *cmd)
{
    hd_conn_t *c = cmd->conn;
    json_t    *body;
    char      *text;
    char       client[HD_CLIENT_ID_MAX];
    int        rc;

    hd_cluster_client_id(c, client);
    body = json_pack("{s:s, s:s}", "client", client, "transport", "websocket");
    if (cmd->params != NULL && json_object_get(cmd->params, "data") != NULL)
        json_object_set(body, "data", json_object_get(cmd->params, "data"));
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    rc = hd_backend_post(c, hd_w.conf->proxy_connect_url, text,
                         connect_proxy_cb, cmd->id, NULL, NULL);
    free(text);
    if (rc < 0) {
        reply_error(cmd, HD_ERR_UNAVAILABLE, "connect proxy busy, retry later");
        hd_conn_close_after_flush(c, HD_CLOSE_TRY_LATER, "proxy busy");
        return;
    }
    c->proxy_connecting = true;
}

/*
 * A connection token (connect, refresh): any valid token but a
 * subscription token. Those carry "channel" and, made for one channel,
 * usually no "channels" allow-list, which in a connection token means
 * every channel: accepted here, one would widen what the user's own
 * connection token allows.
 */
#define CONN_TOKEN_ESUB (-1000)

static int
conn_token_verify(const char *token, size_t len, hd_jwt_claims_t *claims)
{
    int rc = hd_auth_verify(token, len, claims);

    if (rc == HD_JWT_OK && claims->channel != NULL) {
        hd_jwt_claims_free(claims);
        return CONN_TOKEN_ESUB;
    }
    return rc;
}

static const char *
conn_token_strerror(int rc)
{
    return rc == CONN_TOKEN_ESUB
        ? "a subscription token (\"channel\" claim) is not a connection "
          "token"
        : hd_jwt_strerror(rc);
}

static void
m_connect(cmd_t *cmd)
{
    hd_conn_t       *c = cmd->conn;
    const hd_conf_t *conf = hd_w.conf;
    const char      *token;
    size_t           tlen;
    hd_jwt_claims_t  claims;
    int              rc;

    if (c->connected || c->proxy_connecting) {
        reply_error(cmd, HD_ERR_CONFLICT, "already connected");
        return;
    }
    token = param_str(cmd, "token", &tlen);
    if (token == NULL) {
        json_t *jt = cmd->params ? json_object_get(cmd->params, "token") : NULL;
        /* null is no token; any other non-string is a rejected token:
         * 401 then 4500, the same as a bad one (docs/protocol.md) */
        if (jt != NULL && !json_is_null(jt)) {
            hd_reject_inc(HD_REJ_AUTH);
            reply_error(cmd, HD_ERR_UNAUTHORIZED,
                        "invalid token: \"token\" must be a string");
            hd_conn_close_after_flush(c, HD_CLOSE_INVALID_TOKEN,
                                      "invalid token");
            return;
        }
        if (conf->proxy_connect_url != NULL) { /* null is no token */
            connect_proxy(cmd);
            return;
        }
        if (!conf->auth_allow_anonymous) {
            hd_reject_inc(HD_REJ_AUTH);
            reply_error(cmd, HD_ERR_UNAUTHORIZED, "a token is required");
            hd_conn_close_after_flush(c, HD_CLOSE_INVALID_TOKEN,
                                      "token required");
            return;
        }
        c->anonymous = true;
    } else {
        if (conf->auth_hmac_secret == NULL && conf->nauth_keys == 0
            && conf->auth_jwks_file == NULL && conf->auth_jwks_url == NULL) {
            reply_error(cmd, HD_ERR_UNAUTHORIZED,
                        "this server accepts no "
                        "tokens (anonymous only)");
            hd_conn_close_after_flush(c, HD_CLOSE_INVALID_TOKEN, "no tokens");
            return;
        }
        rc = conn_token_verify(token, tlen, &claims);
        if (rc != HD_JWT_OK) {
            hd_reject_inc(HD_REJ_AUTH);
            hd_log_debug("connect rejected from %s: %s", hd_conn_log_addr(c),
                         conn_token_strerror(rc));
            reply_error(cmd, HD_ERR_UNAUTHORIZED, "invalid token: %s",
                        conn_token_strerror(rc));
            hd_conn_close_after_flush(c, HD_CLOSE_INVALID_TOKEN,
                                      "invalid token");
            return;
        }
        c->claims = hd_jwt_claims_pack(&claims);
    }
    connect_finish(c, cmd->id);
}

/*
 * refresh: a new token for the same sub and tenant moves the connection's
 * expiry (and its claims: channels, publish) without a reconnect. A bad
 * token is an error, not a close: the old token still holds until its exp.
 */
static void refresh_sub(cmd_t *cmd, const char *chan, size_t chan_len);

static void
m_refresh(cmd_t *cmd)
{
    hd_conn_t      *c = cmd->conn;
    const char     *token;
    size_t          tlen;
    hd_jwt_claims_t claims;
    int             rc;

    if (!c->connected || c->claims == NULL) {
        reply_error(cmd, HD_ERR_UNAUTHORIZED,
                    "refresh needs a connection made with a token");
        return;
    }
    if (json_object_get(cmd->params, "channel") != NULL) {
        const char *chan = param_str(cmd, "channel", &tlen);
        if (chan == NULL || !hd_chname_valid(chan, tlen)) {
            reply_error(cmd, HD_ERR_BAD_REQUEST,
                        "\"channel\" must be a valid channel name");
            return;
        }
        refresh_sub(cmd, chan, tlen);
        return;
    }
    token = param_str(cmd, "token", &tlen);
    if (token == NULL) {
        reply_error(cmd, HD_ERR_BAD_REQUEST, "\"token\" must be a string");
        return;
    }
    rc = conn_token_verify(token, tlen, &claims);
    if (rc != HD_JWT_OK) {
        hd_reject_inc(HD_REJ_AUTH);
        reply_error(cmd, HD_ERR_UNAUTHORIZED, "invalid token: %s",
                    conn_token_strerror(rc));
        return;
    }
    if (strcmp(claims.sub, c->claims->sub) != 0
        || (claims.tenant == NULL) != (c->claims->tenant == NULL)
        || (claims.tenant != NULL
            && strcmp(claims.tenant, c->claims->tenant) != 0)) {
        hd_jwt_claims_free(&claims);
        reply_error(cmd, HD_ERR_FORBIDDEN,
                    "the token is for another sub or tenant");
        return;
    }
    hd_free(c->claims);
    c->claims = hd_jwt_claims_pack(&claims);
    c->refresh_pushed = false;
    arm_token_timer(c);
    send_result(c, cmd->id,
                json_pack("{s:I}", "expires_at", (json_int_t) c->claims->exp));
}

static int
find_sub(hd_conn_t *c, const char *key, size_t key_len)
{
    for (uint32_t i = 0; i < c->nsubs; i++)
        if (c->subs[i].chan->key_len == key_len
            && memcmp(c->subs[i].chan->key, key, key_len) == 0)
            return (int) i;
    return -1; /* "not subscribed": an index sentinel, not an error */
}

/*
 * A subscription token (namespace option subscribe_token): a JWT from the
 * same key set and policy whose "channel" is exactly params.channel and
 * whose sub and tenant are the connection's. Returns 0 with its exp, or
 * replies (401 not valid, 403 not for this channel or user) and returns
 * -EACCES.
 */
static int
verify_sub_token(cmd_t *cmd, const char *chan, size_t chan_len, int64_t *exp)
{
    hd_conn_t      *c = cmd->conn;
    const char     *tok;
    size_t          tlen;
    hd_jwt_claims_t cl;
    int             rc;

    tok = param_str(cmd, "token", &tlen);
    if (tok == NULL) {
        reply_error(cmd, HD_ERR_FORBIDDEN,
                    "this namespace needs a subscription token (\"token\")");
        return -EACCES;
    }
    if (c->claims == NULL) {
        reply_error(cmd, HD_ERR_FORBIDDEN,
                    "subscription tokens need a connection made with a token");
        return -EACCES;
    }
    rc = hd_auth_verify(tok, tlen, &cl);
    if (rc != HD_JWT_OK) {
        reply_error(cmd, HD_ERR_UNAUTHORIZED, "invalid subscription token: %s",
                    hd_jwt_strerror(rc));
        return -EACCES;
    }
    rc = 0;
    if (cl.channel == NULL || strlen(cl.channel) != chan_len
        || memcmp(cl.channel, chan, chan_len) != 0) {
        reply_error(cmd, HD_ERR_FORBIDDEN,
                    "the subscription token is for another channel");
        rc = -EACCES;
    } else if (strcmp(cl.sub, c->claims->sub) != 0
               || (cl.tenant == NULL) != (c->claims->tenant == NULL)
               || (cl.tenant != NULL
                   && strcmp(cl.tenant, c->claims->tenant) != 0)) {
        reply_error(cmd, HD_ERR_FORBIDDEN,
                    "the subscription token is for another user");
        rc = -EACCES;
    }
    *exp = cl.exp;
    hd_jwt_claims_free(&cl);
    return rc;
}

static int
check_sub_token(cmd_t *cmd, int64_t *exp)
{
    size_t      chan_len = 0;
    const char *chan = param_str(cmd, "channel", &chan_len);

    return verify_sub_token(cmd, chan, chan_len, exp);
}

/* refresh with "channel": a new subscription token for a subscription. */
static void
refresh_sub(cmd_t *cmd, const char *chan, size_t chan_len)
{
    hd_conn_t *c = cmd->conn;
    char       key[HD_KEY_MAX];
    size_t     key_len, name_off;
    int64_t    exp;
    int        i;

    key_len = hd_pubsub_key(c->claims ? c->claims->tenant : NULL, chan,
                            chan_len, key, sizeof(key), &name_off);
    i = key_len ? find_sub(c, key, key_len) : -1;
    if (i < 0 || c->subs[i].token_exp == 0) {
        reply_error(cmd, HD_ERR_BAD_REQUEST,
                    "not subscribed to that channel with a token");
        return;
    }
    if (verify_sub_token(cmd, chan, chan_len, &exp) < 0)
        return;
    c->subs[i].token_exp = exp;
    c->subs[i].token_pushed = false;
    send_result(c, cmd->id, json_pack("{s:I}", "expires_at", (json_int_t) exp));
}

/*
 * Once a second per connection that has subscription tokens: the refresh
 * push auth.refresh_window_s before a token's exp, and the end of the
 * subscription at exp (an unsubscribe push with code 401).
 */
void
hd_proto_sub_tokens(hd_conn_t *c, int64_t now)
{
    int64_t win = hd_w.conf->auth_refresh_window_s;

    for (uint32_t k = c->nsubs; k-- > 0;) {
        hd_sub_t  *s = &c->subs[k];
        hd_chan_t *ch = s->chan;

        if (s->token_exp == 0)
            continue;
        if (now >= s->token_exp) {
            server_push(c, ch, "unsubscribe",
                        json_pack("{s:i, s:s}", "code", HD_ERR_UNAUTHORIZED,
                                  "reason", "subscription token expired"));
            if (s->state == HD_SUB_PENDING && s->cmd_id >= 0)
                send_error(c, true, s->cmd_id, HD_ERR_UNAUTHORIZED,
                           "subscription token expired");
            hd_chan_leave(c, k);
        } else if (!s->token_pushed && now >= s->token_exp - win) {
            s->token_pushed = true;
            server_push(
                c, ch, "refresh",
                json_pack("{s:I}", "expires_at", (json_int_t) s->token_exp));
        }
    }
}

/* Join (the reply comes when the subscription is live). A join that
 * fails at once has sent its error already (the chan_failed hook) and
 * left no slot to fill in. */
static void
subscribe_join(hd_conn_t *c, int64_t id, const char *key, size_t key_len,
               size_t name_off, const hd_ns_t *ns, uint64_t since,
               const char *epoch, bool jl_off, int64_t token_exp)
{
    hd_chan_t *ch = hd_chan_get(key, key_len, name_off, ns);
    int        si = hd_chan_join(ch, c, id, since, epoch);

    if (si < 0)
        return;
    c->subs[si].jl_off = jl_off;
    c->subs[si].token_exp = token_exp;
    if (token_exp != 0)
        c->has_sub_tokens = true;
}

/* A subscribe waiting for the backend (proxy.subscribe_url). */
typedef struct subp {
    char           key[HD_KEY_MAX];
    size_t         key_len, name_off;
    const hd_ns_t *ns; /* hd_w.conf's: lives as long as the worker */
    uint64_t       since;
    char          *epoch;
    bool           jl_off;
    int64_t        token_exp;
} subp_t;

static void
subscribe_proxy_cb(hd_conn_t *c, const char *body, size_t len, const char *why,
                   int64_t id, void *arg)
{
    subp_t *p = arg;
    char    msg[HD_PROXY_MSG_MAX + 1];
    int     code = 0, v;

    v = body == NULL
        ? HD_PROXY_GARBAGE
        : hd_proxy_parse_subscribe(body, len, &code, msg, sizeof(msg));
    proxy_count(v, body);
    if (v == HD_PROXY_DENY) {
        send_error(c, true, id, code, msg);
    } else if (v != HD_PROXY_ALLOW) {
        if (body != NULL)
            hd_log_warn("subscribe proxy: the backend's answer is not valid");
        send_error(c, true, id, HD_ERR_UNAVAILABLE,
                   why != NULL ? "subscribe proxy unavailable, retry later"
                               : "subscribe proxy answer not valid, retry "
                                 "later");
    } else if (find_sub(c, p->key, p->key_len) >= 0) {
        /* things may have moved while the backend thought */
        send_error(c, true, id, HD_ERR_CONFLICT, "already subscribed");
    } else if (c->nsubs >= (uint32_t) hd_w.conf->max_subscriptions) {
        send_error(c, true, id, HD_ERR_LIMIT, "subscription limit reached");
    } else if (!hd_redis_sub_up_key(p->key, p->key_len)
               || !hd_redis_cmd_up_key(p->key, p->key_len)) {
        /* the channel's shard (redis.shards): others may be down */
        send_error(c, true, id, HD_ERR_UNAVAILABLE, "redis unavailable, retry");
    } else {
        subscribe_join(c, id, p->key, p->key_len, p->name_off, p->ns, p->since,
                       p->epoch, p->jl_off, p->token_exp);
    }
    hd_conn_want_write(c);
    free(p->epoch);
    free(p);
}

/* A request the backend never answered (the connection closed). */
static void
subp_free(void *arg)
{
    subp_t *p = arg;

    free(p->epoch);
    free(p);
}

static void
subscribe_proxy(cmd_t *cmd, const char *key, size_t key_len, size_t name_off,
                const hd_ns_t *ns, uint64_t since, const char *epoch,
                bool jl_off, int64_t token_exp)
{
    hd_conn_t  *c = cmd->conn;
    subp_t     *p = hd_calloc(1, sizeof(*p));
    json_t     *body;
    char       *text, client[HD_CLIENT_ID_MAX];
    size_t      chan_len = 0;
    const char *chan = param_str(cmd, "channel", &chan_len);

    memcpy(p->key, key, key_len);
    p->key_len = key_len;
    p->name_off = name_off;
    p->ns = ns;
    p->since = since;
    p->epoch = epoch != NULL ? hd_strdup(epoch) : NULL;
    p->jl_off = jl_off;
    p->token_exp = token_exp;
    hd_cluster_client_id(c, client);
    body = json_pack("{s:s, s:s%}", "client", client, "channel", chan,
                     chan_len);
    if (c->claims != NULL) {
        json_object_set_new(body, "user", json_string(c->claims->sub));
        if (c->claims->tenant != NULL)
            json_object_set_new(body, "tenant", json_string(c->claims->tenant));
    }
    if (json_object_get(cmd->params, "data") != NULL)
        json_object_set(body, "data", json_object_get(cmd->params, "data"));
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (hd_backend_post(c, hd_w.conf->proxy_subscribe_url, text,
                        subscribe_proxy_cb, cmd->id, p, subp_free)
        < 0) {
        subp_free(p);
        reply_error(cmd, HD_ERR_UNAVAILABLE,
                    "subscribe proxy busy, retry later");
    }
    free(text);
}

static void
m_subscribe(cmd_t *cmd)
{
    hd_conn_t      *c = cmd->conn;
    char            key[HD_KEY_MAX];
    size_t          key_len, name_off;
    const char     *epoch = NULL;
    hd_pub_target_t t;
    json_t         *jrec, *joff, *jep, *jjl;
    uint64_t        since = 0;
    int64_t         token_exp = 0;

    if (!may_act(cmd))
        return;
    if (resolve_channel(cmd, false, &t, key, &key_len, &name_off) < 0)
        return;
    if (t.ns->subscribe_token && check_sub_token(cmd, &token_exp) < 0)
        return;
    jjl = json_object_get(cmd->params, "join_leave");
    if (jjl != NULL && !json_is_boolean(jjl)) {
        reply_error(cmd, HD_ERR_BAD_REQUEST,
                    "\"join_leave\" must be a boolean");
        return;
    }
    jrec = json_object_get(cmd->params, "recover");
    if (jrec != NULL && !json_is_boolean(jrec)) {
        reply_error(cmd, HD_ERR_BAD_REQUEST, "\"recover\" must be a boolean");
        return;
    }
    if (json_is_true(jrec)) {
        joff = json_object_get(cmd->params, "offset");
        jep = json_object_get(cmd->params, "epoch");
        if (!json_is_integer(joff) || json_integer_value(joff) < 0
            || !json_is_string(jep)
            || !hd_epoch_valid(json_string_value(jep),
                               json_string_length(jep))) {
            reply_error(cmd, HD_ERR_BAD_REQUEST,
                        "recover needs \"offset\" (a "
                        "non-negative integer) and \"epoch\" (from an earlier "
                        "subscribe or push)");
            return;
        }
        since = (uint64_t) json_integer_value(joff);
        epoch = json_string_value(jep);
    }
    if (find_sub(c, key, key_len) >= 0) {
        reply_error(cmd, HD_ERR_CONFLICT, "already subscribed");
        return;
    }
    if (c->nsubs >= (uint32_t) hd_w.conf->max_subscriptions) {
        reply_error(cmd, HD_ERR_LIMIT, "subscription limit (%d) reached",
                    hd_w.conf->max_subscriptions);
        return;
    }
    if (!hd_redis_sub_up_key(key, key_len)
        || !hd_redis_cmd_up_key(key, key_len)) {
        reply_error(cmd, HD_ERR_UNAVAILABLE, "redis unavailable, retry");
        return;
    }
    if (t.ns->subscribe_proxy && hd_w.conf->proxy_subscribe_url != NULL) {
        subscribe_proxy(cmd, key, key_len, name_off, t.ns, since, epoch,
                        json_is_false(jjl), token_exp);
        return;
    }
    subscribe_join(c, cmd->id, key, key_len, name_off, t.ns, since, epoch,
                   json_is_false(jjl), token_exp);
}

int
hd_proto_server_subscribe(hd_conn_t *c, const char *key, size_t key_len,
                          size_t name_off, const hd_ns_t *ns, int64_t server_id)
{
    if (find_sub(c, key, key_len) >= 0)
        return -EEXIST;
    if (c->nsubs >= (uint32_t) hd_w.conf->max_subscriptions)
        return -EDQUOT;
    if (!hd_redis_sub_up_key(key, key_len)
        || !hd_redis_cmd_up_key(key, key_len))
        return -EAGAIN;
    /* refused at once: the client had the "unsubscribe" push (chan_failed) */
    if (hd_chan_join(hd_chan_get(key, key_len, name_off, ns), c, server_id, 0,
                     NULL)
        < 0)
        return -EAGAIN;
    return 0;
}

int
hd_proto_server_unsubscribe(hd_conn_t *c, const char *key, size_t key_len)
{
    int        i = find_sub(c, key, key_len);
    hd_chan_t *ch;

    if (i < 0)
        return -ENOENT;
    ch = c->subs[i].chan;
    if (c->subs[i].state == HD_SUB_PENDING && c->subs[i].cmd_id >= 0)
        send_error(c, true, c->subs[i].cmd_id, HD_ERR_CONFLICT,
                   "subscribe cancelled by the server");
    server_push(c, ch, "unsubscribe", json_pack("{s:b}", "server", 1));
    hd_chan_leave(c, (uint32_t) i);
    return 0;
}

static void
m_unsubscribe(cmd_t *cmd)
{
    hd_conn_t  *c = cmd->conn;
    char        key[HD_KEY_MAX];
    size_t      key_len, name_off, chan_len;
    const char *chan;
    int         i;

    if (!may_act(cmd))
        return;
    chan = param_str(cmd, "channel", &chan_len);
    if (chan == NULL || !hd_chname_valid(chan, chan_len)) {
        reply_error(cmd, HD_ERR_BAD_REQUEST,
                    "\"channel\" must be a valid "
                    "channel name");
        return;
    }
    key_len = hd_pubsub_key(c->claims ? c->claims->tenant : NULL, chan,
                            chan_len, key, sizeof(key), &name_off);
    i = key_len ? find_sub(c, key, key_len) : -1;
    if (i >= 0) {
        if (c->subs[i].state == HD_SUB_PENDING)
            send_error(c, true, c->subs[i].cmd_id, HD_ERR_CONFLICT,
                       "subscribe cancelled by unsubscribe");
        hd_chan_leave(c, (uint32_t) i);
    }
    send_result(c, cmd->id, json_object());
}

static void
publish_cb(int err, uint64_t offset, const char *epoch, void *arg)
{
    hd_op_t   *op = arg;
    int64_t    id = op->id;
    hd_conn_t *c = op_done(op);
    (void) epoch;

    if (c == NULL)
        return;
    if (err != 0 && hd_pubsub_error() != NULL) {
        /* name what Redis said (OOM, READONLY...): "unavailable" sent
         * operators looking for an outage that was not there */
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "redis refused the publish: %.180s; "
                 "not published",
                 hd_pubsub_error());
        send_error(c, true, id, err, msg);
    } else if (err != 0)
        send_error(c, true, id, err,
                   err == HD_ERR_UNAVAILABLE
                       ? "redis unavailable, not published"
                       : "publish failed");
    else if (hd_pubsub_duplicate())
        send_result(c, id,
                    json_pack("{s:I, s:b}", "offset", (json_int_t) offset,
                              "duplicate", 1));
    else
        send_result(c, id, json_pack("{s:I}", "offset", (json_int_t) offset));
    hd_conn_want_write(c);
}

/* The WebSocket front end of the publish path (hd_publish.h). */
static void
m_publish(cmd_t *cmd)
{
    hd_conn_t      *c = cmd->conn;
    hd_publisher_t  who;
    hd_pub_target_t t;
    hd_pub_error_t  e;
    const char     *chan;
    size_t          chan_len;
    char           *text;
    const char     *idem;
    hd_op_t        *op;

    if (!may_act(cmd))
        return;
    chan = param_str(cmd, "channel", &chan_len);
    if (chan == NULL) {
        reply_error(cmd, HD_ERR_BAD_REQUEST, "\"channel\" must be a string");
        return;
    }
    publisher_of(c, &who);
    if (hd_pub_resolve(&who, chan, chan_len, true, &t, &e) < 0) {
        reply_error(cmd, e.code, "%s", e.msg);
        return;
    }
    if (!hd_auth_may_publish(c->claims, chan, chan_len)) {
        reply_error(cmd, HD_ERR_FORBIDDEN,
                    "the token does not allow publishing on this channel");
        return;
    }
    text = hd_pub_encode(json_object_get(cmd->params, "data"), &e);
    if (text == NULL) {
        reply_error(cmd, e.code, "%s", e.msg);
        return;
    }
    if (hd_pub_idem_key(json_object_get(cmd->params, "idempotency_key"), &idem,
                        &e)
        < 0) {
        free(text);
        reply_error(cmd, e.code, "%s", e.msg);
        return;
    }
    op = op_new(c, cmd->id);
    if (hd_pub_publish(&who, &t, text, strlen(text), idem, publish_cb, op)
        < 0) {
        op_done(op);
        reply_error(cmd, HD_ERR_UNAVAILABLE,
                    "redis unavailable, not published");
    }
    free(text);
}

/*
 * "publications":[{"offset":N,"data":D},...] from envelopes, keeping only
 * offsets in (after, upto]. Returns how many were written.
 */
static size_t
put_publications(hd_strbuf_t *b, const hd_hist_reply_t *r, uint64_t after,
                 uint64_t upto)
{
    size_t n = 0;

    hd_strbuf_puts(b, "\"publications\":[");
    for (size_t i = 0; i < r->n; i++) {
        hd_envelope_t env;
        if (hd_envelope_decode(r->env[i], r->env_len[i], &env) < 0
            || env.offset <= after || env.offset > upto)
            continue;
        if (n++ > 0)
            hd_strbuf_putc(b, ',');
        hd_strbuf_puts(b, "{\"offset\":");
        hd_strbuf_u64(b, env.offset);
        hd_strbuf_puts(b, ",\"data\":");
        hd_strbuf_append(b, env.data, env.data_len);
        hd_strbuf_putc(b, '}');
    }
    hd_strbuf_putc(b, ']');
    return n;
}

/*
 * Before building a large reply: a connection whose queue is already past
 * its byte cap (a client that asks for history or recovery while not
 * reading) could not take it (hd_conn_enqueue_force()): close it as a
 * slow consumer now, without building the reply at all. Otherwise size
 * the text once from what Redis returned, so building it costs one copy
 * of the reply, not a doubling buffer. True when closed.
 */
static bool
large_reply_start(hd_conn_t *c, hd_strbuf_t *b, const hd_hist_reply_t *r)
{
    size_t need = 256;

    if (c->close_code != 0)
        return true;
    if (c->q_bytes > (size_t) hd_w.conf->outq_bytes) {
        hd_conn_close(c, HD_CLOSE_SLOW_CONSUMER, "slow consumer");
        return true;
    }
    for (size_t i = 0; r != NULL && i < r->n; i++)
        need += r->env_len[i] + 32;
    hd_strbuf_reserve(b, need);
    return false;
}

static void
reply_buf(hd_conn_t *c, hd_strbuf_t *b)
{
    hd_msg_t *m = hd_msg_new(b->p, b->len);
    /* bounded by the recovery cap or the history limit, and the client
     * asked for it: it may pass the queue's byte cap, but only once (a
     * client that asks for more while not reading is a slow consumer) */
    if (hd_conn_enqueue_force(c, m) < 0)
        hd_conn_close(c, HD_CLOSE_SLOW_CONSUMER, "slow consumer");
    hd_msg_unref(m);
    hd_conn_want_write(c);
}

/*
 * The subscription a recovery reply belongs to: matched by the read's
 * sequence number, not by command id alone. A client may reuse an id: a
 * reply for channel A's cancelled subscribe must never be taken for a
 * later subscribe to B with the same id (B would get A's publications and
 * lose its own pushes up to A's offset).
 */
static int
find_pending(hd_conn_t *c, int64_t id, uint32_t rec_seq)
{
    for (uint32_t i = 0; i < c->nsubs; i++)
        if (c->subs[i].state == HD_SUB_PENDING && c->subs[i].recovering
            && c->subs[i].cmd_id == id && c->subs[i].rec_seq == rec_seq)
            return (int) i;
    return -1; /* "none": an index sentinel, not an error */
}

static void
recover_cb(int err, const hd_hist_reply_t *r, void *arg)
{
    hd_op_t    *op = arg;
    int64_t     id = op->id;
    uint32_t    rec_seq = op->rec_seq;
    hd_conn_t  *c = op_done(op);
    int         i;
    hd_sub_t   *s;
    hd_strbuf_t b = HD_STRBUF_INIT;

    if (c == NULL || (i = find_pending(c, id, rec_seq)) < 0)
        return; /* closed, or unsubscribed meanwhile */
    s = &c->subs[i];
    if (err != 0) {
        send_error(c, true, id, err, "redis unavailable, retry");
        hd_chan_leave(c, (uint32_t) i);
        hd_conn_want_write(c);
        return;
    }
    if (large_reply_start(c, &b, r->status == 1 ? r : NULL))
        return;
    hd_strbuf_printf(&b,
                     "{\"id\":%lld,\"result\":{\"recovered\":%s,"
                     "\"offset\":%llu,\"epoch\":\"%s\"",
                     (long long) id, r->status == 1 ? "true" : "false",
                     (unsigned long long) r->offset, r->epoch);
    if (r->status == 1) {
        hd_strbuf_putc(&b, ',');
        put_publications(&b, r, s->min_offset, r->offset);
    }
    hd_strbuf_puts(&b, "}}");
    reply_buf(c, &b);
    hd_strbuf_free(&b);
    hd_chan_activate(c, (uint32_t) i, r->offset, r->epoch);
}

/* The recover hook: the recovery read of a recovering member. */
static int
chan_recover(hd_conn_t *c, uint32_t sub_i)
{
    static uint32_t seq;
    hd_sub_t       *s = &c->subs[sub_i];
    hd_chan_t      *ch = s->chan;
    hd_op_t        *op = op_new(c, s->cmd_id);
    int             rc;

    if (++seq == 0) /* 0: no read sent */
        seq = 1;
    s->rec_seq = op->rec_seq = seq;

    rc = hd_pubsub_recover(ch->ns, ch->key, ch->key_len, s->min_offset,
                           s->recover_epoch, (unsigned) hd_w.conf->recovery_max,
                           recover_cb, op);
    if (rc < 0)
        op_done(op);
    return rc;
}

/*
 * With since: the publications after since.offset that history no longer
 * holds (the stream keeps only the latest history_size), as
 * ,"gap":{"from":F,"to":T}, so a reader never takes a partial answer for
 * the whole one. Nothing when the first publication after since is there.
 */
static void
put_history_gap(hd_strbuf_t *b, const hd_hist_reply_t *r, int64_t since)
{
    uint64_t first = r->offset + 1; /* oldest returned; none: past the end */
    uint64_t from = (uint64_t) since + 1;

    if (since < 0 || from > r->offset)
        return;
    for (size_t i = 0; i < r->n; i++) {
        hd_envelope_t env;
        if (hd_envelope_decode(r->env[i], r->env_len[i], &env) == 0
            && env.offset > (uint64_t) since) {
            first = env.offset;
            break;
        }
    }
    if (first <= from)
        return;
    hd_strbuf_printf(b, ",\"gap\":{\"from\":%llu,\"to\":%llu}",
                     (unsigned long long) from,
                     (unsigned long long) (first - 1));
}

static void
history_cb(int err, const hd_hist_reply_t *r, void *arg)
{
    hd_op_t    *op = arg;
    int64_t     id = op->id, since = op->since;
    hd_conn_t  *c = op_done(op);
    hd_strbuf_t b = HD_STRBUF_INIT;

    if (c == NULL)
        return;
    if (err != 0) {
        send_error(c, true, id, err, "redis unavailable, retry");
    } else if (r->status == -1) {
        send_error(c, true, id, HD_ERR_GONE,
                   "the channel's epoch changed: "
                   "that history is gone");
    } else if (!large_reply_start(c, &b, r)) {
        hd_strbuf_printf(&b,
                         "{\"id\":%lld,\"result\":{\"offset\":%llu,"
                         "\"epoch\":\"%s\",",
                         (long long) id, (unsigned long long) r->offset,
                         r->epoch);
        put_publications(&b, r, 0, r->offset);
        put_history_gap(&b, r, since);
        hd_strbuf_puts(&b, "}}");
        reply_buf(c, &b);
        hd_strbuf_free(&b);
    }
    hd_conn_want_write(c);
}

static void
m_history(cmd_t *cmd)
{
    char            key[HD_KEY_MAX];
    size_t          key_len, name_off;
    const char     *epoch;
    const hd_ns_t  *ns;
    hd_pub_target_t t;
    hd_pub_error_t  e;
    int64_t         since;
    unsigned        limit;
    hd_op_t        *op;

    if (!may_act(cmd))
        return;
    if (resolve_channel(cmd, false, &t, key, &key_len, &name_off) < 0)
        return;
    ns = t.ns;
    if (ns->history_size == 0) {
        reply_error(cmd, HD_ERR_FORBIDDEN, "namespace \"%s\" keeps no history",
                    ns->name);
        return;
    }
    if (hd_pub_history_args(cmd->params, ns, &limit, &since, &epoch, &e) < 0) {
        reply_error(cmd, e.code, "%s", e.msg);
        return;
    }
    op = op_new(cmd->conn, cmd->id);
    op->since = since;
    if (hd_pubsub_history(ns, key, key_len, limit, since, epoch, history_cb, op)
        < 0) {
        op_done(op);
        reply_error(cmd, HD_ERR_UNAVAILABLE, "redis unavailable, retry");
    }
}

static void
presence_cb(int err, long long clients, long long users, json_t *entries,
            void *arg)
{
    hd_op_t   *op = arg;
    int64_t    id = op->id;
    size_t     limit = (size_t) op->since;
    hd_conn_t *c = op_done(op);

    if (c == NULL)
        return;
    if (err != 0)
        send_error(c, true, id, err, "redis unavailable, retry");
    else if (limit == 0)
        send_result(c, id,
                    json_pack("{s:I, s:I}", "clients", (json_int_t) clients,
                              "users", (json_int_t) users));
    else
        send_result(c, id,
                    json_pack("{s:O, s:I, s:b}", "clients", entries, "total",
                              (json_int_t) clients, "truncated",
                              (long long) json_array_size(entries) < clients));
    hd_conn_want_write(c);
}

/* presence (limit > 0: the entries) and presence_stats (the counts) */
static void
presence_common(cmd_t *cmd, bool stats)
{
    char            key[HD_KEY_MAX];
    size_t          key_len, name_off, limit = 0;
    hd_pub_target_t t;
    hd_op_t        *op;

    if (!may_act(cmd))
        return;
    if (resolve_channel(cmd, false, &t, key, &key_len, &name_off) < 0)
        return;
    if (!t.ns->presence) {
        reply_error(cmd, HD_ERR_FORBIDDEN, "namespace \"%s\" keeps no presence",
                    t.ns->name);
        return;
    }
    if (!stats) {
        json_t    *jl = json_object_get(cmd->params, "limit");
        json_int_t max = hd_w.conf->api_list_max;
        json_int_t v = jl == NULL ? max
            : json_is_integer(jl) ? json_integer_value(jl)
                                  : 0;
        if (v < 1 || v > max) {
            reply_error(cmd, HD_ERR_BAD_REQUEST,
                        "\"limit\" must be an integer from 1 to %lld",
                        (long long) max);
            return;
        }
        limit = (size_t) v;
    }
    op = op_new(cmd->conn, cmd->id);
    op->since = (int64_t) limit;
    if (hd_presence_read(t.ns, key, key_len, limit, presence_cb, op) < 0) {
        op_done(op);
        reply_error(cmd, HD_ERR_UNAVAILABLE, "redis unavailable, retry");
    }
}

static void
m_presence(cmd_t *cmd)
{
    presence_common(cmd, false);
}

static void
m_presence_stats(cmd_t *cmd)
{
    presence_common(cmd, true);
}

static const struct {
    const char *name;
    method_fn   fn;
} methods[] = {
    { "presence", m_presence },   { "presence_stats", m_presence_stats },
    { "ping", m_ping },           { "connect", m_connect },
    { "subscribe", m_subscribe }, { "unsubscribe", m_unsubscribe },
    { "publish", m_publish },     { "history", m_history },
    { "refresh", m_refresh },
};

/*
 * Token bucket per connection: cmd_rate tokens a second, at most cmd_burst
 * banked. A command without a token is refused (error 429). Refusals with
 * less than a second between them form a streak (a client over the rate
 * keeps getting refused even though a few commands pass as tokens
 * trickle in); a streak that lasts rate_abuse_ms closes the connection
 * with 4004. A client that slows below the rate ends its streak.
 */
static bool
rate_ok(hd_conn_t *c)
{
    const hd_conf_t *conf = hd_w.conf;
    uint64_t         now;

    if (conf->cmd_rate == 0)
        return true;
    now = hd_mono_ms();
    if (c->tokens_ms == 0) {
        c->tokens = conf->cmd_burst;
        c->tokens_ms = now;
    }
    c->tokens += (double) (now - c->tokens_ms) * conf->cmd_rate / 1000.0;
    if (c->tokens > conf->cmd_burst)
        c->tokens = conf->cmd_burst;
    c->tokens_ms = now;
    if (c->over_since_ms != 0
        && (int32_t) ((uint32_t) now - c->last_refusal_ms) > 1000)
        c->over_since_ms = 0; /* the streak is over */
    if (c->tokens >= 1.0) {
        c->tokens -= 1.0;
        return true;
    }
    c->last_refusal_ms = (uint32_t) now;
    if (c->over_since_ms == 0) {
        /* (0 means no streak: an odd start may be 1 ms ahead, so the
         * differences are signed) */
        c->over_since_ms = (uint32_t) now | 1;
    } else if ((int32_t) ((uint32_t) now - c->over_since_ms)
               >= conf->rate_abuse_ms) {
        hd_log_info("closing %s: over the command rate for %d ms",
                    hd_conn_log_addr(c), conf->rate_abuse_ms);
        hd_conn_close(c, HD_CLOSE_RATE_LIMITED, "rate limit exceeded");
    }
    return false;
}

/*
 * Control frames: the pings and pongs a client sent since the last sweep
 * (the heartbeat calls this once a second with what the frame guard
 * counted). lws answers each ping by itself, so without this a client
 * could flood pings without limit. Each takes a token of the command
 * bucket. A sweep that finds the bucket emptied by them refuses like a
 * command would (the streak of rate_ok()) and stops reading the
 * connection until the next sweep, so a flood gets at most about half a
 * second's worth of reads a second; a streak that lasts rate_abuse_ms
 * closes it with 4004.
 */
void
hd_proto_control_frames(hd_conn_t *c, uint32_t n)
{
    const hd_conf_t *conf = hd_w.conf;
    uint64_t         now;

    if (c->rx_paused) {
        /* paused since the last sweep: nothing was read, so this sweep
         * says nothing about the rate; read again, keep the streak */
        c->rx_paused = false;
        lws_rx_flow_control(c->wsi, 1);
        return;
    }
    if (c->close_code != 0)
        return;
    if (n == 0 || conf->cmd_rate == 0) {
        hd_wsguard_quiet(c->fd, false); /* under the rate again */
        return;
    }
    now = hd_mono_ms();
    if (c->tokens_ms == 0) {
        c->tokens = conf->cmd_burst;
        c->tokens_ms = now;
    }
    c->tokens += (double) (now - c->tokens_ms) * conf->cmd_rate / 1000.0;
    if (c->tokens > conf->cmd_burst)
        c->tokens = conf->cmd_burst;
    c->tokens_ms = now;
    if (c->tokens >= (double) n) {
        c->tokens -= (double) n;
        hd_wsguard_quiet(c->fd, false);
        return;
    }
    c->tokens = 0;
    c->last_refusal_ms = (uint32_t) now;
    if (c->over_since_ms == 0) {
        /* (0 means no streak: an odd start may be 1 ms ahead, so the
         * differences are signed) */
        c->over_since_ms = (uint32_t) now | 1;
    } else if ((int32_t) ((uint32_t) now - c->over_since_ms)
               >= conf->rate_abuse_ms) {
        hd_log_info("closing %s: ping/pong frames over the command rate for "
                    "%d ms",
                    hd_conn_log_addr(c), conf->rate_abuse_ms);
        hd_conn_close(c, HD_CLOSE_RATE_LIMITED, "rate limit exceeded");
        return;
    }
    /* over the rate: its pings go unanswered until a sweep finds it
     * under the rate again */
    hd_wsguard_quiet(c->fd, true);
    c->rx_paused = true;
    lws_rx_flow_control(c->wsi, 0);
}

static int
handle_line(const char *line, size_t len, void *arg)
{
    hd_conn_t *c = arg;
    hd_cmd_t   pc;
    cmd_t      cmd = { .conn = c };
    char       err[256];
    int        rc;
    size_t     i;

    hd_ctr_inc(HD_C_MSG_RECEIVED);
    rc = hd_cmd_parse(line, len, &pc, err, sizeof(err));
    cmd.id = pc.id;
    cmd.has_id = pc.has_id;
    cmd.params = pc.params;
    if (c->connected && c->claims != NULL && c->claims->exp != INT64_MAX
        && hd_wall_sec() >= (double) c->claims->exp) {
        /* its close at exp runs on the heartbeat sweep, up to a second
         * late: past exp nothing more is served, a refresh included (a
         * token is good until exp, not until the next sweep) */
        hd_conn_close(c, HD_CLOSE_TOKEN_EXPIRED,
                      "token expired, reconnect with a new one");
        goto done;
    }
    if (!rate_ok(c)) {
        if (c->close_code == 0)
            reply_error(&cmd, HD_ERR_LIMIT,
                        "rate limit: at most %d commands "
                        "per second (burst %d)",
                        hd_w.conf->cmd_rate, hd_w.conf->cmd_burst);
        goto done;
    }
    if (rc != 0) {
        reply_error(&cmd, rc, "%s", err);
        goto done;
    }
    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (strcmp(methods[i].name, pc.method) == 0) {
            methods[i].fn(&cmd);
            goto done;
        }
    }
    /* before connect only ping and connect exist: 401, as for any other
     * command then (docs/protocol.md) */
    if (!c->connected && !hd_w.conf->auth_allow_anonymous)
        reply_error(&cmd, HD_ERR_UNAUTHORIZED,
                    "send \"connect\" first (unknown method \"%.64s\")",
                    pc.method);
    else
        reply_error(&cmd, HD_ERR_UNKNOWN_METHOD, "unknown method \"%.64s\"",
                    pc.method);
done:
    hd_cmd_free(&pc);
    /* stop at the first command that closed the connection */
    return c->close_code != 0;
}

void
hd_proto_handle(hd_conn_t *c, const char *buf, size_t len)
{
    hd_cmd_split(buf, len, handle_line, c);
}
