/* SPDX-License-Identifier: Apache-2.0 */
/* The ACME manager (acme/order.h). Each certificate runs one order at a time as a chain of
 * requests through the control loop's HTTP client; every response is handled in on_done. */
#include "acme/order.h"

#include "acme/challenge.h"
#include "acme/jws.h"
#include "cert/store.h"
#include "core/fsio.h"
#include "core/log.h"
#include "core/time.h"
#include "event/coro.h"
#include "net/httpc.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define REQ_TIMEOUT_MS 30000
#define POLL_MS 1000
#define BACKOFF_MIN_S 5
#define BACKOFF_MAX_S 3600
#define MAX_DOMAINS 100
#define MAX_NONCE_RETRIES 3

struct account {
    char name[128];
    char directory[512];
    char email[256];
    char ca_file[1024]; /* DIR/acme/<name>.ca.pem, or "" */
    char *ca_pem;       /* NULL: the system's trust */
    EVP_PKEY *key;
    char kid[512]; /* account URL once registered */
    char new_nonce[512], new_account[512], new_order[512];
    char nonce[256];
    struct account *next;
};

enum state { ST_PENDING, ST_VALID, ST_RENEWING, ST_FAILED };
static const char *const state_names[] = {"pending", "valid", "renewing", "failed"};

/* What the request in flight is for. */
enum kind {
    K_DIRECTORY,
    K_NONCE,
    K_ACCOUNT,
    K_ORDER_NEW,
    K_ORDER_GET,
    K_AUTHZ,
    K_CHALLENGE,
    K_FINALIZE,
    K_DOWNLOAD
};

/* One ACME certificate: its definition, the order in progress and what the API shows. */
struct acert {
    struct slb_acme *a;
    char id[64], name[128], account[128];
    char **domains;
    size_t ndomains;
    int key_type;
    bool alpn; /* tls-alpn-01, else http-01 */
    enum state state;
    char error[600];
    bool issued; /* a certificate is in the store */
    int64_t not_after, renew_at;
    /* The order in progress ("" order_url: none). */
    char order_url[512], finalize_url[512], cert_url[512];
    json_t *authzs; /* URLs */
    size_t authz_i;
    char chall_url[512];
    char token[256], chall_domain[256]; /* the challenge being answered, or "" */
    char *key_pem;                      /* the certificate key of this order, from finalize on */
    bool working; /* an order is under way (else waiting for renew_at or a retry) */
    enum kind kind, pending_kind;
    int nonce_retries;
    struct slb_httpc_req *req;
    uint64_t next_ms; /* monotonic: when to send the next request */
    uint32_t backoff_s;
    uint64_t failures;
    struct acert *next;
};

struct slb_acme {
    struct slb_certstore *store;
    struct slb_httpc *httpc;
    char dir[600];
    slb_acme_stored_cb stored;
    void *data;
    struct account *accounts;
    struct acert *certs;
    bool publish; /* the challenge table must be rebuilt */
};

static void step(struct acert *c);

/* --- persistence --- */

static int save_json(struct slb_acme *a, const char *name, json_t *doc)
{
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(doc);
    if (!text)
        return -ENOMEM;
    int rc = slb_fs_write_atomic(a->dir, name, text, strlen(text), 0600);
    free(text);
    if (rc < 0)
        slb_error("acme: cannot write %s/%s: %s", a->dir, name, strerror(-rc));
    return rc;
}

static char *key_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL, *p;
    if (b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL)) {
        long n = BIO_get_mem_data(b, &p); /* not NUL-terminated */
        if (n > 0 && (out = malloc((size_t)n + 1))) {
            memcpy(out, p, (size_t)n);
            out[n] = '\0';
        }
    }
    BIO_free(b);
    ERR_clear_error();
    return out;
}

static EVP_PKEY *key_from_pem(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    ERR_clear_error();
    return k;
}

static int account_save(struct slb_acme *a, struct account *ac)
{
    char *pem = key_pem(ac->key), file[200];
    if (!pem)
        return -ENOMEM;
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?}", "name", ac->name, "directory", ac->directory,
                  "email", ac->email, "key", pem, "kid", ac->kid, "ca_certificate", ac->ca_pem);
    OPENSSL_cleanse(pem, strlen(pem));
    free(pem);
    snprintf(file, sizeof(file), "account-%s.json", ac->name);
    return doc ? save_json(a, file, doc) : -ENOMEM;
}

static int cert_save(struct acert *c)
{
    json_t *doms = json_array();
    for (size_t i = 0; i < c->ndomains; i++)
        json_array_append_new(doms, json_string(c->domains[i]));
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:o, s:s, s:s, s:s, s:s, s:s, s:s?, s:I, s:b}", "id", c->id,
                  "name", c->name, "account", c->account, "domains", doms, "key_type",
                  c->key_type == SLB_ACME_KEY_RSA_2048 ? "rsa-2048" : "ec-p256", "challenge",
                  c->alpn ? "tls-alpn-01" : "http-01", "state", state_names[c->state], "error",
                  c->error, "order", c->order_url, "order_key", c->key_pem, "renew_at",
                  (json_int_t)c->renew_at, "issued", c->issued);
    /* The challenge being answered: a restart answers it again at once. */
    if (doc && c->token[0]) {
        json_object_set_new(doc, "token", json_string(c->token));
        json_object_set_new(doc, "challenge_domain", json_string(c->chall_domain));
    }
    char file[200];
    snprintf(file, sizeof(file), "cert-%s.json", c->id);
    return doc ? save_json(c->a, file, doc) : -ENOMEM;
}

/* --- lookups --- */

static struct account *account_find(struct slb_acme *a, const char *name)
{
    for (struct account *ac = a->accounts; ac; ac = ac->next)
        if (strcmp(ac->name, name) == 0)
            return ac;
    return NULL;
}

