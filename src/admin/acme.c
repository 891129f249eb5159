/* SPDX-License-Identifier: Apache-2.0 */
/* Admin API routes of ACME: /v1/acme/accounts, and the certificate routes' ACME parts (a
 * certificate body with "acme", the "acme" member of a resource, certificates not issued
 * yet). The work is in acme/order.h. */
#include "admin/routes.h"

#include "acme/order.h"
#include "core/err.h"
#include "daemon/control.h"

#include <jansson.h>
#include <string.h>

/* /v1/acme/accounts[/{name}] */
void slb_admin_acme(struct slb_ctl *ctl, const struct slb_admin_req *req,
                    struct slb_admin_resp *resp)
{
    char seg[SLB_ADMIN_MAX_SEGS][SLB_ADMIN_SEG];
    int n = slb_admin_split(req->path, seg);
    if (n < 2 || n > 3 || strcmp(seg[1], "accounts") != 0) {
        slb_admin_error_simple(resp, 404, "not_found", "no such endpoint: %s", req->path);
        return;
    }
    if (n == 3) {
        json_t *a =
            slb_admin_method_is(req, "GET") ? slb_acme_account_json(ctl->acme, seg[2]) : NULL;
        if (!slb_admin_method_is(req, "GET"))
            slb_admin_not_allowed(resp, "GET");
        else if (!a)
            slb_admin_error_simple(resp, 404, "not_found", "no ACME account named \"%s\"", seg[2]);
        else
            slb_admin_answer(resp, 200, a);
        return;
    }
    if (slb_admin_method_is(req, "GET")) {
        slb_admin_answer(resp, 200, slb_acme_accounts_json(ctl->acme));
        return;
    }
    if (!slb_admin_method_is(req, "POST")) {
        slb_admin_not_allowed(resp, "GET, POST");
        return;
    }
    json_t *body = slb_admin_body_object(req, resp), *out = NULL;
    if (!body)
        return;
    struct slb_err err = {0};
    if (slb_acme_account_create(ctl->acme, body, &out, &err) < 0)
        slb_admin_error(resp, &err);
    else
        slb_admin_answer(resp, 201, out);
    json_decref(body);
}

bool slb_admin_acme_create(struct slb_ctl *ctl, const json_t *body, bool replace,
                           struct slb_admin_resp *resp)
{
    if (!json_object_get(body, "acme"))
        return false;
    struct slb_err err = {0};
    json_t *out = NULL;
    if (replace)
        slb_admin_error_simple(resp, 400, "invalid_body",
                               "acme: an ACME certificate is created with POST /v1/certificates "
                               "and renews itself; it cannot replace a certificate");
    else if (slb_acme_cert_create(ctl->acme, body, &out, &err) < 0)
        slb_admin_error(resp, &err);
    else
        slb_admin_answer(resp, 202, out);
    return true;
}

void slb_admin_acme_decorate(struct slb_ctl *ctl, json_t *resource, const char *id)
{
    json_t *a = slb_acme_cert_json(ctl->acme, id);
    if (a)
        json_object_set_new(resource, "acme", a);
}

bool slb_admin_acme_pending(struct slb_ctl *ctl, const char *id, const struct slb_admin_req *req,
                            struct slb_admin_resp *resp)
{
    json_t *r = slb_acme_pending_json(ctl->acme, id);
    if (!r)
        return false;
    if (slb_admin_method_is(req, "GET"))
        slb_admin_answer(resp, 200, r);
    else {
        json_decref(r);
        slb_admin_error_simple(resp, 409, "acme_pending",
                               "certificate %s is being ordered from its ACME CA; it can be read "
                               "until it is issued",
                               id);
    }
    return true;
}

json_t *slb_admin_acme_pending_list(struct slb_ctl *ctl)
{
    return slb_acme_pending_list(ctl->acme);
}
