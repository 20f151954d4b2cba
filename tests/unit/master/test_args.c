/* Unit tests for master/hd_args.c: option forms, defaults, errors. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_args.h"
#include "hd_conf.h"

#define ARGV(...) ((char *const[]){ "herald", __VA_ARGS__, NULL })
#define ARGC(...) \
    ((int) (sizeof((char *[]){ "herald", __VA_ARGS__ }) / sizeof(char *)))
#define PARSE(a, ...) \
    hd_args_parse(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), (a), err, sizeof(err))

static char err[256];

static void
setup(void)
{
    memset(err, 'X', sizeof(err) - 1);
    err[sizeof(err) - 1] = '\0';
}

START_TEST(defaults)
{
    char *const argv[] = { "herald", NULL };
    hd_args_t   a;

    memset(&a, 0xff, sizeof(a));
    ck_assert_int_eq(hd_args_parse(1, argv, &a, err, sizeof(err)), 0);
    ck_assert_str_eq(a.conf_path, HD_CONF_DEFAULT_PATH);
    ck_assert_str_eq(a.conf_path, "conf/herald.json");
    ck_assert(!a.test_only);
    ck_assert(!a.version);
    ck_assert(!a.help);
    ck_assert_str_eq(err, "");

    /* argc 0 (exec with an empty argv) is not an error either */
    char *const none[] = { NULL };
    ck_assert_int_eq(hd_args_parse(0, none, &a, err, sizeof(err)), 0);
    ck_assert_str_eq(a.conf_path, HD_CONF_DEFAULT_PATH);
}
END_TEST

START_TEST(config_forms)
{
    hd_args_t a;

    ck_assert_int_eq(PARSE(&a, "-c", "a.json"), 0);
    ck_assert_str_eq(a.conf_path, "a.json");
    ck_assert_int_eq(PARSE(&a, "--config", "b.json"), 0);
    ck_assert_str_eq(a.conf_path, "b.json");
    ck_assert_int_eq(PARSE(&a, "--config=c.json"), 0);
    ck_assert_str_eq(a.conf_path, "c.json");
    ck_assert_int_eq(PARSE(&a, "-cd.json"), 0);
    ck_assert_str_eq(a.conf_path, "d.json");
    /* a name that starts with '-' through the '=' form */
    ck_assert_int_eq(PARSE(&a, "--config=-odd.json"), 0);
    ck_assert_str_eq(a.conf_path, "-odd.json");
    /* the last one wins */
    ck_assert_int_eq(PARSE(&a, "-c", "x.json", "--config", "y.json"), 0);
    ck_assert_str_eq(a.conf_path, "y.json");
    ck_assert(!a.test_only && !a.version && !a.help);
}
END_TEST

START_TEST(points_into_argv)
{
    char        file[] = "/etc/herald/herald.json";
    char *const argv[] = { "herald", "-c", file, NULL };
    hd_args_t   a;

    ck_assert_int_eq(hd_args_parse(3, argv, &a, err, sizeof(err)), 0);
    ck_assert_ptr_eq(a.conf_path, file);
    ck_assert_str_eq(argv[1], "-c"); /* argv left alone */
}
END_TEST

START_TEST(flags)
{
    hd_args_t a;

    ck_assert_int_eq(PARSE(&a, "-t"), 0);
    ck_assert(a.test_only && !a.version && !a.help);
    ck_assert_int_eq(PARSE(&a, "--test"), 0);
    ck_assert(a.test_only && !a.version && !a.help);
    ck_assert_int_eq(PARSE(&a, "-V"), 0);
    ck_assert(!a.test_only && a.version && !a.help);
    ck_assert_int_eq(PARSE(&a, "--version"), 0);
    ck_assert(!a.test_only && a.version && !a.help);
    ck_assert_int_eq(PARSE(&a, "-h"), 0);
    ck_assert(!a.test_only && !a.version && a.help);
    ck_assert_int_eq(PARSE(&a, "--help"), 0);
    ck_assert(!a.test_only && !a.version && a.help);
    ck_assert_str_eq(a.conf_path, HD_CONF_DEFAULT_PATH);
}
END_TEST

