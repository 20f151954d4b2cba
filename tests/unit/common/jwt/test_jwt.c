/*
 * Unit tests for common/hd_jwt.c: HS256 verification, signing and the
 * base64url helpers.
 *
 * Tokens are built here with a helper that does NOT use the code under
 * test: base64url comes from OpenSSL's EVP_EncodeBlock (then translated),
 * the MAC from HMAC() directly. Two known-answer tokens come from outside
 * entirely (an openssl(1) pipeline and RFC 7515 appendix A.1).
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "hd_alloc.h"
#include "hd_jwt.h"

#define NOW     INT64_C(1700000000)
#define SECRET  "s3cret-for-unit-tests-0123456789"
#define HS256_H "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

/* ---- helpers independent of the code under test ---- */

/* base64url (no padding) via OpenSSL's standard base64 */
static char *
b64u(const void *data, size_t len)
{
    char *out = hd_malloc(4 * ((len + 2) / 3) + 1);
    int   n = EVP_EncodeBlock((unsigned char *) out, data, (int) len);
    char *p;

    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (p = out; *p; p++) {
        if (*p == '+')
            *p = '-';
        else if (*p == '/')
            *p = '_';
    }
    return out;
}

/* "hb64.pb64." + base64url(HMAC-SHA256(secret, "hb64.pb64")) */
static char *
sign_parts(const char *hb64, const char *pb64, const void *secret,
           size_t secret_len)
{
    char                      *input = hd_asprintf("%s.%s", hb64, pb64);
    unsigned char              mac[EVP_MAX_MD_SIZE];
    unsigned int               maclen = 0;
    static const unsigned char nokey;
    char                      *sig, *tok;

    ck_assert_ptr_nonnull(HMAC(EVP_sha256(), secret_len ? secret : &nokey,
                               (int) secret_len, (const unsigned char *) input,
                               strlen(input), mac, &maclen));
    ck_assert_uint_eq(maclen, 32);
    sig = b64u(mac, maclen);
    tok = hd_asprintf("%s.%s", input, sig);
    free(sig);
    free(input);
    return tok;
}

/* token with the given header and payload JSON text, signed with SECRET */
static char *
mk(const char *header, const char *payload)
{
    char *h = b64u(header, strlen(header));
    char *p = b64u(payload, strlen(payload));
    char *t = sign_parts(h, p, SECRET, strlen(SECRET));

    free(h);
    free(p);
    return t;
}

