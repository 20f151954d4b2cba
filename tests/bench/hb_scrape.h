/*
 * herald-bench: read herald's Prometheus text (GET /metrics on the admin
 * server) and sum the series the benchmark reports against. Blocking, with
 * a timeout; called by the parent process only, between phases.
 */
#ifndef HB_SCRAPE_H
#define HB_SCRAPE_H

#include <stddef.h>
#include <stdint.h>

typedef struct hb_scrape {
    int    ok;          /* 1 when the scrape succeeded */
    double wall;        /* CLOCK_REALTIME seconds when it was taken */
    double cpu_seconds; /* sum of herald_process_cpu_seconds_total */
    double cpu_master;  /* ... the process="master" series only */
    double rss_bytes;   /* sum of herald_process_resident_memory_bytes */
    double delivered;   /* sum of herald_messages_delivered_total */
    double published;   /* sum of herald_messages_published_total */
    double received;    /* sum of herald_messages_received_total */
    double connections; /* sum of herald_connections */
    double accepted;    /* sum of herald_connections_accepted_total */
    double rejected;    /* sum of herald_connections_rejected_total */
    double bytes_sent;  /* sum of herald_bytes_sent_total */
    double workers;     /* herald_workers{state="running"} */
} hb_scrape_t;

/*
 * GET url (http://host:port/path, IPv4 literal or name) and fill *out.
 * Returns 0, or -1 with a message in err (errlen bytes) when the request
 * failed, timed out (timeout_ms) or was not a 200. *out is zeroed first.
 */
int hb_scrape(const char *url, int timeout_ms, hb_scrape_t *out, char *err,
              size_t errlen);

/* Parse Prometheus text (len bytes) into *out (sums only; ok/wall are left
 * alone). Exposed for the self-test. */
void hb_scrape_parse(const char *text, size_t len, hb_scrape_t *out);

/*
 * Blocking HTTP request helper shared with the kernel probe and the
 * scraper: connect to host:port, send req (reqlen bytes), read the whole
 * response until the server closes (the request must say Connection:
 * close). Returns a heap buffer (caller frees) of *outlen bytes, NUL
 * terminated, or NULL with a message in err.
 */
char *hb_http_fetch(const char *host, int port, const char *req, size_t reqlen,
                    int timeout_ms, size_t *outlen, char *err, size_t errlen);

/* Split http://host[:port][/path] into parts. Returns 0 or -1. */
int hb_parse_http_url(const char *url, char *host, size_t hostcap, int *port,
                      char *path, size_t pathcap);

#endif
