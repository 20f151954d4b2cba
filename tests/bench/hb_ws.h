/*
 * herald-bench: the pieces of a lean RFC 6455 client that do not touch a
 * socket: the upgrade request and its response check, masked frame
 * headers, and a decoder for server frames. The connection code in
 * hb_load.c owns buffers and sockets; everything here works on memory the
 * caller passes in and keeps no state.
 */
#ifndef HB_WS_H
#define HB_WS_H

#include <stddef.h>
#include <stdint.h>

#define HB_WS_OP_CONT   0x0
#define HB_WS_OP_TEXT   0x1
#define HB_WS_OP_BINARY 0x2
#define HB_WS_OP_CLOSE  0x8
#define HB_WS_OP_PING   0x9
#define HB_WS_OP_PONG   0xA

#define HB_WS_KEY_LEN    24 /* base64 of 16 random bytes */
#define HB_WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */
#define HB_WS_MAX_HDR    14 /* 2 + 8 (length) + 4 (mask) */

/* Fill key (HB_WS_KEY_LEN + 1) from 16 bytes of nonce and accept
 * (HB_WS_ACCEPT_LEN + 1) with the Sec-WebSocket-Accept the server must
 * answer: base64(SHA-1(key + the RFC 6455 GUID)). */
void hb_ws_make_key(const uint8_t nonce[16], char *key, char *accept);

/* Write the upgrade request into buf (cap bytes). host is the Host header
 * value, path starts with '/', protocol may be NULL. Returns the length,
 * or -1 when it does not fit. */
int hb_ws_request(char *buf, size_t cap, const char *host, const char *path,
                  const char *key, const char *protocol);

/*
 * Check the upgrade response in buf[0..len). Returns:
 *   > 0  the length of the header block (through the blank line): the
 *        response is a valid 101 with the expected accept; bytes after it
 *        are already WebSocket frames;
 *     0  incomplete: read more;
 *   < 0  rejected; *status gets the HTTP status when one was parsed (0
 *        otherwise). -1 not a 101, -2 bad or missing Sec-WebSocket-Accept
 *        or Upgrade/Connection headers, -3 header block over 8 KiB.
 */
long hb_ws_check_response(const char *buf, size_t len, const char *accept,
                          int *status);

/* Write the header of a masked client frame (FIN set) with the given
 * opcode and payload length into out (HB_WS_MAX_HDR bytes), mask key
 * included. Returns the header length. */
size_t hb_ws_frame_header(uint8_t *out, unsigned opcode, uint64_t len,
                          uint32_t mask);

/* XOR len bytes at p with the mask key, as the header wrote it; pos is the
 * offset of p within the payload (for masking a payload in pieces). */
void hb_ws_mask(uint8_t *p, size_t len, uint32_t mask, size_t pos);

typedef struct hb_ws_frame {
    unsigned       fin;
    unsigned       opcode;
    const uint8_t *payload; /* points into the decoder's input */
    uint64_t       len;
} hb_ws_frame_t;

/*
 * Decode one server frame at buf[0..len). Returns the frame's total size
 * (header + payload) when the whole frame is there and fills *f; 0 when it
 * is incomplete (read more); -1 on a protocol error: a masked frame, RSV
 * bits, an unknown opcode, a control frame over 125 bytes or fragmented, or
 * a payload over max_payload.
 */
long hb_ws_parse(const uint8_t *buf, size_t len, uint64_t max_payload,
                 hb_ws_frame_t *f);

#endif
