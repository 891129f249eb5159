/* SPDX-License-Identifier: Apache-2.0 */
/* The etcd v3 client: JSON requests to the gateway, failover between endpoints, responses
 * parsed into struct slb_etcd_resp, and watch streams split into messages and delivered in
 * revision order with reconnects that resume where the last one stopped. */
#include "cluster/etcd.h"

#include "core/log.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ETCD_CALL_TIMEOUT_DEFAULT 5000u
#define ETCD_TRY_TIMEOUT_DEFAULT 2000u
#define ETCD_BACKOFF_MIN_MS 100u
#define ETCD_BACKOFF_MAX_MS 2000u
#define ETCD_WATCH_MAX_LINE (32u << 20)

enum call_kind {
    CALL_RANGE,
    CALL_PUT,
    CALL_DELETE,
    CALL_TXN,
    CALL_COMPACT,
    CALL_GRANT,
    CALL_KEEPALIVE,
    CALL_REVOKE
};

struct slb_etcd {
    struct slb_loop *loop;
    struct slb_httpc *http;
    char **endpoints;
    size_t nendpoints;
    size_t cur; /* where the next call starts: the last endpoint that answered */
    char *ca_file, *cert_file, *key_file;
    uint32_t call_timeout_ms, try_timeout_ms, watch_idle_timeout_ms;
    struct slb_etcd_call *calls;
    struct slb_etcd_watch *watches;
};

/* A call in flight: owned by the client from its start until its callback returns. */
struct slb_etcd_call {
    struct slb_etcd *e;
    struct slb_etcd_call *prev, *next;
    enum call_kind kind;
    const char *path;
    char *body;
    bool idempotent;
    bool in_cb, cancelled;
    slb_etcd_cb cb;
    void *data;
    uint64_t deadline_ms;
    size_t ep; /* endpoint of the current try */
    unsigned tries;
    struct slb_httpc_req *req;
    struct slb_timer backoff;
    char last_error[200];
};

/* A watch: owned by the client from slb_etcd_watch_start until slb_etcd_watch_stop. */
struct slb_etcd_watch {
    struct slb_etcd *e;
    struct slb_etcd_watch *prev, *next;
    char *key_b64, *end_b64; /* end_b64 NULL: a single key */
    int64_t next_rev;
    slb_etcd_watch_cb cb;
    void *data;
    struct slb_httpc_req *req;
    struct slb_timer retry;
    size_t ep;
    unsigned failures;
    bool ended, stopped, lost_reported;
    char *line; /* bytes of the stream not yet ending in a newline */
    size_t line_len, line_cap;
};

const char *slb_etcd_strerror(int code)
{
    switch (code) {
    case SLB_ETCD_ECOMPACTED:
        return "revision compacted";
    case SLB_ETCD_EUNAVAILABLE:
        return "no etcd endpoint available";
    default:
        return slb_strerror(code);
    }
}

/* --- encoding --- */

static char *b64_encode(const void *data, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (!out)
        return NULL;
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

/* Decode into a NUL-terminated buffer; NULL on malformed input or no memory. */
static char *b64_decode(const char *in, size_t *outlen)
{
    size_t n = strlen(in);
    if (n % 4 != 0)
        return NULL;
    char *out = malloc(n / 4 * 3 + 1);
    if (!out)
        return NULL;
    int len = n ? EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)in, (int)n) : 0;
    if (len < 0) {
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    if (n >= 1 && in[n - 1] == '=')
        len--;
    if (n >= 2 && in[n - 2] == '=')
        len--;
    out[len] = '\0';
    *outlen = (size_t)len;
    return out;
}

/* The end of the range of every key starting with key: key with its last byte below 0xff
 * incremented; "\0" (every key) when there is none. */
static char *prefix_end_b64(const char *key)
{
    size_t n = strlen(key);
    unsigned char *end = malloc(n + 1);
    if (!end)
        return NULL;
    memcpy(end, key, n);
    while (n > 0 && end[n - 1] == 0xff)
        n--;
    char *r;
    if (n == 0) {
        unsigned char zero = 0;
        r = b64_encode(&zero, 1);
    } else {
        end[n - 1]++;
        r = b64_encode(end, n);
    }
    free(end);
    return r;
}

static int set_b64(json_t *o, const char *name, const void *data, size_t len)
{
    char *s = b64_encode(data, len);
    if (!s)
        return -ENOMEM;
    int rc = json_object_set_new(o, name, json_string(s));
    free(s);
    return rc == 0 ? 0 : -ENOMEM;
}

/* key, and range_end when prefix. */
static int set_key(json_t *o, const char *key, bool prefix)
{
    if (set_b64(o, "key", key, strlen(key)) < 0)
        return -ENOMEM;
    if (!prefix)
        return 0;
    char *end = prefix_end_b64(key);
    if (!end || json_object_set_new(o, "range_end", json_string(end)) != 0) {
        free(end);
        return -ENOMEM;
    }
    free(end);
    return 0;
}

