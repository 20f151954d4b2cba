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

typedef struct rconn {
    const char        *name;
    bool               is_sub;
    redisAsyncContext *ac;
    enum rc_state      st;
    ev_timer           retry_w;
    uint64_t           backoff_ms;
    uint64_t           connect_deadline_ms;
    bool               warned; /* failure logged since last up */
    bool               ever_up;
    /* FIFO of deadlines of in-flight commands (replies come in order) */
    uint64_t *dl;
    uint32_t  dl_head, dl_len;
} rconn_t;

typedef struct pending {
    hd_redis_cb *cb;
    void        *arg;
    uint64_t     start_ns;
} pending_t;

static struct {
    rconn_t          cmd, sub;
    hd_redis_hooks_t hooks;
    ev_timer         watchdog_w;
    char            *hb_chan;
    size_t           hb_len;
    uint64_t         hb_sent_ms; /* last heartbeat published */
    uint64_t         hb_seen_ms; /* last heartbeat received on sub */
    bool             hb_outstanding;
    bool             started;
} R;

static void rc_connect(rconn_t *rc);
static void update_gauge(void);
static void sub_msg_cb(redisAsyncContext *ac, void *r, void *priv);

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
    bool was_up = rc->st == RC_UP;

    rc->st = RC_DOWN;
    rc->ac = NULL;
    rc->dl_head = rc->dl_len = 0;
    if (!R.started)
        hd_log_debug("redis %s connection closed: %s", rc->name, why);
    else if (was_up)
        hd_log_warn("redis %s connection lost: %s", rc->name, why);
    else if (!rc->warned)
        hd_log_warn("redis %s connection failed: %s; retrying with backoff",
                    rc->name, why);
    else
        hd_log_debug("redis %s connection failed: %s", rc->name, why);
    rc->warned = true;
    update_gauge();
    if (rc->is_sub && was_up && R.hooks.sub_down != NULL)
        R.hooks.sub_down();
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

static void
update_gauge(void)
{
    hd_gauge_set(HD_G_REDIS_UP, R.cmd.st == RC_UP && R.sub.st == RC_UP);
}

static void
became_up(rconn_t *rc)
{
    rc->st = RC_UP;
    rc->backoff_ms = 0;
    rc->warned = false;
    if (rc->ever_up)
        hd_ctr_inc(HD_C_REDIS_RECONNECTS);
    rc->ever_up = true;
    hd_log_info("redis %s connection up", rc->name);
    update_gauge();
    if (rc->is_sub) {
        const char *argv[2] = { "SUBSCRIBE", R.hb_chan };
        size_t      lens[2] = { 9, R.hb_len };
        redisAsyncCommandArgv(rc->ac, sub_msg_cb, NULL, 2, argv, lens);
        R.hb_seen_ms = hd_mono_ms();
        R.hb_outstanding = false;
        if (R.hooks.sub_up != NULL)
            R.hooks.sub_up();
    } else if (R.hooks.cmd_up != NULL) {
        R.hooks.cmd_up();
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
        hd_log_error("redis %s: AUTH/SELECT failed: %s", rc->name,
                     reply ? reply->str : "no reply");
        rc_kill(rc, "authentication failed");
        return;
    }
    if (rc->st == RC_AUTH && --rc->dl_len == 0)
        became_up(rc);
}

