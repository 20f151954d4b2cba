/*
 * Master <-> worker control channel: a SOCK_SEQPACKET socketpair per
 * worker process, one fixed-size message per packet. Types only.
 */
#ifndef HD_CTL_H
#define HD_CTL_H

#include <stdint.h>

/* Exit status a worker uses for "fatal, do not respawn" (bad config that
 * passed validation but cannot work, e.g. lws context creation failed). */
#define HD_EXIT_FATAL 78 /* EX_CONFIG */

enum hd_ctl_type {
    /* master -> worker */
    HD_CTL_DRAIN = 1, /* close every client with close_code, spread over
                           window_ms; exit when empty or when window_ms has
                           passed. Stops accepting at once unless flags has
                           HD_DRAIN_KEEP_ACCEPTING (see below). */
    HD_CTL_EXIT = 2,  /* exit now */
    HD_CTL_LOG = 3,   /* apply log settings (hd_ctl_log_msg_t): a reload
                           changed log.level, log.format or log.file */
    HD_CTL_JWKS = 4,  /* a new JWK Set: the packet carries a sealed memfd
                           (SCM_RIGHTS) with the set's JSON; the master
                           validated it */
    /* worker -> master */
    HD_CTL_READY = 100,      /* loop running, accepting */
    HD_CTL_JWKS_STALE = 101, /* a token named a kid no key has: refetch
                                the JWK Set (the master rate-limits) */
};

/*
 * HD_CTL_DRAIN flags.
 *
 * HD_DRAIN_KEEP_ACCEPTING: nobody else will accept from this worker's
 * listen socket (a slot retired by a scale-down, a socket replaced by a
 * listen change, or a shutdown), and closing a listen socket resets every
 * connection still queued on it. So the worker keeps accepting while it
 * drains; what it accepts finishes the handshake and is closed with
 * close_code at once. It exits only when it has no clients left AND
 * nothing was accepted for grace_ms (the master has already steered new
 * connections elsewhere, so the queue runs dry), or at the window's end.
 * Without the flag (a replacement worker serves the same socket) it stops
 * accepting at once.
 */
#define HD_DRAIN_KEEP_ACCEPTING 0x1u

typedef struct hd_ctl_msg {
    uint32_t type;
    uint32_t close_code; /* HD_CTL_DRAIN: 1001 shutdown, 1012 restart */
    uint32_t window_ms;  /* HD_CTL_DRAIN: drain window */
    uint32_t flags;      /* HD_CTL_DRAIN: HD_DRAIN_* */
    uint32_t grace_ms;   /* HD_CTL_DRAIN with KEEP_ACCEPTING: quiet time */
    uint32_t reserved;
} hd_ctl_msg_t;

/* HD_CTL_LOG: longer than hd_ctl_msg_t (SOCK_SEQPACKET keeps it whole);
 * a receiver reads the type from the first field of either. */
#define HD_CTL_LOG_FILE_MAX 4096

typedef struct hd_ctl_log_msg {
    uint32_t type;   /* HD_CTL_LOG */
    uint32_t level;  /* enum hd_log_level */
    uint32_t format; /* enum hd_log_format */
    uint32_t reserved;
    char     file[HD_CTL_LOG_FILE_MAX]; /* NUL-terminated; "" = stderr */
} hd_ctl_log_msg_t;

#endif
