/*
 * herald-bench: one load process. A single-threaded libev loop that opens
 * its share of the connections (subscribers first, then publishers) at the
 * ramp rate, authenticates and subscribes them, publishes on an open-loop
 * schedule once the parent says START, checks every push for missing and
 * duplicated offsets, and sends its counters and histograms back to the
 * parent over the control socket.
 *
 * The WebSocket client is deliberately small: one ev_io per connection,
 * reads go into one per-process scratch buffer and only a partial frame is
 * copied into the connection, writes go straight to the socket and only a
 * remainder is queued. An idle connection costs 168 bytes of bench state
 * (plus 32 per subscription) besides its kernel socket.
 *
 * Protocol with the parent (hb_bench.h): READY when every connection is
 * set up or failed; PROGRESS once a second; on START(t0) publish through
 * nsteps steps of warmup + duration each; PUBDONE with the highest offset
 * acknowledged per channel once every publish has its reply; on FINAL
 * (highest offset per channel over all processes) wait until every
 * subscription has reached it, count what is missing and send RESULT.
 */
#include "hb_bench.h"
#include "hb_line.h"
#include "hb_ws.h"

#include "hd_alloc.h"
#include "hd_jwt.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define SCRATCH      (256 * 1024)
#define MAX_FRAME    (64u * 1024 * 1024)
#define NTOKENS      256
#define ID_CONNECT   1
#define ID_SUB0      2      /* subscribe j has id ID_SUB0 + j */
#define ID_PUB0      100000 /* publish k has id ID_PUB0 + k */
#define HTTP_MAXPIPE 64

enum {
    ST_NEW = 0,
    ST_TCP,
    ST_UPGRADE,
    ST_AUTH,
    ST_SUB,
    ST_READY,
    ST_DONE
};
enum {
    K_SUB = 0,
    K_PUB_WS,
    K_PUB_HTTP
};
enum {
    PH_CONNECT = 0,
    PH_WAIT_START,
    PH_RUN,
    PH_ACKS,
    PH_WAIT_FINAL,
    PH_DRAIN,
    PH_END
};

typedef struct sub {
    uint32_t   chan;
    uint8_t    state; /* 0 pending, 1 live, 2 failed, 3 lost */
    hb_track_t t;
} sub_t;

typedef struct pub {
    uint32_t p;      /* global publisher index */
    uint64_t next_k; /* next message to send */
    uint64_t acked;  /* replies (result or error) */
    uint32_t
        fifo[HTTP_MAXPIPE]; /* HTTP: k (low 32 bits) of requests in flight */
    uint32_t fhead, fcount;
    uint64_t fk[HTTP_MAXPIPE];
} pub_t;

struct proc;

typedef struct conn {
    ev_io        io; /* first: the callback casts back */
    struct proc *P;
    uint32_t     g; /* global index among subscribers/publishers */
    uint8_t      kind, state, wactive, failed_setup;
    uint16_t     nsubs, pending;
    sub_t       *subs;
    pub_t       *pub;
    char        *accept; /* during the upgrade only */
    uint8_t     *rbuf;   /* a partial frame or HTTP response */
    uint32_t     rlen, rcap;
    uint8_t     *wbuf; /* what the socket did not take */
    uint32_t     wlen, woff, wcap;
    uint8_t     *msg; /* a fragmented message being reassembled */
    uint32_t     mlen, mcap;
    uint64_t     t_start; /* wall ns when connect() was called */
    uint64_t     t_sub;   /* wall ns when the subscribes were sent */
} conn_t;

typedef struct mark {
    uint64_t at; /* wall ns */
    int      step;
    int      what; /* 0 window start, 1 window end, 2 pub end */
} mark_t;

typedef struct proc {
    const hb_opts_t *o;
    uint32_t         idx;
    int              ctl;
    struct ev_loop  *loop;
    int              phase;

    conn_t  *conns;
    uint32_t nconns, nsubconns;
    uint32_t next_open, inflight, setup_done;
    uint64_t connect_start; /* mono ns */
    int      ready_sent;

    ev_io       ctl_w;
    ev_timer    ramp_w, tick_w, drain_w;
    ev_io       pub_w;   /* on pub_tfd */
    int         pub_tfd; /* absolute CLOCK_REALTIME timerfd */
    ev_periodic mark_w;
    mark_t      marks[2 * HB_MAX_STEPS + 1];
    int         nmarks, next_mark;
    uint64_t    step_cpu0[HB_MAX_STEPS];

    uint8_t *scratch;
    uint8_t *out;
    size_t   outcap, outlen;
    uint8_t *ctlbuf;
    size_t   ctllen, ctlcap;
    uint64_t rng;

    char    *tokens[NTOKENS];
    char     http_head[1536]; /* HTTP publish request head */
    int      http_head_len;
    char     pad[65536]; /* the "x" filler of the payload */
    uint32_t padlen;

    /* schedule */
    uint64_t t0, step_ns, warm_ns, pub_end;
    uint64_t kbase[HB_MAX_STEPS + 1]; /* per publisher, same for all */
    double   phase_ns[HB_MAX_STEPS];  /* per-publisher phase unit */
    double   ival_ns[HB_MAX_STEPS];
    uint64_t acks_deadline;
    int      stopped; /* the parent said STOP */
    uint64_t drain_deadline;

    int64_t *maxoff; /* per channel, acked by our pubs */
    int64_t *final;  /* per channel, from the parent */

    hb_result_t *res;
    size_t       res_size;
    hb_hist_t    prog_lat;
} proc_t;

static void io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_close(conn_t *c, int code, int count_close);
static void ramp_fill(proc_t *P);
static void pub_kick(proc_t *P);
static void check_ready(proc_t *P);
static void check_acks(proc_t *P);

/* ---------------------------------------------------------------- utils */

uint64_t
hb_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static uint64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

uint64_t
hb_cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t) ru.ru_utime.tv_sec + (uint64_t) ru.ru_stime.tv_sec)
        * 1000000000u
        + ((uint64_t) ru.ru_utime.tv_usec + (uint64_t) ru.ru_stime.tv_usec)
        * 1000u;
}

