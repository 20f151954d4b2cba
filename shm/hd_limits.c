/*
 * Node-wide connection-limit tables and per-worker leases; see hd_limits.h.
 *
 * Tables. One open-addressing table per key kind. A key is hashed with
 * SipHash-1-3 under a random 128-bit seed the master picks before the
 * first fork (so every worker hashes alike and no client can aim keys at
 * one spot). The hash gives a 40-bit tag (never 0) and two candidate
 * buckets of 8 entries; a bucket is one 64-byte line, so a lookup reads
 * two lines. An entry is one _Atomic uint64_t:
 *
 *     bits 63..24  tag of the key holding it (0 in a never-used entry)
 *     bits 23..0   count
 *
 * An entry with count 0 is free whatever its tag: a tombstone keeps its
 * old tag only so that the same key finds it again first. A new key goes
 * into the emptier of its two buckets ("two choices": the table stays
 * usable up to about half full. Simulated at half load with churn, a
 * linear window of 16 entries refused 1.5e-3 of new keys, one of 32
 * entries 2.4e-5, two buckets of 8 none in 2.6 million).
 *
 * Acquire (worker), for key K with tag T:
 *   1. read both buckets; pick the first entry with tag T and count > 0,
 *      else the first T tombstone, else the first free entry of the
 *      emptier bucket (none: -ENOSPC);
 *   2. CAS it: {T,c} -> {T,c+1} if c < limit (else -EDQUOT), or a free
 *      {X,0} -> {T,1};
 *   3. record the entry in the lease (right after the CAS, see below);
 *   4. verify: re-read the 15 other entries of both buckets; if any has
 *      tag T and count > 0, undo (decrement, clear the record) and start
 *      again; else done.
 * Release: clear the lease record, then decrement.
 *
 * Why this is exact (no count of admitted connections ever exceeds the
 * limit). Call a connection admitted from its acquire's return to its
 * release. Claim: at any instant all admitted connections of K hold the
 * same entry. Take X admitted on E and Y admitted on E' != E at the same
 * instant. Both did "CAS on own entry, then load the other's entry" with
 * seq_cst operations, so in the single total order one CAS came first,
 * say X's. Y's verify load of E comes after Y's CAS, hence after X's CAS,
 * and before X released (X is still admitted), so it saw E with tag T and
 * count >= 1 and Y undid instead of being admitted: contradiction (the
 * store-buffer / Dekker pattern; it needs the seq_cst order, acquire and
 * release alone would allow both loads to miss). So the admitted holders
 * of K are all counted in one word, and every increment of that word
 * checked count < limit, hence admitted <= count <= limit. Tentative
 * increments (step 2 before a failed verify) only make the count larger,
 * so they can cause a spurious -EDQUOT while two claims race, never an
 * admission too many.
 *
 * The tie-break "the earlier entry in probe order wins" looks natural
 * and is not exact: X can be admitted on a later entry E' while E is
 * still free, a claimer whose first read predates E' then takes E and,
 * being earlier, would keep it: two admitted entries, each checked
 * against the limit on its own (test_limits.c catches that variant with
 * hundreds of admissions over the limit in two seconds). Hence "undo on
 * any other live entry": both racers may back off (then both retry, and
 * the first T entry wins), which costs a retry only in the rare claim
 * race. A 40-bit tag collision between two live keys whose buckets
 * overlap could make that retry loop forever; it is bounded (ROUNDS_MAX)
 * and then answers -EDQUOT (fail closed). With a random seed such a
 * collision is a 1-in-10^12-per-pair event.
 *
 * Leases and kill -9. A lease has one 64-bit record per fd (which entry of
 * each kind the fd holds, plus a node bit) and one in-flight word. The
 * worker writes, in this order (release stores, so the compiler keeps the
 * order; x86 needs no fence for it):
 *
 *   acquire:  in-flight = {fd, kind, entry, ACQ}; CAS; record; in-flight = 0
 *   release:  in-flight = {fd, kind, entry, REL}; clear record; decrement;
 *             in-flight = 0
 *
 * After waitpid() the master decrements every entry the records hold.
 * That is exact unless the worker died inside one of those two windows:
 * between a successful CAS and its record, or between clearing a record
 * and its decrement. Then one count stays held (the safe direction: never
 * a count too few). The in-flight word shows the master exactly when that
 * may have happened and on which entry: it logs a warning and counts a
 * "suspect" (hd_limits_stats_t).
 *
 * The window is a couple of instructions, but SIGKILL is taken at an
 * instruction boundary and a locked CAS on a contended line is a slow
 * instruction, so a kill often lands right after one: in a loop that does
 * nothing but acquire and release in 4 processes on shared keys, about 5
 * to 10 % of kills leak a count (test_limits.c kill_churn prints it). A
 * worker spends a tiny share of its time there (about 0.5 us per
 * connection), so for a real worker the chance per kill is about its
 * connection rate times 0.5 us (0.05 % at 1000 new connections/s). A kill
 * of a worker whose clients are merely connected is always exact.
 * Closing the window would take a per-entry owner mark, in effect a small
 * lock the master breaks after a crash, on every connection path.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "hd_alloc.h"
#include "hd_hash.h"
#include "hd_limits.h"
#include "hd_log.h"

#define RLX memory_order_relaxed
#define ACQ memory_order_acquire
#define REL memory_order_release
#define SEQ memory_order_seq_cst

#define LIMITS_MAGIC   0x484c494du /* "HLIM" */
#define LIMITS_VERSION 1u
#define LEASE_MAGIC    0x484c5345u /* "HLSE" */

