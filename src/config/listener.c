/* SPDX-License-Identifier: Apache-2.0 */
/* Listeners: validation of a listener resource (bind address, per-protocol options, sticky
 * sessions, ACL, TLS) into its typed form and its normalized JSON with every default filled in.
 * Cross-references (groups, certificates, bind conflicts) are checked by config.c, which sees
 * the whole document. */
#include "config/validate.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Which protocols a listener field belongs to; a field of another protocol is refused with
 * invalid_field rather than ignored, so a tcp listener never silently drops a "tls" block. */
enum scope { S_ALL, S_TCP, S_HTTPX, S_HTTP, S_HTTPS };

/* --bind-host (slb_config_set_bind_host): the address every listener binds to. */
static struct sockaddr_storage bind_host;
static socklen_t bind_host_len;

int slb_config_set_bind_host(const char *host)
{
    char buf[64];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(buf)) {
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        host = buf;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)&bind_host;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&bind_host;
    memset(&bind_host, 0, sizeof(bind_host));
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        bind_host_len = sizeof(*a4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        bind_host_len = sizeof(*a6);
        return 0;
    }
    return -1;
}

static void bind_host_override(struct sockaddr_storage *ss, socklen_t *len)
{
    if (!bind_host_len)
        return;
    in_port_t port = ss->ss_family == AF_INET6 ? ((struct sockaddr_in6 *)ss)->sin6_port
                                               : ((struct sockaddr_in *)ss)->sin_port;
    *ss = bind_host;
    *len = bind_host_len;
    if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = port;
    else
        ((struct sockaddr_in *)ss)->sin_port = port;
}

static const struct {
    const char *key;
    enum scope scope;
} listener_fields[] = {
    {"name", S_ALL},
    {"protocol", S_ALL},
    {"bind", S_ALL},
    {"backend_group", S_ALL},
    {"max_connections", S_ALL},
    {"connect_timeout_ms", S_ALL},
    {"status", S_ALL},
    {"limits", S_ALL},
    {"proxy_protocol", S_TCP},
    {"established_timeout_s", S_TCP},
    {"sni_routes", S_TCP},
    {"x_forwarded_for", S_HTTPX},
    {"x_forwarded_proto", S_HTTPX},
    {"header_timeout_s", S_HTTPX},
    {"idle_timeout_s", S_HTTPX},
    {"request_timeout_s", S_HTTPX},
    {"backend_reuse", S_HTTPX},
    {"redirect_to", S_HTTP},
    {"sticky", S_HTTPX},
    {"acl", S_HTTPX},
    {"rules", S_HTTPX},
    {"gzip", S_HTTPX},
    {"gzip_types", S_HTTPX},
    {"tls", S_HTTPS},
};

static const char *const protocols[] = {"tcp", "http", "https", NULL};
static const char *const statuses[] = {"running", "stopped", NULL};
/* limits: requests_per_s needs requests, so not on tcp listeners (limits_parse) */
static const char *const limit_keys[] = {"connections_per_s", "requests_per_s", "bandwidth_mbps",
                                         NULL};
static const uint32_t limit_max[] = {1000000, 10000000, 100000};
static const char *const proxy_versions[] = {"v1", "v2", NULL};
static const char *const sticky_types[] = {"insert", "server", NULL};
static const char *const acl_modes[] = {"allow", "deny", NULL};
static const char *const reuse_modes[] = {"safe", "always", NULL};
static const char *const client_auths[] = {"required", "optional", NULL};
static const char *const tls_policies[] = {"tls_cipher_policy_1_0",
                                           "tls_cipher_policy_1_1",
                                           "tls_cipher_policy_1_2",
                                           "tls_cipher_policy_1_2_strict",
                                           "tls_cipher_policy_1_2_strict_with_1_3",
                                           NULL};
static const char *const alpn_names[] = {"h2", "http/1.1", NULL};

static const char *const sticky_keys[] = {"type", "cookie", "timeout_s", NULL};
static const char *const acl_keys[] = {"mode", "cidrs", NULL};
static const char *const tls_keys[] = {
    "certificates",      "client_ca", "client_auth", "policy", "session_ticket_lifetime_s",
    "session_max_age_s", "alpn",      NULL};

/* Compressible media types when a listener names none (see http/gzip.c for what a pattern
 * matches; text/event-stream is never compressed). */
static const char *const gzip_default_types[] = {
    "text/*",          "application/json",  "application/*+json", "application/javascript",
    "application/xml", "application/*+xml", "image/svg+xml",      NULL};

/* Certificates of one listener: SNI finds a name in a hash table (src/tls/ctx.c), so the bound
 * is memory, about 5 KiB per ECDSA certificate loaded (docs/configuration.md). */
#define MAX_CERTS 10000
#define MAX_ACL 1000
#define MAX_SNI_ROUTES 1024

const char *slb_proto_name(enum slb_proto p)
{
    return (unsigned)p < 3 ? protocols[p] : "unknown";
}

