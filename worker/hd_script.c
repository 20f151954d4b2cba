#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "hd_alloc.h"
#include "hd_log.h"
#include "hd_script.h"

typedef struct run {
    unsigned     shard;
    hd_script_t *s;
    hd_redis_cb *cb;
    void        *arg;
    int          argc;
    char       **argv;
    size_t      *lens;
    bool         retried;
} run_t;

#define SCRIPTS_MAX 16

static hd_script_t *registered[SCRIPTS_MAX];
static size_t       nregistered;

static void
sha_of(hd_script_t *s)
{
    unsigned char md[SHA_DIGEST_LENGTH];

    if (s->sha[0] != '\0')
        return;
    SHA1((const unsigned char *) s->body, strlen(s->body), md);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
}

void
hd_script_register(hd_script_t *s)
{
    for (size_t i = 0; i < nregistered; i++)
        if (registered[i] == s)
            return;
    if (nregistered == SCRIPTS_MAX)
        abort(); /* a programming error: raise SCRIPTS_MAX */
    sha_of(s);
    registered[nregistered++] = s;
}

static void
load_cb(redisReply *r, const char *err, void *arg)
{
    (void) err;
    (void) arg;
    if (r != NULL && r->type == REDIS_REPLY_ERROR)
        hd_log_error("redis SCRIPT LOAD failed: %s", r->str);
}

void
hd_script_cmd_up(unsigned shard)
{
    for (size_t i = 0; i < nregistered; i++) {
        const char *argv[3] = { "SCRIPT", "LOAD", registered[i]->body };
        size_t      lens[3] = { 6, 4, strlen(registered[i]->body) };
        (void) hd_redis_cmd(shard, load_cb, NULL, 3, argv, lens);
    }
}

static void
run_free(run_t *r)
{
    for (int i = 0; i < r->argc; i++)
        free(r->argv[i]);
    free(r->argv);
    free(r->lens);
    free(r);
}

static int send_run(run_t *r);

static void
run_cb(redisReply *reply, const char *err, void *arg)
{
    run_t *r = arg;

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR
        && strncmp(reply->str, "NOSCRIPT", 8) == 0 && !r->retried) {
        r->retried = true;
        if (send_run(r) == 0)
            return;
        r->cb(NULL, "redis connection lost", r->arg);
        run_free(r);
        return;
    }
    r->cb(reply, err, r->arg);
    run_free(r);
}

static int
send_run(run_t *r)
{
    free(r->argv[0]);
    free(r->argv[1]);
    r->argv[0] = hd_strdup(r->retried ? "EVAL" : "EVALSHA");
    r->argv[1] = hd_strdup(r->retried ? r->s->body : r->s->sha);
    r->lens[0] = strlen(r->argv[0]);
    r->lens[1] = strlen(r->argv[1]);
    return hd_redis_cmd(r->shard, run_cb, r, r->argc, (const char **) r->argv,
                        r->lens);
}

int
hd_script_run(hd_script_t *s, int nkeys, int nargs, const char **args,
              const size_t *lens, hd_redis_cb *cb, void *arg)
{
    return hd_script_run_on(0, s, nkeys, nargs, args, lens, cb, arg);
}

int
hd_script_run_on(unsigned shard, hd_script_t *s, int nkeys, int nargs,
                 const char **args, const size_t *lens, hd_redis_cb *cb,
                 void *arg)
{
    run_t *r;
    char   nk[16];
    int    rc;

    if (!hd_redis_shard_cmd_up(shard))
        return -ENOTCONN;
    sha_of(s);
    r = hd_calloc(1, sizeof(*r));
    r->shard = shard;
    r->s = s;
    r->cb = cb;
    r->arg = arg;
    r->argc = 3 + nargs;
    r->argv = hd_calloc((size_t) r->argc, sizeof(char *));
    r->lens = hd_calloc((size_t) r->argc, sizeof(size_t));
    snprintf(nk, sizeof(nk), "%d", nkeys);
    r->argv[2] = hd_strdup(nk);
    r->lens[2] = strlen(nk);
    for (int i = 0; i < nargs; i++) {
        r->argv[3 + i] = hd_strndup(args[i], lens[i]);
        r->lens[3 + i] = lens[i];
    }
    if ((rc = send_run(r)) < 0) {
        run_free(r);
        return rc;
    }
    return 0;
}
