/*
 * libFuzzer target: the PROXY protocol header (v1 and v2), the first bytes
 * of every connection on a listener with listen.proxy_protocol.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* the parser itself, so that libFuzzer's coverage sees inside it (the
 * common library is built without the fuzzer's instrumentation) */
#include "../../common/hd_proxy.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hd_proxy_info_t pi, again;
    int             r = hd_proxy_parse(data, size, &pi);

    if ((r < 0 && r != -EPROTO) || r > (int) size || r > HD_PROXY_MAX)
        __builtin_trap();
    if (r > 0) {
        /* the verdict depends on the header's bytes only */
        if (hd_proxy_parse(data, (size_t) r, &again) != r
            || again.local != pi.local || again.version != pi.version)
            __builtin_trap();
        if (!pi.local && pi.src.ss_family != AF_INET
            && pi.src.ss_family != AF_INET6)
            __builtin_trap();
        /* any shorter prefix is "need more", never a verdict */
        if (r > 1 && hd_proxy_parse(data, (size_t) r - 1, &again) != 0)
            __builtin_trap();
    }
    return 0;
}
