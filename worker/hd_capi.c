/*
 * The cluster-wide HTTP API methods (docs/api.md): the handlers that
 * validate a request and either answer from Redis (presence, history) or
 * send it over the control channel to every worker of every node
 * (disconnect, subscribe, unsubscribe, channels, connections), and the
 * local side of those control operations (hd_cluster_ops[]).
 */
#include <fnmatch.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hd_alloc.h"
#include "hd_api.h"
#include "hd_chname.h"
#include "hd_cluster.h"
#include "hd_jwt.h"
#include "hd_envelope.h"
#include "hd_log.h"
#include "hd_presence.h"
#include "hd_proto.h"
#include "hd_publish.h"
#include "hd_pubsub.h"
#include "hd_redis.h"
#include "hd_time.h"
#include "hd_worker_int.h"

#define USER_MAX    255
#define REASON_MAX  63 /* fits a close frame's reason as herald keeps it */
#define PATTERN_MAX 255

/* ---- validation ------------------------------------------------------------ */

/* A string field: NULL with *bad set when present but not a string of
 * 1..max bytes. */
static const char *
opt_str(json_t *body, const char *name, size_t max, bool *bad)
{
    json_t *v = json_object_get(body, name);

    if (v == NULL)
        return NULL;
    if (!json_is_string(v) || json_string_length(v) == 0
        || json_string_length(v) > max
        || strlen(json_string_value(v)) != json_string_length(v)) {
        *bad = true;
        return NULL;
    }
    return json_string_value(v);
}

static bool
tenant_eq(const hd_conn_t *c, const char *tenant)
{
    const char *t = c->claims != NULL ? c->claims->tenant : NULL;

    if (t == NULL || tenant == NULL)
        return t == tenant;
    return strcmp(t, tenant) == 0;
}

static bool
user_eq(const hd_conn_t *c, const char *user)
{
    return c->claims != NULL && c->claims->sub != NULL
        && strcmp(c->claims->sub, user) == 0;
}

static const char *
arg_str(json_t *args, const char *name)
{
    return json_string_value(json_object_get(args, name));
}

/* The common tail of a gathered reply: partial and the missing nodes. */
static json_t *
with_partial(json_t *result, json_t *missing)
{
    json_object_set_new(result, "partial",
                        json_boolean(json_array_size(missing) > 0));
    json_object_set(result, "missing", missing);
    return json_pack("{s:o}", "result", result);
}

typedef struct ctx {
    hd_api_call_t *a;
    size_t         limit;
} ctx_t;

static ctx_t *
ctx_new(hd_api_call_t *a, size_t limit)
{
    ctx_t *x = hd_malloc(sizeof(*x));
    x->a = a;
    x->limit = limit;
    return x;
}

static int
call_or_fail(hd_api_call_t *a, const char *op, json_t *args, hd_call_cb *cb,
             ctx_t *x)
{
    int rc = hd_cluster_call(op, args, cb, x);

    json_decref(args);
    if (rc < 0) {
        free(x);
        hd_api_fail(a, 503, "redis unavailable, nothing was done");
    }
    return rc;
}

/* "limit": 1..api.list_max, default api.list_max. 0 on a bad value. */
static size_t
get_limit(json_t *body)
{
    json_t *v = json_object_get(body, "limit");
    int     max = hd_w.conf->api_list_max;

    if (v == NULL)
        return (size_t) max;
    if (!json_is_integer(v) || json_integer_value(v) < 1
        || json_integer_value(v) > max)
        return 0;
    return (size_t) json_integer_value(v);
}

/* ---- disconnect --------------------------------------------------------------- */

static json_t *
op_disconnect(json_t *args)
{
    const char *user = arg_str(args, "user");
    const char *tenant = arg_str(args, "tenant");
    const char *client = arg_str(args, "client");
    const char *reason = arg_str(args, "reason");
    json_int_t  code = json_integer_value(json_object_get(args, "code"));
    json_int_t  n = 0;
    char        cid[HD_CLIENT_ID_MAX];

    if (user == NULL || code < 4000 || code > 4999)
        return json_pack("{s:s}", "error", "bad arguments");
    for (hd_conn_t *c = hd_w.conns; c != NULL; c = c->next) {
        if (!c->connected || c->close_code != 0 || !user_eq(c, user)
            || !tenant_eq(c, tenant))
            continue;
        if (client != NULL
            && (hd_cluster_client_id(c, cid) == 0 || strcmp(cid, client) != 0))
            continue;
        hd_conn_close(c, (uint16_t) code,
                      reason ? reason : "disconnected by server");
        n++;
    }
    return json_pack("{s:I}", "closed", n);
}

