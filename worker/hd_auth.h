/*
 * Token verification in a worker: the key set (the config's HMAC secret
 * and PEM keys, plus the JWK Set the master hands over the control
 * channel), the claim policy from the config, and the permission checks
 * that depend on claims (publish).
 *
 * Ownership: the key set is the worker's; hd_auth_verify() fills claims
 * the caller owns (hd_jwt_claims_free()).
 */
#ifndef HD_AUTH_H
#define HD_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hd_conf.h"
#include "hd_jwt.h"

/* Build the key set from conf (at worker start). */
void hd_auth_init(const hd_conf_t *conf);
void hd_auth_shutdown(void);

/*
 * Verify token with the worker's keys and the config's policy, at the
 * current wall-clock time. A kid that no key has (HD_JWT_EKID) asks the
 * master to refresh the JWK Set (it rate-limits).
 */
int hd_auth_verify(const char *token, size_t len, hd_jwt_claims_t *out);

/*
 * A JWK Set from the master: fd is a sealed memfd holding the set's JSON
 * (taken over: closed here). The set was validated by the master; a set
 * that still fails here keeps the current keys.
 */
void hd_auth_jwks_fd(int fd);

/* May a client with claims c publish on channel (namespace allows it)?
 * Applies the publish claim and auth.require_publish_claim. */
bool hd_auth_may_publish(const hd_jwt_claims_t *c, const char *chan,
                         size_t len);

#endif
