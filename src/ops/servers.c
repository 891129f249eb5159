/* SPDX-License-Identifier: Apache-2.0 */
/* Operations on a group's servers as resources of their own: adding, removing or re-weighting
 * one server is one change made on the control thread against the current group, so
 * concurrent clients cannot lose each other's servers (as a read-modify-write of the whole
 * group could). */
#include "ops/ops.h"
#include "ops/ops_int.h"

#include "config/config.h"
#include "daemon/control.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One server's address, parsed for comparison by value ("::1" is "0:0::1"). */
struct srv_key {
    int family;
    unsigned char addr[16];
    long port;
};

static bool key_of_address(const char *addr, long port, struct srv_key *k)
{
    k->port = port;
    if (inet_pton(AF_INET, addr, k->addr) == 1)
        k->family = AF_INET;
    else if (inet_pton(AF_INET6, addr, k->addr) == 1)
        k->family = AF_INET6;
    else
        return false;
    return true;
}

static bool key_of_server(const json_t *s, struct srv_key *k)
{
    const char *a = json_string_value(json_object_get(s, "address"));
    return a && key_of_address(a, (long)json_integer_value(json_object_get(s, "port")), k);
}

static bool key_eq(const struct srv_key *a, const struct srv_key *b)
{
    return a->family == b->family && a->port == b->port &&
           memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16) == 0;
}

/* "ADDR:PORT" or "[IPv6]:PORT". */
static bool key_of_name(const char *name, struct srv_key *k)
{
    char buf[160];
    if (snprintf(buf, sizeof(buf), "%s", name) >= (int)sizeof(buf))
        return false;
    char *addr = buf, *colon;
    if (buf[0] == '[') {
        char *close = strchr(buf, ']');
        if (!close || close[1] != ':')
            return false;
        *close = '\0';
        addr = buf + 1;
        colon = close + 1;
    } else {
        colon = strchr(buf, ':');
        if (!colon || strchr(colon + 1, ':'))
            return false; /* an IPv6 address must be in brackets */
        *colon = '\0';
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || colon[1] == '\0' || port < 1 || port > 65535)
        return false;
    return key_of_address(addr, port, k);
}

static long find_server(const json_t *servers, const struct srv_key *k)
{
    size_t i;
    const json_t *s;
    json_array_foreach(servers, i, s)
    {
        struct srv_key sk;
        if (key_of_server(s, &sk) && key_eq(&sk, k))
            return (long)i;
    }
    return -1;
}

/* Validate one server object the way a group validates its members; errors name the field
 * relative to the server ("weight", not "servers[0].weight"). */
static json_t *normalize_server(const char *group, const json_t *server, struct slb_err *err)
{
    json_t *probe = json_pack("{s:s, s:[O]}", "name", group, "servers", server);
    json_t *norm = probe ? slb_config_normalize_group(probe, "", err) : NULL;
    json_decref(probe);
    if (!norm) {
        static const char prefix[] = "servers[0]";
        size_t pl = sizeof(prefix) - 1;
        if (strncmp(err->where, prefix, pl) == 0) {
            size_t skip = pl + (err->where[pl] == '.');
            memmove(err->where, err->where + skip, strlen(err->where + skip) + 1);
        }
        if (strncmp(err->msg, prefix, pl) == 0) {
            size_t skip = pl + (err->msg[pl] == '.');
            memmove(err->msg, err->msg + skip, strlen(err->msg + skip) + 1);
        }
        return NULL;
    }
    json_t *s = json_incref(json_array_get(json_object_get(norm, "servers"), 0));
    json_decref(norm);
    return s;
}

/* The group named group (its index in *gidx), or NULL with 404. */
static json_t *group_of(struct slb_ctl *ctl, const char *group, size_t *gidx, struct slb_err *err)
{
    json_t *g = slb_config_name_ok(group)
                    ? slb_ops_find_named(json_object_get(ctl->doc, "groups"), group, gidx)
                    : NULL;
    if (!g)
        slb_err_set(err, 404, "not_found", "", "no group named \"%s\"", group);
    return g;
}

/* Where a server is: its group's index, its own index and parsed key; NULL with 404. */
static json_t *locate(struct slb_ctl *ctl, const char *group, const char *name, size_t *gidx,
                      size_t *at, struct srv_key *k, struct slb_err *err)
{
    json_t *g = group_of(ctl, group, gidx, err);
    if (!g)
        return NULL;
    const json_t *servers = json_object_get(g, "servers");
    long i = key_of_name(name, k) ? find_server(servers, k) : -1;
    if (i < 0) {
        slb_err_set(err, 404, "not_found", "",
                    "group \"%s\" has no server %s (name it ADDRESS:PORT, an IPv6 address in "
                    "brackets)",
                    group, name);
        return NULL;
    }
    *at = (size_t)i;
    return json_array_get(servers, *at);
}

json_t *slb_ops_server_get(struct slb_ctl *ctl, const char *group, const char *key,
                           struct slb_err *err)
{
    size_t gidx, at;
    struct srv_key k;
    return locate(ctl, group, key, &gidx, &at, &k, err);
}