static void
disconnect_done(int err, json_t *replies, json_t *missing, void *arg)
{
    ctx_t     *x = arg;
    json_int_t n = 0;
    size_t     i;
    json_t    *r;

    if (err != 0) {
        hd_api_fail(x->a, 503, "redis unavailable, nothing was done");
        free(x);
        return;
    }
    json_array_foreach(replies, i, r)
    {
        n += json_integer_value(
            json_object_get(json_object_get(r, "result"), "closed"));
    }
    hd_api_answer(x->a, 200,
                  with_partial(json_pack("{s:I}", "closed", n), missing));
    free(x);
}

void
hd_capi_disconnect(hd_api_call_t *a, json_t *body, const char *tenant)
{
    bool        bad = false;
    const char *user = opt_str(body, "user", USER_MAX, &bad);
    const char *client, *reason;
    json_t     *jc = json_object_get(body, "code"), *args;
    json_int_t  code = HD_CLOSE_DISCONNECTED;

    if (user == NULL) {
        hd_api_fail(a, 400, "\"user\" must be a string of 1..255 bytes");
        return;
    }
    client = opt_str(body, "client", HD_CLIENT_ID_MAX - 1, &bad);
    if (bad) {
        hd_api_fail(a, 400, "\"client\" must be a client id string");
        return;
    }
    reason = opt_str(body, "reason", REASON_MAX, &bad);
    if (bad) {
        hd_api_fail(a, 400, "\"reason\" must be a string of 1..63 bytes");
        return;
    }
    if (jc != NULL) {
        if (!json_is_integer(jc) || json_integer_value(jc) < 4000
            || json_integer_value(jc) > 4999) {
            hd_api_fail(a, 400,
                        "\"code\" must be a close code from 4000 to 4999 "
                        "(4000-4499: the client may reconnect, 4500-4999: "
                        "it should not)");
            return;
        }
        code = json_integer_value(jc);
    }
    args = json_pack("{s:s, s:I}", "user", user, "code", code);
    if (tenant != NULL)
        json_object_set_new(args, "tenant", json_string(tenant));
    if (client != NULL)
        json_object_set_new(args, "client", json_string(client));
    if (reason != NULL)
        json_object_set_new(args, "reason", json_string(reason));
    call_or_fail(a, "disconnect", args, disconnect_done, ctx_new(a, 0));
}

/* ---- connections ------------------------------------------------------------ */

static json_t *
conn_row(const hd_conn_t *c, double now_wall, uint64_t now_mono)
{
    char    cid[HD_CLIENT_ID_MAX];
    json_t *subs = json_array();
    json_t *row;

    hd_cluster_client_id(c, cid);
    for (uint32_t i = 0; i < c->nsubs; i++)
        json_array_append_new(
            subs,
            json_stringn(c->subs[i].chan->name, c->subs[i].chan->name_len));
    row = json_pack("{s:s, s:s, s:i, s:f, s:o, s:I}", "client", cid, "node",
                    hd_node_id, "worker", (int) hd_w.id, "connected_at",
                    now_wall - (double) (now_mono - c->accepted_ns) / 1e9,
                    "subscriptions", subs, "queued_bytes",
                    (json_int_t) c->q_bytes);
    if (c->claims != NULL && c->claims->sub != NULL)
        json_object_set_new(row, "user", json_string(c->claims->sub));
    if (c->claims != NULL && c->claims->tenant != NULL)
        json_object_set_new(row, "tenant", json_string(c->claims->tenant));
    if (hd_w.conf->api_expose_ips) {
        char ip[INET6_ADDRSTRLEN];
        json_object_set_new(row, "ip",
                            json_string(hd_conn_addr(c, ip, sizeof(ip))));
    }
    return row;
}

