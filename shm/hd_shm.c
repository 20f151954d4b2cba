/*
 * The shared-memory segment: creation, process slots, fold-on-reap and
 * consistent snapshots for the renderer.
 *
 * Who writes what:
 *   - a worker writes its own slot's cells (hd_metrics.h) and state;
 *   - the master writes the header, the retired totals and the identity
 *     line of a slot when it acquires or retires it.
 * Nothing here takes a lock, and nothing the master does makes a worker
 * wait: workers never read anything the master writes on a hot path.
 *
 * Fold-on-reap and the reader. When the master retires a slot it adds the
 * slot's counters and histograms into retired[worker_id] and then zeroes
 * the slot. A reader that summed retired + slots while that happened could
 * see the value twice (read the slot before the clear, retired after the
 * add) or not at all (retired before the add, slot after the clear); the
 * first looks like a dip on the next scrape, the second is a dip now. So
 * acquire and retire run inside a seqlock (hdr.fold_seq odd while they
 * write) and hd_shm_snapshot_take() retries a read that overlapped one.
 * Only the master writes fold_seq and only the master reads snapshots, so
 * in the real server the retry never happens (one thread does both); the
 * protocol is there so a snapshot is correct from any thread or process,
 * and tests/unit/shm proves it with a reader racing a folding master.
 * Workers are not part of the seqlock: their cells only grow while their
 * slot is live, and a reaped process writes nothing.
 *
 * Because the retry is never needed in the real server, an odd fold_seq
 * seen by the master's reader means the seqlock is broken (a stray write):
 * spinning on it would hang the master's loop (supervision, signals, the
 * admin server). So the reader gives up after HD_SHM_SNAP_TRIES attempts
 * and serves the last consistent snapshot it took, and workers cannot make
 * the stray write in the first place: the master's part of the segment is
 * read-only in them (hd_shm_protect_master_part()).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hd_alloc.h"
#include "hd_log.h"
#include "hd_shm.h"
#include "hd_shm_layout.h"
#include "hd_time.h"

#define RLX memory_order_relaxed

static inline uint64_t
ld(const _Atomic uint64_t *p)
{
    return atomic_load_explicit(p, RLX);
}

static inline int64_t
lds(const _Atomic int64_t *p)
{
    return atomic_load_explicit(p, RLX);
}

static inline void
st(_Atomic uint64_t *p, uint64_t v)
{
    atomic_store_explicit(p, v, RLX);
}

int
hd_shm_create(hd_shm_t **out)
{
    hd_metrics_tables_init();
    *out = NULL;
    void *p = mmap(NULL, sizeof(struct hd_shm), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        int err = errno;
        hd_log_error("mmap() of %zu bytes failed: %s", sizeof(struct hd_shm),
                     strerror(err));
        return -err;
    }
    /* An anonymous mapping is zero-filled: every slot starts FREE with
     * zero cells. Pages are only touched (allocated) when a slot is used. */
    hd_shm_t *shm = p;
    shm->hdr.magic = HD_SHM_MAGIC;
    shm->hdr.version = HD_SHM_VERSION;
    shm->hdr.slot_count = HD_SHM_SLOTS;
    shm->hdr.slot_size = (uint32_t) sizeof(struct hd_shm_slot);
    shm->hdr.header_size = (uint32_t) sizeof(hd_shm_hdr_t);
    shm->hdr.worker_ids = HD_SHM_WORKER_IDS;
    shm->hdr.hist_buckets = HD_HIST_BUCKETS;
    shm->hdr.total_size = (uint32_t) sizeof(struct hd_shm);
    st(&shm->hdr.start_ns, hd_wall_ns());
    *out = shm;
    return 0;
}

static void last_forget(const hd_shm_t *shm);

void
hd_shm_destroy(hd_shm_t *shm)
{
    if (shm != NULL) {
        last_forget(shm);
        munmap(shm, sizeof(struct hd_shm));
    }
}

