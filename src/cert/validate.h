/* SPDX-License-Identifier: Apache-2.0 */
/* Certificate upload validation as pure functions (no store, no I/O): PEM block scanning,
 * parsing, key strength, dates, chain ordering, CRL checks and the derived fields of a
 * certificate. Module word "certval". Every failure fills a struct slb_err with status 400, a
 * stable code from store.h and a message that names the field and block; no message ever
 * quotes key material (at most a block's type and number). */
#ifndef SLB_CERT_VALIDATE_H
#define SLB_CERT_VALIDATE_H

#include "cert/store.h"
#include "core/err.h"

#include <jansson.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SLB_CERTVAL_STATUS 400
/* More blocks than this in one field is not a certificate chain anyone serves. */
#define SLB_CERTVAL_MAX_BLOCKS 16

/* The fields of an upload body, borrowed from the JSON (valid while the body lives). Absent
 * optional fields are NULL / SLB_CERT_NONE. */
struct slb_certval_upload {
    const char *id;
    const char *name;
    enum slb_cert_type type;
    const char *certificate;
    size_t certificate_len;
    const char *private_key;
    size_t private_key_len;
};

/* Check the shape of an upload body: an object with only the fields name, type, certificate,
 * private_key and id, each of the right type and form (code invalid_body). existing is
 * SLB_CERT_NONE for a create, where name and type are required; for a replace it is the
 * stored type: name and type may then be omitted and a different type is refused. out->type
 * is the effective type. private_key is required for type server and refused for type ca (a
 * JSON null counts as absent). */
int slb_certval_body(const json_t *body, enum slb_cert_type existing,
                     struct slb_certval_upload *out, struct slb_err *err);
/* The checks of slb_certval_body past the JSON shape, for material that did not come as a
 * body: type is the given type's text ("server", "ca") or NULL when absent; out->type is set
 * to the effective type. */
int slb_certval_upload_check(struct slb_certval_upload *out, const char *type,
                             enum slb_cert_type existing, struct slb_err *err);

/* A valid certificate id: 1..63 of [A-Za-z0-9._-], not "." or "..". */
bool slb_certval_id_ok(const char *id);
/* A valid display name: 1..127 bytes, no control characters (UTF-8 is allowed). */
bool slb_certval_name_ok(const char *name);

/* Parse every block of a certificate field (what names the field in messages, e.g.
 * "certificate"). Only CERTIFICATE blocks are allowed; text outside blocks is ignored; CRLF
 * line ends are accepted. Codes invalid_pem, dh_parameters_not_supported. *out (caller frees
 * with sk_X509_pop_free) holds the certificates in input order: element i is block i + 1. */
int slb_certval_parse_certs(const char *what, const char *pem, size_t len, STACK_OF(X509) * *out,
                            struct slb_err *err);
/* Parse the one private key of a key field (PKCS#8, RSA or EC; a preceding EC PARAMETERS
 * block is skipped). Codes invalid_pem, encrypted_private_key, dh_parameters_not_supported. */
int slb_certval_parse_key(const char *pem, size_t len, EVP_PKEY **out, struct slb_err *err);

/* Accept RSA >= 2048 bits and EC on P-256, P-384 or P-521, and write "rsa-2048", "ec-p256",...
 * into type (16 bytes); anything else is weak_key. what names the certificate in messages. */
int slb_certval_key_type(const EVP_PKEY *key, const char *what, char type[16], struct slb_err *err);
/* expired when not_after < now, not_yet_valid when not_before > now. */
int slb_certval_dates(const X509 *x, int64_t now, const char *what, struct slb_err *err);

/* Put the certificates of a server upload in serving order. The leaf is the certificate whose
 * public key matches key (key_mismatch when none does, chain_order when several do); each
 * next certificate is the one that issued the previous (names, key identifiers and signature
 * checked); a trailing self-signed root is dropped. A block that is not on that path is
 * chain_incomplete. *leaf and *chain are new references the caller owns; *reordered tells
 * whether the input order was not already leaf-first issuer order. */
int slb_certval_order_chain(STACK_OF(X509) * certs, EVP_PKEY *key, X509 **leaf,
                            STACK_OF(X509) * *chain, bool *reordered, struct slb_err *err);

/* Validated material of one certificate, owned by the struct until slb_certval_material_clear. */
struct slb_certval_material {
    X509 *leaf;
    STACK_OF(X509) * chain; /* never NULL after success; empty for ca */
    EVP_PKEY *key;          /* server only */
    char key_type[16];
    bool reordered;
};

/* Skip the date checks (loading stored certificates: an expired one still loads). */
#define SLB_CERTVAL_NO_DATES 1u

/* Run every rule for an upload of the given type on its PEM fields (key_pem NULL for ca). */
int slb_certval_material(enum slb_cert_type type, const char *cert_pem, size_t cert_len,
                         const char *key_pem, size_t key_len, int64_t now, unsigned flags,
                         struct slb_certval_material *out, struct slb_err *err);
void slb_certval_material_clear(struct slb_certval_material *m);

/* Parse the crl field of a CRL upload: one or more "X509 CRL" blocks, one per issuing CA,
 * and the CERTIFICATE blocks of the intermediates that signed some of them, then run
 * slb_certval_crls_check. *crls and *issuers (never empty / possibly empty) are the caller's. */
int slb_certval_crls(const char *pem, size_t len, const X509 *ca, int64_t now, unsigned flags,
                     STACK_OF(X509_CRL) * *crls, STACK_OF(X509) * *issuers, struct slb_err *err);
/* Each CRL is signed by ca or by one of issuers, each issuer is a CA certificate issued by ca
 * or by another issuer that is (crl_signature otherwise), no two CRLs share an issuer, and
 * every lastUpdate is readable and, unless SLB_CERTVAL_NO_DATES, not in the future
 * (invalid_crl). */
int slb_certval_crls_check(const X509 *ca, STACK_OF(X509_CRL) * crls, STACK_OF(X509) * issuers,
                           int64_t now, unsigned flags, struct slb_err *err);

/* Derived fields. */
/* ASN1 time as unix seconds; INT64_MIN when it cannot be read. */
int64_t slb_certval_time(const ASN1_TIME *t);
/* "2027-01-01T00:00:00Z" into buf (at least 32 bytes). */
void slb_certval_rfc3339(int64_t t, char *buf, size_t size);
/* An X509 name as an RFC 4514 string (malloc'd; NULL on allocation failure). */
char *slb_certval_name_string(const X509_NAME *name);
/* Lowercase hex SHA-256 of the DER encoding into out (65 bytes); 0 or SLB_EINTERNAL. */
int slb_certval_fingerprint(const X509 *x, char out[65]);
/* The DNS names and IP addresses (as text) of x's subjectAltName. *out is a malloc'd array of
 * malloc'd strings (NULL when there are none); 0 or -ENOMEM. */
int slb_certval_sans(const X509 *x, char ***out, size_t *n);

#endif
