/* SPDX-License-Identifier: Apache-2.0 */
/* Admin API routes of the certificate store. A replace (or a new CRL) of a certificate that
 * listeners use rebuilds their TLS contexts and publishes them before the API answers. */
#include "admin/routes.h"

#include "cert/ocsp.h"
#include "cert/ocsp_fetch.h"
#include "cert/store.h"
#include "config/config.h"
#include "core/log.h"
#include "event/control.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#define MUST_STAPLE_WAIT_MS 5000

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

/* Answer with the resource. The ETag covers the certificate, not its OCSP state, which
 * changes on its own: ocsp is added after the ETag is computed. */
static void answer(struct slb_ctl *ctl, struct slb_admin_resp *resp, int status,
                   const struct slb_cert *c)
{
    json_t *j = resource(ctl, c);
    slb_admin_answer(resp, status, j);
    json_object_set_new(j, "ocsp", slb_ocsp_fetcher_json(ctl->ocsp, c->id));
    slb_admin_acme_decorate(ctl, j, c->id);
}

/* A certificate that requires stapling (must-staple) is kept only when a response can be
 * had now: fetched from its responder, waiting at most MUST_STAPLE_WAIT_MS. */
static bool must_staple_ok(struct slb_ctl *ctl, const struct slb_cert *c, struct slb_err *err)
{
    slb_ocsp_fetcher_tick(ctl->ocsp);
    if (!slb_ocsp_must_staple(c))
        return true;
    return slb_ocsp_fetcher_fetch_sync(ctl->ocsp, c->id, MUST_STAPLE_WAIT_MS, err) == 0;
}

/* PUT /v1/certificates/{id}/ocsp {"response": "<base64 DER>"}. */
static void put_ocsp(struct slb_ctl *ctl, const char *id, const struct slb_admin_req *req,
                     struct slb_admin_resp *resp)
{
    json_t *body = slb_admin_body_object(req, resp);
    if (!body)
        return;
    const char *b64 = json_string_value(json_object_get(body, "response"));
    size_t b64len = json_string_length(json_object_get(body, "response"));
    unsigned char *der = b64 && json_object_size(body) == 1 && b64len > 0 && b64len % 4 == 0
                             ? malloc(b64len / 4 * 3 + 1)
                             : NULL;
    int n = der ? EVP_DecodeBlock(der, (const unsigned char *)b64, (int)b64len) : -1;
    if (n < 0) {
        free(der);
        json_decref(body);
        slb_admin_error_simple(resp, 400, "invalid_body",
                               "the body must be {\"response\": \"<base64 of a DER OCSP "
                               "response>\"}");
        return;
    }
    /* EVP_DecodeBlock counts the padding as bytes. */
    for (size_t k = b64len; k > 0 && b64[k - 1] == '='; k--)
        n--;
    json_decref(body);
    struct slb_err err = {0};
    int rc = slb_ocsp_fetcher_upload(ctl->ocsp, id, der, (size_t)n, &err);
    free(der);
    if (rc < 0) {
        slb_admin_error(resp, &err);
        return;
    }
    answer(ctl, resp, 200, slb_certstore_get(ctl->certs, id));
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
                json_object_set_new(v, "ocsp", slb_ocsp_fetcher_json(ctl->ocsp, cid ? cid : ""));
                slb_admin_acme_decorate(ctl, v, cid ? cid : "");
            }
            json_t *pending = slb_admin_acme_pending_list(ctl);
            json_array_extend(list, pending);
            json_decref(pending);
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
        if (slb_admin_acme_create(ctl, body, false, resp)) {
            json_decref(body);
            return;
        }
        int rc = slb_certstore_create(ctl->certs, body, &c, &err);
        json_decref(body);
        if (rc < 0) {
            slb_admin_error(resp, &err);
            return;
        }
        if (!must_staple_ok(ctl, c, &err)) {
            struct slb_err derr = {0};
            if (slb_certstore_delete(ctl->certs, c->id, &derr) < 0)
                slb_error("certificate %s: cannot remove it after refusing it: %s", c->id,
                          derr.msg);
            slb_ocsp_fetcher_tick(ctl->ocsp);
            slb_admin_error(resp, &err);
            return;
        }
        answer(ctl, resp, 201, c);
        return;
    }
    if (slb_config_name_ok(id) && !slb_certstore_get(ctl->certs, id) &&
        slb_admin_acme_pending(ctl, id, req, resp))
        return;
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
    if (sub && strcmp(sub, "ocsp") == 0) {
        if (!slb_admin_method_is(req, "PUT")) {
            slb_admin_not_allowed(resp, "PUT");
            return;
        }
        put_ocsp(ctl, id, req, resp);
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
            answer(ctl, resp, 200, slb_certstore_get(ctl->certs, id));
        return;
    }
    if (!changes) {
        answer(ctl, resp, 200, c);
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
        slb_ocsp_fetcher_tick(ctl->ocsp);
        resp->status = 204;
        return;
    }
    if (!slb_admin_method_is(req, "PUT")) {
        slb_admin_not_allowed(resp, "GET, PUT, DELETE");
        return;
    }
    json_t *body = slb_admin_body_object_binary(req, resp);
    if (!body)
        return;
    if (slb_admin_acme_create(ctl, body, true, resp)) {
        json_decref(body);
        return;
    }
    struct slb_cert *prev = hold(c);
    int rc = slb_certstore_replace(ctl->certs, id, body, &c, &err);
    json_decref(body);
    if (rc < 0) {
        slb_cert_unref(prev);
        slb_admin_error(resp, &err);
        return;
    }
    if (!must_staple_ok(ctl, c, &err)) {
        struct slb_err rerr = {0};
        if (slb_certstore_restore(ctl->certs, prev, &rerr) < 0)
            slb_error("certificate %s: rollback failed: %s", id, rerr.msg);
        slb_ocsp_fetcher_tick(ctl->ocsp);
        slb_admin_error(resp, &err);
        return;
    }
    if (republish(ctl, id, prev, resp)) {
        slb_ocsp_fetcher_tick(ctl->ocsp);
        answer(ctl, resp, 200, c);
    }
}
