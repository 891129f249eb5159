/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the configuration model (src/config/config.c, listener.c, group.c): invalid
 * documents with their exact error code and path, defaults, typed values and normalization. */
/* cmocka needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "config/config.h"
#include "lb/sched.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Documents are written with ' for " to keep the tables readable. */
static json_t *J(const char *text)
{
    char *s = strdup(text);
    assert_non_null(s);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t jerr;
    json_t *v = json_loads(s, JSON_DECODE_ANY, &jerr);
    if (!v)
        print_error("bad test JSON at %d:%d: %s\n%s\n", jerr.line, jerr.column, jerr.text, s);
    free(s);
    assert_non_null(v);
    return v;
}

/* Certificates the fake store knows: "demo" and "other" are server certificates, "ca1" a CA. */
static int fake_type_of(void *arg, const char *id)
{
    (void)arg;
    if (strcmp(id, "demo") == 0 || strcmp(id, "other") == 0)
        return 1;
    if (strcmp(id, "ca1") == 0)
        return 2;
    return 0;
}
static const struct slb_cert_lookup certs = {fake_type_of, NULL, 0};
static int fake_type_of_demo_only(void *arg, const char *id)
{
    return strcmp(id, "other") == 0 ? 0 : fake_type_of(arg, id);
}

#define GRP(n) "{'name':'" n "','servers':[{'address':'10.0.0.1','port':80}]}"
#define GROUPS "'groups':[" GRP("g") "," GRP("h") "]"
#define LIS(proto, bind, extra)                                                                    \
    "{'name':'l','protocol':'" proto "','bind':'" bind "','backend_group':'g'" extra "}"
#define HTTP(extra) LIS("http", "*:80", extra)
#define TCP(extra) LIS("tcp", "*:5000", extra)
#define HTTPS(tls_extra, extra)                                                                    \
    LIS("https", "*:443", ",'tls':{'certificates':['demo']" tls_extra "}" extra)
#define DOC(listeners) "{" GROUPS ",'listeners':[" listeners "]}"
#define GDOC(group) "{'groups':[" group "]}"
#define RULES(list) DOC(HTTP(",'rules':" list))
#define FWD(name, extra) "{'name':'" name "','action':{'forward':'g'" extra "}}"
#define GSRV(servers) GDOC("{'name':'g','servers':[" servers "]}")
#define GHC(hc) GDOC("{'name':'g','health_check':{" hc "}}")

struct bad_case {
    const char *doc;
    const char *code;
    const char *where;
};

