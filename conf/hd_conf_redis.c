/*
 * Configuration value type "redis.url": redis://[:password@]host[:port][/db]
 * or unix:///path[?db=N] (see docs/configuration.md), parsed into the
 * host, port, socket path, password and database a worker connects with.
 * The password, decoded and as written, is a secret.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

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
    char       *user;     /* percent-decoded; NULL = the default user */
    int         db;
    const char *pw_raw; /* password as written in the URL */
    size_t      pw_raw_len;
};

static void
redis_url_clear(struct redis_url *u)
{
    hd_free(u->host);
    hd_free(u->unix_path);
    hd_free(u->user);
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
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return -ERANGE;
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
    return -1; /* "not a hex digit": a value sentinel, not an error */
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
 * "redis://user:password@host" authenticates as the ACL user (AUTH user
 * password); an empty user or "default" is the default user. User and
 * password are percent-decoded.
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
        return "TLS (rediss://) is not supported by this hiredis: run a "
               "stunnel client next to herald and point redis.url at it "
               "(deploy/stunnel/, docs/operations.md \"Redis over TLS\")";
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
        if (pw != NULL && pw > s
            && !((size_t) (pw - s) == 7 && memcmp(s, "default", 7) == 0)) {
            u->user = pct_decode(s, (size_t) (pw - s));
            if (u->user == NULL) {
                why = "bad percent-escape in the user name";
                goto fail;
            }
        }
        pw = pw != NULL ? pw + 1 : s;
        if (at > pw) {
            u->password = pct_decode(pw, (size_t) (at - pw));
            if (u->password == NULL) {
                why = "bad percent-escape in the password";
                goto fail;
            }
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
        .user = c->redis_user,
    };

    (void) k;
    redis_url_clear(&u);
    c->redis_host = c->redis_unix_path = c->redis_password = NULL;
    c->redis_user = NULL;
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
        return -EINVAL;
    }
    if ((long long) json_string_length(v) > k->max) {
        hd_conf_err(ld, dpath, "must be at most %lld bytes long", k->max);
        return -EINVAL;
    }
    if ((why = parse_redis_url(json_string_value(v), &u)) != NULL) {
        hd_conf_err(ld, dpath, "invalid Redis URL: %s", why);
        return -EINVAL;
    }
    release_redis(c, k);
    c->redis_url = hd_strdup(json_string_value(v));
    c->redis_host = u.host;
    c->redis_port = u.port;
    c->redis_unix_path = u.unix_path;
    c->redis_password = u.password;
    c->redis_user = u.user;
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
        || hd_conf_str_differs(a->redis_user, b->redis_user)
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

/* ---- secrets from files ------------------------------------------------ */

#define SECRET_FILE_MAX 4096

/*
 * A password kept in a file of its own (e.g. a systemd credential or a
 * mounted secret): the whole file, one trailing newline (LF or CRLF)
 * removed. Empty files, NUL bytes and inner line breaks are mistakes.
 * Returns the password or NULL with *why set (never quoting the file).
 */
static char *
read_secret_file(const char *path, const char **why)
{
    char    buf[SECRET_FILE_MAX + 2];
    size_t  n = 0;
    ssize_t r;
    int     fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        *why = strerror(errno);
        return NULL;
    }
    while (n < sizeof(buf)) {
        r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t) r;
    }
    close(fd);
    if (r < 0) {
        *why = "read failed";
        goto fail;
    }
    if (n > SECRET_FILE_MAX) {
        *why = "longer than 4096 bytes";
        goto fail;
    }
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n == 0) {
        *why = "the file is empty";
        goto fail;
    }
    if (memchr(buf, '\0', n) || memchr(buf, '\n', n) || memchr(buf, '\r', n)) {
        *why = "the file holds a NUL byte or more than one line";
        goto fail;
    }
    char *s = hd_strndup(buf, n);
    explicit_bzero(buf, sizeof(buf));
    return s;
fail:
    explicit_bzero(buf, sizeof(buf));
    return NULL;
}

