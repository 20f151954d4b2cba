#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "hd_admit.h"
#include "hd_alloc.h"
#include "hd_limits.h"
#include "hd_log.h"
#include "hd_metrics.h"
#include "hd_time.h"
#include "hd_worker_int.h"

/* wsi -> fd, open addressing; a wsi is only ever looked up by pointer */
typedef struct slot {
    const struct lws *wsi; /* NULL: empty; TOMB: deleted */
    int               fd;
} slot_t;

#define TOMB ((const struct lws *) (uintptr_t) 1)

static slot_t  *M;
static size_t   M_cap; /* power of two, >= 2 x max fds */
static size_t   M_bytes;
static uint64_t full_warned_ms;

/*
 * Handshake deadlines, in accept order (so in deadline order): a
 * connection still without a complete upgrade or HTTP request when its
 * deadline passes is killed, whatever it trickles (slowloris). An entry is
 * stale when the fd's accept stamp changed (done, or fd reused). A PROXY
 * listener's connection comes in when its header is read, stamped at its
 * accept: behind younger entries by that wait, so it may be killed that
 * much late, never more than timeouts.handshake_ms.
 */
typedef struct pend {
    struct lws *wsi;
    int         fd;
    uint64_t    stamp; /* hd_w.accept_ns[fd] at accept */
} pend_t;

static pend_t  *P;
static size_t   P_head, P_len, P_cap;
static ev_timer hs_w;

static size_t
h(const struct lws *w)
{
    uintptr_t x = (uintptr_t) w;
    x ^= x >> 17;
    x *= 0x9e3779b97f4a7c15ull;
    return (size_t) (x >> 20);
}

int
hd_admit_init(int max_fds)
{
    M_cap = 1024;
    while (M_cap < (size_t) max_fds * 2)
        M_cap <<= 1;
    M_bytes = M_cap * sizeof(slot_t);
    M = mmap(NULL, M_bytes, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (M == MAP_FAILED) {
        M = NULL;
        return -errno;
    }
    return 0;
}

void
hd_admit_request(int fd)
{
    if (fd >= 0 && fd < hd_w.accept_ns_cap)
        hd_w.accept_ns[fd] = 0;
}

void
hd_admit_shutdown(void)
{
    if (hd_w.loop != NULL && ev_is_active(&hs_w)) {
        ev_ref(hd_w.loop);
        ev_timer_stop(hd_w.loop, &hs_w);
    }
    if (M != NULL)
        munmap(M, M_bytes);
    M = NULL;
    hd_free(P);
    P_cap = P_len = P_head = 0;
}

static void
hs_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    uint64_t now = hd_mono_ns();
    uint64_t limit = (uint64_t) hd_w.conf->handshake_ms * 1000000ull;
    (void) loop;
    (void) w;
    (void) revents;

    while (P_len > 0) {
        pend_t *e = &P[P_head];
        if (e->fd < hd_w.accept_ns_cap && hd_w.accept_ns[e->fd] == e->stamp) {
            if (now - e->stamp < limit)
                break; /* the oldest pending is still in time */
            /* counted as a failed handshake when lws destroys it; closed
             * right here (not inside any lws callback for it), since an
             * async kill waits for lws' next timer pass on a quiet loop */
            struct lws *wsi = e->wsi;
            P_head = (P_head + 1) % P_cap;
            P_len--;
            lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT,
                            LWS_TO_KILL_SYNC);
            continue;
        }
        P_head = (P_head + 1) % P_cap;
        P_len--;
    }
}

static void
pend_push(struct lws *wsi, int fd)
{
    if (fd >= hd_w.accept_ns_cap || hd_w.accept_ns[fd] == 0)
        return;
    if (P_len == P_cap) {
        size_t  ncap = P_cap ? P_cap * 2 : 256;
        pend_t *np = hd_malloc(ncap * sizeof(*np));
        for (size_t i = 0; i < P_len; i++)
            np[i] = P[(P_head + i) % P_cap];
        free(P);
        P = np;
        P_cap = ncap;
        P_head = 0;
    }
    P[(P_head + P_len) % P_cap] = (pend_t){ wsi, fd, hd_w.accept_ns[fd] };
    P_len++;
    if (!ev_is_active(&hs_w)) {
        ev_timer_init(&hs_w, hs_cb, 0.1, 0.1);
        ev_timer_start(hd_w.loop, &hs_w);
        ev_unref(hd_w.loop); /* a sweep never keeps the loop alive */
    }
}

bool
hd_admit_pending(void)
{
    for (size_t i = 0; i < P_len; i++) {
        const pend_t *e = &P[(P_head + i) % P_cap];

        if (e->fd < hd_w.accept_ns_cap && hd_w.accept_ns[e->fd] == e->stamp)
            return true;
    }
    return false;
}

void
hd_admit_adopted(struct lws *wsi, int fd)
{
    size_t i;

    pend_push(wsi, fd);
    if (M == NULL)
        return;
    for (i = h(wsi) & (M_cap - 1);; i = (i + 1) & (M_cap - 1))
        if (M[i].wsi == NULL || M[i].wsi == TOMB || M[i].wsi == wsi) {
            M[i].wsi = wsi;
            M[i].fd = fd;
            return;
        }
}

