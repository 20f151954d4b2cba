/*
 * JWT verification (HS*, RS*, PS*, ES256/384, EdDSA), key sets, signing.
 *
 * The verifier runs once per client connect, on the worker's only thread,
 * so it is built to be cheap: the token is split in place, every part is
 * decoded into one stack buffer (a token is at most HD_JWT_MAX_LEN bytes),
 * the HMAC case is one HMAC() call, and the only heap work is jansson's
 * parse of the two small JSON objects plus the copies that go into the
 * claims (public-key algorithms add one EVP context).
 *
 * Order matters for safety: the header is checked first (alg must be one
 * the policy allows, so "none" never reaches a key), the key is picked by
 * kid and by family (an HS256 token is never checked against an RSA key,
 * whatever bytes that key has: this is what stops algorithm confusion),
 * then the signature over the header.payload bytes exactly as received,
 * and only then is the payload decoded and any claim looked at. What a
 * client without a key can make us do is therefore bounded: parse a
 * header of at most HD_JWT_MAX_HEADER_LEN characters and run at most
 * HD_JWT_MAX_TRIES signature checks over at most HD_JWT_MAX_LEN bytes;
 * jansson (slow on large strings) sees a big payload only when the issuer
 * signed it.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "hd_alloc.h"
#include "hd_chname.h"
#include "hd_jwt.h"
#include "hd_jwt_int.h"

#define SUB_MAX  255
#define PART_MAX HD_B64URL_DECMAX(HD_JWT_MAX_LEN)

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
        return -EINVAL;
    need = HD_B64URL_DECMAX(len);
    if (need > cap || need > LONG_MAX)
        return -ENOSPC;

    for (i = 0; i + 4 <= len; i += 4) {
        a = b64_dec[s[i]];
        b = b64_dec[s[i + 1]];
        c = b64_dec[s[i + 2]];
        d = b64_dec[s[i + 3]];
        if (!a || !b || !c || !d)
            return -EINVAL;
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
            return -EINVAL;
        out[o++] = (uint8_t) ((a - 1) << 2 | (b - 1) >> 4);
        break;
    case 3:
        a = b64_dec[s[i]];
        b = b64_dec[s[i + 1]];
        c = b64_dec[s[i + 2]];
        if (!a || !b || !c || ((c - 1) & 0x03))
            return -EINVAL;
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

/* ---- algorithms ------------------------------------------------------- */

const hd_jwt_alginfo_t hd_jwt_algs[HD_JWT_NALG] = {
    [HD_JWT_HS256] = { "HS256", HD_FAM_HMAC, 256, false },
    [HD_JWT_HS384] = { "HS384", HD_FAM_HMAC, 384, false },
    [HD_JWT_HS512] = { "HS512", HD_FAM_HMAC, 512, false },
    [HD_JWT_RS256] = { "RS256", HD_FAM_RSA, 256, false },
    [HD_JWT_RS384] = { "RS384", HD_FAM_RSA, 384, false },
    [HD_JWT_RS512] = { "RS512", HD_FAM_RSA, 512, false },
    [HD_JWT_PS256] = { "PS256", HD_FAM_RSA, 256, true },
    [HD_JWT_PS384] = { "PS384", HD_FAM_RSA, 384, true },
    [HD_JWT_PS512] = { "PS512", HD_FAM_RSA, 512, true },
    [HD_JWT_ES256] = { "ES256", HD_FAM_EC256, 256, false },
    [HD_JWT_ES384] = { "ES384", HD_FAM_EC384, 384, false },
    [HD_JWT_EDDSA] = { "EdDSA", HD_FAM_ED25519, 0, false },
};

static const EVP_MD *
alg_md(int alg)
{
    switch (hd_jwt_algs[alg].bits) {
    case 256:
        return EVP_sha256();
    case 384:
        return EVP_sha384();
    case 512:
        return EVP_sha512();
    }
    return NULL;
}