static json_t *
op_connections(json_t *args)
{
    const char *user = arg_str(args, "user");
    const char *tenant = arg_str(args, "tenant");
    size_t  limit = (size_t) json_integer_value(json_object_get(args, "limit"));
    json_t *rows = json_array();
    json_int_t total = 0;
    double     now_wall = hd_wall_sec();
    uint64_t   now_mono = hd_mono_ns();

    for (hd_conn_t *c = hd_w.conns; c != NULL; c = c->next) {
        if (!c->connected || !tenant_eq(c, tenant)
            || (user != NULL && !user_eq(c, user)))
            continue;
        total++;
        if (json_array_size(rows) < limit)
            json_array_append_new(rows, conn_row(c, now_wall, now_mono));
    }
    return json_pack("{s:o, s:I}", "connections", rows, "total", total);
}

static void
connections_done(int err, json_t *replies, json_t *missing, void *arg)
{
    ctx_t     *x = arg;
    json_t    *rows = json_array(), *r, *row;
    json_int_t total = 0;
    size_t     i, k;

    if (err != 0) {
        json_decref(rows);
        hd_api_fail(x->a, 503, "redis unavailable");
        free(x);
        return;
    }
    json_array_foreach(replies, i, r)
    {
        json_t *res = json_object_get(r, "result");
        total += json_integer_value(json_object_get(res, "total"));
        json_array_foreach(json_object_get(res, "connections"), k, row)
        {
            if (json_array_size(rows) < x->limit)
                json_array_append(rows, row);
        }
    }
    hd_api_answer(
        x->a, 200,
        with_partial(json_pack("{s:o, s:I, s:b}", "connections", rows, "total",
                               total, "truncated",
                               (json_int_t) json_array_size(rows) < total),
                     missing));
    free(x);
}

void
hd_capi_connections(hd_api_call_t *a, json_t *body, const char *tenant)
{
    bool        bad = false;
    const char *user = opt_str(body, "user", USER_MAX, &bad);
    size_t      limit = get_limit(body);
    json_t     *args;

    if (bad) {
        hd_api_fail(a, 400, "\"user\" must be a string of 1..255 bytes");
        return;
    }
    if (limit == 0) {
        hd_api_fail(a, 400,
                    "\"limit\" must be an integer from 1 to "
                    "api.list_max");
        return;
    }
    args = json_pack("{s:I}", "limit", (json_int_t) limit);
    if (user != NULL)
        json_object_set_new(args, "user", json_string(user));
    if (tenant != NULL)
        json_object_set_new(args, "tenant", json_string(tenant));
    call_or_fail(a, "connections", args, connections_done, ctx_new(a, limit));
}

/* ---- channels ------------------------------------------------------------------ */

/*
 * A worker may hold millions of channels, so neither its reply nor the
 * merge may hold them all: a page is the `limit` first matching names
 * after `cursor`, in byte order. Each worker sends at most its own
 * `limit` first (picked with a max-heap of that size while it walks its
 * table), so the merge holds at most workers x limit names; and a name
 * among the page's `limit` first is among every worker's `limit` first,
 * so its subscriber count sums every worker that has it.
 */

static int
name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int r = memcmp(a, b, alen < blen ? alen : blen);

    return r != 0 ? r : (alen > blen) - (alen < blen);
}

static int
chan_cmp(const hd_chan_t *a, const hd_chan_t *b)
{
    return name_cmp(a->name, a->name_len, b->name, b->name_len);
}

typedef struct chan_walk {
    const char       *tenant;
    const char       *pattern;
    const char       *cursor; /* NULL: from the first name */
    size_t            limit;
    const hd_chan_t **heap; /* max-heap by name, at most limit */
    size_t            n;
    json_int_t        total; /* every match, whatever the cursor */
    size_t            after; /* matches after the cursor */
} chan_walk_t;

static void
heap_down(chan_walk_t *w, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->n && chan_cmp(w->heap[l], w->heap[m]) > 0)
            m = l;
        if (r < w->n && chan_cmp(w->heap[r], w->heap[m]) > 0)
            m = r;
        if (m == i)
            return;
        const hd_chan_t *t = w->heap[i];
        w->heap[i] = w->heap[m];
        w->heap[m] = t;
        i = m;
    }
}