static struct acert *cert_find(struct slb_acme *a, const char *id)
{
    for (struct acert *c = a->certs; c; c = c->next)
        if (strcmp(c->id, id) == 0)
            return c;
    return NULL;
}

/* --- challenges --- */

/* Rebuild the published table from every certificate waiting for its CA's validation. */
static void publish(struct slb_acme *a)
{
    a->publish = false;
    struct slb_acme_challenges *t = slb_acme_challenges_new();
    bool any = false;
    for (struct acert *c = a->certs; t && c; c = c->next) {
        if (!c->token[0])
            continue;
        struct account *ac = account_find(a, c->account);
        char *ka = ac ? slb_acme_key_authorization(ac->key, c->token) : NULL;
        X509 *x = NULL;
        EVP_PKEY *k = NULL;
        if (ka && !c->alpn)
            any |= slb_acme_challenges_add_http01(t, c->token, ka) == 0;
        else if (ka && slb_acme_alpn_cert(c->chall_domain, ka, &x, &k) == 0)
            any |= slb_acme_challenges_add_alpn(t, c->chall_domain, x, k) == 0;
        X509_free(x);
        EVP_PKEY_free(k);
        free(ka);
    }
    if (!any) {
        slb_acme_challenges_free(t);
        t = NULL;
    }
    slb_acme_challenges_publish(t, slb_mono_ms());
}

/* --- the order flow --- */

static void fail(struct acert *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct acert *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof(c->error), fmt, ap);
    va_end(ap);
    slb_warn("acme: certificate %s (%s): %s; retrying in %u s", c->id, c->name, c->error,
             c->backoff_s ? c->backoff_s : BACKOFF_MIN_S);
    c->failures++;
    if (!c->issued)
        c->state = ST_FAILED;
    c->working = false;
    c->order_url[0] = c->chall_url[0] = c->token[0] = '\0';
    c->backoff_s = c->backoff_s ? c->backoff_s * 2 : BACKOFF_MIN_S;
    if (c->backoff_s > BACKOFF_MAX_S)
        c->backoff_s = BACKOFF_MAX_S;
    c->next_ms = slb_mono_ms() + (uint64_t)c->backoff_s * 1000u;
    json_decref(c->authzs);
    c->authzs = NULL;
    c->a->publish = true;
    cert_save(c);
}

/* The problem document of an error response (RFC 7807) as one sentence. */
static void problem_text(const struct slb_httpc_result *res, char *out, size_t cap)
{
    json_t *p = json_loadb(res->body, res->body_len, 0, NULL);
    const char *type = json_string_value(json_object_get(p, "type"));
    const char *detail = json_string_value(json_object_get(p, "detail"));
    if (type || detail)
        snprintf(out, cap, "%s (%s, HTTP %ld)", detail ? detail : "no detail",
                 type ? type : "no type", res->status);
    else
        snprintf(out, cap, "HTTP %ld from the CA", res->status);
    json_decref(p);
}

static bool is_bad_nonce(const struct slb_httpc_result *res)
{
    json_t *p = json_loadb(res->body, res->body_len, 0, NULL);
    const char *type = json_string_value(json_object_get(p, "type"));
    bool bad =
        res->status == 400 && type && strcmp(type, "urn:ietf:params:acme:error:badNonce") == 0;
    json_decref(p);
    return bad;
}

static void on_done(struct slb_httpc_req *req, const struct slb_httpc_result *res, void *data);

static void send_req(struct acert *c, enum kind k, const char *method, const char *url,
                     const char *body)
{
    struct account *ac = account_find(c->a, c->account);
    /* A few requests every few weeks: no connection is kept open to the CA between them. */
    const char *hdrs[] = {"Content-Type: application/jose+json",
                          k == K_DOWNLOAD ? "Accept: application/pem-certificate-chain"
                                          : "Accept: application/json",
                          "Connection: close", NULL};
    struct slb_httpc_opts o = {.method = method,
                               .url = url,
                               .headers = body ? hdrs : hdrs + 1,
                               .body = body,
                               .body_len = body ? strlen(body) : 0,
                               .timeout_ms = REQ_TIMEOUT_MS,
                               .ca_file = ac && ac->ca_file[0] ? ac->ca_file : NULL,
                               .on_done = on_done,
                               .data = c};
    c->kind = k;
    int rc = slb_httpc_start(c->a->httpc, &o, &c->req);
    if (rc < 0) {
        c->req = NULL;
        fail(c, "cannot start a request to %s: %s", url, slb_strerror(rc));
    }
}

/* A signed POST to url (payload NULL: POST-as-GET), once the account is ready. */
static void post(struct acert *c, enum kind k, const char *url, const char *payload)
{
    struct account *ac = account_find(c->a, c->account);
    c->pending_kind = k;
    if (!ac->new_nonce[0]) {
        send_req(c, K_DIRECTORY, "GET", ac->directory, NULL);
        return;
    }
    if (!ac->nonce[0]) {
        send_req(c, K_NONCE, "GET", ac->new_nonce, NULL);
        return;
    }
    char nonce[256];
    snprintf(nonce, sizeof(nonce), "%s", ac->nonce);
    ac->nonce[0] = '\0'; /* each nonce is good for one request */
    char *jws;
    if (!ac->kid[0]) {
        char pay[400];
        if (ac->email[0])
            snprintf(pay, sizeof(pay),
                     "{\"termsOfServiceAgreed\":true,\"contact\":[\"mailto:%s\"]}", ac->email);
        else
            snprintf(pay, sizeof(pay), "{\"termsOfServiceAgreed\":true}");
        jws = slb_acme_jws(ac->key, NULL, nonce, ac->new_account, pay);
        k = K_ACCOUNT;
        url = ac->new_account;
    } else {
        jws = slb_acme_jws(ac->key, ac->kid, nonce, url, payload);
    }
    if (!jws) {
        fail(c, "cannot sign a request (out of memory)");
        return;
    }
    send_req(c, k, "POST", url, jws);
    free(jws);
}

