/*
 * The lws protocol callback: WebSocket lifecycle, inbound message assembly
 * and outbound flushing. HTTP requests that are not an upgrade land here
 * too (protocols[0] serves HTTP on the vhost).
 */
#include <string.h>
#include <sys/socket.h>

#include <libwebsockets.h>

#include "hd_admit.h"
#include "hd_alloc.h"
#include "hd_api.h"
#include "hd_log.h"
#include "hd_lwsalloc.h"
#include "hd_metrics.h"
#include "hd_time.h"
#include "hd_backend.h"
#include "hd_cluster.h"
#include "hd_jwt.h"
#include "hd_proto.h"
#include "hd_worker_int.h"
#include "hd_wsguard.h"
#include "hd_realip.h"

static void
conn_link(hd_conn_t *c)
{
    c->prev = NULL;
    c->next = hd_w.conns;
    if (hd_w.conns != NULL)
        hd_w.conns->prev = c;
    hd_w.conns = c;
    hd_w.nconns++;
}

static void
conn_unlink(hd_conn_t *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else if (hd_w.conns == c)
        hd_w.conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    hd_w.nconns--;
}

/*
 * Refuse what the client sent: the close frame goes out on the next
 * writable callback (hd_conn_flush, which drains what is unread first).
 */
static int
refuse_input(hd_conn_t *c, uint16_t code, const char *reason)
{
    hd_free(c->rx);
    hd_conn_close(c, code, reason);
    return 0;
}

/* Assemble one WebSocket message over frames and fragments, bounded. */
static int
on_receive(struct lws *wsi, hd_conn_t *c, const char *in, size_t len)
{
    bool done = lws_is_final_fragment(wsi)
        && lws_remaining_packet_payload(wsi) == 0;

    if (c->close_code != 0)
        return 0; /* ignore input once we decided to close */
    if (hd_wsguard_unmasked(lws_get_socket_fd(wsi)))
        return refuse_input(c, HD_CLOSE_PROTOCOL, "unmasked frame");
    if (lws_frame_is_binary(wsi))
        return refuse_input(c, 1003, "binary frames are not supported");

    hd_ctr_add(HD_C_BYTES_RECEIVED, len);
    c->last_rx_ms = hd_mono_ms();
    size_t have = c->rx != NULL ? c->rx->len : 0;
    if (have + len > (size_t) hd_w.conf->message_bytes)
        return refuse_input(c, HD_CLOSE_TOO_BIG, "message too big");

    if (done && have == 0) {
        /* the common case: a whole message in one callback, no copy */
        hd_proto_handle(c, in, len);
    } else {
        if (c->rx == NULL || have + len > c->rx->cap) {
            size_t ncap = c->rx != NULL ? c->rx->cap : 1024;
            while (ncap < have + len)
                ncap *= 2;
            if (ncap > (size_t) hd_w.conf->message_bytes)
                ncap = (size_t) hd_w.conf->message_bytes;
            c->rx = hd_realloc(c->rx, sizeof(*c->rx) + ncap);
            c->rx->len = (uint32_t) have;
            c->rx->cap = (uint32_t) ncap;
        }
        memcpy(c->rx->data + have, in, len);
        c->rx->len += (uint32_t) len;
        if (!done)
            return 0;
        hd_proto_handle(c, c->rx->data, c->rx->len);
        /* messages that need assembling are the rare long ones: keep no
         * buffer for them on an idle connection */
        hd_free(c->rx);
    }
    if (c->q_len > 0 || c->close_code != 0)
        hd_conn_want_write(c);
    return 0;
}

