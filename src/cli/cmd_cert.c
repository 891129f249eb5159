/* SPDX-License-Identifier: Apache-2.0 */
/* `slbctl cert ...`: upload, list, show, replace, rename and delete certificates and attach CRLs,
 * reading PEM files locally and sending them as JSON strings. */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CERTS "/v1/certificates/"

static const char *const cert_types[] = {"server", "ca", NULL};

/* A PEM file as a JSON string. Binary input (DER) cannot travel as JSON text, so it is refused
 * here with a hint instead of as a confusing encoding error. */
static json_t *pem_string(const char *path)
{
    char *data;
    size_t len;
    if (slb_cli_read_file(path, &data, &len) < 0)
        return NULL;
    json_t *s = memchr(data, '\0', len) ? NULL : json_stringn(data, len);
    free(data);
    if (!s)
        slb_cli_fail("%s is not a PEM text file (for DER, convert it with openssl first)", path);
    return s;
}

/* Moves any "-----BEGIN ... PRIVATE KEY-----" block out of pem into a new string, so a combined
 * certificate+key file works without --key. Returns NULL when there is none. */
static json_t *split_private_key(json_t *pem)
{
    const char *text = json_string_value(pem);
    const char *begin = strstr(text, "-----BEGIN ");
    while (begin) {
        const char *eol = strchr(begin, '\n');
        const char *label_end = strstr(begin + 11, "-----");
        if (label_end && (!eol || label_end < eol) && label_end - begin >= 11 + 11 &&
            strncmp(label_end - 11, "PRIVATE KEY", 11) == 0)
            break;
        begin = strstr(begin + 11, "-----BEGIN ");
    }
    if (!begin)
        return NULL;
    const char *end = strstr(begin, "-----END ");
    end = end ? strstr(end + 9, "-----") : NULL;
    if (!end)
        return NULL;
    end += 5;
    if (*end == '\r')
        end++;
    if (*end == '\n')
        end++;
    json_t *key = json_stringn(begin, (size_t)(end - begin));
    size_t pre = (size_t)(begin - text), post = strlen(end);
    char *rest = malloc(pre + post + 1);
    if (!key || !rest) {
        json_decref(key);
        free(rest);
        return NULL;
    }
    memcpy(rest, text, pre);
    memcpy(rest + pre, end, post + 1);
    json_string_set(pem, rest);
    free(rest);
    return key;
}

/* Builds the upload/replace body into *out; key_path may be NULL for CA certificates.
 * Returns 0 or the exit status. */
static int cert_body(const char *name, const char *type, const char *cert_path,
                     const char *key_path, json_t **out)
{
    json_t *pem = pem_string(cert_path);
    json_t *key = NULL;
    if (!pem)
        return SLB_CLI_EXIT_API;
    if (key_path) {
        key = pem_string(key_path);
        if (!key) {
            json_decref(pem);
            return SLB_CLI_EXIT_API;
        }
    } else if (strcmp(type, "server") == 0) {
        key = split_private_key(pem);
        if (!key) {
            json_decref(pem);
            return slb_cli_usage_fail("a server certificate needs its private key: --key FILE");
        }
    }
    json_t *body = json_object();
    json_object_set_new(body, "name", json_string(name));
    json_object_set_new(body, "type", json_string(type));
    json_object_set_new(body, "certificate", pem);
    if (key)
        json_object_set_new(body, "private_key", key);
    *out = body;
    return 0;
}

static int send_cert(struct slb_cli *c, const char *method, const char *path, const char *name,
                     const char *type, const char *cert_path, const char *key_path)
{
    json_t *body = NULL;
    int rc = cert_body(name, type, cert_path, key_path, &body);
    if (rc != 0)
        return rc;
    rc = slb_cli_send_resource(c, method, path, body);
    json_decref(body);
    return rc;
}

int slb_cli_cert_upload(struct slb_cli *c, int argc, char **argv)
{
    static const struct slb_cli_optspec spec[] = {
        {"--name", SLB_CLI_ARG_REQUIRED},
        {"--type", SLB_CLI_ARG_REQUIRED},
        {"--cert", SLB_CLI_ARG_REQUIRED},
        {"--key", SLB_CLI_ARG_REQUIRED},
        {NULL, 0},
    };
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, spec, 0, 0);
    if (rc != 0)
        return rc;
    const char *name = slb_cli_opt(&a, "--name");
    const char *type = slb_cli_opt(&a, "--type");
    const char *cert = slb_cli_opt(&a, "--cert");
    const char *key = slb_cli_opt(&a, "--key");
    if (!type)
        type = "server";
    if (!name || !cert)
        return slb_cli_usage_fail("missing %s", !name ? "--name" : "--cert");
    if (!slb_cli_one_of(type, cert_types))
        return slb_cli_usage_fail("--type must be server or ca, not '%s'", type);
    if (key && strcmp(type, "ca") == 0)
        return slb_cli_usage_fail("--key is only for server certificates");
    return send_cert(c, "POST", "/v1/certificates", name, type, cert, key);
}

