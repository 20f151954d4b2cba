#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hd_alloc.h"

static void
oom(size_t n)
{
    /* no malloc, no stdio buffering: we may be out of memory */
    static const char msg[] = "herald: out of memory, aborting\n";
    (void) n;
    (void) !write(STDERR_FILENO, msg, sizeof(msg) - 1);
    abort();
}

void *
hd_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *
hd_calloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (p == NULL)
        oom(nmemb * size);
    return p;
}

void *
hd_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *
hd_strdup(const char *s)
{
    return hd_strndup(s, strlen(s));
}

char *
hd_strndup(const char *s, size_t n)
{
    char *d = hd_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *
hd_asprintf(const char *fmt, ...)
{
    va_list ap;
    int     n;
    char   *s;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    s = hd_malloc((size_t) n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t) n + 1, fmt, ap);
    va_end(ap);
    return s;
}
