/*
 * Inside the configuration loader (conf/ only): the key table's row and
 * value-type shapes, the state of one load, and the error helpers the
 * value types share. hd_conf.c has the table and the walk; the larger
 * value types live in files of their own (hd_conf_redis.c,
 * hd_conf_ns.c).
 */
#ifndef HD_CONF_INT_H
#define HD_CONF_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "hd_conf.h"

/*
 * What a reload must do when a key changes. Every row must pick one (a row
 * left at RELOAD_UNSET fails the unit tests), so a new key cannot silently
 * escape hd_conf_worker_changed().
 */
enum reload {
    RELOAD_UNSET = 0,
    RELOAD_MASTER, /* the master applies it in place */
    RELOAD_WORKER, /* workers read it at start: replace workers */
    RELOAD_LISTEN, /* listen sockets reopened and workers replaced */
};

#define F_SECRET 0x1u /* never echoed; registered with the logger */

struct key;
struct load;

/*
 * A kind of value. apply() validates v and stores it into ld->c (freeing
 * whatever the field held), or reports errors and returns -EINVAL. differs()
 * compares the field(s) of two loaded configs. release() frees what apply()
 * allocated. secrets() registers secret values with the logger.
 */
struct ktype {
    int (*apply)(struct load *ld, const struct key *k, json_t *v,
                 const char *dpath);
    bool (*differs)(const hd_conf_t *a, const hd_conf_t *b,
                    const struct key *k);
    void (*release)(hd_conf_t *c, const struct key *k);
    void (*secrets)(const hd_conf_t *c, const struct key *k);
};

/*
 * One row per leaf key. path is dotted ("listen.port"); every proper prefix
 * of a path is an object section. min/max bound integers, or the byte
 * length of strings. def is the default as JSON text, run through the same
 * apply() as a value from the file (so a bad default fails the tests);
 * NULL means "optional, no default" (the field stays NULL).
 */
struct key {
    const char         *path;
    const struct ktype *type;
    long long           min, max;
    const char         *def;
    size_t              off;
    enum reload         reload;
    unsigned            flags;
    const char *const  *names;           /* enum values, index = stored int */
    const char *(*check)(const char *s); /* extra string check */
};

struct load {
    const char       *name; /* file name for messages */
    hd_conf_t        *c;
    hd_conf_errors_t *errs; /* may be NULL: count only */
    size_t            nerr;
    unsigned char    *state; /* per key: ST_* (hd_conf.c) */
};

#define FIELD(c, k, T) ((T *) (void *) ((char *) (c) + (k)->off))
#define CFIELD(c, k, T) \
    ((const T *) (const void *) ((const char *) (c) + (k)->off))

/* Report "NAME: DPATH: message" (counted; kept when ld->errs is set). */
void hd_conf_err(struct load *ld, const char *dpath, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A user-supplied string quoted for an error message (escaped, cut
 * short); never call it on a secret. Free the result. */
char *hd_conf_echo(const char *s);
/* "object", "string", ...: the JSON type of v, for messages. */
const char *hd_conf_jtype(const json_t *v);
/* Two optional strings differ (NULL equals only NULL). */
bool hd_conf_str_differs(const char *a, const char *b);
/* "$.parent.key" for messages; free the result. */
char *hd_conf_display_path(const char *dparent, const char *key);

/* secrets() of a type that holds none */
void hd_conf_secrets_none(const hd_conf_t *c, const struct key *k);

/* auth and secrets (hd_conf_auth.c) */
extern const struct ktype hd_conf_type_algs;
extern const struct ktype hd_conf_type_pubkeys;
extern const struct ktype hd_conf_type_headers;
int hd_conf_read_small(const char *path, char **out, size_t *len, bool *others);
void  hd_conf_secret_file(struct load *ld, const struct key *key,
                          const struct key *file_key, bool both_set);
char *hd_conf_rel_path(const struct load *ld, const char *path);
void  hd_conf_dev_secret_check(struct load *ld, const struct key *k);
void  hd_conf_warn(hd_conf_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* the value types with files of their own */
extern const struct ktype hd_conf_type_redis;          /* hd_conf_redis.c */
extern const struct ktype hd_conf_type_namespaces;     /* hd_conf_ns.c */
extern const struct ktype hd_conf_type_origins;        /* hd_conf_ns.c */
extern const struct ktype hd_conf_type_listen;         /* hd_conf_listen.c */
extern const struct ktype hd_conf_type_trusted;        /* hd_conf_listen.c */
extern const struct ktype hd_conf_type_redis_sentinel; /* hd_conf_redis.c */
extern const struct ktype hd_conf_type_redis_shards;   /* hd_conf_redis.c */

/* hd_conf_redis.c: build c->redis_targets once the walk is done (url_given:
 * redis.url was in the file; url_ok: it was valid) */
void hd_conf_redis_resolve(struct load *ld, bool url_given, bool url_ok);
void hd_conf_redis_targets_free(hd_conf_t *c);

/* NULL when s is an IPv4 or IPv6 literal, else why not. */
const char *hd_conf_check_ip(const char *s);
/* Edit distance of a and b (SIZE_MAX past 32 bytes), for "did you mean". */
size_t hd_conf_distance(const char *a, size_t la, const char *b, size_t lb);

#endif
