/* SPDX-License-Identifier: Apache-2.0 */
/* Cluster mode on the control thread: watch, resync, node registration. */
#include "daemon/cluster.h"

#include "cert/store.h"
#include "cluster/backend.h"
#include "cluster/etcd.h"
#include "cluster/lease.h"
#include "cluster/seal.h"
#include "config/state.h"
#include "core/log.h"
#include "core/time.h"
#include "core/version.h"
#include "daemon/control.h"
#include "state/backend.h"
#include "tls/tls.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODE_LEASE_TTL_S 10
#define NODE_REFRESH_MS 5000u
#define WATCH_IDLE_MS (3 * NODE_REFRESH_MS)
#define MAX_ENDPOINTS 16
/* As the backend's own calls (cluster/backend.c). */
#define WRITE_TIMEOUT_MS 3000u
#define WRITE_TRY_MS 1000u

struct slb_cluster {
    struct slb_ctl *ctl;
    struct slb_etcd *etcd; /* asynchronous, on the control loop */
    /* The admin API's writes, on the control loop too (cluster/backend.h), with the backend's
     * deadline. While one waits for etcd, the watch applies nothing (an operation is half
     * done): it stops and starts again from deferred_from once the write is answered. */
    struct slb_etcd *writes;
    bool deferred;
    int64_t deferred_from;
    /* The etcd revision of the newest configuration document applied from etcd (an event, a
     * refresh, a resync): an event not newer is not applied again. */
    int64_t config_floor;
    struct slb_etcd_watch *watch;
    struct slb_etcd_keeper *keeper;
    char prefix[128];
    char name[64];
    char admin[128];
    bool connected;
    bool need_resync;
    int64_t revision;       /* the store revision this node serves */
    int64_t registered_rev; /* the revision our registration says */
    uint64_t registered_ms;
    bool registering;
    json_t *nodes; /* name -> registration, from the watch */
    /* A new watch is started from the loop, not from inside the old one's callback (curl
     * refuses a new transfer from within its own callbacks). */
    struct slb_timer rewatch;
    int64_t rewatch_from;
    /* Ticket key rotation: by the node holding <prefix>leader/tickets under its lease. */
    bool leader;
    bool electing;
    int64_t leader_lease; /* the lease our leadership hangs on */
    /* slbd --upgrade: the old process, while a new one takes over, watches nothing (frozen);
     * once the new one serves, the lease is the new process's (handed). The new process keeps
     * the old one's lease from its start (borrowed until the old one confirmed the hand-over):
     * neither revokes a lease the other may still hold. */
    bool frozen;
    bool handed;
    bool borrowed;
};

/* --- options --- */

struct endpoints {
    char buf[2048];
    const char *v[MAX_ENDPOINTS];
    size_t n;
};

