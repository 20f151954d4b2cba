/*
 * Node registry and control channel; see hd_cluster.h for the model.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "hd_alloc.h"
#include "hd_cluster.h"
#include "hd_log.h"
#include "hd_metrics.h"
#include "hd_presence.h"
#include "hd_script.h"
#include "hd_time.h"
#include "hd_version.h"
#include "hd_worker_int.h"

#define K_WORKERS "herald#workers"
#define K_INFO    "herald#workerinfo"
#define CTL_CHAN  "herald#ctl"

char hd_node_id[HD_NODE_ID_LEN + 1];
char hd_instance_id[40];

/*
 * Beat: drop expired instances (everyone's), then (re)register this one,
 * or leave when ARGV[3] is empty. Times are Redis' clock, so nodes with
 * skewed clocks still agree on who is alive.
 */
static hd_script_t s_beat = HD_SCRIPT(
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "for i = 1, #dead do\n"
    "  redis.call('ZREM', KEYS[1], dead[i])\n"
    "  redis.call('HDEL', KEYS[2], dead[i])\n"
    "end\n"
    "if ARGV[3] == '' then\n"
    "  redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "  redis.call('HDEL', KEYS[2], ARGV[1])\n"
    "  return 0\n"
    "end\n"
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])\n"
    "redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])\n"
    "return #dead\n");

/* The live instances and their figures: {id1, info1, id2, info2, ...}. */
static hd_script_t s_list = HD_SCRIPT(
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')\n"
    "if #live == 0 then return {} end\n"
    "local info = redis.call('HMGET', KEYS[2], unpack(live))\n"
    "local out = {}\n"
    "for i = 1, #live do\n"
    "  out[#out + 1] = live[i]\n"
    "  out[#out + 1] = info[i] or '{}'\n"
    "end\n"
    "return out\n");

typedef struct call {
    struct call *next;
    uint64_t     seq;
    char        *op;
    json_t      *args;
    hd_call_cb  *cb;
    void        *arg;
    json_t      *expected; /* instance -> node id */
    json_t      *got;      /* instance -> true */
    json_t      *replies;
    ev_timer     timer;
    bool         sent;
} call_t;

static struct {
    bool     started;
    bool     ctl_ready; /* both control subscriptions confirmed */
    int      nconfirmed;
    char     reply_chan[64];
    ev_timer beat_w;
    call_t  *calls;
    uint64_t seq;
    double   started_at;   /* node start, unix seconds */
    uint64_t last_beat_ms; /* last heartbeat Redis took (monotonic) */
} C;

