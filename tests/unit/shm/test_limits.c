/*
 * Connection-limit tables and leases (shm/hd_limits.c).
 *
 * Includes the .c to reach the entry layout and the probe function: the
 * crafted-state tests (table full, tombstone reuse, a key with two live
 * entries, the kill window) write entry words directly.
 *
 * Single process: limits per kind and node, unlimited, release, tombstone
 * reuse (own and foreign), full -> -ENOSPC, top-N tenants with names,
 * address keys, reclaim, the in-flight record (SipHash itself: common/hash).
 *
 * Multi-process (the test process plays the master):
 *   concurrent_exact  forked workers, each with its own lease, take and give
 *                     back counts of keys that share a bucket, under a
 *                     limit, while the parent samples: an admitted count
 *                     (kept by the workers themselves, raised after a
 *                     successful acquire and lowered before the release)
 *                     must never exceed the limit, nor any entry's count;
 *                     at the end every count is 0.
 *   kill_hold         workers take counts and sleep; SIGKILL, reap,
 *                     reclaim: every count in every table is exactly 0.
 *   kill_churn        the same while the workers acquire and release flat
 *                     out: every count left over must be one that a dead
 *                     worker's in-flight record names (the documented
 *                     window), at most one per such record. Prints how
 *                     often the window was hit.
 *   dontfork          a lease is inherited by the worker it was made for,
 *                     not by workers forked after hd_lease_dontfork().
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "hd_limits.c"

static hd_limits_t *L;

static void
setup(void)
{
    hd_log_configure(HD_LOG_ERROR, HD_LOG_FMT_TEXT, NULL);
    ck_assert_int_eq(hd_limits_create(&L), 0);
}

static void
teardown(void)
{
    hd_limits_destroy(L);
    L = NULL;
}

static uint64_t rnd_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rnd(void)
{
    uint64_t x = rnd_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rnd_state = x;
}

static void
sleep_us(long us)
{
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* Sum of every count in every table plus the node count; *nz gets the
 * number of entries holding one. */
static uint64_t
all_counts(const hd_limits_t *l, unsigned *nz)
{
    uint64_t sum = 0;
    unsigned n = 0;
    for (unsigned k = 0; k < HD_LIM__KINDS; k++) {
        const _Atomic uint64_t *t = ctable(l, (enum hd_limit_kind) k);
        for (uint32_t i = 0; i < kind_entries[k]; i++) {
            uint32_t c = W_CNT(atomic_load(&t[i]));
            sum += c;
            n += c > 0;
        }
    }
    uint64_t node = hd_limits_node_count(l);
    sum += node;
    n += node > 0;
    if (nz != NULL)
        *nz = n;
    return sum;
}

/* Largest count of any single entry carrying key's tag. */
static uint32_t
max_entry(const hd_limits_t *l, enum hd_limit_kind k, const char *key)
{
    struct probe pr;
    probe_of(l, k, key, strlen(key), &pr);
    uint32_t m = 0;
    for (unsigned i = 0; i < PROBES; i++) {
        uint64_t x = atomic_load(&ctable(l, k)[probe_pos(&pr, i)]);
        if (W_TAG(x) == pr.tag && W_CNT(x) > m)
            m = W_CNT(x);
    }
    return m;
}

static int
acq(hd_lease_t *ls, int fd, enum hd_limit_kind k, const char *key,
    uint32_t limit)
{
    return hd_limits_acquire(L, ls, fd, k, key, strlen(key), limit);
}

static uint32_t
cnt(enum hd_limit_kind k, const char *key)
{
    return hd_limits_count(L, k, key, strlen(key));
}

/* ---- hashing ---- */

START_TEST(seed_is_random)
{
    hd_limits_t *b = NULL;
    ck_assert_int_eq(hd_limits_create(&b), 0);
    ck_assert(L->seed[0] != 0 || L->seed[1] != 0);
    ck_assert(L->seed[0] != b->seed[0] || L->seed[1] != b->seed[1]);
    ck_assert_uint_eq(L->magic, LIMITS_MAGIC);
    ck_assert_uint_eq(L->entries[HD_LIM_TENANT], HD_LIMITS_TENANT_ENTRIES);
    hd_limits_destroy(b);
}
END_TEST

/* ---- single process ---- */

START_TEST(limit_per_kind)
{
    hd_lease_t *ls = hd_lease_create(1024);
    ck_assert_ptr_nonnull(ls);
    for (unsigned kk = 0; kk < HD_LIM__KINDS; kk++) {
        enum hd_limit_kind k = (enum hd_limit_kind) kk;
        int                base = (int) kk * 100;
        for (int i = 0; i < 3; i++)
            ck_assert_int_eq(acq(ls, base + i, k, "alpha", 3), 0);
        ck_assert_int_eq(acq(ls, base + 3, k, "alpha", 3), -EDQUOT);
        ck_assert(!hd_limits_holds(ls, base + 3, k));
        ck_assert_uint_eq(cnt(k, "alpha"), 3);
        /* another key, and the same key in another kind, are unaffected */
        ck_assert_uint_eq(cnt(k, "beta"), 0);
        ck_assert_int_eq(acq(ls, base + 3, k, "beta", 3), 0);
        ck_assert_uint_eq(cnt(k, "beta"), 1);
        /* a lower limit applies at once; a higher one lets more in */
        ck_assert_int_eq(acq(ls, base + 4, k, "alpha", 2), -EDQUOT);
        ck_assert_int_eq(acq(ls, base + 4, k, "alpha", 4), 0);
        ck_assert_uint_eq(cnt(k, "alpha"), 4);
        /* one back, one more in */
        hd_limits_release(L, ls, base + 1, k);
        ck_assert(!hd_limits_holds(ls, base + 1, k));
        ck_assert_uint_eq(cnt(k, "alpha"), 3);
        ck_assert_int_eq(acq(ls, base + 5, k, "alpha", 4), 0);
        ck_assert_int_eq(acq(ls, base + 6, k, "alpha", 4), -EDQUOT);
        for (int i = 0; i < 7; i++)
            hd_limits_release_fd(L, ls, base + i);
        ck_assert_uint_eq(cnt(k, "alpha"), 0);
        ck_assert_uint_eq(cnt(k, "beta"), 0);
    }
    for (unsigned k = 0; k < HD_LIM__KINDS; k++)
        ck_assert_uint_eq(cnt((enum hd_limit_kind) k, "alpha"), 0);
    ck_assert_uint_eq(all_counts(L, NULL), 0);
    hd_lease_reclaim(L, ls);
}
END_TEST

