/*
 * libFuzzer target for the connect/subscribe proxy answers
 * (common/hd_proxyreply.c): the backend decides, but its bytes are
 * untrusted input. Invariants: a verdict is one of three; an allowed
 * connect has valid claims; a refusal a 4xx code and a printable message;
 * anything else leaves the claims empty.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hd_chname.h"
#include "hd_proxyreply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)              \
    do {                      \
        if (!(x))             \
            __builtin_trap(); \
    } while (0)

static void
check_msg(int code, const char *msg)
{
    CHECK(code >= 400 && code <= 499);
    CHECK(strlen(msg) >= 1 && strlen(msg) <= HD_PROXY_MSG_MAX);
    for (const char *p = msg; *p; p++)
        CHECK(*p >= 0x20 && *p < 0x7f);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hd_jwt_claims_t c;
    char            msg[HD_PROXY_MSG_MAX + 1];
    int             code = 0, v;

    v = hd_proxy_parse_connect((const char *) data, size, 1700000000, &c, &code,
                               msg, sizeof(msg));
    CHECK(v == HD_PROXY_ALLOW || v == HD_PROXY_DENY || v == HD_PROXY_GARBAGE);
    if (v == HD_PROXY_ALLOW) {
        CHECK(c.sub != NULL && strlen(c.sub) >= 1 && strlen(c.sub) <= 255);
        CHECK(c.exp > 1700000000);
        if (c.tenant != NULL)
            CHECK(hd_tenant_valid(c.tenant, strlen(c.tenant)));
    } else {
        CHECK(c.sub == NULL && c.tenant == NULL && c.channels == NULL);
        if (v == HD_PROXY_DENY)
            check_msg(code, msg);
    }
    hd_jwt_claims_free(&c);

    code = 0;
    v = hd_proxy_parse_subscribe((const char *) data, size, &code, msg,
                                 sizeof(msg));
    CHECK(v == HD_PROXY_ALLOW || v == HD_PROXY_DENY || v == HD_PROXY_GARBAGE);
    if (v == HD_PROXY_DENY)
        check_msg(code, msg);
    return 0;
}