int
hd_shm_protect_master_part(hd_shm_t *shm)
{
    long   pg = sysconf(_SC_PAGESIZE);
    size_t len = offsetof(struct hd_shm, slot);

    if (pg <= 0 || len % (size_t) pg != 0) {
        /* larger pages than the layout's: the slots share a page with
         * the master's part; leave it writable rather than fault */
        hd_log_warn("shm: page size %ld does not divide %zu: the master's "
                    "part of the segment stays writable in workers",
                    pg, len);
        return -EINVAL;
    }
    if (mprotect(shm, len, PROT_READ) < 0) {
        int err = errno;
        hd_log_error("mprotect() of the shm header failed: %s", strerror(err));
        return -err;
    }
    return 0;
}

hd_shm_slot_t *
hd_shm_slot(hd_shm_t *shm, int idx)
{
    if (shm == NULL || idx < 0 || (unsigned) idx >= HD_SHM_SLOTS)
        return NULL;
    return &shm->slot[idx];
}

/* seqlock, writer side (master only) */
static void
fold_begin(hd_shm_t *shm)
{
    uint64_t s = atomic_load_explicit(&shm->hdr.fold_seq, RLX);
    atomic_store_explicit(&shm->hdr.fold_seq, s + 1, RLX);
    atomic_thread_fence(memory_order_release);
}

static void
fold_end(hd_shm_t *shm)
{
    uint64_t s = atomic_load_explicit(&shm->hdr.fold_seq, RLX);
    atomic_store_explicit(&shm->hdr.fold_seq, s + 1, memory_order_release);
}

/* Zero every cell of m with atomic stores (readers may be looking). */
static void
cells_zero(hd_metrics_cells_t *m)
{
    for (unsigned i = 0; i < HD_C__COUNT; i++)
        st(&m->ctr[i], 0);
    for (unsigned i = 0; i < HD_REJ__COUNT; i++)
        st(&m->rej[i], 0);
    for (unsigned i = 0; i < HD_RERR__COUNT; i++)
        st(&m->rerr[i], 0);
    for (unsigned i = 0; i < HD_PXR__COUNT; i++)
        st(&m->pxr[i], 0);
    for (unsigned i = 0; i < HD_DISC__COUNT; i++)
        st(&m->disc[i], 0);
    for (unsigned i = 0; i < HD_API_CELLS; i++)
        st(&m->api[i], 0);
    for (unsigned i = 0; i < HD_G__COUNT; i++)
        atomic_store_explicit(&m->gauge[i], 0, RLX);
    atomic_store_explicit(&m->conn_peak, 0, RLX);
    for (unsigned h = 0; h < HD_H__COUNT; h++) {
        hd_hist_cells_t *hc = &m->hist[h];
        for (unsigned i = 0; i < HD_HIST_BUCKETS; i++)
            st(&hc->bucket[i], 0);
        st(&hc->sum_ns, 0);
        st(&hc->max_ns, 0);
    }
}

/* dst += src for everything that only grows; max for the maxima. */
static void
cells_fold(hd_metrics_cells_t *dst, const hd_metrics_cells_t *src)
{
    for (unsigned i = 0; i < HD_C__COUNT; i++)
        st(&dst->ctr[i], ld(&dst->ctr[i]) + ld(&src->ctr[i]));
    for (unsigned i = 0; i < HD_REJ__COUNT; i++)
        st(&dst->rej[i], ld(&dst->rej[i]) + ld(&src->rej[i]));
    for (unsigned i = 0; i < HD_RERR__COUNT; i++)
        st(&dst->rerr[i], ld(&dst->rerr[i]) + ld(&src->rerr[i]));
    for (unsigned i = 0; i < HD_PXR__COUNT; i++)
        st(&dst->pxr[i], ld(&dst->pxr[i]) + ld(&src->pxr[i]));
    for (unsigned i = 0; i < HD_DISC__COUNT; i++)
        st(&dst->disc[i], ld(&dst->disc[i]) + ld(&src->disc[i]));
    for (unsigned i = 0; i < HD_API_CELLS; i++)
        st(&dst->api[i], ld(&dst->api[i]) + ld(&src->api[i]));
    if (lds(&src->conn_peak) > lds(&dst->conn_peak))
        atomic_store_explicit(&dst->conn_peak, lds(&src->conn_peak), RLX);
    for (unsigned h = 0; h < HD_H__COUNT; h++) {
        hd_hist_cells_t       *d = &dst->hist[h];
        const hd_hist_cells_t *s = &src->hist[h];
        for (unsigned i = 0; i < HD_HIST_BUCKETS; i++)
            st(&d->bucket[i], ld(&d->bucket[i]) + ld(&s->bucket[i]));
        st(&d->sum_ns, ld(&d->sum_ns) + ld(&s->sum_ns));
        if (ld(&s->max_ns) > ld(&d->max_ns))
            st(&d->max_ns, ld(&s->max_ns));
    }
}

