/* SPDX-License-Identifier: Apache-2.0 */
/* The certificate store: the in-memory set of validated certificates, its durable copy in
 * DIR/certs/<id>.json, and the create/replace/CRL/delete transactions that keep both in step
 * (disk first, then memory, so a failed write changes nothing). */
#include "cert/store.h"
#include "cert/load.h"
#include "cert/ocsp.h"
#include "cert/validate.h"
#include "core/log.h"
#include "state/backend.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#define DAY 86400

/* One certificate as the store tracks it. The store holds one reference to cert; the warning
 * state belongs to this version and starts over when a replace publishes a new one. */
struct cert_entry {
    struct slb_cert *cert;
    int64_t created;   /* unix seconds of the first upload; kept across replaces */
    uint64_t rev;      /* the revision of its document in the backend */
    int expiry_warned; /* highest expiry threshold logged: see tick_expiry() */
    bool crl_stale_warned;
};

/* Owned by the control thread, from slb_certstore_open to slb_certstore_free. entries is
 * sorted by id so listing needs no sort and lookups stay simple. */
struct slb_certstore {
    struct slb_backend *b; /* documents "certs/<id>" */
    bool owns_backend;
    char dir[4096]; /* where the certificates are, for messages ("DIR/certs") */
    struct cert_entry *v;
    size_t n, cap;
    bool readonly; /* opened to validate: nothing created or changed, nothing logged */
    bool loading;  /* slb_certstore_open_backend is filling v: unsorted until load_sort */
    /* Positions in v by id hash (open addressing, IX_EMPTY for none), remade after v moved:
     * every configuration change looks up each listener's certificate ids. */
    uint32_t *ix;
    size_t ix_mask;
    bool ix_dirty;
    /* What changed, for the caches of configuration and TLS contexts: ids_gen counts changes
     * of the set of ids (and so of types), changes every new certificate object published,
     * log the ids of the last SLB_CERTSTORE_LOG of those. */
    uint64_t ids_gen, changes;
    char log[SLB_CERTSTORE_LOG][64];
};

static void changed(struct slb_certstore *s, const char *id, bool ids)
{
    s->ids_gen += ids;
    s->changes++;
    snprintf(s->log[s->changes % SLB_CERTSTORE_LOG], sizeof(s->log[0]), "%s", id);
}

uint64_t slb_certstore_ids_gen(const struct slb_certstore *s)
{
    return s ? s->ids_gen + 1 : 0;
}

uint64_t slb_certstore_changes(const struct slb_certstore *s)
{
    return s ? s->changes : 0;
}

const char *slb_certstore_change_id(const struct slb_certstore *s, uint64_t n)
{
    if (!s || n == 0 || n > s->changes || s->changes - n >= SLB_CERTSTORE_LOG)
        return NULL;
    return s->log[n % SLB_CERTSTORE_LOG];
}

#define IX_EMPTY UINT32_MAX

/* ---------------------------------------------------------------------------------------------
 * struct slb_cert
 * ------------------------------------------------------------------------------------------- */

static void cert_free(struct slb_cert *c)
{
    X509_free(c->leaf);
    sk_X509_pop_free(c->chain, X509_free);
    EVP_PKEY_free(c->key);
    sk_X509_CRL_pop_free(c->crls, X509_CRL_free);
    sk_X509_pop_free(c->crl_issuers, X509_free);
    for (size_t i = 0; i < c->nsans; i++)
        free(c->sans[i]);
    free(c->sans);
    slb_ocsp_cert_free(c);
    free(c);
}

