/*
 * Presence and join/leave; see hd_presence.h for the model.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_alloc.h"
#include "hd_cluster.h"
#include "hd_jwt.h"
#include "hd_log.h"
#include "hd_presence.h"
#include "hd_pubsub.h"
#include "hd_script.h"
#include "hd_worker_int.h"

#define K_WORKERS "herald#workers" /* hd_cluster.c's registry */

/*
 * The part of a read or a sweep that finds entries of dead instances:
 * Lua, shared by both scripts. Expects all (HGETALL), now, KEYS[1] the
 * hash, KEYS[2] the registry; ARGV[2] the pub/sub channel, ARGV[3] '1'
 * when leaves are published. Calls live(v, p, ul) for the live ones.
 * Fields "@<instance>" are markers, not members (see s_add): dropped
 * with their instance, never counted.
 */
#define WALK_LUA                                                           \
    "local alive = {}\n"                                                   \
    "local function walk(all, live)\n"                                     \
    "  for i = 1, #all, 2 do\n"                                            \
    "    local cid, v = all[i], all[i + 1]\n"                              \
    "    local mark = string.sub(cid, 1, 1) == '@'\n"                      \
    "    local owner = mark and string.sub(cid, 2)\n"                      \
    "      or string.match(cid, '^(.*)-[^-]*$') or cid\n"                  \
    "    local a = alive[owner]\n"                                         \
    "    if a == nil then\n"                                               \
    "      local s = redis.call('ZSCORE', KEYS[2], owner)\n"               \
    "      a = (s and tonumber(s) > now) and true or false\n"              \
    "      alive[owner] = a\n"                                             \
    "    end\n"                                                            \
    "    local p = string.find(v, ':', 1, true) or 0\n"                    \
    "    local ul = tonumber(string.sub(v, 1, p - 1)) or 0\n"              \
    "    if mark then\n"                                                   \
    "      if not a then redis.call('HDEL', KEYS[1], cid) end\n"           \
    "    elseif a then\n"                                                  \
    "      if live then live(v, p, ul) end\n"                              \
    "    elseif redis.call('HDEL', KEYS[1], cid) == 1 and ARGV[3] == '1' " \
    "then\n"                                                               \
    "      redis.call('PUBLISH', ARGV[2], 'L ' .. cid .. ' ' .. "          \
    "string.sub(v, p + ul + 1))\n"                                         \
    "    end\n"                                                            \
    "  end\n"                                                              \
    "end\n"

#define NOW_LUA                                                      \
    "local t = redis.call('TIME')\n"                                 \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) " \
    "/ 1000)\n"

/* KEYS[1] hash; ARGV[1] client id, [2] pub/sub channel, [3] join_leave,
 * [4] presence, [5] value, [6] entry, [7] hash TTL (s), [8] this worker
 * instance. With presence, the join goes out only when the entry is new:
 * adding it again (see reannounce()) announces only those a sweep had
 * removed. The field "@<instance>" marks that the instance's entries are
 * in the hash: a refresh that finds it gone (the hash was lost, or a
 * sweep took the instance for dead) puts them back. */
static hd_script_t s_add = HD_SCRIPT(
    "local new = 1\n"
    "if ARGV[4] == '1' then\n"
    "  new = redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])\n"
    "  redis.call('HSET', KEYS[1], '@' .. ARGV[8], '1')\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[7])\n"
    "end\n"
    "if new == 1 and ARGV[3] == '1' then\n"
    "  redis.call('PUBLISH', ARGV[2], 'J ' .. ARGV[1] .. ' ' .. ARGV[6])\n"
    "end\n"
    "return new\n");

/* Same arguments; [5] unused. The leave goes out only if this call
 * removed the entry (or there is no presence to remove it from). */
static hd_script_t s_del = HD_SCRIPT(
    "local gone = 1\n"
    "if ARGV[4] == '1' then gone = redis.call('HDEL', KEYS[1], ARGV[1]) end\n"
    "if gone == 1 and ARGV[3] == '1' then\n"
    "  redis.call('PUBLISH', ARGV[2], 'L ' .. ARGV[1] .. ' ' .. ARGV[6])\n"
    "end\n"
    "return gone\n");