int
hd_shm_slot_acquire(hd_shm_t *shm, unsigned worker_id, uint32_t generation)
{
    if (worker_id >= HD_SHM_WORKER_IDS)
        return -EINVAL;
    for (unsigned i = 0; i < HD_SHM_SLOTS; i++) {
        struct hd_shm_slot *s = &shm->slot[i];
        if (atomic_load_explicit(&s->state, memory_order_acquire)
            != HD_SLOT_FREE)
            continue;
        /* A FREE slot's cells are already zero (create or retire made them
         * so); zero again inside the seqlock so a stray write can never
         * leak into the next process's series. */
        fold_begin(shm);
        cells_zero(&s->m);
        atomic_store_explicit(&s->info_len, 0, RLX);
        atomic_store_explicit(&s->pid, 0, RLX);
        atomic_store_explicit(&s->worker_id, worker_id, RLX);
        atomic_store_explicit(&s->generation, generation, RLX);
        st(&s->start_ns, hd_wall_ns());
        atomic_store_explicit(&shm->retired[worker_id].seen, 1, RLX);
        atomic_store_explicit(&s->state, HD_SLOT_STARTING,
                              memory_order_release);
        fold_end(shm);
        return (int) i;
    }
    return -ENOSPC;
}

void
hd_shm_slot_info_set(hd_shm_slot_t *s, const char *json, size_t len)
{
    uint64_t q = atomic_load_explicit(&s->info_seq, RLX);

    if (len > HD_SHM_INFO_MAX)
        len = 0;
    atomic_store_explicit(&s->info_seq, q + 1, RLX);
    atomic_thread_fence(memory_order_release);
    for (size_t i = 0; i < len; i++)
        atomic_store_explicit(&s->info[i], json[i], RLX);
    atomic_store_explicit(&s->info_len, (uint32_t) len, RLX);
    atomic_store_explicit(&s->info_seq, q + 2, memory_order_release);
}

size_t
hd_shm_slot_info_get(const hd_shm_t *shm, int idx, char *buf, size_t cap)
{
    const struct hd_shm_slot *s;

    if (idx < 0 || (unsigned) idx >= HD_SHM_SLOTS || cap <= HD_SHM_INFO_MAX)
        return 0;
    s = &shm->slot[idx];
    for (int tries = 0; tries < 8; tries++) {
        uint64_t q = atomic_load_explicit(&s->info_seq, memory_order_acquire);
        uint32_t len;
        if (q & 1)
            continue;
        len = atomic_load_explicit(&s->info_len, RLX);
        if (len > HD_SHM_INFO_MAX)
            return 0;
        for (uint32_t i = 0; i < len; i++)
            buf[i] = atomic_load_explicit(&s->info[i], RLX);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->info_seq, RLX) == q) {
            buf[len] = '\0';
            return len;
        }
    }
    return 0;
}

void
hd_shm_slot_set_pid(hd_shm_t *shm, int idx, pid_t pid)
{
    hd_shm_slot_t *s = hd_shm_slot(shm, idx);
    if (s != NULL)
        atomic_store_explicit(&s->pid, (int32_t) pid, RLX);
}