void slb_cert_ref(struct slb_cert *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void slb_cert_unref(struct slb_cert *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        cert_free(c);
}

static void crl_set_clear(struct slb_crl_set *cs)
{
    sk_X509_CRL_pop_free(cs->crls, X509_CRL_free);
    sk_X509_pop_free(cs->issuers, X509_free);
    cs->crls = NULL;
    cs->issuers = NULL;
}

/* New references to c's CRL set; false on allocation failure (cs is then empty). */
static bool crl_set_copy(const struct slb_cert *c, struct slb_crl_set *cs)
{
    cs->crls = NULL;
    cs->issuers = NULL;
    if (!c->crls)
        return true;
    cs->crls = sk_X509_CRL_new_reserve(NULL, sk_X509_CRL_num(c->crls));
    cs->issuers = X509_chain_up_ref(c->crl_issuers);
    if (!cs->crls || !cs->issuers) {
        crl_set_clear(cs);
        return false;
    }
    for (int i = 0; i < sk_X509_CRL_num(c->crls); i++) {
        X509_CRL *crl = sk_X509_CRL_value(c->crls, i);
        X509_CRL_up_ref(crl);
        sk_X509_CRL_push(cs->crls, crl); /* reserved above: cannot fail */
    }
    return true;
}

struct slb_cert *slb_cert_build(const char *id, const char *name, enum slb_cert_type type,
                                uint64_t version, struct slb_certval_material *m,
                                struct slb_crl_set *cs)
{
    struct slb_cert *c = calloc(1, sizeof(*c));
    if (!c) {
        slb_certval_material_clear(m);
        if (cs)
            crl_set_clear(cs);
        return NULL;
    }
    atomic_init(&c->refs, 1);
    snprintf(c->id, sizeof(c->id), "%s", id);
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->type = type;
    c->version = version;
    c->leaf = m->leaf;
    c->chain = m->chain;
    c->key = m->key;
    if (cs) {
        c->crls = cs->crls;
        c->crl_issuers = cs->issuers;
        cs->crls = NULL;
        cs->issuers = NULL;
    }
    snprintf(c->key_type, sizeof(c->key_type), "%s", m->key_type);
    memset(m, 0, sizeof(*m));
    c->not_before = slb_certval_time(X509_get0_notBefore(c->leaf));
    c->not_after = slb_certval_time(X509_get0_notAfter(c->leaf));
    if (slb_certval_fingerprint(c->leaf, c->fingerprint) != 0 ||
        slb_certval_sans(c->leaf, &c->sans, &c->nsans) != 0) {
        cert_free(c);
        return NULL;
    }
    return c;
}

/* The same material under a new version with another CRL set (set_crl). */
/* A copy of old's material under name at version, with the CRL set cs (consumed). */
static struct slb_cert *cert_copy(const struct slb_cert *old, const char *name, uint64_t version,
                                  struct slb_crl_set *cs)
{
    struct slb_certval_material m = {0};
    X509_up_ref(old->leaf);
    m.leaf = old->leaf;
    m.chain = X509_chain_up_ref(old->chain);
    if (old->key && EVP_PKEY_up_ref(old->key))
        m.key = old->key;
    snprintf(m.key_type, sizeof(m.key_type), "%s", old->key_type);
    if (!m.chain) {
        slb_certval_material_clear(&m);
        crl_set_clear(cs);
        return NULL;
    }
    return slb_cert_build(old->id, name, old->type, version, &m, cs);
}

static struct slb_cert *cert_with_crls(const struct slb_cert *old, struct slb_crl_set *cs)
{
    return cert_copy(old, old->name, old->version + 1, cs);
}

static json_t *time_json(int64_t t)
{
    char buf[32];
    if (t == INT64_MIN)
        return json_null();
    slb_certval_rfc3339(t, buf, sizeof(buf));
    return json_string(buf);
}

static int crl_revoked(X509_CRL *crl)
{
    STACK_OF(X509_REVOKED) *rev = X509_CRL_get_REVOKED(crl);
    int n = rev ? sk_X509_REVOKED_num(rev) : 0;
    return n < 0 ? 0 : n;
}

/* {this_update, next_update, revoked, crls: [{issuer, this_update, next_update, revoked}]}:
 * the summary is the oldest this_update, the earliest next_update (when the set first needs a
 * refresh) and the sum of the entries; null without CRLs. */
static json_t *crl_json(STACK_OF(X509_CRL) * crls)
{
    if (!crls || sk_X509_CRL_num(crls) == 0)
        return json_null();
    int64_t first = INT64_MAX, next = INT64_MAX;
    json_int_t revoked = 0;
    json_t *list = json_array();
    for (int i = 0; list && i < sk_X509_CRL_num(crls); i++) {
        X509_CRL *crl = sk_X509_CRL_value(crls, i);
        int64_t tu = slb_certval_time(X509_CRL_get0_lastUpdate(crl));
        int64_t nu = X509_CRL_get0_nextUpdate(crl) ? slb_certval_time(X509_CRL_get0_nextUpdate(crl))
                                                   : INT64_MIN;
        char *iss = slb_certval_name_string(X509_CRL_get_issuer(crl));
        json_t *o =
            iss ? json_pack("{s:s, s:o, s:o, s:I}", "issuer", iss, "this_update", time_json(tu),
                            "next_update", time_json(nu), "revoked", (json_int_t)crl_revoked(crl))
                : NULL;
        free(iss);
        if (json_array_append_new(list, o) != 0) {
            json_decref(list);
            return NULL;
        }
        if (tu != INT64_MIN && tu < first)
            first = tu;
        if (nu != INT64_MIN && nu < next)
            next = nu;
        revoked += crl_revoked(crl);
    }
    if (!list)
        return NULL;
    return json_pack("{s:o, s:o, s:I, s:o}", "this_update",
                     time_json(first == INT64_MAX ? INT64_MIN : first), "next_update",
                     time_json(next == INT64_MAX ? INT64_MIN : next), "revoked", revoked, "crls",
                     list);
}

json_t *slb_cert_to_json(const struct slb_cert *c)
{
    char *subject = slb_certval_name_string(X509_get_subject_name(c->leaf));
    char *issuer = slb_certval_name_string(X509_get_issuer_name(c->leaf));
    json_t *sans = json_array();
    json_t *o = NULL;
    if (!subject || !issuer || !sans)
        goto done;
    for (size_t i = 0; i < c->nsans; i++)
        if (json_array_append_new(sans, json_string(c->sans[i])) != 0)
            goto done;
    /* Deliberately no key material: the private key is never served back. */
    o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:O, s:o, s:o, s:s, s:s, s:I, s:o}", "id", c->id,
                  "name", c->name, "type", c->type == SLB_CERT_CA ? "ca" : "server", "subject",
                  subject, "issuer", issuer, "sans", sans, "not_before", time_json(c->not_before),
                  "not_after", time_json(c->not_after), "fingerprint_sha256", c->fingerprint,
                  "key_type", c->key_type, "version", (json_int_t)c->version, "crl",
                  crl_json(c->crls));
