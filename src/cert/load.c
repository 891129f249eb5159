/* SPDX-License-Identifier: Apache-2.0 */
/* Loading the certificate store: each stored document read from the state backend, decoded
 * and checked (key matches leaf, chain in order, CRLs signed by the CA) on several threads at
 * start-up, then handed to the store in key order (cert/load.h). */
#include "cert/load.h"
#include "cert/validate.h"
#include "state/backend.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A stored bundle is a few KiB; anything near this is not a file we wrote. */
#define CERT_FILE_MAX (4u << 20)

void slb_certload_doc_free(json_t *doc)
{
    json_t *k = json_object_get(doc, "private_key");
    if (json_is_string(k))
        OPENSSL_cleanse((char *)json_string_value(k), json_string_length(k));
    json_decref(doc);
}

int slb_certload_fail(struct slb_err *err, const char *path, const char *code, const char *fmt, ...)
{
    char msg[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return slb_err_set(err, 500, code, path, "%s: %s", path, msg);
}

/* Touches no store state, so files are parsed on several threads at start-up (key and
 * certificate decoding is most of it). */
int slb_certload_doc(const char *path, const char *id, const json_t *doc, struct slb_cert **out,
                     int64_t *created_out, struct slb_err *err)
{
    struct slb_err inner = {0};
    struct slb_certval_material m = {0};
    struct slb_crl_set cs = {0};
    const char *fid = json_string_value(json_object_get(doc, "id"));
    const char *name = json_string_value(json_object_get(doc, "name"));
    const char *type = json_string_value(json_object_get(doc, "type"));
    const json_t *ver = json_object_get(doc, "version");
    const json_t *created = json_object_get(doc, "created");
    const json_t *cert = json_object_get(doc, "certificate");
    const json_t *key = json_object_get(doc, "private_key");
    const json_t *crl_pem = json_object_get(doc, "crl");
    enum slb_cert_type t = type && strcmp(type, "server") == 0 ? SLB_CERT_SERVER
                           : type && strcmp(type, "ca") == 0   ? SLB_CERT_CA
                                                               : SLB_CERT_NONE;
    if (!fid || strcmp(fid, id) != 0)
        return slb_certload_fail(err, path, "invalid_state",
                                 "\"id\" must be \"%s\", the file's name", id);
    if (!name || !slb_certval_name_ok(name) || t == SLB_CERT_NONE || !json_is_integer(ver) ||
        json_integer_value(ver) < 1 || !json_is_integer(created) || !json_is_string(cert) ||
        (t == SLB_CERT_SERVER && !json_is_string(key)) ||
        (t == SLB_CERT_CA && key && !json_is_null(key)) ||
        (crl_pem && !json_is_null(crl_pem) && (t != SLB_CERT_CA || !json_is_string(crl_pem))))
        return slb_certload_fail(
            err, path, "invalid_state",
            "a field is missing or has the wrong type (expected id, name, type, "
            "version >= 1, certificate, private_key for servers, crl, created)");
    /* Dates are not checked: an expired certificate must not stop the daemon from starting. */
    int rc = slb_certval_material(t, json_string_value(cert), json_string_length(cert),
                                  json_is_string(key) ? json_string_value(key) : NULL,
                                  json_is_string(key) ? json_string_length(key) : 0, 0,
                                  SLB_CERTVAL_NO_DATES, &m, &inner);
    if (rc)
        return slb_certload_fail(err, path, inner.code, "%s", inner.msg);
    if (json_is_string(crl_pem) &&
        slb_certval_crls(json_string_value(crl_pem), json_string_length(crl_pem), m.leaf, 0,
                         SLB_CERTVAL_NO_DATES, &cs.crls, &cs.issuers, &inner) != 0) {
        slb_certval_material_clear(&m);
        return slb_certload_fail(err, path, inner.code, "%s", inner.msg);
    }
    struct slb_cert *c = slb_cert_build(id, name, t, (uint64_t)json_integer_value(ver), &m, &cs);
    if (!c)
        return slb_certload_fail(err, path, "internal", "out of memory");
    *out = c;
    *created_out = json_integer_value(created);
    return 0;
}

/* One file being loaded: read (in key order, on the calling thread), parsed (on any of the
 * loader threads), then added (in key order again). */
struct load_job {
    char key[SLB_DOC_KEY_MAX];
    char id[64];
    json_t *doc;
    struct slb_cert *cert;
    int64_t created;
    uint64_t rev;        /* the document's revision in the backend */
    struct slb_err *err; /* the parse failure, when there was one */
};

/* A list callback's context: a failure it reports has err filled, unlike one of the list. */
struct load_ctx {
    struct slb_backend *b;
    slb_certload_add_fn add;
    void *arg;
    struct slb_err *err;
    bool failed;
    struct load_job *jobs;
    size_t n, cap;
    _Atomic size_t next; /* the next job a loader thread takes */
};

static int load_key_doc(struct load_ctx *lc, const char *key, struct slb_err *err);

static int load_key(const char *key, void *arg)
{
    struct load_ctx *lc = arg;
    int rc = load_key_doc(lc, key, lc->err);
    lc->failed = rc != 0;
    return rc;
}

static int load_key_doc(struct load_ctx *lc, const char *key, struct slb_err *err)
{
    char path[4400], id[64];
    const char *stem = key + strlen(SLB_DOC_CERTS);
    size_t sl = strlen(stem);
    slb_backend_where(lc->b, key, path, sizeof(path));
    if (sl >= sizeof(id) || strlen(key) >= SLB_DOC_KEY_MAX)
        return slb_certload_fail(err, path, "invalid_state", "the file name is not <id>.json");
    memcpy(id, stem, sl + 1);
    if (!slb_certval_id_ok(id))
        return slb_certload_fail(err, path, "invalid_state",
                                 "the file name is not <id>.json with a valid certificate id");
    struct slb_doc d;
    int rc = slb_backend_get(lc->b, key, CERT_FILE_MAX, &d, err);
    if (rc == SLB_EINVAL)
        return rc;
    if (rc < 0)
        return slb_certload_fail(err, path, "unreadable", "cannot read: %s", slb_strerror(rc));
    json_error_t jerr;
    json_t *doc = json_loadb(d.data, d.len, JSON_REJECT_DUPLICATES, &jerr);
    uint64_t rev = d.rev;
    slb_doc_clear(&d);
    if (!doc)
        return slb_certload_fail(err, path, "invalid_json", "line %d column %d: %s", jerr.line,
                                 jerr.column, jerr.text);
    if (!json_is_object(doc)) {
        slb_certload_doc_free(doc);
        return slb_certload_fail(err, path, "invalid_state", "the file must hold a JSON object");
    }
    if (lc->n == lc->cap) {
        size_t cap = lc->cap ? lc->cap * 2 : 64;
        struct load_job *v = realloc(lc->jobs, cap * sizeof(*v));
        if (!v) {
            slb_certload_doc_free(doc);
            return -ENOMEM;
        }
        lc->jobs = v;
        lc->cap = cap;
    }
    struct load_job *j = &lc->jobs[lc->n++];
    memset(j, 0, sizeof(*j));
    snprintf(j->key, sizeof(j->key), "%s", key);
    memcpy(j->id, id, sl + 1);
    j->doc = doc;
    j->rev = rev;
    return 0;
}

static void *load_worker(void *arg)
{
    struct load_ctx *lc = arg;
    size_t i;
    while ((i = atomic_fetch_add(&lc->next, 1)) < lc->n) {
        struct load_job *j = &lc->jobs[i];
        char path[4400];
        struct slb_err err = {0};
        slb_backend_where(lc->b, j->key, path, sizeof(path));
        if (slb_certload_doc(path, j->id, j->doc, &j->cert, &j->created, &err) != 0) {
            j->err = malloc(sizeof(*j->err));
            if (j->err)
                *j->err = err;
        }
    }
    return NULL;
}

#define LOAD_THREADS_MAX 8

/* Parse every job, on as many threads as there are processors (up to LOAD_THREADS_MAX), then
 * add them in key order: the first failing file in that order refuses the store, as when
 * files were loaded one by one. */
static int load_jobs(struct load_ctx *lc)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nthreads =
        lc->n < 64 || ncpu < 2 ? 0 : (size_t)(ncpu < LOAD_THREADS_MAX ? ncpu : LOAD_THREADS_MAX);
    pthread_t th[LOAD_THREADS_MAX];
    size_t started = 0;
    atomic_store(&lc->next, 0);
    for (; started < nthreads; started++) {
        if (pthread_create(&th[started], NULL, load_worker, lc) != 0)
            break;
    }
    load_worker(lc);
    for (size_t t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    int rc = 0;
    for (size_t i = 0; i < lc->n; i++) {
        struct load_job *j = &lc->jobs[i];
        char path[4400];
        if (rc == 0) {
            slb_backend_where(lc->b, j->key, path, sizeof(path));
            if (j->cert) {
                rc = lc->add(lc->arg, path, j->cert, j->created, j->rev, lc->err);
            } else {
                rc = j->err ? SLB_EINVAL
                            : slb_certload_fail(lc->err, path, "internal", "out of memory");
                if (j->err)
                    *lc->err = *j->err;
            }
            lc->failed = rc != 0;
        } else if (j->cert) {
            slb_cert_unref(j->cert);
        }
        free(j->err);
        slb_certload_doc_free(j->doc);
    }
    free(lc->jobs);
    lc->jobs = NULL;
    lc->n = 0;
    return rc;
}

int slb_certload_all(struct slb_backend *b, slb_certload_add_fn add, void *arg, struct slb_err *err,
                     bool *failed)
{
    struct load_ctx lc = {.b = b, .add = add, .arg = arg, .err = err};
    int rc = slb_backend_list(b, SLB_DOC_CERTS, load_key, &lc);
    if (rc == 0) {
        rc = load_jobs(&lc);
    } else {
        for (size_t i = 0; i < lc.n; i++)
            slb_certload_doc_free(lc.jobs[i].doc);
        free(lc.jobs);
    }
    *failed = lc.failed;
    return rc;
}
