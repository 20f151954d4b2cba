/*
 * Worker supervision: listen sockets per slot, fork, reap, respawn with
 * backoff, reload (scale, replace) and graceful shutdown.
 *
 * The master keeps every slot's SO_REUSEPORT socket open for the slot's
 * whole life. A worker that dies never takes its accept queue with it: the
 * kernel keeps queueing on the master's copy and the respawned worker (or
 * the replacement during a reload) accepts from the very same socket.
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

#include "hd_admin.h"
#include "hd_alloc.h"
#include "hd_ctl.h"
#include "hd_log.h"
#include "hd_master.h"
#include "hd_net.h"
#include "hd_proc.h"
#include "hd_reuseport.h"
#include "hd_sdnotify.h"
#include "hd_time.h"
#include "hd_worker.h"

#define RESPAWN_BACKOFF_MIN_MS 100
#define RESPAWN_BACKOFF_MAX_MS 10000
#define STABLE_AFTER_MS        10000 /* a worker this old crashed "fresh" */
#define CRASH_WINDOW_MS        60000
#define CRASH_LOOP_THRESHOLD   5
#define RETIRE_GRACE_MAX_MS    2000 /* queue quiet time, retiring slot */
#define DRAIN_KILL_GRACE_MS    3000 /* past a reload drain's window */

static void spawn(unsigned id, hd_proc_t *replaces);
static void steer(void);

/* ---- listeners ----------------------------------------------------------
 *
 * Closing a SO_REUSEPORT listen socket resets every connection still queued
 * on it (unless net.ipv4.tcp_migrate_req moves them). So a socket that is
 * going away must first stop getting new connections: a classic BPF
 * program on the group (steer()) sends new connections only to the sockets
 * of active slots with a running worker. Its indices come from a model of
 * the kernel's member array (hd_rgroup_t), which is exact as long as every
 * close() of a member is the last reference to the socket: a freshly
 * forked worker holds copies of all of them until it closes what it does
 * not need, so closes wait while a worker is STARTING (flush_closing()).
 */

static hd_rgroup_t *
group_for(const char *address, int port)
{
    hd_rgroup_t *g;

    for (g = hd_m.groups; g != NULL; g = g->next)
        if (g->port == port && strcmp(g->address, address) == 0)
            return g;
    g = hd_calloc(1, sizeof(*g));
    g->address = hd_strdup(address);
    g->port = port;
    g->next = hd_m.groups;
    hd_m.groups = g;
    return g;
}

static void
group_release(hd_rgroup_t *g)
{
    if (g == NULL || g->arr.n > 0)
        return;
    for (hd_rgroup_t **pp = &hd_m.groups; *pp != NULL; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    hd_reuseport_group_free(&g->arr);
    free(g->address);
    free(g);
}

static hd_listener_t *
listener_open(const hd_conf_t *c)
{
    const char    *what = NULL;
    int            fd;
    hd_listener_t *l;

    fd = hd_net_listen(c->listen_address, c->listen_port, c->listen_backlog,
                       true, &what);
    if (fd < 0) {
        hd_log_error("%s failed for %s:%d: %s", what, c->listen_address,
                     c->listen_port, strerror(-fd));
        return NULL;
    }
    l = hd_calloc(1, sizeof(*l));
    l->fd = fd;
    l->refs = 1;
    l->group = group_for(c->listen_address, c->listen_port);
    if (hd_reuseport_group_add(&l->group->arr, l) < 0)
        l->group->broken = true;
    return l;
}

static hd_listener_t *
listener_ref(hd_listener_t *l)
{
    l->refs++;
    return l;
}

/* Connections queued on a listen socket (accepted by the kernel, not yet
 * by us), or -1 if unknown. */
static int
queued(int fd)
{
    struct tcp_info ti;
    socklen_t       len = sizeof(ti);

    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        return -1;
    return (int) ti.tcpi_unacked; /* sk_ack_backlog for a listener */
}

static void
listener_close(hd_listener_t *l)
{
    int q = queued(l->fd);

    if (q > 0 && !hd_m.stopping)
        hd_log_warn("closing a retired listen socket with %d queued "
                    "connection%s: they are reset",
                    q, q == 1 ? "" : "s");
    close(l->fd);
    if (l->group != NULL) {
        hd_reuseport_group_remove(&l->group->arr, l);
        group_release(l->group);
    }
    free(l);
}

static bool
any_starting(void)
{
    for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next)
        if (p->state == HD_PROC_STARTING)
            return true;
    return false;
}

