/*
 * Worker process: the loop, accepting on the slot's inherited listen
 * socket, the control socket, signals and draining.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "hd_alloc.h"
#include "hd_auth.h"
#include "hd_backend.h"
#include "hd_ctl.h"
#include "hd_hash.h"
#include "hd_log.h"
#include "hd_lwsalloc.h"
#include "hd_metrics.h"
#include "hd_chan.h"
#include "hd_cluster.h"
#include "hd_presence.h"
#include "hd_proc.h"
#include "hd_pubsub.h"
#include "hd_script.h"
#include "hd_redis.h"
#include "hd_time.h"
#include "hd_worker.h"
#include "hd_admit.h"
#include "hd_worker_int.h"
#include "hd_proto.h"
#include "hd_wsguard.h"
#include "hd_httpgate.h"
#include "hd_proxyin.h"
#include "hd_realip.h"

#define ACCEPT_BATCH 64
#define DRAIN_TICK_S 0.02

hd_worker_t hd_w;

/* Drain state beyond hd_w's: see HD_DRAIN_KEEP_ACCEPTING in hd_ctl.h. */
static struct {
    bool     keep_accepting;
    uint64_t grace_ms;       /* exit only after this long without an accept */
    uint64_t last_accept_ms; /* last accept while draining */
    bool     exit_now;       /* HD_CTL_EXIT, SIGQUIT: leave at once */
} D;

#define READY_WAIT_MS 1000
#define READY_POLL_S  0.005

static ev_timer ready_w;
static unsigned ready_generation;
static uint64_t ready_deadline_ms;

static void send_ctl(uint32_t type);

static void
ready_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) revents;

    if (!(hd_redis_cmd_up() && hd_redis_sub_up())
        && hd_mono_ms() < ready_deadline_ms)
        return;
    ev_timer_stop(loop, w);
    if (!hd_w.draining) /* told to drain while starting: stay DRAINING */
        hd_shm_slot_set_state(hd_w.slot, HD_SLOT_RUNNING);
    /* logged before READY, so the log shows it before whatever the master
     * does on READY (e.g. draining the worker this one replaces) */
    hd_log_info("worker started (generation %u)%s", ready_generation,
                hd_redis_cmd_up() && hd_redis_sub_up() ? ""
                                                       : ", Redis not yet up");
    send_ctl(HD_CTL_READY);
}

/* lws writes its own log lines; route them through ours */
static void
worker_cmd_up(unsigned shard)
{
    hd_script_cmd_up(shard); /* scripts first: they are pipelined ahead */
    hd_chan_cmd_up(shard);
    if (shard == 0) /* the node registry and control channel live there */
        hd_cluster_cmd_up();
}

static void
worker_sub_up(unsigned shard)
{
    if (shard == 0)
        hd_cluster_sub_up();
    hd_chan_redis_up(shard);
}

static void
worker_sub_down(unsigned shard)
{
    if (shard == 0)
        hd_cluster_sub_down();
    hd_chan_redis_down(shard);
}

/* Control channels first: they are few and never client channels. */
static void
worker_message(const char *chan, size_t chan_len, const char *data, size_t len)
{
    if (!hd_cluster_message(chan, chan_len, data, len))
        hd_chan_dispatch(chan, chan_len, data, len);
}

static void
worker_confirmed(const char *chan, size_t chan_len, bool sub)
{
    if (!hd_cluster_confirmed(chan, chan_len, sub))
        hd_chan_confirmed(chan, chan_len, sub);
}

static void
lws_log_bridge(int level, const char *line)
{
    enum hd_log_level l = HD_LOG_DEBUG;

    if (level & LLL_ERR)
        l = HD_LOG_WARN; /* lws "errors" are mostly peers misbehaving */
    else if (level & LLL_WARN)
        l = HD_LOG_INFO;
    hd_log_write_raw(l, "lws", line);
}