static int split_endpoints(const char *list, struct endpoints *ep, struct slb_err *err)
{
    if ((size_t)snprintf(ep->buf, sizeof(ep->buf), "%s", list) >= sizeof(ep->buf))
        return slb_err_set(err, 400, "invalid_value", "--cluster", "the endpoint list is too long");
    ep->n = 0;
    for (char *save = NULL, *t = strtok_r(ep->buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (ep->n == MAX_ENDPOINTS)
            return slb_err_set(err, 400, "invalid_value", "--cluster", "at most %d etcd endpoints",
                               MAX_ENDPOINTS);
        if (strncmp(t, "http://", 7) != 0 && strncmp(t, "https://", 8) != 0)
            return slb_err_set(err, 400, "invalid_value", "--cluster",
                               "%s: an etcd endpoint is an http:// or https:// URL", t);
        ep->v[ep->n++] = t;
    }
    if (ep->n == 0)
        return slb_err_set(err, 400, "invalid_value", "--cluster", "no etcd endpoint given");
    return 0;
}

static const char *prefix_of(const struct slb_cluster_opts *o)
{
    return o->prefix ? o->prefix : "/slbd/";
}

static void etcd_opts(const struct slb_cluster_opts *o, const struct endpoints *ep,
                      struct slb_etcd_opts *eo)
{
    *eo = (struct slb_etcd_opts){
        .endpoints = ep->v,
        .nendpoints = ep->n,
        .ca_file = o->cacert,
        .cert_file = o->cert,
        .key_file = o->key,
    };
}

struct slb_backend *slb_cluster_backend(const struct slb_cluster_opts *o, const char *dir,
                                        int64_t *revision, struct slb_err *err)
{
    *revision = 0;
    struct endpoints ep;
    if (split_endpoints(o->endpoints, &ep, err) < 0)
        return NULL;
    struct slb_seal seal;
    if (slb_seal_load(&seal, o->key_file, err) < 0)
        return NULL;
    struct slb_backend *cache = slb_backend_dir_new(dir, false, err);
    if (!cache || slb_backend_dir_prepare(cache, err) < 0) {
        slb_backend_free(cache);
        slb_seal_deinit(&seal);
        return NULL;
    }
    struct slb_etcd_opts eo;
    etcd_opts(o, &ep, &eo);
    struct slb_backend *b = slb_backend_etcd_new(&eo, prefix_of(o), seal.key, cache, err);
    slb_seal_deinit(&seal);
    if (!b)
        return NULL;
    bool seeded = false;
    int rc = slb_backend_etcd_seed(b, &seeded);
    if (rc == SLB_BACKEND_EUNAVAILABLE) {
        slb_warn("etcd cannot be reached: starting from the state directory %s (the last state "
                 "this node applied)",
                 dir);
        slb_backend_etcd_set_offline(b, true);
        return b;
    }
    if (rc < 0) {
        slb_err_set(err, 500, "cluster_unavailable", "--cluster", "cannot read etcd: %s",
                    slb_strerror(rc));
        slb_backend_free(b);
        return NULL;
    }
    *revision = slb_backend_etcd_revision(b);
    return b;
}

/* --- applying what others changed --- */

static int apply_current(struct slb_ctl *ctl, const char *why)
{
    struct slb_err err = {0};
    int rc = slb_ctl_apply(ctl, json_incref(ctl->doc), false, &err);
    if (rc < 0)
        slb_error("cluster: %s: cannot rebuild the configuration: %s", why, err.msg);
    return rc;
}

static void adopt_tickets(struct slb_cluster *c)
{
    struct slb_ctl *ctl = c->ctl;
    struct slb_err err = {0};
    struct slb_ticket_ring *r = slb_ticket_ring_open(ctl->backend, &err);
    if (!r) {
        slb_error("cluster: cannot load the session ticket keys: %s", err.msg);
        return;
    }
    slb_ticket_ring_unref(ctl->tickets);
    ctl->tickets = r;
    slb_tls_set_store(ctl->certs, ctl->tickets);
}

static int adopt_config(struct slb_cluster *c, const char *data, size_t len, int64_t rev)
{
    struct slb_ctl *ctl = c->ctl;
    json_error_t jerr;
    json_t *doc = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        slb_error("cluster: the configuration at revision %lld is not JSON: %s", (long long)rev,
                  jerr.text);
        return SLB_EINVAL;
    }
    struct slb_err err = {0};
    if (slb_ctl_apply(ctl, doc, false, &err) < 0) {
        slb_error("cluster: the configuration at revision %lld is refused, keeping the running "
                  "one: %s",
                  (long long)rev, err.msg);
        return SLB_EINVAL;
    }
    ctl->config_rev = (uint64_t)rev;
    if (rev > c->config_floor)
        c->config_floor = rev;
    slb_backend_etcd_cache(ctl->backend, SLB_DOC_CONFIG, data, len);
    slb_info("cluster: configuration of revision %lld active", (long long)rev);
    return 0;
}

static void node_update(struct slb_cluster *c, const char *name, const char *value, size_t len)
{
    if (!value) {
        json_object_del(c->nodes, name);
        return;
    }
    json_t *v = json_loadb(value, len, 0, NULL);
    if (json_is_object(v))
        json_object_set(c->nodes, name, v);
    json_decref(v);
}

