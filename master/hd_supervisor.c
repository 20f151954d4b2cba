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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "hd_admin.h"
#include "hd_alloc.h"
#include "hd_ctl.h"
#include "hd_log.h"
#include "hd_master.h"
#include "hd_reuseport.h"
#include "hd_sdnotify.h"
#include "hd_sup_ops.h"
#include "hd_worker.h"

#define RESPAWN_BACKOFF_MIN_MS 100
#define RESPAWN_BACKOFF_MAX_MS 10000
#define STABLE_AFTER_MS        10000 /* a worker this old crashed "fresh" */
#define CRASH_WINDOW_MS        60000
#define CRASH_LOOP_THRESHOLD   5
#define RETIRE_GRACE_MAX_MS    2000 /* queue quiet time, retiring slot */
#define DRAIN_KILL_GRACE_MS    3000 /* past a reload drain's window */

static const hd_sup_ops_t *ops;        /* hd_sup_set_ops() */
static int                 listen_err; /* -errno of the last failed listen */

static void steer(void);
static void slot_on(unsigned id, enum hd_slot_event ev, hd_proc_t *p,
                    int status);

void
hd_sup_set_ops(const hd_sup_ops_t *o)
{
    ops = o;
}

static bool
slot_active(const hd_wslot_t *s)
{
    return s->state != HD_WS_OFF;
}

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
group_find(const hd_listen_t *c)
{
    for (hd_rgroup_t *g = hd_m.groups; g != NULL; g = g->next)
        if (g->port == c->port && g->v6only == c->ipv6_only
            && strcmp(g->address, c->address) == 0)
            return g;
    return NULL;
}