#define BUCKET     8u /* entries per bucket: one line */
#define PROBES     (2 * BUCKET)
#define ROUNDS_MAX 100 /* verify conflicts before giving up */

#define W_TAG(w)   ((w) >> 24)
#define W_CNT(w)   ((uint32_t) ((w) &HD_LIMITS_COUNT_MAX))
#define W_MK(t, c) (((uint64_t) (t) << 24) | (uint64_t) (c))

/* lease record: 21 bits (entry index + 1) per kind, bit 63 = node */
#define FIELD_BITS 21
#define FIELD_MASK ((1ull << FIELD_BITS) - 1)
#define REC_NODE   (1ull << 63)
#define KIND_NODE  3u /* in-flight kind of the node count */

/* in-flight word: valid, op, kind, entry + 1, fd */
#define IF_VALID    (1ull << 63)
#define IF_RELEASE  (1ull << 62)
#define IF_KIND(w)  ((unsigned) ((w) >> 56) & 3u)
#define IF_ENTRY(w) ((uint32_t) ((w) >> 24) & (uint32_t) FIELD_MASK)
#define IF_FD(w)    ((int) ((w) &0xffffffu))

struct lim_name {
    _Atomic uint64_t stamp; /* tag << 24 | seq; 0 while written */
    _Atomic uint64_t w[HD_LIMITS_NAME_MAX / 8];
};

struct hd_limits {
    /* identity, written once by hd_limits_create() */
    uint32_t magic;
    uint32_t version;
    uint32_t entries[HD_LIM__KINDS];
    uint32_t total_size;
    uint64_t seed[2];
    /* the node count: every worker, every accept; a line of its own */
    _Alignas(64) _Atomic uint64_t node;
    /* event counters, rarely written */
    _Alignas(64) _Atomic uint64_t reclaimed;
    _Atomic uint64_t suspects;
    _Atomic uint64_t full[HD_LIM__KINDS];
    _Alignas(64) _Atomic uint64_t ip[HD_LIMITS_IP_ENTRIES];
    _Alignas(64) _Atomic uint64_t user[HD_LIMITS_USER_ENTRIES];
    _Alignas(64) _Atomic uint64_t tenant[HD_LIMITS_TENANT_ENTRIES];
    _Alignas(64) struct lim_name name[HD_LIMITS_TENANT_ENTRIES];
};

struct hd_lease {
    uint32_t         magic;
    uint32_t         max_fds;
    size_t           size; /* of the mapping */
    _Atomic uint64_t inflight;
    _Atomic uint32_t hiwat; /* highest fd recorded + 1 */
    _Alignas(64) _Atomic uint64_t rec[];
};

_Static_assert(sizeof(_Atomic uint64_t) == 8, "64-bit atomics");
_Static_assert(HD_LIMITS_IP_ENTRIES <= (1u << 20)
                   && HD_LIMITS_USER_ENTRIES <= (1u << 20)
                   && HD_LIMITS_TENANT_ENTRIES <= (1u << 20),
               "entry index + 1 must fit a 21-bit lease field");
