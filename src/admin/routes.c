/* SPDX-License-Identifier: Apache-2.0 */
/* Admin API routes for listeners, groups, whole-configuration apply and health. Every change
 * is made on a copy of the current document, validated as a whole, persisted and published
 * by slb_ctl_apply; on any error the running configuration is untouched. */
#include "admin/routes.h"
#include "admin/admin.h"

#include "cert/store.h"
#include "config/config.h"
#include "core/log.h"
#include "event/control.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- helpers shared by the resource routes --- */

bool slb_admin_method_is(const struct slb_admin_req *req, const char *m)
{
    return strcmp(req->method, m) == 0;
}

void slb_admin_not_allowed(struct slb_admin_resp *resp, const char *allow)
{
    slb_admin_error_simple(resp, 405, "method_not_allowed", "allowed methods: %s", allow);
    resp->allow = allow;
}

/* Parse the request body as a JSON object; on failure fill resp and return NULL. */
static json_t *body_object(const struct slb_admin_req *req, struct slb_admin_resp *resp,
                           size_t flags)
{
    if (req->body_len == 0) {
        slb_admin_error_simple(resp, 400, "invalid_json", "a JSON object body is required");
        return NULL;
    }
    const char *ct = req->content_type;
    if (strncasecmp(ct, "application/json", 16) != 0 ||
        (ct[16] != '\0' && ct[16] != ';' && ct[16] != ' ' && ct[16] != '\t')) {
        slb_admin_error_simple(resp, 415, "unsupported_media_type",
                               "send the body with Content-Type: application/json");
        return NULL;
    }
    json_error_t jerr;
    json_t *v = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES | flags, &jerr);
    if (!v) {
        slb_admin_error_simple(resp, 400, "invalid_json",
                               "body is not valid JSON: %s (line %d, column %d)", jerr.text,
                               jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        slb_admin_error_simple(resp, 400, "wrong_type", "the body must be a JSON object");
        return NULL;
    }
    return v;
}

json_t *slb_admin_body_object(const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    return body_object(req, resp, 0);
}

json_t *slb_admin_body_object_binary(const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    return body_object(req, resp, JSON_ALLOW_NUL);
}

/* Split "/v1/<coll>/<id>[/<sub>]"; returns the number of segments after /v1 (1..3) or 0. */
int slb_admin_split(const char *path, char *coll, char *id, char *sub, size_t size)
{
    coll[0] = id[0] = sub[0] = '\0';
    if (strncmp(path, "/v1/", 4) != 0)
        return 0;
    const char *p = path + 4;
    char *outs[3] = {coll, id, sub};
    int n = 0;
    while (*p && n < 3) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || len >= size)
            return -1;
        memcpy(outs[n], p, len);
        outs[n][len] = '\0';
        n++;
        p += len;
        if (*p == '/')
            p++;
        else
            break;
    }
    if (*p)
        return -1;
    return n;
}

static json_t *find_named(json_t *arr, const char *name, size_t *idx)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        const char *n = json_string_value(json_object_get(v, "name"));
        if (n && strcmp(n, name) == 0) {
            if (idx)
                *idx = i;
            return v;
        }
    }
    return NULL;
}

/* Apply a modified copy of the configuration; fills resp on failure. */
static bool apply_doc(struct slb_ctl *ctl, json_t *doc, struct slb_admin_resp *resp)
{
    struct slb_err err = {0};
    if (slb_ctl_apply(ctl, doc, true, &err) < 0) {
        slb_admin_error(resp, &err);
        return false;
    }
    return true;
}

/* --- listeners and groups share one shape of collection route --- */

struct coll_kind {
    const char *coll; /* "listeners" / "groups" */
    const char *what; /* "listener" / "group" */
    json_t *(*normalize)(const json_t *in, const char *where, struct slb_err *err);
};

static const struct coll_kind kinds[] = {
    {"listeners", "listener", slb_config_normalize_listener},
    {"groups", "group", slb_config_normalize_group},
};

/* Listeners that name group (as backend or SNI route target). */
static json_t *group_users(const json_t *doc, const char *group)
{
    json_t *users = json_array();
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(doc, "listeners"), i, l)
    {
        bool uses = false;
        const char *g = json_string_value(json_object_get(l, "backend_group"));
        uses |= g && strcmp(g, group) == 0;
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(l, "sni_routes"), k, v)
        {
            uses |= json_is_string(v) && strcmp(json_string_value(v), group) == 0;
        }
        if (uses)
            json_array_append(users, json_object_get(l, "name"));
    }
    return users;
}

static void collection(struct slb_ctl *ctl, const struct coll_kind *k,
                       const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    if (slb_admin_method_is(req, "GET")) {
        resp->json = json_pack("{s:O}", k->coll, json_object_get(ctl->doc, k->coll));
        return;
    }
    if (!slb_admin_method_is(req, "POST")) {
        slb_admin_not_allowed(resp, "GET, POST");
        return;
    }
    json_t *body = slb_admin_body_object(req, resp);
    if (!body)
        return;
    struct slb_err err = {0};
    json_t *norm = k->normalize(body, "", &err);
    json_decref(body);
    if (!norm) {
        slb_admin_error(resp, &err);
        return;
    }
    const char *name = json_string_value(json_object_get(norm, "name"));
    if (find_named(json_object_get(ctl->doc, k->coll), name, NULL)) {
        slb_admin_error_simple(resp, 409, "name_taken", "a %s named \"%s\" already exists", k->what,
                               name);
        json_decref(norm);
        return;
    }
    json_t *doc = json_deep_copy(ctl->doc);
    json_array_append(json_object_get(doc, k->coll), norm);
    if (apply_doc(ctl, doc, resp)) {
        resp->status = 201;
        resp->json = json_incref(find_named(json_object_get(ctl->doc, k->coll), name, NULL));
    }
    json_decref(norm);
}

