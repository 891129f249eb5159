/* SPDX-License-Identifier: Apache-2.0 */
/* Stats and metrics are computed on the control thread by summing every worker's counter
 * line; workers never synchronise to be counted. Counters live in registry objects that
 * survive configuration changes, so they never go backwards while a listener or server
 * stays configured. */
#include "metrics/metrics.h"

#include "admin/routes.h"
#include "event/control.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t slb_metrics_sum(struct slb_wcount *w, int nworkers, int k)
{
    uint64_t s = 0;
    for (int i = 0; i < nworkers; i++)
        s += slb_count_get(&w[i].v[k]);
    return s;
}

static json_t *server_json(const struct slb_server_cfg *sc, struct slb_srv_rt *r)
{
    int n = r->nworkers;
    return json_pack("{s:s, s:i, s:i, s:s, s:I, s:I, s:I, s:I, s:I, s:s}", "address",
                     sc->address, "port", sc->port, "weight", (int)sc->weight, "health",
                     atomic_load(&r->healthy) == SLB_HEALTH_UP ? "up" : "down", "active",
                     (json_int_t)slb_metrics_sum(r->w, n, SLB_SRV_ACTIVE), "connections",
                     (json_int_t)slb_metrics_sum(r->w, n, SLB_SRV_CONNS), "failures",
                     (json_int_t)slb_metrics_sum(r->w, n, SLB_SRV_FAILS), "bytes_to",
                     (json_int_t)slb_metrics_sum(r->w, n, SLB_SRV_BYTES_TO), "bytes_from",
                     (json_int_t)slb_metrics_sum(r->w, n, SLB_SRV_BYTES_FROM), "last_check",
                     r->last_error[0] ? r->last_error : "ok");
}

json_t *slb_metrics_stats_json(struct slb_ctl *ctl)
{
    struct slb_snapshot *s = ctl->cur;
    json_t *ls = json_array(), *gs = json_array();
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        struct slb_listener_rt *l = &s->listeners[i];
        struct slb_wcount *w = l->stats->w;
        int n = l->stats->nworkers;
        json_array_append_new(
            ls, json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:{s:I, s:I}, s:{s:I, s:I}}", "name",
                          l->cfg->name, "protocol", slb_proto_name(l->cfg->protocol), "bind",
                          l->cfg->bind, "connections",
                          (json_int_t)slb_metrics_sum(w, n, SLB_LIS_CONNS), "active",
                          (json_int_t)slb_metrics_sum(w, n, SLB_LIS_ACTIVE), "refused",
                          (json_int_t)slb_metrics_sum(w, n, SLB_LIS_REFUSED), "payload_bytes",
                          "in", (json_int_t)slb_metrics_sum(w, n, SLB_LIS_PAYLOAD_IN), "out",
                          (json_int_t)slb_metrics_sum(w, n, SLB_LIS_PAYLOAD_OUT), "wire_bytes",
                          "in", (json_int_t)slb_metrics_sum(w, n, SLB_LIS_WIRE_IN), "out",
                          (json_int_t)slb_metrics_sum(w, n, SLB_LIS_WIRE_OUT)));
    }
    for (size_t i = 0; s && i < s->ngroups; i++) {
        struct slb_group_rt *g = &s->groups[i];
        json_t *srv = json_array();
        for (size_t k = 0; k < g->nservers; k++)
            json_array_append_new(srv, server_json(&g->cfg->servers[k], g->srv[k]));
        json_array_append_new(gs, json_pack("{s:s, s:s, s:o}", "name", g->cfg->name,
                                            "scheduler", slb_sched_name(g->cfg->scheduler),
                                            "servers", srv));
    }
    return json_pack("{s:I, s:i, s:I, s:o, s:o}", "generation",
                     (json_int_t)(s ? s->generation : 0), "workers", ctl->nworkers,
                     "started_ms", (json_int_t)ctl->started_ms, "listeners", ls, "groups", gs);
}

/* A growing text buffer for the exposition format. */
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
        size_t cap = (t->cap ? t->cap * 2 : 8192) + (size_t)n;
        char *np = realloc(t->p, cap);
        if (!np) {
            t->oom = true;
            return;
        }
        t->p = np;
        t->cap = cap;
    }
}