_Static_assert(
    (HD_LIMITS_IP_ENTRIES & (HD_LIMITS_IP_ENTRIES - 1)) == 0
        && (HD_LIMITS_USER_ENTRIES & (HD_LIMITS_USER_ENTRIES - 1)) == 0
        && (HD_LIMITS_TENANT_ENTRIES & (HD_LIMITS_TENANT_ENTRIES - 1)) == 0,
    "table sizes are powers of two");
_Static_assert(HD_LIMITS_TENANT_ENTRIES >= 2 * BUCKET, "two buckets at least");
_Static_assert(offsetof(struct hd_limits, ip) % 64 == 0, "buckets on lines");
_Static_assert(offsetof(struct hd_limits, user) % 64 == 0, "buckets on lines");
_Static_assert(offsetof(struct hd_limits, tenant) % 64 == 0,
               "buckets on lines");
_Static_assert(offsetof(struct hd_limits, node) % 64 == 0, "node line");
_Static_assert(offsetof(struct hd_lease, rec) == 64, "lease header is a line");
_Static_assert(HD_LIMITS_NAME_MAX % 8 == 0, "name in whole words");
_Static_assert(HD_LEASE_FDS_MAX <= (1u << 24), "fd fits the in-flight word");

static const uint32_t kind_entries[HD_LIM__KINDS] = {
    HD_LIMITS_IP_ENTRIES,
    HD_LIMITS_USER_ENTRIES,
    HD_LIMITS_TENANT_ENTRIES,
};

const char *
hd_limit_kind_name(enum hd_limit_kind k)
{
    static const char *const names[HD_LIM__KINDS] = { "ip", "user", "tenant" };
    return (unsigned) k < HD_LIM__KINDS ? names[k] : "node";
}

/* ---- hashing ---- */

/* Where key K lives: its tag and the first entry of each bucket. */
struct probe {
    uint64_t tag;
    uint32_t base[2];
};

static void
probe_of(const hd_limits_t *l, enum hd_limit_kind k, const void *key,
         size_t len, struct probe *pr)
{
    uint64_t h = hd_siphash(l->seed, key, len, 1, 3);
    uint32_t mask = kind_entries[k] / BUCKET - 1;
    uint32_t b1 = (uint32_t) h & mask;
    uint32_t b2 = (uint32_t) (h >> 16) & mask;
    if (b2 == b1)
        b2 = b1 ^ 1;   /* always two distinct buckets */
    pr->tag = h >> 24; /* 40 bits */
    if (pr->tag == 0)
        pr->tag = 1; /* 0 marks a never-used entry */
    pr->base[0] = b1 * BUCKET;
    pr->base[1] = b2 * BUCKET;
}

static inline uint32_t
probe_pos(const struct probe *pr, unsigned i)
{
    return pr->base[i / BUCKET] + i % BUCKET;
}

static _Atomic uint64_t *
table(hd_limits_t *l, enum hd_limit_kind k)
{
    switch (k) {
    case HD_LIM_IP:
        return l->ip;
    case HD_LIM_USER:
        return l->user;
    default:
        return l->tenant;
    }
}

static const _Atomic uint64_t *
ctable(const hd_limits_t *l, enum hd_limit_kind k)
{
    return table((hd_limits_t *) l, k);
}

/* ---- create / destroy ---- */

int
hd_limits_create(hd_limits_t **out)
{
    *out = NULL;
    /* NORESERVE: most of the tables stay untouched on a small node */
    void *p = mmap(NULL, sizeof(struct hd_limits), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        int err = errno;
        hd_log_error("mmap() of %zu bytes for the limit tables failed: %s",
                     sizeof(struct hd_limits), strerror(err));
        return -err;
    }
    hd_limits_t *l = p;
    int          rc = hd_hash_seed(l->seed);
    if (rc < 0) {
        hd_log_error("getrandom() failed: %s", strerror(-rc));
        munmap(p, sizeof(struct hd_limits));
        return rc;
    }
    l->magic = LIMITS_MAGIC;
    l->version = LIMITS_VERSION;
    for (unsigned k = 0; k < HD_LIM__KINDS; k++)
        l->entries[k] = kind_entries[k];
    l->total_size = (uint32_t) sizeof(struct hd_limits);
    *out = l;
    return 0;
}

void
hd_limits_destroy(hd_limits_t *l)
{
    if (l != NULL)
        munmap(l, sizeof(struct hd_limits));
}

