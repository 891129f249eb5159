/* SPDX-License-Identifier: Apache-2.0 */
/* etcd as a state backend: documents are keys PREFIX<key>, revisions their mod_revision,
 * secrets sealed under the cluster key, the state directory a write-through cache.
 *
 * Calls are synchronous: the backend interface is, and every caller (the operations layer,
 * the certificate store, the ticket ring) expects a stored document when the call returns.
 * Each call runs the backend's own small event loop (not the control loop: nothing else runs
 * meanwhile, so no admin request or watch event re-enters the caller) until etcd answered or
 * the call's deadline passed. The control thread is paused for at most that deadline, as it
 * already is while workers adopt a snapshot; workers serve meanwhile. The exception is a call
 * from a coroutine (an admin write): it goes through the control loop's client and the
 * coroutine yields until the answer, so only the write waits (slb_backend_etcd_set_async). */
#include "cluster/backend.h"

#include "cluster/etcd.h"
#include "cluster/seal.h"
#include "core/log.h"
#include "event/coro.h"
#include "net/httpc.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ETCD_BACKEND_TIMEOUT_MS 3000u
#define ETCD_BACKEND_TRY_MS 1000u
#define ETCD_MAX_KEYS 4096

struct sync_res;

struct etcd_backend {
    struct slb_backend base;
    struct slb_backend *cache;
    struct slb_loop loop;
    bool loop_ok;
    struct slb_httpc http;
    bool http_ok;
    struct slb_etcd *etcd;
    struct slb_seal seal;
    char prefix[128];
    int64_t revision;
    bool online;
    bool offline;    /* told by the watch: writes fail at once */
    int64_t own[64]; /* revisions of our recent writes, a ring */
    unsigned nown;
    int64_t last_write; /* the revision of the newest of them */
    /* Calls made from a coroutine (an admin write, admin/server.c) go through this client on
     * the control loop and pause the coroutine, not the loop, until they are answered. */
    struct slb_loop *async_loop;
    struct slb_etcd *async;   /* owned by the cluster module; NULL: every call on our loop */
    struct slb_timer wake;    /* resumes the waiting coroutine, outside curl's callbacks */
    struct sync_res *waiting; /* the call a coroutine waits for */
};

/* One synchronous call's outcome, copied out of the callback. */
struct sync_res {
    struct etcd_backend *b;
    struct slb_coro *co;        /* the coroutine waiting for it, NULL: on the private loop */
    struct slb_etcd_call *call; /* while in flight */
    bool done;
    int rc;
    bool succeeded;
    int64_t revision, deleted;
    struct slb_etcd_kv *kvs; /* copies (key, value, mod_revision) */
    size_t nkvs;
    char error[256];
};

static void sync_res_clear(struct sync_res *r)
{
    for (size_t i = 0; i < r->nkvs; i++) {
        free(r->kvs[i].key);
        if (r->kvs[i].value) {
            OPENSSL_cleanse(r->kvs[i].value, r->kvs[i].value_len);
            free(r->kvs[i].value);
        }
    }
    free(r->kvs);
    memset(r, 0, sizeof(*r));
}

static void sync_cb(struct slb_etcd *e, const struct slb_etcd_resp *resp, void *data)
{
    struct sync_res *r = data;
    r->done = true;
    r->call = NULL;
    if (r->co)
        slb_timer_start(r->b->async_loop, &r->b->wake, 0);
    r->rc = resp->rc;
    r->succeeded = resp->succeeded;
    r->revision = resp->revision;
    r->deleted = resp->deleted;
    if (resp->rc < 0)
        snprintf(r->error, sizeof(r->error), "%s", resp->error ? resp->error : "");
    if (resp->rc == 0 && resp->nkvs > 0) {
        r->kvs = calloc(resp->nkvs, sizeof(*r->kvs));
        if (!r->kvs) {
            r->rc = -ENOMEM;
            return;
        }
        for (size_t i = 0; i < resp->nkvs; i++) {
            const struct slb_etcd_kv *kv = &resp->kvs[i];
            struct slb_etcd_kv *c = &r->kvs[r->nkvs];
            c->key = strdup(kv->key);
            c->value = malloc(kv->value_len + 1);
            if (!c->key || !c->value) {
                free(c->key);
                free(c->value);
                r->rc = -ENOMEM;
                return;
            }
            memcpy(c->value, kv->value, kv->value_len);
            c->value[kv->value_len] = '\0';
            c->value_len = kv->value_len;
            c->mod_revision = kv->mod_revision;
            c->create_revision = kv->create_revision;
            r->nkvs++;
        }
    }
}

