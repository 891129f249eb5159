/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of forwarding rules (src/http/rules.c) and the path they match on
 * (src/http/normalize.c): every condition and action, first-match order through the indexes,
 * and paths shaped to walk around a rule. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "config/validate.h"
#include "http/normalize.h"
#include "http/rules.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- the normalizer -------------------------------------------------------------------------*/

/* The normalized form of in, or "!" when it is refused. */
static const char *norm(const char *in)
{
    static char out[1024];
    size_t len;
    if (slb_path_normalize(in, strlen(in), out, &len))
        return "!";
    assert_int_equal(len, strlen(out));
    assert_true(len <= strlen(in));
    return out;
}

static void test_normalize(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"/", "/"},
        {"/a/b", "/a/b"},
        {"/a/b/", "/a/b/"},
        /* dot segments, raw and escaped, never above the root */
        {"/v1/../admin", "/admin"},
        {"/v1/./admin", "/v1/admin"},
        {"/a/b/..", "/a/"},
        {"/a/b/.", "/a/b/"},
        {"/..", "/"},
        {"/../../admin", "/admin"},
        {"/%2e%2e/admin", "/admin"},
        {"/public/%2E%2E/admin", "/admin"},
        {"/public/.%2e/admin", "/admin"},
        {"/%2e/admin", "/admin"},
        {"/a/...", "/a/..."},
        {"/a/..b", "/a/..b"},
        /* slashes merged */
        {"//admin", "/admin"},
        {"/public//..//admin", "/admin"}, /* merged first, as nginx and most servers do */
        {"///", "/"},
        /* unreserved characters decoded, other escapes kept with upper-case digits */
        {"/%61dmin", "/admin"},
        {"/%41%7e%2d%5f", "/A~-_"},
        {"/a%3ab", "/a%3Ab"},
        {"/a%20b", "/a%20b"},
        {"/a%25b", "/a%25b"},
        {"/%C3%A9", "/%C3%A9"},
        /* case is the path's own */
        {"/ADMIN", "/ADMIN"},
        {"/a;b=c", "/a;b=c"},
        /* refused */
        {"", "!"},
        {"admin", "!"},
        {"*", "!"},
        {"/%2fadmin", "!"},
        {"/a%2Fb", "!"},
        {"/a%5cb", "!"},
        {"/a\\b", "!"},
        {"/a%00", "!"},
        {"/a%", "!"},
        {"/a%4", "!"},
        {"/a%zz", "!"},
        {"/a b", "!"},
        {"/a\tb", "!"},
        {"/a#b", "!"},
        {"/a\x7f", "!"},
        {"/\xc3\xa9", "!"},
        {"/..;/admin", "!"},
        {"/public/.;x/admin", "!"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = norm(cases[i][0]);
        if (strcmp(got, cases[i][1]) != 0)
            fail_msg("normalize(\"%s\") = \"%s\", want \"%s\"", cases[i][0], got, cases[i][1]);
    }
    /* Normalizing a normalized path changes nothing. */
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i][1][0] != '/')
            continue;
        char once[1024];
        snprintf(once, sizeof(once), "%s", cases[i][1]);
        assert_string_equal(norm(once), once);
    }
}

/* --- building rules from JSON ---------------------------------------------------------------*/

static const char *const group_names[] = {"g", "api", "blue", "green", "admin", "web", NULL};

static void *resolve(void *arg, const char *name)
{
    (void)arg;
    for (size_t i = 0; group_names[i]; i++)
        if (strcmp(group_names[i], name) == 0)
            return (void *)group_names[i];
    return NULL;
}

struct fixture {
    struct slb_listener_cfg l;
    struct slb_rules *rules;
};

