/* SPDX-License-Identifier: Apache-2.0 */
/* Admin API authentication and authorization. Besides the root token (admin.token), scoped
 * API keys: each key's secret is 256 random bits shown once at creation; only its SHA-256 is
 * kept (keys.json, 0600, written atomically), which is enough for a secret of that entropy.
 * A presented token is hashed once and compared in constant time against every key. Sources
 * that fail too often are refused for the rest of a minute, and the failures are logged at a
 * bounded rate. */
#include "admin/auth.h"
#include "admin/routes.h"

#include "config/config.h"
#include "core/fsio.h"
#include "core/log.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define KEYS_MAX 1000
#define KEYS_FILE_MAX (1u << 20)
#define SOURCES_MAX 128
#define SECRET_PREFIX "slbk_"

struct auth_key {
    char name[SLB_AUTH_NAME_SIZE];
    enum slb_scope scope;
    unsigned char hash[32]; /* SHA-256 of the secret */
    char created[24];       /* RFC 3339 UTC */
};

/* Failed authentications of one source address in the current window. */
struct auth_source {
    char addr[64];
    uint64_t window_start;
    unsigned fails;
};

/* Owned by the admin server on the control thread, for the daemon's life. */
struct slb_auth {
    char dir[4096];
    const char *root_token;
    unsigned max_failures;
    struct auth_key *keys;
    size_t n;
    struct auth_source src[SOURCES_MAX];
};

static const char *const scope_names[] = {"none", "read", "certificates", "operator", "admin"};

const char *slb_scope_name(enum slb_scope s)
{
    return s <= SLB_SCOPE_ADMIN ? scope_names[s] : "none";
}

static enum slb_scope scope_parse(const char *s)
{
    for (int i = SLB_SCOPE_READ; s && i <= SLB_SCOPE_ADMIN; i++)
        if (strcmp(s, scope_names[i]) == 0)
            return (enum slb_scope)i;
    return SLB_SCOPE_NONE;
}

static void sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, out, &mdlen, EVP_sha256(), NULL) != 1)
        memset(out, 0, 32); /* never matches: no secret hashes to zero in practice */
}

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* Exactly 2n lowercase hex digits (as keys_save writes them). */
static bool from_hex(const char *s, unsigned char *out, size_t n)
{
    if (!s || strlen(s) != 2 * n)
        return false;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

/* --- keys.json --- */

static json_t *keys_json(const struct slb_auth *a, bool with_hash)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < a->n; i++) {
        const struct auth_key *k = &a->keys[i];
        json_t *o = json_pack("{s:s, s:s, s:s}", "name", k->name, "scope", slb_scope_name(k->scope),
                              "created", k->created);
        if (with_hash) {
            char hex[65];
            to_hex(k->hash, 32, hex);
            json_object_set_new(o, "sha256", json_string(hex));
        }
        json_array_append_new(arr, o);
    }
    return arr;
}

static int keys_save(struct slb_auth *a, struct slb_err *err)
{
    json_t *doc = json_pack("{s:o}", "keys", keys_json(a, true));
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (!text)
        return slb_err_set(err, 500, "internal", "", "out of memory");
    size_t len = strlen(text);
    int rc = slb_fs_write_atomic(a->dir, SLB_AUTH_KEYS_FILE, text, len, 0600);
    free(text);
    if (rc < 0)
        return slb_err_set(err, 500, "storage_failed", SLB_AUTH_KEYS_FILE, "cannot write %s/%s: %s",
                           a->dir, SLB_AUTH_KEYS_FILE, strerror(-rc));
    return 0;
}