/* The URL a step posts to, kept for a retry after badNonce. */
static const char *kind_url(struct acert *c, enum kind k)
{
    switch (k) {
    case K_ORDER_NEW:
        return account_find(c->a, c->account)->new_order;
    case K_ORDER_GET:
        return c->order_url;
    case K_AUTHZ:
        return json_string_value(json_array_get(c->authzs, c->authz_i));
    case K_CHALLENGE:
        return c->chall_url;
    case K_FINALIZE:
        return c->finalize_url;
    case K_DOWNLOAD:
        return c->cert_url;
    default:
        return "";
    }
}

static char *csr_payload(struct acert *c)
{
    EVP_PKEY *k = NULL;
    if (c->key_pem)
        k = key_from_pem(c->key_pem);
    if (!k) {
        free(c->key_pem);
        k = slb_acme_key_generate(c->key_type);
        c->key_pem = k ? key_pem(k) : NULL;
        if (!c->key_pem) {
            EVP_PKEY_free(k);
            return NULL;
        }
        cert_save(c); /* a restart downloads into this key */
    }
    X509_REQ *r = X509_REQ_new();
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    char *out = NULL, san[8192] = "";
    size_t off = 0;
    for (size_t i = 0; i < c->ndomains && off < sizeof(san); i++)
        off +=
            (size_t)snprintf(san + off, sizeof(san) - off, "%sDNS:%s", i ? "," : "", c->domains[i]);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    unsigned char *der = NULL;
    int len;
    if (r && exts && ext && X509_REQ_set_version(r, 0) &&
        X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(r), "CN", MBSTRING_ASC,
                                   (const unsigned char *)c->domains[0], -1, -1, 0) &&
        sk_X509_EXTENSION_push(exts, ext) && (ext = NULL, X509_REQ_add_extensions(r, exts)) &&
        X509_REQ_set_pubkey(r, k) && X509_REQ_sign(r, k, EVP_sha256()) &&
        (len = i2d_X509_REQ(r, &der)) > 0) {
        char *b64 = slb_acme_b64url_new(der, (size_t)len);
        json_t *p = b64 ? json_pack("{s:s}", "csr", b64) : NULL;
        out = p ? json_dumps(p, JSON_COMPACT) : NULL;
        json_decref(p);
        free(b64);
    }
    OPENSSL_free(der);
    X509_EXTENSION_free(ext);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(r);
    EVP_PKEY_free(k);
    ERR_clear_error();
    return out;
}

/* Tests: SLBD_ACME_RENEW_S=N renews N seconds after an issue or a start. */
static void renew_knob(struct acert *c)
{
    const char *force = getenv("SLBD_ACME_RENEW_S");
    if (force && atoi(force) > 0)
        c->renew_at = time(NULL) + atoi(force);
}

static void store_chain(struct acert *c, const char *pem, size_t len)
{
    struct slb_err err = {0};
    struct slb_cert *got = NULL;
    json_t *body = json_pack("{s:s, s:s, s:s%, s:s}", "name", c->name, "type", "server",
                             "certificate", pem, len, "private_key", c->key_pem);
    bool exists = slb_certstore_get(c->a->store, c->id) != NULL;
    int rc;
    if (!body) {
        fail(c, "out of memory");
        return;
    }
    if (exists) {
        rc = slb_certstore_replace(c->a->store, c->id, body, &got, &err);
    } else {
        json_object_set_new(body, "id", json_string(c->id));
        rc = slb_certstore_create(c->a->store, body, &got, &err);
    }
    json_decref(body);
    if (rc == 0 && c->a->stored)
        rc = c->a->stored(c->id, !exists, c->a->data, &err);
    if (rc < 0) {
        fail(c, "the CA's certificate was refused by the store: %s (%s)", err.msg, err.code);
        return;
    }
    c->issued = true;
    c->state = ST_VALID;
    c->error[0] = '\0';
    c->working = false;
    c->backoff_s = 0;
    c->order_url[0] = c->chall_url[0] = c->token[0] = '\0';
    OPENSSL_cleanse(c->key_pem, strlen(c->key_pem));
    free(c->key_pem);
    c->key_pem = NULL;
    json_decref(c->authzs);
    c->authzs = NULL;
    int64_t nb = got ? got->not_before : time(NULL), na = got ? got->not_after : time(NULL);
    c->not_after = na;
    c->renew_at = nb + (na - nb) * 2 / 3;
    renew_knob(c);
    slb_info("acme: certificate %s (%s) %s, renewal at %lld", c->id, c->name,
             exists ? "renewed" : "issued", (long long)c->renew_at);
    cert_save(c);
}

