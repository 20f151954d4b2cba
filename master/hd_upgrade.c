/*
 * Binary upgrade: see hd_upgrade.h for the sequence. Both sides live here;
 * the supervisor only exports, adopts and hands over the sockets.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "hd_admin.h"
#include "hd_alloc.h"
#include "hd_log.h"
#include "hd_proc.h"
#include "hd_sdnotify.h"
#include "hd_time.h"
#include "hd_upgrade.h"

/* past the new master's own stop deadline: it had its chance */
#define KILL_AFTER_STOP_MS 2000

enum up_state {
    UP_IDLE = 0,
    UP_STARTING, /* old: new master forked, not READY yet */
    UP_GRACE,    /* old: READY, must stay up upgrade.grace_ms */
    UP_DONE,     /* old: handed over */
};

static struct {
    char  *exe;
    char **argv;
    /* old side */
    enum up_state state;
    pid_t         pid; /* the new master, until reaped */
    int           fd;  /* our end of the status socketpair */
    bool          eof; /* the new master closed its end */
    struct event *rd, *timer, *kill_t;
    struct event *defer_t;        /* an upgrade waits for a settled node */
    uint64_t      defer_until_ms; /* ... until then (hd_mono_ms()) */
    /* new side */
    bool              inherited, ready_sent, taken_over;
    pid_t             ppid;
    int               parent_fd;
    struct event     *prd;
    int               admin_fd, admin_port;
    char              admin_addr[72];
    hd_inherit_sock_t socks[HD_INHERIT_MAX];
    unsigned          nsocks;
} up = { .pid = -1, .fd = -1, .parent_fd = -1, .admin_fd = -1 };

void
hd_upgrade_init(int argc, char **argv)
{
    char    buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);

    /* the path, not the file: a package upgrade replaces the file there
     * and the next SIGUSR2 runs the new one */
    if (n > 0) {
        buf[n] = '\0';
        up.exe = hd_strdup(buf);
    }
    up.argv = hd_calloc((size_t) argc + 1, sizeof(char *));
    for (int i = 0; i < argc; i++)
        up.argv[i] = hd_strdup(argv[i]);
}

/* ---- old master ---------------------------------------------------------- */

static void
free_ev(struct event **ev)
{
    if (*ev != NULL)
        event_free(*ev);
    *ev = NULL;
}

static void
kill_cb(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    (void) arg;
    if (up.pid > 0) {
        hd_log_warn("upgrade: the failed new master (pid %d) is still "
                    "running; killing it",
                    (int) up.pid);
        kill(up.pid, SIGKILL);
    }
}

/* The attempt failed before the hand-over: we serve on as before. */
static void
fail(const char *why)
{
    hd_log_error("upgrade failed: %s; the running master (pid %d) keeps "
                 "serving",
                 why, (int) getpid());
    hd_shm_note_upgrade(hd_m.shm, false);
    hd_admin_event("upgrade failed", why);
    free_ev(&up.rd);
    free_ev(&up.timer);
    if (up.fd >= 0)
        close(up.fd);
    up.fd = -1;
    up.state = UP_IDLE;
    hd_m.upgrading = false;
    if (up.pid > 0) {
        /* it drains what its workers accepted (1012) and exits; SIGKILL
         * if it does not within its own stop deadline */
        kill(up.pid, SIGTERM);
        free_ev(&up.kill_t);
        up.kill_t = evtimer_new(hd_m.base, kill_cb, NULL);
        struct timeval tv = {
            (hd_m.conf->shutdown_ms + KILL_AFTER_STOP_MS) / 1000, 0
        };
        evtimer_add(up.kill_t, &tv);
    }
    /* its steering program may be the last one attached: ours again */
    hd_sup_steer();
    hd_sdnotify_ready("running; last upgrade failed, see the log");
}

