/*
 * Lua scripts on the command connection, by EVALSHA with one EVAL retry on
 * NOSCRIPT (first use on a server, or after SCRIPT FLUSH). For scripts
 * whose order against other commands does not matter (the publish path
 * has its own loader in hd_pubsub.c for that reason).
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