/* Close the listeners whose close was deferred, once no forked child can
 * still hold a copy (a worker closes what is not its own before READY). */
static void
flush_closing(void)
{
    bool closed = false;

    if (any_starting())
        return;
    while (hd_m.closing != NULL) {
        hd_listener_t *l = hd_m.closing;
        hd_m.closing = l->next_closing;
        listener_close(l);
        closed = true;
    }
    if (closed)
        steer();
}

static void
listener_unref(hd_listener_t *l)
{
    if (l != NULL && --l->refs == 0) {
        hd_listener_t **pp = &hd_m.closing;
        while (*pp != NULL) /* keep the order of the unrefs */
            pp = &(*pp)->next_closing;
        l->next_closing = NULL;
        *pp = l;
        flush_closing();
    }
}

/* A slot takes new connections when it is active and a worker of it that
 * accepts from its current socket is running. During a stop, every
 * worker still alive accepts (and closes with 1001 what it accepts), so
 * connections go to the slots whose worker has not exited yet. */
static bool
slot_serving(unsigned id)
{
    const hd_wslot_t *s = &hd_m.slots[id];

    if (!s->active || s->fatal || s->lst == NULL)
        return false;
    for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next)
        if (p->worker_id == id && p->lst == s->lst
            && (p->state == HD_PROC_RUNNING || hd_m.stopping))
            return true;
    return false;
}

/*
 * Point the current listen address's group at the serving slots. Called
 * whenever the set of serving slots or the group's members change, and
 * always before a worker is told to drain, so a draining worker's socket
 * gets no new connections from the moment it hears of it. With no slot
 * serving (start-up, every worker dead), connections go to every active
 * slot's socket, which the master keeps open: they queue for the workers
 * to come. Never to a retiring one.
 */
static void
steer(void)
{
    uint16_t     idx[HD_WORKERS_MAX];
    unsigned     n = 0;
    hd_rgroup_t *g = NULL;
    int          fd = -1, rc;

    if (hd_m.conf == NULL || hd_m.immediate)
        return;
    for (hd_rgroup_t *x = hd_m.groups; x != NULL; x = x->next)
        if (x->port == hd_m.conf->listen_port
            && strcmp(x->address, hd_m.conf->listen_address) == 0)
            g = x;
    if (g == NULL || g->broken)
        return;
    for (int pass = 0; pass < (hd_m.stopping ? 1 : 2) && n == 0; pass++) {
        for (unsigned i = 0; i < HD_WORKERS_MAX; i++) {
            const hd_wslot_t *s = &hd_m.slots[i];
            int               k;

            if (pass == 0 ? !slot_serving(i)
                          : !s->active || s->fatal || s->lst == NULL)
                continue;
            k = hd_reuseport_group_index(&g->arr, s->lst);
            if (s->lst->group != g || k < 0)
                continue;
            idx[n++] = (uint16_t) k;
            fd = s->lst->fd;
        }
    }
    if (n == 0) {
        /* nothing of ours to steer to: leave it to the kernel's hash (at
         * the end of a stop: keep the program, the master exits now) */
        if (g->arr.n > 0 && !hd_m.stopping)
            (void) hd_reuseport_unsteer(((hd_listener_t *) g->arr.sock[0])->fd);
        return;
    }
    rc = hd_reuseport_steer(fd, idx, n);
    if (rc < 0 && !hd_m.steer_warned) {
        hd_m.steer_warned = true;
        hd_log_warn("setsockopt(SO_ATTACH_REUSEPORT_CBPF) failed: %s; new "
                    "connections are not steered away from draining "
                    "workers, so a scale-down may reset connections queued "
                    "on a retired slot unless net.ipv4.tcp_migrate_req=1",
                    strerror(-rc));
    } else if (rc == 0) {
        hd_log_debug("steering new connections to %u slot%s", n,
                     n == 1 ? "" : "s");
    }
}