/* token with the standard header, payload given as printf format */
static char *mkp(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
mkp(const char *fmt, ...)
{
    va_list ap;
    char    buf[16384];
    int     n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    ck_assert_int_lt(n, (int) sizeof(buf));
    return mk(HS256_H, buf);
}

static int
verify_at(const char *tok, int64_t now, int64_t leeway)
{
    hd_jwt_claims_t c;
    int             rc;

    rc = hd_jwt_verify(tok, strlen(tok), SECRET, strlen(SECRET), now, leeway,
                       &c);
    hd_jwt_claims_free(&c);
    return rc;
}

#define EXPECT(rc, want)                                                     \
    do {                                                                     \
        int got_ = (rc), want_ = (want);                                     \
        ck_assert_msg(got_ == want_, "got %d (%s), want %d (%s)", got_,      \
                      hd_jwt_strerror(got_), want_, hd_jwt_strerror(want_)); \
    } while (0)

/* verify a token (freed here) at NOW, no leeway */
#define EXPECT_TOK(tok, want)                \
    do {                                     \
        char *t_ = (tok);                    \
        EXPECT(verify_at(t_, NOW, 0), want); \
        free(t_);                            \
    } while (0)

#define EXP_OK "1700003600" /* NOW + 1 h */

/* ---- round trip and known answers ---- */

START_TEST(roundtrip_all_claims)
{
    hd_jwt_claims_t c;
    char           *tok = hd_jwt_sign("{\"sub\":\"user-42\",\"exp\":" EXP_OK ","
                                                "\"nbf\":1699999000,\"iat\":1699999000,"
                                                "\"tenant\":\"acme.eu-1_x\","
                                                "\"channels\":[\"news:*\",\"chat:room1\"],"
                                                "\"extra\":{\"ignored\":[1,2,3]},"
                                                "\"info\": {\"name\": \"Ann\"}}",
                                      SECRET, strlen(SECRET));

    ck_assert_ptr_nonnull(tok);
    /* the fixed header, exactly */
    ck_assert_int_eq(strncmp(tok, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 37),
                     0);
    EXPECT(hd_jwt_verify(tok, strlen(tok), SECRET, strlen(SECRET), NOW, 0, &c),
           HD_JWT_OK);
    ck_assert_str_eq(c.sub, "user-42");
    ck_assert_str_eq(c.tenant, "acme.eu-1_x");
    ck_assert_int_eq(c.exp, 1700003600);
    ck_assert_uint_eq(c.nchannels, 2);
    ck_assert_str_eq(c.channels[0], "news:*");
    ck_assert_str_eq(c.channels[1], "chat:room1");
    ck_assert_ptr_null(c.channels[2]);
    ck_assert_str_eq(c.info, "{\"name\":\"Ann\"}"); /* compact */
    /* claims must not point into the token */
    memset(tok, 'x', strlen(tok));
    ck_assert_str_eq(c.sub, "user-42");
    hd_jwt_claims_free(&c);
    ck_assert_ptr_null(c.sub);
    ck_assert_ptr_null(c.tenant);
    ck_assert_ptr_null(c.channels);
    ck_assert_ptr_null(c.info);
    ck_assert_uint_eq(c.nchannels, 0);
    hd_jwt_claims_free(&c); /* zeroed: a second free is harmless */
    hd_jwt_claims_free(NULL);
    free(tok);
}
END_TEST

START_TEST(sign_matches_independent_builder)
{
    const char *payload = "{\"sub\":\"a\",\"exp\":" EXP_OK "}";
    char       *mine = hd_jwt_sign(payload, SECRET, strlen(SECRET));
    char       *ref = mk(HS256_H, payload);

    ck_assert_str_eq(mine, ref);
    free(mine);
    free(ref);
}
END_TEST

/*
 * Made in a shell, independently of herald:
 *   H='{"alg":"HS256","typ":"JWT"}'
 *   P='{"sub":"alice","exp":4102444800,"tenant":"acme","channels":["news:*","chat:room1"]}'
 *   h=$(printf '%s' "$H" | basenc --base64url | tr -d '=\n')
 *   p=$(printf '%s' "$P" | basenc --base64url | tr -d '=\n')
 *   s=$(printf '%s' "$h.$p" | openssl dgst -sha256 -hmac herald-test-secret \
 *         -binary | basenc --base64url | tr -d '=\n')
 *   echo "$h.$p.$s"
 */
static const char kat_token[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwidGVuYW50IjoiYWNtZSIsImNo"
    "YW5uZWxzIjpbIm5ld3M6KiIsImNoYXQ6cm9vbTEiXX0."
    "DONSjBTIXqOVxIEpKd18kpfgqQpKpUBkXfJDGO-rKZ0";

START_TEST(known_answer_openssl)
{
    hd_jwt_claims_t c;
    const char     *key = "herald-test-secret";
    char           *signed_here;

    EXPECT(hd_jwt_verify(kat_token, strlen(kat_token), key, strlen(key), NOW, 0,
                         &c),
           HD_JWT_OK);
    ck_assert_str_eq(c.sub, "alice");
    ck_assert_str_eq(c.tenant, "acme");
    ck_assert_int_eq(c.exp, INT64_C(4102444800));
    ck_assert_uint_eq(c.nchannels, 2);
    ck_assert_str_eq(c.channels[0], "news:*");
    ck_assert_str_eq(c.channels[1], "chat:room1");
    hd_jwt_claims_free(&c);

    /* one byte off in the key */
    EXPECT(hd_jwt_verify(kat_token, strlen(kat_token), "herald-test-secreT", 18,
                         NOW, 0, &c),
           HD_JWT_ESIGNATURE);

    /* and hd_jwt_sign() produces exactly the same token */
    signed_here = hd_jwt_sign("{\"sub\":\"alice\",\"exp\":4102444800,"
                              "\"tenant\":\"acme\","
                              "\"channels\":[\"news:*\",\"chat:room1\"]}",
                              key, strlen(key));
    ck_assert_str_eq(signed_here, kat_token);
    free(signed_here);
}
END_TEST

/*
 * RFC 7515 appendix A.1: HS256 JWS with a binary key; the header has CRLF
 * whitespace and "typ" first, so the MAC must be over the bytes as
 * received. The payload has no "sub": before its exp we must get ECLAIMS
 * (which proves the signature passed), after it EEXPIRED.
 */
START_TEST(known_answer_rfc7515)
{
    static const char tok[] =
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
        "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt"
        "cGxlLmNvbS9pc19yb290Ijp0cnVlfQ."
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    static const char jwk_k[] =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4"
        "hcgUuTwjAzZr1Z9CAow";
    uint8_t key[64];
    long    klen = hd_b64url_decode(jwk_k, strlen(jwk_k), key, sizeof(key));

    ck_assert_int_eq(klen, 64);
    EXPECT(hd_jwt_verify(tok, strlen(tok), key, (size_t) klen, 1300819379, 0,
                         NULL),
           HD_JWT_ECLAIMS);
    EXPECT(hd_jwt_verify(tok, strlen(tok), key, (size_t) klen, 1300819380, 0,
                         NULL),
           HD_JWT_EEXPIRED);
    key[63] ^= 1;
    EXPECT(hd_jwt_verify(tok, strlen(tok), key, (size_t) klen, 1300819379, 0,
                         NULL),
           HD_JWT_ESIGNATURE);
}
END_TEST

/* jwt.io's example token (secret "your-256-bit-secret"): valid, no exp */
START_TEST(known_answer_jwtio)
{
    static const char tok[] =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5"
        "MDIyfQ."
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    EXPECT(hd_jwt_verify(tok, strlen(tok), "your-256-bit-secret", 19, NOW, 0,
                         NULL),
           HD_JWT_ENOEXP);
    EXPECT(hd_jwt_verify(tok, strlen(tok), "your-256-bit-secreT", 19, NOW, 0,
                         NULL),
           HD_JWT_ESIGNATURE);
}
END_TEST

/* ---- header / algorithm ---- */

#define GOOD_P "{\"sub\":\"a\",\"exp\":" EXP_OK "}"

START_TEST(alg_none)
{
    const char *hn = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
    char       *h = b64u(hn, strlen(hn));
    char       *p = b64u(GOOD_P, strlen(GOOD_P));
    char       *t;

    /* unsecured JWT as RFC 7519 6.1 spells it: empty third part */
    t = hd_asprintf("%s.%s.", h, p);
    EXPECT_TOK(t, HD_JWT_EALG);
    /* without the third part at all */
    t = hd_asprintf("%s.%s", h, p);
    EXPECT_TOK(t, HD_JWT_EMALFORMED);
    /* with a correct HMAC: the header alone must sink it */
    EXPECT_TOK(sign_parts(h, p, SECRET, strlen(SECRET)), HD_JWT_EALG);
    free(h);
    free(p);

    EXPECT_TOK(mk("{\"alg\":\"None\"}", GOOD_P), HD_JWT_EALG);
    EXPECT_TOK(mk("{\"alg\":\"\"}", GOOD_P), HD_JWT_EALG);
}
END_TEST

START_TEST(alg_other)
{
    /* all correctly HMAC-SHA256-signed: only the header is wrong */
    EXPECT_TOK(mk("{\"alg\":\"HS384\",\"typ\":\"JWT\"}", GOOD_P), HD_JWT_EALG);
    EXPECT_TOK(mk("{\"alg\":\"HS512\",\"typ\":\"JWT\"}", GOOD_P), HD_JWT_EALG);
    EXPECT_TOK(mk("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", GOOD_P), HD_JWT_EALG);
    EXPECT_TOK(mk("{\"alg\":\"hs256\"}", GOOD_P), HD_JWT_EALG);
    EXPECT_TOK(mk("{\"alg\":\"HS256 \"}", GOOD_P), HD_JWT_EALG);
    EXPECT_TOK(mk("{\"typ\":\"JWT\"}", GOOD_P), HD_JWT_EALG);
    EXPECT_TOK(mk("{}", GOOD_P), HD_JWT_EALG);
    EXPECT_TOK(mk("{\"alg\":256}", GOOD_P), HD_JWT_EALG);
    EXPECT_TOK(mk("{\"alg\":null}", GOOD_P), HD_JWT_EALG);
    EXPECT_TOK(mk("{\"alg\":[\"HS256\"]}", GOOD_P), HD_JWT_EALG);
    /* sanity: the same builder with a good header passes */
    EXPECT_TOK(mk("{\"alg\":\"HS256\"}", GOOD_P), HD_JWT_OK);
}
END_TEST

START_TEST(typ_and_crit)
{
    EXPECT_TOK(mk("{\"alg\":\"HS256\",\"typ\":\"jwt\"}", GOOD_P), HD_JWT_OK);
    EXPECT_TOK(mk("{\"typ\":\"Jwt\",\"alg\":\"HS256\",\"kid\":\"k1\"}", GOOD_P),
               HD_JWT_OK);
    EXPECT_TOK(mk("{\"alg\":\"HS256\",\"typ\":\"JWS\"}", GOOD_P), HD_JWT_EALG);
    EXPECT_TOK(mk("{\"alg\":\"HS256\",\"typ\":\"JWTX\"}", GOOD_P), HD_JWT_EALG);
    EXPECT_TOK(mk("{\"alg\":\"HS256\",\"typ\":\"\"}", GOOD_P), HD_JWT_EALG);
    EXPECT_TOK(mk("{\"alg\":\"HS256\",\"typ\":1}", GOOD_P), HD_JWT_EALG);
    EXPECT_TOK(mk("{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", GOOD_P),
               HD_JWT_EALG);
    EXPECT_TOK(mk("{\"alg\":\"HS256\",\"crit\":[]}", GOOD_P), HD_JWT_EALG);
    EXPECT_TOK(mk("{\"alg\":\"HS256\",\"crit\":null}", GOOD_P), HD_JWT_EALG);
}
END_TEST

START_TEST(header_not_object)
{
    EXPECT_TOK(mk("not json", GOOD_P), HD_JWT_EMALFORMED);
    EXPECT_TOK(mk("[\"HS256\"]", GOOD_P), HD_JWT_EMALFORMED);
    EXPECT_TOK(mk("\"HS256\"", GOOD_P), HD_JWT_EMALFORMED);
    EXPECT_TOK(mk("{\"alg\":\"HS256\"} x", GOOD_P), HD_JWT_EMALFORMED);
    EXPECT_TOK(mk("{\"alg\":\"HS256\"", GOOD_P), HD_JWT_EMALFORMED);
    /* a second alg must not win or lose silently */
    EXPECT_TOK(mk("{\"alg\":\"none\",\"alg\":\"HS256\"}", GOOD_P),
               HD_JWT_EMALFORMED);
    EXPECT_TOK(mk("{\"alg\":\"HS256\",\"alg\":\"HS256\"}", GOOD_P),
               HD_JWT_EMALFORMED);
}
END_TEST

/* ---- signature ---- */

START_TEST(bad_signature)
{
    char   *tok = mkp(GOOD_P);
    char   *t, *dot2, *sig;
    uint8_t raw[64];
    long    n;
    char    enc[64];

    EXPECT(verify_at(tok, NOW, 0), HD_JWT_OK);
    dot2 = strrchr(tok, '.');

    /* one character of the payload changed (mid-part, stays canonical) */
    t = hd_strdup(tok);
    t[40] = t[40] == 'A' ? 'B' : 'A';
    EXPECT_TOK(t, HD_JWT_ESIGNATURE);

    /* each single bit of the signature flipped */
    sig = dot2 + 1;
    n = hd_b64url_decode(sig, strlen(sig), raw, sizeof(raw));
    ck_assert_int_eq(n, 32);
    for (int bit = 0; bit < 256; bit++) {
        raw[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        ck_assert_uint_eq(hd_b64url_encode(raw, 32, enc, sizeof(enc)), 43);
        t = hd_asprintf("%.*s.%s", (int) (dot2 - tok), tok, enc);
        EXPECT_TOK(t, HD_JWT_ESIGNATURE);
        raw[bit / 8] ^= (uint8_t) (1u << (bit % 8));
    }

    /* a signature of the wrong length: 31 and 33 bytes, and none */
    hd_b64url_encode(raw, 31, enc, sizeof(enc));
    EXPECT_TOK(hd_asprintf("%.*s.%s", (int) (dot2 - tok), tok, enc),
               HD_JWT_ESIGNATURE);
    raw[32] = 0;
    hd_b64url_encode(raw, 33, enc, sizeof(enc));
    EXPECT_TOK(hd_asprintf("%.*s.%s", (int) (dot2 - tok), tok, enc),
               HD_JWT_ESIGNATURE);
    EXPECT_TOK(hd_asprintf("%.*s.", (int) (dot2 - tok), tok),
               HD_JWT_ESIGNATURE);
    free(tok);
}
END_TEST

START_TEST(wrong_secret)
{
    char *tok = hd_jwt_sign(GOOD_P, "other", 5);
    char *t2;

    EXPECT(verify_at(tok, NOW, 0), HD_JWT_ESIGNATURE);
    EXPECT(hd_jwt_verify(tok, strlen(tok), "other", 5, NOW, 0, NULL),
           HD_JWT_OK);
    EXPECT(hd_jwt_verify(tok, strlen(tok), "othe", 4, NOW, 0, NULL),
           HD_JWT_ESIGNATURE);
    EXPECT(hd_jwt_verify(tok, strlen(tok), "", 0, NOW, 0, NULL),
           HD_JWT_ESIGNATURE);
    free(tok);

    /* binary secrets: an embedded NUL is part of the key */
    tok = hd_jwt_sign(GOOD_P, "a\0b", 3);
    EXPECT(hd_jwt_verify(tok, strlen(tok), "a\0b", 3, NOW, 0, NULL), HD_JWT_OK);
    EXPECT(hd_jwt_verify(tok, strlen(tok), "a\0c", 3, NOW, 0, NULL),
           HD_JWT_ESIGNATURE);
    EXPECT(hd_jwt_verify(tok, strlen(tok), "a", 1, NOW, 0, NULL),
           HD_JWT_ESIGNATURE);
    free(tok);

    /* an empty secret is HMAC's empty key, not an error (refusing weak
     * secrets is the config's job) */
    tok = hd_jwt_sign(GOOD_P, "", 0);
    ck_assert_ptr_nonnull(tok);
    {
        char *h = b64u(HS256_H, strlen(HS256_H));
        char *p = b64u(GOOD_P, strlen(GOOD_P));
        t2 = sign_parts(h, p, "", 0);
        ck_assert_str_eq(tok, t2);
        free(h);
        free(p);
    }
    EXPECT(hd_jwt_verify(tok, strlen(tok), "", 0, NOW, 0, NULL), HD_JWT_OK);
    EXPECT(hd_jwt_verify(tok, strlen(tok), "x", 1, NOW, 0, NULL),
           HD_JWT_ESIGNATURE);
    free(t2);
    free(tok);

    /* HMAC() takes an int key length: larger is refused, not truncated
     * (the length is checked before the key is read) */
    tok = mkp(GOOD_P);
    ck_assert_ptr_null(hd_jwt_sign(GOOD_P, SECRET, (size_t) INT_MAX + 1));
    EXPECT(hd_jwt_verify(tok, strlen(tok), SECRET, (size_t) INT_MAX + 1, NOW, 0,
                         NULL),
           HD_JWT_ESIGNATURE);
    free(tok);
}
END_TEST

/* ---- token shape ---- */

START_TEST(part_count)
{
    char *tok = mkp(GOOD_P);
    char *dot2 = strrchr(tok, '.');

    EXPECT(verify_at(tok, NOW, 0), HD_JWT_OK);
    EXPECT_TOK(hd_asprintf("%.*s", (int) (dot2 - tok), tok),
               HD_JWT_EMALFORMED);                          /* 2 parts */
    EXPECT_TOK(hd_asprintf("%s.", tok), HD_JWT_EMALFORMED); /* 4, last empty */
    EXPECT_TOK(hd_asprintf("%s.AAAA", tok), HD_JWT_EMALFORMED);       /* 4 */
    EXPECT_TOK(hd_asprintf("%s.a.b", tok), HD_JWT_EMALFORMED);        /* 5 */
    EXPECT_TOK(hd_strdup("eyJhbGciOiJIUzI1NiJ9"), HD_JWT_EMALFORMED); /* 1 */
    EXPECT_TOK(hd_strdup(""), HD_JWT_EMALFORMED);
    EXPECT_TOK(hd_strdup("."), HD_JWT_EMALFORMED);
    EXPECT_TOK(hd_strdup(".."), HD_JWT_EMALFORMED);
    EXPECT_TOK(hd_strdup("..."), HD_JWT_EMALFORMED);
    free(tok);

    EXPECT(hd_jwt_verify(NULL, 0, SECRET, strlen(SECRET), NOW, 0, NULL),
           HD_JWT_EMALFORMED);
}
END_TEST

START_TEST(empty_parts)
{
    char *tok = mkp(GOOD_P);
    char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    char *h = b64u(HS256_H, strlen(HS256_H));

    /* empty header */
    EXPECT_TOK(hd_asprintf("%s", d1), HD_JWT_EMALFORMED);
    /* empty payload, correctly signed: passes the MAC, fails as JSON */
    EXPECT_TOK(sign_parts(h, "", SECRET, strlen(SECRET)), HD_JWT_EMALFORMED);
    /* empty signature */
    EXPECT_TOK(hd_asprintf("%.*s.", (int) (d2 - tok), tok), HD_JWT_ESIGNATURE);
    /* empty header and payload */
    EXPECT_TOK(hd_asprintf(".%s", d2), HD_JWT_EMALFORMED);
    free(h);
    free(tok);
}
END_TEST

START_TEST(bad_base64url)
{
    char      *tok = mkp(GOOD_P);
    size_t     len = strlen(tok);
    char      *d2 = strrchr(tok, '.');
    size_t     hpos = 3;                       /* inside the header */
    size_t     spos = (size_t) (d2 - tok) + 5; /* inside the signature */
    char      *h = b64u(HS256_H, strlen(HS256_H));
    char      *p = b64u(GOOD_P, strlen(GOOD_P));
    const char bad[] = "+/= !*\"\\\n\t\x80\xff~$%,;";

    for (size_t i = 0; i < sizeof(bad); i++) { /* includes the NUL */
        char  *t = hd_malloc(len);
        char  *pb, *ts;
        size_t tlen;

        /* header and signature: the token as sent, one char replaced */
        memcpy(t, tok, len);
        t[hpos] = bad[i];
        EXPECT(hd_jwt_verify(t, len, SECRET, strlen(SECRET), NOW, 0, NULL),
               HD_JWT_EMALFORMED);
        memcpy(t, tok, len);
        t[spos] = bad[i];
        EXPECT(hd_jwt_verify(t, len, SECRET, strlen(SECRET), NOW, 0, NULL),
               HD_JWT_EMALFORMED);
        free(t);

        /* payload: correctly signed over the bad text, so only the
         * decoding can refuse it (a NUL cannot go through the C-string
         * builder; the two cases above cover it) */
        if (bad[i] == '\0')
            continue;
        pb = hd_strdup(p);
        pb[5] = bad[i];
        ts = sign_parts(h, pb, SECRET, strlen(SECRET));
        tlen = strlen(ts);
        EXPECT(hd_jwt_verify(ts, tlen, SECRET, strlen(SECRET), NOW, 0, NULL),
               HD_JWT_EMALFORMED);
        free(ts);
        free(pb);
    }
    free(h);
    free(p);
    free(tok);
}
END_TEST

START_TEST(padding_rejected)
{
    /* a 16-byte header encodes to 22 chars: standard base64 pads "==" */
    char *h = b64u("{\"alg\":\"HS256\" }", 16);
    char *p = b64u(GOOD_P, strlen(GOOD_P));
    char *hp, *t;

    ck_assert_uint_eq(strlen(h) % 4, 2);
    EXPECT_TOK(sign_parts(h, p, SECRET, strlen(SECRET)), HD_JWT_OK);
    /* the same header padded, signed over the padded text */
    ck_assert_uint_ne(strlen(p) % 4, 0);
    hp = hd_asprintf("%s=", p);
    EXPECT_TOK(sign_parts(h, hp, SECRET, strlen(SECRET)), HD_JWT_EMALFORMED);
    free(hp);
    hp = hd_asprintf("%s==", h);
    EXPECT_TOK(sign_parts(hp, p, SECRET, strlen(SECRET)), HD_JWT_EMALFORMED);
    free(hp);
    hp = hd_asprintf("%s=", h);
    EXPECT_TOK(sign_parts(hp, p, SECRET, strlen(SECRET)), HD_JWT_EMALFORMED);
    free(hp);

    /* signature is 43 chars; '=' padded to 44 */
    t = sign_parts(h, p, SECRET, strlen(SECRET));
    EXPECT_TOK(hd_asprintf("%s=", t), HD_JWT_EMALFORMED);
    free(t);
    free(h);
    free(p);
}
END_TEST

START_TEST(noncanonical_trailing_bits)
{
    char             *tok = mkp(GOOD_P);
    size_t            len = strlen(tok);
    char             *t = hd_strdup(tok);
    char              last = tok[len - 1];
    static const char alpha[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int v = (int) (strchr(alpha, last) - alpha);

    /* 43 chars carry 258 bits for 256: the low 2 bits of the last char
     * must be zero. Setting one decodes to the same bytes, and must not
     * pass as the same signature. */
    ck_assert_int_eq(v & 3, 0);
    t[len - 1] = alpha[v | 1];
    EXPECT(verify_at(t, NOW, 0), HD_JWT_EMALFORMED);
    t[len - 1] = alpha[v | 2];
    EXPECT(verify_at(t, NOW, 0), HD_JWT_EMALFORMED);
    free(t);
    free(tok);
}
END_TEST

START_TEST(max_length)
{
    /* token = 36 (header) + 1 + enc(payload) + 1 + 43; pick the payload
     * length so the whole token is exactly HD_JWT_MAX_LEN, then one more */
    for (int extra = 0; extra <= 1; extra++) {
        size_t target = HD_JWT_MAX_LEN + (size_t) extra;
        char  *tok = NULL;

        for (size_t pad = 5900; pad < 6200; pad++) {
            char *padding = hd_malloc(pad + 1);
            memset(padding, 'x', pad);
            padding[pad] = '\0';
            tok = mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"pad\":\"%s\"}",
                      padding);
            free(padding);
            if (strlen(tok) == target)
                break;
            free(tok);
            tok = NULL;
        }
        ck_assert_ptr_nonnull(tok);
        EXPECT(verify_at(tok, NOW, 0), extra ? HD_JWT_EMALFORMED : HD_JWT_OK);
        free(tok);
    }

    /* the header, parsed before the MAC, has its own small bound */
    for (int extra = 0; extra <= 1; extra++) {
        /* 512 and 514: 513 would be 4k+1, refused for another reason */
        size_t want = HD_JWT_MAX_HEADER_LEN + (size_t) extra * 2;
        char   hdr[HD_JWT_MAX_HEADER_LEN];
        char  *hb64, *pb64, *tok;
        /* {"alg":"HS256","kid":"xxx..."}: 24 + k bytes encode to want */
        size_t jl = HD_B64URL_DECMAX(want);
        int    k = (int) jl - 24;

        snprintf(hdr, sizeof(hdr), "{\"alg\":\"HS256\",\"kid\":\"%0*d\"}", k,
                 0);
        ck_assert_uint_eq(strlen(hdr), jl);
        hb64 = b64u(hdr, jl);
        ck_assert_uint_eq(strlen(hb64), want);
        pb64 = b64u(GOOD_P, strlen(GOOD_P));
        tok = sign_parts(hb64, pb64, SECRET, strlen(SECRET));
        EXPECT(verify_at(tok, NOW, 0), extra ? HD_JWT_EMALFORMED : HD_JWT_OK);
        free(tok);
        free(hb64);
        free(pb64);
    }

    /* a huge input is refused without looking at it */
    {
        size_t n = 1u << 20;
        char  *big = hd_malloc(n);
        memset(big, 'A', n);
        big[100] = '.';
        big[200] = '.';
        EXPECT(hd_jwt_verify(big, n, SECRET, strlen(SECRET), NOW, 0, NULL),
               HD_JWT_EMALFORMED);
        free(big);
    }
}
END_TEST

/* ---- payload ---- */

START_TEST(payload_not_object)
{
    EXPECT_TOK(mkp("not json"), HD_JWT_EMALFORMED);
    EXPECT_TOK(mkp("[{\"sub\":\"a\",\"exp\":" EXP_OK "}]"), HD_JWT_EMALFORMED);
    EXPECT_TOK(mkp("\"sub\""), HD_JWT_EMALFORMED);
    EXPECT_TOK(mkp("42"), HD_JWT_EMALFORMED);
    EXPECT_TOK(mkp("null"), HD_JWT_EMALFORMED);
    EXPECT_TOK(mkp(GOOD_P " {}"), HD_JWT_EMALFORMED);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":" EXP_OK), HD_JWT_EMALFORMED);
    /* embedded NUL in a string (\u0000) is not accepted */
    EXPECT_TOK(mkp("{\"sub\":\"a\\u0000b\",\"exp\":" EXP_OK "}"),
               HD_JWT_EMALFORMED);
    /* whitespace around the object is fine */
    EXPECT_TOK(mkp(" \n" GOOD_P "\r\n "), HD_JWT_OK);
}
END_TEST

START_TEST(duplicate_keys)
{
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"sub\":\"b\",\"exp\":" EXP_OK "}"),
               HD_JWT_EMALFORMED);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":1,\"exp\":" EXP_OK "}"),
               HD_JWT_EMALFORMED);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"channels\":[\"x\"],"
                   "\"channels\":[\"y\"]}"),
               HD_JWT_EMALFORMED);
}
END_TEST

