/* SPDX-License-Identifier: Apache-2.0 */
/* `slbctl key ...` (scoped API keys: create, list, revoke) and `slbctl audit` (the end of the
 * daemon's audit log). */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

#define KEYS "/v1/keys/"

static const char *const scopes[] = {"read", "certificates", "operator", "admin", NULL};

int slb_cli_key_create(struct slb_cli *c, int argc, char **argv)
{
    static const struct slb_cli_optspec spec[] = {{"--scope", SLB_CLI_ARG_REQUIRED}, {NULL, 0}};
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, spec, 1, 1);
    if (rc != 0)
        return rc;
    const char *scope = slb_cli_opt(&a, "--scope");
    if (!scope)
        return slb_cli_usage_fail("missing --scope");
    if (!slb_cli_one_of(scope, scopes))
        return slb_cli_usage_fail("--scope must be read, certificates, operator or admin");
    json_t *body = json_pack("{s:s, s:s}", "name", a.pos[0], "scope", scope);
    json_t *obj = NULL;
    rc = slb_cli_call(c, "POST", "/v1/keys", body, &obj);
    json_decref(body);
    if (rc == 0 && obj) {
        if (c->json) {
            slb_cli_print_json(c->out, obj);
        } else {
            /* The secret alone on stdout (for `> file`), the advice on stderr. */
            fprintf(c->out, "%s\n", json_string_value(json_object_get(obj, "secret")));
            fprintf(stderr,
                    "slbctl: key %s (%s) created; its secret is shown only now: keep it, "
                    "e.g. in a file for --token-file\n",
                    a.pos[0], scope);
        }
    }
    json_decref(obj);
    return rc;
}

static void key_row(const json_t *item, char (*cells)[SLB_CLI_CELL])
{
    slb_cli_value_text(json_object_get(item, "name"), cells[0], SLB_CLI_CELL);
    slb_cli_value_text(json_object_get(item, "scope"), cells[1], SLB_CLI_CELL);
    slb_cli_value_text(json_object_get(item, "created"), cells[2], SLB_CLI_CELL);
}

int slb_cli_key_list(struct slb_cli *c, int argc, char **argv)
{
    static const char *const headers[] = {"NAME", "SCOPE", "CREATED"};
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 0, 0);
    return rc != 0 ? rc : slb_cli_list(c, "/v1/keys", "keys", 3, headers, key_row);
}

int slb_cli_key_revoke(struct slb_cli *c, int argc, char **argv)
{
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 1, 1);
    return rc != 0 ? rc : slb_cli_delete_resource(c, KEYS, "key", a.pos[0]);
}

static void audit_row(const json_t *item, char (*cells)[SLB_CLI_CELL])
{
    static const char *const fields[] = {"time", "key", "method", "resource", "status", "result"};
    for (size_t i = 0; i < 6; i++)
        slb_cli_value_text(json_object_get(item, fields[i]), cells[i], SLB_CLI_CELL);
}

int slb_cli_audit(struct slb_cli *c, int argc, char **argv)
{
    static const struct slb_cli_optspec spec[] = {{"--limit", SLB_CLI_ARG_REQUIRED}, {NULL, 0}};
    static const char *const headers[] = {"TIME", "KEY", "METHOD", "RESOURCE", "STATUS", "RESULT"};
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, spec, 0, 0);
    if (rc != 0)
        return rc;
    long limit = 20;
    const char *l = slb_cli_opt(&a, "--limit");
    if (l && slb_cli_parse_int(l, 1, 10000, &limit) < 0)
        return slb_cli_usage_fail("--limit must be 1-10000");
    char path[64];
    snprintf(path, sizeof(path), "/v1/audit?limit=%ld", limit);
    return slb_cli_list(c, path, "entries", 6, headers, audit_row);
}