static void
handover(void)
{
    char msg[64];

    up.state = UP_DONE;
    free_ev(&up.timer);
    free_ev(&up.rd);
    /* while we are still the main pid, name the new one: accepted with
     * any NotifyAccess= (the new master repeats it with READY=1) */
    snprintf(msg, sizeof(msg), "MAINPID=%d", (int) up.pid);
    hd_sdnotify(msg);
    hd_admin_stop(); /* the new master serves the same socket from now */
    if (send(up.fd, "G", 1, MSG_NOSIGNAL) != 1)
        hd_log_warn("upgrade: cannot tell the new master to take over: "
                    "%s (it takes over when we exit)",
                    strerror(errno));
    hd_log_info("upgrade: handed over to pid %d; draining the workers with "
                "close code 1012 over %d ms",
                (int) up.pid, hd_m.conf->upgrade_drain_ms);
    hd_sup_handover(1012, (uint32_t) hd_m.conf->upgrade_drain_ms);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    char why[96];

    (void) fd;
    (void) what;
    (void) arg;
    if (up.eof) {
        fail("the new master closed its status socket");
    } else if (up.state == UP_STARTING) {
        snprintf(why, sizeof(why),
                 "the new master's workers were not ready within %d ms",
                 hd_m.conf->upgrade_ready_ms);
        fail(why);
    } else if (up.state == UP_GRACE) {
        handover();
    }
}

static void
status_cb(evutil_socket_t fd, short what, void *arg)
{
    char    buf[16];
    ssize_t n;

    (void) what;
    (void) arg;
    n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        /* it is exiting: its reap (SIGCHLD, about now) says how, which
         * is the better reason to log; the timers stay as a backstop */
        free_ev(&up.rd);
        up.eof = true;
        return;
    }
    if (up.state == UP_STARTING && memchr(buf, 'R', (size_t) n) != NULL) {
        struct timeval tv = { hd_m.conf->upgrade_grace_ms / 1000,
                              (hd_m.conf->upgrade_grace_ms % 1000) * 1000 };

        up.state = UP_GRACE;
        hd_log_info("upgrade: the new master (pid %d) is ready; handing "
                    "over in %d ms unless it exits",
                    (int) up.pid, hd_m.conf->upgrade_grace_ms);
        evtimer_add(up.timer, &tv);
    }
}

static void
reap_other(pid_t pid, int status)
{
    char why[128];

    if (pid != up.pid)
        return;
    up.pid = -1;
    free_ev(&up.kill_t);
    if (WIFEXITED(status))
        snprintf(why, sizeof(why), "the new master exited with status %d",
                 WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(why, sizeof(why), "the new master was killed by signal %d",
                 WTERMSIG(status));
    else
        snprintf(why, sizeof(why), "the new master ended (status 0x%x)",
                 status);
    if (up.state == UP_STARTING || up.state == UP_GRACE) {
        fail(why);
    } else if (up.state == UP_DONE) {
        hd_log_error("upgrade: %s after the hand-over", why);
    } else {
        hd_log_info("upgrade: %s", why);
    }
}

/* The environment entry for the new master (allocated). */
static char *
inherit_env(int status_fd, int admin_fd, const hd_inherit_sock_t *s, unsigned n)
{
    size_t cap = 128 + (size_t) n * 128, len = 0;
    char  *b = hd_malloc(cap);

    len += (size_t) snprintf(b + len, cap - len, "1;s=%d", status_fd);
    if (admin_fd >= 0)
        len += (size_t) snprintf(b + len, cap - len, ";a=%d,%d,%s", admin_fd,
                                 hd_m.conf->admin_port,
                                 hd_m.conf->admin_address);
    for (unsigned i = 0; i < n && len < cap; i++)
        len += (size_t) snprintf(b + len, cap - len, ";l=%u,%u,%d,%d,%d,%d,%s",
                                 s[i].slot, s[i].li, s[i].fd, s[i].gidx,
                                 s[i].port, s[i].v6only ? 1 : 0, s[i].address);
    return b;
}

/*
 * An upgrade asked for while the node is not settled (a reload's drain, a
 * worker starting or respawning) waits for it, checked every
 * DEFER_POLL_MS, for at most DEFER_MAX_MS: the operator's SIGUSR2 (or a
 * deploy script's) is not lost to a reload that happens to be under way.
 */
#define DEFER_POLL_MS 100
#define DEFER_MAX_MS  60000

static void start_now(bool first);

static void
defer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    (void) arg;
    start_now(false);
}

