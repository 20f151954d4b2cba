/* Unit tests for common/hd_chname.c: channel-name validation, namespaces. */
#include <check.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "hd_chname.h"

static const char valid_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@-";

#define VALID(s) hd_chname_valid((s), strlen(s))

START_TEST(valid_names)
{
    ck_assert(VALID("a"));
    ck_assert(VALID("news"));
    ck_assert(VALID("news:sports"));
    ck_assert(VALID("user@example.com"));
    ck_assert(VALID("a-b_c.d:e@f"));
    ck_assert(VALID(":"));
    ck_assert(VALID("::"));
    ck_assert(VALID("-"));
    ck_assert(VALID(valid_chars));
}
END_TEST

/* every one of the 256 byte values, alone, first, middle and last */
START_TEST(every_byte)
{
    for (int b = 0; b < 256; b++) {
        bool want = b != 0 && strchr(valid_chars, b) != NULL;
        char s[3] = { 'a', (char) b, 'z' };
        char one = (char) b;

        ck_assert_msg(hd_chname_valid(&one, 1) == want, "byte 0x%02x", b);
        ck_assert_msg(hd_chname_valid(s, 3) == want, "mid 0x%02x", b);
        ck_assert_msg(hd_chname_valid(s + 1, 2) == want, "first 0x%02x", b);
        ck_assert_msg(hd_chname_valid(s, 2) == want, "last 0x%02x", b);
    }
}
END_TEST

START_TEST(invalid_classes)
{
    /* whitespace and control */
    ck_assert(!VALID("a b"));
    ck_assert(!VALID("a\tb"));
    ck_assert(!VALID("a\nb"));
    ck_assert(!VALID("a\rb"));
    ck_assert(!VALID("a\x7f"));
    ck_assert(!VALID("\x01"));
    ck_assert(!hd_chname_valid("a\0b", 3));
    /* glob, path and quoting characters */
    ck_assert(!VALID("news:*"));
    ck_assert(!VALID("a?"));
    ck_assert(!VALID("a[1]"));
    ck_assert(!VALID("a/b"));
    ck_assert(!VALID("a\\b"));
    ck_assert(!VALID("\"a\""));
    ck_assert(!VALID("'a'"));
    ck_assert(!VALID("a#b"));
    ck_assert(!VALID("a,b"));
    ck_assert(!VALID("a;b"));
    ck_assert(!VALID("a=b"));
    ck_assert(!VALID("a+b"));
    ck_assert(!VALID("a%20"));
    ck_assert(!VALID("{a}"));
    ck_assert(!VALID("a|b"));
    ck_assert(!VALID("a$b"));
    ck_assert(!VALID("a~b"));
    /* non-ASCII: UTF-8 and stray high bytes */
    ck_assert(!VALID("caf\xc3\xa9"));
    ck_assert(!VALID("\xff"));
    ck_assert(!VALID("\x80"));
}
END_TEST

START_TEST(lengths)
{
    char buf[HD_CHNAME_MAX + 2];

    memset(buf, 'c', sizeof(buf));
    ck_assert(!hd_chname_valid(buf, 0));
    ck_assert(!hd_chname_valid("", 0));
    ck_assert(!hd_chname_valid(NULL, 0));
    ck_assert(!hd_chname_valid(NULL, 5));
    ck_assert(hd_chname_valid(buf, 1));
    ck_assert(hd_chname_valid(buf, 254));
    ck_assert(hd_chname_valid(buf, 255));
    ck_assert(!hd_chname_valid(buf, 256));
    ck_assert(!hd_chname_valid(buf, 257));
    /* length, not NUL, ends the name */
    ck_assert(hd_chname_valid("ab cd", 2));
    ck_assert(!hd_chname_valid("ab cd", 3));
}
END_TEST

START_TEST(namespace)
{
    bool has = false;

#define NS(s) hd_chname_namespace((s), strlen(s), &has)
    ck_assert_uint_eq(NS("news:sports"), 4);
    ck_assert(has);
    ck_assert_uint_eq(NS("news"), 0);
    ck_assert(!has);
    ck_assert_uint_eq(NS(":x"), 0);
    ck_assert(has);
    ck_assert_uint_eq(NS("x:"), 1);
    ck_assert(has);
    ck_assert_uint_eq(NS("a:b:c"), 1); /* first ':' wins */
    ck_assert(has);
    ck_assert_uint_eq(NS("user@x.y:chat"), 8);
    ck_assert(has);
    has = true;
    ck_assert_uint_eq(NS(""), 0);
    ck_assert(!has);
#undef NS
    /* a ':' past len does not count */
    has = true;
    ck_assert_uint_eq(hd_chname_namespace("ab:c", 2, &has), 0);
    ck_assert(!has);
    ck_assert_uint_eq(hd_chname_namespace("ab:c", 3, &has), 2);
    ck_assert(has);
    /* has_ns is optional */
    ck_assert_uint_eq(hd_chname_namespace("ns:x", 4, NULL), 2);
    ck_assert_uint_eq(hd_chname_namespace(NULL, 0, &has), 0);
    ck_assert(!has);
}
END_TEST

static Suite *
channel_suite(void)
{
    Suite *s = suite_create("channel");
    TCase *tc = tcase_create("names");

    tcase_add_test(tc, valid_names);
    tcase_add_test(tc, every_byte);
    tcase_add_test(tc, invalid_classes);
    tcase_add_test(tc, lengths);
    tcase_add_test(tc, namespace);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(channel_suite());
    int      failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