const char *slb_tls_policy_name(enum slb_tls_policy p)
{
    return (unsigned)p <= SLB_TLS_POLICY_1_2_STRICT_WITH_1_3 ? tls_policies[p] : "unknown";
}

static bool scope_has(enum scope s, enum slb_proto p)
{
    switch (s) {
    case S_ALL:
        return true;
    case S_TCP:
        return p == SLB_PROTO_TCP;
    case S_HTTPX:
        return p != SLB_PROTO_TCP;
    case S_HTTP:
        return p == SLB_PROTO_HTTP;
    case S_HTTPS:
        return p == SLB_PROTO_HTTPS;
    }
    return false;
}

bool slb_config_listener_field_applies(const char *field, const char *protocol)
{
    int p = -1;
    for (int i = 0; protocols[i]; i++)
        if (protocol && strcmp(protocols[i], protocol) == 0)
            p = i;
    for (size_t i = 0; p >= 0 && i < sizeof(listener_fields) / sizeof(listener_fields[0]); i++)
        if (strcmp(field, listener_fields[i].key) == 0)
            return scope_has(listener_fields[i].scope, (enum slb_proto)p);
    return true;
}

static const char *scope_text(enum scope s)
{
    switch (s) {
    case S_TCP:
        return "tcp listeners";
    case S_HTTPX:
        return "http and https listeners";
    case S_HTTP:
        return "http listeners";
    case S_HTTPS:
        return "https listeners";
    default:
        return "all listeners";
    }
}

/* unknown_field first (a typo is the likeliest mistake), then the protocol, then fields that
 * belong to another protocol. */
static int fields_check(const struct slb_cv *cv, enum slb_proto *proto)
{
    const char *key;
    json_t *v;
    size_t nf = sizeof(listener_fields) / sizeof(listener_fields[0]);
    const char *all[sizeof(listener_fields) / sizeof(listener_fields[0]) + 1];
    for (size_t i = 0; i < nf; i++)
        all[i] = listener_fields[i].key;
    all[nf] = NULL;
    int rc = slb_cv_keys(cv, all), p;
    if (rc || (rc = slb_cv_enum(cv, "protocol", true, 0, protocols, &p)))
        return rc;
    *proto = (enum slb_proto)p;
    json_object_foreach((json_t *)cv->obj, key, v)
    {
        for (size_t i = 0; i < nf; i++) {
            if (strcmp(key, listener_fields[i].key) != 0 ||
                scope_has(listener_fields[i].scope, *proto))
                continue;
            char where[SLB_CV_PATH];
            slb_cv_path(cv, key, where);
            return slb_cv_fail(cv->err, "invalid_field", where,
                               "\"%s\" applies only to %s; remove it from this %s listener", key,
                               scope_text(listener_fields[i].scope), protocols[p]);
        }
    }
    return 0;
}

/* "https://HOST[:PORT]" and nothing after: the request's path and query are appended. */
static bool redirect_ok(const char *s)
{
    if (strncmp(s, "https://", 8) != 0)
        return false;
    const char *h = s + 8, *end;
    char host[256];
    if (*h == '[') {
        end = strchr(h, ']');
        if (!end || end - h < 3)
            return false;
        for (const char *p = h + 1; p < end; p++)
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
                return false;
        end++;
    } else {
        end = h + strcspn(h, ":");
        if ((size_t)(end - h) >= sizeof(host))
            return false;
        memcpy(host, h, (size_t)(end - h));
        host[end - h] = '\0';
        if (!slb_cv_hostname_ok(host, false))
            return false;
    }
    if (!*end)
        return true;
    if (*end != ':' || !end[1] || strlen(end + 1) > 5 ||
        strspn(end + 1, "0123456789") != strlen(end + 1))
        return false;
    long port = strtol(end + 1, NULL, 10);
    return port >= 1 && port <= 65535;
}

static bool cookie_ok(const char *s)
{
    if (!*s)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (!isalnum(*p) && !strchr("!#$%&'*+-.^_`|~", *p))
            return false;
    return true;
}

int slb_cv_limits(const struct slb_cv *parent, const char *const *keys, const uint32_t *max,
                  uint32_t *const *vals, json_t **norm)
{
    const json_t *in = slb_cv_get(parent, "limits");
    *norm = NULL;
    for (size_t i = 0; keys[i]; i++)
        *vals[i] = 0;
    if (!in || json_is_null(in))
        return 0;
    char self[SLB_CV_PATH];
    slb_cv_path(parent, "limits", self);
    struct slb_cv cv;
    int rc = slb_cv_open(&cv, in, self, "limits", parent->err);
    if (rc || (rc = slb_cv_keys(&cv, keys)))
        return rc;
    json_t *n = json_object();
    if (!n)
        return slb_cv_oom(parent->err);
    for (size_t i = 0; keys[i]; i++) {
        const json_t *v = slb_cv_get(&cv, keys[i]);
        if (!v || json_is_null(v))
            continue;
        if ((rc = slb_cv_u32(&cv, keys[i], 0, 1, max[i], vals[i]))) {
            json_decref(n);
            return rc;
        }
        if (slb_cv_put(n, keys[i], json_integer(*vals[i]))) {
            json_decref(n);
            return slb_cv_oom(parent->err);
        }
    }
    if (json_object_size(n) == 0)
        json_decref(n);
    else
        *norm = n;
    return 0;
}