static hd_rgroup_t *
group_for(const hd_listen_t *c)
{
    hd_rgroup_t *g = group_find(c);

    if (g != NULL)
        return g;
    g = hd_calloc(1, sizeof(*g));
    g->address = hd_strdup(c->address);
    g->port = c->port;
    g->v6only = c->ipv6_only;
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

static void listener_close(hd_listener_t *l);

/* One socket per configured listener; all or none. */
static hd_listener_t *
listener_open(const hd_conf_t *c)
{
    hd_listener_t *l = hd_calloc(1, sizeof(*l));

    listen_err = 0;
    l->refs = 1;
    for (size_t i = 0; i < c->nlistens; i++) {
        const hd_listen_t *lc = &c->listens[i];
        const char        *what = NULL;
        int                fd = ops->listen(lc, &what);

        if (fd < 0) {
            hd_log_error("%s failed for %s port %d: %s", what, lc->address,
                         lc->port, strerror(-fd));
            listen_err = fd;
            listener_close(l);
            return NULL;
        }
        l->fd[l->n] = fd;
        l->group[l->n] = group_for(lc);
        if (hd_reuseport_group_add(&l->group[l->n]->arr, l) < 0)
            l->group[l->n]->broken = true;
        l->n++;
    }
    return l;
}

static hd_listener_t *
listener_ref(hd_listener_t *l)
{
    l->refs++;
    return l;
}

static void
listener_close(hd_listener_t *l)
{
    for (unsigned i = 0; i < l->n; i++) {
        int q = ops->queued(l->fd[i]);

        if (q > 0 && !hd_m.stopping)
            hd_log_warn("closing a retired listen socket with %d queued "
                        "connection%s: they are reset",
                        q, q == 1 ? "" : "s");
        ops->close(l->fd[i]);
        if (l->group[i] != NULL) {
            hd_reuseport_group_remove(&l->group[i]->arr, l);
            group_release(l->group[i]);
        }
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

    if (!slot_active(s) || s->state == HD_WS_FATAL || s->lst == NULL)
        return false;
    for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next)
        if (p->worker_id == id && p->lst == s->lst
            && (p->state == HD_PROC_RUNNING || hd_m.stopping))
            return true;
    return false;
}

/*
 * Point each current listener's group at the serving slots. Called
 * whenever the set of serving slots or the group's members change, and
 * always before a worker is told to drain, so a draining worker's socket
 * gets no new connections from the moment it hears of it. With no slot
 * serving (start-up, every worker dead), connections go to every active
 * slot's socket, which the master keeps open: they queue for the workers
 * to come. Never to a retiring one.
 */
/* The socket of g's k-th member (a listener set) that is in g. */
static int
member_fd(const hd_rgroup_t *g, unsigned k)
{
    const hd_listener_t *l = g->arr.sock[k];

    for (unsigned i = 0; i < l->n; i++)
        if (l->group[i] == g)
            return l->fd[i];
    return -1; /* "no socket": an fd placeholder, not an error code */
}

static void
steer_one(unsigned li)
{
    uint16_t     idx[HD_WORKERS_MAX];
    unsigned     n = 0;
    hd_rgroup_t *g = group_find(&hd_m.conf->listens[li]);
    int          fd = -1, rc;

    if (g == NULL || g->broken)
        return;
    for (int pass = 0; pass < (hd_m.stopping ? 1 : 2) && n == 0; pass++) {
        for (unsigned i = 0; i < HD_WORKERS_MAX; i++) {
            const hd_wslot_t *s = &hd_m.slots[i];
            int               k;

            if (pass == 0 ? !slot_serving(i)
                          : !slot_active(s) || s->state == HD_WS_FATAL
                        || s->lst == NULL)
                continue;
            k = hd_reuseport_group_index(&g->arr, s->lst);
            if (li >= s->lst->n || s->lst->group[li] != g || k < 0)
                continue;
            idx[n++] = (uint16_t) k;
            fd = s->lst->fd[li];
        }
    }
    if (n == 0) {
        /* nothing of ours to steer to: leave it to the kernel's hash (at
         * the end of a stop: keep the program, the master exits now) */
        if (g->arr.n > 0 && !hd_m.stopping)
            (void) ops->unsteer(member_fd(g, 0));
        return;
    }
    rc = ops->steer(fd, idx, n);
    if (rc < 0 && !hd_m.steer_warned) {
        hd_m.steer_warned = true;
        hd_log_warn("setsockopt(SO_ATTACH_REUSEPORT_CBPF) failed: %s; new "
                    "connections are not steered away from draining "
                    "workers, so a scale-down may reset connections queued "
                    "on a retired slot unless net.ipv4.tcp_migrate_req=1",
                    strerror(-rc));
    } else if (rc == 0) {
        hd_log_debug("steering new connections on %s port %d to %u slot%s",
                     g->address, g->port, n, n == 1 ? "" : "s");
    }
}

static void
steer(void)
{
    /* after an upgrade's hand-over the sockets and their steering are the
     * new master's: our model of the groups is no longer theirs */
    if (hd_m.conf == NULL || hd_m.immediate || hd_m.handed_over)
        return;
    for (unsigned i = 0; i < hd_m.conf->nlistens; i++)
        steer_one(i);
}

/* ---- control channel ---------------------------------------------------- */

/*
 * Send m to p. When the socket is full or gone, the same message is tried
 * once more, then a signal stands in for it (SIGKILL for EXIT, SIGTERM
 * otherwise). A retry never loses the message's flags: a retiring worker
 * told to drain without HD_DRAIN_KEEP_ACCEPTING would stop accepting at
 * once and the connections queued on its socket would be reset.
 */
static int
ctl_send(hd_proc_t *p, const hd_ctl_msg_t *m)
{
    int rc = -EBADF;

    for (int i = 0; i < 2 && p->ctl_fd >= 0; i++)
        if ((rc = ops->ctl_send(p->ctl_fd, m)) == 0)
            return 0;
    hd_log_warn("control message to worker %u (pid %d) failed: %s; "
                "falling back to a signal",
                p->worker_id, (int) p->pid, strerror(-rc));
    return ops->kill(p->pid, m->type == HD_CTL_EXIT ? SIGKILL : SIGTERM);
}

/*
 * The log settings apply in place on reload: tell every live worker (a
 * worker forked later inherits them). A worker that cannot be told keeps
 * its settings until it is replaced; nothing else depends on them.
 */
static void
send_log_settings(const hd_conf_t *nc)
{
    hd_ctl_log_msg_t m = { .type = HD_CTL_LOG,
                           .level = (uint32_t) nc->log_level,
                           .format = (uint32_t) nc->log_format };
    int              rc;

    if (nc->log_file != NULL) {
        if (strlen(nc->log_file) >= sizeof(m.file)) {
            hd_log_error("reload: log.file too long to hand to workers");
            return;
        }
        strcpy(m.file, nc->log_file);
    }
    for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next)
        if (p->ctl_fd >= 0 && (rc = ops->ctl_send_log(p->ctl_fd, &m)) < 0)
            hd_log_warn("log settings to worker %u (pid %d) failed: %s",
                        p->worker_id, (int) p->pid, strerror(-rc));
}

static void
drain_kill_cb(void *arg)
{
    hd_proc_t *p = arg;

    hd_log_warn("worker %u (pid %d) still running %d ms after its drain "
                "window; killing it",
                p->worker_id, (int) p->pid, DRAIN_KILL_GRACE_MS);
    ops->kill(p->pid, SIGKILL);
}

