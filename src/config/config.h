/* SPDX-License-Identifier: Apache-2.0 */
/* The configuration model: listeners, backend groups and settings, parsed and validated from
 * JSON (config.json, the admin API, `slbctl apply`). One validation path serves all three.
 * A struct slb_config is immutable once built; it is owned by the snapshot that holds it. */
#ifndef SLB_CONFIG_CONFIG_H
#define SLB_CONFIG_CONFIG_H

#include "core/err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A listener's gzip_types: "type/subtype", "type/STAR" or "type/STAR+suffix" (STAR: an
 * asterisk), lower case. */
#define SLB_GZIP_TYPES_MAX 32
#define SLB_GZIP_TYPE_MAX 64
#define SLB_NAME_MAX 64 /* names and ids: [A-Za-z0-9._-], 1..63 chars, not "." or ".." */
#define SLB_MAX_SERVERS 10000
#define SLB_MAX_LISTENERS 1000
#define SLB_MAX_GROUPS 256

enum slb_proto { SLB_PROTO_TCP, SLB_PROTO_HTTP, SLB_PROTO_HTTPS };
enum slb_hc_proto { SLB_HC_TCP, SLB_HC_HTTP };
enum slb_hc_method { SLB_HC_HEAD, SLB_HC_GET };
enum slb_sticky { SLB_STICKY_NONE, SLB_STICKY_INSERT, SLB_STICKY_SERVER };
enum slb_acl_mode { SLB_ACL_NONE, SLB_ACL_ALLOW, SLB_ACL_DENY };
/* Which requests may go on a pooled backend connection: "safe", all but the first of a client
 * connection (that one gets a new connection); "always", any. */
enum slb_backend_reuse { SLB_REUSE_SAFE, SLB_REUSE_ALWAYS };
enum slb_client_auth { SLB_CLIENT_AUTH_REQUIRED, SLB_CLIENT_AUTH_OPTIONAL };
enum slb_tls_policy {
    SLB_TLS_POLICY_1_0,
    SLB_TLS_POLICY_1_1,
    SLB_TLS_POLICY_1_2,
    SLB_TLS_POLICY_1_2_STRICT,
    SLB_TLS_POLICY_1_2_STRICT_WITH_1_3,
};

struct slb_server_cfg {
    char address[64]; /* IPv4/IPv6 literal as given */
    uint16_t port;
    char authority[74]; /* "address:port" or "[address]:port": Host for requests without one */
    uint32_t weight;    /* 0..100, 0 drains */
    struct sockaddr_storage addr;
    socklen_t addrlen;
};

/* Passive checks: the outcome of real traffic takes a server out for a while. */
struct slb_passive_cfg {
    bool enabled;                  /* default false */
    uint32_t consecutive_failures; /* 1..1000, default 5 */
    bool include_5xx;              /* 5xx responses count as failures; default false */
    uint32_t ejection_s;           /* 1..3600, default 30 */
};

struct slb_health_cfg {
    bool enabled;                 /* default true */
    enum slb_hc_proto protocol;   /* default tcp */
    char uri[256];                /* http: default "/" */
    char domain[256];             /* http: Host header; default the server address */
    enum slb_hc_method method;    /* default head */
    uint32_t http_codes;          /* bit n set = class nxx accepted (n 2..5); default 2xx|3xx */
    uint32_t interval_s;          /* 1..50, default 2 */
    uint32_t timeout_s;           /* 1..300, default 5 */
    uint32_t healthy_threshold;   /* 2..10, default 3 */
    uint32_t unhealthy_threshold; /* 2..10, default 3 */
    uint16_t port;                /* 0 = the server's port */
    struct slb_passive_cfg passive;
};

/* A parsed group or listener is shared by consecutive configurations while its JSON object
 * stays the same (slb_config_from_json_prev): refs counts the configurations holding it
 * (control thread only) and serial, unique per parse, names it for the caches of later
 * stages (a TLS context is reused for the same serial, src/tls/ctx.c). */
struct slb_group_cfg {
    int refs;
    uint64_t serial;
    char name[SLB_NAME_MAX];
    int scheduler; /* enum slb_sched_kind */
    struct slb_server_cfg *servers;
    size_t nservers;
    struct slb_health_cfg hc;
};

struct slb_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    uint8_t prefix;
};

struct slb_tls_cfg {
    char (*certificates)[SLB_NAME_MAX]; /* certificate ids; the first is the default */
    size_t ncertificates;
    char client_ca[SLB_NAME_MAX];       /* empty = one-way authentication */
    enum slb_client_auth client_auth;   /* default required */
    enum slb_tls_policy policy;         /* default 1_2_strict_with_1_3 */
    uint32_t session_ticket_lifetime_s; /* 0..7200, default 300; 0 disables tickets */
    uint32_t session_max_age_s;         /* 1..86400, default 3600: age of a session's full
                                           handshake beyond which it no longer resumes */
    char alpn[2][16];                   /* subset of "h2", "http/1.1" in preference order */
    size_t nalpn;
};

