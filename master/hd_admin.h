/*
 * The master's admin HTTP server (libevent evhttp): GET /metrics
 * (Prometheus text), GET /health (JSON, 200 or 503), GET /stats (JSON),
 * GET /events (JSON: recent reloads and worker restarts) and GET / (the
 * session monitor page, master/monitor.html, which polls /stats and
 * /events).
 * Runs on the master's event loop; every request renders from a fresh
 * shm snapshot, so it never blocks a worker. docs/metrics.md documents the
 * endpoints.
 *
 * Access: when admin.token is set every request must carry
 * "Authorization: Bearer <token>" (compared in constant time), else 401;
 * except GET / itself, a static page holding no data (a browser cannot
 * send a bearer token when it navigates): its script sends the token with
 * every poll.
 * Unknown paths get 404, methods other than GET and HEAD get 405 (HEAD is
 * answered as GET without a body).
 *
 * Ownership: the module copies what it needs from conf (address, port,
 * token); conf may be freed after a call returns. shm must outlive
 * hd_admin_stop().
 */
#ifndef HD_ADMIN_H
#define HD_ADMIN_H

#include "hd_conf.h"
#include "hd_shm.h"

struct event_base;

/*
 * Start serving on conf->admin_address:admin_port (admin_port 0: the
 * server stays off, but a later reconfigure may turn it on). Also starts
 * the 1 s timer that samples the node-wide connection peak. Returns 0 or
 * -errno (bind failed, or already started).
 */
int hd_admin_start(struct event_base *base, const hd_conf_t *conf,
                   hd_shm_t *shm);

/*
 * On reload: take the new token at once; if the address or port changed,
 * bind the new socket and then close the old one (when both cannot be
 * open at the same time, the old one is closed first and restored if the
 * new bind fails). Port 0 turns the server off. Returns 0 or -errno, in
 * which case the server keeps its previous address when it could.
 */
int hd_admin_reconfigure(const hd_conf_t *conf);

/*
 * Remember an event for GET /events and the monitor page (the last
 * HD_ADMIN_EVENTS, oldest dropped): reloads and unplanned worker exits.
 * detail may be NULL. Copies both strings. Callable before start.
 */
#define HD_ADMIN_EVENTS 32
void hd_admin_event(const char *event, const char *detail);
/* An unplanned worker exit with its wait status, as an event. */
void hd_admin_event_exit(unsigned worker_id, int pid, int status);

/* Close the socket and the timer; idempotent. */
void hd_admin_stop(void);

/* Binary upgrade: the admin socket's fd (-1: none), and, in the new
 * master before hd_admin_start(), the inherited one to serve instead of
 * binding (used when the config names the same address and port). */
int  hd_admin_fd(void);
void hd_admin_adopt(int fd, const char *address, int port);

#endif