done:
    json_decref(sans);
    free(subject);
    free(issuer);
    return o;
}

/* ---------------------------------------------------------------------------------------------
 * Entries
 * ------------------------------------------------------------------------------------------- */

/* The index where id is or would be inserted: entries are sorted by id, so a lookup among
 * thousands of certificates (every listener's ids at each configuration change) is a binary
 * search. */
static size_t lower_bound(const struct slb_certstore *s, const char *id)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(s->v[mid].cert->id, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static uint64_t id_hash(const char *id)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 0x100000001b3ULL;
    return h ^ (h >> 31);
}

static bool ix_rebuild(struct slb_certstore *s)
{
    size_t slots = 16;
    while (slots < 2 * s->n + 2)
        slots *= 2;
    uint32_t *ix = malloc(slots * sizeof(*ix));
    if (!ix)
        return false;
    memset(ix, 0xff, slots * sizeof(*ix));
    for (size_t k = 0; k < s->n; k++) {
        size_t i = id_hash(s->v[k].cert->id) & (slots - 1);
        while (ix[i] != IX_EMPTY)
            i = (i + 1) & (slots - 1);
        ix[i] = (uint32_t)k;
    }
    free(s->ix);
    s->ix = ix;
    s->ix_mask = slots - 1;
    s->ix_dirty = false;
    return true;
}

static struct cert_entry *find(struct slb_certstore *s, const char *id)
{
    if ((s->ix_dirty || !s->ix) && !s->loading && !ix_rebuild(s)) {
        size_t i = lower_bound(s, id); /* no memory for the index: binary search */
        return i < s->n && strcmp(s->v[i].cert->id, id) == 0 ? &s->v[i] : NULL;
    }
    if (s->loading) {
        for (size_t k = 0; k < s->n; k++)
            if (strcmp(s->v[k].cert->id, id) == 0)
                return &s->v[k];
        return NULL;
    }
    for (size_t i = id_hash(id) & s->ix_mask; s->ix[i] != IX_EMPTY; i = (i + 1) & s->ix_mask) {
        if (strcmp(s->v[s->ix[i]].cert->id, id) == 0)
            return &s->v[s->ix[i]];
    }
    return NULL;
}

static struct cert_entry *find_name(struct slb_certstore *s, const char *name, const char *skip_id)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i].cert->name, name) == 0 &&
            (!skip_id || strcmp(s->v[i].cert->id, skip_id) != 0))
            return &s->v[i];
    return NULL;
}

/* Insert keeping ids sorted; takes over the caller's reference. */
static int insert(struct slb_certstore *s, struct slb_cert *c, int64_t created)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        struct cert_entry *v = realloc(s->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    /* While loading, entries are appended and sorted once at the end (load_sort). */
    size_t at = s->loading ? s->n : lower_bound(s, c->id);
    memmove(&s->v[at + 1], &s->v[at], (s->n - at) * sizeof(*s->v));
    s->ix_dirty = true;
    changed(s, c->id, true);
    s->v[at] = (struct cert_entry){.cert = c, .created = created};
    s->n++;
    return 0;
}

int slb_certstore_type_of(struct slb_certstore *s, const char *id)
{
    struct cert_entry *e = find(s, id);
    return e ? (int)e->cert->type : 0;
}

struct slb_cert *slb_certstore_get(struct slb_certstore *s, const char *id)
{
    struct cert_entry *e = find(s, id);
    return e ? e->cert : NULL;
}