/*
 * Precondition: the slot's process has been reaped (it writes nothing any
 * more). Retiring a FREE slot is a no-op, so a double call is harmless.
 */
void
hd_shm_slot_retire(hd_shm_t *shm, int idx, double cpu_seconds)
{
    hd_shm_slot_t *s = hd_shm_slot(shm, idx);
    if (s == NULL
        || atomic_load_explicit(&s->state, memory_order_acquire)
            == HD_SLOT_FREE)
        return;
    unsigned w = atomic_load_explicit(&s->worker_id, RLX);
    if (w >= HD_SHM_WORKER_IDS) /* cannot happen: acquire checks */
        w = HD_SHM_WORKER_IDS - 1;
    hd_shm_retired_t *r = &shm->retired[w];
    uint64_t          cpu_ns = 0;
    if (isfinite(cpu_seconds) && cpu_seconds > 0)
        cpu_ns = (uint64_t) llround(cpu_seconds * 1e9);

    fold_begin(shm);
    cells_fold(&r->m, &s->m);
    st(&r->cpu_ns, ld(&r->cpu_ns) + cpu_ns);
    st(&shm->hdr.retired_cpu_ns, ld(&shm->hdr.retired_cpu_ns) + cpu_ns);
    atomic_store_explicit(&r->seen, 1, RLX);
    cells_zero(&s->m);
    atomic_store_explicit(&s->pid, 0, RLX);
    atomic_store_explicit(&s->state, HD_SLOT_FREE, memory_order_release);
    fold_end(shm);
}

void
hd_shm_slot_set_state(hd_shm_slot_t *s, enum hd_slot_state stt)
{
    atomic_store_explicit(&s->state, (uint32_t) stt, memory_order_release);
}

enum hd_slot_state
hd_shm_slot_state(const hd_shm_slot_t *s)
{
    return (enum hd_slot_state) atomic_load_explicit(&s->state,
                                                     memory_order_acquire);
}

pid_t
hd_shm_slot_pid(const hd_shm_slot_t *s)
{
    return (pid_t) atomic_load_explicit(&s->pid, RLX);
}

unsigned
hd_shm_slot_worker_id(const hd_shm_slot_t *s)
{
    return atomic_load_explicit(&s->worker_id, RLX);
}

uint32_t
hd_shm_slot_generation(const hd_shm_slot_t *s)
{
    return atomic_load_explicit(&s->generation, RLX);
}

void
hd_shm_note_start(hd_shm_t *shm, unsigned workers_expected)
{
    atomic_store_explicit(&shm->hdr.workers_expected, workers_expected, RLX);
}

void
hd_shm_note_restart(hd_shm_t *shm)
{
    st(&shm->hdr.restarts, ld(&shm->hdr.restarts) + 1);
}

void
hd_shm_note_upgrade(hd_shm_t *shm, bool ok)
{
    if (ok)
        st(&shm->hdr.upgrades_ok, ld(&shm->hdr.upgrades_ok) + 1);
    else
        st(&shm->hdr.upgrades_failed, ld(&shm->hdr.upgrades_failed) + 1);
}

void
hd_shm_note_reload(hd_shm_t *shm, bool ok, uint32_t generation)
{
    if (ok) {
        st(&shm->hdr.reloads_ok, ld(&shm->hdr.reloads_ok) + 1);
        st(&shm->hdr.last_reload_ok_ns, hd_wall_ns());
        atomic_store_explicit(&shm->hdr.generation, generation, RLX);
    } else {
        st(&shm->hdr.reloads_failed, ld(&shm->hdr.reloads_failed) + 1);
    }
}

void
hd_shm_set_workers_expected(hd_shm_t *shm, unsigned n)
{
    atomic_store_explicit(&shm->hdr.workers_expected, n, RLX);
}

uint32_t
hd_shm_generation(const hd_shm_t *shm)
{
    return atomic_load_explicit(&shm->hdr.generation, RLX);
}

