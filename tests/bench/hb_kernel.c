/*
 * herald-bench kernel: how fast can this box move small messages over
 * loopback TCP with plain write()? The ceiling herald is measured against.
 *
 * For each (sockets, batch) pair a writer process writes --size-byte
 * messages round-robin over `sockets` connected loopback sockets, `batch`
 * messages per write() (batch 1: one syscall per message, what an
 * unbatched server does per delivery; batch N: coalesced, what herald's
 * batching does), for --seconds; a reader process drains every socket
 * with epoll. Both are separate processes on a 2-core box, like herald and
 * its clients. Reported: messages and writes per second of wall time, and
 * per CPU-second of the writer (the figure to put next to herald's
 * "deliveries per server CPU-second", which is robust to a noisy box).
 */
#include "hb_bench.h"

#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct kres {
    uint32_t sockets, batch, size;
    double   wall_s;
    uint64_t msgs, writes, bytes_read;
    double   writer_cpu_s, reader_cpu_s;
} kres_t;

static double
mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static double
ru_cpu(const struct rusage *ru)
{
    return (double) ru->ru_utime.tv_sec + (double) ru->ru_stime.tv_sec
        + ((double) ru->ru_utime.tv_usec + (double) ru->ru_stime.tv_usec) / 1e6;
}

static int
parse_list(const char *s, uint32_t *out, int max)
{
    int   n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t && n < max;
         t = strtok_r(NULL, ",", &save))
        out[n++] = (uint32_t) strtoul(t, NULL, 10);
    free(copy);
    return n;
}

