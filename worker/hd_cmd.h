/*
 * Parsing one command line of the client protocol, with no connection or
 * I/O around it (so it can be unit-tested and fuzzed on its own):
 *   {"id": <uint>, "method": "<name>", "params": {...}}
 * and splitting a frame into its newline-separated lines.
 */
#ifndef HD_CMD_H
#define HD_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct hd_cmd {
    json_t     *root; /* owned: json_decref() via hd_cmd_free() */
    int64_t     id;
    bool        has_id; /* id parsed (replies carry it) */
    const char *method; /* inside root */
    json_t     *params; /* inside root; NULL when absent */
} hd_cmd_t;

/*
 * Parse line (len bytes, no newline). Returns 0 with *out filled, or an
 * HD_ERR_* code with a message in err; out->has_id/id are set whenever the
 * id could be read, so the error reply can carry it. Call hd_cmd_free()
 * in both cases.
 */
int  hd_cmd_parse(const char *line, size_t len, hd_cmd_t *out, char *err,
                  size_t errlen);
void hd_cmd_free(hd_cmd_t *c);

/*
 * Call fn for every non-blank line of buf (split on '\n', surrounding
 * blanks and '\r' trimmed), in order, while fn returns 0.
 */
typedef int hd_line_fn(const char *line, size_t len, void *arg);
void hd_cmd_split(const char *buf, size_t len, hd_line_fn *fn, void *arg);

#endif
