/*
 * Channel table and local fan-out. See hd_chan.h for the model.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "hd_alloc.h"
#include "hd_chan.h"
#include "hd_codes.h"
#include "hd_conn.h"
#include "hd_envelope.h"
#include "hd_hash.h"
#include "hd_log.h"
#include "hd_metrics.h"
#include "hd_pubsub.h"
#include "hd_redis.h"

#define BUFFER_MAX 8192 /* pushes kept for pending members */
#define SUB_BATCH  256  /* channels per SUBSCRIBE command */

static struct {
    hd_chan_t     **tab;
    size_t          cap; /* power of two */
    size_t          n;
    hd_chan_t      *flush; /* channels whose Redis state must move */
    ev_prepare      flush_w;
    ev_idle         idle_w;
    ev_timer        retry_w; /* failed fill reads (fill_retry_later) */
    struct ev_loop *loop;
    hd_chan_hooks_t hooks;
} T;

/* A fill read was refused (a WAIT unmet, a Redis error) while the channel
 * holds live pushes behind a hole: try again in a second, whether or not
 * anything else is published on it (nothing may wait for that). */
#define FILL_RETRY_S 1.0

static void
fill_retry_later(void)
{
    if (!ev_is_active(&T.retry_w)) {
        ev_timer_set(&T.retry_w, FILL_RETRY_S, 0.);
        ev_timer_start(T.loop, &T.retry_w);
    }
}

static void chan_maybe_free(hd_chan_t *ch);
static void meta_read(hd_chan_t *ch);
static void resync_start(hd_chan_t *ch);

/* Channel names are chosen by clients: keyed with this process's secret
 * seed, so nobody can precompute names that share a bucket. */
static uint64_t
hash(const char *s, size_t n)
{
    return hd_hash_bytes(s, n);
}

static void
grow(void)
{
    size_t      ncap = T.cap ? T.cap * 2 : 1024;
    hd_chan_t **nt = hd_calloc(ncap, sizeof(*nt));

    for (size_t i = 0; i < T.cap; i++) {
        hd_chan_t *ch = T.tab[i], *next;
        for (; ch != NULL; ch = next) {
            next = ch->hnext;
            ch->hnext = nt[ch->hash & (ncap - 1)];
            nt[ch->hash & (ncap - 1)] = ch;
        }
    }
    free(T.tab);
    T.tab = nt;
    T.cap = ncap;
}

hd_chan_t *
hd_chan_find(const char *key, size_t key_len)
{
    uint64_t h = hash(key, key_len);

    if (T.cap == 0)
        return NULL;
    for (hd_chan_t *ch = T.tab[h & (T.cap - 1)]; ch != NULL; ch = ch->hnext)
        if (ch->hash == h && ch->key_len == key_len
            && memcmp(ch->key, key, key_len) == 0)
            return ch;
    return NULL;
}

hd_chan_t *
hd_chan_get(const char *key, size_t key_len, size_t name_off, const hd_ns_t *ns)
{
    hd_chan_t *ch = hd_chan_find(key, key_len);

    if (ch != NULL)
        return ch;
    if (T.n + 1 > T.cap)
        grow();
    ch = hd_calloc(1, sizeof(*ch));
    ch->hash = hash(key, key_len);
    ch->key = hd_strndup(key, key_len);
    ch->key_len = key_len;
    ch->name = ch->key + name_off;
    ch->name_len = key_len - name_off;
    ch->ns = ns;
    ch->shard = hd_redis_shard_of(key, key_len);
    ch->hnext = T.tab[ch->hash & (T.cap - 1)];
    T.tab[ch->hash & (T.cap - 1)] = ch;
    T.n++;
    hd_gauge_set(HD_G_CHANNELS, (int64_t) T.n);
    return ch;
}

size_t
hd_chan_count(void)
{
    return T.n;
}

void
hd_chan_foreach(void (*fn)(const hd_chan_t *ch, void *arg), void *arg)
{
    for (size_t i = 0; i < T.cap; i++)
        for (hd_chan_t *ch = T.tab[i]; ch != NULL; ch = ch->hnext)
            fn(ch, arg);
}

static void
unlink_chan(hd_chan_t *ch)
{
    hd_chan_t **pp = &T.tab[ch->hash & (T.cap - 1)];
    for (; *pp != NULL; pp = &(*pp)->hnext)
        if (*pp == ch) {
            *pp = ch->hnext;
            break;
        }
    T.n--;
    hd_gauge_set(HD_G_CHANNELS, (int64_t) T.n);
}

static void
drop_buffer(hd_chan_t *ch)
{
    for (uint32_t i = 0; i < ch->nbuf; i++)
        hd_msg_unref(ch->buf[i].msg);
    ch->nbuf = 0;
    ch->buf_lost_upto = 0;
    if (ch->buf_cap > 64) {
        hd_free(ch->buf);
        ch->buf_cap = 0;
    }
}

/*
 * Every change of a channel's Redis state, and its freeing, goes through
 * the flush list, handled once per loop turn: nothing frees a channel
 * under a caller that is still looking at it.
 */