static const struct bad_case bad_cases[] = {
    /* the document */
    {"[]", "wrong_type", ""},
    {"{'listener':[]}", "unknown_field", "listener"},
    {"{'listeners':{}}", "wrong_type", "listeners"},
    {"{'groups':'web'}", "wrong_type", "groups"},
    {"{'settings':{'drain':1}}", "unknown_field", "settings.drain"},
    {"{'settings':{'access_log':'../x.log'}}", "invalid_value", "settings.access_log"},
    {"{'settings':{'drain_timeout_s':'10'}}", "wrong_type", "settings.drain_timeout_s"},
    /* groups and servers */
    {GDOC("{'servers':[]}"), "missing_field", "groups[0].name"},
    {GDOC("{'name':'a/b'}"), "invalid_value", "groups[0].name"},
    {GDOC("{'name':'..'}"), "invalid_value", "groups[0].name"},
    {GDOC("{'name':'g'},{'name':'g'}"), "duplicate_name", "groups[1].name"},
    {GDOC("{'name':'g','scheduler':'lc'}"), "invalid_value", "groups[0].scheduler"},
    {GDOC("{'name':'g','scheduler':1}"), "wrong_type", "groups[0].scheduler"},
    {GDOC("{'name':'g','servers':{}}"), "wrong_type", "groups[0].servers"},
    {GDOC("{'name':'g','sevrers':[]}"), "unknown_field", "groups[0].sevrers"},
    {GSRV("{'address':'10.0.0.1','port':70000}"), "invalid_value", "groups[0].servers[0].port"},
    {GSRV("{'address':'10.0.0.1'}"), "missing_field", "groups[0].servers[0].port"},
    {GSRV("{'port':80}"), "missing_field", "groups[0].servers[0].address"},
    {GSRV("{'address':'10.0.0.1','port':'80'}"), "wrong_type", "groups[0].servers[0].port"},
    {GSRV("{'address':'10.0.0.1','port':80.0}"), "wrong_type", "groups[0].servers[0].port"},
    {GSRV("{'address':'10.0.0.1','port':80,'weight':101}"), "invalid_value",
     "groups[0].servers[0].weight"},
    {GSRV("{'address':'10.0.0.1','port':80,'weight':-1}"), "invalid_value",
     "groups[0].servers[0].weight"},
    {GSRV("{'address':'example.com','port':80}"), "invalid_value", "groups[0].servers[0].address"},
    {GSRV("{'address':'10.0.0.1','port':80},{'address':'10.0.0.1','port':80}"), "invalid_value",
     "groups[0].servers[1]"},
    {GSRV("{'address':'::1','port':80},{'address':'0::1','port':80}"), "invalid_value",
     "groups[0].servers[1]"},
    {GSRV("{'address':'10.0.0.1','port':80,'wieght':1}"), "unknown_field",
     "groups[0].servers[0].wieght"},
    {GSRV("7"), "wrong_type", "groups[0].servers[0]"},
    /* health checks */
    {GHC("'interval_s':51"), "invalid_value", "groups[0].health_check.interval_s"},
    {GHC("'timeout_s':0"), "invalid_value", "groups[0].health_check.timeout_s"},
    {GHC("'healthy_threshold':1"), "invalid_value", "groups[0].health_check.healthy_threshold"},
    {GHC("'unhealthy_threshold':11"), "invalid_value",
     "groups[0].health_check.unhealthy_threshold"},
    {GHC("'port':65536"), "invalid_value", "groups[0].health_check.port"},
    {GHC("'http_codes':[]"), "invalid_value", "groups[0].health_check.http_codes"},
    {GHC("'http_codes':['http_2xx','http_6xx']"), "invalid_value",
     "groups[0].health_check.http_codes[1]"},
    {GHC("'http_codes':[200]"), "wrong_type", "groups[0].health_check.http_codes[0]"},
    {GHC("'uri':'health'"), "invalid_value", "groups[0].health_check.uri"},
    {GHC("'uri':'/a b'"), "invalid_value", "groups[0].health_check.uri"},
    {GHC("'domain':'a b'"), "invalid_value", "groups[0].health_check.domain"},
    {GHC("'method':'post'"), "invalid_value", "groups[0].health_check.method"},
    {GHC("'protocol':'udp'"), "invalid_value", "groups[0].health_check.protocol"},
    {GHC("'intervall':2"), "unknown_field", "groups[0].health_check.intervall"},
    {GHC("'enabled':'yes'"), "wrong_type", "groups[0].health_check.enabled"},
    {GDOC("{'name':'g','health_check':[]}"), "wrong_type", "groups[0].health_check"},
    /* listeners: common fields */
    {DOC("7"), "wrong_type", "listeners[0]"},
    {DOC("{'name':'l','bind':'*:80','backend_group':'g'}"), "missing_field",
     "listeners[0].protocol"},
    {DOC("{'name':'l','protocol':'udp','bind':'*:80'}"), "invalid_value", "listeners[0].protocol"},
    {DOC("{'name':'l','bnd':'*:80'}"), "unknown_field", "listeners[0].bnd"},
    {DOC("{'name':'l','protocol':'http','backend_group':'g'}"), "missing_field",
     "listeners[0].bind"},
    {DOC(LIS("http", "1.2.3.4:70000", "")), "invalid_value", "listeners[0].bind"},
    {DOC(LIS("http", "::1:80", "")), "invalid_value", "listeners[0].bind"},
    {DOC(LIS("http", "localhost:80", "")), "invalid_value", "listeners[0].bind"},
    {DOC(LIS("http", "1.2.3.4", "")), "invalid_value", "listeners[0].bind"},
    {DOC(LIS("http", "[::1]:0", "")), "invalid_value", "listeners[0].bind"},
    {DOC("{'name':'l','protocol':'http','bind':'*:80'}"), "missing_field",
     "listeners[0].backend_group"},
    {DOC("{'protocol':'http','bind':'*:80','backend_group':'g'}"), "missing_field",
     "listeners[0].name"},
    {DOC("{'name':'"
         "0123456789012345678901234567890123456789012345678901234567890123"
         "','protocol':'http','bind':'*:80','backend_group':'g'}"),
     "invalid_value", "listeners[0].name"},
    {DOC(LIS("http", "*:80", ",'backend_group':'nope'")), "unknown_group",
     "listeners[0].backend_group"},
    {DOC(HTTP(",'max_connections':1000001")), "invalid_value", "listeners[0].max_connections"},
    {DOC(HTTP(",'connect_timeout_ms':99")), "invalid_value", "listeners[0].connect_timeout_ms"},
    {DOC(HTTP("") "," LIS("tcp", "*:81", "")), "duplicate_name", "listeners[1].name"},
    {DOC(HTTP("") ",{'name':'m','protocol':'tcp','bind':'0.0.0.0:80','backend_group':'g'}"),
     "bind_conflict", "listeners[1].bind"},
    {DOC("{'name':'a','protocol':'tcp','bind':'[::1]:80','backend_group':'g'},"
         "{'name':'b','protocol':'tcp','bind':'[0:0::1]:80','backend_group':'g'}"),
     "bind_conflict", "listeners[1].bind"},
    /* fields of another protocol */
    {DOC(TCP(",'tls':{'certificates':['demo']}")), "invalid_field", "listeners[0].tls"},
    {DOC(HTTPS("", ",'proxy_protocol':'v1'")), "invalid_field", "listeners[0].proxy_protocol"},
    {DOC(HTTPS("", ",'redirect_to':'https://x'")), "invalid_field", "listeners[0].redirect_to"},
    {DOC(TCP(",'x_forwarded_for':true")), "invalid_field", "listeners[0].x_forwarded_for"},
    {DOC(TCP(",'backend_reuse':'always'")), "invalid_field", "listeners[0].backend_reuse"},
    {DOC(HTTP(",'sni_routes':{}")), "invalid_field", "listeners[0].sni_routes"},
    /* tcp */
    {DOC(TCP(",'proxy_protocol':'v3'")), "invalid_value", "listeners[0].proxy_protocol"},
    {DOC(TCP(",'established_timeout_s':0")), "invalid_value", "listeners[0].established_timeout_s"},
    {DOC(TCP(",'sni_routes':{'a.example.com':'nope'}")), "unknown_group",
     "listeners[0].sni_routes[\"a.example.com\"]"},
    {DOC(TCP(",'sni_routes':{'a.example.com':5}")), "wrong_type",
     "listeners[0].sni_routes[\"a.example.com\"]"},
    {DOC(TCP(",'sni_routes':{'A.example.com':'g','a.EXAMPLE.com':'h'}")), "duplicate_name",
     "listeners[0].sni_routes[\"a.EXAMPLE.com\"]"},
    {DOC(TCP(",'sni_routes':{'bad name':'g'}")), "invalid_value",
     "listeners[0].sni_routes[\"bad name\"]"},
    {DOC(TCP(",'sni_routes':['g']")), "wrong_type", "listeners[0].sni_routes"},
    /* http */
    {DOC(HTTP(",'x_forwarded_for':1")), "wrong_type", "listeners[0].x_forwarded_for"},
    {DOC(HTTP(",'header_timeout_s':3601")), "invalid_value", "listeners[0].header_timeout_s"},
    {DOC(HTTP(",'idle_timeout_s':0")), "invalid_value", "listeners[0].idle_timeout_s"},
    {DOC(HTTP(",'request_timeout_s':1.5")), "wrong_type", "listeners[0].request_timeout_s"},
    {DOC(HTTP(",'backend_reuse':'never'")), "invalid_value", "listeners[0].backend_reuse"},
    {DOC(HTTP(",'backend_reuse':true")), "wrong_type", "listeners[0].backend_reuse"},
    {DOC(HTTP(",'redirect_to':'http://example.com'")), "invalid_value", "listeners[0].redirect_to"},
    {DOC(HTTP(",'redirect_to':'https://example.com/path'")), "invalid_value",
     "listeners[0].redirect_to"},
    {DOC(HTTP(",'redirect_to':'https://example.com:99999'")), "invalid_value",
     "listeners[0].redirect_to"},
    {DOC(HTTP(",'sticky':{'type':'server'}")), "missing_field", "listeners[0].sticky.cookie"},
    {DOC(HTTP(",'sticky':{'type':'cookie'}")), "invalid_value", "listeners[0].sticky.type"},
    {DOC(HTTP(",'sticky':{'type':'insert','cookie':'a b'}")), "invalid_value",
     "listeners[0].sticky.cookie"},
    {DOC(HTTP(",'sticky':{'type':'insert','timeout_s':0}")), "invalid_value",
     "listeners[0].sticky.timeout_s"},
    {DOC(HTTP(",'sticky':true")), "wrong_type", "listeners[0].sticky"},
    {DOC(HTTP(",'acl':{'cidrs':[]}")), "missing_field", "listeners[0].acl.mode"},
    {DOC(HTTP(",'acl':{'mode':'allow'}")), "missing_field", "listeners[0].acl.cidrs"},
    {DOC(HTTP(",'acl':{'mode':'allow','cidrs':['10.0.0.0/8','10.0.0.0/33']}")), "invalid_value",
     "listeners[0].acl.cidrs[1]"},
    {DOC(HTTP(",'acl':{'mode':'allow','cidrs':['10.0.0.1/8']}")), "invalid_value",
     "listeners[0].acl.cidrs[0]"},
    {DOC(HTTP(",'acl':{'mode':'allow','cidrs':['nope']}")), "invalid_value",
     "listeners[0].acl.cidrs[0]"},
    {DOC(HTTP(",'acl':{'mode':'block','cidrs':[]}")), "invalid_value", "listeners[0].acl.mode"},
    /* https */
    {DOC(LIS("https", "*:443", "")), "missing_field", "listeners[0].tls"},
    {DOC(HTTPS(",'polcy':'x'", "")), "unknown_field", "listeners[0].tls.polcy"},
    {DOC(LIS("https", "*:443", ",'tls':{}")), "missing_field", "listeners[0].tls.certificates"},
    {DOC(LIS("https", "*:443", ",'tls':{'certificates':[]}")), "invalid_value",
     "listeners[0].tls.certificates"},
    {DOC(LIS("https", "*:443", ",'tls':{'certificates':['demo','nope']}")), "unknown_certificate",
     "listeners[0].tls.certificates[1]"},
    {DOC(LIS("https", "*:443", ",'tls':{'certificates':['ca1']}")), "unknown_certificate",
     "listeners[0].tls.certificates[0]"},
    {DOC(LIS("https", "*:443", ",'tls':{'certificates':['demo','demo']}")), "invalid_value",
     "listeners[0].tls.certificates[1]"},
    /* The first repeat in list order is the one named, whatever the sort found first. */
    {DOC(LIS("https", "*:443", ",'tls':{'certificates':['other','demo','x','demo','other']}")),
     "invalid_value", "listeners[0].tls.certificates[3]"},
    {DOC(HTTPS(",'client_ca':'demo'", "")), "unknown_certificate", "listeners[0].tls.client_ca"},
    {DOC(HTTPS(",'client_ca':'nope'", "")), "unknown_certificate", "listeners[0].tls.client_ca"},
    {DOC(HTTPS(",'client_auth':'sometimes'", "")), "invalid_value", "listeners[0].tls.client_auth"},
    {DOC(HTTPS(",'policy':'tls_cipher_policy_2_0'", "")), "invalid_value",
     "listeners[0].tls.policy"},
    {DOC(HTTPS(",'session_ticket_lifetime_s':-1", "")), "invalid_value",
     "listeners[0].tls.session_ticket_lifetime_s"},
    {DOC(HTTPS(",'session_max_age_s':0", "")), "invalid_value",
     "listeners[0].tls.session_max_age_s"},
    {DOC(HTTPS(",'session_max_age_s':86401", "")), "invalid_value",
     "listeners[0].tls.session_max_age_s"},
    {DOC(HTTPS(",'alpn':['h3']", "")), "invalid_value", "listeners[0].tls.alpn[0]"},
    {DOC(HTTPS(",'alpn':['h2','h2']", "")), "invalid_value", "listeners[0].tls.alpn[1]"},
    {DOC(HTTPS(",'alpn':'h2'", "")), "wrong_type", "listeners[0].tls.alpn"},
    /* forwarding rules */
    {DOC(TCP(",'rules':[]")), "invalid_field", "listeners[0].rules"},
    /* status and limits */
    {DOC(HTTP(",'status':'paused'")), "invalid_value", "listeners[0].status"},
    {DOC(HTTP(",'limits':{'requests_per_s':0}")), "invalid_value",
     "listeners[0].limits.requests_per_s"},
    {DOC(HTTP(",'limits':{'connections_per_s':'5'}")), "wrong_type",
     "listeners[0].limits.connections_per_s"},
    {DOC(HTTP(",'limits':{'rps':5}")), "unknown_field", "listeners[0].limits.rps"},
    {DOC(TCP(",'limits':{'requests_per_s':5}")), "invalid_field",
     "listeners[0].limits.requests_per_s"},
    {DOC(HTTP(",'limits':{'bandwidth_mbps':100001}")), "invalid_value",
     "listeners[0].limits.bandwidth_mbps"},
    {RULES("[{'name':'r','match':{'path':'/'},'action':{'forward':[{'group':'g'}]},"
           "'limits':{'requests_per_s':-1}}]"),
     "invalid_value", "listeners[0].rules[0].limits.requests_per_s"},
    {RULES("{}"), "wrong_type", "listeners[0].rules"},
    {RULES("[7]"), "wrong_type", "listeners[0].rules[0]"},
    {RULES("[{'action':{'forward':'g'}}]"), "missing_field", "listeners[0].rules[0].name"},
    {RULES("[" FWD("a", "") "," FWD("b", "") "," FWD("a", "") "]"), "duplicate_name",
     "listeners[0].rules[2].name"},
    {RULES("[{'name':'a','match':{'hots':'x'},'action':{'forward':'g'}}]"), "unknown_field",
     "listeners[0].rules[0].match.hots"},
    {RULES("[{'name':'a','match':{}}]"), "missing_field", "listeners[0].rules[0].action"},
    {RULES("[{'name':'a','action':{}}]"), "missing_field", "listeners[0].rules[0].action"},
    {RULES("[{'name':'a','action':{'forward':'nope'}}]"), "unknown_group",
     "listeners[0].rules[0].action.forward[0].group"},
    {RULES("[" FWD("a", "") ",{'name':'b','action':{'forward':[{'group':'g','weight':50},"
                            "{'group':'nope','weight':50}]}}]"),
     "unknown_group", "listeners[0].rules[1].action.forward[1].group"},
    {RULES("[{'name':'a','action':{'forward':[{'group':'g','weight':0}]}}]"), "invalid_value",
     "listeners[0].rules[0].action.forward"},
    {RULES("[{'name':'a','action':{'forward':[{'group':'g','weight':101}]}}]"), "invalid_value",
     "listeners[0].rules[0].action.forward[0].weight"},
    {RULES("[{'name':'a','action':{'forward':['g','g']}}]"), "invalid_value",
     "listeners[0].rules[0].action.forward[1]"},
    {RULES("[{'name':'a','action':{'forward':[]}}]"), "invalid_value",
     "listeners[0].rules[0].action.forward"},
    {RULES("[{'name':'a','action':{'forward':'g','redirect':{'path':'/'}}}]"),
     "conflicting_actions", "listeners[0].rules[0].action.redirect"},
    {RULES("[{'name':'a','action':{'redirect':{'path':'/'},'fixed_response':{'code':200}}}]"),
     "conflicting_actions", "listeners[0].rules[0].action.fixed_response"},
    {RULES("[{'name':'a','action':{'redirect':{'path':'/'},'set_request_headers':{'a':'b'}}}]"),
     "conflicting_actions", "listeners[0].rules[0].action.set_request_headers"},
    {RULES("[" FWD("a", ",'set_request_headers':{'X-A':'1'},'remove_request_headers':['x-a']") "]"),
     "conflicting_actions", "listeners[0].rules[0].action.remove_request_headers[0]"},
    {RULES("[" FWD("a", ",'set_request_headers':{'Content-Length':'1'}") "]"), "invalid_value",
     "listeners[0].rules[0].action.set_request_headers[\"Content-Length\"]"},
    {RULES("[" FWD("a", ",'set_request_headers':{'x-a':'1\\r\\nx: y'}") "]"), "invalid_value",
     "listeners[0].rules[0].action.set_request_headers[\"x-a\"]"},
    {RULES("[" FWD("a", ",'remove_request_headers':['host']") "]"), "invalid_value",
     "listeners[0].rules[0].action.remove_request_headers[0]"},
    {RULES("[{'name':'a','match':{'path_regex':'(unclosed'},'action':{'forward':'g'}}]"),
     "invalid_value", "listeners[0].rules[0].match.path_regex"},
    {RULES("[{'name':'a','match':{'headers':{'x-env':{'regex':'['}}},'action':{'forward':'g'}}]"),
     "invalid_value", "listeners[0].rules[0].match.headers[\"x-env\"]"},
    {RULES("[{'name':'a','match':{'headers':{'x env':'1'}},'action':{'forward':'g'}}]"),
     "invalid_value", "listeners[0].rules[0].match.headers[\"x env\"]"},
    {RULES("[{'name':'a','match':{'headers':{'x':1}},'action':{'forward':'g'}}]"), "wrong_type",
     "listeners[0].rules[0].match.headers[\"x\"]"},
    {RULES("[{'name':'a','match':{'host':'a b'},'action':{'forward':'g'}}]"), "invalid_value",
     "listeners[0].rules[0].match.host"},
    {RULES("[{'name':'a','match':{'path':'v1'},'action':{'forward':'g'}}]"), "invalid_value",
     "listeners[0].rules[0].match.path"},
    {RULES("[{'name':'a','match':{'path':'/a/../admin'},'action':{'forward':'g'}}]"),
     "invalid_value", "listeners[0].rules[0].match.path"},
    {RULES("[{'name':'a','match':{'path_prefix':'/%2e%2e/'},'action':{'forward':'g'}}]"),
     "invalid_value", "listeners[0].rules[0].match.path_prefix"},
    {RULES("[{'name':'a','match':{'path_prefix':'/a%2Fb'},'action':{'forward':'g'}}]"),
     "invalid_value", "listeners[0].rules[0].match.path_prefix"},
    {RULES("[{'name':'a','match':{'methods':[]},'action':{'forward':'g'}}]"), "invalid_value",
     "listeners[0].rules[0].match.methods"},
    {RULES("[{'name':'a','match':{'methods':['GET','get']},'action':{'forward':'g'}}]"),
     "invalid_value", "listeners[0].rules[0].match.methods[1]"},
    {RULES("[{'name':'a','match':{'source':['10.0.0.0/33']},'action':{'forward':'g'}}]"),
     "invalid_value", "listeners[0].rules[0].match.source[0]"},
    {RULES("[{'name':'a','match':{'query':{}},'action':{'forward':'g'}}]"), "invalid_value",
     "listeners[0].rules[0].match.query"},
    {RULES("[{'name':'a','action':{'redirect':{'code':304,'path':'/'}}}]"), "invalid_value",
     "listeners[0].rules[0].action.redirect.code"},
    {RULES("[{'name':'a','action':{'redirect':{'code':200,'path':'/'}}}]"), "invalid_value",
     "listeners[0].rules[0].action.redirect.code"},
    {RULES("[{'name':'a','action':{'redirect':{'code':302}}}]"), "invalid_value",
     "listeners[0].rules[0].action.redirect"},
    {RULES("[{'name':'a','action':{'redirect':{'scheme':'ftp'}}}]"), "invalid_value",
     "listeners[0].rules[0].action.redirect.scheme"},
    {RULES("[{'name':'a','action':{'redirect':{'path':'new'}}}]"), "invalid_value",
     "listeners[0].rules[0].action.redirect.path"},
    {RULES("[{'name':'a','action':{'redirect':{'port':0}}}]"), "invalid_value",
     "listeners[0].rules[0].action.redirect.port"},
    {RULES("[{'name':'a','action':{'fixed_response':{'body':'x'}}}]"), "missing_field",
     "listeners[0].rules[0].action.fixed_response.code"},
    {RULES("[{'name':'a','action':{'fixed_response':{'code':204}}}]"), "invalid_value",
     "listeners[0].rules[0].action.fixed_response.code"},
    {RULES("[{'name':'a','action':{'fixed_response':{'code':200,'content_type':''}}}]"),
     "invalid_value", "listeners[0].rules[0].action.fixed_response.content_type"},
};

