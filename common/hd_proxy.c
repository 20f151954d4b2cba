/*
 * PROXY protocol v1 (text) and v2 (binary) header parser. Strict: a
 * header that does not follow the spec is refused as a whole, since what
 * it carries decides whose limits a connection counts against.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "hd_proxy.h"

#define V1_MAX 107 /* "PROXY TCP6 " + 2 x 39 + 2 x 5 + 3 spaces + CRLF */

static const uint8_t v2_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                    0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

/* "0".."65535", no sign, no leading zero (the spec's decimal port) */
static bool
v1_port(const char *s, size_t n)
{
    unsigned long v = 0;

    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long) (s[i] - '0');
    }
    return v <= 65535;
}

/* Next space-separated field of [*p, end): its start and length. */
static bool
v1_field(const char **p, const char *end, const char **f, size_t *n)
{
    const char *s = *p, *e = s;

    while (e < end && *e != ' ')
        e++;
    if (e == s)
        return false;
    *f = s;
    *n = (size_t) (e - s);
    *p = e < end ? e + 1 : e;       /* past the single space */
    return e == end || e + 1 < end; /* no trailing space */
}

static int
parse_v1(const uint8_t *buf, size_t len, hd_proxy_info_t *out)
{
    const char *line = (const char *) buf, *p, *end, *f;
    size_t      n, i, eol = 0;
    char        a[64];
    int         fam;

    for (i = 0; i < len && i < V1_MAX; i++) {
        if (buf[i] == '\n') {
            if (i == 0 || buf[i - 1] != '\r')
                return -EPROTO;
            eol = i + 1;
            break;
        }
        if (buf[i] == '\r' && i + 1 < len && buf[i + 1] != '\n')
            return -EPROTO;
        if (buf[i] != '\r' && (buf[i] < 0x20 || buf[i] > 0x7e))
            return -EPROTO;
    }
    if (eol == 0)
        return len >= V1_MAX ? -EPROTO : 0;

    memset(out, 0, sizeof(*out));
    out->version = 1;
    p = line + 6; /* past "PROXY " */
    end = line + eol - 2;
    if (!v1_field(&p, end, &f, &n))
        return -EPROTO;
    if (n == 7 && memcmp(f, "UNKNOWN", 7) == 0) {
        out->local = true; /* the rest of the line is to be ignored */
        return (int) eol;
    }
    if (n == 4 && memcmp(f, "TCP4", 4) == 0)
        fam = AF_INET;
    else if (n == 4 && memcmp(f, "TCP6", 4) == 0)
        fam = AF_INET6;
    else
        return -EPROTO;

    /* source address, destination address, source port, destination port */
    const char *fs[4];
    size_t      ns[4];
    for (i = 0; i < 4; i++)
        if (!v1_field(&p, end, &fs[i], &ns[i]))
            return -EPROTO;
    if (p != end)
        return -EPROTO;
    for (i = 0; i < 2; i++) {
        unsigned char tmp[sizeof(struct in6_addr)];
        if (ns[i] >= sizeof(a))
            return -EPROTO;
        memcpy(a, fs[i], ns[i]);
        a[ns[i]] = '\0';
        if (inet_pton(fam, a, tmp) != 1)
            return -EPROTO;
        if (i == 0) {
            if (fam == AF_INET) {
                struct sockaddr_in *s4 = (struct sockaddr_in *) &out->src;
                s4->sin_family = AF_INET;
                memcpy(&s4->sin_addr, tmp, 4);
                out->src_len = sizeof(*s4);
            } else {
                struct sockaddr_in6 *s6 = (struct sockaddr_in6 *) &out->src;
                s6->sin6_family = AF_INET6;
                memcpy(&s6->sin6_addr, tmp, 16);
                out->src_len = sizeof(*s6);
            }
        }
    }
    if (!v1_port(fs[2], ns[2]) || !v1_port(fs[3], ns[3]))
        return -EPROTO;
    {
        unsigned port = 0;
        for (i = 0; i < ns[2]; i++)
            port = port * 10 + (unsigned) (fs[2][i] - '0');
        if (fam == AF_INET)
            ((struct sockaddr_in *) &out->src)->sin_port = htons(
                (uint16_t) port);
        else
            ((struct sockaddr_in6 *) &out->src)->sin6_port = htons(
                (uint16_t) port);
    }
    return (int) eol;
}

static int
parse_v2(const uint8_t *buf, size_t len, hd_proxy_info_t *out)
{
    size_t  total;
    uint8_t cmd, fam;

    if (len < 16)
        return 0;
    if ((buf[12] & 0xf0) != 0x20)
        return -EPROTO; /* version 2 only */
    cmd = buf[12] & 0x0f;
    if (cmd > 1)
        return -EPROTO; /* LOCAL or PROXY */
    total = 16 + ((size_t) buf[14] << 8 | buf[15]);
    if (total > HD_PROXY_MAX)
        return -EPROTO;
    fam = buf[13];
    /* the spec's families: UNSPEC, INET, INET6, UNIX x UNSPEC, STREAM,
     * DGRAM; anything else is not a PROXY header we know */
    if ((fam >> 4) > 3 || (fam & 0x0f) > 2)
        return -EPROTO;
    if (len < total)
        return 0;

    memset(out, 0, sizeof(*out));
    out->version = 2;
    if (cmd == 0 || (fam & 0x0f) == 0) {
        out->local = true; /* LOCAL (health checks), or UNSPEC transport */
        return (int) total;
    }
    switch (fam >> 4) {
    case 1: { /* AF_INET: src 4, dst 4, src port 2, dst port 2 */
        struct sockaddr_in *s4 = (struct sockaddr_in *) &out->src;
        if (total - 16 < 12)
            return -EPROTO;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, buf + 16, 4);
        memcpy(&s4->sin_port, buf + 24, 2);
        out->src_len = sizeof(*s4);
        break;
    }
    case 2: { /* AF_INET6: src 16, dst 16, ports 2 + 2 */
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *) &out->src;
        if (total - 16 < 36)
            return -EPROTO;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, buf + 16, 16);
        memcpy(&s6->sin6_port, buf + 48, 2);
        out->src_len = sizeof(*s6);
        break;
    }
    default: /* UNSPEC or UNIX: no IP address; the peer's stands */
        out->local = true;
        break;
    }
    return (int) total;
}

int
hd_proxy_parse(const uint8_t *buf, size_t len, hd_proxy_info_t *out)
{
    static const char v1_sig[] = "PROXY ";
    size_t            n;

    if (len == 0)
        return 0;
    if (buf[0] == v2_sig[0]) {
        n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
        if (memcmp(buf, v2_sig, n) != 0)
            return -EPROTO;
        return n < sizeof(v2_sig) ? 0 : parse_v2(buf, len, out);
    }
    n = len < 6 ? len : 6;
    if (memcmp(buf, v1_sig, n) != 0)
        return -EPROTO;
    return n < 6 ? 0 : parse_v1(buf, len, out);
}