static int limits_parse(const struct slb_cv *cv, struct slb_listener_cfg *l, json_t **norm)
{
    uint32_t *const vals[] = {&l->connections_per_s, &l->requests_per_s, &l->bandwidth_mbps};
    const json_t *in = slb_cv_get(cv, "limits");
    const json_t *rps = json_is_object(in) ? json_object_get(in, "requests_per_s") : NULL;
    if (l->protocol == SLB_PROTO_TCP && rps && !json_is_null(rps)) {
        char self[SLB_CV_PATH], where[SLB_CV_PATH];
        slb_cv_path(cv, "limits", self);
        slb_cv_join(where, self, "requests_per_s");
        return slb_cv_fail(cv->err, "invalid_field", where,
                           "\"requests_per_s\" applies only to http and https listeners; remove "
                           "it from this tcp listener");
    }
    return slb_cv_limits(cv, limit_keys, limit_max, vals, norm);
}

static int sticky_parse(const struct slb_cv *lis, struct slb_listener_cfg *l, json_t **norm)
{
    const json_t *in = slb_cv_get(lis, "sticky");
    *norm = NULL;
    l->sticky = SLB_STICKY_NONE;
    if (!in || json_is_null(in))
        return (*norm = json_null()) ? 0 : slb_cv_oom(lis->err);
    char self[SLB_CV_PATH], path[SLB_CV_PATH];
    slb_cv_path(lis, "sticky", self);
    struct slb_cv cv;
    int type;
    const char *cookie;
    if (!json_is_object(in))
        return slb_cv_fail(lis->err, "wrong_type", self,
                           "expected an object like {\"type\": \"insert\"} or null, got %s",
                           slb_cv_type_name(in));
    int rc = slb_cv_open(&cv, in, self, "sticky", lis->err);
    if (rc || (rc = slb_cv_keys(&cv, sticky_keys)) ||
        (rc = slb_cv_enum(&cv, "type", true, 0, sticky_types, &type)))
        return rc;
    /* A server cookie is the backend's own, so only the user knows its name. */
    if ((rc = slb_cv_str(&cv, "cookie", type == 1, "SLBSERVERID", sizeof(l->sticky_cookie),
                         &cookie)))
        return rc;
    if (!cookie_ok(cookie)) {
        slb_cv_path(&cv, "cookie", path);
        return slb_cv_fail(lis->err, "invalid_value", path,
                           "\"%.64s\" is not a valid cookie name (letters, digits and "
                           "!#$%%&'*+-.^_`|~)",
                           cookie);
    }
    if ((rc = slb_cv_u32(&cv, "timeout_s", 1000, 1, 86400, &l->sticky_timeout_s)))
        return rc;
    l->sticky = type == 0 ? SLB_STICKY_INSERT : SLB_STICKY_SERVER;
    snprintf(l->sticky_cookie, sizeof(l->sticky_cookie), "%s", cookie);
    json_t *n = json_object();
    int bad = n ? 0 : -1;
    bad |= slb_cv_put(n, "type", json_string(sticky_types[type]));
    bad |= slb_cv_put(n, "cookie", json_string(cookie));
    bad |= slb_cv_put(n, "timeout_s", json_integer(l->sticky_timeout_s));
    if (bad) {
        json_decref(n);
        return slb_cv_oom(lis->err);
    }
    *norm = n;
    return 0;
}