/* The gateway writes int64 fields as strings and leaves out zero values. */
static int64_t jint(const json_t *o, const char *name)
{
    const json_t *v = json_object_get(o, name);
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    if (json_is_string(v))
        return strtoll(json_string_value(v), NULL, 10);
    return 0;
}

static int parse_kv(const json_t *o, struct slb_etcd_kv *kv)
{
    memset(kv, 0, sizeof(*kv));
    const char *k = json_string_value(json_object_get(o, "key"));
    const char *v = json_string_value(json_object_get(o, "value"));
    size_t klen;
    kv->key = b64_decode(k ? k : "", &klen);
    kv->value = b64_decode(v ? v : "", &kv->value_len);
    if (!kv->key || !kv->value)
        return SLB_EPROTO;
    kv->create_revision = jint(o, "create_revision");
    kv->mod_revision = jint(o, "mod_revision");
    kv->version = jint(o, "version");
    kv->lease = jint(o, "lease");
    return 0;
}

static void kv_deinit(struct slb_etcd_kv *kv)
{
    free(kv->key);
    free(kv->value);
}

static void resp_deinit(struct slb_etcd_resp *r)
{
    for (size_t i = 0; i < r->nkvs; i++)
        kv_deinit(&r->kvs[i]);
    free(r->kvs);
    r->kvs = NULL;
    r->nkvs = 0;
}

