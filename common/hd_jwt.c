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
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "hd_alloc.h"
#include "hd_chname.h"
#include "hd_jwt.h"

#define SUB_MAX       255
#define PART_MAX      HD_B64URL_DECMAX(HD_JWT_MAX_LEN)
#define JWKS_MAX_KEYS 64
#define RSA_MIN_BITS  2048

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

/* ---- algorithms ------------------------------------------------------- */

enum fam {
    FAM_HMAC,
    FAM_RSA,
    FAM_EC256,
    FAM_EC384,
    FAM_ED25519,
};

static const struct {
    const char *name;
    enum fam    fam;
    int         bits; /* hash size; 0 for EdDSA */
    bool        pss;
} algs[HD_JWT_NALG] = {
    [HD_JWT_HS256] = { "HS256", FAM_HMAC, 256, false },
    [HD_JWT_HS384] = { "HS384", FAM_HMAC, 384, false },
    [HD_JWT_HS512] = { "HS512", FAM_HMAC, 512, false },
    [HD_JWT_RS256] = { "RS256", FAM_RSA, 256, false },
    [HD_JWT_RS384] = { "RS384", FAM_RSA, 384, false },
    [HD_JWT_RS512] = { "RS512", FAM_RSA, 512, false },
    [HD_JWT_PS256] = { "PS256", FAM_RSA, 256, true },
    [HD_JWT_PS384] = { "PS384", FAM_RSA, 384, true },
    [HD_JWT_PS512] = { "PS512", FAM_RSA, 512, true },
    [HD_JWT_ES256] = { "ES256", FAM_EC256, 256, false },
    [HD_JWT_ES384] = { "ES384", FAM_EC384, 384, false },
    [HD_JWT_EDDSA] = { "EdDSA", FAM_ED25519, 0, false },
};

static const EVP_MD *
alg_md(int alg)
{
    switch (algs[alg].bits) {
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
        if (strlen(algs[i].name) == len && memcmp(algs[i].name, name, len) == 0)
            return i;
    return -1;
}

const char *
hd_jwt_alg_name(int alg)
{
    return alg >= 0 && alg < HD_JWT_NALG ? algs[alg].name : "?";
}

/* ---- key sets --------------------------------------------------------- */

struct jkey {
    char     *kid; /* NULL: none */
    enum fam  fam;
    int       alg; /* -1: any algorithm of the family */
    uint8_t  *secret;
    size_t    secret_len;
    EVP_PKEY *pkey;
};

struct hd_jwt_keyset {
    struct jkey *k;
    size_t       n, cap;
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

hd_jwt_keyset_t *
hd_jwt_keyset_new(void)
{
    return hd_calloc(1, sizeof(hd_jwt_keyset_t));
}

static void
jkey_free(struct jkey *k)
{
    free(k->kid);
    if (k->secret != NULL) {
        OPENSSL_cleanse(k->secret, k->secret_len);
        free(k->secret);
    }
    EVP_PKEY_free(k->pkey);
    memset(k, 0, sizeof(*k));
}

void
hd_jwt_keyset_free(hd_jwt_keyset_t *ks)
{
    if (ks == NULL)
        return;
    for (size_t i = 0; i < ks->n; i++)
        jkey_free(&ks->k[i]);
    free(ks->k);
    free(ks);
}

size_t
hd_jwt_keyset_count(const hd_jwt_keyset_t *ks)
{
    return ks != NULL ? ks->n : 0;
}

int
hd_jwt_keyset_has_kid(const hd_jwt_keyset_t *ks, const char *kid)
{
    for (size_t i = 0; ks != NULL && i < ks->n; i++) {
        if (kid == NULL
                ? ks->k[i].kid == NULL
                : ks->k[i].kid != NULL && strcmp(ks->k[i].kid, kid) == 0)
            return 1;
    }
    return 0;
}

static struct jkey *
push(hd_jwt_keyset_t *ks, const char *kid)
{
    struct jkey *k;

    if (ks->n == ks->cap) {
        ks->cap = ks->cap ? ks->cap * 2 : 4;
        ks->k = hd_realloc(ks->k, ks->cap * sizeof(*ks->k));
    }
    k = &ks->k[ks->n++];
    memset(k, 0, sizeof(*k));
    k->kid = kid != NULL ? hd_strdup(kid) : NULL;
    k->alg = -1;
    return k;
}

int
hd_jwt_keyset_add_hmac(hd_jwt_keyset_t *ks, const char *kid, const void *secret,
                       size_t len)
{
    struct jkey *k;

    if (len == 0 || len > INT_MAX)
        return -1;
    k = push(ks, kid);
    k->fam = FAM_HMAC;
    k->secret = hd_malloc(len);
    memcpy(k->secret, secret, len);
    k->secret_len = len;
    return 0;
}

/* The family of a public key, or -1 (with a message) when herald cannot
 * use it. */
static int
pkey_family(EVP_PKEY *pk, char *err, size_t errlen)
{
    char   group[64];
    size_t glen = 0;

    switch (EVP_PKEY_get_base_id(pk)) {
    case EVP_PKEY_RSA:
        if (EVP_PKEY_get_bits(pk) < RSA_MIN_BITS) {
            seterr(err, errlen, "RSA key of %d bits; at least %d needed",
                   EVP_PKEY_get_bits(pk), RSA_MIN_BITS);
            return -1;
        }
        return FAM_RSA;
    case EVP_PKEY_EC:
        if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME,
                                           group, sizeof(group), &glen)
            != 1)
            break;
        if (strcmp(group, "prime256v1") == 0)
            return FAM_EC256;
        if (strcmp(group, "secp384r1") == 0)
            return FAM_EC384;
        seterr(err, errlen, "EC curve %s not supported (P-256, P-384)", group);
        return -1;
    case EVP_PKEY_ED25519:
        return FAM_ED25519;
    }
    seterr(err, errlen,
           "unsupported key type (RSA, EC P-256/P-384 or Ed25519 expected)");
    return -1;
}

