/* herald-bench: scanner for herald's pushes and replies (see hb_line.h). */
#include "hb_line.h"

#include <string.h>

/* Find "key" (quoted, in key position) in [p, e) and return a pointer just
 * past its ':' (spaces skipped), or NULL. */
static const char *
key(const char *p, const char *e, const char *k)
{
    size_t kl = strlen(k);

    while (p < e) {
        const char *q = memmem(p, (size_t) (e - p), k, kl);
        if (q == NULL)
            return NULL;
        const char *r = q + kl;
        while (r < e && (*r == ' ' || *r == '\t'))
            r++;
        if (r < e && *r == ':') {
            r++;
            while (r < e && (*r == ' ' || *r == '\t'))
                r++;
            return r;
        }
        p = q + 1;
    }
    return NULL;
}

/* Parse a non-negative decimal integer at p; -1 when there is none. */
static int64_t
num(const char *p, const char *e)
{
    int64_t v = 0;
    int     any = 0;

    if (p == NULL)
        return -1;
    while (p < e && *p >= '0' && *p <= '9' && v < INT64_MAX / 10 - 10) {
        v = v * 10 + (*p++ - '0');
        any = 1;
    }
    return any ? v : -1;
}

int
hb_line_parse(const char *s, size_t len, hb_line_t *out)
{
    const char *e = s + len;
    const char *p;

    memset(out, 0, sizeof(*out));
    out->id = out->offset = out->t_ns = out->from = out->to = -1;
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\r'))
        s++;
    if (s == e || *s != '{')
        return out->kind = HB_L_OTHER;

    /* pushes start with "push"; herald writes it first */
    if (e - s > 8 && memcmp(s + 1, "\"push\"", 6) == 0) {
        p = key(s, e, "\"channel\"");
        if (p == NULL || p >= e || *p != '"')
            return out->kind = HB_L_OTHER;
        const char *q = memchr(p + 1, '"', (size_t) (e - p - 1));
        if (q == NULL)
            return out->kind = HB_L_OTHER;
        out->chan = p + 1;
        out->chan_len = (size_t) (q - p - 1);
        const char *pub = key(q, e, "\"pub\"");
        if (pub != NULL) {
            /* offset precedes data in herald's output; search before data so
             * a publisher's own "offset" key could never be mistaken */
            const char *data = key(pub, e, "\"data\"");
            out->offset = num(key(pub, data ? data : e, "\"offset\""), e);
            if (data != NULL)
                out->t_ns = num(key(data, e, "\"t\""), e);
            return out->kind = out->offset >= 0 ? HB_L_PUB : HB_L_OTHER;
        }
        const char *gap = key(q, e, "\"gap\"");
        if (gap != NULL) {
            out->from = num(key(gap, e, "\"from\""), e);
            out->to = num(key(gap, e, "\"to\""), e);
            return out->kind = (out->from >= 0 && out->to >= out->from)
                ? HB_L_GAP
                : HB_L_OTHER;
        }
        return out->kind = HB_L_OTHER;
    }

    p = key(s, e, "\"id\"");
    out->id = num(p, e);
    const char *err = key(s, e, "\"error\"");
    if (err != NULL) {
        out->code = (int) num(key(err, e, "\"code\""), e);
        return out->kind = out->id >= 0 ? HB_L_ERROR : HB_L_ERROR_NOID;
    }
    /* a result without an id is the HTTP API's reply body */
    const char *res = key(s, e, "\"result\"");
    if (res != NULL) {
        out->offset = num(key(res, e, "\"offset\""), e);
        return out->kind = HB_L_RESULT;
    }
    return out->kind = HB_L_OTHER;
}

void
hb_track_init(hb_track_t *t)
{
    t->base = t->first = t->last = -1;
}

void
hb_track_push(hb_track_t *t, int64_t o, int64_t to, int gap,
              hb_track_counts_t *n)
{
    if (t->last < 0) {
        if (t->base >= 0) {
            if (o <= t->base) {
                n->duplicates++;
                return;
            }
            if (o > t->base + 1)
                n->missing += (uint64_t) (o - t->base - 1);
        }
        t->first = o;
    } else if (o <= t->last) {
        n->duplicates++;
        return;
    } else if (o > t->last + 1) {
        n->missing += (uint64_t) (o - t->last - 1);
    }
    if (gap) {
        n->missing += (uint64_t) (to - o + 1);
        n->missing_gap += (uint64_t) (to - o + 1);
        t->last = to;
    } else {
        t->last = o;
    }
}

void
hb_track_base(hb_track_t *t, int64_t base, hb_track_counts_t *n)
{
    t->base = base;
    if (t->first < 0)
        return;
    /* pushes overtook the result: the first one must follow base */
    if (t->first <= base)
        n->duplicates++;
    else if (t->first > base + 1)
        n->missing += (uint64_t) (t->first - base - 1);
}

int64_t
hb_track_behind(const hb_track_t *t, int64_t final)
{
    int64_t have = t->last >= 0 ? t->last : t->base;
    return final > have ? final - have : 0;
}
