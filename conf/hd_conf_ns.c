/*
 * Configuration value types: "namespaces" (per-namespace channel options,
 * looked up by hd_conf_ns()) and "security.allowed_origins" (the Origin
 * allow-list, matched by hd_conf_origin_allowed()).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hd_alloc.h"
#include "hd_conf.h"
#include "hd_conf_int.h"

/* ---- namespaces ---------------------------------------------------------- */

#define NS_NAME_MAX 64

static const char *
check_ns_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > NS_NAME_MAX)
        return "a namespace name must be 1..64 bytes";
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')
              || (*s >= '0' && *s <= '9') || strchr("_.@-", *s) != NULL))
            return "a namespace name may only hold [A-Za-z0-9_.@-]";
    return NULL;
}

static void
free_ns_array(hd_ns_t *ns, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ns[i].name);
    free(ns);
}

static void
release_namespaces(hd_conf_t *c, const struct key *k)
{
    (void) k;
    free_ns_array(c->namespaces, c->nnamespaces);
    c->namespaces = NULL;
    c->nnamespaces = 0;
}

static int
ns_cmp(const void *a, const void *b)
{
    return strcmp(((const hd_ns_t *) a)->name, ((const hd_ns_t *) b)->name);
}

/* One namespace's options object; every bad field is reported. */
static int
apply_one_ns(struct load *ld, hd_ns_t *ns, json_t *opts, const char *dpath)
{
    static const struct {
        const char *name;
        bool        is_bool;
        long long   max;
    } F[] = {
        { "publish", true, 0 },
        { "anonymous", true, 0 },
        { "history_size", false, 1000000 },
        { "history_ttl_s", false, 31536000 },
        { "presence", true, 0 },
        { "join_leave", true, 0 },
        { "subscribe_token", true, 0 },
        { "subscribe_proxy", true, 0 },
    };
    const char *fname;
    json_t     *v;
    int         rc = 0;

    if (!json_is_object(opts)) {
        hd_conf_err(ld, dpath, "expected object, got %s", hd_conf_jtype(opts));
        return -EINVAL;
    }
    json_object_foreach(opts, fname, v)
    {
        char  *fp = hd_conf_display_path(dpath, fname);
        size_t i;

        for (i = 0; i < sizeof(F) / sizeof(F[0]); i++)
            if (strcmp(F[i].name, fname) == 0)
                break;
        if (i == sizeof(F) / sizeof(F[0])) {
            hd_conf_err(ld, fp,
                        "unknown key (expected publish, anonymous, "
                        "history_size, history_ttl_s, presence, "
                        "join_leave, subscribe_token or subscribe_proxy)");
            rc = -EINVAL;
        } else if (F[i].is_bool) {
            if (!json_is_boolean(v)) {
                hd_conf_err(ld, fp, "expected boolean, got %s",
                            hd_conf_jtype(v));
                rc = -EINVAL;
            } else if (i == 0) {
                ns->publish = json_is_true(v);
            } else if (i == 1) {
                ns->anonymous = json_is_true(v);
            } else if (i == 4) {
                ns->presence = json_is_true(v);
            } else if (i == 5) {
                ns->join_leave = json_is_true(v);
            } else if (i == 6) {
                ns->subscribe_token = json_is_true(v);
            } else {
                ns->subscribe_proxy = json_is_true(v);
            }
        } else {
            if (!json_is_integer(v)) {
                hd_conf_err(ld, fp, "expected integer, got %s",
                            hd_conf_jtype(v));
                rc = -EINVAL;
            } else if (json_integer_value(v) < 0
                       || json_integer_value(v) > F[i].max) {
                hd_conf_err(ld, fp, "must be between 0 and %lld, got %lld",
                            F[i].max, (long long) json_integer_value(v));
                rc = -EINVAL;
            } else if (i == 2) {
                ns->history_size = (int) json_integer_value(v);
            } else {
                ns->history_ttl_s = (int) json_integer_value(v);
            }
        }
        free(fp);
    }
    if (rc == 0 && (ns->history_size > 0) != (ns->history_ttl_s > 0)) {
        hd_conf_err(ld, dpath,
                    "history_size and history_ttl_s must both be set "
                    "(history on) or both be 0 (history off)");
        rc = -EINVAL;
    }
    return rc;
}

