#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>

#include "hd_alloc.h"
#include "hd_log.h"
#include "hd_metrics.h"
#include "hd_redis.h"
#include "hd_time.h"
#include "hd_worker_int.h"

#define WATCHDOG_S    0.1
#define DEADLINES_MAX 65536 /* in-flight commands tracked for timeouts */

enum rc_state {
    RC_DOWN = 0,
    RC_CONNECTING,
    RC_AUTH,
    RC_UP
};

enum rc_kind {
    K_CMD = 0,
    K_SUB,
    K_SENTINEL
};

struct shard;

typedef struct rconn {
    const char        *name;
    enum rc_kind       kind;
    struct shard      *sh;
    redisAsyncContext *ac;
    enum rc_state      st;
    ev_timer           retry_w;
    uint64_t           backoff_ms;
    uint64_t           connect_deadline_ms;
    bool               warned; /* failure logged since last up */
    bool               ever_up;
    bool               quiet_kill; /* torn down on purpose: no rotation */
    /* FIFO of deadlines of in-flight commands (replies come in order) */
    uint64_t *dl;
    uint32_t  dl_head, dl_len;
} rconn_t;

typedef struct shard {
    unsigned                 idx;
    const hd_redis_target_t *t;
    uint64_t                 name_hash; /* for rendezvous hashing */
    rconn_t                  cmd, sub, sen;
    /* Sentinel: the primary's address as last reported (NULL: unknown) */
    char    *primary_host;
    int      primary_port;
    unsigned sen_next;   /* the Sentinel to try next */
    char     replid[48]; /* the primary's replication id ("" until read) */
    uint64_t hb_sent_ms; /* last heartbeat published */
    uint64_t hb_seen_ms; /* last heartbeat received on sub */
    bool     hb_outstanding;
} shard_t;

typedef struct pending {
    hd_redis_cb *cb;
    void        *arg;
    uint64_t     start_ns;
} pending_t;

static struct {
    shard_t         *sh;
    unsigned         n;
    const char     **names; /* shard names, for hd_redis_hrw() */
    hd_redis_hooks_t hooks;
    ev_timer         watchdog_w;
    char            *hb_chan;
    size_t           hb_len;
    bool             started;
} R;

static void rc_connect(rconn_t *rc);
static void update_gauge(void);
static void sub_msg_cb(redisAsyncContext *ac, void *r, void *priv);
static void sen_resolve(shard_t *sh);

/* ---- shard placement ------------------------------------------------------ */

static uint64_t
fnv1a64(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char) s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* MurmurHash3's 64-bit finalizer: every input bit flips about half of the
 * output bits, which is what rendezvous scores need */
static uint64_t
fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/*
 * Rendezvous (highest random weight) hashing: a key goes to the name with
 * the highest score fmix64(fnv1a64(key) ^ fnv1a64(name)). Adding a shard
 * moves only the keys the new one wins (about 1/n of them); removing one
 * moves only its own keys. Ties (never in practice) go to the lower index.
 */
unsigned
hd_redis_hrw(const char *const *names, unsigned n, const char *key,
             size_t key_len)
{
    uint64_t kh = fnv1a64(key, key_len), best = 0;
    unsigned win = 0;

    for (unsigned i = 0; i < n; i++) {
        uint64_t s = fmix64(kh ^ fnv1a64(names[i], strlen(names[i])));
        if (i == 0 || s > best) {
            best = s;
            win = i;
        }
    }
    return win;
}

unsigned
hd_redis_shard_of(const char *key, size_t key_len)
{
    uint64_t kh, best = 0;
    unsigned win = 0;

    /* only client channels are spread; herald's own keys and channels
     * (node registry, control channel: "herald#...") live on shard 0 */
    if (R.n <= 1 || key_len < 7 || memcmp(key, "herald|", 7) != 0)
        return 0;
    kh = fnv1a64(key, key_len);
    for (unsigned i = 0; i < R.n; i++) {
        uint64_t s = fmix64(kh ^ R.sh[i].name_hash);
        if (i == 0 || s > best) {
            best = s;
            win = i;
        }
    }
    return win;
}

unsigned
hd_redis_nshards(void)
{
    return R.n;
}

/* ---- connection life cycle ------------------------------------------------ */

