/*
 * The one publish path: see hd_publish.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "hd_chname.h"
#include "hd_codes.h"
#include "hd_envelope.h"
#include "hd_jwt.h"
#include "hd_publish.h"
#include "hd_worker_int.h"

static int fail(hd_pub_error_t *e, enum hd_pub_why why, int code,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int
fail(hd_pub_error_t *e, enum hd_pub_why why, int code, const char *fmt, ...)
{
    va_list ap;

    e->why = why;
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return code == HD_ERR_FORBIDDEN ? -EACCES : -EINVAL;
}

int
hd_pub_resolve(const hd_publisher_t *who, const char *name, size_t len,
               bool publish, hd_pub_target_t *t, hd_pub_error_t *e)
{
    const hd_ns_t *ns;
    size_t         nslen;
    bool           has_ns;

    if (!hd_chname_valid(name, len))
        return who->server
            ? fail(e, HD_PUB_INVALID, HD_ERR_BAD_REQUEST,
                   "\"channel\" must be a valid channel name")
            : fail(e, HD_PUB_INVALID, HD_ERR_BAD_REQUEST,
                   "invalid channel name: 1..255 bytes of [A-Za-z0-9_.:@-]");
    nslen = hd_chname_namespace(name, len, &has_ns);
    /* ":x" has an (empty) namespace, which no config can name */
    ns = has_ns && nslen == 0 ? NULL
                              : hd_conf_ns(hd_w.conf, name, has_ns ? nslen : 0);
    if (ns == NULL)
        return who->server
            ? fail(e, HD_PUB_UNKNOWN_NS, HD_ERR_BAD_REQUEST,
                   "unknown namespace")
            : fail(e, HD_PUB_UNKNOWN_NS, HD_ERR_FORBIDDEN,
                   "unknown namespace \"%.*s\"", (int) (has_ns ? nslen : 7),
                   has_ns ? name : "default");
    if (!who->server) {
        if (who->anonymous && !ns->anonymous)
            return fail(e, HD_PUB_ANONYMOUS, HD_ERR_FORBIDDEN,
                        "namespace \"%s\" does not allow anonymous clients",
                        ns->name);
        if (who->claims != NULL
            && !hd_jwt_channel_allowed(who->claims, name, len))
            return fail(e, HD_PUB_NOT_ALLOWED, HD_ERR_FORBIDDEN,
                        "the token does not allow this channel");
        if (publish && !ns->publish)
            return fail(e, HD_PUB_NO_PUBLISH, HD_ERR_FORBIDDEN,
                        "namespace \"%s\" does not allow client publishing",
                        ns->name);
    }
    t->ns = ns;
    t->name = name;
    t->name_len = len;
    return 0;
}

/* The longest valid tenant and channel always make a key that fits: a
 * key that does not fit can only be a bug, never a client's fault. */
_Static_assert(sizeof("herald|") - 1 + HD_TENANT_MAX + 1 + HD_CHNAME_MAX
                       + sizeof("{}:meta")
                   <= HD_KEY_MAX,
               "the longest tenant + channel key fits HD_KEY_MAX");

size_t
hd_pub_key(const hd_publisher_t *who, const hd_pub_target_t *t, char *buf,
           size_t *name_off)
{
    return hd_pubsub_key(who->tenant, t->name, t->name_len, buf, HD_KEY_MAX,
                         name_off);
}

char *
hd_pub_encode(const json_t *data, hd_pub_error_t *e)
{
    char *text;

    if (data == NULL) {
        fail(e, HD_PUB_NO_DATA, HD_ERR_BAD_REQUEST, "\"data\" is required");
        return NULL;
    }
    text = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL)
        fail(e, HD_PUB_BAD_DATA, HD_ERR_BAD_REQUEST,
             "\"data\" cannot be encoded");
    return text;
}

int
hd_pub_idem_key(const json_t *v, const char **key, hd_pub_error_t *e)
{
    const char *s;
    size_t      n;

    *key = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        goto bad;
    s = json_string_value(v);
    n = json_string_length(v);
    if (n == 0 || n > HD_PUB_IDEM_MAX)
        goto bad;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= '0' && s[i] <= '9') || strchr("_.:@/+=-", s[i])))
            goto bad;
    *key = s;
    return 0;
bad:
    return fail(e, HD_PUB_INVALID, HD_ERR_BAD_REQUEST,
                "\"idempotency_key\" must be 1..%d bytes of "
                "[A-Za-z0-9_.:@/+=-]",
                HD_PUB_IDEM_MAX);
}

int
hd_pub_history_args(const json_t *params, const hd_ns_t *ns, unsigned *limit,
                    int64_t *since, const char **epoch, hd_pub_error_t *e)
{
    const json_t *jl = json_object_get(params, "limit");
    const json_t *js = json_object_get(params, "since"), *joff, *jep;
    json_int_t    n = jl == NULL ? 100 : json_integer_value(jl);

    *since = -1;
    *epoch = NULL;
    if (jl != NULL && (!json_is_integer(jl) || n < 1))
        return fail(e, HD_PUB_INVALID, HD_ERR_BAD_REQUEST,
                    "\"limit\" must be a positive integer");
    /* no more is kept: capped, as documented */
    *limit = (unsigned) (n < ns->history_size ? n : ns->history_size);
    if (js == NULL)
        return 0;
    joff = json_object_get(js, "offset");
    jep = json_object_get(js, "epoch");
    if (!json_is_object(js) || !json_is_integer(joff)
        || json_integer_value(joff) < 0 || !json_is_string(jep)
        || !hd_epoch_valid(json_string_value(jep), json_string_length(jep)))
        return fail(e, HD_PUB_INVALID, HD_ERR_BAD_REQUEST,
                    "\"since\" must be {\"offset\": N, \"epoch\": \"...\"}");
    *since = json_integer_value(joff);
    *epoch = json_string_value(jep);
    return 0;
}

int
hd_pub_publish(const hd_publisher_t *who, const hd_pub_target_t *t,
               const char *text, size_t len, const char *idem, hd_pub_cb *cb,
               void *arg)
{
    char   key[HD_KEY_MAX];
    size_t name_off, key_len = hd_pub_key(who, t, key, &name_off);

    if (key_len == 0)
        return -ENAMETOOLONG;
    return hd_pubsub_publish(t->ns, key, key_len, text, len, idem, cb, arg);
}
