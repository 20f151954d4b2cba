/*
 * A growable byte buffer for building text (the metrics exposition, JSON
 * bodies, replies with many publications).
 *
 * Ownership: the buffer owns p; hd_strbuf_free() releases it and leaves an
 * empty buffer. p is always NUL-terminated (when non-NULL) so it can be
 * used as a C string; len excludes the NUL. Growth aborts on OOM
 * (hd_alloc.h), so appends cannot fail.
 */
#ifndef HD_STRBUF_H
#define HD_STRBUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct hd_strbuf {
    char  *p;
    size_t len;
    size_t cap;
} hd_strbuf_t;

#define HD_STRBUF_INIT \
    {                  \
        NULL, 0, 0     \
    }

void hd_strbuf_init(hd_strbuf_t *b, size_t hint);
void hd_strbuf_free(hd_strbuf_t *b);
void hd_strbuf_reset(hd_strbuf_t *b); /* len = 0, keeps memory */
/* Make room for n more bytes (plus the NUL). */
void hd_strbuf_reserve(hd_strbuf_t *b, size_t n);
void hd_strbuf_append(hd_strbuf_t *b, const void *data, size_t n);
void hd_strbuf_puts(hd_strbuf_t *b, const char *s);
void hd_strbuf_putc(hd_strbuf_t *b, char c);
void hd_strbuf_printf(hd_strbuf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void hd_strbuf_u64(hd_strbuf_t *b, uint64_t v);
void hd_strbuf_i64(hd_strbuf_t *b, int64_t v);
/*
 * A count of nanoseconds as exact decimal seconds with no trailing zeros:
 * 1500000000 -> "1.5", 10000 -> "0.00001", 0 -> "0".
 */
void hd_strbuf_ns_as_sec(hd_strbuf_t *b, uint64_t ns);

#endif
