/* SPDX-License-Identifier: Apache-2.0 */
/* `slbctl group ...` and `slbctl server ...`: backend groups (updated by read-modify-write
 * with If-Match), and the servers inside them, each added, removed or re-weighted by its own
 * request so that concurrent commands never lose each other's servers. */
#include "cli/cli.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GROUPS "/v1/groups/"
/* The weight of a server added without one: full share, as in the cloud product. */
#define DEFAULT_WEIGHT 100

static const char *const schedulers[] = {"wrr", "rr", "wlc", "sch", "tch", NULL};
static const char *const health_protocols[] = {"tcp", "http", NULL};

static json_t *server_object(const char *addr, long port, long weight)
{
    json_t *s = json_object();
    json_object_set_new(s, "address", json_string(addr));
    json_object_set_new(s, "port", json_integer(port));
    json_object_set_new(s, "weight", json_integer(weight < 0 ? DEFAULT_WEIGHT : weight));
    return s;
}

/* Applies --scheduler, --health, --health-uri and (create only) --server; 0 or usage. */
static int apply_flags(const struct slb_cli_args *a, json_t *obj)
{
    const char *v = slb_cli_opt(a, "--name");
    if (v)
        json_object_set_new(obj, "name", json_string(v));
    v = slb_cli_opt(a, "--scheduler");
    if (v && !slb_cli_one_of(v, schedulers))
        return slb_cli_usage_fail("--scheduler must be wrr, rr, wlc, sch or tch, not '%s'", v);
    if (v)
        json_object_set_new(obj, "scheduler", json_string(v));
    const char *proto = slb_cli_opt(a, "--health");
    const char *uri = slb_cli_opt(a, "--health-uri");
    if (proto && !slb_cli_one_of(proto, health_protocols))
        return slb_cli_usage_fail("--health must be tcp or http, not '%s'", proto);
    if (proto || uri) {
        json_t *hc = json_object_get(obj, "health_check");
        if (!json_is_object(hc)) {
            hc = json_object();
            json_object_set_new(obj, "health_check", hc);
        }
        /* A URI only means something to an HTTP check, so asking for one implies it. */
        if (!proto && uri)
            proto = "http";
        json_object_set_new(hc, "protocol", json_string(proto));
        if (uri)
            json_object_set_new(hc, "uri", json_string(uri));
        else if (strcmp(proto, "tcp") == 0)
            json_object_del(hc, "uri");
    }
    if (!slb_cli_has(a, "--server"))
        return 0;
    json_t *servers = json_array();
    for (int i = 0; i < a->nopt; i++) {
        if (strcmp(a->opt_name[i], "--server") != 0)
            continue;
        char addr[256];
        long port, weight;
        if (slb_cli_parse_server(a->opt_val[i], 1, addr, sizeof(addr), &port, &weight) < 0) {
            json_decref(servers);
            return slb_cli_usage_fail("bad --server '%s' (want ADDR:PORT[:WEIGHT], IPv6 as "
                                      "[ADDR]:PORT, weight 0-100)",
                                      a->opt_val[i]);
        }
        json_array_append_new(servers, server_object(addr, port, weight));
    }
    json_object_set_new(obj, "servers", servers);
    return 0;
}

int slb_cli_group_create(struct slb_cli *c, int argc, char **argv)
{
    static const struct slb_cli_optspec spec[] = {
        {"--name", SLB_CLI_ARG_REQUIRED},
        {"--scheduler", SLB_CLI_ARG_REQUIRED},
        {"--server", SLB_CLI_ARG_REQUIRED},
        {"--health", SLB_CLI_ARG_REQUIRED},
        {"--health-uri", SLB_CLI_ARG_REQUIRED},
        {"--from-json", SLB_CLI_ARG_REQUIRED},
        {NULL, 0},
    };
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, spec, 0, 0);
    if (rc != 0)
        return rc;
    const char *from = slb_cli_opt(&a, "--from-json");
    json_t *obj = from ? slb_cli_read_json_object(from) : json_object();
    if (!obj)
        return SLB_CLI_EXIT_API;
    rc = apply_flags(&a, obj);
    if (rc == 0 && !json_object_get(obj, "name"))
        rc = slb_cli_usage_fail("missing --name");
    if (rc == 0 && !json_object_get(obj, "servers"))
        json_object_set_new(obj, "servers", json_array());
    if (rc == 0)
        rc = slb_cli_send_resource(c, "POST", "/v1/groups", obj);
    json_decref(obj);
    return rc;
}

