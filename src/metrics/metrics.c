/* SPDX-License-Identifier: Apache-2.0 */
/* Stats and metrics are computed on the control thread by summing every worker's counter
 * line; workers never synchronise to be counted. Counters live in registry objects that
 * survive configuration changes, so they never go backwards while a listener or server
 * stays configured. */
#include "metrics/metrics.h"

#include "cert/ocsp_fetch.h"
#include "cert/store.h"
#include "http/access.h"
#include "tls/tls.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t slb_metrics_sum(struct slb_wcount *w, int nworkers, int k)
{
    uint64_t s = 0;
    for (int i = 0; i < nworkers; i++)
        s += slb_count_get(&w[i].v[k]);
    return s;
}

_Static_assert(SLB_LIS_HS_FAIL + SLB_TLS_FAIL_COUNT <= SLB_LIS_REQ_1XX,
               "a counter slot for every handshake failure reason");

static uint64_t lsum(const struct slb_lis_rt *r, int k)
{
    return slb_metrics_sum((struct slb_wcount *)r->w, r->nworkers, k);
}

static uint64_t rule_sum(const struct slb_rule_rt *r, int k)
{
    return slb_metrics_sum((struct slb_wcount *)r->w, r->nworkers, k);
}

static uint64_t ssum(const struct slb_srv_rt *r, int k)
{
    return slb_metrics_sum((struct slb_wcount *)r->w, r->nworkers, k);
}

void slb_metrics_sample(const struct slb_snapshot *s)
{
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        struct slb_lis_rt *r = s->listeners[i].stats;
        r->conn_samples[r->sample_pos] = lsum(r, SLB_LIS_CONNS);
        r->sample_pos = (r->sample_pos + 1) % SLB_RATE_WINDOW;
        if (r->nsamples < SLB_RATE_WINDOW)
            r->nsamples++;
    }
}

/* New connections per second over the last `secs` seconds (fewer while starting). */
static double conn_rate(const struct slb_lis_rt *r, unsigned secs)
{
    if (r->nsamples < 2)
        return 0;
    unsigned span = secs < r->nsamples - 1 ? secs : r->nsamples - 1;
    unsigned last = (r->sample_pos + SLB_RATE_WINDOW - 1) % SLB_RATE_WINDOW;
    unsigned first = (last + SLB_RATE_WINDOW - span) % SLB_RATE_WINDOW;
    return (double)(r->conn_samples[last] - r->conn_samples[first]) / span;
}