static void
send_ctl(uint32_t type)
{
    hd_ctl_msg_t m = { .type = type };
    (void) send(hd_w.ctl_fd, &m, sizeof(m), MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void
accept_stop(void)
{
    for (unsigned i = 0; i < hd_w.nlisten; i++)
        ev_io_stop(hd_w.loop, &hd_w.accept_w[i]);
}

static void
accept_start(void)
{
    for (unsigned i = 0; i < hd_w.nlisten; i++)
        ev_io_start(hd_w.loop, &hd_w.accept_w[i]);
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    size_t li = (size_t) (uintptr_t) w->data; /* conf->listens[li] */
    (void) loop;
    (void) revents;

    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t               slen = sizeof(ss);
        int                     fd, one = 1;

        fd = accept4(w->fd, (struct sockaddr *) &ss, &slen,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS
                || errno == ENOMEM) {
                /* out of fds: stop accepting for a moment rather than
                 * spinning; the queue stays in the kernel */
                hd_log_warn("accept4() failed: %s; pausing accept for 100 ms",
                            strerror(errno));
                accept_stop();
                ev_timer_again(hd_w.loop, &hd_w.accept_retry_w);
                return;
            }
            hd_log_error("accept4() failed: %s", strerror(errno));
            return;
        }
        if (hd_w.draining)
            D.last_accept_ms = hd_mono_ms(); /* keeps a draining worker on */
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (li < hd_w.conf->nlistens && hd_w.conf->listens[li].proxy_protocol) {
            /* a connection still owing its PROXY header holds a count of
             * the node limit and of its peer's per-IP limit like any
             * other before its handshake (the client's address replaces
             * the peer's once the header is in: hd_worker_adopt()) */
            if (hd_admit_accept(fd, (struct sockaddr *) &ss) < 0)
                continue; /* over a limit: 503 sent, closed */
            hd_proxyin_start(fd, (struct sockaddr *) &ss, slen);
        } else {
            hd_worker_adopt(fd, (struct sockaddr *) &ss, hd_mono_ns());
        }
    }
}

void
hd_worker_adopt(int fd, const struct sockaddr *client, uint64_t accepted_ns)
{
    hd_realip_set(fd, client);
    if (hd_admit_accept(fd, client) < 0)
        return; /* over a limit: 503 sent, closed */
    hd_ctr_inc(HD_C_CONN_ACCEPTED);
    if (fd < hd_w.accept_ns_cap)
        hd_w.accept_ns[fd] = accepted_ns;
    hd_wsguard_open(fd);
    hd_httpgate_open(fd);
    struct lws *wsi = lws_adopt_socket_vhost(hd_w.vhost, fd);
    if (wsi == NULL) {
        /* lws closed the fd */
        hd_admit_failed(fd);
        hd_reject_inc(HD_REJ_HANDSHAKE);
        hd_log_warn("lws_adopt_socket_vhost() failed");
    } else {
        hd_admit_adopted(wsi, fd);
    }
}

static void
accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) revents;
    ev_timer_stop(loop, w);
    if (!hd_w.draining || D.keep_accepting)
        accept_start();
}

/*
 * May a draining worker exit now? When it has no clients left, no
 * handshake under way and, if it keeps accepting, its listen queue has
 * been quiet for the grace period; or when the window is over, whatever
 * is left.
 *
 * A handshake under way is a connection we accepted whose request has
 * not come yet (or not whole, or its PROXY header). Its client did
 * nothing wrong: exiting would close it without an answer, a reset
 * handshake for the client. That is what an upgrade's hand-over did to
 * the connections an old worker accepted just before it was told to
 * drain (issue #20). Waiting for them is bounded by handshake_ms and the
 * window; once upgraded they are closed with the drain code at once.
 */
static bool
drain_done(uint64_t now)
{
    uint64_t quiet_since;

    if (D.exit_now)
        return true;
    if (now - hd_w.drain_start_ms >= hd_w.drain_window_ms)
        return true;
    if (hd_w.nconns > 0 || hd_w.nhttp > 0)
        return false; /* HTTP: answer what was asked (hd_api.c) */
    if (hd_admit_pending() || hd_proxyin_pending())
        return false;
    if (!D.keep_accepting)
        return true;
    quiet_since = D.last_accept_ms > hd_w.drain_start_ms ? D.last_accept_ms
                                                         : hd_w.drain_start_ms;
    return now - quiet_since >= D.grace_ms;
}

/*
 * Close the clients spread over the first half of the drain window, so a
 * restart does not send every client back at the same instant; the second
 * half lets close handshakes finish. At the end of the window, go anyway.
 *
 * Clients accepted during the drain (KEEP_ACCEPTING, or a handshake that
 * was under way) are closed as soon as their handshake completes
 * (hd_ws.c), so they count as "closing" here and do not shift the pace
 * for the clients that were there when the drain began.
 */