static void
free_secret(char **s)
{
    if (*s != NULL)
        explicit_bzero(*s, strlen(*s));
    hd_free(*s);
}

/* ---- targets: redis.sentinel, redis.shards ----------------------------- */

static void
target_clear(hd_redis_target_t *t)
{
    hd_free(t->name);
    hd_free(t->host);
    hd_free(t->unix_path);
    hd_free(t->user);
    free_secret(&t->password);
    hd_free(t->master_name);
    for (size_t i = 0; i < t->nsentinels; i++)
        hd_free(t->sentinel_host[i]);
    hd_free(t->sentinel_host);
    hd_free(t->sentinel_port);
    hd_free(t->sentinel_user);
    free_secret(&t->sentinel_password);
    memset(t, 0, sizeof(*t));
}

static char *
dup_or_null(const char *s)
{
    return s != NULL ? hd_strdup(s) : NULL;
}

static void
target_copy(hd_redis_target_t *d, const hd_redis_target_t *s)
{
    memset(d, 0, sizeof(*d));
    d->name = dup_or_null(s->name);
    d->host = dup_or_null(s->host);
    d->port = s->port;
    d->unix_path = dup_or_null(s->unix_path);
    d->user = dup_or_null(s->user);
    d->password = dup_or_null(s->password);
    d->db = s->db;
    d->master_name = dup_or_null(s->master_name);
    d->nsentinels = s->nsentinels;
    if (s->nsentinels > 0) {
        d->sentinel_host = hd_calloc(s->nsentinels, sizeof(char *));
        d->sentinel_port = hd_calloc(s->nsentinels, sizeof(int));
        for (size_t i = 0; i < s->nsentinels; i++) {
            d->sentinel_host[i] = hd_strdup(s->sentinel_host[i]);
            d->sentinel_port[i] = s->sentinel_port[i];
        }
    }
    d->sentinel_user = dup_or_null(s->sentinel_user);
    d->sentinel_password = dup_or_null(s->sentinel_password);
}

static bool
target_differs(const hd_redis_target_t *a, const hd_redis_target_t *b)
{
    if (hd_conf_str_differs(a->name, b->name)
        || hd_conf_str_differs(a->host, b->host) || a->port != b->port
        || hd_conf_str_differs(a->unix_path, b->unix_path)
        || hd_conf_str_differs(a->user, b->user)
        || hd_conf_str_differs(a->password, b->password) || a->db != b->db
        || hd_conf_str_differs(a->master_name, b->master_name)
        || a->nsentinels != b->nsentinels
        || hd_conf_str_differs(a->sentinel_user, b->sentinel_user)
        || hd_conf_str_differs(a->sentinel_password, b->sentinel_password))
        return true;
    for (size_t i = 0; i < a->nsentinels; i++)
        if (strcmp(a->sentinel_host[i], b->sentinel_host[i]) != 0
            || a->sentinel_port[i] != b->sentinel_port[i])
            return true;
    return false;
}

static void
target_secrets(const hd_redis_target_t *t)
{
    if (t->password != NULL)
        hd_log_add_secret(t->password);
    if (t->sentinel_password != NULL)
        hd_log_add_secret(t->sentinel_password);
}

/* The shard's identity: what the hash ring and /health know it by. It
 * never holds a password. */
static char *
target_name(const hd_redis_target_t *t)
{
    if (t->master_name != NULL)
        return hd_asprintf("sentinel:%s", t->master_name);
    if (t->unix_path != NULL)
        return t->db ? hd_asprintf("unix:%s/%d", t->unix_path, t->db)
                     : hd_asprintf("unix:%s", t->unix_path);
    const char *fmt = strchr(t->host, ':') ? "[%s]:%d" : "%s:%d";
    char       *hp = hd_asprintf(fmt, t->host, t->port);
    if (t->db == 0)
        return hp;
    char *n = hd_asprintf("%s/%d", hp, t->db);
    free(hp);
    return n;
}

