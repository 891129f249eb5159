/* SPDX-License-Identifier: Apache-2.0 */
/* GET /v1/cluster/export: every document of the state as this node's backend holds it (the
 * configuration, each certificate with its private key, the ticket key ring), decrypted, in
 * the shape the state directory stores them, for `slbctl cluster export DIR` to write a
 * directory a single node can start from. Admin scope only (slb_auth_needed): it carries
 * private keys. Works on a single node too (a backup of the state directory). */
#include "admin/cluster_export.h"

#include "admin/routes.h"
#include "daemon/control.h"
#include "ops/ops.h"
#include "state/backend.h"

#include <errno.h>
#include <string.h>

#define EXPORT_DOC_MAX (16u << 20)

struct export_ctx {
    struct slb_backend *b;
    json_t *docs;
    char failed[SLB_DOC_KEY_MAX];
    int rc;
};

/* Adds document key to the answer; an absent one is skipped. */
static int add_doc(struct export_ctx *x, const char *key)
{
    struct slb_doc d = {0};
    struct slb_err err = {0};
    int rc = slb_backend_get(x->b, key, EXPORT_DOC_MAX, &d, &err);
    if (rc == -ENOENT)
        return 0;
    json_t *v = NULL;
    if (rc == 0) {
        v = json_loadb(d.data, d.len, JSON_ALLOW_NUL, NULL);
        rc = json_is_object(v) ? 0 : SLB_EINVAL;
    }
    slb_doc_clear(&d);
    if (rc < 0) {
        json_decref(v);
        snprintf(x->failed, sizeof(x->failed), "%s", key);
        x->rc = rc;
        return rc;
    }
    json_object_set_new(x->docs, key, v);
    return 0;
}

static int add_cert(const char *key, void *arg)
{
    return add_doc(arg, key);
}

void slb_admin_cluster_export(struct slb_ctl *ctl, const struct slb_admin_req *req,
                              struct slb_admin_resp *resp)
{
    if (!slb_admin_method_is(req, "GET")) {
        slb_admin_not_allowed(resp, "GET");
        return;
    }
    struct export_ctx x = {.b = ctl->backend, .docs = json_object()};
    if (!x.docs) {
        slb_admin_error_simple(resp, 500, "internal", "out of memory");
        return;
    }
    int rc = add_doc(&x, SLB_DOC_CONFIG);
    if (rc == 0)
        rc = add_doc(&x, SLB_DOC_TICKETS);
    if (rc == 0)
        rc = slb_backend_list(x.b, SLB_DOC_CERTS, add_cert, &x);
    if (rc < 0) {
        json_decref(x.docs);
        char where[256];
        slb_backend_where(x.b, x.failed[0] ? x.failed : SLB_DOC_CERTS, where, sizeof(where));
        slb_admin_error_simple(resp, 500, "read_failed", "cannot read %s: %s", where,
                               slb_strerror(rc));
        return;
    }
    if (!json_object_get(x.docs, SLB_DOC_CONFIG))
        json_object_set(x.docs, SLB_DOC_CONFIG, (json_t *)slb_ops_config(ctl));
    slb_admin_answer(resp, 200, json_pack("{s:o}", "documents", x.docs));
}
