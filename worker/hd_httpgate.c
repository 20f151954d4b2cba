/*
 * See hd_httpgate.h. Per socket, a small scanner over the request's bytes:
 * the header block (its end, and Content-Length), then the body.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "hd_httpgate.h"

enum {
    P_OFF = 0, /* not ours (fd never opened) */
    P_START,   /* before a request's first byte */
    P_HEADERS, /* in a gated request's header block */
    P_BODY,    /* in its body: body_left bytes to go */
    P_WAIT,    /* delivered whole: nothing until released */
    P_PASS     /* not gated: everything passes */
};

typedef struct gate {
    uint64_t body_left;
    uint32_t clen; /* Content-Length so far */
    uint8_t  phase;
    uint8_t  crlf;     /* progress through "\r\n\r\n" */
    uint8_t  match;    /* progress through "content-length:" at a line start */
    uint8_t  released; /* answered before its body was all read */
} gate_t;

static gate_t *GT;
static int     GT_cap;
static size_t  GT_bytes;

static const char CL[] = "content-length:";
#define CL_LEN   (sizeof(CL) - 1)
#define CL_DIGIT 0xff /* match: past the name, reading digits */
#define CL_NONE  0xfe /* match: not that header on this line */

int
hd_httpgate_init(int max_fds)
{
    GT_cap = max_fds;
    GT_bytes = (size_t) max_fds * sizeof(gate_t);
    GT = mmap(NULL, GT_bytes, PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (GT == MAP_FAILED) {
        GT = NULL;
        GT_cap = 0;
        return -errno;
    }
    return 0;
}

void
hd_httpgate_shutdown(void)
{
    if (GT != NULL)
        munmap(GT, GT_bytes);
    GT = NULL;
    GT_cap = 0;
}

void
hd_httpgate_open(int fd)
{
    if (fd >= 0 && fd < GT_cap) {
        memset(&GT[fd], 0, sizeof(GT[fd]));
        GT[fd].phase = P_START;
    }
}

static void
request_done(gate_t *g)
{
    g->phase = g->released ? P_START : P_WAIT;
    g->released = 0;
}

/*
 * Scan header bytes p[0..n); returns how many belong to the request (all
 * of them, or up to the end of its body when that is in p).
 */
static size_t
scan(gate_t *g, const uint8_t *p, size_t n)
{
    size_t i = 0;

    while (i < n && g->phase == P_HEADERS) {
        uint8_t c = p[i++];

        if (c == "\r\n\r\n"[g->crlf])
            g->crlf++;
        else
            g->crlf = c == '\r' ? 1 : 0;
        if (g->crlf == 4) {
            g->body_left = g->clen;
            g->phase = P_BODY;
            break;
        }
        if (c == '\n') {
            g->match = 0; /* a new line */
            continue;
        }
        if (g->match == CL_DIGIT) {
            if (c >= '0' && c <= '9' && g->clen < UINT32_MAX / 16)
                g->clen = g->clen * 10 + (uint32_t) (c - '0');
        } else if (g->match < CL_LEN) {
            uint8_t lc = c >= 'A' && c <= 'Z' ? (uint8_t) (c + 32) : c;
            g->match = lc == (uint8_t) CL[g->match] ? g->match + 1 : CL_NONE;
            if (g->match == CL_LEN) {
                g->match = CL_DIGIT;
                g->clen = 0;
            }
        }
    }
    if (g->phase == P_BODY) {
        size_t k = n - i < g->body_left ? n - i : (size_t) g->body_left;
        i += k;
        g->body_left -= k;
        if (g->body_left == 0)
            request_done(g);
    }
    return i;
}

ssize_t
hd_httpgate_recv(int fd, void *buf, size_t len, int flags)
{
    gate_t *g;
    ssize_t n;
    size_t  take;

    if (fd < 0 || fd >= GT_cap || (flags & MSG_PEEK) || len == 0)
        return recv(fd, buf, len, flags);
    g = &GT[fd];
    switch (g->phase) {
    case P_WAIT:
        errno = EAGAIN; /* the next request waits for this one's answer */
        return -1;      /* recv()'s convention: -1 and errno */
    case P_BODY:
        if (len > g->body_left)
            len = (size_t) g->body_left;
        n = recv(fd, buf, len, flags);
        if (n > 0 && (g->body_left -= (uint64_t) n) == 0)
            request_done(g);
        return n;
    case P_START:
    case P_HEADERS:
        n = recv(fd, buf, len, flags | MSG_PEEK);
        if (n <= 0)
            return n;
        if (g->phase == P_START) {
            /* only POST requests (the API) are gated; an upgrade is a GET
             * and its frames may follow right behind it */
            if (((const uint8_t *) buf)[0] != 'P') {
                g->phase = P_PASS;
                return recv(fd, buf, len, flags);
            }
            g->phase = P_HEADERS;
            g->crlf = g->match = 0;
            g->clen = 0;
        }
        take = scan(g, buf, (size_t) n);
        return recv(fd, buf, take, flags); /* what was peeked is there */
    default:
        return recv(fd, buf, len, flags);
    }
}

bool
hd_httpgate_waiting(int fd)
{
    return fd >= 0 && fd < GT_cap && GT[fd].phase == P_WAIT;
}

void
hd_httpgate_release(int fd)
{
    if (fd < 0 || fd >= GT_cap)
        return;
    if (GT[fd].phase == P_WAIT)
        GT[fd].phase = P_START;
    else if (GT[fd].phase == P_HEADERS || GT[fd].phase == P_BODY)
        GT[fd].released = 1; /* answered early: start over at its end */
}
