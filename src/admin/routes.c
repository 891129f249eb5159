/* SPDX-License-Identifier: Apache-2.0 */
/* Admin API routes for listeners, groups, whole-configuration apply and health. Every change
 * is made on a copy of the current document, validated as a whole, persisted and published
 * by slb_ctl_apply; on any error the running configuration is untouched. */
#include "admin/routes.h"
#include "admin/admin.h"
#include "admin/ui.h"

#include "cert/store.h"
#include "config/config.h"
#include "core/log.h"
#include "event/control.h"

#include <openssl/evp.h>
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

int slb_admin_split(const char *path, char (*seg)[SLB_ADMIN_SEG])
{
    if (strncmp(path, "/v1/", 4) != 0)
        return 0;
    const char *p = path + 4;
    int n = 0;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || len >= SLB_ADMIN_SEG || n == SLB_ADMIN_MAX_SEGS)
            return -1;
        memcpy(seg[n], p, len);
        seg[n][len] = '\0';
        n++;
        p += len;
        if (*p == '/')
            p++;
    }
    return n;
}

/* --- query parameters: each route names those it accepts, any other is refused --- */

/* Calls fn for every "key[=value]" of the query; stops at the first that returns false. */
static bool query_each(const char *query,
                       bool (*fn)(const char *key, size_t klen, const char *val, size_t vlen,
                                  void *arg),
                       void *arg)
{
    const char *p = query;
    while (*p) {
        size_t len = strcspn(p, "&");
        size_t klen = strcspn(p, "=&");
        if (len > 0) {
            const char *val = klen < len ? p + klen + 1 : NULL;
            if (!fn(p, klen, val, val ? len - klen - 1 : 0, arg))
                return false;
        }
        p += len + (p[len] == '&');
    }
    return true;
}

struct param_check {
    const char *const *accepted;
    struct slb_admin_resp *resp;
};

static bool param_known(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    struct param_check *pc = arg;
    for (const char *const *a = pc->accepted; a && *a; a++)
        if (strlen(*a) == klen && memcmp(*a, key, klen) == 0)
            return true;
    /* Only printable ASCII goes into the message (the answer must stay valid JSON). */
    char shown[65];
    size_t n = 0;
    for (size_t i = 0; i < klen && n < sizeof(shown) - 1; i++)
        shown[n++] = key[i] > 0x20 && key[i] < 0x7f && key[i] != '"' ? key[i] : '?';
    shown[n] = '\0';
    char list[256] = "";
    size_t used = 0;
    for (const char *const *a = pc->accepted; a && *a && used < sizeof(list); a++)
        used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", used ? ", " : "", *a);
    struct slb_err err = {.status = 400};
    snprintf(err.code, sizeof(err.code), "unknown_parameter");
    snprintf(err.where, sizeof(err.where), "%s", shown);
    snprintf(err.msg, sizeof(err.msg), "unknown query parameter \"%s\"; %s%s", shown,
             list[0] ? "this endpoint accepts: " : "this endpoint accepts none", list);
    slb_admin_error(pc->resp, &err);
    return false;
}

/* False (resp filled with 400 unknown_parameter) when the query names a parameter that is
 * not in accepted (a NULL-terminated list, or NULL for none). */
static bool params_ok(const struct slb_admin_req *req, const char *const *accepted,
                      struct slb_admin_resp *resp)
{
    struct param_check pc = {accepted, resp};
    return query_each(req->query, param_known, &pc);
}

struct param_bool {
    const char *name;
    int seen;
    bool value, bad;
};

static bool param_bool_cb(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    struct param_bool *pb = arg;
    if (strlen(pb->name) != klen || memcmp(pb->name, key, klen) != 0)
        return true;
    pb->seen++;
    if (val && vlen == 4 && memcmp(val, "true", 4) == 0)
        pb->value = true;
    else if (val && vlen == 5 && memcmp(val, "false", 5) == 0)
        pb->value = false;
    else
        pb->bad = true;
    return true;
}

/* A boolean parameter (absent: false); false with 400 invalid_value unless it is given at most
 * once, as "true" or "false". */
static bool param_bool(const struct slb_admin_req *req, const char *name, bool *out,
                       struct slb_admin_resp *resp)
{
    struct param_bool pb = {.name = name};
    query_each(req->query, param_bool_cb, &pb);
    if (pb.bad || pb.seen > 1) {
        struct slb_err err = {.status = 400};
        snprintf(err.code, sizeof(err.code), "invalid_value");
        snprintf(err.where, sizeof(err.where), "%s", name);
        snprintf(err.msg, sizeof(err.msg), "%s: give it once, as %s=true or %s=false", name, name,
                 name);
        slb_admin_error(resp, &err);
        return false;
    }
    *out = pb.value;
    return true;
}

/* --- revisions: ETag and If-Match --- */