START_TEST(node_limit)
{
    hd_lease_t *ls = hd_lease_create(64);
    ck_assert_int_eq(hd_limits_acquire_node(L, ls, 5, 2), 0);
    ck_assert_int_eq(hd_limits_acquire_node(L, ls, 5, 2), -EEXIST);
    ck_assert_int_eq(hd_limits_acquire_node(L, ls, 6, 2), 0);
    ck_assert_int_eq(hd_limits_acquire_node(L, ls, 7, 2), -EDQUOT);
    ck_assert(!hd_limits_holds(ls, 7, HD_LIM__KINDS));
    ck_assert(hd_limits_holds(ls, 6, HD_LIM__KINDS));
    ck_assert_uint_eq(hd_limits_node_count(L), 2);
    ck_assert_int_eq(hd_limits_acquire_node(L, ls, 7, 0), 0); /* unlimited */
    ck_assert_uint_eq(hd_limits_node_count(L), 3);
    hd_limits_release_fd(L, ls, 5);
    hd_limits_release_fd(L, ls, 5); /* idempotent */
    ck_assert_uint_eq(hd_limits_node_count(L), 2);
    hd_limits_release_fd(L, ls, 6);
    hd_limits_release_fd(L, ls, 7);
    ck_assert_uint_eq(hd_limits_node_count(L), 0);
    hd_lease_reclaim(L, ls);
}
END_TEST

START_TEST(unlimited_and_clamp)
{
    hd_lease_t *ls = hd_lease_create(4096);
    for (int fd = 0; fd < 3000; fd++)
        ck_assert_int_eq(acq(ls, fd, HD_LIM_USER, "many", 0), 0);
    ck_assert_uint_eq(cnt(HD_LIM_USER, "many"), 3000);
    for (int fd = 0; fd < 3000; fd++)
        hd_limits_release_fd(L, ls, fd);
    ck_assert_uint_eq(cnt(HD_LIM_USER, "many"), 0);

    /* the 24-bit count is a hard ceiling even for "unlimited" */
    struct probe pr;
    probe_of(L, HD_LIM_USER, "full", 4, &pr);
    atomic_store(&L->user[probe_pos(&pr, 0)],
                 W_MK(pr.tag, HD_LIMITS_COUNT_MAX));
    ck_assert_int_eq(acq(ls, 1, HD_LIM_USER, "full", 0), -EDQUOT);
    ck_assert_int_eq(acq(ls, 1, HD_LIM_USER, "full", 0xffffffffu), -EDQUOT);
    ck_assert_uint_eq(W_CNT(atomic_load(&L->user[probe_pos(&pr, 0)])),
                      HD_LIMITS_COUNT_MAX);
    ck_assert_uint_eq(atomic_load(&ls->inflight), 0);
    hd_lease_reclaim(L, ls);
}
END_TEST

START_TEST(bad_arguments)
{
    hd_lease_t *ls = hd_lease_create(16);
    /* limits off */
    ck_assert_int_eq(hd_limits_acquire(NULL, NULL, 3, HD_LIM_IP, "x", 1, 1), 0);
    ck_assert_int_eq(hd_limits_acquire_node(NULL, NULL, 3, 1), 0);
    hd_limits_release_fd(NULL, NULL, 3);
    /* a table without a lease cannot be used: nothing could release it */
    ck_assert_int_eq(hd_limits_acquire(L, NULL, 3, HD_LIM_IP, "x", 1, 1),
                     -EINVAL);
    ck_assert_int_eq(hd_limits_acquire(L, ls, 3, HD_LIM__KINDS, "x", 1, 1),
                     -EINVAL);
    ck_assert_int_eq(hd_limits_acquire(L, ls, 16, HD_LIM_IP, "x", 1, 1),
                     -EBADF);
    ck_assert_int_eq(hd_limits_acquire(L, ls, -1, HD_LIM_IP, "x", 1, 1),
                     -EBADF);
    ck_assert_int_eq(hd_limits_acquire_node(L, ls, 16, 0), -EBADF);
    ck_assert_int_eq(hd_limits_acquire(L, ls, 15, HD_LIM_IP, "x", 1, 1), 0);
    /* fd 15 already holds an IP count: a reused fd number not released */
    ck_assert_int_eq(hd_limits_acquire(L, ls, 15, HD_LIM_IP, "y", 1, 1),
                     -EEXIST);
    ck_assert_uint_eq(cnt(HD_LIM_IP, "y"), 0);
    ck_assert_uint_eq(cnt(HD_LIM_IP, "x"), 1);
    /* an empty key is a key */
    ck_assert_int_eq(hd_limits_acquire(L, ls, 14, HD_LIM_USER, "", 0, 1), 0);
    ck_assert_uint_eq(hd_limits_count(L, HD_LIM_USER, "", 0), 1);
    hd_limits_release(L, ls, 14, HD_LIM_IP); /* holds none: no-op */
    ck_assert_uint_eq(hd_limits_count(L, HD_LIM_USER, "", 0), 1);
    hd_lease_reclaim(L, ls);
    ck_assert_uint_eq(all_counts(L, NULL), 0);
    hd_lease_reclaim(L, NULL);
    ls = hd_lease_create(0);
    ck_assert_uint_eq(ls->max_fds, 1);
    ck_assert_int_eq(hd_limits_acquire_node(L, ls, 0, 0), 0);
    ck_assert_int_eq(hd_limits_acquire_node(L, ls, 1, 0), -EBADF);
    hd_lease_reclaim(L, ls);
    ck_assert_uint_eq(all_counts(L, NULL), 0);
}
END_TEST

START_TEST(own_tombstone_reused)
{
    hd_lease_t *ls = hd_lease_create(64);
    ck_assert_int_eq(acq(ls, 1, HD_LIM_IP, "10.0.0.1", 5), 0);
    uint32_t idx = rec_field(rec_get(ls, 1), HD_LIM_IP) - 1;
    hd_limits_release_fd(L, ls, 1);
    uint64_t w = atomic_load(&L->ip[idx]);
    ck_assert_uint_eq(W_CNT(w), 0);
    ck_assert_uint_ne(W_TAG(w), 0); /* a tombstone keeps its tag */
    ck_assert_int_eq(acq(ls, 2, HD_LIM_IP, "10.0.0.1", 5), 0);
    ck_assert_uint_eq(rec_field(rec_get(ls, 2), HD_LIM_IP) - 1, idx);
    ck_assert_uint_eq(atomic_load(&L->ip[idx]), w + 1);
    hd_lease_reclaim(L, ls);
}
END_TEST

