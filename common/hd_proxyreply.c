/*
 * Parsing the backend's connect and subscribe answers; see
 * hd_proxyreply.h. A connect result is turned into the claims object a
 * token would carry and checked by the same code (hd_jwt_claims_load()),
 * so a proxied connection obeys exactly the rules of a token one.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "hd_proxyreply.h"

/* Shared part: parse, and pick "result" or "error". */
static int
top(const char *body, size_t len, json_t **root, json_t **result, int *code,
    char *msg, size_t msgcap)
{
    json_t *r, *e, *c, *m;

    *root = NULL;
    if (body == NULL || len == 0 || len > HD_PROXY_MAX_BODY)
        return HD_PROXY_GARBAGE;
    *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(*root))
        return HD_PROXY_GARBAGE;
    r = json_object_get(*root, "result");
    e = json_object_get(*root, "error");
    if ((r == NULL) == (e == NULL))
        return HD_PROXY_GARBAGE;
    if (r != NULL) {
        if (!json_is_object(r))
            return HD_PROXY_GARBAGE;
        *result = r;
        return HD_PROXY_ALLOW;
    }
    if (!json_is_object(e))
        return HD_PROXY_GARBAGE;
    c = json_object_get(e, "code");
    m = json_object_get(e, "message");
    *code = json_is_integer(c) && json_integer_value(c) >= 400
            && json_integer_value(c) <= 499
        ? (int) json_integer_value(c)
        : 403;
    if (msgcap > 0) {
        size_t n = 0;
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            for (; *s != '\0' && n + 1 < msgcap && n < HD_PROXY_MSG_MAX; s++)
                msg[n++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
        }
        if (n == 0)
            n = (size_t) snprintf(msg, msgcap, "refused by the application");
        else
            msg[n] = '\0';
    }
    return HD_PROXY_DENY;
}

int
hd_proxy_parse_connect(const char *body, size_t len, int64_t now,
                       hd_jwt_claims_t *claims, int *code, char *msg,
                       size_t msgcap)
{
    json_t     *root, *res = NULL, *pl = NULL;
    const char *k;
    json_t     *v;
    int         rc;

    memset(claims, 0, sizeof(*claims));
    rc = top(body, len, &root, &res, code, msg, msgcap);
    if (rc != HD_PROXY_ALLOW)
        goto done;
    /* the result's fields under the names of token claims */
    rc = HD_PROXY_GARBAGE;
    pl = json_object();
    json_object_foreach(res, k, v)
    {
        if (strcmp(k, "user") == 0)
            json_object_set(pl, "sub", v);
        else if (strcmp(k, "expires_at") == 0)
            json_object_set(pl, "exp", v);
        else if (strcmp(k, "tenant") == 0 || strcmp(k, "channels") == 0
                 || strcmp(k, "publish") == 0 || strcmp(k, "info") == 0)
            json_object_set(pl, k, v);
        else
            goto done; /* unknown fields: a backend speaking another
                          protocol, not one to trust by guessing */
    }
    if (json_object_get(pl, "exp") == NULL)
        json_object_set_new(pl, "exp", json_integer(INT64_MAX));
    if (hd_jwt_claims_load(pl, NULL, now, claims) == HD_JWT_OK)
        rc = HD_PROXY_ALLOW;
done:
    json_decref(pl);
    json_decref(root);
    return rc;
}

int
hd_proxy_parse_subscribe(const char *body, size_t len, int *code, char *msg,
                         size_t msgcap)
{
    json_t *root, *res = NULL;
    int     rc = top(body, len, &root, &res, code, msg, msgcap);

    if (rc == HD_PROXY_ALLOW && json_object_size(res) != 0)
        rc = HD_PROXY_GARBAGE;
    json_decref(root);
    return rc;
}
