/*
 * Prometheus exposition, /health and /stats bodies from a shm snapshot.
 * See hd_render.h for the contracts and docs/metrics.md for the catalogue.
 *
 * Label scheme: every per-worker series carries worker="N", N being the
 * logical worker id; the snapshot already summed the process slots that
 * share an id with that id's retired totals. Process series carry
 * process="master" or process="worker",worker="N".
 */
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_alloc.h"
#include "hd_render.h"

static const char *const proxy_result_names[HD_PXR__COUNT] = {
    [HD_PXR_ALLOWED] = "allowed", [HD_PXR_REFUSED] = "refused",
    [HD_PXR_TIMEOUT] = "timeout", [HD_PXR_ERROR] = "error",
    [HD_PXR_INVALID] = "invalid", [HD_PXR_BUSY] = "busy",
};
static const char *const redis_err_names[HD_RERR__COUNT] = {
    [HD_RERR_OOM] = "oom",         [HD_RERR_READONLY] = "readonly",
    [HD_RERR_LOADING] = "loading", [HD_RERR_BUSY] = "busy",
    [HD_RERR_NOPERM] = "noperm",   [HD_RERR_NOSCRIPT] = "noscript",
    [HD_RERR_OTHER] = "other",
};

static const char *const reject_names[HD_REJ__COUNT] = {
    [HD_REJ_NODE_LIMIT] = "node_limit",
    [HD_REJ_IP_LIMIT] = "ip_limit",
    [HD_REJ_USER_LIMIT] = "user_limit",
    [HD_REJ_TENANT_LIMIT] = "tenant_limit",
    [HD_REJ_AUTH] = "auth",
    [HD_REJ_HANDSHAKE] = "handshake",
    [HD_REJ_DRAINING] = "draining",
    [HD_REJ_OVERLOAD] = "overload",
    [HD_REJ_PROXY] = "proxy_protocol",
};

const char *
hd_reject_reason_name(enum hd_reject_reason r)
{
    return (unsigned) r < HD_REJ__COUNT ? reject_names[r] : "unknown";
}

struct ctr_def {
    enum hd_counter c;
    const char     *name;
    const char     *help;
};

/* Counters kept per worker, in exposition order. */
static const struct ctr_def ctr_defs[] = {
    { HD_C_MSG_RECEIVED, "herald_messages_received_total",
      "Client commands and messages received over WebSocket." },
    { HD_C_MSG_PUBLISHED, "herald_messages_published_total",
      "Messages published to Redis (acknowledged publishes)." },
    { HD_C_MSG_DELIVERED, "herald_messages_delivered_total",
      "Messages written to subscribers (one per subscriber)." },
    { HD_C_BYTES_RECEIVED, "herald_bytes_received_total",
      "WebSocket payload bytes received from clients." },
    { HD_C_BYTES_SENT, "herald_bytes_sent_total",
      "WebSocket payload bytes sent to clients." },
    { HD_C_ERRORS, "herald_command_errors_total",
      "Commands answered with an error." },
};

struct hist_def {
    enum hd_hist h;
    const char  *name;
    const char  *help;
    const char  *key; /* /stats key */
};

static const struct hist_def hist_defs[HD_H__COUNT] = {
    { HD_H_HANDSHAKE, "herald_handshake_duration_seconds",
      "Time from TCP accept to a completed WebSocket upgrade.", "handshake" },
    { HD_H_DELIVERY, "herald_delivery_latency_seconds",
      "Time from publish (envelope timestamp) to the write to a subscriber.",
      "delivery" },
    { HD_H_REDIS_CMD, "herald_redis_command_duration_seconds",
      "Round-trip time of Redis commands.", "redis_command" },
};

static const char *const state_names[] = {
    [HD_SLOT_FREE] = "free",       [HD_SLOT_STARTING] = "starting",
    [HD_SLOT_RUNNING] = "running", [HD_SLOT_DRAINING] = "draining",
    [HD_SLOT_DEAD] = "dead",
};

