/* SPDX-License-Identifier: Apache-2.0 */
/* Forwarding rules of http/https listeners: validation of the "rules" list into struct
 * slb_rule_cfg and its normalized JSON. Regular expressions are compiled here once to report a
 * bad pattern with its position; the matcher (src/http/rules.c) compiles them again with JIT
 * when a snapshot is built. Group names are checked by config.c, which sees the groups. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "config/validate.h"
#include "http/normalize.h"

#include <ctype.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CONDS 16 /* headers, query conditions and headers set by one rule */
#define MAX_SOURCES 100
#define MAX_TARGETS 16
#define MAX_TEXT 1024 /* hosts, paths, patterns, header values */

static const char *const rule_keys[] = {"name", "match", "action", "limits", NULL};
static const char *const rule_limit_keys[] = {"requests_per_s", NULL};
static const uint32_t rule_limit_max[] = {10000000};
static const char *const match_keys[] = {"host",    "path",  "path_prefix", "path_regex", "methods",
                                         "headers", "query", "source",      NULL};
static const char *const action_keys[] = {
    "forward", "redirect", "fixed_response", "set_request_headers", "remove_request_headers", NULL};
static const char *const target_keys[] = {"group", "weight", NULL};
static const char *const redirect_keys[] = {"code", "scheme", "host", "port",
                                            "path", "query",  NULL};
static const char *const fixed_keys[] = {"code", "content_type", "body", NULL};
static const char *const schemes[] = {"http", "https", NULL};

/* Headers whose meaning is the connection's or the message framing's: slbd sets them. */
static const char *const reserved_headers[] = {
    "connection",        "content-length", "keep-alive", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade",        NULL};

static bool tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool token_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!tchar((unsigned char)*s))
            return false;
    return true;
}

/* A header value we may write: visible characters, spaces and tabs, nothing that ends a line. */
static bool field_value_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    return true;
}

/* A path or query we may put in a Location header. */
static bool uri_part_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f || *p == '#')
            return false;
    return true;
}

