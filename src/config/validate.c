/* SPDX-License-Identifier: Apache-2.0 */
/* Field readers for the configuration validator: each reports the JSON path, a stable code and
 * a sentence that says what is allowed, so config.json, the admin API and `slbctl apply` give
 * identical errors. */
#include "config/validate.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int slb_cv_fail(struct slb_err *err, const char *code, const char *where, const char *fmt, ...)
{
    char msg[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!where || !*where)
        return slb_err_set(err, SLB_CV_STATUS, code, "", "%s", msg);
    return slb_err_set(err, SLB_CV_STATUS, code, where, "%s: %s", where, msg);
}

void slb_cv_join(char *dst, const char *prefix, const char *key)
{
    if (!prefix || !*prefix)
        snprintf(dst, SLB_CV_PATH, "%s", key);
    else
        snprintf(dst, SLB_CV_PATH, "%s.%s", prefix, key);
}

void slb_cv_member(char *dst, const char *prefix, const char *key)
{
    /* Truncation only shortens a message; the return value is checked to say so to GCC. */
    if (snprintf(dst, SLB_CV_PATH, "%s[\"%s\"]", prefix ? prefix : "", key) >= SLB_CV_PATH)
        memcpy(dst + SLB_CV_PATH - 4, "...", 4);
}

void slb_cv_index(char *dst, const char *prefix, size_t i)
{
    snprintf(dst, SLB_CV_PATH, "%s[%zu]", prefix ? prefix : "", i);
}

const char *slb_cv_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "an unknown value";
}

int slb_cv_open(struct slb_cv *cv, const json_t *v, const char *path, const char *what,
                struct slb_err *err)
{
    cv->obj = v;
    cv->path = path ? path : "";
    cv->err = err;
    if (!v || !json_is_object(v))
        return slb_cv_fail(err, "wrong_type", cv->path, "%s must be a JSON object, not %s", what,
                           v ? slb_cv_type_name(v) : "nothing");
    return 0;
}

int slb_cv_keys(const struct slb_cv *cv, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)cv->obj, key, v)
    {
        bool known = false;
        for (const char *const *a = allowed; *a && !known; a++)
            known = strcmp(*a, key) == 0;
        if (known)
            continue;
        /* Listing the allowed names turns a typo into a one-glance fix. */
        char list[300] = "";
        size_t used = 0;
        for (const char *const *a = allowed; *a; a++) {
            int w =
                snprintf(list + used, sizeof(list) - used, "%s%s", a == allowed ? "" : ", ", *a);
            if (w < 0 || (size_t)w >= sizeof(list) - used)
                break;
            used += (size_t)w;
        }
        char where[SLB_CV_PATH];
        slb_cv_path(cv, key, where);
        return slb_cv_fail(cv->err, "unknown_field", where, "unknown field \"%.60s\" (allowed: %s)",
                           key, list);
    }
    return 0;
}

const json_t *slb_cv_get(const struct slb_cv *cv, const char *key)
{
    return json_object_get(cv->obj, key);
}

void slb_cv_path(const struct slb_cv *cv, const char *key, char *dst)
{
    slb_cv_join(dst, cv->path, key);
}

static int cv_missing(const struct slb_cv *cv, const char *key)
{
    char where[SLB_CV_PATH];
    slb_cv_path(cv, key, where);
    return slb_cv_fail(cv->err, "missing_field", where, "the field \"%s\" is required", key);
}

static int cv_wrong(const struct slb_cv *cv, const char *key, const char *expected, const json_t *v)
{
    char where[SLB_CV_PATH];
    slb_cv_path(cv, key, where);
    return slb_cv_fail(cv->err, "wrong_type", where, "expected %s, got %s", expected,
                       slb_cv_type_name(v));
}

int slb_cv_int(const struct slb_cv *cv, const char *key, bool required, json_int_t def,
               json_int_t min, json_int_t max, json_int_t *out)
{
    const json_t *v = slb_cv_get(cv, key);
    if (!v) {
        if (required)
            return cv_missing(cv, key);
        *out = def;
        return 0;
    }
    /* Reals are refused even when integral ("5.0"): the normalized form must not change type,
     * and a fraction in a count or a timeout is a mistake worth pointing out. */
    if (!json_is_integer(v))
        return cv_wrong(cv, key, "an integer", v);
    json_int_t n = json_integer_value(v);
    if (n < min || n > max) {
        char where[SLB_CV_PATH];
        slb_cv_path(cv, key, where);
        return slb_cv_fail(cv->err, "invalid_value", where, "%lld is out of range (%lld-%lld)",
                           (long long)n, (long long)min, (long long)max);
    }
    *out = n;
    return 0;
}

