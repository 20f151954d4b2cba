#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include "hd_net.h"

int
hd_net_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

int
hd_net_set_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)
        return -errno;
    return 0;
}

int
hd_net_listen(const char *addr, int port, int backlog, bool reuseport,
              bool v6only, const char **what)
{
    struct sockaddr_storage ss;
    socklen_t               slen;
    int                     fd = -1, one = 1, rc;
    const char             *dummy;

    if (what == NULL)
        what = &dummy;
    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, addr, &((struct sockaddr_in *) &ss)->sin_addr)
        == 1) {
        struct sockaddr_in *sin = (struct sockaddr_in *) &ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t) port);
        slen = sizeof(*sin);
    } else if (inet_pton(AF_INET6, addr,
                         &((struct sockaddr_in6 *) &ss)->sin6_addr)
               == 1) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t) port);
        slen = sizeof(*sin6);
    } else {
        *what = "inet_pton()";
        return -EINVAL;
    }

    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *what = "socket()";
        return -errno;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
        *what = "setsockopt(SO_REUSEADDR)";
        goto fail;
    }
    if (reuseport
        && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
        *what = "setsockopt(SO_REUSEPORT)";
        goto fail;
    }
    /* set either way: the kernel's default (net.ipv6.bindv6only) must not
     * decide whether "::" takes IPv4 clients */
    if (ss.ss_family == AF_INET6) {
        int v6 = v6only ? 1 : 0;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6, sizeof(v6)) < 0) {
            *what = "setsockopt(IPV6_V6ONLY)";
            goto fail;
        }
    }
    if (bind(fd, (struct sockaddr *) &ss, slen) < 0) {
        *what = "bind()";
        goto fail;
    }
    if (listen(fd, backlog) < 0) {
        *what = "listen()";
        goto fail;
    }
    return fd;

fail:
    rc = -errno;
    close(fd);
    return rc;
}

const char *
hd_net_addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
    buf[0] = '\0';
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *) sa)->sin_addr, buf,
                  (socklen_t) len);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) sa)->sin6_addr, buf,
                  (socklen_t) len);
    return buf;
}
