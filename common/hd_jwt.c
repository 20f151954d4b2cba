/*
 * JWT HS256 verification and signing.
 *
 * The verifier runs once per client connect, on the worker's only thread,
 * so it is built to be cheap: the token is split in place, every part is
 * decoded into one stack buffer (a token is at most HD_JWT_MAX_LEN bytes),
 * the MAC is one HMAC() call, and the only heap work is jansson's parse of
 * the two small JSON objects plus the copies that go into the claims.
 *
 * Order matters for safety: the header is checked first (alg must be
 * HS256, so "none" and algorithm confusion never reach the MAC), then the
 * signature over the header.payload bytes exactly as received, and only
 * then is the payload decoded and any claim looked at. What a client
 * without the secret can make us do is therefore bounded: parse a header
 * of at most HD_JWT_MAX_HEADER_LEN characters and run one HMAC over at
 * most HD_JWT_MAX_LEN bytes; jansson (slow on large strings) sees a big
 * payload only when the issuer signed it.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "hd_alloc.h"
#include "hd_channel.h"
#include "hd_jwt.h"

#define SIG_LEN  32 /* HMAC-SHA256 */
#define SUB_MAX  255
#define PART_MAX HD_B64URL_DECMAX(HD_JWT_MAX_LEN)

/* base64url: {"alg":"HS256","typ":"JWT"} */
static const char hs256_header[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/*
 * Decode table holding value + 1, so that the zero every other entry gets
 * from the initializer means "not base64url" ('=' included).
 */
#define D(c, v) [c] = (v) + 1
static const unsigned char b64_dec[256] = {
    D('A', 0),  D('B', 1),  D('C', 2),  D('D', 3),  D('E', 4),  D('F', 5),
    D('G', 6),  D('H', 7),  D('I', 8),  D('J', 9),  D('K', 10), D('L', 11),
    D('M', 12), D('N', 13), D('O', 14), D('P', 15), D('Q', 16), D('R', 17),
    D('S', 18), D('T', 19), D('U', 20), D('V', 21), D('W', 22), D('X', 23),
    D('Y', 24), D('Z', 25), D('a', 26), D('b', 27), D('c', 28), D('d', 29),
    D('e', 30), D('f', 31), D('g', 32), D('h', 33), D('i', 34), D('j', 35),
    D('k', 36), D('l', 37), D('m', 38), D('n', 39), D('o', 40), D('p', 41),
    D('q', 42), D('r', 43), D('s', 44), D('t', 45), D('u', 46), D('v', 47),
    D('w', 48), D('x', 49), D('y', 50), D('z', 51), D('0', 52), D('1', 53),
    D('2', 54), D('3', 55), D('4', 56), D('5', 57), D('6', 58), D('7', 59),
    D('8', 60), D('9', 61), D('-', 62), D('_', 63),
};
#undef D

long
hd_b64url_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    const unsigned char *s = (const unsigned char *) in;
    size_t               i, o = 0, need;
    uint32_t             a, b, c, d;

    if (len % 4 == 1)
        return -1;
    need = HD_B64URL_DECMAX(len);
    if (need > cap || need > LONG_MAX)
        return -1;

    for (i = 0; i + 4 <= len; i += 4) {
        a = b64_dec[s[i]];
        b = b64_dec[s[i + 1]];
        c = b64_dec[s[i + 2]];
        d = b64_dec[s[i + 3]];
        if (!a || !b || !c || !d)
            return -1;
        a = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6 | (d - 1);
        out[o++] = (uint8_t) (a >> 16);
        out[o++] = (uint8_t) (a >> 8);
        out[o++] = (uint8_t) a;
    }

    /*
     * A tail of 2 or 3 characters carries 12 or 18 bits for 8 or 16 bits
     * of data; the spare bits must be zero, or two different strings would
     * decode to the same bytes (and a signature could be re-spelled).
     */
    switch (len - i) {
    case 2:
        a = b64_dec[s[i]];
        b = b64_dec[s[i + 1]];
        if (!a || !b || ((b - 1) & 0x0f))
            return -1;
        out[o++] = (uint8_t) ((a - 1) << 2 | (b - 1) >> 4);
        break;
    case 3:
        a = b64_dec[s[i]];
        b = b64_dec[s[i + 1]];
        c = b64_dec[s[i + 2]];
        if (!a || !b || !c || ((c - 1) & 0x03))
            return -1;
        a = (a - 1) << 12 | (b - 1) << 6 | (c - 1);
        out[o++] = (uint8_t) (a >> 10);
        out[o++] = (uint8_t) (a >> 2);
        break;
    }
    return (long) o;
}