static uint64_t
jitter(uint64_t ms)
{
    /* full jitter over the upper half: spread a fleet's reconnects */
    return ms / 2 + (uint64_t) (random() % (long) (ms / 2 + 1));
}

static void
schedule_retry(rconn_t *rc)
{
    const hd_conf_t *c = hd_w.conf;
    uint64_t         delay;

    if (!R.started)
        return;
    if (rc->backoff_ms == 0)
        rc->backoff_ms = (uint64_t) c->redis_reconnect_min_ms;
    delay = jitter(rc->backoff_ms);
    rc->backoff_ms *= 2;
    if (rc->backoff_ms > (uint64_t) c->redis_reconnect_max_ms)
        rc->backoff_ms = (uint64_t) c->redis_reconnect_max_ms;
    ev_timer_stop(hd_w.loop, &rc->retry_w);
    ev_timer_set(&rc->retry_w, (double) delay / 1000.0, 0.);
    ev_timer_start(hd_w.loop, &rc->retry_w);
}

static void
went_down(rconn_t *rc, const char *why)
{
    bool     was_up = rc->st == RC_UP;
    bool     on_purpose = rc->quiet_kill;
    shard_t *sh = rc->sh;

    rc->st = RC_DOWN;
    rc->ac = NULL;
    rc->dl_head = rc->dl_len = 0;
    if (!R.started || rc->quiet_kill)
        hd_log_debug("redis %s %s connection closed: %s", sh->t->name, rc->name,
                     why);
    else if (was_up)
        hd_log_warn("redis %s %s connection lost: %s", sh->t->name, rc->name,
                    why);
    else if (!rc->warned)
        hd_log_warn("redis %s %s connection failed: %s; retrying with backoff",
                    sh->t->name, rc->name, why);
    else
        hd_log_debug("redis %s %s connection failed: %s", sh->t->name, rc->name,
                     why);
    if (!rc->quiet_kill)
        rc->warned = true;
    if (rc->kind == K_SENTINEL && !rc->quiet_kill && sh->t->nsentinels > 0)
        sh->sen_next = (sh->sen_next + 1) % (unsigned) sh->t->nsentinels;
    rc->quiet_kill = false;
    update_gauge();
    if (rc->kind == K_SUB && was_up && R.hooks.sub_down != NULL)
        R.hooks.sub_down(sh->idx);
    /* a data connection lost under Sentinel: the primary may have moved;
     * ask again (the answer is the new primary once Sentinel promoted
     * one, and +switch-master tells us if that happens later) */
    if (rc->kind != K_SENTINEL && was_up && !on_purpose && R.started
        && sh->t->master_name != NULL)
        sen_resolve(sh);
    schedule_retry(rc);
}

/* Tear a connection down from outside hiredis' callbacks or inside them:
 * every pending callback runs with reply NULL. */
static void
rc_kill(rconn_t *rc, const char *why)
{
    redisAsyncContext *ac = rc->ac;

    if (ac == NULL)
        return;
    went_down(rc, why); /* rc->ac = NULL first: late callbacks are stale */
    ac->data = NULL;
    redisAsyncFree(ac);
}

static bool
shard_up(const shard_t *sh)
{
    return sh->cmd.st == RC_UP && sh->sub.st == RC_UP;
}

static void
update_gauge(void)
{
    int64_t down = 0;

    for (unsigned i = 0; i < R.n; i++)
        if (!shard_up(&R.sh[i]))
            down |= (int64_t) 1 << i;
    hd_gauge_set(HD_G_REDIS_UP, R.n > 0 && down == 0);
    hd_gauge_set(HD_G_REDIS_SHARDS_DOWN, down);
}

static void sen_addr_cb(redisAsyncContext *ac, void *r, void *priv);
static void info_cb(redisAsyncContext *ac, void *r, void *priv);
static void sen_msg_cb(redisAsyncContext *ac, void *r, void *priv);

