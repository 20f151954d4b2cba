/*
 * herald-bench: load generator and benchmark driver for herald.
 *
 * The parent parses options, scrapes herald's /metrics, forks --procs load
 * processes (hb_load.c), paces them through the phases (connect, START,
 * the measured steps, PUBDONE/FINAL, RESULT), scrapes /metrics at every
 * window edge, merges what the children send back and prints a summary
 * table and a JSON file. It does no network I/O towards herald's public
 * port itself, so its own cost never lands in the figures.
 *
 * Exit status: 0 when every count checked out; 1 when messages were
 * missing, duplicated or misrouted, publishes went unanswered or could not
 * be sent, the server closed connections during the run, the bench saw
 * protocol errors, or more connections failed than --max-connect-fail
 * allows; 2 on a usage or setup error; 3 when the run itself broke (a load
 * process died).
 *
 * See tests/bench/README.md for the options and docs/benchmarks.md for the
 * method and the figures.
 */
#include "hb_bench.h"
#include "hb_scrape.h"

#include "hd_alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FD_RESERVE            64 /* fds a load process needs besides sockets */
#define CONN_PER_PROC_DEFAULT 15000

typedef struct child {
    pid_t          pid;
    int            fd;
    uint8_t       *buf;
    size_t         len, cap;
    int            ready, pubdone, dead;
    hb_counters_t  ready_c;
    hb_progress_t *prog; /* last progress, NULL before the first */
    int64_t       *maxoff;
    hb_result_t   *res;
} child_t;

typedef struct run {
    hb_opts_t     o;
    child_t      *kids;
    uint32_t      nkids;
    uint64_t      start_mono;
    uint64_t      next_progress;
    hb_counters_t last_prog; /* sums at the previous progress line */
    uint64_t      last_prog_ns;
    const char   *phase;
    /* scrapes: before connecting, connected, per window start/end, end */
    hb_scrape_t s_before, s_connected, s_end;
    hb_scrape_t s_win[HB_MAX_STEPS][2];
    uint64_t    t0;
    double      connect_wall_s;   /* parent's view: fork -> all READY */
    int         watch_overload;   /* during the steps */
    double      last_p99_ms;      /* delivery p99 of the last second */
    int         overload_step;    /* step stopped for overload, or -1 */
    double      overload_after_s; /* into that step */
    uint32_t    steps_done;       /* steps with a complete window */
} run_t;

static volatile sig_atomic_t stop_flag;

static void
on_signal(int sig)
{
    (void) sig;
    stop_flag = 1;
}

static uint64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static void
die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "herald-bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* ---------------------------------------------------------------- options */

/*
 * "1.5", "30s", "500ms", "2m" -> seconds. A bare number is seconds, or
 * milliseconds when bare_ms is set: the seeds' load tests give
 * TEST_DURATION in milliseconds (300000 for five minutes), and the bench
 * reads their environment. Returns -1 when s is not a duration.
 */
double
hb_parse_duration(const char *s, bool bare_ms)
{
    char  *e;
    double v;

    if (s == NULL || *s == '\0')
        return -1;
    v = strtod(s, &e);
    if (e == s || !(v >= 0) || isinf(v))
        return -1;
    if (*e == '\0')
        return bare_ms ? v / 1000 : v;
    if (strcmp(e, "s") == 0)
        return v;
    if (strcmp(e, "ms") == 0)
        return v / 1000;
    if (strcmp(e, "m") == 0)
        return v * 60;
    return -1;
}

static double
parse_dur(const char *s, const char *what, bool bare_ms)
{
    double v = hb_parse_duration(s, bare_ms);

    if (v < 0)
        die("%s: not a duration: %s", what, s);
    return v;
}

static double
parse_seconds(const char *s, const char *what)
{
    return parse_dur(s, what, false);
}

static uint32_t
parse_u32(const char *s, const char *what, uint32_t lo, uint32_t hi)
{
    char *e;
    errno = 0;
    unsigned long long v = strtoull(s, &e, 10);
    /* accept 10k / 2M for counts */
    if (*e == 'k' || *e == 'K') {
        v *= 1000;
        e++;
    } else if (*e == 'M') {
        v *= 1000000;
        e++;
    }
    if (errno || e == s || *e != '\0' || v < lo || v > hi)
        die("%s: expected an integer in %u..%u, got %s", what, lo, hi, s);
    return (uint32_t) v;
}

