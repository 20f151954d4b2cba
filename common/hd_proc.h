/*
 * Process helpers: process titles, the signal mask around fork, and the
 * fd sweep a freshly forked worker does so it holds nothing of the
 * master's (other slots' listen sockets, other workers' control sockets,
 * the admin socket).
 */
#ifndef HD_PROC_H
#define HD_PROC_H

#include <signal.h>
#include <stddef.h>

/* Call once at the top of main(), before anything reads environ. */
void hd_proc_title_init(int argc, char **argv);
/* Set /proc/PID/cmdline (and comm, truncated) to the formatted title. */
void hd_proc_title_set(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Block every signal, saving the old mask (around fork). */
void hd_proc_block_all(sigset_t *old);
void hd_proc_restore_mask(const sigset_t *old);
/* In a forked child: default dispositions for every catchable signal, empty mask. */
void hd_proc_reset_signals(void);

/* Close every fd >= 3 not listed in keep[0..nkeep). Returns 0 or -errno. */
int hd_proc_close_fds_except(const int *keep, size_t nkeep);

/*
 * Raise the RLIMIT_NOFILE soft limit to the hard limit (to fs.nr_open when
 * the hard limit is unlimited), as the master does at start: workers
 * inherit it, and "workers": "auto" counts on it (hd_conf_fd_limit()).
 * Returns the soft limit now in force, or -errno.
 */
long hd_proc_raise_nofile(void);

/* A SOCK_SEQPACKET socketpair, both ends non-blocking and close-on-exec. */
int hd_proc_ctl_pair(int sv[2]);

#endif