static int
on_established(struct lws *wsi, hd_conn_t *c)
{
    int fd = lws_get_socket_fd(wsi);

    if (c->http != NULL)
        hd_api_closed(c); /* an HTTP request preceded the upgrade */
    hd_ws_http_gone(wsi);
    memset(c, 0, sizeof(*c));
    c->wsi = wsi;
    c->fd = fd;
    c->id = ++hd_w.next_conn_id;
    c->established = true;
    if (fd >= 0 && fd < hd_w.accept_ns_cap && hd_w.accept_ns[fd] != 0) {
        c->accepted_ns = hd_w.accept_ns[fd];
        hd_hist_observe(HD_H_HANDSHAKE, hd_mono_ns() - c->accepted_ns);
        hd_w.accept_ns[fd] = 0;
    }
    hd_wsguard_established(fd);
    c->last_rx_ms = hd_mono_ms();
    if (hd_w.conf->compression) {
        /* bound the compressor's memory (a no-op when the client did not
         * negotiate permessage-deflate); see docs/configuration.md */
        char wb[8], ml[8];
        snprintf(wb, sizeof(wb), "%d", hd_w.conf->compression_window_bits);
        snprintf(ml, sizeof(ml), "%d", hd_w.conf->compression_mem_level);
        /* -1: not negotiated on this connection */
        c->deflate = lws_set_extension_option(wsi, "permessage-deflate",
                                              "client_max_window_bits", wb)
            != -1;
        (void) lws_set_extension_option(wsi, "permessage-deflate", "mem_level",
                                        ml);
    }
    conn_link(c);
    hd_gauge_add(HD_G_CONNECTIONS, 1);
    hd_proto_conn_open(c);
    if (hd_w.draining) {
        hd_conn_close(c, hd_w.drain_code, "server draining");
    } else if (hd_w.overloaded) {
        /* shed load: the client retries with backoff (hd_overload.c) */
        hd_reject_inc(HD_REJ_OVERLOAD);
        hd_conn_close(c, HD_CLOSE_TRY_LATER, "overloaded, try again later");
    }
    return 0;
}

/*
 * HTTP (API) connections, counted in hd_w.nhttp so that a draining worker
 * stays until each has had its answer. lws frees and re-zeroes the
 * per-session data at every keep-alive transaction, so the mark lives in
 * the wsi's opaque user data, which stays with the connection.
 */
static char http_open_mark, http_closing_mark;

static void
http_opened(struct lws *wsi)
{
    if (lws_get_opaque_user_data(wsi) != NULL)
        return;
    lws_set_opaque_user_data(wsi, &http_open_mark);
    hd_w.nhttp++;
}

bool
hd_ws_http_closing(struct lws *wsi)
{
    return lws_get_opaque_user_data(wsi) == &http_closing_mark;
}

void
hd_ws_http_set_closing(struct lws *wsi)
{
    if (lws_get_opaque_user_data(wsi) != NULL)
        lws_set_opaque_user_data(wsi, &http_closing_mark);
}

void
hd_ws_http_gone(struct lws *wsi)
{
    void *m = lws_get_opaque_user_data(wsi);

    if (m != &http_open_mark && m != &http_closing_mark)
        return;
    lws_set_opaque_user_data(wsi, NULL);
    hd_w.nhttp--;
    if (hd_w.draining && hd_w.nconns == 0 && hd_w.nhttp == 0)
        ev_break(hd_w.loop, EVBREAK_ALL); /* drain_done() decides */
}

/* Closes an on-call engineer wants to see one by one: everything but a
 * normal end, a going-away (our stop, a client leaving a page) and our
 * own restart code. */
static bool
abnormal_close(uint16_t code)
{
    return code != HD_CLOSE_NORMAL && code != HD_CLOSE_GOING_AWAY
        && code != 1005 && code != HD_CLOSE_RESTART;
}

/*
 * One info line per abnormal close (slow consumer 4000, rate limit 4004,
 * a vanished peer 1006, protocol errors...) with who it was: enough to
 * find the client, the user and what it was subscribed to. The address
 * only with log.client_addresses.
 */
