/*
 * Unit tests for master/hd_supervisor.c: the slot state machine driven
 * through fake OS operations (hd_sup_ops.h). No process is forked, no
 * socket opened: fork returns a made-up pid, the clock and the timers are
 * the test's, and every call that reaches the "OS" is written to a log
 * that the tests read back in order (steering before drains, drains
 * after READY, and so on).
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../../master/hd_supervisor.c"

hd_master_t hd_m;

/* hd_admin.c is not linked: the supervisor only tells it about reloads,
 * restarts and stops */
int
hd_admin_reconfigure(const hd_conf_t *conf)
{
    (void) conf;
    return 0;
}

void
hd_admin_stop(void)
{
}

void
hd_admin_event(const char *event, const char *detail)
{
    (void) event;
    (void) detail;
}

void
hd_admin_event_exit(unsigned worker_id, int pid, int status)
{
    (void) worker_id;
    (void) pid;
    (void) status;
}

/* ---- the fake OS -------------------------------------------------------- */

struct hd_sup_timer {
    hd_sup_timer_cb *cb;
    void            *arg;
    bool             armed;
    uint64_t         due;
};

#define MAX_TIMERS 64
#define MAX_EXITS  16

static struct {
    char            log[16384]; /* "op ...;" entries, in call order */
    uint64_t        now;
    pid_t           next_pid;
    int             next_fd;
    int             fork_fail;     /* fail this many forks */
    int             listen_fail;   /* listen() returns this when < 0 */
    int             ctl_send_fail; /* fail this many sends */
    hd_sup_timer_t *timers[MAX_TIMERS];
    struct {
        pid_t pid;
        int   status;
    } exits[MAX_EXITS];
    int  nexits;
    bool loop_broken;
    int  open_listeners;
} F;

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
logf_(const char *fmt, ...)
{
    size_t  n = strlen(F.log);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(F.log + n, sizeof(F.log) - n, fmt, ap);
    va_end(ap);
}

static pid_t
f_fork(const hd_worker_args_t *a, int master_fd)
{
    (void) master_fd;
    if (F.fork_fail > 0) {
        F.fork_fail--;
        logf_("fork-fail w%u;", a->worker_id);
        return -EAGAIN;
    }
    logf_("fork w%u pid %d fd %d;", a->worker_id, (int) F.next_pid,
          a->nlisten > 0 ? a->listen_fds[0] : -1);
    return F.next_pid++;
}

static int
f_kill(pid_t pid, int sig)
{
    logf_("kill %d %d;", (int) pid, sig);
    return 0;
}

static pid_t
f_reap(int *status, double *cpu)
{
    if (F.nexits == 0)
        return 0;
    F.nexits--;
    *status = F.exits[F.nexits].status;
    *cpu = 0.5;
    return F.exits[F.nexits].pid;
}

static int
f_ctl_pair(int sv[2])
{
    sv[0] = F.next_fd++;
    sv[1] = F.next_fd++;
    return 0;
}

static int
f_ctl_send(int fd, const hd_ctl_msg_t *m)
{
    if (F.ctl_send_fail > 0) {
        F.ctl_send_fail--;
        logf_("send-fail fd %d;", fd);
        return -EAGAIN;
    }
    logf_("send fd %d type %u code %u flags %u grace %u;", fd, m->type,
          m->close_code, m->flags, m->grace_ms);
    return 0;
}

static int
f_ctl_send_log(int fd, const hd_ctl_log_msg_t *m)
{
    logf_("logmsg fd %d level %u;", fd, m->level);
    return 0;
}

static void *
f_ctl_watch(int fd, hd_sup_timer_cb *cb, void *arg)
{
    (void) cb;
    (void) arg;
    return (void *) (intptr_t) fd;
}

static void
f_ctl_unwatch(void *w)
{
    (void) w;
}

static int
f_ctl_recv(int fd, hd_ctl_msg_t *m)
{
    (void) fd;
    (void) m;
    return 0;
}

static int
f_listen(const hd_listen_t *l, const char **what)
{
    (void) what;
    if (F.listen_fail < 0)
        return F.listen_fail;
    logf_("listen %d fd %d;", l->port, F.next_fd);
    F.open_listeners++;
    return F.next_fd++;
}

static void
f_close(int fd)
{
    if (fd < 1000) /* listeners are 100.., control sockets 1000.. */
        F.open_listeners--;
    if (fd < 1000)
        logf_("close %d;", fd);
}

static int
f_queued(int fd)
{
    (void) fd;
    return 0;
}