START_TEST(sub_claim)
{
    char s255[256], s256[257];

    memset(s255, 'u', 255);
    s255[255] = '\0';
    memset(s256, 'u', 256);
    s256[256] = '\0';

    EXPECT_TOK(mkp("{\"exp\":" EXP_OK "}"), HD_JWT_ECLAIMS);
    EXPECT_TOK(mkp("{\"sub\":\"\",\"exp\":" EXP_OK "}"), HD_JWT_ECLAIMS);
    EXPECT_TOK(mkp("{\"sub\":42,\"exp\":" EXP_OK "}"), HD_JWT_ECLAIMS);
    EXPECT_TOK(mkp("{\"sub\":null,\"exp\":" EXP_OK "}"), HD_JWT_ECLAIMS);
    EXPECT_TOK(mkp("{\"sub\":[\"a\"],\"exp\":" EXP_OK "}"), HD_JWT_ECLAIMS);
    EXPECT_TOK(mkp("{\"sub\":\"%s\",\"exp\":" EXP_OK "}", s255), HD_JWT_OK);
    EXPECT_TOK(mkp("{\"sub\":\"%s\",\"exp\":" EXP_OK "}", s256),
               HD_JWT_ECLAIMS);
    EXPECT_TOK(mkp("{\"sub\":\"x\",\"exp\":" EXP_OK "}"), HD_JWT_OK);
    /* 255 bytes of UTF-8 is the bound, not 255 characters: é is 2 bytes */
    {
        char u[300] = "";
        for (int i = 0; i < 128; i++)
            strcat(u, "\xc3\xa9"); /* 256 bytes */
        EXPECT_TOK(mkp("{\"sub\":\"%s\",\"exp\":" EXP_OK "}", u),
                   HD_JWT_ECLAIMS);
        u[254] = '\0'; /* 127 x é = 254 bytes */
        EXPECT_TOK(mkp("{\"sub\":\"%s\",\"exp\":" EXP_OK "}", u), HD_JWT_OK);
    }
}
END_TEST

