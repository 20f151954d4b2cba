/*
 * The publish and meta scripts. Offsets are assigned by Redis, in the same
 * script that publishes, so every subscriber on every node sees one order
 * per channel and the publisher's ack carries the offset it got.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/sha.h>

#include "hd_alloc.h"
#include "hd_log.h"
#include "hd_metrics.h"
#include "hd_pubsub.h"
#include "hd_redis.h"
#include "hd_time.h"
#include "hd_worker_int.h"

/*
 * KEYS[1] meta hash.
 * ARGV[1] pub/sub channel, ARGV[2] data, ARGV[3] epoch to use if the
 * channel has none, ARGV[4] publish time (us), ARGV[5] meta ttl (s).
 * Returns {offset, epoch}.
 */
static const char PUBLISH_LUA[] =
    "local e = redis.call('HGET', KEYS[1], 'e')\n"
    "if not e then\n"
    "  e = ARGV[3]\n"
    "  redis.call('HSET', KEYS[1], 'e', e)\n"
    "end\n"
    "local o = redis.call('HINCRBY', KEYS[1], 'o', 1)\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[5])\n"
    "redis.call('PUBLISH', ARGV[1], '1 ' .. o .. ' ' .. e .. ' ' .. ARGV[4]"
    " .. ' ' .. ARGV[2])\n"
    "return {o, e}\n";

/*
 * KEYS[1] meta hash. ARGV[1] epoch to use if none, ARGV[2] meta ttl (s).
 * Returns {offset, epoch}; creates the meta (offset 0) when absent.
 */
static const char META_LUA[] =
    "local e = redis.call('HGET', KEYS[1], 'e')\n"
    "if not e then\n"
    "  e = ARGV[1]\n"
    "  redis.call('HSET', KEYS[1], 'e', e, 'o', 0)\n"
    "end\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
    "local o = redis.call('HGET', KEYS[1], 'o')\n"
    "return {tonumber(o) or 0, e}\n";

typedef struct script {
    const char *body;
    char        sha[41];
} script_t;

static script_t s_publish = { PUBLISH_LUA, "" };
static script_t s_meta = { META_LUA, "" };

typedef struct call {
    script_t   *script;
    hd_pub_cb  *cb;
    void       *arg;
    int         argc;
    char      **argv;
    size_t     *lens;
    bool        retried;        /* EVAL after NOSCRIPT */
    bool        publish;
} call_t;

static void
sha1_hex(const char *s, char out[41])
{
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *) s, strlen(s), md);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

void
hd_pubsub_init(void)
{
    sha1_hex(s_publish.body, s_publish.sha);
    sha1_hex(s_meta.body, s_meta.sha);
}

static void
load_cb(redisReply *r, const char *err, void *arg)
{
    (void) err; (void) arg;
    if (r != NULL && r->type == REDIS_REPLY_ERROR)
        hd_log_error("redis SCRIPT LOAD failed: %s", r->str);
}

/*
 * On every (re)connect of the command connection, load the scripts before
 * anything else is sent on it: EVALSHA then never meets NOSCRIPT in normal
 * operation, so a publisher's commands are never reordered by a retry.
 */
void
hd_pubsub_cmd_up(void)
{
    script_t *all[2] = { &s_publish, &s_meta };

    for (int i = 0; i < 2; i++) {
        const char *argv[3] = { "SCRIPT", "LOAD", all[i]->body };
        size_t      lens[3] = { 6, 4, strlen(all[i]->body) };
        (void) hd_redis_cmd(load_cb, NULL, 3, argv, lens);
    }
}

