/*
 * Rendering: the Prometheus exposition (families, escaping, cumulative
 * buckets, _count == +Inf, trailing newline, promtool), /health verdicts
 * and the /stats JSON.
 */
#include <check.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <unistd.h>

#include "hd_render.h"
#include "hd_shm.h"

static hd_shm_t        *shm;
static hd_render_proc_t proc;
static int              slot_a, slot_b, slot_c;

/*
 * Worker 0 (running), worker 1 (running, Redis down), worker 5 (scaled
 * away, retired with CPU); expected 2.
 */
static void
setup(void)
{
    ck_assert_int_eq(hd_shm_create(&shm), 0);
    hd_shm_note_start(shm, 2);
    hd_shm_set_start_time(shm, 1700000000.25);

    slot_a = hd_shm_slot_acquire(shm, 0, 1);
    hd_shm_slot_set_pid(shm, slot_a, 111);
    hd_shm_slot_set_state(hd_shm_slot(shm, slot_a), HD_SLOT_RUNNING);
    hd_metrics_bind(hd_shm_slot(shm, slot_a));
    hd_ctr_add(HD_C_CONN_ACCEPTED, 10);
    hd_gauge_set(HD_G_CONNECTIONS, 4);
    hd_gauge_set(HD_G_REDIS_UP, 1);
    hd_reject_inc(HD_REJ_IP_LIMIT);
    hd_disconnect_inc(1001);
    hd_disconnect_inc(3999);
    hd_hist_observe(HD_H_HANDSHAKE, 10000);          /* le 1e-05 */
    hd_hist_observe(HD_H_HANDSHAKE, 10001);          /* le 2.5e-05 */
    hd_hist_observe(HD_H_HANDSHAKE, 2000000);        /* le 0.0025 */
    hd_hist_observe(HD_H_HANDSHAKE, 20000000000ull); /* +Inf only */
    for (int i = 0; i < 100; i++)
        hd_hist_observe(HD_H_DELIVERY, 1000000);

    slot_b = hd_shm_slot_acquire(shm, 1, 1);
    hd_shm_slot_set_pid(shm, slot_b, 222);
    hd_shm_slot_set_state(hd_shm_slot(shm, slot_b), HD_SLOT_RUNNING);
    hd_metrics_bind(hd_shm_slot(shm, slot_b));
    hd_ctr_add(HD_C_CONN_ACCEPTED, 1);
    hd_gauge_set(HD_G_CONNECTIONS, 1);
    hd_gauge_set(HD_G_REDIS_UP, 0);

    slot_c = hd_shm_slot_acquire(shm, 5, 1);
    hd_metrics_bind(hd_shm_slot(shm, slot_c));
    hd_ctr_add(HD_C_MSG_PUBLISHED, 77);
    hd_gauge_set(HD_G_CONNECTIONS, 50);
    hd_metrics_bind(NULL);
    hd_shm_slot_retire(shm, slot_c, 3.5);

    memset(&proc, 0, sizeof(proc));
    proc.master = (hd_procinfo_t){ .ok = true,
                                   .pid = 100,
                                   .rss_bytes = 4096000,
                                   .cpu_ns = 2500000000ull,
                                   .open_fds = 12,
                                   .max_fds = 1024 };
    proc.slot[slot_a] = (hd_procinfo_t){ .ok = true,
                                         .pid = 111,
                                         .rss_bytes = 1000,
                                         .cpu_ns = 1000000000,
                                         .open_fds = 7,
                                         .max_fds = 65536 };
    proc.slot[slot_b] = (hd_procinfo_t){ .ok = true,
                                         .pid = 222,
                                         .rss_bytes = 2000,
                                         .cpu_ns = 10000000,
                                         .open_fds = 8,
                                         .max_fds = -1 };
}

static void
teardown(void)
{
    hd_shm_destroy(shm);
}

static char *
render(const char *version)
{
    hd_shm_snapshot_t s;
    hd_strbuf_t       b = HD_STRBUF_INIT;
    hd_shm_snapshot_take(shm, &s);
    hd_render_metrics(&b, &s, &proc, version);
    hd_shm_snapshot_free(&s);
    return b.p;
}

/* Value of the sample line that starts with "series " (exact series). */
static bool
sample(const char *text, const char *series, double *v)
{
    size_t n = strlen(series);
    for (const char *p = text; p != NULL && *p;) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            *v = strtod(p + n + 1, NULL);
            return true;
        }
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return false;
}

static double
must(const char *text, const char *series)
{
    double v = -1;
    ck_assert_msg(sample(text, series, &v), "no series %s", series);
    return v;
}

