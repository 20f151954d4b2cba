#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include <libwebsockets.h>

#include "hd_limits.h"
#include "hd_log.h"
#include "hd_metrics.h"
#include "hd_realip.h"
#include "hd_worker_int.h"

/* 20 bytes per address: family (0: none), port, address */
typedef struct ra1 {
    uint8_t  fam;
    uint8_t  pad;
    uint16_t port; /* network order */
    uint8_t  a[16];
} ra1_t;

/* Per fd: the connection's own peer (TCP or PROXY header), which decides
 * whether forwarded headers are believed, and the client address in use.
 * Kept apart because one connection from a proxy carries request after
 * request of different clients (upstream keep-alive): each request's
 * headers must be judged by the proxy's address, not the last client's. */
typedef struct ra {
    ra1_t real;
    ra1_t peer;
} ra_t;

static ra_t  *R;
static size_t R_n, R_bytes;

int
hd_realip_init(int max_fds)
{
    R_n = max_fds > 0 ? (size_t) max_fds : 0;
    R_bytes = R_n * sizeof(ra_t);
    if (R_bytes == 0)
        return 0;
    R = mmap(NULL, R_bytes, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (R == MAP_FAILED) {
        R = NULL;
        R_n = 0;
        return -errno;
    }
    return 0;
}

void
hd_realip_shutdown(void)
{
    if (R != NULL)
        munmap(R, R_bytes);
    R = NULL;
    R_n = 0;
}

static void
set1(ra1_t *r, const struct sockaddr *sa)
{
    memset(r, 0, sizeof(*r));
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *) sa;
        r->fam = AF_INET;
        r->port = s->sin_port;
        memcpy(r->a, &s->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *) sa;
        r->port = s->sin6_port;
        if (IN6_IS_ADDR_V4MAPPED(&s->sin6_addr)) {
            /* an IPv4 client of a dual-stack "::": an IPv4 address */
            r->fam = AF_INET;
            memcpy(r->a, s->sin6_addr.s6_addr + 12, 4);
        } else {
            r->fam = AF_INET6;
            memcpy(r->a, &s->sin6_addr, 16);
        }
    }
}

void
hd_realip_set(int fd, const struct sockaddr *sa)
{
    if (fd < 0 || (size_t) fd >= R_n)
        return;
    set1(&R[fd].real, sa);
    R[fd].peer = R[fd].real;
}

static bool
get1(const ra1_t *r, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (r->fam == 0)
        return false;
    if (r->fam == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *) ss;
        s->sin_family = AF_INET;
        s->sin_port = r->port;
        memcpy(&s->sin_addr, r->a, 4);
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *) ss;
        s->sin6_family = AF_INET6;
        s->sin6_port = r->port;
        memcpy(&s->sin6_addr, r->a, 16);
    }
    return true;
}

bool
hd_realip_get(int fd, struct sockaddr_storage *ss)
{
    if (fd < 0 || (size_t) fd >= R_n) {
        memset(ss, 0, sizeof(*ss));
        return false;
    }
    return get1(&R[fd].real, ss);
}

const char *
hd_realip_str(int fd, char *buf, size_t len)
{
    buf[0] = '\0';
    if (fd < 0 || (size_t) fd >= R_n || R[fd].real.fam == 0)
        return buf;
    if (inet_ntop(R[fd].real.fam, R[fd].real.a, buf, (socklen_t) len) == NULL)
        buf[0] = '\0';
    return buf;
}

/* One address of a header, trimmed; IPv6 may come bracketed. */
static bool
parse_addr(const char *s, size_t n, struct sockaddr_storage *out)
{
    char a[64];

    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(a))
        return false;
    memcpy(a, s, n);
    a[n] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, a, &((struct sockaddr_in *) out)->sin_addr) == 1) {
        out->ss_family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, a, &((struct sockaddr_in6 *) out)->sin6_addr)
        == 1) {
        out->ss_family = AF_INET6;
        return true;
    }
    return false;
}

bool
hd_realip_pick_xff(const char *list, size_t len, struct sockaddr_storage *out)
{
    size_t end = len;

    /* from the right: each hop appended the address it saw; the first
     * one that is not one of our proxies is the client. Anything left of
     * it is what the client claims, never believed. */
    while (end > 0) {
        size_t start = end;
        while (start > 0 && list[start - 1] != ',')
            start--;
        if (!parse_addr(list + start, end - start, out))
            return false; /* garbage where a hop should be: believe none */
        if (!hd_conf_trusted_proxy(hd_w.conf, (struct sockaddr *) out))
            return true;
        if (start == 0)
            return true; /* every hop trusted: the first is the client */
        end = start - 1;
    }
    return false;
}

int
hd_realip_from_headers(struct lws *wsi)
{
    const hd_conf_t        *c = hd_w.conf;
    int                     fd = lws_get_socket_fd(wsi), n;
    struct sockaddr_storage peer, real;
    char                    buf[1024];
    bool                    found = false;

    if (c->ntrusted_proxies == 0 || fd < 0 || (size_t) fd >= R_n
        || !get1(&R[fd].peer, &peer)
        || !hd_conf_trusted_proxy(c, (struct sockaddr *) &peer))
        return 0;
    n = lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_X_FORWARDED_FOR);
    if (n > 0)
        found = hd_realip_pick_xff(buf, (size_t) n, &real);
    if (!found) {
        n = lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_HTTP_X_REAL_IP);
        if (n > 0)
            found = parse_addr(buf, (size_t) n, &real);
    }
    /* the per-IP count is the client's of the previous request on this
     * connection, if any (a trusted proxy's own connection holds none) */
    if (hd_w.limits != NULL && c->conns_per_ip > 0)
        hd_limits_release(hd_w.limits, hd_w.lease, fd, HD_LIM_IP);
    if (!found) {
        /* the proxy's own request (a health check): its address */
        R[fd].real = R[fd].peer;
        return 0;
    }
    set1(&R[fd].real, (struct sockaddr *) &real);

    /* count the connection against the client's address */
    if (hd_w.limits != NULL && c->conns_per_ip > 0) {
        unsigned char key[17];
        size_t        klen;
        int           rc;

        klen = hd_limits_addr_key((struct sockaddr *) &real, 64, key);
        rc = klen ? hd_limits_acquire(hd_w.limits, hd_w.lease, fd, HD_LIM_IP,
                                      key, klen, (uint32_t) c->conns_per_ip)
                  : 0;
        if (rc < 0) {
            hd_reject_inc(HD_REJ_IP_LIMIT);
            return rc;
        }
    }
    return 0;
}
