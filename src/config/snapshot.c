/* SPDX-License-Identifier: Apache-2.0 */
/* Building, retiring and freeing configuration snapshots, and the registries of runtime
 * objects (sockets, server and listener state) that consecutive snapshots share. */
#include "config/snapshot.h"

#include "core/log.h"
#include "http/rules.h"
#include "lb/health.h"
#include "net/handover.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const double slb_resp_bucket_le[SLB_HIST_BUCKETS - 1] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
};

void slb_hist_observe(struct slb_wcount *w, int base, uint64_t us)
{
    /* Integer bounds in microseconds: no floating point per request. */
    static const uint64_t le_us[SLB_HIST_BUCKETS - 1] = {
        1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000,
    };
    int b = 0;
    while (b < SLB_HIST_BUCKETS - 1 && us > le_us[b])
        b++;
    slb_count_add(&w->v[base + b], 1);
    slb_count_add(&w->v[base + SLB_HIST_BUCKETS], us);
}

const char *slb_srv_fail_name(enum slb_srv_fail f)
{
    static const char *const names[SLB_SRV_FAIL_COUNT] = {
        [SLB_SRV_FAIL_CONNECT_REFUSED] = "connect_refused",
        [SLB_SRV_FAIL_CONNECT_TIMEOUT] = "connect_timeout",
        [SLB_SRV_FAIL_CONNECT_ERROR] = "connect_error",
        [SLB_SRV_FAIL_RESET] = "reset",
        [SLB_SRV_FAIL_CLOSED] = "closed",
        [SLB_SRV_FAIL_TIMEOUT] = "timeout",
        [SLB_SRV_FAIL_INVALID] = "invalid_response",
        [SLB_SRV_FAIL_STATUS_5XX] = "status_5xx",
    };
    return (unsigned)f < SLB_SRV_FAIL_COUNT ? names[f] : "unknown";
}

enum slb_srv_fail slb_srv_fail_connect(int err)
{
    if (err < 0)
        err = -err;
    return err == ECONNREFUSED ? SLB_SRV_FAIL_CONNECT_REFUSED
           : err == ETIMEDOUT  ? SLB_SRV_FAIL_CONNECT_TIMEOUT
                               : SLB_SRV_FAIL_CONNECT_ERROR;
}

void slb_registry_init(struct slb_registry *reg, int nworkers)
{
    memset(reg, 0, sizeof(*reg));
    reg->nworkers = nworkers;
    reg->next_generation = 1;
}

/* --- lookups by key while a snapshot is built --- */

/* struct slb_key_index: a string-keyed index of registry objects, made at the start of a
 * build and dropped at its end: with 1,000 listeners, finding each one's socket and counters
 * by walking the lists was a million string compares per change. Open addressing; keys are
 * borrowed from the objects. */
static int kx_init(struct slb_key_index *x, size_t expect)
{
    size_t slots = 16;
    while (slots < 2 * expect + 2)
        slots *= 2;
    x->keys = calloc(slots, sizeof(*x->keys));
    x->vals = calloc(slots, sizeof(*x->vals));
    x->mask = slots - 1;
    x->n = 0;
    return x->keys && x->vals ? 0 : -1;
}

static void kx_free(struct slb_key_index *x)
{
    free(x->keys);
    free(x->vals);
    x->keys = NULL;
    x->vals = NULL;
}

static size_t kx_slot(const struct slb_key_index *x, const char *key)
{
    size_t i = slb_hash64(key, strlen(key), 0x6b78) & x->mask;
    while (x->keys[i] && strcmp(x->keys[i], key) != 0)
        i = (i + 1) & x->mask;
    return i;
}

static void *kx_get(const struct slb_key_index *x, const char *key)
{
    return x->keys ? x->vals[kx_slot(x, key)] : NULL;
}

/* Keeps the first object of a key (a registry list holds one per key). An index with no room
 * left (never expected: init counted every object) is dropped, and lookups walk the lists. */
