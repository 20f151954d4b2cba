/*
 * The worker's two Redis connections (hiredis async on the worker's libev
 * loop): "cmd" for commands (publish scripts, history reads) and "sub" for
 * SUBSCRIBE. Both reconnect on their own with jittered exponential backoff,
 * have a connect timeout, and commands have a timeout: a command that gets
 * no reply in time tears the connection down (its callback and every other
 * pending one run with reply NULL), so nothing waits forever on a wedged
 * server. The subscriber is checked end to end by a heartbeat: the worker
 * publishes on a private channel through "cmd" and expects it back on
 * "sub"; when it does not come back, "sub" is torn down and reconnected.
 *
 * Ownership: a redisReply passed to a callback is valid only during the
 * callback (hiredis frees it afterwards).
 */
#ifndef HD_REDIS_H
#define HD_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

/* reply == NULL means the command failed (connection down, timeout); err
 * then says why. A Redis error reply is passed as a REDIS_REPLY_ERROR. */
typedef void hd_redis_cb(redisReply *reply, const char *err, void *arg);

typedef struct hd_redis_hooks {
    /* sub connection became usable (after a (re)connect): resubscribe */
    void (*sub_up)(void);
    /* sub connection lost: messages may have been missed from now on */
    void (*sub_down)(void);
    /* a message on a subscribed channel */
    void (*message)(const char *chan, size_t chan_len, const char *data,
                    size_t data_len);
    /* a SUBSCRIBE / UNSUBSCRIBE confirmation */
    void (*subscribed)(const char *chan, size_t chan_len, bool sub);
    /* cmd connection became usable */
    void (*cmd_up)(void);
} hd_redis_hooks_t;

int  hd_redis_start(const hd_redis_hooks_t *hooks);
void hd_redis_stop(void);

bool hd_redis_cmd_up(void);
bool hd_redis_sub_up(void);

/* Send a command on "cmd". Returns 0 (cb will run exactly once), or
 * -ENOTCONN when the connection is down, -ENOBUFS when too many commands
 * are in flight, -EIO when hiredis refused it (cb does not run). */
int hd_redis_cmd(hd_redis_cb *cb, void *arg, int argc, const char **argv,
                 const size_t *lens);

/* (Un)subscribe channels on "sub" in one command. 0, -ENOTCONN (down) or
 * -EINVAL (n < 1). */
int hd_redis_subscribe(bool sub, int n, const char **chans, const size_t *lens);

#endif
