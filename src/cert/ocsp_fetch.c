/* SPDX-License-Identifier: Apache-2.0 */
/* The OCSP fetch schedule (cert/ocsp_fetch.h): one entry per server certificate version,
 * driven by the control thread's one-second tick and the HTTP client's callbacks. */
#include "cert/ocsp_fetch.h"

#include "cert/ocsp.h"
#include "cert/store.h"
#include "core/fsio.h"
#include "core/log.h"
#include "core/time.h"
#include "event/loop.h"
#include "net/httpc.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FETCH_TIMEOUT_MS 10000
#define MAX_RESPONSE (64 * 1024)
#define BACKOFF_MIN_S 10
#define BACKOFF_MAX_S 600

/* One server certificate version and what the schedule knows about it. Owned by the fetcher;
 * req's callback points here, so an entry is freed only after its request is cancelled. */
struct ocsp_entry {
    struct slb_ocsp_fetcher *f;
    struct slb_cert *cert; /* referenced: the version whose slot we fill */
    char *url;             /* responder of the leaf's AIA; NULL: uploads only */
    bool must_staple;
    struct slb_httpc_req *req; /* in flight, or NULL */
    uint64_t next_try_ms;      /* monotonic; 0: as soon as due */
    uint32_t backoff_s;
    bool expired; /* the last staple expired and nothing replaced it */
    char last_error[512];
    int64_t last_error_at; /* unix seconds */
    int64_t fetched_at;    /* last successful fetch or upload */
    uint64_t failures;
    bool seen; /* mark of the current tick */
};

struct slb_ocsp_fetcher {
    struct slb_certstore *store;
    struct slb_httpc *httpc;
    char dir[4200]; /* DIR/certs */
    struct ocsp_entry **v;
    size_t n, cap;
    /* Shortest refresh interval override for tests (SLBD_OCSP_REFRESH_S), 0: half validity. */
    uint32_t refresh_cap_s;
    /* The store's change count the entries follow (slb_certstore_changes); followed_ok false
     * until a walk of the whole store succeeded. */
    uint64_t followed;
    bool followed_ok;
};

static void entry_free(struct ocsp_entry *e)
{
    if (e->req)
        slb_httpc_cancel(e->req);
    slb_cert_unref(e->cert);
    free(e->url);
    free(e);
}

static void file_name(const struct slb_cert *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s.ocsp.der", c->id);
}

static void set_error(struct ocsp_entry *e, const char *msg)
{
    snprintf(e->last_error, sizeof(e->last_error), "%.*s", (int)sizeof(e->last_error) - 1, msg);
    e->last_error_at = (int64_t)time(NULL);
    e->failures++;
}

/* Publish a verified staple and store it so a restart staples at once. */
static void install(struct ocsp_entry *e, struct slb_ocsp_staple *s, const char *how)
{
    struct slb_ocsp_staple *old = atomic_load_explicit(&e->cert->staple, memory_order_acquire);
    bool changed = !old || old->status != s->status;
    slb_ocsp_publish(e->cert, s, slb_mono_ms());
    e->expired = false;
    e->last_error[0] = '\0';
    e->fetched_at = (int64_t)time(NULL);
    e->backoff_s = 0;
    e->next_try_ms = 0;
    char name[128];
    file_name(e->cert, name, sizeof(name));
    int rc = slb_fs_write_atomic(e->f->dir, name, s->der, s->len, 0600);
    if (rc < 0)
        slb_warn("certificate %s: cannot store its OCSP response in %s/%s: %s", e->cert->id,
                 e->f->dir, name, strerror(-rc));
    if (changed)
        slb_info("certificate %s: stapling a %s OCSP response (%s, valid until %lld)", e->cert->id,
                 slb_ocsp_status_name(s->status), how, (long long)s->next_update);
}

static void retry_later(struct ocsp_entry *e)
{
    uint32_t b = e->backoff_s ? e->backoff_s * 2 : BACKOFF_MIN_S;
    if (b > BACKOFF_MAX_S)
        b = BACKOFF_MAX_S;
    e->backoff_s = b;
    if (e->f->refresh_cap_s && b > e->f->refresh_cap_s)
        b = e->f->refresh_cap_s;
    e->next_try_ms = slb_mono_ms() + (uint64_t)b * 1000u;
}