/* ---- control channel ---------------------------------------------------- */

static int
ctl_send(hd_proc_t *p, uint32_t type, uint32_t code, uint32_t window_ms)
{
    hd_ctl_msg_t m = { .type = type,
                       .close_code = code,
                       .window_ms = window_ms };

    if (p->ctl_fd >= 0
        && send(p->ctl_fd, &m, sizeof(m), MSG_NOSIGNAL | MSG_DONTWAIT)
            == (ssize_t) sizeof(m))
        return 0;
    /* the socket is full or gone: signals are the fallback */
    hd_log_warn("control message to worker %u (pid %d) failed: %s; "
                "falling back to a signal",
                p->worker_id, (int) p->pid, strerror(errno));
    return kill(p->pid, type == HD_CTL_EXIT ? SIGKILL : SIGTERM) == 0 ? 0
                                                                      : -errno;
}

static int
ctl_send_drain(hd_proc_t *p, uint32_t code, uint32_t window_ms, uint32_t flags,
               uint32_t grace_ms)
{
    hd_ctl_msg_t m = { .type = HD_CTL_DRAIN,
                       .close_code = code,
                       .window_ms = window_ms,
                       .flags = flags,
                       .grace_ms = grace_ms };

    if (p->ctl_fd >= 0
        && send(p->ctl_fd, &m, sizeof(m), MSG_NOSIGNAL | MSG_DONTWAIT)
            == (ssize_t) sizeof(m))
        return 0;
    return ctl_send(p, HD_CTL_DRAIN, code, window_ms);
}

static void
drain_kill_cb(evutil_socket_t fd, short what, void *arg)
{
    hd_proc_t *p = arg;
    (void) fd;
    (void) what;

    hd_log_warn("worker %u (pid %d) still running %d ms after its drain "
                "window; killing it",
                p->worker_id, (int) p->pid, DRAIN_KILL_GRACE_MS);
    kill(p->pid, SIGKILL);
}

static uint32_t
drain_window_ms(void)
{
    return (uint32_t) hd_m.conf->shutdown_ms * 8 / 10;
}

/*
 * Tell p to drain. Steering is updated first, so p's socket, if nobody
 * else serves it, gets no new connections from now on; p then keeps
 * accepting until that socket's queue has run dry (HD_DRAIN_KEEP_ACCEPTING)
 * and only after p is reaped does the master close the socket. A worker
 * whose slot goes on with the same socket (a replacement) stops accepting
 * at once instead: its successor accepts from the same queue.
 */
