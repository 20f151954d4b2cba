/*
 * Configuration for token verification and secrets: "auth.algorithms"
 * (the accepted JWT algorithms, stored as a mask), "auth.public_keys" (PEM
 * public keys, inline or from files, each with an optional kid), the
 * "..._file" keys that read a secret from a file instead of the config
 * (systemd credentials, Kubernetes secrets), the shipped development
 * secrets that only a development mode accepts, and the warning for a
 * config file that holds secrets and is readable by others.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "hd_alloc.h"
#include "hd_conf.h"
#include "hd_conf_int.h"
#include "hd_jwt.h"

#define SECRET_FILE_MAX (64 * 1024) /* a secret or a PEM key, not a dump */

bool hd_conf_dev_mode;

/* ---- auth.algorithms ----------------------------------------------------- */

static int
apply_algs(struct load *ld, const struct key *k, json_t *v, const char *dpath)
{
    unsigned mask = 0;
    size_t   i;
    int      rc = 0;

    if (!json_is_array(v) || json_array_size(v) == 0) {
        hd_conf_err(ld, dpath,
                    "expected a non-empty array of algorithm names, got %s",
                    hd_conf_jtype(v));
        return -EINVAL;
    }
    for (i = 0; i < json_array_size(v); i++) {
        json_t *e = json_array_get(v, i);
        int     a = json_is_string(e)
                ? hd_jwt_alg_parse(json_string_value(e), json_string_length(e))
                : -1;
        if (a < 0) {
            char *ep = hd_asprintf("%s[%zu]", dpath, i);
            hd_conf_err(ld, ep,
                        "not an algorithm herald knows (HS256, HS384, HS512, "
                        "RS256, RS384, RS512, PS256, PS384, PS512, ES256, "
                        "ES384, EdDSA; \"none\" is never accepted)");
            free(ep);
            rc = -EINVAL;
            continue;
        }
        mask |= HD_JWT_ALG_BIT(a);
    }
    if (rc == 0)
        *FIELD(ld->c, k, unsigned) = mask;
    return rc;
}

static bool
differs_algs(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    return *CFIELD(a, k, unsigned) != *CFIELD(b, k, unsigned);
}

static void
release_algs(hd_conf_t *c, const struct key *k)
{
    (void) c;
    (void) k;
}

const struct ktype hd_conf_type_algs = { apply_algs, differs_algs, release_algs,
                                         hd_conf_secrets_none };

/* ---- files ----------------------------------------------------------------- */

/*
 * Read a small file (secret or key) into a NUL-terminated heap string; a
 * NUL inside is refused. Returns 0 or -errno (-EFBIG, -EINVAL for a NUL).
 * *others is set when the file is readable by others than its owner and
 * group.
 */
int
hd_conf_read_small(const char *path, char **out, size_t *len, bool *others)
{
    struct stat st;
    char       *b = NULL;
    size_t      n = 0;
    int         fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto fail;
    }
    if (others != NULL)
        *others = (st.st_mode & S_IROTH) != 0;
    b = hd_malloc(SECRET_FILE_MAX + 1);
    for (;;) {
        ssize_t r = read(fd, b + n, SECRET_FILE_MAX + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto fail;
        }
        if (r == 0)
            break;
        n += (size_t) r;
        if (n > SECRET_FILE_MAX) {
            rc = -EFBIG;
            goto fail;
        }
    }
    b[n] = '\0';
    if (memchr(b, '\0', n) != NULL) {
        rc = -EINVAL;
        goto fail;
    }
    close(fd);
    *out = b;
    *len = n;
    return 0;

fail:
    close(fd);
    if (b != NULL) {
        explicit_bzero(b, n);
        free(b);
    }
    return rc;
}

static const char *
read_error(int rc)
{
    if (rc == -EFBIG)
        return "file too large (64 KiB at most)";
    if (rc == -EINVAL)
        return "file holds a NUL byte";
    return strerror(-rc);
}

/*
 * A path from the config: absolute as is, relative to the directory of
 * the config file (so a config and its secrets can move together).
 * Returns a heap string.
 */
char *
hd_conf_rel_path(const struct load *ld, const char *path)
{
    const char *slash = strrchr(ld->name, '/');

    if (path[0] == '/' || slash == NULL)
        return hd_strdup(path);
    return hd_asprintf("%.*s/%s", (int) (slash - ld->name), ld->name, path);
}

/* ---- auth.public_keys ---------------------------------------------------- */

static void
free_keys(hd_conf_pubkey_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].kid);
        free(v[i].pem);
        free(v[i].file);
    }
    free(v);
}

static void
release_pubkeys(hd_conf_t *c, const struct key *k)
{
    (void) k;
    free_keys(c->auth_keys, c->nauth_keys);
    c->auth_keys = NULL;
    c->nauth_keys = 0;
}