static int
add_pkey(hd_jwt_keyset_t *ks, const char *kid, int alg, EVP_PKEY *pk, char *err,
         size_t errlen)
{
    int          fam = pkey_family(pk, err, errlen);
    struct jkey *k;

    if (fam < 0) {
        EVP_PKEY_free(pk);
        return -1;
    }
    if (alg >= 0 && (int) algs[alg].fam != fam) {
        seterr(err, errlen, "key type does not match its alg %s",
               algs[alg].name);
        EVP_PKEY_free(pk);
        return -1;
    }
    k = push(ks, kid);
    k->fam = (enum fam) fam;
    k->alg = alg;
    k->pkey = pk;
    return 0;
}

int
hd_jwt_keyset_add_pem(hd_jwt_keyset_t *ks, const char *kid, const char *pem,
                      size_t len, char *err, size_t errlen)
{
    BIO      *bio;
    EVP_PKEY *pk = NULL;
    X509     *x;

    if (len > INT_MAX || memmem(pem, len, "PRIVATE KEY", 11) != NULL) {
        seterr(err, errlen,
               "a private key: give the public key (openssl pkey -pubout)");
        return -1;
    }
    bio = BIO_new_mem_buf(pem, (int) len);
    if (bio == NULL)
        goto fail;
    if (memmem(pem, len, "BEGIN CERTIFICATE", 17) != NULL) {
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x != NULL) {
            pk = X509_get_pubkey(x);
            X509_free(x);
        }
    } else {
        pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    }
    BIO_free(bio);
    ERR_clear_error();
    if (pk == NULL)
        goto fail;
    return add_pkey(ks, kid, -1, pk, err, errlen);

fail:
    ERR_clear_error();
    seterr(err, errlen,
           "not a PEM public key (\"BEGIN PUBLIC KEY\") or certificate");
    return -1;
}

/* ---- JWKS (RFC 7517, 7518 section 6, 8037) ---------------------------- */

/* A base64url member of a JWK decoded into a heap buffer; NULL if absent
 * or not canonical base64url, or longer than max bytes. */
