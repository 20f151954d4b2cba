#include <errno.h>
#include <unistd.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <linux/sockios.h>
#include <netinet/in.h>

#include <libwebsockets.h>

#include "hd_alloc.h"
#include "hd_conn.h"
#include "hd_log.h"
#include "hd_metrics.h"
#include "hd_realip.h"
#include "hd_time.h"
#include "hd_worker_int.h"
#include "hd_wsguard.h"

static int
enqueue(hd_conn_t *c, hd_msg_t *m, bool force)
{
    size_t cap = (size_t) hd_w.conf->outq_bytes;

    if (c->close_code != 0)
        return 0; /* closing: nothing more goes out */
    /* a push or small reply must fit under the cap; a large reply only
     * needs the queue to be within it before (hd_conn_enqueue_force) */
    if (force ? c->q_bytes > cap : c->q_bytes + m->len > cap)
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
    hd_w.queued_bytes += m->len;
    return 0;
}

int
hd_conn_enqueue(hd_conn_t *c, hd_msg_t *m)
{
    return enqueue(c, m, false);
}

int
hd_conn_enqueue_force(hd_conn_t *c, hd_msg_t *m)
{
    return enqueue(c, m, true);
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

static void
drop_queue(hd_conn_t *c)
{
    while (c->q_len > 0) {
        hd_msg_unref(c->q[c->q_head]);
        c->q_head = (c->q_head + 1) % c->q_cap;
        c->q_len--;
    }
    hd_w.queued_bytes -= c->q_bytes;
    c->q_bytes = 0;
}

/*
 * A close frame waits for a writable socket like any other write, and a
 * client that stopped reading (a slow consumer, its socket buffers full)
 * would keep the connection forever. The heartbeat sweep
 * (hd_conn_close_check()) drops it without the frame once the close has
 * waited HD_CLOSE_SEND_MS with the socket making no progress: its unsent
 * bytes (SIOCOUTQ) unchanged. A client still reading, slowly, a long
 * reply queued before the close keeps its connection until it is done;
 * once the close frame is handed to lws, lws' own close timeouts rule.
 */
static hd_closing_t *
closing_of(hd_conn_t *c, const char *reason)
{
    size_t n;

    if (c->closing != NULL)
        return c->closing;
    /* a close frame's reason is at most 123 bytes; ours are short */
    reason = reason ? reason : "";
    n = strnlen(reason, 63);
    c->closing = hd_calloc(1, sizeof(*c->closing) + n + 1);
    memcpy(c->closing->reason, reason, n);
    return c->closing;
}

static void
close_deadline(hd_conn_t *c, hd_closing_t *cl)
{
    int fd = c->wsi != NULL ? lws_get_socket_fd(c->wsi) : -1;

    cl->ms = hd_mono_ms();
    if (fd < 0 || ioctl(fd, SIOCOUTQ, &cl->outq) != 0)
        cl->outq = -1;
}

void
hd_conn_close_check(hd_conn_t *c, uint64_t now_ms)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    hd_closing_t *cl;
    int           fd, outq = -1;

    if (c->close_code == 0 || c->close_sent || c->close_forced)
        return;
    fd = lws_get_socket_fd(c->wsi);
    if (fd < 0)
        return;
    cl = closing_of(c, NULL);
    if (cl->ms == 0)
        cl->ms = now_ms; /* a path that set close_code directly */
    if (ioctl(fd, SIOCOUTQ, &outq) == 0 && outq != cl->outq) {
        cl->outq = outq; /* the peer took something: progress */
        cl->ms = now_ms;
        return;
    }
    if (now_ms - cl->ms < HD_CLOSE_SEND_MS)
        return;
    /*
     * lws itself would wait on: asked to close, it first flushes what it
     * holds of a frame, and that is what the socket does not take. Shut
     * the socket down under it instead: lws sees the end of the stream
     * and a write error, and closes for good; with a zero linger the
     * close resets the connection and the kernel frees its send buffer
     * at once rather than keep retrying a peer that does not read.
     */
    c->close_forced = true;
    hd_log_debug("conn %llu: close frame not taken in %d ms, dropping",
                 (unsigned long long) c->id, HD_CLOSE_SEND_MS);
    (void) setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    (void) shutdown(fd, SHUT_RDWR);
}