unsigned
hd_shm_workers_expected(const hd_shm_t *shm)
{
    return atomic_load_explicit(&shm->hdr.workers_expected, RLX);
}

double
hd_shm_start_time(const hd_shm_t *shm)
{
    return (double) ld(&shm->hdr.start_ns) / 1e9;
}

void
hd_shm_set_start_time(hd_shm_t *shm, double wall_sec)
{
    /* split so the whole seconds are not rounded through 1e18-sized
     * doubles (1700000000.25 stays exact) */
    uint64_t ns = 0;
    if (wall_sec > 0) {
        double whole = floor(wall_sec);
        ns = (uint64_t) whole * 1000000000u
            + (uint64_t) llround((wall_sec - whole) * 1e9);
    }
    st(&shm->hdr.start_ns, ns);
}

int64_t
hd_shm_sample(hd_shm_t *shm)
{
    int64_t sum = 0;
    for (unsigned i = 0; i < HD_SHM_SLOTS; i++) {
        const struct hd_shm_slot *s = &shm->slot[i];
        if (hd_slot_state_live(hd_shm_slot_state(s)))
            sum += lds(&s->m.gauge[HD_G_CONNECTIONS]);
    }
    if (sum > lds(&shm->hdr.node_conn_peak))
        atomic_store_explicit(&shm->hdr.node_conn_peak, sum, RLX);
    return sum;
}

/* ---- snapshots ---- */

static void
snap_add_cells(hd_shm_worker_snap_t *w, const hd_metrics_cells_t *m)
{
    for (unsigned i = 0; i < HD_C__COUNT; i++)
        w->ctr[i] += ld(&m->ctr[i]);
    for (unsigned i = 0; i < HD_REJ__COUNT; i++)
        w->rej[i] += ld(&m->rej[i]);
    for (unsigned i = 0; i < HD_RERR__COUNT; i++)
        w->rerr[i] += ld(&m->rerr[i]);
    for (unsigned i = 0; i < HD_PXR__COUNT; i++)
        w->pxr[i] += ld(&m->pxr[i]);
    for (unsigned i = 0; i < HD_DISC__COUNT; i++)
        w->disc[i] += ld(&m->disc[i]);
    for (unsigned i = 0; i < HD_API_CELLS; i++)
        w->api[i] += ld(&m->api[i]);
    if (lds(&m->conn_peak) > w->conn_peak)
        w->conn_peak = lds(&m->conn_peak);
    for (unsigned h = 0; h < HD_H__COUNT; h++) {
        hd_shm_hist_snap_t    *d = &w->hist[h];
        const hd_hist_cells_t *s = &m->hist[h];
        for (unsigned i = 0; i < HD_HIST_BUCKETS; i++)
            d->bucket[i] += ld(&s->bucket[i]);
        d->sum_ns += ld(&s->sum_ns);
        if (ld(&s->max_ns) > d->max_ns)
            d->max_ns = ld(&s->max_ns);
    }
}

