/*
 * The worker process: one libev loop serving WebSockets (libwebsockets on
 * its libev plugin, foreign loop), the slot's inherited listen socket and
 * the control socket to the master.
 */
#ifndef HD_WORKER_H
#define HD_WORKER_H

#include <stdint.h>

#include "hd_conf.h"
#include "hd_limits.h"
#include "hd_shm.h"

typedef struct hd_worker_args {
    unsigned worker_id;  /* logical slot, 0-based */
    int      shm_idx;    /* process slot in the shm segment */
    uint32_t generation; /* config generation it was started with */
    int      listen_fds[HD_LISTEN_MAX]; /* SO_REUSEPORT sockets owned by the
                                           master, conf->listens[i] each */
    unsigned nlisten;
    int      ctl_fd;       /* worker end of the control socketpair */
    const hd_conf_t *conf; /* inherited through fork, never freed */
    hd_shm_t        *shm;
    hd_limits_t     *limits; /* node-wide limit tables (NULL: off) */
    hd_lease_t      *lease;  /* this worker's own lease in them */
} hd_worker_args_t;

/*
 * Run the worker until it is told to drain and has drained, or its master
 * goes away. Never returns: exits 0, or HD_EXIT_FATAL when it cannot run
 * at all (the master then stops respawning it).
 */
void hd_worker_main(const hd_worker_args_t *a) __attribute__((noreturn));

#endif