static uint8_t *
jwk_bytes(const json_t *jwk, const char *name, size_t max, size_t *n)
{
    const json_t *v = json_object_get(jwk, name);
    uint8_t      *buf;
    long          r;

    if (!json_is_string(v) || json_string_length(v) == 0
        || HD_B64URL_DECMAX(json_string_length(v)) > max)
        return NULL;
    buf = hd_malloc(HD_B64URL_DECMAX(json_string_length(v)) + 1);
    r = hd_b64url_decode(json_string_value(v), json_string_length(v), buf,
                         HD_B64URL_DECMAX(json_string_length(v)));
    if (r <= 0) {
        free(buf);
        return NULL;
    }
    *n = (size_t) r;
    return buf;
}

static EVP_PKEY *
fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM   *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY     *pk = NULL;

    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1
        || EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pk = NULL;
    OSSL_PARAM_free(params);
    EVP_PKEY_CTX_free(ctx);
    return pk;
}

static EVP_PKEY *
jwk_rsa(const json_t *jwk)
{
    size_t          nn = 0, en = 0;
    uint8_t        *n = jwk_bytes(jwk, "n", 2048, &nn);
    uint8_t        *e = jwk_bytes(jwk, "e", 16, &en);
    BIGNUM         *bn = NULL, *be = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY       *pk = NULL;

    if (n == NULL || e == NULL)
        goto done;
    bn = BN_bin2bn(n, (int) nn, NULL);
    be = BN_bin2bn(e, (int) en, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (bn == NULL || be == NULL || bld == NULL
        || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn)
        || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
        goto done;
    pk = fromdata("RSA", bld);
done:
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return pk;
}

static EVP_PKEY *
jwk_ec(const json_t *jwk, const char *crv)
{
    size_t          xn = 0, yn = 0, clen;
    const char     *group;
    uint8_t        *x, *y, pt[1 + 2 * 48];
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY       *pk = NULL;
    EVP_PKEY_CTX   *chk = NULL;

    if (strcmp(crv, "P-256") == 0) {
        group = "prime256v1";
        clen = 32;
    } else {
        group = "secp384r1";
        clen = 48;
    }
    x = jwk_bytes(jwk, "x", clen, &xn);
    y = jwk_bytes(jwk, "y", clen, &yn);
    /* RFC 7518 6.2.1.2: x and y are exactly the coordinate size */
    if (x == NULL || y == NULL || xn != clen || yn != clen)
        goto done;
    pt[0] = 0x04;
    memcpy(pt + 1, x, clen);
    memcpy(pt + 1 + clen, y, clen);
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL
        || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                            group, 0)
        || !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt,
                                             1 + 2 * clen))
        goto done;
    pk = fromdata("EC", bld);
    /* a point that is not on the curve must not become a key */
    chk = pk != NULL ? EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL) : NULL;
    if (pk != NULL && (chk == NULL || EVP_PKEY_public_check(chk) != 1)) {
        EVP_PKEY_free(pk);
        pk = NULL;
    }
done:
    EVP_PKEY_CTX_free(chk);
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return pk;
}

static EVP_PKEY *
jwk_okp(const json_t *jwk)
{
    size_t    xn = 0;
    uint8_t  *x = jwk_bytes(jwk, "x", 32, &xn);
    EVP_PKEY *pk = NULL;

    if (x != NULL && xn == 32)
        pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, 32);
    free(x);
    return pk;
}

