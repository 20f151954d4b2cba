/*
 * Service-manager readiness notification: the sd_notify(3) datagram
 * protocol, without libsystemd.
 *
 * Under systemd with Type=notify, $NOTIFY_SOCKET names a unix datagram
 * socket (a path, or an abstract name written with a leading '@'); each
 * notification is one datagram of newline-separated VAR=VALUE lines. When
 * the variable is unset (not started by systemd) every call is a no-op.
 *
 * Only the master notifies: with the default NotifyAccess=main systemd
 * ignores datagrams from any other pid, so workers, which inherit the
 * environment, must not (and do not) call these.
 *
 * Nothing here allocates or keeps state: each call opens a socket, sends
 * one datagram and closes it. Calls are rare (start, reload, stop).
 */
#ifndef HD_SDNOTIFY_H
#define HD_SDNOTIFY_H

/*
 * Send state (e.g. "READY=1" or "STOPPING=1\nSTATUS=draining") to
 * $NOTIFY_SOCKET. Returns 1 when the datagram was sent, 0 when
 * NOTIFY_SOCKET is unset or empty (nothing to do), and a negative errno on
 * failure: -EINVAL for a malformed socket name (neither an absolute path
 * nor '@'-prefixed, or too long) or a NULL/empty state, -EAFNOSUPPORT for
 * socket kinds we do not speak (vsock:), or the error of socket() or
 * sendto(). A failure is never fatal to the caller: systemd then times
 * the service out, which is the right outcome for a broken notify socket.
 */
int hd_sdnotify(const char *state);

/* "READY=1" with a STATUS= line (status may be NULL: no STATUS line). */
int hd_sdnotify_ready(const char *status);

/*
 * "RELOADING=1" and "MONOTONIC_USEC=<CLOCK_MONOTONIC now, in us>": a reload
 * starts. systemd >= 253 needs the timestamp to match the reload to the
 * READY=1 that ends it; older versions ignore it. Send hd_sdnotify_ready()
 * when the reload ends, whether it succeeded or not.
 */
int hd_sdnotify_reloading(void);

/* "STOPPING=1": a stop has started; systemd will not restart the unit
 * on the exit that follows. */
int hd_sdnotify_stopping(void);

#endif