static void kx_put(struct slb_key_index *x, const char *key, void *val)
{
    if (!x->keys)
        return;
    if (2 * (x->n + 1) > x->mask) {
        kx_free(x);
        return;
    }
    size_t i = kx_slot(x, key);
    if (!x->keys[i]) {
        x->keys[i] = key;
        x->vals[i] = val;
        x->n++;
    }
}

/* --- bound sockets --- */

static void addr_key(const struct sockaddr_storage *ss, char *out, size_t size)
{
    slb_handover_addr_key(ss, out, size);
}

static unsigned port_of(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)ss)->sin_port)
                                    : ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static void lsock_close(struct slb_lsock *ls)
{
    for (int i = 0; i < ls->nworkers; i++) {
        if (ls->slot[i].fd >= 0)
            close(ls->slot[i].fd);
        ls->slot[i].fd = -1;
    }
    ls->closed = true;
}

static int bind_one(const struct slb_listener_cfg *l, int *out)
{
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (l->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    /* Accepted sockets inherit it: no setsockopt per connection. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) < 0)
        goto fail;
    if (listen(fd, 4096) < 0)
        goto fail;
    *out = fd;
    return 0;
fail:;
    int rc = -errno;
    close(fd);
    return rc;
}

/* A second SO_REUSEPORT socket would silently share a port that another process of ours (or
 * a stale instance) holds; probing with a plain socket first turns that into a clear error. */
static int probe_port_free(const struct slb_listener_cfg *l)
{
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, rc = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (l->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

static struct slb_lsock *lsock_get(struct slb_registry *reg, const struct slb_listener_cfg *l,
                                   struct slb_err *err)
{
    char key[96];
    addr_key(&l->addr, key, sizeof(key));
    struct slb_lsock *found = kx_get(&reg->build_socks, key);
    for (struct slb_lsock *ls = reg->build_socks.keys ? found : reg->lsocks; ls; ls = ls->next) {
        if (!ls->closed && strcmp(ls->key, key) == 0) {
            ls->refs++;
            return ls;
        }
        if (reg->build_socks.keys)
            break; /* the index holds the open socket of a key, if any */
    }
    struct slb_inherited_sock *inh = NULL;
    for (struct slb_inherited_sock *i = reg->inherited; i; i = i->next) {
        if (strcmp(i->key, key) == 0)
            inh = i;
    }
    /* Our own SO_REUSEPORT sockets on the same port (another address, or the wildcard) can
     * coexist with the new ones; only probe ports we do not hold. Sockets handed over by
     * the previous process are ours too. */
    bool ours = inh != NULL;
    for (struct slb_inherited_sock *i = reg->inherited; i; i = i->next)
        ours |= i->nfds > 0 && strcmp(strrchr(i->key, ':'), strrchr(key, ':')) == 0;
    for (struct slb_lsock *o = reg->lsocks; o; o = o->next)
        ours |= !o->closed && o->port == port_of(&l->addr);
    int rc = ours ? 0 : probe_port_free(l);
    if (rc < 0) {
        slb_err_set(err, 400, "bind_failed", l->name, "listener %s cannot bind %s: %s", l->name,
                    l->bind, strerror(-rc));
        return NULL;
    }
    struct slb_lsock *ls =
        calloc(1, sizeof(*ls) + (size_t)reg->nworkers * sizeof(struct slb_lsock_slot));
    if (!ls) {
        slb_err_set(err, 500, "internal", l->name, "out of memory");
        return NULL;
    }
    snprintf(ls->key, sizeof(ls->key), "%s", key);
    ls->port = port_of(&l->addr);
    ls->nworkers = reg->nworkers;
    for (int i = 0; i < reg->nworkers; i++) {
        ls->slot[i].fd = -1;
        slb_timer_init(&ls->slot[i].pause, NULL, &ls->slot[i]);
    }
    /* The previous process's sockets first: connections waiting in their accept queues are
     * ours to accept, and no new socket joins the port's SO_REUSEPORT group. */
    for (int i = 0; inh && i < reg->nworkers && i < inh->nfds; i++) {
        ls->slot[i].fd = inh->fds[i];
        inh->fds[i] = -1;
    }
    if (inh)
        slb_info("listener %s: adopted %d listening sockets of %s from the previous process",
                 l->name, inh->nfds < reg->nworkers ? inh->nfds : reg->nworkers, key);
    for (int i = 0; i < reg->nworkers; i++) {
        if (ls->slot[i].fd >= 0)
            continue;
        rc = bind_one(l, &ls->slot[i].fd);
        if (rc < 0) {
            slb_err_set(err, 400, "bind_failed", l->name, "listener %s cannot bind %s: %s", l->name,
                        l->bind, strerror(-rc));
            lsock_close(ls);
            free(ls);
            return NULL;
        }
    }
    ls->refs = 1;
    ls->next = reg->lsocks;
    reg->lsocks = ls;
    kx_put(&reg->build_socks, ls->key, ls);
    return ls;
}

/* --- server and listener runtime registries --- */

static size_t srv_bucket(const struct slb_registry *reg, const char *key)
{
    return reg->srv_index_size ? slb_hash64(key, strlen(key), 0) & (reg->srv_index_size - 1) : 0;
}

/* Index r under key, doubling the table when it gets as full as it is large. Without memory
 * for a larger table the index stays as it is (chains get longer, lookups stay right); without
 * any table lookups walk the list. */
static void srv_index_add(struct slb_registry *reg, struct slb_srv_rt *r, const char *key)
{
    if (reg->nsrv + 1 > reg->srv_index_size) {
        size_t size = reg->srv_index_size ? 2 * reg->srv_index_size : 64;
        struct slb_srv_rt **t = calloc(size, sizeof(*t));
        if (t) {
            for (struct slb_srv_rt *x = reg->servers; x; x = x->next) {
                size_t h = slb_hash64(x->key, strlen(x->key), 0) & (size - 1);
                x->index_next = t[h];
                t[h] = x;
            }
            free(reg->srv_index);
            reg->srv_index = t;
            reg->srv_index_size = size;
        }
    }
    reg->nsrv++;
    if (!reg->srv_index)
        return;
    size_t b = slb_hash64(key, strlen(key), 0) & (reg->srv_index_size - 1);
    r->index_next = reg->srv_index[b];
    reg->srv_index[b] = r;
}

static void srv_index_del(struct slb_registry *reg, struct slb_srv_rt *r)
{
    reg->nsrv--;
    if (!reg->srv_index)
        return;
    for (struct slb_srv_rt **pp = &reg->srv_index[srv_bucket(reg, r->key)]; *pp;
         pp = &(*pp)->index_next) {
        if (*pp == r) {
            *pp = r->index_next;
            return;
        }
    }
}

static struct slb_srv_rt *srv_get(struct slb_registry *reg, const char *group,
                                  const struct slb_server_cfg *s)
{
    char key[sizeof(((struct slb_srv_rt *)0)->key)];
    if (strchr(s->address, ':'))
        snprintf(key, sizeof(key), "%s/[%s]:%u", group, s->address, s->port);
    else
        snprintf(key, sizeof(key), "%s/%s:%u", group, s->address, s->port);
    size_t b = srv_bucket(reg, key);
    for (struct slb_srv_rt *r = reg->srv_index ? reg->srv_index[b] : reg->servers; r;
         r = reg->srv_index ? r->index_next : r->next) {
        if (strcmp(r->key, key) == 0) {
            r->refs++;
            return r;
        }
    }
    struct slb_srv_rt *r =
        calloc(1, sizeof(*r) + (size_t)reg->nworkers * sizeof(struct slb_wcount));
    if (!r)
        return NULL;
    srv_index_add(reg, r, key);
    snprintf(r->key, sizeof(r->key), "%s", key);
    const char *addr = strchr(r->key, '/') + 1;
    snprintf(r->sticky_id, sizeof(r->sticky_id), "%016llx",
             (unsigned long long)slb_hash64(addr, strlen(addr), 0x737469u));
    r->refs = 1;
    r->nworkers = reg->nworkers;
    /* A new server takes traffic at once (SPEC) and leaves after failed checks. */
    atomic_store(&r->healthy, SLB_HEALTH_UP);
    r->next = reg->servers;
    reg->servers = r;
    return r;
}

static struct slb_lis_rt *lis_get(struct slb_registry *reg, const char *name)
{
    struct slb_lis_rt *found = kx_get(&reg->build_lis, name);
    for (struct slb_lis_rt *r = reg->build_lis.keys ? found : reg->lis; r; r = r->next) {
        if (strcmp(r->name, name) == 0) {
            r->refs++;
            return r;
        }
        if (reg->build_lis.keys)
            break;
    }
    struct slb_lis_rt *r =
        calloc(1, sizeof(*r) + 2 * (size_t)reg->nworkers * sizeof(struct slb_wcount));
    if (!r)
        return NULL;
    r->conn_rate = slb_ratelimit_new(reg->nworkers);
    r->req_rate = slb_ratelimit_new(reg->nworkers);
    r->bw_rate = slb_ratelimit_new(reg->nworkers);
    if (!r->conn_rate || !r->req_rate || !r->bw_rate) {
        slb_ratelimit_free(r->conn_rate);
        slb_ratelimit_free(r->req_rate);
        slb_ratelimit_free(r->bw_rate);
        free(r);
        return NULL;
    }
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->refs = 1;
    r->nworkers = reg->nworkers;
    r->next = reg->lis;
    reg->lis = r;
    kx_put(&reg->build_lis, r->name, r);
    return r;
}

/* Unlinking with a pointer-to-pointer walk keeps the three registries' code identical in
 * shape; counters of a listener or server that disappears are dropped with it. */
#define REG_UNREF(head, type, obj, extra)                                                          \
    do {                                                                                           \
        if (!(obj) || --(obj)->refs > 0)                                                           \
            break;                                                                                 \
        for (type **pp = &(head); *pp; pp = &(*pp)->next) {                                        \
            if (*pp == (obj)) {                                                                    \
                *pp = (obj)->next;                                                                 \
                break;                                                                             \
            }                                                                                      \
        }                                                                                          \
        extra;                                                                                     \
        free(obj);                                                                                 \
    } while (0)

static void srv_unref(struct slb_registry *reg, struct slb_srv_rt *r)
{
    REG_UNREF(reg->servers, struct slb_srv_rt, r,
              (slb_health_probe_cancel(r), srv_index_del(reg, r)));
}

static void lis_unref(struct slb_registry *reg, struct slb_lis_rt *r)
{
    REG_UNREF(reg->lis, struct slb_lis_rt, r,
              (slb_ratelimit_free(r->conn_rate), slb_ratelimit_free(r->req_rate),
               slb_ratelimit_free(r->bw_rate)));
}

static struct slb_rule_rt *rule_get(struct slb_registry *reg, const char *lis, const char *rule)
{
    char key[sizeof(((struct slb_rule_rt *)0)->key)];
    snprintf(key, sizeof(key), "%s/%s", lis, rule);
    for (struct slb_rule_rt *r = reg->rules; r; r = r->next) {
        if (strcmp(r->key, key) == 0) {
            r->refs++;
            return r;
        }
    }
    struct slb_rule_rt *r =
        calloc(1, sizeof(*r) + (size_t)reg->nworkers * sizeof(struct slb_wcount));
    if (!r)
        return NULL;
    if (!(r->req_rate = slb_ratelimit_new(reg->nworkers))) {
        free(r);
        return NULL;
    }
    memcpy(r->key, key, sizeof(key));
    r->refs = 1;
    r->nworkers = reg->nworkers;
    r->next = reg->rules;
    reg->rules = r;
    return r;
}

static void rule_unref(struct slb_registry *reg, struct slb_rule_rt *r)
{
    REG_UNREF(reg->rules, struct slb_rule_rt, r, slb_ratelimit_free(r->req_rate));
}

static void lsock_unref(struct slb_registry *reg, struct slb_lsock *ls)
{
    REG_UNREF(reg->lsocks, struct slb_lsock, ls, lsock_close(ls));
}

/* --- snapshots --- */

static void group_rt_deinit(struct slb_registry *reg, struct slb_group_rt *g)
{
    if (g->ops && g->sched_shared)
        g->ops->shared_free(g->sched_shared);
    for (size_t i = 0; i < g->nservers; i++)
        srv_unref(reg, g->srv ? g->srv[i] : NULL);
    free(g->srv);
    free(g->weights);
}

static void snapshot_free(struct slb_registry *reg, struct slb_snapshot *s)
{
    for (size_t i = 0; i < s->nlisteners; i++) {
        struct slb_listener_rt *l = &s->listeners[i];
        if (l->sock)
            lsock_unref(reg, l->sock);
        lis_unref(reg, l->stats);
        for (size_t r = 0; l->rule_stats && r < l->cfg->nrules; r++)
            rule_unref(reg, l->rule_stats[r]);
        free(l->rule_stats);
        free(l->sni);
        slb_rules_free(l->rules);
        slb_tls_listener_free(l->tls);
    }
    for (size_t i = 0; i < s->ngroups; i++)
        group_rt_deinit(reg, &s->groups[i]);
    free(s->listeners);
    free(s->groups);
    slb_config_free(s->cfg);
    free(s);
}

static int group_rt_build(struct slb_registry *reg, const struct slb_group_cfg *gc,
                          struct slb_group_rt *g, struct slb_err *err)
{
    g->cfg = gc;
    g->ops = slb_sched_get(gc->scheduler);
    g->nservers = gc->nservers;
    size_t n = gc->nservers ? gc->nservers : 1;
    g->srv = calloc(n, sizeof(*g->srv));
    g->weights = calloc(n, sizeof(*g->weights));
    uint64_t *ids = calloc(n, sizeof(*ids));
    if (!g->srv || !g->weights || !ids)
        goto oom;
    for (size_t i = 0; i < gc->nservers; i++) {
        g->srv[i] = srv_get(reg, gc->name, &gc->servers[i]);
        if (!g->srv[i])
            goto oom;
        /* Identity is the address, not the group, so sch/tch keys map the same way in two
         * groups holding the same servers. */
        const char *k = strchr(g->srv[i]->key, '/') + 1;
        ids[i] = slb_hash64(k, strlen(k), 0);
        g->weights[i] = gc->servers[i].weight;
    }
    if (g->ops->shared_new) {
        g->sched_shared = g->ops->shared_new(ids, g->weights, gc->nservers);
    }
    free(ids);
    return 0;
oom:
    free(ids);
    return slb_err_set(err, 500, "internal", gc->name, "out of memory building group %s", gc->name);
}

/* A rule's forward target: the snapshot's group of that name. */
static void *rule_group(void *arg, const char *name)
{
    struct slb_snapshot *s = arg;
    for (size_t g = 0; g < s->ngroups; g++)
        if (strcmp(s->groups[g].cfg->name, name) == 0)
            return &s->groups[g];
    return NULL;
}

/* Index the open sockets and the listener counters by key for this build (without memory
 * for the index, lookups walk the lists as before). */
static void build_index(struct slb_registry *reg, size_t nlisteners)
{
    size_t nsock = 0, nlis = 0;
    for (struct slb_lsock *ls = reg->lsocks; ls; ls = ls->next)
        nsock++;
    for (struct slb_lis_rt *r = reg->lis; r; r = r->next)
        nlis++;
    if (kx_init(&reg->build_socks, nsock + nlisteners) < 0 ||
        kx_init(&reg->build_lis, nlis + nlisteners) < 0) {
        kx_free(&reg->build_socks);
        kx_free(&reg->build_lis);
        return;
    }
    for (struct slb_lsock *ls = reg->lsocks; ls; ls = ls->next) {
        if (!ls->closed)
            kx_put(&reg->build_socks, ls->key, ls);
    }
    for (struct slb_lis_rt *r = reg->lis; r; r = r->next)
        kx_put(&reg->build_lis, r->name, r);
}

struct slb_snapshot *slb_snapshot_build(struct slb_registry *reg, struct slb_config *cfg,
                                        struct slb_err *err)
{
    struct slb_snapshot *s = calloc(1, sizeof(*s));
    if (!s) {
        slb_config_free(cfg);
        slb_err_set(err, 500, "internal", "", "out of memory");
        return NULL;
    }
    s->cfg = cfg;
    atomic_store(&s->refs, 1);
    s->groups = calloc(cfg->ngroups ? cfg->ngroups : 1, sizeof(*s->groups));
    s->listeners = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*s->listeners));
    if (!s->groups || !s->listeners) {
        slb_err_set(err, 500, "internal", "", "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cfg->ngroups; i++) {
        s->ngroups = i + 1;
        if (group_rt_build(reg, cfg->groups[i], &s->groups[i], err) < 0)
            goto fail;
    }
    const struct slb_snapshot *prev = reg->cur;
    bool indexed = false;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct slb_listener_cfg *lc = cfg->listeners[i];
        struct slb_listener_rt *l = &s->listeners[i];
        /* The same parsed listener in the same place as in the published snapshot. */
        const struct slb_listener_rt *pl =
            prev && i < prev->nlisteners && prev->listeners[i].cfg == lc ? &prev->listeners[i]
                                                                         : NULL;
        s->nlisteners = i + 1;
        l->cfg = lc;
        l->index = i;
        if (!pl && !indexed) { /* sockets and counters by key, made at the first new one */
            build_index(reg, cfg->nlisteners);
            indexed = true;
        }
        for (size_t g = 0; g < s->ngroups; g++) {
            if (strcmp(s->groups[g].cfg->name, lc->backend_group) == 0)
                l->group = &s->groups[g];
        }
        if (lc->nsni_routes) {
            l->sni = calloc(lc->nsni_routes, sizeof(*l->sni));
            if (!l->sni) {
                slb_err_set(err, 500, "internal", lc->name, "out of memory");
                goto fail;
            }
            l->nsni = lc->nsni_routes;
            for (size_t r = 0; r < lc->nsni_routes; r++) {
                l->sni[r].server_name = lc->sni_routes[r].server_name;
                for (size_t g = 0; g < s->ngroups; g++) {
                    if (strcmp(s->groups[g].cfg->name, lc->sni_routes[r].group) == 0)
                        l->sni[r].group = &s->groups[g];
                }
            }
        }
        if (lc->nrules && !(l->rules = slb_rules_build(lc->rules, lc->nrules, rule_group, s, err)))
            goto fail;
        if (lc->nrules && !(l->rule_stats = calloc(lc->nrules, sizeof(*l->rule_stats)))) {
            slb_err_set(err, 500, "internal", lc->name, "out of memory");
            goto fail;
        }
        for (size_t r = 0; r < lc->nrules; r++) {
            if (!(l->rule_stats[r] = rule_get(reg, lc->name, lc->rules[r].name))) {
                slb_err_set(err, 500, "internal", lc->name, "out of memory");
                goto fail;
            }
        }
        if (pl && pl->stats)
            (l->stats = pl->stats)->refs++;
        else
            l->stats = lis_get(reg, lc->name);
        if (!l->stats) {
            slb_err_set(err, 500, "internal", lc->name, "out of memory");
            goto fail;
        }
        if (lc->protocol == SLB_PROTO_HTTPS && slb_tls_listener_build(l, err) < 0)
            goto fail;
        /* A stopped listener keeps everything but its socket, which closes once every worker
         * adopted this snapshot (slb_registry_close_unused), as for a deleted listener. */
        if (!lc->stopped && pl && pl->sock && !pl->sock->closed)
            (l->sock = pl->sock)->refs++;
        else if (!lc->stopped && !(l->sock = lsock_get(reg, lc, err)))
            goto fail;
    }
    s->generation = reg->next_generation++;
    kx_free(&reg->build_socks);
    kx_free(&reg->build_lis);
    return s;
fail:
    kx_free(&reg->build_socks);
    kx_free(&reg->build_lis);
    snapshot_free(reg, s);
    return NULL;
}

void slb_snapshot_discard(struct slb_registry *reg, struct slb_snapshot *snap)
{
    if (!snap)
        return;
    /* A snapshot that never went live gives its generation back: the generation counts
     * changes that happened, so a refused write (or a dry run) must not move it. */
    if (snap->generation + 1 == reg->next_generation)
        reg->next_generation--;
    snapshot_free(reg, snap);
    /* Sockets bound only for the discarded snapshot were closed by the unref above. */
}

void slb_snapshot_retire(struct slb_registry *reg, struct slb_snapshot *snap)
{
    if (!snap)
        return;
    slb_snapshot_unref(snap);
    snap->next_retired = reg->retired;
    reg->retired = snap;
}

size_t slb_snapshot_sweep(struct slb_registry *reg)
{
    size_t waiting = 0;
    struct slb_snapshot **pp = &reg->retired;
    while (*pp) {
        struct slb_snapshot *s = *pp;
        if (atomic_load_explicit(&s->refs, memory_order_acquire) == 0) {
            *pp = s->next_retired;
            snapshot_free(reg, s);
        } else {
            waiting++;
            pp = &s->next_retired;
        }
    }
    return waiting;
}

void slb_registry_close_unused(struct slb_registry *reg, const struct slb_snapshot *cur)
{
    /* Marked in one pass over cur's listeners, not compared with each (1,000 listeners:
     * 1,000,000 comparisons per change). */
    static uint64_t mark;
    mark++;
    reg->cur = cur;
    for (size_t i = 0; cur && i < cur->nlisteners; i++)
        if (cur->listeners[i].sock)
            cur->listeners[i].sock->used_mark = mark;
    for (struct slb_lsock *ls = reg->lsocks; ls; ls = ls->next) {
        if (ls->closed)
            continue;
        if (ls->used_mark != mark) {
            slb_info("closing listening socket %s", ls->key);
            lsock_close(ls);
        }
    }
}

void slb_registry_close_inherited(struct slb_registry *reg)
{
    while (reg->inherited) {
        struct slb_inherited_sock *i = reg->inherited;
        reg->inherited = i->next;
        int n = 0;
        for (int k = 0; k < i->nfds; k++) {
            if (i->fds[k] >= 0) {
                close(i->fds[k]);
                n++;
            }
        }
        if (n)
            slb_info("closing %d listening sockets of %s handed over by the previous process: "
                     "%s",
                     n, i->key,
                     n == i->nfds ? "no listener binds it any more" : "fewer workers now");
        free(i);
    }
}

void slb_registry_deinit(struct slb_registry *reg)
{
    slb_registry_close_inherited(reg);
    slb_snapshot_sweep(reg);
    if (reg->retired)
        slb_warn("%zu configuration snapshots still referenced at exit", slb_snapshot_sweep(reg));
    free(reg->srv_index);
    reg->srv_index = NULL;
    reg->srv_index_size = 0;
}