/* One attempt; the caller checks fold_seq around it. */
static void
snap_read(const hd_shm_t *shm, hd_shm_snapshot_t *out)
{
    const hd_shm_hdr_t   *h = &shm->hdr;
    hd_shm_worker_snap_t *keep = out->w;
    size_t                keepcap = out->wcap;
    /* the slot array is filled below; only the scalars need clearing */
    memset(out, 0, offsetof(hd_shm_snapshot_t, slot));
    out->start_ns = ld(&h->start_ns);
    out->last_reload_ok_ns = ld(&h->last_reload_ok_ns);
    out->restarts = ld(&h->restarts);
    out->reloads_ok = ld(&h->reloads_ok);
    out->reloads_failed = ld(&h->reloads_failed);
    out->upgrades_ok = ld(&h->upgrades_ok);
    out->upgrades_failed = ld(&h->upgrades_failed);
    out->retired_cpu_ns = ld(&h->retired_cpu_ns);
    out->node_conn_peak = lds(&h->node_conn_peak);
    out->workers_expected = atomic_load_explicit(&h->workers_expected, RLX);
    out->generation = atomic_load_explicit(&h->generation, RLX);

    /* which worker ids to report, and where each goes in w[] */
    int16_t pos[HD_SHM_WORKER_IDS];
    size_t  n = 0;
    for (unsigned id = 0; id < HD_SHM_WORKER_IDS; id++) {
        bool want = id < out->workers_expected
            || atomic_load_explicit(&shm->retired[id].seen, RLX);
        pos[id] = want ? (int16_t) n++ : -1;
    }
    /* a live slot always has seen set (acquire sets it first) */
    if (n > keepcap) {
        hd_free(keep);
        keepcap = n;
        keep = hd_malloc((n ? n : 1) * sizeof(*keep));
    }
    out->w = keep;
    out->wcap = keepcap;
    if (n > 0)
        memset(out->w, 0, n * sizeof(*out->w));
    out->nworkers = n;
    for (unsigned id = 0; id < HD_SHM_WORKER_IDS; id++) {
        if (pos[id] < 0)
            continue;
        hd_shm_worker_snap_t   *w = &out->w[pos[id]];
        const hd_shm_retired_t *r = &shm->retired[id];
        w->worker_id = id;
        w->gauges = id < out->workers_expected;
        w->cpu_retired_ns = ld(&r->cpu_ns);
        w->gauge[HD_G_REDIS_UP] = INT64_MAX; /* min below; fixed after */
        snap_add_cells(w, &r->m);
    }

    /* redis_up: min over RUNNING slots; over DRAINING, then STARTING ones
     * only when no slot of that id runs. A draining worker closes its
     * Redis connections while its replacement serves: counting it made
     * every replacing reload a /health 503. */
    int64_t up_start[HD_SHM_WORKER_IDS], up_drain[HD_SHM_WORKER_IDS];
    for (unsigned id = 0; id < HD_SHM_WORKER_IDS; id++)
        up_start[id] = up_drain[id] = INT64_MAX;

    for (unsigned i = 0; i < HD_SHM_SLOTS; i++) {
        const struct hd_shm_slot *s = &shm->slot[i];
        enum hd_slot_state        stt = hd_shm_slot_state(s);
        if (stt == HD_SLOT_FREE || stt > HD_SLOT_DEAD)
            continue;
        out->slots_by_state[stt]++;
        unsigned id = atomic_load_explicit(&s->worker_id, RLX);
        if (id >= HD_SHM_WORKER_IDS || pos[id] < 0)
            continue;
        hd_shm_worker_snap_t *w = &out->w[pos[id]];
        /* DEAD (reaped or not, not yet folded) still owns its counters */
        snap_add_cells(w, &s->m);
        if (!hd_slot_state_live(stt))
            continue;
        hd_shm_slot_snap_t *ss = &out->slot[out->nslots++];
        ss->idx = (int) i;
        ss->pid = (pid_t) atomic_load_explicit(&s->pid, RLX);
        ss->worker_id = id;
        ss->generation = atomic_load_explicit(&s->generation, RLX);
        ss->state = stt;
        w->live++;
        w->gauges = true;
        if (stt == HD_SLOT_RUNNING)
            w->running++;
        for (unsigned g = 0; g < HD_G__COUNT; g++) {
            int64_t v = lds(&s->m.gauge[g]);
            if (g == HD_G_REDIS_REFUSING && stt != HD_SLOT_RUNNING)
                continue; /* as redis_up: what serves counts */
            if (g == HD_G_REDIS_SHARDS_DOWN) {
                /* a bit mask: any running process without the shard
                 * (/health reads it for running workers only) */
                if (stt == HD_SLOT_RUNNING)
                    w->gauge[g] |= v;
            } else if (g == HD_G_QUEUE_MAX_BYTES) {
                /* the largest single queue: a max over processes */
                if (v > w->gauge[g])
                    w->gauge[g] = v;
            } else if (g != HD_G_REDIS_UP)
                w->gauge[g] += v;
            else if (stt == HD_SLOT_STARTING)
                up_start[id] = v < up_start[id] ? v : up_start[id];
            else if (stt == HD_SLOT_DRAINING)
                up_drain[id] = v < up_drain[id] ? v : up_drain[id];
            else if (v < w->gauge[g])
                w->gauge[g] = v;
        }
    }
    for (size_t k = 0; k < n; k++) {
        hd_shm_worker_snap_t *w = &out->w[k];
        if (w->gauge[HD_G_REDIS_UP] == INT64_MAX)
            w->gauge[HD_G_REDIS_UP] = up_drain[w->worker_id];
        if (w->gauge[HD_G_REDIS_UP] == INT64_MAX)
            w->gauge[HD_G_REDIS_UP] = up_start[w->worker_id];
        if (w->gauge[HD_G_REDIS_UP] == INT64_MAX)
            w->gauge[HD_G_REDIS_UP] = 0;
    }
    int64_t sum = 0;
    for (size_t k = 0; k < n; k++)
        sum += out->w[k].gauge[HD_G_CONNECTIONS];
    if (sum > out->node_conn_peak)
        out->node_conn_peak = sum;
}