static void
became_up(rconn_t *rc)
{
    shard_t *sh = rc->sh;

    rc->st = RC_UP;
    rc->backoff_ms = 0;
    rc->warned = false;
    if (rc->ever_up && rc->kind != K_SENTINEL)
        hd_ctr_inc(HD_C_REDIS_RECONNECTS);
    rc->ever_up = true;
    hd_log_info("redis %s %s connection up", sh->t->name, rc->name);
    update_gauge();
    if (rc->kind == K_SENTINEL) {
        /* a regular reply comes before any pub/sub message (hiredis) */
        redisAsyncCommand(rc->ac, sen_addr_cb, NULL,
                          "SENTINEL get-master-addr-by-name %s",
                          sh->t->master_name);
        redisAsyncCommand(rc->ac, sen_msg_cb, NULL, "SUBSCRIBE %s",
                          "+switch-master");
    } else if (rc->kind == K_SUB) {
        const char *argv[2] = { "SUBSCRIBE", R.hb_chan };
        size_t      lens[2] = { 9, R.hb_len };
        redisAsyncCommandArgv(rc->ac, sub_msg_cb, NULL, 2, argv, lens);
        sh->hb_seen_ms = hd_mono_ms();
        sh->hb_outstanding = false;
        if (R.hooks.sub_up != NULL)
            R.hooks.sub_up(sh->idx);
    } else if (R.hooks.cmd_up != NULL) {
        R.hooks.cmd_up(sh->idx);
    }
}

static void
auth_cb(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t    *rc = ac->data;
    redisReply *reply = r;
    (void) priv;

    if (rc == NULL || rc->ac != ac)
        return;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        hd_log_error("redis %s %s: AUTH/SELECT failed: %s", rc->sh->t->name,
                     rc->name, reply ? reply->str : "no reply");
        rc_kill(rc, "authentication failed");
        return;
    }
    if (rc->st == RC_AUTH && --rc->dl_len == 0)
        became_up(rc);
}

/* INFO replication on a Sentinel shard's command connection: a replica
 * (a demoted primary Sentinel still names) is left for the next answer. */
static void
info_cb(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t    *rc = ac->data;
    redisReply *reply = r;
    const char *id;
    (void) priv;

    if (rc == NULL || rc->ac != ac)
        return;
    if (reply == NULL || reply->type != REDIS_REPLY_STRING
        || strstr(reply->str, "role:master") == NULL
        || (id = strstr(reply->str, "master_replid:")) == NULL) {
        hd_log_warn("redis %s: %s:%d is not the primary (yet)", rc->sh->t->name,
                    rc->sh->primary_host, rc->sh->primary_port);
        rc_kill(rc, "not the primary");
        sen_resolve(rc->sh);
        return;
    }
    id += strlen("master_replid:");
    size_t n = strcspn(id, "\r\n");
    if (n >= sizeof(rc->sh->replid))
        n = sizeof(rc->sh->replid) - 1;
    memcpy(rc->sh->replid, id, n);
    rc->sh->replid[n] = '\0';
    if (rc->st == RC_AUTH && --rc->dl_len == 0)
        became_up(rc);
}

/* AUTH [user] password, as a command of its own (argv: no quoting). */
static void
send_auth(rconn_t *rc, const char *user, const char *pw)
{
    const char *argv[3] = { "AUTH", user, pw };
    size_t      lens[3] = { 4, user ? strlen(user) : 0, strlen(pw) };

    if (user == NULL) {
        argv[1] = pw;
        lens[1] = lens[2];
    }
    redisAsyncCommandArgv(rc->ac, auth_cb, NULL, user ? 3 : 2, argv, lens);
    rc->dl_len++;
}

static void
connect_cb(const redisAsyncContext *cac, int status)
{
    redisAsyncContext       *ac = (redisAsyncContext *) cac;
    rconn_t                 *rc = ac->data;
    const hd_redis_target_t *t;

    if (rc == NULL || rc->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac after this callback */
        went_down(rc, ac->errstr[0] ? ac->errstr : "connect failed");
        return;
    }
    t = rc->sh->t;
    /* dl_len doubles as the count of AUTH/SELECT replies awaited */
    rc->st = RC_AUTH;
    rc->dl_head = rc->dl_len = 0;
    if (rc->kind == K_SENTINEL) {
        if (t->sentinel_password != NULL)
            send_auth(rc, t->sentinel_user, t->sentinel_password);
    } else {
        if (t->password != NULL)
            send_auth(rc, t->user, t->password);
        if (rc->kind == K_CMD && t->db != 0) {
            redisAsyncCommand(ac, auth_cb, NULL, "SELECT %d", t->db);
            rc->dl_len++;
        }
        if (rc->kind == K_CMD && t->master_name != NULL) {
            /* is it still the primary, and under which replication id */
            redisAsyncCommand(ac, info_cb, NULL, "INFO replication");
            rc->dl_len++;
        }
    }
    if (rc->dl_len == 0)
        became_up(rc);
}