static void
heap_add(chan_walk_t *w, const hd_chan_t *ch)
{
    size_t i;

    if (w->n == w->limit) {
        if (chan_cmp(ch, w->heap[0]) >= 0)
            return; /* past the page */
        w->heap[0] = ch;
        heap_down(w, 0);
        return;
    }
    for (i = w->n++; i > 0 && chan_cmp(ch, w->heap[(i - 1) / 2]) > 0;
         i = (i - 1) / 2)
        w->heap[i] = w->heap[(i - 1) / 2];
    w->heap[i] = ch;
}

static void
chan_visit(const hd_chan_t *ch, void *arg)
{
    chan_walk_t *w = arg;
    size_t       tl = w->tenant ? strlen(w->tenant) : 0;
    char         name[256];

    if (ch->nmembers == 0 || ch->name_len >= sizeof(name))
        return;
    /* key "herald|T|C": the tenant is between the bars */
    if ((size_t) (ch->name - ch->key) != 8 + tl
        || (tl > 0 && memcmp(ch->key + 7, w->tenant, tl) != 0))
        return;
    memcpy(name, ch->name, ch->name_len);
    name[ch->name_len] = '\0';
    if (w->pattern != NULL && fnmatch(w->pattern, name, 0) != 0)
        return;
    w->total++;
    if (w->cursor != NULL
        && name_cmp(ch->name, ch->name_len, w->cursor, strlen(w->cursor)) <= 0)
        return;
    w->after++;
    heap_add(w, ch);
}

/* {"channels": {name: local subscribers} (at most limit), "total": local
 * matches, "more": whether some after the cursor were left out}. An older
 * merge reads "channels" alone and still gets the right page. */
static json_t *
op_channels(json_t *args)
{
    json_int_t  lim = json_integer_value(json_object_get(args, "limit"));
    chan_walk_t w = { .tenant = arg_str(args, "tenant"),
                      .pattern = arg_str(args, "pattern"),
                      .cursor = arg_str(args, "cursor") };
    json_t     *out = json_object();
    char        name[256];

    /* a request from an older node has no limit: the most there is */
    w.limit = lim >= 1 && lim <= hd_w.conf->api_list_max
        ? (size_t) lim
        : (size_t) hd_w.conf->api_list_max;
    /* the heap never holds more than the table */
    w.heap = hd_malloc((w.limit < hd_chan_count() ? w.limit : hd_chan_count())
                           * sizeof(*w.heap)
                       + sizeof(*w.heap));
    hd_chan_foreach(chan_visit, &w);
    for (size_t i = 0; i < w.n; i++) {
        memcpy(name, w.heap[i]->name, w.heap[i]->name_len);
        name[w.heap[i]->name_len] = '\0';
        json_object_set_new(out, name, json_integer(w.heap[i]->nmembers));
    }
    free(w.heap);
    return json_pack("{s:o, s:I, s:b}", "channels", out, "total", w.total,
                     "more", w.after > w.n);
}

typedef struct chan_ctx {
    ctx_t base; /* first: freed as one */
    char *cursor;
} chan_ctx_t;

static int
str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *) a, *(const char *const *) b);
}