static uint64_t
rnd(proc_t *P)
{
    /* xorshift64*: masks and the uniform spread, not security */
    uint64_t x = P->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    P->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

void
hb_codes_add(hb_codes_t *t, uint32_t code, uint64_t n)
{
    for (uint32_t i = 0; i < t->n; i++) {
        if (t->code[i] == code) {
            t->count[i] += n;
            return;
        }
    }
    if (t->n < HB_MAX_CODES) {
        t->code[t->n] = code;
        t->count[t->n++] = n;
    } else {
        t->other += n;
    }
}

void
hb_codes_merge(hb_codes_t *dst, const hb_codes_t *src)
{
    for (uint32_t i = 0; i < src->n; i++)
        hb_codes_add(dst, src->code[i], src->count[i]);
    dst->other += src->other;
}

int
hb_msg_send(int fd, uint32_t type, const void *p, size_t len)
{
    hb_msghdr_t    h = { .type = type, .len = (uint32_t) len };
    const uint8_t *parts[2] = { (const uint8_t *) &h, p };
    size_t         lens[2] = { sizeof(h), len };

    for (int i = 0; i < 2; i++) {
        size_t off = 0;
        while (off < lens[i]) {
            ssize_t n = write(fd, parts[i] + off, lens[i] - off);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            off += (size_t) n;
        }
    }
    return 0;
}

static hb_counters_t *
C(proc_t *P)
{
    return &P->res->c;
}

/* Which measured step holds wall time t, or -1 (warmup, before, after). */
static int
step_of(const proc_t *P, uint64_t t)
{
    if (P->t0 == 0 || t < P->t0)
        return -1;
    uint64_t d = t - P->t0;
    uint64_t s = d / P->step_ns;
    if (s >= P->o->nsteps || d % P->step_ns < P->warm_ns)
        return -1;
    return (int) s;
}

/* ------------------------------------------------------------- schedule */

/*
 * Open-loop schedule, the same in every process: step s runs from
 * t0 + s * step_ns for step_ns; publisher p sends its j-th message of step
 * s at start_s + (p + j * P) / rate_s seconds, so P publishers together
 * send rate_s messages a second, evenly interleaved. Message k of a
 * publisher (counted over all steps) is therefore a pure function of k:
 * its intended time and channel are recomputed from the reply id, and
 * nothing per message is stored.
 */
static void
schedule_init(proc_t *P)
{
    const hb_opts_t *o = P->o;
    double           len_ns = (double) P->step_ns;

    P->kbase[0] = 0;
    for (uint32_t s = 0; s < o->nsteps; s++) {
        uint64_t n = 0;
        if (o->publishers > 0 && o->rates[s] > 0) {
            P->ival_ns[s] = 1e9 * o->publishers / o->rates[s];
            P->phase_ns[s] = 1e9 / o->rates[s];
            /* the same n for every publisher: use the last one's phase, so
             * no publisher runs past the step end */
            double ph = P->phase_ns[s] * (o->publishers - 1);
            if (ph < len_ns)
                n = (uint64_t) ceil((len_ns - ph) / P->ival_ns[s]);
        }
        P->kbase[s + 1] = P->kbase[s] + n;
    }
}

static uint64_t
intended(const proc_t *P, const pub_t *u, uint64_t k, int *step)
{
    uint32_t s = 0;
    while (s + 1 < P->o->nsteps && k >= P->kbase[s + 1])
        s++;
    if (step)
        *step = (int) s;
    return P->t0 + s * P->step_ns
        + (uint64_t) (P->phase_ns[s] * u->p
                      + P->ival_ns[s] * (double) (k - P->kbase[s]));
}

static uint32_t
chan_of(const proc_t *P, const pub_t *u, uint64_t k)
{
    return (uint32_t) ((u->p + k * P->o->publishers) % P->o->channels);
}

/* ---------------------------------------------------------------- write */

static void
want_write(conn_t *c, int on)
{
    if ((int) c->wactive == on)
        return;
    ev_io_stop(c->P->loop, &c->io);
    ev_io_set(&c->io, c->io.fd, EV_READ | (on ? EV_WRITE : 0));
    ev_io_start(c->P->loop, &c->io);
    c->wactive = (uint8_t) on;
}

/* Send len bytes: straight to the socket when nothing is queued, the rest
 * into wbuf. Returns 0, or -1 when the connection was closed. */
static int
conn_send(conn_t *c, const void *data, size_t len)
{
    proc_t *P = c->P;
    size_t  off = 0;

    if (c->wlen == c->woff) {
        c->wlen = c->woff = 0;
        while (off < len) {
            ssize_t n = write(c->io.fd, (const uint8_t *) data + off,
                              len - off);
            C(P)->writes++;
            if (n > 0) {
                off += (size_t) n;
                C(P)->bytes_tx += (uint64_t) n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            hb_codes_add(&P->res->errnos, (uint32_t) errno, 1);
            conn_close(c, 1006, 1);
            return -1;
        }
        if (off == len)
            return 0;
    }
    size_t rest = len - off;
    if (c->wcap - c->wlen < rest) {
        size_t need = c->wlen + rest;
        size_t cap = c->wcap ? c->wcap : 4096;
        while (cap < need)
            cap *= 2;
        c->wbuf = hd_realloc(c->wbuf, cap);
        c->wcap = (uint32_t) cap;
    }
    memcpy(c->wbuf + c->wlen, (const uint8_t *) data + off, rest);
    c->wlen += (uint32_t) rest;
    want_write(c, 1);
    return 0;
}

static void
flush_wbuf(conn_t *c)
{
    proc_t *P = c->P;

    while (c->woff < c->wlen) {
        ssize_t n = write(c->io.fd, c->wbuf + c->woff, c->wlen - c->woff);
        C(P)->writes++;
        if (n > 0) {
            c->woff += (uint32_t) n;
            C(P)->bytes_tx += (uint64_t) n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        hb_codes_add(&P->res->errnos, (uint32_t) errno, 1);
        conn_close(c, 1006, 1);
        return;
    }
    c->wlen = c->woff = 0;
    if (c->kind == K_SUB && c->wcap > 4096) {
        hd_free(c->wbuf);
        c->wcap = 0;
    }
    want_write(c, 0);
}

/* Append a masked frame carrying payload to P->out. */
static void
out_reserve(proc_t *P, size_t n)
{
    if (P->outcap - P->outlen >= n)
        return;
    size_t cap = P->outcap ? P->outcap : 65536;
    while (cap - P->outlen < n)
        cap *= 2;
    P->out = hd_realloc(P->out, cap);
    P->outcap = cap;
}

static void
out_frame(proc_t *P, unsigned op, const void *payload, size_t len)
{
    uint32_t mask = (uint32_t) rnd(P);

    out_reserve(P, len + HB_WS_MAX_HDR);
    P->outlen += hb_ws_frame_header(P->out + P->outlen, op, len, mask);
    memcpy(P->out + P->outlen, payload, len);
    hb_ws_mask(P->out + P->outlen, len, mask, 0);
    P->outlen += len;
}

static int
out_flush(conn_t *c)
{
    proc_t *P = c->P;
    int     r = conn_send(c, P->out, P->outlen);
    P->outlen = 0;
    return r;
}

/* --------------------------------------------------------------- closing */

static void
count_lost_subs(conn_t *c)
{
    for (uint16_t j = 0; j < c->nsubs; j++) {
        if (c->subs[j].state == 1) {
            c->subs[j].state = 3;
            C(c->P)->subs_lost++;
            C(c->P)->subs_live--;
        }
    }
}

/*
 * Close a connection. code is what the peer sent (or 1006 for a drop);
 * count_close says whether it was the peer's doing (our own closes at the
 * end of a run are not counted). A connection that had not reached READY
 * counts as a failed setup.
 */
static void
conn_close(conn_t *c, int code, int count_close)
{
    proc_t *P = c->P;

    if (c->state == ST_DONE || c->state == ST_NEW)
        return;
    if (count_close) {
        hb_codes_add(&P->res->closes, (uint32_t) code, 1);
        if (c->state == ST_READY) {
            C(P)->closes++;
            if (!c->failed_setup)
                C(P)->conn_open--;
        } else if (!c->failed_setup) {
            if (c->state == ST_TCP || c->state == ST_UPGRADE)
                C(P)->conn_fail_tcp++;
            else
                C(P)->conn_fail_closed++;
        }
    }
    int was_setup = c->state != ST_READY && !c->failed_setup;
    count_lost_subs(c);
    ev_io_stop(P->loop, &c->io);
    close(c->io.fd);
    c->state = ST_DONE;
    hd_free(c->rbuf);
    hd_free(c->wbuf);
    hd_free(c->msg);
    hd_free(c->accept);
    c->rlen = c->rcap = c->wlen = c->woff = c->wcap = c->mlen = c->mcap = 0;
    if (was_setup) {
        P->inflight--;
        P->setup_done++;
        check_ready(P);
        ramp_fill(P);
    }
}

/* A connection finished its setup (ok says whether it reached READY). */
static void
setup_finished(conn_t *c, int ok)
{
    proc_t  *P = c->P;
    uint64_t now = hb_wall_ns();

    P->inflight--;
    P->setup_done++;
    if (ok) {
        c->state = ST_READY;
        C(P)->conn_ready++;
        C(P)->conn_open++;
        hb_hist_add(&P->res->connect, now - c->t_start);
        if (now > P->res->last_ready_ns)
            P->res->last_ready_ns = now;
    } else {
        c->failed_setup = 1;
        c->state = ST_READY; /* keeps reading; counted as failed */
    }
    check_ready(P);
    ramp_fill(P);
}

/* ---------------------------------------------------------------- send */

/* Best-effort close frame written straight to the socket (never queued:
 * the connection is closed right after). Skipped when a partial frame is
 * still queued, as it would land in the middle of it. code 0: no code. */
static void
send_close_raw(conn_t *c, int code)
{
    uint8_t  fr[HB_WS_MAX_HDR + 2];
    uint32_t mask = (uint32_t) rnd(c->P);
    size_t   pl = code ? 2 : 0;
    size_t   h = hb_ws_frame_header(fr, HB_WS_OP_CLOSE, pl, mask);

    if (c->wlen > c->woff)
        return;
    fr[h] = (uint8_t) (code >> 8);
    fr[h + 1] = (uint8_t) code;
    hb_ws_mask(fr + h, pl, mask, 0);
    if (write(c->io.fd, fr, h + pl) < 0)
        return; /* the peer may be gone already: fine */
}

static void
send_command(conn_t *c, const char *text, size_t len)
{
    out_frame(c->P, HB_WS_OP_TEXT, text, len);
    out_flush(c);
}

static void
send_connect(conn_t *c)
{
    proc_t     *P = c->P;
    char       *buf;
    const char *tok = P->tokens[c->g % NTOKENS];
    int         n;

    buf = hd_malloc(strlen(tok) + 128);
    n = sprintf(
        buf, "{\"id\":%d,\"method\":\"connect\",\"params\":{\"token\":\"%s\"}}",
        ID_CONNECT, tok);
    send_command(c, buf, (size_t) n);
    free(buf);
    c->state = ST_AUTH;
}

static void
send_subscribes(conn_t *c)
{
    proc_t *P = c->P;
    size_t  cap = (size_t) c->nsubs * (sizeof(P->o->channel_prefix) + 96);
    char   *buf = hd_malloc(cap);
    size_t  n = 0;

    for (uint16_t j = 0; j < c->nsubs; j++) {
        n += (size_t) sprintf(
            buf + n,
            "%s{\"id\":%u,\"method\":\"subscribe\",\"params\":"
            "{\"channel\":\"%s%u\"}}",
            j ? "\n" : "", ID_SUB0 + j, P->o->channel_prefix, c->subs[j].chan);
    }
    c->pending = c->nsubs;
    c->state = ST_SUB;
    c->t_sub = hb_wall_ns();
    send_command(c, buf, n);
    free(buf);
}

/* The data of message k: intended time, sequence, publisher, padding up
 * to the payload size. Returns its length. */
static int
format_data(proc_t *P, char *buf, uint64_t t, uint64_t k, uint32_t p)
{
    int n = sprintf(buf, "{\"t\":%llu,\"s\":%llu,\"p\":%u",
                    (unsigned long long) t, (unsigned long long) k, p);
    if (P->o->payload > (uint32_t) n + 8) {
        uint32_t x = P->o->payload - (uint32_t) n - 8; /* ,"x":"" and } */
        if (x > P->padlen)
            x = P->padlen;
        n += sprintf(buf + n, ",\"x\":\"%.*s\"}", (int) x, P->pad);
    } else {
        buf[n++] = '}';
        buf[n] = '\0';
    }
    return n;
}

/* Send every message of publisher c that is due at now. */
static void
pub_send_due(conn_t *c, uint64_t now)
{
    proc_t  *P = c->P;
    pub_t   *u = c->pub;
    uint64_t kend = P->kbase[P->o->nsteps];
    char     data[70000], cmd[71000];
    int      sent = 0;

    while (u->next_k < kend) {
        int      s;
        uint64_t k = u->next_k;
        uint64_t t = intended(P, u, k, &s);
        if (t > now)
            break;
        if (c->kind == K_PUB_HTTP && u->fcount >= P->o->http_pipeline)
            break;
        format_data(P, data, t, k, u->p);
        uint32_t ch = chan_of(P, u, k);
        if (c->kind == K_PUB_WS) {
            int n = snprintf(cmd, sizeof(cmd),
                             "{\"id\":%llu,\"method\":\"publish\",\"params\":"
                             "{\"channel\":\"%s%u\",\"data\":%s}}",
                             (unsigned long long) (ID_PUB0 + k),
                             P->o->channel_prefix, ch, data);
            out_frame(P, HB_WS_OP_TEXT, cmd, (size_t) n);
        } else {
            int  n = snprintf(cmd, sizeof(cmd),
                              "{\"channel\":\"%s%u\",\"data\":%s}",
                              P->o->channel_prefix, ch, data);
            char hdr[64];
            int  hl = snprintf(hdr, sizeof(hdr), "Content-Length: %d\r\n\r\n",
                               n);
            out_reserve(P, (size_t) (P->http_head_len + hl + n));
            memcpy(P->out + P->outlen, P->http_head, (size_t) P->http_head_len);
            P->outlen += (size_t) P->http_head_len;
            memcpy(P->out + P->outlen, hdr, (size_t) hl);
            P->outlen += (size_t) hl;
            memcpy(P->out + P->outlen, cmd, (size_t) n);
            P->outlen += (size_t) n;
            u->fk[(u->fhead + u->fcount) % HTTP_MAXPIPE] = k;
            u->fcount++;
        }
        u->next_k++;
        sent++;
        C(P)->pubs_sent++;
        int ws = step_of(P, t);
        if (ws >= 0) {
            P->res->steps[ws].pubs++;
            hb_hist_add(&P->res->steps[ws].lag, now > t ? now - t : 0);
        }
    }
    if (sent)
        out_flush(c);
}

/* A publish got its reply: result (offset >= 0) or error. */
static void
pub_replied(conn_t *c, uint64_t k, int64_t offset, int errcode, uint64_t now)
{
    proc_t *P = c->P;
    pub_t  *u = c->pub;

    if (k >= u->next_k) {
        C(P)->proto_errors++;
        return;
    }
    u->acked++;
    if (errcode) {
        C(P)->pub_errors++;
        hb_codes_add(&P->res->errors, (uint32_t) errcode, 1);
    } else {
        C(P)->pubs_acked++;
        uint32_t ch = chan_of(P, u, k);
        if (offset > P->maxoff[ch])
            P->maxoff[ch] = offset;
        uint64_t t = intended(P, u, k, NULL);
        int      ws = step_of(P, t);
        if (ws >= 0) {
            P->res->steps[ws].acks++;
            hb_hist_add(&P->res->steps[ws].ack, now > t ? now - t : 0);
        }
    }
    if (P->phase == PH_ACKS)
        check_acks(P);
}

/* --------------------------------------------------------------- receive */

static sub_t *
find_sub(conn_t *c, const char *name, size_t len)
{
    const hb_opts_t *o = c->P->o;
    size_t           pl = strlen(o->channel_prefix);

    if (len <= pl || memcmp(name, o->channel_prefix, pl) != 0)
        return NULL;
    uint64_t idx = 0;
    for (size_t i = pl; i < len; i++) {
        if (name[i] < '0' || name[i] > '9' || idx > UINT32_MAX)
            return NULL;
        idx = idx * 10 + (uint64_t) (name[i] - '0');
    }
    for (uint16_t j = 0; j < c->nsubs; j++)
        if (c->subs[j].chan == idx)
            return &c->subs[j];
    return NULL;
}

/* Account offset o (or the gap [o, to]) on subscription s. */
static void
sub_offset(proc_t *P, sub_t *s, int64_t o, int64_t to, int gap)
{
    hb_track_counts_t n = { 0, 0, 0 };

    hb_track_push(&s->t, o, to, gap, &n);
    C(P)->missing += n.missing;
    C(P)->missing_gap += n.missing_gap;
    C(P)->duplicates += n.duplicates;
}

static void
handle_reply(conn_t *c, const hb_line_t *L, uint64_t now)
{
    proc_t *P = c->P;
    int     err = L->kind == HB_L_ERROR;

    if (L->id == ID_CONNECT && c->state == ST_AUTH) {
        if (err) {
            C(P)->conn_fail_auth++;
            hb_codes_add(&P->res->errors, (uint32_t) L->code, 1);
            setup_finished(c, 0);
            return;
        }
        if (c->kind == K_SUB && c->nsubs > 0)
            send_subscribes(c);
        else
            setup_finished(c, 1);
        return;
    }
    if (L->id >= ID_SUB0 && L->id < ID_SUB0 + c->nsubs && c->kind == K_SUB) {
        sub_t *s = &c->subs[L->id - ID_SUB0];
        if (s->state != 0) {
            C(P)->proto_errors++;
            return;
        }
        if (err || L->offset < 0) {
            s->state = 2;
            hb_codes_add(&P->res->errors, (uint32_t) L->code, 1);
        } else {
            hb_track_counts_t n = { 0, 0, 0 };
            s->state = 1;
            C(P)->subs_live++;
            hb_track_base(&s->t, L->offset, &n);
            C(P)->missing += n.missing;
            C(P)->duplicates += n.duplicates;
        }
        if (--c->pending == 0 && c->state == ST_SUB) {
            int ok = 1;
            for (uint16_t j = 0; j < c->nsubs; j++)
                if (c->subs[j].state != 1)
                    ok = 0;
            hb_hist_add(&P->res->subscribe, now - c->t_sub);
            if (!ok)
                C(P)->conn_fail_sub++;
            setup_finished(c, ok);
        }
        return;
    }
    if (L->id >= ID_PUB0 && c->kind == K_PUB_WS) {
        pub_replied(c, (uint64_t) (L->id - ID_PUB0), L->offset,
                    err ? L->code : 0, now);
        return;
    }
    if (err)
        hb_codes_add(&P->res->errors, (uint32_t) L->code, 1);
    C(P)->proto_errors++;
}

static void
handle_line(conn_t *c, const char *s, size_t len, uint64_t now)
{
    proc_t   *P = c->P;
    hb_line_t L;

    C(P)->lines_rx++;
    switch (hb_line_parse(s, len, &L)) {
    case HB_L_PUB:
    case HB_L_GAP: {
        sub_t *sb = find_sub(c, L.chan, L.chan_len);
        if (sb == NULL || sb->state == 2) {
            C(P)->unexpected++;
            return;
        }
        if (L.kind == HB_L_GAP) {
            sub_offset(P, sb, L.from, L.to, 1);
            return;
        }
        C(P)->deliveries++;
        sub_offset(P, sb, L.offset, 0, 0);
        if (L.t_ns > 0) {
            uint64_t t = (uint64_t) L.t_ns;
            uint64_t lat = now > t ? now - t : 0;
            int      ws = step_of(P, t);
            if (ws >= 0)
                hb_hist_add(&P->res->steps[ws].lat, lat);
            hb_hist_add(&P->prog_lat, lat);
        }
        int rs = step_of(P, now);
        if (rs >= 0)
            P->res->steps[rs].deliveries++;
        return;
    }
    case HB_L_RESULT:
    case HB_L_ERROR:
        handle_reply(c, &L, now);
        return;
    case HB_L_ERROR_NOID:
        C(P)->noid_errors++;
        hb_codes_add(&P->res->errors, (uint32_t) L.code, 1);
        return;
    default:
        if (len > 0)
            C(P)->proto_errors++;
        return;
    }
}

static void
handle_text(conn_t *c, const uint8_t *p, size_t len, uint64_t now)
{
    const char *s = (const char *) p, *e = s + len;

    while (s < e && c->state != ST_DONE) {
        const char *nl = memchr(s, '\n', (size_t) (e - s));
        const char *le = nl ? nl : e;
        if (le > s)
            handle_line(c, s, (size_t) (le - s), now);
        s = le + 1;
    }
}

/* One complete frame. Returns -1 when the connection is gone. */
static int
handle_frame(conn_t *c, const hb_ws_frame_t *f, uint64_t now)
{
    proc_t *P = c->P;

    C(P)->frames_rx++;
    switch (f->opcode) {
    case HB_WS_OP_TEXT:
    case HB_WS_OP_CONT:
        if (f->opcode == HB_WS_OP_TEXT && c->mlen == 0 && f->fin) {
            handle_text(c, f->payload, f->len, now);
            break;
        }
        if (f->opcode == HB_WS_OP_TEXT && c->mlen != 0) {
            C(P)->proto_errors++; /* new message inside a fragmented one */
            c->mlen = 0;
        }
        if (c->mcap - c->mlen < f->len) {
            size_t cap = c->mcap ? c->mcap : 4096;
            while (cap - c->mlen < f->len)
                cap *= 2;
            c->msg = hd_realloc(c->msg, cap);
            c->mcap = (uint32_t) cap;
        }
        memcpy(c->msg + c->mlen, f->payload, f->len);
        c->mlen += (uint32_t) f->len;
        if (f->fin) {
            handle_text(c, c->msg, c->mlen, now);
            if (c->state != ST_DONE) {
                c->mlen = 0;
                hd_free(c->msg);
                c->mcap = 0;
            }
        }
        break;
    case HB_WS_OP_PING:
        C(P)->pings_rx++;
        out_frame(P, HB_WS_OP_PONG, f->payload, f->len);
        out_flush(c);
        break;
    case HB_WS_OP_PONG:
        break;
    case HB_WS_OP_CLOSE: {
        int code = f->len >= 2 ? (f->payload[0] << 8) | f->payload[1] : 1005;
        send_close_raw(c, code == 1005 ? 0 : code);
        conn_close(c, code, 1);
        return -1;
    }
    default: /* binary: herald never sends it */
        C(P)->proto_errors++;
        break;
    }
    return c->state == ST_DONE ? -1 : 0;
}

/* Parse frames in buf; returns the bytes consumed, or -1 when closed. */
static long
handle_frames(conn_t *c, const uint8_t *buf, size_t len, uint64_t now)
{
    size_t off = 0;

    while (off < len) {
        hb_ws_frame_t f;
        long          n = hb_ws_parse(buf + off, len - off, MAX_FRAME, &f);
        if (n == 0)
            break;
        if (n < 0) {
            C(c->P)->proto_errors++;
            conn_close(c, 1002, 1);
            return -1;
        }
        if (handle_frame(c, &f, now) < 0)
            return -1;
        off += (size_t) n;
    }
    return (long) off;
}

/* HTTP publish responses: status line, headers, Content-Length body. */
static long
handle_http(conn_t *c, const uint8_t *buf, size_t len, uint64_t now)
{
    size_t off = 0;

    while (off < len) {
        const char *s = (const char *) buf + off;
        size_t      avail = len - off;
        const char *he = memmem(s, avail, "\r\n\r\n", 4);
        if (he == NULL)
            break;
        size_t hlen = (size_t) (he - s) + 4;
        long   clen = 0;
        for (const char *p = s; p < he;) {
            const char *eol = memmem(p, (size_t) (he + 2 - p), "\r\n", 2);
            if (eol == NULL)
                break;
            if (eol - p > 15 && strncasecmp(p, "content-length:", 15) == 0)
                clen = strtol(p + 15, NULL, 10);
            p = eol + 2;
        }
        if (avail < hlen + (size_t) clen)
            break;
        int    status = avail > 12 ? atoi(s + 9) : 0;
        pub_t *u = c->pub;
        if (u->fcount == 0) {
            C(c->P)->proto_errors++;
        } else {
            uint64_t k = u->fk[u->fhead];
            u->fhead = (u->fhead + 1) % HTTP_MAXPIPE;
            u->fcount--;
            hb_line_t L;
            hb_line_parse(he + 4, (size_t) clen, &L);
            if (status == 200 && L.kind == HB_L_RESULT)
                pub_replied(c, k, L.offset, 0, now);
            else
                pub_replied(c, k, -1, status ? status : 1, now);
        }
        off += hlen + (size_t) clen;
    }
    /* the pipeline has room again: send what is due and re-arm the timer
     * (pub_kick skips a publisher whose pipeline is full) */
    if (off > 0 && c->P->phase == PH_RUN)
        pub_kick(c->P);
    return (long) off;
}

static void
upgrade_done(conn_t *c)
{
    proc_t  *P = c->P;
    uint64_t now = hb_wall_ns();

    hb_hist_add(&P->res->handshake, now - c->t_start);
    hd_free(c->accept);
    if (c->kind == K_PUB_HTTP) {
        c->state = ST_READY;
        setup_finished(c, 1);
        return;
    }
    send_connect(c);
}

/* Stash the unconsumed tail of data (not in rbuf) into rbuf. */
static void
keep_tail(conn_t *c, const uint8_t *data, size_t len)
{
    if (c->rcap < len) {
        size_t cap = 4096;
        while (cap < len)
            cap *= 2;
        c->rbuf = hd_realloc(c->rbuf, cap);
        c->rcap = (uint32_t) cap;
    }
    memmove(c->rbuf, data, len);
    c->rlen = (uint32_t) len;
}

static void
on_readable(conn_t *c)
{
    proc_t  *P = c->P;
    uint8_t *buf;
    size_t   cap, have = c->rlen;

    /* a partial frame continues in rbuf; otherwise read into scratch */
    if (have > 0) {
        if (c->rcap - have < 65536) {
            size_t ncap = c->rcap * 2;
            while (ncap - have < 65536)
                ncap *= 2;
            c->rbuf = hd_realloc(c->rbuf, ncap);
            c->rcap = (uint32_t) ncap;
        }
        buf = c->rbuf;
        cap = c->rcap;
    } else {
        buf = P->scratch;
        cap = SCRATCH;
    }
    ssize_t n = read(c->io.fd, buf + have, cap - have);
    C(P)->reads++;
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n < 0)
            hb_codes_add(&P->res->errnos, (uint32_t) errno, 1);
        conn_close(c, 1006, 1);
        return;
    }
    C(P)->bytes_rx += (uint64_t) n;
    size_t   len = have + (size_t) n;
    uint64_t now = hb_wall_ns();
    long     used;

    if (c->state == ST_UPGRADE) {
        int  status;
        long h = hb_ws_check_response((const char *) buf, len, c->accept,
                                      &status);
        if (h == 0) {
            if (buf != c->rbuf)
                keep_tail(c, buf, len);
            else
                c->rlen = (uint32_t) len;
            return;
        }
        if (h < 0) {
            C(P)->conn_fail_ws++;
            hb_codes_add(&P->res->errors, (uint32_t) (status ? status : 999),
                         1);
            c->failed_setup = 1;
            P->inflight--;
            P->setup_done++;
            c->state = ST_AUTH; /* so that conn_close does not recount */
            conn_close(c, 0, 0);
            check_ready(P);
            ramp_fill(P);
            return;
        }
        upgrade_done(c);
        if (c->state == ST_DONE)
            return;
        used = h;
        long m = c->kind == K_PUB_HTTP
            ? handle_http(c, buf + h, len - (size_t) h, now)
            : handle_frames(c, buf + h, len - (size_t) h, now);
        if (m < 0)
            return;
        used += m;
    } else if (c->kind == K_PUB_HTTP) {
        used = handle_http(c, buf, len, now);
    } else {
        used = handle_frames(c, buf, len, now);
    }
    if (used < 0 || c->state == ST_DONE)
        return;
    size_t rest = len - (size_t) used;
    if (rest == 0) {
        c->rlen = 0;
        if (c->rcap > 65536 || c->kind == K_SUB) {
            hd_free(c->rbuf);
            c->rcap = 0;
        }
    } else if (buf == c->rbuf) {
        memmove(c->rbuf, c->rbuf + used, rest);
        c->rlen = (uint32_t) rest;
    } else {
        keep_tail(c, buf + used, rest);
    }
}

static void
on_connected(conn_t *c)
{
    proc_t   *P = c->P;
    int       err = 0;
    socklen_t sl = sizeof(err);

    getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &sl);
    if (err != 0) {
        hb_codes_add(&P->res->errnos, (uint32_t) err, 1);
        conn_close(c, 1006, 0);
        C(P)->conn_fail_tcp++;
        return;
    }
    c->state = ST_UPGRADE;
    want_write(c, 0);
    if (c->kind == K_PUB_HTTP) {
        /* no upgrade: the TCP connection is the publisher */
        c->state = ST_UPGRADE;
        uint64_t now = hb_wall_ns();
        hb_hist_add(&P->res->handshake, now - c->t_start);
        setup_finished(c, 1);
        return;
    }
    uint8_t  nonce[16];
    uint64_t r1 = rnd(P), r2 = rnd(P);
    memcpy(nonce, &r1, 8);
    memcpy(nonce + 8, &r2, 8);
    char key[HB_WS_KEY_LEN + 1];
    c->accept = hd_malloc(HB_WS_ACCEPT_LEN + 1);
    hb_ws_make_key(nonce, key, c->accept);
    char req[2048];
    int  n = hb_ws_request(req, sizeof(req), P->o->host, P->o->path, key,
                           "herald.v1");
    conn_send(c, req, (size_t) n);
}

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_t *c = (conn_t *) w;

    (void) loop;
    if (c->state == ST_TCP) {
        if (revents & (EV_WRITE | EV_READ))
            on_connected(c);
        return;
    }
    if (revents & EV_READ) {
        on_readable(c);
        if (c->state == ST_DONE)
            return;
    }
    if ((revents & EV_WRITE) && c->wlen > c->woff)
        flush_wbuf(c);
}