char *slb_metrics_prometheus(struct slb_ctl *ctl, size_t *len)
{
    struct text t = {0};
    struct slb_snapshot *s = ctl->cur;
    put(&t, "# HELP slbd_config_generation Generation of the active configuration.\n"
            "# TYPE slbd_config_generation gauge\nslbd_config_generation %llu\n",
        (unsigned long long)(s ? s->generation : 0));
    put(&t, "# HELP slbd_listener_connections_total Connections accepted.\n"
            "# TYPE slbd_listener_connections_total counter\n");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        struct slb_lis_rt *r = s->listeners[i].stats;
        put(&t, "slbd_listener_connections_total{listener=\"%s\"} %llu\n", r->name,
            (unsigned long long)slb_metrics_sum(r->w, r->nworkers, SLB_LIS_CONNS));
    }
    put(&t, "# HELP slbd_listener_connections_active Connections open now.\n"
            "# TYPE slbd_listener_connections_active gauge\n");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        struct slb_lis_rt *r = s->listeners[i].stats;
        put(&t, "slbd_listener_connections_active{listener=\"%s\"} %llu\n", r->name,
            (unsigned long long)slb_metrics_sum(r->w, r->nworkers, SLB_LIS_ACTIVE));
    }
    put(&t, "# HELP slbd_listener_connections_refused_total Connections refused (limits, no "
            "backend).\n# TYPE slbd_listener_connections_refused_total counter\n");
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        struct slb_lis_rt *r = s->listeners[i].stats;
        put(&t, "slbd_listener_connections_refused_total{listener=\"%s\"} %llu\n", r->name,
            (unsigned long long)slb_metrics_sum(r->w, r->nworkers, SLB_LIS_REFUSED));
    }
    put(&t, "# HELP slbd_listener_bytes_total Bytes between clients and slbd: payload (billing) "
            "and wire (everything on the socket).\n# TYPE slbd_listener_bytes_total counter\n");
    static const struct {
        int slot;
        const char *dir, *kind;
    } bytes[] = {{SLB_LIS_PAYLOAD_IN, "in", "payload"},
                 {SLB_LIS_PAYLOAD_OUT, "out", "payload"},
                 {SLB_LIS_WIRE_IN, "in", "wire"},
                 {SLB_LIS_WIRE_OUT, "out", "wire"}};
    for (size_t i = 0; s && i < s->nlisteners; i++) {
        struct slb_lis_rt *r = s->listeners[i].stats;
        for (size_t b = 0; b < 4; b++)
            put(&t, "slbd_listener_bytes_total{listener=\"%s\",direction=\"%s\",kind=\"%s\"} %llu\n",
                r->name, bytes[b].dir, bytes[b].kind,
                (unsigned long long)slb_metrics_sum(r->w, r->nworkers, bytes[b].slot));
    }
    static const struct {
        int slot;
        const char *name, *type, *help;
    } srv[] = {
        {SLB_SRV_ACTIVE, "slbd_server_connections_active", "gauge", "Open connections."},
        {SLB_SRV_CONNS, "slbd_server_connections_total", "counter", "Connections opened."},
        {SLB_SRV_FAILS, "slbd_server_failures_total", "counter", "Failed connects/exchanges."},
        {SLB_SRV_REQS, "slbd_server_requests_total", "counter", "HTTP requests sent."},
        {SLB_SRV_BYTES_TO, "slbd_server_bytes_sent_total", "counter", "Bytes sent to it."},
        {SLB_SRV_BYTES_FROM, "slbd_server_bytes_received_total", "counter",
         "Bytes received from it."},
    };
    for (size_t m = 0; m < sizeof(srv) / sizeof(srv[0]); m++) {
        put(&t, "# HELP %s %s\n# TYPE %s %s\n", srv[m].name, srv[m].help, srv[m].name,
            srv[m].type);
        for (size_t i = 0; s && i < s->ngroups; i++) {
            struct slb_group_rt *g = &s->groups[i];
            for (size_t k = 0; k < g->nservers; k++) {
                struct slb_srv_rt *r = g->srv[k];
                put(&t, "%s{group=\"%s\",server=\"%s\"} %llu\n", srv[m].name, g->cfg->name,
                    strchr(r->key, '/') + 1,
                    (unsigned long long)slb_metrics_sum(r->w, r->nworkers, srv[m].slot));
            }
        }
    }
    put(&t, "# HELP slbd_server_up 1 when the server passes its health checks.\n"
            "# TYPE slbd_server_up gauge\n");
    for (size_t i = 0; s && i < s->ngroups; i++) {
        struct slb_group_rt *g = &s->groups[i];
        for (size_t k = 0; k < g->nservers; k++)
            put(&t, "slbd_server_up{group=\"%s\",server=\"%s\"} %d\n", g->cfg->name,
                strchr(g->srv[k]->key, '/') + 1,
                atomic_load(&g->srv[k]->healthy) == SLB_HEALTH_UP);
    }
    if (t.oom) {
        free(t.p);
        return NULL;
    }
    *len = t.len;
    return t.p;
}

void slb_admin_stats(struct slb_ctl *ctl, struct slb_admin_resp *resp)
{
    resp->json = slb_metrics_stats_json(ctl);
}

void slb_admin_metrics(struct slb_ctl *ctl, struct slb_admin_resp *resp)
{
    size_t len = 0;
    char *text = slb_metrics_prometheus(ctl, &len);
    if (!text) {
        slb_admin_error_simple(resp, 500, "internal", "out of memory");
        return;
    }
    resp->text = text;
    resp->text_len = len;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}