static void
make_ids(void)
{
    char          host[256], buf[512];
    unsigned char md[32];
    unsigned int  mdlen = 0;
    int           n;

    if (gethostname(host, sizeof(host)) < 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    /* the master's pid and start time: the same in every worker of one
     * node, different for a restarted node on the same host */
    n = snprintf(buf, sizeof(buf), "%s|%d|%.9f", host, (int) getppid(),
                 hd_shm_start_time(hd_w.shm));
    if (EVP_Digest(buf, (size_t) n, md, &mdlen, EVP_sha256(), NULL) != 1)
        memset(md, 0, sizeof(md));
    for (int i = 0; i < HD_NODE_ID_LEN / 2; i++)
        snprintf(hd_node_id + 2 * i, 3, "%02x", md[i]);
    snprintf(hd_instance_id, sizeof(hd_instance_id), "%s-%u-%x", hd_node_id,
             hd_w.id, (unsigned) getpid());
    snprintf(C.reply_chan, sizeof(C.reply_chan), "herald#rep#%s",
             hd_instance_id);
}

size_t
hd_cluster_client_id(const hd_conn_t *c, char *buf)
{
    int n = snprintf(buf, HD_CLIENT_ID_MAX, "%s-%llx", hd_instance_id,
                     (unsigned long long) c->id);
    return n > 0 && n < HD_CLIENT_ID_MAX ? (size_t) n : 0;
}

static const char *
node_name(void)
{
    static char host[65];

    if (hd_w.conf->node_name != NULL)
        return hd_w.conf->node_name;
    if (host[0] == '\0' && gethostname(host, sizeof(host) - 1) < 0)
        snprintf(host, sizeof(host), "localhost");
    return host;
}

/* ---- registry ------------------------------------------------------------ */

static void
beat_cb(redisReply *r, const char *err, void *arg)
{
    uint64_t now = hd_mono_ms();

    if (arg != NULL)
        ev_break(hd_w.loop, EVBREAK_ONE); /* the leave is through */
    if (r != NULL && r->type == REDIS_REPLY_INTEGER && arg == NULL) {
        /* a beat after a silence past the ttl: the others may have swept
         * our presence entries (and told our clients' watchers they
         * left); put back those that are gone */
        if (C.last_beat_ms != 0
            && now - C.last_beat_ms
                >= (uint64_t) hd_w.conf->cluster_node_ttl_ms) {
            hd_log_info("registry heartbeat back after %llu ms; "
                        "restoring presence",
                        (unsigned long long) (now - C.last_beat_ms));
            hd_presence_reannounce_all();
        }
        C.last_beat_ms = now;
    }
    if (r == NULL)
        hd_log_debug("registry heartbeat failed: %s", err);
    else if (r->type == REDIS_REPLY_ERROR)
        hd_log_warn("registry heartbeat failed: %s", r->str);
}

static void
beat(bool leave)
{
    char        ttl[16], *info;
    const char *args[5];
    size_t      lens[5];
    json_t     *j;

    if (!leave && !C.ctl_ready)
        return; /* not reachable by the control channel yet */
    j = json_pack(
        "{s:s, s:s, s:i, s:i, s:s, s:f, s:I, s:I, s:I, s:f}", "node",
        hd_node_id, "name", node_name(), "worker", (int) hd_w.id, "pid",
        (int) getpid(), "version", HD_VERSION, "started_at", C.started_at,
        "connections", (json_int_t) hd_w.nconns, "subscriptions",
        (json_int_t) (hd_metrics_cur ? hd_metrics_cur->gauge[HD_G_SUBSCRIPTIONS]
                                     : 0),
        "channels", (json_int_t) hd_chan_count(), "at", hd_wall_sec());
    info = leave ? hd_strdup("") : json_dumps(j, JSON_COMPACT);
    json_decref(j);
    snprintf(ttl, sizeof(ttl), "%d", hd_w.conf->cluster_node_ttl_ms);
    args[0] = K_WORKERS;
    args[1] = K_INFO;
    args[2] = hd_instance_id;
    args[3] = ttl;
    args[4] = info;
    for (int i = 0; i < 5; i++)
        lens[i] = strlen(args[i]);
    (void) hd_script_run(&s_beat, 2, 5, args, lens, beat_cb, leave ? &C : NULL);
    /* with redis.shards, every shard keeps a copy of the registry: the
     * presence scripts run on a channel's shard and ask it who is alive */
    for (unsigned s = 1; s < hd_redis_nshards(); s++)
        (void) hd_script_run_on(s, &s_beat, 2, 5, args, lens, beat_cb, NULL);
    free(info);
}

/* ---- what the master shows (/stats "cluster", the monitor page) ---------- */

#define TOP_CHANNELS 10

typedef struct top {
    const hd_chan_t *ch[TOP_CHANNELS];
    size_t           n;
} top_t;

static void
top_visit(const hd_chan_t *ch, void *arg)
{
    top_t *t = arg;
    size_t i;

    if (ch->nmembers == 0
        || (t->n == TOP_CHANNELS
            && ch->nmembers <= t->ch[TOP_CHANNELS - 1]->nmembers))
        return;
    if (t->n < TOP_CHANNELS)
        t->n++;
    for (i = t->n - 1; i > 0 && t->ch[i - 1]->nmembers < ch->nmembers; i--)
        t->ch[i] = t->ch[i - 1];
    t->ch[i] = ch;
}

/*
 * Publish this worker's top channels (by local subscribers) and the
 * cluster's nodes (from the registry; NULL: unknown now) into its shm
 * slot, for the master. Bounded: 10 channels, at most 16 nodes.
 */
static void
publish_view(json_t *instances)
{
    top_t       t = { .n = 0 };
    json_t     *root, *chans = json_array(), *nodes = NULL, *inst, *n;
    const char *id;
    char       *text;

    hd_chan_foreach(top_visit, &t);
    for (size_t i = 0; i < t.n; i++) {
        const hd_chan_t *ch = t.ch[i];
        size_t           tl = (size_t) (ch->name - ch->key) - 8;
        json_array_append_new(chans,
                              json_pack("{s:s%, s:s%, s:i}", "tenant",
                                        ch->key + 7, tl, "channel", ch->name,
                                        ch->name_len, "subscribers",
                                        (int) ch->nmembers));
    }
    if (instances != NULL) {
        json_t *byid = json_object();
        json_object_foreach(instances, id, inst)
        {
            const char *nid = json_string_value(json_object_get(inst, "node"));
            if (nid == NULL)
                continue;
            n = json_object_get(byid, nid);
            if (n == NULL) {
                if (json_object_size(byid) >= 16)
                    continue;
                n = json_pack("{s:s, s:O, s:i, s:i}", "id", nid, "name",
                              json_object_get(inst, "name"), "workers", 0,
                              "connections", 0);
                json_object_set_new(byid, nid, n);
            }
            json_object_set_new(
                n, "workers",
                json_integer(json_integer_value(json_object_get(n, "workers"))
                             + 1));
            json_object_set_new(
                n, "connections",
                json_integer(
                    json_integer_value(json_object_get(n, "connections"))
                    + json_integer_value(
                        json_object_get(inst, "connections"))));
        }
        nodes = json_array();
        json_object_foreach(byid, id, n)
        {
            json_array_append(nodes, n);
        }
        json_decref(byid);
    }
    root = json_pack("{s:s, s:f, s:o, s:o}", "node", hd_node_id, "at",
                     hd_wall_sec(), "top_channels", chans, "nodes",
                     nodes != NULL ? nodes : json_null());
    text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (text != NULL) {
        hd_shm_slot_info_set(hd_w.slot, text, strlen(text));
        free(text);
    }
}

static void
view_cb(int err, json_t *instances, void *arg)
{
    (void) arg;
    publish_view(err == 0 ? instances : NULL);
}

static void
beat_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) w;
    (void) revents;
    beat(false);
    if (hd_cluster_instances(view_cb, NULL) < 0)
        publish_view(NULL);
}

