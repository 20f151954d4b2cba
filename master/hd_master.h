/* Master-private state, shared by main.c and hd_supervisor.c. */
#ifndef HD_MASTER_H
#define HD_MASTER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "hd_conf.h"
#include "hd_limits.h"
#include "hd_shm.h"

#include "hd_reuseport.h"

struct event_base;
struct event;

/* The SO_REUSEPORT group of one listen address: the kernel's array of its
 * listening members, modelled (see hd_reuseport.h) so the master can steer
 * new connections to the sockets of running, active slots only. */
typedef struct hd_rgroup {
    char                *address;
    int                  port;
    hd_reuseport_group_t arr;
    bool                 broken; /* model unreliable: steer no more */
    struct hd_rgroup    *next;
} hd_rgroup_t;

/* A listen socket, shared by a slot and the processes serving it. It is
 * closed when the last reference goes: only then can a retiring slot's
 * queue be dropped. */
typedef struct hd_listener {
    int                 fd;
    unsigned            refs;
    hd_rgroup_t        *group;        /* NULL: not modelled */
    struct hd_listener *next_closing; /* on hd_m.closing */
} hd_listener_t;

enum hd_proc_state {
    HD_PROC_STARTING = 0, /* forked, READY not seen */
    HD_PROC_RUNNING,
    HD_PROC_DRAINING, /* told to drain */
};

typedef struct hd_proc {
    pid_t              pid;
    unsigned           worker_id;
    int                shm_idx;
    int                ctl_fd;
    struct event      *ctl_ev;
    struct event      *drain_kill_ev; /* SIGKILL past a reload drain */
    uint32_t           generation;
    enum hd_proc_state state;
    uint64_t           started_ms;
    hd_listener_t     *lst;
    hd_lease_t        *lease;    /* its holdings in hd_m.limits; freed
                                       by hd_lease_reclaim() after reap */
    struct hd_proc    *replaces; /* drained once this one is READY */
    struct hd_proc    *next;
} hd_proc_t;

typedef struct hd_wslot {
    bool           active;
    bool           fatal; /* exited with HD_EXIT_FATAL */
    hd_listener_t *lst;
    hd_proc_t     *cur;         /* the process serving it, if any */
    hd_proc_t     *pending_old; /* to drain once a respawned
                                       replacement is READY */
    struct event  *respawn_ev;
    uint64_t       backoff_ms;
    unsigned       crashes; /* in the current crash window */
    uint64_t       crash_window_ms;
} hd_wslot_t;

typedef struct hd_master {
    struct event_base *base;
    hd_conf_t         *conf;
    hd_shm_t          *shm;
    hd_limits_t       *limits; /* connection-limit tables; NULL: off */
    uint32_t           generation;
    unsigned           nworkers; /* active slots = conf->workers */
    hd_wslot_t         slots[HD_WORKERS_MAX];
    hd_proc_t         *procs; /* every live worker process */
    bool               stopping;
    bool               immediate;
    hd_rgroup_t       *groups;  /* reuseport groups with open members */
    hd_listener_t     *closing; /* unreferenced, close deferred while a
                                       forked child may hold a copy */
    bool               steer_warned;
    struct event      *kill_ev;
    int                exit_code;
} hd_master_t;

extern hd_master_t hd_m;

int  hd_sup_start(void);              /* open listeners, fork workers */
void hd_sup_reap(void);               /* SIGCHLD */
void hd_sup_reload(void);             /* SIGHUP */
void hd_sup_shutdown(bool immediate); /* SIGTERM/SIGINT, SIGQUIT */
void hd_sup_signal_all(int sig);      /* forward SIGUSR1 */
void hd_sup_close_listeners(void);

#endif
