/*
 * Command-line parsing. A small hand parser rather than getopt_long():
 * getopt keeps global state (optind, optarg) that tests would have to
 * reset between calls, and permutes argv, which the contract forbids.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_args.h"
#include "hd_conf.h"

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/*
 * Value of -c/--config taken from the next argument. An argument that
 * looks like an option is not taken as the file name: "herald -c -t" is
 * far more likely a forgotten name than a file called "-t" (which can
 * still be given as "./-t" or "--config=-t").
 */
static const char *
next_value(int argc, char *const argv[], int *i)
{
    if (*i + 1 >= argc || argv[*i + 1] == NULL)
        return NULL;
    const char *v = argv[*i + 1];
    if (v[0] == '\0' || (v[0] == '-' && v[1] != '\0'))
        return NULL;
    (*i)++;
    return v;
}

static int
parse_long(const char *arg, int argc, char *const argv[], int *i,
           hd_args_t *out, char *err, size_t errlen)
{
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t      len = eq ? (size_t) (eq - name) : strlen(name);

#define IS(s) (len == sizeof(s) - 1 && memcmp(name, s, len) == 0)
    if (IS("config")) {
        const char *v = eq ? eq + 1 : next_value(argc, argv, i);
        if (v == NULL || v[0] == '\0')
            return fail(err, errlen, "option '--config' needs a file name");
        out->conf_path = v;
        return 0;
    }

    if (IS("upgrade")) {
        const char *v = eq ? eq + 1 : next_value(argc, argv, i);
        char       *end = NULL;
        long        pid = v != NULL ? strtol(v, &end, 10) : 0;
        if (v == NULL || end == v || *end != '\0' || pid <= 1)
            return fail(err, errlen,
                        "option '--upgrade' needs the master's pid");
        out->upgrade_pid = pid;
        return 0;
    }

    bool *flag = NULL;
    if (IS("test"))
        flag = &out->test_only;
    else if (IS("version"))
        flag = &out->version;
    else if (IS("help"))
        flag = &out->help;
    else if (IS("dev"))
        flag = &out->dev;
#undef IS

    if (flag == NULL)
        return fail(err, errlen, "unknown option '--%.*s'", (int) len, name);
    if (eq != NULL)
        return fail(err, errlen, "option '--%.*s' takes no value", (int) len,
                    name);
    *flag = true;
    return 0;
}

/*
 * One argument of short options: "-t", "-tV", "-c FILE", "-cFILE". -c
 * takes the rest of its argument as the value, but only when it comes
 * first: "-tc FILE" is refused (see hd_args.h) rather than guessed at.
 */
static int
parse_short(const char *arg, int argc, char *const argv[], int *i,
            hd_args_t *out, char *err, size_t errlen)
{
    for (const char *p = arg + 1; *p != '\0'; p++) {
        switch (*p) {
        case 't':
            out->test_only = true;
            break;
        case 'V':
            out->version = true;
            break;
        case 'h':
            out->help = true;
            break;
        case 'c': {
            if (p != arg + 1)
                return fail(err, errlen,
                            "option '-c' cannot be combined "
                            "with other options in '%s'",
                            arg);
            const char *v = p[1] != '\0' ? p + 1 : next_value(argc, argv, i);
            if (v == NULL)
                return fail(err, errlen, "option '-c' needs a file name");
            out->conf_path = v;
            return 0;
        }
        default:
            /* keep the message on one line whatever the byte is */
            if ((unsigned char) *p > ' ' && (unsigned char) *p < 0x7f)
                return fail(err, errlen, "unknown option '-%c'", *p);
            return fail(err, errlen, "unknown option '-\\x%02x'",
                        (unsigned char) *p);
        }
    }
    return 0;
}

int
hd_args_parse(int argc, char *const argv[], hd_args_t *out, char *err,
              size_t errlen)
{
    bool options_done = false;

    out->conf_path = HD_CONF_DEFAULT_PATH;
    out->test_only = false;
    out->version = false;
    out->help = false;
    out->dev = false;
    out->upgrade_pid = 0;
    if (err != NULL && errlen > 0)
        err[0] = '\0';

    for (int i = 1; i < argc && argv != NULL && argv[i] != NULL; i++) {
        const char *arg = argv[i];
        int         rc;

        if (options_done || arg[0] != '-' || arg[1] == '\0')
            return fail(err, errlen, "unexpected argument '%s'", arg);
        if (strcmp(arg, "--") == 0) {
            options_done = true;
            continue;
        }
        if (arg[1] == '-')
            rc = parse_long(arg, argc, argv, &i, out, err, errlen);
        else
            rc = parse_short(arg, argc, argv, &i, out, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void
hd_args_usage(FILE *f, const char *prog)
{
    if (prog == NULL || prog[0] == '\0')
        prog = "herald";
    fprintf(f,
            "Usage: %s [-c FILE] [-t] [--dev] [--upgrade PID] [-V] [-h]\n"
            "\n"
            "herald: WebSocket pub/sub gateway.\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE  configuration file (default: %s)\n"
            "  -t, --test         check the configuration file and exit\n"
            "      --dev          development mode: accept the shipped\n"
            "                     development secrets (never in production)\n"
            "      --upgrade PID  ask the running master PID to upgrade its\n"
            "                     binary (sends SIGUSR2) and exit\n"
            "  -V, --version      print the version and exit\n"
            "  -h, --help         print this help and exit\n"
            "\n"
            "Signals (to the master process):\n"
            "  SIGHUP             reload the configuration; on error keep the"
            " old one\n"
            "  SIGTERM, SIGINT    graceful stop: drain clients, exit by"
            " shutdown_timeout\n"
            "  second SIGTERM or SIGINT, SIGQUIT\n"
            "                     stop at once\n"
            "  SIGUSR1            reopen the log file\n"
            "  SIGUSR2            upgrade: start the binary again with the"
            " listen sockets,\n"
            "                     hand over once it is ready, drain (1012)\n",
            prog, HD_CONF_DEFAULT_PATH);
}
