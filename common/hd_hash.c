/*
 * SipHash and the per-process hash key (see hd_hash.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "hd_hash.h"
#include "hd_time.h"

static inline uint64_t
rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

#define SIPROUND           \
    do {                   \
        v0 += v1;          \
        v1 = rotl(v1, 13); \
        v1 ^= v0;          \
        v0 = rotl(v0, 32); \
        v2 += v3;          \
        v3 = rotl(v3, 16); \
        v3 ^= v2;          \
        v0 += v3;          \
        v3 = rotl(v3, 21); \
        v3 ^= v0;          \
        v2 += v1;          \
        v1 = rotl(v1, 17); \
        v1 ^= v2;          \
        v2 = rotl(v2, 32); \
    } while (0)

static inline uint64_t
le64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* Production uses 1-3 (as Rust's and CPython's hash tables do); the unit
 * test checks 2-4 against the reference vectors and 1-3 against OpenSSL. */
uint64_t
hd_siphash(const uint64_t k[2], const void *data, size_t len, int crounds,
           int drounds)
{
    uint64_t             v0 = 0x736f6d6570736575ull ^ k[0];
    uint64_t             v1 = 0x646f72616e646f6dull ^ k[1];
    uint64_t             v2 = 0x6c7967656e657261ull ^ k[0];
    uint64_t             v3 = 0x7465646279746573ull ^ k[1];
    const unsigned char *p = data;
    size_t               full = len & ~(size_t) 7;

    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = le64(p + i);
        v3 ^= m;
        for (int r = 0; r < crounds; r++)
            SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t) len << 56;
    for (size_t i = 0; i < (len & 7); i++)
        b |= (uint64_t) p[full + i] << (8 * i);
    v3 ^= b;
    for (int r = 0; r < crounds; r++)
        SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    for (int r = 0; r < drounds; r++)
        SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

int
hd_hash_seed(uint64_t seed[2])
{
    ssize_t n = getrandom(seed, 2 * sizeof(uint64_t), 0);
    if (n == (ssize_t) (2 * sizeof(uint64_t)))
        return 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    n = read(fd, seed, 2 * sizeof(uint64_t));
    int err = errno;
    close(fd);
    return n == (ssize_t) (2 * sizeof(uint64_t)) ? 0 : -(err ? err : EIO);
}

static uint64_t s_key[2];
static bool     s_keyed;

void
hd_hash_reseed(void)
{
    if (hd_hash_seed(s_key) < 0) {
        /* no entropy source at all (no getrandom, no /dev/urandom): still
         * differ per process and per start, if guessably */
        s_key[0] = hd_wall_ns() ^ ((uint64_t) getpid() << 32);
        s_key[1] = hd_mono_ns() * 0x9e3779b97f4a7c15ull;
    }
    s_keyed = true;
}

uint64_t
hd_hash_bytes(const void *data, size_t len)
{
    if (!s_keyed)
        hd_hash_reseed();
    return hd_siphash(s_key, data, len, 1, 3);
}