/* The client a call goes through: the control loop's for a coroutine, which then waits in
 * sync_wait by yielding; our private one otherwise. */
static struct slb_etcd *client(struct etcd_backend *b, struct sync_res *r)
{
    r->b = b;
    r->co = b->async && slb_coro_current() ? slb_coro_current() : NULL;
    return r->co ? b->async : b->etcd;
}

static void wake_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct etcd_backend *b = t->data;
    struct sync_res *r = b->waiting;
    if (r && r->done)
        slb_coro_resume(r->co);
}

/* Wait until r is done: a coroutine yields to the control loop (the client's own deadline
 * guarantees an answer), anything else runs the private loop. */
static int sync_wait(struct etcd_backend *b, int start_rc, struct sync_res *r)
{
    if (start_rc < 0)
        return start_rc;
    if (r->co) {
        b->waiting = r;
        while (!r->done)
            slb_coro_yield();
        b->waiting = NULL;
        r->co = NULL;
    }
    slb_loop_update_time(&b->loop);
    uint64_t end = slb_loop_now(&b->loop) + ETCD_BACKEND_TIMEOUT_MS + 2000u;
    while (!r->done && slb_loop_now(&b->loop) < end)
        slb_loop_once(&b->loop, 50);
    if (!r->done) {
        /* Cannot happen while the client keeps its deadline; do not leave a callback behind. */
        slb_etcd_free(b->etcd);
        b->etcd = NULL;
        return SLB_BACKEND_EUNAVAILABLE;
    }
    if (r->rc == SLB_ETCD_EUNAVAILABLE || r->rc == -ETIMEDOUT || r->rc == -ECONNREFUSED) {
        if (b->online)
            slb_warn("etcd is unreachable: %s", r->error);
        b->online = false;
        return SLB_BACKEND_EUNAVAILABLE;
    }
    if (r->rc == 0) {
        if (!b->online)
            slb_info("etcd answers again");
        b->online = true;
        if (r->revision > b->revision)
            b->revision = r->revision;
    }
    return r->rc;
}

static bool secret_key(const char *key)
{
    return strcmp(key, SLB_DOC_TICKETS) == 0 ||
           strncmp(key, SLB_DOC_CERTS, strlen(SLB_DOC_CERTS)) == 0;
}

void slb_backend_etcd_key(struct slb_backend *base, const char *key, char *out, size_t size)
{
    struct etcd_backend *b = (struct etcd_backend *)base;
    snprintf(out, size, "%s%s", b->prefix, key);
}

int slb_backend_etcd_decode(struct slb_backend *base, const char *name, const char *value,
                            size_t len, char **out, size_t *out_len)
{
    struct etcd_backend *b = (struct etcd_backend *)base;
    const char *key = name + strlen(b->prefix);
    *out = malloc(len + 1);
    if (!*out)
        return -ENOMEM;
    if (!secret_key(key)) {
        memcpy(*out, value, len);
        (*out)[len] = '\0';
        *out_len = len;
        return 0;
    }
    int rc = slb_seal_open(&b->seal, name, value, len, (unsigned char *)*out, out_len);
    if (rc < 0) {
        free(*out);
        *out = NULL;
        return rc;
    }
    (*out)[*out_len] = '\0';
    return 0;
}

/* The value stored for document key: data itself, or sealed. *val owned. */
static int encode(struct etcd_backend *b, const char *name, const char *key, const void *data,
                  size_t len, unsigned char **val, size_t *vlen)
{
    if (!secret_key(key)) {
        *val = malloc(len ? len : 1);
        if (!*val)
            return -ENOMEM;
        memcpy(*val, data, len);
        *vlen = len;
        return 0;
    }
    *val = malloc(slb_seal_size(len));
    if (!*val)
        return -ENOMEM;
    return slb_seal_seal(&b->seal, name, data, len, *val, vlen);
}