/* RFC 7515: alg is case-sensitive */
int
hd_jwt_alg_parse(const char *name, size_t len)
{
    for (int i = 0; i < HD_JWT_NALG; i++)
        if (strlen(hd_jwt_algs[i].name) == len
            && memcmp(hd_jwt_algs[i].name, name, len) == 0)
            return i;
    return -1; /* "unknown": an index sentinel, as alg -1 is elsewhere */
}

const char *
hd_jwt_alg_name(int alg)
{
    return alg >= 0 && alg < HD_JWT_NALG ? hd_jwt_algs[alg].name : "?";
}

/* ---- signatures ------------------------------------------------------- */

/* HMAC of data with the key's secret into out (>= EVP_MAX_MD_SIZE). */
static int
mac(int alg, const void *secret, size_t secret_len, const void *data,
    size_t len, uint8_t *out, unsigned int *n)
{
    static const uint8_t empty;

    if (secret_len > INT_MAX)
        return -EINVAL;
    /* OpenSSL 3's HMAC() refuses a NULL key, which is what an empty
     * secret may come as */
    if (secret_len == 0)
        secret = &empty;
    *n = 0;
    if (HMAC(alg_md(alg), secret, (int) secret_len, data, len, out, n) == NULL)
        return -EIO;
    return 0;
}

/* JWS ECDSA signatures are r||s, each the curve's size; libcrypto wants
 * DER. Returns the DER length, -ENOSPC when it exceeds cap, or -EINVAL. */
static int
ecdsa_raw_to_der(const uint8_t *sig, size_t half, uint8_t *der, size_t cap)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM    *r = BN_bin2bn(sig, (int) half, NULL);
    BIGNUM    *s = BN_bin2bn(sig + half, (int) half, NULL);
    int        n = -EINVAL;

    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        goto done;
    }
    if (i2d_ECDSA_SIG(es, NULL) <= (int) cap) {
        uint8_t *p = der;
        n = i2d_ECDSA_SIG(es, &p);
        if (n < 0)
            n = -EINVAL;
    } else {
        n = -ENOSPC;
    }
done:
    ECDSA_SIG_free(es);
    return n;
}

/* True when sig is a valid signature of data by key k under alg. */
static bool
sig_ok(const hd_jwt_key_t *k, int alg, const uint8_t *sig, size_t slen,
       const void *data, size_t len)
{
    uint8_t       want[EVP_MAX_MD_SIZE];
    uint8_t       der[2 * 48 + 16];
    unsigned int  n;
    EVP_MD_CTX   *ctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    bool          ok = false;

    if (k->fam == HD_FAM_HMAC) {
        ok = mac(alg, k->secret, k->secret_len, data, len, want, &n) == 0
            && slen == n && CRYPTO_memcmp(sig, want, n) == 0;
        /* want is a valid signature for what the client sent: leave none
         * on the stack */
        OPENSSL_cleanse(want, sizeof(want));
        return ok;
    }
    if (k->fam == HD_FAM_EC256 || k->fam == HD_FAM_EC384) {
        size_t half = k->fam == HD_FAM_EC256 ? 32 : 48;
        int    dlen;

        if (slen != 2 * half)
            return false;
        dlen = ecdsa_raw_to_der(sig, half, der, sizeof(der));
        if (dlen < 0)
            return false;
        sig = der;
        slen = (size_t) dlen;
    }
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL
        || EVP_DigestVerifyInit(ctx, &pctx, alg_md(alg), NULL, k->pkey) != 1)
        goto done;
    if (k->fam == HD_FAM_RSA) {
        if (hd_jwt_algs[alg].pss) {
            /* RFC 7518 3.5: MGF1 with the same hash, salt = hash size */
            if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1
                || EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx,
                                                    RSA_PSS_SALTLEN_DIGEST)
                    != 1
                || EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, alg_md(alg)) != 1)
                goto done;
        } else if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) {
            goto done;
        }
    }
    ok = EVP_DigestVerify(ctx, sig, slen, data, len) == 1;