static void
log_abnormal_close(const hd_conn_t *c, uint16_t code)
{
    char cid[HD_CLIENT_ID_MAX], scode[8], subs[16], queued[24];
    const struct hd_jwt_claims *cl = c->claims;

    if (!hd_log_enabled(HD_LOG_INFO) || !abnormal_close(code))
        return;
    hd_cluster_client_id(c, cid);
    snprintf(scode, sizeof(scode), "%u", code);
    snprintf(subs, sizeof(subs), "%u", c->nsubs);
    snprintf(queued, sizeof(queued), "%zu",
             c->closing != NULL ? c->closing->q_bytes : c->q_bytes);
    hd_log_kv(HD_LOG_INFO, "abnormal close", "code", scode, "reason",
              c->close_code != 0       ? (c->closing ? c->closing->reason : "")
                  : c->peer_close_code ? "closed by the client"
                                       : "no close frame",
              "client", cid, "user",
              cl != NULL && cl->sub != NULL ? cl->sub : "", "tenant",
              cl != NULL && cl->tenant != NULL ? cl->tenant : "", "addr",
              hd_conn_log_addr(c), "subscriptions", subs, "queued_bytes",
              queued, (char *) NULL);
}

static void
on_closed(hd_conn_t *c)
{
    hd_conn_linger(c);
    if (!c->established)
        return;
    uint16_t code = c->close_code ? c->close_code
        : c->peer_close_code      ? c->peer_close_code
                                  : HD_CLOSE_ABNORMAL;
    /* while still established: the line shows the address, read from
     * the socket's entry (lws closes the socket after this callback) */
    log_abnormal_close(c, code);
    c->established = false;
    conn_unlink(c);
    hd_gauge_add(HD_G_CONNECTIONS, -1);
    hd_disconnect_inc(code);
    hd_proto_conn_release(c);
    hd_conn_release(c);
    c->wsi = NULL;
    if (hd_w.draining && hd_w.nconns == 0)
        ev_break(hd_w.loop, EVBREAK_ALL);
}

/*
 * Heartbeat, once a second over every connection: ping the ones quiet for
 * heartbeat.ping_interval_ms, close as stale (4001) the ones whose ping
 * went unanswered for heartbeat.pong_timeout_ms, and close with 1002 the
 * ones that sent an unmasked frame without a data frame to notice it on.
 */
/*
 * The sweep is the only heartbeat timer: one ev_timer a worker, a walk of
 * the connection list (no timer per connection to start or stop on every
 * frame). Pong deadlines run on the heartbeat clock: monotonic time less
 * the loop's lag, the time by which sweeps came later than their period.
 * A loop stalled for seconds (a busy box, a connect storm) has not read
 * the pongs waiting in its sockets; the stall must not count against the
 * peers, or a busy box would close its idle connections as stale.
 */
static uint64_t hb_last_ms, hb_lag_ms;

uint64_t
hd_ws_heartbeat_clock(uint64_t now_ms)
{
    if (hb_last_ms != 0 && now_ms - hb_last_ms > HD_HEARTBEAT_PERIOD_MS)
        hb_lag_ms += now_ms - hb_last_ms - HD_HEARTBEAT_PERIOD_MS;
    hb_last_ms = now_ms;
    return now_ms - hb_lag_ms;
}

void
hd_ws_heartbeat_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    const hd_conf_t *conf = hd_w.conf;
    uint64_t         now = hd_mono_ms();
    uint64_t         hb_now = hd_ws_heartbeat_clock(now);
    (void) loop;
    (void) w;
    (void) revents;

    size_t qmax = 0;
    for (hd_conn_t *c = hd_w.conns; c != NULL; c = c->next) {
        if (c->q_bytes > qmax)
            qmax = c->q_bytes;
        if (c->close_code != 0) {
            if (c->rx_paused) {
                /* read the peer's close reply */
                c->rx_paused = false;
                lws_rx_flow_control(c->wsi, 1);
            }
            hd_conn_close_check(c, now);
            continue;
        }
        /* c->fd, not lws_get_socket_fd(): the sweep reads no struct lws */
        if (hd_wsguard_unmasked(c->fd)) {
            hd_conn_close(c, HD_CLOSE_PROTOCOL, "unmasked frame");
            continue;
        }
        hd_proto_control_frames(c, hd_wsguard_take_control(c->fd));
        if (c->close_code != 0)
            continue;
        hd_proto_conn_due(c, now);
        if (c->close_code != 0)
            continue;
        if (c->has_sub_tokens)
            hd_proto_sub_tokens(c, (int64_t) (hd_wall_ns() / 1000000000ull));
        if (c->ping_sent_ms != 0) {
            if (hb_now - c->ping_sent_ms >= (uint64_t) conf->pong_timeout_ms)
                hd_conn_close(c, HD_CLOSE_STALE, "no pong");
        } else if (now - c->last_rx_ms >= (uint64_t) conf->ping_interval_ms) {
            c->ping_sent_ms = hb_now;
            c->ping_due = true;
            hd_conn_want_write(c);
        }
        hd_conn_trim(c);
    }
    /* sampled once a second: who is building up a backlog */
    hd_gauge_set(HD_G_QUEUE_MAX_BYTES, (int64_t) qmax);
    hd_gauge_set(HD_G_QUEUED_BYTES, (int64_t) hd_w.queued_bytes);
    hd_lwsalloc_trim();
}

