/* herald-bench: WebSocket client framing and handshake (see hb_ws.h). */
#include "hb_ws.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

void
hb_ws_make_key(const uint8_t nonce[16], char *key, char *accept)
{
    unsigned char cat[HB_WS_KEY_LEN + sizeof(ws_guid)];
    unsigned char md[SHA_DIGEST_LENGTH];

    EVP_EncodeBlock((unsigned char *) key, nonce, 16);
    memcpy(cat, key, HB_WS_KEY_LEN);
    memcpy(cat + HB_WS_KEY_LEN, ws_guid, sizeof(ws_guid) - 1);
    SHA1(cat, HB_WS_KEY_LEN + sizeof(ws_guid) - 1, md);
    EVP_EncodeBlock((unsigned char *) accept, md, SHA_DIGEST_LENGTH);
}

int
hb_ws_request(char *buf, size_t cap, const char *host, const char *path,
              const char *key, const char *protocol)
{
    int n = snprintf(buf, cap,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "%s%s%s"
                     "\r\n",
                     path, host, key,
                     protocol ? "Sec-WebSocket-Protocol: " : "",
                     protocol ? protocol : "", protocol ? "\r\n" : "");
    return (n < 0 || (size_t) n >= cap) ? -1 : n;
}

/* Does the comma-separated header value v (vlen bytes) contain token? */
static int
has_token(const char *v, size_t vlen, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;

    while (i < vlen) {
        while (i < vlen && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < vlen && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
            return 1;
    }
    return 0;
}

long
hb_ws_check_response(const char *buf, size_t len, const char *accept,
                     int *status)
{
    const char *end = NULL;
    int         ok_accept = 0, ok_upgrade = 0, ok_conn = 0;

    *status = 0;
    for (size_t i = 3; i < len; i++) {
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n'
            && buf[i - 3] == '\r') {
            end = buf + i + 1;
            break;
        }
    }
    if (end == NULL)
        return len > 8192 ? -3 : 0;

    /* status line: HTTP/1.1 101 ... */
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ')
        return -1;
    if (buf[9] < '0' || buf[9] > '9' || buf[10] < '0' || buf[10] > '9'
        || buf[11] < '0' || buf[11] > '9')
        return -1;
    *status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    if (*status != 101)
        return -1;

    const char *p = memchr(buf, '\n', (size_t) (end - buf));
    while (p != NULL && p + 1 < end) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\n', (size_t) (end - line));
        if (eol == NULL)
            break;
        const char *le = eol;
        if (le > line && le[-1] == '\r')
            le--;
        const char *colon = memchr(line, ':', (size_t) (le - line));
        if (colon != NULL) {
            size_t      nlen = (size_t) (colon - line);
            const char *v = colon + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            size_t vlen = (size_t) (le - v);
            while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            if (nlen == 20
                && strncasecmp(line, "Sec-WebSocket-Accept", 20) == 0)
                ok_accept = vlen == HB_WS_ACCEPT_LEN
                    && memcmp(v, accept, HB_WS_ACCEPT_LEN) == 0;
            else if (nlen == 7 && strncasecmp(line, "Upgrade", 7) == 0)
                ok_upgrade = has_token(v, vlen, "websocket");
            else if (nlen == 10 && strncasecmp(line, "Connection", 10) == 0)
                ok_conn = has_token(v, vlen, "upgrade");
        }
        p = eol;
    }
    if (!ok_accept || !ok_upgrade || !ok_conn)
        return -2;
    return (long) (end - buf);
}

size_t
hb_ws_frame_header(uint8_t *out, unsigned opcode, uint64_t len, uint32_t mask)
{
    size_t n = 0;

    out[n++] = (uint8_t) (0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[n++] = (uint8_t) (0x80 | len);
    } else if (len <= 0xffff) {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t) (len >> 8);
        out[n++] = (uint8_t) len;
    } else {
        out[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t) (len >> (8 * i));
    }
    memcpy(out + n, &mask, 4);
    return n + 4;
}

void
hb_ws_mask(uint8_t *p, size_t len, uint32_t mask, size_t pos)
{
    uint8_t m[4];
    size_t  i = 0;

    memcpy(m, &mask, 4);
    /* byte-wise until the payload position is 4-aligned, then words */
    while (i < len && ((pos + i) & 3) != 0) {
        p[i] ^= m[(pos + i) & 3];
        i++;
    }
    for (; i + 8 <= len; i += 8) {
        uint64_t w, mm = ((uint64_t) mask << 32) | mask;
        memcpy(&w, p + i, 8);
        w ^= mm;
        memcpy(p + i, &w, 8);
    }
    for (; i < len; i++)
        p[i] ^= m[(pos + i) & 3];
}

long
hb_ws_parse(const uint8_t *buf, size_t len, uint64_t max_payload,
            hb_ws_frame_t *f)
{
    if (len < 2)
        return 0;
    unsigned b0 = buf[0], b1 = buf[1];
    if (b0 & 0x70) /* RSV1-3: no extension was negotiated */
        return -1;
    if (b1 & 0x80) /* a server must not mask */
        return -1;
    unsigned op = b0 & 0x0f;
    if (op != HB_WS_OP_CONT && op != HB_WS_OP_TEXT && op != HB_WS_OP_BINARY
        && op != HB_WS_OP_CLOSE && op != HB_WS_OP_PING && op != HB_WS_OP_PONG)
        return -1;
    uint64_t plen = b1 & 0x7f;
    size_t   hlen = 2;
    if (plen == 126) {
        if (len < 4)
            return 0;
        plen = ((uint64_t) buf[2] << 8) | buf[3];
        hlen = 4;
    } else if (plen == 127) {
        if (len < 10)
            return 0;
        plen = 0;
        for (int i = 0; i < 8; i++)
            plen = (plen << 8) | buf[2 + i];
        if (plen >> 63)
            return -1;
        hlen = 10;
    }
    if (op >= 0x8 && (plen > 125 || !(b0 & 0x80)))
        return -1;
    if (plen > max_payload)
        return -1;
    if (len - hlen < plen)
        return 0;
    f->fin = (b0 & 0x80) != 0;
    f->opcode = op;
    f->payload = buf + hlen;
    f->len = plen;
    return (long) (hlen + plen);
}
