/*
 * Admission: the node-wide connection limits (shm/hd_limits.h) on the
 * worker's side. Right after accept4() the node and per-IP limits are
 * checked before anything is allocated for the connection (refused: HTTP
 * 503 with Retry-After, then close); per-user and per-tenant are checked
 * at "connect". Whatever a connection holds is given back when lws
 * destroys its wsi (every path: closed WebSockets, HTTP requests, peers
 * that never finished a handshake).
 */
#ifndef HD_ADMIT_H
#define HD_ADMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct lws;

int  hd_admit_init(int max_fds);
void hd_admit_shutdown(void);
/* After accept4(): 0 to go on, or when refused (the fd is then closed) the
 * -errno of hd_limits_acquire*() (-EDQUOT at the limit, -ENOSPC table full). */
int hd_admit_accept(int fd, const struct sockaddr *peer);
/* lws adopted fd as wsi: remember the pair for hd_admit_destroyed(). */
void hd_admit_adopted(struct lws *wsi, int fd);
/* Is a connection that lws adopted still without a complete upgrade or
 * HTTP request (its handshake under way, bounded by handshake_ms)? */
bool hd_admit_pending(void);
/* an HTTP request (not an upgrade) arrived complete: no handshake deadline */
void hd_admit_request(int fd);
/* lws_adopt failed and closed fd itself */
void hd_admit_failed(int fd);
/* LWS_CALLBACK_WSI_DESTROY: give back what the wsi's fd held. */
void hd_admit_destroyed(struct lws *wsi);
/* At connect: per-user and per-tenant. 0, or hd_limits_acquire()'s -errno
 * (-EDQUOT, -ENOSPC, ...) when over a limit (which one is in *what).
 * tenant may be NULL. */
int hd_admit_connect(int fd, const char *user, const char *tenant,
                     const char **what);

#endif