static void
parse_rates(hb_opts_t *o, const char *s)
{
    char *copy = hd_strdup(s), *save = NULL;

    o->nsteps = 0;
    for (char *t = strtok_r(copy, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
        char  *e;
        double v = strtod(t, &e);
        if (*e == 'k' || *e == 'K') {
            v *= 1000;
            e++;
        }
        if (e == t || *e != '\0' || v < 0 || v > 1e8)
            die("--rate: bad rate %s", t);
        if (o->nsteps == HB_MAX_STEPS)
            die("--rate: at most %d steps", HB_MAX_STEPS);
        o->rates[o->nsteps++] = v;
    }
    free(copy);
    if (o->nsteps == 0)
        die("--rate: empty");
}

static void
parse_sources(hb_opts_t *o, const char *s)
{
    char *copy = hd_strdup(s), *save = NULL;

    o->nsrc = 0;
    for (char *t = strtok_r(copy, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
        if (o->nsrc == HB_MAX_SRC)
            die("--source-addrs: at most %d addresses", HB_MAX_SRC);
        if (inet_pton(AF_INET, t, &o->src[o->nsrc]) != 1)
            die("--source-addrs: not an IPv4 address: %s", t);
        o->nsrc++;
    }
    free(copy);
}

static void
copy_opt(char *dst, size_t cap, const char *src, const char *what)
{
    if (strlen(src) >= cap)
        die("%s: too long", what);
    strcpy(dst, src);
}

static void
usage(FILE *f)
{
    fprintf(
        f,
        "Usage: herald-bench [options]\n"
        "       herald-bench kernel [--help]      raw loopback write() probe\n"
        "       herald-bench --self-test\n"
        "\n"
        "Target:\n"
        "  --url URL               ws://host:port/path (env SOCKET_URL; "
        "ws://127.0.0.1:8080/)\n"
        "  --secret S              HS256 secret for the connect tokens\n"
        "  --metrics-url URL|none  herald admin /metrics "
        "(http://127.0.0.1:9090/metrics)\n"
        "Shape:\n"
        "  -c, --connections N     subscriber connections (env "
        "MAX_CONNECTIONS; 1000)\n"
        "  --channels N            channels (1)\n"
        "  --subs-per-conn N       subscriptions per connection, 0 = idle (1)\n"
        "  --spread rr|uniform     channel choice: round-robin or uniform "
        "random (rr)\n"
        "  --publishers N          publisher connections (1; 0 = no "
        "publishing)\n"
        "  --rate R[,R2,...]       total publishes/s, one step each (env "
        "EVENTS_PER_SECOND; 1000)\n"
        "  --payload BYTES         size of the published data JSON (100)\n"
        "  --publish-via ws|http   publish command or POST /api/publish (ws)\n"
        "  --api-key K             key for --publish-via http\n"
        "  --http-pipeline N       HTTP requests in flight per publisher (1)\n"
        "  --duration T            measured time per step (10s; env "
        "TEST_DURATION,\n"
        "                          where a bare number is milliseconds)\n"
        "  --warmup T              unmeasured time before each step (2s)\n"
        "  --drain T               wait at the end for replies and the tail "
        "(5s)\n"
        "  --stop-p99 T            overload stop: when a second's delivery p99 "
        "passes T\n"
        "                          (e.g. 2s), stop publishing and skip the "
        "remaining steps\n"
        "Processes and connecting:\n"
        "  --procs N               subscriber processes (enough for 15000 "
        "connections each)\n"
        "  --pub-procs N           publisher-only processes (1 when there are "
        "both kinds;\n"
        "                          0: publishers share the subscriber "
        "processes)\n"
        "  --source-addrs A,B,...  local IPv4 addresses to bind, round-robin\n"
        "  --ramp R                new connections per second, 0 = as fast as "
        "possible (0)\n"
        "  --inflight N            connections being set up at once per "
        "process (500)\n"
        "  --connect-timeout T     whole connect phase (120s)\n"
        "  --conn-timeout T        one connection's setup (15s)\n"
        "  --max-connect-fail PCT  failed connections allowed before exit 1 "
        "(0.1)\n"
        "Output:\n"
        "  --json FILE             write the results as JSON\n"
        "  --label TEXT            copied into the JSON\n"
        "  --channel-prefix P      channel names are P<index> (hb<random>.)\n"
        "  --seed N                for --spread uniform and masks\n"
        "  -q, --quiet             no progress lines\n");
}

static void
resolve_url(hb_opts_t *o)
{
    char host[200], path[256];
    int  port;

    if (strncmp(o->url, "ws://", 5) != 0)
        die("--url: only ws:// URLs are supported (put TLS in front of herald, "
            "not in front of the bench): %s",
            o->url);
    if (hb_parse_http_url(o->url, host, sizeof(host), &port, path, sizeof(path))
        < 0)
        die("--url: cannot parse %s", o->url);
    struct addrinfo  hints = { .ai_family = AF_INET,
                               .ai_socktype = SOCK_STREAM };
    struct addrinfo *ai = NULL;
    char             ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    if (getaddrinfo(host, ps, &hints, &ai) != 0 || ai == NULL)
        die("--url: cannot resolve %s to an IPv4 address", host);
    memcpy(&o->dst, ai->ai_addr, sizeof(o->dst));
    freeaddrinfo(ai);
    snprintf(o->host, sizeof(o->host), "%s:%d", host, port);
    copy_opt(o->path, sizeof(o->path), path, "--url path");
}

static void
parse_args(hb_opts_t *o, int argc, char **argv)
{
    const char *e;
    enum {
        O_URL = 256,
        O_CHANNELS,
        O_SUBS,
        O_SPREAD,
        O_PUBS,
        O_RATE,
        O_PAYLOAD,
        O_VIA,
        O_APIKEY,
        O_PIPE,
        O_DUR,
        O_WARM,
        O_DRAIN,
        O_SECRET,
        O_JSON,
        O_METRICS,
        O_PROCS,
        O_SRC,
        O_RAMP,
        O_INFL,
        O_CTO,
        O_CONNTO,
        O_MAXF,
        O_PREFIX,
        O_LABEL,
        O_SEED,
        O_SELFTEST,
        O_STOP,
        O_PUBPROCS,
    };
    static const struct option lo[] = {
        { "url", 1, 0, O_URL },
        { "connections", 1, 0, 'c' },
        { "channels", 1, 0, O_CHANNELS },
        { "subs-per-conn", 1, 0, O_SUBS },
        { "spread", 1, 0, O_SPREAD },
        { "publishers", 1, 0, O_PUBS },
        { "rate", 1, 0, O_RATE },
        { "payload", 1, 0, O_PAYLOAD },
        { "publish-via", 1, 0, O_VIA },
        { "api-key", 1, 0, O_APIKEY },
        { "http-pipeline", 1, 0, O_PIPE },
        { "duration", 1, 0, O_DUR },
        { "warmup", 1, 0, O_WARM },
        { "drain", 1, 0, O_DRAIN },
        { "secret", 1, 0, O_SECRET },
        { "json", 1, 0, O_JSON },
        { "metrics-url", 1, 0, O_METRICS },
        { "procs", 1, 0, O_PROCS },
        { "source-addrs", 1, 0, O_SRC },
        { "ramp", 1, 0, O_RAMP },
        { "inflight", 1, 0, O_INFL },
        { "connect-timeout", 1, 0, O_CTO },
        { "conn-timeout", 1, 0, O_CONNTO },
        { "max-connect-fail", 1, 0, O_MAXF },
        { "channel-prefix", 1, 0, O_PREFIX },
        { "label", 1, 0, O_LABEL },
        { "seed", 1, 0, O_SEED },
        { "quiet", 0, 0, 'q' },
        { "stop-p99", 1, 0, O_STOP },
        { "pub-procs", 1, 0, O_PUBPROCS },
        { "self-test", 0, 0, O_SELFTEST },
        { "help", 0, 0, 'h' },
        { 0, 0, 0, 0 },
    };

    /* defaults, then the seeds' load-test environment, then the options */
    memset(o, 0, sizeof(*o));
    strcpy(o->url, "ws://127.0.0.1:8080/");
    strcpy(o->metrics_url, "http://127.0.0.1:9090/metrics");
    strcpy(o->secret, "change-me-dev-secret-not-for-production-use");
    strcpy(o->api_key, "change-me-dev-api-key");
    o->connections = 1000;
    o->channels = 1;
    o->subs_per_conn = 1;
    o->publishers = 1;
    o->rates[0] = 1000;
    o->nsteps = 1;
    o->payload = 100;
    o->http_pipeline = 1;
    o->duration = 10;
    o->warmup = 2;
    o->drain = 5;
    o->inflight = 500;
    o->connect_timeout = 120;
    o->conn_timeout = 15;
    o->max_fail = 0.001;
    o->pub_procs = UINT32_MAX;
    o->seed = (uint64_t) time(NULL) ^ ((uint64_t) getpid() << 32);
    snprintf(o->channel_prefix, sizeof(o->channel_prefix), "hb%08x.",
             (unsigned) (o->seed ^ (o->seed >> 32)));
    if ((e = getenv("SOCKET_URL")) && *e)
        copy_opt(o->url, sizeof(o->url), e, "SOCKET_URL");
    if ((e = getenv("MAX_CONNECTIONS")) && *e)
        o->connections = parse_u32(e, "MAX_CONNECTIONS", 0, 10000000);
    if ((e = getenv("EVENTS_PER_SECOND")) && *e)
        parse_rates(o, e);
    if ((e = getenv("TEST_DURATION")) && *e)
        o->duration = parse_dur(e, "TEST_DURATION", true);

    int opt;
    while ((opt = getopt_long(argc, argv, "c:qh", lo, NULL)) != -1) {
        switch (opt) {
        case O_URL:
            copy_opt(o->url, sizeof(o->url), optarg, "--url");
            break;
        case 'c':
            o->connections = parse_u32(optarg, "--connections", 0, 10000000);
            break;
        case O_CHANNELS:
            o->channels = parse_u32(optarg, "--channels", 1, 100000000);
            break;
        case O_SUBS:
            o->subs_per_conn = parse_u32(optarg, "--subs-per-conn", 0, 65535);
            break;
        case O_SPREAD:
            if (strcmp(optarg, "rr") == 0 || strcmp(optarg, "round-robin") == 0)
                o->spread = HB_SPREAD_RR;
            else if (strcmp(optarg, "uniform") == 0)
                o->spread = HB_SPREAD_UNIFORM;
            else
                die("--spread: rr or uniform");
            break;
        case O_PUBS:
            o->publishers = parse_u32(optarg, "--publishers", 0, 1000000);
            break;
        case O_RATE:
            parse_rates(o, optarg);
            break;
        case O_PAYLOAD:
            o->payload = parse_u32(optarg, "--payload", 1, 60000);
            break;
        case O_VIA:
            if (strcmp(optarg, "ws") == 0)
                o->via = HB_VIA_WS;
            else if (strcmp(optarg, "http") == 0)
                o->via = HB_VIA_HTTP;
            else
                die("--publish-via: ws or http");
            break;
        case O_APIKEY:
            copy_opt(o->api_key, sizeof(o->api_key), optarg, "--api-key");
            break;
        case O_PIPE:
            o->http_pipeline = parse_u32(optarg, "--http-pipeline", 1, 64);
            break;
        case O_DUR:
            o->duration = parse_seconds(optarg, "--duration");
            break;
        case O_WARM:
            o->warmup = parse_seconds(optarg, "--warmup");
            break;
        case O_DRAIN:
            o->drain = parse_seconds(optarg, "--drain");
            break;
        case O_SECRET:
            copy_opt(o->secret, sizeof(o->secret), optarg, "--secret");
            break;
        case O_JSON:
            copy_opt(o->json_path, sizeof(o->json_path), optarg, "--json");
            break;
        case O_METRICS:
            if (strcmp(optarg, "none") == 0)
                o->metrics_url[0] = '\0';
            else
                copy_opt(o->metrics_url, sizeof(o->metrics_url), optarg,
                         "--metrics-url");
            break;
        case O_PROCS:
            o->procs = parse_u32(optarg, "--procs", 1, 1024);
            break;
        case O_PUBPROCS:
            o->pub_procs = parse_u32(optarg, "--pub-procs", 0, 1024);
            break;
        case O_SRC:
            parse_sources(o, optarg);
            break;
        case O_RAMP:
            o->ramp = parse_seconds(optarg, "--ramp");
            break;
        case O_INFL:
            o->inflight = parse_u32(optarg, "--inflight", 1, 1000000);
            break;
        case O_CTO:
            o->connect_timeout = parse_seconds(optarg, "--connect-timeout");
            break;
        case O_CONNTO:
            o->conn_timeout = parse_seconds(optarg, "--conn-timeout");
            break;
        case O_MAXF: {
            double v = strtod(optarg, NULL);
            if (v < 0 || v > 100)
                die("--max-connect-fail: a percentage");
            o->max_fail = v / 100;
            break;
        }
        case O_PREFIX:
            copy_opt(o->channel_prefix, sizeof(o->channel_prefix), optarg,
                     "--channel-prefix");
            break;
        case O_LABEL:
            copy_opt(o->label, sizeof(o->label), optarg, "--label");
            break;
        case O_SEED:
            o->seed = strtoull(optarg, NULL, 10);
            break;
        case O_STOP:
            o->stop_p99_ms = parse_seconds(optarg, "--stop-p99") * 1000;
            break;
        case 'q':
            o->quiet = 1;
            break;
        case O_SELFTEST:
            exit(hb_selftest() == 0 ? 0 : 1);
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind < argc)
        die("unexpected argument %s", argv[optind]);

    /* consistency */
    if (o->subs_per_conn > o->channels)
        die("--subs-per-conn %u > --channels %u: a connection subscribes to "
            "distinct channels",
            o->subs_per_conn, o->channels);
    for (const char *p = o->channel_prefix; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || strchr("_.:@-", *p)))
            die("--channel-prefix: channel names allow [A-Za-z0-9_.:@-] only");
    if (o->duration <= 0)
        die("--duration must be above 0");
    if (o->publishers == 0) {
        o->nsteps = 1; /* one idle step: hold the connections */
        o->rates[0] = 0;
    }
    if (o->connections + (uint64_t) o->publishers == 0)
        die("nothing to do: no connections and no publishers");
    resolve_url(o);

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    uint64_t hard = rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max;
    uint64_t total = (uint64_t) o->connections + o->publishers;
    if (o->pub_procs == UINT32_MAX) /* default: own process if both kinds */
        o->pub_procs = o->publishers > 0 && o->connections > 0 ? 1 : 0;
    if (o->pub_procs > o->publishers)
        o->pub_procs = o->publishers;
    uint64_t subs_total = o->pub_procs ? o->connections : total;
    if (o->procs == 0) {
        uint64_t per = CONN_PER_PROC_DEFAULT;
        if (per + FD_RESERVE > hard)
            per = hard - FD_RESERVE;
        o->procs = (uint32_t) ((subs_total + per - 1) / per);
        if (o->procs == 0)
            o->procs = 1;
    }
    uint64_t per = (subs_total + o->procs - 1) / o->procs;
    if (o->pub_procs && (o->publishers + o->pub_procs - 1) / o->pub_procs > per)
        per = (o->publishers + o->pub_procs - 1) / o->pub_procs;
    if (per + FD_RESERVE > hard)
        die("%llu connections per process exceed the fd hard limit %llu: "
            "use more --procs (or --pub-procs)",
            (unsigned long long) per, (unsigned long long) hard);
    /* ~28000 ephemeral ports per source/destination pair; the kernel's
     * port search in connect() costs more as they fill (measured: 40 us of
     * bench CPU per connect at 10k per address, 440 us at 25k) */
    uint64_t per_src = total / (o->nsrc ? o->nsrc : 1);
    if (per_src > 12000)
        fprintf(
            stderr,
            "herald-bench: warning: %llu connections per source address: "
            "connect() gets slow as ephemeral ports fill up, and runs out near "
            "28000; spread them with --source-addrs 127.0.0.2,127.0.0.3,...\n",
            (unsigned long long) per_src);
}

/* --------------------------------------------------------------- children */

static void
spawn(run_t *R)
{
    R->nkids = R->o.procs + R->o.pub_procs;
    R->kids = hd_calloc(R->nkids, sizeof(child_t));
    fflush(NULL);
    for (uint32_t i = 0; i < R->nkids; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
            die("socketpair() failed: %s", strerror(errno));
        int big = 4 << 20;
        setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
        setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
        pid_t pid = fork();
        if (pid < 0)
            die("fork() failed: %s", strerror(errno));
        if (pid == 0) {
            close(sv[0]);
            for (uint32_t j = 0; j < i; j++)
                close(R->kids[j].fd);
            signal(SIGINT, SIG_IGN); /* the parent decides when to stop */
            signal(SIGTERM, SIG_DFL);
            struct rlimit rl;
            getrlimit(RLIMIT_NOFILE, &rl);
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            _exit(hb_load_run(&R->o, i, sv[1]));
        }
        close(sv[1]);
        fcntl(sv[0], F_SETFL, O_NONBLOCK);
        R->kids[i].pid = pid;
        R->kids[i].fd = sv[0];
    }
}

static void
sum_counters(hb_counters_t *dst, const hb_counters_t *src)
{
    uint64_t       *d = (uint64_t *) dst;
    const uint64_t *s = (const uint64_t *) src;
    for (size_t i = 0; i < HB_NCOUNTERS; i++)
        d[i] += s[i];
}

static void
fmt_ns(char *buf, size_t cap, uint64_t ns)
{
    double ms = (double) ns / 1e6;
    if (ns == 0)
        snprintf(buf, cap, "-");
    else if (ms < 1)
        snprintf(buf, cap, "%.0fus", ms * 1000);
    else if (ms < 100)
        snprintf(buf, cap, "%.2fms", ms);
    else
        snprintf(buf, cap, "%.0fms", ms);
}

static void
progress_tick(run_t *R)
{
    hb_counters_t s;
    hb_hist_t    *lat = hd_malloc(sizeof(*lat));
    uint64_t      closes = 0;
    int           have = 0;

    memset(&s, 0, sizeof(s));
    hb_hist_init(lat);
    for (uint32_t i = 0; i < R->nkids; i++) {
        hb_progress_t *p = R->kids[i].prog;
        if (p == NULL)
            continue;
        have = 1;
        sum_counters(&s, &p->c);
        hb_hist_merge(lat, &p->lat);
        for (uint32_t j = 0; j < p->closes.n; j++)
            closes += p->closes.count[j];
        hb_hist_init(&p->lat); /* intervals: count each once */
    }
    if (!have) {
        free(lat);
        return;
    }
    R->last_p99_ms = (double) hb_hist_quantile(lat, 0.99) / 1e6;
    uint64_t now = mono_ns();
    double   dt = R->last_prog_ns ? (double) (now - R->last_prog_ns) / 1e9 : 1;
    if (dt <= 0)
        dt = 1;
    char p50[32], p99[32];
    fmt_ns(p50, sizeof(p50), hb_hist_quantile(lat, 0.5));
    fmt_ns(p99, sizeof(p99), hb_hist_quantile(lat, 0.99));
    uint64_t failed = s.conn_fail_tcp + s.conn_fail_ws + s.conn_fail_auth
        + s.conn_fail_sub + s.conn_fail_timeout + s.conn_fail_closed;
    if (!R->o.quiet)
        fprintf(
            stderr,
            "[%5.1fs] %-8s conns %llu/%llu fail %llu | pub/s %.0f deliv/s %.0f "
            "lat p50 %s p99 %s | err %llu closes %llu missing %llu dup %llu\n",
            (double) (now - R->start_mono) / 1e9, R->phase,
            (unsigned long long) s.conn_open,
            (unsigned long long) (R->o.connections + R->o.publishers),
            (unsigned long long) failed,
            (double) (s.pubs_sent - R->last_prog.pubs_sent) / dt,
            (double) (s.deliveries - R->last_prog.deliveries) / dt, p50, p99,
            (unsigned long long) (s.pub_errors + s.noid_errors),
            (unsigned long long) closes, (unsigned long long) s.missing,
            (unsigned long long) s.duplicates);
    R->last_prog = s;
    R->last_prog_ns = now;
    free(lat);
}

/* Handle one message from child k. */
static void
child_msg(run_t *R, child_t *k, uint32_t type, const uint8_t *body,
          uint32_t len)
{
    size_t chans = sizeof(int64_t) * R->o.channels;

    switch (type) {
    case HB_MSG_READY:
        if (len == sizeof(hb_counters_t)) {
            memcpy(&k->ready_c, body, len);
            k->ready = 1;
        }
        break;
    case HB_MSG_PROGRESS:
        if (len == sizeof(hb_progress_t)) {
            hb_progress_t *np = hd_malloc(sizeof(hb_progress_t));
            memcpy(np, body, len);
            if (k->prog != NULL) {
                /* keep latency samples not printed yet */
                hb_hist_merge(&np->lat, &k->prog->lat);
                free(k->prog);
            }
            k->prog = np;
        }
        break;
    case HB_MSG_PUBDONE:
        if (len == chans) {
            k->maxoff = hd_malloc(chans);
            memcpy(k->maxoff, body, chans);
            k->pubdone = 1;
        }
        break;
    case HB_MSG_RESULT:
        if (len
            == sizeof(hb_result_t) + R->o.nsteps * sizeof(hb_step_stats_t)) {
            k->res = hd_malloc(len);
            memcpy(k->res, body, len);
        }
        break;
    default:
        break;
    }
}

/* Read what a child sent; returns -1 when its socket closed. */
static int
child_read(run_t *R, child_t *k)
{
    int eof = 0;

    for (;;) {
        if (k->cap - k->len < 65536) {
            k->cap = k->cap ? k->cap * 2 : 262144;
            k->buf = hd_realloc(k->buf, k->cap);
        }
        ssize_t n = read(k->fd, k->buf + k->len, k->cap - k->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            eof = 1; /* but first use what came before it */
            break;
        }
        k->len += (size_t) n;
    }
    size_t off = 0;
    while (k->len - off >= sizeof(hb_msghdr_t)) {
        hb_msghdr_t h;
        memcpy(&h, k->buf + off, sizeof(h));
        if (k->len - off - sizeof(h) < h.len)
            break;
        child_msg(R, k, h.type, k->buf + off + sizeof(h), h.len);
        off += sizeof(h) + h.len;
    }
    memmove(k->buf, k->buf + off, k->len - off);
    k->len -= off;
    return eof ? -1 : 0;
}

typedef int (*cond_fn)(run_t *R);

/*
 * Service the children until cond(R) holds or the wall clock reaches
 * until_wall_ns (0: no deadline). Prints a progress line a second.
 * Returns 0 when cond held, 1 at the deadline, -1 when a child died or a
 * signal asked to stop, 2 when watch_overload is set and a second's
 * delivery p99 passed --stop-p99.
 */
static int
pump(run_t *R, cond_fn cond, uint64_t until_wall_ns)
{
    struct pollfd *pf = hd_calloc(R->nkids, sizeof(*pf));
    int            rc;

    for (;;) {
        if (cond && cond(R)) {
            rc = 0;
            break;
        }
        if (stop_flag) {
            rc = -1;
            break;
        }
        uint64_t now = hb_wall_ns();
        if (until_wall_ns && now >= until_wall_ns) {
            rc = 1;
            break;
        }
        uint64_t mnow = mono_ns();
        if (mnow >= R->next_progress) {
            R->last_p99_ms = 0;
            progress_tick(R);
            R->next_progress = mnow + 1000000000u;
            if (R->watch_overload && R->o.stop_p99_ms > 0
                && R->last_p99_ms > R->o.stop_p99_ms) {
                rc = 2;
                break;
            }
        }
        uint64_t wait = R->next_progress - mnow;
        if (until_wall_ns && until_wall_ns - now < wait)
            wait = until_wall_ns - now;
        int ms = (int) ((wait + 999999) / 1000000);
        for (uint32_t i = 0; i < R->nkids; i++) {
            pf[i].fd = R->kids[i].dead ? -1 : R->kids[i].fd;
            pf[i].events = POLLIN;
            pf[i].revents = 0;
        }
        int n = poll(pf, R->nkids, ms);
        if (n < 0 && errno != EINTR)
            die("poll() failed: %s", strerror(errno));
        int died = 0;
        for (uint32_t i = 0; n > 0 && i < R->nkids; i++) {
            if (pf[i].revents == 0)
                continue;
            if (child_read(R, &R->kids[i]) < 0) {
                R->kids[i].dead = 1;
                /* a child that sent its result and exited is fine */
                if (R->kids[i].res == NULL) {
                    int st = 0;
                    died = 1;
                    if (waitpid(R->kids[i].pid, &st, 0) == R->kids[i].pid) {
                        R->kids[i].pid = 0;
                        if (WIFSIGNALED(st))
                            fprintf(stderr,
                                    "herald-bench: load process %u killed by "
                                    "signal %d\n",
                                    i, WTERMSIG(st));
                        else
                            fprintf(stderr,
                                    "herald-bench: load process %u exited "
                                    "with status %d\n",
                                    i, WEXITSTATUS(st));
                    }
                }
            }
        }
        if (died) {
            rc = -1;
            break;
        }
    }
    free(pf);
    return rc;
}

static int
all_ready(run_t *R)
{
    for (uint32_t i = 0; i < R->nkids; i++)
        if (!R->kids[i].ready)
            return 0;
    return 1;
}

static int
all_pubdone(run_t *R)
{
    for (uint32_t i = 0; i < R->nkids; i++)
        if (!R->kids[i].pubdone)
            return 0;
    return 1;
}

static int
all_results(run_t *R)
{
    for (uint32_t i = 0; i < R->nkids; i++)
        if (R->kids[i].res == NULL)
            return 0;
    return 1;
}

static void
scrape(run_t *R, hb_scrape_t *s, const char *when)
{
    char err[256];

    memset(s, 0, sizeof(*s));
    if (R->o.metrics_url[0] == '\0')
        return;
    if (hb_scrape(R->o.metrics_url, 3000, s, err, sizeof(err)) < 0)
        fprintf(stderr, "herald-bench: warning: scrape %s failed: %s\n", when,
                err);
}

static void
broadcast(run_t *R, uint32_t type, const void *p, size_t len)
{
    for (uint32_t i = 0; i < R->nkids; i++) {
        child_t *k = &R->kids[i];
        if (k->dead)
            continue;
        /* the parent's end is non-blocking: write it whole with poll */
        hb_msghdr_t    h = { .type = type, .len = (uint32_t) len };
        const uint8_t *parts[2] = { (const uint8_t *) &h, p };
        size_t         lens[2] = { sizeof(h), len };
        for (int j = 0; j < 2; j++) {
            size_t off = 0;
            while (off < lens[j]) {
                ssize_t n = write(k->fd, parts[j] + off, lens[j] - off);
                if (n > 0) {
                    off += (size_t) n;
                } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                    struct pollfd pf = { .fd = k->fd, .events = POLLOUT };
                    poll(&pf, 1, 100);
                } else {
                    k->dead = 1;
                    break;
                }
            }
        }
    }
}

static void
kill_kids(run_t *R)
{
    for (uint32_t i = 0; i < R->nkids; i++)
        if (R->kids[i].pid > 0)
            kill(R->kids[i].pid, SIGTERM);
}

static void
reap(run_t *R)
{
    for (uint32_t i = 0; i < R->nkids; i++) {
        if (R->kids[i].pid <= 0)
            continue;
        int st;
        /* bounded: children exit right after RESULT */
        for (int t = 0; t < 500; t++) {
            pid_t p = waitpid(R->kids[i].pid, &st, WNOHANG);
            if (p == R->kids[i].pid || (p < 0 && errno != EINTR))
                break;
            usleep(10000);
            if (t == 300)
                kill(R->kids[i].pid, SIGKILL);
        }
        R->kids[i].pid = 0;
    }
}

/* --------------------------------------------------------------- reporting */

static hb_result_t *
merge_results(run_t *R)
{
    size_t sz = sizeof(hb_result_t) + R->o.nsteps * sizeof(hb_step_stats_t);
    hb_result_t *m = hd_calloc(1, sz);

    m->nsteps = R->o.nsteps;
    m->first_connect_ns = UINT64_MAX;
    hb_hist_init(&m->connect);
    hb_hist_init(&m->handshake);
    hb_hist_init(&m->subscribe);
    for (uint32_t s = 0; s < m->nsteps; s++) {
        hb_hist_init(&m->steps[s].lat);
        hb_hist_init(&m->steps[s].ack);
        hb_hist_init(&m->steps[s].lag);
    }
    for (uint32_t i = 0; i < R->nkids; i++) {
        hb_result_t *r = R->kids[i].res;
        if (r == NULL)
            continue;
        sum_counters(&m->c, &r->c);
        hb_codes_merge(&m->closes, &r->closes);
        hb_codes_merge(&m->errors, &r->errors);
        hb_codes_merge(&m->errnos, &r->errnos);
        if (r->first_connect_ns < m->first_connect_ns)
            m->first_connect_ns = r->first_connect_ns;
        if (r->last_ready_ns > m->last_ready_ns)
            m->last_ready_ns = r->last_ready_ns;
        hb_hist_merge(&m->connect, &r->connect);
        hb_hist_merge(&m->handshake, &r->handshake);
        hb_hist_merge(&m->subscribe, &r->subscribe);
        for (uint32_t s = 0; s < m->nsteps; s++) {
            hb_step_stats_t *d = &m->steps[s], *x = &r->steps[s];
            d->deliveries += x->deliveries;
            d->pubs += x->pubs;
            d->acks += x->acks;
            if (x->cpu_marks == 2) {
                d->cpu_ns += x->cpu_ns;
                d->cpu_marks++;
            }
            hb_hist_merge(&d->lat, &x->lat);
            hb_hist_merge(&d->ack, &x->ack);
            hb_hist_merge(&d->lag, &x->lag);
        }
    }
    return m;
}

/* Derived per-step figures, shared by the table and the JSON. */
typedef struct step_fig {
    double rate, window_s;
    double pubs_per_s, deliv_per_s, offered_deliv_per_s, keepup;
    double srv_cpu_s, srv_delivered, srv_deliv_per_s, deliv_per_srv_cpu_s;
    double srv_us_per_deliv;
    double cli_cpu_s, cli_us_per_deliv, cli_us_per_msg;
    int    have_srv, cli_complete;
} step_fig_t;

static double
fanout_avg(const hb_opts_t *o)
{
    return (double) o->connections * o->subs_per_conn / o->channels;
}

static void
step_figures(run_t *R, const hb_result_t *m, uint32_t s, step_fig_t *f)
{
    const hb_step_stats_t *st = &m->steps[s];
    const hb_scrape_t     *a = &R->s_win[s][0], *b = &R->s_win[s][1];

    memset(f, 0, sizeof(*f));
    f->rate = R->o.rates[s];
    f->window_s = R->o.duration;
    f->pubs_per_s = (double) st->pubs / f->window_s;
    f->deliv_per_s = (double) st->deliveries / f->window_s;
    /* offered: publishes herald accepted (acks), times the fan-out */
    f->offered_deliv_per_s = (double) st->acks / f->window_s
        * fanout_avg(&R->o);
    f->keepup = f->offered_deliv_per_s > 0
        ? f->deliv_per_s / f->offered_deliv_per_s
        : 0;
    if (a->ok && b->ok) {
        f->have_srv = 1;
        f->srv_cpu_s = b->cpu_seconds - a->cpu_seconds;
        f->srv_delivered = b->delivered - a->delivered;
        double dt = b->wall - a->wall;
        f->srv_deliv_per_s = dt > 0 ? f->srv_delivered / dt : 0;
        f->deliv_per_srv_cpu_s = f->srv_cpu_s > 0
            ? f->srv_delivered / f->srv_cpu_s
            : 0;
        f->srv_us_per_deliv = f->srv_delivered > 0
            ? f->srv_cpu_s * 1e6 / f->srv_delivered
            : 0;
    }
    f->cli_cpu_s = (double) st->cpu_ns / 1e9;
    f->cli_complete = st->cpu_marks == R->nkids;
    f->cli_us_per_deliv = st->deliveries
        ? f->cli_cpu_s * 1e6 / (double) st->deliveries
        : 0;
    f->cli_us_per_msg = (st->deliveries + st->pubs)
        ? f->cli_cpu_s * 1e6 / (double) (st->deliveries + st->pubs)
        : 0;
}

/* Client CPU (all load processes) from fork to READY, in seconds. */
static double
client_connect_cpu(const run_t *R)
{
    uint64_t ns = 0;
    for (uint32_t i = 0; i < R->nkids; i++)
        ns += R->kids[i].ready_c.cpu_ns;
    return (double) ns / 1e9;
}

static uint64_t
conn_failed(const hb_counters_t *c)
{
    return c->conn_fail_tcp + c->conn_fail_ws + c->conn_fail_auth
        + c->conn_fail_sub + c->conn_fail_timeout + c->conn_fail_closed;
}

/* Collect failure reasons; returns how many. */
static int
failures(run_t *R, const hb_result_t *m, char reasons[][160], int max)
{
    const hb_counters_t *c = &m->c;
    int                  n = 0;
    uint64_t             total = (uint64_t) R->o.connections + R->o.publishers;

#define FAIL(...)                                   \
    do {                                            \
        if (n < max)                                \
            snprintf(reasons[n], 160, __VA_ARGS__); \
        n++;                                        \
    } while (0)
    if (c->missing)
        FAIL("%llu messages missing (%llu announced by gap pushes, %llu at the "
             "tail)",
             (unsigned long long) c->missing,
             (unsigned long long) c->missing_gap,
             (unsigned long long) c->missing_tail);
    if (c->duplicates)
        FAIL("%llu duplicated or out-of-order messages",
             (unsigned long long) c->duplicates);
    if (c->unexpected)
        FAIL("%llu pushes on channels the connection did not subscribe to",
             (unsigned long long) c->unexpected);
    if (c->pubs_unacked)
        FAIL("%llu publishes without a reply after the drain",
             (unsigned long long) c->pubs_unacked);
    if (c->closes || c->subs_lost)
        FAIL("%llu connections closed by the server during the run, %llu "
             "subscriptions lost with them (see the close codes)",
             (unsigned long long) c->closes, (unsigned long long) c->subs_lost);
    if (c->pubs_unsent)
        FAIL("%llu scheduled publishes never sent (publisher connections lost)",
             (unsigned long long) c->pubs_unsent);
    if (c->proto_errors)
        FAIL("%llu protocol errors (frames or lines the bench could not use)",
             (unsigned long long) c->proto_errors);
    if ((double) conn_failed(c) > R->o.max_fail * (double) total)
        FAIL("%llu of %llu connections failed (allowed %.3f%%)",
             (unsigned long long) conn_failed(c), (unsigned long long) total,
             R->o.max_fail * 100);
#undef FAIL
    return n;
}

static const char *
errno_name(uint32_t e)
{
    switch (e) {
    case EADDRNOTAVAIL:
        return "EADDRNOTAVAIL";
    case ECONNREFUSED:
        return "ECONNREFUSED";
    case ECONNRESET:
        return "ECONNRESET";
    case ETIMEDOUT:
        return "ETIMEDOUT";
    case EMFILE:
        return "EMFILE";
    case ENFILE:
        return "ENFILE";
    case EPIPE:
        return "EPIPE";
    case EADDRINUSE:
        return "EADDRINUSE";
    case ENOBUFS:
        return "ENOBUFS";
    default:
        return NULL;
    }
}

static void
print_codes(FILE *f, const char *title, const hb_codes_t *t, int is_errno)
{
    if (t->n == 0 && t->other == 0)
        return;
    fprintf(f, "  %-20s", title);
    for (uint32_t i = 0; i < t->n; i++) {
        const char *nm = is_errno ? errno_name(t->code[i]) : NULL;
        if (nm)
            fprintf(f, " %s=%llu", nm, (unsigned long long) t->count[i]);
        else
            fprintf(f, " %u=%llu", t->code[i],
                    (unsigned long long) t->count[i]);
    }
    if (t->other)
        fprintf(f, " other=%llu", (unsigned long long) t->other);
    fputc('\n', f);
}

static void
print_report(run_t *R, const hb_result_t *m, char reasons[][160], int nfail)
{
    const hb_opts_t     *o = &R->o;
    const hb_counters_t *c = &m->c;
    FILE                *f = stdout;
    char                 a[32], b[32], d[32], e[32], g[32];

    fprintf(
        f,
        "\nherald-bench%s%s: %s, %u+%u procs, %u connections x %u subs over "
        "%u channels (%s), %u publishers via %s, payload %u B\n",
        o->label[0] ? " " : "", o->label, o->url, o->procs, o->pub_procs,
        o->connections, o->subs_per_conn, o->channels,
        o->spread ? "uniform" : "rr", o->publishers, o->via ? "http" : "ws",
        o->payload);

    double cs = m->last_ready_ns > m->first_connect_ns
        ? (double) (m->last_ready_ns - m->first_connect_ns) / 1e9
        : 0;
    fmt_ns(a, sizeof(a), hb_hist_quantile(&m->connect, 0.5));
    fmt_ns(b, sizeof(b), hb_hist_quantile(&m->connect, 0.95));
    fmt_ns(d, sizeof(d), hb_hist_quantile(&m->connect, 0.99));
    fmt_ns(e, sizeof(e), m->connect.max_ns);
    fprintf(f,
            "connect    %llu ready of %llu attempted in %.2f s (%.0f conn/s); "
            "p50 %s p95 %s p99 %s max %s\n",
            (unsigned long long) c->conn_ready,
            (unsigned long long) c->conn_attempts, cs,
            cs > 0 ? (double) c->conn_ready / cs : 0, a, b, d, e);
    fmt_ns(a, sizeof(a), hb_hist_quantile(&m->handshake, 0.99));
    fmt_ns(b, sizeof(b), hb_hist_quantile(&m->subscribe, 0.99));
    fprintf(f,
            "           handshake p99 %s, subscribe p99 %s; failed %llu "
            "(tcp %llu, ws %llu, auth %llu, subscribe %llu, timeout %llu, "
            "closed %llu)\n",
            a, b, (unsigned long long) conn_failed(c),
            (unsigned long long) c->conn_fail_tcp,
            (unsigned long long) c->conn_fail_ws,
            (unsigned long long) c->conn_fail_auth,
            (unsigned long long) c->conn_fail_sub,
            (unsigned long long) c->conn_fail_timeout,
            (unsigned long long) c->conn_fail_closed);
    if (R->s_before.ok && R->s_connected.ok) {
        double drss = R->s_connected.rss_bytes - R->s_before.rss_bytes;
        double dcpu = R->s_connected.cpu_seconds - R->s_before.cpu_seconds;
        fprintf(f,
                "server     connections gauge %.0f, RSS %.1f -> %.1f MiB: %.0f "
                "B per "
                "connection; %.1f us server CPU per connect\n",
                R->s_connected.connections, R->s_before.rss_bytes / 1048576,
                R->s_connected.rss_bytes / 1048576,
                c->conn_ready ? drss / (double) c->conn_ready : 0,
                c->conn_ready ? dcpu * 1e6 / (double) c->conn_ready : 0);
    }
    if (c->conn_attempts)
        fprintf(f,
                "client     %.1f us bench CPU per connection attempt (all load "
                "processes, connect phase)\n",
                client_connect_cpu(R) * 1e6 / (double) c->conn_attempts);

    fprintf(
        f, "\n%-4s %9s %9s %10s %6s %8s %8s %8s %8s %8s %8s %8s %10s %8s %8s\n",
        "step", "rate/s", "pubs/s", "deliv/s", "keep", "p50", "p90", "p99",
        "p99.9", "max", "ack p99", "lag p99", "deliv/srvCPU", "srv us/d",
        "cli us/d");
    for (uint32_t s = 0; s < R->steps_done; s++) {
        step_fig_t             F;
        const hb_step_stats_t *st = &m->steps[s];
        step_figures(R, m, s, &F);
        fmt_ns(a, sizeof(a), hb_hist_quantile(&st->lat, 0.5));
        fmt_ns(b, sizeof(b), hb_hist_quantile(&st->lat, 0.9));
        fmt_ns(d, sizeof(d), hb_hist_quantile(&st->lat, 0.99));
        fmt_ns(e, sizeof(e), hb_hist_quantile(&st->lat, 0.999));
        fmt_ns(g, sizeof(g), st->lat.max_ns);
        char ack[32], lag[32];
        fmt_ns(ack, sizeof(ack), hb_hist_quantile(&st->ack, 0.99));
        fmt_ns(lag, sizeof(lag), hb_hist_quantile(&st->lag, 0.99));
        char dsc[32] = "-", sud[32] = "-", cud[32] = "-";
        if (F.have_srv && F.srv_cpu_s > 0)
            snprintf(dsc, sizeof(dsc), "%.0f", F.deliv_per_srv_cpu_s);
        if (F.have_srv && F.srv_delivered > 0)
            snprintf(sud, sizeof(sud), "%.2f", F.srv_us_per_deliv);
        if (st->deliveries)
            snprintf(cud, sizeof(cud), "%.2f", F.cli_us_per_deliv);
        fprintf(f,
                "%-4u %9.0f %9.0f %10.0f %5.0f%% %8s %8s %8s %8s %8s %8s %8s "
                "%10s %8s %8s\n",
                s + 1, F.rate, F.pubs_per_s, F.deliv_per_s, F.keepup * 100, a,
                b, d, e, g, ack, lag, dsc, sud, cud);
    }
    if (R->overload_step >= 0)
        fprintf(
            f,
            "%-4d %9.0f  overloaded: delivery p99 passed %.0f ms after %.1f s; "
            "stopped%s\n",
            R->overload_step + 1, o->rates[R->overload_step], o->stop_p99_ms,
            R->overload_after_s,
            (uint32_t) R->overload_step + 1 < m->nsteps
                ? ", later steps skipped"
                : "");
    fprintf(
        f,
        "(latency: receive - intended send time; keep = deliveries / "
        "(acked pubs x %.2f subscribers per channel); srv = herald /metrics, "
        "cli = all load processes)\n",
        fanout_avg(o));

    if (c->pubs_backlog)
        fprintf(
            f,
            "\nnote       %llu scheduled publishes were still waiting for a "
            "free "
            "HTTP pipeline slot when publishing ended (see --http-pipeline)",
            (unsigned long long) c->pubs_backlog);
    fprintf(
        f,
        "\ncounts     published %llu sent, %llu acked, %llu errors, %llu "
        "unacked; "
        "deliveries %llu of %llu expected\n",
        (unsigned long long) c->pubs_sent, (unsigned long long) c->pubs_acked,
        (unsigned long long) c->pub_errors,
        (unsigned long long) c->pubs_unacked,
        (unsigned long long) c->deliveries, (unsigned long long) c->expected);
    fprintf(
        f,
        "           missing %llu (gap %llu, tail %llu), duplicated %llu, "
        "unexpected %llu, subscriptions lost %llu, closes %llu\n",
        (unsigned long long) c->missing, (unsigned long long) c->missing_gap,
        (unsigned long long) c->missing_tail,
        (unsigned long long) c->duplicates, (unsigned long long) c->unexpected,
        (unsigned long long) c->subs_lost, (unsigned long long) c->closes);
    print_codes(f, "close codes", &m->closes, 0);
    print_codes(f, "error codes", &m->errors, 0);
    print_codes(f, "socket errors", &m->errnos, 1);
    if (nfail == 0) {
        fprintf(f, "result     OK\n");
    } else {
        for (int i = 0; i < nfail && i < 16; i++)
            fprintf(f, "result     FAIL: %s\n", reasons[i]);
    }
    fflush(f);
}

static void
json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char) *s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void
json_hist(FILE *f, const char *name, const hb_hist_t *h, const char *tail)
{
    fprintf(f,
            "\"%s\": {\"count\": %llu, \"mean\": %.4f, \"p50\": %.4f, \"p90\": "
            "%.4f, "
            "\"p95\": %.4f, \"p99\": %.4f, \"p999\": %.4f, \"max\": %.4f}%s",
            name, (unsigned long long) h->count, hb_hist_mean(h) / 1e6,
            (double) hb_hist_quantile(h, 0.5) / 1e6,
            (double) hb_hist_quantile(h, 0.9) / 1e6,
            (double) hb_hist_quantile(h, 0.95) / 1e6,
            (double) hb_hist_quantile(h, 0.99) / 1e6,
            (double) hb_hist_quantile(h, 0.999) / 1e6, (double) h->max_ns / 1e6,
            tail);
}

