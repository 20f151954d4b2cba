/* Small socket wrappers. Return a fd or 0 on success, -errno on failure. */
#ifndef HD_NET_H
#define HD_NET_H

#include <stdbool.h>
#include <sys/socket.h>

/*
 * A non-blocking, close-on-exec TCP listen socket on addr:port (IPv4 or
 * IPv6 literal), SO_REUSEADDR, and SO_REUSEPORT when reuseport is set.
 * An IPv6 socket gets IPV6_V6ONLY = v6only, whatever the system default:
 * without it, "::" also accepts IPv4 clients (as ::ffff:a.b.c.d).
 * Returns the fd or -errno; on failure *what names the call that failed.
 */
int hd_net_listen(const char *addr, int port, int backlog, bool reuseport,
                  bool v6only, const char **what);
int hd_net_set_nonblock(int fd);
int hd_net_set_cloexec(int fd);
/* Render a peer address as text ("1.2.3.4" / "::1"); returns buf. */
const char *hd_net_addr_str(const struct sockaddr *sa, char *buf, size_t len);

#endif
