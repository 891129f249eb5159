/* SPDX-License-Identifier: Apache-2.0 */
/* Admin API routes of a group's servers as resources of their own: adding, removing or
 * re-weighting one server is one change made on the control thread against the current
 * group, so concurrent clients cannot lose each other's servers (as a read-modify-write of
 * the whole group could). */
#include "admin/routes.h"

#include "config/config.h"
#include "event/control.h"

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

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A path segment without its percent-encoding (clients encode brackets and colons), with
 * anything but printable ASCII as '?' so that it can go into a message. */
static void segment_decode(const char *seg, char *out, size_t size)
{
    size_t n = 0;
    for (const char *p = seg; *p && n < size - 1; p++) {
        char ch = *p;
        if (*p == '%' && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
            ch = (char)(hexval(p[1]) * 16 + hexval(p[2]));
            p += 2;
        }
        out[n++] = ch > 0x20 && ch < 0x7f && ch != '"' ? ch : '?';
    }
    out[n] = '\0';
}

/* "ADDR:PORT" or "[IPv6]:PORT" (decoded). */
static bool key_of_segment(const char *seg, struct srv_key *k)
{
    char buf[SLB_ADMIN_SEG];
    snprintf(buf, sizeof(buf), "%s", seg);
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
static json_t *normalize_server(const char *group, json_t *server, struct slb_err *err)
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

static void servers_of_group(struct slb_ctl *ctl, const char *group, size_t gidx,
                             const json_t *servers, const struct slb_admin_req *req,
                             struct slb_admin_resp *resp)
{
    if (slb_admin_method_is(req, "GET")) {
        resp->json = json_pack("{s:O}", "servers", servers);
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
    json_t *norm = normalize_server(group, body, &err);
    json_decref(body);
    if (!norm) {
        slb_admin_error(resp, &err);
        return;
    }
    struct srv_key k;
    key_of_server(norm, &k);
    long at = find_server(servers, &k);
    if (at >= 0) {
        const json_t *s = json_array_get(servers, (size_t)at);
        slb_admin_error_simple(resp, 409, "name_taken",
                               "group \"%s\" already has server %s port %lld", group,
                               json_string_value(json_object_get(s, "address")),
                               (long long)json_integer_value(json_object_get(s, "port")));
        json_decref(norm);
        return;
    }
    json_t *doc = json_deep_copy(ctl->doc);
    json_t *g = json_array_get(json_object_get(doc, "groups"), gidx);
    json_array_append(json_object_get(g, "servers"), norm);
    if (slb_admin_apply(ctl, doc, resp))
        slb_admin_answer(resp, 201, json_incref(norm));
    json_decref(norm);
}

static void one_server(struct slb_ctl *ctl, const char *group, size_t gidx, const json_t *servers,
                       const char *which, const struct slb_admin_req *req,
                       struct slb_admin_resp *resp)
{
    struct srv_key k;
    char name[SLB_ADMIN_SEG];
    segment_decode(which, name, sizeof(name));
    which = name;
    long at = key_of_segment(which, &k) ? find_server(servers, &k) : -1;
    if (at < 0) {
        slb_admin_error_simple(resp, 404, "not_found",
                               "group \"%s\" has no server %s (name it ADDRESS:PORT, an IPv6 "
                               "address in brackets)",
                               group, which);
        return;
    }
    json_t *cur = json_array_get(servers, (size_t)at);
    if (slb_admin_method_is(req, "GET")) {
        slb_admin_answer(resp, 200, json_incref(cur));
        return;
    }
    bool del = slb_admin_method_is(req, "DELETE"), patch = slb_admin_method_is(req, "PATCH");
    if (!del && !patch && !slb_admin_method_is(req, "PUT")) {
        slb_admin_not_allowed(resp, "GET, PUT, PATCH, DELETE");
        return;
    }
    char etag[SLB_ADMIN_ETAG_SIZE];
    slb_admin_etag(cur, etag);
    if (!slb_admin_if_match(req, etag, "server", resp))
        return;
    json_t *doc = json_deep_copy(ctl->doc);
    json_t *list = json_object_get(json_array_get(json_object_get(doc, "groups"), gidx), "servers");
    if (del) {
        json_array_remove(list, (size_t)at);
        if (slb_admin_apply(ctl, doc, resp))
            resp->status = 204;
        return;
    }
    json_t *body = slb_admin_body_object(req, resp);
    if (!body) {
        json_decref(doc);
        return;
    }
    /* The path names the server; the body may repeat its address and port, not change them
     * (moving a server is remove and add). */
    struct srv_key bk;
    json_t *ba = json_object_get(body, "address"), *bp = json_object_get(body, "port");
    if ((ba || bp) && (!json_is_string(ba) || !json_is_integer(bp) ||
                       !key_of_address(json_string_value(ba), (long)json_integer_value(bp), &bk) ||
                       !key_eq(&bk, &k))) {
        slb_admin_error_simple(resp, 400, "invalid_value",
                               "address: the body's address and port must match the path (%s); "
                               "moving a server is remove and add",
                               which);
        json_decref(body);
        json_decref(doc);
        return;
    }
    /* PATCH changes the fields given; PUT is the whole server (an absent weight is 100). */
    json_t *merged = patch ? json_deep_copy(cur)
                           : json_pack("{s:O, s:O}", "address", json_object_get(cur, "address"),
                                       "port", json_object_get(cur, "port"));
    json_object_update(merged, body);
    json_decref(body);
    struct slb_err err = {0};
    json_t *norm = normalize_server(group, merged, &err);
    json_decref(merged);
    if (!norm) {
        json_decref(doc);
        slb_admin_error(resp, &err);
        return;
    }
    json_array_set(list, (size_t)at, norm);
    if (slb_admin_apply(ctl, doc, resp))
        slb_admin_answer(resp, 200, json_incref(norm));
    json_decref(norm);
}

void slb_admin_servers(struct slb_ctl *ctl, const char *group, const char *server,
                       const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    size_t gidx = 0;
    json_t *g = slb_config_name_ok(group)
                    ? slb_admin_find_named(json_object_get(ctl->doc, "groups"), group, &gidx)
                    : NULL;
    if (!g) {
        slb_admin_error_simple(resp, 404, "not_found", "no group named \"%s\"", group);
        return;
    }
    const json_t *servers = json_object_get(g, "servers");
    if (server)
        one_server(ctl, group, gidx, servers, server, req, resp);
    else
        servers_of_group(ctl, group, gidx, servers, req, resp);
}