static void fetch_done(struct slb_httpc_req *req, const struct slb_httpc_result *res, void *data)
{
    (void)req;
    struct ocsp_entry *e = data;
    e->req = NULL;
    char msg[512];
    if (res->rc < 0) {
        snprintf(msg, sizeof(msg), "responder %.200s: %.280s", e->url, res->error);
    } else if (res->status != 200) {
        snprintf(msg, sizeof(msg), "responder %.200s answered HTTP %ld", e->url, res->status);
    } else {
        struct slb_err err = {0};
        struct slb_ocsp_staple *s = slb_ocsp_verify(e->cert, (const unsigned char *)res->body,
                                                    res->body_len, (int64_t)time(NULL), &err);
        if (s) {
            install(e, s, "fetched");
            return;
        }
        snprintf(msg, sizeof(msg), "responder %.200s: %.280s", e->url, err.msg);
    }
    set_error(e, msg);
    retry_later(e);
    bool kept = atomic_load_explicit(&e->cert->staple, memory_order_acquire) != NULL;
    slb_warn_limited("certificate %s: OCSP fetch failed (%s); %s", e->cert->id, msg,
                     kept ? "the current response stays stapled until it expires"
                          : "no response to staple");
}

static void fetch_start(struct ocsp_entry *e)
{
    struct slb_err err = {0};
    unsigned char *der = NULL;
    size_t len = 0;
    if (slb_ocsp_request(e->cert, &der, &len, &err) < 0) {
        set_error(e, err.msg);
        retry_later(e);
        return;
    }
    static const char *const headers[] = {"Content-Type: application/ocsp-request",
                                          "Accept: application/ocsp-response", NULL};
    struct slb_httpc_opts o = {
        .method = "POST",
        .url = e->url,
        .headers = headers,
        .body = der,
        .body_len = len,
        .timeout_ms = FETCH_TIMEOUT_MS,
        .connect_timeout_ms = FETCH_TIMEOUT_MS / 2,
        .max_body = MAX_RESPONSE,
        .on_done = fetch_done,
        .data = e,
    };
    int rc = slb_httpc_start(e->f->httpc, &o, &e->req);
    OPENSSL_free(der);
    if (rc < 0) {
        e->req = NULL;
        set_error(e, "cannot start the request to the responder");
        retry_later(e);
    }
}

/* A response stored by an earlier run, if it still verifies for this version. */
static void load_stored(struct ocsp_entry *e)
{
    char name[128], path[4400];
    file_name(e->cert, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", e->f->dir, name);
    char *buf = NULL;
    size_t len = 0;
    if (slb_fs_read_all(path, MAX_RESPONSE, &buf, &len) < 0)
        return;
    struct slb_err err = {0};
    struct slb_ocsp_staple *s =
        slb_ocsp_verify(e->cert, (unsigned char *)buf, len, (int64_t)time(NULL), &err);
    free(buf);
    if (s) {
        slb_ocsp_publish(e->cert, s, slb_mono_ms());
        slb_info("certificate %s: stapling the stored %s OCSP response", e->cert->id,
                 slb_ocsp_status_name(s->status));
    }
}

static struct ocsp_entry *entry_new(struct slb_ocsp_fetcher *f, struct slb_cert *c)
{
    struct ocsp_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->f = f;
    slb_cert_ref(c);
    e->cert = c;
    e->url = slb_ocsp_url(c);
    e->must_staple = slb_ocsp_must_staple(c);
    if (!atomic_load_explicit(&c->staple, memory_order_acquire))
        load_stored(e);
    return e;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp((*(struct ocsp_entry *const *)a)->cert->id,
                  (*(struct ocsp_entry *const *)b)->cert->id);
}

/* Entry id among the first n of f->v, which follow_store keeps sorted by id: its walk each
 * second over thousands of certificates is then n log n, not n squared. */
static struct ocsp_entry *find(struct slb_ocsp_fetcher *f, size_t n, const char *id, size_t *idx)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->v[mid]->cert->id, id);
        if (c == 0) {
            if (idx)
                *idx = mid;
            return f->v[mid];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

struct slb_ocsp_fetcher *slb_ocsp_fetcher_new(struct slb_certstore *store, struct slb_httpc *httpc,
                                              const char *state_dir)
{
    struct slb_ocsp_fetcher *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->store = store;
    f->httpc = httpc;
    snprintf(f->dir, sizeof(f->dir), "%s/certs", state_dir);
    const char *env = getenv("SLBD_OCSP_REFRESH_S");
    if (env && atoi(env) > 0)
        f->refresh_cap_s = (uint32_t)atoi(env);
    slb_ocsp_fetcher_tick(f);
    return f;
}

void slb_ocsp_fetcher_free(struct slb_ocsp_fetcher *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++)
        entry_free(f->v[i]);
    free(f->v);
    free(f);
}

