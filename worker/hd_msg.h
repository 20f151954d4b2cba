/*
 * Outbound messages: immutable, refcounted byte strings. A push is
 * serialized once per worker and the same hd_msg_t sits in every local
 * subscriber's queue; a reply is a hd_msg_t with one reference.
 * Single-threaded (the worker loop): plain integer refcounts.
 */
#ifndef HD_MSG_H
#define HD_MSG_H

#include <stddef.h>
#include <stdint.h>

typedef struct hd_msg {
    uint32_t refs;
    uint32_t len;
    uint64_t pub_ns; /* publish wall time for delivery latency; 0 = none */
    char     data[];
} hd_msg_t;

hd_msg_t *hd_msg_new(const char *data, size_t len);
static inline hd_msg_t *
hd_msg_ref(hd_msg_t *m)
{
    m->refs++;
    return m;
}
void hd_msg_unref(hd_msg_t *m);

#endif
