/*
 * sd_notify(3) without libsystemd: one unix datagram to $NOTIFY_SOCKET.
 * The protocol is stable and tiny (systemd's own docs describe it for
 * exactly this purpose), and a library dependency for four messages is
 * not worth it.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "hd_sdnotify.h"
#include "hd_time.h"

/*
 * Fill *sa from the $NOTIFY_SOCKET value name. Returns the address length
 * to pass to sendto(), or -EINVAL / -EAFNOSUPPORT.
 */
static int
notify_addr(const char *name, struct sockaddr_un *sa)
{
    size_t len = strlen(name);

    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strncmp(name, "vsock:", 6) == 0)
        return -EAFNOSUPPORT; /* VM guests; not ours to support */
    if (name[0] != '/' && name[0] != '@')
        return -EINVAL;
    if (len > sizeof(sa->sun_path))
        return -EINVAL;
    memcpy(sa->sun_path, name, len);
    if (name[0] == '@') {
        /* abstract namespace: a leading NUL, and the length says where the
         * name ends (no terminating NUL is part of it) */
        if (len < 2)
            return -EINVAL;
        sa->sun_path[0] = '\0';
        return (int) (offsetof(struct sockaddr_un, sun_path) + len);
    }
    if (len == sizeof(sa->sun_path))
        return -EINVAL; /* no room for the terminating NUL */
    return (int) (offsetof(struct sockaddr_un, sun_path) + len + 1);
}

int
hd_sdnotify(const char *state)
{
    struct sockaddr_un sa;
    struct timeval     tv = { 1, 0 };
    const char        *name = getenv("NOTIFY_SOCKET");
    int                fd = -1, alen, rc;
    ssize_t            n;

    if (name == NULL || name[0] == '\0')
        return 0;
    if (state == NULL || state[0] == '\0')
        return -EINVAL;
    alen = notify_addr(name, &sa);
    if (alen < 0)
        return alen;

    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* a datagram to a unix socket blocks only while the receiver's queue
     * is full; never let a wedged service manager stall the master's loop
     * for long */
    (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    do
        n = sendto(fd, state, strlen(state), MSG_NOSIGNAL,
                   (const struct sockaddr *) &sa, (socklen_t) alen);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        rc = -errno;
        goto fail;
    }
    close(fd);
    return 1;

fail:
    close(fd);
    return rc;
}

int
hd_sdnotify_ready(const char *status)
{
    char buf[512];

    if (status == NULL)
        return hd_sdnotify("READY=1");
    /* a newline in status would start a bogus VAR= line: cut it there */
    snprintf(buf, sizeof(buf), "READY=1\nSTATUS=%.*s",
             (int) strcspn(status, "\n"), status);
    return hd_sdnotify(buf);
}

int
hd_sdnotify_reloading(void)
{
    char buf[64];

    snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long) (hd_mono_ns() / 1000));
    return hd_sdnotify(buf);
}

int
hd_sdnotify_stopping(void)
{
    return hd_sdnotify("STOPPING=1");
}