static int append_kvs(struct slb_etcd_resp *r, const json_t *arr)
{
    size_t n = json_array_size(arr);
    if (n == 0)
        return 0;
    struct slb_etcd_kv *kvs = realloc(r->kvs, (r->nkvs + n) * sizeof(*kvs));
    if (!kvs)
        return -ENOMEM;
    r->kvs = kvs;
    for (size_t i = 0; i < n; i++) {
        int rc = parse_kv(json_array_get(arr, i), &r->kvs[r->nkvs]);
        r->nkvs++;
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* An error body of the gateway: {"error": "...", "message": "...", "code": <gRPC code>}, or
 * inside a stream {"error": {"grpc_code": N, "message": "..."}}. */
static int grpc_error(const json_t *o, long status, const char **msg)
{
    const json_t *err = json_object_get(o, "error");
    int code = (int)jint(o, "code");
    *msg = json_string_value(json_object_get(o, "message"));
    if (json_is_object(err)) {
        code = (int)jint(err, "grpc_code");
        *msg = json_string_value(json_object_get(err, "message"));
    }
    if (!*msg)
        *msg = "etcd answered with an error";
    switch (code) {
    case 3: /* INVALID_ARGUMENT */
        return SLB_EINVAL;
    case 4: /* DEADLINE_EXCEEDED: etcd's own proposal timed out, outcome unknown */
        return -ETIMEDOUT;
    case 5: /* NOT_FOUND */
        return SLB_ENOTFOUND;
    case 9: /* FAILED_PRECONDITION */
        return SLB_ECONFLICT;
    case 11: /* OUT_OF_RANGE: a compacted or future revision */
        return strstr(*msg, "compacted") ? SLB_ETCD_ECOMPACTED : SLB_EINVAL;
    case 14: /* UNAVAILABLE */
        return SLB_ETCD_EUNAVAILABLE;
    default:
        return status == 404 ? SLB_ENOTFOUND : SLB_EPROTO;
    }
}

/* --- calls --- */

static void call_link(struct slb_etcd *e, struct slb_etcd_call *c)
{
    c->prev = NULL;
    c->next = e->calls;
    if (e->calls)
        e->calls->prev = c;
    e->calls = c;
}

static void call_unlink(struct slb_etcd *e, struct slb_etcd_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        e->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void call_free(struct slb_etcd_call *c)
{
    free(c->body);
    free(c);
}

static void call_finish(struct slb_etcd_call *c, struct slb_etcd_resp *resp)
{
    struct slb_etcd *e = c->e;
    c->req = NULL;
    slb_timer_stop(e->loop, &c->backoff);
    call_unlink(e, c);
    if (resp->rc < 0 && !resp->error)
        resp->error = slb_etcd_strerror(resp->rc);
    c->in_cb = true;
    c->cb(e, resp, c->data);
    resp_deinit(resp);
    call_free(c);
}

static void fail_call(struct slb_etcd_call *c, int rc, const char *msg)
{
    struct slb_etcd_resp resp = {.rc = rc, .error = msg};
    call_finish(c, &resp);
}

static int parse_result(struct slb_etcd_call *c, const json_t *top, struct slb_etcd_resp *resp)
{
    const json_t *o = top;
    /* Streaming endpoints (lease keep-alive) wrap each message in "result". */
    if (json_is_object(json_object_get(top, "result")))
        o = json_object_get(top, "result");
    else if (json_object_get(top, "error")) {
        resp->rc = grpc_error(top, 200, &resp->error);
        return resp->rc;
    }
    resp->revision = jint(json_object_get(o, "header"), "revision");
    switch (c->kind) {
    case CALL_RANGE:
        resp->count = jint(o, "count");
        return append_kvs(resp, json_object_get(o, "kvs"));
    case CALL_DELETE:
        resp->deleted = jint(o, "deleted");
        return 0;
    case CALL_TXN: {
        resp->succeeded = json_is_true(json_object_get(o, "succeeded"));
        const json_t *arr = json_object_get(o, "responses");
        for (size_t i = 0; i < json_array_size(arr); i++) {
            const json_t *r = json_array_get(arr, i);
            const json_t *rr = json_object_get(r, "response_range");
            const json_t *rd = json_object_get(r, "response_delete_range");
            if (rr) {
                resp->count += jint(rr, "count");
                int rc = append_kvs(resp, json_object_get(rr, "kvs"));
                if (rc < 0)
                    return rc;
            }
            if (rd)
                resp->deleted += jint(rd, "deleted");
        }
        return 0;
    }
    case CALL_GRANT:
    case CALL_KEEPALIVE:
        resp->lease_id = jint(o, "ID");
        resp->ttl = jint(o, "TTL");
        if (c->kind == CALL_KEEPALIVE && resp->ttl <= 0) {
            resp->error = "lease not found (expired or revoked)";
            return SLB_ENOTFOUND;
        }
        return 0;
    default:
        return 0;
    }
}

static void start_try(struct slb_etcd_call *c);

static void fail_unavailable(struct slb_etcd_call *c)
{
    char msg[300];
    snprintf(msg, sizeof(msg), "no etcd endpoint answered within %u ms (last: %s)",
             c->e->call_timeout_ms, c->last_error);
    fail_call(c, SLB_ETCD_EUNAVAILABLE, msg);
}

static void backoff_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct slb_etcd_call *c = t->data;
    if (slb_loop_now(loop) >= c->deadline_ms)
        fail_unavailable(c);
    else
        start_try(c);
}

/* The try failed without an answer worth reporting: try the next endpoint, once every
 * endpoint was tried wait a little (doubling), and give up at the call's deadline. */
static void retry(struct slb_etcd_call *c)
{
    struct slb_etcd *e = c->e;
    c->tries++;
    c->ep = (c->ep + 1) % e->nendpoints;
    uint64_t delay = 0;
    if (c->tries % e->nendpoints == 0) {
        unsigned round = c->tries / (unsigned)e->nendpoints;
        delay = ETCD_BACKOFF_MIN_MS << (round > 5 ? 5 : round - 1);
        if (delay > ETCD_BACKOFF_MAX_MS)
            delay = ETCD_BACKOFF_MAX_MS;
    }
    uint64_t now = slb_loop_now(e->loop);
    if (now + delay >= c->deadline_ms) {
        fail_unavailable(c);
        return;
    }
    if (delay == 0)
        start_try(c);
    else
        slb_timer_start(e->loop, &c->backoff, delay);
}

static void try_done(struct slb_httpc_req *req, const struct slb_httpc_result *res, void *data)
{
    struct slb_etcd_call *c = data;
    struct slb_etcd *e = c->e;
    c->req = NULL;
    if (res->rc < 0 || res->status >= 500) {
        snprintf(c->last_error, sizeof(c->last_error), "%s: %s", e->endpoints[c->ep],
                 res->rc < 0 ? res->error : res->body);
        /* A request that may have been applied is retried only when doing it twice is
         * harmless. A 503 (no leader, member not ready) means it was not proposed; a 504 or
         * a timeout of ours leaves a txn's outcome unknown: the caller must read again. */
        bool may_retry = c->idempotent || !res->connected || res->status == 503;
        if (res->rc == SLB_ETLS || !may_retry) {
            int rc = res->rc;
            if (rc == 0) {
                json_error_t jerr;
                json_t *top = json_loadb(res->body, res->body_len, 0, &jerr);
                const char *msg;
                rc = top ? grpc_error(top, res->status, &msg) : SLB_EPROTO;
                json_decref(top);
            }
            /* No answer from this endpoint (a member that hangs, a black-holed route): the
             * next call starts at the next one, or every later write would wait on it too. */
            if (res->rc < 0 && e->cur == c->ep)
                e->cur = (c->ep + 1) % e->nendpoints;
            slb_warn("etcd: %s", c->last_error);
            fail_call(c, rc, c->last_error);
            return;
        }
        slb_debug("etcd: %s, trying the next endpoint", c->last_error);
        retry(c);
        return;
    }
    e->cur = c->ep;
    struct slb_etcd_resp resp = {0};
    json_error_t jerr;
    json_t *top = json_loadb(res->body, res->body_len, 0, &jerr);
    if (!json_is_object(top)) {
        resp.rc = SLB_EPROTO;
        resp.error = "etcd answered with something that is not a JSON object";
    } else if (res->status != 200) {
        resp.rc = grpc_error(top, res->status, &resp.error);
    } else {
        int rc = parse_result(c, top, &resp);
        if (rc < 0)
            resp.rc = rc;
    }
    call_finish(c, &resp); /* resp.error may point into top: free it after */
    json_decref(top);
}

static void start_try(struct slb_etcd_call *c)
{
    struct slb_etcd *e = c->e;
    uint64_t now = slb_loop_now(e->loop);
    uint64_t left = c->deadline_ms > now ? c->deadline_ms - now : 1;
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", e->endpoints[c->ep], c->path);
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    struct slb_httpc_opts o = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .body = c->body,
        .body_len = strlen(c->body),
        .timeout_ms = (uint32_t)(left < e->try_timeout_ms ? left : e->try_timeout_ms),
        .ca_file = e->ca_file,
        .cert_file = e->cert_file,
        .key_file = e->key_file,
        .on_done = try_done,
        .data = c,
    };
    int rc = slb_httpc_start(e->http, &o, &c->req);
    if (rc < 0) {
        /* Out of memory: try again a little later (never call back from inside the call
         * that started this one); the deadline still holds. */
        snprintf(c->last_error, sizeof(c->last_error), "%s", slb_strerror(rc));
        if (now + ETCD_BACKOFF_MIN_MS >= c->deadline_ms)
            c->deadline_ms = now + ETCD_BACKOFF_MIN_MS;
        slb_timer_start(e->loop, &c->backoff, ETCD_BACKOFF_MIN_MS);
    }
}

/* Takes body (a JSON object, whatever happens). */
static int call_start(struct slb_etcd *e, enum call_kind kind, const char *path, json_t *body,
                      bool idempotent, slb_etcd_cb cb, void *data, struct slb_etcd_call **callp)
{
    if (callp)
        *callp = NULL;
    if (!body)
        return -ENOMEM;
    struct slb_etcd_call *c = calloc(1, sizeof(*c));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!c || !text) {
        free(c);
        free(text);
        return -ENOMEM;
    }
    c->e = e;
    c->kind = kind;
    c->path = path;
    c->body = text;
    c->idempotent = idempotent;
    c->cb = cb;
    c->data = data;
    c->ep = e->cur;
    c->deadline_ms = slb_loop_now(e->loop) + e->call_timeout_ms;
    slb_timer_init(&c->backoff, backoff_cb, c);
    call_link(e, c);
    if (callp)
        *callp = c;
    start_try(c);
    return 0;
}

