/* SPDX-License-Identifier: Apache-2.0 */
/* The cryptography of the ACME protocol (RFC 8555, RFC 7515/7517/7638, RFC 8737): base64url,
 * account and certificate key generation, the account's public JWK and its thumbprint, the
 * signed JWS bodies of every ACME request, key authorizations for the challenges, and the
 * self-signed tls-alpn-01 challenge certificate. Pure: no I/O, usable from any thread. */
#ifndef SLB_ACME_JWS_H
#define SLB_ACME_JWS_H

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>

/* base64url without padding (RFC 7515 section 2) of 43 characters: a SHA-256 digest. */
#define SLB_ACME_B64_SHA256 44

enum slb_acme_key_type {
    SLB_ACME_KEY_EC_P256,
    SLB_ACME_KEY_RSA_2048,
};

/* "ec-p256" or "rsa-2048"; -1 for anything else. */
int slb_acme_key_type_parse(const char *s);

/* Encode len bytes into out (NUL-terminated), which must hold 4 * ceil(len / 3) + 1 bytes;
 * returns the length written. */
size_t slb_acme_b64url(const void *in, size_t len, char *out);
/* The same into a new malloc'd string (NULL on out of memory). */
char *slb_acme_b64url_new(const void *in, size_t len);
/* Decode base64url (padding and whitespace refused) into out, which holds at least
 * len * 3 / 4 bytes; returns the length decoded or -1 when in is not base64url. */
long slb_acme_b64url_decode(const char *in, size_t len, unsigned char *out);

/* A new private key, or NULL on failure (OpenSSL's queue drained). */
EVP_PKEY *slb_acme_key_generate(enum slb_acme_key_type t);

/* The public JWK of an EC P-256 or RSA key: {"crv","kty","x","y"} or {"e","kty","n"}; NULL
 * for another kind of key. */
json_t *slb_acme_jwk(EVP_PKEY *key);
/* The RFC 7638 thumbprint of a JWK (its required members in lexicographic order, hashed with
 * SHA-256, base64url). Returns 0, or -1 when the JWK misses a member. */
int slb_acme_jwk_thumbprint(const json_t *jwk, char out[SLB_ACME_B64_SHA256]);

/* The flattened JSON JWS of an ACME request (RFC 8555 section 6.2): protected header with
 * alg (ES256 or RS256), nonce, url, and kid when given or else the key's jwk (new-account);
 * payload NULL is the empty payload of POST-as-GET. The body is returned as a new string. */
char *slb_acme_jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
                   const char *payload);

/* token "." thumbprint, the key authorization of a challenge (RFC 8555 section 8.1); NULL
 * on out of memory or a bad key. */
char *slb_acme_key_authorization(EVP_PKEY *account_key, const char *token);

/* The tls-alpn-01 challenge certificate for domain (RFC 8737 section 3): self-signed with a
 * fresh P-256 key, the domain as its only dNSName and a critical id-pe-acmeIdentifier holding
 * SHA-256(key_authorization). Returns 0 or -1 (nothing allocated). */
int slb_acme_alpn_cert(const char *domain, const char *key_authorization, X509 **cert,
                       EVP_PKEY **key);

#endif