void
hd_render_label_value(hd_strbuf_t *b, const char *s)
{
    for (const char *p = s; *p != '\0'; p++) {
        switch (*p) {
        case '\\':
            hd_strbuf_append(b, "\\\\", 2);
            break;
        case '"':
            hd_strbuf_append(b, "\\\"", 2);
            break;
        case '\n':
            hd_strbuf_append(b, "\\n", 2);
            break;
        default:
            hd_strbuf_putc(b, *p);
        }
    }
}

static void
family(hd_strbuf_t *b, const char *name, const char *type, const char *help)
{
    hd_strbuf_puts(b, "# HELP ");
    hd_strbuf_puts(b, name);
    hd_strbuf_putc(b, ' ');
    hd_strbuf_puts(b, help); /* static text: no \ or newline */
    hd_strbuf_puts(b, "\n# TYPE ");
    hd_strbuf_puts(b, name);
    hd_strbuf_putc(b, ' ');
    hd_strbuf_puts(b, type);
    hd_strbuf_putc(b, '\n');
}

/* name{worker="N" (no closing brace: callers add labels or '}') */
static void
open_worker(hd_strbuf_t *b, const char *name, unsigned id)
{
    hd_strbuf_puts(b, name);
    hd_strbuf_puts(b, "{worker=\"");
    hd_strbuf_u64(b, id);
    hd_strbuf_putc(b, '"');
}

static void
sample_u64(hd_strbuf_t *b, uint64_t v)
{
    hd_strbuf_putc(b, ' ');
    hd_strbuf_u64(b, v);
    hd_strbuf_putc(b, '\n');
}

/*
 * A counter family with one label besides the worker: values[i] (an array
 * of n in each worker's snapshot, at offset off) under label="names[i]".
 */
static void
labelled_family(hd_strbuf_t *b, const hd_shm_snapshot_t *snap, const char *name,
                const char *help, const char *label, const char *const *names,
                unsigned n, size_t off)
{
    family(b, name, "counter", help);
    for (size_t k = 0; k < snap->nworkers; k++) {
        const uint64_t *v =
            (const uint64_t *) (const void *) ((const char *) &snap->w[k]
                                               + off);
        for (unsigned r = 0; r < n; r++) {
            open_worker(b, name, snap->w[k].worker_id);
            hd_strbuf_putc(b, ',');
            hd_strbuf_puts(b, label);
            hd_strbuf_puts(b, "=\"");
            hd_strbuf_puts(b, names[r]);
            hd_strbuf_puts(b, "\"}");
            sample_u64(b, v[r]);
        }
    }
}

static void
sample_i64(hd_strbuf_t *b, int64_t v)
{
    hd_strbuf_putc(b, ' ');
    hd_strbuf_i64(b, v);
    hd_strbuf_putc(b, '\n');
}

static void
sample_sec(hd_strbuf_t *b, uint64_t ns)
{
    hd_strbuf_putc(b, ' ');
    hd_strbuf_ns_as_sec(b, ns);
    hd_strbuf_putc(b, '\n');
}

static void
worker_u64(hd_strbuf_t *b, const char *name, unsigned id, uint64_t v)
{
    open_worker(b, name, id);
    hd_strbuf_putc(b, '}');
    sample_u64(b, v);
}

static uint64_t
hist_total(const hd_shm_hist_snap_t *h)
{
    uint64_t n = 0;
    unsigned nb = hd_hist_nbuckets();
    for (unsigned i = 0; i < nb; i++)
        n += h->bucket[i];
    return n;
}

/* One worker's histogram: cumulative le buckets, +Inf, _sum, _count. */
static void
hist_series(hd_strbuf_t *b, const char *name, unsigned id,
            const hd_shm_hist_snap_t *h)
{
    size_t nl = strlen(name);
    char   bucket[128], sum[128], count[128];
    snprintf(bucket, sizeof(bucket), "%.*s_bucket", (int) nl, name);
    snprintf(sum, sizeof(sum), "%.*s_sum", (int) nl, name);
    snprintf(count, sizeof(count), "%.*s_count", (int) nl, name);

    uint64_t cum = 0;
    unsigned i = 0;
    for (unsigned j = 0; j < HD_HIST_LE_COUNT; j++) {
        unsigned last = hd_hist_le_bucket(j);
        for (; i <= last; i++)
            cum += h->bucket[i];
        open_worker(b, bucket, id);
        hd_strbuf_puts(b, ",le=\"");
        hd_strbuf_puts(b, hd_hist_le_str(j));
        hd_strbuf_puts(b, "\"}");
        sample_u64(b, cum);
    }
    uint64_t total = hist_total(h);
    open_worker(b, bucket, id);
    hd_strbuf_puts(b, ",le=\"+Inf\"}");
    sample_u64(b, total);
    open_worker(b, sum, id);
    hd_strbuf_putc(b, '}');
    sample_sec(b, h->sum_ns);
    open_worker(b, count, id);
    hd_strbuf_putc(b, '}');
    sample_u64(b, total); /* == +Inf bucket by construction */
}