START_TEST(exp_claim)
{
    hd_jwt_claims_t c;
    char           *t;

    EXPECT_TOK(mkp("{\"sub\":\"a\"}"), HD_JWT_ENOEXP);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":\"" EXP_OK "\"}"),
               HD_JWT_EMALFORMED);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":true}"), HD_JWT_EMALFORMED);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":null}"), HD_JWT_EMALFORMED);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":{}}"), HD_JWT_EMALFORMED);

    /* boundary: expired once now >= exp */
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":%lld}", (long long) NOW + 1),
               HD_JWT_OK);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":%lld}", (long long) NOW),
               HD_JWT_EEXPIRED);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":%lld}", (long long) NOW - 1),
               HD_JWT_EEXPIRED);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":0}"), HD_JWT_EEXPIRED);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":-9223372036854775808}"),
               HD_JWT_EEXPIRED);

    /* reals: whole seconds, fractions rounded down (the stricter side) */
    t = mkp("{\"sub\":\"a\",\"exp\":1.7e9}");
    EXPECT(hd_jwt_verify(t, strlen(t), SECRET, strlen(SECRET), NOW - 10, 0, &c),
           HD_JWT_OK);
    ck_assert_int_eq(c.exp, 1700000000);
    hd_jwt_claims_free(&c);
    free(t);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":%lld.9}", (long long) NOW),
               HD_JWT_EEXPIRED);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":%lld.5}", (long long) NOW + 1),
               HD_JWT_OK);
    /* down, not toward zero: -1.5 is -2 */
    t = mkp("{\"sub\":\"a\",\"exp\":-1.5}");
    EXPECT(hd_jwt_verify(t, strlen(t), SECRET, strlen(SECRET), -10, 0, &c),
           HD_JWT_OK);
    ck_assert_int_eq(c.exp, -2);
    hd_jwt_claims_free(&c);
    free(t);
    /* saturation, not overflow */
    t = mkp("{\"sub\":\"a\",\"exp\":1e300}");
    EXPECT(hd_jwt_verify(t, strlen(t), SECRET, strlen(SECRET), NOW, 60, &c),
           HD_JWT_OK);
    ck_assert_int_eq(c.exp, INT64_MAX);
    hd_jwt_claims_free(&c);
    free(t);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":-1e300}"), HD_JWT_EEXPIRED);
    t = mkp("{\"sub\":\"a\",\"exp\":9223372036854775807}");
    EXPECT(verify_at(t, NOW, INT64_MAX), HD_JWT_OK);
    free(t);
    /* an integer too large for jansson is a JSON error */
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":99999999999999999999999}"),
               HD_JWT_EMALFORMED);
}
END_TEST