/* Documents the state directory holds (not the nodes' registrations). */
static bool cached_key(const char *key)
{
    return strcmp(key, SLB_DOC_CONFIG) == 0 || secret_key(key);
}

static void cache_put(struct etcd_backend *b, const char *key, const void *data, size_t len)
{
    if (!b->cache || !cached_key(key))
        return;
    int rc = slb_backend_put(b->cache, key, data, len, SLB_REV_ANY, NULL);
    if (rc < 0)
        slb_warn("cannot update the local cache of %s: %s", key, slb_strerror(rc));
}

static void cache_del(struct etcd_backend *b, const char *key)
{
    if (b->cache && cached_key(key))
        slb_backend_del(b->cache, key, SLB_REV_ANY);
}

static int etcd_get(struct slb_backend *base, const char *key, size_t max, struct slb_doc *out,
                    struct slb_err *err)
{
    struct etcd_backend *b = (struct etcd_backend *)base;
    char name[256];
    memset(out, 0, sizeof(*out));
    slb_backend_etcd_key(base, key, name, sizeof(name));
    struct sync_res r = {0};
    int rc =
        b->etcd && !b->offline
            ? sync_wait(b, slb_etcd_range(client(b, &r), name, false, 0, sync_cb, &r, &r.call), &r)
            : SLB_BACKEND_EUNAVAILABLE;
    if (rc == SLB_BACKEND_EUNAVAILABLE && b->cache) {
        sync_res_clear(&r);
        /* Static stability: the last state this node applied. */
        return slb_backend_get(b->cache, key, max, out, err);
    }
    if (rc < 0)
        goto done;
    if (r.nkvs == 0) {
        rc = -ENOENT;
        goto done;
    }
    if (r.kvs[0].value_len > max + SLB_SEAL_OVERHEAD) {
        rc = -EFBIG;
        goto done;
    }
    rc = slb_backend_etcd_decode(base, name, r.kvs[0].value, r.kvs[0].value_len, &out->data,
                                 &out->len);
    if (rc < 0) {
        slb_err_set(err, 500, "cluster_key", name,
                    "%s cannot be opened with the cluster key (another cluster's key?)", name);
        rc = SLB_EINVAL;
        goto done;
    }
    snprintf(out->key, sizeof(out->key), "%s", key);
    out->rev = (uint64_t)r.kvs[0].mod_revision;
    cache_put(b, key, out->data, out->len);
done:
    sync_res_clear(&r);
    return rc;
}

static int etcd_list(struct slb_backend *base, const char *prefix, slb_backend_list_fn fn,
                     void *arg)
{
    struct etcd_backend *b = (struct etcd_backend *)base;
    char name[256];
    slb_backend_etcd_key(base, prefix, name, sizeof(name));
    struct sync_res r = {0};
    int rc =
        b->etcd && !b->offline
            ? sync_wait(b, slb_etcd_range(client(b, &r), name, true, 0, sync_cb, &r, &r.call), &r)
            : SLB_BACKEND_EUNAVAILABLE;
    if (rc == SLB_BACKEND_EUNAVAILABLE && b->cache) {
        sync_res_clear(&r);
        return slb_backend_list(b->cache, prefix, fn, arg);
    }
    size_t pl = strlen(b->prefix);
    for (size_t i = 0; rc == 0 && i < r.nkvs; i++) {
        const char *k = r.kvs[i].key + pl;
        /* A certificate document's key has no further '/' (certs/<id>). */
        if (strchr(k + strlen(prefix), '/'))
            continue;
        rc = fn(k, arg);
    }
    sync_res_clear(&r);
    return rc;
}

