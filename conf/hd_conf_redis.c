/*
 * Configuration value type "redis.url": redis://[:password@]host[:port][/db]
 * or unix:///path[?db=N] (see docs/configuration.md), parsed into the
 * host, port, socket path, password and database a worker connects with.
 * The password, decoded and as written, is a secret.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include <jansson.h>

#include "hd_alloc.h"
#include "hd_conf.h"
#include "hd_conf_int.h"
#include "hd_log.h"

/* ---- redis.url --------------------------------------------------------- */

struct redis_url {
    char       *host; /* tcp only, without brackets */
    int         port;
    char       *unix_path;
    char       *password; /* percent-decoded; NULL if none */
    int         db;
    const char *pw_raw; /* password as written in the URL */
    size_t      pw_raw_len;
};

static void
redis_url_clear(struct redis_url *u)
{
    hd_free(u->host);
    hd_free(u->unix_path);
    if (u->password != NULL)
        explicit_bzero(u->password, strlen(u->password));
    hd_free(u->password);
}

/* Parse n bytes of decimal digits into 0..max. */
static int
parse_num(const char *s, size_t n, long max, long *out)
{
    long long v = 0;

    if (n == 0 || n > 10)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = (long) v;
    return 0;
}

static int
hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n) into a fresh string, or NULL if malformed/NUL. */
static char *
pct_decode(const char *s, size_t n)
{
    char  *d = hd_malloc(n + 1);
    size_t j = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            d[j++] = s[i];
            continue;
        }
        if (i + 2 >= n)
            goto fail;
        int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
            goto fail;
        d[j++] = (char) (hi << 4 | lo);
        i += 2;
    }
    d[j] = '\0';
    return d;
fail:
    free(d);
    return NULL;
}

/* The db part of a path: "" or "/" is 0, "/N" is N. */
static const char *
parse_db(const char *s, size_t n, int *db)
{
    long v;

    if (n == 0) {
        *db = 0;
        return NULL;
    }
    if (parse_num(s, n, INT_MAX, &v) < 0)
        return "database must be an integer between 0 and 2147483647";
    *db = (int) v;
    return NULL;
}

/*
 * redis://[[user]:password@]host[:port][/db] and unix:///path[?db=N].
 * Following redis-cli, "redis://word@host" takes word as the password and
 * a user before ':' is accepted and ignored (herald authenticates the
 * default user). The password is percent-decoded.
 *
 * Returns NULL and fills u, or a static message saying what is wrong;
 * messages never quote any part of the URL, which may hold a password.
 */
static const char *
parse_redis_url(const char *url, struct redis_url *u)
{
    const char *s, *auth_end, *at, *hp, *colon, *p, *why;
    long        v;

    memset(u, 0, sizeof(*u));

    if (strncasecmp(url, "unix://", 7) == 0) {
        s = url + 7;
        size_t plen = strcspn(s, "?");
        if (s[0] != '/')
            return "unix:// needs an absolute socket path, "
                   "e.g. unix:///run/redis/redis.sock";
        if (plen < 2)
            return "unix socket path is empty";
        if (plen >= sizeof(((struct sockaddr_un *) 0)->sun_path))
            return "unix socket path is too long (at most 107 bytes)";
        u->db = 0;
        if (s[plen] == '?') {
            p = s + plen + 1;
            if (strncmp(p, "db=", 3) != 0)
                return "unknown query parameter (only ?db=N is supported)";
            /* parse_db() takes "" as 0, but "?db=" is a mistake */
            if (p[3] == '\0' || parse_db(p + 3, strlen(p + 3), &u->db))
                return "database must be an integer between 0 and "
                       "2147483647";
        }
        u->unix_path = hd_strndup(s, plen);
        u->port = 0;
        return NULL;
    }

    if (strncasecmp(url, "rediss://", 9) == 0)
        return "TLS (rediss://) is not supported";
    if (strncasecmp(url, "redis://", 8) != 0)
        return "must start with redis:// or unix://";

    s = url + 8;
    auth_end = s + strcspn(s, "/?#");
    if (*auth_end == '?' || *auth_end == '#')
        return "query strings and fragments are not supported "
               "(give the database as /N)";

    /* userinfo: the last '@' before the path, so an unescaped '@' in a
     * password still parses */
    at = NULL;
    for (p = s; p < auth_end; p++)
        if (*p == '@')
            at = p;
    if (at == NULL && strchr(auth_end, '@') != NULL)
        return "'@' after the host: percent-encode '/', '?' and '#' "
               "in the password";
    hp = s;
    if (at != NULL) {
        const char *pw = memchr(s, ':', (size_t) (at - s));
        pw = pw != NULL ? pw + 1 : s;
        if (at > pw) {
            u->password = pct_decode(pw, (size_t) (at - pw));
            if (u->password == NULL)
                return "bad percent-escape in the password";
            u->pw_raw = pw;
            u->pw_raw_len = (size_t) (at - pw);
        }
        hp = at + 1;
    }

    if (hp == auth_end) {
        why = "missing host";
        goto fail;
    }
    if (*hp == '[') {
        const char   *rb = memchr(hp, ']', (size_t) (auth_end - hp));
        unsigned char a6[sizeof(struct in6_addr)];
        if (rb == NULL) {
            why = "unterminated '[' in the host";
            goto fail;
        }
        u->host = hd_strndup(hp + 1, (size_t) (rb - hp - 1));
        if (inet_pton(AF_INET6, u->host, a6) != 1) {
            why = "the host in brackets is not an IPv6 address";
            goto fail;
        }
        colon = rb + 1;
        if (colon != auth_end && *colon != ':') {
            why = "unexpected character after ']'";
            goto fail;
        }
    } else {
        colon = memchr(hp, ':', (size_t) (auth_end - hp));
        const char *hend = colon != NULL ? colon : auth_end;
        if (colon != NULL
            && memchr(colon + 1, ':', (size_t) (auth_end - colon - 1))) {
            why = "an IPv6 host must be in brackets, "
                  "e.g. redis://[::1]:6379";
            goto fail;
        }
        if (hend == hp) {
            why = "missing host";
            goto fail;
        }
        for (p = hp; p < hend; p++) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                  || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'
                  || *p == '_')) {
                why = "bad character in the host";
                goto fail;
            }
        }
        if (hend - hp > 253) {
            why = "host name is too long";
            goto fail;
        }
        u->host = hd_strndup(hp, (size_t) (hend - hp));
        if (colon == NULL)
            colon = auth_end;
    }

    u->port = 6379;
    if (colon != auth_end) {
        if (parse_num(colon + 1, (size_t) (auth_end - colon - 1), 65535, &v) < 0
            || v == 0) {
            why = "port must be an integer between 1 and 65535";
            goto fail;
        }
        u->port = (int) v;
    }

    if (*auth_end == '/') {
        p = auth_end + 1;
        if (strpbrk(p, "?#") != NULL) {
            why = "query strings and fragments are not supported "
                  "(give the database as /N)";
            goto fail;
        }
        if ((why = parse_db(p, strlen(p), &u->db)) != NULL)
            goto fail;
    }
    return NULL;

