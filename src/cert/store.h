/* SPDX-License-Identifier: Apache-2.0 */
/* The certificate store: server certificates (leaf, chain, private key) and CA certificates
 * (with an optional CRL), validated on upload, persisted in DIR/certs/ one file per
 * certificate (JSON bundle, mode 0600, written atomically so a crash leaves the old or the new
 * pair), held in memory as parsed OpenSSL objects. Control thread only. */
#ifndef SLB_CERT_STORE_H
#define SLB_CERT_STORE_H

#include "core/err.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct slb_certstore;
struct slb_ocsp_staple;

enum slb_cert_type { SLB_CERT_NONE = 0, SLB_CERT_SERVER = 1, SLB_CERT_CA = 2 };

/* Parsed material of one certificate, immutable and reference counted so TLS contexts built
 * from an older version stay valid while a replacement is published. */
struct slb_cert {
    _Atomic int refs;
    char id[64];
    char name[128];
    enum slb_cert_type type;
    uint64_t version;       /* bumped on every replace and CRL change */
    X509 *leaf;             /* server: the leaf; ca: the CA certificate */
    STACK_OF(X509) * chain; /* server: intermediates in order (no root); may be empty */
    EVP_PKEY *key;          /* server only */
    /* ca only: NULL, or the CRLs of the CA and of intermediates under it (one per issuer),
     * with the intermediates that signed them as uploaded. Those intermediates only vouch
     * for their CRLs at upload; client verification never trusts them. */
    STACK_OF(X509_CRL) * crls;
    STACK_OF(X509) * crl_issuers;
    char key_type[16];             /* "rsa-2048", "ec-p256", ... */
    char fingerprint[65];          /* SHA-256 of the leaf DER, lowercase hex */
    int64_t not_before, not_after; /* unix seconds */
    char **sans;                   /* DNS names (and IP literals) of the leaf */
    size_t nsans;
    /* The one mutable part: the OCSP response handshakes staple (cert/ocsp.h), published by
     * the control thread with an atomic store and read by workers with an atomic load, so a
     * new response reaches every TLS context using this version without rebuilding any. */
    _Atomic(struct slb_ocsp_staple *) staple;
    struct slb_ocsp_staple *staple_retired; /* control thread only */
    /* Control thread only (tls/ctx.c): bit p set once TLS policy p accepted this version's
     * key and chain in a context, so the next context using it skips the check. */
    uint32_t tls_policies_ok;
};

void slb_cert_ref(struct slb_cert *c);
void slb_cert_unref(struct slb_cert *c);

/* Load DIR/certs/ (created when missing). A file that fails to parse refuses start-up with
 * err naming the file. */
struct slb_certstore *slb_certstore_open(const char *state_dir, struct slb_err *err);
/* Load DIR/certs/ to validate it, changing nothing and logging nothing: a missing directory is
 * an empty store and its mode is left alone. Only for reading; never modify such a store. */
struct slb_certstore *slb_certstore_open_readonly(const char *state_dir, struct slb_err *err);
/* The store over a state backend (state/backend.h: the documents "certs/<id>"), borrowed for
 * the store's life; readonly as slb_certstore_open_readonly. The two functions above open
 * the state directory's backend themselves. */
struct slb_backend;
struct slb_certstore *slb_certstore_open_backend(struct slb_backend *b, bool readonly,
                                                 struct slb_err *err);
void slb_certstore_free(struct slb_certstore *s);

/* 0 missing, SLB_CERT_SERVER or SLB_CERT_CA. */
int slb_certstore_type_of(struct slb_certstore *s, const char *id);
/* Borrowed pointer valid until the next change; take a ref to keep it. NULL when absent. */
struct slb_cert *slb_certstore_get(struct slb_certstore *s, const char *id);

/* The resource JSON of SPEC.md ({id, name, type, subject, issuer, sans, not_before,
 * not_after (RFC 3339 UTC), fingerprint_sha256, key_type, version, crl: {...} or null});
 * used_by is added by the API layer. */
json_t *slb_cert_to_json(const struct slb_cert *c);
/* The i-th certificate (0 <= i < slb_certstore_count), borrowed; for metrics. */
size_t slb_certstore_count(struct slb_certstore *s);
struct slb_cert *slb_certstore_at(struct slb_certstore *s, size_t i);