static int
f_steer(int fd, const uint16_t *idx, unsigned n)
{
    logf_("steer fd %d [", fd);
    for (unsigned i = 0; i < n; i++)
        logf_("%s%u", i ? "," : "", idx[i]);
    logf_("];");
    return 0;
}

static int
f_unsteer(int fd)
{
    logf_("unsteer fd %d;", fd);
    return 0;
}

static uint64_t
f_now(void)
{
    return F.now;
}

static hd_sup_timer_t *
f_timer_new(hd_sup_timer_cb *cb, void *arg)
{
    hd_sup_timer_t *t = calloc(1, sizeof(*t));

    t->cb = cb;
    t->arg = arg;
    for (int i = 0; i < MAX_TIMERS; i++)
        if (F.timers[i] == NULL) {
            F.timers[i] = t;
            return t;
        }
    ck_abort_msg("too many timers");
    return NULL;
}

static void
f_timer_add(hd_sup_timer_t *t, uint64_t ms)
{
    t->armed = true;
    t->due = F.now + ms;
}

static void
f_timer_del(hd_sup_timer_t *t)
{
    t->armed = false;
}

static void
f_timer_free(hd_sup_timer_t *t)
{
    for (int i = 0; i < MAX_TIMERS; i++)
        if (F.timers[i] == t)
            F.timers[i] = NULL;
    free(t);
}

static void
f_loop_break(void)
{
    F.loop_broken = true;
}

static const hd_sup_ops_t fake_ops = {
    .fork_worker = f_fork,
    .kill = f_kill,
    .reap = f_reap,
    .ctl_pair = f_ctl_pair,
    .ctl_send = f_ctl_send,
    .ctl_send_log = f_ctl_send_log,
    .ctl_watch = f_ctl_watch,
    .ctl_unwatch = f_ctl_unwatch,
    .ctl_recv = f_ctl_recv,
    .listen = f_listen,
    .close = f_close,
    .queued = f_queued,
    .steer = f_steer,
    .unsteer = f_unsteer,
    .now_ms = f_now,
    .timer_new = f_timer_new,
    .timer_add = f_timer_add,
    .timer_del = f_timer_del,
    .timer_free = f_timer_free,
    .loop_break = f_loop_break,
};

/* Move the clock and fire what is due, in due order. */
static void
advance(uint64_t ms)
{
    uint64_t end = F.now + ms;

    for (;;) {
        hd_sup_timer_t *next = NULL;
        for (int i = 0; i < MAX_TIMERS; i++) {
            hd_sup_timer_t *t = F.timers[i];
            if (t != NULL && t->armed && t->due <= end
                && (next == NULL || t->due < next->due))
                next = t;
        }
        if (next == NULL)
            break;
        if (next->due > F.now)
            F.now = next->due;
        next->armed = false;
        next->cb(next->arg);
    }
    F.now = end;
}

static bool
timer_armed_for(hd_sup_timer_cb *cb, uint64_t *due)
{
    for (int i = 0; i < MAX_TIMERS; i++)
        if (F.timers[i] != NULL && F.timers[i]->cb == cb
            && F.timers[i]->armed) {
            if (due != NULL)
                *due = F.timers[i]->due;
            return true;
        }
    return false;
}

static void
clear_log(void)
{
    F.log[0] = '\0';
}

/* The offset of s in the log (ck fails when absent). */
static size_t
at(const char *s)
{
    const char *p = strstr(F.log, s);

    ck_assert_msg(p != NULL, "\"%s\" not in the log: %s", s, F.log);
    return (size_t) (p - F.log);
}

static bool
logged(const char *s)
{
    return strstr(F.log, s) != NULL;
}

static hd_proc_t *
proc_of(pid_t pid)
{
    for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next)
        if (p->pid == pid)
            return p;
    return NULL;
}

static void
ready(pid_t pid)
{
    hd_ctl_msg_t m = { .type = HD_CTL_READY };
    hd_proc_t   *p = proc_of(pid);

    ck_assert_msg(p != NULL, "no process %d", (int) pid);
    ctl_msg(p, &m);
}

static void
dies(pid_t pid, int status)
{
    F.exits[F.nexits].pid = pid;
    F.exits[F.nexits].status = status;
    F.nexits++;
    hd_sup_reap();
}

#define EXITED(code)  ((code) << 8)
#define SIGNALED(sig) (sig)

static char conf_path[64];

static void
write_conf(const char *json)
{
    FILE *f = fopen(conf_path, "w");

    ck_assert_ptr_nonnull(f);
    fputs(json, f);
    fclose(f);
}