static void test_invalid_documents(void **state)
{
    (void)state;
    size_t n = sizeof(bad_cases) / sizeof(bad_cases[0]);
    assert_true(n >= 40);
    for (size_t i = 0; i < n; i++) {
        const struct bad_case *c = &bad_cases[i];
        json_t *doc = J(c->doc);
        struct slb_config *cfg = (void *)1;
        struct slb_err err;
        slb_err_clear(&err);
        int rc = slb_config_from_json(doc, &certs, &cfg, &err);
        json_decref(doc);
        if (rc != SLB_EINVAL || strcmp(err.code, c->code) != 0 ||
            strcmp(err.where, c->where) != 0) {
            print_error("case %zu %s\n  want %s at '%s'\n  got rc=%d %s at '%s': %s\n", i, c->doc,
                        c->code, c->where, rc, err.code, err.where, err.msg);
            slb_config_free(rc == 0 ? cfg : NULL);
            fail();
        }
        assert_null(cfg);
        assert_int_equal(err.status, 400);
        /* The message alone must say which field is wrong: the API shows only the message. */
        if (*c->where) {
            assert_int_equal(strncmp(err.msg, c->where, strlen(c->where)), 0);
            assert_int_equal(strncmp(err.msg + strlen(c->where), ": ", 2), 0);
        }
        assert_true(strlen(err.msg) > strlen(c->where) + 10);
    }
}

static struct slb_err expect_error(const char *text)
{
    json_t *doc = J(text);
    struct slb_config *cfg = NULL;
    struct slb_err err;
    slb_err_clear(&err);
    assert_int_equal(slb_config_from_json(doc, &certs, &cfg, &err), SLB_EINVAL);
    assert_null(cfg);
    json_decref(doc);
    return err;
}

static void test_error_messages(void **state)
{
    (void)state;
    struct slb_err err = expect_error(DOC(LIS("http", "1.2.3.4:70000", "")));
    assert_string_equal(err.msg, "listeners[0].bind: port 70000 is out of range (1-65535)");
    err = expect_error(GSRV("{'address':'10.0.0.1','port':80,'weight':101}"));
    assert_string_equal(err.msg, "groups[0].servers[0].weight: 101 is out of range (0-100)");
    err = expect_error(DOC(TCP(",'tls':{'certificates':['demo']}")));
    assert_non_null(strstr(err.msg, "only to https listeners"));
    assert_non_null(strstr(err.msg, "tcp listener"));
    err = expect_error(DOC(HTTPS(",'policy':'x'", "")));
    assert_non_null(strstr(err.msg, "tls_cipher_policy_1_2_strict_with_1_3"));
    err = expect_error(DOC(HTTPS("", "") ",{'name':'m','protocol':'tcp','bind':'0.0.0.0:443',"
                                         "'backend_group':'g'}"));
    assert_string_equal(err.code, "bind_conflict");
    assert_non_null(strstr(err.msg, "\"l\""));
    err = expect_error(DOC(LIS("http", "*:80", ",'backend_group':'nope'")));
    assert_non_null(strstr(err.msg, "\"nope\""));
}

/* Each listener is checked against the ones before it: the error names the first one that
 * clashes, by name before address when it is the same one, among many listeners. */