/* Both buckets of a key held by other keys: -ENOSPC (fail closed); one of
 * them released: the key takes that tombstone. */
START_TEST(full_then_foreign_tombstone)
{
    hd_lease_t  *ls = hd_lease_create(64);
    struct probe pr;
    probe_of(L, HD_LIM_TENANT, "acme", 4, &pr);
    for (unsigned i = 0; i < PROBES; i++)
        atomic_store(&L->tenant[probe_pos(&pr, i)],
                     W_MK((pr.tag ^ (0x1000u + i)) & 0xffffffffffull, 1));
    ck_assert_int_eq(acq(ls, 1, HD_LIM_TENANT, "acme", 0), -ENOSPC);
    ck_assert_uint_eq(atomic_load(&L->full[HD_LIM_TENANT]), 1);
    ck_assert(!hd_limits_holds(ls, 1, HD_LIM_TENANT));
    ck_assert_uint_eq(atomic_load(&ls->inflight), 0);
    /* other kinds are not affected */
    ck_assert_int_eq(acq(ls, 1, HD_LIM_USER, "acme", 0), 0);

    uint32_t freed = probe_pos(&pr, 11);
    uint64_t old = atomic_load(&L->tenant[freed]);
    atomic_store(&L->tenant[freed], old - 1); /* its holder left */
    ck_assert_int_eq(acq(ls, 1, HD_LIM_TENANT, "acme", 0), 0);
    ck_assert_uint_eq(rec_field(rec_get(ls, 1), HD_LIM_TENANT) - 1, freed);
    ck_assert_uint_eq(atomic_load(&L->tenant[freed]), W_MK(pr.tag, 1));
    ck_assert_uint_eq(cnt(HD_LIM_TENANT, "acme"), 1);
    ck_assert_int_eq(acq(ls, 2, HD_LIM_TENANT, "acme", 0), 0);
    ck_assert_int_eq(acq(ls, 3, HD_LIM_TENANT, "acme", 0), 0);
    ck_assert_uint_eq(atomic_load(&L->tenant[freed]), W_MK(pr.tag, 3));
    /* the name came with the claim */
    struct hd_limit_top top[4];
    size_t              active = 0;
    ck_assert_uint_eq(hd_limits_top(L, HD_LIM_TENANT, top, 4, &active), 4);
    ck_assert_uint_eq(active, 16);
    ck_assert_str_eq(top[0].name, "acme");
    ck_assert_uint_eq(top[0].count, 3);
    ck_assert_str_eq(top[1].name, ""); /* staged holders have no name */
    for (int fd = 1; fd <= 3; fd++)
        hd_limits_release_fd(L, ls, fd);
    ck_assert_uint_eq(atomic_load(&L->tenant[freed]), W_MK(pr.tag, 0));
    hd_lease_reclaim(L, ls);
}
END_TEST

/*
 * Real keys that can only live in one bucket B: NK keys share B and the
 * other bucket of each is held by foreign keys (staged). B's 8 entries
 * then pass from key to key as tombstones; a model says what every
 * acquire must answer: within the limit while the key is live, a new key
 * only while fewer than 8 are live, else -ENOSPC.
 */
#define NK 24

/* Hold every entry of the bucket starting at base with a foreign key. */
static void
stage_full(_Atomic uint64_t *t, uint32_t base)
{
    for (unsigned i = 0; i < BUCKET; i++)
        if (W_CNT(atomic_load(&t[base + i])) == 0)
            atomic_store(&t[base + i], W_MK(0xf0f0f0f0f0ull + base + i, 1));
}

static uint32_t
pick_shared(enum hd_limit_kind k, const char *prefix, char keys[][16],
            unsigned n, bool stage)
{
    unsigned     nk = 0;
    struct probe p0;
    char         name[16];
    snprintf(name, sizeof(name), "%s0", prefix);
    probe_of(L, k, name, strlen(name), &p0);
    uint32_t B = p0.base[0];
    for (unsigned i = 0; nk < n; i++) {
        struct probe pr;
        snprintf(name, sizeof(name), "%s%u", prefix, i);
        probe_of(L, k, name, strlen(name), &pr);
        if (pr.base[0] != B && pr.base[1] != B)
            continue;
        memcpy(keys[nk++], name, 16);
        if (stage)
            stage_full(table(L, k), pr.base[0] == B ? pr.base[1] : pr.base[0]);
    }
    return B;
}

/* Undo stage_full(): drop every foreign holder it made. */
static void
unstage(enum hd_limit_kind k)
{
    _Atomic uint64_t *t = table(L, k);
    for (uint32_t i = 0; i < kind_entries[k]; i++)
        if (W_TAG(atomic_load(&t[i])) == 0xf0f0f0f0f0ull + i)
            atomic_store(&t[i], 0);
}

START_TEST(one_bucket_model)
{
    hd_lease_t *ls = hd_lease_create(64);
    char        keys[NK][16];
    int         key_of[64];
    unsigned    count[NK] = { 0 }, live = 0, enospc = 0, handed = 0;
    uint64_t    prev_tag[BUCKET];
    uint32_t    B = pick_shared(HD_LIM_USER, "u", keys, NK, true);
    for (unsigned i = 0; i < BUCKET; i++)
        prev_tag[i] = 0;
    for (int i = 0; i < 64; i++)
        key_of[i] = -1;

    for (unsigned step = 0; step < 20000; step++) {
        int fd = (int) (rnd() % 64);
        if (key_of[fd] >= 0) {
            unsigned k = (unsigned) key_of[fd];
            hd_limits_release_fd(L, ls, fd);
            key_of[fd] = -1;
            live -= --count[k] == 0;
        } else {
            unsigned k = (unsigned) (rnd() % NK);
            int      want = count[k] >= 2              ? -EDQUOT
                     : count[k] == 0 && live == BUCKET ? -ENOSPC
                                                       : 0;
            int      rc = acq(ls, fd, HD_LIM_USER, keys[k], 2);
            ck_assert_msg(rc == want,
                          "step %u key %s (count %u, %u live): "
                          "got %d, want %d",
                          step, keys[k], count[k], live, rc, want);
            if (rc == 0) {
                key_of[fd] = (int) k;
                live += count[k]++ == 0;
                uint32_t e = rec_field(rec_get(ls, fd), HD_LIM_USER) - 1;
                ck_assert(e >= B && e < B + BUCKET);
            }
            enospc += rc == -ENOSPC;
        }
        for (unsigned k = 0; k < NK; k++)
            ck_assert_uint_eq(cnt(HD_LIM_USER, keys[k]), count[k]);
        for (unsigned i = 0; i < BUCKET; i++) {
            uint64_t t = W_TAG(atomic_load(&L->user[B + i]));
            handed += prev_tag[i] != 0 && t != prev_tag[i];
            prev_tag[i] = t;
        }
    }
    /* the model was exercised both ways */
    ck_assert_uint_gt(enospc, 100);
    ck_assert_uint_gt(handed, 100); /* entries changed keys */
    for (int fd = 0; fd < 64; fd++)
        hd_limits_release_fd(L, ls, fd);
    unstage(HD_LIM_USER);
    ck_assert_uint_eq(all_counts(L, NULL), 0);
    hd_lease_reclaim(L, ls);
}
END_TEST