#define CONF(workers, extra)                                              \
    "{\"workers\": " #workers ", \"auth\": {\"allow_anonymous\": true}, " \
    "\"log\": {\"level\": \"error\"}, "                                   \
    "\"listen\": {\"address\": \"127.0.0.1\", \"port\": 18080}" extra "}"

static void
setup(void)
{
    hd_conf_errors_t errs = { 0 };
    int              fd;

    memset(&F, 0, sizeof(F));
    F.next_pid = 1001;
    F.next_fd = 100;
    memset(&hd_m, 0, sizeof(hd_m));
    hd_log_configure(HD_LOG_ERROR, HD_LOG_FMT_AUTO, NULL);
    snprintf(conf_path, sizeof(conf_path), "/tmp/hd_sup_test_XXXXXX");
    fd = mkstemp(conf_path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    write_conf(CONF(2, ""));
    ck_assert_int_eq(hd_conf_load(conf_path, &hd_m.conf, &errs), 0);
    /* the stop tests drain at once; drain_health_stop sets its own */
    hd_m.conf->drain_health_ms = 0;
    ck_assert_int_eq(hd_shm_create(&hd_m.shm), 0);
    hd_sup_set_ops(&fake_ops);
    /* listeners open at 100.., control sockets must not look like them */
    F.next_fd = 100;
}

static void
teardown(void)
{
    hd_m.stopping = true;
    hd_sup_close_listeners();
    for (int i = 0; i < MAX_TIMERS; i++)
        if (F.timers[i] != NULL)
            f_timer_free(F.timers[i]);
    hd_shm_destroy(hd_m.shm);
    hd_conf_free(hd_m.conf);
    unlink(conf_path);
}

/* control sockets get fds from 1000 so f_close() tells them apart */
static void
start(void)
{
    ck_assert_int_eq(hd_sup_start(), 0);
}

static int
ctl_pair_high(int sv[2])
{
    static int next = 1000;
    sv[0] = next++;
    sv[1] = next++;
    return 0;
}

static hd_sup_ops_t ops_high;

static void
setup_high(void)
{
    setup();
    ops_high = fake_ops;
    ops_high.ctl_pair = ctl_pair_high;
    hd_sup_set_ops(&ops_high);
}

/* ---- start, READY, steering --------------------------------------------- */

START_TEST(start_forks_each_slot_and_steers_when_ready)
{
    start();
    ck_assert_uint_eq(hd_m.nworkers, 2);
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_STARTING);
    ck_assert_int_eq(hd_m.slots[1].state, HD_WS_STARTING);
    at("listen 18080 fd 100;");
    at("listen 18080 fd 101;");
    at("fork w0 pid 1001 fd 100;");
    at("fork w1 pid 1002 fd 101;");
    ck_assert(!logged("steer"));

    clear_log();
    ready(1001);
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_RUNNING);
    /* only the slot with a running worker gets new connections */
    at("steer fd 100 [0];");
    clear_log();
    ready(1002);
    at("steer fd 101 [0,1];");
    ck_assert_int_eq(hd_m.slots[1].state, HD_WS_RUNNING);
    /* a second READY changes nothing */
    clear_log();
    ready(1002);
    ck_assert_str_eq(F.log, "");
}
END_TEST

START_TEST(start_fails_with_the_listen_error)
{
    F.listen_fail = -EADDRINUSE;
    ck_assert_int_eq(hd_sup_start(), -EADDRINUSE);
    ck_assert(!logged("fork"));
}
END_TEST

START_TEST(every_listen_address_is_steered_on_its_own)
{
    write_conf("{\"workers\": 2, \"auth\": {\"allow_anonymous\": true}, "
               "\"log\": {\"level\": \"error\"}, \"listen\": ["
               "{\"address\": \"127.0.0.1\", \"port\": 18080},"
               "{\"address\": \"127.0.0.1\", \"port\": 18081}]}");
    hd_conf_free(hd_m.conf);
    hd_m.conf = NULL;
    {
        hd_conf_errors_t errs = { 0 };
        ck_assert_int_eq(hd_conf_load(conf_path, &hd_m.conf, &errs), 0);
    }
    start();
    /* one socket per address per slot: 100, 101 (slot 0); 102, 103 */
    at("listen 18080 fd 100;listen 18081 fd 101;");
    at("listen 18080 fd 102;listen 18081 fd 103;");
    ready(1002);
    at("steer fd 102 [1];");
    at("steer fd 103 [1];");
    clear_log();
    ready(1001);
    at("steer fd 102 [0,1];");
    at("steer fd 103 [0,1];");
}
END_TEST

/* ---- crashes, backoff, respawn ------------------------------------------ */

