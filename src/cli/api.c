/* SPDX-License-Identifier: Apache-2.0 */
/* The admin API as slbctl's commands see it: authenticated JSON calls, the mapping of failures
 * to messages and exit statuses, and the shared show/delete/print helpers. */
#include "cli/cli.h"

#include "core/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void vfail(const char *fmt, va_list ap)
{
    fputs("slbctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int slb_cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(fmt, ap);
    va_end(ap);
    return SLB_CLI_EXIT_API;
}

int slb_cli_usage_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(fmt, ap);
    va_end(ap);
    return SLB_CLI_EXIT_USAGE;
}

int slb_cli_path(char *buf, size_t size, const char *prefix, const char *segment,
                 const char *suffix)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    int w = snprintf(buf, size, "%s", prefix);
    if (w < 0 || (size_t)w >= size)
        return -1;
    n = (size_t)w;
    for (const unsigned char *p = (const unsigned char *)segment; *p; p++) {
        int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~';
        if (n + 4 >= size)
            return -1;
        if (plain) {
            buf[n++] = (char)*p;
        } else {
            buf[n++] = '%';
            buf[n++] = hex[*p >> 4];
            buf[n++] = hex[*p & 15];
        }
    }
    w = snprintf(buf + n, size - n, "%s", suffix ? suffix : "");
    if (w < 0 || (size_t)w >= size - n)
        return -1;
    return 0;
}

void slb_cli_print_json(FILE *out, const json_t *v)
{
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (s) {
        fputs(s, out);
        fputc('\n', out);
        free(s);
    }
}

/* The first line of a non-JSON error body, bounded, so a proxy's HTML page stays readable. */
static void first_line(const char *body, char *buf, size_t size)
{
    size_t n = strcspn(body, "\r\n");
    if (n >= size)
        n = size - 1;
    memcpy(buf, body, n);
    buf[n] = '\0';
}

int slb_cli_report_error(const struct slb_cli *c, const struct slb_cli_resp *resp)
{
    json_t *doc = resp->body ? json_loadb(resp->body, resp->body_len, 0, NULL) : NULL;
    json_t *e = json_object_get(doc, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *where = json_string_value(json_object_get(e, "where"));
    if (!msg && json_is_string(e))
        msg = json_string_value(e);
    /* Empty fields say nothing; fall back to the HTTP status like a non-JSON answer. */
    if (code && !code[0])
        code = NULL;
    if (msg && !msg[0])
        msg = NULL;
    char fallback_code[32], fallback_msg[320];
    if (!code) {
        snprintf(fallback_code, sizeof(fallback_code), "http_%d", resp->status);
        code = fallback_code;
    }
    if (!msg) {
        char line[200] = "";
        if (resp->body)
            first_line(resp->body, line, sizeof(line));
        snprintf(fallback_msg, sizeof(fallback_msg), "HTTP %d %s%s%s", resp->status, resp->reason,
                 line[0] ? ": " : "", line);
        msg = fallback_msg;
    }
    fprintf(c->err, "slbctl: %s (%s)\n", msg, code);
    if (where && where[0])
        fprintf(c->err, "slbctl:   at %s\n", where);
    if (resp->status == 401)
        fprintf(c->err, "slbctl:   check the token or API key (SLBD_TOKEN, --token-file or "
                        "--state-dir DIR/admin.token)\n");
    if (resp->status == 429)
        fprintf(c->err, "slbctl:   too many wrong tokens came from this address; wait and retry "
                        "with the right one\n");
    json_decref(doc);
    return SLB_CLI_EXIT_API;
}

/* One request with the token; connection-level failures are reported here, naming the URL. */
static int call(struct slb_cli *c, const char *method, const char *path, int auth, const char *body,
                size_t body_len, struct slb_cli_resp *resp)
{
    if (auth && !c->have_token) {
        fprintf(c->err, "slbctl: no admin token: %s\n", c->token_problem);
        return SLB_CLI_EXIT_API;
    }
    char err[256] = "";
    int rc = slb_cli_http_request(&c->url, method, path, auth ? c->token : NULL, c->if_match, body,
                                  body_len, resp, err, sizeof(err));
    if (rc == 0)
        return 0;
    if (rc == SLB_EPROTO)
        fprintf(c->err, "slbctl: bad response from %s: %s\n", c->admin, err);
    else
        fprintf(c->err, "slbctl: cannot reach the admin API at %s: %s\n", c->admin, err);
    return SLB_CLI_EXIT_CONN;
}

int slb_cli_call_raw(struct slb_cli *c, const char *method, const char *path, int auth,
                     struct slb_cli_resp *resp)
{
    return call(c, method, path, auth, NULL, 0, resp);
}

int slb_cli_call(struct slb_cli *c, const char *method, const char *path, json_t *body,
                 json_t **out)
{
    if (out)
        *out = NULL;
    c->status = 0;
    char *text = NULL;
    if (body) {
        text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!text)
            return slb_cli_fail("cannot encode the request body");
    }
    struct slb_cli_resp resp;
    int rc = call(c, method, path, 1, text, text ? strlen(text) : 0, &resp);
    free(text);
    if (rc != 0)
        return rc;
    c->status = resp.status;
    if (resp.status == 412 && c->quiet_412) {
        rc = SLB_CLI_EXIT_API;
        goto done;
    }
    if (resp.status < 200 || resp.status > 299) {
        rc = slb_cli_report_error(c, &resp);
        goto done;
    }
    snprintf(c->etag, sizeof(c->etag), "%s", resp.etag);
    if (resp.body_len == 0 || !out)
        goto done;
    json_error_t jerr;
    *out = json_loadb(resp.body, resp.body_len, JSON_DECODE_ANY, &jerr);
    if (!*out) {
        fprintf(c->err, "slbctl: bad response from %s: invalid JSON (%s)\n", c->admin, jerr.text);
        rc = SLB_CLI_EXIT_CONN;
    }
done:
    slb_cli_resp_deinit(&resp);
    return rc;
}

