/* SPDX-License-Identifier: Apache-2.0 */
/* Admin API routes of the certificate store, over the certificate operations (src/ops/): the
 * request body becomes material, the operation validates, stores and activates it. */
#include "admin/routes.h"

#include "cert/store.h"
#include "cert/validate.h"
#include "config/config.h"
#include "daemon/control.h"
#include "ops/ops.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Answer with certificate c's resource. The ETag covers the certificate, not its OCSP state,
 * which changes on its own: "ocsp" is added after the ETag is computed. */
static void answer_resource(struct slb_ctl *ctl, struct slb_admin_resp *resp, int status,
                            const struct slb_cert *c)
{
    json_t *j = slb_ops_cert_resource(ctl, c);
    slb_admin_answer(resp, status, j);
    json_object_set_new(j, "ocsp", slb_ops_cert_ocsp(ctl, c->id));
    slb_admin_acme_decorate(ctl, j, c->id);
}

/* Answer a certificate operation: its resource, or the error. */
static void answer_cert(struct slb_ctl *ctl, struct slb_admin_resp *resp, int rc,
                        const struct slb_err *err, int status, struct slb_cert *c)
{
    if (rc < 0 || !c)
        slb_admin_error(resp, err);
    else
        answer_resource(ctl, resp, status, c);
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
    int rc = slb_ops_cert_set_ocsp(ctl, id, der, (size_t)n, &err);
    free(der);
    struct slb_cert *c = rc < 0 ? NULL : slb_ops_cert_get(ctl, id, &err);
    answer_cert(ctl, resp, rc, &err, 200, c);
}

/* PATCH {"name"}: a new display name without re-uploading; the id, and so the listeners that
 * use the certificate, stay as they are. */
static void rename_cert(struct slb_ctl *ctl, const char *id, const struct slb_op *op,
                        const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    json_t *body = slb_admin_body_object(req, resp);
    if (!body)
        return;
    const char *name = json_string_value(json_object_get(body, "name"));
    struct slb_err err = {0};
    struct slb_cert *c = NULL;
    if (json_object_size(body) != 1 || !name) {
        slb_admin_error_simple(resp, 400, "invalid_body",
                               "the body must be {\"name\": \"...\"}; to change the material, "
                               "use PUT");
    } else {
        int rc = slb_ops_cert_rename(ctl, id, name, op, &c, &err);
        answer_cert(ctl, resp, rc, &err, 200, c);
    }
    json_decref(body);
}

static const char *const cert_filters[] = {"type", "expiring_within_days", "used_by", NULL};
static const char *const cert_types[] = {"server", "ca", NULL};

/* The longest expiring_within_days: 100 years. */
#define CERT_DAYS_MAX 36500

/* True when listener l (NULL: none) names id as a certificate or as client_ca. */
static bool listener_uses(const json_t *l, const char *id)
{
    json_t *tls = json_object_get(l, "tls"), *c;
    size_t j;
    json_array_foreach(json_object_get(tls, "certificates"), j, c)
    {
        if (json_is_string(c) && strcmp(json_string_value(c), id) == 0)
            return true;
    }
    const char *ca = json_string_value(json_object_get(tls, "client_ca"));
    return ca && strcmp(ca, id) == 0;
}

/* GET /v1/certificates: the stored certificates and those ACME has not issued yet, filtered on
 * the store's own fields first, so that only the page's resources are built (a page of 100 out
 * of 10,000 certificates formats 100). */