static void
json_codes(FILE *f, const char *name, const hb_codes_t *t, int is_errno,
           const char *tail)
{
    fprintf(f, "\"%s\": {", name);
    for (uint32_t i = 0; i < t->n; i++) {
        const char *nm = is_errno ? errno_name(t->code[i]) : NULL;
        if (nm)
            fprintf(f, "%s\"%s\": %llu", i ? ", " : "", nm,
                    (unsigned long long) t->count[i]);
        else
            fprintf(f, "%s\"%u\": %llu", i ? ", " : "", t->code[i],
                    (unsigned long long) t->count[i]);
    }
    if (t->other)
        fprintf(f, "%s\"other\": %llu", t->n ? ", " : "",
                (unsigned long long) t->other);
    fprintf(f, "}%s", tail);
}

static void
json_scrape(FILE *f, const char *name, const hb_scrape_t *s, const char *tail)
{
    if (!s->ok) {
        fprintf(f, "\"%s\": null%s", name, tail);
        return;
    }
    fprintf(
        f,
        "\"%s\": {\"wall\": %.3f, \"cpu_seconds\": %.2f, \"rss_bytes\": %.0f, "
        "\"delivered\": %.0f, \"published\": %.0f, \"connections\": %.0f, "
        "\"accepted\": %.0f, \"rejected\": %.0f, \"workers\": %.0f}%s",
        name, s->wall, s->cpu_seconds, s->rss_bytes, s->delivered, s->published,
        s->connections, s->accepted, s->rejected, s->workers, tail);
}