/* Two live entries with the key's tag (what a 40-bit tag collision of two
 * live keys looks like): the verify never settles, the acquire gives up
 * with -EDQUOT and leaves everything as it was. */
START_TEST(unsettled_fails_closed)
{
    hd_lease_t  *ls = hd_lease_create(64);
    struct probe pr;
    probe_of(L, HD_LIM_IP, "dup", 3, &pr);
    uint32_t a = probe_pos(&pr, 2), b = probe_pos(&pr, 9);
    atomic_store(&L->ip[a], W_MK(pr.tag, 1));
    atomic_store(&L->ip[b], W_MK(pr.tag, 1));
    ck_assert_int_eq(acq(ls, 4, HD_LIM_IP, "dup", 10), -EDQUOT);
    ck_assert_uint_eq(atomic_load(&L->ip[a]), W_MK(pr.tag, 1));
    ck_assert_uint_eq(atomic_load(&L->ip[b]), W_MK(pr.tag, 1));
    ck_assert_uint_eq(rec_get(ls, 4), 0);
    ck_assert_uint_eq(atomic_load(&ls->inflight), 0);
    /* one of them gone: settles on the other */
    atomic_store(&L->ip[a], W_MK(pr.tag, 0));
    ck_assert_int_eq(acq(ls, 4, HD_LIM_IP, "dup", 10), 0);
    ck_assert_uint_eq(atomic_load(&L->ip[b]), W_MK(pr.tag, 2));
    ck_assert_uint_eq(atomic_load(&L->ip[a]), W_MK(pr.tag, 0));
    hd_lease_reclaim(L, ls);
    ck_assert_uint_eq(atomic_load(&L->ip[b]), W_MK(pr.tag, 1));
}
END_TEST

START_TEST(top_tenants)
{
    hd_lease_t *ls = hd_lease_create(256);
    static const struct {
        const char *name;
        int         n;
    } t[] = {
        { "acme", 5 },     { "globex", 3 }, { "initech", 7 },
        { "umbrella", 1 }, { "hooli", 3 },
    };
    int fd = 0;
    for (unsigned i = 0; i < 5; i++)
        for (int j = 0; j < t[i].n; j++)
            ck_assert_int_eq(acq(ls, fd++, HD_LIM_TENANT, t[i].name, 0), 0);
    struct hd_limit_top top[10];
    size_t              active = 0;
    ck_assert_uint_eq(hd_limits_top(L, HD_LIM_TENANT, top, 3, &active), 3);
    ck_assert_uint_eq(active, 5);
    ck_assert_str_eq(top[0].name, "initech");
    ck_assert_uint_eq(top[0].count, 7);
    ck_assert_str_eq(top[1].name, "acme");
    ck_assert_uint_eq(top[1].count, 5);
    ck_assert_str_eq(top[2].name, "globex"); /* ties by name */
    ck_assert_uint_eq(top[2].count, 3);
    ck_assert_uint_eq(hd_limits_top(L, HD_LIM_TENANT, top, 10, NULL), 5);
    ck_assert_str_eq(top[3].name, "hooli");
    ck_assert_str_eq(top[4].name, "umbrella");

    /* initech leaves */
    for (int f = 8; f < 15; f++)
        hd_limits_release_fd(L, ls, f);
    ck_assert_uint_eq(hd_limits_top(L, HD_LIM_TENANT, top, 10, &active), 4);
    ck_assert_uint_eq(active, 4);
    ck_assert_str_eq(top[0].name, "acme");

    /* a long name is cut at 64 bytes, never inside a UTF-8 character */
    char longname[128];
    memset(longname, 'a', 63);
    memcpy(longname + 63, "\xc3\xa9tail", 7); /* e-acute straddles 64 */
    longname[70] = '\0';
    ck_assert_int_eq(acq(ls, 200, HD_LIM_TENANT, longname, 0), 0);
    ck_assert_int_eq(acq(ls, 201, HD_LIM_TENANT, longname, 0), 0);
    ck_assert_int_eq(acq(ls, 202, HD_LIM_TENANT, longname, 0), 0);
    ck_assert_int_eq(acq(ls, 203, HD_LIM_TENANT, longname, 0), 0);
    ck_assert_int_eq(acq(ls, 204, HD_LIM_TENANT, longname, 0), 0);
    ck_assert_int_eq(acq(ls, 205, HD_LIM_TENANT, longname, 0), 0);
    ck_assert_uint_eq(hd_limits_top(L, HD_LIM_TENANT, top, 1, NULL), 1);
    ck_assert_uint_eq(top[0].count, 6);
    ck_assert_uint_eq(strlen(top[0].name), 63);
    ck_assert_int_eq(strncmp(top[0].name, longname, 63), 0);
    /* exactly 64 bytes are kept whole */
    char n64[65];
    memset(n64, 'z', 64);
    n64[64] = '\0';
    for (int f = 210; f < 220; f++)
        ck_assert_int_eq(acq(ls, f, HD_LIM_TENANT, n64, 0), 0);
    ck_assert_uint_eq(hd_limits_top(L, HD_LIM_TENANT, top, 1, NULL), 1);
    ck_assert_str_eq(top[0].name, n64);
    /* IP keys have no names */
    ck_assert_int_eq(acq(ls, 0, HD_LIM_IP, "1.2.3.4", 0), 0);
    ck_assert_uint_eq(hd_limits_top(L, HD_LIM_IP, top, 10, &active), 1);
    ck_assert_str_eq(top[0].name, "");
    ck_assert_uint_eq(top[0].count, 1);
    hd_lease_reclaim(L, ls);
    ck_assert_uint_eq(hd_limits_top(L, HD_LIM_TENANT, top, 10, &active), 0);
    ck_assert_uint_eq(active, 0);
}
END_TEST

