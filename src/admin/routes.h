/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the admin API's route files. */
#ifndef SLB_ADMIN_ROUTES_H
#define SLB_ADMIN_ROUTES_H

#include "admin/admin.h"

#include <stdbool.h>

struct slb_ctl;

bool slb_admin_method_is(const struct slb_admin_req *req, const char *m);
void slb_admin_not_allowed(struct slb_admin_resp *resp, const char *allow);
json_t *slb_admin_body_object(const struct slb_admin_req *req, struct slb_admin_resp *resp);
/* The same, accepting NUL bytes inside strings (certificate bodies: the validators then
 * report binary input as invalid_pem). */
json_t *slb_admin_body_object_binary(const struct slb_admin_req *req, struct slb_admin_resp *resp);
int slb_admin_split(const char *path, char *coll, char *id, char *sub, size_t size);

/* Route families in their own files. */
void slb_admin_certificates(struct slb_ctl *ctl, const char *id, const char *sub,
                            const struct slb_admin_req *req, struct slb_admin_resp *resp);
void slb_admin_stats(struct slb_ctl *ctl, struct slb_admin_resp *resp);
void slb_admin_metrics(struct slb_ctl *ctl, struct slb_admin_resp *resp);

#endif
