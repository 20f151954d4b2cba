/*
 * common/hd_hash.c: SipHash against the paper's vectors and OpenSSL's
 * SIPHASH MAC; the per-process key: stable within a process, different
 * after hd_hash_reseed() and in every forked child that reseeds.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "hd_hash.h"

static uint64_t rnd_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rnd(void)
{
    uint64_t x = rnd_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rnd_state = x;
}

static uint64_t
le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

START_TEST(siphash_matches_openssl)
{
    /* reference vectors of the SipHash paper (2-4, key 00..0f) */
    uint64_t      k[2] = { 0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull };
    unsigned char msg[64];
    for (unsigned i = 0; i < sizeof(msg); i++)
        msg[i] = (unsigned char) i;
    ck_assert_uint_eq(hd_siphash(k, msg, 0, 2, 4), 0x726fdb47dd0e0e31ull);
    ck_assert_uint_eq(hd_siphash(k, msg, 1, 2, 4), 0x74f839c593dc67fdull);

    /* 1-3 (what the tables use) against OpenSSL's SIPHASH MAC with the
     * same rounds, every length 0..63, random keys */
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
    ck_assert_ptr_nonnull(mac);
    for (unsigned trial = 0; trial < 8; trial++) {
        unsigned char key[16];
        for (unsigned i = 0; i < 16; i++)
            key[i] = (unsigned char) rnd();
        for (unsigned i = 0; i < sizeof(msg); i++)
            msg[i] = (unsigned char) rnd();
        uint64_t kk[2];
        memcpy(kk, key, 16); /* little-endian host */
        for (size_t len = 0; len < sizeof(msg); len++) {
            unsigned int  c = 1, d = 3;
            size_t        size = 8, outl = 0;
            unsigned char out[8];
            OSSL_PARAM    ps[] = {
                   OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size),
                   OSSL_PARAM_construct_uint(OSSL_MAC_PARAM_C_ROUNDS, &c),
                   OSSL_PARAM_construct_uint(OSSL_MAC_PARAM_D_ROUNDS, &d),
                   OSSL_PARAM_construct_end(),
            };
            EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
            ck_assert_int_eq(EVP_MAC_init(ctx, key, 16, ps), 1);
            ck_assert_int_eq(EVP_MAC_update(ctx, msg, len), 1);
            ck_assert_int_eq(EVP_MAC_final(ctx, out, &outl, 8), 1);
            EVP_MAC_CTX_free(ctx);
            ck_assert_uint_eq(outl, 8);
            ck_assert_uint_eq(hd_siphash(kk, msg, len, 1, 3), le64(out));
        }
    }
    EVP_MAC_free(mac);
}
END_TEST

START_TEST(process_key)
{
    const char name[] = "chat:lobby";
    uint64_t   h1 = hd_hash_bytes(name, sizeof(name) - 1);
    int        p[2];

    /* stable within the process, and depends on the bytes */
    ck_assert_uint_eq(hd_hash_bytes(name, sizeof(name) - 1), h1);
    ck_assert_uint_ne(hd_hash_bytes(name, sizeof(name) - 2), h1);

    /* a forked child that reseeds (as every worker does) hashes apart */
    ck_assert_int_eq(pipe(p), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        hd_hash_reseed();
        uint64_t h = hd_hash_bytes(name, sizeof(name) - 1);
        _exit(write(p[1], &h, sizeof(h)) == sizeof(h) ? 0 : 1);
    }
    uint64_t child = 0;
    int      st;
    ck_assert_int_eq(read(p[0], &child, sizeof(child)), sizeof(child));
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_uint_ne(child, h1);

    /* and a reseed here changes it too */
    hd_hash_reseed();
    ck_assert_uint_ne(hd_hash_bytes(name, sizeof(name) - 1), h1);
    close(p[0]);
    close(p[1]);
}
END_TEST

START_TEST(seed_is_random)
{
    uint64_t a[2] = { 0, 0 }, b[2] = { 0, 0 };
    ck_assert_int_eq(hd_hash_seed(a), 0);
    ck_assert_int_eq(hd_hash_seed(b), 0);
    ck_assert(a[0] != b[0] || a[1] != b[1]);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("hash");
    TCase *tc = tcase_create("hash");
    tcase_add_test(tc, siphash_matches_openssl);
    tcase_add_test(tc, process_key);
    tcase_add_test(tc, seed_is_random);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
