/*
 * Admin HTTP server on the master's libevent loop; see hd_admin.h.
 *
 * Every request takes a fresh shm snapshot (a read-only pass over the
 * segment: workers are never blocked) and renders it with shm/hd_render.
 * The module is a singleton because the master has one admin server.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "hd_admin.h"
#include "hd_alloc.h"
#include "hd_limits.h"
#include "hd_log.h"
#include "hd_master.h"
#include "hd_jwks.h"
#include "hd_render.h"
#include "hd_time.h"
#include "hd_version.h"

/* master/monitor.html, embedded at build time (monitor_html.c) */
extern const char   hd_monitor_html[];
extern const size_t hd_monitor_html_len;

#define TOKEN_MD_LEN      32 /* SHA-256 */
#define STATS_TOP_TENANTS 20 /* /stats "tenants.top" rows */

static struct {
    bool                        started;
    struct event_base          *base;
    hd_shm_t                   *shm;
    struct evhttp              *http;
    struct evhttp_bound_socket *sock;    /* NULL: not listening */
    char                       *address; /* of sock */
    int                         port;    /* of sock, 0 = off */
    bool                        token_set;
    unsigned char               token_md[TOKEN_MD_LEN];
    struct event               *tick;
    hd_render_proc_t            proc; /* scratch, 20 KB: keep off the stack */
} adm;

/*
 * The token is kept only as its SHA-256. Comparing digests with
 * CRYPTO_memcmp makes the check constant-time in the token's content and
 * its length: both sides are always 32 bytes, and hashing the presented
 * value costs time in its own length only, which the client knows.
 */
static int
sha256(const void *data, size_t len, unsigned char md[TOKEN_MD_LEN])
{
    unsigned int n = 0;
    if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1
        || n != TOKEN_MD_LEN)
        return -EIO; /* libcrypto failed */
    return 0;
}

static void
set_token(const char *token)
{
    adm.token_set = false;
    OPENSSL_cleanse(adm.token_md, sizeof(adm.token_md));
    if (token == NULL || token[0] == '\0')
        return;
    if (sha256(token, strlen(token), adm.token_md) < 0) {
        /* fail closed: an unknown digest matches nothing */
        hd_log_error("EVP_Digest() failed; admin requests will be refused");
        memset(adm.token_md, 0xff, sizeof(adm.token_md));
    }
    adm.token_set = true;
}

static bool
authorized(struct evhttp_request *req)
{
    if (!adm.token_set)
        return true;
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req),
                                       "Authorization");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    unsigned char md[TOKEN_MD_LEN];
    if (sha256(h, strlen(h), md) < 0)
        return false;
    return CRYPTO_memcmp(md, adm.token_md, TOKEN_MD_LEN) == 0;
}

static void
reply(struct evhttp_request *req, int code, const char *reason,
      const char *ctype, const char *body, size_t len)
{
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    evhttp_add_header(oh, "Content-Type", ctype);
    evhttp_add_header(oh, "Cache-Control", "no-store");
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    if (len > 0)
        evbuffer_add(out, body, len);
    /* for HEAD, evhttp sends the headers (with Content-Length) only */
    evhttp_send_reply(req, code, reason, NULL);
}

static void
reply_text(struct evhttp_request *req, int code, const char *reason,
           const char *text)
{
    reply(req, code, reason, "text/plain; charset=utf-8", text, strlen(text));
}

/* A tenant name as a JSON string. Names come from tokens (valid UTF-8)
 * and are cut at a character boundary; anything else is shown with '?'
 * for each byte outside ASCII rather than dropped. */
static json_t *
name_json(const char *name)
{
    json_t *j = json_string(name);
    if (j != NULL)
        return j;
    char   safe[HD_LIMITS_NAME_MAX + 1];
    size_t i = 0;
    for (; name[i] != '\0' && i < HD_LIMITS_NAME_MAX; i++)
        safe[i] = (unsigned char) name[i] < 0x80 ? name[i] : '?';
    safe[i] = '\0';
    return json_string(safe);
}

/*
 * The limit tables' part of /stats: "tenants" (connections per tenant,
 * the top STATS_TOP_TENANTS, node-wide) and "limits" (node count, what
 * the master gave back from dead workers, table capacity and -ENOSPC
 * events). The tables are not in the shm snapshot, so these keys are
 * spliced into hd_render_stats()'s object, before its closing brace.
 * Reads the tables without blocking any worker (a walk of the tenant
 * table, 256 KiB).
 */