/* One event of the watch; *rebuild is set when certificates or ticket keys changed. */
static void apply_event(struct slb_cluster *c, const struct slb_etcd_event *ev, bool *rebuild)
{
    struct slb_ctl *ctl = c->ctl;
    size_t pl = strlen(c->prefix);
    if (strncmp(ev->kv.key, c->prefix, pl) != 0)
        return;
    const char *key = ev->kv.key + pl;
    bool del = ev->type == SLB_ETCD_EV_DELETE;
    if (strncmp(key, "nodes/", 6) == 0) {
        node_update(c, key + 6, del ? NULL : ev->kv.value, ev->kv.value_len);
        return;
    }
    if (strncmp(key, "leader/", 7) == 0)
        return; /* elect() asks again each second */
    /* The revision served is that of the newest shared document applied (registrations,
     * which change every few seconds, do not count). */
    if (!c->need_resync && ev->kv.mod_revision > c->revision)
        c->revision = ev->kv.mod_revision;
    /* Our own writes were applied before they were answered. */
    if (slb_backend_etcd_own(ctl->backend, ev->kv.mod_revision))
        return;
    char *data = NULL;
    size_t len = 0;
    if (!del && slb_backend_etcd_decode(ctl->backend, ev->kv.key, ev->kv.value, ev->kv.value_len,
                                        &data, &len) < 0) {
        slb_error("cluster: %s cannot be opened with the cluster key; ignored", ev->kv.key);
        return;
    }
    if (strcmp(key, SLB_DOC_CONFIG) == 0) {
        /* Not older than what was applied already: a refresh after a conflict may have
         * taken a document whose event the watch delivers after the write (defer), and our
         * write on top of it must not be rolled back. */
        if (!del && (uint64_t)ev->kv.mod_revision != ctl->config_rev &&
            ev->kv.mod_revision > c->config_floor)
            adopt_config(c, data, len, ev->kv.mod_revision);
    } else if (strcmp(key, SLB_DOC_TICKETS) == 0) {
        if (!del) {
            adopt_tickets(c);
            *rebuild = true;
        }
    } else if (strncmp(key, SLB_DOC_CERTS, strlen(SLB_DOC_CERTS)) == 0) {
        const char *id = key + strlen(SLB_DOC_CERTS);
        struct slb_err err = {0};
        /* Taken already, or a newer one, by a refresh after a conflict (and our write on
         * top of it): an event the watch delivers after a write (defer) must not roll it
         * back. Held certificates carry etcd revisions here: a start from the cache resyncs
         * before the watch delivers anything. */
        bool have = !del && slb_certstore_rev(ctl->certs, id) >= (uint64_t)ev->kv.mod_revision;
        if (!have && slb_certstore_adopt(ctl->certs, id, data, len, (uint64_t)ev->kv.mod_revision,
                                         &err) < 0) {
            slb_error("cluster: certificate %s at revision %lld refused: %s", id,
                      (long long)ev->kv.mod_revision, err.msg);
        } else if (!have) {
            slb_backend_etcd_cache(ctl->backend, key, data, len);
            *rebuild = true;
        }
    }
    if (data) {
        OPENSSL_cleanse(data, len);
        free(data);
    }
}

/* --- resync: everything read again --- */

struct cert_ids {
    char (*v)[64];
    size_t n, cap;
};

static int collect_id(const char *key, void *arg)
{
    struct cert_ids *ids = arg;
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 16;
        void *nv = realloc(ids->v, cap * sizeof(*ids->v));
        if (!nv)
            return -ENOMEM;
        ids->v = nv;
        ids->cap = cap;
    }
    snprintf(ids->v[ids->n++], 64, "%s", key + strlen(SLB_DOC_CERTS));
    return 0;
}

static int collect_node(const char *key, void *arg)
{
    struct slb_cluster *c = arg;
    struct slb_doc d;
    struct slb_err err = {0};
    if (slb_backend_get(c->ctl->backend, key, 64 * 1024, &d, &err) == 0) {
        node_update(c, key + 6, d.data, d.len);
        slb_doc_clear(&d);
    }
    return 0;
}

/* Every certificate etcd holds, taken when its revision differs from the one held; *ids
 * receives their ids. Those no longer in etcd are dropped by certs_drop, once a configuration
 * that does not use them is active. 0, or SLB_BACKEND_EUNAVAILABLE. */