static void
gauge_family(hd_strbuf_t *b, const hd_shm_snapshot_t *snap, enum hd_gauge g,
             const char *name, const char *help)
{
    family(b, name, "gauge", help);
    for (size_t k = 0; k < snap->nworkers; k++) {
        const hd_shm_worker_snap_t *w = &snap->w[k];
        if (!w->gauges)
            continue;
        open_worker(b, name, w->worker_id);
        hd_strbuf_putc(b, '}');
        sample_i64(b, w->gauge[g]);
    }
}

static void
ctr_family(hd_strbuf_t *b, const hd_shm_snapshot_t *snap, enum hd_counter c,
           const char *name, const char *help)
{
    family(b, name, "counter", help);
    for (size_t k = 0; k < snap->nworkers; k++)
        worker_u64(b, name, snap->w[k].worker_id, snap->w[k].ctr[c]);
}

static void
hist_family(hd_strbuf_t *b, const hd_shm_snapshot_t *snap, enum hd_hist h)
{
    const struct hist_def *d = &hist_defs[h];
    family(b, d->name, "histogram", d->help);
    for (size_t k = 0; k < snap->nworkers; k++)
        hist_series(b, d->name, snap->w[k].worker_id, &snap->w[k].hist[h]);
}

/* Sum the live slots' process figures for one worker id. */
static bool
worker_proc(const hd_shm_snapshot_t *snap, const hd_render_proc_t *proc,
            unsigned id, uint64_t *rss, uint64_t *cpu, int64_t *fds,
            int64_t *maxfds)
{
    bool any = false;
    *rss = 0;
    *cpu = 0;
    *fds = 0;
    *maxfds = 0;
    if (proc == NULL)
        return false;
    for (size_t i = 0; i < snap->nslots; i++) {
        const hd_shm_slot_snap_t *s = &snap->slot[i];
        const hd_procinfo_t      *pi = &proc->slot[s->idx];
        if (s->worker_id != id || !pi->ok)
            continue;
        any = true;
        *rss += pi->rss_bytes;
        *cpu += pi->cpu_ns;
        if (pi->open_fds >= 0 && *fds >= 0)
            *fds += pi->open_fds;
        else
            *fds = -1;
        if (pi->max_fds >= 0 && *maxfds >= 0)
            *maxfds += pi->max_fds;
        else
            *maxfds = -1;
    }
    return any;
}

