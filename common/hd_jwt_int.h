/*
 * Inside common/hd_jwt.c and common/hd_jwk.c (nothing else includes
 * this): the algorithm table and the key-set representation they share.
 */
#ifndef HD_JWT_INT_H
#define HD_JWT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "hd_jwt.h"

/* key families: a key is only ever used with algorithms of its own */
enum hd_jwt_fam {
    HD_FAM_HMAC,
    HD_FAM_RSA,
    HD_FAM_EC256,
    HD_FAM_EC384,
    HD_FAM_ED25519,
};

typedef struct hd_jwt_alginfo {
    const char     *name;
    enum hd_jwt_fam fam;
    int             bits; /* hash size; 0 for EdDSA */
    bool            pss;
} hd_jwt_alginfo_t;

extern const hd_jwt_alginfo_t hd_jwt_algs[HD_JWT_NALG];

typedef struct hd_jwt_key {
    char           *kid; /* NULL: none */
    enum hd_jwt_fam fam;
    int             alg; /* -1: any algorithm of the family */
    uint8_t        *secret;
    size_t          secret_len;
    EVP_PKEY       *pkey;
} hd_jwt_key_t;

struct hd_jwt_keyset {
    hd_jwt_key_t *k;
    size_t        n, cap;
};

/* The family of a public (or private) key, or -EINVAL with a message in err
 * (err may be NULL) when herald cannot use it. */
int hd_jwt_pkey_family(EVP_PKEY *pk, char *err, size_t errlen);

#endif
