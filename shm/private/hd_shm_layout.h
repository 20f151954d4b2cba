/*
 * The byte layout of the shared-memory segment. Types only; private to
 * shm/ (and its unit tests). Everyone else goes through hd_shm.h.
 *
 *   struct hd_shm
 *     hdr                         master-written header (one cache line+)
 *     retired[HD_SHM_WORKER_IDS]  folded totals per logical worker id
 *     slot[HD_SHM_SLOTS]          one per worker process, single writer
 *
 * The slots start on a page boundary: everything before them is the
 * master's alone, and every worker maps those pages read-only right after
 * its fork (hd_shm_protect_master_part()), so a stray write in a worker
 * faults in that worker instead of corrupting the seqlock or the totals
 * the master serves.
 *
 * Every member that another process reads concurrently is an _Atomic
 * accessed with relaxed loads and stores (the segment holds no locks).
 * The one ordering protocol is fold_seq, a seqlock the master holds (odd)
 * while it acquires or retires a slot; see hd_shm.c.
 */
#ifndef HD_SHM_LAYOUT_H
#define HD_SHM_LAYOUT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "hd_metrics.h"
#include "hd_shm.h"

/* The smallest page size herald runs on (x86-64, arm64 with 4 KiB pages;
 * larger pages are multiples, and hd_shm_protect_master_part() checks). */
#define HD_SHM_PAGE 4096

typedef struct hd_shm_hdr {
    /* identity, written once by hd_shm_create() */
    uint32_t magic;        /* HD_SHM_MAGIC */
    uint32_t version;      /* HD_SHM_VERSION */
    uint32_t slot_count;   /* HD_SHM_SLOTS */
    uint32_t slot_size;    /* sizeof(struct hd_shm_slot) */
    uint32_t header_size;  /* sizeof(struct hd_shm_hdr) */
    uint32_t worker_ids;   /* HD_SHM_WORKER_IDS */
    uint32_t hist_buckets; /* HD_HIST_BUCKETS */
    uint32_t total_size;   /* sizeof(struct hd_shm) */

    /* master-only writer from here on */
    _Atomic uint64_t fold_seq; /* seqlock: odd while a fold runs */
    _Atomic uint64_t start_ns; /* wall clock, herald_start_time_seconds */
    _Atomic uint32_t workers_expected;
    _Atomic uint32_t generation; /* config generation */
    _Atomic uint64_t restarts;   /* herald_worker_restarts_total */
    _Atomic uint64_t reloads_ok;
    _Atomic uint64_t reloads_failed;
    _Atomic uint64_t upgrades_ok;       /* this master took over */
    _Atomic uint64_t upgrades_failed;   /* a new master it started failed */
    _Atomic uint64_t last_reload_ok_ns; /* wall clock, 0 = never */
    _Atomic int64_t  node_conn_peak;    /* sampled by hd_shm_sample() */
    _Atomic uint64_t retired_cpu_ns;    /* node total of folded CPU */
} hd_shm_hdr_t;

/* Folded totals of every process that ever served worker id w. */
typedef struct hd_shm_retired {
    hd_metrics_cells_t m; /* gauges unused; conn_peak = max */
    _Alignas(64) _Atomic uint64_t cpu_ns;
    _Atomic uint32_t seen; /* a process ever held this worker id */
} hd_shm_retired_t;

struct hd_shm_slot {
    /* identity line: master and the slot's own process */
    _Alignas(64) _Atomic uint32_t state; /* enum hd_slot_state */
    _Atomic int32_t  pid;
    _Atomic uint32_t worker_id;
    _Atomic uint32_t generation;
    _Atomic uint64_t start_ns; /* wall clock at acquire */
    /* metrics: the slot's process only (single writer) */
    _Alignas(64) hd_metrics_cells_t m;
    /* the worker's published JSON for the master (hd_shm_slot_info_set):
     * seqlock (odd while written), length, bytes */
    _Alignas(64) _Atomic uint64_t info_seq;
    _Atomic uint32_t info_len;
    _Atomic char     info[HD_SHM_INFO_MAX];
};

struct hd_shm {
    _Alignas(64) hd_shm_hdr_t hdr;
    _Alignas(64) hd_shm_retired_t retired[HD_SHM_WORKER_IDS];
    _Alignas(HD_SHM_PAGE) struct hd_shm_slot slot[HD_SHM_SLOTS];
};

/* Build the histogram and close-code tables (idempotent; hd_metrics.c). */
void hd_metrics_tables_init(void);

/* Layout checks: the segment is shared between processes built from the
 * same binary, but a wrong padding assumption would put two writers on one
 * cache line (false sharing) or misalign an atomic. */
_Static_assert(sizeof(_Atomic uint64_t) == 8, "64-bit atomics");
_Static_assert(sizeof(hd_hist_cells_t) % 64 == 0, "histogram is whole lines");
_Static_assert(sizeof(hd_metrics_cells_t) % 64 == 0, "cells are whole lines");
_Static_assert(offsetof(hd_metrics_cells_t, hist) % 64 == 0, "hist aligned");
_Static_assert(sizeof(struct hd_shm_slot) % 64 == 0, "slot is whole lines");
_Static_assert(offsetof(struct hd_shm_slot, m) == 64, "identity line first");
_Static_assert(sizeof(hd_shm_hdr_t) <= 128, "header fits two lines");
_Static_assert(offsetof(struct hd_shm, slot) % HD_SHM_PAGE == 0,
               "slots start on a page: the master's part can be read-only");
_Static_assert(offsetof(struct hd_shm, retired) % 64 == 0, "retired aligned");
_Static_assert(HD_HIST_BUCKETS >= HD_HIST_RAW + HD_HIST_LE_COUNT,
               "room for one split per exported bound");

#endif