START_TEST(addr_keys)
{
    unsigned char       a[17], b[17];
    struct sockaddr_in  s4 = { .sin_family = AF_INET };
    struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 };
    inet_pton(AF_INET, "192.0.2.7", &s4.sin_addr);
    inet_pton(AF_INET6, "::ffff:192.0.2.7", &s6.sin6_addr);
    ck_assert_uint_eq(hd_limits_addr_key((struct sockaddr *) &s4, 64, a), 5);
    ck_assert_uint_eq(hd_limits_addr_key((struct sockaddr *) &s6, 64, b), 5);
    ck_assert_mem_eq(a, b, 5);

    inet_pton(AF_INET6, "2001:db8:0:0:1::1", &s6.sin6_addr);
    ck_assert_uint_eq(hd_limits_addr_key((struct sockaddr *) &s6, 64, a), 17);
    inet_pton(AF_INET6, "2001:db8::ffff:2", &s6.sin6_addr);
    ck_assert_uint_eq(hd_limits_addr_key((struct sockaddr *) &s6, 64, b), 17);
    ck_assert_mem_eq(a, b, 17); /* same /64 */
    ck_assert_uint_eq(hd_limits_addr_key((struct sockaddr *) &s6, 0, b), 17);
    ck_assert(memcmp(a, b, 17) != 0); /* whole address */
    inet_pton(AF_INET6, "2001:db8:0:1::1", &s6.sin6_addr);
    hd_limits_addr_key((struct sockaddr *) &s6, 64, b);
    ck_assert(memcmp(a, b, 17) != 0); /* another /64 */
    /* /60: the low 4 bits of byte 7 go */
    inet_pton(AF_INET6, "2001:db8:0:f::1", &s6.sin6_addr);
    hd_limits_addr_key((struct sockaddr *) &s6, 60, a);
    inet_pton(AF_INET6, "2001:db8:0:0::2", &s6.sin6_addr);
    hd_limits_addr_key((struct sockaddr *) &s6, 60, b);
    ck_assert_mem_eq(a, b, 17);
    inet_pton(AF_INET6, "2001:db8:0:10::2", &s6.sin6_addr);
    hd_limits_addr_key((struct sockaddr *) &s6, 60, b);
    ck_assert(memcmp(a, b, 17) != 0);

    struct sockaddr_un su = { .sun_family = AF_UNIX };
    ck_assert_uint_eq(hd_limits_addr_key((struct sockaddr *) &su, 64, a), 0);
}
END_TEST

/* A worker that never released anything: reclaim gives every count back. */
START_TEST(reclaim_gives_back)
{
    hd_lease_t      *ls = hd_lease_create(1 << 16);
    static const int fds[] = { 3, 10, 500, 40000 };
    for (unsigned i = 0; i < 4; i++) {
        ck_assert_int_eq(hd_limits_acquire_node(L, ls, fds[i], 0), 0);
        ck_assert_int_eq(acq(ls, fds[i], HD_LIM_IP, "10.1.1.1", 0), 0);
        ck_assert_int_eq(acq(ls, fds[i], HD_LIM_USER, i & 1 ? "bob" : "eve", 0),
                         0);
        ck_assert_int_eq(acq(ls, fds[i], HD_LIM_TENANT, "acme", 0), 0);
    }
    ck_assert_uint_eq(atomic_load(&ls->hiwat), 40001);
    ck_assert_uint_eq(all_counts(L, NULL), 16);
    hd_lease_reclaim(L, ls);
    unsigned nz = 99;
    ck_assert_uint_eq(all_counts(L, &nz), 0);
    ck_assert_uint_eq(nz, 0);
    hd_limits_stats_t st;
    hd_limits_stats(L, &st);
    ck_assert_uint_eq(st.reclaimed, 16);
    ck_assert_uint_eq(st.suspects, 0);
    ck_assert_uint_eq(st.capacity[HD_LIM_IP], HD_LIMITS_IP_ENTRIES);
}
END_TEST

/* The kill window, staged: each case is the state a worker would leave if
 * SIGKILLed at that instruction. */
START_TEST(reclaim_inflight)
{
    hd_limits_stats_t st;
    struct probe      pr;
    probe_of(L, HD_LIM_USER, "u", 1, &pr);

    /* (a) after the acquire's CAS, before its record: one count leaks,
     * the master flags it */
    hd_lease_t *ls = hd_lease_create(64);
    uint32_t    e = probe_pos(&pr, 0);
    atomic_store(&L->user[e], W_MK(pr.tag, 1));
    inflight_set(ls, 6, HD_LIM_USER, e, false);
    hiwat_raise(ls, 6);
    hd_lease_reclaim(L, ls);
    hd_limits_stats(L, &st);
    ck_assert_uint_eq(st.suspects, 1);
    ck_assert_uint_eq(cnt(HD_LIM_USER, "u"), 1);
    atomic_store(&L->user[e], 0);

    /* (b) after the record, before the in-flight word is cleared: exact */
    ls = hd_lease_create(64);
    ck_assert_int_eq(acq(ls, 7, HD_LIM_USER, "u", 0), 0);
    e = rec_field(rec_get(ls, 7), HD_LIM_USER) - 1;
    inflight_set(ls, 7, HD_LIM_USER, e, false);
    hd_lease_reclaim(L, ls);
    hd_limits_stats(L, &st);
    ck_assert_uint_eq(st.suspects, 1);
    ck_assert_uint_eq(cnt(HD_LIM_USER, "u"), 0);

    /* (c) release: record cleared, decrement not done: leaks, flagged */
    ls = hd_lease_create(64);
    ck_assert_int_eq(acq(ls, 8, HD_LIM_USER, "u", 0), 0);
    e = rec_field(rec_get(ls, 8), HD_LIM_USER) - 1;
    inflight_set(ls, 8, HD_LIM_USER, e, true);
    rec_put(ls, 8, 0);
    hd_lease_reclaim(L, ls);
    hd_limits_stats(L, &st);
    ck_assert_uint_eq(st.suspects, 2);
    ck_assert_uint_eq(cnt(HD_LIM_USER, "u"), 1);
    atomic_store(&L->user[e], W_MK(pr.tag, 0));

    /* (d) release: in-flight set, record not cleared yet: exact */
    ls = hd_lease_create(64);
    ck_assert_int_eq(acq(ls, 9, HD_LIM_USER, "u", 0), 0);
    e = rec_field(rec_get(ls, 9), HD_LIM_USER) - 1;
    inflight_set(ls, 9, HD_LIM_USER, e, true);
    hd_lease_reclaim(L, ls);
    hd_limits_stats(L, &st);
    ck_assert_uint_eq(st.suspects, 2);
    ck_assert_uint_eq(cnt(HD_LIM_USER, "u"), 0);

    /* (e) node: CAS done, bit not recorded: flagged */
    ls = hd_lease_create(64);
    atomic_store(&L->node, 1);
    inflight_set(ls, 3, KIND_NODE, 0, false);
    hd_lease_reclaim(L, ls);
    hd_limits_stats(L, &st);
    ck_assert_uint_eq(st.suspects, 3);
    ck_assert_uint_eq(hd_limits_node_count(L), 1);
    ck_assert_uint_eq(st.reclaimed, 2);
}
END_TEST

