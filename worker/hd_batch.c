/*
 * POST /api/batch: many publications in one request, one result each, in
 * order (docs/api.md). For high-rate backends: one HTTP round trip and one
 * body parse carry up to BATCH_MAX publications, which go to Redis
 * back to back (pipelined on the command connection). Each goes through
 * the one publish path (hd_publish.h) on its own: a bad one gets its own
 * error and does not stop the others.
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "hd_alloc.h"
#include "hd_api.h"
#include "hd_chname.h"
#include "hd_codes.h"
#include "hd_publish.h"
#include "hd_pubsub.h"

#define BATCH_MAX 1000

typedef struct batch {
    hd_api_call_t *call;
    json_t        *results; /* one per publication, null until known */
    size_t         n, done;
} batch_t;

typedef struct item {
    batch_t *b;
    size_t   i;
} item_t;

static void
item_error(batch_t *b, size_t i, int code, const char *msg)
{
    json_array_set_new(
        b->results, i,
        json_pack("{s:{s:i, s:s}}", "error", "code", code, "message", msg));
}

static void
finish_one(batch_t *b)
{
    if (++b->done < b->n)
        return;
    hd_api_answer(b->call, 200,
                  json_pack("{s:{s:o}}", "result", "results", b->results));
    hd_free(b);
}

static void
published(int err, uint64_t offset, const char *epoch, void *arg)
{
    item_t  *it = arg;
    batch_t *b = it->b;
    (void) epoch;

    if (err != 0) {
        char msg[256];
        if (hd_pubsub_error() != NULL)
            snprintf(msg, sizeof(msg),
                     "redis refused the publish: %.180s; not published",
                     hd_pubsub_error());
        else
            snprintf(msg, sizeof(msg), "%s",
                     err == HD_ERR_UNAVAILABLE
                         ? "redis unavailable, not published"
                         : "publish failed");
        item_error(b, it->i, err, msg);
    } else if (hd_pubsub_duplicate()) {
        json_array_set_new(b->results, it->i,
                           json_pack("{s:I, s:b}", "offset",
                                     (json_int_t) offset, "duplicate", 1));
    } else {
        json_array_set_new(b->results, it->i,
                           json_pack("{s:I}", "offset", (json_int_t) offset));
    }
    hd_free(it);
    finish_one(b);
}

/* Validate and send publication i; its result comes now or later. */
static void
publish_one(batch_t *b, size_t i, json_t *p, const char *tenant)
{
    hd_publisher_t  who = { .server = true, .tenant = tenant };
    hd_pub_target_t t;
    hd_pub_error_t  e = { 0 };
    json_t         *jc = json_object_get(p, "channel"), *jt;
    const char     *idem;
    char           *text;
    item_t         *it;

    if (!json_is_object(p)) {
        item_error(b, i, HD_ERR_BAD_REQUEST, "a publication must be an object");
        goto done;
    }
    jt = json_object_get(p, "tenant");
    if (jt != NULL) {
        if (!json_is_string(jt)
            || !hd_tenant_valid(json_string_value(jt),
                                json_string_length(jt))) {
            item_error(b, i, HD_ERR_BAD_REQUEST,
                       "\"tenant\" must match [A-Za-z0-9_.-]{1,64}");
            goto done;
        }
        who.tenant = json_string_value(jt);
    }
    if (!json_is_string(jc)
        || hd_pub_resolve(&who, json_string_value(jc), json_string_length(jc),
                          true, &t, &e)
            < 0) {
        item_error(b, i, HD_ERR_BAD_REQUEST,
                   jc == NULL || !json_is_string(jc) || e.why == HD_PUB_INVALID
                       ? "\"channel\" must be a valid channel name"
                       : e.msg);
        goto done;
    }
    if (hd_pub_idem_key(json_object_get(p, "idempotency_key"), &idem, &e) < 0) {
        item_error(b, i, e.code, e.msg);
        goto done;
    }
    text = hd_pub_encode(json_object_get(p, "data"), &e);
    if (text == NULL) {
        item_error(b, i, e.code, e.msg);
        goto done;
    }
    it = hd_malloc(sizeof(*it));
    it->b = b;
    it->i = i;
    if (hd_pub_publish(&who, &t, text, strlen(text), idem, published, it) < 0) {
        hd_free(it);
        item_error(b, i, HD_ERR_UNAVAILABLE,
                   "redis unavailable, not published");
        hd_free(text);
        goto done;
    }
    hd_free(text);
    return; /* published() finishes it */
done:
    finish_one(b);
}

void
hd_api_batch(hd_api_call_t *call, json_t *body, const char *tenant)
{
    json_t  *pubs = json_object_get(body, "publications");
    size_t   n = json_array_size(pubs);
    batch_t *b;

    if (!json_is_array(pubs) || n == 0 || n > BATCH_MAX) {
        hd_api_fail(call, HD_ERR_BAD_REQUEST,
                    "\"publications\" must be an array of 1..1000 "
                    "publications");
        return;
    }
    b = hd_calloc(1, sizeof(*b));
    b->call = call;
    b->n = n;
    b->results = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(b->results, json_null());
    /* refused ones finish at once, published ones from the loop later:
     * b is freed by finish_one() at the last result, never before the
     * last iteration */
    for (size_t i = 0; i < n; i++)
        publish_one(b, i, json_array_get(pubs, i), tenant);
}