/* rules: the JSON list, with ' for ". */
static void fixture_build(struct fixture *f, const char *rules)
{
    char *text = NULL;
    assert_true(asprintf(&text,
                         "{'name':'l','protocol':'http','bind':'*:80','backend_group':'g',"
                         "'rules':%s}",
                         rules) > 0);
    for (char *p = text; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t jerr;
    json_t *in = json_loads(text, 0, &jerr);
    if (!in)
        fail_msg("bad test JSON: %s\n%s", jerr.text, text);
    json_t *n = NULL;
    struct slb_err err;
    if (slb_cv_listener(in, "", &f->l, &n, &err))
        fail_msg("%s", err.msg);
    f->rules = slb_rules_build(f->l.rules, f->l.nrules, resolve, NULL, &err);
    if (!f->rules)
        fail_msg("%s", err.msg);
    json_decref(n);
    json_decref(in);
    free(text);
}

static void fixture_free(struct fixture *f)
{
    slb_rules_free(f->rules);
    slb_cv_listener_deinit(&f->l);
}

/* A request: headers as "name: value\n" lines (names lower-case). */
struct treq {
    const char *method, *host, *target, *headers, *source;
};

static bool header_get(const void *arg, const char *name, size_t i, struct slb_slice *value)
{
    const char *p = arg;
    size_t nl = strlen(name);
    while (p && *p) {
        const char *end = strchr(p, '\n');
        if (strncmp(p, name, nl) == 0 && p[nl] == ':' && i-- == 0) {
            value->p = p + nl + 2;
            value->len = (size_t)(end - value->p);
            return true;
        }
        p = end + 1;
    }
    return false;
}

static char path_buf[1024];
static struct sockaddr_storage source_addr;

/* The request facts as the proxy would fill them; false when the path is refused. */
static bool facts(const struct treq *t, struct slb_rule_req *req)
{
    memset(req, 0, sizeof(*req));
    const char *target = t->target ? t->target : "/";
    const char *q = strchr(target, '?');
    size_t plen = q ? (size_t)(q - target) : strlen(target);
    size_t len;
    if (slb_path_normalize(target, plen, path_buf, &len))
        return false;
    req->method =
        (struct slb_slice){t->method ? t->method : "GET", strlen(t->method ? t->method : "GET")};
    req->host = (struct slb_slice){t->host ? t->host : "", t->host ? strlen(t->host) : 0};
    req->path = (struct slb_slice){path_buf, len};
    req->query = q ? (struct slb_slice){q + 1, strlen(q + 1)} : (struct slb_slice){"", 0};
    req->header = header_get;
    req->header_arg = t->headers ? t->headers : "";
    if (t->source) {
        memset(&source_addr, 0, sizeof(source_addr));
        if (strchr(t->source, ':')) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&source_addr;
            s6->sin6_family = AF_INET6;
            assert_int_equal(inet_pton(AF_INET6, t->source, &s6->sin6_addr), 1);
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&source_addr;
            s4->sin_family = AF_INET;
            assert_int_equal(inet_pton(AF_INET, t->source, &s4->sin_addr), 1);
        }
        req->source = &source_addr;
    }
    return true;
}

/* The name of the rule that wins, "-" for none, "!" for a refused path. */
static const char *winner(const struct fixture *f, const struct treq *t)
{
    struct slb_rule_req req;
    if (!facts(t, &req))
        return "!";
    const struct slb_rule *r = slb_rules_match(f->rules, &req);
    return r ? r->cfg->name : "-";
}

struct mcase {
    struct treq req;
    const char *want;
};

static void check(const struct fixture *f, const struct mcase *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *got = winner(f, &c[i].req);
        if (strcmp(got, c[i].want) != 0)
            fail_msg("case %zu (%s %s host %s): got %s, want %s", i,
                     c[i].req.method ? c[i].req.method : "GET", c[i].req.target,
                     c[i].req.host ? c[i].req.host : "-", got, c[i].want);
    }
}
#define CHECK(f, cases) check(f, cases, sizeof(cases) / sizeof(cases[0]))

/* --- conditions -----------------------------------------------------------------------------*/

#define FWD(g) "'action':{'forward':'" g "'}"

