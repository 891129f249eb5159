/* SPDX-License-Identifier: Apache-2.0 */
/* A client connection's hold on the configuration (http and https listeners, HTTP/1.1 and
 * HTTP/2): the listener it serves, the worker snapshot that listener lives in, and the
 * worker's view of its group. The connection moves to the newest configuration of its
 * listening socket as it goes, except for its TLS state, which keeps the configuration of its
 * handshake held. */
#ifndef SLB_HTTP_BIND_H
#define SLB_HTTP_BIND_H

#include "net/worker_ctx.h"

#include <stdbool.h>

struct slb_http_bind {
    struct slb_listener_rt *l; /* the listener requests use now */
    struct slb_wgroup *wg;     /* its group in the snapshot that holds it; NULL: none */
    struct slb_wsnap *ws;      /* held: the configuration of the accept or of the handshake */
    struct slb_wsnap *rws;     /* held when not NULL: the newer one l lives in (after TLS) */
};

/* Bind to listener l of the worker's current snapshot (taking a hold). */
void slb_http_bind_init(struct slb_http_bind *b, struct slb_worker *w, struct slb_listener_rt *l);

/* The snapshot l lives in (the one requests use). */
static inline struct slb_wsnap *slb_http_bind_snap(const struct slb_http_bind *b)
{
    return b->rws ? b->rws : b->ws;
}

/* The listening address is gone from the worker's configuration. */
static inline bool slb_http_bind_gone(const struct slb_http_bind *b, const struct slb_worker *w)
{
    return b->l->sock->slot[w->id].cur == NULL;
}

/* The listener of the worker's newest configuration at this address when it differs from
 * the bound one and may take over (the same protocol; https with its TLS contexts), else
 * NULL. */
struct slb_listener_rt *slb_http_bind_newer(const struct slb_http_bind *b,
                                            const struct slb_worker *w);

/* Move to cur (from slb_http_bind_newer): counts the connection active there instead, and
 * holds the current snapshot. tls_bound: a TLS state refers to the configuration held now,
 * which stays held (as ws) while requests use the new one. */
void slb_http_bind_move(struct slb_http_bind *b, struct slb_worker *w, struct slb_listener_rt *cur,
                        bool tls_bound);

/* Let go of the holds (the connection closes). */
void slb_http_bind_release(struct slb_http_bind *b);

#endif