static void
process_families(hd_strbuf_t *b, const hd_shm_snapshot_t *snap,
                 const hd_render_proc_t *proc)
{
    static const char *const names[4] = {
        "herald_process_resident_memory_bytes",
        "herald_process_cpu_seconds_total",
        "herald_process_open_fds",
        "herald_process_max_fds",
    };
    static const char *const helps[4] = {
        "Resident memory of the process (summed over a worker's processes).",
        "User plus system CPU time; a worker's series includes its reaped processes.",
        "Open file descriptors (summed over a worker's processes).",
        "Soft limit on open file descriptors (RLIMIT_NOFILE; summed over a worker's processes).",
    };
    static const char *const types[4] = { "gauge", "counter", "gauge",
                                          "gauge" };
    bool                     master_ok = proc != NULL && proc->master.ok;

    for (int m = 0; m < 4; m++) {
        family(b, names[m], types[m], helps[m]);
        if (master_ok && (m != 2 || proc->master.open_fds >= 0)
            && (m != 3 || proc->master.max_fds >= 0)) {
            hd_strbuf_puts(b, names[m]);
            hd_strbuf_puts(b, "{process=\"master\"}");
            if (m == 0)
                sample_u64(b, proc->master.rss_bytes);
            else if (m == 1)
                sample_sec(b, proc->master.cpu_ns);
            else if (m == 2)
                sample_i64(b, proc->master.open_fds);
            else
                sample_i64(b, proc->master.max_fds);
        }
        for (size_t k = 0; k < snap->nworkers; k++) {
            const hd_shm_worker_snap_t *w = &snap->w[k];
            uint64_t                    rss, cpu;
            int64_t                     fds, maxfds;
            bool live = worker_proc(snap, proc, w->worker_id, &rss, &cpu, &fds,
                                    &maxfds);
            /* CPU is a counter: always there, retired + live. The gauges
             * exist only while the worker has a live process. */
            if (m != 1
                && (!live || (m == 2 && fds < 0) || (m == 3 && maxfds < 0)))
                continue;
            hd_strbuf_puts(b, names[m]);
            hd_strbuf_puts(b, "{process=\"worker\",worker=\"");
            hd_strbuf_u64(b, w->worker_id);
            hd_strbuf_puts(b, "\"}");
            if (m == 0)
                sample_u64(b, rss);
            else if (m == 1)
                sample_sec(b, w->cpu_retired_ns + cpu);
            else if (m == 2)
                sample_i64(b, fds);
            else
                sample_i64(b, maxfds);
        }
    }
}