/* One {"kid", "pem" | "pem_file"} entry into *pk; every error reported. */
static int
apply_one_key(struct load *ld, json_t *e, const char *ep, hd_conf_pubkey_t *pk)
{
    const char      *name;
    json_t          *v, *kid = NULL, *pem = NULL, *file = NULL;
    hd_jwt_keyset_t *ks;
    char             err[160];
    size_t           len = 0;
    int              rc = 0;

    if (!json_is_object(e)) {
        hd_conf_err(ld, ep, "expected object, got %s", hd_conf_jtype(e));
        return -EINVAL;
    }
    json_object_foreach(e, name, v)
    {
        char *fp = hd_conf_display_path(ep, name);
        if (strcmp(name, "kid") == 0)
            kid = v;
        else if (strcmp(name, "pem") == 0)
            pem = v;
        else if (strcmp(name, "pem_file") == 0)
            file = v;
        else {
            hd_conf_err(ld, fp, "unknown key (kid, pem, pem_file)");
            rc = -EINVAL;
        }
        if (!json_is_string(v) || json_string_length(v) == 0) {
            hd_conf_err(ld, fp, "expected a non-empty string");
            rc = -EINVAL;
        }
        free(fp);
    }
    if (rc < 0)
        return -EINVAL;
    if ((pem == NULL) == (file == NULL)) {
        hd_conf_err(ld, ep, "give exactly one of \"pem\" and \"pem_file\"");
        return -EINVAL;
    }
    if (kid != NULL && json_string_length(kid) > HD_JWT_MAX_KID_LEN) {
        hd_conf_err(ld, ep, "kid longer than %d bytes", HD_JWT_MAX_KID_LEN);
        return -EINVAL;
    }
    if (file != NULL) {
        char *fpath = hd_conf_rel_path(ld, json_string_value(file));
        int   r = hd_conf_read_small(fpath, &pk->pem, &len, NULL);
        if (r < 0) {
            char *q = hd_conf_echo(json_string_value(file));
            hd_conf_err(ld, ep, "pem_file %s: %s", q, read_error(r));
            free(q);
            free(fpath);
            return -EINVAL;
        }
        pk->file = fpath;
    } else {
        pk->pem = hd_strdup(json_string_value(pem));
        len = json_string_length(pem);
    }
    /* parse it now, so that -t and a reload catch a bad key */
    ks = hd_jwt_keyset_new();
    if (hd_jwt_keyset_add_pem(ks, NULL, pk->pem, len, err, sizeof(err)) < 0) {
        hd_conf_err(ld, ep, "%s", err);
        rc = -EINVAL;
    }
    hd_jwt_keyset_free(ks);
    if (kid != NULL)
        pk->kid = hd_strdup(json_string_value(kid));
    return rc;
}

static int
apply_pubkeys(struct load *ld, const struct key *k, json_t *v,
              const char *dpath)
{
    hd_conf_pubkey_t *arr;
    size_t            i, n;
    int               rc = 0;

    if (!json_is_array(v)) {
        hd_conf_err(ld, dpath, "expected array of objects, got %s",
                    hd_conf_jtype(v));
        return -EINVAL;
    }
    n = json_array_size(v);
    if ((long long) n > k->max) {
        hd_conf_err(ld, dpath, "at most %lld keys", k->max);
        return -EINVAL;
    }
    arr = hd_calloc(n + 1, sizeof(*arr));
    for (i = 0; i < n; i++) {
        char *ep = hd_asprintf("%s[%zu]", dpath, i);
        if (apply_one_key(ld, json_array_get(v, i), ep, &arr[i]) < 0)
            rc = -EINVAL;
        free(ep);
    }
    if (rc < 0) {
        free_keys(arr, n);
        return -EINVAL;
    }
    release_pubkeys(ld->c, k);
    ld->c->auth_keys = arr;
    ld->c->nauth_keys = n;
    return 0;
}

static bool
differs_pubkeys(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    (void) k;
    if (a->nauth_keys != b->nauth_keys)
        return true;
    for (size_t i = 0; i < a->nauth_keys; i++)
        if (hd_conf_str_differs(a->auth_keys[i].kid, b->auth_keys[i].kid)
            || strcmp(a->auth_keys[i].pem, b->auth_keys[i].pem) != 0)
            return true;
    return false;
}

const struct ktype hd_conf_type_pubkeys = { apply_pubkeys, differs_pubkeys,
                                            release_pubkeys,
                                            hd_conf_secrets_none };

/* ---- secrets from files, dev secrets ---------------------------------------- */

/*
 * Resolve "X_file" into X: the file's content, one trailing newline
 * (LF or CRLF) removed, checked against X's length bounds. Both set is an
 * error. file_key and key are table rows; *st their load states.
 */