static int etcd_put(struct slb_backend *base, const char *key, const void *data, size_t len,
                    uint64_t expect, uint64_t *rev)
{
    struct etcd_backend *b = (struct etcd_backend *)base;
    if (b->offline || !b->etcd)
        return SLB_BACKEND_EUNAVAILABLE;
    char name[256];
    slb_backend_etcd_key(base, key, name, sizeof(name));
    unsigned char *val = NULL;
    size_t vlen = 0;
    int rc = encode(b, name, key, data, len, &val, &vlen);
    if (rc < 0) {
        free(val);
        return rc;
    }
    struct slb_etcd_cmp cmp = {.key = name, .result = SLB_ETCD_EQUAL};
    if (expect == SLB_REV_ABSENT) {
        cmp.target = SLB_ETCD_CREATE;
        cmp.rev = 0;
    } else {
        cmp.target = SLB_ETCD_MOD;
        cmp.rev = (int64_t)expect;
    }
    struct slb_etcd_op op = {.kind = SLB_ETCD_OP_PUT, .key = name, .value = val, .value_len = vlen};
    struct slb_etcd_txn txn = {
        .cmp = &cmp, .ncmp = expect == SLB_REV_ANY ? 0 : 1, .success = &op, .nsuccess = 1};
    struct sync_res r = {0};
    rc = sync_wait(b, slb_etcd_txn(client(b, &r), &txn, sync_cb, &r, &r.call), &r);
    free(val);
    if (rc == 0 && !r.succeeded)
        rc = SLB_ECONFLICT;
    if (rc == 0) {
        /* The txn's header revision is the revision of its only write. */
        if (rev)
            *rev = (uint64_t)r.revision;
        b->own[b->nown++ % 64] = r.revision;
        b->last_write = r.revision;
        cache_put(b, key, data, len);
    }
    sync_res_clear(&r);
    return rc;
}

static int etcd_del(struct slb_backend *base, const char *key, uint64_t expect)
{
    struct etcd_backend *b = (struct etcd_backend *)base;
    if (b->offline || !b->etcd)
        return SLB_BACKEND_EUNAVAILABLE;
    char name[256];
    slb_backend_etcd_key(base, key, name, sizeof(name));
    struct slb_etcd_cmp cmp = {
        .key = name, .target = SLB_ETCD_MOD, .result = SLB_ETCD_EQUAL, .rev = (int64_t)expect};
    struct slb_etcd_op op = {.kind = SLB_ETCD_OP_DELETE, .key = name};
    struct slb_etcd_txn txn = {
        .cmp = &cmp, .ncmp = expect == SLB_REV_ANY ? 0 : 1, .success = &op, .nsuccess = 1};
    struct sync_res r = {0};
    int rc = sync_wait(b, slb_etcd_txn(client(b, &r), &txn, sync_cb, &r, &r.call), &r);
    if (rc == 0 && !r.succeeded)
        rc = SLB_ECONFLICT;
    else if (rc == 0 && r.deleted == 0)
        rc = -ENOENT;
    if (rc == 0) {
        b->own[b->nown++ % 64] = r.revision;
        b->last_write = r.revision;
    }
    if (rc == 0 || rc == -ENOENT)
        cache_del(b, key);
    sync_res_clear(&r);
    return rc;
}

static int etcd_watch(struct slb_backend *b, const char *prefix, slb_backend_watch_fn fn, void *arg)
{
    /* The cluster node (cluster/node.c) watches on the control loop. */
    return 0;
}

static void etcd_where(struct slb_backend *base, const char *key, char *out, size_t size)
{
    struct etcd_backend *b = (struct etcd_backend *)base;
    snprintf(out, size, "etcd:%s%s", b->prefix, key);
}

static void etcd_free(struct slb_backend *base)
{
    struct etcd_backend *b = (struct etcd_backend *)base;
    slb_etcd_free(b->etcd);
    if (b->http_ok)
        slb_httpc_deinit(&b->http);
    if (b->loop_ok)
        slb_loop_deinit(&b->loop);
    slb_backend_free(b->cache);
    slb_seal_deinit(&b->seal);
    free(b);
}

static const struct slb_backend_ops etcd_ops = {
    .name = "etcd",
    .shared = true,
    .get = etcd_get,
    .list = etcd_list,
    .put = etcd_put,
    .del = etcd_del,
    .watch = etcd_watch,
    .where = etcd_where,
    .free = etcd_free,
};

int64_t slb_backend_etcd_revision(struct slb_backend *base)
{
    return ((struct etcd_backend *)base)->revision;
}

bool slb_backend_etcd_online(struct slb_backend *base)
{
    return ((struct etcd_backend *)base)->online;
}

void slb_backend_etcd_set_offline(struct slb_backend *base, bool offline)
{
    ((struct etcd_backend *)base)->offline = offline;
}