static void
drain_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    uint64_t now = hd_mono_ms(), elapsed = now - hd_w.drain_start_ms;
    uint64_t spread = hd_w.drain_window_ms / 2, target, closing = 0;
    (void) w;
    (void) revents;

    if (drain_done(now)) {
        if (hd_w.nconns > 0 || hd_admit_pending() || hd_proxyin_pending())
            hd_log_warn("drain window over with %llu clients left%s",
                        (unsigned long long) hd_w.nconns,
                        hd_admit_pending() || hd_proxyin_pending()
                            ? " and handshakes under way (reset)"
                            : "");
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    target = spread == 0 || elapsed >= spread
        ? hd_w.drain_total
        : hd_w.drain_total * elapsed / spread + 1;

    for (hd_conn_t *c = hd_w.conns; c != NULL; c = c->next) {
        if (c->close_code != 0) {
            closing++;
            continue;
        }
        if (hd_w.drain_total + closing >= target + hd_w.nconns)
            break;
        hd_conn_close(c, hd_w.drain_code,
                      hd_w.drain_code == HD_CLOSE_GOING_AWAY
                          ? "server shutting down"
                          : "server restarting");
        closing++;
    }
}

/*
 * Start draining: close clients with code over window_ms (see
 * drain_tick_cb). flags and grace_ms as in HD_CTL_DRAIN. A second drain
 * request (a shutdown during a reload's drain) keeps the first one's code
 * and pace but may only make it end sooner.
 */
static void
start_drain(uint16_t code, uint64_t window_ms, uint32_t flags,
            uint64_t grace_ms)
{
    if (hd_w.draining) {
        uint64_t end = hd_w.drain_start_ms + hd_w.drain_window_ms;
        uint64_t nend = hd_mono_ms() + window_ms;
        if (nend < end)
            hd_w.drain_window_ms = nend - hd_w.drain_start_ms;
        if (grace_ms < D.grace_ms)
            D.grace_ms = grace_ms;
        return;
    }
    hd_w.draining = true;
    hd_w.drain_code = code;
    hd_w.drain_start_ms = hd_mono_ms();
    hd_w.drain_window_ms = window_ms;
    hd_w.drain_total = hd_w.nconns;
    D.keep_accepting = (flags & HD_DRAIN_KEEP_ACCEPTING) != 0;
    D.grace_ms = grace_ms;
    D.last_accept_ms = 0;
    if (!D.keep_accepting) {
        /* a replacement accepts from the same socket from now on */
        accept_stop();
        ev_timer_stop(hd_w.loop, &hd_w.accept_retry_w);
    }
    hd_shm_slot_set_state(hd_w.slot, HD_SLOT_DRAINING);
    hd_log_info("draining %llu clients with close code %u over %llu ms%s",
                (unsigned long long) hd_w.nconns, code,
                (unsigned long long) window_ms,
                D.keep_accepting ? ", still accepting" : "");
    ev_timer_init(&hd_w.drain_w, drain_tick_cb, 0., DRAIN_TICK_S);
    ev_timer_start(hd_w.loop, &hd_w.drain_w);
}

static uint64_t
default_drain_window(void)
{
    return (uint64_t) hd_w.conf->shutdown_ms * 8 / 10;
}

/*
 * A reload changed the log settings: the master applied them and tells
 * us, so that turning on debug (or moving the file) by reload reaches the
 * workers too. The same rules as in the master: on failure the old
 * destination stays.
 */
static void
apply_log(hd_ctl_log_msg_t *l)
{
    int rc;

    l->file[sizeof(l->file) - 1] = '\0';
    rc = hd_log_configure((enum hd_log_level) l->level,
                          (enum hd_log_format) l->format,
                          l->file[0] ? l->file : NULL);
    if (rc < 0)
        hd_log_error("reload: cannot apply the log settings (%s): %s; "
                     "keeping the old ones",
                     l->file[0] ? l->file : "(stderr)", strerror(-rc));
    else
        hd_log_debug("log settings applied: level %s",
                     hd_log_level_name((enum hd_log_level) l->level));
}