static void
drain(hd_proc_t *p, uint16_t code)
{
    const hd_wslot_t *s = &hd_m.slots[p->worker_id];
    uint32_t          window = drain_window_ms(), flags = 0, grace = 0;

    if (p->state == HD_PROC_DRAINING)
        return;
    p->state = HD_PROC_DRAINING;
    if (p->replaces != NULL) {
        /* p never got READY: what it was to replace goes with it */
        hd_proc_t *older = p->replaces;
        p->replaces = NULL;
        drain(older, code);
    }
    steer();
    if (hd_m.stopping) {
        flags = HD_DRAIN_KEEP_ACCEPTING; /* every socket closes soon */
    } else if (!s->active || s->lst != p->lst) {
        flags = HD_DRAIN_KEEP_ACCEPTING;
        grace = window / 2 < RETIRE_GRACE_MAX_MS ? window / 2
                                                 : RETIRE_GRACE_MAX_MS;
    }
    hd_log_info("draining worker %u (pid %d) with close code %u%s",
                p->worker_id, (int) p->pid, code,
                flags ? ", accepting until its queue is empty" : "");
    ctl_send_drain(p, code, window, flags, grace);
    if (!hd_m.stopping && p->drain_kill_ev == NULL) {
        /* a drained worker that outlives its window (stuck, or a bug)
         * must not linger for ever: the stop path has its own deadline */
        struct timeval tv = {
            (time_t) ((window + DRAIN_KILL_GRACE_MS) / 1000),
            (suseconds_t) ((window + DRAIN_KILL_GRACE_MS) % 1000) * 1000
        };
        p->drain_kill_ev = evtimer_new(hd_m.base, drain_kill_cb, p);
        evtimer_add(p->drain_kill_ev, &tv);
    }
}

static void
ctl_cb(evutil_socket_t fd, short what, void *arg)
{
    hd_proc_t   *p = arg;
    hd_ctl_msg_t m;
    ssize_t      n;
    (void) what;

    for (;;) {
        n = recv(fd, &m, sizeof(m), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            /* the worker exited or closed its end: SIGCHLD does the rest */
            event_del(p->ctl_ev);
            return;
        }
        if ((size_t) n != sizeof(m))
            continue;
        if (m.type == HD_CTL_READY && p->state == HD_PROC_STARTING) {
            p->state = HD_PROC_RUNNING;
            hd_log_debug("worker %u (pid %d) ready", p->worker_id,
                         (int) p->pid);
            if (p->replaces != NULL) {
                /* new first, old drained: the slot never stops accepting */
                hd_proc_t *old = p->replaces;
                p->replaces = NULL;
                drain(old, 1012);
            }
            steer();
            flush_closing(); /* p holds only its own sockets now */
        }
    }
}

/* ---- processes ---------------------------------------------------------- */

static void
proc_unlink(hd_proc_t *p)
{
    for (hd_proc_t **pp = &hd_m.procs; *pp != NULL; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            return;
        }
}

static void
proc_free(hd_proc_t *p)
{
    if (p->ctl_ev != NULL)
        event_free(p->ctl_ev);
    if (p->drain_kill_ev != NULL)
        event_free(p->drain_kill_ev);
    if (p->ctl_fd >= 0)
        close(p->ctl_fd);
    listener_unref(p->lst);
    /* anyone who was waiting to replace p no longer needs to drain it */
    for (hd_proc_t *q = hd_m.procs; q != NULL; q = q->next)
        if (q->replaces == p)
            q->replaces = NULL;
    for (unsigned i = 0; i < HD_WORKERS_MAX; i++)
        if (hd_m.slots[i].pending_old == p)
            hd_m.slots[i].pending_old = NULL;
    free(p);
}

static void
respawn_cb(evutil_socket_t fd, short what, void *arg)
{
    unsigned id = (unsigned) (uintptr_t) arg;
    (void) fd;
    (void) what;

    hd_wslot_t *s = &hd_m.slots[id];

    if (!hd_m.stopping && s->active && s->cur == NULL) {
        hd_proc_t *old = s->pending_old;
        s->pending_old = NULL;
        spawn(id, old);
    }
}

/*
 * Fork a worker for slot id. replaces, if set, is drained once the new
 * worker reports READY. Failures are logged and retried through the
 * respawn timer, never fatal for the master.
 */