/* ---- leases ---- */

hd_lease_t *
hd_lease_create(unsigned max_fds)
{
    if (max_fds == 0)
        max_fds = 1;
    if (max_fds > HD_LEASE_FDS_MAX)
        max_fds = HD_LEASE_FDS_MAX;
    size_t pg = (size_t) sysconf(_SC_PAGESIZE);
    size_t size = offsetof(struct hd_lease, rec)
        + (size_t) max_fds * sizeof(_Atomic uint64_t);
    size = (size + pg - 1) / pg * pg;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        hd_log_error("mmap() of %zu bytes for a worker lease failed: %s", size,
                     strerror(errno));
        return NULL;
    }
    hd_lease_t *ls = p;
    ls->magic = LEASE_MAGIC;
    ls->max_fds = max_fds;
    ls->size = size;
    return ls;
}

int
hd_lease_dontfork(hd_lease_t *ls)
{
    if (ls == NULL)
        return 0;
    /* VM_DONTCOPY works on shared mappings too: the child simply has no
     * mapping at that address (tests/unit/shm/test_limits.c checks it) */
    if (madvise(ls, ls->size, MADV_DONTFORK) < 0) {
        int err = errno;
        hd_log_warn("madvise(MADV_DONTFORK) on a worker lease failed: %s",
                    strerror(err));
        return -err;
    }
    return 0;
}

static inline uint32_t
rec_field(uint64_t r, unsigned k)
{
    return (uint32_t) ((r >> (k * FIELD_BITS)) & FIELD_MASK);
}

static inline uint64_t
rec_get(const hd_lease_t *ls, int fd)
{
    return atomic_load_explicit(&ls->rec[fd], RLX);
}

/* Single writer (the lease's worker): plain read-modify-write, with a
 * release store so it is not moved before the in-flight store above it. */
static inline void
rec_put(hd_lease_t *ls, int fd, uint64_t v)
{
    atomic_store_explicit(&ls->rec[fd], v, REL);
}

static inline void
inflight_set(hd_lease_t *ls, int fd, unsigned kind, uint32_t idx, bool release)
{
    uint64_t w = IF_VALID | (release ? IF_RELEASE : 0) | ((uint64_t) kind << 56)
        | ((uint64_t) (idx + 1) << 24) | (uint64_t) fd;
    atomic_store_explicit(&ls->inflight, w, REL);
}

static inline void
inflight_clear(hd_lease_t *ls)
{
    atomic_store_explicit(&ls->inflight, 0, REL);
}

/* Checks shared by every worker entry point. */
static int
fd_check(const hd_lease_t *ls, int fd)
{
    if (ls == NULL)
        return -EINVAL;
    if (fd < 0 || (unsigned) fd >= ls->max_fds)
        return -EBADF;
    return 0;
}

/* Before anything of fd is written: the master scans up to hiwat. */
static inline void
hiwat_raise(hd_lease_t *ls, int fd)
{
    if ((uint32_t) fd >= atomic_load_explicit(&ls->hiwat, RLX))
        atomic_store_explicit(&ls->hiwat, (uint32_t) fd + 1, REL);
}

/* ---- tenant names ---- */

/* Longest prefix of at most max bytes that does not split a UTF-8
 * sequence. */
static size_t
utf8_cut(const unsigned char *p, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t m = max;
    while (m > 0 && (p[m] & 0xc0) == 0x80)
        m--;
    return m;
}

/*
 * The claimer of a tenant entry writes its name under a stamp: 0 while
 * the bytes change, then tag << 24 | a per-process sequence. A reader
 * keeps a copy only if the stamp was the same non-zero value, with the
 * entry's tag, before and after it. Names are only for /stats.
 */
static void
name_write(hd_limits_t *l, uint32_t idx, uint64_t tag, const void *key,
           size_t len)
{
    static uint32_t  seq;
    struct lim_name *n = &l->name[idx];
    uint64_t         buf[HD_LIMITS_NAME_MAX / 8] = { 0 };
    size_t           m = utf8_cut(key, len, HD_LIMITS_NAME_MAX);

    if (seq == 0)
        seq = (uint32_t) getpid() * 2654435761u;
    seq++;
    memcpy(buf, key, m);
    atomic_store_explicit(&n->stamp, 0, RLX);
    atomic_thread_fence(REL);
    for (unsigned i = 0; i < HD_LIMITS_NAME_MAX / 8; i++)
        atomic_store_explicit(&n->w[i], buf[i], RLX);
    atomic_store_explicit(&n->stamp, (tag << 24) | (seq & 0xffffffu), REL);
}