/* Bring the entries in line with the whole store; false when an entry could not be made. */
static bool follow_all(struct slb_ocsp_fetcher *f)
{
    bool complete = true;
    for (size_t i = 0; i < f->n; i++)
        f->v[i]->seen = false;
    size_t sorted = f->n; /* entries appended below are for ids not among these */
    bool changed = false;
    for (size_t i = 0; i < slb_certstore_count(f->store); i++) {
        struct slb_cert *c = slb_certstore_at(f->store, i);
        if (c->type != SLB_CERT_SERVER)
            continue;
        size_t k;
        struct ocsp_entry *e = find(f, sorted, c->id, &k);
        if (e && e->cert == c) {
            e->seen = true;
            continue;
        }
        struct ocsp_entry *ne = entry_new(f, c);
        if (!ne) {
            complete = false;
            continue;
        }
        ne->seen = true;
        if (e) { /* a new version: the old one's staple stays with it */
            entry_free(e);
            f->v[k] = ne;
            continue;
        }
        if (f->n == f->cap) {
            size_t cap = f->cap ? f->cap * 2 : 8;
            struct ocsp_entry **v = realloc(f->v, cap * sizeof(*v));
            if (!v) {
                entry_free(ne);
                continue;
            }
            f->v = v;
            f->cap = cap;
        }
        f->v[f->n++] = ne;
        changed = true;
    }
    for (size_t i = 0; i < f->n;) {
        struct ocsp_entry *e = f->v[i];
        if (e->seen) {
            i++;
            continue;
        }
        /* Deleted: so is its stored response. */
        char name[128];
        file_name(e->cert, name, sizeof(name));
        slb_fs_remove(f->dir, name);
        entry_free(e);
        f->v[i] = f->v[--f->n];
        changed = true;
    }
    if (changed && f->n > 1)
        qsort(f->v, f->n, sizeof(*f->v), entry_cmp);
    return complete;
}

static bool grow(struct slb_ocsp_fetcher *f)
{
    if (f->n < f->cap)
        return true;
    size_t cap = f->cap ? f->cap * 2 : 8;
    struct ocsp_entry **v = realloc(f->v, cap * sizeof(*v));
    if (!v)
        return false;
    f->v = v;
    f->cap = cap;
    return true;
}

/* Bring certificate id's entry in line with the store; false when it could not be made. */
static bool follow_one(struct slb_ocsp_fetcher *f, const char *id)
{
    struct slb_cert *c = slb_certstore_get(f->store, id);
    size_t k = 0;
    struct ocsp_entry *e = find(f, f->n, id, &k);
    if (c && c->type == SLB_CERT_SERVER) {
        if (e && e->cert == c)
            return true;
        struct ocsp_entry *ne = entry_new(f, c);
        if (!ne)
            return false;
        if (e) { /* a new version: the old one's staple stays with it */
            entry_free(e);
            f->v[k] = ne;
            return true;
        }
        if (!grow(f)) {
            entry_free(ne);
            return false;
        }
        f->v[f->n++] = ne;
        qsort(f->v, f->n, sizeof(*f->v), entry_cmp);
    } else if (e) { /* deleted: so is its stored response */
        char name[128];
        file_name(e->cert, name, sizeof(name));
        slb_fs_remove(f->dir, name);
        entry_free(e);
        memmove(&f->v[k], &f->v[k + 1], (f->n - k - 1) * sizeof(*f->v));
        f->n--;
    }
    return true;
}

/* Bring the entries in line with the store: only the certificates changed since the last
 * time when the store still names them (a replace among 10,000 certificates looks at one),
 * else a walk of the whole store. */
static void follow_store(struct slb_ocsp_fetcher *f)
{
    uint64_t now = slb_certstore_changes(f->store);
    bool ok = f->followed_ok;
    for (uint64_t n = f->followed + 1; ok && n <= now; n++) {
        const char *id = slb_certstore_change_id(f->store, n);
        ok = id && follow_one(f, id);
    }
    if (!ok)
        ok = follow_all(f);
    f->followed = now;
    f->followed_ok = ok;
}

static bool due(const struct slb_ocsp_fetcher *f, const struct slb_ocsp_staple *s, int64_t now)
{
    if (!s)
        return true;
    int64_t refresh = s->this_update + (s->next_update - s->this_update) / 2;
    if (f->refresh_cap_s && s->this_update + (int64_t)f->refresh_cap_s < refresh)
        refresh = s->this_update + (int64_t)f->refresh_cap_s;
    return now >= refresh;
}

