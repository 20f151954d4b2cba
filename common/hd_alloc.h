/*
 * Allocation wrappers. They abort the process on out-of-memory, as Redis'
 * zmalloc does: per-connection memory in herald is bounded by design, so an
 * allocation failure means the box is broken, not that a client is abusive.
 * Callers never check for NULL.
 */
#ifndef HD_ALLOC_H
#define HD_ALLOC_H

#include <stddef.h>

void *hd_malloc(size_t n);
void *hd_calloc(size_t nmemb, size_t size);
void *hd_realloc(void *p, size_t n);
char *hd_strdup(const char *s);
char *hd_strndup(const char *s, size_t n);
/* printf into a fresh heap string; caller frees. */
char *hd_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define hd_free(p)  \
    do {            \
        free(p);    \
        (p) = NULL; \
    } while (0)

#endif
