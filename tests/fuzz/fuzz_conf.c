/*
 * libFuzzer target for the config loader: any bytes in, no crash, no leak,
 * and the result is consistent (a config xor at least one error).
 *
 * Build (the lead wires it into meson under -Dfuzz=true):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *     -Icommon -Iconf tests/fuzz/fuzz_conf.c conf/hd_conf*.c \
 *     common/hd_alloc.c common/hd_log.c -ljansson -lcrypto -o fuzz_conf
 *   ./fuzz_conf -max_total_time=60 tests/fuzz/seeds/conf
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "hd_conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hd_conf_errors_t errs = { 0 };
    hd_conf_t       *c = NULL;
    int              rc;

    rc = hd_conf_load_string("fuzz.json", (const char *) data, size, &c, &errs);
    if ((rc == 0) != (c != NULL) || (rc == 0) != (errs.n == 0))
        abort();
    if (c != NULL) {
        /* exercise the comparisons on a real config */
        if (hd_conf_worker_changed(c, c) || hd_conf_listen_changed(c, c))
            abort();
        if (c->workers < 1 || c->workers > HD_WORKERS_MAX)
            abort();
    }
    hd_conf_free(c);
    hd_conf_errors_free(&errs);
    return 0;
}
