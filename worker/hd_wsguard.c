#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "hd_httpgate.h"
#include "hd_log.h"
#include "hd_plthook.h"
#include "hd_wsguard.h"

enum {
    ST_HDR0 = 0,
    ST_HDR1,
    ST_EXTLEN,
    ST_MASK,
    ST_PAYLOAD
};

#define F_ACTIVE   0x01 /* one of our client sockets */
#define F_ESTAB    0x02 /* past the HTTP upgrade */
#define F_FRAMES   0x04 /* a request's header end was seen */
#define F_UNMASKED 0x08 /* sticky: an unmasked frame was seen */
#define F_QUIET    0x10 /* pings are passed on as pongs (hd_wsguard_quiet) */
#define F_CTL_CUR  0x20 /* the current frame is a ping or a pong */
#define F_SEEN     0x40 /* a request's first bytes were looked at */
#define F_PROXYHDR 0x80 /* sticky: they were a PROXY protocol header */

typedef struct guard {
    uint64_t len; /* payload bytes left, or extended length so far */
    uint8_t  st;
    uint8_t  flags;
    uint8_t  crlf; /* progress through "\r\n\r\n" */
    uint8_t  n;    /* extended-length or mask bytes left */
    uint32_t ctl;  /* pings and pongs since hd_wsguard_take_control() */
} guard_t;

static guard_t *G;
static int      G_cap;
static size_t   G_bytes;

static void
feed_frames(guard_t *g, uint8_t *p, const uint8_t *end)
{
    while (p < end && !(g->flags & F_UNMASKED)) {
        uint8_t c;

        if (g->st == ST_PAYLOAD) {
            uint64_t left = (uint64_t) (end - p);
            uint64_t k = g->len < left ? g->len : left;
            p += k;
            g->len -= k;
            if (g->len == 0)
                g->st = ST_HDR0;
            continue;
        }
        c = *p++;
        switch (g->st) {
        case ST_HDR0:
            /* opcode 9 ping, 10 pong: lws answers a ping by itself, so
             * this is the only place that sees them (counted for the
             * connection's rate, hd_wsguard_take_control()) */
            if ((c & 0x0f) == 0x9 || (c & 0x0f) == 0xa)
                g->flags |= F_CTL_CUR;
            else
                g->flags &= (uint8_t) ~F_CTL_CUR;
            /* quiet: lws must not answer this ping. lws 4.1 stages a
             * pong in the buffer its pending close frame is built from,
             * so a ping read between the close decision and the close
             * frame going out replaced herald's close code with the
             * ping's first two payload bytes. As a pong it is only
             * reported (LWS_CALLBACK_RECEIVE_PONG), and still counted. */
            if ((c & 0x0f) == 0x9 && (g->flags & F_QUIET))
                p[-1] = (uint8_t) ((c & 0xf0) | 0xa);
            g->st = ST_HDR1;
            break;
        case ST_HDR1:
            if (!(c & 0x80)) {
                g->flags |= F_UNMASKED;
                return;
            }
            if ((g->flags & F_CTL_CUR) && g->ctl < UINT32_MAX)
                g->ctl++;
            g->len = c & 0x7f;
            if (g->len == 126 || g->len == 127) {
                g->n = g->len == 126 ? 2 : 8;
                g->len = 0;
                g->st = ST_EXTLEN;
            } else {
                g->n = 4;
                g->st = ST_MASK;
            }
            break;
        case ST_EXTLEN:
            g->len = g->len << 8 | c;
            if (--g->n == 0) {
                g->n = 4;
                g->st = ST_MASK;
            }
            break;
        case ST_MASK:
            if (--g->n == 0)
                g->st = g->len ? ST_PAYLOAD : ST_HDR0;
            break;
        }
    }
}

/*
 * Before the upgrade completes, the bytes are HTTP: frames start after the
 * end of the request's headers. Only the first "\r\n\r\n" counts: from
 * there on everything is frames, also before lws has processed the
 * upgrade, since a client may send its first frames right behind the
 * request. A "\r\n\r\n" inside frame bytes (JSON allows CR LF as
 * whitespace) must not restart the parser: that let crafted bytes after it
 * hide an unmasked frame. An HTTP request that was not an upgrade re-arms
 * the scan once it is answered (hd_wsguard_http_done()), for the next
 * request on a kept-alive connection.
 */
