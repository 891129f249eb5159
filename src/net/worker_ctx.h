/* SPDX-License-Identifier: Apache-2.0 */
/* What a connection sees of the worker thread that owns it: the worker's loop and connection
 * list, its holds on configuration snapshots and its view of backend groups. Protocols
 * (src/http/, src/tcp/) use this; starting, feeding and stopping the thread is the daemon's
 * (daemon/worker.h), so no protocol depends on the daemon. */
#ifndef SLB_NET_WORKER_CTX_H
#define SLB_NET_WORKER_CTX_H

#include "config/snapshot.h"
#include "event/loop.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct slb_worker;

/* Worker-local view of one group in one snapshot: scheduler state and scratch arrays. */
struct slb_wgroup {
    struct slb_group_rt *g;
    void *sched_state;
    /* The servers usable (up, weight > 0) as of health epoch `epoch`, refreshed only when
     * slb_health_epoch moves; gen counts the refreshes (the schedulers' usable[] generation). */
    uint8_t *usable;
    uint64_t epoch, gen;
};

/* A worker's hold on a snapshot. Connections count themselves in nconns (worker-local, no
 * atomics); when the worker has moved on to a newer snapshot and nconns drops to zero the
 * hold is released (the snapshot's only atomic operation on a worker). */
struct slb_wsnap {
    struct slb_snapshot *snap;
    struct slb_worker *worker;
    unsigned long nconns;
    struct slb_wgroup *groups; /* parallel to snap->groups */
    struct slb_wsnap *next;    /* the worker's list of older holds */
};

/* Every connection object starts with this link so a worker can abort what is left when a
 * drain times out. abort must unlink and free (or defer the free of) the connection. */
struct slb_conn_link {
    struct slb_conn_link *prev, *next;
    struct slb_worker *worker; /* set by slb_worker_link */
    void (*abort)(struct slb_conn_link *c);
    /* Optional: the worker stops (SIGTERM); close if idle, else finish the current work and
     * close. May unlink and close the connection. */
    void (*drain)(struct slb_conn_link *c);
    /* Optional: the worker adopted a new configuration (see its listener's socket slot: cur
     * is NULL once the listener is gone). May unlink and close the connection. */
    void (*reconfigured)(struct slb_conn_link *c);
};

struct slb_worker {
    int id;
    pthread_t thread;
    struct slb_loop loop;
    int wake_fd;
    struct slb_io wake_io;
    int ack_fd; /* the control thread's eventfd */
    _Atomic(struct slb_snapshot *) pending;
    _Atomic uint64_t adopted_gen;
    _Atomic int stop_req; /* 1: stop accepting and drain */
    _Atomic int exited;
    uint64_t drain_ms;
    uint64_t drain_deadline_ms;
    /* The drain follows a hand-over (net/handover.h): the listening sockets live on in the new
     * process, so a connection accepted here but still without its first request (in its TLS
     * handshake, or its request not yet arrived) is answered before it closes, as is the next
     * request of an idle keep-alive connection. Written before stop_req. */
    bool gentle_drain;
    struct slb_conn_link conns; /* list head of live connections */
    struct slb_wsnap *cur;
    struct slb_wsnap *old; /* older holds still used by connections */
    unsigned long nconns;  /* all live connections of this worker */
    /* The connection cap (see slb_worker_start): client connections linked in conns, this
     * worker's share of the cap, and whether its listening sockets are unwatched because
     * the share is used up. Worker-local: no atomics on the accept or close path. */
    unsigned long nclients;
    unsigned long cap;
    bool at_cap;
    /* Protocol-specific worker state (backend connection pools, TLS scratch). */
    void *http;
};

/* Connections: take and release a hold on the worker's current snapshot. */
static inline struct slb_wsnap *slb_wsnap_hold(struct slb_worker *w)
{
    w->cur->nconns++;
    w->nconns++;
    return w->cur;
}
/* Another hold on a snapshot already held (an HTTP/2 stream keeps the configuration it
 * started under while its connection moves on to a newer one). */
static inline void slb_wsnap_ref(struct slb_wsnap *ws)
{
    ws->nconns++;
    ws->worker->nconns++;
}
void slb_wsnap_release(struct slb_wsnap *ws);

static inline void slb_worker_link(struct slb_worker *w, struct slb_conn_link *c)
{
    c->worker = w;
    w->nclients++;
    c->next = w->conns.next;
    c->prev = &w->conns;
    w->conns.next->prev = c;
    w->conns.next = c;
}
static inline void slb_worker_unlink(struct slb_conn_link *c)
{
    if (!c->next)
        return;
    c->prev->next = c->next;
    c->next->prev = c->prev;
    c->next = c->prev = NULL;
    c->worker->nclients--;
}

/* Pick a server of wg for a new connection; tried[] marks servers already tried (may be NULL).
 * Returns the index or -1 when none is usable. */
int slb_wgroup_pick(struct slb_wgroup *wg, uint64_t key, const uint8_t *tried);
struct slb_wgroup *slb_wsnap_group(struct slb_wsnap *ws, const struct slb_group_rt *g);

/* For the worker thread: a new hold of snap (NULL when memory is short; the snapshot
 * reference stays the caller's then), the free of a hold, and letting go of the older holds
 * that no connection uses any more. */
struct slb_wsnap *slb_wsnap_new(struct slb_worker *w, struct slb_snapshot *snap);
void slb_wsnap_free(struct slb_wsnap *ws);
void slb_worker_release_idle_holds(struct slb_worker *w);

#endif
