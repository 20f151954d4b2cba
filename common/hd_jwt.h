/*
 * JWT (RFC 7519) verification over libcrypto: HS256/384/512 (HMAC with a
 * constant-time compare), RS256/384/512 (RSASSA-PKCS1-v1_5), PS256/384/512
 * (RSASSA-PSS, MGF1 with the same hash, salt length = hash length),
 * ES256/ES384 (ECDSA P-256/P-384, JWS raw r||s signatures) and EdDSA
 * (Ed25519). Keys live in a key set (HMAC secrets, PEM public keys, JWKS);
 * a key is only ever used with its own family (an RSA key never as an
 * HMAC secret, a P-256 key only with ES256), so algorithm confusion cannot
 * happen. "alg":"none", algorithms outside the policy, a "crit" header,
 * malformed base64url or JSON, a bad signature, a missing or past "exp", a
 * missing "sub" are all rejected.
 *
 * Ownership: claims filled by hd_jwt_verify*() are owned by the caller and
 * released with hd_jwt_claims_free(); they do not point into the token. A
 * key set is owned by its creator; verification only reads it, so a
 * worker may share one among all its connections.
 */
#ifndef HD_JWT_H
#define HD_JWT_H

#include <stddef.h>
#include <stdint.h>

#define HD_JWT_MAX_LEN        8192 /* longer tokens are malformed */
#define HD_JWT_MAX_CHANNELS   256
/* The header is parsed before the signature is checked, so its size is
 * what an unauthenticated client controls: keep it small (an HS256 header
 * with kid is well under 200 bytes). Longer is EMALFORMED. */
#define HD_JWT_MAX_HEADER_LEN 512 /* base64url characters */

enum hd_jwt_result {
    HD_JWT_OK = 0,
    HD_JWT_EMALFORMED = -1, /* not three base64url parts, bad JSON, types */
    HD_JWT_EALG = -2,       /* alg missing, not HS256, or typ not JWT */
    HD_JWT_ESIGNATURE = -3,
    HD_JWT_EEXPIRED = -4,   /* now >= exp + leeway */
    HD_JWT_ENOEXP = -5,     /* exp missing */
    HD_JWT_ECLAIMS = -6,    /* sub missing/empty/too long, bad tenant,
                                 bad channels, nbf in the future */
    HD_JWT_EKID = -7,       /* a kid that no key in the set has */
    HD_JWT_EAUD = -8,       /* aud missing or not the configured audience */
    HD_JWT_EISS = -9,       /* iss missing or not the configured issuer */
    HD_JWT_ELIFETIME = -10, /* exp - iat (or exp - now) over the maximum */
};
/*
 * Which code for what, where it is not obvious:
 *  - a header part over HD_JWT_MAX_HEADER_LEN,
 *    more or fewer than three parts, a part that is not canonical unpadded
 *    base64url, a header or payload that is not a JSON object (duplicate
 *    keys included), "exp"/"nbf" present but not a number: EMALFORMED;
 *  - a header whose "alg" is not one herald knows, or not in the
 *    policy's set, or has no key of its family in the key set, "typ"
 *    present and not "JWT" (any case), any "crit": EALG (checked before
 *    the signature);
 *  - a "kid" that no key of the set carries: EKID (the caller may refresh
 *    a remote key set and retry);
 *  - a signature of the wrong size or that does not match: ESIGNATURE.
 * Claims are only looked at after the signature matched.
 */

typedef struct hd_jwt_claims {
    /* a connection keeps this for life (one block with its strings,
     * hd_jwt_claims_pack()): 72 bytes, the counts and publish small */
    char   *sub;      /* required, 1..255 bytes */
    char   *tenant;   /* optional; NULL if absent; [A-Za-z0-9_.-]{1,64} */
    int64_t exp;      /* seconds since the epoch */
    char  **channels; /* optional allow-list; NULL if absent, non-NULL
                             and NULL-terminated when present (even if
                             empty: then nothing is allowed); one block
                             with the strings, freed as a whole */
    int64_t iat;      /* 0 when absent */
    char  **pub_channels;
    /* the channel claim of a subscription token; NULL if absent */
    char *channel;
    /* the info claim (any JSON) as compact JSON text, for presence and
     * join/leave; NULL if absent. Bounded by the token's length. */
    char    *info;
    uint16_t nchannels; /* <= HD_JWT_MAX_CHANNELS; entries ending in '*'
                           are prefixes */
    /* The publish claim: absent (HD_JWT_PUB_ABSENT), false, true, or a
     * list of channels (pub_channels, same shape as channels) */
    uint16_t npub_channels;
    int16_t  publish;
} hd_jwt_claims_t;
_Static_assert(HD_JWT_MAX_CHANNELS <= UINT16_MAX, "counts are 16-bit");