/* ------------------------------------------------------------ connecting */

static void
conn_open(proc_t *P, conn_t *c)
{
    const hb_opts_t *o = P->o;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    C(P)->conn_attempts++;
    P->inflight++;
    c->t_start = hb_wall_ns();
    if (c->t_start < P->res->first_connect_ns)
        P->res->first_connect_ns = c->t_start;
    if (fd < 0) {
        hb_codes_add(&P->res->errnos, (uint32_t) errno, 1);
        goto fail;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (o->nsrc > 0) {
        struct sockaddr_in sa = { .sin_family = AF_INET,
                                  .sin_addr = o->src[c->g % o->nsrc] };
        /* pick the port at connect() with the full 4-tuple, not at bind():
         * otherwise each source address is capped at ~28k ports in total */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
            hb_codes_add(&P->res->errnos, (uint32_t) errno, 1);
            close(fd);
            goto fail;
        }
    }
    if (connect(fd, (const struct sockaddr *) &o->dst, sizeof(o->dst)) < 0
        && errno != EINPROGRESS) {
        hb_codes_add(&P->res->errnos, (uint32_t) errno, 1);
        close(fd);
        goto fail;
    }
    c->state = ST_TCP;
    ev_io_init(&c->io, io_cb, fd, EV_WRITE);
    c->wactive = 1;
    ev_io_start(P->loop, &c->io);
    return;

fail:
    C(P)->conn_fail_tcp++;
    c->state = ST_DONE;
    c->failed_setup = 1;
    P->inflight--;
    P->setup_done++;
}

