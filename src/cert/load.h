/* SPDX-License-Identifier: Apache-2.0 */
/* Internal to src/cert: reading the stored certificate documents back (start-up, and a
 * document another cluster node wrote), parsed and checked on several threads, and the piece
 * of src/cert/store.c that building a certificate needs. Control thread only. */
#ifndef SLB_CERT_LOAD_H
#define SLB_CERT_LOAD_H

#include "cert/store.h"
#include "core/err.h"

#include <jansson.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdint.h>

struct slb_backend;
struct slb_certval_material;

/* CRLs of a CA and the intermediates that signed them, as slb_cert_build takes them over. */
struct slb_crl_set {
    STACK_OF(X509_CRL) * crls;
    STACK_OF(X509) * issuers;
};

/* (cert/store.c) A new certificate (one reference) from validated material, which it takes
 * over (m is cleared) together with the CRL set (cleared too; cs may be NULL). NULL on
 * allocation failure (m and cs are then freed). */
struct slb_cert *slb_cert_build(const char *id, const char *name, enum slb_cert_type type,
                                uint64_t version, struct slb_certval_material *m,
                                struct slb_crl_set *cs);

/* Re-report an error found in a stored document: where is the file (or key), the message
 * starts with it; status 500. Returns SLB_EINVAL as slb_err_set does. */
int slb_certload_fail(struct slb_err *err, const char *path, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* json_decref for a certificate document: the private key text jansson copied is wiped
 * first. NULL is allowed. */
void slb_certload_doc_free(json_t *doc);

/* Validate one document (id: the one its key names) and build its certificate: the key and
 * chain are checked as on upload, dates are not (an expired certificate must not stop the
 * daemon from starting). Touches no store, so it runs on any thread. *created_out: the first
 * upload's time the document keeps. */
int slb_certload_doc(const char *path, const char *id, const json_t *doc, struct slb_cert **out,
                     int64_t *created_out, struct slb_err *err);

/* Receives each parsed certificate, in key order, with its reference, the document's
 * "created" and its revision; path names the document for messages. 0 goes on; anything
 * else stops loading with err filled. */
typedef int (*slb_certload_add_fn)(void *arg, const char *path, struct slb_cert *c, int64_t created,
                                   uint64_t rev, struct slb_err *err);

/* Read every document under "certs/" in b, parse them on up to 8 threads (at least 64
 * documents and 2 processors), then hand them to add in key order: the first failing
 * document in that order stops loading, as when they were loaded one by one; certificates
 * not handed over are released. Returns 0 or an error; *failed is true when err was filled
 * (otherwise the caller says what failed: rc is -ENOMEM or the backend's error). */
int slb_certload_all(struct slb_backend *b, slb_certload_add_fn add, void *arg, struct slb_err *err,
                     bool *failed);

#endif
