/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for forwarding rules: the path normalizer (src/http/normalize.c) and the
 * rule lookup (src/http/rules.c). Input: lines "method", "host", "request target", "client
 * address", then header lines "name: value". Checks that a normalized path is in normal form
 * (no empty, "." or ".." segment, no escaped unreserved character or slash) and a fixed point;
 * that the indexed lookup picks exactly the rule a plain scan of the list in order picks; and
 * that a redirect's Location carries nothing but URL characters. Input that parses as an
 * HTTP/1.x request head also goes through slb_rule_req_from_msg and the same lookup check. */
#include "config/validate.h"
#include "http/normalize.h"
#include "http/rules.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_rules: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Rules of every index kind, overlapping so that order matters. */
static const char rules_json[] =
    "[{'name':'m','match':{'methods':['DELETE']},'action':{'forward':'g'}},"
    "{'name':'h1','match':{'host':'a.example','path_prefix':'/v1/'},'action':{'forward':'g'}},"
    "{'name':'w','match':{'host':'*.example','methods':['POST']},'action':{'forward':'g'}},"
    "{'name':'p','match':{'path':'/admin'},'action':{'fixed_response':{'code':403}}},"
    "{'name':'pp','match':{'path_prefix':'/admin/'},'action':{'fixed_response':{'code':403}}},"
    "{'name':'pp2','match':{'path_prefix':'/a'},'action':{'forward':'g'}},"
    "{'name':'re','match':{'path_regex':'^/(x+)+y$'},'action':{'forward':'g'}},"
    "{'name':'hd','match':{'headers':{'x-a':'1','x-b':{'regex':'^b+$'}}},"
    "'action':{'forward':'g'}},"
    "{'name':'q','match':{'query':{'k':'v w'}},'action':{'redirect':{'path':'/q'}}},"
    "{'name':'src','match':{'source':['10.0.0.0/8','::1']},"
    "'action':{'redirect':{'scheme':'https'}}},"
    "{'name':'h2','match':{'host':'b.example'},'action':{'redirect':{'host':'c.example'}}},"
    "{'name':'w2','match':{'host':'*.b.example'},'action':{'forward':'g'}},"
    "{'name':'e','match':{'path':'/e'},'action':{'forward':'g'}},"
    "{'name':'last','match':{'path_prefix':'/'},'action':{'redirect':{'query':''}}}]";

static struct slb_listener_cfg cfg;
static struct slb_rules *rules;

static void *resolve(void *arg, const char *name)
{
    return (void *)name;
}

static void setup(void)
{
    char text[sizeof(rules_json) + 200];
    snprintf(text, sizeof(text),
             "{'name':'l','protocol':'http','bind':'*:80','backend_group':'g','rules':%s}",
             rules_json);
    for (char *p = text; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_t *in = json_loads(text, 0, NULL), *norm = NULL;
    struct slb_err err;
    CHECK(in && slb_cv_listener(in, "", &cfg, &norm, &err) == 0);
    rules = slb_rules_build(cfg.rules, cfg.nrules, resolve, NULL, &err);
    CHECK(rules);
    json_decref(norm);
    json_decref(in);
}

static bool unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static void check_normal_form(const char *p, size_t len)
{
    CHECK(len >= 1 && p[0] == '/' && strlen(p) == len);
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '/') {
            CHECK(i + 1 == len || p[i + 1] != '/');
            const char *seg = p + i + 1;
            size_t n = strcspn(seg, "/");
            CHECK(!(n == 1 && seg[0] == '.') && !(n == 2 && seg[0] == '.' && seg[1] == '.'));
        }
        CHECK((unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f && p[i] != '\\');
        if (p[i] == '%') {
            CHECK(i + 2 < len && isxdigit((unsigned char)p[i + 1]) &&
                  isxdigit((unsigned char)p[i + 2]) && !islower((unsigned char)p[i + 1]) &&
                  !islower((unsigned char)p[i + 2]));
            unsigned v = (unsigned)strtoul((char[]){p[i + 1], p[i + 2], 0}, NULL, 16);
            CHECK(!unreserved((unsigned char)v) && v != '/' && v != '\\' && v != 0);
        }
    }
}