json_t *slb_certstore_list(struct slb_certstore *s)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < s->n; i++) {
        if (json_array_append_new(a, slb_cert_to_json(s->v[i].cert)) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* ---------------------------------------------------------------------------------------------
 * Files
 * ------------------------------------------------------------------------------------------- */

/* PEM text of what bio holds as a new JSON string. */
static json_t *bio_string(BIO *bio)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    return n > 0 ? json_stringn(data, (size_t)n) : NULL;
}

/* The bundle file: everything needed to rebuild the certificate, in the formats we parse on
 * upload so loading runs the same validation. */
static json_t *file_json(const struct slb_cert *c, int64_t created)
{
    json_t *doc = NULL, *cert_pem = NULL, *key_pem = NULL, *crl_pem = NULL;
    BIO *cb = BIO_new(BIO_s_mem());
    /* Secure memory BIO: its buffer is wiped on free. */
    BIO *kb = BIO_new(BIO_s_secmem());
    BIO *rb = BIO_new(BIO_s_mem());
    ERR_clear_error();
    if (!cb || !kb || !rb || PEM_write_bio_X509(cb, c->leaf) != 1)
        goto done;
    for (int i = 0; i < sk_X509_num(c->chain); i++)
        if (PEM_write_bio_X509(cb, sk_X509_value(c->chain, i)) != 1)
            goto done;
    cert_pem = bio_string(cb);
    if (c->key) {
        /* PKCS#8, unencrypted: the file is 0600 in a 0700 directory. */
        if (PEM_write_bio_PrivateKey(kb, c->key, NULL, NULL, 0, NULL, NULL) != 1)
            goto done;
        key_pem = bio_string(kb);
    } else {
        key_pem = json_null();
    }
    if (c->crls) {
        /* The same PEM an upload gives: the intermediates, then the CRLs. */
        for (int i = 0; i < sk_X509_num(c->crl_issuers); i++)
            if (PEM_write_bio_X509(rb, sk_X509_value(c->crl_issuers, i)) != 1)
                goto done;
        for (int i = 0; i < sk_X509_CRL_num(c->crls); i++)
            if (PEM_write_bio_X509_CRL(rb, sk_X509_CRL_value(c->crls, i)) != 1)
                goto done;
        crl_pem = bio_string(rb);
    } else {
        crl_pem = json_null();
    }
    if (!cert_pem || !key_pem || !crl_pem)
        goto done;
    doc = json_pack("{s:s, s:s, s:s, s:I, s:O, s:O, s:O, s:I}", "id", c->id, "name", c->name,
                    "type", c->type == SLB_CERT_CA ? "ca" : "server", "version",
                    (json_int_t)c->version, "certificate", cert_pem, "private_key", key_pem, "crl",
                    crl_pem, "created", (json_int_t)created);
done:
    ERR_clear_error();
    json_decref(cert_pem);
    /* On success doc shares the key string and slb_certload_doc_free() wipes it later. */
    if (!doc && json_is_string(key_pem))
        OPENSSL_cleanse((char *)json_string_value(key_pem), json_string_length(key_pem));
    json_decref(key_pem);
    json_decref(crl_pem);
    BIO_free(cb);
    BIO_free(kb);
    BIO_free(rb);
    return doc;
}

static void cert_key(const char *id, char *key, size_t size)
{
    snprintf(key, size, "%s%s", SLB_DOC_CERTS, id);
}

/* A failed write or removal of certificate id's document (key; name for where) as the API
 * answers it: 503 while etcd is away, 409 when another node changed it, else 500. */
static int store_fail(struct slb_certstore *s, const char *key, const char *name, const char *id,
                      const char *verb, int rc, struct slb_err *err)
{
    char where[4400];
    if (rc == SLB_BACKEND_EUNAVAILABLE)
        return slb_err_set(err, 503, "cluster_unavailable", name,
                           "etcd cannot be reached: certificates cannot change now; retry later");
    if (rc == SLB_ECONFLICT)
        return slb_err_set(err, 409, "conflict", name,
                           "certificate %s was changed by another node since it was read; read it "
                           "again and retry",
                           id);
    slb_backend_where(s->b, key, where, sizeof(where));
    return slb_err_set(err, 500, "storage_failed", name, "cannot %s %s: %s", verb, where,
                       slb_strerror(rc));
}

/* Store c's document. *rev: the revision the change was based on (SLB_REV_ABSENT for a new
 * certificate), compared when others write the backend too (a cluster); then the new one. */
static int store_write(struct slb_certstore *s, const struct slb_cert *c, int64_t created,
                       uint64_t *rev, struct slb_err *err)
{
    char name[80], key[SLB_DOC_KEY_MAX];
    snprintf(name, sizeof(name), "%s.json", c->id);
    cert_key(c->id, key, sizeof(key));
    json_t *doc = file_json(c, created);
    char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    if (doc)
        slb_certload_doc_free(doc);
    if (!text)
        return slb_err_set(err, 500, "storage_failed", name,
                           "cannot encode certificate %s for storage (out of memory)", c->id);
    size_t len = strlen(text);
    uint64_t expect = s->b->ops->shared ? *rev : SLB_REV_ANY;
    int rc = slb_backend_put(s->b, key, text, len, expect, rev);
    OPENSSL_cleanse(text, len);
    free(text);
    return rc < 0 ? store_fail(s, key, name, c->id, "write", rc, err) : 0;
}

/* Remove certificate id's document; 0 or a message in err. */
static int store_remove(struct slb_certstore *s, const char *id, uint64_t rev, struct slb_err *err)
{
    char name[80], key[SLB_DOC_KEY_MAX];
    snprintf(name, sizeof(name), "%s.json", id);
    cert_key(id, key, sizeof(key));
    int rc = slb_backend_del(s->b, key, s->b->ops->shared ? rev : SLB_REV_ANY);
    return rc < 0 && rc != -ENOENT ? store_fail(s, key, name, id, "remove", rc, err) : 0;
}

/* Add a parsed certificate (the reference is the store's from here) and warn about its dates. */
static int doc_add(struct slb_certstore *s, const char *path, struct slb_cert *c, int64_t created,
                   struct slb_err *err)
{
    if (insert(s, c, created) != 0) {
        slb_cert_unref(c);
        return slb_certload_fail(err, path, "internal", "out of memory");
    }
    int64_t now = time(NULL);
    char when[32];
    if (s->readonly)
        return 0;
    if (c->not_after < now) {
        slb_certval_rfc3339(c->not_after, when, sizeof(when));
        slb_warn("certificate %s (%s) expired on %s; replace it", c->id, c->name, when);
        s->v[s->n - 1].expiry_warned = 4;
    } else if (c->not_before > now) {
        slb_certval_rfc3339(c->not_before, when, sizeof(when));
        slb_warn("certificate %s (%s) is not valid before %s", c->id, c->name, when);
    }
    return 0;
}

/* slb_certload_all's receiver: entries are appended while loading, sorted by load_sort. */
static int load_add(void *arg, const char *path, struct slb_cert *c, int64_t created, uint64_t rev,
                    struct slb_err *err)
{
    struct slb_certstore *s = arg;
    int rc = doc_add(s, path, c, created, err);
    if (rc == 0)
        s->v[s->n - 1].rev = rev;
    return rc;
}

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct cert_entry *)a)->cert->id,
                  ((const struct cert_entry *)b)->cert->id);
}

