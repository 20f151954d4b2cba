#include <string.h>

#include "hd_hash.h"
#include "hd_keyguard.h"
#include "hd_limits.h"
#include "hd_worker_int.h"

#define PROBE 8 /* slots looked at per key; the stalest is reused */

typedef struct kg {
    unsigned char key[17];
    uint8_t       klen; /* 0: free */
    uint32_t      fails;
    uint64_t      since_ms; /* start of the current window */
} kg_t;

static kg_t T[HD_KEYGUARD_SLOTS];

static uint64_t
window_ms(void)
{
    return (uint64_t) hd_w.conf->api_auth_fail_window_ms;
}

/* The entry of sa (NULL if none and !create). */
static kg_t *
find(const struct sockaddr *sa, uint64_t now_ms, bool create)
{
    unsigned char key[17];
    size_t        klen = hd_limits_addr_key(sa, 64, key);
    kg_t         *stalest = NULL;
    uint64_t      h;

    if (klen == 0)
        return NULL;
    h = hd_hash_bytes(key, klen);
    for (unsigned i = 0; i < PROBE; i++) {
        kg_t *e = &T[(h + i) & (HD_KEYGUARD_SLOTS - 1)];
        if (e->klen == klen && memcmp(e->key, key, klen) == 0) {
            if (now_ms - e->since_ms >= window_ms()) {
                e->fails = 0; /* its window is over: start afresh */
                e->since_ms = now_ms;
            }
            return e;
        }
        if (stalest == NULL || e->klen == 0
            || (stalest->klen != 0 && e->since_ms < stalest->since_ms))
            stalest = e;
    }
    if (!create)
        return NULL;
    /* a table full of attackers costs the oldest record, never memory */
    memset(stalest, 0, sizeof(*stalest));
    memcpy(stalest->key, key, klen);
    stalest->klen = (uint8_t) klen;
    stalest->since_ms = now_ms;
    return stalest;
}

bool
hd_keyguard_allowed(const struct sockaddr *sa, uint64_t now_ms,
                    unsigned *retry_s)
{
    kg_t    *e;
    uint32_t limit = (uint32_t) hd_w.conf->api_auth_fail_limit;

    if (limit == 0 || (e = find(sa, now_ms, false)) == NULL || e->fails < limit)
        return true;
    if (retry_s != NULL) {
        uint64_t left = window_ms() - (now_ms - e->since_ms);
        *retry_s = (unsigned) ((left + 999) / 1000);
        if (*retry_s == 0)
            *retry_s = 1;
    }
    return false;
}

bool
hd_keyguard_failed(const struct sockaddr *sa, uint64_t now_ms)
{
    kg_t    *e;
    uint32_t limit = (uint32_t) hd_w.conf->api_auth_fail_limit;

    if (limit == 0 || (e = find(sa, now_ms, true)) == NULL)
        return false;
    if (e->fails < UINT32_MAX)
        e->fails++;
    return e->fails == limit;
}

void
hd_keyguard_reset(void)
{
    memset(T, 0, sizeof(T));
}