/* Add one JWK: 1 added, 0 skipped, -1 malformed (err set). */
static int
add_jwk(hd_jwt_keyset_t *ks, const json_t *jwk, size_t i, char *err,
        size_t errlen)
{
    const json_t *kty = json_object_get(jwk, "kty");
    const json_t *kid = json_object_get(jwk, "kid");
    const json_t *use = json_object_get(jwk, "use");
    const json_t *jalg = json_object_get(jwk, "alg");
    const json_t *crv = json_object_get(jwk, "crv");
    const char   *t, *c = NULL;
    EVP_PKEY     *pk = NULL;
    int           alg = -1;
    char          kerr[128];

    if (!json_is_object(jwk) || !json_is_string(kty)
        || (kid != NULL
            && (!json_is_string(kid) || json_string_length(kid) == 0
                || json_string_length(kid) > HD_JWT_MAX_KID_LEN))
        || (use != NULL && !json_is_string(use))
        || (jalg != NULL && !json_is_string(jalg))
        || (crv != NULL && !json_is_string(crv))) {
        seterr(err, errlen, "keys[%zu]: malformed JWK", i);
        return -1;
    }
    if (use != NULL && strcmp(json_string_value(use), "sig") != 0)
        return 0;
    if (jalg != NULL) {
        alg = hd_jwt_alg_parse(json_string_value(jalg),
                               json_string_length(jalg));
        if (alg < 0 || algs[alg].fam == FAM_HMAC)
            return 0; /* RSA-OAEP, ES512, ...: not for us */
    }
    t = json_string_value(kty);
    if (crv != NULL)
        c = json_string_value(crv);
    if (strcmp(t, "RSA") == 0) {
        pk = jwk_rsa(jwk);
    } else if (strcmp(t, "EC") == 0) {
        if (c == NULL || (strcmp(c, "P-256") != 0 && strcmp(c, "P-384") != 0))
            return 0; /* P-521, secp256k1: skipped */
        pk = jwk_ec(jwk, c);
    } else if (strcmp(t, "OKP") == 0) {
        if (c == NULL || strcmp(c, "Ed25519") != 0)
            return 0; /* X25519 (not for signatures), Ed448 */
        pk = jwk_okp(jwk);
    } else {
        return 0; /* "oct" and anything else */
    }
    ERR_clear_error();
    if (pk == NULL) {
        seterr(err, errlen, "keys[%zu]: invalid %s key", i, t);
        return -1;
    }
    if (add_pkey(ks, kid != NULL ? json_string_value(kid) : NULL, alg, pk, kerr,
                 sizeof(kerr))
        < 0) {
        seterr(err, errlen, "keys[%zu]: %s", i, kerr);
        return -1;
    }
    return 1;
}

int
hd_jwt_keyset_add_jwks(hd_jwt_keyset_t *ks, const char *json, size_t len,
                       size_t *skipped, char *err, size_t errlen)
{
    json_error_t     jerr;
    json_t          *root, *keys;
    hd_jwt_keyset_t *tmp = NULL;
    size_t           i, skip = 0;
    int              rc = -1;

    if (skipped != NULL)
        *skipped = 0;
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        seterr(err, errlen, "not JSON: %s (line %d)", jerr.text, jerr.line);
        return -1;
    }
    keys = json_object_get(root, "keys");
    if (!json_is_object(root) || !json_is_array(keys)) {
        seterr(err, errlen, "not a JWK Set (an object with a \"keys\" array)");
        goto done;
    }
    if (json_array_size(keys) > JWKS_MAX_KEYS) {
        seterr(err, errlen, "more than %d keys", JWKS_MAX_KEYS);
        goto done;
    }
    /* into a scratch set first: all or nothing */
    tmp = hd_jwt_keyset_new();
    for (i = 0; i < json_array_size(keys); i++) {
        int r = add_jwk(tmp, json_array_get(keys, i), i, err, errlen);
        if (r < 0)
            goto done;
        if (r == 0)
            skip++;
    }
    for (i = 0; i < tmp->n; i++) {
        struct jkey *k = push(ks, NULL);
        *k = tmp->k[i];
    }
    rc = (int) tmp->n;
    tmp->n = 0;
    if (skipped != NULL)
        *skipped = skip;
done:
    hd_jwt_keyset_free(tmp);
    json_decref(root);
    return rc;
}

/* ---- signatures ------------------------------------------------------- */

/* HMAC of data with the key's secret into out (>= EVP_MAX_MD_SIZE). */
static int
mac(int alg, const void *secret, size_t secret_len, const void *data,
    size_t len, uint8_t *out, unsigned int *n)
{
    static const uint8_t empty;

    if (secret_len > INT_MAX)
        return -1;
    /* OpenSSL 3's HMAC() refuses a NULL key, which is what an empty
     * secret may come as */
    if (secret_len == 0)
        secret = &empty;
    *n = 0;
    if (HMAC(alg_md(alg), secret, (int) secret_len, data, len, out, n) == NULL)
        return -1;
    return 0;
}