static char *lower_dup(const char *s)
{
    char *d = strdup(s);
    for (char *p = d; p && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

int slb_cv_regex_check(const char *pattern, char *why, size_t size)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
    if (re) {
        pcre2_code_free(re);
        return 0;
    }
    char msg[120];
    if (pcre2_get_error_message(code, (PCRE2_UCHAR *)msg, sizeof(msg)) < 0)
        snprintf(msg, sizeof(msg), "error %d", code);
    snprintf(why, size, "is not a valid regular expression: %s at offset %zu", msg, (size_t)off);
    return SLB_EINVAL;
}

void slb_cv_rules_free(struct slb_rule_cfg *rules, size_t n)
{
    for (size_t i = 0; rules && i < n; i++) {
        struct slb_rule_cfg *r = &rules[i];
        free(r->host);
        free(r->path);
        free(r->path_prefix);
        free(r->path_regex);
        free(r->methods);
        for (size_t k = 0; k < r->nheaders; k++) {
            free(r->headers[k].name);
            free(r->headers[k].value);
        }
        free(r->headers);
        for (size_t k = 0; k < r->nquery; k++) {
            free(r->query[k].name);
            free(r->query[k].value);
        }
        free(r->query);
        free(r->source);
        free(r->forward);
        for (size_t k = 0; k < r->nset_headers; k++) {
            free(r->set_headers[k].name);
            free(r->set_headers[k].value);
        }
        free(r->set_headers);
        for (size_t k = 0; k < r->nremove_headers; k++)
            free(r->remove_headers[k]);
        free(r->remove_headers);
        free(r->redir_scheme);
        free(r->redir_host);
        free(r->redir_path);
        free(r->redir_query);
        free(r->content_type);
        free(r->body);
    }
    free(rules);
}

/* A string member copied into *dst (absent leaves it NULL). */
static int str_dup(const struct slb_cv *cv, const char *key, size_t max, char **dst)
{
    const char *s;
    int rc = slb_cv_str(cv, key, false, NULL, max, &s);
    if (rc || !s)
        return rc;
    return (*dst = strdup(s)) ? 0 : slb_cv_oom(cv->err);
}

/* path and path_prefix: written the way a request's path is normalized, or never matched. */
static int path_cond(const struct slb_cv *cv, const char *key, char **dst, json_t *n)
{
    char where[SLB_CV_PATH];
    int rc = str_dup(cv, key, MAX_TEXT, dst);
    if (rc || !*dst)
        return rc;
    slb_cv_path(cv, key, where);
    char norm[MAX_TEXT];
    size_t len;
    if (slb_path_normalize(*dst, strlen(*dst), norm, &len))
        return slb_cv_fail(cv->err, "invalid_value", where,
                           "\"%.100s\" is not a path (it starts with '/'; no \"%%2F\", \"%%5C\", "
                           "\"%%00\", '\\', '#', spaces or control characters)",
                           *dst);
    if (strcmp(norm, *dst) != 0)
        return slb_cv_fail(cv->err, "invalid_value", where,
                           "\"%.100s\" is not in normalized form, so no request would match it; "
                           "write \"%.100s\"",
                           *dst, norm);
    return slb_cv_put(n, key, json_string(*dst)) ? slb_cv_oom(cv->err) : 0;
}

/* {"name": "value"} or, for headers, {"name": {"regex": "..."}}. */
static int kv_cond(const struct slb_cv *cv, const char *key, bool headers, struct slb_rule_kv **dst,
                   size_t *count, json_t *n)
{
    const json_t *in = slb_cv_get(cv, key);
    char base[SLB_CV_PATH], where[SLB_CV_PATH], why[200];
    if (!in)
        return 0;
    slb_cv_path(cv, key, base);
    if (!json_is_object(in) || json_object_size(in) == 0 || json_object_size(in) > MAX_CONDS)
        return slb_cv_fail(cv->err, json_is_object(in) ? "invalid_value" : "wrong_type", base,
                           "expected an object of 1 to %d {\"name\": \"value\"} pairs%s", MAX_CONDS,
                           headers ? " (a value may be {\"regex\": \"...\"})" : "");
    if (!(*dst = calloc(json_object_size(in), sizeof(**dst))))
        return slb_cv_oom(cv->err);
    json_t *out = json_object();
    if (!out || slb_cv_put(n, key, out))
        return slb_cv_oom(cv->err);
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)in, name, v)
    {
        struct slb_rule_kv *kv = &(*dst)[*count];
        slb_cv_member(where, base, name);
        if (headers ? !token_ok(name) : (!*name || !uri_part_ok(name) || strlen(name) > 256))
            return slb_cv_fail(cv->err, "invalid_value", where, "\"%.64s\" is not a valid %s", name,
                               headers ? "header name" : "query parameter name");
        const json_t *val = v;
        if (headers && json_is_object(v)) {
            if (json_object_size(v) != 1 || !(val = json_object_get(v, "regex")))
                return slb_cv_fail(cv->err, "invalid_value", where,
                                   "expected a string or {\"regex\": \"...\"}");
            kv->regex = true;
        }
        if (!json_is_string(val))
            return slb_cv_fail(cv->err, "wrong_type", where, "expected a string%s, got %s",
                               headers ? " or {\"regex\": \"...\"}" : "", slb_cv_type_name(val));
        const char *s = json_string_value(val);
        if (strlen(s) != json_string_length(val) || strlen(s) >= MAX_TEXT)
            return slb_cv_fail(cv->err, "invalid_value", where,
                               "must be shorter than %d characters, without NUL bytes", MAX_TEXT);
        if (kv->regex && slb_cv_regex_check(s, why, sizeof(why)))
            return slb_cv_fail(cv->err, "invalid_value", where, "%s", why);
        if (!(kv->name = headers ? lower_dup(name) : strdup(name)) || !(kv->value = strdup(s)))
            return slb_cv_oom(cv->err);
        (*count)++;
        for (size_t j = 0; j + 1 < *count; j++)
            if (strcmp((*dst)[j].name, kv->name) == 0)
                return slb_cv_fail(cv->err, "invalid_value", where,
                                   "\"%s\" is listed twice (names are case-insensitive)", name);
        json_t *o = kv->regex ? json_pack("{s:s}", "regex", s) : json_string(s);
        if (slb_cv_put(out, kv->name, o))
            return slb_cv_oom(cv->err);
    }
    return 0;
}

