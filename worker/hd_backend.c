/*
 * Connect/subscribe proxy transport; see hd_backend.h.
 *
 * libcurl multi on libev: curl names the sockets to watch (sock_cb) and a
 * deadline (timer_cb); both become libev watchers on the worker's loop,
 * and readiness goes back through curl_multi_socket_action(). One multi
 * handle per worker keeps the connections to the backend open between
 * requests (its connection cache), so a connect costs a round trip, not a
 * TCP (and TLS) handshake.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <ev.h>
#include <libwebsockets.h>

#include "hd_alloc.h"
#include "hd_log.h"
#include "hd_metrics.h"
#include "hd_backend.h"
#include "hd_proxyreply.h"
#include "hd_version.h"
#include "hd_worker_int.h"

typedef struct hd_preq {
    CURL           *easy;
    hd_conn_t      *conn;
    struct hd_preq *next, *prev; /* every request in flight */
    hd_backend_cb  *cb;
    void           *arg;
    void (*arg_free)(void *);
    int64_t            id;
    char              *json;
    struct curl_slist *hdrs;
    char              *body;
    size_t             len;
    bool               over; /* reply larger than HD_PROXY_MAX_BODY */
} hd_preq_t;

/* a watched socket */
typedef struct psock {
    ev_io io;
    int   fd;
} psock_t;

static struct {
    CURLM     *multi;
    ev_timer   timer;
    hd_preq_t *reqs;
    unsigned   inflight;
    bool       started;
} P;

static void check_done(void);

/* upgrade headers by fd, between the filter and ESTABLISHED */
static char **parked;
static int    nparked;

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    psock_t *s = (psock_t *) w;
    int      running, action = 0;
    (void) loop;

    if (revents & EV_READ)
        action |= CURL_CSELECT_IN;
    if (revents & EV_WRITE)
        action |= CURL_CSELECT_OUT;
    curl_multi_socket_action(P.multi, s->fd, action, &running);
    check_done();
}

static int
sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp)
{
    psock_t *s = sockp;
    int      ev = 0;
    (void) e;
    (void) userp;

    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            ev_io_stop(hd_w.loop, &s->io);
            free(s);
            curl_multi_assign(P.multi, fd, NULL);
        }
        return 0;
    }
    if (what & CURL_POLL_IN)
        ev |= EV_READ;
    if (what & CURL_POLL_OUT)
        ev |= EV_WRITE;
    if (s == NULL) {
        s = hd_calloc(1, sizeof(*s));
        s->fd = fd;
        curl_multi_assign(P.multi, fd, s);
    } else {
        ev_io_stop(hd_w.loop, &s->io);
    }
    ev_io_init(&s->io, io_cb, fd, ev);
    ev_io_start(hd_w.loop, &s->io);
    return 0;
}

static void
timer_ev_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    int running;
    (void) loop;
    (void) w;
    (void) revents;

    curl_multi_socket_action(P.multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done();
}

static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    (void) m;
    (void) userp;

    ev_timer_stop(hd_w.loop, &P.timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&P.timer, (double) timeout_ms / 1000.0, 0.);
        ev_timer_start(hd_w.loop, &P.timer);
    }
    return 0;
}

static size_t
write_cb(char *p, size_t size, size_t n, void *userp)
{
    hd_preq_t *r = userp;

    if (r->len + n > HD_PROXY_MAX_BODY) {
        r->over = true;
        return 0;
    }
    r->body = hd_realloc(r->body, r->len + n + 1);
    memcpy(r->body + r->len, p, n);
    r->len += n;
    r->body[r->len] = '\0';
    return size * n;
}

static void
req_free(hd_preq_t *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        P.reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    curl_multi_remove_handle(P.multi, r->easy);
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->hdrs);
    free(r->json);
    free(r->body);
    free(r);
    P.inflight--;
}