/* ---- multi-process ---- */

#define NPROC    8
#define NKEYS    12
#define KLIMIT   3
#define NODE_LIM 60
#define FDS_PER  12

struct shared {
    _Atomic int32_t  admitted[NKEYS]; /* per key, kept by the workers */
    _Atomic int32_t  node_admitted;
    _Atomic uint64_t ops, rejects, full;
    _Atomic uint64_t violations; /* seen by a worker at admission */
    _Atomic int32_t  worst;      /* highest admitted count seen */
    _Atomic int      ready;
    _Atomic int      stop;
    int32_t          klimit;
};

static char ckeys[NKEYS][16];

/* A worker: takes and gives back counts on FDS_PER fds at random. The
 * shared admitted counts go up after a successful acquire and down before
 * the release, so they never exceed what the tables hold: the value a
 * worker's own increment returns is an exact observation, checked at every
 * single admission (the parent's sampling adds the entry counts). */
static void
admit(struct shared *sh, _Atomic int32_t *a, int32_t limit)
{
    int32_t v = atomic_fetch_add(a, 1) + 1;
    if (v > limit)
        atomic_fetch_add(&sh->violations, 1);
    int32_t w = atomic_load_explicit(&sh->worst, RLX);
    while (v > w && !atomic_compare_exchange_weak(&sh->worst, &w, v))
        ;
}

static void churn(struct shared *sh, hd_lease_t *ls, unsigned seed, bool shadow)
    __attribute__((noreturn));
static void
churn(struct shared *sh, hd_lease_t *ls, unsigned seed, bool shadow)
{
    int key_of[FDS_PER];
    rnd_state ^= (uint64_t) seed * 0x9e3779b97f4a7c15ull + 1;
    for (int i = 0; i < FDS_PER; i++)
        key_of[i] = -1;
    atomic_fetch_add(&sh->ready, 1);
    uint64_t ops = 0, rej = 0, full = 0;
    while (!atomic_load_explicit(&sh->stop, RLX)) {
        int fd = (int) (rnd() % FDS_PER);
        if (key_of[fd] >= 0) {
            if (shadow) {
                atomic_fetch_sub(&sh->admitted[key_of[fd]], 1);
                atomic_fetch_sub(&sh->node_admitted, 1);
            }
            hd_limits_release_fd(L, ls, fd);
            key_of[fd] = -1;
        } else {
            int k = (int) (rnd() % NKEYS);
            int rc = hd_limits_acquire_node(L, ls, fd, NODE_LIM);
            if (rc == 0) {
                if (shadow
                    && atomic_fetch_add(&sh->node_admitted, 1) >= NODE_LIM)
                    atomic_fetch_add(&sh->violations, 1);
                rc = acq(ls, fd, HD_LIM_TENANT, ckeys[k],
                         (uint32_t) sh->klimit);
                if (rc == 0) {
                    if (shadow)
                        admit(sh, &sh->admitted[k], sh->klimit);
                    key_of[fd] = k;
                } else {
                    if (shadow)
                        atomic_fetch_sub(&sh->node_admitted, 1);
                    hd_limits_release_fd(L, ls, fd);
                }
            }
            if (rc == -ENOSPC)
                full++;
            else if (rc != 0)
                rej++;
        }
        ops++;
        if ((ops & 1023) == 0) {
            atomic_fetch_add(&sh->ops, 1024);
            atomic_fetch_add(&sh->rejects, rej);
            atomic_fetch_add(&sh->full, full);
            rej = full = 0;
        }
    }
    for (int fd = 0; fd < FDS_PER; fd++)
        if (key_of[fd] >= 0) {
            if (shadow) {
                atomic_fetch_sub(&sh->admitted[key_of[fd]], 1);
                atomic_fetch_sub(&sh->node_admitted, 1);
            }
            hd_limits_release_fd(L, ls, fd);
        }
    atomic_fetch_add(&sh->rejects, rej);
    atomic_fetch_add(&sh->full, full);
    _exit(0);
}

static struct shared *
shared_map(void)
{
    void *p = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert(p != MAP_FAILED);
    return p;
}

static void
wait_ready(struct shared *sh, int n)
{
    double t0 = now_s();
    while (atomic_load(&sh->ready) < n) {
        ck_assert_msg(now_s() - t0 < 10, "workers did not start");
        sleep_us(100);
    }
}