const char *
hd_conn_addr(const hd_conn_t *c, char *buf, size_t len)
{
    /* c's socket stays open (and its table entry c's) until c is freed
     * at LWS_CALLBACK_CLOSED; the entry is set before the upgrade and
     * HTTP headers (X-Forwarded-For) can change it only before it */
    return hd_realip_str(c->established ? c->fd : -1, buf, len);
}

const char *
hd_conn_log_addr(const hd_conn_t *c)
{
    static char buf[INET6_ADDRSTRLEN];

    if (!hd_w.conf->log_client_addresses)
        return "-";
    return hd_conn_addr(c, buf, sizeof(buf));
}

void
hd_conn_close(hd_conn_t *c, uint16_t code, const char *reason)
{
    hd_closing_t *cl;

    if (c->close_code != 0)
        return;
    /* no pong may take the close frame's place (hd_wsguard.c) */
    hd_wsguard_quiet(c->fd, true);
    cl = closing_of(c, reason);
    close_deadline(c, cl);
    c->close_code = code;
    cl->q_bytes = c->q_bytes; /* for the close's log line */
    /* nothing queued matters once we decided to close; free it now so a
     * slow consumer's memory comes back at once */
    drop_queue(c);
    hd_conn_want_write(c);
}

void
hd_conn_close_after_flush(hd_conn_t *c, uint16_t code, const char *reason)
{
    hd_closing_t *cl;

    if (c->close_code != 0)
        return;
    /* no pong may take the close frame's place (hd_wsguard.c) */
    hd_wsguard_quiet(c->fd, true);
    cl = closing_of(c, reason);
    close_deadline(c, cl);
    c->close_code = code;
    cl->q_bytes = c->q_bytes;
    c->close_soft = true;
    hd_conn_want_write(c);
}

void
hd_conn_release(hd_conn_t *c)
{
    hd_conn_unschedule(c);
    if (c->closing != NULL && c->closing->linger_fd > 0)
        close(c->closing->linger_fd);
    drop_queue(c);
    hd_free(c->q);
    c->q_cap = 0;
    hd_free(c->rx);
    hd_free(c->closing);
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
#define LINGER_MAX     1024
#define LINGER_SECONDS 2.0

typedef struct hd_linger {
    ev_io             io;
    ev_timer          tm;
    struct hd_linger *next, *prev;
} hd_linger_t;

static hd_linger_t *lingering;
static unsigned     nlingering;

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
    (void) loop;
    (void) revents;

    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(w->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0)
            continue;
        if (n < 0
            && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        linger_end((hd_linger_t *) w); /* EOF or error: done */
        return;
    }
}

static void
linger_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) revents;
    linger_end((hd_linger_t *) ((char *) w - offsetof(hd_linger_t, tm)));
}

/* Before the close frame: keep a duplicate of the socket (not read yet:
 * lws still owns the socket until it closes it). */
static void
linger_prepare(hd_conn_t *c)
{
    int           fd = lws_get_socket_fd(c->wsi);
    hd_closing_t *cl = closing_of(c, NULL);

    if (fd < 0 || cl->linger_fd > 0 || nlingering >= LINGER_MAX)
        return;
    cl->linger_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (cl->linger_fd < 0)
        cl->linger_fd = 0;
}