struct group_edit {
    const struct slb_cli_args *a;
    const json_t *patch;
};

static int group_edit(json_t *obj, void *arg)
{
    const struct group_edit *e = arg;
    if (e->patch) {
        json_t *copy = json_deep_copy(e->patch);
        json_object_update(obj, copy);
        json_decref(copy);
    }
    return apply_flags(e->a, obj);
}

int slb_cli_group_update(struct slb_cli *c, int argc, char **argv)
{
    static const struct slb_cli_optspec spec[] = {
        {"--scheduler", SLB_CLI_ARG_REQUIRED},
        {"--health", SLB_CLI_ARG_REQUIRED},
        {"--health-uri", SLB_CLI_ARG_REQUIRED},
        {"--from-json", SLB_CLI_ARG_REQUIRED},
        {NULL, 0},
    };
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, spec, 1, 1);
    if (rc != 0)
        return rc;
    if (a.nopt == 0)
        return slb_cli_usage_fail("nothing to update: give the fields to change");
    const char *from = slb_cli_opt(&a, "--from-json");
    json_t *patch = NULL, *out = NULL;
    if (from && !(patch = slb_cli_read_json_object(from)))
        return SLB_CLI_EXIT_API;
    struct group_edit e = {&a, patch};
    rc = slb_cli_update(c, GROUPS, a.pos[0], group_edit, &e, &out);
    if (rc == 0)
        slb_cli_print_resource(c, out);
    json_decref(out);
    json_decref(patch);
    return rc;
}

/* "addr:port" for a server object, IPv6 in brackets. */
static void server_text(const json_t *s, char *buf, size_t size)
{
    const char *addr = json_string_value(json_object_get(s, "address"));
    json_int_t port = json_integer_value(json_object_get(s, "port"));
    if (!addr)
        addr = "?";
    int v6 = strchr(addr, ':') != NULL;
    snprintf(buf, size, "%s%s%s:%" JSON_INTEGER_FORMAT, v6 ? "[" : "", addr, v6 ? "]" : "", port);
}

static void group_row(const json_t *item, char (*cells)[SLB_CLI_CELL])
{
    const json_t *v = json_object_get(item, "name");
    if (v)
        slb_cli_value_text(v, cells[0], SLB_CLI_CELL);
    v = json_object_get(item, "scheduler");
    if (v)
        slb_cli_value_text(v, cells[1], SLB_CLI_CELL);
    const json_t *servers = json_object_get(item, "servers");
    size_t n = json_array_size(servers), len = 0;
    /* A handful of addresses tells more than a count; a long list would wreck the table. */
    for (size_t i = 0; i < n && i < 4; i++) {
        char s[128];
        server_text(json_array_get(servers, i), s, sizeof(s));
        len += (size_t)snprintf(cells[2] + len, SLB_CLI_CELL - len, "%s%s", i ? "," : "", s);
    }
    if (n > 4)
        snprintf(cells[2] + len, SLB_CLI_CELL - len, " +%zu more", n - 4);
}

int slb_cli_group_list(struct slb_cli *c, int argc, char **argv)
{
    static const char *const headers[] = {"NAME", "SCHEDULER", "SERVERS"};
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 0, 0);
    if (rc != 0)
        return rc;
    return slb_cli_list(c, "/v1/groups", "groups", 3, headers, group_row);
}

int slb_cli_group_show(struct slb_cli *c, int argc, char **argv)
{
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 1, 1);
    return rc != 0 ? rc : slb_cli_show_resource(c, GROUPS, a.pos[0]);
}