typedef struct list_req {
    hd_nodes_cb *cb;
    void        *arg;
} list_req_t;

/* {id, info, ...} -> object id -> parsed info */
static json_t *
parse_list(redisReply *r)
{
    json_t *o = json_object();

    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        redisReply *id = r->element[i], *in = r->element[i + 1];
        json_t     *info;
        if (id->type != REDIS_REPLY_STRING || in->type != REDIS_REPLY_STRING)
            continue;
        info = json_loadb(in->str, in->len, 0, NULL);
        if (!json_is_object(info)) {
            json_decref(info);
            info = json_object();
        }
        json_object_setn_new(o, id->str, id->len, info);
    }
    return o;
}

static void
list_cb(redisReply *r, const char *err, void *arg)
{
    list_req_t *lr = arg;
    json_t     *o;
    (void) err;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        if (r != NULL && r->type == REDIS_REPLY_ERROR)
            hd_log_warn("registry read failed: %s", r->str);
        lr->cb(HD_ERR_UNAVAILABLE, NULL, lr->arg);
    } else {
        o = parse_list(r);
        lr->cb(0, o, lr->arg);
        json_decref(o);
    }
    free(lr);
}

int
hd_cluster_instances(hd_nodes_cb *cb, void *arg)
{
    const char *args[2] = { K_WORKERS, K_INFO };
    size_t      lens[2] = { strlen(K_WORKERS), strlen(K_INFO) };
    list_req_t *lr = hd_malloc(sizeof(*lr));
    int         rc;

    lr->cb = cb;
    lr->arg = arg;
    if ((rc = hd_script_run(&s_list, 2, 2, args, lens, list_cb, lr)) < 0) {
        free(lr);
        return rc;
    }
    return 0;
}

/* ---- calls ----------------------------------------------------------------- */

static void
call_unlink(call_t *c)
{
    for (call_t **pp = &C.calls; *pp != NULL; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
}

static void
call_free(call_t *c)
{
    ev_timer_stop(hd_w.loop, &c->timer);
    free(c->op);
    json_decref(c->args);
    json_decref(c->expected);
    json_decref(c->got);
    json_decref(c->replies);
    free(c);
}

static void
call_finish(call_t *c)
{
    json_t     *missing = json_array(), *seen = json_object();
    const char *inst;
    json_t     *node;

    call_unlink(c);
    json_object_foreach(c->expected, inst, node)
    {
        const char *nid = json_string_value(node);
        if (json_object_get(c->got, inst) != NULL || nid == NULL
            || json_object_get(seen, nid) != NULL)
            continue;
        json_object_set_new(seen, nid, json_true());
        json_array_append_new(missing, json_string(nid));
    }
    json_decref(seen);
    c->cb(0, c->replies, missing, c->arg);
    json_decref(missing);
    call_free(c);
}

static void
call_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    call_t *c = (call_t *) ((char *) w - offsetof(call_t, timer));
    (void) loop;
    (void) revents;
    call_finish(c);
}

static void
call_fail(call_t *c)
{
    call_unlink(c);
    c->cb(HD_ERR_UNAVAILABLE, NULL, NULL, c->arg);
    call_free(c);
}