static void
stats_limits(hd_strbuf_t *b)
{
    const hd_limits_t  *l = hd_m.limits;
    struct hd_limit_top top[STATS_TOP_TENANTS];
    hd_limits_stats_t   st;
    size_t              active = 0, n;

    if (b->len < 2 || b->p[b->len - 2] != '}' || b->p[b->len - 1] != '\n')
        return;
    n = hd_limits_top(l, HD_LIM_TENANT, top, STATS_TOP_TENANTS, &active);
    hd_limits_stats(l, &st);

    json_t *rows = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(rows,
                              json_pack("{s:o,s:I}", "tenant",
                                        name_json(top[i].name), "connections",
                                        (json_int_t) top[i].count));
    json_t *j = json_pack(
        "{s:{s:I,s:o},"
        "s:{s:b,s:I,s:I,s:I,s:{s:I,s:I,s:I},s:{s:I,s:I,s:I}}}",
        "tenants", "active", (json_int_t) active, "top", rows, "limits",
        "enabled", l != NULL, "node_connections", (json_int_t) st.node,
        "reclaimed", (json_int_t) st.reclaimed, "suspect_leaks",
        (json_int_t) st.suspects, "table_full", "ip",
        (json_int_t) st.full[HD_LIM_IP], "user",
        (json_int_t) st.full[HD_LIM_USER], "tenant",
        (json_int_t) st.full[HD_LIM_TENANT], "capacity", "ip",
        (json_int_t) st.capacity[HD_LIM_IP], "user",
        (json_int_t) st.capacity[HD_LIM_USER], "tenant",
        (json_int_t) st.capacity[HD_LIM_TENANT]);
    char *s = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (s == NULL || s[0] != '{' || s[1] == '}') {
        free(s);
        return;
    }
    b->len -= 2; /* "}\n" */
    hd_strbuf_putc(b, ',');
    hd_strbuf_puts(b, s + 1); /* our keys and the closing brace */
    hd_strbuf_putc(b, '\n');
    free(s);
}

/*
 * /stats "cluster": what the workers published in their slots
 * (hd_shm_slot_info_set(), worker/hd_cluster.c): this node's id, the
 * nodes of the cluster as the freshest worker last read them from the
 * registry (null when no worker could), and the top channels of the node
 * (subscribers summed over the workers). Spliced in like stats_limits().
 */
static void
stats_cluster(hd_strbuf_t *b, const hd_shm_snapshot_t *snap)
{
    char       *buf = hd_malloc(HD_SHM_INFO_MAX + 1), *s;
    json_t     *chans = json_object(), *nodes = NULL, *node = NULL, *out, *top;
    double      nodes_at = 0;
    const char *k;
    json_t     *v;

    if (b->len < 2 || b->p[b->len - 2] != '}' || b->p[b->len - 1] != '\n')
        goto done;
    for (size_t i = 0; i < snap->nslots; i++) {
        json_t *doc, *c;
        size_t  j;
        if (hd_shm_slot_info_get(adm.shm, snap->slot[i].idx, buf,
                                 HD_SHM_INFO_MAX + 1)
                == 0
            || (doc = json_loads(buf, 0, NULL)) == NULL)
            continue;
        if (node == NULL && json_is_string(json_object_get(doc, "node")))
            node = json_incref(json_object_get(doc, "node"));
        if (json_is_array(json_object_get(doc, "nodes"))
            && json_number_value(json_object_get(doc, "at")) > nodes_at) {
            nodes_at = json_number_value(json_object_get(doc, "at"));
            json_decref(nodes);
            nodes = json_incref(json_object_get(doc, "nodes"));
        }
        json_array_foreach(json_object_get(doc, "top_channels"), j, c)
        {
            char key[400];
            snprintf(key, sizeof(key), "%s|%s",
                     json_string_value(json_object_get(c, "tenant")),
                     json_string_value(json_object_get(c, "channel")));
            json_t *cur = json_object_get(chans, key);
            if (cur == NULL) {
                json_object_set(chans, key, c);
            } else {
                json_object_set_new(
                    cur, "subscribers",
                    json_integer(
                        json_integer_value(json_object_get(cur, "subscribers"))
                        + json_integer_value(
                            json_object_get(c, "subscribers"))));
            }
        }
        json_decref(doc);
    }
    /* the ten with most subscribers (a worker's own top ten may miss a
     * channel that is big only summed over workers: an estimate) */
    top = json_array();
    for (int n = 0; n < 10 && json_object_size(chans) > 0; n++) {
        const char *best = NULL;
        json_int_t  bv = -1;
        json_object_foreach(chans, k, v)
        {
            json_int_t x = json_integer_value(
                json_object_get(v, "subscribers"));
            if (x > bv) {
                bv = x;
                best = k;
            }
        }
        json_array_append(top, json_object_get(chans, best));
        json_object_del(chans, best);
    }
    out = json_pack("{s:{s:o, s:o, s:o}}", "cluster", "node",
                    node != NULL ? node : json_null(), "nodes",
                    nodes != NULL ? nodes : json_null(), "top_channels", top);
    s = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    if (s != NULL && s[0] == '{' && s[1] != '}') {
        b->len -= 2; /* "}\n" */
        hd_strbuf_putc(b, ',');
        hd_strbuf_puts(b, s + 1);
        hd_strbuf_putc(b, '\n');
    }
    free(s);
done:
    json_decref(chans);
    free(buf);
}

