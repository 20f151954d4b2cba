/*
 * Node-wide connection limits: per node, per client IP, per user (`sub`)
 * and per tenant, enforced exactly across every worker through tables in
 * shared memory, and returned exactly when a worker dies (kill -9 included)
 * through a per-worker "lease".
 *
 * Two shared regions, both MAP_SHARED|MAP_ANONYMOUS and made by the master:
 *
 *   hd_limits_t  one, before the first fork, inherited by every worker:
 *                the node counter and one hash table per key kind, each
 *                entry a single 64-bit word {40-bit key tag, 24-bit count}.
 *   hd_lease_t   one per worker process, made right before its fork: the
 *                worker records there, per fd, which entries that fd holds.
 *                After waitpid() the master gives back everything a dead
 *                worker's lease still holds (hd_lease_reclaim()).
 *
 * Who calls what:
 *   master   hd_limits_create() before the first fork; for every worker:
 *            hd_lease_create() before fork(), hd_lease_dontfork() in the
 *            parent right after it, hd_lease_reclaim() once the worker is
 *            reaped (frees the lease); hd_limits_top() and
 *            hd_limits_stats() for /stats; hd_limits_destroy() at exit.
 *   worker   hd_limits_acquire_node() and hd_limits_acquire(HD_LIM_IP)
 *            right after accept4(), hd_limits_acquire(HD_LIM_USER /
 *            HD_LIM_TENANT) at `connect`, hd_limits_release_fd() before
 *            the fd is closed (and before the next accept4() can reuse
 *            its number).
 *
 * Exactness: no count ever exceeds its limit, whatever the number of
 * workers; the argument is in hd_limits.c. A rejection can be spurious
 * only while two workers race to create the same key's entry, and never
 * lets a count through. Reclaim is exact except for one documented window
 * of a few instructions per count update (a worker killed between the
 * atomic update and its lease record): at most one count per dead worker
 * can then stay held; the master detects it, logs it and counts it in
 * hd_limits_stats_t.suspects (docs/configuration.md, "Connection limits").
 *
 * Thread model: a lease has one writer (its worker's loop thread). The
 * tables have any number of concurrent writers (lock-free CAS).
 * Passing l == NULL to a worker call turns limits off: it returns 0 and
 * records nothing.
 */
#ifndef HD_LIMITS_H
#define HD_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Table sizes (entries, powers of two, at most 2^20). A table serves new
 * keys until about half of it is held by live keys; past that a new key
 * fails with -ENOSPC more and more often (simulated with churn: none in
 * 2.6 million at 50 %, 1 in 10^7 at 55 %, 1 in 2*10^5 at 60 %, 1 in 7000
 * at 65 %). Memory is address space until touched. */
#define HD_LIMITS_IP_ENTRIES     (1u << 19) /* 4 MiB */
#define HD_LIMITS_USER_ENTRIES   (1u << 19) /* 4 MiB */
#define HD_LIMITS_TENANT_ENTRIES (1u << 15) /* 256 KiB + 2.25 MiB of names */
#define HD_LIMITS_COUNT_MAX      0xffffffu  /* 24-bit count per key */
#define HD_LIMITS_NAME_MAX       64         /* tenant name bytes kept */
#define HD_LEASE_FDS_MAX         (1u << 24)

typedef struct hd_limits hd_limits_t;
typedef struct hd_lease  hd_lease_t;

enum hd_limit_kind {
    HD_LIM_IP = 0,
    HD_LIM_USER,
    HD_LIM_TENANT,
    HD_LIM__KINDS
};

/* One row of hd_limits_top(). name is NUL-terminated, at most
 * HD_LIMITS_NAME_MAX bytes (cut at a UTF-8 character boundary), and empty
 * for kinds other than HD_LIM_TENANT (or if the name was being rewritten
 * at the instant it was read). */
struct hd_limit_top {
    char     name[HD_LIMITS_NAME_MAX + 1];
    uint32_t count;
};

typedef struct hd_limits_stats {
    uint64_t node;      /* connections holding the node count */
    uint64_t reclaimed; /* counts returned from dead workers */
    uint64_t suspects;  /* deaths inside the window: <= 1 leaked count each */
    uint64_t full[HD_LIM__KINDS]; /* -ENOSPC results, per kind */
    uint32_t capacity[HD_LIM__KINDS];
} hd_limits_stats_t;

/* ---- master ---- */

/* Before the first fork: map the tables and pick the random hash seed.
 * Returns 0 or -errno (logged). */
int  hd_limits_create(hd_limits_t **out);
void hd_limits_destroy(hd_limits_t *l);