size_t
hd_b64url_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    size_t   i, o = 0, n = HD_B64URL_ENCLEN(len);
    uint32_t v;

    if (cap <= n)
        return n;
    for (i = 0; i + 3 <= len; i += 3) {
        v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = b64_alphabet[v >> 6 & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (len - i == 1) {
        v = (uint32_t) in[i] << 16;
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
    } else if (len - i == 2) {
        v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8;
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = b64_alphabet[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

/*
 * HMAC-SHA256 of data with secret into mac[SIG_LEN]. OpenSSL 3's HMAC()
 * refuses a NULL key, which is what an empty secret may come as.
 */
static int
mac(const void *secret, size_t secret_len, const void *data, size_t len,
    uint8_t *out)
{
    static const uint8_t empty;
    unsigned int         n = 0;

    if (secret_len > INT_MAX)
        return -1;
    if (secret_len == 0)
        secret = &empty;
    if (HMAC(EVP_sha256(), secret, (int) secret_len, data, len, out, &n) == NULL
        || n != SIG_LEN)
        return -1;
    return 0;
}

/* Decode one part and parse it as a JSON object (duplicate keys refused). */
static json_t *
load_object(const char *b64, size_t len, uint8_t *buf)
{
    long    n = hd_b64url_decode(b64, len, buf, PART_MAX);
    json_t *j;

    if (n <= 0)
        return NULL;
    j = json_loadb((const char *) buf, (size_t) n, JSON_REJECT_DUPLICATES,
                   NULL);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* RFC 7515: alg is case-sensitive; typ is a media type, so not. */
static int
check_header(const json_t *h)
{
    const json_t *alg = json_object_get(h, "alg");
    const json_t *typ = json_object_get(h, "typ");

    if (!json_is_string(alg) || json_string_length(alg) != 5
        || memcmp(json_string_value(alg), "HS256", 5) != 0)
        return HD_JWT_EALG;
    if (typ != NULL
        && (!json_is_string(typ) || json_string_length(typ) != 3
            || strcasecmp(json_string_value(typ), "JWT") != 0))
        return HD_JWT_EALG;
    /* we understand no extension, so any crit must be refused (7515 4.1.11) */
    if (json_object_get(h, "crit") != NULL)
        return HD_JWT_EALG;
    return HD_JWT_OK;
}

static int64_t
sat_add(int64_t a, int64_t b)
{
    int64_t r;

    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

/*
 * A NumericDate as whole seconds, saturated to int64. A fraction is rounded
 * toward the stricter side: down for exp (expires earlier), up for nbf.
 */
static int64_t
to_seconds(const json_t *v, bool round_up)
{
    double  d;
    int64_t t;

    if (json_is_integer(v))
        return (int64_t) json_integer_value(v);
    d = json_real_value(v);
    if (d >= 9223372036854775807.0)
        return INT64_MAX;
    if (d <= -9223372036854775807.0)
        return INT64_MIN;
    t = (int64_t) d; /* truncates toward zero */
    if (!round_up && (double) t > d)
        t--;
    else if (round_up && (double) t < d)
        t++;
    return t;
}

/* An allow-list entry: a channel name, or one followed by a single '*'. */
static bool
channel_entry_valid(const char *s, size_t len)
{
    if (len > 0 && s[len - 1] == '*')
        len--;
    return hd_channel_valid(s, len);
}

/*
 * Copy the channels array into one block: n + 1 pointers (the last NULL)
 * followed by the NUL-terminated strings, so that the list costs one
 * allocation and one free whatever its length.
 */
static int
load_channels(const json_t *arr, hd_jwt_claims_t *c)
{
    size_t i, n, bytes = 0;
    char **v, *p;

    if (!json_is_array(arr))
        return HD_JWT_ECLAIMS;
    n = json_array_size(arr);
    if (n > HD_JWT_MAX_CHANNELS)
        return HD_JWT_ECLAIMS;
    for (i = 0; i < n; i++) {
        const json_t *e = json_array_get(arr, i);
        if (!json_is_string(e)
            || !channel_entry_valid(json_string_value(e),
                                    json_string_length(e)))
            return HD_JWT_ECLAIMS;
        bytes += json_string_length(e) + 1;
    }

    v = hd_malloc((n + 1) * sizeof(*v) + bytes);
    p = (char *) (v + n + 1);
    for (i = 0; i < n; i++) {
        const json_t *e = json_array_get(arr, i);
        size_t        len = json_string_length(e);
        memcpy(p, json_string_value(e), len + 1);
        v[i] = p;
        p += len + 1;
    }
    v[n] = NULL;
    c->channels = v;
    c->nchannels = n;
    return HD_JWT_OK;
}

/*
 * Check the claims of a payload whose signature has been verified and fill
 * *c. On error *c may be partly filled; the caller frees it.
 */
static int
load_claims(const json_t *p, int64_t now, int64_t leeway, hd_jwt_claims_t *c)
{
    const json_t *exp = json_object_get(p, "exp");
    const json_t *nbf = json_object_get(p, "nbf");
    const json_t *sub = json_object_get(p, "sub");
    const json_t *tenant = json_object_get(p, "tenant");
    const json_t *channels = json_object_get(p, "channels");

    if (exp == NULL)
        return HD_JWT_ENOEXP;
    if (!json_is_number(exp) || (nbf != NULL && !json_is_number(nbf)))
        return HD_JWT_EMALFORMED;

    c->exp = to_seconds(exp, false);
    if (now >= sat_add(c->exp, leeway))
        return HD_JWT_EEXPIRED;
    if (nbf != NULL && sat_add(now, leeway) < to_seconds(nbf, true))
        return HD_JWT_ECLAIMS;

    if (!json_is_string(sub) || json_string_length(sub) == 0
        || json_string_length(sub) > SUB_MAX)
        return HD_JWT_ECLAIMS;
    if (tenant != NULL
        && (!json_is_string(tenant)
            || !hd_tenant_valid(json_string_value(tenant),
                                json_string_length(tenant))))
        return HD_JWT_ECLAIMS;
    if (channels != NULL && load_channels(channels, c) != HD_JWT_OK)
        return HD_JWT_ECLAIMS;

    /* jansson strings are NUL-free without JSON_ALLOW_NUL: strdup is exact */
    c->sub = hd_strdup(json_string_value(sub));
    if (tenant != NULL)
        c->tenant = hd_strdup(json_string_value(tenant));
    return HD_JWT_OK;
}

/*
 * Verify an HS256 token; see hd_jwt.h for the result codes. out may be
 * NULL when only the verdict matters.
 */
int
hd_jwt_verify(const char *token, size_t len, const void *secret,
              size_t secret_len, int64_t now, int64_t leeway_s,
              hd_jwt_claims_t *out)
{
    uint8_t          buf[PART_MAX];
    uint8_t          want[SIG_LEN];
    const char      *d1, *d2, *sig;
    size_t           hlen, plen, slen;
    long             n;
    json_t          *hdr = NULL, *pl = NULL;
    hd_jwt_claims_t  tmp;
    hd_jwt_claims_t *c = out != NULL ? out : &tmp;
    int              rc;

    memset(c, 0, sizeof(*c));
    if (leeway_s < 0)
        leeway_s = 0;

    rc = HD_JWT_EMALFORMED;
    if (token == NULL || len == 0 || len > HD_JWT_MAX_LEN)
        goto fail;
    d1 = memchr(token, '.', len);
    if (d1 == NULL)
        goto fail;
    d2 = memchr(d1 + 1, '.', len - (size_t) (d1 + 1 - token));
    if (d2 == NULL)
        goto fail;
    sig = d2 + 1;
    slen = len - (size_t) (sig - token);
    if (memchr(sig, '.', slen) != NULL)
        goto fail;
    hlen = (size_t) (d1 - token);
    plen = (size_t) (d2 - d1 - 1);
    if (hlen > HD_JWT_MAX_HEADER_LEN)
        goto fail;

    hdr = load_object(token, hlen, buf);
    if (hdr == NULL)
        goto fail;
    rc = check_header(hdr);
    if (rc != HD_JWT_OK)
        goto fail;

    /* a signature part that is not base64url at all is malformed; one of
     * the wrong size is simply a signature that does not match */
    n = hd_b64url_decode(sig, slen, buf, PART_MAX);
    rc = HD_JWT_EMALFORMED;
    if (n < 0)
        goto fail;
    rc = HD_JWT_ESIGNATURE;
    if (n != SIG_LEN || mac(secret, secret_len, token, hlen + 1 + plen, want))
        goto fail;
    if (CRYPTO_memcmp(buf, want, SIG_LEN) != 0)
        goto fail;

    rc = HD_JWT_EMALFORMED;
    pl = load_object(d1 + 1, plen, buf);
    if (pl == NULL)
        goto fail;
    rc = load_claims(pl, now, leeway_s, c);
    if (rc != HD_JWT_OK)
        goto fail;

    json_decref(hdr);
    json_decref(pl);
    if (out == NULL)
        hd_jwt_claims_free(c);
    return HD_JWT_OK;

fail:
    json_decref(hdr);
    json_decref(pl);
    hd_jwt_claims_free(c);
    /* after a mismatch, want is a valid signature for what the client
     * sent: leave none on the stack */
    OPENSSL_cleanse(want, sizeof(want));
    return rc;
}

/* Free what hd_jwt_verify() put into c and zero it; c may be NULL. */
void
hd_jwt_claims_free(hd_jwt_claims_t *c)
{
    if (c == NULL)
        return;
    free(c->sub);
    free(c->tenant);
    free(c->channels); /* strings live in the same block */
    memset(c, 0, sizeof(*c));
}

const char *
hd_jwt_strerror(int rc)
{
    switch (rc) {
    case HD_JWT_OK:
        return "ok";
    case HD_JWT_EMALFORMED:
        return "malformed token";
    case HD_JWT_EALG:
        return "unsupported token algorithm or type";
    case HD_JWT_ESIGNATURE:
        return "bad token signature";
    case HD_JWT_EEXPIRED:
        return "token expired";
    case HD_JWT_ENOEXP:
        return "token has no exp";
    case HD_JWT_ECLAIMS:
        return "invalid token claims";
    }
    return "unknown token error";
}

int
hd_jwt_channel_allowed(const hd_jwt_claims_t *c, const char *channel,
                       size_t len)
{
    size_t i;

    if (c == NULL)
        return 0;
    if (c->channels == NULL)
        return 1;
    if (channel == NULL)
        return 0;
    for (i = 0; i < c->nchannels; i++) {
        const char *e = c->channels[i];
        size_t      elen = strlen(e);

        if (elen > 0 && e[elen - 1] == '*') {
            if (len >= elen - 1 && memcmp(channel, e, elen - 1) == 0)
                return 1;
        } else if (len == elen && memcmp(channel, e, len) == 0) {
            return 1;
        }
    }
    return 0;
}

/*
 * header.payload.signature with the fixed HS256 header; claims_json is
 * signed as given (see hd_jwt.h).
 */
char *
hd_jwt_sign(const char *claims_json, const void *secret, size_t secret_len)
{
    size_t  hlen = sizeof(hs256_header) - 1;
    size_t  clen = strlen(claims_json);
    size_t  plen = HD_B64URL_ENCLEN(clen);
    size_t  slen = HD_B64URL_ENCLEN(SIG_LEN);
    size_t  total = hlen + 1 + plen + 1 + slen;
    uint8_t sig[SIG_LEN];
    char   *tok = hd_malloc(total + 1);

    memcpy(tok, hs256_header, hlen);
    tok[hlen] = '.';
    hd_b64url_encode((const uint8_t *) claims_json, clen, tok + hlen + 1,
                     plen + 1);
    if (mac(secret, secret_len, tok, hlen + 1 + plen, sig) != 0) {
        free(tok);
        return NULL;
    }
    tok[hlen + 1 + plen] = '.';
    hd_b64url_encode(sig, SIG_LEN, tok + hlen + 1 + plen + 1, slen + 1);
    return tok;
}
