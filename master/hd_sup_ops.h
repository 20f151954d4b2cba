/*
 * The supervisor's seam to the operating system: fork, kill, the control
 * socket, listen sockets and their steering, reaping, the clock and
 * timers. hd_sup_os.c has the real ones (main.c installs them); the unit
 * tests in tests/unit/master/ install fakes and drive reload, scaling,
 * replacement, crash loops, respawn and steering without a process.
 */
#ifndef HD_SUP_OPS_H
#define HD_SUP_OPS_H

#include <stdint.h>
#include <sys/types.h>

#include "hd_conf.h"
#include "hd_ctl.h"
#include "hd_worker.h"

typedef struct hd_sup_timer hd_sup_timer_t;
typedef void                hd_sup_timer_cb(void *arg);

typedef struct hd_sup_ops {
    /* Fork a worker that runs hd_worker_main(a) (never returns there),
     * closing the master's end of its control socket in the child: its
     * pid, or -errno. */
    pid_t (*fork_worker)(const hd_worker_args_t *a, int master_ctl_fd);
    int (*kill)(pid_t pid, int sig); /* 0 or -errno */
    /* Reap one exited child without waiting: its pid, 0 when none is
     * left; *status as waitpid(), *cpu_s its CPU time. */
    pid_t (*reap)(int *status, double *cpu_s);
    /* The control socketpair; sv[0] is the master's. 0 or -errno. */
    int (*ctl_pair)(int sv[2]);
    /* Send one whole control message without blocking: 0 or -errno. */
    int (*ctl_send)(int fd, const hd_ctl_msg_t *m);
    /* The same for HD_CTL_LOG (a longer message). */
    int (*ctl_send_log)(int fd, const hd_ctl_log_msg_t *m);
    /* Watch the master's end of p's control socket: cb(arg) when readable
     * (NULL: nothing to watch). */
    void *(*ctl_watch)(int fd, hd_sup_timer_cb *cb, void *arg);
    void (*ctl_unwatch)(void *w);
    /* Receive one control message: 1, 0 when none is waiting, -errno
     * (-EPIPE at end of file) when the peer is gone. */
    int (*ctl_recv)(int fd, hd_ctl_msg_t *m);
    /* A SO_REUSEPORT listen socket for one listener: fd or -errno (*what
     * names the failing call). */
    int (*listen)(const hd_listen_t *l, const char **what);
    void (*close)(int fd);
    /* Connections waiting in a listen socket's queue, -errno if unknown. */
    int (*queued)(int fd);
    /* Steer the group of fd to the members idx[0..n-1], or back to the
     * kernel's hash: 0 or -errno. */
    int (*steer)(int fd, const uint16_t *idx, unsigned n);
    int (*unsteer)(int fd);
    uint64_t (*now_ms)(void); /* monotonic */
    /* One-shot timers: cb(arg) once, ms after the last add. */
    hd_sup_timer_t *(*timer_new)(hd_sup_timer_cb *cb, void *arg);
    void (*timer_add)(hd_sup_timer_t *t, uint64_t ms);
    void (*timer_del)(hd_sup_timer_t *t);
    void (*timer_free)(hd_sup_timer_t *t);
    /* Leave the master's loop (the stop is complete). */
    void (*loop_break)(void);
} hd_sup_ops_t;

/* The real ones, on hd_m.base (hd_sup_os.c). */
extern const hd_sup_ops_t hd_sup_os_ops;

/* Install ops (kept by pointer) before hd_sup_start(). */
void hd_sup_set_ops(const hd_sup_ops_t *ops);

#endif