static int
write_json(run_t *R, const hb_result_t *m, char reasons[][160], int nfail)
{
    const hb_opts_t     *o = &R->o;
    const hb_counters_t *c = &m->c;
    FILE                *f = fopen(o->json_path, "w");
    struct utsname       u;
    char                 model[256] = "";

    if (f == NULL) {
        fprintf(stderr, "herald-bench: cannot write %s: %s\n", o->json_path,
                strerror(errno));
        return -1;
    }
    uname(&u);
    FILE *ci = fopen("/proc/cpuinfo", "r");
    if (ci) {
        char line[512];
        while (fgets(line, sizeof(line), ci)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *p = strchr(line, ':');
                if (p) {
                    snprintf(model, sizeof(model), "%s", p + 2);
                    model[strcspn(model, "\n")] = '\0';
                }
                break;
            }
        }
        fclose(ci);
    }

    fprintf(f,
            "{\n  \"tool\": \"herald-bench\", \"format\": 1,\n  \"label\": ");
    json_str(f, o->label);
    fprintf(f, ",\n  \"time\": %llu,\n", (unsigned long long) time(NULL));
    fprintf(f, "  \"machine\": {\"nproc\": %ld, \"kernel\": ",
            sysconf(_SC_NPROCESSORS_ONLN));
    json_str(f, u.release);
    fprintf(f, ", \"cpu\": ");
    json_str(f, model);
    fprintf(f, "},\n  \"options\": {\"url\": ");
    json_str(f, o->url);
    fprintf(f,
            ", \"connections\": %u, \"channels\": %u, \"subs_per_conn\": %u, "
            "\"spread\": \"%s\", \"publishers\": %u, \"publish_via\": \"%s\", "
            "\"payload\": %u, \"duration_s\": %.3f, \"warmup_s\": %.3f, "
            "\"procs\": %u, \"pub_procs\": %u, \"source_addrs\": %u, \"ramp\": "
            "%.0f, "
            "\"inflight\": %u, \"stop_p99_ms\": %.0f, \"rates\": [",
            o->connections, o->channels, o->subs_per_conn,
            o->spread ? "uniform" : "rr", o->publishers, o->via ? "http" : "ws",
            o->payload, o->duration, o->warmup, o->procs, o->pub_procs, o->nsrc,
            o->ramp, o->inflight, o->stop_p99_ms);
    for (uint32_t s = 0; s < o->nsteps; s++)
        fprintf(f, "%s%.3f", s ? ", " : "", o->rates[s]);
    fprintf(f, "]},\n");

    double cs = m->last_ready_ns > m->first_connect_ns
        ? (double) (m->last_ready_ns - m->first_connect_ns) / 1e9
        : 0;
    fprintf(f,
            "  \"connect\": {\"attempted\": %llu, \"ready\": %llu, \"failed\": "
            "%llu, "
            "\"failed_tcp\": %llu, \"failed_ws\": %llu, \"failed_auth\": %llu, "
            "\"failed_subscribe\": %llu, \"failed_timeout\": %llu, "
            "\"failed_closed\": %llu, "
            "\"duration_s\": %.3f, \"per_second\": %.1f,\n    ",
            (unsigned long long) c->conn_attempts,
            (unsigned long long) c->conn_ready,
            (unsigned long long) conn_failed(c),
            (unsigned long long) c->conn_fail_tcp,
            (unsigned long long) c->conn_fail_ws,
            (unsigned long long) c->conn_fail_auth,
            (unsigned long long) c->conn_fail_sub,
            (unsigned long long) c->conn_fail_timeout,
            (unsigned long long) c->conn_fail_closed, cs,
            cs > 0 ? (double) c->conn_ready / cs : 0);
    fprintf(
        f, "\"client_cpu_s\": %.3f, \"client_cpu_us_per_attempt\": %.2f,\n    ",
        client_connect_cpu(R),
        c->conn_attempts
            ? client_connect_cpu(R) * 1e6 / (double) c->conn_attempts
            : 0);
    json_hist(f, "connect_ms", &m->connect, ",\n    ");
    json_hist(f, "handshake_ms", &m->handshake, ",\n    ");
    json_hist(f, "subscribe_ms", &m->subscribe, "},\n");

    fprintf(f, "  \"server\": {");
    json_scrape(f, "before", &R->s_before, ",\n    ");
    json_scrape(f, "connected", &R->s_connected, ",\n    ");
    json_scrape(f, "end", &R->s_end, "");
    if (R->s_before.ok && R->s_connected.ok && c->conn_ready) {
        fprintf(f,
                ",\n    \"rss_per_connection_bytes\": %.1f, "
                "\"cpu_us_per_connect\": %.2f",
                (R->s_connected.rss_bytes - R->s_before.rss_bytes)
                    / (double) c->conn_ready,
                (R->s_connected.cpu_seconds - R->s_before.cpu_seconds) * 1e6
                    / (double) c->conn_ready);
    }
    fprintf(f, "},\n  \"overload\": ");
    if (R->overload_step >= 0)
        fprintf(f,
                "{\"step\": %d, \"rate\": %.3f, \"after_s\": %.3f, \"p99_ms\": "
                "%.1f, "
                "\"threshold_ms\": %.1f}",
                R->overload_step, o->rates[R->overload_step],
                R->overload_after_s, R->last_p99_ms, o->stop_p99_ms);
    else
        fprintf(f, "null");
    fprintf(f, ",\n  \"steps\": [\n");
    for (uint32_t s = 0; s < R->steps_done; s++) {
        step_fig_t             F;
        const hb_step_stats_t *st = &m->steps[s];
        step_figures(R, m, s, &F);
        fprintf(f,
                "    {\"rate\": %.3f, \"window_s\": %.3f, \"pubs\": %llu, "
                "\"acks\": %llu, "
                "\"deliveries\": %llu, \"pubs_per_s\": %.1f, "
                "\"deliveries_per_s\": %.1f, "
                "\"offered_deliveries_per_s\": %.1f, \"keepup\": %.4f,\n      ",
                F.rate, F.window_s, (unsigned long long) st->pubs,
                (unsigned long long) st->acks,
                (unsigned long long) st->deliveries, F.pubs_per_s,
                F.deliv_per_s, F.offered_deliv_per_s, F.keepup);
        json_hist(f, "latency_ms", &st->lat, ",\n      ");
        json_hist(f, "ack_ms", &st->ack, ",\n      ");
        json_hist(f, "send_lag_ms", &st->lag, ",\n      ");
        if (F.have_srv)
            fprintf(f,
                    "\"server_cpu_s\": %.3f, \"server_delivered\": %.0f, "
                    "\"server_deliveries_per_s\": %.1f, "
                    "\"deliveries_per_server_cpu_s\": %.1f, "
                    "\"server_us_per_delivery\": %.4f,\n      ",
                    F.srv_cpu_s, F.srv_delivered, F.srv_deliv_per_s,
                    F.deliv_per_srv_cpu_s, F.srv_us_per_deliv);
        else
            fprintf(f,
                    "\"server_cpu_s\": null, \"server_delivered\": null, "
                    "\"server_deliveries_per_s\": null, "
                    "\"deliveries_per_server_cpu_s\": null, "
                    "\"server_us_per_delivery\": null,\n      ");
        fprintf(f,
                "\"client_cpu_s\": %.3f, \"client_cpu_complete\": %s, "
                "\"client_us_per_delivery\": %.4f, \"client_us_per_message\": "
                "%.4f}%s\n",
                F.cli_cpu_s, F.cli_complete ? "true" : "false",
                F.cli_us_per_deliv, F.cli_us_per_msg,
                s + 1 < R->steps_done ? "," : "");
    }
    fprintf(f, "  ],\n  \"counts\": {");
    static const struct {
        const char *n;
        size_t      off;
    } cn[] = {
#define X(f) { #f, offsetof(hb_counters_t, f) }
        X(pubs_sent),    X(pubs_acked),  X(pub_errors),   X(pubs_unacked),
        X(deliveries),   X(expected),    X(missing),      X(missing_gap),
        X(missing_tail), X(duplicates),  X(unexpected),   X(behind),
        X(subs_live),    X(subs_lost),   X(closes),       X(proto_errors),
        X(noid_errors),  X(bytes_rx),    X(bytes_tx),     X(reads),
        X(writes),       X(frames_rx),   X(lines_rx),     X(pings_rx),
        X(cpu_ns),       X(pubs_unsent), X(pubs_backlog),
#undef X
    };
    for (size_t i = 0; i < sizeof(cn) / sizeof(cn[0]); i++)
        fprintf(f, "%s\"%s\": %llu", i ? ", " : "", cn[i].n,
                (unsigned long long) *(const uint64_t *) ((const char *) c
                                                          + cn[i].off));
    fprintf(f, "},\n  ");
    json_codes(f, "closes", &m->closes, 0, ",\n  ");
    json_codes(f, "errors", &m->errors, 0, ",\n  ");
    json_codes(f, "errnos", &m->errnos, 1, ",\n  ");
    fprintf(f, "\"ok\": %s, \"failures\": [", nfail ? "false" : "true");
    for (int i = 0; i < nfail && i < 16; i++) {
        fprintf(f, "%s", i ? ", " : "");
        json_str(f, reasons[i]);
    }
    fprintf(f, "]\n}\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "herald-bench: writing %s failed\n", o->json_path);
        return -1;
    }
    return 0;
}