static uint32_t handover_window_ms; /* hd_sup_handover() */

static uint32_t
drain_window_ms(void)
{
    if (hd_m.handed_over)
        return handover_window_ms;
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
    uint32_t          window = drain_window_ms();
    hd_ctl_msg_t      m = { .type = HD_CTL_DRAIN,
                            .close_code = code,
                            .window_ms = window };

    if (p->state == HD_PROC_DRAINING)
        return;
    p->state = HD_PROC_DRAINING;
    steer();
    if (hd_m.handed_over) {
        /* the new master's workers accept from the very same sockets */
        m.flags = 0;
    } else if (hd_m.stopping) {
        m.flags = HD_DRAIN_KEEP_ACCEPTING; /* every socket closes soon */
    } else if (!slot_active(s) || s->lst != p->lst) {
        m.flags = HD_DRAIN_KEEP_ACCEPTING;
        m.grace_ms = window / 2 < RETIRE_GRACE_MAX_MS ? window / 2
                                                      : RETIRE_GRACE_MAX_MS;
    }
    hd_log_info("draining worker %u (pid %d) with close code %u%s",
                p->worker_id, (int) p->pid, code,
                m.flags ? ", accepting until its queue is empty" : "");
    ctl_send(p, &m);
    if ((!hd_m.stopping || hd_m.handed_over) && p->drain_kill_t == NULL) {
        /* a drained worker that outlives its window (stuck, or a bug)
         * must not linger for ever: the stop path has its own deadline */
        p->drain_kill_t = ops->timer_new(drain_kill_cb, p);
        ops->timer_add(p->drain_kill_t, window + DRAIN_KILL_GRACE_MS);
    }
}

/* Drain the processes of slot id started before p (what p replaces):
 * the slot never stops accepting, new first, old drained. */
static void
drain_older(unsigned id, const hd_proc_t *p)
{
    for (hd_proc_t *q = hd_m.procs; q != NULL; q = q->next)
        if (q->worker_id == id && q->seq < p->seq
            && q->state != HD_PROC_DRAINING)
            drain(q, 1012);
}

/* A control message from p's worker. */
static void
ctl_msg(hd_proc_t *p, const hd_ctl_msg_t *m)
{
    if (m->type == HD_CTL_READY && p->state == HD_PROC_STARTING) {
        p->state = HD_PROC_RUNNING;
        hd_log_debug("worker %u (pid %d) ready", p->worker_id, (int) p->pid);
        slot_on(p->worker_id, HD_SE_READY, p, 0);
        steer();
        flush_closing(); /* p holds only its own sockets now */
        if (hd_m.jwks_ready != NULL)
            hd_m.jwks_ready(p->ctl_fd);
        if (hd_m.all_ready != NULL && hd_sup_all_running())
            hd_m.all_ready();
    } else if (m->type == HD_CTL_JWKS_STALE && hd_m.jwks_stale != NULL) {
        hd_m.jwks_stale();
    }
}