void
hd_admit_destroyed(struct lws *wsi)
{
    size_t i;

    if (M == NULL)
        return;
    for (i = h(wsi) & (M_cap - 1); M[i].wsi != NULL; i = (i + 1) & (M_cap - 1))
        if (M[i].wsi == wsi) {
            int fd = M[i].fd;
            if (fd < hd_w.accept_ns_cap && hd_w.accept_ns[fd] != 0) {
                /* never upgraded nor made a request: garbage, oversized or
                 * bad headers, refused upgrade, timeout, or a client that
                 * gave up */
                hd_reject_inc(HD_REJ_HANDSHAKE);
                hd_w.accept_ns[fd] = 0;
            }
            if (hd_w.limits != NULL)
                hd_limits_release_fd(hd_w.limits, hd_w.lease, fd);
            M[i].wsi = TOMB;
            return;
        }
}

void
hd_admit_failed(int fd)
{
    if (hd_w.limits != NULL)
        hd_limits_release_fd(hd_w.limits, hd_w.lease, fd);
}

static void
table_full(const char *kind)
{
    uint64_t now = hd_mono_ms();
    if (now - full_warned_ms > 10000) {
        full_warned_ms = now;
        hd_log_warn("connection-limit table for %s is full: refusing new keys "
                    "(see /stats limits.table_full)",
                    kind);
    }
}

/* A short, complete HTTP answer; the client may read it before the close. */
static void
refuse(int fd, enum hd_reject_reason why)
{
    static const char resp[] = "HTTP/1.1 503 Service Unavailable\r\n"
                               "Retry-After: 5\r\n"
                               "Content-Type: text/plain\r\n"
                               "Content-Length: 26\r\n"
                               "Connection: close\r\n"
                               "\r\n"
                               "connection limit reached\r\n";

    hd_reject_inc(why);
    (void) !send(fd, resp, sizeof(resp) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    hd_limits_release_fd(hd_w.limits, hd_w.lease, fd);
    close(fd);
}

int
hd_admit_accept(int fd, const struct sockaddr *peer)
{
    const hd_conf_t *c = hd_w.conf;
    unsigned char    key[17];
    size_t           klen;
    int              rc;

    if (hd_w.limits == NULL)
        return 0;
    hd_limits_release_fd(hd_w.limits, hd_w.lease, fd); /* nothing stale */
    rc = hd_limits_acquire_node(hd_w.limits, hd_w.lease, fd,
                                (uint32_t) c->max_connections);
    if (rc < 0) {
        refuse(fd, HD_REJ_NODE_LIMIT);
        return rc;
    }
    /* a trusted proxy's connections are counted by the address in their
     * X-Forwarded-For / X-Real-IP, once the request is in
     * (hd_realip_from_headers()); its own address would hit the limit */
    if (c->conns_per_ip > 0 && !hd_conf_trusted_proxy(c, peer)) {
        klen = hd_limits_addr_key(peer, 64, key);
        rc = klen ? hd_limits_acquire(hd_w.limits, hd_w.lease, fd, HD_LIM_IP,
                                      key, klen, (uint32_t) c->conns_per_ip)
                  : 0;
        if (rc == -ENOSPC)
            table_full("ip");
        if (rc < 0) {
            refuse(fd, HD_REJ_IP_LIMIT);
            return rc;
        }
    }
    return 0;
}

/*
 * The per-user key: tenant, a NUL, then sub. A `sub` is only unique inside
 * its tenant (two tenants' "alice" are two people), and a tenant name never
 * holds a NUL, so ("ab", "c") and ("a", "bc") stay apart. Returns the key
 * length, or 0 when it does not fit in cap.
 */
static size_t
user_key(const char *user, const char *tenant, char *buf, size_t cap)
{
    size_t tl = tenant != NULL ? strlen(tenant) : 0;
    size_t ul = strlen(user);

    if (tl + 1 + ul > cap)
        return 0;
    if (tl)
        memcpy(buf, tenant, tl);
    buf[tl] = '\0';
    memcpy(buf + tl + 1, user, ul);
    return tl + 1 + ul;
}

int
hd_admit_connect(int fd, const char *user, const char *tenant,
                 const char **what)
{
    const hd_conf_t *c = hd_w.conf;
    int              rc;

    if (hd_w.limits == NULL || fd < 0)
        return 0;
    if (user != NULL && c->conns_per_user > 0) {
        char   kbuf[1024];
        size_t klen = user_key(user, tenant, kbuf, sizeof(kbuf));
        char  *big = NULL;

        if (klen == 0) {
            size_t cap = (tenant ? strlen(tenant) : 0) + 1 + strlen(user);
            big = hd_malloc(cap);
            klen = user_key(user, tenant, big, cap);
        }
        rc = hd_limits_acquire(hd_w.limits, hd_w.lease, fd, HD_LIM_USER,
                               big ? big : kbuf, klen,
                               (uint32_t) c->conns_per_user);
        free(big);
        if (rc == -ENOSPC)
            table_full("user");
        if (rc < 0) {
            hd_reject_inc(HD_REJ_USER_LIMIT);
            *what = "connections per user";
            return rc;
        }
    }
    /*
     * Always counted, for /stats' connections per tenant; but with no limit
     * (0) counting is all it is for: a full table (-ENOSPC) or a count at
     * its 24-bit ceiling admits the connection uncounted instead of
     * refusing a tenant that no limit applies to.
     */
    if (tenant != NULL) {
        rc = hd_limits_acquire(hd_w.limits, hd_w.lease, fd, HD_LIM_TENANT,
                               tenant, strlen(tenant),
                               (uint32_t) c->conns_per_tenant);
        if (rc == -ENOSPC)
            table_full("tenant");
        if (rc < 0 && c->conns_per_tenant > 0) {
            hd_limits_release(hd_w.limits, hd_w.lease, fd, HD_LIM_USER);
            hd_reject_inc(HD_REJ_TENANT_LIMIT);
            *what = "connections per tenant";
            return rc;
        }
    }
    return 0;
}