static const char *const status_class[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

static json_t *server_json(const struct slb_server_cfg *sc, struct slb_srv_rt *r)
{
    uint64_t n = 0;
    for (int b = 0; b < SLB_RESP_BUCKETS; b++)
        n += ssum(r, SLB_SRV_RESP_BUCKET + b);
    double avg_ms = n ? (double)ssum(r, SLB_SRV_RESP_SUM_US) / (double)n / 1000.0 : 0;
    int health = atomic_load(&r->healthy);
    json_t *j = json_pack(
        "{s:s, s:i, s:i, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:s, s:I}", "address", sc->address,
        "port", sc->port, "weight", (int)sc->weight, "health",
        health == SLB_HEALTH_UP ? "up" : "down", "active", (json_int_t)ssum(r, SLB_SRV_ACTIVE),
        "connections", (json_int_t)ssum(r, SLB_SRV_CONNS), "requests",
        (json_int_t)ssum(r, SLB_SRV_REQS), "failures", (json_int_t)ssum(r, SLB_SRV_FAILS),
        "bytes_to", (json_int_t)ssum(r, SLB_SRV_BYTES_TO), "bytes_from",
        (json_int_t)ssum(r, SLB_SRV_BYTES_FROM), "avg_response_ms", avg_ms, "last_check",
        r->last_error[0] ? r->last_error : "ok", "ejections",
        (json_int_t)ssum(r, SLB_SRV_EJECTIONS));
    /* Why a server is down: its active checks, or a passive ejection (which shows even
     * when the active checks also failed meanwhile: it is what brings it back). */
    if (j && health != SLB_HEALTH_UP)
        json_object_set_new(j, "down_reason",
                            json_string(health == SLB_HEALTH_EJECTED ? "passive" : "active"));
    return j;
}

static json_t *listener_json(const struct slb_listener_rt *l)
{
    const struct slb_lis_rt *r = l->stats;
    json_t *j = json_pack(
        "{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:{s:f, s:f}, s:{s:I, s:I}, s:{s:I, s:I}}",
        "name", l->cfg->name, "protocol", slb_proto_name(l->cfg->protocol), "bind", l->cfg->bind,
        "connections", (json_int_t)lsum(r, SLB_LIS_CONNS), "active",
        (json_int_t)lsum(r, SLB_LIS_ACTIVE), "refused",
        (json_int_t)(lsum(r, SLB_LIS_REFUSED) + lsum(r, SLB_LIS_REFUSED_FD)), "denied",
        (json_int_t)lsum(r, SLB_LIS_DENIED), "http2_abuse", (json_int_t)lsum(r, SLB_LIS_H2_ABUSE),
        "new_connections_per_s", "1s", conn_rate(r, 1), "60s", conn_rate(r, 60), "payload_bytes",
        "in", (json_int_t)lsum(r, SLB_LIS_PAYLOAD_IN), "out",
        (json_int_t)lsum(r, SLB_LIS_PAYLOAD_OUT), "wire_bytes", "in",
        (json_int_t)lsum(r, SLB_LIS_WIRE_IN), "out", (json_int_t)lsum(r, SLB_LIS_WIRE_OUT));
    if (j)
        json_object_set_new(j, "refused_by_reason",
                            json_pack("{s:I, s:I}", "max_connections",
                                      (json_int_t)lsum(r, SLB_LIS_REFUSED), "fd_limit",
                                      (json_int_t)lsum(r, SLB_LIS_REFUSED_FD)));
    if (l->cfg->protocol != SLB_PROTO_TCP) {
        json_t *req = json_object();
        json_object_set_new(req, "total", json_integer((json_int_t)lsum(r, SLB_LIS_REQS)));
        for (int c = 0; c < 5; c++)
            json_object_set_new(req, status_class[c],
                                json_integer((json_int_t)lsum(r, SLB_LIS_REQ_1XX + c)));
        json_object_set_new(j, "requests", req);
        if (l->cfg->nrules) {
            json_t *rules = json_array();
            for (size_t i = 0; i < l->cfg->nrules; i++)
                json_array_append_new(
                    rules, json_pack("{s:s, s:I}", "name", l->cfg->rules[i].name, "requests",
                                     (json_int_t)rule_sum(l->rule_stats[i], SLB_RULE_REQS)));
            json_object_set_new(j, "rules", rules);
        }
    }
    if (l->cfg->protocol == SLB_PROTO_HTTPS) {
        json_t *fails = json_object();
        for (int f = 1; f < SLB_TLS_FAIL_COUNT; f++)
            json_object_set_new(fails, slb_tls_fail_name((enum slb_tls_fail)f),
                                json_integer((json_int_t)lsum(r, SLB_LIS_HS_FAIL + f)));
        json_object_set_new(j, "handshakes",
                            json_pack("{s:I, s:I, s:o}", "full",
                                      (json_int_t)lsum(r, SLB_LIS_HS_FULL), "resumed",
                                      (json_int_t)lsum(r, SLB_LIS_HS_RESUMED), "failures", fails));
    }
    return j;
}

json_t *slb_metrics_stats_json(const struct slb_metrics_view *v)
{
    const struct slb_snapshot *s = v->snap;
    json_t *ls = json_array(), *gs = json_array();
    for (size_t i = 0; s && i < s->nlisteners; i++)
        json_array_append_new(ls, listener_json(&s->listeners[i]));
    for (size_t i = 0; s && i < s->ngroups; i++) {
        struct slb_group_rt *g = &s->groups[i];
        json_t *srv = json_array();
        for (size_t k = 0; k < g->nservers; k++)
            json_array_append_new(srv, server_json(&g->cfg->servers[k], g->srv[k]));
        json_array_append_new(gs, json_pack("{s:s, s:s, s:o}", "name", g->cfg->name, "scheduler",
                                            slb_sched_name(g->cfg->scheduler), "servers", srv));
    }
    return json_pack("{s:I, s:i, s:I, s:I, s:o, s:o}", "generation",
                     (json_int_t)(s ? s->generation : 0), "workers", v->nworkers, "connection_cap",
                     (json_int_t)v->conn_cap, "started_ms", (json_int_t)v->started_ms, "listeners",
                     ls, "groups", gs);
}

/* --- Prometheus text exposition format --- */

struct text {
    char *p;
    size_t len, cap;
    bool oom;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0 || t->oom)
            return;
        if (t->p && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->cap ? t->cap * 2 : 16384) + (size_t)n;
        char *np = realloc(t->p, cap);
        if (!np) {
            t->oom = true;
            return;
        }
        t->p = np;
        t->cap = cap;
    }
}

