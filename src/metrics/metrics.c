/* SPDX-License-Identifier: Apache-2.0 */
/* Stats and metrics are computed on the control thread by summing every worker's counter
 * line; workers never synchronise to be counted. Counters live in registry objects that
 * survive configuration changes, so they never go backwards while a listener or server
 * stays configured. */
#include "metrics/metrics.h"

#include "acme/order.h"
#include "cert/ocsp_fetch.h"
#include "cert/store.h"
#include "core/version.h"
#include "http/access.h"
#include "tls/tls.h"

#include <dirent.h>
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

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

static uint64_t srv_failures(const struct slb_srv_rt *r)
{
    uint64_t n = 0;
    for (int f = 0; f < SLB_SRV_FAIL_COUNT; f++)
        n += ssum(r, SLB_SRV_FAIL + f);
    return n;
}

static json_t *server_json(const struct slb_server_cfg *sc, struct slb_srv_rt *r)
{
    uint64_t n = 0;
    for (int b = 0; b < SLB_HIST_BUCKETS; b++)
        n += ssum(r, SLB_SRV_RESP + b);
    double avg_ms = n ? (double)ssum(r, SLB_SRV_RESP + SLB_HIST_BUCKETS) / (double)n / 1000.0 : 0;
    int health = atomic_load(&r->healthy);
    json_t *j = json_pack(
        "{s:s, s:i, s:i, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:s, s:I}", "address", sc->address,
        "port", sc->port, "weight", (int)sc->weight, "health",
        health == SLB_HEALTH_UP ? "up" : "down", "active", (json_int_t)ssum(r, SLB_SRV_ACTIVE),
        "connections", (json_int_t)ssum(r, SLB_SRV_CONNS), "requests",
        (json_int_t)ssum(r, SLB_SRV_REQS), "failures", (json_int_t)srv_failures(r), "bytes_to",
        (json_int_t)ssum(r, SLB_SRV_BYTES_TO), "bytes_from",
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
    if (j) {
        json_object_set_new(j, "status", json_string(l->cfg->stopped ? "stopped" : "running"));
        json_t *lim =
            json_pack("{s:I}", "connections_per_s", (json_int_t)lsum(r, SLB_LIS_LIMITED_CONN));
        if (lim && l->cfg->protocol != SLB_PROTO_TCP)
            json_object_set_new(lim, "requests_per_s",
                                json_integer((json_int_t)lsum(r, SLB_LIS_LIMITED_REQ)));
        json_object_set_new(j, "limited", lim);
    }
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
                    rules,
                    json_pack("{s:s, s:I, s:I}", "name", l->cfg->rules[i].name, "requests",
                              (json_int_t)rule_sum(l->rule_stats[i], SLB_RULE_REQS), "limited",
                              (json_int_t)rule_sum(l->rule_stats[i], SLB_RULE_LIMITED)));
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

/* The text is appended to one buffer grown geometrically. With 10,000 certificates it holds
 * some 100,000 lines, so a sample line is copied piece by piece (names, label values and
 * integers formatted by hand) instead of going through vsnprintf: put() serves only the few
 * lines that carry a fraction. */
struct text {
    char *p;
    size_t len, cap;
    bool oom;
    char le[SLB_HIST_BUCKETS - 1][24]; /* the histogram bounds, formatted once per scrape */
};

/* Room for n more bytes and a terminating NUL; false once memory ran out. */
static bool room(struct text *t, size_t n)
{
    if (t->cap - t->len > n)
        return true;
    if (t->oom)
        return false;
    size_t cap = t->cap ? t->cap : 65536;
    while (cap - t->len <= n)
        cap *= 2;
    char *np = realloc(t->p, cap);
    if (!np) {
        t->oom = true;
        return false;
    }
    t->p = np;
    t->cap = cap;
    return true;
}

static inline __attribute__((always_inline)) void put_mem(struct text *t, const char *s, size_t n)
{
    if (t->cap - t->len > n || room(t, n)) {
        memcpy(t->p + t->len, s, n);
        t->len += n;
    }
}

static inline __attribute__((always_inline)) void put_str(struct text *t, const char *s)
{
    put_mem(t, s, strlen(s));
}

static void put_u64(struct text *t, uint64_t v)
{
    char b[24], *q = b + sizeof(b);
    do
        *--q = (char)('0' + v % 10);
    while (v /= 10);
    put_mem(t, q, (size_t)(b + sizeof(b) - q));
}

static void put_i64(struct text *t, int64_t v)
{
    if (v < 0)
        put_mem(t, "-", 1);
    put_u64(t, v < 0 ? -(uint64_t)v : (uint64_t)v);
}

/* Microseconds as seconds with six decimals: what "%.6f" prints of us / 1e6. */
static void put_micros(struct text *t, uint64_t us)
{
    char frac[8];
    put_u64(t, us / 1000000);
    uint64_t f = us % 1000000;
    frac[0] = '.';
    for (int i = 6; i >= 1; i--, f /= 10)
        frac[i] = (char)('0' + f % 10);
    put_mem(t, frac, 7);
}

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct text *t, const char *fmt, ...)
{
    for (int tries = 0; tries < 2; tries++) {
        size_t avail = t->cap - t->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? avail : 0, fmt, ap);
        va_end(ap);
        if (n < 0 || t->oom)
            return;
        if (t->p && (size_t)n < avail) {
            t->len += (size_t)n;
            return;
        }
        if (!room(t, (size_t)n))
            return;
    }
}

