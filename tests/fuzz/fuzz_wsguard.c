/*
 * libFuzzer target for the frame guard (worker/hd_wsguard.c): the bytes a
 * client sends from its first byte (HTTP request, then frames), read in
 * chunks of any size. Two oracles:
 *   - a plain, whole-buffer reference parser: the connection is flagged
 *     unmasked exactly when a frame header after the first end of headers
 *     lacks the mask bit (none of a frame's bytes can restart the watch);
 *   - the chunking does not matter: byte-at-a-time, the fuzzer's chunks
 *     and one whole read end in the same state.
 * Input: byte 0 picks the chunk size (1..64), the rest is the stream.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../worker/hd_httpgate.c" /* guarded_recv reads through it */
#include "../../worker/hd_wsguard.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* true when a frame header after the first "\r\n\r\n" is unmasked */
static bool
reference(const uint8_t *p, size_t n)
{
    size_t i = 0;

    for (;; i++) {
        if (i + 4 > n)
            return false;
        if (memcmp(p + i, "\r\n\r\n", 4) == 0)
            break;
    }
    i += 4;
    while (i + 2 <= n) {
        uint8_t  b1 = p[i + 1];
        uint64_t len = b1 & 0x7f;
        size_t   hl = 2;

        if (!(b1 & 0x80))
            return true;
        if (len == 126 || len == 127) {
            size_t k = len == 126 ? 2 : 8;
            if (i + 2 + k > n)
                return false;
            len = 0;
            for (size_t j = 0; j < k; j++)
                len = len << 8 | p[i + 2 + j];
            hl += k;
        }
        hl += 4; /* mask key */
        if (hl > n - i)
            return false;
        i += hl;
        if (len > n - i)
            return false;
        i += (size_t) len;
    }
    return false;
}

static guard_t
run(const uint8_t *p, size_t n, size_t chunk)
{
    guard_t  g;
    uint8_t *copy = malloc(n ? n : 1); /* feed() may rewrite opcodes */

    if (copy == NULL)
        abort();
    memcpy(copy, p, n);
    memset(&g, 0, sizeof(g));
    g.flags = F_ACTIVE;
    for (size_t off = 0; off < n; off += chunk)
        feed(&g, copy + off, n - off < chunk ? n - off : chunk);
    free(copy);
    return g;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t         chunk = 1 + data[0] % 64;
    const uint8_t *p = data + 1;
    size_t         n = size - 1;
    bool           want = reference(p, n);
    guard_t        a = run(p, n, chunk);
    guard_t        b = run(p, n, 1);
    guard_t        c = run(p, n, n ? n : 1);

    if (((a.flags & F_UNMASKED) != 0) != want)
        __builtin_trap();
    /* the same state however the bytes were split (once flagged, the
     * guard stops following frames, so only the flag must agree then) */
    if ((a.flags != b.flags) || (a.flags != c.flags))
        __builtin_trap();
    if (!want
        && (a.st != b.st || a.st != c.st || a.len != b.len || a.len != c.len
            || a.n != b.n || a.n != c.n))
        __builtin_trap();
    return 0;
}