/* A new document for a change to the servers of group gidx of doc: the document, its groups,
 * that group and its servers array (*servers) are copied, everything else stays the same
 * json_t (slb_ops_doc_with). NULL when out of memory. */
static json_t *doc_with_servers(const json_t *doc, size_t gidx, json_t **servers)
{
    json_t *groups, *d = slb_ops_doc_with(doc, "groups", &groups);
    json_t *g = d ? json_copy(json_array_get(groups, gidx)) : NULL;
    const json_t *cur = json_object_get(g, "servers");
    json_t *sv = cur ? json_copy((json_t *)cur) : json_array();
    *servers = NULL;
    if (!g || !sv || !json_is_array(sv) || json_object_set_new(g, "servers", sv)) {
        json_decref(g);
        json_decref(d);
        return NULL;
    }
    if (json_array_set_new(groups, gidx, g)) {
        json_decref(d);
        return NULL;
    }
    *servers = sv;
    return d;
}

int slb_ops_server_add(struct slb_ctl *ctl, const char *group, const json_t *server,
                       const struct slb_op *op, json_t **out, struct slb_err *err)
{
    size_t gidx = 0;
    json_t *g = group_of(ctl, group, &gidx, err);
    if (!g)
        return SLB_ENOTFOUND;
    json_t *norm = normalize_server(group, server, err);
    if (!norm)
        return SLB_EINVAL;
    /* The precondition is on the group: a client that read it names what it saw. */
    int rc = slb_ops_precondition(op, g, "group", err);
    if (rc < 0)
        goto done;
    struct srv_key k;
    key_of_server(norm, &k);
    long at = find_server(json_object_get(g, "servers"), &k);
    if (at >= 0) {
        const json_t *s = json_array_get(json_object_get(g, "servers"), (size_t)at);
        rc = slb_err_set(err, 409, "name_taken", "", "group \"%s\" already has server %s port %lld",
                         group, json_string_value(json_object_get(s, "address")),
                         (long long)json_integer_value(json_object_get(s, "port")));
        goto done;
    }
    json_t *servers, *doc = doc_with_servers(ctl->doc, gidx, &servers);
    if (!doc || json_array_append(servers, norm)) {
        json_decref(doc);
        rc = slb_err_set(err, 500, "internal", "", "out of memory");
        goto done;
    }
    rc = slb_ops_commit(ctl, doc, op, NULL, err);
    if (rc == 0 && out)
        *out = json_incref(norm);
done:
    json_decref(norm);
    return rc;
}

int slb_ops_server_update(struct slb_ctl *ctl, const char *group, const char *key,
                          const json_t *server, bool merge, const struct slb_op *op, json_t **out,
                          struct slb_err *err)
{
    size_t gidx, at;
    struct srv_key k, bk;
    json_t *cur = locate(ctl, group, key, &gidx, &at, &k, err);
    if (!cur)
        return SLB_ENOTFOUND;
    if (slb_ops_precondition(op, cur, "server", err) < 0)
        return SLB_ECONFLICT;
    /* The key names the server; server may repeat its address and port, not change them
     * (moving a server is remove and add). */
    json_t *ba = json_object_get(server, "address"), *bp = json_object_get(server, "port");
    if ((ba || bp) && (!json_is_string(ba) || !json_is_integer(bp) ||
                       !key_of_address(json_string_value(ba), (long)json_integer_value(bp), &bk) ||
                       !key_eq(&bk, &k)))
        return slb_err_set(err, 400, "invalid_value", "",
                           "address: the body's address and port must match the path (%s); "
                           "moving a server is remove and add",
                           key);
    /* A merge changes the fields given; otherwise server is the whole server (an absent
     * weight is 100). */
    json_t *merged = merge ? json_deep_copy(cur)
                           : json_pack("{s:O, s:O}", "address", json_object_get(cur, "address"),
                                       "port", json_object_get(cur, "port"));
    json_object_update(merged, (json_t *)server);
    json_t *norm = normalize_server(group, merged, err);
    json_decref(merged);
    if (!norm)
        return SLB_EINVAL;
    json_t *servers, *doc = doc_with_servers(ctl->doc, gidx, &servers);
    if (!doc || json_array_set(servers, at, norm)) {
        json_decref(doc);
        json_decref(norm);
        return slb_err_set(err, 500, "internal", "", "out of memory");
    }
    int rc = slb_ops_commit(ctl, doc, op, NULL, err);
    if (rc == 0 && out)
        *out = json_incref(norm);
    json_decref(norm);
    return rc;
}

int slb_ops_server_remove(struct slb_ctl *ctl, const char *group, const char *key,
                          const struct slb_op *op, struct slb_err *err)
{
    size_t gidx, at;
    struct srv_key k;
    json_t *cur = locate(ctl, group, key, &gidx, &at, &k, err);
    if (!cur)
        return SLB_ENOTFOUND;
    if (slb_ops_precondition(op, cur, "server", err) < 0)
        return SLB_ECONFLICT;
    json_t *servers, *doc = doc_with_servers(ctl->doc, gidx, &servers);
    if (!doc || json_array_remove(servers, at)) {
        json_decref(doc);
        return slb_err_set(err, 500, "internal", "", "out of memory");
    }
    return slb_ops_commit(ctl, doc, op, NULL, err);
}
