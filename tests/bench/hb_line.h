/*
 * herald-bench: a scanner for the lines herald sends (docs/protocol.md):
 * pushes, replies and errors. It reads only the fields the bench needs and
 * never allocates; pointers in hb_line_t point into the scanned text.
 */
#ifndef HB_LINE_H
#define HB_LINE_H

#include <stddef.h>
#include <stdint.h>

enum hb_line_kind {
    HB_L_OTHER = 0,  /* not understood */
    HB_L_PUB,        /* {"push":{"channel":..,"pub":{"offset":..,"data":..}}} */
    HB_L_GAP,        /* {"push":{"channel":..,"gap":{"from":..,"to":..}}} */
    HB_L_RESULT,     /* {"id":N,"result":...}; id -1 for an HTTP reply body */
    HB_L_ERROR,      /* {"id":N,"error":{"code":C}} */
    HB_L_ERROR_NOID, /* {"error":{"code":C}} without a usable id */
};

typedef struct hb_line {
    int         kind;
    int64_t     id;   /* -1 when absent */
    const char *chan; /* pushes: the channel name (not NUL-terminated) */
    size_t      chan_len;
    int64_t     offset;   /* pub offset, or "offset" in a result; -1 */
    int64_t     t_ns;     /* "t" inside the pub data; -1 */
    int64_t     from, to; /* gap */
    int         code;     /* error code; 0 */
} hb_line_t;

/* Scan one line (no newline). Returns out->kind. */
int hb_line_parse(const char *s, size_t len, hb_line_t *out);

#endif

/*
 * Offset tracking for one subscription. base is the subscribe result's
 * offset (-1 until it arrives; pushes may overtake it), last the highest
 * offset seen. Everything after base must arrive exactly once, in order.
 */
typedef struct hb_track {
    int64_t base, first, last;
} hb_track_t;

typedef struct hb_track_counts {
    uint64_t missing;     /* offsets skipped (gap pushes included) */
    uint64_t missing_gap; /* ... of which a gap push announced */
    uint64_t duplicates;  /* offsets at or below one already seen */
} hb_track_counts_t;

void hb_track_init(hb_track_t *t);
/* A publication with offset o (gap = 0), or a gap push [o, to] (gap = 1). */
void hb_track_push(hb_track_t *t, int64_t o, int64_t to, int gap,
                   hb_track_counts_t *n);
/* The subscribe result arrived with offset base. */
void hb_track_base(hb_track_t *t, int64_t base, hb_track_counts_t *n);
/* Offsets up to final not received (0 when caught up). */
int64_t hb_track_behind(const hb_track_t *t, int64_t final);