static void
name_read(const hd_limits_t *l, uint32_t idx, uint64_t tag,
          char out[HD_LIMITS_NAME_MAX + 1])
{
    const struct lim_name *n = &l->name[idx];
    uint64_t               buf[HD_LIMITS_NAME_MAX / 8];

    out[0] = '\0';
    for (int attempt = 0; attempt < 4; attempt++) {
        uint64_t s1 = atomic_load_explicit(&n->stamp, ACQ);
        if (s1 == 0)
            continue; /* being written */
        if ((s1 >> 24) != tag)
            return;
        for (unsigned i = 0; i < HD_LIMITS_NAME_MAX / 8; i++)
            buf[i] = atomic_load_explicit(&n->w[i], RLX);
        atomic_thread_fence(ACQ);
        if (atomic_load_explicit(&n->stamp, RLX) != s1)
            continue;
        memcpy(out, buf, HD_LIMITS_NAME_MAX);
        out[HD_LIMITS_NAME_MAX] = '\0';
        return;
    }
}

/* ---- acquire / release ---- */

/* Any entry of pr's buckets other than skip with pr's tag and a count? */
static bool
other_live(const _Atomic uint64_t *t, const struct probe *pr, unsigned skip)
{
    for (unsigned i = 0; i < PROBES; i++) {
        if (i == skip)
            continue;
        /* seq_cst: the load half of the Dekker pattern (see the top) */
        uint64_t x = atomic_load_explicit(&t[probe_pos(pr, i)], SEQ);
        if (W_TAG(x) == pr->tag && W_CNT(x) > 0)
            return true;
    }
    return false;
}

/* Give back fd's count on entry idx of kind k (the caller checked that
 * the record holds it). */
static void
put_key(hd_limits_t *l, hd_lease_t *ls, int fd, enum hd_limit_kind k,
        uint32_t idx)
{
    uint64_t r = rec_get(ls, fd);
    inflight_set(ls, fd, (unsigned) k, idx, true);
    rec_put(ls, fd, r & ~(FIELD_MASK << (k * FIELD_BITS)));
    /* we hold a count, so this never borrows into the tag */
    atomic_fetch_sub_explicit(&table(l, k)[idx], 1, SEQ);
    inflight_clear(ls);
}

static void
backoff(unsigned round)
{
    if (round < 4) {
        for (unsigned i = 0; i < 16u << round; i++)
            atomic_signal_fence(SEQ); /* a short spin, not optimized out */
    } else {
        sched_yield();
    }
}

