/*
 * Keyed hashing for tables whose keys come from clients (channel names,
 * tenants, users, addresses). An unkeyed hash (FNV-1a and the like) lets
 * anyone precompute names that all land in one bucket and turn every
 * lookup into a list walk; SipHash under a secret random key does not.
 *
 *   hd_siphash()     SipHash-c-d (Aumasson and Bernstein), 64-bit output,
 *                    under a caller-held 128-bit key. Tables shared between
 *                    processes (shm/hd_limits.c) keep their own key there.
 *   hd_hash_bytes()  SipHash-1-3 under this process's key: for tables
 *                    private to one process. The key is drawn from
 *                    getrandom() on first use in the process, or by
 *                    hd_hash_reseed(), which a forked child calls so that
 *                    no two workers share it.
 *   hd_hash_seed()   fill a 128-bit key from getrandom() (/dev/urandom as
 *                    the fallback). 0 or -errno.
 *
 * Thread model: hd_hash_bytes() is for the process's one loop thread.
 */
#ifndef HD_HASH_H
#define HD_HASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t hd_siphash(const uint64_t k[2], const void *data, size_t len,
                    int crounds, int drounds);
int      hd_hash_seed(uint64_t seed[2]);
void     hd_hash_reseed(void);
uint64_t hd_hash_bytes(const void *data, size_t len);

#endif