static int acl_parse(const struct slb_cv *lis, struct slb_listener_cfg *l, json_t **norm)
{
    const json_t *in = slb_cv_get(lis, "acl");
    *norm = NULL;
    l->acl_mode = SLB_ACL_NONE;
    if (!in || json_is_null(in))
        return (*norm = json_null()) ? 0 : slb_cv_oom(lis->err);
    char self[SLB_CV_PATH], path[SLB_CV_PATH], base[SLB_CV_PATH], why[128];
    slb_cv_path(lis, "acl", self);
    struct slb_cv cv;
    int mode;
    const json_t *cidrs;
    if (!json_is_object(in))
        return slb_cv_fail(lis->err, "wrong_type", self,
                           "expected an object like {\"mode\": \"allow\", \"cidrs\": [...]} "
                           "or null, got %s",
                           slb_cv_type_name(in));
    int rc = slb_cv_open(&cv, in, self, "acl", lis->err);
    if (rc || (rc = slb_cv_keys(&cv, acl_keys)) ||
        (rc = slb_cv_enum(&cv, "mode", true, 0, acl_modes, &mode)) ||
        (rc = slb_cv_array(&cv, "cidrs", MAX_ACL, &cidrs)))
        return rc;
    slb_cv_path(&cv, "cidrs", base);
    if (!cidrs)
        return slb_cv_fail(lis->err, "missing_field", base,
                           "the field \"cidrs\" is required (an empty list is allowed)");
    size_t n = json_array_size(cidrs);
    if (n && !(l->acl = calloc(n, sizeof(*l->acl))))
        return slb_cv_oom(lis->err);
    json_t *list = json_array();
    if (!list)
        return slb_cv_oom(lis->err);
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(cidrs, i);
        slb_cv_index(path, base, i);
        if (!json_is_string(v))
            rc = slb_cv_fail(lis->err, "wrong_type", path, "expected a string, got %s",
                             slb_cv_type_name(v));
        else if (slb_cv_cidr(json_string_value(v), &l->acl[i], why))
            rc = slb_cv_fail(lis->err, "invalid_value", path, "%s", why);
        else if (json_array_append_new(list, json_string(json_string_value(v))))
            rc = slb_cv_oom(lis->err);
        if (rc) {
            json_decref(list);
            return rc;
        }
        l->nacl = i + 1;
    }
    l->acl_mode = mode == 0 ? SLB_ACL_ALLOW : SLB_ACL_DENY;
    json_t *o = json_object();
    int bad = o ? 0 : -1;
    bad |= slb_cv_put(o, "mode", json_string(acl_modes[mode]));
    bad |= slb_cv_put(o, "cidrs", list);
    if (bad) {
        json_decref(o);
        return slb_cv_oom(lis->err);
    }
    *norm = o;
    return 0;
}

/* A list of unique names; *list is the normalized copy (owned by the caller). */
/* Pointers into one array: equal names order by position, so the first of a run is the
 * earliest. */
static int by_name_then_position(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    int c = strcmp(x, y);
    return c ? c : (x > y) - (x < y);
}

/* The first id (in list order) that repeats an earlier one is refused, naming both places;
 * found with one sort, as a listener may list thousands. */
static int names_unique(const struct slb_cv *cv, const char *base, char (*names)[SLB_NAME_MAX],
                        size_t n)
{
    if (n < 2)
        return 0;
    const char **v = malloc(n * sizeof(*v));
    if (!v)
        return slb_cv_oom(cv->err);
    for (size_t i = 0; i < n; i++)
        v[i] = names[i];
    qsort(v, n, sizeof(*v), by_name_then_position);
    size_t dup = SIZE_MAX, first = 0;
    for (size_t k = 1; k < n; k++) {
        size_t at = (size_t)((const char(*)[SLB_NAME_MAX])v[k] - names);
        if (strcmp(v[k - 1], v[k]) == 0 && at < dup && (k < 2 || strcmp(v[k - 2], v[k]) != 0)) {
            dup = at;
            first = (size_t)((const char(*)[SLB_NAME_MAX])v[k - 1] - names);
        }
    }
    free(v);
    if (dup == SIZE_MAX)
        return 0;
    char path[SLB_CV_PATH];
    slb_cv_index(path, base, dup);
    return slb_cv_fail(cv->err, "invalid_value", path, "\"%s\" is listed twice (also at index %zu)",
                       names[dup], first);
}

static int name_list(const struct slb_cv *cv, const char *key, const json_t *arr,
                     char (*dst)[SLB_NAME_MAX], json_t **list)
{
    char base[SLB_CV_PATH], path[SLB_CV_PATH];
    slb_cv_path(cv, key, base);
    if (!(*list = json_array()))
        return slb_cv_oom(cv->err);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *v = json_array_get(arr, i);
        const char *s = json_string_value(v);
        bool ok = slb_config_name_ok(s);
        /* The path is written only for an error: a listener may list 10,000 ids. */
        if (!ok)
            slb_cv_index(path, base, i);
        if (!json_is_string(v))
            return slb_cv_fail(cv->err, "wrong_type", path, "expected a string, got %s",
                               slb_cv_type_name(v));
        if (!ok)
            return slb_cv_fail(cv->err, "invalid_value", path,
                               "\"%.80s\" is not a valid certificate id", s);
        /* An id is 1..63 ASCII characters (slb_config_name_ok). */
        size_t len = strlen(s);
        memcpy(dst[i], s, len + 1);
        if (json_array_append_new(*list, json_stringn_nocheck(s, len)))
            return slb_cv_oom(cv->err);
    }
    return names_unique(cv, base, dst, json_array_size(arr));
}

