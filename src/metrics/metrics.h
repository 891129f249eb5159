/* SPDX-License-Identifier: Apache-2.0 */
/* Reading the per-worker counters: sums for /v1/stats (JSON) and /metrics (Prometheus text). */
#ifndef SLB_METRICS_METRICS_H
#define SLB_METRICS_METRICS_H

#include "config/snapshot.h"

#include <jansson.h>

struct slb_certstore;
struct slb_ocsp_fetcher;
struct slb_acme;

/* What the numbers are read from: the active snapshot and the daemon's facts, borrowed for
 * the call (the admin API fills it from the daemon). */
struct slb_metrics_view {
    const struct slb_snapshot *snap; /* NULL before the first */
    int nworkers;
    unsigned long conn_cap; /* client connections over all workers (slb_conn_cap) */
    uint64_t started_ms;
    bool reload_ok;                /* the last SIGHUP reload (or the start) was taken */
    uint64_t reload_ok_ms;         /* and when config.json was last loaded */
    struct slb_certstore *certs;   /* may be NULL */
    struct slb_ocsp_fetcher *ocsp; /* OCSP staple states; may be NULL */
    struct slb_acme *acme;         /* ACME certificate states; may be NULL */
    bool clustered;                /* cluster mode: the two below are shown */
    bool cluster_connected;
    long long cluster_revision;
    /* /metrics only: the per-certificate series (false: their families stay, empty). Not set
     * by slb_ops_metrics_view. */
    bool certificate_series;
};

/* Sum slot k of a per-worker counter array. */
uint64_t slb_metrics_sum(struct slb_wcount *w, int nworkers, int k);

json_t *slb_metrics_stats_json(const struct slb_metrics_view *v);
/* Sample connection totals of s's listeners for the per-second rates; call once a second. */
void slb_metrics_sample(const struct slb_snapshot *s);
/* Prometheus text exposition format; malloc'd, *len set. */
char *slb_metrics_prometheus(const struct slb_metrics_view *v, size_t *len);

#endif
