/* SPDX-License-Identifier: Apache-2.0 */
/* Health checks of backend servers, run by the control thread on its own event loop with
 * non-blocking sockets: workers never wait for a probe. A server's verdict is published to
 * workers through the atomic srv_rt->healthy flag. */
#ifndef SLB_LB_HEALTH_H
#define SLB_LB_HEALTH_H

#include "config/snapshot.h"
#include "event/loop.h"

#include <errno.h>

struct slb_health;

/* Moves after every change of a server's healthy flag (after the flag is stored): workers
 * read the flags of a group's servers again only when it moved (slb_wgroup_pick), instead of
 * reading all of them at each pick. */
extern _Atomic uint64_t slb_health_epoch;
static inline void slb_health_epoch_bump(void)
{
    atomic_fetch_add_explicit(&slb_health_epoch, 1, memory_order_release);
}

struct slb_health *slb_health_new(struct slb_loop *loop);
/* Check the servers of this snapshot from now on (call after each publication). */
void slb_health_update(struct slb_health *h, const struct slb_snapshot *cur);
void slb_health_free(struct slb_health *h);
/* Passive checks, called by workers where an exchange with srv ends: result is 0 or the
 * response's HTTP status for an exchange that completed, a negative errno when it failed
 * (connect error, reset, timeout, malformed response: SLB_XCHG_FAILED when there is no errno).
 * Our own shortage (EMFILE, ENFILE, ENOMEM, ENOBUFS) is not held against the server. After the
 * group's consecutive_failures failed exchanges in a row (5xx count with include_5xx), the
 * server is ejected: out of rotation for every worker until the control thread ends the
 * ejection. No-op when the group has passive checks off; no allocation, no lock. wid: the
 * calling worker's id. */
#define SLB_XCHG_FAILED (-EIO)
void slb_health_observe(struct slb_srv_rt *srv, int wid, int result);
/* Cancel a probe in flight for srv (called when its runtime object is freed). */
void slb_health_probe_cancel(struct slb_srv_rt *srv);

#endif