static void
ramp_fill(proc_t *P)
{
    const hb_opts_t *o = P->o;
    uint64_t         allowed = P->nconns;

    if (P->phase != PH_CONNECT)
        return;
    if (o->ramp > 0) {
        double per = o->ramp / o->procs;
        double el = (double) (mono_ns() - P->connect_start) / 1e9;
        allowed = (uint64_t) (per * el) + 1;
        if (allowed > P->nconns)
            allowed = P->nconns;
    }
    while (P->next_open < allowed && P->inflight < o->inflight)
        conn_open(P, &P->conns[P->next_open++]);
    check_ready(P);
}

static void
ramp_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    proc_t *P = w->data;
    (void) loop;
    (void) revents;
    ramp_fill(P);
    if (P->next_open >= P->nconns)
        ev_timer_stop(P->loop, w);
}

static void
check_ready(proc_t *P)
{
    if (P->ready_sent || P->setup_done < P->nconns)
        return;
    P->ready_sent = 1;
    P->phase = PH_WAIT_START;
    ev_timer_stop(P->loop, &P->ramp_w);
    C(P)->cpu_ns = hb_cpu_ns(); /* the connect phase's cost */
    hb_msg_send(P->ctl, HB_MSG_READY, C(P), sizeof(hb_counters_t));
}

