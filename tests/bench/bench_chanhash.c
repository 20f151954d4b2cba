/*
 * The channel table under hash flooding (issue 16 item 3): channel names
 * are chosen by clients, so a client that can predict the table's hash
 * can make every name land in one bucket, and every lookup walks them all.
 *
 *   bench_chanhash [channels]      (default 8192)
 *
 * Names: "flood:<n>" picked by brute force so that unkeyed FNV-1a (the
 * table's hash before) puts them all in bucket 0 of a table of the final
 * size (so also of every smaller one while it grows), and "rand:<n>" as
 * the ordinary case. Each row: create every channel, then look every one
 * up LOOKUPS times; ns per create and per lookup, median of RUNS runs.
 *
 *   fnv1a table, flood names   a copy of the old table (chained, power of
 *                              two, grows at load 1) with FNV-1a: the
 *                              attack as it was
 *   herald table, flood names  the real worker/hd_chan.c table (keyed
 *                              SipHash-1-3, per-process seed) with the
 *                              same names
 *   herald table, random names the ordinary case
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hd_chan.h"
#include "hd_hash.h"

#define RUNS    5
#define LOOKUPS 4

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static int
cmp_d(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

static uint64_t
fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char) s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* ---- a copy of the old table, for the "before" row ---- */

typedef struct node {
    struct node *next;
    uint64_t     hash;
    size_t       len;
    char        *key;
} node_t;

static node_t **old_tab;
static size_t   old_cap, old_n;

static node_t *
old_find(const char *k, size_t len)
{
    uint64_t h = fnv1a(k, len);
    if (old_cap == 0)
        return NULL;
    for (node_t *n = old_tab[h & (old_cap - 1)]; n; n = n->next)
        if (n->hash == h && n->len == len && memcmp(n->key, k, len) == 0)
            return n;
    return NULL;
}

static void
old_get(const char *k, size_t len)
{
    if (old_find(k, len))
        return;
    if (old_n + 1 > old_cap) {
        size_t   nc = old_cap ? old_cap * 2 : 1024;
        node_t **nt = calloc(nc, sizeof(*nt));
        for (size_t i = 0; i < old_cap; i++)
            for (node_t *n = old_tab[i], *nx; n; n = nx) {
                nx = n->next;
                n->next = nt[n->hash & (nc - 1)];
                nt[n->hash & (nc - 1)] = n;
            }
        free(old_tab);
        old_tab = nt;
        old_cap = nc;
    }
    node_t *n = calloc(1, sizeof(*n));
    n->hash = fnv1a(k, len);
    n->key = strndup(k, len);
    n->len = len;
    n->next = old_tab[n->hash & (old_cap - 1)];
    old_tab[n->hash & (old_cap - 1)] = n;
    old_n++;
}

static void
old_clear(void)
{
    for (size_t i = 0; i < old_cap; i++)
        for (node_t *n = old_tab[i], *nx; n; n = nx) {
            nx = n->next;
            free(n->key);
            free(n);
        }
    free(old_tab);
    old_tab = NULL;
    old_cap = old_n = 0;
}

/* ---- names ---- */

/* count names that FNV-1a puts in bucket 0 of cap; *next: where the
 * search goes on, so that successive calls give new names */
static char **
flood_names(size_t count, size_t cap, uint64_t *next)
{
    char   **out = calloc(count, sizeof(*out));
    char     buf[64];
    uint64_t i = *next;

    for (size_t got = 0; got < count; i++) {
        int n = snprintf(buf, sizeof(buf), "flood:%llu",
                         (unsigned long long) i);
        if ((fnv1a(buf, (size_t) n) & (cap - 1)) == 0)
            out[got++] = strdup(buf);
    }
    *next = i;
    return out;
}

static char **
rand_names(size_t count, int r)
{
    char **out = calloc(count, sizeof(*out));
    char   buf[64];
    for (size_t i = 0; i < count; i++) {
        snprintf(buf, sizeof(buf), "rand%d:%zu:%ld", r, i, random());
        out[i] = strdup(buf);
    }
    return out;
}

enum which {
    OLD,
    NEW
};

/* one run: ns per create and per lookup */
static void
run(enum which w, char **names, size_t count, double *create_ns,
    double *lookup_ns)
{
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < count; i++) {
        if (w == OLD)
            old_get(names[i], strlen(names[i]));
        else
            (void) hd_chan_get(names[i], strlen(names[i]), 0, NULL);
    }
    uint64_t t1 = now_ns();
    size_t   found = 0;
    for (int r = 0; r < LOOKUPS; r++)
        for (size_t i = 0; i < count; i++)
            found += w == OLD
                ? old_find(names[i], strlen(names[i])) != NULL
                : hd_chan_find(names[i], strlen(names[i])) != NULL;
    uint64_t t2 = now_ns();
    if (found != count * LOOKUPS) {
        fprintf(stderr, "lookup lost channels: %zu of %zu\n", found,
                count * LOOKUPS);
        exit(1);
    }
    *create_ns = (double) (t1 - t0) / (double) count;
    *lookup_ns = (double) (t2 - t1) / (double) (count * LOOKUPS);
    if (w == OLD)
        old_clear();
}

/*
 * The real table cannot be emptied from outside and keeps its channels:
 * every run of a "herald" row gets names of its own (more flood names, or
 * random ones), in a table that holds the earlier runs' channels too.
 */
static void
row(const char *what, enum which w, bool flood, size_t count, size_t cap,
    uint64_t *next)
{
    double c[RUNS], l[RUNS];
    char **names = flood ? flood_names(count, cap, next) : NULL;

    for (int r = 0; r < RUNS; r++) {
        if (w == NEW) {
            hd_hash_reseed(); /* a fresh process key each run */
            if (r > 0 || !flood)
                names = flood ? flood_names(count, cap, next)
                              : rand_names(count, r);
        }
        run(w, names, count, &c[r], &l[r]);
    }
    qsort(c, RUNS, sizeof(double), cmp_d);
    qsort(l, RUNS, sizeof(double), cmp_d);
    printf("%-30s %10.0f %12.0f\n", what, c[RUNS / 2], l[RUNS / 2]);
}

int
main(int argc, char **argv)
{
    size_t count = argc > 1 ? strtoul(argv[1], NULL, 10) : 8192;
    size_t cap = 1024;

    if (count == 0 || count > (1u << 20)) {
        fprintf(stderr, "usage: bench_chanhash [channels 1..1048576]\n");
        return 2;
    }
    uint64_t next = 0;

    while (cap < count)
        cap <<= 1;

    printf("%zu channels, %d lookups each, median of %d runs\n", count, LOOKUPS,
           RUNS);
    printf("%-30s %10s %12s\n", "", "create ns", "lookup ns");
    row("fnv1a table, flood names", OLD, true, count, cap, &next);
    row("herald table, flood names", NEW, true, count, cap, &next);
    row("herald table, random names", NEW, false, count, cap, &next);
    return 0;
}
