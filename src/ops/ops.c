/* SPDX-License-Identifier: Apache-2.0 */
/* Operations on the configuration document: revisions and preconditions, listeners, groups,
 * settings and whole-document apply. Every change is made on a copy of the current document,
 * validated as a whole, persisted and published by slb_ctl_apply; on any error the running
 * configuration is untouched. */
#include "ops/ops.h"
#include "ops/ops_int.h"

#include "cluster/backend.h"
#include "config/config.h"
#include "config/state.h"
#include "daemon/cluster.h"
#include "daemon/control.h"
#include "metrics/metrics.h"
#include "state/backend.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

int slb_ops_writable(struct slb_ctl *ctl, struct slb_err *err)
{
    if (slb_ctl_handing_over(ctl))
        return slb_err_set(err, 503, "upgrading", "",
                           "slbd is handing over to a new process; retry in a moment");
    return 0;
}

/* --- cluster mode --- */

bool slb_ops_cluster(struct slb_ctl *ctl, bool *connected, long long *revision)
{
    if (!ctl->cluster)
        return false;
    *connected = slb_cluster_connected(ctl->cluster);
    *revision = (long long)slb_cluster_revision(ctl->cluster);
    return true;
}

void slb_ops_cluster_wrote(struct slb_ctl *ctl)
{
    if (ctl->cluster)
        slb_cluster_wrote(ctl->cluster, slb_backend_etcd_last_write(ctl->backend));
}

void slb_ops_cluster_write_done(struct slb_ctl *ctl)
{
    if (ctl->cluster)
        slb_cluster_write_done(ctl->cluster);
}

void slb_ops_cluster_abort(struct slb_ctl *ctl)
{
    if (ctl->cluster)
        slb_backend_etcd_abort(ctl->backend);
}

json_t *slb_ops_cluster_status(struct slb_ctl *ctl)
{
    return ctl->cluster ? slb_cluster_status(ctl->cluster) : NULL;
}

int slb_ops_cluster_refresh(struct slb_ctl *ctl, struct slb_err *err)
{
    return ctl->cluster ? slb_cluster_refresh(ctl->cluster, err) : 0;
}

/* --- revisions --- */

void slb_ops_revision(const json_t *resource, char *out)
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

int slb_ops_precondition(const struct slb_op *op, const json_t *resource, const char *what,
                         struct slb_err *err)
{
    if (!op || !op->expect)
        return 0;
    char rev[SLB_OPS_REV_SIZE];
    slb_ops_revision(resource, rev);
    const char *p = op->expect;
    size_t elen = strlen(rev);
    while (*p) {
        p += strspn(p, " \t,");
        size_t len = strcspn(p, ",");
        size_t tlen = len;
        while (tlen > 0 && (p[tlen - 1] == ' ' || p[tlen - 1] == '\t'))
            tlen--;
        /* Strong comparison (RFC 9110 13.1.1): a weak tag W/"..." never matches. */
        if ((tlen == 1 && p[0] == '*') || (elen && tlen == elen && memcmp(p, rev, elen) == 0))
            return 0;
        p += len;
    }
    return slb_err_set(err, 412, "precondition_failed", "",
                       "the %s changed since you read it (If-Match does not list its ETag %s); "
                       "read it again and retry",
                       what, rev);
}

/* --- shared steps --- */

const json_t *slb_ops_config(struct slb_ctl *ctl)
{
    return ctl->doc;
}

unsigned long long slb_ops_generation(struct slb_ctl *ctl)
{
    return ctl->cur ? (unsigned long long)ctl->cur->generation : 0;
}

void slb_ops_metrics_view(struct slb_ctl *ctl, struct slb_metrics_view *v)
{
    v->snap = ctl->cur;
    v->nworkers = ctl->nworkers;
    v->conn_cap = ctl->conn_cap;
    v->started_ms = ctl->started_ms;
    v->reload_ok = ctl->reload_ok;
    v->reload_ok_ms = ctl->reload_ok_ms;
    v->certs = ctl->certs;
    v->ocsp = ctl->ocsp;
    v->acme = ctl->acme;
    v->clustered = slb_ops_cluster(ctl, &v->cluster_connected, &v->cluster_revision);
}

json_t *slb_ops_find_named(const json_t *arr, const char *name, size_t *idx)
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

json_t *slb_ops_doc_with(const json_t *doc, const char *coll, json_t **arr)
{
    json_t *d = json_copy((json_t *)doc);
    const json_t *cur = json_object_get(doc, coll);
    json_t *a = cur ? json_copy((json_t *)cur) : json_array();
    *arr = NULL;
    if (!d || !a || !json_is_array(a) || json_object_set_new(d, coll, a)) {
        json_decref(d);
        return NULL;
    }
    *arr = a;
    return d;
}