/* Family a sample line belongs to, given the TYPE seen for it. */
static void
family_of(const char *line, char *out, size_t cap)
{
    size_t n = strcspn(line, "{ ");
    snprintf(out, cap, "%.*s", (int) n, line);
}

START_TEST(test_structure)
{
    char  *t = render("0.1.0");
    size_t len = strlen(t);
    ck_assert_uint_gt(len, 0);
    ck_assert_int_eq(t[len - 1], '\n');

    /* HELP and TYPE once per family, before its samples; a family's
     * samples are contiguous */
    char   seen[128][96];
    size_t nseen = 0;
    char   cur[96] = "", curtype[16] = "";
    char  *copy = strdup(t), *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char name[96];
        if (strncmp(line, "# HELP ", 7) == 0) {
            family_of(line + 7, name, sizeof(name));
            for (size_t i = 0; i < nseen; i++)
                ck_assert_msg(strcmp(seen[i], name) != 0, "HELP twice: %s",
                              name);
            ck_assert_uint_lt(nseen, 128);
            snprintf(seen[nseen++], sizeof(seen[0]), "%s", name);
            snprintf(cur, sizeof(cur), "%s", name);
            curtype[0] = '\0';
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            family_of(line + 7, name, sizeof(name));
            ck_assert_str_eq(name, cur);
            ck_assert_str_eq(curtype, "");
            snprintf(curtype, sizeof(curtype), "%s", line + 8 + strlen(name));
            continue;
        }
        ck_assert_msg(line[0] != '#', "stray comment %s", line);
        family_of(line, name, sizeof(name));
        ck_assert_str_ne(curtype, "");
        if (strcmp(curtype, "histogram") == 0) {
            size_t cl = strlen(cur);
            ck_assert_msg(strncmp(name, cur, cl) == 0
                              && (strcmp(name + cl, "_bucket") == 0
                                  || strcmp(name + cl, "_sum") == 0
                                  || strcmp(name + cl, "_count") == 0),
                          "%s outside its family %s", name, cur);
        } else {
            ck_assert_str_eq(name, cur);
        }
        if (strcmp(curtype, "counter") == 0)
            ck_assert(strstr(name, "_total") != NULL);
    }
    free(copy);

    /* the catalogue of the issue, all there */
    static const char *const catalogue[] = {
        "herald_build_info",
        "herald_start_time_seconds",
        "herald_workers",
        "herald_worker_restarts_total",
        "herald_config_reloads_total",
        "herald_config_last_reload_success_timestamp_seconds",
        "herald_connections",
        "herald_connections_accepted_total",
        "herald_connections_rejected_total",
        "herald_handshake_duration_seconds",
        "herald_messages_received_total",
        "herald_messages_published_total",
        "herald_messages_delivered_total",
        "herald_bytes_received_total",
        "herald_bytes_sent_total",
        "herald_delivery_latency_seconds",
        "herald_redis_command_duration_seconds",
        "herald_redis_up",
        "herald_redis_reconnects_total",
        "herald_disconnects_total",
        "herald_process_resident_memory_bytes",
        "herald_process_cpu_seconds_total",
        "herald_process_open_fds",
        "herald_process_max_fds",
    };
    for (size_t i = 0; i < sizeof(catalogue) / sizeof(catalogue[0]); i++) {
        bool found = false;
        for (size_t k = 0; k < nseen; k++)
            found |= strcmp(seen[k], catalogue[i]) == 0;
        ck_assert_msg(found, "missing family %s", catalogue[i]);
    }
    free(t);
}
END_TEST

START_TEST(test_escaping)
{
    char *t = render("1.0\"x\\y\nz");
    ck_assert_ptr_nonnull(
        strstr(t, "herald_build_info{version=\"1.0\\\"x\\\\y\\nz\"} 1\n"));
    free(t);

    hd_strbuf_t b = HD_STRBUF_INIT;
    hd_render_label_value(&b, "a\\b\"c\nd");
    ck_assert_str_eq(b.p, "a\\\\b\\\"c\\nd");
    hd_strbuf_free(&b);
}
END_TEST