static void list_certs(struct slb_ctl *ctl, const struct slb_admin_req *req,
                       struct slb_admin_resp *resp)
{
    struct slb_admin_page pg;
    char type[8], days_s[16], used_by[SLB_ADMIN_SEG];
    if (!slb_admin_page_parse(req, cert_filters, &pg, resp) ||
        !slb_admin_filter_enum(req, "type", cert_types, type, sizeof(type), resp) ||
        !slb_admin_filter_enum(req, "used_by", NULL, used_by, sizeof(used_by), resp))
        return;
    long days = -1;
    int rc = slb_admin_param(req, "expiring_within_days", days_s, sizeof(days_s));
    if (rc != 0) {
        char *end;
        errno = 0;
        days = rc > 0 ? strtol(days_s, &end, 10) : -1;
        if (rc < 0 || errno || end == days_s || *end || days < 0 || days > CERT_DAYS_MAX) {
            struct slb_err err = {.status = 400};
            snprintf(err.code, sizeof(err.code), "invalid_value");
            snprintf(err.where, sizeof(err.where), "expiring_within_days");
            snprintf(err.msg, sizeof(err.msg),
                     "expiring_within_days: give it once, as a number of days from 0 to %d",
                     CERT_DAYS_MAX);
            slb_admin_error(resp, &err);
            return;
        }
    }
    /* used_by names a listener; one that does not exist uses nothing. */
    const json_t *user = NULL;
    if (used_by[0]) {
        size_t i;
        json_t *l;
        json_array_foreach(json_object_get(slb_ops_config(ctl), "listeners"), i, l)
        {
            const char *name = json_string_value(json_object_get(l, "name"));
            if (name && strcmp(name, used_by) == 0)
                user = l;
        }
    }
    int64_t horizon = days >= 0 ? (int64_t)time(NULL) + (int64_t)days * 86400 : 0;
    size_t nstore = slb_certstore_count(ctl->certs);
    json_t *pending = slb_admin_acme_pending_list(ctl);
    size_t total = nstore + json_array_size(pending);
    const char **keys = calloc(total ? total : 1, sizeof(*keys));
    size_t *src = calloc(total ? total : 1, sizeof(*src)),
           *idx = calloc(total ? total : 1, sizeof(*idx));
    json_t *page = NULL;
    const char *next = NULL;
    if (!keys || !src || !idx)
        goto done;
    size_t n = 0;
    for (size_t i = 0; i < total; i++) {
        const struct slb_cert *c = i < nstore ? slb_certstore_at(ctl->certs, i) : NULL;
        const json_t *p = c ? NULL : json_array_get(pending, i - nstore);
        const char *id = c ? c->id : json_string_value(json_object_get(p, "id"));
        const char *t = c ? (c->type == SLB_CERT_CA ? "ca" : "server")
                          : json_string_value(json_object_get(p, "type"));
        if (!id || (type[0] && (!t || strcmp(t, type) != 0)) ||
            (days >= 0 && (!c || c->not_after > horizon)) ||
            (used_by[0] && !listener_uses(user, id)))
            continue;
        keys[n] = id;
        src[n++] = i;
    }
    bool more = false;
    size_t m = slb_admin_page_select(&pg, keys, n, idx, &more);
    if (m == SIZE_MAX)
        goto done;
    page = json_array();
    for (size_t k = 0; page && k < m; k++) {
        size_t i = src[idx[k]];
        json_t *v;
        if (i < nstore) {
            const struct slb_cert *c = slb_certstore_at(ctl->certs, i);
            v = slb_ops_cert_resource(ctl, c);
            json_object_set_new(v, "ocsp", slb_ops_cert_ocsp(ctl, c->id));
            slb_admin_acme_decorate(ctl, v, c->id);
        } else {
            v = json_incref(json_array_get(pending, i - nstore));
        }
        json_array_append_new(page, v);
    }
    if (more && m > 0)
        next = keys[idx[m - 1]];
done:
    slb_admin_page_answer(resp, "certificates", page, next);
    json_decref(pending);
    free(keys);
    free(src);
    free(idx);
}

void slb_admin_certificates(struct slb_ctl *ctl, const char *id, const char *sub,
                            const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    struct slb_err err = {0};
    struct slb_certval_upload m;
    struct slb_cert *c = NULL;
    if (!id) {
        if (slb_admin_method_is(req, "GET")) {
            list_certs(ctl, req, resp);
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
        int rc = slb_certval_body(body, SLB_CERT_NONE, &m, &err);
        if (rc == 0)
            rc = slb_ops_cert_create(ctl, &m, NULL, &c, &err);
        answer_cert(ctl, resp, rc, &err, 201, c);
        json_decref(body);
        return;
    }
    if (slb_config_name_ok(id) && !slb_certstore_get(ctl->certs, id) &&
        slb_admin_acme_pending(ctl, id, req, resp))
        return;
    if (!(c = slb_ops_cert_get(ctl, id, &err))) {
        slb_admin_error(resp, &err);
        return;
    }
    /* A change names the revision it was based on (If-Match: the ETag of the resource as GET
     * answers it); a stale one is refused before anything is touched. */
    const struct slb_op op = {.expect = req->if_match};
    bool changes = !slb_admin_method_is(req, "GET");
    if (changes) {
        json_t *now = slb_ops_cert_resource(ctl, c);
        bool ok = slb_admin_if_match(req, now, "certificate", resp);
        json_decref(now);
        if (!ok)
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
        int rc = slb_ops_cert_set_crl(ctl, id, pem, &op, &c, &err);
        json_decref(body);
        answer_cert(ctl, resp, rc, &err, 200, c);
        return;
    }
    if (!changes) {
        answer_resource(ctl, resp, 200, c);
        return;
    }
    if (slb_admin_method_is(req, "DELETE")) {
        int rc = slb_ops_cert_delete(ctl, id, &op, &err);
        slb_admin_answer_op(resp, rc, &err, 204, NULL);
        return;
    }
    if (slb_admin_method_is(req, "PATCH")) {
        rename_cert(ctl, id, &op, req, resp);
        return;
    }
    if (!slb_admin_method_is(req, "PUT")) {
        slb_admin_not_allowed(resp, "GET, PUT, PATCH, DELETE");
        return;
    }
    json_t *body = slb_admin_body_object_binary(req, resp);
    if (!body)
        return;
    if (slb_admin_acme_create(ctl, body, true, resp)) {
        json_decref(body);
        return;
    }
    int rc = slb_certval_body(body, c->type, &m, &err);
    if (rc == 0)
        rc = slb_ops_cert_replace(ctl, id, &m, &op, &c, &err);
    answer_cert(ctl, resp, rc, &err, 200, c);
    json_decref(body);
}
