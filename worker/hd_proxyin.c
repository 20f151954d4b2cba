#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hd_admit.h"
#include "hd_alloc.h"
#include "hd_log.h"
#include "hd_metrics.h"
#include "hd_net.h"
#include "hd_proxy.h"
#include "hd_proxyin.h"
#include "hd_time.h"
#include "hd_worker_int.h"

typedef struct pin {
    ev_io                   io;
    ev_timer                deadline;
    int                     fd;
    size_t                  have;
    uint64_t                accepted_ns; /* the handshake deadline's start */
    struct sockaddr_storage peer;
    struct pin             *prev, *next;
    uint8_t                 buf[HD_PROXY_MAX];
} pin_t;

static pin_t *pins; /* waiting for their header */

static void
pin_free(pin_t *p, bool close_fd)
{
    ev_io_stop(hd_w.loop, &p->io);
    ev_timer_stop(hd_w.loop, &p->deadline);
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        pins = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    if (close_fd) {
        hd_admit_failed(p->fd); /* the counts hd_admit_accept() took */
        close(p->fd);
    }
    hd_free(p);
}

/* Not a PROXY header, or none in time: counted and closed, no answer (the
 * peer is not speaking the protocol we expect, so nothing it would read). */
static void
refuse(pin_t *p, const char *why)
{
    char a[64];

    hd_reject_inc(HD_REJ_PROXY);
    hd_log_debug("connection from %s refused: %s",
                 hd_net_addr_str((struct sockaddr *) &p->peer, a, sizeof(a)),
                 why);
    pin_free(p, true);
}

static void
read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    pin_t          *p = (pin_t *) w;
    uint8_t         tmp[HD_PROXY_MAX];
    hd_proxy_info_t pi;
    ssize_t         n;
    int             r;
    (void) loop;
    (void) revents;

    /* peek: only the header's bytes are taken off the socket, so the
     * client's request stays there for lws */
    n = recv(p->fd, tmp, sizeof(tmp) - p->have, MSG_PEEK);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        refuse(p, strerror(errno));
        return;
    }
    if (n == 0) {
        refuse(p, "closed before a PROXY header");
        return;
    }
    memcpy(p->buf + p->have, tmp, (size_t) n);
    r = hd_proxy_parse(p->buf, p->have + (size_t) n, &pi);
    if (r < 0) {
        refuse(p, "no valid PROXY protocol header");
        return;
    }
    /* complete: take exactly the rest of the header; incomplete: all of
     * it is header, take it (else the level-triggered watcher spins) */
    size_t take = r > 0 ? (size_t) r - p->have : (size_t) n;
    if (recv(p->fd, tmp, take, 0) != (ssize_t) take) {
        refuse(p, "short read of the PROXY header");
        return;
    }
    p->have += take;
    if (r == 0) {
        if (p->have >= HD_PROXY_MAX)
            refuse(p, "PROXY header too long");
        return;
    }

    int                     fd = p->fd;
    uint64_t                accepted_ns = p->accepted_ns;
    struct sockaddr_storage real = pi.local ? p->peer : pi.src;
    pin_free(p, false);
    /* the peer's counts are traded there for the client's */
    hd_worker_adopt(fd, (struct sockaddr *) &real, accepted_ns);
}

static void
deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    pin_t *p = (pin_t *) ((char *) w - offsetof(pin_t, deadline));
    (void) loop;
    (void) revents;
    refuse(p, "no PROXY header in time");
}

void
hd_proxyin_start(int fd, const struct sockaddr *peer, socklen_t plen)
{
    pin_t *p = hd_calloc(1, sizeof(*p));

    p->fd = fd;
    p->accepted_ns = hd_mono_ns();
    if (plen > sizeof(p->peer))
        plen = sizeof(p->peer);
    memcpy(&p->peer, peer, plen);
    p->next = pins;
    if (pins != NULL)
        pins->prev = p;
    pins = p;
    ev_io_init(&p->io, read_cb, fd, EV_READ);
    ev_io_start(hd_w.loop, &p->io);
    ev_timer_init(&p->deadline, deadline_cb,
                  (double) hd_w.conf->handshake_ms / 1000., 0.);
    ev_timer_start(hd_w.loop, &p->deadline);
}

bool
hd_proxyin_pending(void)
{
    return pins != NULL;
}

void
hd_proxyin_shutdown(void)
{
    while (pins != NULL)
        pin_free(pins, true);
}