static int keys_load(struct slb_auth *a, struct slb_err *err)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", a->dir, SLB_AUTH_KEYS_FILE);
    int rc =
        slb_fs_check_secret_path(path, "keys_insecure", " or delete it to revoke every key", err);
    if (rc)
        return rc;
    char *text = NULL;
    size_t len = 0;
    rc = slb_fs_read_all(path, KEYS_FILE_MAX, &text, &len);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return slb_err_set(err, 500, "unreadable", path, "cannot read %s: %s", path, strerror(-rc));
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, 0, &jerr);
    free(text);
    json_t *arr = json_object_get(doc, "keys");
    if (!json_is_array(arr) || json_array_size(arr) > KEYS_MAX) {
        json_decref(doc);
        return slb_err_set(err, 500, "keys_invalid", path,
                           "%s is not a key file written by slbd; restore it or delete it to "
                           "revoke every key",
                           path);
    }
    a->keys = calloc(json_array_size(arr) + 1, sizeof(*a->keys));
    if (!a->keys) {
        json_decref(doc);
        return slb_err_set(err, 500, "internal", path, "out of memory");
    }
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        struct auth_key *k = &a->keys[a->n];
        const char *name = json_string_value(json_object_get(v, "name"));
        const char *created = json_string_value(json_object_get(v, "created"));
        k->scope = scope_parse(json_string_value(json_object_get(v, "scope")));
        if (!name || !slb_config_name_ok(name) || strlen(name) >= sizeof(k->name) || !k->scope ||
            !from_hex(json_string_value(json_object_get(v, "sha256")), k->hash, 32)) {
            json_decref(doc);
            return slb_err_set(err, 500, "keys_invalid", path,
                               "%s: key %zu is malformed; restore the file or delete it to "
                               "revoke every key",
                               path, i);
        }
        snprintf(k->name, sizeof(k->name), "%s", name);
        snprintf(k->created, sizeof(k->created), "%s", created ? created : "");
        a->n++;
    }
    json_decref(doc);
    return 0;
}

struct slb_auth *slb_auth_new(const char *state_dir, const char *root_token, unsigned max_failures,
                              struct slb_err *err)
{
    struct slb_auth *a = calloc(1, sizeof(*a));
    if (!a) {
        slb_err_set(err, 500, "internal", "", "out of memory");
        return NULL;
    }
    snprintf(a->dir, sizeof(a->dir), "%s", state_dir);
    a->root_token = root_token;
    a->max_failures = max_failures;
    if (keys_load(a, err) < 0) {
        slb_auth_free(a);
        return NULL;
    }
    return a;
}

void slb_auth_free(struct slb_auth *a)
{
    if (!a)
        return;
    OPENSSL_cleanse(a->keys, a->n * sizeof(*a->keys));
    free(a->keys);
    free(a);
}

/* --- authentication --- */

static struct auth_source *source_of(struct slb_auth *a, const char *addr, uint64_t now,
                                     bool create)
{
    struct auth_source *oldest = &a->src[0];
    for (int i = 0; i < SOURCES_MAX; i++) {
        struct auth_source *s = &a->src[i];
        if (s->addr[0] && strcmp(s->addr, addr) == 0) {
            if (now - s->window_start >= SLB_AUTH_FAIL_WINDOW_MS) {
                s->window_start = now;
                s->fails = 0;
            }
            return s;
        }
        if (s->window_start < oldest->window_start)
            oldest = s;
    }
    if (!create)
        return NULL;
    /* Full: the source whose window began longest ago gives way. */
    snprintf(oldest->addr, sizeof(oldest->addr), "%s", addr);
    oldest->window_start = now;
    oldest->fails = 0;
    return oldest;
}

/* Constant-time match of the root token; tlen may differ from its length. */
static bool root_match(const char *root, const char *tok, size_t tlen)
{
    size_t want = strlen(root);
    unsigned diff = (unsigned)(tlen ^ want);
    for (size_t k = 0; k < want; k++)
        diff |= (unsigned char)root[k] ^ (unsigned char)(k < tlen ? tok[k] : 0);
    return diff == 0;
}

static bool identify(struct slb_auth *a, const char *authz, size_t len, struct slb_auth_who *who)
{
    if (!authz || len < 7 || strncasecmp(authz, "Bearer ", 7) != 0)
        return false;
    const char *tok = authz + 7;
    size_t tlen = len - 7;
    if (root_match(a->root_token, tok, tlen)) {
        snprintf(who->name, sizeof(who->name), "root");
        who->scope = SLB_SCOPE_ADMIN;
        return true;
    }
    unsigned char h[32];
    sha256(tok, tlen, h);
    const struct auth_key *found = NULL;
    for (size_t i = 0; i < a->n; i++)
        if (CRYPTO_memcmp(h, a->keys[i].hash, 32) == 0)
            found = &a->keys[i];
    if (!found)
        return false;
    snprintf(who->name, sizeof(who->name), "%s", found->name);
    who->scope = found->scope;
    return true;
}