static void entry_tick(struct slb_ocsp_fetcher *f, struct ocsp_entry *e, int64_t now,
                       uint64_t now_ms)
{
    struct slb_ocsp_staple *s = atomic_load_explicit(&e->cert->staple, memory_order_acquire);
    if (s && now >= s->next_update) {
        slb_warn("certificate %s: its OCSP response expired; no longer stapled", e->cert->id);
        slb_ocsp_publish(e->cert, NULL, now_ms);
        e->expired = true;
        s = NULL;
    }
    slb_ocsp_reclaim(e->cert, now_ms);
    if (e->url && !e->req && now_ms >= e->next_try_ms && due(f, s, now))
        fetch_start(e);
}

void slb_ocsp_fetcher_tick(struct slb_ocsp_fetcher *f)
{
    follow_store(f);
    int64_t now = (int64_t)time(NULL);
    uint64_t now_ms = slb_mono_ms();
    for (size_t i = 0; i < f->n; i++)
        entry_tick(f, f->v[i], now, now_ms);
}

void slb_ocsp_fetcher_tick_id(struct slb_ocsp_fetcher *f, const char *id)
{
    follow_store(f);
    struct ocsp_entry *e = id ? find(f, f->n, id, NULL) : NULL;
    if (e)
        entry_tick(f, e, (int64_t)time(NULL), slb_mono_ms());
}

int slb_ocsp_fetcher_upload(struct slb_ocsp_fetcher *f, const char *id, const unsigned char *der,
                            size_t len, struct slb_err *err)
{
    follow_store(f);
    struct ocsp_entry *e = find(f, f->n, id, NULL);
    if (!e) {
        if (slb_certstore_type_of(f->store, id) == SLB_CERT_CA)
            return slb_err_set(err, 400, "not_a_server_certificate", "",
                               "certificate \"%s\" is a CA certificate; only server "
                               "certificates staple OCSP responses",
                               id);
        return slb_err_set(err, 404, "not_found", "", "no certificate with id \"%s\"", id);
    }
    struct slb_ocsp_staple *s = slb_ocsp_verify(e->cert, der, len, (int64_t)time(NULL), err);
    if (!s) {
        e->failures++;
        return SLB_EINVAL;
    }
    install(e, s, "uploaded");
    return 0;
}

/* State of a fetch on a private loop (slb_ocsp_fetcher_fetch_sync). */
struct sync_fetch {
    struct ocsp_entry *e;
    bool done;
    bool ok;
    char msg[512];
};

static void sync_done(struct slb_httpc_req *req, const struct slb_httpc_result *res, void *data)
{
    (void)req;
    struct sync_fetch *sf = data;
    struct ocsp_entry *e = sf->e;
    sf->done = true;
    if (res->rc < 0) {
        snprintf(sf->msg, sizeof(sf->msg), "responder %.200s: %.280s", e->url, res->error);
    } else if (res->status != 200) {
        snprintf(sf->msg, sizeof(sf->msg), "responder %.200s answered HTTP %ld", e->url,
                 res->status);
    } else {
        struct slb_err err = {0};
        struct slb_ocsp_staple *s = slb_ocsp_verify(e->cert, (const unsigned char *)res->body,
                                                    res->body_len, (int64_t)time(NULL), &err);
        if (s) {
            install(e, s, "fetched");
            sf->ok = true;
            return;
        }
        snprintf(sf->msg, sizeof(sf->msg), "responder %.200s: %.280s", e->url, err.msg);
    }
}