static void
spawn(unsigned id, hd_proc_t *replaces)
{
    hd_wslot_t      *s = &hd_m.slots[id];
    hd_worker_args_t args;
    hd_proc_t       *p;
    hd_lease_t      *lease = NULL;
    sigset_t         old;
    int              sv[2], idx, rc;
    pid_t            pid;

    idx = hd_shm_slot_acquire(hd_m.shm, id, hd_m.generation);
    if (idx < 0) {
        hd_log_error("no free shm slot for worker %u", id);
        goto retry;
    }
    rc = hd_proc_ctl_pair(sv);
    if (rc < 0) {
        hd_log_error("socketpair() failed: %s", strerror(-rc));
        hd_shm_slot_retire(hd_m.shm, idx, 0);
        goto retry;
    }
    if (hd_m.limits != NULL) {
        /* where the worker records what it holds in the limit tables, one
         * entry per possible fd: after its death the master gives its
         * share back from there (hd_lease_reclaim() in hd_sup_reap()) */
        struct rlimit rl;
        unsigned      nfds = HD_LEASE_FDS_MAX;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < nfds)
            nfds = (unsigned) rl.rlim_cur;
        lease = hd_lease_create(nfds);
        if (lease == NULL) {
            close(sv[0]);
            close(sv[1]);
            hd_shm_slot_retire(hd_m.shm, idx, 0);
            goto retry;
        }
    }

    hd_proc_block_all(&old);
    pid = fork();
    if (pid == 0) {
        close(sv[0]);
        hd_proc_reset_signals();
        memset(&args, 0, sizeof(args));
        args.worker_id = id;
        args.shm_idx = idx;
        args.generation = hd_m.generation;
        args.listen_fd = s->lst->fd;
        args.ctl_fd = sv[1];
        args.conf = hd_m.conf;
        args.shm = hd_m.shm;
        args.limits = hd_m.limits;
        args.lease = lease;
        hd_worker_main(&args);
    }
    rc = errno;
    hd_proc_restore_mask(&old);
    close(sv[1]);
    if (pid < 0) {
        hd_log_error("fork() failed: %s", strerror(rc));
        close(sv[0]);
        hd_shm_slot_retire(hd_m.shm, idx, 0);
        hd_lease_reclaim(hd_m.limits, lease); /* empty: just unmaps */
        goto retry;
    }
    /* workers forked later must not inherit this worker's lease */
    hd_lease_dontfork(lease);

    p = hd_calloc(1, sizeof(*p));
    p->pid = pid;
    p->worker_id = id;
    p->shm_idx = idx;
    p->ctl_fd = sv[0];
    p->generation = hd_m.generation;
    p->state = HD_PROC_STARTING;
    p->started_ms = hd_mono_ms();
    p->lst = listener_ref(s->lst);
    p->lease = lease;
    p->replaces = replaces;
    p->ctl_ev = event_new(hd_m.base, sv[0], EV_READ | EV_PERSIST, ctl_cb, p);
    event_add(p->ctl_ev, NULL);
    p->next = hd_m.procs;
    hd_m.procs = p;
    hd_shm_slot_set_pid(hd_m.shm, idx, pid);
    s->cur = p;
    hd_log_info("started worker %u (pid %d)", id, (int) pid);
    return;

retry:
    if (s->respawn_ev == NULL)
        s->respawn_ev = evtimer_new(hd_m.base, respawn_cb,
                                    (void *) (uintptr_t) id);
    {
        struct timeval tv = { 1, 0 };
        evtimer_add(s->respawn_ev, &tv);
    }
}

