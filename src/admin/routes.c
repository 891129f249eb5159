/* SPDX-License-Identifier: Apache-2.0 */
/* The admin API's route table: paths, methods, query parameters, bodies and ETags, mapped
 * onto the operations layer (src/ops/), which makes every change. This file has the routes
 * for listeners, groups, settings, whole-configuration apply and health. */
#include "admin/routes.h"
#include "admin/admin.h"
#include "admin/cluster_export.h"
#include "admin/ui.h"

#include "ops/ops.h"

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
bool slb_admin_params_ok(const struct slb_admin_req *req, const char *const *accepted,
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

/* A boolean parameter (absent: *out is left as it is); false with 400 invalid_value unless it is
 * given at most once, as "true" or "false". */
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
    if (pb.seen)
        *out = pb.value;
    return true;
}

/* --- revisions: ETag and If-Match --- */

void slb_admin_etag(const json_t *resource, char *out)
{
    slb_ops_revision(resource, out);
}

bool slb_admin_if_match(const struct slb_admin_req *req, const json_t *resource, const char *what,
                        struct slb_admin_resp *resp)
{
    struct slb_err err = {0};
    if (slb_ops_precondition(&(struct slb_op){.expect = req->if_match}, resource, what, &err) == 0)
        return true;
    slb_admin_error(resp, &err);
    return false;
}

void slb_admin_answer(struct slb_admin_resp *resp, int status, json_t *v)
{
    resp->status = status;
    json_decref(resp->json);
    resp->json = v;
    slb_admin_etag(v, resp->etag);
}

void slb_admin_answer_op(struct slb_admin_resp *resp, int rc, const struct slb_err *err, int status,
                         json_t *v)
{
    if (rc < 0) {
        json_decref(v);
        slb_admin_error(resp, err);
    } else if (status == 204) {
        json_decref(v);
        resp->status = 204;
    } else {
        slb_admin_answer(resp, status, v);
    }
}

/* --- listeners and groups share one shape of collection route --- */

static const char *const coll_names[] = {"listeners", "groups"};

static const char *const listener_filters[] = {"protocol", "backend_group", NULL};
static const char *const group_filters[] = {"scheduler", NULL};
static const char *const listener_protocols[] = {"tcp", "http", "https", NULL};
static const char *const group_schedulers[] = {"wrr", "rr", "wlc", "sch", "tch", NULL};

/* GET /v1/listeners|groups: paged, filtered by listener protocol and backend_group or by group
 * scheduler (each the field of that name equal to the value). */
static void list_items(struct slb_ctl *ctl, enum slb_ops_kind k, const struct slb_admin_req *req,
                       struct slb_admin_resp *resp)
{
    struct slb_admin_page pg;
    char f1[SLB_ADMIN_SEG] = "", f2[SLB_ADMIN_SEG] = "";
    const char *n1 = k == SLB_OPS_GROUP ? "scheduler" : "protocol";
    if (!slb_admin_page_parse(req, k == SLB_OPS_GROUP ? group_filters : listener_filters, &pg,
                              resp) ||
        !slb_admin_filter_enum(req, n1, k == SLB_OPS_GROUP ? group_schedulers : listener_protocols,
                               f1, sizeof(f1), resp) ||
        (k == SLB_OPS_LISTENER &&
         !slb_admin_filter_enum(req, "backend_group", NULL, f2, sizeof(f2), resp)))
        return;
    json_t *items = json_array(), *v;
    size_t i;
    json_array_foreach(json_object_get(slb_ops_config(ctl), coll_names[k]), i, v)
    {
        const char *a = json_string_value(json_object_get(v, n1));
        const char *b = json_string_value(json_object_get(v, "backend_group"));
        if ((f1[0] && (!a || strcmp(a, f1) != 0)) || (f2[0] && (!b || strcmp(b, f2) != 0)))
            continue;
        json_array_append(items, v);
    }
    slb_admin_list_json(resp, coll_names[k], items, &pg, slb_admin_key_name);
}

