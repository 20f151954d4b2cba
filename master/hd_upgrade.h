/*
 * Binary upgrade without downtime (SIGUSR2), as nginx does it: the running
 * ("old") master fork+execs the binary it was started from, handing it
 * every active slot's listen sockets and the admin socket as inherited
 * descriptors ($HERALD_INHERIT names them) and one end of a status
 * socketpair. The new master loads its config, adopts the sockets instead
 * of binding, starts its workers and writes 'R' once all are READY. The
 * old master waits upgrade.grace_ms more, then hands over: it passes
 * MAINPID to systemd, stops its admin server, writes 'G' (the new master
 * now serves /metrics and /health and reports READY=1 as the main
 * process), and drains its workers with 1012 over upgrade.drain_ms; the
 * new workers accept from the same sockets all along, so no queue ever
 * closes. Any failure before the hand-over leaves the old master serving.
 */
#ifndef HD_UPGRADE_H
#define HD_UPGRADE_H

#include <stdbool.h>

#include "hd_master.h"

#define HD_INHERIT_ENV "HERALD_INHERIT"

/* Remember the binary (/proc/self/exe) and argv, before argv is reused
 * for the process title. */
void hd_upgrade_init(int argc, char **argv);

/* ---- old master ---- */
void hd_upgrade_start(void); /* SIGUSR2 */
/* A stop during an upgrade: the new master is told to give up (it drains
 * what it accepted with 1012) and we stop as asked. */
void hd_upgrade_abort(const char *why);

/* ---- new master ---- */
/* Read and unset $HERALD_INHERIT: 1 when started by an upgrade (the
 * sockets are adopted by hd_upgrade_adopt(), after the config loaded), 0
 * when not, -errno (printed) when it is malformed or names descriptors
 * that are not what it says: the caller must exit then. */
int  hd_upgrade_inherited(void);
void hd_upgrade_adopt(void);
/* After hd_sup_start(): report READY to the old master when the workers
 * are, take over on its 'G'. */
void hd_upgrade_child_start(void);
/* SIGTERM before the take-over: give the sockets back (drain with 1012,
 * stop accepting at once). True when handled. */
bool hd_upgrade_child_abort(void);

void hd_upgrade_stop(void); /* free what is left, at exit */

/* The $HERALD_INHERIT format, exposed for the unit tests: "1;s=FD;a=FD,
 * PORT,ADDRESS;l=SLOT,LI,FD,GROUP_INDEX,PORT,V6ONLY,ADDRESS;..." (the
 * address last: IPv6 literals have colons but no ',' or ';'). Returns
 * the number of l= entries, or -EINVAL. */
int hd_upgrade_parse(const char *s, int *status_fd, int *admin_fd,
                     char *admin_addr, size_t admin_len, int *admin_port,
                     hd_inherit_sock_t *out, unsigned max);

#endif