static int methods_cond(const struct slb_cv *cv, struct slb_rule_cfg *r, json_t *n)
{
    const json_t *arr;
    char base[SLB_CV_PATH], where[SLB_CV_PATH];
    int rc = slb_cv_array(cv, "methods", 32, &arr);
    if (rc || !arr)
        return rc;
    slb_cv_path(cv, "methods", base);
    if (json_array_size(arr) == 0)
        return slb_cv_fail(cv->err, "invalid_value", base,
                           "must list at least one method (leave \"methods\" out for any)");
    if (!(r->methods = calloc(json_array_size(arr), sizeof(*r->methods))))
        return slb_cv_oom(cv->err);
    json_t *list = json_array();
    if (!list || slb_cv_put(n, "methods", list))
        return slb_cv_oom(cv->err);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *v = json_array_get(arr, i);
        slb_cv_index(where, base, i);
        const char *s = json_is_string(v) ? json_string_value(v) : "";
        if (!json_is_string(v) || strlen(s) >= sizeof(r->methods[0]) || !token_ok(s))
            return slb_cv_fail(cv->err, "invalid_value", where,
                               "expected a method name such as \"GET\" (a token of 1 to 15 "
                               "characters)");
        for (size_t k = 0; s[k]; k++)
            r->methods[i][k] = (char)toupper((unsigned char)s[k]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->methods[j], r->methods[i]) == 0)
                return slb_cv_fail(cv->err, "invalid_value", where, "\"%s\" is listed twice",
                                   r->methods[i]);
        r->nmethods = i + 1;
        if (json_array_append_new(list, json_string(r->methods[i])))
            return slb_cv_oom(cv->err);
    }
    return 0;
}

static int source_cond(const struct slb_cv *cv, struct slb_rule_cfg *r, json_t *n)
{
    const json_t *arr;
    char base[SLB_CV_PATH], where[SLB_CV_PATH], why[128];
    int rc = slb_cv_array(cv, "source", MAX_SOURCES, &arr);
    if (rc || !arr)
        return rc;
    slb_cv_path(cv, "source", base);
    if (json_array_size(arr) == 0)
        return slb_cv_fail(cv->err, "invalid_value", base,
                           "must list at least one CIDR (leave \"source\" out for any)");
    if (!(r->source = calloc(json_array_size(arr), sizeof(*r->source))))
        return slb_cv_oom(cv->err);
    json_t *list = json_array();
    if (!list || slb_cv_put(n, "source", list))
        return slb_cv_oom(cv->err);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *v = json_array_get(arr, i);
        slb_cv_index(where, base, i);
        if (!json_is_string(v))
            return slb_cv_fail(cv->err, "wrong_type", where, "expected a string, got %s",
                               slb_cv_type_name(v));
        if (slb_cv_cidr(json_string_value(v), &r->source[i], why))
            return slb_cv_fail(cv->err, "invalid_value", where, "%s", why);
        r->nsource = i + 1;
        if (json_array_append_new(list, json_string(json_string_value(v))))
            return slb_cv_oom(cv->err);
    }
    return 0;
}