void slb_admin_etag(const json_t *resource, char *out)
{
    out[0] = '\0';
    char *text = json_dumps(resource, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (text && EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL) == 1) {
        /* 128 bits of SHA-256: no accidental collision, short enough to paste. */
        static const char hex[] = "0123456789abcdef";
        out[0] = '"';
        for (int i = 0; i < 16; i++) {
            out[1 + 2 * i] = hex[md[i] >> 4];
            out[2 + 2 * i] = hex[md[i] & 15];
        }
        out[33] = '"';
        out[34] = '\0';
    }
    free(text);
}

bool slb_admin_if_match(const struct slb_admin_req *req, const char *etag, const char *what,
                        struct slb_admin_resp *resp)
{
    if (!req->if_match)
        return true;
    const char *p = req->if_match;
    size_t elen = strlen(etag);
    while (*p) {
        p += strspn(p, " \t,");
        size_t len = strcspn(p, ",");
        size_t tlen = len;
        while (tlen > 0 && (p[tlen - 1] == ' ' || p[tlen - 1] == '\t'))
            tlen--;
        /* Strong comparison (RFC 9110 13.1.1): a weak tag W/"..." never matches. */
        if ((tlen == 1 && p[0] == '*') || (elen && tlen == elen && memcmp(p, etag, elen) == 0))
            return true;
        p += len;
    }
    slb_admin_error_simple(resp, 412, "precondition_failed",
                           "the %s changed since you read it (If-Match does not list its ETag "
                           "%s); read it again and retry",
                           what, etag);
    return false;
}

void slb_admin_answer(struct slb_admin_resp *resp, int status, json_t *v)
{
    resp->status = status;
    json_decref(resp->json);
    resp->json = v;
    slb_admin_etag(v, resp->etag);
}

json_t *slb_admin_find_named(json_t *arr, const char *name, size_t *idx)
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

bool slb_admin_apply(struct slb_ctl *ctl, json_t *doc, struct slb_admin_resp *resp)
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
    if (slb_admin_find_named(json_object_get(ctl->doc, k->coll), name, NULL)) {
        slb_admin_error_simple(resp, 409, "name_taken", "a %s named \"%s\" already exists", k->what,
                               name);
        json_decref(norm);
        return;
    }
    json_t *doc = json_deep_copy(ctl->doc);
    json_array_append(json_object_get(doc, k->coll), norm);
    if (slb_admin_apply(ctl, doc, resp))
        slb_admin_answer(
            resp, 201,
            json_incref(slb_admin_find_named(json_object_get(ctl->doc, k->coll), name, NULL)));
    json_decref(norm);
}

