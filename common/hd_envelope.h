/*
 * The envelope: what the publish script PUBLISHes on a Redis channel and
 * what every worker of every node decodes. One line of text, fields
 * separated by single spaces, the data last so it needs no escaping:
 *
 *     1 <offset> <epoch> <publish_time_us> <data>
 *
 * version "1"; offset a decimal uint64 >= 1; epoch 1..32 chars of
 * [A-Za-z0-9]; publish_time_us decimal microseconds since the epoch; data
 * the publication's JSON text as validated by the publisher (non-empty).
 * Anything else is rejected: a worker never forwards what it cannot parse.
 */
#ifndef HD_ENVELOPE_H
#define HD_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#define HD_EPOCH_MAX 32

typedef struct hd_envelope {
    uint64_t    offset;
    uint64_t    pub_us;
    const char *epoch; /* points into the input, not NUL-terminated */
    size_t      epoch_len;
    const char *data; /* points into the input */
    size_t      data_len;
} hd_envelope_t;

/* Returns 0, or -EINVAL when buf is not a valid envelope. */
int hd_envelope_decode(const char *buf, size_t len, hd_envelope_t *out);
/* True when s is a valid epoch. */
int hd_epoch_valid(const char *s, size_t len);

#endif
