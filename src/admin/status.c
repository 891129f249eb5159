/* SPDX-License-Identifier: Apache-2.0 */
/* Admin API routes that read the daemon's numbers: /v1/stats (JSON) and /metrics
 * (Prometheus text), both computed by src/metrics/ from what the operations layer shows. */
#include "admin/routes.h"

#include "metrics/metrics.h"
#include "ops/ops.h"

void slb_admin_stats(struct slb_ctl *ctl, struct slb_admin_resp *resp)
{
    struct slb_metrics_view v;
    slb_ops_metrics_view(ctl, &v);
    resp->json = slb_metrics_stats_json(&v);
}

void slb_admin_metrics(struct slb_ctl *ctl, struct slb_admin_resp *resp)
{
    struct slb_metrics_view v;
    slb_ops_metrics_view(ctl, &v);
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
