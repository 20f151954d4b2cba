/*
 * The overload guard: shed load before the kernel's OOM killer does.
 *
 * A worker whose resident memory passes limits.worker_memory_mb, or whose
 * outbound queues together hold more than limits.worker_queue_mb, is
 * overloaded: new WebSocket connections are closed with 1013 (try again
 * later) right after the handshake (hd_ws.c) and HTTP API requests get 503
 * (hd_api.c). Connections already open keep being served: closing them
 * would only make them reconnect. It stops at 90 % of the limit, so that
 * the state does not flap at the edge. herald_overloaded shows it.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "hd_log.h"
#include "hd_metrics.h"
#include "hd_worker_int.h"

#define OVERLOAD_CHECK_S 0.25
#define MB               (1024.0 * 1024.0)

/* Resident bytes of this process from /proc/self/statm, 0 if unknown. */
static size_t
rss_bytes(void)
{
    char               buf[128];
    ssize_t            n;
    int                fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    unsigned long long size, resident;

    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
        return 0;
    return (size_t) resident * (size_t) sysconf(_SC_PAGESIZE);
}

static void
check_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    const hd_conf_t *conf = hd_w.conf;
    double           mem = 0, q = (double) hd_w.queued_bytes;
    double           f = hd_w.overloaded ? 0.9 : 1.0; /* hysteresis */
    bool             over = false;
    (void) loop;
    (void) w;
    (void) revents;

    if (conf->worker_memory_mb > 0) {
        mem = (double) rss_bytes();
        over |= mem > f * conf->worker_memory_mb * MB;
    }
    if (conf->worker_queue_mb > 0)
        over |= q > f * conf->worker_queue_mb * MB;
    if (over == hd_w.overloaded)
        return;
    hd_w.overloaded = over;
    hd_gauge_set(HD_G_OVERLOADED, over);
    if (over)
        hd_log_warn("overloaded (resident %.1f MiB, limit %d; queued %.1f "
                    "MiB, limit %d): refusing new connections and API "
                    "requests",
                    mem / MB, conf->worker_memory_mb, q / MB,
                    conf->worker_queue_mb);
    else
        hd_log_info("no longer overloaded: accepting again");
}

void
hd_overload_start(void)
{
    if (hd_w.conf->worker_memory_mb == 0 && hd_w.conf->worker_queue_mb == 0)
        return;
    ev_timer_init(&hd_w.overload_w, check_cb, 0., OVERLOAD_CHECK_S);
    ev_timer_start(hd_w.loop, &hd_w.overload_w);
}

void
hd_overload_stop(void)
{
    ev_timer_stop(hd_w.loop, &hd_w.overload_w);
}