static void
flush_add(hd_chan_t *ch)
{
    if (ch->in_flush)
        return;
    ch->in_flush = true;
    ch->fnext = T.flush;
    T.flush = ch;
    if (!ev_is_active(&T.idle_w))
        ev_idle_start(T.loop, &T.idle_w); /* don't block with work left */
}

/* Free a channel nobody needs: no members and nothing in flight. */
static void
chan_maybe_free(hd_chan_t *ch)
{
    if (ch->nmembers > 0 || ch->in_flush || ch->meta_inflight
        || ch->resync_inflight || ch->rstate != HD_R_NONE)
        return;
    unlink_chan(ch);
    drop_buffer(ch);
    free(ch->buf);
    free(ch->members);
    free(ch->key);
    free(ch);
}

/* ---- membership ----------------------------------------------------------- */

static void start_pending(hd_chan_t *ch);
static void fail_pending(hd_chan_t *ch, int code, const char *msg);

int
hd_chan_join(hd_chan_t *ch, hd_conn_t *c, int64_t cmd_id, uint64_t since,
             const char *recover_epoch)
{
    hd_sub_t *s;
    uint32_t  si;

    if (c->nsubs == c->subs_cap) {
        /* from 1: most clients hold one or two subscriptions for
         * life, and three empty slots cost 192 bytes a connection */
        c->subs_cap = c->subs_cap ? c->subs_cap * 2 : 1;
        c->subs = hd_realloc(c->subs, c->subs_cap * sizeof(*c->subs));
    }
    if (ch->nmembers == ch->members_cap) {
        ch->members_cap = ch->members_cap ? ch->members_cap * 2 : 4;
        ch->members = hd_realloc(ch->members,
                                 ch->members_cap * sizeof(*ch->members));
    }
    s = &c->subs[c->nsubs];
    memset(s, 0, sizeof(*s));
    s->chan = ch;
    s->idx = ch->nmembers;
    s->state = HD_SUB_PENDING;
    s->cmd_id = cmd_id;
    if (recover_epoch != NULL) {
        s->recovering = true;
        s->min_offset = since;
        s->recover_epoch = hd_strdup(recover_epoch);
    }
    si = c->nsubs;
    ch->members[ch->nmembers].conn = c;
    ch->members[ch->nmembers].sub_i = si;
    ch->nmembers++;
    ch->npending++;
    c->nsubs++;
    hd_gauge_add(HD_G_SUBSCRIPTIONS, 1);

    if (ch->rstate != HD_R_SUBSCRIBED) {
        flush_add(ch); /* SUBSCRIBE on the next loop turn */
        return (int) si;
    }
    /*
     * Live on Redis already: the reads start now, and a read Redis refuses
     * at once (its command connection full or going down) fails every
     * pending member right here, this one included. Its slot is then gone
     * (swap-removed; nsubs - 1 may now be another subscription), so say
     * so rather than hand back an index the caller would write through.
     * The pending members of ch all fail together, so this one survived
     * iff it is still the last slot and on ch.
     */
    start_pending(ch);
    if (c->nsubs != si + 1 || c->subs[si].chan != ch)
        return -EAGAIN;
    return (int) si;
}

void
hd_chan_leave(hd_conn_t *c, uint32_t sub_i)
{
    hd_sub_t  *s = &c->subs[sub_i];
    hd_chan_t *ch = s->chan;
    uint32_t   mi = s->idx, last;

    if (s->state == HD_SUB_PENDING)
        ch->npending--;
    else if (s->announced && T.hooks.left != NULL)
        T.hooks.left(c, ch, s);
    hd_free(s->recover_epoch);
    /* swap-remove from the channel, fixing the moved member's back index */
    last = ch->nmembers - 1;
    if (mi != last) {
        ch->members[mi] = ch->members[last];
        ch->members[mi].conn->subs[ch->members[mi].sub_i].idx = mi;
    }
    ch->nmembers--;
    /* swap-remove from the connection, fixing the moved sub's member */
    last = c->nsubs - 1;
    if (sub_i != last) {
        c->subs[sub_i] = c->subs[last];
        c->subs[sub_i].chan->members[c->subs[sub_i].idx].sub_i = sub_i;
    }
    c->nsubs--;
    hd_gauge_add(HD_G_SUBSCRIPTIONS, -1);

    if (ch->nmembers == 0) {
        /* nobody is left to fill a hole for: a later member starts from
         * the channel's offset, not behind this fill (a read in flight
         * sees !resync and does nothing) */
        ch->resync = false;
    }
    if (ch->npending == 0 && !ch->resync)
        drop_buffer(ch);
    if (ch->nmembers == 0)
        flush_add(ch); /* UNSUBSCRIBE or free, on the next turn */
}

void
hd_chan_leave_all(hd_conn_t *c)
{
    while (c->nsubs > 0)
        hd_chan_leave(c, c->nsubs - 1);
    hd_free(c->subs);
    c->subs_cap = 0;
}

/* ---- delivery ------------------------------------------------------------- */