static void
channels_done(int err, json_t *replies, json_t *missing, void *arg)
{
    chan_ctx_t *x = arg;
    size_t      limit = x->base.limit, nsum, i, k;
    json_t     *sum, *res, *r, *v, *list, *out;
    const char *name, **names;
    json_int_t  total = 0;
    bool        more = false;

    if (err != 0) {
        hd_api_fail(x->base.a, 503, "redis unavailable");
        goto done;
    }
    sum = json_object();
    json_array_foreach(replies, i, r)
    {
        res = json_object_get(r, "result");
        /* an older worker sends every channel and no total */
        json_t *jt = json_object_get(res, "total");
        total += json_is_integer(jt)
            ? json_integer_value(jt)
            : (json_int_t) json_object_size(json_object_get(res, "channels"));
        more = more || json_is_true(json_object_get(res, "more"));
        json_object_foreach(json_object_get(res, "channels"), name, v)
        {
            if (x->cursor != NULL && strcmp(name, x->cursor) <= 0)
                continue;
            json_t *cur = json_object_get(sum, name);
            json_object_set_new(
                sum, name,
                json_integer(json_integer_value(cur) + json_integer_value(v)));
        }
    }
    nsum = json_object_size(sum);
    names = hd_malloc((nsum ? nsum : 1) * sizeof(*names));
    k = 0;
    json_object_foreach(sum, name, v)
    {
        names[k++] = name;
    }
    qsort(names, nsum, sizeof(*names), str_cmp);
    list = json_array();
    for (k = 0; k < nsum && k < limit; k++)
        json_array_append_new(list,
                              json_pack("{s:s, s:O}", "channel", names[k],
                                        "subscribers",
                                        json_object_get(sum, names[k])));
    more = more || nsum > limit;
    /* the whole set was seen: count it exactly (one channel may have
     * subscribers on several workers) */
    if (!more && x->cursor == NULL)
        total = (json_int_t) nsum;
    out = json_pack("{s:o, s:I, s:b}", "channels", list, "total", total,
                    "truncated", more);
    if (more && k > 0)
        json_object_set_new(out, "cursor", json_string(names[k - 1]));
    hd_api_answer(x->base.a, 200, with_partial(out, missing));
    free(names);
    json_decref(sum);
done:
    free(x->cursor);
    free(x);
}

void
hd_capi_channels(hd_api_call_t *a, json_t *body, const char *tenant)
{
    bool        bad = false;
    const char *pattern = opt_str(body, "pattern", PATTERN_MAX, &bad);
    const char *cursor;
    size_t      limit = get_limit(body);
    json_t     *args;
    chan_ctx_t *x;

    if (bad) {
        hd_api_fail(a, 400,
                    "\"pattern\" must be a glob (fnmatch) of 1..255 bytes");
        return;
    }
    cursor = opt_str(body, "cursor", HD_CHNAME_MAX, &bad);
    if (bad) {
        hd_api_fail(a, 400,
                    "\"cursor\" must be a channel name (the \"cursor\" of "
                    "the previous reply)");
        return;
    }
    if (limit == 0) {
        hd_api_fail(a, 400,
                    "\"limit\" must be an integer from 1 to "
                    "api.list_max");
        return;
    }
    args = json_pack("{s:I}", "limit", (json_int_t) limit);
    if (pattern != NULL)
        json_object_set_new(args, "pattern", json_string(pattern));
    if (tenant != NULL)
        json_object_set_new(args, "tenant", json_string(tenant));
    if (cursor != NULL)
        json_object_set_new(args, "cursor", json_string(cursor));
    x = hd_calloc(1, sizeof(*x));
    x->base.a = a;
    x->base.limit = limit;
    x->cursor = cursor != NULL ? hd_strdup(cursor) : NULL;
    if (hd_cluster_call("channels", args, channels_done, x) < 0) {
        free(x->cursor);
        free(x);
        hd_api_fail(a, 503, "redis unavailable, nothing was done");
    }
    json_decref(args);
}

/* ---- info ------------------------------------------------------------------------ */

static void
info_done(int err, json_t *instances, void *arg)
{
    ctx_t      *x = arg;
    json_t     *nodes, *list, *inst, *n;
    const char *id;
    double      now = hd_wall_sec();

    if (err != 0) {
        hd_api_fail(x->a, 503, "redis unavailable");
        free(x);
        return;
    }
    nodes = json_object();
    json_object_foreach(instances, id, inst)
    {
        const char *nid = json_string_value(json_object_get(inst, "node"));
        if (nid == NULL)
            continue;
        n = json_object_get(nodes, nid);
        if (n == NULL) {
            double st = json_number_value(json_object_get(inst, "started_at"));
            n = json_pack("{s:s, s:O, s:O, s:f, s:f, s:i, s:i, s:i, s:i}", "id",
                          nid, "name", json_object_get(inst, "name"), "version",
                          json_object_get(inst, "version"), "started_at", st,
                          "uptime_s", now - st, "workers", 0, "connections", 0,
                          "subscriptions", 0, "channels", 0);
            json_object_set_new(nodes, nid, n);
        }
        static const char *const sum[] = { "connections", "subscriptions",
                                           "channels" };
        for (size_t i = 0; i < 3; i++)
            json_object_set_new(
                n, sum[i],
                json_integer(
                    json_integer_value(json_object_get(n, sum[i]))
                    + json_integer_value(json_object_get(inst, sum[i]))));
        json_object_set_new(
            n, "workers",
            json_integer(json_integer_value(json_object_get(n, "workers"))
                         + 1));
    }
    list = json_array();
    json_object_foreach(nodes, id, n)
    {
        json_array_append(list, n);
    }
    json_decref(nodes);
    hd_api_answer(x->a, 200, json_pack("{s:{s:o}}", "result", "nodes", list));
    free(x);
}