/*
 * What lws 4.1 lets through: the key must be the base64 of 16 bytes (24
 * characters, "==" at the end) and the version 13, as RFC 6455 4.2.1 says.
 */
static bool
handshake_valid(struct lws *wsi)
{
    char key[64], ver[16];
    int  n = lws_hdr_copy(wsi, key, sizeof(key), WSI_TOKEN_KEY);

    if (n != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (int i = 0; i < 22; i++)
        if (!((key[i] >= 'A' && key[i] <= 'Z')
              || (key[i] >= 'a' && key[i] <= 'z')
              || (key[i] >= '0' && key[i] <= '9') || key[i] == '+'
              || key[i] == '/'))
            return false;
    if (lws_hdr_copy(wsi, ver, sizeof(ver), WSI_TOKEN_VERSION) <= 0)
        return false;
    return strcmp(ver, "13") == 0;
}

/* A PROXY header on a listener without listen.proxy_protocol: whoever
 * sent it is not believed, and the request is refused (400). */
static bool
refuse_proxy_header(struct lws *wsi)
{
    if (!hd_wsguard_proxy_header(lws_get_socket_fd(wsi)))
        return false;
    hd_reject_inc(HD_REJ_PROXY);
    lws_return_http_status(wsi, HTTP_STATUS_BAD_REQUEST,
                           "PROXY protocol header on a listener "
                           "without listen.proxy_protocol");
    return true;
}

/*
 * Before the 101: the Origin allow-list. A browser page from another site
 * gets 403 and never a WebSocket.
 */
static int
filter_upgrade(struct lws *wsi)
{
    const hd_conf_t *conf = hd_w.conf;
    char             origin[512];
    int              n;

    if (refuse_proxy_header(wsi))
        return 1;
    if (hd_realip_from_headers(wsi) < 0) {
        lws_return_http_status(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE,
                               "connection limit reached");
        return 1;
    }
    if (!handshake_valid(wsi)) {
        lws_return_http_status(wsi, HTTP_STATUS_BAD_REQUEST,
                               "bad Sec-WebSocket-Key or Sec-WebSocket-Version "
                               "(only 13 is spoken)");
        return 1;
    }
    hd_backend_filter(wsi);
    if (conf->nallowed_origins == 0 && conf->allow_missing_origin)
        return 0;
    n = lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN);
    if (n <= 0 ? conf->allow_missing_origin
               : hd_conf_origin_allowed(conf, origin))
        return 0;
    hd_log_debug("upgrade refused: origin \"%s\" not allowed",
                 n > 0 ? origin : "(none)");
    lws_return_http_status(wsi, HTTP_STATUS_FORBIDDEN,
                           n > 0 ? "origin not allowed"
                                 : "Origin header required");
    return 1;
}

/*
 * Before lws picks a protocol: a client that offers subprotocols, none of
 * them herald.v1, gets a 400 that says what to offer (lws would hang up
 * without a word). One that offers none is served herald.v1.
 */
