/*
 * The publish and meta scripts. Offsets are assigned by Redis, in the same
 * script that publishes, so every subscriber on every node sees one order
 * per channel and the publisher's ack carries the offset it got.
 *
 * With redis.wait_replicas N > 0 nothing a client learns may be taken back
 * by a failover: the publish script stores (offset, history, the envelope
 * in the meta) without publishing; once WAIT N is met the worker runs
 * RELEASE_LUA, which publishes everything waiting up to that offset in
 * order, and then acknowledges. Reads (meta, recover, history) stop at
 * the published offset and are answered only once a WAIT N after them is
 * met. Order per channel is therefore Redis' order in both modes; the
 * channel table still fills a hole (a dropped subscriber connection).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "hd_alloc.h"
#include "hd_log.h"
#include "hd_metrics.h"
#include "hd_pubsub.h"
#include "hd_script.h"
#include "hd_redis.h"
#include "hd_time.h"
#include "hd_worker_int.h"

/*
 * Keys: KEYS[1] the channel's meta hash (o = offset, e = epoch), KEYS[2] its
 * history stream. A channel's epoch names one incarnation of its numbering
 * and history: a new one is drawn when the meta is missing (expired,
 * flushed, Redis restarted without persistence) or when the namespace keeps
 * history, publications were made, and the stream is gone (expired or
 * evicted); a new epoch numbers from 1 again. With history on, meta and
 * stream get the same TTL on every publish, so they go together; but an
 * eviction under a volatile-* policy or a DEL can still take the meta alone.
 * A new epoch therefore always starts from an empty stream: otherwise XADD
 * refuses its ids until they pass the old top entry, and history and
 * recovery would serve the old epoch's entries as the new one's.
 *
 * Common ARGV prefix of every script: [1] a fresh epoch to use if a new one
 * is needed, [2] the TTL for the meta (s), [3] history size (0 = none).
 *
 * The last ARGV of every script is the primary's replication id, or "".
 * Under Sentinel without redis.wait_replicas, a failover can lose
 * acknowledged writes, and the new primary would hand out their offsets
 * again for other data: so a channel whose meta was last written under
 * another replication id (field r) starts a new epoch, and subscribers
 * learn of the loss (recovered: false, gap) instead of missing it.
 */
#define META_LUA                                                               \
    "local hs = tonumber(ARGV[3])\n"                                           \
    "local rid = ARGV[#ARGV]\n"                                                \
    "local rcmp = true\n"                                                      \
    "if string.sub(rid, 1, 1) == '=' then\n"                                   \
    "  rid = string.sub(rid, 2)\n"                                             \
    "  rcmp = false\n"                                                         \
    "end\n"                                                                    \
    "local e = redis.call('HGET', KEYS[1], 'e')\n"                             \
    "local o = tonumber(redis.call('HGET', KEYS[1], 'o') or 0)\n"              \
    "if (not e) or (hs > 0 and o > 0 and redis.call('EXISTS', KEYS[2]) == 0) " \
    "or (rcmp and rid ~= '' and redis.call('HGET', KEYS[1], 'r') ~= rid) "     \
    "then\n"                                                                   \
    "  e = ARGV[1]\n"                                                          \
    "  o = 0\n"                                                                \
    "  redis.call('DEL', KEYS[1], KEYS[2])\n"                                  \
    "  redis.call('HSET', KEYS[1], 'e', e, 'o', 0)\n"                          \
    "  if rid ~= '' then redis.call('HSET', KEYS[1], 'r', rid) end\n"          \
    "elseif rid ~= '' and redis.call('HGET', KEYS[1], 'r') ~= rid then\n"      \
    "  redis.call('HSET', KEYS[1], 'r', rid)\n"                                \
    "end\n"

/* Publish the envelopes waiting for their release (meta fields q<offset>)
 * from offset a to b, in order, on pub/sub channel ch: RELEASE_LUA once a
 * WAIT confirmed b, PUBLISH_LUA without WAIT before its own publication. */
#define PUBLISH_WAITING_LUA                                   \
    "local function publish_waiting(a, b, ch)\n"              \
    "  for i = a, b do\n"                                     \
    "    local env = redis.call('HGET', KEYS[1], 'q' .. i)\n" \
    "    if env then\n"                                       \
    "      redis.call('PUBLISH', ch, env)\n"                  \
    "      redis.call('HDEL', KEYS[1], 'q' .. i)\n"           \
    "    end\n"                                               \
    "  end\n"                                                 \
    "end\n"