static void
ctl_cb(void *arg)
{
    hd_proc_t   *p = arg;
    hd_ctl_msg_t m;
    int          rc;

    while ((rc = ops->ctl_recv(p->ctl_fd, &m)) > 0)
        ctl_msg(p, &m);
    if (rc < 0) {
        /* the worker exited or closed its end: SIGCHLD does the rest */
        ops->ctl_unwatch(p->ctl_w);
        p->ctl_w = NULL;
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
    ops->ctl_unwatch(p->ctl_w);
    if (p->drain_kill_t != NULL)
        ops->timer_free(p->drain_kill_t);
    if (p->ctl_fd >= 0)
        ops->close(p->ctl_fd);
    listener_unref(p->lst);
    for (unsigned i = 0; i < HD_WORKERS_MAX; i++)
        if (hd_m.slots[i].cur == p)
            hd_m.slots[i].cur = NULL;
    free(p);
}

static void
respawn_cb(void *arg)
{
    slot_on((unsigned) (uintptr_t) arg, HD_SE_TIMER, NULL, 0);
}

static void
arm_respawn(unsigned id, uint64_t ms)
{
    hd_wslot_t *s = &hd_m.slots[id];

    if (s->respawn_t == NULL)
        s->respawn_t = ops->timer_new(respawn_cb, (void *) (uintptr_t) id);
    ops->timer_add(s->respawn_t, ms);
}

static void
disarm_respawn(hd_wslot_t *s)
{
    if (s->respawn_t != NULL)
        ops->timer_del(s->respawn_t);
}

/*
 * Fork a worker for slot id; it becomes the slot's cur. Returns 0, or
 * -errno after logging (the caller retries through the respawn timer: never
 * fatal for the master).
 */
static int
spawn(unsigned id)
{
    hd_wslot_t      *s = &hd_m.slots[id];
    hd_worker_args_t args;
    hd_proc_t       *p;
    hd_lease_t      *lease = NULL;
    int              sv[2], idx, rc;
    pid_t            pid;

    idx = hd_shm_slot_acquire(hd_m.shm, id, hd_m.generation);
    if (idx < 0) {
        hd_log_error("no free shm slot for worker %u", id);
        return -ENOSPC;
    }
    rc = ops->ctl_pair(sv);
    if (rc < 0) {
        hd_log_error("socketpair() failed: %s", strerror(-rc));
        goto fail_slot;
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
            rc = -ENOMEM; /* its mmap() failed (logged there) */
            goto fail_pair;
        }
    }

    memset(&args, 0, sizeof(args));
    args.worker_id = id;
    args.shm_idx = idx;
    args.generation = hd_m.generation;
    for (unsigned k = 0; k < s->lst->n; k++)
        args.listen_fds[k] = s->lst->fd[k];
    args.nlisten = s->lst->n;
    args.ctl_fd = sv[1];
    args.conf = hd_m.conf;
    args.shm = hd_m.shm;
    args.limits = hd_m.limits;
    args.lease = lease;
    pid = ops->fork_worker(&args, sv[0]);
    ops->close(sv[1]);
    if (pid < 0) {
        hd_log_error("fork() failed: %s", strerror((int) -pid));
        rc = (int) pid;
        ops->close(sv[0]);
        hd_lease_reclaim(hd_m.limits, lease); /* empty: just unmaps */
        goto fail_slot;
    }
    /* workers forked later must not inherit this worker's lease */
    hd_lease_dontfork(lease);

    p = hd_calloc(1, sizeof(*p));
    p->pid = pid;
    p->worker_id = id;
    p->seq = ++hd_m.next_seq;
    p->shm_idx = idx;
    p->ctl_fd = sv[0];
    p->generation = hd_m.generation;
    p->state = HD_PROC_STARTING;
    p->started_ms = ops->now_ms();
    p->lst = listener_ref(s->lst);
    p->lease = lease;
    p->ctl_w = ops->ctl_watch(sv[0], ctl_cb, p);
    p->next = hd_m.procs;
    hd_m.procs = p;
    hd_shm_slot_set_pid(hd_m.shm, idx, pid);
    s->cur = p;
    hd_log_info("started worker %u (pid %d)", id, (int) pid);
    return 0;

fail_pair:
    ops->close(sv[0]);
    ops->close(sv[1]);
fail_slot:
    hd_shm_slot_retire(hd_m.shm, idx, 0);
    return rc;
}

/* Start a worker for the slot: STARTING, or BACKOFF with a retry in 1 s. */
static enum hd_wslot_state
start_worker(unsigned id)
{
    if (spawn(id) == 0)
        return HD_WS_STARTING;
    arm_respawn(id, 1000);
    return HD_WS_BACKOFF;
}

/*
 * The slot's worker died unplanned: respawn it after a backoff that
 * doubles with each quick death (100 ms .. 10 s) and resets after a
 * worker that lived STABLE_AFTER_MS; HD_EXIT_FATAL means never.
 */
