/* SPDX-License-Identifier: Apache-2.0 */
/* slbctl's cluster commands (docs/cluster.md): the nodes of a cluster as the registry in etcd
 * lists them, and an export of the shared state to a directory that a single node can start
 * from (--state-dir), private keys included, decrypted by the node that answers. */
#include "cli/cli.h"

#include "metrics/stats_sum.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void node_row(const json_t *item, char (*cells)[SLB_CLI_CELL])
{
    static const char *const fields[] = {"name",      "admin",   "revision",
                                         "last_seen", "version", "state"};
    for (size_t i = 0; i < 6; i++)
        slb_cli_value_text(json_object_get(item, fields[i]), cells[i], SLB_CLI_CELL);
    /* last_seen is Unix seconds: say how long ago, as people read it. */
    json_t *seen = json_object_get(item, "last_seen");
    if (json_is_integer(seen)) {
        char rel[64];
        double ago = (double)json_integer_value(seen) - (double)time(NULL);
        slb_cli_relative_time(ago < 0 ? ago : 0, rel, sizeof(rel));
        snprintf(cells[3], SLB_CLI_CELL, "%s", ago > -1 ? "now" : rel);
    }
}

int slb_cli_cluster_status(struct slb_cli *c, int argc, char **argv)
{
    static const char *const headers[] = {"NAME",      "ADMIN",   "REVISION",
                                          "LAST_SEEN", "VERSION", "STATE"};
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 0, 0);
    return rc != 0 ? rc : slb_cli_list(c, "/v1/cluster", "nodes", 6, headers, node_row);
}

/* A document key the export may write: "config", "tickets" or "certs/ID" with ID made of
 * A-Z a-z 0-9 . _ - (not starting with a dot), so no answer can write outside DIR. */