START_TEST(concurrent_exact)
{
    /* _i == 0: keys spread over their two buckets, limit 3; _i == 1: the
     * other bucket of every key is staged full, so all NKEYS keys fight for
     * the 8 entries of one bucket (-ENOSPC all the time); _i == 2: the same
     * with limit 1, so keys drop to 0 and are claimed again constantly
     * (claim races on tombstones) */
    struct shared *sh = shared_map();
    int32_t        klimit = sh->klimit = _i == 2 ? 1 : KLIMIT;
    hd_lease_t    *ls[NPROC];
    pid_t          pid[NPROC];
    pick_shared(HD_LIM_TENANT, "t", ckeys, NKEYS, _i >= 1);
    for (int i = 0; i < NPROC; i++) {
        ls[i] = hd_lease_create(FDS_PER); /* as the master does */
        pid[i] = fork();
        ck_assert_int_ge(pid[i], 0);
        if (pid[i] == 0)
            churn(sh, ls[i], (unsigned) i + 1, true);
        hd_lease_dontfork(ls[i]);
    }
    wait_ready(sh, NPROC);

    uint64_t samples = 0, bad = 0;
    int32_t  peak[NKEYS] = { 0 }, node_peak = 0;
    char     first[256] = "";
    double   t0 = now_s();
    while (now_s() - t0 < 2.0) {
        for (int k = 0; k < NKEYS; k++) {
            int32_t  a = atomic_load(&sh->admitted[k]);
            uint32_t m = max_entry(L, HD_LIM_TENANT, ckeys[k]);
            if (a > peak[k])
                peak[k] = a;
            if (a > klimit || m > (uint32_t) klimit) {
                if (bad++ == 0)
                    snprintf(first, sizeof(first),
                             "key %s: admitted %d, "
                             "entry %u, limit %d",
                             ckeys[k], a, m, klimit);
            }
        }
        int32_t  na = atomic_load(&sh->node_admitted);
        uint64_t nc = hd_limits_node_count(L);
        if (na > node_peak)
            node_peak = na;
        if (na > NODE_LIM || nc > NODE_LIM) {
            if (bad++ == 0)
                snprintf(first, sizeof(first), "node: admitted %d, count %llu",
                         na, (unsigned long long) nc);
        }
        samples++;
    }
    atomic_store(&sh->stop, 1);
    for (int i = 0; i < NPROC; i++) {
        int st;
        ck_assert_int_eq(waitpid(pid[i], &st, 0), pid[i]);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        hd_lease_reclaim(L, ls[i]);
    }
    fprintf(stderr,
            "concurrent_exact(%s, limit %d): %d workers, %llu ops, "
            "%llu limit rejections, %llu -ENOSPC, %llu samples, %llu "
            "violations at admission; peaks:",
            _i ? "one bucket" : "spread", klimit, NPROC,
            (unsigned long long) atomic_load(&sh->ops),
            (unsigned long long) atomic_load(&sh->rejects),
            (unsigned long long) atomic_load(&sh->full),
            (unsigned long long) samples,
            (unsigned long long) atomic_load(&sh->violations));
    for (int k = 0; k < NKEYS; k++)
        fprintf(stderr, " %d", peak[k]);
    fprintf(stderr, " node %d\n", node_peak);

    ck_assert_msg(atomic_load(&sh->violations) == 0,
                  "%llu admissions over "
                  "the limit (worst count %d, limit %d)",
                  (unsigned long long) atomic_load(&sh->violations),
                  atomic_load(&sh->worst), klimit);
    ck_assert_msg(bad == 0, "%llu violations sampled, first: %s",
                  (unsigned long long) bad, first);
    /* the test did what it claims: limits were reached and enforced */
    ck_assert_uint_gt(atomic_load(&sh->ops), 100000);
    ck_assert_uint_gt(atomic_load(&sh->rejects), 1000);
    bool reached = false;
    for (int k = 0; k < NKEYS; k++)
        reached |= peak[k] == klimit;
    ck_assert(reached);
    ck_assert_int_eq(atomic_load(&sh->worst), klimit);
    if (_i >= 1)
        ck_assert_uint_gt(atomic_load(&sh->full), 100);
    /* every worker gave everything back; nothing for reclaim to do */
    unstage(HD_LIM_TENANT);
    unsigned nz;
    ck_assert_uint_eq(all_counts(L, &nz), 0);
    for (int k = 0; k < NKEYS; k++)
        ck_assert_int_eq(atomic_load(&sh->admitted[k]), 0);
    hd_limits_stats_t st;
    hd_limits_stats(L, &st);
    ck_assert_uint_eq(st.reclaimed, 0);
    ck_assert_uint_eq(st.suspects, 0);
    munmap(sh, sizeof(*sh));
}
END_TEST

/* Workers that hold counts (node, IP, user, tenant) and sleep. */
static void hold(struct shared *sh, hd_lease_t *ls, unsigned w)
    __attribute__((noreturn));
static void
hold(struct shared *sh, hd_lease_t *ls, unsigned w)
{
    char key[32];
    for (int fd = 0; fd < 50; fd++) {
        if (hd_limits_acquire_node(L, ls, fd, 0) != 0)
            _exit(2);
        snprintf(key, sizeof(key), "10.0.%u.%d", w % 3, fd % 7);
        if (acq(ls, fd, HD_LIM_IP, key, 0) != 0)
            _exit(3);
        snprintf(key, sizeof(key), "user%d", (fd * 7 + (int) w) % 40);
        if (acq(ls, fd, HD_LIM_USER, key, 0) != 0)
            _exit(4);
        snprintf(key, sizeof(key), "tenant%d", fd % 5);
        if (acq(ls, fd, HD_LIM_TENANT, key, 0) != 0)
            _exit(5);
    }
    atomic_fetch_add(&sh->ready, 1);
    for (;;)
        pause();
}

START_TEST(kill_hold)
{
    struct shared *sh = shared_map();
    for (unsigned round = 0; round < 30; round++) {
        hd_lease_t *ls[4];
        pid_t       pid[4];
        atomic_store(&sh->ready, 0);
        for (unsigned i = 0; i < 4; i++) {
            ls[i] = hd_lease_create(1024);
            pid[i] = fork();
            ck_assert_int_ge(pid[i], 0);
            if (pid[i] == 0)
                hold(sh, ls[i], round * 4 + i);
            hd_lease_dontfork(ls[i]);
        }
        wait_ready(sh, 4);
        ck_assert_uint_eq(all_counts(L, NULL), 4 * 50 * 4);
        ck_assert_uint_eq(hd_limits_node_count(L), 200);
        ck_assert_uint_eq(hd_limits_count(L, HD_LIM_TENANT, "tenant0", 7), 40);
        for (unsigned i = 0; i < 4; i++)
            kill(pid[i], SIGKILL);
        for (unsigned i = 0; i < 4; i++) {
            int st;
            ck_assert_int_eq(waitpid(pid[i], &st, 0), pid[i]);
            ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
            hd_lease_reclaim(L, ls[i]);
        }
        unsigned nz;
        ck_assert_uint_eq(all_counts(L, &nz), 0);
        ck_assert_uint_eq(nz, 0);
    }
    hd_limits_stats_t st;
    hd_limits_stats(L, &st);
    ck_assert_uint_eq(st.suspects, 0);
    ck_assert_uint_eq(st.reclaimed, 30 * 4 * 200);
    munmap(sh, sizeof(*sh));
}
END_TEST

/* What a dead worker's in-flight word says may have leaked. */
struct suspect {
    unsigned kind;
    uint32_t entry;
};