void
hd_upgrade_start(void)
{
    if (up.defer_t != NULL) {
        hd_log_info("upgrade already requested: it starts once the node "
                    "has settled");
        return;
    }
    start_now(true);
}

static void
start_now(bool first)
{
    static hd_inherit_sock_t socks[HD_INHERIT_MAX];
    int                      keep[HD_INHERIT_MAX + 2];
    unsigned                 n, nkeep = 0;
    const char              *why;
    char                    *env;
    const char              *exe;
    int                      sv[2], admin_fd, err;
    sigset_t                 old;
    pid_t                    pid;
    bool                     transient = false;

    if (up.pid > 0 && up.state == UP_IDLE) {
        why = "the previous attempt's process has not exited yet";
        transient = true;
    } else {
        why = hd_sup_upgrade_refusal(&transient);
    }
    /* upgrade.binary (applied by a reload) names another binary; by
     * default the path this master was started from */
    exe = hd_m.conf->upgrade_binary != NULL ? hd_m.conf->upgrade_binary
                                            : up.exe;
    if (why == NULL && exe == NULL)
        why = "the path of the running binary is unknown";
    if (why != NULL && transient
        && (first || hd_mono_ms() < up.defer_until_ms)) {
        struct timeval tv = { 0, DEFER_POLL_MS * 1000 };
        if (first) {
            up.defer_until_ms = hd_mono_ms() + DEFER_MAX_MS;
            up.defer_t = evtimer_new(hd_m.base, defer_cb, NULL);
            hd_log_info("upgrade deferred: %s; it starts once that is "
                        "over (waiting up to %d s)",
                        why, DEFER_MAX_MS / 1000);
        }
        evtimer_add(up.defer_t, &tv);
        return;
    }
    free_ev(&up.defer_t);
    if (why != NULL) {
        if (transient)
            hd_log_warn("upgrade refused: %s, still after %d s; try again "
                        "later",
                        why, DEFER_MAX_MS / 1000);
        else
            hd_log_warn("upgrade refused: %s; try again later", why);
        return;
    }
    n = hd_sup_export(socks, HD_INHERIT_MAX);
    admin_fd = hd_admin_fd();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        hd_log_error("upgrade failed: socketpair(): %s", strerror(errno));
        return;
    }
    env = inherit_env(sv[1], admin_fd, socks, n);
    keep[nkeep++] = sv[1];
    if (admin_fd >= 0)
        keep[nkeep++] = admin_fd;
    for (unsigned i = 0; i < n; i++)
        keep[nkeep++] = socks[i].fd;

    hd_log_info("upgrade: starting %s with %u inherited listen socket%s", exe,
                n, n == 1 ? "" : "s");
    hd_proc_block_all(&old);
    pid = fork();
    if (pid == 0) {
        hd_proc_reset_signals();
        for (unsigned i = 0; i < nkeep; i++)
            (void) fcntl(keep[i], F_SETFD, 0); /* across the exec */
        (void) hd_proc_close_fds_except(keep, nkeep);
        setenv(HD_INHERIT_ENV, env, 1);
        execv(exe, up.argv);
        dprintf(2, "herald: upgrade: cannot execute %s: %s\n", exe,
                strerror(errno));
        _exit(127);
    }
    err = errno;
    hd_proc_restore_mask(&old);
    close(sv[1]);
    free(env);
    if (pid < 0) {
        close(sv[0]);
        hd_log_error("upgrade failed: fork(): %s", strerror(err));
        hd_shm_note_upgrade(hd_m.shm, false);
        return;
    }
    up.pid = pid;
    up.fd = sv[0];
    up.eof = false;
    up.state = UP_STARTING;
    hd_m.upgrading = true;
    hd_m.reap_other = reap_other;
    up.rd = event_new(hd_m.base, sv[0], EV_READ | EV_PERSIST, status_cb, NULL);
    event_add(up.rd, NULL);
    up.timer = evtimer_new(hd_m.base, timer_cb, NULL);
    {
        struct timeval tv = { hd_m.conf->upgrade_ready_ms / 1000,
                              (hd_m.conf->upgrade_ready_ms % 1000) * 1000 };
        evtimer_add(up.timer, &tv);
    }
    hd_sdnotify("STATUS=upgrading: new master starting");
}

