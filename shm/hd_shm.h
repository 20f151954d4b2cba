/*
 * The shared-memory segment: one MAP_SHARED anonymous mapping created by the
 * master before the first fork and inherited by every worker.
 *
 * Layout: a versioned header (written by the master only), then
 * HD_SHM_SLOTS process slots. A process slot belongs to one worker process
 * for its whole life; the logical worker number ("worker N", the metrics
 * label) is stored in it. Process slots are not logical slots: while a
 * worker is replaced, the old and the new process of worker N each own a
 * process slot, so every slot keeps exactly one writer.
 *
 * Writers: a worker writes only its own slot's metrics and state, with
 * relaxed atomics. The master writes the header, allocates and retires
 * slots, and folds a reaped slot's counters into the retired totals before
 * the slot can be reused, so counters never go down. Readers (the master's
 * renderer) never block a writer.
 */
#ifndef HD_SHM_H
#define HD_SHM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "hd_metrics.h"

#define HD_SHM_MAGIC      0x48524c44u /* "HRLD" */
#define HD_SHM_VERSION    3u          /* 3: two outbound queue gauges */
#define HD_SHM_SLOTS      512u        /* 2 x HD_WORKERS_MAX */
#define HD_SHM_WORKER_IDS 256u        /* logical worker ids 0..255 */

enum hd_slot_state {
    HD_SLOT_FREE = 0,     /* unused */
    HD_SLOT_STARTING = 1, /* forked, not yet serving */
    HD_SLOT_RUNNING = 2,  /* accepting and serving */
    HD_SLOT_DRAINING = 3, /* not accepting, closing its clients */
    HD_SLOT_DEAD = 4,     /* exited, not yet folded by the master */
};

typedef struct hd_shm      hd_shm_t;
typedef struct hd_shm_slot hd_shm_slot_t;

/* Master, before the first fork. Returns 0 or -errno. */
int  hd_shm_create(hd_shm_t **out);
void hd_shm_destroy(hd_shm_t *shm);

/*
 * Master: take a free process slot for worker number worker_id and stamp
 * it (generation, state STARTING, start time, zeroed metrics). Returns the
 * slot index or -ENOSPC.
 */
int hd_shm_slot_acquire(hd_shm_t *shm, unsigned worker_id, uint32_t generation);
/* Master, right after fork (the child stamps it too). */
void hd_shm_slot_set_pid(hd_shm_t *shm, int idx, pid_t pid);
/*
 * Master, after waitpid() reaped the slot's process: fold its counters and
 * histograms into the retired totals, drop its gauges and free the slot.
 * (The process's share of the connection-limit tables is given back by
 * hd_lease_reclaim(), shm/hd_limits.h.) cpu_seconds is
 * the process's user+system CPU time from wait4()'s rusage, folded into
 * herald_process_cpu_seconds_total so that counter never goes down.
 */
void hd_shm_slot_retire(hd_shm_t *shm, int idx, double cpu_seconds);

hd_shm_slot_t *hd_shm_slot(hd_shm_t *shm, int idx);

/*
 * Worker, right after fork: map the master's part of the segment (header
 * and retired totals, everything before the slots) read-only in this
 * process. A stray write there then faults in the worker (which the master
 * respawns) instead of hanging or corrupting the master's reads. The
 * worker's own slot stays writable. Returns 0 or -errno (logged).
 */
int hd_shm_protect_master_part(hd_shm_t *shm);

/* Either side. */
void hd_shm_slot_set_state(hd_shm_slot_t *s, enum hd_slot_state st);
enum hd_slot_state hd_shm_slot_state(const hd_shm_slot_t *s);
pid_t              hd_shm_slot_pid(const hd_shm_slot_t *s);
unsigned           hd_shm_slot_worker_id(const hd_shm_slot_t *s);

/*
 * Master-only header fields (single writer: the master). Rendered as
 * herald_worker_restarts_total, herald_config_reloads_total{result},
 * herald_config_last_reload_success_timestamp_seconds, herald_workers
 * and the generation / expected workers in /health.
 */
void hd_shm_note_start(hd_shm_t *shm, unsigned workers_expected);
void hd_shm_note_restart(hd_shm_t *shm); /* unplanned */
void hd_shm_note_reload(hd_shm_t *shm, bool ok, uint32_t generation);
/* herald_upgrades_total{result}: a new master counts its own take-over
 * (the old master's segment goes with it), the old one a failed attempt */
void hd_shm_note_upgrade(hd_shm_t *shm, bool ok);
void hd_shm_set_workers_expected(hd_shm_t *shm, unsigned n);

/* ---- additions (reading side; master) ---- */

uint32_t hd_shm_generation(const hd_shm_t *shm);
unsigned hd_shm_workers_expected(const hd_shm_t *shm);
double   hd_shm_start_time(const hd_shm_t *shm); /* wall clock, s */
uint32_t hd_shm_slot_generation(const hd_shm_slot_t *s);

/*
 * A small JSON document a worker publishes for the master (its top
 * channels and its view of the cluster, for /stats and the monitor page):
 * the worker replaces it whole (single writer, seqlock); the master reads
 * a consistent copy or nothing. Longer than HD_SHM_INFO_MAX: not stored.
 */
