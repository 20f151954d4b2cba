/*
 * Configuration value type "listen": where WebSocket clients connect.
 * Either one object (the original form, {"address", "port", "backlog"})
 * or an array of such objects, one per listening address; each also takes
 * "ipv6_only" and "proxy_protocol". Every listener gets its own
 * SO_REUSEPORT socket per worker slot (master/hd_supervisor.c).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hd_alloc.h"
#include "hd_conf.h"
#include "hd_conf_int.h"

static const struct lfield {
    const char *name;
    enum {
        LF_STR,
        LF_INT,
        LF_BOOL
    } kind;
    long long min, max;
    size_t    off;
} F[] = {
    { "address", LF_STR, 1, 64, offsetof(hd_listen_t, address) },
    { "port", LF_INT, 1, 65535, offsetof(hd_listen_t, port) },
    { "backlog", LF_INT, 1, 65535, offsetof(hd_listen_t, backlog) },
    { "ipv6_only", LF_BOOL, 0, 0, offsetof(hd_listen_t, ipv6_only) },
    { "proxy_protocol", LF_BOOL, 0, 0, offsetof(hd_listen_t, proxy_protocol) },
};
#define NF (sizeof(F) / sizeof(F[0]))

#define LFIELD(l, f, T) ((T *) (void *) ((char *) (l) + (f)->off))

static void
free_listens(hd_listen_t *l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i].address);
    free(l);
}

/* store the field's value: 0, or -EINVAL (reported) */
static int
apply_field(struct load *ld, hd_listen_t *l, const struct lfield *f, json_t *v,
            const char *dpath)
{
    const char *why;

    switch (f->kind) {
    case LF_STR:
        if (!json_is_string(v)) {
            hd_conf_err(ld, dpath, "expected string, got %s", hd_conf_jtype(v));
            return -EINVAL;
        }
        if (json_string_length(v) < (size_t) f->min) {
            hd_conf_err(ld, dpath, "must not be empty");
            return -EINVAL;
        }
        if (json_string_length(v) > (size_t) f->max) {
            hd_conf_err(ld, dpath, "must be at most %lld bytes long", f->max);
            return -EINVAL;
        }
        if ((why = hd_conf_check_ip(json_string_value(v))) != NULL) {
            char *q = hd_conf_echo(json_string_value(v));
            hd_conf_err(ld, dpath, "%s, got %s", why, q);
            free(q);
            return -EINVAL;
        }
        free(*LFIELD(l, f, char *));
        *LFIELD(l, f, char *) = hd_strdup(json_string_value(v));
        return 0;
    case LF_INT:
        if (!json_is_integer(v)) {
            hd_conf_err(ld, dpath, "expected integer, got %s",
                        hd_conf_jtype(v));
            return -EINVAL;
        }
        if (json_integer_value(v) < f->min || json_integer_value(v) > f->max) {
            hd_conf_err(ld, dpath, "must be between %lld and %lld, got %lld",
                        f->min, f->max, (long long) json_integer_value(v));
            return -EINVAL;
        }
        *LFIELD(l, f, int) = (int) json_integer_value(v);
        return 0;
    case LF_BOOL:
        if (!json_is_boolean(v)) {
            hd_conf_err(ld, dpath, "expected boolean, got %s",
                        hd_conf_jtype(v));
            return -EINVAL;
        }
        *LFIELD(l, f, bool) = json_is_true(v);
        return 0;
    }
    return -EINVAL;
}

