/*
 * libFuzzer target for common/hd_jwt.c and common/hd_chname.c.
 *
 * Every input is tried three ways:
 *  1. as a token, verified with a fixed secret (the seeds are signed with
 *     it, so the fuzzer starts past the MAC and reaches the claims code);
 *  2. with its first byte choosing how many of the following bytes are the
 *     secret, the rest being the token;
 *  3. as a claims text: signed with hd_jwt_sign() and verified back, which
 *     must never fail on the signature or the algorithm, so every payload
 *     shape reaches the claims code.
 *  4. as a token against a key set with an HMAC secret, an Ed25519 and a
 *     P-256 key, under a policy with aud/iss/leeway/lifetime (the seeds
 *     include EdDSA and ES256 tokens signed with the keys below);
 *  5. as claims signed with EdDSA and ES256, verified back.
 * Plus base64url decode/encode round trips and the channel helpers.
 * Invariants are checked with __builtin_trap() so that a violation is a
 * crash the fuzzer reports, not a silent pass.
 *
 * Build (by hand until meson wires it; the lead owns that):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *     -Icommon tests/fuzz/fuzz_jwt.c common/hd_jwt.c common/hd_jwk.c common/hd_chname.c \
 *     common/hd_alloc.c $(pkg-config --cflags --libs jansson libcrypto) \
 *     -o fuzz_jwt
 *   ./fuzz_jwt -max_len=9000 tests/fuzz/seeds/jwt
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hd_chname.h"
#include "hd_jwt.h"

#define SECRET "fuzz-secret-0123456789abcdef!!"

/* Test keys for the public-key algorithms (made with openssl genpkey for
 * this target only; they protect nothing). */