static int by_name(const void *a, const void *b)
{
    const struct cert_entry *x = *(const struct cert_entry *const *)a;
    const struct cert_entry *y = *(const struct cert_entry *const *)b;
    int c = strcmp(x->cert->name, y->cert->name);
    return c ? c : strcmp(x->cert->id, y->cert->id);
}

/* After loading: sort by id, and refuse two files with the same name, with one sort rather
 * than a search per file (thousands of certificates at start-up). */
static int load_sort(struct slb_certstore *s, struct slb_err *err, bool *failed)
{
    if (s->n < 2)
        return 0;
    qsort(s->v, s->n, sizeof(*s->v), by_id);
    s->ix_dirty = true;
    const struct cert_entry **byname = malloc(s->n * sizeof(*byname));
    if (!byname)
        return -ENOMEM;
    for (size_t i = 0; i < s->n; i++)
        byname[i] = &s->v[i];
    qsort(byname, s->n, sizeof(*byname), by_name);
    int rc = 0;
    for (size_t i = 1; i < s->n && rc == 0; i++) {
        if (strcmp(byname[i - 1]->cert->name, byname[i]->cert->name) != 0)
            continue;
        char path[4400], key[96];
        cert_key(byname[i]->cert->id, key, sizeof(key));
        slb_backend_where(s->b, key, path, sizeof(path));
        rc = slb_certload_fail(err, path, "name_taken", "the name \"%s\" is used by another file",
                               byname[i]->cert->name);
        *failed = true;
    }
    free(byname);
    return rc;
}

struct slb_certstore *slb_certstore_open_backend(struct slb_backend *b, bool readonly,
                                                 struct slb_err *err)
{
    struct slb_certstore *s = calloc(1, sizeof(*s));
    if (!s) {
        slb_err_set(err, 500, "internal", "", "out of memory");
        return NULL;
    }
    s->b = b;
    s->readonly = readonly;
    slb_backend_where(b, SLB_DOC_CERTS, s->dir, sizeof(s->dir));
    bool failed = false;
    s->loading = true;
    int rc = slb_certload_all(b, load_add, s, err, &failed);
    s->loading = false;
    if (rc == 0)
        rc = load_sort(s, err, &failed);
    if (rc != 0) {
        if (rc == -ENOMEM && !failed)
            slb_err_set(err, 500, "internal", s->dir, "out of memory");
        else if (!failed)
            slb_err_set(err, 500, "state_dir", s->dir, "cannot open %s: %s", s->dir,
                        slb_strerror(rc));
        slb_certstore_free(s);
        return NULL;
    }
    if (!readonly)
        slb_info("loaded %zu certificate(s) from %s", s->n, s->dir);
    return s;
}

static struct slb_certstore *store_open(const char *state_dir, bool readonly, struct slb_err *err)
{
    struct slb_backend *b = slb_backend_dir_new(state_dir, readonly, err);
    struct slb_certstore *s = b && slb_backend_dir_prepare(b, err) == 0
                                  ? slb_certstore_open_backend(b, readonly, err)
                                  : NULL;
    if (!s) {
        slb_backend_free(b);
        return NULL;
    }
    s->owns_backend = true;
    return s;
}

struct slb_certstore *slb_certstore_open(const char *state_dir, struct slb_err *err)
{
    return store_open(state_dir, false, err);
}

struct slb_certstore *slb_certstore_open_readonly(const char *state_dir, struct slb_err *err)
{
    return store_open(state_dir, true, err);
}

void slb_certstore_free(struct slb_certstore *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        slb_cert_unref(s->v[i].cert);
    free(s->v);
    free(s->ix);
    if (s->owns_backend)
        slb_backend_free(s->b);
    free(s);
}

/* ---------------------------------------------------------------------------------------------
 * Transactions
 * ------------------------------------------------------------------------------------------- */

static int new_id(struct slb_certstore *s, char id[14], struct slb_err *err)
{
    static const char hex[] = "0123456789abcdef";
    for (int attempt = 0; attempt < 16; attempt++) {
        unsigned char r[6];
        if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
            return slb_err_set(err, 500, "internal", "id", "getrandom failed: %s", strerror(errno));
        id[0] = 'c';
        for (int i = 0; i < 6; i++) {
            id[1 + 2 * i] = hex[r[i] >> 4];
            id[2 + 2 * i] = hex[r[i] & 15];
        }
        id[13] = '\0';
        if (!find(s, id))
            return 0;
    }
    return slb_err_set(err, 500, "internal", "id", "cannot find a free certificate id");
}

static const char *type_text(enum slb_cert_type t)
{
    return t == SLB_CERT_SERVER ? "server" : t == SLB_CERT_CA ? "ca" : NULL;
}

