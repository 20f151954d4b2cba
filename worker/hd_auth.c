/*
 * Worker side of token verification. The key set is rebuilt whole when
 * the master sends a new JWK Set (rare: key rotation), so verification
 * reads one immutable set and needs no locking or reference counting on
 * the worker's single thread.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hd_alloc.h"
#include "hd_auth.h"
#include "hd_ctl.h"
#include "hd_log.h"
#include "hd_time.h"
#include "hd_worker_int.h"

#define JWKS_MAX_BYTES (1024 * 1024)

static struct {
    const hd_conf_t *conf;
    hd_jwt_keyset_t *keys;
    hd_jwt_policy_t  pol;
    size_t           njwks; /* keys from the JWK Set */
} A;

/* The config's own keys into ks. They were validated at load. */
static void
add_conf_keys(hd_jwt_keyset_t *ks, const hd_conf_t *conf)
{
    char err[160];

    if (conf->auth_hmac_secret != NULL)
        (void) hd_jwt_keyset_add_hmac(ks, NULL, conf->auth_hmac_secret,
                                      strlen(conf->auth_hmac_secret));
    for (size_t i = 0; i < conf->nauth_keys; i++)
        if (hd_jwt_keyset_add_pem(
                ks, conf->auth_keys[i].kid, conf->auth_keys[i].pem,
                strlen(conf->auth_keys[i].pem), err, sizeof(err))
            < 0)
            hd_log_error("auth.public_keys[%zu]: %s", i, err);
}

void
hd_auth_init(const hd_conf_t *conf)
{
    memset(&A, 0, sizeof(A));
    A.conf = conf;
    A.keys = hd_jwt_keyset_new();
    add_conf_keys(A.keys, conf);
    A.pol.algs = conf->auth_algs;
    A.pol.leeway_s = conf->auth_leeway_s;
    A.pol.max_lifetime_s = conf->auth_max_lifetime_s;
    A.pol.aud = conf->auth_audience;
    A.pol.iss = conf->auth_issuer;
}

void
hd_auth_shutdown(void)
{
    hd_jwt_keyset_free(A.keys);
    A.keys = NULL;
}

int
hd_auth_verify(const char *token, size_t len, hd_jwt_claims_t *out)
{
    int rc = hd_jwt_verify_ks(token, len, A.keys, &A.pol,
                              (int64_t) (hd_wall_ns() / 1000000000ull), out);

    /* tell the master (whose config, after a reload, may have a JWK Set
     * this worker's does not). Every time: the master coalesces and
     * rate-limits the fetches, and a dropped report could leave a new kid
     * unfetched until the next scheduled refresh. */
    if (rc == HD_JWT_EKID) {
        hd_ctl_msg_t m = { .type = HD_CTL_JWKS_STALE };
        (void) send(hd_w.ctl_fd, &m, sizeof(m), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    return rc;
}

void
hd_auth_jwks_fd(int fd)
{
    char            *buf = NULL;
    size_t           n = 0;
    ssize_t          r;
    hd_jwt_keyset_t *ks;
    char             err[160];
    int              added;

    buf = hd_malloc(JWKS_MAX_BYTES + 1);
    for (;;) {
        r = pread(fd, buf + n, JWKS_MAX_BYTES - n, (off_t) n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t) r;
        if (n == JWKS_MAX_BYTES)
            break;
    }
    close(fd);
    if (r < 0) {
        hd_log_error("JWK Set from the master: read() failed: %s",
                     strerror(errno));
        goto done;
    }
    ks = hd_jwt_keyset_new();
    add_conf_keys(ks, A.conf);
    added = hd_jwt_keyset_add_jwks(ks, buf, n, NULL, err, sizeof(err));
    if (added < 0) {
        hd_log_error("JWK Set from the master refused: %s", err);
        hd_jwt_keyset_free(ks);
        goto done;
    }
    hd_jwt_keyset_free(A.keys);
    A.keys = ks;
    A.njwks = (size_t) added;
    hd_log_debug("JWK Set installed: %d keys", added);
done:
    free(buf);
}

bool
hd_auth_may_publish(const hd_jwt_claims_t *c, const char *chan, size_t len)
{
    hd_jwt_claims_t view;

    if (c == NULL) /* anonymous */
        return !A.conf->auth_publish_claim;
    switch (c->publish) {
    case HD_JWT_PUB_NO:
        return false;
    case HD_JWT_PUB_YES:
        return true;
    case HD_JWT_PUB_LIST:
        /* the same matching as the channels claim */
        memset(&view, 0, sizeof(view));
        view.channels = c->pub_channels;
        view.nchannels = c->npub_channels;
        return hd_jwt_channel_allowed(&view, chan, len) != 0;
    }
    return !A.conf->auth_publish_claim;
}