/* ARGV[4] pub/sub channel, [5] data, [6] publish time (us), [7] history
 * ttl (s), [8] idempotency key ('' none), [9] its window (s), [10] "1":
 * PUBLISH here, "0": store it for RELEASE_LUA, which the worker runs once
 * WAIT is met (redis.wait_replicas); KEYS[3] the idempotency key's Redis
 * key. Returns {offset, epoch}; {offset, epoch, 1} for a repeated
 * idempotency key (nothing stored; in wait mode the worker still releases
 * up to the first one's offset: that one may have met no WAIT yet);
 * {top offset, epoch, 2} when 10,000 publications of the channel wait
 * for their release (nothing stored; the worker releases what a WAIT
 * confirms and refuses this one with 503: a replica that stays away
 * cannot grow Redis without bound, and the channel goes on once one is
 * back). */
static const char PUBLISH_LUA[] =
    /* idempotency: KEYS[3] "{chan}:idem:<key>" holds "offset epoch" of the
     * first publication with the key for ARGV[9] s; a repeat returns it
     * with a third element 1 and publishes nothing */
    "if ARGV[8] ~= '' then\n"
    "  local prev = redis.call('GET', KEYS[3])\n"
    "  if prev then\n"
    "    local sp = string.find(prev, ' ', 1, true)\n"
    "    local po = tonumber(string.sub(prev, 1, sp - 1))\n"
    "    local pe = string.sub(prev, sp + 1)\n"
    /* with WAIT to come: a write (the same expiry), so that the WAIT
     * covers the state read here (WAIT waits for this connection's last
     * write) */
    "    if ARGV[10] == '0' then\n"
    "      redis.call('PEXPIRE', KEYS[3], "
    "math.max(1, redis.call('PTTL', KEYS[3])))\n"
    "    end\n"
    "    return {po, pe, 1}\n"
    "  end\n"
    "end\n" META_LUA PUBLISH_WAITING_LUA
    /* p: the highest offset published (live); q<offset>: an envelope
     * waiting for its release (wait mode). No p: nothing waits (a q is
     * only ever stored with a p). Without WAIT, what waits (workers in
     * wait mode during a reload that changes the setting) goes out first,
     * in order. */
    "local ps = redis.call('HGET', KEYS[1], 'p')\n"
    "local p = ps and tonumber(ps) or o\n"
    "if ARGV[10] == '0' then\n"
    "  if o - p >= 10000 then\n"
    "    redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
    "    return {o, e, 2}\n"
    "  end\n"
    "  if not ps then redis.call('HSET', KEYS[1], 'p', p) end\n"
    "else\n"
    "  publish_waiting(p + 1, o, ARGV[4])\n"
    "end\n"
    "o = redis.call('HINCRBY', KEYS[1], 'o', 1)\n"
    "local env = '1 ' .. o .. ' ' .. e .. ' ' .. ARGV[6] .. ' ' .. ARGV[5]\n"
    "if hs > 0 then\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', hs, o .. '-0', 'd', env)\n"
    "  redis.call('EXPIRE', KEYS[2], ARGV[7])\n"
    "end\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
    "if ARGV[10] == '1' then\n"
    "  redis.call('PUBLISH', ARGV[4], env)\n"
    "  redis.call('HSET', KEYS[1], 'p', o)\n"
    "else\n"
    "  redis.call('HSET', KEYS[1], 'q' .. o, env)\n"
    "end\n"
    "if ARGV[8] ~= '' then\n"
    "  redis.call('SET', KEYS[3], o .. ' ' .. e, 'EX', ARGV[9])\n"
    "end\n"
    "return {o, e}\n";

/*
 * redis.wait_replicas: publications go live in offset order, each once
 * WAIT has confirmed it (or a later one: replication is one ordered
 * stream, so a confirmed offset confirms every one below it). KEYS[1] the
 * meta; ARGV[1] the pub/sub channel, [2] a confirmed offset, [3] its
 * epoch. Publishes every envelope still waiting up to [2], in order, and
 * moves p there. Redis runs scripts one at a time, so subscribers see the
 * offsets in order whichever WAIT finishes first; one that never meets a
 * WAIT stays unpublished until a later one is confirmed, or for good if a
 * failover takes it (its offset is then handed out again, and nobody has
 * seen it: reads stop at p, READ_CAP). Returns how many offsets p moved,
 * or -1 when the channel's numbering restarted since (the meta was lost:
 * what waited went with it, and [2] was never published).
 */
static const char RELEASE_LUA[] = PUBLISH_WAITING_LUA
    "if redis.call('HGET', KEYS[1], 'e') ~= ARGV[3] then return -1 end\n"
    "local ps = redis.call('HGET', KEYS[1], 'p')\n"
    "if not ps then return 0 end\n"
    "local p = tonumber(ps)\n"
    "local n = tonumber(ARGV[2])\n"
    "if n <= p then return 0 end\n"
    "publish_waiting(p + 1, n, ARGV[1])\n"
    "redis.call('HSET', KEYS[1], 'p', n)\n"
    "return n - p\n";