static void
disconnect_cb(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *) cac;
    rconn_t           *rc = ac->data;
    (void) status;

    if (rc == NULL || rc->ac != ac)
        return; /* we killed it ourselves */
    went_down(rc, ac->errstr[0] ? ac->errstr : "connection closed");
}

static bool
is_hb(const redisReply *ch)
{
    return ch->len == R.hb_len && memcmp(ch->str, R.hb_chan, R.hb_len) == 0;
}

static void
sub_msg_cb(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;
    rconn_t    *rc = ac->data;
    (void) priv;

    if (rc == NULL || rc->kind != K_SUB || reply == NULL
        || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING)
        return;

    const char *kind = reply->element[0]->str;
    redisReply *ch = reply->element[1], *payload = reply->element[2];

    if (strcmp(kind, "message") == 0 && payload->type == REDIS_REPLY_STRING) {
        if (is_hb(ch)) {
            rc->sh->hb_seen_ms = hd_mono_ms();
            rc->sh->hb_outstanding = false;
            return;
        }
        if (R.hooks.message != NULL)
            R.hooks.message(ch->str, ch->len, payload->str, payload->len);
    } else if (strcmp(kind, "subscribe") == 0
               || strcmp(kind, "unsubscribe") == 0) {
        if (R.hooks.subscribed != NULL && !is_hb(ch))
            R.hooks.subscribed(ch->str, ch->len, kind[0] == 's');
    }
}

/* ---- Sentinel ------------------------------------------------------------- */

/* Start a data connection now (the primary just became known or moved). */
static void
kick(rconn_t *rc)
{
    rc->backoff_ms = 0;
    ev_timer_stop(hd_w.loop, &rc->retry_w);
    if (rc->ac == NULL && R.started)
        rc_connect(rc);
}

static void
set_primary(shard_t *sh, const char *host, int port, const char *how)
{
    if (sh->primary_host != NULL && strcmp(sh->primary_host, host) == 0
        && sh->primary_port == port)
        return;
    hd_log_info("redis %s: the primary is %s:%d (%s)", sh->t->name, host, port,
                how);
    hd_free(sh->primary_host);
    sh->primary_host = hd_strdup(host);
    sh->primary_port = port;
    /* connections to the old primary must not carry on: a demoted
     * primary would answer writes with READONLY, or not at all */
    sh->cmd.quiet_kill = sh->cmd.ac != NULL;
    rc_kill(&sh->cmd, "the primary moved");
    sh->sub.quiet_kill = sh->sub.ac != NULL;
    rc_kill(&sh->sub, "the primary moved");
    kick(&sh->cmd);
    kick(&sh->sub);
}

static void
sen_addr_cb(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t    *rc = ac->data;
    redisReply *reply = r;
    char        port[16];
    (void) priv;

    if (rc == NULL || rc->ac != ac || reply == NULL)
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING
        || reply->element[1]->len >= sizeof(port)) {
        hd_log_warn("redis %s: Sentinel does not know a primary named "
                    "\"%s\": %s",
                    rc->sh->t->name, rc->sh->t->master_name,
                    reply->type == REDIS_REPLY_ERROR ? reply->str
                                                     : "no answer");
        rc_kill(rc, "no primary");
        return;
    }
    memcpy(port, reply->element[1]->str, reply->element[1]->len);
    port[reply->element[1]->len] = '\0';
    set_primary(rc->sh, reply->element[0]->str, atoi(port), "asked Sentinel");
}

