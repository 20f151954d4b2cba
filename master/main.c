/*
 * herald: the master process. Parses arguments and the config, creates the
 * shared-memory segment, opens the listen sockets, forks the workers and
 * then runs a libevent loop for signals, child reaping, timers and the
 * admin HTTP server. It does no data-plane work.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "hd_admin.h"
#include "hd_alloc.h"
#include "hd_args.h"
#include "hd_jwks.h"
#include "hd_log.h"
#include "hd_master.h"
#include "hd_proc.h"
#include "hd_sdnotify.h"
#include "hd_upgrade.h"
#include "hd_version.h"

hd_master_t hd_m;

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
    int rc;
    (void) what;
    (void) arg;

    switch (sig) {
    case SIGCHLD:
        hd_sup_reap();
        break;
    case SIGHUP:
        hd_sup_reload();
        break;
    case SIGTERM:
    case SIGINT:
        if (hd_upgrade_child_abort())
            break;
        hd_upgrade_abort("a stop was requested");
        hd_sup_shutdown(false);
        break;
    case SIGQUIT:
        hd_upgrade_abort("an immediate stop was requested");
        hd_sup_shutdown(true);
        break;
    case SIGUSR2:
        hd_upgrade_start();
        break;
    case SIGUSR1:
        if ((rc = hd_log_reopen()) < 0)
            hd_log_error("log reopen failed: %s", strerror(-rc));
        else
            hd_log_info("log reopened");
        hd_sup_signal_all(SIGUSR1);
        break;
    }
}

/*
 * herald --upgrade PID: SIGUSR2 to a running master, after checking that
 * PID is one (its process title), so a stale pid never gets a signal
 * meant for herald. The result is in the master's log.
 */
static int
upgrade_command(pid_t pid)
{
    char  path[64], title[64] = "";
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int) pid);
    if ((f = fopen(path, "r")) != NULL) {
        size_t n = fread(title, 1, sizeof(title) - 1, f);
        title[n] = '\0';
        fclose(f);
    }
    if (strncmp(title, "herald: master", 14) != 0) {
        fprintf(stderr, "herald: process %d is not a herald master\n",
                (int) pid);
        return 1;
    }
    if (kill(pid, SIGUSR2) < 0) {
        fprintf(stderr, "herald: cannot signal %d: %s\n", (int) pid,
                strerror(errno));
        return 1;
    }
    printf("herald: upgrade of master %d requested; its log tells the "
           "outcome\n",
           (int) pid);
    return 0;
}

static void
print_errors(const hd_conf_errors_t *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        fprintf(stderr, "%s\n", errs->msg[i]);
}