enum slb_auth_result slb_auth_check(struct slb_auth *a, const char *authz, size_t len,
                                    const char *source, uint64_t now_ms, struct slb_auth_who *who,
                                    unsigned *retry_after)
{
    struct auth_source *s = source_of(a, source, now_ms, false);
    if (s && a->max_failures && s->fails >= a->max_failures) {
        uint64_t left = s->window_start + SLB_AUTH_FAIL_WINDOW_MS - now_ms;
        *retry_after = (unsigned)((left + 999) / 1000);
        return SLB_AUTH_LIMITED;
    }
    if (identify(a, authz, len, who))
        return SLB_AUTH_OK;
    if (!authz) {
        /* No credentials at all (a browser opening the console, a probe): not a guess. */
        slb_debug("admin API: request without credentials from %s", source);
        return SLB_AUTH_BAD;
    }
    s = s ? s : source_of(a, source, now_ms, true);
    s->fails++;
    if (a->max_failures && s->fails == a->max_failures)
        slb_warn_limited("admin API: %u failed authentications from %s within a minute; "
                         "refusing it for the rest of the minute",
                         s->fails, source);
    else
        slb_warn_limited("admin API: failed authentication from %s (wrong token or key)", source);
    return SLB_AUTH_BAD;
}

/* --- authorization --- */

static bool under(const char *path, const char *coll)
{
    size_t n = strlen(coll);
    return strncmp(path, coll, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

enum slb_scope slb_auth_needed(const char *method, const char *path)
{
    /* The whole state with its private keys (slbctl cluster export). */
    if (strcmp(path, "/v1/cluster/export") == 0)
        return SLB_SCOPE_ADMIN;
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
        return SLB_SCOPE_READ;
    if (under(path, "/v1/certificates"))
        return SLB_SCOPE_CERTIFICATES;
    if (under(path, "/v1/listeners") || under(path, "/v1/groups"))
        return SLB_SCOPE_OPERATOR;
    return SLB_SCOPE_ADMIN; /* keys, settings, apply, anything else */
}

bool slb_auth_allowed(const struct slb_auth_who *who, enum slb_scope need,
                      struct slb_admin_resp *resp)
{
    if (who->scope >= need)
        return true;
    slb_admin_error_simple(resp, 403, "forbidden",
                           "this needs the \"%s\" scope; key \"%s\" has the \"%s\" scope",
                           slb_scope_name(need), who->name, slb_scope_name(who->scope));
    json_object_set_new(json_object_get(resp->json, "error"), "scope",
                        json_string(slb_scope_name(need)));
    return false;
}

/* --- /v1/keys --- */

static struct auth_key *key_find(struct slb_auth *a, const char *name)
{
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->keys[i].name, name) == 0)
            return &a->keys[i];
    return NULL;
}

static void key_create(struct slb_auth *a, const struct slb_auth_who *who,
                       const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    json_t *body = slb_admin_body_object(req, resp);
    if (!body)
        return;
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *sname = json_string_value(json_object_get(body, "scope"));
    enum slb_scope scope = scope_parse(sname);
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        if (strcmp(k, "name") != 0 && strcmp(k, "scope") != 0) {
            slb_admin_error_simple(resp, 400, "unknown_field",
                                   "%.60s: unknown field; a key has name and scope", k);
            goto out;
        }
    }
    if (!name || !slb_config_name_ok(name) || strlen(name) >= SLB_AUTH_NAME_SIZE ||
        strcmp(name, "root") == 0) {
        slb_admin_error_simple(resp, 400, "invalid_value",
                               "name: give 1 to 63 of [A-Za-z0-9._-]; \"root\" is the token's");
        goto out;
    }
    if (!scope) {
        slb_admin_error_simple(resp, 400, "invalid_value",
                               "scope: one of \"read\", \"certificates\", \"operator\", "
                               "\"admin\"");
        goto out;
    }
    if (key_find(a, name)) {
        slb_admin_error_simple(resp, 409, "name_taken", "a key named \"%s\" already exists", name);
        goto out;
    }
    if (a->n >= KEYS_MAX) {
        slb_admin_error_simple(resp, 409, "too_many_keys", "at most %d keys; revoke some first",
                               KEYS_MAX);
        goto out;
    }
    unsigned char raw[32];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        slb_admin_error_simple(resp, 500, "internal", "cannot get random bytes: %s",
                               strerror(errno));
        goto out;
    }
    char secret[sizeof(SECRET_PREFIX) + 64];
    memcpy(secret, SECRET_PREFIX, sizeof(SECRET_PREFIX) - 1);
    to_hex(raw, sizeof(raw), secret + sizeof(SECRET_PREFIX) - 1);
    OPENSSL_cleanse(raw, sizeof(raw));
    struct auth_key *keys = realloc(a->keys, (a->n + 1) * sizeof(*keys));
    if (!keys) {
        slb_admin_error_simple(resp, 500, "internal", "out of memory");
        goto out;
    }
    a->keys = keys;
    struct auth_key *nk = &a->keys[a->n];
    memset(nk, 0, sizeof(*nk));
    snprintf(nk->name, sizeof(nk->name), "%s", name);
    nk->scope = scope;
    sha256(secret, strlen(secret), nk->hash);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(nk->created, sizeof(nk->created), "%Y-%m-%dT%H:%M:%SZ", &tm);
    a->n++;
    struct slb_err err = {0};
    if (keys_save(a, &err) < 0) {
        a->n--;
        slb_admin_error(resp, &err);
        OPENSSL_cleanse(secret, sizeof(secret));
        goto out;
    }
    slb_info("admin API: key \"%s\" (%s) created by \"%s\"", nk->name, slb_scope_name(scope),
             who->name);
    resp->status = 201;
    resp->json = json_pack("{s:s, s:s, s:s, s:s}", "name", nk->name, "scope", slb_scope_name(scope),
                           "created", nk->created, "secret", secret);
    OPENSSL_cleanse(secret, sizeof(secret));