/* "host:port" or "[v6]:port"; port defaults to 26379. */
static const char *
parse_hostport(const char *s, char **host, int *port)
{
    const char *colon;
    long        v;

    *port = 26379;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || (rb[1] != '\0' && rb[1] != ':'))
            return "expected host:port or [IPv6]:port";
        *host = hd_strndup(s + 1, (size_t) (rb - s - 1));
        colon = rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = strchr(s, ':');
        if (colon != NULL && strchr(colon + 1, ':') != NULL)
            return "an IPv6 address must be in brackets";
        size_t hl = colon ? (size_t) (colon - s) : strlen(s);
        if (hl == 0 || hl > 253)
            return "expected host:port";
        for (size_t i = 0; i < hl; i++)
            if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
                  || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'
                  || s[i] == '_'))
                return "bad character in the host";
        *host = hd_strndup(s, hl);
    }
    if (colon != NULL) {
        if (parse_num(colon + 1, strlen(colon + 1), 65535, &v) < 0 || v == 0) {
            hd_free(*host);
            return "port must be an integer between 1 and 65535";
        }
        *port = (int) v;
    }
    return NULL;
}

/* An optional string member; -1 after reporting a bad one. */
static int
opt_str(struct load *ld, json_t *obj, const char *name, const char *dpath,
        const char **out)
{
    json_t *v = json_object_get(obj, name);

    *out = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0
        || json_string_length(v) > 4096) {
        char *d = hd_conf_display_path(dpath, name);
        hd_conf_err(ld, d, "expected a non-empty string");
        free(d);
        return -EINVAL;
    }
    *out = json_string_value(v);
    return 0;
}

/* password or password_file (not both) */
static int
opt_password(struct load *ld, json_t *obj, const char *pw_key,
             const char *file_key, const char *dpath, char **out)
{
    const char *pw, *file, *why = NULL;

    if (opt_str(ld, obj, pw_key, dpath, &pw) < 0
        || opt_str(ld, obj, file_key, dpath, &file) < 0)
        return -EINVAL;
    if (pw != NULL && file != NULL) {
        char *d = hd_conf_display_path(dpath, file_key);
        hd_conf_err(ld, d, "give %s or %s, not both", pw_key, file_key);
        free(d);
        return -EINVAL;
    }
    if (file != NULL && (*out = read_secret_file(file, &why)) == NULL) {
        char *d = hd_conf_display_path(dpath, file_key);
        hd_conf_err(ld, d, "cannot read the password file: %s", why);
        free(d);
        return -EINVAL;
    }
    if (pw != NULL)
        *out = hd_strdup(pw);
    return 0;
}

static bool
only_keys(struct load *ld, json_t *obj, const char *dpath,
          const char *const *known)
{
    const char *name;
    json_t     *v;
    bool        ok = true;

    json_object_foreach(obj, name, v)
    {
        size_t i;
        for (i = 0; known[i] != NULL && strcmp(known[i], name) != 0; i++)
            ;
        if (known[i] == NULL) {
            char *d = hd_conf_display_path(dpath, name);
            hd_conf_err(ld, d, "unknown key");
            free(d);
            ok = false;
        }
    }
    return ok;
}

/*
 * {"master_name": "mymaster", "addresses": ["host:26379", ...],
 *  "username", "password" | "password_file", "db",
 *  "sentinel_username", "sentinel_password" | "sentinel_password_file"}
 */