START_TEST(test_histogram)
{
    char       *t = render("v");
    const char *bk =
        "herald_handshake_duration_seconds_bucket{worker=\"0\",le=\"";
    char   series[256];
    double prev = 0;
    for (unsigned j = 0; j <= HD_HIST_LE_COUNT; j++) {
        snprintf(series, sizeof(series), "%s%s\"}", bk, hd_hist_le_str(j));
        double v = must(t, series);
        ck_assert_double_ge(v, prev); /* cumulative */
        prev = v;
    }
    snprintf(series, sizeof(series), "%s1e-05\"}", bk);
    ck_assert_double_eq(must(t, series), 1);
    snprintf(series, sizeof(series), "%s2.5e-05\"}", bk);
    ck_assert_double_eq(must(t, series), 2);
    snprintf(series, sizeof(series), "%s0.001\"}", bk);
    ck_assert_double_eq(must(t, series), 2);
    snprintf(series, sizeof(series), "%s0.0025\"}", bk);
    ck_assert_double_eq(must(t, series), 3);
    snprintf(series, sizeof(series), "%s10\"}", bk);
    ck_assert_double_eq(must(t, series), 3);
    snprintf(series, sizeof(series), "%s+Inf\"}", bk);
    ck_assert_double_eq(must(t, series), 4);
    ck_assert_double_eq(
        must(t, "herald_handshake_duration_seconds_count{worker=\"0\"}"), 4);
    ck_assert_double_eq_tol(
        must(t, "herald_handshake_duration_seconds_sum{worker=\"0\"}"),
        20.002020001, 1e-9);
    ck_assert_double_eq(
        must(t, "herald_delivery_latency_seconds_count{worker=\"0\"}"), 100);
    ck_assert_double_eq(
        must(t, "herald_delivery_latency_seconds_sum{worker=\"0\"}"), 0.1);
    /* _count == +Inf for every histogram series of every worker */
    for (const char *p = t; (p = strstr(p, "_count{")) != NULL; p++) {
        const char *ls = p;
        while (ls > t && ls[-1] != '\n')
            ls--;
        char name[160], inf[200];
        snprintf(name, sizeof(name), "%.*s", (int) (p - ls), ls);
        const char *lab = p + 7;
        size_t      ll = strcspn(lab, "}");
        snprintf(inf, sizeof(inf), "%s_bucket{%.*s,le=\"+Inf\"}", name,
                 (int) ll, lab);
        char cnt[200];
        snprintf(cnt, sizeof(cnt), "%s_count{%.*s}", name, (int) ll, lab);
        ck_assert_double_eq(must(t, inf), must(t, cnt));
    }
    free(t);
}
END_TEST

START_TEST(test_values)
{
    char *t = render("v");
    ck_assert_double_eq(must(t, "herald_connections{worker=\"0\"}"), 4);
    ck_assert_double_eq(must(t, "herald_connections{worker=\"1\"}"), 1);
    double v;
    /* worker 5 was scaled away: counters remain, gauges do not */
    ck_assert(!sample(t, "herald_connections{worker=\"5\"}", &v));
    ck_assert(!sample(t, "herald_redis_up{worker=\"5\"}", &v));
    ck_assert_double_eq(
        must(t, "herald_messages_published_total{worker=\"5\"}"), 77);
    ck_assert_double_eq(
        must(t, "herald_connections_accepted_total{worker=\"0\"}"), 10);
    ck_assert_double_eq(must(t,
                             "herald_connections_rejected_total{worker=\"0\","
                             "reason=\"ip_limit\"}"),
                        1);
    ck_assert_double_eq(must(t,
                             "herald_connections_rejected_total{worker=\"1\","
                             "reason=\"tenant_limit\"}"),
                        0);
    ck_assert_double_eq(
        must(t, "herald_disconnects_total{worker=\"0\",code=\"1001\"}"), 1);
    ck_assert_double_eq(
        must(t, "herald_disconnects_total{worker=\"0\",code=\"other\"}"), 1);
    ck_assert_double_eq(must(t, "herald_redis_up{worker=\"1\"}"), 0);
    ck_assert_double_eq(must(t, "herald_workers{state=\"running\"}"), 2);
    ck_assert_double_eq(must(t, "herald_workers{state=\"starting\"}"), 0);
    ck_assert_double_eq(must(t, "herald_start_time_seconds"), 1700000000.25);
    ck_assert_double_eq(
        must(t, "herald_config_last_reload_success_timestamp_seconds"),
        1700000000.25);
    ck_assert_double_eq(
        must(t, "herald_config_reloads_total{result=\"failure\"}"), 0);
    /* process series */
    ck_assert_double_eq(
        must(t, "herald_process_resident_memory_bytes{process=\"master\"}"),
        4096000);
    ck_assert_double_eq(
        must(t, "herald_process_cpu_seconds_total{process=\"master\"}"), 2.5);
    ck_assert_double_eq(
        must(t, "herald_process_open_fds{process=\"worker\",worker=\"1\"}"), 8);
    ck_assert_double_eq(must(t, "herald_process_max_fds{process=\"master\"}"),
                        1024);
    ck_assert_double_eq(must(t,
                             "herald_process_cpu_seconds_total{process="
                             "\"worker\",worker=\"0\"}"),
                        1);
    /* retired CPU keeps the counter of a gone worker */
    ck_assert_double_eq(must(t,
                             "herald_process_cpu_seconds_total{process="
                             "\"worker\",worker=\"5\"}"),
                        3.5);
    ck_assert(!sample(
        t,
        "herald_process_resident_memory_bytes{process=\"worker\",worker=\"5\"}",
        &v));
    free(t);
}
END_TEST