static void item(struct slb_ctl *ctl, const struct coll_kind *k, const char *name,
                 const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    size_t idx = 0;
    json_t *cur = slb_config_name_ok(name)
                      ? find_named(json_object_get(ctl->doc, k->coll), name, &idx)
                      : NULL;
    if (!cur) {
        slb_admin_error_simple(resp, 404, "not_found", "no %s named \"%s\"", k->what, name);
        return;
    }
    if (slb_admin_method_is(req, "GET")) {
        resp->json = json_incref(cur);
        return;
    }
    if (slb_admin_method_is(req, "DELETE")) {
        if (strcmp(k->coll, "groups") == 0) {
            json_t *users = group_users(ctl->doc, name);
            if (json_array_size(users) > 0) {
                char *list = json_dumps(users, JSON_COMPACT);
                slb_admin_error_simple(resp, 409, "in_use", "group \"%s\" is used by listeners %s",
                                       name, list);
                free(list);
                json_decref(users);
                return;
            }
            json_decref(users);
        }
        json_t *doc = json_deep_copy(ctl->doc);
        json_array_remove(json_object_get(doc, k->coll), idx);
        if (apply_doc(ctl, doc, resp))
            resp->status = 204;
        return;
    }
    if (!slb_admin_method_is(req, "PUT")) {
        slb_admin_not_allowed(resp, "GET, PUT, DELETE");
        return;
    }
    json_t *body = slb_admin_body_object(req, resp);
    if (!body)
        return;
    /* The path names the resource; a body may repeat the name but not rename it. */
    const char *bname = json_string_value(json_object_get(body, "name"));
    if (json_object_get(body, "name") && (!bname || strcmp(bname, name) != 0)) {
        slb_admin_error_simple(resp, 400, "invalid_value",
                               "name: the body's name must match the path (\"%s\"); renaming "
                               "is delete and create",
                               name);
        json_decref(body);
        return;
    }
    json_object_set_new(body, "name", json_string(name));
    struct slb_err err = {0};
    json_t *norm = k->normalize(body, "", &err);
    json_decref(body);
    if (!norm) {
        slb_admin_error(resp, &err);
        return;
    }
    json_t *doc = json_deep_copy(ctl->doc);
    json_array_set(json_object_get(doc, k->coll), idx, norm);
    if (apply_doc(ctl, doc, resp))
        resp->json = json_incref(find_named(json_object_get(ctl->doc, k->coll), name, NULL));
    json_decref(norm);
}

/* POST /v1/apply: replace all listeners and groups (and settings when given) at once. */
static void apply_all(struct slb_ctl *ctl, const struct slb_admin_req *req,
                      struct slb_admin_resp *resp)
{
    if (!slb_admin_method_is(req, "POST")) {
        slb_admin_not_allowed(resp, "POST");
        return;
    }
    json_t *body = slb_admin_body_object(req, resp);
    if (!body)
        return;
    json_t *doc = json_deep_copy(ctl->doc);
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        if (strcmp(key, "listeners") != 0 && strcmp(key, "groups") != 0 &&
            strcmp(key, "settings") != 0) {
            slb_admin_error_simple(resp, 400, "unknown_field",
                                   "%s: unknown field; expected listeners, groups, settings", key);
            json_decref(doc);
            json_decref(body);
            return;
        }
        json_object_set(doc, key, v);
    }
    json_decref(body);
    if (apply_doc(ctl, doc, resp))
        resp->json = json_incref(ctl->doc);
}

void slb_admin_route(struct slb_ctl *ctl, const struct slb_admin_req *req,
                     struct slb_admin_resp *resp)
{
    if (strcmp(req->path, "/healthz") == 0) {
        if (!slb_admin_method_is(req, "GET") && !slb_admin_method_is(req, "HEAD")) {
            slb_admin_not_allowed(resp, "GET, HEAD");
            return;
        }
        resp->json = json_pack("{s:s, s:I}", "status", "ok", "generation",
                               (json_int_t)(ctl->cur ? ctl->cur->generation : 0));
        return;
    }
    if (strcmp(req->path, "/metrics") == 0) {
        if (!slb_admin_method_is(req, "GET")) {
            slb_admin_not_allowed(resp, "GET");
            return;
        }
        slb_admin_metrics(ctl, resp);
        return;
    }
    char coll[72], id[72], sub[72];
    int n = slb_admin_split(req->path, coll, id, sub, sizeof(coll));
    if (n == 1 && strcmp(coll, "stats") == 0) {
        if (!slb_admin_method_is(req, "GET")) {
            slb_admin_not_allowed(resp, "GET");
            return;
        }
        slb_admin_stats(ctl, resp);
        return;
    }
    if (n == 1 && strcmp(coll, "apply") == 0) {
        apply_all(ctl, req, resp);
        return;
    }
    if (n >= 1 && strcmp(coll, "certificates") == 0) {
        slb_admin_certificates(ctl, n >= 2 ? id : NULL, n >= 3 ? sub : NULL, req, resp);
        return;
    }
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (n >= 1 && strcmp(coll, kinds[i].coll) == 0) {
            if (n == 1)
                collection(ctl, &kinds[i], req, resp);
            else if (n == 2)
                item(ctl, &kinds[i], id, req, resp);
            else
                break;
            return;
        }
    }
    slb_admin_error_simple(resp, 404, "not_found", "no such endpoint: %s", req->path);
}