/* KEYS[1] hash, [2] registry; ARGV[1] limit, [2] channel, [3] join_leave.
 * Returns {clients, users, {entries}}. */
static hd_script_t s_read = HD_SCRIPT(
    NOW_LUA WALK_LUA
    "local limit = tonumber(ARGV[1])\n"
    "local n, nu, users, out = 0, 0, {}, {}\n"
    "walk(redis.call('HGETALL', KEYS[1]), function(v, p, ul)\n"
    "  n = n + 1\n"
    "  if ul > 0 then\n"
    "    local u = string.sub(v, p + 1, p + ul)\n"
    "    if not users[u] then users[u] = true; nu = nu + 1 end\n"
    "  end\n"
    "  if #out < limit then out[#out + 1] = string.sub(v, p + ul + 1) end\n"
    "end)\n"
    "return {n, nu, out}\n");

/* KEYS[1] hash, [2] registry, [3] sweep marker; ARGV[1] TTL (s), [2]
 * channel, [3] join_leave, [4] sweep period (ms), [5] "@<instance>".
 * Keeps the hash alive and, at most once per period whoever asks, drops
 * dead entries. 0: this instance's entries are not there (re-add them). */
static hd_script_t s_refresh = HD_SCRIPT(
    NOW_LUA WALK_LUA
    "if redis.call('EXPIRE', KEYS[1], ARGV[1]) == 0 then return 0 end\n"
    "if redis.call('HEXISTS', KEYS[1], ARGV[5]) == 0 then return 0 end\n"
    "if redis.call('SET', KEYS[3], '1', 'PX', ARGV[4], 'NX') then\n"
    "  walk(redis.call('HGETALL', KEYS[1]), nil)\n"
    "end\n"
    "return 1\n");

static ev_timer refresh_w;

/* Key TTL: a few refresh periods, at least a minute. */
static int
hash_ttl_s(void)
{
    int s = 3 * hd_w.conf->cluster_node_ttl_ms / 1000;
    return s < 60 ? 60 : s;
}

static size_t
pres_key(const char *key, size_t key_len, const char *suffix, char *buf,
         size_t cap)
{
    int n = snprintf(buf, cap, "{%.*s}:%s", (int) key_len, key, suffix);
    return n > 0 && (size_t) n < cap ? (size_t) n : 0;
}

/* The entry of c: {"client", "user", "info"}, compact JSON (heap). */
static char *
entry_of(const hd_conn_t *c, const char *cid)
{
    json_t *e = json_pack("{s:s}", "client", cid);
    char   *s;

    if (c->claims != NULL && c->claims->sub != NULL)
        json_object_set_new(e, "user", json_string(c->claims->sub));
    /* the token's info claim, unless over limits.presence_info_bytes (a
     * presence read carries it for every member: keep it small) */
    if (c->claims != NULL && c->claims->info != NULL
        && strlen(c->claims->info) <= (size_t) hd_w.conf->presence_info_bytes)
        json_object_set_new(e, "info",
                            json_loads(c->claims->info, JSON_DECODE_ANY, NULL));
    s = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    return s;
}

static void
noop_cb(redisReply *r, const char *err, void *arg)
{
    (void) arg;
    if (r == NULL)
        hd_log_debug("presence update failed: %s", err);
    else if (r->type == REDIS_REPLY_ERROR)
        hd_log_warn("presence update failed: %s", r->str);
}