done:
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

/* ---- tokens ----------------------------------------------------------- */

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

/*
 * The algorithm of header h, checked against the policy's set; sets *kid
 * (NULL when absent). RFC 7515: alg is case-sensitive; typ is a media
 * type, so not.
 */
static int
check_header(const json_t *h, unsigned allowed, int *alg, const char **kid)
{
    const json_t *a = json_object_get(h, "alg");
    const json_t *typ = json_object_get(h, "typ");
    const json_t *k = json_object_get(h, "kid");

    *kid = NULL;
    if (!json_is_string(a))
        return HD_JWT_EALG;
    *alg = hd_jwt_alg_parse(json_string_value(a), json_string_length(a));
    if (*alg < 0 || !(allowed & HD_JWT_ALG_BIT(*alg)))
        return HD_JWT_EALG;
    if (typ != NULL
        && (!json_is_string(typ) || json_string_length(typ) != 3
            || strcasecmp(json_string_value(typ), "JWT") != 0))
        return HD_JWT_EALG;
    /* we understand no extension, so any crit must be refused (7515 4.1.11) */
    if (json_object_get(h, "crit") != NULL)
        return HD_JWT_EALG;
    if (k != NULL) {
        if (!json_is_string(k) || json_string_length(k) == 0
            || json_string_length(k) > HD_JWT_MAX_KID_LEN)
            return HD_JWT_EMALFORMED;
        *kid = json_string_value(k);
    }
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
    return hd_chname_valid(s, len);
}

/*
 * Copy a channel list into one block: n + 1 pointers (the last NULL)
 * followed by the NUL-terminated strings, so that the list costs one
 * allocation and one free whatever its length.
 */
static int
load_channels(const json_t *arr, char ***out, uint16_t *nout)
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
    *out = v;
    *nout = (uint16_t) n; /* <= HD_JWT_MAX_CHANNELS */
    return HD_JWT_OK;
}

/* aud (a string or an array of strings, RFC 7519 4.1.3) names want. */
static bool
aud_ok(const json_t *aud, const char *want)
{
    size_t i;

    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud))
        return false;
    for (i = 0; i < json_array_size(aud) && i < 64; i++) {
        const json_t *e = json_array_get(aud, i);
        if (json_is_string(e) && strcmp(json_string_value(e), want) == 0)
            return true;
    }
    return false;
}

/*
 * Check the claims of a payload whose signature has been verified and fill
 * *c. On error *c may be partly filled; the caller frees it.
 */
