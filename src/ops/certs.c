/* SPDX-License-Identifier: Apache-2.0 */
/* Operations on the certificate store. A replace (or a new CRL) of a certificate that
 * listeners use rebuilds their TLS contexts and publishes them before the operation returns;
 * when that fails the store goes back to the previous version. */
#include "ops/ops.h"
#include "ops/ops_int.h"

#include "cert/ocsp.h"
#include "cert/ocsp_fetch.h"
#include "config/config.h"
#include "core/log.h"
#include "daemon/control.h"

#include <stdlib.h>
#include <string.h>

/* How long a must-staple certificate's upload waits for its first OCSP response. */
#define MUST_STAPLE_WAIT_MS 5000

/* Names of the listeners that use certificate id (as server certificate or client CA), from
 * the running configuration's index by certificate id. */
static json_t *cert_users_of(struct slb_ctl *ctl, const char *id)
{
    struct slb_config *cfg = ctl->cur ? ctl->cur->cfg : NULL;
    if (!cfg || cfg->json != ctl->doc)
        return NULL;
    json_t *users = json_array();
    size_t n = slb_config_cert_users(cfg, id, NULL, 0);
    size_t *idx = n ? malloc(n * sizeof(*idx)) : NULL;
    if (!users || (n && !idx)) {
        free(idx);
        json_decref(users);
        return NULL;
    }
    slb_config_cert_users(cfg, id, idx, n);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(users, json_string(cfg->listeners[idx[i]]->name));
    free(idx);
    return users;
}

static json_t *cert_users_doc(const json_t *doc, const char *id)
{
    json_t *users = json_array();
    size_t i, j;
    json_t *l, *c;
    json_array_foreach(json_object_get(doc, "listeners"), i, l)
    {
        json_t *tls = json_object_get(l, "tls");
        bool uses = false;
        json_array_foreach(json_object_get(tls, "certificates"), j, c)
        {
            uses |= json_is_string(c) && strcmp(json_string_value(c), id) == 0;
        }
        const char *ca = json_string_value(json_object_get(tls, "client_ca"));
        uses |= ca && strcmp(ca, id) == 0;
        if (uses)
            json_array_append(users, json_object_get(l, "name"));
    }
    return users;
}

static json_t *cert_users(struct slb_ctl *ctl, const char *id)
{
    json_t *users = cert_users_of(ctl, id);
    return users ? users : cert_users_doc(ctl->doc, id);
}

json_t *slb_ops_cert_resource(struct slb_ctl *ctl, const struct slb_cert *c)
{
    json_t *j = slb_cert_to_json(c);
    json_object_set_new(j, "used_by", cert_users(ctl, c->id));
    return j;
}

json_t *slb_ops_cert_list(struct slb_ctl *ctl)
{
    json_t *list = slb_certstore_list(ctl->certs);
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        const char *cid = json_string_value(json_object_get(v, "id"));
        json_object_set_new(v, "used_by", cert_users(ctl, cid ? cid : ""));
        json_object_set_new(v, "ocsp", slb_ocsp_fetcher_json(ctl->ocsp, cid ? cid : ""));
    }
    return list;
}

struct slb_cert *slb_ops_cert_get(struct slb_ctl *ctl, const char *id, struct slb_err *err)
{
    struct slb_cert *c = slb_config_name_ok(id) ? slb_certstore_get(ctl->certs, id) : NULL;
    if (!c)
        slb_err_set(err, 404, "not_found", "", "no certificate with id \"%s\"", id);
    return c;
}

/* The certificate id, when it exists and op's precondition accepts its resource. */
static struct slb_cert *cert_for_change(struct slb_ctl *ctl, const char *id,
                                        const struct slb_op *op, struct slb_err *err)
{
    struct slb_cert *c = slb_ops_cert_get(ctl, id, err);
    if (!c)
        return NULL;
    json_t *now = slb_ops_cert_resource(ctl, c);
    int rc = slb_ops_precondition(op, now, "certificate", err);
    json_decref(now);
    return rc == 0 ? c : NULL;
}

/* The store keeps no second copy to try material on: a dry run would be a store and a
 * rollback, so it is refused rather than pretended. */
static int no_dry_run(const struct slb_op *op, struct slb_err *err)
{
    if (op && op->dry_run)
        return slb_err_set(err, 400, "invalid_value", "dry_run",
                           "dry_run is not available for certificate changes");
    return 0;
}

/* A certificate that requires stapling (must-staple) is kept only when a response can be had
 * now: fetched from its responder, waiting at most MUST_STAPLE_WAIT_MS. */
static bool must_staple_ok(struct slb_ctl *ctl, const struct slb_cert *c, struct slb_err *err)
{
    slb_ocsp_fetcher_tick_id(ctl->ocsp, c ? c->id : NULL);
    if (!c || !slb_ocsp_must_staple(c))
        return true;
    return slb_ocsp_fetcher_fetch_sync(ctl->ocsp, c->id, MUST_STAPLE_WAIT_MS, err) == 0;
}

/* Rebuild and publish the running configuration so listeners pick up new material. When
 * that fails the store goes back to prev (owned here), so nothing changed. */