static int alpn_parse(const struct slb_cv *cv, struct slb_tls_cfg *t, json_t **list)
{
    const json_t *arr;
    int rc = slb_cv_array(cv, "alpn", 2, &arr);
    if (rc)
        return rc;
    if (!(*list = json_array()))
        return slb_cv_oom(cv->err);
    t->nalpn = 0;
    if (!arr) {
        for (int i = 0; alpn_names[i]; i++) {
            snprintf(t->alpn[t->nalpn++], sizeof(t->alpn[0]), "%s", alpn_names[i]);
            if (json_array_append_new(*list, json_string(alpn_names[i])))
                return slb_cv_oom(cv->err);
        }
        return 0;
    }
    char base[SLB_CV_PATH], path[SLB_CV_PATH];
    slb_cv_path(cv, "alpn", base);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *v = json_array_get(arr, i);
        slb_cv_index(path, base, i);
        if (!json_is_string(v))
            return slb_cv_fail(cv->err, "wrong_type", path, "expected a string, got %s",
                               slb_cv_type_name(v));
        const char *s = json_string_value(v);
        if (strcmp(s, "h2") != 0 && strcmp(s, "http/1.1") != 0)
            return slb_cv_fail(cv->err, "invalid_value", path,
                               "\"%.40s\" is not one of \"h2\", \"http/1.1\"", s);
        if (i == 1 && strcmp(t->alpn[0], s) == 0)
            return slb_cv_fail(cv->err, "invalid_value", path, "\"%s\" is listed twice", s);
        snprintf(t->alpn[t->nalpn++], sizeof(t->alpn[0]), "%s", s);
        if (json_array_append_new(*list, json_string(s)))
            return slb_cv_oom(cv->err);
    }
    return 0;
}

static int tls_parse(const struct slb_cv *lis, struct slb_tls_cfg *t, json_t **norm)
{
    char self[SLB_CV_PATH], path[SLB_CV_PATH];
    slb_cv_path(lis, "tls", self);
    const json_t *in = slb_cv_get(lis, "tls"), *certs;
    json_t *certs_list = NULL, *alpn_list = NULL, *n = NULL;
    struct slb_cv cv;
    int auth, policy;
    *norm = NULL;
    if (!in)
        return slb_cv_fail(lis->err, "missing_field", self,
                           "an https listener needs a \"tls\" block with its certificates");
    int rc = slb_cv_open(&cv, in, self, "tls", lis->err);
    if (rc || (rc = slb_cv_keys(&cv, tls_keys)) ||
        (rc = slb_cv_array(&cv, "certificates", MAX_CERTS, &certs)))
        return rc;
    slb_cv_path(&cv, "certificates", path);
    if (!certs)
        return slb_cv_fail(lis->err, "missing_field", path,
                           "the field \"certificates\" is required (1-%d certificate ids)",
                           MAX_CERTS);
    if (json_array_size(certs) == 0)
        return slb_cv_fail(lis->err, "invalid_value", path,
                           "must list at least one certificate id (the first is the default)");
    t->certificates = calloc(json_array_size(certs), SLB_NAME_MAX);
    if (!t->certificates)
        return slb_cv_oom(lis->err);
    if ((rc = name_list(&cv, "certificates", certs, t->certificates, &certs_list)))
        goto fail;
    t->ncertificates = json_array_size(certs);

    /* null and "" both mean one-way authentication, as a cleared field in a UI would send. */
    const json_t *ca = slb_cv_get(&cv, "client_ca");
    t->client_ca[0] = '\0';
    if (ca && !json_is_null(ca) && (rc = slb_cv_name(&cv, "client_ca", false, t->client_ca)))
        goto fail;
    if ((rc = slb_cv_enum(&cv, "client_auth", false, 0, client_auths, &auth)) ||
        (rc = slb_cv_enum(&cv, "policy", false, SLB_TLS_POLICY_1_2_STRICT_WITH_1_3, tls_policies,
                          &policy)) ||
        (rc = slb_cv_u32(&cv, "session_ticket_lifetime_s", 300, 0, 7200,
                         &t->session_ticket_lifetime_s)) ||
        (rc = slb_cv_u32(&cv, "session_max_age_s", 3600, 1, 86400, &t->session_max_age_s)) ||
        (rc = alpn_parse(&cv, t, &alpn_list)))
        goto fail;
    t->client_auth = auth == 0 ? SLB_CLIENT_AUTH_REQUIRED : SLB_CLIENT_AUTH_OPTIONAL;
    t->policy = (enum slb_tls_policy)policy;

    n = json_object();
    int bad = n ? 0 : -1;
    bad |= slb_cv_put(n, "certificates", certs_list);
    bad |= slb_cv_put(n, "client_ca", json_string(t->client_ca));
    bad |= slb_cv_put(n, "client_auth", json_string(client_auths[auth]));
    bad |= slb_cv_put(n, "policy", json_string(tls_policies[policy]));
    bad |= slb_cv_put(n, "session_ticket_lifetime_s", json_integer(t->session_ticket_lifetime_s));
    bad |= slb_cv_put(n, "session_max_age_s", json_integer(t->session_max_age_s));
    bad |= slb_cv_put(n, "alpn", alpn_list);
    certs_list = alpn_list = NULL;
    if (bad) {
        rc = slb_cv_oom(lis->err);
        goto fail;
    }
    *norm = n;
    return 0;
fail:
    json_decref(n);
    json_decref(certs_list);
    json_decref(alpn_list);
    return rc;
}

