#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hd_admit.h"
#include "hd_alloc.h"
#include "hd_limits.h"
#include "hd_log.h"
#include "hd_metrics.h"
#include "hd_time.h"
#include "hd_worker_int.h"

/* wsi -> fd, open addressing; a wsi is only ever looked up by pointer */
typedef struct slot {
    const struct lws *wsi;      /* NULL: empty; TOMB: deleted */
    int               fd;
} slot_t;

#define TOMB ((const struct lws *) (uintptr_t) 1)

static slot_t  *M;
static size_t   M_cap;          /* power of two, >= 2 x max fds */
static size_t   M_bytes;
static uint64_t full_warned_ms;

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
hd_admit_shutdown(void)
{
    if (M != NULL)
        munmap(M, M_bytes);
    M = NULL;
}

void
hd_admit_adopted(struct lws *wsi, int fd)
{
    size_t i;

    if (M == NULL || hd_w.limits == NULL)
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

    if (M == NULL || hd_w.limits == NULL)
        return;
    for (i = h(wsi) & (M_cap - 1); M[i].wsi != NULL; i = (i + 1) & (M_cap - 1))
        if (M[i].wsi == wsi) {
            hd_limits_release_fd(hd_w.limits, hd_w.lease, M[i].fd);
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
                    "(see /stats limits.table_full)", kind);
    }
}

/* A short, complete HTTP answer; the client may read it before the close. */
static void
refuse(int fd, enum hd_reject_reason why)
{
    static const char resp[] =
        "HTTP/1.1 503 Service Unavailable\r\n"
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
    hd_limits_release_fd(hd_w.limits, hd_w.lease, fd);   /* nothing stale */
    rc = hd_limits_acquire_node(hd_w.limits, hd_w.lease, fd,
                                (uint32_t) c->max_connections);
    if (rc < 0) {
        refuse(fd, HD_REJ_NODE_LIMIT);
        return -1;
    }
    if (c->conns_per_ip > 0) {
        klen = hd_limits_addr_key(peer, 64, key);
        rc = klen ? hd_limits_acquire(hd_w.limits, hd_w.lease, fd, HD_LIM_IP,
                                      key, klen, (uint32_t) c->conns_per_ip)
                  : 0;
        if (rc == -ENOSPC)
            table_full("ip");
        if (rc < 0) {
            refuse(fd, HD_REJ_IP_LIMIT);
            return -1;
        }
    }
    return 0;
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
        rc = hd_limits_acquire(hd_w.limits, hd_w.lease, fd, HD_LIM_USER, user,
                               strlen(user), (uint32_t) c->conns_per_user);
        if (rc == -ENOSPC)
            table_full("user");
        if (rc < 0) {
            hd_reject_inc(HD_REJ_USER_LIMIT);
            *what = "connections per user";
            return -1;
        }
    }
    /* always counted (limit 0 = none): /stats shows connections per tenant */
    if (tenant != NULL) {
        rc = hd_limits_acquire(hd_w.limits, hd_w.lease, fd, HD_LIM_TENANT,
                               tenant, strlen(tenant),
                               (uint32_t) c->conns_per_tenant);
        if (rc == -ENOSPC)
            table_full("tenant");
        if (rc < 0) {
            hd_limits_release(hd_w.limits, hd_w.lease, fd, HD_LIM_USER);
            hd_reject_inc(HD_REJ_TENANT_LIMIT);
            *what = "connections per tenant";
            return -1;
        }
    }
    return 0;
}