START_TEST(leeway)
{
    char *t = mkp("{\"sub\":\"a\",\"exp\":%lld}", (long long) NOW - 5);

    EXPECT(verify_at(t, NOW, 0), HD_JWT_EEXPIRED);
    EXPECT(verify_at(t, NOW, 5), HD_JWT_EEXPIRED); /* now >= exp + 5 */
    EXPECT(verify_at(t, NOW, 6), HD_JWT_OK);
    EXPECT(verify_at(t, NOW, 3600), HD_JWT_OK);
    EXPECT(verify_at(t, NOW, -100), HD_JWT_EEXPIRED);
    free(t);
    /* a negative leeway counts as 0, it does not shorten the lifetime */
    t = mkp("{\"sub\":\"a\",\"exp\":%lld}", (long long) NOW + 50);
    EXPECT(verify_at(t, NOW, -100), HD_JWT_OK);
    EXPECT(verify_at(t, NOW, INT64_MIN), HD_JWT_OK);
    free(t);
}
END_TEST

START_TEST(nbf_claim)
{
    char *t = mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"nbf\":%lld}",
                  (long long) NOW + 10);

    EXPECT(verify_at(t, NOW, 0), HD_JWT_ECLAIMS);
    EXPECT(verify_at(t, NOW, 9), HD_JWT_ECLAIMS);
    EXPECT(verify_at(t, NOW, 10), HD_JWT_OK);
    EXPECT(verify_at(t, NOW + 10, 0), HD_JWT_OK);
    EXPECT(verify_at(t, NOW + 9, 0), HD_JWT_ECLAIMS);
    free(t);

    EXPECT_TOK(
        mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"nbf\":%lld}", (long long) NOW),
        HD_JWT_OK);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"nbf\":%lld.1}",
                   (long long) NOW),
               HD_JWT_ECLAIMS); /* rounded up */
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"nbf\":\"0\"}"),
               HD_JWT_EMALFORMED);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"nbf\":null}"),
               HD_JWT_EMALFORMED);
}
END_TEST

