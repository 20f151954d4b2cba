/*
 * Reading the PROXY protocol header (common/hd_proxy.h) of a connection
 * accepted on a listener with listen.proxy_protocol, before lws sees the
 * socket: herald reads exactly the header's bytes (peeking first, so
 * nothing of the client's request is consumed), then hands the fd to
 * hd_worker_adopt() with the client address the header gave. A
 * connection whose first bytes are not a valid header, or that does not
 * send a whole one within timeouts.handshake_ms, is closed. While it
 * waits, a connection holds the admission counts that hd_admit_accept()
 * took for its TCP peer (node and per-IP limits), given back when it is
 * closed or traded for the client's when it is adopted; and the
 * handshake that follows must end within the same timeouts.handshake_ms
 * from accept.
 */
#ifndef HD_PROXYIN_H
#define HD_PROXYIN_H

#include <stdbool.h>
#include <sys/socket.h>

/* Take over fd (accepted from peer); it is adopted or closed later. */
void hd_proxyin_start(int fd, const struct sockaddr *peer, socklen_t plen);
/* Is a connection still waiting for its header? */
bool hd_proxyin_pending(void);
/* Close every connection still waiting for its header (worker exit). */
void hd_proxyin_shutdown(void);

#endif