static void test_issue_example(void **state)
{
    (void)state;
    struct fixture f;
    fixture_build(&f,
                  "[{'name':'api','match':{'host':'api.example.com','path_prefix':'/v1/'}," FWD(
                      "api") "},"
                             "{'name':'canary','match':{'host':'*.example.com'},"
                             "'action':{'forward':[{'group':'blue','weight':90},"
                             "{'group':'green','weight':10}]}},"
                             "{'name':'moved','match':{'path_prefix':'/old/'},"
                             "'action':{'redirect':{'code':301,'path':'/new/'}}},"
                             "{'name':'lb-health','match':{'path':'/lb-health'},"
                             "'action':{'fixed_response':{'code':200,'content_type':'text/plain',"
                             "'body':'ok'}}}]");
    static const struct mcase cases[] = {
        {{.host = "api.example.com", .target = "/v1/users"}, "api"},
        {{.host = "API.Example.COM:8443", .target = "/v1/users?x=1"}, "api"},
        {{.host = "api.example.com.", .target = "/v1/"}, "api"},
        {{.host = "api.example.com", .target = "/v2/users"}, "canary"},
        {{.host = "www.example.com", .target = "/v1/users"}, "canary"},
        {{.host = "a.b.example.com", .target = "/"}, "canary"},
        {{.host = "example.com", .target = "/"}, "-"},
        {{.host = "badexample.com", .target = "/old/x"}, "moved"},
        {{.host = "www.example.com", .target = "/old/x"}, "canary"}, /* order wins */
        {{.host = "other", .target = "/lb-health"}, "lb-health"},
        {{.host = "other", .target = "/lb-health/"}, "-"},
        {{.host = "other", .target = "/lb-healthy"}, "-"},
        {{.target = "/lb-health"}, "lb-health"},
    };
    CHECK(&f, cases);
    assert_int_equal(slb_rules_count(f.rules), 4);
    fixture_free(&f);
}

static void test_conditions(void **state)
{
    (void)state;
    struct fixture f;
    fixture_build(
        &f,
        "[{'name':'re','match':{'path_regex':'^/img/[0-9]+\\\\.png$'}," FWD(
            "web") "},"
                   "{'name':'m','match':{'methods':['DELETE','PUT'],'path_prefix':'/m/'}," FWD(
                       "web") "},"
                              "{'name':'hx','match':{'headers':{'X-Env':'prod'}}," FWD(
                                  "web") "},"
                                         "{'name':'hr','match':{'headers':{'user-agent':{'regex':'("
                                         "?i)curl/'}}}," FWD(
                                             "web") "},"
                                                    "{'name':'q','match':{'query':{'debug':'on "
                                                    "now','v':''}}," FWD(
                                                        "web") "},"
                                                               "{'name':'src','match':{'source':['"
                                                               "10.0.0.0/8','2001:db8::/32']}," FWD(
                                                                   "web") "},"
                                                                          "{'name':'all','match':{'"
                                                                          "host':'h.example','path'"
                                                                          ":'/x','methods':['GET'],"
                                                                          "'headers':{'a':'1','b':'"
                                                                          "2'},'query':{'k':'v'},'"
                                                                          "source':['192.0.2.1']}"
                                                                          "," FWD("web") "}]");
    static const struct mcase cases[] = {
        /* path_regex on the normalized path */
        {{.target = "/img/12.png"}, "re"},
        {{.target = "/img/12.png?x"}, "re"},
        {{.target = "/img/x/../12.png"}, "re"},
        {{.target = "/img/%31%32.png"}, "re"},
        {{.target = "/img/12xpng"}, "-"},
        {{.target = "/img/12.png/"}, "-"},
        /* methods: case-sensitive tokens */
        {{.method = "PUT", .target = "/m/1"}, "m"},
        {{.method = "DELETE", .target = "/m/1"}, "m"},
        {{.method = "GET", .target = "/m/1"}, "-"},
        {{.method = "put", .target = "/m/1"}, "-"},
        /* headers: names case-insensitive (the accessor is asked in lower case), values exact,
         * any occurrence */
        {{.target = "/", .headers = "x-env: prod\n"}, "hx"},
        {{.target = "/", .headers = "x-env: dev\nx-env: prod\n"}, "hx"},
        {{.target = "/", .headers = "x-env: Prod\n"}, "-"},
        {{.target = "/", .headers = "x-env: prod2\n"}, "-"},
        {{.target = "/", .headers = "user-agent: CURL/8.0\n"}, "hr"},
        {{.target = "/", .headers = "user-agent: wget\n"}, "-"},
        /* query: every pair named, values percent-decoded, '+' is not a space */
        {{.target = "/?debug=on%20now&v="}, "q"},
        {{.target = "/?v=&x=1&debug=on%20now"}, "q"},
        {{.target = "/?%64ebug=on%20now&v"}, "q"},
        {{.target = "/?debug=on+now&v="}, "-"},
        {{.target = "/?debug=on%20now"}, "-"},
        {{.target = "/?debug=on%20now&v=1"}, "-"},
        /* source */
        {{.target = "/", .source = "10.1.2.3"}, "src"},
        {{.target = "/", .source = "::ffff:10.1.2.3"}, "src"},
        {{.target = "/", .source = "2001:db8::1"}, "src"},
        {{.target = "/", .source = "11.0.0.1"}, "-"},
        {{.target = "/", .source = "2001:db9::1"}, "-"},
        {{.target = "/"}, "-"},
        /* all conditions must hold */
        {{.host = "h.example",
          .target = "/x?k=v",
          .headers = "a: 1\nb: 2\n",
          .source = "192.0.2.1"},
         "all"},
        {{.host = "h.example", .target = "/x?k=v", .headers = "a: 1\n", .source = "192.0.2.1"},
         "-"},
        {{.host = "h.example",
          .method = "POST",
          .target = "/x?k=v",
          .headers = "a: 1\nb: 2\n",
          .source = "192.0.2.1"},
         "-"},
        {{.host = "h.example",
          .target = "/x?k=w",
          .headers = "a: 1\nb: 2\n",
          .source = "192.0.2.1"},
         "-"},
        {{.host = "h.example",
          .target = "/x?k=v",
          .headers = "a: 1\nb: 2\n",
          .source = "192.0.2.2"},
         "-"},
    };
    CHECK(&f, cases);
    fixture_free(&f);
}