static hd_msg_t *
build_push(hd_chan_t *ch, const hd_envelope_t *env)
{
    /* {"push":{"channel":"<name>","pub":{"offset":N,"epoch":"E","data":D}}}
     * channel names and epochs need no JSON escaping; data is JSON text */
    static const char p1[] = "{\"push\":{\"channel\":\"";
    static const char p2[] = "\",\"pub\":{\"offset\":";
    static const char p3[] = ",\"epoch\":\"";
    static const char p4[] = "\",\"data\":";
    static const char p5[] = "}}}";
    char              num[24];
    int               nl = snprintf(num, sizeof(num), "%llu",
                                    (unsigned long long) env->offset);
    size_t len = sizeof(p1) - 1 + ch->name_len + sizeof(p2) - 1 + (size_t) nl
        + sizeof(p3) - 1 + env->epoch_len + sizeof(p4) - 1 + env->data_len
        + sizeof(p5) - 1;
    hd_msg_t *m = hd_malloc(sizeof(*m) + len + 1);
    char     *p = m->data;

#define PUT(s, n)            \
    do {                     \
        memcpy(p, (s), (n)); \
        p += (n);            \
    } while (0)
    PUT(p1, sizeof(p1) - 1);
    PUT(ch->name, ch->name_len);
    PUT(p2, sizeof(p2) - 1);
    PUT(num, (size_t) nl);
    PUT(p3, sizeof(p3) - 1);
    PUT(env->epoch, env->epoch_len);
    PUT(p4, sizeof(p4) - 1);
    PUT(env->data, env->data_len);
    PUT(p5, sizeof(p5) - 1);
#undef PUT
    *p = '\0';
    m->refs = 1;
    m->len = (uint32_t) len;
    m->pub_ns = env->pub_us * 1000;
    return m;
}

static inline void
deliver(hd_conn_t *c, hd_msg_t *m)
{
    T.hooks.deliver(c, m);
}

/*
 * The channel's numbering restarted under live members (its state in Redis
 * was lost: flushed, expired, Redis restarted). Whatever they had not seen
 * of the old epoch is gone, and so is every offset of the new one before
 * `next`: one gap push says so (from 1; `to` may be 0 when nothing of the
 * new epoch was missed), then delivery goes on in the new numbering.
 */
static void
epoch_restart(hd_chan_t *ch, uint64_t next)
{
    for (uint32_t i = 0; i < ch->nmembers; i++) {
        hd_conn_t *c = ch->members[i].conn;
        hd_sub_t  *s = &c->subs[ch->members[i].sub_i];
        if (s->state != HD_SUB_ACTIVE)
            continue;
        T.hooks.gap(c, ch, 1, next - 1, ch->epoch);
        s->min_offset = next - 1;
    }
}

/*
 * A join or leave on ch: "J <client id> <entry JSON>" (or "L ..."),
 * published by hd_presence.c outside the offset numbering, so it is
 * pushed to the active members as it comes and never buffered or
 * replayed. One push is built and shared.
 */
static void
dispatch_event(hd_chan_t *ch, const char *payload, size_t len)
{
    const char *client = payload + 2, *sp, *entry;
    size_t      client_len, entry_len, n;
    hd_msg_t   *m;
    char       *p;
    bool        join = payload[0] == 'J';

    sp = memchr(client, ' ', len - 2);
    if (sp == NULL || T.hooks.event == NULL)
        return;
    client_len = (size_t) (sp - client);
    entry = sp + 1;
    entry_len = len - (size_t) (entry - payload);
    /* {"push":{"channel":"<name>","join":<entry>}} */
    n = 21 + ch->name_len + (join ? 9 : 10) + entry_len + 2;
    m = hd_malloc(sizeof(*m) + n + 1);
    p = m->data;
    p += sprintf(p,
                 "{\"push\":{\"channel\":\"%.*s\",\"%s\":", (int) ch->name_len,
                 ch->name, join ? "join" : "leave");
    memcpy(p, entry, entry_len);
    p += entry_len;
    memcpy(p, "}}", 3);
    p += 2;
    m->refs = 1;
    m->len = (uint32_t) (p - m->data);
    m->pub_ns = 0;
    for (uint32_t i = 0; i < ch->nmembers; i++) {
        hd_conn_t *c = ch->members[i].conn;
        hd_sub_t  *s = &c->subs[ch->members[i].sub_i];
        if (s->state == HD_SUB_ACTIVE && !s->jl_off)
            T.hooks.event(c, m, client, client_len);
    }
    hd_msg_unref(m);
}

/*
 * Keep a push for pending members or behind a fill, in offset order (live
 * pushes may come out of order); an offset already kept is a duplicate.
 * Bounded: the lowest is dropped, and whoever still needed it is told
 * with a gap push (never a silent loss).
 */