/* Make n connected loopback pairs: w[i] for the writer, r[i] the reader. */
static int
make_pairs(uint32_t n, int *w, int *r)
{
    int                ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t          sl = sizeof(sa);

    if (ls < 0 || bind(ls, (struct sockaddr *) &sa, sizeof(sa)) < 0
        || listen(ls, 4096) < 0
        || getsockname(ls, (struct sockaddr *) &sa, &sl) < 0) {
        fprintf(stderr, "herald-bench kernel: listen failed: %s\n",
                strerror(errno));
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        w[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (w[i] < 0
            || connect(w[i], (struct sockaddr *) &sa, sizeof(sa)) < 0) {
            fprintf(stderr, "herald-bench kernel: connect failed: %s\n",
                    strerror(errno));
            return -1;
        }
        int one = 1;
        setsockopt(w[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        r[i] = accept4(ls, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (r[i] < 0) {
            fprintf(stderr, "herald-bench kernel: accept failed: %s\n",
                    strerror(errno));
            return -1;
        }
    }
    close(ls);
    return 0;
}

static void
reader(uint32_t n, int *r, int out)
{
    int            ep = epoll_create1(EPOLL_CLOEXEC);
    static uint8_t buf[256 * 1024];
    uint64_t       total = 0;
    uint32_t       open = n;

    for (uint32_t i = 0; i < n; i++) {
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
        epoll_ctl(ep, EPOLL_CTL_ADD, r[i], &ev);
    }
    while (open > 0) {
        struct epoll_event evs[256];
        int                k = epoll_wait(ep, evs, 256, 5000);
        if (k <= 0)
            break;
        for (int j = 0; j < k; j++) {
            int fd = r[evs[j].data.u32];
            for (;;) {
                ssize_t got = read(fd, buf, sizeof(buf));
                if (got > 0) {
                    total += (uint64_t) got;
                    continue;
                }
                if (got == 0) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                    close(fd);
                    open--;
                }
                break;
            }
        }
    }
    if (write(out, &total, sizeof(total)) < 0)
        _exit(1);
    _exit(0);
}

static void
writer(uint32_t n, int *w, uint32_t size, uint32_t batch, double secs, int out)
{
    size_t   len = (size_t) size * batch;
    uint8_t *buf = malloc(len);
    uint64_t stats[2] = { 0, 0 }; /* messages, writes */
    double   end = mono_s() + secs;

    memset(buf, 'm', len);
    for (;;) {
        for (uint32_t i = 0; i < n; i++) {
            size_t off = 0;
            while (off < len) {
                ssize_t k = write(w[i], buf + off, len - off);
                if (k < 0 && errno == EINTR)
                    continue;
                if (k < 0)
                    _exit(1);
                off += (size_t) k;
            }
            stats[0] += batch;
            stats[1]++;
        }
        if ((stats[1] & 63) < n && mono_s() >= end)
            break;
    }
    for (uint32_t i = 0; i < n; i++)
        close(w[i]);
    if (write(out, stats, sizeof(stats)) < 0)
        _exit(1);
    _exit(0);
}

static int
run_one(uint32_t sockets, uint32_t batch, uint32_t size, double secs,
        kres_t *res)
{
    int *w = calloc(sockets, sizeof(int)), *r = calloc(sockets, sizeof(int));
    int  pw[2], pr[2];

    memset(res, 0, sizeof(*res));
    res->sockets = sockets;
    res->batch = batch;
    res->size = size;
    if (make_pairs(sockets, w, r) < 0 || pipe(pw) < 0 || pipe(pr) < 0)
        return -1;
    double t0 = mono_s();
    pid_t  rp = fork();
    if (rp == 0) {
        for (uint32_t i = 0; i < sockets; i++)
            close(w[i]);
        reader(sockets, r, pr[1]);
    }
    for (uint32_t i = 0; i < sockets; i++)
        close(r[i]);
    pid_t wp = fork();
    if (wp == 0)
        writer(sockets, w, size, batch, secs, pw[1]);
    for (uint32_t i = 0; i < sockets; i++)
        close(w[i]);
    close(pw[1]);
    close(pr[1]);
    struct rusage ru;
    int           st;
    uint64_t      stats[2] = { 0, 0 };
    if (wait4(wp, &st, 0, &ru) == wp)
        res->writer_cpu_s = ru_cpu(&ru);
    res->wall_s = mono_s() - t0;
    if (read(pw[0], stats, sizeof(stats)) != sizeof(stats))
        fprintf(stderr, "herald-bench kernel: writer failed\n");
    if (wait4(rp, &st, 0, &ru) == rp)
        res->reader_cpu_s = ru_cpu(&ru);
    if (read(pr[0], &res->bytes_read, sizeof(res->bytes_read))
        != sizeof(res->bytes_read))
        fprintf(stderr, "herald-bench kernel: reader failed\n");
    res->msgs = stats[0];
    res->writes = stats[1];
    close(pw[0]);
    close(pr[0]);
    free(w);
    free(r);
    return res->bytes_read == res->msgs * size ? 0 : -1;
}

int
hb_kernel_main(int argc, char **argv)
{
    uint32_t    socks[8] = { 1, 1000 }, batches[8] = { 1, 16, 256 };
    int         ns = 2, nb = 3;
    uint32_t    size = 100;
    double      secs = 3;
    const char *json = NULL;
    static const struct option lo[] = {
        { "sockets", 1, 0, 's' }, { "batch", 1, 0, 'b' }, { "size", 1, 0, 'z' },
        { "seconds", 1, 0, 't' }, { "json", 1, 0, 'j' },  { "help", 0, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    int opt;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (opt) {
        case 's':
            ns = parse_list(optarg, socks, 8);
            break;
        case 'b':
            nb = parse_list(optarg, batches, 8);
            break;
        case 'z':
            size = (uint32_t) strtoul(optarg, NULL, 10);
            break;
        case 't':
            secs = strtod(optarg, NULL);
            break;
        case 'j':
            json = optarg;
            break;
        case 'h':
            printf("Usage: herald-bench kernel [--sockets 1,1000] [--batch "
                   "1,16,256]\n"
                   "                           [--size 100] [--seconds 3] "
                   "[--json FILE]\n");
            return 0;
        default:
            return 2;
        }
    }
    if (ns <= 0 || nb <= 0 || size == 0 || size > 1 << 20 || secs <= 0) {
        fprintf(stderr, "herald-bench kernel: bad options\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    kres_t res[64];
    int    nr = 0, bad = 0;
    printf("kernel loopback write() probe: %u-byte messages, %.1f s each\n",
           size, secs);
    printf("%8s %6s %12s %12s %9s %14s %16s %16s\n", "sockets", "batch",
           "msgs/s", "writes/s", "MB/s", "wr us/write", "msgs/writer-CPU-s",
           "msgs/reader-CPU-s");
    for (int i = 0; i < ns; i++) {
        for (int j = 0; j < nb; j++) {
            kres_t *k = &res[nr];
            if (run_one(socks[i], batches[j], size, secs, k) < 0) {
                fprintf(stderr, "herald-bench kernel: run %u x %u lost bytes\n",
                        socks[i], batches[j]);
                bad = 1;
            }
            printf("%8u %6u %12.0f %12.0f %9.1f %14.3f %16.0f %16.0f\n",
                   k->sockets, k->batch, k->msgs / k->wall_s,
                   k->writes / k->wall_s,
                   (double) k->msgs * size / k->wall_s / 1e6,
                   k->writes ? k->writer_cpu_s * 1e6 / (double) k->writes : 0,
                   k->writer_cpu_s > 0 ? k->msgs / k->writer_cpu_s : 0,
                   k->reader_cpu_s > 0 ? k->msgs / k->reader_cpu_s : 0);
            fflush(stdout);
            nr++;
        }
    }
    if (json) {
        FILE          *f = fopen(json, "w");
        struct utsname u;
        if (f == NULL) {
            fprintf(stderr, "herald-bench kernel: cannot write %s\n", json);
            return 2;
        }
        uname(&u);
        fprintf(f,
                "{\n  \"tool\": \"herald-bench-kernel\", \"format\": 1, "
                "\"time\": %llu,\n"
                "  \"machine\": {\"nproc\": %ld, \"kernel\": \"%s\"},\n"
                "  \"size\": %u, \"seconds\": %.3f,\n  \"results\": [\n",
                (unsigned long long) time(NULL), sysconf(_SC_NPROCESSORS_ONLN),
                u.release, size, secs);
        for (int i = 0; i < nr; i++) {
            kres_t *k = &res[i];
            fprintf(f,
                    "    {\"sockets\": %u, \"batch\": %u, \"wall_s\": %.3f, "
                    "\"msgs\": %llu, "
                    "\"writes\": %llu, \"msgs_per_s\": %.1f, \"writes_per_s\": "
                    "%.1f, "
                    "\"writer_cpu_s\": %.3f, \"reader_cpu_s\": %.3f, "
                    "\"msgs_per_writer_cpu_s\": %.1f, \"writer_us_per_write\": "
                    "%.4f}%s\n",
                    k->sockets, k->batch, k->wall_s,
                    (unsigned long long) k->msgs,
                    (unsigned long long) k->writes, k->msgs / k->wall_s,
                    k->writes / k->wall_s, k->writer_cpu_s, k->reader_cpu_s,
                    k->writer_cpu_s > 0 ? k->msgs / k->writer_cpu_s : 0,
                    k->writes ? k->writer_cpu_s * 1e6 / (double) k->writes : 0,
                    i + 1 < nr ? "," : "");
        }
        fprintf(f, "  ]\n}\n");
        fclose(f);
    }
    return bad ? 1 : 0;
}