static int republish(struct slb_ctl *ctl, const char *id, struct slb_cert *prev,
                     struct slb_err *err)
{
    json_t *users = cert_users(ctl, id);
    size_t n = json_array_size(users);
    json_decref(users);
    if (n == 0 || slb_ctl_apply(ctl, json_incref(ctl->doc), false, err) == 0) {
        slb_cert_unref(prev);
        return 0;
    }
    struct slb_err rerr = {0};
    if (slb_certstore_restore(ctl->certs, prev, &rerr) < 0)
        slb_error("certificate %s: rollback failed: %s", id, rerr.msg);
    return SLB_EINVAL;
}

int slb_ops_cert_create(struct slb_ctl *ctl, const struct slb_certval_upload *m,
                        const struct slb_op *op, struct slb_cert **out, struct slb_err *err)
{
    if (slb_ops_writable(ctl, err) < 0)
        return SLB_EINVAL;
    if (no_dry_run(op, err) < 0)
        return SLB_EINVAL;
    struct slb_cert *c = NULL;
    int rc = slb_certstore_create_material(ctl->certs, m, &c, err);
    if (rc < 0)
        return rc;
    if (!must_staple_ok(ctl, c, err)) {
        struct slb_err derr = {0};
        if (slb_certstore_delete(ctl->certs, c->id, &derr) < 0)
            slb_error("certificate %s: cannot remove it after refusing it: %s", c->id, derr.msg);
        slb_ocsp_fetcher_tick_id(ctl->ocsp, NULL); /* c went with the delete */
        return SLB_EINVAL;
    }
    if (out)
        *out = c;
    return 0;
}

int slb_ops_cert_replace(struct slb_ctl *ctl, const char *id, const struct slb_certval_upload *m,
                         const struct slb_op *op, struct slb_cert **out, struct slb_err *err)
{
    if (slb_ops_writable(ctl, err) < 0)
        return SLB_EINVAL;
    struct slb_cert *c = cert_for_change(ctl, id, op, err);
    if (!c)
        return SLB_EINVAL;
    if (no_dry_run(op, err) < 0)
        return SLB_EINVAL;
    slb_cert_ref(c);
    int rc = slb_certstore_replace_material(ctl->certs, id, m, out, err);
    if (rc < 0) {
        slb_cert_unref(c);
        return rc;
    }
    if (!must_staple_ok(ctl, slb_certstore_get(ctl->certs, id), err)) {
        struct slb_err rerr = {0};
        if (slb_certstore_restore(ctl->certs, c, &rerr) < 0)
            slb_error("certificate %s: rollback failed: %s", id, rerr.msg);
        slb_ocsp_fetcher_tick_id(ctl->ocsp, id);
        if (out)
            *out = NULL;
        return SLB_EINVAL;
    }
    rc = republish(ctl, id, c, err);
    if (rc < 0 && out)
        *out = NULL;
    slb_ocsp_fetcher_tick_id(ctl->ocsp, id);
    return rc;
}

int slb_ops_cert_set_crl(struct slb_ctl *ctl, const char *id, const char *pem,
                         const struct slb_op *op, struct slb_cert **out, struct slb_err *err)
{
    if (out)
        *out = NULL;
    if (slb_ops_writable(ctl, err) < 0)
        return SLB_EINVAL;
    struct slb_cert *c = cert_for_change(ctl, id, op, err);
    if (!c)
        return SLB_EINVAL;
    if (no_dry_run(op, err) < 0)
        return SLB_EINVAL;
    slb_cert_ref(c);
    int rc = slb_certstore_set_crl(ctl->certs, id, pem, err);
    if (rc < 0) {
        slb_cert_unref(c);
        return rc;
    }
    rc = republish(ctl, id, c, err);
    if (rc == 0 && out)
        *out = slb_certstore_get(ctl->certs, id);
    return rc;
}

int slb_ops_cert_rename(struct slb_ctl *ctl, const char *id, const char *name,
                        const struct slb_op *op, struct slb_cert **out, struct slb_err *err)
{
    *out = NULL;
    if (!cert_for_change(ctl, id, op, err))
        return SLB_EINVAL;
    if (no_dry_run(op, err) < 0)
        return SLB_EINVAL;
    int rc = slb_certstore_rename(ctl->certs, id, name, err);
    if (rc == 0)
        *out = slb_certstore_get(ctl->certs, id);
    return rc;
}

int slb_ops_cert_delete(struct slb_ctl *ctl, const char *id, const struct slb_op *op,
                        struct slb_err *err)
{
    if (slb_ops_writable(ctl, err) < 0)
        return SLB_EINVAL;
    if (!cert_for_change(ctl, id, op, err))
        return SLB_EINVAL;
    if (no_dry_run(op, err) < 0)
        return SLB_EINVAL;
    if (slb_ops_in_use(cert_users(ctl, id), "certificate", id, err) < 0)
        return SLB_ECONFLICT;
    int rc = slb_certstore_delete(ctl->certs, id, err);
    slb_ocsp_fetcher_tick_id(ctl->ocsp, id);
    return rc;
}

json_t *slb_ops_cert_ocsp(struct slb_ctl *ctl, const char *id)
{
    return slb_ocsp_fetcher_json(ctl->ocsp, id);
}

int slb_ops_cert_set_ocsp(struct slb_ctl *ctl, const char *id, const unsigned char *der, size_t len,
                          struct slb_err *err)
{
    if (slb_ops_writable(ctl, err) < 0)
        return SLB_EINVAL;
    if (!slb_ops_cert_get(ctl, id, err))
        return SLB_EINVAL;
    return slb_ocsp_fetcher_upload(ctl->ocsp, id, der, len, err);
}