static int certs_take(struct slb_cluster *c, struct cert_ids *ids, const char *why)
{
    struct slb_ctl *ctl = c->ctl;
    struct slb_backend *b = ctl->backend;
    struct slb_err err = {0};
    int rc = slb_backend_list(b, SLB_DOC_CERTS, collect_id, ids);
    for (size_t i = 0; rc == 0 && i < ids->n; i++) {
        char key[SLB_DOC_KEY_MAX];
        snprintf(key, sizeof(key), "%s%s", SLB_DOC_CERTS, ids->v[i]);
        struct slb_doc d;
        if (slb_backend_get(b, key, 1u << 20, &d, &err) == 0) {
            if (d.rev != slb_certstore_rev(ctl->certs, ids->v[i]) &&
                slb_certstore_adopt(ctl->certs, ids->v[i], d.data, d.len, d.rev, &err) < 0)
                slb_error("cluster: %s: certificate %s refused: %s", why, ids->v[i], err.msg);
            slb_doc_clear(&d);
        }
    }
    return slb_backend_etcd_online(b) ? rc : SLB_BACKEND_EUNAVAILABLE;
}

static void certs_drop(struct slb_cluster *c, const struct cert_ids *ids)
{
    struct slb_ctl *ctl = c->ctl;
    struct slb_err err = {0};
    for (size_t i = slb_certstore_count(ctl->certs); i-- > 0;) {
        const char *id = slb_certstore_at(ctl->certs, i)->id;
        bool keep = false;
        for (size_t j = 0; j < ids->n && !keep; j++)
            keep = strcmp(ids->v[j], id) == 0;
        if (!keep) {
            char key[SLB_DOC_KEY_MAX];
            snprintf(key, sizeof(key), "%s%s", SLB_DOC_CERTS, id);
            slb_backend_etcd_cache(ctl->backend, key, NULL, 0);
            slb_certstore_adopt(ctl->certs, id, NULL, 0, 0, &err);
        }
    }
}

/* Read the whole prefix again and serve it; 0 with *rev the revision to watch from + 1. */
static int resync(struct slb_cluster *c, int64_t *rev)
{
    struct slb_ctl *ctl = c->ctl;
    struct slb_backend *b = ctl->backend;
    struct slb_err err = {0};
    json_t *doc = NULL;
    uint64_t crev = 0;
    int rc = slb_state_config_load(b, &doc, &crev, &err);
    if (!slb_backend_etcd_online(b)) {
        json_decref(doc);
        return SLB_BACKEND_EUNAVAILABLE;
    }
    if (rc < 0) {
        slb_error("cluster: resync: %s", err.msg);
        return rc;
    }
    /* Whatever changes after this revision comes again through the watch. */
    *rev = slb_backend_etcd_revision(b);
    struct cert_ids ids = {0};
    if (certs_take(c, &ids, "resync") < 0) {
        free(ids.v);
        json_decref(doc);
        return SLB_BACKEND_EUNAVAILABLE;
    }
    adopt_tickets(c);
    json_object_clear(c->nodes);
    slb_backend_list(b, "nodes/", collect_node, c);
    if (slb_ctl_apply(ctl, doc, false, &err) < 0)
        slb_error("cluster: resync: the configuration is refused, keeping the running one: %s",
                  err.msg);
    else
        ctl->config_rev = crev;
    c->config_floor = (int64_t)crev;
    certs_drop(c, &ids);
    free(ids.v);
    apply_current(ctl, "resync");
    slb_info("cluster: resynchronized with etcd at revision %lld", (long long)*rev);
    return 0;
}

int slb_cluster_refresh(struct slb_cluster *c, struct slb_err *err)
{
    struct slb_ctl *ctl = c->ctl;
    json_t *doc = NULL;
    uint64_t crev = 0;
    struct cert_ids ids = {0};
    if (slb_state_config_load(ctl->backend, &doc, &crev, err) < 0)
        return SLB_EINVAL;
    if (!slb_backend_etcd_online(ctl->backend) || certs_take(c, &ids, "refresh") < 0) {
        json_decref(doc);
        free(ids.v);
        return slb_err_set(err, 503, "cluster_unavailable", "",
                           "etcd cannot be reached: the cluster's state cannot change now; retry "
                           "later");
    }
    int rc = 0;
    if ((int64_t)crev > c->config_floor)
        c->config_floor = (int64_t)crev;
    if (crev != ctl->config_rev) {
        if ((rc = slb_ctl_apply(ctl, doc, false, err)) == 0) {
            ctl->config_rev = crev;
            slb_cluster_wrote(c, (int64_t)crev);
        }
    } else {
        json_decref(doc);
        rc = apply_current(ctl, "refresh"); /* certificates may have changed */
        if (rc < 0)
            slb_err_set(err, 500, "internal", "", "cannot rebuild the configuration");
    }
    certs_drop(c, &ids);
    free(ids.v);
    return rc;
}