/* ---------------------------------------------------------------- timers */

static void
send_progress(proc_t *P)
{
    hb_progress_t *pr = hd_malloc(sizeof(*pr));

    C(P)->cpu_ns = hb_cpu_ns();
    pr->c = *C(P);
    pr->closes = P->res->closes;
    pr->lat = P->prog_lat;
    hb_hist_init(&P->prog_lat);
    hb_msg_send(P->ctl, HB_MSG_PROGRESS, pr, sizeof(*pr));
    free(pr);
}

static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    proc_t  *P = w->data;
    uint64_t now = hb_wall_ns();
    (void) loop;
    (void) revents;

    if (P->phase == PH_CONNECT) {
        uint64_t limit = (uint64_t) (P->o->conn_timeout * 1e9);
        for (uint32_t i = 0; i < P->next_open; i++) {
            conn_t *c = &P->conns[i];
            if (c->state > ST_NEW && c->state < ST_READY
                && now - c->t_start > limit) {
                C(P)->conn_fail_timeout++;
                c->failed_setup = 1;
                P->inflight--;
                P->setup_done++;
                c->state = ST_AUTH;
                conn_close(c, 0, 0);
            }
        }
        double el = (double) (mono_ns() - P->connect_start) / 1e9;
        if (el > P->o->connect_timeout) {
            /* give up on connections never opened */
            while (P->next_open < P->nconns) {
                P->conns[P->next_open++].failed_setup = 1;
                C(P)->conn_fail_timeout++;
                P->setup_done++;
            }
        }
        ramp_fill(P);
        check_ready(P);
    }
    send_progress(P);
}