/* The order object: what to do next by its status. */
static void on_order(struct acert *c, json_t *o)
{
    const char *st = json_string_value(json_object_get(o, "status"));
    const char *fin = json_string_value(json_object_get(o, "finalize"));
    const char *crt = json_string_value(json_object_get(o, "certificate"));
    json_t *az = json_object_get(o, "authorizations");
    if (!st) {
        fail(c, "the CA sent an order without status");
        return;
    }
    if (fin)
        snprintf(c->finalize_url, sizeof(c->finalize_url), "%s", fin);
    if (json_is_array(az) && !c->authzs)
        c->authzs = json_incref(az);
    if (strcmp(st, "pending") == 0) {
        c->authz_i = 0;
        c->pending_kind = K_AUTHZ;
        step(c);
    } else if (strcmp(st, "ready") == 0) {
        c->pending_kind = K_FINALIZE;
        step(c);
    } else if (strcmp(st, "processing") == 0) {
        c->pending_kind = K_ORDER_GET;
        c->next_ms = slb_mono_ms() + POLL_MS;
    } else if (strcmp(st, "valid") == 0 && crt) {
        snprintf(c->cert_url, sizeof(c->cert_url), "%s", crt);
        c->pending_kind = K_DOWNLOAD;
        step(c);
    } else {
        json_t *err = json_object_get(o, "error");
        const char *d = json_string_value(json_object_get(err, "detail"));
        fail(c, "the order is %s: %s", st, d ? d : "no detail from the CA");
    }
}

/* The authorization being worked on. */
static void on_authz(struct acert *c, json_t *o)
{
    const char *st = json_string_value(json_object_get(o, "status"));
    const char *dom = json_string_value(json_object_get(json_object_get(o, "identifier"), "value"));
    if (st && strcmp(st, "valid") == 0) {
        c->token[0] = c->chall_url[0] = '\0';
        c->a->publish = true;
        c->pending_kind = ++c->authz_i < json_array_size(c->authzs) ? K_AUTHZ : K_ORDER_GET;
        step(c);
        return;
    }
    const char *want = c->alpn ? "tls-alpn-01" : "http-01";
    size_t i;
    json_t *ch, *found = NULL;
    json_array_foreach(json_object_get(o, "challenges"), i, ch)
    {
        const char *t = json_string_value(json_object_get(ch, "type"));
        if (t && strcmp(t, want) == 0)
            found = ch;
    }
    if (st && strcmp(st, "pending") == 0 && found && !c->chall_url[0]) {
        const char *tok = json_string_value(json_object_get(found, "token"));
        const char *url = json_string_value(json_object_get(found, "url"));
        if (!tok || !url || !dom || strlen(tok) >= sizeof(c->token)) {
            fail(c, "the CA's %s challenge has no token or url", want);
            return;
        }
        snprintf(c->token, sizeof(c->token), "%s", tok);
        snprintf(c->chall_url, sizeof(c->chall_url), "%s", url);
        snprintf(c->chall_domain, sizeof(c->chall_domain), "%s", dom);
        publish(c->a); /* before the CA is told to look */
        cert_save(c);
        const char *cst = json_string_value(json_object_get(found, "status"));
        /* Resumed after a restart while the CA was validating: answer again, wait. */
        c->pending_kind = cst && strcmp(cst, "processing") == 0 ? K_AUTHZ : K_CHALLENGE;
        if (c->pending_kind == K_AUTHZ)
            c->next_ms = slb_mono_ms() + POLL_MS;
        else
            step(c);
        return;
    }
    if (st && strcmp(st, "pending") == 0 && !found) {
        fail(c, "the CA offers no %s challenge for %s", want, dom ? dom : "a domain");
        return;
    }
    if (st && (strcmp(st, "pending") == 0 || strcmp(st, "processing") == 0)) {
        c->pending_kind = K_AUTHZ;
        c->next_ms = slb_mono_ms() + POLL_MS;
        return;
    }
    json_t *e = json_object_get(found, "error");
    const char *d = json_string_value(json_object_get(e, "detail"));
    const char *t = json_string_value(json_object_get(e, "type"));
    fail(c, "the authorization of %s is %s: %s (%s)", dom ? dom : "a domain", st ? st : "unknown",
         d ? d : "no detail", t ? t : "no type");
}

static void on_done(struct slb_httpc_req *req, const struct slb_httpc_result *res, void *data)
{
    struct acert *c = data;
    struct account *ac = account_find(c->a, c->account);
    c->req = NULL;
    if (res->rc < 0) {
        fail(c, "cannot reach the CA at %s: %s",
             kind_url(c, c->kind)[0] ? kind_url(c, c->kind) : ac->directory, res->error);
        return;
    }
    char nonce[256], loc[512];
    if (slb_httpc_header(req, "Replay-Nonce", nonce, sizeof(nonce)))
        snprintf(ac->nonce, sizeof(ac->nonce), "%s", nonce);
    /* Every signed request may meet a rejected nonce: send it again with the new one. */
    if (c->kind != K_DIRECTORY && c->kind != K_NONCE && is_bad_nonce(res) &&
        ++c->nonce_retries <= MAX_NONCE_RETRIES) {
        step(c);
        return;
    }
    c->nonce_retries = 0;
    if (res->status >= 400) {
        char p[500];
        problem_text(res, p, sizeof(p));
        fail(c, "%s", p);
        return;
    }
    json_t *o = c->kind == K_DOWNLOAD || c->kind == K_NONCE
                    ? NULL
                    : json_loadb(res->body, res->body_len, 0, NULL);
    switch (c->kind) {
    case K_DIRECTORY: {
        const char *n = json_string_value(json_object_get(o, "newNonce"));
        const char *na = json_string_value(json_object_get(o, "newAccount"));
        const char *no = json_string_value(json_object_get(o, "newOrder"));
        if (!n || !na || !no) {
            fail(c, "%s is not an ACME directory", ac->directory);
            break;
        }
        snprintf(ac->new_nonce, sizeof(ac->new_nonce), "%s", n);
        snprintf(ac->new_account, sizeof(ac->new_account), "%s", na);
        snprintf(ac->new_order, sizeof(ac->new_order), "%s", no);
        step(c);
        break;
    }
    case K_NONCE:
        if (!ac->nonce[0])
            fail(c, "the CA's newNonce answered without a Replay-Nonce");
        else
            step(c);
        break;
    case K_ACCOUNT:
        if (!slb_httpc_header(req, "Location", loc, sizeof(loc))) {
            fail(c, "the CA registered the account without telling its URL");
            break;
        }
        snprintf(ac->kid, sizeof(ac->kid), "%s", loc);
        account_save(c->a, ac);
        slb_info("acme: account %s registered at %s", ac->name, ac->kid);
        step(c);
        break;
    case K_ORDER_NEW:
        if (!slb_httpc_header(req, "Location", loc, sizeof(loc))) {
            fail(c, "the CA created the order without telling its URL");
            break;
        }
        snprintf(c->order_url, sizeof(c->order_url), "%s", loc);
        cert_save(c);
        on_order(c, o);
        break;
    case K_ORDER_GET:
    case K_FINALIZE:
        on_order(c, o);
        break;
    case K_AUTHZ:
        on_authz(c, o);
        break;
    case K_CHALLENGE:
        c->pending_kind = K_AUTHZ;
        c->next_ms = slb_mono_ms() + POLL_MS / 4;
        break;
    case K_DOWNLOAD:
        if (slb_coro_paused()) {
            /* An admin write waits for etcd half-way through the store: download again in
             * a moment rather than change the store under it. */
            c->pending_kind = K_DOWNLOAD;
            c->next_ms = slb_mono_ms() + POLL_MS / 4;
            break;
        }
        store_chain(c, res->body, res->body_len);
        break;
    }
    json_decref(o);
}