/* Reads tell nothing past the published offset p: in wait mode what is
 * above it has not met a WAIT, and a failover may take it back. oreal:
 * the top offset assigned. */
#define READ_CAP                                    \
    "local oreal = o\n"                             \
    "local pp = redis.call('HGET', KEYS[1], 'p')\n" \
    "if pp and tonumber(pp) < o then o = tonumber(pp) end\n"

/* Returns {offset, epoch}; creates the meta (offset 0) when absent. */
static const char GETMETA_LUA[] = META_LUA READ_CAP
    "redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
    "return {o, e}\n";

/*
 * Recovery: ARGV[4] the client's last offset, [5] its epoch, [6] the cap.
 * Returns {offset, epoch, 1, {envelopes after since}} when every
 * publication after since is still in history, else {offset, epoch, 0}:
 * never a partial answer.
 */
static const char RECOVER_LUA[] = META_LUA READ_CAP
    "redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
    "local since = tonumber(ARGV[4])\n"
    "if e ~= ARGV[5] or since > oreal then return {o, e, 0} end\n"
    /* a client ahead of p had it published to it (a release whose own
     * writes a failover took back): nothing to recover, go on from there */
    "if since >= o then return {since, e, 1, {}} end\n"
    "if hs == 0 or o - since > tonumber(ARGV[6]) then return {o, e, 0} end\n"
    "local r = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', o .. '-0')\n"
    "if #r ~= o - since then return {o, e, 0} end\n"
    "local out = {}\n"
    "for i, ent in ipairs(r) do out[i] = ent[2][2] end\n"
    "return {o, e, 1, out}\n";

/*
 * History: ARGV[4] limit, [5] since offset or -1 for "the latest", [6]
 * since epoch. Returns {offset, epoch, 1, {envelopes}} or {offset, epoch,
 * -1} when since's epoch is not the current one.
 */
static const char HISTORY_LUA[] = META_LUA READ_CAP
    "redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
    "local limit = tonumber(ARGV[4])\n"
    "local out = {}\n"
    "if hs == 0 then return {o, e, 1, out} end\n"
    "if ARGV[5] == '-1' then\n"
    "  local r = redis.call('XREVRANGE', KEYS[2], o .. '-0', '-', 'COUNT', "
    "limit)\n"
    "  for i = #r, 1, -1 do out[#out + 1] = r[i][2][2] end\n"
    "else\n"
    "  if e ~= ARGV[6] then return {o, e, -1} end\n"
    "  local r = redis.call('XRANGE', KEYS[2], (tonumber(ARGV[5]) + 1) .. "
    "'-0', o .. '-0', 'COUNT', limit)\n"
    "  for i, ent in ipairs(r) do out[i] = ent[2][2] end\n"
    "end\n"
    "return {o, e, 1, out}\n";

static hd_script_t        s_publish = HD_SCRIPT(PUBLISH_LUA);
static hd_script_t        s_meta = HD_SCRIPT(GETMETA_LUA);
static hd_script_t        s_recover = HD_SCRIPT(RECOVER_LUA);
static hd_script_t        s_history = HD_SCRIPT(HISTORY_LUA);
static hd_script_t        s_release = HD_SCRIPT(RELEASE_LUA);
static hd_script_t *const s_all[] = { &s_publish, &s_meta, &s_recover,
                                      &s_history, &s_release };

typedef struct call {
    hd_script_t *script;
    hd_pub_cb   *cb;  /* publish, meta */
    hd_hist_cb  *hcb; /* recover, history */
    void        *arg;
    int          argc;
    char       **argv;
    size_t      *lens;
    bool         retried; /* EVAL after NOSCRIPT */
    bool         publish;
    bool         dup;   /* publish: a repeated idempotency key */
    bool         full;  /* publish: too many wait for a release (503) */
    unsigned     shard; /* of the channel's key (hd_redis_shard_of) */
    /* redis.wait_replicas: the script's answer (a copy), held until WAIT
     * says whether it may be used */
    redisReply *held;
} call_t;

/*
 * The scripts are loaded ahead of anything else on every (re)connect of a
 * command connection (hd_script_cmd_up()): EVALSHA then never meets
 * NOSCRIPT in normal operation, so a publisher's commands are never
 * reordered by a retry.
 */
void
hd_pubsub_init(void)
{
    for (size_t i = 0; i < sizeof(s_all) / sizeof(s_all[0]); i++)
        hd_script_register(s_all[i]);
}