void slb_etcd_call_cancel(struct slb_etcd_call *c)
{
    if (!c || c->in_cb || c->cancelled)
        return;
    c->cancelled = true;
    slb_httpc_cancel(c->req);
    slb_timer_stop(c->e->loop, &c->backoff);
    call_unlink(c->e, c);
    call_free(c);
}

/* A request body with "key" (and "range_end"); NULL without memory. */
static json_t *key_body(const char *key, bool prefix)
{
    json_t *o = json_object();
    if (o && set_key(o, key, prefix) < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int slb_etcd_range(struct slb_etcd *e, const char *key, bool prefix, int64_t revision,
                   slb_etcd_cb cb, void *data, struct slb_etcd_call **callp)
{
    json_t *o = key_body(key, prefix);
    if (o && revision > 0)
        json_object_set_new(o, "revision", json_integer(revision));
    return call_start(e, CALL_RANGE, "/v3/kv/range", o, true, cb, data, callp);
}

static int put_fields(json_t *o, const char *key, const void *value, size_t len, int64_t lease)
{
    if (set_key(o, key, false) < 0 || set_b64(o, "value", value, len) < 0)
        return -ENOMEM;
    if (lease && json_object_set_new(o, "lease", json_integer(lease)) != 0)
        return -ENOMEM;
    return 0;
}

int slb_etcd_put(struct slb_etcd *e, const char *key, const void *value, size_t value_len,
                 int64_t lease, slb_etcd_cb cb, void *data, struct slb_etcd_call **callp)
{
    json_t *o = json_object();
    if (o && put_fields(o, key, value, value_len, lease) < 0) {
        json_decref(o);
        o = NULL;
    }
    /* Putting the same value twice leaves the same state (one more revision). */
    return call_start(e, CALL_PUT, "/v3/kv/put", o, true, cb, data, callp);
}

int slb_etcd_delete(struct slb_etcd *e, const char *key, bool prefix, slb_etcd_cb cb, void *data,
                    struct slb_etcd_call **callp)
{
    return call_start(e, CALL_DELETE, "/v3/kv/deleterange", key_body(key, prefix), true, cb, data,
                      callp);
}

static json_t *txn_cmp(const struct slb_etcd_cmp *c)
{
    static const char *const targets[] = {"MOD", "CREATE", "VERSION", "VALUE"};
    static const char *const results[] = {"EQUAL", "NOT_EQUAL", "GREATER", "LESS"};
    json_t *o = key_body(c->key, false);
    if (!o)
        return NULL;
    int rc = json_object_set_new(o, "target", json_string(targets[c->target]));
    rc |= json_object_set_new(o, "result", json_string(results[c->result]));
    switch (c->target) {
    case SLB_ETCD_MOD:
        rc |= json_object_set_new(o, "mod_revision", json_integer(c->rev));
        break;
    case SLB_ETCD_CREATE:
        rc |= json_object_set_new(o, "create_revision", json_integer(c->rev));
        break;
    case SLB_ETCD_VERSION:
        rc |= json_object_set_new(o, "version", json_integer(c->rev));
        break;
    case SLB_ETCD_VALUE:
        rc |= set_b64(o, "value", c->value ? c->value : "", c->value_len);
        break;
    }
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *txn_op(const struct slb_etcd_op *op)
{
    json_t *inner = json_object();
    if (!inner)
        return NULL;
    const char *name;
    int rc;
    switch (op->kind) {
    case SLB_ETCD_OP_PUT:
        name = "request_put";
        rc = put_fields(inner, op->key, op->value ? op->value : "", op->value_len, op->lease);
        break;
    case SLB_ETCD_OP_DELETE:
        name = "request_delete_range";
        rc = set_key(inner, op->key, op->prefix);
        break;
    default:
        name = "request_range";
        rc = set_key(inner, op->key, op->prefix);
        break;
    }
    json_t *o = json_object();
    if (rc < 0 || !o || json_object_set_new(o, name, inner) != 0) {
        json_decref(o);
        if (rc < 0 || !o)
            json_decref(inner);
        return NULL;
    }
    return o;
}

static int txn_ops(json_t *body, const char *name, const struct slb_etcd_op *ops, size_t n)
{
    json_t *arr = json_array();
    if (!arr || json_object_set_new(body, name, arr) != 0)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (json_array_append_new(arr, txn_op(&ops[i])) != 0)
            return -ENOMEM;
    return 0;
}

int slb_etcd_txn(struct slb_etcd *e, const struct slb_etcd_txn *txn, slb_etcd_cb cb, void *data,
                 struct slb_etcd_call **callp)
{
    json_t *o = json_object();
    json_t *cmp = json_array();
    bool ok = o && cmp && json_object_set_new(o, "compare", cmp) == 0;
    if (!ok && o == NULL)
        json_decref(cmp);
    for (size_t i = 0; ok && i < txn->ncmp; i++)
        ok = json_array_append_new(cmp, txn_cmp(&txn->cmp[i])) == 0;
    ok = ok && txn_ops(o, "success", txn->success, txn->nsuccess) == 0 &&
         txn_ops(o, "failure", txn->failure, txn->nfailure) == 0;
    if (!ok) {
        json_decref(o);
        o = NULL;
    }
    return call_start(e, CALL_TXN, "/v3/kv/txn", o, false, cb, data, callp);
}

int slb_etcd_compact(struct slb_etcd *e, int64_t revision, slb_etcd_cb cb, void *data,
                     struct slb_etcd_call **callp)
{
    json_t *o = json_pack("{s:I, s:b}", "revision", (json_int_t)revision, "physical", 1);
    return call_start(e, CALL_COMPACT, "/v3/kv/compaction", o, true, cb, data, callp);
}

int slb_etcd_lease_grant(struct slb_etcd *e, int64_t ttl_s, int64_t id, slb_etcd_cb cb, void *data,
                         struct slb_etcd_call **callp)
{
    json_t *o = json_pack("{s:I, s:I}", "TTL", (json_int_t)ttl_s, "ID", (json_int_t)id);
    /* With an id of our own a repeated grant fails instead of leaking a second lease. */
    return call_start(e, CALL_GRANT, "/v3/lease/grant", o, id != 0, cb, data, callp);
}

int slb_etcd_lease_keepalive(struct slb_etcd *e, int64_t id, slb_etcd_cb cb, void *data,
                             struct slb_etcd_call **callp)
{
    json_t *o = json_pack("{s:I}", "ID", (json_int_t)id);
    return call_start(e, CALL_KEEPALIVE, "/v3/lease/keepalive", o, true, cb, data, callp);
}

int slb_etcd_lease_revoke(struct slb_etcd *e, int64_t id, slb_etcd_cb cb, void *data,
                          struct slb_etcd_call **callp)
{
    json_t *o = json_pack("{s:I}", "ID", (json_int_t)id);
    return call_start(e, CALL_REVOKE, "/v3/lease/revoke", o, true, cb, data, callp);
}

/* --- watch --- */

static void watch_connect(struct slb_etcd_watch *w);

static void watch_link(struct slb_etcd *e, struct slb_etcd_watch *w)
{
    w->prev = NULL;
    w->next = e->watches;
    if (e->watches)
        e->watches->prev = w;
    e->watches = w;
}

static void watch_unlink(struct slb_etcd *e, struct slb_etcd_watch *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        e->watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

static void watch_free(void *obj)
{
    struct slb_etcd_watch *w = obj;
    free(w->key_b64);
    free(w->end_b64);
    free(w->line);
    free(w);
}

static void watch_note(struct slb_etcd_watch *w, enum slb_etcd_watch_kind kind, int64_t rev,
                       const char *error)
{
    struct slb_etcd_watch_note n = {.kind = kind, .revision = rev, .error = error};
    w->cb(w, &n, w->data);
}

/* The stream is gone (or could not be made): say so once, then reconnect to the next
 * endpoint after a pause that doubles with each failure in a row. */
static void watch_lost(struct slb_etcd_watch *w, const char *why)
{
    struct slb_etcd *e = w->e;
    w->req = NULL;
    w->line_len = 0;
    w->failures++;
    w->ep = (w->ep + 1) % e->nendpoints;
    if (!w->lost_reported) {
        w->lost_reported = true;
        slb_info("etcd: watch stream lost (%s), resuming from revision %lld", why,
                 (long long)w->next_rev);
        watch_note(w, SLB_ETCD_WATCH_LOST, w->next_rev, why);
        if (w->stopped)
            return;
    }
    unsigned shift = w->failures > 5 ? 5 : w->failures - 1;
    uint64_t delay = (uint64_t)ETCD_BACKOFF_MIN_MS << shift;
    if (delay > ETCD_BACKOFF_MAX_MS)
        delay = ETCD_BACKOFF_MAX_MS;
    slb_timer_start(e->loop, &w->retry, delay);
}

static void watch_end(struct slb_etcd_watch *w, enum slb_etcd_watch_kind kind, int64_t rev,
                      const char *why)
{
    w->ended = true;
    slb_httpc_cancel(w->req);
    w->req = NULL;
    watch_note(w, kind, rev, why);
}

/* One message of the stream. Returns <0 when the watch ended or was stopped. */
static int watch_message(struct slb_etcd_watch *w, const json_t *top)
{
    const json_t *o = json_object_get(top, "result");
    if (!json_is_object(o)) {
        const char *msg;
        int rc = grpc_error(top, 200, &msg);
        if (rc == SLB_ETCD_ECOMPACTED)
            watch_end(w, SLB_ETCD_WATCH_COMPACTED, 0, msg);
        else
            watch_end(w, SLB_ETCD_WATCH_FAILED, 0, msg);
        return SLB_EEOF;
    }
    int64_t rev = jint(json_object_get(o, "header"), "revision");
    if (json_is_true(json_object_get(o, "canceled"))) {
        int64_t compact = jint(o, "compact_revision");
        const char *why = json_string_value(json_object_get(o, "cancel_reason"));
        if (compact > 0)
            watch_end(w, SLB_ETCD_WATCH_COMPACTED, compact, "required revision was compacted");
        else
            watch_end(w, SLB_ETCD_WATCH_FAILED, rev, why ? why : "watch canceled by etcd");
        return SLB_EEOF;
    }
    const json_t *evs = json_object_get(o, "events");
    size_t n = json_array_size(evs);
    if (json_is_true(json_object_get(o, "created"))) {
        w->failures = 0;
        w->lost_reported = false;
        if (w->next_rev == 0)
            w->next_rev = rev + 1;
        watch_note(w, SLB_ETCD_WATCH_CREATED, rev, NULL);
        if (w->stopped)
            return SLB_EEOF;
        if (n == 0)
            return 0;
    }
    if (n == 0) {
        /* A progress notification: nothing happened up to rev. */
        if (rev + 1 > w->next_rev)
            w->next_rev = rev + 1;
        watch_note(w, SLB_ETCD_WATCH_PROGRESS, rev, NULL);
        return w->stopped ? SLB_EEOF : 0;
    }
    struct slb_etcd_event *ev = calloc(n, sizeof(*ev));
    if (!ev)
        return -ENOMEM;
    int rc = 0;
    size_t got = 0;
    for (; got < n; got++) {
        const json_t *j = json_array_get(evs, got);
        const char *type = json_string_value(json_object_get(j, "type"));
        ev[got].type = type && strcmp(type, "DELETE") == 0 ? SLB_ETCD_EV_DELETE : SLB_ETCD_EV_PUT;
        rc = parse_kv(json_object_get(j, "kv"), &ev[got].kv);
        if (rc < 0) {
            got++;
            break;
        }
    }
    if (rc == 0) {
        int64_t last = ev[n - 1].kv.mod_revision;
        if (last + 1 > w->next_rev)
            w->next_rev = last + 1;
        struct slb_etcd_watch_note note = {
            .kind = SLB_ETCD_WATCH_EVENTS, .revision = rev, .events = ev, .nevents = n};
        w->cb(w, &note, w->data);
    }
    for (size_t i = 0; i < got; i++)
        kv_deinit(&ev[i].kv);
    free(ev);
    if (rc < 0)
        return rc;
    return w->stopped ? SLB_EEOF : 0;
}

static int watch_chunk(struct slb_httpc_req *req, long status, const char *buf, size_t len,
                       void *data)
{
    struct slb_etcd_watch *w = data;
    if (w->line_len + len > ETCD_WATCH_MAX_LINE)
        return SLB_ETOOBIG;
    if (w->line_len + len + 1 > w->line_cap) {
        size_t cap = w->line_cap ? w->line_cap : 4096;
        while (cap < w->line_len + len + 1)
            cap *= 2;
        char *l = realloc(w->line, cap);
        if (!l)
            return -ENOMEM;
        w->line = l;
        w->line_cap = cap;
    }
    memcpy(w->line + w->line_len, buf, len);
    w->line_len += len;
    if (status != 200)
        return 0; /* an error body: read whole in watch_done */
    /* The gateway ends every message with a newline. */
    size_t start = 0;
    for (;;) {
        char *nl = memchr(w->line + start, '\n', w->line_len - start);
        if (!nl)
            break;
        size_t mlen = (size_t)(nl - (w->line + start));
        json_error_t jerr;
        json_t *msg = json_loadb(w->line + start, mlen, 0, &jerr);
        start += mlen + 1;
        if (!msg)
            continue; /* blank line */
        int rc = watch_message(w, msg);
        json_decref(msg);
        if (rc < 0)
            return rc;
    }
    memmove(w->line, w->line + start, w->line_len - start);
    w->line_len -= start;
    return 0;
}

static void watch_done(struct slb_httpc_req *req, const struct slb_httpc_result *res, void *data)
{
    struct slb_etcd_watch *w = data;
    w->req = NULL;
    if (w->ended || w->stopped)
        return;
    if (res->rc == 0 && res->status >= 400 && res->status < 500) {
        /* Refused: retrying the same request would be refused again. */
        json_error_t jerr;
        json_t *top = json_loadb(w->line ? w->line : "", w->line_len, 0, &jerr);
        const char *msg = "etcd refused the watch";
        int rc = top ? grpc_error(top, res->status, &msg) : SLB_EPROTO;
        watch_end(w, rc == SLB_ETCD_ECOMPACTED ? SLB_ETCD_WATCH_COMPACTED : SLB_ETCD_WATCH_FAILED,
                  0, msg);
        json_decref(top);
        return;
    }
    char why[300];
    if (res->rc < 0)
        snprintf(why, sizeof(why), "%s: %s", w->e->endpoints[w->ep], res->error);
    else
        snprintf(why, sizeof(why), "%s: stream ended (HTTP %ld)", w->e->endpoints[w->ep],
                 res->status);
    watch_lost(w, why);
}

static void watch_connect(struct slb_etcd_watch *w)
{
    struct slb_etcd *e = w->e;
    json_t *cr = json_pack("{s:s, s:b}", "key", w->key_b64, "progress_notify", 1);
    if (cr && w->end_b64)
        json_object_set_new(cr, "range_end", json_string(w->end_b64));
    if (cr && w->next_rev > 0)
        json_object_set_new(cr, "start_revision", json_integer(w->next_rev));
    json_t *o = cr ? json_pack("{s:o}", "create_request", cr) : NULL;
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    char url[1024];
    snprintf(url, sizeof(url), "%s/v3/watch", e->endpoints[w->ep]);
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    struct slb_httpc_opts opts = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .connect_timeout_ms = e->try_timeout_ms,
        .idle_timeout_ms = e->watch_idle_timeout_ms,
        .ca_file = e->ca_file,
        .cert_file = e->cert_file,
        .key_file = e->key_file,
        .on_chunk = watch_chunk,
        .on_done = watch_done,
        .data = w,
    };
    w->line_len = 0;
    int rc = body ? slb_httpc_start(e->http, &opts, &w->req) : -ENOMEM;
    free(body);
    if (rc < 0) {
        /* Out of memory: try again later, from the timer (this may be inside
         * slb_etcd_watch_start, which never calls back). */
        slb_warn("etcd: cannot start the watch request: %s", slb_strerror(rc));
        slb_timer_start(e->loop, &w->retry, ETCD_BACKOFF_MAX_MS);
    }
}

static void watch_retry_cb(struct slb_loop *loop, struct slb_timer *t)
{
    watch_connect(t->data);
}

int slb_etcd_watch_start(struct slb_etcd *e, const char *key, bool prefix, int64_t start_revision,
                         slb_etcd_watch_cb cb, void *data, struct slb_etcd_watch **wp)
{
    if (wp)
        *wp = NULL;
    struct slb_etcd_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->e = e;
    w->key_b64 = b64_encode(key, strlen(key));
    w->end_b64 = prefix ? prefix_end_b64(key) : NULL;
    if (!w->key_b64 || (prefix && !w->end_b64)) {
        watch_free(w);
        return -ENOMEM;
    }
    w->next_rev = start_revision > 0 ? start_revision : 0;
    w->cb = cb;
    w->data = data;
    w->ep = e->cur;
    slb_timer_init(&w->retry, watch_retry_cb, w);
    watch_link(e, w);
    if (wp)
        *wp = w;
    watch_connect(w);
    return 0;
}

void slb_etcd_watch_stop(struct slb_etcd_watch *w)
{
    if (!w || w->stopped)
        return;
    w->stopped = true;
    slb_httpc_cancel(w->req);
    w->req = NULL;
    slb_timer_stop(w->e->loop, &w->retry);
    watch_unlink(w->e, w);
    slb_loop_defer_free(w->e->loop, watch_free, w);
}

int64_t slb_etcd_watch_next_revision(const struct slb_etcd_watch *w)
{
    return w->next_rev;
}

/* --- the client --- */

struct slb_etcd *slb_etcd_new(struct slb_loop *loop, struct slb_httpc *http,
                              const struct slb_etcd_opts *o, struct slb_err *err)
{
    if (o->nendpoints == 0) {
        slb_err_set(err, 400, "invalid_value", "etcd.endpoints", "no etcd endpoint given");
        return NULL;
    }
    for (size_t i = 0; i < o->nendpoints; i++) {
        const char *u = o->endpoints[i];
        if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) {
            slb_err_set(err, 400, "invalid_value", "etcd.endpoints",
                        "etcd endpoint \"%s\" is not an http:// or https:// URL", u);
            return NULL;
        }
        if (strlen(u) > 512) {
            slb_err_set(err, 400, "invalid_value", "etcd.endpoints", "etcd endpoint too long");
            return NULL;
        }
    }
    struct slb_etcd *e = calloc(1, sizeof(*e));
    if (!e)
        goto nomem;
    e->loop = loop;
    e->http = http;
    e->call_timeout_ms = o->call_timeout_ms ? o->call_timeout_ms : ETCD_CALL_TIMEOUT_DEFAULT;
    e->try_timeout_ms = o->try_timeout_ms ? o->try_timeout_ms : ETCD_TRY_TIMEOUT_DEFAULT;
    e->watch_idle_timeout_ms = o->watch_idle_timeout_ms;
    e->endpoints = calloc(o->nendpoints, sizeof(char *));
    if (!e->endpoints)
        goto nomem;
    e->nendpoints = o->nendpoints;
    for (size_t i = 0; i < o->nendpoints; i++) {
        /* Without a trailing slash, so paths append as they are. */
        size_t n = strlen(o->endpoints[i]);
        while (n > 0 && o->endpoints[i][n - 1] == '/')
            n--;
        e->endpoints[i] = strndup(o->endpoints[i], n);
        if (!e->endpoints[i])
            goto nomem;
    }
    if ((o->ca_file && !(e->ca_file = strdup(o->ca_file))) ||
        (o->cert_file && !(e->cert_file = strdup(o->cert_file))) ||
        (o->key_file && !(e->key_file = strdup(o->key_file))))
        goto nomem;
    return e;
nomem:
    slb_etcd_free(e);
    slb_err_set(err, 500, "internal", "etcd", "out of memory");
    return NULL;
}

void slb_etcd_free(struct slb_etcd *e)
{
    if (!e)
        return;
    while (e->calls)
        slb_etcd_call_cancel(e->calls);
    while (e->watches)
        slb_etcd_watch_stop(e->watches);
    for (size_t i = 0; e->endpoints && i < e->nendpoints; i++)
        free(e->endpoints[i]);
    free(e->endpoints);
    free(e->ca_file);
    free(e->cert_file);
    free(e->key_file);
    free(e);
}

size_t slb_etcd_endpoint(const struct slb_etcd *e)
{
    return e->cur;
}