START_TEST(crash_respawns_with_doubling_backoff)
{
    uint64_t due;
    pid_t    pid = 1003;

    start();
    ready(1001);
    ready(1002);
    clear_log();
    dies(1001, SIGNALED(SIGSEGV));
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_BACKOFF);
    ck_assert_ptr_null(hd_m.slots[0].cur);
    /* the dead slot leaves the steering until its successor is READY */
    at("steer fd 101 [1];");
    /* first respawn at once, then 100, 200, 400 ... ms */
    ck_assert(timer_armed_for(respawn_cb, &due));
    ck_assert_uint_eq(due, F.now);
    uint64_t expect[] = {
        0, 100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000
    };
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        ck_assert(timer_armed_for(respawn_cb, &due));
        ck_assert_uint_eq(due - F.now, expect[i]);
        if (expect[i] > 0) {
            advance(expect[i] - 1);
            ck_assert_int_eq(hd_m.slots[0].state, HD_WS_BACKOFF);
            advance(1);
        } else {
            advance(0);
        }
        ck_assert_int_eq(hd_m.slots[0].state, HD_WS_STARTING);
        ck_assert_int_eq(hd_m.slots[0].cur->pid, pid);
        dies(pid++, EXITED(1));
        ck_assert_int_eq(hd_m.slots[0].state, HD_WS_BACKOFF);
    }
    ck_assert_uint_ge(hd_m.slots[0].crashes, CRASH_LOOP_THRESHOLD);
    /* slot 1 never noticed */
    ck_assert_int_eq(hd_m.slots[1].state, HD_WS_RUNNING);
}
END_TEST

START_TEST(a_stable_worker_resets_the_backoff)
{
    uint64_t due;

    start();
    ready(1001);
    dies(1001, SIGNALED(SIGKILL));
    advance(0); /* 1003 */
    dies(1003, SIGNALED(SIGKILL));
    advance(100); /* 1004 */
    ready(1004);
    ck_assert_uint_eq(hd_m.slots[0].backoff_ms, 200);
    advance(STABLE_AFTER_MS);
    dies(1004, SIGNALED(SIGKILL));
    ck_assert(timer_armed_for(respawn_cb, &due));
    ck_assert_uint_eq(due, F.now); /* lived long enough: at once again */
}
END_TEST

START_TEST(fatal_exit_is_not_respawned_until_a_reload)
{
    start();
    ready(1001);
    dies(1001, EXITED(HD_EXIT_FATAL));
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_FATAL);
    ck_assert(!timer_armed_for(respawn_cb, NULL));
    advance(60000);
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_FATAL);
    ck_assert_ptr_null(proc_of(1003));

    /* a reload with nothing changed still restarts the fatal slot */
    clear_log();
    hd_sup_reload();
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_STARTING);
    at("fork w0 pid 1003 fd 100;");
    ck_assert(!logged("fork w1"));
    ready(1003);
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_RUNNING);
}
END_TEST

START_TEST(fork_failure_retries_in_a_second)
{
    F.fork_fail = 1;
    start();
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_BACKOFF);
    ck_assert_int_eq(hd_m.slots[1].state, HD_WS_STARTING);
    advance(999);
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_BACKOFF);
    advance(1);
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_STARTING);
    at("fork w0 pid 1002 fd 100;");
}
END_TEST

/* ---- reload: replace, scale --------------------------------------------- */

START_TEST(replace_drains_the_old_worker_only_when_the_new_one_is_ready)
{
    start();
    ready(1001);
    ready(1002);
    clear_log();
    write_conf(CONF(2, ", \"timeouts\": {\"connect_ms\": 5000}"));
    hd_sup_reload();
    at("fork w0 pid 1003 fd 100;");
    at("fork w1 pid 1004 fd 101;");
    ck_assert(!logged("send"));
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_STARTING);
    /* the old ones still serve their slots meanwhile */
    ck_assert_int_eq(proc_of(1001)->state, HD_PROC_RUNNING);

    clear_log();
    ready(1003);
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_RUNNING);
    ck_assert_int_eq(proc_of(1001)->state, HD_PROC_DRAINING);
    ck_assert_int_eq(proc_of(1002)->state, HD_PROC_RUNNING);
    /* same socket: the old worker stops accepting at once (no flags), its
     * successor takes the queue */
    at("type 1 code 1012 flags 0 grace 0;");
    /* and it is killed if it outlives its window */
    clear_log();
    advance(drain_window_ms() + DRAIN_KILL_GRACE_MS);
    at("kill 1001 9;");
    dies(1001, SIGNALED(SIGKILL));
    ck_assert_ptr_null(proc_of(1001));
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_RUNNING);
}
END_TEST