int slb_cli_cert_replace(struct slb_cli *c, int argc, char **argv)
{
    static const struct slb_cli_optspec spec[] = {
        {"--name", SLB_CLI_ARG_REQUIRED},
        {"--cert", SLB_CLI_ARG_REQUIRED},
        {"--key", SLB_CLI_ARG_REQUIRED},
        {NULL, 0},
    };
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, spec, 1, 1);
    if (rc != 0)
        return rc;
    const char *id = a.pos[0];
    const char *cert = slb_cli_opt(&a, "--cert");
    if (!cert)
        return slb_cli_usage_fail("missing --cert");
    /* PUT takes the whole upload body: keep the current name and type unless told. */
    json_t *cur;
    rc = slb_cli_get_object(c, CERTS, id, &cur);
    if (rc != 0)
        return rc;
    const char *name = slb_cli_opt(&a, "--name");
    if (!name)
        name = json_string_value(json_object_get(cur, "name"));
    const char *type = json_string_value(json_object_get(cur, "type"));
    if (!name)
        name = id;
    if (!type)
        type = "server";
    const char *key = slb_cli_opt(&a, "--key");
    char path[512];
    if (strcmp(type, "ca") == 0 && key)
        rc = slb_cli_usage_fail("--key is only for server certificates");
    else if (slb_cli_path(path, sizeof(path), CERTS, id, NULL) < 0)
        rc = slb_cli_usage_fail("certificate id too long");
    else
        rc = send_cert(c, "PUT", path, name, type, cert, key);
    json_decref(cur);
    return rc;
}

static void cert_row(const json_t *item, char (*cells)[SLB_CLI_CELL])
{
    static const char *const fields[] = {"id",        "name", "type",   "key_type",
                                         "not_after", NULL,   "used_by"};
    for (size_t i = 0; i < 7; i++) {
        const json_t *v = fields[i] ? json_object_get(item, fields[i]) : NULL;
        if (v)
            slb_cli_value_text(v, cells[i], SLB_CLI_CELL); /* times in local time */
    }
    /* How far away the end of validity is. */
    long long ms;
    if (slb_cli_parse_utc(json_string_value(json_object_get(item, "not_after")), &ms) == 0)
        slb_cli_relative_time((double)(ms - (long long)time(NULL) * 1000) / 1000, cells[5],
                              SLB_CLI_CELL);
}

int slb_cli_cert_list(struct slb_cli *c, int argc, char **argv)
{
    static const char *const headers[] = {"ID",        "NAME",    "TYPE",   "KEY",
                                          "NOT_AFTER", "EXPIRES", "USED_BY"};
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 0, 0);
    if (rc != 0)
        return rc;
    return slb_cli_list(c, "/v1/certificates", "certificates", 7, headers, cert_row);
}

static int one_id(int argc, char **argv, const char **id)
{
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 1, 1);
    if (rc == 0)
        *id = a.pos[0];
    return rc;
}

int slb_cli_cert_show(struct slb_cli *c, int argc, char **argv)
{
    const char *id;
    int rc = one_id(argc, argv, &id);
    return rc != 0 ? rc : slb_cli_show_resource(c, CERTS, id);
}

int slb_cli_cert_delete(struct slb_cli *c, int argc, char **argv)
{
    const char *id;
    int rc = one_id(argc, argv, &id);
    return rc != 0 ? rc : slb_cli_delete_resource(c, CERTS, "certificate", id);
}

int slb_cli_cert_crl(struct slb_cli *c, int argc, char **argv)
{
    static const struct slb_cli_optspec spec[] = {{"--crl", SLB_CLI_ARG_REQUIRED}, {NULL, 0}};
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, spec, 1, 1);
    if (rc != 0)
        return rc;
    const char *file = slb_cli_opt(&a, "--crl");
    if (!file)
        return slb_cli_usage_fail("missing --crl");
    char path[512];
    if (slb_cli_path(path, sizeof(path), CERTS, a.pos[0], "/crl") < 0)
        return slb_cli_usage_fail("certificate id too long");
    json_t *pem = pem_string(file);
    if (!pem)
        return SLB_CLI_EXIT_API;
    json_t *body = json_object();
    json_object_set_new(body, "crl", pem);
    json_t *obj;
    rc = slb_cli_call(c, "PUT", path, body, &obj);
    json_decref(body);
    if (rc == 0 && obj)
        slb_cli_print_resource(c, obj);
    else if (rc == 0 && !c->json)
        fprintf(c->out, "CRL attached to certificate %s\n", a.pos[0]);
    json_decref(obj);
    return rc;
}

int slb_cli_cert_rename(struct slb_cli *c, int argc, char **argv)
{
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 2, 2);
    if (rc != 0)
        return rc;
    char path[512];
    if (slb_cli_path(path, sizeof(path), CERTS, a.pos[0], NULL) < 0)
        return slb_cli_usage_fail("certificate id too long");
    json_t *body = json_pack("{s:s}", "name", a.pos[1]);
    json_t *obj = NULL;
    rc = slb_cli_call(c, "PATCH", path, body, &obj);
    json_decref(body);
    if (rc == 0 && c->json)
        slb_cli_print_resource(c, obj);
    else if (rc == 0)
        fprintf(c->out, "certificate %s renamed to %s\n", a.pos[0], a.pos[1]);
    json_decref(obj);
    return rc;
}
