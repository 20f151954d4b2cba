#include <stdio.h>
#include <string.h>

#include "hd_cmd.h"
#include "hd_codes.h"

int
hd_cmd_parse(const char *line, size_t len, hd_cmd_t *out, char *err,
             size_t errlen)
{
    json_error_t jerr;
    json_t      *jid, *jmethod, *jparams;

    memset(out, 0, sizeof(*out));
    /* jansson bounds nesting depth itself (JSON_PARSER_MAX_DEPTH) */
    out->root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (out->root == NULL) {
        snprintf(err, errlen, "malformed JSON at column %d: %s", jerr.column,
                 jerr.text);
        return HD_ERR_BAD_REQUEST;
    }
    if (!json_is_object(out->root)) {
        snprintf(err, errlen, "a command must be a JSON object");
        return HD_ERR_BAD_REQUEST;
    }
    jid = json_object_get(out->root, "id");
    if (!json_is_integer(jid) || json_integer_value(jid) < 0) {
        snprintf(err, errlen, "\"id\" must be a non-negative integer");
        return HD_ERR_BAD_REQUEST;
    }
    out->id = json_integer_value(jid);
    out->has_id = true;
    jmethod = json_object_get(out->root, "method");
    if (!json_is_string(jmethod)) {
        snprintf(err, errlen, "\"method\" must be a string");
        return HD_ERR_BAD_REQUEST;
    }
    out->method = json_string_value(jmethod);
    jparams = json_object_get(out->root, "params");
    if (jparams != NULL && !json_is_object(jparams)) {
        snprintf(err, errlen, "\"params\" must be an object");
        return HD_ERR_BAD_REQUEST;
    }
    out->params = jparams;
    return 0;
}

void
hd_cmd_free(hd_cmd_t *c)
{
    json_decref(c->root);
    c->root = NULL;
}

void
hd_cmd_split(const char *buf, size_t len, hd_line_fn *fn, void *arg)
{
    const char *p = buf, *end = buf + len;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t) (end - p));
        const char *s = p, *e = nl ? nl : end;

        while (s < e && (*s == ' ' || *s == '\t' || *s == '\r'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
            e--;
        if (e > s && fn(s, (size_t) (e - s), arg) != 0)
            return;
        p = nl ? nl + 1 : end;
    }
}