static enum hd_wslot_state
after_crash(unsigned id, const hd_proc_t *dead, int status)
{
    hd_wslot_t *s = &hd_m.slots[id];
    uint64_t    now = ops->now_ms(), lived = now - dead->started_ms;

    if (WIFEXITED(status) && WEXITSTATUS(status) == HD_EXIT_FATAL) {
        hd_log_error("worker %u exited with the fatal status %d; not "
                     "respawning it (fix the cause, then reload)",
                     id, HD_EXIT_FATAL);
        return HD_WS_FATAL;
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
    arm_respawn(id, s->backoff_ms);
    s->backoff_ms = s->backoff_ms == 0 ? RESPAWN_BACKOFF_MIN_MS
                                       : s->backoff_ms * 2;
    if (s->backoff_ms > RESPAWN_BACKOFF_MAX_MS)
        s->backoff_ms = RESPAWN_BACKOFF_MAX_MS;
    return HD_WS_BACKOFF;
}

/*
 * The slot state machine: the one place a slot's state changes. p is the
 * process the event is about (READY, EXIT), status its wait status (EXIT).
 */
static void
slot_on(unsigned id, enum hd_slot_event ev, hd_proc_t *p, int status)
{
    hd_wslot_t         *s = &hd_m.slots[id];
    enum hd_wslot_state next = s->state;
    hd_proc_t          *old;

    switch (ev) {
    case HD_SE_START:
        s->backoff_ms = 0;
        s->crashes = 0;
        next = hd_m.stopping ? HD_WS_BACKOFF : start_worker(id);
        break;
    case HD_SE_READY:
        /* what p replaces drains now (an older replacement that gets
         * READY drains what it replaced, as the newest will drain it) */
        drain_older(id, p);
        if (p == s->cur && s->state == HD_WS_STARTING)
            next = HD_WS_RUNNING;
        break;
    case HD_SE_EXIT:
        if (p != s->cur)
            break; /* an old or draining one */
        s->cur = NULL;
        if (hd_m.stopping || !slot_active(s))
            break;
        /* a replacement that died before READY: the old process keeps
         * serving until the next replacement is READY */
        hd_shm_note_restart(hd_m.shm);
        hd_admin_event_exit(id, p->pid, status);
        next = after_crash(id, p, status);
        break;
    case HD_SE_TIMER:
        if (s->state == HD_WS_BACKOFF && !hd_m.stopping && s->cur == NULL)
            next = start_worker(id);
        break;
    case HD_SE_REPLACE:
        old = s->cur;
        s->backoff_ms = 0;
        disarm_respawn(s);
        s->cur = NULL;
        next = start_worker(id);
        if (next == HD_WS_BACKOFF && old != NULL) {
            /* fork failed: keep the old one */
            s->cur = old;
            next = old->state == HD_PROC_RUNNING ? HD_WS_RUNNING
                                                 : HD_WS_STARTING;
        }
        break;
    case HD_SE_DEACTIVATE:
        next = HD_WS_OFF;
        break;
    case HD_SE_RETIRE:
        s->state = next = HD_WS_OFF;
        disarm_respawn(s);
        for (hd_proc_t *q = hd_m.procs; q != NULL; q = q->next)
            if (q->worker_id == id)
                drain(q, 1012);
        s->cur = NULL;
        /* the processes hold their own references: the socket closes
         * when the last of them is reaped */
        listener_unref(s->lst);
        s->lst = NULL;
        break;
    }
    s->state = next;
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
    int    status;
    pid_t  pid;
    double cpu;
    char   how[96];

    while ((pid = ops->reap(&status, &cpu)) > 0) {
        hd_proc_t *p;
        bool       planned;

        for (p = hd_m.procs; p != NULL && p->pid != pid; p = p->next)
            ;
        if (p == NULL) {
            if (hd_m.reap_other != NULL)
                hd_m.reap_other(pid, status);
            continue;
        }

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
        slot_on(p->worker_id, HD_SE_EXIT, p, status);
        proc_free(p);
    }
    /* a dead worker's slot takes no new connections until its successor
     * is READY: its queue waits for the successor, others take the rest */
    steer();
    flush_closing();

    if (hd_m.stopping && hd_m.procs == NULL)
        ops->loop_break();
}

/* ---- start, reload, stop ------------------------------------------------ */

int
hd_sup_start(void)
{
    for (unsigned i = 0; i < (unsigned) hd_m.conf->workers; i++) {
        if (hd_m.slots[i].lst != NULL)
            continue; /* inherited (hd_sup_adopt()) */
        hd_m.slots[i].lst = listener_open(hd_m.conf);
        if (hd_m.slots[i].lst == NULL)
            return listen_err;
    }
    hd_m.nworkers = (unsigned) hd_m.conf->workers;
    hd_shm_note_start(hd_m.shm, hd_m.nworkers);
    for (unsigned i = 0; i < hd_m.nworkers; i++)
        slot_on(i, HD_SE_START, NULL, 0);
    return 0;
}

void
hd_sup_reload(void)
{
    hd_conf_errors_t errs = { 0 };
    hd_conf_t       *nc = NULL;
    hd_listener_t   *nls[HD_WORKERS_MAX] = { 0 };
    bool             listen_changed, worker_changed;
    unsigned         oldn, newn, i;

    if (hd_m.stopping || hd_m.unhealthy_t != NULL)
        return;
    if (hd_m.upgrading) {
        /* the sockets are being handed over: a reload now would change
         * the groups under the new master's feet */
        hd_log_warn("reload refused: a binary upgrade is in progress; "
                    "reload the new master once it has taken over");
        return;
    }
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
        hd_admin_event("reload failed", "configuration errors, see the log");
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
                hd_admin_event("reload failed", "cannot listen");
                hd_sdnotify_ready("running; last reload failed, see the log");
                return;
            }
        }
    }

    if (hd_log_configure(nc->log_level, nc->log_format, nc->log_file) < 0)
        hd_log_error("reload: cannot open log file %s; keeping the old one",
                     nc->log_file ? nc->log_file : "(stderr)");
    else
        send_log_settings(nc);
    hd_conf_register_secrets(nc);
    for (i = 0; i < nc->nwarnings; i++)
        hd_log_warn("reload: %s", nc->warnings[i]);

    hd_m.generation++;
    {
        hd_conf_t *old = hd_m.conf;
        hd_m.conf = nc;
        hd_m.nworkers = newn;
        /* the JWKS fetcher still looks at the old config while it moves to
         * the new one: free the old one only after (ASan caught the read) */
        if (hd_m.jwks_reconf != NULL)
            hd_m.jwks_reconf(nc);
        hd_conf_free(old);
    }

    for (i = 0; i < newn && i < oldn; i++) {
        hd_wslot_t *s = &hd_m.slots[i];
        if (!worker_changed && s->state != HD_WS_FATAL)
            continue;
        if (nls[i] != NULL) {
            listener_unref(s->lst);
            s->lst = listener_ref(nls[i]);
        }
        slot_on(i, HD_SE_REPLACE, NULL, 0);
    }
    for (i = oldn; i < newn; i++) {
        hd_wslot_t *s = &hd_m.slots[i];
        s->lst = nls[i] != NULL ? listener_ref(nls[i]) : listener_open(nc);
        if (s->lst != NULL)
            slot_on(i, HD_SE_START, NULL, 0);
    }
    /* all of them out of the steering before the first one hears of it */
    for (i = newn; i < oldn; i++)
        slot_on(i, HD_SE_DEACTIVATE, NULL, 0);
    for (i = newn; i < oldn; i++)
        slot_on(i, HD_SE_RETIRE, NULL, 0);
    for (i = 0; i < newn; i++)
        listener_unref(nls[i]); /* slots and processes hold their refs */

    steer();

    hd_shm_set_workers_expected(hd_m.shm, newn);
    hd_shm_note_reload(hd_m.shm, true, hd_m.generation);
    hd_admin_event("reload", NULL);
    if (hd_admin_reconfigure(nc) < 0)
        hd_log_error("reload: admin server could not be reconfigured");
    hd_log_info("reload done: generation %u, %u workers%s", hd_m.generation,
                newn, worker_changed ? ", workers replaced" : "");
    hd_sdnotify_ready("running");
}