/* "+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>" */
static void
sen_msg_cb(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t    *rc = ac->data;
    redisReply *reply = r;
    char        name[130], ip[64];
    int         port;
    (void) priv;

    if (rc == NULL || rc->ac != ac || reply == NULL
        || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3
        || reply->element[0]->type != REDIS_REPLY_STRING
        || strcmp(reply->element[0]->str, "message") != 0
        || reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    if (sscanf(reply->element[2]->str, "%129s %*s %*s %63s %d", name, ip, &port)
            != 3
        || strcmp(name, rc->sh->t->master_name) != 0 || port <= 0
        || port > 65535)
        return;
    set_primary(rc->sh, ip, port, "+switch-master");
}

/* Ask again: a fresh Sentinel connection asks for the primary first. */
static void
sen_resolve(shard_t *sh)
{
    if (sh->sen.ac != NULL && sh->sen.st != RC_UP)
        return; /* connecting: it will ask */
    sh->sen.quiet_kill = sh->sen.ac != NULL;
    rc_kill(&sh->sen, "re-resolving the primary");
    kick(&sh->sen);
}

/* ---- connect, watchdog ---------------------------------------------------- */

static void
rc_connect(rconn_t *rc)
{
    const hd_conf_t         *c = hd_w.conf;
    const hd_redis_target_t *t = rc->sh->t;
    redisAsyncContext       *ac;

    if (rc->kind == K_SENTINEL) {
        unsigned i = rc->sh->sen_next % (unsigned) t->nsentinels;
        ac = redisAsyncConnect(t->sentinel_host[i], t->sentinel_port[i]);
    } else if (t->master_name != NULL) {
        if (rc->sh->primary_host == NULL) {
            /* not known yet: the Sentinel answer kicks us */
            rc->st = RC_DOWN;
            schedule_retry(rc);
            return;
        }
        ac = redisAsyncConnect(rc->sh->primary_host, rc->sh->primary_port);
    } else {
        ac = t->unix_path != NULL ? redisAsyncConnectUnix(t->unix_path)
                                  : redisAsyncConnect(t->host, t->port);
    }
    if (ac == NULL || ac->err) {
        hd_log_debug("redis %s %s: connect failed at once: %s", t->name,
                     rc->name, ac ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        rc->st = RC_DOWN;
        if (rc->kind == K_SENTINEL)
            rc->sh->sen_next = (rc->sh->sen_next + 1)
                % (unsigned) t->nsentinels;
        schedule_retry(rc);
        return;
    }
    ac->data = rc;
    rc->ac = ac;
    rc->st = RC_CONNECTING;
    rc->connect_deadline_ms = hd_mono_ms()
        + (uint64_t) c->redis_connect_timeout_ms;
    redisLibevAttach(hd_w.loop, ac);
    redisAsyncSetConnectCallback(ac, connect_cb);
    redisAsyncSetDisconnectCallback(ac, disconnect_cb);
}

static void
retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    rconn_t *rc = w->data;
    (void) loop;
    (void) revents;
    if (rc->ac == NULL && R.started)
        rc_connect(rc);
}

static void
hb_cb(redisReply *reply, const char *err, void *arg)
{
    (void) reply;
    (void) err;
    (void) arg;
}

/* Connect timeouts, command timeouts, the subscriber heartbeat. */
static void
watchdog_shard(shard_t *sh, uint64_t now)
{
    const hd_conf_t *c = hd_w.conf;
    rconn_t         *rcs[3] = { &sh->cmd, &sh->sub, &sh->sen };

    for (int i = 0; i < 3; i++) {
        rconn_t *rc = rcs[i];
        if ((rc->st == RC_CONNECTING || rc->st == RC_AUTH)
            && now > rc->connect_deadline_ms)
            rc_kill(rc, "connect timeout");
    }
    if (sh->cmd.st == RC_UP && sh->cmd.dl_len > 0
        && now > sh->cmd.dl[sh->cmd.dl_head])
        rc_kill(&sh->cmd, "command timeout");

    /* heartbeat: needs both up; a lost one means a wedged subscriber */
    if (sh->sub.st == RC_UP && sh->cmd.st == RC_UP) {
        uint64_t period = (uint64_t) c->redis_heartbeat_ms;
        uint64_t limit = 3 * period < (uint64_t) c->redis_command_timeout_ms
            ? 3 * period
            : (uint64_t) c->redis_command_timeout_ms;
        if (sh->hb_outstanding && now - sh->hb_sent_ms > limit) {
            rc_kill(&sh->sub,
                    "heartbeat not received (subscriber wedged or "
                    "killed by the server)");
        } else if (!sh->hb_outstanding && now - sh->hb_sent_ms >= period) {
            const char *argv[3] = { "PUBLISH", R.hb_chan, "hb" };
            size_t      lens[3] = { 7, R.hb_len, 2 };
            if (hd_redis_cmd(sh->idx, hb_cb, NULL, 3, argv, lens) == 0) {
                sh->hb_sent_ms = now;
                sh->hb_outstanding = true;
            }
        }
    }
}

static void
watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    uint64_t now = hd_mono_ms();
    (void) loop;
    (void) w;
    (void) revents;

    for (unsigned i = 0; i < R.n; i++)
        watchdog_shard(&R.sh[i], now);
}