static void test_listener_clash_first(void **state)
{
    (void)state;
    char doc[16384];
    size_t n = 0;
    n += (size_t)snprintf(doc + n, sizeof(doc) - n, "{\"listeners\":[");
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(doc + n, sizeof(doc) - n,
                              "{\"name\":\"l%d\",\"protocol\":\"tcp\",\"bind\":\"127.0.0.1:%d\","
                              "\"backend_group\":\"g\"},",
                              i, 1000 + i);
    const char *tail = "],\"groups\":[{\"name\":\"g\"}]}";
    const struct {
        const char *last, *code, *msg;
    } cases[] = {
        /* the address of l7 before the name of l42 */
        {"{\"name\":\"l42\",\"protocol\":\"tcp\",\"bind\":\"127.0.0.1:1007\",\"backend_group\":"
         "\"g\"}",
         "bind_conflict", "listener \"l7\" (\"127.0.0.1:1007\")"},
        /* the name of l7 before the address of l42 */
        {"{\"name\":\"l7\",\"protocol\":\"tcp\",\"bind\":\"127.0.0.1:1042\",\"backend_group\":"
         "\"g\"}",
         "duplicate_name", "(listeners[7])"},
        /* both of l9: the name */
        {"{\"name\":\"l9\",\"protocol\":\"tcp\",\"bind\":\"127.0.0.1:1009\",\"backend_group\":"
         "\"g\"}",
         "duplicate_name", "(listeners[9])"},
        /* IPv6: the same address written twice */
        {"{\"name\":\"v6a\",\"protocol\":\"tcp\",\"bind\":\"[::1]:80\",\"backend_group\":\"g\"},"
         "{\"name\":\"v6b\",\"protocol\":\"tcp\",\"bind\":\"[0:0::1]:80\",\"backend_group\":\"g\"}",
         "bind_conflict", "listener \"v6a\""},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char text[20000];
        snprintf(text, sizeof(text), "%s%s%s", doc, cases[k].last, tail);
        json_t *j = json_loads(text, 0, NULL);
        assert_non_null(j);
        struct slb_config *cfg = NULL;
        struct slb_err err;
        slb_err_clear(&err);
        assert_int_not_equal(slb_config_from_json(j, &certs, &cfg, &err), 0);
        assert_string_equal(err.code, cases[k].code);
        if (!strstr(err.msg, cases[k].msg))
            print_error("case %zu: %s\n", k, err.msg);
        assert_non_null(strstr(err.msg, cases[k].msg));
        json_decref(j);
    }
    /* 100 distinct listeners are fine */
    char text[20000];
    snprintf(text, sizeof(text), "%.*s%s", (int)(n - 1), doc, tail);
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    struct slb_config *cfg = NULL;
    struct slb_err err;
    assert_int_equal(slb_config_from_json(j, &certs, &cfg, &err), 0);
    assert_int_equal(cfg->nlisteners, 100);
    slb_config_free(cfg);
    json_decref(j);
}

static struct slb_config *build(const char *text)
{
    json_t *doc = J(text);
    struct slb_config *cfg = NULL;
    struct slb_err err;
    slb_err_clear(&err);
    int rc = slb_config_from_json(doc, &certs, &cfg, &err);
    if (rc)
        print_error("unexpected error %s at %s: %s\n", err.code, err.where, err.msg);
    assert_int_equal(rc, 0);
    assert_non_null(cfg);
    json_decref(doc);
    return cfg;
}

/* The normalized document must validate again to the same document. */
static void assert_round_trip(const struct slb_config *cfg)
{
    struct slb_config *again = NULL;
    struct slb_err err;
    assert_int_equal(slb_config_from_json(cfg->json, &certs, &again, &err), 0);
    assert_true(json_equal(again->json, cfg->json));
    assert_int_equal(again->nlisteners, cfg->nlisteners);
    assert_int_equal(again->ngroups, cfg->ngroups);
    slb_config_free(again);
}

static void test_empty_document(void **state)
{
    (void)state;
    struct slb_config *cfg = build("{}");
    assert_int_equal(cfg->nlisteners, 0);
    assert_int_equal(cfg->ngroups, 0);
    assert_int_equal(cfg->settings.drain_timeout_s, 10);
    assert_string_equal(cfg->settings.access_log, "");
    json_t *want = J("{'listeners':[],'groups':[],'settings':{'drain_timeout_s':10,"
                     "'access_log':''}}");
    assert_true(json_equal(cfg->json, want));
    json_decref(want);
    assert_round_trip(cfg);
    assert_null(slb_config_group(cfg, "g"));
    assert_null(slb_config_listener(cfg, "l"));
    slb_config_free(cfg);
    slb_config_free(NULL);
}

static void test_group_defaults(void **state)
{
    (void)state;
    struct slb_config *cfg = build(GSRV("{'address':'10.0.0.1','port':8080},"
                                        "{'address':'2001:db8::1','port':80,'weight':0}"));
    const struct slb_group_cfg *g = slb_config_group(cfg, "g");
    assert_non_null(g);
    assert_int_equal(g->scheduler, SLB_SCHED_WRR);
    assert_int_equal(g->nservers, 2);
    assert_int_equal(g->servers[0].weight, 100);
    assert_int_equal(g->servers[1].weight, 0);
    const struct sockaddr_in *a4 = (const void *)&g->servers[0].addr;
    assert_int_equal(a4->sin_family, AF_INET);
    assert_int_equal(ntohs(a4->sin_port), 8080);
    assert_int_equal(ntohl(a4->sin_addr.s_addr), 0x0a000001);
    assert_int_equal(g->servers[0].addrlen, sizeof(struct sockaddr_in));
    const struct sockaddr_in6 *a6 = (const void *)&g->servers[1].addr;
    assert_int_equal(a6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(a6->sin6_port), 80);
    assert_int_equal(a6->sin6_addr.s6_addr[0], 0x20);
    assert_int_equal(a6->sin6_addr.s6_addr[15], 1);
    assert_string_equal(g->servers[1].address, "2001:db8::1");

    const struct slb_health_cfg *hc = &g->hc;
    assert_true(hc->enabled);
    assert_int_equal(hc->protocol, SLB_HC_TCP);
    assert_string_equal(hc->uri, "/");
    assert_string_equal(hc->domain, "");
    assert_int_equal(hc->method, SLB_HC_HEAD);
    assert_int_equal(hc->http_codes, (1u << 2) | (1u << 3));
    assert_int_equal(hc->interval_s, 2);
    assert_int_equal(hc->timeout_s, 5);
    assert_int_equal(hc->healthy_threshold, 3);
    assert_int_equal(hc->unhealthy_threshold, 3);
    assert_int_equal(hc->port, 0);

    json_t *want = J("{'name':'g','scheduler':'wrr','servers':["
                     "{'address':'10.0.0.1','port':8080,'weight':100},"
                     "{'address':'2001:db8::1','port':80,'weight':0}],"
                     "'health_check':{'enabled':true,'protocol':'tcp','uri':'/','domain':'',"
                     "'method':'head','http_codes':['http_2xx','http_3xx'],'interval_s':2,"
                     "'timeout_s':5,'healthy_threshold':3,'unhealthy_threshold':3,'port':0,"
                     "'passive':{'enabled':false,'consecutive_failures':5,'include_5xx':false,"
                     "'ejection_s':30}}}");
    assert_true(json_equal(json_array_get(json_object_get(cfg->json, "groups"), 0), want));
    json_decref(want);
    assert_round_trip(cfg);
    slb_config_free(cfg);
}

static void test_group_values(void **state)
{
    (void)state;
    const char *names[] = {"wrr", "rr", "wlc", "sch", "tch"};
    int kinds[] = {SLB_SCHED_WRR, SLB_SCHED_RR, SLB_SCHED_WLC, SLB_SCHED_SCH, SLB_SCHED_TCH};
    for (size_t i = 0; i < 5; i++) {
        char text[200];
        snprintf(text, sizeof(text), GDOC("{'name':'g','scheduler':'%s'}"), names[i]);
        struct slb_config *cfg = build(text);
        assert_int_equal(cfg->groups[0]->scheduler, kinds[i]);
        assert_int_equal(cfg->groups[0]->nservers, 0);
        slb_config_free(cfg);
    }
    struct slb_config *cfg = build(
        GHC("'enabled':false,'protocol':'http','uri':'/health?x=1','domain':'api.example.com',"
            "'method':'get','http_codes':['http_5xx','http_2xx','http_2xx'],'interval_s':50,"
            "'timeout_s':300,'healthy_threshold':10,'unhealthy_threshold':2,'port':8081"));
    const struct slb_health_cfg *hc = &cfg->groups[0]->hc;
    assert_false(hc->enabled);
    assert_int_equal(hc->protocol, SLB_HC_HTTP);
    assert_string_equal(hc->uri, "/health?x=1");
    assert_string_equal(hc->domain, "api.example.com");
    assert_int_equal(hc->method, SLB_HC_GET);
    assert_int_equal(hc->http_codes, (1u << 2) | (1u << 5));
    assert_int_equal(hc->interval_s, 50);
    assert_int_equal(hc->timeout_s, 300);
    assert_int_equal(hc->healthy_threshold, 10);
    assert_int_equal(hc->unhealthy_threshold, 2);
    assert_int_equal(hc->port, 8081);
    json_t *codes = json_object_get(
        json_object_get(json_array_get(json_object_get(cfg->json, "groups"), 0), "health_check"),
        "http_codes");
    json_t *want = J("['http_2xx','http_5xx']");
    assert_true(json_equal(codes, want));
    json_decref(want);
    assert_round_trip(cfg);
    slb_config_free(cfg);
}