size_t
hd_pubsub_key(const char *tenant, const char *chan, size_t chan_len, char *buf,
              size_t cap, size_t *name_off)
{
    size_t tl = tenant ? strlen(tenant) : 0;
    size_t n = 7 + tl + 1 + chan_len; /* "herald|" T "|" C */

    if (n + 1 > cap)
        return 0;
    memcpy(buf, "herald|", 7);
    if (tl)
        memcpy(buf + 7, tenant, tl);
    buf[7 + tl] = '|';
    memcpy(buf + 8 + tl, chan, chan_len);
    buf[n] = '\0';
    *name_off = 8 + tl;
    return n;
}

static void
random_epoch(char out[17])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char     r[8];

    if (getrandom(r, sizeof(r), 0) != (ssize_t) sizeof(r)) {
        uint64_t t = hd_wall_ns() ^ ((uint64_t) random() << 20);
        memcpy(r, &t, sizeof(r));
    }
    for (int i = 0; i < 8; i++) {
        out[2 * i] = hex[r[i] >> 4];
        out[2 * i + 1] = hex[r[i] & 15];
    }
    out[16] = '\0';
}

/* hiredis frees a reply when its callback returns: what must outlive the
 * callback (the answer held across a WAIT) is copied. */
static redisReply *
reply_dup(const redisReply *r)
{
    redisReply *d = hd_calloc(1, sizeof(*d));

    d->type = r->type;
    d->integer = r->integer;
    if (r->str != NULL) {
        d->str = hd_malloc(r->len + 1);
        memcpy(d->str, r->str, r->len);
        d->str[r->len] = '\0';
        d->len = r->len;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        d->elements = r->elements;
        d->element = hd_calloc(r->elements, sizeof(*d->element));
        for (size_t i = 0; i < r->elements; i++)
            d->element[i] = reply_dup(r->element[i]);
    }
    return d;
}

static void
reply_free(redisReply *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->elements; i++)
        reply_free(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

static void
call_free(call_t *c)
{
    for (int i = 0; i < c->argc; i++)
        free(c->argv[i]);
    free(c->argv);
    free(c->lens);
    reply_free(c->held);
    free(c);
}

static int call_send(call_t *c);
static int wait_send(call_t *c, redisReply *r);

static void
fail(call_t *c, int err)
{
    if (c->hcb != NULL)
        c->hcb(err, NULL, c->arg);
    else
        c->cb(err, 0, NULL, c->arg);
}

/* {offset, epoch, status, {envelopes}} -> hd_hist_reply_t; -EPROTO when the
 * reply has another shape */
static int
parse_hist(redisReply *r, hd_hist_reply_t *h, const char **envs, size_t *lens,
           size_t cap)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3
        || r->element[0]->type != REDIS_REPLY_INTEGER
        || r->element[1]->type != REDIS_REPLY_STRING
        || r->element[2]->type != REDIS_REPLY_INTEGER)
        return -EPROTO;
    h->offset = (uint64_t) r->element[0]->integer;
    h->epoch = r->element[1]->str;
    h->status = (int) r->element[2]->integer;
    h->n = 0;
    h->env = envs;
    h->env_len = lens;
    if (r->elements >= 4) {
        redisReply *a = r->element[3];
        if (a->type != REDIS_REPLY_ARRAY || a->elements > cap)
            return -EPROTO;
        for (size_t i = 0; i < a->elements; i++) {
            if (a->element[i]->type != REDIS_REPLY_STRING)
                return -EPROTO;
            envs[i] = a->element[i]->str;
            lens[i] = a->element[i]->len;
        }
        h->n = a->elements;
    }
    return 0;
}

/* The Redis error reply of the call whose callback runs (hd_pubsub.h). */
static const char *cur_err;
static bool        cur_dup;

const char *
hd_pubsub_error(void)
{
    return cur_err;
}

bool
hd_pubsub_duplicate(void)
{
    return cur_dup;
}

static enum hd_redis_err_kind
err_kind(const char *s)
{
    static const struct {
        const char            *prefix;
        enum hd_redis_err_kind kind;
    } kinds[] = {
        { "OOM", HD_RERR_OOM },         { "READONLY", HD_RERR_READONLY },
        { "LOADING", HD_RERR_LOADING }, { "BUSY", HD_RERR_BUSY },
        { "NOPERM", HD_RERR_NOPERM },   { "NOSCRIPT", HD_RERR_NOSCRIPT },
    };
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strncmp(s, kinds[i].prefix, strlen(kinds[i].prefix)) == 0)
            return kinds[i].kind;
    return HD_RERR_OTHER;
}

/*
 * Redis refusing writes (maxmemory with noeviction, a replica) while its
 * connections are fine: herald_redis_refusing_writes and /health say so.
 * Set by a refused write, cleared by the next write Redis takes; while set,
 * a small write check runs every REFUSING_CHECK_S, so /health recovers
 * even when no publish comes (a load balancer may have taken the node out).
 */