static int sni_parse(const struct slb_cv *lis, struct slb_listener_cfg *l, json_t **norm)
{
    const json_t *in = slb_cv_get(lis, "sni_routes");
    char base[SLB_CV_PATH], path[SLB_CV_PATH];
    slb_cv_path(lis, "sni_routes", base);
    if (!(*norm = json_object()))
        return slb_cv_oom(lis->err);
    if (!in)
        return 0;
    if (!json_is_object(in))
        return slb_cv_fail(lis->err, "wrong_type", base,
                           "expected an object mapping server names to groups, got %s",
                           slb_cv_type_name(in));
    size_t n = json_object_size(in);
    if (n > MAX_SNI_ROUTES)
        return slb_cv_fail(lis->err, "invalid_value", base,
                           "has %zu routes; at most %d are allowed", n, MAX_SNI_ROUTES);
    if (n && !(l->sni_routes = calloc(n, sizeof(*l->sni_routes))))
        return slb_cv_oom(lis->err);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)in, key, v)
    {
        struct slb_sni_route *r = &l->sni_routes[l->nsni_routes];
        slb_cv_member(path, base, key);
        if (strlen(key) >= sizeof(r->server_name) || !slb_cv_hostname_ok(key, true))
            return slb_cv_fail(lis->err, "invalid_value", path,
                               "\"%.100s\" is not a server name (a host name, optionally "
                               "starting with \"*.\")",
                               key);
        /* Server names compare case-insensitively, so store one spelling. */
        for (size_t i = 0; key[i]; i++)
            r->server_name[i] = (char)tolower((unsigned char)key[i]);
        for (size_t j = 0; j < l->nsni_routes; j++)
            if (strcmp(l->sni_routes[j].server_name, r->server_name) == 0)
                return slb_cv_fail(lis->err, "duplicate_name", path,
                                   "\"%s\" is routed twice (names are case-insensitive)",
                                   r->server_name);
        if (!json_is_string(v))
            return slb_cv_fail(lis->err, "wrong_type", path,
                               "expected a backend group name, got %s", slb_cv_type_name(v));
        if (!slb_config_name_ok(json_string_value(v)))
            return slb_cv_fail(lis->err, "invalid_value", path,
                               "\"%.80s\" is not a valid group name", json_string_value(v));
        snprintf(r->group, sizeof(r->group), "%s", json_string_value(v));
        l->nsni_routes++;
        if (slb_cv_put(*norm, r->server_name, json_string(r->group)))
            return slb_cv_oom(lis->err);
    }
    return 0;
}

static int tcp_parse(const struct slb_cv *cv, struct slb_listener_cfg *l, json_t *n)
{
    const json_t *pp = slb_cv_get(cv, "proxy_protocol");
    int version = -1, rc;
    json_t *routes = NULL;
    if (pp && !json_is_null(pp) &&
        (rc = slb_cv_enum(cv, "proxy_protocol", false, -1, proxy_versions, &version)))
        return rc;
    l->proxy_protocol = version + 1;
    if ((rc = slb_cv_u32(cv, "established_timeout_s", 900, 1, 86400, &l->established_timeout_s)))
        return rc;
    if ((rc = sni_parse(cv, l, &routes))) {
        json_decref(routes);
        return rc;
    }
    int bad = 0;
    bad |= slb_cv_put(n, "proxy_protocol",
                      version < 0 ? json_null() : json_string(proxy_versions[version]));
    bad |= slb_cv_put(n, "established_timeout_s", json_integer(l->established_timeout_s));
    bad |= slb_cv_put(n, "sni_routes", routes);
    return bad ? slb_cv_oom(cv->err) : 0;
}

/* A media-type token: letters, digits and the other tchar of RFC 9110 5.6.2 that media types
 * use, lower-cased into out. */
static bool gzip_token(const char *s, size_t n, bool *upper)
{
    if (!n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (isupper(ch))
            *upper = true;
        if (!isalnum(ch) && !strchr("!#$&-^_.+", ch))
            return false;
    }
    return true;
}

/* "type/subtype", "type/STAR" or "type/STAR+suffix" (STAR the asterisk). */
static bool gzip_type_ok(const char *s, bool *upper)
{
    const char *slash = strchr(s, '/');
    if (!slash || strlen(s) >= SLB_GZIP_TYPE_MAX || !gzip_token(s, (size_t)(slash - s), upper))
        return false;
    const char *sub = slash + 1;
    if (sub[0] != '*')
        return gzip_token(sub, strlen(sub), upper);
    return sub[1] == 0 || (sub[1] == '+' && gzip_token(sub + 2, strlen(sub + 2), upper));
}