static void
buf_insert(hd_chan_t *ch, uint64_t offset, hd_msg_t *m, bool other_epoch)
{
    uint32_t k = ch->nbuf;

    while (k > 0 && ch->buf[k - 1].offset > offset)
        k--;
    if (k > 0 && ch->buf[k - 1].offset == offset
        && ch->buf[k - 1].other_epoch == other_epoch)
        return;
    if (ch->nbuf == BUFFER_MAX) {
        if (k == 0) { /* below everything kept: it is the one dropped */
            if (offset > ch->buf_lost_upto)
                ch->buf_lost_upto = offset;
            return;
        }
        if (ch->buf[0].offset > ch->buf_lost_upto)
            ch->buf_lost_upto = ch->buf[0].offset;
        hd_msg_unref(ch->buf[0].msg);
        memmove(ch->buf, ch->buf + 1, (BUFFER_MAX - 1) * sizeof(*ch->buf));
        ch->nbuf--;
        k--;
    }
    if (ch->nbuf == ch->buf_cap) {
        ch->buf_cap = ch->buf_cap ? ch->buf_cap * 2 : 16;
        ch->buf = hd_realloc(ch->buf, ch->buf_cap * sizeof(*ch->buf));
    }
    memmove(ch->buf + k + 1, ch->buf + k, (ch->nbuf - k) * sizeof(*ch->buf));
    ch->buf[k].offset = offset;
    ch->buf[k].msg = hd_msg_ref(m);
    ch->buf[k].other_epoch = other_epoch;
    ch->nbuf++;
}

/* A member met a hole: hold live pushes until a fill read says what it
 * was (fill_kick() sends it). */
static void
hole_seen(hd_chan_t *ch)
{
    if (ch->resync)
        return;
    ch->resync = true;
    ch->fill_rounds = 0;
    memcpy(ch->resync_epoch, ch->epoch, sizeof(ch->epoch));
}

/* Send the fill read if one is due and can go (the channel is subscribed;
 * resync_start() sends at most one at a time). */
static void
fill_kick(hd_chan_t *ch)
{
    if (ch->resync && ch->rstate == HD_R_SUBSCRIBED && ch->nmembers > 0)
        resync_start(ch);
}

/*
 * Give an active member what the buffer holds after its min_offset, in
 * order. A hole at or below known (offsets a read saw assigned, that no
 * read will fill: no history, or not in it) is told as a gap; with force,
 * any hole is. Returns true when it stopped at a hole that another read
 * may fill (the member keeps its place).
 */
static bool
replay(hd_chan_t *ch, hd_conn_t *c, hd_sub_t *s, uint64_t known, bool force)
{
    if (ch->buf_lost_upto > s->min_offset) {
        T.hooks.gap(c, ch, s->min_offset + 1, ch->buf_lost_upto, ch->epoch);
        s->min_offset = ch->buf_lost_upto;
    }
    for (uint32_t k = 0; k < ch->nbuf; k++) {
        uint64_t off = ch->buf[k].offset;
        /* the numbering restarted during the fill: the next read says
         * so (resync_gap()) before anything of the new one goes out */
        if (ch->buf[k].other_epoch && !force)
            return true;
        if (off <= s->min_offset)
            continue;
        if (off > s->min_offset + 1) {
            uint64_t to = force || known >= off - 1 ? off - 1 : known;
            if (to > s->min_offset) {
                T.hooks.gap(c, ch, s->min_offset + 1, to, ch->epoch);
                s->min_offset = to;
            }
            if (off > s->min_offset + 1)
                return true;
        }
        s->min_offset = off;
        deliver(c, ch->buf[k].msg);
    }
    if (known > s->min_offset) {
        T.hooks.gap(c, ch, s->min_offset + 1, known, ch->epoch);
        s->min_offset = known;
    }
    return false;
}

void
hd_chan_dispatch(const char *key, size_t key_len, const char *payload,
                 size_t len)
{
    hd_chan_t    *ch = hd_chan_find(key, key_len);
    hd_envelope_t env;
    hd_msg_t     *m;
    bool          held, other_epoch = false;

    if (ch == NULL || ch->nmembers == 0)
        return; /* an unsubscribe crossed the message */
    if (len > 2 && (payload[0] == 'J' || payload[0] == 'L')
        && payload[1] == ' ') {
        dispatch_event(ch, payload, len);
        return;
    }
    if (hd_envelope_decode(payload, len, &env) < 0) {
        hd_log_warn("dropping a malformed envelope on %.*s (%zu bytes)",
                    (int) ch->name_len, ch->name, len);
        hd_ctr_inc(HD_C_ERRORS);
        return;
    }
    if (ch->resync) {
        /* the fill compares against the epoch it started in: leave it */
        other_epoch = env.epoch_len != strlen(ch->epoch)
            || memcmp(env.epoch, ch->epoch, env.epoch_len) != 0;
    } else if (env.epoch_len != strlen(ch->epoch)
               || memcmp(env.epoch, ch->epoch, env.epoch_len) != 0) {
        bool had = ch->epoch[0] != '\0';
        memcpy(ch->epoch, env.epoch, env.epoch_len);
        ch->epoch[env.epoch_len] = '\0';
        if (had)
            epoch_restart(ch, env.offset);
        ch->last_offset = env.offset;
    }
    if (env.offset > ch->last_offset)
        ch->last_offset = env.offset;

    m = build_push(ch, &env);
    /*
     * A member gets offsets one after the other, never one past a hole
     * (Redis publishes in order, redis.wait_replicas too: RELEASE_LUA;
     * a hole means something was missed, e.g. around a reconnect). A hole
     * starts a fill (held behind it: everything live until it is filled
     * from history or told as a gap); an offset already had is a
     * duplicate.
     */
    held = ch->resync;
    for (uint32_t i = 0; i < ch->nmembers && !held; i++) {
        hd_conn_t *c = ch->members[i].conn;
        hd_sub_t  *s = &c->subs[ch->members[i].sub_i];
        if (s->state != HD_SUB_ACTIVE || env.offset <= s->min_offset)
            continue;
        if (env.offset == s->min_offset + 1) {
            s->min_offset = env.offset;
            deliver(c, m);
        } else {
            hole_seen(ch);
        }
    }
    if (ch->npending > 0 || ch->resync)
        buf_insert(ch, env.offset, m, other_epoch);
    hd_msg_unref(m);
    /* a new fill, or one whose read failed (a WAIT unmet): a live push
     * means the replicas answer again */
    fill_kick(ch);
}