#define REFUSING_CHECK_S 1.0
#define WRITECHECK_KEY   "{herald|}:writecheck"

static bool     refusing;
static unsigned refusing_shard; /* the shard that refused (write check) */
static ev_timer refusing_w;

static void set_refusing(bool on);

static void
writecheck_cb(redisReply *r, const char *err, void *arg)
{
    (void) err;
    (void) arg;
    if (r != NULL && r->type == REDIS_REPLY_STATUS)
        set_refusing(false);
}

static void
refusing_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    static const char *argv[] = { "SET", WRITECHECK_KEY, "1", "PX", "10000" };
    size_t             lens[5];
    (void) loop;
    (void) w;
    (void) revents;

    for (int i = 0; i < 5; i++)
        lens[i] = strlen(argv[i]);
    if (hd_redis_shard_cmd_up(refusing_shard))
        (void) hd_redis_cmd(refusing_shard, writecheck_cb, NULL, 5, argv, lens);
}

static void
set_refusing(bool on)
{
    if (on == refusing)
        return;
    refusing = on;
    hd_gauge_set(HD_G_REDIS_REFUSING, on);
    if (on) {
        ev_timer_init(&refusing_w, refusing_tick, REFUSING_CHECK_S,
                      REFUSING_CHECK_S);
        ev_timer_start(hd_w.loop, &refusing_w);
    } else {
        ev_timer_stop(hd_w.loop, &refusing_w);
        hd_log_info("redis takes writes again");
    }
}

/* The script's answer (possibly held across a WAIT): to the caller. */
static void
finish(call_t *c, redisReply *r)
{
    if (c->hcb != NULL) {
        size_t          n = r->type == REDIS_REPLY_ARRAY && r->elements >= 4
                     ? r->element[3]->elements
                     : 0;
        const char    **envs = hd_calloc(n + 1, sizeof(*envs));
        size_t         *lens = hd_calloc(n + 1, sizeof(*lens));
        hd_hist_reply_t h;
        if (parse_hist(r, &h, envs, lens, n) < 0) {
            hd_log_error("redis script returned an unexpected reply");
            fail(c, HD_ERR_INTERNAL);
        } else {
            c->hcb(0, &h, c->arg);
        }
        free(envs);
        free(lens);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements < 2
               || r->elements > 4 || r->element[0]->type != REDIS_REPLY_INTEGER
               || r->element[1]->type != REDIS_REPLY_STRING) {
        hd_log_error("redis script returned an unexpected reply");
        c->cb(HD_ERR_INTERNAL, 0, NULL, c->arg);
    } else {
        cur_dup = c->dup;
        c->cb(0, (uint64_t) r->element[0]->integer, r->element[1]->str, c->arg);
        cur_dup = false;
    }
}

static void
script_cb(redisReply *r, const char *err, void *arg)
{
    call_t *c = arg;

    if (r != NULL && r->type == REDIS_REPLY_ERROR
        && strncmp(r->str, "NOSCRIPT", 8) == 0 && !c->retried) {
        /* first use on this server (or after SCRIPT FLUSH): send the body */
        c->retried = true;
        if (call_send(c) == 0)
            return;
        fail(c, HD_ERR_UNAVAILABLE);
        call_free(c);
        return;
    }
    if (r == NULL) {
        fail(c, HD_ERR_UNAVAILABLE);
    } else if (r->type == REDIS_REPLY_ERROR) {
        enum hd_redis_err_kind k = err_kind(r->str);
        hd_redis_err_inc(k);
        hd_log_error("redis refused the %s script: %s",
                     c->publish                    ? "publish"
                         : c->script == &s_meta    ? "meta"
                         : c->script == &s_recover ? "recover"
                                                   : "history",
                     r->str);
        /* every script may write (meta, epoch, TTLs) */
        if (k == HD_RERR_OOM || k == HD_RERR_READONLY) {
            refusing_shard = c->shard;
            set_refusing(true);
        }
        cur_err = r->str;
        fail(c,
             k == HD_RERR_LOADING || k == HD_RERR_BUSY || k == HD_RERR_READONLY
                     || k == HD_RERR_OOM
                 ? HD_ERR_UNAVAILABLE
                 : HD_ERR_INTERNAL);
        cur_err = NULL;
    } else {
        if (c->hcb == NULL) {
            /* {offset, epoch, 1[, envelope]}: a repeat of an idempotency
             * key */
            bool third = r->type == REDIS_REPLY_ARRAY && r->elements >= 3
                && r->element[2]->type == REDIS_REPLY_INTEGER;
            c->dup = third && r->element[2]->integer == 1;
            c->full = third && r->element[2]->integer == 2;
            if (!c->dup)
                set_refusing(false);
            /* with WAIT to come: counted once it is met (wait_cb) */
            if (c->publish && !c->dup && hd_w.conf->redis_wait_replicas <= 0)
                hd_ctr_inc(HD_C_MSG_PUBLISHED);
        }
        if (hd_w.conf->redis_wait_replicas <= 0) {
            finish(c, r);
        } else if (wait_send(c, r) == 0) {
            return; /* wait_cb answers */
        } else {
            fail(c, HD_ERR_UNAVAILABLE);
        }
    }
    (void) err;
    call_free(c);
}