static int match_parse(const struct slb_cv *rcv, struct slb_rule_cfg *r, json_t *rn)
{
    const json_t *in = slb_cv_get(rcv, "match");
    char self[SLB_CV_PATH], where[SLB_CV_PATH], why[200];
    struct slb_cv cv;
    json_t *n = json_object();
    if (!n || slb_cv_put(rn, "match", n))
        return slb_cv_oom(rcv->err);
    if (!in) /* no conditions: the rule applies to every request that reaches it */
        return 0;
    slb_cv_path(rcv, "match", self);
    int rc = slb_cv_open(&cv, in, self, "the rule's conditions", rcv->err);
    if (rc || (rc = slb_cv_keys(&cv, match_keys)) || (rc = str_dup(&cv, "host", 256, &r->host)))
        return rc;
    if (r->host) {
        slb_cv_path(&cv, "host", where);
        if (!slb_cv_hostname_ok(r->host, true))
            return slb_cv_fail(rcv->err, "invalid_value", where,
                               "\"%.100s\" is not a host name (optionally starting with \"*.\")",
                               r->host);
        for (char *p = r->host; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        if (slb_cv_put(n, "host", json_string(r->host)))
            return slb_cv_oom(rcv->err);
    }
    if ((rc = path_cond(&cv, "path", &r->path, n)) ||
        (rc = path_cond(&cv, "path_prefix", &r->path_prefix, n)) ||
        (rc = str_dup(&cv, "path_regex", MAX_TEXT, &r->path_regex)))
        return rc;
    if (r->path_regex) {
        slb_cv_path(&cv, "path_regex", where);
        if (slb_cv_regex_check(r->path_regex, why, sizeof(why)))
            return slb_cv_fail(rcv->err, "invalid_value", where, "%s", why);
        if (slb_cv_put(n, "path_regex", json_string(r->path_regex)))
            return slb_cv_oom(rcv->err);
    }
    if ((rc = methods_cond(&cv, r, n)) ||
        (rc = kv_cond(&cv, "headers", true, &r->headers, &r->nheaders, n)) ||
        (rc = kv_cond(&cv, "query", false, &r->query, &r->nquery, n)) ||
        (rc = source_cond(&cv, r, n)))
        return rc;
    return 0;
}

static int target_parse(const struct slb_cv *acv, const json_t *v, const char *where,
                        struct slb_rule_target *t, json_t *list)
{
    struct slb_cv cv;
    int rc;
    if (json_is_string(v)) {
        if (!slb_config_name_ok(json_string_value(v)))
            return slb_cv_fail(acv->err, "invalid_value", where,
                               "\"%.80s\" is not a valid group name", json_string_value(v));
        snprintf(t->group, sizeof(t->group), "%s", json_string_value(v));
        t->weight = 100;
    } else if ((rc = slb_cv_open(&cv, v, where, "a forward target", acv->err)) ||
               (rc = slb_cv_keys(&cv, target_keys)) ||
               (rc = slb_cv_name(&cv, "group", true, t->group)) ||
               (rc = slb_cv_u32(&cv, "weight", 100, 0, 100, &t->weight))) {
        return rc;
    }
    json_t *o = json_pack("{s:s,s:i}", "group", t->group, "weight", (int)t->weight);
    return !o || json_array_append_new(list, o) ? slb_cv_oom(acv->err) : 0;
}

/* "forward": "group", {"group": ..., "weight": ...} or a list of those. */
static int forward_parse(const struct slb_cv *cv, struct slb_rule_cfg *r, json_t *n)
{
    const json_t *in = slb_cv_get(cv, "forward");
    char base[SLB_CV_PATH], where[SLB_CV_PATH];
    slb_cv_path(cv, "forward", base);
    size_t count = json_is_array(in) ? json_array_size(in) : 1;
    if (json_is_array(in) && (count == 0 || count > MAX_TARGETS))
        return slb_cv_fail(cv->err, "invalid_value", base,
                           "must list 1 to %d {\"group\": ..., \"weight\": ...} targets",
                           MAX_TARGETS);
    if (!json_is_array(in) && !json_is_string(in) && !json_is_object(in))
        return slb_cv_fail(cv->err, "wrong_type", base,
                           "expected a group name or a list of {\"group\": ..., \"weight\": ...}, "
                           "got %s",
                           slb_cv_type_name(in));
    if (!(r->forward = calloc(count, sizeof(*r->forward))))
        return slb_cv_oom(cv->err);
    json_t *list = json_array();
    if (!list || slb_cv_put(n, "forward", list))
        return slb_cv_oom(cv->err);
    uint32_t sum = 0;
    for (size_t i = 0; i < count; i++) {
        const json_t *v = json_is_array(in) ? json_array_get(in, i) : in;
        if (json_is_array(in))
            slb_cv_index(where, base, i);
        else
            snprintf(where, sizeof(where), "%s", base);
        int rc = target_parse(cv, v, where, &r->forward[i], list);
        if (rc)
            return rc;
        r->nforward = i + 1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->forward[j].group, r->forward[i].group) == 0)
                return slb_cv_fail(cv->err, "invalid_value", where, "group \"%s\" is listed twice",
                                   r->forward[i].group);
        sum += r->forward[i].weight;
    }
    if (sum == 0)
        return slb_cv_fail(cv->err, "invalid_value", base,
                           "the weights add up to 0: no request could be forwarded");
    return 0;
}