static void
kill_cb(void *arg)
{
    (void) arg;
    for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next) {
        hd_log_warn("worker %u (pid %d) did not exit in time; killing it",
                    p->worker_id, (int) p->pid);
        ops->kill(p->pid, SIGKILL);
    }
}

/*
 * The graceful drain: every worker closes its clients with 1001 within
 * timeouts.shutdown_ms; the master kills what is left.
 */
static void
stop_draining(void)
{
    hd_m.stopping = true;
    for (unsigned i = 0; i < HD_WORKERS_MAX; i++)
        disarm_respawn(&hd_m.slots[i]);
    hd_log_info("graceful stop: draining workers (up to %d ms)",
                hd_m.conf->shutdown_ms);
    for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next) {
        p->state = HD_PROC_RUNNING; /* re-drain even a draining one */
        drain(p, 1001);
    }
    hd_m.kill_t = ops->timer_new(kill_cb, NULL);
    ops->timer_add(hd_m.kill_t, (uint64_t) hd_m.conf->shutdown_ms * 9 / 10);
    hd_admin_stop();
    if (hd_m.procs == NULL)
        ops->loop_break();
}

static void
unhealthy_cb(void *arg)
{
    (void) arg;
    stop_draining();
}

/*
 * SIGTERM/SIGINT (graceful) and SIGQUIT (immediate). A graceful stop
 * first answers /health with 503 for timeouts.drain_health_ms while
 * everything else goes on serving, so that a load balancer's health check
 * takes the node out before a single connection is refused; then it
 * drains. A second graceful request during either phase makes the stop
 * immediate; once immediate, a later request of either kind changes
 * nothing (it used to start the graceful path again and leak its kill
 * timer).
 */