/* The release ran: only now is the publication acknowledged (it is live).
 * Refused or lost with the connection: the publisher gets 503, as for an
 * unmet WAIT; the publication is confirmed and stored, and the next
 * confirmed one of the channel releases it first. */
static void
release_cb(redisReply *r, const char *err, void *arg)
{
    call_t *c = arg;

    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        hd_log_warn("redis: releasing a confirmed publication failed: %s",
                    r != NULL         ? r->str
                        : err != NULL ? err
                                      : "no reply");
        fail(c, HD_ERR_UNAVAILABLE);
    } else if (r->type == REDIS_REPLY_INTEGER && r->integer < 0) {
        /* the channel's numbering restarted (its meta was lost) between
         * the publish and its release: it was never published */
        cur_err = "the channel's state in redis was reset; not published";
        fail(c, HD_ERR_UNAVAILABLE);
        cur_err = NULL;
    } else if (c->full) {
        cur_err = "10000 publications of this channel wait for redis "
                  "replicas; retry later";
        fail(c, HD_ERR_UNAVAILABLE);
        cur_err = NULL;
    } else {
        if (!c->dup)
            hd_ctr_inc(HD_C_MSG_PUBLISHED);
        finish(c, c->held);
    }
    call_free(c);
}

/*
 * WAIT met: the publication is on enough replicas to survive a failover,
 * and only now goes live, with every one before it still waiting
 * (RELEASE_LUA: in offset order, whichever WAIT finished first). A
 * subscriber never holds an offset that a promoted replica hands out
 * again. A repeated idempotency key releases up to the first one's
 * offset: that one may have been refused (WAIT unmet) and not published
 * yet. 0: c belongs to release_cb; < 0: nothing sent.
 */
static int
publish_live(call_t *c)
{
    redisReply *r = c->held;
    char        off[24];
    const char *argv[4];
    size_t      lens[4];

    snprintf(off, sizeof(off), "%lld", r->element[0]->integer);
    argv[0] = c->argv[3 + 0]; /* KEYS[1]: the meta */
    lens[0] = c->lens[3 + 0];
    argv[1] = c->argv[3 + 6]; /* the pub/sub channel: ARGV[4] */
    lens[1] = c->lens[3 + 6];
    argv[2] = off;
    lens[2] = strlen(off);
    argv[3] = r->element[1]->str;
    lens[3] = r->element[1]->len;
    return hd_script_run_on(c->shard, &s_release, 1, 4, argv, lens, release_cb,
                            c);
}

static void
wait_cb(redisReply *r, const char *err, void *arg)
{
    call_t   *c = arg;
    long long want = hd_w.conf->redis_wait_replicas;
    (void) err;

    if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer >= want) {
        if (c->publish && c->held->type == REDIS_REPLY_ARRAY
            && c->held->elements >= 2
            && c->held->element[0]->type == REDIS_REPLY_INTEGER
            && c->held->element[1]->type == REDIS_REPLY_STRING) {
            if (publish_live(c) == 0)
                return; /* release_cb answers */
            hd_log_warn("redis: cannot send a release; the next confirmed "
                        "publication of the channel releases it");
            fail(c, HD_ERR_UNAVAILABLE);
        } else {
            finish(c, c->held);
        }
    } else {
        /* a publication: stored (history, offset) but not published and
         * not acknowledged; a read: its answer may include what a
         * failover takes back. Either is refused. */
        hd_log_warn("redis WAIT: %lld of %lld replicas acknowledged in "
                    "%d ms; %s refused",
                    r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer
                                                                : -1LL,
                    want, hd_w.conf->redis_wait_timeout_ms,
                    c->publish ? "publish" : "read");
        fail(c, HD_ERR_UNAVAILABLE);
    }
    call_free(c);
}

/*
 * redis.wait_replicas: hold the script's answer until that many replicas
 * have every write made before it (WAIT on the same connection covers the
 * replication stream up to this connection's last write; every script
 * writes at least the meta's EXPIRE, so that is the state it read). 0: c
 * now belongs to wait_cb; < 0: nothing sent, the caller fails c.
 */
