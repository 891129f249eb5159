/* SPDX-License-Identifier: Apache-2.0 */
/* Health checks of backend servers, run by the control thread on its own event loop with
 * non-blocking sockets: workers never wait for a probe. A server's verdict is published to
 * workers through the atomic srv_rt->healthy flag. */
#ifndef SLB_LB_HEALTH_H
#define SLB_LB_HEALTH_H

#include "config/snapshot.h"
#include "event/loop.h"

struct slb_health;

struct slb_health *slb_health_new(struct slb_loop *loop);
/* Check the servers of this snapshot from now on (call after each publication). */
void slb_health_update(struct slb_health *h, const struct slb_snapshot *cur);
void slb_health_free(struct slb_health *h);
/* Cancel a probe in flight for srv (called when its runtime object is freed). */
void slb_health_probe_cancel(struct slb_srv_rt *srv);

#endif