/* The last consistent snapshot, per segment (the master has one; tests
 * make several in turn). */
static struct {
    const hd_shm_t   *shm;
    bool              have;
    hd_shm_snapshot_t snap;
    uint64_t          warned_ms;
} last;

/* a new segment may come back at the same address */
static void
last_forget(const hd_shm_t *shm)
{
    if (last.shm == shm) {
        hd_free(last.snap.w);
        memset(&last, 0, sizeof(last));
    }
}

static void
snap_copy(hd_shm_snapshot_t *dst, const hd_shm_snapshot_t *src)
{
    hd_shm_worker_snap_t *keep = dst->w;
    size_t                keepcap = dst->wcap;

    if (src->nworkers > keepcap) {
        hd_free(keep);
        keepcap = src->nworkers;
        keep = hd_malloc(keepcap * sizeof(*keep));
    }
    memcpy(dst, src, sizeof(*dst));
    dst->w = keep;
    dst->wcap = keepcap;
    if (src->nworkers > 0)
        memcpy(dst->w, src->w, src->nworkers * sizeof(*dst->w));
}

int
hd_shm_snapshot_take(const hd_shm_t *shm, hd_shm_snapshot_t *out)
{
    bool read = false;

    out->w = NULL;
    out->wcap = 0;
    out->nworkers = 0;
    if (last.shm != shm) {
        last_forget(last.shm);
        last.shm = shm;
    }
    for (unsigned i = 0; i < HD_SHM_SNAP_TRIES; i++) {
        uint64_t s1 = atomic_load_explicit(&shm->hdr.fold_seq,
                                           memory_order_acquire);
        if (s1 & 1)
            continue; /* a fold is running: it is short, retry */
        snap_read(shm, out);
        read = true;
        atomic_thread_fence(memory_order_acquire);
        uint64_t s2 = atomic_load_explicit(&shm->hdr.fold_seq, RLX);
        if (s1 == s2) {
            snap_copy(&last.snap, out);
            last.have = true;
            return 0;
        }
    }
    uint64_t now = hd_mono_ms();
    if (last.warned_ms == 0 || now - last.warned_ms >= 10000) {
        last.warned_ms = now;
        hd_log_error(
            "shm: no consistent snapshot in %d tries (fold "
            "sequence %llu): serving %s",
            HD_SHM_SNAP_TRIES,
            (unsigned long long) atomic_load_explicit(&shm->hdr.fold_seq, RLX),
            last.have ? "the last consistent one"
                      : "a possibly inconsistent read");
    }
    if (last.have) {
        snap_copy(out, &last.snap);
        return -EAGAIN;
    }
    if (!read)
        snap_read(shm, out);
    return -EIO;
}

void
hd_shm_snapshot_free(hd_shm_snapshot_t *snap)
{
    if (snap != NULL) {
        hd_free(snap->w);
        snap->wcap = 0;
        snap->nworkers = 0;
    }
}
