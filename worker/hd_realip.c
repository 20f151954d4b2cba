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

/* 20 bytes per fd: family (0: none), port, address */
typedef struct ra {
    uint8_t  fam;
    uint8_t  pad;
    uint16_t port; /* network order */
    uint8_t  a[16];
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

void
hd_realip_set(int fd, const struct sockaddr *sa)
{
    ra_t *r;

    if (fd < 0 || (size_t) fd >= R_n)
        return;
    r = &R[fd];
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

bool
hd_realip_get(int fd, struct sockaddr_storage *ss)
{
    const ra_t *r;

    memset(ss, 0, sizeof(*ss));
    if (fd < 0 || (size_t) fd >= R_n || R[fd].fam == 0)
        return false;
    r = &R[fd];
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

const char *
hd_realip_str(int fd, char *buf, size_t len)
{
    buf[0] = '\0';
    if (fd < 0 || (size_t) fd >= R_n || R[fd].fam == 0)
        return buf;
    if (inet_ntop(R[fd].fam, R[fd].a, buf, (socklen_t) len) == NULL)
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

    if (c->ntrusted_proxies == 0 || !hd_realip_get(fd, &peer)
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
    if (!found)
        return 0; /* the proxy's own request (a health check): as it is */
    hd_realip_set(fd, (struct sockaddr *) &real);

    /* the per-IP count taken at accept was the proxy's: move it */
    if (hd_w.limits != NULL && c->conns_per_ip > 0) {
        unsigned char key[17];
        size_t        klen;
        int           rc;

        hd_limits_release(hd_w.limits, hd_w.lease, fd, HD_LIM_IP);
        klen = hd_limits_addr_key((struct sockaddr *) &real, 64, key);
        rc = klen ? hd_limits_acquire(hd_w.limits, hd_w.lease, fd, HD_LIM_IP,
                                      key, klen, (uint32_t) c->conns_per_ip)
                  : 0;
        if (rc < 0) {
            hd_reject_inc(HD_REJ_IP_LIMIT);
            return -1;
        }
    }
    return 0;
}