int slb_backend_etcd_revoke(struct slb_backend *base, int64_t lease)
{
    struct etcd_backend *b = (struct etcd_backend *)base;
    if (b->offline || !b->etcd)
        return SLB_BACKEND_EUNAVAILABLE;
    struct sync_res r = {0};
    int rc = sync_wait(b, slb_etcd_lease_revoke(b->etcd, lease, sync_cb, &r, NULL), &r);
    sync_res_clear(&r);
    return rc;
}

void slb_backend_etcd_set_async(struct slb_backend *base, struct slb_loop *loop,
                                struct slb_etcd *etcd)
{
    struct etcd_backend *b = (struct etcd_backend *)base;
    if (!etcd) {
        slb_backend_etcd_abort(base);
        return;
    }
    b->async_loop = loop;
    b->async = etcd;
    slb_timer_init(&b->wake, wake_cb, b);
}

bool slb_backend_etcd_waiting(struct slb_backend *base)
{
    return base && base->ops == &etcd_ops && ((struct etcd_backend *)base)->waiting;
}

void slb_backend_etcd_abort(struct slb_backend *base)
{
    struct etcd_backend *b = (struct etcd_backend *)base;
    if (!b->async)
        return;
    b->async = NULL; /* from now on every call runs on our own loop */
    slb_timer_stop(b->async_loop, &b->wake);
    struct sync_res *r = b->waiting;
    if (!r)
        return;
    if (!r->done) {
        slb_etcd_call_cancel(r->call);
        r->call = NULL;
        r->done = true;
        r->rc = SLB_ETCD_EUNAVAILABLE;
        snprintf(r->error, sizeof(r->error), "slbd is stopping");
    }
    slb_coro_resume(r->co);
}

int64_t slb_backend_etcd_last_write(struct slb_backend *base)
{
    return ((struct etcd_backend *)base)->last_write;
}

bool slb_backend_etcd_own(struct slb_backend *base, int64_t rev)
{
    struct etcd_backend *b = (struct etcd_backend *)base;
    for (unsigned i = 0; i < 64 && i < b->nown; i++)
        if (b->own[i] == rev)
            return true;
    return false;
}

void slb_backend_etcd_cache(struct slb_backend *base, const char *key, const char *data, size_t len)
{
    struct etcd_backend *b = (struct etcd_backend *)base;
    if (data)
        cache_put(b, key, data, len);
    else
        cache_del(b, key);
}

/* --- seeding --- */

struct seed_ctx {
    struct etcd_backend *b;
    struct slb_etcd_op *ops;
    unsigned char **vals;
    char **names;
    size_t n, cap;
    int rc;
};

static int seed_add(struct seed_ctx *s, const char *key)
{
    struct slb_doc d;
    struct slb_err err = {0};
    int rc = slb_backend_get(s->b->cache, key, 16u << 20, &d, &err);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        struct slb_etcd_op *o = realloc(s->ops, cap * sizeof(*o));
        if (o)
            s->ops = o;
        unsigned char **v = realloc(s->vals, cap * sizeof(*v));
        if (v)
            s->vals = v;
        char **nm = realloc(s->names, cap * sizeof(*nm));
        if (nm)
            s->names = nm;
        if (!o || !v || !nm) {
            slb_doc_clear(&d);
            return -ENOMEM;
        }
        s->cap = cap;
    }
    char name[256];
    slb_backend_etcd_key(&s->b->base, key, name, sizeof(name));
    size_t vlen = 0;
    s->vals[s->n] = NULL;
    s->names[s->n] = strdup(name);
    rc = s->names[s->n] ? encode(s->b, name, key, d.data, d.len, &s->vals[s->n], &vlen) : -ENOMEM;
    slb_doc_clear(&d);
    if (rc < 0) {
        free(s->vals[s->n]);
        free(s->names[s->n]);
        return rc;
    }
    s->ops[s->n] = (struct slb_etcd_op){
        .kind = SLB_ETCD_OP_PUT, .key = s->names[s->n], .value = s->vals[s->n], .value_len = vlen};
    s->n++;
    return 0;
}

static int seed_cert(const char *key, void *arg)
{
    return seed_add(arg, key);
}

