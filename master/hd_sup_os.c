/*
 * The supervisor's real seam (hd_sup_ops.h): system calls and libevent.
 * Nothing here decides anything; hd_supervisor.c does.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "hd_master.h"
#include "hd_net.h"
#include "hd_proc.h"
#include "hd_reuseport.h"
#include "hd_sup_ops.h"
#include "hd_time.h"

static pid_t
os_fork_worker(const hd_worker_args_t *a, int master_ctl_fd)
{
    sigset_t old;
    pid_t    pid;
    int      err;

    hd_proc_block_all(&old);
    pid = fork();
    if (pid == 0) {
        hd_worker_args_t args = *a;
        close(master_ctl_fd);
        hd_proc_reset_signals();
        hd_worker_main(&args);
    }
    err = errno;
    hd_proc_restore_mask(&old);
    return pid < 0 ? -err : pid;
}

static int
os_kill(pid_t pid, int sig)
{
    return kill(pid, sig) == 0 ? 0 : -errno;
}

static pid_t
os_reap(int *status, double *cpu_s)
{
    struct rusage ru;
    pid_t         pid = wait4(-1, status, WNOHANG, &ru);

    if (pid <= 0)
        return 0;
    *cpu_s = (double) ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
        + (double) ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    return pid;
}

static int
os_ctl_send(int fd, const hd_ctl_msg_t *m)
{
    ssize_t n = send(fd, m, sizeof(*m), MSG_NOSIGNAL | MSG_DONTWAIT);

    if (n == (ssize_t) sizeof(*m))
        return 0;
    return n < 0 ? -errno : -EIO;
}

static int
os_ctl_send_log(int fd, const hd_ctl_log_msg_t *m)
{
    ssize_t n = send(fd, m, sizeof(*m), MSG_NOSIGNAL | MSG_DONTWAIT);

    if (n == (ssize_t) sizeof(*m))
        return 0;
    return n < 0 ? -errno : -EIO;
}

static int
os_ctl_recv(int fd, hd_ctl_msg_t *m)
{
    for (;;) {
        ssize_t n = recv(fd, m, sizeof(*m), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EPIPE; /* the worker closed its end */
        if ((size_t) n == sizeof(*m))
            return 1;
        /* a short message: skip it */
    }
}

typedef struct os_cb {
    hd_sup_timer_cb *cb;
    void            *arg;
    struct event    *ev;
} os_cb_t;

static void
os_event_cb(evutil_socket_t fd, short what, void *arg)
{
    os_cb_t *c = arg;
    (void) fd;
    (void) what;
    c->cb(c->arg);
}

static void *
os_ctl_watch(int fd, hd_sup_timer_cb *cb, void *arg)
{
    os_cb_t *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->cb = cb;
    c->arg = arg;
    c->ev = event_new(hd_m.base, fd, EV_READ | EV_PERSIST, os_event_cb, c);
    event_add(c->ev, NULL);
    return c;
}

static void
os_ctl_unwatch(void *w)
{
    os_cb_t *c = w;

    if (c == NULL)
        return;
    event_free(c->ev);
    free(c);
}

static int
os_listen(const hd_listen_t *l, const char **what)
{
    return hd_net_listen(l->address, l->port, l->backlog, true, l->ipv6_only,
                         what);
}

static void
os_close(int fd)
{
    close(fd);
}

/* sk_ack_backlog of a listener: connections the kernel accepted and we
 * did not yet */
static int
os_queued(int fd)
{
    struct tcp_info ti;
    socklen_t       len = sizeof(ti);

    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        return -errno;
    return (int) ti.tcpi_unacked;
}

static hd_sup_timer_t *
os_timer_new(hd_sup_timer_cb *cb, void *arg)
{
    os_cb_t *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->cb = cb;
    c->arg = arg;
    c->ev = evtimer_new(hd_m.base, os_event_cb, c);
    return (hd_sup_timer_t *) c;
}

static void
os_timer_add(hd_sup_timer_t *t, uint64_t ms)
{
    os_cb_t       *c = (os_cb_t *) t;
    struct timeval tv = { (time_t) (ms / 1000),
                          (suseconds_t) (ms % 1000) * 1000 };

    evtimer_add(c->ev, &tv);
}

static void
os_timer_del(hd_sup_timer_t *t)
{
    evtimer_del(((os_cb_t *) t)->ev);
}

static void
os_timer_free(hd_sup_timer_t *t)
{
    os_ctl_unwatch(t);
}

static void
os_loop_break(void)
{
    event_base_loopbreak(hd_m.base);
}

const hd_sup_ops_t hd_sup_os_ops = {
    .fork_worker = os_fork_worker,
    .kill = os_kill,
    .reap = os_reap,
    .ctl_pair = hd_proc_ctl_pair,
    .ctl_send = os_ctl_send,
    .ctl_send_log = os_ctl_send_log,
    .ctl_watch = os_ctl_watch,
    .ctl_unwatch = os_ctl_unwatch,
    .ctl_recv = os_ctl_recv,
    .listen = os_listen,
    .close = os_close,
    .queued = os_queued,
    .steer = hd_reuseport_steer,
    .unsteer = hd_reuseport_unsteer,
    .now_ms = hd_mono_ms,
    .timer_new = os_timer_new,
    .timer_add = os_timer_add,
    .timer_del = os_timer_del,
    .timer_free = os_timer_free,
    .loop_break = os_loop_break,
};