START_TEST(replacement_that_dies_before_ready_leaves_the_old_one_serving)
{
    start();
    ready(1001);
    ready(1002);
    write_conf(CONF(2, ", \"timeouts\": {\"connect_ms\": 5000}"));
    hd_sup_reload(); /* 1003, 1004 */
    clear_log();
    dies(1003, EXITED(1));
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_BACKOFF);
    ck_assert_int_eq(proc_of(1001)->state, HD_PROC_RUNNING);
    ck_assert(!logged("send"));
    /* the old worker still serves slot 0: it stays in the steering */
    at("steer fd 101 [0,1];");
    advance(0); /* respawn: 1005 */
    ck_assert_int_eq(hd_m.slots[0].cur->pid, 1005);
    clear_log();
    ready(1005);
    at("type 1 code 1012");
    ck_assert_int_eq(proc_of(1001)->state, HD_PROC_DRAINING);
}
END_TEST

START_TEST(two_quick_reloads_drain_the_chain_in_order)
{
    start();
    ready(1001);
    ready(1002);
    write_conf(CONF(2, ", \"timeouts\": {\"connect_ms\": 5000}"));
    hd_sup_reload(); /* 1003 replaces 1001 */
    write_conf(CONF(2, ", \"timeouts\": {\"connect_ms\": 6000}"));
    hd_sup_reload(); /* 1005 replaces 1003 */
    ck_assert_int_eq(hd_m.slots[0].cur->pid, 1005);
    /* the middle one gets READY first: it drains what it replaced */
    ready(1003);
    ck_assert_int_eq(proc_of(1001)->state, HD_PROC_DRAINING);
    ck_assert_int_eq(proc_of(1003)->state, HD_PROC_RUNNING);
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_STARTING);
    ready(1005);
    ck_assert_int_eq(proc_of(1003)->state, HD_PROC_DRAINING);
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_RUNNING);
}
END_TEST

START_TEST(replace_with_a_failing_fork_keeps_the_old_worker)
{
    start();
    ready(1001);
    ready(1002);
    write_conf(CONF(2, ", \"timeouts\": {\"connect_ms\": 5000}"));
    F.fork_fail = 1;
    hd_sup_reload();
    ck_assert_int_eq(hd_m.slots[0].cur->pid, 1001);
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_RUNNING);
    advance(2000); /* the retry timer finds the slot served: nothing */
    ck_assert_int_eq(hd_m.slots[0].cur->pid, 1001);
}
END_TEST

START_TEST(scale_up_then_down_steers_before_draining)
{
    start();
    ready(1001);
    ready(1002);
    clear_log();
    write_conf(CONF(3, ""));
    hd_sup_reload();
    ck_assert_uint_eq(hd_m.nworkers, 3);
    at("listen 18080 fd 102;");
    at("fork w2 pid 1003 fd 102;");
    ck_assert(!logged("fork w0"));
    ck_assert(!logged("send")); /* nothing else changed */
    ready(1003);
    ck_assert_int_eq(hd_m.slots[2].state, HD_WS_RUNNING);

    clear_log();
    write_conf(CONF(1, ""));
    hd_sup_reload();
    ck_assert_uint_eq(hd_m.nworkers, 1);
    ck_assert_int_eq(hd_m.slots[1].state, HD_WS_OFF);
    ck_assert_int_eq(hd_m.slots[2].state, HD_WS_OFF);
    ck_assert_int_eq(hd_m.slots[0].state, HD_WS_RUNNING);
    /* both retiring slots are out of the steering before the first drain;
     * a retiring worker keeps accepting until its queue is dry */
    size_t steer0 = at("steer fd 100 [0];");
    size_t drain = at("type 1 code 1012 flags 1 grace 2000;");
    ck_assert_uint_lt(steer0, drain);
    ck_assert_int_eq(proc_of(1002)->state, HD_PROC_DRAINING);
    ck_assert_int_eq(proc_of(1003)->state, HD_PROC_DRAINING);
    /* their sockets close only once their workers are gone */
    ck_assert(!logged("close 101;"));
    clear_log();
    dies(1002, EXITED(0));
    at("close 101;");
    ck_assert(!logged("close 102;"));
    dies(1003, EXITED(0));
    at("close 102;");
    /* a retired slot is not respawned */
    advance(60000);
    ck_assert(!logged("fork"));
}
END_TEST