/* Go on with the order: resume a stored one, or start a new one, or send what pending_kind
 * says comes next. */
static void step(struct acert *c)
{
    if (c->req)
        return;
    struct account *ac = account_find(c->a, c->account);
    if (!ac) {
        fail(c, "no ACME account named \"%s\"", c->account);
        return;
    }
    if (!c->working) {
        c->working = true;
        if (c->issued)
            c->state = ST_RENEWING;
        c->pending_kind = c->order_url[0] ? K_ORDER_GET : K_ORDER_NEW;
    }
    char *payload = NULL;
    if (c->pending_kind == K_ORDER_NEW) {
        json_t *ids = json_array();
        for (size_t i = 0; i < c->ndomains; i++)
            json_array_append_new(ids,
                                  json_pack("{s:s, s:s}", "type", "dns", "value", c->domains[i]));
        json_t *p = json_pack("{s:o}", "identifiers", ids);
        payload = p ? json_dumps(p, JSON_COMPACT) : NULL;
        json_decref(p);
        json_decref(c->authzs);
        c->authzs = NULL;
    } else if (c->pending_kind == K_FINALIZE) {
        if (!(payload = csr_payload(c))) {
            fail(c, "cannot make the certificate request (CSR)");
            return;
        }
    } else if (c->pending_kind == K_CHALLENGE) {
        payload = strdup("{}");
    } else {
        const char *url = kind_url(c, c->pending_kind);
        if (!url || !url[0]) {
            /* A stored order without its authorizations (a restart): read the order. */
            c->pending_kind = c->order_url[0] ? K_ORDER_GET : K_ORDER_NEW;
            step(c);
            return;
        }
    }
    if (c->pending_kind != K_CHALLENGE && c->pending_kind != K_ORDER_NEW &&
        c->pending_kind != K_FINALIZE && payload) {
        free(payload);
        payload = NULL;
    }
    post(c, c->pending_kind, kind_url(c, c->pending_kind), payload);
    free(payload);
}

/* --- the API --- */

static json_t *account_json(const struct account *ac)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:b}", "name", ac->name, "directory", ac->directory,
                     "email", ac->email, "status", ac->kid[0] ? "registered" : "unregistered",
                     "ca_certificate", ac->ca_pem != NULL);
}

json_t *slb_acme_accounts_json(struct slb_acme *a)
{
    json_t *l = json_array();
    for (struct account *ac = a->accounts; ac; ac = ac->next)
        json_array_append_new(l, account_json(ac));
    return json_pack("{s:o}", "accounts", l);
}

json_t *slb_acme_account_json(struct slb_acme *a, const char *name)
{
    struct account *ac = account_find(a, name);
    return ac ? account_json(ac) : NULL;
}

static bool text_ok(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == '"' || s[i] == '/' || s[i] == '\\' ||
            s[i] == 0x7f)
            return false;
    return true;
}

static struct account *account_add(struct slb_acme *a, const char *name, const char *dir,
                                   const char *email, const char *ca_pem, EVP_PKEY *key,
                                   const char *kid, struct slb_err *err)
{
    struct account *ac = calloc(1, sizeof(*ac));
    if (!ac) {
        slb_err_set(err, 500, "internal", "", "out of memory");
        return NULL;
    }
    snprintf(ac->name, sizeof(ac->name), "%s", name);
    snprintf(ac->directory, sizeof(ac->directory), "%s", dir);
    snprintf(ac->email, sizeof(ac->email), "%s", email ? email : "");
    snprintf(ac->kid, sizeof(ac->kid), "%s", kid ? kid : "");
    ac->key = key;
    if (ca_pem) {
        char file[200];
        ac->ca_pem = strdup(ca_pem);
        snprintf(file, sizeof(file), "account-%s.ca.pem", name);
        snprintf(ac->ca_file, sizeof(ac->ca_file), "%s/%s", a->dir, file);
        if (!ac->ca_pem || slb_fs_write_atomic(a->dir, file, ca_pem, strlen(ca_pem), 0600) < 0) {
            slb_err_set(err, 500, "storage_failed", "ca_certificate", "cannot write %s",
                        ac->ca_file);
            free(ac->ca_pem);
            free(ac);
            return NULL;
        }
    }
    ac->next = a->accounts;
    a->accounts = ac;
    return ac;
}