int
hd_limits_acquire(hd_limits_t *l, hd_lease_t *ls, int fd, enum hd_limit_kind k,
                  const void *key, size_t len, uint32_t limit)
{
    if (l == NULL)
        return 0;
    if ((unsigned) k >= HD_LIM__KINDS)
        return -EINVAL;
    int rc = fd_check(ls, fd);
    if (rc < 0)
        return rc;
    if (rec_field(rec_get(ls, fd), (unsigned) k) != 0)
        return -EEXIST;
    hiwat_raise(ls, fd);

    _Atomic uint64_t *t = table(l, k);
    uint32_t          lim = limit == 0 || limit > HD_LIMITS_COUNT_MAX
                 ? HD_LIMITS_COUNT_MAX
                 : limit;
    struct probe      pr;
    probe_of(l, k, key, len, &pr);

    for (unsigned round = 0; round < ROUNDS_MAX; round++) {
        int      live = -1, tomb = -1, fr[2] = { -1, -1 };
        unsigned used[2] = { 0, 0 };

        /* 1. choose (relaxed: only the CAS and the verify must be exact).
         * Locals, not arrays, in the loop: a counter kept in memory makes
         * every step wait for the last one's store. */
        for (unsigned b = 0; b < 2 && live < 0; b++) {
            const _Atomic uint64_t *bk = &t[pr.base[b]];
            unsigned                u = 0;
            int                     f = -1;
            for (unsigned j = 0; j < BUCKET; j++) {
                uint64_t x = atomic_load_explicit(&bk[j], RLX);
                bool     held = W_CNT(x) != 0;
                int      i = (int) (b * BUCKET + j);
                u += held;
                if (W_TAG(x) == pr.tag) {
                    if (held) {
                        live = i; /* the first live one: done */
                        break;
                    }
                    if (tomb < 0)
                        tomb = i;
                } else if (!held && f < 0) {
                    f = i;
                }
            }
            used[b] = u;
            fr[b] = f;
        }
        int e = live >= 0 ? live : tomb;
        if (e < 0) {
            /* a new key: the emptier bucket, so both fill evenly */
            int b = used[1] < used[0] ? 1 : 0;
            e = fr[b] >= 0 ? fr[b] : fr[!b];
        }
        if (e < 0) {
            atomic_fetch_add_explicit(&l->full[k], 1, RLX);
            return -ENOSPC;
        }

        /* 2. CAS, recording the intent first and the holding right after */
        uint32_t idx = probe_pos(&pr, (unsigned) e);
        uint64_t old = atomic_load_explicit(&t[idx], RLX), nw;
        bool     claimed = false;
        inflight_set(ls, fd, (unsigned) k, idx, false);
        for (;;) {
            if (W_TAG(old) == pr.tag) {
                if (W_CNT(old) >= lim) {
                    inflight_clear(ls);
                    return -EDQUOT;
                }
                nw = old + 1;
                claimed = false;
            } else if (W_CNT(old) == 0) {
                nw = W_MK(pr.tag, 1); /* a free entry: claim it */
                claimed = true;
            } else {
                nw = 0; /* taken by another key: rescan */
                break;
            }
            if (atomic_compare_exchange_weak_explicit(&t[idx], &old, nw, SEQ,
                                                      RLX))
                break;
        }
        if (nw == 0) {
            inflight_clear(ls);
            continue;
        }
        /* 3. the kill window is from the CAS above to this store */
        rec_put(ls, fd,
                rec_get(ls, fd) | ((uint64_t) (idx + 1) << (k * FIELD_BITS)));
        inflight_clear(ls);

        if (k == HD_LIM_TENANT
            && (claimed
                || (atomic_load_explicit(&l->name[idx].stamp, RLX) >> 24)
                    != pr.tag))
            name_write(l, idx, pr.tag, key, len);

        /* 4. verify: no other live entry of this key */
        if (!other_live(t, &pr, (unsigned) e))
            return 0;
        put_key(l, ls, fd, k, idx);
        backoff(round);
    }
    return -EDQUOT; /* did not settle: fail closed */
}

int
hd_limits_acquire_node(hd_limits_t *l, hd_lease_t *ls, int fd, uint32_t limit)
{
    if (l == NULL)
        return 0;
    int rc = fd_check(ls, fd);
    if (rc < 0)
        return rc;
    uint64_t r = rec_get(ls, fd);
    if (r & REC_NODE)
        return -EEXIST;
    hiwat_raise(ls, fd);

    inflight_set(ls, fd, KIND_NODE, 0, false);
    uint64_t v = atomic_load_explicit(&l->node, RLX);
    do {
        if (limit != 0 && v >= limit) {
            inflight_clear(ls);
            return -EDQUOT;
        }
    } while (
        !atomic_compare_exchange_weak_explicit(&l->node, &v, v + 1, SEQ, RLX));
    rec_put(ls, fd, r | REC_NODE);
    inflight_clear(ls);
    return 0;
}

void
hd_limits_release(hd_limits_t *l, hd_lease_t *ls, int fd, enum hd_limit_kind k)
{
    if (l == NULL || (unsigned) k >= HD_LIM__KINDS || fd_check(ls, fd) < 0)
        return;
    uint32_t f = rec_field(rec_get(ls, fd), (unsigned) k);
    if (f != 0)
        put_key(l, ls, fd, k, f - 1);
}

void
hd_limits_release_fd(hd_limits_t *l, hd_lease_t *ls, int fd)
{
    if (l == NULL || fd_check(ls, fd) < 0)
        return;
    uint64_t r = rec_get(ls, fd);
    if (r == 0)
        return;
    for (unsigned k = 0; k < HD_LIM__KINDS; k++) {
        uint32_t f = rec_field(r, k);
        if (f != 0)
            put_key(l, ls, fd, (enum hd_limit_kind) k, f - 1);
    }
    if (r & REC_NODE) {
        inflight_set(ls, fd, KIND_NODE, 0, true);
        rec_put(ls, fd, rec_get(ls, fd) & ~REC_NODE);
        atomic_fetch_sub_explicit(&l->node, 1, SEQ);
        inflight_clear(ls);
    }
}