static void
publish_cb(redisReply *r, const char *err, void *arg)
{
    uint64_t seq = (uint64_t) (uintptr_t) arg;
    (void) err;

    for (call_t *c = C.calls; c != NULL; c = c->next)
        if (c->seq == seq) {
            if (r == NULL || r->type == REDIS_REPLY_ERROR)
                call_fail(c);
            return;
        }
}

static bool
call_complete(const call_t *c)
{
    const char *inst;
    json_t     *v;

    json_object_foreach(c->expected, inst, v)
    {
        if (json_object_get(c->got, inst) == NULL)
            return false;
    }
    return true;
}

static void
expected_cb(int err, json_t *instances, void *arg)
{
    uint64_t    seq = (uint64_t) (uintptr_t) arg;
    call_t     *c;
    const char *inst;
    json_t     *info, *req;
    char       *text, rid[64];

    for (c = C.calls; c != NULL && c->seq != seq; c = c->next)
        ;
    if (c == NULL)
        return;
    if (err != 0) {
        call_fail(c);
        return;
    }
    json_object_foreach(instances, inst, info)
    {
        json_t *n = json_object_get(info, "node");
        json_object_set_new(c->expected, inst,
                            json_is_string(n) ? json_copy(n)
                                              : json_string("unknown"));
    }
    snprintf(rid, sizeof(rid), "%s:%llu", hd_instance_id,
             (unsigned long long) c->seq);
    req = json_pack("{s:s, s:s, s:s, s:O}", "rid", rid, "reply", C.reply_chan,
                    "op", c->op, "args", c->args);
    text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    {
        const char *argv[3] = { "PUBLISH", CTL_CHAN, text };
        size_t      lens[3] = { 7, strlen(CTL_CHAN), strlen(text) };
        if (hd_redis_cmd(0, publish_cb, (void *) (uintptr_t) c->seq, 3, argv,
                         lens)
            < 0) {
            free(text);
            call_fail(c);
            return;
        }
    }
    free(text);
    c->sent = true;
    ev_timer_init(&c->timer, call_timer_cb,
                  (double) hd_w.conf->cluster_timeout_ms / 1000.0, 0.);
    ev_timer_start(hd_w.loop, &c->timer);
}

int
hd_cluster_call(const char *op, json_t *args, hd_call_cb *cb, void *arg)
{
    call_t *c;
    int     rc;

    if (!hd_redis_shard_cmd_up(0))
        return -ENOTCONN;
    c = hd_calloc(1, sizeof(*c));
    c->seq = ++C.seq;
    c->op = hd_strdup(op);
    c->args = json_incref(args);
    c->cb = cb;
    c->arg = arg;
    c->expected = json_object();
    c->got = json_object();
    c->replies = json_array();
    c->next = C.calls;
    C.calls = c;
    if ((rc = hd_cluster_instances(expected_cb, (void *) (uintptr_t) c->seq))
        < 0) {
        call_unlink(c);
        call_free(c);
        return rc;
    }
    return 0;
}

/* A reply on our reply channel. */
static void
got_reply(const char *data, size_t len)
{
    json_t     *j = json_loadb(data, len, 0, NULL);
    const char *rid = json_string_value(json_object_get(j, "rid"));
    const char *inst = json_string_value(json_object_get(j, "instance"));
    const char *colon;
    uint64_t    seq;
    call_t     *c;

    if (rid == NULL || inst == NULL || (colon = strrchr(rid, ':')) == NULL)
        goto done;
    seq = strtoull(colon + 1, NULL, 10);
    for (c = C.calls; c != NULL && c->seq != seq; c = c->next)
        ;
    if (c == NULL || !c->sent || json_object_get(c->got, inst) != NULL)
        goto done; /* late (after the timeout) or a duplicate */
    json_object_set_new(c->got, inst, json_true());
    json_array_append_new(c->replies,
                          json_pack("{s:O, s:O, s:O}", "node",
                                    json_object_get(j, "node"), "worker",
                                    json_object_get(j, "worker"), "result",
                                    json_object_get(j, "result")));
    if (call_complete(c))
        call_finish(c);
done:
    json_decref(j);
}

static void
reply_sent_cb(redisReply *r, const char *err, void *arg)
{
    (void) r;
    (void) err;
    (void) arg;
}