int slb_certstore_create(struct slb_certstore *s, const json_t *body, struct slb_cert **out,
                         struct slb_err *err)
{
    struct slb_certval_upload up;
    if (out)
        *out = NULL;
    int rc = slb_certval_body(body, SLB_CERT_NONE, &up, err);
    return rc ? rc : slb_certstore_create_material(s, &up, out, err);
}

int slb_certstore_create_material(struct slb_certstore *s, const struct slb_certval_upload *in,
                                  struct slb_cert **out, struct slb_err *err)
{
    struct slb_certval_upload up = *in;
    struct slb_certval_material m;
    char id[64];
    int64_t now = time(NULL);
    if (out)
        *out = NULL;
    int rc = slb_certval_upload_check(&up, type_text(in->type), SLB_CERT_NONE, err);
    if (rc)
        return rc;
    if (find_name(s, up.name, NULL))
        return slb_err_set(err, 400, "name_taken", "name",
                           "a certificate named \"%s\" already exists (id %s); choose another "
                           "name or replace that certificate",
                           up.name, find_name(s, up.name, NULL)->cert->id);
    if (up.id && find(s, up.id))
        return slb_err_set(err, 400, "id_taken", "id",
                           "a certificate with id \"%s\" already exists; choose another id or "
                           "replace it with PUT",
                           up.id);
    rc = slb_certval_material(up.type, up.certificate, up.certificate_len, up.private_key,
                              up.private_key_len, now, 0, &m, err);
    if (rc)
        return rc;
    if (up.id)
        snprintf(id, sizeof(id), "%s", up.id);
    else if ((rc = new_id(s, id, err)) != 0) {
        slb_certval_material_clear(&m);
        return rc;
    }
    bool reordered = m.reordered;
    struct slb_cert *c = slb_cert_build(id, up.name, up.type, 1, &m, NULL);
    if (!c)
        return slb_err_set(err, 500, "internal", "", "out of memory");
    uint64_t rev = SLB_REV_ABSENT;
    if ((rc = store_write(s, c, now, &rev, err)) != 0) {
        slb_cert_unref(c);
        return rc;
    }
    if (insert(s, c, now) != 0) {
        /* The file is written but memory is short: take the file back so disk and memory
         * agree, and report the failure. */
        struct slb_err ignored = {0};
        store_remove(s, c->id, rev, &ignored);
        slb_cert_unref(c);
        return slb_err_set(err, 500, "internal", "", "out of memory");
    }
    find(s, c->id)->rev = rev;
    slb_info("certificate %s (%s) created: %s, %s, sha256 %s%s", c->id, c->name,
             c->type == SLB_CERT_CA ? "ca" : "server", c->key_type, c->fingerprint,
             reordered ? " (chain reordered to leaf-first order)" : "");
    if (out)
        *out = c;
    return 0;
}

/* Publish c in place of e's certificate: disk first, then memory. Takes c's reference. */
static int publish(struct slb_certstore *s, struct cert_entry *e, struct slb_cert *c,
                   struct slb_err *err)
{
    uint64_t rev = e->rev;
    int rc = store_write(s, c, e->created, &rev, err);
    if (rc) {
        slb_cert_unref(c);
        return rc;
    }
    e->rev = rev;
    struct slb_cert *old = e->cert;
    e->cert = c;
    changed(s, c->id, false);
    e->expiry_warned = 0;
    e->crl_stale_warned = false;
    /* Holders of the old version (TLS contexts, API responses) keep it alive. */
    slb_cert_unref(old);
    return 0;
}

static int not_found(struct slb_err *err, const char *id)
{
    return slb_err_set(err, 404, "not_found", "id", "no certificate with id \"%s\"", id);
}

int slb_certstore_replace(struct slb_certstore *s, const char *id, const json_t *body,
                          struct slb_cert **out, struct slb_err *err)
{
    struct slb_certval_upload up;
    struct cert_entry *e = find(s, id);
    if (out)
        *out = NULL;
    if (!e)
        return not_found(err, id);
    int rc = slb_certval_body(body, e->cert->type, &up, err);
    return rc ? rc : slb_certstore_replace_material(s, id, &up, out, err);
}

