/* Clocks. Monotonic for intervals and timeouts, wall clock for timestamps
 * that cross processes or nodes (publish time in envelopes, start times). */
#ifndef HD_TIME_H
#define HD_TIME_H

#include <stdint.h>

uint64_t hd_mono_ns(void);
uint64_t hd_mono_ms(void);
uint64_t hd_wall_ns(void); /* CLOCK_REALTIME, ns since the epoch */
double   hd_wall_sec(void);

#endif