START_TEST(listen_change_moves_slots_to_new_sockets)
{
    start();
    ready(1001);
    ready(1002);
    clear_log();
    write_conf("{\"workers\": 2, \"auth\": {\"allow_anonymous\": true}, "
               "\"listen\": {\"address\": \"127.0.0.1\", \"port\": 18081}}");
    hd_sup_reload();
    at("listen 18081 fd 102;");
    at("listen 18081 fd 103;");
    at("fork w0 pid 1003 fd 102;");
    clear_log();
    ready(1003);
    /* the old worker's socket has no successor: it keeps accepting */
    at("code 1012 flags 1 grace 2000;");
    at("steer fd 102 [0];");
    /* the old socket closes once its worker is gone and no fork can hold
     * a copy of it: not while worker 1's successor is still STARTING */
    clear_log();
    dies(1001, EXITED(0));
    ck_assert(!logged("close 100;"));
    ready(1004);
    at("close 100;");
    ck_assert(!logged("close 101;"));
    dies(1002, EXITED(0));
    at("close 101;");
}
END_TEST

/* ---- control channel ---------------------------------------------------- */

START_TEST(drain_retry_keeps_its_flags)
{
    start();
    ready(1001);
    ready(1002);
    write_conf(CONF(1, ""));
    F.ctl_send_fail = 1;
    clear_log();
    hd_sup_reload();
    /* the retry is the same message, flags included */
    size_t fail = at("send-fail");
    size_t sent = at("type 1 code 1012 flags 1 grace 2000;");
    ck_assert_uint_lt(fail, sent);
    ck_assert(!logged("kill"));
}
END_TEST

START_TEST(a_dead_control_socket_falls_back_to_sigterm)
{
    start();
    ready(1001);
    ready(1002);
    write_conf(CONF(1, ""));
    F.ctl_send_fail = 2;
    clear_log();
    hd_sup_reload();
    at("kill 1002 15;");
    ck_assert(!logged("type 1"));
}
END_TEST

/* ---- stop --------------------------------------------------------------- */

START_TEST(graceful_stop_drains_with_1001_and_kills_late_workers)
{
    start();
    ready(1001);
    ready(1002);
    clear_log();
    hd_sup_shutdown(false);
    ck_assert(hd_m.stopping);
    at("type 1 code 1001 flags 1");
    ck_assert(timer_armed_for(kill_cb, NULL));
    dies(1001, EXITED(0));
    ck_assert(!F.loop_broken);
    /* a stopping master respawns nothing */
    ck_assert(!timer_armed_for(respawn_cb, NULL));
    advance((uint64_t) hd_m.conf->shutdown_ms * 9 / 10);
    at("kill 1002 9;");
    dies(1002, SIGNALED(SIGKILL));
    ck_assert(F.loop_broken);
}
END_TEST

START_TEST(graceful_stop_fails_health_first_then_drains)
{
    hd_m.conf->drain_health_ms = 3000;
    start();
    ready(1001);
    ready(1002);
    ck_assert_ptr_null(hd_sup_health_override());
    clear_log();
    hd_sup_shutdown(false);
    /* phase one: /health says draining, nobody is told anything yet */
    ck_assert_str_eq(hd_sup_health_override(), "draining");
    ck_assert(!hd_m.stopping);
    ck_assert(!logged("send"));
    ck_assert(timer_armed_for(unhealthy_cb, NULL));
    /* a reload now would start workers the drain is about to stop */
    hd_sup_reload();
    ck_assert(!logged("fork"));
    advance(2999);
    ck_assert(!logged("send"));
    advance(1);
    ck_assert(hd_m.stopping);
    at("type 1 code 1001 flags 1");
    ck_assert_str_eq(hd_sup_health_override(), "draining");
    dies(1001, EXITED(0));
    dies(1002, EXITED(0));
    ck_assert(F.loop_broken);
}
END_TEST

START_TEST(second_graceful_stop_during_health_phase_is_immediate)
{
    hd_m.conf->drain_health_ms = 3000;
    start();
    ready(1001);
    ready(1002);
    hd_sup_shutdown(false);
    clear_log();
    hd_sup_shutdown(false);
    ck_assert(hd_m.immediate);
    at("kill 1001 9;");
    at("kill 1002 9;");
    ck_assert(!timer_armed_for(unhealthy_cb, NULL));
}
END_TEST

START_TEST(second_graceful_stop_is_immediate)
{
    start();
    ready(1001);
    ready(1002);
    hd_sup_shutdown(false);
    clear_log();
    hd_sup_shutdown(false);
    ck_assert(hd_m.immediate);
    at("kill 1001 9;");
    at("kill 1002 9;");
    ck_assert(!logged("send"));
}
END_TEST