static void family(struct text *t, const char *name, const char *type, const char *help)
{
    put_mem(t, "# HELP ", 7);
    put_str(t, name);
    put_mem(t, " ", 1);
    put_str(t, help);
    put_mem(t, "\n# TYPE ", 8);
    put_str(t, name);
    put_mem(t, " ", 1);
    put_str(t, type);
    put_mem(t, "\n", 1);
}

/* Label values are names we validated ([A-Za-z0-9._-]) or addresses, so they need no
 * escaping; certificate names may hold any printable character and are escaped. */
static void put_escaped(struct text *t, const char *s)
{
    for (;;) {
        size_t n = strcspn(s, "\\\"\n");
        put_mem(t, s, n);
        s += n;
        if (!*s)
            return;
        put_mem(t, *s == '\n' ? "\\n" : *s == '"' ? "\\\"" : "\\\\", 2);
        s++;
    }
}

/* A sample line in pieces: series() opens it with its first label, label() adds one, and
 * end_u() / end_i() close the braces with the value. They are inlined so that the lengths of
 * the literal names they are given are constants, not a strlen per piece. */
static inline __attribute__((always_inline)) void series(struct text *t, const char *name,
                                                         const char *key, const char *val)
{
    put_str(t, name);
    put_mem(t, "{", 1);
    put_str(t, key);
    put_mem(t, "=\"", 2);
    put_str(t, val);
    put_mem(t, "\"", 1);
}

static inline __attribute__((always_inline)) void label(struct text *t, const char *key,
                                                        const char *val)
{
    put_mem(t, ",", 1);
    put_str(t, key);
    put_mem(t, "=\"", 2);
    put_str(t, val);
    put_mem(t, "\"", 1);
}

static inline __attribute__((always_inline)) void end_u(struct text *t, uint64_t v)
{
    put_mem(t, "} ", 2);
    put_u64(t, v);
    put_mem(t, "\n", 1);
}

static inline __attribute__((always_inline)) void end_i(struct text *t, int64_t v)
{
    put_mem(t, "} ", 2);
    put_i64(t, v);
    put_mem(t, "\n", 1);
}

/* A sample without labels. */
static void scalar_u(struct text *t, const char *name, uint64_t v)
{
    put_str(t, name);
    put_mem(t, " ", 1);
    put_u64(t, v);
    put_mem(t, "\n", 1);
}

/* One series of a duration histogram (see slb_hist_observe): cumulative buckets, sum, count.
 * labels is the series' label list without braces. */
static void histogram(struct text *t, const char *name, const char *labels,
                      const struct slb_wcount *w, int nworkers, int base)
{
    uint64_t cum = 0;
    for (int b = 0; b < SLB_HIST_BUCKETS; b++) {
        cum += slb_metrics_sum((struct slb_wcount *)w, nworkers, base + b);
        put_str(t, name);
        put_mem(t, "_bucket{", 8);
        put_str(t, labels);
        put_mem(t, ",le=\"", 5);
        put_str(t, b < SLB_HIST_BUCKETS - 1 ? t->le[b] : "+Inf");
        put_mem(t, "\"", 1);
        end_u(t, cum);
    }
    put_str(t, name);
    put_mem(t, "_sum{", 5);
    put_str(t, labels);
    put_mem(t, "} ", 2);
    put_micros(t, slb_metrics_sum((struct slb_wcount *)w, nworkers, base + SLB_HIST_BUCKETS));
    put_mem(t, "\n", 1);
    put_str(t, name);
    put_mem(t, "_count{", 7);
    put_str(t, labels);
    end_u(t, cum);
}