void
hd_upgrade_abort(const char *why)
{
    if (up.state == UP_STARTING || up.state == UP_GRACE)
        fail(why);
}

/* ---- new master ---------------------------------------------------------- */

int
hd_upgrade_parse(const char *s, int *status_fd, int *admin_fd, char *admin_addr,
                 size_t admin_len, int *admin_port, hd_inherit_sock_t *out,
                 unsigned max)
{
    char    *copy, *save = NULL, *tok;
    unsigned n = 0;
    int      rc = -EINVAL;

    *status_fd = *admin_fd = -1;
    if (s == NULL || strncmp(s, "1;", 2) != 0)
        return -EINVAL;
    copy = hd_strdup(s + 2);
    for (tok = strtok_r(copy, ";", &save); tok != NULL;
         tok = strtok_r(NULL, ";", &save)) {
        int used = 0;

        if (sscanf(tok, "s=%d%n", status_fd, &used) == 1 && tok[used] == '\0') {
            continue;
        } else if (sscanf(tok, "a=%d,%d,%n", admin_fd, admin_port, &used) == 2
                   && used > 0) {
            if (strlen(tok + used) >= admin_len)
                goto fail;
            strcpy(admin_addr, tok + used);
        } else if (tok[0] == 'l' && tok[1] == '=' && n < max) {
            hd_inherit_sock_t *e = &out[n];
            int                v6;

            memset(e, 0, sizeof(*e));
            if (sscanf(tok, "l=%u,%u,%d,%d,%d,%d,%n", &e->slot, &e->li, &e->fd,
                       &e->gidx, &e->port, &v6, &used)
                    != 6
                || used == 0 || e->fd < 0
                || strlen(tok + used) >= sizeof(e->address))
                goto fail;
            e->v6only = v6 != 0;
            strcpy(e->address, tok + used);
            n++;
        } else {
            goto fail;
        }
    }
    if (*status_fd >= 0)
        rc = (int) n;
fail:
    free(copy);
    return rc;
}

/* fd is a listening socket */
static bool
is_listener(int fd)
{
    int       on = 0;
    socklen_t len = sizeof(on);

    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on;
}