static int set_headers_parse(const struct slb_cv *cv, struct slb_rule_cfg *r, json_t *n)
{
    const json_t *in = slb_cv_get(cv, "set_request_headers");
    char base[SLB_CV_PATH], where[SLB_CV_PATH];
    json_t *out = json_object();
    if (!out || slb_cv_put(n, "set_request_headers", out))
        return slb_cv_oom(cv->err);
    if (!in)
        return 0;
    slb_cv_path(cv, "set_request_headers", base);
    if (!json_is_object(in) || json_object_size(in) > MAX_CONDS)
        return slb_cv_fail(cv->err, json_is_object(in) ? "invalid_value" : "wrong_type", base,
                           "expected an object of at most %d {\"name\": \"value\"} pairs",
                           MAX_CONDS);
    if (json_object_size(in) &&
        !(r->set_headers = calloc(json_object_size(in), sizeof(*r->set_headers))))
        return slb_cv_oom(cv->err);
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)in, name, v)
    {
        struct slb_rule_kv *kv = &r->set_headers[r->nset_headers];
        slb_cv_member(where, base, name);
        if (!token_ok(name))
            return slb_cv_fail(cv->err, "invalid_value", where,
                               "\"%.64s\" is not a valid header name", name);
        if (!json_is_string(v))
            return slb_cv_fail(cv->err, "wrong_type", where, "expected a string, got %s",
                               slb_cv_type_name(v));
        const char *s = json_string_value(v);
        if (strlen(s) != json_string_length(v) || strlen(s) >= MAX_TEXT || !field_value_ok(s))
            return slb_cv_fail(cv->err, "invalid_value", where,
                               "must be shorter than %d characters, without control characters",
                               MAX_TEXT);
        if (!(kv->name = lower_dup(name)) || !(kv->value = strdup(s)))
            return slb_cv_oom(cv->err);
        r->nset_headers++;
        for (int k = 0; reserved_headers[k]; k++)
            if (strcmp(kv->name, reserved_headers[k]) == 0)
                return slb_cv_fail(cv->err, "invalid_value", where,
                                   "\"%s\" frames the message or the connection; slbd sets it",
                                   kv->name);
        for (size_t j = 0; j + 1 < r->nset_headers; j++)
            if (strcmp(r->set_headers[j].name, kv->name) == 0)
                return slb_cv_fail(cv->err, "invalid_value", where,
                                   "\"%s\" is set twice (names are case-insensitive)", name);
        if (slb_cv_put(out, kv->name, json_string(s)))
            return slb_cv_oom(cv->err);
    }
    return 0;
}

static int remove_headers_parse(const struct slb_cv *cv, struct slb_rule_cfg *r, json_t *n)
{
    const json_t *arr;
    char base[SLB_CV_PATH], where[SLB_CV_PATH];
    json_t *list = json_array();
    if (!list || slb_cv_put(n, "remove_request_headers", list))
        return slb_cv_oom(cv->err);
    int rc = slb_cv_array(cv, "remove_request_headers", MAX_CONDS, &arr);
    if (rc || !arr || json_array_size(arr) == 0)
        return rc;
    slb_cv_path(cv, "remove_request_headers", base);
    if (!(r->remove_headers = calloc(json_array_size(arr), sizeof(char *))))
        return slb_cv_oom(cv->err);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *v = json_array_get(arr, i);
        slb_cv_index(where, base, i);
        if (!json_is_string(v) || !token_ok(json_string_value(v)) ||
            strlen(json_string_value(v)) > 256)
            return slb_cv_fail(cv->err, "invalid_value", where, "expected a header name");
        if (!(r->remove_headers[i] = lower_dup(json_string_value(v))))
            return slb_cv_oom(cv->err);
        r->nremove_headers = i + 1;
        const char *h = r->remove_headers[i];
        for (int k = 0; reserved_headers[k]; k++)
            if (strcmp(h, reserved_headers[k]) == 0 || strcmp(h, "host") == 0)
                return slb_cv_fail(cv->err, "invalid_value", where,
                                   "\"%s\" cannot be removed: slbd needs it to forward", h);
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->remove_headers[j], h) == 0)
                return slb_cv_fail(cv->err, "invalid_value", where, "\"%s\" is listed twice", h);
        for (size_t j = 0; j < r->nset_headers; j++)
            if (strcmp(r->set_headers[j].name, h) == 0)
                return slb_cv_fail(cv->err, "conflicting_actions", where,
                                   "\"%s\" is both set and removed", h);
        if (json_array_append_new(list, json_string(h)))
            return slb_cv_oom(cv->err);
    }
    return 0;
}