START_TEST(combined)
{
    hd_args_t a;

    ck_assert_int_eq(PARSE(&a, "-tV"), 0);
    ck_assert(a.test_only && a.version && !a.help);
    ck_assert_int_eq(PARSE(&a, "-t", "-c", "z.json"), 0);
    ck_assert(a.test_only);
    ck_assert_str_eq(a.conf_path, "z.json");
    ck_assert_int_eq(PARSE(&a, "--config", "z.json", "--test", "-h"), 0);
    ck_assert(a.test_only && a.help);
    ck_assert_str_eq(a.conf_path, "z.json");
    ck_assert_int_eq(PARSE(&a, "-t", "--"), 0);
    ck_assert(a.test_only);
}
END_TEST

START_TEST(unknown_options)
{
    hd_args_t a;

    ck_assert_int_eq(PARSE(&a, "--foo"), -EINVAL);
    ck_assert_str_eq(err, "unknown option '--foo'");
    ck_assert_int_eq(PARSE(&a, "--foo=bar"), -EINVAL);
    ck_assert_str_eq(err, "unknown option '--foo'");
    ck_assert_int_eq(PARSE(&a, "-x"), -EINVAL);
    ck_assert_str_eq(err, "unknown option '-x'");
    ck_assert_int_eq(PARSE(&a, "-tx"), -EINVAL);
    ck_assert_str_eq(err, "unknown option '-x'");
    /* no prefix matching: --conf is not --config */
    ck_assert_int_eq(PARSE(&a, "--conf", "a.json"), -EINVAL);
    ck_assert_str_eq(err, "unknown option '--conf'");
    ck_assert_int_eq(PARSE(&a, "--tes"), -EINVAL);
    ck_assert_str_eq(err, "unknown option '--tes'");
    ck_assert_int_eq(PARSE(&a, "-\n"), -EINVAL);
    ck_assert_str_eq(err, "unknown option '-\\x0a'");
    ck_assert_int_eq(PARSE(&a, "--test=yes"), -EINVAL);
    ck_assert_str_eq(err, "option '--test' takes no value");
    ck_assert_int_eq(PARSE(&a, "--help="), -EINVAL);
    ck_assert_str_eq(err, "option '--help' takes no value");
}
END_TEST

START_TEST(missing_values)
{
    hd_args_t a;

    ck_assert_int_eq(PARSE(&a, "-c"), -EINVAL);
    ck_assert_str_eq(err, "option '-c' needs a file name");
    ck_assert_int_eq(PARSE(&a, "--config"), -EINVAL);
    ck_assert_str_eq(err, "option '--config' needs a file name");
    ck_assert_int_eq(PARSE(&a, "--config="), -EINVAL);
    ck_assert_str_eq(err, "option '--config' needs a file name");
    ck_assert_int_eq(PARSE(&a, "-c", ""), -EINVAL);
    ck_assert_str_eq(err, "option '-c' needs a file name");
    ck_assert_int_eq(PARSE(&a, "--config", ""), -EINVAL);
    ck_assert_str_eq(err, "option '--config' needs a file name");
    /* an option where the file name should be is a forgotten name */
    ck_assert_int_eq(PARSE(&a, "-c", "-t"), -EINVAL);
    ck_assert_str_eq(err, "option '-c' needs a file name");
    ck_assert_int_eq(PARSE(&a, "--config", "--test"), -EINVAL);
    ck_assert_str_eq(err, "option '--config' needs a file name");
    /* "-tc FILE" is documented as unsupported */
    ck_assert_int_eq(PARSE(&a, "-tc", "a.json"), -EINVAL);
    ck_assert_str_eq(
        err, "option '-c' cannot be combined with other options in '-tc'");
}
END_TEST

START_TEST(positional)
{
    hd_args_t a;

    ck_assert_int_eq(PARSE(&a, "x"), -EINVAL);
    ck_assert_str_eq(err, "unexpected argument 'x'");
    ck_assert_int_eq(PARSE(&a, "-c", "a.json", "b.json"), -EINVAL);
    ck_assert_str_eq(err, "unexpected argument 'b.json'");
    ck_assert_int_eq(PARSE(&a, "-"), -EINVAL);
    ck_assert_str_eq(err, "unexpected argument '-'");
    ck_assert_int_eq(PARSE(&a, "--", "-t"), -EINVAL);
    ck_assert_str_eq(err, "unexpected argument '-t'");
    ck_assert_int_eq(PARSE(&a, "-t", "", "-V"), -EINVAL);
    ck_assert_str_eq(err, "unexpected argument ''");
}
END_TEST