/* --- the watch --- */

static void watch_cb(struct slb_etcd_watch *w, const struct slb_etcd_watch_note *n, void *data);

static void watch_from(struct slb_cluster *c, int64_t rev)
{
    char key[160];
    snprintf(key, sizeof(key), "%s", c->prefix);
    if (c->watch)
        slb_etcd_watch_stop(c->watch);
    c->watch = NULL;
    if (slb_etcd_watch_start(c->etcd, key, true, rev, watch_cb, c, &c->watch) < 0)
        slb_error("cluster: cannot start watching %s", key);
}

/* Stop the watch now and start one from rev on the next loop iteration. */
static void rewatch(struct slb_cluster *c, int64_t rev)
{
    if (c->watch)
        slb_etcd_watch_stop(c->watch);
    c->watch = NULL;
    c->rewatch_from = rev;
    slb_timer_start(&c->ctl->loop, &c->rewatch, 0);
}

static void rewatch_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct slb_cluster *c = t->data;
    if (c->frozen)
        return;
    watch_from(c, c->rewatch_from);
}

static void set_connected(struct slb_cluster *c, bool on, const char *why)
{
    if (c->connected != on) {
        if (on)
            slb_info("cluster: connected to etcd");
        else
            slb_warn("cluster: etcd is unreachable (%s): serving the last applied state, "
                     "changes are refused",
                     why ? why : "");
    }
    c->connected = on;
    slb_backend_etcd_set_offline(c->ctl->backend, !on);
}

static void try_resync(struct slb_cluster *c)
{
    int64_t rev = 0;
    if (resync(c, &rev) == 0) {
        c->need_resync = false;
        c->revision = rev;
        rewatch(c, rev + 1);
    }
}

/* An admin write waits for etcd: stop the watch, to start it again from rev (0: with a
 * resync) once the write is answered (slb_cluster_write_done). */
static void defer(struct slb_cluster *c, int64_t rev)
{
    if (c->watch)
        slb_etcd_watch_stop(c->watch);
    c->watch = NULL;
    c->deferred = true;
    c->deferred_from = rev;
}

void slb_cluster_write_done(struct slb_cluster *c)
{
    if (!c || !c->deferred || c->frozen)
        return;
    c->deferred = false;
    rewatch(c, c->deferred_from);
}

static void watch_cb(struct slb_etcd_watch *w, const struct slb_etcd_watch_note *n, void *data)
{
    struct slb_cluster *c = data;
    bool writing = slb_backend_etcd_waiting(c->ctl->backend);
    switch (n->kind) {
    case SLB_ETCD_WATCH_CREATED:
        set_connected(c, true, NULL);
        if (c->need_resync && writing) {
            defer(c, 0);
            break;
        }
        if (c->need_resync)
            try_resync(c); /* may replace this watch */
        break;
    case SLB_ETCD_WATCH_EVENTS: {
        if (writing && n->nevents > 0) {
            defer(c, n->events[0].kv.mod_revision);
            break;
        }
        bool rebuild = false;
        for (size_t i = 0; i < n->nevents; i++)
            apply_event(c, &n->events[i], &rebuild);
        if (rebuild)
            apply_current(c->ctl, "certificates or ticket keys changed");
        break;
    }
    case SLB_ETCD_WATCH_PROGRESS:
        break;
    case SLB_ETCD_WATCH_LOST:
        set_connected(c, false, n->error);
        break;
    case SLB_ETCD_WATCH_COMPACTED:
        slb_warn("cluster: the watch's history was compacted (revision %lld): resync",
                 (long long)n->revision);
        c->need_resync = true;
        rewatch(c, 0);
        break;
    case SLB_ETCD_WATCH_FAILED:
        slb_warn("cluster: the watch ended (%s): resync", n->error ? n->error : "");
        c->need_resync = true;
        rewatch(c, 0);
        break;
    }
}

/* --- registration --- */

static void registered_cb(struct slb_etcd *e, const struct slb_etcd_resp *r, void *data)
{
    struct slb_cluster *c = data;
    c->registering = false;
    if (r->rc < 0)
        slb_debug("cluster: registration not stored: %s", r->error);
}

