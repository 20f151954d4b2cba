/*
 * lws' allocations (lws_set_allocator()). A handshake's HTTP header table
 * (lws' "ah struct" and "ah data", ~5 KB) is allocated before, and freed
 * after, the blocks the connection keeps for life (its per-session data,
 * WebSocket state and frame buffer); in the heap it left a hole among
 * them at every connect, which smaller blocks then split and fragmented
 * (docs/benchmarks.md, memory per idle connection). Here those two kinds
 * come from a pool of their own, outside the heap: up to
 * HD_LWSALLOC_SLOTS handshakes at once (more go to the heap as before),
 * the pool's pages given back whenever no handshake is under way.
 *
 * Single-threaded, like the worker's lws context.
 */
#ifndef HD_LWSALLOC_H
#define HD_LWSALLOC_H

#include <stddef.h>

#define HD_LWSALLOC_SLOTS 256

/* Route lws' allocations here; before lws_create_context(). */
void hd_lwsalloc_init(void);
/* Give back the pool's pages when no pooled block is in use (the
 * heartbeat sweep, once a second): a connect storm's peak of handshakes
 * does not stay resident. */
void hd_lwsalloc_trim(void);
/* Unmap the pools (after lws_context_destroy()). */
void hd_lwsalloc_shutdown(void);

/* The allocator itself (lws' signature: n == 0 frees p), and for tests
 * the number of pooled blocks in use. */
void  *hd_lwsalloc_realloc(void *p, size_t n, const char *why);
size_t hd_lwsalloc_in_use(void);

#endif