/* -------------------------------------------------------------------- main */

static void
free_run(run_t *R)
{
    for (uint32_t i = 0; i < R->nkids; i++) {
        child_t *k = &R->kids[i];
        if (k->fd >= 0)
            close(k->fd);
        free(k->buf);
        free(k->prog);
        free(k->maxoff);
        free(k->res);
    }
    free(R->kids);
    free(R);
}

int
main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "kernel") == 0)
        return hb_kernel_main(argc - 1, argv + 1);

    run_t *R = hd_calloc(1, sizeof(*R));
    parse_args(&R->o, argc, argv);

    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    R->start_mono = mono_ns();
    R->next_progress = R->start_mono + 1000000000u;
    R->phase = "connect";
    scrape(R, &R->s_before, "before connecting");
    spawn(R);

    /* connect phase: the children give up on their own after
     * --connect-timeout; the margin only guards against a wedged child */
    uint64_t guard = hb_wall_ns()
        + (uint64_t) ((R->o.connect_timeout + 30) * 1e9);
    if (pump(R, all_ready, guard) != 0) {
        fprintf(stderr, "herald-bench: connect phase did not complete\n");
        kill_kids(R);
        reap(R);
        free_run(R);
        return 3;
    }
    R->connect_wall_s = (double) (mono_ns() - R->start_mono) / 1e9;
    scrape(R, &R->s_connected, "after connecting");

    /* the steps: every process uses the same t0, a little ahead */
    R->t0 = hb_wall_ns() + 300000000u;
    broadcast(R, HB_MSG_START, &R->t0, sizeof(R->t0));
    uint64_t    step_ns = (uint64_t) ((R->o.warmup + R->o.duration) * 1e9);
    uint64_t    warm_ns = (uint64_t) (R->o.warmup * 1e9);
    static char phase_buf[HB_MAX_STEPS][32];
    int         rc = 0;
    R->overload_step = -1;
    R->watch_overload = 1;
    for (uint32_t s = 0; s < R->o.nsteps && rc == 0; s++) {
        snprintf(phase_buf[s], sizeof(phase_buf[s]), "step %u", s + 1);
        R->phase = phase_buf[s];
        uint64_t ws = R->t0 + s * step_ns + warm_ns,
                 we = R->t0 + (s + 1) * step_ns;
        rc = pump(R, NULL, ws);
        if (rc == 1) {
            rc = 0;
            scrape(R, &R->s_win[s][0], "at window start");
            rc = pump(R, NULL, we);
        }
        if (rc == 1) {
            rc = 0;
            scrape(R, &R->s_win[s][1], "at window end");
            R->steps_done = s + 1;
        } else if (rc == 2) {
            /* past saturation every further second only adds backlog */
            R->overload_step = (int) s;
            R->overload_after_s =
                (double) (hb_wall_ns() - (R->t0 + s * step_ns)) / 1e9;
            fprintf(
                stderr,
                "herald-bench: overload in step %u (rate %.0f/s): delivery "
                "p99 %.0f ms > %.0f ms after %.1f s; stopping the publishers\n",
                s + 1, R->o.rates[s], R->last_p99_ms, R->o.stop_p99_ms,
                R->overload_after_s);
            broadcast(R, HB_MSG_STOP, NULL, 0);
            rc = 0;
            break;
        }
    }
    R->watch_overload = 0;
    if (rc == 0) {
        R->phase = "drain";
        uint64_t g2 = hb_wall_ns() + (uint64_t) ((R->o.drain + 30) * 1e9);
        if (pump(R, all_pubdone, g2) != 0)
            rc = -1;
    }
    if (rc == 0) {
        /* the highest offset any publisher got acknowledged, per channel */
        int64_t *fin = hd_calloc(R->o.channels, sizeof(int64_t));
        for (uint32_t i = 0; i < R->nkids; i++)
            for (uint32_t ch = 0; ch < R->o.channels; ch++)
                if (R->kids[i].maxoff[ch] > fin[ch])
                    fin[ch] = R->kids[i].maxoff[ch];
        broadcast(R, HB_MSG_FINAL, fin, sizeof(int64_t) * R->o.channels);
        free(fin);
        uint64_t g3 = hb_wall_ns() + (uint64_t) ((R->o.drain + 30) * 1e9);
        if (pump(R, all_results, g3) != 0)
            rc = -1;
    }
    if (rc != 0) {
        fprintf(stderr, "herald-bench: run aborted (%s)\n",
                stop_flag ? "signal" : "a load process died or stalled");
        kill_kids(R);
        reap(R);
        free_run(R);
        return 3;
    }
    reap(R);
    scrape(R, &R->s_end, "at the end");

    hb_result_t *m = merge_results(R);
    char         reasons[16][160];
    int          nfail = failures(R, m, reasons, 16);
    print_report(R, m, reasons, nfail);
    int st = nfail ? 1 : 0;
    if (R->o.json_path[0] && write_json(R, m, reasons, nfail) < 0)
        st = 2;
    free(m);
    free_run(R);
    return st;
}