int slb_acme_account_create(struct slb_acme *a, const json_t *body, json_t **out,
                            struct slb_err *err)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v)
    {
        if (strcmp(key, "name") && strcmp(key, "directory") && strcmp(key, "email") &&
            strcmp(key, "ca_certificate"))
            return slb_err_set(err, 400, "unknown_field", key,
                               "unknown field \"%.60s\"; an account has name, directory, email "
                               "and ca_certificate",
                               key);
    }
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *dir = json_string_value(json_object_get(body, "directory"));
    const char *email = json_string_value(json_object_get(body, "email"));
    const char *ca = json_string_value(json_object_get(body, "ca_certificate"));
    if (!text_ok(name, 64))
        return slb_err_set(err, 400, "invalid_value", "name",
                           "name: 1-63 characters without spaces, quotes or slashes");
    if (!dir || strlen(dir) >= 500 || strncmp(dir, "https://", 8) != 0)
        return slb_err_set(err, 400, "invalid_value", "directory",
                           "directory: the https:// URL of the CA's ACME directory");
    if (json_object_get(body, "email") && (!email || !text_ok(email, 250) || !strchr(email, '@')))
        return slb_err_set(err, 400, "invalid_value", "email", "email: an e-mail address");
    if (json_object_get(body, "ca_certificate") &&
        (!ca || !strstr(ca, "-----BEGIN CERTIFICATE-----")))
        return slb_err_set(err, 400, "invalid_pem", "ca_certificate",
                           "ca_certificate: PEM certificates to trust for the CA's server");
    if (account_find(a, name))
        return slb_err_set(err, 409, "name_taken", "name", "an account named \"%s\" exists", name);
    EVP_PKEY *k = slb_acme_key_generate(SLB_ACME_KEY_EC_P256);
    if (!k)
        return slb_err_set(err, 500, "internal", "", "cannot generate the account key");
    struct account *ac = account_add(a, name, dir, email, ca, k, NULL, err);
    if (!ac) {
        EVP_PKEY_free(k);
        return SLB_EINVAL;
    }
    if (account_save(a, ac) < 0)
        return slb_err_set(err, 500, "storage_failed", "", "cannot store the account");
    *out = account_json(ac);
    return 0;
}

static json_t *acme_json(const struct acert *c)
{
    json_t *doms = json_array();
    for (size_t i = 0; i < c->ndomains; i++)
        json_array_append_new(doms, json_string(c->domains[i]));
    json_t *o =
        json_pack("{s:s, s:o, s:s, s:s, s:s}", "account", c->account, "domains", doms, "key_type",
                  c->key_type == SLB_ACME_KEY_RSA_2048 ? "rsa-2048" : "ec-p256", "challenge",
                  c->alpn ? "tls-alpn-01" : "http-01", "state", state_names[c->state]);
    if (c->error[0])
        json_object_set_new(o, "error", json_string(c->error));
    if (c->renew_at) {
        char when[32];
        time_t t = (time_t)c->renew_at;
        struct tm tm;
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
        json_object_set_new(o, "renew_at", json_string(when));
    }
    return o;
}

json_t *slb_acme_cert_json(struct slb_acme *a, const char *id)
{
    struct acert *c = cert_find(a, id);
    return c ? acme_json(c) : NULL;
}

static json_t *pending_resource(const struct acert *c)
{
    return json_pack("{s:s, s:s, s:s, s:o}", "id", c->id, "name", c->name, "type", "server", "acme",
                     acme_json(c));
}

json_t *slb_acme_pending_json(struct slb_acme *a, const char *id)
{
    struct acert *c = cert_find(a, id);
    return c && !slb_certstore_get(a->store, id) ? pending_resource(c) : NULL;
}

json_t *slb_acme_pending_list(struct slb_acme *a)
{
    json_t *l = json_array();
    for (struct acert *c = a->certs; c; c = c->next)
        if (!slb_certstore_get(a->store, c->id))
            json_array_append_new(l, pending_resource(c));
    return l;
}

static struct acert *cert_add(struct slb_acme *a, const char *id, const char *name,
                              const char *account, const json_t *domains, int key_type, bool alpn)
{
    /* From a file too: anything missing makes it unusable rather than a crash. */
    if (!id || !name || !account || !json_is_array(domains) || json_array_size(domains) == 0 ||
        key_type < 0)
        return NULL;
    size_t k;
    json_t *dv;
    json_array_foreach(domains, k, dv)
    {
        if (!json_is_string(dv))
            return NULL;
    }
    struct acert *c = calloc(1, sizeof(*c));
    if (!c || !(c->domains = calloc(json_array_size(domains), sizeof(char *)))) {
        free(c);
        return NULL;
    }
    c->a = a;
    snprintf(c->id, sizeof(c->id), "%s", id);
    snprintf(c->name, sizeof(c->name), "%s", name);
    snprintf(c->account, sizeof(c->account), "%s", account);
    size_t i;
    json_t *d;
    json_array_foreach(domains, i, d)
    {
        c->domains[c->ndomains++] = strdup(json_string_value(d));
    }
    c->key_type = key_type;
    c->alpn = alpn;
    c->next = a->certs;
    a->certs = c;
    return c;
}

