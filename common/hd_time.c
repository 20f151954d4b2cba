#include <time.h>

#include "hd_time.h"

static uint64_t
clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

uint64_t
hd_mono_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}
uint64_t
hd_mono_ms(void)
{
    return clock_ns(CLOCK_MONOTONIC) / 1000000ull;
}
uint64_t
hd_wall_ns(void)
{
    return clock_ns(CLOCK_REALTIME);
}
double
hd_wall_sec(void)
{
    return (double) clock_ns(CLOCK_REALTIME) / 1e9;
}