static int gzip_parse(const struct slb_cv *cv, struct slb_listener_cfg *l, json_t **norm)
{
    const json_t *arr;
    char base[SLB_CV_PATH], path[SLB_CV_PATH];
    int rc;
    if ((rc = slb_cv_bool(cv, "gzip", false, &l->gzip)) ||
        (rc = slb_cv_array(cv, "gzip_types", SLB_GZIP_TYPES_MAX, &arr)))
        return rc;
    if (!(*norm = json_array()))
        return slb_cv_oom(cv->err);
    slb_cv_path(cv, "gzip_types", base);
    size_t n = arr ? json_array_size(arr) : 0;
    for (size_t i = 0; arr ? i < n : gzip_default_types[i] != NULL; i++) {
        const char *t = gzip_default_types[i];
        if (arr) {
            const json_t *v = json_array_get(arr, i);
            bool upper = false;
            slb_cv_index(path, base, i);
            if (!json_is_string(v))
                return slb_cv_fail(cv->err, "wrong_type", path, "expected a media type, got %s",
                                   slb_cv_type_name(v));
            t = json_string_value(v);
            if (!gzip_type_ok(t, &upper) || upper)
                return slb_cv_fail(cv->err, "invalid_value", path,
                                   "\"%.80s\" is not a lower-case media type "
                                   "(\"type/subtype\", \"type/*\" or \"type/*+suffix\")",
                                   t);
            for (size_t j = 0; j < l->ngzip_types; j++)
                if (strcmp(l->gzip_types[j], t) == 0)
                    return slb_cv_fail(cv->err, "duplicate_name", path, "\"%s\" is listed twice",
                                       t);
        }
        snprintf(l->gzip_types[l->ngzip_types++], SLB_GZIP_TYPE_MAX, "%s", t);
        if (json_array_append_new(*norm, json_string(t)))
            return slb_cv_oom(cv->err);
    }
    return 0;
}

static int http_parse(const struct slb_cv *cv, struct slb_listener_cfg *l, json_t *n)
{
    json_t *sticky = NULL, *acl = NULL, *tls = NULL, *rules = NULL, *gz_types = NULL;
    int rc, reuse = SLB_REUSE_SAFE;
    if ((rc = slb_cv_bool(cv, "x_forwarded_for", true, &l->x_forwarded_for)) ||
        (rc = slb_cv_bool(cv, "x_forwarded_proto", true, &l->x_forwarded_proto)) ||
        (rc = slb_cv_u32(cv, "header_timeout_s", 10, 1, 3600, &l->header_timeout_s)) ||
        (rc = slb_cv_u32(cv, "idle_timeout_s", 15, 1, 3600, &l->idle_timeout_s)) ||
        (rc = slb_cv_u32(cv, "request_timeout_s", 60, 1, 3600, &l->request_timeout_s)) ||
        (rc = slb_cv_enum(cv, "backend_reuse", false, SLB_REUSE_SAFE, reuse_modes, &reuse)) ||
        (rc = sticky_parse(cv, l, &sticky)) || (rc = acl_parse(cv, l, &acl)) ||
        (rc = slb_cv_rules(cv, l, &rules)) || (rc = gzip_parse(cv, l, &gz_types)))
        goto fail;
    if (l->protocol == SLB_PROTO_HTTPS && (rc = tls_parse(cv, &l->tls, &tls)))
        goto fail;
    int bad = 0;
    bad |= slb_cv_put(n, "x_forwarded_for", json_boolean(l->x_forwarded_for));
    bad |= slb_cv_put(n, "x_forwarded_proto", json_boolean(l->x_forwarded_proto));
    bad |= slb_cv_put(n, "header_timeout_s", json_integer(l->header_timeout_s));
    bad |= slb_cv_put(n, "idle_timeout_s", json_integer(l->idle_timeout_s));
    bad |= slb_cv_put(n, "request_timeout_s", json_integer(l->request_timeout_s));
    l->backend_reuse = (enum slb_backend_reuse)reuse;
    bad |= slb_cv_put(n, "backend_reuse", json_string(reuse_modes[reuse]));
    if (l->protocol == SLB_PROTO_HTTP)
        bad |= slb_cv_put(n, "redirect_to", json_string(l->redirect_to));
    bad |= slb_cv_put(n, "sticky", sticky);
    bad |= slb_cv_put(n, "acl", acl);
    /* Shown once non-empty: rules are refused by config.c until requests apply them. */
    if (l->nrules)
        bad |= slb_cv_put(n, "rules", rules);
    else
        json_decref(rules);
    if (tls)
        bad |= slb_cv_put(n, "tls", tls);
    /* Shown once set, so the form of listeners without compression stays as it was. */
    if (l->gzip || slb_cv_get(cv, "gzip_types")) {
        bad |= slb_cv_put(n, "gzip", json_boolean(l->gzip));
        bad |= slb_cv_put(n, "gzip_types", gz_types);
    } else {
        json_decref(gz_types);
    }
    return bad ? slb_cv_oom(cv->err) : 0;
fail:
    json_decref(gz_types);
    json_decref(sticky);
    json_decref(acl);
    json_decref(tls);
    json_decref(rules);
    return rc;
}