START_TEST(sigterm_after_sigquit_changes_nothing)
{
    start();
    ready(1001);
    ready(1002);
    hd_sup_shutdown(true);
    ck_assert(hd_m.immediate);
    ck_assert_ptr_null(hd_m.kill_t);
    clear_log();
    hd_sup_shutdown(false); /* it used to drain again and leak a timer */
    ck_assert_str_eq(F.log, "");
    ck_assert_ptr_null(hd_m.kill_t);
    hd_sup_shutdown(true);
    ck_assert_str_eq(F.log, "");
}
END_TEST

START_TEST(reload_during_stop_is_ignored)
{
    start();
    ready(1001);
    hd_sup_shutdown(false);
    write_conf(CONF(3, ""));
    clear_log();
    hd_sup_reload();
    ck_assert_str_eq(F.log, "");
    ck_assert_uint_eq(hd_m.nworkers, 2);
}
END_TEST

START_TEST(failed_reload_keeps_everything)
{
    start();
    ready(1001);
    ready(1002);
    write_conf("{\"workers\": 0}");
    clear_log();
    hd_sup_reload();
    ck_assert(!logged("fork"));
    ck_assert(!logged("send"));
    ck_assert_uint_eq(hd_m.nworkers, 2);
    ck_assert_uint_eq(hd_m.generation, 0);
}
END_TEST

/* ---- binary upgrade ----------------------------------------------------- */

START_TEST(upgrade_waits_for_a_settled_node)
{
    start();
    ck_assert_ptr_nonnull(hd_sup_upgrade_refusal(NULL)); /* starting */
    ready(1001);
    ck_assert_ptr_nonnull(hd_sup_upgrade_refusal(NULL));
    ready(1002);
    ck_assert_ptr_null(hd_sup_upgrade_refusal(NULL));
    hd_m.upgrading = true;
    ck_assert_ptr_nonnull(hd_sup_upgrade_refusal(NULL));
    hd_m.upgrading = false;
    /* a scale-down's draining worker holds a retiring socket */
    write_conf(CONF(1, ""));
    hd_sup_reload();
    bool transient = false;
    ck_assert_str_eq(hd_sup_upgrade_refusal(&transient),
                     "a worker is starting or draining (a reload or a "
                     "respawn is in progress)");
    ck_assert(transient); /* the upgrade waits for it */
    hd_m.stopping = true;
    ck_assert_str_eq(hd_sup_upgrade_refusal(&transient), "stopping");
    ck_assert(!transient); /* refused at once */
    hd_m.stopping = false;
}
END_TEST

START_TEST(export_names_each_socket_with_its_group_index)
{
    hd_inherit_sock_t e[8];

    start();
    ready(1001);
    ready(1002);
    ck_assert_uint_eq(hd_sup_export(e, 8), 2);
    ck_assert_uint_eq(e[0].slot, 0);
    ck_assert_int_eq(e[0].fd, 100);
    ck_assert_int_eq(e[0].gidx, 0);
    ck_assert_uint_eq(e[1].slot, 1);
    ck_assert_int_eq(e[1].fd, 101);
    ck_assert_int_eq(e[1].gidx, 1);
    ck_assert_int_eq(e[1].port, 18080);
    ck_assert_str_eq(e[1].address, "127.0.0.1");
}
END_TEST

/* the new master: inherited sockets whose kernel order is not the slot
 * order (a swap-remove happened in the old master's life) */
START_TEST(adopted_sockets_are_steered_by_their_kernel_index)
{
    hd_inherit_sock_t in[2] = {
        { .slot = 0, .li = 0, .fd = 200, .gidx = 1, .port = 18080 },
        { .slot = 1, .li = 0, .fd = 201, .gidx = 0, .port = 18080 },
    };

    strcpy(in[0].address, "127.0.0.1");
    strcpy(in[1].address, "127.0.0.1");
    hd_sup_adopt(in, 2);
    start();
    ck_assert(!logged("listen")); /* nothing bound */
    at("fork w0 pid 1001 fd 200;");
    at("fork w1 pid 1002 fd 201;");
    ready(1001);
    ready(1002);
    /* slot 0 is member 1 of the group, slot 1 member 0 */
    at("steer fd 201 [1,0];");
    ck_assert(hd_sup_all_running());
}
END_TEST