static void test_listener_defaults_http(void **state)
{
    (void)state;
    struct slb_config *cfg = build(DOC(HTTP("")));
    const struct slb_listener_cfg *l = slb_config_listener(cfg, "l");
    assert_non_null(l);
    assert_int_equal(l->protocol, SLB_PROTO_HTTP);
    assert_string_equal(l->bind, "*:80");
    assert_string_equal(l->backend_group, "g");
    assert_int_equal(l->max_connections, 0);
    assert_int_equal(l->connect_timeout_ms, 5000);
    assert_true(l->x_forwarded_for);
    assert_true(l->x_forwarded_proto);
    assert_int_equal(l->header_timeout_s, 10);
    assert_int_equal(l->idle_timeout_s, 15);
    assert_int_equal(l->request_timeout_s, 60);
    assert_int_equal(l->backend_reuse, SLB_REUSE_SAFE);
    assert_string_equal(l->redirect_to, "");
    assert_int_equal(l->sticky, SLB_STICKY_NONE);
    assert_int_equal(l->acl_mode, SLB_ACL_NONE);
    assert_int_equal(l->nacl, 0);
    const struct sockaddr_in *a = (const void *)&l->addr;
    assert_int_equal(a->sin_family, AF_INET);
    assert_int_equal(a->sin_addr.s_addr, htonl(INADDR_ANY));
    assert_int_equal(ntohs(a->sin_port), 80);
    json_t *want = J("{'name':'l','protocol':'http','bind':'*:80','backend_group':'g',"
                     "'max_connections':0,'connect_timeout_ms':5000,'status':'running',"
                     "'x_forwarded_for':true,"
                     "'x_forwarded_proto':true,'header_timeout_s':10,'idle_timeout_s':15,"
                     "'request_timeout_s':60,'backend_reuse':'safe','redirect_to':'','sticky':null,"
                     "'acl':null}");
    json_t *got = json_array_get(json_object_get(cfg->json, "listeners"), 0);
    assert_true(json_equal(got, want));
    /* Stable key order: the normalized form is what GET returns and config.json stores. */
    const char *order[] = {"name", "protocol", "bind", "backend_group", "max_connections"};
    void *it = json_object_iter(got);
    for (size_t i = 0; i < 5; i++, it = json_object_iter_next(got, it))
        assert_string_equal(json_object_iter_key(it), order[i]);
    json_decref(want);
    assert_round_trip(cfg);
    slb_config_free(cfg);
}

static void test_listener_defaults_tcp(void **state)
{
    (void)state;
    struct slb_config *cfg = build(DOC(TCP("")));
    const struct slb_listener_cfg *l = cfg->listeners[0];
    assert_int_equal(l->protocol, SLB_PROTO_TCP);
    assert_int_equal(l->proxy_protocol, 0);
    assert_int_equal(l->established_timeout_s, 900);
    assert_int_equal(l->nsni_routes, 0);
    json_t *want = J("{'name':'l','protocol':'tcp','bind':'*:5000','backend_group':'g',"
                     "'max_connections':0,'connect_timeout_ms':5000,'status':'running',"
                     "'proxy_protocol':null,"
                     "'established_timeout_s':900,'sni_routes':{}}");
    assert_true(json_equal(json_array_get(json_object_get(cfg->json, "listeners"), 0), want));
    json_decref(want);
    slb_config_free(cfg);

    cfg = build(DOC(LIS("tcp", "[::1]:6000",
                        ",'proxy_protocol':'v2','sni_routes':{'A.Example.com':'h',"
                        "'*.example.org':'g'}")));
    l = cfg->listeners[0];
    assert_int_equal(l->proxy_protocol, 2);
    const struct sockaddr_in6 *a6 = (const void *)&l->addr;
    assert_int_equal(a6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(a6->sin6_port), 6000);
    assert_memory_equal(&a6->sin6_addr, &in6addr_loopback, sizeof(in6addr_loopback));
    assert_int_equal(l->addrlen, sizeof(struct sockaddr_in6));
    assert_int_equal(l->nsni_routes, 2);
    assert_string_equal(l->sni_routes[0].server_name, "a.example.com");
    assert_string_equal(l->sni_routes[0].group, "h");
    assert_string_equal(l->sni_routes[1].server_name, "*.example.org");
    assert_string_equal(l->sni_routes[1].group, "g");
    assert_round_trip(cfg);
    slb_config_free(cfg);
}

static void test_listener_defaults_https(void **state)
{
    (void)state;
    struct slb_config *cfg = build(DOC(HTTPS("", "")));
    const struct slb_listener_cfg *l = cfg->listeners[0];
    assert_int_equal(l->protocol, SLB_PROTO_HTTPS);
    assert_int_equal(l->tls.ncertificates, 1);
    assert_string_equal(l->tls.certificates[0], "demo");
    assert_string_equal(l->tls.client_ca, "");
    assert_int_equal(l->tls.client_auth, SLB_CLIENT_AUTH_REQUIRED);
    assert_int_equal(l->tls.policy, SLB_TLS_POLICY_1_2_STRICT_WITH_1_3);
    assert_int_equal(l->tls.session_ticket_lifetime_s, 300);
    assert_int_equal(l->tls.session_max_age_s, 3600);
    assert_int_equal(l->tls.nalpn, 2);
    assert_string_equal(l->tls.alpn[0], "h2");
    assert_string_equal(l->tls.alpn[1], "http/1.1");
    json_t *got = json_array_get(json_object_get(cfg->json, "listeners"), 0);
    assert_null(json_object_get(got, "redirect_to"));
    json_t *want = J("{'certificates':['demo'],'client_ca':'','client_auth':'required',"
                     "'policy':'tls_cipher_policy_1_2_strict_with_1_3',"
                     "'session_ticket_lifetime_s':300,'session_max_age_s':3600,"
                     "'alpn':['h2','http/1.1']}");
    assert_true(json_equal(json_object_get(got, "tls"), want));
    json_decref(want);
    assert_round_trip(cfg);
    slb_config_free(cfg);
}

static void test_listener_values(void **state)
{
    (void)state;
    struct slb_config *cfg = build(DOC(
        LIS("https", "10.1.2.3:8443",
            ",'max_connections':1000000,'connect_timeout_ms':100,'x_forwarded_for':false,"
            "'backend_reuse':'always',"
            "'sticky':{'type':'server','cookie':'JSESSIONID','timeout_s':86400},"
            "'acl':{'mode':'deny','cidrs':['10.0.0.0/8','::1/128','1.2.3.4','2001:db8::/32']},"
            "'tls':{'certificates':['demo','other'],'client_ca':'ca1','client_auth':'optional',"
            "'policy':'tls_cipher_policy_1_0','session_ticket_lifetime_s':0,'session_max_age_s':60,"
            "'alpn':['http/1.1']}")));
    const struct slb_listener_cfg *l = cfg->listeners[0];
    const struct sockaddr_in *a = (const void *)&l->addr;
    assert_int_equal(ntohl(a->sin_addr.s_addr), 0x0a010203);
    assert_int_equal(ntohs(a->sin_port), 8443);
    assert_int_equal(l->max_connections, 1000000);
    assert_int_equal(l->connect_timeout_ms, 100);
    assert_false(l->x_forwarded_for);
    assert_true(l->x_forwarded_proto);
    assert_int_equal(l->backend_reuse, SLB_REUSE_ALWAYS);
    assert_int_equal(l->sticky, SLB_STICKY_SERVER);
    assert_string_equal(l->sticky_cookie, "JSESSIONID");
    assert_int_equal(l->sticky_timeout_s, 86400);
    assert_int_equal(l->acl_mode, SLB_ACL_DENY);
    assert_int_equal(l->nacl, 4);
    uint8_t ten[4] = {10, 0, 0, 0}, v4[4] = {1, 2, 3, 4};
    assert_int_equal(l->acl[0].family, AF_INET);
    assert_memory_equal(l->acl[0].addr, ten, 4);
    assert_int_equal(l->acl[0].prefix, 8);
    assert_int_equal(l->acl[1].family, AF_INET6);
    assert_memory_equal(l->acl[1].addr, &in6addr_loopback, 16);
    assert_int_equal(l->acl[1].prefix, 128);
    assert_int_equal(l->acl[2].family, AF_INET);
    assert_memory_equal(l->acl[2].addr, v4, 4);
    assert_int_equal(l->acl[2].prefix, 32);
    assert_int_equal(l->acl[3].prefix, 32);
    assert_int_equal(l->acl[3].addr[2], 0x0d);
    assert_int_equal(l->tls.ncertificates, 2);
    assert_string_equal(l->tls.certificates[1], "other");
    assert_string_equal(l->tls.client_ca, "ca1");
    assert_int_equal(l->tls.client_auth, SLB_CLIENT_AUTH_OPTIONAL);
    assert_int_equal(l->tls.policy, SLB_TLS_POLICY_1_0);
    assert_string_equal(slb_tls_policy_name(l->tls.policy), "tls_cipher_policy_1_0");
    assert_int_equal(l->tls.session_ticket_lifetime_s, 0);
    assert_int_equal(l->tls.session_max_age_s, 60);
    assert_int_equal(l->tls.nalpn, 1);
    assert_string_equal(l->tls.alpn[0], "http/1.1");
    assert_round_trip(cfg);
    slb_config_free(cfg);

    cfg = build(DOC(HTTP(",'sticky':{'type':'insert'},'acl':{'mode':'allow','cidrs':[]}")));
    l = cfg->listeners[0];
    assert_int_equal(l->sticky, SLB_STICKY_INSERT);
    assert_string_equal(l->sticky_cookie, "SLBSERVERID");
    assert_int_equal(l->sticky_timeout_s, 1000);
    assert_int_equal(l->acl_mode, SLB_ACL_ALLOW);
    assert_int_equal(l->nacl, 0);
    assert_round_trip(cfg);
    slb_config_free(cfg);

    /* Every policy name maps to its enum and back. */
    const char *policies[] = {"tls_cipher_policy_1_0", "tls_cipher_policy_1_1",
                              "tls_cipher_policy_1_2", "tls_cipher_policy_1_2_strict",
                              "tls_cipher_policy_1_2_strict_with_1_3"};
    for (int i = 0; i < 5; i++) {
        char text[400];
        snprintf(text, sizeof(text), DOC(HTTPS(",'policy':'%s'", "")), policies[i]);
        cfg = build(text);
        assert_int_equal(cfg->listeners[0]->tls.policy, i);
        assert_string_equal(slb_tls_policy_name(cfg->listeners[0]->tls.policy), policies[i]);
        slb_config_free(cfg);
    }
}

