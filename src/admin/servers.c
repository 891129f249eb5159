/* SPDX-License-Identifier: Apache-2.0 */
/* Admin API routes of a group's servers as resources of their own, over the server
 * operations (src/ops/servers.c). */
#include "admin/routes.h"

#include "ops/ops.h"

#include <stdio.h>
#include <string.h>

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

/* A server's key in a list: "address:port", an IPv6 address in brackets (as in its path). */
static void server_key(const json_t *item, char *buf, size_t size)
{
    const char *a = json_string_value(json_object_get(item, "address"));
    json_int_t port = json_integer_value(json_object_get(item, "port"));
    if (!a)
        a = "";
    snprintf(buf, size, strchr(a, ':') ? "[%s]:%lld" : "%s:%lld", a, (long long)port);
}

void slb_admin_servers(struct slb_ctl *ctl, const char *group, const char *server,
                       const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    struct slb_err err = {0};
    json_t *g = slb_ops_item_get(ctl, SLB_OPS_GROUP, group, &err);
    if (!g) {
        slb_admin_error(resp, &err);
        return;
    }
    json_t *out = NULL;
    int rc;
    if (!server) {
        if (slb_admin_method_is(req, "GET")) {
            struct slb_admin_page pg;
            if (slb_admin_page_parse(req, NULL, &pg, resp))
                slb_admin_list_json(resp, "servers", json_incref(json_object_get(g, "servers")),
                                    &pg, server_key);
            return;
        }
        if (!slb_admin_method_is(req, "POST")) {
            slb_admin_not_allowed(resp, "GET, POST");
            return;
        }
        json_t *body = slb_admin_body_object(req, resp);
        if (!body)
            return;
        /* No precondition: adding a server is not based on a read of the group. */
        rc = slb_ops_server_add(ctl, group, body, NULL, &out, &err);
        json_decref(body);
        slb_admin_answer_op(resp, rc, &err, 201, out);
        return;
    }
    char key[SLB_ADMIN_SEG];
    segment_decode(server, key, sizeof(key));
    json_t *cur = slb_ops_server_get(ctl, group, key, &err);
    if (!cur) {
        slb_admin_error(resp, &err);
        return;
    }
    if (slb_admin_method_is(req, "GET")) {
        slb_admin_answer(resp, 200, json_incref(cur));
        return;
    }
    bool del = slb_admin_method_is(req, "DELETE"), patch = slb_admin_method_is(req, "PATCH");
    if (!del && !patch && !slb_admin_method_is(req, "PUT")) {
        slb_admin_not_allowed(resp, "GET, PUT, PATCH, DELETE");
        return;
    }
    if (!slb_admin_if_match(req, cur, "server", resp))
        return;
    const struct slb_op op = {.expect = req->if_match};
    if (del) {
        rc = slb_ops_server_remove(ctl, group, key, &op, &err);
        slb_admin_answer_op(resp, rc, &err, 204, NULL);
        return;
    }
    json_t *body = slb_admin_body_object(req, resp);
    if (!body)
        return;
    /* PATCH changes the fields given; PUT is the whole server. */
    rc = slb_ops_server_update(ctl, group, key, body, patch, &op, &out, &err);
    json_decref(body);
    slb_admin_answer_op(resp, rc, &err, 200, out);
}
