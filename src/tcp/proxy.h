/* SPDX-License-Identifier: Apache-2.0 */
/* Layer-4 pass-through for `tcp` listeners: a client connection joined to one backend server,
 * bytes copied both ways, half-close passed on, PROXY protocol header first when asked. */
#ifndef SLB_TCP_PROXY_H
#define SLB_TCP_PROXY_H

#include "lb/health.h"
#include "net/worker_ctx.h"

#include <sys/socket.h>

void slb_tcp_accept(struct slb_worker *w, struct slb_listener_rt *l, int fd,
                    const struct sockaddr_storage *peer, socklen_t peerlen);

/* Close the calling worker thread's pooled splice pipes (at thread exit). */
void slb_tcp_thread_exit(void);

/* Start a non-blocking connect to server i of a group; returns the fd (connect in progress or
 * done) or -errno. Shared with the HTTP proxy. */
int slb_backend_connect(const struct slb_server_cfg *srv);
/* Hash key for sch (source address) and tch (4-tuple) scheduling. */
uint64_t slb_sched_key(int scheduler, const struct sockaddr_storage *peer,
                       const struct sockaddr_storage *local);

#endif