static int
parse_sentinel(struct load *ld, json_t *v, const char *dpath,
               hd_redis_target_t *t)
{
    static const char *const known[] = { "master_name",
                                         "addresses",
                                         "username",
                                         "password",
                                         "password_file",
                                         "db",
                                         "sentinel_username",
                                         "sentinel_password",
                                         "sentinel_password_file",
                                         NULL };
    const char              *mn, *user, *suser;
    json_t                  *addrs, *db;
    int                      bad = 0;

    memset(t, 0, sizeof(*t));
    if (!json_is_object(v)) {
        hd_conf_err(ld, dpath, "expected object, got %s", hd_conf_jtype(v));
        return -EINVAL;
    }
    if (!only_keys(ld, v, dpath, known))
        bad = -EINVAL;
    if (opt_str(ld, v, "master_name", dpath, &mn) < 0)
        bad = -EINVAL;
    else if (mn == NULL) {
        hd_conf_err(ld, dpath, "master_name is required");
        bad = -EINVAL;
    } else if (strlen(mn) > 128 || strpbrk(mn, " \t\r\n") != NULL) {
        hd_conf_err(ld, dpath, "master_name: at most 128 bytes, no spaces");
        bad = -EINVAL;
    } else
        t->master_name = hd_strdup(mn);
    addrs = json_object_get(v, "addresses");
    if (!json_is_array(addrs) || json_array_size(addrs) == 0
        || json_array_size(addrs) > 16) {
        char *d = hd_conf_display_path(dpath, "addresses");
        hd_conf_err(ld, d, "expected an array of 1 to 16 \"host:port\"");
        free(d);
        bad = -EINVAL;
    } else {
        size_t n = json_array_size(addrs);
        t->sentinel_host = hd_calloc(n, sizeof(char *));
        t->sentinel_port = hd_calloc(n, sizeof(int));
        for (size_t i = 0; i < n; i++) {
            json_t     *a = json_array_get(addrs, i);
            const char *why = "expected a string \"host:port\"";
            char       *h = NULL;
            if (!json_is_string(a)
                || (why = parse_hostport(json_string_value(a), &h,
                                         &t->sentinel_port[t->nsentinels]))
                    != NULL) {
                char *d = hd_asprintf("%s.addresses[%zu]", dpath, i);
                hd_conf_err(ld, d, "%s", why);
                free(d);
                bad = -EINVAL;
                continue;
            }
            t->sentinel_host[t->nsentinels++] = h;
        }
    }
    if (opt_str(ld, v, "username", dpath, &user) < 0
        || opt_str(ld, v, "sentinel_username", dpath, &suser) < 0)
        bad = -EINVAL;
    else {
        t->user = dup_or_null(user);
        t->sentinel_user = dup_or_null(suser);
    }
    if (opt_password(ld, v, "password", "password_file", dpath, &t->password)
            < 0
        || opt_password(ld, v, "sentinel_password", "sentinel_password_file",
                        dpath, &t->sentinel_password)
            < 0)
        bad = -EINVAL;
    db = json_object_get(v, "db");
    if (db != NULL) {
        if (!json_is_integer(db) || json_integer_value(db) < 0
            || json_integer_value(db) > INT_MAX) {
            char *d = hd_conf_display_path(dpath, "db");
            hd_conf_err(ld, d, "expected an integer between 0 and 2147483647");
            free(d);
            bad = -EINVAL;
        } else
            t->db = (int) json_integer_value(db);
    }
    if (bad < 0) {
        target_clear(t);
        return -EINVAL;
    }
    t->name = target_name(t);
    return 0;
}

static void
release_sentinel(hd_conf_t *c, const struct key *k)
{
    (void) k;
    if (c->redis_sentinel != NULL)
        target_clear(c->redis_sentinel);
    hd_free(c->redis_sentinel);
}

static int
apply_sentinel(struct load *ld, const struct key *k, json_t *v,
               const char *dpath)
{
    hd_redis_target_t t;

    if (parse_sentinel(ld, v, dpath, &t) < 0)
        return -EINVAL;
    release_sentinel(ld->c, k);
    ld->c->redis_sentinel = hd_malloc(sizeof(t));
    *ld->c->redis_sentinel = t;
    return 0;
}

static bool
differs_sentinel(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    (void) k;
    if (a->redis_sentinel == NULL || b->redis_sentinel == NULL)
        return a->redis_sentinel != b->redis_sentinel;
    return target_differs(a->redis_sentinel, b->redis_sentinel);
}