static int key_ok(const char *key)
{
    if (strcmp(key, "config") == 0 || strcmp(key, "tickets") == 0)
        return 1;
    if (strncmp(key, "certs/", 6) != 0)
        return 0;
    const char *id = key + 6;
    if (!*id || *id == '.' || strlen(id) > 80)
        return 0;
    for (const char *p = id; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

/* Writes text to dir/name.json, mode 0600, through a temporary file renamed over it. */
static int write_doc(const char *dir, const char *name, const char *text)
{
    char path[4096], tmp[4200];
    if (snprintf(path, sizeof(path), "%s/%s.json", dir, name) >= (int)sizeof(path))
        return slb_cli_fail("%s: path too long", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return slb_cli_fail("cannot write %s: %s", path, strerror(errno));
    size_t len = strlen(text), off = 0;
    int ok = 1;
    while (ok && off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        ok = n > 0;
        off += ok ? (size_t)n : 0;
    }
    int err = errno;
    ok = ok && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    err = ok ? 0 : errno;
    if (close(fd) != 0 && ok) {
        ok = 0;
        err = errno;
    }
    if (ok && rename(tmp, path) == 0)
        return 0;
    err = ok ? errno : err;
    unlink(tmp);
    return slb_cli_fail("cannot write %s: %s", path, strerror(err));
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0700) == 0)
        return 0;
    struct stat st;
    if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    return slb_cli_fail("cannot create %s: %s", path, strerror(errno));
}

int slb_cli_cluster_export(struct slb_cli *c, int argc, char **argv)
{
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 1, 1);
    if (rc != 0)
        return rc;
    const char *dir = a.pos[0];
    json_t *doc;
    rc = slb_cli_call(c, "GET", "/v1/cluster/export", NULL, &doc);
    if (rc != 0)
        return rc;
    json_t *docs = json_object_get(doc, "documents");
    if (!json_is_object(docs) || !json_is_object(json_object_get(docs, "config"))) {
        json_decref(doc);
        return slb_cli_fail("bad response from %s: no \"documents\" with a \"config\"", c->admin);
    }
    const char *key;
    json_t *v;
    json_object_foreach(docs, key, v)
    {
        if (!key_ok(key) || !json_is_object(v)) {
            json_decref(doc);
            return slb_cli_fail("bad response from %s: unexpected document \"%s\"", c->admin, key);
        }
    }
    char certs[4096];
    if (snprintf(certs, sizeof(certs), "%s/certs", dir) >= (int)sizeof(certs)) {
        json_decref(doc);
        return slb_cli_fail("%s: path too long", dir);
    }
    rc = make_dir(dir);
    if (rc == 0)
        rc = make_dir(certs);
    size_t ncerts = 0;
    /* Certificates first, the configuration that refers to them last. */
    json_object_foreach(docs, key, v)
    {
        if (rc != 0 || strcmp(key, "config") == 0)
            continue;
        char *text = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        int is_cert = strncmp(key, "certs/", 6) == 0;
        rc = text ? write_doc(is_cert ? certs : dir, is_cert ? key + 6 : key, text)
                  : slb_cli_fail("out of memory");
        free(text);
        ncerts += is_cert;
    }
    if (rc == 0) {
        char *text =
            json_dumps(json_object_get(docs, "config"), JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        rc = text ? write_doc(dir, "config", text) : slb_cli_fail("out of memory");
        free(text);
    }
    if (rc == 0 && !c->json) {
        fprintf(c->out,
                "exported the configuration, %zu certificate%s%s to %s (a single node starts "
                "from it with --state-dir %s)\n",
                ncerts, ncerts == 1 ? "" : "s",
                json_object_get(docs, "tickets") ? " and the ticket keys" : "", dir, dir);
    } else if (rc == 0) {
        json_t *out =
            json_pack("{s:s, s:I, s:b}", "directory", dir, "certificates", (json_int_t)ncerts,
                      "tickets", json_object_get(docs, "tickets") != NULL);
        if (out)
            slb_cli_print_json(c->out, out);
        json_decref(out);
    }
    json_decref(doc);
    return rc;
}

/* --- stats --cluster: every node's /v1/stats added up --- */

/* One node's /v1/stats through its registered admin address ("HOST:PORT", or a URL), with
 * this invocation's scheme, CA and token. NULL with why filled on failure. */
static json_t *node_stats(struct slb_cli *c, const char *admin, char *why, size_t whylen)
{
    char text[512];
    if (strncmp(admin, "unix:", 5) == 0 || strstr(admin, "://"))
        snprintf(text, sizeof(text), "%s", admin);
    else
        snprintf(text, sizeof(text), "%s://%s", c->url.tls ? "https" : "http", admin);
    struct slb_cli_url url;
    if (slb_cli_url_parse(text, &url, why, whylen) < 0)
        return NULL;
    url.cacert = c->url.cacert;
    char path[512];
    snprintf(path, sizeof(path), "%s/v1/stats", url.base);
    struct slb_cli_resp resp;
    if (slb_cli_http_request(&url, "GET", path, c->have_token ? c->token : NULL, NULL, NULL, 0,
                             &resp, why, whylen) < 0)
        return NULL;
    json_t *doc = NULL;
    if (resp.status == 200)
        doc = json_loadb(resp.body, resp.body_len, 0, NULL);
    if (!json_is_object(doc)) {
        snprintf(why, whylen, "answered %d%s", resp.status,
                 resp.status == 401 ? " (this token is not valid there: give every node the "
                                      "same admin token or API key)"
                                    : "");
        json_decref(doc);
        doc = NULL;
    }
    slb_cli_resp_deinit(&resp);
    return doc;
}

int slb_cli_cluster_stats(struct slb_cli *c, json_t **out)
{
    *out = NULL;
    json_t *cl;
    int rc = slb_cli_call(c, "GET", "/v1/cluster", NULL, &cl);
    if (rc != 0)
        return rc;
    json_t *nodes = json_object_get(cl, "nodes");
    if (!json_is_array(nodes)) {
        json_decref(cl);
        fprintf(c->err, "slbctl: bad response from %s: no \"nodes\" array\n", c->admin);
        return SLB_CLI_EXIT_CONN;
    }
    json_t *sum = NULL, *report = json_array();
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n)
    {
        const char *name = json_string_value(json_object_get(n, "name"));
        const char *admin = json_string_value(json_object_get(n, "admin"));
        char why[512] = "";
        json_t *doc = NULL;
        if (json_is_true(json_object_get(n, "self"))) {
            FILE *saved = c->err;
            c->err = fopen("/dev/null", "w");
            if (slb_cli_call(c, "GET", "/v1/stats", NULL, &doc) != 0)
                snprintf(why, sizeof(why), "GET /v1/stats failed");
            if (c->err)
                fclose(c->err);
            c->err = saved;
        } else if (admin && *admin) {
            doc = node_stats(c, admin, why, sizeof(why));
        } else {
            snprintf(why, sizeof(why), "no admin address registered");
        }
        json_t *r = json_pack("{s:s?, s:s?, s:b}", "name", name, "admin", admin, "ok", doc != NULL);
        if (!doc) {
            json_object_set_new(r, "error", json_string(why));
            fprintf(c->err, "slbctl: node %s (%s): %s; its counters are left out\n",
                    name ? name : "?", admin ? admin : "-", why);
        }
        json_array_append_new(report, r);
        if (doc && !sum)
            sum = doc;
        else if (doc) {
            slb_stats_sum(sum, doc);
            json_decref(doc);
        }
    }
    json_decref(cl);
    if (!sum) {
        json_decref(report);
        return slb_cli_fail("no node of the cluster answered GET /v1/stats");
    }
    json_object_set_new(sum, "scope", json_string("cluster"));
    json_object_set_new(sum, "nodes", report);
    *out = sum;
    return 0;
}