static bool header_get(const void *arg, const char *name, size_t i, struct slb_slice *value)
{
    const char *p = arg;
    size_t nl = strlen(name);
    while (*p) {
        const char *end = strchr(p, '\n');
        end = end ? end : p + strlen(p);
        if ((size_t)(end - p) > nl + 1 && strncasecmp(p, name, nl) == 0 && p[nl] == ':' &&
            i-- == 0) {
            value->p = p + nl + 1;
            value->len = (size_t)(end - value->p);
            return true;
        }
        p = *end ? end + 1 : end;
    }
    return false;
}

/* The indexed lookup and a scan of the list in order pick the same rule. */
static const struct slb_rule *lookup_checked(const struct slb_rule_req *req)
{
    const struct slb_rule *got = slb_rules_match(rules, req), *want = NULL;
    for (size_t i = 0; i < slb_rules_count(rules) && !want; i++)
        if (slb_rule_holds(rules, slb_rules_get(rules, i), req))
            want = slb_rules_get(rules, i);
    if (got != want)
        fprintf(stderr, "fuzz_rules: lookup found %s, a scan in order finds %s\n",
                got ? got->cfg->name : "none", want ? want->cfg->name : "none");
    CHECK(got == want);
    return got;
}

/* Input that parses as a request head: the facts the proxy will take from it. */
static void check_head(const uint8_t *data, size_t size)
{
    static struct slb_http_msg m;
    if (slb_http_parse_request((const char *)data, size, NULL, &m) <= 0)
        return;
    char *path = malloc(m.target.len + 2);
    CHECK(path);
    struct slb_rule_req req;
    if (slb_rule_req_from_msg(&req, &m, NULL, path) == 0) {
        CHECK(req.path.len <= m.target.len + 1);
        if (req.path.len)
            check_normal_form(req.path.p, req.path.len);
        lookup_checked(&req);
    }
    free(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!rules)
        setup();
    check_head(data, size);
    char *text = malloc(size + 1);
    CHECK(text);
    memcpy(text, data, size);
    text[size] = '\0';
    char *line[4] = {"", "", "", ""}, *rest = text;
    for (int i = 0; i < 4 && rest; i++) {
        line[i] = rest;
        rest = strchr(rest, '\n');
        if (rest)
            *rest++ = '\0';
    }
    const char *target = line[2];
    size_t plen = strcspn(target, "?");
    char *path = malloc(plen + 1), *again = malloc(plen + 1);
    CHECK(path && again);
    size_t len, len2;
    if (slb_path_normalize(target, plen, path, &len) == 0) {
        CHECK(len <= plen);
        check_normal_form(path, len);
        CHECK(slb_path_normalize(path, len, again, &len2) == 0);
        CHECK(len2 == len && memcmp(path, again, len) == 0);

        struct sockaddr_storage ss = {0};
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        bool have_src = false;
        if (inet_pton(AF_INET, line[3], &s4->sin_addr) == 1) {
            ss.ss_family = AF_INET;
            have_src = true;
        } else if (inet_pton(AF_INET6, line[3], &s6->sin6_addr) == 1) {
            ss.ss_family = AF_INET6;
            have_src = true;
        }
        const char *q = target[plen] ? target + plen + 1 : "";
        struct slb_rule_req req = {
            .method = {line[0], strlen(line[0])},
            .host = {line[1], strlen(line[1])},
            .path = {path, len},
            .query = {q, strlen(q)},
            .source = have_src ? &ss : NULL,
            .header = header_get,
            .header_arg = rest ? rest : "",
        };
        const struct slb_rule *got = lookup_checked(&req);
        if (got && got->cfg->action == SLB_RULE_REDIRECT) {
            char loc[2048];
            int n = slb_rule_location(got, &req, size & 1, loc, sizeof(loc));
            CHECK(n < 0 || (size_t)n == strlen(loc));
            for (int i = 0; i < n; i++)
                CHECK((unsigned char)loc[i] > 0x20 && (unsigned char)loc[i] < 0x7f &&
                      loc[i] != '#');
        }
        if (got && got->cfg->action == SLB_RULE_FORWARD)
            CHECK(slb_rule_pick(got, (uint32_t)size * 2654435761u) < got->cfg->nforward);
    }
    free(path);
    free(again);
    free(text);
    return 0;
}
