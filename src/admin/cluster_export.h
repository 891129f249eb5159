/* SPDX-License-Identifier: Apache-2.0 */
/* GET /v1/cluster/export (see cluster_export.c). */
#ifndef SLB_ADMIN_CLUSTER_EXPORT_H
#define SLB_ADMIN_CLUSTER_EXPORT_H

#include "admin/admin.h"

struct slb_ctl;

/* Answers {"documents": {"config": {...}, "tickets": {...}, "certs/ID": {...}, ...}}: every
 * document of the state, decrypted, as the state directory stores it. */
void slb_admin_cluster_export(struct slb_ctl *ctl, const struct slb_admin_req *req,
                              struct slb_admin_resp *resp);

#endif
