#include <errno.h>
#include <unistd.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <libwebsockets.h>

#include "hd_alloc.h"
#include "hd_conn.h"
#include "hd_metrics.h"
#include "hd_time.h"
#include "hd_worker_int.h"

static int
enqueue(hd_conn_t *c, hd_msg_t *m, bool force)
{
    if (c->close_code != 0)
        return 0;               /* closing: nothing more goes out */
    if (!force && c->q_bytes + m->len > (size_t) hd_w.conf->outq_bytes)
        return -ENOBUFS;
    if (c->q_len == c->q_cap) {
        uint32_t   ncap = c->q_cap ? c->q_cap * 2 : 8;
        hd_msg_t **nq = hd_malloc(ncap * sizeof(*nq));
        for (uint32_t i = 0; i < c->q_len; i++)
            nq[i] = c->q[(c->q_head + i) % c->q_cap];
        free(c->q);
        c->q = nq;
        c->q_cap = ncap;
        c->q_head = 0;
    }
    c->q[(c->q_head + c->q_len) % c->q_cap] = hd_msg_ref(m);
    c->q_len++;
    c->q_bytes += m->len;
    return 0;
}

int
hd_conn_enqueue(hd_conn_t *c, hd_msg_t *m)
{
    return enqueue(c, m, false);
}

void
hd_conn_enqueue_force(hd_conn_t *c, hd_msg_t *m)
{
    (void) enqueue(c, m, true);
}

int
hd_conn_reply(hd_conn_t *c, const char *s, size_t len)
{
    hd_msg_t *m = hd_msg_new(s, len);
    int       rc = hd_conn_enqueue(c, m);
    hd_msg_unref(m);
    if (rc < 0)
        hd_conn_close(c, HD_CLOSE_SLOW_CONSUMER, "slow consumer");
    return rc;
}

void
hd_conn_want_write(hd_conn_t *c)
{
    if (c->wsi != NULL)
        lws_callback_on_writable(c->wsi);
}

static void
drop_queue(hd_conn_t *c)
{
    while (c->q_len > 0) {
        hd_msg_unref(c->q[c->q_head]);
        c->q_head = (c->q_head + 1) % c->q_cap;
        c->q_len--;
    }
    c->q_bytes = 0;
}

void
hd_conn_close(hd_conn_t *c, uint16_t code, const char *reason)
{
    if (c->close_code != 0)
        return;
    c->close_code = code;
    snprintf(c->close_reason, sizeof(c->close_reason), "%s",
             reason ? reason : "");
    /* nothing queued matters once we decided to close; free it now so a
     * slow consumer's memory comes back at once */
    drop_queue(c);
    hd_conn_want_write(c);
}

void
hd_conn_close_after_flush(hd_conn_t *c, uint16_t code, const char *reason)
{
    if (c->close_code != 0)
        return;
    c->close_code = code;
    c->close_soft = true;
    snprintf(c->close_reason, sizeof(c->close_reason), "%s",
             reason ? reason : "");
    hd_conn_want_write(c);
}

void
hd_conn_release(hd_conn_t *c)
{
    if (c->linger_fd > 0) {
        close(c->linger_fd);
        c->linger_fd = 0;
    }
    drop_queue(c);
    hd_free(c->q);
    c->q_cap = 0;
    hd_free(c->rx);
    c->rx_len = c->rx_cap = 0;
}

/*
 * Lingering close (as nginx's lingering_close): when herald closes a
 * connection, lws shuts down and closes its socket right after the close
 * frame, and at once if more data frames follow it. Closing with unread
 * data, or receiving data after the close, makes the kernel send a reset,
 * and a client still sending then usually loses the close frame and sees
 * 1006. So a duplicate of the socket is kept open for a moment, reading
 * and dropping what still comes, until the client closes its side.
 */
#define LINGER_MAX      1024
#define LINGER_SECONDS  2.0

typedef struct hd_linger {
    ev_io         io;
    ev_timer      tm;
    struct hd_linger *next, *prev;
} hd_linger_t;

static hd_linger_t *lingering;
static unsigned  nlingering;

static void
linger_end(hd_linger_t *l)
{
    ev_io_stop(hd_w.loop, &l->io);
    ev_timer_stop(hd_w.loop, &l->tm);
    close(l->io.fd);
    if (l->prev != NULL)
        l->prev->next = l->next;
    else
        lingering = l->next;
    if (l->next != NULL)
        l->next->prev = l->prev;
    nlingering--;
    free(l);
}

static void
linger_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    char buf[4096];
    (void) loop; (void) revents;

    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(w->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        linger_end((hd_linger_t *) w);        /* EOF or error: done */
        return;
    }
}