static int
load_claims(const json_t *p, const hd_jwt_policy_t *pol, int64_t now,
            hd_jwt_claims_t *c)
{
    const json_t *exp = json_object_get(p, "exp");
    const json_t *nbf = json_object_get(p, "nbf");
    const json_t *iat = json_object_get(p, "iat");
    const json_t *sub = json_object_get(p, "sub");
    const json_t *tenant = json_object_get(p, "tenant");
    const json_t *channels = json_object_get(p, "channels");
    const json_t *publish = json_object_get(p, "publish");
    const json_t *channel = json_object_get(p, "channel");
    int64_t       leeway = pol->leeway_s < 0 ? 0 : pol->leeway_s;

    if (exp == NULL)
        return HD_JWT_ENOEXP;
    if (!json_is_number(exp) || (nbf != NULL && !json_is_number(nbf))
        || (iat != NULL && !json_is_number(iat)))
        return HD_JWT_EMALFORMED;

    c->exp = to_seconds(exp, false);
    if (now >= sat_add(c->exp, leeway))
        return HD_JWT_EEXPIRED;
    if (nbf != NULL && sat_add(now, leeway) < to_seconds(nbf, true))
        return HD_JWT_ECLAIMS;
    if (iat != NULL) {
        c->iat = to_seconds(iat, true);
        if (sat_add(now, leeway) < c->iat)
            return HD_JWT_ECLAIMS; /* issued in the future */
    }
    if (pol->max_lifetime_s > 0) {
        int64_t from = iat != NULL ? c->iat : now;
        int64_t life;
        if (__builtin_sub_overflow(c->exp, from, &life)
            || life > pol->max_lifetime_s)
            return HD_JWT_ELIFETIME;
    }
    if (pol->iss != NULL) {
        const json_t *iss = json_object_get(p, "iss");
        if (!json_is_string(iss) || strcmp(json_string_value(iss), pol->iss))
            return HD_JWT_EISS;
    }
    if (pol->aud != NULL && !aud_ok(json_object_get(p, "aud"), pol->aud))
        return HD_JWT_EAUD;

    if (!json_is_string(sub) || json_string_length(sub) == 0
        || json_string_length(sub) > SUB_MAX)
        return HD_JWT_ECLAIMS;
    if (tenant != NULL
        && (!json_is_string(tenant)
            || !hd_tenant_valid(json_string_value(tenant),
                                json_string_length(tenant))))
        return HD_JWT_ECLAIMS;
    if (channels != NULL
        && load_channels(channels, &c->channels, &c->nchannels) != HD_JWT_OK)
        return HD_JWT_ECLAIMS;
    c->publish = HD_JWT_PUB_ABSENT;
    if (json_is_boolean(publish)) {
        c->publish = json_is_true(publish) ? HD_JWT_PUB_YES : HD_JWT_PUB_NO;
    } else if (publish != NULL) {
        if (load_channels(publish, &c->pub_channels, &c->npub_channels)
            != HD_JWT_OK)
            return HD_JWT_ECLAIMS;
        c->publish = HD_JWT_PUB_LIST;
    }
    if (channel != NULL
        && (!json_is_string(channel)
            || !hd_chname_valid(json_string_value(channel),
                                json_string_length(channel))))
        return HD_JWT_ECLAIMS;

    /* jansson strings are NUL-free without JSON_ALLOW_NUL: strdup is exact */
    c->sub = hd_strdup(json_string_value(sub));
    if (tenant != NULL)
        c->tenant = hd_strdup(json_string_value(tenant));
    if (channel != NULL)
        c->channel = hd_strdup(json_string_value(channel));
    if (json_object_get(p, "info") != NULL)
        c->info = json_dumps(json_object_get(p, "info"),
                             JSON_COMPACT | JSON_ENCODE_ANY);
    return HD_JWT_OK;
}

/*
 * Pick the keys for (alg, kid) and check sig with each until one matches
 * (at most HD_JWT_MAX_TRIES). A token with a kid is checked with the keys
 * that carry that kid or, when none does, with the keys that have no kid
 * (a PEM key or secret configured without one); a token without a kid
 * with every key of its family. Only keys of alg's family (and of alg
 * itself when the key names one) are ever used. A kid that no key has,
 * with no kid-less key to fall back on, is EKID; no key of the family at
 * all is EALG.
 */
static int
check_sig(const hd_jwt_keyset_t *ks, int alg, const char *kid,
          const uint8_t *sig, size_t slen, const char *data, size_t len)
{
    bool   by_kid = false, fam_seen = false;
    size_t i, tries = 0;

    for (i = 0; kid != NULL && ks != NULL && i < ks->n; i++)
        if (ks->k[i].kid != NULL && strcmp(ks->k[i].kid, kid) == 0)
            by_kid = true;
    for (i = 0; ks != NULL && i < ks->n; i++) {
        const hd_jwt_key_t *k = &ks->k[i];

        if (by_kid && strcmp(k->kid != NULL ? k->kid : "", kid) != 0)
            continue;
        if (kid != NULL && !by_kid && k->kid != NULL)
            continue;
        if (k->fam != hd_jwt_algs[alg].fam || (k->alg >= 0 && k->alg != alg))
            continue;
        fam_seen = true;
        if (tries++ == HD_JWT_MAX_TRIES)
            break;
        if (sig_ok(k, alg, sig, slen, data, len))
            return HD_JWT_OK;
    }
    if (fam_seen)
        return HD_JWT_ESIGNATURE;
    return kid != NULL && !by_kid ? HD_JWT_EKID : HD_JWT_EALG;
}