static bool
have_promtool(void)
{
    return system("command -v promtool >/dev/null 2>&1") == 0;
}

/* promtool check metrics: parse + lint must pass (skipped without it). */
START_TEST(test_promtool)
{
    if (!have_promtool()) {
        fprintf(stderr, "promtool not found: skipping the promtool check\n");
        return;
    }
    char *t = render("0.1.0-dev+\"quoted\"");
    FILE *p = popen("promtool check metrics", "w");
    ck_assert_ptr_nonnull(p);
    fwrite(t, 1, strlen(t), p);
    int st = pclose(p);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "promtool check metrics failed (status %d)", st);
    free(t);

    /* and the empty segment (no worker at all) */
    hd_shm_t *empty;
    ck_assert_int_eq(hd_shm_create(&empty), 0);
    hd_shm_snapshot_t s;
    hd_strbuf_t       b = HD_STRBUF_INIT;
    hd_shm_snapshot_take(empty, &s);
    hd_render_metrics(&b, &s, NULL, "0.1.0");
    p = popen("promtool check metrics", "w");
    fwrite(b.p, 1, b.len, p);
    st = pclose(p);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "promtool on the empty segment failed");
    hd_strbuf_free(&b);
    hd_shm_snapshot_free(&s);
    hd_shm_destroy(empty);
}
END_TEST

/* A deliberately broken exposition must fail promtool: the check is real. */
START_TEST(test_promtool_catches)
{
    if (!have_promtool())
        return;
    FILE *p = popen("promtool check metrics 2>/dev/null", "w");
    fputs("# TYPE x counter\nx{a=\"1} 1\n", p);
    int st = pclose(p);
    ck_assert(!(WIFEXITED(st) && WEXITSTATUS(st) == 0));
}
END_TEST

static json_t *
health(hd_shm_t *m, int *code)
{
    hd_shm_snapshot_t s;
    hd_strbuf_t       b = HD_STRBUF_INIT;
    hd_shm_snapshot_take(m, &s);
    *code = hd_render_health(&b, &s, 1700000100.25);
    hd_shm_snapshot_free(&s);
    json_error_t err;
    json_t      *j = json_loads(b.p, 0, &err);
    ck_assert_msg(j != NULL, "bad JSON: %s", err.text);
    hd_strbuf_free(&b);
    return j;
}

START_TEST(test_health)
{
    int code;
    /* worker 1 has Redis down: degraded */
    json_t *j = health(shm, &code);
    ck_assert_int_eq(code, 503);
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")),
                     "degraded");
    json_t *w = json_object_get(j, "workers");
    ck_assert_int_eq(json_integer_value(json_object_get(w, "alive")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(w, "expected")), 2);
    json_t *r = json_object_get(j, "redis");
    ck_assert_uint_eq(json_array_size(r), 2);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_array_get(r, 1), "worker")), 1);
    ck_assert(json_is_false(json_object_get(json_array_get(r, 1), "up")));
    ck_assert(json_is_true(json_object_get(json_array_get(r, 0), "up")));
    ck_assert_double_eq_tol(
        json_number_value(json_object_get(j, "uptime_seconds")), 100, 1e-6);
    ck_assert(json_is_integer(json_object_get(j, "generation")));
    json_decref(j);

    /* Redis back: ok */
    hd_metrics_bind(hd_shm_slot(shm, slot_b));
    hd_gauge_set(HD_G_REDIS_UP, 1);
    j = health(shm, &code);
    ck_assert_int_eq(code, 200);
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "ok");
    json_decref(j);

    /* worker 1 drains (not serving): fewer than expected */
    hd_shm_slot_set_state(hd_shm_slot(shm, slot_b), HD_SLOT_DRAINING);
    j = health(shm, &code);
    ck_assert_int_eq(code, 503);
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")),
                     "degraded");
    json_decref(j);

    /* nobody runs: failing */
    hd_shm_slot_set_state(hd_shm_slot(shm, slot_a), HD_SLOT_STARTING);
    j = health(shm, &code);
    ck_assert_int_eq(code, 503);
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")),
                     "failing");
    ck_assert_uint_eq(json_array_size(json_object_get(j, "redis")), 0);
    json_decref(j);
}
END_TEST