struct slb_sni_route {
    char server_name[256];
    char group[SLB_NAME_MAX];
};

/* Forwarding rules of an http/https listener (src/config/rules.c). Every pointer is owned by
 * the rule and freed with the listener's configuration; NULL or 0 means "not set". */
#define SLB_RULES_MAX 1000
#define SLB_RULE_BODY_MAX 4096
enum slb_rule_action { SLB_RULE_FORWARD, SLB_RULE_REDIRECT, SLB_RULE_FIXED };

/* A header or query condition, or a header to set. */
struct slb_rule_kv {
    char *name;  /* headers: lower-cased */
    char *value; /* exact value, or the pattern when regex */
    bool regex;
};

struct slb_rule_target {
    char group[SLB_NAME_MAX];
    uint32_t weight; /* 0..100; the targets' sum is above 0 */
};

struct slb_rule_cfg {
    char name[SLB_NAME_MAX];
    /* conditions, all of which hold for the rule to apply */
    char *host;          /* lower-cased; "*.suffix" matches any name ending ".suffix" */
    char *path;          /* exact, on the normalized path */
    char *path_prefix;   /* on the normalized path */
    char *path_regex;    /* PCRE2, on the normalized path */
    char (*methods)[16]; /* upper-cased tokens */
    size_t nmethods;
    struct slb_rule_kv *headers; /* value exact or regex; any occurrence may match */
    size_t nheaders;
    struct slb_rule_kv *query; /* exact, compared with the percent-decoded pair */
    size_t nquery;
    struct slb_cidr *source;
    size_t nsource;
    /* action */
    enum slb_rule_action action;
    struct slb_rule_target *forward;
    size_t nforward;
    struct slb_rule_kv *set_headers;
    size_t nset_headers;
    char **remove_headers; /* lower-cased */
    size_t nremove_headers;
    uint16_t code;      /* redirect 301/302/303/307/308, fixed_response 200..599 */
    char *redir_scheme; /* "http" or "https" */
    char *redir_host;
    uint16_t redir_port; /* 0 = not set */
    char *redir_path;
    char *redir_query; /* without '?'; "" drops the query */
    char *content_type;
    char *body;
    size_t body_len;
    uint32_t requests_per_s; /* limits.requests_per_s of the rule; 0 = none */
};

struct slb_listener_cfg {
    int refs; /* as struct slb_group_cfg's */
    uint64_t serial;
    char name[SLB_NAME_MAX];
    enum slb_proto protocol;
    char bind[80]; /* "ADDR:PORT" or "[v6]:PORT" as given */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char backend_group[SLB_NAME_MAX]; /* may be empty only with redirect_to */
    uint32_t max_connections;         /* 0 = unlimited (bounded by fds) */
    uint32_t connect_timeout_ms;      /* backend connect, default 5000 */
    bool stopped;                     /* status "stopped": configured, but no socket */
    /* limits (0 = none), across all workers together (core/ratelimit.h) */
    uint32_t connections_per_s; /* new connections beyond it are reset at accept */
    uint32_t requests_per_s;    /* http/https: requests beyond it get 503 with Retry-After */
    uint32_t bandwidth_mbps;    /* http/https: what slbd sends to clients, shaped to it */
    /* tcp */
    int proxy_protocol;             /* 0 none, 1 or 2 */
    uint32_t established_timeout_s; /* default 900 */
    struct slb_sni_route *sni_routes;
    size_t nsni_routes;
    /* http, https */
    bool x_forwarded_for, x_forwarded_proto; /* default true */
    uint32_t header_timeout_s;               /* default 10 */
    uint32_t idle_timeout_s;                 /* default 15 */
    uint32_t request_timeout_s;              /* default 60 */
    char redirect_to[256];                   /* empty or "https://host[:port]" target for 301s */
    enum slb_backend_reuse backend_reuse;    /* default safe */
    enum slb_sticky sticky;
    char sticky_cookie[64];
    uint32_t sticky_timeout_s;
    enum slb_acl_mode acl_mode;
    struct slb_cidr *acl;
    size_t nacl;
    struct slb_rule_cfg *rules; /* in order: the first rule whose conditions hold wins */
    size_t nrules;
    /* Response compression (http/gzip.h); gzip_types holds the defaults when none are set. */
    bool gzip;
    uint8_t ngzip_types;
    char gzip_types[SLB_GZIP_TYPES_MAX][SLB_GZIP_TYPE_MAX];
    /* https */
    struct slb_tls_cfg tls;
};