int slb_certstore_replace_material(struct slb_certstore *s, const char *id,
                                   const struct slb_certval_upload *in, struct slb_cert **out,
                                   struct slb_err *err)
{
    struct slb_certval_upload up = *in;
    struct slb_certval_material m;
    int64_t now = time(NULL);
    struct cert_entry *e = find(s, id);
    if (out)
        *out = NULL;
    if (!e)
        return not_found(err, id);
    const struct slb_cert *old = e->cert;
    int rc = slb_certval_upload_check(&up, type_text(in->type), old->type, err);
    if (rc)
        return rc;
    if (up.id && strcmp(up.id, id) != 0)
        return slb_err_set(err, 400, "invalid_body", "id",
                           "the body's id \"%s\" differs from the certificate being replaced "
                           "(\"%s\"); omit id or give the same one",
                           up.id, id);
    const char *name = up.name ? up.name : old->name;
    /* Its own name is unique already: only a new one is looked for among the others. */
    if (strcmp(name, old->name) != 0 && find_name(s, name, id))
        return slb_err_set(err, 400, "name_taken", "name",
                           "another certificate is named \"%s\"; choose another name", name);
    rc = slb_certval_material(up.type, up.certificate, up.certificate_len, up.private_key,
                              up.private_key_len, now, 0, &m, err);
    if (rc)
        return rc;
    /* A renewed CA with the same name and key still vouches for its CRLs (and for the
     * intermediates that signed some); another CA does not, and serving a CRL it did not sign
     * would reject every client. The set is kept whole or dropped whole. */
    struct slb_crl_set cs = {0};
    if (old->crls) {
        struct slb_err ignored = {0};
        if (slb_certval_crls_check(m.leaf, old->crls, old->crl_issuers, 0, SLB_CERTVAL_NO_DATES,
                                   &ignored) != 0)
            slb_info("certificate %s: the new CA does not vouch for the stored CRLs (%s); CRLs "
                     "dropped",
                     id, ignored.msg);
        else if (!crl_set_copy(old, &cs)) {
            slb_certval_material_clear(&m);
            return slb_err_set(err, 500, "internal", "", "out of memory");
        }
    }
    struct slb_cert *c = slb_cert_build(id, name, old->type, old->version + 1, &m, &cs);
    if (!c)
        return slb_err_set(err, 500, "internal", "", "out of memory");
    if ((rc = publish(s, e, c, err)) != 0)
        return rc;
    slb_info("certificate %s (%s) replaced: version %llu, sha256 %s", c->id, c->name,
             (unsigned long long)c->version, c->fingerprint);
    if (out)
        *out = c;
    return 0;
}

int slb_certstore_set_crl(struct slb_certstore *s, const char *id, const char *pem,
                          struct slb_err *err)
{
    struct cert_entry *e = find(s, id);
    struct slb_crl_set cs = {0};
    if (!e)
        return not_found(err, id);
    if (e->cert->type != SLB_CERT_CA)
        return slb_err_set(err, 400, "not_a_ca", "id",
                           "certificate %s is a server certificate; a CRL belongs to a ca "
                           "certificate",
                           id);
    if (!pem)
        return slb_err_set(err, 400, "invalid_crl", "crl", "the CRL is missing");
    int rc = slb_certval_crls(pem, strlen(pem), e->cert->leaf, time(NULL), 0, &cs.crls, &cs.issuers,
                              err);
    if (rc)
        return rc;
    struct slb_cert *c = cert_with_crls(e->cert, &cs);
    if (!c)
        return slb_err_set(err, 500, "internal", "", "out of memory");
    if ((rc = publish(s, e, c, err)) != 0)
        return rc;
    int revoked = 0;
    for (int i = 0; i < sk_X509_CRL_num(c->crls); i++)
        revoked += crl_revoked(sk_X509_CRL_value(c->crls, i));
    slb_info("certificate %s (%s): %d CRL(s) set, %d revoked, version %llu", c->id, c->name,
             sk_X509_CRL_num(c->crls), revoked, (unsigned long long)c->version);
    return 0;
}

int slb_certstore_rename(struct slb_certstore *s, const char *id, const char *name,
                         struct slb_err *err)
{
    struct cert_entry *e = find(s, id);
    if (!e)
        return not_found(err, id);
    if (!name || !slb_certval_name_ok(name))
        return slb_err_set(err, 400, "invalid_value", "name",
                           "name: 1 to 127 bytes without control characters");
    if (find_name(s, name, id))
        return slb_err_set(err, 400, "name_taken", "name",
                           "another certificate is named \"%s\"; choose another name", name);
    struct slb_crl_set cs = {0};
    if (e->cert->crls && !crl_set_copy(e->cert, &cs))
        return slb_err_set(err, 500, "internal", "", "out of memory");
    char old[sizeof(e->cert->name)];
    snprintf(old, sizeof(old), "%s", e->cert->name);
    /* The material is unchanged, so is the version: TLS contexts need no rebuild. */
    struct slb_cert *c = cert_copy(e->cert, name, e->cert->version, &cs);
    if (!c)
        return slb_err_set(err, 500, "internal", "", "out of memory");
    int rc = publish(s, e, c, err);
    if (rc == 0)
        slb_info("certificate %s renamed from \"%s\" to \"%s\"", id, old, name);
    return rc;
}