static int redirect_parse(const struct slb_cv *acv, struct slb_rule_cfg *r, json_t *n)
{
    char self[SLB_CV_PATH], where[SLB_CV_PATH];
    struct slb_cv cv;
    uint32_t code, port;
    int scheme = -1;
    slb_cv_path(acv, "redirect", self);
    int rc = slb_cv_open(&cv, slb_cv_get(acv, "redirect"), self, "a redirect", acv->err);
    if (rc || (rc = slb_cv_keys(&cv, redirect_keys)) ||
        (rc = slb_cv_u32(&cv, "code", 301, 301, 308, &code)))
        return rc;
    if (code == 304 || code == 305 || code == 306) {
        slb_cv_path(&cv, "code", where);
        return slb_cv_fail(acv->err, "invalid_value", where,
                           "%u is not a redirect; use 301, 302, 303, 307 or 308", code);
    }
    if ((rc = slb_cv_enum(&cv, "scheme", false, -1, schemes, &scheme)) ||
        (rc = str_dup(&cv, "host", 256, &r->redir_host)) ||
        (rc = slb_cv_u32(&cv, "port", 0, 1, 65535, &port)) ||
        (rc = str_dup(&cv, "path", MAX_TEXT, &r->redir_path)) ||
        (rc = str_dup(&cv, "query", MAX_TEXT, &r->redir_query)))
        return rc;
    r->code = (uint16_t)code;
    r->redir_port = (uint16_t)port;
    if (scheme >= 0 && !(r->redir_scheme = strdup(schemes[scheme])))
        return slb_cv_oom(acv->err);
    if (r->redir_host) {
        slb_cv_path(&cv, "host", where);
        if (!slb_cv_hostname_ok(r->redir_host, false))
            return slb_cv_fail(acv->err, "invalid_value", where, "\"%.100s\" is not a host name",
                               r->redir_host);
        for (char *p = r->redir_host; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    }
    if (r->redir_path &&
        (r->redir_path[0] != '/' || !uri_part_ok(r->redir_path) || strchr(r->redir_path, '?'))) {
        slb_cv_path(&cv, "path", where);
        return slb_cv_fail(acv->err, "invalid_value", where,
                           "\"%.100s\" must start with '/', without '?', '#', spaces or control "
                           "characters",
                           r->redir_path);
    }
    if (r->redir_query && !uri_part_ok(r->redir_query)) {
        slb_cv_path(&cv, "query", where);
        return slb_cv_fail(acv->err, "invalid_value", where,
                           "must be without '#', spaces or control characters (\"\" drops the "
                           "request's query)");
    }
    if (!r->redir_scheme && !r->redir_host && !r->redir_port && !r->redir_path && !r->redir_query)
        return slb_cv_fail(acv->err, "invalid_value", self,
                           "sets none of \"scheme\", \"host\", \"port\", \"path\", \"query\": it "
                           "would send the client back to the same address");
    json_t *o = json_object();
    int bad = !o || slb_cv_put(n, "redirect", o);
    bad |= slb_cv_put(o, "code", json_integer(code));
    if (r->redir_scheme)
        bad |= slb_cv_put(o, "scheme", json_string(r->redir_scheme));
    if (r->redir_host)
        bad |= slb_cv_put(o, "host", json_string(r->redir_host));
    if (r->redir_port)
        bad |= slb_cv_put(o, "port", json_integer(r->redir_port));
    if (r->redir_path)
        bad |= slb_cv_put(o, "path", json_string(r->redir_path));
    if (r->redir_query)
        bad |= slb_cv_put(o, "query", json_string(r->redir_query));
    return bad ? slb_cv_oom(acv->err) : 0;
}

static int fixed_parse(const struct slb_cv *acv, struct slb_rule_cfg *r, json_t *n)
{
    char self[SLB_CV_PATH], where[SLB_CV_PATH];
    struct slb_cv cv;
    uint32_t code;
    slb_cv_path(acv, "fixed_response", self);
    int rc =
        slb_cv_open(&cv, slb_cv_get(acv, "fixed_response"), self, "a fixed response", acv->err);
    if (rc || (rc = slb_cv_keys(&cv, fixed_keys)) ||
        (rc = slb_cv_u32(&cv, "code", 0, 200, 599, &code)))
        return rc;
    slb_cv_path(&cv, "code", where);
    if (!slb_cv_get(&cv, "code"))
        return slb_cv_fail(acv->err, "missing_field", where,
                           "the field \"code\" is required (200 to 599)");
    if (code == 204 || code == 205 || code == 304)
        return slb_cv_fail(acv->err, "invalid_value", where,
                           "%u responses carry no body; use another code", code);
    const char *ct;
    if ((rc = slb_cv_str(&cv, "content_type", false, "text/plain", 128, &ct)))
        return rc;
    slb_cv_path(&cv, "content_type", where);
    if (!*ct || !field_value_ok(ct))
        return slb_cv_fail(acv->err, "invalid_value", where,
                           "expected a media type such as \"text/plain\"");
    const json_t *body = slb_cv_get(&cv, "body");
    slb_cv_path(&cv, "body", where);
    if (body && !json_is_string(body))
        return slb_cv_fail(acv->err, "wrong_type", where, "expected a string, got %s",
                           slb_cv_type_name(body));
    const char *b = body ? json_string_value(body) : "";
    size_t blen = body ? json_string_length(body) : 0;
    if (blen > SLB_RULE_BODY_MAX)
        return slb_cv_fail(acv->err, "invalid_value", where, "is %zu bytes; at most %d are allowed",
                           blen, SLB_RULE_BODY_MAX);
    r->code = (uint16_t)code;
    if (!(r->content_type = strdup(ct)) || !(r->body = malloc(blen + 1)))
        return slb_cv_oom(acv->err);
    memcpy(r->body, b, blen);
    r->body[blen] = '\0';
    r->body_len = blen;
    json_t *o = json_object();
    int bad = !o || slb_cv_put(n, "fixed_response", o);
    bad |= slb_cv_put(o, "code", json_integer(code));
    bad |= slb_cv_put(o, "content_type", json_string(ct));
    bad |= slb_cv_put(o, "body", json_stringn(b, blen));
    return bad ? slb_cv_oom(acv->err) : 0;
}

static int action_parse(const struct slb_cv *rcv, struct slb_rule_cfg *r, json_t *rn)
{
    char self[SLB_CV_PATH], where[SLB_CV_PATH];
    struct slb_cv cv;
    slb_cv_path(rcv, "action", self);
    if (!slb_cv_get(rcv, "action"))
        return slb_cv_fail(rcv->err, "missing_field", self,
                           "the field \"action\" is required: \"forward\", \"redirect\" or "
                           "\"fixed_response\"");
    int rc = slb_cv_open(&cv, slb_cv_get(rcv, "action"), self, "an action", rcv->err);
    if (rc || (rc = slb_cv_keys(&cv, action_keys)))
        return rc;
    static const char *const kinds[] = {"forward", "redirect", "fixed_response"};
    int kind = -1;
    for (int k = 0; k < 3; k++) {
        if (!slb_cv_get(&cv, kinds[k]))
            continue;
        if (kind >= 0) {
            slb_cv_path(&cv, kinds[k], where);
            return slb_cv_fail(rcv->err, "conflicting_actions", where,
                               "a rule has one action; \"%s\" and \"%s\" are both given",
                               kinds[kind], kinds[k]);
        }
        kind = k;
    }
    if (kind < 0)
        return slb_cv_fail(rcv->err, "missing_field", self,
                           "needs one of \"forward\", \"redirect\", \"fixed_response\"");
    for (int k = 0; kind != 0 && k < 2; k++) {
        const char *key = k ? "remove_request_headers" : "set_request_headers";
        if (!slb_cv_get(&cv, key))
            continue;
        slb_cv_path(&cv, key, where);
        return slb_cv_fail(rcv->err, "conflicting_actions", where,
                           "applies only to \"forward\": a %s is answered by slbd",
                           kind == 1 ? "redirect" : "fixed response");
    }
    json_t *n = json_object();
    if (!n || slb_cv_put(rn, "action", n))
        return slb_cv_oom(rcv->err);
    r->action = (enum slb_rule_action)kind;
    if (kind == 1)
        return redirect_parse(&cv, r, n);
    if (kind == 2)
        return fixed_parse(&cv, r, n);
    if ((rc = forward_parse(&cv, r, n)) || (rc = set_headers_parse(&cv, r, n)) ||
        (rc = remove_headers_parse(&cv, r, n)))
        return rc;
    return 0;
}

int slb_cv_rules(const struct slb_cv *lis, struct slb_listener_cfg *l, json_t **norm)
{
    const json_t *arr;
    char base[SLB_CV_PATH], path[SLB_CV_PATH];
    *norm = NULL;
    int rc = slb_cv_array(lis, "rules", SLB_RULES_MAX, &arr);
    if (rc)
        return rc;
    json_t *list = json_array();
    if (!list)
        return slb_cv_oom(lis->err);
    size_t n = arr ? json_array_size(arr) : 0;
    if (n && !(l->rules = calloc(n, sizeof(*l->rules)))) {
        rc = slb_cv_oom(lis->err);
        goto fail;
    }
    slb_cv_path(lis, "rules", base);
    for (size_t i = 0; i < n; i++) {
        struct slb_rule_cfg *r = &l->rules[i];
        struct slb_cv cv;
        json_t *rn = json_object();
        slb_cv_index(path, base, i);
        l->nrules = i + 1;
        if (!rn || json_array_append_new(list, rn)) {
            rc = slb_cv_oom(lis->err);
            goto fail;
        }
        if ((rc = slb_cv_open(&cv, json_array_get(arr, i), path, "a rule", lis->err)) ||
            (rc = slb_cv_keys(&cv, rule_keys)) || (rc = slb_cv_name(&cv, "name", true, r->name)))
            goto fail;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(l->rules[j].name, r->name) != 0)
                continue;
            char where[SLB_CV_PATH];
            slb_cv_path(&cv, "name", where);
            rc = slb_cv_fail(lis->err, "duplicate_name", where,
                             "a rule named \"%s\" already exists (rules[%zu])", r->name, j);
            goto fail;
        }
        if (slb_cv_put(rn, "name", json_string(r->name))) {
            rc = slb_cv_oom(lis->err);
            goto fail;
        }
        if ((rc = match_parse(&cv, r, rn)) || (rc = action_parse(&cv, r, rn)))
            goto fail;
        uint32_t *const vals[] = {&r->requests_per_s};
        json_t *limits;
        if ((rc = slb_cv_limits(&cv, rule_limit_keys, rule_limit_max, vals, &limits)))
            goto fail;
        if (limits && slb_cv_put(rn, "limits", limits)) {
            rc = slb_cv_oom(lis->err);
            goto fail;
        }
    }
    *norm = list;
    return 0;
fail:
    json_decref(list);
    return rc;
}

int slb_cv_rules_refs(const struct slb_config *cfg, const struct slb_listener_cfg *l,
                      const char *path, struct slb_err *err)
{
    char where[SLB_CV_PATH], base[SLB_CV_PATH], a[SLB_CV_PATH], b[SLB_CV_PATH];
    for (size_t i = 0; i < l->nrules; i++) {
        const struct slb_rule_cfg *r = &l->rules[i];
        for (size_t k = 0; k < r->nforward; k++) {
            if (slb_config_group(cfg, r->forward[k].group))
                continue;
            slb_cv_join(base, path, "rules");
            slb_cv_index(a, base, i);
            slb_cv_join(b, a, "action");
            slb_cv_join(base, b, "forward");
            slb_cv_index(a, base, k);
            slb_cv_join(where, a, "group");
            return slb_cv_fail(err, "unknown_group", where,
                               "no backend group named \"%s\" exists; create it first or fix "
                               "the name",
                               r->forward[k].group);
        }
    }
    return 0;
}