static int
apply_namespaces(struct load *ld, const struct key *k, json_t *v,
                 const char *dpath)
{
    const char *name, *why;
    json_t     *opts;
    hd_ns_t    *arr;
    size_t      n = 0;
    int         rc = 0;

    if (!json_is_object(v)) {
        hd_conf_err(ld, dpath, "expected object, got %s", hd_conf_jtype(v));
        return -EINVAL;
    }
    arr = hd_calloc(json_object_size(v) + 1, sizeof(*arr));
    json_object_foreach(v, name, opts)
    {
        char *np = hd_conf_display_path(dpath, name);
        if ((why = check_ns_name(name)) != NULL) {
            char *q = hd_conf_echo(name);
            hd_conf_err(ld, np, "%s, got %s", why, q);
            free(q);
            rc = -EINVAL;
        } else {
            arr[n].name = hd_strdup(name);
            if (apply_one_ns(ld, &arr[n], opts, np) < 0)
                rc = -EINVAL;
            n++;
        }
        free(np);
    }
    if (rc < 0) {
        free_ns_array(arr, n);
        return -EINVAL;
    }
    qsort(arr, n, sizeof(*arr), ns_cmp);
    release_namespaces(ld->c, k);
    ld->c->namespaces = arr;
    ld->c->nnamespaces = n;
    return 0;
}

static bool
differs_namespaces(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    (void) k;
    if (a->nnamespaces != b->nnamespaces)
        return true;
    for (size_t i = 0; i < a->nnamespaces; i++) {
        const hd_ns_t *x = &a->namespaces[i], *y = &b->namespaces[i];
        if (strcmp(x->name, y->name) != 0 || x->publish != y->publish
            || x->anonymous != y->anonymous
            || x->history_size != y->history_size
            || x->history_ttl_s != y->history_ttl_s
            || x->presence != y->presence || x->join_leave != y->join_leave
            || x->subscribe_token != y->subscribe_token
            || x->subscribe_proxy != y->subscribe_proxy)
            return true;
    }
    return false;
}