static void
secrets_sentinel(const hd_conf_t *c, const struct key *k)
{
    (void) k;
    if (c->redis_sentinel != NULL)
        target_secrets(c->redis_sentinel);
}

const struct ktype hd_conf_type_redis_sentinel = {
    apply_sentinel, differs_sentinel, release_sentinel, secrets_sentinel
};

/* One element of redis.shards: {"url": ..., "password_file"?} or
 * {"sentinel": {...}}. */
static int
parse_shard(struct load *ld, json_t *v, const char *dpath, hd_redis_target_t *t)
{
    static const char *const known[] = { "url", "password_file", "sentinel",
                                         NULL };
    json_t                  *url = json_object_get(v, "url");
    json_t                  *sen = json_object_get(v, "sentinel");
    struct redis_url         u;
    const char              *why, *pwf;

    memset(t, 0, sizeof(*t));
    if (!json_is_object(v) || (url == NULL) == (sen == NULL)) {
        hd_conf_err(ld, dpath,
                    "expected {\"url\": \"redis://...\"} or "
                    "{\"sentinel\": {...}}");
        return -EINVAL;
    }
    if (!only_keys(ld, v, dpath, known))
        return -EINVAL;
    if (sen != NULL) {
        char *d = hd_conf_display_path(dpath, "sentinel");
        int   rc = json_object_get(v, "password_file") != NULL
              ? (hd_conf_err(ld, d, "give password_file inside sentinel"),
               -EINVAL)
              : parse_sentinel(ld, sen, d, t);
        free(d);
        return rc;
    }
    char *d = hd_conf_display_path(dpath, "url");
    if (!json_is_string(url)) {
        hd_conf_err(ld, d, "expected string, got %s", hd_conf_jtype(url));
        free(d);
        return -EINVAL;
    }
    if ((why = parse_redis_url(json_string_value(url), &u)) != NULL) {
        hd_conf_err(ld, d, "invalid Redis URL: %s", why);
        free(d);
        return -EINVAL;
    }
    free(d);
    t->host = u.host;
    t->port = u.port;
    t->unix_path = u.unix_path;
    t->user = u.user;
    t->password = u.password;
    t->db = u.db;
    if (opt_str(ld, v, "password_file", dpath, &pwf) < 0)
        goto fail;
    if (pwf != NULL) {
        char *fd = hd_conf_display_path(dpath, "password_file");
        if (t->password != NULL) {
            hd_conf_err(ld, fd, "the URL has a password already");
            free(fd);
            goto fail;
        }
        if ((t->password = read_secret_file(pwf, &why)) == NULL) {
            hd_conf_err(ld, fd, "cannot read the password file: %s", why);
            free(fd);
            goto fail;
        }
        free(fd);
    }
    t->name = target_name(t);
    return 0;
fail:
    target_clear(t);
    return -EINVAL;
}

static void
release_shards(hd_conf_t *c, const struct key *k)
{
    (void) k;
    for (size_t i = 0; i < c->nredis_shard_list; i++)
        target_clear(&c->redis_shard_list[i]);
    hd_free(c->redis_shard_list);
    c->nredis_shard_list = 0;
}

static int
apply_shards(struct load *ld, const struct key *k, json_t *v, const char *dpath)
{
    hd_redis_target_t *ts;
    size_t             n, ok = 0;
    int                bad = 0;

    if (!json_is_array(v) || json_array_size(v) == 0
        || json_array_size(v) > HD_REDIS_SHARDS_MAX) {
        hd_conf_err(ld, dpath, "expected an array of 1 to %d shards",
                    HD_REDIS_SHARDS_MAX);
        return -EINVAL;
    }
    n = json_array_size(v);
    ts = hd_calloc(n, sizeof(*ts));
    for (size_t i = 0; i < n; i++) {
        char *d = hd_asprintf("%s[%zu]", dpath, i);
        if (parse_shard(ld, json_array_get(v, i), d, &ts[ok]) < 0) {
            bad = -EINVAL;
        } else {
            /* the name places channels: two equal names would be one
             * server counted twice */
            for (size_t j = 0; j < ok; j++)
                if (strcmp(ts[j].name, ts[ok].name) == 0) {
                    hd_conf_err(ld, d, "the same server as shard %zu", j);
                    bad = -EINVAL;
                }
            ok++;
        }
        free(d);
    }
    if (bad < 0) {
        for (size_t i = 0; i < ok; i++)
            target_clear(&ts[i]);
        free(ts);
        return -EINVAL;
    }
    release_shards(ld->c, k);
    ld->c->redis_shard_list = ts;
    ld->c->nredis_shard_list = n;
    return 0;
}