static void
feed(guard_t *g, uint8_t *p, size_t n)
{
    static const char end_hdr[] = "\r\n\r\n";
    const uint8_t    *e = p + n;

    if (!(g->flags & (F_ESTAB | F_FRAMES))) {
        for (; p < e; p++) {
            if (*p == (uint8_t) end_hdr[g->crlf])
                g->crlf++;
            else
                g->crlf = *p == '\r' ? 1 : 0;
            if (g->crlf == 4) {
                g->crlf = 0;
                g->st = ST_HDR0;
                g->flags |= F_FRAMES;
                p++;
                break;
            }
        }
    }
    if (g->flags & (F_ESTAB | F_FRAMES))
        feed_frames(g, p, e);
}

/*
 * A PROXY protocol header (v1 "PROXY ", v2's binary signature) where the
 * listener does not take one: lws would read past it as a request line,
 * so it is flagged here, at the request's first bytes, and refused by
 * hd_ws.c. A header on a listener with listen.proxy_protocol never gets
 * here: hd_proxyin.c takes it off the socket before lws.
 */
static void
look_at_start(guard_t *g, const uint8_t *p, size_t n)
{
    static const uint8_t v2[] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d };

    g->flags |= F_SEEN;
    if ((n >= 6 && memcmp(p, "PROXY ", 6) == 0)
        || (n >= sizeof(v2) && memcmp(p, v2, sizeof(v2)) == 0))
        g->flags |= F_PROXYHDR;
}

static ssize_t
guarded_recv(int fd, void *buf, size_t len, int flags)
{
    /* hd_httpgate.c: one HTTP request at a time for lws */
    ssize_t n = hd_httpgate_recv(fd, buf, len, flags);

    if (n > 0 && !(flags & MSG_PEEK) && fd >= 0 && fd < G_cap
        && (G[fd].flags & F_ACTIVE)) {
        if (!(G[fd].flags & (F_SEEN | F_ESTAB)))
            look_at_start(&G[fd], buf, (size_t) n);
        feed(&G[fd], buf, (size_t) n);
    }
    return n;
}

int
hd_wsguard_init(int max_fds)
{
    int rc;

    G_cap = max_fds;
    G_bytes = (size_t) max_fds * sizeof(guard_t);
    /* untouched pages cost nothing: a worker with 1M fd slots and 10k
     * connections pays for the pages those fds fall in */
    G = mmap(NULL, G_bytes, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (G == MAP_FAILED) {
        rc = -errno;
        G = NULL;
        G_cap = 0;
        return rc;
    }
    rc = hd_plthook("libwebsockets.so", "recv", (void *) guarded_recv);
    if (rc < 0) {
        hd_log_warn("cannot watch libwebsockets' reads (%s): unmasked client "
                    "frames will not be refused",
                    strerror(-rc));
        return rc;
    }
    return 0;
}

void
hd_wsguard_shutdown(void)
{
    if (G != NULL)
        munmap(G, G_bytes);
    G = NULL;
    G_cap = 0;
}

void
hd_wsguard_open(int fd)
{
    if (fd >= 0 && fd < G_cap) {
        memset(&G[fd], 0, sizeof(G[fd]));
        G[fd].flags = F_ACTIVE;
    }
}

void
hd_wsguard_http_done(int fd)
{
    if (fd >= 0 && fd < G_cap && !(G[fd].flags & F_ESTAB)) {
        /* what came after that request's headers was its body, not
         * frames: start over at the next request */
        G[fd].flags = F_ACTIVE | (G[fd].flags & F_PROXYHDR);
        G[fd].st = ST_HDR0;
        G[fd].crlf = 0;
        G[fd].len = 0;
        G[fd].n = 0;
    }
}

void
hd_wsguard_established(int fd)
{
    if (fd >= 0 && fd < G_cap)
        G[fd].flags |= F_ESTAB;
}

void
hd_wsguard_quiet(int fd, bool on)
{
    if (fd >= 0 && fd < G_cap) {
        if (on)
            G[fd].flags |= F_QUIET;
        else
            G[fd].flags &= (uint8_t) ~F_QUIET;
    }
}

uint32_t
hd_wsguard_take_control(int fd)
{
    uint32_t n = 0;

    if (fd >= 0 && fd < G_cap) {
        n = G[fd].ctl;
        G[fd].ctl = 0;
    }
    return n;
}

bool
hd_wsguard_unmasked(int fd)
{
    return fd >= 0 && fd < G_cap
        && (G[fd].flags & (F_ESTAB | F_UNMASKED)) == (F_ESTAB | F_UNMASKED);
}

bool
hd_wsguard_proxy_header(int fd)
{
    return fd >= 0 && fd < G_cap && (G[fd].flags & F_PROXYHDR);
}
