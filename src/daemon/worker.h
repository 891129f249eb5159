/* SPDX-License-Identifier: Apache-2.0 */
/* Worker threads: each runs its own event loop, accepts on its own SO_REUSEPORT sockets and
 * owns the connections it accepted from start to end (struct slb_worker and what connections
 * use of it are in net/worker_ctx.h). The control thread talks to a worker
 * only through its mailbox (an atomic pointer and an eventfd); a worker answers by bumping its
 * adopted generation and poking the control thread's ack eventfd, and never waits on it. */
#ifndef SLB_DAEMON_WORKER_H
#define SLB_DAEMON_WORKER_H

#include "net/worker_ctx.h"

int slb_worker_start(struct slb_worker *w, int id, int ack_fd);
/* Hand a snapshot to the worker (takes one reference for it). */
void slb_worker_post(struct slb_worker *w, struct slb_snapshot *snap);
void slb_worker_request_stop(struct slb_worker *w, uint64_t drain_ms);
void slb_worker_join(struct slb_worker *w);

#endif