#define HD_SHM_INFO_MAX 4032
void hd_shm_slot_info_set(hd_shm_slot_t *s, const char *json, size_t len);
/* Copy slot idx's document into buf (cap > HD_SHM_INFO_MAX, NUL added);
 * its length, 0 when empty or being written. */
size_t hd_shm_slot_info_get(const hd_shm_t *shm, int idx, char *buf,
                            size_t cap);
/* Master: set herald_start_time_seconds (hd_shm_create() sets "now"). */
void hd_shm_set_start_time(hd_shm_t *shm, double wall_sec);

/*
 * Master, on a timer (the admin server runs one every second) and at every
 * render: sample the node-wide sum of herald_connections and raise the
 * node peak. Per-slot peaks are exact (the worker keeps them on every
 * change); the node peak is only as fine as this sampling. Returns the
 * current node-wide connection count.
 */
int64_t hd_shm_sample(hd_shm_t *shm);

/* True for the states in which a process is alive and writing its slot. */
static inline bool
hd_slot_state_live(enum hd_slot_state st)
{
    return st == HD_SLOT_STARTING || st == HD_SLOT_RUNNING
        || st == HD_SLOT_DRAINING;
}

/* A consistent read of one histogram (fine buckets, see hd_metrics.h). */
typedef struct hd_shm_hist_snap {
    uint64_t bucket[HD_HIST_BUCKETS];
    uint64_t sum_ns;
    uint64_t max_ns;
} hd_shm_hist_snap_t;

/* Everything known about one logical worker id: retired + live slots. */
typedef struct hd_shm_worker_snap {
    unsigned worker_id;
    unsigned live;    /* live process slots of this id */
    unsigned running; /* ... of which RUNNING */
    bool     gauges;  /* export gauges: live or id < expected */
    uint64_t ctr[HD_C__COUNT];
    uint64_t rej[HD_REJ__COUNT];
    uint64_t rerr[HD_RERR__COUNT];
    uint64_t pxr[HD_PXR__COUNT];
    uint64_t disc[HD_DISC__COUNT];
    uint64_t api[HD_API_CELLS];
    /* Live slots only (a dead process contributes nothing). Sums, except
     * HD_G_REDIS_UP: the minimum over RUNNING/DRAINING slots (over
     * STARTING ones if none runs), so 1 means every serving process of
     * this worker has Redis. */
    int64_t            gauge[HD_G__COUNT];
    int64_t            conn_peak;      /* max over every process it ever had */
    uint64_t           cpu_retired_ns; /* CPU of its reaped processes */
    hd_shm_hist_snap_t hist[HD_H__COUNT];
} hd_shm_worker_snap_t;

typedef struct hd_shm_slot_snap {
    int                idx;
    pid_t              pid;
    unsigned           worker_id;
    uint32_t           generation;
    enum hd_slot_state state;
} hd_shm_slot_snap_t;

typedef struct hd_shm_snapshot {
    uint64_t              start_ns;
    uint64_t              last_reload_ok_ns; /* 0 = no successful reload yet */
    uint64_t              restarts;
    uint64_t              reloads_ok;
    uint64_t              reloads_failed;
    uint64_t              upgrades_ok;
    uint64_t              upgrades_failed;
    uint64_t              retired_cpu_ns; /* node total of reaped workers */
    int64_t               node_conn_peak;
    unsigned              workers_expected;
    uint32_t              generation;
    unsigned              slots_by_state[5]; /* index: enum hd_slot_state */
    size_t                nslots;            /* live slots, ascending index */
    hd_shm_slot_snap_t    slot[HD_SHM_SLOTS];
    size_t                nworkers; /* ascending worker_id */
    hd_shm_worker_snap_t *w;        /* heap, nworkers entries */
    size_t                wcap;     /* allocated entries of w */
} hd_shm_snapshot_t;

/*
 * Take a consistent snapshot (out may be uninitialised; w is allocated
 * here, ~10 KB per reported worker id): every worker id that ever had a
 * process or is below workers_expected, with its retired totals plus its
 * live slots. Consistent means a concurrent hd_shm_slot_retire() or
 * acquire is either wholly before or wholly after the read (seqlock, see
 * hd_shm.c), so a counter in a later snapshot is never below the same
 * counter in an earlier one. Never blocks a worker, and never blocks the
 * caller for long: the retries are bounded (HD_SHM_SNAP_TRIES). Returns 0
 * for a fresh snapshot; -EAGAIN when no consistent read succeeded (the
 * seqlock stays odd, e.g. after a stray write) and out holds a copy of the
 * last consistent snapshot of this segment instead; -EIO when there was
 * none yet (out then holds the last, possibly torn, read). Both are
 * logged (at most every 10 s). Free with hd_shm_snapshot_free(). Not
 * thread-safe (the last good snapshot is kept in this file): one reader.
 */
#define HD_SHM_SNAP_TRIES 1000
int  hd_shm_snapshot_take(const hd_shm_t *shm, hd_shm_snapshot_t *out);
void hd_shm_snapshot_free(hd_shm_snapshot_t *snap);

#endif
