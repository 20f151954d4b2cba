/*
 * JWK Set source in the master; see hd_jwks.h.
 *
 * The fetch is libcurl's multi interface driven by libevent: curl tells
 * us which sockets to watch (sock_cb) and when to call it back
 * (timer_cb); we turn those into events on the master's base and feed
 * readiness back with curl_multi_socket_action(). Nothing here blocks.
 *
 * Workers get the set as a memfd sealed against writes, so a worker can
 * never see it change under its read, and the master never writes into
 * memory a worker maps. Each new set is a new memfd; the master keeps the
 * current one to hand to workers that start later.
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "hd_alloc.h"
#include "hd_conf.h"
#include "hd_ctl.h"
#include "hd_jwks.h"
#include "hd_jwt.h"
#include "hd_log.h"
#include "hd_master.h"
#include "hd_time.h"
#include "hd_version.h"

#define JWKS_MAX_BYTES (1024 * 1024)

enum {
    JR_OK,
    JR_FETCH,
    JR_INVALID,
    JR__N
};
static const char *const result_names[JR__N] = { "success", "fetch_error",
                                                 "invalid" };

static struct {
    struct event_base *base;
    const hd_conf_t   *conf;
    int                memfd; /* current good set; -1 none */
    char              *text;  /* its JSON, to skip unchanged refreshes */
    size_t             nkeys;
    uint64_t           count[JR__N];
    uint64_t           last_ok_ns; /* wall clock */
    uint64_t           last_try_ms;
    struct event      *refresh_ev; /* the schedule */
    bool               started;
    bool               resend; /* a worker missed the current set */

    CURLM        *multi;
    CURL         *easy; /* the fetch in progress, or NULL */
    struct event *curl_ev;
    hd_strbuf_t   body;
    bool          body_over;
} J = { .memfd = -1 };

static void fetch(void);

/* ---- handing the set to workers ------------------------------------------ */

