/*
 * libFuzzer target for the HTTP API's body handling (worker/hd_api.c):
 * the body arrives in chunks of any size (hd_api_body(), bounded by
 * api.max_body_bytes), then is parsed as publish, broadcast or another
 * route's body (parse_body(), parse_targets()) exactly as
 * hd_api_body_done() does, short of publishing and answering.
 * Oracles: the buffer never exceeds the limit; a body that parses yields
 * 1..1000 resolved channels and data that is valid JSON text; nothing
 * leaks (the sanitizer build replays the seeds).
 * Input: byte 0 = route (bits 0-1) and chunk size (bits 2-7, 1..64).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../worker/hd_api.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char FUZZ_CONF[] =
    "{\"auth\": {\"allow_anonymous\": true}, \"api\": {\"key\": \"fuzz-key-0123456789abcdef0123456789\","
    " \"max_body_bytes\": 4096},"
    " \"namespaces\": {\"default\": {\"publish\": true},"
    " \"chat\": {\"publish\": true}, \"ro\": {}}}";

static void
conf_once(void)
{
    static hd_conf_t *conf;
    hd_conf_errors_t  errs = { 0 };

    if (conf != NULL)
        return;
    if (hd_conf_load_string("fuzz", FUZZ_CONF, sizeof(FUZZ_CONF) - 1, &conf,
                            &errs)
        < 0)
        abort();
    hd_w.conf = conf;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum api_route route_of[4] = { R_PUBLISH, R_BROADCAST, R_OTHER,
                                                R_NONE };
    hd_conn_t                   c;
    api_call_t                  a = { 0 };
    hd_pub_error_t              e = { 0 };

    if (size < 1)
        return 0;
    conf_once();
    memset(&c, 0, sizeof(c));
    hd_http_t *h = http_state(&c, NULL);
    h->route = route_of[data[0] & 3];
    h->ri = 0;
    size_t chunk = 1 + (data[0] >> 2);
    for (size_t off = 1; off < size; off += chunk)
        (void) hd_api_body(NULL, &c, data + off,
                           size - off < chunk ? size - off : chunk);
    if (h->body_len > (size_t) hd_w.conf->api_max_body_bytes
        || h->body_len > h->body_cap)
        __builtin_trap();
    if (h->too_big && (h->body != NULL || h->body_len != 0))
        __builtin_trap();
    if (h->route != R_NONE && !h->too_big && h->body_len != size - 1)
        __builtin_trap(); /* every byte kept, in order */

    if (h->route != R_NONE && !h->too_big && parse_body(h, &a, &e) == 0
        && h->route != R_OTHER && parse_targets(h, &a, &e) == 0) {
        if (a.n < 1 || a.n > BROADCAST_MAX || a.text == NULL)
            __builtin_trap();
        for (size_t i = 0; i < a.n; i++)
            if (a.targets[i].ns == NULL || a.targets[i].name_len == 0)
                __builtin_trap();
        json_t *back = json_loads(a.text, JSON_DECODE_ANY, NULL);
        if (back == NULL)
            __builtin_trap();
        json_decref(back);
    } else if (e.code != 0 && e.code != HD_ERR_BAD_REQUEST
               && e.msg[0] == '\0') {
        __builtin_trap(); /* every refusal says why */
    }
    free(a.text);
    free(a.targets);
    json_decref(a.chans);
    json_decref(a.root);
    http_reset(&c);
    return 0;
}
