/* SPDX-License-Identifier: Apache-2.0 */
/* Reading the per-worker counters: sums for /v1/stats (JSON) and /metrics (Prometheus text). */
#ifndef SLB_METRICS_METRICS_H
#define SLB_METRICS_METRICS_H

#include "config/snapshot.h"

#include <jansson.h>

struct slb_ctl;

/* Sum slot k of a per-worker counter array. */
uint64_t slb_metrics_sum(struct slb_wcount *w, int nworkers, int k);

json_t *slb_metrics_stats_json(struct slb_ctl *ctl);
/* Sample connection totals for the per-second rates; call once a second. */
void slb_metrics_sample(struct slb_ctl *ctl);
/* Prometheus text exposition format; malloc'd, *len set. */
char *slb_metrics_prometheus(struct slb_ctl *ctl, size_t *len);

#endif
