/* SPDX-License-Identifier: Apache-2.0 */
/* Adding up several nodes' GET /v1/stats answers into one of the same shape: used by the
 * admin API's GET /v1/stats?scope=cluster and by slbctl. Pure: JSON in, JSON out. */
#ifndef SLB_METRICS_STATS_SUM_H
#define SLB_METRICS_STATS_SUM_H

#include <jansson.h>

/* Add src (one node's /v1/stats) into dst (the sum so far, or the first node's answer).
 * Counters and gauges add up; identities, settings and the generation stay as dst has them;
 * a server is "down" when it is down for any node; mean response times are weighted by
 * requests; items of arrays match by "name", else by "address" and "port". */
void slb_stats_sum(json_t *dst, json_t *src);

#endif
