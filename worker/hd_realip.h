/*
 * The client address of each connection, by fd: the TCP peer, or the
 * address a PROXY protocol header gave (hd_proxyin.c), or the one a
 * trusted proxy's X-Forwarded-For / X-Real-IP gave. Per-IP limits, logs
 * and the HTTP API's key throttle all use it; lws never sees it.
 */
#ifndef HD_REALIP_H
#define HD_REALIP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct lws;

/* The table for fds 0..max_fds-1 (MAP_NORESERVE, touched as used). */
int  hd_realip_init(int max_fds);
void hd_realip_shutdown(void);

/* fd's client address is sa (IPv4-mapped IPv6 is stored as IPv4). */
void hd_realip_set(int fd, const struct sockaddr *sa);
/* fd's client address into *ss; false when none was set. */
bool hd_realip_get(int fd, struct sockaddr_storage *ss);
/* fd's client address as text ("192.0.2.7", "2001:db8::1"); "" if none.
 * Returns buf. */
const char *hd_realip_str(int fd, char *buf, size_t len);

/*
 * At the HTTP request (upgrade or API): when the connection's address is
 * in security.trusted_proxies and the request carries X-Forwarded-For
 * (the rightmost address that is not itself a trusted proxy) or X-Real-IP,
 * that address becomes the client's, and the connection's per-IP count
 * moves to it. Headers from any other peer are ignored. Returns 0, or
 * hd_limits_acquire()'s -errno (-EDQUOT, -ENOSPC, ...) when the real
 * address is over limits.connections_per_ip (the caller answers 503).
 */
int hd_realip_from_headers(struct lws *wsi);

/* The X-Forwarded-For walk, for tests: the client address in list (len
 * bytes, "a, b, c"), skipping trusted proxies from the right; false if
 * there is no valid one. */
bool hd_realip_pick_xff(const char *list, size_t len,
                        struct sockaddr_storage *out);

#endif