/* ---- commands ------------------------------------------------------------- */

static void
cmd_reply_cb(redisAsyncContext *ac, void *r, void *priv)
{
    pending_t *p = priv;
    rconn_t   *rc = ac->data;

    if (rc != NULL && rc->ac == ac && rc->dl_len > 0) {
        rc->dl_head = (rc->dl_head + 1) % DEADLINES_MAX;
        rc->dl_len--;
    }
    if (r != NULL)
        hd_hist_observe(HD_H_REDIS_CMD, hd_mono_ns() - p->start_ns);
    p->cb(r, r == NULL ? "redis connection lost or timed out" : NULL, p->arg);
    free(p);
}

int
hd_redis_cmd(unsigned shard, hd_redis_cb *cb, void *arg, int argc,
             const char **argv, const size_t *lens)
{
    rconn_t   *rc;
    pending_t *p;

    if (shard >= R.n)
        return -ENOTCONN;
    rc = &R.sh[shard].cmd;
    if (rc->st != RC_UP)
        return -ENOTCONN;
    if (rc->dl_len >= DEADLINES_MAX)
        return -ENOBUFS;
    p = hd_malloc(sizeof(*p));
    p->cb = cb;
    p->arg = arg;
    p->start_ns = hd_mono_ns();
    if (redisAsyncCommandArgv(rc->ac, cmd_reply_cb, p, argc, argv, lens)
        != REDIS_OK) {
        free(p);
        return -EIO;
    }
    rc->dl[(rc->dl_head + rc->dl_len) % DEADLINES_MAX] = hd_mono_ms()
        + (uint64_t) hd_w.conf->redis_command_timeout_ms;
    rc->dl_len++;
    return 0;
}

int
hd_redis_subscribe(bool sub, int n, const char **chans, const size_t *lens)
{
    const char **argv;
    size_t      *alen;
    unsigned    *shard;
    int          rc = 0;

    if (n <= 0)
        return -EINVAL;
    if (R.n == 0)
        return -ENOTCONN;
    shard = hd_malloc((size_t) n * sizeof(*shard));
    for (int i = 0; i < n; i++) {
        shard[i] = hd_redis_shard_of(chans[i], lens[i]);
        if (R.sh[shard[i]].sub.st != RC_UP) {
            free(shard);
            return -ENOTCONN;
        }
    }
    argv = hd_malloc((size_t) (n + 1) * sizeof(*argv));
    alen = hd_malloc((size_t) (n + 1) * sizeof(*alen));
    argv[0] = sub ? "SUBSCRIBE" : "UNSUBSCRIBE";
    alen[0] = strlen(argv[0]);
    for (unsigned s = 0; s < R.n; s++) {
        int k = 1;
        for (int i = 0; i < n; i++)
            if (shard[i] == s) {
                argv[k] = chans[i];
                alen[k++] = lens[i];
            }
        if (k == 1)
            continue;
        /* every channel shares one callback: hiredis routes messages by
         * name */
        if (redisAsyncCommandArgv(R.sh[s].sub.ac, sub ? sub_msg_cb : NULL, NULL,
                                  k, argv, alen)
            != REDIS_OK)
            rc = -EIO;
    }
    free(argv);
    free(alen);
    free(shard);
    return rc;
}

bool
hd_redis_cmd_up(void)
{
    for (unsigned i = 0; i < R.n; i++)
        if (R.sh[i].cmd.st != RC_UP)
            return false;
    return R.n > 0;
}

bool
hd_redis_sub_up(void)
{
    for (unsigned i = 0; i < R.n; i++)
        if (R.sh[i].sub.st != RC_UP)
            return false;
    return R.n > 0;
}

