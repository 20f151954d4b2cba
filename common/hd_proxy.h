/*
 * The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2):
 * the header a proxy sends first on a connection to say whose it is. A
 * pure parser over bytes, no I/O (worker/hd_proxyin.c reads the socket).
 */
#ifndef HD_PROXY_H
#define HD_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest header herald accepts: a v1 line is at most 107 bytes; a v2
 * header is 16 bytes plus addresses (36 for IPv6) plus TLVs, which
 * HAProxy keeps well under this. Longer is refused. */
#define HD_PROXY_MAX 1024

typedef struct hd_proxy_info {
    int                     version; /* 1 or 2 */
    bool                    local;   /* no client address in it (v2 LOCAL,
                                        v1 UNKNOWN, v2 UNSPEC/UNIX): the
                                        connection's own peer stands */
    struct sockaddr_storage src;     /* client address when !local */
    socklen_t               src_len;
} hd_proxy_info_t;

/*
 * Parse the start of a connection's bytes, buf[0..len).
 * Returns the header's length (> 0, <= HD_PROXY_MAX) when a whole valid
 * header is there (*out filled; what follows is the client's), 0 when
 * what is there is a valid beginning that needs more bytes, -EPROTO when it is
 * not a PROXY header (or a malformed or oversized one).
 */
int hd_proxy_parse(const uint8_t *buf, size_t len, hd_proxy_info_t *out);

#endif