int slb_cv_u32(const struct slb_cv *cv, const char *key, uint32_t def, uint32_t min, uint32_t max,
               uint32_t *out)
{
    json_int_t n;
    int rc = slb_cv_int(cv, key, false, def, min, max, &n);
    if (rc == 0)
        *out = (uint32_t)n;
    return rc;
}

int slb_cv_bool(const struct slb_cv *cv, const char *key, bool def, bool *out)
{
    const json_t *v = slb_cv_get(cv, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return cv_wrong(cv, key, "true or false", v);
    *out = json_is_true(v);
    return 0;
}

int slb_cv_str(const struct slb_cv *cv, const char *key, bool required, const char *def,
               size_t size, const char **out)
{
    const json_t *v = slb_cv_get(cv, key);
    if (!v) {
        if (required)
            return cv_missing(cv, key);
        *out = def;
        return 0;
    }
    if (!json_is_string(v))
        return cv_wrong(cv, key, "a string", v);
    const char *s = json_string_value(v);
    /* An embedded NUL would silently cut the value short everywhere C sees it. */
    if (strlen(s) != json_string_length(v) || strlen(s) >= size) {
        char where[SLB_CV_PATH];
        slb_cv_path(cv, key, where);
        if (strlen(s) != json_string_length(v))
            return slb_cv_fail(cv->err, "invalid_value", where, "must not contain NUL bytes");
        return slb_cv_fail(cv->err, "invalid_value", where,
                           "is too long (%zu characters, at most %zu allowed)", strlen(s),
                           size - 1);
    }
    *out = s;
    return 0;
}

int slb_cv_enum(const struct slb_cv *cv, const char *key, bool required, int def,
                const char *const *names, int *out)
{
    const char *s;
    int rc = slb_cv_str(cv, key, required, NULL, 256, &s);
    if (rc)
        return rc;
    if (!s) {
        *out = def;
        return 0;
    }
    char list[256] = "";
    size_t used = 0;
    for (int i = 0; names[i]; i++) {
        if (strcmp(names[i], s) == 0) {
            *out = i;
            return 0;
        }
        int w = snprintf(list + used, sizeof(list) - used, "%s\"%s\"", i ? ", " : "", names[i]);
        if (w > 0 && (size_t)w < sizeof(list) - used)
            used += (size_t)w;
    }
    char where[SLB_CV_PATH];
    slb_cv_path(cv, key, where);
    return slb_cv_fail(cv->err, "invalid_value", where, "\"%s\" is not one of %s", s, list);
}

int slb_cv_name(const struct slb_cv *cv, const char *key, bool required, char *dst)
{
    const char *s;
    int rc = slb_cv_str(cv, key, required, "", SLB_NAME_MAX, &s);
    if (rc)
        return rc;
    if (!required && !*s) {
        dst[0] = '\0';
        return 0;
    }
    if (!slb_config_name_ok(s)) {
        char where[SLB_CV_PATH];
        slb_cv_path(cv, key, where);
        return slb_cv_fail(cv->err, "invalid_value", where,
                           "\"%.80s\" is not a valid name (1-63 characters of A-Z, a-z, 0-9, "
                           "'.', '_' and '-', not \".\" or \"..\")",
                           s);
    }
    snprintf(dst, SLB_NAME_MAX, "%s", s);
    return 0;
}

int slb_cv_array(const struct slb_cv *cv, const char *key, size_t max, const json_t **out)
{
    const json_t *v = slb_cv_get(cv, key);
    *out = NULL;
    if (!v)
        return 0;
    if (!json_is_array(v))
        return cv_wrong(cv, key, "an array", v);
    if (json_array_size(v) > max) {
        char where[SLB_CV_PATH];
        slb_cv_path(cv, key, where);
        return slb_cv_fail(cv->err, "invalid_value", where,
                           "has %zu entries; at most %zu are allowed", json_array_size(v), max);
    }
    *out = v;
    return 0;
}

bool slb_cv_hostname_ok(const char *s, bool allow_wildcard)
{
    size_t n = strlen(s);
    if (allow_wildcard && n > 2 && s[0] == '*' && s[1] == '.') {
        s += 2;
        n -= 2;
    }
    if (n == 0 || n > 253)
        return false;
    size_t label = 0;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        if (!isalnum(c) && c != '-' && c != '_')
            return false;
        if (++label > 63)
            return false;
    }
    /* A trailing dot (fully qualified form) is fine; an empty middle label is not. */
    return label > 0 || (n > 1 && s[n - 1] == '.');
}