static void family(struct text *t, const char *name, const char *type, const char *help)
{
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Label values are names we validated ([A-Za-z0-9._-]) or addresses, so they need no
 * escaping; certificate names may hold any printable character and are escaped. */
static void put_escaped(struct text *t, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            put(t, "\\%c", *s);
        else if (*s == '\n')
            put(t, "\\n");
        else
            put(t, "%c", *s);
    }
}

static void listener_metrics(struct text *t, const struct slb_snapshot *s)
{
    static const struct {
        int slot;
        const char *name, *type, *help;
    } simple[] = {
        {SLB_LIS_CONNS, "slbd_listener_connections_total", "counter", "Connections accepted."},
        {SLB_LIS_ACTIVE, "slbd_listener_connections_active", "gauge", "Connections open now."},
        {SLB_LIS_DENIED, "slbd_listener_connections_denied_total", "counter",
         "Connections reset by the listener's ACL."},
        {SLB_LIS_ERRORS, "slbd_listener_no_backend_total", "counter",
         "tcp connections refused because no backend server was usable."},
        {SLB_LIS_H2_ABUSE, "slbd_listener_http2_abuse_total", "counter",
         "HTTP/2 connections ended with GOAWAY ENHANCE_YOUR_CALM (floods, rapid reset, "
         "HPACK bombs)."},
    };
    for (size_t m = 0; m < sizeof(simple) / sizeof(simple[0]); m++) {
        family(t, simple[m].name, simple[m].type, simple[m].help);
        for (size_t i = 0; s && i < s->nlisteners; i++)
            put(t, "%s{listener=\"%s\"} %llu\n", simple[m].name, s->listeners[i].stats->name,
                (unsigned long long)lsum(s->listeners[i].stats, simple[m].slot));
    }
    family(t, "slbd_listener_connections_refused_total", "counter",
           "Connections refused by the listener's max_connections (closed at accept), or "
           "held in the listen backlog by the connection cap or a lack of descriptors "
           "(fd_limit: accepted late).");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        const struct slb_lis_rt *r = s->listeners[i].stats;
        put(t,
            "slbd_listener_connections_refused_total{listener=\"%s\",reason=\"max_connections\"} "
            "%llu\n",
            r->name, (unsigned long long)lsum(r, SLB_LIS_REFUSED));
        put(t,
            "slbd_listener_connections_refused_total{listener=\"%s\",reason=\"fd_limit\"} %llu\n",
            r->name, (unsigned long long)lsum(r, SLB_LIS_REFUSED_FD));
    }
    family(t, "slbd_listener_new_connections_per_second", "gauge",
           "New connections per second over the last 1 s and 60 s.");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        const struct slb_lis_rt *r = s->listeners[i].stats;
        put(t, "slbd_listener_new_connections_per_second{listener=\"%s\",window=\"1s\"} %.3f\n",
            r->name, conn_rate(r, 1));
        put(t, "slbd_listener_new_connections_per_second{listener=\"%s\",window=\"60s\"} %.3f\n",
            r->name, conn_rate(r, 60));
    }
    family(t, "slbd_listener_bytes_total", "counter",
           "Bytes between clients and slbd: payload (billing: application data) and wire "
           "(everything on the socket: TLS handshakes, records, alerts).");
    static const struct {
        int slot;
        const char *dir, *kind;
    } bytes[] = {{SLB_LIS_PAYLOAD_IN, "in", "payload"},
                 {SLB_LIS_PAYLOAD_OUT, "out", "payload"},
                 {SLB_LIS_WIRE_IN, "in", "wire"},
                 {SLB_LIS_WIRE_OUT, "out", "wire"}};
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        const struct slb_lis_rt *r = s->listeners[i].stats;
        for (size_t b = 0; b < 4; b++)
            put(t, "slbd_listener_bytes_total{listener=\"%s\",direction=\"%s\",kind=\"%s\"} %llu\n",
                r->name, bytes[b].dir, bytes[b].kind, (unsigned long long)lsum(r, bytes[b].slot));
    }
    family(t, "slbd_listener_requests_total", "counter", "HTTP responses by status class.");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        if (s->listeners[i].cfg->protocol == SLB_PROTO_TCP)
            continue;
        const struct slb_lis_rt *r = s->listeners[i].stats;
        for (int c = 0; c < 5; c++)
            put(t, "slbd_listener_requests_total{listener=\"%s\",class=\"%s\"} %llu\n", r->name,
                status_class[c], (unsigned long long)lsum(r, SLB_LIS_REQ_1XX + c));
    }
    family(t, "slbd_rule_requests_total", "counter",
           "Requests a forwarding rule took (forwarded or answered).");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        const struct slb_listener_rt *l = &s->listeners[i];
        for (size_t k = 0; k < l->cfg->nrules; k++)
            put(t, "slbd_rule_requests_total{listener=\"%s\",rule=\"%s\"} %llu\n", l->cfg->name,
                l->cfg->rules[k].name,
                (unsigned long long)rule_sum(l->rule_stats[k], SLB_RULE_REQS));
    }
    family(t, "slbd_listener_handshakes_total", "counter", "Completed TLS handshakes.");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        if (s->listeners[i].cfg->protocol != SLB_PROTO_HTTPS)
            continue;
        const struct slb_lis_rt *r = s->listeners[i].stats;
        put(t, "slbd_listener_handshakes_total{listener=\"%s\",type=\"full\"} %llu\n", r->name,
            (unsigned long long)lsum(r, SLB_LIS_HS_FULL));
        put(t, "slbd_listener_handshakes_total{listener=\"%s\",type=\"resumed\"} %llu\n", r->name,
            (unsigned long long)lsum(r, SLB_LIS_HS_RESUMED));
    }
    family(t, "slbd_listener_handshake_failures_total", "counter",
           "Failed TLS handshakes by reason.");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        if (s->listeners[i].cfg->protocol != SLB_PROTO_HTTPS)
            continue;
        const struct slb_lis_rt *r = s->listeners[i].stats;
        for (int f = 1; f < SLB_TLS_FAIL_COUNT; f++)
            put(t, "slbd_listener_handshake_failures_total{listener=\"%s\",reason=\"%s\"} %llu\n",
                r->name, slb_tls_fail_name((enum slb_tls_fail)f),
                (unsigned long long)lsum(r, SLB_LIS_HS_FAIL + f));
    }
}