START_TEST(tenant_claim)
{
    hd_jwt_claims_t c;
    char            t64[65], t65[66];
    char           *t;

    memset(t64, 't', 64);
    t64[64] = '\0';
    memset(t65, 't', 65);
    t65[65] = '\0';

    t = mkp("{\"sub\":\"a\",\"exp\":" EXP_OK "}");
    EXPECT(hd_jwt_verify(t, strlen(t), SECRET, strlen(SECRET), NOW, 0, &c),
           HD_JWT_OK);
    ck_assert_ptr_null(c.tenant);
    ck_assert_ptr_null(c.channels);
    hd_jwt_claims_free(&c);
    free(t);

    EXPECT_TOK(
        mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"tenant\":\"%s\"}", "Az09_.-"),
        HD_JWT_OK);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"tenant\":\"%s\"}", t64),
               HD_JWT_OK);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"tenant\":\"%s\"}", t65),
               HD_JWT_ECLAIMS);
    static const char *bad[] = {
        "", "a b", "a:b", "a@b", "a*", "a/b", "\\u00e9", "a\\nb", "%",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        EXPECT_TOK(
            mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"tenant\":\"%s\"}", bad[i]),
            HD_JWT_ECLAIMS);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"tenant\":7}"),
               HD_JWT_ECLAIMS);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"tenant\":null}"),
               HD_JWT_ECLAIMS);
}
END_TEST

START_TEST(channels_claim)
{
    hd_jwt_claims_t c;
    char           *t;
    char            c255[256], c256[257];

    /* valid list, including a 255-byte name and a 255-byte prefix + '*' */
    memset(c255, 'c', 255);
    c255[255] = '\0';
    memset(c256, 'c', 256);
    c256[256] = '\0';
    t = mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"channels\":"
            "[\"a\",\"news:*\",\"x@y.z-_:1\",\"%s\",\"%s*\"]}",
            c255, c255);
    EXPECT(hd_jwt_verify(t, strlen(t), SECRET, strlen(SECRET), NOW, 0, &c),
           HD_JWT_OK);
    ck_assert_uint_eq(c.nchannels, 5);
    ck_assert_str_eq(c.channels[0], "a");
    ck_assert_str_eq(c.channels[1], "news:*");
    ck_assert_str_eq(c.channels[2], "x@y.z-_:1");
    ck_assert_str_eq(c.channels[3], c255);
    ck_assert_uint_eq(strlen(c.channels[4]), 256);
    ck_assert_ptr_null(c.channels[5]);
    hd_jwt_claims_free(&c);
    free(t);

    /* an empty list is present: nothing allowed */
    t = mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"channels\":[]}");
    EXPECT(hd_jwt_verify(t, strlen(t), SECRET, strlen(SECRET), NOW, 0, &c),
           HD_JWT_OK);
    ck_assert_ptr_nonnull(c.channels);
    ck_assert_uint_eq(c.nchannels, 0);
    ck_assert_int_eq(hd_jwt_channel_allowed(&c, "a", 1), 0);
    hd_jwt_claims_free(&c);
    free(t);

    static const char *bad[] = {
        "\"*\"",   "\"a**\"", "\"a*b\"",     "\"*a\"", "\"\"", "\"a b\"",
        "\"a/b\"", "\"a#\"",  "\"\\u00e9\"", "1",      "null", "[\"a\"]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"channels\":"
                       "[\"ok\",%s]}",
                       bad[i]),
                   HD_JWT_ECLAIMS);
    EXPECT_TOK(
        mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"channels\":[\"%s\"]}", c256),
        HD_JWT_ECLAIMS);
    EXPECT_TOK(
        mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"channels\":[\"%s*\"]}", c256),
        HD_JWT_ECLAIMS);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"channels\":\"a\"}"),
               HD_JWT_ECLAIMS);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"channels\":{}}"),
               HD_JWT_ECLAIMS);
    EXPECT_TOK(mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"channels\":null}"),
               HD_JWT_ECLAIMS);
}
END_TEST