/* Decimal port 1..65535 without sign, spaces or leading "+". */
static int cv_port(const char *p, uint16_t *port, char *why)
{
    if (!*p) {
        snprintf(why, 128, "the port is missing (expected ADDR:PORT)");
        return SLB_EINVAL;
    }
    unsigned long v = 0;
    for (const char *q = p; *q; q++) {
        if (*q < '0' || *q > '9') {
            snprintf(why, 128, "port \"%.20s\" is not a number", p);
            return SLB_EINVAL;
        }
        if (v < 1000000)
            v = v * 10 + (unsigned long)(*q - '0');
    }
    if (v < 1 || v > 65535) {
        snprintf(why, 128, "port %s%lu is out of range (1-65535)", v >= 1000000 ? ">" : "", v);
        return SLB_EINVAL;
    }
    *port = (uint16_t)v;
    return 0;
}

int slb_cv_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *why)
{
    char host[64];
    const char *port;
    bool v6 = false;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':') {
            snprintf(why, 128, "an IPv6 address must be written as [ADDR]:PORT");
            return SLB_EINVAL;
        }
        if ((size_t)(end - s - 1) >= sizeof(host)) {
            snprintf(why, 128, "the address is too long");
            return SLB_EINVAL;
        }
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = '\0';
        port = end + 2;
        v6 = true;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) {
            snprintf(why, 128, "expected ADDR:PORT, e.g. 0.0.0.0:80, [::]:443 or *:80");
            return SLB_EINVAL;
        }
        if ((size_t)(colon - s) >= sizeof(host)) {
            snprintf(why, 128, "the address is too long");
            return SLB_EINVAL;
        }
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
        port = colon + 1;
        if (strchr(host, ':')) {
            snprintf(why, 128, "an IPv6 address must be written in brackets, e.g. [::1]:443");
            return SLB_EINVAL;
        }
    }
    uint16_t p;
    if (cv_port(port, &p, why))
        return SLB_EINVAL;
    memset(ss, 0, sizeof(*ss));
    if (v6) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1) {
            snprintf(why, 128, "\"%.64s\" is not an IPv6 address", host);
            return SLB_EINVAL;
        }
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(p);
        *len = sizeof(*a6);
        return 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    if (strcmp(host, "*") == 0) {
        a4->sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1) {
        snprintf(why, 128,
                 "\"%.40s\" is not an IPv4 address (use [ADDR]:PORT for IPv6 or *:PORT for "
                 "all addresses)",
                 host);
        return SLB_EINVAL;
    }
    a4->sin_family = AF_INET;
    a4->sin_port = htons(p);
    *len = sizeof(*a4);
    return 0;
}

int slb_cv_cidr(const char *s, struct slb_cidr *out, char *why)
{
    char addr[64];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen == 0 || alen >= sizeof(addr)) {
        snprintf(why, 128, "\"%.64s\" is not an IP address or CIDR block", s);
        return SLB_EINVAL;
    }
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    memset(out, 0, sizeof(*out));
    unsigned max;
    if (inet_pton(AF_INET, addr, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        snprintf(why, 128, "\"%.64s\" is not an IPv4 or IPv6 address", addr);
        return SLB_EINVAL;
    }
    unsigned prefix = max;
    if (slash) {
        const char *p = slash + 1;
        if (!*p || strlen(p) > 3 || strspn(p, "0123456789") != strlen(p)) {
            snprintf(why, 128, "the prefix length after '/' in \"%.64s\" is not a number", s);
            return SLB_EINVAL;
        }
        prefix = (unsigned)atoi(p);
        if (prefix > max) {
            snprintf(why, 128, "prefix length %u is out of range (0-%u)", prefix, max);
            return SLB_EINVAL;
        }
    }
    /* Host bits set usually mean a typo in the address or the length; refuse rather than
     * silently widen or narrow what the ACL matches. */
    for (unsigned bit = prefix; bit < max; bit++) {
        if (out->addr[bit / 8] & (0x80u >> (bit % 8))) {
            snprintf(why, 128, "\"%.64s\" has bits set after the /%u prefix", s, prefix);
            return SLB_EINVAL;
        }
    }
    out->prefix = (uint8_t)prefix;
    /* An IPv4-mapped entry (::ffff:a.b.c.d[/96-128]) means IPv4 clients: store it as the IPv4
     * block so it matches them on an IPv4 socket as well as mapped on a dual-stack one. */
    if (out->family == AF_INET6 && prefix >= 96 &&
        IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)(const void *)out->addr)) {
        memmove(out->addr, out->addr + 12, 4);
        memset(out->addr + 4, 0, 12);
        out->family = AF_INET;
        out->prefix = (uint8_t)(prefix - 96);
    }
    return 0;
}

int slb_cv_put(json_t *obj, const char *key, json_t *v)
{
    return json_object_set_new(obj, key, v) ? -1 : 0;
}

int slb_cv_oom(struct slb_err *err)
{
    slb_err_set(err, 500, "internal", "", "out of memory while building the configuration");
    return -ENOMEM;
}