int slb_acme_cert_create(struct slb_acme *a, const json_t *body, json_t **out, struct slb_err *err)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v)
    {
        if (strcmp(key, "name") && strcmp(key, "type") && strcmp(key, "acme") && strcmp(key, "id"))
            return slb_err_set(err, 400, "invalid_body", key,
                               "\"%.60s\" cannot go with \"acme\": an ACME certificate has name, "
                               "type, id and acme",
                               key);
    }
    const json_t *ab = json_object_get(body, "acme");
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *type = json_string_value(json_object_get(body, "type"));
    const char *id = json_string_value(json_object_get(body, "id"));
    const char *account = json_string_value(json_object_get(ab, "account"));
    const json_t *domains = json_object_get(ab, "domains");
    const char *kt = json_string_value(json_object_get(ab, "key_type"));
    const char *ch = json_string_value(json_object_get(ab, "challenge"));
    if (!json_is_object(ab))
        return slb_err_set(err, 400, "invalid_body", "acme", "acme: an object");
    json_object_foreach((json_t *)ab, key, v)
    {
        if (strcmp(key, "account") && strcmp(key, "domains") && strcmp(key, "key_type") &&
            strcmp(key, "challenge"))
            return slb_err_set(err, 400, "invalid_body", "acme",
                               "acme: unknown field \"%.60s\" (account, domains, key_type, "
                               "challenge)",
                               key);
    }
    if (!text_ok(name, 128))
        return slb_err_set(err, 400, "invalid_body", "name", "name: 1-127 characters");
    if (!type || strcmp(type, "server") != 0)
        return slb_err_set(err, 400, "invalid_body", "type",
                           "type: an ACME certificate is a \"server\" certificate");
    if (!account || !account_find(a, account))
        return slb_err_set(err, 400, "invalid_value", "acme.account",
                           "acme.account: no ACME account named \"%s\"", account ? account : "");
    if (!json_is_array(domains) || json_array_size(domains) == 0 ||
        json_array_size(domains) > MAX_DOMAINS)
        return slb_err_set(err, 400, "invalid_value", "acme.domains",
                           "acme.domains: 1 to %d DNS names", MAX_DOMAINS);
    size_t i;
    json_array_foreach(domains, i, v)
    {
        const char *d = json_string_value(v);
        if (!d || !text_ok(d, 254) || strchr(d, '*') ||
            strspn(d, "abcdefghijklmnopqrstuvwxyz"
                      "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789.-") != strlen(d))
            return slb_err_set(err, 400, "invalid_value", "acme.domains",
                               "acme.domains[%zu]: a DNS name (no wildcards: they need dns-01)", i);
    }
    int ktype = kt ? slb_acme_key_type_parse(kt) : SLB_ACME_KEY_EC_P256;
    if (ktype < 0)
        return slb_err_set(err, 400, "invalid_value", "acme.key_type",
                           "acme.key_type: \"ec-p256\" or \"rsa-2048\"");
    if (ch && strcmp(ch, "http-01") != 0 && strcmp(ch, "tls-alpn-01") != 0)
        return slb_err_set(err, 400, "invalid_value", "acme.challenge",
                           "acme.challenge: \"http-01\" or \"tls-alpn-01\"");
    char gen[64];
    if (id) {
        if (!text_ok(id, 64) || strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                           "0123456789._-") != strlen(id))
            return slb_err_set(err, 400, "invalid_body", "id", "id: 1-63 of A-Z a-z 0-9 . _ -");
    } else {
        unsigned char r[6];
        do {
            RAND_bytes(r, sizeof(r));
            snprintf(gen, sizeof(gen), "c%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4],
                     r[5]);
        } while (cert_find(a, gen) || slb_certstore_get(a->store, gen));
        id = gen;
    }
    if (cert_find(a, id) || slb_certstore_get(a->store, id))
        return slb_err_set(err, 400, "id_taken", "id", "a certificate with id \"%s\" exists", id);
    for (struct acert *o = a->certs; o; o = o->next)
        if (strcmp(o->name, name) == 0)
            return slb_err_set(err, 400, "name_taken", "name",
                               "a certificate named \"%s\" already exists (id %s)", name, o->id);
    struct acert *c =
        cert_add(a, id, name, account, domains, ktype, ch && strcmp(ch, "tls-alpn-01") == 0);
    if (!c)
        return slb_err_set(err, 500, "internal", "", "out of memory");
    if (cert_save(c) < 0)
        return slb_err_set(err, 500, "storage_failed", "", "cannot store the order");
    step(c);
    *out = pending_resource(c);
    return 0;
}

/* --- life --- */