/* After lws closed its fd: read and drop until the client closes. */
void
hd_conn_linger(hd_conn_t *c)
{
    int          dfd = c->closing != NULL ? c->closing->linger_fd : 0;
    hd_linger_t *l;

    if (c->closing != NULL)
        c->closing->linger_fd = 0;
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

/*
 * Writing.
 *
 * A connection with something to send goes on the ready list, and just
 * before the loop waits for events again (an ev_prepare watcher) every
 * connection on it is written to directly: queued messages become frames
 * and go to the socket at once. Waiting for lws' writable callback
 * instead costs two epoll_ctl() calls and one more event per connection
 * per message - more than a third of a worker's time in a fan-out with
 * one message per frame. Only what the socket cannot take waits for
 * writable: lws keeps the part of a frame the kernel refused and asks for
 * the callback itself, and hd_conn_flush() goes on from there.
 *
 * A turn of the loop writes at most FRAMES_PER_TURN frames, and one
 * connection at most FRAMES_PER_CONN before it goes to the back of the
 * list: a fan-out backlog (10,000 subscribers, a few messages each) must
 * not keep the loop from Redis, new connections and timers for long - the
 * Redis heartbeat gives up after 1.5 s. While connections are left over,
 * an idle watcher keeps the loop from blocking.
 *
 * Whatever has to come from the writable callback still does: a close
 * (returning -1 there is how lws closes; and once lws or the peer started
 * one, nothing is written directly), a heartbeat ping, and every
 * write on a connection with permessage-deflate, whose compressor may
 * hold output for the next callback.
 *
 * batch.flush_delay_ms > 0 puts a connection that gets a push on the
 * delayed list instead, due that long after; the delay is the same for
 * all, so the list is in due order and one timer serves it. A reply, a
 * close or a ping moves the connection to the ready list at once (taking
 * its pushes along).
 */
enum {
    HD_W_IDLE = 0,
    HD_W_READY,
    HD_W_DELAYED
};

/* at ~5 us a frame, a turn of the loop spends at most ~10 ms writing */
#define FRAMES_PER_CONN 4
#define FRAMES_PER_TURN 2048

typedef struct {
    hd_conn_t *head, *tail;
} wlist_t;

static wlist_t    ready, delayed;
static ev_prepare write_w;
static ev_idle    more_w; /* active while ready outlives a turn */
static ev_timer   delay_w;

static void
wlist_push(wlist_t *l, hd_conn_t *c)
{
    c->wnext = NULL;
    c->wprev = l->tail;
    if (l->tail != NULL)
        l->tail->wnext = c;
    else
        l->head = c;
    l->tail = c;
}

static void
wlist_remove(wlist_t *l, hd_conn_t *c)
{
    if (c->wprev != NULL)
        c->wprev->wnext = c->wnext;
    else
        l->head = c->wnext;
    if (c->wnext != NULL)
        c->wnext->wprev = c->wprev;
    else
        l->tail = c->wprev;
    c->wnext = c->wprev = NULL;
}

void
hd_conn_unschedule(hd_conn_t *c)
{
    if (c->wstate == HD_W_READY)
        wlist_remove(&ready, c);
    else if (c->wstate == HD_W_DELAYED)
        wlist_remove(&delayed, c);
    c->wstate = HD_W_IDLE;
}

void
hd_conn_want_write(hd_conn_t *c)
{
    if (c->wsi == NULL || c->wstate == HD_W_READY)
        return;
    if (!c->established) {
        lws_callback_on_writable(c->wsi);
        return;
    }
    hd_conn_unschedule(c);
    c->wstate = HD_W_READY;
    wlist_push(&ready, c);
}

void
hd_conn_want_push(hd_conn_t *c)
{
    int delay_ms = hd_w.conf->batch_flush_delay_ms;

    if (delay_ms <= 0 || !c->established) {
        hd_conn_want_write(c);
        return;
    }
    if (c->wstate != HD_W_IDLE)
        return; /* already due, as soon or sooner */
    c->wstate = HD_W_DELAYED;
    /* monotonic: a step of the wall clock must not hold pushes */
    c->wdue = (uint32_t) (hd_mono_ms() + (uint64_t) delay_ms);
    wlist_push(&delayed, c);
    if (!ev_is_active(&delay_w)) {
        ev_timer_set(&delay_w, delay_ms / 1000., 0.);
        ev_timer_start(hd_w.loop, &delay_w);
    }
}

static void
delay_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    uint64_t   now = hd_mono_ms();
    hd_conn_t *c;
    (void) revents;

    /* (1 ms of slack: libev may wake a little before the due time) */
    /* due times are 32 bits of the clock, a second ahead at most:
     * compared modulo 2^32 */
    while ((c = delayed.head) != NULL
           && (int32_t) (c->wdue - (uint32_t) (now + 1)) <= 0) {
        hd_conn_unschedule(c);
        hd_conn_want_write(c);
    }
    if (delayed.head != NULL) {
        ev_timer_set(w,
                     (double) (uint32_t) (delayed.head->wdue - (uint32_t) now)
                         / 1000.,
                     0.);
        ev_timer_start(loop, w);
    }
}