fail:
    redis_url_clear(u);
    return why;
}

static void
release_redis(hd_conf_t *c, const struct key *k)
{
    struct redis_url u = {
        .host = c->redis_host,
        .unix_path = c->redis_unix_path,
        .password = c->redis_password,
    };

    (void) k;
    redis_url_clear(&u);
    c->redis_host = c->redis_unix_path = c->redis_password = NULL;
    hd_free(c->redis_url);
}

static int
apply_redis(struct load *ld, const struct key *k, json_t *v, const char *dpath)
{
    struct redis_url u;
    const char      *why;
    hd_conf_t       *c = ld->c;

    if (!json_is_string(v)) {
        hd_conf_err(ld, dpath, "expected string, got %s", hd_conf_jtype(v));
        return -1;
    }
    if ((long long) json_string_length(v) > k->max) {
        hd_conf_err(ld, dpath, "must be at most %lld bytes long", k->max);
        return -1;
    }
    if ((why = parse_redis_url(json_string_value(v), &u)) != NULL) {
        hd_conf_err(ld, dpath, "invalid Redis URL: %s", why);
        return -1;
    }
    release_redis(c, k);
    c->redis_url = hd_strdup(json_string_value(v));
    c->redis_host = u.host;
    c->redis_port = u.port;
    c->redis_unix_path = u.unix_path;
    c->redis_password = u.password;
    c->redis_db = u.db;
    return 0;
}

/* Compare what a worker connects with, not the spelling of the URL. */
static bool
differs_redis(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    (void) k;
    return hd_conf_str_differs(a->redis_host, b->redis_host)
        || a->redis_port != b->redis_port
        || hd_conf_str_differs(a->redis_unix_path, b->redis_unix_path)
        || hd_conf_str_differs(a->redis_password, b->redis_password)
        || a->redis_db != b->redis_db;
}

/* Both the decoded password and its spelling in the URL are secrets. */
static void
secrets_redis(const hd_conf_t *c, const struct key *k)
{
    struct redis_url u;

    (void) k;
    if (c->redis_password != NULL)
        hd_log_add_secret(c->redis_password);
    if (c->redis_url == NULL || parse_redis_url(c->redis_url, &u) != NULL)
        return;
    if (u.pw_raw != NULL) {
        char *raw = hd_strndup(u.pw_raw, u.pw_raw_len);
        hd_log_add_secret(raw);
        explicit_bzero(raw, u.pw_raw_len);
        free(raw);
    }
    redis_url_clear(&u);
}

const struct ktype hd_conf_type_redis = { apply_redis, differs_redis,
                                          release_redis, secrets_redis };
