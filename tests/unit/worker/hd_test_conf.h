/*
 * For worker unit tests: a config from JSON text, through the real loader
 * (written to a temporary file that is removed at once), so tests build
 * their namespaces and limits the way operators write them.
 */
#ifndef HD_TEST_CONF_H
#define HD_TEST_CONF_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "hd_conf.h"

static hd_conf_t *
hd_test_conf(const char *json)
{
    char             path[] = "/tmp/hd_test_conf_XXXXXX";
    hd_conf_errors_t errs = { 0 };
    hd_conf_t       *conf = NULL;
    FILE            *f;
    int              fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    f = fdopen(fd, "w");
    ck_assert_ptr_nonnull(f);
    fputs(json, f);
    fclose(f);
    ck_assert_int_eq(hd_conf_load(path, &conf, &errs), 0);
    unlink(path);
    return conf;
}

#endif
