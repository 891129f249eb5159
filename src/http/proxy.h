/* SPDX-License-Identifier: Apache-2.0 */
/* The HTTP/1.1 reverse proxy of `http` and `https` listeners. */
#ifndef SLB_HTTP_PROXY_H
#define SLB_HTTP_PROXY_H

#include "net/worker_ctx.h"

#include <sys/socket.h>

void slb_http_accept(struct slb_worker *w, struct slb_listener_rt *l, int fd,
                     const struct sockaddr_storage *peer, socklen_t peerlen);
/* sizeof the per-connection state, for memory accounting and tests. */
size_t slb_http_conn_size(void);
/* Free the worker's HTTP state (backend connection pools) at thread exit. */
void slb_http_worker_free(struct slb_worker *w);

#endif