static json_t *self_json(struct slb_cluster *c, int64_t now_ms)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:s, s:I, s:b}", "name", c->name, "admin", c->admin,
                     "revision", (json_int_t)c->revision, "version", slb_version(), "state",
                     c->connected ? "connected" : "disconnected", "last_seen",
                     (json_int_t)(now_ms / 1000), "self", 1);
}

static void register_node(struct slb_cluster *c)
{
    int64_t lease = c->keeper ? slb_etcd_keeper_id(c->keeper) : 0;
    if (!lease || c->registering)
        return;
    uint64_t now = slb_wall_ms();
    json_t *v = self_json(c, (int64_t)now);
    json_object_del(v, "self");
    char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(v);
    char key[256];
    snprintf(key, sizeof(key), "%snodes/%s", c->prefix, c->name);
    if (text &&
        slb_etcd_put(c->etcd, key, text, strlen(text), lease, registered_cb, c, NULL) == 0) {
        c->registering = true;
        c->registered_rev = c->revision;
        c->registered_ms = now;
    }
    free(text);
}

/* --- the ticket key leader --- */

static void elected_cb(struct slb_etcd *e, const struct slb_etcd_resp *r, void *data)
{
    struct slb_cluster *c = data;
    c->electing = false;
    if (r->rc < 0)
        return;
    int64_t lease = c->keeper ? slb_etcd_keeper_id(c->keeper) : 0;
    bool was = c->leader;
    /* Created now, or ours from an earlier round under the same lease. */
    c->leader = lease != 0 && (r->succeeded || (r->nkvs == 1 && r->kvs[0].lease == lease));
    c->leader_lease = c->leader ? lease : 0;
    if (c->leader && !was)
        slb_info("cluster: this node rotates the session ticket keys of the cluster");
}

static void elect(struct slb_cluster *c)
{
    int64_t lease = c->keeper ? slb_etcd_keeper_id(c->keeper) : 0;
    if (c->leader && lease != c->leader_lease) {
        c->leader = false; /* the lease it hung on is gone */
        slb_info("cluster: this node no longer rotates the session ticket keys");
    }
    if (!lease || c->electing || !c->connected)
        return;
    char key[256];
    snprintf(key, sizeof(key), "%sleader/tickets", c->prefix);
    struct slb_etcd_cmp cmp = {
        .key = key, .target = SLB_ETCD_CREATE, .result = SLB_ETCD_EQUAL, .rev = 0};
    struct slb_etcd_op put = {.kind = SLB_ETCD_OP_PUT,
                              .key = key,
                              .value = c->name,
                              .value_len = strlen(c->name),
                              .lease = lease};
    struct slb_etcd_op get = {.kind = SLB_ETCD_OP_RANGE, .key = key};
    struct slb_etcd_txn txn = {
        .cmp = &cmp, .ncmp = 1, .success = &put, .nsuccess = 1, .failure = &get, .nfailure = 1};
    if (slb_etcd_txn(c->etcd, &txn, elected_cb, c, NULL) == 0)
        c->electing = true;
}

bool slb_cluster_rotates_tickets(const struct slb_cluster *c)
{
    return !c || c->leader;
}

static void keeper_cb(struct slb_etcd_keeper *k, enum slb_etcd_keeper_event ev, int64_t id,
                      const char *why, void *data)
{
    struct slb_cluster *c = data;
    if (ev == SLB_ETCD_LEASE_GRANTED)
        register_node(c);
    else
        slb_warn("cluster: this node's lease was lost (%s); registering again", why ? why : "");
}

void slb_cluster_tick(struct slb_cluster *c)
{
    if (!c)
        return;
    if (c->frozen) {
        /* A new process takes over (slb_cluster_freeze). */
    } else if (c->deferred || slb_backend_etcd_waiting(c->ctl->backend)) {
        /* The watch waits for an admin write (defer). */
    } else if (!c->watch && !slb_timer_active(&c->rewatch)) {
        c->need_resync = true;
        watch_from(c, 0);
    } else if (c->watch && c->need_resync && c->connected) {
        try_resync(c);
    }
    if (c->connected &&
        (c->registered_rev != c->revision || slb_wall_ms() - c->registered_ms >= NODE_REFRESH_MS))
        register_node(c);
    elect(c);
}

/* --- life --- */