size_t
hd_pubsub_key(const char *tenant, const char *chan, size_t chan_len,
              char *buf, size_t cap, size_t *name_off)
{
    size_t tl = tenant ? strlen(tenant) : 0;
    size_t n = 7 + tl + 1 + chan_len;       /* "herald|" T "|" C */

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

static void
call_free(call_t *c)
{
    for (int i = 0; i < c->argc; i++)
        free(c->argv[i]);
    free(c->argv);
    free(c->lens);
    free(c);
}

static int call_send(call_t *c);

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
        c->cb(HD_ERR_UNAVAILABLE, 0, NULL, c->arg);
        call_free(c);
        return;
    }
    if (r == NULL) {
        c->cb(HD_ERR_UNAVAILABLE, 0, NULL, c->arg);
    } else if (r->type == REDIS_REPLY_ERROR) {
        hd_log_error("redis script failed: %s", r->str);
        c->cb(strncmp(r->str, "LOADING", 7) == 0 || strncmp(r->str, "BUSY", 4) == 0
              || strncmp(r->str, "READONLY", 8) == 0
              ? HD_ERR_UNAVAILABLE : HD_ERR_INTERNAL, 0, NULL, c->arg);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2
               || r->element[0]->type != REDIS_REPLY_INTEGER
               || r->element[1]->type != REDIS_REPLY_STRING) {
        hd_log_error("redis script returned an unexpected reply");
        c->cb(HD_ERR_INTERNAL, 0, NULL, c->arg);
    } else {
        if (c->publish)
            hd_ctr_inc(HD_C_MSG_PUBLISHED);
        c->cb(0, (uint64_t) r->element[0]->integer, r->element[1]->str, c->arg);
    }
    (void) err;
    call_free(c);
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
    return hd_redis_cmd(script_cb, c, c->argc, (const char **) c->argv, c->lens);
}

/* argv: the script's KEYS then ARGV (nkeys of them keys), copied. */
static int
run_script(script_t *s, bool publish, int nargs, const char **args,
           const size_t *lens, int nkeys, hd_pub_cb *cb, void *arg)
{
    call_t *c = hd_calloc(1, sizeof(*c));
    char    nk[16];

    c->script = s;
    c->cb = cb;
    c->arg = arg;
    c->publish = publish;
    c->argc = 3 + nargs;
    c->argv = hd_calloc((size_t) c->argc, sizeof(char *));
    c->lens = hd_calloc((size_t) c->argc, sizeof(size_t));
    snprintf(nk, sizeof(nk), "%d", nkeys);
    c->argv[2] = hd_strdup(nk);
    c->lens[2] = strlen(nk);
    for (int i = 0; i < nargs; i++) {
        c->argv[3 + i] = hd_strndup(args[i], lens[i]);
        c->lens[3 + i] = lens[i];
    }
    if (call_send(c) < 0) {
        call_free(c);
        return -1;
    }
    return 0;
}

static size_t
meta_key(const char *key, size_t key_len, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "{%.*s}:meta", (int) key_len, key);
    return n < 0 || (size_t) n >= cap ? 0 : (size_t) n;
}

int
hd_pubsub_publish(const hd_ns_t *ns, const char *key, size_t key_len,
                  const char *data, size_t data_len, hd_pub_cb *cb, void *arg)
{
    char        mk[HD_KEY_MAX + 16], epoch[17], now[24], ttl[16];
    const char *args[6];
    size_t      lens[6];
    (void) ns;   /* history options arrive with the history feature */

    if (!hd_redis_cmd_up())
        return -1;
    lens[0] = meta_key(key, key_len, mk, sizeof(mk));
    random_epoch(epoch);
    snprintf(now, sizeof(now), "%llu", (unsigned long long) (hd_wall_ns() / 1000));
    snprintf(ttl, sizeof(ttl), "%d", hd_w.conf->channel_meta_ttl_s);
    args[0] = mk;
    args[1] = key;   lens[1] = key_len;
    args[2] = data;  lens[2] = data_len;
    args[3] = epoch; lens[3] = 16;
    args[4] = now;   lens[4] = strlen(now);
    args[5] = ttl;   lens[5] = strlen(ttl);
    return run_script(&s_publish, true, 6, args, lens, 1, cb, arg);
}

int
hd_pubsub_meta(const char *key, size_t key_len, hd_pub_cb *cb, void *arg)
{
    char        mk[HD_KEY_MAX + 16], epoch[17], ttl[16];
    const char *args[3];
    size_t      lens[3];

    if (!hd_redis_cmd_up())
        return -1;
    lens[0] = meta_key(key, key_len, mk, sizeof(mk));
    random_epoch(epoch);
    snprintf(ttl, sizeof(ttl), "%d", hd_w.conf->channel_meta_ttl_s);
    args[0] = mk;
    args[1] = epoch; lens[1] = 16;
    args[2] = ttl;   lens[2] = strlen(ttl);
    return run_script(&s_meta, false, 3, args, lens, 1, cb, arg);
}