/* One frame of what is queued: everything that fits batch.max_bytes and
 * batch.max_messages, or a single message larger than the batch alone.
 * Returns 0, or -EIO when the write failed (the connection is done). */
static int
write_frame(hd_conn_t *c)
{
    unsigned char *p = hd_w.wbuf + LWS_PRE, *start = p;
    uint32_t       n = 0;
    uint64_t       now = 0;
    size_t         len;
    int            wrote;
    size_t         max_bytes = (size_t) hd_w.conf->batch_max_bytes;
    uint32_t       max_msgs = (uint32_t) hd_w.conf->batch_max_messages;
    hd_msg_t      *first = c->q[c->q_head];

    if (first->len > max_bytes) {
        unsigned char *big = hd_malloc(LWS_PRE + first->len);
        memcpy(big + LWS_PRE, first->data, first->len);
        wrote = lws_write(c->wsi, big + LWS_PRE, first->len, LWS_WRITE_TEXT);
        free(big);
        n = 1;
        len = first->len;
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
        len = (size_t) (p - start);
        wrote = lws_write(c->wsi, start, len, LWS_WRITE_TEXT);
    }

    for (uint32_t i = 0; i < n; i++) {
        hd_msg_t *m = c->q[c->q_head];
        if (m->pub_ns != 0) {
            if (now == 0)
                now = hd_wall_ns();
            hd_ctr_inc(HD_C_MSG_DELIVERED);
            hd_hist_observe(HD_H_DELIVERY,
                            now > m->pub_ns ? now - m->pub_ns : 0);
        }
        c->q_bytes -= m->len;
        hd_w.queued_bytes -= m->len;
        hd_msg_unref(m);
        c->q_head = (c->q_head + 1) % c->q_cap;
        c->q_len--;
    }
    if (wrote < 0)
        return -EIO;
    hd_ctr_add(HD_C_BYTES_SENT, (uint64_t) len);
    return 0;
}

/* Up to max frames, while the socket takes them whole (lws keeps a
 * partial one and asks for writable itself). Returns the frames written,
 * or -EIO when a write failed. */
static int
write_frames(hd_conn_t *c, unsigned max)
{
    unsigned f = 0;

    while (f < max && c->q_len > 0) {
        int rc = write_frame(c);
        if (rc < 0)
            return rc;
        f++;
        if (lws_partial_buffered(c->wsi))
            break;
    }
    return (int) f;
}

/* What is still queued goes on a later turn - directly, while the socket
 * takes it. */
static void
write_rest(hd_conn_t *c)
{
    if (c->q_len > 0 && !lws_partial_buffered(c->wsi))
        hd_conn_want_write(c);
}