void slb_cv_listener_deinit(struct slb_listener_cfg *l)
{
    if (!l)
        return;
    free(l->sni_routes);
    free(l->acl);
    free(l->tls.certificates);
    slb_cv_rules_free(l->rules, l->nrules);
    l->rules = NULL;
    l->nrules = 0;
    l->sni_routes = NULL;
    l->acl = NULL;
    l->tls.certificates = NULL;
    l->nsni_routes = l->nacl = l->tls.ncertificates = 0;
}

int slb_cv_listener(const json_t *in, const char *path, struct slb_listener_cfg *l, json_t **norm,
                    struct slb_err *err)
{
    memset(l, 0, sizeof(*l));
    *norm = NULL;
    struct slb_cv cv;
    json_t *n = NULL, *limits = NULL;
    const char *bind, *redirect = "";
    char where[SLB_CV_PATH], why[128];
    int rc = slb_cv_open(&cv, in, path, "a listener", err);
    if (rc || (rc = fields_check(&cv, &l->protocol)) ||
        (rc = slb_cv_name(&cv, "name", true, l->name)) ||
        (rc = slb_cv_str(&cv, "bind", true, NULL, sizeof(l->bind), &bind)))
        goto fail;
    if (slb_cv_hostport(bind, &l->addr, &l->addrlen, why)) {
        slb_cv_path(&cv, "bind", where);
        rc = slb_cv_fail(err, "invalid_value", where, "%s", why);
        goto fail;
    }
    bind_host_override(&l->addr, &l->addrlen);
    snprintf(l->bind, sizeof(l->bind), "%s", bind);
    if (l->protocol == SLB_PROTO_HTTP &&
        (rc = slb_cv_str(&cv, "redirect_to", false, "", sizeof(l->redirect_to), &redirect)))
        goto fail;
    if (*redirect && !redirect_ok(redirect)) {
        slb_cv_path(&cv, "redirect_to", where);
        rc = slb_cv_fail(err, "invalid_value", where,
                         "\"%.100s\" must be \"https://HOST\" or \"https://HOST:PORT\" without a "
                         "path (the request's path is appended), or empty",
                         redirect);
        goto fail;
    }
    snprintf(l->redirect_to, sizeof(l->redirect_to), "%s", redirect);
    /* A redirect-only listener never forwards, so it may go without a backend group. */
    int status;
    if ((rc = slb_cv_name(&cv, "backend_group", !*redirect, l->backend_group)) ||
        (rc = slb_cv_u32(&cv, "max_connections", 0, 0, 1000000, &l->max_connections)) ||
        (rc = slb_cv_u32(&cv, "connect_timeout_ms", 5000, 100, 60000, &l->connect_timeout_ms)) ||
        (rc = slb_cv_enum(&cv, "status", false, 0, statuses, &status)) ||
        (rc = limits_parse(&cv, l, &limits)))
        goto fail;
    l->stopped = status == 1;

    n = json_object();
    int bad = n ? 0 : -1;
    bad |= slb_cv_put(n, "name", json_string(l->name));
    bad |= slb_cv_put(n, "protocol", json_string(protocols[l->protocol]));
    bad |= slb_cv_put(n, "bind", json_string(l->bind));
    bad |= slb_cv_put(n, "backend_group", json_string(l->backend_group));
    bad |= slb_cv_put(n, "max_connections", json_integer(l->max_connections));
    bad |= slb_cv_put(n, "connect_timeout_ms", json_integer(l->connect_timeout_ms));
    bad |= slb_cv_put(n, "status", json_string(statuses[status]));
    /* Shown once set, so documents without limits read as they always did. */
    if (limits)
        bad |= slb_cv_put(n, "limits", limits);
    limits = NULL;
    if (bad) {
        rc = slb_cv_oom(err);
        goto fail;
    }
    rc = l->protocol == SLB_PROTO_TCP ? tcp_parse(&cv, l, n) : http_parse(&cv, l, n);
    if (rc)
        goto fail;
    *norm = n;
    return 0;
fail:
    json_decref(n);
    json_decref(limits);
    slb_cv_listener_deinit(l);
    return rc;
}

json_t *slb_config_normalize_listener(const json_t *in, const char *where_prefix,
                                      struct slb_err *err)
{
    struct slb_listener_cfg l;
    json_t *norm;
    if (slb_cv_listener(in, where_prefix, &l, &norm, err))
        return NULL;
    slb_cv_listener_deinit(&l);
    return norm;
}