out:
    json_decref(body);
}

static void key_revoke(struct slb_auth *a, const struct slb_auth_who *who, struct auth_key *k,
                       struct slb_admin_resp *resp)
{
    struct auth_key saved = *k;
    size_t at = (size_t)(k - a->keys);
    memmove(k, k + 1, (a->n - at - 1) * sizeof(*k));
    a->n--;
    struct slb_err err = {0};
    if (keys_save(a, &err) < 0) {
        /* Not on disk: put it back so memory and disk agree. */
        memmove(&a->keys[at + 1], &a->keys[at], (a->n - at) * sizeof(*k));
        a->keys[at] = saved;
        a->n++;
        slb_admin_error(resp, &err);
        return;
    }
    slb_info("admin API: key \"%s\" revoked by \"%s\"", saved.name, who->name);
    OPENSSL_cleanse(&saved, sizeof(saved));
    resp->status = 204;
}

static const char *const key_filters[] = {"scope", NULL};
static const char *const key_scopes[] = {"read", "certificates", "operator", "admin", NULL};

/* GET /v1/keys: paged, filtered by scope. */
static void list_keys(const struct slb_auth *a, const struct slb_admin_req *req,
                      struct slb_admin_resp *resp)
{
    struct slb_admin_page pg;
    char scope[16];
    if (!slb_admin_page_parse(req, key_filters, &pg, resp) ||
        !slb_admin_filter_enum(req, "scope", key_scopes, scope, sizeof(scope), resp))
        return;
    json_t *keys = keys_json(a, false), *all = json_array(), *v;
    size_t i;
    json_array_foreach(keys, i, v)
    {
        const char *s = json_string_value(json_object_get(v, "scope"));
        if (!scope[0] || (s && strcmp(s, scope) == 0))
            json_array_append(all, v);
    }
    json_decref(keys);
    slb_admin_list_json(resp, "keys", all, &pg, slb_admin_key_name);
}

bool slb_auth_route(struct slb_auth *a, const struct slb_auth_who *who,
                    const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    if (!under(req->path, "/v1/keys"))
        return false;
    char seg[SLB_ADMIN_MAX_SEGS][SLB_ADMIN_SEG];
    int n = slb_admin_split(req->path, seg);
    if (n < 1 || n > 2) {
        slb_admin_error_simple(resp, 404, "not_found", "no such endpoint: %s", req->path);
        return true;
    }
    bool list = n == 1 && slb_admin_method_is(req, "GET");
    if (!list && req->query[0]) {
        slb_admin_error_simple(resp, 400, "unknown_parameter",
                               "this endpoint accepts no query parameter");
        return true;
    }
    if (n == 1) {
        if (list)
            list_keys(a, req, resp);
        else if (slb_admin_method_is(req, "POST"))
            key_create(a, who, req, resp);
        else
            slb_admin_not_allowed(resp, "GET, POST");
        return true;
    }
    struct auth_key *k = key_find(a, seg[1]);
    if (!k) {
        slb_admin_error_simple(resp, 404, "not_found", "no key named \"%s\"", seg[1]);
        return true;
    }
    if (slb_admin_method_is(req, "GET"))
        resp->json = json_pack("{s:s, s:s, s:s}", "name", k->name, "scope",
                               slb_scope_name(k->scope), "created", k->created);
    else if (slb_admin_method_is(req, "DELETE"))
        key_revoke(a, who, k, resp);
    else
        slb_admin_not_allowed(resp, "GET, DELETE");
    return true;
}