/* JWS ECDSA signatures are r||s, each the curve's size; libcrypto wants
 * DER. Returns the DER length or -1. */
static int
ecdsa_raw_to_der(const uint8_t *sig, size_t half, uint8_t *der, size_t cap)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM    *r = BN_bin2bn(sig, (int) half, NULL);
    BIGNUM    *s = BN_bin2bn(sig + half, (int) half, NULL);
    int        n = -1;

    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        goto done;
    }
    if (i2d_ECDSA_SIG(es, NULL) <= (int) cap) {
        uint8_t *p = der;
        n = i2d_ECDSA_SIG(es, &p);
    }
done:
    ECDSA_SIG_free(es);
    return n;
}

/* True when sig is a valid signature of data by key k under alg. */
static bool
sig_ok(const struct jkey *k, int alg, const uint8_t *sig, size_t slen,
       const void *data, size_t len)
{
    uint8_t       want[EVP_MAX_MD_SIZE];
    uint8_t       der[2 * 48 + 16];
    unsigned int  n;
    EVP_MD_CTX   *ctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    bool          ok = false;

    if (k->fam == FAM_HMAC) {
        ok = mac(alg, k->secret, k->secret_len, data, len, want, &n) == 0
            && slen == n && CRYPTO_memcmp(sig, want, n) == 0;
        /* want is a valid signature for what the client sent: leave none
         * on the stack */
        OPENSSL_cleanse(want, sizeof(want));
        return ok;
    }
    if (k->fam == FAM_EC256 || k->fam == FAM_EC384) {
        size_t half = k->fam == FAM_EC256 ? 32 : 48;
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
    if (k->fam == FAM_RSA) {
        if (algs[alg].pss) {
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
load_channels(const json_t *arr, char ***out, size_t *nout)
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
    *nout = n;
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
        const struct jkey *k = &ks->k[i];

        if (by_kid && strcmp(k->kid != NULL ? k->kid : "", kid) != 0)
            continue;
        if (kid != NULL && !by_kid && k->kid != NULL)
            continue;
        if (k->fam != algs[alg].fam || (k->alg >= 0 && k->alg != alg))
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
    struct jkey     k = { .fam = FAM_HMAC,
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
    int           rc = -1;

    if (d == NULL || (size_t) (d - token) > HD_JWT_MAX_HEADER_LEN)
        return -1;
    long n = hd_b64url_decode(token, (size_t) (d - token), hb, sizeof(hb));
    if (n <= 0)
        return -1;
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
        ? json_pack("{s:s, s:s, s:s}", "alg", algs[alg].name, "kid", kid, "typ",
                    "JWT")
        : json_pack("{s:s, s:s}", "alg", algs[alg].name, "typ", "JWT");
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

    if (algs[alg].fam == FAM_HMAC) {
        if (mac(alg, key, key_len, tok, pos, sig, &mlen) != 0)
            goto done;
        slen = mlen;
    } else {
        bio = BIO_new_mem_buf(key, (int) key_len);
        pk = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)
                         : NULL;
        if (pk == NULL || pkey_family(pk, NULL, 0) != (int) algs[alg].fam)
            goto done;
        ctx = EVP_MD_CTX_new();
        if (ctx == NULL
            || EVP_DigestSignInit(ctx, &pctx, alg_md(alg), NULL, pk) != 1)
            goto done;
        if (algs[alg].pss
            && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1
                || EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx,
                                                    RSA_PSS_SALTLEN_DIGEST)
                    != 1))
            goto done;
        if (EVP_DigestSign(ctx, sig, &slen, (const uint8_t *) tok, pos) != 1)
            goto done;
        if (algs[alg].fam == FAM_EC256 || algs[alg].fam == FAM_EC384) {
            /* DER back to the raw r||s that JWS uses */
            size_t         half = algs[alg].fam == FAM_EC256 ? 32 : 48;
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