static void
pub_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    proc_t  *P = w->data;
    uint64_t n;
    (void) loop;
    (void) revents;
    if (read(P->pub_tfd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        return;
    pub_kick(P);
}

/*
 * Wake at wall time at_ns (0: disarm). A timerfd, not an ev_timer: libev
 * sleeps in epoll_wait() with millisecond timeouts rounded up, which would
 * add up to ~2 ms of send lag to every latency (it is measured from the
 * intended send time). A timerfd fires within the timer slack, which the
 * process sets to 1 us.
 */
static void
pub_arm(proc_t *P, uint64_t at_ns)
{
    struct itimerspec its;

    memset(&its, 0, sizeof(its));
    if (at_ns) {
        its.it_value.tv_sec = (time_t) (at_ns / 1000000000u);
        its.it_value.tv_nsec = (long) (at_ns % 1000000000u);
    }
    timerfd_settime(P->pub_tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Send what is due on every publisher and arm the timer for the next. */
static void
pub_kick(proc_t *P)
{
    uint64_t now = hb_wall_ns();
    uint64_t next = UINT64_MAX;
    uint64_t kend = P->kbase[P->o->nsteps];

    if (P->phase != PH_RUN)
        return;
    for (uint32_t i = P->nsubconns; i < P->nconns; i++) {
        conn_t *c = &P->conns[i];
        if (c->state != ST_READY || c->failed_setup)
            continue;
        pub_send_due(c, now);
        if (c->state != ST_READY)
            continue;
        pub_t *u = c->pub;
        if (u->next_k < kend
            && !(c->kind == K_PUB_HTTP && u->fcount >= P->o->http_pipeline)) {
            uint64_t t = intended(P, u, u->next_k, NULL);
            if (t < next)
                next = t;
        }
    }
    /* a time in the past fires at once */
    pub_arm(P, next != UINT64_MAX ? next : 0);
}

static void
check_acks(proc_t *P)
{
    uint64_t outstanding = 0;

    for (uint32_t i = P->nsubconns; i < P->nconns; i++) {
        conn_t *c = &P->conns[i];
        if (c->pub == NULL || c->state != ST_READY)
            continue;
        outstanding += c->pub->next_k - c->pub->acked;
    }
    if (outstanding > 0 && hb_wall_ns() < P->acks_deadline)
        return;
    C(P)->pubs_unacked = outstanding;
    P->phase = PH_WAIT_FINAL;
    hb_msg_send(P->ctl, HB_MSG_PUBDONE, P->maxoff,
                sizeof(int64_t) * P->o->channels);
}

static void
finish(proc_t *P)
{
    hb_counters_t *k = C(P);

    /* tail: offsets after the last one each live subscription received */
    k->behind = 0;
    for (uint32_t i = 0; i < P->nsubconns; i++) {
        conn_t *c = &P->conns[i];
        for (uint16_t j = 0; j < c->nsubs; j++) {
            sub_t *s = &c->subs[j];
            if (s->state != 1)
                continue;
            int64_t f = P->final[s->chan];
            if (f > s->t.base)
                k->expected += (uint64_t) (f - s->t.base);
            int64_t behind = hb_track_behind(&s->t, f);
            if (behind > 0) {
                k->missing += (uint64_t) behind;
                k->missing_tail += (uint64_t) behind;
                k->behind++;
            }
        }
    }
    for (uint32_t i = P->nsubconns; i < P->nconns && !P->stopped; i++) {
        conn_t  *c = &P->conns[i];
        uint64_t left;
        if (c->pub == NULL || c->pub->next_k >= P->kbase[P->o->nsteps])
            continue;
        left = P->kbase[P->o->nsteps] - c->pub->next_k;
        if (c->state == ST_READY && !c->failed_setup)
            k->pubs_backlog += left; /* HTTP pipeline full at the end */
        else
            k->pubs_unsent += left;
    }
    k->cpu_ns = hb_cpu_ns();
    hb_msg_send(P->ctl, HB_MSG_RESULT, P->res, P->res_size);
    P->phase = PH_END;
    for (uint32_t i = 0; i < P->nconns; i++) {
        conn_t *c = &P->conns[i];
        if (c->state == ST_DONE || c->state == ST_NEW)
            continue;
        if (c->kind != K_PUB_HTTP && c->state >= ST_AUTH)
            send_close_raw(c, 1000);
        conn_close(c, 1000, 0);
    }
    ev_break(P->loop, EVBREAK_ALL);
}

static int
all_caught_up(proc_t *P)
{
    for (uint32_t i = 0; i < P->nsubconns; i++) {
        conn_t *c = &P->conns[i];
        for (uint16_t j = 0; j < c->nsubs; j++) {
            sub_t *s = &c->subs[j];
            if (s->state != 1)
                continue;
            if (hb_track_behind(&s->t, P->final[s->chan]) > 0)
                return 0;
        }
    }
    return 1;
}

static void
drain_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    proc_t *P = w->data;
    (void) loop;
    (void) revents;

    if (P->phase == PH_ACKS) {
        check_acks(P);
    } else if (P->phase == PH_DRAIN) {
        if (all_caught_up(P) || hb_wall_ns() >= P->drain_deadline) {
            ev_timer_stop(P->loop, w);
            finish(P);
        }
    }
}

static void
mark_arm(proc_t *P)
{
    ev_periodic_stop(P->loop, &P->mark_w);
    if (P->next_mark >= P->nmarks)
        return;
    ev_periodic_set(&P->mark_w, (double) P->marks[P->next_mark].at / 1e9, 0, 0);
    ev_periodic_start(P->loop, &P->mark_w);
}

/* No more sends: wait for the replies of what was sent, then PUBDONE. */
static void
publishing_over(proc_t *P, uint64_t now)
{
    /* the end mark may fire up to a millisecond early: send what is due
     * up to the end of the schedule first (unless told to STOP) */
    if (!P->stopped) {
        uint64_t upto = now > P->pub_end ? now : P->pub_end;
        for (uint32_t i = P->nsubconns; i < P->nconns; i++) {
            conn_t *c = &P->conns[i];
            if (c->pub != NULL && c->state == ST_READY && !c->failed_setup)
                pub_send_due(c, upto);
        }
    }
    P->phase = PH_ACKS;
    pub_arm(P, 0);
    ev_periodic_stop(P->loop, &P->mark_w);
    P->acks_deadline = now + (uint64_t) (P->o->drain * 1e9);
    ev_timer_set(&P->drain_w, 0.01, 0.01);
    ev_timer_start(P->loop, &P->drain_w);
    check_acks(P);
}

static void
mark_cb(struct ev_loop *loop, ev_periodic *w, int revents)
{
    proc_t  *P = w->data;
    uint64_t now = hb_wall_ns();
    (void) loop;
    (void) revents;

    while (P->next_mark < P->nmarks
           && P->marks[P->next_mark].at <= now + 1000000) {
        mark_t  *m = &P->marks[P->next_mark++];
        uint64_t cpu = hb_cpu_ns();
        if (m->what == 0) {
            P->step_cpu0[m->step] = cpu;
            P->res->steps[m->step].cpu_marks = 1;
        } else if (m->what == 1) {
            P->res->steps[m->step].cpu_ns = cpu - P->step_cpu0[m->step];
            P->res->steps[m->step].cpu_marks++;
        } else {
            publishing_over(P, now);
        }
    }
    if (P->phase == PH_RUN)
        mark_arm(P);
}

/* ---------------------------------------------------------------- control */

static void
on_start(proc_t *P, uint64_t t0)
{
    const hb_opts_t *o = P->o;

    P->t0 = t0;
    P->step_ns = (uint64_t) ((o->warmup + o->duration) * 1e9);
    P->warm_ns = (uint64_t) (o->warmup * 1e9);
    P->pub_end = t0 + o->nsteps * P->step_ns;
    schedule_init(P);
    P->nmarks = 0;
    for (uint32_t s = 0; s < o->nsteps; s++) {
        P->marks[P->nmarks++] = (mark_t){ t0 + s * P->step_ns + P->warm_ns,
                                          (int) s, 0 };
        P->marks[P->nmarks++] = (mark_t){ t0 + (s + 1) * P->step_ns, (int) s,
                                          1 };
    }
    P->marks[P->nmarks++] = (mark_t){ P->pub_end, 0, 2 };
    P->next_mark = 0;
    mark_arm(P);
    P->phase = PH_RUN;
    /* first sends at t0 */
    pub_arm(P, t0);
}

static void
ctl_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    proc_t *P = w->data;
    (void) loop;
    (void) revents;

    if (P->ctlcap - P->ctllen < 65536) {
        P->ctlcap = P->ctlcap ? P->ctlcap * 2 : 131072;
        P->ctlbuf = hd_realloc(P->ctlbuf, P->ctlcap);
    }
    ssize_t n = read(P->ctl, P->ctlbuf + P->ctllen, P->ctlcap - P->ctllen);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        /* the parent is gone: stop */
        ev_break(P->loop, EVBREAK_ALL);
        P->phase = PH_END;
        return;
    }
    P->ctllen += (size_t) n;
    while (P->ctllen >= sizeof(hb_msghdr_t)) {
        hb_msghdr_t h;
        memcpy(&h, P->ctlbuf, sizeof(h));
        if (P->ctllen < sizeof(h) + h.len)
            break;
        const uint8_t *body = P->ctlbuf + sizeof(h);
        if (h.type == HB_MSG_START && h.len == sizeof(uint64_t)) {
            uint64_t t0;
            memcpy(&t0, body, sizeof(t0));
            on_start(P, t0);
        } else if (h.type == HB_MSG_STOP && P->phase == PH_RUN) {
            P->stopped = 1;
            publishing_over(P, hb_wall_ns());
        } else if (h.type == HB_MSG_FINAL
                   && h.len == sizeof(int64_t) * P->o->channels) {
            memcpy(P->final, body, h.len);
            P->phase = PH_DRAIN;
            P->drain_deadline = hb_wall_ns() + (uint64_t) (P->o->drain * 1e9);
            ev_timer_set(&P->drain_w, 0.01, 0.02);
            ev_timer_start(P->loop, &P->drain_w);
            if (all_caught_up(P)) {
                ev_timer_stop(P->loop, &P->drain_w);
                finish(P);
            }
        }
        size_t used = sizeof(h) + h.len;
        memmove(P->ctlbuf, P->ctlbuf + used, P->ctllen - used);
        P->ctllen -= used;
        if (P->phase == PH_END)
            return;
    }
}

