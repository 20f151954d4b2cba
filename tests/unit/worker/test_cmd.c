/* Unit tests: command parsing, frame splitting, envelope decoding. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "hd_cmd.h"
#include "hd_codes.h"
#include "hd_envelope.h"

static int
parse(const char *s, hd_cmd_t *c, char *err)
{
    return hd_cmd_parse(s, strlen(s), c, err, 256);
}

START_TEST(test_parse_ok)
{
    hd_cmd_t c;
    char     err[256];

    ck_assert_int_eq(parse("{\"id\":7,\"method\":\"ping\"}", &c, err), 0);
    ck_assert(c.has_id);
    ck_assert_int_eq(c.id, 7);
    ck_assert_str_eq(c.method, "ping");
    ck_assert_ptr_null(c.params);
    hd_cmd_free(&c);

    ck_assert_int_eq(
        parse("{\"method\":\"subscribe\",\"params\":{\"channel\":\"a\"},"
              "\"id\":0}",
              &c, err),
        0);
    ck_assert_int_eq(c.id, 0);
    ck_assert_ptr_nonnull(c.params);
    ck_assert_str_eq(json_string_value(json_object_get(c.params, "channel")),
                     "a");
    hd_cmd_free(&c);
}
END_TEST

START_TEST(test_parse_errors)
{
    static const struct {
        const char *in;
        bool        has_id;
        const char *msg;
    } t[] = {
        { "{bad", false, "malformed JSON" },
        { "[1]", false, "must be a JSON object" },
        { "\"x\"", false, "malformed JSON" },
        { "{\"method\":\"ping\"}", false, "\"id\" must be" },
        { "{\"id\":-1,\"method\":\"ping\"}", false, "\"id\" must be" },
        { "{\"id\":\"1\",\"method\":\"ping\"}", false, "\"id\" must be" },
        { "{\"id\":1.5,\"method\":\"ping\"}", false, "\"id\" must be" },
        { "{\"id\":1}", true, "\"method\" must be a string" },
        { "{\"id\":1,\"method\":3}", true, "\"method\" must be a string" },
        { "{\"id\":1,\"method\":\"p\",\"params\":[]}", true,
          "\"params\" must be an object" },
        { "{\"id\":1,\"id\":2,\"method\":\"p\"}", false, "malformed JSON" },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        hd_cmd_t c;
        char     err[256];
        ck_assert_int_eq(parse(t[i].in, &c, err), HD_ERR_BAD_REQUEST);
        ck_assert_msg(c.has_id == t[i].has_id, "%s", t[i].in);
        ck_assert_msg(strstr(err, t[i].msg) != NULL, "%s: %s", t[i].in, err);
        hd_cmd_free(&c);
    }
}
END_TEST

START_TEST(test_parse_deep)
{
    /* 100,000 levels deep must fail cleanly, not blow the stack */
    size_t   n = 100000;
    char    *s = malloc(2 * n + 1);
    hd_cmd_t c;
    char     err[256];

    memset(s, '[', n);
    memset(s + n, ']', n);
    s[2 * n] = '\0';
    ck_assert_int_eq(hd_cmd_parse(s, 2 * n, &c, err, sizeof(err)),
                     HD_ERR_BAD_REQUEST);
    hd_cmd_free(&c);
    free(s);
}
END_TEST

struct lines {
    int  n;
    char got[8][64];
};

static int
collect(const char *line, size_t len, void *arg)
{
    struct lines *l = arg;
    snprintf(l->got[l->n++], 64, "%.*s", (int) len, line);
    return l->n >= 3; /* stop after three */
}

START_TEST(test_split)
{
    const char  *in = " a \r\n\n\t\nb\r\n  c\nd";
    struct lines l = { 0 };

    hd_cmd_split(in, strlen(in), collect, &l);
    ck_assert_int_eq(l.n, 3); /* stopped by the callback */
    ck_assert_str_eq(l.got[0], "a");
    ck_assert_str_eq(l.got[1], "b");
    ck_assert_str_eq(l.got[2], "c");
}
END_TEST

START_TEST(test_envelope)
{
    hd_envelope_t e;
    const char   *ok = "1 42 e9F 1700000000123456 {\"a\":\"b c\"}";

    ck_assert_int_eq(hd_envelope_decode(ok, strlen(ok), &e), 0);
    ck_assert_uint_eq(e.offset, 42);
    ck_assert_uint_eq(e.pub_us, 1700000000123456ull);
    ck_assert_uint_eq(e.epoch_len, 3);
    ck_assert(memcmp(e.epoch, "e9F", 3) == 0);
    ck_assert_uint_eq(e.data_len, strlen("{\"a\":\"b c\"}"));
    ck_assert(memcmp(e.data, "{\"a\":\"b c\"}", e.data_len) == 0);

    static const char *bad[] = {
        "",
        "1",
        "1 ",
        "2 1 a 0 x",
        "1 0 a 0 x",
        "1 01 a 0 x",
        "1 1 a 0",
        "1 1 a 0 ",
        "1 1  0 x",
        "1 1 a-b 0 x",
        "1 18446744073709551616 a 0 x",
        "1 1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 0 x",
        "1 x a 0 y",
        "1 1 a x y",
        "1  1 a 0 x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(hd_envelope_decode(bad[i], strlen(bad[i]), &e) < 0,
                      "accepted \"%s\"", bad[i]);
    ck_assert_int_eq(hd_envelope_decode("1 18446744073709551615 a 0 x", 28, &e),
                     0);
    ck_assert_uint_eq(e.offset, UINT64_MAX);
}
END_TEST

int
main(void)
{
    Suite   *s = suite_create("cmd");
    TCase   *tc = tcase_create("core");
    SRunner *sr;
    int      failed;

    tcase_add_test(tc, test_parse_ok);
    tcase_add_test(tc, test_parse_errors);
    tcase_add_test(tc, test_parse_deep);
    tcase_add_test(tc, test_split);
    tcase_add_test(tc, test_envelope);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