START_TEST(kill_churn)
{
    struct shared *sh = shared_map();
    unsigned       rounds = 150, kills = 0, flagged = 0, leaked = 0;
    sh->klimit = KLIMIT;
    pick_shared(HD_LIM_TENANT, "t", ckeys, NKEYS, false);
    for (unsigned round = 0; round < rounds; round++) {
        hd_lease_t    *ls[4];
        pid_t          pid[4];
        struct suspect sus[4];
        unsigned       nsus = 0;
        atomic_store(&sh->ready, 0);
        atomic_store(&sh->stop, 0);
        for (unsigned i = 0; i < 4; i++) {
            ls[i] = hd_lease_create(FDS_PER);
            pid[i] = fork();
            ck_assert_int_ge(pid[i], 0);
            if (pid[i] == 0)
                churn(sh, ls[i], round * 4 + i + 1, false);
            hd_lease_dontfork(ls[i]);
        }
        wait_ready(sh, 4);
        sleep_us((long) (rnd() % 3000));
        for (unsigned i = 0; i < 4; i++)
            kill(pid[i], SIGKILL);
        for (unsigned i = 0; i < 4; i++) {
            int st;
            ck_assert_int_eq(waitpid(pid[i], &st, 0), pid[i]);
            ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
            kills++;
            /* what reclaim will flag, read before it unmaps the lease */
            uint64_t inf = atomic_load(&ls[i]->inflight);
            if (inf & IF_VALID) {
                int      fd = IF_FD(inf);
                uint64_t r = rec_get(ls[i], fd);
                unsigned kind = IF_KIND(inf);
                bool     rec = kind == KIND_NODE
                        ? (r & REC_NODE) != 0
                        : rec_field(r, kind) == IF_ENTRY(inf);
                if (!rec) {
                    sus[nsus].kind = kind;
                    sus[nsus].entry = IF_ENTRY(inf) - 1;
                    nsus++;
                }
            }
            hd_lease_reclaim(L, ls[i]);
        }
        hd_limits_stats_t stt;
        hd_limits_stats(L, &stt);
        flagged += nsus;
        ck_assert_uint_eq(stt.suspects, flagged);

        /* every count left must be one a suspect names, at most one each */
        unsigned used[4] = { 0 };
        for (unsigned k = 0; k < HD_LIM__KINDS; k++) {
            _Atomic uint64_t *t = table(L, (enum hd_limit_kind) k);
            for (uint32_t e = 0; e < kind_entries[k]; e++) {
                uint64_t x = atomic_load(&t[e]);
                uint32_t c = W_CNT(x);
                if (c == 0)
                    continue;
                unsigned named = 0;
                for (unsigned s = 0; s < nsus; s++)
                    if (sus[s].kind == k && sus[s].entry == e && !used[s]) {
                        used[s] = 1;
                        named++;
                        if (named == c)
                            break;
                    }
                ck_assert_msg(named == c,
                              "round %u: %s entry %u holds %u, "
                              "%u explained",
                              round, hd_limit_kind_name((enum hd_limit_kind) k),
                              e, c, named);
                leaked += c;
                atomic_store(&t[e], W_MK(W_TAG(x), 0)); /* clean slate */
            }
        }
        uint64_t node = hd_limits_node_count(L);
        unsigned node_named = 0;
        for (unsigned s = 0; s < nsus; s++)
            node_named += sus[s].kind == KIND_NODE;
        ck_assert_msg(node <= node_named,
                      "round %u: node count %llu, %u "
                      "explained",
                      round, (unsigned long long) node, node_named);
        leaked += (unsigned) node;
        atomic_store(&L->node, 0);
        ck_assert_uint_eq(all_counts(L, NULL), 0);
    }
    fprintf(stderr,
            "kill_churn: %u kills mid-loop, %u died inside the "
            "window (flagged), %u counts actually leaked; %llu ops\n",
            kills, flagged, leaked, (unsigned long long) atomic_load(&sh->ops));
    ck_assert_uint_le(leaked, flagged);
    munmap(sh, sizeof(*sh));
}
END_TEST

START_TEST(dontfork)
{
    long        pg = sysconf(_SC_PAGESIZE);
    hd_lease_t *ls = hd_lease_create(1024);
    int         go[2];
    ck_assert_int_eq(pipe(go), 0);

    /* the worker the lease is made for: forked before dontfork */
    pid_t a = fork();
    ck_assert_int_ge(a, 0);
    if (a == 0) {
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(9);
        /* writes after the parent's madvise still land in the parent */
        atomic_store(&ls->rec[100], 0x1234);
        _exit(0);
    }
    ck_assert_int_eq(hd_lease_dontfork(ls), 0);

    /* a later worker: no mapping at that address at all */
    pid_t b = fork();
    ck_assert_int_ge(b, 0);
    if (b == 0) {
        unsigned char vec[1];
        int           rc = mincore((void *) ls, (size_t) pg, vec);
        _exit(rc < 0 && errno == ENOMEM ? 0 : 1);
    }
    int st;
    ck_assert_int_eq(waitpid(b, &st, 0), b);
    ck_assert_msg(
        WIFEXITED(st) && WEXITSTATUS(st) == 0,
        "a worker forked after hd_lease_dontfork() still maps the lease");
    ck_assert_int_eq(write(go[1], "x", 1), 1);
    ck_assert_int_eq(waitpid(a, &st, 0), a);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert_uint_eq(atomic_load(&ls->rec[100]), 0x1234);
    /* and the master itself keeps it */
    unsigned char vec[1];
    ck_assert_int_eq(mincore((void *) ls, (size_t) pg, vec), 0);
    atomic_store(&ls->rec[100], 0);
    hd_lease_reclaim(L, ls);
    close(go[0]);
    close(go[1]);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("limits");
    TCase *tc = tcase_create("single");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, seed_is_random);
    tcase_add_test(tc, limit_per_kind);
    tcase_add_test(tc, node_limit);
    tcase_add_test(tc, unlimited_and_clamp);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, own_tombstone_reused);
    tcase_add_test(tc, full_then_foreign_tombstone);
    tcase_add_test(tc, one_bucket_model);
    tcase_add_test(tc, unsettled_fails_closed);
    tcase_add_test(tc, top_tenants);
    tcase_add_test(tc, addr_keys);
    tcase_add_test(tc, reclaim_gives_back);
    tcase_add_test(tc, reclaim_inflight);
    suite_add_tcase(s, tc);

    TCase *mp = tcase_create("processes");
    tcase_add_checked_fixture(mp, setup, teardown);
    tcase_set_timeout(mp, 100);
    tcase_add_loop_test(mp, concurrent_exact, 0, 3);
    tcase_add_test(mp, kill_hold);
    tcase_add_test(mp, kill_churn);
    tcase_add_test(mp, dontfork);
    suite_add_tcase(s, mp);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