struct slb_settings {
    uint32_t drain_timeout_s; /* graceful stop bound, default 10 */
    char access_log[256];     /* "" off, "stdout", or a file name inside the state dir */
};

struct slb_config {
    struct slb_listener_cfg **listeners; /* each referenced (refs) by this configuration */
    size_t nlisteners;
    struct slb_group_cfg **groups;
    size_t ngroups;
    struct slb_settings settings;
    json_t *json; /* the normalized document (defaults filled in), owned */
    /* slb_cert_lookup.gen the certificate ids were checked against (0: not checked) */
    uint64_t certs_gen;
    /* certificate id -> number of listeners naming it, made on first use (slb_config_cert_users)
     * and handed to the next configuration when its listeners are the same structs */
    struct slb_cert_users *cert_users;
};

/* Optional hook that answers whether a certificate id exists and its type ("server"/"ca");
 * NULL skips the check (used before the certificate store is loaded). */
struct slb_cert_users;

struct slb_cert_lookup {
    int (*type_of)(void *arg, const char *id); /* 0 missing, 1 server, 2 ca */
    void *arg;
    /* Changes whenever a certificate id appears, goes or changes type (never 0 when set); 0:
     * unknown, every id is looked up again. */
    uint64_t gen;
};

/* Validate a whole configuration document and build the typed model. Unknown fields, wrong
 * types, out-of-range values, duplicate names, unknown backend groups or certificate ids and
 * two listeners on one bind address are errors: err names the JSON path ("listeners[1].bind")
 * and code ("invalid_value", "unknown_field", "wrong_type", "duplicate_name", "unknown_group",
 * "unknown_certificate", "missing_field", "conflicting_actions" in a rule's action).
 * Does not take ownership of doc. */
int slb_config_from_json(const json_t *doc, const struct slb_cert_lookup *certs,
                         struct slb_config **out, struct slb_err *err);
/* The same for a change to prev (the running configuration; NULL is slb_config_from_json):
 * every listener, group or settings object of doc that is the very json_t of prev->json is
 * taken parsed from prev rather than parsed again, and stays that json_t in the result's
 * document. Applied documents are never modified in place for this (a change copies the path
 * to what it changes, src/ops). References of a reused listener are checked again only when
 * the group names or the certificate store's ids (certs->gen) differ from prev's; names and
 * addresses are checked across all listeners as always. */
int slb_config_from_json_prev(const json_t *doc, const struct slb_cert_lookup *certs,
                              const struct slb_config *prev, struct slb_config **out,
                              struct slb_err *err);
void slb_config_free(struct slb_config *cfg);
/* The listeners of cfg that name certificate id (in tls.certificates or as tls.client_ca): their
 * indexes in cfg->listeners, in order, the first max of them into idx; returns how many there
 * are. The first call indexes cfg's listeners by certificate id; the index is kept and passed
 * on to the next configuration made from cfg with the same listeners, so a lookup costs the
 * listeners found, not the 20,000 ids 1,000 listeners may name. */
size_t slb_config_cert_users(struct slb_config *cfg, const char *id, size_t *idx, size_t max);

/* Validate one resource (as the API receives it) and return its normalized JSON (defaults
 * filled in, fields in a stable order); NULL with err set on failure. where_prefix is used in
 * error paths ("" for API bodies). */
json_t *slb_config_normalize_listener(const json_t *in, const char *where_prefix,
                                      struct slb_err *err);
json_t *slb_config_normalize_group(const json_t *in, const char *where_prefix, struct slb_err *err);
/* Whether a listener of protocol ("tcp", "http", "https") may carry field: false only for a
 * known field of other protocols (unknown names and protocols are left to validation). */
bool slb_config_listener_field_applies(const char *field, const char *protocol);

/* Lookups in a built configuration; NULL when absent. */
const struct slb_group_cfg *slb_config_group(const struct slb_config *cfg, const char *name);
const struct slb_listener_cfg *slb_config_listener(const struct slb_config *cfg, const char *name);

/* A valid resource name or id: 1..63 of [A-Za-z0-9._-], not "." or "..". */
bool slb_config_name_ok(const char *s);
/* --bind-host: every listener of this process binds to host (an IPv4 or IPv6 address) with the
 * port of its "bind"; the documents keep their "bind" (they are shared by the nodes of a
 * cluster). Set once before the first configuration; -1 when host is not an address. */
int slb_config_set_bind_host(const char *host);
/* "1.2.3.4:80", "[::1]:443", "*:80" / "0.0.0.0:80" → sockaddr; 0 or SLB_EINVAL. */
int slb_config_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len);

const char *slb_proto_name(enum slb_proto p);
const char *slb_tls_policy_name(enum slb_tls_policy p);

#endif