int
hd_jwt_verify_ks(const char *token, size_t len, const hd_jwt_keyset_t *ks,
                 const hd_jwt_policy_t *pol, int64_t now, hd_jwt_claims_t *out)
{
    static const hd_jwt_policy_t none = { 0 };
    uint8_t                      buf[PART_MAX];
    const char                  *d1, *d2, *sig, *kid;
    size_t                       hlen, plen, slen;
    long                         n;
    json_t                      *hdr = NULL, *pl = NULL;
    hd_jwt_claims_t              tmp;
    hd_jwt_claims_t             *c = out != NULL ? out : &tmp;
    int                          rc, alg = -1;

    memset(c, 0, sizeof(*c));
    if (pol == NULL)
        pol = &none;

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
    rc = check_header(hdr, pol->algs ? pol->algs : HD_JWT_ALGS_ALL, &alg, &kid);
    if (rc != HD_JWT_OK)
        goto fail;

    /* a signature part that is not base64url at all is malformed; one of
     * the wrong size is simply a signature that does not match */
    n = hd_b64url_decode(sig, slen, buf, PART_MAX);
    rc = HD_JWT_EMALFORMED;
    if (n < 0)
        goto fail;
    rc = check_sig(ks, alg, kid, buf, (size_t) n, token, hlen + 1 + plen);
    if (rc != HD_JWT_OK)
        goto fail;

    rc = HD_JWT_EMALFORMED;
    pl = load_object(d1 + 1, plen, buf);
    if (pl == NULL)
        goto fail;
    rc = load_claims(pl, pol, now, c);
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
    return rc;
}

/*
 * The historical one-secret HS256 entry point: a key set of one on the
 * stack would need the secret copied, so build the set around it without
 * owning it.
 */
int
hd_jwt_verify(const char *token, size_t len, const void *secret,
              size_t secret_len, int64_t now, int64_t leeway_s,
              hd_jwt_claims_t *out)
{
    hd_jwt_key_t    k = { .fam = HD_FAM_HMAC,
                          .alg = HD_JWT_HS256,
                          .secret = (uint8_t *) (uintptr_t) secret,
                          .secret_len = secret_len };
    hd_jwt_keyset_t ks = { .k = &k, .n = 1, .cap = 1 };
    hd_jwt_policy_t pol = { .algs = HD_JWT_ALG_BIT(HD_JWT_HS256),
                            .leeway_s = leeway_s };

    /* the key has no kid, so a kid in the header falls back on it */
    return hd_jwt_verify_ks(token, len, &ks, &pol, now, out);
}

int
hd_jwt_claims_load(const void *payload, const hd_jwt_policy_t *pol, int64_t now,
                   hd_jwt_claims_t *out)
{
    static const hd_jwt_policy_t none = { 0 };
    int                          rc;

    memset(out, 0, sizeof(*out));
    if (!json_is_object((const json_t *) payload))
        return HD_JWT_EMALFORMED;
    rc = load_claims(payload, pol != NULL ? pol : &none, now, out);
    if (rc != HD_JWT_OK)
        hd_jwt_claims_free(out);
    return rc;
}