START_TEST(unused_inherited_sockets_close_after_the_old_master)
{
    hd_inherit_sock_t in[3] = {
        { .slot = 0, .li = 0, .fd = 200, .gidx = 0, .port = 18080 },
        { .slot = 1, .li = 0, .fd = 201, .gidx = 1, .port = 18080 },
        { .slot = 2, .li = 0, .fd = 202, .gidx = 2, .port = 18080 },
    };

    for (int i = 0; i < 3; i++)
        strcpy(in[i].address, "127.0.0.1");
    hd_sup_adopt(in, 3); /* the config has 2 workers */
    ck_assert_uint_eq(hd_m.nspare, 1);
    start();
    ready(1001);
    ready(1002);
    /* the spare stays a member of the group: its index is still 2 */
    at("steer fd 201 [0,1];");
    ck_assert(!logged("close 202;"));
    clear_log();
    hd_sup_release_spares();
    at("close 202;");
    ck_assert_uint_eq(hd_m.nspare, 0);
}
END_TEST

START_TEST(handover_drains_without_accepting_and_never_steers)
{
    start();
    ready(1001);
    ready(1002);
    clear_log();
    hd_sup_handover(1012, 2000);
    /* flags 0: the new master's workers accept from the same queue */
    at("type 1 code 1012 flags 0");
    ck_assert(!logged("steer"));
    ck_assert(hd_m.stopping && hd_m.handed_over);
    /* a SIGTERM now changes nothing: the drain is already under way */
    clear_log();
    hd_sup_shutdown(false);
    ck_assert_str_eq(F.log, "");
    dies(1001, EXITED(0));
    ck_assert(!F.loop_broken);
    ck_assert(!timer_armed_for(respawn_cb, NULL));
    dies(1002, EXITED(0));
    ck_assert(F.loop_broken);
    ck_assert(!logged("steer"));
    ck_assert(!logged("unsteer"));
}
END_TEST

START_TEST(reload_is_refused_during_an_upgrade)
{
    start();
    ready(1001);
    ready(1002);
    hd_m.upgrading = true;
    write_conf(CONF(3, ""));
    clear_log();
    hd_sup_reload();
    ck_assert_uint_eq(hd_m.nworkers, 2);
    ck_assert(!logged("listen"));
    hd_m.upgrading = false;
}
END_TEST

static Suite *
sup_suite(void)
{
    Suite *s = suite_create("supervisor");
    TCase *tc = tcase_create("slots");

    tcase_add_checked_fixture(tc, setup_high, teardown);
    tcase_add_test(tc, start_forks_each_slot_and_steers_when_ready);
    tcase_add_test(tc, start_fails_with_the_listen_error);
    tcase_add_test(tc, every_listen_address_is_steered_on_its_own);
    tcase_add_test(tc, crash_respawns_with_doubling_backoff);
    tcase_add_test(tc, a_stable_worker_resets_the_backoff);
    tcase_add_test(tc, fatal_exit_is_not_respawned_until_a_reload);
    tcase_add_test(tc, fork_failure_retries_in_a_second);
    tcase_add_test(
        tc, replace_drains_the_old_worker_only_when_the_new_one_is_ready);
    tcase_add_test(
        tc, replacement_that_dies_before_ready_leaves_the_old_one_serving);
    tcase_add_test(tc, two_quick_reloads_drain_the_chain_in_order);
    tcase_add_test(tc, replace_with_a_failing_fork_keeps_the_old_worker);
    tcase_add_test(tc, scale_up_then_down_steers_before_draining);
    tcase_add_test(tc, listen_change_moves_slots_to_new_sockets);
    tcase_add_test(tc, drain_retry_keeps_its_flags);
    tcase_add_test(tc, a_dead_control_socket_falls_back_to_sigterm);
    tcase_add_test(tc, graceful_stop_drains_with_1001_and_kills_late_workers);
    tcase_add_test(tc, second_graceful_stop_is_immediate);
    tcase_add_test(tc, graceful_stop_fails_health_first_then_drains);
    tcase_add_test(tc, second_graceful_stop_during_health_phase_is_immediate);
    tcase_add_test(tc, sigterm_after_sigquit_changes_nothing);
    tcase_add_test(tc, reload_during_stop_is_ignored);
    tcase_add_test(tc, failed_reload_keeps_everything);
    tcase_add_test(tc, upgrade_waits_for_a_settled_node);
    tcase_add_test(tc, export_names_each_socket_with_its_group_index);
    tcase_add_test(tc, adopted_sockets_are_steered_by_their_kernel_index);
    tcase_add_test(tc, unused_inherited_sockets_close_after_the_old_master);
    tcase_add_test(tc, handover_drains_without_accepting_and_never_steers);
    tcase_add_test(tc, reload_is_refused_during_an_upgrade);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(sup_suite());
    int      failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