static void
schedule_respawn(unsigned id, hd_proc_t *dead, int status)
{
    hd_wslot_t    *s = &hd_m.slots[id];
    uint64_t       now = hd_mono_ms(), lived = now - dead->started_ms;
    struct timeval tv;

    if (WIFEXITED(status) && WEXITSTATUS(status) == HD_EXIT_FATAL) {
        s->fatal = true;
        hd_log_error("worker %u exited with the fatal status %d; not "
                     "respawning it (fix the cause, then reload)",
                     id, HD_EXIT_FATAL);
        return;
    }
    if (lived >= STABLE_AFTER_MS)
        s->backoff_ms = 0;
    if (now - s->crash_window_ms > CRASH_WINDOW_MS) {
        s->crash_window_ms = now;
        s->crashes = 0;
    }
    s->crashes++;
    if (s->crashes >= CRASH_LOOP_THRESHOLD)
        hd_log_error("worker %u is crash-looping: %u exits in %d s; next "
                     "start in %llu ms",
                     id, s->crashes, CRASH_WINDOW_MS / 1000,
                     (unsigned long long) s->backoff_ms);

    if (s->respawn_ev == NULL)
        s->respawn_ev = evtimer_new(hd_m.base, respawn_cb,
                                    (void *) (uintptr_t) id);
    tv.tv_sec = (time_t) (s->backoff_ms / 1000);
    tv.tv_usec = (suseconds_t) (s->backoff_ms % 1000) * 1000;
    evtimer_add(s->respawn_ev, &tv);

    s->backoff_ms = s->backoff_ms == 0 ? RESPAWN_BACKOFF_MIN_MS
                                       : s->backoff_ms * 2;
    if (s->backoff_ms > RESPAWN_BACKOFF_MAX_MS)
        s->backoff_ms = RESPAWN_BACKOFF_MAX_MS;
}

static void
describe_status(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)),
                 WCOREDUMP(status) ? ", core dumped" : "");
    else
        snprintf(buf, len, "status 0x%x", status);
}

void
hd_sup_reap(void)
{
    struct rusage ru;
    int           status;
    pid_t         pid;
    char          how[96];

    while ((pid = wait4(-1, &status, WNOHANG, &ru)) > 0) {
        hd_proc_t *p;
        bool       planned;

        for (p = hd_m.procs; p != NULL && p->pid != pid; p = p->next)
            ;
        if (p == NULL)
            continue;

        double cpu = (double) ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
            + (double) ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
        hd_shm_slot_retire(hd_m.shm, p->shm_idx, cpu);
        /* give back the limit-table counts it still held (none after a
         * clean exit; all of its connections' after a crash or kill -9) */
        hd_lease_reclaim(hd_m.limits, p->lease);
        p->lease = NULL;

        planned = p->state == HD_PROC_DRAINING || hd_m.stopping;
        describe_status(status, how, sizeof(how));
        if (planned && WIFEXITED(status) && WEXITSTATUS(status) == 0)
            hd_log_info("worker %u (pid %d) exited", p->worker_id, (int) pid);
        else
            hd_log(planned ? HD_LOG_WARN : HD_LOG_ERROR,
                   "worker %u (pid %d) %s", p->worker_id, (int) pid, how);

        proc_unlink(p);
        if (hd_m.slots[p->worker_id].cur == p) {
            hd_wslot_t *s = &hd_m.slots[p->worker_id];
            s->cur = NULL;
            if (!hd_m.stopping && s->active) {
                /* a replacement that died before READY: the old process
                 * keeps serving until the next replacement is READY */
                s->pending_old = p->replaces;
                p->replaces = NULL;
                hd_shm_note_restart(hd_m.shm);
                schedule_respawn(p->worker_id, p, status);
            }
        }
        proc_free(p);
    }
    /* a dead worker's slot takes no new connections until its successor
     * is READY: its queue waits for the successor, others take the rest */
    steer();
    flush_closing();

    if (hd_m.stopping && hd_m.procs == NULL)
        event_base_loopbreak(hd_m.base);
}

/* ---- start, reload, stop ------------------------------------------------ */

int
hd_sup_start(void)
{
    for (unsigned i = 0; i < (unsigned) hd_m.conf->workers; i++) {
        hd_m.slots[i].lst = listener_open(hd_m.conf);
        if (hd_m.slots[i].lst == NULL)
            return -1;
        hd_m.slots[i].active = true;
    }
    hd_m.nworkers = (unsigned) hd_m.conf->workers;
    hd_shm_note_start(hd_m.shm, hd_m.nworkers);
    for (unsigned i = 0; i < hd_m.nworkers; i++)
        spawn(i, NULL);
    return 0;
}