enum {
    HD_JWT_PUB_ABSENT = -1,
    HD_JWT_PUB_NO = 0,
    HD_JWT_PUB_YES = 1,
    HD_JWT_PUB_LIST = 2,
};

/* ---- algorithms, keys and policy ---- */

enum hd_jwt_alg {
    HD_JWT_HS256 = 0,
    HD_JWT_HS384,
    HD_JWT_HS512,
    HD_JWT_RS256,
    HD_JWT_RS384,
    HD_JWT_RS512,
    HD_JWT_PS256,
    HD_JWT_PS384,
    HD_JWT_PS512,
    HD_JWT_ES256,
    HD_JWT_ES384,
    HD_JWT_EDDSA,
    HD_JWT_NALG
};
#define HD_JWT_ALG_BIT(a)  (1u << (a))
#define HD_JWT_ALGS_ALL    ((1u << HD_JWT_NALG) - 1)
#define HD_JWT_MAX_KID_LEN 384 /* what fits in the header bound */
/* keys tried for one token without a kid (bounds what a forged token
 * costs: at most this many signature checks) */
#define HD_JWT_MAX_TRIES   8

/* "HS256" -> HD_JWT_HS256; -1 (an index sentinel, like alg -1 "any") when
 * unknown. len bytes, no NUL needed. */
int         hd_jwt_alg_parse(const char *name, size_t len);
const char *hd_jwt_alg_name(int alg);

typedef struct hd_jwt_keyset hd_jwt_keyset_t;

hd_jwt_keyset_t *hd_jwt_keyset_new(void);
void             hd_jwt_keyset_free(hd_jwt_keyset_t *ks); /* NULL is fine */
size_t           hd_jwt_keyset_count(const hd_jwt_keyset_t *ks);
/*
 * Add keys. kid may be NULL (the key then matches tokens without a kid,
 * and tokens whose kid no key carries are EKID). The secret / PEM text is
 * copied. Returns 0, or -EINVAL with a message in err (errlen bytes, may be 0)
 * that never contains key material.
 *  - hmac: any length >= 1 (the config enforces 32);
 *  - pem: a PUBLIC KEY (SubjectPublicKeyInfo) or RSA PUBLIC KEY block, or a
 *    CERTIFICATE (its key is used): RSA of at least 2048 bits, EC P-256 or
 *    P-384, Ed25519. Private keys are refused (a verifier never needs
 *    one, and a config that holds one has leaked it).
 *  - jwks: a JWK Set text; keys with "use" other than "sig", unknown
 *    "kty"/"crv", or an "alg" herald does not know are skipped (counted in
 *    *skipped when non-NULL); a key that is malformed fails the whole set
 *    (so a half-broken set never replaces a good one). Returns the
 *    number of keys added (>= 0) or -EINVAL.
 */
int hd_jwt_keyset_add_hmac(hd_jwt_keyset_t *ks, const char *kid,
                           const void *secret, size_t len);
int hd_jwt_keyset_add_pem(hd_jwt_keyset_t *ks, const char *kid, const char *pem,
                          size_t len, char *err, size_t errlen);
int hd_jwt_keyset_add_jwks(hd_jwt_keyset_t *ks, const char *json, size_t len,
                           size_t *skipped, char *err, size_t errlen);
/* True when some key carries kid (kid NULL: some key has no kid). */
int hd_jwt_keyset_has_kid(const hd_jwt_keyset_t *ks, const char *kid);

typedef struct hd_jwt_policy {
    unsigned    algs;           /* HD_JWT_ALG_BIT mask; 0 means all */
    int64_t     leeway_s;       /* clock skew for exp, nbf, iat */
    int64_t     max_lifetime_s; /* 0: unlimited */
    const char *aud;            /* NULL: aud not checked */
    const char *iss;            /* NULL: iss not checked */
} hd_jwt_policy_t;