static void
ctl_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    union {
        hd_ctl_msg_t     m;
        hd_ctl_log_msg_t l;
    } u;
    hd_ctl_msg_t m;
    ssize_t      n;
    (void) w;
    (void) revents;

    for (;;) {
        /* a packet may carry one fd (HD_CTL_JWKS) */
        union {
            struct cmsghdr h;
            char           b[CMSG_SPACE(sizeof(int))];
        } cbuf;
        struct iovec    iov = { &u, sizeof(u) };
        struct msghdr   mh = { .msg_iov = &iov,
                               .msg_iovlen = 1,
                               .msg_control = cbuf.b,
                               .msg_controllen = sizeof(cbuf.b) };
        struct cmsghdr *cm;
        int             fd = -1;

        n = recvmsg(hd_w.ctl_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        cm = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
        if (cm != NULL && cm->cmsg_level == SOL_SOCKET
            && cm->cmsg_type == SCM_RIGHTS
            && cm->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(&fd, CMSG_DATA(cm), sizeof(int));
        if (fd >= 0 && ((size_t) n != sizeof(u.m) || u.m.type != HD_CTL_JWKS)) {
            close(fd);
            fd = -1;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            n = 0;
        }
        if (n == 0) {
            /* the master is gone: nobody will reap or respawn us */
            hd_log_warn("master went away; draining");
            ev_io_stop(loop, &hd_w.ctl_w);
            start_drain(HD_CLOSE_GOING_AWAY, default_drain_window(),
                        HD_DRAIN_KEEP_ACCEPTING, 0);
            return;
        }
        if (u.m.type == HD_CTL_LOG) {
            if ((size_t) n == sizeof(u.l))
                apply_log(&u.l);
            continue;
        }
        if ((size_t) n != sizeof(m))
            continue;
        m = u.m;
        switch (m.type) {
        case HD_CTL_DRAIN:
            start_drain((uint16_t) m.close_code, m.window_ms, m.flags,
                        m.grace_ms);
            break;
        case HD_CTL_EXIT:
            D.exit_now = true;
            ev_break(loop, EVBREAK_ALL);
            break;
        case HD_CTL_JWKS:
            if (fd >= 0)
                hd_auth_jwks_fd(fd);
            break;
        default:
            hd_log_warn("unknown control message %u", m.type);
        }
    }
}

static void
signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void) revents;
    switch (w->signum) {
    case SIGTERM:
    case SIGINT:
        /* the master drives shutdown; a signal is the fallback path (and a
         * terminal's ^C reaches the whole process group) */
        start_drain(HD_CLOSE_GOING_AWAY, default_drain_window(),
                    HD_DRAIN_KEEP_ACCEPTING, 0);
        break;
    case SIGQUIT:
        D.exit_now = true;
        ev_break(loop, EVBREAK_ALL);
        break;
    case SIGUSR1:
        (void) hd_log_reopen();
        break;
    default:
        break; /* SIGHUP: the master reloads, not us */
    }
}

static int
create_lws(void)
{
    struct lws_context_creation_info info;
    void                            *loops[1] = { hd_w.loop };
    int                              levels = LLL_ERR | LLL_WARN;

    lws_set_log_level(levels, lws_log_bridge);
    hd_lwsalloc_init(); /* handshake header tables outside the heap */

    memset(&info, 0, sizeof(info));
    info.options = LWS_SERVER_OPTION_LIBEV | LWS_SERVER_OPTION_VALIDATE_UTF8;
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = hd_ws_protocols;
    info.foreign_loops = loops;
    info.gid = (gid_t) -1;
    info.uid = (uid_t) -1;
    info.vhost_name = "default";
    /*
     * No lws validity timers: herald runs its own heartbeat (hd_ws.c). lws
     * re-inserts a connection's validity timer into one sorted list on
     * every frame it receives - O(connections) per frame, which showed as
     * 70% of a worker's CPU at 7k connections.
     */
    static const lws_retry_bo_t no_validity = { .secs_since_valid_ping = 0,
                                                .secs_since_valid_hangup = 0 };
    info.retry_and_idle_policy = &no_validity;
    if (hd_w.conf->compression) {
        static const struct lws_extension exts[] = {
            { "permessage-deflate", lws_extension_callback_pm_deflate,
              "permessage-deflate; client_no_context_takeover" },
            { NULL, NULL, NULL }
        };
        info.extensions = exts;
    }
    info.server_string = "herald";
    info.count_threads = 1;
    info.timeout_secs = (unsigned) (hd_w.conf->handshake_ms + 999) / 1000;
    info.timeout_secs_ah_idle = info.timeout_secs;

    hd_w.lws = lws_create_context(&info);
    if (hd_w.lws == NULL) {
        hd_log_error("lws_create_context() failed");
        return -EIO; /* lws does not say why */
    }
    hd_w.vhost = lws_get_vhost_by_name(hd_w.lws, "default");
    if (hd_w.vhost == NULL) {
        hd_log_error("lws_get_vhost_by_name() found no vhost");
        return -ENOENT;
    }
    return 0;
}