/* ---- events --------------------------------------------------------------- */

static struct {
    double time;
    char   event[32];
    char   detail[96];
} events[HD_ADMIN_EVENTS];
static unsigned nevents; /* ever noted; the ring holds the last ones */

void
hd_admin_event(const char *event, const char *detail)
{
    unsigned i = nevents++ % HD_ADMIN_EVENTS;

    events[i].time = hd_wall_sec();
    snprintf(events[i].event, sizeof(events[i].event), "%s", event);
    snprintf(events[i].detail, sizeof(events[i].detail), "%s",
             detail ? detail : "");
}

void
hd_admin_event_exit(unsigned worker_id, int pid, int status)
{
    char d[96];

    if (WIFSIGNALED(status))
        snprintf(d, sizeof(d), "worker %u (pid %d) killed by signal %d",
                 worker_id, pid, WTERMSIG(status));
    else
        snprintf(d, sizeof(d), "worker %u (pid %d) exited with status %d",
                 worker_id, pid, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    hd_admin_event("worker restart", d);
}

/* {"events": [{"time", "event", "detail"}, ...]}, oldest first. */
static void
render_events(hd_strbuf_t *b)
{
    json_t  *list = json_array(), *root;
    unsigned n = nevents < HD_ADMIN_EVENTS ? nevents : HD_ADMIN_EVENTS;
    char    *s;

    for (unsigned k = nevents - n; k < nevents; k++) {
        unsigned i = k % HD_ADMIN_EVENTS;
        json_t  *e = json_pack("{s:f, s:s}", "time", events[i].time, "event",
                               events[i].event);
        if (events[i].detail[0] != '\0')
            json_object_set_new(e, "detail", json_string(events[i].detail));
        json_array_append_new(list, e);
    }
    root = json_pack("{s:o}", "events", list);
    s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (s != NULL) {
        hd_strbuf_puts(b, s);
        hd_strbuf_putc(b, '\n');
        free(s);
    }
}

enum route {
    R_NONE,
    R_METRICS,
    R_HEALTH,
    R_STATS,
    R_EVENTS,
    R_MONITOR
};

static enum route
route_of(struct evhttp_request *req)
{
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char              *path = u != NULL ? evhttp_uri_get_path(u) : NULL;
    if (path == NULL)
        return R_NONE;
    if (strcmp(path, "/metrics") == 0)
        return R_METRICS;
    if (strcmp(path, "/health") == 0)
        return R_HEALTH;
    if (strcmp(path, "/stats") == 0)
        return R_STATS;
    if (strcmp(path, "/events") == 0)
        return R_EVENTS;
    if (strcmp(path, "/") == 0 || strcmp(path, "/monitor") == 0)
        return R_MONITOR;
    return R_NONE;
}

static void
handle(struct evhttp_request *req, void *arg)
{
    (void) arg;
    if (route_of(req) == R_MONITOR
        && (evhttp_request_get_command(req) == EVHTTP_REQ_GET
            || evhttp_request_get_command(req) == EVHTTP_REQ_HEAD)) {
        /* static, no data: see hd_admin.h */
        evhttp_add_header(evhttp_request_get_output_headers(req),
                          "Content-Security-Policy",
                          "default-src 'self'; script-src 'unsafe-inline'; "
                          "style-src 'unsafe-inline'");
        reply(req, 200, "OK", "text/html; charset=utf-8", hd_monitor_html,
              hd_monitor_html_len);
        return;
    }
    if (!authorized(req)) {
        evhttp_add_header(evhttp_request_get_output_headers(req),
                          "WWW-Authenticate", "Bearer realm=\"herald\"");
        reply_text(req, 401, "Unauthorized", "unauthorized\n");
        return;
    }
    enum route r = route_of(req);
    if (r == R_NONE) {
        reply_text(req, 404, "Not Found", "not found\n");
        return;
    }
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          "GET, HEAD");
        reply_text(req, 405, "Method Not Allowed", "method not allowed\n");
        return;
    }

    hd_shm_snapshot_t *snap = hd_malloc(sizeof(*snap));
    hd_strbuf_t        b = HD_STRBUF_INIT;
    int                code = 200;

    hd_shm_sample(adm.shm);
    hd_shm_snapshot_take(adm.shm, snap);
    switch (r) {
    case R_METRICS:
        hd_procinfo_collect(snap, &adm.proc);
        hd_render_metrics(&b, snap, &adm.proc, HD_VERSION);
        hd_jwks_render(&b);
        reply(req, 200, "OK", HD_METRICS_CONTENT_TYPE, b.p, b.len);
        break;
    case R_HEALTH:
        code = hd_render_health_as(&b, snap, hd_wall_sec(),
                                   hd_sup_health_override());
        reply(req, code, code == 200 ? "OK" : "Service Unavailable",
              "application/json", b.p, b.len);
        break;
    case R_STATS:
        hd_procinfo_collect(snap, &adm.proc);
        hd_render_stats(&b, snap, &adm.proc, hd_wall_sec(), HD_VERSION);
        stats_limits(&b);
        stats_cluster(&b, snap);
        reply(req, 200, "OK", "application/json", b.p, b.len);
        break;
    case R_EVENTS:
        render_events(&b);
        reply(req, 200, "OK", "application/json", b.p, b.len);
        break;
    case R_MONITOR:
    case R_NONE:
        break;
    }
    hd_strbuf_free(&b);
    hd_shm_snapshot_free(snap);
    free(snap);
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    (void) arg;
    hd_shm_sample(adm.shm);
}