/* IPv4-mapped ACL entries become the IPv4 blocks they name, so they match IPv4 clients on an
 * IPv4 socket too; other IPv6 entries stay IPv6. */
static void test_acl_ipv4_mapped(void **state)
{
    (void)state;
    struct slb_config *cfg = build(DOC(HTTP(
        ",'acl':{'mode':'allow','cidrs':['::ffff:10.0.0.0/104','::ffff:1.2.3.4','::ffff:0:0/96',"
        "'::1']}")));
    const struct slb_listener_cfg *l = cfg->listeners[0];
    assert_int_equal(l->nacl, 4);
    uint8_t ten[16] = {10}, v4[16] = {1, 2, 3, 4}, zero[16] = {0};
    assert_int_equal(l->acl[0].family, AF_INET);
    assert_int_equal(l->acl[0].prefix, 8);
    assert_memory_equal(l->acl[0].addr, ten, 16);
    assert_int_equal(l->acl[1].family, AF_INET);
    assert_int_equal(l->acl[1].prefix, 32);
    assert_memory_equal(l->acl[1].addr, v4, 16);
    assert_int_equal(l->acl[2].family, AF_INET);
    assert_int_equal(l->acl[2].prefix, 0);
    assert_memory_equal(l->acl[2].addr, zero, 16);
    assert_int_equal(l->acl[3].family, AF_INET6);
    assert_int_equal(l->acl[3].prefix, 128);
    assert_round_trip(cfg);
    slb_config_free(cfg);
}

static void test_redirect_listener(void **state)
{
    (void)state;
    struct slb_config *cfg =
        build("{'listeners':[{'name':'r','protocol':'http','bind':'[::]:80',"
              "'redirect_to':'https://www.example.com:8443'},"
              "{'name':'r2','protocol':'http','bind':'*:81','backend_group':'',"
              "'redirect_to':'https://[2001:db8::1]'}]}");
    assert_string_equal(cfg->listeners[0]->redirect_to, "https://www.example.com:8443");
    assert_string_equal(cfg->listeners[0]->backend_group, "");
    assert_string_equal(cfg->listeners[1]->redirect_to, "https://[2001:db8::1]");
    /* [::]:80 and *:81 differ in family and port: no conflict. */
    assert_round_trip(cfg);
    slb_config_free(cfg);
}

static void test_normalize_idempotent(void **state)
{
    (void)state;
    const char *listeners[] = {
        HTTP(""),
        TCP(",'proxy_protocol':'v1','sni_routes':{'X.example.com':'g'}"),
        HTTPS(",'client_ca':'ca1'", ",'acl':{'mode':'allow','cidrs':['::/0']}"),
        LIS("http", "*:80", ",'backend_group':'','redirect_to':'https://a.example'"),
    };
    for (size_t i = 0; i < sizeof(listeners) / sizeof(listeners[0]); i++) {
        json_t *in = J(listeners[i]);
        struct slb_err err;
        json_t *n1 = slb_config_normalize_listener(in, "", &err);
        if (!n1)
            print_error("%s: %s\n", listeners[i], err.msg);
        assert_non_null(n1);
        json_t *n2 = slb_config_normalize_listener(n1, "", &err);
        assert_non_null(n2);
        assert_true(json_equal(n1, n2));
        json_decref(in);
        json_decref(n1);
        json_decref(n2);
    }
    const char *groups[] = {
        GRP("g"),
        "{'name':'g','scheduler':'sch','servers':[{'address':'::1','port':1,'weight':7}],"
        "'health_check':{'protocol':'http','http_codes':['http_4xx']}}",
    };
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
        json_t *in = J(groups[i]);
        struct slb_err err;
        json_t *n1 = slb_config_normalize_group(in, "", &err);
        assert_non_null(n1);
        json_t *n2 = slb_config_normalize_group(n1, "", &err);
        assert_non_null(n2);
        assert_true(json_equal(n1, n2));
        assert_false(json_equal(in, n1)); /* defaults were added */
        json_decref(in);
        json_decref(n1);
        json_decref(n2);
    }
}

static void test_normalize_api_paths(void **state)
{
    (void)state;
    struct slb_err err;
    json_t *in = J(LIS("http", "1.2.3.4:70000", ""));
    assert_null(slb_config_normalize_listener(in, "", &err));
    assert_string_equal(err.code, "invalid_value");
    assert_string_equal(err.where, "bind");
    assert_string_equal(err.msg, "bind: port 70000 is out of range (1-65535)");
    assert_int_equal(err.status, 400);
    json_decref(in);

    in = J("{'name':'g','health_check':{'timeout':1}}");
    assert_null(slb_config_normalize_group(in, "", &err));
    assert_string_equal(err.code, "unknown_field");
    assert_string_equal(err.where, "health_check.timeout");
    json_decref(in);

    in = J("[1]");
    assert_null(slb_config_normalize_group(in, "", &err));
    assert_string_equal(err.code, "wrong_type");
    assert_string_equal(err.where, "");
    json_decref(in);

    /* Cross references are the whole document's business, not the resource's. */
    in = J(LIS("https", "*:443", ",'backend_group':'elsewhere','tls':{'certificates':['x']}"));
    json_t *n = slb_config_normalize_listener(in, "", &err);
    assert_non_null(n);
    json_decref(n);
    json_decref(in);

    in = J(LIS("tcp", "*:0", ""));
    assert_null(slb_config_normalize_listener(in, "listeners[3]", &err));
    assert_string_equal(err.where, "listeners[3].bind");
    assert_string_equal(err.msg, "listeners[3].bind: port 0 is out of range (1-65535)");
    json_decref(in);
}

/* The example: conditions as given (host lower-cased, methods upper-cased, header names
 * lower-cased), forward always a list with weights, defaults filled in, and normalizing twice
 * changes nothing. */
static void test_rules_normalized(void **state)
{
    (void)state;
    json_t *in =
        J(HTTP(",'rules':["
               "{'name':'api','match':{'host':'API.example.com','path_prefix':'/v1/',"
               "'methods':['get','POST'],'headers':{'X-Env':'prod','X-Ver':{'regex':'^2'}},"
               "'query':{'a':'b c'},'source':['10.0.0.0/8']},"
               "'action':{'forward':[{'group':'api','weight':100}],"
               "'set_request_headers':{'X-Api':'1'},'remove_request_headers':['Cookie']}},"
               "{'name':'canary','match':{'host':'*.example.com'},"
               "'action':{'forward':[{'group':'blue','weight':90},{'group':'green','weight':10}]}},"
               "{'name':'moved','match':{'path_prefix':'/old/'},"
               "'action':{'redirect':{'code':301,'path':'/new/'}}},"
               "{'name':'lb-health','match':{'path':'/lb-health'},"
               "'action':{'fixed_response':{'code':200,'content_type':'text/plain','body':'ok'}}},"
               "{'name':'rest','action':{'forward':'g'}}]"));
    const char *want =
        "[{'name':'api','match':{'host':'api.example.com','path_prefix':'/v1/',"
        "'methods':['GET','POST'],'headers':{'x-env':'prod','x-ver':{'regex':'^2'}},"
        "'query':{'a':'b c'},'source':['10.0.0.0/8']},"
        "'action':{'forward':[{'group':'api','weight':100}],"
        "'set_request_headers':{'x-api':'1'},'remove_request_headers':['cookie']}},"
        "{'name':'canary','match':{'host':'*.example.com'},"
        "'action':{'forward':[{'group':'blue','weight':90},{'group':'green','weight':10}],"
        "'set_request_headers':{},'remove_request_headers':[]}},"
        "{'name':'moved','match':{'path_prefix':'/old/'},"
        "'action':{'redirect':{'code':301,'path':'/new/'}}},"
        "{'name':'lb-health','match':{'path':'/lb-health'},"
        "'action':{'fixed_response':{'code':200,'content_type':'text/plain','body':'ok'}}},"
        "{'name':'rest','match':{},'action':{'forward':[{'group':'g','weight':100}],"
        "'set_request_headers':{},'remove_request_headers':[]}}]";
    struct slb_err err;
    json_t *n1 = slb_config_normalize_listener(in, "", &err);
    if (!n1)
        print_error("%s\n", err.msg);
    assert_non_null(n1);
    json_t *expect = J(want);
    assert_true(json_equal(json_object_get(n1, "rules"), expect));
    json_t *n2 = slb_config_normalize_listener(n1, "", &err);
    assert_non_null(n2);
    assert_true(json_equal(n1, n2));
    /* A listener without rules shows none: the field stays out of sight until it is usable. */
    json_t *plain = J(HTTP(",'rules':[]"));
    json_t *n3 = slb_config_normalize_listener(plain, "", &err);
    assert_non_null(n3);
    assert_null(json_object_get(n3, "rules"));
    json_decref(in);
    json_decref(n1);
    json_decref(n2);
    json_decref(n3);
    json_decref(plain);
    json_decref(expect);
}

