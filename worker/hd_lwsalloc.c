#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <libwebsockets.h>

#include "hd_lwsalloc.h"

/*
 * One pool per kind of block: HD_LWSALLOC_SLOTS slots of a fixed size in
 * one MAP_NORESERVE mapping. Slots are handed out from a LIFO free list,
 * else from the never-used ones in order (hw), so the pages ever touched
 * are [base, base + hw * slot): what trim gives back.
 */
typedef struct pool {
    const char *why;  /* lws' reason string for this kind */
    size_t      slot; /* bytes per slot (a larger request goes to the heap) */
    char       *base; /* NULL until first used, or when mmap() failed */
    void       *free; /* free slots; the first word of each is the next */
    uint32_t    hw;   /* slots ever handed out since the last trim */
    uint32_t    used; /* slots handed out now */
    bool        failed;
} pool_t;

static pool_t P[] = {
    { .why = "ah struct", .slot = 1024 },
    { .why = "ah data", .slot = 4096 },
};
#define NPOOLS (sizeof(P) / sizeof(P[0]))

static pool_t *
pool_of(const void *p)
{
    for (size_t i = 0; i < NPOOLS; i++)
        if (P[i].base != NULL && (const char *) p >= P[i].base
            && (const char *) p < P[i].base + P[i].slot * HD_LWSALLOC_SLOTS)
            return &P[i];
    return NULL;
}

static void *
get(pool_t *pl)
{
    void *s;

    if (pl->base == NULL) {
        if (pl->failed)
            return NULL;
        pl->base = mmap(NULL, pl->slot * HD_LWSALLOC_SLOTS,
                        PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (pl->base == MAP_FAILED) {
            pl->base = NULL;
            pl->failed = true; /* the heap then, as lws would */
            return NULL;
        }
    }
    if (pl->free != NULL) {
        s = pl->free;
        memcpy(&pl->free, s, sizeof(void *));
    } else if (pl->hw < HD_LWSALLOC_SLOTS) {
        s = pl->base + (size_t) pl->hw++ * pl->slot;
    } else {
        return NULL; /* more handshakes at once than slots: the heap */
    }
    pl->used++;
    return s;
}

static void
put(pool_t *pl, void *s)
{
    memcpy(s, &pl->free, sizeof(void *));
    pl->free = s;
    pl->used--;
}

void *
hd_lwsalloc_realloc(void *p, size_t n, const char *why)
{
    pool_t *pl = p != NULL ? pool_of(p) : NULL;

    if (pl != NULL) {
        void *r = NULL;
        if (n > 0) {
            /* lws does not resize these; if it ever does: to the heap */
            r = malloc(n);
            if (r == NULL)
                return NULL; /* p stays valid, as with realloc() */
            memcpy(r, p, n < pl->slot ? n : pl->slot);
        }
        put(pl, p);
        return r;
    }
    if (n == 0) {
        free(p);
        return NULL;
    }
    if (p == NULL && why != NULL) {
        for (size_t i = 0; i < NPOOLS; i++) {
            if (n <= P[i].slot && strcmp(why, P[i].why) == 0) {
                void *s = get(&P[i]);
                if (s != NULL)
                    return s;
                break;
            }
        }
    }
    /* NULL on failure, as lws' own allocator: lws handles it */
    return realloc(p, n);
}

size_t
hd_lwsalloc_in_use(void)
{
    size_t n = 0;

    for (size_t i = 0; i < NPOOLS; i++)
        n += P[i].used;
    return n;
}

void
hd_lwsalloc_trim(void)
{
    for (size_t i = 0; i < NPOOLS; i++) {
        pool_t *pl = &P[i];
        if (pl->base == NULL || pl->used != 0 || pl->hw == 0)
            continue;
        /* every slot is free: forget them and drop their pages */
        (void) madvise(pl->base, (size_t) pl->hw * pl->slot, MADV_DONTNEED);
        pl->free = NULL;
        pl->hw = 0;
    }
}

void
hd_lwsalloc_init(void)
{
    lws_set_allocator(hd_lwsalloc_realloc);
}

void
hd_lwsalloc_shutdown(void)
{
    for (size_t i = 0; i < NPOOLS; i++) {
        pool_t *pl = &P[i];
        if (pl->base != NULL)
            munmap(pl->base, pl->slot * HD_LWSALLOC_SLOTS);
        pl->base = NULL;
        pl->free = NULL;
        pl->hw = pl->used = 0;
        pl->failed = false;
    }
}