static void
finish(hd_preq_t *r, CURLcode res)
{
    long        code = 0;
    const char *why = NULL;
    char        buf[96];

    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    if (res == CURLE_OPERATION_TIMEDOUT) {
        why = "backend timed out";
        hd_proxy_result_inc(HD_PXR_TIMEOUT);
    } else if (r->over) {
        why = "backend reply too large";
    } else if (res != CURLE_OK) {
        snprintf(buf, sizeof(buf), "backend unreachable: %s",
                 curl_easy_strerror(res));
        why = buf;
    } else if (code != 200) {
        snprintf(buf, sizeof(buf), "backend answered HTTP %ld", code);
        why = buf;
    }
    if (why != NULL && res != CURLE_OPERATION_TIMEDOUT)
        hd_proxy_result_inc(HD_PXR_ERROR);
    if (why != NULL)
        hd_log_warn("proxy request failed: %s", why);
    if (r->conn != NULL)
        r->cb(r->conn, why == NULL ? (r->body ? r->body : "") : NULL,
              why == NULL ? r->len : 0, why, r->id, r->arg);
    req_free(r);
}

static void
check_done(void)
{
    CURLMsg *msg;
    int      left;

    while ((msg = curl_multi_info_read(P.multi, &left)) != NULL) {
        hd_preq_t *r = NULL;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &r);
        if (r != NULL)
            finish(r, msg->data.result);
    }
}