/* ---- subscribe replies ---------------------------------------------------- */

/*
 * The channel is subscribed on Redis and its current offset/epoch are
 * known: every pending member gets its reply, then what was buffered after
 * that offset, and goes ACTIVE.
 */
/* Make a member ACTIVE at offset and give it what was buffered after. */
static void
go_live(hd_chan_t *ch, hd_conn_t *c, hd_sub_t *s, uint64_t offset,
        const char *epoch)
{
    s->state = HD_SUB_ACTIVE;
    s->recovering = false;
    hd_free(s->recover_epoch);
    s->min_offset = offset;
    ch->npending--;
    (void) epoch;
    /* behind a fill, the fill hands it the buffer; a hole in the buffer
     * starts one (the caller kicks it: not under activate_pending()) */
    if (!ch->resync && replay(ch, c, s, 0, false))
        hole_seen(ch);
    if (ch->npending == 0 && !ch->resync)
        drop_buffer(ch);
}

static void
activate_pending(hd_chan_t *ch, uint64_t offset, const char *epoch)
{
    for (uint32_t i = 0; i < ch->nmembers && ch->npending > 0; i++) {
        hd_conn_t *c = ch->members[i].conn;
        hd_sub_t  *s = &c->subs[ch->members[i].sub_i];
        if (s->state != HD_SUB_PENDING || s->recovering)
            continue;
        /* presence first: whoever the client tells once it has its
         * reply finds it there (same Redis connection, in order) */
        if (T.hooks.live != NULL)
            T.hooks.live(c, ch, s);
        T.hooks.subscribed(c, s->cmd_id, offset, epoch);
        go_live(ch, c, s, offset, epoch);
    }
}

void
hd_chan_activate(hd_conn_t *c, uint32_t sub_i, uint64_t offset,
                 const char *epoch)
{
    hd_sub_t  *s = &c->subs[sub_i];
    hd_chan_t *ch = s->chan;

    if (offset > ch->last_offset || strcmp(ch->epoch, epoch) != 0) {
        ch->last_offset = offset;
        snprintf(ch->epoch, sizeof(ch->epoch), "%s", epoch);
    }
    if (T.hooks.live != NULL)
        T.hooks.live(c, ch, s);
    go_live(ch, c, s, offset, epoch);
    fill_kick(ch);
}

/* The channel is live on Redis: recovering members run their own history
 * read; the others share one meta read. */
static void
start_pending(hd_chan_t *ch)
{
    bool plain = false, failed = false;

    for (uint32_t i = 0; i < ch->nmembers; i++) {
        hd_conn_t *c = ch->members[i].conn;
        hd_sub_t  *s = &c->subs[ch->members[i].sub_i];
        if (s->state != HD_SUB_PENDING)
            continue;
        if (!s->recovering)
            plain = true;
        else if (!s->recover_sent) {
            s->recover_sent = true;
            if (T.hooks.recover(c, ch->members[i].sub_i) < 0)
                failed = true;
        }
    }
    if (failed) {
        /* the command connection is down: every pending member fails */
        fail_pending(ch, HD_ERR_UNAVAILABLE, "redis unavailable, retry");
        return;
    }
    if (plain)
        meta_read(ch);
}

/* Pending members get an error and are removed. */
static void
fail_pending(hd_chan_t *ch, int code, const char *msg)
{
    uint32_t i = 0;

    while (i < ch->nmembers && ch->npending > 0) {
        hd_conn_t *c = ch->members[i].conn;
        uint32_t   si = ch->members[i].sub_i;
        hd_sub_t  *s = &c->subs[si];
        if (s->state != HD_SUB_PENDING) {
            i++;
            continue;
        }
        T.hooks.failed(c, s->cmd_id, code, msg);
        hd_chan_leave(c, si); /* swap-remove: look at index i again */
    }
}

