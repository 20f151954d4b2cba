/*
 * libFuzzer target for the JWK Set parser (hd_jwt_keyset_add_jwks() in
 * common/hd_jwk.c): the master loads whatever an identity provider (or a
 * file) serves. Invariants: all or nothing (a refused set adds no key),
 * the count matches, and a token can be checked against whatever was
 * accepted without a crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hd_jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)              \
    do {                      \
        if (!(x))             \
            __builtin_trap(); \
    } while (0)

/* an EdDSA token with kid "k1" (any key: it will not verify) */
static const char token[] =
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0."
    "eyJzdWIiOiJhIiwiZXhwIjo0MTAyNDQ0ODAwfQ."
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hd_jwt_keyset_t *ks = hd_jwt_keyset_new();
    char             err[160];
    size_t           skipped = 0;
    int              n;

    CHECK(hd_jwt_keyset_add_hmac(ks, "h", "secret-0123456789", 17) == 0);
    n = hd_jwt_keyset_add_jwks(ks, (const char *) data, size, &skipped, err,
                               sizeof(err));
    if (n < 0) {
        CHECK(hd_jwt_keyset_count(ks) == 1);
        CHECK(memchr(err, '\0', sizeof(err)) != NULL);
    } else {
        CHECK(hd_jwt_keyset_count(ks) == (size_t) n + 1);
    }
    (void) hd_jwt_keyset_has_kid(ks, "k1");
    {
        int rc = hd_jwt_verify_ks(token, strlen(token), ks, NULL, 1700000000,
                                  NULL);
        CHECK(rc != HD_JWT_OK); /* nobody has the key that signs zeros */
    }
    hd_jwt_keyset_free(ks);
    return 0;
}
