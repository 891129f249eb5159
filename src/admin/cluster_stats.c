/* SPDX-License-Identifier: Apache-2.0 */
/* GET /v1/stats?scope=cluster (cluster_stats.h). A read needs no coroutine: the requests run
 * side by side on the control loop's client, and the answer is put together from a zero-delay
 * timer once the last one ended, so the loop keeps serving meanwhile. */
#include "admin/cluster_stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/control.h"
#include "metrics/metrics.h"
#include "metrics/stats_sum.h"
#include "ops/ops.h"

#define FANOUT_TIMEOUT_MS 2000u

/* One other node being asked; owned by its fan-out. */
struct fanout_peer {
    struct slb_admin_fanout *f;
    char *name;
    struct slb_httpc_req *req; /* while in flight */
    json_t *doc;               /* its /v1/stats once answered */
    char error[256];
};

struct slb_admin_fanout {
    struct slb_ctl *ctl;
    struct slb_timer timer;
    char *self;
    struct fanout_peer *peers;
    size_t npeers, pending;
    slb_admin_fanout_cb done;
    void *data;
};

static void fanout_free(struct slb_admin_fanout *f)
{
    for (size_t i = 0; i < f->npeers; i++) {
        if (f->peers[i].req)
            slb_httpc_cancel(f->peers[i].req);
        free(f->peers[i].name);
        json_decref(f->peers[i].doc);
    }
    slb_timer_stop(&f->ctl->loop, &f->timer);
    free(f->peers);
    free(f->self);
    free(f);
}

static void fanout_finish(struct slb_loop *loop, struct slb_timer *t)
{
    struct slb_admin_fanout *f = t->data;
    struct slb_metrics_view v;
    slb_ops_metrics_view(f->ctl, &v);
    json_t *sum = slb_metrics_stats_json(&v);
    json_t *nodes = json_array(), *missing = json_array();
    if (!sum || !nodes || !missing) {
        json_decref(sum);
        sum = NULL;
    }
    if (sum)
        json_array_append_new(nodes, json_string(f->self));
    for (size_t i = 0; sum && i < f->npeers; i++) {
        struct fanout_peer *p = &f->peers[i];
        if (p->doc) {
            slb_stats_sum(sum, p->doc);
            json_array_append_new(nodes, json_string(p->name));
        } else {
            json_array_append_new(missing,
                                  json_pack("{s:s, s:s}", "name", p->name, "error", p->error));
        }
    }
    if (sum) {
        json_object_set_new(sum, "scope", json_string("cluster"));
        json_object_set_new(sum, "nodes", nodes);
        json_object_set_new(sum, "missing", missing);
    } else {
        json_decref(nodes);
        json_decref(missing);
    }
    slb_admin_fanout_cb done = f->done;
    void *data = f->data;
    fanout_free(f);
    done(sum, data);
}

static void peer_done(struct slb_httpc_req *req, const struct slb_httpc_result *res, void *data)
{
    struct fanout_peer *p = data;
    p->req = NULL;
    if (res->rc < 0) {
        snprintf(p->error, sizeof(p->error), "%s", res->error);
    } else if (res->status != 200) {
        snprintf(p->error, sizeof(p->error), "answered %ld%s", res->status,
                 res->status == 401 ? " (give every node the same admin token or API key)" : "");
    } else {
        p->doc = json_loadb(res->body, res->body_len, 0, NULL);
        if (!json_is_object(p->doc)) {
            json_decref(p->doc);
            p->doc = NULL;
            snprintf(p->error, sizeof(p->error), "answered something that is not JSON stats");
        }
    }
    if (--p->f->pending == 0)
        slb_timer_start(&p->f->ctl->loop, &p->f->timer, 0);
}

/* Start asking one node at its registered admin address ("HOST:PORT" or a URL). */
static void peer_start(struct slb_admin_fanout *f, struct fanout_peer *p, const char *admin,
                       const char *auth_line, bool tls)
{
    char url[512];
    if (!admin || !*admin) {
        snprintf(p->error, sizeof(p->error), "no admin address registered");
        return;
    }
    if (strncmp(admin, "unix:", 5) == 0 || admin[0] == '/') {
        snprintf(p->error, sizeof(p->error), "its admin address is a unix socket");
        return;
    }
    if (strstr(admin, "://"))
        snprintf(url, sizeof(url), "%s/v1/stats", admin);
    else
        snprintf(url, sizeof(url), "%s://%s/v1/stats", tls ? "https" : "http", admin);
    /* One request now and then: no connection is kept open on either node. */
    const char *headers[] = {"Connection: close", auth_line, NULL};
    struct slb_httpc_opts o = {
        .url = url,
        .headers = headers,
        .timeout_ms = FANOUT_TIMEOUT_MS,
        .connect_timeout_ms = FANOUT_TIMEOUT_MS,
        .on_done = peer_done,
        .data = p,
    };
    if (slb_httpc_start(&f->ctl->httpc, &o, &p->req) < 0) {
        p->req = NULL;
        snprintf(p->error, sizeof(p->error), "the request could not be started");
        return;
    }
    f->pending++;
}

struct slb_admin_fanout *slb_admin_fanout_stats(struct slb_ctl *ctl, const char *authorization,
                                                bool tls, slb_admin_fanout_cb done, void *data)
{
    json_t *st = slb_ops_cluster_status(ctl);
    json_t *nodes = json_object_get(st, "nodes");
    struct slb_admin_fanout *f = calloc(1, sizeof(*f));
    char *auth_line = NULL;
    if (!f || !json_is_array(nodes))
        goto fail;
    f->ctl = ctl;
    f->done = done;
    f->data = data;
    slb_timer_init(&f->timer, fanout_finish, f);
    const char *self = json_string_value(json_object_get(st, "node"));
    f->self = strdup(self ? self : "");
    f->peers = calloc(json_array_size(nodes) + 1, sizeof(*f->peers));
    if (authorization && asprintf(&auth_line, "Authorization: %s", authorization) < 0)
        auth_line = NULL;
    if (!f->self || !f->peers || (authorization && !auth_line))
        goto fail;
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n)
    {
        if (json_is_true(json_object_get(n, "self")))
            continue;
        const char *name = json_string_value(json_object_get(n, "name"));
        struct fanout_peer *p = &f->peers[f->npeers];
        p->f = f;
        p->name = strdup(name ? name : "?");
        if (!p->name)
            goto fail;
        f->npeers++;
        peer_start(f, p, json_string_value(json_object_get(n, "admin")), auth_line, tls);
    }
    if (f->pending == 0)
        slb_timer_start(&ctl->loop, &f->timer, 0);
    free(auth_line);
    json_decref(st);
    return f;
fail:
    free(auth_line);
    json_decref(st);
    if (f && f->ctl)
        fanout_free(f);
    else
        free(f);
    return NULL;
}

void slb_admin_fanout_cancel(struct slb_admin_fanout *f)
{
    if (f)
        fanout_free(f);
}