void
hd_capi_info(hd_api_call_t *a, json_t *body, const char *tenant)
{
    ctx_t *x = ctx_new(a, 0);
    (void) body;
    (void) tenant;

    if (hd_cluster_instances(info_done, x) < 0) {
        free(x);
        hd_api_fail(a, 503, "redis unavailable");
    }
}

/* ---- presence -------------------------------------------------------------- */

/*
 * "channel" of the body, for the server (any configured namespace) in
 * tenant: the Redis key into key (HD_KEY_MAX) and the namespace; or an
 * answer (400) and NULL.
 */
static const hd_ns_t *
api_channel(hd_api_call_t *a, json_t *body, const char *tenant, char *key,
            size_t *key_len)
{
    hd_publisher_t  who = { .server = true, .tenant = tenant };
    hd_pub_target_t t;
    hd_pub_error_t  e;
    json_t         *jc = json_object_get(body, "channel");
    size_t          name_off;

    if (!json_is_string(jc)
        || hd_pub_resolve(&who, json_string_value(jc), json_string_length(jc),
                          false, &t, &e)
            < 0) {
        hd_api_fail(a, 400,
                    json_is_string(jc) && e.why == HD_PUB_UNKNOWN_NS
                        ? "unknown namespace"
                        : "\"channel\" must be a valid channel name");
        return NULL;
    }
    *key_len = hd_pub_key(&who, &t, key, &name_off);
    if (*key_len == 0) {
        hd_api_fail(a, 400, "channel name too long");
        return NULL;
    }
    return t.ns;
}

static void
presence_done(int err, long long clients, long long users, json_t *entries,
              void *arg)
{
    ctx_t *x = arg;

    if (err != 0)
        hd_api_fail(x->a, 503, "redis unavailable");
    else if (x->limit == 0)
        hd_api_answer(x->a, 200,
                      json_pack("{s:{s:I, s:I}}", "result", "clients",
                                (json_int_t) clients, "users",
                                (json_int_t) users));
    else
        hd_api_answer(
            x->a, 200,
            json_pack("{s:{s:O, s:I, s:b}}", "result", "clients", entries,
                      "total", (json_int_t) clients, "truncated",
                      (long long) json_array_size(entries) < clients));
    free(x);
}

static void
presence_common(hd_api_call_t *a, json_t *body, const char *tenant, bool stats)
{
    char           key[HD_KEY_MAX];
    size_t         key_len, limit = 0;
    const hd_ns_t *ns = api_channel(a, body, tenant, key, &key_len);
    ctx_t         *x;

    if (ns == NULL)
        return;
    if (!ns->presence) {
        hd_api_fail(a, 400, "the channel's namespace keeps no presence");
        return;
    }
    if (!stats && (limit = get_limit(body)) == 0) {
        hd_api_fail(a, 400,
                    "\"limit\" must be an integer from 1 to "
                    "api.list_max");
        return;
    }
    x = ctx_new(a, limit);
    if (hd_presence_read(ns, key, key_len, limit, presence_done, x) < 0) {
        free(x);
        hd_api_fail(a, 503, "redis unavailable");
    }
}

void
hd_capi_presence(hd_api_call_t *a, json_t *body, const char *tenant)
{
    presence_common(a, body, tenant, false);
}

void
hd_capi_presence_stats(hd_api_call_t *a, json_t *body, const char *tenant)
{
    presence_common(a, body, tenant, true);
}

