#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hd_alloc.h"
#include "hd_proc.h"

extern char **environ;

static char  *title_start; /* argv[0] */
static size_t title_cap;   /* contiguous bytes argv+environ strings span */

/*
 * The nginx trick: argv strings and then environ strings are contiguous in
 * memory. Move environ to the heap, and the whole span becomes room for the
 * title. The kernel reports the span as /proc/PID/cmdline.
 */
void
hd_proc_title_init(int argc, char **argv)
{
    char  *end;
    size_t n;
    int    i;

    if (argc < 1 || argv[0] == NULL)
        return;
    end = argv[0] + strlen(argv[0]) + 1;
    for (i = 1; i < argc; i++)
        if (argv[i] == end)
            end = argv[i] + strlen(argv[i]) + 1;
    for (n = 0; environ[n] != NULL; n++)
        if (environ[n] == end)
            end = environ[n] + strlen(environ[n]) + 1;

    char **env = hd_calloc(n + 1, sizeof(char *));
    for (size_t k = 0; k < n; k++)
        env[k] = hd_strdup(environ[k]);
    environ = env;

    /* argv[1..] still points into the span: the caller must have parsed
     * its arguments into copies before the first hd_proc_title_set(). */
    title_start = argv[0];
    title_cap = (size_t) (end - argv[0]);
}

void
hd_proc_title_set(const char *fmt, ...)
{
    char    buf[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);

    if (title_start != NULL && title_cap > 1) {
        size_t n = strlen(buf);
        if (n > title_cap - 1)
            n = title_cap - 1;
        memcpy(title_start, buf, n);
        memset(title_start + n, 0, title_cap - n);
    }
    (void) prctl(PR_SET_NAME, buf, 0, 0, 0); /* comm: first 15 bytes */
}

void
hd_proc_block_all(sigset_t *old)
{
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, old);
}

void
hd_proc_restore_mask(const sigset_t *old)
{
    sigprocmask(SIG_SETMASK, old, NULL);
}

void
hd_proc_reset_signals(void)
{
    struct sigaction sa;
    sigset_t         none;
    int              s;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    for (s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP)
            continue;
        (void) sigaction(s, &sa, NULL);
    }
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

int
hd_proc_close_fds_except(const int *keep, size_t nkeep)
{
    DIR           *d;
    struct dirent *de;
    int            dfd, fd, *victims = NULL;
    size_t         nv = 0, cap = 0, i;

    d = opendir("/proc/self/fd");
    if (d == NULL)
        return -errno;
    dfd = dirfd(d);
    /* collect first: closing while iterating the directory is unsafe */
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        fd = atoi(de->d_name);
        if (fd < 3 || fd == dfd)
            continue;
        for (i = 0; i < nkeep; i++)
            if (keep[i] == fd)
                break;
        if (i < nkeep)
            continue;
        if (nv == cap) {
            cap = cap ? cap * 2 : 32;
            victims = hd_realloc(victims, cap * sizeof(int));
        }
        victims[nv++] = fd;
    }
    closedir(d);
    for (i = 0; i < nv; i++)
        close(victims[i]);
    free(victims);
    return 0;
}

int
hd_proc_ctl_pair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   sv)
        < 0)
        return -errno;
    return 0;
}

long
hd_proc_raise_nofile(void)
{
    struct rlimit rl;
    rlim_t        want;
    long          nr_open = 0;
    FILE         *f;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    want = rl.rlim_max;
    if (want == RLIM_INFINITY) {
        /* setrlimit() refuses anything above fs.nr_open */
        f = fopen("/proc/sys/fs/nr_open", "re");
        if (f != NULL) {
            if (fscanf(f, "%ld", &nr_open) != 1)
                nr_open = 0;
            fclose(f);
        }
        want = nr_open > 0 ? (rlim_t) nr_open : 1048576;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            return -errno;
    }
    return rl.rlim_cur == RLIM_INFINITY ? (long) want : (long) rl.rlim_cur;
}