START_TEST(errors_are_one_line)
{
    const char *const bad[][3] = {
        { "--nope", NULL, NULL }, { "-q", NULL, NULL },
        { "-c", NULL, NULL },     { "--config=", NULL, NULL },
        { "stray", NULL, NULL },  { "--version=1", NULL, NULL },
    };
    hd_args_t a;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *argv[] = { "herald", (char *) bad[i][0], NULL };
        setup();
        ck_assert_int_eq(hd_args_parse(2, argv, &a, err, sizeof(err)), -EINVAL);
        ck_assert_msg(strlen(err) > 10 && strchr(err, '\n') == NULL,
                      "bad message for %s: '%s'", bad[i][0], err);
    }
}
END_TEST

START_TEST(small_or_no_err_buffer)
{
    char *const argv[] = { "herald", "--a-very-long-unknown-option", NULL };
    char        small[8];
    hd_args_t   a;

    ck_assert_int_eq(hd_args_parse(2, argv, &a, small, sizeof(small)), -EINVAL);
    ck_assert_uint_eq(strlen(small), sizeof(small) - 1);
    ck_assert_int_eq(hd_args_parse(2, argv, &a, NULL, 0), -EINVAL);
}
END_TEST

START_TEST(repeated_calls)
{
    hd_args_t a;

    /* no leftover state from one call to the next (getopt would have) */
    for (int round = 0; round < 3; round++) {
        ck_assert_int_eq(PARSE(&a, "-t", "-c", "one.json"), 0);
        ck_assert(a.test_only);
        ck_assert_str_eq(a.conf_path, "one.json");

        ck_assert_int_eq(PARSE(&a, "--bogus"), -EINVAL);
        ck_assert_str_eq(err, "unknown option '--bogus'");

        char *const argv[] = { "herald", NULL };
        ck_assert_int_eq(hd_args_parse(1, argv, &a, err, sizeof(err)), 0);
        ck_assert(!a.test_only && !a.version && !a.help);
        ck_assert_str_eq(a.conf_path, HD_CONF_DEFAULT_PATH);
        ck_assert_str_eq(err, "");

        ck_assert_int_eq(PARSE(&a, "-V"), 0);
        ck_assert(a.version && !a.test_only);
    }
}
END_TEST

START_TEST(usage_text)
{
    char  *buf = NULL;
    size_t len = 0;
    FILE  *f = open_memstream(&buf, &len);

    ck_assert_ptr_nonnull(f);
    hd_args_usage(f, "/usr/sbin/herald");
    fclose(f);

    ck_assert_msg(strncmp(buf, "Usage: /usr/sbin/herald ", 24) == 0, "%s", buf);
    const char *want[] = {
        "-c, --config FILE",
        "-t, --test",
        "-V, --version",
        "-h, --help",
        "conf/herald.json",
        "SIGHUP",
        "SIGTERM",
        "SIGINT",
        "SIGQUIT",
        "SIGUSR1",
        "reload",
        "graceful",
        "second",
        "reopen",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        ck_assert_msg(strstr(buf, want[i]) != NULL, "usage lacks '%s'",
                      want[i]);
    ck_assert_int_eq(buf[len - 1], '\n');
    free(buf);

    /* no program name falls back to "herald" */
    f = open_memstream(&buf, &len);
    hd_args_usage(f, NULL);
    fclose(f);
    ck_assert_msg(strncmp(buf, "Usage: herald ", 14) == 0, "%s", buf);
    free(buf);
}
END_TEST

static Suite *
args_suite(void)
{
    Suite *s = suite_create("args");
    TCase *tc = tcase_create("parse");

    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, config_forms);
    tcase_add_test(tc, points_into_argv);
    tcase_add_test(tc, flags);
    tcase_add_test(tc, combined);
    tcase_add_test(tc, unknown_options);
    tcase_add_test(tc, missing_values);
    tcase_add_test(tc, positional);
    tcase_add_test(tc, errors_are_one_line);
    tcase_add_test(tc, small_or_no_err_buffer);
    tcase_add_test(tc, repeated_calls);
    tcase_add_test(tc, usage_text);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(args_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