const char *
hd_redis_shard_replid(unsigned shard)
{
    return shard < R.n ? R.sh[shard].replid : "";
}

bool
hd_redis_cmd_up_any(void)
{
    for (unsigned i = 0; i < R.n; i++)
        if (R.sh[i].cmd.st == RC_UP)
            return true;
    return false;
}

bool
hd_redis_shard_cmd_up(unsigned shard)
{
    return shard < R.n && R.sh[shard].cmd.st == RC_UP;
}

bool
hd_redis_cmd_up_key(const char *key, size_t key_len)
{
    return R.n > 0 && R.sh[hd_redis_shard_of(key, key_len)].cmd.st == RC_UP;
}

bool
hd_redis_sub_up_key(const char *key, size_t key_len)
{
    return R.n > 0 && R.sh[hd_redis_shard_of(key, key_len)].sub.st == RC_UP;
}

/* ---- start, stop ---------------------------------------------------------- */

static void
rc_init(rconn_t *rc, shard_t *sh, enum rc_kind kind, const char *name)
{
    rc->sh = sh;
    rc->kind = kind;
    rc->name = name;
    ev_init(&rc->retry_w, retry_cb);
    rc->retry_w.data = rc;
}

int
hd_redis_start(const hd_redis_hooks_t *hooks)
{
    const hd_conf_t *c = hd_w.conf;
    char             host[64];

    memset(&R, 0, sizeof(R));
    if (hooks != NULL)
        R.hooks = *hooks;
    if (gethostname(host, sizeof(host)) < 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    /* '#' cannot occur in a channel name: no client can collide with it */
    R.hb_chan = hd_asprintf("herald#hb#%s#%d", host, (int) getpid());
    R.hb_len = strlen(R.hb_chan);
    srandom((unsigned) (hd_wall_ns() ^ (uint64_t) getpid()));

    R.n = (unsigned) c->nredis_targets;
    R.sh = hd_calloc(R.n ? R.n : 1, sizeof(*R.sh));
    R.names = hd_calloc(R.n ? R.n : 1, sizeof(*R.names));
    for (unsigned i = 0; i < R.n; i++) {
        shard_t *sh = &R.sh[i];
        sh->idx = i;
        sh->t = &c->redis_targets[i];
        sh->name_hash = fnv1a64(sh->t->name, strlen(sh->t->name));
        R.names[i] = sh->t->name;
        rc_init(&sh->cmd, sh, K_CMD, "command");
        rc_init(&sh->sub, sh, K_SUB, "subscriber");
        rc_init(&sh->sen, sh, K_SENTINEL, "sentinel");
        sh->cmd.dl = hd_calloc(DEADLINES_MAX, sizeof(uint64_t));
        /* spread the workers over the Sentinels */
        if (sh->t->nsentinels > 0)
            sh->sen_next = (unsigned) random() % (unsigned) sh->t->nsentinels;
    }
    ev_timer_init(&R.watchdog_w, watchdog_cb, WATCHDOG_S, WATCHDOG_S);
    ev_timer_start(hd_w.loop, &R.watchdog_w);
    R.started = true;
    update_gauge();
    for (unsigned i = 0; i < R.n; i++) {
        if (R.sh[i].t->master_name != NULL)
            rc_connect(&R.sh[i].sen);
        rc_connect(&R.sh[i].cmd);
        rc_connect(&R.sh[i].sub);
    }
    return 0;
}

void
hd_redis_stop(void)
{
    if (!R.started)
        return;
    R.started = false;
    ev_timer_stop(hd_w.loop, &R.watchdog_w);
    R.hooks.sub_down = NULL;
    for (unsigned i = 0; i < R.n; i++) {
        shard_t *sh = &R.sh[i];
        rconn_t *rcs[3] = { &sh->cmd, &sh->sub, &sh->sen };
        for (int k = 0; k < 3; k++) {
            ev_timer_stop(hd_w.loop, &rcs[k]->retry_w);
            rc_kill(rcs[k], "worker stopping");
        }
        hd_free(sh->cmd.dl);
        hd_free(sh->primary_host);
    }
    hd_free(R.sh);
    hd_free(R.names);
    R.n = 0;
    hd_free(R.hb_chan);
    hd_gauge_set(HD_G_REDIS_UP, 0);
}