/* Returns the work done, in frames. */
static unsigned
write_now(hd_conn_t *c, unsigned budget)
{
    int n;

    /* (a close length: lws itself started a close - 1007, 1002 - or the
     * peer's close frame came in; no data may follow the close frame) */
    if (c->close_code != 0 || c->ping_due || c->deflate
        || c->peer_close_code != 0 || lws_get_close_length(c->wsi) != 0
        || lws_partial_buffered(c->wsi)) {
        lws_callback_on_writable(c->wsi);
        return 1;
    }
    if (c->q_len == 0)
        return 0;
    n = write_frames(c, budget < FRAMES_PER_CONN ? budget : FRAMES_PER_CONN);
    if (n < 0) {
        /* the socket is gone: close it now (this is not inside an lws
         * callback, and an async kill would wait for lws' next timer
         * pass); the peer sees no close frame anyway. c is freed. */
        c->close_code = HD_CLOSE_ABNORMAL;
        drop_queue(c);
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT,
                        LWS_TO_KILL_SYNC);
        return 1;
    }
    write_rest(c);
    return (unsigned) n;
}

static void
write_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    unsigned   budget = FRAMES_PER_TURN, n;
    hd_conn_t *c;
    (void) w;
    (void) revents;

    while (budget > 0 && (c = ready.head) != NULL) {
        wlist_remove(&ready, c);
        c->wstate = HD_W_IDLE;
        n = write_now(c, budget);
        budget -= n < budget ? n : budget;
    }
    if (ready.head != NULL && !ev_is_active(&more_w))
        ev_idle_start(loop, &more_w);
    else if (ready.head == NULL && ev_is_active(&more_w))
        ev_idle_stop(loop, &more_w);
}

static void
more_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void) loop;
    (void) w;
    (void) revents; /* write_cb does the work */
}

void
hd_conn_io_init(void)
{
    ev_prepare_init(&write_w, write_cb);
    ev_prepare_start(hd_w.loop, &write_w);
    ev_unref(hd_w.loop); /* never keeps the loop alive by itself */
    ev_idle_init(&more_w, more_cb);
    ev_init(&delay_w, delay_cb);
}

void
hd_conn_io_shutdown(void)
{
    ev_ref(hd_w.loop);
    ev_prepare_stop(hd_w.loop, &write_w);
    ev_idle_stop(hd_w.loop, &more_w);
    ev_timer_stop(hd_w.loop, &delay_w);
    while (ready.head != NULL)
        hd_conn_unschedule(ready.head);
    while (delayed.head != NULL)
        hd_conn_unschedule(delayed.head);
}

int
hd_conn_flush(hd_conn_t *c)
{
    if (c->close_code != 0 && (!c->close_soft || c->q_len == 0)) {
        c->close_sent = true; /* lws sends the frame and closes */
        linger_prepare(c);
        const char *r = c->closing != NULL ? c->closing->reason : "";
        lws_close_reason(c->wsi, (enum lws_close_status) c->close_code,
                         (unsigned char *) (uintptr_t) r, strlen(r));
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
        if (c->q_len > 0 || c->close_code != 0)
            lws_callback_on_writable(c->wsi);
        return 0;
    }
    if (c->q_len == 0)
        return 0;
    if (c->deflate) {
        /* one frame per callback: the compressor may keep part of it for
         * the next one */
        if (write_frame(c) < 0)
            return -1;
        if (c->q_len > 0 || c->close_code != 0)
            lws_callback_on_writable(c->wsi);
        return 0;
    }
    if (write_frames(c, FRAMES_PER_CONN) < 0)
        return -1;
    write_rest(c);
    if (c->close_code != 0)
        lws_callback_on_writable(c->wsi);
    return 0;
}

void
hd_conn_trim(hd_conn_t *c)
{
    if (c->q == NULL || c->q_len != 0 || c->wstate != HD_W_IDLE)
        return;
    hd_free(c->q);
    c->q = NULL;
    c->q_cap = 0;
    c->q_head = 0;
}