START_TEST(test_stats)
{
    hd_shm_snapshot_t s;
    hd_strbuf_t       b = HD_STRBUF_INIT;
    hd_shm_sample(shm);
    hd_shm_snapshot_take(shm, &s);
    hd_render_stats(&b, &s, &proc, 1700000100.25, "0.1.0");
    hd_shm_snapshot_free(&s);
    json_error_t err;
    json_t      *j = json_loads(b.p, 0, &err);
    ck_assert_msg(j != NULL, "bad JSON: %s", err.text);

    json_t *c = json_object_get(j, "connections");
    ck_assert_int_eq(json_integer_value(json_object_get(c, "active")), 5);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "peak")), 5);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "accepted")), 11);
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(c, "rejected"), "ip_limit")),
                     1);
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(c, "rejected"), "total")),
                     1);
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(j, "messages"), "published")),
                     77);
    json_t *d = json_object_get(json_object_get(j, "latency"), "delivery");
    ck_assert_int_eq(json_integer_value(json_object_get(d, "count")), 100);
    ck_assert_double_eq_tol(json_number_value(json_object_get(d, "p50")), 0.001,
                            0.001 * 0.035);
    ck_assert_double_eq_tol(json_number_value(json_object_get(d, "p99")), 0.001,
                            0.001 * 0.035);
    ck_assert_double_eq(json_number_value(json_object_get(d, "max")), 0.001);
    json_t *pw = json_object_get(j, "per_worker");
    ck_assert_uint_eq(json_array_size(pw), 3);
    json_t *w5 = json_array_get(pw, 2);
    ck_assert_int_eq(json_integer_value(json_object_get(w5, "worker")), 5);
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(w5, "connections"), "peak")),
                     50);
    ck_assert_int_eq(json_integer_value(json_object_get(w5, "processes")), 0);
    json_t *procs = json_object_get(j, "processes");
    ck_assert_uint_eq(json_array_size(procs), 3); /* master + 2 live */
    ck_assert_str_eq(
        json_string_value(json_object_get(json_array_get(procs, 0), "process")),
        "master");
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_array_get(procs, 0), "rss_bytes")),
                     4096000);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_array_get(procs, 1), "pid")),
        111);
    ck_assert_double_eq(
        json_number_value(json_object_get(j, "retired_cpu_seconds")), 3.5);
    ck_assert_ptr_null(json_object_get(j, "tenants"));
    json_decref(j);
    hd_strbuf_free(&b);
}
END_TEST

/* The /proc reader against this very process. */
START_TEST(test_procinfo_self)
{
    hd_procinfo_t pi;
    ck_assert_int_eq(hd_procinfo_read(getpid(), &pi), 0);
    ck_assert(pi.ok);
    ck_assert_int_eq(pi.pid, getpid());
    ck_assert_uint_gt(pi.rss_bytes, 100 * 1024);
    ck_assert_int_ge(pi.open_fds, 3);
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur == RLIM_INFINITY)
        ck_assert_int_eq(pi.max_fds, -1);
    else
        ck_assert_int_eq(pi.max_fds, (int64_t) rl.rlim_cur);
    int           fd = dup(0);
    hd_procinfo_t pi2;
    hd_procinfo_read(getpid(), &pi2);
    ck_assert_int_eq(pi2.open_fds, pi.open_fds + 1);
    close(fd);
    /* burn a little CPU: the counter moves */
    volatile uint64_t x = 0;
    for (uint64_t i = 0; i < 400000000ull && pi2.cpu_ns == pi.cpu_ns; i++) {
        x += i;
        if ((i & 0xfffff) == 0)
            hd_procinfo_read(getpid(), &pi2);
    }
    (void) x;
    ck_assert_uint_gt(pi2.cpu_ns, pi.cpu_ns);
    ck_assert_int_lt(hd_procinfo_read(0, &pi), 0);
    ck_assert(!pi.ok);
    ck_assert_int_lt(hd_procinfo_read(0x7ffffff0, &pi), 0);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("render");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_structure);
    tcase_add_test(tc, test_escaping);
    tcase_add_test(tc, test_histogram);
    tcase_add_test(tc, test_values);
    tcase_add_test(tc, test_promtool);
    tcase_add_test(tc, test_promtool_catches);
    tcase_add_test(tc, test_health);
    tcase_add_test(tc, test_stats);
    tcase_add_test(tc, test_procinfo_self);
    suite_add_tcase(s, tc);
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
