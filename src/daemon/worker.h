/* SPDX-License-Identifier: Apache-2.0 */
/* Worker threads: each runs its own event loop, accepts on its own SO_REUSEPORT sockets and
 * owns the connections it accepted from start to end (struct slb_worker and what connections
 * use of it are in net/worker_ctx.h). The control thread talks to a worker
 * only through its mailbox (an atomic pointer and an eventfd); a worker answers by bumping its
 * adopted generation and poking the control thread's ack eventfd, and never waits on it. */
#ifndef SLB_DAEMON_WORKER_H
#define SLB_DAEMON_WORKER_H

#include "net/worker_ctx.h"

/* cap: the most client connections this worker holds at once (its share of the process's
 * connection cap, slb_conn_cap); at the cap it stops accepting and new clients wait in the
 * kernel's listen backlog until connections close. */
int slb_worker_start(struct slb_worker *w, int id, int ack_fd, unsigned long cap);
/* The process's connection cap from RLIMIT_NOFILE: two descriptors per proxied connection
 * (client and backend), after a reserve of max(64, 5 %) for the admin API, health checks,
 * state files, logs and the sockets and pipes slbd holds anyway. *nofile and *reserve (may
 * be NULL) say what it was derived from. */
unsigned long slb_conn_cap(unsigned long *nofile, unsigned long *reserve);
/* Hand a snapshot to the worker (takes one reference for it). */
void slb_worker_post(struct slb_worker *w, struct slb_snapshot *snap);
/* gentle: see gentle_drain (net/worker_ctx.h). */
void slb_worker_request_stop(struct slb_worker *w, uint64_t drain_ms, bool gentle);
void slb_worker_join(struct slb_worker *w);

#endif