static void
retire_slot(unsigned id)
{
    hd_wslot_t *s = &hd_m.slots[id];

    s->active = false;
    s->fatal = false;
    if (s->respawn_ev != NULL)
        evtimer_del(s->respawn_ev);
    for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next)
        if (p->worker_id == id)
            drain(p, 1012);
    s->cur = NULL;
    s->pending_old = NULL;
    /* the processes hold their own references: the socket closes when the
     * last of them is reaped */
    listener_unref(s->lst);
    s->lst = NULL;
}

static void
replace_slot(unsigned id, hd_listener_t *nl)
{
    hd_wslot_t *s = &hd_m.slots[id];
    hd_proc_t  *old = s->cur != NULL ? s->cur : s->pending_old;

    s->pending_old = NULL;
    if (nl != NULL) {
        listener_unref(s->lst);
        s->lst = listener_ref(nl);
    }
    s->fatal = false;
    s->backoff_ms = 0;
    if (s->respawn_ev != NULL)
        evtimer_del(s->respawn_ev);
    s->cur = NULL;
    spawn(id, old);
    if (s->cur == NULL && old != NULL)
        s->cur = old; /* fork failed: keep the old one */
}

void
hd_sup_reload(void)
{
    hd_conf_errors_t errs = { 0 };
    hd_conf_t       *nc = NULL;
    hd_listener_t   *nls[HD_WORKERS_MAX] = { 0 };
    bool             listen_changed, worker_changed;
    unsigned         oldn, newn, i;

    if (hd_m.stopping)
        return;
    /* systemd shows "reloading" until the READY=1 on every way out */
    hd_sdnotify_reloading();
    hd_log_info("reloading %s", hd_m.conf->path);
    if (hd_conf_load(hd_m.conf->path, &nc, &errs) < 0) {
        for (i = 0; i < errs.n; i++)
            hd_log_error("reload failed: %s", errs.msg[i]);
        hd_log_error("reload failed: keeping the running configuration "
                     "(%zu error%s)",
                     errs.n, errs.n == 1 ? "" : "s");
        hd_conf_errors_free(&errs);
        hd_shm_note_reload(hd_m.shm, false, hd_m.generation);
        hd_sdnotify_ready("running; last reload failed, see the log");
        return;
    }

    oldn = hd_m.nworkers;
    newn = (unsigned) nc->workers;
    listen_changed = hd_conf_listen_changed(hd_m.conf, nc);
    worker_changed = hd_conf_worker_changed(hd_m.conf, nc);

    if (listen_changed) {
        for (i = 0; i < newn; i++) {
            nls[i] = listener_open(nc);
            if (nls[i] == NULL) {
                hd_log_error("reload failed: cannot listen on the new "
                             "address; keeping the running configuration");
                for (unsigned k = 0; k < i; k++)
                    listener_unref(nls[k]);
                hd_conf_free(nc);
                hd_shm_note_reload(hd_m.shm, false, hd_m.generation);
                hd_sdnotify_ready("running; last reload failed, see the log");
                return;
            }
        }
    }

    if (hd_log_configure(nc->log_level, nc->log_format, nc->log_file) < 0)
        hd_log_error("reload: cannot open log file %s; keeping the old one",
                     nc->log_file ? nc->log_file : "(stderr)");
    hd_conf_register_secrets(nc);

    hd_m.generation++;
    hd_conf_free(hd_m.conf);
    hd_m.conf = nc;
    hd_m.nworkers = newn;

    for (i = 0; i < newn && i < oldn; i++)
        if (worker_changed || hd_m.slots[i].fatal)
            replace_slot(i, nls[i]);
    for (i = oldn; i < newn; i++) {
        hd_wslot_t *s = &hd_m.slots[i];
        s->active = true;
        s->fatal = false;
        s->backoff_ms = 0;
        s->crashes = 0;
        s->lst = nls[i] != NULL ? listener_ref(nls[i]) : listener_open(nc);
        if (s->lst == NULL) {
            s->active = false;
            continue;
        }
        spawn(i, NULL);
    }
    /* all of them out of the steering before the first one hears of it */
    for (i = newn; i < oldn; i++)
        hd_m.slots[i].active = false;
    for (i = newn; i < oldn; i++)
        retire_slot(i);
    for (i = 0; i < newn; i++)
        listener_unref(nls[i]); /* slots and processes hold their refs */

    steer();

    hd_shm_set_workers_expected(hd_m.shm, newn);
    hd_shm_note_reload(hd_m.shm, true, hd_m.generation);
    if (hd_admin_reconfigure(nc) < 0)
        hd_log_error("reload: admin server could not be reconfigured");
    hd_log_info("reload done: generation %u, %u workers%s", hd_m.generation,
                newn, worker_changed ? ", workers replaced" : "");
    hd_sdnotify_ready("running");
}