struct slb_cluster *slb_cluster_start(struct slb_ctl *ctl, const struct slb_cluster_opts *o,
                                      const char *admin_addr, int64_t revision, struct slb_err *err)
{
    struct endpoints ep;
    if (split_endpoints(o->endpoints, &ep, err) < 0)
        return NULL;
    struct slb_cluster *c = calloc(1, sizeof(*c));
    if (!c || !(c->nodes = json_object())) {
        free(c);
        slb_err_set(err, 500, "internal", "", "out of memory");
        return NULL;
    }
    c->ctl = ctl;
    slb_timer_init(&c->rewatch, rewatch_cb, c);
    snprintf(c->prefix, sizeof(c->prefix), "%s", prefix_of(o));
    snprintf(c->name, sizeof(c->name), "%s", o->node);
    snprintf(c->admin, sizeof(c->admin), "%s", admin_addr ? admin_addr : "");
    struct slb_etcd_opts eo;
    etcd_opts(o, &ep, &eo);
    /* This node's own registration is put every NODE_REFRESH_MS and comes back through the
     * watch: a stream silent for much longer hangs on a member that stopped answering without
     * closing it (etcd's own progress notifications come only every 10 minutes). */
    eo.watch_idle_timeout_ms = WATCH_IDLE_MS;
    c->etcd = slb_etcd_new(&ctl->loop, &ctl->httpc, &eo, err);
    if (!c->etcd) {
        slb_cluster_free(c, false);
        return NULL;
    }
    eo.watch_idle_timeout_ms = 0;
    eo.call_timeout_ms = WRITE_TIMEOUT_MS;
    eo.try_timeout_ms = WRITE_TRY_MS;
    c->writes = slb_etcd_new(&ctl->loop, &ctl->httpc, &eo, err);
    if (!c->writes) {
        slb_cluster_free(c, false);
        return NULL;
    }
    slb_backend_etcd_set_async(ctl->backend, &ctl->loop, c->writes);
    c->revision = revision;
    c->connected = revision != 0;
    if (revision == 0) {
        /* Started from the cache: everything is read again once etcd answers. */
        c->need_resync = true;
        slb_backend_etcd_set_offline(ctl->backend, true);
        watch_from(c, 0);
    } else {
        /* The nodes registered before us, then every change after the start's load. */
        slb_backend_list(ctl->backend, "nodes/", collect_node, c);
        watch_from(c, revision + 1);
    }
    /* After an upgrade, the lease of the process we take over from: our registration and the
     * ticket leadership hang on it already, so neither goes missing nor moves to another node. */
    long long lease = 0;
    if (ctl->handover.cluster[0] && sscanf(ctl->handover.cluster, "%lld", &lease) == 1 && lease)
        c->borrowed = true;
    if (slb_etcd_keeper_adopt(c->etcd, &ctl->loop, NODE_LEASE_TTL_S, lease, keeper_cb, c,
                              &c->keeper) < 0)
        slb_warn("cluster: cannot keep a lease: this node is not registered");
    return c;
}

void slb_cluster_free(struct slb_cluster *c, bool leaving)
{
    if (!c)
        return;
    slb_timer_stop(&c->ctl->loop, &c->rewatch);
    if (c->writes) {
        slb_backend_etcd_set_async(c->ctl->backend, NULL, NULL);
        slb_etcd_free(c->writes);
    }
    if (c->watch)
        slb_etcd_watch_stop(c->watch);
    if (c->keeper) {
        int64_t lease = slb_etcd_keeper_id(c->keeper);
        slb_etcd_keeper_stop(c->keeper, false);
        /* The loop no longer runs: revoke through the backend's own, so that the node's
         * registration and its ticket leadership go now, not when the lease expires. */
        if (leaving && lease && c->connected && !c->handed && !c->borrowed &&
            slb_backend_etcd_revoke(c->ctl->backend, lease) == 0)
            slb_info("cluster: left (lease revoked)");
    }
    slb_etcd_free(c->etcd);
    json_decref(c->nodes);
    free(c);
}

/* --- upgrades (slbd --upgrade, daemon/control.c) --- */

