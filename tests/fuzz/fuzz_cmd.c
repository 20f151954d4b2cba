/*
 * libFuzzer target: a WebSocket message as the worker receives it, split
 * into lines and each line parsed as a command.
 */
#include <stddef.h>
#include <stdint.h>

#include "hd_cmd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
one_line(const char *line, size_t len, void *arg)
{
    hd_cmd_t c;
    char     err[256];
    int      rc = hd_cmd_parse(line, len, &c, err, sizeof(err));

    /* a parsed command always has an id and a method */
    if (rc == 0 && (!c.has_id || c.method == NULL || c.id < 0))
        __builtin_trap();
    hd_cmd_free(&c);
    (*(size_t *) arg)++;
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = 0;
    hd_cmd_split((const char *) data, size, one_line, &n);
    return 0;
}