int slb_ocsp_fetcher_fetch_sync(struct slb_ocsp_fetcher *f, const char *id, uint32_t timeout_ms,
                                struct slb_err *err)
{
    follow_store(f);
    struct ocsp_entry *e = find(f, f->n, id, NULL);
    if (!e)
        return slb_err_set(err, 404, "not_found", "", "no server certificate \"%s\"", id);
    if (atomic_load_explicit(&e->cert->staple, memory_order_acquire))
        return 0;
    if (!e->url)
        return slb_err_set(err, 400, "must_staple_without_ocsp", "certificate",
                           "the certificate requires OCSP stapling (TLS Feature "
                           "status_request) but names no OCSP responder");
    unsigned char *der = NULL;
    size_t len = 0;
    if (slb_ocsp_request(e->cert, &der, &len, err) < 0)
        return SLB_EINVAL;
    /* A loop and client of its own: running the control loop from inside one of its
     * callbacks would re-enter the admin server. The control thread waits at most
     * timeout_ms, once per must-staple upload. */
    struct slb_loop loop;
    struct slb_httpc hc;
    struct sync_fetch sf = {.e = e};
    int rc = slb_loop_init(&loop);
    if (rc < 0) {
        OPENSSL_free(der);
        return slb_err_set(err, 500, "internal", "", "cannot create a loop");
    }
    rc = slb_httpc_init(&hc, &loop);
    if (rc == 0) {
        static const char *const headers[] = {"Content-Type: application/ocsp-request", NULL};
        struct slb_httpc_opts o = {.method = "POST",
                                   .url = e->url,
                                   .headers = headers,
                                   .body = der,
                                   .body_len = len,
                                   .timeout_ms = timeout_ms,
                                   .connect_timeout_ms = timeout_ms,
                                   .max_body = MAX_RESPONSE,
                                   .on_done = sync_done,
                                   .data = &sf};
        rc = slb_httpc_start(&hc, &o, NULL);
        uint64_t end = slb_mono_ms() + timeout_ms + 1000;
        while (rc == 0 && !sf.done && slb_mono_ms() < end)
            slb_loop_once(&loop, 100);
        slb_httpc_deinit(&hc);
    }
    slb_loop_deinit(&loop);
    OPENSSL_free(der);
    if (sf.ok)
        return 0;
    if (!sf.done)
        snprintf(sf.msg, sizeof(sf.msg), "responder %.200s: no answer within %u ms", e->url,
                 timeout_ms);
    set_error(e, sf.msg);
    return slb_err_set(err, 400, "must_staple_without_ocsp", "certificate",
                       "the certificate requires OCSP stapling (TLS Feature status_request) "
                       "and no OCSP response could be had: %s",
                       sf.msg);
}

static void put_time(json_t *o, const char *key, int64_t t)
{
    if (!t) {
        json_object_set_new(o, key, json_null());
        return;
    }
    char buf[32];
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_object_set_new(o, key, json_string(buf));
}

static const char *state_of(const struct ocsp_entry *e, const struct slb_ocsp_staple *s)
{
    if (s)
        return slb_ocsp_status_name(s->status);
    if (e->req)
        return "fetching";
    if (e->expired)
        return "expired";
    if (e->last_error[0])
        return "error";
    return "none";
}

json_t *slb_ocsp_fetcher_json(struct slb_ocsp_fetcher *f, const char *id)
{
    struct ocsp_entry *e = f ? find(f, f->n, id, NULL) : NULL;
    if (!e)
        return json_null();
    const struct slb_ocsp_staple *s = atomic_load_explicit(&e->cert->staple, memory_order_acquire);
    json_t *o = json_object();
    json_object_set_new(o, "state", json_string(state_of(e, s)));
    put_time(o, "this_update", s ? s->this_update : 0);
    put_time(o, "next_update", s ? s->next_update : 0);
    json_object_set_new(o, "responder", e->url ? json_string(e->url) : json_null());
    json_object_set_new(o, "must_staple", json_boolean(e->must_staple));
    json_object_set_new(o, "fetching", json_boolean(e->req != NULL));
    put_time(o, "last_success", e->fetched_at);
    json_object_set_new(o, "last_error",
                        e->last_error[0] ? json_string(e->last_error) : json_null());
    put_time(o, "last_error_at", e->last_error[0] ? e->last_error_at : 0);
    json_object_set_new(o, "failures", json_integer((json_int_t)e->failures));
    return o;
}

static bool info_of(const struct ocsp_entry *e, struct slb_ocsp_info *out)
{
    const struct slb_ocsp_staple *s = atomic_load_explicit(&e->cert->staple, memory_order_acquire);
    out->state = state_of(e, s);
    out->next_update = s ? s->next_update : 0;
    out->failures = e->failures;
    return true;
}

bool slb_ocsp_fetcher_info(struct slb_ocsp_fetcher *f, const char *id, struct slb_ocsp_info *out)
{
    struct ocsp_entry *e = f ? find(f, f->n, id, NULL) : NULL;
    return e && info_of(e, out);
}

bool slb_ocsp_fetcher_info_next(struct slb_ocsp_fetcher *f, const char *id, size_t *cursor,
                                struct slb_ocsp_info *out)
{
    if (!f)
        return false;
    size_t k = *cursor;
    while (k < f->n && strcmp(f->v[k]->cert->id, id) < 0)
        k++;
    *cursor = k;
    if (k < f->n && strcmp(f->v[k]->cert->id, id) == 0)
        return info_of(f->v[k], out);
    /* Not next in order: a CA certificate, one the per-second walk has not seen yet, or ids
     * asked out of order. */
    return slb_ocsp_fetcher_info(f, id, out);
}