int slb_ops_commit(struct slb_ctl *ctl, json_t *doc, const struct slb_op *op, json_t **would,
                   struct slb_err *err)
{
    if (slb_ops_writable(ctl, err) < 0) {
        json_decref(doc);
        if (would)
            *would = NULL;
        return SLB_EINVAL;
    }
    if (op && op->dry_run) {
        json_t *norm = NULL;
        int rc = slb_ctl_dry_run(ctl, doc, &norm, err);
        if (would)
            *would = norm;
        else
            json_decref(norm);
        return rc;
    }
    if (would)
        *would = NULL;
    return slb_ctl_apply(ctl, doc, true, err);
}

/* The document a change produced: the active one, or the one a dry run would store. */
static const json_t *result_doc(struct slb_ctl *ctl, const json_t *would)
{
    return would ? would : ctl->doc;
}

/* --- listeners and groups share one shape --- */

static const struct {
    const char *coll; /* "listeners" / "groups" */
    const char *what; /* "listener" / "group" */
    json_t *(*normalize)(const json_t *in, const char *where, struct slb_err *err);
} kinds[] = {
    {"listeners", "listener", slb_config_normalize_listener},
    {"groups", "group", slb_config_normalize_group},
};

json_t *slb_ops_item_get(struct slb_ctl *ctl, enum slb_ops_kind kind, const char *name,
                         struct slb_err *err)
{
    json_t *cur = slb_config_name_ok(name)
                      ? slb_ops_find_named(json_object_get(ctl->doc, kinds[kind].coll), name, NULL)
                      : NULL;
    if (!cur)
        slb_err_set(err, 404, "not_found", "", "no %s named \"%s\"", kinds[kind].what, name);
    return cur;
}

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

int slb_ops_in_use(json_t *users, const char *what, const char *name, struct slb_err *err)
{
    int rc = 0;
    if (json_array_size(users) > 0) {
        char *list = json_dumps(users, JSON_COMPACT);
        rc = slb_err_set(err, 409, "in_use", "", "%s \"%s\" is used by listeners %s", what, name,
                         list ? list : "");
        free(list);
    }
    json_decref(users);
    return rc;
}

/* The member named name of collection coll in doc, as a new reference (NULL when absent). */
static json_t *member_of(const json_t *doc, const char *coll, const char *name)
{
    json_t *v = slb_ops_find_named(json_object_get(doc, coll), name, NULL);
    return v ? json_incref(v) : NULL;
}

int slb_ops_item_create(struct slb_ctl *ctl, enum slb_ops_kind kind, const json_t *obj,
                        const struct slb_op *op, json_t **out, struct slb_err *err)
{
    const char *coll = kinds[kind].coll;
    json_t *norm = kinds[kind].normalize(obj, "", err);
    if (!norm)
        return SLB_EINVAL;
    const char *name = json_string_value(json_object_get(norm, "name"));
    int rc;
    if (slb_ops_find_named(json_object_get(ctl->doc, coll), name, NULL)) {
        rc = slb_err_set(err, 409, "name_taken", "", "a %s named \"%s\" already exists",
                         kinds[kind].what, name);
        goto done;
    }
    json_t *arr, *doc = slb_ops_doc_with(ctl->doc, coll, &arr);
    if (!doc || json_array_append(arr, norm)) {
        json_decref(doc);
        rc = slb_err_set(err, 500, "internal", "", "out of memory");
        goto done;
    }
    json_t *would = NULL;
    rc = slb_ops_commit(ctl, doc, op, &would, err);
    if (rc == 0 && out)
        *out = member_of(result_doc(ctl, would), coll, name);
    json_decref(would);
done:
    json_decref(norm);
    return rc;
}

int slb_ops_item_update(struct slb_ctl *ctl, enum slb_ops_kind kind, const char *name,
                        const json_t *obj, const struct slb_op *op, json_t **out,
                        struct slb_err *err)
{
    const char *coll = kinds[kind].coll;
    size_t idx = 0;
    json_t *cur = slb_ops_item_get(ctl, kind, name, err);
    if (!cur)
        return SLB_ENOTFOUND;
    slb_ops_find_named(json_object_get(ctl->doc, coll), name, &idx);
    if (slb_ops_precondition(op, cur, kinds[kind].what, err) < 0)
        return SLB_ECONFLICT;
    /* The name names the resource; obj may repeat it but not rename it. */
    const json_t *oname = json_object_get(obj, "name");
    if (oname && (!json_is_string(oname) || strcmp(json_string_value(oname), name) != 0))
        return slb_err_set(err, 400, "invalid_value", "",
                           "name: the body's name must match the path (\"%s\"); renaming is "
                           "delete and create",
                           name);
    json_t *named = json_deep_copy(obj);
    if (!named)
        return slb_err_set(err, 500, "internal", "", "out of memory");
    json_object_set_new(named, "name", json_string(name));
    json_t *norm = kinds[kind].normalize(named, "", err);
    json_decref(named);
    if (!norm)
        return SLB_EINVAL;
    json_t *arr, *doc = slb_ops_doc_with(ctl->doc, coll, &arr);
    if (!doc || json_array_set(arr, idx, norm)) {
        json_decref(doc);
        json_decref(norm);
        return slb_err_set(err, 500, "internal", "", "out of memory");
    }
    json_t *would = NULL;
    int rc = slb_ops_commit(ctl, doc, op, &would, err);
    if (rc == 0 && out)
        *out = member_of(result_doc(ctl, would), coll, name);
    json_decref(would);
    json_decref(norm);
    return rc;
}