void
hd_render_metrics(hd_strbuf_t *b, const hd_shm_snapshot_t *snap,
                  const hd_render_proc_t *proc, const char *version)
{
    hd_strbuf_reserve(b, 4096 + snap->nworkers * 12000);

    family(b, "herald_build_info", "gauge",
           "Build information; the value is always 1.");
    hd_strbuf_puts(b, "herald_build_info{version=\"");
    hd_render_label_value(b, version != NULL ? version : "");
    hd_strbuf_puts(b, "\"} 1\n");

    family(b, "herald_start_time_seconds", "gauge",
           "Start time of the master since the Unix epoch in seconds.");
    hd_strbuf_puts(b, "herald_start_time_seconds");
    sample_sec(b, snap->start_ns);

    family(b, "herald_workers", "gauge", "Worker processes by state.");
    for (int st = HD_SLOT_STARTING; st <= HD_SLOT_DRAINING; st++) {
        hd_strbuf_puts(b, "herald_workers{state=\"");
        hd_strbuf_puts(b, state_names[st]);
        hd_strbuf_puts(b, "\"}");
        sample_u64(b, snap->slots_by_state[st]);
    }

    family(b, "herald_workers_expected", "gauge",
           "Workers the configuration asks for.");
    hd_strbuf_puts(b, "herald_workers_expected");
    sample_u64(b, snap->workers_expected);

    family(b, "herald_worker_restarts_total", "counter",
           "Unplanned worker exits that the master respawned.");
    hd_strbuf_puts(b, "herald_worker_restarts_total");
    sample_u64(b, snap->restarts);

    family(b, "herald_config_reloads_total", "counter",
           "Configuration reloads by result.");
    hd_strbuf_puts(b, "herald_config_reloads_total{result=\"success\"}");
    sample_u64(b, snap->reloads_ok);
    hd_strbuf_puts(b, "herald_config_reloads_total{result=\"failure\"}");
    sample_u64(b, snap->reloads_failed);

    family(b, "herald_upgrades_total", "counter",
           "Binary upgrades: success counted by the new master once it "
           "took over, failure by the old one that kept serving.");
    hd_strbuf_puts(b, "herald_upgrades_total{result=\"success\"}");
    sample_u64(b, snap->upgrades_ok);
    hd_strbuf_puts(b, "herald_upgrades_total{result=\"failure\"}");
    sample_u64(b, snap->upgrades_failed);

    family(b, "herald_config_last_reload_success_timestamp_seconds", "gauge",
           "Time of the last successful configuration load (start counts).");
    hd_strbuf_puts(b, "herald_config_last_reload_success_timestamp_seconds");
    sample_sec(b,
               snap->last_reload_ok_ns > snap->start_ns
                   ? snap->last_reload_ok_ns
                   : snap->start_ns);

    family(b, "herald_config_generation", "gauge",
           "Configuration generation; goes up on every successful reload.");
    hd_strbuf_puts(b, "herald_config_generation");
    sample_u64(b, snap->generation);

    gauge_family(b, snap, HD_G_CONNECTIONS, "herald_connections",
                 "Open client connections.");
    ctr_family(b, snap, HD_C_CONN_ACCEPTED, "herald_connections_accepted_total",
               "Client connections accepted.");

    labelled_family(b, snap, "herald_connections_rejected_total",
                    "Client connections refused, by reason.", "reason",
                    reject_names, HD_REJ__COUNT,
                    offsetof(hd_shm_worker_snap_t, rej));

    hist_family(b, snap, HD_H_HANDSHAKE);
    for (size_t i = 0; i < sizeof(ctr_defs) / sizeof(ctr_defs[0]); i++)
        ctr_family(b, snap, ctr_defs[i].c, ctr_defs[i].name, ctr_defs[i].help);
    hist_family(b, snap, HD_H_DELIVERY);
    hist_family(b, snap, HD_H_REDIS_CMD);

    gauge_family(b, snap, HD_G_REDIS_UP, "herald_redis_up",
                 "1 when the worker's Redis connections are up, else 0.");
    gauge_family(b, snap, HD_G_REDIS_REFUSING, "herald_redis_refusing_writes",
                 "1 when Redis refused the worker's last write (OOM, "
                 "READONLY) and has not taken one since, else 0.");
    ctr_family(b, snap, HD_C_REDIS_RECONNECTS, "herald_redis_reconnects_total",
               "Redis reconnections after a lost connection.");
    labelled_family(b, snap, "herald_redis_errors_total",
                    "Error replies from Redis, by kind.", "kind",
                    redis_err_names, HD_RERR__COUNT,
                    offsetof(hd_shm_worker_snap_t, rerr));
    labelled_family(b, snap, "herald_proxy_requests_total",
                    "Connect and subscribe proxy requests to the "
                    "application's backend, by result.",
                    "result", proxy_result_names, HD_PXR__COUNT,
                    offsetof(hd_shm_worker_snap_t, pxr));

    family(b, "herald_disconnects_total", "counter",
           "Client connections closed, by WebSocket close code.");
    for (size_t k = 0; k < snap->nworkers; k++)
        for (unsigned i = 0; i < HD_DISC__COUNT; i++) {
            open_worker(b, "herald_disconnects_total", snap->w[k].worker_id);
            hd_strbuf_puts(b, ",code=\"");
            if (i < HD_DISC_KNOWN)
                hd_strbuf_u64(b, hd_disconnect_code(i));
            else
                hd_strbuf_puts(b, "other");
            hd_strbuf_puts(b, "\"}");
            sample_u64(b, snap->w[k].disc[i]);
        }

    family(b, "herald_api_requests_total", "counter",
           "HTTP API requests, by method and result.");
    for (size_t k = 0; k < snap->nworkers; k++)
        for (unsigned m = 0; m < HD_API__COUNT; m++)
            for (unsigned r = 0; r < HD_APIR__COUNT; r++) {
                open_worker(b, "herald_api_requests_total",
                            snap->w[k].worker_id);
                hd_strbuf_puts(b, ",method=\"");
                hd_strbuf_puts(b, hd_api_method_name(m));
                hd_strbuf_puts(b, "\",result=\"");
                hd_strbuf_puts(b, hd_api_result_name(r));
                hd_strbuf_puts(b, "\"}");
                sample_u64(b, snap->w[k].api[m * HD_APIR__COUNT + r]);
            }

    gauge_family(b, snap, HD_G_SUBSCRIPTIONS, "herald_subscriptions",
                 "Client channel subscriptions.");
    gauge_family(b, snap, HD_G_OVERLOADED, "herald_overloaded",
                 "1 while the worker's overload guard refuses new "
                 "connections (1013) and API requests (503), else 0.");
    gauge_family(b, snap, HD_G_CHANNELS, "herald_channels",
                 "Channels with at least one local subscriber.");
    gauge_family(b, snap, HD_G_QUEUED_BYTES, "herald_outbound_queued_bytes",
                 "Bytes queued for clients, not yet written to their "
                 "sockets (sampled every second).");
    gauge_family(b, snap, HD_G_QUEUE_MAX_BYTES,
                 "herald_outbound_queue_max_bytes",
                 "The largest single client's outbound queue in the worker "
                 "(sampled every second): a slow consumer in the making.");

    process_families(b, snap, proc);
}