const hd_ns_t *
hd_conf_ns(const hd_conf_t *c, const char *ns, size_t len)
{
    size_t lo = 0, hi = c->nnamespaces;

    if (len == 0) {
        ns = "default";
        len = 7;
    }
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int    r = strncmp(c->namespaces[mid].name, ns, len);
        if (r == 0 && c->namespaces[mid].name[len] != '\0')
            r = 1;
        if (r == 0)
            return &c->namespaces[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- security.allowed_origins -------------------------------------------- */

/*
 * An origin pattern: scheme://host[:port], where host may start with "*."
 * (any subdomain, not the bare domain). Lower-case is applied on load.
 */
static const char *
check_origin(const char *s)
{
    const char *h = strstr(s, "://");

    if (h == NULL || h == s)
        return "an origin must look like https://example.com or "
               "https://*.example.com";
    for (const char *p = s; p < h; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
            return "bad scheme in origin";
    h += 3;
    if (*h == '\0')
        return "an origin needs a host";
    if (strchr(h, '/') != NULL)
        return "an origin has no path (https://example.com, not "
               "https://example.com/)";
    if (strchr(h, '*') != NULL
        && (strncmp(h, "*.", 2) != 0 || strchr(h + 2, '*') != NULL))
        return "a wildcard is only allowed as \"*.\" at the start of the host";
    return NULL;
}

static void
release_origins(hd_conf_t *c, const struct key *k)
{
    (void) k;
    for (size_t i = 0; i < c->nallowed_origins; i++)
        free(c->allowed_origins[i]);
    free(c->allowed_origins);
    c->allowed_origins = NULL;
    c->nallowed_origins = 0;
}

static int
apply_origins(struct load *ld, const struct key *k, json_t *v,
              const char *dpath)
{
    size_t i, n;
    char **arr;
    int    rc = 0;

    if (!json_is_array(v)) {
        hd_conf_err(ld, dpath, "expected array of strings, got %s",
                    hd_conf_jtype(v));
        return -EINVAL;
    }
    n = json_array_size(v);
    if ((long long) n > k->max) {
        hd_conf_err(ld, dpath, "at most %lld origins", k->max);
        return -EINVAL;
    }
    arr = hd_calloc(n + 1, sizeof(char *));
    for (i = 0; i < n; i++) {
        json_t     *e = json_array_get(v, i);
        char        ip[32];
        const char *why;
        snprintf(ip, sizeof(ip), "[%zu]", i);
        char *ep = hd_asprintf("%s%s", dpath, ip);
        if (!json_is_string(e)) {
            hd_conf_err(ld, ep, "expected string, got %s", hd_conf_jtype(e));
            rc = -EINVAL;
        } else if ((why = check_origin(json_string_value(e))) != NULL) {
            char *q = hd_conf_echo(json_string_value(e));
            hd_conf_err(ld, ep, "%s, got %s", why, q);
            free(q);
            rc = -EINVAL;
        } else {
            arr[i] = hd_strdup(json_string_value(e));
            for (char *p = arr[i]; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                    *p = (char) (*p - 'A' + 'a');
        }
        free(ep);
    }
    if (rc < 0) {
        for (i = 0; i < n; i++)
            free(arr[i]);
        free(arr);
        return -EINVAL;
    }
    release_origins(ld->c, k);
    ld->c->allowed_origins = arr;
    ld->c->nallowed_origins = n;
    return 0;
}

static bool
differs_origins(const hd_conf_t *a, const hd_conf_t *b, const struct key *k)
{
    (void) k;
    if (a->nallowed_origins != b->nallowed_origins)
        return true;
    for (size_t i = 0; i < a->nallowed_origins; i++)
        if (strcmp(a->allowed_origins[i], b->allowed_origins[i]) != 0)
            return true;
    return false;
}

bool
hd_conf_origin_allowed(const hd_conf_t *c, const char *origin)
{
    char        lo[512];
    size_t      n = strlen(origin);
    const char *h;

    if (c->nallowed_origins == 0)
        return true;
    if (n >= sizeof(lo))
        return false;
    for (size_t i = 0; i <= n; i++)
        lo[i] = (origin[i] >= 'A' && origin[i] <= 'Z')
            ? (char) (origin[i] - 'A' + 'a')
            : origin[i];
    for (size_t i = 0; i < c->nallowed_origins; i++) {
        const char *pat = c->allowed_origins[i];
        const char *ps = strstr(pat, "://");
        if (strcmp(pat, lo) == 0)
            return true;
        if (ps == NULL || strncmp(ps + 3, "*.", 2) != 0)
            continue;
        /* same scheme, and the host ends in ".domain[:port]" with at least
         * one label before it */
        size_t sl = (size_t) (ps + 3 - pat);
        if (strncmp(pat, lo, sl) != 0)
            continue;
        h = lo + sl;
        const char *suffix = ps + 4; /* ".example.com[:port]" */
        size_t      hl = strlen(h), sfl = strlen(suffix);
        if (hl > sfl && strcmp(h + hl - sfl, suffix) == 0
            && strchr(h, '/') == NULL)
            return true;
    }
    return false;
}

const struct ktype hd_conf_type_namespaces = { apply_namespaces,
                                               differs_namespaces,
                                               release_namespaces,
                                               hd_conf_secrets_none };
const struct ktype hd_conf_type_origins = { apply_origins, differs_origins,
                                            release_origins,
                                            hd_conf_secrets_none };