void
hd_sup_shutdown(bool immediate)
{
    if (hd_m.immediate)
        return;
    if (hd_m.handed_over && !immediate) {
        hd_log_info("already draining after an upgrade's hand-over");
        return;
    }
    if (hd_m.stopping || hd_m.unhealthy_t != NULL)
        immediate = true; /* a second SIGTERM/SIGINT */
    else
        hd_sdnotify_stopping();
    if (hd_m.unhealthy_t != NULL)
        ops->timer_free(hd_m.unhealthy_t);
    hd_m.unhealthy_t = NULL;

    if (immediate) {
        for (unsigned i = 0; i < HD_WORKERS_MAX; i++)
            disarm_respawn(&hd_m.slots[i]);
        hd_m.stopping = hd_m.immediate = true;
        hd_log_warn("stopping now");
        for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next)
            ops->kill(p->pid, SIGKILL);
        hd_admin_stop();
        if (hd_m.procs == NULL)
            ops->loop_break();
        return;
    }
    /* during an upgrade the stop drains at once, as it always did: the
     * upgrade's own paths expect stopping to be set */
    if (hd_m.conf->drain_health_ms > 0 && hd_m.procs != NULL
        && !hd_m.upgrading) {
        hd_log_info("graceful stop: /health reports draining for %d ms, "
                    "then the workers drain",
                    hd_m.conf->drain_health_ms);
        hd_m.unhealthy_t = ops->timer_new(unhealthy_cb, NULL);
        ops->timer_add(hd_m.unhealthy_t, (uint64_t) hd_m.conf->drain_health_ms);
        return;
    }
    stop_draining();
}

const char *
hd_sup_health_override(void)
{
    return hd_m.stopping || hd_m.unhealthy_t != NULL ? "draining" : NULL;
}

void
hd_sup_signal_all(int sig)
{
    for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next)
        ops->kill(p->pid, sig);
}

void
hd_sup_close_listeners(void)
{
    for (unsigned i = 0; i < HD_WORKERS_MAX; i++) {
        hd_wslot_t *s = &hd_m.slots[i];
        listener_unref(s->lst);
        s->lst = NULL;
        if (s->respawn_t != NULL)
            ops->timer_free(s->respawn_t);
        s->respawn_t = NULL;
    }
    while (hd_m.procs != NULL) {
        hd_proc_t *p = hd_m.procs;
        hd_m.procs = p->next;
        proc_free(p);
    }
    while (hd_m.nspare > 0) /* inherited by an upgrade, never used */
        listener_unref(hd_m.spare[--hd_m.nspare]);
    if (hd_m.kill_t != NULL)
        ops->timer_free(hd_m.kill_t);
    hd_m.kill_t = NULL;
    if (hd_m.unhealthy_t != NULL)
        ops->timer_free(hd_m.unhealthy_t);
    hd_m.unhealthy_t = NULL;
    /* at exit nothing can be forked any more: close what still waits */
    while (hd_m.closing != NULL) {
        hd_listener_t *l = hd_m.closing;
        hd_m.closing = l->next_closing;
        listener_close(l);
    }
}

/* ---- binary upgrade ------------------------------------------------------
 *
 * The new master inherits each active slot's listen sockets. They are the
 * same kernel sockets, so the SO_REUSEPORT groups do not change: the new
 * master rebuilds our model of each group's member array from the indices
 * we pass, and its steering programs then name the same sockets ours do.
 * For that the model must be exact at the hand-over: no retiring socket
 * still open, no worker starting (it may hold copies), none draining.
 */

const char *
hd_sup_upgrade_refusal(bool *transient)
{
    bool        tmp;
    const char *why = NULL;

    transient = transient != NULL ? transient : &tmp;
    *transient = false;
    if (hd_m.stopping || hd_m.unhealthy_t != NULL)
        return "stopping";
    if (hd_m.upgrading)
        return "an upgrade is already in progress";
    for (hd_rgroup_t *g = hd_m.groups; g != NULL; g = g->next)
        if (g->broken)
            return "a listen group's steering model is unreliable";
    if (hd_m.closing != NULL)
        why = "retired listen sockets are still draining";
    for (hd_proc_t *p = hd_m.procs; why == NULL && p != NULL; p = p->next)
        if (p->state != HD_PROC_RUNNING)
            why = "a worker is starting or draining (a reload or a "
                  "respawn is in progress)";
    for (unsigned i = 0; why == NULL && i < hd_m.nworkers; i++)
        if (hd_m.slots[i].state != HD_WS_RUNNING)
            why = "a worker slot is not running";
    *transient = why != NULL;
    return why;
}