/*
 * Verify token with the keys of ks under policy pol (NULL: all algorithms,
 * no leeway, no aud/iss/lifetime check) at time now. On HD_JWT_OK fills
 * *out (may be NULL); otherwise *out is zeroed.
 */
int hd_jwt_verify_ks(const char *token, size_t len, const hd_jwt_keyset_t *ks,
                     const hd_jwt_policy_t *pol, int64_t now,
                     hd_jwt_claims_t *out);

/*
 * The claim checks of hd_jwt_verify_ks() on an already trusted JSON object
 * (payload is a json_t *; e.g. built from a connect proxy's answer):
 * same rules, same result codes, out filled on HD_JWT_OK.
 */
int hd_jwt_claims_load(const void *payload, const hd_jwt_policy_t *pol,
                       int64_t now, hd_jwt_claims_t *out);

/* The kid of a token's header, copied into buf (NUL-terminated); 0 when
 * the header has one, -ENOENT when it has none (or one longer than cap),
 * -EINVAL when the header is malformed. Does not verify anything. */
int hd_jwt_peek_kid(const char *token, size_t len, char *buf, size_t cap);

/*
 * Verify an HS256 token (len bytes, need not be NUL-terminated) with one
 * secret at time now (seconds): hd_jwt_verify_ks() with a one-key set and
 * only HS256 allowed. On HD_JWT_OK fills *out; otherwise *out is zeroed.
 * leeway_s is allowed clock skew for exp/nbf (0 is fine).
 */
int         hd_jwt_verify(const char *token, size_t len, const void *secret,
                          size_t secret_len, int64_t now, int64_t leeway_s,
                          hd_jwt_claims_t *out);
void        hd_jwt_claims_free(hd_jwt_claims_t *c);
const char *hd_jwt_strerror(int rc);
/*
 * The claims of *c moved into one heap block: the struct, then every list
 * and string it points to. A connection keeps its claims for its whole
 * life: one block instead of up to seven saves their malloc headers and
 * the holes between them. *c is released and zeroed. The result is
 * freed with hd_free() alone (never hd_jwt_claims_free()); its pointers
 * stay valid until then.
 */
hd_jwt_claims_t *hd_jwt_claims_pack(hd_jwt_claims_t *c);

/* True if channel (the name the client used) is allowed by the claims'
 * channels list (exact match, or prefix match for entries ending in '*');
 * always true when the list is absent, false when c is NULL. Does not
 * validate the name itself: call hd_chname_valid() first. */
int hd_jwt_channel_allowed(const hd_jwt_claims_t *c, const char *channel,
                           size_t len);

/*
 * Sign claims_json (a JSON object text) as HS256. Returns a heap string
 * (caller frees) — used by tests and herald-bench. The text is signed
 * byte for byte and not validated (tests rely on that to build bad
 * payloads). NULL only if libcrypto fails or secret_len > INT_MAX.
 */
char *hd_jwt_sign(const char *claims_json, const void *secret,
                  size_t secret_len);
/*
 * Sign claims_json with algorithm alg (hd_jwt_alg) and an optional kid in
 * the header. key: for HS*, the secret (key_len bytes); otherwise a PEM
 * private key of the right family (key_len bytes). Returns a heap string
 * or NULL (bad key, wrong family). For tests, fuzzing and herald-bench.
 */
char *hd_jwt_sign_alg(int alg, const char *kid, const char *claims_json,
                      const void *key, size_t key_len);

/*
 * base64url without padding.
 * decode: returns the decoded length, or -EINVAL on '=', any character outside
 * [A-Za-z0-9_-], a length of 4k+1, non-zero trailing bits (non-canonical),
 * or -ENOSPC when the result does not fit in cap bytes (out may then be partly
 * written). in need not be NUL-terminated.
 * encode: like snprintf: returns the encoded length (without the NUL)
 * whatever cap is, and writes out plus a NUL only when cap > that length.
 */
#define HD_B64URL_ENCLEN(n) (((n) / 3) * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))
#define HD_B64URL_DECMAX(n) (((n) / 4) * 3 + ((n) % 4 ? (n) % 4 - 1 : 0))
long   hd_b64url_decode(const char *in, size_t len, uint8_t *out, size_t cap);
size_t hd_b64url_encode(const uint8_t *in, size_t len, char *out, size_t cap);

#endif