/* Append s to the label text buf[0..at) of size bytes; the new length. Names fit, as
 * snapshot.h sizes them. */
static size_t cat(char *buf, size_t size, size_t at, const char *s)
{
    size_t n = strlen(s);
    if (at + n >= size)
        n = size - 1 - at;
    memcpy(buf + at, s, n);
    buf[at + n] = '\0';
    return at + n;
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
        {SLB_LIS_RETRIES, "slbd_listener_retries_total", "counter",
         "HTTP requests sent again: to the next server after a failed connect, or on a fresh "
         "connection after a kept-alive one failed."},
        {SLB_LIS_GZIP, "slbd_listener_gzip_responses_total", "counter",
         "HTTP responses compressed by the listener (gzip)."},
        {SLB_LIS_GZIP_IN, "slbd_listener_gzip_bytes_in_total", "counter",
         "Body bytes of compressed responses, as the backends sent them."},
        {SLB_LIS_GZIP_OUT, "slbd_listener_gzip_bytes_out_total", "counter",
         "Body bytes of compressed responses, as the clients received them (the gzip stream)."},
    };
    for (size_t m = 0; m < sizeof(simple) / sizeof(simple[0]); m++) {
        family(t, simple[m].name, simple[m].type, simple[m].help);
        for (size_t i = 0; s && i < s->nlisteners; i++) {
            series(t, simple[m].name, "listener", s->listeners[i].stats->name);
            end_u(t, lsum(s->listeners[i].stats, simple[m].slot));
        }
    }
    family(t, "slbd_listener_connections_refused_total", "counter",
           "Connections refused by the listener's max_connections (closed at accept), or "
           "held in the listen backlog by the connection cap or a lack of descriptors "
           "(fd_limit: accepted late).");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        const struct slb_lis_rt *r = s->listeners[i].stats;
        series(t, "slbd_listener_connections_refused_total", "listener", r->name);
        label(t, "reason", "max_connections");
        end_u(t, lsum(r, SLB_LIS_REFUSED));
        series(t, "slbd_listener_connections_refused_total", "listener", r->name);
        label(t, "reason", "fd_limit");
        end_u(t, lsum(r, SLB_LIS_REFUSED_FD));
    }
    family(t, "slbd_listener_limited_total", "counter",
           "Connections reset at accept by the listener's limits.connections_per_s, and requests "
           "answered 503 by its limits.requests_per_s or a rule's.");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        const struct slb_lis_rt *r = s->listeners[i].stats;
        series(t, "slbd_listener_limited_total", "listener", r->name);
        label(t, "limit", "connections_per_s");
        end_u(t, lsum(r, SLB_LIS_LIMITED_CONN));
        if (s->listeners[i].cfg->protocol != SLB_PROTO_TCP) {
            series(t, "slbd_listener_limited_total", "listener", r->name);
            label(t, "limit", "requests_per_s");
            end_u(t, lsum(r, SLB_LIS_LIMITED_REQ));
        }
    }
    family(t, "slbd_listener_up", "gauge",
           "1 while the listener is running (its socket open), 0 while it is stopped.");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        series(t, "slbd_listener_up", "listener", s->listeners[i].stats->name);
        end_u(t, s->listeners[i].cfg->stopped ? 0 : 1);
    }
    family(t, "slbd_listener_new_connections_per_second", "gauge",
           "New connections per second over the last 1 s and 60 s.");
    static const struct {
        const char *name;
        unsigned secs;
    } windows[] = {{"1s", 1}, {"60s", 60}};
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        const struct slb_lis_rt *r = s->listeners[i].stats;
        for (size_t k = 0; k < 2; k++) {
            series(t, "slbd_listener_new_connections_per_second", "listener", r->name);
            label(t, "window", windows[k].name);
            double rate = conn_rate(r, windows[k].secs);
            if (rate == 0)
                put_mem(t, "} 0.000\n", 8); /* most listeners, most of the time */
            else
                put(t, "} %.3f\n", rate);
        }
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
        for (size_t b = 0; b < 4; b++) {
            series(t, "slbd_listener_bytes_total", "listener", r->name);
            label(t, "direction", bytes[b].dir);
            label(t, "kind", bytes[b].kind);
            end_u(t, lsum(r, bytes[b].slot));
        }
    }
    family(t, "slbd_listener_requests_total", "counter", "HTTP responses by status class.");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        if (s->listeners[i].cfg->protocol == SLB_PROTO_TCP)
            continue;
        const struct slb_lis_rt *r = s->listeners[i].stats;
        for (int c = 0; c < 5; c++) {
            series(t, "slbd_listener_requests_total", "listener", r->name);
            label(t, "class", status_class[c]);
            end_u(t, lsum(r, SLB_LIS_REQ_1XX + c));
        }
    }
    family(t, "slbd_listener_responses_5xx_total", "counter",
           "5xx responses sent to clients: made by slbd itself (no usable server, connect "
           "failures, timeouts, broken responses) or forwarded from a backend.");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        if (s->listeners[i].cfg->protocol == SLB_PROTO_TCP)
            continue;
        const struct slb_lis_rt *r = s->listeners[i].stats;
        series(t, "slbd_listener_responses_5xx_total", "listener", r->name);
        label(t, "source", "slbd");
        end_u(t, lsum(r, SLB_LIS_5XX_LOCAL));
        series(t, "slbd_listener_responses_5xx_total", "listener", r->name);
        label(t, "source", "backend");
        end_u(t, lsum(r, SLB_LIS_5XX_BACKEND));
    }
    family(t, "slbd_listener_request_duration_seconds", "histogram",
           "Time from a request's head parsed to the end of its response.");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        if (s->listeners[i].cfg->protocol == SLB_PROTO_TCP)
            continue;
        const struct slb_lis_rt *r = s->listeners[i].stats;
        char labels[SLB_NAME_MAX + 16];
        size_t at = cat(labels, sizeof(labels), 0, "listener=\"");
        at = cat(labels, sizeof(labels), at, r->name);
        cat(labels, sizeof(labels), at, "\"");
        histogram(t, "slbd_listener_request_duration_seconds", labels, r->w, r->nworkers,
                  SLB_LIS_DURATION);
    }
    family(t, "slbd_rule_requests_total", "counter",
           "Requests a forwarding rule took (forwarded or answered).");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        const struct slb_listener_rt *l = &s->listeners[i];
        for (size_t k = 0; k < l->cfg->nrules; k++) {
            series(t, "slbd_rule_requests_total", "listener", l->cfg->name);
            label(t, "rule", l->cfg->rules[k].name);
            end_u(t, rule_sum(l->rule_stats[k], SLB_RULE_REQS));
        }
    }
    family(t, "slbd_rule_limited_total", "counter",
           "Requests a forwarding rule answered 503 for its limits.requests_per_s.");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        const struct slb_listener_rt *l = &s->listeners[i];
        for (size_t k = 0; k < l->cfg->nrules; k++) {
            series(t, "slbd_rule_limited_total", "listener", l->cfg->name);
            label(t, "rule", l->cfg->rules[k].name);
            end_u(t, rule_sum(l->rule_stats[k], SLB_RULE_LIMITED));
        }
    }
    family(t, "slbd_listener_handshakes_total", "counter", "Completed TLS handshakes.");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        if (s->listeners[i].cfg->protocol != SLB_PROTO_HTTPS)
            continue;
        const struct slb_lis_rt *r = s->listeners[i].stats;
        series(t, "slbd_listener_handshakes_total", "listener", r->name);
        label(t, "type", "full");
        end_u(t, lsum(r, SLB_LIS_HS_FULL));
        series(t, "slbd_listener_handshakes_total", "listener", r->name);
        label(t, "type", "resumed");
        end_u(t, lsum(r, SLB_LIS_HS_RESUMED));
    }
    family(t, "slbd_listener_tls_handshakes_total", "counter",
           "Completed TLS handshakes by protocol version and cipher suite (pairs seen so far).");
    /* Described once: slb_tls_suite_describe walks the suites to find a slot. */
    struct {
        const char *version, *cipher;
    } suites[SLB_TLS_SUITE_SLOTS];
    int nsuites = 0;
    while (nsuites < SLB_TLS_SUITE_SLOTS &&
           slb_tls_suite_describe(nsuites, &suites[nsuites].version, &suites[nsuites].cipher))
        nsuites++;
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        if (s->listeners[i].cfg->protocol != SLB_PROTO_HTTPS)
            continue;
        struct slb_lis_rt *r = s->listeners[i].stats;
        for (int k = 0; k < nsuites; k++) {
            uint64_t n = slb_metrics_sum(slb_lis_tls_counts(r, 0), r->nworkers, k);
            if (n) {
                series(t, "slbd_listener_tls_handshakes_total", "listener", r->name);
                label(t, "version", suites[k].version);
                label(t, "cipher", suites[k].cipher);
                end_u(t, n);
            }
        }
    }
    family(t, "slbd_listener_handshake_failures_total", "counter",
           "Failed TLS handshakes by reason.");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        if (s->listeners[i].cfg->protocol != SLB_PROTO_HTTPS)
            continue;
        const struct slb_lis_rt *r = s->listeners[i].stats;
        for (int f = 1; f < SLB_TLS_FAIL_COUNT; f++) {
            series(t, "slbd_listener_handshake_failures_total", "listener", r->name);
            label(t, "reason", slb_tls_fail_name((enum slb_tls_fail)f));
            end_u(t, lsum(r, SLB_LIS_HS_FAIL + f));
        }
    }
}

