/*
 * Rendering of the shared-memory metrics: the Prometheus text exposition
 * (GET /metrics), the /health JSON and the /stats JSON.
 *
 * Every function here is a pure function of its arguments (a snapshot
 * taken with hd_shm_snapshot_take(), the process figures, the clock value
 * and the version string), so unit tests drive them without a master.
 * Output is appended to b; nothing else is allocated that outlives a call.
 * docs/metrics.md describes every series.
 */
#ifndef HD_RENDER_H
#define HD_RENDER_H

#include "hd_procinfo.h"
#include "hd_shm.h"
#include "hd_strbuf.h"

#define HD_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/*
 * Prometheus text format 0.0.4: HELP and TYPE once per family, label
 * values escaped, cumulative histogram buckets with _count equal to the
 * +Inf bucket, ends with a newline. proc may be NULL (no process series
 * except the retired CPU); only proc->slot[] entries of snap's live slots
 * are read.
 */
void hd_render_metrics(hd_strbuf_t *b, const hd_shm_snapshot_t *snap,
                       const hd_render_proc_t *proc, const char *version);

/*
 * /health verdict: "failing" when no worker is RUNNING, "degraded" when
 * fewer workers run than expected or a running worker's herald_redis_up
 * is 0, else "ok". Returns the HTTP status: 200 for ok, 503 otherwise.
 */
int hd_render_health(hd_strbuf_t *b, const hd_shm_snapshot_t *snap, double now);
/* as hd_render_health, but a non-NULL override ("draining" during a stop)
 * is the status, and the answer is 503 */
int hd_render_health_as(hd_strbuf_t *b, const hd_shm_snapshot_t *snap,
                        double now, const char *override);
/* The Redis shard names /health reports (redis.shards; copied). With more
 * than one, /health lists "redis_shards" and each worker's "shards_down". */
void hd_render_set_shard_names(const char *const *names, size_t n);

/* /stats JSON for people (see docs/metrics.md for the keys). */
void hd_render_stats(hd_strbuf_t *b, const hd_shm_snapshot_t *snap,
                     const hd_render_proc_t *proc, double now,
                     const char *version);

/* Append s as a Prometheus label value (escapes \, " and newline). */
void hd_render_label_value(hd_strbuf_t *b, const char *s);

/* Lowercase name of a reject reason ("node_limit", ...). */
const char *hd_reject_reason_name(enum hd_reject_reason r);

#endif
