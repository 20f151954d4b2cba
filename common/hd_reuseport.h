/*
 * Steering inside a SO_REUSEPORT group with a classic BPF program
 * (SO_ATTACH_REUSEPORT_CBPF), so that new connections go only to the
 * sockets we choose: the active slots, never a retiring one.
 *
 * The kernel keeps a group's listening sockets in an array, in the order
 * they called listen(); the program returns an index into that array.
 * When a member closes, the kernel moves the LAST member into its place
 * (net/core/sock_reuseport.c, __reuseport_detach_sock()), so a close in
 * the middle renumbers one socket. Callers keep a model of the array with
 * hd_reuseport_group_* below and must make sure each close() of a member
 * is the last reference to it (no forked child still holding a copy), or
 * the model and the kernel disagree.
 *
 * An index the program returns that is out of range makes the kernel fall
 * back to its own hash, so a stale program degrades to plain SO_REUSEPORT,
 * never to refused connections.
 */
#ifndef HD_REUSEPORT_H
#define HD_REUSEPORT_H

#include <stdint.h>

/* Most sockets a program can steer to (bounded by the program size). */
#define HD_REUSEPORT_MAX 1024

/*
 * Attach to fd's group a program that picks, for each new connection,
 * idx[h % n] where h mixes the client's source address and TCP port
 * (IPv4 with any IHL, IPv6 without extension headers). idx[] are group
 * array indices. n is
 * 1..HD_REUSEPORT_MAX. Replaces any program the group had. fd must be a
 * listening member of the group. Returns 0 or -errno.
 */
int hd_reuseport_steer(int fd, const uint16_t *idx, unsigned n);

/* Remove the group's program (back to the kernel's hash). 0 or -errno. */
int hd_reuseport_unsteer(int fd);

/*
 * A model of one group's listening array. Members are opaque pointers
 * (the caller's listener objects); the array holds at most cap of them.
 */
typedef struct hd_reuseport_group {
    void   **sock;
    unsigned n, cap;
} hd_reuseport_group_t;

/* listen() added a member: it goes at the end. 0, or -ENOSPC. */
int hd_reuseport_group_add(hd_reuseport_group_t *g, void *member);
/* The last reference to a member was closed: the last member moves into
 * its place. Unknown members are ignored. */
void hd_reuseport_group_remove(hd_reuseport_group_t *g, void *member);
/* The member's index, or -1 (not a member: a sentinel, not an -errno). */
int hd_reuseport_group_index(const hd_reuseport_group_t *g, const void *member);
void hd_reuseport_group_free(hd_reuseport_group_t *g);

#endif
