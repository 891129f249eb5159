/* SPDX-License-Identifier: Apache-2.0 */
/* Admin API routes that read the daemon's numbers: /v1/stats (JSON) and /metrics
 * (Prometheus text), both computed by src/metrics/ from what the operations layer shows. */
#include "admin/routes.h"

#include "metrics/metrics.h"
#include "ops/ops.h"

#include <string.h>

/* GET /v1/stats[?scope=node|cluster]. scope=cluster in cluster mode is answered by the admin
 * server, which asks the other nodes (admin/cluster_stats.h); it reaches here only on a single
 * node. */
void slb_admin_stats(struct slb_ctl *ctl, const struct slb_admin_req *req,
                     struct slb_admin_resp *resp)
{
    static const char *const params[] = {"scope", NULL};
    static const char *const scopes[] = {"node", "cluster", NULL};
    char scope[16];
    if (!slb_admin_params_ok(req, params, resp))
        return;
    if (!slb_admin_method_is(req, "GET")) {
        slb_admin_not_allowed(resp, "GET");
        return;
    }
    if (!slb_admin_filter_enum(req, "scope", scopes, scope, sizeof(scope), resp))
        return;
    bool connected;
    long long rev;
    if (strcmp(scope, "cluster") == 0) {
        if (!slb_ops_cluster(ctl, &connected, &rev))
            slb_admin_error_simple(resp, 404, "not_clustered",
                                   "this slbd is a single node (started without --cluster)");
        else
            slb_admin_error_simple(resp, 503, "cluster_unavailable",
                                   "the other nodes could not be asked");
        return;
    }
    struct slb_metrics_view v;
    slb_ops_metrics_view(ctl, &v);
    resp->json = slb_metrics_stats_json(&v);
}

void slb_admin_metrics(struct slb_ctl *ctl, bool certificates, struct slb_admin_resp *resp)
{
    struct slb_metrics_view v;
    slb_ops_metrics_view(ctl, &v);
    v.certificate_series = certificates;
    size_t len = 0;
    char *text = slb_metrics_prometheus(&v, &len);
    if (!text) {
        slb_admin_error_simple(resp, 500, "internal", "out of memory");
        return;
    }
    resp->text = text;
    resp->text_len = len;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}