bool
hd_limits_holds(const hd_lease_t *ls, int fd, enum hd_limit_kind k)
{
    if (fd_check(ls, fd) < 0)
        return false;
    uint64_t r = rec_get(ls, fd);
    if ((unsigned) k >= HD_LIM__KINDS)
        return (r & REC_NODE) != 0;
    return rec_field(r, (unsigned) k) != 0;
}

/* ---- reclaim (master) ---- */

/* Decrement one count the dead worker held; false if there was none
 * (cannot happen unless the lease and the table disagree). */
static bool
give_back(_Atomic uint64_t *w)
{
    uint64_t v = atomic_load_explicit(w, RLX);
    do {
        if (W_CNT(v) == 0)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(w, &v, v - 1, SEQ, RLX));
    return true;
}

static bool
give_back_node(_Atomic uint64_t *n)
{
    uint64_t v = atomic_load_explicit(n, RLX);
    do {
        if (v == 0)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(n, &v, v - 1, SEQ, RLX));
    return true;
}

void
hd_lease_reclaim(hd_limits_t *l, hd_lease_t *ls)
{
    if (ls == NULL)
        return;
    if (ls->magic != LEASE_MAGIC) {
        hd_log_error("hd_lease_reclaim(): not a lease");
        return;
    }
    if (l != NULL) {
        uint32_t hi = atomic_load_explicit(&ls->hiwat, ACQ);
        uint64_t back = 0, bad = 0;
        if (hi > ls->max_fds)
            hi = ls->max_fds;
        for (uint32_t fd = 0; fd < hi; fd++) {
            uint64_t r = rec_get(ls, (int) fd);
            if (r == 0)
                continue;
            for (unsigned k = 0; k < HD_LIM__KINDS; k++) {
                uint32_t f = rec_field(r, k);
                if (f == 0)
                    continue;
                if (f - 1 < kind_entries[k]
                    && give_back(&table(l, (enum hd_limit_kind) k)[f - 1]))
                    back++;
                else
                    bad++;
            }
            if (r & REC_NODE) {
                if (give_back_node(&l->node))
                    back++;
                else
                    bad++;
            }
        }
        if (bad > 0)
            hd_log_error("limits: a dead worker's lease held %llu counts the "
                         "tables did not have",
                         (unsigned long long) bad);

        /* The worker died inside an update? Then whether that one count
         * landed is unknown: leave it (never give back a count twice). */
        uint64_t inf = atomic_load_explicit(&ls->inflight, ACQ);
        if (inf & IF_VALID) {
            unsigned kind = IF_KIND(inf);
            uint32_t ent = IF_ENTRY(inf);
            int      fd = IF_FD(inf);
            uint64_t r = (unsigned) fd < ls->max_fds ? rec_get(ls, fd) : 0;
            bool     recorded = kind == KIND_NODE ? (r & REC_NODE) != 0
                                                  : rec_field(r, kind) == ent;
            /* recorded: the acquire's CAS landed and the record says so,
             * or the release had not cleared it yet: both given back
             * above, exactly */
            if (!recorded) {
                atomic_fetch_add_explicit(&l->suspects, 1, RLX);
                hd_log_warn("limits: a worker died while %s a %s count "
                            "(entry %u); that key may keep one connection "
                            "too many until restart",
                            inf & IF_RELEASE ? "releasing" : "taking",
                            kind == KIND_NODE
                                ? "node"
                                : hd_limit_kind_name((enum hd_limit_kind) kind),
                            ent - 1);
            }
        }
        atomic_fetch_add_explicit(&l->reclaimed, back, RLX);
        if (back > 0)
            hd_log_info("limits: returned %llu connection counts held by a "
                        "dead worker",
                        (unsigned long long) back);
    }
    munmap(ls, ls->size);
}

/* ---- reads ---- */

uint32_t
hd_limits_count(const hd_limits_t *l, enum hd_limit_kind k, const void *key,
                size_t len)
{
    if (l == NULL || (unsigned) k >= HD_LIM__KINDS)
        return 0;
    struct probe pr;
    probe_of(l, k, key, len, &pr);
    const _Atomic uint64_t *t = ctable(l, k);
    uint32_t                sum = 0;
    for (unsigned i = 0; i < PROBES; i++) {
        uint64_t x = atomic_load_explicit(&t[probe_pos(&pr, i)], RLX);
        if (W_TAG(x) == pr.tag)
            sum += W_CNT(x);
    }
    return sum;
}