/* The fill is over: live pushes go straight to members again. */
static void
resync_done(hd_chan_t *ch)
{
    ch->resync = false;
    ch->fill_rounds = 0;
    for (uint32_t k = 0; k < ch->nbuf; k++)
        ch->buf[k].other_epoch = false;
    if (ch->npending == 0)
        drop_buffer(ch);
}

/* At most this many reads per fill; then whatever is still missing is
 * told as a gap (a hole the reads cannot explain must not hold live
 * pushes for ever). */
#define FILL_ROUNDS_MAX 4

/*
 * A fill read came back (and history, if it had any, was delivered):
 * every active member gets the buffer in order (replay(), with known).
 * A member still at a hole the read did not see (published after it, or
 * below its since) needs another read; else the fill is over.
 */
static void
fill_finish(hd_chan_t *ch, uint64_t known)
{
    bool more = false, force = ++ch->fill_rounds >= FILL_ROUNDS_MAX;

    for (uint32_t i = 0; i < ch->nmembers; i++) {
        hd_conn_t *c = ch->members[i].conn;
        hd_sub_t  *s = &c->subs[ch->members[i].sub_i];
        if (s->state == HD_SUB_ACTIVE && replay(ch, c, s, known, force))
            more = true;
    }
    if (more)
        resync_start(ch);
    else
        resync_done(ch);
}

/*
 * No history to fill the hole from (or it no longer holds it): offset is
 * the channel's current one. What the buffer holds is delivered in order,
 * every offset up to offset that it does not hold is told as a gap; a
 * changed epoch means the numbering restarted.
 */
static void
resync_gap(hd_chan_t *ch, uint64_t offset, const char *epoch)
{
    bool epoch_changed = ch->resync_epoch[0] != '\0'
        && strcmp(ch->resync_epoch, epoch) != 0;

    snprintf(ch->epoch, sizeof(ch->epoch), "%s", epoch);
    if (epoch_changed) {
        /* the old numbering is gone: what is held of it goes, and
         * everything is suspect up to what is held of the new one */
        uint64_t to;
        uint32_t n = 0;
        for (uint32_t k = 0; k < ch->nbuf; k++) {
            if (!ch->buf[k].other_epoch) {
                hd_msg_unref(ch->buf[k].msg);
                continue;
            }
            ch->buf[n] = ch->buf[k];
            ch->buf[n++].other_epoch = false;
        }
        ch->nbuf = n;
        ch->buf_lost_upto = 0;
        to = ch->nbuf > 0 && ch->buf[0].offset <= offset ? ch->buf[0].offset - 1
                                                         : offset;
        for (uint32_t i = 0; i < ch->nmembers; i++) {
            hd_conn_t *c = ch->members[i].conn;
            hd_sub_t  *s = &c->subs[ch->members[i].sub_i];
            if (s->state != HD_SUB_ACTIVE)
                continue;
            T.hooks.gap(c, ch, 1, to, epoch);
            s->min_offset = to;
        }
        ch->last_offset = offset;
        memcpy(ch->resync_epoch, ch->epoch, sizeof(ch->epoch));
    } else if (offset > ch->last_offset) {
        ch->last_offset = offset;
    }
    fill_finish(ch, offset);
}

#define RESYNC_MAX 10000

/*
 * A fill read on a channel with history: the worker fills the hole
 * itself, in order, before any newer live push. With redis.wait_replicas
 * the read was answered only once a WAIT after it was met, so everything
 * up to r->offset is on the replicas: none of it can be handed out again.
 */
static void
resync_cb(int err, const hd_hist_reply_t *r, void *arg)
{
    hd_chan_t *ch = arg;

    ch->resync_inflight = false;
    if (err != 0 || !ch->resync) {
        /* Redis went away again (the next reconnect starts over) or a
         * WAIT was unmet: tried again in a second, or by the next live
         * push if that comes first */
        if (err != 0 && ch->resync && ch->nmembers > 0)
            fill_retry_later();
        if (ch->nmembers == 0)
            flush_add(ch);
        return;
    }
    if (r->status == 1) {
        for (size_t i = 0; i < r->n; i++) {
            hd_envelope_t env;
            if (hd_envelope_decode(r->env[i], r->env_len[i], &env) < 0)
                continue;
            hd_msg_t *m = build_push(ch, &env);
            for (uint32_t k = 0; k < ch->nmembers; k++) {
                hd_conn_t *c = ch->members[k].conn;
                hd_sub_t  *s = &c->subs[ch->members[k].sub_i];
                /* one below the read's since waits for the next read */
                if (s->state == HD_SUB_ACTIVE
                    && env.offset == s->min_offset + 1) {
                    s->min_offset = env.offset;
                    deliver(c, m);
                }
            }
            hd_msg_unref(m);
        }
        if (r->offset > ch->last_offset)
            ch->last_offset = r->offset;
        fill_finish(ch, 0);
    } else {
        resync_gap(ch, r->offset, r->epoch);
    }
    if (ch->nmembers == 0)
        flush_add(ch);
}

/* A fill without history (or without an epoch to recover in) reads the
 * meta: the hole can only be told as a gap. */