void
hd_conf_secret_file(struct load *ld, const struct key *key,
                    const struct key *file_key, bool both_set)
{
    const char *path0 = *CFIELD(ld->c, file_key, char *);
    char       *path = path0 != NULL ? hd_conf_rel_path(ld, path0) : NULL;
    char       *dpath = hd_asprintf("$.%s", file_key->path);
    char       *buf = NULL, *q;
    size_t      len = 0;
    bool        others = false;
    int         r;

    if (path == NULL)
        goto done;
    if (both_set) {
        hd_conf_err(ld, dpath, "give either %s or %s, not both", key->path,
                    file_key->path);
        goto done;
    }
    r = hd_conf_read_small(path, &buf, &len, &others);
    if (r < 0) {
        q = hd_conf_echo(path0);
        hd_conf_err(ld, dpath, "%s: %s", q, read_error(r));
        free(q);
        goto done;
    }
    if (len > 0 && buf[len - 1] == '\n')
        buf[--len] = '\0';
    if (len > 0 && buf[len - 1] == '\r')
        buf[--len] = '\0';
    if ((long long) len < key->min || (long long) len > key->max) {
        hd_conf_err(ld, dpath,
                    "the secret in the file must be %lld..%lld bytes long, "
                    "it is %zu",
                    key->min, key->max, len);
        goto done;
    }
    if (others)
        hd_conf_warn(ld->c, "%s: %s is readable by other users (chmod 600)",
                     file_key->path, path);
    *FIELD(ld->c, key, char *) = buf;
    buf = NULL;
done:
    if (buf != NULL) {
        explicit_bzero(buf, len);
        free(buf);
    }
    free(path);
    free(dpath);
}

/* The values shipped in conf/herald.json and the docs. */
static const char *const dev_secrets[] = {
    "change-me-dev-secret-not-for-production-use",
    "change-me-dev-api-key",
    NULL,
};

bool
hd_conf_is_dev_secret(const char *s)
{
    if (s == NULL)
        return false;
    for (size_t i = 0; dev_secrets[i] != NULL; i++)
        if (strcmp(s, dev_secrets[i]) == 0)
            return true;
    /* anything still saying "change-me" was never changed */
    return strncmp(s, "change-me", 9) == 0;
}

void
hd_conf_dev_secret_check(struct load *ld, const struct key *k)
{
    char *dpath;

    if (hd_conf_dev_mode || !(k->flags & F_SECRET)
        || !hd_conf_is_dev_secret(*CFIELD(ld->c, k, char *)))
        return;
    dpath = hd_asprintf("$.%s", k->path);
    hd_conf_err(ld, dpath,
                "is the shipped development secret: set your own (e.g. "
                "`openssl rand -base64 48` into a file named by %s_file), "
                "or run with --dev on a development machine",
                k->path);
    free(dpath);
}

void
hd_conf_warn(hd_conf_t *c, const char *fmt, ...)
{
    va_list ap;
    char    buf[512];

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (c->nwarnings == c->cap_warnings) {
        c->cap_warnings = c->cap_warnings ? c->cap_warnings * 2 : 4;
        c->warnings = hd_realloc(c->warnings,
                                 c->cap_warnings * sizeof(*c->warnings));
    }
    c->warnings[c->nwarnings++] = hd_strdup(buf);
}

/* ---- proxy.headers -------------------------------------------------------- */

static void
release_headers(hd_conf_t *c, const struct key *k)
{
    (void) k;
    for (size_t i = 0; i < c->nproxy_headers; i++)
        free(c->proxy_headers[i]);
    free(c->proxy_headers);
    c->proxy_headers = NULL;
    c->nproxy_headers = 0;
}

/* An HTTP field name (RFC 9110 token), stored lower-case. */
static int
apply_headers(struct load *ld, const struct key *k, json_t *v,
              const char *dpath)
{
    size_t i, n;
    char **arr;
    int    rc = 0;

    if (!json_is_array(v)) {
        hd_conf_err(ld, dpath, "expected array of header names, got %s",
                    hd_conf_jtype(v));
        return -EINVAL;
    }
    n = json_array_size(v);
    if ((long long) n > k->max) {
        hd_conf_err(ld, dpath, "at most %lld headers", k->max);
        return -EINVAL;
    }
    arr = hd_calloc(n + 1, sizeof(char *));
    for (i = 0; i < n; i++) {
        json_t     *e = json_array_get(v, i);
        const char *s = json_is_string(e) ? json_string_value(e) : NULL;
        bool        ok = s != NULL && *s != '\0' && strlen(s) <= 64;

        for (const char *p = s; ok && *p; p++)
            ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                || (*p >= '0' && *p <= '9') || strchr("!#$%&'*+-.^_`|~", *p);
        if (!ok) {
            char *ep = hd_asprintf("%s[%zu]", dpath, i);
            hd_conf_err(ld, ep, "expected an HTTP header name");
            free(ep);
            rc = -EINVAL;
            continue;
        }
        arr[i] = hd_strdup(s);
        for (char *p = arr[i]; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char) (*p - 'A' + 'a');
    }
    if (rc < 0) {
        for (i = 0; i < n; i++)
            free(arr[i]);
        free(arr);
        return -EINVAL;
    }
    release_headers(ld->c, k);
    ld->c->proxy_headers = arr;
    ld->c->nproxy_headers = n;
    return 0;
}

static bool
differs_headers(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    (void) k;
    if (a->nproxy_headers != b->nproxy_headers)
        return true;
    for (size_t i = 0; i < a->nproxy_headers; i++)
        if (strcmp(a->proxy_headers[i], b->proxy_headers[i]) != 0)
            return true;
    return false;
}

const struct ktype hd_conf_type_headers = { apply_headers, differs_headers,
                                            release_headers,
                                            hd_conf_secrets_none };