static bool
differs_shards(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    (void) k;
    if (a->nredis_shard_list != b->nredis_shard_list)
        return true;
    for (size_t i = 0; i < a->nredis_shard_list; i++)
        if (target_differs(&a->redis_shard_list[i], &b->redis_shard_list[i]))
            return true;
    return false;
}

static void
secrets_shards(const hd_conf_t *c, const struct key *k)
{
    (void) k;
    for (size_t i = 0; i < c->nredis_shard_list; i++)
        target_secrets(&c->redis_shard_list[i]);
}

const struct ktype hd_conf_type_redis_shards = { apply_shards, differs_shards,
                                                 release_shards,
                                                 secrets_shards };

void
hd_conf_redis_targets_free(hd_conf_t *c)
{
    for (size_t i = 0; i < c->nredis_targets; i++)
        target_clear(&c->redis_targets[i]);
    hd_free(c->redis_targets);
    c->nredis_targets = 0;
}

/*
 * After the walk and the defaults: decide which servers the workers use.
 * redis.shards, redis.sentinel and an explicit redis.url exclude each
 * other; redis.password_file goes with redis.url only.
 */
void
hd_conf_redis_resolve(struct load *ld, bool url_given, bool url_ok)
{
    hd_conf_t *c = ld->c;
    int        modes = url_given + (c->redis_sentinel != NULL)
        + (c->nredis_shard_list > 0);

    hd_conf_redis_targets_free(c);
    if (modes > 1) {
        hd_conf_err(ld, "$.redis",
                    "give one of redis.url, redis.sentinel and redis.shards");
        return;
    }
    if (c->redis_password_file != NULL
        && (c->redis_sentinel != NULL || c->nredis_shard_list > 0)) {
        hd_conf_err(ld, "$.redis.password_file",
                    "goes with redis.url only (redis.sentinel and "
                    "redis.shards take their own password_file)");
        return;
    }
    if (c->redis_wait_replicas > 0
        && c->redis_wait_timeout_ms >= c->redis_command_timeout_ms) {
        hd_conf_err(ld, "$.redis.wait_timeout_ms",
                    "must be less than redis.command_timeout_ms (%d)",
                    c->redis_command_timeout_ms);
        return;
    }
    if (c->nredis_shard_list > 0) {
        c->redis_targets = hd_calloc(c->nredis_shard_list,
                                     sizeof(*c->redis_targets));
        for (size_t i = 0; i < c->nredis_shard_list; i++)
            target_copy(&c->redis_targets[i], &c->redis_shard_list[i]);
        c->nredis_targets = c->nredis_shard_list;
        return;
    }
    c->redis_targets = hd_calloc(1, sizeof(*c->redis_targets));
    c->nredis_targets = 1;
    if (c->redis_sentinel != NULL) {
        target_copy(&c->redis_targets[0], c->redis_sentinel);
        return;
    }
    if (!url_ok) {
        hd_conf_redis_targets_free(c);
        return;
    }
    hd_redis_target_t *t = &c->redis_targets[0];
    t->host = dup_or_null(c->redis_host);
    t->port = c->redis_port;
    t->unix_path = dup_or_null(c->redis_unix_path);
    t->user = dup_or_null(c->redis_user);
    /* redis.password_file, when given, was read into redis_password */
    t->password = dup_or_null(c->redis_password);
    t->db = c->redis_db;
    t->name = target_name(t);
}