int slb_certstore_delete(struct slb_certstore *s, const char *id, struct slb_err *err)
{
    struct cert_entry *e = find(s, id);
    if (!e)
        return not_found(err, id);
    int rc = store_remove(s, id, e->rev, err);
    if (rc < 0)
        return rc;
    struct slb_cert *c = e->cert;
    size_t at = (size_t)(e - s->v);
    memmove(&s->v[at], &s->v[at + 1], (s->n - at - 1) * sizeof(*s->v));
    s->n--;
    s->ix_dirty = true;
    changed(s, c->id, true);
    slb_info("certificate %s (%s) deleted", c->id, c->name);
    slb_cert_unref(c);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Periodic checks
 * ------------------------------------------------------------------------------------------- */

/* Thresholds, most severe last; expiry_warned is the index + 1 of the last one logged, so each
 * is logged once per version and a restart inside a window logs only the current one. */
int slb_certstore_adopt(struct slb_certstore *s, const char *id, const char *data, size_t len,
                        uint64_t rev, struct slb_err *err)
{
    struct cert_entry *e = find(s, id);
    struct slb_cert *old = NULL;
    int64_t created = 0;
    uint64_t prev_rev = 0;
    if (e) {
        old = e->cert;
        created = e->created;
        prev_rev = e->rev;
        size_t at = (size_t)(e - s->v);
        memmove(&s->v[at], &s->v[at + 1], (s->n - at - 1) * sizeof(*s->v));
        s->n--;
        s->ix_dirty = true;
        changed(s, id, true);
    }
    if (!data) {
        if (old)
            slb_info("certificate %s (%s) deleted by another node", old->id, old->name);
        slb_cert_unref(old);
        return 0;
    }
    char path[4400], key[SLB_DOC_KEY_MAX];
    cert_key(id, key, sizeof(key));
    slb_backend_where(s->b, key, path, sizeof(path));
    json_error_t jerr;
    json_t *doc = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    struct slb_cert *c = NULL;
    int64_t c_created = 0;
    int rc = doc && json_is_object(doc)
                 ? slb_certload_doc(path, id, doc, &c, &c_created, err)
                 : slb_certload_fail(err, path, "invalid_json", "not a JSON object");
    slb_certload_doc_free(doc);
    if (rc == 0 && find_name(s, c->name, NULL)) {
        rc = slb_certload_fail(err, path, "name_taken",
                               "the name \"%s\" is used by another certificate", c->name);
        slb_cert_unref(c);
    } else if (rc == 0) {
        rc = doc_add(s, path, c, c_created, err); /* takes c */
    }
    if (rc < 0) {
        if (old && insert(s, old, created) == 0) {
            find(s, id)->rev = prev_rev;
            old = NULL;
        }
        slb_cert_unref(old);
        return rc;
    }
    find(s, id)->rev = rev;
    slb_cert_unref(old);
    return 0;
}

static const struct {
    int64_t within;
    const char *text;
} expiry_levels[] = {{30 * DAY, "30 days"}, {7 * DAY, "7 days"}, {DAY, "1 day"}, {0, NULL}};

static void tick_expiry(struct cert_entry *e, int64_t now)
{
    const struct slb_cert *c = e->cert;
    int64_t left = c->not_after - now;
    int level = 0;
    char when[32];
    for (int i = 0; i < 4; i++)
        if ((i < 3 && left <= expiry_levels[i].within) || (i == 3 && left < 0))
            level = i + 1;
    if (level <= e->expiry_warned)
        return;
    e->expiry_warned = level;
    slb_certval_rfc3339(c->not_after, when, sizeof(when));
    if (level == 4)
        slb_warn("certificate %s (%s) has expired (%s); replace it", c->id, c->name, when);
    else
        slb_warn("certificate %s (%s) expires within %s, on %s; replace it soon", c->id, c->name,
                 expiry_levels[level - 1].text, when);
}

/* The first of c's CRLs past its next update at now, or NULL. */
static X509_CRL *crl_stale(const struct slb_cert *c, int64_t now)
{
    for (int i = 0; i < sk_X509_CRL_num(c->crls); i++) {
        X509_CRL *crl = sk_X509_CRL_value(c->crls, i);
        int64_t next = X509_CRL_get0_nextUpdate(crl)
                           ? slb_certval_time(X509_CRL_get0_nextUpdate(crl))
                           : INT64_MIN;
        if (next != INT64_MIN && next < now)
            return crl;
    }
    return NULL;
}

void slb_certstore_tick(struct slb_certstore *s)
{
    int64_t now = time(NULL);
    for (size_t i = 0; i < s->n; i++) {
        struct cert_entry *e = &s->v[i];
        tick_expiry(e, now);
        X509_CRL *stale = e->crl_stale_warned ? NULL : crl_stale(e->cert, now);
        if (stale) {
            char when[32];
            e->crl_stale_warned = true;
            slb_certval_rfc3339(slb_certval_time(X509_CRL_get0_nextUpdate(stale)), when,
                                sizeof(when));
            slb_warn("certificate %s (%s): its CRL was due for renewal on %s; upload a fresh "
                     "CRL (the old one is still enforced)",
                     e->cert->id, e->cert->name, when);
        }
    }
}

size_t slb_certstore_crl_stale(struct slb_certstore *s)
{
    int64_t now = time(NULL);
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += crl_stale(s->v[i].cert, now) != NULL;
    return n;
}

uint64_t slb_certstore_rev(struct slb_certstore *s, const char *id)
{
    struct cert_entry *e = find(s, id);
    return e ? e->rev : 0;
}

size_t slb_certstore_count(struct slb_certstore *s)
{
    return s ? s->n : 0;
}

struct slb_cert *slb_certstore_at(struct slb_certstore *s, size_t i)
{
    return s && i < s->n ? s->v[i].cert : NULL;
}

int slb_certstore_restore(struct slb_certstore *s, struct slb_cert *prev, struct slb_err *err)
{
    struct cert_entry *e = find(s, prev->id);
    if (!e) {
        slb_cert_unref(prev);
        return not_found(err, prev->id);
    }
    int rc = publish(s, e, prev, err);
    if (rc == 0)
        slb_warn("certificate %s (%s): change rolled back to version %llu", prev->id, prev->name,
                 (unsigned long long)prev->version);
    return rc;
}