/* One listener object; every bad field is reported. */
static int
apply_one(struct load *ld, hd_listen_t *l, json_t *obj, const char *dpath)
{
    const char *name;
    json_t     *v;
    int         rc = 0;

    l->address = hd_strdup("0.0.0.0");
    l->port = 8080;
    l->backlog = 4096;
    if (!json_is_object(obj)) {
        hd_conf_err(ld, dpath, "expected object, got %s", hd_conf_jtype(obj));
        return -EINVAL;
    }
    json_object_foreach(obj, name, v)
    {
        char  *fp = hd_conf_display_path(dpath, name);
        size_t i, best = 3, bi = NF;

        for (i = 0; i < NF; i++)
            if (strcmp(F[i].name, name) == 0)
                break;
        if (i < NF) {
            if (apply_field(ld, l, &F[i], v, fp) < 0)
                rc = -EINVAL;
        } else {
            for (size_t k = 0; k < NF; k++) {
                size_t d = hd_conf_distance(name, strlen(name), F[k].name,
                                            strlen(F[k].name));
                if (d < best) {
                    best = d;
                    bi = k;
                }
            }
            if (bi < NF)
                hd_conf_err(ld, fp, "unknown key (did you mean \"%s\"?)",
                            F[bi].name);
            else
                hd_conf_err(ld, fp, "unknown key");
            rc = -EINVAL;
        }
        free(fp);
    }
    return rc;
}