/* A server's label: its key is "group/address:port". */
static const char *server_name(const struct slb_srv_rt *r)
{
    return strchr(r->key, '/') + 1;
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
            for (size_t k = 0; k < g->nservers; k++) {
                series(t, srv[m].name, "group", g->cfg->name);
                label(t, "server", server_name(g->srv[k]));
                end_u(t, ssum(g->srv[k], srv[m].slot));
            }
        }
    }
    family(t, "slbd_server_up", "gauge",
           "1 when the server is in rotation (passes its health checks, not ejected).");
    for (size_t i = 0; s && i < s->ngroups; i++) {
        struct slb_group_rt *g = &s->groups[i];
        for (size_t k = 0; k < g->nservers; k++) {
            series(t, "slbd_server_up", "group", g->cfg->name);
            label(t, "server", server_name(g->srv[k]));
            end_u(t, atomic_load(&g->srv[k]->healthy) == SLB_HEALTH_UP);
        }
    }
    family(t, "slbd_server_failures_total", "counter",
           "Failed connects, broken exchanges and 5xx answers, by reason.");
    for (size_t i = 0; s && i < s->ngroups; i++) {
        struct slb_group_rt *g = &s->groups[i];
        for (size_t k = 0; k < g->nservers; k++)
            for (int f = 0; f < SLB_SRV_FAIL_COUNT; f++) {
                series(t, "slbd_server_failures_total", "group", g->cfg->name);
                label(t, "server", server_name(g->srv[k]));
                label(t, "reason", slb_srv_fail_name((enum slb_srv_fail)f));
                end_u(t, ssum(g->srv[k], SLB_SRV_FAIL + f));
            }
    }
    family(t, "slbd_server_down", "gauge",
           "1 while the server is out of rotation, by reason: active (failed health checks) or "
           "passive (ejected after failed exchanges).");
    for (size_t i = 0; s && i < s->ngroups; i++) {
        struct slb_group_rt *g = &s->groups[i];
        for (size_t k = 0; k < g->nservers; k++) {
            int h = atomic_load(&g->srv[k]->healthy);
            series(t, "slbd_server_down", "group", g->cfg->name);
            label(t, "server", server_name(g->srv[k]));
            label(t, "reason", "active");
            end_u(t, h == SLB_HEALTH_DOWN);
            series(t, "slbd_server_down", "group", g->cfg->name);
            label(t, "server", server_name(g->srv[k]));
            label(t, "reason", "passive");
            end_u(t, h == SLB_HEALTH_EJECTED);
        }
    }
    family(t, "slbd_server_health_transitions_total", "counter",
           "Health check verdicts that changed the server's state, by the new state.");
    for (size_t i = 0; s && i < s->ngroups; i++) {
        struct slb_group_rt *g = &s->groups[i];
        for (size_t k = 0; k < g->nservers; k++) {
            series(t, "slbd_server_health_transitions_total", "group", g->cfg->name);
            label(t, "server", server_name(g->srv[k]));
            label(t, "to", "up");
            end_u(t, g->srv[k]->went_up);
            series(t, "slbd_server_health_transitions_total", "group", g->cfg->name);
            label(t, "server", server_name(g->srv[k]));
            label(t, "to", "down");
            end_u(t, g->srv[k]->went_down);
        }
    }
    static const struct {
        const char *name, *help;
        int base;
    } hists[] = {
        {"slbd_server_response_seconds",
         "Time from the request head sent to the response head received.", SLB_SRV_RESP},
        {"slbd_server_connect_seconds", "Time a new backend connection took to connect.",
         SLB_SRV_CONNECT},
    };
    for (size_t m = 0; m < sizeof(hists) / sizeof(hists[0]); m++) {
        family(t, hists[m].name, "histogram", hists[m].help);
        for (size_t i = 0; s && i < s->ngroups; i++) {
            struct slb_group_rt *g = &s->groups[i];
            for (size_t k = 0; k < g->nservers; k++) {
                char labels[SLB_NAME_MAX + 120];
                size_t at = cat(labels, sizeof(labels), 0, "group=\"");
                at = cat(labels, sizeof(labels), at, g->cfg->name);
                at = cat(labels, sizeof(labels), at, "\",server=\"");
                at = cat(labels, sizeof(labels), at, server_name(g->srv[k]));
                cat(labels, sizeof(labels), at, "\"");
                histogram(t, hists[m].name, labels, g->srv[k]->w, g->srv[k]->nworkers,
                          hists[m].base);
            }
        }
    }
}