static int
wait_send(call_t *c, redisReply *r)
{
    char        n[16], ms[16];
    const char *argv[3] = { "WAIT", n, ms };
    size_t      lens[3];

    snprintf(n, sizeof(n), "%d", hd_w.conf->redis_wait_replicas);
    snprintf(ms, sizeof(ms), "%d", hd_w.conf->redis_wait_timeout_ms);
    lens[0] = 4;
    lens[1] = strlen(n);
    lens[2] = strlen(ms);
    c->held = reply_dup(r);
    return hd_redis_cmd(c->shard, wait_cb, c, 3, argv, lens);
}

static int
call_send(call_t *c)
{
    /* argv[0] and argv[1] are rewritten: EVALSHA sha / EVAL body */
    free(c->argv[0]);
    free(c->argv[1]);
    c->argv[0] = hd_strdup(c->retried ? "EVAL" : "EVALSHA");
    c->argv[1] = hd_strdup(c->retried ? c->script->body : c->script->sha);
    c->lens[0] = strlen(c->argv[0]);
    c->lens[1] = strlen(c->argv[1]);
    return hd_redis_cmd(c->shard, script_cb, c, c->argc,
                        (const char **) c->argv, c->lens);
}

/* argv: the script's KEYS then ARGV (nkeys of them keys), copied. */
static int
run_script(hd_script_t *s, bool publish, int nargs, const char **args,
           const size_t *lens, int nkeys, hd_pub_cb *cb, hd_hist_cb *hcb,
           void *arg)
{
    call_t *c = hd_calloc(1, sizeof(*c));
    char    nk[16];
    int     rc;

    c->script = s;
    c->cb = cb;
    c->hcb = hcb;
    c->arg = arg;
    c->publish = publish;
    /* KEYS[1] is always "{<key>}:meta" (common()): the channel's shard */
    c->shard = hd_redis_shard_of(args[0] + 1, lens[0] - 7);
    c->argc = 3 + nargs + 1; /* + the replication id (META_LUA) */
    c->argv = hd_calloc((size_t) c->argc, sizeof(char *));
    c->lens = hd_calloc((size_t) c->argc, sizeof(size_t));
    /* with WAIT: "=" + the id, recorded but not compared (a failover
     * loses nothing confirmed, so it needs no new epoch) */
    c->argv[c->argc - 1] = hd_strdup(hd_redis_shard_replid(c->shard));
    if (hd_w.conf->redis_wait_replicas > 0) {
        char *v = hd_malloc(strlen(c->argv[c->argc - 1]) + 2);
        v[0] = '=';
        strcpy(v + 1, c->argv[c->argc - 1]);
        free(c->argv[c->argc - 1]);
        c->argv[c->argc - 1] = v;
    }
    c->lens[c->argc - 1] = strlen(c->argv[c->argc - 1]);
    snprintf(nk, sizeof(nk), "%d", nkeys);
    c->argv[2] = hd_strdup(nk);
    c->lens[2] = strlen(nk);
    for (int i = 0; i < nargs; i++) {
        c->argv[3 + i] = hd_strndup(args[i], lens[i]);
        c->lens[3 + i] = lens[i];
    }
    if ((rc = call_send(c)) < 0) {
        call_free(c);
        return rc;
    }
    return 0;
}

/*
 * The arguments every script starts with: KEYS meta and stream, then a
 * fresh epoch, the meta TTL and the history size. Fills args[0..4].
 */
typedef struct common_args {
    char mk[HD_KEY_MAX + 16], sk[HD_KEY_MAX + 16], epoch[17], ttl[16], hs[16];
} common_args_t;

static int
common(common_args_t *ca, const hd_ns_t *ns, const char *key, size_t key_len,
       const char **args, size_t *lens)
{
    int n1 = snprintf(ca->mk, sizeof(ca->mk), "{%.*s}:meta", (int) key_len,
                      key);
    int n2 = snprintf(ca->sk, sizeof(ca->sk), "{%.*s}:hist", (int) key_len,
                      key);
    int hs = ns != NULL ? ns->history_size : 0;

    if (n1 < 0 || (size_t) n1 >= sizeof(ca->mk) || n2 < 0
        || (size_t) n2 >= sizeof(ca->sk))
        return -ENAMETOOLONG;
    random_epoch(ca->epoch);
    snprintf(ca->ttl, sizeof(ca->ttl), "%d",
             hs > 0 ? ns->history_ttl_s : hd_w.conf->channel_meta_ttl_s);
    snprintf(ca->hs, sizeof(ca->hs), "%d", hs);
    args[0] = ca->mk;
    lens[0] = (size_t) n1;
    args[1] = ca->sk;
    lens[1] = (size_t) n2;
    args[2] = ca->epoch;
    lens[2] = 16;
    args[3] = ca->ttl;
    lens[3] = strlen(ca->ttl);
    args[4] = ca->hs;
    lens[4] = strlen(ca->hs);
    return 0;
}