static const char ed_priv[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIIeA4hW0wbMlSNo3ipm+5M4CnEYAPL7uNHS/HyA/MjPv\n"
    "-----END PRIVATE KEY-----\n";
static const char ed_pub[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAawDtBvbncmjzcIpzGRXH48tIMeUKeFrHwD2QSvfvkYM=\n"
    "-----END PUBLIC KEY-----\n";
static const char ec_priv[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg8d3krEN5EUe84RBf\n"
    "ZViGymWo0b1FmJ0eJT8WcFEm9++hRANCAATEPZce83LPc3ynrWFwXA3R6ImWEs1s\n"
    "lxmqqe+t/CqE7ak1lF7IbuPUkONpcRRdHXrcIRFxNsZxMhs9smo1L9YC\n"
    "-----END PRIVATE KEY-----\n";
static const char ec_pub[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAExD2XHvNyz3N8p61hcFwN0eiJlhLN\n"
    "bJcZqqnvrfwqhO2pNZReyG7j1JDjaXEUXR163CERcTbGcTIbPbJqNS/WAg==\n"
    "-----END PUBLIC KEY-----\n";

/* HMAC (kid "h"), Ed25519 (kid "ed") and P-256 (no kid), built once */
static hd_jwt_keyset_t *
keys(void)
{
    static hd_jwt_keyset_t *ks;

    if (ks == NULL) {
        ks = hd_jwt_keyset_new();
        if (hd_jwt_keyset_add_hmac(ks, "h", SECRET, strlen(SECRET)) != 0
            || hd_jwt_keyset_add_pem(ks, "ed", ed_pub, strlen(ed_pub), NULL, 0)
                != 0
            || hd_jwt_keyset_add_pem(ks, NULL, ec_pub, strlen(ec_pub), NULL, 0)
                != 0)
            __builtin_trap();
    }
    return ks;
}
#define NOW INT64_C(1700000000)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)              \
    do {                      \
        if (!(x))             \
            __builtin_trap(); \
    } while (0)

/* A successful verify must hand back claims that honour the contract. */
static void
check_claims(int rc, const hd_jwt_claims_t *c)
{
    size_t i, n;

    if (rc != HD_JWT_OK) {
        CHECK(c->sub == NULL && c->tenant == NULL && c->channels == NULL
              && c->nchannels == 0);
        return;
    }
    n = strlen(c->sub);
    CHECK(n >= 1 && n <= 255);
    CHECK(c->exp > NOW - 60); /* leeway is at most 60 here */
    if (c->tenant != NULL) {
        n = strlen(c->tenant);
        CHECK(n >= 1 && n <= 64);
    }
    if (c->channels != NULL) {
        CHECK(c->nchannels <= HD_JWT_MAX_CHANNELS);
        CHECK(c->channels[c->nchannels] == NULL);
        for (i = 0; i < c->nchannels; i++) {
            const char *e = c->channels[i];
            size_t      len = strlen(e);

            if (len > 0 && e[len - 1] == '*')
                len--;
            CHECK(hd_chname_valid(e, len));
            /* every entry allows itself (or its prefix) */
            CHECK(hd_jwt_channel_allowed(c, e, len));
        }
    } else {
        CHECK(c->nchannels == 0);
        CHECK(hd_jwt_channel_allowed(c, "x", 1));
    }
}

static void
b64_roundtrip(const uint8_t *data, size_t size)
{
    static uint8_t dec[HD_JWT_MAX_LEN];
    static char    enc[HD_JWT_MAX_LEN * 2];
    long           n;
    size_t         m;

    if (size > HD_JWT_MAX_LEN)
        size = HD_JWT_MAX_LEN;

    /* decode anything; what decodes must re-encode to the same text
     * (canonical input only) */
    n = hd_b64url_decode((const char *) data, size, dec, sizeof(dec));
    if (n >= 0) {
        m = hd_b64url_encode(dec, (size_t) n, enc, sizeof(enc));
        CHECK(m == size && memcmp(enc, data, size) == 0);
    }

    /* encode anything; it must decode back */
    m = hd_b64url_encode(data, size, enc, sizeof(enc));
    CHECK(m < sizeof(enc) && strlen(enc) == m);
    n = hd_b64url_decode(enc, m, dec, sizeof(dec));
    CHECK(n == (long) size && memcmp(dec, data, size) == 0);
}

static void
channel_helpers(const uint8_t *data, size_t size)
{
    bool   has;
    size_t ns = hd_chname_namespace((const char *) data, size, &has);

    CHECK(ns <= size);
    CHECK(!has || data[ns] == ':');
    CHECK(has || ns == 0);
    (void) hd_chname_valid((const char *) data, size);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hd_jwt_claims_t c;
    int             rc;

    /* 1: fixed secret */
    rc = hd_jwt_verify((const char *) data, size, SECRET, strlen(SECRET), NOW,
                       60, &c);
    check_claims(rc, &c);
    hd_jwt_claims_free(&c);

    /* 2: secret taken from the input */
    if (size > 0) {
        size_t klen = data[0] % 64;
        if (klen > size - 1)
            klen = size - 1;
        rc = hd_jwt_verify((const char *) data + 1 + klen, size - 1 - klen,
                           data + 1, klen, NOW, 0, &c);
        check_claims(rc, &c);
        hd_jwt_claims_free(&c);
    }

    /* 3: sign the input as a payload, then verify it */
    if (size <= 4096 && memchr(data, '\0', size) == NULL) {
        char *claims = malloc(size + 1);
        char *tok;

        if (claims == NULL)
            return 0;
        memcpy(claims, data, size);
        claims[size] = '\0';
        tok = hd_jwt_sign(claims, SECRET, strlen(SECRET));
        CHECK(tok != NULL);
        rc = hd_jwt_verify(tok, strlen(tok), SECRET, strlen(SECRET), NOW, 60,
                           &c);
        CHECK(rc != HD_JWT_ESIGNATURE && rc != HD_JWT_EALG);
        check_claims(rc, &c);
        hd_jwt_claims_free(&c);
        /* the same token with another secret never verifies */
        CHECK(hd_jwt_verify(tok, strlen(tok), "other", 5, NOW, 60, NULL)
              == HD_JWT_ESIGNATURE);
        free(tok);
        free(claims);
    }

    /* 4: the key set and a policy */
    {
        hd_jwt_policy_t pol = { .leeway_s = 60,
                                .max_lifetime_s = INT64_C(86400) * 365 * 100 };
        rc = hd_jwt_verify_ks((const char *) data, size, keys(), &pol, NOW, &c);
        check_claims(rc, &c);
        hd_jwt_claims_free(&c);
    }

    /* 5: sign the input as claims with the public-key algorithms */
    if (size <= 2048 && memchr(data, '\0', size) == NULL) {
        static const struct {
            int         alg;
            const char *kid, *key;
        } S[] = { { HD_JWT_EDDSA, "ed", ed_priv },
                  { HD_JWT_ES256, NULL, ec_priv } };
        char *claims = malloc(size + 1);

        if (claims == NULL)
            return 0;
        memcpy(claims, data, size);
        claims[size] = '\0';
        for (size_t i = 0; i < 2; i++) {
            char *tok = hd_jwt_sign_alg(S[i].alg, S[i].kid, claims, S[i].key,
                                        strlen(S[i].key));
            CHECK(tok != NULL);
            rc = hd_jwt_verify_ks(tok, strlen(tok), keys(), NULL, NOW, &c);
            CHECK(rc != HD_JWT_ESIGNATURE && rc != HD_JWT_EALG
                  && rc != HD_JWT_EKID);
            check_claims(rc, &c);
            hd_jwt_claims_free(&c);
            free(tok);
        }
        free(claims);
    }

    b64_roundtrip(data, size);
    channel_helpers(data, size);
    return 0;
}
