#include <errno.h>
#include <string.h>

#include "hd_envelope.h"

static int
parse_u64(const char **pp, const char *end, uint64_t *out)
{
    const char *p = *pp;
    uint64_t    v = 0;

    if (p >= end || *p < '0' || *p > '9')
        return -EINVAL;
    if (*p == '0' && p + 1 < end && p[1] >= '0' && p[1] <= '9')
        return -EINVAL; /* no leading zeros */
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned) (*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE; /* overflow */
        v = v * 10 + d;
    }
    *pp = p;
    *out = v;
    return 0;
}

int
hd_epoch_valid(const char *s, size_t len)
{
    if (len == 0 || len > HD_EPOCH_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

int
hd_envelope_decode(const char *buf, size_t len, hd_envelope_t *out)
{
    const char *p = buf, *end = buf + len, *e;

    memset(out, 0, sizeof(*out));
    if (len < 2 || p[0] != '1' || p[1] != ' ')
        return -EINVAL;
    p += 2;
    if (parse_u64(&p, end, &out->offset) < 0 || out->offset == 0)
        return -EINVAL;
    if (p >= end || *p++ != ' ')
        return -EINVAL;
    e = memchr(p, ' ', (size_t) (end - p));
    if (e == NULL || !hd_epoch_valid(p, (size_t) (e - p)))
        return -EINVAL;
    out->epoch = p;
    out->epoch_len = (size_t) (e - p);
    p = e + 1;
    if (parse_u64(&p, end, &out->pub_us) < 0)
        return -EINVAL;
    if (p >= end || *p++ != ' ')
        return -EINVAL;
    if (p >= end)
        return -EINVAL;
    out->data = p;
    out->data_len = (size_t) (end - p);
    return 0;
}
