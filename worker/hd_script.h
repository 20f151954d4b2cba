/*
 * Lua scripts on the command connection, by EVALSHA with one EVAL retry on
 * NOSCRIPT. The retry goes out after commands sent meanwhile, so it would
 * reorder them: a presence add retried behind the remove that followed it
 * leaves a stale entry and loses a join/leave pair. So every script is
 * registered at start (hd_script_register()) and hd_script_cmd_up() loads
 * them ahead of anything else on each (re)connect of a command
 * connection: EVALSHA then meets NOSCRIPT only after an operator's SCRIPT
 * FLUSH. (The publish path has the same loader in hd_pubsub.c.)
 *
 * hd_script_run() runs on shard 0 (with redis.shards, the first shard
 * holds herald's own keys: the node registry, copied to every shard for
 * the presence scripts); hd_script_run_on() on a given shard.
 *
 * Ownership: the arguments are copied; the reply passed to cb is valid
 * only during the callback.
 */
#ifndef HD_SCRIPT_H
#define HD_SCRIPT_H

#include <stddef.h>

#include "hd_redis.h"

typedef struct hd_script {
    const char *body;
    char        sha[41]; /* filled on first use */
} hd_script_t;

#define HD_SCRIPT(b) \
    {                \
        (b), ""      \
    }

/* Add s to the scripts loaded on every command connection (call before
 * the loop runs; s must live for the process). */
void hd_script_register(hd_script_t *s);
/* SCRIPT LOAD every registered script on shard's command connection, which
 * has just come up: before anything else is sent on it. */
void hd_script_cmd_up(unsigned shard);

/* Run s with nkeys of args as KEYS, the rest as ARGV. 0 (cb runs once), or
 * a negative errno as hd_redis_cmd() (cb does not run). */
int hd_script_run(hd_script_t *s, int nkeys, int nargs, const char **args,
                  const size_t *lens, hd_redis_cb *cb, void *arg);
/* The same on shard (hd_redis.h): a channel's keys and pub/sub live on
 * hd_redis_shard_of() of its key. */
int hd_script_run_on(unsigned shard, hd_script_t *s, int nkeys, int nargs,
                     const char **args, const size_t *lens, hd_redis_cb *cb,
                     void *arg);

#endif
