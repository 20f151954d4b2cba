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
#include "hd_sup_ops.h"

struct event_base;

/* The SO_REUSEPORT group of one listen address: the kernel's array of its
 * listening members, modelled (see hd_reuseport.h) so the master can steer
 * new connections to the sockets of running, active slots only. */
typedef struct hd_rgroup {
    char                *address;
    int                  port;
    bool                 v6only; /* a dual-stack "::" is a group of its own */
    hd_reuseport_group_t arr;
    bool                 broken; /* model unreliable: steer no more */
    struct hd_rgroup    *next;
} hd_rgroup_t;

/* A slot's listen sockets, one per configured listener (conf->listens[i]
 * is fd[i]), shared by the slot and the processes serving it. They are
 * closed together when the last reference goes: only then can a retiring
 * slot's queues be dropped. */
typedef struct hd_listener {
    int                 fd[HD_LISTEN_MAX];
    hd_rgroup_t        *group[HD_LISTEN_MAX]; /* NULL: not modelled */
    unsigned            n;
    unsigned            refs;
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
    uint64_t           seq; /* spawn order: older processes of a slot are
                               drained when a newer one is READY */
    int                shm_idx;
    int                ctl_fd;
    void              *ctl_w;
    hd_sup_timer_t    *drain_kill_t; /* SIGKILL past a reload drain */
    uint32_t           generation;
    enum hd_proc_state state;
    uint64_t           started_ms;
    hd_listener_t     *lst;
    hd_lease_t        *lease; /* its holdings in hd_m.limits; freed
                                 by hd_lease_reclaim() after reap */
    struct hd_proc    *next;
} hd_proc_t;

/*
 * A worker slot's life (hd_supervisor.c, slot_on() is the only place that
 * changes it):
 *
 *   OFF --START--> STARTING --READY--> RUNNING
 *   STARTING/RUNNING --EXIT--> BACKOFF --TIMER--> STARTING
 *   STARTING/RUNNING --EXIT (fatal status)--> FATAL
 *   any active --REPLACE--> STARTING (the older process serves until the
 *                           new one is READY, then drains)
 *   any --DEACTIVATE--> OFF --RETIRE--> OFF (its processes drain)
 *
 * While the master stops, no event starts a process.
 */
enum hd_wslot_state {
    HD_WS_OFF = 0,  /* not active: never started, or retired */
    HD_WS_STARTING, /* cur forked, READY not seen */
    HD_WS_RUNNING,  /* cur READY */
    HD_WS_BACKOFF,  /* no cur: the respawn timer is armed */
    HD_WS_FATAL,    /* cur exited with HD_EXIT_FATAL: wait for a reload */
};

enum hd_slot_event {
    HD_SE_START,      /* activate with s->lst set */
    HD_SE_READY,      /* a process of the slot reported READY */
    HD_SE_EXIT,       /* a process of the slot was reaped */
    HD_SE_TIMER,      /* the respawn timer fired */
    HD_SE_REPLACE,    /* reload: a new process, the old drained once it
                         is READY */
    HD_SE_DEACTIVATE, /* reload: scaled down, out of the steering */
    HD_SE_RETIRE,     /* then: its processes drain, its socket goes */
};

typedef struct hd_wslot {
    enum hd_wslot_state state;
    hd_listener_t      *lst;
    hd_proc_t          *cur; /* the newest process serving it, if any */
    hd_sup_timer_t     *respawn_t;
    uint64_t            backoff_ms;
    unsigned            crashes; /* in the current crash window */
    uint64_t            crash_window_ms;
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
    /* a graceful stop's first phase (timeouts.drain_health_ms): /health
     * fails while everything still serves; the drain starts when it fires */
    hd_sup_timer_t *unhealthy_t;
    hd_rgroup_t    *groups;  /* reuseport groups with open members */
    hd_listener_t  *closing; /* unreferenced, close deferred while a
                                       forked child may hold a copy */
    bool            steer_warned;
    /* binary upgrade (hd_upgrade.c): between SIGUSR2 and the hand-over
     * (old master) or from exec to the take-over (new master) */
    bool upgrading;
    /* old master after the hand-over: the listen sockets belong to the
     * new master now; never steer them again, drain and exit */
    bool           handed_over;
    hd_listener_t *spare[HD_WORKERS_MAX]; /* inherited, not used */
    unsigned       nspare;
    /* a child that is not a worker was reaped (the upgrade's new master) */
    void (*reap_other)(pid_t pid, int status);
    void (*all_ready)(void); /* every active slot RUNNING (after a READY) */
    hd_sup_timer_t *kill_t;
    uint64_t        next_seq;
    int             exit_code;
    /* JWK Set hooks (main.c sets them; NULL in the supervisor's tests) */
    void (*jwks_ready)(int ctl_fd);         /* a worker is ready */
    void (*jwks_stale)(void);               /* a worker saw an unknown kid */
    void (*jwks_reconf)(const hd_conf_t *); /* a reload swapped the config */
} hd_master_t;

extern hd_master_t hd_m;

/* Open the slots' listen sockets and fork the workers: 0, or the -errno
 * of the listen socket that could not be opened (logged). */
int  hd_sup_start(void);
void hd_sup_reap(void);               /* SIGCHLD */
void hd_sup_reload(void);             /* SIGHUP */
void hd_sup_shutdown(bool immediate); /* SIGTERM/SIGINT, SIGQUIT */
void hd_sup_signal_all(int sig);      /* forward SIGUSR1 */
/* "draining" while a stop is pending or under way (/health answers 503
 * with it), NULL otherwise */
const char *hd_sup_health_override(void);
void        hd_sup_close_listeners(void);

/* ---- binary upgrade (hd_upgrade.c drives these) ---- */

/* One inherited listen socket: slot's li-th listener, its index in its
 * SO_REUSEPORT group's kernel array (the steering program's numbers). */
typedef struct hd_inherit_sock {
    unsigned slot, li;
    int      fd;
    int      gidx;
    int      port;
    bool     v6only;
    char     address[72];
} hd_inherit_sock_t;

#define HD_INHERIT_MAX (HD_WORKERS_MAX * HD_LISTEN_MAX)

/* NULL when an upgrade may start now, else why not; *transient (may be
 * NULL) tells whether the reason passes by itself (a reload or respawn
 * under way) or needs the operator (a stop, a broken steering model). */
const char *hd_sup_upgrade_refusal(bool *transient);
/* The active slots' sockets, for the new master: their count (<= max). */
unsigned hd_sup_export(hd_inherit_sock_t *out, unsigned max);
/* New master, before hd_sup_start(): adopt inherited sockets (the slots
 * whose listeners match the config; the rest are spares, kept open until
 * hd_sup_release_spares() so the steering model stays exact). */
void hd_sup_adopt(const hd_inherit_sock_t *in, unsigned n);
void hd_sup_release_spares(void);
bool hd_sup_all_running(void);
void hd_sup_steer(void);
/* Old master: the new one serves; drain every worker with code over
 * window_ms (they stop accepting at once) and exit when all are gone. */
void hd_sup_handover(uint16_t code, uint32_t window_ms);

#endif