static int
send_fd(int ctl_fd, int fd)
{
    hd_ctl_msg_t m = { .type = HD_CTL_JWKS };
    union {
        struct cmsghdr h;
        char           b[CMSG_SPACE(sizeof(int))];
    } cbuf;
    struct iovec    iov = { &m, sizeof(m) };
    struct msghdr   mh = { .msg_iov = &iov,
                           .msg_iovlen = 1,
                           .msg_control = cbuf.b,
                           .msg_controllen = sizeof(cbuf.b) };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

    memset(&cbuf, 0, sizeof(cbuf));
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    if (sendmsg(ctl_fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        return -errno;
    return 0;
}

void
hd_jwks_worker_ready(int ctl_fd)
{
    int rc;

    if (J.memfd >= 0 && ctl_fd >= 0 && (rc = send_fd(ctl_fd, J.memfd)) < 0) {
        /* the next refresh sends the set again, even when unchanged */
        J.resend = true;
        hd_log_warn("JWK Set to a worker: sendmsg() failed: %s; sending it "
                    "again at the next refresh",
                    strerror(-rc));
    }
}

static void
broadcast(void)
{
    J.resend = false;
    for (hd_proc_t *p = hd_m.procs; p != NULL; p = p->next)
        if (p->state != HD_PROC_DRAINING)
            hd_jwks_worker_ready(p->ctl_fd);
}

/* A sealed memfd holding text; -errno on failure. */
static int
make_memfd(const char *text, size_t len)
{
    int    fd = memfd_create("herald-jwks", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    bool   sealable = fd >= 0;
    size_t off = 0;

    /* a seccomp filter without memfd_create: an unlinked file in /tmp
     * (never written again after this, so no seal is needed) */
    if (fd < 0)
        fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            goto fail;
        off += (size_t) w;
    }
    if (sealable
        && fcntl(fd, F_ADD_SEALS,
                 F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL)
            < 0)
        goto fail;
    return fd;
fail:
    off = (size_t) errno;
    close(fd);
    return -(int) off;
}

/*
 * A candidate set from src (for messages): validate, install, count. The
 * last good set stays on any failure.
 */
static void
offer(const char *src, const char *text, size_t len)
{
    hd_jwt_keyset_t *ks = hd_jwt_keyset_new();
    char             err[160];
    size_t           skipped = 0;
    int              n, fd;

    n = hd_jwt_keyset_add_jwks(ks, text, len, &skipped, err, sizeof(err));
    hd_jwt_keyset_free(ks);
    if (n < 0) {
        J.count[JR_INVALID]++;
        hd_log_error("JWK Set from %s refused (keeping the last good set of "
                     "%zu keys): %s",
                     src, J.nkeys, err);
        return;
    }
    J.count[JR_OK]++;
    J.last_ok_ns = hd_wall_ns();
    if (J.text != NULL && strlen(J.text) == len
        && memcmp(J.text, text, len) == 0) {
        if (J.resend) /* a worker missed it */
            broadcast();
        return; /* unchanged: the workers have it */
    }
    fd = make_memfd(text, len);
    if (fd < 0) {
        hd_log_error("JWK Set: memfd_create() failed: %s", strerror(-fd));
        return;
    }
    if (J.memfd >= 0)
        close(J.memfd);
    J.memfd = fd;
    free(J.text);
    J.text = hd_strndup(text, len);
    J.nkeys = (size_t) n;
    hd_log_info("JWK Set from %s: %d keys%s", src, n,
                skipped ? " (some skipped: not for signatures or not "
                          "supported)"
                        : "");
    broadcast();
}

/* ---- the file ----------------------------------------------------------------- */

static void
read_file(void)
{
    int     fd = open(J.conf->auth_jwks_file, O_RDONLY | O_CLOEXEC);
    char   *buf;
    size_t  n = 0;
    ssize_t r = 0;

    if (fd < 0) {
        J.count[JR_FETCH]++;
        hd_log_error("JWK Set file %s: %s (keeping the last good set)",
                     J.conf->auth_jwks_file, strerror(errno));
        return;
    }
    buf = hd_malloc(JWKS_MAX_BYTES + 1);
    while (n <= JWKS_MAX_BYTES
           && (r = read(fd, buf + n, JWKS_MAX_BYTES + 1 - n)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        n += (size_t) r;
    }
    close(fd);
    if (r < 0 || n > JWKS_MAX_BYTES) {
        J.count[JR_FETCH]++;
        hd_log_error("JWK Set file %s: %s (keeping the last good set)",
                     J.conf->auth_jwks_file,
                     r < 0 ? strerror(errno) : "larger than 1 MiB");
    } else {
        offer(J.conf->auth_jwks_file, buf, n);
    }
    free(buf);
}

/* ---- the URL: libcurl multi on libevent -------------------------------------- */

static void
fetch_done(CURLcode res)
{
    long code = 0;

    curl_easy_getinfo(J.easy, CURLINFO_RESPONSE_CODE, &code);
    curl_multi_remove_handle(J.multi, J.easy);
    curl_easy_cleanup(J.easy);
    J.easy = NULL;
    if (res != CURLE_OK || code != 200 || J.body_over) {
        J.count[JR_FETCH]++;
        hd_log_error("JWK Set fetch from %s failed: %s (keeping the last "
                     "good set of %zu keys)",
                     J.conf->auth_jwks_url,
                     J.body_over           ? "reply larger than 1 MiB"
                         : res != CURLE_OK ? curl_easy_strerror(res)
                                           : "HTTP status not 200",
                     J.nkeys);
        if (res == CURLE_OK && code != 200)
            hd_log_error("JWK Set fetch: HTTP status %ld", code);
    } else {
        offer(J.conf->auth_jwks_url, J.body.p != NULL ? J.body.p : "",
              J.body.len);
    }
    hd_strbuf_free(&J.body);
}

static void
check_done(void)
{
    CURLMsg *msg;
    int      left;

    while ((msg = curl_multi_info_read(J.multi, &left)) != NULL)
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == J.easy)
            fetch_done(msg->data.result);
}

static void
sock_ev_cb(evutil_socket_t fd, short kind, void *arg)
{
    int running, action = 0;
    (void) arg;

    if (kind & EV_READ)
        action |= CURL_CSELECT_IN;
    if (kind & EV_WRITE)
        action |= CURL_CSELECT_OUT;
    curl_multi_socket_action(J.multi, fd, action, &running);
    check_done();
}

static int
sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *sockp)
{
    struct event *ev = sockp;
    short         kind = EV_PERSIST;
    (void) e;
    (void) userp;

    if (what == CURL_POLL_REMOVE) {
        if (ev != NULL) {
            event_free(ev);
            curl_multi_assign(J.multi, s, NULL);
        }
        return 0;
    }
    if (what & CURL_POLL_IN)
        kind |= EV_READ;
    if (what & CURL_POLL_OUT)
        kind |= EV_WRITE;
    if (ev != NULL) {
        event_del(ev);
        event_assign(ev, J.base, s, kind, sock_ev_cb, NULL);
    } else {
        ev = event_new(J.base, s, kind, sock_ev_cb, NULL);
        curl_multi_assign(J.multi, s, ev);
    }
    event_add(ev, NULL);
    return 0;
}

static void
curl_timer_ev_cb(evutil_socket_t fd, short kind, void *arg)
{
    int running;
    (void) fd;
    (void) kind;
    (void) arg;

    curl_multi_socket_action(J.multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done();
}

static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    struct timeval tv;
    (void) m;
    (void) userp;

    if (timeout_ms < 0) {
        evtimer_del(J.curl_ev);
        return 0;
    }
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    evtimer_add(J.curl_ev, &tv);
    return 0;
}

static size_t
write_cb(char *p, size_t size, size_t n, void *userp)
{
    (void) userp;
    if (J.body.len + n > JWKS_MAX_BYTES) {
        J.body_over = true;
        return 0; /* curl aborts the transfer */
    }
    hd_strbuf_append(&J.body, p, n);
    return size * n;
}

static void
start_url_fetch(void)
{
    if (J.easy != NULL)
        return; /* one at a time */
    J.easy = curl_easy_init();
    if (J.easy == NULL) {
        J.count[JR_FETCH]++;
        hd_log_error("JWK Set fetch: curl_easy_init() failed");
        return;
    }
    hd_strbuf_reset(&J.body);
    J.body_over = false;
    curl_easy_setopt(J.easy, CURLOPT_URL, J.conf->auth_jwks_url);
    curl_easy_setopt(J.easy, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(J.easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(J.easy, CURLOPT_TIMEOUT_MS,
                     (long) J.conf->auth_jwks_timeout_ms);
    curl_easy_setopt(J.easy, CURLOPT_CONNECTTIMEOUT_MS,
                     (long) J.conf->auth_jwks_timeout_ms);
    curl_easy_setopt(J.easy, CURLOPT_USERAGENT, "herald/" HD_VERSION);
    curl_easy_setopt(J.easy, CURLOPT_WRITEFUNCTION, write_cb);
    if (J.conf->auth_jwks_ca_file != NULL)
        curl_easy_setopt(J.easy, CURLOPT_CAINFO, J.conf->auth_jwks_ca_file);
    curl_multi_add_handle(J.multi, J.easy);
}

/* ---- schedule ------------------------------------------------------------------ */

static void
schedule(uint64_t ms)
{
    struct timeval tv = { (time_t) (ms / 1000),
                          (suseconds_t) (ms % 1000) * 1000 };

    evtimer_add(J.refresh_ev, &tv); /* replaces a pending one */
}

static void
fetch(void)
{
    J.last_try_ms = hd_mono_ms();
    if (J.conf->auth_jwks_url != NULL)
        start_url_fetch();
    else if (J.conf->auth_jwks_file != NULL)
        read_file();
    schedule((uint64_t) J.conf->auth_jwks_refresh_s * 1000);
}

static void
refresh_ev_cb(evutil_socket_t fd, short kind, void *arg)
{
    (void) fd;
    (void) kind;
    (void) arg;
    fetch();
}

void
hd_jwks_stale(void)
{
    uint64_t now = hd_mono_ms(), min;

    if (!J.started
        || (J.conf->auth_jwks_url == NULL && J.conf->auth_jwks_file == NULL))
        return;
    min = (uint64_t) J.conf->auth_jwks_min_refresh_s * 1000;
    if (now - J.last_try_ms >= min) {
        hd_log_info("a token names an unknown kid: refreshing the JWK Set");
        fetch();
    } else {
        /* rate-limited: fetch at the earliest allowed time (fetch()
         * puts the regular schedule back) */
        schedule(J.last_try_ms + min - now);
    }
}

/* ---- life cycle ------------------------------------------------------------------ */

void
hd_jwks_start(struct event_base *base, const hd_conf_t *conf)
{
    J.base = base;
    J.conf = conf;
    if (conf->auth_jwks_url == NULL && conf->auth_jwks_file == NULL)
        return;
    if (!J.started) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        J.multi = curl_multi_init();
        curl_multi_setopt(J.multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
        curl_multi_setopt(J.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
        J.curl_ev = evtimer_new(base, curl_timer_ev_cb, NULL);
        J.refresh_ev = evtimer_new(base, refresh_ev_cb, NULL);
        J.started = true;
    }
    fetch();
}

void
hd_jwks_reconf(const hd_conf_t *conf)
{
    bool was = J.conf != NULL
        && (J.conf->auth_jwks_url != NULL || J.conf->auth_jwks_file != NULL);

    if (J.easy != NULL) { /* its URL may be gone */
        curl_multi_remove_handle(J.multi, J.easy);
        curl_easy_cleanup(J.easy);
        J.easy = NULL;
    }
    J.conf = conf;
    if (conf->auth_jwks_url == NULL && conf->auth_jwks_file == NULL) {
        if (was) {
            /* workers drop the set's keys (they keep the config's) */
            hd_log_info("JWK Set no longer configured");
            offer("the configuration", "{\"keys\":[]}", 11);
        }
        if (J.refresh_ev != NULL)
            evtimer_del(J.refresh_ev);
        return;
    }
    hd_jwks_start(J.base, conf);
}

void
hd_jwks_stop(void)
{
    if (!J.started)
        return;
    if (J.easy != NULL) {
        curl_multi_remove_handle(J.multi, J.easy);
        curl_easy_cleanup(J.easy);
        J.easy = NULL;
    }
    curl_multi_cleanup(J.multi);
    event_free(J.curl_ev);
    event_free(J.refresh_ev);
    curl_global_cleanup();
    hd_strbuf_free(&J.body);
    free(J.text);
    if (J.memfd >= 0)
        close(J.memfd);
    memset(&J, 0, sizeof(J));
    J.memfd = -1;
}

void
hd_jwks_render(hd_strbuf_t *b)
{
    hd_strbuf_puts(b,
                   "# HELP herald_jwks_refresh_total JWK Set loads and "
                   "fetches by result.\n"
                   "# TYPE herald_jwks_refresh_total counter\n");
    for (int i = 0; i < JR__N; i++)
        hd_strbuf_printf(b, "herald_jwks_refresh_total{result=\"%s\"} %llu\n",
                         result_names[i], (unsigned long long) J.count[i]);
    hd_strbuf_printf(b,
                     "# HELP herald_jwks_keys Keys in the JWK Set in use.\n"
                     "# TYPE herald_jwks_keys gauge\n"
                     "herald_jwks_keys %zu\n",
                     J.nkeys);
    hd_strbuf_printf(
        b,
        "# HELP herald_jwks_last_success_timestamp_seconds When the JWK Set "
        "was last loaded or fetched successfully (0: never).\n"
        "# TYPE herald_jwks_last_success_timestamp_seconds gauge\n"
        "herald_jwks_last_success_timestamp_seconds %.3f\n",
        (double) J.last_ok_ns / 1e9);
}