static int
confirm_upgrade(struct lws *wsi)
{
    char        buf[1024];
    int         n = lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL);
    const char *p, *end;

    if (n <= 0)
        return 0;
    if (n < (int) sizeof(buf)
        && lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_PROTOCOL) == n) {
        for (p = buf, end = buf + n; p < end;) {
            const char *e;
            size_t      len;
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            for (e = p; e < end && *e != ','; e++)
                ;
            len = (size_t) (e - p);
            while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
                len--;
            if (len == 9 && memcmp(p, "herald.v1", 9) == 0)
                return 0;
            p = e;
        }
    }
    hd_reject_inc(HD_REJ_HANDSHAKE);
    hd_log_debug("upgrade refused: no subprotocol herald.v1 offered");
    lws_return_http_status(wsi, HTTP_STATUS_BAD_REQUEST,
                           "unsupported WebSocket subprotocol: offer "
                           "herald.v1 (or none)");
    return 1;
}

/* The protocol's lws callback: 0, or -1 to close the connection (lws's own
 * convention, not an -errno; so for the hd_api_* and hd_conn_flush it
 * returns). */
static int
ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
            void *in, size_t len)
{
    hd_conn_t *c = user;

    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        return on_established(wsi, c);

    case LWS_CALLBACK_RECEIVE:
        c->ping_sent_ms = 0;
        return on_receive(wsi, c, in, len);

    case LWS_CALLBACK_SERVER_WRITEABLE:
        return hd_conn_flush(c);

    case LWS_CALLBACK_RECEIVE_PONG:
        c->last_rx_ms = hd_mono_ms();
        c->ping_sent_ms = 0;
        return 0;

    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return filter_upgrade(wsi);

    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return confirm_upgrade(wsi);

    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (len == 1) {
            /* a close body is empty or holds a 2-byte code (RFC 6455 5.5.1) */
            lws_close_reason(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR,
                             (unsigned char *) "bad close frame", 15);
            c->close_code = HD_CLOSE_PROTOCOL;
            return -1;
        }
        if (len >= 2) {
            const unsigned char *p = in;
            c->peer_close_code = (uint16_t) (p[0] << 8 | p[1]);
        } else {
            c->peer_close_code = HD_CLOSE_NORMAL;
        }
        return 0;

    case LWS_CALLBACK_CLOSED:
        if (c != NULL)
            on_closed(c);
        return 0;

    case LWS_CALLBACK_HTTP:
        http_opened(wsi);
        hd_admit_request(lws_get_socket_fd(wsi));
        if (refuse_proxy_header(wsi))
            return -1;
        if (hd_realip_from_headers(wsi) < 0) {
            lws_return_http_status(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE,
                                   "connection limit reached");
            return -1;
        }
        return hd_api_http(wsi, c, in);
    case LWS_CALLBACK_HTTP_BODY:
        return hd_api_body(wsi, c, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return hd_api_body_done(wsi, c);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return hd_api_writeable(wsi, c);
    case LWS_CALLBACK_WSI_DESTROY:
        hd_admit_destroyed(wsi);
        hd_ws_http_gone(wsi);
        break;

    case LWS_CALLBACK_CLOSED_HTTP:
        if (c != NULL)
            hd_api_closed(c);
        hd_ws_http_gone(wsi);
        break;

    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    {
        .name = "herald.v1",
        .callback = ws_callback,
        .per_session_data_size = sizeof(hd_conn_t),
        /* lws gives every WebSocket a frame buffer this big (plus
         * LWS_PRE) for as long as it lives (0: its 4 KB service buffer
         * size). Commands are small; a longer frame arrives in pieces,
         * which on_receive() assembles anyway (a connect with a token
         * in a few). 128 still holds a whole control frame (at most 125
         * bytes of payload, RFC 6455 5.5), so pings and close reasons
         * are never split. 128 instead of 4096 saves ~3.9 KB per idle
         * connection (docs/benchmarks.md, the per-connection memory). */
        .rx_buffer_size = 128,
        /* Without it lws hands the kernel at most 4 KB (its service
         * buffer) per write and copies the rest of a frame aside for
         * later writable callbacks: a 64 KB batch took 16 of them. Frames
         * are bounded by herald (batch.max_bytes, or one message); the
         * kernel's send buffer decides how much of one goes at once. */
        .tx_packet_size = 1u << 30,
    },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};

const struct lws_protocols *const hd_ws_protocols = protocols;