/* A fixed response body is at most 4 KiB; an empty rules list is accepted (nothing to apply). */
static void test_rules_limits(void **state)
{
    (void)state;
    json_t *doc = J(RULES("[{'name':'a','action':{'fixed_response':{'code':200}}}]"));
    json_t *lis = json_array_get(json_object_get(doc, "listeners"), 0);
    json_t *rule = json_array_get(json_object_get(lis, "rules"), 0);
    json_t *fr = json_object_get(json_object_get(rule, "action"), "fixed_response");
    char body[SLB_RULE_BODY_MAX + 2];
    memset(body, 'x', sizeof(body) - 1);
    body[SLB_RULE_BODY_MAX + 1] = '\0';
    json_object_set_new(fr, "body", json_string(body));
    struct slb_config *cfg = NULL;
    struct slb_err err;
    assert_int_equal(slb_config_from_json(doc, &certs, &cfg, &err), SLB_EINVAL);
    assert_string_equal(err.where, "listeners[0].rules[0].action.fixed_response.body");
    body[SLB_RULE_BODY_MAX] = '\0';
    json_object_set_new(fr, "body", json_string(body));
    assert_int_equal(slb_config_from_json(doc, &certs, &cfg, &err), 0);
    assert_int_equal(cfg->listeners[0]->nrules, 1);
    assert_int_equal(cfg->listeners[0]->rules[0].body_len, SLB_RULE_BODY_MAX);
    slb_config_free(cfg);
    json_decref(doc);

    doc = J(RULES("[]"));
    assert_int_equal(slb_config_from_json(doc, &certs, &cfg, &err), 0);
    assert_int_equal(cfg->listeners[0]->nrules, 0);
    slb_config_free(cfg);
    json_decref(doc);
}

static void test_no_cert_lookup(void **state)
{
    (void)state;
    json_t *doc = J(DOC(LIS("https", "*:443", ",'tls':{'certificates':['unknown-yet']}")));
    struct slb_config *cfg = NULL;
    struct slb_err err;
    assert_int_equal(slb_config_from_json(doc, NULL, &cfg, &err), 0);
    assert_string_equal(cfg->listeners[0]->tls.certificates[0], "unknown-yet");
    slb_config_free(cfg);
    json_decref(doc);
}

static void test_example_config(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *doc = json_load_file("examples/config.json", 0, &jerr);
    if (!doc)
        skip(); /* run from outside the source tree */
    struct slb_config *cfg = NULL;
    struct slb_err err;
    int rc = slb_config_from_json(doc, &certs, &cfg, &err);
    if (rc)
        print_error("examples/config.json: %s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg->nlisteners, 3);
    assert_int_equal(cfg->ngroups, 2);
    assert_int_equal(cfg->listeners[0]->protocol, SLB_PROTO_TCP);
    assert_int_equal(cfg->listeners[1]->protocol, SLB_PROTO_HTTP);
    assert_int_equal(cfg->listeners[2]->protocol, SLB_PROTO_HTTPS);
    assert_string_equal(cfg->listeners[2]->tls.certificates[0], "demo");
    assert_round_trip(cfg);
    slb_config_free(cfg);
    json_decref(doc);
}

static void test_name_ok(void **state)
{
    (void)state;
    assert_true(slb_config_name_ok("web"));
    assert_true(slb_config_name_ok("a.b_c-D9"));
    assert_true(slb_config_name_ok("..."));
    assert_true(slb_config_name_ok(
        "012345678901234567890123456789012345678901234567890123456789012")); /* 63 */
    assert_false(slb_config_name_ok(
        "0123456789012345678901234567890123456789012345678901234567890123")); /* 64 */
    assert_false(slb_config_name_ok(""));
    assert_false(slb_config_name_ok(NULL));
    assert_false(slb_config_name_ok("."));
    assert_false(slb_config_name_ok(".."));
    assert_false(slb_config_name_ok("a/b"));
    assert_false(slb_config_name_ok("a b"));
    assert_false(slb_config_name_ok("caf\xc3\xa9"));
}

static void test_parse_hostport(void **state)
{
    (void)state;
    struct sockaddr_storage a, b;
    socklen_t la, lb;
    assert_int_equal(slb_config_parse_hostport("*:80", &a, &la), 0);
    assert_int_equal(slb_config_parse_hostport("0.0.0.0:80", &b, &lb), 0);
    assert_int_equal(la, lb);
    assert_memory_equal(&a, &b, la);
    assert_int_equal(slb_config_parse_hostport("[::1]:443", &a, &la), 0);
    assert_int_equal(a.ss_family, AF_INET6);
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&a)->sin6_port), 443);
    assert_int_equal(slb_config_parse_hostport("127.0.0.1:65535", &a, &la), 0);
    assert_int_equal(ntohs(((struct sockaddr_in *)&a)->sin_port), 65535);
    const char *bad[] = {"",
                         ":80",
                         "1.2.3.4:",
                         "1.2.3.4:0",
                         "1.2.3.4:65536",
                         "1.2.3.4:+80",
                         "1.2.3.4:8 0",
                         "::1:80",
                         "[::1]80",
                         "[::1:80",
                         "[1.2.3.4]:80",
                         "256.0.0.1:80",
                         "host:80",
                         "1.2.3.4:99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (slb_config_parse_hostport(bad[i], &a, &la) != SLB_EINVAL) {
            print_error("accepted \"%s\"\n", bad[i]);
            fail();
        }
    }
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(slb_proto_name(SLB_PROTO_TCP), "tcp");
    assert_string_equal(slb_proto_name(SLB_PROTO_HTTP), "http");
    assert_string_equal(slb_proto_name(SLB_PROTO_HTTPS), "https");
    assert_string_equal(slb_tls_policy_name(SLB_TLS_POLICY_1_2_STRICT),
                        "tls_cipher_policy_1_2_strict");
}

/* Limits on list sizes are enforced, and exactly the limit is accepted. */
static void test_status_and_limits(void **state)
{
    (void)state;
    struct slb_config *cfg = build(DOC(
        HTTP(",'status':'stopped','limits':{'requests_per_s':50,'connections_per_s':7},"
             "'rules':[{'name':'r','match':{'path':'/'},'action':{'forward':[{'group':'g'}]},"
             "'limits':{'requests_per_s':3}}]") ",{'name':'t','protocol':'tcp','bind':'*:5000',"
                                                "'backend_group':'g','limits':{"
                                                "'connections_per_s':9,'requests_per_s':null}}"));
    const struct slb_listener_cfg *l = cfg->listeners[0];
    assert_true(l->stopped);
    assert_int_equal(l->requests_per_s, 50);
    assert_int_equal(l->connections_per_s, 7);
    assert_int_equal(l->rules[0].requests_per_s, 3);
    assert_false(cfg->listeners[1]->stopped);
    assert_int_equal(cfg->listeners[1]->connections_per_s, 9);
    json_t *want = J("{'connections_per_s':7,'requests_per_s':50}");
    json_t *got = json_array_get(json_object_get(cfg->json, "listeners"), 0);
    assert_true(json_equal(json_object_get(got, "limits"), want));
    assert_string_equal(json_string_value(json_object_get(got, "status")), "stopped");
    json_decref(want);
    want = J("{'requests_per_s':3}");
    got = json_array_get(json_object_get(got, "rules"), 0);
    assert_true(json_equal(json_object_get(got, "limits"), want));
    json_decref(want);
    want = J("{'connections_per_s':9}");
    got = json_array_get(json_object_get(cfg->json, "listeners"), 1);
    assert_true(json_equal(json_object_get(got, "limits"), want));
    json_decref(want);
    assert_round_trip(cfg);
    slb_config_free(cfg);
}

static void test_limits(void **state)
{
    (void)state;
    json_t *servers = json_array();
    for (int i = 0; i < SLB_MAX_SERVERS + 1; i++) {
        char addr[32];
        snprintf(addr, sizeof(addr), "10.0.%d.%d", i / 256, i % 256);
        json_array_append_new(servers, json_pack("{s:s, s:i}", "address", addr, "port", 80));
    }
    json_t *doc = json_pack("{s:[{s:s, s:o}]}", "groups", "name", "g", "servers", servers);
    struct slb_config *cfg = NULL;
    struct slb_err err;
    assert_int_equal(slb_config_from_json(doc, NULL, &cfg, &err), SLB_EINVAL);
    assert_string_equal(err.code, "invalid_value");
    assert_string_equal(err.where, "groups[0].servers");
    json_array_remove(servers, 0);
    assert_int_equal(slb_config_from_json(doc, NULL, &cfg, &err), 0);
    assert_int_equal(cfg->groups[0]->nservers, SLB_MAX_SERVERS);
    slb_config_free(cfg);
    json_decref(doc);

    json_t *cidrs = json_array();
    for (int i = 0; i < 1001; i++)
        json_array_append_new(cidrs, json_string("10.0.0.0/8"));
    doc = J("{'listeners':[{'name':'l','protocol':'http','bind':'*:80',"
            "'redirect_to':'https://x'}]}");
    json_t *acl = json_pack("{s:s, s:o}", "mode", "allow", "cidrs", cidrs);
    json_object_set_new(json_array_get(json_object_get(doc, "listeners"), 0), "acl", acl);
    assert_int_equal(slb_config_from_json(doc, NULL, &cfg, &err), SLB_EINVAL);
    assert_string_equal(err.where, "listeners[0].acl.cidrs");
    json_decref(doc);
}

/* Lookups counted, with a generation the test moves, for the reuse tests. */
static int lookups;
static int counting_type_of(void *arg, const char *id)
{
    lookups++;
    return fake_type_of(arg, id);
}

/* The next document as src/ops makes it: doc and its array coll copied, elements shared. */
static json_t *doc_with(const json_t *doc, const char *coll, json_t **arr)
{
    json_t *d = json_copy((json_t *)doc);
    *arr = json_copy(json_object_get(doc, coll));
    json_object_set_new(d, coll, *arr);
    return d;
}

