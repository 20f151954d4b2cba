/*
 * JWT (RFC 7519) verification, HS256 only, over libcrypto HMAC with a
 * constant-time signature compare. Anything else — "alg":"none", other
 * algorithms, a "crit" header, malformed base64url or JSON, a bad
 * signature, a missing or past "exp", a missing "sub" — is rejected.
 *
 * Ownership: claims filled by hd_jwt_verify() are owned by the caller and
 * released with hd_jwt_claims_free(); they do not point into the token.
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
    HD_JWT_EEXPIRED = -4, /* now >= exp + leeway */
    HD_JWT_ENOEXP = -5,   /* exp missing */
    HD_JWT_ECLAIMS = -6,  /* sub missing/empty/too long, bad tenant,
                                 bad channels, nbf in the future */
};
/*
 * Which code for what, where it is not obvious:
 *  - a header part over HD_JWT_MAX_HEADER_LEN,
 *    more or fewer than three parts, a part that is not canonical unpadded
 *    base64url, a header or payload that is not a JSON object (duplicate
 *    keys included), "exp"/"nbf" present but not a number: EMALFORMED;
 *  - a header without "alg":"HS256", "typ" present and not "JWT" (any
 *    case), any "crit": EALG (checked before the signature);
 *  - a signature that is not 32 bytes or does not match: ESIGNATURE.
 * Claims are only looked at after the signature matched.
 */

typedef struct hd_jwt_claims {
    char   *sub;       /* required, 1..255 bytes */
    char   *tenant;    /* optional; NULL if absent; [A-Za-z0-9_.-]{1,64} */
    int64_t exp;       /* seconds since the epoch */
    char  **channels;  /* optional allow-list; NULL if absent, non-NULL
                              and NULL-terminated when present (even if
                              empty: then nothing is allowed); one block
                              with the strings, freed as a whole */
    size_t  nchannels; /* entries ending in '*' are prefixes */
} hd_jwt_claims_t;

/*
 * Verify token (len bytes, need not be NUL-terminated) with secret at time
 * now (seconds). On HD_JWT_OK fills *out; otherwise *out is zeroed.
 * leeway_s is allowed clock skew for exp/nbf (0 is fine).
 */
int         hd_jwt_verify(const char *token, size_t len, const void *secret,
                          size_t secret_len, int64_t now, int64_t leeway_s,
                          hd_jwt_claims_t *out);
void        hd_jwt_claims_free(hd_jwt_claims_t *c);
const char *hd_jwt_strerror(int rc);

/* True if channel (the name the client used) is allowed by the claims'
 * channels list (exact match, or prefix match for entries ending in '*');
 * always true when the list is absent, false when c is NULL. Does not
 * validate the name itself: call hd_channel_valid() first. */
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
 * base64url without padding.
 * decode: returns the decoded length, or -1 on '=', any character outside
 * [A-Za-z0-9_-], a length of 4k+1, non-zero trailing bits (non-canonical),
 * or when the result does not fit in cap bytes (out may then be partly
 * written). in need not be NUL-terminated.
 * encode: like snprintf: returns the encoded length (without the NUL)
 * whatever cap is, and writes out plus a NUL only when cap > that length.
 */
#define HD_B64URL_ENCLEN(n) (((n) / 3) * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))
#define HD_B64URL_DECMAX(n) (((n) / 4) * 3 + ((n) % 4 ? (n) % 4 - 1 : 0))
long   hd_b64url_decode(const char *in, size_t len, uint8_t *out, size_t cap);
size_t hd_b64url_encode(const uint8_t *in, size_t len, char *out, size_t cap);

#endif