static void server_metrics(struct text *t, const struct slb_snapshot *s)
{
    static const struct {
        int slot;
        const char *name, *type, *help;
    } srv[] = {
        {SLB_SRV_ACTIVE, "slbd_server_connections_active", "gauge", "Open connections."},
        {SLB_SRV_CONNS, "slbd_server_connections_total", "counter", "Connections opened."},
        {SLB_SRV_REQS, "slbd_server_requests_total", "counter", "HTTP responses received."},
        {SLB_SRV_FAILS, "slbd_server_failures_total", "counter",
         "Failed connects, broken exchanges and 5xx answers."},
        {SLB_SRV_BYTES_TO, "slbd_server_bytes_sent_total", "counter", "Bytes sent to it."},
        {SLB_SRV_BYTES_FROM, "slbd_server_bytes_received_total", "counter",
         "Bytes received from it."},
        {SLB_SRV_EJECTIONS, "slbd_server_ejections_total", "counter",
         "Times passive health checks took it out of rotation."},
    };
    for (size_t m = 0; m < sizeof(srv) / sizeof(srv[0]); m++) {
        family(t, srv[m].name, srv[m].type, srv[m].help);
        for (size_t i = 0; s && i < s->ngroups; i++) {
            struct slb_group_rt *g = &s->groups[i];
            for (size_t k = 0; k < g->nservers; k++)
                put(t, "%s{group=\"%s\",server=\"%s\"} %llu\n", srv[m].name, g->cfg->name,
                    strchr(g->srv[k]->key, '/') + 1,
                    (unsigned long long)ssum(g->srv[k], srv[m].slot));
        }
    }
    family(t, "slbd_server_up", "gauge",
           "1 when the server is in rotation (passes its health checks, not ejected).");
    for (size_t i = 0; s && i < s->ngroups; i++) {
        struct slb_group_rt *g = &s->groups[i];
        for (size_t k = 0; k < g->nservers; k++)
            put(t, "slbd_server_up{group=\"%s\",server=\"%s\"} %d\n", g->cfg->name,
                strchr(g->srv[k]->key, '/') + 1, atomic_load(&g->srv[k]->healthy) == SLB_HEALTH_UP);
    }
    family(t, "slbd_server_down", "gauge",
           "1 while the server is out of rotation, by reason: active (failed health checks) or "
           "passive (ejected after failed exchanges).");
    for (size_t i = 0; s && i < s->ngroups; i++) {
        struct slb_group_rt *g = &s->groups[i];
        for (size_t k = 0; k < g->nservers; k++) {
            int h = atomic_load(&g->srv[k]->healthy);
            const char *name = strchr(g->srv[k]->key, '/') + 1;
            put(t, "slbd_server_down{group=\"%s\",server=\"%s\",reason=\"active\"} %d\n",
                g->cfg->name, name, h == SLB_HEALTH_DOWN);
            put(t, "slbd_server_down{group=\"%s\",server=\"%s\",reason=\"passive\"} %d\n",
                g->cfg->name, name, h == SLB_HEALTH_EJECTED);
        }
    }
    family(t, "slbd_server_response_seconds", "histogram",
           "Time from the request head sent to the response head received.");
    for (size_t i = 0; s && i < s->ngroups; i++) {
        struct slb_group_rt *g = &s->groups[i];
        for (size_t k = 0; k < g->nservers; k++) {
            const char *name = strchr(g->srv[k]->key, '/') + 1;
            uint64_t cum = 0;
            for (int b = 0; b < SLB_RESP_BUCKETS; b++) {
                cum += ssum(g->srv[k], SLB_SRV_RESP_BUCKET + b);
                if (b < SLB_RESP_BUCKETS - 1)
                    put(t,
                        "slbd_server_response_seconds_bucket{group=\"%s\",server=\"%s\","
                        "le=\"%g\"} %llu\n",
                        g->cfg->name, name, slb_resp_bucket_le[b], (unsigned long long)cum);
                else
                    put(t,
                        "slbd_server_response_seconds_bucket{group=\"%s\",server=\"%s\","
                        "le=\"+Inf\"} %llu\n",
                        g->cfg->name, name, (unsigned long long)cum);
            }
            put(t, "slbd_server_response_seconds_sum{group=\"%s\",server=\"%s\"} %.6f\n",
                g->cfg->name, name, (double)ssum(g->srv[k], SLB_SRV_RESP_SUM_US) / 1e6);
            put(t, "slbd_server_response_seconds_count{group=\"%s\",server=\"%s\"} %llu\n",
                g->cfg->name, name, (unsigned long long)cum);
        }
    }
}

