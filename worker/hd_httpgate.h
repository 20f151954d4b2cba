/*
 * One HTTP API request at a time through libwebsockets.
 *
 * lws 4.1 cannot take HTTP/1.1 pipelining: with a second request already
 * in its buffer it signals the first one's body completion in a loop and
 * mixes the two up. So lws never gets a second request early: its reads
 * from a client socket (hd_wsguard.c's recv hook) pass through here, and
 * on a connection whose request is a POST they end at that request's last
 * body byte (Content-Length); what follows stays in the kernel until the
 * response is out (hd_httpgate_release()), and hd_api.c stops lws from
 * polling the socket meanwhile. Pipelined requests are so answered in
 * order on the same connection. Everything else (WebSocket upgrades and
 * their frames, other methods) passes through untouched.
 */
#ifndef HD_HTTPGATE_H
#define HD_HTTPGATE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

int  hd_httpgate_init(int max_fds);
void hd_httpgate_shutdown(void);
/* A new client socket: its first request is looked at. */
void hd_httpgate_open(int fd);
/* recv() for lws: at most up to the end of the current request. */
ssize_t hd_httpgate_recv(int fd, void *buf, size_t len, int flags);
/* The current request was read whole and waits for its answer. */
bool hd_httpgate_waiting(int fd);
/* The current request is answered: the next one may be read. */
void hd_httpgate_release(int fd);

#endif