uint64_t
hd_limits_node_count(const hd_limits_t *l)
{
    return l != NULL ? atomic_load_explicit(&l->node, RLX) : 0;
}

struct top_row {
    uint64_t tag;
    uint32_t idx;
    uint32_t count;
    char     name[HD_LIMITS_NAME_MAX + 1];
};

static int
by_tag(const void *a, const void *b)
{
    const struct top_row *x = a, *y = b;
    return x->tag < y->tag ? -1 : x->tag > y->tag;
}

static int
by_count(const void *a, const void *b)
{
    const struct top_row *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return strcmp(x->name, y->name);
}

size_t
hd_limits_top(const hd_limits_t *l, enum hd_limit_kind k,
              struct hd_limit_top *out, size_t n, size_t *active)
{
    if (active != NULL)
        *active = 0;
    if (l == NULL || (unsigned) k >= HD_LIM__KINDS)
        return 0;
    const _Atomic uint64_t *t = ctable(l, k);
    size_t                  cap = 64, nr = 0;
    struct top_row         *rows = hd_malloc(cap * sizeof(*rows));

    for (uint32_t i = 0; i < kind_entries[k]; i++) {
        uint64_t x = atomic_load_explicit(&t[i], RLX);
        if (W_CNT(x) == 0)
            continue;
        if (nr == cap) {
            cap *= 2;
            rows = hd_realloc(rows, cap * sizeof(*rows));
        }
        rows[nr].tag = W_TAG(x);
        rows[nr].idx = i;
        rows[nr].count = W_CNT(x);
        rows[nr].name[0] = '\0';
        nr++;
    }
    /* a key can briefly have two entries (a claim race): count it once */
    qsort(rows, nr, sizeof(*rows), by_tag);
    size_t m = 0;
    for (size_t i = 0; i < nr; i++) {
        if (m > 0 && rows[m - 1].tag == rows[i].tag)
            rows[m - 1].count += rows[i].count;
        else
            rows[m++] = rows[i];
    }
    if (k == HD_LIM_TENANT)
        for (size_t i = 0; i < m; i++)
            name_read(l, rows[i].idx, rows[i].tag, rows[i].name);
    qsort(rows, m, sizeof(*rows), by_count);
    size_t w = m < n ? m : n;
    for (size_t i = 0; i < w; i++) {
        memcpy(out[i].name, rows[i].name, sizeof(out[i].name));
        out[i].count = rows[i].count;
    }
    if (active != NULL)
        *active = m;
    free(rows);
    return w;
}

void
hd_limits_stats(const hd_limits_t *l, hd_limits_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned k = 0; k < HD_LIM__KINDS; k++)
        out->capacity[k] = kind_entries[k];
    if (l == NULL)
        return;
    out->node = atomic_load_explicit(&l->node, RLX);
    out->reclaimed = atomic_load_explicit(&l->reclaimed, RLX);
    out->suspects = atomic_load_explicit(&l->suspects, RLX);
    for (unsigned k = 0; k < HD_LIM__KINDS; k++)
        out->full[k] = atomic_load_explicit(&l->full[k], RLX);
}

size_t
hd_limits_addr_key(const struct sockaddr *sa, unsigned v6_prefix,
                   unsigned char key[17])
{
    if (sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *) sa;
        key[0] = 4;
        memcpy(key + 1, &s4->sin_addr, 4);
        return 5;
    }
    if (sa->sa_family != AF_INET6)
        return 0;
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *) sa;
    const unsigned char       *a = s6->sin6_addr.s6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
        key[0] = 4; /* same key as the plain IPv4 */
        memcpy(key + 1, a + 12, 4);
        return 5;
    }
    key[0] = 6;
    memcpy(key + 1, a, 16);
    if (v6_prefix > 0 && v6_prefix < 128) {
        unsigned byte = v6_prefix / 8, bits = v6_prefix % 8;
        if (bits != 0)
            key[1 + byte++] &= (unsigned char) (0xff00u >> bits);
        memset(key + 1 + byte, 0, 16 - byte);
    }
    return 17;
}