/* ------------------------------------------------------------------ setup */

static void
assign_subs(proc_t *P, conn_t *c)
{
    const hb_opts_t *o = P->o;

    c->nsubs = (uint16_t) o->subs_per_conn;
    if (c->nsubs == 0)
        return;
    c->subs = hd_calloc(c->nsubs, sizeof(sub_t));
    uint64_t st = o->seed ^ (0x9E3779B97F4A7C15ULL * (c->g + 1));
    for (uint16_t j = 0; j < c->nsubs; j++) {
        sub_t *s = &c->subs[j];
        hb_track_init(&s->t);
        if (o->spread == HB_SPREAD_RR) {
            s->chan = (uint32_t) (((uint64_t) c->g * o->subs_per_conn + j)
                                  % o->channels);
            continue;
        }
        for (;;) { /* uniform, distinct within the connection */
            st ^= st >> 12;
            st ^= st << 25;
            st ^= st >> 27;
            uint32_t ch = (uint32_t) ((st * 0x2545F4914F6CDD1DULL)
                                      % o->channels);
            int      dup = 0;
            for (uint16_t q = 0; q < j; q++)
                dup |= c->subs[q].chan == ch;
            if (!dup) {
                s->chan = ch;
                break;
            }
        }
    }
}

static void
make_tokens(proc_t *P)
{
    int64_t exp = (int64_t) time(NULL) + 86400;

    for (int i = 0; i < NTOKENS; i++) {
        char claims[256];
        snprintf(claims, sizeof(claims),
                 "{\"sub\":\"bench-%u-%d\",\"exp\":%lld}", P->idx, i,
                 (long long) exp);
        P->tokens[i] = hd_jwt_sign(claims, P->o->secret, strlen(P->o->secret));
        if (P->tokens[i] == NULL) {
            fprintf(stderr, "herald-bench: hd_jwt_sign() failed\n");
            exit(2);
        }
    }
}

