/* herald-bench: GET /metrics and sum the interesting series. */
#include "hb_scrape.h"

#include "hd_alloc.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int
hb_parse_http_url(const char *url, char *host, size_t hostcap, int *port,
                  char *path, size_t pathcap)
{
    const char *p;

    if (strncmp(url, "http://", 7) == 0)
        p = url + 7;
    else if (strncmp(url, "ws://", 5) == 0)
        p = url + 5;
    else
        return -1;
    const char *slash = strchr(p, '/');
    const char *hend = slash ? slash : p + strlen(p);
    const char *colon = memchr(p, ':', (size_t) (hend - p));
    const char *nend = colon ? colon : hend;
    if (nend == p || (size_t) (nend - p) >= hostcap)
        return -1;
    memcpy(host, p, (size_t) (nend - p));
    host[nend - p] = '\0';
    *port = 80;
    if (colon) {
        char *e;
        long  v = strtol(colon + 1, &e, 10);
        if (e != hend || v < 1 || v > 65535)
            return -1;
        *port = (int) v;
    }
    if (snprintf(path, pathcap, "%s", slash ? slash : "/") >= (int) pathcap)
        return -1;
    return 0;
}

static long long
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for fd to be ready for events until deadline; 0 ok, -1 timeout. */
static int
wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return -1;
        struct pollfd pfd = { .fd = fd, .events = events };
        int           r = poll(&pfd, 1, (int) left);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

char *
hb_http_fetch(const char *host, int port, const char *req, size_t reqlen,
              int timeout_ms, size_t *outlen, char *err, size_t errlen)
{
    struct addrinfo  hints = { .ai_family = AF_UNSPEC,
                               .ai_socktype = SOCK_STREAM };
    struct addrinfo *ai = NULL;
    char             portstr[16];
    char            *buf = NULL;
    size_t           len = 0, cap = 0;
    int              fd = -1;
    long long        deadline = now_ms() + timeout_ms;

    snprintf(portstr, sizeof(portstr), "%d", port);
    if (getaddrinfo(host, portstr, &hints, &ai) != 0 || ai == NULL) {
        snprintf(err, errlen, "cannot resolve %s", host);
        goto fail;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket() failed: %s", strerror(errno));
        goto fail;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect() failed: %s", strerror(errno));
        goto fail;
    }
    if (wait_fd(fd, POLLOUT, deadline) < 0) {
        snprintf(err, errlen, "connect to %s:%d timed out", host, port);
        goto fail;
    }
    int       soerr = 0;
    socklen_t sl = sizeof(soerr);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr != 0) {
        snprintf(err, errlen, "connect to %s:%d failed: %s", host, port,
                 strerror(soerr));
        goto fail;
    }
    for (size_t off = 0; off < reqlen;) {
        ssize_t n = write(fd, req + off, reqlen - off);
        if (n > 0) {
            off += (size_t) n;
        } else if (n < 0 && errno == EAGAIN) {
            if (wait_fd(fd, POLLOUT, deadline) < 0) {
                snprintf(err, errlen, "write timed out");
                goto fail;
            }
        } else if (n < 0 && errno != EINTR) {
            snprintf(err, errlen, "write() failed: %s", strerror(errno));
            goto fail;
        }
    }
    for (;;) {
        if (cap - len < 65536) {
            cap = cap ? cap * 2 : 262144;
            buf = hd_realloc(buf, cap);
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n > 0) {
            len += (size_t) n;
        } else if (n == 0) {
            break;
        } else if (errno == EAGAIN) {
            if (wait_fd(fd, POLLIN, deadline) < 0) {
                snprintf(err, errlen, "read timed out");
                goto fail;
            }
        } else if (errno != EINTR) {
            snprintf(err, errlen, "read() failed: %s", strerror(errno));
            goto fail;
        }
    }
    buf[len] = '\0';
    close(fd);
    freeaddrinfo(ai);
    *outlen = len;
    return buf;

fail:
    if (fd >= 0)
        close(fd);
    if (ai)
        freeaddrinfo(ai);
    free(buf);
    return NULL;
}

/* Undo chunked transfer coding in place; returns the new length. */
static size_t
dechunk(char *b, size_t len)
{
    size_t in = 0, out = 0;

    while (in < len) {
        char         *e;
        unsigned long n = strtoul(b + in, &e, 16);
        char         *nl = memchr(b + in, '\n', len - in);
        if (nl == NULL || e == b + in)
            break;
        in = (size_t) (nl - b) + 1;
        if (n == 0 || in + n > len)
            break;
        memmove(b + out, b + in, n);
        out += n;
        in += n;
        if (in < len && b[in] == '\r')
            in++;
        if (in < len && b[in] == '\n')
            in++;
    }
    return out;
}