static void item(struct slb_ctl *ctl, const struct coll_kind *k, const char *name,
                 const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    size_t idx = 0;
    json_t *cur = slb_config_name_ok(name)
                      ? slb_admin_find_named(json_object_get(ctl->doc, k->coll), name, &idx)
                      : NULL;
    if (!cur) {
        slb_admin_error_simple(resp, 404, "not_found", "no %s named \"%s\"", k->what, name);
        return;
    }
    if (slb_admin_method_is(req, "GET")) {
        slb_admin_answer(resp, 200, json_incref(cur));
        return;
    }
    bool del = slb_admin_method_is(req, "DELETE");
    if (!del && !slb_admin_method_is(req, "PUT")) {
        slb_admin_not_allowed(resp, "GET, PUT, DELETE");
        return;
    }
    char etag[SLB_ADMIN_ETAG_SIZE];
    slb_admin_etag(cur, etag);
    if (!slb_admin_if_match(req, etag, k->what, resp))
        return;
    if (del) {
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
        if (slb_admin_apply(ctl, doc, resp))
            resp->status = 204;
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
    if (slb_admin_apply(ctl, doc, resp))
        slb_admin_answer(
            resp, 200,
            json_incref(slb_admin_find_named(json_object_get(ctl->doc, k->coll), name, NULL)));
    json_decref(norm);
}

/* GET|PUT /v1/settings: the document's settings object as a resource of its own. */
static void settings(struct slb_ctl *ctl, const struct slb_admin_req *req,
                     struct slb_admin_resp *resp)
{
    json_t *cur = json_object_get(ctl->doc, "settings");
    if (slb_admin_method_is(req, "GET")) {
        slb_admin_answer(resp, 200, json_incref(cur));
        return;
    }
    if (!slb_admin_method_is(req, "PUT")) {
        slb_admin_not_allowed(resp, "GET, PUT");
        return;
    }
    char etag[SLB_ADMIN_ETAG_SIZE];
    slb_admin_etag(cur, etag);
    if (!slb_admin_if_match(req, etag, "settings", resp))
        return;
    json_t *body = slb_admin_body_object(req, resp);
    if (!body)
        return;
    json_t *doc = json_deep_copy(ctl->doc);
    json_object_set_new(doc, "settings", body);
    if (slb_admin_apply(ctl, doc, resp))
        slb_admin_answer(resp, 200, json_incref(json_object_get(ctl->doc, "settings")));
}

/* POST /v1/apply: replace all listeners and groups (and settings when given) at once; with
 * dry_run=true, only say what would be stored. */
static void apply_all(struct slb_ctl *ctl, const struct slb_admin_req *req,
                      struct slb_admin_resp *resp)
{
    if (!slb_admin_method_is(req, "POST")) {
        slb_admin_not_allowed(resp, "POST");
        return;
    }
    bool dry_run = false;
    if (!param_bool(req, "dry_run", &dry_run, resp))
        return;
    char etag[SLB_ADMIN_ETAG_SIZE];
    slb_admin_etag(ctl->doc, etag);
    if (!slb_admin_if_match(req, etag, "configuration", resp))
        return;
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
    if (dry_run) {
        struct slb_err err = {0};
        json_t *would = NULL;
        if (slb_ctl_dry_run(ctl, doc, &would, &err) < 0)
            slb_admin_error(resp, &err);
        else
            resp->json = would; /* no ETag: it describes no stored state */
        return;
    }
    if (slb_admin_apply(ctl, doc, resp))
        slb_admin_answer(resp, 200, json_incref(ctl->doc));
}

static const char *const apply_params[] = {"dry_run", NULL};

void slb_admin_route(struct slb_ctl *ctl, const struct slb_admin_req *req,
                     struct slb_admin_resp *resp)
{
    if (strcmp(req->path, "/healthz") == 0) {
        if (!params_ok(req, NULL, resp))
            return;
        if (!slb_admin_method_is(req, "GET") && !slb_admin_method_is(req, "HEAD")) {
            slb_admin_not_allowed(resp, "GET, HEAD");
            return;
        }
        resp->json = json_pack("{s:s, s:I}", "status", "ok", "generation",
                               (json_int_t)(ctl->cur ? ctl->cur->generation : 0));
        return;
    }
    if (strcmp(req->path, "/metrics") == 0) {
        if (!params_ok(req, NULL, resp))
            return;
        if (!slb_admin_method_is(req, "GET")) {
            slb_admin_not_allowed(resp, "GET");
            return;
        }
        slb_admin_metrics(ctl, resp);
        return;
    }
    char seg[SLB_ADMIN_MAX_SEGS][SLB_ADMIN_SEG];
    int n = slb_admin_split(req->path, seg);
    const char *coll = n >= 1 ? seg[0] : "";
    /* Every route below accepts no query parameter but POST /v1/apply's dry_run. */
    if (n == 1 && strcmp(coll, "apply") == 0) {
        if (params_ok(req, apply_params, resp))
            apply_all(ctl, req, resp);
        return;
    }
    if (strcmp(coll, "acme") == 0) {
        slb_admin_acme(ctl, req, resp);
        return;
    }
    bool known =
        (n == 1 && (strcmp(coll, "stats") == 0 || strcmp(coll, "settings") == 0 ||
                    strcmp(coll, "about") == 0 || strcmp(coll, "config") == 0)) ||
        (n >= 1 && n <= 3 && strcmp(coll, "certificates") == 0) ||
        (n >= 1 && n <= 2 && (strcmp(coll, "listeners") == 0 || strcmp(coll, "groups") == 0)) ||
        (n >= 3 && strcmp(coll, "groups") == 0 && strcmp(seg[2], "servers") == 0);
    if (!known) {
        slb_admin_error_simple(resp, 404, "not_found", "no such endpoint: %s", req->path);
        return;
    }
    if (!params_ok(req, NULL, resp))
        return;
    if (strcmp(coll, "stats") == 0) {
        if (!slb_admin_method_is(req, "GET")) {
            slb_admin_not_allowed(resp, "GET");
            return;
        }
        slb_admin_stats(ctl, resp);
        return;
    }
    if (strcmp(coll, "about") == 0) {
        slb_admin_about(ctl, req, resp);
        return;
    }
    if (strcmp(coll, "settings") == 0) {
        settings(ctl, req, resp);
        return;
    }
    if (strcmp(coll, "config") == 0) {
        /* The whole stored document, with the ETag POST /v1/apply checks in If-Match. */
        if (!slb_admin_method_is(req, "GET"))
            slb_admin_not_allowed(resp, "GET");
        else
            slb_admin_answer(resp, 200, json_incref(ctl->doc));
        return;
    }
    if (strcmp(coll, "certificates") == 0) {
        slb_admin_certificates(ctl, n >= 2 ? seg[1] : NULL, n >= 3 ? seg[2] : NULL, req, resp);
        return;
    }
    if (n >= 3) {
        slb_admin_servers(ctl, seg[1], n == 4 ? seg[3] : NULL, req, resp);
        return;
    }
    const struct coll_kind *k = &kinds[strcmp(coll, "groups") == 0];
    if (n == 1)
        collection(ctl, k, req, resp);
    else
        item(ctl, k, seg[1], req, resp);
}