int slb_cluster_handover_msg(const struct slb_cluster *c, char *out, size_t size)
{
    long long lease = c->keeper ? (long long)slb_etcd_keeper_id(c->keeper) : 0;
    int n = snprintf(out, size, "cluster %lld %s %s", lease, c->name, c->prefix);
    return n < 0 || (size_t)n >= size ? SLB_EINVAL : 0;
}

int slb_cluster_handover_check(const struct slb_cluster_opts *o, const char *running,
                               struct slb_err *err)
{
    if (!o->endpoints && !running[0])
        return 0;
    if (!o->endpoints)
        return slb_err_set(err, 400, "invalid_value", "--cluster",
                           "the running slbd is a cluster node (%s): start the upgrade with its "
                           "--cluster, --node and --cluster-prefix options",
                           running);
    if (!running[0])
        return slb_err_set(err, 400, "invalid_value", "--cluster",
                           "the running slbd is not in cluster mode: a node joins a cluster by "
                           "a restart, not by an upgrade");
    long long lease;
    char node[64] = "", prefix[SLB_HANDOVER_MSG] = "";
    if (sscanf(running, "%lld %63s %255[^\n]", &lease, node, prefix) != 3)
        return slb_err_set(err, 500, "upgrade_failed", "",
                           "the running slbd sent a cluster message we do not understand: %s",
                           running);
    if (strcmp(node, o->node) != 0)
        return slb_err_set(err, 400, "invalid_value", "--node",
                           "the running slbd is node \"%s\", not \"%s\": an upgrade keeps the "
                           "node's name",
                           node, o->node);
    if (strcmp(prefix, prefix_of(o)) != 0)
        return slb_err_set(err, 400, "invalid_value", "--cluster-prefix",
                           "the running slbd serves the cluster at prefix %s, not %s: an upgrade "
                           "keeps the prefix",
                           prefix, prefix_of(o));
    return 0;
}

void slb_cluster_freeze(struct slb_cluster *c, bool on)
{
    if (!c || c->frozen == on)
        return;
    c->frozen = on;
    if (on) {
        if (c->watch)
            slb_etcd_watch_stop(c->watch);
        c->watch = NULL;
        slb_timer_stop(&c->ctl->loop, &c->rewatch);
        c->deferred = false;
        return;
    }
    /* The upgrade failed: what changed meanwhile is read again. */
    c->need_resync = true;
    rewatch(c, 0);
}

void slb_cluster_handed_over(struct slb_cluster *c)
{
    if (c)
        c->handed = true;
}

void slb_cluster_took_over(struct slb_cluster *c)
{
    if (c)
        c->borrowed = false;
}

bool slb_cluster_connected(const struct slb_cluster *c)
{
    return c && c->connected;
}

int64_t slb_cluster_revision(const struct slb_cluster *c)
{
    return c ? c->revision : 0;
}

void slb_cluster_wrote(struct slb_cluster *c, int64_t rev)
{
    /* Serving it now; the watch's later events are at least as new. */
    if (c && !c->need_resync && rev > c->revision)
        c->revision = rev;
}

json_t *slb_cluster_status(struct slb_cluster *c)
{
    json_t *nodes = json_array();
    const char *name;
    json_t *v;
    bool self = false;
    json_object_foreach(c->nodes, name, v)
    {
        if (strcmp(name, c->name) == 0) {
            self = true;
            json_array_append_new(nodes, self_json(c, (int64_t)slb_wall_ms()));
        } else {
            json_array_append(nodes, v);
        }
    }
    if (!self)
        json_array_append_new(nodes, self_json(c, (int64_t)slb_wall_ms()));
    /* By name (a few nodes: insertion sort). */
    for (size_t i = 1; i < json_array_size(nodes); i++) {
        for (size_t j = i; j > 0; j--) {
            json_t *a = json_array_get(nodes, j - 1), *b = json_array_get(nodes, j);
            const char *na = json_string_value(json_object_get(a, "name"));
            const char *nb = json_string_value(json_object_get(b, "name"));
            if (!na || !nb || strcmp(na, nb) <= 0)
                break;
            json_incref(a);
            json_array_set(nodes, j - 1, b);
            json_array_set_new(nodes, j, a);
        }
    }
    return json_pack("{s:s, s:I, s:b, s:s, s:b, s:o}", "mode", "cluster", "revision",
                     (json_int_t)c->revision, "connected", c->connected, "node", c->name,
                     "ticket_leader", c->leader, "nodes", nodes);
}