static void load(struct slb_acme *a)
{
    DIR *d = opendir(a->dir);
    struct dirent *e;
    if (!d)
        return;
    /* Accounts first: certificates name them. */
    for (int pass = 0; pass < 2; pass++) {
        rewinddir(d);
        while ((e = readdir(d))) {
            size_t n = strlen(e->d_name);
            const char *prefix = pass ? "cert-" : "account-";
            if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || n < 6 ||
                strcmp(e->d_name + n - 5, ".json") != 0)
                continue;
            char path[900];
            snprintf(path, sizeof(path), "%s/%s", a->dir, e->d_name);
            json_t *doc = json_load_file(path, 0, NULL);
            struct slb_err err = {0};
            if (!doc) {
                slb_error("acme: cannot read %s", path);
                continue;
            }
            if (!pass) {
                const char *pem = json_string_value(json_object_get(doc, "key"));
                EVP_PKEY *k = pem ? key_from_pem(pem) : NULL;
                const char *name = json_string_value(json_object_get(doc, "name"));
                const char *dir = json_string_value(json_object_get(doc, "directory"));
                if (!k || !name || !dir ||
                    !account_add(a, name, dir, json_string_value(json_object_get(doc, "email")),
                                 json_string_value(json_object_get(doc, "ca_certificate")), k,
                                 json_string_value(json_object_get(doc, "kid")), &err)) {
                    slb_error("acme: %s is not a usable account file", path);
                    EVP_PKEY_free(k);
                }
            } else {
                const char *kt = json_string_value(json_object_get(doc, "key_type"));
                const char *ch = json_string_value(json_object_get(doc, "challenge"));
                const char *st = json_string_value(json_object_get(doc, "state"));
                const char *okey = json_string_value(json_object_get(doc, "order_key"));
                struct acert *c =
                    cert_add(a, json_string_value(json_object_get(doc, "id")),
                             json_string_value(json_object_get(doc, "name")),
                             json_string_value(json_object_get(doc, "account")),
                             json_object_get(doc, "domains"), kt ? slb_acme_key_type_parse(kt) : 0,
                             ch && strcmp(ch, "tls-alpn-01") == 0);
                if (!c) {
                    slb_error("acme: %s is not a usable order file", path);
                } else {
                    snprintf(c->order_url, sizeof(c->order_url), "%s",
                             json_string_value(json_object_get(doc, "order")));
                    snprintf(c->error, sizeof(c->error), "%s",
                             json_string_value(json_object_get(doc, "error")));
                    c->issued = json_is_true(json_object_get(doc, "issued")) &&
                                slb_certstore_get(a->store, c->id);
                    c->renew_at = json_integer_value(json_object_get(doc, "renew_at"));
                    c->key_pem = okey ? strdup(okey) : NULL;
                    c->state = c->issued                         ? ST_VALID
                               : st && strcmp(st, "failed") == 0 ? ST_FAILED
                                                                 : ST_PENDING;
                    /* A pending order resumes at once (its order URL says where it is). */
                    const char *tok = json_string_value(json_object_get(doc, "token"));
                    const char *cd = json_string_value(json_object_get(doc, "challenge_domain"));
                    if (c->order_url[0] && tok && cd && strlen(tok) < sizeof(c->token) &&
                        strlen(cd) < sizeof(c->chall_domain)) {
                        snprintf(c->token, sizeof(c->token), "%s", tok);
                        snprintf(c->chall_domain, sizeof(c->chall_domain), "%s", cd);
                        a->publish = true;
                    }
                    if (c->order_url[0])
                        slb_info("acme: certificate %s (%s): resuming order %s", c->id, c->name,
                                 c->order_url);
                    if (!c->issued || c->order_url[0])
                        c->renew_at = 0;
                    else
                        renew_knob(c);
                }
            }
            json_decref(doc);
        }
    }
    closedir(d);
}

struct slb_acme *slb_acme_new(struct slb_certstore *store, struct slb_httpc *httpc,
                              const char *state_dir, slb_acme_stored_cb stored, void *data,
                              struct slb_err *err)
{
    struct slb_acme *a = calloc(1, sizeof(*a));
    if (!a) {
        slb_err_set(err, 500, "internal", "", "out of memory");
        return NULL;
    }
    a->store = store;
    a->httpc = httpc;
    a->stored = stored;
    a->data = data;
    snprintf(a->dir, sizeof(a->dir), "%s/acme", state_dir);
    if (mkdir(a->dir, 0700) < 0 && errno != EEXIST) {
        slb_err_set(err, 500, "state_dir", a->dir, "cannot create %s: %s", a->dir, strerror(errno));
        free(a);
        return NULL;
    }
    slb_fs_remove_leftovers(a->dir);
    load(a);
    if (a->publish)
        publish(a); /* before the first request of a restarted order */
    return a;
}

static void cert_free(struct acert *c)
{
    if (c->req)
        slb_httpc_cancel(c->req);
    for (size_t i = 0; i < c->ndomains; i++)
        free(c->domains[i]);
    free(c->domains);
    json_decref(c->authzs);
    if (c->key_pem)
        OPENSSL_cleanse(c->key_pem, strlen(c->key_pem));
    free(c->key_pem);
    free(c);
}

void slb_acme_free(struct slb_acme *a)
{
    if (!a)
        return;
    while (a->certs) {
        struct acert *c = a->certs;
        a->certs = c->next;
        cert_free(c);
    }
    while (a->accounts) {
        struct account *ac = a->accounts;
        a->accounts = ac->next;
        EVP_PKEY_free(ac->key);
        free(ac->ca_pem);
        free(ac);
    }
    slb_acme_challenges_reap(0, true);
    free(a);
}

void slb_acme_tick(struct slb_acme *a)
{
    uint64_t now = slb_mono_ms();
    int64_t wall = time(NULL);
    for (struct acert **pp = &a->certs; *pp;) {
        struct acert *c = *pp;
        if (c->issued && !slb_certstore_get(a->store, c->id)) {
            /* Deleted through the API: the ACME certificate ends with it. */
            char file[200];
            snprintf(file, sizeof(file), "cert-%s.json", c->id);
            slb_fs_remove(a->dir, file);
            slb_info("acme: certificate %s (%s) deleted: no more renewals", c->id, c->name);
            *pp = c->next;
            cert_free(c);
            a->publish = true;
            continue;
        }
        pp = &c->next;
        if (c->req || now < c->next_ms)
            continue;
        if (c->working || c->state == ST_FAILED || !c->issued || wall >= c->renew_at)
            step(c);
    }
    if (a->publish)
        publish(a);
    slb_acme_challenges_reap(now, false);
}

size_t slb_acme_count(struct slb_acme *a)
{
    size_t n = 0;
    for (struct acert *c = a ? a->certs : NULL; c; c = c->next)
        n++;
    return n;
}

bool slb_acme_info_at(struct slb_acme *a, size_t i, struct slb_acme_info *out)
{
    struct acert *c = a ? a->certs : NULL;
    for (; c && i; c = c->next)
        i--;
    if (!c)
        return false;
    *out = (struct slb_acme_info){.id = c->id,
                                  .name = c->name,
                                  .state = state_names[c->state],
                                  .renew_at = c->issued ? c->renew_at : 0,
                                  .failures = c->failures};
    return true;
}