static int
update(hd_script_t *sc, hd_conn_t *c, hd_chan_t *ch)
{
    char        cid[HD_CLIENT_ID_MAX], hk[HD_KEY_MAX + 16], ttl[16];
    char       *entry, *value;
    const char *user = c->claims && c->claims->sub ? c->claims->sub : "";
    const char *args[9];
    size_t      lens[9];
    int         rc;

    if (hd_cluster_client_id(c, cid) == 0
        || pres_key(ch->key, ch->key_len, "pres", hk, sizeof(hk)) == 0)
        return -ENOSPC; /* the client id or the key does not fit */
    entry = entry_of(c, cid);
    value = hd_asprintf("%zu:%s%s", strlen(user), user, entry);
    snprintf(ttl, sizeof(ttl), "%d", hash_ttl_s());
    args[0] = hk;
    args[1] = cid;
    args[2] = ch->key;
    args[3] = ch->ns->join_leave ? "1" : "0";
    args[4] = ch->ns->presence ? "1" : "0";
    args[5] = value;
    args[6] = entry;
    args[7] = ttl;
    args[8] = hd_instance_id;
    for (int i = 0; i < 9; i++)
        lens[i] = strlen(args[i]);
    lens[2] = ch->key_len;
    rc = hd_script_run_on(ch->shard, sc, 1, 9, args, lens, noop_cb, NULL);
    free(entry);
    free(value);
    return rc;
}

void
hd_presence_live(hd_conn_t *c, hd_chan_t *ch, hd_sub_t *s)
{
    if (ch->ns == NULL || !(ch->ns->presence || ch->ns->join_leave))
        return;
    if (update(&s_add, c, ch) == 0)
        s->announced = true;
}

void
hd_presence_left(hd_conn_t *c, hd_chan_t *ch, hd_sub_t *s)
{
    s->announced = false;
    if (ch->ns == NULL || !(ch->ns->presence || ch->ns->join_leave))
        return;
    /* Redis down: the entry stays until its instance leaves the registry
     * (or the hash expires); the sweep then publishes the leave */
    (void) update(&s_del, c, ch);
}

/* ---- reads --------------------------------------------------------------- */

typedef struct read_req {
    hd_presence_cb *cb;
    void           *arg;
} read_req_t;

static void
read_cb(redisReply *r, const char *err, void *arg)
{
    read_req_t *rq = arg;
    (void) err;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3
        || r->element[0]->type != REDIS_REPLY_INTEGER
        || r->element[1]->type != REDIS_REPLY_INTEGER
        || r->element[2]->type != REDIS_REPLY_ARRAY) {
        if (r != NULL && r->type == REDIS_REPLY_ERROR)
            hd_log_warn("presence read failed: %s", r->str);
        rq->cb(HD_ERR_UNAVAILABLE, 0, 0, NULL, rq->arg);
    } else {
        json_t *list = json_array();
        for (size_t i = 0; i < r->element[2]->elements; i++) {
            redisReply *e = r->element[2]->element[i];
            json_t     *j = e->type == REDIS_REPLY_STRING
                    ? json_loadb(e->str, e->len, 0, NULL)
                    : NULL;
            if (j != NULL)
                json_array_append_new(list, j);
        }
        rq->cb(0, r->element[0]->integer, r->element[1]->integer, list,
               rq->arg);
        json_decref(list);
    }
    free(rq);
}

int
hd_presence_read(const hd_ns_t *ns, const char *key, size_t key_len,
                 size_t limit, hd_presence_cb *cb, void *arg)
{
    char        hk[HD_KEY_MAX + 16], lim[24];
    const char *args[5];
    size_t      lens[5];
    read_req_t *rq;
    int         rc;

    if (pres_key(key, key_len, "pres", hk, sizeof(hk)) == 0)
        return -ENAMETOOLONG;
    snprintf(lim, sizeof(lim), "%zu", limit);
    args[0] = hk;
    args[1] = K_WORKERS;
    args[2] = lim;
    args[3] = key;
    args[4] = ns->join_leave ? "1" : "0";
    for (int i = 0; i < 5; i++)
        lens[i] = strlen(args[i]);
    lens[3] = key_len;
    rq = hd_malloc(sizeof(*rq));
    rq->cb = cb;
    rq->arg = arg;
    /* on the channel's shard: its hash, and the joins and leaves must go
     * out where its subscribers are */
    rc = hd_script_run_on(hd_redis_shard_of(key, key_len), &s_read, 2, 5, args,
                          lens, read_cb, rq);
    if (rc < 0) {
        free(rq);
        return rc;
    }
    return 0;
}

