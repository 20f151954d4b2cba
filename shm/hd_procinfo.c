/* /proc readers for herald_process_* metrics; see hd_procinfo.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hd_procinfo.h"

/* Read a small /proc file into buf (NUL-terminated). Returns 0 or -errno. */
static int
slurp(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = errno;
            close(fd);
            return -err;
        }
        if (n == 0)
            break;
        len += (size_t) n;
    }
    close(fd);
    buf[len] = '\0';
    return 0;
}

static int64_t
count_fds(const char *dir)
{
    struct stat stt;
    if (stat(dir, &stt) == 0 && stt.st_size > 0)
        return (int64_t) stt.st_size;
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1; /* "unknown" (hd_procinfo_t.open_fds), not an error code */
    int64_t        n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* The soft "Max open files" limit from a /proc/PID/limits text; -1 when
 * the line is missing or says "unlimited". */
static int64_t
max_open_files(const char *limits)
{
    const char *p = strstr(limits, "Max open files");
    if (p == NULL)
        return -1; /* "unknown" (hd_procinfo_t.max_fds), not an error code */
    p += strlen("Max open files");
    while (*p == ' ')
        p++;
    if (*p < '0' || *p > '9')
        return -1; /* "unlimited" */
    return (int64_t) strtoll(p, NULL, 10);
}

int
hd_procinfo_read(pid_t pid, hd_procinfo_t *out)
{
    static long tck, page;
    char        path[64], buf[1024];
    int         rc;

    memset(out, 0, sizeof(*out));
    out->open_fds = -1;
    out->max_fds = -1;
    if (pid <= 0)
        return -ESRCH;
    if (tck <= 0)
        tck = sysconf(_SC_CLK_TCK);
    if (page <= 0)
        page = sysconf(_SC_PAGESIZE);

    /* stat: "pid (comm) state ..."; comm may hold spaces and ')', so
     * fields are counted from the last ')'. utime and stime are fields 14
     * and 15; after ") " the first field is 3 (state). */
    snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
    if ((rc = slurp(path, buf, sizeof(buf))) < 0)
        return rc;
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -EINVAL;
    p++;
    unsigned long long ut = 0, stm = 0;
    for (int field = 3; field <= 15; field++) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            return -EINVAL;
        if (field == 14)
            ut = strtoull(p, NULL, 10);
        else if (field == 15)
            stm = strtoull(p, NULL, 10);
        while (*p != ' ' && *p != '\0')
            p++;
    }
    out->cpu_ns = (uint64_t) ((ut + stm)
                              * (1000000000ull / (unsigned long long) tck));

    snprintf(path, sizeof(path), "/proc/%d/statm", (int) pid);
    if ((rc = slurp(path, buf, sizeof(buf))) < 0)
        return rc;
    unsigned long long size = 0, res = 0;
    if (sscanf(buf, "%llu %llu", &size, &res) != 2)
        return -EINVAL;
    out->rss_bytes = (uint64_t) res * (uint64_t) page;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int) pid);
    out->open_fds = count_fds(path);
    /* the limit, next to the count: fd exhaustion is their ratio */
    snprintf(path, sizeof(path), "/proc/%d/limits", (int) pid);
    char lim[4096];
    if (slurp(path, lim, sizeof(lim)) >= 0)
        out->max_fds = max_open_files(lim);
    out->pid = pid;
    out->ok = true;
    return 0;
}

void
hd_procinfo_collect(const hd_shm_snapshot_t *snap, hd_render_proc_t *p)
{
    hd_procinfo_read(getpid(), &p->master);
    for (size_t i = 0; i < snap->nslots; i++) {
        const hd_shm_slot_snap_t *s = &snap->slot[i];
        hd_procinfo_read(s->pid, &p->slot[s->idx]);
    }
}