int
hd_jwt_peek_kid(const char *token, size_t len, char *buf, size_t cap)
{
    uint8_t       hb[HD_B64URL_DECMAX(HD_JWT_MAX_HEADER_LEN) + 1];
    const char   *d = memchr(token, '.', len);
    json_t       *h;
    const json_t *k;
    int           rc = -ENOENT;

    if (d == NULL || (size_t) (d - token) > HD_JWT_MAX_HEADER_LEN)
        return -EINVAL;
    long n = hd_b64url_decode(token, (size_t) (d - token), hb, sizeof(hb));
    if (n <= 0)
        return -EINVAL;
    h = json_loadb((const char *) hb, (size_t) n, JSON_REJECT_DUPLICATES, NULL);
    k = json_object_get(h, "kid");
    if (json_is_string(k) && json_string_length(k) < cap) {
        memcpy(buf, json_string_value(k), json_string_length(k) + 1);
        rc = 0;
    }
    json_decref(h);
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
    free(c->pub_channels);
    free(c->channel);
    free(c->info);
    memset(c, 0, sizeof(*c));
}

/* The size of a channel list (pointers and strings) as load_channels()
 * lays it out; 0 for none. */
static size_t
list_bytes(char *const *v, size_t n)
{
    size_t bytes;

    if (v == NULL)
        return 0;
    bytes = (n + 1) * sizeof(*v);
    for (size_t i = 0; i < n; i++)
        bytes += strlen(v[i]) + 1;
    return bytes;
}

/* Copy list v (n entries, or none) to *at; its strings to *sp. */
static char **
list_copy(char *const *v, size_t n, char **at, char **sp)
{
    char **out = (char **) (void *) *at;

    if (v == NULL)
        return NULL;
    *at += (n + 1) * sizeof(*v);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(v[i]) + 1;
        memcpy(*sp, v[i], len);
        out[i] = *sp;
        *sp += len;
    }
    out[n] = NULL;
    return out;
}

static char *
str_copy(const char *s, char **sp)
{
    char  *out = *sp;
    size_t len;

    if (s == NULL)
        return NULL;
    len = strlen(s) + 1;
    memcpy(out, s, len);
    *sp += len;
    return out;
}