void
hd_backend_init(void)
{
    const hd_conf_t *c = hd_w.conf;

    if (c->proxy_connect_url == NULL && c->proxy_subscribe_url == NULL)
        return;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    P.multi = curl_multi_init();
    curl_multi_setopt(P.multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(P.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    /* keep-alive: as many cached connections as requests in flight */
    curl_multi_setopt(P.multi, CURLMOPT_MAXCONNECTS,
                      (long) c->proxy_max_requests);
    curl_multi_setopt(P.multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                      (long) c->proxy_max_requests);
    ev_init(&P.timer, timer_ev_cb);
    P.started = true;
}

void
hd_backend_shutdown(void)
{
    if (!P.started)
        return;
    while (P.reqs != NULL) {
        if (P.reqs->arg_free != NULL)
            P.reqs->arg_free(P.reqs->arg);
        req_free(P.reqs);
    }
    ev_timer_stop(hd_w.loop, &P.timer);
    curl_multi_cleanup(P.multi); /* closes its sockets: sock_cb frees */
    curl_global_cleanup();
    for (int i = 0; i < nparked; i++)
        free(parked[i]);
    free(parked);
    parked = NULL;
    nparked = 0;
    memset(&P, 0, sizeof(P));
}

/* lws knows common headers as tokens; others only as "custom" headers.
 * Like lws_hdr_copy(), whose result it passes on: the length, or -1 when
 * absent or too long (lws's convention, not an -errno). */
static int
copy_header(struct lws *wsi, const char *name, char *buf, int cap)
{
    char want[72];
    int  n;

    snprintf(want, sizeof(want), "%s:", name);
    for (int t = 0; t < WSI_TOKEN_COUNT; t++) {
        const unsigned char *tn = lws_token_to_string(
            (enum lws_token_indexes) t);
        if (tn != NULL && strcmp((const char *) tn, want) == 0)
            return lws_hdr_copy(wsi, buf, cap, (enum lws_token_indexes) t);
    }
    n = lws_hdr_custom_length(wsi, want, (int) strlen(want));
    if (n <= 0 || n >= cap)
        return -1;
    return lws_hdr_custom_copy(wsi, buf, cap, want, (int) strlen(want));
}

/*
 * lws frees the request headers before LWS_CALLBACK_ESTABLISHED, so they
 * are taken at the upgrade filter and parked by socket until the
 * connection exists, and stay there for its life (hdrs_of()). An upgrade
 * refused after the filter leaves its entry to the next upgrade on the
 * same fd number (or shutdown).
 */

void
hd_backend_filter(struct lws *wsi)
{
    const hd_conf_t *conf = hd_w.conf;
    int              fd = lws_get_socket_fd(wsi);
    char             val[4096];
    size_t           total = 0;
    char            *out = NULL;

    if (!P.started || conf->nproxy_headers == 0 || fd < 0)
        return;
    if (fd >= nparked) {
        int n = fd < 1024 ? 1024 : fd * 2;
        parked = hd_realloc(parked, (size_t) n * sizeof(*parked));
        memset(parked + nparked, 0, (size_t) (n - nparked) * sizeof(*parked));
        nparked = n;
    }
    for (size_t i = 0; i < conf->nproxy_headers; i++) {
        int n = copy_header(wsi, conf->proxy_headers[i], val, sizeof(val));
        if (n <= 0)
            continue;
        /* "name: value\n" lines, sent as they are (lws gives values
         * without CR/LF) */
        size_t add = strlen(conf->proxy_headers[i]) + 2 + (size_t) n + 1;
        out = hd_realloc(out, total + add + 1);
        total += (size_t) snprintf(out + total, add + 1, "%s: %.*s\n",
                                   conf->proxy_headers[i], n, val);
    }
    free(parked[fd]);
    parked[fd] = out;
}

/* c's parked headers: they stay by fd for the connection's life (no
 * pointer in every hd_conn_t for what only proxied setups use) */
static char **
hdrs_of(const hd_conn_t *c)
{
    /* wsi: set from ESTABLISHED (when c->fd is) until c is released */
    return c->wsi != NULL && c->fd >= 0 && c->fd < nparked ? &parked[c->fd]
                                                           : NULL;
}

int
hd_backend_post(hd_conn_t *c, const char *url, const char *json,
                hd_backend_cb *cb, int64_t id, void *arg,
                void (*arg_free)(void *))
{
    hd_preq_t *r;

    if (!P.started)
        return -ENOMEM;
    if (P.inflight >= (unsigned) hd_w.conf->proxy_max_requests) {
        hd_proxy_result_inc(HD_PXR_BUSY);
        return -EBUSY;
    }
    /* the worker's slots are shared: one connection firing subscribes at
     * a slow backend must not take them all and leave every other
     * client's connect "busy" (a walk of at most proxy.max_requests) */
    {
        unsigned mine = 0;
        for (r = P.reqs; r != NULL; r = r->next)
            mine += r->conn == c;
        if (mine >= (unsigned) hd_w.conf->proxy_max_requests_conn) {
            hd_proxy_result_inc(HD_PXR_BUSY);
            return -EBUSY;
        }
    }
    r = hd_calloc(1, sizeof(*r));
    r->easy = curl_easy_init();
    if (r->easy == NULL) {
        free(r);
        return -ENOMEM;
    }
    r->conn = c;
    r->cb = cb;
    r->arg = arg;
    r->arg_free = arg_free;
    r->id = id;
    r->json = hd_strdup(json);
    r->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    r->hdrs = curl_slist_append(r->hdrs, "Expect:");
    if (hdrs_of(c) != NULL && *hdrs_of(c) != NULL) {
        char *save = NULL, *copy = hd_strdup(*hdrs_of(c));
        for (char *l = strtok_r(copy, "\n", &save); l != NULL;
             l = strtok_r(NULL, "\n", &save))
            r->hdrs = curl_slist_append(r->hdrs, l);
        free(copy);
    }
    curl_easy_setopt(r->easy, CURLOPT_URL, url);
    curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS,
                     (long) hd_w.conf->proxy_timeout_ms);
    curl_easy_setopt(r->easy, CURLOPT_USERAGENT, "herald/" HD_VERSION);
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->json);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE, (long) strlen(r->json));
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    r->next = P.reqs;
    if (P.reqs != NULL)
        P.reqs->prev = r;
    P.reqs = r;
    P.inflight++;
    if (curl_multi_add_handle(P.multi, r->easy) != CURLM_OK) {
        r->arg_free = NULL; /* the caller keeps arg on failure */
        req_free(r);
        return -ENOMEM;
    }
    return 0;
}

void
hd_backend_conn_gone(hd_conn_t *c)
{
    hd_preq_t *r, *next;

    for (r = P.reqs; r != NULL; r = next) {
        next = r->next;
        if (r->conn == c) {
            if (r->arg_free != NULL)
                r->arg_free(r->arg);
            req_free(r);
        }
    }
    if (hdrs_of(c) != NULL)
        hd_free(*hdrs_of(c));
}