/* ---- JSON ---- */

static void
append_json(hd_strbuf_t *b, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(12));
    json_decref(j);
    if (s != NULL) {
        hd_strbuf_puts(b, s);
        free(s);
    }
    hd_strbuf_putc(b, '\n');
}

static double
age(double now, uint64_t start_ns)
{
    double a = now - (double) start_ns / 1e9;
    return a > 0 ? a : 0;
}

/* The Redis shards' names, by index (the bits of HD_G_REDIS_SHARDS_DOWN). */
static struct {
    char **name;
    size_t n;
} shards;

void
hd_render_set_shard_names(const char *const *names, size_t n)
{
    for (size_t i = 0; i < shards.n; i++)
        free(shards.name[i]);
    free(shards.name);
    shards.name = n ? hd_calloc(n, sizeof(char *)) : NULL;
    shards.n = n;
    for (size_t i = 0; i < n; i++)
        shards.name[i] = hd_strdup(names[i]);
}

static json_t *
shards_down_json(int64_t mask)
{
    json_t *a = json_array();
    for (size_t i = 0; i < shards.n && i < 64; i++)
        if (mask & ((int64_t) 1 << i))
            json_array_append_new(a, json_string(shards.name[i]));
    return a;
}

int
hd_render_health(hd_strbuf_t *b, const hd_shm_snapshot_t *snap, double now)
{
    return hd_render_health_as(b, snap, now, NULL);
}

int
hd_render_health_as(hd_strbuf_t *b, const hd_shm_snapshot_t *snap, double now,
                    const char *override)
{
    unsigned alive = 0;
    bool     redis_down = false;
    int64_t  down_mask = 0;
    json_t  *redis = json_array();
    for (size_t k = 0; k < snap->nworkers; k++) {
        const hd_shm_worker_snap_t *w = &snap->w[k];
        if (w->running == 0)
            continue;
        alive++;
        bool up = w->gauge[HD_G_REDIS_UP] > 0;
        /* up but refusing writes (maxmemory, a replica): publishes fail,
         * so the node is degraded even though the connections are fine */
        bool writable = w->gauge[HD_G_REDIS_REFUSING] == 0;
        redis_down |= !up || !writable;
        json_t *jw = json_pack("{s:I,s:b,s:b}", "worker",
                               (json_int_t) w->worker_id, "up", up, "writable",
                               writable);
        if (shards.n > 1 && w->gauge[HD_G_REDIS_SHARDS_DOWN] != 0)
            json_object_set_new(
                jw, "shards_down",
                shards_down_json(w->gauge[HD_G_REDIS_SHARDS_DOWN]));
        down_mask |= w->gauge[HD_G_REDIS_SHARDS_DOWN];
        json_array_append_new(redis, jw);
    }
    const char *status = alive == 0                    ? "failing"
        : alive < snap->workers_expected || redis_down ? "degraded"
                                                       : "ok";
    if (override != NULL)
        status = override; /* a stop in progress: fails whatever else */
    json_t *j = json_pack("{s:s,s:{s:I,s:I},s:o,s:I,s:f}", "status", status,
                          "workers", "alive", (json_int_t) alive, "expected",
                          (json_int_t) snap->workers_expected, "redis", redis,
                          "generation", (json_int_t) snap->generation,
                          "uptime_seconds", age(now, snap->start_ns));
    if (shards.n > 1) {
        /* which shard is down: only its channels fail (503) */
        json_t *js = json_array();
        for (size_t i = 0; i < shards.n && i < 64; i++)
            json_array_append_new(js,
                                  json_pack("{s:s,s:b}", "name", shards.name[i],
                                            "up",
                                            !(down_mask & ((int64_t) 1 << i))));
        json_object_set_new(j, "redis_shards", js);
    }
    append_json(b, j);
    return strcmp(status, "ok") == 0 ? 200 : 503;
}

