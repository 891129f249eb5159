/* SPDX-License-Identifier: Apache-2.0 */
/* Admin API routes of ACME (/v1/acme/...) and the "acme" member of a certificate body. The
 * protocol pieces exist (src/acme/) but the order flow is not wired end to end yet, so every
 * ACME request is refused with one clear answer instead of half working. */
#include "admin/routes.h"

#include <jansson.h>

static const char not_available[] =
    "ACME is not available yet in this version of slbd: upload the certificate and its key "
    "instead (docs/certificates.md)";

void slb_admin_acme(struct slb_ctl *ctl, const struct slb_admin_req *req,
                    struct slb_admin_resp *resp)
{
    slb_admin_error_simple(resp, 501, "acme_not_available", "%s", not_available);
}

bool slb_admin_acme_refuse_body(const json_t *body, struct slb_admin_resp *resp)
{
    if (!json_object_get(body, "acme"))
        return false;
    slb_admin_error_simple(resp, 501, "acme_not_available", "%s", not_available);
    return true;
}