/* A request on the control channel: run it here and answer. */
static void
got_request(const char *data, size_t len)
{
    json_t     *j = json_loadb(data, len, 0, NULL);
    const char *rid = json_string_value(json_object_get(j, "rid"));
    const char *reply = json_string_value(json_object_get(j, "reply"));
    const char *op = json_string_value(json_object_get(j, "op"));
    json_t     *args = json_object_get(j, "args"), *res = NULL, *out;
    char       *text;

    if (rid == NULL || reply == NULL || op == NULL || !json_is_object(args)
        || strncmp(reply, "herald#rep#", 11) != 0) {
        hd_log_warn("ignoring a malformed control message (%zu bytes)", len);
        goto done;
    }
    for (const hd_cluster_op_t *o = hd_cluster_ops; o->name != NULL; o++)
        if (strcmp(o->name, op) == 0) {
            res = o->fn(args);
            break;
        }
    if (res == NULL)
        res = json_pack("{s:s}", "error", "unknown operation");
    out = json_pack("{s:s, s:s, s:s, s:i, s:o}", "rid", rid, "instance",
                    hd_instance_id, "node", hd_node_id, "worker", (int) hd_w.id,
                    "result", res);
    text = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    if (text != NULL) {
        const char *argv[3] = { "PUBLISH", reply, text };
        size_t      lens[3] = { 7, strlen(reply), strlen(text) };
        if (hd_redis_cmd(0, reply_sent_cb, NULL, 3, argv, lens) < 0)
            hd_log_warn("cannot answer a control request: redis down");
        free(text);
    }
done:
    json_decref(j);
}

bool
hd_cluster_message(const char *chan, size_t chan_len, const char *data,
                   size_t len)
{
    if (chan_len < 7 || memcmp(chan, "herald#", 7) != 0)
        return false;
    if (chan_len == strlen(CTL_CHAN) && memcmp(chan, CTL_CHAN, chan_len) == 0)
        got_request(data, len);
    else if (chan_len == strlen(C.reply_chan)
             && memcmp(chan, C.reply_chan, chan_len) == 0)
        got_reply(data, len);
    return true;
}

bool
hd_cluster_confirmed(const char *chan, size_t chan_len, bool sub)
{
    if (chan_len < 7 || memcmp(chan, "herald#", 7) != 0)
        return false;
    if (sub && ++C.nconfirmed == 2 && !C.ctl_ready) {
        C.ctl_ready = true;
        beat(false); /* reachable now: tell the others */
    }
    return true;
}

void
hd_cluster_sub_up(void)
{
    const char *chans[2] = { CTL_CHAN, C.reply_chan };
    size_t      lens[2] = { strlen(CTL_CHAN), strlen(C.reply_chan) };

    C.nconfirmed = 0;
    C.ctl_ready = false;
    if (hd_redis_subscribe(true, 2, chans, lens) < 0)
        hd_log_warn("cannot subscribe to the control channel");
}

void
hd_cluster_sub_down(void)
{
    C.ctl_ready = false;
    C.nconfirmed = 0;
}

void
hd_cluster_cmd_up(void)
{
    beat(false);
}

void
hd_cluster_init(void)
{
    hd_script_register(&s_beat);
    hd_script_register(&s_list);
    memset(&C, 0, sizeof(C));
    make_ids();
    C.started_at = hd_shm_start_time(hd_w.shm);
    C.started = true;
    ev_timer_init(&C.beat_w, beat_timer_cb,
                  (double) hd_w.conf->cluster_hb_ms / 1000.0,
                  (double) hd_w.conf->cluster_hb_ms / 1000.0);
    ev_timer_start(hd_w.loop, &C.beat_w);
    ev_unref(hd_w.loop); /* bookkeeping: never keeps the loop alive */
}

static void
leave_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) w;
    (void) revents;
    ev_break(loop, EVBREAK_ONE);
}

void
hd_cluster_shutdown(void)
{
    if (!C.started)
        return;
    C.started = false;
    ev_ref(hd_w.loop);
    ev_timer_stop(hd_w.loop, &C.beat_w);
    if (C.ctl_ready && hd_redis_shard_cmd_up(0)) {
        /* leave now rather than at the ttl, so that calls during a
         * rolling restart are not reported partial; wait a moment for
         * the reply (beat_cb breaks the loop), never long */
        ev_timer stop_w;
        ev_timer_init(&stop_w, leave_timeout_cb, 0.3, 0.);
        ev_timer_start(hd_w.loop, &stop_w);
        beat(true);
        ev_run(hd_w.loop, 0);
        ev_timer_stop(hd_w.loop, &stop_w);
    }
    while (C.calls != NULL) {
        call_t *c = C.calls;
        c->cb(HD_ERR_UNAVAILABLE, NULL, NULL, c->arg);
        C.calls = c->next;
        call_free(c);
    }
}