static bool
fill_by_meta(const hd_chan_t *ch)
{
    return ch->ns == NULL || ch->ns->history_size == 0
        || ch->resync_epoch[0] == '\0';
}

/* Send the fill read, from the lowest offset an active member has. */
static void
resync_start(hd_chan_t *ch)
{
    uint64_t since = UINT64_MAX;

    if (ch->resync_inflight)
        return;
    for (uint32_t i = 0; i < ch->nmembers; i++) {
        hd_sub_t *s = &ch->members[i].conn->subs[ch->members[i].sub_i];
        if (s->state == HD_SUB_ACTIVE && s->min_offset < since)
            since = s->min_offset;
    }
    ch->resync_from = since != UINT64_MAX ? since : ch->last_offset;
    if (!fill_by_meta(ch)) {
        if (hd_pubsub_recover(ch->ns, ch->key, ch->key_len, ch->resync_from,
                              ch->resync_epoch, RESYNC_MAX, resync_cb, ch)
            == 0)
            ch->resync_inflight = true;
    } else {
        meta_read(ch); /* meta_cb sees ch->resync and sends the gap */
    }
}

static void
meta_cb(int err, uint64_t offset, const char *epoch, void *arg)
{
    hd_chan_t *ch = arg;

    ch->meta_inflight = false;
    if (err == 0 && ch->resync && fill_by_meta(ch))
        resync_gap(ch, offset, epoch);
    if (err == 0) {
        if (offset > ch->last_offset || ch->epoch[0] == '\0'
            || strcmp(ch->epoch, epoch) != 0) {
            ch->last_offset = offset;
            snprintf(ch->epoch, sizeof(ch->epoch), "%s", epoch);
        }
        activate_pending(ch, offset, epoch);
    } else {
        fail_pending(ch, HD_ERR_UNAVAILABLE, "redis unavailable, retry");
        if (ch->resync && ch->nmembers > 0)
            fill_retry_later();
    }
    if (err == 0)
        fill_kick(ch); /* a member that went live met a hole */
    if (ch->npending > 0 && ch->rstate == HD_R_SUBSCRIBED)
        start_pending(ch); /* members that came while it was in flight */
    else if (ch->nmembers == 0)
        flush_add(ch);
}

static void
meta_read(hd_chan_t *ch)
{
    if (ch->meta_inflight)
        return;
    if (hd_pubsub_meta(ch->ns, ch->key, ch->key_len, meta_cb, ch) < 0) {
        fail_pending(ch, HD_ERR_UNAVAILABLE, "redis unavailable, retry");
        if (ch->nmembers == 0)
            flush_add(ch);
        return;
    }
    ch->meta_inflight = true;
}

/* ---- Redis subscription state --------------------------------------------- */

void
hd_chan_confirmed(const char *key, size_t key_len, bool subscribed)
{
    hd_chan_t *ch = hd_chan_find(key, key_len);

    if (ch == NULL)
        return;
    if (subscribed && ch->rstate == HD_R_SUBSCRIBING) {
        ch->rstate = HD_R_SUBSCRIBED;
        if (ch->nmembers == 0)
            flush_add(ch);
        else {
            if (ch->resync)
                resync_start(ch);
            if (ch->npending > 0)
                start_pending(ch);
        }
    } else if (!subscribed && ch->rstate == HD_R_UNSUBSCRIBING) {
        ch->rstate = HD_R_NONE;
        flush_add(ch); /* free it, or subscribe again if someone
                                   came back meanwhile */
    }
}

/* Once per loop turn: batch the SUBSCRIBEs and UNSUBSCRIBEs that membership
 * changes asked for. A channel in flight is left for its confirmation. */
