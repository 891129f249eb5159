/* SPDX-License-Identifier: Apache-2.0 */
/* `slbctl listener ...`: create listeners from flags or JSON, and update them by fetching the
 * current object, changing only the fields given, and putting it back whole (with If-Match, so
 * a concurrent change is never overwritten: the update starts over instead). */
#include "cli/cli.h"
#include "config/config.h"

#include <stdlib.h>
#include <string.h>

#define LISTENERS "/v1/listeners/"

static const struct slb_cli_optspec listener_spec[] = {
    {"--name", SLB_CLI_ARG_REQUIRED},
    {"--protocol", SLB_CLI_ARG_REQUIRED},
    {"--bind", SLB_CLI_ARG_REQUIRED},
    {"--group", SLB_CLI_ARG_REQUIRED},
    {"--cert", SLB_CLI_ARG_REQUIRED},
    {"--client-ca", SLB_CLI_ARG_REQUIRED},
    {"--client-auth", SLB_CLI_ARG_REQUIRED},
    {"--policy", SLB_CLI_ARG_REQUIRED},
    {"--proxy-protocol", SLB_CLI_ARG_REQUIRED},
    {"--from-json", SLB_CLI_ARG_REQUIRED},
    {NULL, 0},
};

static const char *const protocols[] = {"tcp", "http", "https", NULL};
static const char *const client_auths[] = {"required", "optional", NULL};
static const char *const proxy_protocols[] = {"v1", "v2", "none", NULL};

/* The listener's "tls" object, created when a TLS flag is the first to need it. */
static json_t *tls_object(json_t *obj)
{
    json_t *tls = json_object_get(obj, "tls");
    if (!json_is_object(tls)) {
        tls = json_object();
        json_object_set_new(obj, "tls", tls);
    }
    return tls;
}

/* Every --cert, in order; a value may also list several ids separated by commas. */
static int collect_certs(const struct slb_cli_args *a, json_t *tls)
{
    json_t *ids = json_array();
    for (int i = 0; i < a->nopt; i++) {
        if (strcmp(a->opt_name[i], "--cert") != 0)
            continue;
        const char *s = a->opt_val[i];
        while (*s) {
            size_t n = strcspn(s, ",");
            if (n > 0)
                json_array_append_new(ids, json_stringn(s, n));
            s += n + (s[n] == ',');
        }
    }
    if (json_array_size(ids) == 0) {
        json_decref(ids);
        return slb_cli_usage_fail("--cert needs a certificate id");
    }
    json_object_set_new(tls, "certificates", ids);
    return 0;
}

/* Applies the flags to obj (a listener being built or updated); 0 or a usage failure. */
static int apply_flags(const struct slb_cli_args *a, json_t *obj)
{
    static const char *const plain[][2] = {
        {"--name", "name"},
        {"--protocol", "protocol"},
        {"--bind", "bind"},
        {"--group", "backend_group"},
    };
    const char *v = slb_cli_opt(a, "--protocol");
    if (v && !slb_cli_one_of(v, protocols))
        return slb_cli_usage_fail("--protocol must be tcp, http or https, not '%s'", v);
    v = slb_cli_opt(a, "--client-auth");
    if (v && !slb_cli_one_of(v, client_auths))
        return slb_cli_usage_fail("--client-auth must be required or optional, not '%s'", v);
    v = slb_cli_opt(a, "--proxy-protocol");
    if (v && !slb_cli_one_of(v, proxy_protocols))
        return slb_cli_usage_fail("--proxy-protocol must be v1, v2 or none, not '%s'", v);
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        v = slb_cli_opt(a, plain[i][0]);
        if (v)
            json_object_set_new(obj, plain[i][1], json_string(v));
    }
    if (slb_cli_has(a, "--cert") && collect_certs(a, tls_object(obj)) != 0)
        return SLB_CLI_EXIT_USAGE;
    v = slb_cli_opt(a, "--client-ca");
    if (v) {
        /* "none" turns two-way authentication off again on update. */
        if (strcmp(v, "none") == 0 || v[0] == '\0') {
            json_t *tls = json_object_get(obj, "tls");
            json_object_del(tls, "client_ca");
            json_object_del(tls, "client_auth");
        } else {
            json_object_set_new(tls_object(obj), "client_ca", json_string(v));
        }
    }
    v = slb_cli_opt(a, "--client-auth");
    if (v)
        json_object_set_new(tls_object(obj), "client_auth", json_string(v));
    v = slb_cli_opt(a, "--policy");
    if (v)
        json_object_set_new(tls_object(obj), "policy", json_string(v));
    v = slb_cli_opt(a, "--proxy-protocol");
    if (v)
        json_object_set_new(obj, "proxy_protocol",
                            strcmp(v, "none") == 0 ? json_null() : json_string(v));
    return 0;
}

int slb_cli_listener_create(struct slb_cli *c, int argc, char **argv)
{
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, listener_spec, 0, 0);
    if (rc != 0)
        return rc;
    const char *from = slb_cli_opt(&a, "--from-json");
    json_t *obj = from ? slb_cli_read_json_object(from) : json_object();
    if (!obj)
        return SLB_CLI_EXIT_API;
    rc = apply_flags(&a, obj);
    if (rc != 0)
        goto done;
    /* Without a JSON base the flags are the whole listener: catch omissions here, with the
     * usage text, rather than as an API error about a missing field. */
    static const char *const need[][2] = {
        {"name", "--name"},
        {"protocol", "--protocol"},
        {"bind", "--bind"},
        {"backend_group", "--group"},
    };
    for (size_t i = 0; i < 4; i++) {
        if (!json_object_get(obj, need[i][0]) && (i < 3 || !from)) {
            rc = slb_cli_usage_fail("missing %s", need[i][1]);
            goto done;
        }
    }
    rc = slb_cli_send_resource(c, "POST", "/v1/listeners", obj);