/*
 * Before each fork: map an empty lease for fds 0 .. max_fds-1 (pass the
 * RLIMIT_NOFILE soft limit; clamped to 1 .. HD_LEASE_FDS_MAX). 8 bytes of
 * address space per fd, MAP_NORESERVE, touched only as fds are used.
 * Returns NULL (logged) if mmap() fails.
 */
hd_lease_t *hd_lease_create(unsigned max_fds);

/*
 * Master, in the parent right after the fork() that handed this lease to
 * its worker: MADV_DONTFORK, so workers forked later do not inherit (and
 * could not scribble on) another worker's lease. Returns 0 or -errno.
 */
int hd_lease_dontfork(hd_lease_t *lease);

/*
 * Master, after waitpid() reaped the lease's worker (or when its fork
 * failed): give back every count the lease still holds (node and keys),
 * check the in-flight record for the kill window, then unmap the lease.
 * lease may be NULL; l may be NULL only if lease is (nothing to give
 * back). Never blocks; cost is linear in the highest fd the worker used.
 * Must not be called while the worker may still run.
 */
void hd_lease_reclaim(hd_limits_t *l, hd_lease_t *lease);

/* ---- worker ---- */

/*
 * Take one count of the node-wide counter for fd, if below limit (0 =
 * unlimited). Returns 0, -EDQUOT (at the limit), -EBADF (fd outside the
 * lease), -EEXIST (fd already holds the node count: the caller did not
 * release it before the fd number was reused) or -EINVAL (ls is NULL
 * while l is not: a count nobody could give back is never taken).
 */
int hd_limits_acquire_node(hd_limits_t *l, hd_lease_t *ls, int fd,
                           uint32_t limit);

/*
 * Take one count of key (len bytes, any content) of kind k for fd, if the
 * key's node-wide count is below limit (0 = unlimited; anything above
 * HD_LIMITS_COUNT_MAX means HD_LIMITS_COUNT_MAX). Returns 0, -EDQUOT (at
 * the limit, or, practically never, a race that did not settle), -ENOSPC
 * (no room for a new key: the table is too full; fail closed, the caller
 * logs at warn, rate-limited), -EBADF, -EEXIST, -EINVAL (as above, or a
 * bad kind). A tenant's key is its name; the first HD_LIMITS_NAME_MAX bytes
 * are kept for /stats. Lock-free; about 50 ns with its release
 * (tests/bench/bench_limits).
 */
int hd_limits_acquire(hd_limits_t *l, hd_lease_t *ls, int fd,
                      enum hd_limit_kind k, const void *key, size_t len,
                      uint32_t limit);

/* Give back fd's count of kind k, if it holds one (else a no-op). */
void hd_limits_release(hd_limits_t *l, hd_lease_t *ls, int fd,
                       enum hd_limit_kind k);

/* Give back everything fd holds (node and keys). Idempotent; call it
 * before close(fd). */
void hd_limits_release_fd(hd_limits_t *l, hd_lease_t *ls, int fd);

/* Does fd hold a count of kind k (HD_LIM__KINDS: the node count)? */
bool hd_limits_holds(const hd_lease_t *ls, int fd, enum hd_limit_kind k);

/*
 * The IP key of a peer address, into key[17]; returns its length. IPv4 and
 * IPv4-mapped IPv6 give the same key; a native IPv6 address is cut to its
 * first v6_prefix bits (0 or >= 128: whole address), since one client
 * usually owns a whole /64 and could otherwise walk the limit. Returns 0
 * for other families (no IP limit applies).
 */
size_t hd_limits_addr_key(const struct sockaddr *sa, unsigned v6_prefix,
                          unsigned char key[17]);

/* ---- anyone (reads) ---- */

/* The node-wide count of key (0 if absent). Includes, for an instant, a
 * racing worker's tentative count that it is about to undo. */
uint32_t hd_limits_count(const hd_limits_t *l, enum hd_limit_kind k,
                         const void *key, size_t len);
uint64_t hd_limits_node_count(const hd_limits_t *l);

/*
 * The n keys of kind k with the most connections, most first (ties by
 * name), into out[0..n). Returns how many were written. Walks the whole
 * table: meant for HD_LIM_TENANT (the small table) and /stats; *active, if
 * not NULL, gets the number of keys with a count above 0. Allocates
 * scratch memory proportional to the keys in use.
 */
size_t hd_limits_top(const hd_limits_t *l, enum hd_limit_kind k,
                     struct hd_limit_top *out, size_t n, size_t *active);

void hd_limits_stats(const hd_limits_t *l, hd_limits_stats_t *out);

/* Names for logs and /stats: "ip", "user", "tenant". */
const char *hd_limit_kind_name(enum hd_limit_kind k);

#endif