#define RLIS(n, port, group)                                                                       \
    "{'name':'" n "','protocol':'https','bind':'*:" port "','backend_group':'" group "',"          \
    "'tls':{'certificates':['demo','other']}}"
#define RDOC "{" GROUPS ",'listeners':[" RLIS("a", "443", "g") "," RLIS("b", "444", "h") "]}"

/* A change takes from the running configuration every listener, group and settings object
 * whose JSON is the very same object: the parsed struct (by pointer) and the JSON (by pointer,
 * so the next change finds it again), without looking its certificate ids up again. */
static void test_reuse_unchanged(void **state)
{
    (void)state;
    struct slb_cert_lookup cl = {counting_type_of, NULL, 7};
    struct slb_config *c1, *c2, *c3;
    struct slb_err err = {0};
    json_t *doc = J(RDOC);
    assert_int_equal(slb_config_from_json(doc, &cl, &c1, &err), 0);
    json_decref(doc);

    /* A weight change in group h: a new h object, everything else shared. */
    json_t *groups, *d2 = doc_with(c1->json, "groups", &groups);
    json_t *h = json_deep_copy(json_array_get(groups, 1));
    json_integer_set(json_object_get(json_array_get(json_object_get(h, "servers"), 0), "weight"),
                     50);
    json_array_set_new(groups, 1, h);
    lookups = 0;
    assert_int_equal(slb_config_from_json_prev(d2, &cl, c1, &c2, &err), 0);
    json_decref(d2);
    assert_int_equal(lookups, 0);
    for (size_t i = 0; i < 2; i++) {
        assert_ptr_equal(c2->listeners[i], c1->listeners[i]);
        assert_ptr_equal(json_array_get(json_object_get(c2->json, "listeners"), i),
                         json_array_get(json_object_get(c1->json, "listeners"), i));
    }
    assert_ptr_equal(c2->groups[0], c1->groups[0]);
    assert_ptr_not_equal(c2->groups[1], c1->groups[1]);
    assert_int_equal(c2->groups[1]->servers[0].weight, 50);
    assert_ptr_equal(json_object_get(c2->json, "settings"), json_object_get(c1->json, "settings"));
    assert_int_equal(c2->listeners[0]->refs, 2);

    /* The same document again (a certificate replace re-applies it): everything shared. */
    assert_int_equal(slb_config_from_json_prev(c2->json, &cl, c2, &c3, &err), 0);
    assert_ptr_equal(c3->groups[1], c2->groups[1]);
    assert_ptr_equal(c3->listeners[1], c2->listeners[1]);
    assert_int_equal(lookups, 0);
    /* Freeing the older ones leaves the shared parts to the newest. */
    slb_config_free(c1);
    slb_config_free(c2);
    assert_int_equal(c3->listeners[0]->refs, 1);
    assert_string_equal(c3->listeners[1]->tls.certificates[1], "other");

    /* Certificate ids added or removed since (another generation): looked up again, and a
     * listener's own change is parsed again. */
    cl.gen = 8;
    json_t *lis, *d4 = doc_with(c3->json, "listeners", &lis);
    json_t *b = json_deep_copy(json_array_get(lis, 1));
    json_object_set_new(b, "max_connections", json_integer(5));
    json_array_set_new(lis, 1, b);
    struct slb_config *c4;
    assert_int_equal(slb_config_from_json_prev(d4, &cl, c3, &c4, &err), 0);
    json_decref(d4);
    assert_int_equal(lookups, 4);
    assert_ptr_equal(c4->listeners[0], c3->listeners[0]);
    assert_ptr_not_equal(c4->listeners[1], c3->listeners[1]);
    assert_int_equal(c4->listeners[1]->max_connections, 5);
    slb_config_free(c3);
    slb_config_free(c4);
}

/* What a reused listener was checked against is checked again when it changed: a group it
 * names renamed away, a certificate it names deleted; the running configuration is untouched
 * by the refused change. */
static void test_reuse_rechecks(void **state)
{
    (void)state;
    struct slb_cert_lookup cl = {counting_type_of, NULL, 7};
    struct slb_config *c1, *c2 = NULL;
    struct slb_err err = {0};
    json_t *doc = J(RDOC);
    assert_int_equal(slb_config_from_json(doc, &cl, &c1, &err), 0);
    json_decref(doc);

    json_t *groups, *d2 = doc_with(c1->json, "groups", &groups);
    json_t *h = json_deep_copy(json_array_get(groups, 1));
    json_object_set_new(h, "name", json_string("h2"));
    json_array_set_new(groups, 1, h);
    assert_int_equal(slb_config_from_json_prev(d2, &cl, c1, &c2, &err), SLB_EINVAL);
    assert_null(c2);
    assert_string_equal(err.code, "unknown_group");
    assert_string_equal(err.where, "listeners[1].backend_group");
    json_array_remove(groups, 1); /* deleted */
    memset(&err, 0, sizeof(err));
    assert_int_equal(slb_config_from_json_prev(d2, &cl, c1, &c2, &err), SLB_EINVAL);
    assert_string_equal(err.code, "unknown_group");
    json_decref(d2);

    /* "other" is gone from the store (a new generation): the reused listeners name it. */
    struct slb_cert_lookup gone = {fake_type_of_demo_only, NULL, 9};
    memset(&err, 0, sizeof(err));
    assert_int_equal(slb_config_from_json_prev(c1->json, &gone, c1, &c2, &err), SLB_EINVAL);
    assert_string_equal(err.code, "unknown_certificate");
    assert_string_equal(err.where, "listeners[0].tls.certificates[1]");

    /* A duplicate of a reused listener's name or address is found as before. */
    json_t *lis, *d3 = doc_with(c1->json, "listeners", &lis);
    json_array_append_new(lis, J(RLIS("a", "445", "g")));
    memset(&err, 0, sizeof(err));
    assert_int_equal(slb_config_from_json_prev(d3, &cl, c1, &c2, &err), SLB_EINVAL);
    assert_string_equal(err.code, "duplicate_name");
    json_decref(d3);
    d3 = doc_with(c1->json, "listeners", &lis);
    json_array_append_new(lis, J(RLIS("c", "444", "g")));
    assert_int_equal(slb_config_from_json_prev(d3, &cl, c1, &c2, &err), SLB_EINVAL);
    assert_string_equal(err.code, "bind_conflict");
    json_decref(d3);

    /* The running configuration is whole: its listeners still belong to it alone. */
    assert_int_equal(c1->listeners[0]->refs, 1);
    assert_int_equal(c1->groups[1]->refs, 1);
    assert_string_equal(c1->groups[1]->name, "h");
    slb_config_free(c1);
}

/* Which listeners name a certificate, from the index kept across changes. */
static void test_cert_users(void **state)
{
    (void)state;
    struct slb_config *c1, *c2;
    struct slb_err err = {0};
    json_t *doc = J("{" GROUPS ",'listeners':[" RLIS("a", "443", "g") "," RLIS(
        "b", "444", "h") ",{'name':'c','protocol':'https','bind':'*:445','backend_group':'g',"
                         "'tls':{'certificates':['other'],'client_ca':'ca1'}}]}");
    assert_int_equal(slb_config_from_json(doc, &certs, &c1, &err), 0);
    json_decref(doc);
    size_t idx[4];
    assert_int_equal(slb_config_cert_users(c1, "demo", idx, 4), 2);
    assert_int_equal(idx[0], 0);
    assert_int_equal(idx[1], 1);
    assert_int_equal(slb_config_cert_users(c1, "other", idx, 1), 3);
    assert_int_equal(idx[0], 0);
    assert_int_equal(slb_config_cert_users(c1, "ca1", idx, 4), 1);
    assert_int_equal(idx[0], 2);
    assert_int_equal(slb_config_cert_users(c1, "nope", idx, 4), 0);
    assert_int_equal(slb_config_cert_users(c1, "", idx, 4), 0);
    /* The same listeners: the index is handed on, not made again. */
    assert_int_equal(slb_config_from_json_prev(c1->json, &certs, c1, &c2, &err), 0);
    assert_ptr_equal(c2->cert_users, c1->cert_users);
    slb_config_free(c1);
    assert_int_equal(slb_config_cert_users(c2, "other", idx, 4), 3);
    assert_int_equal(idx[2], 2);
    slb_config_free(c2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_documents),
        cmocka_unit_test(test_error_messages),
        cmocka_unit_test(test_listener_clash_first),
        cmocka_unit_test(test_empty_document),
        cmocka_unit_test(test_group_defaults),
        cmocka_unit_test(test_group_values),
        cmocka_unit_test(test_listener_defaults_http),
        cmocka_unit_test(test_listener_defaults_tcp),
        cmocka_unit_test(test_listener_defaults_https),
        cmocka_unit_test(test_listener_values),
        cmocka_unit_test(test_acl_ipv4_mapped),
        cmocka_unit_test(test_redirect_listener),
        cmocka_unit_test(test_normalize_idempotent),
        cmocka_unit_test(test_normalize_api_paths),
        cmocka_unit_test(test_rules_normalized),
        cmocka_unit_test(test_rules_limits),
        cmocka_unit_test(test_no_cert_lookup),
        cmocka_unit_test(test_example_config),
        cmocka_unit_test(test_name_ok),
        cmocka_unit_test(test_parse_hostport),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_status_and_limits),
        cmocka_unit_test(test_reuse_unchanged),
        cmocka_unit_test(test_reuse_rechecks),
        cmocka_unit_test(test_cert_users),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