/* A rule for /admin holds for every spelling of /admin a backend could read as /admin. */
static void test_hostile_paths(void **state)
{
    (void)state;
    struct fixture f;
    fixture_build(&f, "[{'name':'admin','match':{'path_prefix':'/admin'},"
                      "'action':{'fixed_response':{'code':403,'body':'no'}}},"
                      "{'name':'admin-re','match':{'path_regex':'^/secret(/|$)'},"
                      "'action':{'fixed_response':{'code':403}}},"
                      "{'name':'v1','match':{'path_prefix':'/v1/'}," FWD("api") "}]");
    static const struct mcase cases[] = {
        {{.target = "/admin"}, "admin"},
        {{.target = "/admin/users"}, "admin"},
        {{.target = "/v1/../admin"}, "admin"},
        {{.target = "/v1/%2e%2e/admin"}, "admin"},
        {{.target = "/v1/%2E%2E/admin/"}, "admin"},
        {{.target = "/v1/.%2e/admin"}, "admin"},
        {{.target = "//admin"}, "admin"},
        {{.target = "/./admin"}, "admin"},
        {{.target = "/%61dmin"}, "admin"},
        {{.target = "/%61%64%6D%69%6E"}, "admin"},
        {{.target = "/v1/x/../../admin?y=1"}, "admin"},
        {{.target = "/../../../admin"}, "admin"},
        {{.target = "/v1//../admin"}, "admin"},
        {{.target = "/v1/../secret"}, "admin-re"},
        {{.target = "/v1/%2e%2e/%73ecret/x"}, "admin-re"},
        /* refused outright: no reading of these is safe for every backend */
        {{.target = "/v1/..%2Fadmin"}, "!"},
        {{.target = "/%2Fadmin"}, "!"},
        {{.target = "/v1%2F..%2Fadmin"}, "!"},
        {{.target = "/v1/..%5Cadmin"}, "!"},
        {{.target = "/v1/..\\admin"}, "!"},
        {{.target = "/v1/..;/admin"}, "!"},
        {{.target = "/admin%00.png"}, "!"},
        /* the v1 rule sees only what stays under /v1/ */
        {{.target = "/v1/users"}, "v1"},
        {{.target = "/v1/a/../users"}, "v1"},
        {{.target = "/v1/.."}, "-"},
        /* paths are case-sensitive: /ADMIN is another resource (use a path_regex with (?i) for
         * case-insensitive backends) */
        {{.target = "/ADMIN"}, "-"},
    };
    CHECK(&f, cases);
    fixture_free(&f);
}