static void
stop_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) w;
    (void) revents;
    ev_break(loop, EVBREAK_ALL);
}

static void
shutdown_lws(void)
{
    accept_stop();
    hd_proxyin_shutdown();
    ev_io_stop(hd_w.loop, &hd_w.ctl_w);
    ev_timer_stop(hd_w.loop, &hd_w.drain_w);
    ev_timer_stop(hd_w.loop, &hd_w.accept_retry_w);
    ev_timer_stop(hd_w.loop, &hd_w.heartbeat_w);
    ev_signal_stop(hd_w.loop, &hd_w.sigterm_w);
    ev_signal_stop(hd_w.loop, &hd_w.sigint_w);
    ev_signal_stop(hd_w.loop, &hd_w.sigquit_w);
    ev_signal_stop(hd_w.loop, &hd_w.sighup_w);
    ev_signal_stop(hd_w.loop, &hd_w.sigusr1_w);
    if (hd_w.lws != NULL) {
        /* with a foreign loop, lws tears its watchers down through the
         * loop: let it run briefly; a timer bounds it, since a watcher lws
         * leaves behind would otherwise keep ev_run() blocked for ages */
        ev_timer stop_w;
        lws_context_destroy(hd_w.lws);
        ev_timer_init(&stop_w, stop_cb, 0.2, 0.);
        ev_timer_start(hd_w.loop, &stop_w);
        ev_run(hd_w.loop, 0);
        ev_timer_stop(hd_w.loop, &stop_w);
        hd_w.lws = NULL;
        if (hd_lwsalloc_in_use() == 0)
            hd_lwsalloc_shutdown();
    }
}

