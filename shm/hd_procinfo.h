/*
 * Per-process resource figures for herald_process_* metrics, read by the
 * master at render time from /proc (Linux only).
 */
#ifndef HD_PROCINFO_H
#define HD_PROCINFO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "hd_shm.h"

typedef struct hd_procinfo {
    bool     ok; /* false: unknown (process gone, no access) */
    pid_t    pid;
    uint64_t rss_bytes; /* /proc/PID/statm resident pages * page size */
    uint64_t cpu_ns;    /* /proc/PID/stat utime+stime, tick resolution */
    int64_t  open_fds;  /* -1 if /proc/PID/fd could not be read */
    int64_t  max_fds;   /* soft RLIMIT_NOFILE from /proc/PID/limits; -1 if
                           unknown or unlimited */
} hd_procinfo_t;

/* Process info for one render: the master, and every slot by index. */
typedef struct hd_render_proc {
    hd_procinfo_t master;
    hd_procinfo_t slot[HD_SHM_SLOTS];
} hd_render_proc_t;

/*
 * Read pid's figures. Returns 0 (out->ok true) or -errno (out zeroed,
 * ok false). The open-fd count uses st_size of /proc/PID/fd, which Linux
 * >= 6.2 sets to the number of open fds in O(1); on older kernels it
 * counts the directory's entries (O(fds): ~10 ms per 100k connections).
 */
int hd_procinfo_read(pid_t pid, hd_procinfo_t *out);

/* Fill p for the calling process (as master) and snap's live slots; the
 * other entries of p->slot[] are left as they were (the renderer reads
 * only the live slots'). */
void hd_procinfo_collect(const hd_shm_snapshot_t *snap, hd_render_proc_t *p);

#endif