/* The first rule in configuration order wins, whichever index each rule is filed in. */
static void test_order_across_indexes(void **state)
{
    (void)state;
    struct fixture f;
    fixture_build(
        &f,
        "[{'name':'any-get','match':{'methods':['HEAD']}," FWD(
            "g") "},"
                 "{'name':'suffix','match':{'host':'*.example.com','methods':['GET']}," FWD(
                     "g") "},"
                          "{'name':'prefix-long','match':{'path_prefix':'/a/b/'}," FWD(
                              "g") "},"
                                   "{'name':'prefix-short','match':{'path_prefix':'/a/'}," FWD(
                                       "g") "},"
                                            "{'name':'exact-path','match':{'path':'/a/b/c'}," FWD(
                                                "g") "},"
                                                     "{'name':'host','match':{'host':'x.example."
                                                     "com'}," FWD(
                                                         "g") "},"
                                                              "{'name':'host-2','match':{'host':'x."
                                                              "example.com','path':'/z'}," FWD(
                                                                  "g") "},"
                                                                       "{'name':'catch-all'," FWD(
                                                                           "g") "}]");
    static const struct mcase cases[] = {
        {{.method = "HEAD", .host = "x.example.com", .target = "/a/b/c"}, "any-get"},
        {{.host = "x.example.com", .target = "/a/b/c"}, "suffix"},
        {{.method = "POST", .host = "x.example.com", .target = "/a/b/c"}, "prefix-long"},
        {{.method = "POST", .host = "x.example.com", .target = "/a/c"}, "prefix-short"},
        {{.method = "POST", .host = "x.example.com", .target = "/z"}, "host"},
        {{.method = "POST", .host = "y.example.com", .target = "/z"}, "catch-all"},
        {{.method = "POST", .target = "/a/b"}, "prefix-short"},
        {{.method = "POST", .target = "/a"}, "catch-all"},
    };
    CHECK(&f, cases);
    fixture_free(&f);
}

/* 1,000 rules: each still found, and misses fall to the catch-all. */
static void test_many_rules(void **state)
{
    (void)state;
    size_t cap = 200000, len = 0;
    char *json = malloc(cap);
    assert_non_null(json);
    len += (size_t)snprintf(json + len, cap - len, "[");
    for (int i = 0; i < 999; i++) {
        const char *fmt = i % 3 == 0 ? "{'name':'r%d','match':{'host':'h%d.example'}," FWD("g") "},"
                          : i % 3 == 1
                              ? "{'name':'r%d','match':{'path_prefix':'/p%d/'}," FWD("g") "},"
                              : "{'name':'r%d','match':{'path':'/e%d'}," FWD("g") "},";
        len += (size_t)snprintf(json + len, cap - len, fmt, i, i);
    }
    snprintf(json + len, cap - len, "{'name':'last'," FWD("g") "}]");
    struct fixture f;
    fixture_build(&f, json);
    free(json);
    static const struct mcase cases[] = {
        {{.host = "h0.example", .target = "/"}, "r0"},
        {{.host = "H996.example", .target = "/p1/"}, "r1"},
        {{.target = "/p997/x"}, "r997"},
        {{.target = "/e998"}, "r998"},
        {{.target = "/e998/"}, "last"},
        {{.host = "h1.example", .target = "/p99"}, "last"},
    };
    CHECK(&f, cases);
    fixture_free(&f);
}

/* A pattern that backtracks without end is stopped by the match limit and does not match. */
static void test_regex_limits(void **state)
{
    (void)state;
    struct fixture f;
    fixture_build(&f, "[{'name':'slow','match':{'path_regex':'^/(a+)+$'}," FWD("g") "}]");
    char target[80] = "/";
    memset(target + 1, 'a', 60);
    strcat(target, "b");
    struct treq t = {.target = target};
    assert_string_equal(winner(&f, &t), "-");
    target[61] = '\0';
    assert_string_equal(winner(&f, &t), "slow");
    fixture_free(&f);
}

