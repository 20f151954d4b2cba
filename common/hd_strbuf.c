/* Growable text buffer; see hd_strbuf.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_alloc.h"
#include "hd_strbuf.h"

void
hd_strbuf_init(hd_strbuf_t *b, size_t hint)
{
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    if (hint > 0)
        hd_strbuf_reserve(b, hint);
}

void
hd_strbuf_free(hd_strbuf_t *b)
{
    hd_free(b->p);
    b->len = 0;
    b->cap = 0;
}

void
hd_strbuf_reset(hd_strbuf_t *b)
{
    b->len = 0;
    if (b->p != NULL)
        b->p[0] = '\0';
}

void
hd_strbuf_reserve(hd_strbuf_t *b, size_t n)
{
    if (b->cap - b->len > n) /* > leaves room for the NUL */
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= n)
        cap *= 2;
    b->p = hd_realloc(b->p, cap);
    b->cap = cap;
    b->p[b->len] = '\0';
}

void
hd_strbuf_append(hd_strbuf_t *b, const void *data, size_t n)
{
    hd_strbuf_reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void
hd_strbuf_puts(hd_strbuf_t *b, const char *s)
{
    hd_strbuf_append(b, s, strlen(s));
}

void
hd_strbuf_putc(hd_strbuf_t *b, char c)
{
    hd_strbuf_reserve(b, 1);
    b->p[b->len++] = c;
    b->p[b->len] = '\0';
}

void
hd_strbuf_printf(hd_strbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    hd_strbuf_reserve(b, (size_t) n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t) n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t) n;
}

/* Digits without printf: the exposition is mostly integers. */
void
hd_strbuf_u64(hd_strbuf_t *b, uint64_t v)
{
    char   tmp[20];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char) ('0' + v % 10);
        v /= 10;
    } while (v != 0);
    hd_strbuf_append(b, tmp + i, sizeof(tmp) - i);
}

void
hd_strbuf_i64(hd_strbuf_t *b, int64_t v)
{
    if (v < 0) {
        hd_strbuf_putc(b, '-');
        hd_strbuf_u64(b, (uint64_t) 0 - (uint64_t) v);
    } else {
        hd_strbuf_u64(b, (uint64_t) v);
    }
}

void
hd_strbuf_ns_as_sec(hd_strbuf_t *b, uint64_t ns)
{
    hd_strbuf_u64(b, ns / 1000000000u);
    uint64_t frac = ns % 1000000000u;
    if (frac == 0)
        return;
    char d[10];
    d[0] = '.';
    for (int i = 9; i >= 1; i--) {
        d[i] = (char) ('0' + frac % 10);
        frac /= 10;
    }
    size_t n = 10;
    while (d[n - 1] == '0')
        n--;
    hd_strbuf_append(b, d, n);
}
