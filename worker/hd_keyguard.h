/*
 * Throttling of wrong HTTP API keys per client address: an address that
 * sent api.auth_fail_limit requests with a missing or wrong key within
 * api.auth_fail_window_ms gets 429 (its key not even compared) until the
 * window that began with its first failure is over. One table per worker,
 * bounded (HD_KEYGUARD_SLOTS addresses; when full, the entry whose window
 * is oldest is reused), keyed by a per-process SipHash of the address
 * (IPv6 by /64, as the per-IP connection limit).
 */
#ifndef HD_KEYGUARD_H
#define HD_KEYGUARD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define HD_KEYGUARD_SLOTS 4096

/* The address may try a key now (false: throttled; *retry_s, if not NULL,
 * gets the seconds until it may again, at least 1). */
bool hd_keyguard_allowed(const struct sockaddr *sa, uint64_t now_ms,
                         unsigned *retry_s);
/* It sent a missing or wrong key. Returns true when this failure is the
 * one that reached the limit (log it once). */
bool hd_keyguard_failed(const struct sockaddr *sa, uint64_t now_ms);
/* Forget everything (tests). */
void hd_keyguard_reset(void);

#endif