static void cert_metrics(struct text *t, struct slb_certstore *certs, struct slb_ocsp_fetcher *ocsp)
{
    family(t, "slbd_certificate_expiry_seconds", "gauge",
           "Seconds until the certificate's not_after (negative once expired).");
    time_t now = time(NULL);
    for (size_t i = 0; i < slb_certstore_count(certs); i++) {
        const struct slb_cert *c = slb_certstore_at(certs, i);
        put(t, "slbd_certificate_expiry_seconds{id=\"%s\",name=\"", c->id);
        put_escaped(t, c->name);
        put(t, "\"} %lld\n", (long long)(c->not_after - (int64_t)now));
    }
    static const char *const states[] = {"none", "fetching", "good", "revoked", "expired", "error"};
    family(t, "slbd_certificate_ocsp_state", "gauge",
           "1 for the OCSP stapling state a server certificate is in (none, fetching, good, "
           "revoked, expired, error).");
    for (size_t i = 0; i < slb_certstore_count(certs); i++) {
        const struct slb_cert *c = slb_certstore_at(certs, i);
        struct slb_ocsp_info oi;
        if (!slb_ocsp_fetcher_info(ocsp, c->id, &oi))
            continue;
        for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++)
            put(t, "slbd_certificate_ocsp_state{id=\"%s\",state=\"%s\"} %d\n", c->id, states[k],
                strcmp(oi.state, states[k]) == 0);
    }
    family(t, "slbd_certificate_ocsp_next_update_timestamp_seconds", "gauge",
           "nextUpdate of the OCSP response a certificate staples (unix seconds).");
    for (size_t i = 0; i < slb_certstore_count(certs); i++) {
        const struct slb_cert *c = slb_certstore_at(certs, i);
        struct slb_ocsp_info oi;
        if (slb_ocsp_fetcher_info(ocsp, c->id, &oi) && oi.next_update)
            put(t, "slbd_certificate_ocsp_next_update_timestamp_seconds{id=\"%s\"} %lld\n", c->id,
                (long long)oi.next_update);
    }
    family(t, "slbd_certificate_ocsp_failures_total", "counter",
           "OCSP fetches and uploads that gave no usable response, per certificate version.");
    for (size_t i = 0; i < slb_certstore_count(certs); i++) {
        const struct slb_cert *c = slb_certstore_at(certs, i);
        struct slb_ocsp_info oi;
        if (slb_ocsp_fetcher_info(ocsp, c->id, &oi))
            put(t, "slbd_certificate_ocsp_failures_total{id=\"%s\"} %llu\n", c->id,
                (unsigned long long)oi.failures);
    }
    family(t, "slbd_tls_context_builds_total", "counter",
           "TLS contexts built since start (configuration and certificate changes; never OCSP).");
    put(t, "slbd_tls_context_builds_total %llu\n", (unsigned long long)slb_tls_context_builds());
    family(t, "slbd_certificate_crl_stale", "gauge",
           "CRLs whose next_update has passed (revocation data out of date).");
    put(t, "slbd_certificate_crl_stale %zu\n", slb_certstore_crl_stale(certs));
}

char *slb_metrics_prometheus(const struct slb_metrics_view *v, size_t *len)
{
    struct text t = {0};
    const struct slb_snapshot *s = v->snap;
    family(&t, "slbd_config_generation", "gauge", "Generation of the active configuration.");
    put(&t, "slbd_config_generation %llu\n", (unsigned long long)(s ? s->generation : 0));
    family(&t, "slbd_workers", "gauge", "Worker threads.");
    put(&t, "slbd_workers %d\n", v->nworkers);
    family(&t, "slbd_connection_cap", "gauge",
           "Client connections slbd holds at most (from the open-file limit); beyond it new "
           "connections wait in the listen backlog.");
    put(&t, "slbd_connection_cap %lu\n", v->conn_cap);
    listener_metrics(&t, s);
    server_metrics(&t, s);
    cert_metrics(&t, v->certs, v->ocsp);
    family(&t, "slbd_access_log_dropped_total", "counter",
           "Access-log batches dropped because the logger fell behind.");
    put(&t, "slbd_access_log_dropped_total %llu\n", (unsigned long long)slb_access_dropped());
    if (t.oom) {
        free(t.p);
        return NULL;
    }
    *len = t.len;
    return t.p;
}