/* Does the line start with metric name followed by '{' or ' '? */
static int
is_metric(const char *line, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len > n && memcmp(line, name, n) == 0
        && (line[n] == '{' || line[n] == ' ');
}

void
hb_scrape_parse(const char *text, size_t len, hb_scrape_t *out)
{
    static const struct {
        const char *name;
        size_t      off;
    } sums[] = {
        { "herald_process_cpu_seconds_total",
          offsetof(hb_scrape_t, cpu_seconds) },
        { "herald_process_resident_memory_bytes",
          offsetof(hb_scrape_t, rss_bytes) },
        { "herald_messages_delivered_total", offsetof(hb_scrape_t, delivered) },
        { "herald_messages_published_total", offsetof(hb_scrape_t, published) },
        { "herald_messages_received_total", offsetof(hb_scrape_t, received) },
        { "herald_connections", offsetof(hb_scrape_t, connections) },
        { "herald_connections_accepted_total",
          offsetof(hb_scrape_t, accepted) },
        { "herald_connections_rejected_total",
          offsetof(hb_scrape_t, rejected) },
        { "herald_bytes_sent_total", offsetof(hb_scrape_t, bytes_sent) },
    };
    const char *p = text, *end = text + len;

    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t) (end - p));
        if (eol == NULL)
            eol = end;
        size_t ll = (size_t) (eol - p);
        if (ll > 0 && p[0] != '#') {
            /* the value follows the last space (no timestamps from herald) */
            const char *sp = NULL;
            const char *lb = memchr(p, '}', ll);
            const char *from = lb ? lb : p;
            sp = memchr(from, ' ', (size_t) (eol - from));
            if (sp != NULL) {
                char   tmp[64];
                size_t vl = (size_t) (eol - sp - 1);
                if (vl >= sizeof(tmp))
                    vl = sizeof(tmp) - 1;
                memcpy(tmp, sp + 1, vl);
                tmp[vl] = '\0';
                char *sp2 = strchr(tmp, ' '); /* drop a timestamp */
                if (sp2)
                    *sp2 = '\0';
                double v = strtod(tmp, NULL);
                for (size_t i = 0; i < sizeof(sums) / sizeof(sums[0]); i++) {
                    if (is_metric(p, ll, sums[i].name)) {
                        *(double *) ((char *) out + sums[i].off) += v;
                        if (i == 0 && memmem(p, ll, "process=\"master\"", 16))
                            out->cpu_master += v;
                        break;
                    }
                }
                if (is_metric(p, ll, "herald_workers")
                    && memmem(p, ll, "state=\"running\"", 15))
                    out->workers += v;
            }
        }
        p = eol + 1;
    }
}

int
hb_scrape(const char *url, int timeout_ms, hb_scrape_t *out, char *err,
          size_t errlen)
{
    char            host[256], path[1024], req[1400];
    int             port;
    size_t          len = 0;
    struct timespec ts;

    memset(out, 0, sizeof(*out));
    if (hb_parse_http_url(url, host, sizeof(host), &port, path, sizeof(path))
        < 0) {
        snprintf(err, errlen, "bad metrics URL %s", url);
        return -1;
    }
    int rl = snprintf(req, sizeof(req),
                      "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n"
                      "Accept: text/plain\r\n\r\n",
                      path, host, port);
    clock_gettime(CLOCK_REALTIME, &ts);
    out->wall = (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
    char *resp = hb_http_fetch(host, port, req, (size_t) rl, timeout_ms, &len,
                               err, errlen);
    if (resp == NULL)
        return -1;
    if (len < 12 || strncmp(resp, "HTTP/1.", 7) != 0
        || strncmp(resp + 9, "200", 3) != 0) {
        snprintf(err, errlen, "GET %s: %.40s", url, resp);
        free(resp);
        return -1;
    }
    char *body = strstr(resp, "\r\n\r\n");
    if (body == NULL) {
        snprintf(err, errlen, "GET %s: no header end", url);
        free(resp);
        return -1;
    }
    *body = '\0';
    body += 4;
    size_t blen = len - (size_t) (body - resp);
    /* header names are case-insensitive: look in a lower-cased copy */
    for (char *h = resp; *h; h++)
        if (*h >= 'A' && *h <= 'Z')
            *h = (char) (*h - 'A' + 'a');
    if (strstr(resp, "transfer-encoding: chunked") != NULL)
        blen = dechunk(body, blen);
    hb_scrape_parse(body, blen, out);
    out->ok = 1;
    free(resp);
    return 0;
}
