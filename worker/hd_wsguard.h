/*
 * A watch on the raw bytes libwebsockets reads from client sockets, for
 * the one protocol rule lws 4.1 does not enforce: a client's frames must
 * be masked (RFC 6455 5.1). lws's recv() calls are redirected
 * (hd_plthook) through a wrapper that follows each client connection's
 * frame headers; a connection that sent an unmasked frame is closed with
 * 1002 before its payload is acted on. The same watch counts the ping
 * and pong frames each connection sends, which lws handles without a
 * callback, so that they count against the connection's rate limit, and
 * turns a client's pings into pongs where lws must not answer them
 * (hd_wsguard_quiet()).
 *
 * Cost: a state machine over frame headers only (payload bytes are skipped
 * by length), 16 bytes of state per fd, allocated lazily by the kernel.
 * If the hook cannot be installed the worker logs a warning and runs
 * without the check.
 */
#ifndef HD_WSGUARD_H
#define HD_WSGUARD_H

#include <stdbool.h>
#include <stdint.h>

/* 0, or -errno when its table cannot be mapped (a missing hook only warns) */
int  hd_wsguard_init(int max_fds);
void hd_wsguard_shutdown(void);
/* a freshly accepted client socket */
void hd_wsguard_open(int fd);
/* an HTTP request (not an upgrade) on it was answered and the connection
 * stays open for the next request: look for that request's headers */
void hd_wsguard_http_done(int fd);
/* its WebSocket handshake completed: what follows is frames */
void hd_wsguard_established(int fd);
/* the ping and pong frames it sent since the last call (lws answers pings
 * without telling herald: this is how they count against the rate) */
uint32_t hd_wsguard_take_control(int fd);
/* on: pings read from fd from now on reach lws as pongs, so lws answers
 * none (a connection with a close pending, or over its ping rate) */
void hd_wsguard_quiet(int fd, bool on);
/* it sent an unmasked frame */
bool hd_wsguard_unmasked(int fd);
/* its request began with a PROXY protocol header (refused: the listener
 * is not configured for one) */
bool hd_wsguard_proxy_header(int fd);

#endif