static void
connect_cb(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *) cac;
    rconn_t           *rc = ac->data;
    const hd_conf_t   *c = hd_w.conf;

    if (rc == NULL || rc->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac after this callback */
        went_down(rc, ac->errstr[0] ? ac->errstr : "connect failed");
        return;
    }
    /* dl_len doubles as the count of AUTH/SELECT replies awaited */
    rc->st = RC_AUTH;
    rc->dl_head = rc->dl_len = 0;
    if (c->redis_password != NULL) {
        redisAsyncCommand(ac, auth_cb, NULL, "AUTH %s", c->redis_password);
        rc->dl_len++;
    }
    if (!rc->is_sub && c->redis_db != 0) {
        redisAsyncCommand(ac, auth_cb, NULL, "SELECT %d", c->redis_db);
        rc->dl_len++;
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

static void
sub_msg_cb(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;
    (void) priv;

    if (ac->data != &R.sub || reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 3 || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING)
        return;

    const char *kind = reply->element[0]->str;
    redisReply *ch = reply->element[1], *payload = reply->element[2];

    if (strcmp(kind, "message") == 0 && payload->type == REDIS_REPLY_STRING) {
        if (ch->len == R.hb_len && memcmp(ch->str, R.hb_chan, R.hb_len) == 0) {
            R.hb_seen_ms = hd_mono_ms();
            R.hb_outstanding = false;
            return;
        }
        if (R.hooks.message != NULL)
            R.hooks.message(ch->str, ch->len, payload->str, payload->len);
    } else if (strcmp(kind, "subscribe") == 0
               || strcmp(kind, "unsubscribe") == 0) {
        if (R.hooks.subscribed != NULL
            && !(ch->len == R.hb_len
                 && memcmp(ch->str, R.hb_chan, R.hb_len) == 0))
            R.hooks.subscribed(ch->str, ch->len, kind[0] == 's');
    }
}

static void
rc_connect(rconn_t *rc)
{
    const hd_conf_t   *c = hd_w.conf;
    redisAsyncContext *ac;

    ac = c->redis_unix_path != NULL
        ? redisAsyncConnectUnix(c->redis_unix_path)
        : redisAsyncConnect(c->redis_host, c->redis_port);
    if (ac == NULL || ac->err) {
        hd_log_debug("redis %s: connect failed at once: %s", rc->name,
                     ac ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        rc->st = RC_DOWN;
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
watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    const hd_conf_t *c = hd_w.conf;
    uint64_t         now = hd_mono_ms();
    rconn_t         *rcs[2] = { &R.cmd, &R.sub };
    (void) loop;
    (void) w;
    (void) revents;

    for (int i = 0; i < 2; i++) {
        rconn_t *rc = rcs[i];
        if ((rc->st == RC_CONNECTING || rc->st == RC_AUTH)
            && now > rc->connect_deadline_ms)
            rc_kill(rc, "connect timeout");
    }
    if (R.cmd.st == RC_UP && R.cmd.dl_len > 0 && now > R.cmd.dl[R.cmd.dl_head])
        rc_kill(&R.cmd, "command timeout");

    /* heartbeat: needs both up; a lost one means a wedged subscriber */
    if (R.sub.st == RC_UP && R.cmd.st == RC_UP) {
        uint64_t period = (uint64_t) c->redis_heartbeat_ms;
        uint64_t limit = 3 * period < (uint64_t) c->redis_command_timeout_ms
            ? 3 * period
            : (uint64_t) c->redis_command_timeout_ms;
        if (R.hb_outstanding && now - R.hb_sent_ms > limit) {
            rc_kill(&R.sub,
                    "heartbeat not received (subscriber wedged or "
                    "killed by the server)");
        } else if (!R.hb_outstanding && now - R.hb_sent_ms >= period) {
            const char *argv[3] = { "PUBLISH", R.hb_chan, "hb" };
            size_t      lens[3] = { 7, R.hb_len, 2 };
            if (hd_redis_cmd(hb_cb, NULL, 3, argv, lens) == 0) {
                R.hb_sent_ms = now;
                R.hb_outstanding = true;
            }
        }
    }
}

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
hd_redis_cmd(hd_redis_cb *cb, void *arg, int argc, const char **argv,
             const size_t *lens)
{
    rconn_t   *rc = &R.cmd;
    pending_t *p;

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
    int          rc;

    if (n <= 0)
        return -EINVAL;
    if (R.sub.st != RC_UP)
        return -ENOTCONN;
    argv = hd_malloc((size_t) (n + 1) * sizeof(*argv));
    alen = hd_malloc((size_t) (n + 1) * sizeof(*alen));
    argv[0] = sub ? "SUBSCRIBE" : "UNSUBSCRIBE";
    alen[0] = strlen(argv[0]);
    memcpy(argv + 1, chans, (size_t) n * sizeof(*argv));
    memcpy(alen + 1, lens, (size_t) n * sizeof(*alen));
    /* every channel shares one callback: hiredis routes messages by name */
    rc = redisAsyncCommandArgv(R.sub.ac, sub ? sub_msg_cb : NULL, NULL, n + 1,
                               argv, alen);
    free(argv);
    free(alen);
    return rc == REDIS_OK ? 0 : -1;
}

bool
hd_redis_cmd_up(void)
{
    return R.cmd.st == RC_UP;
}
bool
hd_redis_sub_up(void)
{
    return R.sub.st == RC_UP;
}

int
hd_redis_start(const hd_redis_hooks_t *hooks)
{
    char host[64];

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

    R.cmd.name = "command";
    R.sub.name = "subscriber";
    R.sub.is_sub = true;
    R.cmd.dl = hd_calloc(DEADLINES_MAX, sizeof(uint64_t));
    ev_init(&R.cmd.retry_w, retry_cb);
    R.cmd.retry_w.data = &R.cmd;
    ev_init(&R.sub.retry_w, retry_cb);
    R.sub.retry_w.data = &R.sub;
    ev_timer_init(&R.watchdog_w, watchdog_cb, WATCHDOG_S, WATCHDOG_S);
    ev_timer_start(hd_w.loop, &R.watchdog_w);
    R.started = true;
    update_gauge();
    rc_connect(&R.cmd);
    rc_connect(&R.sub);
    return 0;
}

void
hd_redis_stop(void)
{
    if (!R.started)
        return;
    R.started = false;
    ev_timer_stop(hd_w.loop, &R.watchdog_w);
    ev_timer_stop(hd_w.loop, &R.cmd.retry_w);
    ev_timer_stop(hd_w.loop, &R.sub.retry_w);
    R.hooks.sub_down = NULL;
    rc_kill(&R.cmd, "worker stopping");
    rc_kill(&R.sub, "worker stopping");
    hd_free(R.cmd.dl);
    hd_free(R.hb_chan);
    hd_gauge_set(HD_G_REDIS_UP, 0);
}