/* ---- server-side subscribe / unsubscribe ------------------------------------ */

/* Next id for a subscription the server makes: negative, so it can never
 * be a client's command id; the subscribe hooks (hd_proto.c) push instead
 * of replying when they see one. */
static int64_t next_server_id = -1;

static json_t *
op_sub(json_t *args, bool sub)
{
    const char     *user = arg_str(args, "user");
    const char     *tenant = arg_str(args, "tenant");
    const char     *client = arg_str(args, "client");
    const char     *chan = arg_str(args, "channel");
    hd_publisher_t  who = { .server = true, .tenant = tenant };
    hd_pub_target_t t;
    hd_pub_error_t  e;
    char            key[HD_KEY_MAX], cid[HD_CLIENT_ID_MAX];
    size_t          key_len, name_off;
    json_int_t      n = 0;

    if (user == NULL || chan == NULL
        || hd_pub_resolve(&who, chan, strlen(chan), false, &t, &e) < 0
        || (key_len = hd_pub_key(&who, &t, key, &name_off)) == 0)
        return json_pack("{s:s}", "error", "bad arguments");
    for (hd_conn_t *c = hd_w.conns; c != NULL; c = c->next) {
        if (!c->connected || c->close_code != 0 || !user_eq(c, user)
            || !tenant_eq(c, tenant))
            continue;
        if (client != NULL
            && (hd_cluster_client_id(c, cid) == 0 || strcmp(cid, client) != 0))
            continue;
        if (sub) {
            if (hd_proto_server_subscribe(c, key, key_len, name_off, t.ns,
                                          next_server_id)
                == 0) {
                next_server_id--;
                n++;
            }
        } else if (hd_proto_server_unsubscribe(c, key, key_len) == 0) {
            n++;
        }
    }
    return json_pack("{s:I}", sub ? "subscribed" : "unsubscribed", n);
}

static json_t *
op_subscribe(json_t *args)
{
    return op_sub(args, true);
}

static json_t *
op_unsubscribe(json_t *args)
{
    return op_sub(args, false);
}

static void
sub_done(int err, json_t *replies, json_t *missing, void *arg)
{
    ctx_t      *x = arg;
    const char *what = x->limit ? "subscribed" : "unsubscribed";
    json_int_t  n = 0;
    size_t      i;
    json_t     *r;

    if (err != 0) {
        hd_api_fail(x->a, 503, "redis unavailable, nothing was done");
        free(x);
        return;
    }
    json_array_foreach(replies, i, r)
    {
        n += json_integer_value(
            json_object_get(json_object_get(r, "result"), what));
    }
    hd_api_answer(x->a, 200,
                  with_partial(json_pack("{s:I}", what, n), missing));
    free(x);
}

static void
sub_common(hd_api_call_t *a, json_t *body, const char *tenant, bool sub)
{
    bool        bad = false;
    const char *user = opt_str(body, "user", USER_MAX, &bad);
    const char *client;
    char        key[HD_KEY_MAX];
    size_t      key_len;
    json_t     *args;

    if (user == NULL) {
        hd_api_fail(a, 400, "\"user\" must be a string of 1..255 bytes");
        return;
    }
    client = opt_str(body, "client", HD_CLIENT_ID_MAX - 1, &bad);
    if (bad) {
        hd_api_fail(a, 400, "\"client\" must be a client id string");
        return;
    }
    if (api_channel(a, body, tenant, key, &key_len) == NULL)
        return;
    args = json_pack("{s:s, s:O}", "user", user, "channel",
                     json_object_get(body, "channel"));
    if (tenant != NULL)
        json_object_set_new(args, "tenant", json_string(tenant));
    if (client != NULL)
        json_object_set_new(args, "client", json_string(client));
    call_or_fail(a, sub ? "subscribe" : "unsubscribe", args, sub_done,
                 ctx_new(a, sub ? 1 : 0));
}

void
hd_capi_subscribe(hd_api_call_t *a, json_t *body, const char *tenant)
{
    sub_common(a, body, tenant, true);
}

void
hd_capi_unsubscribe(hd_api_call_t *a, json_t *body, const char *tenant)
{
    sub_common(a, body, tenant, false);
}

/* ---- history ---------------------------------------------------------------- */