/* --- actions --------------------------------------------------------------------------------*/

static void test_weighted_pick(void **state)
{
    (void)state;
    struct fixture f;
    fixture_build(&f, "[{'name':'c','action':{'forward':[{'group':'blue','weight':90},"
                      "{'group':'g','weight':0},{'group':'green','weight':10}]}}]");
    struct slb_rule_req req;
    struct treq t = {.target = "/"};
    assert_true(facts(&t, &req));
    const struct slb_rule *r = slb_rules_match(f.rules, &req);
    assert_non_null(r);
    assert_int_equal(r->total_weight, 100);
    size_t n[3] = {0};
    for (uint32_t x = 0; x < 10000; x++)
        n[slb_rule_pick(r, x)]++;
    assert_int_equal(n[0], 9000);
    assert_int_equal(n[1], 0); /* weight 0 takes nothing */
    assert_int_equal(n[2], 1000);
    /* deterministic: the same hash always picks the same group */
    assert_int_equal(slb_rule_pick(r, 12345), slb_rule_pick(r, 12345));
    assert_int_equal(slb_rule_pick(r, 89), 0);
    assert_int_equal(slb_rule_pick(r, 90), 2);
    assert_int_equal(slb_rule_pick(r, UINT32_MAX), slb_rule_pick(r, UINT32_MAX % 100));
    /* targets resolve to the caller's group objects */
    assert_string_equal((const char *)r->groups[0], "blue");
    assert_string_equal((const char *)r->groups[2], "green");
    fixture_free(&f);
}

static void test_forward_headers(void **state)
{
    (void)state;
    struct fixture f;
    fixture_build(&f, "[{'name':'f','action':{'forward':'api','set_request_headers':"
                      "{'X-Route':'api','Host':'internal'},'remove_request_headers':['Cookie']}}]");
    const struct slb_rule_cfg *c = &f.l.rules[0];
    assert_int_equal(c->action, SLB_RULE_FORWARD);
    assert_int_equal(c->nset_headers, 2);
    assert_string_equal(c->set_headers[0].name, "x-route");
    assert_string_equal(c->set_headers[0].value, "api");
    assert_string_equal(c->set_headers[1].name, "host");
    assert_int_equal(c->nremove_headers, 1);
    assert_string_equal(c->remove_headers[0], "cookie");
    const struct slb_rule *r = slb_rules_get(f.rules, 0);
    assert_true(slb_rule_drops_header(r, (struct slb_slice){"COOKIE", 6}));
    assert_true(slb_rule_drops_header(r, (struct slb_slice){"X-Route", 7}));
    assert_true(slb_rule_drops_header(r, (struct slb_slice){"host", 4}));
    assert_false(slb_rule_drops_header(r, (struct slb_slice){"cookie2", 7}));
    assert_false(slb_rule_drops_header(r, (struct slb_slice){"accept", 6}));
    fixture_free(&f);
}

/* The Location for a redirect rule (the rule's index in the list) and a request. */
static const char *location(const struct fixture *f, size_t rule, const struct treq *t, bool tls)
{
    static char out[512];
    struct slb_rule_req req;
    assert_true(facts(t, &req));
    const struct slb_rule *r = slb_rules_match(f->rules, &req);
    assert_non_null(r);
    assert_int_equal(r->index, rule);
    int n = slb_rule_location(r, &req, tls, out, sizeof(out));
    if (n < 0)
        return "!";
    assert_int_equal((size_t)n, strlen(out));
    return out;
}