int slb_backend_etcd_seed(struct slb_backend *base, bool *seeded)
{
    struct etcd_backend *b = (struct etcd_backend *)base;
    *seeded = false;
    if (!b->etcd)
        return SLB_BACKEND_EUNAVAILABLE;
    char cfg[256];
    slb_backend_etcd_key(base, SLB_DOC_CONFIG, cfg, sizeof(cfg));
    struct sync_res r = {0};
    int rc = sync_wait(b, slb_etcd_range(b->etcd, cfg, false, 0, sync_cb, &r, NULL), &r);
    bool present = rc == 0 && r.nkvs > 0;
    sync_res_clear(&r);
    if (rc < 0 || present || !b->cache)
        return rc;
    struct seed_ctx s = {.b = b};
    rc = seed_add(&s, SLB_DOC_CONFIG);
    if (rc == 0 && s.n == 0) {
        /* An empty state directory: seed an empty configuration, so that the prefix is
         * claimed and every node starts from the same document. */
        static const char empty[] = "{\n  \"groups\": [],\n  \"listeners\": [],\n  \"settings\": "
                                    "{}\n}\n";
        cache_put(b, SLB_DOC_CONFIG, empty, sizeof(empty) - 1);
        rc = seed_add(&s, SLB_DOC_CONFIG);
    }
    if (rc == 0)
        rc = slb_backend_list(b->cache, SLB_DOC_CERTS, seed_cert, &s);
    if (rc == 0)
        rc = seed_add(&s, SLB_DOC_TICKETS);
    if (rc == 0) {
        struct slb_etcd_cmp cmp = {
            .key = cfg, .target = SLB_ETCD_CREATE, .result = SLB_ETCD_EQUAL, .rev = 0};
        struct slb_etcd_txn txn = {.cmp = &cmp, .ncmp = 1, .success = s.ops, .nsuccess = s.n};
        rc = sync_wait(b, slb_etcd_txn(client(b, &r), &txn, sync_cb, &r, &r.call), &r);
        if (rc == 0 && r.succeeded) {
            *seeded = true;
            slb_info("seeded etcd %s with %zu document(s) of the state directory", b->prefix, s.n);
        }
        sync_res_clear(&r);
    }
    for (size_t i = 0; i < s.n; i++) {
        free(s.vals[i]);
        free(s.names[i]);
    }
    free(s.ops);
    free(s.vals);
    free(s.names);
    return rc;
}

struct slb_backend *slb_backend_etcd_new(const struct slb_etcd_opts *opts, const char *prefix,
                                         const unsigned char key[32], struct slb_backend *cache,
                                         struct slb_err *err)
{
    struct etcd_backend *b = calloc(1, sizeof(*b));
    if (!b) {
        slb_backend_free(cache);
        slb_err_set(err, 500, "internal", "", "out of memory");
        return NULL;
    }
    b->base.ops = &etcd_ops;
    b->cache = cache;
    slb_seal_init(&b->seal, key);
    if (strlen(prefix) >= sizeof(b->prefix) - SLB_DOC_KEY_MAX) {
        slb_err_set(err, 400, "invalid_value", "--cluster-prefix", "the prefix is too long");
        goto fail;
    }
    snprintf(b->prefix, sizeof(b->prefix), "%s", prefix);
    if (slb_loop_init(&b->loop) < 0) {
        slb_err_set(err, 500, "internal", "", "cannot create an event loop: %s", strerror(errno));
        goto fail;
    }
    b->loop_ok = true;
    if (slb_httpc_init(&b->http, &b->loop) < 0) {
        slb_err_set(err, 500, "internal", "", "cannot start the outbound HTTP client");
        goto fail;
    }
    b->http_ok = true;
    struct slb_etcd_opts o = *opts;
    o.call_timeout_ms = ETCD_BACKEND_TIMEOUT_MS;
    o.try_timeout_ms = ETCD_BACKEND_TRY_MS;
    o.watch_idle_timeout_ms = 0;
    b->etcd = slb_etcd_new(&b->loop, &b->http, &o, err);
    if (!b->etcd)
        goto fail;
    b->online = true;
    return &b->base;
fail:
    etcd_free(&b->base);
    return NULL;
}