static int
apply_listen(struct load *ld, const struct key *k, json_t *v, const char *dpath)
{
    hd_listen_t *l = NULL;
    size_t       n = 0, i;
    int          rc = 0;

    if (json_is_object(v)) {
        n = 1;
        l = hd_calloc(1, sizeof(*l));
        rc = apply_one(ld, &l[0], v, dpath);
    } else if (json_is_array(v)) {
        n = json_array_size(v);
        if (n < 1 || n > (size_t) k->max) {
            hd_conf_err(ld, dpath, "must hold 1 to %lld listeners, got %zu",
                        k->max, n);
            return -EINVAL;
        }
        l = hd_calloc(n, sizeof(*l));
        for (i = 0; i < n; i++) {
            char *ip = hd_asprintf("%s[%zu]", dpath, i);
            if (apply_one(ld, &l[i], json_array_get(v, i), ip) < 0)
                rc = -EINVAL;
            free(ip);
        }
    } else {
        hd_conf_err(ld, dpath, "expected object or array of objects, got %s",
                    hd_conf_jtype(v));
        return -EINVAL;
    }
    /* two sockets on one address and port would split one listener's
     * connections between two groups (and ipv6_only could differ) */
    for (i = 0; rc == 0 && i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (l[i].port == l[j].port
                && strcmp(l[i].address, l[j].address) == 0) {
                hd_conf_err(ld, dpath,
                            "listeners %zu and %zu both use %s port %d", j, i,
                            l[i].address, l[i].port);
                rc = -EINVAL;
                break;
            }
    if (rc < 0) {
        free_listens(l, n);
        return -EINVAL;
    }
    free_listens(ld->c->listens, ld->c->nlistens);
    ld->c->listens = l;
    ld->c->nlistens = n;
    return 0;
}

static bool
differs_listen(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    (void) k;
    if (a->nlistens != b->nlistens)
        return true;
    for (size_t i = 0; i < a->nlistens; i++) {
        const hd_listen_t *x = &a->listens[i], *y = &b->listens[i];
        if (hd_conf_str_differs(x->address, y->address) || x->port != y->port
            || x->backlog != y->backlog || x->ipv6_only != y->ipv6_only
            || x->proxy_protocol != y->proxy_protocol)
            return true;
    }
    return false;
}

static void
release_listen(hd_conf_t *c, const struct key *k)
{
    (void) k;
    free_listens(c->listens, c->nlistens);
    c->listens = NULL;
    c->nlistens = 0;
}

const struct ktype hd_conf_type_listen = { apply_listen, differs_listen,
                                           release_listen,
                                           hd_conf_secrets_none };

/* ---- security.trusted_proxies: CIDR networks --------------------------- */

/* "10.0.0.0/8", "2001:db8::/32", or an address alone (/32, /128). NULL,
 * or why not. */
static const char *
parse_cidr(const char *s, hd_cidr_t *out)
{
    char        a[64];
    const char *slash = strchr(s, '/');
    size_t      n = slash ? (size_t) (slash - s) : strlen(s);
    long        bits;
    unsigned    max;

    memset(out, 0, sizeof(*out));
    if (n == 0 || n >= sizeof(a))
        return "must be an address or a network (\"10.0.0.0/8\", "
               "\"fd00::/8\")";
    memcpy(a, s, n);
    a[n] = '\0';
    if (inet_pton(AF_INET, a, out->addr) == 1) {
        out->v4 = true;
        max = 32;
    } else if (inet_pton(AF_INET6, a, out->addr) == 1) {
        max = 128;
    } else {
        return "must be an address or a network (\"10.0.0.0/8\", "
               "\"fd00::/8\")";
    }
    bits = max;
    if (slash != NULL) {
        char *end;
        if (slash[1] < '0' || slash[1] > '9')
            return "bad prefix length";
        bits = strtol(slash + 1, &end, 10);
        if (*end != '\0' || bits < 0 || bits > (long) max)
            return "bad prefix length";
    }
    out->bits = (uint8_t) bits;
    for (unsigned i = (unsigned) bits; i < max; i++)
        if (out->addr[i / 8] & (0x80u >> (i % 8)))
            return "has address bits set past the prefix length";
    return NULL;
}

static int
apply_trusted(struct load *ld, const struct key *k, json_t *v,
              const char *dpath)
{
    hd_cidr_t *l;
    size_t     n, i;
    int        rc = 0;

    if (!json_is_array(v)) {
        hd_conf_err(ld, dpath, "expected array of strings, got %s",
                    hd_conf_jtype(v));
        return -EINVAL;
    }
    n = json_array_size(v);
    if (n > (size_t) k->max) {
        hd_conf_err(ld, dpath, "must hold at most %lld networks, got %zu",
                    k->max, n);
        return -EINVAL;
    }
    l = hd_calloc(n ? n : 1, sizeof(*l));
    for (i = 0; i < n; i++) {
        json_t     *e = json_array_get(v, i);
        char       *ep = hd_asprintf("%s[%zu]", dpath, i);
        const char *why;

        if (!json_is_string(e)) {
            hd_conf_err(ld, ep, "expected string, got %s", hd_conf_jtype(e));
            rc = -EINVAL;
        } else if ((why = parse_cidr(json_string_value(e), &l[i])) != NULL) {
            char *q = hd_conf_echo(json_string_value(e));
            hd_conf_err(ld, ep, "%s, got %s", why, q);
            free(q);
            rc = -EINVAL;
        }
        free(ep);
    }
    if (rc < 0) {
        free(l);
        return -EINVAL;
    }
    free(ld->c->trusted_proxies);
    ld->c->trusted_proxies = l;
    ld->c->ntrusted_proxies = n;
    return 0;
}

static bool
differs_trusted(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    (void) k;
    return a->ntrusted_proxies != b->ntrusted_proxies
        || (a->ntrusted_proxies > 0
            && memcmp(a->trusted_proxies, b->trusted_proxies,
                      a->ntrusted_proxies * sizeof(hd_cidr_t))
                != 0);
}

static void
release_trusted(hd_conf_t *c, const struct key *k)
{
    (void) k;
    free(c->trusted_proxies);
    c->trusted_proxies = NULL;
    c->ntrusted_proxies = 0;
}

const struct ktype hd_conf_type_trusted = { apply_trusted, differs_trusted,
                                            release_trusted,
                                            hd_conf_secrets_none };

static bool
cidr_match(const hd_cidr_t *n, const uint8_t *a, bool v4)
{
    unsigned full = n->bits / 8, rest = n->bits % 8;

    if (n->v4 != v4)
        return false;
    if (memcmp(n->addr, a, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t) (0xff00u >> rest);
    return (n->addr[full] & mask) == (a[full] & mask);
}

bool
hd_conf_trusted_proxy(const hd_conf_t *c, const struct sockaddr *sa)
{
    const uint8_t *a;
    bool           v4;

    if (sa->sa_family == AF_INET) {
        a = (const uint8_t *) &((const struct sockaddr_in *) sa)->sin_addr;
        v4 = true;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 =
            &((const struct sockaddr_in6 *) sa)->sin6_addr;
        v4 = IN6_IS_ADDR_V4MAPPED(a6); /* an IPv4 peer on a dual-stack "::" */
        a = v4 ? a6->s6_addr + 12 : a6->s6_addr;
    } else {
        return false;
    }
    for (size_t i = 0; i < c->ntrusted_proxies; i++)
        if (cidr_match(&c->trusted_proxies[i], a, v4))
            return true;
    return false;
}
