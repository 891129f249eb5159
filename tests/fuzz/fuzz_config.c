/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for configuration validation over JSON (src/config/config.h): whole
 * documents through slb_config_from_json and single resources through the normalize functions
 * the admin API uses, parsed by jansson exactly as the API parses bodies. Besides memory
 * safety it checks that errors are well-formed, that an accepted model keeps the documented
 * bounds, and that normalization is a fixed point: what slbd stores and serves back must be
 * accepted again unchanged, or a restart or an edit of a GET result would fail. */
#include "config/config.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An invariant failed: say which and crash, so libFuzzer keeps the input. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_config: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A certificate store stand-in: ids starting with "ca" are CA certificates, "missing" and
 * ids starting with "x" do not exist, anything else is a server certificate. */
static int fake_type_of(void *arg, const char *id)
{
    if (strcmp(id, "missing") == 0 || id[0] == 'x')
        return 0;
    return strncmp(id, "ca", 2) == 0 ? 2 : 1;
}

static const struct slb_cert_lookup lookup = {fake_type_of, NULL, 1};

static void check_err(const struct slb_err *err)
{
    /* The codes of config.h, plus the two the code also uses for conflicts and for fields of
     * another protocol. */
    static const char *const codes[] = {
        "invalid_value",       "unknown_field", "wrong_type",    "duplicate_name", "unknown_group",
        "unknown_certificate", "missing_field", "bind_conflict", "invalid_field",  "internal",
        "conflicting_actions"};
    CHECK(err->status == 400 || (err->status == 500 && strcmp(err->code, "internal") == 0));
    CHECK(memchr(err->code, '\0', sizeof(err->code)) && memchr(err->msg, '\0', sizeof(err->msg)));
    CHECK(memchr(err->where, '\0', sizeof(err->where)) != NULL);
    bool known = false;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        known |= strcmp(err->code, codes[i]) == 0;
    if (!known)
        fprintf(stderr, "fuzz_config: unexpected code \"%s\": %s\n", err->code, err->msg);
    CHECK(known);
    CHECK(err->msg[0] != '\0');
}

static void dump(const char *what, const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    fprintf(stderr, "%s: %s\n", what, s ? s : "(null)");
    free(s);
}

static void check_group(const struct slb_group_cfg *g)
{
    CHECK(slb_config_name_ok(g->name));
    CHECK(g->nservers <= SLB_MAX_SERVERS && (g->nservers == 0 || g->servers != NULL));
    for (size_t i = 0; i < g->nservers; i++) {
        const struct slb_server_cfg *s = &g->servers[i];
        CHECK(s->weight <= 100);
        CHECK(memchr(s->address, '\0', sizeof(s->address)) != NULL);
        CHECK(s->addr.ss_family == AF_INET || s->addr.ss_family == AF_INET6);
    }
    const struct slb_health_cfg *hc = &g->hc;
    CHECK(hc->interval_s >= 1 && hc->interval_s <= 50);
    CHECK(hc->timeout_s >= 1 && hc->timeout_s <= 300);
    CHECK(hc->healthy_threshold >= 2 && hc->healthy_threshold <= 10);
    CHECK(hc->unhealthy_threshold >= 2 && hc->unhealthy_threshold <= 10);
    CHECK((hc->http_codes & ~0x3cu) == 0);
    CHECK(memchr(hc->uri, '\0', sizeof(hc->uri)) && memchr(hc->domain, '\0', sizeof(hc->domain)));
}

static void check_listener(const struct slb_config *cfg, const struct slb_listener_cfg *l)
{
    CHECK(slb_config_name_ok(l->name));
    CHECK(l->protocol == SLB_PROTO_TCP || l->protocol == SLB_PROTO_HTTP ||
          l->protocol == SLB_PROTO_HTTPS);
    CHECK(l->addr.ss_family == AF_INET || l->addr.ss_family == AF_INET6);
    CHECK(l->proxy_protocol >= 0 && l->proxy_protocol <= 2);
    CHECK(l->backend_group[0] ? slb_config_group(cfg, l->backend_group) != NULL
                              : l->redirect_to[0] != '\0');
    for (size_t i = 0; i < l->nsni_routes; i++)
        CHECK(slb_config_group(cfg, l->sni_routes[i].group) != NULL);
    if (l->protocol == SLB_PROTO_HTTPS) {
        CHECK(l->tls.ncertificates >= 1);
        for (size_t i = 0; i < l->tls.ncertificates; i++)
            CHECK(slb_config_name_ok(l->tls.certificates[i]));
        CHECK(l->tls.session_ticket_lifetime_s <= 86400);
        CHECK(l->tls.nalpn <= 2);
    }
    if (l->acl_mode != SLB_ACL_NONE)
        for (size_t i = 0; i < l->nacl; i++)
            CHECK((l->acl[i].family == AF_INET && l->acl[i].prefix <= 32) ||
                  (l->acl[i].family == AF_INET6 && l->acl[i].prefix <= 128));
}

/* The typed model built from the normalized document is the one built from the original:
 * normalizing fills in defaults, it never changes a value. */