int slb_ops_item_delete(struct slb_ctl *ctl, enum slb_ops_kind kind, const char *name,
                        const struct slb_op *op, struct slb_err *err)
{
    const char *coll = kinds[kind].coll;
    size_t idx = 0;
    json_t *cur = slb_ops_item_get(ctl, kind, name, err);
    if (!cur)
        return SLB_ENOTFOUND;
    slb_ops_find_named(json_object_get(ctl->doc, coll), name, &idx);
    if (slb_ops_precondition(op, cur, kinds[kind].what, err) < 0)
        return SLB_ECONFLICT;
    if (kind == SLB_OPS_GROUP &&
        slb_ops_in_use(group_users(ctl->doc, name), "group", name, err) < 0)
        return SLB_ECONFLICT;
    json_t *arr, *doc = slb_ops_doc_with(ctl->doc, coll, &arr);
    if (!doc || json_array_remove(arr, idx)) {
        json_decref(doc);
        return slb_err_set(err, 500, "internal", "", "out of memory");
    }
    return slb_ops_commit(ctl, doc, op, NULL, err);
}

int slb_ops_listener_status(struct slb_ctl *ctl, const char *name, bool stopped,
                            const struct slb_op *op, json_t **out, struct slb_err *err)
{
    json_t *cur = slb_ops_item_get(ctl, SLB_OPS_LISTENER, name, err);
    if (!cur)
        return SLB_ENOTFOUND;
    json_t *obj = json_deep_copy(cur);
    if (!obj || json_object_set_new(obj, "status", json_string(stopped ? "stopped" : "running"))) {
        json_decref(obj);
        return slb_err_set(err, 500, "internal", "", "out of memory");
    }
    int rc = slb_ops_item_update(ctl, SLB_OPS_LISTENER, name, obj, op, out, err);
    json_decref(obj);
    return rc;
}

/* --- settings and whole documents --- */

int slb_ops_settings_update(struct slb_ctl *ctl, const json_t *settings, const struct slb_op *op,
                            json_t **out, struct slb_err *err)
{
    if (slb_ops_precondition(op, json_object_get(ctl->doc, "settings"), "settings", err) < 0)
        return SLB_ECONFLICT;
    /* Listeners and groups stay the very objects of the running document (slb_ops_doc_with). */
    json_t *doc = json_copy(ctl->doc);
    if (!doc || json_object_set(doc, "settings", (json_t *)settings)) {
        json_decref(doc);
        return slb_err_set(err, 500, "internal", "", "out of memory");
    }
    json_t *would = NULL;
    int rc = slb_ops_commit(ctl, doc, op, &would, err);
    if (rc == 0 && out)
        *out = json_incref(json_object_get(result_doc(ctl, would), "settings"));
    json_decref(would);
    return rc;
}

int slb_ops_apply(struct slb_ctl *ctl, const json_t *in, const struct slb_op *op, json_t **out,
                  struct slb_err *err)
{
    if (slb_ops_precondition(op, ctl->doc, "configuration", err) < 0)
        return SLB_ECONFLICT;
    json_t *doc = json_copy(ctl->doc); /* what in leaves out stays as it is */
    if (!doc)
        return slb_err_set(err, 500, "internal", "", "out of memory");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)in, key, v)
    {
        if (strcmp(key, "listeners") != 0 && strcmp(key, "groups") != 0 &&
            strcmp(key, "settings") != 0) {
            json_decref(doc);
            return slb_err_set(err, 400, "unknown_field", "",
                               "%s: unknown field; expected listeners, groups, settings", key);
        }
        json_object_set(doc, key, v);
    }
    json_t *would = NULL;
    int rc = slb_ops_commit(ctl, doc, op, &would, err);
    if (rc == 0 && out)
        *out = would ? json_incref(would) : json_incref(ctl->doc);
    json_decref(would);
    return rc;
}