int
hd_upgrade_inherited(void)
{
    const char *s = getenv(HD_INHERIT_ENV);
    int         n, type = 0;
    socklen_t   len = sizeof(type);

    if (s == NULL)
        return 0;
    n = hd_upgrade_parse(s, &up.parent_fd, &up.admin_fd, up.admin_addr,
                         sizeof(up.admin_addr), &up.admin_port, up.socks,
                         HD_INHERIT_MAX);
    /* never passed on: not to workers, not to a later upgrade */
    unsetenv(HD_INHERIT_ENV);
    /* never start fresh instead: binding the same port would make a
     * second master in the same SO_REUSEPORT group */
    if (n < 0) {
        fprintf(stderr, "herald: malformed %s\n", HD_INHERIT_ENV);
        return -EINVAL;
    }
    if (getsockopt(up.parent_fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        fprintf(stderr, "herald: %s: status fd %d is not a socket\n",
                HD_INHERIT_ENV, up.parent_fd);
        return -EBADF;
    }
    for (int i = 0; i < n; i++)
        if (!is_listener(up.socks[i].fd)) {
            fprintf(stderr, "herald: %s: fd %d is not a listening socket\n",
                    HD_INHERIT_ENV, up.socks[i].fd);
            return -EBADF;
        }
    if (up.admin_fd >= 0 && !is_listener(up.admin_fd)) {
        fprintf(stderr, "herald: %s: admin fd %d is not a listening socket\n",
                HD_INHERIT_ENV, up.admin_fd);
        return -EBADF;
    }
    up.nsocks = (unsigned) n;
    up.inherited = true;
    up.ppid = getppid();
    for (unsigned i = 0; i < up.nsocks; i++)
        (void) fcntl(up.socks[i].fd, F_SETFD, FD_CLOEXEC);
    if (up.admin_fd >= 0)
        (void) fcntl(up.admin_fd, F_SETFD, FD_CLOEXEC);
    (void) fcntl(up.parent_fd, F_SETFD, FD_CLOEXEC);
    return 1;
}

void
hd_upgrade_adopt(void)
{
    hd_sup_adopt(up.socks, up.nsocks);
    if (up.admin_fd >= 0)
        hd_admin_adopt(up.admin_fd, up.admin_addr, up.admin_port);
    up.admin_fd = -1;
    hd_m.upgrading = true;
}

static void
take_over(const char *how)
{
    char msg[96];

    up.taken_over = true;
    hd_m.upgrading = false;
    if (hd_admin_start(hd_m.base, hd_m.conf, hd_m.shm) < 0)
        hd_log_error("upgrade: cannot start the admin server on %s:%d",
                     hd_m.conf->admin_address, hd_m.conf->admin_port);
    snprintf(msg, sizeof(msg), "MAINPID=%d\nREADY=1\nSTATUS=running",
             (int) getpid());
    hd_sdnotify(msg);
    hd_shm_note_upgrade(hd_m.shm, true);
    hd_admin_event("upgrade", how);
    hd_sup_steer();
    hd_log_info("upgrade: took over from pid %d (%s)", (int) up.ppid, how);
}

static void
parent_cb(evutil_socket_t fd, short what, void *arg)
{
    char    buf[16];
    ssize_t n;

    (void) what;
    (void) arg;
    n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        if (!up.taken_over && !hd_m.stopping
            && memchr(buf, 'G', (size_t) n) != NULL)
            take_over("handed over");
        return;
    }
    /* EOF: the old master exited (or gave up on us) */
    free_ev(&up.prd);
    close(up.parent_fd);
    up.parent_fd = -1;
    if (!up.taken_over && !hd_m.stopping) {
        if (getppid() == up.ppid)
            return; /* it gave up on us: its SIGTERM follows */
        take_over("the old master is gone");
    }
    /* nobody else holds the sockets we did not adopt: close them */
    hd_sup_release_spares();
}

static void
all_ready(void)
{
    if (up.ready_sent || up.parent_fd < 0)
        return;
    up.ready_sent = true;
    hd_log_info("upgrade: workers ready; waiting for the old master (pid "
                "%d) to hand over",
                (int) up.ppid);
    if (send(up.parent_fd, "R", 1, MSG_NOSIGNAL) != 1)
        hd_log_warn("upgrade: cannot report ready: %s", strerror(errno));
}

void
hd_upgrade_child_start(void)
{
    up.prd = event_new(hd_m.base, up.parent_fd, EV_READ | EV_PERSIST, parent_cb,
                       NULL);
    event_add(up.prd, NULL);
    hd_m.all_ready = all_ready;
    if (hd_sup_all_running())
        all_ready();
}

bool
hd_upgrade_child_abort(void)
{
    if (!up.inherited || up.taken_over)
        return false;
    hd_log_warn("upgrade: stopped before the take-over; giving the sockets "
                "back (clients accepted so far are closed with 1012)");
    hd_sup_handover(1012, (uint32_t) hd_m.conf->shutdown_ms * 8 / 10);
    return true;
}

void
hd_upgrade_stop(void)
{
    free_ev(&up.rd);
    free_ev(&up.timer);
    free_ev(&up.kill_t);
    free_ev(&up.defer_t);
    free_ev(&up.prd);
    if (up.fd >= 0)
        close(up.fd);
    if (up.parent_fd >= 0)
        close(up.parent_fd);
    up.fd = up.parent_fd = -1;
    for (char **a = up.argv; a != NULL && *a != NULL; a++)
        free(*a);
    free(up.argv);
    free(up.exe);
    up.argv = NULL;
    up.exe = NULL;
}