static void test_redirect_location(void **state)
{
    (void)state;
    struct fixture f;
    fixture_build(&f, "[{'name':'p','match':{'path_prefix':'/old/'},"
                      "'action':{'redirect':{'path':'/new/'}}},"
                      "{'name':'s','match':{'path_prefix':'/s/'},"
                      "'action':{'redirect':{'code':308,'scheme':'https'}}},"
                      "{'name':'h','match':{'path_prefix':'/h/'},"
                      "'action':{'redirect':{'code':302,'host':'Other.Example'}}},"
                      "{'name':'a','match':{'path_prefix':'/a/'},"
                      "'action':{'redirect':{'scheme':'http','host':'x.example','port':8080,"
                      "'path':'/b','query':'q=1'}}},"
                      "{'name':'q','match':{'path_prefix':'/q/'},"
                      "'action':{'redirect':{'query':''}}},"
                      "{'name':'port443','match':{'path_prefix':'/d/'},"
                      "'action':{'redirect':{'scheme':'https','port':443}}}]");
    assert_int_equal(f.l.rules[0].code, 301);
    assert_int_equal(f.l.rules[1].code, 308);
    struct treq t = {.host = "www.example.com:8080", .target = "/old/x?y=1"};
    assert_string_equal(location(&f, 0, &t, false), "http://www.example.com:8080/new/?y=1");
    t = (struct treq){.host = "www.example.com", .target = "/old/%61/../b"};
    assert_string_equal(location(&f, 0, &t, true), "https://www.example.com/new/");
    /* a new scheme drops the request's port */
    t = (struct treq){.host = "www.example.com:8080", .target = "/s/x?y"};
    assert_string_equal(location(&f, 1, &t, false), "https://www.example.com/s/x?y");
    t = (struct treq){.host = "[2001:db8::1]:80", .target = "/s/x"};
    assert_string_equal(location(&f, 1, &t, false), "https://[2001:db8::1]/s/x");
    /* a new host too */
    t = (struct treq){.host = "www.example.com:8443", .target = "/h/%7Ex"};
    assert_string_equal(location(&f, 2, &t, true), "https://other.example/h/~x");
    t = (struct treq){.host = "w", .target = "/a/c?z=2"};
    assert_string_equal(location(&f, 3, &t, true), "http://x.example:8080/b?q=1");
    t = (struct treq){.host = "w:443", .target = "/q/c?z=2"};
    assert_string_equal(location(&f, 4, &t, true), "https://w/q/c");
    t = (struct treq){.host = "w:8443", .target = "/d/c"};
    assert_string_equal(location(&f, 5, &t, false), "https://w/d/c");
    /* nothing a client shaped goes into the header unchecked: no host to keep, a bad port */
    t = (struct treq){.target = "/old/x"};
    assert_string_equal(location(&f, 0, &t, false), "!");
    t = (struct treq){.host = "w:80x", .target = "/old/x"};
    assert_string_equal(location(&f, 0, &t, false), "!");
    t = (struct treq){.host = "w:99999", .target = "/old/x"};
    assert_string_equal(location(&f, 0, &t, false), "!");
    t = (struct treq){.host = "w\r\nx: y", .target = "/old/x"};
    assert_string_equal(location(&f, 0, &t, false), "!");
    t = (struct treq){.host = "w", .target = "/old/x?a b"};
    assert_string_equal(location(&f, 0, &t, false), "!");
    fixture_free(&f);
}

