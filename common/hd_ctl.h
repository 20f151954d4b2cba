/*
 * Master <-> worker control channel: a SOCK_SEQPACKET socketpair per
 * worker process, one fixed-size message per packet. Types only.
 */
#ifndef HD_CTL_H
#define HD_CTL_H

#include <stdint.h>

/* Exit status a worker uses for "fatal, do not respawn" (bad config that
 * passed validation but cannot work, e.g. lws context creation failed). */
#define HD_EXIT_FATAL  78   /* EX_CONFIG */

enum hd_ctl_type {
    /* master -> worker */
    HD_CTL_DRAIN = 1,   /* stop accepting; close every client with
                           close_code, spread over window_ms; exit when
                           empty or when window_ms has passed */
    HD_CTL_EXIT  = 2,   /* exit now */
    /* worker -> master */
    HD_CTL_READY = 100, /* loop running, accepting */
};

typedef struct hd_ctl_msg {
    uint32_t type;
    uint32_t close_code;   /* HD_CTL_DRAIN: 1001 shutdown, 1012 restart */
    uint32_t window_ms;    /* HD_CTL_DRAIN: drain window */
    uint32_t reserved;
} hd_ctl_msg_t;

#endif