void
hd_worker_main(const hd_worker_args_t *a)
{
    struct rlimit rl;
    int           keep[HD_LISTEN_MAX + 2];
    size_t        nkeep = 0;

    memset(&hd_w, 0, sizeof(hd_w));
    memset(&D, 0, sizeof(D));
    hd_w.id = a->worker_id;
    hd_w.shm_idx = a->shm_idx;
    hd_w.generation = a->generation;
    hd_w.conf = a->conf;
    hd_w.shm = a->shm;
    hd_w.slot = hd_shm_slot(a->shm, a->shm_idx);
    hd_w.nlisten = a->nlisten;
    for (unsigned i = 0; i < a->nlisten; i++)
        hd_w.listen_fds[i] = a->listen_fds[i];
    hd_w.ctl_fd = a->ctl_fd;

    hd_log_set_role("worker", (int) a->worker_id);
    hd_hash_reseed(); /* a key of our own, not one inherited over fork */
    hd_proc_title_set("herald: worker %u", a->worker_id);
    (void) prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);

    /* hold nothing of the master's but our own sockets and the log */
    for (unsigned i = 0; i < a->nlisten; i++)
        keep[nkeep++] = a->listen_fds[i];
    keep[nkeep++] = a->ctl_fd;
    if (hd_log_fd() >= 0)
        keep[nkeep++] = hd_log_fd();
    hd_proc_close_fds_except(keep, nkeep);

    (void) hd_shm_protect_master_part(a->shm);
    hd_metrics_bind(hd_w.slot);
    hd_shm_slot_set_pid(a->shm, a->shm_idx, getpid());

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        hd_w.accept_ns_cap = (int) rl.rlim_cur;
    else
        hd_w.accept_ns_cap = 65536;
    hd_w.accept_ns = hd_calloc((size_t) hd_w.accept_ns_cap, sizeof(uint64_t));
    hd_w.wbuf = hd_malloc(LWS_PRE + (size_t) a->conf->batch_max_bytes);
    (void) hd_wsguard_init(hd_w.accept_ns_cap);
    if (hd_httpgate_init(hd_w.accept_ns_cap) < 0)
        hd_log_warn("cannot map the HTTP request gate: pipelined API "
                    "requests will not be answered");
    hd_w.limits = a->limits;
    hd_w.lease = a->lease;
    if (hd_admit_init(hd_w.accept_ns_cap) < 0
        || hd_realip_init(hd_w.accept_ns_cap) < 0) {
        hd_log_error("cannot map the admission table");
        _exit(HD_EXIT_FATAL);
    }

    hd_w.loop = ev_default_loop(EVBACKEND_EPOLL | EVFLAG_NOENV);
    if (hd_w.loop == NULL) {
        hd_log_error("ev_default_loop() failed");
        _exit(HD_EXIT_FATAL);
    }

    ev_signal_init(&hd_w.sigterm_w, signal_cb, SIGTERM);
    ev_signal_init(&hd_w.sigint_w, signal_cb, SIGINT);
    ev_signal_init(&hd_w.sigquit_w, signal_cb, SIGQUIT);
    ev_signal_init(&hd_w.sighup_w, signal_cb, SIGHUP);
    ev_signal_init(&hd_w.sigusr1_w, signal_cb, SIGUSR1);
    ev_signal_start(hd_w.loop, &hd_w.sigterm_w);
    ev_signal_start(hd_w.loop, &hd_w.sigint_w);
    ev_signal_start(hd_w.loop, &hd_w.sigquit_w);
    ev_signal_start(hd_w.loop, &hd_w.sighup_w);
    ev_signal_start(hd_w.loop, &hd_w.sigusr1_w);
    signal(SIGPIPE, SIG_IGN);

    if (create_lws() < 0)
        _exit(HD_EXIT_FATAL);
    hd_auth_init(a->conf);
    hd_backend_init();
    hd_pubsub_init();
    hd_chan_init(hd_w.loop, &hd_proto_chan_hooks);
    hd_cluster_init();
    hd_presence_init();
    hd_conn_io_init();
    {
        static const hd_redis_hooks_t hooks = {
            .sub_up = worker_sub_up,
            .sub_down = worker_sub_down,
            .message = worker_message,
            .subscribed = worker_confirmed,
            .cmd_up = worker_cmd_up,
        };
        hd_redis_start(&hooks);
    }

    for (unsigned i = 0; i < hd_w.nlisten; i++) {
        ev_io_init(&hd_w.accept_w[i], accept_cb, hd_w.listen_fds[i], EV_READ);
        hd_w.accept_w[i].data = (void *) (uintptr_t) i;
    }
    accept_start();
    ev_init(&hd_w.accept_retry_w, accept_retry_cb);
    hd_w.accept_retry_w.repeat = 0.1;
    ev_io_init(&hd_w.ctl_w, ctl_cb, hd_w.ctl_fd, EV_READ);
    ev_io_start(hd_w.loop, &hd_w.ctl_w);
    ev_timer_init(&hd_w.heartbeat_w, hd_ws_heartbeat_cb,
                  HD_HEARTBEAT_PERIOD_MS / 1000.,
                  HD_HEARTBEAT_PERIOD_MS / 1000.);
    ev_timer_start(hd_w.loop, &hd_w.heartbeat_w);
    hd_overload_start();

    /* READY once Redis is up (or READY_WAIT_S passed): a reload drains the
     * worker this one replaces on READY, and /health counts RUNNING
     * workers' Redis, so a replacement that reported READY before its
     * Redis connections were up made every replacing reload a 503 */
    ready_generation = a->generation;
    ready_deadline_ms = hd_mono_ms() + READY_WAIT_MS;
    ev_timer_init(&ready_w, ready_cb, 0., READY_POLL_S);
    ev_timer_start(hd_w.loop, &ready_w);

    /* The loop ends on EXIT/SIGQUIT or when a drain is done; a client's
     * close (hd_ws.c) also breaks it when the last one goes, which is too
     * early for a drain that must keep accepting: go round again then. */
    for (;;) {
        ev_run(hd_w.loop, 0);
        if (!hd_w.draining || drain_done(hd_mono_ms()))
            break;
    }

    hd_log_info("worker exiting");
    /* before anything below runs the loop again (the node registry's
     * leave waits for Redis): a connection accepted now would only be
     * reset by shutdown_lws(); left in the queue, a worker still serving
     * the socket takes it (issue 20: an upgrade's orphaned workers) */
    accept_stop();
    ev_timer_stop(hd_w.loop, &hd_w.accept_retry_w);
    hd_presence_shutdown();
    hd_cluster_shutdown();
    hd_overload_stop();
    hd_redis_stop();
    hd_conn_io_shutdown();
    shutdown_lws();
    hd_chan_shutdown();
    hd_conn_linger_shutdown();
    hd_admit_shutdown();
    hd_backend_shutdown();
    hd_auth_shutdown();
    ev_loop_destroy(hd_w.loop);
    hd_free(hd_w.accept_ns);
    hd_free(hd_w.wbuf);
    hd_wsguard_shutdown();
    hd_httpgate_shutdown();
    for (unsigned i = 0; i < hd_w.nlisten; i++)
        close(hd_w.listen_fds[i]);
    close(hd_w.ctl_fd);
    exit(0);
}
