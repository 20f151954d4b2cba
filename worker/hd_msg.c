#include <stdlib.h>
#include <string.h>

#include "hd_alloc.h"
#include "hd_msg.h"

hd_msg_t *
hd_msg_new(const char *data, size_t len)
{
    hd_msg_t *m = hd_malloc(sizeof(*m) + len + 1);
    m->refs = 1;
    m->len = (uint32_t) len;
    m->pub_ns = 0;
    memcpy(m->data, data, len);
    m->data[len] = '\0';
    return m;
}

void
hd_msg_unref(hd_msg_t *m)
{
    if (m != NULL && --m->refs == 0)
        free(m);
}