START_TEST(channels_count_limit)
{
    for (int extra = 0; extra <= 1; extra++) {
        size_t          n = HD_JWT_MAX_CHANNELS + (size_t) extra;
        char            list[HD_JWT_MAX_CHANNELS * 8 + 16];
        size_t          o = 0;
        hd_jwt_claims_t c;
        char           *t;

        for (size_t i = 0; i < n; i++)
            o += (size_t) snprintf(list + o, sizeof(list) - o, "%s\"c%zu\"",
                                   i ? "," : "", i);
        t = mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"channels\":[%s]}", list);
        EXPECT(hd_jwt_verify(t, strlen(t), SECRET, strlen(SECRET), NOW, 0, &c),
               extra ? HD_JWT_ECLAIMS : HD_JWT_OK);
        if (!extra) {
            ck_assert_uint_eq(c.nchannels, HD_JWT_MAX_CHANNELS);
            ck_assert_str_eq(c.channels[255], "c255");
            ck_assert_int_eq(hd_jwt_channel_allowed(&c, "c255", 4), 1);
            ck_assert_int_eq(hd_jwt_channel_allowed(&c, "c256", 4), 0);
        }
        hd_jwt_claims_free(&c);
        free(t);
    }
}
END_TEST

START_TEST(out_zeroed_on_failure)
{
    hd_jwt_claims_t c;
    /* a signed token whose claims fail: nothing may be left in c */
    char *t = mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"tenant\":\"t\","
                  "\"channels\":[\"ok\",\"*\"]}");

    memset(&c, 0xa5, sizeof(c));
    EXPECT(hd_jwt_verify(t, strlen(t), SECRET, strlen(SECRET), NOW, 0, &c),
           HD_JWT_ECLAIMS);
    ck_assert_ptr_null(c.sub);
    ck_assert_ptr_null(c.tenant);
    ck_assert_ptr_null(c.channels);
    ck_assert_uint_eq(c.nchannels, 0);
    ck_assert_int_eq(c.exp, 0);
    free(t);

    memset(&c, 0xa5, sizeof(c));
    EXPECT(hd_jwt_verify("x", 1, SECRET, strlen(SECRET), NOW, 0, &c),
           HD_JWT_EMALFORMED);
    ck_assert_ptr_null(c.sub);
    ck_assert_ptr_null(c.channels);
}
END_TEST

START_TEST(not_nul_terminated)
{
    char  *tok = mkp(GOOD_P);
    size_t len = strlen(tok);
    char  *t = hd_malloc(len + 8);

    memcpy(t, tok, len);
    memcpy(t + len, "AAAA.xx", 8); /* garbage after len must be ignored */
    EXPECT(hd_jwt_verify(t, len, SECRET, strlen(SECRET), NOW, 0, NULL),
           HD_JWT_OK);
    /* and a length one short is a different, refused token */
    ck_assert_int_ne(
        hd_jwt_verify(t, len - 1, SECRET, strlen(SECRET), NOW, 0, NULL),
        HD_JWT_OK);
    free(t);
    free(tok);
}
END_TEST

/* ---- channel_allowed ---- */

START_TEST(channel_allowed)
{
    hd_jwt_claims_t c;
    char           *t = mkp("{\"sub\":\"a\",\"exp\":" EXP_OK ",\"channels\":"
                                      "[\"chat:room1\",\"news:*\",\"u*\"]}");

    EXPECT(hd_jwt_verify(t, strlen(t), SECRET, strlen(SECRET), NOW, 0, &c),
           HD_JWT_OK);
#define ALLOWED(s) hd_jwt_channel_allowed(&c, (s), strlen(s))
    ck_assert_int_eq(ALLOWED("chat:room1"), 1);
    ck_assert_int_eq(ALLOWED("chat:room"), 0);
    ck_assert_int_eq(ALLOWED("chat:room10"), 0);
    ck_assert_int_eq(ALLOWED("Chat:room1"), 0);
    ck_assert_int_eq(ALLOWED("news:"), 1);
    ck_assert_int_eq(ALLOWED("news:sports"), 1);
    ck_assert_int_eq(ALLOWED("news:sports:x"), 1);
    ck_assert_int_eq(ALLOWED("news"), 0);
    ck_assert_int_eq(ALLOWED("new"), 0);
    ck_assert_int_eq(ALLOWED("news:*"), 1);
    ck_assert_int_eq(ALLOWED("u"), 1);
    ck_assert_int_eq(ALLOWED("user:9"), 1);
    ck_assert_int_eq(ALLOWED("x"), 0);
    ck_assert_int_eq(ALLOWED(""), 0);
#undef ALLOWED
    /* length, not NUL, ends the name */
    ck_assert_int_eq(hd_jwt_channel_allowed(&c, "chat:room1xyz", 10), 1);
    ck_assert_int_eq(hd_jwt_channel_allowed(&c, "chat:room1", 9), 0);
    ck_assert_int_eq(hd_jwt_channel_allowed(&c, "newsroom", 4), 0);
    ck_assert_int_eq(hd_jwt_channel_allowed(&c, NULL, 0), 0);
    hd_jwt_claims_free(&c);
    free(t);

    /* no list: everything */
    t = mkp(GOOD_P);
    EXPECT(hd_jwt_verify(t, strlen(t), SECRET, strlen(SECRET), NOW, 0, &c),
           HD_JWT_OK);
    ck_assert_ptr_null(c.channels);
    ck_assert_int_eq(hd_jwt_channel_allowed(&c, "anything", 8), 1);
    hd_jwt_claims_free(&c);
    free(t);

    /* no claims at all: nothing */
    ck_assert_int_eq(hd_jwt_channel_allowed(NULL, "anything", 8), 0);
}
END_TEST

/* ---- base64url helpers ---- */