hd_jwt_claims_t *
hd_jwt_claims_pack(hd_jwt_claims_t *c)
{
    size_t           lists, strs = 0, i;
    const char      *s[] = { c->sub, c->tenant, c->channel, c->info };
    hd_jwt_claims_t *p;
    char            *at, *sp;

    /* the struct, then the two pointer arrays (8-byte aligned after it),
     * then every string */
    lists = list_bytes(c->channels, c->nchannels)
        + list_bytes(c->pub_channels, c->npub_channels);
    for (i = 0; i < sizeof(s) / sizeof(s[0]); i++)
        strs += s[i] != NULL ? strlen(s[i]) + 1 : 0;
    p = hd_malloc(sizeof(*p) + lists + strs);
    *p = *c;
    at = (char *) (p + 1);
    /* the strings of both lists were counted in lists: they go after
     * the last pointer array, before the claims' own strings */
    sp = at + (c->channels ? (c->nchannels + 1) * sizeof(char *) : 0)
        + (c->pub_channels ? (c->npub_channels + 1) * sizeof(char *) : 0);
    p->channels = list_copy(c->channels, c->nchannels, &at, &sp);
    p->pub_channels = list_copy(c->pub_channels, c->npub_channels, &at, &sp);
    p->sub = str_copy(c->sub, &sp);
    p->tenant = str_copy(c->tenant, &sp);
    p->channel = str_copy(c->channel, &sp);
    p->info = str_copy(c->info, &sp);
    hd_jwt_claims_free(c);
    return p;
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
    case HD_JWT_EKID:
        return "unknown key id (kid)";
    case HD_JWT_EAUD:
        return "wrong audience (aud)";
    case HD_JWT_EISS:
        return "wrong issuer (iss)";
    case HD_JWT_ELIFETIME:
        return "token lifetime over the maximum";
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
 * header.payload.signature; claims_json is signed as given (see hd_jwt.h).
 * The header is jansson's compact dump of {"alg", "kid"?, "typ"} in that
 * order, so an HS256 token without kid has the classic
 * {"alg":"HS256","typ":"JWT"} header byte for byte.
 */
char *
hd_jwt_sign_alg(int alg, const char *kid, const char *claims_json,
                const void *key, size_t key_len)
{
    uint8_t       sig[1024];
    size_t        slen = sizeof(sig);
    char         *hjson = NULL, *tok = NULL, *out = NULL;
    size_t        hl, cl, total, pos;
    json_t       *h;
    EVP_PKEY     *pk = NULL;
    EVP_MD_CTX   *ctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    BIO          *bio = NULL;
    unsigned int  mlen;

    if (alg < 0 || alg >= HD_JWT_NALG || key_len > INT_MAX)
        return NULL;
    h = kid != NULL
        ? json_pack("{s:s, s:s, s:s}", "alg", hd_jwt_algs[alg].name, "kid", kid,
                    "typ", "JWT")
        : json_pack("{s:s, s:s}", "alg", hd_jwt_algs[alg].name, "typ", "JWT");
    if (h != NULL)
        hjson = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    if (hjson == NULL)
        return NULL;
    hl = strlen(hjson);
    cl = strlen(claims_json);
    total = HD_B64URL_ENCLEN(hl) + 1 + HD_B64URL_ENCLEN(cl) + 1
        + HD_B64URL_ENCLEN(sizeof(sig)) + 1;
    tok = hd_malloc(total);
    pos = hd_b64url_encode((const uint8_t *) hjson, hl, tok, total);
    tok[pos++] = '.';
    pos += hd_b64url_encode((const uint8_t *) claims_json, cl, tok + pos,
                            total - pos);

    if (hd_jwt_algs[alg].fam == HD_FAM_HMAC) {
        if (mac(alg, key, key_len, tok, pos, sig, &mlen) != 0)
            goto done;
        slen = mlen;
    } else {
        bio = BIO_new_mem_buf(key, (int) key_len);
        pk = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)
                         : NULL;
        if (pk == NULL
            || hd_jwt_pkey_family(pk, NULL, 0) != (int) hd_jwt_algs[alg].fam)
            goto done;
        ctx = EVP_MD_CTX_new();
        if (ctx == NULL
            || EVP_DigestSignInit(ctx, &pctx, alg_md(alg), NULL, pk) != 1)
            goto done;
        if (hd_jwt_algs[alg].pss
            && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1
                || EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx,
                                                    RSA_PSS_SALTLEN_DIGEST)
                    != 1))
            goto done;
        if (EVP_DigestSign(ctx, sig, &slen, (const uint8_t *) tok, pos) != 1)
            goto done;
        if (hd_jwt_algs[alg].fam == HD_FAM_EC256
            || hd_jwt_algs[alg].fam == HD_FAM_EC384) {
            /* DER back to the raw r||s that JWS uses */
            size_t half = hd_jwt_algs[alg].fam == HD_FAM_EC256 ? 32 : 48;
            const uint8_t *p = sig;
            ECDSA_SIG     *es = d2i_ECDSA_SIG(NULL, &p, (long) slen);
            const BIGNUM  *r, *s;

            if (es == NULL)
                goto done;
            ECDSA_SIG_get0(es, &r, &s);
            if (BN_bn2binpad(r, sig, (int) half) < 0
                || BN_bn2binpad(s, sig + half, (int) half) < 0) {
                ECDSA_SIG_free(es);
                goto done;
            }
            ECDSA_SIG_free(es);
            slen = 2 * half;
        }
    }
    tok[pos++] = '.';
    hd_b64url_encode(sig, slen, tok + pos, total - pos);
    out = tok;
    tok = NULL;
done:
    ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pk);
    BIO_free(bio);
    free(hjson);
    free(tok);
    return out;
}

char *
hd_jwt_sign(const char *claims_json, const void *secret, size_t secret_len)
{
    return hd_jwt_sign_alg(HD_JWT_HS256, NULL, claims_json, secret, secret_len);
}
