/* SPDX-License-Identifier: Apache-2.0 */
/* Admin API routes of the certificate store. A replace (or a new CRL) of a certificate that
 * listeners use rebuilds their TLS contexts and publishes them before the API answers. */
#include "admin/routes.h"

#include "cert/store.h"
#include "config/config.h"
#include "core/log.h"
#include "event/control.h"

#include <stdlib.h>
#include <string.h>

/* Names of the listeners that use certificate id (as server certificate or client CA). */
static json_t *cert_users(const json_t *doc, const char *id)
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

static json_t *resource(struct slb_ctl *ctl, const struct slb_cert *c)
{
    json_t *j = slb_cert_to_json(c);
    json_object_set_new(j, "used_by", cert_users(ctl->doc, c->id));
    return j;
}

/* Rebuild and publish the running configuration so listeners pick up new material. When
 * that fails the store goes back to prev (owned here), so nothing changed. */
static bool republish(struct slb_ctl *ctl, const char *id, struct slb_cert *prev,
                      struct slb_admin_resp *resp)
{
    json_t *users = cert_users(ctl->doc, id);
    size_t n = json_array_size(users);
    json_decref(users);
    struct slb_err err = {0};
    if (n == 0 || slb_ctl_apply(ctl, json_incref(ctl->doc), false, &err) == 0) {
        slb_cert_unref(prev);
        return true;
    }
    slb_admin_error(resp, &err);
    struct slb_err rerr = {0};
    if (slb_certstore_restore(ctl->certs, prev, &rerr) < 0)
        slb_error("certificate %s: rollback failed: %s", id, rerr.msg);
    return false;
}

static struct slb_cert *hold(struct slb_cert *c)
{
    slb_cert_ref(c);
    return c;
}

/* PATCH {"name"}: a new display name without re-uploading; the id, and so the listeners that
 * use the certificate, stay as they are. */
static void rename_cert(struct slb_ctl *ctl, const char *id, const struct slb_admin_req *req,
                        struct slb_admin_resp *resp)
{
    json_t *body = slb_admin_body_object(req, resp);
    if (!body)
        return;
    const char *name = json_string_value(json_object_get(body, "name"));
    struct slb_err err = {0};
    if (json_object_size(body) != 1 || !name)
        slb_admin_error_simple(resp, 400, "invalid_body",
                               "the body must be {\"name\": \"...\"}; to change the material, "
                               "use PUT");
    else if (slb_certstore_rename(ctl->certs, id, name, &err) < 0)
        slb_admin_error(resp, &err);
    else
        slb_admin_answer(resp, 200, resource(ctl, slb_certstore_get(ctl->certs, id)));
    json_decref(body);
}

void slb_admin_certificates(struct slb_ctl *ctl, const char *id, const char *sub,
                            const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    struct slb_err err = {0};
    struct slb_cert *c = NULL;
    if (!id) {
        if (slb_admin_method_is(req, "GET")) {
            json_t *list = slb_certstore_list(ctl->certs);
            size_t i;
            json_t *v;
            json_array_foreach(list, i, v)
            {
                const char *cid = json_string_value(json_object_get(v, "id"));
                json_object_set_new(v, "used_by", cert_users(ctl->doc, cid ? cid : ""));
            }
            resp->json = json_pack("{s:o}", "certificates", list);
            return;
        }
        if (!slb_admin_method_is(req, "POST")) {
            slb_admin_not_allowed(resp, "GET, POST");
            return;
        }
        json_t *body = slb_admin_body_object_binary(req, resp);
        if (!body)
            return;
        int rc = slb_certstore_create(ctl->certs, body, &c, &err);
        json_decref(body);
        if (rc < 0) {
            slb_admin_error(resp, &err);
            return;
        }
        slb_admin_answer(resp, 201, resource(ctl, c));
        return;
    }
    if (!slb_config_name_ok(id) || !(c = slb_certstore_get(ctl->certs, id))) {
        slb_admin_error_simple(resp, 404, "not_found", "no certificate with id \"%s\"", id);
        return;
    }
    /* A change names the revision it was based on (If-Match: the ETag of the resource as GET
     * answers it); a stale one is refused before anything is touched. */
    bool changes = !slb_admin_method_is(req, "GET");
    if (changes) {
        char etag[SLB_ADMIN_ETAG_SIZE];
        json_t *now = resource(ctl, c);
        slb_admin_etag(now, etag);
        json_decref(now);
        if (!slb_admin_if_match(req, etag, "certificate", resp))
            return;
    }
    if (sub) {
        if (strcmp(sub, "crl") != 0) {
            slb_admin_error_simple(resp, 404, "not_found", "no such endpoint: %s", req->path);
            return;
        }
        if (!slb_admin_method_is(req, "PUT")) {
            slb_admin_not_allowed(resp, "PUT");
            return;
        }
        json_t *body = slb_admin_body_object_binary(req, resp);
        if (!body)
            return;
        const char *pem = json_string_value(json_object_get(body, "crl"));
        if (!pem || json_object_size(body) != 1) {
            slb_admin_error_simple(resp, 400, "invalid_body",
                                   "the body must be {\"crl\": \"<PEM of an X509 CRL>\"}");
            json_decref(body);
            return;
        }
        struct slb_cert *prev = hold(c);
        int rc = slb_certstore_set_crl(ctl->certs, id, pem, &err);
        json_decref(body);
        if (rc < 0) {
            slb_cert_unref(prev);
            slb_admin_error(resp, &err);
            return;
        }
        if (republish(ctl, id, prev, resp))
            slb_admin_answer(resp, 200, resource(ctl, slb_certstore_get(ctl->certs, id)));
        return;
    }
    if (!changes) {
        slb_admin_answer(resp, 200, resource(ctl, c));
        return;
    }
    if (slb_admin_method_is(req, "DELETE")) {
        json_t *users = cert_users(ctl->doc, id);
        if (json_array_size(users) > 0) {
            char *list = json_dumps(users, JSON_COMPACT);
            slb_admin_error_simple(resp, 409, "in_use",
                                   "certificate \"%s\" is used by listeners %s", id, list);
            free(list);
            json_decref(users);
            return;
        }
        json_decref(users);
        if (slb_certstore_delete(ctl->certs, id, &err) < 0) {
            slb_admin_error(resp, &err);
            return;
        }
        resp->status = 204;
        return;
    }
    if (slb_admin_method_is(req, "PATCH")) {
        rename_cert(ctl, id, req, resp);
        return;
    }
    if (!slb_admin_method_is(req, "PUT")) {
        slb_admin_not_allowed(resp, "GET, PUT, PATCH, DELETE");
        return;
    }
    json_t *body = slb_admin_body_object_binary(req, resp);
    if (!body)
        return;
    struct slb_cert *prev = hold(c);
    int rc = slb_certstore_replace(ctl->certs, id, body, &c, &err);
    json_decref(body);
    if (rc < 0) {
        slb_cert_unref(prev);
        slb_admin_error(resp, &err);
        return;
    }
    if (republish(ctl, id, prev, resp))
        slb_admin_answer(resp, 200, resource(ctl, c));
}