static void test_responses(void **state)
{
    (void)state;
    struct fixture f;
    fixture_build(&f, "[{'name':'ok','match':{'path':'/lb-health'},"
                      "'action':{'fixed_response':{'code':200,'body':'ok'}}},"
                      "{'name':'gone','action':{'fixed_response':{'code':404,"
                      "'content_type':'application/json','body':'{}'}}}]");
    const struct slb_rule_cfg *c = &f.l.rules[0];
    assert_int_equal(c->action, SLB_RULE_FIXED);
    assert_string_equal(c->content_type, "text/plain");
    struct slb_hbuf out = {0};
    slb_rule_http1_response(&out, c->code, c->content_type, c->body, c->body_len, NULL, false,
                            false);
    slb_hbuf_put(&out, "", 1);
    assert_string_equal(out.p, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 2\r\n\r\nok");
    slb_hbuf_reset(&out);
    c = &f.l.rules[1];
    slb_rule_http1_response(&out, c->code, c->content_type, c->body, c->body_len, NULL, true, true);
    slb_hbuf_put(&out, "", 1);
    assert_string_equal(out.p, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                               "Content-Length: 2\r\nConnection: close\r\n\r\n");
    slb_hbuf_reset(&out);
    slb_rule_http1_response(&out, 308, NULL, NULL, 0, "https://x/", false, false);
    slb_hbuf_put(&out, "", 1);
    assert_string_equal(out.p, "HTTP/1.1 308 Permanent Redirect\r\nLocation: https://x/\r\n"
                               "Content-Length: 0\r\n\r\n");
    slb_hbuf_free(&out);
    fixture_free(&f);
}

/* The facts of a parsed request head, as the proxy will give them. */
static const char *msg_winner(const struct fixture *f, const char *raw)
{
    static struct slb_http_msg m;
    static char path[256];
    assert_true(slb_http_parse_request(raw, strlen(raw), NULL, &m) > 0);
    struct slb_rule_req req;
    if (slb_rule_req_from_msg(&req, &m, NULL, path))
        return "!";
    const struct slb_rule *r = slb_rules_match(f->rules, &req);
    return r ? r->cfg->name : "-";
}

static void test_facts_from_head(void **state)
{
    (void)state;
    struct fixture f;
    fixture_build(&f,
                  "[{'name':'hdr','match':{'headers':{'x-env':'prod'}}," FWD(
                      "g") "},"
                           "{'name':'api','match':{'host':'api.example','path_prefix':'/v1/',"
                           "'query':{'k':'v'}}," FWD(
                               "g") "},"
                                    "{'name':'root','match':{'path':'/'}," FWD(
                                        "g") "},"
                                             "{'name':'any-host','match':{'host':'*.example'}," FWD(
                                                 "g") "}]");
    assert_string_equal(msg_winner(&f, "GET /v1/%2e%2e/v1/x?k=v HTTP/1.1\r\n"
                                       "Host: API.example:8080\r\n\r\n"),
                        "api");
    /* Header names case-insensitive, any occurrence. */
    assert_string_equal(msg_winner(&f, "GET /x HTTP/1.1\r\nHost: a\r\nX-Env: dev\r\n"
                                       "x-ENV: prod\r\n\r\n"),
                        "hdr");
    /* An absolute-form target's authority wins over Host. */
    assert_string_equal(msg_winner(&f, "GET http://api.example/v1/y?k=v HTTP/1.1\r\n"
                                       "Host: other\r\n\r\n"),
                        "api");
    assert_string_equal(msg_winner(&f, "GET http://b.example?k=v HTTP/1.1\r\nHost: other\r\n"
                                       "\r\n"),
                        "root");
    /* No path: only conditions on other facts can hold. */
    assert_string_equal(msg_winner(&f, "OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n"),
                        "any-host");
    assert_string_equal(msg_winner(&f, "OPTIONS * HTTP/1.1\r\nHost: other\r\n\r\n"), "-");
    /* A path no reading of which is safe is refused. */
    assert_string_equal(msg_winner(&f, "GET /v1/..%2fadmin HTTP/1.1\r\nHost: a\r\n\r\n"), "!");
    fixture_free(&f);
}

static void test_build_errors(void **state)
{
    (void)state;
    struct slb_rule_cfg r = {.name = "x", .action = SLB_RULE_FORWARD};
    struct slb_rule_target t = {.group = "nope", .weight = 1};
    r.forward = &t;
    r.nforward = 1;
    struct slb_err err;
    assert_null(slb_rules_build(&r, 1, resolve, NULL, &err));
    assert_string_equal(err.code, "unknown_group");
    /* No rules: nothing matches, the listener's group serves. */
    struct slb_rules *none = slb_rules_build(NULL, 0, resolve, NULL, &err);
    assert_non_null(none);
    struct slb_rule_req req = {.path = {"/", 1}};
    assert_null(slb_rules_match(none, &req));
    assert_null(slb_rules_match(NULL, &req));
    slb_rules_free(none);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_issue_example),
        cmocka_unit_test(test_conditions),
        cmocka_unit_test(test_hostile_paths),
        cmocka_unit_test(test_order_across_indexes),
        cmocka_unit_test(test_many_rules),
        cmocka_unit_test(test_regex_limits),
        cmocka_unit_test(test_weighted_pick),
        cmocka_unit_test(test_forward_headers),
        cmocka_unit_test(test_redirect_location),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_facts_from_head),
        cmocka_unit_test(test_build_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