/* Bind address:port on adm.http. Returns the handle, or NULL with errno
 * set (and logged when loud). */
static struct evhttp_bound_socket *
bind_admin(const char *address, int port, bool loud)
{
    errno = 0;
    struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(
        adm.http, address, (ev_uint16_t) port);
    if (s == NULL) {
        int err = errno ? errno : EADDRNOTAVAIL;
        if (loud)
            hd_log_error("admin: bind() to %s:%d failed: %s", address, port,
                         strerror(err));
        errno = err;
    }
    return s;
}

static void
unbind_admin(void)
{
    if (adm.sock != NULL)
        evhttp_del_accept_socket(adm.http, adm.sock);
    adm.sock = NULL;
    hd_free(adm.address);
    adm.port = 0;
}

static void
set_shards(const hd_conf_t *conf)
{
    const char **names = hd_calloc(conf->nredis_targets + 1, sizeof(char *));

    for (size_t i = 0; i < conf->nredis_targets; i++)
        names[i] = conf->redis_targets[i].name;
    hd_render_set_shard_names(names, conf->nredis_targets);
    free(names);
}

/* An inherited admin socket (binary upgrade), taken by hd_admin_start()
 * when it is for the configured address. */
static struct {
    int   fd;
    char *address;
    int   port;
} adopt = { -1, NULL, 0 };

void
hd_admin_adopt(int fd, const char *address, int port)
{
    adopt.fd = fd;
    adopt.address = hd_strdup(address);
    adopt.port = port;
}

int
hd_admin_fd(void)
{
    return adm.sock != NULL ? evhttp_bound_socket_get_fd(adm.sock) : -1;
}