static json_t *
hist_json(const hd_shm_hist_snap_t *h)
{
    uint64_t n = hist_total(h);
    return json_pack(
        "{s:I,s:f,s:f,s:f,s:f,s:f}", "count", (json_int_t) n, "sum",
        (double) h->sum_ns / 1e9, "p50",
        hd_hist_quantile_ns(h->bucket, h->max_ns, 0.50) / 1e9, "p95",
        hd_hist_quantile_ns(h->bucket, h->max_ns, 0.95) / 1e9, "p99",
        hd_hist_quantile_ns(h->bucket, h->max_ns, 0.99) / 1e9, "max",
        (double) h->max_ns / 1e9);
}

static json_t *
rejected_json(const uint64_t *rej)
{
    json_t  *o = json_object();
    uint64_t total = 0;
    for (unsigned r = 0; r < HD_REJ__COUNT; r++) {
        json_object_set_new(o, reject_names[r],
                            json_integer((json_int_t) rej[r]));
        total += rej[r];
    }
    json_object_set_new(o, "total", json_integer((json_int_t) total));
    return o;
}

static json_t *
disconnects_json(const uint64_t *disc)
{
    /* for people: only the codes that happened */
    json_t *o = json_object();
    char    key[16];
    for (unsigned i = 0; i < HD_DISC__COUNT; i++) {
        if (disc[i] == 0)
            continue;
        if (i < HD_DISC_KNOWN)
            snprintf(key, sizeof(key), "%u", hd_disconnect_code(i));
        else
            snprintf(key, sizeof(key), "other");
        json_object_set_new(o, key, json_integer((json_int_t) disc[i]));
    }
    return o;
}

static json_t *
counters_json(const uint64_t *ctr)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "received",
                     (json_int_t) ctr[HD_C_MSG_RECEIVED], "published",
                     (json_int_t) ctr[HD_C_MSG_PUBLISHED], "delivered",
                     (json_int_t) ctr[HD_C_MSG_DELIVERED], "bytes_received",
                     (json_int_t) ctr[HD_C_BYTES_RECEIVED], "bytes_sent",
                     (json_int_t) ctr[HD_C_BYTES_SENT], "command_errors",
                     (json_int_t) ctr[HD_C_ERRORS], "redis_reconnects",
                     (json_int_t) ctr[HD_C_REDIS_RECONNECTS]);
}

static json_t *
proc_json(const hd_procinfo_t *pi)
{
    json_t *o = json_object();
    if (pi == NULL || !pi->ok)
        return o;
    json_object_set_new(o, "rss_bytes",
                        json_integer((json_int_t) pi->rss_bytes));
    json_object_set_new(o, "cpu_seconds", json_real((double) pi->cpu_ns / 1e9));
    if (pi->open_fds >= 0)
        json_object_set_new(o, "open_fds", json_integer(pi->open_fds));
    return o;
}

