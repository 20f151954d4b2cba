/*
 * herald-bench --self-test: checks of the parts whose mistakes would make
 * the bench report wrong figures without failing: histogram arithmetic,
 * the WebSocket codec and handshake check, the line scanner and the
 * missing/duplicate accounting. Registered as a unit test in meson.
 */
#include "hb_bench.h"
#include "hb_line.h"
#include "hb_scrape.h"
#include "hb_ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fails;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "self-test %s:%d: CHECK(%s) failed\n", __FILE__, \
                    __LINE__, #cond);                                        \
            fails++;                                                         \
        }                                                                    \
    } while (0)

static void
test_hist(void)
{
    hb_hist_t *h = malloc(sizeof(*h));
    hb_hist_t *h2 = malloc(sizeof(*h2));

    /* every value lies in its bucket, buckets are contiguous, narrow */
    unsigned prev = 0;
    for (uint64_t v = 0; v < 2000000; v += (v < 5000 ? 1 : v / 97)) {
        unsigned i = hb_hist_index(v);
        CHECK(i < HB_HIST_BUCKETS);
        CHECK(hb_hist_lowest(i) <= v && v <= hb_hist_highest(i));
        CHECK(i >= prev);
        prev = i;
        if (v >= 2 * HB_HIST_SUB)
            CHECK((double) (hb_hist_highest(i) - hb_hist_lowest(i) + 1)
                  <= (double) v / HB_HIST_SUB + 1);
    }
    for (unsigned i = 1; i < HB_HIST_BUCKETS; i++)
        CHECK(hb_hist_lowest(i) == hb_hist_highest(i - 1) + 1);
    CHECK(hb_hist_index(UINT64_MAX) == HB_HIST_BUCKETS - 1);
    CHECK(hb_hist_index(127) == 127 && hb_hist_index(128) == 128);

    /* quantiles of 1..100000 us within the bucket precision */
    hb_hist_init(h);
    for (uint64_t v = 1; v <= 100000; v++)
        hb_hist_add(h, v * 1000);
    CHECK(h->count == 100000);
    CHECK(h->min_ns == 1000 && h->max_ns == 100000000);
    double p50 = (double) hb_hist_quantile(h, 0.5);
    double p99 = (double) hb_hist_quantile(h, 0.99);
    CHECK(p50 >= 50000000.0 && p50 <= 50000000.0 * 1.02);
    CHECK(p99 >= 99000000.0 && p99 <= 99000000.0 * 1.02);
    CHECK(hb_hist_quantile(h, 1.0) == 100000000);
    CHECK(hb_hist_mean(h) > 50000000.0 && hb_hist_mean(h) < 50001000.0);

    /* merging two halves gives the same quantiles as one */
    hb_hist_init(h2);
    hb_hist_t *a = malloc(sizeof(*a));
    hb_hist_init(a);
    for (uint64_t v = 1; v <= 100000; v++)
        hb_hist_add(v % 2 ? a : h2, v * 1000);
    hb_hist_merge(h2, a);
    CHECK(h2->count == h->count);
    CHECK(hb_hist_quantile(h2, 0.99) == hb_hist_quantile(h, 0.99));
    CHECK(h2->min_ns == 1000 && h2->max_ns == 100000000);
    hb_hist_init(a);
    CHECK(hb_hist_quantile(a, 0.5) == 0);
    free(a);
    free(h);
    free(h2);
}