static void
linger_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop; (void) revents;
    linger_end((hd_linger_t *) ((char *) w - offsetof(hd_linger_t, tm)));
}

/* Before the close frame: keep a duplicate of the socket (not read yet:
 * lws still owns the socket until it closes it). */
static void
linger_prepare(hd_conn_t *c)
{
    int fd = lws_get_socket_fd(c->wsi);

    if (fd < 0 || c->linger_fd > 0 || nlingering >= LINGER_MAX)
        return;
    c->linger_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (c->linger_fd < 0)
        c->linger_fd = 0;
}

/* After lws closed its fd: read and drop until the client closes. */
void
hd_conn_linger(hd_conn_t *c)
{
    int          dfd = c->linger_fd;
    hd_linger_t *l;

    c->linger_fd = 0;
    if (dfd <= 0)
        return;
    l = hd_calloc(1, sizeof(*l));
    ev_io_init(&l->io, linger_read_cb, dfd, EV_READ);
    ev_io_start(hd_w.loop, &l->io);
    ev_timer_init(&l->tm, linger_timer_cb, LINGER_SECONDS, 0.);
    ev_timer_start(hd_w.loop, &l->tm);
    l->next = lingering;
    if (lingering != NULL)
        lingering->prev = l;
    lingering = l;
    nlingering++;
}

void
hd_conn_linger_shutdown(void)
{
    while (lingering != NULL)
        linger_end(lingering);
}

int
hd_conn_flush(hd_conn_t *c, unsigned char *buf)
{
    unsigned char *p = buf + LWS_PRE, *start = p;
    uint32_t       n = 0;
    uint64_t       now = 0;
    int            wrote;
    size_t         max_bytes = (size_t) hd_w.conf->batch_max_bytes;
    uint32_t       max_msgs = (uint32_t) hd_w.conf->batch_max_messages;

    if (c->close_code != 0 && (!c->close_soft || c->q_len == 0)) {
        linger_prepare(c);
        lws_close_reason(c->wsi, (enum lws_close_status) c->close_code,
                         (unsigned char *) c->close_reason,
                         strlen(c->close_reason));
        return -1;
    }
    if (c->ping_due) {
        /* a heartbeat ping goes out on its own, ahead of data */
        /* not empty: lws 4.1 does not report an empty pong */
        unsigned char pb[LWS_PRE + 2];
        pb[LWS_PRE] = 'h';
        pb[LWS_PRE + 1] = 'b';
        c->ping_due = false;
        if (lws_write(c->wsi, pb + LWS_PRE, 2, LWS_WRITE_PING) < 0)
            return -1;
        if (c->q_len > 0)
            lws_callback_on_writable(c->wsi);
        return 0;
    }
    if (c->q_len == 0)
        return 0;

    /* a single message larger than the batch goes out alone, from a
     * buffer of its own */
    hd_msg_t *first = c->q[c->q_head];
    if (first->len > max_bytes) {
        unsigned char *big = hd_malloc(LWS_PRE + first->len);
        memcpy(big + LWS_PRE, first->data, first->len);
        wrote = lws_write(c->wsi, big + LWS_PRE, first->len, LWS_WRITE_TEXT);
        free(big);
        n = 1;
        p = start + first->len;
    } else {
        while (n < c->q_len && n < max_msgs) {
            hd_msg_t *m = c->q[(c->q_head + n) % c->q_cap];
            size_t    need = m->len + (p > start ? 1 : 0);
            if ((size_t) (p - start) + need > max_bytes)
                break;
            if (p > start)
                *p++ = '\n';
            memcpy(p, m->data, m->len);
            p += m->len;
            n++;
        }
        wrote = lws_write(c->wsi, start, (size_t) (p - start), LWS_WRITE_TEXT);
    }

    for (uint32_t i = 0; i < n; i++) {
        hd_msg_t *m = c->q[c->q_head];
        if (m->pub_ns != 0) {
            if (now == 0)
                now = hd_wall_ns();
            hd_ctr_inc(HD_C_MSG_DELIVERED);
            hd_hist_observe(HD_H_DELIVERY, now > m->pub_ns ? now - m->pub_ns : 0);
        }
        c->q_bytes -= m->len;
        hd_msg_unref(m);
        c->q_head = (c->q_head + 1) % c->q_cap;
        c->q_len--;
    }
    if (wrote < 0)
        return -1;
    hd_ctr_add(HD_C_BYTES_SENT, (uint64_t) (p - start));
    if (c->q_len > 0 || c->close_code != 0)
        lws_callback_on_writable(c->wsi);
    return 0;
}
