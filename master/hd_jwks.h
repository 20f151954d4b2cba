/*
 * The master's JWK Set: read from auth.jwks_file or fetched from
 * auth.jwks_url (libcurl multi on the master's libevent loop, so a slow
 * identity provider never blocks signals, reaping or the admin server),
 * refreshed every auth.jwks_refresh_s and on a worker's unknown-kid
 * report (at most once per auth.jwks_min_refresh_s), validated, and
 * handed to every worker as a sealed memfd over its control socket
 * (HD_CTL_JWKS). A failed fetch or an invalid set keeps the last good one.
 */
#ifndef HD_JWKS_H
#define HD_JWKS_H

#include <event2/event.h>

#include "hd_conf.h"
#include "hd_strbuf.h"

/* Start with conf (kept by pointer until the next hd_jwks_reconf()). */
void hd_jwks_start(struct event_base *base, const hd_conf_t *conf);
/* A reload swapped the config: re-read or re-fetch at once. */
void hd_jwks_reconf(const hd_conf_t *conf);
void hd_jwks_stop(void);
/* A worker is ready: send it the current set (if any) on ctl_fd. */
void hd_jwks_worker_ready(int ctl_fd);
/* A worker saw an unknown kid. */
void hd_jwks_stale(void);
/* Append the herald_jwks_* families to a /metrics body. */
void hd_jwks_render(hd_strbuf_t *b);

#endif