static void collection(struct slb_ctl *ctl, enum slb_ops_kind k, const struct slb_admin_req *req,
                       struct slb_admin_resp *resp)
{
    if (slb_admin_method_is(req, "GET")) {
        list_items(ctl, k, req, resp);
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
    json_t *out = NULL;
    int rc = slb_ops_item_create(ctl, k, body, NULL, &out, &err);
    json_decref(body);
    slb_admin_answer_op(resp, rc, &err, 201, out);
}

static void item(struct slb_ctl *ctl, enum slb_ops_kind k, const char *name,
                 const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    struct slb_err err = {0};
    json_t *cur = slb_ops_item_get(ctl, k, name, &err);
    if (!cur) {
        slb_admin_error(resp, &err);
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
    /* The precondition before the body, so a stale client learns that first. */
    const char *what = k == SLB_OPS_GROUP ? "group" : "listener";
    if (!slb_admin_if_match(req, cur, what, resp))
        return;
    const struct slb_op op = {.expect = req->if_match};
    if (del) {
        int rc = slb_ops_item_delete(ctl, k, name, &op, &err);
        slb_admin_answer_op(resp, rc, &err, 204, NULL);
        return;
    }
    json_t *body = slb_admin_body_object(req, resp);
    if (!body)
        return;
    json_t *out = NULL;
    int rc = slb_ops_item_update(ctl, k, name, body, &op, &out, &err);
    json_decref(body);
    slb_admin_answer_op(resp, rc, &err, 200, out);
}

/* POST /v1/listeners/{name}/start|stop: the listener's status, its configuration kept. */
static void listener_action(struct slb_ctl *ctl, const char *name, const char *action,
                            const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    bool stop = strcmp(action, "stop") == 0;
    if (!stop && strcmp(action, "start") != 0) {
        slb_admin_error_simple(resp, 404, "not_found", "no such endpoint: %s", req->path);
        return;
    }
    if (!slb_admin_method_is(req, "POST")) {
        slb_admin_not_allowed(resp, "POST");
        return;
    }
    struct slb_err err = {0};
    json_t *cur = slb_ops_item_get(ctl, SLB_OPS_LISTENER, name, &err);
    if (!cur) {
        slb_admin_error(resp, &err);
        return;
    }
    if (!slb_admin_if_match(req, cur, "listener", resp))
        return;
    json_t *out = NULL;
    int rc = slb_ops_listener_status(ctl, name, stop, &(struct slb_op){.expect = req->if_match},
                                     &out, &err);
    slb_admin_answer_op(resp, rc, &err, 200, out);
}

/* GET|PUT|PATCH /v1/settings: the document's settings object as a resource of its own. */
static void settings(struct slb_ctl *ctl, const struct slb_admin_req *req,
                     struct slb_admin_resp *resp)
{
    json_t *cur = json_object_get(slb_ops_config(ctl), "settings");
    if (slb_admin_method_is(req, "GET")) {
        slb_admin_answer(resp, 200, json_incref(cur));
        return;
    }
    bool patch = slb_admin_method_is(req, "PATCH");
    if (!patch && !slb_admin_method_is(req, "PUT")) {
        slb_admin_not_allowed(resp, "GET, PUT, PATCH");
        return;
    }
    if (!slb_admin_if_match(req, cur, "settings", resp))
        return;
    json_t *body = slb_admin_body_object(req, resp);
    if (!body)
        return;
    if (patch) {
        /* A merge patch (RFC 7396) of the top level: the fields given replace theirs, null
         * removes one (back to its default); the rest stay. */
        json_t *merged = json_is_object(cur) ? json_deep_copy(cur) : json_object();
        const char *k;
        json_t *v;
        json_object_foreach(body, k, v)
        {
            if (json_is_null(v))
                json_object_del(merged, k);
            else
                json_object_set(merged, k, v);
        }
        json_decref(body);
        body = merged;
    }
    struct slb_err err = {0};
    json_t *out = NULL;
    int rc =
        slb_ops_settings_update(ctl, body, &(struct slb_op){.expect = req->if_match}, &out, &err);
    json_decref(body);
    slb_admin_answer_op(resp, rc, &err, 200, out);
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
    if (!slb_admin_if_match(req, slb_ops_config(ctl), "configuration", resp))
        return;
    json_t *body = slb_admin_body_object(req, resp);
    if (!body)
        return;
    struct slb_err err = {0};
    json_t *out = NULL;
    const struct slb_op op = {.expect = req->if_match, .dry_run = dry_run};
    int rc = slb_ops_apply(ctl, body, &op, &out, &err);
    json_decref(body);
    if (rc == 0 && dry_run)
        resp->json = out; /* no ETag: it describes no stored state */
    else
        slb_admin_answer_op(resp, rc, &err, 200, out);
}

static const char *const apply_params[] = {"dry_run", NULL};

/* GET /v1/cluster: the nodes of the cluster as etcd knows them; 404 not_clustered on a single
 * node. */
static void cluster(struct slb_ctl *ctl, const struct slb_admin_req *req,
                    struct slb_admin_resp *resp)
{
    if (!slb_admin_method_is(req, "GET")) {
        slb_admin_not_allowed(resp, "GET");
        return;
    }
    json_t *st = slb_ops_cluster_status(ctl);
    if (!st) {
        slb_admin_error_simple(resp, 404, "not_clustered",
                               "this slbd is a single node (started without --cluster)");
        return;
    }
    resp->json = st;
}

static void route(struct slb_ctl *ctl, const struct slb_admin_req *req,
                  struct slb_admin_resp *resp);

/* Conflicts with another node's write are validated again against the configuration it
 * stored and retried this many times before 409 conflict is the answer. */
#define CLUSTER_CONFLICT_RETRIES 5

static bool is_conflict(const struct slb_admin_resp *resp)
{
    const char *code =
        json_string_value(json_object_get(json_object_get(resp->json, "error"), "code"));
    return resp->status == 409 && code && strcmp(code, "conflict") == 0;
}

void slb_admin_route(struct slb_ctl *ctl, const struct slb_admin_req *req,
                     struct slb_admin_resp *resp)
{
    bool connected;
    long long rev;
    if (!slb_ops_cluster(ctl, &connected, &rev)) {
        route(ctl, req, resp);
        return;
    }
    struct slb_admin_resp start = *resp;
    route(ctl, req, resp);
    /* A conflict whose request named no revision (If-Match) was not the client's doing: the
     * change is made again on what the other node stored. */
    for (int i = 0; i < CLUSTER_CONFLICT_RETRIES && is_conflict(resp) && !req->if_match; i++) {
        struct slb_err err = {0};
        if (slb_ops_cluster_refresh(ctl, &err) < 0) {
            slb_admin_error(resp, &err);
            break;
        }
        json_decref(resp->json);
        free(resp->text);
        *resp = start;
        route(ctl, req, resp);
    }
    if (resp->status < 300 && !slb_admin_method_is(req, "GET") && !slb_admin_method_is(req, "HEAD"))
        slb_ops_cluster_wrote(ctl); /* certificates' writes included */
    slb_ops_cluster(ctl, &connected, &rev);
    snprintf(resp->revision, sizeof(resp->revision), "%lld", rev);
}

static void route(struct slb_ctl *ctl, const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    if (strcmp(req->path, "/healthz") == 0) {
        if (!slb_admin_params_ok(req, NULL, resp))
            return;
        if (!slb_admin_method_is(req, "GET") && !slb_admin_method_is(req, "HEAD")) {
            slb_admin_not_allowed(resp, "GET, HEAD");
            return;
        }
        resp->json = json_pack("{s:s, s:I}", "status", "ok", "generation",
                               (json_int_t)slb_ops_generation(ctl));
        bool connected;
        long long rev;
        if (slb_ops_cluster(ctl, &connected, &rev))
            json_object_set_new(
                resp->json, "cluster",
                json_pack("{s:b, s:I}", "connected", connected, "revision", (json_int_t)rev));
        return;
    }
    if (strcmp(req->path, "/metrics") == 0) {
        static const char *const metrics_params[] = {"certificates", NULL};
        bool certificates = true;
        if (!slb_admin_params_ok(req, metrics_params, resp) ||
            !param_bool(req, "certificates", &certificates, resp))
            return;
        if (!slb_admin_method_is(req, "GET")) {
            slb_admin_not_allowed(resp, "GET");
            return;
        }
        slb_admin_metrics(ctl, certificates, resp);
        return;
    }
    struct slb_err werr = {0};
    if (!slb_admin_method_is(req, "GET") && !slb_admin_method_is(req, "HEAD") &&
        slb_ops_writable(ctl, &werr) < 0) {
        /* The state directory is being handed over to a new process (slbd --upgrade): every
         * change is refused alike, whatever its body. */
        slb_admin_error(resp, &werr);
        return;
    }
    char seg[SLB_ADMIN_MAX_SEGS][SLB_ADMIN_SEG];
    int n = slb_admin_split(req->path, seg);
    const char *coll = n >= 1 ? seg[0] : "";
    /* Every route below accepts no query parameter but POST /v1/apply's dry_run. */
    if (n == 1 && strcmp(coll, "apply") == 0) {
        if (slb_admin_params_ok(req, apply_params, resp))
            apply_all(ctl, req, resp);
        return;
    }
    if (strcmp(coll, "acme") == 0) {
        slb_admin_acme(ctl, req, resp);
        return;
    }
    if (n == 1 && strcmp(coll, "cluster") == 0) {
        if (slb_admin_params_ok(req, NULL, resp))
            cluster(ctl, req, resp);
        return;
    }
    if (n == 2 && strcmp(coll, "cluster") == 0 && strcmp(seg[1], "export") == 0) {
        if (slb_admin_params_ok(req, NULL, resp))
            slb_admin_cluster_export(ctl, req, resp);
        return;
    }
    bool known =
        (n == 1 && (strcmp(coll, "stats") == 0 || strcmp(coll, "settings") == 0 ||
                    strcmp(coll, "about") == 0 || strcmp(coll, "config") == 0)) ||
        (n >= 1 && n <= 3 && strcmp(coll, "certificates") == 0) ||
        (n >= 1 && n <= 2 && (strcmp(coll, "listeners") == 0 || strcmp(coll, "groups") == 0)) ||
        (n == 3 && strcmp(coll, "listeners") == 0) ||
        (n >= 3 && strcmp(coll, "groups") == 0 && strcmp(seg[2], "servers") == 0);
    if (!known) {
        slb_admin_error_simple(resp, 404, "not_found", "no such endpoint: %s", req->path);
        return;
    }
    if (strcmp(coll, "stats") == 0) {
        slb_admin_stats(ctl, req, resp);
        return;
    }
    /* The lists take paging and filters (admin/pages.c) and check their parameters themselves. */
    bool list = slb_admin_method_is(req, "GET") &&
                ((n == 1 && (strcmp(coll, "certificates") == 0 || strcmp(coll, "listeners") == 0 ||
                             strcmp(coll, "groups") == 0)) ||
                 (n == 3 && strcmp(coll, "groups") == 0));
    if (!list && !slb_admin_params_ok(req, NULL, resp))
        return;
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
            slb_admin_answer(resp, 200, json_incref((json_t *)slb_ops_config(ctl)));
        return;
    }
    if (strcmp(coll, "certificates") == 0) {
        slb_admin_certificates(ctl, n >= 2 ? seg[1] : NULL, n >= 3 ? seg[2] : NULL, req, resp);
        return;
    }
    if (n == 3 && strcmp(coll, "listeners") == 0) {
        listener_action(ctl, seg[1], seg[2], req, resp);
        return;
    }
    if (n >= 3) {
        slb_admin_servers(ctl, seg[1], n == 4 ? seg[3] : NULL, req, resp);
        return;
    }
    enum slb_ops_kind k = strcmp(coll, "groups") == 0 ? SLB_OPS_GROUP : SLB_OPS_LISTENER;
    if (n == 1)
        collection(ctl, k, req, resp);
    else
        item(ctl, k, seg[1], req, resp);
}