int
hb_load_run(const hb_opts_t *o, uint32_t idx, int ctl)
{
    proc_t  *P = hd_calloc(1, sizeof(*P));
    uint32_t lo = 0, hi = 0, npub = 0;
    uint32_t pfirst, pstep; /* publishers pfirst, pfirst + pstep, ... */

    /*
     * Processes 0..procs-1 hold the subscribers (a contiguous block each);
     * with pub_procs > 0 the publishers live in processes of their own, so
     * that their send times never queue behind a burst of deliveries.
     */
    if (idx < o->procs) {
        lo = (uint32_t) ((uint64_t) o->connections * idx / o->procs);
        hi = (uint32_t) ((uint64_t) o->connections * (idx + 1) / o->procs);
        pfirst = o->pub_procs ? o->publishers : idx;
        pstep = o->procs;
    } else {
        pfirst = idx - o->procs;
        pstep = o->pub_procs;
    }

    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    P->o = o;
    P->idx = idx;
    P->ctl = ctl;
    P->rng = (o->seed ^ (0xD1B54A32D192ED03ULL * (idx + 1))) | 1;
    P->loop = ev_loop_new(EVFLAG_AUTO | EVBACKEND_EPOLL);
    if (P->loop == NULL) {
        fprintf(stderr, "herald-bench: ev_loop_new() failed\n");
        return 2;
    }
    for (uint32_t p = pfirst; p < o->publishers; p += pstep)
        npub++;
    P->nsubconns = hi - lo;
    P->nconns = P->nsubconns + npub;
    P->conns = hd_calloc(P->nconns ? P->nconns : 1, sizeof(conn_t));
    for (uint32_t i = 0; i < P->nsubconns; i++) {
        conn_t *c = &P->conns[i];
        c->P = P;
        c->g = lo + i;
        c->kind = K_SUB;
        assign_subs(P, c);
    }
    for (uint32_t i = 0; i < npub; i++) {
        conn_t *c = &P->conns[P->nsubconns + i];
        c->P = P;
        c->pub = hd_calloc(1, sizeof(pub_t));
        c->pub->p = pfirst + i * pstep;
        c->g = o->connections + c->pub->p;
        c->kind = o->via == HB_VIA_HTTP ? K_PUB_HTTP : K_PUB_WS;
    }
    P->res_size = sizeof(hb_result_t) + o->nsteps * sizeof(hb_step_stats_t);
    P->res = hd_calloc(1, P->res_size);
    P->res->nsteps = o->nsteps;
    P->res->first_connect_ns = UINT64_MAX;
    hb_hist_init(&P->res->connect);
    hb_hist_init(&P->res->handshake);
    hb_hist_init(&P->res->subscribe);
    for (uint32_t s = 0; s < o->nsteps; s++) {
        hb_hist_init(&P->res->steps[s].lat);
        hb_hist_init(&P->res->steps[s].ack);
        hb_hist_init(&P->res->steps[s].lag);
    }
    hb_hist_init(&P->prog_lat);
    P->maxoff = hd_calloc(o->channels, sizeof(int64_t));
    P->final = hd_calloc(o->channels, sizeof(int64_t));
    P->scratch = hd_malloc(SCRATCH);
    memset(P->pad, 'x', sizeof(P->pad));
    P->padlen = sizeof(P->pad) - 1;
    P->http_head_len = snprintf(P->http_head, sizeof(P->http_head),
                                "POST /api/publish HTTP/1.1\r\nHost: %s\r\n"
                                "Authorization: apikey %s\r\n"
                                "Content-Type: application/json\r\n",
                                o->host, o->api_key);
    if (o->via == HB_VIA_WS || o->connections > 0)
        make_tokens(P);

    ev_io_init(&P->ctl_w, ctl_cb, ctl, EV_READ);
    P->ctl_w.data = P;
    ev_io_start(P->loop, &P->ctl_w);
    ev_timer_init(&P->ramp_w, ramp_cb, 0.002, 0.002);
    P->ramp_w.data = P;
    ev_timer_init(&P->tick_w, tick_cb, 1.0, 1.0);
    P->tick_w.data = P;
    P->pub_tfd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
    if (P->pub_tfd < 0) {
        fprintf(stderr, "herald-bench: timerfd_create() failed: %s\n",
                strerror(errno));
        return 2;
    }
    prctl(PR_SET_TIMERSLACK, 1000UL);
    ev_io_init(&P->pub_w, pub_cb, P->pub_tfd, EV_READ);
    P->pub_w.data = P;
    ev_io_start(P->loop, &P->pub_w);
    ev_timer_init(&P->drain_w, drain_cb, 0.01, 0.01);
    P->drain_w.data = P;
    ev_periodic_init(&P->mark_w, mark_cb, 0, 0, 0);
    P->mark_w.data = P;

    P->phase = PH_CONNECT;
    P->connect_start = mono_ns();
    ev_timer_start(P->loop, &P->tick_w);
    if (P->nconns > 0)
        ev_timer_start(P->loop, &P->ramp_w);
    ramp_fill(P);
    check_ready(P);
    ev_run(P->loop, 0);

    if (P->phase != PH_END) {
        fprintf(stderr, "herald-bench: load process %u stopped in phase %d\n",
                idx, P->phase);
        return 3;
    }
    /* no frees: the process exits now and the OS reclaims everything */
    return 0;
}