static void
kill_cb(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    (void) arg;
    for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next) {
        hd_log_warn("worker %u (pid %d) did not exit in time; killing it",
                    p->worker_id, (int) p->pid);
        kill(p->pid, SIGKILL);
    }
}

void
hd_sup_shutdown(bool immediate)
{
    if (hd_m.stopping && !immediate && !hd_m.immediate) {
        immediate = true; /* a second SIGTERM/SIGINT */
    }
    if (!hd_m.stopping)
        hd_sdnotify_stopping();
    for (unsigned i = 0; i < HD_WORKERS_MAX; i++)
        if (hd_m.slots[i].respawn_ev != NULL)
            evtimer_del(hd_m.slots[i].respawn_ev);

    if (immediate) {
        hd_m.stopping = hd_m.immediate = true;
        hd_log_warn("stopping now");
        for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next)
            kill(p->pid, SIGKILL);
    } else {
        struct timeval tv;
        uint64_t       ms = (uint64_t) hd_m.conf->shutdown_ms * 9 / 10;

        hd_m.stopping = true;
        hd_log_info("graceful stop: draining workers (up to %d ms)",
                    hd_m.conf->shutdown_ms);
        for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next) {
            p->state = HD_PROC_RUNNING; /* re-drain even a draining one */
            p->replaces = NULL;
            drain(p, 1001);
        }
        hd_m.kill_ev = evtimer_new(hd_m.base, kill_cb, NULL);
        tv.tv_sec = (time_t) (ms / 1000);
        tv.tv_usec = (suseconds_t) (ms % 1000) * 1000;
        evtimer_add(hd_m.kill_ev, &tv);
    }
    hd_admin_stop();
    if (hd_m.procs == NULL)
        event_base_loopbreak(hd_m.base);
}

void
hd_sup_signal_all(int sig)
{
    for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next)
        kill(p->pid, sig);
}

void
hd_sup_close_listeners(void)
{
    for (unsigned i = 0; i < HD_WORKERS_MAX; i++) {
        hd_wslot_t *s = &hd_m.slots[i];
        listener_unref(s->lst);
        s->lst = NULL;
        if (s->respawn_ev != NULL)
            event_free(s->respawn_ev);
        s->respawn_ev = NULL;
    }
    while (hd_m.procs != NULL) {
        hd_proc_t *p = hd_m.procs;
        hd_m.procs = p->next;
        proc_free(p);
    }
    if (hd_m.kill_ev != NULL)
        event_free(hd_m.kill_ev);
    hd_m.kill_ev = NULL;
    /* at exit nothing can be forked any more: close what still waits */
    while (hd_m.closing != NULL) {
        hd_listener_t *l = hd_m.closing;
        hd_m.closing = l->next_closing;
        listener_close(l);
    }
}