int
hd_pubsub_publish(const hd_ns_t *ns, const char *key, size_t key_len,
                  const char *data, size_t data_len, const char *idem,
                  hd_pub_cb *cb, void *arg)
{
    int           rc;
    common_args_t ca;
    char          now[24], httl[16], win[16];
    char          ik[HD_KEY_MAX + 16 + HD_PUB_IDEM_MAX];
    const char   *args[13];
    size_t        lens[13];
    int           n;

    if (!hd_redis_cmd_up_key(key, key_len))
        return -ENOTCONN;
    if ((rc = common(&ca, ns, key, key_len, args, lens)) < 0)
        return rc;
    if (idem == NULL)
        idem = "";
    /* KEYS[3]: the idempotency key, in the channel's hash slot; the script
     * touches it only when a key was given */
    n = snprintf(ik, sizeof(ik), "{%.*s}:idem:%s", (int) key_len, key, idem);
    if (n < 0 || (size_t) n >= sizeof(ik))
        return -ENAMETOOLONG;
    memmove(args + 3, args + 2, 3 * sizeof(*args));
    memmove(lens + 3, lens + 2, 3 * sizeof(*lens));
    args[2] = ik;
    lens[2] = (size_t) n;
    snprintf(now, sizeof(now), "%llu",
             (unsigned long long) (hd_wall_ns() / 1000));
    snprintf(httl, sizeof(httl), "%d", ns != NULL ? ns->history_ttl_s : 0);
    snprintf(win, sizeof(win), "%d", hd_w.conf->idempotency_window_s);
    args[6] = key;
    lens[6] = key_len;
    args[7] = data;
    lens[7] = data_len;
    args[8] = now;
    lens[8] = strlen(now);
    args[9] = httl;
    lens[9] = strlen(httl);
    args[10] = idem;
    lens[10] = strlen(idem);
    args[11] = win;
    lens[11] = strlen(win);
    /* with redis.wait_replicas the worker publishes once WAIT is met */
    args[12] = hd_w.conf->redis_wait_replicas > 0 ? "0" : "1";
    lens[12] = 1;
    return run_script(&s_publish, true, 13, args, lens, 3, cb, NULL, arg);
}

int
hd_pubsub_meta(const hd_ns_t *ns, const char *key, size_t key_len,
               hd_pub_cb *cb, void *arg)
{
    int           rc;
    common_args_t ca;
    const char   *args[5];
    size_t        lens[5];

    if (!hd_redis_cmd_up_key(key, key_len))
        return -ENOTCONN;
    if ((rc = common(&ca, ns, key, key_len, args, lens)) < 0)
        return rc;
    return run_script(&s_meta, false, 5, args, lens, 2, cb, NULL, arg);
}

int
hd_pubsub_recover(const hd_ns_t *ns, const char *key, size_t key_len,
                  uint64_t since, const char *since_epoch, unsigned cap,
                  hd_hist_cb *cb, void *arg)
{
    int           rc;
    common_args_t ca;
    char          s1[24], s3[16];
    const char   *args[8];
    size_t        lens[8];

    if (!hd_redis_cmd_up_key(key, key_len))
        return -ENOTCONN;
    if ((rc = common(&ca, ns, key, key_len, args, lens)) < 0)
        return rc;
    snprintf(s1, sizeof(s1), "%llu", (unsigned long long) since);
    snprintf(s3, sizeof(s3), "%u", cap);
    args[5] = s1;
    lens[5] = strlen(s1);
    args[6] = since_epoch;
    lens[6] = strlen(since_epoch);
    args[7] = s3;
    lens[7] = strlen(s3);
    return run_script(&s_recover, false, 8, args, lens, 2, NULL, cb, arg);
}

int
hd_pubsub_history(const hd_ns_t *ns, const char *key, size_t key_len,
                  unsigned limit, int64_t since, const char *since_epoch,
                  hd_hist_cb *cb, void *arg)
{
    int           rc;
    common_args_t ca;
    char          s1[16], s2[24];
    const char   *args[8];
    size_t        lens[8];

    if (!hd_redis_cmd_up_key(key, key_len))
        return -ENOTCONN;
    if ((rc = common(&ca, ns, key, key_len, args, lens)) < 0)
        return rc;
    snprintf(s1, sizeof(s1), "%u", limit);
    snprintf(s2, sizeof(s2), "%lld", (long long) since);
    args[5] = s1;
    lens[5] = strlen(s1);
    args[6] = s2;
    lens[6] = strlen(s2);
    args[7] = since_epoch ? since_epoch : "";
    lens[7] = strlen(args[7]);
    return run_script(&s_history, false, 8, args, lens, 2, NULL, cb, arg);
}