unsigned
hd_sup_export(hd_inherit_sock_t *out, unsigned max)
{
    unsigned n = 0;

    for (unsigned i = 0; i < hd_m.nworkers; i++) {
        const hd_listener_t *l = hd_m.slots[i].lst;

        for (unsigned k = 0; l != NULL && k < l->n && n < max; k++) {
            const hd_rgroup_t *g = l->group[k];
            hd_inherit_sock_t *e = &out[n++];

            memset(e, 0, sizeof(*e));
            e->slot = i;
            e->li = k;
            e->fd = l->fd[k];
            e->gidx = g != NULL ? hd_reuseport_group_index(&g->arr, l) : -1;
            e->port = g != NULL ? g->port : 0;
            e->v6only = g != NULL && g->v6only;
            snprintf(e->address, sizeof(e->address), "%s",
                     g != NULL ? g->address : "");
        }
    }
    return n;
}

/* Does slot's inherited set match the configured listeners exactly? */
static bool
inherit_matches(const hd_inherit_sock_t *in, unsigned n, unsigned slot)
{
    unsigned cnt = 0;

    if (slot >= (unsigned) hd_m.conf->workers)
        return false;
    for (unsigned i = 0; i < n; i++) {
        const hd_listen_t *lc;

        if (in[i].slot != slot)
            continue;
        cnt++;
        if (in[i].li >= hd_m.conf->nlistens)
            return false;
        lc = &hd_m.conf->listens[in[i].li];
        if (lc->port != in[i].port || lc->ipv6_only != in[i].v6only
            || strcmp(lc->address, in[i].address) != 0)
            return false;
    }
    return cnt == hd_m.conf->nlistens;
}

void
hd_sup_adopt(const hd_inherit_sock_t *in, unsigned n)
{
    hd_listener_t *sets[HD_WORKERS_MAX] = { 0 };
    hd_rgroup_t   *grp[HD_INHERIT_MAX];

    for (unsigned i = 0; i < n; i++) {
        hd_listener_t *l;
        hd_listen_t    lc = { 0 };

        if (in[i].slot >= HD_WORKERS_MAX || in[i].li >= HD_LISTEN_MAX) {
            grp[i] = NULL;
            ops->close(in[i].fd);
            continue;
        }
        if ((l = sets[in[i].slot]) == NULL) {
            l = sets[in[i].slot] = hd_calloc(1, sizeof(*l));
            l->refs = 1;
        }
        lc.address = (char *) in[i].address;
        lc.port = in[i].port;
        lc.ipv6_only = in[i].v6only;
        grp[i] = group_for(&lc);
        l->fd[in[i].li] = in[i].fd;
        l->group[in[i].li] = grp[i];
        if (in[i].li + 1 > l->n)
            l->n = in[i].li + 1;
    }
    /* each group's members in the kernel's order; a hole means the model
     * cannot be trusted: no steering on that group then */
    for (hd_rgroup_t *g = hd_m.groups; g != NULL; g = g->next) {
        unsigned cnt = 0;

        for (unsigned i = 0; i < n; i++)
            cnt += grp[i] == g;
        for (unsigned k = 0; k < cnt && !g->broken; k++) {
            unsigned i;

            for (i = 0; i < n; i++)
                if (grp[i] == g && in[i].gidx == (int) k)
                    break;
            if (i == n || hd_reuseport_group_add(&g->arr, sets[in[i].slot]) < 0)
                g->broken = true;
        }
        if (g->broken)
            hd_log_warn("inherited listen sockets on %s port %d: steering "
                        "model incomplete, not steering",
                        g->address, g->port);
    }
    for (unsigned slot = 0; slot < HD_WORKERS_MAX; slot++) {
        if (sets[slot] == NULL)
            continue;
        if (inherit_matches(in, n, slot)) {
            hd_m.slots[slot].lst = sets[slot];
        } else {
            hd_log_info("inherited listen sockets of worker %u are not "
                        "used by this configuration; closing them once "
                        "the old master is gone",
                        slot);
            hd_m.spare[hd_m.nspare++] = sets[slot];
        }
    }
}

void
hd_sup_release_spares(void)
{
    while (hd_m.nspare > 0)
        listener_unref(hd_m.spare[--hd_m.nspare]);
    steer();
}

bool
hd_sup_all_running(void)
{
    for (unsigned i = 0; i < hd_m.nworkers; i++)
        if (hd_m.slots[i].state != HD_WS_RUNNING)
            return false;
    return hd_m.nworkers > 0;
}

void
hd_sup_steer(void)
{
    steer();
}

void
hd_sup_handover(uint16_t code, uint32_t window_ms)
{
    handover_window_ms = window_ms;
    hd_m.handed_over = true;
    hd_m.stopping = true;
    for (unsigned i = 0; i < HD_WORKERS_MAX; i++)
        disarm_respawn(&hd_m.slots[i]);
    for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next)
        drain(p, code);
    if (hd_m.procs == NULL)
        ops->loop_break();
}
