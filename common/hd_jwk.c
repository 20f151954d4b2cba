/*
 * JWT key sets: HMAC secrets, PEM public keys and JWK Sets (RFC 7517,
 * RFC 7518 section 6, RFC 8037), each key bound to its algorithm family
 * (and to a JWK's own "alg"). Verification (hd_jwt.c) only reads a set.
 *
 * A JWK Set is loaded all or nothing, so a half-broken set from an
 * identity provider never replaces a good one; EC points are checked to
 * be on their curve, RSA keys must have at least RSA_MIN_BITS.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "hd_alloc.h"
#include "hd_jwt.h"
#include "hd_jwt_int.h"

#define JWKS_MAX_KEYS 64
#define RSA_MIN_BITS  2048

/* ---- key sets --------------------------------------------------------- */

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
jkey_free(hd_jwt_key_t *k)
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

static hd_jwt_key_t *
push(hd_jwt_keyset_t *ks, const char *kid)
{
    hd_jwt_key_t *k;

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
    hd_jwt_key_t *k;

    if (len == 0 || len > INT_MAX)
        return -EINVAL;
    k = push(ks, kid);
    k->fam = HD_FAM_HMAC;
    k->secret = hd_malloc(len);
    memcpy(k->secret, secret, len);
    k->secret_len = len;
    return 0;
}

/* The family of a public key, or -EINVAL (with a message) when herald cannot
 * use it. */
int
hd_jwt_pkey_family(EVP_PKEY *pk, char *err, size_t errlen)
{
    char   group[64];
    size_t glen = 0;

    switch (EVP_PKEY_get_base_id(pk)) {
    case EVP_PKEY_RSA:
        if (EVP_PKEY_get_bits(pk) < RSA_MIN_BITS) {
            seterr(err, errlen, "RSA key of %d bits; at least %d needed",
                   EVP_PKEY_get_bits(pk), RSA_MIN_BITS);
            return -EINVAL;
        }
        return HD_FAM_RSA;
    case EVP_PKEY_EC:
        if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME,
                                           group, sizeof(group), &glen)
            != 1)
            break;
        if (strcmp(group, "prime256v1") == 0)
            return HD_FAM_EC256;
        if (strcmp(group, "secp384r1") == 0)
            return HD_FAM_EC384;
        seterr(err, errlen, "EC curve %s not supported (P-256, P-384)", group);
        return -EINVAL;
    case EVP_PKEY_ED25519:
        return HD_FAM_ED25519;
    }
    seterr(err, errlen,
           "unsupported key type (RSA, EC P-256/P-384 or Ed25519 expected)");
    return -EINVAL;
}

static int
add_pkey(hd_jwt_keyset_t *ks, const char *kid, int alg, EVP_PKEY *pk, char *err,
         size_t errlen)
{
    int           fam = hd_jwt_pkey_family(pk, err, errlen);
    hd_jwt_key_t *k;

    if (fam < 0) {
        EVP_PKEY_free(pk);
        return -EINVAL;
    }
    if (alg >= 0 && (int) hd_jwt_algs[alg].fam != fam) {
        seterr(err, errlen, "key type does not match its alg %s",
               hd_jwt_algs[alg].name);
        EVP_PKEY_free(pk);
        return -EINVAL;
    }
    k = push(ks, kid);
    k->fam = (enum hd_jwt_fam) fam;
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
        return -EINVAL;
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
    return -EINVAL;
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

/* Add one JWK: 1 added, 0 skipped, -EINVAL malformed (err set). */
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
        return -EINVAL;
    }
    if (use != NULL && strcmp(json_string_value(use), "sig") != 0)
        return 0;
    if (jalg != NULL) {
        alg = hd_jwt_alg_parse(json_string_value(jalg),
                               json_string_length(jalg));
        if (alg < 0 || hd_jwt_algs[alg].fam == HD_FAM_HMAC)
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
        return -EINVAL;
    }
    if (add_pkey(ks, kid != NULL ? json_string_value(kid) : NULL, alg, pk, kerr,
                 sizeof(kerr))
        < 0) {
        seterr(err, errlen, "keys[%zu]: %s", i, kerr);
        return -EINVAL;
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
    int              rc = -EINVAL;

    if (skipped != NULL)
        *skipped = 0;
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        seterr(err, errlen, "not JSON: %s (line %d)", jerr.text, jerr.line);
        return -EINVAL;
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
        hd_jwt_key_t *k = push(ks, NULL);
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