static void check_same_model(const struct slb_config *a, const struct slb_config *b)
{
    CHECK(a->nlisteners == b->nlisteners && a->ngroups == b->ngroups);
    for (size_t i = 0; i < a->ngroups; i++) {
        const struct slb_group_cfg *x = a->groups[i], *y = b->groups[i];
        CHECK(strcmp(x->name, y->name) == 0 && x->scheduler == y->scheduler);
        CHECK(x->nservers == y->nservers);
        for (size_t k = 0; k < x->nservers; k++) {
            const struct slb_server_cfg *s = &x->servers[k], *t = &y->servers[k];
            CHECK(s->port == t->port && s->weight == t->weight && s->addrlen == t->addrlen);
            CHECK(memcmp(&s->addr, &t->addr, s->addrlen) == 0);
        }
        const struct slb_health_cfg *h = &x->hc, *g = &y->hc;
        CHECK(h->enabled == g->enabled && h->protocol == g->protocol && h->method == g->method);
        CHECK(strcmp(h->uri, g->uri) == 0 && strcmp(h->domain, g->domain) == 0);
        CHECK(h->http_codes == g->http_codes && h->interval_s == g->interval_s);
        CHECK(h->timeout_s == g->timeout_s && h->healthy_threshold == g->healthy_threshold);
        CHECK(h->unhealthy_threshold == g->unhealthy_threshold && h->port == g->port);
    }
    for (size_t i = 0; i < a->nlisteners; i++) {
        const struct slb_listener_cfg *x = a->listeners[i], *y = b->listeners[i];
        CHECK(strcmp(x->name, y->name) == 0 && x->protocol == y->protocol);
        CHECK(x->addrlen == y->addrlen && memcmp(&x->addr, &y->addr, x->addrlen) == 0);
        CHECK(strcmp(x->backend_group, y->backend_group) == 0);
        CHECK(x->max_connections == y->max_connections);
        CHECK(x->connect_timeout_ms == y->connect_timeout_ms);
        CHECK(x->proxy_protocol == y->proxy_protocol);
        CHECK(x->established_timeout_s == y->established_timeout_s);
        CHECK(x->nsni_routes == y->nsni_routes);
        for (size_t k = 0; k < x->nsni_routes; k++)
            CHECK(strcmp(x->sni_routes[k].server_name, y->sni_routes[k].server_name) == 0 &&
                  strcmp(x->sni_routes[k].group, y->sni_routes[k].group) == 0);
        CHECK(x->x_forwarded_for == y->x_forwarded_for);
        CHECK(x->x_forwarded_proto == y->x_forwarded_proto);
        CHECK(x->header_timeout_s == y->header_timeout_s);
        CHECK(x->idle_timeout_s == y->idle_timeout_s);
        CHECK(x->request_timeout_s == y->request_timeout_s);
        CHECK(strcmp(x->redirect_to, y->redirect_to) == 0);
        CHECK(x->sticky == y->sticky && strcmp(x->sticky_cookie, y->sticky_cookie) == 0);
        CHECK(x->sticky_timeout_s == y->sticky_timeout_s);
        CHECK(x->acl_mode == y->acl_mode && x->nacl == y->nacl);
        for (size_t k = 0; k < x->nacl; k++)
            CHECK(x->acl[k].family == y->acl[k].family && x->acl[k].prefix == y->acl[k].prefix &&
                  memcmp(x->acl[k].addr, y->acl[k].addr, 16) == 0);
        const struct slb_tls_cfg *t = &x->tls, *u = &y->tls;
        CHECK(t->ncertificates == u->ncertificates);
        for (size_t k = 0; k < t->ncertificates; k++)
            CHECK(strcmp(t->certificates[k], u->certificates[k]) == 0);
        CHECK(strcmp(t->client_ca, u->client_ca) == 0 && t->client_auth == u->client_auth);
        CHECK(t->policy == u->policy);
        CHECK(t->session_ticket_lifetime_s == u->session_ticket_lifetime_s);
        CHECK(t->nalpn == u->nalpn);
        for (size_t k = 0; k < t->nalpn; k++)
            CHECK(strcmp(t->alpn[k], u->alpn[k]) == 0);
    }
    CHECK(a->settings.drain_timeout_s == b->settings.drain_timeout_s);
    CHECK(strcmp(a->settings.access_log, b->settings.access_log) == 0);
}