int slb_cli_read_file(const char *path, char **data, size_t *len)
{
    int is_stdin = strcmp(path, "-") == 0;
    const char *name = is_stdin ? "standard input" : path;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        slb_cli_fail("cannot read %s: %s", name, strerror(errno));
        return -1;
    }
    size_t cap = 8192, n = 0;
    char *buf = malloc(cap);
    int err = buf ? 0 : ENOMEM;
    while (!err) {
        if (cap - n < 2) {
            /* Certificates and configurations are small; a huge input is a mistake. */
            char *nb = cap < (16u << 20) ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                err = cap < (16u << 20) ? ENOMEM : EFBIG;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                err = EIO;
            break;
        }
    }
    if (!is_stdin)
        fclose(f);
    if (err) {
        free(buf);
        slb_cli_fail("cannot read %s: %s", name, strerror(err));
        return -1;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

json_t *slb_cli_read_json_object(const char *path)
{
    char *text;
    size_t len;
    if (slb_cli_read_file(path, &text, &len) < 0)
        return NULL;
    json_error_t jerr;
    json_t *v = json_loadb(text, len, 0, &jerr);
    free(text);
    const char *name = strcmp(path, "-") == 0 ? "standard input" : path;
    if (!v) {
        slb_cli_fail("%s: line %d column %d: %s", name, jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        slb_cli_fail("%s: expected a JSON object", name);
        return NULL;
    }
    return v;
}

void slb_cli_print_resource(struct slb_cli *c, const json_t *obj)
{
    if (!obj)
        return;
    if (c->json)
        slb_cli_print_json(c->out, obj);
    else
        slb_cli_render_object(c->out, obj, slb_cli_term_width());
}

int slb_cli_send_resource(struct slb_cli *c, const char *method, const char *path, json_t *body)
{
    json_t *obj;
    int rc = slb_cli_call(c, method, path, body, &obj);
    if (rc == 0)
        slb_cli_print_resource(c, obj);
    json_decref(obj);
    return rc;
}

int slb_cli_show_resource(struct slb_cli *c, const char *collection, const char *id)
{
    char path[512];
    if (slb_cli_path(path, sizeof(path), collection, id, NULL) < 0)
        return slb_cli_usage_fail("name too long");
    return slb_cli_send_resource(c, "GET", path, NULL);
}

int slb_cli_delete_resource(struct slb_cli *c, const char *collection, const char *kind,
                            const char *id)
{
    char path[512];
    if (slb_cli_path(path, sizeof(path), collection, id, NULL) < 0)
        return slb_cli_usage_fail("name too long");
    json_t *obj;
    int rc = slb_cli_call(c, "DELETE", path, NULL, &obj);
    if (rc == 0) {
        if (c->json && obj)
            slb_cli_print_json(c->out, obj);
        else if (!c->json)
            fprintf(c->out, "deleted %s %s\n", kind, id);
    }
    json_decref(obj);
    return rc;
}

/* GET every page of the list at path into one array (owned by the caller): the API answers at
 * most c->page_size items per request with a "next" cursor while more remain. */
static int list_all(struct slb_cli *c, const char *path, const char *key, json_t **out)
{
    json_t *all = json_array();
    char next[SLB_CLI_CELL] = "";
    int rc = 0;
    *out = NULL;
    /* A path with its own query (the audit log's tail: ?limit=N) is not a pageable list, nor
     * is a cluster's node list (a few nodes, answered whole). */
    int once = strchr(path, '?') != NULL || strcmp(path, "/v1/cluster") == 0;
    for (;;) {
        char url[1024], prefix[600];
        snprintf(prefix, sizeof(prefix), "%s?limit=%d%s", path,
                 c->page_size > 0 ? c->page_size : SLB_CLI_PAGE_SIZE, next[0] ? "&after=" : "");
        if (once)
            snprintf(url, sizeof(url), "%s", path);
        else if (slb_cli_path(url, sizeof(url), prefix, next, NULL) < 0) {
            rc = slb_cli_fail("cursor too long for a request: %s", next);
            break;
        }
        json_t *doc = NULL;
        if ((rc = slb_cli_call(c, "GET", url, NULL, &doc)) != 0)
            break;
        json_t *items = json_object_get(doc, key);
        const char *nx = json_string_value(json_object_get(doc, "next"));
        if (once)
            nx = NULL;
        if (!json_is_array(items) || (nx && (!nx[0] || strcmp(nx, next) == 0))) {
            /* A cursor that does not move would loop forever. */
            json_decref(doc);
            fprintf(c->err, "slbctl: bad response from %s: no \"%s\" array or a stuck \"next\"\n",
                    c->admin, key);
            rc = SLB_CLI_EXIT_CONN;
            break;
        }
        json_array_extend(all, items);
        snprintf(next, sizeof(next), "%s", nx ? nx : "");
        json_decref(doc);
        if (!nx)
            break;
    }
    if (rc != 0)
        json_decref(all);
    else
        *out = all;
    return rc;
}

int slb_cli_list(struct slb_cli *c, const char *path, const char *key, size_t ncols,
                 const char *const *headers, slb_cli_row_fn row)
{
    json_t *items;
    int rc = list_all(c, path, key, &items);
    if (rc != 0)
        return rc;
    if (c->json) {
        json_t *doc = json_pack("{s:o}", key, items);
        slb_cli_print_json(c->out, doc ? doc : json_object());
        json_decref(doc);
        return 0;
    }
    json_t *doc = items;
    struct slb_cli_table *t = slb_cli_table_new(ncols, headers);
    char(*cells)[SLB_CLI_CELL] = calloc(ncols, SLB_CLI_CELL);
    const char **ptrs = calloc(ncols, sizeof(*ptrs));
    if (!t || !cells || !ptrs) {
        rc = slb_cli_fail("out of memory");
        goto done;
    }
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item)
    {
        for (size_t k = 0; k < ncols; k++) {
            strcpy(cells[k], "-");
            ptrs[k] = cells[k];
        }
        row(item, cells);
        slb_cli_table_add(t, ptrs);
    }
    slb_cli_table_print(t, c->out);
done:
    slb_cli_table_free(t);
    free(cells);
    free(ptrs);
    json_decref(doc);
    return rc;
}

int slb_cli_update(struct slb_cli *c, const char *prefix, const char *id,
                   int (*edit)(json_t *obj, void *arg), void *arg, json_t **out)
{
    char path[512];
    if (out)
        *out = NULL;
    if (slb_cli_path(path, sizeof(path), prefix, id, NULL) < 0)
        return slb_cli_usage_fail("name too long");
    int rc = SLB_CLI_EXIT_API;
    for (int attempt = 1; attempt <= SLB_CLI_UPDATE_TRIES; attempt++) {
        json_t *obj = NULL;
        rc = slb_cli_get_object(c, prefix, id, &obj);
        if (rc == 0)
            rc = edit(obj, arg);
        if (rc == 0) {
            snprintf(c->if_match, sizeof(c->if_match), "%s", c->etag);
            c->quiet_412 = attempt < SLB_CLI_UPDATE_TRIES;
            rc = slb_cli_call(c, "PUT", path, obj, out);
            c->if_match[0] = '\0';
            c->quiet_412 = 0;
        }
        json_decref(obj);
        if (rc == 0 || c->status != 412)
            break;
    }
    return rc;
}

int slb_cli_get_object(struct slb_cli *c, const char *collection, const char *id, json_t **out)
{
    char path[512];
    *out = NULL;
    if (slb_cli_path(path, sizeof(path), collection, id, NULL) < 0)
        return slb_cli_usage_fail("name too long");
    int rc = slb_cli_call(c, "GET", path, NULL, out);
    if (rc == 0 && !json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        fprintf(c->err, "slbctl: bad response from %s: %s is not an object\n", c->admin, path);
        rc = SLB_CLI_EXIT_CONN;
    }
    return rc;
}