START_TEST(b64url_vectors)
{
    /* RFC 4648 section 10, without padding */
    static const struct {
        const char *in, *out;
    } v[] = {
        { "", "" },
        { "f", "Zg" },
        { "fo", "Zm8" },
        { "foo", "Zm9v" },
        { "foob", "Zm9vYg" },
        { "fooba", "Zm9vYmE" },
        { "foobar", "Zm9vYmFy" },
        { "\xfb\xff", "-_8" },
        { "\xff\xff\xfe", "___-" },
    };
    char    enc[32];
    uint8_t dec[32];

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        size_t il = strlen(v[i].in), ol = strlen(v[i].out);
        ck_assert_uint_eq(
            hd_b64url_encode((const uint8_t *) v[i].in, il, enc, sizeof(enc)),
            ol);
        ck_assert_str_eq(enc, v[i].out);
        ck_assert_int_eq(hd_b64url_decode(v[i].out, ol, dec, sizeof(dec)),
                         (long) il);
        ck_assert_int_eq(memcmp(dec, v[i].in, il), 0);
        ck_assert_uint_eq(HD_B64URL_ENCLEN(il), ol);
        ck_assert_uint_eq(HD_B64URL_DECMAX(ol), il);
    }
}
END_TEST

START_TEST(b64url_errors)
{
    uint8_t dec[16];
    char    enc[8];

    ck_assert_int_eq(hd_b64url_decode("Z", 1, dec, sizeof(dec)), -EINVAL);
    ck_assert_int_eq(hd_b64url_decode("Zm9vY", 5, dec, sizeof(dec)), -EINVAL);
    ck_assert_int_eq(hd_b64url_decode("Zg==", 4, dec, sizeof(dec)), -EINVAL);
    ck_assert_int_eq(hd_b64url_decode("Zg=", 3, dec, sizeof(dec)), -EINVAL);
    ck_assert_int_eq(hd_b64url_decode("Zm+v", 4, dec, sizeof(dec)), -EINVAL);
    ck_assert_int_eq(hd_b64url_decode("Zm/v", 4, dec, sizeof(dec)), -EINVAL);
    ck_assert_int_eq(hd_b64url_decode("Zm\0v", 4, dec, sizeof(dec)), -EINVAL);
    /* non-canonical: spare bits set */
    ck_assert_int_eq(hd_b64url_decode("Zh", 2, dec, sizeof(dec)), -EINVAL);
    ck_assert_int_eq(hd_b64url_decode("Zm9", 3, dec, sizeof(dec)), -EINVAL);
    /* output too small */
    ck_assert_int_eq(hd_b64url_decode("Zm9vYmFy", 8, dec, 5), -ENOSPC);
    ck_assert_int_eq(hd_b64url_decode("Zm9vYmFy", 8, dec, 6), 6);
    ck_assert_int_eq(hd_b64url_decode("", 0, NULL, 0), 0);

    /* encode: snprintf-like, nothing written when it does not fit */
    memset(enc, '#', sizeof(enc));
    ck_assert_uint_eq(hd_b64url_encode((const uint8_t *) "foobar", 6, enc, 8),
                      8);
    ck_assert_int_eq(enc[0], '#');
    ck_assert_uint_eq(hd_b64url_encode((const uint8_t *) "fooba", 5, enc, 8),
                      7);
    ck_assert_str_eq(enc, "Zm9vYmE");
}
END_TEST

START_TEST(b64url_roundtrip_all_lengths)
{
    uint8_t in[200], dec[200];
    char    enc[300], *ref;

    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t) (i * 37 + 11);
    for (size_t len = 0; len <= sizeof(in); len++) {
        size_t n = hd_b64url_encode(in, len, enc, sizeof(enc));
        ref = b64u(in, len);
        ck_assert_str_eq(enc, ref);
        free(ref);
        ck_assert_int_eq(hd_b64url_decode(enc, n, dec, sizeof(dec)),
                         (long) len);
        ck_assert_int_eq(memcmp(in, dec, len), 0);
    }
}
END_TEST

START_TEST(strerror_distinct)
{
    int    codes[] = { HD_JWT_OK,       HD_JWT_EMALFORMED,
                       HD_JWT_EALG,     HD_JWT_ESIGNATURE,
                       HD_JWT_EEXPIRED, HD_JWT_ENOEXP,
                       HD_JWT_ECLAIMS,  -99 };
    size_t n = sizeof(codes) / sizeof(codes[0]);

    for (size_t i = 0; i < n; i++) {
        ck_assert_ptr_nonnull(hd_jwt_strerror(codes[i]));
        for (size_t j = 0; j < i; j++)
            ck_assert_str_ne(hd_jwt_strerror(codes[i]),
                             hd_jwt_strerror(codes[j]));
    }
}
END_TEST

static Suite *
jwt_suite(void)
{
    Suite *s = suite_create("jwt");
    TCase *tc;

    tc = tcase_create("known");
    tcase_add_test(tc, roundtrip_all_claims);
    tcase_add_test(tc, sign_matches_independent_builder);
    tcase_add_test(tc, known_answer_openssl);
    tcase_add_test(tc, known_answer_rfc7515);
    tcase_add_test(tc, known_answer_jwtio);
    suite_add_tcase(s, tc);

    tc = tcase_create("header");
    tcase_add_test(tc, alg_none);
    tcase_add_test(tc, alg_other);
    tcase_add_test(tc, typ_and_crit);
    tcase_add_test(tc, header_not_object);
    suite_add_tcase(s, tc);

    tc = tcase_create("signature");
    tcase_add_test(tc, bad_signature);
    tcase_add_test(tc, wrong_secret);
    suite_add_tcase(s, tc);

    tc = tcase_create("shape");
    tcase_add_test(tc, part_count);
    tcase_add_test(tc, empty_parts);
    tcase_add_test(tc, bad_base64url);
    tcase_add_test(tc, padding_rejected);
    tcase_add_test(tc, noncanonical_trailing_bits);
    tcase_add_test(tc, max_length);
    tcase_add_test(tc, not_nul_terminated);
    suite_add_tcase(s, tc);

    tc = tcase_create("claims");
    tcase_add_test(tc, payload_not_object);
    tcase_add_test(tc, duplicate_keys);
    tcase_add_test(tc, sub_claim);
    tcase_add_test(tc, exp_claim);
    tcase_add_test(tc, leeway);
    tcase_add_test(tc, nbf_claim);
    tcase_add_test(tc, tenant_claim);
    tcase_add_test(tc, channels_claim);
    tcase_add_test(tc, channels_count_limit);
    tcase_add_test(tc, out_zeroed_on_failure);
    tcase_add_test(tc, channel_allowed);
    suite_add_tcase(s, tc);

    tc = tcase_create("b64url");
    tcase_add_test(tc, b64url_vectors);
    tcase_add_test(tc, b64url_errors);
    tcase_add_test(tc, b64url_roundtrip_all_lengths);
    tcase_add_test(tc, strerror_distinct);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(jwt_suite());
    int      failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