/* An accepted document: bounds, lookups, and the normalized form accepted again as itself. */
static void check_config(const struct slb_config *cfg, const struct slb_cert_lookup *certs)
{
    CHECK(cfg->nlisteners <= SLB_MAX_LISTENERS && cfg->ngroups <= SLB_MAX_GROUPS);
    for (size_t i = 0; i < cfg->ngroups; i++) {
        check_group(cfg->groups[i]);
        CHECK(slb_config_group(cfg, cfg->groups[i]->name) == cfg->groups[i]);
    }
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        check_listener(cfg, cfg->listeners[i]);
        CHECK(slb_config_listener(cfg, cfg->listeners[i]->name) == cfg->listeners[i]);
        if (certs && cfg->listeners[i]->protocol == SLB_PROTO_HTTPS)
            for (size_t k = 0; k < cfg->listeners[i]->tls.ncertificates; k++)
                CHECK(fake_type_of(NULL, cfg->listeners[i]->tls.certificates[k]) == 1);
    }
    CHECK(cfg->settings.drain_timeout_s <= 3600);
    CHECK(json_is_object(cfg->json) && json_object_size(cfg->json) == 3);
    CHECK(json_array_size(json_object_get(cfg->json, "listeners")) == cfg->nlisteners);
    CHECK(json_array_size(json_object_get(cfg->json, "groups")) == cfg->ngroups);

    struct slb_config *again = NULL;
    struct slb_err err = {0};
    int rc = slb_config_from_json(cfg->json, certs, &again, &err);
    if (rc) {
        dump("normalized document", cfg->json);
        fprintf(stderr, "refused again: %s (%s) at %s\n", err.msg, err.code, err.where);
    }
    CHECK(rc == 0 && again != NULL);
    if (!json_equal(again->json, cfg->json)) {
        dump("normalized once", cfg->json);
        dump("normalized twice", again->json);
    }
    CHECK(json_equal(again->json, cfg->json));
    check_same_model(cfg, again);
    slb_config_free(again);

    /* The normalized document applied as a change to its own configuration: every listener
     * and group is the very json_t of prev, so each is taken parsed, and the model is the
     * same. */
    again = NULL;
    rc = slb_config_from_json_prev(cfg->json, certs, cfg, &again, &err);
    CHECK(rc == 0 && again != NULL);
    CHECK(json_equal(again->json, cfg->json));
    for (size_t k = 0; k < again->nlisteners; k++)
        CHECK(again->listeners[k] == cfg->listeners[k]);
    for (size_t k = 0; k < again->ngroups; k++)
        CHECK(again->groups[k] == cfg->groups[k]);
    check_same_model(cfg, again);
    slb_config_free(again);

    /* What the API stores for each resource is its normalized form too. */
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(cfg->json, "listeners"), i, v)
    {
        json_t *n = slb_config_normalize_listener(v, "", &err);
        CHECK(n != NULL && json_equal(n, v));
        json_decref(n);
    }
    json_array_foreach(json_object_get(cfg->json, "groups"), i, v)
    {
        json_t *n = slb_config_normalize_group(v, "", &err);
        CHECK(n != NULL && json_equal(n, v));
        json_decref(n);
    }
}

/* One resource as an API body: error or a normalized form that normalizes to itself. */
static void check_normalize(const json_t *in,
                            json_t *(*normalize)(const json_t *, const char *, struct slb_err *))
{
    struct slb_err err = {0};
    json_t *n = normalize(in, "", &err);
    if (!n) {
        check_err(&err);
        return;
    }
    CHECK(json_is_object(n));
    CHECK(slb_config_name_ok(json_string_value(json_object_get(n, "name"))));
    memset(&err, 0, sizeof(err));
    json_t *n2 = normalize(n, "", &err);
    if (!n2 || !json_equal(n, n2)) {
        dump("input", in);
        dump("normalized once", n);
        dump("normalized twice", n2);
        fprintf(stderr, "error: %s (%s)\n", err.msg, err.code);
    }
    CHECK(n2 != NULL && json_equal(n, n2));
    /* A path prefix only changes messages, never the outcome. */
    json_t *n3 = normalize(in, "listeners[3]", &err);
    CHECK(n3 != NULL && json_equal(n, n3));
    json_decref(n);
    json_decref(n2);
    json_decref(n3);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return 0;

    struct slb_config *cfg = NULL, *cfg2 = NULL;
    struct slb_err err = {0}, err2 = {0};
    int rc = slb_config_from_json(doc, NULL, &cfg, &err);
    if (rc) {
        check_err(&err);
        CHECK(cfg == NULL);
    } else {
        CHECK(cfg != NULL);
        check_config(cfg, NULL);
    }
    /* A certificate lookup only adds reasons to refuse. */
    int rc2 = slb_config_from_json(doc, &lookup, &cfg2, &err2);
    if (rc2) {
        check_err(&err2);
        CHECK(cfg2 == NULL);
    } else {
        CHECK(rc == 0 && cfg2 != NULL);
        check_config(cfg2, &lookup);
        CHECK(json_equal(cfg->json, cfg2->json));
    }
    slb_config_free(cfg);
    slb_config_free(cfg2);

    /* The admin API's bodies: the document itself, and each element of its arrays. */
    check_normalize(doc, slb_config_normalize_listener);
    check_normalize(doc, slb_config_normalize_group);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(doc, "listeners"), i, v)
    {
        check_normalize(v, slb_config_normalize_listener);
    }
    json_array_foreach(json_object_get(doc, "groups"), i, v)
    {
        check_normalize(v, slb_config_normalize_group);
    }
    json_decref(doc);
    return 0;
}