int slb_cli_group_delete(struct slb_cli *c, int argc, char **argv)
{
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 1, 1);
    return rc != 0 ? rc : slb_cli_delete_resource(c, GROUPS, "group", a.pos[0]);
}

enum server_op { SERVER_ADD, SERVER_REMOVE, SERVER_WEIGHT };

/* The three server commands: POST /v1/groups/G/servers, DELETE or PATCH
 * /v1/groups/G/servers/ADDR:PORT. The API finds the server (by address value) and says when
 * it is missing or already there. */
static int server_cmd(struct slb_cli *c, int argc, char **argv, enum server_op op)
{
    static const struct slb_cli_optspec add_spec[] = {{"--weight", SLB_CLI_ARG_REQUIRED},
                                                      {NULL, 0}};
    struct slb_cli_args a;
    int npos = op == SERVER_WEIGHT ? 3 : 2;
    int rc = slb_cli_parse(&a, argc, argv, op == SERVER_ADD ? add_spec : NULL, npos, npos);
    if (rc != 0)
        return rc;
    const char *group = a.pos[0], *spec = a.pos[1];
    char addr[256];
    long port, weight = -1;
    if (slb_cli_parse_server(spec, op == SERVER_ADD, addr, sizeof(addr), &port, &weight) < 0)
        return slb_cli_usage_fail("bad server '%s' (want ADDR:PORT, IPv6 as [ADDR]:PORT)", spec);
    const char *w = op == SERVER_WEIGHT ? a.pos[2] : slb_cli_opt(&a, "--weight");
    if (w && slb_cli_parse_int(w, 0, 100, &weight) < 0)
        return slb_cli_usage_fail("bad weight '%s' (want 0-100)", w);
    json_t *probe = server_object(addr, port, weight), *body = NULL, *out = NULL;
    char path[512], shown[300];
    server_text(probe, shown, sizeof(shown));
    if (slb_cli_path(path, sizeof(path), GROUPS, group, "/servers") < 0) {
        rc = slb_cli_usage_fail("group name too long");
        goto done;
    }
    if (op != SERVER_ADD) {
        /* The server's own path segment, "[v6]:port" percent-encoded like any segment. */
        char seg[600];
        size_t len = strlen(path);
        if (slb_cli_path(seg, sizeof(seg), "/", shown, NULL) < 0 ||
            len + strlen(seg) >= sizeof(path)) {
            rc = slb_cli_usage_fail("server name too long");
            goto done;
        }
        memcpy(path + len, seg, strlen(seg) + 1);
    }
    if (op == SERVER_ADD)
        rc = slb_cli_call(c, "POST", path, probe, &out);
    else if (op == SERVER_REMOVE)
        rc = slb_cli_call(c, "DELETE", path, NULL, &out);
    else {
        body = json_pack("{s:I}", "weight", (json_int_t)weight);
        rc = slb_cli_call(c, "PATCH", path, body, &out);
    }
    if (rc != 0)
        goto done;
    if (c->json) {
        if (out)
            slb_cli_print_json(c->out, out);
    } else if (op == SERVER_ADD) {
        fprintf(c->out, "added server %s (weight %ld) to group %s\n", shown,
                weight < 0 ? (long)DEFAULT_WEIGHT : weight, group);
    } else if (op == SERVER_REMOVE) {
        fprintf(c->out, "removed server %s from group %s\n", shown, group);
    } else {
        fprintf(c->out, "set weight of server %s in group %s to %ld\n", shown, group, weight);
    }
done:
    json_decref(probe);
    json_decref(body);
    json_decref(out);
    return rc;
}

int slb_cli_server_add(struct slb_cli *c, int argc, char **argv)
{
    return server_cmd(c, argc, argv, SERVER_ADD);
}

int slb_cli_server_remove(struct slb_cli *c, int argc, char **argv)
{
    return server_cmd(c, argc, argv, SERVER_REMOVE);
}

int slb_cli_server_set_weight(struct slb_cli *c, int argc, char **argv)
{
    return server_cmd(c, argc, argv, SERVER_WEIGHT);
}
