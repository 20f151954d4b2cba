/* Command-line parsing for the herald binary. */
#ifndef HD_ARGS_H
#define HD_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct hd_args {
    const char *conf_path;   /* -c FILE, --config FILE, --config=FILE;
                                default HD_CONF_DEFAULT_PATH */
    bool        test_only;   /* -t, --test: check the config and exit */
    bool        version;     /* -V, --version */
    bool        help;        /* -h, --help */
    bool        dev;         /* --dev: development mode, accepts the
                                shipped development secrets */
    long        upgrade_pid; /* --upgrade PID: send the running master
                                SIGUSR2 and exit; 0 = not asked */
} hd_args_t;

/*
 * Parse argv (does not modify it, keeps pointers into it). Returns 0, or
 * -EINVAL with a one-line message in err ("unknown option '--foo'",
 * "option '-c' needs a file name", "unexpected argument 'x'").
 * Short options may be combined where they take no value ("-tc FILE" is
 * not supported; "-t -c FILE" is).
 */
int  hd_args_parse(int argc, char *const argv[], hd_args_t *out, char *err,
                   size_t errlen);
void hd_args_usage(FILE *f, const char *prog);

#endif
