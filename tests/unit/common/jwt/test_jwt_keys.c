/*
 * Unit tests for the key sets and the public-key algorithms of
 * common/hd_jwt.c and common/hd_jwk.c: RS256/384/512, PS256/384/512, ES256/384, EdDSA and
 * HS384/512; PEM and JWKS loading; kid selection; algorithm confusion;
 * aud/iss/leeway/lifetime and the publish and channel claims.
 *
 * The keys are made by the openssl command when the suite starts (into a
 * temporary directory). Most tokens are signed with hd_jwt_sign_alg();
 * to keep the verifier honest one signature of each public-key family is
 * also made by the openssl command (independent of the code under test:
 * PSS salt length, raw r||s for ECDSA).
 */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "hd_alloc.h"
#include "hd_jwt.h"

#define NOW    INT64_C(1700000000)
#define EXP_OK "1700003600"
#define SECRET "hmac-secret-for-unit-tests-0123456789"

static char dir[64];

/* key files: NAME.pem (private), NAME.pub (public) */
static const struct {
    const char *name, *genpkey;
} keyspec[] = {
    { "rsa", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048" },
    { "rsa2", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048" },
    { "rsa1024", "-algorithm RSA -pkeyopt rsa_keygen_bits:1024" },
    { "p256", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256" },
    { "p384", "-algorithm EC -pkeyopt ec_paramgen_curve:P-384" },
    { "p521", "-algorithm EC -pkeyopt ec_paramgen_curve:P-521" },
    { "ed", "-algorithm ED25519" },
};

static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *b;
    long  n;

    ck_assert_msg(f != NULL, "open %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = hd_malloc((size_t) n + 1);
    ck_assert_uint_eq(fread(b, 1, (size_t) n, f), (size_t) n);
    b[n] = '\0';
    fclose(f);
    if (len != NULL)
        *len = (size_t) n;
    return b;
}

static char *
keyfile(const char *name, const char *ext)
{
    char  p[128];
    char *s;

    snprintf(p, sizeof(p), "%s/%s.%s", dir, name, ext);
    s = slurp(p, NULL);
    return s;
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
sh(const char *fmt, ...)
{
    char    cmd[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    ck_assert_msg(system(cmd) == 0, "%s", cmd);
}

static void
make_keys(void)
{
    strcpy(dir, "/tmp/hd-jwt-keys-XXXXXX");
    if (mkdtemp(dir) == NULL)
        abort();
    for (size_t i = 0; i < sizeof(keyspec) / sizeof(keyspec[0]); i++) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd),
                 "openssl genpkey %s -out %s/%s.pem 2>/dev/null && "
                 "openssl pkey -in %s/%s.pem -pubout -out %s/%s.pub",
                 keyspec[i].genpkey, dir, keyspec[i].name, dir, keyspec[i].name,
                 dir, keyspec[i].name);
        if (system(cmd) != 0)
            abort();
    }
}

/* a key set with one public key */
static hd_jwt_keyset_t *
ks_pub(const char *name, const char *kid)
{
    hd_jwt_keyset_t *ks = hd_jwt_keyset_new();
    char            *pem = keyfile(name, "pub");
    char             err[128];

    ck_assert_msg(
        hd_jwt_keyset_add_pem(ks, kid, pem, strlen(pem), err, sizeof(err)) == 0,
        "%s: %s", name, err);
    free(pem);
    return ks;
}

static char *
sign_with(int alg, const char *kid, const char *claims, const char *name)
{
    char *pem = keyfile(name, "pem");
    char *t = hd_jwt_sign_alg(alg, kid, claims, pem, strlen(pem));

    free(pem);
    ck_assert_msg(t != NULL, "sign %s with %s", hd_jwt_alg_name(alg), name);
    return t;
}

static int
verify(const char *tok, const hd_jwt_keyset_t *ks, const hd_jwt_policy_t *pol)
{
    hd_jwt_claims_t c;
    int             rc = hd_jwt_verify_ks(tok, strlen(tok), ks, pol, NOW, &c);

    hd_jwt_claims_free(&c);
    return rc;
}

#define EXPECT(rc, want)                                                     \
    do {                                                                     \
        int got_ = (rc), want_ = (want);                                     \
        ck_assert_msg(got_ == want_, "got %d (%s), want %d (%s)", got_,      \
                      hd_jwt_strerror(got_), want_, hd_jwt_strerror(want_)); \
    } while (0)

#define GOOD "{\"sub\":\"alice\",\"exp\":" EXP_OK "}"

/* Every algorithm verifies with its own key and no other. */
START_TEST(test_each_algorithm)
{
    static const struct {
        int         alg;
        const char *key;
    } t[] = {
        { HD_JWT_RS256, "rsa" },  { HD_JWT_RS384, "rsa" },
        { HD_JWT_RS512, "rsa" },  { HD_JWT_PS256, "rsa" },
        { HD_JWT_PS384, "rsa" },  { HD_JWT_PS512, "rsa" },
        { HD_JWT_ES256, "p256" }, { HD_JWT_ES384, "p384" },
        { HD_JWT_EDDSA, "ed" },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        hd_jwt_keyset_t *own = ks_pub(t[i].key, NULL);
        char            *tok = sign_with(t[i].alg, NULL, GOOD, t[i].key);
        hd_jwt_claims_t  c;

        EXPECT(hd_jwt_verify_ks(tok, strlen(tok), own, NULL, NOW, &c),
               HD_JWT_OK);
        ck_assert_str_eq(c.sub, "alice");
        hd_jwt_claims_free(&c);
        /* a flipped bit in the signature */
        size_t n = strlen(tok);
        tok[n - 2] = tok[n - 2] == 'A' ? 'B' : 'A';
        EXPECT(verify(tok, own, NULL), HD_JWT_ESIGNATURE);
        free(tok);

        /* another key of the same family does not verify it */
        if (strcmp(t[i].key, "rsa") == 0) {
            hd_jwt_keyset_t *other = ks_pub("rsa2", NULL);
            tok = sign_with(t[i].alg, NULL, GOOD, t[i].key);
            EXPECT(verify(tok, other, NULL), HD_JWT_ESIGNATURE);
            free(tok);
            hd_jwt_keyset_free(other);
        }
        hd_jwt_keyset_free(own);
    }
}
END_TEST

START_TEST(test_hmac_family)
{
    hd_jwt_keyset_t *ks = hd_jwt_keyset_new();
    int              algs[] = { HD_JWT_HS256, HD_JWT_HS384, HD_JWT_HS512 };

    ck_assert_int_eq(hd_jwt_keyset_add_hmac(ks, NULL, SECRET, strlen(SECRET)),
                     0);
    for (size_t i = 0; i < 3; i++) {
        char *tok = hd_jwt_sign_alg(algs[i], NULL, GOOD, SECRET,
                                    strlen(SECRET));
        EXPECT(verify(tok, ks, NULL), HD_JWT_OK);
        free(tok);
        tok = hd_jwt_sign_alg(algs[i], NULL, GOOD, "other-secret", 12);
        EXPECT(verify(tok, ks, NULL), HD_JWT_ESIGNATURE);
        free(tok);
    }
    hd_jwt_keyset_free(ks);
}
END_TEST

/*
 * Algorithm confusion: an HS256 token MACed with the bytes of the RSA
 * public key (PEM text, or its DER) must not verify against a set that
 * holds only that RSA key, nor one that holds it besides a secret.
 */
START_TEST(test_algorithm_confusion)
{
    hd_jwt_keyset_t *ks = ks_pub("rsa", NULL);
    char            *pub = keyfile("rsa", "pub");
    char            *tok;

    tok = hd_jwt_sign_alg(HD_JWT_HS256, NULL, GOOD, pub, strlen(pub));
    EXPECT(verify(tok, ks, NULL), HD_JWT_EALG); /* no HMAC key at all */
    free(tok);

    /* with a real secret beside it: the secret is tried, never the PEM */
    ck_assert_int_eq(hd_jwt_keyset_add_hmac(ks, NULL, SECRET, strlen(SECRET)),
                     0);
    tok = hd_jwt_sign_alg(HD_JWT_HS256, NULL, GOOD, pub, strlen(pub));
    EXPECT(verify(tok, ks, NULL), HD_JWT_ESIGNATURE);
    free(tok);

    /* an RS256 token against an EC key, an ES256 token against an RSA key */
    hd_jwt_keyset_t *ec = ks_pub("p256", NULL);
    tok = sign_with(HD_JWT_RS256, NULL, GOOD, "rsa");
    EXPECT(verify(tok, ec, NULL), HD_JWT_EALG);
    free(tok);
    tok = sign_with(HD_JWT_ES256, NULL, GOOD, "p256");
    EXPECT(verify(tok, ks, NULL), HD_JWT_EALG);
    /* and ES384 with the P-256 key's signature */
    free(tok);
    tok = sign_with(HD_JWT_ES384, NULL, GOOD, "p384");
    EXPECT(verify(tok, ec, NULL), HD_JWT_EALG);
    free(tok);

    /* signing refuses the wrong family too */
    char *pem = keyfile("p256", "pem");
    ck_assert_ptr_null(
        hd_jwt_sign_alg(HD_JWT_RS256, NULL, GOOD, pem, strlen(pem)));
    free(pem);

    hd_jwt_keyset_free(ec);
    hd_jwt_keyset_free(ks);
    free(pub);
}
END_TEST

START_TEST(test_alg_none_and_policy)
{
    hd_jwt_keyset_t *ks = ks_pub("ed", NULL);
    hd_jwt_policy_t  pol = { .algs = HD_JWT_ALG_BIT(HD_JWT_RS256) };
    char            *tok = sign_with(HD_JWT_EDDSA, NULL, GOOD, "ed");

    EXPECT(verify(tok, ks, &pol), HD_JWT_EALG); /* EdDSA not allowed */
    pol.algs |= HD_JWT_ALG_BIT(HD_JWT_EDDSA);
    EXPECT(verify(tok, ks, &pol), HD_JWT_OK);
    free(tok);

    /* "none": header {"alg":"none"} with an empty signature */
    {
        char h[64], p[128], t[256];
        hd_b64url_encode((const uint8_t *) "{\"alg\":\"none\"}", 14, h,
                         sizeof(h));
        hd_b64url_encode((const uint8_t *) GOOD, strlen(GOOD), p, sizeof(p));
        snprintf(t, sizeof(t), "%s.%s.", h, p);
        EXPECT(verify(t, ks, NULL), HD_JWT_EALG);
    }
    ck_assert_int_eq(hd_jwt_alg_parse("none", 4), -1);
    ck_assert_int_eq(hd_jwt_alg_parse("eddsa", 5), -1);
    ck_assert_int_eq(hd_jwt_alg_parse("EdDSA", 5), HD_JWT_EDDSA);
    hd_jwt_keyset_free(ks);
}
END_TEST

START_TEST(test_kid_selection)
{
    hd_jwt_keyset_t *ks = ks_pub("rsa", "k1");
    char            *pem = keyfile("rsa2", "pub");
    char            *tok;

    ck_assert_int_eq(hd_jwt_keyset_add_pem(ks, "k2", pem, strlen(pem), NULL, 0),
                     0);
    free(pem);
    ck_assert(hd_jwt_keyset_has_kid(ks, "k2"));
    ck_assert(!hd_jwt_keyset_has_kid(ks, "k3"));

    tok = sign_with(HD_JWT_RS256, "k2", GOOD, "rsa2");
    EXPECT(verify(tok, ks, NULL), HD_JWT_OK);
    free(tok);
    /* signed by k2's key but naming k1: only k1 is tried */
    tok = sign_with(HD_JWT_RS256, "k1", GOOD, "rsa2");
    EXPECT(verify(tok, ks, NULL), HD_JWT_ESIGNATURE);
    free(tok);
    /* a kid that no key has (and no kid-less key to fall back on) */
    tok = sign_with(HD_JWT_RS256, "k3", GOOD, "rsa2");
    EXPECT(verify(tok, ks, NULL), HD_JWT_EKID);
    {
        char kid[64];
        ck_assert_int_eq(hd_jwt_peek_kid(tok, strlen(tok), kid, sizeof(kid)),
                         0);
        ck_assert_str_eq(kid, "k3");
    }
    free(tok);
    /* no kid: every RSA key is tried */
    tok = sign_with(HD_JWT_RS256, NULL, GOOD, "rsa2");
    EXPECT(verify(tok, ks, NULL), HD_JWT_OK);
    free(tok);
    /* a kid-less key takes tokens with an unknown kid */
    ck_assert_int_eq(hd_jwt_keyset_add_hmac(ks, NULL, SECRET, strlen(SECRET)),
                     0);
    tok = hd_jwt_sign_alg(HD_JWT_HS256, "whatever", GOOD, SECRET,
                          strlen(SECRET));
    EXPECT(verify(tok, ks, NULL), HD_JWT_OK);
    free(tok);
    hd_jwt_keyset_free(ks);
}
END_TEST

START_TEST(test_pem_refusals)
{
    hd_jwt_keyset_t *ks = hd_jwt_keyset_new();
    char             err[160];
    char            *priv = keyfile("rsa", "pem");
    char            *small = keyfile("rsa1024", "pub");
    char            *p521 = keyfile("p521", "pub");

    ck_assert_int_eq(
        hd_jwt_keyset_add_pem(ks, NULL, priv, strlen(priv), err, sizeof(err)),
        -EINVAL);
    ck_assert_msg(strstr(err, "private key") != NULL, "%s", err);
    ck_assert(strstr(err, "MII") == NULL); /* no key material echoed */
    ck_assert_int_eq(
        hd_jwt_keyset_add_pem(ks, NULL, small, strlen(small), err, sizeof(err)),
        -EINVAL);
    ck_assert_msg(strstr(err, "2048") != NULL, "%s", err);
    ck_assert_int_eq(
        hd_jwt_keyset_add_pem(ks, NULL, p521, strlen(p521), err, sizeof(err)),
        -EINVAL);
    ck_assert_int_eq(
        hd_jwt_keyset_add_pem(ks, NULL, "garbage", 7, err, sizeof(err)),
        -EINVAL);
    ck_assert_uint_eq(hd_jwt_keyset_count(ks), 0);
    hd_jwt_keyset_free(ks);
    free(priv);
    free(small);
    free(p521);
}
END_TEST

/* A certificate's key is used. */
START_TEST(test_pem_certificate)
{
    char             p[256];
    char            *cert, *tok;
    hd_jwt_keyset_t *ks = hd_jwt_keyset_new();

    snprintf(p, sizeof(p), "%s/p256.crt", dir);
    sh("openssl req -new -x509 -key %s/p256.pem -subj /CN=t -days 2 -out %s "
       "2>/dev/null",
       dir, p);
    cert = slurp(p, NULL);
    ck_assert_int_eq(
        hd_jwt_keyset_add_pem(ks, NULL, cert, strlen(cert), NULL, 0), 0);
    tok = sign_with(HD_JWT_ES256, NULL, GOOD, "p256");
    EXPECT(verify(tok, ks, NULL), HD_JWT_OK);
    free(tok);
    free(cert);
    hd_jwt_keyset_free(ks);
}
END_TEST

/*
 * Signatures made by the openssl command, not by hd_jwt_sign_alg(): PS256
 * with salt length = digest, ES256 converted from DER to r||s by the test,
 * EdDSA raw.
 */
static char *
b64u_file(const char *path, size_t *n)
{
    size_t len;
    char  *raw = slurp(path, &len);
    char  *out = hd_malloc(HD_B64URL_ENCLEN(len) + 1);

    hd_b64url_encode((const uint8_t *) raw, len, out,
                     HD_B64URL_ENCLEN(len) + 1);
    if (n != NULL)
        *n = len;
    free(raw);
    return out;
}

/* DER ECDSA-Sig-Value -> r||s of half bytes each (test-side parser). */
static size_t
der_to_raw(const uint8_t *d, size_t len, uint8_t *out, size_t half)
{
    size_t i = 2, k;

    ck_assert(len > 8 && d[0] == 0x30);
    if (d[1] & 0x80)
        i = 2 + (d[1] & 0x7f);
    for (k = 0; k < 2; k++) {
        size_t l;
        ck_assert_uint_eq(d[i], 0x02);
        l = d[i + 1];
        i += 2;
        while (l > half) { /* leading zero */
            i++;
            l--;
        }
        memset(out + k * half, 0, half - l);
        memcpy(out + k * half + half - l, d + i, l);
        i += l;
    }
    return 2 * half;
}

START_TEST(test_openssl_signatures)
{
    char             in[256], sigp[256], hp[64], pp[256];
    const char      *hdrs[] = { "{\"alg\":\"PS256\"}", "{\"alg\":\"ES256\"}",
                                "{\"alg\":\"EdDSA\"}" };
    const char      *keys[] = { "rsa", "p256", "ed" };
    hd_jwt_keyset_t *ks = hd_jwt_keyset_new();

    for (size_t i = 0; i < 3; i++) {
        char *pub = keyfile(keys[i], "pub");
        ck_assert_int_eq(
            hd_jwt_keyset_add_pem(ks, NULL, pub, strlen(pub), NULL, 0), 0);
        free(pub);
    }
    for (size_t i = 0; i < 3; i++) {
        char  *tok, *sig;
        FILE  *f;
        size_t n;

        hd_b64url_encode((const uint8_t *) hdrs[i], strlen(hdrs[i]), hp,
                         sizeof(hp));
        hd_b64url_encode((const uint8_t *) GOOD, strlen(GOOD), pp, sizeof(pp));
        snprintf(in, sizeof(in), "%s/in%zu", dir, i);
        snprintf(sigp, sizeof(sigp), "%s/sig%zu", dir, i);
        f = fopen(in, "w");
        fprintf(f, "%s.%s", hp, pp);
        fclose(f);
        if (i == 0)
            sh("openssl dgst -sha256 -sign %s/rsa.pem -sigopt "
               "rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest -out %s "
               "%s",
               dir, sigp, in);
        else if (i == 1)
            sh("openssl dgst -sha256 -sign %s/p256.pem -out %s %s", dir, sigp,
               in);
        else
            sh("openssl pkeyutl -sign -rawin -inkey %s/ed.pem -in %s -out %s",
               dir, in, sigp);
        if (i == 1) {
            size_t  len;
            char   *der = slurp(sigp, &len);
            uint8_t raw[64];
            char    enc[100];
            n = der_to_raw((const uint8_t *) der, len, raw, 32);
            hd_b64url_encode(raw, n, enc, sizeof(enc));
            sig = hd_strdup(enc);
            free(der);
        } else {
            sig = b64u_file(sigp, &n);
        }
        tok = hd_asprintf("%s.%s.%s", hp, pp, sig);
        EXPECT(verify(tok, ks, NULL), HD_JWT_OK);
        free(tok);
        free(sig);
    }
    hd_jwt_keyset_free(ks);
}
END_TEST

/* ---- JWKS ---- */

START_TEST(test_jwks)
{
    /* a JWKS made by hand from the keys' raw parts (openssl pkey -text is
     * awkward to parse; export through EVP instead) */
    hd_jwt_keyset_t *ks = hd_jwt_keyset_new();
    char             err[160];
    size_t           skipped = 0;
    char            *ed = keyfile("ed", "pub");
    BIO             *b = BIO_new_mem_buf(ed, (int) strlen(ed));
    EVP_PKEY        *pk = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    uint8_t          raw[32];
    size_t           rl = sizeof(raw);
    char             x[64], *jwks, *tok;

    ck_assert_ptr_nonnull(pk);
    ck_assert_int_eq(EVP_PKEY_get_raw_public_key(pk, raw, &rl), 1);
    hd_b64url_encode(raw, rl, x, sizeof(x));
    jwks = hd_asprintf(
        "{\"keys\":["
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"ed1\",\"x\":\"%s\"},"
        "{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"},"
        "{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"},"
        "{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"%s\"},"
        "{\"kty\":\"EC\",\"crv\":\"P-521\",\"x\":\"AA\",\"y\":\"AA\"}"
        "]}",
        x, x);
    ck_assert_int_eq(hd_jwt_keyset_add_jwks(ks, jwks, strlen(jwks), &skipped,
                                            err, sizeof(err)),
                     1);
    ck_assert_uint_eq(skipped, 4);
    tok = sign_with(HD_JWT_EDDSA, "ed1", GOOD, "ed");
    EXPECT(verify(tok, ks, NULL), HD_JWT_OK);
    free(tok);
    tok = sign_with(HD_JWT_EDDSA, "ed2", GOOD, "ed");
    EXPECT(verify(tok, ks, NULL), HD_JWT_EKID);
    free(tok);
    free(jwks);

    /* a JWK's alg binds its key: ES256 key marked ES384 is refused */
    jwks = hd_asprintf("{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                       "\"alg\":\"RS256\",\"x\":\"%s\"}]}",
                       x);
    ck_assert_int_eq(
        hd_jwt_keyset_add_jwks(ks, jwks, strlen(jwks), NULL, err, sizeof(err)),
        -EINVAL);
    free(jwks);

    /* garbage: all refused, the set unchanged */
    {
        const char *bad[] = {
            "",
            "[]",
            "{}",
            "{\"keys\":{}}",
            "{\"keys\":[1]}",
            "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"!!\",\"e\":\"AQAB\"}]}",
            "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\","
            "\"y\":\"AAAA\"}]}",
            "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AAAA\"}]}",
            "{\"keys\":[{\"kty\":\"RSA\",\"kid\":7,\"n\":\"AQAB\","
            "\"e\":\"AQAB\"}]}",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
            ck_assert_msg(hd_jwt_keyset_add_jwks(ks, bad[i], strlen(bad[i]),
                                                 NULL, err, sizeof(err))
                              == -EINVAL,
                          "accepted %s", bad[i]);
    }
    ck_assert_uint_eq(hd_jwt_keyset_count(ks), 1);
    EVP_PKEY_free(pk);
    BIO_free(b);
    free(ed);
    hd_jwt_keyset_free(ks);
}
END_TEST

/* ---- claims ---- */

static int
hs_claims(const char *payload, const hd_jwt_policy_t *pol, int64_t now,
          hd_jwt_claims_t *c)
{
    hd_jwt_keyset_t *ks = hd_jwt_keyset_new();
    char            *tok = hd_jwt_sign_alg(HD_JWT_HS512, NULL, payload, SECRET,
                                           strlen(SECRET));
    int              rc;

    hd_jwt_keyset_add_hmac(ks, NULL, SECRET, strlen(SECRET));
    rc = hd_jwt_verify_ks(tok, strlen(tok), ks, pol, now, c);
    free(tok);
    hd_jwt_keyset_free(ks);
    return rc;
}

#define CL(payload, pol, want)                           \
    do {                                                 \
        hd_jwt_claims_t c_;                              \
        EXPECT(hs_claims(payload, pol, NOW, &c_), want); \
        hd_jwt_claims_free(&c_);                         \
    } while (0)

START_TEST(test_aud_iss)
{
    hd_jwt_policy_t pol = { .aud = "herald", .iss = "https://idp" };
    const char     *ok = "{\"sub\":\"a\",\"exp\":" EXP_OK
                     ",\"aud\":\"herald\",\"iss\":\"https://idp\"}";

    CL(ok, &pol, HD_JWT_OK);
    CL("{\"sub\":\"a\",\"exp\":" EXP_OK
       ",\"aud\":[\"x\",\"herald\"],\"iss\":\"https://idp\"}",
       &pol, HD_JWT_OK);
    CL("{\"sub\":\"a\",\"exp\":" EXP_OK
       ",\"aud\":\"other\",\"iss\":\"https://idp\"}",
       &pol, HD_JWT_EAUD);
    CL("{\"sub\":\"a\",\"exp\":" EXP_OK
       ",\"aud\":[\"x\"],\"iss\":\"https://idp\"}",
       &pol, HD_JWT_EAUD);
    CL("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"iss\":\"https://idp\"}", &pol,
       HD_JWT_EAUD);
    CL("{\"sub\":\"a\",\"exp\":" EXP_OK
       ",\"aud\":\"herald\",\"iss\":\"https://evil\"}",
       &pol, HD_JWT_EISS);
    CL("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"aud\":\"herald\"}", &pol,
       HD_JWT_EISS);
    /* unchecked without a policy */
    CL("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"aud\":\"other\"}", NULL, HD_JWT_OK);
}
END_TEST

START_TEST(test_leeway_and_lifetime)
{
    hd_jwt_policy_t pol = { .leeway_s = 30 };
    hd_jwt_claims_t c;

    /* expired 20 s ago: inside a 30 s leeway, outside none */
    EXPECT(hs_claims("{\"sub\":\"a\",\"exp\":1699999980}", &pol, NOW, &c),
           HD_JWT_OK);
    hd_jwt_claims_free(&c);
    EXPECT(hs_claims("{\"sub\":\"a\",\"exp\":1699999980}", NULL, NOW, &c),
           HD_JWT_EEXPIRED);
    EXPECT(hs_claims("{\"sub\":\"a\",\"exp\":1699999960}", &pol, NOW, &c),
           HD_JWT_EEXPIRED);
    /* nbf 20 s ahead: inside the leeway */
    EXPECT(hs_claims("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"nbf\":1700000020}",
                     &pol, NOW, &c),
           HD_JWT_OK);
    hd_jwt_claims_free(&c);
    EXPECT(hs_claims("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"nbf\":1700000040}",
                     &pol, NOW, &c),
           HD_JWT_ECLAIMS);
    /* iat in the future past the leeway */
    EXPECT(hs_claims("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"iat\":1700000100}",
                     &pol, NOW, &c),
           HD_JWT_ECLAIMS);
    EXPECT(hs_claims("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"iat\":\"x\"}", &pol,
                     NOW, &c),
           HD_JWT_EMALFORMED);

    /* max lifetime: exp - iat, or exp - now without iat */
    pol.max_lifetime_s = 3600;
    EXPECT(hs_claims("{\"sub\":\"a\",\"exp\":1700003600,\"iat\":1700000000}",
                     &pol, NOW, &c),
           HD_JWT_OK);
    ck_assert_int_eq(c.iat, 1700000000);
    hd_jwt_claims_free(&c);
    EXPECT(hs_claims("{\"sub\":\"a\",\"exp\":1700003601,\"iat\":1700000000}",
                     &pol, NOW, &c),
           HD_JWT_ELIFETIME);
    EXPECT(hs_claims("{\"sub\":\"a\",\"exp\":1700007200}", &pol, NOW, &c),
           HD_JWT_ELIFETIME);
    EXPECT(hs_claims("{\"sub\":\"a\",\"exp\":1700003000}", &pol, NOW, &c),
           HD_JWT_OK);
    hd_jwt_claims_free(&c);
}
END_TEST

START_TEST(test_publish_and_channel_claims)
{
    hd_jwt_claims_t c;

    EXPECT(hs_claims(GOOD, NULL, NOW, &c), HD_JWT_OK);
    ck_assert_int_eq(c.publish, HD_JWT_PUB_ABSENT);
    ck_assert_ptr_null(c.channel);
    hd_jwt_claims_free(&c);
    EXPECT(hs_claims("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"publish\":false}",
                     NULL, NOW, &c),
           HD_JWT_OK);
    ck_assert_int_eq(c.publish, HD_JWT_PUB_NO);
    hd_jwt_claims_free(&c);
    EXPECT(hs_claims("{\"sub\":\"a\",\"exp\":" EXP_OK
                     ",\"publish\":[\"chat:*\",\"news\"],"
                     "\"channel\":\"chat:room\"}",
                     NULL, NOW, &c),
           HD_JWT_OK);
    ck_assert_int_eq(c.publish, HD_JWT_PUB_LIST);
    ck_assert_uint_eq(c.npub_channels, 2);
    ck_assert_str_eq(c.pub_channels[1], "news");
    ck_assert_str_eq(c.channel, "chat:room");
    hd_jwt_claims_free(&c);
    EXPECT(hs_claims("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"publish\":1}", NULL,
                     NOW, &c),
           HD_JWT_ECLAIMS);
    EXPECT(hs_claims("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"channel\":\"a b\"}",
                     NULL, NOW, &c),
           HD_JWT_ECLAIMS);
}
END_TEST

/* hd_jwt_claims_pack(): the same claims in one block, whatever is set;
 * the source is released and zeroed (ASan checks the block's bounds and
 * that nothing else was left to free) */
START_TEST(test_claims_pack)
{
    hd_jwt_claims_t    c, *p;
    static const char *full =
        "{\"sub\":\"alice\",\"tenant\":\"acme\",\"exp\":" EXP_OK
        ",\"iat\":1700000000,\"channels\":[\"chat:*\",\"news\",\"x\"],"
        "\"publish\":[\"chat:room\"],\"channel\":\"chat:lobby\","
        "\"info\":{\"name\":\"Alice\"}}";

    EXPECT(hs_claims(full, NULL, NOW, &c), HD_JWT_OK);
    p = hd_jwt_claims_pack(&c);
    ck_assert_ptr_null(c.sub);
    ck_assert_ptr_null(c.channels);
    ck_assert_str_eq(p->sub, "alice");
    ck_assert_str_eq(p->tenant, "acme");
    ck_assert_int_eq(p->iat, 1700000000);
    ck_assert_uint_eq(p->nchannels, 3);
    ck_assert_str_eq(p->channels[0], "chat:*");
    ck_assert_str_eq(p->channels[2], "x");
    ck_assert_ptr_null(p->channels[3]);
    ck_assert_int_eq(p->publish, HD_JWT_PUB_LIST);
    ck_assert_uint_eq(p->npub_channels, 1);
    ck_assert_str_eq(p->pub_channels[0], "chat:room");
    ck_assert_ptr_null(p->pub_channels[1]);
    ck_assert_str_eq(p->channel, "chat:lobby");
    ck_assert_str_eq(p->info, "{\"name\":\"Alice\"}");
    ck_assert(hd_jwt_channel_allowed(p, "chat:room", 9));
    ck_assert(!hd_jwt_channel_allowed(p, "other", 5));
    /* everything inside the one block */
    ck_assert_ptr_eq(p->channels, (char **) (void *) (p + 1));
    ck_assert(p->info > (char *) (p + 1));
    free(p);

    /* an empty allow-list stays present (nothing allowed); absent
     * claims stay absent */
    EXPECT(hs_claims("{\"sub\":\"b\",\"exp\":" EXP_OK ",\"channels\":[]}", NULL,
                     NOW, &c),
           HD_JWT_OK);
    p = hd_jwt_claims_pack(&c);
    ck_assert_str_eq(p->sub, "b");
    ck_assert_ptr_nonnull(p->channels);
    ck_assert_ptr_null(p->channels[0]);
    ck_assert(!hd_jwt_channel_allowed(p, "news", 4));
    ck_assert_ptr_null(p->tenant);
    ck_assert_ptr_null(p->pub_channels);
    ck_assert_ptr_null(p->channel);
    ck_assert_ptr_null(p->info);
    ck_assert_int_eq(p->publish, HD_JWT_PUB_ABSENT);
    free(p);
}
END_TEST

static Suite *
keys_suite(void)
{
    Suite *s = suite_create("jwt_keys");
    TCase *tc = tcase_create("keys");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_each_algorithm);
    tcase_add_test(tc, test_hmac_family);
    tcase_add_test(tc, test_algorithm_confusion);
    tcase_add_test(tc, test_alg_none_and_policy);
    tcase_add_test(tc, test_kid_selection);
    tcase_add_test(tc, test_pem_refusals);
    tcase_add_test(tc, test_pem_certificate);
    tcase_add_test(tc, test_openssl_signatures);
    tcase_add_test(tc, test_jwks);
    tcase_add_test(tc, test_aud_iss);
    tcase_add_test(tc, test_leeway_and_lifetime);
    tcase_add_test(tc, test_publish_and_channel_claims);
    tcase_add_test(tc, test_claims_pack);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr;
    int      failed;

    make_keys();
    sr = srunner_create(keys_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0)
            failed++;
    }
    return failed == 0 ? 0 : 1;
}