/* Array of all certificates' resource JSON, sorted by id. */
json_t *slb_certstore_list(struct slb_certstore *s);

/* Validate an upload body {name, type, certificate, private_key[, id]} and store it durably.
 * id: the body's "id" when given (must be a valid name and unused), otherwise generated.
 * Error codes (status 400): invalid_body, invalid_pem, dh_parameters_not_supported,
 * key_mismatch, encrypted_private_key, expired, not_yet_valid, weak_key, not_a_ca,
 * chain_order, chain_incomplete, name_taken, id_taken; 500 storage_failed. On success *out
 * is the new certificate (borrowed). */
int slb_certstore_create(struct slb_certstore *s, const json_t *body, struct slb_cert **out,
                         struct slb_err *err);
/* Replace certificate id with the body's material (same validations; type must not change;
 * name optional). 404 not_found. */
int slb_certstore_replace(struct slb_certstore *s, const char *id, const json_t *body,
                          struct slb_cert **out, struct slb_err *err);
/* The same from material rather than a body (the fields of struct slb_certval_upload,
 * cert/validate.h: type SLB_CERT_NONE means not given), with the same checks and codes. */
struct slb_certval_upload;
int slb_certstore_create_material(struct slb_certstore *s, const struct slb_certval_upload *m,
                                  struct slb_cert **out, struct slb_err *err);
int slb_certstore_replace_material(struct slb_certstore *s, const char *id,
                                   const struct slb_certval_upload *m, struct slb_cert **out,
                                   struct slb_err *err);
/* Set the CRLs of CA certificate id from PEM (see slb_certval_crls: the CA's own CRL and/or
 * intermediates' CRLs with those intermediates), replacing the previous set; codes
 * invalid_crl, crl_signature, not_a_ca (not a ca entry), 404 not_found. Like a replace it publishes
 * a new struct slb_cert (version + 1), so holders of the old one keep a consistent view and TLS
 * contexts can tell they must be rebuilt. */
int slb_certstore_set_crl(struct slb_certstore *s, const char *id, const char *pem,
                          struct slb_err *err);
/* Put back a previous version (a reference the caller owns, consumed here) after a change
 * that could not be activated; durable like every change. */
int slb_certstore_restore(struct slb_certstore *s, struct slb_cert *prev, struct slb_err *err);
/* Give certificate id another display name (no new material, same version); codes
 * invalid_value, name_taken, 404 not_found. */
int slb_certstore_rename(struct slb_certstore *s, const char *id, const char *name,
                         struct slb_err *err);
/* Remove certificate id from memory and disk (the caller checks it is unused). */
int slb_certstore_delete(struct slb_certstore *s, const char *id, struct slb_err *err);

/* Take certificate id as another node of the cluster stored it: data (len bytes) is its
 * document as in the store at revision rev (NULL: it was deleted). Nothing is written. On an
 * invalid document the previous version stays and err says why. */
int slb_certstore_adopt(struct slb_certstore *s, const char *id, const char *data, size_t len,
                        uint64_t rev, struct slb_err *err);
/* The backend revision of certificate id's document (0: not held). In a cluster, changes are
 * stored against it, and a certificate changed by another node meanwhile is 409 conflict. */
uint64_t slb_certstore_rev(struct slb_certstore *s, const char *id);

/* Periodic work (expiry warnings at 30/7/1 days, CRL past next_update); called each second. */
void slb_certstore_tick(struct slb_certstore *s);
/* What changed, for caches (control thread only). The ids generation (never 0) moves whenever
 * a certificate id is added or removed, and so when one could change type. Every new
 * certificate object published (create, replace, CRL, rename, restore, delete, adopt) is one
 * change: slb_certstore_changes counts them and slb_certstore_change_id(s, n) is the id of
 * change n while it is among the last SLB_CERTSTORE_LOG (NULL before: assume anything
 * changed). */
#define SLB_CERTSTORE_LOG 64
uint64_t slb_certstore_ids_gen(const struct slb_certstore *s);
uint64_t slb_certstore_changes(const struct slb_certstore *s);
const char *slb_certstore_change_id(const struct slb_certstore *s, uint64_t n);
/* Number of CA certificates with a CRL past its next_update now (a metrics gauge). */
size_t slb_certstore_crl_stale(struct slb_certstore *s);

#endif
