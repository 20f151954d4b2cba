/*
 * libFuzzer target: what arrives from Redis on a subscribed channel.
 */
#include <stddef.h>
#include <stdint.h>

#include "hd_envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hd_envelope_t env;
    const char   *buf = (const char *) data;

    if (hd_envelope_decode(buf, size, &env) == 0) {
        /* everything points inside the input and the fields are sane */
        if (env.offset == 0 || env.epoch < buf || env.data < buf
            || env.epoch + env.epoch_len > buf + size
            || env.data + env.data_len != buf + size || env.data_len == 0
            || !hd_epoch_valid(env.epoch, env.epoch_len))
            __builtin_trap();
    }
    return 0;
}