int
main(int argc, char **argv)
{
    static const int sigs[] = { SIGCHLD, SIGHUP,  SIGTERM, SIGINT,
                                SIGQUIT, SIGUSR1, SIGUSR2 };
    struct event    *sev[sizeof(sigs) / sizeof(sigs[0])];
    bool             inherited;
    hd_args_t        args;
    hd_conf_errors_t errs = { 0 };
    char             err[256];
    char            *conf_path;
    int              rc;
    size_t           i;

    if (hd_args_parse(argc, argv, &args, err, sizeof(err)) < 0) {
        fprintf(stderr, "herald: %s\n", err);
        hd_args_usage(stderr, "herald");
        return 1;
    }
    if (args.help) {
        hd_args_usage(stdout, "herald");
        return 0;
    }
    if (args.version) {
        printf("herald %s\n", HD_VERSION);
        return 0;
    }
    if (args.upgrade_pid > 0)
        return upgrade_command((pid_t) args.upgrade_pid);
    /* argv is about to become the process title: copy what we keep */
    conf_path = hd_strdup(args.conf_path);
    hd_upgrade_init(argc, argv);
    /* started by a running master's upgrade: its sockets are ours (read
     * and unset before the title code copies the environment away) */
    rc = args.test_only ? 0 : hd_upgrade_inherited();
    if (rc < 0) {
        free(conf_path);
        return 1;
    }
    inherited = rc > 0;
    hd_proc_title_init(argc, argv);

    hd_conf_dev_mode = args.dev;
    /* before the load: "workers": "auto" counts the descriptors each
     * worker inherits. A failure leaves the soft limit; auto then
     * overestimates it and admission refuses what a worker cannot take. */
    (void) hd_proc_raise_nofile();
    if (hd_conf_load(conf_path, &hd_m.conf, &errs) < 0) {
        print_errors(&errs);
        if (args.test_only)
            fprintf(stderr, "herald: configuration %s has %zu error%s\n",
                    conf_path, errs.n, errs.n == 1 ? "" : "s");
        hd_conf_errors_free(&errs);
        free(conf_path);
        return 1;
    }
    hd_conf_register_secrets(hd_m.conf);
    for (i = 0; i < hd_m.conf->nwarnings; i++)
        fprintf(stderr, "herald: warning: %s\n", hd_m.conf->warnings[i]);
    if (args.dev)
        fprintf(stderr,
                "herald: development mode (--dev): the shipped "
                "development secrets are accepted\n");
    if (args.test_only) {
        printf("herald: configuration %s ok\n", conf_path);
        hd_conf_free(hd_m.conf);
        free(conf_path);
        return 0;
    }
    free(conf_path);

    hd_log_set_role("master", -1);
    rc = hd_log_configure(hd_m.conf->log_level, hd_m.conf->log_format,
                          hd_m.conf->log_file);
    if (rc < 0) {
        fprintf(stderr, "herald: cannot open log file %s: %s\n",
                hd_m.conf->log_file, strerror(-rc));
        return 1;
    }

    rc = hd_shm_create(&hd_m.shm);
    if (rc < 0) {
        hd_log_error("cannot create the shared-memory segment: %s",
                     strerror(-rc));
        return 1;
    }
    rc = hd_limits_create(&hd_m.limits);
    if (rc < 0) {
        hd_log_error("cannot create the connection-limit tables: %s",
                     strerror(-rc));
        return 1;
    }

    /* libevent turns signals into loop events (a self-pipe underneath),
     * so none of our code runs in a signal handler */
    signal(SIGPIPE, SIG_IGN);
    hd_m.base = event_base_new();
    if (hd_m.base == NULL) {
        hd_log_error("event_base_new() failed");
        return 1;
    }
    for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        sev[i] = evsignal_new(hd_m.base, sigs[i], signal_cb, NULL);
        evsignal_add(sev[i], NULL);
    }

    hd_proc_title_set("herald: master");
    hd_sup_set_ops(&hd_sup_os_ops);

    if (inherited) {
        /* the old master serves the admin socket until it hands over */
        hd_upgrade_adopt();
    } else if (hd_admin_start(hd_m.base, hd_m.conf, hd_m.shm) < 0) {
        hd_log_error("cannot start the admin server on %s:%d",
                     hd_m.conf->admin_address, hd_m.conf->admin_port);
        return 1;
    }
    /* before the workers: a JWK Set file is read now, so each worker gets
     * it with its READY; a URL is fetched in the background */
    hd_m.jwks_ready = hd_jwks_worker_ready;
    hd_m.jwks_stale = hd_jwks_stale;
    hd_m.jwks_reconf = hd_jwks_reconf;
    hd_jwks_start(hd_m.base, hd_m.conf);
    if (hd_sup_start() < 0) {
        hd_log_error("cannot start: cannot open the listen sockets");
        hd_sup_shutdown(true);
        event_base_dispatch(hd_m.base);
        return 1;
    }
    for (i = 0; i < hd_m.conf->nlistens; i++) {
        const hd_listen_t *l = &hd_m.conf->listens[i];
        bool               v6 = strchr(l->address, ':') != NULL;
        hd_log_info("listening on %s%s%s:%d%s%s", v6 ? "[" : "", l->address,
                    v6 ? "]" : "", l->port,
                    v6 && !l->ipv6_only ? " (IPv6 and IPv4)" : "",
                    l->proxy_protocol ? ", PROXY protocol" : "");
    }
    hd_log_info("herald %s started: %d workers, admin on %s:%d", HD_VERSION,
                hd_m.conf->workers, hd_m.conf->admin_address,
                hd_m.conf->admin_port);
    /* systemd (Type=notify): the listen sockets are open, so connections
     * queue from here on even while the workers are still starting. A
     * new master of an upgrade is not the main process yet: it says
     * READY=1 with its MAINPID= when it takes over. */
    if (inherited)
        hd_upgrade_child_start();
    else
        hd_sdnotify_ready("running");

    event_base_dispatch(hd_m.base);

    hd_log_info("herald stopped");
    hd_sup_close_listeners();
    hd_admin_stop();
    hd_jwks_stop();
    hd_upgrade_stop();
    for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        event_free(sev[i]);
    event_base_free(hd_m.base);
    hd_shm_destroy(hd_m.shm);
    hd_limits_destroy(hd_m.limits);
    hd_conf_free(hd_m.conf);
    return hd_m.exit_code;
}