/* What the certificate families show of one certificate, gathered in one walk over the
 * store. Each family lists every certificate in turn, and with 10,000 of them a walk over the
 * scattered certificates (and a binary search among the OCSP entries) per family cost more
 * than the formatting; the rows and their label text are read in order instead. */
struct cert_row {
    size_t at;            /* in the label arena: the id, then `",name="` and the escaped name */
    uint32_t id_len, len; /* of the id; of the whole label text, closing quote included */
    int ocsp;             /* index in ocsp_states; -1: not a server certificate */
    int64_t not_after, next_update;
    uint64_t failures;
};

static const char *const ocsp_states[] = {"none",    "fetching", "good",
                                          "revoked", "expired",  "error"};

/* name{id="ID" (with_name: ,name="NAME") } value: the row's label text copied at once. */
static inline __attribute__((always_inline)) void cert_series(struct text *t, const char *name,
                                                              const struct text *arena,
                                                              const struct cert_row *r,
                                                              bool with_name)
{
    put_str(t, name);
    put_mem(t, "{id=\"", 5);
    put_mem(t, arena->p + r->at, with_name ? r->len : r->id_len);
    if (!with_name)
        put_mem(t, "\"", 1);
}

static void cert_metrics(struct text *t, struct slb_certstore *certs, struct slb_ocsp_fetcher *ocsp,
                         bool series)
{
    size_t n = series ? slb_certstore_count(certs) : 0, cursor = 0;
    struct text arena = {0};
    struct cert_row *rows = malloc((n ? n : 1) * sizeof(*rows));
    if (!rows || !room(&arena, 1)) {
        t->oom = true;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const struct slb_cert *c = slb_certstore_at(certs, i);
        struct cert_row *r = &rows[i];
        /* Each certificate is its own allocation: ask for one a few ahead (its id and
         * name, its not_after) while this one is read, or the walk waits on memory. */
        if (i + 8 < n) {
            const struct slb_cert *ahead = slb_certstore_at(certs, i + 8);
            __builtin_prefetch(ahead->id);
            __builtin_prefetch(ahead->name + 64);
            __builtin_prefetch(&ahead->not_after);
        }
        struct slb_ocsp_info oi;
        r->at = arena.len;
        put_str(&arena, c->id);
        r->id_len = (uint32_t)(arena.len - r->at);
        put_mem(&arena, "\",name=\"", 8);
        put_escaped(&arena, c->name);
        put_mem(&arena, "\"", 1);
        r->len = (uint32_t)(arena.len - r->at);
        r->not_after = c->not_after;
        r->ocsp = -1;
        if (slb_ocsp_fetcher_info_next(ocsp, c->id, &cursor, &oi)) {
            r->ocsp = (int)(sizeof(ocsp_states) / sizeof(ocsp_states[0]));
            for (size_t k = 0; k < sizeof(ocsp_states) / sizeof(ocsp_states[0]); k++)
                if (strcmp(oi.state, ocsp_states[k]) == 0)
                    r->ocsp = (int)k;
            r->next_update = oi.next_update;
            r->failures = oi.failures;
        }
    }
    if (arena.oom) {
        t->oom = true;
        goto done;
    }
    family(t, "slbd_certificate_not_after_timestamp_seconds", "gauge",
           "The certificate's not_after as a Unix time (alert on it minus time()).");
    for (size_t i = 0; i < n; i++) {
        cert_series(t, "slbd_certificate_not_after_timestamp_seconds", &arena, &rows[i], true);
        end_i(t, rows[i].not_after);
    }
    family(t, "slbd_certificate_expiry_seconds", "gauge",
           "Seconds until the certificate's not_after (negative once expired).");
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < n; i++) {
        cert_series(t, "slbd_certificate_expiry_seconds", &arena, &rows[i], true);
        end_i(t, rows[i].not_after - now);
    }
    family(t, "slbd_certificate_ocsp_state", "gauge",
           "1 for the OCSP stapling state a server certificate is in (none, fetching, good, "
           "revoked, expired, error).");
    for (size_t i = 0; i < n; i++) {
        if (rows[i].ocsp < 0)
            continue;
        for (int k = 0; k < (int)(sizeof(ocsp_states) / sizeof(ocsp_states[0])); k++) {
            cert_series(t, "slbd_certificate_ocsp_state", &arena, &rows[i], false);
            label(t, "state", ocsp_states[k]);
            end_u(t, rows[i].ocsp == k);
        }
    }
    family(t, "slbd_certificate_ocsp_next_update_timestamp_seconds", "gauge",
           "nextUpdate of the OCSP response a certificate staples (unix seconds).");
    for (size_t i = 0; i < n; i++) {
        if (rows[i].ocsp >= 0 && rows[i].next_update) {
            cert_series(t, "slbd_certificate_ocsp_next_update_timestamp_seconds", &arena, &rows[i],
                        false);
            end_i(t, rows[i].next_update);
        }
    }
    family(t, "slbd_certificate_ocsp_failures_total", "counter",
           "OCSP fetches and uploads that gave no usable response, per certificate version.");
    for (size_t i = 0; i < n; i++) {
        if (rows[i].ocsp >= 0) {
            cert_series(t, "slbd_certificate_ocsp_failures_total", &arena, &rows[i], false);
            end_u(t, rows[i].failures);
        }
    }
