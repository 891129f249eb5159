/* SPDX-License-Identifier: Apache-2.0 */
/* GET /v1/stats?scope=cluster: every other registered node's /v1/stats, asked in parallel over
 * the control loop's HTTP client, added up with this node's (metrics/stats_sum.h). */
#ifndef SLB_ADMIN_CLUSTER_STATS_H
#define SLB_ADMIN_CLUSTER_STATS_H

#include <jansson.h>
#include <stdbool.h>

struct slb_ctl;
struct slb_admin_fanout;

/* Called once from the control loop (a zero-delay timer, never from inside the HTTP client's
 * callbacks) with the answer (owned by the callee); the fan-out is freed after it returns. */
typedef void (*slb_admin_fanout_cb)(json_t *answer, void *data);

/* Start asking the other nodes, each with authorization (the caller's "Authorization" header
 * value, or NULL) over https when tls, else http, for at most 2 s. NULL when out of memory or
 * on a single node. */
struct slb_admin_fanout *slb_admin_fanout_stats(struct slb_ctl *ctl, const char *authorization,
                                                bool tls, slb_admin_fanout_cb done, void *data);
/* Abort (the connection closed): no callback after this. */
void slb_admin_fanout_cancel(struct slb_admin_fanout *f);

#endif