static void
test_ws(void)
{
    /* RFC 6455 section 1.3 example */
    char key[HB_WS_KEY_LEN + 1], acc[HB_WS_ACCEPT_LEN + 1];
    hb_ws_make_key((const uint8_t *) "the sample nonce", key, acc);
    CHECK(strcmp(key, "dGhlIHNhbXBsZSBub25jZQ==") == 0);
    CHECK(strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);

    char req[1024];
    int  n = hb_ws_request(req, sizeof(req), "127.0.0.1:8080", "/", key,
                           "herald.v1");
    CHECK(n > 0
          && strstr(req, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
              != NULL);
    CHECK(strstr(req, "Sec-WebSocket-Protocol: herald.v1\r\n") != NULL);
    CHECK(n >= 4 && memcmp(req + n - 4, "\r\n\r\n", 4) == 0);
    CHECK(hb_ws_request(req, 20, "h", "/", key, NULL) == -1);

    const char *ok =
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\n"
        "Connection: keep-alive, Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x00";
    int  st;
    long hdr = (long) (strstr(ok, "\r\n\r\n") - ok) + 4;
    long h = hb_ws_check_response(ok, (size_t) hdr + 2, acc, &st);
    CHECK(h == hdr && st == 101);
    CHECK(hb_ws_check_response(ok, 40, acc, &st) == 0);
    const char *bad =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: AAAALMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    CHECK(hb_ws_check_response(bad, strlen(bad), acc, &st) == -2);
    const char *no = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
    CHECK(hb_ws_check_response(no, strlen(no), acc, &st) == -1 && st == 403);

    /* a masked client frame unmasks to the payload */
    uint8_t  fr[200];
    uint32_t mask = 0xA1B2C3D4u;
    size_t   hl = hb_ws_frame_header(fr, HB_WS_OP_TEXT, 5, mask);
    CHECK(hl == 6 && fr[0] == 0x81 && fr[1] == (0x80 | 5));
    memcpy(fr + hl, "hello", 5);
    hb_ws_mask(fr + hl, 5, mask, 0);
    CHECK(memcmp(fr + hl, "hello", 5) != 0);
    for (int i = 0; i < 5; i++)
        fr[hl + i] ^= fr[2 + (i % 4)];
    CHECK(memcmp(fr + hl, "hello", 5) == 0);
    /* masking in pieces equals masking at once */
    uint8_t x[37], y[37];
    for (int i = 0; i < 37; i++)
        x[i] = y[i] = (uint8_t) (i * 7);
    hb_ws_mask(x, 37, mask, 0);
    hb_ws_mask(y, 3, mask, 0);
    hb_ws_mask(y + 3, 34, mask, 3);
    CHECK(memcmp(x, y, 37) == 0);
    CHECK(hb_ws_frame_header(fr, HB_WS_OP_TEXT, 300, mask) == 8
          && fr[1] == (0x80 | 126));
    CHECK(hb_ws_frame_header(fr, HB_WS_OP_TEXT, 70000, mask) == 14
          && fr[1] == (0x80 | 127));

    /* server frames */
    hb_ws_frame_t f;
    uint8_t       s1[] = { 0x81, 0x03, 'a', 'b', 'c', 0x89 };
    CHECK(hb_ws_parse(s1, sizeof(s1), 1 << 20, &f) == 5);
    CHECK(f.fin && f.opcode == HB_WS_OP_TEXT && f.len == 3
          && memcmp(f.payload, "abc", 3) == 0);
    CHECK(hb_ws_parse(s1, 4, 1 << 20, &f) == 0);
    CHECK(hb_ws_parse(s1 + 5, 1, 1 << 20, &f) == 0);
    uint8_t s2[4 + 300] = { 0x01, 126, 1, 44 };
    CHECK(hb_ws_parse(s2, sizeof(s2), 1 << 20, &f) == 304 && !f.fin
          && f.len == 300);
    CHECK(hb_ws_parse(s2, sizeof(s2), 100, &f) == -1);
    uint8_t s3[10] = { 0x80, 127, 0, 0, 0, 0, 0, 1, 0, 0 };
    CHECK(hb_ws_parse(s3, sizeof(s3), 1 << 20, &f) == 0); /* needs 65536 */
    uint8_t masked[] = { 0x81, 0x81, 1, 2, 3, 4, 'x' };
    CHECK(hb_ws_parse(masked, sizeof(masked), 1 << 20, &f) == -1);
    uint8_t fragping[] = { 0x09, 0x00 };
    CHECK(hb_ws_parse(fragping, 2, 1 << 20, &f) == -1);
    uint8_t rsv[] = { 0xC1, 0x00 };
    CHECK(hb_ws_parse(rsv, 2, 1 << 20, &f) == -1);
    uint8_t bigping[] = { 0x89, 126, 0, 200 };
    CHECK(hb_ws_parse(bigping, 4, 1 << 20, &f) == -1);
}

static void
test_line(void)
{
    hb_line_t   L;
    const char *pub = "{\"push\":{\"channel\":\"hb1.42\",\"pub\":{\"offset\":"
                      "17,\"epoch\":\"e1\","
                      "\"data\":{\"t\":1700000000123456789,\"s\":3,\"p\":0,"
                      "\"x\":\"offset\"}}}}";
    CHECK(hb_line_parse(pub, strlen(pub), &L) == HB_L_PUB);
    CHECK(L.chan_len == 6 && memcmp(L.chan, "hb1.42", 6) == 0);
    CHECK(L.offset == 17 && L.t_ns == 1700000000123456789LL);

    const char *gap = "{\"push\":{\"channel\":\"c\",\"gap\":{\"from\":43,"
                      "\"to\":57,\"epoch\":\"e\"}}}";
    CHECK(hb_line_parse(gap, strlen(gap), &L) == HB_L_GAP && L.from == 43
          && L.to == 57);

    const char *res = "{\"id\":100007,\"result\":{\"offset\":41}}";
    CHECK(hb_line_parse(res, strlen(res), &L) == HB_L_RESULT && L.id == 100007
          && L.offset == 41);
    const char *res2 = "{\"id\":1,\"result\":{\"client\":\"x\",\"worker\":0}}";
    CHECK(hb_line_parse(res2, strlen(res2), &L) == HB_L_RESULT && L.id == 1
          && L.offset == -1);
    const char *err = "{\"id\":2,\"error\":{\"code\":403,\"message\":\"no "
                      "\\\"id\\\" here\"}}";
    CHECK(hb_line_parse(err, strlen(err), &L) == HB_L_ERROR && L.id == 2
          && L.code == 403);
    const char *noid =
        "{\"error\":{\"code\":400,\"message\":\"invalid JSON\"}}";
    CHECK(hb_line_parse(noid, strlen(noid), &L) == HB_L_ERROR_NOID
          && L.code == 400);
    const char *spaced = "{\"id\": 5, \"result\": {\"offset\": 9}}";
    CHECK(hb_line_parse(spaced, strlen(spaced), &L) == HB_L_RESULT && L.id == 5
          && L.offset == 9);
    const char *http = "{\"result\":{\"offset\":12}}";
    CHECK(hb_line_parse(http, strlen(http), &L) == HB_L_RESULT && L.id == -1
          && L.offset == 12);
    CHECK(hb_line_parse("garbage", 7, &L) == HB_L_OTHER);
    CHECK(hb_line_parse("{\"push\":{}}", 11, &L) == HB_L_OTHER);
    /* the scanner must not read past len */
    CHECK(hb_line_parse(res, 14, &L) != HB_L_RESULT || L.offset == -1);
}

static void
test_track(void)
{
    hb_track_t        t;
    hb_track_counts_t n;

    /* in order after base: nothing wrong */
    memset(&n, 0, sizeof(n));
    hb_track_init(&t);
    hb_track_base(&t, 10, &n);
    for (int64_t o = 11; o <= 20; o++)
        hb_track_push(&t, o, 0, 0, &n);
    CHECK(n.missing == 0 && n.duplicates == 0 && hb_track_behind(&t, 20) == 0);
    CHECK(hb_track_behind(&t, 25) == 5);

    /* a hole, a repeat, a step back */
    hb_track_push(&t, 23, 0, 0, &n);
    CHECK(n.missing == 2);
    hb_track_push(&t, 23, 0, 0, &n);
    hb_track_push(&t, 21, 0, 0, &n);
    CHECK(n.duplicates == 2 && t.last == 23);

    /* the first push skips base + 1 */
    memset(&n, 0, sizeof(n));
    hb_track_init(&t);
    hb_track_base(&t, 0, &n);
    hb_track_push(&t, 3, 0, 0, &n);
    CHECK(n.missing == 2);
    /* at or below base is a duplicate */
    hb_track_init(&t);
    memset(&n, 0, sizeof(n));
    hb_track_base(&t, 5, &n);
    hb_track_push(&t, 5, 0, 0, &n);
    CHECK(n.duplicates == 1 && n.missing == 0);

    /* pushes overtaking the result are checked when it arrives */
    memset(&n, 0, sizeof(n));
    hb_track_init(&t);
    hb_track_push(&t, 8, 0, 0, &n);
    hb_track_push(&t, 9, 0, 0, &n);
    hb_track_base(&t, 7, &n);
    CHECK(n.missing == 0 && n.duplicates == 0);
    hb_track_init(&t);
    hb_track_push(&t, 9, 0, 0, &n);
    hb_track_base(&t, 7, &n);
    CHECK(n.missing == 1);

    /* a gap push counts its range as missing, announced */
    memset(&n, 0, sizeof(n));
    hb_track_init(&t);
    hb_track_base(&t, 0, &n);
    hb_track_push(&t, 1, 0, 0, &n);
    hb_track_push(&t, 2, 4, 1, &n);
    hb_track_push(&t, 5, 0, 0, &n);
    CHECK(n.missing == 3 && n.missing_gap == 3 && n.duplicates == 0
          && t.last == 5);

    /* never received anything: behind counts from base */
    hb_track_init(&t);
    hb_track_base(&t, 4, &n);
    CHECK(hb_track_behind(&t, 10) == 6 && hb_track_behind(&t, 4) == 0);
}

static void
test_scrape(void)
{
    const char *text =
        "# HELP herald_process_cpu_seconds_total x\n"
        "# TYPE herald_process_cpu_seconds_total counter\n"
        "herald_process_cpu_seconds_total{process=\"master\"} 0.5\n"
        "herald_process_cpu_seconds_total{process=\"worker\",worker=\"0\"} "
        "1.25\n"
        "herald_process_cpu_seconds_total_other 99\n"
        "herald_messages_delivered_total{worker=\"0\"} 100\n"
        "herald_messages_delivered_total{worker=\"1\"} 23\n"
        "herald_connections{worker=\"0\"} 7\n"
        "herald_connections_accepted_total{worker=\"0\"} 9\n"
        "herald_workers{state=\"running\"} 2\n"
        "herald_workers{state=\"starting\"} 1\n"
        "herald_process_resident_memory_bytes{process=\"master\"} 1e6";
    hb_scrape_t s;
    memset(&s, 0, sizeof(s));
    hb_scrape_parse(text, strlen(text), &s);
    CHECK(s.cpu_seconds == 1.75 && s.cpu_master == 0.5);
    CHECK(s.delivered == 123 && s.connections == 7 && s.accepted == 9);
    CHECK(s.workers == 2 && s.rss_bytes == 1e6);

    char host[64], path[64];
    int  port;
    CHECK(hb_parse_http_url("http://127.0.0.1:9090/metrics", host, sizeof(host),
                            &port, path, sizeof(path))
          == 0);
    CHECK(strcmp(host, "127.0.0.1") == 0 && port == 9090
          && strcmp(path, "/metrics") == 0);
    CHECK(hb_parse_http_url("ws://h", host, sizeof(host), &port, path,
                            sizeof(path))
              == 0
          && port == 80 && strcmp(path, "/") == 0);
    CHECK(hb_parse_http_url("ws://h:0/", host, sizeof(host), &port, path,
                            sizeof(path))
          == -1);
    CHECK(hb_parse_http_url("https://h/", host, sizeof(host), &port, path,
                            sizeof(path))
          == -1);
}

static void
test_codes(void)
{
    hb_codes_t a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    hb_codes_add(&a, 1006, 2);
    hb_codes_add(&a, 4000, 1);
    hb_codes_add(&b, 1006, 3);
    hb_codes_merge(&a, &b);
    CHECK(a.n == 2 && a.code[0] == 1006 && a.count[0] == 5);
    for (uint32_t i = 0; i < HB_MAX_CODES + 5; i++)
        hb_codes_add(&b, 5000 + i, 1);
    CHECK(b.n == HB_MAX_CODES && b.other == 6);
}

/* #16 item 16: TEST_DURATION=300000 is five minutes, as in the seeds */
static void
test_durations(void)
{
    CHECK(hb_parse_duration("300000", true) == 300.0);
    CHECK(hb_parse_duration("1800000", true) == 1800.0);
    CHECK(hb_parse_duration("1500", true) == 1.5);
    CHECK(hb_parse_duration("30s", true) == 30.0);
    CHECK(hb_parse_duration("500ms", true) == 0.5);
    CHECK(hb_parse_duration("2m", true) == 120.0);
    /* options keep bare seconds */
    CHECK(hb_parse_duration("10", false) == 10.0);
    CHECK(hb_parse_duration("250ms", false) == 0.25);
    CHECK(hb_parse_duration("", true) < 0);
    CHECK(hb_parse_duration("5h", true) < 0);
    CHECK(hb_parse_duration("-1", true) < 0);
    CHECK(hb_parse_duration("x", false) < 0);
}

int
hb_selftest(void)
{
    fails = 0;
    test_hist();
    test_ws();
    test_line();
    test_track();
    test_scrape();
    test_codes();
    test_durations();
    if (fails == 0)
        printf("herald-bench self-test: ok\n");
    return fails;
}