done:
    free(rows);
    free(arena.p);
    family(t, "slbd_tls_context_builds_total", "counter",
           "TLS contexts built since start (configuration and certificate changes; never OCSP).");
    scalar_u(t, "slbd_tls_context_builds_total", slb_tls_context_builds());
    family(t, "slbd_certificate_crl_stale", "gauge",
           "CRLs whose next_update has passed (revocation data out of date).");
    scalar_u(t, "slbd_certificate_crl_stale", slb_certstore_crl_stale(certs));
}

/* The standard process_* families every Prometheus client library exports, so existing
 * dashboards and the fd-usage alert work unchanged. Read from /proc at scrape time. */
static void process_metrics(struct text *t, uint64_t started_ms)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        family(t, "process_cpu_seconds_total", "counter", "User and system CPU time spent.");
        put(t, "process_cpu_seconds_total %.6f\n",
            (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long n = 0;
        for (struct dirent *e; (e = readdir(d)) != NULL;)
            n += e->d_name[0] != '.';
        closedir(d);
        family(t, "process_open_fds", "gauge", "Open file descriptors.");
        put(t, "process_open_fds %ld\n", n - 1); /* less the one reading the directory */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        family(t, "process_max_fds", "gauge", "The open-file limit (RLIMIT_NOFILE, soft).");
        put(t, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
    FILE *f = fopen("/proc/self/statm", "re");
    if (f) {
        unsigned long long vm, rss;
        if (fscanf(f, "%llu %llu", &vm, &rss) == 2) {
            unsigned long long page = (unsigned long long)sysconf(_SC_PAGESIZE);
            family(t, "process_virtual_memory_bytes", "gauge", "Virtual memory size.");
            put(t, "process_virtual_memory_bytes %llu\n", vm * page);
            family(t, "process_resident_memory_bytes", "gauge", "Resident memory size.");
            put(t, "process_resident_memory_bytes %llu\n", rss * page);
        }
        fclose(f);
    }
    family(t, "process_start_time_seconds", "gauge", "Start time of the process (Unix time).");
    put(t, "process_start_time_seconds %.3f\n", (double)started_ms / 1000.0);
}

/* slbd_build_info's labels: the release, and the git description when built from git. */
static void build_info(struct text *t)
{
    const char *v = slb_version(); /* "0.1.0" or "0.1.0 (git 330e4cb-dirty)" */
    const char *sp = strchr(v, ' ');
    const char *rev = sp && strncmp(sp, " (git ", 6) == 0 ? sp + 6 : "";
    size_t rlen = *rev ? strcspn(rev, ")") : 0;
    family(t, "slbd_build_info", "gauge",
           "Always 1; the labels say which build runs and with which libraries.");
    put(t,
        "slbd_build_info{version=\"%.*s\",revision=\"%.*s\",openssl=\"%s\","
        "nghttp2=\"%s\"} 1\n",
        (int)(sp ? (size_t)(sp - v) : strlen(v)), v, (int)rlen, rev,
        OpenSSL_version(OPENSSL_VERSION_STRING), nghttp2_version(0)->version_str);
}

static void acme_metrics(struct text *t, struct slb_acme *acme)
{
    static const char *const states[] = {"pending", "valid", "renewing", "failed"};
    struct slb_acme_info ai;
    family(t, "slbd_acme_certificate_state", "gauge",
           "1 for the state an ACME certificate is in (pending, valid, renewing, failed).");
    for (size_t i = 0; slb_acme_info_at(acme, i, &ai); i++) {
        for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++) {
            series(t, "slbd_acme_certificate_state", "id", ai.id);
            put_mem(t, ",name=\"", 7);
            put_escaped(t, ai.name);
            put_mem(t, "\"", 1);
            label(t, "state", states[k]);
            end_u(t, strcmp(ai.state, states[k]) == 0);
        }
    }
    family(t, "slbd_acme_renewal_timestamp_seconds", "gauge",
           "When the renewal of an issued ACME certificate starts (unix seconds).");
    for (size_t i = 0; slb_acme_info_at(acme, i, &ai); i++)
        if (ai.renew_at) {
            series(t, "slbd_acme_renewal_timestamp_seconds", "id", ai.id);
            end_i(t, ai.renew_at);
        }
    family(t, "slbd_acme_failures_total", "counter",
           "Failed ACME order attempts per certificate since start (each is retried).");
    for (size_t i = 0; slb_acme_info_at(acme, i, &ai); i++) {
        series(t, "slbd_acme_failures_total", "id", ai.id);
        end_u(t, ai.failures);
    }
}

char *slb_metrics_prometheus(const struct slb_metrics_view *v, size_t *len)
{
    struct text t = {0};
    const struct slb_snapshot *s = v->snap;
    for (int b = 0; b < SLB_HIST_BUCKETS - 1; b++)
        snprintf(t.le[b], sizeof(t.le[b]), "%g", slb_resp_bucket_le[b]);
    build_info(&t);
    family(&t, "slbd_config_reload_success", "gauge",
           "1 when the last reload (SIGHUP) was taken, 0 when it was refused.");
    scalar_u(&t, "slbd_config_reload_success", v->reload_ok ? 1 : 0);
    family(&t, "slbd_config_last_reload_success_timestamp_seconds", "gauge",
           "When config.json was last loaded successfully (start or SIGHUP), Unix time.");
    put(&t, "slbd_config_last_reload_success_timestamp_seconds %.3f\n",
        (double)v->reload_ok_ms / 1000.0);
    if (v->clustered) {
        family(&t, "slbd_cluster_connected", "gauge",
               "1 while etcd is reachable (cluster mode); 0: serving the last applied state.");
        scalar_u(&t, "slbd_cluster_connected", v->cluster_connected ? 1 : 0);
        family(&t, "slbd_cluster_revision", "gauge",
               "The etcd revision of the shared state this node serves.");
        put(&t, "slbd_cluster_revision %lld\n", v->cluster_revision);
    }
    family(&t, "slbd_config_generation", "gauge", "Generation of the active configuration.");
    scalar_u(&t, "slbd_config_generation", s ? s->generation : 0);
    family(&t, "slbd_workers", "gauge", "Worker threads.");
    put(&t, "slbd_workers %d\n", v->nworkers);
    family(&t, "slbd_connection_cap", "gauge",
           "Client connections slbd holds at most (from the open-file limit); beyond it new "
           "connections wait in the listen backlog.");
    scalar_u(&t, "slbd_connection_cap", v->conn_cap);
    listener_metrics(&t, s);
    server_metrics(&t, s);
    cert_metrics(&t, v->certs, v->ocsp, v->certificate_series);
    acme_metrics(&t, v->acme);
    family(&t, "slbd_access_log_dropped_total", "counter",
           "Access-log batches dropped because the logger fell behind.");
    scalar_u(&t, "slbd_access_log_dropped_total", slb_access_dropped());
    process_metrics(&t, v->started_ms);
    if (t.oom) {
        free(t.p);
        return NULL;
    }
    *len = t.len;
    return t.p;
}