static struct evhttp_bound_socket *
take_adopted(const hd_conf_t *conf)
{
    struct evhttp_bound_socket *s = NULL;

    if (adopt.fd < 0)
        return NULL;
    if (conf->admin_port == adopt.port
        && strcmp(conf->admin_address, adopt.address) == 0)
        s = evhttp_accept_socket_with_handle(adm.http, adopt.fd);
    if (s == NULL)
        close(adopt.fd); /* another address now: bind it below */
    adopt.fd = -1;
    hd_free(adopt.address);
    return s;
}

int
hd_admin_start(struct event_base *base, const hd_conf_t *conf, hd_shm_t *shm)
{
    if (adm.started)
        return -EALREADY;
    adm.base = base;
    adm.shm = shm;
    adm.http = evhttp_new(base);
    if (adm.http == NULL) {
        hd_log_error("evhttp_new() failed");
        return -ENOMEM;
    }
    /* let every method reach handle() so it can answer 405 with Allow */
    evhttp_set_allowed_methods(
        adm.http,
        EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT
            | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE
            | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(adm.http, handle, NULL);
    evhttp_set_timeout(adm.http, 10);
    evhttp_set_max_headers_size(adm.http, 16384);
    evhttp_set_max_body_size(adm.http, 4096);

    adm.tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
    if (adm.tick == NULL) {
        evhttp_free(adm.http);
        adm.http = NULL;
        return -ENOMEM;
    }
    struct timeval one = { 1, 0 };
    event_add(adm.tick, &one);

    adm.started = true;
    set_token(conf->admin_token);
    set_shards(conf);
    adm.sock = take_adopted(conf);
    if (conf->admin_port == 0)
        return 0;
    if (adm.sock == NULL)
        adm.sock = bind_admin(conf->admin_address, conf->admin_port, true);
    if (adm.sock == NULL) {
        int err = errno;
        hd_admin_stop();
        return -err;
    }
    adm.address = hd_strdup(conf->admin_address);
    adm.port = conf->admin_port;
    return 0;
}

int
hd_admin_reconfigure(const hd_conf_t *conf)
{
    if (!adm.started)
        return -EINVAL;
    set_token(conf->admin_token);
    set_shards(conf);
    if (conf->admin_port == 0) {
        if (adm.sock != NULL)
            hd_log_info("admin server off");
        unbind_admin();
        return 0;
    }
    if (adm.sock != NULL && adm.port == conf->admin_port
        && strcmp(adm.address, conf->admin_address) == 0)
        return 0;

    bool may_overlap = adm.sock != NULL && adm.port == conf->admin_port;
    struct evhttp_bound_socket *s = bind_admin(conf->admin_address,
                                               conf->admin_port, !may_overlap);
    int                         err = errno;
    if (s == NULL && may_overlap && err != EADDRINUSE)
        hd_log_error("admin: bind() to %s:%d failed: %s", conf->admin_address,
                     conf->admin_port, strerror(err));
    if (s == NULL && err == EADDRINUSE && may_overlap) {
        /* e.g. 0.0.0.0:9090 -> 127.0.0.1:9090: cannot overlap */
        char *old = hd_strdup(adm.address);
        int   oldport = adm.port;
        unbind_admin();
        s = bind_admin(conf->admin_address, conf->admin_port, true);
        err = errno;
        if (s == NULL) {
            adm.sock = bind_admin(old, oldport, true);
            if (adm.sock != NULL) {
                adm.address = old;
                adm.port = oldport;
                old = NULL;
            } else {
                hd_log_error("admin server is down until the next reload");
            }
        }
        free(old);
    }
    if (s == NULL)
        return -err;
    unbind_admin();
    adm.sock = s;
    adm.address = hd_strdup(conf->admin_address);
    adm.port = conf->admin_port;
    hd_log_info("admin server on %s:%d", adm.address, adm.port);
    return 0;
}

void
hd_admin_stop(void)
{
    if (!adm.started)
        return;
    if (adm.tick != NULL)
        event_free(adm.tick);
    adm.tick = NULL;
    if (adm.http != NULL)
        evhttp_free(adm.http); /* closes the bound sockets too */
    adm.http = NULL;
    adm.sock = NULL;
    hd_free(adm.address);
    adm.port = 0;
    set_token(NULL);
    adm.started = false;
}