/* ---- refresh ------------------------------------------------------------- */

/* Add the entries of ch's live members again (those that are there stay
 * as they are; those that are not come back, with a join). */
static void
reannounce(const hd_chan_t *ch, void *arg)
{
    (void) arg;
    if (ch->ns == NULL || !ch->ns->presence)
        return;
    for (uint32_t i = 0; i < ch->nmembers; i++) {
        hd_conn_t *c = ch->members[i].conn;
        hd_sub_t  *s = &c->subs[ch->members[i].sub_i];
        if (s->state == HD_SUB_ACTIVE && s->announced)
            (void) update(&s_add, c, (hd_chan_t *) ch);
    }
}

void
hd_presence_reannounce_all(void)
{
    hd_chan_foreach(reannounce, NULL);
}

/* Our entries were gone (Redis lost the hash: restart, flush, eviction;
 * or a sweep took this instance for dead) while we have live members: put
 * them back. arg: the channel key (heap). */
static void
refreshed_cb(redisReply *r, const char *err, void *arg)
{
    char      *key = arg;
    hd_chan_t *ch;

    noop_cb(r, err, NULL);
    if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 0
        && (ch = hd_chan_find(key, strlen(key))) != NULL) {
        hd_log_info("presence entries of %.*s missing in Redis; adding "
                    "ours again",
                    (int) ch->name_len, ch->name);
        reannounce(ch, NULL);
    }
    free(key);
}

static void
refresh_one(const hd_chan_t *ch, void *arg)
{
    char        hk[HD_KEY_MAX + 16], mk[HD_KEY_MAX + 16], ttl[16], per[16];
    char        mark[48], *key;
    const char *args[8];
    size_t      lens[8];
    (void) arg;

    if (ch->ns == NULL || !ch->ns->presence || ch->nmembers == 0
        || pres_key(ch->key, ch->key_len, "pres", hk, sizeof(hk)) == 0
        || pres_key(ch->key, ch->key_len, "psweep", mk, sizeof(mk)) == 0)
        return;
    snprintf(ttl, sizeof(ttl), "%d", hash_ttl_s());
    snprintf(per, sizeof(per), "%d", hd_w.conf->cluster_node_ttl_ms);
    args[0] = hk;
    args[1] = K_WORKERS;
    args[2] = mk;
    args[3] = ttl;
    args[4] = ch->key;
    args[5] = ch->ns->join_leave ? "1" : "0";
    args[6] = per;
    snprintf(mark, sizeof(mark), "@%s", hd_instance_id);
    args[7] = mark;
    for (int i = 0; i < 8; i++)
        lens[i] = strlen(args[i]);
    lens[4] = ch->key_len;
    key = hd_strndup(ch->key, ch->key_len);
    /* the channel's shard may be down while others are up: no callback
     * then, so the key is ours to free */
    if (hd_script_run_on(ch->shard, &s_refresh, 3, 8, args, lens, refreshed_cb,
                         key)
        < 0)
        free(key);
}

static void
refresh_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) w;
    (void) revents;
    if (hd_redis_cmd_up_any()) /* each on its channel's shard */
        hd_chan_foreach(refresh_one, NULL);
}

void
hd_presence_init(void)
{
    double p = (double) hd_w.conf->cluster_node_ttl_ms / 1000.0;

    hd_script_register(&s_add);
    hd_script_register(&s_del);
    hd_script_register(&s_read);
    hd_script_register(&s_refresh);
    ev_timer_init(&refresh_w, refresh_cb, p, p);
    ev_timer_start(hd_w.loop, &refresh_w);
    ev_unref(hd_w.loop);
}

void
hd_presence_shutdown(void)
{
    ev_ref(hd_w.loop);
    ev_timer_stop(hd_w.loop, &refresh_w);
}