done:
    json_decref(obj);
    return rc;
}

struct listener_edit {
    const struct slb_cli_args *a;
    const json_t *patch; /* --from-json, or NULL */
};

/* The fields the user gives: the flags and the file's top-level fields. */
static bool user_sets(const struct listener_edit *e, const char *field)
{
    static const char *const flag_of[][2] = {
        {"name", "--name"},
        {"protocol", "--protocol"},
        {"bind", "--bind"},
        {"backend_group", "--group"},
        {"proxy_protocol", "--proxy-protocol"},
    };
    if (e->patch && json_object_get(e->patch, field))
        return true;
    for (size_t i = 0; i < sizeof(flag_of) / sizeof(flag_of[0]); i++)
        if (strcmp(field, flag_of[i][0]) == 0)
            return slb_cli_has(e->a, flag_of[i][1]);
    return strcmp(field, "tls") == 0 &&
           (slb_cli_has(e->a, "--cert") || slb_cli_has(e->a, "--client-ca") ||
            slb_cli_has(e->a, "--client-auth") || slb_cli_has(e->a, "--policy"));
}

static int listener_edit(json_t *obj, void *arg)
{
    const struct listener_edit *e = arg;
    if (e->patch) {
        /* Top-level fields of the file replace the current ones (a "tls" object as a whole). */
        json_t *copy = json_deep_copy(e->patch);
        json_object_update(obj, copy);
        json_decref(copy);
    }
    int rc = apply_flags(e->a, obj);
    if (rc != 0)
        return rc;
    /* A new protocol: the current object carries every field of the old one, defaults
     * included ("x_forwarded_for" of an http listener). Those the user did not give and the
     * new protocol does not take go; the API reports the ones the user gave. */
    const char *proto = json_string_value(json_object_get(obj, "protocol"));
    const char *key;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(obj, tmp, key, v)
    {
        if (!slb_config_listener_field_applies(key, proto) && !user_sets(e, key))
            json_object_del(obj, key);
    }
    return 0;
}

int slb_cli_listener_update(struct slb_cli *c, int argc, char **argv)
{
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, listener_spec, 1, 1);
    if (rc != 0)
        return rc;
    if (a.nopt == 0)
        return slb_cli_usage_fail("nothing to update: give the fields to change");
    const char *from = slb_cli_opt(&a, "--from-json");
    json_t *patch = NULL, *out = NULL;
    if (from && !(patch = slb_cli_read_json_object(from)))
        return SLB_CLI_EXIT_API;
    struct listener_edit e = {&a, patch};
    rc = slb_cli_update(c, LISTENERS, a.pos[0], listener_edit, &e, &out);
    if (rc == 0)
        slb_cli_print_resource(c, out);
    json_decref(out);
    json_decref(patch);
    return rc;
}

static void listener_row(const json_t *item, char (*cells)[SLB_CLI_CELL])
{
    static const char *const fields[] = {"name", "protocol", "bind", "backend_group", "status"};
    for (size_t i = 0; i < 5; i++) {
        const json_t *v = json_object_get(item, fields[i]);
        if (v)
            slb_cli_value_text(v, cells[i], SLB_CLI_CELL);
    }
    /* A tcp listener that routes by SNI has no single group; show how many routes instead. */
    const json_t *routes = json_object_get(item, "sni_routes");
    if (!json_is_string(json_object_get(item, "backend_group")) && json_object_size(routes) > 0)
        snprintf(cells[3], SLB_CLI_CELL, "(%zu SNI routes)", json_object_size(routes));
}

int slb_cli_listener_list(struct slb_cli *c, int argc, char **argv)
{
    static const char *const headers[] = {"NAME", "PROTOCOL", "BIND", "GROUP", "STATUS"};
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 0, 0);
    if (rc != 0)
        return rc;
    return slb_cli_list(c, "/v1/listeners", "listeners", 5, headers, listener_row);
}

int slb_cli_listener_show(struct slb_cli *c, int argc, char **argv)
{
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 1, 1);
    return rc != 0 ? rc : slb_cli_show_resource(c, LISTENERS, a.pos[0]);
}

int slb_cli_listener_delete(struct slb_cli *c, int argc, char **argv)
{
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 1, 1);
    return rc != 0 ? rc : slb_cli_delete_resource(c, LISTENERS, "listener", a.pos[0]);
}

/* listener start|stop NAME: the listener's status, its configuration kept. */
static int listener_status(struct slb_cli *c, int argc, char **argv, const char *action)
{
    struct slb_cli_args a;
    char path[256];
    json_t *out = NULL;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 1, 1);
    if (rc != 0)
        return rc;
    if (slb_cli_path(path, sizeof(path), "/v1/listeners/", a.pos[0], action) < 0)
        return slb_cli_usage_fail("listener name too long");
    if ((rc = slb_cli_call(c, "POST", path, NULL, &out)) != 0)
        return rc;
    if (c->json && out)
        slb_cli_print_json(c->out, out);
    else if (!c->json)
        fprintf(c->out, "%s listener %s\n", strcmp(action, "/stop") == 0 ? "stopped" : "started",
                a.pos[0]);
    json_decref(out);
    return 0;
}

int slb_cli_listener_start(struct slb_cli *c, int argc, char **argv)
{
    return listener_status(c, argc, argv, "/start");
}

int slb_cli_listener_stop(struct slb_cli *c, int argc, char **argv)
{
    return listener_status(c, argc, argv, "/stop");
}