static void
history_done(int err, const hd_hist_reply_t *r, void *arg)
{
    ctx_t  *x = arg;
    json_t *pubs;

    if (err != 0) {
        hd_api_fail(x->a, 503, "redis unavailable");
    } else if (r->status == -1) {
        hd_api_fail(x->a, 410,
                    "the channel's epoch changed: that history is gone");
    } else {
        pubs = json_array();
        for (size_t i = 0; i < r->n; i++) {
            hd_envelope_t env;
            json_t       *d;
            if (hd_envelope_decode(r->env[i], r->env_len[i], &env) < 0
                || (d = json_loadb(env.data, env.data_len, JSON_DECODE_ANY,
                                   NULL))
                    == NULL)
                continue;
            json_array_append_new(pubs,
                                  json_pack("{s:I, s:o}", "offset",
                                            (json_int_t) env.offset, "data",
                                            d));
        }
        hd_api_answer(x->a, 200,
                      json_pack("{s:{s:I, s:s, s:o}}", "result", "offset",
                                (json_int_t) r->offset, "epoch", r->epoch,
                                "publications", pubs));
    }
    free(x);
}

void
hd_capi_history(hd_api_call_t *a, json_t *body, const char *tenant)
{
    char           key[HD_KEY_MAX];
    size_t         key_len;
    const hd_ns_t *ns = api_channel(a, body, tenant, key, &key_len);
    unsigned       limit;
    int64_t        since;
    const char    *epoch;
    hd_pub_error_t e;
    ctx_t         *x;

    if (ns == NULL)
        return;
    if (ns->history_size == 0) {
        hd_api_fail(a, 400, "the channel's namespace keeps no history");
        return;
    }
    if (hd_pub_history_args(body, ns, &limit, &since, &epoch, &e) < 0) {
        hd_api_fail(a, e.code, e.msg);
        return;
    }
    x = ctx_new(a, 0);
    if (hd_pubsub_history(ns, key, key_len, limit, since, epoch, history_done,
                          x)
        < 0) {
        free(x);
        hd_api_fail(a, 503, "redis unavailable");
    }
}

static void
remove_done(redisReply *r, const char *err, void *arg)
{
    ctx_t *x = arg;
    (void) err;

    if (r == NULL || r->type != REDIS_REPLY_INTEGER)
        hd_api_fail(x->a, 503, "redis unavailable, nothing was removed");
    else
        hd_api_answer(x->a, 200,
                      json_pack("{s:{s:I}}", "result", "removed",
                                (json_int_t) r->integer));
    free(x);
}

/*
 * Empty the channel's history stream (XTRIM to 0) rather than delete it:
 * the channel keeps its epoch and offsets, so live subscribers see no
 * restart, and a recovery from before the removal is told it cannot
 * recover (the publications it would need are gone), never given part.
 */
void
hd_capi_history_remove(hd_api_call_t *a, json_t *body, const char *tenant)
{
    char           key[HD_KEY_MAX], sk[HD_KEY_MAX + 16];
    size_t         key_len;
    const hd_ns_t *ns = api_channel(a, body, tenant, key, &key_len);
    ctx_t         *x;
    int            n;

    if (ns == NULL)
        return;
    if (ns->history_size == 0) {
        hd_api_fail(a, 400, "the channel's namespace keeps no history");
        return;
    }
    n = snprintf(sk, sizeof(sk), "{%.*s}:hist", (int) key_len, key);
    {
        const char *argv[4] = { "XTRIM", sk, "MAXLEN", "0" };
        size_t      lens[4] = { 5, (size_t) n, 6, 1 };
        x = ctx_new(a, 0);
        if (hd_redis_cmd(hd_redis_shard_of(key, key_len), remove_done, x, 4,
                         argv, lens)
            < 0) {
            free(x);
            hd_api_fail(a, 503, "redis unavailable, nothing was removed");
        }
    }
}

const hd_cluster_op_t hd_cluster_ops[] = {
    { "disconnect", op_disconnect },   { "connections", op_connections },
    { "channels", op_channels },       { "subscribe", op_subscribe },
    { "unsubscribe", op_unsubscribe }, { NULL, NULL },
};