void
hd_render_stats(hd_strbuf_t *b, const hd_shm_snapshot_t *snap,
                const hd_render_proc_t *proc, double now, const char *version)
{
    /* node totals */
    hd_shm_worker_snap_t *node = hd_calloc(1, sizeof(*node));
    int64_t               active = 0;
    json_t               *workers = json_array();
    for (size_t k = 0; k < snap->nworkers; k++) {
        const hd_shm_worker_snap_t *w = &snap->w[k];
        for (unsigned i = 0; i < HD_C__COUNT; i++)
            node->ctr[i] += w->ctr[i];
        for (unsigned i = 0; i < HD_REJ__COUNT; i++)
            node->rej[i] += w->rej[i];
        for (unsigned i = 0; i < HD_DISC__COUNT; i++)
            node->disc[i] += w->disc[i];
        for (unsigned h = 0; h < HD_H__COUNT; h++) {
            for (unsigned i = 0; i < HD_HIST_BUCKETS; i++)
                node->hist[h].bucket[i] += w->hist[h].bucket[i];
            node->hist[h].sum_ns += w->hist[h].sum_ns;
            if (w->hist[h].max_ns > node->hist[h].max_ns)
                node->hist[h].max_ns = w->hist[h].max_ns;
        }
        active += w->gauge[HD_G_CONNECTIONS];

        json_t *lat = json_object();
        for (unsigned h = 0; h < HD_H__COUNT; h++)
            json_object_set_new(lat, hist_defs[h].key, hist_json(&w->hist[h]));
        json_t *jw = json_pack(
            "{s:I,s:I,s:I,s:{s:I,s:I,s:I,s:o},s:o,s:o,s:o,s:b}", "worker",
            (json_int_t) w->worker_id, "processes", (json_int_t) w->live,
            "running", (json_int_t) w->running, "connections", "active",
            (json_int_t) w->gauge[HD_G_CONNECTIONS], "peak",
            (json_int_t) w->conn_peak, "accepted",
            (json_int_t) w->ctr[HD_C_CONN_ACCEPTED], "rejected",
            rejected_json(w->rej), "messages", counters_json(w->ctr),
            "disconnects", disconnects_json(w->disc), "latency", lat,
            "redis_up", w->gauge[HD_G_REDIS_UP] > 0);
        json_object_set_new(jw, "subscriptions",
                            json_integer(w->gauge[HD_G_SUBSCRIPTIONS]));
        json_object_set_new(jw, "channels",
                            json_integer(w->gauge[HD_G_CHANNELS]));
        json_array_append_new(workers, jw);
    }

    json_t *lat = json_object();
    for (unsigned h = 0; h < HD_H__COUNT; h++)
        json_object_set_new(lat, hist_defs[h].key, hist_json(&node->hist[h]));

    json_t *procs = json_array();
    json_t *pm = proc_json(proc != NULL ? &proc->master : NULL);
    json_object_set_new(pm, "process", json_string("master"));
    json_array_append_new(procs, pm);
    for (size_t i = 0; i < snap->nslots; i++) {
        const hd_shm_slot_snap_t *s = &snap->slot[i];
        json_t *p = proc_json(proc != NULL ? &proc->slot[s->idx] : NULL);
        json_object_set_new(p, "process", json_string("worker"));
        json_object_set_new(p, "worker", json_integer(s->worker_id));
        json_object_set_new(p, "pid", json_integer(s->pid));
        json_object_set_new(p, "state", json_string(state_names[s->state]));
        json_object_set_new(p, "generation", json_integer(s->generation));
        json_array_append_new(procs, p);
    }
    if (proc != NULL && proc->master.ok)
        json_object_set_new(pm, "pid", json_integer(proc->master.pid));

    json_t *j = json_pack(
        "{s:s,s:f,s:I,s:{s:I,s:I,s:I,s:I},s:I,"
        "s:{s:I,s:I,s:I,s:o},s:o,s:o,s:o,s:o,"
        "s:{s:I,s:I,s:f},s:f,s:o}",
        "version", version != NULL ? version : "", "uptime_seconds",
        age(now, snap->start_ns), "generation", (json_int_t) snap->generation,
        "workers", "expected", (json_int_t) snap->workers_expected, "starting",
        (json_int_t) snap->slots_by_state[HD_SLOT_STARTING], "running",
        (json_int_t) snap->slots_by_state[HD_SLOT_RUNNING], "draining",
        (json_int_t) snap->slots_by_state[HD_SLOT_DRAINING], "worker_restarts",
        (json_int_t) snap->restarts, "connections", "active",
        (json_int_t) active, "peak", (json_int_t) snap->node_conn_peak,
        "accepted", (json_int_t) node->ctr[HD_C_CONN_ACCEPTED], "rejected",
        rejected_json(node->rej), "messages", counters_json(node->ctr),
        "disconnects", disconnects_json(node->disc), "latency", lat,
        "per_worker", workers, "reloads", "success",
        (json_int_t) snap->reloads_ok, "failure",
        (json_int_t) snap->reloads_failed, "last_success_timestamp",
        (double) (snap->last_reload_ok_ns > snap->start_ns
                      ? snap->last_reload_ok_ns
                      : snap->start_ns)
            / 1e9,
        "retired_cpu_seconds", (double) snap->retired_cpu_ns / 1e9, "processes",
        procs);
    hd_free(node);
    append_json(b, j);
}
