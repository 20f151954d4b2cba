/*
 * The connect and subscribe proxy: HTTP POSTs to the application's
 * backend (proxy.connect_url, proxy.subscribe_url) made with libcurl's
 * multi interface on the worker's libev loop, so a slow backend delays
 * only the connections waiting for it. At most proxy.max_requests per
 * worker are in flight (more: refused at once as unavailable); each ends
 * within proxy.timeout_ms; connections to the backend are kept alive and
 * reused.
 *
 * Ownership: the callback gets the reply body (valid during the call
 * only), or NULL when the backend could not be reached, timed out, or
 * answered with a status other than 200. A request whose connection
 * closes first is cancelled (hd_backend_conn_gone()); its callback never
 * runs.
 */
#ifndef HD_BACKEND_H
#define HD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "hd_conn.h"

/* body == NULL: unavailable; why says what (for logs and the client). */
typedef void hd_backend_cb(hd_conn_t *c, const char *body, size_t len,
                           const char *why, int64_t id, void *arg);

void hd_backend_init(void);
void hd_backend_shutdown(void);

/* At the upgrade filter: keep the configured request headers of wsi's
 * upgrade, by fd, for the connection's requests to the backend (freed by
 * hd_backend_conn_gone()). */
struct lws;
void hd_backend_filter(struct lws *wsi);

/*
 * POST json (a JSON text, copied) to url for c. 0 when sent (cb comes
 * later), -EBUSY over proxy.max_requests, -ENOMEM if libcurl failed.
 */
int hd_backend_post(hd_conn_t *c, const char *url, const char *json,
                    hd_backend_cb *cb, int64_t id, void *arg,
                    void (*arg_free)(void *));

/* c is closing: cancel its requests (their callbacks never run; their
 * arg goes to arg_free when one was given). */
void hd_backend_conn_gone(hd_conn_t *c);

#endif