static void
flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    const char *subv[SUB_BATCH], *unsubv[SUB_BATCH];
    size_t      subl[SUB_BATCH], unsubl[SUB_BATCH];
    hd_chan_t  *subc[SUB_BATCH], *unsubc[SUB_BATCH];
    int         ns = 0, nu = 0;
    hd_chan_t  *list, *ch, *retry = NULL;
    bool        up;
    (void) loop;
    (void) w;
    (void) revents;

    list = T.flush;
    T.flush = NULL;
    ev_idle_stop(T.loop, &T.idle_w);
    while (list != NULL) {
        ch = list;
        list = ch->fnext;
        ch->in_flush = false;
        up = hd_redis_sub_up_key(ch->key, ch->key_len); /* its shard */

        if (ch->nmembers > 0 && ch->rstate == HD_R_NONE) {
            if (!up) {
                fail_pending(ch, HD_ERR_UNAVAILABLE,
                             "redis unavailable, retry");
                if (ch->nmembers == 0)
                    chan_maybe_free(ch);
                continue; /* active members resubscribe on reconnect */
            }
            if (ns == SUB_BATCH) {
                ch->fnext = retry;
                retry = ch;
                continue;
            }
            subv[ns] = ch->key;
            subl[ns] = ch->key_len;
            subc[ns++] = ch;
        } else if (ch->nmembers == 0 && ch->rstate == HD_R_SUBSCRIBED) {
            if (!up) {
                ch->rstate = HD_R_NONE;
                chan_maybe_free(ch);
                continue;
            }
            if (nu == SUB_BATCH) {
                ch->fnext = retry;
                retry = ch;
                continue;
            }
            unsubv[nu] = ch->key;
            unsubl[nu] = ch->key_len;
            unsubc[nu++] = ch;
        } else if (ch->nmembers == 0) {
            chan_maybe_free(ch);
        }
    }
    if (ns > 0) {
        if (hd_redis_subscribe(true, ns, subv, subl) == 0)
            for (int i = 0; i < ns; i++)
                subc[i]->rstate = HD_R_SUBSCRIBING;
        else
            for (int i = 0; i < ns; i++)
                fail_pending(subc[i], HD_ERR_UNAVAILABLE,
                             "redis unavailable, retry");
    }
    if (nu > 0) {
        if (hd_redis_subscribe(false, nu, unsubv, unsubl) == 0)
            for (int i = 0; i < nu; i++)
                unsubc[i]->rstate = HD_R_UNSUBSCRIBING;
        else
            for (int i = 0; i < nu; i++) {
                unsubc[i]->rstate = HD_R_NONE;
                chan_maybe_free(unsubc[i]);
            }
    }
    while (retry != NULL) { /* over the batch size: next turn */
        ch = retry;
        retry = ch->fnext;
        flush_add(ch);
    }
}

static void
idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void) loop;
    (void) w;
    (void) revents; /* flush_cb runs before the poll */
}

static void
retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) w;
    (void) revents;
    for (size_t i = 0; i < T.cap; i++)
        for (hd_chan_t *ch = T.tab[i]; ch != NULL; ch = ch->hnext)
            if (ch->resync && !ch->resync_inflight && !ch->meta_inflight)
                fill_kick(ch);
}

/* A shard's subscriber connection is back: every channel of it with
 * members is subscribed again, in batches. */
void
hd_chan_redis_up(unsigned shard)
{
    for (size_t i = 0; i < T.cap; i++)
        for (hd_chan_t *ch = T.tab[i]; ch != NULL; ch = ch->hnext)
            if (ch->nmembers > 0 && ch->shard == shard)
                flush_add(ch);
}

/* Lost: Redis forgot our subscriptions. Channels go back to NONE (those
 * still wanted are subscribed again on reconnect); pending members get an
 * error; active members learn what they missed once it is back
 * (resync_start). */
void
hd_chan_redis_down(unsigned shard)
{
    for (size_t i = 0; i < T.cap; i++) {
        hd_chan_t *ch = T.tab[i], *next;
        for (; ch != NULL; ch = next) {
            next = ch->hnext;
            if (ch->shard != shard)
                continue; /* other shards are unaffected */
            ch->rstate = HD_R_NONE;
            if (ch->npending > 0 && !ch->meta_inflight)
                fail_pending(ch, HD_ERR_UNAVAILABLE,
                             "redis unavailable, retry");
            if (ch->nmembers > 0)
                hole_seen(ch); /* anything may have been missed */
            ch->fill_rounds = 0;
            flush_add(ch);
        }
    }
}

/*
 * The command connection is (again) up. Resyncs and pending subscribes
 * that could not run while it was down (the subscriber may have come back
 * first) run now.
 */
void
hd_chan_cmd_up(unsigned shard)
{
    for (size_t i = 0; i < T.cap; i++)
        for (hd_chan_t *ch = T.tab[i]; ch != NULL; ch = ch->hnext) {
            if (ch->rstate != HD_R_SUBSCRIBED || ch->nmembers == 0
                || ch->shard != shard)
                continue;
            if (ch->resync)
                resync_start(ch);
            if (ch->npending > 0)
                start_pending(ch);
        }
}

void
hd_chan_init(struct ev_loop *loop, const hd_chan_hooks_t *hooks)
{
    memset(&T, 0, sizeof(T));
    T.loop = loop;
    T.hooks = *hooks;
    grow();
    ev_prepare_init(&T.flush_w, flush_cb);
    ev_prepare_start(T.loop, &T.flush_w);
    ev_unref(T.loop); /* bookkeeping: never keeps the loop alive */
    ev_idle_init(&T.idle_w, idle_cb);
    ev_timer_init(&T.retry_w, retry_cb, FILL_RETRY_S, 0.);
}

void
hd_chan_shutdown(void)
{
    ev_ref(T.loop);
    ev_prepare_stop(T.loop, &T.flush_w);
    ev_idle_stop(T.loop, &T.idle_w);
    ev_timer_stop(T.loop, &T.retry_w);
    for (size_t i = 0; i < T.cap; i++) {
        hd_chan_t *ch = T.tab[i], *next;
        for (; ch != NULL; ch = next) {
            next = ch->hnext;
            drop_buffer(ch);
            free(ch->buf);
            free(ch->members);
            free(ch->key);
            free(ch);
        }
    }
    hd_free(T.tab);
    T.cap = T.n = 0;
    T.flush = NULL;
}
